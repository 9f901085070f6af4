/*
 * test_realm_store.c — tg_realm_store_lookup() against a real PostgreSQL database with the
 * realms migration applied. The database comes from TOLLGATE_TEST_PG_CONNINFO (a libpq
 * conninfo); without it every test is skipped. tests/integration/test_realms_api.py runs this
 * binary against the database of the control plane it started.
 *
 * Each run makes its own control planes, realm, consumer and key with random ids and names,
 * and deletes them at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto.h"
#include "error.h"
#include "db.h"
#include "realm_store.h"

static tg_db_t db;
static char cp_a[37], cp_b[37], realm[37], realm_all[37], consumer[37], key[37], tag[16];
static uint8_t secret_digest[32], other_digest[32];

static void run(const char *sql, int n, const char *const *params)
{
    tg_db_err_t err;
    int rc = tg_db_run(&db, &err, sql, n, params);
    if (rc != 0) fail_msg("%s: %s", sql, err.message);
}

static int setup(void **state)
{
    const char *conninfo = getenv("TOLLGATE_TEST_PG_CONNINFO");
    if (!conninfo) return 0;
    char err[256];
    if (tg_db_open(&db, conninfo, err, sizeof(err)) != 0) fail_msg("%s", err);
    tg_uuid_v4(cp_a), tg_uuid_v4(cp_b), tg_uuid_v4(realm), tg_uuid_v4(realm_all),
        tg_uuid_v4(consumer), tg_uuid_v4(key);
    snprintf(tag, sizeof(tag), "%.8s", realm);
    tg_sha256("the-secret", 10, secret_digest);
    tg_sha256("another-secret", 14, other_digest);
    char hex[67] = "\\x";
    tg_hex_encode(secret_digest, 32, hex + 2);
    const char *p1[] = {cp_a, cp_b, tag};
    run("INSERT INTO control_planes (id, name) VALUES ($1::uuid, 'lookup-a-' || $3), ($2::uuid, "
        "'lookup-b-' || $3)",
        3, p1);
    const char *p2[] = {realm, realm_all, cp_a, tag};
    run("INSERT INTO realms (id, name, allowed_control_planes, ttl, negative_ttl, consumer_groups) "
        "VALUES"
        " ($1::uuid, 'lookup-' || $4, ARRAY[$3], 7, 9, '{gold,shared}'),"
        " ($2::uuid, 'lookup-all-' || $4, '{*}', 5, 5, '{}')",
        4, p2);
    const char *p3[] = {realm, consumer, key, hex};
    run("INSERT INTO realm_consumers (realm_id, id, username, custom_id, type, tags, "
        "consumer_groups) VALUES"
        " ($1::uuid, $2::uuid, 'Ariel', 'ariel-1', 'app', '{t1}', '{shared,beta}')",
        2, p3);
    run("INSERT INTO realm_keys (realm_id, consumer_id, id, type, key_digest) VALUES"
        " ($1::uuid, $2::uuid, $3::uuid, 'new', $4::bytea)",
        4, p3);
    (void)state;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (!getenv("TOLLGATE_TEST_PG_CONNINFO")) return 0;
    const char *p[] = {realm, realm_all, cp_a, cp_b};
    run("DELETE FROM realms WHERE id IN ($1::uuid, $2::uuid)", 2, p);
    run("DELETE FROM control_planes WHERE id IN ($3::uuid, $4::uuid) AND $1 <> $2", 4, p);
    tg_db_close(&db);
    return 0;
}

static void need_db(void)
{
    if (!getenv("TOLLGATE_TEST_PG_CONNINFO")) skip();
}

static void lookup(const char *realm_id, const uint8_t *digest, const char *cp,
                   tg_realm_store_answer_t *out)
{
    tg_db_err_t err = {0};
    int rc = tg_realm_store_lookup(&db, realm_id, digest, cp, out, &err);
    if (rc != 0) fail_msg("lookup failed: %d %s", rc, err.message);
}

static void found_for_an_allowed_control_plane(void **state)
{
    (void)state;
    need_db();
    tg_realm_store_answer_t out;
    lookup(realm, secret_digest, cp_a, &out);
    assert_int_equal(out.result, TG_REALM_LOOKUP_FOUND);
    assert_int_equal(out.ttl_minutes, 7);
    assert_int_equal(out.negative_ttl_minutes, 9);
    json_t *c = out.consumer;
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "id")), consumer);
    assert_string_equal(json_string_value(json_object_get(c, "username")), "Ariel");
    assert_string_equal(json_string_value(json_object_get(c, "custom_id")), "ariel-1");
    assert_string_equal(json_string_value(json_object_get(c, "type")), "app");
    assert_string_equal(json_string_value(json_object_get(c, "realm_id")), realm);
    assert_string_equal(json_string_value(json_object_get(c, "key_id")), key);
    assert_string_equal(json_string_value(json_array_get(json_object_get(c, "tags"), 0)), "t1");
    /* the realm's groups first, then the consumer's, each once */
    json_t *groups = json_object_get(c, "consumer_groups");
    assert_int_equal(json_array_size(groups), 3);
    assert_string_equal(json_string_value(json_array_get(groups, 0)), "gold");
    assert_string_equal(json_string_value(json_array_get(groups, 1)), "shared");
    assert_string_equal(json_string_value(json_array_get(groups, 2)), "beta");
    tg_realm_store_answer_clear(&out);
    assert_null(out.consumer);

    /* an upper-case control plane id is the same control plane */
    char upper[37];
    for (int i = 0; i < 37; i++)
        upper[i] = (char)(cp_a[i] >= 'a' && cp_a[i] <= 'f' ? cp_a[i] - 32 : cp_a[i]);
    lookup(realm, secret_digest, upper, &out);
    assert_int_equal(out.result, TG_REALM_LOOKUP_FOUND);
    tg_realm_store_answer_clear(&out);
}

