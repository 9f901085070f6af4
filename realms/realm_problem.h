/*
 * realm_problem.h — errors of the /v1/realms API as RFC 9457 problem documents
 * (`application/problem+json`), shaped as Konnect answers them:
 *
 *   {"status":400,"title":"Bad Request","type":"https://httpstatuses.com/400",
 *    "instance":"kong:trace:<n>","detail":"...",
 *    "invalid_parameters":[{"field":"ttl","rule":"min","minimum":5,"source":"body",
 *                           "reason":"must be greater than or equal to 5"}]}
 *
 * The document itself is rendered by the Admin API's tg_admin_reply_problem (admin.c), the
 * same renderer /v2/control-planes uses. Validation collects every problem of a request into one
 * `invalid_parameters` array (a json_t the caller owns until it hands it to
 * tg_realm_problem_reply). Runs on the Admin API worker thread that handles the request.
 */
#ifndef TG_REALM_PROBLEM_H
#define TG_REALM_PROBLEM_H

#include "admin_request.h"

#include <jansson.h>

/*
 * Appends {field, rule, reason[, source]} to params. `extra` (stolen, may be NULL) is merged
 * in: {"minimum":5}, {"choices":[...]}. source: "body", "path" or "query" (NULL = none).
 */
void tg_realm_problem_add(json_t *params, const char *field, const char *rule, const char *source,
                          json_t *extra, const char *reason_fmt, ...)
    __attribute__((format(printf, 6, 7)));

/*
 * Answers r with a problem document (application/problem+json): status, its title, detail, and
 * params (stolen; NULL or an empty array = no invalid_parameters member).
 */
void tg_realm_problem_reply(tg_admin_req_t *r, int status, json_t *params, const char *detail_fmt,
                            ...) __attribute__((format(printf, 4, 5)));

/* 503/500 for a failed database statement (err from tg_db_*). */
void tg_realm_problem_db(tg_admin_req_t *r, int code);

/* Answers r with a success body (stolen) as application/json. */
void tg_realm_reply(tg_admin_req_t *r, int status, json_t *body);

#endif
