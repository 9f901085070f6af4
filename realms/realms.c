/*
 * realms.c — /v1/realms: routing, the helpers every realms handler shares, and the realm
 * endpoints themselves (list, create, get, patch, delete with ?force=).
 */
#include "realms.h"
#include "alloc.h"
#include "crypto.h"
#include "realm_page.h"
#include "realm_problem.h"
#include "realm_schema.h"
#include "realm_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- shared helpers */

static int count_header(const tg_http_request_t *req, const char *name, tg_str_t *value)
{
    int n = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!tg_str_caseeq(req->headers[i].name, tg_str_from(name))) continue;
        if (n++ == 0) *value = req->headers[i].value;
    }
    return n;
}

static bool is_json_media(tg_str_t ct)
{
    static const char json[] = "application/json";
    size_t n = sizeof(json) - 1;
    if (ct.len < n || strncasecmp(ct.p, json, n) != 0) return false;
    return ct.len == n || ct.p[n] == ';' || ct.p[n] == ' ';
}

json_t *tg_realms_body(tg_admin_req_t *r)
{
    const tg_http_request_t *req = r->http;
    tg_str_t ct = TG_STR_NULL;
    int nct = count_header(req, "Content-Type", &ct);
    json_t *params = json_array();
    if (nct > 1) {
        tg_realm_problem_add(params, "Content-Type", "single", "header", NULL, "must be sent once");
        tg_realm_problem_reply(r, 400, params, "Multiple Content-Type headers");
        return NULL;
    }
    /* The API speaks JSON only; no Content-Type at all is read as JSON (curl -d with -H omitted
     * would say form-urlencoded, which is refused with 415 rather than misread). */
    if (nct == 1 && !is_json_media(ct)) {
        json_decref(params);
        tg_realm_problem_reply(r, 415, NULL, "Send the request body as application/json");
        return NULL;
    }
    if (req->body_len == 0) {
        json_decref(params);
        return json_object();
    }
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        tg_realm_problem_add(params, "body", "is_json", "body", NULL, "%s (line %d, column %d)",
                             jerr.text, jerr.line, jerr.column);
        tg_realm_problem_reply(r, 400, params, "The request body is not valid JSON");
        return NULL;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        tg_realm_problem_add(params, "body", "is_object", "body", NULL, "must be a JSON object");
        tg_realm_problem_reply(r, 400, params, "The request body must be a JSON object");
        return NULL;
    }
    json_decref(params);
    return body;
}

