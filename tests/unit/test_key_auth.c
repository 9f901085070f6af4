/*
 * test_key_auth.c — the key-auth plugin driven through a hand-built request and a fake
 * identity source: every option and message of kong-compat.md §2 (where the key is looked
 * for and in which order, duplicates, empty keys, WWW-Authenticate and realm,
 * hide_credentials in header/query/body, anonymous by id and username, credential TTL,
 * upstream consumer headers and spoofing protection, run_on_preflight, identity_realms),
 * and the identity source over a real LMDB store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crypto.h"
#include "error.h"
#include "http.h"
#include "identity_store.h"
#include "plugin.h"

#include <ctype.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALICE_ID "a11ce000-0000-4000-8000-000000000001"
#define BOB_ID "b0b00000-0000-4000-8000-000000000002"
#define ANON_ID "a0a00000-0000-4000-8000-000000000003"
#define CRED_ID "c0ed0000-0000-4000-8000-000000000004"
#define BOB_CRED_ID "c0ed0000-0000-4000-8000-000000000005"
#define OLD_CRED_ID "c0ed0000-0000-4000-8000-000000000006"
#define NOW_MS INT64_C(1754923669000) /* 2025-08-11 14:47:49 UTC */
#define REMOVED "(removed)"

/* ------------------------------------------------------------------ fake identity source */

typedef struct fake {
    tg_identity_source_t src;
    json_t *creds, *consumers; /* what the "store" holds */
    json_t *handed;            /* copies handed out: owned "by the request" */
    int cred_err, consumer_err;
    json_t *force_cred; /* returned for any digest when set */
} fake_t;

static int give(fake_t *f, const json_t *e, json_t **out)
{
    *out = json_deep_copy(e);
    json_array_append_new(f->handed, *out);
    return 0;
}

static int fake_cred(void *ud, const uint8_t d[32], json_t **cred)
{
    fake_t *f = ud;
    if (f->cred_err) return f->cred_err;
    if (f->force_cred) return give(f, f->force_cred, cred);
    char hex[65];
    tg_hex_encode(d, 32, hex);
    size_t i;
    json_t *c;
    json_array_foreach(f->creds, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "key_digest")), hex) == 0)
            return give(f, c, cred);
    }
    return -TG_ENOTFOUND;
}

static int find_consumer(fake_t *f, const char *field, tg_str_t v, json_t **out)
{
    if (f->consumer_err) return f->consumer_err;
    size_t i;
    json_t *c;
    json_array_foreach(f->consumers, i, c)
    {
        const char *s = json_string_value(json_object_get(c, field));
        if (s && tg_str_eq(tg_str_from(s), v)) return give(f, c, out);
    }
    return -TG_ENOTFOUND;
}

static int fake_by_id(void *ud, tg_str_t id, json_t **out)
{
    return find_consumer(ud, "id", id, out);
}

static int fake_by_username(void *ud, tg_str_t name, json_t **out)
{
    return find_consumer(ud, "username", name, out);
}

static tg_str_t jstr(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? (tg_str_t){json_string_value(v), json_string_length(v)}
                             : TG_STR_NULL;
}

/*
 * key_by_digest over the same fake data, written the plain way (a lookup per field), so the
 * plugin's one-call path runs every test the classic calls run (setup_keyed). The strings
 * borrow from the copies the fake hands out, which live until the test ends.
 */
static int fake_key(void *ud, const uint8_t d[32], tg_identity_key_t *out)
{
    json_t *cred = NULL;
    int rc = fake_cred(ud, d, &cred);
    if (rc < 0) return rc;
    *out = (tg_identity_key_t){.consumer_rc = -TG_ENOTFOUND};
    out->id = jstr(cred, "id");
    out->consumer_ref = jstr(json_object_get(cred, "consumer"), "id");
    out->id_ok = out->id.p && tg_http_is_field_value(out->id);
    tg_str_t hex = jstr(cred, "key_digest");
    out->digest_ok = hex.len == 64;
    for (size_t i = 0; out->digest_ok && i < 32; i++)
        out->digest_ok = sscanf(hex.p + 2 * i, "%2hhx", &out->digest[i]) == 1 &&
                         isxdigit((unsigned char)hex.p[2 * i]) &&
                         isxdigit((unsigned char)hex.p[2 * i + 1]);
    const json_t *exp = json_object_get(cred, "expires_at");
    out->expires = json_is_number(exp);
    out->expires_ms = out->expires ? json_number_value(exp) * 1000.0 : 0;
    json_t *consumer = NULL;
    if (out->consumer_ref.p) out->consumer_rc = fake_by_id(ud, out->consumer_ref, &consumer);
    if (out->consumer_rc == 0) {
        out->consumer_id = jstr(consumer, "id");
        out->username = jstr(consumer, "username");
        out->custom_id = jstr(consumer, "custom_id");
        out->consumer_id_ok = out->consumer_id.p && tg_http_is_field_value(out->consumer_id);
        out->username_ok = out->username.p && tg_http_is_field_value(out->username);
        out->custom_id_ok = out->custom_id.p && tg_http_is_field_value(out->custom_id);
    }
    return 0;
}

static json_t *credential(const char *id, const char *consumer_id, const char *key,
                          json_t *expires_at)
{
    uint8_t d[32];
    char hex[65];
    tg_sha256(key, strlen(key), d);
    tg_hex_encode(d, sizeof d, hex);
    return json_pack("{s:s, s:{s:s}, s:s, s:o}", "id", id, "consumer", "id", consumer_id,
                     "key_digest", hex, "expires_at", expires_at ? expires_at : json_null());
}

/* ------------------------------------------------------------------ fixture */

typedef struct fx {
    fake_t fake;
    tg_req_t r;
    tg_http_header_t headers[16];
    void *conf;
    const tg_plugin_handler_t *h;
} fx_t;

/* A fresh GET /get from 192.0.2.7 at NOW_MS, with no headers yet. */
static void fill_request(fx_t *f)
{
    tg_req_init(&f->r);
    f->r.method = TG_STR("GET");
    f->r.path = TG_STR("/get");
    f->r.client_ip = TG_STR("192.0.2.7");
    f->r.start_ms = NOW_MS;
    f->r.request_id = TG_STR("req-123");
    f->r.headers = f->headers;
    f->r.identity = &f->fake.src;
}

