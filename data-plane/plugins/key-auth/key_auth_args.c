/*
 * key_auth_args.c — see key_auth_args.h.
 *
 * Forms and multipart bodies are walked in place rather than through lib/form.h: form.c
 * nests `a[]`/`a.b` names as the Admin API wants, while Kong's proxy-side decoders keep
 * names flat, and removing one field must leave the others exactly as the client sent them.
 */
#include "key_auth_args.h"
#include "log.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ---- percent-decoding, lenient like nginx's: a bad escape stays as it is ---- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (unsigned char)tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes the byte at s[*i] and advances *i. */
static unsigned char decode_at(tg_str_t s, size_t *i)
{
    unsigned char c = (unsigned char)s.p[*i];
    (*i)++;
    if (c == '+') return ' ';
    if (c != '%' || *i + 2 > s.len) return c;
    int hi = hexval((unsigned char)s.p[*i]), lo = hexval((unsigned char)s.p[*i + 1]);
    if (hi < 0 || lo < 0) return c;
    *i += 2;
    return (unsigned char)(hi << 4 | lo);
}

/* Compares the decoded form of `raw` with `want` without decoding into memory. */
static bool decoded_eq(tg_str_t raw, const char *want)
{
    size_t i = 0, k = 0, n = strlen(want);
    while (i < raw.len) {
        if (k == n || decode_at(raw, &i) != (unsigned char)want[k]) return false;
        k++;
    }
    return k == n;
}

static tg_str_t decode(tg_req_t *r, tg_str_t raw)
{
    char *out = tg_req_alloc(r, raw.len + 1);
    size_t i = 0, n = 0;
    while (i < raw.len)
        out[n++] = (char)decode_at(raw, &i);
    out[n] = '\0';
    return (tg_str_t){out, n};
}

/* ---- forms: "name=value&name2&..." ---- */

struct pair {
    tg_str_t whole, name, value;
    bool has_value;
};

/* The next pair at *pos; false at the end. Empty pairs and pairs without a name are kept
 * in `whole` so removal can copy them, but callers skip them like nginx does. */
static bool next_pair(tg_str_t form, size_t *pos, struct pair *p)
{
    if (*pos >= form.len) return false;
    const char *start = form.p + *pos;
    const char *amp = memchr(start, '&', form.len - *pos);
    size_t len = amp ? (size_t)(amp - start) : form.len - *pos;
    *pos += len + 1;
    const char *eq = memchr(start, '=', len);
    p->whole = (tg_str_t){start, len};
    p->name = (tg_str_t){start, eq ? (size_t)(eq - start) : len};
    p->has_value = eq != NULL;
    p->value = eq ? (tg_str_t){eq + 1, len - p->name.len - 1} : TG_STR_NULL;
    return true;
}

tg_key_auth_arg_t tg_key_auth_args_form_get(tg_req_t *r, tg_str_t form, const char *name,
                                            tg_str_t *value)
{
    size_t pos = 0, seen = 0;
    struct pair p, found = {0};
    while (next_pair(form, &pos, &p)) {
        if (p.name.len == 0 || !decoded_eq(p.name, name)) continue;
        if (++seen == 1) found = p;
    }
    if (seen == 0) return TG_KEY_AUTH_ARG_ABSENT;
    if (seen > 1) return TG_KEY_AUTH_ARG_TABLE;
    if (!found.has_value) return TG_KEY_AUTH_ARG_OTHER; /* OpenResty gives Lua `true` */
    *value = decode(r, found.value);
    return TG_KEY_AUTH_ARG_STRING;
}

bool tg_key_auth_args_form_remove(tg_req_t *r, tg_str_t form, const char *name, tg_str_t *out)
{
    char *buf = tg_req_alloc(r, form.len + 1);
    size_t pos = 0, n = 0;
    bool removed = false;
    struct pair p;
    while (next_pair(form, &pos, &p)) {
        if (p.name.len > 0 && decoded_eq(p.name, name)) {
            removed = true;
            continue;
        }
        if (n > 0) buf[n++] = '&';
        memcpy(buf + n, p.whole.p, p.whole.len);
        n += p.whole.len;
    }
    buf[n] = '\0';
    *out = (tg_str_t){buf, n};
    return removed;
}

