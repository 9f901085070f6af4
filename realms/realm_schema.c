/*
 * realm_schema.c — see realm_schema.h.
 */
#include "realm_schema.h"
#include "crypto.h"
#include "realm_problem.h"

#include <stdio.h>
#include <string.h>

/* Names, usernames and group names: what a human types; bounded so a row stays small. */
#define NAME_MAX_LEN 255
#define ITEMS_MAX 1000

static const tg_realm_field_t realm_fields[] = {
    {"name", TG_RF_STRING, TG_RF_REQUIRED, 1, NAME_MAX_LEN},
    {"allowed_control_planes", TG_RF_STRINGS, TG_RF_CP_REF, 1, 36, ITEMS_MAX},
    {"ttl", TG_RF_INTEGER, 0, TG_REALM_TTL_MIN, TG_REALM_TTL_MAX},
    {"negative_ttl", TG_RF_INTEGER, 0, TG_REALM_TTL_MIN, TG_REALM_TTL_MAX},
    {"consumer_groups", TG_RF_STRINGS, 0, 1, NAME_MAX_LEN, ITEMS_MAX},
    {NULL},
};
const tg_realm_schema_t tg_realm_schema_realm = {"realm", realm_fields, NULL};

static const tg_realm_field_t consumer_fields[] = {
    {"username", TG_RF_STRING, TG_RF_REQUIRED, 1, NAME_MAX_LEN},
    {"custom_id", TG_RF_STRING, TG_RF_NULLABLE, 1, NAME_MAX_LEN},
    {"type", TG_RF_STRING, TG_RF_NULLABLE, 1, NAME_MAX_LEN},
    {"tags", TG_RF_STRINGS, 0, 1, NAME_MAX_LEN, ITEMS_MAX},
    {"consumer_groups", TG_RF_STRINGS, 0, 1, NAME_MAX_LEN, ITEMS_MAX},
    {NULL},
};
const tg_realm_schema_t tg_realm_schema_consumer = {"consumer", consumer_fields, NULL};

static const char *const key_types[] = {"new", "legacy", NULL};
static const tg_realm_field_t key_fields[] = {
    {"type", TG_RF_STRING, TG_RF_REQUIRED, 1, 16, 0, key_types},
    /* a legacy secret is imported from elsewhere: any printable length up to 4 KiB */
    {"secret", TG_RF_STRING, 0, 1, 4096},
    {"tags", TG_RF_STRINGS, 0, 1, NAME_MAX_LEN, ITEMS_MAX},
    {NULL},
};

/* Konnect's create-key body is oneOf {type:new, tags?} | {type:legacy, secret, tags?}. */
static void key_check(const json_t *body, bool create, json_t *params)
{
    const char *type = json_string_value(json_object_get(body, "type"));
    const json_t *secret = json_object_get(body, "secret");
    if (!type) return; /* already reported */
    if (strcmp(type, "legacy") == 0 && !secret)
        tg_realm_problem_add(params, "secret", "required", "body", NULL,
                             "is required for a key of type legacy");
    else if (strcmp(type, "new") == 0 && secret)
        tg_realm_problem_add(params, "secret", "unknown_property", "body", NULL,
                             "is not allowed for a key of type new: its secret is generated");
}
const tg_realm_schema_t tg_realm_schema_key = {"key", key_fields, key_check};

static const tg_realm_field_t move_fields[] = {
    {"target_realm_id", TG_RF_UUID, TG_RF_REQUIRED},
    {NULL},
};
const tg_realm_schema_t tg_realm_schema_move = {"move", move_fields, NULL};

