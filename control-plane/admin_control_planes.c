/*
 * admin_control_planes.c — Konnect's Control Planes API v2 on the admin listeners:
 *   /v2/control-planes                       GET list (page[size], page[number], filter[...],
 *                                            labels, sort), POST create
 *   /v2/control-planes/{id}                  GET, PATCH, DELETE
 *   /v2/control-planes/{id}/core-entities/…  every root Admin API path (Kong's shapes), scoped
 *                                            to that control plane (admin.c tg_admin_route_scoped)
 *
 * A control plane is an isolated configuration: its own entities, change log and versions,
 * join tokens and data planes (all keyed by cp_id). The `default` one (migration 001) is the
 * one the root paths address: it cannot be renamed or deleted. Deleting any other removes
 * everything it owns in one statement (foreign keys cascade) and tells every CP node to cut
 * its data planes' sessions; their certificates are refused afterwards because admission
 * needs their data_planes row.
 *
 * Shapes follow Konnect: timestamps ISO-8601 strings, `config` describing how data planes
 * attach, errors application/problem+json with `invalid_parameters`. Each write is one SQL
 * statement, so it is atomic whether or not it runs inside a group-commit batch, and a
 * request that fails validation writes nothing. Runs on a CP worker thread.
 */
#include "admin_request.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "join.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NAME_MAX_LEN 100
#define DESCRIPTION_MAX_LEN 1000
#define LABELS_MAX 50
#define LABEL_MAX_LEN 63
#define PAGE_SIZE_DEFAULT 10
#define PAGE_SIZE_MAX 1000
#define PAGE_NUMBER_MAX 1000000
#define MAX_PARAMS 24

#define CLUSTER_TYPE "CLUSTER_TYPE_CONTROL_PLANE"
#define AUTH_TYPE "pki_client_certs"

#define ISO(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define CP_COLUMNS                                                                                 \
    "id::text, name, coalesce(description, ''), labels::text, " ISO("created_at") ", " ISO(        \
        "updated_at") ", config_version"

static bool is(const tg_admin_req_t *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

/* ---------------------------------------------------------------- problems */

/* Appends {"field","rule","reason","source"} to `list`; returns the item for extra keys. */
static json_t *invalid(json_t *list, const char *field, const char *rule, const char *reason,
                       const char *source)
{
    json_t *item = json_pack("{s:s,s:s,s:s,s:s}", "field", field, "rule", rule, "reason", reason,
                             "source", source);
    json_array_append_new(list, item);
    return item;
}

/* 400 with the collected invalid parameters (taken). */
static void bad_request(tg_admin_req_t *r, json_t *params)
{
    tg_admin_reply_problem(r, 400, "Invalid parameters", params);
}

static void not_found(tg_admin_req_t *r)
{
    tg_admin_reply_problem(r, 404, "Not found", NULL);
}

static void method_not_allowed(tg_admin_req_t *r, const char *allow)
{
    r->allow = allow;
    tg_admin_reply_problem(r, 405, "Method not allowed", NULL);
}

static void db_failure(tg_admin_req_t *r, const tg_db_err_t *err)
{
    if (err->code == -TG_EDBDOWN || tg_db_err_is_down(err))
        tg_admin_reply_problem(r, 503, "Service unavailable", NULL);
    else
        tg_admin_reply_problem(r, 500, "An unexpected error occurred", NULL);
}

/* ---------------------------------------------------------------- records */

static json_t *config_of(void)
{
    /* Data planes attach to the cluster listener (join, sync, heartbeats), with certificates
     * from the cluster CA: that is Konnect's PKI mode, and the only mode Tollgate has. */
    char advertise[300];
    tg_cluster_advertise(advertise, sizeof(advertise));
    return json_pack("{s:o,s:o,s:s,s:s,s:b,s:[]}", "control_plane_endpoint",
                     json_sprintf("https://%s", advertise), "telemetry_endpoint",
                     json_sprintf("https://%s", advertise), "cluster_type", CLUSTER_TYPE,
                     "auth_type", AUTH_TYPE, "cloud_gateway", 0, "proxy_urls");
}

/* Row i of a CP_COLUMNS result; `config` (config_of(), shared by a list's records) is borrowed. */
static json_t *record(const PGresult *res, int i, json_t *config)
{
    json_t *labels = json_loads(PQgetvalue(res, i, 3), 0, NULL);
    /* config_version is Tollgate's own: the control plane's latest configuration version. */
    return json_pack("{s:s,s:s,s:s,s:o,s:o,s:s,s:s,s:I}", "id", PQgetvalue(res, i, 0), "name",
                     PQgetvalue(res, i, 1), "description", PQgetvalue(res, i, 2), "labels",
                     labels ? labels : json_object(), "config", json_incref(config), "created_at",
                     PQgetvalue(res, i, 4), "updated_at", PQgetvalue(res, i, 5), "config_version",
                     (json_int_t)strtoll(PQgetvalue(res, i, 6), NULL, 10));
}

/* 1 found (the record in *out), 0 absent, -1 after replying with the failure. */
static int fetch(tg_admin_req_t *r, const char *id, json_t **out)
{
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        r->db, &err, "SELECT " CP_COLUMNS " FROM control_planes WHERE id = $1::uuid", 1, params);
    if (!res) {
        db_failure(r, &err);
        return -1;
    }
    int found = PQntuples(res) == 1;
    if (found) {
        json_t *config = config_of();
        *out = record(res, 0, config);
        json_decref(config);
    }
    PQclear(res);
    return found;
}

