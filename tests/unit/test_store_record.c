/*
 * test_store_record.c — the compact records of consumers and key-auth credentials
 * (store_record.h) and the store around them: every entity comes back exactly (same JSON,
 * same canonical text, so the same config digest), entities a record cannot hold fall back to
 * canonical JSON, malformed records are refused, id keys round-trip, the identity source
 * reads them (and never serves a stale consumer), and a snapshot of consumer + credential
 * pairs stays within the bytes-per-key budget.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config_digest.h"
#include "crypto.h"
#include "error.h"
#include "identity_store.h"
#include "store.h"
#include "store_record.h"

#include <ftw.h>
#include <lmdb.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONS_ID "3f0d8a1e-5b7c-4d2e-9f10-2a3b4c5d6e7f"
#define CRED_ID "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define DIGEST "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

/* ------------------------------------------------------------------ helpers */

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) fail_msg("bad test JSON: %s: %s", e.text, text);
    return j;
}

/* The key the store files an entity of `type` under, as the record module expects it. */
static size_t key_of(tg_record_type_t type, const json_t *e, uint8_t *key)
{
    const char *field = type == TG_RECORD_CONSUMER ? "id" : "key_digest";
    const char *v = json_string_value(json_object_get(e, field));
    if (type == TG_RECORD_CONSUMER) {
        assert_true(tg_record_uuid_pack(tg_str_from(v), key));
        return TG_RECORD_UUID_LEN;
    }
    tg_config_digest_t d;
    assert_int_equal(tg_config_digest_from_hex(v, &d), 0);
    memcpy(key, d.sum, 32);
    return 32;
}

/* Encodes, decodes, and checks the entity and its canonical text came back; the size. */
static size_t round_trip(tg_record_type_t type, const char *text)
{
    json_t *e = parse(text);
    uint8_t rec[TG_RECORD_MAX], key[32];
    size_t n = tg_record_encode(type, e, rec, sizeof rec);
    if (n == 0) fail_msg("no compact form for %s", text);
    assert_true(tg_record_is_compact((tg_str_t){(const char *)rec, n}));
    size_t klen = key_of(type, e, key);
    json_t *back = tg_record_decode(type, (tg_str_t){(const char *)key, klen},
                                    (tg_str_t){(const char *)rec, n});
    assert_non_null(back);
    assert_true(json_equal(back, e));
    char *a = tg_config_digest_canonical(e, NULL), *b = tg_config_digest_canonical(back, NULL);
    assert_string_equal(a, b);
    free(a), free(b);
    json_decref(back);
    json_decref(e);
    return n;
}

static void assert_no_compact_form(tg_record_type_t type, const char *text)
{
    json_t *e = parse(text);
    uint8_t rec[TG_RECORD_MAX];
    if (tg_record_encode(type, e, rec, sizeof rec) != 0) fail_msg("compact form for %s", text);
    json_decref(e);
}

/* ------------------------------------------------------------------ records */

static void test_consumer_round_trip(void **state)
{
    (void)state;
    /* What a declarative file gives: 14 bytes instead of 133 of canonical JSON. */
    size_t n = round_trip(TG_RECORD_CONSUMER,
                          "{\"id\":\"" CONS_ID "\",\"username\":\"user-55136\",\"custom_id\":null,"
                          "\"created_at\":null,\"updated_at\":null,\"tags\":null}");
    assert_int_equal(n, 14);
    /* What a CP sends, with every field set, unicode and an empty string included. */
    round_trip(TG_RECORD_CONSUMER,
               "{\"id\":\"" CONS_ID "\",\"username\":\"j\\u00f6rg \\u2603\",\"custom_id\":\"\","
               "\"created_at\":1700000000,\"updated_at\":1700000123,"
               "\"tags\":[\"gold\",\"\\u00e9t\\u00e9\",\"\"]}");
    /* Absent and null are different entities: both must survive. */
    round_trip(TG_RECORD_CONSUMER, "{\"id\":\"" CONS_ID "\",\"custom_id\":\"ext-1\"}");
    round_trip(TG_RECORD_CONSUMER, "{\"id\":\"" CONS_ID "\",\"username\":\"a\",\"tags\":[]}");
    /* Integers of any size and sign. */
    round_trip(TG_RECORD_CONSUMER, "{\"id\":\"" CONS_ID "\",\"username\":\"a\",\"created_at\":0,"
                                   "\"updated_at\":-1}");
    round_trip(TG_RECORD_CONSUMER,
               "{\"id\":\"" CONS_ID "\",\"created_at\":9223372036854775807,"
               "\"updated_at\":-9223372036854775808,\"username\":\"x\"}");
}

static void test_credential_round_trip(void **state)
{
    (void)state;
    size_t n = round_trip(TG_RECORD_CREDENTIAL,
                          "{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},"
                          "\"key_digest\":\"" DIGEST "\",\"created_at\":null,\"tags\":null}");
    assert_int_equal(n, 35); /* its canonical JSON: 212 bytes */
    round_trip(TG_RECORD_CREDENTIAL,
               "{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},"
               "\"key_digest\":\"" DIGEST "\",\"created_at\":1700000000,"
               "\"expires_at\":1700003600,\"tags\":[\"a\",\"b\"]}");
    round_trip(TG_RECORD_CREDENTIAL, "{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID
                                     "\"},\"key_digest\":\"" DIGEST "\",\"expires_at\":null}");
}

