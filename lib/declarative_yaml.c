/*
 * declarative_yaml.c — libyaml events to jansson, with a position index.
 *
 * The event API (not the document API) is used so that nothing is built
 * that we would refuse anyway: aliases stop the parse at once, nesting is
 * counted as it opens, and no second tree is held in memory.
 */
#include "declarative_yaml.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct mark {
    uint32_t line, col; /* 1-based */
} mark_t;

/* One container's entry in the index: its own mark and its members' marks. */
typedef struct slot {
    const json_t *node;
    mark_t at;
    size_t kids, nkids; /* range in doc->kids, in insertion order */
} slot_t;

struct tg_declarative_yaml {
    json_t *root;
    slot_t *slots; /* open addressing on node address; capacity a power of two */
    size_t cap, used;
    mark_t *kids;
    size_t nkids, kidcap;
};

/* A container being filled. Member marks are collected here and copied into
 * doc->kids in one piece when it closes, so each container's range is contiguous. */
typedef struct frame {
    json_t *node;
    mark_t at;
    char *key; /* pending mapping key; NULL while a key is expected */
    mark_t key_at;
    mark_t *kids;
    size_t n, cap;
} frame_t;

typedef struct builder {
    tg_declarative_yaml_t *doc;
    frame_t stack[TG_DECLARATIVE_YAML_MAX_DEPTH];
    size_t depth;
    bool have_doc;
    tg_declarative_yaml_error_t *err;
} builder_t;

static int fail(builder_t *b, yaml_mark_t m, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(builder_t *b, yaml_mark_t m, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err->message, sizeof(b->err->message), fmt, ap);
    va_end(ap);
    b->err->line = (unsigned)m.line + 1;
    b->err->column = (unsigned)m.column + 1;
    return rc;
}

static mark_t to_mark(yaml_mark_t m)
{
    return (mark_t){(uint32_t)m.line + 1, (uint32_t)m.column + 1};
}

/* ---------------------------------------------------------------- position index */

static size_t slot_hash(const json_t *node, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)node * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static void index_put(tg_declarative_yaml_t *doc, slot_t s)
{
    if ((doc->used + 1) * 2 > doc->cap) {
        size_t ncap = doc->cap ? doc->cap * 2 : 64;
        slot_t *old = doc->slots;
        size_t ocap = doc->cap;
        doc->slots = tg_calloc(ncap, sizeof(slot_t));
        doc->cap = ncap;
        doc->used = 0;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].node) index_put(doc, old[i]);
        free(old);
    }
    size_t i = slot_hash(s.node, doc->cap);
    while (doc->slots[i].node)
        i = (i + 1) & (doc->cap - 1);
    doc->slots[i] = s;
    doc->used++;
}

static const slot_t *index_get(const tg_declarative_yaml_t *doc, const json_t *node)
{
    if (!doc->cap || !node) return NULL;
    for (size_t i = slot_hash(node, doc->cap);; i = (i + 1) & (doc->cap - 1)) {
        if (!doc->slots[i].node) return NULL;
        if (doc->slots[i].node == node) return &doc->slots[i];
    }
}

static void frame_add_kid(frame_t *f, mark_t m)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->kids = tg_realloc(f->kids, f->cap * sizeof(mark_t));
    }
    f->kids[f->n++] = m;
}

/* The container is complete: its member marks join the document's index. */
static void frame_close(tg_declarative_yaml_t *doc, frame_t *f)
{
    if (doc->nkids + f->n > doc->kidcap) {
        doc->kidcap = (doc->nkids + f->n) * 2;
        doc->kids = tg_realloc(doc->kids, doc->kidcap * sizeof(mark_t));
    }
    if (f->n) memcpy(doc->kids + doc->nkids, f->kids, f->n * sizeof(mark_t));
    index_put(doc, (slot_t){f->node, f->at, doc->nkids, f->n});
    doc->nkids += f->n;
    free(f->kids);
    free(f->key);
    memset(f, 0, sizeof(*f));
}

/* ---------------------------------------------------------------- scalars */

static bool is_one_of(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

static bool all_digits(const char *s, const char *set)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!strchr(set, *s)) return false;
    return true;
}

/* YAML 1.2 core int: [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+. Out of int64 → a real. */
static json_t *parse_int(const char *s)
{
    int base = 10;
    const char *digits = s + (*s == '-' || *s == '+');
    if (strncmp(s, "0o", 2) == 0 && all_digits(s + 2, "01234567"))
        base = 8, digits = s + 2;
    else if (strncmp(s, "0x", 2) == 0 && all_digits(s + 2, "0123456789abcdefABCDEF"))
        base = 16, digits = s + 2;
    else if (!all_digits(digits, "0123456789"))
        return NULL;
    errno = 0;
    long long v = strtoll(base == 10 ? s : digits, NULL, base);
    if (errno == ERANGE) return base == 10 ? json_real(strtod(s, NULL)) : NULL;
    return json_integer((json_int_t)v);
}

