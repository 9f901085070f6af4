/*
 * schema.h — entities and plugin configs described once, validated generically.
 *
 * Every entity (service, route, consumer, plugin, key-auth credential) and
 * every plugin's config is a static table of tg_field_t. Generic code walks it
 * for: form-argument type inference, validation with Kong's messages, default
 * filling, PATCH merging, and (in the CP's DAO) SQL columns. Tables are
 * immutable and shared by all threads.
 *
 * Errors are produced as a jansson object shaped like Kong's `fields`
 * ({"name": "msg", "config": {"minute": "msg"}, "@entity": ["msg"]}) and
 * rendered into Kong's error body by tg_schema_error_body().
 */
#ifndef TG_SCHEMA_H
#define TG_SCHEMA_H

#include "str.h"

#include <jansson.h>
#include <stdbool.h>

typedef enum tg_type {
    TG_T_STRING = 1,
    TG_T_INTEGER,
    TG_T_NUMBER,
    TG_T_BOOLEAN,
    TG_T_ARRAY,
    TG_T_SET,
    TG_T_MAP,
    TG_T_RECORD,
    TG_T_FOREIGN,
} tg_type_t;

enum tg_field_flag {
    TG_F_REQUIRED = 1 << 0,
    TG_F_UNIQUE = 1 << 1,   /* unique per control plane; a SQL column */
    TG_F_AUTO = 1 << 2,     /* generated: uuid id, timestamps */
    TG_F_BETWEEN = 1 << 3,  /* min <= v <= max */
    TG_F_GT = 1 << 4,       /* v > min */
    TG_F_TIMESTAMP = 1 << 5,
    TG_F_UUID = 1 << 6,
    TG_F_CASCADE = 1 << 7,  /* foreign: deleting the parent deletes this entity */
    TG_F_SECRET = 1 << 8,   /* stored as digest + ciphertext, never in the document */
    TG_F_INPUT_ONLY = 1 << 9, /* shorthand accepted on input, never stored (service.url) */
    TG_F_PLUGIN_CONFIG = 1 << 10, /* record whose fields depend on the plugin `name` */
    TG_F_NO_VALUE = 1 << 11, /* foreign that must be null (key-auth: no consumer) */
    TG_F_PLUGIN_PROTOCOLS = 1 << 12, /* default comes from the plugin named by `name` */
};

typedef struct tg_field tg_field_t;
typedef struct tg_schema tg_schema_t;

/* Custom validator: returns NULL when fine, else writes a message to err and returns it. */
typedef const char *(*tg_field_check_fn)(const json_t *value, char *err, size_t errlen);
/* Entity-level check on the complete entity: appends messages to `entity_errs` (a JSON array)
 * or field errors into `errs`. */
typedef void (*tg_entity_check_fn)(const json_t *entity, json_t *errs, json_t *entity_errs);

struct tg_field {
    const char *name;
    tg_type_t type;
    unsigned flags;
    const char *dflt;              /* default as JSON text; NULL = none */
    double min, max;               /* with TG_F_BETWEEN / TG_F_GT */
    size_t len_min;                /* strings: minimum length (1 = must not be empty) */
    size_t len_max;                /* strings, arrays, sets, maps: maximum length (0 = the default) */
    const char *const *one_of;     /* NULL-terminated accepted values */
    const tg_field_t *elem;        /* array/set/map element description */
    const tg_schema_t *rec;        /* record fields, or the referenced schema of a foreign */
    tg_field_check_fn check;
};

struct tg_schema {
    const char *name;              /* Kong's entity name and our table: "keyauth_credentials" */
    const char *admin_path;        /* "/key-auths" collection segment: "key-auths" */
    const char *nested_path;       /* segment under a parent: "key-auth" (default admin_path) */
    const char *endpoint_key;      /* non-UUID path segments resolve through this field */
    const tg_field_t *fields;      /* terminated by {0} */
    const char *const *at_least_one_of; /* entity check: one of these must be non-empty */
    tg_entity_check_fn entity_check;
    /* Rewrites input shorthands before validation (service `url`); may add errors. */
    void (*expand)(json_t *input, json_t *errs);
    bool ttl;                      /* accepts `ttl` seconds; expired rows are invisible */
    bool has_updated_at;
};

/*
 * Caps for fields that set no len_max, so that no request can make us store
 * megabytes in one entity. Kong sets none; these are far above real use.
 */
#define TG_SCHEMA_STRING_MAX 65536
#define TG_SCHEMA_LIST_MAX 1000

enum tg_schema_op { TG_OP_INSERT, TG_OP_UPSERT, TG_OP_UPDATE };

/* Entities, in dependency order (parents first). */
extern const tg_schema_t tg_schema_services;
extern const tg_schema_t tg_schema_routes;
extern const tg_schema_t tg_schema_consumers;
extern const tg_schema_t tg_schema_plugins;
extern const tg_schema_t tg_schema_keyauth_credentials;
/* NULL-terminated list of all entity schemas, parents first. */
extern const tg_schema_t *const tg_entities[];

const tg_schema_t *tg_schema_by_name(const char *name);
const tg_field_t *tg_schema_field(const tg_schema_t *s, const char *name);

/*
 * Converts form/multipart/query string arguments to the schema's types as Kong
 * does: numbers, booleans, "" → null, a scalar for an array/set → 1-element
 * array, recursing into records (and into a plugin's config given its name).
 * Values that cannot be converted are left as they are for validation to
 * report. Mutates `args` in place.
 */
void tg_schema_coerce_form(const tg_schema_t *s, json_t *args);

/*
 * Validates `input` for an operation and returns the complete entity (a new
 * reference) with defaults filled and every field present (null when unset),
 * or NULL with *errs set to a new Kong `fields` object. For TG_OP_UPDATE,
 * `existing` is the stored entity and input fields are merged into it (records
 * merge recursively, as Kong's PATCH does). Auto fields (id, created_at,
 * updated_at) are filled by the caller after validation.
 */
json_t *tg_schema_validate(const tg_schema_t *s, enum tg_schema_op op, const json_t *input,
                           const json_t *existing, json_t **errs);

/* Validates a plugin's config record on its own (used by /schemas/plugins/validate). */
const tg_schema_t *tg_plugin_config_schema(const char *plugin_name);

/*
 * Kong's error body for a schema violation given a `fields` object:
 * {"code":2,"name":"schema violation","message":"...","fields":{...}}.
 * Returns a new reference.
 */
json_t *tg_schema_error_body(json_t *fields);
/* Kong's message for a `fields` object: "schema violation (a: b)" / "N schema violations (...)". */
char *tg_schema_error_message(const json_t *fields);

/* Lua-table rendering of a value as Kong prints it in messages ({a="b"}); caller frees. */
char *tg_lua_pretty(const json_t *v);

/* The schema in Kong's "fields array" JSON form, for GET /schemas/... (new reference). */
json_t *tg_schema_to_json(const tg_schema_t *s);

#endif
