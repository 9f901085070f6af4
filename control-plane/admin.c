/*
 * admin.c — Admin API plumbing: job dispatch to the worker pool, path and
 * argument decoding, admin-token authentication, response rendering.
 */
#include "admin.h"
#include "admin_request.h"
#include "alloc.h"
#include "crypto.h"
#include "form.h"
#include "log.h"
#include "realms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Which listener a request came from decides what it may reach. */
enum listener { LISTEN_ADMIN, LISTEN_ADMIN_TLS, LISTEN_STATUS };

typedef struct admin_job {
    tg_job_t job;
    tg_admin_t *admin;
    tg_http_exchange_t *x;
    const tg_http_request_t *req;
    enum listener listener;
    int status;
    char *body;
    bool text; /* body is text/plain (metrics) rather than JSON */
    char allow[64];
    char content_type[48]; /* a JSON body's media type when not application/json */
    uint64_t started_ns;
} admin_job_t;

/* ---------------------------------------------------------------- responses */

void tg_admin_reply(tg_admin_req_t *r, int status, json_t *body)
{
    json_decref(r->body);
    r->status = status;
    r->body = body;
}

void tg_admin_reply_message(tg_admin_req_t *r, int status, const char *message)
{
    tg_admin_reply(r, status, json_pack("{s:s}", "message", message));
}

void tg_admin_reply_problem(tg_admin_req_t *r, int status, const char *detail, json_t *invalid_parameters)
{
    /* Konnect's `instance` is a correlation id "kong:trace:<decimal>"; ours is random per error. */
    uint64_t trace;
    tg_random_bytes(&trace, sizeof(trace));
    const char *title = tg_http_status_reason(status);
    json_t *body = json_pack("{s:i,s:s,s:o,s:o,s:s}", "status", status, "title", title,
                             "type", json_sprintf("https://httpstatuses.com/%d", status),
                             "instance", json_sprintf("kong:trace:%llu", (unsigned long long)(trace >> 1)),
                             "detail", detail ? detail : title);
    if (invalid_parameters) json_object_set_new(body, "invalid_parameters", invalid_parameters);
    tg_admin_reply(r, status, body);
    r->content_type = "application/problem+json";
}

void tg_admin_reply_dao_error(tg_admin_req_t *r)
{
    tg_admin_reply(r, r->dao.status, json_incref(r->dao.error));
}

const char *tg_admin_query(const tg_admin_req_t *r, const char *name)
{
    return json_string_value(json_object_get(r->query, name));
}

/* ---------------------------------------------------------------- request decoding */

static int count_header(const tg_http_request_t *req, const char *name)
{
    int n = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        if (tg_str_caseeq(req->headers[i].name, tg_str_from(name))) n++;
    return n;
}

static tg_str_t header(const tg_http_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (tg_str_caseeq(req->headers[i].name, tg_str_from(name))) return req->headers[i].value;
    return TG_STR_NULL;
}

static bool media_is(tg_str_t ct, const char *type)
{
    size_t n = strlen(type);
    if (ct.len < n || strncasecmp(ct.p, type, n) != 0) return false;
    return ct.len == n || ct.p[n] == ';' || ct.p[n] == ' ';
}

/* Types form arguments; a missing plugin name is borrowed for the duration. */
static void coerce(const tg_schema_t *s, json_t *args, const json_t *plugin_name)
{
    bool borrow = plugin_name && !json_object_get(args, "name");
    if (borrow) json_object_set(args, "name", (json_t *)plugin_name);
    tg_schema_coerce_form(s, args);
    if (borrow) json_object_del(args, "name");
}