/* ---- content types ---- */

/* kong.request.get_body's test: the type before ';', lower-cased, starts with `mime`. */
static bool ctype_is(tg_str_t ct, const char *mime)
{
    const char *semi = ct.p ? memchr(ct.p, ';', ct.len) : NULL;
    size_t len = semi ? (size_t)(semi - ct.p) : ct.len;
    size_t n = strlen(mime);
    return len >= n && strncasecmp(ct.p, mime, n) == 0;
}

/* Skips a quoted-string starting at v.p[i] == '"'; returns the index after it. */
static size_t skip_quoted(tg_str_t v, size_t i)
{
    for (i++; i < v.len; i++) {
        if (v.p[i] == '\\')
            i++;
        else if (v.p[i] == '"')
            return i + 1;
    }
    return v.len;
}

/* The value of parameter `want` (case-insensitive) of a header value such as
 * `form-data; name="apikey"`, without its quotes (escapes are left as sent). */
static bool header_param(tg_str_t v, const char *want, tg_str_t *out)
{
    size_t i = 0, wl = strlen(want);
    while (i < v.len) {
        if (v.p[i] == '"') {
            i = skip_quoted(v, i);
            continue;
        }
        if (v.p[i++] != ';') continue;
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
            i++;
        if (v.len - i <= wl || strncasecmp(v.p + i, want, wl) != 0 || v.p[i + wl] != '=') continue;
        size_t s = i + wl + 1, e = s;
        if (s < v.len && v.p[s] == '"') {
            e = skip_quoted(v, s);
            if (e - s < 2 || v.p[e - 1] != '"') return false;
            *out = (tg_str_t){v.p + s + 1, e - s - 2};
            return true;
        }
        while (e < v.len && v.p[e] != ';' && v.p[e] != ' ' && v.p[e] != '\t')
            e++;
        *out = (tg_str_t){v.p + s, e - s};
        return true;
    }
    return false;
}

/* ---- multipart/form-data ---- */

struct mp_cursor {
    tg_str_t body, delim; /* delim = "--<boundary>" */
    size_t pos;           /* index of the next delimiter */
};

struct mp_part {
    size_t seg_start, seg_end; /* the part with its opening delimiter line */
    tg_str_t name, value;
    bool named;
};

static const char *find(tg_str_t hay, size_t from, const char *needle, size_t nlen)
{
    if (from > hay.len) return NULL;
    return memmem(hay.p + from, hay.len - from, needle, nlen);
}

/* The opening delimiter starts the body or a line; -1 when there is none. */
static int mp_first(struct mp_cursor *c, tg_req_t *r)
{
    if (c->body.len >= c->delim.len && memcmp(c->body.p, c->delim.p, c->delim.len) == 0) {
        c->pos = 0;
        return 0;
    }
    char *crlf_delim = tg_req_alloc(r, c->delim.len + 2);
    memcpy(crlf_delim, "\r\n", 2);
    memcpy(crlf_delim + 2, c->delim.p, c->delim.len);
    const char *at = find(c->body, 0, crlf_delim, c->delim.len + 2);
    if (!at) return -1;
    c->pos = (size_t)(at - c->body.p) + 2;
    return 0;
}

/* The name of a part from its Content-Disposition header. */
static bool mp_part_name(tg_str_t headers, tg_str_t *name)
{
    size_t i = 0;
    while (i < headers.len) {
        const char *eol = find(headers, i, "\r\n", 2);
        size_t end = eol ? (size_t)(eol - headers.p) : headers.len;
        tg_str_t line = {headers.p + i, end - i};
        i = end + 2;
        const char *colon = memchr(line.p, ':', line.len);
        if (!colon) continue;
        tg_str_t field = {line.p, (size_t)(colon - line.p)};
        if (tg_str_caseeq(field, TG_STR("Content-Disposition")))
            return header_param((tg_str_t){colon + 1, line.len - field.len - 1}, "name", name);
    }
    return false;
}

