/*
 * test_rate_limiting.c — the rate-limiting plugin (local policy) driven through hand-built
 * requests with an injected clock (tg_req_t.start_ms): the headers and the 429 of seed 004,
 * every window and its rollover, every limit_by, the most restrictive RateLimit-* choice,
 * hide_client_headers, custom error code/message, counting after the decision, a full
 * counter table (fault_tolerant), and the shared counters under concurrent threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crypto.h"
#include "error.h"
#include "metrics.h"
#include "plugin.h"
#include "plugins/rate-limiting/counters.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shared table is made small so that one test can fill it (see test_table_full), but not
 * so small that the other tests' keys fill one of its buckets by chance: bucket placement
 * depends on a per-process random key, and with 4 buckets a few dozen live keys made the
 * earlier tests fail now and then (TG_ETOOBIG). 32 buckets make that vanishingly rare. */
#define SHARED_SLOTS 512 /* 32 buckets */

#define S(sec) ((int64_t)(sec)*1000)
#define T_1447_49 S(1754923669) /* 2025-08-11 14:47:49 UTC */
#define T_1450_00 S(1754923800)
#define CONSUMER1 "c0000000-0000-4000-8000-000000000001"
#define CONSUMER2 "c0000000-0000-4000-8000-000000000002"
#define CRED1 "cred0000-0000-4000-8000-000000000001"
#define ROUTE_A "a0000000-0000-4000-8000-00000000000a"
#define ROUTE_B "b0000000-0000-4000-8000-00000000000b"
#define SERVICE1 "5e000000-0000-4000-8000-000000000001"
#define SERVICE2 "5e000000-0000-4000-8000-000000000002"

/* ------------------------------------------------------------------ fixture */

typedef struct req {
    tg_req_t r;
    tg_http_header_t headers[8];
    json_t *consumer, *credential, *service;
} req_t;

static const tg_plugin_handler_t *handler(void)
{
    return tg_plugin_handler("rate-limiting");
}

/* Compiles an instance from config JSON text with the given scope (NULL: not scoped). */
static void *configure_scoped(const char *config_json, const char *route, const char *service)
{
    json_error_t jerr;
    json_t *conf = json_loads(config_json, 0, &jerr);
    if (!conf) fail_msg("bad test JSON %s: %s", config_json, jerr.text);
    json_t *plugin =
        json_pack("{s:s, s:s, s:o, s:o, s:o}", "id", "rl", "name", "rate-limiting", "config", conf,
                  "route", route ? json_pack("{s:s}", "id", route) : json_null(), "service",
                  service ? json_pack("{s:s}", "id", service) : json_null());
    void *compiled = NULL;
    char err[200] = "";
    int rc = handler()->configure(plugin, &compiled, err, sizeof(err));
    json_decref(plugin);
    if (rc != 0) fail_msg("configure %s: %s", config_json, err);
    return compiled;
}

/* An instance scoped to a fresh random route, so each test's counters are its own. */
static void *configure(const char *config_json)
{
    char fresh[TG_UUID_STR_LEN + 1];
    tg_uuid_v4(fresh);
    return configure_scoped(config_json, fresh, NULL);
}

static void req_start(req_t *q, int64_t now_ms)
{
    memset(q, 0, sizeof(*q));
    tg_req_init(&q->r);
    q->r.method = TG_STR("GET");
    q->r.path = TG_STR("/key-auth-route/get");
    q->r.client_ip = TG_STR("198.51.100.1");
    q->r.start_ms = now_ms;
    q->r.request_id = TG_STR("rid");
    q->r.headers = q->headers;
}

static void req_end(req_t *q)
{
    tg_req_release(&q->r);
    json_decref(q->consumer);
    json_decref(q->credential);
    json_decref(q->service);
}

static void as_consumer(req_t *q, const char *consumer_id, const char *cred_id)
{
    q->consumer = consumer_id ? json_pack("{s:s}", "id", consumer_id) : NULL;
    q->credential = cred_id ? json_pack("{s:s}", "id", cred_id) : NULL;
    tg_req_set_consumer(&q->r, q->consumer, q->credential);
}

static const char *resp(const req_t *q, const char *name)
{
    for (size_t i = 0; i < q->r.nresponse_headers; i++)
        if (strcasecmp(q->r.response_headers[i].name, name) == 0)
            return q->r.response_headers[i].value.p;
    return NULL;
}

static void assert_header(const req_t *q, const char *name, const char *want)
{
    const char *got = resp(q, name);
    if (!want && got) fail_msg("%s: unexpected '%s'", name, got);
    if (want && (!got || strcmp(got, want) != 0))
        fail_msg("%s: got '%s', want '%s'", name, got ? got : "(none)", want);
}

/* Runs one request; `expect` is the flow; returns nothing, the request stays inspectable. */
static tg_flow_t run(void *conf, req_t *q)
{
    return handler()->access(&q->r, conf);
}

/* One request from the default client at now_ms that must pass, showing `remaining`. */
static void pass(void *conf, int64_t now_ms, const char *period_header, const char *remaining)
{
    req_t q;
    req_start(&q, now_ms);
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
    assert_int_equal(q.r.exit_status, 0);
    if (period_header) assert_header(&q, period_header, remaining);
    req_end(&q);
}

