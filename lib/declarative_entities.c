/*
 * declarative_entities.c — references, ids, uniqueness and validation of the
 * entities of a declarative configuration, and errors that name their place
 * in the file.
 *
 * Messages follow Kong's declarative loader where it has one ("invalid
 * reference 'service: x' (no such entry in 'services')", "uniqueness
 * violation: ... already declared"), and the schema validator's otherwise.
 */
#include "declarative_entities.h"
#include "alloc.h"
#include "declarative.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const tg_declarative_coll_t tg_declarative_colls[TG_DECL_COUNT] = {
    {"services", &tg_schema_services, {TG_DECL_ROUTES, TG_DECL_PLUGINS}},
    {"routes", &tg_schema_routes, {TG_DECL_PLUGINS, -1}},
    {"consumers", &tg_schema_consumers, {TG_DECL_PLUGINS, TG_DECL_CREDENTIALS}},
    {"plugins", &tg_schema_plugins, {-1, -1}},
    {"keyauth_credentials", &tg_schema_keyauth_credentials, {-1, -1}},
};

/* Stands in for a reference that names nothing, once that has been reported. */
#define NIL_UUID "00000000-0000-0000-0000-000000000000"

int tg_declarative_entities_type(const char *name)
{
    for (int t = 0; t < TG_DECL_COUNT; t++)
        if (strcmp(tg_declarative_colls[t].name, name) == 0) return t;
    return -1;
}

static int type_of_schema(const tg_schema_t *s)
{
    for (int t = 0; t < TG_DECL_COUNT; t++)
        if (tg_declarative_colls[t].schema == s) return t;
    return -1;
}

void tg_declarative_entities_init(tg_declarative_ctx_t *cx)
{
    cx->errors = json_array();
    cx->notices = json_array();
    cx->ordinals = tg_strmap_new();
    for (int t = 0; t < TG_DECL_COUNT; t++) {
        cx->by_id[t] = tg_strmap_new();
        cx->by_key[t] = tg_strmap_new();
    }
}

void tg_declarative_entities_add(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    if (cx->n == cx->cap) {
        cx->cap = cx->cap ? cx->cap * 2 : 64;
        cx->items = tg_realloc(cx->items, cx->cap * sizeof(*cx->items));
    }
    it->seq = cx->n;
    cx->items[cx->n++] = it;
}

/* ---------------------------------------------------------------- reporting */

/* The deepest position along `path` that the file has, starting at `base`. */
static void locate(const tg_declarative_ctx_t *cx, const json_t *base, const json_t *path,
                   unsigned *line, unsigned *col)
{
    const json_t *node = base;
    size_t i;
    json_t *comp;
    *line = *col = 0;
    tg_declarative_yaml_mark(cx->doc, base, NULL, -1, line, col);
    json_array_foreach(path, i, comp) {
        const char *key = json_string_value(comp);
        long idx = json_is_integer(comp) ? (long)json_integer_value(comp) : -1;
        if (!node || !tg_declarative_yaml_mark(cx->doc, node, key, idx, line, col)) break;
        node = key ? json_object_get(node, key) : json_array_get(node, (size_t)idx);
    }
}

/* ["config", "minute"] → "config.minute"; ["paths", 0] → "paths[0]". */
static char *render_path(const json_t *path)
{
    char *out = tg_strdup("");
    size_t i;
    json_t *comp;
    json_array_foreach(path, i, comp) {
        char *next = json_is_string(comp)
                         ? tg_asprintf("%s%s%s", out, i ? "." : "", json_string_value(comp))
                         : tg_asprintf("%s[%lld]", out, (long long)json_integer_value(comp));
        free(out);
        out = next;
    }
    return out;
}

/* What a person calls the entity; credentials have no name that is not a secret. */
static const char *entity_name(const tg_declarative_item_t *it)
{
    static const char *const keys[TG_DECL_COUNT][2] = {
        {"name", NULL}, {"name", NULL}, {"username", "custom_id"}, {"instance_name", "name"},
        {NULL, NULL},
    };
    for (size_t i = 0; i < 2 && keys[it->type][i]; i++) {
        const json_t *v = json_object_get(it->src, keys[it->type][i]);
        if (json_is_string(v)) return json_string_value(v);
    }
    return NULL;
}