/* Ends the current request and starts another one (same config). */
static void reset(fx_t *f)
{
    tg_req_release(&f->r);
    fill_request(f);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    f->fake.src = (tg_identity_source_t){fake_cred, fake_by_id, fake_by_username, &f->fake};
    f->fake.handed = json_array();
    f->fake.consumers =
        json_pack("[{s:s, s:s, s:s}, {s:s, s:s, s:n}, {s:s, s:s, s:n}]", "id", ALICE_ID, "username",
                  "alice", "custom_id", "alice-crm-1", "id", BOB_ID, "username", "bob", "custom_id",
                  "id", ANON_ID, "username", "guest", "custom_id");
    f->fake.creds = json_array();
    json_array_append_new(f->fake.creds, credential(CRED_ID, ALICE_ID, "alice-key", NULL));
    json_array_append_new(f->fake.creds, credential(BOB_CRED_ID, BOB_ID, "bob-key",
                                                    json_integer(NOW_MS / 1000 + 60)));
    json_array_append_new(
        f->fake.creds, credential(OLD_CRED_ID, BOB_ID, "old-key", json_integer(NOW_MS / 1000 - 1)));
    fill_request(f);
    f->h = tg_plugin_handler("key-auth");
    *state = f;
    return 0;
}

/* The same fixture with the identity source's one-call lookup (key_by_digest) offered. */
static int setup_keyed(void **state)
{
    setup(state);
    fx_t *f = *state;
    f->fake.src.key_by_digest = fake_key;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->conf) f->h->release(f->conf);
    tg_req_release(&f->r);
    json_decref(f->fake.handed);
    json_decref(f->fake.creds);
    json_decref(f->fake.consumers);
    json_decref(f->fake.force_cred);
    free(f);
    return 0;
}

/* Compiles a config given as JSON text (defaults filled in like the CP does). */
static void configure(fx_t *f, const char *config_json)
{
    json_t *conf =
        json_pack("{s:[s], s:b, s:n, s:b, s:b, s:b, s:b, s:n, s:n}", "key_names", "apikey",
                  "hide_credentials", 0, "anonymous", "key_in_header", 1, "key_in_query", 1,
                  "key_in_body", 0, "run_on_preflight", 1, "realm", "identity_realms");
    json_error_t jerr;
    json_t *over = json_loads(config_json, 0, &jerr);
    if (!over) fail_msg("bad test JSON %s: %s", config_json, jerr.text);
    json_object_update(conf, over);
    json_decref(over);
    json_t *plugin = json_pack("{s:s, s:s, s:o}", "id", "p1", "name", "key-auth", "config", conf);
    char err[200] = "";
    if (f->conf) f->h->release(f->conf);
    int rc = f->h->configure(plugin, &f->conf, err, sizeof(err));
    json_decref(plugin);
    if (rc != 0) fail_msg("configure: %s", err);
}

static void header(fx_t *f, const char *name, const char *value)
{
    f->headers[f->r.nheaders++] = (tg_http_header_t){tg_str_from(name), tg_str_from(value)};
}

static void query(fx_t *f, const char *q)
{
    f->r.query = tg_str_from(q);
}

static void body(fx_t *f, const char *ctype, const char *text)
{
    header(f, "Content-Type", ctype);
    f->r.body_state = TG_REQ_BODY_READY;
    f->r.body = tg_str_from(text);
    f->r.content_type = tg_str_from(ctype);
}

static tg_flow_t run(fx_t *f)
{
    return f->h->access(&f->r, f->conf);
}

/* The last edit of an upstream header: its value, REMOVED, or NULL when never touched. */
static const char *upstream(const fx_t *f, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < f->r.nupstream_edits; i++) {
        const tg_req_header_edit_t *e = &f->r.upstream_edits[i];
        if (strcasecmp(e->name, name) != 0) continue;
        v = e->value.p ? e->value.p : REMOVED;
    }
    return v;
}

static const char *response_header(const fx_t *f, const char *name)
{
    for (size_t i = 0; i < f->r.nresponse_headers; i++)
        if (strcasecmp(f->r.response_headers[i].name, name) == 0)
            return f->r.response_headers[i].value.p;
    return NULL;
}

/* The request was answered with status/message (and WWW-Authenticate on a 401). */
static void assert_exit(const fx_t *f, tg_flow_t flow, int status, const char *message,
                        const char *www)
{
    assert_int_equal(flow, TG_FLOW_DONE);
    assert_int_equal(f->r.exit_status, status);
    json_t *b = json_loads(f->r.exit_body, 0, NULL);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "message")), message);
    assert_string_equal(json_string_value(json_object_get(b, "request_id")), "req-123");
    json_decref(b);
    if (www)
        assert_string_equal(response_header(f, "WWW-Authenticate"), www);
    else
        assert_null(response_header(f, "WWW-Authenticate"));
    assert_null(f->r.consumer);
}

static void assert_401(fx_t *f, const char *message)
{
    assert_exit(f, run(f), 401, message, "Key");
}

/* Authenticated as alice with her credential, and the upstream headers say so. */
static void assert_alice(const fx_t *f, tg_flow_t flow)
{
    if (flow != TG_FLOW_CONTINUE)
        fail_msg("flow %d, answered %d %s", flow, f->r.exit_status,
                 f->r.exit_body ? f->r.exit_body : "-");
    assert_int_equal(f->r.exit_status, 0);
    /* what rate-limiting, metrics and the access log read, in either form */
    assert_string_equal(tg_req_consumer_id(&f->r).p, ALICE_ID);
    assert_string_equal(tg_req_consumer_username(&f->r).p, "alice");
    assert_string_equal(tg_req_credential_id(&f->r).p, CRED_ID);
    assert_true(tg_req_authenticated(&f->r));
    if (f->r.identity->key_by_digest) { /* set as strings: no JSON on the request */
        assert_null(tg_req_consumer(&f->r));
        assert_null(tg_req_credential(&f->r));
    } else {
        assert_string_equal(json_string_value(json_object_get(tg_req_consumer(&f->r), "id")),
                            ALICE_ID);
        assert_string_equal(json_string_value(json_object_get(tg_req_credential(&f->r), "id")),
                            CRED_ID);
    }
    assert_string_equal(upstream(f, "X-Consumer-ID"), ALICE_ID);
    assert_string_equal(upstream(f, "X-Consumer-Custom-ID"), "alice-crm-1");
    assert_string_equal(upstream(f, "X-Consumer-Username"), "alice");
    assert_string_equal(upstream(f, "X-Credential-Identifier"), CRED_ID);
    assert_string_equal(upstream(f, "X-Anonymous-Consumer"), REMOVED);
}

