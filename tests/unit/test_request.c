/*
 * test_request.c — the request context (data-plane/request.h) on its own: the normalised
 * path plugins compare (Kong's kong.request.get_path()), the borrowing header setters and
 * their `valid` promise, the consumer/credential ids, header lookups, and the per-thread
 * arena chunks reused across requests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "request.h"

#include <stdio.h>
#include <string.h>

static void assert_str(tg_str_t s, const char *want)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%.*s", (int)s.len, s.p ? s.p : "(null)");
    assert_string_equal(buf, want);
}

/* kong.request.get_path(): normalised once, into request memory, then the same view. */
static void test_normalized_path(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"/rl-path/%6Cimited", "/rl-path/limited"}, /* unreserved escape decoded */
        {"/a/x/../b", "/a/b"},                      /* dot segments removed */
        {"/a//b///c", "/a/b/c"},                    /* slashes merged */
        {"/./a/%2e%2E/b", "/b"},                    /* encoded dots are dots */
        {"/a%2fb", "/a%2Fb"},                       /* reserved: kept, upper-cased */
        {"/", "/"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tg_req_t r;
        tg_req_init(&r);
        r.path = tg_str_from(cases[i][0]);
        tg_str_t n = tg_req_normalized_path(&r);
        assert_non_null(n.p);
        assert_str(n, cases[i][1]);
        assert_ptr_equal(tg_req_normalized_path(&r).p, n.p); /* computed once */
        assert_str(tg_req_path(&r), cases[i][0]);           /* the raw path stays raw */
        tg_req_release(&r);
        assert_null(r.norm_path.p); /* it lived in the arena */
    }
    /* what the router already normalised is used as it is */
    tg_req_t r;
    tg_req_init(&r);
    r.path = TG_STR("/x/../y");
    r.norm_path = TG_STR("/from-the-router");
    assert_str(tg_req_normalized_path(&r), "/from-the-router");
    tg_req_release(&r);
}

/* The _ref setters borrow; the copying ones copy. Only _ref edits can carry `valid`. */
static void test_header_setters(void **state)
{
    (void)state;
    tg_req_t r;
    tg_req_init(&r);
    char value[] = "v1";
    tg_req_set_upstream_header(&r, "X-Copied", tg_str_from(value));
    tg_req_set_upstream_header_ref(&r, "X-Borrowed", 10, tg_str_from(value), true);
    tg_req_set_upstream_header_ref(&r, "X-Gone", 6, TG_STR_NULL, false);
    tg_req_add_response_header(&r, "X-Resp", TG_STR("1"));
    tg_req_add_response_header_ref(&r, "X-Resp-Ref", 10, TG_STR("2"), true);
    value[1] = '2'; /* the copy does not see it, the borrowed value does */
    assert_int_equal(r.nupstream_edits, 3);
    assert_string_equal(r.upstream_edits[0].name, "X-Copied");
    assert_str(r.upstream_edits[0].value, "v1");
    assert_false(r.upstream_edits[0].valid);
    assert_int_equal(r.upstream_edits[0].name_len, 8);
    assert_str(r.upstream_edits[1].value, "v2");
    assert_ptr_equal(r.upstream_edits[1].value.p, value);
    assert_true(r.upstream_edits[1].valid);
    assert_int_equal(r.upstream_edits[1].name_len, 10);
    assert_null(r.upstream_edits[2].value.p); /* a removal */
    assert_int_equal(r.nresponse_headers, 2);
    assert_false(r.response_headers[0].valid);
    assert_true(r.response_headers[1].valid);
    assert_str(r.response_headers[1].value, "2");
    /* edits grow past their first block and keep their order */
    for (int i = 0; i < 40; i++)
        tg_req_add_response_header_ref(&r, "X-N", 3, TG_STR("n"), true);
    assert_int_equal(r.nresponse_headers, 42);
    assert_string_equal(r.response_headers[1].name, "X-Resp-Ref");
    assert_string_equal(r.response_headers[41].name, "X-N");
    tg_req_release(&r);
    assert_int_equal(r.nupstream_edits, 0);
    assert_int_equal(r.nresponse_headers, 0);
}

/* Ids come with the entities, or are read from them when set directly. */
static void test_identity_ids(void **state)
{
    (void)state;
    json_t *consumer = json_pack("{s:s, s:s}", "id", "c-1", "username", "alice");
    json_t *cred = json_pack("{s:s}", "id", "k-1");
    json_t *no_id = json_pack("{s:i}", "id", 7);
    tg_req_t r;
    tg_req_init(&r);
    assert_null(tg_req_consumer_id(&r).p);
    tg_req_set_consumer(&r, consumer, cred);
    assert_str(tg_req_consumer_id(&r), "c-1");
    assert_str(tg_req_credential_id(&r), "k-1");
    tg_req_set_identity(&r, consumer, TG_STR("given"), NULL, TG_STR("ignored"));
    assert_str(tg_req_consumer_id(&r), "given");
    assert_null(tg_req_credential_id(&r).p); /* no credential: no id */
    tg_req_set_consumer(&r, no_id, NULL);
    assert_null(tg_req_consumer_id(&r).p); /* not a string: none */
    tg_req_init(&r);
    r.consumer = consumer; /* assigned directly: looked up */
    assert_str(tg_req_consumer_id(&r), "c-1");
    tg_req_release(&r);
    json_decref(consumer);
    json_decref(cred);
    json_decref(no_id);
}

/* Names compare case-insensitively with '_' and '-' alike; counts and indexes agree. */
static void test_header_lookup(void **state)
{
    (void)state;
    tg_http_header_t h[] = {{TG_STR("X-Api_Key"), TG_STR("a")},
                            {TG_STR("Host"), TG_STR("h")},
                            {TG_STR("x-api-key"), TG_STR("b")},
                            {TG_STR("X-Api-Keys"), TG_STR("c")}};
    tg_req_t r;
    tg_req_init(&r);
    r.headers = h;
    r.nheaders = 4;
    tg_str_t v;
    assert_int_equal(tg_req_header_count(&r, "x_api_key"), 2);
    assert_true(tg_req_header(&r, "X-API-KEY", 0, &v));
    assert_str(v, "a");
    assert_true(tg_req_header(&r, "x_api_key", 1, &v));
    assert_str(v, "b");
    assert_false(tg_req_header(&r, "x-api-key", 2, &v));
    assert_false(tg_req_header(&r, "x-api-ke", 0, &v));
    assert_int_equal(tg_req_header_count(&r, "HOST"), 1);
    tg_req_release(&r);
}

/* Many requests in flight on one thread, each with standard and oversized chunks: memory
 * stays usable and separate (chunks are reused across requests, see request.c). */
static void test_arena_reuse(void **state)
{
    (void)state;
    enum { N = 48 };
    tg_req_t r[N];
    char *p[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            tg_req_init(&r[i]);
            p[i] = tg_req_alloc(&r[i], 100);
            memset(p[i], i, 100);
            char *big = tg_req_alloc(&r[i], 10000); /* its own chunk */
            memset(big, 0xee, 10000);
            for (int k = 0; k < 50; k++) /* past the first chunk */
                memset(tg_req_alloc(&r[i], 200), 0xdd, 200);
        }
        for (int i = 0; i < N; i++) {
            for (int k = 0; k < 100; k++)
                assert_int_equal((unsigned char)p[i][k], i);
            tg_req_release(&r[i]);
            assert_null(r[i].arena);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalized_path), cmocka_unit_test(test_header_setters),
        cmocka_unit_test(test_identity_ids),    cmocka_unit_test(test_header_lookup),
        cmocka_unit_test(test_arena_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
