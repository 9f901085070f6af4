/*
 * realm_problem.c — see realm_problem.h.
 */
#include "realm_problem.h"
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

void tg_realm_problem_add(json_t *params, const char *field, const char *rule, const char *source,
                          json_t *extra, const char *reason_fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, reason_fmt);
    vsnprintf(reason, sizeof(reason), reason_fmt, ap);
    va_end(ap);
    json_t *p = json_pack("{s:s,s:s}", "field", field, "rule", rule);
    if (extra) json_object_update(p, extra);
    json_decref(extra);
    if (source) json_object_set_new(p, "source", json_string(source));
    json_object_set_new(p, "reason", json_string(reason));
    json_array_append_new(params, p);
}

void tg_realm_problem_reply(tg_admin_req_t *r, int status, json_t *params, const char *detail_fmt,
                            ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, detail_fmt);
    vsnprintf(detail, sizeof(detail), detail_fmt, ap);
    va_end(ap);
    if (params && json_array_size(params) == 0) {
        json_decref(params);
        params = NULL;
    }
    /* the Admin API's one renderer of problems, shared with /v2/control-planes */
    tg_admin_reply_problem(r, status, detail, params);
}

void tg_realm_problem_db(tg_admin_req_t *r, int code)
{
    if (code == -TG_EDBDOWN)
        tg_realm_problem_reply(r, 503, NULL, "The database is unreachable; try again");
    else
        tg_realm_problem_reply(r, 500, NULL, "An unexpected error occurred");
}

void tg_realm_reply(tg_admin_req_t *r, int status, json_t *body)
{
    tg_admin_reply(r, status, body);
}
