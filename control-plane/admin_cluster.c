/*
 * admin_cluster.c — the Admin API's clustering endpoints:
 *   /clustering/join-tokens        GET list (never secrets), POST create (the token is shown once)
 *   /clustering/join-tokens/{id}   GET, DELETE
 *   /clustering/data-planes        GET list, Kong's shape {"data": [...], "next": null}
 *   /clustering/data-planes/{id}   GET, DELETE (revokes: the row stays, marked, and every CP
 *                                  node is told at once with NOTIFY tollgate_cluster)
 *   /clustering/status             GET: this CP node's view of the sync (sync-protocol rule 9):
 *                                  every control plane's version and oldest retained version
 *                                  (from PostgreSQL), the data planes connected to this node with
 *                                  their lag, and this node's push counters (sync_hub.h)
 *
 * Tokens and data planes belong to the cluster's trust rather than to one configuration, so
 * these lists span every control plane; each record names its control_plane_id. A data plane
 * record carries Kong's field names (ip, version, config_hash, last_seen,
 * cert_details.expiry_timestamp, sync_status) next to our own columns, times in unix seconds.
 */
#include "admin_request.h"
#include "alloc.h"
#include "cluster_ca.h"
#include "crypto.h"
#include "error.h"
#include "join.h"
#include "sync_hub.h"

#include <openssl/crypto.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_USES 1000000

static bool is(const tg_admin_req_t *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

static void method_not_allowed(tg_admin_req_t *r, const char *allow)
{
    r->allow = allow;
    tg_admin_reply_message(r, 405, "Method not allowed");
}

static void reply_error(tg_admin_req_t *r, int rc)
{
    if (rc == -TG_ENOTFOUND)
        tg_admin_reply_message(r, 404, "Not found");
    else if (rc == -TG_EDBDOWN)
        tg_admin_reply_message(r, 503, "Service unavailable");
    else
        tg_admin_reply_message(r, 500, "An unexpected error occurred");
}

static void reply_list(tg_admin_req_t *r, json_t *data)
{
    tg_admin_reply(r, 200, json_pack("{s:o,s:n}", "data", data, "next"));
}

/* ---------------------------------------------------------------- join tokens: input */

/* ttl: seconds as a number, or a string "3600", "90m", "24h", "7d". */
static void read_ttl(json_t *v, int64_t *ttl, json_t *fields)
{
    if (!v || json_is_null(v)) return;
    int ok = 0;
    if (json_is_integer(v)) {
        *ttl = json_integer_value(v);
        ok = *ttl > 0 && *ttl <= TG_JOIN_MAX_TTL;
    } else if (json_is_string(v)) {
        ok = tg_join_parse_ttl(json_string_value(v), ttl) == 0;
    }
    if (!ok)
        json_object_set_new(fields, "ttl",
                            json_string("expected seconds (1 to 31536000) or a duration such "
                                        "as 90m, 24h or 7d"));
}

static void read_uses(json_t *v, int *uses, json_t *fields)
{
    if (!v || json_is_null(v)) return;
    long long n = -1;
    if (json_is_integer(v))
        n = json_integer_value(v);
    else if (json_is_string(v) && isdigit((unsigned char)*json_string_value(v))) {
        char *end;
        errno = 0;
        n = strtoll(json_string_value(v), &end, 10);
        if (*end || errno) n = -1;
    }
    if (n < 0 || n > MAX_USES)
        json_object_set_new(fields, "uses",
                            json_string("expected an integer from 0 (unlimited) to 1000000"));
    else
        *uses = (int)n;
}

static void read_string(json_t *args, const char *name, size_t max, const char **out,
                        json_t *fields)
{
    json_t *v = json_object_get(args, name);
    if (!v || json_is_null(v)) return;
    if (json_is_string(v) && json_string_length(v) <= max &&
        strlen(json_string_value(v)) == json_string_length(v))
        *out = json_string_value(v);
    else
        json_object_set_new(fields, name,
                            json_sprintf("expected a string of at most %zu characters", max));
}

typedef struct token_input {
    int64_t ttl;
    int uses;
    const char *description, *control_plane;
} token_input_t;

/* Fills `in` from the arguments; replies 400 (Kong's schema violation body) when invalid. */
static int read_token_input(tg_admin_req_t *r, json_t *args, token_input_t *in)
{
    json_t *fields = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v)
    {
        if (strcmp(key, "ttl") && strcmp(key, "uses") && strcmp(key, "description") &&
            strcmp(key, "control_plane"))
            json_object_set_new(fields, key, json_string("unknown field"));
    }
    read_ttl(json_object_get(args, "ttl"), &in->ttl, fields);
    read_uses(json_object_get(args, "uses"), &in->uses, fields);
    read_string(args, "description", TG_JOIN_DESCRIPTION_MAX, &in->description, fields);
    read_string(args, "control_plane", 256, &in->control_plane, fields);
    int rc = json_object_size(fields) ? -1 : 0;
    if (rc) tg_admin_reply(r, 400, tg_schema_error_body(fields));
    json_decref(fields);
    return rc;
}

