/*
 * test_join.c — join tokens and enrolment against a real PostgreSQL: the group setup starts
 * an embedded server in a fresh temporary prefix (the tests skip when no PostgreSQL binaries
 * are installed), applies the built-in migrations and creates the cluster CA. The join
 * endpoints are driven through tg_join_handle() directly, with no listener.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cluster_ca.h"
#include "config.h"
#include "crypto.h"
#include "dp_join.h"
#include "error.h"
#include "join.h"
#include "log.h"
#include "migrate.h"
#include "pg_embedded.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <ctype.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char prefix[PATH_MAX];
static char conninfo[1024];
static tg_pg_embedded_t *pg;
static tg_db_t db;
static tg_cluster_ca_t *ca;
static const uint8_t keyring[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

static int group_setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(prefix, sizeof(prefix), "%s/tg-join-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(prefix)) return -1;
    chmod(prefix, 0711); /* the server may run as an unprivileged user */
    tg_log_set_level(TG_LOG_WARN);
    tg_config_set("cluster_advertise", "cp.test:8005");
    char err[512];
    int rc =
        tg_pg_embedded_start(prefix, "tollgate", &pg, conninfo, sizeof(conninfo), err, sizeof(err));
    if (rc == -TG_ENOTFOUND) { /* no PostgreSQL installed: the tests that need it skip */
        pg = NULL;
        return 0;
    }
    if (rc != 0) {
        print_error("tg_pg_embedded_start: %s\n", err);
        return -1;
    }
    size_t n;
    const tg_migration_t *m = tg_migrate_builtin(&n);
    if (tg_db_open(&db, conninfo, err, sizeof(err)) != 0 ||
        tg_migrate_apply(db.conn, m, n, err, sizeof(err)) < 0) {
        print_error("database: %s\n", err);
        return -1;
    }
    return tg_cluster_ca_ensure(&db, keyring, &ca) == 0 ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_teardown(void **state)
{
    tg_cluster_ca_free(ca);
    tg_db_close(&db);
    tg_pg_embedded_stop(pg);
    return nftw(prefix, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- helpers */

static void sql(const char *stmt)
{
    PGresult *r = PQexec(db.conn, stmt);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", stmt, PQresultErrorMessage(r));
    PQclear(r);
}

/* The first column of the first row as text (caller frees), or NULL when there is no row or it is
 * NULL. */
__attribute__((format(printf, 1, 2))) static char *sql_value(const char *fmt, ...)
{
    char q[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(db.conn, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) fail_msg("%s: %s", q, PQresultErrorMessage(r));
    char *v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

static void token(int uses, char out[24])
{
    assert_int_equal(tg_join_token_create(&db, NULL, 0, uses, "unit test", out, NULL), 0);
}

static tg_join_http_resp_t call(const char *method, const char *path, const char *query,
                                const char *auth, const char *body)
{
    tg_join_http_req_t req = {.method = method,
                              .path = path,
                              .query = query,
                              .authorization = auth,
                              .body = body,
                              .body_len = body ? strlen(body) : 0,
                              .peer = "192.0.2.7"};
    tg_join_http_resp_t resp;
    tg_join_handle(&db, ca, NULL, 0, &req, &resp);
    assert_non_null(resp.body);
    return resp;
}

static json_t *body_json(const tg_join_http_resp_t *r)
{
    json_t *j = json_loads(r->body, 0, NULL);
    assert_non_null(j);
    return j;
}

static void expect_message(tg_join_http_resp_t r, int status, const char *message)
{
    assert_int_equal(r.status, status);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "message")), message);
    json_decref(j);
    free(r.body);
}

static char *csr_json(const char *hostname)
{
    char *key, *csr;
    assert_int_equal(tg_dp_join_new_key_csr("unit", &key, &csr), 0);
    json_t *j = json_pack("{s:s,s:s}", "csr", csr, "hostname", hostname);
    char *s = json_dumps(j, 0);
    json_decref(j);
    free(key);
    free(csr);
    return s;
}

static char *bearer(const char *t)
{
    static char buf[64];
    snprintf(buf, sizeof(buf), "Bearer %s", t);
    return buf;
}

static long uses_left(const char *tok)
{
    char *v = sql_value("SELECT uses_left FROM join_tokens WHERE id = '%.6s'", tok);
    long n = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return n;
}

/* Enrols one DP; returns the 201 answer's JSON. */
static json_t *enrol_one(const char *hostname)
{
    char t[24], *body = csr_json(hostname);
    token(1, t);
    tg_join_http_resp_t r = call("POST", "/v1/join/csr", NULL, bearer(t), body);
    assert_int_equal(r.status, 201);
    json_t *j = body_json(&r);
    free(r.body);
    free(body);
    return j;
}

static void serial_of(const char *cert_pem, char out[41])
{
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    assert_non_null(x);
    assert_int_equal(tg_cluster_cert_serial(x, out), 0);
    X509_free(x);
    BIO_free(b);
}

/* ---------------------------------------------------------------- formats (no database) */

static void test_formats(void **state)
{
    assert_true(tg_join_token_valid("abcdef.0123456789abcdef"));
    assert_false(tg_join_token_valid("ABCDEF.0123456789abcdef"));
    assert_false(tg_join_token_valid("abcdef-0123456789abcdef"));
    assert_false(tg_join_token_valid("abcdef.0123456789abcde"));
    assert_false(tg_join_token_valid("abcdef.0123456789abcdef0"));
    assert_false(tg_join_token_valid(NULL));
    assert_true(tg_join_token_id_valid("a1b2c3"));
    assert_false(tg_join_token_id_valid("a1b2c"));
    assert_false(tg_join_token_id_valid("a1b2c'"));
    int64_t t;
    assert_int_equal(tg_join_parse_ttl("3600", &t), 0);
    assert_int_equal(t, 3600);
    assert_int_equal(tg_join_parse_ttl("90m", &t), 0);
    assert_int_equal(t, 5400);
    assert_int_equal(tg_join_parse_ttl("24h", &t), 0);
    assert_int_equal(t, 86400);
    assert_int_equal(tg_join_parse_ttl("7d", &t), 0);
    assert_int_equal(t, 7 * 86400);
    assert_int_equal(tg_join_parse_ttl("30s", &t), 0);
    const char *bad[] = {
        "", "0", "-5", "h", "10x", "10hh", "1.5h", " 10", "366d", "99999999999999999999", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(tg_join_parse_ttl(bad[i], &t), -TG_EINVAL);
    char adv[300];
    tg_cluster_advertise(adv, sizeof(adv));
    assert_string_equal(adv, "cp.test:8005");
}

/* ---------------------------------------------------------------- tokens */

static void test_token_stored_hashed(void **state)
{
    if (!pg) skip();
    char t[24];
    json_t *info;
    assert_int_equal(tg_join_token_create(&db, "default", 3600, 3, "edge nodes", t, &info), 0);
    assert_true(tg_join_token_valid(t));
    assert_memory_equal(json_string_value(json_object_get(info, "id")), t, 6);
    assert_int_equal(json_integer_value(json_object_get(info, "uses_left")), 3);
    assert_string_equal(json_string_value(json_object_get(info, "description")), "edge nodes");
    json_int_t expires = json_integer_value(json_object_get(info, "expires_at"));
    json_int_t created = json_integer_value(json_object_get(info, "created_at"));
    assert_in_range(expires - created, 3599, 3601);
    assert_null(json_object_get(info, "token"));

    uint8_t d[32];
    char hex[65];
    tg_sha256(t, strlen(t), d);
    tg_hex_encode(d, 32, hex);
    char *stored =
        sql_value("SELECT encode(secret_digest, 'hex') FROM join_tokens WHERE id = '%.6s'", t);
    assert_string_equal(stored, hex);
    free(stored);
    /* the secret half appears nowhere in the row */
    char *row = sql_value("SELECT row_to_json(j)::text FROM join_tokens j WHERE id = '%.6s'", t);
    assert_null(strstr(row, t + 7));
    free(row);
    json_decref(info);

    /* unlimited, and addressed by id */
    char *cp = sql_value("SELECT id FROM control_planes WHERE name = 'default'");
    assert_int_equal(tg_join_token_create(&db, cp, 0, 0, NULL, t, &info), 0);
    assert_true(json_is_null(json_object_get(info, "uses_left")));
    assert_string_equal(json_string_value(json_object_get(info, "control_plane_id")), cp);
    free(cp);
    json_decref(info);
}

static void test_token_create_refuses(void **state)
{
    if (!pg) skip();
    char t[24];
    assert_int_equal(tg_join_token_create(&db, NULL, -1, 0, NULL, t, NULL), -TG_EINVAL);
    assert_int_equal(tg_join_token_create(&db, NULL, TG_JOIN_MAX_TTL + 1, 0, NULL, t, NULL),
                     -TG_EINVAL);
    assert_int_equal(tg_join_token_create(&db, NULL, 0, -1, NULL, t, NULL), -TG_EINVAL);
    assert_int_equal(tg_join_token_create(&db, "no-such-cp", 0, 0, NULL, t, NULL), -TG_ENOTFOUND);
    assert_int_equal(
        tg_join_token_create(&db, "00000000-0000-4000-8000-000000000000", 0, 0, NULL, t, NULL),
        -TG_ENOTFOUND);
}

static void test_token_list_and_delete(void **state)
{
    if (!pg) skip();
    char t[24], id[7];
    token(0, t);
    snprintf(id, sizeof(id), "%.6s", t);
    json_t *list;
    assert_int_equal(tg_join_token_list(&db, NULL, &list), 0);
    size_t i;
    json_t *v;
    bool found = false;
    json_array_foreach(list, i, v)
    {
        assert_null(json_object_get(v, "token"));
        if (strcmp(json_string_value(json_object_get(v, "id")), id) == 0) found = true;
    }
    assert_true(found);
    json_decref(list);
    assert_int_equal(tg_join_token_delete(&db, id), 0);
    assert_int_equal(tg_join_token_delete(&db, id), -TG_ENOTFOUND);
    assert_int_equal(tg_join_token_delete(&db, "bad id"), -TG_ENOTFOUND);
}

/* ---------------------------------------------------------------- cluster-info */

static void test_cluster_info_is_signed(void **state)
{
    if (!pg) skip();
    char t[24], q[32];
    token(1, t);
    snprintf(q, sizeof(q), "token_id=%.6s", t);
    tg_join_http_resp_t r = call("GET", "/v1/join/cluster-info", q, NULL, NULL);
    assert_int_equal(r.status, 200);

    /* what the DP does: HMAC-SHA256 over the exact body, keyed with SHA-256 of its token */
    uint8_t key[32], mac[32];
    unsigned int len;
    tg_sha256(t, strlen(t), key);
    HMAC(EVP_sha256(), key, 32, (const unsigned char *)r.body, strlen(r.body), mac, &len);
    char expect[80], hex[65];
    tg_hex_encode(mac, 32, hex);
    snprintf(expect, sizeof(expect), "%.6s:%s", t, hex);
    assert_string_equal(r.signature, expect);

    json_t *j = body_json(&r);
    char hash[72];
    tg_cluster_ca_spki_hash(ca, hash);
    assert_string_equal(json_string_value(json_object_get(j, "ca_hash")), hash);
    assert_string_equal(json_string_value(json_object_get(j, "ca_certificate")),
                        tg_cluster_ca_cert_pem(ca));
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "endpoints"), 0)),
                        "cp.test:8005");
    assert_true(
        tg_uuid_valid(tg_str_from(json_string_value(json_object_get(j, "control_plane_id")))));
    json_decref(j);
    free(r.body);
    /* reading cluster-info does not use the token up */
    assert_int_equal(uses_left(t), 1);

    /* endpoints given by the caller are passed on as they are */
    const char *eps[] = {"a:1", "b:2"};
    tg_join_http_req_t req = {.method = "GET", .path = "/v1/join/cluster-info", .query = q};
    tg_join_handle(&db, ca, eps, 2, &req, &r);
    j = body_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "endpoints")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "endpoints"), 1)),
                        "b:2");
    json_decref(j);
    free(r.body);
}

