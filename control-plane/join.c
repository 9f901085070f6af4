/*
 * join.c — see join.h.
 *
 * Token checks compare SHA-256 digests inside PostgreSQL. That comparison is not constant
 * time, but an attacker cannot steer a digest's bytes, so its timing tells nothing about the
 * secret; the token's id is public anyway.
 */
#include "join.h"
#include "alloc.h"
#include "config.h"
#include "crypto.h"
#include "error.h"
#include "form.h"
#include "log.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SECRET_LEN 16
#define HOSTNAME_MAX 253
#define NODE_SEEN_WINDOW "5 minutes"
#define BAD_TOKEN "invalid or expired join token"

static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";

/* ---------------------------------------------------------------- formats */

static bool all_token_chars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(alphabet, s[i])) return false;
    return true;
}

bool tg_join_token_id_valid(const char *id)
{
    return id && strlen(id) == TG_JOIN_TOKEN_ID_LEN && all_token_chars(id, TG_JOIN_TOKEN_ID_LEN);
}

bool tg_join_token_valid(const char *t)
{
    return t && strlen(t) == TG_JOIN_TOKEN_LEN && all_token_chars(t, TG_JOIN_TOKEN_ID_LEN) &&
           t[TG_JOIN_TOKEN_ID_LEN] == '.' &&
           all_token_chars(t + TG_JOIN_TOKEN_ID_LEN + 1, SECRET_LEN);
}

int tg_join_parse_ttl(const char *s, int64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return -TG_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    long long unit = 1;
    if (*end && !end[1])
        unit = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : *end == 'd' ? 86400 : 0;
    else if (*end)
        unit = 0;
    if (errno || unit == 0 || v <= 0 || v > TG_JOIN_MAX_TTL / unit) return -TG_EINVAL;
    *out = v * unit;
    return 0;
}

/* Uniform characters: bytes >= 252 (7 * 36) are redrawn so that `% 36` has no bias. */
static void random_chars(char *out, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t b[32];
        tg_random_bytes(b, sizeof(b));
        for (size_t j = 0; j < sizeof(b) && i < n; j++)
            if (b[j] < 252) out[i++] = alphabet[b[j] % 36];
        OPENSSL_cleanse(b, sizeof(b));
    }
}

static void new_token(char out[24])
{
    random_chars(out, TG_JOIN_TOKEN_ID_LEN);
    out[TG_JOIN_TOKEN_ID_LEN] = '.';
    random_chars(out + TG_JOIN_TOKEN_ID_LEN + 1, SECRET_LEN);
    out[TG_JOIN_TOKEN_LEN] = '\0';
}

/* "\x<hex>" of SHA-256(token): the bytea parameter the tables store. */
static void token_digest_param(const char *token, char out[2 * TG_SHA256_LEN + 3])
{
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(token, strlen(token), d);
    memcpy(out, "\\x", 2);
    tg_hex_encode(d, sizeof(d), out + 2);
}

/* ---------------------------------------------------------------- advertise */

static bool wildcard(const char *host)
{
    return !*host || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
           strcmp(host, "*") == 0;
}

