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

/* from_text must build exactly the message from_json builds from the parsed text (its fast path
 * for flat documents and its fallback to jansson alike), and fail exactly where it fails. */
static void assert_text_matches_json(const char *type, const char *text)
{
    char e1[256] = "", e2[256] = "";
    tg_pb_entity_t *a = tg_proto_entity_from_text(type, text, strlen(text), e1, sizeof(e1));
    json_t *j = json_loads(text, 0, NULL);
    tg_pb_entity_t *b = j ? tg_proto_entity_from_json(type, j, e2, sizeof(e2)) : NULL;
    json_decref(j);
    if (!a || !b) {
        if (a || b) fail_msg("%s %s: from_text %s, from_json %s", type, text, a ? "ok" : e1,
                             b ? "ok" : e2);
        if (j) assert_string_equal(e1, e2); /* the same words when the text is JSON */
        tg_proto_entity_free(a);
        tg_proto_entity_free(b);
        return;
    }
    size_t na = protobuf_c_message_get_packed_size(&a->base);
    size_t nb = protobuf_c_message_get_packed_size(&b->base);
    uint8_t *pa = malloc(na + 1), *pb = malloc(nb + 1);
    protobuf_c_message_pack(&a->base, pa);
    protobuf_c_message_pack(&b->base, pb);
    if (na != nb || memcmp(pa, pb, na) != 0) fail_msg("%s %s: messages differ", type, text);
    free(pa);
    free(pb);
    tg_proto_entity_free(a);
    tg_proto_entity_free(b);
}

static void text_reader_builds_what_json_builds(void **state)
{
    (void)state;
    static const struct {
        const char *type, *text;
    } cases[] = {
        /* as PostgreSQL's jsonb::text writes them */
        {"consumers", "{\"id\": \"6c8a3e4e-38a5-4bb5-9e8c-3b2a9c3b0a01\", \"tags\": null, "
                      "\"username\": \"bench-0000001\", \"custom_id\": null, \"created_at\": "
                      "1795953261, \"updated_at\": 1795953261}"},
        {"consumers", "{\"id\":\"6c8a3e4e-38a5-4bb5-9e8c-3b2a9c3b0a01\",\"tags\":[\"a\",\"b c\"],"
                      "\"username\":\"x\",\"custom_id\":\"c-1\",\"created_at\":-5}"},
        {"consumers", "{\"id\": \"6c8a3e4e-38a5-4bb5-9e8c-3b2a9c3b0a01\", \"tags\": []}"},
        {"consumers", "{}"},
        {"consumers", "  { }  "},
        {"keyauth_credentials",
         "{\"id\": \"6c8a3e4e-38a5-4bb5-9e8c-3b2a9c3b0a02\", \"tags\": null, \"consumer\": "
         "{\"id\": \"6c8a3e4e-38a5-4bb5-9e8c-3b2a9c3b0a01\"}, \"created_at\": 1795953261, "
         "\"key_digest\": \"00ff10ab00ff10ab00ff10ab00ff10ab00ff10ab00ff10ab00ff10ab00ff10ab\", "
         "\"expires_at\": 1795999999}"},
        {"keyauth_credentials", "{\"consumer\": {\"id\": \"c\"}, \"ttl\": 30, \"key_digest\": \"AB\"}"},
        /* the general path, same result */
        {"consumers", "{\"id\": \"x\", \"username\": \"caf\\u00e9 \\\"q\\\"\"}"},
        {"consumers", "{\"id\": \"x\", \"username\": \"caf\xc3\xa9\"}"},
        {"consumers", "{\"id\": \"x\", \"created_at\": 12345678901234567890}"},
        {"consumers", "{\"id\": \"x\", \"created_at\": 9223372036854775807}"},
        {"services", "{\"id\": \"s\", \"name\": \"svc\", \"host\": \"h\", \"port\": 80, "
                     "\"protocol\": \"http\", \"retries\": 5, \"connect_timeout\": 60000, "
                     "\"enabled\": true, \"tags\": null}"},
        {"routes", "{\"id\": \"r\", \"paths\": [\"/a\", \"/b\"], \"service\": {\"id\": \"s\"}, "
                   "\"strip_path\": false, \"hosts\": null, \"headers\": {\"x\": [\"1\"]}}"},
        {"plugins", "{\"id\": \"p\", \"name\": \"key-auth\", \"enabled\": true, \"config\": "
                    "{\"key_names\": [\"apikey\"], \"hide_credentials\": false}, \"route\": null}"},
        /* refused, with from_json's words */
        {"consumers", "{\"id\": \"x\", \"nonsense\": 1}"},
        {"consumers", "{\"id\": 5}"},
        {"consumers", "{\"id\": \"x\", \"created_at\": 1.5}"},
        {"consumers", "{\"id\": \"x\", \"created_at\": \"1\"}"},
        {"consumers", "{\"id\": \"x\", \"tags\": [1]}"},
        {"consumers", "{\"id\": \"x\", \"id\": \"y\"}"},
        {"keyauth_credentials", "{\"id\": \"k\", \"key\": \"plaintext\"}"},
        {"keyauth_credentials", "{\"id\": \"k\", \"key_digest\": \"xyz\"}"},
        {"keyauth_credentials", "{\"id\": \"k\", \"consumer\": {\"id\": null}}"},
        {"keyauth_credentials", "{\"id\": \"k\", \"consumer\": {\"id\": \"c\", \"x\": 1}}"},
        {"keyauth_credentials", "{\"id\": \"k\", \"consumer\": \"c\"}"},
        /* not JSON at all */
        {"consumers", "{\"id\": \"x\""},
        {"consumers", "{\"id\": \"x\"} trailing"},
        {"consumers", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_text_matches_json(cases[i].type, cases[i].text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_description_matches_its_message),
        cmocka_unit_test(entities_round_trip_exactly),
        cmocka_unit_test(credentials_carry_the_digest_never_the_key),
        cmocka_unit_test(bad_input_is_refused_with_the_field),
        cmocka_unit_test(canonical_text_is_janssons_byte_for_byte),
        cmocka_unit_test(text_reader_builds_what_json_builds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