static void not_found_with_the_negative_ttl(void **state)
{
    (void)state;
    need_db();
    tg_realm_store_answer_t out;
    lookup(realm, other_digest, cp_a, &out);
    assert_int_equal(out.result, TG_REALM_LOOKUP_NOT_FOUND);
    assert_int_equal(out.negative_ttl_minutes, 9);
    assert_null(out.consumer);
    /* a key of another realm is not found in this one */
    lookup(realm_all, secret_digest, cp_a, &out);
    assert_int_equal(out.result, TG_REALM_LOOKUP_NOT_FOUND);
    assert_int_equal(out.ttl_minutes, 5);
}

static void refused_to_a_control_plane_not_listed(void **state)
{
    (void)state;
    need_db();
    tg_realm_store_answer_t out;
    lookup(realm, secret_digest, cp_b, &out);
    assert_int_equal(out.result, TG_REALM_LOOKUP_NOT_ALLOWED);
    assert_null(out.consumer); /* says nothing about the key */
    /* "*" allows every control plane */
    lookup(realm_all, other_digest, cp_b, &out);
    assert_int_equal(out.result, TG_REALM_LOOKUP_NOT_FOUND);
}

static void unknown_realm_and_bad_ids(void **state)
{
    (void)state;
    need_db();
    tg_realm_store_answer_t out;
    char none[37];
    tg_uuid_v4(none);
    lookup(none, secret_digest, cp_a, &out);
    assert_int_equal(out.result, TG_REALM_LOOKUP_NO_REALM);
    assert_int_equal(out.ttl_minutes, 0);
    tg_db_err_t err;
    assert_int_equal(tg_realm_store_lookup(&db, "not-a-uuid", secret_digest, cp_a, &out, &err),
                     -TG_EINVAL);
    assert_int_equal(
        tg_realm_store_lookup(&db, realm, secret_digest, "x'; DROP TABLE realms; --", &out, &err),
        -TG_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(found_for_an_allowed_control_plane),
        cmocka_unit_test(not_found_with_the_negative_ttl),
        cmocka_unit_test(refused_to_a_control_plane_not_listed),
        cmocka_unit_test(unknown_realm_and_bad_ids),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
