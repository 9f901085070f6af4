/*
 * http.c — strict HTTP/1.1 head parsers; see http.h for the contract.
 *
 * Each parse re-reads the buffer from its start (the results point into it,
 * and the caller may have moved it with realloc), but returns early when the
 * bytes added since the previous call cannot have finished a line.
 */
#include "http.h"
#include "error.h"

#include <string.h>

/*
 * Bit flags per byte: TG_HTTP_CC_TOKEN 1, TG_HTTP_CC_VALUE 2, TG_HTTP_CC_URI 4,
 * TG_HTTP_CC_HEX 8. Request-targets take RFC 3986's characters ('#' excluded:
 * fragments are never sent) plus "{|}", which real clients leave unencoded in
 * query strings and which mean nothing to a path.
 */
/* clang-format off */
const unsigned char tg_http_cc[256] = {
    0,   0,   0,   0,   0,   0,   0,   0,   0,   2,   0,   0,   0,   0,   0,   0,  /* 0x00 */
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,  /* 0x10 */
    2,   7,   2,   3,   7,   7,   7,   7,   6,   6,   7,   7,   6,   7,   7,   6,  /* 0x20 */
    15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  6,   6,   2,   6,   2,   6,  /* 0x30 */
    6,   15,  15,  15,  15,  15,  15,  7,   7,   7,   7,   7,   7,   7,   7,   7,  /* 0x40 */
    7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   6,   2,   6,   3,   7,  /* 0x50 */
    3,   15,  15,  15,  15,  15,  15,  7,   7,   7,   7,   7,   7,   7,   7,   7,  /* 0x60 */
    7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   6,   7,   6,   7,   0,  /* 0x70 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0x80 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0x90 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0xa0 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0xb0 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0xc0 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0xd0 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0xe0 */
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,  /* 0xf0 */
};
/* clang-format on */

#define CR '\r'
#define LF '\n'

/*
 * Methods longer than any we could implement are refused with 501 (RFC 9110
 * §9.1); bounding them also bounds the request line to max_uri + LINE_SLACK,
 * which is what lets incomplete heads skip re-parsing (see can_skip).
 */
#define METHOD_MAX 32
#define LINE_SLACK (METHOD_MAX + 32)

static bool is_cc(char c, unsigned cls)
{
    return tg_http_cc_is((unsigned char)c, cls);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int fail(int *status, int code, int err)
{
    *status = code;
    return err;
}

static tg_str_t span(const char *from, const char *to)
{
    return (tg_str_t){from, (size_t)(to - from)};
}

static tg_str_t trim_ows(tg_str_t s)
{
    while (s.len && is_ows(s.p[0]))
        s.p++, s.len--;
    while (s.len && is_ows(s.p[s.len - 1]))
        s.len--;
    return s;
}

/*
 * A head can only make progress when a new LF arrived. While the start line is
 * still incomplete the parser must run anyway once it may be over its limit;
 * the start line is bounded, so searching it for its LF stays cheap.
 */
static bool can_skip(const char *buf, size_t len, size_t prev_len, const tg_http_limits_t *lim)
{
    if (prev_len == 0 || prev_len >= len || len > lim->max_head_size) return false;
    if (memchr(buf + prev_len, LF, len - prev_len)) return false;
    return memchr(buf, LF, prev_len) != NULL || len <= lim->max_uri + LINE_SLACK;
}

/* Leading empty lines before a start line are ignored (RFC 9112 §2.2). */
static int skip_empty_lines(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && *p == CR) {
        if (p + 1 == end) return -TG_EAGAIN;
        if (p[1] != LF) return -TG_EPARSE;
        p += 2;
    }
    *pp = p;
    return 0;
}

static int expect_crlf(const char *p, const char *end)
{
    if (p == end) return -TG_EAGAIN;
    if (*p != CR) return -TG_EPARSE;
    if (p + 1 == end) return -TG_EAGAIN;
    return p[1] == LF ? 0 : -TG_EPARSE;
}

