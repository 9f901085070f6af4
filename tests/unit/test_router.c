/*
 * test_router.c — the data plane's router: matching rules, Kong's priority order,
 * path normalisation and the upstream path (strip_path, path_handling).
 *
 * Expected results come from Kong's documentation (gateway/routing/traditional.md,
 * gateway/entities/route.md) and the behaviour its router unit tests pin down
 * (spec/01-unit/08-router_spec.lua, spec/fixtures/router_path_handling_tests.lua).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "error.h"
#include "router.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

static tg_router_scratch_t *scratch;
static char path_buf[8192];

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j) fail_msg("bad test JSON (%s): %s", jerr.text, text);
    return j;
}

/* A router over `routes`/`services` JSON text; the JSON lives as long as the test. */
typedef struct fixture {
    json_t *routes, *services;
    tg_router_t *r;
} fixture_t;

static fixture_t fx_opts(const char *routes, const char *services, const tg_router_opts_t *opts)
{
    fixture_t f = {parse(routes), parse(services ? services : "[]"), NULL};
    char err[256] = "";
    int rc = tg_router_build(f.routes, f.services, opts, &f.r, err, sizeof(err));
    if (rc != 0) fail_msg("build failed: %d %s", rc, err);
    return f;
}

static fixture_t fx(const char *routes, const char *services)
{
    return fx_opts(routes, services, NULL);
}

static void fx_free(fixture_t *f)
{
    tg_router_free(f->r);
    json_decref(f->routes);
    json_decref(f->services);
}

typedef struct rq {
    const char *method, *host, *path;
    const char *headers; /* "Name: value\n..." */
    bool https;
    const char *sni;
} rq_t;

static char hdr_text[1024];
static tg_http_header_t hdrs[16];

static size_t split_headers(const char *text)
{
    size_t n = 0;
    if (!text) return 0;
    snprintf(hdr_text, sizeof(hdr_text), "%s", text);
    for (char *line = strtok(hdr_text, "\n"); line && n < 16; line = strtok(NULL, "\n")) {
        char *colon = strchr(line, ':');
        assert_non_null(colon);
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        hdrs[n].name = (tg_str_t){line, (size_t)(colon - line)};
        hdrs[n].value = tg_str_from(v);
        n++;
    }
    return n;
}

static int run(const tg_router_t *r, const rq_t *q, tg_route_match_t *out)
{
    tg_router_request_t req = {
        .method = tg_str_from(q->method ? q->method : "GET"),
        .host = tg_str_from(q->host ? q->host : ""),
        .path = tg_str_from(q->path ? q->path : "/"),
        .sni = tg_str_from(q->sni ? q->sni : ""),
        .https = q->https,
        .headers = hdrs,
        .nheaders = split_headers(q->headers),
        .path_buf = path_buf,
        .scratch = scratch,
    };
    return tg_router_match(r, &req, out);
}

/* The id of the route a request lands on, or "none". */
static const char *hit(const tg_router_t *r, const rq_t q)
{
    tg_route_match_t m;
    int rc = run(r, &q, &m);
    if (rc == -TG_ENOTFOUND) return "none";
    assert_int_equal(rc, 0);
    return json_string_value(json_object_get(m.route, "id"));
}

#define HIT(r, want, ...) assert_string_equal(hit((r), (rq_t){__VA_ARGS__}), (want))

static int setup(void **state)
{
    scratch = tg_router_scratch_new();
    return 0;
}

static int teardown(void **state)
{
    tg_router_scratch_free(scratch);
    return 0;
}

/* ------------------------------------------------------------------ hosts */

static void test_hosts_exact_and_ports(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"h1\",\"hosts\":[\"domain-1.org\",\"domain-2.org\"]},"
                     "{\"id\":\"h3\",\"hosts\":[\"domain-3.org:321\"]},"
                     "{\"id\":\"h4\",\"hosts\":[\"domain-4.org:321\",\"domain-4b.org\"]}"
                     "]",
                     NULL);
    HIT(f.r, "h1", .host = "domain-1.org");
    HIT(f.r, "h1", .host = "domain-2.org");
    HIT(f.r, "h1", .host = "DOMAIN-1.Org");    /* hosts are case-insensitive */
    HIT(f.r, "h1", .host = "domain-1.org:80"); /* a port the route does not name is ignored */
    HIT(f.r, "h1", .host = "domain-1.org:12345");
    HIT(f.r, "h3", .host = "domain-3.org:321"); /* the route's port must be there */
    HIT(f.r, "none", .host = "domain-3.org:123");
    HIT(f.r, "none", .host = "domain-3.org");
    HIT(f.r, "h4", .host = "domain-4b.org:9");
    HIT(f.r, "none", .host = "domain-4.org");
    HIT(f.r, "none", .host = "domain-1.org:"); /* not a port: the host is "domain-1.org:" */
    HIT(f.r, "none", .host = "sub.domain-1.org");
    HIT(f.r, "none", .host = ""); /* HTTP/1.0 without Host */
    fx_free(&f);
}

static void test_hosts_wildcards(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"left\",\"hosts\":[\"*.example.com\"]},"
                     "{\"id\":\"right\",\"hosts\":[\"example.*\"]},"
                     "{\"id\":\"port\",\"hosts\":[\"*.port.test:8000\"]}"
                     "]",
                     NULL);
    HIT(f.r, "left", .host = "a.example.com");
    HIT(f.r, "left", .host = "x.y.example.com");
    HIT(f.r, "left", .host = "A.EXAMPLE.COM:443");
    HIT(f.r, "right", .host = "example.com"); /* not *.example.com: no label before it */
    HIT(f.r, "right", .host = "example.org");
    HIT(f.r, "right", .host = "example.co.uk");
    HIT(f.r, "none", .host = "myexample.org");
    HIT(f.r, "port", .host = "a.port.test:8000");
    HIT(f.r, "none", .host = "a.port.test:8001");
    HIT(f.r, "none", .host = "a.port.test");
    fx_free(&f);
}