static void test_fallbacks(void **state)
{
    (void)state;
    const char *c = "\"id\":\"" CONS_ID "\"";
    char buf[512];
    const char *consumer_cases[] = {
        "\"username\":\"a\",\"extra\":1",             /* a field records do not know */
        "\"username\":\"a\",\"created_at\":1.5",      /* a real */
        "\"username\":\"a\",\"created_at\":1.0",      /* a real even when whole */
        "\"username\":\"a\",\"created_at\":\"1\"",    /* a string where an int goes */
        "\"username\":5",                             /* a number where a string goes */
        "\"username\":\"a\",\"tags\":[\"x\",1]",      /* a tag that is not a string */
        "\"username\":\"a\",\"tags\":{}",             /* tags that are not a list */
        "\"username\":true",
    };
    for (size_t i = 0; i < sizeof consumer_cases / sizeof consumer_cases[0]; i++) {
        snprintf(buf, sizeof buf, "{%s,%s}", c, consumer_cases[i]);
        assert_no_compact_form(TG_RECORD_CONSUMER, buf);
    }
    /* Ids that would not come back as written. */
    assert_no_compact_form(TG_RECORD_CONSUMER, "{\"id\":\"3F0D8A1E-5B7C-4D2E-9F10-2A3B4C5D6E7F\"}");
    assert_no_compact_form(TG_RECORD_CONSUMER, "{\"id\":\"consumer-1\",\"username\":\"a\"}");
    assert_no_compact_form(TG_RECORD_CONSUMER, "{\"username\":\"no id\"}");
    const char *k = "\"key_digest\":\"" DIGEST "\"";
    const char *cred_cases[] = {
        "\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\",\"username\":\"u\"}",
        "\"id\":\"" CRED_ID "\",\"consumer\":\"" CONS_ID "\"",
        "\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"not-a-uuid\"}",
        "\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},\"ttl\":60",
        "\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},\"expires_at\":1.7e9",
        "\"id\":\"cred-1\",\"consumer\":{\"id\":\"" CONS_ID "\"}",
    };
    for (size_t i = 0; i < sizeof cred_cases / sizeof cred_cases[0]; i++) {
        snprintf(buf, sizeof buf, "{%s,%s}", k, cred_cases[i]);
        assert_no_compact_form(TG_RECORD_CREDENTIAL, buf);
    }
    /* Upper-case hex is a valid digest, but would come back lower-case. */
    snprintf(buf, sizeof buf,
             "{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},\"key_digest\":\"%s\"}",
             "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08");
    assert_no_compact_form(TG_RECORD_CREDENTIAL, buf);
    /* Too big for the record buffer: stays JSON. */
    json_t *e = parse("{\"id\":\"" CONS_ID "\",\"username\":\"a\"}");
    json_t *tags = json_array();
    for (int i = 0; i < 200; i++)
        json_array_append_new(tags, json_string("a-rather-long-tag-name"));
    json_object_set_new(e, "tags", tags);
    uint8_t rec[TG_RECORD_MAX];
    assert_int_equal(tg_record_encode(TG_RECORD_CONSUMER, e, rec, sizeof rec), 0);
    json_decref(e);
}

