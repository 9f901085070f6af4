/*
 * test_declarative.c — Kong declarative configuration (_format_version 3.0)
 * loading: the four files of seed 004 load exactly, ids are stable across
 * loads, and every rejection names the entity, field and line at fault.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crypto.h"
#include "declarative.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- seed 004 */

#define SEED_HEAD                                                                                  \
    "_format_version: \"3.0\"\n"                                                                   \
    "_konnect:\n"                                                                                  \
    "  control_plane_name: kong-workshop\n"                                                        \
    "_info:\n"                                                                                     \
    "  select_tags:\n"                                                                             \
    "  - httpbin-service-route\n"                                                                  \
    "services:\n"                                                                                  \
    "- name: httpbin-service\n"                                                                    \
    "  host: httpbin.kong.svc.cluster.local\n"                                                     \
    "  port: 8000\n"                                                                               \
    "  routes:\n"                                                                                  \
    "  - name: httpbin-route\n"                                                                    \
    "    paths:\n"                                                                                 \
    "    - /key-auth-route\n"                                                                      \
    "  plugins:\n"                                                                                 \
    "  - name: key-auth\n"                                                                         \
    "    instance_name: key-auth1\n"

static const char seed1[] = SEED_HEAD;

static const char seed2[] = SEED_HEAD "consumers:\n"
                                      "- keyauth_credentials:\n"
                                      "  - key: \"123456\"\n"
                                      "  username: consumer1\n";

static const char seed3[] = SEED_HEAD "consumers:\n"
                                      "- keyauth_credentials:\n"
                                      "  - key: \"123456\"\n"
                                      "  username: consumer1\n"
                                      "- keyauth_credentials:\n"
                                      "  - key: \"987654\"\n"
                                      "  username: consumer2\n";

static const char seed4[] = SEED_HEAD "consumers:\n"
                                      "- keyauth_credentials:\n"
                                      "  - key: \"123456\"\n"
                                      "  username: consumer1\n"
                                      "  plugins:\n"
                                      "  - name: rate-limiting\n"
                                      "    instance_name: rate-limiting1\n"
                                      "    config:\n"
                                      "      minute: 5\n"
                                      "- keyauth_credentials:\n"
                                      "  - key: \"987654\"\n"
                                      "  username: consumer2\n"
                                      "  plugins:\n"
                                      "  - name: rate-limiting\n"
                                      "    instance_name: rate-limiting2\n"
                                      "    config:\n"
                                      "      minute: 8\n";

/* ---------------------------------------------------------------- helpers */

static void load_ok(const char *text, tg_declarative_t *d)
{
    json_t *errs = (json_t *)1;
    int rc = tg_declarative_parse(text, strlen(text), "kong.yaml", d, &errs);
    if (rc != 0) {
        char *s = json_dumps(errs, JSON_INDENT(1));
        fail_msg("rc %d, errors %s\ninput:\n%s", rc, s, text);
    }
    assert_null(errs);
}

static json_t *load_err(const char *text, int want_rc)
{
    tg_declarative_t d;
    json_t *errs = NULL;
    int rc = tg_declarative_parse(text, strlen(text), "kong.yaml", &d, &errs);
    if (rc != want_rc) {
        char *s = json_dumps(errs, JSON_INDENT(1));
        fail_msg("rc %d, want %d, errors %s", rc, want_rc, s ? s : "(none)");
    }
    assert_non_null(errs);
    assert_true(json_array_size(errs) > 0);
    assert_null(d.entities);
    return errs;
}

static json_t *coll(const tg_declarative_t *d, const char *name)
{
    json_t *a = json_object_get(d->entities, name);
    assert_true(json_is_array(a));
    return a;
}

static const char *str_at(const json_t *obj, const char *a, const char *b)
{
    const json_t *v = json_object_get(obj, a);
    if (b) v = json_object_get(v, b);
    return json_string_value(v);
}

/* The one error whose field is `field` and whose message contains `part`; checks its line. */
static const json_t *expect_error(const json_t *errs, const char *field, const char *part,
                                  long line)
{
    size_t i;
    json_t *e;
    json_array_foreach(errs, i, e) {
        const char *f = json_string_value(json_object_get(e, "field"));
        const char *m = json_string_value(json_object_get(e, "message"));
        if ((field ? f && strcmp(f, field) == 0 : !f) && m && strstr(m, part)) {
            if (line && json_integer_value(json_object_get(e, "line")) != line)
                fail_msg("'%s' at line %lld, want %ld", m,
                         (long long)json_integer_value(json_object_get(e, "line")), line);
            return e;
        }
    }
    char *s = json_dumps(errs, JSON_INDENT(1));
    fail_msg("no error on %s containing '%s' in %s", field ? field : "(none)", part, s);
    return NULL;
}