static void test_cluster_info_refuses_bad_tokens(void **state)
{
    if (!pg) skip();
    const char *msg = "invalid or expired join token";
    expect_message(call("GET", "/v1/join/cluster-info", "token_id=zzzzzz", NULL, NULL), 401, msg);
    expect_message(call("GET", "/v1/join/cluster-info", NULL, NULL, NULL), 401, msg);
    expect_message(call("GET", "/v1/join/cluster-info", "token_id=%27%3B--", NULL, NULL), 401, msg);
    expect_message(call("GET", "/v1/join/cluster-info", "token_id=%zz", NULL, NULL), 401, msg);

    char expired[24], used[24], q[32];
    token(1, expired);
    token(1, used);
    char stmt[160];
    snprintf(stmt, sizeof(stmt),
             "UPDATE join_tokens SET expires_at = now() - interval '1 second' WHERE id = '%.6s'",
             expired);
    sql(stmt);
    snprintf(stmt, sizeof(stmt), "UPDATE join_tokens SET uses_left = 0 WHERE id = '%.6s'", used);
    sql(stmt);
    snprintf(q, sizeof(q), "token_id=%.6s", expired);
    tg_join_http_resp_t r = call("GET", "/v1/join/cluster-info", q, NULL, NULL);
    assert_string_equal(r.signature, "");
    expect_message(r, 401, msg);
    snprintf(q, sizeof(q), "token_id=%.6s", used);
    expect_message(call("GET", "/v1/join/cluster-info", q, NULL, NULL), 401, msg);
}