/* ------------------------------------------------------------------ finding the key */

static void test_no_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    assert_401(f, "No API key found in request");
}

static void test_realm_in_www_authenticate(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"realm\":\"example\"}");
    assert_exit(f, run(f), 401, "No API key found in request", "Key realm=\"example\"");
    /* every 401 carries it: also for an unknown key */
    reset(f);
    header(f, "apikey", "nope");
    assert_exit(f, run(f), 401, "Unauthorized", "Key realm=\"example\"");
}

static void test_header_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    header(f, "ApiKey", "alice-key"); /* header names are case-insensitive */
    assert_alice(f, run(f));
    assert_null(upstream(f, "apikey")); /* not hidden by default */
}

static void test_unknown_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    header(f, "apikey", "12");
    assert_401(f, "Unauthorized");
}

static void test_empty_header_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    header(f, "apikey", "");
    header(f, "x", "y");
    query(f, "apikey=alice-key"); /* the empty header is the key: no fallback to the query */
    assert_401(f, "No API key found in request");
}

static void test_duplicate_header(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    header(f, "apikey", "alice-key");
    header(f, "APIKEY", "alice-key");
    assert_401(f, "Duplicate API key found");
}

static void test_underscore_dash_equivalence(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_names\":[\"api_key\"]}");
    header(f, "api-key", "alice-key");
    assert_alice(f, run(f));
    reset(f);
    header(f, "Api_Key", "alice-key");
    assert_alice(f, run(f));
}

static void test_query_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    query(f, "a=1&apikey=alice-key&b=2");
    assert_alice(f, run(f));
    assert_false(f->r.query_replaced);
}

static void test_query_percent_encoded(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    query(f, "api%6B%65%79=alice%2Dkey");
    assert_alice(f, run(f));
}

static void test_query_edge_cases(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    query(f, "apikey"); /* no '=': Lua true, not a string */
    assert_401(f, "No API key found in request");
    reset(f);
    query(f, "apikey=");
    assert_401(f, "No API key found in request");
    reset(f);
    query(f, "apikey=a&apikey=b");
    assert_401(f, "Duplicate API key found");
    reset(f);
    query(f, "APIKEY=alice-key"); /* query names are case-sensitive */
    assert_401(f, "No API key found in request");
    reset(f);
    query(f, "apikey[]=alice-key");
    assert_401(f, "No API key found in request");
}

/* A bare `apikey` is no string, so Kong goes on to the next key name. */
static void test_bare_query_name_moves_on(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_names\":[\"apikey\",\"token\"]}");
    query(f, "apikey&token=alice-key");
    assert_alice(f, run(f));
}

static void test_header_before_query(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    header(f, "apikey", "wrong");
    query(f, "apikey=alice-key");
    assert_401(f, "Unauthorized"); /* the header is the key even though it is wrong */
}

static void test_key_names_in_order(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_names\":[\"first\",\"second\"]}");
    header(f, "second", "alice-key");
    assert_alice(f, run(f));
    reset(f);
    header(f, "first", "wrong"); /* the first name found wins; no fallback to `second` */
    assert_401(f, "Unauthorized");
}

static void test_key_in_header_false(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_header\":false}");
    header(f, "apikey", "alice-key");
    assert_401(f, "No API key found in request");
    reset(f);
    query(f, "apikey=alice-key");
    assert_alice(f, run(f));
}

static void test_key_in_query_false(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_query\":false}");
    query(f, "apikey=alice-key");
    assert_401(f, "No API key found in request");
}

/* ------------------------------------------------------------------ key_in_body */

static void test_body_not_searched_by_default(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    body(f, "application/x-www-form-urlencoded", "apikey=alice-key");
    assert_401(f, "No API key found in request");
}

static void test_body_form(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true}");
    body(f, "application/x-www-form-urlencoded; charset=utf-8", "x=1&apikey=alice%2dkey");
    assert_alice(f, run(f));
    assert_false(f->r.body_replaced);
}

static void test_body_json(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true}");
    body(f, "application/json", "{\"x\":1,\"apikey\":\"alice-key\"}");
    assert_alice(f, run(f));
}

#define MP_CT "multipart/form-data; boundary=XyZ"
#define MP_BODY                                                                                    \
    "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"                             \
    "--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nalice-key\r\n"                \
    "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n"                  \
    "Content-Type: text/plain\r\n\r\nfile\r\nbody\r\n"                                             \
    "--XyZ--\r\n"

static void test_body_multipart(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true}");
    body(f, MP_CT, MP_BODY);
    assert_alice(f, run(f));
}