static void describe_entity(json_t *e, const tg_declarative_item_t *it)
{
    const char *name = entity_name(it);
    json_object_set_new(e, "entity", json_string(tg_declarative_colls[it->type].name));
    json_object_set_new(e, "entity_path", json_string(it->path));
    json_object_set_new(e, "entity_index", json_integer((json_int_t)it->index));
    if (name) json_object_set_new(e, "entity_name", json_string(name));
}

json_t *tg_declarative_entities_report(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it,
                                       const json_t *path, const char *msg, const char *level)
{
    bool notice = strcmp(level, "notice") == 0;
    if (!notice && json_array_size(cx->errors) >= TG_DECLARATIVE_MAX_ERRORS) {
        cx->dropped++;
        return NULL;
    }
    json_t *e = json_pack("{s:s}", "level", level);
    unsigned line, col;
    if (cx->file) json_object_set_new(e, "file", json_string(cx->file));
    locate(cx, it ? it->src : cx->root, path, &line, &col);
    if (line) {
        json_object_set_new(e, "line", json_integer(line));
        json_object_set_new(e, "column", json_integer(col));
    }
    if (it) describe_entity(e, it);
    if (json_array_size(path)) {
        char *field = render_path(path);
        json_object_set_new(e, "field", json_string(field));
        free(field);
    }
    json_object_set_new(e, "message", json_string(msg));
    json_array_append_new(notice ? cx->notices : cx->errors, e);
    return e;
}

static json_t *report_field(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it,
                            const char *field, const char *msg)
{
    json_t *path = json_pack("[s]", field);
    json_t *e = tg_declarative_entities_report(cx, it, path, msg, "error");
    json_decref(path);
    return e;
}

/* A Kong `fields` error object, one entry per message, each at its field's position. */
static void report_fields(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it, json_t *path,
                          const json_t *errs)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_string(errs)) {
        tg_declarative_entities_report(cx, it, path, json_string_value(errs), "error");
    } else if (json_is_object(errs)) {
        json_array_foreach(json_object_get(errs, "@entity"), i, v)
            tg_declarative_entities_report(cx, it, path, json_string_value(v), "error");
        json_object_foreach((json_t *)errs, k, v) {
            if (strcmp(k, "@entity") == 0) continue;
            json_array_append_new(path, json_string(k));
            report_fields(cx, it, path, v);
            json_array_remove(path, json_array_size(path) - 1);
        }
    } else if (json_is_array(errs)) {
        json_array_foreach(errs, i, v) {
            if (json_is_null(v)) continue;
            json_array_append_new(path, json_integer((json_int_t)i));
            report_fields(cx, it, path, v);
            json_array_remove(path, json_array_size(path) - 1);
        }
    }
}

/* ---------------------------------------------------------------- uniqueness */

/* The item already holding `value` in `table`, or NULL after making `it` its holder. */
static tg_declarative_item_t *claim(tg_declarative_ctx_t *cx, const char *table, const char *value,
                                    const tg_declarative_item_t *it)
{
    tg_strmap_t *t = NULL;
    for (size_t i = 0; i < cx->nseen && !t; i++)
        if (strcmp(cx->seen[i].table, table) == 0) t = cx->seen[i].values;
    if (!t) {
        if (cx->nseen == TG_DECLARATIVE_SEEN_MAX) tg_fatal("too many unique-value tables");
        t = cx->seen[cx->nseen].values = tg_strmap_new();
        cx->seen[cx->nseen++].table = tg_strdup(table);
    }
    uint32_t pos;
    if (tg_strmap_get(t, value, &pos)) return cx->items[pos];
    tg_strmap_put(t, value, (uint32_t)it->seq);
    return NULL;
}

