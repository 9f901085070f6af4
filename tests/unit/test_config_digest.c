/*
 * test_config_digest.c — the config digest's arithmetic (sync-protocol rule 5): order
 * independence, add/sub as inverses, and the decimal form the control plane keeps in
 * PostgreSQL's numeric columns.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config_digest.h"
#include "error.h"

#include <stdio.h>
#include <string.h>

static void hash_of(const char *id, const char *doc, uint8_t out[TG_CONFIG_DIGEST_LEN])
{
    tg_config_digest_entity_raw(tg_str_from("services"), tg_str_from(id), tg_str_from(doc), out);
}

static void order_independent_and_invertible(void **state)
{
    (void)state;
    uint8_t a[32], b[32], c[32];
    hash_of("1", "{\"a\":1}", a);
    hash_of("2", "{\"b\":2}", b);
    hash_of("3", "{\"c\":3}", c);
    tg_config_digest_t x = {{0}}, y = {{0}}, zero = {{0}};
    tg_config_digest_add(&x, a), tg_config_digest_add(&x, b), tg_config_digest_add(&x, c);
    tg_config_digest_add(&y, c), tg_config_digest_add(&y, a), tg_config_digest_add(&y, b);
    assert_memory_equal(x.sum, y.sum, 32);
    tg_config_digest_sub(&x, b), tg_config_digest_sub(&x, a), tg_config_digest_sub(&x, c);
    assert_memory_equal(x.sum, zero.sum, 32);
    /* a running delta (add new, subtract old, in any order) applied to a base */
    tg_config_digest_t delta = {{0}};
    tg_config_digest_sub(&delta, a); /* starts below zero: wraps modulo 2^256 */
    tg_config_digest_add(&delta, c);
    tg_config_digest_t base = {{0}};
    tg_config_digest_add(&base, a), tg_config_digest_add(&base, b);
    tg_config_digest_add(&base, delta.sum);
    tg_config_digest_t want = {{0}};
    tg_config_digest_add(&want, b), tg_config_digest_add(&want, c);
    assert_memory_equal(base.sum, want.sum, 32);
}

static void decimal_known_values(void **state)
{
    (void)state;
    char dec[TG_CONFIG_DIGEST_DEC_LEN + 1];
    tg_config_digest_t d = {{0}};
    tg_config_digest_decimal(&d, dec);
    assert_string_equal(dec, "0");
    d.sum[31] = 255;
    d.sum[30] = 1;
    tg_config_digest_decimal(&d, dec);
    assert_string_equal(dec, "511");
    memset(d.sum, 0xff, 32);
    tg_config_digest_decimal(&d, dec);
    assert_string_equal(dec, "1157920892373161954235709850086879078532699846656405640394575840079131"
                             "29639935");
    tg_config_digest_t back;
    assert_int_equal(tg_config_digest_from_decimal(dec, &back), 0);
    assert_memory_equal(back.sum, d.sum, 32);
    char hex[TG_CONFIG_DIGEST_HEX_LEN + 1];
    assert_true(tg_config_digest_decimal_hex("511", hex));
    assert_string_equal(hex, "00000000000000000000000000000000000000000000000000000000000001ff");
    assert_false(tg_config_digest_decimal_hex(NULL, hex));
    assert_string_equal(hex, "");
    assert_false(tg_config_digest_decimal_hex("x", hex));
    assert_string_equal(hex, "");
}

static void decimal_round_trip(void **state)
{
    (void)state;
    char dec[TG_CONFIG_DIGEST_DEC_LEN + 1];
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        tg_config_digest_t d = {{0}}, back;
        uint8_t h[32];
        hash_of(id, "{}", h);
        tg_config_digest_add(&d, h);
        if (i % 7 == 0) memset(d.sum, 0, (size_t)(i % 32)); /* leading zero bytes */
        tg_config_digest_decimal(&d, dec);
        assert_true(dec[0] != '0' || dec[1] == '\0');
        assert_int_equal(tg_config_digest_from_decimal(dec, &back), 0);
        assert_memory_equal(back.sum, d.sum, 32);
    }
}

static void decimal_rejects(void **state)
{
    (void)state;
    tg_config_digest_t d;
    assert_int_equal(tg_config_digest_from_decimal(NULL, &d), -TG_EINVAL);
    assert_int_equal(tg_config_digest_from_decimal("", &d), -TG_EINVAL);
    assert_int_equal(tg_config_digest_from_decimal("12a", &d), -TG_EINVAL);
    assert_int_equal(tg_config_digest_from_decimal("-1", &d), -TG_EINVAL);
    assert_int_equal(tg_config_digest_from_decimal("1.0", &d), -TG_EINVAL);
    /* 2^256 itself is one too many */
    assert_int_equal(tg_config_digest_from_decimal("115792089237316195423570985008687907853269984665"
                                                   "640564039457584007913129639936",
                                                   &d),
                     -TG_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(order_independent_and_invertible),
        cmocka_unit_test(decimal_known_values),
        cmocka_unit_test(decimal_round_trip),
        cmocka_unit_test(decimal_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
