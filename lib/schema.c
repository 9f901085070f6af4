/*
 * schema.c — the generic walker over tg_field_t tables: form coercion,
 * validation with Kong's messages, defaults, PATCH merging, error rendering.
 */
#include "schema.h"
#include "alloc.h"
#include "crypto.h"
#include "log.h"
#include "plugins.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const tg_schema_t *const tg_entities[] = {
    &tg_schema_services, &tg_schema_routes, &tg_schema_consumers,
    &tg_schema_plugins, &tg_schema_keyauth_credentials, NULL,
};

const tg_schema_t *tg_schema_by_name(const char *name)
{
    for (size_t i = 0; tg_entities[i]; i++)
        if (strcmp(tg_entities[i]->name, name) == 0) return tg_entities[i];
    return NULL;
}

const tg_field_t *tg_schema_field(const tg_schema_t *s, const char *name)
{
    for (const tg_field_t *f = s->fields; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

const tg_schema_t *tg_plugin_config_schema(const char *plugin_name)
{
    const tg_plugin_info_t *p = plugin_name ? tg_plugin_find(plugin_name) : NULL;
    return p ? p->config_schema : NULL;
}

/* The record schema of a field: its own, or the plugin's config given the entity. */
static const tg_schema_t *record_of(const tg_field_t *f, const json_t *entity)
{
    if (!(f->flags & TG_F_PLUGIN_CONFIG)) return f->rec;
    return tg_plugin_config_schema(json_string_value(json_object_get(entity, "name")));
}

/* ---------------------------------------------------------------- form coercion */

static json_t *coerce_scalar(const tg_field_t *f, json_t *v);

static json_t *coerce_value(const tg_field_t *f, json_t *v, const json_t *entity)
{
    if (json_is_string(v) && json_string_length(v) == 0) return json_null();
    switch (f->type) {
    case TG_T_ARRAY:
    case TG_T_SET: {
        json_t *arr = v;
        if (!json_is_array(v)) {
            arr = json_array();
            json_array_append(arr, v);
        } else {
            json_incref(arr);
        }
        size_t i;
        json_t *el;
        json_array_foreach(arr, i, el) json_array_set_new(arr, i, coerce_value(f->elem, el, NULL));
        return arr;
    }
    case TG_T_RECORD:
    case TG_T_FOREIGN: {
        const tg_schema_t *rec = record_of(f, entity);
        if (json_is_object(v) && rec && f->type == TG_T_RECORD) tg_schema_coerce_form(rec, v);
        return json_incref(v);
    }
    case TG_T_MAP:
        if (json_is_object(v) && f->elem) {
            const char *k;
            json_t *el;
            json_object_foreach(v, k, el) json_object_set_new(v, k, coerce_value(f->elem, el, NULL));
        }
        return json_incref(v);
    default:
        return coerce_scalar(f, v);
    }
}

static json_t *coerce_scalar(const tg_field_t *f, json_t *v)
{
    if (!json_is_string(v)) return json_incref(v);
    const char *s = json_string_value(v);
    char *end;
    if (f->type == TG_T_INTEGER || f->type == TG_T_NUMBER) {
        double d = strtod(s, &end);
        if (end == s || *end || !isfinite(d)) return json_incref(v);
        if (f->type == TG_T_INTEGER && d == floor(d) && fabs(d) < 9e15)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    if (f->type == TG_T_BOOLEAN) {
        if (strcmp(s, "true") == 0) return json_true();
        if (strcmp(s, "false") == 0) return json_false();
    }
    return json_incref(v);
}

void tg_schema_coerce_form(const tg_schema_t *s, json_t *args)
{
    if (!s || !json_is_object(args)) return;
    for (const tg_field_t *f = s->fields; f->name; f++) {
        json_t *v = json_object_get(args, f->name);
        if (v) json_object_set_new(args, f->name, coerce_value(f, v, args));
    }
    json_t *ttl = json_object_get(args, "ttl");
    if (s->ttl && ttl) {
        static const tg_field_t ttl_field = {"ttl", TG_T_INTEGER, 0};
        json_object_set_new(args, "ttl", coerce_value(&ttl_field, ttl, args));
    }
}

/* ---------------------------------------------------------------- validation */

typedef struct vctx {
    enum tg_schema_op op;
} vctx_t;

static json_t *validate_record(const tg_schema_t *s, const json_t *in, const vctx_t *cx,
                               json_t **errs);

static const char *type_name(tg_type_t t)
{
    switch (t) {
    case TG_T_STRING: return "a string";
    case TG_T_INTEGER: return "an integer";
    case TG_T_NUMBER: return "a number";
    case TG_T_BOOLEAN: return "a boolean";
    case TG_T_ARRAY: return "an array";
    case TG_T_SET: return "a set";
    case TG_T_MAP: return "a map";
    default: return "a record";
    }
}

static bool type_ok(tg_type_t t, const json_t *v)
{
    switch (t) {
    case TG_T_STRING: return json_is_string(v);
    case TG_T_INTEGER:
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
                fabs(json_real_value(v)) < 9e15);
    case TG_T_NUMBER: return json_is_number(v);
    case TG_T_BOOLEAN: return json_is_boolean(v);
    case TG_T_ARRAY:
    case TG_T_SET: return json_is_array(v);
    default: return json_is_object(v);
    }
}

static json_t *err_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *err_str(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return json_string(buf);
}

static void fmt_num(char *buf, size_t n, double d)
{
    if (d == floor(d) && fabs(d) < 1e15) snprintf(buf, n, "%.0f", d);
    else snprintf(buf, n, "%g", d);
}

/* Scalar constraints after the type is known good. Returns an error string or NULL. */
static json_t *check_scalar(const tg_field_t *f, const json_t *v)
{
    char a[64], b[64], msg[512];
    if (f->type == TG_T_INTEGER || f->type == TG_T_NUMBER) {
        double d = json_number_value(v);
        fmt_num(a, sizeof(a), f->min);
        fmt_num(b, sizeof(b), f->max);
        if ((f->flags & TG_F_BETWEEN) && (d < f->min || d > f->max))
            return err_str("value should be between %s and %s", a, b);
        if ((f->flags & TG_F_GT) && !(d > f->min)) return err_str("value must be greater than %s", a);
    }
    if (f->type == TG_T_STRING) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        size_t max = f->len_max ? f->len_max : TG_SCHEMA_STRING_MAX;
        if (len > max) return err_str("length must be at most %zu", max);
        if (f->len_min && len < f->len_min) {
            if (f->len_min == 1 && len == 0) return json_string("length must be at least 1");
            return err_str("length must be at least %zu", f->len_min);
        }
        if ((f->flags & TG_F_UUID) && !tg_uuid_valid((tg_str_t){s, len}))
            return json_string("expected a valid UUID");
        if (f->one_of) {
            bool found = false;
            for (size_t i = 0; f->one_of[i]; i++) found |= strcmp(f->one_of[i], s) == 0;
            if (!found) {
                size_t off = (size_t)snprintf(msg, sizeof(msg), "expected one of: ");
                for (size_t i = 0; f->one_of[i] && off < sizeof(msg); i++)
                    off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s", i ? ", " : "",
                                            f->one_of[i]);
                return json_string(msg);
            }
        }
    }
    if (f->check && f->check(v, msg, sizeof(msg))) return json_string(msg);
    return NULL;
}

