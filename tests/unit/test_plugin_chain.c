/*
 * test_plugin_chain.c — which plugin instance a request gets: Kong's eight precedence
 * levels (kong-compat.md §4.3), disabled instances giving way to less specific ones,
 * priority order (key-auth before rate-limiting), and configs the data plane refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "error.h"
#include "plugin_chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE "11111111-1111-4111-8111-111111111111"
#define OTHER_ROUTE "11111111-1111-4111-8111-999999999999"
#define SERVICE "22222222-2222-4222-8222-222222222222"
#define CONSUMER "33333333-3333-4333-8333-333333333333"

/* ------------------------------------------------------------------ helpers */

static size_t index_of(const char *name)
{
    for (size_t i = 0; tg_plugins[i]; i++)
        if (strcmp(tg_plugins[i]->name, name) == 0) return i;
    fail_msg("no plugin %s", name);
    return 0;
}

static json_t *scope_ref(const char *id)
{
    return id ? json_pack("{s:s}", "id", id) : json_null();
}

/* A rate-limiting instance named `id` with the given scope (NULL = not scoped). */
static json_t *rl(const char *id, const char *route, const char *service, const char *consumer,
                  bool enabled)
{
    return json_pack("{s:s, s:s, s:b, s:{s:i}, s:o, s:o, s:o, s:[s,s]}", "id", id, "name",
                     "rate-limiting", "enabled", enabled, "config", "minute", 10, "route",
                     scope_ref(route), "service", scope_ref(service), "consumer",
                     scope_ref(consumer), "protocols", "http", "https");
}

static json_t *key_auth(const char *id, const char *route)
{
    return json_pack("{s:s, s:s, s:b, s:{s:[s]}, s:o, s:n, s:n}", "id", id, "name", "key-auth",
                     "enabled", 1, "config", "key_names", "apikey", "route", scope_ref(route),
                     "service", "consumer");
}

/* The 8 levels, most specific first, as (route, service, consumer) of an instance. */
static const struct level {
    const char *name, *route, *service, *consumer;
} levels[8] = {
    {"route+service+consumer", ROUTE, SERVICE, CONSUMER},
    {"route+consumer", ROUTE, NULL, CONSUMER},
    {"service+consumer", NULL, SERVICE, CONSUMER},
    {"route+service", ROUTE, SERVICE, NULL},
    {"consumer", NULL, NULL, CONSUMER},
    {"route", ROUTE, NULL, NULL},
    {"service", NULL, SERVICE, NULL},
    {"global", NULL, NULL, NULL},
};

static tg_plugin_chain_t *build(json_t *plugins)
{
    tg_plugin_chain_t *c = NULL;
    char err[256] = "";
    int rc = tg_plugin_chain_build(plugins, &c, err, sizeof(err));
    if (rc != 0) fail_msg("build failed: %d %s", rc, err);
    json_decref(plugins);
    return c;
}

static const char *lookup(const tg_plugin_chain_t *c, const char *plugin, const char *route,
                          const char *service, const char *consumer)
{
    const tg_plugin_instance_t *i = tg_plugin_chain_lookup(
        c, index_of(plugin), tg_str_from(route), tg_str_from(service), tg_str_from(consumer));
    return i ? i->id : NULL;
}

/* ------------------------------------------------------------------ precedence */

/* With instances at levels k..8, a request matching everything gets level k. */
static void test_eight_levels(void **state)
{
    (void)state;
    for (size_t k = 0; k < 8; k++) {
        json_t *plugins = json_array();
        for (size_t l = k; l < 8; l++)
            json_array_append_new(plugins, rl(levels[l].name, levels[l].route, levels[l].service,
                                              levels[l].consumer, true));
        tg_plugin_chain_t *c = build(plugins);
        const char *got = lookup(c, "rate-limiting", ROUTE, SERVICE, CONSUMER);
        if (!got || strcmp(got, levels[k].name) != 0)
            fail_msg("levels %zu..8: got %s, want %s", k + 1, got ? got : "(none)", levels[k].name);
        tg_plugin_chain_free(c);
    }
}