/* YAML 1.2 core float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool float_syntax(const char *s)
{
    size_t i = (*s == '-' || *s == '+'), lead = 0, frac = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++, lead++;
    if (s[i] == '.') {
        i++;
        while (s[i] >= '0' && s[i] <= '9')
            i++, frac++;
    }
    if (!lead && !frac) return false;
    if (s[i] == 'e' || s[i] == 'E') {
        size_t exp = 0;
        i++;
        if (s[i] == '-' || s[i] == '+') i++;
        while (s[i] >= '0' && s[i] <= '9')
            i++, exp++;
        if (!exp) return false;
    }
    return s[i] == '\0';
}

static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const trues[] = {"true", "True", "TRUE", NULL};
static const char *const falses[] = {"false", "False", "FALSE", NULL};
static const char *const nonfinite[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                        "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                        ".NaN",  ".NAN",  NULL};

/* Implicit resolution of a plain scalar; NULL with *why set when it cannot be represented. */
static json_t *resolve_plain(const char *s, const char **why)
{
    if (is_one_of(s, nulls)) return json_null();
    if (is_one_of(s, trues)) return json_true();
    if (is_one_of(s, falses)) return json_false();
    json_t *n = parse_int(s);
    if (n) return n;
    if (float_syntax(s)) return json_real(strtod(s, NULL));
    if (is_one_of(s, nonfinite)) {
        *why = "infinite and NaN numbers are not supported";
        return NULL;
    }
    return json_string(s);
}

#define TAG_PREFIX "tag:yaml.org,2002:"

/* An explicitly tagged scalar must match its tag (`!!int "5"` is 5, `!!int x` an error). */
static json_t *resolve_tagged(const char *tag, const char *s, const char **why)
{
    const char *t =
        strncmp(tag, TAG_PREFIX, strlen(TAG_PREFIX)) == 0 ? tag + strlen(TAG_PREFIX) : "";
    if (strcmp(tag, "!") == 0 || strcmp(t, "str") == 0) return json_string(s);
    json_t *v = NULL;
    if (strcmp(t, "null") == 0 && is_one_of(s, nulls))
        v = json_null();
    else if (strcmp(t, "bool") == 0 && (is_one_of(s, trues) || is_one_of(s, falses)))
        v = json_boolean(is_one_of(s, trues));
    else if (strcmp(t, "int") == 0)
        v = parse_int(s);
    else if (strcmp(t, "float") == 0 && (float_syntax(s) || parse_int(s)))
        v = json_real(strtod(s, NULL));
    else if (!is_one_of(t, (const char *const[]){"null", "bool", "int", "float", NULL}))
        *why = "unsupported YAML tag";
    if (!v && !*why) *why = "value does not match its YAML tag";
    return v;
}

static int scalar_value(builder_t *b, const yaml_event_t *ev, json_t **out)
{
    const char *s = (const char *)ev->data.scalar.value, *why = NULL;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (memchr(s, '\0', ev->data.scalar.length))
        return fail(b, ev->start_mark, -TG_EPARSE, "strings must not contain NUL characters");
    if (tag)
        *out = resolve_tagged(tag, s, &why);
    else if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        *out = json_string(s);
    else
        *out = resolve_plain(s, &why);
    if (!*out && why && strcmp(why, "unsupported YAML tag") == 0)
        return fail(b, ev->start_mark, -TG_EPARSE, "unsupported YAML tag '%s'", tag);
    if (!*out)
        return fail(b, ev->start_mark, -TG_EPARSE, "'%s': %s", s, why ? why : "invalid UTF-8");
    return 0;
}

/* ---------------------------------------------------------------- tree building */

/* Places a finished value (scalar or freshly opened container) into its parent. */
static int place(builder_t *b, json_t *v, yaml_mark_t m)
{
    if (b->depth == 0) {
        if (b->doc->root) {
            json_decref(v);
            return fail(b, m, -TG_EPARSE, "expected a single YAML document");
        }
        b->doc->root = v;
        return 0;
    }
    frame_t *f = &b->stack[b->depth - 1];
    if (json_is_array(f->node)) {
        json_array_append_new(f->node, v);
        frame_add_kid(f, to_mark(m));
        return 0;
    }
    /* libyaml hands out valid UTF-8 only, so this is a safety net, not a code path. */
    if (json_object_set_new(f->node, f->key, v) != 0)
        return fail(b, m, -TG_EPARSE, "keys must be valid UTF-8");
    frame_add_kid(f, f->key_at);
    free(f->key);
    f->key = NULL;
    return 0;
}