static json_t *validate_value(const tg_field_t *f, const json_t *v, const json_t *entity,
                              const vctx_t *cx, json_t **out);

/* Arrays and sets: element errors come back as an array aligned with the input. */
static json_t *validate_list(const tg_field_t *f, const json_t *v, const vctx_t *cx, json_t **out)
{
    size_t max = f->len_max ? f->len_max : TG_SCHEMA_LIST_MAX;
    if (json_array_size(v) > max) return err_str("length must be at most %zu", max);
    if (f->len_min && json_array_size(v) < f->len_min) return err_str("length must be at least %zu", f->len_min);
    json_t *res = json_array(), *errs = NULL;
    size_t i, j;
    json_t *el, *prev;
    json_array_foreach(v, i, el) {
        json_t *norm = NULL, *e = validate_value(f->elem, el, NULL, cx, &norm);
        if (!e && f->type == TG_T_SET) { /* sets drop duplicates as Kong does */
            bool dup = false;
            json_array_foreach(res, j, prev) dup |= json_equal(prev, norm);
            if (dup) { json_decref(norm); continue; }
        }
        if (e) {
            if (!errs) errs = json_array();
            while (json_array_size(errs) < i) json_array_append_new(errs, json_null());
            json_array_append_new(errs, e);
        } else {
            json_array_append_new(res, norm);
        }
    }
    if (errs) { json_decref(res); return errs; }
    *out = res;
    return NULL;
}

