/*
 * router_match.c — the request side of the router: path normalisation, matching a request
 * against the matchers in priority order, and the upstream path. Runs on worker threads;
 * reads the router only and writes nothing but the caller's buffers and scratch.
 */
#include "router_int.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ scratch */

tg_router_scratch_t *tg_router_scratch_new(void)
{
    tg_router_scratch_t *s = tg_calloc(1, sizeof(*s));
    s->md = pcre2_match_data_create(TG_ROUTER_MAX_CAPTURES + 1, NULL);
    if (!s->md) tg_fatal("out of memory creating PCRE2 match data");
    return s;
}

void tg_router_scratch_free(tg_router_scratch_t *s)
{
    if (!s) return;
    pcre2_match_data_free(s->md);
    free(s);
}

/* ------------------------------------------------------------------ normalisation */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* RFC 3986 reserved characters plus '%': decoding them would change the path's meaning. */
static bool reserved(unsigned char c)
{
    return c != 0 && strchr("!*'();:@&=+$,/?%#[]", c) != NULL;
}

/*
 * uri.lua normalize_decode: escapes of reserved characters are kept, upper-cased; all
 * others (unreserved and "other", even control and non-ASCII bytes) are decoded. Works in
 * place (the output never outruns the input).
 */
static size_t decode(const char *in, size_t n, char *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = -1, lo = -1;
        if (in[i] == '%' && i + 2 < n) {
            hi = hexval(in[i + 1]);
            lo = hexval(in[i + 2]);
        }
        if (hi < 0 || lo < 0) {
            out[w++] = in[i];
            continue;
        }
        unsigned char c = (unsigned char)(hi * 16 + lo);
        if (reserved(c)) {
            out[w++] = '%';
            out[w++] = (char)toupper((unsigned char)in[i + 1]);
            out[w++] = (char)toupper((unsigned char)in[i + 2]);
        } else {
            out[w++] = (char)c;
        }
        i += 2;
    }
    return w;
}

/* Drops the last output segment ("/seg", or a leading segment without its slash). */
static size_t pop_segment(const char *s, size_t w)
{
    while (w > 0 && s[w - 1] != '/')
        w--;
    return w > 0 ? w - 1 : 0;
}

static bool starts(const char *u, size_t rem, const char *lit)
{
    size_t n = strlen(lit);
    return rem >= n && memcmp(u, lit, n) == 0;
}

static bool equals(const char *u, size_t rem, const char *lit)
{
    return rem == strlen(lit) && memcmp(u, lit, rem) == 0;
}

/*
 * uri.lua normalize's dot-segment loop with merge_slashes, rule for rule, in place: the
 * write position never passes the read position. Where Kong rewrites the rest of the
 * input to "/", the '/' is written over the last unread character.
 */
static size_t remove_dots(char *s, size_t n)
{
    size_t r = 0, w = 0;
    while (r < n) {
        const char *u = s + r;
        size_t rem = n - r;
        if (equals(u, rem, "/.")) {
            s[++r] = '/';
        } else if (equals(u, rem, "/..")) {
            r += 2;
            s[r] = '/';
            w = pop_segment(s, w);
        } else if (equals(u, rem, ".") || equals(u, rem, "..")) {
            r = n;
        } else if (starts(u, rem, "../")) {
            r += 3;
        } else if (starts(u, rem, "./") || starts(u, rem, "/./")) {
            r += 2;
        } else if (starts(u, rem, "/../")) {
            r += 3;
            w = pop_segment(s, w);
        } else if (starts(u, rem, "//")) {
            r += 1;
        } else {
            const char *slash = rem > 1 ? memchr(u + 1, '/', rem - 1) : NULL;
            size_t seg = slash ? (size_t)(slash - u) : rem;
            memmove(s + w, u, seg);
            w += seg;
            r += seg;
        }
    }
    return w;
}

int tg_router_normalize_path(tg_str_t in, char *out, size_t *outlen)
{
    size_t n = in.len ? decode(in.p, in.len, out) : 0;
    if (n > 0 && (memchr(out, '.', n) || memmem(out, n, "//", 2))) n = remove_dots(out, n);
    *outlen = n;
    return 0;
}

/* ------------------------------------------------------------------ matching */

/* What a request offers, prepared once per match. */
typedef struct mreq {
    const tg_router_request_t *req;
    const tg_router_t *r;
    tg_str_t path;
    tg_str_t host; /* Host without its port */
    long port;     /* the Host header's port, -1 when absent */
} mreq_t;