/* ---------------------------------------------------------------- request bodies */

static tg_str_t header(const tg_http_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (tg_str_caseeq(req->headers[i].name, tg_str_from(name))) return req->headers[i].value;
    return TG_STR_NULL;
}

/* The JSON object of the body, or NULL after replying 400/415. */
static json_t *body_object(tg_admin_req_t *r)
{
    tg_str_t ct = header(r->http, "Content-Type");
    bool json = ct.p && ct.len >= 16 && strncasecmp(ct.p, "application/json", 16) == 0 &&
                (ct.len == 16 || ct.p[16] == ';' || ct.p[16] == ' ');
    if (r->http->body_len > 0 && !json) {
        tg_admin_reply_problem(r, 415, "The request body must be application/json", NULL);
        return NULL;
    }
    json_error_t jerr;
    json_t *args = r->http->body_len == 0 ? json_object()
                                          : json_loadb(r->http->body, r->http->body_len,
                                                       JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(args)) {
        json_decref(args);
        json_t *params = json_array();
        invalid(params, "body", "is_object", "must be a JSON object", "body");
        bad_request(r, params);
        return NULL;
    }
    return args;
}

/* A string of 1..max characters with no control characters (and no NUL inside). */
static const char *text_field(json_t *args, const char *name, size_t max, bool allow_empty,
                              json_t *params)
{
    json_t *v = json_object_get(args, name);
    if (!v) return NULL;
    if (!json_is_string(v)) {
        invalid(params, name, "is_string", "must be a string", "body");
        return NULL;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    bool clean = strlen(s) == len;
    for (size_t i = 0; clean && i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) clean = false;
    if (!allow_empty && len == 0) {
        json_object_set_new(
            invalid(params, name, "min_length", "must have at least 1 character", "body"),
            "minimum", json_integer(1));
    } else if (len > max) {
        json_t *item = invalid(params, name, "max_length", "", "body");
        json_object_set_new(item, "reason",
                            json_sprintf("must not have more than %zu characters", max));
        json_object_set_new(item, "maximum", json_integer((json_int_t)max));
    } else if (!clean) {
        invalid(params, name, "invalid", "must not contain control characters", "body");
    } else {
        return s;
    }
    return NULL;
}

/* Konnect's label words: 1-63 characters, alphanumeric at both ends, '-', '_' and '.' inside. */
static bool label_word(const char *s, size_t len)
{
    if (len < 1 || len > LABEL_MAX_LEN || strlen(s) != len) return false;
    if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[len - 1])) return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-._", s[i])) return false;
    return true;
}