static json_t *validate_map(const tg_field_t *f, const json_t *v, const vctx_t *cx, json_t **out)
{
    size_t max = f->len_max ? f->len_max : TG_SCHEMA_LIST_MAX;
    if (json_object_size(v) > max) return err_str("length must be at most %zu", max);
    json_t *res = json_object(), *errs = NULL;
    const char *k;
    json_t *el;
    json_object_foreach((json_t *)v, k, el) {
        json_t *norm = NULL, *e = f->elem ? validate_value(f->elem, el, NULL, cx, &norm) : NULL;
        if (e) {
            if (!errs) errs = json_object();
            json_object_set_new(errs, k, e);
        } else {
            json_object_set_new(res, k, norm ? norm : json_incref(el));
        }
    }
    if (errs) { json_decref(res); return errs; }
    *out = res;
    return NULL;
}

/* A foreign reference is {"id": "<uuid>"} (endpoint keys were resolved by the DAO). */
static json_t *validate_foreign(const tg_field_t *f, const json_t *v, json_t **out)
{
    const char *k;
    json_t *el, *errs = NULL;
    json_t *given = json_object_get(v, "id");
    /* As Kong (validate_primary_key with ignore_others): a reference carrying a valid id may
     * hold the whole parent entity (go-kong and decK send it so); only the id is kept. */
    if (json_is_string(given) &&
        tg_uuid_valid((tg_str_t){json_string_value(given), json_string_length(given)})) {
        *out = json_pack("{s:O}", "id", given);
        return NULL;
    }
    json_object_foreach((json_t *)v, k, el) {
        if (strcmp(k, "id") != 0) {
            if (!errs) errs = json_object();
            json_object_set_new(errs, k, json_string("unknown field"));
        }
    }
    json_t *id = json_object_get(v, "id");
    if (!errs && (!id || json_is_null(id))) {
        errs = json_object();
        json_object_set_new(errs, "id", json_string("required field missing"));
    } else if (!errs && !json_is_string(id)) {
        errs = json_object();
        json_object_set_new(errs, "id", json_string("expected a string"));
    } else if (!errs && !tg_uuid_valid((tg_str_t){json_string_value(id), json_string_length(id)})) {
        errs = json_object();
        json_object_set_new(errs, "id", json_string("expected a valid UUID"));
    }
    if (errs) return errs;
    *out = json_pack("{s:O}", "id", id);
    return NULL;
}

/* Validates one non-null value; on success *out is its normalised copy. */
static json_t *validate_value(const tg_field_t *f, const json_t *v, const json_t *entity,
                              const vctx_t *cx, json_t **out)
{
    if (!type_ok(f->type, v)) return err_str("expected %s", type_name(f->type));
    switch (f->type) {
    case TG_T_ARRAY:
    case TG_T_SET: return validate_list(f, v, cx, out);
    case TG_T_MAP: return validate_map(f, v, cx, out);
    case TG_T_FOREIGN: return validate_foreign(f, v, out);
    case TG_T_RECORD: {
        const tg_schema_t *rec = record_of(f, entity);
        if (!rec) { *out = json_incref((json_t *)v); return NULL; } /* unknown plugin: reported on name */
        json_t *errs = NULL;
        *out = validate_record(rec, v, cx, &errs);
        return errs;
    }
    default: {
        json_t *e = check_scalar(f, v);
        if (e) return e;
        if (f->type == TG_T_INTEGER && json_is_real(v)) *out = json_integer((json_int_t)json_real_value(v));
        else *out = json_incref((json_t *)v);
        return NULL;
    }
    }
}

/* The value a field takes when the input does not mention it. */
static json_t *default_value(const tg_field_t *f, const json_t *entity, const vctx_t *cx,
                             json_t **errs)
{
    if (f->type == TG_T_RECORD) {
        const tg_schema_t *rec = record_of(f, entity);
        if (!rec) return json_null();
        json_t *empty = json_object();
        json_t *res = validate_record(rec, empty, cx, errs);
        json_decref(empty);
        return res ? res : json_null();
    }
    if (f->flags & TG_F_PLUGIN_PROTOCOLS) {
        const tg_plugin_info_t *p = tg_plugin_find(json_string_value(json_object_get(entity, "name")));
        return p ? json_loads(p->default_protocols, 0, NULL) : json_null();
    }
    if (!f->dflt) return json_null();
    json_t *d = json_loads(f->dflt, JSON_DECODE_ANY, NULL);
    if (!d) tg_fatal("schema default for '%s' is not JSON: %s", f->name, f->dflt);
    return d;
}