#define HEAD "_format_version: \"3.0\"\n"

/* ---------------------------------------------------------------- seed 004 files */

static void test_seed1_service_route_plugin(void **state)
{
    tg_declarative_t d;
    load_ok(seed1, &d);
    assert_string_equal(d.format_version, "3.0");
    assert_int_equal(json_array_size(coll(&d, "services")), 1);
    assert_int_equal(json_array_size(coll(&d, "routes")), 1);
    assert_int_equal(json_array_size(coll(&d, "plugins")), 1);
    assert_int_equal(json_array_size(coll(&d, "consumers")), 0);
    assert_int_equal(json_array_size(coll(&d, "keyauth_credentials")), 0);
    json_t *svc = json_array_get(coll(&d, "services"), 0);
    json_t *route = json_array_get(coll(&d, "routes"), 0);
    json_t *plugin = json_array_get(coll(&d, "plugins"), 0);
    assert_string_equal(str_at(svc, "host", NULL), "httpbin.kong.svc.cluster.local");
    assert_int_equal(json_integer_value(json_object_get(svc, "port")), 8000);
    assert_string_equal(str_at(svc, "protocol", NULL), "http");
    assert_int_equal(json_integer_value(json_object_get(svc, "retries")), 5);
    assert_string_equal(str_at(route, "service", "id"), str_at(svc, "id", NULL));
    assert_string_equal(json_string_value(json_array_get(json_object_get(route, "paths"), 0)),
                        "/key-auth-route");
    assert_true(json_is_true(json_object_get(route, "strip_path")));
    assert_string_equal(str_at(plugin, "instance_name", NULL), "key-auth1");
    assert_string_equal(str_at(plugin, "service", "id"), str_at(svc, "id", NULL));
    assert_true(json_is_null(json_object_get(plugin, "route")));
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(plugin, "config"), "key_names"), 0)),
                        "apikey");
    /* select_tags are added to every entity */
    assert_string_equal(json_string_value(json_array_get(json_object_get(route, "tags"), 0)),
                        "httpbin-service-route");
    assert_int_equal(json_array_size(json_object_get(plugin, "tags")), 1);
    assert_non_null(json_object_get(d.info, "select_tags"));
    tg_declarative_free(&d);
}

static void test_seed1_konnect_is_a_notice(void **state)
{
    tg_declarative_t d;
    load_ok(seed1, &d);
    assert_int_equal(json_array_size(d.notices), 1);
    json_t *n = json_array_get(d.notices, 0);
    assert_string_equal(str_at(n, "level", NULL), "notice");
    assert_string_equal(str_at(n, "field", NULL), "_konnect");
    assert_int_equal(json_integer_value(json_object_get(n, "line")), 2);
    tg_declarative_free(&d);
}

static void test_seed2_consumer_with_key(void **state)
{
    tg_declarative_t d;
    load_ok(seed2, &d);
    assert_int_equal(json_array_size(coll(&d, "consumers")), 1);
    assert_int_equal(json_array_size(coll(&d, "keyauth_credentials")), 1);
    json_t *c = json_array_get(coll(&d, "consumers"), 0);
    json_t *k = json_array_get(coll(&d, "keyauth_credentials"), 0);
    assert_string_equal(str_at(c, "username", NULL), "consumer1");
    /* "123456" quoted stays a string */
    assert_true(json_is_string(json_object_get(k, "key")));
    assert_string_equal(str_at(k, "key", NULL), "123456");
    assert_string_equal(str_at(k, "consumer", "id"), str_at(c, "id", NULL));
    tg_declarative_free(&d);
}

static void test_seed3_two_consumers(void **state)
{
    tg_declarative_t d;
    load_ok(seed3, &d);
    json_t *cs = coll(&d, "consumers"), *ks = coll(&d, "keyauth_credentials");
    assert_int_equal(json_array_size(cs), 2);
    assert_int_equal(json_array_size(ks), 2);
    assert_string_equal(str_at(json_array_get(cs, 1), "username", NULL), "consumer2");
    assert_string_equal(str_at(json_array_get(ks, 1), "key", NULL), "987654");
    assert_string_equal(str_at(json_array_get(ks, 1), "consumer", "id"),
                        str_at(json_array_get(cs, 1), "id", NULL));
    assert_string_not_equal(str_at(json_array_get(ks, 0), "id", NULL),
                            str_at(json_array_get(ks, 1), "id", NULL));
    tg_declarative_free(&d);
}