void tg_cluster_advertise(char *out, size_t cap)
{
    const char *conf = tg_config_get(TG_CONF_cluster_advertise);
    if (*conf) {
        snprintf(out, cap, "%s", conf);
        return;
    }
    tg_listen_addr_t l[8];
    int n = tg_config_listeners(TG_CONF_cluster_listen, l, 8);
    int port = n > 0 ? l[0].port : 8005;
    char host[256] = "";
    if (n > 0 && !wildcard(l[0].host))
        snprintf(host, sizeof(host), "%s", l[0].host);
    else if (gethostname(host, sizeof(host) - 1) != 0 || !*host)
        snprintf(host, sizeof(host), "localhost");
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out, cap, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

/* ---------------------------------------------------------------- tokens */

int tg_join_resolve_cp(tg_db_t *db, const char *cp_id_or_name, char cp_id[37])
{
    const char *params[] = {cp_id_or_name ? cp_id_or_name : "default"};
    tg_db_err_t err;
    PGresult *res =
        tg_db_exec(db, &err,
                   "SELECT id::text FROM control_planes WHERE name = $1 OR id::text = lower($1)"
                   " ORDER BY name = $1 DESC LIMIT 1",
                   1, params);
    if (!res) return err.code;
    int rc = PQntuples(res) == 1 ? 0 : -TG_ENOTFOUND;
    if (rc == 0) snprintf(cp_id, 37, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

#define TOKEN_COLUMNS                                                                              \
    "id, cp_id::text, extract(epoch FROM expires_at)::bigint, uses_left, description,"             \
    " extract(epoch FROM created_at)::bigint, expires_at <= now()"

static json_t *nullable_int(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null()
                                      : json_integer(strtoll(PQgetvalue(res, row, col), NULL, 10));
}

static json_t *nullable_str(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

static json_t *token_record(const PGresult *res, int row)
{
    return json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:b}", "id", PQgetvalue(res, row, 0),
                     "control_plane_id", PQgetvalue(res, row, 1), "expires_at",
                     nullable_int(res, row, 2), "uses_left", nullable_int(res, row, 3),
                     "description", nullable_str(res, row, 4), "created_at",
                     nullable_int(res, row, 5), "expired", *PQgetvalue(res, row, 6) == 't');
}

/* Inserts one token; 1 when its random id was already taken (the caller draws again). */
static int insert_token(tg_db_t *db, const char *cp_id, int64_t ttl_s, int uses,
                        const char *description, char token[24], json_t **info_out)
{
    new_token(token);
    char id[TG_JOIN_TOKEN_ID_LEN + 1], digest[2 * TG_SHA256_LEN + 3], ttl[24], uses_s[16];
    memcpy(id, token, TG_JOIN_TOKEN_ID_LEN);
    id[TG_JOIN_TOKEN_ID_LEN] = '\0';
    token_digest_param(token, digest);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_s);
    snprintf(uses_s, sizeof(uses_s), "%d", uses);
    const char *params[] = {id, cp_id, digest, ttl, uses > 0 ? uses_s : NULL, description};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        db, &err,
        "INSERT INTO join_tokens (id, cp_id, secret_digest, expires_at, uses_left, description)"
        " VALUES ($1, $2::uuid, $3::bytea, now() + $4::bigint * interval '1 second',"
        " $5::int, $6) ON CONFLICT (id) DO NOTHING RETURNING " TOKEN_COLUMNS,
        6, params);
    if (!res) return err.code;
    int rc = PQntuples(res) == 1 ? 0 : 1;
    if (rc == 0 && info_out) {
        *info_out = token_record(res, 0);
        json_object_del(*info_out, "expired");
    }
    PQclear(res);
    return rc;
}

int tg_join_token_create(tg_db_t *db, const char *cp_id_or_name, int64_t ttl_s, int uses,
                         const char *description, char token_out[24], json_t **info_out)
{
    if (info_out) *info_out = NULL;
    if (ttl_s < 0 || ttl_s > TG_JOIN_MAX_TTL || uses < 0 ||
        (description && strlen(description) > TG_JOIN_DESCRIPTION_MAX))
        return -TG_EINVAL;
    char cp_id[37];
    int rc = tg_join_resolve_cp(db, cp_id_or_name, cp_id);
    /* 36^6 ids: a collision is rare, three in a row means something else is wrong. */
    for (int attempt = 0; rc == 0 && attempt < 3; attempt++) {
        rc = insert_token(db, cp_id, ttl_s ? ttl_s : TG_JOIN_DEFAULT_TTL, uses, description,
                          token_out, info_out);
        if (rc != 1) break;
        rc = attempt == 2 ? -TG_EEXISTS : 0;
    }
    if (rc != 0) OPENSSL_cleanse(token_out, 24);
    return rc;
}

int tg_join_token_list(tg_db_t *db, const char *cp_id, json_t **out)
{
    *out = NULL;
    const char *params[] = {cp_id};
    tg_db_err_t err;
    PGresult *res =
        tg_db_exec(db, &err,
                   "SELECT " TOKEN_COLUMNS " FROM join_tokens"
                   " WHERE $1::uuid IS NULL OR cp_id = $1::uuid ORDER BY created_at, id",
                   1, params);
    if (!res) return err.code;
    *out = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(*out, token_record(res, i));
    PQclear(res);
    return 0;
}

int tg_join_token_delete(tg_db_t *db, const char *id)
{
    if (!tg_join_token_id_valid(id)) return -TG_ENOTFOUND;
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err, "DELETE FROM join_tokens WHERE id = $1", 1, params);
    if (!res) return err.code;
    int n = atoi(PQcmdTuples(res));
    PQclear(res);
    return n ? 0 : -TG_ENOTFOUND;
}