/* ---------------------------------------------------------------- join tokens: endpoints */

static void unknown_control_plane(tg_admin_req_t *r, const char *name)
{
    json_t *fields = json_pack("{s:o}", "control_plane",
                               json_sprintf("no control plane with id or name '%s'", name));
    tg_admin_reply(r, 400, tg_schema_error_body(fields));
    json_decref(fields);
}

static void create_token(tg_admin_req_t *r)
{
    json_t *args = tg_admin_body_args(r, NULL, NULL);
    token_input_t in = {0};
    if (!args || read_token_input(r, args, &in) != 0) {
        json_decref(args);
        return;
    }
    tg_cluster_ca_t *ca = NULL;
    char token[24], hash[72], advertise[300];
    json_t *info = NULL;
    int rc = tg_cluster_ca_ensure(r->db, r->admin->keyring, &ca);
    if (!rc)
        rc = tg_join_token_create(r->db, in.control_plane, in.ttl, in.uses, in.description, token,
                                  &info);
    if (rc == -TG_ENOTFOUND)
        unknown_control_plane(r, in.control_plane);
    else if (rc)
        reply_error(r, rc);
    if (!rc) {
        tg_cluster_ca_spki_hash(ca, hash);
        tg_cluster_advertise(advertise, sizeof(advertise));
        json_object_set_new(info, "token", json_string(token));
        json_object_set_new(
            info, "join_command",
            json_sprintf("tollgate dp join %s --token %s --ca-hash %s", advertise, token, hash));
        tg_admin_reply(r, 201, info);
        OPENSSL_cleanse(token, sizeof(token));
    }
    tg_cluster_ca_free(ca);
    json_decref(args);
}

static void list_tokens(tg_admin_req_t *r)
{
    json_t *list;
    int rc = tg_join_token_list(r->db, NULL, &list);
    if (rc)
        reply_error(r, rc);
    else
        reply_list(r, list);
}

static void get_token(tg_admin_req_t *r, const char *id)
{
    json_t *list;
    int rc = tg_join_token_id_valid(id) ? tg_join_token_list(r->db, NULL, &list) : -TG_ENOTFOUND;
    if (rc) {
        reply_error(r, rc);
        return;
    }
    size_t i;
    json_t *t, *found = NULL;
    json_array_foreach(list, i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "id")), id) == 0) found = t;
    }
    if (found)
        tg_admin_reply(r, 200, json_incref(found));
    else
        reply_error(r, -TG_ENOTFOUND);
    json_decref(list);
}

static void tokens(tg_admin_req_t *r)
{
    if (r->nsegs == 2) {
        if (is(r, "GET"))
            list_tokens(r);
        else if (is(r, "POST"))
            create_token(r);
        else
            method_not_allowed(r, "GET, HEAD, POST, OPTIONS");
    } else if (is(r, "GET")) {
        get_token(r, r->segs[2]);
    } else if (is(r, "DELETE")) {
        int rc = tg_join_token_delete(r->db, r->segs[2]);
        if (rc)
            reply_error(r, rc);
        else
            tg_admin_reply(r, 204, NULL);
    } else {
        method_not_allowed(r, "GET, HEAD, DELETE, OPTIONS");
    }
}

/* ---------------------------------------------------------------- data planes */

#define DP_COLUMNS                                                                                 \
    "id::text, cp_id::text, hostname, address, tollgate_version, config_version, config_digest,"   \
    " sync_status, last_error, extract(epoch FROM last_seen)::bigint, cp_node, lag_versions,"      \
    " lag_seconds, token_id, cert_serial, extract(epoch FROM cert_expires_at)::bigint,"            \
    " extract(epoch FROM revoked_at)::bigint, extract(epoch FROM created_at)::bigint"