static void blocked(void *conf, int64_t now_ms)
{
    req_t q;
    req_start(&q, now_ms);
    assert_int_equal(run(conf, &q), TG_FLOW_DONE);
    assert_int_equal(q.r.exit_status, 429);
    req_end(&q);
}

static void assert_exit_message(const req_t *q, int status, const char *message)
{
    assert_int_equal(q->r.exit_status, status);
    json_t *b = json_loads(q->r.exit_body, 0, NULL);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "message")), message);
    assert_string_equal(json_string_value(json_object_get(b, "request_id")), "rid");
    json_decref(b);
}

/* ------------------------------------------------------------------ seed 004 */

/* Consumer-scoped instances (minute 5 and 8), limit_by consumer, as in the tutorial. */
static void test_seed_004(void **state)
{
    (void)state;
    void *rl1 = configure_scoped("{\"minute\":5}", NULL, NULL);
    void *rl2 = configure_scoped("{\"minute\":8}", NULL, NULL);
    req_t q;

    req_start(&q, T_1447_49);
    as_consumer(&q, CONSUMER1, CRED1);
    assert_int_equal(run(rl1, &q), TG_FLOW_CONTINUE);
    assert_header(&q, "X-RateLimit-Limit-Minute", "5");
    assert_header(&q, "X-RateLimit-Remaining-Minute", "4");
    assert_header(&q, "RateLimit-Reset", "11");
    assert_header(&q, "RateLimit-Remaining", "4");
    assert_header(&q, "RateLimit-Limit", "5");
    assert_header(&q, "Retry-After", NULL);
    assert_int_equal(q.r.nresponse_headers, 5);
    req_end(&q);

    /* a new minute: 5 requests go through, remaining 4, 3, 2, 1, 0 */
    static const char *const left[] = {"4", "3", "2", "1", "0"};
    for (int i = 0; i < 5; i++) {
        req_start(&q, T_1450_00 + S(i * 5));
        as_consumer(&q, CONSUMER1, CRED1);
        assert_int_equal(run(rl1, &q), TG_FLOW_CONTINUE);
        assert_header(&q, "X-RateLimit-Remaining-Minute", left[i]);
        assert_header(&q, "RateLimit-Remaining", left[i]);
        req_end(&q);
    }

    /* the sixth, at 14:50:21, is refused */
    req_start(&q, T_1450_00 + S(21) + 700);
    as_consumer(&q, CONSUMER1, CRED1);
    assert_int_equal(run(rl1, &q), TG_FLOW_DONE);
    assert_exit_message(&q, 429, "API rate limit exceeded");
    assert_header(&q, "X-RateLimit-Limit-Minute", "5");
    assert_header(&q, "X-RateLimit-Remaining-Minute", "0");
    assert_header(&q, "RateLimit-Reset", "39");
    assert_header(&q, "Retry-After", "39");
    assert_header(&q, "RateLimit-Remaining", "0");
    assert_header(&q, "RateLimit-Limit", "5");
    req_end(&q);

    /* consumer2 counts on its own */
    req_start(&q, T_1450_00 + S(26));
    as_consumer(&q, CONSUMER2, NULL);
    assert_int_equal(run(rl2, &q), TG_FLOW_CONTINUE);
    assert_header(&q, "X-RateLimit-Limit-Minute", "8");
    assert_header(&q, "X-RateLimit-Remaining-Minute", "7");
    assert_header(&q, "RateLimit-Reset", "34");
    assert_header(&q, "RateLimit-Remaining", "7");
    assert_header(&q, "RateLimit-Limit", "8");
    req_end(&q);

    handler()->release(rl1);
    handler()->release(rl2);
}

/* ------------------------------------------------------------------ windows */

static const struct window_case {
    const char *field, *header;
    int64_t at, same, next; /* a time, a later time in its window, the next window's start */
    const char *reset;      /* RateLimit-Reset at `at` */
} window_cases[] = {
    {"second", "X-RateLimit-Remaining-Second", S(1754923669) + 10, S(1754923669) + 999,
     S(1754923670), "1"},
    {"minute", "X-RateLimit-Remaining-Minute", S(1754923669), S(1754923679), S(1754923680), "11"},
    {"hour", "X-RateLimit-Remaining-Hour", S(1754923669), S(1754924399), S(1754924400), "731"},
    {"day", "X-RateLimit-Remaining-Day", S(1754923669), S(1754956799), S(1754956800), "33131"},
    /* 2025-02-10 12:00 → Mar 1; Kong's reset uses its 30-day month */
    {"month", "X-RateLimit-Remaining-Month", S(1739188800), S(1740787199), S(1740787200),
     "1771200"},
    /* 2024-12-31 23:59:59: the year window of a leap year outlasts Kong's 365 days: reset 1 */
    {"year", "X-RateLimit-Remaining-Year", S(1735689599), S(1735689599) + 999, S(1735689600), "1"},
};

