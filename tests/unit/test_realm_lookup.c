/*
 * test_realm_lookup.c — realm lookups between workers and the control thread
 * (realm_lookup.h), with both sides on one libuv loop: single flight per key across workers
 * and requests, answers cached per worker (a second request asks nobody), negative answers,
 * UNAVAILABLE when disconnected / timed out / overloaded / CP error, stale answers while
 * disconnected, invalidation by key, consumer and realm, caches cleared on reconnect, and a
 * cancelled waiter never woken.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crypto.h"
#include "error.h"
#include "realm_lookup.h"

#include <jansson.h>
#include <string.h>
#include <uv.h>

#define REALM "5b1f7e0c-2d4a-4c8e-9b3f-0a1b2c3d4e5f"
#define ANSWER "{\"consumer\":{\"id\":\"c1\",\"username\":\"alice\"},\"credential\":{\"id\":\"k1\"}}"

typedef struct fixture {
    uv_loop_t loop;
    tg_realm_lookup_t *l;
    int sent;
    uint64_t last_id;
    bool refuse_send;
} fixture_t;

typedef struct req {
    tg_realm_waiter_t w;
    int woken;
} req_t;

static int send_cb(void *ud, uint64_t id, const char *realm, const uint8_t d[32])
{
    (void)realm;
    (void)d;
    fixture_t *f = ud;
    if (f->refuse_send) return -TG_ECLOSED;
    f->sent++;
    f->last_id = id;
    return 0;
}

static void wake(tg_realm_waiter_t *w)
{
    ((req_t *)w)->woken++;
}

static void run(fixture_t *f)
{
    for (int i = 0; i < 4; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
}

static fixture_t *setup_with(size_t max_in_flight, int64_t timeout_ms)
{
    fixture_t *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    tg_realm_lookup_opts_t o = {.cache_entries = 100, .stale_ms = 3600 * 1000,
                                .timeout_ms = timeout_ms, .max_in_flight = max_in_flight,
                                .send = send_cb, .send_ud = f};
    f->l = tg_realm_lookup_new(&f->loop, 2, &o);
    assert_non_null(f->l);
    assert_int_equal(tg_realm_lookup_attach(f->l, 0, &f->loop), 0);
    assert_int_equal(tg_realm_lookup_attach(f->l, 1, &f->loop), 0);
    tg_realm_lookup_ctl_connected(f->l, true);
    return f;
}

static int setup(void **state)
{
    *state = setup_with(8, 60000);
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tg_realm_lookup_detach(f->l, 0);
    tg_realm_lookup_detach(f->l, 1);
    tg_realm_lookup_close(f->l);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    tg_realm_lookup_free(f->l);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void key(const char *k, uint8_t d[32])
{
    tg_sha256(k, strlen(k), d);
}

static tg_realm_outcome_t ask(fixture_t *f, int worker, const char *k, req_t *r)
{
    uint8_t d[32];
    key(k, d);
    memset(r, 0, sizeof *r);
    r->w.wake = wake;
    const json_t *a = NULL;
    return tg_realm_lookup_query(f->l, worker, REALM, d, &r->w, &a);
}

static void single_flight_then_cached(void **state)
{
    fixture_t *f = *state;
    req_t a, b, c;
    assert_int_equal(ask(f, 0, "good", &a), TG_REALM_OUT_PENDING);
    assert_int_equal(ask(f, 0, "good", &b), TG_REALM_OUT_PENDING);
    assert_int_equal(ask(f, 1, "good", &c), TG_REALM_OUT_PENDING);
    run(f);
    assert_int_equal(f->sent, 1);
    tg_realm_lookup_ctl_result(f->l, f->last_id, true, ANSWER, 300, NULL);
    run(f);
    assert_int_equal(a.woken + b.woken + c.woken, 3);
    assert_int_equal(a.w.outcome, TG_REALM_OUT_HIT);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c.w.consumer, "consumer"), "username")), "alice");
    tg_realm_waiter_reset(&a.w);
    tg_realm_waiter_reset(&b.w);
    tg_realm_waiter_reset(&c.w);
    /* the next request on either worker asks nobody */
    assert_int_equal(ask(f, 0, "good", &a), TG_REALM_OUT_HIT);
    assert_int_equal(ask(f, 1, "good", &a), TG_REALM_OUT_HIT);
    run(f);
    assert_int_equal(f->sent, 1);
    assert_int_equal(tg_realm_lookup_stats(f->l).lookups_sent, 1);
}

