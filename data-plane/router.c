/*
 * router.c — building the router: route entities → compiled matchers in priority order.
 * Matching itself lives in router_match.c.
 *
 * Kong 3.10's default router (traditional_compatible) splits a route into one matcher per
 * group of its paths — all regex paths together, and the plain paths of each length
 * together (transform.lua split_routes_and_services_by_path) — and orders the matchers
 * by a 64-bit priority (transform.lua get_priority), most significant first:
 *   1. match weight: how many of methods, hosts, paths, headers, snis the route sets;
 *   2. plain hosts: `hosts` is set and has no wildcard;
 *   3. the number of header names (capped at 255);
 *   4. regex group before plain paths;
 *   5. regex_priority, higher first (regex groups only);
 *   6. plain path length, longer first.
 * Kong breaks remaining ties by matcher UUID (the ATC router's BTreeMap order; the docs
 * say traditional_compatible does not use created_at). We break them by created_at,
 * oldest first — the documented `traditional` rule — then by id, descending as ATC
 * iterates, so the order is deterministic and a superset of Kong's guarantees.
 */
#include "router_int.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER_COUNT 255   /* transform.lua MAX_HEADER_COUNT */
#define MAX_URI_LENGTH 0x7FFFF /* the width of the length field in Kong's priority */
/*
 * Kong 3.x evaluates path regexes with Rust's regex crate, which cannot backtrack
 * catastrophically; PCRE2 can, so a generous match limit bounds the cost of a hostile
 * request against a badly written regex (a miss is then reported as "no match").
 */
#define REGEX_MATCH_LIMIT 100000
#define ARENA_CHUNK 65536

/* ------------------------------------------------------------------ arena */

struct achunk {
    struct achunk *next;
    size_t used, cap;
    max_align_t data[];
};

struct arena {
    struct achunk *head;
};