/* The part at c->pos: 1 with *p filled, 0 at the closing delimiter, -1 when malformed. */
static int mp_next(struct mp_cursor *c, struct mp_part *p)
{
    size_t after = c->pos + c->delim.len;
    if (after + 2 <= c->body.len && memcmp(c->body.p + after, "--", 2) == 0) return 0;
    const char *eol = find(c->body, after, "\r\n", 2);
    if (!eol) return -1;
    size_t content = (size_t)(eol - c->body.p) + 2, next = content;
    for (;;) { /* the part ends at CRLF + delimiter */
        const char *at = find(c->body, next, c->delim.p, c->delim.len);
        if (!at) return -1;
        next = (size_t)(at - c->body.p);
        if (next >= content + 2 && memcmp(c->body.p + next - 2, "\r\n", 2) == 0) break;
        next++;
    }
    tg_str_t part = {c->body.p + content, next - 2 - content};
    const char *hend =
        part.len >= 2 && memcmp(part.p, "\r\n", 2) == 0 ? part.p : find(part, 0, "\r\n\r\n", 4);
    size_t hlen = hend ? (size_t)(hend - part.p) : part.len;
    size_t vstart = hend ? hlen + (hend == part.p ? 2 : 4) : part.len;
    p->seg_start = c->pos;
    p->seg_end = next;
    p->named = hend && mp_part_name((tg_str_t){part.p, hlen}, &p->name);
    p->value = (tg_str_t){part.p + vstart, part.len - vstart};
    c->pos = next;
    return 1;
}

static bool mp_valid(tg_req_t *r, tg_str_t body, tg_str_t delim)
{
    struct mp_cursor c = {body, delim, 0};
    if (mp_first(&c, r) < 0) return false;
    struct mp_part p;
    int rc;
    while ((rc = mp_next(&c, &p)) == 1)
        continue;
    return rc == 0;
}

static tg_key_auth_arg_t mp_get(tg_req_t *r, const tg_key_auth_args_body_t *b, const char *name,
                                tg_str_t *value)
{
    struct mp_cursor c = {b->raw, b->boundary, 0};
    struct mp_part p;
    size_t seen = 0;
    mp_first(&c, r);
    while (mp_next(&c, &p) == 1) {
        if (!p.named || !tg_str_eq(p.name, tg_str_from(name))) continue;
        if (++seen == 1) *value = p.value;
    }
    return seen == 0   ? TG_KEY_AUTH_ARG_ABSENT
           : seen == 1 ? TG_KEY_AUTH_ARG_STRING
                       : TG_KEY_AUTH_ARG_TABLE;
}

static bool mp_remove(tg_req_t *r, const tg_key_auth_args_body_t *b, const char *name,
                      tg_str_t *out)
{
    struct mp_cursor c = {b->raw, b->boundary, 0};
    struct mp_part p;
    char *buf = tg_req_alloc(r, b->raw.len + 1);
    size_t n = 0, copied = 0;
    bool removed = false;
    mp_first(&c, r);
    while (mp_next(&c, &p) == 1) {
        if (!p.named || !tg_str_eq(p.name, tg_str_from(name))) continue;
        memcpy(buf + n, b->raw.p + copied, p.seg_start - copied);
        n += p.seg_start - copied;
        copied = p.seg_end;
        removed = true;
    }
    memcpy(buf + n, b->raw.p + copied, b->raw.len - copied);
    n += b->raw.len - copied;
    buf[n] = '\0';
    *out = (tg_str_t){buf, n};
    return removed;
}

/* ---- bodies ---- */

