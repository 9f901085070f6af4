/*
 * realm_schema.h — the request bodies of the /v1/realms API, described once as field tables
 * (Konnect's consumers/v1 OpenAPI: every request object has additionalProperties: false), and
 * the one walker that validates a decoded JSON body against a table, collecting Konnect-style
 * `invalid_parameters` entries (field, rule, reason, source "body").
 *
 * The tables are static constants; the walker is pure and thread-safe.
 */
#ifndef TG_REALM_SCHEMA_H
#define TG_REALM_SCHEMA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum tg_realm_ftype {
    TG_RF_STRING,
    TG_RF_INTEGER,
    TG_RF_STRINGS, /* an array of distinct strings */
    TG_RF_UUID,    /* a string holding a UUID */
};

enum {
    TG_RF_REQUIRED = 1 << 0, /* on create */
    TG_RF_NULLABLE = 1 << 1, /* null clears the field */
    TG_RF_CP_REF = 1 << 2,   /* TG_RF_STRINGS whose items are control plane ids or "*" */
};

typedef struct tg_realm_field {
    const char *name;
    enum tg_realm_ftype type;
    unsigned flags;
    long long min, max;         /* integer bounds, or string length (item length for arrays) */
    size_t max_items;           /* arrays */
    const char *const *choices; /* NULL-terminated enum of a string field */
} tg_realm_field_t;

typedef struct tg_realm_schema {
    const char *name;
    const tg_realm_field_t *fields; /* ends with a NULL name */
    /* cross-field rules (e.g. a legacy key needs a secret); NULL when none */
    void (*check)(const json_t *body, bool create, json_t *params);
} tg_realm_schema_t;

extern const tg_realm_schema_t tg_realm_schema_realm;    /* POST/PATCH /realms */
extern const tg_realm_schema_t tg_realm_schema_consumer; /* POST/PATCH .../consumers */
extern const tg_realm_schema_t tg_realm_schema_key;      /* POST .../keys */
extern const tg_realm_schema_t tg_realm_schema_move;     /* POST .../move */

/* Konnect's defaults and minimums for a realm's cache TTLs, in minutes. */
#define TG_REALM_TTL_DEFAULT 10
#define TG_REALM_TTL_MIN 5
#define TG_REALM_TTL_MAX 525600 /* a year: bounds the arithmetic of every cache */

/*
 * Validates body (a JSON object) against s: unknown properties, types, bounds, enums, distinct
 * items, and on create the required fields. Every problem is appended to params (a JSON array);
 * returns how many were added (0 = valid).
 */
size_t tg_realm_schema_check(const tg_realm_schema_t *s, const json_t *body, bool create,
                             json_t *params);

/* The field of s named name, or NULL. */
const tg_realm_field_t *tg_realm_schema_field(const tg_realm_schema_t *s, const char *name);

#endif