static bool reserved_label(const char *key)
{
    static const char *const prefixes[] = {"kong", "konnect", "mesh", "kic", "_", NULL};
    for (size_t i = 0; prefixes[i]; i++)
        if (strncasecmp(key, prefixes[i], strlen(prefixes[i])) == 0) return true;
    return false;
}

/* Validates `labels`; returns it (borrowed) or NULL with the problems appended. */
static json_t *labels_field(json_t *args, json_t *params)
{
    json_t *labels = json_object_get(args, "labels");
    if (!labels) return NULL;
    if (!json_is_object(labels)) {
        invalid(params, "labels", "is_object", "must be an object of string values", "body");
        return NULL;
    }
    size_t before = json_array_size(params);
    if (json_object_size(labels) > LABELS_MAX) {
        json_object_set_new(
            invalid(params, "labels", "max_items", "must not have more than 50 labels", "body"),
            "maximum", json_integer(LABELS_MAX));
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(labels, key, v)
    {
        char field[80];
        snprintf(field, sizeof(field), "labels.%.*s", LABEL_MAX_LEN, key);
        if (!label_word(key, strlen(key)))
            invalid(params, field, "is_label",
                    "label keys must be 1 to 63 characters: letters, digits, '-', '_' or '.', "
                    "beginning and ending with a letter or digit",
                    "body");
        else if (reserved_label(key))
            invalid(
                params, field, "is_label",
                "label keys cannot start with \"kong\", \"konnect\", \"mesh\", \"kic\" or \"_\"",
                "body");
        else if (!json_is_string(v))
            invalid(params, field, "is_string", "label values must be strings", "body");
        else if (!label_word(json_string_value(v), json_string_length(v)))
            invalid(params, field, "is_label",
                    "label values must be 1 to 63 characters: letters, digits, '-', '_' or '.', "
                    "beginning and ending with a letter or digit",
                    "body");
    }
    return json_array_size(params) == before ? labels : NULL;
}

/* Fields that describe how data planes attach: only what Tollgate implements is accepted. */
static void attach_fields(json_t *args, bool create, json_t *params)
{
    json_t *v;
    if (create && (v = json_object_get(args, "cluster_type")) &&
        !(json_is_string(v) && strcmp(json_string_value(v), CLUSTER_TYPE) == 0))
        json_object_set_new(invalid(params, "cluster_type", "enum",
                                    "only hybrid control planes are supported", "body"),
                            "choices", json_pack("[s]", CLUSTER_TYPE));
    if ((v = json_object_get(args, "auth_type")) &&
        !(json_is_string(v) && strcmp(json_string_value(v), AUTH_TYPE) == 0))
        json_object_set_new(invalid(params, "auth_type", "enum",
                                    "data planes authenticate with certificates issued by the "
                                    "cluster CA (tollgate dp join): only pki_client_certs",
                                    "body"),
                            "choices", json_pack("[s]", AUTH_TYPE));
    if (create && (v = json_object_get(args, "cloud_gateway"))) {
        if (!json_is_boolean(v))
            invalid(params, "cloud_gateway", "is_boolean", "must be a boolean", "body");
        else if (json_is_true(v))
            invalid(params, "cloud_gateway", "invalid", "cloud gateways are not supported", "body");
    }
    if ((v = json_object_get(args, "proxy_urls"))) {
        if (!json_is_array(v))
            invalid(params, "proxy_urls", "is_array", "must be an array", "body");
        else if (json_array_size(v) > 0)
            invalid(params, "proxy_urls", "invalid",
                    "proxy URLs are not supported: omit the field or send []", "body");
    }
}

typedef struct cp_input {
    const char *name, *description;
    json_t *labels; /* borrowed from the arguments */
} cp_input_t;

/* Validates a create (create = true) or update body; 0, or -1 after replying 400. */
static int read_input(tg_admin_req_t *r, json_t *args, bool create, cp_input_t *in)
{
    static const char *const create_fields[] = {"name",         "description", "labels",
                                                "cluster_type", "auth_type",   "cloud_gateway",
                                                "proxy_urls",   NULL};
    static const char *const update_fields[] = {"name",      "description", "labels",
                                                "auth_type", "proxy_urls",  NULL};
    const char *const *known = create ? create_fields : update_fields;
    json_t *params = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v)
    {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(known[i], key) == 0;
        if (!ok) {
            char field[80];
            snprintf(field, sizeof(field), "%.64s", key);
            invalid(params, field, "unknown_property", "is an unknown property", "body");
        }
    }
    if (create && !json_object_get(args, "name"))
        invalid(params, "name", "required", "is a required field", "body");
    in->name = text_field(args, "name", NAME_MAX_LEN, false, params);
    in->description = text_field(args, "description", DESCRIPTION_MAX_LEN, true, params);
    in->labels = labels_field(args, params);
    attach_fields(args, create, params);
    if (json_array_size(params) == 0) {
        json_decref(params);
        return 0;
    }
    bad_request(r, params);
    return -1;
}