static void test_malformed_records(void **state)
{
    (void)state;
    json_t *e = parse("{\"id\":\"" CONS_ID "\",\"username\":\"user\",\"created_at\":1700000000}");
    uint8_t rec[TG_RECORD_MAX], key[16], bad[TG_RECORD_MAX];
    size_t n = tg_record_encode(TG_RECORD_CONSUMER, e, rec, sizeof rec);
    assert_true(n > 3);
    key_of(TG_RECORD_CONSUMER, e, key);
    tg_str_t k = {(const char *)key, 16};
    for (size_t cut = 0; cut < n; cut++) /* every truncation */
        assert_null(tg_record_decode(TG_RECORD_CONSUMER, k, (tg_str_t){(const char *)rec, cut}));
    memcpy(bad, rec, n);
    bad[n] = 0; /* trailing byte */
    assert_null(tg_record_decode(TG_RECORD_CONSUMER, k, (tg_str_t){(const char *)bad, n + 1}));
    bad[0] = '{'; /* not a record */
    assert_null(tg_record_decode(TG_RECORD_CONSUMER, k, (tg_str_t){(const char *)bad, n}));
    memcpy(bad, rec, n);
    bad[1] |= 3; /* state 3 does not exist */
    assert_null(tg_record_decode(TG_RECORD_CONSUMER, k, (tg_str_t){(const char *)bad, n}));
    assert_null(tg_record_decode(TG_RECORD_CONSUMER, (tg_str_t){(const char *)key, 15},
                                 (tg_str_t){(const char *)rec, n}));
    /* A varint that never ends. */
    uint8_t endless[16] = {TG_RECORD_TAG, 0x02, 0, 0xff, 0xff, 0xff, 0xff, 0xff,
                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_null(tg_record_decode(TG_RECORD_CONSUMER, k,
                                 (tg_str_t){(const char *)endless, sizeof endless}));
    json_decref(e);
}

static void test_id_keys(void **state)
{
    (void)state;
    uint8_t key[TG_RECORD_ID_KEY_MAX];
    char back[256];
    assert_int_equal(tg_record_id_key(TG_STR(CONS_ID), key), 16);
    assert_true(tg_record_id_from_key((tg_str_t){(const char *)key, 16}, back));
    assert_string_equal(back, CONS_ID);
    /* Other ids, including the length whose plain form would be 16 bytes like a UUID's. */
    const char *ids[] = {"a", "fifteen-chars-x", "sixteen-chars-xx",
                         "3F0D8A1E-5B7C-4D2E-9F10-2A3B4C5D6E7F"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        size_t n = tg_record_id_key(tg_str_from(ids[i]), key);
        assert_true(n > 0);
        assert_int_not_equal(n, 16);
        assert_true(tg_record_id_from_key((tg_str_t){(const char *)key, n}, back));
        assert_string_equal(back, ids[i]);
    }
    char longest[256];
    memset(longest, 'x', 255);
    longest[255] = '\0';
    assert_int_equal(tg_record_id_key(tg_str_from(longest), key), 256);
    assert_true(tg_record_id_from_key((tg_str_t){(const char *)key, 256}, back));
    assert_string_equal(back, longest);
    char too_long[257];
    memset(too_long, 'x', 256);
    too_long[256] = '\0';
    assert_int_equal(tg_record_id_key(tg_str_from(too_long), key), 0);
    assert_int_equal(tg_record_id_key(TG_STR(""), key), 0);
    assert_false(tg_record_id_from_key(TG_STR("x"), back));
    assert_false(tg_record_id_from_key(TG_STR("\x01" "abc"), back));
}

/* Random entities: whatever the encoder accepts must come back exactly. */
static json_t *random_value(unsigned *seed)
{
    switch (rand_r(seed) % 7) {
    case 0: return json_null();
    case 1: return json_integer((json_int_t)rand_r(seed) - RAND_MAX / 2);
    case 2: return json_real(rand_r(seed) / 7.0);
    case 3: return json_string(rand_r(seed) % 2 ? "x" : "");
    case 4: return json_pack("[s,s]", "t1", "t2");
    case 5: return json_pack("{s:s}", "id", CONS_ID);
    default: return json_true();
    }
}

static void test_random_entities(void **state)
{
    (void)state;
    const char *fields[] = {"username", "custom_id", "created_at", "updated_at", "tags",
                            "consumer", "expires_at", "id", "other"};
    unsigned seed = 99;
    int compact[2] = {0, 0};
    for (int i = 0; i < 20000; i++) {
        tg_record_type_t type = i % 2 ? TG_RECORD_CREDENTIAL : TG_RECORD_CONSUMER;
        json_t *e = json_object();
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            if (rand_r(&seed) % 3 == 0) json_object_set_new(e, fields[f], random_value(&seed));
        if (type == TG_RECORD_CONSUMER) {
            json_object_set_new(e, "id", json_string(CONS_ID));
        } else {
            json_object_set_new(e, "key_digest", json_string(DIGEST));
            if (rand_r(&seed) % 2) json_object_set_new(e, "id", json_string(CRED_ID));
        }
        uint8_t rec[TG_RECORD_MAX], key[32];
        size_t n = tg_record_encode(type, e, rec, sizeof rec);
        if (n) {
            size_t klen = key_of(type, e, key);
            json_t *back = tg_record_decode(type, (tg_str_t){(const char *)key, klen},
                                            (tg_str_t){(const char *)rec, n});
            assert_true(back && json_equal(back, e));
            json_decref(back);
            compact[type]++;
        }
        json_decref(e);
    }
    assert_true(compact[0] > 100 && compact[1] > 100); /* both kinds were exercised */
}

/* ------------------------------------------------------------------ the store around them */

struct fx {
    char root[64];
    char dir[96];
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/tg-record-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->dir, sizeof f->dir, "%s/dp", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static tg_store_change_t up(const char *type, json_t *e)
{
    return (tg_store_change_t){type, json_string_value(json_object_get(e, "id")), TG_STORE_UPSERT,
                               e};
}

/* Reads an entity back both ways and compares with what was written, text and value. */
static void assert_stored(tg_store_t *s, const char *type, const json_t *want)
{
    tg_store_reader_t r;
    tg_str_t v;
    json_t *e = NULL;
    const char *id = json_string_value(json_object_get(want, "id"));
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_get(&r, type, tg_str_from(id), &v), 0);
    char *canon = tg_config_digest_canonical(want, NULL);
    if (!tg_str_eq(v, tg_str_from(canon)))
        fail_msg("%s %s came back as %.*s", type, id, (int)v.len, v.p);
    assert_int_equal(tg_store_get_entity(&r, type, tg_str_from(id), &e), 0);
    assert_true(json_equal(e, want));
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    free(canon);
    json_decref(e);
}

static void store_digest(tg_store_t *s, char info_hex[65], char recomputed_hex[65])
{
    tg_store_reader_t r;
    tg_store_info_t i;
    tg_config_digest_t d;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_get_info(&r, &i), 0);
    assert_int_equal(tg_store_digest_recompute(&r, &d), 0);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    memcpy(info_hex, i.digest, 65);
    tg_config_digest_hex(&d, recomputed_hex);
}

static void digest_of(const tg_store_change_t *c, size_t n, char out[65])
{
    tg_config_digest_t d = {{0}};
    for (size_t i = 0; i < n; i++) {
        uint8_t h[32];
        assert_int_equal(tg_config_digest_entity(c[i].type, c[i].id, c[i].entity, h), 0);
        tg_config_digest_add(&d, h);
    }
    tg_config_digest_hex(&d, out);
}

/* Compact and JSON-stored entities side by side: both read back exactly, by every lookup,
 * and the digest is the one the CP computes from the JSON. */
static void test_store_mixed_forms(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    json_t *e[] = {
        parse("{\"id\":\"" CONS_ID "\",\"username\":\"alice\",\"custom_id\":\"A-1\","
              "\"created_at\":1700000000,\"updated_at\":null,\"tags\":[\"t\"]}"),
        parse("{\"id\":\"11111111-1111-4111-8111-111111111111\",\"username\":\"bob\","
              "\"created_at\":1.5,\"color\":\"blue\"}"), /* falls back to JSON */
        parse("{\"id\":\"consumer-with-plain-id\",\"username\":\"carol\"}"),
        parse("{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},"
              "\"key_digest\":\"" DIGEST "\",\"created_at\":null,\"tags\":null}"),
        parse("{\"id\":\"22222222-2222-4222-8222-222222222222\",\"consumer\":{\"id\":\"" CONS_ID
              "\"},\"key_digest\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
              "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"ttl\":60}"), /* falls back to JSON */
    };
    const char *types[] = {"consumers", "consumers", "consumers", "keyauth_credentials",
                           "keyauth_credentials"};
    tg_store_change_t ch[5];
    for (int i = 0; i < 5; i++)
        ch[i] = up(types[i], e[i]);
    char want[65], got[65], re[65];
    digest_of(ch, 5, want);
    for (int pass = 0; pass < 2; pass++) { /* by a delta, then by a snapshot */
        tg_store_error_t err;
        int rc = pass == 0 ? tg_store_apply(s, 0, 1, ch, 5, &err)
                           : tg_store_replace_all(s, 2, ch, 5, &err);
        if (rc) fail_msg("pass %d: %s", pass, err.message);
        for (int i = 0; i < 5; i++)
            assert_stored(s, types[i], e[i]);
        store_digest(s, got, re);
        assert_string_equal(got, want);
        assert_string_equal(re, want);
        tg_store_reader_t r;
        json_t *j = NULL;
        uint8_t d[32] = {0};
        memset(d, 0xaa, sizeof d);
        assert_int_equal(tg_store_reader_init(s, &r), 0);
        assert_int_equal(tg_store_read_begin(&r), 0);
        assert_int_equal(tg_store_credential_entity_by_digest(&r, d, &j), 0);
        assert_true(json_equal(j, e[4]));
        json_decref(j);
        assert_int_equal(tg_store_consumer_entity_by_username(&r, TG_STR("carol"), &j), 0);
        assert_true(json_equal(j, e[2]));
        json_decref(j);
        assert_int_equal(tg_store_consumer_entity_by_username(&r, TG_STR("nobody"), &j),
                         -TG_ENOTFOUND);
        tg_store_read_end(&r);
        tg_store_reader_free(&r);
    }
    for (int i = 0; i < 5; i++)
        json_decref(e[i]);
    tg_store_close(s);
}