/* Kong's message, plus where the first one is: a duplicate is named on both sides. */
static void report_duplicate(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it,
                             const char *field, const char *what,
                             const tg_declarative_item_t *first)
{
    unsigned line, col;
    locate(cx, first->src, NULL, &line, &col);
    char *m = tg_asprintf("uniqueness violation: '%s' entity %s already declared (first at %s, "
                          "line %u)",
                          tg_declarative_colls[it->type].name, what, first->path, line);
    json_t *e = report_field(cx, it, field, m);
    free(m);
    if (!e) return;
    json_object_set_new(e, "first_path", json_string(first->path));
    json_object_set_new(e, "first_line", json_integer(line));
}

/* Unique fields (name, username, custom_id, instance_name, key) within the file. */
static void index_unique(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    const tg_schema_t *s = tg_declarative_colls[it->type].schema;
    for (const tg_field_t *f = s->fields; f->name; f++) {
        const json_t *v = json_object_get(it->input, f->name);
        if (!(f->flags & TG_F_UNIQUE) || !json_is_string(v)) continue;
        char *table = tg_asprintf("%s.%s", s->name, f->name);
        tg_declarative_item_t *first = claim(cx, table, json_string_value(v), it);
        free(table);
        if (first) {
            /* Secrets are never echoed: the positions say which ones collide. */
            char *what = (f->flags & TG_F_SECRET)
                             ? tg_asprintf("with the same %s", f->name)
                             : tg_asprintf("with %s set to '%s'", f->name, json_string_value(v));
            report_duplicate(cx, it, f->name, what, first);
            free(what);
        } else if (s->endpoint_key && strcmp(f->name, s->endpoint_key) == 0) {
            tg_strmap_put(cx->by_key[it->type], json_string_value(v), (uint32_t)it->seq);
        }
    }
}

static const char *ref_id(const json_t *entity, const char *field)
{
    const char *id = json_string_value(json_object_get(json_object_get(entity, field), "id"));
    return id ? id : "";
}

/* Kong's rule: one plugin of a name per (route, service, consumer), references resolved. */
static void check_plugin_unique(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    const json_t *e = it->input;
    const char *name = json_string_value(json_object_get(e, "name"));
    if (!name) return;
    char *key = tg_asprintf("%s|%s|%s|%s", name, ref_id(e, "route"), ref_id(e, "service"),
                            ref_id(e, "consumer"));
    tg_declarative_item_t *first = claim(cx, "plugins.scope", key, it);
    free(key);
    if (!first) return;
    char *what = tg_asprintf("with name set to '%s' on the same route, service and consumer", name);
    report_duplicate(cx, it, "name", what, first);
    free(what);
}

/* ---------------------------------------------------------------- references */

enum { BY_EITHER, BY_ID, BY_KEY };

static tg_declarative_item_t *find(const tg_declarative_ctx_t *cx, int type, const char *key,
                                   int how)
{
    uint32_t pos;
    /* Kong looks the endpoint key up first: a username may look like a UUID. */
    if (how != BY_ID && tg_strmap_get(cx->by_key[type], key, &pos)) return cx->items[pos];
    if (how != BY_KEY && tg_strmap_get(cx->by_id[type], key, &pos)) return cx->items[pos];
    return NULL;
}

/* {"id": x} or {"<endpoint key>": x}; anything else is left for the validator to describe. */
static bool ref_object(const json_t *v, int target, const char **key, int *how)
{
    const char *ek = target >= 0 ? tg_declarative_colls[target].schema->endpoint_key : NULL;
    if (!json_is_object(v) || json_object_size(v) != 1) return false;
    if (json_is_string(json_object_get(v, "id"))) {
        *key = json_string_value(json_object_get(v, "id"));
        *how = BY_ID;
        return true;
    }
    if (ek && json_is_string(json_object_get(v, ek))) {
        *key = json_string_value(json_object_get(v, ek));
        *how = BY_KEY;
        return true;
    }
    return false;
}

