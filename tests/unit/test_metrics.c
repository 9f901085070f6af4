/*
 * test_metrics.c — the data plane's request metrics (metrics.h): label sets are counted
 * exactly, the consumer label's cardinality is capped per worker with the rest counted as
 * consumer="__other__", the label-set table never overflows into lost or mislabelled
 * requests, and the Prometheus text sums workers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tg_metrics_t *new_metrics(void)
{
    tg_metrics_t *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    return m;
}

static void count(tg_metrics_t *m, int status, const char *route, const char *consumer)
{
    tg_metrics_request_t r = {status, route, "svc", consumer, 1, 1, 1};
    tg_metrics_count_request(m, &r);
}

/* The value of the sample line starting with `prefix` in text (-1 when absent). */
static long long sample(const char *text, const char *prefix)
{
    for (const char *p = text; (p = strstr(p, prefix)) != NULL; p++) {
        if (p != text && p[-1] != '\n') continue;
        return atoll(p + strlen(prefix));
    }
    return -1;
}

/* Sum of every tollgate_http_requests_total sample. */
static long long requests_sum(const char *text)
{
    long long sum = 0;
    const char *name = "tollgate_http_requests_total{";
    for (const char *p = text; (p = strstr(p, name)) != NULL; p++) {
        const char *sp = strchr(p, '}');
        assert_non_null(sp);
        sum += atoll(sp + 2);
    }
    return sum;
}

static void test_labels_counted(void **state)
{
    (void)state;
    tg_metrics_t *m = new_metrics();
    count(m, 200, "r1", "alice");
    count(m, 200, "r1", "alice");
    count(m, 429, "r1", "alice");
    count(m, 200, "r2", NULL);
    tg_metrics_t *ms[1] = {m};
    char *text = tg_metrics_render(ms, 1, NULL);
    assert_int_equal(sample(text, "tollgate_http_requests_total{code=\"200\",route=\"r1\","
                                  "service=\"svc\",consumer=\"alice\"} "),
                     2);
    assert_int_equal(sample(text, "tollgate_http_requests_total{code=\"429\",route=\"r1\","
                                  "service=\"svc\",consumer=\"alice\"} "),
                     1);
    assert_int_equal(sample(text, "tollgate_http_requests_total{code=\"200\",route=\"r2\","
                                  "service=\"svc\",consumer=\"\"} "),
                     1);
    free(text);
    free(m);
}

/* Past TG_METRICS_CONSUMERS consumers a worker counts the others as "__other__": the first
 * ones keep their series, every request is counted once, and the table never fills. */
static void test_consumer_cap(void **state)
{
    (void)state;
    tg_metrics_t *m = new_metrics();
    const int consumers = 3 * TG_METRICS_CONSUMERS + 123;
    char name[32];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < consumers; i++) {
            snprintf(name, sizeof(name), "user-%d", i);
            count(m, 200, "r1", name);
        }
    }
    assert_int_equal(m->nconsumers, TG_METRICS_CONSUMERS);
    tg_metrics_t *ms[1] = {m};
    char *text = tg_metrics_render(ms, 1, NULL);
    assert_int_equal(requests_sum(text), 2 * consumers);
    assert_int_equal(sample(text, "tollgate_http_requests_total{code=\"200\",route=\"r1\","
                                  "service=\"svc\",consumer=\"user-0\"} "),
                     2);
    assert_int_equal(sample(text, "tollgate_http_requests_total{code=\"200\",route=\"r1\","
                                  "service=\"svc\",consumer=\"__other__\"} "),
                     2 * (consumers - TG_METRICS_CONSUMERS));
    snprintf(name, sizeof(name), "consumer=\"user-%d\"", consumers - 1);
    assert_null(strstr(text, name)); /* a late consumer has no series of its own */
    free(text);
    free(m);
}

/* More label sets than the table keeps (many routes): the rest are counted by status under
 * "__other__" labels, so the sums by code stay exact. */
static void test_series_cap(void **state)
{
    (void)state;
    tg_metrics_t *m = new_metrics();
    const int routes = TG_METRICS_SERIES_MAX + 500;
    char route[32];
    for (int i = 0; i < routes; i++) {
        snprintf(route, sizeof(route), "route-%d", i);
        count(m, i % 2 ? 404 : 200, route, NULL);
    }
    assert_int_equal(m->nseries, TG_METRICS_SERIES_MAX);
    tg_metrics_t *ms[1] = {m};
    char *text = tg_metrics_render(ms, 1, NULL);
    assert_int_equal(requests_sum(text), routes);
    long long o200 = sample(text, "tollgate_http_requests_total{code=\"200\",route=\"__other__\","
                                  "service=\"__other__\",consumer=\"__other__\"} ");
    long long o404 = sample(text, "tollgate_http_requests_total{code=\"404\",route=\"__other__\","
                                  "service=\"__other__\",consumer=\"__other__\"} ");
    assert_int_equal(o200 + o404, 500);
    free(text);
    free(m);
}

/* Two workers' series of one label set are summed; process-wide counters are rendered. */
static void test_workers_summed(void **state)
{
    (void)state;
    tg_metrics_t *a = new_metrics(), *b = new_metrics();
    count(a, 200, "r1", "bob");
    count(b, 200, "r1", "bob");
    count(b, 200, "r1", "bob");
    unsigned long before = tg_metrics_global_get(TG_METRICS_RL_ERRORS_PROXIED);
    tg_metrics_global_add(TG_METRICS_RL_ERRORS_PROXIED, 3);
    tg_metrics_t *ms[2] = {a, b};
    char *text = tg_metrics_render(ms, 2, NULL);
    assert_int_equal(sample(text, "tollgate_http_requests_total{code=\"200\",route=\"r1\","
                                  "service=\"svc\",consumer=\"bob\"} "),
                     3);
    assert_int_equal(sample(text, "tollgate_rate_limiting_errors_total{result=\"proxied\"} "),
                     (long long)before + 3);
    assert_true(sample(text, "tollgate_rate_limiting_counter_slots ") >= 0);
    free(text);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labels_counted),
        cmocka_unit_test(test_consumer_cap),
        cmocka_unit_test(test_series_cap),
        cmocka_unit_test(test_workers_summed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