static void add_entity_error(json_t *errs, const char *msg)
{
    json_t *list = json_object_get(errs, "@entity");
    if (!list) {
        list = json_array();
        json_object_set_new(errs, "@entity", list);
    }
    json_array_append_new(list, json_string(msg));
}

static bool is_empty(const json_t *v)
{
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0);
}

/*
 * Kong declares a plugin's config checks on the plugin entity, so their
 * messages appear in the plugin's top-level "@entity" list, not under config.
 */
static void lift_entity_errors(json_t *errs, const char *field)
{
    json_t *sub = json_object_get(errs, field);
    json_t *list = json_object_get(sub, "@entity");
    if (!json_is_object(sub) || !list) return;
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m) add_entity_error(errs, json_string_value(m));
    json_object_del(sub, "@entity");
    if (json_object_size(sub) == 0) json_object_del(errs, field);
}

static void check_at_least_one_of(const tg_schema_t *s, const json_t *res, json_t *errs,
                                  const char *prefix)
{
    if (!s->at_least_one_of) return;
    char msg[512];
    size_t off = (size_t)snprintf(msg, sizeof(msg), "at least one of these fields must be non-empty: ");
    for (size_t i = 0; s->at_least_one_of[i]; i++) {
        if (!is_empty(json_object_get(res, s->at_least_one_of[i]))) return;
        off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s'%s%s'", i ? ", " : "",
                                prefix ? prefix : "", s->at_least_one_of[i]);
    }
    add_entity_error(errs, msg);
}

static void validate_field(const tg_field_t *f, const json_t *in, json_t *res, json_t *errs,
                           const vctx_t *cx)
{
    json_t *v = json_object_get(in, f->name), *norm = NULL, *e = NULL;
    if (f->flags & TG_F_INPUT_ONLY) return;
    /* An unknown plugin is reported once, on `name`; its config cannot be judged. */
    if ((f->flags & (TG_F_PLUGIN_CONFIG | TG_F_PLUGIN_PROTOCOLS)) &&
        !tg_plugin_find(json_string_value(json_object_get(in, "name"))))
        return;
    if (!v) {
        norm = default_value(f, in, cx, &e);
    } else if (json_is_null(v)) {
        norm = json_null();
    } else if (f->flags & TG_F_NO_VALUE) {
        e = json_string("value must be null");
    } else {
        e = validate_value(f, v, in, cx, &norm);
    }
    if (!e && json_is_null(norm) && (f->flags & TG_F_REQUIRED) && !(f->flags & TG_F_AUTO))
        e = json_string("required field missing");
    if (e) {
        json_object_set_new(errs, f->name, e);
        json_decref(norm);
        return;
    }
    json_object_set_new(res, f->name, norm ? norm : json_null());
}

static json_t *validate_record(const tg_schema_t *s, const json_t *in, const vctx_t *cx,
                               json_t **errs_out)
{
    json_t *res = json_object(), *errs = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        bool known = tg_schema_field(s, k) != NULL || (s->ttl && strcmp(k, "ttl") == 0);
        if (!known) json_object_set_new(errs, k, json_string("unknown field"));
    }
    for (const tg_field_t *f = s->fields; f->name; f++) {
        validate_field(f, in, res, errs, cx);
        if (f->flags & TG_F_PLUGIN_CONFIG) lift_entity_errors(errs, f->name);
    }
    if (json_object_size(errs) == 0) {
        check_at_least_one_of(s, res, errs, s->admin_path ? NULL : "config.");
        if (s->entity_check) {
            json_t *entity_errs = json_array();
            s->entity_check(res, errs, entity_errs);
            size_t i;
            json_array_foreach(entity_errs, i, v) add_entity_error(errs, json_string_value(v));
            json_decref(entity_errs);
        }
    }
    if (json_object_size(errs) == 0) {
        json_decref(errs);
        return res;
    }
    json_decref(res);
    *errs_out = errs;
    return NULL;
}

/* PATCH: records merge recursively (maps and foreign references are replaced). */
static void merge_into(const tg_schema_t *s, json_t *dst, const json_t *patch)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v) {
        const tg_field_t *f = s ? tg_schema_field(s, k) : NULL;
        json_t *cur = json_object_get(dst, k);
        const tg_schema_t *rec = f && f->type == TG_T_RECORD ? record_of(f, dst) : NULL;
        if (rec && json_is_object(v) && json_is_object(cur)) {
            json_t *copy = json_deep_copy(cur);
            merge_into(rec, copy, v);
            json_object_set_new(dst, k, copy);
        } else {
            json_object_set_new(dst, k, json_deep_copy(v));
        }
    }
}