static void test_hosts_plain_before_wildcard(void **state)
{
    /* same weight: a route with only plain hosts is tried before one with a wildcard */
    fixture_t f = fx("["
                     "{\"id\":\"wild\",\"created_at\":1,\"hosts\":[\"*.example.com\"]},"
                     "{\"id\":\"mixed\",\"created_at\":2,\"hosts\":[\"api.example.com\",\"*.x\"]},"
                     "{\"id\":\"plain\",\"created_at\":3,\"hosts\":[\"api.example.com\"]}"
                     "]",
                     NULL);
    HIT(f.r, "plain", .host = "api.example.com");
    HIT(f.r, "wild", .host = "www.example.com");
    HIT(f.r, "mixed", .host = "a.x");
    fx_free(&f);
}

/* ------------------------------------------------------------------ paths */

static void test_paths_prefix_longest(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"root\",\"paths\":[\"/\"]},"
                     "{\"id\":\"svc\",\"paths\":[\"/service\"]},"
                     "{\"id\":\"res\",\"paths\":[\"/service/resource\"]},"
                     "{\"id\":\"two\",\"paths\":[\"/hello/world\",\"/other\"]},"
                     "{\"id\":\"pair\",\"paths\":[\"/same-len-1\",\"/same-len-2\"]}"
                     "]",
                     NULL);
    HIT(f.r, "svc", .path = "/service");
    HIT(f.r, "svc", .path = "/service/other");
    HIT(f.r, "svc", .path = "/servicefoo"); /* a prefix, not a segment match */
    HIT(f.r, "res", .path = "/service/resource");
    HIT(f.r, "res", .path = "/service/resource/x");
    HIT(f.r, "two", .path = "/hello/world/resource");
    HIT(f.r, "two", .path = "/other");
    HIT(f.r, "pair", .path = "/same-len-1");
    HIT(f.r, "pair", .path = "/same-len-2/x");
    HIT(f.r, "root", .path = "/Service"); /* paths are case-sensitive */
    HIT(f.r, "root", .path = "/");
    HIT(f.r, "root", .path = "/foobar/baz");
    fx_free(&f);
}

static void test_paths_split_by_length(void **state)
{
    /*
     * A route's paths are ranked per group: "/a" of the first route does not lift its
     * "/bbbbbbb" over the second route's longer "/a/bb".
     */
    fixture_t f = fx("["
                     "{\"id\":\"r1\",\"paths\":[\"/a\",\"/bbbbbbb\"]},"
                     "{\"id\":\"r2\",\"paths\":[\"/a/bb\"]}"
                     "]",
                     NULL);
    HIT(f.r, "r2", .path = "/a/bb/foobar");
    HIT(f.r, "r1", .path = "/a/b");
    HIT(f.r, "r1", .path = "/bbbbbbb/x");
    assert_int_equal(tg_router_size(f.r), 3);
    fx_free(&f);
}

static void test_paths_host_half_match(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"r1\",\"hosts\":[\"host1.com\"],\"paths\":[\"/v1/path\"]},"
                     "{\"id\":\"r2\",\"hosts\":[\"host2.com\"],\"paths\":[\"/\"]}"
                     "]",
                     NULL);
    HIT(f.r, "r1", .host = "host1.com", .path = "/v1/path");
    HIT(f.r, "r2", .host = "host2.com", .path = "/v1/path");
    HIT(f.r, "none", .host = "host1.com", .path = "/v2");
    fx_free(&f);
}

static void test_paths_regex_priority(void **state)
{
    /* traditional.md "Regex evaluation order" */
    fixture_t f = fx("["
                     "{\"id\":\"status\",\"paths\":[\"~/status/\\\\d+\"],\"regex_priority\":0},"
                     "{\"id\":\"vstatus\",\"paths\":[\"~/version/\\\\d+/status/\\\\d+\"],"
                     "\"regex_priority\":6},"
                     "{\"id\":\"version\",\"paths\":[\"/version\"]},"
                     "{\"id\":\"any\",\"paths\":[\"~/version/any/\"]}"
                     "]",
                     NULL);
    HIT(f.r, "vstatus", .path = "/version/1/status/2");
    HIT(f.r, "status", .path = "/status/3");
    HIT(f.r, "any", .path = "/version/any/x");
    HIT(f.r, "version", .path = "/version");
    HIT(f.r, "version", .path = "/version/x");
    HIT(f.r, "none", .path = "/status/x");
    HIT(f.r, "none", .path = "/x/status/3"); /* anchored at the start of the path */
    fx_free(&f);
}

static void test_paths_regex_vs_prefix(void **state)
{
    /* at equal weight a regex path is tried before any plain path, however long */
    fixture_t f = fx("["
                     "{\"id\":\"plain\",\"paths\":[\"/api/account\"]},"
                     "{\"id\":\"regex\",\"paths\":[\"~/api/.*\"]},"
                     "{\"id\":\"both\",\"paths\":[\"/zzzzzzzzzzzzzzzzzzzz\",\"~/z$\"]}"
                     "]",
                     NULL);
    HIT(f.r, "regex", .path = "/api/account/getAll");
    HIT(f.r, "both", .path = "/z");
    HIT(f.r, "both", .path = "/zzzzzzzzzzzzzzzzzzzz/1");
    HIT(f.r, "none", .path = "/z\n");
    fx_free(&f);

    /*
     * Kong anchors a regex by prepending "^" to its text, so only the first branch of a
     * top-level alternation is anchored; a negative regex_priority sorts below zero.
     */
    f = fx("["
           "{\"id\":\"alt\",\"paths\":[\"~/a|/b\"],\"regex_priority\":-1},"
           "{\"id\":\"zero\",\"paths\":[\"~/a/c\"]}"
           "]",
           NULL);
    HIT(f.r, "alt", .path = "/x/b");
    HIT(f.r, "none", .path = "/x/a");
    HIT(f.r, "zero", .path = "/a/c");
    HIT(f.r, "alt", .path = "/a/d");
    fx_free(&f);
}