static void test_each_window(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(window_cases) / sizeof(window_cases[0]); i++) {
        const struct window_case *w = &window_cases[i];
        char conf_json[64], limit_header[64];
        snprintf(conf_json, sizeof conf_json, "{\"%s\":2}", w->field);
        snprintf(limit_header, sizeof limit_header, "X-RateLimit-Limit-%c%s", w->field[0] - 32,
                 w->field + 1);
        void *conf = configure(conf_json);
        req_t q;
        req_start(&q, w->at);
        assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
        assert_header(&q, limit_header, "2");
        assert_header(&q, w->header, "1");
        assert_header(&q, "RateLimit-Reset", w->reset);
        req_end(&q);
        pass(conf, w->same, w->header, "0");
        blocked(conf, w->same);
        pass(conf, w->next, w->header, "1"); /* a fresh window */
        handler()->release(conf);
    }
}

static void test_window_bounds(void **state)
{
    (void)state;
    tg_rl_window_t w = tg_rl_counters_window(TG_RL_MONTH, S(1735689599)); /* 2024-12-31 */
    assert_int_equal(w.start_ms, S(1733011200));                          /* 2024-12-01 */
    assert_int_equal(w.end_ms, S(1735689600));                            /* 2025-01-01 */
    w = tg_rl_counters_window(TG_RL_MONTH, S(1709208000));                /* 2024-02-29 12:00 */
    assert_int_equal(w.start_ms, S(1706745600));                          /* 2024-02-01 */
    assert_int_equal(w.end_ms, S(1709251200));                            /* 2024-03-01 */
    w = tg_rl_counters_window(TG_RL_YEAR, S(1709208000));
    assert_int_equal(w.start_ms, S(1704067200)); /* 2024-01-01 */
    assert_int_equal(w.end_ms, S(1735689600));   /* 2025-01-01 */
    w = tg_rl_counters_window(TG_RL_DAY, S(1754923669) + 123);
    assert_int_equal(w.start_ms, S(1754870400));
    assert_int_equal(w.end_ms - w.start_ms, S(86400));
    w = tg_rl_counters_window(TG_RL_SECOND, S(1754923669) + 999);
    assert_int_equal(w.start_ms, S(1754923669));
    static const int64_t kong_lengths[] = {1, 60, 3600, 86400, 2592000, 31536000};
    static const char *const names[] = {"second", "minute", "hour", "day", "month", "year"};
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        assert_int_equal(tg_rl_counters_period_seconds(p), kong_lengths[p]);
        assert_string_equal(tg_rl_counters_period_name(p), names[p]);
    }
}

/* ------------------------------------------------------------------ several limits */

static void test_most_restrictive(void **state)
{
    (void)state;
    void *conf = configure("{\"second\":3,\"minute\":4}");
    int64_t t0 = T_1450_00 + S(10);
    req_t q;

    req_start(&q, t0); /* second 2 left, minute 3: the second is the tightest */
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
    assert_header(&q, "X-RateLimit-Limit-Second", "3");
    assert_header(&q, "X-RateLimit-Remaining-Second", "2");
    assert_header(&q, "X-RateLimit-Limit-Minute", "4");
    assert_header(&q, "X-RateLimit-Remaining-Minute", "3");
    assert_header(&q, "RateLimit-Limit", "3");
    assert_header(&q, "RateLimit-Remaining", "2");
    assert_header(&q, "RateLimit-Reset", "1");
    req_end(&q);

    pass(conf, t0 + 1, "RateLimit-Remaining", "1"); /* second 1, minute 2 */

    req_start(&q, t0 + S(1)); /* second 2, minute 1: now the minute */
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
    assert_header(&q, "RateLimit-Limit", "4");
    assert_header(&q, "RateLimit-Remaining", "1");
    assert_header(&q, "RateLimit-Reset", "49");
    req_end(&q);

    pass(conf, t0 + S(1), "X-RateLimit-Remaining-Minute", "0"); /* second 1, minute 0 */

    req_start(&q, t0 + S(1)); /* blocked by the minute; the second is shown uncounted */
    assert_int_equal(run(conf, &q), TG_FLOW_DONE);
    assert_int_equal(q.r.exit_status, 429);
    assert_header(&q, "X-RateLimit-Remaining-Second", "1");
    assert_header(&q, "X-RateLimit-Remaining-Minute", "0");
    assert_header(&q, "RateLimit-Limit", "4");
    assert_header(&q, "RateLimit-Remaining", "0");
    assert_header(&q, "RateLimit-Reset", "49");
    assert_header(&q, "Retry-After", "49");
    req_end(&q);
    handler()->release(conf);
}

/* Equal remaining: the longer window is reported. */
static void test_tie_goes_to_longer_window(void **state)
{
    (void)state;
    void *conf = configure("{\"second\":5,\"hour\":5}");
    req_t q;
    req_start(&q, T_1450_00 + S(30));
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
    assert_header(&q, "RateLimit-Remaining", "4");
    assert_header(&q, "RateLimit-Reset", "570"); /* 14:50:30 → 15:00 */
    assert_int_equal(q.r.nresponse_headers, 7);
    req_end(&q);
    handler()->release(conf);
}

/* Blocked requests are not counted: the increment comes after the decision. */
static void test_counted_after_decision(void **state)
{
    (void)state;
    void *conf = configure("{\"second\":1,\"minute\":3}");
    int64_t t0 = T_1450_00;
    pass(conf, t0, "X-RateLimit-Remaining-Minute", "2");
    blocked(conf, t0 + 100);
    blocked(conf, t0 + 200);
    pass(conf, t0 + S(1), "X-RateLimit-Remaining-Minute", "1");
    pass(conf, t0 + S(2), "X-RateLimit-Remaining-Minute", "0");
    blocked(conf, t0 + S(3));
    handler()->release(conf);
}