static void *ar_alloc(struct arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        struct achunk *c = tg_malloc(sizeof(*c) + cap);
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

static tg_str_t ar_lower(struct arena *a, const char *s, size_t n)
{
    char *p = ar_alloc(a, n + 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)tolower((unsigned char)s[i]);
    return (tg_str_t){p, n};
}

/* OpenResty looks headers up lower-cased with '_' read as '-'; store names that way. */
static tg_str_t ar_header_name(struct arena *a, const char *name)
{
    size_t n = strlen(name);
    char *p = ar_alloc(a, n + 1);
    for (size_t i = 0; i < n; i++) {
        char c = (char)tolower((unsigned char)name[i]);
        p[i] = c == '_' ? '-' : c;
    }
    return (tg_str_t){p, n};
}

static void arena_free(struct arena *a)
{
    for (struct achunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

/* ------------------------------------------------------------------ helpers */

/* A JSON array field, treating null and absence as "not set" (NULL). */
static const json_t *arr(const json_t *e, const char *field)
{
    const json_t *v = json_object_get(e, field);
    return json_is_array(v) ? v : NULL;
}

static bool has_str(const json_t *a, const char *s)
{
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *v = json_array_get(a, i);
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0) return true;
    }
    return false;
}

static const char *route_label(const json_t *route)
{
    const char *name = json_string_value(json_object_get(route, "name"));
    const char *id = json_string_value(json_object_get(route, "id"));
    return name ? name : id ? id : "(no id)";
}

static bool flag(const json_t *e, const char *field, bool dflt)
{
    const json_t *v = json_object_get(e, field);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int64_t int_field(const json_t *e, const char *field)
{
    const json_t *v = json_object_get(e, field);
    if (json_is_integer(v)) return (int64_t)json_integer_value(v);
    return json_is_real(v) ? (int64_t)json_real_value(v) : 0;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* See router_int.h. Long digit runs saturate above 1000000, a port no route names. */
tg_str_t tg_router_split_port(tg_str_t h, long *port)
{
    *port = -1;
    const char *colon = memchr(h.p, ':', h.len);
    if (!colon) return h;
    size_t at = (size_t)(colon - h.p), n = h.len - at - 1;
    if (n == 0) return h;
    long v = 0;
    for (size_t i = at + 1; i < h.len; i++) {
        if (!isdigit((unsigned char)h.p[i])) return h;
        if (v < 1000000) v = v * 10 + (h.p[i] - '0');
    }
    *port = v;
    return (tg_str_t){h.p, at};
}

/* ------------------------------------------------------------------ regexes */

/*
 * Compiles `prefix` + `src` (the prefix is how Kong anchors path regexes: it prepends "^"
 * to the text, so "a|b" anchors only its first branch, exactly as in Kong).
 */
static int compile(const char *prefix, tg_str_t src, uint32_t options, pcre2_code **out, char *msg,
                   size_t msglen)
{
    size_t plen = strlen(prefix);
    char *pat = tg_malloc(plen + src.len + 1);
    memcpy(pat, prefix, plen);
    memcpy(pat + plen, src.p, src.len);
    int code;
    PCRE2_SIZE off;
    *out = pcre2_compile((PCRE2_SPTR)pat, plen + src.len, options, &code, &off, NULL);
    free(pat);
    if (!*out) {
        PCRE2_UCHAR buf[160];
        pcre2_get_error_message(code, buf, sizeof(buf));
        size_t at = off >= plen ? off - plen : 0;
        snprintf(msg, msglen, "%s at offset %zu", (const char *)buf, at);
        return -TG_EINVAL;
    }
    /* JIT is an optimisation only: without it pcre2_match interprets the same code. */
    (void)pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);
    return 0;
}

/* ------------------------------------------------------------------ one route */

static void load_methods(struct arena *a, const json_t *e, rroute_t *rt)
{
    const json_t *m = arr(e, "methods");
    rt->methods = ar_alloc(a, (json_array_size(m) + 1) * sizeof(tg_str_t));
    for (size_t i = 0; i < json_array_size(m); i++) {
        const json_t *v = json_array_get(m, i);
        if (json_is_string(v)) rt->methods[rt->nmethods++] = tg_str_from(json_string_value(v));
    }
}

static void load_hosts(struct arena *a, const json_t *e, rroute_t *rt)
{
    const json_t *hs = arr(e, "hosts");
    rt->hosts = ar_alloc(a, (json_array_size(hs) + 1) * sizeof(rhost_t));
    for (size_t i = 0; i < json_array_size(hs); i++) {
        const json_t *v = json_array_get(hs, i);
        if (!json_is_string(v)) continue;
        rhost_t *h = &rt->hosts[rt->nhosts++];
        tg_str_t name = tg_router_split_port(tg_str_from(json_string_value(v)), &h->port);
        h->kind = RHOST_EXACT;
        if (name.len > 0 && name.p[0] == '*') {
            h->kind = RHOST_SUFFIX;
            name.p++, name.len--;
        } else if (name.len > 0 && name.p[name.len - 1] == '*') {
            h->kind = RHOST_PREFIX;
            name.len--;
        }
        rt->has_wildcard |= h->kind != RHOST_EXACT;
        h->name = ar_lower(a, name.p, name.len);
    }
}

static void load_snis(struct arena *a, const json_t *e, rroute_t *rt)
{
    const json_t *s = arr(e, "snis");
    rt->snis = ar_alloc(a, (json_array_size(s) + 1) * sizeof(tg_str_t));
    for (size_t i = 0; i < json_array_size(s); i++) {
        const json_t *v = json_array_get(s, i);
        if (!json_is_string(v)) continue;
        tg_str_t sni = tg_str_from(json_string_value(v));
        /* transform.lua sni_val_transform: the last dot of an FQDN is not used for routing */
        if (sni.len > 1 && sni.p[sni.len - 1] == '.') sni.len--;
        rt->snis[rt->nsnis++] = sni;
    }
}

/*
 * One header value: a literal compared case-insensitively, or "~*regex". Kong lower-cases
 * the regex text itself and matches it against the lower-cased header value
 * (transform.lua); a caseless match of the lower-cased pattern is the same thing.
 */
static int load_hval(struct arena *a, const char *route, const char *hname, const char *s,
                     rhval_t *hv, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (n < 2 || s[0] != '~' || s[1] != '*') {
        hv->lit = ar_lower(a, s, n);
        return 0;
    }
    char msg[200];
    tg_str_t pat = ar_lower(a, s + 2, n - 2);
    if (compile("", pat, PCRE2_CASELESS, &hv->re, msg, sizeof(msg)) == 0) return 0;
    set_err(err, errlen, "route '%s': headers.%s: invalid regex '%s': %s", route, hname, s, msg);
    return -TG_EINVAL;
}

static int load_headers(struct arena *a, const json_t *e, rroute_t *rt, char *err, size_t errlen)
{
    const json_t *hs = json_object_get(e, "headers");
    if (!json_is_object(hs)) return 0;
    rt->headers = ar_alloc(a, (json_object_size(hs) + 1) * sizeof(rheader_t));
    for (void *it = json_object_iter((json_t *)hs); it;
         it = json_object_iter_next((json_t *)hs, it)) {
        const char *name = json_object_iter_key(it);
        const json_t *vals = json_object_iter_value(it);
        rheader_t *h = &rt->headers[rt->nheaders++];
        h->name = ar_header_name(a, name);
        h->vals = ar_alloc(a, (json_array_size(vals) + 1) * sizeof(rhval_t));
        for (size_t i = 0; i < json_array_size(vals); i++) {
            json_t *v = json_array_get(vals, i);
            if (!json_is_string(v)) continue;
            int rc = load_hval(a, route_label(e), name, json_string_value(v), &h->vals[h->nvals],
                               err, errlen);
            if (rc < 0) return rc;
            h->nvals++;
        }
    }
    return 0;
}

static bool is_regex(const char *p)
{
    return p[0] == '~';
}

/* Groups sort before lower priority ones: regex first, then longer prefixes. */
static bool path_before(const rpath_t *x, const rpath_t *y)
{
    bool rx = is_regex(x->text.p), ry = is_regex(y->text.p);
    if (rx != ry) return rx;
    return !rx && x->text.len > y->text.len;
}

/* Insertion sort: stable, so paths keep their configured order inside a group. */
static void sort_paths(rpath_t *p, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        rpath_t cur = p[i];
        size_t j = i;
        for (; j > 0 && path_before(&cur, &p[j - 1]); j--)
            p[j] = p[j - 1];
        p[j] = cur;
    }
}

static int load_paths(struct arena *a, const json_t *e, rroute_t *rt, char *err, size_t errlen)
{
    const json_t *ps = arr(e, "paths");
    rt->paths = ar_alloc(a, (json_array_size(ps) + 1) * sizeof(rpath_t));
    for (size_t i = 0; i < json_array_size(ps); i++) {
        const json_t *v = json_array_get(ps, i);
        if (!json_is_string(v)) continue;
        rpath_t *p = &rt->paths[rt->npaths++];
        p->text = tg_str_from(json_string_value(v));
        if (!is_regex(p->text.p)) continue;
        char msg[200];
        tg_str_t src = {p->text.p + 1, p->text.len - 1};
        /* "$" only at the very end, as in Kong's regex engine (no "before a final \n") */
        if (compile("^", src, PCRE2_DOLLAR_ENDONLY, &p->re, msg, sizeof(msg)) < 0) {
            set_err(err, errlen, "route '%s': paths[%zu]: invalid regex '%s': %s", route_label(e),
                    i + 1, p->text.p, msg);
            return -TG_EINVAL;
        }
    }
    sort_paths(rt->paths, rt->npaths);
    return 0;
}

/* The http-family protocols of Kong's PROTOCOLS_WITH_SUBSYSTEM (kong/constants.lua). */
static bool http_family(const json_t *protos)
{
    static const char *const http[] = {"http", "https", "grpc", "grpcs", "ws", "wss", NULL};
    for (size_t i = 0; http[i]; i++)
        if (has_str(protos, http[i])) return true;
    return false;
}

static void load_flags(const json_t *e, rroute_t *rt, const tg_router_opts_t *opts)
{
    const json_t *protos = arr(e, "protocols");
    /* runloop/handler.lua: https without http, reached over plain http → redirect */
    if (has_str(protos, "https") && !has_str(protos, "http")) {
        int64_t code = int_field(e, "https_redirect_status_code");
        rt->redirect_status = code ? (int)code : 426;
    }
    rt->strip_path = flag(e, "strip_path", true);
    rt->preserve_host = flag(e, "preserve_host", false);
    const char *ph = json_string_value(json_object_get(e, "path_handling"));
    rt->v1 = opts && opts->path_handling_v1 && ph && strcmp(ph, "v1") == 0;
    const char *sp = json_string_value(json_object_get(rt->service, "path"));
    rt->service_path = sp ? tg_str_from(sp) : TG_STR("/");
}

static tg_str_t str_field(const json_t *e, const char *name)
{
    return tg_str_from(json_string_value(json_object_get(e, name)));
}

static unsigned timeout_field(const json_t *svc, const char *name)
{
    json_int_t v = json_integer_value(json_object_get(svc, name));
    return v > 0 ? (unsigned)v : 60000;
}

static void load_info(rroute_t *rt)
{
    tg_route_info_t *in = &rt->info;
    const json_t *svc = rt->service;
    in->route_id = str_field(rt->route, "id");
    in->route_name = str_field(rt->route, "name");
    in->service_id = str_field(svc, "id");
    in->service_name = str_field(svc, "name");
    in->protocol = json_string_value(json_object_get(svc, "protocol"));
    if (!in->protocol) in->protocol = "http";
    in->host = json_string_value(json_object_get(svc, "host"));
    in->port = json_integer_value(json_object_get(svc, "port"));
    in->connect_timeout = timeout_field(svc, "connect_timeout");
    in->write_timeout = timeout_field(svc, "write_timeout");
    in->read_timeout = timeout_field(svc, "read_timeout");
}

/* ------------------------------------------------------------------ services */

typedef struct svc_ref {
    const char *id;
    const json_t *svc;
} svc_ref_t;

static int svc_cmp(const void *a, const void *b)
{
    return strcmp(((const svc_ref_t *)a)->id, ((const svc_ref_t *)b)->id);
}

/* Services sorted by id, for the routes' lookups while building. */
static svc_ref_t *index_services(const json_t *services, size_t *n)
{
    svc_ref_t *idx = tg_calloc(json_array_size(services) + 1, sizeof(*idx));
    *n = 0;
    for (size_t i = 0; i < json_array_size(services); i++) {
        const json_t *s = json_array_get(services, i);
        const char *id = json_string_value(json_object_get(s, "id"));
        if (id) idx[(*n)++] = (svc_ref_t){id, s};
    }
    qsort(idx, *n, sizeof(*idx), svc_cmp);
    return idx;
}

static const json_t *find_service(const svc_ref_t *idx, size_t n, const json_t *route)
{
    const json_t *ref = json_object_get(route, "service");
    const char *id = json_string_value(json_object_get(ref, "id"));
    if (!id) return NULL;
    svc_ref_t key = {id, NULL};
    const svc_ref_t *hit = bsearch(&key, idx, n, sizeof(*idx), svc_cmp);
    if (!hit)
        TG_LOGW("router", "route '%s': service %s not in the configuration; answering 503",
                route_label(route), id);
    return hit ? hit->svc : NULL;
}

/* ------------------------------------------------------------------ loading */

static void free_regexes(rroute_t *rt)
{
    for (size_t i = 0; i < rt->npaths; i++)
        pcre2_code_free(rt->paths[i].re);
    for (size_t i = 0; i < rt->nheaders; i++)
        for (size_t k = 0; k < rt->headers[i].nvals; k++)
            pcre2_code_free(rt->headers[i].vals[k].re);
}

static int compile_route(struct arena *a, const json_t *e, rroute_t *rt, char *err, size_t errlen)
{
    int rc = load_headers(a, e, rt, err, errlen);
    if (rc == 0) rc = load_paths(a, e, rt, err, errlen);
    return rc;
}

/*
 * Loads one route entity. Returns 0, 1 when the route has no place in the http router
 * (stream protocols only, or nothing to match on: Kong refuses its empty expression), or
 * -TG_EINVAL for a regex that does not compile.
 */
static int load_route(struct arena *a, const json_t *e, const json_t *service,
                      const tg_router_opts_t *opts, rroute_t *rt, char *err, size_t errlen)
{
    const json_t *protos = arr(e, "protocols");
    if (protos && !http_family(protos)) return 1;
    rt->route = e;
    rt->service = service;
    load_methods(a, e, rt);
    load_hosts(a, e, rt);
    load_snis(a, e, rt);
    load_flags(e, rt, opts);
    load_info(rt);
    int rc = compile_route(a, e, rt, err, errlen);
    if (rc < 0) return rc;
    if (rt->nmethods + rt->nhosts + rt->nsnis + rt->nheaders + rt->npaths == 0) {
        TG_LOGW("router", "route '%s' sets no methods, hosts, paths, headers or snis; ignored",
                route_label(e));
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ priority */

typedef struct sortkey {
    rentry_t e;
    unsigned weight, nheaders;
    bool plain_hosts, regex;
    int64_t regex_priority;
    size_t uri_len;
    int64_t created_at;
    const char *id;
    size_t order;
} sortkey_t;

#define CMP_DESC(a, b)                                                                             \
    do {                                                                                           \
        if ((a) != (b)) return (a) > (b) ? -1 : 1;                                                 \
    } while (0)

static int key_cmp(const void *pa, const void *pb)
{
    const sortkey_t *a = pa, *b = pb;
    CMP_DESC(a->weight, b->weight);
    CMP_DESC(a->plain_hosts, b->plain_hosts);
    CMP_DESC(a->nheaders, b->nheaders);
    CMP_DESC(a->regex, b->regex);
    CMP_DESC(a->regex_priority, b->regex_priority);
    CMP_DESC(a->uri_len, b->uri_len);
    CMP_DESC(b->created_at, a->created_at); /* oldest first */
    int c = strcmp(b->id, a->id);           /* then higher id first, as ATC iterates */
    if (c != 0) return c;
    CMP_DESC(b->order, a->order);
    return 0;
}

/* The part of the priority every group of a route shares. */
static sortkey_t route_key(const rroute_t *rt)
{
    const json_t *e = rt->route;
    sortkey_t k = {.e.rt = rt};
    k.weight = (rt->nmethods > 0) + (rt->nhosts > 0) + (rt->npaths > 0) + (rt->nheaders > 0) +
               (rt->nsnis > 0);
    /* transform.lua: `type(hosts) == "table"`, so an empty array counts as plain hosts */
    k.plain_hosts = arr(e, "hosts") != NULL && !rt->has_wildcard;
    k.nheaders = rt->nheaders > MAX_HEADER_COUNT ? MAX_HEADER_COUNT : (unsigned)rt->nheaders;
    k.created_at = int_field(e, "created_at");
    const char *id = json_string_value(json_object_get(e, "id"));
    k.id = id ? id : "";
    return k;
}

static bool same_group(const rpath_t *a, const rpath_t *b)
{
    if (is_regex(a->text.p) || is_regex(b->text.p))
        return is_regex(a->text.p) && is_regex(b->text.p);
    return a->text.len == b->text.len;
}

static void set_quick(rentry_t *e, const rroute_t *rt)
{
    const rpath_t *p = &rt->paths[e->first_path];
    if (e->npaths != 1 || p->re || p->text.len > UINT32_MAX) return;
    e->qend = (uint32_t)p->text.len;
    e->qlen = (uint8_t)(e->qend < RENTRY_QUICK ? e->qend : RENTRY_QUICK);
    memcpy(e->quick, p->text.p + e->qend - e->qlen, e->qlen);
}

/* Appends one key per path group of `rt` (one key when it has no paths). */
static size_t route_keys(const rroute_t *rt, sortkey_t *out, size_t n)
{
    sortkey_t base = route_key(rt);
    if (rt->npaths == 0) {
        out[n] = base;
        out[n].order = n;
        return n + 1;
    }
    for (size_t i = 0; i < rt->npaths;) {
        size_t j = i + 1;
        while (j < rt->npaths && same_group(&rt->paths[i], &rt->paths[j]))
            j++;
        sortkey_t k = base;
        k.e.first_path = (uint32_t)i;
        k.e.npaths = (uint32_t)(j - i);
        set_quick(&k.e, rt);
        k.regex = rt->paths[i].re != NULL;
        k.regex_priority = k.regex ? int_field(rt->route, "regex_priority") : 0;
        k.uri_len = k.regex ? 0 : rt->paths[i].text.len;
        if (k.uri_len > MAX_URI_LENGTH) k.uri_len = MAX_URI_LENGTH;
        k.order = n;
        out[n++] = k;
        i = j;
    }
    return n;
}

static void order_entries(tg_router_t *r)
{
    size_t cap = 0;
    for (size_t i = 0; i < r->nroutes; i++)
        cap += r->routes[i].npaths ? r->routes[i].npaths : 1;
    sortkey_t *keys = tg_calloc(cap + 1, sizeof(*keys));
    size_t n = 0;
    for (size_t i = 0; i < r->nroutes; i++)
        n = route_keys(&r->routes[i], keys, n);
    qsort(keys, n, sizeof(*keys), key_cmp);
    r->entries = tg_calloc(n + 1, sizeof(*r->entries));
    for (size_t i = 0; i < n; i++)
        r->entries[i] = keys[i].e;
    r->nentries = n;
    free(keys);
}

/* ------------------------------------------------------------------ host index */

uint64_t tg_router_host_hash(tg_str_t s)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < s.len; i++) {
        h ^= (unsigned char)tolower((unsigned char)s.p[i]);
        h *= 1099511628211ull;
    }
    return h;
}

const hbucket_t *tg_router_bucket(const tg_router_t *r, tg_str_t host)
{
    if (r->nbuckets == 0) return NULL;
    size_t mask = r->nbuckets - 1;
    for (size_t i = tg_router_host_hash(host) & mask;; i = (i + 1) & mask) {
        const hbucket_t *b = &r->buckets[i];
        if (!b->host.p) return NULL;
        if (tg_str_caseeq(b->host, host)) return b;
    }
}

static void bucket_add(tg_router_t *r, tg_str_t host, uint32_t entry)
{
    size_t mask = r->nbuckets - 1, i = tg_router_host_hash(host) & mask;
    while (r->buckets[i].host.p && !tg_str_caseeq(r->buckets[i].host, host))
        i = (i + 1) & mask;
    hbucket_t *b = &r->buckets[i];
    b->host = host;
    if (b->n > 0 && b->idx[b->n - 1] == entry) return; /* the route names the host twice */
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 4;
        b->idx = tg_realloc(b->idx, b->cap * sizeof(*b->idx));
    }
    b->idx[b->n++] = entry;
}