bool tg_realms_method(tg_admin_req_t *r, const char *methods, const char *allow)
{
    size_t n = strlen(r->method);
    for (const char *p = methods; (p = strstr(p, r->method)) != NULL; p += n)
        if ((p == methods || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return true;
    r->allow = allow;
    tg_realm_problem_reply(r, 405, NULL, "Method %s is not allowed here; allowed: %s", r->method,
                           allow);
    return false;
}

bool tg_realms_path_uuid(tg_admin_req_t *r, int i, const char *what)
{
    if (tg_uuid_valid(tg_str_from(r->segs[i]))) return true;
    json_t *params = json_array();
    tg_realm_problem_add(params, what, "is_uuid", "path", NULL, "must be a UUID");
    tg_realm_problem_reply(r, 400, params, "%s is not a UUID", what);
    return false;
}

void tg_realms_not_found(tg_admin_req_t *r, const char *what)
{
    tg_realm_problem_reply(r, 404, NULL, "%s not found", what);
}

void tg_realms_conflict(tg_admin_req_t *r, const char *field, const char *detail)
{
    json_t *params = json_array();
    tg_realm_problem_add(params, field, "unique", "body", NULL, "%s", detail);
    tg_realm_problem_reply(r, 409, params, "%s", detail);
}

int tg_realms_doc(tg_admin_req_t *r, const char *sql, int n, const char *const *params,
                  json_t **doc)
{
    json_t *docs;
    tg_db_err_t err;
    *doc = NULL;
    int rc = tg_realm_store_docs(r->db, &err, sql, n, params, &docs);
    if (rc != 0) return rc;
    if (json_array_size(docs) > 0) *doc = json_incref(json_array_get(docs, 0));
    json_decref(docs);
    return 0;
}

int tg_realms_exists(tg_admin_req_t *r, const char *sql, int n, const char *const *params,
                     bool *found)
{
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err, sql, n, params);
    if (!res) return err.code;
    *found = PQntuples(res) > 0;
    PQclear(res);
    return 0;
}

char *tg_realms_json_text(const json_t *body)
{
    return json_dumps(body, JSON_COMPACT);
}

/* ---------------------------------------------------------------- realms */

static const tg_realm_filter_t REALM_FILTERS[] = {
    {"name", "name"}, {"id", "id::text"}, {NULL, NULL}};

static void list_realms(tg_admin_req_t *r)
{
    tg_realm_page_t pg;
    tg_realm_sql_t q = {.where = ""};
    json_t *params = json_array();
    tg_realm_page_parse(r, REALM_FILTERS, &pg, &q, params);
    if (json_array_size(params) > 0)
        tg_realm_problem_reply(r, 400, params, "Invalid query parameters");
    else {
        json_decref(params);
        tg_realm_page_reply(r, TG_REALM_SQL_REALM_JSON, "realms t", &q, &pg);
    }
    tg_realm_sql_free(&q);
}

/*
 * allowed_control_planes: ids are stored lower-case (lookups compare text), and each must name
 * an existing control plane ("foreign ids" are refused, not stored to dangle).
 */
static int check_control_planes(tg_admin_req_t *r, json_t *body, json_t *params)
{
    json_t *cps = json_object_get(body, "allowed_control_planes");
    if (!json_is_array(cps)) return 0;
    size_t i;
    json_t *v;
    json_array_foreach(cps, i, v)
    {
        char id[TG_UUID_STR_LEN + 1];
        const char *s = json_string_value(v);
        if (strcmp(s, "*") == 0) continue;
        for (size_t k = 0; k <= TG_UUID_STR_LEN; k++)
            id[k] = (char)(s[k] >= 'A' && s[k] <= 'F' ? s[k] + 32 : s[k]);
        json_array_set_new(cps, i, json_string(id));
        const char *p[] = {id};
        bool found = false;
        int rc =
            tg_realms_exists(r, "SELECT 1 FROM control_planes WHERE id = $1::uuid", 1, p, &found);
        if (rc != 0) return rc;
        if (!found) {
            char field[64];
            snprintf(field, sizeof(field), "allowed_control_planes[%zu]", i);
            tg_realm_problem_add(params, field, "reference", "body", NULL,
                                 "no control plane has the id %s", id);
        }
    }
    return 0;
}

/* Validates a realm body (create or patch): schema, control planes, the unique name. */
static bool valid_realm(tg_admin_req_t *r, json_t *body, bool create, const char *self_id)
{
    json_t *params = json_array();
    tg_realm_schema_check(&tg_realm_schema_realm, body, create, params);
    int rc = json_array_size(params) == 0 ? check_control_planes(r, body, params) : 0;
    if (rc != 0) {
        json_decref(params);
        tg_realm_problem_db(r, rc);
        return false;
    }
    if (json_array_size(params) > 0) {
        tg_realm_problem_reply(r, 400, params, "Invalid realm");
        return false;
    }
    json_decref(params);
    const char *name = json_string_value(json_object_get(body, "name"));
    if (!name) return true;
    const char *p[] = {name, self_id ? self_id : "00000000-0000-0000-0000-000000000000"};
    bool taken = false;
    rc = tg_realms_exists(r, "SELECT 1 FROM realms WHERE name = $1 AND id <> $2::uuid", 2, p,
                          &taken);
    if (rc != 0)
        tg_realm_problem_db(r, rc);
    else if (taken) {
        char detail[400];
        snprintf(detail, sizeof(detail), "a realm named '%.255s' already exists", name);
        tg_realms_conflict(r, "name", detail);
    }
    return rc == 0 && !taken;
}

/* A write failed at the database: a unique violation the pre-checks lost a race to, or worse. */
static void write_failed(tg_admin_req_t *r, const tg_db_err_t *err)
{
    tg_realm_store_rollback(r->db);
    if (strcmp(err->sqlstate, "23505") == 0)
        tg_realms_conflict(r, "name", "a realm with this name already exists");
    else
        tg_realm_problem_db(r, err->code);
}

static const char *INSERT_REALM =
    "INSERT INTO realms AS t (id, name, allowed_control_planes, ttl, negative_ttl, consumer_groups,"
    "                         created_at, updated_at)"
    " SELECT $1::uuid, b->>'name',"
    "        coalesce(ARRAY(SELECT jsonb_array_elements_text(b->'allowed_control_planes')), '{}'),"
    "        coalesce((b->>'ttl')::int, 10), coalesce((b->>'negative_ttl')::int, 10),"
    "        coalesce(ARRAY(SELECT jsonb_array_elements_text(b->'consumer_groups')), '{}'), ts, ts"
    "   FROM (SELECT $2::jsonb AS b, clock_timestamp() AS ts) AS arg"
    " RETURNING " TG_REALM_SQL_REALM_JSON;

static void create_realm(tg_admin_req_t *r)
{
    json_t *body = tg_realms_body(r);
    if (!body) return;
    if (!valid_realm(r, body, true, NULL)) {
        json_decref(body);
        return;
    }
    char id[TG_UUID_STR_LEN + 1];
    tg_uuid_v4(id);
    char *text = tg_realms_json_text(body);
    const char *p[] = {id, text};
    tg_db_err_t err;
    json_t *docs = NULL;
    int rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0) rc = tg_realm_store_docs(r->db, &err, INSERT_REALM, 2, p, &docs);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else
        tg_realm_reply(r, 201, json_incref(json_array_get(docs, 0)));
    json_decref(docs);
    free(text);
    json_decref(body);
}