static void test_fractional_limit(void **state)
{
    (void)state;
    void *conf = configure("{\"minute\":2.5}");
    pass(conf, T_1450_00, "X-RateLimit-Limit-Minute", "2.5");
    pass(conf, T_1450_00, "X-RateLimit-Remaining-Minute", "0.5");
    pass(conf, T_1450_00, "X-RateLimit-Remaining-Minute", "0"); /* 0.5 left: allowed */
    blocked(conf, T_1450_00);
    handler()->release(conf);
}

/* ------------------------------------------------------------------ limit_by */

typedef void (*shape_fn)(req_t *q, int who);

/* Runs limit 1 with two requests from `who` 0 and one from `who` 1: same identity shares. */
static void two_identities(const char *config_json, shape_fn shape)
{
    void *conf = configure(config_json);
    req_t q;
    for (int i = 0; i < 3; i++) {
        int who = i < 2 ? 0 : 1;
        req_start(&q, T_1450_00);
        shape(&q, who);
        tg_flow_t flow = run(conf, &q);
        tg_flow_t want = i == 1 ? TG_FLOW_DONE : TG_FLOW_CONTINUE;
        if (flow != want) fail_msg("%s request %d: flow %d, want %d", config_json, i, flow, want);
        req_end(&q);
    }
    handler()->release(conf);
}

static void by_consumer(req_t *q, int who)
{
    as_consumer(q, who ? CONSUMER2 : CONSUMER1, CRED1);
}

static void by_credential_only(req_t *q, int who)
{
    as_consumer(q, NULL, who ? "cred-b" : "cred-a");
}

static void by_ip(req_t *q, int who)
{
    q->r.client_ip = who ? TG_STR("203.0.113.9") : TG_STR("203.0.113.8");
}

static void by_service(req_t *q, int who)
{
    q->service = json_pack("{s:s}", "id", who ? SERVICE2 : SERVICE1);
    q->r.service = q->service;
}

static void by_header(req_t *q, int who)
{
    q->headers[q->r.nheaders++] =
        (tg_http_header_t){TG_STR("X-Tenant"), who ? TG_STR("t2") : TG_STR("t1")};
}

static void by_path(req_t *q, int who)
{
    q->r.path = TG_STR("/limited");
    by_ip(q, who); /* the same path from different clients */
}

static void test_limit_by(void **state)
{
    (void)state;
    two_identities("{\"minute\":1,\"limit_by\":\"consumer\"}", by_consumer);
    two_identities("{\"minute\":1}", by_consumer); /* consumer is the default */
    two_identities("{\"minute\":1,\"limit_by\":\"consumer\"}", by_credential_only);
    two_identities("{\"minute\":1,\"limit_by\":\"credential\"}", by_credential_only);
    two_identities("{\"minute\":1,\"limit_by\":\"ip\"}", by_ip);
    two_identities("{\"minute\":1,\"limit_by\":\"service\"}", by_service);
    two_identities("{\"minute\":1,\"limit_by\":\"header\",\"header_name\":\"x_tenant\"}",
                   by_header);
    /* nothing to go by: every limit_by falls back to the client address */
    two_identities("{\"minute\":1,\"limit_by\":\"consumer\"}", by_ip);
    two_identities("{\"minute\":1,\"limit_by\":\"credential\"}", by_ip);
    two_identities("{\"minute\":1,\"limit_by\":\"service\"}", by_ip);
    two_identities("{\"minute\":1,\"limit_by\":\"header\",\"header_name\":\"X-Tenant\"}", by_ip);
    two_identities("{\"minute\":1,\"limit_by\":\"path\",\"path\":\"/other\"}", by_ip);
}

/* limit_by path: requests on the configured path share one counter, whoever sends them. */
static void test_limit_by_path(void **state)
{
    (void)state;
    void *conf = configure("{\"minute\":1,\"limit_by\":\"path\",\"path\":\"/limited\"}");
    req_t q;
    req_start(&q, T_1450_00);
    by_path(&q, 0);
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
    req_end(&q);
    req_start(&q, T_1450_00);
    by_path(&q, 1);
    assert_int_equal(run(conf, &q), TG_FLOW_DONE); /* another client, same path */
    req_end(&q);
    req_start(&q, T_1450_00); /* another path: counted by its client address */
    q.r.path = TG_STR("/free");
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
    req_end(&q);
    handler()->release(conf);
}

/* limit_by path compares the normalised path (Kong's kong.request.get_path()), so escapes,
 * dot segments and doubled slashes cannot dodge the limit; the identifier is that path too. */