static void test_body_duplicates_and_non_strings(void **state)
{
    static const struct {
        const char *ctype, *body, *message;
    } cases[] = {
        {"application/x-www-form-urlencoded", "apikey=a&apikey=b", "Duplicate API key found"},
        {"application/json", "{\"apikey\":[\"alice-key\"]}", "Duplicate API key found"},
        {"application/json", "{\"apikey\":{\"k\":\"alice-key\"}}", "Duplicate API key found"},
        {MP_CT,
         "--XyZ\r\nContent-Disposition: form-data; name=apikey\r\n\r\na\r\n"
         "--XyZ\r\nContent-Disposition: form-data; name=apikey\r\n\r\nb\r\n--XyZ--\r\n",
         "Duplicate API key found"},
        {"application/x-www-form-urlencoded", "apikey[]=alice-key", "No API key found in request"},
        {"application/x-www-form-urlencoded", "apikey[1]=alice-key", "No API key found in request"},
        {"application/json", "{\"apikey\":12}", "No API key found in request"},
        {"application/json", "{\"apikey\":null}", "No API key found in request"},
        {"application/json", "[\"alice-key\"]", "No API key found in request"},
        {"application/json", "{\"apikey\":", "No API key found in request"},
        {"application/json", "\"alice-key\"", "No API key found in request"},
        {"text/plain", "apikey=alice-key", "No API key found in request"},
        {MP_CT, "--XyZ\r\nContent-Disposition: form-data; name=apikey\r\n\r\nalice-key",
         "No API key found in request"}, /* no closing delimiter: not decodable */
    };
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true}");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        reset(f);
        body(f, cases[i].ctype, cases[i].body);
        tg_flow_t flow = run(f);
        if (f->r.exit_status != 401 || !strstr(f->r.exit_body, cases[i].message))
            fail_msg("case %zu (%s): status %d body %s", i, cases[i].body, f->r.exit_status,
                     f->r.exit_body ? f->r.exit_body : "-");
        assert_int_equal(flow, TG_FLOW_DONE);
    }
}

/* The body is asked for only when needed, and nothing is recorded before it is in. */
static void test_body_again(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true,\"hide_credentials\":true}");
    header(f, "Content-Type", "application/json");
    f->r.body_state = TG_REQ_BODY_UNREAD;
    assert_int_equal(run(f), TG_FLOW_AGAIN);
    assert_int_equal(f->r.body_state, TG_REQ_BODY_WANTED);
    assert_int_equal(f->r.nupstream_edits, 0);
    assert_int_equal(f->r.exit_status, 0);
    f->r.body_state = TG_REQ_BODY_READY;
    f->r.body = TG_STR("{\"apikey\":\"alice-key\",\"b\":2}");
    assert_alice(f, run(f));
    assert_true(f->r.body_replaced);
    assert_string_equal(f->r.new_body.p, "{\"b\":2}");
}

static void test_body_too_big_is_empty(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true}");
    header(f, "Content-Type", "application/x-www-form-urlencoded");
    f->r.body_state = TG_REQ_BODY_TOOBIG;
    assert_401(f, "No API key found in request");
}

/* A key in the header does not make the plugin wait for the body. */
static void test_body_not_read_when_header_has_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true}");
    header(f, "apikey", "alice-key");
    f->r.body_state = TG_REQ_BODY_UNREAD;
    assert_alice(f, run(f));
    assert_int_equal(f->r.body_state, TG_REQ_BODY_UNREAD);
}

/* ------------------------------------------------------------------ hide_credentials */

static void test_hide_header(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true}");
    header(f, "apikey", "alice-key");
    assert_alice(f, run(f));
    assert_string_equal(upstream(f, "apikey"), REMOVED);
    assert_false(f->r.query_replaced);
}

static void test_hide_query_keeps_order(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true}");
    query(f, "z=1&api%6B%65%79=alice-key&a=%20x&b");
    assert_alice(f, run(f));
    assert_true(f->r.query_replaced);
    assert_string_equal(f->r.new_query.p, "z=1&a=%20x&b");
    assert_string_equal(upstream(f, "apikey"), REMOVED);
}

static void test_hide_only_query_arg(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true}");
    query(f, "apikey=alice-key");
    assert_alice(f, run(f));
    assert_true(f->r.query_replaced);
    assert_int_equal(f->r.new_query.len, 0); /* the '?' goes too */
}

/* Found in the header, the same name is still stripped from the query (Kong clears both). */
static void test_hide_header_key_also_strips_query(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true}");
    header(f, "apikey", "alice-key");
    query(f, "apikey=other&q=1");
    assert_alice(f, run(f));
    assert_string_equal(f->r.new_query.p, "q=1");
}

static void test_no_hide_by_default(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"key_in_body\":true}");
    query(f, "apikey=alice-key");
    body(f, "application/x-www-form-urlencoded", "apikey=x");
    assert_alice(f, run(f));
    assert_false(f->r.query_replaced);
    assert_false(f->r.body_replaced);
    assert_null(upstream(f, "apikey"));
}

static void test_hide_body_form(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true,\"key_in_body\":true}");
    body(f, "application/x-www-form-urlencoded", "a=1&apikey=alice-key&b=%2F");
    assert_alice(f, run(f));
    assert_true(f->r.body_replaced);
    assert_string_equal(f->r.new_body.p, "a=1&b=%2F");
    assert_string_equal(f->r.new_content_type.p, "application/x-www-form-urlencoded");
}

static void test_hide_body_json(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true,\"key_in_body\":true}");
    body(f, "application/json; charset=utf-8", "{ \"a\": [1, 2], \"apikey\": \"alice-key\" }");
    assert_alice(f, run(f));
    assert_string_equal(f->r.new_body.p, "{\"a\":[1,2]}");
    assert_string_equal(f->r.new_content_type.p, "application/json; charset=utf-8");
}

static void test_hide_body_multipart(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true,\"key_in_body\":true}");
    body(f, MP_CT, MP_BODY);
    assert_alice(f, run(f));
    assert_string_equal(f->r.new_body.p,
                        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
                        "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; "
                        "filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\nbody\r\n"
                        "--XyZ--\r\n");
    assert_string_equal(f->r.new_content_type.p, MP_CT);
}

/* The key is hidden even when it turns out to be invalid. */
static void test_hide_invalid_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"hide_credentials\":true,\"anonymous\":\"guest\"}");
    header(f, "apikey", "wrong");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_string_equal(upstream(f, "apikey"), REMOVED);
    assert_string_equal(upstream(f, "X-Anonymous-Consumer"), "true");
}

/* ------------------------------------------------------------------ identities */

/* A client's forged identity headers never reach the upstream. */
static void test_spoofed_headers_replaced(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    header(f, "X-Consumer-ID", "evil");
    header(f, "X-Consumer-Custom-ID", "evil");
    header(f, "X-Credential-Identifier", "evil");
    header(f, "X-Anonymous-Consumer", "true");
    header(f, "apikey", "bob-key");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_string_equal(upstream(f, "X-Consumer-ID"), BOB_ID);
    assert_string_equal(upstream(f, "X-Consumer-Username"), "bob");
    assert_string_equal(upstream(f, "X-Consumer-Custom-ID"), REMOVED); /* bob has none */
    assert_string_equal(upstream(f, "X-Credential-Identifier"), BOB_CRED_ID);
    assert_string_equal(upstream(f, "X-Anonymous-Consumer"), REMOVED);
}