/*
 * A matcher whose hosts are all plain can only match a request whose host is one of
 * them, so it is filed under each; matchers without hosts or with a wildcard host are
 * tried for every request. Both lists stay in priority order.
 */
static void index_hosts(tg_router_t *r)
{
    size_t total = 0;
    for (size_t i = 0; i < r->nentries; i++)
        if (!r->entries[i].rt->has_wildcard) total += r->entries[i].rt->nhosts;
    r->nbuckets = 8;
    while (r->nbuckets < 2 * total)
        r->nbuckets *= 2;
    r->buckets = tg_calloc(r->nbuckets, sizeof(*r->buckets));
    r->general = tg_calloc(r->nentries + 1, sizeof(*r->general));
    for (size_t i = 0; i < r->nentries; i++) {
        const rroute_t *rt = r->entries[i].rt;
        if (rt->nhosts == 0 || rt->has_wildcard) {
            r->general[r->ngeneral++] = (uint32_t)i;
            continue;
        }
        for (size_t h = 0; h < rt->nhosts; h++)
            bucket_add(r, rt->hosts[h].name, (uint32_t)i);
    }
}

/* ------------------------------------------------------------------ public */

static int load_routes(tg_router_t *r, const json_t *routes, const json_t *services,
                       const tg_router_opts_t *opts, char *err, size_t errlen)
{
    size_t nsvc;
    svc_ref_t *svcs = index_services(services, &nsvc);
    r->routes = tg_calloc(json_array_size(routes) + 1, sizeof(*r->routes));
    int rc = 0;
    for (size_t i = 0; i < json_array_size(routes) && rc >= 0; i++) {
        const json_t *e = json_array_get(routes, i);
        rroute_t *rt = &r->routes[r->nroutes];
        rc = load_route(r->arena, e, find_service(svcs, nsvc, e), opts, rt, err, errlen);
        if (rc == 0) {
            r->nroutes++;
            continue;
        }
        /* skipped or failed: the slot is reused, so drop what it compiled */
        free_regexes(rt);
        memset(rt, 0, sizeof(*rt));
    }
    free(svcs);
    return rc < 0 ? rc : 0;
}