json_t *tg_schema_validate(const tg_schema_t *s, enum tg_schema_op op, const json_t *input,
                           const json_t *existing, json_t **errs)
{
    vctx_t cx = {op};
    *errs = NULL;
    if (!json_is_object(input)) {
        *errs = json_object();
        add_entity_error(*errs, "expected a record");
        return NULL;
    }
    json_t *work = json_deep_copy(input), *pre = json_object();
    if (s->expand) s->expand(work, pre);
    if (json_object_size(pre) > 0) {
        json_decref(work);
        *errs = pre;
        return NULL;
    }
    json_decref(pre);
    if (op == TG_OP_UPDATE && existing) {
        json_t *merged = json_deep_copy(existing);
        merge_into(s, merged, work);
        json_decref(work);
        work = merged;
    }
    json_object_del(work, "ttl");
    json_t *res = validate_record(s, work, &cx, errs);
    json_decref(work);
    return res;
}

/* ---------------------------------------------------------------- error rendering */

/* Lua-table style rendering (penlight's pretty.write with no indent) Kong uses in messages. */
static void lua_pretty(const json_t *v, char **buf, size_t *len, size_t *cap);

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = tg_realloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Keys of an object, sorted; caller frees the array (not the strings). */
static const char **sorted_keys(const json_t *obj, size_t *n)
{
    *n = json_object_size(obj);
    const char **keys = tg_calloc(*n + 1, sizeof(char *));
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) keys[i++] = k;
    qsort(keys, *n, sizeof(char *), cmp_str);
    return keys;
}

static void lua_pretty(const json_t *v, char **buf, size_t *len, size_t *cap)
{
    char tmp[64];
    if (json_is_string(v)) {
        append(buf, len, cap, "\"", 1);
        append(buf, len, cap, json_string_value(v), json_string_length(v));
        append(buf, len, cap, "\"", 1);
    } else if (json_is_number(v)) {
        fmt_num(tmp, sizeof(tmp), json_number_value(v));
        append(buf, len, cap, tmp, strlen(tmp));
    } else if (json_is_boolean(v)) {
        append(buf, len, cap, json_is_true(v) ? "true" : "false", json_is_true(v) ? 4 : 5);
    } else if (json_is_array(v)) {
        append(buf, len, cap, "{", 1);
        size_t i;
        json_t *el;
        json_array_foreach(v, i, el) {
            if (i) append(buf, len, cap, ",", 1);
            lua_pretty(el, buf, len, cap);
        }
        append(buf, len, cap, "}", 1);
    } else if (json_is_object(v)) {
        size_t n;
        const char **keys = sorted_keys(v, &n);
        append(buf, len, cap, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) append(buf, len, cap, ",", 1);
            append(buf, len, cap, keys[i], strlen(keys[i]));
            append(buf, len, cap, "=", 1);
            lua_pretty(json_object_get(v, keys[i]), buf, len, cap);
        }
        append(buf, len, cap, "}", 1);
        free(keys);
    } else {
        append(buf, len, cap, "null", 4);
    }
}

char *tg_lua_pretty(const json_t *v)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    append(&buf, &len, &cap, "", 0);
    lua_pretty(v, &buf, &len, &cap);
    return buf;
}

static void add_line(json_t *lines, const char *prefix, const char *key, const json_t *v)
{
    char *val = json_is_string(v) ? tg_strdup(json_string_value(v)) : tg_lua_pretty(v);
    char *line = prefix ? tg_asprintf("%s.%s: %s", prefix, key, val) : tg_asprintf("%s: %s", key, val);
    json_array_append_new(lines, json_string(line));
    free(line);
    free(val);
}