static bool methods_ok(const rroute_t *rt, const mreq_t *m)
{
    if (rt->nmethods == 0) return true;
    for (size_t i = 0; i < rt->nmethods; i++)
        if (tg_str_eq(rt->methods[i], m->req->method)) return true;
    return false;
}

static bool host_ok(const rhost_t *h, const mreq_t *m)
{
    if (h->port >= 0 && h->port != m->port) return false;
    tg_str_t q = m->host;
    if (q.len < h->name.len) return false;
    switch (h->kind) {
    case RHOST_EXACT:
        return tg_str_caseeq(q, h->name);
    case RHOST_SUFFIX:
        return strncasecmp(q.p + q.len - h->name.len, h->name.p, h->name.len) == 0;
    case RHOST_PREFIX:
        return strncasecmp(q.p, h->name.p, h->name.len) == 0;
    }
    return false;
}

static bool hosts_ok(const rroute_t *rt, const mreq_t *m)
{
    if (rt->nhosts == 0) return true;
    for (size_t i = 0; i < rt->nhosts; i++)
        if (host_ok(&rt->hosts[i], m)) return true;
    return false;
}

/* transform.lua: `net.protocol != "https" || tls.sni == ...` — snis bind https only. */
static bool snis_ok(const rroute_t *rt, const mreq_t *m)
{
    if (rt->nsnis == 0 || !m->req->https) return true;
    for (size_t i = 0; i < rt->nsnis; i++)
        if (tg_str_caseeq(rt->snis[i], m->req->sni)) return true;
    return false;
}

static bool regex_hit(const pcre2_code *re, tg_str_t s, const mreq_t *m)
{
    int rc =
        pcre2_match(re, (PCRE2_SPTR)(s.p ? s.p : ""), s.len, 0, 0, m->req->scratch->md, m->r->mctx);
    if (rc >= 0) return true;
    if (rc != PCRE2_ERROR_NOMATCH) TG_LOGD("router", "regex match failed: pcre2 error %d", rc);
    return false;
}

/* Header names compare case-insensitively with '_' and '-' alike (OpenResty's lookup). */
static bool header_name_eq(tg_str_t req, tg_str_t want)
{
    if (req.len != want.len) return false;
    for (size_t i = 0; i < req.len; i++) {
        char c = (char)tolower((unsigned char)req.p[i]);
        if ((c == '_' ? '-' : c) != want.p[i]) return false;
    }
    return true;
}

static bool value_ok(const rheader_t *h, tg_str_t v, const mreq_t *m)
{
    for (size_t k = 0; k < h->nvals; k++) {
        const rhval_t *hv = &h->vals[k];
        if (hv->re ? regex_hit(hv->re, v, m) : tg_str_caseeq(v, hv->lit)) return true;
    }
    return false;
}

/* Every configured header needs one request header of that name with an accepted value. */
static bool headers_ok(const rroute_t *rt, const mreq_t *m)
{
    for (size_t i = 0; i < rt->nheaders; i++) {
        const rheader_t *h = &rt->headers[i];
        bool found = false;
        for (size_t j = 0; j < m->req->nheaders && !found; j++) {
            const tg_http_header_t *hd = &m->req->headers[j];
            found = header_name_eq(hd->name, h->name) && value_ok(h, hd->value, m);
        }
        if (!found) return false;
    }
    return true;
}

/* Groups 1..n of the path regex that matched last (the ovector is in the scratch). */
static void fill_captures(tg_route_match_t *out, const pcre2_code *re, int rc, const mreq_t *m)
{
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->req->scratch->md);
    uint32_t groups = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &groups);
    size_t n = groups < TG_ROUTER_MAX_CAPTURES ? groups : TG_ROUTER_MAX_CAPTURES;
    /* rc is one more than the highest group set; 0 means the ovector filled up */
    size_t set = rc == 0 ? n : (size_t)rc - 1;
    out->ncaptures = n;
    for (size_t i = 0; i < n; i++) {
        PCRE2_SIZE a = ov[2 * (i + 1)], b = ov[2 * (i + 1) + 1];
        bool unset = i >= set || a == PCRE2_UNSET;
        out->captures[i] = unset ? TG_STR_NULL : (tg_str_t){m->path.p + a, b - a};
    }
}

/* The path that matched: a prefix, or a regex match with its ovector in the scratch. */
typedef struct phit {
    tg_str_t matched;
    const pcre2_code *re; /* the regex that matched, NULL for a prefix */
    int rc;               /* its pcre2_match result */
} phit_t;