static void test_paths_regex_captures(void **state)
{
    fixture_t f = fx("[{\"id\":\"u\",\"paths\":[\"~/version/(?<version>\\\\d+)/users/(\\\\S+)\","
                     "\"~/x(y)?z\"]}]",
                     NULL);
    tg_route_match_t m;
    assert_int_equal(run(f.r, &(rq_t){.path = "/version/1/users/john"}, &m), 0);
    assert_int_equal(m.ncaptures, 2);
    assert_true(tg_str_eq_lit(m.captures[0], "1"));
    assert_true(tg_str_eq_lit(m.captures[1], "john"));
    assert_true(tg_str_eq_lit(m.matched_path, "/version/1/users/john"));
    assert_int_equal(run(f.r, &(rq_t){.path = "/xz/rest"}, &m), 0);
    assert_true(tg_str_eq_lit(m.matched_path, "/xz"));
    assert_int_equal(m.ncaptures, 1);
    assert_null(m.captures[0].p); /* the optional group did not take part */
    fx_free(&f);
}

/* ------------------------------------------------------------------ methods, headers */

static void test_methods(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"get\",\"methods\":[\"GET\",\"HEAD\"]},"
                     "{\"id\":\"host\",\"hosts\":[\"domain-2.org\"]},"
                     "{\"id\":\"uri\",\"paths\":[\"/my-route\"]},"
                     "{\"id\":\"trace\",\"methods\":[\"TRACE\"]}"
                     "]",
                     NULL);
    HIT(f.r, "get", .method = "HEAD", .path = "/resource");
    HIT(f.r, "none", .method = "POST");
    HIT(f.r, "none", .method = "get"); /* methods are exact */
    /* one attribute each: plain hosts, then path length, rank above a method */
    HIT(f.r, "host", .method = "TRACE", .host = "domain-2.org");
    HIT(f.r, "uri", .method = "TRACE", .path = "/my-route");
    HIT(f.r, "trace", .method = "TRACE", .path = "/other");
    fx_free(&f);
}

static void test_headers(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"one\",\"headers\":{\"location\":[\"my-location-1\","
                     "\"my-location-2\"]}},"
                     "{\"id\":\"two\",\"headers\":{\"location\":[\"my-location-1\"],"
                     "\"version\":[\"v1\",\"v2\"]}},"
                     "{\"id\":\"under\",\"headers\":{\"x_api_version\":[\"3\"]}},"
                     "{\"id\":\"ua\",\"headers\":{\"user_agent\":"
                     "[\"~*windows|linux|os\\\\s+x\\\\s*[\\\\d\\\\._]+|solaris|bsd\"]}}"
                     "]",
                     NULL);
    HIT(f.r, "one", .headers = "Location: my-location-2");
    HIT(f.r, "one", .headers = "LOCATION: My-Location-1"); /* names and values: any case */
    HIT(f.r, "two", .headers = "location: my-location-1\nVersion: v2");
    HIT(f.r, "one", .headers = "location: my-location-2\nversion: v2"); /* two needs both */
    HIT(f.r, "none", .headers = "location: my-location-3");
    HIT(f.r, "one", .headers = "location: nope\nlocation: my-location-1"); /* any value */
    HIT(f.r, "under", .headers = "X-Api-Version: 3");
    HIT(f.r, "ua", .headers = "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15)");
    HIT(f.r, "ua", .headers = "user-agent: curl (LINUX)");
    HIT(f.r, "none", .headers = "user-agent: curl/8.0");
    fx_free(&f);
}

static void test_headers_priority(void **state)
{
    /* 08-router_spec "more [headers] has priority over longer [paths]" */
    fixture_t f = fx("["
                     "{\"id\":\"a\",\"headers\":{\"version\":[\"v1\"]},"
                     "\"paths\":[\"/my-route/hello\"]},"
                     "{\"id\":\"b\",\"headers\":{\"version\":[\"v1\"],\"location\":[\"us-east\"]},"
                     "\"paths\":[\"/my-route\"]}"
                     "]",
                     NULL);
    HIT(f.r, "b", .path = "/my-route/hello", .headers = "version: v1\nlocation: us-east");
    HIT(f.r, "a", .path = "/my-route/hello", .headers = "version: v1");
    fx_free(&f);
}

/* ------------------------------------------------------------------ priority */