json_t *tg_admin_body_args(tg_admin_req_t *r, const tg_schema_t *s, const json_t *plugin_name)
{
    const tg_http_request_t *req = r->http;
    if (count_header(req, "Content-Type") > 1) {
        tg_admin_reply_message(r, 400, "Multiple Content-Type headers not allowed");
        return NULL;
    }
    tg_str_t ct = header(req, "Content-Type");
    json_t *args = NULL;
    if (ct.p && media_is(ct, "application/json")) {
        json_error_t jerr;
        args = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(args)) {
            json_decref(args);
            tg_admin_reply_message(r, 400, "Cannot parse JSON body");
            return NULL;
        }
        return args;
    }
    if (req->body_len == 0) return json_object();
    int rc;
    if (ct.p && media_is(ct, "application/x-www-form-urlencoded"))
        rc = tg_form_parse_urlencoded(req->body, req->body_len, &args);
    else if (ct.p && media_is(ct, "multipart/form-data"))
        rc = tg_form_parse_multipart(req->body, req->body_len, ct, &args);
    else {
        tg_admin_reply_message(r, 415, "Unsupported Media Type");
        return NULL;
    }
    if (rc != 0) {
        tg_admin_reply_message(r, 400, "Cannot parse request body");
        return NULL;
    }
    if (s) coerce(s, args, plugin_name);
    return args;
}

static int split_path(tg_admin_req_t *r)
{
    size_t n;
    char *path = tg_url_decode(r->http->path.p, r->http->path.len, false, &n);
    if (!path || memchr(path, '\0', n)) {
        free(path);
        return -1;
    }
    while (n > 1 && path[n - 1] == '/') path[--n] = '\0';
    r->path = path;
    char *copy = tg_strdup(path), *save = NULL;
    for (char *seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
        if (r->nsegs == TG_ADMIN_MAX_SEGS) {
            free(copy);
            return 1; /* deeper than any endpoint: 404 */
        }
        r->segs[r->nsegs++] = tg_strdup(seg);
    }
    free(copy);
    return 0;
}

/* ---------------------------------------------------------------- authentication */

/* HTTPS listeners: `Authorization: Bearer <token>`, checked against stored digests. */
static bool token_ok(tg_admin_req_t *r)
{
    tg_str_t auth = header(r->http, "Authorization");
    if (!auth.p || auth.len < 8 || strncasecmp(auth.p, "Bearer ", 7) != 0) return false;
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(auth.p + 7, auth.len - 7, d);
    char hex[2 * TG_SHA256_LEN + 3] = "\\x";
    tg_hex_encode(d, sizeof(d), hex + 2);
    const char *params[] = {hex};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err, "SELECT id FROM admin_tokens WHERE token_digest = $1::bytea", 1, params);
    bool ok = res && PQntuples(res) == 1;
    if (res) PQclear(res);
    /* Record use at most once a minute: a row lock per request would serialise all HTTPS writes. */
    if (ok && !r->db->batch)
        tg_db_run(r->db, &err, "UPDATE admin_tokens SET last_used_at = now() WHERE token_digest = $1::bytea"
                  " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')", 1, params);
    return ok;
}

/* ---------------------------------------------------------------- dispatch */

static bool sub_is(const tg_admin_req_t *r, int i, const char *s)
{
    return r->nsegs > i && strcmp(r->segs[i], s) == 0;
}

int tg_admin_route_scoped(tg_admin_req_t *r, int first, const char *cp_id)
{
    /*
     * A sub-request that borrows r's decoded path, query and segments and owns a DAO bound to
     * cp_id: every handler reads the control plane from r->dao, so the same code serves the
     * root paths (default control plane) and /v2/control-planes/{id}/core-entities/...
     */
    tg_admin_req_t sub = *r;
    sub.nsegs = r->nsegs - first;
    for (int i = 0; i < sub.nsegs; i++) sub.segs[i] = r->segs[first + i];
    sub.body = NULL;
    sub.text = NULL;
    tg_dao_init(&sub.dao, r->db, cp_id, r->admin->keyring);
    /* Node-wide informational paths (/, /status, /endpoints) have no per-control-plane meaning. */
    bool info = sub_is(&sub, 0, "tags") || sub_is(&sub, 0, "schemas") ||
                (sub.nsegs == 2 && sub_is(&sub, 0, "plugins") && sub_is(&sub, 1, "enabled"));
    int routed = sub.nsegs > 0 && (info ? tg_admin_route_info(&sub) : tg_admin_route_entities(&sub));
    tg_dao_reset(&sub.dao);
    if (!routed) {
        json_decref(sub.body);
        free(sub.text);
        return 0;
    }
    tg_admin_reply(r, sub.status, sub.body);
    r->text = sub.text;
    r->text_is_json = sub.text_is_json;
    r->allow = sub.allow;
    r->content_type = sub.content_type;
    return 1;
}