static void check_rate_limiting(const json_t *plugin, const json_t *consumer, json_int_t minute,
                                const char *instance)
{
    const json_t *cfg = json_object_get(plugin, "config");
    assert_string_equal(str_at(plugin, "name", NULL), "rate-limiting");
    assert_string_equal(str_at(plugin, "instance_name", NULL), instance);
    assert_string_equal(str_at(plugin, "consumer", "id"), str_at(consumer, "id", NULL));
    assert_true(json_is_null(json_object_get(plugin, "service")));
    assert_true(json_is_null(json_object_get(plugin, "route")));
    assert_int_equal(json_integer_value(json_object_get(cfg, "minute")), minute);
    assert_true(json_is_null(json_object_get(cfg, "second")));
    assert_string_equal(str_at(cfg, "policy", NULL), "local");
    assert_string_equal(str_at(cfg, "limit_by", NULL), "consumer");
    assert_true(json_is_true(json_object_get(cfg, "fault_tolerant")));
    assert_int_equal(json_integer_value(json_object_get(cfg, "error_code")), 429);
    assert_true(json_is_true(json_object_get(plugin, "enabled")));
}

static void test_seed4_consumer_rate_limits(void **state)
{
    tg_declarative_t d;
    load_ok(seed4, &d);
    json_t *svcs = coll(&d, "services"), *routes = coll(&d, "routes"),
           *plugins = coll(&d, "plugins");
    json_t *cs = coll(&d, "consumers"), *ks = coll(&d, "keyauth_credentials");
    assert_int_equal(json_array_size(svcs), 1);
    assert_int_equal(json_array_size(routes), 1);
    assert_int_equal(json_array_size(plugins), 3);
    assert_int_equal(json_array_size(cs), 2);
    assert_int_equal(json_array_size(ks), 2);
    const char *svc_id = str_at(json_array_get(svcs, 0), "id", NULL);
    assert_string_equal(str_at(json_array_get(routes, 0), "service", "id"), svc_id);
    json_t *ka = json_array_get(plugins, 0);
    assert_string_equal(str_at(ka, "name", NULL), "key-auth");
    assert_string_equal(str_at(ka, "instance_name", NULL), "key-auth1");
    assert_string_equal(str_at(ka, "service", "id"), svc_id);
    assert_true(json_is_null(json_object_get(ka, "consumer")));
    check_rate_limiting(json_array_get(plugins, 1), json_array_get(cs, 0), 5, "rate-limiting1");
    check_rate_limiting(json_array_get(plugins, 2), json_array_get(cs, 1), 8, "rate-limiting2");
    assert_string_equal(str_at(json_array_get(ks, 0), "key", NULL), "123456");
    assert_string_equal(str_at(json_array_get(ks, 1), "key", NULL), "987654");
    tg_declarative_free(&d);
}

/* ---------------------------------------------------------------- ids */

static void test_ids_stable_across_loads(void **state)
{
    tg_declarative_t a, b;
    load_ok(seed4, &a);
    load_ok(seed4, &b);
    assert_true(json_equal(a.entities, b.entities));
    size_t i;
    json_t *p;
    json_array_foreach(coll(&a, "plugins"), i, p) {
        const char *id = str_at(p, "id", NULL);
        assert_true(tg_uuid_valid(tg_str_from(id)));
        assert_int_equal(id[14], '4');
    }
    tg_declarative_free(&a);
    tg_declarative_free(&b);
}

/* Editing the file elsewhere must not renumber the entities that did not change. */
static void test_ids_survive_unrelated_edits(void **state)
{
    tg_declarative_t a, b;
    load_ok(seed2, &a);
    load_ok(seed4, &b);
    const char *names[] = {"services", "routes", "consumers", "keyauth_credentials"};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(str_at(json_array_get(coll(&a, names[i]), 0), "id", NULL),
                            str_at(json_array_get(coll(&b, names[i]), 0), "id", NULL));
    assert_string_equal(str_at(json_array_get(coll(&a, "plugins"), 0), "id", NULL),
                        str_at(json_array_get(coll(&b, "plugins"), 0), "id", NULL));
    tg_declarative_free(&a);
    tg_declarative_free(&b);
}