static void test_routes(void **state)
{
    if (!pg) skip();
    expect_message(call("GET", "/v1/join/other", NULL, NULL, NULL), 404, "Not found");
    expect_message(call("GET", "/v1/sync", NULL, NULL, NULL), 404, "Not found");
    expect_message(call("POST", "/v1/join/cluster-info", NULL, NULL, NULL), 405,
                   "Method not allowed");
    expect_message(call("GET", "/v1/join/csr", NULL, NULL, NULL), 405, "Method not allowed");
    expect_message(call("PUT", "/v1/join/csr", NULL, NULL, NULL), 405, "Method not allowed");
}

/* ---------------------------------------------------------------- enrolment */

static void test_csr_enrols_once(void **state)
{
    if (!pg) skip();
    const char *msg = "invalid or expired join token";
    char t[24], *good = csr_json("edge-1");
    token(1, t);
    expect_message(call("POST", "/v1/join/csr", NULL, NULL, good), 401, msg);
    expect_message(call("POST", "/v1/join/csr", NULL, "Basic abc", good), 401, msg);
    expect_message(call("POST", "/v1/join/csr", NULL, "Bearer abcdef.0123456789abcdef", good), 401,
                   msg);
    /* a wrong secret with the right id */
    char wrong[24];
    snprintf(wrong, sizeof(wrong), "%.7s%s", t, "0000000000000000");
    expect_message(call("POST", "/v1/join/csr", NULL, bearer(wrong), good), 401, msg);
    assert_int_equal(uses_left(t), 1);

    /* bad bodies are refused and cost nothing */
    expect_message(call("POST", "/v1/join/csr", NULL, bearer(t), "{not json"), 400,
                   "Cannot parse JSON body");
    expect_message(call("POST", "/v1/join/csr", NULL, bearer(t), "{}"), 400,
                   "csr: required (a PEM certificate request)");
    expect_message(
        call("POST", "/v1/join/csr", NULL, bearer(t), "{\"csr\":\"-----BEGIN nonsense\"}"), 400,
        "the CSR is not a PEM certificate request");
    expect_message(call("POST", "/v1/join/csr", NULL, bearer(t), "{\"csr\":\"x\",\"hostname\":5}"),
                   400, "hostname: must be a string of at most 253 printable characters");
    assert_int_equal(uses_left(t), 1);
    assert_null(sql_value("SELECT id FROM data_planes WHERE token_id = '%.6s'", t));

    tg_join_http_resp_t r = call("POST", "/v1/join/csr", NULL, bearer(t), good);
    assert_int_equal(r.status, 201);
    json_t *j = body_json(&r);
    free(r.body);
    const char *node = json_string_value(json_object_get(j, "node_id"));
    assert_true(tg_uuid_valid(tg_str_from(node)));
    assert_string_equal(json_string_value(json_object_get(j, "ca_certificate")),
                        tg_cluster_ca_cert_pem(ca));
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "endpoints"), 0)),
                        "cp.test:8005");
    char serial[41];
    serial_of(json_string_value(json_object_get(j, "certificate")), serial);
    char *row =
        sql_value("SELECT concat_ws('|', cp_id, hostname, token_id, cert_serial, address,"
                  " extract(epoch FROM cert_expires_at)::bigint) FROM data_planes WHERE id = '%s'",
                  node);
    char expect[512];
    snprintf(expect, sizeof(expect), "%s|edge-1|%.6s|%s|192.0.2.7|%lld",
             json_string_value(json_object_get(j, "control_plane_id")), t, serial,
             (long long)json_integer_value(json_object_get(j, "expires_at")));
    assert_string_equal(row, expect);
    free(row);
    /* 7 days by default */
    char *life = sql_value("SELECT round(extract(epoch FROM cert_expires_at - now()))::bigint FROM "
                           "data_planes WHERE id = '%s'",
                           node);
    assert_in_range(strtol(life, NULL, 10), 7 * 86400 - 10, 7 * 86400 + 10);
    free(life);
    assert_int_equal(uses_left(t), 0);
    json_decref(j);

    /* used up */
    expect_message(call("POST", "/v1/join/csr", NULL, bearer(t), good), 401, msg);
    free(good);
}