/* "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3). */
static int parse_version(const char *p, const char *end, int *major, int *minor)
{
    if (end - p >= 8 && memcmp(p, "HTTP/", 5) == 0 && p[5] >= '0' && p[5] <= '9' &&
        p[6] == '.' && p[7] >= '0' && p[7] <= '9') { /* the usual case, whole */
        *major = p[5] - '0';
        *minor = p[7] - '0';
        return 0;
    }
    static const char pat[] = "HTTP/#.#";
    for (size_t i = 0; i < 8; i++) {
        if (p + i == end) return -TG_EAGAIN;
        char c = p[i];
        if (pat[i] == '#' ? (c < '0' || c > '9') : c != pat[i]) return -TG_EPARSE;
    }
    *major = p[5] - '0';
    *minor = p[7] - '0';
    return 0;
}

/*
 * Skips bytes that are field-vchar, SP or obs-text, eight at a time: a word passes when
 * none of its bytes is below 0x20 (controls, HTAB, CR, LF) or 0x7F (DEL). Exact, never
 * skipping a byte the per-byte loop would stop at; HTAB and the rest go byte by byte.
 * Values are most of a head's bytes, and this is the parser's hottest loop.
 */
static const char *skip_plain_value(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t del = w ^ (0x7f * ones);
        if ((((w - 0x20 * ones) & ~w) | ((del - ones) & ~del)) & highs) break;
        p += 8;
    }
    return p;
}

/*
 * One field line: token ":" OWS value OWS CRLF. A line starting with
 * whitespace (obs-fold), whitespace before the colon, or any control byte in
 * the value (bare CR and LF included) fails here.
 */
static int parse_field_line(const char *p, const char *end, tg_http_header_t *h, const char **next)
{
    const char *name = p;
    while (p < end && is_cc(*p, TG_HTTP_CC_TOKEN))
        p++;
    if (p == end) return -TG_EAGAIN;
    if (p == name || *p != ':') return -TG_EPARSE;
    h->name = span(name, p);
    p++;
    while (p < end && is_ows(*p))
        p++;
    const char *value = p; /* leading OWS skipped: only trailing OWS is left to trim */
    p = skip_plain_value(p, end);
    while (p < end && is_cc(*p, TG_HTTP_CC_VALUE))
        p++;
    int rc = expect_crlf(p, end);
    if (rc < 0) return rc;
    tg_str_t v = span(value, p);
    while (v.len && is_ows(v.p[v.len - 1]))
        v.len--;
    h->value = v;
    *next = p + 2;
    return 0;
}

/* Field lines up to and including the blank line; -TG_ETOOBIG past `max`. */
static int parse_fields(const char *p, const char *end, size_t max, tg_http_header_t *hdrs,
                        size_t *n, const char **head_end)
{
    size_t count = 0;
    for (;;) {
        if (p == end) return -TG_EAGAIN;
        if (*p == CR) {
            int rc = expect_crlf(p, end);
            if (rc < 0) return rc;
            *n = count;
            *head_end = p + 2;
            return 0;
        }
        if (count == max) return -TG_ETOOBIG;
        int rc = parse_field_line(p, end, &hdrs[count], &p);
        if (rc < 0) return rc;
        count++;
    }
}

/* ---------------------------------------------------------------------------
 * Header semantics shared by requests and responses
 */

/* ASCII case-insensitive equality: header names are tokens, and strncasecmp's locale-aware
 * call costs more than the compare itself on these short strings. */
static bool ascii_caseeq(tg_str_t a, tg_str_t b)
{
    if (a.len != b.len) return false;
    for (size_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b.p[i];
        if (x == y) continue;
        if ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 'z' - 'a') return false;
    }
    return true;
}

/* Calls fn on each non-empty element of a comma-separated list (RFC 9110 §5.6.1). */
static void each_element(tg_str_t v, void (*fn)(tg_str_t el, void *arg), void *arg)
{
    const char *p = v.p, *end = v.p + v.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        tg_str_t el = trim_ows(span(p, stop));
        if (el.len) fn(el, arg);
        p = comma ? comma + 1 : end;
    }
}

/* 1*DIGIT without sign or whitespace, fitting in int64_t. */
static int parse_length(tg_str_t v, int64_t *out)
{
    if (v.len == 0) return -TG_EPARSE;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.p[i];
        if (c < '0' || c > '9') return -TG_EPARSE;
        if (n > (INT64_MAX - (c - '0')) / 10) return -TG_EPARSE;
        n = n * 10 + (c - '0');
    }
    *out = n;
    return 0;
}