/* ---------------------------------------------------------------- transactions */

/*
 * A transaction of our own, or, inside the caller's (a group-commit batch, say), a savepoint:
 * either way a failure after the token was consumed undoes the consumption.
 */
static int begin(tg_db_t *db, bool *own)
{
    tg_db_err_t err;
    if (tg_db_ensure(db) != 0) return -TG_EDBDOWN;
    *own = !db->batch && PQtransactionStatus(db->conn) == PQTRANS_IDLE;
    return tg_db_run(db, &err, *own ? "BEGIN" : "SAVEPOINT tg_join", 0, NULL);
}

static int finish(tg_db_t *db, bool own, int rc)
{
    tg_db_err_t err;
    if (!own) {
        int undo = tg_db_run(
            db, &err, rc ? "ROLLBACK TO SAVEPOINT tg_join" : "RELEASE SAVEPOINT tg_join", 0, NULL);
        return rc ? rc : undo;
    }
    if (rc != 0) {
        if (PQtransactionStatus(db->conn) != PQTRANS_IDLE) tg_db_run(db, &err, "ROLLBACK", 0, NULL);
        return rc;
    }
    PGresult *res = tg_db_exec(db, &err, "COMMIT", 0, NULL);
    if (!res) return err.code;
    /* A transaction that had failed answers COMMIT with ROLLBACK. */
    rc = strcmp(PQcmdStatus(res), "COMMIT") == 0 ? 0 : -TG_EDB;
    PQclear(res);
    return rc;
}

/* ---------------------------------------------------------------- the join endpoints */

static void reply(tg_join_http_resp_t *resp, int status, json_t *body)
{
    resp->status = status;
    free(resp->body);
    resp->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
}

static void reply_message(tg_join_http_resp_t *resp, int status, const char *message)
{
    reply(resp, status, json_pack("{s:s}", "message", message));
}

static void reply_db_error(tg_join_http_resp_t *resp, int rc)
{
    if (rc == -TG_EDBDOWN)
        reply_message(resp, 503, "Service unavailable");
    else
        reply_message(resp, 500, "An unexpected error occurred");
}

static json_t *endpoint_list(tg_db_t *db, const char *const *endpoints, size_t n)
{
    if (n == 0) return tg_cluster_nodes_endpoints(db);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_string(endpoints[i]));
    return arr;
}

/* The token_id query argument, or NULL when absent or malformed. */
static char *query_token_id(const char *query)
{
    json_t *args = NULL;
    if (!query || tg_form_parse_urlencoded(query, strlen(query), &args) != 0) return NULL;
    const char *id = json_string_value(json_object_get(args, "token_id"));
    char *copy = tg_join_token_id_valid(id) ? tg_strdup(id) : NULL;
    json_decref(args);
    return copy;
}

/* The live token's control plane and stored digest; -TG_ENOTFOUND when it cannot be used. */
static int live_token(tg_db_t *db, const char *id, char cp_id[37], uint8_t digest[TG_SHA256_LEN])
{
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err,
                               "SELECT cp_id::text, secret_digest FROM join_tokens WHERE id = $1"
                               " AND expires_at > now() AND (uses_left IS NULL OR uses_left > 0)",
                               1, params);
    if (!res) return err.code;
    int rc = -TG_ENOTFOUND;
    if (PQntuples(res) == 1) {
        size_t len = 0;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &len);
        if (raw && len == TG_SHA256_LEN) {
            memcpy(digest, raw, TG_SHA256_LEN);
            snprintf(cp_id, 37, "%s", PQgetvalue(res, 0, 0));
            rc = 0;
        }
        PQfreemem(raw);
    }
    PQclear(res);
    return rc;
}

/* "<id>:<hex HMAC-SHA256(key = SHA-256(token), body)>" */
static void sign_body(const char *id, const uint8_t key[TG_SHA256_LEN], const char *body,
                      char out[160])
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, TG_SHA256_LEN, (const unsigned char *)body, strlen(body), mac, &len);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    tg_hex_encode(mac, len, hex);
    snprintf(out, 160, "%s:%s", id, hex);
}