static void test_ids_unnamed_and_explicit(void **state)
{
    static const char one[] = HEAD "services:\n"
                                   "- host: a.example\n"
                                   "  routes:\n"
                                   "  - paths: [/a]\n"
                                   "  - paths: [/b]\n";
    static const char two[] = HEAD "services:\n"
                                   "- name: newcomer\n"
                                   "  host: n.example\n"
                                   "- host: a.example\n"
                                   "  routes:\n"
                                   "  - paths: [/a]\n"
                                   "  - paths: [/b]\n"
                                   "- id: 5b0c4d6e-1f2a-4b3c-8d4e-5f6a7b8c9d0e\n"
                                   "  host: x.example\n";
    tg_declarative_t a, b;
    load_ok(one, &a);
    load_ok(two, &b);
    json_t *ra = coll(&a, "routes"), *rb = coll(&b, "routes");
    assert_string_equal(str_at(json_array_get(ra, 1), "id", NULL),
                        str_at(json_array_get(rb, 1), "id", NULL));
    assert_string_not_equal(str_at(json_array_get(rb, 0), "id", NULL),
                            str_at(json_array_get(rb, 1), "id", NULL));
    assert_string_equal(str_at(json_array_get(coll(&b, "services"), 2), "id", NULL),
                        "5b0c4d6e-1f2a-4b3c-8d4e-5f6a7b8c9d0e");
    tg_declarative_free(&a);
    tg_declarative_free(&b);
}

/* ---------------------------------------------------------------- references and nesting */

static void test_top_level_references(void **state)
{
    static const char text[] = HEAD "services:\n"
                                    "- name: svc\n"
                                    "  id: 0b1c2d3e-0000-4000-8000-000000000001\n"
                                    "  host: a.example\n"
                                    "routes:\n"
                                    "- name: by-name\n"
                                    "  service: svc\n"
                                    "  paths: [/n]\n"
                                    "- name: by-record\n"
                                    "  service: {name: svc}\n"
                                    "  paths: [/r]\n"
                                    "- name: by-id\n"
                                    "  service: {id: 0b1c2d3e-0000-4000-8000-000000000001}\n"
                                    "  paths: [/i]\n"
                                    "  plugins:\n"
                                    "  - name: rate-limiting\n"
                                    "    config: {second: 3}\n"
                                    "consumers:\n"
                                    "- username: bob\n"
                                    "keyauth_credentials:\n"
                                    "- key: top-level-key\n"
                                    "  consumer: bob\n"
                                    "plugins:\n"
                                    "- name: rate-limiting\n"
                                    "  route: by-name\n"
                                    "  consumer: bob\n"
                                    "  config: {hour: 100}\n";
    tg_declarative_t d;
    load_ok(text, &d);
    const char *sid = "0b1c2d3e-0000-4000-8000-000000000001";
    size_t i;
    json_t *r;
    json_array_foreach(coll(&d, "routes"), i, r)
        assert_string_equal(str_at(r, "service", "id"), sid);
    json_t *cons = json_array_get(coll(&d, "consumers"), 0);
    json_t *nested = json_array_get(coll(&d, "plugins"), 0);
    json_t *top = json_array_get(coll(&d, "plugins"), 1);
    assert_string_equal(str_at(nested, "route", "id"),
                        str_at(json_array_get(coll(&d, "routes"), 2), "id", NULL));
    assert_true(json_is_null(json_object_get(nested, "service")));
    assert_string_equal(str_at(top, "route", "id"),
                        str_at(json_array_get(coll(&d, "routes"), 0), "id", NULL));
    assert_string_equal(str_at(top, "consumer", "id"), str_at(cons, "id", NULL));
    assert_string_equal(
        str_at(json_array_get(coll(&d, "keyauth_credentials"), 0), "consumer", "id"),
        str_at(cons, "id", NULL));
    tg_declarative_free(&d);
}

static void test_dangling_references(void **state)
{
    static const char text[] = HEAD "routes:\n"          /* 2 */
                                    "- name: r1\n"       /* 3 */
                                    "  paths: [/]\n"     /* 4 */
                                    "  service: ghost\n" /* 5 */
                                    "- name: r2\n"       /* 6 */
                                    "  paths: [/x]\n"    /* 7 */
                                    "  service: {id: 0b1c2d3e-0000-4000-8000-00000000dead}\n"
                                    "keyauth_credentials:\n" /* 9 */
                                    "- key: k\n"             /* 10 */
                                    "  consumer: alice\n";   /* 11 */
    json_t *errs = load_err(text, -TG_ECONFIG);
    const json_t *e = expect_error(
        errs, "service", "invalid reference 'service: ghost' (no such entry in 'services')", 5);
    assert_string_equal(str_at(e, "entity", NULL), "routes");
    assert_string_equal(str_at(e, "entity_name", NULL), "r1");
    assert_string_equal(str_at(e, "entity_path", NULL), "routes[0]");
    expect_error(errs, "service", "'service: {\"id\":\"0b1c2d3e-0000-4000-8000-00000000dead\"}'",
                 8);
    expect_error(errs, "consumer",
                 "invalid reference 'consumer: alice' (no such entry in 'consumers')", 11);
    assert_int_equal(json_array_size(errs), 3);
    json_decref(errs);
}