static void test_priority_weight(void **state)
{
    /* traditional.md: hosts+methods before hosts; more attributes beat anything below */
    fixture_t f = fx("["
                     "{\"id\":\"h\",\"created_at\":1,\"hosts\":[\"example.com\"]},"
                     "{\"id\":\"hm\",\"created_at\":2,\"hosts\":[\"example.com\"],"
                     "\"methods\":[\"POST\"]},"
                     "{\"id\":\"hmp\",\"created_at\":3,\"hosts\":[\"*.com\"],"
                     "\"methods\":[\"POST\"],\"paths\":[\"/x\"]},"
                     "{\"id\":\"hdr\",\"created_at\":4,\"headers\":{\"a\":[\"1\"],\"b\":[\"2\"],"
                     "\"c\":[\"3\"]},\"paths\":[\"/xxxxxxxxxxxxxxxx\"]}"
                     "]",
                     NULL);
    HIT(f.r, "h", .method = "GET", .host = "example.com");
    HIT(f.r, "hm", .method = "POST", .host = "example.com");
    HIT(f.r, "hmp", .method = "POST", .host = "example.com", .path = "/x");
    /* weight 3 (wildcard) beats weight 2 with three headers and a longer path */
    HIT(f.r, "hmp", .method = "POST", .host = "example.com", .path = "/xxxxxxxxxxxxxxxx",
        .headers = "a: 1\nb: 2\nc: 3");
    HIT(f.r, "hdr", .method = "GET", .host = "example.com", .path = "/xxxxxxxxxxxxxxxx",
        .headers = "a: 1\nb: 2\nc: 3");
    fx_free(&f);
}

static void test_priority_ties(void **state)
{
    /* all else equal: oldest created_at first, then the higher id */
    fixture_t f = fx("["
                     "{\"id\":\"b\",\"created_at\":200,\"paths\":[\"/same\"]},"
                     "{\"id\":\"a\",\"created_at\":100,\"paths\":[\"/same\"]},"
                     "{\"id\":\"c\",\"created_at\":300,\"methods\":[\"GET\"]},"
                     "{\"id\":\"d\",\"created_at\":300,\"methods\":[\"GET\"]}"
                     "]",
                     NULL);
    HIT(f.r, "a", .path = "/same/x");
    HIT(f.r, "d", .path = "/other");
    fx_free(&f);
}

static void test_priority_wildcard_and_method(void **state)
{
    /* 08-router_spec edge cases */
    fixture_t f = fx("["
                     "{\"id\":\"g\",\"hosts\":[\"host.*\"],\"methods\":[\"GET\"]},"
                     "{\"id\":\"p\",\"hosts\":[\"host.*\"],\"methods\":[\"POST\"]},"
                     "{\"id\":\"m\",\"methods\":[\"GET\"]},"
                     "{\"id\":\"w\",\"hosts\":[\"domain.*\"]},"
                     "{\"id\":\"rg\",\"methods\":[\"GET\"],\"paths\":[\"~/users/\\\\d+/profile\"]},"
                     "{\"id\":\"rp\",\"methods\":[\"POST\"],\"paths\":[\"~/users/\\\\d*/profile\"]}"
                     "]",
                     NULL);
    HIT(f.r, "g", .method = "GET", .host = "host.com");
    HIT(f.r, "p", .method = "POST", .host = "host.com");
    HIT(f.r, "m", .method = "GET", .host = "nothing.com");
    HIT(f.r, "w", .method = "GET", .host = "domain.com");
    HIT(f.r, "rg", .method = "GET", .path = "/users/123/profile");
    HIT(f.r, "rp", .method = "POST", .path = "/users/123/profile");
    fx_free(&f);
}

/* ------------------------------------------------------------------ protocols, snis, service */

static void test_protocols(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"tls\",\"protocols\":[\"https\"],\"paths\":[\"/secure\"]},"
                     "{\"id\":\"301\",\"protocols\":[\"https\"],\"paths\":[\"/redirect-301\"],"
                     "\"https_redirect_status_code\":301},"
                     "{\"id\":\"plain\",\"protocols\":[\"http\"],\"paths\":[\"/plain\"]},"
                     "{\"id\":\"tcp\",\"protocols\":[\"tcp\"],\"paths\":[\"/tcp\"]},"
                     "{\"id\":\"grpc\",\"protocols\":[\"grpc\"],\"paths\":[\"/grpc\"]}"
                     "]",
                     NULL);
    tg_route_match_t m;
    assert_int_equal(run(f.r, &(rq_t){.path = "/secure"}, &m), 0);
    assert_int_equal(m.https_redirect_status, 426);
    assert_int_equal(run(f.r, &(rq_t){.path = "/secure", .https = true}, &m), 0);
    assert_int_equal(m.https_redirect_status, 0);
    assert_int_equal(run(f.r, &(rq_t){.path = "/redirect-301"}, &m), 0);
    assert_int_equal(m.https_redirect_status, 301);
    /* an http-only route still serves https (Kong does not filter on protocols) */
    assert_int_equal(run(f.r, &(rq_t){.path = "/plain", .https = true}, &m), 0);
    assert_int_equal(m.https_redirect_status, 0);
    HIT(f.r, "none", .path = "/tcp"); /* stream routes are not in the http router */
    HIT(f.r, "grpc", .path = "/grpc");
    fx_free(&f);
}

static void test_snis(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"sni\",\"protocols\":[\"https\"],\"snis\":[\"sni.example.com.\"],"
                     "\"paths\":[\"/\"]},"
                     "{\"id\":\"other\",\"paths\":[\"/\"]}"
                     "]",
                     NULL);
    HIT(f.r, "sni", .https = true, .sni = "sni.example.com");
    HIT(f.r, "other", .https = true, .sni = "else.example.com");
    HIT(f.r, "sni", .https = false); /* snis only bind TLS requests */
    fx_free(&f);
}