static int on_scalar(builder_t *b, const yaml_event_t *ev)
{
    frame_t *f = b->depth ? &b->stack[b->depth - 1] : NULL;
    if (f && json_is_object(f->node) && !f->key) {
        const char *k = (const char *)ev->data.scalar.value;
        if (memchr(k, '\0', ev->data.scalar.length))
            return fail(b, ev->start_mark, -TG_EPARSE, "keys must not contain NUL characters");
        if (json_object_get(f->node, k))
            return fail(b, ev->start_mark, -TG_EPARSE, "duplicate key '%s'", k);
        f->key = tg_strdup(k);
        f->key_at = to_mark(ev->start_mark);
        return 0;
    }
    json_t *v = NULL;
    int rc = scalar_value(b, ev, &v);
    return rc ? rc : place(b, v, ev->start_mark);
}

static int on_open(builder_t *b, const yaml_event_t *ev, bool mapping)
{
    const char *tag =
        (const char *)(mapping ? ev->data.mapping_start.tag : ev->data.sequence_start.tag);
    frame_t *f = b->depth ? &b->stack[b->depth - 1] : NULL;
    if (f && json_is_object(f->node) && !f->key)
        return fail(b, ev->start_mark, -TG_EPARSE, "mapping keys must be scalars");
    if (tag && strcmp(tag, mapping ? TAG_PREFIX "map" : TAG_PREFIX "seq") != 0)
        return fail(b, ev->start_mark, -TG_EPARSE, "unsupported YAML tag '%s'", tag);
    if (b->depth == TG_DECLARATIVE_YAML_MAX_DEPTH)
        return fail(b, ev->start_mark, -TG_ETOOBIG, "nesting deeper than %d levels",
                    TG_DECLARATIVE_YAML_MAX_DEPTH);
    json_t *node = mapping ? json_object() : json_array();
    int rc = place(b, node, ev->start_mark);
    if (rc) return rc;
    b->stack[b->depth++] = (frame_t){.node = node, .at = to_mark(ev->start_mark)};
    return 0;
}

static int on_event(builder_t *b, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (b->have_doc)
            return fail(b, ev->start_mark, -TG_EPARSE, "expected a single YAML document");
        b->have_doc = true;
        return 0;
    case YAML_ALIAS_EVENT:
        return fail(b, ev->start_mark, -TG_EPARSE,
                    "YAML aliases (*%s) are not supported in a declarative configuration",
                    (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_open(b, ev, false);
    case YAML_MAPPING_START_EVENT:
        return on_open(b, ev, true);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        frame_close(b->doc, &b->stack[--b->depth]);
        return 0;
    default:
        return 0;
    }
}

static int syntax_error(builder_t *b, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR) tg_fatal("libyaml: out of memory");
    if (p->context)
        return fail(b, p->problem_mark, -TG_EPARSE,
                    "YAML syntax error: %s %s at line %zu, column %zu",
                    p->problem ? p->problem : "error", p->context, p->context_mark.line + 1,
                    p->context_mark.column + 1);
    return fail(b, p->problem_mark, -TG_EPARSE, "YAML syntax error: %s",
                p->problem ? p->problem : "malformed input");
}

static int run(builder_t *b, yaml_parser_t *p)
{
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(p, &ev)) return syntax_error(b, p);
        int rc = on_event(b, &ev);
        bool end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (rc || end) return rc;
    }
}

int tg_declarative_yaml_parse(const char *text, size_t len, tg_declarative_yaml_t **out,
                              tg_declarative_yaml_error_t *err)
{
    builder_t b = {.doc = tg_calloc(1, sizeof(tg_declarative_yaml_t)), .err = err};
    memset(err, 0, sizeof(*err));
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) tg_fatal("libyaml: out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = run(&b, &p);
    yaml_parser_delete(&p);
    while (b.depth)
        frame_close(b.doc, &b.stack[--b.depth]);
    if (rc) {
        tg_declarative_yaml_free(b.doc);
        *out = NULL;
        return rc;
    }
    *out = b.doc;
    return 0;
}

/* ---------------------------------------------------------------- queries */

json_t *tg_declarative_yaml_root(const tg_declarative_yaml_t *doc)
{
    return doc ? doc->root : NULL;
}

/* Members are indexed in insertion order, which is jansson's iteration order. */
static long key_index(const json_t *obj, const char *key)
{
    long i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        if (strcmp(k, key) == 0) return i;
        i++;
    }
    return -1;
}

bool tg_declarative_yaml_mark(const tg_declarative_yaml_t *doc, const json_t *node, const char *key,
                              long index, unsigned *line, unsigned *column)
{
    const slot_t *s = doc ? index_get(doc, node) : NULL;
    if (!s) return false;
    mark_t m = s->at;
    if (key) index = json_is_object(node) ? key_index(node, key) : -1;
    if (key || index >= 0) {
        if (index < 0 || (size_t)index >= s->nkids) return false;
        m = doc->kids[s->kids + (size_t)index];
    }
    *line = m.line;
    *column = m.col;
    return true;
}

void tg_declarative_yaml_free(tg_declarative_yaml_t *doc)
{
    if (!doc) return;
    json_decref(doc->root);
    free(doc->slots);
    free(doc->kids);
    free(doc);
}