static void test_limit_by_path_normalised(void **state)
{
    (void)state;
    void *conf = configure("{\"minute\":4,\"limit_by\":\"path\",\"path\":\"/limited\"}");
    static const char *const raw[] = {"/%6Cimited", "/x/../limited", "//limited", "/./limited"};
    req_t q;
    for (int i = 0; i < 4; i++) {
        req_start(&q, T_1450_00);
        q.r.path = tg_str_from(raw[i]);
        by_ip(&q, i % 2); /* from two clients: the path is what is counted */
        assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
        char want[8];
        snprintf(want, sizeof want, "%d", 3 - i);
        assert_string_equal(resp(&q, "X-RateLimit-Remaining-Minute"), want);
        assert_true(tg_str_eq_lit(tg_req_normalized_path(&q.r), "/limited"));
        req_end(&q);
    }
    req_start(&q, T_1450_00);
    q.r.path = TG_STR("/limited");
    assert_int_equal(run(conf, &q), TG_FLOW_DONE); /* the fifth on that path */
    req_end(&q);
    /* the proxy hands over the router's normalised path; the plugin uses it as given */
    req_start(&q, T_1450_00);
    q.r.path = TG_STR("/raw/../elsewhere");
    q.r.norm_path = TG_STR("/limited");
    assert_int_equal(run(conf, &q), TG_FLOW_DONE);
    req_end(&q);
    /* a path that only resembles it once decoded with a reserved escape stays apart */
    req_start(&q, T_1450_00);
    q.r.path = TG_STR("/limit%65d%2F");
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE); /* "/limited%2F": counted by address */
    req_end(&q);
    handler()->release(conf);
}

/* The counter belongs to the instance's scope: a global instance counts across routes,
 * two route-scoped instances count apart. */
static void test_scope_in_key(void **state)
{
    (void)state;
    char svc[TG_UUID_STR_LEN + 1];
    tg_uuid_v4(svc); /* service-scoped: this test's own counters */
    void *shared = configure_scoped("{\"minute\":2}", NULL, svc);
    req_t q;
    for (int i = 0; i < 3; i++) {
        json_t *route = json_pack("{s:s}", "id", i % 2 ? ROUTE_A : ROUTE_B);
        req_start(&q, T_1450_00);
        q.r.route = route;
        assert_int_equal(run(shared, &q), i < 2 ? TG_FLOW_CONTINUE : TG_FLOW_DONE);
        req_end(&q);
        json_decref(route);
    }
    handler()->release(shared);

    char ra[TG_UUID_STR_LEN + 1], rb[TG_UUID_STR_LEN + 1];
    tg_uuid_v4(ra);
    tg_uuid_v4(rb);
    void *a = configure_scoped("{\"minute\":1}", ra, NULL);
    void *b = configure_scoped("{\"minute\":1}", rb, NULL);
    pass(a, T_1450_00, NULL, NULL);
    pass(b, T_1450_00, NULL, NULL);
    blocked(a, T_1450_00);
    handler()->release(a);
    handler()->release(b);
}

/* ------------------------------------------------------------------ options */

static void test_hide_client_headers(void **state)
{
    (void)state;
    void *conf = configure("{\"minute\":1,\"hide_client_headers\":true}");
    req_t q;
    req_start(&q, T_1450_00);
    assert_int_equal(run(conf, &q), TG_FLOW_CONTINUE);
    assert_int_equal(q.r.nresponse_headers, 0);
    req_end(&q);
    req_start(&q, T_1450_00);
    assert_int_equal(run(conf, &q), TG_FLOW_DONE);
    assert_exit_message(&q, 429, "API rate limit exceeded");
    assert_int_equal(q.r.nresponse_headers, 0); /* no Retry-After either */
    req_end(&q);
    handler()->release(conf);
}

static void test_custom_error(void **state)
{
    (void)state;
    void *conf =
        configure("{\"minute\":1,\"error_code\":404,\"error_message\":\"Fake Not Found\"}");
    pass(conf, T_1450_00, NULL, NULL);
    req_t q;
    req_start(&q, T_1450_00);
    assert_int_equal(run(conf, &q), TG_FLOW_DONE);
    assert_exit_message(&q, 404, "Fake Not Found");
    assert_header(&q, "Retry-After", "60");
    req_end(&q);
    handler()->release(conf);
}

static void test_redis_refused(void **state)
{
    (void)state;
    json_t *plugin = json_pack("{s:s, s:{s:i, s:s, s:{s:s}}}", "name", "rate-limiting", "config",
                               "minute", 5, "policy", "redis", "redis", "host", "127.0.0.1");
    void *conf = NULL;
    char err[200] = "";
    assert_int_equal(handler()->configure(plugin, &conf, err, sizeof(err)), -TG_EINVAL);
    assert_null(conf);
    assert_string_equal(err, "policy 'redis' is not supported by this data plane yet");
    json_decref(plugin);

    plugin = json_pack("{s:s, s:{s:s}}", "name", "rate-limiting", "config", "limit_by", "ip");
    assert_int_equal(handler()->configure(plugin, &conf, err, sizeof(err)), -TG_EINVAL);
    json_decref(plugin);
}

/* ------------------------------------------------------------------ counters */

#define THREADS 4

struct hammer {
    void *conf;
    int requests;
    int passed;
};

static void *hammer_plugin(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < h->requests; i++) {
        req_t q;
        req_start(&q, T_1450_00 + 500);
        if (handler()->access(&q.r, h->conf) == TG_FLOW_CONTINUE) h->passed++;
        req_end(&q);
    }
    return NULL;
}

