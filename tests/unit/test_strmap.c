/*
 * test_strmap.c — the compact string → number map the declarative loader indexes with:
 * lookups after many inserts and growths, overwrites, keys that share prefixes or differ
 * in one byte, the empty key, and agreement with a plain reference table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "strmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_empty(void **state)
{
    tg_strmap_t *m = tg_strmap_new();
    uint32_t v = 7;
    assert_false(tg_strmap_get(m, "", &v));
    assert_false(tg_strmap_get(m, "a", NULL));
    assert_int_equal(v, 7); /* untouched on a miss */
    assert_int_equal(tg_strmap_count(m), 0);
    tg_strmap_free(m);
    tg_strmap_free(NULL);
}

static void test_put_get_overwrite(void **state)
{
    tg_strmap_t *m = tg_strmap_new();
    uint32_t v;
    tg_strmap_put(m, "", 1);
    tg_strmap_put(m, "key", 2);
    tg_strmap_put(m, "key2", 3);
    tg_strmap_put(m, "ke", 4);
    assert_true(tg_strmap_get(m, "", &v));
    assert_int_equal(v, 1);
    assert_true(tg_strmap_get(m, "key", &v));
    assert_int_equal(v, 2);
    assert_true(tg_strmap_get(m, "key2", &v));
    assert_int_equal(v, 3);
    assert_true(tg_strmap_get(m, "ke", &v));
    assert_int_equal(v, 4);
    assert_false(tg_strmap_get(m, "k", NULL));
    assert_false(tg_strmap_get(m, "key3", NULL));
    tg_strmap_put(m, "key", UINT32_MAX);
    assert_true(tg_strmap_get(m, "key", &v));
    assert_int_equal(v, UINT32_MAX);
    assert_int_equal(tg_strmap_count(m), 4); /* an overwrite adds nothing */
    tg_strmap_free(m);
}

/* Many keys through many growths, checked against the index they were made from; keys
 * differing in their last byte only, and every one looked up again after all inserts. */
static void test_many_keys(void **state)
{
    enum { N = 200000 };
    tg_strmap_t *m = tg_strmap_new();
    char key[64];
    for (uint32_t i = 0; i < N; i++) {
        snprintf(key, sizeof key, "consumers/%08x-0000-4000-8000-%012u", i * 2654435761u, i);
        tg_strmap_put(m, key, i);
        if (i % 9973 == 0) { /* lookups keep working while the map grows */
            uint32_t v;
            assert_true(tg_strmap_get(m, key, &v));
            assert_int_equal(v, i);
        }
    }
    assert_int_equal(tg_strmap_count(m), N);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t v;
        snprintf(key, sizeof key, "consumers/%08x-0000-4000-8000-%012u", i * 2654435761u, i);
        assert_true(tg_strmap_get(m, key, &v));
        assert_int_equal(v, i);
        key[strlen(key) - 1] = 'x'; /* a near miss */
        assert_false(tg_strmap_get(m, key, NULL));
    }
    tg_strmap_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_put_get_overwrite),
        cmocka_unit_test(test_many_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