static void negative_answer_is_cached(void **state)
{
    fixture_t *f = *state;
    req_t a;
    assert_int_equal(ask(f, 0, "another_key", &a), TG_REALM_OUT_PENDING);
    run(f);
    tg_realm_lookup_ctl_result(f->l, f->last_id, false, NULL, 300, NULL);
    run(f);
    assert_int_equal(a.w.outcome, TG_REALM_OUT_UNKNOWN);
    assert_int_equal(ask(f, 0, "another_key", &a), TG_REALM_OUT_UNKNOWN);
    /* worker 1 has no entry yet but the control thread's cache answers without the CP */
    assert_int_equal(ask(f, 1, "another_key", &a), TG_REALM_OUT_PENDING);
    run(f);
    assert_int_equal(a.w.outcome, TG_REALM_OUT_UNKNOWN);
    assert_int_equal(f->sent, 1);
}

static void disconnected_is_unavailable_but_stale_hits_serve(void **state)
{
    fixture_t *f = *state;
    req_t a;
    assert_int_equal(ask(f, 0, "good", &a), TG_REALM_OUT_PENDING);
    run(f);
    tg_realm_lookup_ctl_result(f->l, f->last_id, true, ANSWER, 0, NULL); /* expires at once */
    run(f);
    tg_realm_waiter_reset(&a.w);
    tg_realm_lookup_ctl_connected(f->l, false);
    assert_int_equal(ask(f, 0, "good", &a), TG_REALM_OUT_HIT); /* stale, within the bound */
    assert_int_equal(ask(f, 0, "unknown", &a), TG_REALM_OUT_PENDING);
    run(f);
    assert_int_equal(a.w.outcome, TG_REALM_OUT_UNAVAILABLE);
    /* in flight when the connection drops: failed at once, not left hanging */
    tg_realm_lookup_ctl_connected(f->l, true);
    run(f);
    assert_int_equal(ask(f, 0, "slow", &a), TG_REALM_OUT_PENDING);
    run(f);
    tg_realm_lookup_ctl_connected(f->l, false);
    run(f);
    assert_int_equal(a.w.outcome, TG_REALM_OUT_UNAVAILABLE);
}

static void reconnect_clears_caches(void **state)
{
    fixture_t *f = *state;
    req_t a;
    assert_int_equal(ask(f, 0, "good", &a), TG_REALM_OUT_PENDING);
    run(f);
    tg_realm_lookup_ctl_result(f->l, f->last_id, true, ANSWER, 300, NULL);
    run(f);
    tg_realm_waiter_reset(&a.w);
    tg_realm_lookup_ctl_connected(f->l, false);
    tg_realm_lookup_ctl_connected(f->l, true);
    run(f);
    assert_int_equal(ask(f, 0, "good", &a), TG_REALM_OUT_PENDING);
    run(f);
    assert_int_equal(f->sent, 2);
    tg_realm_lookup_cancel(&a.w);
}

static void timeout_error_and_refused_send_are_unavailable(void **state)
{
    fixture_t *f = setup_with(8, 1);
    req_t a, b, c;
    assert_int_equal(ask(f, 0, "t1", &a), TG_REALM_OUT_PENDING);
    run(f);
    uv_sleep(150); /* > timeout and > the 100 ms tick */
    uv_run(&f->loop, UV_RUN_ONCE);
    run(f);
    assert_int_equal(a.w.outcome, TG_REALM_OUT_UNAVAILABLE);
    assert_int_equal(tg_realm_lookup_stats(f->l).timeouts, 1);
    tg_realm_lookup_ctl_result(f->l, f->last_id, true, ANSWER, 300, NULL); /* late: ignored */

    assert_int_equal(ask(f, 0, "t2", &b), TG_REALM_OUT_PENDING);
    run(f);
    tg_realm_lookup_ctl_result(f->l, f->last_id, false, NULL, 0, "database unavailable");
    run(f);
    assert_int_equal(b.w.outcome, TG_REALM_OUT_UNAVAILABLE);

    f->refuse_send = true;
    assert_int_equal(ask(f, 0, "t3", &c), TG_REALM_OUT_PENDING);
    run(f);
    assert_int_equal(c.w.outcome, TG_REALM_OUT_UNAVAILABLE);
    void *st = f;
    teardown(&st);
}