static void test_service(void **state)
{
    fixture_t f =
        fx("["
           "{\"id\":\"with\",\"paths\":[\"/with\"],\"service\":{\"id\":\"s1\"}},"
           "{\"id\":\"without\",\"paths\":[\"/without\"],\"service\":null},"
           "{\"id\":\"dangling\",\"paths\":[\"/dangling\"],\"service\":{\"id\":\"s9\"}}"
           "]",
           "[{\"id\":\"s0\",\"host\":\"a\"},{\"id\":\"s1\",\"host\":\"b\",\"path\":\"/p\"}]");
    tg_route_match_t m;
    assert_int_equal(run(f.r, &(rq_t){.path = "/with"}, &m), 0);
    assert_string_equal(json_string_value(json_object_get(m.service, "host")), "b");
    assert_true(tg_str_eq_lit(m.service_path, "/p"));
    assert_int_equal(run(f.r, &(rq_t){.path = "/without"}, &m), 0);
    assert_null(m.service); /* → 503 "no Service found with those values" */
    assert_int_equal(run(f.r, &(rq_t){.path = "/dangling"}, &m), 0);
    assert_null(m.service);
    assert_int_equal(run(f.r, &(rq_t){.path = "/nothing"}, &m), -TG_ENOTFOUND);
    assert_null(m.route);
    fx_free(&f);
}

static void test_empty_and_invalid(void **state)
{
    tg_router_t *r;
    char err[256];
    assert_int_equal(tg_router_build(NULL, NULL, NULL, &r, err, sizeof(err)), 0);
    HIT(r, "none", .path = "/");
    tg_router_free(r);

    json_t *routes =
        parse("[{\"id\":\"ok\",\"paths\":[\"~/a\"]},"
              "{\"id\":\"x\",\"name\":\"broken\",\"paths\":[\"/a\",\"~/(unclosed\"]}]");
    assert_int_equal(tg_router_build(routes, NULL, NULL, &r, err, sizeof(err)), -TG_EINVAL);
    assert_null(r);
    assert_non_null(strstr(err, "route 'broken': paths[2]: invalid regex '~/(unclosed'"));
    assert_int_equal(tg_router_check_route(json_array_get(routes, 1), err, sizeof(err)),
                     -TG_EINVAL);
    assert_int_equal(tg_router_check_route(json_array_get(routes, 0), err, sizeof(err)), 0);
    json_decref(routes);

    routes = parse("[{\"id\":\"id-7\",\"headers\":{\"x\":[\"~*[\"]}},{\"id\":\"empty\"}]");
    assert_int_equal(tg_router_build(routes, NULL, NULL, &r, err, sizeof(err)), -TG_EINVAL);
    assert_non_null(strstr(err, "route 'id-7': headers.x: invalid regex"));
    json_decref(routes);

    /* a route with nothing to match on is left out, as Kong's empty expression is */
    fixture_t f = fx("[{\"id\":\"empty\",\"methods\":[]}]", NULL);
    assert_int_equal(tg_router_size(f.r), 0);
    fx_free(&f);
}

/* ------------------------------------------------------------------ normalisation */

static void norm_is(const char *in, const char *want)
{
    char out[256];
    size_t n;
    assert_int_equal(tg_router_normalize_path(tg_str_from(in), out, &n), 0);
    if (n != strlen(want) || memcmp(out, want, n) != 0)
        fail_msg("normalize(%s) = %.*s, want %s", in, (int)n, out, want);
}

static void test_normalize(void **state)
{
    /* traditional.md "Path normalization" */
    norm_is("/foo%3a", "/foo%3A");
    norm_is("/fo%6F", "/foo");
    norm_is("/foo/./bar/../baz", "/foo/baz");
    norm_is("/foo//bar", "/foo/bar");
    /* decoding comes first, so encoded dots are dot segments (uri.lua) */
    norm_is("/%2e%2E/x", "/x");
    norm_is("/a/%2e./b", "/b");
    norm_is("/a%2fb", "/a%2Fb");
    norm_is("/a%2Fb/..", "/");
    norm_is("/caf%C3%A9%20x", "/caf\xc3\xa9 x");
    norm_is("/a%%41%4", "/a%A%4");
    norm_is("/a/b/..", "/a/");
    norm_is("/a/b/.", "/a/b/");
    norm_is("/..", "/");
    norm_is("/../../a", "/a");
    norm_is("///a//b//", "/a/b/");
    norm_is("/a/.../b", "/a/.../b");
    norm_is("/a./b.", "/a./b.");
    norm_is("/", "/");
    norm_is("", "");
}

static void test_normalized_matching(void **state)
{
    fixture_t f = fx("["
                     "{\"id\":\"foo\",\"paths\":[\"/foo\"]},"
                     "{\"id\":\"enc\",\"paths\":[\"/a%2Fb\"]},"
                     "{\"id\":\"dot\",\"paths\":[\"/plain/a.b.c\"]}"
                     "]",
                     NULL);
    HIT(f.r, "foo", .path = "/fo%6F/bar");
    HIT(f.r, "foo", .path = "/bar/../foo");
    HIT(f.r, "foo", .path = "//foo");
    HIT(f.r, "none", .path = "/foo/../bar");
    HIT(f.r, "enc", .path = "/a%2fb"); /* reserved: kept encoded, upper-cased */
    HIT(f.r, "none", .path = "/a/b");
    HIT(f.r, "dot", .path = "/plain/a.b%2Ec");
    tg_route_match_t m;
    assert_int_equal(run(f.r, &(rq_t){.path = "/x/%2E%2E/foo/./y"}, &m), 0);
    assert_true(tg_str_eq_lit(m.path, "/foo/y"));
    fx_free(&f);
}

/* ------------------------------------------------------------------ upstream path */

enum { NO = 0, YES = 1, BOTH = 2 };

/*
 * spec/fixtures/router_path_handling_tests.lua as of Kong 3.x, row by row (route NULL:
 * the route matches by host). Handling NULL: both v0 and v1.
 */