static void get_realm(tg_admin_req_t *r)
{
    const char *p[] = {r->segs[2]};
    json_t *doc;
    int rc = tg_realms_doc(
        r, "SELECT " TG_REALM_SQL_REALM_JSON " FROM realms t WHERE t.id = $1::uuid", 1, p, &doc);
    if (rc != 0)
        tg_realm_problem_db(r, rc);
    else if (!doc)
        tg_realms_not_found(r, "realm");
    else
        tg_realm_reply(r, 200, doc);
}

/*
 * One statement: lock the old row, update what the body names, and say whether anything a
 * data plane caches changed (who may look up, for how long, which groups a consumer gets).
 */
static const char *UPDATE_REALM =
    "WITH old AS (SELECT * FROM realms WHERE id = $1::uuid FOR UPDATE),"
    " upd AS (UPDATE realms AS t SET"
    "   name = CASE WHEN $2::jsonb ? 'name' THEN $2::jsonb->>'name' ELSE t.name END,"
    "   allowed_control_planes = CASE WHEN $2::jsonb ? 'allowed_control_planes'"
    "       THEN ARRAY(SELECT jsonb_array_elements_text($2::jsonb->'allowed_control_planes'))"
    "       ELSE t.allowed_control_planes END,"
    "   ttl = CASE WHEN $2::jsonb ? 'ttl' THEN ($2::jsonb->>'ttl')::int ELSE t.ttl END,"
    "   negative_ttl = CASE WHEN $2::jsonb ? 'negative_ttl' THEN ($2::jsonb->>'negative_ttl')::int"
    "       ELSE t.negative_ttl END,"
    "   consumer_groups = CASE WHEN $2::jsonb ? 'consumer_groups'"
    "       THEN ARRAY(SELECT jsonb_array_elements_text($2::jsonb->'consumer_groups'))"
    "       ELSE t.consumer_groups END,"
    "   updated_at = clock_timestamp()"
    "   FROM old WHERE t.id = old.id"
    "   RETURNING t.*, " TG_REALM_SQL_REALM_JSON " AS doc)"
    " SELECT upd.doc, (old.allowed_control_planes IS DISTINCT FROM upd.allowed_control_planes"
    "               OR old.ttl <> upd.ttl OR old.negative_ttl <> upd.negative_ttl"
    "               OR old.consumer_groups IS DISTINCT FROM upd.consumer_groups)"
    "   FROM old, upd";

