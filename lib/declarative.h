/*
 * declarative.h — Kong's declarative configuration (`_format_version: "3.0"`)
 * loaded into a flat set of complete, validated entities.
 *
 * Two users: the data plane in DB-less mode (`declarative_config = FILE`,
 * re-read on SIGHUP) and `tollgate config validate|diff|sync|dump`. The input
 * is YAML or JSON text (JSON is read as YAML, so both report line and column).
 *
 * What is accepted (Kong 3.x's format, decK's `_info`):
 *  - top level: `_format_version` (required, "3.0" only: older files must be
 *    converted first), `_transform` (bool, ignored), `_comment`, `_ignore`,
 *    `_info` {select_tags, defaults: {service, route}, default_lookup_tags},
 *    `_konnect` (ignored, reported as a notice), and the collections services,
 *    routes, consumers, plugins, keyauth_credentials; anything else is an error;
 *  - nesting: services[].routes[], services[].plugins[], routes[].plugins[]
 *    (also under services[].routes[]), consumers[].plugins[],
 *    consumers[].keyauth_credentials[]; a nested entity gets its parent
 *    reference and must not set it;
 *  - top-level references by id or endpoint key: `service: my-svc`,
 *    `service: {id: ...}` or `{name: ...}`, `consumer: username`, `route: name`.
 *
 * Ids: an entity without `id` gets a deterministic one (a UUID-formatted
 * SHA-256 of its type, natural key and, where the key is only unique under a
 * parent, the parent's id), so re-reading an unchanged file keeps every id.
 * Credentials are numbered within their consumer rather than keyed by `key`,
 * so an id never leaks a hash of a secret. `created_at`/`updated_at` stay null.
 *
 * Ownership: tg_declarative_t owns its JSON; tg_declarative_free releases it.
 * Nothing is shared between calls: any thread, no global state.
 */
#ifndef TG_DECLARATIVE_H
#define TG_DECLARATIVE_H

#include <jansson.h>
#include <stddef.h>

/* Largest text accepted (a million key-auth credentials fit well inside). */
#define TG_DECLARATIVE_MAX_BYTES ((size_t)256 << 20)
/* Errors reported before the rest are summarised in one final entry. */
#define TG_DECLARATIVE_MAX_ERRORS 100

typedef struct tg_declarative {
    /* {"services": [...], "routes": [...], "consumers": [...], "plugins": [...],
     *  "keyauth_credentials": [...]}: every key present, entities in file order,
     *  each complete (defaults filled, foreign keys as {"id": ...}). */
    json_t *entities;
    json_t *info;         /* `_info` as written, or NULL */
    json_t *notices;      /* array of entries (see below) with "level": "notice" */
    char *format_version; /* "3.0" */
} tg_declarative_t;

/*
 * Parses and validates `len` bytes of `text`; `filename` (may be NULL) only
 * labels errors. On success returns 0, fills *out and sets *errors to NULL.
 * On failure *out is zeroed and *errors (when errors is not NULL) is a new
 * array of entries:
 *   {"level": "error", "file": ..., "line": N, "column": N, "entity": "routes",
 *    "entity_path": "services[0].routes[1]", "entity_index": 1,
 *    "entity_name": "r1", "field": "paths[0]", "message": "..."}
 * where only "level" and "message" are always present; a duplicate also
 * carries "first_path" and "first_line" of the entity it collides with.
 * Returns -TG_EPARSE for malformed YAML, -TG_ETOOBIG beyond the size or
 * nesting limits, -TG_ECONFIG when the content is invalid.
 */
int tg_declarative_parse(const char *text, size_t len, const char *filename, tg_declarative_t *out,
                         json_t **errors);

/* Reads `path` and parses it as above; -TG_EIO when it cannot be read. */
int tg_declarative_load_file(const char *path, tg_declarative_t *out, json_t **errors);

/* Releases what *d owns and zeroes it; safe on a zeroed or freed struct. */
void tg_declarative_free(tg_declarative_t *d);

/*
 * One entry as a line: "kong.yaml:12:7: services[0].routes[0] (r1): paths[0]:
 * should start with: / (fixed path) or ~/ (regex path)". Caller frees.
 */
char *tg_declarative_error_format(const json_t *entry);

/* The first entry formatted, plus " (and N more errors)". Caller frees. */
char *tg_declarative_error_text(const json_t *errors);

#endif