static json_t *col_str(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

static json_t *col_int(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null()
                                      : json_integer(strtoll(PQgetvalue(res, row, col), NULL, 10));
}

static json_t *col_real(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null()
                                      : json_real(strtod(PQgetvalue(res, row, col), NULL));
}

static json_t *dp_record(const PGresult *res, int i)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", col_str(res, i, 0));
    json_object_set_new(o, "control_plane_id", col_str(res, i, 1));
    json_object_set_new(o, "hostname", col_str(res, i, 2));
    json_object_set_new(o, "ip", col_str(res, i, 3));
    json_object_set_new(o, "address", col_str(res, i, 3));
    json_object_set_new(o, "version", col_str(res, i, 4));
    json_object_set_new(o, "tollgate_version", col_str(res, i, 4));
    json_object_set_new(o, "config_version", col_int(res, i, 5));
    json_object_set_new(o, "config_hash", col_str(res, i, 6));
    json_object_set_new(o, "config_digest", col_str(res, i, 6));
    json_object_set_new(o, "sync_status", col_str(res, i, 7));
    json_object_set_new(o, "last_error", col_str(res, i, 8));
    json_object_set_new(o, "last_seen", col_int(res, i, 9));
    json_object_set_new(o, "cp_node", col_str(res, i, 10));
    json_object_set_new(o, "lag_versions", col_int(res, i, 11));
    json_object_set_new(o, "lag_seconds", col_real(res, i, 12));
    json_object_set_new(o, "token_id", col_str(res, i, 13));
    json_object_set_new(o, "cert_serial", col_str(res, i, 14));
    json_object_set_new(o, "cert_expires_at", col_int(res, i, 15));
    json_object_set_new(o, "cert_details",
                        json_pack("{s:o}", "expiry_timestamp", col_int(res, i, 15)));
    json_object_set_new(o, "revoked_at", col_int(res, i, 16));
    json_object_set_new(o, "created_at", col_int(res, i, 17));
    return o;
}

static void list_data_planes(tg_admin_req_t *r)
{
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        r->db, &err, "SELECT " DP_COLUMNS " FROM data_planes ORDER BY created_at, id", 0, NULL);
    if (!res) {
        reply_error(r, err.code);
        return;
    }
    json_t *data = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(data, dp_record(res, i));
    PQclear(res);
    reply_list(r, data);
}

static void get_data_plane(tg_admin_req_t *r, const char *id)
{
    if (!tg_uuid_valid(tg_str_from(id))) {
        reply_error(r, -TG_ENOTFOUND);
        return;
    }
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        r->db, &err, "SELECT " DP_COLUMNS " FROM data_planes WHERE id = $1::uuid", 1, params);
    if (!res)
        reply_error(r, err.code);
    else if (PQntuples(res) == 0)
        reply_error(r, -TG_ENOTFOUND);
    else
        tg_admin_reply(r, 200, dp_record(res, 0));
    if (res) PQclear(res);
}

/*
 * One statement, so it is atomic whether or not it runs inside a group-commit batch:
 * NOTIFY is delivered at commit, so the sync servers only hear of committed revocations.
 * A second revocation keeps the first time and notifies again (harmless).
 */
static void revoke_data_plane(tg_admin_req_t *r, const char *id)
{
    if (!tg_uuid_valid(tg_str_from(id))) {
        reply_error(r, -TG_ENOTFOUND);
        return;
    }
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res =
        tg_db_exec(r->db, &err,
                   "WITH u AS (UPDATE data_planes SET revoked_at = coalesce(revoked_at, now())"
                   " WHERE id = $1::uuid RETURNING id)"
                   " SELECT pg_notify('tollgate_cluster', 'revoke:' || id::text) FROM u",
                   1, params);
    if (!res)
        reply_error(r, err.code);
    else if (PQntuples(res) == 0)
        reply_error(r, -TG_ENOTFOUND);
    else
        tg_admin_reply(r, 204, NULL);
    if (res) PQclear(res);
}