static void conflict_name(tg_admin_req_t *r, const char *name)
{
    char *detail = tg_asprintf("A control plane named '%.100s' already exists", name);
    tg_admin_reply_problem(r, 409, detail, NULL);
    free(detail);
}

/* ---------------------------------------------------------------- endpoints */

static void create(tg_admin_req_t *r)
{
    json_t *args = body_object(r);
    cp_input_t in = {0};
    if (!args || read_input(r, args, true, &in) != 0) {
        json_decref(args);
        return;
    }
    char id[TG_UUID_STR_LEN + 1];
    tg_uuid_v4(id);
    char *labels = in.labels ? json_dumps(in.labels, JSON_COMPACT) : tg_strdup("{}");
    const char *params[] = {id, in.name, in.description ? in.description : "", labels};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err,
                               "INSERT INTO control_planes (id, name, description, labels)"
                               " VALUES ($1::uuid, $2, $3, $4::jsonb) RETURNING " CP_COLUMNS,
                               4, params);
    free(labels);
    if (res) {
        json_t *config = config_of();
        tg_admin_reply(r, 201, record(res, 0, config));
        json_decref(config);
        PQclear(res);
    } else if (strcmp(err.sqlstate, "23505") == 0) {
        conflict_name(r, in.name);
    } else {
        db_failure(r, &err);
    }
    json_decref(args);
}

static void update(tg_admin_req_t *r, const char *id)
{
    json_t *args = body_object(r);
    cp_input_t in = {0};
    if (!args || read_input(r, args, false, &in) != 0) {
        json_decref(args);
        return;
    }
    /* The root Admin API finds the default control plane by its name at start-up. */
    if (strcmp(id, r->admin->cp_id) == 0 && in.name && strcmp(in.name, "default") != 0) {
        json_t *params = json_array();
        invalid(params, "name", "invalid",
                "the default control plane cannot be renamed: the root Admin API paths address it",
                "body");
        bad_request(r, params);
        json_decref(args);
        return;
    }
    char *labels = in.labels ? json_dumps(in.labels, JSON_COMPACT) : NULL;
    const char *params[] = {id, in.name, in.description, labels};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err,
                               "UPDATE control_planes SET name = coalesce($2, name),"
                               " description = coalesce($3, description),"
                               " labels = coalesce($4::jsonb, labels), updated_at = now()"
                               " WHERE id = $1::uuid RETURNING " CP_COLUMNS,
                               4, params);
    free(labels);
    if (res && PQntuples(res) == 1) {
        json_t *config = config_of();
        tg_admin_reply(r, 200, record(res, 0, config));
        json_decref(config);
    } else if (res)
        not_found(r);
    else if (strcmp(err.sqlstate, "23505") == 0)
        conflict_name(r, in.name);
    else
        db_failure(r, &err);
    if (res) PQclear(res);
    json_decref(args);
}

