/*
 * realms.h — the Konnect-compatible Consumers API (`/v1/realms`, spec kong-compat.md §3.2) on
 * the control plane's admin listeners: realms, their consumers, the consumers' keys, `move`.
 *
 * Handlers run on an Admin API worker thread with that worker's PostgreSQL connection (reads on
 * reader threads, writes on the group-commit writer threads: see realm_store.h for what that
 * means for transactions). Bodies are JSON; errors are problem documents (realm_problem.h).
 * Everything a handler allocates is freed before it returns, except the reply it hands to r.
 */
#ifndef TG_REALMS_H
#define TG_REALMS_H

#include "admin_request.h"

#include <jansson.h>
#include <stdbool.h>

/* Handles r when its path is /v1/realms or below it; returns 1 then, 0 for any other path. */
int tg_realms_route(tg_admin_req_t *r);

/* ---- shared by the handlers in realms/ only ---- */

/* The JSON object body of a write, or NULL after replying 400/415. */
json_t *tg_realms_body(tg_admin_req_t *r);
/* True when r's method is one of the space-separated `methods`; else replies 405 (Allow set). */
bool tg_realms_method(tg_admin_req_t *r, const char *methods, const char *allow);
/* True when path segment i is a UUID; else replies 400 naming it `what` (e.g. "realmId"). */
bool tg_realms_path_uuid(tg_admin_req_t *r, int i, const char *what);
/* Replies 404 "<what> not found". */
void tg_realms_not_found(tg_admin_req_t *r, const char *what);
/* Replies 409 with one invalid parameter (field, rule "unique"). */
void tg_realms_conflict(tg_admin_req_t *r, const char *field, const char *detail);
/* Runs sql returning one JSON document per row; *doc = the first (NULL if none). 0 or db code. */
int tg_realms_doc(tg_admin_req_t *r, const char *sql, int n, const char *const *params,
                  json_t **doc);
/* Runs sql and says whether it returned a row. 0 or db code. */
int tg_realms_exists(tg_admin_req_t *r, const char *sql, int n, const char *const *params,
                     bool *found);
/* Body JSON text for SQL parameters ($n::jsonb); caller frees. */
char *tg_realms_json_text(const json_t *body);

/* realm_consumers.c: /v1/realms/{realmId}/consumers[/...]. segs[2] is a valid realm id. */
void tg_realms_consumers(tg_admin_req_t *r);

#endif
