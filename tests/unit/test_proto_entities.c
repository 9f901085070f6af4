/*
 * test_proto_entities.c — each entity description of lib/entities.c against its sync message,
 * and the JSON -> message -> wire -> message -> JSON round trip that both planes' config digests
 * rely on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config_digest.h"
#include "entity_codec.h"
#include "schema.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const credential_extras[] = {"key_digest", "expires_at", NULL};

static void each_description_matches_its_message(void **state)
{
    (void)state;
    for (size_t i = 0; tg_entities[i]; i++) {
        const char *type = tg_entities[i]->name;
        const char *const *extras =
            strcmp(type, "keyauth_credentials") == 0 ? credential_extras : NULL;
        char err[256] = "";
        int rc = tg_proto_entity_check_description(type, extras, err, sizeof(err));
        if (rc != 0) fail_msg("%s", err);
        assert_non_null(tg_proto_entity_descriptor(type));
    }
}

/* JSON -> Entity -> bytes -> Entity -> JSON; returns the decoded JSON. */
static json_t *through_the_wire(const char *type, const json_t *in)
{
    char err[256] = "";
    tg_pb_entity_t *e = tg_proto_entity_from_json(type, in, err, sizeof(err));
    if (!e) fail_msg("encode %s: %s", type, err);
    size_t n = protobuf_c_message_get_packed_size(&e->base);
    uint8_t *buf = malloc(n + 1);
    protobuf_c_message_pack(&e->base, buf);
    tg_proto_entity_free(e);
    tg_pb_entity_t *back = tollgate__sync__v1__entity__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(back);
    json_t *out = tg_proto_entity_to_json(type, back, err, sizeof(err));
    if (!out) fail_msg("decode %s: %s", type, err);
    tollgate__sync__v1__entity__free_unpacked(back, NULL);
    return out;
}

static void assert_same_canonical(const json_t *a, const json_t *b)
{
    char *ca = tg_config_digest_canonical(a, NULL);
    char *cb = tg_config_digest_canonical(b, NULL);
    assert_string_equal(ca, cb);
    free(ca);
    free(cb);
}

/* A complete entity as the schema fills it (every field present, nulls included). */
static json_t *complete(const char *type, const char *input_json, const char *id)
{
    json_t *input = json_loads(input_json, 0, NULL);
    assert_non_null(input);
    json_t *errs = NULL;
    json_t *e = tg_schema_validate(tg_schema_by_name(type), TG_OP_INSERT, input, NULL, &errs);
    if (!e) {
        char *m = json_dumps(errs, 0);
        fail_msg("%s invalid: %s", type, m);
    }
    json_decref(input);
    json_object_set_new(e, "id", json_string(id));
    json_object_set_new(e, "created_at", json_integer(1700000000));
    if (json_object_get(e, "updated_at"))
        json_object_set_new(e, "updated_at", json_integer(1700000001));
    return e;
}