static void cluster_info(tg_db_t *db, const tg_cluster_ca_t *ca, const char *const *endpoints,
                         size_t n, const tg_join_http_req_t *req, tg_join_http_resp_t *resp)
{
    char *id = query_token_id(req->query), cp_id[37];
    uint8_t key[TG_SHA256_LEN];
    int rc = id ? live_token(db, id, cp_id, key) : -TG_ENOTFOUND;
    if (rc == -TG_ENOTFOUND)
        reply_message(resp, 401, BAD_TOKEN);
    else if (rc)
        reply_db_error(resp, rc);
    if (rc) {
        free(id);
        return;
    }
    char hash[72];
    tg_cluster_ca_spki_hash(ca, hash);
    reply(resp, 200,
          json_pack("{s:s,s:s,s:o,s:s}", "ca_certificate", tg_cluster_ca_cert_pem(ca), "ca_hash",
                    hash, "endpoints", endpoint_list(db, endpoints, n), "control_plane_id", cp_id));
    sign_body(id, key, resp->body, resp->signature);
    OPENSSL_cleanse(key, sizeof(key));
    free(id);
}

/* The bearer token when it is well-formed, else NULL. */
static char *bearer_token(const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    return tg_join_token_valid(t) ? tg_strdup(t) : NULL;
}

typedef struct enrol {
    const char *token, *csr, *hostname, *peer;
    char cp_id[37], node_id[37], serial[41];
    char *cert;
    int64_t not_after;
    char err[256];
} enrol_t;