/* What one pass over the headers learned about framing and connection. */
struct framing {
    size_t n_length, n_host, n_te_chunked;
    bool has_te, te_last_chunked, te_unknown, te_malformed;
    bool conn_close, conn_keep_alive, expect_continue;
    int64_t length;
    bool length_bad;
    bool host_bad;
};

/* RFC 3986 reg-name / IPv4 characters: unreserved, pct-encoded ('%'), sub-delims. Letters
 * and digits first, without the locale-aware isalnum call: every request's Host goes here. */
static bool reg_name_char(unsigned char c)
{
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
    return c != 0 && memchr("-._~%!$&'()*+,;=", c, 16) != NULL;
}

/*
 * RFC 9112 §3.2: a Host that is not `uri-host [ ":" port ]` is answered 400;
 * forwarding it would hand the upstream (X-Forwarded-Host, or Host itself with
 * preserve_host) a value no origin can interpret. An empty Host is valid.
 */
static bool host_valid(tg_str_t v)
{
    size_t i = 0;
    if (v.len && v.p[0] == '[') { /* IP-literal: hex, ':', '.', IPvFuture's unreserved/sub-delims */
        for (i = 1; i < v.len && v.p[i] != ']'; i++)
            if (!reg_name_char((unsigned char)v.p[i]) && v.p[i] != ':') return false;
        if (i == v.len) return false;
        i++;
    } else {
        while (i < v.len && reg_name_char((unsigned char)v.p[i])) i++;
    }
    if (i < v.len && v.p[i] == ':') /* port = *DIGIT */
        for (i++; i < v.len && v.p[i] >= '0' && v.p[i] <= '9'; i++) {}
    return i == v.len;
}

static void te_element(tg_str_t el, void *arg)
{
    struct framing *f = arg;
    if (tg_str_caseeq(el, TG_STR("chunked"))) {
        f->n_te_chunked++;
        f->te_last_chunked = true;
        return;
    }
    /* Anything else, "chunked;x" included, is a coding we do not implement. */
    const char *semi = memchr(el.p, ';', el.len);
    tg_str_t coding = trim_ows(semi ? span(el.p, semi) : el);
    if (!tg_http_is_token(coding)) f->te_malformed = true;
    f->te_unknown = true;
    f->te_last_chunked = false;
}

static void connection_element(tg_str_t el, void *arg)
{
    struct framing *f = arg;
    if (tg_str_caseeq(el, TG_STR("close"))) f->conn_close = true;
    if (tg_str_caseeq(el, TG_STR("keep-alive"))) f->conn_keep_alive = true;
}

static void scan_framing(const tg_http_header_t *h, size_t n, struct framing *f)
{
    memset(f, 0, sizeof *f);
    f->length = -1;
    for (size_t i = 0; i < n; i++) {
        tg_str_t name = h[i].name;
        switch (name.len) { /* by length first: most names are none of these */
        case 14:
            if (!tg_http_token_is(name, TG_STR("content-length"))) break;
            f->n_length++;
            if (parse_length(h[i].value, &f->length) < 0) f->length_bad = true;
            break;
        case 17:
            if (!tg_http_token_is(name, TG_STR("transfer-encoding"))) break;
            f->has_te = true;
            f->te_last_chunked = false;
            each_element(h[i].value, te_element, f);
            break;
        case 10:
            if (tg_http_token_is(name, TG_STR("connection")))
                each_element(h[i].value, connection_element, f);
            break;
        case 4:
            if (!tg_http_token_is(name, TG_STR("host"))) break;
            f->n_host++;
            if (!host_valid(h[i].value)) f->host_bad = true;
            break;
        case 6:
            if (tg_http_token_is(name, TG_STR("expect")) &&
                tg_str_caseeq(h[i].value, TG_STR("100-continue")))
                f->expect_continue = true;
            break;
        }
    }
}

static bool keep_alive_for(int minor, const struct framing *f)
{
    if (f->conn_close) return false;
    return minor >= 1 || f->conn_keep_alive;
}

/* ---------------------------------------------------------------------------
 * Requests
 */