/*
 * One statement: the control plane's row goes, and with it (ON DELETE CASCADE) its entities,
 * change log, join tokens and data-plane records. Every data plane it had is named in a
 * `tollgate_cluster` notification delivered at commit, so each CP node ends its live session
 * at once; on reconnect the admission check finds no data_planes row and refuses it. A last
 * `control-plane-deleted:<id>` notification lets the sync hubs drop what they cache for it.
 */
static void delete_cp(tg_admin_req_t *r, const char *id)
{
    if (strcmp(id, r->admin->cp_id) == 0) {
        tg_admin_reply_problem(
            r, 409,
            "The default control plane cannot be deleted: the root Admin API paths address it",
            NULL);
        return;
    }
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        r->db, &err,
        "WITH dps AS (SELECT id FROM data_planes WHERE cp_id = $1::uuid),"
        " d AS (DELETE FROM control_planes WHERE id = $1::uuid AND name <> 'default' RETURNING id),"
        " n AS (SELECT pg_notify('tollgate_cluster', 'revoke:' || dps.id::text) FROM dps, d),"
        " g AS (SELECT pg_notify('tollgate_cluster', 'control-plane-deleted:' || d.id::text)"
        " FROM d)"
        " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM n), (SELECT count(*) FROM g)",
        1, params);
    if (!res) {
        db_failure(r, &err);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "0") == 0)
        not_found(r);
    else
        tg_admin_reply(r, 204, NULL);
    PQclear(res);
}

/* ---------------------------------------------------------------- the list */

typedef struct list_sql {
    char where[2048];
    size_t wl;
    const char *params[MAX_PARAMS];
    int np;
    bool none; /* a filter no control plane can match (e.g. another cluster type) */
} list_sql_t;

/* Appends " AND <lhs>$N<rhs>" with `value` as parameter N. */
static void cond(list_sql_t *q, const char *lhs, const char *rhs, const char *value, json_t *params)
{
    if (q->np == MAX_PARAMS) {
        invalid(params, "filter", "max_items", "too many filters", "query");
        return;
    }
    q->params[q->np++] = value;
    size_t n = (size_t)snprintf(q->where + q->wl, sizeof(q->where) - q->wl, " AND %s$%d%s", lhs,
                                q->np, rhs);
    q->wl = q->wl + n < sizeof(q->where) ? q->wl + n : sizeof(q->where) - 1;
}

/* "filter[<field>][<op>]": the operators Konnect's ControlPlaneFilterParameters define. */
static void name_filter(list_sql_t *q, const char *op, const char *v, json_t *params)
{
    if (strcmp(op, "eq") == 0)
        cond(q, "name = ", "", v, params);
    else if (strcmp(op, "neq") == 0)
        cond(q, "name <> ", "", v, params);
    else if (strcmp(op, "contains") == 0)
        cond(q, "strpos(lower(name), lower(", ")) > 0", v, params);
    else
        json_object_set_new(invalid(params, "filter[name]", "enum", "unknown operator", "query"),
                            "choices", json_pack("[s,s,s]", "eq", "neq", "contains"));
}

static void id_filter(list_sql_t *q, const char *op, const char *v, json_t *params)
{
    if (strcmp(op, "eq") == 0)
        cond(q, "id::text = lower(", ")", v, params);
    else if (strcmp(op, "oeq") == 0)
        cond(q, "id::text = ANY (string_to_array(lower(", "), ','))", v, params);
    else
        json_object_set_new(invalid(params, "filter[id]", "enum", "unknown operator", "query"),
                            "choices", json_pack("[s,s]", "eq", "oeq"));
}