/* Consumes one use of the token: 0 with e->cp_id, -TG_ENOTFOUND when it cannot be used. */
static int consume(tg_db_t *db, enrol_t *e)
{
    char id[TG_JOIN_TOKEN_ID_LEN + 1], digest[2 * TG_SHA256_LEN + 3];
    memcpy(id, e->token, TG_JOIN_TOKEN_ID_LEN);
    id[TG_JOIN_TOKEN_ID_LEN] = '\0';
    token_digest_param(e->token, digest);
    const char *params[] = {id, digest};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err,
                               "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = $1"
                               " AND secret_digest = $2::bytea AND expires_at > now()"
                               " AND (uses_left IS NULL OR uses_left > 0) RETURNING cp_id::text",
                               2, params);
    if (!res) return err.code;
    int rc = PQntuples(res) == 1 ? 0 : -TG_ENOTFOUND;
    if (rc == 0) snprintf(e->cp_id, sizeof(e->cp_id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

static int record_data_plane(tg_db_t *db, const enrol_t *e)
{
    char id[TG_JOIN_TOKEN_ID_LEN + 1], not_after[24];
    memcpy(id, e->token, TG_JOIN_TOKEN_ID_LEN);
    id[TG_JOIN_TOKEN_ID_LEN] = '\0';
    snprintf(not_after, sizeof(not_after), "%lld", (long long)e->not_after);
    const char *params[] = {e->node_id, e->cp_id, e->hostname, id, e->serial, not_after, e->peer};
    tg_db_err_t err;
    return tg_db_run(db, &err,
                     "INSERT INTO data_planes (id, cp_id, hostname, token_id, cert_serial, "
                     "cert_expires_at, address)"
                     " VALUES ($1::uuid, $2::uuid, $3, $4, $5, to_timestamp($6::bigint), $7)",
                     7, params);
}

static int dp_cert_lifetime(void)
{
    long v;
    if (tg_config_int(TG_CONF_cluster_dp_cert_lifetime, 60, 3650L * 86400, &v) == 0) return (int)v;
    TG_LOGW("cluster", "cluster_dp_cert_lifetime must be 60 to 315360000 seconds; using 7 days");
    return 7 * 86400;
}

/* One transaction: consume, sign, record. Returns 0, -TG_ENOTFOUND (token), -TG_EINVAL (CSR). */
static int enrol(tg_db_t *db, const tg_cluster_ca_t *ca, enrol_t *e)
{
    bool own = false;
    int rc = begin(db, &own);
    if (!rc) rc = consume(db, e);
    if (!rc) {
        tg_uuid_v4(e->node_id);
        rc = tg_cluster_ca_sign_csr(ca, e->csr, e->node_id, e->cp_id, dp_cert_lifetime(), &e->cert,
                                    e->serial, &e->not_after, e->err, sizeof(e->err));
    }
    if (!rc) rc = record_data_plane(db, e);
    rc = finish(db, own, rc);
    if (rc) {
        free(e->cert);
        e->cert = NULL;
    }
    return rc;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return false;
    return true;
}

/* Reads {"csr": PEM, "hostname": "..."}; replies 400 and returns NULL when unacceptable. */
static json_t *csr_body(const tg_join_http_req_t *req, tg_join_http_resp_t *resp)
{
    json_error_t jerr;
    json_t *body =
        req->body ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    const char *msg = NULL;
    json_t *hostname = json_object_get(body, "hostname");
    if (!json_is_object(body))
        msg = "Cannot parse JSON body";
    else if (!json_is_string(json_object_get(body, "csr")))
        msg = "csr: required (a PEM certificate request)";
    else if (hostname && !json_is_null(hostname) &&
             (!json_is_string(hostname) || json_string_length(hostname) > HOSTNAME_MAX ||
              !printable(json_string_value(hostname))))
        msg = "hostname: must be a string of at most 253 printable characters";
    if (!msg) return body;
    reply_message(resp, 400, msg);
    json_decref(body);
    return NULL;
}

static void join_csr(tg_db_t *db, const tg_cluster_ca_t *ca, const char *const *endpoints, size_t n,
                     const tg_join_http_req_t *req, tg_join_http_resp_t *resp)
{
    char *token = bearer_token(req->authorization);
    if (!token) { /* the CSR itself is only parsed once the token has been consumed */
        reply_message(resp, 401, BAD_TOKEN);
        return;
    }
    json_t *body = csr_body(req, resp);
    enrol_t e = {.token = token, .peer = req->peer};
    int rc = body ? 0 : -1;
    if (body) {
        e.csr = json_string_value(json_object_get(body, "csr"));
        e.hostname = json_string_value(json_object_get(body, "hostname"));
        rc = enrol(db, ca, &e);
        if (rc == -TG_ENOTFOUND)
            reply_message(resp, 401, BAD_TOKEN);
        else if (rc == -TG_EINVAL)
            reply_message(resp, 400, e.err);
        else if (rc)
            reply_db_error(resp, rc);
    }
    if (rc == 0) {
        reply(resp, 201,
              json_pack("{s:s,s:s,s:s,s:s,s:o,s:I}", "node_id", e.node_id, "control_plane_id",
                        e.cp_id, "certificate", e.cert, "ca_certificate",
                        tg_cluster_ca_cert_pem(ca), "endpoints", endpoint_list(db, endpoints, n),
                        "expires_at", (json_int_t)e.not_after));
        TG_LOGN("cluster", "data plane %s (%s) joined control plane %s with token %.6s", e.node_id,
                e.hostname ? e.hostname : "no hostname", e.cp_id, token);
    }
    free(e.cert);
    json_decref(body);
    OPENSSL_cleanse(token, strlen(token));
    free(token);
}

void tg_join_handle(tg_db_t *db, const tg_cluster_ca_t *ca, const char *const *endpoints,
                    size_t nendpoints, const tg_join_http_req_t *req, tg_join_http_resp_t *resp)
{
    resp->status = 0;
    resp->body = NULL;
    resp->signature[0] = '\0';
    const char *path = req->path ? req->path : "";
    const char *method = req->method ? req->method : "";
    bool info = strcmp(path, "/v1/join/cluster-info") == 0, csr = strcmp(path, "/v1/join/csr") == 0;
    if (!info && !csr)
        reply_message(resp, 404, "Not found");
    else if (info && strcmp(method, "GET") != 0)
        reply_message(resp, 405, "Method not allowed");
    else if (csr && strcmp(method, "POST") != 0)
        reply_message(resp, 405, "Method not allowed");
    else if (info)
        cluster_info(db, ca, endpoints, nendpoints, req, resp);
    else
        join_csr(db, ca, endpoints, nendpoints, req, resp);
}

/* ---------------------------------------------------------------- enrolled data planes */

/* 1 revoked, 0 active with its serial in serial[41], -TG_ENOTFOUND, or a db error. */
static int dp_state(tg_db_t *db, const char *node_id, const char *cp_id, bool lock, char serial[41])
{
    if (!node_id || !cp_id || !tg_uuid_valid(tg_str_from(node_id)) ||
        !tg_uuid_valid(tg_str_from(cp_id)))
        return -TG_ENOTFOUND;
    const char *params[] = {node_id, cp_id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        db, &err,
        lock ? "SELECT revoked_at IS NOT NULL, coalesce(cert_serial, '') FROM data_planes"
               " WHERE id = $1::uuid AND cp_id = $2::uuid FOR UPDATE"
             : "SELECT revoked_at IS NOT NULL, coalesce(cert_serial, '') FROM data_planes"
               " WHERE id = $1::uuid AND cp_id = $2::uuid",
        2, params);
    if (!res) return err.code;
    int rc = -TG_ENOTFOUND;
    if (PQntuples(res) == 1) {
        rc = *PQgetvalue(res, 0, 0) == 't' ? 1 : 0;
        snprintf(serial, 41, "%s", PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return rc;
}

int tg_join_check_data_plane(tg_db_t *db, const char *node_id, const char *cp_id,
                             const char *cert_serial)
{
    char serial[41];
    int rc = dp_state(db, node_id, cp_id, false, serial);
    if (rc < 0) return rc;
    if (rc == 1 || !cert_serial || strcasecmp(serial, cert_serial) != 0) return -TG_EPERM;
    return 0;
}

static int store_renewal(tg_db_t *db, const char *node_id, const char *serial, int64_t not_after)
{
    char na[24];
    snprintf(na, sizeof(na), "%lld", (long long)not_after);
    const char *params[] = {node_id, serial, na};
    tg_db_err_t err;
    return tg_db_run(
        db, &err,
        "UPDATE data_planes SET cert_serial = $2, cert_expires_at = to_timestamp($3::bigint)"
        " WHERE id = $1::uuid",
        3, params);
}

int tg_join_renew(tg_db_t *db, const tg_cluster_ca_t *ca, const char *node_id, const char *cp_id,
                  const char *csr_pem, char **cert_pem, char *err, size_t errlen)
{
    *cert_pem = NULL;
    bool own = false;
    char serial[41];
    int64_t not_after = 0;
    int rc = begin(db, &own);
    if (!rc)
        rc = dp_state(db, node_id, cp_id, true, serial); /* locked against a concurrent revoke */
    if (rc == 1) rc = -TG_EPERM;
    if (!rc)
        rc = tg_cluster_ca_sign_csr(ca, csr_pem, node_id, cp_id, dp_cert_lifetime(), cert_pem,
                                    serial, &not_after, err, errlen);
    if (!rc) rc = store_renewal(db, node_id, serial, not_after);
    rc = finish(db, own, rc);
    if (rc) {
        free(*cert_pem);
        *cert_pem = NULL;
    } else {
        TG_LOGI("cluster", "renewed the certificate of data plane %s (serial %s)", node_id, serial);
    }
    return rc;
}

/* ---------------------------------------------------------------- CP nodes */

int tg_cluster_nodes_register(tg_db_t *db, const char *node_id, const char *endpoint,
                              const char *hostname)
{
    if (!node_id || !tg_uuid_valid(tg_str_from(node_id)) || !endpoint || !*endpoint)
        return -TG_EINVAL;
    const char *params[] = {node_id, endpoint, hostname};
    tg_db_err_t err;
    return tg_db_run(
        db, &err,
        "INSERT INTO cluster_nodes (node_id, endpoint, hostname) VALUES ($1::uuid, $2, $3)"
        " ON CONFLICT (node_id) DO UPDATE SET endpoint = EXCLUDED.endpoint,"
        " hostname = EXCLUDED.hostname, started_at = now(), last_seen = now()",
        3, params);
}

int tg_cluster_nodes_touch(tg_db_t *db, const char *node_id)
{
    if (!node_id || !tg_uuid_valid(tg_str_from(node_id))) return -TG_EINVAL;
    const char *params[] = {node_id};
    tg_db_err_t err;
    return tg_db_run(
        db, &err, "UPDATE cluster_nodes SET last_seen = now() WHERE node_id = $1::uuid", 1, params);
}

static void add_unique(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0) return;
    }
    json_array_append_new(arr, json_string(s));
}

json_t *tg_cluster_nodes_endpoints(tg_db_t *db)
{
    char self[300];
    tg_cluster_advertise(self, sizeof(self));
    json_t *arr = json_array();
    add_unique(arr, self);
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        db, &err,
        "SELECT endpoint FROM cluster_nodes WHERE last_seen > now() - interval '" NODE_SEEN_WINDOW
        "' ORDER BY started_at, endpoint",
        0, NULL);
    for (int i = 0; res && i < PQntuples(res); i++)
        add_unique(arr, PQgetvalue(res, i, 0));
    if (res) PQclear(res);
    return arr;
}