static bool valid_percent_escapes(tg_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] != '%') continue;
        if (i + 2 >= s.len) return false;
        if (!is_cc(s.p[i + 1], TG_HTTP_CC_HEX) || !is_cc(s.p[i + 2], TG_HTTP_CC_HEX)) return false;
        i += 2;
    }
    return true;
}

/* Splits "path?query" starting at p; an empty path reads as "/". */
static void split_path_query(tg_http_request_head_t *out, const char *p, const char *end)
{
    const char *q = memchr(p, '?', (size_t)(end - p));
    out->path = q == p || p == end ? TG_STR("/") : span(p, q ? q : end);
    out->query = q ? span(q + 1, end) : span(end, end);
}

/* absolute-form: http(s)://authority[/path][?query], no userinfo (RFC 9110 §4.2.4). */
static int split_absolute_form(tg_http_request_head_t *out)
{
    tg_str_t t = out->target;
    size_t skip;
    if (t.len > 7 && strncasecmp(t.p, "http://", 7) == 0)
        skip = 7;
    else if (t.len > 8 && strncasecmp(t.p, "https://", 8) == 0)
        skip = 8;
    else
        return -TG_EPARSE;
    const char *auth = t.p + skip, *end = t.p + t.len, *p = auth;
    while (p < end && *p != '/' && *p != '?') {
        if (*p == '@') return -TG_EPARSE;
        p++;
    }
    if (p == auth) return -TG_EPARSE;
    split_path_query(out, p, end);
    return 0;
}

/* Checks the target's form against the method (RFC 9112 §3.2) and splits it. */
static int split_target(tg_http_request_head_t *out)
{
    tg_str_t t = out->target;
    if (tg_str_eq_lit(out->method, "CONNECT")) {
        /* authority-form: host:port and nothing else. */
        if (memchr(t.p, '/', t.len) || memchr(t.p, '?', t.len) || memchr(t.p, '@', t.len))
            return -TG_EPARSE;
        out->path = span(t.p, t.p);
        out->query = out->path;
        return 0;
    }
    if (tg_str_eq_lit(t, "*")) {
        if (!tg_str_eq_lit(out->method, "OPTIONS")) return -TG_EPARSE;
        out->path = t;
        out->query = span(t.p + 1, t.p + 1);
        return 0;
    }
    if (t.p[0] == '/')
        split_path_query(out, t.p, t.p + t.len);
    else if (split_absolute_form(out) < 0)
        return -TG_EPARSE;
    return valid_percent_escapes(out->path) ? 0 : -TG_EPARSE;
}

/* request-target up to its SP; 414 as soon as it outgrows lim->max_uri. */
static int parse_target(const char *p, const char *end, const tg_http_limits_t *lim,
                        tg_http_request_head_t *out, const char **next)
{
    const char *t = p;
    for (; p < end && *p != ' '; p++) {
        if (!is_cc(*p, TG_HTTP_CC_URI)) return fail(&out->status, 400, -TG_EPARSE);
        if ((size_t)(p - t) >= lim->max_uri) return fail(&out->status, 414, -TG_ETOOBIG);
    }
    if (p == end) return -TG_EAGAIN;
    if (p == t) return fail(&out->status, 400, -TG_EPARSE);
    out->target = span(t, p);
    *next = p + 1;
    return 0;
}

/* method SP request-target SP HTTP-version CRLF, single spaces only. */
static int parse_request_line(const char *p, const char *end, const tg_http_limits_t *lim,
                              tg_http_request_head_t *out, const char **next)
{
    const char *m = p;
    while (p < end && is_cc(*p, TG_HTTP_CC_TOKEN)) {
        if (p - m == METHOD_MAX) return fail(&out->status, 501, -TG_EUNSUPPORTED);
        p++;
    }
    if (p == end) return -TG_EAGAIN;
    if (p == m || *p != ' ') return fail(&out->status, 400, -TG_EPARSE);
    out->method = span(m, p);
    int rc = parse_target(p + 1, end, lim, out, &p);
    if (rc < 0) return rc;
    int major, minor;
    rc = parse_version(p, end, &major, &minor);
    if (rc == 0) rc = expect_crlf(p + 8, end);
    if (rc == -TG_EPARSE) return fail(&out->status, 400, rc);
    if (rc < 0) return rc;
    if (major != 1 || minor > 1) return fail(&out->status, 505, -TG_EUNSUPPORTED);
    out->minor_version = minor;
    *next = p + 10;
    return 0;
}