/* /v2/control-planes and /v1/realms are Konnect-shaped: their errors are problems, not Kong's {"message"}. */
static bool konnect_api(const tg_admin_req_t *r)
{
    return (sub_is(r, 0, "v2") && sub_is(r, 1, "control-planes")) || (sub_is(r, 0, "v1") && sub_is(r, 1, "realms"));
}

static void handle(tg_admin_req_t *r, enum listener listener)
{
    int split = split_path(r);
    if (split < 0) {
        tg_admin_reply_message(r, 400, "Bad request");
        return;
    }
    size_t qn = r->http->query.len;
    if (tg_form_parse_urlencoded(r->http->query.p ? r->http->query.p : "", qn, &r->query) != 0) {
        if (split == 0 && konnect_api(r) && !sub_is(r, 3, "core-entities"))
            tg_admin_reply_problem(r, 400, "Cannot parse query string",
                                   json_pack("[{s:s,s:s,s:s,s:s}]", "field", "query", "rule", "invalid",
                                             "reason", "is not a valid query string", "source", "query"));
        else
            tg_admin_reply_message(r, 400, "Cannot parse query string");
        return;
    }
    if (strcmp(r->method, "OPTIONS") == 0) {
        /* CORS preflight, as Kong's Admin API answers it (browsers send no token on it). */
        r->allow = "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS";
        tg_admin_reply(r, 204, NULL);
        return;
    }
    if (listener == LISTEN_ADMIN_TLS && !token_ok(r)) {
        if (split == 0 && konnect_api(r) && !sub_is(r, 3, "core-entities"))
            tg_admin_reply_problem(r, 401, "Unauthorized", NULL);
        else
            tg_admin_reply_message(r, 401, "Unauthorized");
        return;
    }
    if (listener == LISTEN_STATUS) {
        if (split == 0 && tg_admin_route_status(r)) return;
    } else if (split == 0 && (tg_realms_route(r) || tg_admin_route_control_planes(r) || tg_admin_route_info(r) ||
                              tg_admin_route_cluster(r) || tg_admin_route_entities(r))) {
        return;
    }
    tg_admin_reply_message(r, 404, "Not found");
}

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void job_run(tg_job_t *job, tg_db_t *db)
{
    admin_job_t *j = (admin_job_t *)job;
    tg_admin_req_t r = {.admin = j->admin, .http = j->req, .db = db};
    free(j->body); /* a replayed write starts over */
    j->body = NULL;
    j->text = false;
    j->allow[0] = '\0';
    j->content_type[0] = '\0';
    snprintf(r.method, sizeof(r.method), "%.*s", (int)j->req->method.len, j->req->method.p);
    if (strcmp(r.method, "HEAD") == 0) strcpy(r.method, "GET"); /* the server drops the body */
    tg_dao_init(&r.dao, db, j->admin->cp_id, j->admin->keyring);
    handle(&r, j->listener);
    j->status = r.status ? r.status : 500;
    if (r.body) j->body = json_dumps(r.body, JSON_COMPACT);
    if (r.text) {
        j->body = r.text;
        j->text = !r.text_is_json;
    }
    if (r.allow) snprintf(j->allow, sizeof(j->allow), "%s", r.allow);
    if (r.content_type) snprintf(j->content_type, sizeof(j->content_type), "%s", r.content_type);
    json_decref(r.body);
    json_decref(r.query);
    tg_dao_reset(&r.dao);
    free(r.path);
    for (int i = 0; i < r.nsegs; i++) free(r.segs[i]);
}