static void report_dangling(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it,
                            const tg_field_t *f, const json_t *v, int target)
{
    char *shown = json_is_string(v) ? tg_strdup(json_string_value(v))
                                    : json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    char *m = tg_asprintf("invalid reference '%s: %s' (no such entry in '%s')", f->name, shown,
                          target >= 0 ? tg_declarative_colls[target].name : "certificates");
    report_field(cx, it, f->name, m);
    free(m);
    free(shown);
}

static void resolve_ref(tg_declarative_ctx_t *cx, tg_declarative_item_t *it, const tg_field_t *f)
{
    json_t *v = json_object_get(it->input, f->name);
    int target = f->rec ? type_of_schema(f->rec) : -1, how = BY_EITHER;
    const char *key = NULL;
    if (!v || json_is_null(v)) return;
    if (json_is_string(v))
        key = json_string_value(v);
    else if (!ref_object(v, target, &key, &how))
        return;
    tg_declarative_item_t *to = target >= 0 ? find(cx, target, key, how) : NULL;
    if (to) {
        json_object_set_new(it->input, f->name, json_pack("{s:s}", "id", to->id));
        return;
    }
    report_dangling(cx, it, f, v, target);
    /* A well-formed stand-in keeps the validator from adding a second error here. */
    json_object_set_new(it->input, f->name, json_pack("{s:s}", "id", NIL_UUID));
}

/* The nested entity's reference to its parent is implied by nesting: Kong
 * refuses it in the file ("value must be null") and injects it. */
static void resolve_refs(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    const tg_schema_t *ps = it->parent ? tg_declarative_colls[it->parent->type].schema : NULL;
    for (const tg_field_t *f = tg_declarative_colls[it->type].schema->fields; f->name; f++) {
        if (f->type != TG_T_FOREIGN) continue;
        if (!ps || f->rec != ps) {
            resolve_ref(cx, it, f);
            continue;
        }
        if (json_object_get(it->input, f->name))
            report_field(cx, it, f->name, "value must be null");
        json_object_set_new(it->input, f->name, json_pack("{s:s}", "id", it->parent->id));
    }
}

/* ---------------------------------------------------------------- ids */