static void test_nested_child_must_not_name_parent(void **state)
{
    static const char text[] = HEAD "services:\n"
                                    "- name: s\n"
                                    "  host: h.example\n"
                                    "  routes:\n"
                                    "  - name: r\n"
                                    "    paths: [/]\n"
                                    "    service: s\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    const json_t *e = expect_error(errs, "service", "value must be null", 8);
    assert_string_equal(str_at(e, "entity_path", NULL), "services[0].routes[0]");
    json_decref(errs);
}

/* ---------------------------------------------------------------- validation errors */

static void test_unknown_entity_field(void **state)
{
    static const char text[] = HEAD "services:\n"
                                    "- name: s\n"
                                    "  host: h.example\n"
                                    "  hots: typo\n"
                                    "consumers:\n"
                                    "- username: u\n"
                                    "  acls: []\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    expect_error(errs, "hots", "unknown field", 5);
    expect_error(errs, "acls", "unknown field", 8);
    json_decref(errs);
}

static void test_plugin_config_error_position(void **state)
{
    static const char text[] = HEAD "consumers:\n"              /* 2 */
                                    "- username: c\n"           /* 3 */
                                    "  plugins:\n"              /* 4 */
                                    "  - name: rate-limiting\n" /* 5 */
                                    "    config:\n"             /* 6 */
                                    "      minute: 0\n"         /* 7 */
                                    "      policy: nope\n";     /* 8 */
    json_t *errs = load_err(text, -TG_ECONFIG);
    const json_t *e = expect_error(errs, "config.minute", "value must be greater than 0", 7);
    assert_int_equal(json_integer_value(json_object_get(e, "column")), 7);
    assert_string_equal(str_at(e, "entity_path", NULL), "consumers[0].plugins[0]");
    assert_string_equal(str_at(e, "entity_name", NULL), "rate-limiting");
    assert_int_equal(json_integer_value(json_object_get(e, "entity_index")), 0);
    expect_error(errs, "config.policy", "expected one of: local, redis", 8);
    json_decref(errs);
}

static void test_key_auth_on_consumer_rejected(void **state)
{
    static const char text[] = HEAD "consumers:\n"
                                    "- username: c\n"
                                    "  plugins:\n"
                                    "  - name: key-auth\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    expect_error(errs, "consumer", "value must be null", 5);
    json_decref(errs);
}

static void test_route_array_element_error(void **state)
{
    static const char text[] = HEAD "services:\n"
                                    "- host: h.example\n"
                                    "  routes:\n"
                                    "  - paths:\n"
                                    "    - /ok\n"
                                    "    - bad\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    expect_error(errs, "paths[1]", "should start with", 7);
    json_decref(errs);
}

static void test_duplicates_name_both(void **state)
{
    static const char text[] = HEAD "services:\n"               /* 2 */
                                    "- name: s\n"               /* 3 */
                                    "  host: a.example\n"       /* 4 */
                                    "- name: s\n"               /* 5 */
                                    "  host: b.example\n"       /* 6 */
                                    "consumers:\n"              /* 7 */
                                    "- username: u\n"           /* 8 */
                                    "  keyauth_credentials:\n"  /* 9 */
                                    "  - key: secret-one\n"     /* 10 */
                                    "  plugins:\n"              /* 11 */
                                    "  - name: rate-limiting\n" /* 12 */
                                    "    instance_name: rl\n"   /* 13 */
                                    "    config: {minute: 1}\n" /* 14 */
                                    "- username: u\n"           /* 15 */
                                    "  keyauth_credentials:\n"  /* 16 */
                                    "  - key: secret-one\n"     /* 17 */
                                    "plugins:\n"                /* 18 */
                                    "- name: rate-limiting\n"   /* 19 */
                                    "  instance_name: rl\n"     /* 20 */
                                    "  config: {minute: 1}\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    const json_t *e = expect_error(
        errs, "name",
        "uniqueness violation: 'services' entity with name set to 's' already declared", 5);
    assert_string_equal(str_at(e, "first_path", NULL), "services[0]");
    assert_int_equal(json_integer_value(json_object_get(e, "first_line")), 3);
    e = expect_error(errs, "username", "with username set to 'u' already declared", 15);
    assert_string_equal(str_at(e, "first_path", NULL), "consumers[0]");
    e = expect_error(errs, "key", "with the same key already declared", 17);
    assert_null(strstr(str_at(e, "message", NULL), "secret-one"));
    assert_string_equal(str_at(e, "first_path", NULL), "consumers[0].keyauth_credentials[0]");
    expect_error(errs, "instance_name", "with instance_name set to 'rl' already declared", 20);
    json_decref(errs);
}