const tg_realm_field_t *tg_realm_schema_field(const tg_realm_schema_t *s, const char *name)
{
    for (const tg_realm_field_t *f = s->fields; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

/* ---------------------------------------------------------------- checks */

static void check_length(const tg_realm_field_t *f, const char *field, const json_t *v,
                         json_t *params)
{
    size_t n = json_string_length(v);
    if ((long long)n < f->min)
        tg_realm_problem_add(params, field, "min_length", "body",
                             json_pack("{s:I}", "minimum", f->min),
                             "must have at least %lld characters", f->min);
    else if (f->max && (long long)n > f->max)
        tg_realm_problem_add(params, field, "max_length", "body",
                             json_pack("{s:I}", "maximum", f->max),
                             "must have at most %lld characters", f->max);
}

static void check_string(const tg_realm_field_t *f, const char *field, const json_t *v,
                         json_t *params)
{
    if (!json_is_string(v)) {
        tg_realm_problem_add(params, field, "is_string", "body", NULL, "must be a string");
        return;
    }
    check_length(f, field, v, params);
    if (!f->choices) return;
    for (const char *const *c = f->choices; *c; c++)
        if (strcmp(*c, json_string_value(v)) == 0) return;
    json_t *choices = json_array();
    char list[256] = "";
    for (const char *const *c = f->choices; *c; c++) {
        json_array_append_new(choices, json_string(*c));
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                 c == f->choices ? "" : ", ", *c);
    }
    tg_realm_problem_add(params, field, "enum", "body", json_pack("{s:o}", "choices", choices),
                         "must be one of: %s", list);
}

static void check_integer(const tg_realm_field_t *f, const char *field, const json_t *v,
                          json_t *params)
{
    if (!json_is_integer(v)) {
        tg_realm_problem_add(params, field, "is_integer", "body", NULL, "must be an integer");
        return;
    }
    long long n = json_integer_value(v);
    if (n < f->min)
        tg_realm_problem_add(params, field, "min", "body", json_pack("{s:I}", "minimum", f->min),
                             "must be greater than or equal to %lld", f->min);
    else if (n > f->max)
        tg_realm_problem_add(params, field, "max", "body", json_pack("{s:I}", "maximum", f->max),
                             "must be less than or equal to %lld", f->max);
}

static void check_uuid(const char *field, const json_t *v, json_t *params)
{
    if (!json_is_string(v))
        tg_realm_problem_add(params, field, "is_string", "body", NULL, "must be a string");
    else if (!tg_uuid_valid(tg_str_from(json_string_value(v))))
        tg_realm_problem_add(params, field, "is_uuid", "body", NULL, "must be a UUID");
}

static void check_strings(const tg_realm_field_t *f, const char *field, const json_t *v,
                          json_t *params)
{
    if (!json_is_array(v)) {
        tg_realm_problem_add(params, field, "is_array", "body", NULL,
                             "must be an array of strings");
        return;
    }
    if (json_array_size(v) > f->max_items) {
        tg_realm_problem_add(params, field, "max_items", "body",
                             json_pack("{s:I}", "maximum", (json_int_t)f->max_items),
                             "must have at most %zu items", f->max_items);
        return;
    }
    size_t i, j;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        char name[160];
        snprintf(name, sizeof(name), "%s[%zu]", field, i);
        if (!json_is_string(item)) {
            tg_realm_problem_add(params, name, "is_string", "body", NULL, "must be a string");
            continue;
        }
        const char *s = json_string_value(item);
        if (f->flags & TG_RF_CP_REF) {
            if (strcmp(s, "*") != 0 && !tg_uuid_valid(tg_str_from(s)))
                tg_realm_problem_add(
                    params, name, "is_uuid", "body", NULL,
                    "must be a control plane id (UUID) or \"*\" for all control planes");
        } else {
            check_length(f, name, item, params);
        }
        for (j = 0; j < i; j++) {
            const char *prev = json_string_value(json_array_get(v, j));
            if (prev && strcmp(prev, s) == 0) {
                tg_realm_problem_add(params, name, "unique", "body", NULL, "duplicates item %zu",
                                     j);
                break;
            }
        }
    }
}

size_t tg_realm_schema_check(const tg_realm_schema_t *s, const json_t *body, bool create,
                             json_t *params)
{
    size_t before = json_array_size(params);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)body, key, v)
    {
        const tg_realm_field_t *f = tg_realm_schema_field(s, key);
        if (!f) {
            tg_realm_problem_add(params, key, "unknown_property", "body", NULL,
                                 "is not a property of a %s", s->name);
            continue;
        }
        if (json_is_null(v)) {
            if (!(f->flags & TG_RF_NULLABLE))
                tg_realm_problem_add(params, key, "not_null", "body", NULL, "must not be null");
            continue;
        }
        switch (f->type) {
        case TG_RF_STRING:
            check_string(f, key, v, params);
            break;
        case TG_RF_INTEGER:
            check_integer(f, key, v, params);
            break;
        case TG_RF_STRINGS:
            check_strings(f, key, v, params);
            break;
        case TG_RF_UUID:
            check_uuid(key, v, params);
            break;
        }
    }
    if (create)
        for (const tg_realm_field_t *f = s->fields; f->name; f++)
            if ((f->flags & TG_RF_REQUIRED) && !json_object_get(body, f->name))
                tg_realm_problem_add(params, f->name, "required", "body", NULL, "is required");
    if (s->check && json_array_size(params) == before) s->check(body, create, params);
    return json_array_size(params) - before;
}