static void test_anonymous_by_id(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"anonymous\":\"" ANON_ID "\"}");
    header(f, "X-Credential-Identifier", "evil");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_int_equal(f->r.exit_status, 0);
    assert_string_equal(json_string_value(json_object_get(f->r.consumer, "id")), ANON_ID);
    assert_null(f->r.credential);
    assert_string_equal(upstream(f, "X-Consumer-ID"), ANON_ID);
    assert_string_equal(upstream(f, "X-Consumer-Username"), "guest");
    assert_string_equal(upstream(f, "X-Consumer-Custom-ID"), REMOVED);
    assert_string_equal(upstream(f, "X-Credential-Identifier"), REMOVED);
    assert_string_equal(upstream(f, "X-Anonymous-Consumer"), "true");
    assert_null(response_header(f, "WWW-Authenticate"));
}

static void test_anonymous_by_username(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"anonymous\":\"guest\"}");
    header(f, "apikey", "wrong"); /* any failure, not only a missing key */
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_string_equal(upstream(f, "X-Consumer-ID"), ANON_ID);
    reset(f);
    header(f, "apikey", "a");
    header(f, "apikey", "b"); /* duplicates too */
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_string_equal(upstream(f, "X-Anonymous-Consumer"), "true");
}

static void test_anonymous_with_valid_key(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"anonymous\":\"guest\"}");
    header(f, "apikey", "alice-key");
    assert_alice(f, run(f));
}

static void test_anonymous_missing(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"anonymous\":\"nobody\"}");
    assert_exit(f, run(f), 500, "anonymous consumer nobody is configured but doesn't exist", NULL);
    reset(f);
    configure(f, "{\"anonymous\":\"" BOB_ID "0\"}"); /* not a UUID: looked up as a username */
    assert_exit(f, run(f), 500, "anonymous consumer " BOB_ID "0 is configured but doesn't exist",
                NULL);
}

/* logical OR: an earlier auth plugin set a credential, so this one does nothing. */
static void test_anonymous_already_authenticated(void **state)
{
    fx_t *f = *state;
    json_t *other = json_pack("{s:s}", "id", "other-cred");
    json_t *who = json_pack("{s:s}", "id", BOB_ID);
    configure(f, "{\"anonymous\":\"guest\"}");
    tg_req_set_consumer(&f->r, who, other);
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_int_equal(f->r.nupstream_edits, 0);
    assert_ptr_equal(f->r.credential, other);
    /* logical AND (no anonymous): this plugin must pass on its own */
    configure(f, "{}");
    tg_req_set_consumer(&f->r, who, other);
    assert_int_equal(run(f), TG_FLOW_DONE);
    assert_int_equal(f->r.exit_status, 401);
    json_decref(other);
    json_decref(who);
    /* an identity set as strings counts the same (its credential id says so) */
    reset(f);
    configure(f, "{\"anonymous\":\"guest\"}");
    tg_req_set_identity_ref(&f->r, TG_STR(BOB_ID), TG_STR("bob"), TG_STR("other-cred"));
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_int_equal(f->r.nupstream_edits, 0);
    assert_string_equal(tg_req_credential_id(&f->r).p, "other-cred");
    /* strings without a credential (anonymous): not authenticated, so this plugin runs */
    reset(f);
    tg_req_set_identity_ref(&f->r, TG_STR(BOB_ID), TG_STR("bob"), TG_STR_NULL);
    header(f, "apikey", "alice-key");
    assert_alice(f, run(f));
}

/* ------------------------------------------------------------------ credential checks */

static void test_ttl(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    header(f, "apikey", "old-key"); /* expired a second ago */
    assert_401(f, "Unauthorized");
    reset(f);
    header(f, "apikey", "bob-key"); /* expires in a minute */
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    reset(f);
    f->r.start_ms = (NOW_MS / 1000 + 60) * 1000; /* expires_at == now: expired */
    header(f, "apikey", "bob-key");
    assert_401(f, "Unauthorized");
    reset(f);
    f->r.start_ms = (NOW_MS / 1000 + 60) * 1000 - 1;
    header(f, "apikey", "bob-key");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
}

/* What the index returns is checked against the key's own digest. */
static void test_digest_mismatch(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    f->fake.force_cred = credential(CRED_ID, ALICE_ID, "some-other-key", NULL);
    header(f, "apikey", "alice-key");
    assert_401(f, "Unauthorized");
    reset(f);
    json_object_set_new(f->fake.force_cred, "key_digest", json_string("not-hex"));
    header(f, "apikey", "alice-key");
    assert_401(f, "Unauthorized");
}

static void test_lookup_errors(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"anonymous\":\"guest\"}");
    f->fake.cred_err = -TG_EIO; /* Kong raises: no anonymous fallback */
    header(f, "apikey", "alice-key");
    assert_exit(f, run(f), 500, "An unexpected error occurred", NULL);
    f->fake.cred_err = 0;

    reset(f);
    configure(f, "{}");
    f->fake.consumer_err = -TG_EIO; /* the consumer of a good key: 500 ... */
    header(f, "apikey", "alice-key");
    assert_exit(f, run(f), 500, "An unexpected error occurred", NULL);
    f->fake.consumer_err = 0;

    reset(f);
    f->r.identity = NULL;
    header(f, "apikey", "alice-key");
    assert_exit(f, run(f), 500, "An unexpected error occurred", NULL);
}