/* Each level on its own applies exactly to the requests whose ids it names. */
static void test_each_level_alone(void **state)
{
    (void)state;
    for (size_t k = 0; k < 8; k++) {
        const struct level *lv = &levels[k];
        json_t *plugins = json_array();
        json_array_append_new(plugins, rl("only", lv->route, lv->service, lv->consumer, true));
        tg_plugin_chain_t *c = build(plugins);
        assert_string_equal(lookup(c, "rate-limiting", ROUTE, SERVICE, CONSUMER), "only");
        /* a request lacking (or differing in) one of its ids does not get it */
        if (lv->route) assert_null(lookup(c, "rate-limiting", OTHER_ROUTE, SERVICE, CONSUMER));
        if (lv->service) assert_null(lookup(c, "rate-limiting", ROUTE, NULL, CONSUMER));
        if (lv->consumer) assert_null(lookup(c, "rate-limiting", ROUTE, SERVICE, NULL));
        tg_plugin_chain_free(c);
    }
}

/* All levels present: what requests with fewer ids get. */
static void test_partial_requests(void **state)
{
    (void)state;
    json_t *plugins = json_array();
    for (size_t l = 0; l < 8; l++)
        json_array_append_new(plugins, rl(levels[l].name, levels[l].route, levels[l].service,
                                          levels[l].consumer, true));
    tg_plugin_chain_t *c = build(plugins);
    assert_string_equal(lookup(c, "rate-limiting", ROUTE, SERVICE, NULL), "route+service");
    assert_string_equal(lookup(c, "rate-limiting", ROUTE, NULL, CONSUMER), "route+consumer");
    assert_string_equal(lookup(c, "rate-limiting", OTHER_ROUTE, SERVICE, CONSUMER),
                        "service+consumer");
    assert_string_equal(lookup(c, "rate-limiting", OTHER_ROUTE, NULL, CONSUMER), "consumer");
    assert_string_equal(lookup(c, "rate-limiting", ROUTE, NULL, NULL), "route");
    assert_string_equal(lookup(c, "rate-limiting", OTHER_ROUTE, SERVICE, NULL), "service");
    assert_string_equal(lookup(c, "rate-limiting", OTHER_ROUTE, NULL, NULL), "global");
    assert_string_equal(lookup(c, "rate-limiting", NULL, NULL, NULL), "global");
    assert_int_equal(tg_plugin_chain_size(c), 8);
    tg_plugin_chain_free(c);
}

/* A disabled route-level instance: the enabled service-level one applies instead. */
static void test_disabled_gives_way(void **state)
{
    (void)state;
    json_t *plugins = json_array();
    json_array_append_new(plugins, rl("route-off", ROUTE, NULL, NULL, false));
    json_array_append_new(plugins, rl("service-on", NULL, SERVICE, NULL, true));
    tg_plugin_chain_t *c = build(plugins);
    assert_string_equal(lookup(c, "rate-limiting", ROUTE, SERVICE, NULL), "service-on");
    assert_int_equal(tg_plugin_chain_size(c), 1);
    tg_plugin_chain_free(c);

    /* only disabled instances: the plugin does not run at all */
    plugins = json_array();
    json_array_append_new(plugins, rl("global-off", NULL, NULL, NULL, false));
    c = build(plugins);
    assert_null(lookup(c, "rate-limiting", ROUTE, SERVICE, CONSUMER));
    size_t n = 99;
    tg_plugin_chain_order(c, &n);
    assert_int_equal(n, 0);
    tg_plugin_chain_free(c);
}

/* key-auth cannot be scoped to a consumer: the request's consumer does not hide its route one. */
static void test_no_consumer_plugin(void **state)
{
    (void)state;
    json_t *plugins = json_array();
    json_array_append_new(plugins, key_auth("ka-route", ROUTE));
    tg_plugin_chain_t *c = build(plugins);
    assert_string_equal(lookup(c, "key-auth", ROUTE, SERVICE, CONSUMER), "ka-route");
    assert_null(lookup(c, "key-auth", OTHER_ROUTE, SERVICE, CONSUMER));
    tg_plugin_chain_free(c);
}

/* ------------------------------------------------------------------ order and build */