/*
 * Message framing (RFC 9112 §6): a request whose length two parties could
 * compute differently is refused, never guessed at.
 */
static int request_semantics(tg_http_request_head_t *out)
{
    struct framing f;
    scan_framing(out->headers, out->nheaders, &f);
    int *st = &out->status;
    if (f.n_host > 1 || (out->minor_version == 1 && f.n_host == 0) || f.host_bad)
        return fail(st, 400, -TG_EPARSE);
    if (f.n_length > 1 || f.length_bad) return fail(st, 400, -TG_EPARSE);
    if (f.has_te) {
        if (f.n_length || out->minor_version == 0) return fail(st, 400, -TG_EPARSE);
        if (f.te_malformed || !f.te_last_chunked || f.n_te_chunked > 1)
            return fail(st, 400, -TG_EPARSE);
        if (f.te_unknown) return fail(st, 501, -TG_EUNSUPPORTED);
    }
    if (split_target(out) < 0) return fail(st, 400, -TG_EPARSE);
    out->content_length = f.length;
    out->chunked = f.has_te;
    out->keep_alive = keep_alive_for(out->minor_version, &f);
    out->expect_continue = f.expect_continue && out->minor_version == 1;
    return 0;
}

static int request_head(const char *buf, const char *end, const tg_http_limits_t *lim,
                        tg_http_request_head_t *out)
{
    const char *p = buf;
    int rc = skip_empty_lines(&p, end);
    if (rc == 0) rc = parse_request_line(p, end, lim, out, &p);
    if (rc == -TG_EPARSE && out->status == 0) out->status = 400;
    if (rc < 0) return rc;
    const char *head_end;
    rc = parse_fields(p, end, lim->max_headers, out->headers, &out->nheaders, &head_end);
    if (rc == -TG_ETOOBIG) return fail(&out->status, 431, rc);
    if (rc == -TG_EPARSE) return fail(&out->status, 400, rc);
    if (rc < 0) return rc;
    out->head_len = (size_t)(head_end - buf);
    return request_semantics(out);
}