static void entities_round_trip_exactly(void **state)
{
    (void)state;
    static const struct {
        const char *type, *input;
    } cases[] = {
        {"services",
         "{\"name\":\"svc\",\"protocol\":\"https\",\"host\":\"example.com\",\"tags\":[\"a\",\"b\"],"
         "\"ca_certificates\":[]}"},
        {"routes", "{\"paths\":[\"/x\",\"~/y$\"],\"hosts\":[\"*.ex.com\"],\"methods\":[\"GET\"],"
                   "\"headers\":{\"x-v\":[\"1\",\"2\"]},\"service\":{\"id\":"
                   "\"6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c11\"},\"regex_priority\":-3}"},
        {"consumers", "{\"username\":\"ünïcode\",\"custom_id\":\"c-1\"}"},
        {"plugins", "{\"name\":\"rate-limiting\",\"config\":{\"minute\":5,\"hour\":100},"
                    "\"consumer\":{\"id\":\"6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c12\"}}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *e = complete(cases[i].type, cases[i].input, "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c13");
        json_t *back = through_the_wire(cases[i].type, e);
        assert_same_canonical(e, back);
        json_decref(e);
        json_decref(back);
    }
}

static void credentials_carry_the_digest_never_the_key(void **state)
{
    (void)state;
    json_t *cred = json_pack(
        "{s:s,s:i,s:{s:s},s:n,s:s,s:i}", "id", "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c14", "created_at",
        1700000000, "consumer", "id", "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c15", "tags", "key_digest",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "expires_at",
        1800000000);
    json_t *back = through_the_wire("keyauth_credentials", cred);
    assert_same_canonical(cred, back);
    json_decref(back);

    /* no expiry: the key stays absent rather than null */
    json_object_del(cred, "expires_at");
    back = through_the_wire("keyauth_credentials", cred);
    assert_null(json_object_get(back, "expires_at"));
    assert_same_canonical(cred, back);
    json_decref(back);

    char err[256];
    json_object_set_new(cred, "key", json_string("plaintext"));
    assert_null(tg_proto_entity_from_json("keyauth_credentials", cred, err, sizeof(err)));
    assert_non_null(strstr(err, "secret"));
    json_object_del(cred, "key");
    json_object_set_new(cred, "key_digest", json_string("zz"));
    assert_null(tg_proto_entity_from_json("keyauth_credentials", cred, err, sizeof(err)));
    json_decref(cred);
}

static void bad_input_is_refused_with_the_field(void **state)
{
    (void)state;
    char err[256];
    json_t *e = json_pack("{s:s,s:s}", "id", "x", "surprise", "field");
    assert_null(tg_proto_entity_from_json("consumers", e, err, sizeof(err)));
    assert_non_null(strstr(err, "consumers.surprise"));
    json_decref(e);

    e = json_pack("{s:s,s:s}", "id", "x", "port", "eighty");
    assert_null(tg_proto_entity_from_json("services", e, err, sizeof(err)));
    assert_non_null(strstr(err, "services.port"));
    json_decref(e);

    e = json_pack("{s:s,s:[i]}", "id", "x", "tags", 7);
    assert_null(tg_proto_entity_from_json("consumers", e, err, sizeof(err)));
    json_decref(e);

    e = json_pack("{s:s}", "id", "x");
    assert_null(tg_proto_entity_from_json("upstreams", e, err, sizeof(err)));
    tg_pb_entity_t *m = tg_proto_entity_from_json("consumers", e, err, sizeof(err));
    assert_non_null(m);
    assert_null(tg_proto_entity_to_json("services", m, err, sizeof(err)));
    tg_proto_entity_free(m);
    json_decref(e);
}

/* tg_proto_entity_canonical (written from the message) against jansson's dump of the JSON form. */
static void assert_canonical_matches(const char *type, const json_t *in)
{
    char err[256] = "";
    tg_pb_entity_t *e = tg_proto_entity_from_json(type, in, err, sizeof(err));
    if (!e) fail_msg("encode %s: %s", type, err);
    json_t *j = tg_proto_entity_to_json(type, e, err, sizeof(err));
    assert_non_null(j);
    char *want = tg_config_digest_canonical(j, NULL);
    size_t len = 0;
    char *got = tg_proto_entity_canonical(type, e, &len, err, sizeof(err));
    if (!got) fail_msg("canonical %s: %s", type, err);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
    free(want);
    json_decref(j);
    tg_proto_entity_free(e);
}

static void canonical_text_is_janssons_byte_for_byte(void **state)
{
    (void)state;
    /* every ASCII byte in a username and a tag (control characters, quotes, backslash, DEL) */
    char all[128];
    for (int c = 1; c < 128; c++)
        all[c - 1] = (char)c;
    all[127] = '\0';
    const char *names[] = {"bench-0000001", "", all, "ünïcode", "a\"b\\c/d", "\x7f"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        json_t *c =
            json_pack("{s:s,s:i,s:I,s:s,s:n,s:[s,s]}", "id", "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c13",
                      "created_at", -5, "updated_at", (json_int_t)INT64_MAX, "username", names[i],
                      "custom_id", "tags", names[i], "t");
        assert_canonical_matches("consumers", c);
        json_object_set_new(c, "tags", json_array());
        json_object_set_new(c, "custom_id", json_string(names[i]));
        assert_canonical_matches("consumers", c);
        json_decref(c);
    }
    json_t *cred = json_pack(
        "{s:s,s:i,s:{s:s},s:n,s:s,s:i}", "id", "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c14", "created_at",
        1700000000, "consumer", "id", "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c15", "tags", "key_digest",
        "9F86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "expires_at",
        1800000000);
    assert_canonical_matches("keyauth_credentials", cred);
    static const json_int_t ints[] = {0, 9, 10, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        json_object_set_new(cred, "expires_at", json_integer(ints[i]));
        assert_canonical_matches("keyauth_credentials", cred);
    }
    json_object_del(cred, "expires_at");
    assert_canonical_matches("keyauth_credentials", cred);
    json_decref(cred);
    /* the general path: JSON-carrying fields, reals, booleans */
    json_t *svc = complete(
        "services",
        "{\"name\":\"svc\",\"protocol\":\"https\",\"host\":\"example.com\",\"tags\":[\"a\"],"
        "\"ca_certificates\":[]}",
        "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c16");
    assert_canonical_matches("services", svc);
    json_decref(svc);
    json_t *plugin =
        complete("plugins", "{\"name\":\"rate-limiting\",\"config\":{\"minute\":5,\"hour\":100}}",
                 "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f5c17");
    assert_canonical_matches("plugins", plugin);
    json_decref(plugin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_description_matches_its_message),
        cmocka_unit_test(entities_round_trip_exactly),
        cmocka_unit_test(credentials_carry_the_digest_never_the_key),
        cmocka_unit_test(bad_input_is_refused_with_the_field),
        cmocka_unit_test(canonical_text_is_janssons_byte_for_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