/* A snapshot is a set: the last put of an id, a username or a key digest wins. */
static void test_snapshot_duplicates(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    const char *c1 = "11111111-1111-4111-8111-111111111111",
               *c2 = "22222222-2222-4222-8222-222222222222",
               *k1 = "33333333-3333-4333-8333-333333333333",
               *k2 = "44444444-4444-4444-8444-444444444444";
    json_t *e[] = {
        json_pack("{s:s,s:s}", "id", c1, "username", "first"),
        json_pack("{s:s,s:s}", "id", c1, "username", "second"), /* same id: replaces */
        json_pack("{s:s,s:s}", "id", c2, "username", "second"), /* same name: owns it */
        json_pack("{s:s,s:{s:s},s:s}", "id", k1, "consumer", "id", c1, "key_digest", DIGEST),
        json_pack("{s:s,s:{s:s},s:s}", "id", k2, "consumer", "id", c2, "key_digest", DIGEST),
    };
    tg_store_change_t ch[5];
    for (int i = 0; i < 5; i++)
        ch[i] = up(i < 3 ? "consumers" : "keyauth_credentials", e[i]);
    assert_int_equal(tg_store_replace_all(s, 1, ch, 5, NULL), 0);
    /* What remains: c1 "second", c2 "second" (owner of the name), k2 (owner of the key). */
    tg_store_change_t final[] = {ch[1], ch[2], ch[4]};
    char want[65], got[65], re[65];
    digest_of(final, 3, want);
    store_digest(s, got, re);
    assert_string_equal(got, want);
    assert_string_equal(re, want);
    tg_store_reader_t r;
    json_t *j = NULL;
    tg_str_t v;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_consumer_entity_by_username(&r, TG_STR("second"), &j), 0);
    assert_string_equal(json_string_value(json_object_get(j, "id")), c2);
    json_decref(j);
    assert_int_equal(tg_store_consumer_by_username(&r, TG_STR("first"), &v), -TG_ENOTFOUND);
    assert_int_equal(tg_store_get(&r, "keyauth_credentials", tg_str_from(k1), &v), -TG_ENOTFOUND);
    size_t n;
    assert_int_equal(tg_store_count(&r, "keyauth_credentials", &n), 0);
    assert_int_equal(n, 1);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    for (int i = 0; i < 5; i++)
        json_decref(e[i]);
    tg_store_close(s);
}

/* The identity source over records: a credential lookup also caches its consumer, and any
 * write to the store makes both be read again. */
static void test_identity_source(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    json_t *cons = parse("{\"id\":\"" CONS_ID "\",\"username\":\"alice\",\"custom_id\":null,"
                         "\"created_at\":null,\"updated_at\":null,\"tags\":null}");
    json_t *cred = parse("{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},"
                         "\"key_digest\":\"" DIGEST "\",\"created_at\":null,\"tags\":null}");
    tg_store_change_t ch[] = {up("consumers", cons), up("keyauth_credentials", cred)};
    assert_int_equal(tg_store_apply(s, 0, 1, ch, 2, NULL), 0);
    tg_store_reader_t r;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    tg_identity_cache_t *cache = tg_identity_cache_new();
    tg_config_digest_t d;
    assert_int_equal(tg_config_digest_from_hex(DIGEST, &d), 0);
    for (int round = 0; round < 2; round++) {
        tg_identity_store_t ids;
        tg_identity_store_init(&ids, &r);
        ids.cache = cache;
        json_t *c = NULL, *k = NULL, *again = NULL;
        assert_int_equal(ids.source.credential_by_digest(ids.source.ud, d.sum, &k), 0);
        assert_true(json_equal(k, cred));
        assert_int_equal(ids.source.consumer_by_id(ids.source.ud, TG_STR(CONS_ID), &c), 0);
        assert_true(json_equal(c, cons));
        assert_int_equal(ids.source.consumer_by_username(ids.source.ud,
                                                         tg_str_from(round ? "bob" : "alice"),
                                                         &again),
                         0);
        assert_true(json_equal(again, cons));
        tg_identity_store_end(&ids);
        /* Renamed: the cached consumer (read along with the credential) must not survive. */
        json_object_set_new(cons, "username", json_string("bob"));
        tg_store_change_t rename = up("consumers", cons);
        assert_int_equal(tg_store_apply(s, 1 + round, 2 + round, &rename, 1, NULL), 0);
    }
    tg_identity_cache_free(cache);
    tg_store_reader_free(&r);
    json_decref(cons);
    json_decref(cred);
    tg_store_close(s);
}

/* ------------------------------------------------------------------ key_by_digest */

static tg_str_t jstr(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? (tg_str_t){json_string_value(v), json_string_length(v)}
                             : TG_STR_NULL;
}

static void assert_same_str(tg_str_t got, tg_str_t want, const char *what)
{
    if (!want.p) {
        if (got.p) fail_msg("%s: got \"%.*s\", want none", what, (int)got.len, got.p);
        return;
    }
    if (!got.p || !tg_str_eq(got, want))
        fail_msg("%s: got \"%.*s\", want \"%.*s\"", what, got.p ? (int)got.len : 4,
                 got.p ? got.p : "none", (int)want.len, want.p);
    assert_int_equal(got.p[got.len], '\0'); /* the request keeps them as C strings */
}