/* A credential whose consumer is gone still authenticates, without consumer headers. */
static void test_credential_without_consumer(void **state)
{
    fx_t *f = *state;
    configure(f, "{}");
    json_array_append_new(f->fake.creds, credential("c-orphan", "gone", "orphan-key", NULL));
    header(f, "apikey", "orphan-key");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_null(f->r.consumer);
    assert_null(tg_req_consumer_id(&f->r).p);
    assert_null(tg_req_consumer_username(&f->r).p);
    assert_string_equal(tg_req_credential_id(&f->r).p, "c-orphan");
    assert_true(tg_req_authenticated(&f->r));
    assert_string_equal(upstream(f, "X-Consumer-ID"), REMOVED);
    assert_string_equal(upstream(f, "X-Credential-Identifier"), "c-orphan");
}

static void test_preflight(void **state)
{
    fx_t *f = *state;
    configure(f, "{\"run_on_preflight\":false}");
    f->r.method = TG_STR("OPTIONS");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_int_equal(f->r.nupstream_edits, 0);
    assert_int_equal(f->r.exit_status, 0);
    reset(f);
    f->r.method = TG_STR("GET");
    assert_401(f, "No API key found in request");
    reset(f);
    configure(f, "{\"run_on_preflight\":true}");
    f->r.method = TG_STR("OPTIONS");
    assert_401(f, "No API key found in request");
}

/* A realm for the identity_realms tests: knows "realm-key" (consumer Ariel), parks the first
 * ask for "slow-key" (-TG_EAGAIN) and answers it on the second, or is unreachable. */
#define REALM_ID "5e41e000-0000-4000-8000-000000000007"
#define ARIEL_ID "a41e1000-0000-4000-8000-000000000008"
#define REALM_KEY_ID "4e70000a-0000-4000-8000-000000000009"

typedef struct fake_realm {
    bool down;
    int asked, slow_asks;
    json_t *answer;
} fake_realm_t;

static fake_realm_t realm_state;

static int fake_realm_key(void *ud, const char *realm_id, const uint8_t d[32], json_t **answer)
{
    fake_t *f = ud;
    realm_state.asked++;
    if (strcmp(realm_id, REALM_ID) != 0) return -TG_ENOTFOUND;
    if (realm_state.down) return -TG_EDBDOWN;
    uint8_t known[32], slow[32];
    tg_sha256("realm-key", 9, known);
    tg_sha256("slow-key", 8, slow);
    if (memcmp(d, slow, 32) == 0 && realm_state.slow_asks++ == 0) return -TG_EAGAIN;
    if (memcmp(d, known, 32) != 0 && memcmp(d, slow, 32) != 0) return -TG_ENOTFOUND;
    char hex[65];
    tg_hex_encode(d, 32, hex);
    json_t *a = json_pack("{s:s, s:{s:s}, s:s, s:n, s:{s:s, s:s, s:n}}", "id", REALM_KEY_ID,
                          "consumer", "id", ARIEL_ID, "key_digest", hex, "expires_at",
                          "realm_consumer", "id", ARIEL_ID, "username", "Ariel", "custom_id");
    return give(f, a, answer) == 0 ? (json_decref(a), 0) : -TG_EIO;
}

static void use_realm(fx_t *f, bool down)
{
    memset(&realm_state, 0, sizeof realm_state);
    realm_state.down = down;
    f->fake.src.realm_key = fake_realm_key;
    f->fake.src.realm_ud = &f->fake;
}

#define REALM_THEN_CP                                                                              \
    "{\"identity_realms\":[{\"scope\":\"realm\",\"id\":\"" REALM_ID                                 \
    "\",\"region\":\"us\"},{\"scope\":\"cp\",\"id\":null,\"region\":null}]}"
#define CP_THEN_REALM                                                                              \
    "{\"identity_realms\":[{\"scope\":\"cp\"},{\"scope\":\"realm\",\"id\":\"" REALM_ID "\"}]}"
#define REALM_ONLY "{\"identity_realms\":[{\"scope\":\"realm\",\"id\":\"" REALM_ID "\"}]}"

static void assert_ariel(const fx_t *f, tg_flow_t flow)
{
    if (flow != TG_FLOW_CONTINUE)
        fail_msg("flow %d, answered %d %s", flow, f->r.exit_status,
                 f->r.exit_body ? f->r.exit_body : "-");
    assert_string_equal(upstream(f, "X-Consumer-ID"), ARIEL_ID);
    assert_string_equal(upstream(f, "X-Consumer-Username"), "Ariel");
    assert_string_equal(upstream(f, "X-Consumer-Custom-ID"), REMOVED);
    assert_string_equal(upstream(f, "X-Credential-Identifier"), REALM_KEY_ID);
}

static void test_identity_realms_orders(void **state)
{
    fx_t *f = *state;
    use_realm(f, false);
    /* realm then cp: the realm's key, a cp key through the cp entry, unknown 401 */
    configure(f, REALM_THEN_CP);
    header(f, "apikey", "realm-key");
    assert_ariel(f, run(f));
    reset(f);
    header(f, "apikey", "alice-key");
    assert_alice(f, run(f));
    reset(f);
    header(f, "apikey", "another_key");
    assert_401(f, "Unauthorized");
    reset(f);
    /* cp then realm: a cp key never asks the realm */
    configure(f, CP_THEN_REALM);
    realm_state.asked = 0;
    header(f, "apikey", "alice-key");
    assert_alice(f, run(f));
    assert_int_equal(realm_state.asked, 0);
    reset(f);
    header(f, "apikey", "realm-key");
    assert_ariel(f, run(f));
    reset(f);
    /* realm only: a cp key is unknown */
    configure(f, REALM_ONLY);
    header(f, "apikey", "alice-key");
    assert_401(f, "Unauthorized");
    reset(f);
    /* cp only (the default): the realm is never asked */
    configure(f, "{\"identity_realms\":[]}");
    realm_state.asked = 0;
    header(f, "apikey", "realm-key");
    assert_401(f, "Unauthorized");
    assert_int_equal(realm_state.asked, 0);
}

/* A realm lookup that must wait parks the request before anything changes (the key is not
 * hidden yet), and the re-run gets the answer. */
static void test_identity_realms_park(void **state)
{
    fx_t *f = *state;
    use_realm(f, false);
    configure(f, "{\"hide_credentials\":true,\"identity_realms\":[{\"scope\":\"realm\",\"id\":\"" REALM_ID
                 "\"}]}");
    header(f, "apikey", "slow-key");
    assert_int_equal(run(f), TG_FLOW_WAIT);
    assert_null(upstream(f, "apikey"));
    assert_ariel(f, run(f));
    assert_string_equal(upstream(f, "apikey"), REMOVED);
}

