/*
 * form.c — see form.h.
 *
 * A field name is parsed into a path of steps (object key, 1-based array
 * index, or "[]" append) and the value is stored at that path in one JSON
 * tree, so urlencoded bodies, query strings and multipart bodies share every
 * nesting rule. Pairs are applied in the order they arrive, which is what
 * makes "hosts=a&hosts=b" come out as ["a","b"] rather than in hash order.
 */
#include "form.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16
#define MAX_INDEX 10000
/*
 * Gap filling turns `a[10000]=` into 10 000 array slots; this caps the total
 * across one body so that many such pairs cannot multiply into gigabytes.
 */
#define MAX_PADDING 100000
#define MAX_BOUNDARY 70 /* RFC 2046 §5.1.1 */

enum step_kind { STEP_KEY, STEP_INDEX, STEP_APPEND };

struct step {
    enum step_kind kind;
    const char *key; /* STEP_KEY: points into the field name */
    size_t keylen;
    size_t index; /* STEP_INDEX: 1-based */
};

struct path {
    struct step steps[MAX_DEPTH];
    size_t n;
};

struct form {
    json_t *root;
    size_t padded;
};

static json_t *must(json_t *j)
{
    if (!j) tg_fatal("out of memory building a JSON value");
    return j;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *tg_url_decode(const char *in, size_t len, bool plus_as_space, size_t *outlen)
{
    char *out = tg_malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            out[o++] = plus_as_space && in[i] == '+' ? ' ' : in[i];
            continue;
        }
        int hi = len - i > 2 ? hex_digit(in[i + 1]) : -1;
        int lo = hi >= 0 ? hex_digit(in[i + 2]) : -1;
        if (lo < 0) {
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    out[o] = '\0';
    if (outlen) *outlen = o;
    return out;
}

/* ---- field names → paths ---- */

static int push_step(struct path *path, struct step st)
{
    if (path->n == MAX_DEPTH) return -TG_EPARSE;
    path->steps[path->n++] = st;
    return 0;
}

/* Bracket contents: "" appends, digits index (1..MAX_INDEX), anything else is a map key. */
static int push_bracket(struct path *path, const char *s, size_t len)
{
    if (len == 0) return push_step(path, (struct step){.kind = STEP_APPEND});
    size_t digits = 0;
    while (digits < len && s[digits] >= '0' && s[digits] <= '9')
        digits++;
    if (digits < len) return push_step(path, (struct step){STEP_KEY, s, len, 0});
    size_t index = 0;
    for (size_t i = 0; i < len; i++) {
        index = index * 10 + (size_t)(s[i] - '0');
        if (index > MAX_INDEX) return -TG_EPARSE;
    }
    if (index == 0) return -TG_EPARSE;
    return push_step(path, (struct step){STEP_INDEX, NULL, 0, index});
}

/* Length of a plain name segment: everything up to '.', '[' or ']'. */
static size_t name_span(const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && s[n] != '.' && s[n] != '[' && s[n] != ']')
        n++;
    return n;
}

/*
 * name        = segment *( "." segment / "[" [contents] "]" )
 * A bracket may hold dots ("headers[x.y]" is one map key); empty segments,
 * stray ']' and unclosed '[' are malformed.
 */
static int parse_path(const char *name, size_t len, struct path *path)
{
    path->n = 0;
    size_t seg = name_span(name, len);
    if (seg == 0) return -TG_EPARSE;
    int rc = push_step(path, (struct step){STEP_KEY, name, seg, 0});
    size_t i = seg;
    while (rc == 0 && i < len) {
        if (name[i] == '.') {
            seg = name_span(name + i + 1, len - i - 1);
            if (seg == 0) return -TG_EPARSE;
            rc = push_step(path, (struct step){STEP_KEY, name + i + 1, seg, 0});
            i += 1 + seg;
        } else if (name[i] == '[') {
            const char *close = memchr(name + i + 1, ']', len - i - 1);
            if (!close) return -TG_EPARSE;
            rc = push_bracket(path, name + i + 1, (size_t)(close - name - i - 1));
            i = (size_t)(close - name) + 1;
        } else {
            return -TG_EPARSE;
        }
    }
    return rc;
}

/* ---- storing values ---- */