static void test_plugin_unique_per_scope(void **state)
{
    static const char text[] = HEAD "services:\n"
                                    "- name: s\n"
                                    "  host: a.example\n"
                                    "  plugins:\n"
                                    "  - name: rate-limiting\n"
                                    "    config: {minute: 1}\n"
                                    "plugins:\n"
                                    "- name: rate-limiting\n"
                                    "  service: s\n"
                                    "  config: {minute: 2}\n"
                                    "- name: rate-limiting\n"
                                    "  config: {minute: 3}\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    const json_t *e =
        expect_error(errs, "name", "on the same route, service and consumer already declared", 9);
    assert_string_equal(str_at(e, "first_path", NULL), "services[0].plugins[0]");
    assert_int_equal(json_array_size(errs), 1); /* the global one is a different scope */
    json_decref(errs);
}

static void test_credential_rules(void **state)
{
    static const char text[] = HEAD "consumers:\n"
                                    "- username: c\n"
                                    "  keyauth_credentials:\n"
                                    "  - tags: [generated]\n"
                                    "  - key: 123456\n"
                                    "  - key: k\n"
                                    "    ttl: 60\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    expect_error(errs, "key", "expected a string", 6); /* unquoted: an integer */
    expect_error(errs, "ttl", "not supported in a declarative configuration", 8);
    assert_int_equal(json_array_size(errs), 2);
    json_decref(errs);

    static const char gen[] = HEAD "consumers:\n- username: c\n  keyauth_credentials:\n  - {}\n";
    tg_declarative_t d;
    load_ok(gen, &d);
    assert_int_equal(
        strlen(str_at(json_array_get(coll(&d, "keyauth_credentials"), 0), "key", NULL)), 32);
    tg_declarative_free(&d);
}

/* ---------------------------------------------------------------- top level */

static void test_format_version(void **state)
{
    json_t *errs = load_err("services: []\n", -TG_ECONFIG);
    expect_error(errs, "_format_version", "required field missing", 0);
    json_decref(errs);
    errs = load_err("_format_version: \"2.1\"\n", -TG_ECONFIG);
    expect_error(errs, "_format_version", "expected one of: 3.0", 1);
    json_decref(errs);
    errs = load_err("_comment: x\n_format_version: 3.0\n", -TG_ECONFIG);
    expect_error(errs, "_format_version", "expected a string", 2);
    json_decref(errs);
}

static void test_unknown_top_level_keys(void **state)
{
    static const char text[] = HEAD "_transform: true\n"
                                    "_comment: fine\n"
                                    "upstreams: []\n"
                                    "servics: []\n"
                                    "_info:\n"
                                    "  select_tags: [a]\n"
                                    "  colour: blue\n";
    json_t *errs = load_err(text, -TG_ECONFIG);
    expect_error(errs, "upstreams", "entity 'upstreams' is not supported", 4);
    expect_error(errs, "servics", "unknown field", 5);
    expect_error(errs, "_info.colour", "unknown field", 8);
    assert_int_equal(json_array_size(errs), 3);
    json_decref(errs);
}

static void test_info_defaults_and_tags(void **state)
{
    static const char text[] = HEAD "_info:\n"
                                    "  select_tags: [team-a]\n"
                                    "  defaults:\n"
                                    "    service: {port: 8080, retries: 2}\n"
                                    "services:\n"
                                    "- name: s\n"
                                    "  host: h.example\n"
                                    "  retries: 9\n"
                                    "  tags: [team-a, extra]\n"
                                    "  _comment: kept out of the entity\n";
    tg_declarative_t d;
    load_ok(text, &d);
    json_t *s = json_array_get(coll(&d, "services"), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "port")), 8080);
    assert_int_equal(json_integer_value(json_object_get(s, "retries")), 9);
    assert_int_equal(json_array_size(json_object_get(s, "tags")), 2);
    assert_null(json_object_get(s, "_comment"));
    tg_declarative_free(&d);

    json_t *errs = load_err(HEAD "_info:\n"
                                 "  defaults:\n"
                                 "    service: {name: x}\n"
                                 "    upstream: {}\n"
                                 "  select_tags: [ok, \"a,b\"]\n"
                                 "services:\n"
                                 "- host: h.example\n",
                            -TG_ECONFIG);
    expect_error(errs, "_info.defaults.service", "cannot have a default", 4);
    expect_error(errs, "_info.defaults.upstream", "unknown field", 5);
    expect_error(errs, "_info.select_tags[1]", "invalid tag 'a,b'", 6);
    assert_int_equal(json_array_size(errs), 3); /* not repeated on the service */
    json_decref(errs);
}