/* An unreachable realm: a cp key still works; a key the reachable cp source does not know is
 * 401; 503 only when every source is an unreachable realm (nobody could tell), as on a
 * standalone DP (no realm_key at all). */
static void test_identity_realms_unavailable(void **state)
{
    fx_t *f = *state;
    use_realm(f, true);
    configure(f, REALM_THEN_CP);
    header(f, "apikey", "alice-key");
    assert_alice(f, run(f));
    reset(f);
    header(f, "apikey", "realm-key");
    assert_401(f, "Unauthorized");
    reset(f);
    configure(f, REALM_ONLY);
    header(f, "apikey", "realm-key");
    assert_exit(f, run(f), 503, "identity realm unavailable", NULL);
    reset(f);
    f->fake.src.realm_key = NULL;
    configure(f, REALM_ONLY);
    header(f, "apikey", "whatever");
    assert_exit(f, run(f), 503, "identity realm unavailable", NULL);
}

static void test_bad_config_refused(void **state)
{
    fx_t *f = *state;
    json_t *plugin = json_pack("{s:s, s:{s:s}}", "name", "key-auth", "config", "key_names", "x");
    void *conf = NULL;
    char err[200] = "";
    assert_int_equal(f->h->configure(plugin, &conf, err, sizeof(err)), -TG_EINVAL);
    assert_null(conf);
    assert_non_null(strstr(err, "key_names"));
    json_decref(plugin);
}

/* ------------------------------------------------------------------ over the LMDB store */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static tg_store_change_t up(const char *type, json_t *e)
{
    return (tg_store_change_t){type, json_string_value(json_object_get(e, "id")), TG_STORE_UPSERT,
                               e};
}

/* The same plugin, with the identity source the proxy uses: credentials and consumers
 * from a real store, the JSON released when the request ends. */
static void test_identity_store(void **state)
{
    fx_t *f = *state;
    char root[] = "/tmp/tg-keyauth-XXXXXX", dir[64];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof dir, "%s/dp", root);
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(dir, 0, &s), 0);
    json_t *alice = json_pack("{s:s, s:s, s:s, s:i, s:n}", "id", ALICE_ID, "username", "alice",
                              "custom_id", "alice-crm-1", "created_at", 1700000000, "tags");
    json_t *guest = json_pack("{s:s, s:s, s:n, s:i, s:n}", "id", ANON_ID, "username", "guest",
                              "custom_id", "created_at", 1700000000, "tags");
    json_t *cred = credential(CRED_ID, ALICE_ID, "alice-key", NULL);
    json_object_set_new(cred, "created_at", json_integer(1700000000));
    json_object_set_new(cred, "tags", json_null());
    tg_store_change_t ents[] = {up("consumers", alice), up("consumers", guest),
                                up("keyauth_credentials", cred)};
    tg_store_error_t serr;
    int rc = tg_store_replace_all(s, 1, ents, 3, &serr);
    if (rc != 0) fail_msg("replace_all: %d %s", rc, serr.message);
    tg_store_reader_t reader;
    assert_int_equal(tg_store_reader_init(s, &reader), 0);

    tg_identity_store_t ids;
    tg_identity_store_init(&ids, &reader);
    f->r.identity = &ids.source;
    configure(f, "{\"anonymous\":\"guest\"}");
    header(f, "apikey", "alice-key");
    assert_alice(f, run(f));
    tg_req_release(&f->r);
    tg_identity_store_end(&ids); /* the request's JSON goes with it */

    tg_identity_store_init(&ids, &reader);
    fill_request(f);
    f->r.identity = &ids.source;
    header(f, "apikey", "nope");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_string_equal(upstream(f, "X-Consumer-ID"), ANON_ID);
    tg_req_release(&f->r);
    tg_identity_store_end(&ids);
    fill_request(f);

    tg_store_reader_free(&reader);
    tg_store_close(s);
    json_decref(alice);
    json_decref(guest);
    json_decref(cred);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* key_by_digest over the store: the two entities exactly as stored, the fields key-auth reads
 * of them, a credential whose consumer is gone, answers reused from the worker's cache until
 * the next write, and the plugin on top. */