int tg_http_parse_request(const char *buf, size_t len, size_t prev_len, const tg_http_limits_t *lim,
                          tg_http_header_t *headers, tg_http_request_head_t *out)
{
    if (can_skip(buf, len, prev_len, lim)) return -TG_EAGAIN;
    memset(out, 0, sizeof *out);
    out->headers = headers;
    out->content_length = -1;
    size_t avail = len < lim->max_head_size ? len : lim->max_head_size;
    int rc = request_head(buf, buf + avail, lim, out);
    if (rc == -TG_EAGAIN && len >= lim->max_head_size) return fail(&out->status, 431, -TG_ETOOBIG);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Responses
 */

/* HTTP-version SP 3DIGIT [SP reason-phrase] CRLF; a missing reason is tolerated. */
static int parse_status_line(const char *p, const char *end, tg_http_response_head_t *out,
                             const char **next)
{
    int major, minor;
    int rc = parse_version(p, end, &major, &minor);
    if (rc < 0) return rc;
    if (major != 1 || minor > 1) return -TG_EPARSE;
    p += 8;
    for (int i = 0; i < 4; i++) {
        if (p + i == end) return -TG_EAGAIN;
        bool ok = i == 0 ? p[i] == ' ' : p[i] >= '0' && p[i] <= '9';
        if (!ok) return -TG_EPARSE;
    }
    out->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    if (out->status < 100) return -TG_EPARSE;
    p += 4;
    const char *reason = p;
    if (p < end && *p == ' ') {
        reason = ++p;
        while (p < end && is_cc(*p, TG_HTTP_CC_VALUE))
            p++;
    }
    rc = expect_crlf(p, end);
    if (rc < 0) return rc;
    out->minor_version = minor;
    out->reason = span(reason, p);
    *next = p + 2;
    return 0;
}

static int response_semantics(tg_http_response_head_t *out)
{
    struct framing f;
    scan_framing(out->headers, out->nheaders, &f);
    if (f.n_length > 1 || f.length_bad) return -TG_EPARSE;
    /* TE with CL "ought to be handled as an error" (RFC 9112 §6.3); so is TE in 1.0. */
    if (f.has_te && (f.n_length || out->minor_version == 0 || f.te_malformed)) return -TG_EPARSE;
    if (f.n_te_chunked > 1) return -TG_EPARSE;
    out->content_length = f.length;
    out->chunked = f.has_te && f.te_last_chunked;
    out->keep_alive = keep_alive_for(out->minor_version, &f);
    bool bodiless = out->status < 200 || out->status == 204 || out->status == 304;
    if (!bodiless && !out->chunked && f.length < 0) out->keep_alive = false;
    return 0;
}

static int response_head(const char *buf, const char *end, const tg_http_limits_t *lim,
                         tg_http_response_head_t *out)
{
    const char *p = buf;
    int rc = skip_empty_lines(&p, end);
    if (rc == 0) rc = parse_status_line(p, end, out, &p);
    if (rc < 0) return rc;
    const char *head_end;
    rc = parse_fields(p, end, lim->max_headers, out->headers, &out->nheaders, &head_end);
    if (rc < 0) return rc;
    out->head_len = (size_t)(head_end - buf);
    return response_semantics(out);
}

int tg_http_parse_response(const char *buf, size_t len, size_t prev_len,
                           const tg_http_limits_t *lim, tg_http_header_t *headers,
                           tg_http_response_head_t *out)
{
    if (can_skip(buf, len, prev_len, lim)) return -TG_EAGAIN;
    memset(out, 0, sizeof *out);
    out->headers = headers;
    out->content_length = -1;
    out->error_status = 502;
    size_t avail = len < lim->max_head_size ? len : lim->max_head_size;
    /* The status line shares the request line's bound, so can_skip holds. */
    size_t line_max = lim->max_uri + LINE_SLACK;
    const char *lf = memchr(buf, LF, avail);
    if (!lf && avail > line_max) return -TG_ETOOBIG;
    int rc = response_head(buf, buf + avail, lim, out);
    if (rc == -TG_EAGAIN && len >= lim->max_head_size) return -TG_ETOOBIG;
    return rc;
}

enum tg_http_body_kind tg_http_response_body(const tg_http_response_head_t *r,
                                             tg_str_t request_method)
{
    if (tg_str_eq_lit(request_method, "HEAD")) return TG_HTTP_BODY_NONE;
    if (r->status < 200 || r->status == 204 || r->status == 304) return TG_HTTP_BODY_NONE;
    if (tg_str_eq_lit(request_method, "CONNECT") && r->status < 300) return TG_HTTP_BODY_NONE;
    if (r->chunked) return TG_HTTP_BODY_CHUNKED;
    if (r->content_length >= 0) return TG_HTTP_BODY_LENGTH;
    return TG_HTTP_BODY_EOF;
}

/* ---------------------------------------------------------------------------
 * Lookups and small helpers
 */

const tg_http_header_t *tg_http_header_find(const tg_http_header_t *headers, size_t n,
                                            const char *name)
{
    tg_str_t want = tg_str_from(name);
    for (size_t i = 0; i < n; i++)
        if (ascii_caseeq(headers[i].name, want)) return &headers[i];
    return NULL;
}

size_t tg_http_header_count(const tg_http_header_t *headers, size_t n, const char *name)
{
    tg_str_t want = tg_str_from(name);
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (tg_str_caseeq(headers[i].name, want)) count++;
    return count;
}

bool tg_http_is_token(tg_str_t s)
{
    if (s.len == 0) return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is_cc(s.p[i], TG_HTTP_CC_TOKEN)) return false;
    return true;
}

bool tg_http_is_field_value(tg_str_t s)
{
    for (size_t i = 0; i < s.len; i++)
        if (!is_cc(s.p[i], TG_HTTP_CC_VALUE)) return false;
    return true;
}

static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {422, "Unprocessable Content"},
    {426, "Upgrade Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *tg_http_status_reason(int status)
{
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status) return reasons[i].reason;
    return "Unknown";
}