static bool field_value(tg_str_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    }
    return true;
}

/*
 * key_by_digest against an oracle: the two entities as the JSON lookups give them, and the
 * fields read out of that JSON the plain way.
 */
static void assert_key_answer(tg_store_reader_t *r, tg_identity_store_t *ids, const uint8_t d[32],
                              const char *what)
{
    tg_identity_key_t k;
    int rc = ids->source.key_by_digest(ids->source.ud, d, &k);
    assert_int_equal(tg_store_read_begin(r), 0);
    json_t *cred = NULL, *cons = NULL;
    int want_rc = tg_store_credential_entity_by_digest(r, d, &cred);
    tg_str_t ref = jstr(json_object_get(cred, "consumer"), "id");
    int want_consumer_rc = ref.p ? tg_store_get_entity(r, "consumers", ref, &cons) : -TG_ENOTFOUND;
    tg_store_read_end(r);
    if (rc != want_rc) fail_msg("%s: rc %d, want %d", what, rc, want_rc);
    if (rc) return;
    assert_int_equal(k.consumer_rc, want_consumer_rc);
    assert_same_str(k.id, jstr(cred, "id"), "credential id");
    assert_same_str(k.consumer_ref, ref, "consumer ref");
    assert_true(k.id_ok == (k.id.p && field_value(k.id)));
    uint8_t digest[32];
    tg_config_digest_t parsed;
    const char *hex = json_string_value(json_object_get(cred, "key_digest"));
    assert_true(k.digest_ok);
    assert_int_equal(tg_config_digest_from_hex(hex, &parsed), 0);
    memcpy(digest, parsed.sum, 32);
    assert_memory_equal(k.digest, digest, 32);
    const json_t *exp = json_object_get(cred, "expires_at");
    assert_true(k.expires == json_is_number(exp));
    if (k.expires) assert_true(k.expires_ms == json_number_value(exp) * 1000.0);
    tg_str_t cid = cons ? jstr(cons, "id") : TG_STR_NULL, name = jstr(cons, "username"),
             custom = jstr(cons, "custom_id");
    assert_same_str(k.consumer_id, cid, "consumer id");
    assert_same_str(k.username, name, "username");
    assert_same_str(k.custom_id, custom, "custom_id");
    assert_true(k.consumer_id_ok == (cid.p && field_value(cid)));
    assert_true(k.username_ok == (name.p && field_value(name)));
    assert_true(k.custom_id_ok == (custom.p && field_value(custom)));
    json_decref(cred);
    json_decref(cons);
}

/* key-auth's lookup reads records in place and canonical JSON parsed, every combination of
 * the two, and gives what the JSON says; from the cache too, and again after a write. */
static void test_key_lookup_forms(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    const char *c_rec = "11111111-1111-4111-8111-111111111111",
               *c_json = "22222222-2222-4222-8222-222222222222";
    json_t *e[] = {
        /* consumers: a record, canonical JSON (a real), a plain id, a name with a BEL */
        json_pack("{s:s,s:s,s:s,s:i,s:n,s:[s]}", "id", c_rec, "username", "alice", "custom_id",
                  "A-1", "created_at", 1700000000, "updated_at", "tags", "t"),
        json_pack("{s:s,s:s,s:f}", "id", c_json, "username", "bob", "created_at", 1.5),
        json_pack("{s:s,s:n,s:s}", "id", "plain-consumer", "username", "custom_id", "P\x07"),
        json_pack("{s:s,s:s}", "id", CONS_ID, "username", "ring\x07"),
        /* credentials: record → record consumer, with an expiry */
        json_pack("{s:s,s:{s:s},s:s,s:I,s:n}", "id", "aaaaaaaa-0000-4000-8000-000000000001",
                  "consumer", "id", c_rec, "key_digest",
                  "0101010101010101010101010101010101010101010101010101010101010101", "expires_at",
                  (json_int_t)1900000000, "tags"),
        /* record → JSON consumer */
        json_pack("{s:s,s:{s:s},s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000002", "consumer",
                  "id", c_json, "key_digest",
                  "0202020202020202020202020202020202020202020202020202020202020202"),
        /* JSON (upper-case digest, a real expiry) → record consumer */
        json_pack("{s:s,s:{s:s},s:s,s:f}", "id", "aaaaaaaa-0000-4000-8000-000000000003", "consumer",
                  "id", c_rec, "key_digest",
                  "03030303030303030303030303030303030303030303030303030303030303AB", "expires_at",
                  1.9e9),
        /* JSON (a plain id) → JSON consumer with a plain id */
        json_pack("{s:s,s:{s:s},s:s}", "id", "cred-plain", "consumer", "id", "plain-consumer",
                  "key_digest", "0404040404040404040404040404040404040404040404040404040404040404"),
        /* record → a consumer that is not there */
        json_pack("{s:s,s:{s:s},s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000005", "consumer",
                  "id", "33333333-3333-4333-8333-333333333333", "key_digest",
                  "0505050505050505050505050505050505050505050505050505050505050505"),
        /* record → the consumer whose name may not be sent */
        json_pack("{s:s,s:{s:s},s:s}", "id", "aaaaaaaa-0000-4000-8000-000000000006", "consumer",
                  "id", CONS_ID, "key_digest",
                  "0606060606060606060606060606060606060606060606060606060606060606"),
    };
    enum { N = sizeof e / sizeof e[0], NCONS = 4 };
    tg_store_change_t ch[N];
    for (size_t i = 0; i < N; i++) {
        assert_non_null(e[i]);
        ch[i] = up(i < NCONS ? "consumers" : "keyauth_credentials", e[i]);
    }
    uint8_t digests[N - NCONS + 1][32];
    for (size_t i = NCONS; i < N; i++) {
        tg_config_digest_t d;
        assert_int_equal(
            tg_config_digest_from_hex(json_string_value(json_object_get(e[i], "key_digest")), &d),
            0);
        memcpy(digests[i - NCONS], d.sum, 32);
    }
    memset(digests[N - NCONS], 0x77, 32); /* no such key */
    tg_identity_cache_t *cache = tg_identity_cache_new();
    for (int pass = 0; pass < 2; pass++) { /* by a delta, then by a snapshot */
        tg_store_error_t err;
        int rc = pass == 0 ? tg_store_apply(s, 0, 1, ch, N, &err)
                           : tg_store_replace_all(s, 2, ch, N, &err);
        if (rc) fail_msg("pass %d: %s", pass, err.message);
        tg_store_reader_t r;
        assert_int_equal(tg_store_reader_init(s, &r), 0);
        for (int round = 0; round < 2; round++) { /* read, then from the cache */
            tg_identity_store_t ids;
            tg_identity_store_init(&ids, &r);
            ids.cache = cache;
            for (size_t i = 0; i <= N - NCONS; i++) {
                char what[64];
                snprintf(what, sizeof what, "pass %d round %d key %zu", pass, round, i);
                assert_key_answer(&r, &ids, digests[i], what);
            }
            tg_identity_store_end(&ids);
        }
        tg_store_reader_free(&r);
    }
    tg_identity_cache_free(cache);
    for (size_t i = 0; i < N; i++)
        json_decref(e[i]);
    tg_store_close(s);
}