static void data_planes(tg_admin_req_t *r)
{
    if (r->nsegs == 2) {
        if (is(r, "GET"))
            list_data_planes(r);
        else
            method_not_allowed(r, "GET, HEAD, OPTIONS");
    } else if (is(r, "GET")) {
        get_data_plane(r, r->segs[2]);
    } else if (is(r, "DELETE")) {
        revoke_data_plane(r, r->segs[2]);
    } else {
        method_not_allowed(r, "GET, HEAD, DELETE, OPTIONS");
    }
}

/* ---------------------------------------------------------------- this node's sync status */

static json_t *pushes_json(tg_sync_hub_stats_t *st)
{
    json_t *o = json_object();
#define N(f) json_object_set_new(o, #f, json_integer((json_int_t)st->f))
    N(deltas_sent), N(snapshots_sent), N(snapshots_built), N(acks), N(nacks), N(bytes_sent);
    N(delta_bytes), N(snapshot_bytes), N(resyncs), N(store_retries), N(ack_timeouts);
    N(floods), N(sessions), N(purges), N(purged_versions), N(last_purge_unix);
#undef N
    json_object_set_new(o, "ack_latency_count", json_integer((json_int_t)st->ack_latency_count));
    json_object_set_new(o, "ack_latency_sum_seconds", json_real(st->ack_latency_sum_s));
    return o;
}

/* Each control plane's versions from PostgreSQL, with what this node has heard of. */
static json_t *control_planes_json(tg_admin_req_t *r, const json_t *seen, int *rc)
{
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err,
                               "SELECT cp.id::text, cp.name, cp.config_version, (SELECT"
                               " min(version) FROM config_versions v WHERE v.cp_id = cp.id),"
                               " cp.config_digest::text"
                               " FROM control_planes cp ORDER BY cp.created_at, cp.id",
                               0, NULL);
    if (!res) {
        *rc = err.code;
        return NULL;
    }
    json_t *out = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        long long latest = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        json_t *o = json_pack(
            "{s:s,s:s,s:I,s:I}", "id", PQgetvalue(res, i, 0), "name", PQgetvalue(res, i, 1),
            "config_version", (json_int_t)latest, "oldest_version",
            (json_int_t)(PQgetisnull(res, i, 3) ? latest + 1
                                                : strtoll(PQgetvalue(res, i, 3), NULL, 10)));
        size_t k;
        json_t *c;
        /* the digest the writes kept at config_version (rule 5); null while not known */
        char hex[TG_CONFIG_DIGEST_HEX_LEN + 1];
        bool known = tg_config_digest_decimal_hex(
            PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4), hex);
        json_object_set_new(o, "config_digest", known ? json_string(hex) : json_null());
        json_object_set_new(o, "latest_seen_here", json_null());
        json_array_foreach(seen, k, c)
        {
            if (strcmp(json_string_value(json_object_get(c, "id")), PQgetvalue(res, i, 0)) == 0)
                json_object_set(o, "latest_seen_here", json_object_get(c, "latest_version"));
        }
        json_array_append_new(out, o);
    }
    PQclear(res);
    return out;
}

static void cluster_status(tg_admin_req_t *r)
{
    if (!is(r, "GET")) {
        method_not_allowed(r, "GET, HEAD, OPTIONS");
        return;
    }
    json_t *view = tg_sync_hub_view();
    if (!view) { /* no cluster listener in this process */
        tg_admin_reply_message(r, 503, "the cluster listener is not running on this node");
        return;
    }
    int rc = 0;
    json_t *cps = control_planes_json(r, json_object_get(view, "control_planes"), &rc);
    if (!cps) {
        json_decref(view);
        reply_error(r, rc);
        return;
    }
    tg_sync_hub_stats_t st = {0};
    tg_sync_hub_current_stats(&st);
    json_object_set_new(view, "control_planes", cps);
    json_object_set_new(view, "pushes", pushes_json(&st));
    json_object_set_new(view, "connected_data_planes", json_integer((json_int_t)st.connected));
    tg_admin_reply(r, 200, view);
}

int tg_admin_route_cluster(tg_admin_req_t *r)
{
    if (r->nsegs < 2 || r->nsegs > 3 || strcmp(r->segs[0], "clustering") != 0) return 0;
    if (strcmp(r->segs[1], "status") == 0 && r->nsegs == 2)
        cluster_status(r);
    else if (strcmp(r->segs[1], "join-tokens") == 0)
        tokens(r);
    else if (strcmp(r->segs[1], "data-planes") == 0)
        data_planes(r);
    else
        return 0;
    return 1;
}
