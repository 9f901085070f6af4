/*
 * test_realm_cache.c — the data plane's realm lookup cache (realm_cache.h): hits and
 * negative entries expire at their TTL, stale answers only when allowed and only within the
 * stale bound, realms are isolated, the LRU bound holds under a flood of distinct keys (the
 * most recently used survive), and every invalidation drops exactly what it names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crypto.h"
#include "realm_cache.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define REALM_A "5b1f7e0c-2d4a-4c8e-9b3f-0a1b2c3d4e5f"
#define REALM_B "6c2f8e1d-3e5b-4d9f-8c4e-1b2c3d4e5f60"
#define HOUR_MS (3600 * 1000)

static void digest_of(const char *key, uint8_t d[32])
{
    tg_sha256(key, strlen(key), d);
}

static json_t *consumer(const char *id, const char *username)
{
    return json_pack("{s:{s:s, s:s}, s:{s:s}}", "consumer", "id", id, "username", username,
                     "credential", "id", "cred-1");
}

static void hit_until_ttl_then_miss(void **state)
{
    (void)state;
    tg_realm_cache_t *c = tg_realm_cache_new(16, HOUR_MS);
    uint8_t d[32];
    digest_of("my-key", d);
    json_t *who = consumer("c1", "alice");
    tg_realm_cache_put(c, REALM_A, d, who, 1000 + 60000);
    json_decref(who);

    const json_t *got = NULL;
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 1000, false, &got, NULL), TG_REALM_HIT);
    assert_string_equal(json_string_value(json_object_get(json_object_get(got, "consumer"), "username")), "alice");
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 60999, false, &got, NULL), TG_REALM_HIT);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 61000, false, &got, NULL), TG_REALM_MISS);
    tg_realm_cache_stats_t s = tg_realm_cache_stats(c);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 1);
    tg_realm_cache_free(c);
}

static void negative_entries_answer_unknown(void **state)
{
    (void)state;
    tg_realm_cache_t *c = tg_realm_cache_new(16, HOUR_MS);
    uint8_t d[32];
    digest_of("another_key", d);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 0, false, NULL, NULL), TG_REALM_MISS);
    tg_realm_cache_put(c, REALM_A, d, NULL, 0 + 30000);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 29999, false, NULL, NULL), TG_REALM_UNKNOWN);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 30000, false, NULL, NULL), TG_REALM_MISS);
    assert_int_equal(tg_realm_cache_stats(c).negative_hits, 1);
    tg_realm_cache_free(c);
}

static void stale_only_when_allowed_and_within_bound(void **state)
{
    (void)state;
    tg_realm_cache_t *c = tg_realm_cache_new(16, HOUR_MS);
    uint8_t d[32];
    digest_of("k", d);
    json_t *who = consumer("c1", "alice");
    tg_realm_cache_put(c, REALM_A, d, who, 0 + 1000);
    json_decref(who);
    /* expired: a miss while the CP is reachable, a (stale) hit while it is not */
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 5000, false, NULL, NULL), TG_REALM_MISS);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 5000, true, NULL, NULL), TG_REALM_HIT);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 1000 + HOUR_MS - 1, true, NULL, NULL), TG_REALM_HIT);
    assert_int_equal(tg_realm_cache_stats(c).stale_hits, 2);
    /* beyond the stale bound the entry is gone for good */
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 1000 + HOUR_MS, true, NULL, NULL), TG_REALM_MISS);
    assert_int_equal(tg_realm_cache_stats(c).entries, 0);
    tg_realm_cache_free(c);
}

static void realms_are_isolated(void **state)
{
    (void)state;
    tg_realm_cache_t *c = tg_realm_cache_new(16, 0);
    uint8_t d[32];
    digest_of("shared-key", d);
    json_t *who = consumer("c1", "alice");
    tg_realm_cache_put(c, REALM_A, d, who, 0 + 60000);
    json_decref(who);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 1, false, NULL, NULL), TG_REALM_HIT);
    assert_int_equal(tg_realm_cache_get(c, REALM_B, d, 1, false, NULL, NULL), TG_REALM_MISS);
    tg_realm_cache_put(c, REALM_B, d, NULL, 0 + 60000);
    assert_int_equal(tg_realm_cache_get(c, REALM_B, d, 1, false, NULL, NULL), TG_REALM_UNKNOWN);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 1, false, NULL, NULL), TG_REALM_HIT);
    tg_realm_cache_free(c);
}