/* Every control plane here is CLUSTER_TYPE_CONTROL_PLANE: the filter keeps all or none. */
static void cluster_type_filter(list_sql_t *q, const char *op, const char *v, json_t *params)
{
    bool match;
    if (strcmp(op, "eq") == 0)
        match = strcmp(v, CLUSTER_TYPE) == 0;
    else if (strcmp(op, "neq") == 0)
        match = strcmp(v, CLUSTER_TYPE) != 0;
    else if (strcmp(op, "oeq") == 0) {
        char *copy = tg_strdup(v), *save = NULL;
        match = false;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            match = match || strcmp(t, CLUSTER_TYPE) == 0;
        free(copy);
    } else {
        json_object_set_new(
            invalid(params, "filter[cluster_type]", "enum", "unknown operator", "query"), "choices",
            json_pack("[s,s,s]", "eq", "neq", "oeq"));
        return;
    }
    if (!match) q->none = true;
}

static void filters(json_t *filter, list_sql_t *q, json_t *params)
{
    if (!filter) return;
    if (!json_is_object(filter)) {
        invalid(params, "filter", "is_object", "use filter[<field>][<operator>]=<value>", "query");
        return;
    }
    const char *field;
    json_t *ops;
    json_object_foreach(filter, field, ops)
    {
        char name[80];
        snprintf(name, sizeof(name), "filter[%.32s]", field);
        bool known = !strcmp(field, "name") || !strcmp(field, "id") ||
                     !strcmp(field, "cluster_type") || !strcmp(field, "cloud_gateway");
        if (!known) {
            invalid(params, name, "unknown_property",
                    "is not a field control planes can be filtered by", "query");
            continue;
        }
        if (strcmp(field, "cloud_gateway") == 0) {
            const char *v = json_string_value(ops);
            if (!v || (strcmp(v, "true") && strcmp(v, "false")))
                invalid(params, name, "is_boolean", "must be true or false", "query");
            else if (strcmp(v, "true") == 0)
                q->none = true;
            continue;
        }
        /* filter[name]=x is short for filter[name][eq]=x */
        json_t *obj = json_is_string(ops) ? json_pack("{s:O}", "eq", ops) : json_incref(ops);
        const char *op;
        json_t *v;
        if (!json_is_object(obj)) invalid(params, name, "is_string", "must be a string", "query");
        json_object_foreach(obj, op, v)
        {
            if (!json_is_string(v)) {
                invalid(params, name, "is_string", "must be a string", "query");
                continue;
            }
            const char *s = json_string_value(v);
            if (strcmp(field, "name") == 0)
                name_filter(q, op, s, params);
            else if (strcmp(field, "id") == 0)
                id_filter(q, op, s, params);
            else
                cluster_type_filter(q, op, s, params);
        }
        json_decref(obj);
    }
}

/*
 * `labels=key:value,other`: every item must hold — key:value an exact label, a bare key a
 * label that exists. The strings the parameters point to live in `keep` (owned by the caller).
 */
static void labels_filter(json_t *arg, list_sql_t *q, json_t *keep, json_t *params)
{
    if (!arg) return;
    const char *s = json_string_value(arg);
    if (!s) {
        invalid(params, "labels", "is_string", "use labels=key:value,key", "query");
        return;
    }
    char *copy = tg_strdup(s), *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (colon) {
            *colon = '\0';
            json_t *pair = json_object(), *text = NULL;
            if (json_object_set_new(pair, item, json_string(colon + 1)) == 0) {
                char *dumped = json_dumps(pair, JSON_COMPACT);
                text = json_string(dumped); /* keeps the parameter's memory alive */
                free(dumped);
            }
            json_decref(pair);
            if (!text) { /* not UTF-8 */
                invalid(params, "labels", "is_label", "labels must be UTF-8 text", "query");
                break;
            }
            json_array_append_new(keep, text);
            cond(q, "labels @> ", "::jsonb", json_string_value(text), params);
        } else {
            json_t *text = json_string(item);
            if (!text) {
                invalid(params, "labels", "is_label", "labels must be UTF-8 text", "query");
                break;
            }
            json_array_append_new(keep, text);
            cond(q, "labels ? ", "", json_string_value(text), params);
        }
    }
    free(copy);
}