static const struct ph_case {
    const char *svc, *route;
    int strip;
    const char *handling;
    const char *req, *want;
} ph_cases[] = {
    {"/", "/", BOTH, NULL, "/", "/"},
    {"/", "/", BOTH, NULL, "/route", "/route"},
    {"/", "/", BOTH, NULL, "/route/", "/route/"},
    {"/", "/", BOTH, NULL, "/routereq", "/routereq"},
    {"/", "/", BOTH, NULL, "/route/req", "/route/req"},
    {"/", "/route", NO, NULL, "/route", "/route"},
    {"/", "/route", NO, NULL, "/route/", "/route/"},
    {"/", "/route", NO, NULL, "/routereq", "/routereq"},
    {"/", "/route", YES, NULL, "/route", "/"},
    {"/", "/route", YES, NULL, "/route/", "/"},
    {"/", "/route", YES, NULL, "/routereq", "/req"},
    {"/", "/route/", NO, NULL, "/route/", "/route/"},
    {"/", "/route/", NO, NULL, "/route/req", "/route/req"},
    {"/", "/route/", YES, NULL, "/route/", "/"},
    {"/", "/route/", YES, NULL, "/route/req", "/req"},
    {"/srv", "/rou", NO, "v0", "/roureq", "/srv/roureq"},
    {"/srv", "/rou", NO, "v1", "/roureq", "/srvroureq"},
    {"/srv", "/rou", YES, "v0", "/roureq", "/srv/req"},
    {"/srv", "/rou", YES, "v1", "/roureq", "/srvreq"},
    {"/srv/", "/rou", NO, NULL, "/rou", "/srv/rou"},
    {"/srv/", "/rou", YES, "v0", "/rou", "/srv"},
    {"/srv/", "/rou", YES, "v1", "/rou", "/srv/"},
    {"/service", "/", BOTH, NULL, "/", "/service"},
    {"/service", "/", BOTH, "v0", "/route", "/service/route"},
    {"/service", "/", BOTH, "v1", "/route", "/serviceroute"},
    {"/service", "/", BOTH, "v0", "/route/", "/service/route/"},
    {"/service", "/", BOTH, "v1", "/route/", "/serviceroute/"},
    {"/service", "/", BOTH, "v0", "/routereq", "/service/routereq"},
    {"/service", "/", BOTH, "v1", "/routereq", "/serviceroutereq"},
    {"/service", "/", BOTH, "v0", "/route/req", "/service/route/req"},
    {"/service", "/", BOTH, "v1", "/route/req", "/serviceroute/req"},
    {"/service", "/route", NO, "v0", "/route", "/service/route"},
    {"/service", "/route", NO, "v1", "/route", "/serviceroute"},
    {"/service", "/route", NO, "v0", "/route/", "/service/route/"},
    {"/service", "/route", NO, "v1", "/route/", "/serviceroute/"},
    {"/service", "/route", NO, "v0", "/routereq", "/service/routereq"},
    {"/service", "/route", NO, "v1", "/routereq", "/serviceroutereq"},
    {"/service", "/route", YES, NULL, "/route", "/service"},
    {"/service", "/route", YES, NULL, "/route/", "/service/"},
    {"/service", "/route", YES, "v0", "/routereq", "/service/req"},
    {"/service", "/route", YES, "v1", "/routereq", "/servicereq"},
    {"/service", "/route/", NO, "v0", "/route/", "/service/route/"},
    {"/service", "/route/", NO, "v1", "/route/", "/serviceroute/"},
    {"/service", "/route/", NO, "v0", "/route/req", "/service/route/req"},
    {"/service", "/route/", NO, "v1", "/route/req", "/serviceroute/req"},
    {"/service", "/route/", YES, "v0", "/route/", "/service/"},
    {"/service", "/route/", YES, "v1", "/route/", "/service"},
    {"/service", "/route/", YES, "v0", "/route/req", "/service/req"},
    {"/service", "/route/", YES, "v1", "/route/req", "/servicereq"},
    {"/service/", "/", BOTH, "v0", "/route/", "/service/route/"},
    {"/service/", "/", BOTH, "v1", "/route/", "/service/route/"},
    {"/service/", "/", BOTH, NULL, "/", "/service/"},
    {"/service/", "/", BOTH, NULL, "/route", "/service/route"},
    {"/service/", "/", BOTH, NULL, "/routereq", "/service/routereq"},
    {"/service/", "/", BOTH, NULL, "/route/req", "/service/route/req"},
    {"/service/", "/route", NO, NULL, "/route", "/service/route"},
    {"/service/", "/route", NO, NULL, "/route/", "/service/route/"},
    {"/service/", "/route", NO, NULL, "/routereq", "/service/routereq"},
    {"/service/", "/route", YES, "v0", "/route", "/service"},
    {"/service/", "/route", YES, "v1", "/route", "/service/"},
    {"/service/", "/route", YES, NULL, "/route/", "/service/"},
    {"/service/", "/route", YES, NULL, "/routereq", "/service/req"},
    {"/service/", "/route/", NO, NULL, "/route/", "/service/route/"},
    {"/service/", "/route/", NO, NULL, "/route/req", "/service/route/req"},
    {"/service/", "/route/", YES, NULL, "/route/", "/service/"},
    {"/service/", "/route/", YES, NULL, "/route/req", "/service/req"},
    {"/", NULL, BOTH, NULL, "/", "/"},
    {"/", NULL, BOTH, NULL, "/route", "/route"},
    {"/", NULL, BOTH, NULL, "/route/", "/route/"},
    {"/service", NULL, BOTH, NULL, "/", "/service"},
    {"/service", NULL, BOTH, "v0", "/route", "/service/route"},
    {"/service", NULL, BOTH, "v1", "/route", "/serviceroute"},
    {"/service", NULL, BOTH, "v0", "/route/", "/service/route/"},
    {"/service", NULL, BOTH, "v1", "/route/", "/serviceroute/"},
    {"/service/", NULL, BOTH, NULL, "/", "/service/"},
    {"/service/", NULL, BOTH, NULL, "/route", "/service/route"},
    {"/service/", NULL, BOTH, NULL, "/route/", "/service/route/"},
};