/* Several workers on one key: every request is counted exactly once. */
static void test_threads_share_counters(void **state)
{
    (void)state;
    void *conf = configure("{\"minute\":1000000}");
    pthread_t th[THREADS];
    struct hammer h[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){conf, 2000, 0};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_plugin, &h[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(h[i].passed, 2000);
    }
    pass(conf, T_1450_00 + 900, "X-RateLimit-Remaining-Minute", "991999");
    handler()->release(conf);
}

/* A limit reached from several threads at once lets through at most a few over it (the
 * read and the increment are separate, as in Kong) and never fewer than the limit. */
static void test_threads_limit(void **state)
{
    (void)state;
    void *conf = configure("{\"second\":100}");
    pthread_t th[THREADS];
    struct hammer h[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){conf, 200, 0};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_plugin, &h[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += h[i].passed;
    }
    assert_true(total >= 100 && total < 100 + THREADS);
    handler()->release(conf);
}

struct keys_arg {
    tg_rl_counters_t *c;
    tg_rl_window_t w;
};

static void *hammer_keys(void *arg)
{
    struct keys_arg *a = arg;
    for (int i = 0; i < 20000; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "key-%d", i % 50);
        tg_rl_counter_t h;
        if (tg_rl_counters_acquire(a->c, TG_RL_MINUTE, (tg_str_t){key, (size_t)n}, a->w, &h) != 0)
            return (void *)1;
        tg_rl_counters_add(&h, 1);
    }
    return NULL;
}

/* Threads creating the same keys at the same time never make two counters of one key. */
static void test_concurrent_inserts(void **state)
{
    (void)state;
    tg_rl_counters_t *c;
    assert_int_equal(tg_rl_counters_create(1024, 1024, &c), 0);
    struct keys_arg a = {c, tg_rl_counters_window(TG_RL_MINUTE, T_1450_00)};
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_keys, &a), 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    for (int k = 0; k < 50; k++) {
        char key[32];
        int n = snprintf(key, sizeof key, "key-%d", k);
        tg_rl_counter_t h;
        assert_int_equal(
            tg_rl_counters_acquire(c, TG_RL_MINUTE, (tg_str_t){key, (size_t)n}, a.w, &h), 0);
        assert_int_equal(tg_rl_counters_get(&h), THREADS * 400);
    }
    tg_rl_counters_destroy(c);
}

/* A slot keeps a window's end in whole seconds: other windows are refused, not mixed up. */
static void test_counters_window_bounds(void **state)
{
    (void)state;
    tg_rl_counters_t *c;
    tg_rl_counter_t h;
    assert_int_equal(tg_rl_counters_create(16, 16, &c), 0);
    tg_rl_window_t ok = tg_rl_counters_window(TG_RL_SECOND, T_1450_00);
    tg_rl_window_t odd = {ok.start_ms, ok.end_ms + 1}, past_2106 = {0, (INT64_C(1) << 32) * 1000},
                   negative = {-2000, -1000};
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_SECOND, TG_STR("k"), odd, &h), -TG_EINVAL);
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_SECOND, TG_STR("k"), past_2106, &h),
                     -TG_EINVAL);
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_SECOND, TG_STR("k"), negative, &h),
                     -TG_EINVAL);
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_SECOND, TG_STR("k"), ok, &h), 0);
    tg_rl_counters_add(&h, 3);
    tg_rl_counter_t again;
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_SECOND, TG_STR("k"), ok, &again), 0);
    assert_int_equal(tg_rl_counters_get(&again), 3);
    tg_rl_counters_destroy(c);
}

/* A full bucket refuses new keys; once their window is over, slots are reused. */
static void test_counters_expiry(void **state)
{
    (void)state;
    tg_rl_counters_t *c;
    assert_int_equal(tg_rl_counters_create(1, 1, &c), 0); /* one bucket, no growth */
    tg_rl_window_t w1 = tg_rl_counters_window(TG_RL_SECOND, T_1450_00);
    tg_rl_window_t w2 = tg_rl_counters_window(TG_RL_SECOND, T_1450_00 + S(1));
    tg_rl_counter_t first, h;
    char key[32];
    for (int i = 0; i < TG_RL_COUNTERS_BUCKET; i++) {
        int n = snprintf(key, sizeof key, "w1-%d", i);
        assert_int_equal(
            tg_rl_counters_acquire(c, TG_RL_SECOND, (tg_str_t){key, (size_t)n}, w1, &h), 0);
        tg_rl_counters_add(&h, 5);
        if (i == 0) first = h;
    }
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_SECOND, TG_STR("one-more"), w1, &h),
                     -TG_ETOOBIG);
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_MINUTE, TG_STR("one-more"), w1, &h), 0);
    for (int i = 0; i < TG_RL_COUNTERS_BUCKET; i++) {
        int n = snprintf(key, sizeof key, "w2-%d", i);
        assert_int_equal(
            tg_rl_counters_acquire(c, TG_RL_SECOND, (tg_str_t){key, (size_t)n}, w2, &h), 0);
        assert_int_equal(tg_rl_counters_get(&h), 0);
    }
    /* a handle from before the reuse reads 0 and counts nothing into the new key */
    assert_int_equal(tg_rl_counters_get(&first), 0);
    tg_rl_counters_add(&first, 7);
    for (int i = 0; i < TG_RL_COUNTERS_BUCKET; i++) {
        int n = snprintf(key, sizeof key, "w2-%d", i);
        assert_int_equal(
            tg_rl_counters_acquire(c, TG_RL_SECOND, (tg_str_t){key, (size_t)n}, w2, &h), 0);
        assert_int_equal(tg_rl_counters_get(&h), 0);
    }
    tg_rl_counters_destroy(c);
}