/* Inside a caller's transaction (a group-commit batch) a refused CSR still costs nothing. */
static void test_enrol_inside_caller_transaction(void **state)
{
    if (!pg) skip();
    char t[24], *good = csr_json("edge-tx");
    token(1, t);
    sql("BEGIN");
    expect_message(call("POST", "/v1/join/csr", NULL, bearer(t), "{\"csr\":\"junk\"}"), 400,
                   "the CSR is not a PEM certificate request");
    assert_int_equal(PQtransactionStatus(db.conn), PQTRANS_INTRANS); /* not aborted */
    assert_int_equal(uses_left(t), 1);
    tg_join_http_resp_t r = call("POST", "/v1/join/csr", NULL, bearer(t), good);
    assert_int_equal(r.status, 201);
    free(r.body);
    sql("COMMIT");
    assert_int_equal(uses_left(t), 0);
    char *n = sql_value("SELECT count(*) FROM data_planes WHERE token_id = '%.6s'", t);
    assert_string_equal(n, "1");
    free(n);
    free(good);
}

static void test_unlimited_token_and_lifetime(void **state)
{
    if (!pg) skip();
    tg_config_set("cluster_dp_cert_lifetime", "3600");
    char t[24], *body = csr_json("edge-x");
    token(0, t);
    for (int i = 0; i < 3; i++) {
        tg_join_http_resp_t r = call("POST", "/v1/join/csr", NULL, bearer(t), body);
        assert_int_equal(r.status, 201);
        json_t *j = body_json(&r);
        json_int_t exp = json_integer_value(json_object_get(j, "expires_at"));
        assert_in_range(exp - time(NULL), 3590, 3610);
        json_decref(j);
        free(r.body);
    }
    assert_int_equal(uses_left(t), -1); /* still NULL: unlimited */
    char *n = sql_value("SELECT count(*) FROM data_planes WHERE token_id = '%.6s'", t);
    assert_string_equal(n, "3");
    free(n);
    free(body);
    tg_config_set("cluster_dp_cert_lifetime", "604800");
}