/* ------------------------------------------------------------------ owned records */

/* Joining and splitting: the copy is invisible to decode and read; malformed values refused. */
static void test_owned_record_form(void **state)
{
    (void)state;
    json_t *cons = parse("{\"id\":\"" CONS_ID "\",\"username\":\"alice\"}");
    json_t *cred = parse("{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},"
                         "\"key_digest\":\"" DIGEST "\"}");
    uint8_t crec[TG_RECORD_MAX], orec[TG_RECORD_MAX], joined[2 * TG_RECORD_MAX], key[32];
    size_t cn = tg_record_encode(TG_RECORD_CREDENTIAL, cred, crec, sizeof crec);
    size_t on = tg_record_encode(TG_RECORD_CONSUMER, cons, orec, sizeof orec);
    assert_true(cn > 0 && on > 0);
    tg_str_t c = {(const char *)crec, cn}, o = {(const char *)orec, on};
    size_t jn = tg_record_join(c, o, joined, sizeof joined);
    assert_true(jn > cn + on);
    tg_str_t j = {(const char *)joined, jn}, got_c, got_o;
    assert_true(tg_record_is_compact(j));
    assert_true(tg_record_split(j, &got_c, &got_o));
    assert_true(tg_str_eq(got_c, c) && tg_str_eq(got_o, o));
    assert_true(tg_record_split(c, &got_c, &got_o)); /* a plain record: itself, no owner */
    assert_true(tg_str_eq(got_c, c) && got_o.len == 0);
    assert_int_equal(key_of(TG_RECORD_CREDENTIAL, cred, key), 32);
    json_t *back = tg_record_decode(TG_RECORD_CREDENTIAL, (tg_str_t){(const char *)key, 32}, j);
    assert_true(json_equal(back, cred));
    json_decref(back);
    tg_record_value_t v[TG_RECORD_FIELDS_MAX];
    assert_true(tg_record_read(TG_RECORD_CREDENTIAL, j, v));
    uint8_t owner_key[TG_RECORD_UUID_LEN];
    assert_true(tg_record_uuid_pack(TG_STR(CONS_ID), owner_key));
    assert_memory_equal(v[TG_RECORD_CREDENTIAL_CONSUMER].s.p, owner_key, TG_RECORD_UUID_LEN);
    /* a consumer value is never owned; truncations and a bad inner tag are malformed */
    assert_false(tg_record_read(TG_RECORD_CONSUMER, j, v));
    for (size_t n = 1; n < cn + 3; n++)
        assert_false(tg_record_split((tg_str_t){(const char *)joined, n}, &got_c, &got_o));
    /* the credential's length written overlong (two bytes where one will do): refused, so
     * a stored value is read from one byte string only (found by fuzz_store_record) */
    assert_true(cn < 0x80 && joined[1] == cn);
    uint8_t overlong[2 * TG_RECORD_MAX + 1];
    overlong[0] = joined[0];
    overlong[1] = (uint8_t)(cn | 0x80);
    overlong[2] = 0;
    memcpy(overlong + 3, joined + 2, jn - 2);
    assert_false(tg_record_split((tg_str_t){(const char *)overlong, jn + 1}, &got_c, &got_o));
    joined[2] = 0x7b;
    assert_false(tg_record_split(j, &got_c, &got_o));
    assert_null(tg_record_decode(TG_RECORD_CREDENTIAL, (tg_str_t){(const char *)key, 32}, j));
    assert_int_equal(tg_record_join(o, TG_STR("{}"), joined, sizeof joined), 0);
    assert_int_equal(tg_record_join(c, o, joined, cn), 0); /* does not fit */
    json_decref(cons);
    json_decref(cred);
}

/* Whether the credential under digest byte `b` is stored with a copy of its consumer. */
static bool stored_owned(tg_store_t *s, uint8_t b)
{
    uint8_t d[32];
    memset(d, b, sizeof d);
    tg_store_reader_t r;
    tg_store_raw_t raw;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_credential_raw(&r, d, &raw), 0);
    bool owned = raw.value.len && (uint8_t)raw.value.p[0] == TG_RECORD_TAG_OWNED;
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return owned;
}

static json_t *owned_consumer(int n, const char *username)
{
    char id[64];
    snprintf(id, sizeof id, "c0000000-0000-4000-8000-00000000000%d", n);
    return json_pack("{s:s,s:s}", "id", id, "username", username);
}