/* Builds the one-route router a case describes and returns the upstream path. */
static void ph_run(const struct ph_case *c, bool strip, const char *handling, bool honour_v1,
                   char *got, size_t cap)
{
    char routes[512], services[256];
    snprintf(services, sizeof(services), "[{\"id\":\"s\",\"host\":\"up\",\"path\":\"%s\"}]",
             c->svc);
    snprintf(routes, sizeof(routes),
             "[{\"id\":\"r\",\"hosts\":[\"example.com\"],%s%s%s\"strip_path\":%s,"
             "\"path_handling\":\"%s\",\"service\":{\"id\":\"s\"}}]",
             c->route ? "\"paths\":[\"" : "", c->route ? c->route : "", c->route ? "\"]," : "",
             strip ? "true" : "false", handling);
    tg_router_opts_t opts = {.path_handling_v1 = honour_v1};
    fixture_t f = fx_opts(routes, services, &opts);
    tg_route_match_t m;
    assert_int_equal(run(f.r, &(rq_t){.host = "example.com", .path = c->req}, &m), 0);
    size_t n;
    assert_int_equal(tg_router_upstream_path(&m, TG_STR_NULL, got, cap - 1, &n), 0);
    got[n] = '\0';
    fx_free(&f);
}

static void test_upstream_path_table(void **state)
{
    size_t checked = 0;
    for (size_t i = 0; i < sizeof(ph_cases) / sizeof(ph_cases[0]); i++) {
        const struct ph_case *c = &ph_cases[i];
        for (int s = 0; s < 2; s++) {
            if (c->strip != BOTH && c->strip != s) continue;
            for (int h = 0; h < 2; h++) {
                const char *hv = h ? "v1" : "v0";
                if (c->handling && strcmp(c->handling, hv) != 0) continue;
                char got[256];
                ph_run(c, s, hv, true, got, sizeof(got));
                if (strcmp(got, c->want) != 0)
                    fail_msg("row %zu (svc %s route %s strip %d %s req %s): got %s want %s", i + 1,
                             c->svc, c->route ? c->route : "-", s, hv, c->req, got, c->want);
                checked++;
            }
        }
    }
    assert_true(checked > 120);
}

static void test_upstream_path_v1_is_v0_by_default(void **state)
{
    /* traditional_compatible (Kong 3.10's default) uses v0 whatever the route says */
    char got[256];
    const struct ph_case c = {"/srv", "/rou", YES, "v1", "/roureq", NULL};
    ph_run(&c, true, "v1", false, got, sizeof(got));
    assert_string_equal(got, "/srv/req");
    ph_run(&c, true, "v1", true, got, sizeof(got));
    assert_string_equal(got, "/srvreq");
}

static const char *upstream(const char *routes, const char *svc_path, const char *path,
                            tg_str_t query, char *buf, size_t cap)
{
    char services[256];
    snprintf(services, sizeof(services), "[{\"id\":\"s\",\"host\":\"up\",\"path\":%s}]", svc_path);
    fixture_t f = fx(routes, services);
    tg_route_match_t m;
    assert_int_equal(run(f.r, &(rq_t){.path = path}, &m), 0);
    size_t n;
    int rc = tg_router_upstream_path(&m, query, buf, cap - 1, &n);
    fx_free(&f);
    if (rc != 0) return rc == -TG_ETOOBIG ? "TOOBIG" : "ERROR";
    buf[n] = '\0';
    return buf;
}

static void test_upstream_path_examples(void **state)
{
    char b[256];
    const char *tv0 = "[{\"id\":\"r\",\"paths\":[\"/tv0\"],\"service\":{\"id\":\"s\"}}]";
    const char *fv0 = "[{\"id\":\"r\",\"paths\":[\"/fv0\"],\"strip_path\":false,"
                      "\"service\":{\"id\":\"s\"}}]";
    /* kong-compat §5.2 and route.md */
    assert_string_equal(upstream(tv0, "\"/s\"", "/tv0/req", TG_STR_NULL, b, sizeof(b)), "/s/req");
    assert_string_equal(upstream(tv0, "\"/s\"", "/tv0", TG_STR_NULL, b, sizeof(b)), "/s");
    assert_string_equal(upstream(fv0, "\"/s\"", "/fv0/req", TG_STR_NULL, b, sizeof(b)),
                        "/s/fv0/req");
    assert_string_equal(upstream(fv0, "\"/s\"", "/fv0", TG_STR_NULL, b, sizeof(b)), "/s/fv0");
    /* service path null → "/"; strip_path removes the whole regex match (route.md) */
    const char *rx = "[{\"id\":\"r\",\"paths\":[\"~/version/\\\\d+/service\"],"
                     "\"service\":{\"id\":\"s\"}}]";
    assert_string_equal(
        upstream(rx, "null", "/version/1/service/path/to/resource", TG_STR_NULL, b, sizeof(b)),
        "/path/to/resource");
    /* the query string travels verbatim; a bare "?" is kept as Kong keeps it */
    assert_string_equal(upstream(tv0, "\"/s\"", "/tv0/req", TG_STR("a=1&b=%20"), b, sizeof(b)),
                        "/s/req?a=1&b=%20");
    assert_string_equal(upstream(tv0, "\"/s\"", "/tv0/req", TG_STR(""), b, sizeof(b)), "/s/req?");
    /* decoded "other" characters are escaped again for the upstream request */
    assert_string_equal(
        upstream(tv0, "\"/s\"", "/tv0/a%20b%C3%A9%2F%7e", TG_STR_NULL, b, sizeof(b)),
        "/s/a%20b%C3%A9%2F~");
    assert_string_equal(upstream(tv0, "\"/s\"", "/tv0/../tv0/./x", TG_STR_NULL, b, sizeof(b)),
                        "/s/x");
    assert_string_equal(upstream(tv0, "\"/s\"", "/tv0/abcdef", TG_STR_NULL, b, 8), "TOOBIG");
}