/* Stores `v` (stolen) at 1-based `index`, padding any gap before it with nulls. */
static int array_put(struct form *f, json_t *arr, size_t index, json_t *v)
{
    while (json_array_size(arr) + 1 < index) {
        if (++f->padded > MAX_PADDING) {
            json_decref(v);
            return -TG_EPARSE;
        }
        json_array_append_new(arr, json_null());
    }
    if (json_array_size(arr) + 1 == index) return json_array_append_new(arr, v) ? -TG_EPARSE : 0;
    return json_array_set_new(arr, index - 1, v) ? -TG_EPARSE : 0;
}

/* Writes `v` (stolen) into the slot `st` names inside `parent`. */
static int slot_set(struct form *f, json_t *parent, const struct step *st, json_t *v)
{
    if (st->kind == STEP_KEY)
        return json_object_setn_new(parent, st->key, st->keylen, v) ? -TG_EPARSE : 0;
    /* An intermediate "[]" (as in a[][b]) addresses the first element, as Kong does. */
    size_t index = st->kind == STEP_INDEX ? st->index : 1;
    return array_put(f, parent, index, v);
}

static json_t *slot_get(json_t *parent, const struct step *st)
{
    if (st->kind == STEP_KEY) return json_object_getn(parent, st->key, st->keylen);
    size_t index = st->kind == STEP_INDEX ? st->index : 1;
    json_t *v = json_array_get(parent, index - 1);
    return json_is_null(v) ? NULL : v;
}

/*
 * Returns the container at `st` inside `parent`, creating an object (when
 * the next step is a key) or an array (when it indexes or appends). A
 * string already there may grow into an array ("a=1&a[]=2"), never into an
 * object ("a=1&a.b=2" is ambiguous, so it is an error).
 */
static json_t *descend(struct form *f, json_t *parent, const struct step *st, bool want_object)
{
    json_t *child = slot_get(parent, st);
    if (child && (json_is_object(child) || json_is_array(child)))
        return json_is_object(child) == want_object ? child : NULL;
    if (child && want_object) return NULL;
    json_t *made = must(want_object ? json_object() : json_array());
    if (child) json_array_append(made, child);
    return slot_set(f, parent, st, made) == 0 ? made : NULL;
}

/* Places the leaf `v` (stolen) at the last step; repeated plain keys collect into an array. */
static int place(struct form *f, json_t *parent, const struct step *st, json_t *v)
{
    if (st->kind == STEP_APPEND) return json_array_append_new(parent, v) ? -TG_EPARSE : 0;
    json_t *old = slot_get(parent, st);
    if (!old) return slot_set(f, parent, st, v);
    if (st->kind == STEP_INDEX || json_is_object(old)) {
        json_decref(v); /* a[1]=x twice, or a.b=1&a=2 */
        return -TG_EPARSE;
    }
    if (json_is_array(old)) return json_array_append_new(old, v) ? -TG_EPARSE : 0;
    json_t *arr = must(json_array());
    json_array_append(arr, old);
    json_array_append_new(arr, v);
    return slot_set(f, parent, st, arr);
}

static int form_add(struct form *f, const char *name, size_t namelen, const char *val,
                    size_t vallen)
{
    struct path path;
    int rc = parse_path(name, namelen, &path);
    if (rc < 0) return rc;
    json_t *cur = f->root;
    for (size_t i = 0; i + 1 < path.n; i++) {
        cur = descend(f, cur, &path.steps[i], path.steps[i + 1].kind == STEP_KEY);
        if (!cur) return -TG_EPARSE;
    }
    /* jansson only holds UTF-8; a value that is not cannot be represented. */
    json_t *v = json_stringn(val ? val : "", vallen);
    if (!v) return -TG_EPARSE;
    return place(f, cur, &path.steps[path.n - 1], v);
}

/* ---- application/x-www-form-urlencoded ---- */

static int add_pair(struct form *f, const char *p, size_t n)
{
    const char *eq = memchr(p, '=', n);
    size_t klen = eq ? (size_t)(eq - p) : n;
    /* nginx's argument parser drops pairs without a name; so do we. */
    if (klen == 0) return 0;
    size_t knl = 0, vnl = 0;
    char *key = tg_url_decode(p, klen, true, &knl);
    char *val = eq ? tg_url_decode(eq + 1, n - klen - 1, true, &vnl) : tg_strdup("");
    int rc = key && val ? form_add(f, key, knl, val, vnl) : -TG_EPARSE;
    free(key);
    free(val);
    return rc;
}

int tg_form_parse_urlencoded(const char *body, size_t len, json_t **out)
{
    *out = NULL;
    struct form f = {must(json_object()), 0};
    size_t i = 0;
    while (i < len) {
        const char *amp = memchr(body + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - body) : len;
        int rc = add_pair(&f, body + i, end - i);
        if (rc < 0) {
            json_decref(f.root);
            return rc;
        }
        i = end + 1;
    }
    *out = f.root;
    return 0;
}