char *tg_schema_error_message(const json_t *fields)
{
    json_t *lines = json_array();
    json_t *ent = json_object_get(fields, "@entity");
    size_t i, n;
    json_t *v;
    json_array_foreach(ent, i, v) json_array_append(lines, v);
    const char **keys = sorted_keys(fields, &n);
    for (i = 0; i < n; i++) {
        if (strcmp(keys[i], "@entity") == 0) continue;
        json_t *fe = json_object_get(fields, keys[i]);
        if (json_is_object(fe)) {
            size_t m;
            const char **sub = sorted_keys(fe, &m);
            for (size_t j = 0; j < m; j++) add_line(lines, keys[i], sub[j], json_object_get(fe, sub[j]));
            free(sub);
        } else if (json_is_array(fe)) {
            size_t j;
            json_t *el;
            json_array_foreach(fe, j, el) {
                if (json_is_null(el)) continue;
                char idx[32];
                snprintf(idx, sizeof(idx), "%zu", j + 1);
                add_line(lines, keys[i], idx, el);
            }
        } else {
            add_line(lines, NULL, keys[i], fe);
        }
    }
    free(keys);
    size_t count = json_array_size(lines);
    char *joined = tg_strdup("");
    json_array_foreach(lines, i, v) {
        char *next = tg_asprintf("%s%s%s", joined, i ? "; " : "", json_string_value(v));
        free(joined);
        joined = next;
    }
    char *msg = count == 1 ? tg_asprintf("schema violation (%s)", joined)
                           : tg_asprintf("%zu schema violations (%s)", count, joined);
    free(joined);
    json_decref(lines);
    return msg;
}

json_t *tg_schema_error_body(json_t *fields)
{
    char *msg = tg_schema_error_message(fields);
    json_t *body = json_pack("{s:i,s:s,s:s,s:O}", "code", 2, "name", "schema violation", "message",
                             msg, "fields", fields);
    free(msg);
    return body;
}

/* ---------------------------------------------------------------- schema export */

static json_t *field_to_json(const tg_field_t *f);

static json_t *record_fields_json(const tg_schema_t *s)
{
    json_t *arr = json_array();
    for (const tg_field_t *f = s->fields; f->name; f++) {
        if (f->flags & TG_F_INPUT_ONLY) continue;
        json_array_append_new(arr, json_pack("{s:o}", f->name, field_to_json(f)));
    }
    return arr;
}

static const char *kong_type(tg_type_t t)
{
    static const char *names[] = {"", "string", "integer", "number", "boolean", "array",
                                  "set", "map", "record", "foreign"};
    return names[t];
}

static json_t *field_to_json(const tg_field_t *f)
{
    json_t *o = json_pack("{s:s}", "type", kong_type(f->type));
    if (f->flags & TG_F_REQUIRED) json_object_set_new(o, "required", json_true());
    if (f->flags & TG_F_UNIQUE) json_object_set_new(o, "unique", json_true());
    if (f->flags & TG_F_AUTO) json_object_set_new(o, "auto", json_true());
    if (f->flags & TG_F_UUID) json_object_set_new(o, "uuid", json_true());
    if (f->flags & TG_F_TIMESTAMP) json_object_set_new(o, "timestamp", json_true());
    if (f->dflt) json_object_set_new(o, "default", json_loads(f->dflt, JSON_DECODE_ANY, NULL));
    if (f->flags & TG_F_BETWEEN) json_object_set_new(o, "between", json_pack("[f,f]", f->min, f->max));
    if (f->flags & TG_F_GT) json_object_set_new(o, "gt", json_real(f->min));
    if (f->len_min) json_object_set_new(o, "len_min", json_integer((json_int_t)f->len_min));
    if (f->one_of) {
        json_t *arr = json_array();
        for (size_t i = 0; f->one_of[i]; i++) json_array_append_new(arr, json_string(f->one_of[i]));
        json_object_set_new(o, "one_of", arr);
    }
    if (f->elem) json_object_set_new(o, f->type == TG_T_MAP ? "values" : "elements", field_to_json(f->elem));
    if (f->type == TG_T_MAP) json_object_set_new(o, "keys", json_pack("{s:s}", "type", "string"));
    if (f->type == TG_T_FOREIGN && f->rec) json_object_set_new(o, "reference", json_string(f->rec->name));
    if (f->type == TG_T_FOREIGN && (f->flags & TG_F_CASCADE))
        json_object_set_new(o, "on_delete", json_string("cascade"));
    if (f->type == TG_T_RECORD && f->rec) json_object_set_new(o, "fields", record_fields_json(f->rec));
    return o;
}

json_t *tg_schema_to_json(const tg_schema_t *s)
{
    json_t *o = json_pack("{s:o}", "fields", record_fields_json(s));
    if (s->endpoint_key) json_object_set_new(o, "endpoint_key", json_string(s->endpoint_key));
    if (s->at_least_one_of) {
        json_t *arr = json_array();
        for (size_t i = 0; s->at_least_one_of[i]; i++) json_array_append_new(arr, json_string(s->at_least_one_of[i]));
        json_object_set_new(o, "entity_checks", json_pack("[{s:o}]", "at_least_one_of", arr));
    }
    return o;
}