/* `sort=created_at desc,name`: Konnect's SortQuery over the columns that make sense here. */
static void sort_clause(json_t *arg, char *out, size_t cap, json_t *params)
{
    snprintf(out, cap, "created_at, id");
    if (!arg) return;
    const char *s = json_string_value(arg);
    if (!s) {
        invalid(params, "sort", "is_string", "must be a string", "query");
        return;
    }
    size_t len = 0;
    char *copy = tg_strdup(s), *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char attr[32] = "", dir[8] = "asc", extra[2] = "";
        int n = sscanf(item, " %31s %7s %1s", attr, dir, extra);
        bool attr_ok = !strcmp(attr, "created_at") || !strcmp(attr, "updated_at") ||
                       !strcmp(attr, "name") || !strcmp(attr, "id");
        bool dir_ok = !strcasecmp(dir, "asc") || !strcasecmp(dir, "desc");
        if (n < 1 || n > 2 || !attr_ok || !dir_ok) {
            json_object_set_new(
                invalid(params, "sort", "enum",
                        "sort by created_at, updated_at, name or id, each optionally "
                        "followed by asc or desc",
                        "query"),
                "choices", json_pack("[s,s,s,s]", "created_at", "updated_at", "name", "id"));
            break;
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%s %s", len ? ", " : "", attr,
                                strcasecmp(dir, "desc") ? "ASC" : "DESC");
    }
    if (len)
        snprintf(out + len, cap - len, ", id");
    else
        snprintf(out, cap, "created_at, id");
    free(copy);
}

/* page[size] / page[number]: a positive integer within bounds, else a problem. */
static long page_arg(json_t *page, const char *key, long dflt, long max, json_t *params)
{
    json_t *v = json_is_object(page) ? json_object_get(page, key) : NULL;
    if (!v) return dflt;
    char field[24];
    snprintf(field, sizeof(field), "page[%s]", key);
    const char *s = json_string_value(v);
    char *end = NULL;
    errno = 0;
    long n = s && *s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno) {
        invalid(params, field, "is_integer", "must be an integer", "query");
    } else if (n < 1) {
        json_object_set_new(invalid(params, field, "min", "must be at least 1", "query"), "minimum",
                            json_integer(1));
    } else if (n > max) {
        json_t *item = invalid(params, field, "max", "", "query");
        json_object_set_new(item, "reason", json_sprintf("must be at most %ld", max));
        json_object_set_new(item, "maximum", json_integer(max));
    } else {
        return n;
    }
    return dflt;
}