/*
 * The first path of the group that matches, in configured order. A regex reports its
 * whole match, which (like Kong's matched_path) is what strip_path removes.
 */
static bool paths_ok(const rentry_t *e, const mreq_t *m, phit_t *hit)
{
    if (e->npaths == 0) return true;
    tg_str_t path = m->path;
    for (uint32_t i = e->first_path; i < e->first_path + e->npaths; i++) {
        const rpath_t *p = &e->rt->paths[i];
        if (!p->re) {
            if (path.len < p->text.len || memcmp(path.p, p->text.p, p->text.len) != 0) continue;
            *hit = (phit_t){{path.p, p->text.len}, NULL, 0};
            return true;
        }
        int rc =
            pcre2_match(p->re, (PCRE2_SPTR)path.p, path.len, 0, 0, m->req->scratch->md, m->r->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) continue;
        if (rc < 0) {
            TG_LOGD("router", "path regex '%s' failed: pcre2 error %d", p->text.p, rc);
            continue;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->req->scratch->md);
        *hit = (phit_t){{path.p + ov[0], ov[1] - ov[0]}, p->re, rc};
        return true;
    }
    return false;
}

/*
 * Cheap checks first, the path last: its regex leaves the captures in the scratch, so
 * nothing may run a regex after it.
 */
static bool entry_ok(const rentry_t *e, const mreq_t *m, phit_t *hit)
{
    const rroute_t *rt = e->rt;
    return methods_ok(rt, m) && hosts_ok(rt, m) && snis_ok(rt, m) && headers_ok(rt, m) &&
           paths_ok(e, m, hit);
}

static void fill_match(const rroute_t *rt, const mreq_t *m, const phit_t *hit,
                       tg_route_match_t *out)
{
    memset(out, 0, sizeof(*out));
    out->route = rt->route;
    out->service = rt->service;
    out->path = m->path;
    out->matched_path = hit->matched;
    if (hit->re) fill_captures(out, hit->re, hit->rc, m);
    out->https_redirect_status = rt->redirect_status && !m->req->https ? rt->redirect_status : 0;
    out->strip_path = rt->strip_path;
    out->preserve_host = rt->preserve_host;
    out->path_handling_v1 = rt->v1;
    out->service_path = rt->service_path;
    out->info = &rt->info;
}

static bool quick_ok(const rentry_t *e, tg_str_t path)
{
    return path.len >= e->qend && memcmp(path.p + e->qend - e->qlen, e->quick, e->qlen) == 0;
}

/*
 * Walks the host's index bucket and the list of host-independent matchers together, in
 * global priority order (both hold ascending matcher indexes), so the first hit is the
 * same one a scan of every matcher would find.
 */
static int walk(const tg_router_t *r, const mreq_t *m, tg_route_match_t *out)
{
    const hbucket_t *b = tg_router_bucket(r, m->host);
    size_t i = 0, j = 0, nb = b ? b->n : 0;
    while (i < r->ngeneral || j < nb) {
        uint32_t e;
        if (j < nb && (i >= r->ngeneral || b->idx[j] < r->general[i]))
            e = b->idx[j++];
        else
            e = r->general[i++];
        const rentry_t *en = &r->entries[e];
        if (en->qend && !quick_ok(en, m->path)) continue;
        phit_t hit = {TG_STR_NULL, NULL, 0};
        if (entry_ok(en, m, &hit)) {
            fill_match(en->rt, m, &hit, out);
            return 0;
        }
    }
    memset(out, 0, sizeof(*out));
    return -TG_ENOTFOUND;
}

int tg_router_match(const tg_router_t *r, const tg_router_request_t *req, tg_route_match_t *out)
{
    if (!r || !req->scratch || (req->path.len > 0 && !req->path_buf)) return -TG_EINVAL;
    mreq_t m = {.req = req, .r = r};
    size_t n;
    tg_router_normalize_path(req->path, req->path_buf, &n);
    /* pcre2_match wants a non-NULL subject even when it is empty */
    m.path = (tg_str_t){req->path_buf ? req->path_buf : "", n};
    m.host = tg_router_split_port(req->host.p ? req->host : TG_STR(""), &m.port);
    return walk(r, &m, out);
}

/* ------------------------------------------------------------------ upstream path */

typedef struct wbuf {
    char *p;
    size_t cap, len;
    bool full;
} wbuf_t;

