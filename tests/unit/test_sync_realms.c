/*
 * test_sync_realms.c — turning `tollgate_realms` NOTIFY payloads (realms/realm_store.h) into
 * the Invalidate messages the CP pushes: keys and consumers of one realm, a moved consumer in
 * both realms, flush as "everything in the realm", and anything unreadable or unknown as
 * "everything everywhere".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sync_realms.h"

#include <string.h>

#define R1 "5b1f7e0c-2d4a-4c8e-9b3f-0a1b2c3d4e5f"
#define R2 "6c2f8e1d-3e5b-4d9f-8c4e-1b2c3d4e5f60"
#define D1 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void key_deleted_names_digest_and_consumer(void **state)
{
    (void)state;
    tg_sync_invalidate_t inv[2];
    int n = tg_sync_realms_invalidations("{\"realm_id\":\"" R1 "\",\"op\":\"key_deleted\",\"flush\":false,"
                                         "\"key_digests\":[\"" D1 "\"],\"consumer_ids\":[\"c1\"]}", inv);
    assert_int_equal(n, 1);
    assert_string_equal(inv[0].realm_id, R1);
    assert_false(inv[0].everything);
    assert_int_equal(inv[0].n_key_digests, 1);
    assert_int_equal(inv[0].key_digests[0].len, 32);
    assert_int_equal(inv[0].key_digests[0].data[0], 0x9f);
    assert_int_equal(inv[0].key_digests[0].data[31], 0x08);
    assert_int_equal(inv[0].n_consumer_ids, 1);
    assert_string_equal(inv[0].consumer_ids[0], "c1");
    tg_sync_realms_invalidate_clear(&inv[0]);
}

static void moved_consumer_concerns_both_realms(void **state)
{
    (void)state;
    tg_sync_invalidate_t inv[2];
    int n = tg_sync_realms_invalidations("{\"realm_id\":\"" R1 "\",\"op\":\"consumer_moved\",\"flush\":false,"
                                         "\"consumer_ids\":[\"c1\"],\"key_digests\":[],"
                                         "\"target_realm_id\":\"" R2 "\"}", inv);
    assert_int_equal(n, 2);
    assert_string_equal(inv[0].realm_id, R1);
    assert_string_equal(inv[1].realm_id, R2);
    assert_int_equal(inv[1].n_consumer_ids, 1);
    tg_sync_realms_invalidate_clear(&inv[0]);
    tg_sync_realms_invalidate_clear(&inv[1]);
}

static void flush_is_the_whole_realm(void **state)
{
    (void)state;
    tg_sync_invalidate_t inv[2];
    int n = tg_sync_realms_invalidations("{\"realm_id\":\"" R1 "\",\"op\":\"realm_updated\",\"flush\":true}", inv);
    assert_int_equal(n, 1);
    assert_string_equal(inv[0].realm_id, R1);
    assert_true(inv[0].has_everything && inv[0].everything);
    tg_sync_realms_invalidate_clear(&inv[0]);
}

static void unreadable_or_unknown_drops_everything(void **state)
{
    (void)state;
    const char *bad[] = {
        "not json",
        "{\"op\":\"key_deleted\"}",
        "{\"realm_id\":\"" R1 "\",\"op\":\"something_new\"}",
        "{\"realm_id\":\"" R1 "\",\"op\":\"key_deleted\",\"key_digests\":[\"zz\"]}",
        "{\"realm_id\":\"" R1 "\",\"op\":\"key_deleted\",\"consumer_ids\":[42]}",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tg_sync_invalidate_t inv[2];
        assert_int_equal(tg_sync_realms_invalidations(bad[i], inv), 1);
        assert_null(inv[0].realm_id);
        assert_true(inv[0].everything);
        tg_sync_realms_invalidate_clear(&inv[0]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_deleted_names_digest_and_consumer),
        cmocka_unit_test(moved_consumer_concerns_both_realms),
        cmocka_unit_test(flush_is_the_whole_realm),
        cmocka_unit_test(unreadable_or_unknown_drops_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