static void test_key_by_digest_store(void **state)
{
    fx_t *f = *state;
    char root[] = "/tmp/tg-keyauth-XXXXXX", dir[64];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof dir, "%s/dp", root);
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(dir, 0, &s), 0);
    json_t *alice = json_pack("{s:s, s:s, s:s, s:i, s:n}", "id", ALICE_ID, "username", "alice",
                              "custom_id", "alice-crm-1", "created_at", 1700000000, "tags");
    json_t *cred = credential(CRED_ID, ALICE_ID, "alice-key", json_integer(NOW_MS / 1000 + 60));
    json_object_set_new(cred, "created_at", json_integer(1700000000));
    json_t *orphan = credential(BOB_CRED_ID, BOB_ID, "orphan-key", NULL); /* no such consumer */
    tg_store_change_t ents[] = {up("consumers", alice), up("keyauth_credentials", cred),
                                up("keyauth_credentials", orphan)};
    tg_store_error_t serr;
    int rc = tg_store_replace_all(s, 1, ents, 3, &serr);
    if (rc != 0) fail_msg("replace_all: %d %s", rc, serr.message);
    tg_store_reader_t reader;
    assert_int_equal(tg_store_reader_init(s, &reader), 0);
    tg_identity_cache_t *cache = tg_identity_cache_new();
    uint8_t d[32], od[32], nd[32];
    tg_sha256("alice-key", 9, d);
    tg_sha256("orphan-key", 10, od);
    tg_sha256("nope", 4, nd);

    for (int round = 0; round < 3; round++) { /* read, from the cache, read after a write */
        tg_identity_store_t ids;
        tg_identity_store_init(&ids, &reader);
        ids.cache = cache;
        assert_non_null(ids.source.key_by_digest);
        tg_identity_key_t k;
        assert_int_equal(ids.source.key_by_digest(ids.source.ud, d, &k), 0);
        assert_int_equal(k.consumer_rc, 0);
        assert_true(tg_str_eq(k.id, TG_STR(CRED_ID)));
        assert_true(tg_str_eq(k.consumer_ref, TG_STR(ALICE_ID)));
        assert_true(tg_str_eq(k.consumer_id, TG_STR(ALICE_ID)));
        assert_string_equal(k.id.p, CRED_ID); /* NUL-terminated: the request keeps them */
        assert_string_equal(k.consumer_id.p, ALICE_ID);
        tg_str_t name = tg_str_from(json_string_value(json_object_get(alice, "username")));
        assert_true(tg_str_eq(k.username, name));
        assert_string_equal(k.username.p, name.p);
        assert_true(tg_str_eq(k.custom_id, TG_STR("alice-crm-1")));
        assert_string_equal(k.custom_id.p, "alice-crm-1");
        assert_true(k.digest_ok);
        assert_memory_equal(k.digest, d, 32);
        assert_true(k.id_ok && k.consumer_id_ok && k.username_ok && k.custom_id_ok);
        assert_true(k.expires);
        assert_true(k.expires_ms == (double)(NOW_MS / 1000 + 60) * 1000.0);
        tg_identity_key_t o;
        assert_int_equal(ids.source.key_by_digest(ids.source.ud, od, &o), 0);
        assert_int_equal(o.consumer_rc, -TG_ENOTFOUND);
        assert_true(tg_str_eq(o.id, TG_STR(BOB_CRED_ID)));
        assert_true(tg_str_eq(o.consumer_ref, TG_STR(BOB_ID)));
        assert_null(o.consumer_id.p);
        assert_false(o.expires);
        assert_int_equal(ids.source.key_by_digest(ids.source.ud, nd, &o), -TG_ENOTFOUND);
        /* the first answer's strings are still there, whatever came since */
        assert_string_equal(k.id.p, CRED_ID);
        assert_string_equal(k.custom_id.p, "alice-crm-1");
        tg_identity_store_end(&ids); /* the cache keeps its own copies */
        if (round == 1) {
            json_object_set_new(alice, "username", json_string("alice-renamed"));
            tg_store_change_t rename = up("consumers", alice);
            assert_int_equal(tg_store_apply(s, 1, 2, &rename, 1, NULL), 0);
        }
    }

    /* the plugin on top: the renamed consumer's headers; the orphan goes on without one */
    tg_identity_store_t ids;
    tg_identity_store_init(&ids, &reader);
    ids.cache = cache;
    f->r.identity = &ids.source;
    configure(f, "{}");
    header(f, "apikey", "alice-key");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_string_equal(upstream(f, "X-Consumer-Username"), "alice-renamed");
    assert_string_equal(upstream(f, "X-Credential-Identifier"), CRED_ID);
    assert_null(tg_req_consumer(&f->r)); /* strings, no JSON */
    assert_string_equal(tg_req_consumer_id(&f->r).p, ALICE_ID);
    assert_string_equal(tg_req_consumer_username(&f->r).p, "alice-renamed");
    assert_string_equal(tg_req_credential_id(&f->r).p, CRED_ID);
    tg_req_release(&f->r);
    tg_identity_store_end(&ids);
    tg_identity_store_init(&ids, &reader);
    ids.cache = cache;
    fill_request(f);
    f->r.identity = &ids.source;
    header(f, "apikey", "orphan-key");
    assert_int_equal(run(f), TG_FLOW_CONTINUE);
    assert_null(f->r.consumer);
    assert_string_equal(upstream(f, "X-Consumer-ID"), REMOVED);
    assert_string_equal(upstream(f, "X-Credential-Identifier"), BOB_CRED_ID);
    tg_req_release(&f->r);
    tg_identity_store_end(&ids);
    fill_request(f);

    tg_identity_cache_free(cache);
    tg_store_reader_free(&reader);
    tg_store_close(s);
    json_decref(alice);
    json_decref(cred);
    json_decref(orphan);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Every test on the fake source runs twice: through the classic calls and through
 * key_by_digest, which the proxy's identity source offers. */
#define FAKE_TESTS(X) \
    X(test_no_key) \
    X(test_realm_in_www_authenticate) \
    X(test_header_key) \
    X(test_unknown_key) \
    X(test_empty_header_key) \
    X(test_duplicate_header) \
    X(test_underscore_dash_equivalence) \
    X(test_query_key) \
    X(test_query_percent_encoded) \
    X(test_query_edge_cases) \
    X(test_bare_query_name_moves_on) \
    X(test_header_before_query) \
    X(test_key_names_in_order) \
    X(test_key_in_header_false) \
    X(test_key_in_query_false) \
    X(test_body_not_searched_by_default) \
    X(test_body_form) \
    X(test_body_json) \
    X(test_body_multipart) \
    X(test_body_duplicates_and_non_strings) \
    X(test_body_again) \
    X(test_body_too_big_is_empty) \
    X(test_body_not_read_when_header_has_key) \
    X(test_hide_header) \
    X(test_hide_query_keeps_order) \
    X(test_hide_only_query_arg) \
    X(test_hide_header_key_also_strips_query) \
    X(test_no_hide_by_default) \
    X(test_hide_body_form) \
    X(test_hide_body_json) \
    X(test_hide_body_multipart) \
    X(test_hide_invalid_key) \
    X(test_spoofed_headers_replaced) \
    X(test_anonymous_by_id) \
    X(test_anonymous_by_username) \
    X(test_anonymous_with_valid_key) \
    X(test_anonymous_missing) \
    X(test_anonymous_already_authenticated) \
    X(test_ttl) \
    X(test_digest_mismatch) \
    X(test_lookup_errors) \
    X(test_credential_without_consumer) \
    X(test_preflight) \
    X(test_identity_realms_orders) \
    X(test_identity_realms_park) \
    X(test_identity_realms_unavailable) \
    X(test_bad_config_refused)

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown),
#define K(name) {"keyed/" #name, name, setup_keyed, teardown, NULL},

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAKE_TESTS(T) FAKE_TESTS(K) T(test_identity_store) T(test_key_by_digest_store)
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