static json_t *owned_credential(int n, int consumer)
{
    char id[64], cid[64], hex[65];
    snprintf(id, sizeof id, "e0000000-0000-4000-8000-00000000000%d", n);
    snprintf(cid, sizeof cid, "c0000000-0000-4000-8000-00000000000%d", consumer);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", 0x10 + n);
    return json_pack("{s:s,s:{s:s},s:s}", "id", id, "consumer", "id", cid, "key_digest", hex);
}

/* After every write: key-auth's answers equal the JSON lookups', and the digest is exact. */
static void check_owned(tg_store_t *s, tg_identity_cache_t *cache, const char *what)
{
    tg_store_reader_t r;
    tg_identity_store_t ids;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    tg_identity_store_init(&ids, &r);
    ids.cache = cache;
    for (int n = 1; n <= 4; n++) {
        uint8_t d[32];
        char label[96];
        memset(d, 0x10 + n, sizeof d);
        snprintf(label, sizeof label, "%s, key %d", what, n);
        assert_key_answer(&r, &ids, d, label);
    }
    tg_identity_store_end(&ids);
    tg_store_reader_free(&r);
    char kept[65], recomputed[65];
    store_digest(s, kept, recomputed);
    assert_string_equal(kept, recomputed);
}

/*
 * Credentials carry a copy of their consumer (one search instead of two), and a consumer a
 * delta changes is read from its own record from then on: renames, deletes, a delete and
 * re-create under the same id, a credential written after its consumer changed, and a
 * snapshot making every copy current again.
 */