static void test_priority_order(void **state)
{
    (void)state;
    json_t *plugins = json_array();
    json_array_append_new(plugins, rl("rl", NULL, NULL, NULL, true)); /* listed first */
    json_array_append_new(plugins, key_auth("ka", NULL));
    tg_plugin_chain_t *c = build(plugins);
    size_t n = 0;
    const size_t *order = tg_plugin_chain_order(c, &n);
    assert_int_equal(n, 2);
    assert_string_equal(tg_plugins[order[0]]->name, "key-auth");
    assert_string_equal(tg_plugins[order[1]]->name, "rate-limiting");
    const tg_plugin_instance_t *i =
        tg_plugin_chain_lookup(c, order[0], TG_STR_NULL, TG_STR_NULL, TG_STR_NULL);
    assert_non_null(i);
    assert_ptr_equal(i->handler, tg_plugin_handler("key-auth"));
    assert_non_null(i->compiled);
    assert_int_equal(i->info->priority, 1250);
    tg_plugin_chain_free(c);
}

static void test_empty(void **state)
{
    (void)state;
    tg_plugin_chain_t *c = build(json_array());
    size_t n = 1;
    tg_plugin_chain_order(c, &n);
    assert_int_equal(n, 0);
    assert_null(lookup(c, "key-auth", ROUTE, SERVICE, NULL));
    tg_plugin_chain_free(c);
}

static void build_fails(json_t *plugins, const char *want_in_err)
{
    tg_plugin_chain_t *c = (tg_plugin_chain_t *)1;
    char err[256] = "";
    assert_int_equal(tg_plugin_chain_build(plugins, &c, err, sizeof(err)), -TG_EINVAL);
    assert_null(c);
    if (!strstr(err, want_in_err)) fail_msg("error '%s' lacks '%s'", err, want_in_err);
    json_decref(plugins);
}

static void test_refused(void **state)
{
    (void)state;
    /* redis is not available on this data plane yet */
    json_t *redis = rl("rl-redis", NULL, NULL, NULL, true);
    json_object_set_new(json_object_get(redis, "config"), "policy", json_string("redis"));
    json_t *plugins = json_array();
    json_array_append_new(plugins, key_auth("ka", NULL)); /* compiled, then released */
    json_array_append_new(plugins, redis);
    build_fails(plugins, "policy 'redis' is not supported by this data plane yet");

    plugins = json_pack("[{s:s, s:s, s:{}}]", "id", "x", "name", "no-such-plugin", "config");
    build_fails(plugins, "'no-such-plugin' is not available");

    plugins = json_array();
    json_array_append_new(plugins, rl("a", ROUTE, NULL, NULL, true));
    json_array_append_new(plugins, rl("b", ROUTE, NULL, NULL, true));
    build_fails(plugins, "same scope");

    build_fails(json_object(), "array");
}

/* An instance for stream protocols only never runs on HTTP requests. */
static void test_stream_only_skipped(void **state)
{
    (void)state;
    json_t *p = rl("tcp-only", NULL, NULL, NULL, true);
    json_object_set_new(p, "protocols", json_pack("[s,s]", "tcp", "tls"));
    json_t *plugins = json_array();
    json_array_append_new(plugins, p);
    tg_plugin_chain_t *c = build(plugins);
    assert_null(lookup(c, "rate-limiting", NULL, NULL, NULL));
    tg_plugin_chain_free(c);
}

static void test_registry(void **state)
{
    (void)state;
    for (size_t i = 0; tg_plugins[i]; i++) {
        const tg_plugin_handler_t *h = tg_plugin_handler(tg_plugins[i]->name);
        assert_non_null(h);
        assert_string_equal(h->name, tg_plugins[i]->name);
        assert_non_null(h->configure);
        assert_non_null(h->access);
    }
    assert_null(tg_plugin_handler("nope"));
    assert_null(tg_plugin_handler(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eight_levels),
        cmocka_unit_test(test_each_level_alone),
        cmocka_unit_test(test_partial_requests),
        cmocka_unit_test(test_disabled_gives_way),
        cmocka_unit_test(test_no_consumer_plugin),
        cmocka_unit_test(test_priority_order),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_stream_only_skipped),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