int tg_router_build(const json_t *routes, const json_t *services, const tg_router_opts_t *opts,
                    tg_router_t **out, char *err, size_t errlen)
{
    *out = NULL;
    tg_router_t *r = tg_calloc(1, sizeof(*r));
    r->arena = tg_calloc(1, sizeof(*r->arena));
    r->mctx = pcre2_match_context_create(NULL);
    if (!r->mctx) tg_fatal("out of memory creating a PCRE2 match context");
    pcre2_set_match_limit(r->mctx, REGEX_MATCH_LIMIT);
    int rc = load_routes(r, routes, services, opts, err, errlen);
    if (rc < 0) {
        tg_router_free(r);
        return rc;
    }
    order_entries(r);
    index_hosts(r);
    *out = r;
    return 0;
}

void tg_router_free(tg_router_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nroutes; i++)
        free_regexes(&r->routes[i]);
    for (size_t i = 0; i < r->nbuckets; i++)
        free(r->buckets[i].idx);
    free(r->buckets);
    free(r->general);
    free(r->entries);
    free(r->routes);
    pcre2_match_context_free(r->mctx);
    arena_free(r->arena);
    free(r);
}

size_t tg_router_size(const tg_router_t *r)
{
    return r ? r->nentries : 0;
}

int tg_router_check_route(const json_t *route, char *err, size_t errlen)
{
    struct arena *a = tg_calloc(1, sizeof(*a));
    rroute_t rt = {0};
    int rc = compile_route(a, route, &rt, err, errlen);
    free_regexes(&rt);
    arena_free(a);
    return rc;
}