static void put_raw(wbuf_t *w, const char *s, size_t n)
{
    if (w->full || w->cap - w->len < n) {
        w->full = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

/* uri.lua escape: what may travel unescaped in a request-target; the rest becomes %XX. */
static bool uri_safe(unsigned char c)
{
    return isalnum(c) || (c != 0 && strchr("!#$&'()*+,/:;=?@[]-_.~%", c) != NULL);
}

static void put_esc(wbuf_t *w, tg_str_t s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (uri_safe(c)) {
            put_raw(w, (const char *)&c, 1);
            continue;
        }
        char e[3] = {'%', hex[c >> 4], hex[c & 15]};
        put_raw(w, e, 3);
    }
}

static tg_str_t drop_last(tg_str_t s)
{
    return (tg_str_t){s.p, s.len - 1};
}

static tg_str_t tail(tg_str_t s, size_t from)
{
    return from >= s.len ? (tg_str_t){s.p, 0} : (tg_str_t){s.p + from, s.len - from};
}

static bool ends_slash(tg_str_t s)
{
    return s.len > 0 && s.p[s.len - 1] == '/';
}

static bool starts_slash(tg_str_t s)
{
    return s.len > 0 && s.p[0] == '/';
}

/* utils.lua get_upstream_uri_v0 with a service path (`base`) ending in '/'. */
static void v0_base_slash(wbuf_t *w, tg_str_t base, bool strip, tg_str_t post, tg_str_t req)
{
    if (!strip) {
        put_esc(w, base);
        put_esc(w, tail(req, 1));
    } else if (post.len == 0) {
        put_esc(w, base.len == 1 || ends_slash(req) ? base : drop_last(base));
    } else {
        put_esc(w, starts_slash(post) ? drop_last(base) : base); /* no double slash */
        put_esc(w, post);
    }
}

/* get_upstream_uri_v0 with a service path that does not end in '/'. */
static void v0_base_plain(wbuf_t *w, tg_str_t base, bool strip, tg_str_t post, tg_str_t req)
{
    put_esc(w, base);
    if (!strip) {
        if (!tg_str_eq_lit(req, "/")) put_esc(w, req);
    } else if (post.len == 0) {
        if (req.len > 1 && ends_slash(req)) put_raw(w, "/", 1);
    } else {
        if (!starts_slash(post)) put_raw(w, "/", 1);
        put_esc(w, post);
    }
}

/* The traditional router's v1: service.path is a plain prefix of the rest. */
static void v1_join(wbuf_t *w, tg_str_t base, bool strip, tg_str_t post, tg_str_t req)
{
    if (!strip) {
        put_esc(w, base);
        put_esc(w, tail(req, 1));
        return;
    }
    put_esc(w, ends_slash(base) && starts_slash(post) ? drop_last(base) : base);
    put_esc(w, post);
}

/* utils.lua sanitize_uri_postfix: a leading "." or ".." segment of the rest is dropped. */
static tg_str_t sanitize_postfix(tg_str_t p)
{
    if (tg_str_eq_lit(p, ".") || tg_str_eq_lit(p, "..")) return (tg_str_t){p.p, 0};
    if (tg_str_starts_with(p, "./")) return tail(p, 2);
    if (tg_str_starts_with(p, "../")) return tail(p, 3);
    return p;
}

int tg_router_upstream_path(const tg_route_match_t *m, tg_str_t query, char *buf, size_t cap,
                            size_t *len)
{
    wbuf_t w = {buf, cap, 0, false};
    tg_str_t base = m->service_path.len ? m->service_path : TG_STR("/");
    tg_str_t req = m->path;
    /*
     * atc.lua set_upstream_uri: the prefix is what matched when strip_path is on (its
     * length only, as Kong takes it), else "/"; the rest of the path is the postfix.
     */
    size_t prefix = m->strip_path && m->matched_path.p ? m->matched_path.len : 1;
    tg_str_t post = sanitize_postfix(tail(req, prefix));
    if (m->path_handling_v1)
        v1_join(&w, base, m->strip_path, post, req);
    else if (ends_slash(base))
        v0_base_slash(&w, base, m->strip_path, post, req);
    else
        v0_base_plain(&w, base, m->strip_path, post, req);
    if (query.p) {
        put_raw(&w, "?", 1);
        put_raw(&w, query.p, query.len);
    }
    if (w.full) return -TG_ETOOBIG;
    *len = w.len;
    return 0;
}