/* ---- header parameters (Content-Type, Content-Disposition) ---- */

struct cursor {
    const char *p;
    const char *end;
};

static void skip_ows(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static bool is_delim(char ch)
{
    return ch == ';' || ch == '=' || ch == ' ' || ch == '\t' || ch == '"';
}

static tg_str_t take_token(struct cursor *c)
{
    const char *start = c->p;
    while (c->p < c->end && !is_delim(*c->p))
        c->p++;
    return (tg_str_t){start, (size_t)(c->p - start)};
}

/* Scans a quoted-string after its opening quote; *raw keeps the backslash escapes. */
static int take_quoted(struct cursor *c, tg_str_t *raw)
{
    const char *start = c->p;
    while (c->p < c->end && *c->p != '"')
        c->p += *c->p == '\\' && c->p + 1 < c->end ? 2 : 1;
    if (c->p >= c->end) return -TG_EPARSE;
    *raw = (tg_str_t){start, (size_t)(c->p - start)};
    c->p++;
    return 0;
}

/* Copies a parameter value, undoing quoted-pair escapes (curl writes name="a\"b"). */
static char *param_value(tg_str_t raw, bool quoted, size_t *len)
{
    char *out = tg_malloc(raw.len + 1);
    size_t o = 0;
    for (size_t i = 0; i < raw.len; i++) {
        if (quoted && raw.p[i] == '\\' && i + 1 < raw.len) i++;
        out[o++] = raw.p[i];
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/*
 * Reads the next `; name=value` parameter. Returns 1 with the parameter,
 * 0 at the end of the header value, -TG_EPARSE when it is malformed.
 */
static int next_param(struct cursor *c, tg_str_t *name, tg_str_t *raw, bool *quoted)
{
    skip_ows(c);
    while (c->p < c->end && *c->p == ';') {
        c->p++;
        skip_ows(c);
    }
    if (c->p >= c->end) return 0;
    *name = take_token(c);
    skip_ows(c);
    if (name->len == 0 || c->p >= c->end || *c->p != '=') return -TG_EPARSE;
    c->p++;
    skip_ows(c);
    *quoted = c->p < c->end && *c->p == '"';
    if (*quoted) {
        c->p++;
        if (take_quoted(c, raw) < 0) return -TG_EPARSE;
    } else {
        *raw = take_token(c);
    }
    skip_ows(c);
    return c->p < c->end && *c->p != ';' ? -TG_EPARSE : 1;
}

/*
 * Positions `c` after the leading token (media type or disposition type)
 * and returns it; the parameters follow.
 */
static tg_str_t leading_token(struct cursor *c)
{
    skip_ows(c);
    const char *start = c->p;
    while (c->p < c->end && *c->p != ';')
        c->p++;
    const char *stop = c->p;
    while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
        stop--;
    return (tg_str_t){start, (size_t)(stop - start)};
}

/* Finds the value of parameter `want` (case-insensitive); a fresh string, or NULL. */
static int find_param(tg_str_t header, const char *want, char **value, size_t *len)
{
    struct cursor c = {header.p, header.p + header.len};
    tg_str_t name, raw;
    bool quoted = false;
    int rc;
    *value = NULL;
    leading_token(&c);
    while ((rc = next_param(&c, &name, &raw, &quoted)) == 1) {
        if (*value || !tg_str_caseeq(name, tg_str_from(want))) continue;
        *value = param_value(raw, quoted, len);
    }
    if (rc < 0) {
        free(*value);
        *value = NULL;
    }
    return rc;
}

/* ---- multipart/form-data ---- */

struct multipart {
    struct form *form;
    const char *body;
    size_t len;
    char delim[4 + MAX_BOUNDARY]; /* "\r\n--" boundary */
    size_t delim_len;
};

/*
 * After a delimiter that ends at `at`: "--" closes the body, otherwise
 * optional transport padding and CRLF start the next part. False when the
 * bytes there do not form a delimiter line at all.
 */
static bool delimiter_tail(const struct multipart *m, size_t at, size_t *next, bool *closing)
{
    const char *b = m->body;
    *closing = m->len - at >= 2 && b[at] == '-' && b[at + 1] == '-';
    if (*closing) {
        *next = m->len; /* the epilogue is ignored */
        return true;
    }
    while (at < m->len && (b[at] == ' ' || b[at] == '\t'))
        at++;
    if (m->len - at < 2 || b[at] != '\r' || b[at + 1] != '\n') return false;
    *next = at + 2;
    return true;
}

/* Finds the next delimiter line at or after `from`; *start is where the CRLF before it begins. */
static int find_delimiter(const struct multipart *m, size_t from, size_t *start, size_t *next,
                          bool *closing)
{
    while (from < m->len) {
        const char *hit = memmem(m->body + from, m->len - from, m->delim, m->delim_len);
        if (!hit) break;
        size_t at = (size_t)(hit - m->body);
        if (delimiter_tail(m, at + m->delim_len, next, closing)) {
            *start = at;
            return 0;
        }
        from = at + 1;
    }
    return -TG_EPARSE; /* no (further) boundary: the closing delimiter is missing */
}

/* The first delimiter may open the body directly, without the CRLF that precedes later ones. */
static int find_first_delimiter(const struct multipart *m, size_t *next, bool *closing)
{
    size_t dash_len = m->delim_len - 2, start;
    if (m->len >= dash_len && memcmp(m->body, m->delim + 2, dash_len) == 0 &&
        delimiter_tail(m, dash_len, next, closing))
        return 0;
    return find_delimiter(m, 0, &start, next, closing);
}

static int parse_disposition(tg_str_t value, char **name, size_t *namelen)
{
    struct cursor c = {value.p, value.p + value.len};
    if (!tg_str_caseeq(leading_token(&c), TG_STR("form-data"))) return -TG_EPARSE;
    int rc = find_param(value, "name", name, namelen);
    if (rc < 0) return rc;
    return *name ? 0 : -TG_EPARSE;
}

/* One header line; only Content-Disposition matters, and it must occur exactly once. */
static int part_header(tg_str_t line, char **name, size_t *namelen)
{
    const char *colon = memchr(line.p, ':', line.len);
    /* obs-fold continuation lines are not allowed in multipart (RFC 7578 §4.8) */
    if (!colon || colon == line.p || line.p[0] == ' ' || line.p[0] == '\t') return -TG_EPARSE;
    tg_str_t field = {line.p, (size_t)(colon - line.p)};
    if (!tg_str_caseeq(field, TG_STR("Content-Disposition"))) return 0;
    if (*name) return -TG_EPARSE;
    tg_str_t value = {colon + 1, line.len - field.len - 1};
    return parse_disposition(value, name, namelen);
}

/* A part is headers, an empty line, then the body up to the CRLF of the next delimiter. */
static int parse_part(struct multipart *m, const char *p, size_t len)
{
    const char *hend = memmem(p, len, "\r\n\r\n", 4);
    if (!hend) return -TG_EPARSE;
    char *name = NULL;
    size_t namelen = 0;
    int rc = 0;
    for (const char *line = p; rc == 0 && line < hend;) {
        const char *eol = memmem(line, (size_t)(hend - line) + 2, "\r\n", 2);
        rc = part_header((tg_str_t){line, (size_t)(eol - line)}, &name, &namelen);
        line = eol + 2;
    }
    if (rc == 0 && !name) rc = -TG_EPARSE;
    const char *body = hend + 4;
    if (rc == 0) rc = form_add(m->form, name, namelen, body, (size_t)(p + len - body));
    free(name);
    return rc;
}

static int parse_parts(struct multipart *m)
{
    size_t pos, start, next;
    bool closing;
    int rc = find_first_delimiter(m, &pos, &closing);
    while (rc == 0 && !closing) {
        rc = find_delimiter(m, pos, &start, &next, &closing);
        if (rc == 0) rc = parse_part(m, m->body + pos, start - pos);
        pos = next;
    }
    return rc;
}

int tg_form_parse_multipart(const char *body, size_t len, tg_str_t content_type, json_t **out)
{
    *out = NULL;
    char *boundary = NULL;
    size_t blen = 0;
    int rc = find_param(content_type, "boundary", &boundary, &blen);
    if (rc < 0 || !boundary || blen == 0 || blen > MAX_BOUNDARY) {
        free(boundary);
        return -TG_EPARSE;
    }
    struct form f = {must(json_object()), 0};
    struct multipart m = {.form = &f, .body = body, .len = len, .delim_len = 4 + blen};
    memcpy(m.delim, "\r\n--", 4);
    memcpy(m.delim + 4, boundary, blen);
    free(boundary);
    rc = parse_parts(&m);
    if (rc < 0) {
        json_decref(f.root);
        return rc;
    }
    *out = f.root;
    return 0;
}