static void test_check_renew_revoke(void **state)
{
    if (!pg) skip();
    json_t *j = enrol_one("edge-2");
    const char *node = json_string_value(json_object_get(j, "node_id"));
    const char *cp = json_string_value(json_object_get(j, "control_plane_id"));
    char serial[41], upper[41];
    serial_of(json_string_value(json_object_get(j, "certificate")), serial);
    assert_int_equal(tg_join_check_data_plane(&db, node, cp, serial), 0);
    for (size_t i = 0; i <= strlen(serial); i++)
        upper[i] = (char)toupper((unsigned char)serial[i]);
    assert_int_equal(tg_join_check_data_plane(&db, node, cp, upper), 0);
    assert_int_equal(tg_join_check_data_plane(&db, node, cp, "abcd"), -TG_EPERM);
    assert_int_equal(
        tg_join_check_data_plane(&db, node, "00000000-0000-4000-8000-000000000000", serial),
        -TG_ENOTFOUND);
    assert_int_equal(
        tg_join_check_data_plane(&db, "00000000-0000-4000-8000-000000000000", cp, serial),
        -TG_ENOTFOUND);
    assert_int_equal(tg_join_check_data_plane(&db, "garbage", cp, serial), -TG_ENOTFOUND);

    /* renewal supersedes the old certificate */
    char *key, *csr, *cert = NULL, err[256];
    assert_int_equal(tg_dp_join_new_key_csr("edge-2", &key, &csr), 0);
    assert_int_equal(tg_join_renew(&db, ca, node, cp, csr, &cert, err, sizeof(err)), 0);
    char renewed[41];
    serial_of(cert, renewed);
    assert_string_not_equal(renewed, serial);
    assert_int_equal(tg_join_check_data_plane(&db, node, cp, serial), -TG_EPERM);
    assert_int_equal(tg_join_check_data_plane(&db, node, cp, renewed), 0);
    free(cert);
    assert_int_equal(tg_join_renew(&db, ca, node, cp, "junk", &cert, err, sizeof(err)), -TG_EINVAL);
    assert_null(cert);
    assert_int_equal(tg_join_check_data_plane(&db, node, cp, renewed),
                     0); /* a refused renewal changes nothing */
    assert_int_equal(PQtransactionStatus(db.conn), PQTRANS_IDLE);

    /* revoked: neither the connection nor a renewal is allowed */
    char stmt[160];
    snprintf(stmt, sizeof(stmt), "UPDATE data_planes SET revoked_at = now() WHERE id = '%s'", node);
    sql(stmt);
    assert_int_equal(tg_join_check_data_plane(&db, node, cp, renewed), -TG_EPERM);
    assert_int_equal(tg_join_renew(&db, ca, node, cp, csr, &cert, err, sizeof(err)), -TG_EPERM);
    assert_int_equal(tg_join_renew(&db, ca, "00000000-0000-4000-8000-000000000000", cp, csr, &cert,
                                   err, sizeof(err)),
                     -TG_ENOTFOUND);
    free(key);
    free(csr);
    json_decref(j);
}