static void job_done(tg_job_t *job)
{
    admin_job_t *j = (admin_job_t *)job;
    char latency[32];
    snprintf(latency, sizeof(latency), "%llu", (unsigned long long)((now_ns() - j->started_ns) / 1000000));
    tg_http_header_t hdrs[6];
    size_t nh = 0;
    hdrs[nh++] = (tg_http_header_t){TG_STR("Access-Control-Allow-Origin"), TG_STR("*")};
    hdrs[nh++] = (tg_http_header_t){TG_STR("X-Tollgate-Admin-Latency"), tg_str_from(latency)};
    if (j->body && j->text)
        hdrs[nh++] = (tg_http_header_t){TG_STR("Content-Type"), TG_STR("text/plain; version=0.0.4")};
    else if (j->body && j->content_type[0])
        hdrs[nh++] = (tg_http_header_t){TG_STR("Content-Type"), tg_str_from(j->content_type)};
    else if (j->body)
        hdrs[nh++] = (tg_http_header_t){TG_STR("Content-Type"), TG_STR("application/json; charset=utf-8")};
    if (j->allow[0]) hdrs[nh++] = (tg_http_header_t){TG_STR("Allow"), tg_str_from(j->allow)};
    if (j->status == 204 && j->allow[0]) { /* preflight */
        hdrs[nh++] = (tg_http_header_t){TG_STR("Access-Control-Allow-Methods"), tg_str_from(j->allow)};
        hdrs[nh++] = (tg_http_header_t){TG_STR("Access-Control-Allow-Headers"), TG_STR("Content-Type, Authorization")};
    }
    tg_http_respond(j->x, j->status, hdrs, nh, j->body, j->body ? strlen(j->body) : 0);
    atomic_fetch_sub(&j->admin->active_requests, 1);
    free(j->body);
    free(j);
}

/* The batch this write ran in did not commit: nothing of it was acknowledged. */
static void job_abort(tg_job_t *job, int status)
{
    admin_job_t *j = (admin_job_t *)job;
    free(j->body);
    j->status = status;
    j->body = tg_strdup(status == 503 ? "{\"message\":\"Service unavailable\"}"
                                      : "{\"message\":\"An unexpected error occurred\"}");
}

static bool is_write(const tg_http_request_t *req)
{
    return !(tg_str_eq_lit(req->method, "GET") || tg_str_eq_lit(req->method, "HEAD") ||
             tg_str_eq_lit(req->method, "OPTIONS"));
}

static void submit(tg_http_exchange_t *x, const tg_http_request_t *req, tg_admin_t *admin, enum listener listener)
{
    admin_job_t *j = tg_calloc(1, sizeof(*j));
    j->job.run = job_run;
    j->job.done = job_done;
    j->job.abort = job_abort;
    j->job.batchable = listener != LISTEN_STATUS && is_write(req);
    j->admin = admin;
    j->x = x;
    j->req = req;
    j->listener = listener;
    j->started_ns = now_ns();
    atomic_fetch_add(&admin->total_requests, 1);
    atomic_fetch_add(&admin->active_requests, 1);
    tg_workers_submit(admin->workers, &j->job);
}

void tg_admin_on_request(tg_http_exchange_t *x, const tg_http_request_t *req, void *admin)
{
    submit(x, req, admin, LISTEN_ADMIN);
}

void tg_admin_on_request_tls(tg_http_exchange_t *x, const tg_http_request_t *req, void *admin)
{
    submit(x, req, admin, LISTEN_ADMIN_TLS);
}

void tg_admin_on_status_request(tg_http_exchange_t *x, const tg_http_request_t *req, void *admin)
{
    submit(x, req, admin, LISTEN_STATUS);
}