static void put_replaces_the_previous_answer(void **state)
{
    (void)state;
    tg_realm_cache_t *c = tg_realm_cache_new(4, 0);
    uint8_t d[32];
    digest_of("k", d);
    tg_realm_cache_put(c, REALM_A, d, NULL, 0 + 60000);
    json_t *who = consumer("c9", "zoe");
    tg_realm_cache_put(c, REALM_A, d, who, 0 + 60000);
    json_decref(who);
    const json_t *got = NULL;
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, 1, false, &got, NULL), TG_REALM_HIT);
    assert_string_equal(json_string_value(json_object_get(json_object_get(got, "consumer"), "id")), "c9");
    assert_int_equal(tg_realm_cache_stats(c).entries, 1);
    tg_realm_cache_free(c);
}

/* A flood of distinct keys never holds more than capacity entries, and a key that keeps
 * being used survives it. */
static void flood_stays_bounded_and_keeps_hot_keys(void **state)
{
    (void)state;
    enum { CAP = 1000, FLOOD = 50000 };
    tg_realm_cache_t *c = tg_realm_cache_new(CAP, 0);
    uint8_t hot[32], d[32];
    digest_of("hot", hot);
    json_t *who = consumer("c1", "alice");
    tg_realm_cache_put(c, REALM_A, hot, who, 0 + HOUR_MS);
    json_decref(who);
    char key[32];
    for (int i = 0; i < FLOOD; i++) {
        snprintf(key, sizeof key, "junk-%d", i);
        digest_of(key, d);
        assert_int_equal(tg_realm_cache_get(c, REALM_A, d, i, false, NULL, NULL), TG_REALM_MISS);
        tg_realm_cache_put(c, REALM_A, d, NULL, i + HOUR_MS);
        if (i % 100 == 0) assert_int_equal(tg_realm_cache_get(c, REALM_A, hot, i, false, NULL, NULL), TG_REALM_HIT);
    }
    tg_realm_cache_stats_t s = tg_realm_cache_stats(c);
    assert_int_equal(s.entries, CAP);
    assert_int_equal(s.evictions, FLOOD + 1 - CAP);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, hot, FLOOD, false, NULL, NULL), TG_REALM_HIT);
    /* the oldest junk is gone, the newest is still there */
    digest_of("junk-0", d);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, FLOOD, false, NULL, NULL), TG_REALM_MISS);
    snprintf(key, sizeof key, "junk-%d", FLOOD - 1);
    digest_of(key, d);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, d, FLOOD, false, NULL, NULL), TG_REALM_UNKNOWN);
    tg_realm_cache_free(c);
}

static void invalidations_drop_exactly_what_they_name(void **state)
{
    (void)state;
    tg_realm_cache_t *c = tg_realm_cache_new(64, 0);
    uint8_t k1[32], k2[32], k3[32], k4[32];
    digest_of("k1", k1);
    digest_of("k2", k2);
    digest_of("k3", k3);
    digest_of("k4", k4);
    json_t *alice = consumer("c1", "alice"), *bob = consumer("c2", "bob");
    tg_realm_cache_put(c, REALM_A, k1, alice, 0 + HOUR_MS);
    tg_realm_cache_put(c, REALM_A, k2, alice, 0 + HOUR_MS);
    tg_realm_cache_put(c, REALM_A, k3, bob, 0 + HOUR_MS);
    tg_realm_cache_put(c, REALM_B, k1, alice, 0 + HOUR_MS); /* same consumer id, other realm */
    tg_realm_cache_put(c, REALM_B, k4, NULL, 0 + HOUR_MS);
    json_decref(alice);
    json_decref(bob);

    assert_int_equal(tg_realm_cache_evict_key(c, REALM_A, k3), 1);
    assert_int_equal(tg_realm_cache_evict_key(c, REALM_A, k3), 0);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, k3, 1, false, NULL, NULL), TG_REALM_MISS);

    assert_int_equal(tg_realm_cache_evict_consumer(c, REALM_A, "c1"), 2);
    assert_int_equal(tg_realm_cache_get(c, REALM_A, k1, 1, false, NULL, NULL), TG_REALM_MISS);
    assert_int_equal(tg_realm_cache_get(c, REALM_B, k1, 1, false, NULL, NULL), TG_REALM_HIT);

    assert_int_equal(tg_realm_cache_evict_realm(c, REALM_B), 2);
    assert_int_equal(tg_realm_cache_stats(c).entries, 0);

    tg_realm_cache_put(c, REALM_A, k1, NULL, 0 + HOUR_MS);
    assert_int_equal(tg_realm_cache_clear(c), 1);
    tg_realm_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hit_until_ttl_then_miss),
        cmocka_unit_test(negative_entries_answer_unknown),
        cmocka_unit_test(stale_only_when_allowed_and_within_bound),
        cmocka_unit_test(realms_are_isolated),
        cmocka_unit_test(put_replaces_the_previous_answer),
        cmocka_unit_test(flood_stays_bounded_and_keeps_hot_keys),
        cmocka_unit_test(invalidations_drop_exactly_what_they_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