/* ---------------------------------------------------------------- CA and nodes */

static void test_ca_shared_and_keyring_checked(void **state)
{
    if (!pg) skip();
    tg_cluster_ca_t *again;
    assert_int_equal(tg_cluster_ca_ensure(&db, keyring, &again), 0);
    char h1[72], h2[72];
    tg_cluster_ca_spki_hash(ca, h1);
    tg_cluster_ca_spki_hash(again, h2);
    assert_string_equal(h1, h2);
    tg_cluster_ca_free(again);
    /* the key is stored encrypted: no PEM private key in the table */
    char *n = sql_value(
        "SELECT count(*) FROM cluster_ca WHERE position('PRIVATE'::bytea in key_enc) > 0");
    assert_string_equal(n, "0");
    free(n);
    uint8_t other[32] = {9};
    assert_int_equal(tg_cluster_ca_ensure(&db, other, &again), -TG_ECRYPTO);
    assert_null(again);
}

static void test_nodes_and_endpoints(void **state)
{
    if (!pg) skip();
    assert_int_equal(tg_cluster_nodes_register(&db, "11111111-1111-4111-8111-111111111111",
                                               "cp1.test:8005", "cp1"),
                     0);
    assert_int_equal(tg_cluster_nodes_register(&db, "22222222-2222-4222-8222-222222222222",
                                               "cp2.test:8005", "cp2"),
                     0);
    assert_int_equal(tg_cluster_nodes_register(&db, "33333333-3333-4333-8333-333333333333",
                                               "cp.test:8005", "me"),
                     0);
    assert_int_equal(tg_cluster_nodes_register(&db, "not-a-uuid", "x:1", "x"), -TG_EINVAL);
    sql("UPDATE cluster_nodes SET last_seen = now() - interval '6 minutes'"
        " WHERE node_id = '22222222-2222-4222-8222-222222222222'");
    json_t *eps = tg_cluster_nodes_endpoints(&db);
    char *text = json_dumps(eps, JSON_COMPACT);
    assert_string_equal(text, "[\"cp.test:8005\",\"cp1.test:8005\"]");
    free(text);
    json_decref(eps);
    assert_int_equal(tg_cluster_nodes_touch(&db, "22222222-2222-4222-8222-222222222222"), 0);
    eps = tg_cluster_nodes_endpoints(&db);
    assert_int_equal(json_array_size(eps), 3);
    json_decref(eps);
    sql("DELETE FROM cluster_nodes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_token_stored_hashed),
        cmocka_unit_test(test_token_create_refuses),
        cmocka_unit_test(test_token_list_and_delete),
        cmocka_unit_test(test_cluster_info_is_signed),
        cmocka_unit_test(test_cluster_info_refuses_bad_tokens),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_csr_enrols_once),
        cmocka_unit_test(test_enrol_inside_caller_transaction),
        cmocka_unit_test(test_unlimited_token_and_lifetime),
        cmocka_unit_test(test_check_renew_revoke),
        cmocka_unit_test(test_ca_shared_and_keyring_checked),
        cmocka_unit_test(test_nodes_and_endpoints),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