/* A UUID-formatted SHA-256 of length-prefixed parts (so "a","bc" ≠ "ab","c"). */
static void id_from_parts(const char *const *parts, size_t n, char out[TG_UUID_STR_LEN + 1])
{
    size_t cap = 1, off = 0;
    for (size_t i = 0; i < n; i++)
        cap += strlen(parts[i]) + 24;
    char *buf = tg_malloc(cap);
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%zu:%s", strlen(parts[i]), parts[i]);
    uint8_t h[TG_SHA256_LEN];
    char hex[2 * 16 + 1];
    tg_sha256(buf, off, h);
    free(buf);
    h[6] = (uint8_t)((h[6] & 0x0f) | 0x40); /* version 4 layout, as tools expect */
    h[8] = (uint8_t)((h[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    tg_hex_encode(h, 16, hex);
    snprintf(out, TG_UUID_STR_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12,
             hex + 16, hex + 20);
}

/* The key that names the entity across reloads, as (label, value) pairs; 0 when none. */
static size_t natural_key(const tg_declarative_item_t *it, const char **parts)
{
    static const char *const keys[TG_DECL_COUNT][2] = {
        {"name", NULL},          {"name", NULL}, {"username", "custom_id"},
        {"instance_name", NULL}, {NULL, NULL},
    };
    for (size_t i = 0; i < 2 && keys[it->type][i]; i++) {
        const char *v = json_string_value(json_object_get(it->input, keys[it->type][i]));
        if (!v) continue;
        parts[0] = keys[it->type][i];
        parts[1] = v;
        return 2;
    }
    const char *name = json_string_value(json_object_get(it->input, "name"));
    if (it->type != TG_DECL_PLUGINS || !name) return 0;
    /* An unnamed plugin is unique by its scope, which is therefore its identity. */
    const char *const scope[] = {"name",     name,
                                 "route",    ref_id(it->input, "route"),
                                 "service",  ref_id(it->input, "service"),
                                 "consumer", ref_id(it->input, "consumer")};
    memcpy(parts, scope, sizeof(scope));
    return 8;
}

/*
 * Entities without a natural key (unnamed services and routes, credentials:
 * their key is a secret and an id is not) are numbered within their parents,
 * so adding or removing an unrelated entity elsewhere keeps their ids.
 */
static void ordinal_key(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it, char **scope,
                        char *num, size_t numlen)
{
    *scope = tg_strdup(tg_declarative_colls[it->type].name);
    for (const tg_field_t *f = tg_declarative_colls[it->type].schema->fields; f->name; f++) {
        if (f->type != TG_T_FOREIGN) continue;
        char *next = tg_asprintf("%s/%s", *scope, ref_id(it->input, f->name));
        free(*scope);
        *scope = next;
    }
    uint32_t k = 0;
    tg_strmap_get(cx->ordinals, *scope, &k); /* 0 when the scope is new */
    tg_strmap_put(cx->ordinals, *scope, k + 1);
    snprintf(num, numlen, "%u", k);
}

static void derive_id(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    const char *parts[10] = {"tollgate declarative id v1", tg_declarative_colls[it->type].name};
    size_t n = 2 + natural_key(it, parts + 2);
    char *scope = NULL, num[32];
    if (n == 2) {
        ordinal_key(cx, it, &scope, num, sizeof(num));
        parts[n++] = scope;
        parts[n++] = num;
    }
    id_from_parts(parts, n, it->id);
    free(scope);
}

static void assign_id(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    const json_t *v = json_object_get(it->input, "id");
    bool given =
        json_is_string(v) && tg_uuid_valid((tg_str_t){json_string_value(v), json_string_length(v)});
    if (given)
        snprintf(it->id, sizeof(it->id), "%s", json_string_value(v));
    else
        derive_id(cx, it); /* a malformed id is the validator's to report; children need one */
    uint32_t pos;
    bool taken = tg_strmap_get(cx->by_id[it->type], it->id, &pos);
    /* Derived ids collide only when natural keys do, which is reported already. */
    if (taken && given) {
        char *what = tg_asprintf("with primary key set to '%s'", it->id);
        report_duplicate(cx, it, "id", what, cx->items[pos]);
        free(what);
    }
    if (taken) return;
    tg_strmap_put(cx->by_id[it->type], it->id, (uint32_t)it->seq);
}

/* ---------------------------------------------------------------- input and validation */

/* `_info.select_tags` are added to every entity's tags (decK). */
static void apply_select_tags(const tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    json_t *tags = json_object_get(it->input, "tags"), *t;
    size_t i, j;
    if (!cx->select_tags || (tags && !json_is_null(tags) && !json_is_array(tags))) return;
    json_t *merged = json_is_array(tags) ? json_copy(tags) : json_array();
    json_array_foreach(cx->select_tags, i, t) {
        json_t *have;
        bool dup = false;
        json_array_foreach(merged, j, have) dup |= json_equal(have, t);
        if (!dup) json_array_append(merged, t);
    }
    json_object_set_new(it->input, "tags", merged);
}

static void apply_defaults(const tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    const char *which = it->type == TG_DECL_SERVICES ? "service"
                        : it->type == TG_DECL_ROUTES ? "route"
                                                     : NULL;
    const json_t *defs = which ? json_object_get(cx->defaults, which) : NULL;
    const char *k;
    json_t *v;
    if (!json_is_object(defs)) return;
    json_object_foreach((json_t *)defs, k, v) {
        if (!json_object_get(it->input, k)) json_object_set_new(it->input, k, json_deep_copy(v));
    }
}

static void prepare_credential(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    /* The validator drops `ttl` (an Admin API option); here that would make a
     * key meant to expire live forever, so it is refused instead. */
    if (json_object_get(it->input, "ttl"))
        report_field(cx, it, "ttl", "not supported in a declarative configuration");
    const json_t *key = json_object_get(it->input, "key");
    if (!key || json_is_null(key)) {
        char gen[33];
        tg_generate_key(gen);
        json_object_set_new(it->input, "key", json_string(gen));
    }
}

static void validate(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    json_t *errs = NULL;
    apply_defaults(cx, it);
    apply_select_tags(cx, it);
    if (it->type == TG_DECL_CREDENTIALS) prepare_credential(cx, it);
    json_t *e = tg_schema_validate(tg_declarative_colls[it->type].schema, TG_OP_INSERT, it->input,
                                   NULL, &errs);
    if (!e) {
        json_t *path = json_array();
        report_fields(cx, it, path, errs);
        json_decref(path);
        json_decref(errs);
        return;
    }
    json_object_set_new(e, "id", json_string(it->id));
    it->entity = e;
    /* nothing reads the input of a valid item again (later items refer to it by id): at a
     * million keys these shallow copies are a good part of a load's peak memory */
    json_decref(it->input);
    it->input = NULL;
}

void tg_declarative_entities_process(tg_declarative_ctx_t *cx)
{
    for (size_t i = 0; i < cx->n; i++)
        index_unique(cx, cx->items[i]);
    /* Type by type, so every entity an item refers to already has its id. */
    for (int t = 0; t < TG_DECL_COUNT; t++) {
        for (size_t i = 0; i < cx->n; i++) {
            tg_declarative_item_t *it = cx->items[i];
            if (it->type != t) continue;
            resolve_refs(cx, it);
            if (t == TG_DECL_PLUGINS) check_plugin_unique(cx, it);
            assign_id(cx, it);
            validate(cx, it);
        }
    }
}

/* ---------------------------------------------------------------- teardown */

typedef struct ranked {
    json_t *e;
    size_t i;
} ranked_t;

static int by_position(const void *pa, const void *pb)
{
    const ranked_t *a = pa, *b = pb;
    json_int_t la = json_integer_value(json_object_get(a->e, "line"));
    json_int_t lb = json_integer_value(json_object_get(b->e, "line"));
    json_int_t ca = json_integer_value(json_object_get(a->e, "column"));
    json_int_t cb = json_integer_value(json_object_get(b->e, "column"));
    if (la != lb) return la < lb ? -1 : 1;
    if (ca != cb) return ca < cb ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* Errors are found type by type; people read files top to bottom. */
static json_t *sorted_errors(json_t *errors)
{
    size_t n = json_array_size(errors), i;
    ranked_t *r = tg_calloc(n + 1, sizeof(*r));
    json_t *e, *out = json_array();
    json_array_foreach(errors, i, e) r[i] = (ranked_t){e, i};
    qsort(r, n, sizeof(*r), by_position);
    for (i = 0; i < n; i++)
        json_array_append(out, r[i].e);
    free(r);
    return out;
}

json_t *tg_declarative_entities_finish(tg_declarative_ctx_t *cx)
{
    for (size_t i = 0; i < cx->n; i++) {
        json_decref(cx->items[i]->input);
        json_decref(cx->items[i]->entity);
        free(cx->items[i]->path);
        free(cx->items[i]);
    }
    free(cx->items);
    for (int t = 0; t < TG_DECL_COUNT; t++) {
        tg_strmap_free(cx->by_id[t]);
        tg_strmap_free(cx->by_key[t]);
    }
    for (size_t i = 0; i < cx->nseen; i++) {
        free(cx->seen[i].table);
        tg_strmap_free(cx->seen[i].values);
    }
    tg_strmap_free(cx->ordinals);
    json_decref(cx->notices);
    tg_declarative_yaml_free(cx->doc);
    json_t *out = sorted_errors(cx->errors);
    json_decref(cx->errors);
    if (cx->dropped) {
        char *m = tg_asprintf("%zu more errors not shown", cx->dropped);
        json_array_append_new(out, json_pack("{s:s,s:s}", "level", "error", "message", m));
        free(m);
    }
    memset(cx, 0, sizeof(*cx));
    return out;
}