static void patch_realm(tg_admin_req_t *r)
{
    json_t *body = tg_realms_body(r);
    if (!body) return;
    const char *rid = r->segs[2];
    const char *p0[] = {rid};
    bool exists = false;
    int rc = tg_realms_exists(r, "SELECT 1 FROM realms WHERE id = $1::uuid", 1, p0, &exists);
    if (rc != 0 || !exists) {
        if (rc != 0)
            tg_realm_problem_db(r, rc);
        else
            tg_realms_not_found(r, "realm");
        json_decref(body);
        return;
    }
    if (!valid_realm(r, body, false, rid)) {
        json_decref(body);
        return;
    }
    char *text = tg_realms_json_text(body);
    const char *p[] = {rid, text};
    tg_db_err_t err;
    PGresult *res = NULL;
    rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0 && !(res = tg_db_exec(r->db, &err, UPDATE_REALM, 2, p))) rc = err.code;
    json_t *doc = NULL;
    if (rc == 0 && PQntuples(res) == 1) {
        doc = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        if (strcmp(PQgetvalue(res, 0, 1), "t") == 0)
            rc = tg_realm_store_notify(r->db, &err, rid, "realm_updated", NULL, NULL, true, NULL);
    }
    bool gone = rc == 0 && PQntuples(res) == 0; /* deleted since the check above */
    if (res) PQclear(res);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else if (gone || !doc)
        tg_realms_not_found(r, "realm");
    else
        tg_realm_reply(r, 200, json_incref(doc));
    json_decref(doc);
    free(text);
    json_decref(body);
}

static void delete_realm(tg_admin_req_t *r)
{
    const char *rid = r->segs[2];
    const char *force = tg_admin_query(r, "force");
    json_t *fq = json_object_get(r->query, "force");
    if (fq && (!force || (strcmp(force, "true") != 0 && strcmp(force, "false") != 0))) {
        json_t *params = json_array();
        tg_realm_problem_add(params, "force", "is_boolean", "query", NULL, "must be true or false");
        tg_realm_problem_reply(r, 400, params, "Invalid query parameters");
        return;
    }
    bool forced = force && strcmp(force, "true") == 0;
    const char *p[] = {rid};
    tg_db_err_t err;
    PGresult *res = NULL;
    /* Lock the realm first: a consumer created concurrently waits for this delete (its foreign
     * key needs the row) instead of slipping in between the count and the delete. */
    int rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0 &&
        !(res = tg_db_exec(r->db, &err,
                           "SELECT (SELECT count(*) FROM realm_consumers c WHERE c.realm_id = t.id)"
                           "  FROM realms t WHERE t.id = $1::uuid FOR UPDATE",
                           1, p)))
        rc = err.code;
    if (rc != 0) {
        write_failed(r, &err);
        return;
    }
    long long consumers = PQntuples(res) ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    if (consumers < 0 || (consumers > 0 && !forced)) {
        tg_realm_store_commit(r->db, &err); /* nothing was written: just end the transaction */
        if (consumers < 0)
            tg_realms_not_found(r, "realm");
        else
            tg_realm_problem_reply(
                r, 400, NULL,
                "The realm still has %lld consumer(s); delete them first or use ?force=true",
                consumers);
        return;
    }
    rc = tg_db_run(r->db, &err, "DELETE FROM realms WHERE id = $1::uuid", 1, p);
    if (rc == 0)
        rc = tg_realm_store_notify(r->db, &err, rid, "realm_deleted", NULL, NULL, true, NULL);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else
        tg_realm_reply(r, 204, NULL);
}

/* ---------------------------------------------------------------- routing */

int tg_realms_route(tg_admin_req_t *r)
{
    if (r->nsegs < 2 || strcmp(r->segs[0], "v1") != 0 || strcmp(r->segs[1], "realms") != 0)
        return 0;
    if (r->nsegs == 2) {
        if (!tg_realms_method(r, "GET POST", "GET, HEAD, POST, OPTIONS")) return 1;
        if (strcmp(r->method, "GET") == 0)
            list_realms(r);
        else
            create_realm(r);
        return 1;
    }
    if (!tg_realms_path_uuid(r, 2, "realmId")) return 1;
    if (r->nsegs == 3) {
        if (!tg_realms_method(r, "GET PATCH DELETE", "GET, HEAD, PATCH, DELETE, OPTIONS")) return 1;
        if (strcmp(r->method, "GET") == 0)
            get_realm(r);
        else if (strcmp(r->method, "PATCH") == 0)
            patch_realm(r);
        else
            delete_realm(r);
        return 1;
    }
    if (strcmp(r->segs[3], "consumers") == 0)
        tg_realms_consumers(r);
    else
        tg_realm_problem_reply(r, 404, NULL, "No such endpoint: %s", r->path);
    return 1;
}