/* The plugin on a full table: fault_tolerant proxies without headers, otherwise 500. */
static void test_table_full(void **state)
{
    (void)state;
    const int64_t t = S(978307200); /* 2001-01-01: before every other test's windows */
    void *tolerant = configure("{\"second\":10}");
    void *strict = configure("{\"second\":10,\"fault_tolerant\":false}");
    req_t q;
    char ip[32];
    int i;
    for (i = 0; i <= SHARED_SLOTS; i++) {
        snprintf(ip, sizeof ip, "10.0.0.%d", i);
        req_start(&q, t);
        q.r.client_ip = tg_str_from(ip);
        assert_int_equal(run(tolerant, &q), TG_FLOW_CONTINUE);
        bool full = q.r.nresponse_headers == 0;
        req_end(&q);
        if (full) break;
    }
    assert_true(i <= SHARED_SLOTS); /* the table filled up */
    /* not silently: the request that found no room is counted (and a warning logged) */
    unsigned long proxied = tg_metrics_global_get(TG_METRICS_RL_ERRORS_PROXIED);
    assert_true(proxied >= 1);

    /* the strict instance (another scope, so other keys and buckets): new clients until one
     * lands in a full bucket, which gets Kong's 500 instead */
    for (i = 0; i <= SHARED_SLOTS; i++) {
        snprintf(ip, sizeof ip, "10.0.1.%d", i);
        req_start(&q, t);
        q.r.client_ip = tg_str_from(ip);
        if (run(strict, &q) == TG_FLOW_DONE) break;
        req_end(&q);
    }
    assert_true(i <= SHARED_SLOTS);
    assert_exit_message(&q, 500, "An unexpected error occurred");
    assert_int_equal(q.r.nresponse_headers, 0);
    req_end(&q);
    assert_int_equal(tg_metrics_global_get(TG_METRICS_RL_ERRORS_REFUSED), 1);
    assert_int_equal(tg_metrics_global_get(TG_METRICS_RL_ERRORS_PROXIED), proxied);

    /* a second later those windows are over: their slots serve new keys */
    pass(strict, t + S(1), "X-RateLimit-Remaining-Second", "9");
    pass(tolerant, t + S(1), "X-RateLimit-Remaining-Second", "9");
    handler()->release(tolerant);
    handler()->release(strict);
}

/* ------------------------------------------------------------------ growth */

#define MANY 300000 /* distinct identifiers in one window: well past the 131 072 first slots */

static tg_str_t many_key(char *buf, int i)
{
    /* shaped like the plugin's keys: one consumer id per identifier */
    int n = snprintf(buf, 192,
                     "ratelimit:" ROUTE_A ":" SERVICE1 ":c%07d-0000-4000-8000-%012d:"
                     "1754920800000:hour",
                     i, i);
    return (tg_str_t){buf, (size_t)n};
}

/* More identifiers than the first level holds: the table grows, and every identifier keeps
 * its own exact count (none shares a slot, none is refused). */
static void test_grows_past_initial(void **state)
{
    (void)state;
    tg_rl_counters_t *c;
    assert_int_equal(tg_rl_counters_create(TG_RL_COUNTERS_DEFAULT_SLOTS, (size_t)1 << 22, &c), 0);
    tg_rl_window_t w = tg_rl_counters_window(TG_RL_HOUR, T_1450_00);
    char buf[192];
    for (int i = 0; i < MANY; i++) {
        tg_rl_counter_t h;
        assert_int_equal(tg_rl_counters_acquire(c, TG_RL_HOUR, many_key(buf, i), w, &h), 0);
        tg_rl_counters_add(&h, (uint64_t)(i % 7) + 1);
    }
    size_t max, cap = tg_rl_counters_capacity(c, TG_RL_HOUR, &max);
    assert_true(cap > TG_RL_COUNTERS_DEFAULT_SLOTS && cap >= MANY && cap <= 2 * (size_t)MANY * 2);
    assert_int_equal(max, (size_t)1 << 22);
    assert_int_equal(tg_rl_counters_capacity(c, TG_RL_MINUTE, NULL), TG_RL_COUNTERS_DEFAULT_SLOTS);
    for (int i = 0; i < MANY; i++) {
        tg_rl_counter_t h;
        assert_int_equal(tg_rl_counters_acquire(c, TG_RL_HOUR, many_key(buf, i), w, &h), 0);
        assert_int_equal(tg_rl_counters_get(&h), (uint64_t)(i % 7) + 1);
    }
    /* the next window reuses the slots in place: no growth beyond what one window needed */
    tg_rl_window_t w2 = tg_rl_counters_window(TG_RL_HOUR, T_1450_00 + S(3600));
    for (int i = 0; i < MANY; i++) {
        tg_rl_counter_t h;
        assert_int_equal(tg_rl_counters_acquire(c, TG_RL_HOUR, many_key(buf, i), w2, &h), 0);
        assert_int_equal(tg_rl_counters_get(&h), 0);
    }
    assert_int_equal(tg_rl_counters_capacity(c, TG_RL_HOUR, NULL), cap);
    tg_rl_counters_destroy(c);
}