static void test_owned_copies(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    tg_identity_cache_t *cache = tg_identity_cache_new();
    json_t *e[] = {owned_consumer(1, "alice"), owned_consumer(2, "bob"),
                   owned_credential(1, 1), owned_credential(2, 2)};
    tg_store_change_t snap[] = {up("consumers", e[0]), up("consumers", e[1]),
                                up("keyauth_credentials", e[2]),
                                up("keyauth_credentials", e[3])};
    assert_int_equal(tg_store_replace_all(s, 1, snap, 4, NULL), 0);
    assert_true(stored_owned(s, 0x11) && stored_owned(s, 0x12));
    check_owned(s, cache, "snapshot");

    json_t *alice2 = owned_consumer(1, "alice-renamed");
    tg_store_change_t rename = up("consumers", alice2);
    assert_int_equal(tg_store_apply(s, 1, 2, &rename, 1, NULL), 0);
    assert_true(stored_owned(s, 0x11)); /* the copy still says alice: it must not be used */
    check_owned(s, cache, "rename");

    /* a new consumer and its key in one delta: copied; a key of the renamed one: not */
    json_t *carol = owned_consumer(3, "carol"), *k3 = owned_credential(3, 3),
           *k4 = owned_credential(4, 1);
    tg_store_change_t add[] = {up("consumers", carol), up("keyauth_credentials", k3),
                               up("keyauth_credentials", k4)};
    assert_int_equal(tg_store_apply(s, 2, 3, add, 3, NULL), 0);
    assert_true(stored_owned(s, 0x13));
    assert_false(stored_owned(s, 0x14));
    check_owned(s, cache, "new consumer");

    /* carol deleted and created again under the same id with another name */
    json_t *carol2 = owned_consumer(3, "carol-again");
    tg_store_change_t again[] = {
        {"consumers", json_string_value(json_object_get(carol, "id")), TG_STORE_DELETE, NULL},
        up("consumers", carol2)};
    assert_int_equal(tg_store_apply(s, 3, 4, again, 2, NULL), 0);
    check_owned(s, cache, "delete and re-create");

    /* bob deleted: his key's copy names a consumer that is gone */
    tg_store_change_t gone = {"consumers", json_string_value(json_object_get(e[1], "id")),
                              TG_STORE_DELETE, NULL};
    assert_int_equal(tg_store_apply(s, 4, 5, &gone, 1, NULL), 0);
    check_owned(s, cache, "consumer deleted");

    /* a snapshot of the current state: every key copied again, the marks gone */
    tg_store_change_t now[] = {up("consumers", alice2), up("consumers", carol2),
                               up("keyauth_credentials", e[2]), up("keyauth_credentials", e[3]),
                               up("keyauth_credentials", k3), up("keyauth_credentials", k4)};
    assert_int_equal(tg_store_replace_all(s, 6, now, 6, NULL), 0);
    assert_true(stored_owned(s, 0x11) && stored_owned(s, 0x13) && stored_owned(s, 0x14));
    assert_false(stored_owned(s, 0x12)); /* bob is not in it: no copy to make */
    check_owned(s, cache, "second snapshot");
    tg_store_close(s);

    /* reopened: the same answers from disk */
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    check_owned(s, cache, "reopened");
    tg_store_close(s);
    tg_identity_cache_free(cache);
    json_t *all[] = {alice2, carol, k3, k4, carol2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        json_decref(all[i]);
    for (size_t i = 0; i < sizeof e / sizeof e[0]; i++)
        json_decref(e[i]);
}

/* Sets the store's meta "format" as an older or newer binary would have written it (0: only
 * reads it); returns the format it found. */
static uint8_t store_format(const char *dir, uint8_t format)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    uint8_t v[4] = {0, 0, 0, format};
    MDB_val k = {6, "format"}, d = {sizeof v, v}, old;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_get(txn, meta, &k, &old), 0);
    assert_int_equal(old.mv_size, 4);
    uint8_t found = ((const uint8_t *)old.mv_data)[3];
    if (format) assert_int_equal(mdb_put(txn, meta, &k, &d, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    return found;
}

/* A format-2 store (plain records only) is upgraded in place and serves its keys, which a
 * snapshot then copies; a format this binary does not know is refused. */
static void test_store_format_upgrade(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = NULL;
    json_t *e[] = {owned_consumer(1, "alice"), owned_credential(1, 1)};
    tg_store_change_t ch[] = {up("consumers", e[0]), up("keyauth_credentials", e[1])};
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    assert_int_equal(tg_store_apply(s, 0, 1, ch, 2, NULL), 0);
    tg_store_close(s);
    assert_int_equal(store_format(f->dir, 2), 3);
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    tg_identity_cache_t *cache = tg_identity_cache_new();
    check_owned(s, cache, "upgraded");
    assert_int_equal(tg_store_replace_all(s, 2, ch, 2, NULL), 0);
    assert_true(stored_owned(s, 0x11));
    check_owned(s, cache, "upgraded, then a snapshot");
    tg_store_close(s);
    tg_identity_cache_free(cache);
    assert_int_equal(store_format(f->dir, 9), 3); /* opening upgraded it */

    assert_int_equal(tg_store_open(f->dir, 0, &s), -TG_EUNSUPPORTED);
    json_decref(e[0]);
    json_decref(e[1]);
}

/* Reading a record in place gives what decoding it gives. */
static void test_record_read(void **state)
{
    (void)state;
    json_t *cons = parse("{\"id\":\"" CONS_ID "\",\"username\":\"\",\"custom_id\":\"c\\u00e9\","
                         "\"created_at\":-5,\"updated_at\":null,\"tags\":[\"a\",\"bb\"]}");
    json_t *cred = parse("{\"id\":\"" CRED_ID "\",\"consumer\":{\"id\":\"" CONS_ID "\"},"
                         "\"key_digest\":\"" DIGEST "\",\"expires_at\":1900000000}");
    uint8_t rec[TG_RECORD_MAX];
    tg_record_value_t v[TG_RECORD_FIELDS_MAX];
    size_t n = tg_record_encode(TG_RECORD_CONSUMER, cons, rec, sizeof rec);
    assert_true(n > 0);
    assert_true(tg_record_read(TG_RECORD_CONSUMER, (tg_str_t){(const char *)rec, n}, v));
    assert_int_equal(v[TG_RECORD_CONSUMER_USERNAME].state, TG_RECORD_VALUE);
    assert_int_equal(v[TG_RECORD_CONSUMER_USERNAME].s.len, 0);
    assert_true(tg_str_eq(v[TG_RECORD_CONSUMER_CUSTOM_ID].s, TG_STR("c\xc3\xa9")));
    assert_int_equal(v[TG_RECORD_CONSUMER_CREATED_AT].i, -5);
    assert_int_equal(v[TG_RECORD_CONSUMER_UPDATED_AT].state, TG_RECORD_NULL);
    assert_int_equal(v[TG_RECORD_CONSUMER_TAGS].state, TG_RECORD_VALUE);
    for (size_t cut = 0; cut < n; cut++) /* every truncation is refused, as decode refuses */
        assert_false(tg_record_read(TG_RECORD_CONSUMER, (tg_str_t){(const char *)rec, cut}, v));
    n = tg_record_encode(TG_RECORD_CREDENTIAL, cred, rec, sizeof rec);
    assert_true(n > 0);
    assert_true(tg_record_read(TG_RECORD_CREDENTIAL, (tg_str_t){(const char *)rec, n}, v));
    char id[37];
    tg_record_uuid_unpack((const uint8_t *)v[TG_RECORD_CREDENTIAL_ID].s.p, id);
    assert_string_equal(id, CRED_ID);
    tg_record_uuid_unpack((const uint8_t *)v[TG_RECORD_CREDENTIAL_CONSUMER].s.p, id);
    assert_string_equal(id, CONS_ID);
    assert_int_equal(v[TG_RECORD_CREDENTIAL_EXPIRES_AT].i, 1900000000);
    assert_int_equal(v[TG_RECORD_CREDENTIAL_CREATED_AT].state, TG_RECORD_ABSENT);
    assert_int_equal(v[TG_RECORD_CREDENTIAL_TAGS].state, TG_RECORD_ABSENT);
    json_decref(cons);
    json_decref(cred);
}

static off_t used_bytes(const char *dir)
{
    char path[160];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* 100 000 consumers, each with a credential, as a declarative load writes them. */
static void test_bytes_per_key(void **state)
{
    struct fx *f = *state;
    enum { N = 100000 };
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(f->dir, 0, &s), 0);
    off_t empty = used_bytes(f->dir);
    tg_store_change_t *ch = calloc(2 * N, sizeof *ch);
    for (int i = 0; i < N; i++) {
        char cons[40], cred[40], name[32], key[32], hex[65];
        uint8_t d[32];
        tg_uuid_v4(cons);
        tg_uuid_v4(cred);
        snprintf(name, sizeof name, "user-%d", i);
        snprintf(key, sizeof key, "key-%d", i);
        tg_sha256(key, strlen(key), d);
        tg_hex_encode(d, 32, hex);
        json_t *c = json_pack("{s:s,s:s,s:n,s:n,s:n,s:n}", "id", cons, "username", name,
                              "custom_id", "created_at", "updated_at", "tags");
        json_t *k = json_pack("{s:s,s:{s:s},s:s,s:n,s:n}", "id", cred, "consumer", "id", cons,
                              "key_digest", hex, "created_at", "tags");
        ch[2 * i] = up("consumers", c);
        ch[2 * i + 1] = up("keyauth_credentials", k);
    }
    assert_int_equal(tg_store_replace_all(s, 1, ch, 2 * N, NULL), 0);
    double per_key = (double)(used_bytes(f->dir) - empty) / N;
    print_message("[ store ] %d consumers with a credential each: %.0f bytes per key on disk\n", N,
                  per_key);
    assert_true(per_key < 240); /* the budget is 256 with the DP's memory */
    for (int i = 0; i < 2 * N; i++)
        json_decref((json_t *)ch[i].entity);
    free(ch);
    tg_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consumer_round_trip),
        cmocka_unit_test(test_credential_round_trip),
        cmocka_unit_test(test_fallbacks),
        cmocka_unit_test(test_malformed_records),
        cmocka_unit_test(test_id_keys),
        cmocka_unit_test(test_random_entities),
        cmocka_unit_test_setup_teardown(test_store_mixed_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_lookup_forms, setup, teardown),
        cmocka_unit_test(test_record_read),
        cmocka_unit_test(test_owned_record_form),
        cmocka_unit_test_setup_teardown(test_owned_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_format_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_per_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