/* ---------------------------------------------------------------- YAML and JSON */

static void test_scalars(void **state)
{
    static const char text[] = HEAD "services:\n"
                                    "- host: h.example\n"
                                    "  port: 0x50\n"
                                    "  path: ~\n"
                                    "  tls_verify: null\n"
                                    "  enabled: false\n"
                                    "  tags: [yes, \"1\", on]\n";
    tg_declarative_t d;
    load_ok(text, &d);
    json_t *s = json_array_get(coll(&d, "services"), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "port")), 80);
    assert_true(json_is_null(json_object_get(s, "path")));
    assert_true(json_is_false(json_object_get(s, "enabled")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(s, "tags"), 0)), "yes");
    assert_string_equal(json_string_value(json_array_get(json_object_get(s, "tags"), 2)), "on");
    tg_declarative_free(&d);
}

static void test_json_input_same_ids(void **state)
{
    static const char json[] =
        "{\n"
        "  \"_format_version\": \"3.0\",\n"
        "  \"services\": [{\"name\": \"httpbin-service\", \"host\": "
        "\"httpbin.kong.svc.cluster.local\",\n"
        "    \"port\": 8000, \"routes\": [{\"name\": \"httpbin-route\", \"paths\": "
        "[\"\\/key-auth-route\"]}],\n"
        "    \"plugins\": [{\"name\": \"key-auth\", \"instance_name\": \"key-auth1\"}]}],\n"
        "  \"consumers\": [{\"username\": \"consumer1\", \"keyauth_credentials\": [{\"key\": "
        "\"123456\"}]}]\n"
        "}\n";
    tg_declarative_t y, j;
    load_ok(json, &j);
    load_ok(seed2, &y);
    const char *names[] = {"services", "routes", "plugins", "consumers", "keyauth_credentials"};
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(str_at(json_array_get(coll(&j, names[i]), 0), "id", NULL),
                            str_at(json_array_get(coll(&y, names[i]), 0), "id", NULL));
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_array_get(coll(&j, "routes"), 0), "paths"), 0)),
                        "/key-auth-route");
    tg_declarative_free(&y);
    tg_declarative_free(&j);

    json_t *errs = load_err(
        "{\"_format_version\": \"3.0\",\n \"services\": [\n  {\"host\": \"h\", \"port\": -1}]}",
        -TG_ECONFIG);
    expect_error(errs, "port", "value should be between 0 and 65535", 3);
    json_decref(errs);
}

static void test_yaml_syntax_errors(void **state)
{
    json_t *errs = load_err(HEAD "services:\n- name: [unclosed\n", -TG_EPARSE);
    const json_t *e = expect_error(errs, NULL, "YAML syntax error", 0);
    assert_true(json_integer_value(json_object_get(e, "line")) >= 3);
    json_decref(errs);
    errs = load_err(HEAD "services: []\nservices: []\n", -TG_EPARSE);
    expect_error(errs, NULL, "duplicate key 'services'", 3);
    json_decref(errs);
    errs = load_err(HEAD "---\n" HEAD, -TG_EPARSE);
    expect_error(errs, NULL, "expected a single YAML document", 2);
    json_decref(errs);
    errs = load_err("", -TG_ECONFIG);
    expect_error(errs, NULL, "expected a declarative configuration", 0);
    json_decref(errs);
    errs = load_err("- a\n- b\n", -TG_ECONFIG);
    expect_error(errs, NULL, "expected an object", 1);
    json_decref(errs);
}

static void test_aliases_rejected(void **state)
{
    static const char laughs[] = HEAD "a: &a [x, x, x, x, x, x, x, x, x]\n"
                                      "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n";
    json_t *errs = load_err(laughs, -TG_EPARSE);
    expect_error(errs, NULL, "YAML aliases (*a) are not supported", 3);
    json_decref(errs);
}

static void test_nesting_and_size_bounds(void **state)
{
    char deep[512];
    int off = snprintf(deep, sizeof(deep), HEAD "x: ");
    for (int i = 0; i < 100; i++)
        deep[off++] = '[';
    for (int i = 0; i < 100; i++)
        deep[off++] = ']';
    deep[off] = '\0';
    json_t *errs = load_err(deep, -TG_ETOOBIG);
    expect_error(errs, NULL, "nesting deeper than 64 levels", 2);
    json_decref(errs);

    /* The length is checked before a byte is read. */
    tg_declarative_t d;
    errs = NULL;
    assert_int_equal(tg_declarative_parse("x", TG_DECLARATIVE_MAX_BYTES + 1, NULL, &d, &errs),
                     -TG_ETOOBIG);
    expect_error(errs, NULL, "larger than", 0);
    json_decref(errs);
}