struct grow_arg {
    tg_rl_counters_t *c;
    tg_rl_window_t w;
    int start, n;
    int failed;
};

/* Every thread counts every identifier once, each starting at another place, so threads
 * insert new identifiers and grow levels at the same time. */
static void *grow_worker(void *arg)
{
    struct grow_arg *a = arg;
    char buf[192];
    for (int k = 0; k < a->n; k++) {
        tg_rl_counter_t h;
        if (tg_rl_counters_acquire(a->c, TG_RL_MINUTE, many_key(buf, (a->start + k) % a->n), a->w,
                                   &h) != 0) {
            a->failed++;
            continue;
        }
        tg_rl_counters_add(&h, 1);
    }
    return NULL;
}

static void test_grows_concurrently(void **state)
{
    (void)state;
    const int n = 160000;
    tg_rl_counters_t *c;
    /* a small first level: several levels are mapped while the threads run */
    assert_int_equal(tg_rl_counters_create(4096, (size_t)1 << 20, &c), 0);
    tg_rl_window_t w = tg_rl_counters_window(TG_RL_MINUTE, T_1450_00);
    pthread_t th[THREADS];
    struct grow_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct grow_arg){c, w, i * (n / THREADS), n, 0};
        assert_int_equal(pthread_create(&th[i], NULL, grow_worker, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].failed, 0);
    }
    char buf[192];
    for (int i = 0; i < n; i++) {
        tg_rl_counter_t h;
        assert_int_equal(tg_rl_counters_acquire(c, TG_RL_MINUTE, many_key(buf, i), w, &h), 0);
        if (tg_rl_counters_get(&h) != THREADS)
            fail_msg("identifier %d counted %llu times", i,
                     (unsigned long long)tg_rl_counters_get(&h));
    }
    assert_true(tg_rl_counters_capacity(c, TG_RL_MINUTE, NULL) >= (size_t)n);
    tg_rl_counters_destroy(c);
}

/* At its maximum a table refuses new identifiers (the caller then logs and counts), keeps
 * counting the ones it holds, and takes new ones again once their windows end. */
static void test_grows_to_maximum_only(void **state)
{
    (void)state;
    tg_rl_counters_t *c;
    assert_int_equal(tg_rl_counters_create(64, 256, &c), 0);
    tg_rl_window_t w = tg_rl_counters_window(TG_RL_SECOND, T_1450_00);
    char buf[192];
    int held = 0, refused = 0;
    for (int i = 0; i < 400; i++) {
        tg_rl_counter_t h;
        int rc = tg_rl_counters_acquire(c, TG_RL_SECOND, many_key(buf, i), w, &h);
        if (rc == 0)
            held++;
        else if (rc == -TG_ETOOBIG)
            refused++;
        else
            fail_msg("unexpected %d", rc);
    }
    size_t max, cap = tg_rl_counters_capacity(c, TG_RL_SECOND, &max);
    assert_int_equal(max, 256);
    assert_int_equal(cap, 256);
    assert_true(held > 128 && held <= 256);
    assert_int_equal(held + refused, 400);
    tg_rl_window_t w2 = tg_rl_counters_window(TG_RL_SECOND, T_1450_00 + S(1));
    tg_rl_counter_t h;
    assert_int_equal(tg_rl_counters_acquire(c, TG_RL_SECOND, many_key(buf, 399), w2, &h), 0);
    tg_rl_counters_destroy(c);
}

int main(void)
{
    /* before any instance is configured: the plugin's shared table is this small */
    if (tg_rl_counters_shared_init(SHARED_SLOTS, SHARED_SLOTS) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_004),
        cmocka_unit_test(test_each_window),
        cmocka_unit_test(test_window_bounds),
        cmocka_unit_test(test_most_restrictive),
        cmocka_unit_test(test_tie_goes_to_longer_window),
        cmocka_unit_test(test_counted_after_decision),
        cmocka_unit_test(test_fractional_limit),
        cmocka_unit_test(test_limit_by),
        cmocka_unit_test(test_limit_by_path),
        cmocka_unit_test(test_limit_by_path_normalised),
        cmocka_unit_test(test_scope_in_key),
        cmocka_unit_test(test_hide_client_headers),
        cmocka_unit_test(test_custom_error),
        cmocka_unit_test(test_redis_refused),
        cmocka_unit_test(test_threads_share_counters),
        cmocka_unit_test(test_threads_limit),
        cmocka_unit_test(test_concurrent_inserts),
        cmocka_unit_test(test_counters_window_bounds),
        cmocka_unit_test(test_counters_expiry),
        cmocka_unit_test(test_grows_past_initial),
        cmocka_unit_test(test_grows_concurrently),
        cmocka_unit_test(test_grows_to_maximum_only),
        cmocka_unit_test(test_table_full), /* last: it fills the shared table */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