static bool parse_multipart(tg_req_t *r, tg_key_auth_args_body_t *b)
{
    tg_str_t boundary;
    if (!header_param(b->content_type, "boundary", &boundary) || boundary.len == 0) return false;
    char *delim = tg_req_alloc(r, boundary.len + 3);
    memcpy(delim, "--", 2);
    memcpy(delim + 2, boundary.p, boundary.len);
    delim[boundary.len + 2] = '\0';
    b->boundary = (tg_str_t){delim, boundary.len + 2};
    return mp_valid(r, b->raw, b->boundary);
}

void tg_key_auth_args_body_parse(tg_req_t *r, tg_key_auth_args_body_t *b, tg_str_t raw,
                                 tg_str_t content_type)
{
    *b = (tg_key_auth_args_body_t){.raw = raw, .content_type = content_type};
    if (ctype_is(content_type, "application/x-www-form-urlencoded")) {
        b->kind = TG_KEY_AUTH_BODY_FORM;
    } else if (ctype_is(content_type, "application/json")) {
        /* Kong wants a table: an object or an array; anything else is an invalid body */
        b->json = json_loadb(raw.p ? raw.p : "", raw.len, 0, NULL);
        if (b->json) b->kind = TG_KEY_AUTH_BODY_JSON;
    } else if (ctype_is(content_type, "multipart/form-data")) {
        if (parse_multipart(r, b)) b->kind = TG_KEY_AUTH_BODY_MULTIPART;
    }
    if (b->kind == TG_KEY_AUTH_BODY_EMPTY && raw.len > 0)
        TG_LOGI("key-auth", "cannot process request body (content type '%.*s')",
                (int)content_type.len, content_type.p ? content_type.p : "");
}

void tg_key_auth_args_body_free(tg_key_auth_args_body_t *b)
{
    json_decref(b->json);
    b->json = NULL;
}

static tg_key_auth_arg_t json_get(const json_t *obj, const char *name, tg_str_t *value)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, name) : NULL;
    if (!v) return TG_KEY_AUTH_ARG_ABSENT; /* arrays have no named members */
    if (json_is_string(v)) {
        *value = (tg_str_t){json_string_value(v), json_string_length(v)};
        return TG_KEY_AUTH_ARG_STRING;
    }
    return json_is_object(v) || json_is_array(v) ? TG_KEY_AUTH_ARG_TABLE : TG_KEY_AUTH_ARG_OTHER;
}

tg_key_auth_arg_t tg_key_auth_args_body_get(tg_req_t *r, const tg_key_auth_args_body_t *b,
                                            const char *name, tg_str_t *value)
{
    switch (b->kind) {
    case TG_KEY_AUTH_BODY_FORM:
        return tg_key_auth_args_form_get(r, b->raw, name, value);
    case TG_KEY_AUTH_BODY_JSON:
        return json_get(b->json, name, value);
    case TG_KEY_AUTH_BODY_MULTIPART:
        return mp_get(r, b, name, value);
    default:
        return TG_KEY_AUTH_ARG_ABSENT;
    }
}

static bool json_remove(tg_req_t *r, tg_key_auth_args_body_t *b, const char *name, tg_str_t *out)
{
    if (!json_is_object(b->json) || json_object_del(b->json, name) != 0) return false;
    char *s = json_dumps(b->json, JSON_COMPACT);
    if (!s) tg_fatal("out of memory serialising a JSON body");
    size_t n = strlen(s);
    char *copy = tg_req_alloc(r, n + 1);
    memcpy(copy, s, n + 1);
    free(s);
    *out = (tg_str_t){copy, n};
    return true;
}

bool tg_key_auth_args_body_remove(tg_req_t *r, tg_key_auth_args_body_t *b, const char *name,
                                  tg_str_t *out)
{
    switch (b->kind) {
    case TG_KEY_AUTH_BODY_FORM:
        return tg_key_auth_args_form_remove(r, b->raw, name, out);
    case TG_KEY_AUTH_BODY_JSON:
        return json_remove(r, b, name, out);
    case TG_KEY_AUTH_BODY_MULTIPART:
        return mp_remove(r, b, name, out);
    default:
        return false;
    }
}