/* ---------------------------------------------------------------- reporting */

static void test_errors_sorted_and_capped(void **state)
{
    size_t cap = 64 + 150 * 40, off = 0;
    char *text = malloc(cap);
    off += (size_t)snprintf(text + off, cap - off, HEAD "services:\n");
    for (int i = 149; i >= 0; i--)
        off += (size_t)snprintf(text + off, cap - off, "- name: s%d\n  host: h\n  port: x\n", i);
    json_t *errs = load_err(text, -TG_ECONFIG);
    assert_int_equal(json_array_size(errs), TG_DECLARATIVE_MAX_ERRORS + 1);
    json_int_t prev = 0;
    for (size_t i = 0; i < TG_DECLARATIVE_MAX_ERRORS; i++) {
        json_int_t line = json_integer_value(json_object_get(json_array_get(errs, i), "line"));
        assert_true(line > prev);
        prev = line;
    }
    expect_error(errs, NULL, "50 more errors not shown", 0);
    json_decref(errs);
    free(text);
}

static void test_error_rendering(void **state)
{
    json_t *errs =
        load_err(HEAD "services:\n- name: s\n  host: h\n  port: x\n  hots: 1\n", -TG_ECONFIG);
    char *line = tg_declarative_error_format(json_array_get(errs, 0));
    assert_string_equal(line, "kong.yaml:5:3: services[0] (s): port: expected an integer");
    free(line);
    char *text = tg_declarative_error_text(errs);
    assert_string_equal(text, "kong.yaml:5:3: services[0] (s): port: expected an integer "
                              "(and 1 more error)");
    free(text);
    json_decref(errs);
}

static void test_load_file(void **state)
{
    char path[] = "/tmp/tg_declXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, seed4, strlen(seed4)), (ssize_t)strlen(seed4));
    close(fd);
    tg_declarative_t d;
    json_t *errs = NULL;
    assert_int_equal(tg_declarative_load_file(path, &d, &errs), 0);
    assert_int_equal(json_array_size(coll(&d, "plugins")), 3);
    assert_string_equal(str_at(json_array_get(d.notices, 0), "file", NULL), path);
    tg_declarative_free(&d);
    tg_declarative_free(&d); /* idempotent */
    unlink(path);

    assert_int_equal(tg_declarative_load_file(path, &d, &errs), -TG_EIO);
    expect_error(errs, NULL, "cannot read the file: No such file or directory", 0);
    json_decref(errs);
    assert_int_equal(tg_declarative_load_file("/tmp", &d, &errs), -TG_EIO);
    expect_error(errs, NULL, "not a regular file", 0);
    json_decref(errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed1_service_route_plugin),
        cmocka_unit_test(test_seed1_konnect_is_a_notice),
        cmocka_unit_test(test_seed2_consumer_with_key),
        cmocka_unit_test(test_seed3_two_consumers),
        cmocka_unit_test(test_seed4_consumer_rate_limits),
        cmocka_unit_test(test_ids_stable_across_loads),
        cmocka_unit_test(test_ids_survive_unrelated_edits),
        cmocka_unit_test(test_ids_unnamed_and_explicit),
        cmocka_unit_test(test_top_level_references),
        cmocka_unit_test(test_dangling_references),
        cmocka_unit_test(test_nested_child_must_not_name_parent),
        cmocka_unit_test(test_unknown_entity_field),
        cmocka_unit_test(test_plugin_config_error_position),
        cmocka_unit_test(test_key_auth_on_consumer_rejected),
        cmocka_unit_test(test_route_array_element_error),
        cmocka_unit_test(test_duplicates_name_both),
        cmocka_unit_test(test_plugin_unique_per_scope),
        cmocka_unit_test(test_credential_rules),
        cmocka_unit_test(test_format_version),
        cmocka_unit_test(test_unknown_top_level_keys),
        cmocka_unit_test(test_info_defaults_and_tags),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_json_input_same_ids),
        cmocka_unit_test(test_yaml_syntax_errors),
        cmocka_unit_test(test_aliases_rejected),
        cmocka_unit_test(test_nesting_and_size_bounds),
        cmocka_unit_test(test_errors_sorted_and_capped),
        cmocka_unit_test(test_error_rendering),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