static void in_flight_is_bounded(void **state)
{
    fixture_t *f = setup_with(2, 60000);
    req_t r[3];
    assert_int_equal(ask(f, 0, "k0", &r[0]), TG_REALM_OUT_PENDING);
    assert_int_equal(ask(f, 0, "k1", &r[1]), TG_REALM_OUT_PENDING);
    assert_int_equal(ask(f, 0, "k2", &r[2]), TG_REALM_OUT_UNAVAILABLE); /* worker bound */
    run(f);
    req_t s;
    assert_int_equal(ask(f, 1, "k3", &s), TG_REALM_OUT_PENDING);
    run(f);
    assert_int_equal(s.w.outcome, TG_REALM_OUT_UNAVAILABLE); /* control thread bound */
    assert_int_equal(tg_realm_lookup_stats(f->l).overflow, 1);
    assert_int_equal(f->sent, 2);
    void *st = f;
    teardown(&st);
    (void)state;
}

static void invalidation_evicts_everywhere(void **state)
{
    fixture_t *f = *state;
    req_t a;
    const char *keys[] = {"k1", "k2", "k3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ask(f, 0, keys[i], &a), TG_REALM_OUT_PENDING);
        run(f);
        tg_realm_lookup_ctl_result(f->l, f->last_id, true, ANSWER, 300, NULL);
        run(f);
        tg_realm_waiter_reset(&a.w);
        assert_int_equal(ask(f, 0, keys[i], &a), TG_REALM_OUT_HIT);
    }
    uint8_t d[1][32];
    key("k1", d[0]);
    tg_realm_lookup_ctl_invalidate(f->l, REALM, (const uint8_t(*)[32])d, 1, NULL, 0, false);
    run(f);
    assert_int_equal(ask(f, 0, "k1", &a), TG_REALM_OUT_PENDING);
    run(f);
    tg_realm_lookup_ctl_result(f->l, f->last_id, false, NULL, 300, NULL);
    run(f);
    assert_int_equal(ask(f, 0, "k2", &a), TG_REALM_OUT_HIT);
    const char *ids[] = {"c1"};
    tg_realm_lookup_ctl_invalidate(f->l, REALM, NULL, 0, ids, 1, false);
    run(f);
    assert_int_equal(ask(f, 0, "k2", &a), TG_REALM_OUT_PENDING);
    tg_realm_lookup_cancel(&a.w);
    assert_int_equal(ask(f, 0, "k1", &a), TG_REALM_OUT_UNKNOWN); /* negative: no consumer */
    run(f);
}

/* An answer computed before an invalidation it raced with is delivered but not cached. */
static void invalidation_racing_a_lookup_is_not_cached(void **state)
{
    fixture_t *f = *state;
    req_t a;
    assert_int_equal(ask(f, 0, "k1", &a), TG_REALM_OUT_PENDING);
    run(f);
    tg_realm_lookup_ctl_invalidate(f->l, REALM, NULL, 0, NULL, 0, true);
    tg_realm_lookup_ctl_result(f->l, f->last_id, true, ANSWER, 300, NULL);
    run(f);
    assert_int_equal(a.w.outcome, TG_REALM_OUT_HIT);
    tg_realm_waiter_reset(&a.w);
    assert_int_equal(ask(f, 0, "k1", &a), TG_REALM_OUT_PENDING);
    run(f);
    assert_int_equal(f->sent, 2);
    tg_realm_lookup_cancel(&a.w);
}

static void cancelled_waiter_is_not_woken(void **state)
{
    fixture_t *f = *state;
    req_t a, b;
    assert_int_equal(ask(f, 0, "k", &a), TG_REALM_OUT_PENDING);
    assert_int_equal(ask(f, 0, "k", &b), TG_REALM_OUT_PENDING);
    tg_realm_lookup_cancel(&a.w);
    run(f);
    tg_realm_lookup_ctl_result(f->l, f->last_id, true, ANSWER, 300, NULL);
    run(f);
    assert_int_equal(a.woken, 0);
    assert_int_equal(b.woken, 1);
    tg_realm_waiter_reset(&b.w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(single_flight_then_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(negative_answer_is_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(disconnected_is_unavailable_but_stale_hits_serve, setup, teardown),
        cmocka_unit_test_setup_teardown(reconnect_clears_caches, setup, teardown),
        cmocka_unit_test(timeout_error_and_refused_send_are_unavailable),
        cmocka_unit_test(in_flight_is_bounded),
        cmocka_unit_test_setup_teardown(invalidation_evicts_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(invalidation_racing_a_lookup_is_not_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(cancelled_waiter_is_not_woken, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