/* ------------------------------------------------------------------ scale */

static void test_many_routes(void **state)
{
    enum { N = 10000 };
    json_t *routes = json_array(), *services = json_array();
    json_array_append_new(services, json_pack("{s:s, s:s}", "id", "svc", "host", "up"));
    char buf[64], buf2[64];
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof(buf), "r%05d", i);
        json_t *r =
            json_pack("{s:s, s:i, s:{s:s}}", "id", buf, "created_at", i, "service", "id", "svc");
        if (i % 3 == 0) {
            snprintf(buf2, sizeof(buf2), "h%d.example.com", i);
            json_object_set_new(r, "hosts", json_pack("[s]", buf2));
        } else if (i % 3 == 1) {
            snprintf(buf2, sizeof(buf2), "/p%d", i);
            json_object_set_new(r, "paths", json_pack("[s]", buf2));
        } else {
            snprintf(buf2, sizeof(buf2), "~/re%d/\\d+$", i);
            json_object_set_new(r, "paths", json_pack("[s]", buf2));
        }
        json_array_append_new(routes, r);
    }
    tg_router_t *r;
    char err[128];
    assert_int_equal(tg_router_build(routes, services, NULL, &r, err, sizeof(err)), 0);
    assert_int_equal(tg_router_size(r), N);
    for (int i = 0; i < N; i += 7) {
        char want[16], host[64] = "", path[64] = "/";
        snprintf(want, sizeof(want), "r%05d", i);
        if (i % 3 == 0)
            snprintf(host, sizeof(host), "H%d.example.com:8000", i);
        else if (i % 3 == 1)
            snprintf(path, sizeof(path), "/p%d/x", i);
        else
            snprintf(path, sizeof(path), "/re%d/42", i);
        assert_string_equal(hit(r, (rq_t){.host = host, .path = path}), want);
    }
    HIT(r, "none", .host = "h1.example.com", .path = "/nope");
    /* "/p1" is a prefix of "/p10/x": the longer "/p10" wins */
    HIT(r, "r00010", .path = "/p10/x");
    tg_router_free(r);
    json_decref(routes);
    json_decref(services);
}

/* Worker threads share one router, each with its own scratch and path buffer. */
struct worker {
    const tg_router_t *r;
    int errors;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    tg_router_scratch_t *sc = tg_router_scratch_new();
    char buf[64], path[64];
    for (int i = 0; i < 20000; i++) {
        int want = i % 50;
        snprintf(path, sizeof(path), "/re%d/%d", want, i);
        tg_router_request_t req = {
            .method = TG_STR("GET"), .path = tg_str_from(path), .path_buf = buf, .scratch = sc};
        tg_route_match_t m;
        if (tg_router_match(w->r, &req, &m) != 0) {
            w->errors++;
            continue;
        }
        char id[16];
        snprintf(id, sizeof(id), "r%d", want);
        w->errors += strcmp(json_string_value(json_object_get(m.route, "id")), id) != 0;
        w->errors += m.ncaptures != 1 || !m.captures[0].p;
    }
    tg_router_scratch_free(sc);
    return NULL;
}

static void test_concurrent_match(void **state)
{
    json_t *routes = json_array();
    for (int i = 0; i < 50; i++) {
        char id[16], re[32];
        snprintf(id, sizeof(id), "r%d", i);
        snprintf(re, sizeof(re), "~/re%d/(\\d+)$", i);
        json_array_append_new(routes, json_pack("{s:s, s:[s]}", "id", id, "paths", re));
    }
    tg_router_t *r;
    char err[128];
    assert_int_equal(tg_router_build(routes, NULL, NULL, &r, err, sizeof(err)), 0);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){r, 0};
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].errors, 0);
    }
    tg_router_free(r);
    json_decref(routes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hosts_exact_and_ports),
        cmocka_unit_test(test_hosts_wildcards),
        cmocka_unit_test(test_hosts_plain_before_wildcard),
        cmocka_unit_test(test_paths_prefix_longest),
        cmocka_unit_test(test_paths_split_by_length),
        cmocka_unit_test(test_paths_host_half_match),
        cmocka_unit_test(test_paths_regex_priority),
        cmocka_unit_test(test_paths_regex_vs_prefix),
        cmocka_unit_test(test_paths_regex_captures),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_headers_priority),
        cmocka_unit_test(test_priority_weight),
        cmocka_unit_test(test_priority_ties),
        cmocka_unit_test(test_priority_wildcard_and_method),
        cmocka_unit_test(test_protocols),
        cmocka_unit_test(test_snis),
        cmocka_unit_test(test_service),
        cmocka_unit_test(test_empty_and_invalid),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_normalized_matching),
        cmocka_unit_test(test_upstream_path_table),
        cmocka_unit_test(test_upstream_path_v1_is_v0_by_default),
        cmocka_unit_test(test_upstream_path_examples),
        cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_concurrent_match),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
