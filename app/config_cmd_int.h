/*
 * config_cmd_int.h — what the parts of `tollgate config` share: the Admin API
 * client (config_cmd_http.c), the state and plan (config_cmd_plan.c) and the
 * YAML writer (config_cmd_dump.c). Private to app/config_cmd*.c.
 *
 * Memory: every json_t returned is a new reference owned by the caller;
 * tg_config_cmd_admin_t owns its strings (tg_config_cmd_admin_close).
 * Single-threaded, blocking I/O.
 */
#ifndef TG_CONFIG_CMD_INT_H
#define TG_CONFIG_CMD_INT_H

#include "https_client.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* ---------------------------------------------------------------- entity types */

/* In the order parents come before children (creates walk it forwards, deletes backwards). */
enum tg_config_cmd_type {
    TG_CC_SERVICES,
    TG_CC_ROUTES,
    TG_CC_CONSUMERS,
    TG_CC_CREDENTIALS,
    TG_CC_PLUGINS,
    TG_CC_NTYPES
};

typedef struct tg_config_cmd_type_desc {
    const char *collection; /* key in a declarative file: "keyauth_credentials" */
    const char *admin_path; /* Admin API collection: "key-auths" */
    const char *singular;   /* for people: "key-auth credential" */
} tg_config_cmd_type_t;

extern const tg_config_cmd_type_t tg_config_cmd_types[TG_CC_NTYPES];

/* ---------------------------------------------------------------- Admin API client */

typedef struct tg_config_cmd_admin {
    char *url; /* as given, for messages */
    bool tls;
    char hostport[300];
    char *base;   /* path prefix without a trailing '/', e.g. "" or
                     "/v2/control-planes/x/core-entities" */
    char *auth;   /* "Authorization: Bearer <t>" or NULL */
    char *ca_pem; /* for https: the CA to verify with, or NULL with skip_verify */
    bool skip_verify;
    int fd; /* the kept-alive plain HTTP connection, or -1 */
} tg_config_cmd_admin_t;

/*
 * Parses `url` (http:// or https://, host[:port][/prefix]) and keeps the
 * token. An https URL needs ca_file or skip_verify (our client has no system
 * trust store). Returns 0 or -TG_EINVAL/-TG_EIO with a reason in err.
 */
int tg_config_cmd_admin_open(tg_config_cmd_admin_t *a, const char *url, const char *token,
                             const char *ca_file, bool skip_verify, char *err, size_t errlen);
void tg_config_cmd_admin_close(tg_config_cmd_admin_t *a);

/*
 * One request: `path` below the base ("/services/x"), JSON `body` or NULL.
 * Sets *status and *resp (the parsed JSON body, NULL when empty or not JSON).
 * Returns 0 for any HTTP answer, or -TG_E* with a reason in err when there was none.
 */
int tg_config_cmd_admin_call(tg_config_cmd_admin_t *a, const char *method, const char *path,
                             const json_t *body, int *status, json_t **resp, char *err,
                             size_t errlen);

/* A one-line description of a failed answer: Kong's `message`, else the status. Caller frees. */
char *tg_config_cmd_admin_error(int status, const json_t *resp);

/*
 * Every entity of a collection, following `offset` page by page (size 1000);
 * `tags` ("a,b": all of them) may be NULL. Returns 0 and a new array, or < 0
 * with the reason in err.
 */
int tg_config_cmd_admin_list(tg_config_cmd_admin_t *a, const char *collection, const char *tags,
                             json_t **out, char *err, size_t errlen);

/* ---------------------------------------------------------------- state and plan */

/* The entities of the CP within the selection: {"services": [...], ...}. */
int tg_config_cmd_fetch(tg_config_cmd_admin_t *a, const json_t *select_tags, json_t **state,
                        char *err, size_t errlen);

typedef struct tg_config_cmd_plan tg_config_cmd_plan_t;

/*
 * Compares the file's entities (tg_declarative_t.entities) with the CP's
 * `state`, matching like decK: by id, else (for ids the file did not write)
 * by name, username/custom_id, instance_name or plugin scope, and key.
 * `explicit_ids`/`explicit_keys` are objects whose keys are the ids and
 * credential keys written in the file. Takes its own references.
 */
tg_config_cmd_plan_t *tg_config_cmd_plan_build(const json_t *desired, const json_t *state,
                                               const json_t *explicit_ids,
                                               const json_t *explicit_keys);
void tg_config_cmd_plan_free(tg_config_cmd_plan_t *p);
size_t tg_config_cmd_plan_changes(const tg_config_cmd_plan_t *p);

/* Prints every change with the fields that differ (diff), then the summary. */
void tg_config_cmd_plan_print(const tg_config_cmd_plan_t *p, FILE *out);

/*
 * Applies the plan: deletes children first, creates and updates parents
 * first, stopping at the first Admin API error (printed with its message).
 * Prints one line per change and the summary. Returns 0 or -TG_EIO.
 */
int tg_config_cmd_plan_apply(tg_config_cmd_plan_t *p, tg_config_cmd_admin_t *a, FILE *out);

/* ---------------------------------------------------------------- dump */

/*
 * Writes `state` as a `_format_version: "3.0"` YAML file to `out`: routes
 * under their service, credentials and consumer-only plugins under their
 * consumer, single-scope plugins under their entity, the rest top-level with
 * references. `with_ids`: every entity keeps its id (otherwise only those
 * that have no name to be matched by). Returns 0 or -TG_EIO.
 */
int tg_config_cmd_dump_write(const json_t *state, const json_t *select_tags, bool with_ids,
                             FILE *out, char *err, size_t errlen);

#endif