static void list(tg_admin_req_t *r)
{
    json_t *params = json_array(), *keep = json_array(), *page = json_object_get(r->query, "page");
    if (page && !json_is_object(page))
        invalid(params, "page", "is_object", "use page[size] and page[number]", "query");
    long size = page_arg(page, "size", PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, params);
    long number = page_arg(page, "number", 1, PAGE_NUMBER_MAX, params);
    list_sql_t q = {0};
    char order[256];
    filters(json_object_get(r->query, "filter"), &q, params);
    labels_filter(json_object_get(r->query, "labels"), &q, keep, params);
    sort_clause(json_object_get(r->query, "sort"), order, sizeof(order), params);
    if (json_array_size(params) > 0) {
        bad_request(r, params);
        json_decref(keep);
        return;
    }
    json_decref(params);
    const char *none = q.none ? " AND false" : "";
    char *count_sql =
        tg_asprintf("SELECT count(*) FROM control_planes WHERE true%s%s", q.where, none);
    /* size and number are validated integers: part of the text, like the DAO's LIMIT. */
    char *page_sql =
        tg_asprintf("SELECT " CP_COLUMNS " FROM control_planes WHERE true%s%s ORDER BY %s"
                    " LIMIT %ld OFFSET %lld",
                    q.where, none, order, size, (long long)(number - 1) * size);
    tg_db_err_t err;
    PGresult *count = tg_db_exec(r->db, &err, count_sql, q.np, q.params);
    PGresult *res = count ? tg_db_exec(r->db, &err, page_sql, q.np, q.params) : NULL;
    free(count_sql);
    free(page_sql);
    if (res) {
        json_t *data = json_array(), *config = config_of();
        for (int i = 0; i < PQntuples(res); i++)
            json_array_append_new(data, record(res, i, config));
        json_decref(config);
        json_int_t total = (json_int_t)strtoll(PQgetvalue(count, 0, 0), NULL, 10);
        tg_admin_reply(r, 200,
                       json_pack("{s:o,s:{s:{s:I,s:I,s:I}}}", "data", data, "meta", "page",
                                 "number", (json_int_t)number, "size", (json_int_t)size, "total",
                                 total));
    } else {
        db_failure(r, &err);
    }
    if (count) PQclear(count);
    if (res) PQclear(res);
    json_decref(keep);
}

/* ---------------------------------------------------------------- routing */

static bool valid_id(tg_admin_req_t *r, const char *id)
{
    if (tg_uuid_valid(tg_str_from(id))) return true;
    json_t *params = json_array();
    invalid(params, "controlPlaneId", "is_uuid", "must be a valid UUID", "path");
    bad_request(r, params);
    return false;
}

static void one(tg_admin_req_t *r, const char *id)
{
    json_t *cp = NULL;
    if (is(r, "GET")) {
        int found = fetch(r, id, &cp);
        if (found > 0)
            tg_admin_reply(r, 200, cp);
        else if (found == 0)
            not_found(r);
    } else if (is(r, "PATCH")) {
        update(r, id);
    } else if (is(r, "DELETE")) {
        delete_cp(r, id);
    } else {
        method_not_allowed(r, "GET, HEAD, PATCH, DELETE, OPTIONS");
    }
}

static void core_entities(tg_admin_req_t *r, const char *id)
{
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res =
        tg_db_exec(r->db, &err, "SELECT 1 FROM control_planes WHERE id = $1::uuid", 1, params);
    if (!res) {
        db_failure(r, &err);
        return;
    }
    bool exists = PQntuples(res) == 1;
    PQclear(res);
    if (!exists)
        not_found(r);
    else if (!tg_admin_route_scoped(r, 4, id))
        tg_admin_reply_message(r, 404, "Not found");
}

int tg_admin_route_control_planes(tg_admin_req_t *r)
{
    if (r->nsegs < 2 || strcmp(r->segs[0], "v2") != 0 || strcmp(r->segs[1], "control-planes") != 0)
        return 0;
    if (r->nsegs == 2) {
        if (is(r, "GET"))
            list(r);
        else if (is(r, "POST"))
            create(r);
        else
            method_not_allowed(r, "GET, HEAD, POST, OPTIONS");
        return 1;
    }
    if (!valid_id(r, r->segs[2])) return 1;
    /* Lower case, as PostgreSQL prints it: the default control plane is recognised by its id. */
    char id[TG_UUID_STR_LEN + 1];
    for (size_t i = 0; i <= TG_UUID_STR_LEN; i++)
        id[i] = (char)tolower((unsigned char)r->segs[2][i]);
    if (r->nsegs == 3)
        one(r, id);
    else if (strcmp(r->segs[3], "core-entities") == 0)
        core_entities(r, id);
    else
        not_found(r);
    return 1;
}
