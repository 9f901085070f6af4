/*
 * test_http.c — the HTTP/1.1 parsers: request heads, response heads and the
 * chunked decoder, including every request-smuggling shape DESIGN.md §9 names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "error.h"
#include "http.h"
#include "http_chunked.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tg_http_limits_t lim = {.max_head_size = 4096, .max_headers = 16, .max_uri = 256};
static tg_http_header_t hdrs[64];
static tg_http_request_head_t req;
static tg_http_response_head_t resp;

static int parse_n(const char *s, size_t n)
{
    return tg_http_parse_request(s, n, 0, &lim, hdrs, &req);
}

static int parse(const char *s)
{
    return parse_n(s, strlen(s));
}

static int parse_resp(const char *s)
{
    return tg_http_parse_response(s, strlen(s), 0, &lim, hdrs, &resp);
}

static void assert_str(tg_str_t s, const char *want)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%.*s", (int)s.len, s.p ? s.p : "");
    assert_string_equal(buf, want);
}

/* Asserts that `s` is refused with `status` (and the matching error code). */
static void refused(const char *s, int status)
{
    int rc = parse(s);
    if (rc >= 0 || req.status != status)
        fail_msg("request %s: rc %d status %d, want status %d", s, rc, req.status, status);
    int want = status == 400                    ? -TG_EPARSE
               : status == 414 || status == 431 ? -TG_ETOOBIG
                                                : -TG_EUNSUPPORTED;
    assert_int_equal(rc, want);
}

#define H "Host: example.com\r\n"

/* ---------------------------------------------------------------------------
 * Valid requests
 */

/* RFC 9112 §3.2: Host must be uri-host [":" port]; anything else is a 400. */
static void host_values(void **state)
{
    const char *good[] = {"a", "a.example.com", "a:80", "a:", "127.0.0.1:8000", "[::1]:443",
                          "[v1.x]", "xn--bcher-kva.example", ""};
    const char *bad[] = {"a b", "a/b", "user@a", "a:8x0", "[::1", "a]", "a:80:90"};
    char buf[256];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        assert_int_equal(parse(buf), 0);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        refused(buf, 400);
    }
}

static void simple_get(void **state)
{
    const char *s = "GET /a/b?x=1&y=2 HTTP/1.1\r\n" H "Accept: */*\r\n\r\n";
    assert_int_equal(parse(s), 0);
    assert_str(req.method, "GET");
    assert_str(req.target, "/a/b?x=1&y=2");
    assert_str(req.path, "/a/b");
    assert_str(req.query, "x=1&y=2");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.nheaders, 2);
    assert_str(req.headers[1].name, "Accept");
    assert_str(req.headers[1].value, "*/*");
    assert_int_equal(req.content_length, -1);
    assert_false(req.chunked);
    assert_true(req.keep_alive);
    assert_false(req.expect_continue);
    assert_int_equal(req.head_len, strlen(s));
}

static void path_and_query_edges(void **state)
{
    assert_int_equal(parse("GET / HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.path, "/");
    assert_str(req.query, "");
    assert_int_equal(parse("GET /p? HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.path, "/p");
    assert_str(req.query, "");
    assert_int_equal(parse("GET /p?a=?b HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.query, "a=?b");
    assert_int_equal(parse("GET /%41%2f?q=%zz&a[]={1|2} HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.path, "/%41%2f");
}

static void header_values_trimmed(void **state)
{
    assert_int_equal(
        parse("GET / HTTP/1.1\r\n" H "X-A:  v a l \t\r\nX-B:\r\nX-C: \xc3\xa9\r\n\r\n"), 0);
    assert_str(req.headers[1].value, "v a l");
    assert_str(req.headers[2].value, "");
    assert_str(req.headers[3].value, "\xc3\xa9");
}

static void header_lookup(void **state)
{
    assert_int_equal(parse("GET / HTTP/1.1\r\n" H "x-dup: 1\r\nX-Dup: 2\r\n\r\n"), 0);
    const tg_http_header_t *h = tg_http_header_find(req.headers, req.nheaders, "X-DUP");
    assert_non_null(h);
    assert_str(h->value, "1");
    assert_int_equal(tg_http_header_count(req.headers, req.nheaders, "x-dup"), 2);
    assert_int_equal(tg_http_header_count(req.headers, req.nheaders, "host"), 1);
    assert_null(tg_http_header_find(req.headers, req.nheaders, "missing"));
    assert_int_equal(tg_http_header_count(req.headers, req.nheaders, "missing"), 0);
}

static void keep_alive_rules(void **state)
{
    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(req.minor_version, 0);
    assert_false(req.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 0);
    assert_true(req.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\n" H "Connection: close\r\n\r\n"), 0);
    assert_false(req.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\n" H "Connection: upgrade, CLOSE\r\n\r\n"), 0);
    assert_false(req.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\n" H "Connection: upgrade\r\n\r\n"), 0);
    assert_true(req.keep_alive);
}

static void content_length_and_body(void **state)
{
    const char *s = "POST /x HTTP/1.1\r\n" H "Content-Length: 0005\r\n\r\nhello";
    assert_int_equal(parse(s), 0);
    assert_int_equal(req.content_length, 5);
    assert_int_equal(req.head_len, strlen(s) - 5);
    assert_int_equal(parse("POST / HTTP/1.1\r\n" H "Content-Length: 9223372036854775807\r\n\r\n"),
                     0);
    assert_int_equal(req.content_length, INT64_MAX);
}

static void chunked_and_expect(void **state)
{
    assert_int_equal(parse("POST / HTTP/1.1\r\n" H "Transfer-Encoding: Chunked\r\n\r\n"), 0);
    assert_true(req.chunked);
    assert_int_equal(req.content_length, -1);
    /* Empty list elements are ignored (RFC 9110 §5.6.1). */
    assert_int_equal(parse("POST / HTTP/1.1\r\n" H "Transfer-Encoding: , chunked ,\r\n\r\n"), 0);
    assert_true(req.chunked);
    assert_int_equal(parse("PUT / HTTP/1.1\r\n" H "Expect: 100-Continue\r\n"
                           "Content-Length: 3\r\n\r\n"),
                     0);
    assert_true(req.expect_continue);
    /* HTTP/1.0 clients do not get 100 Continue (RFC 9110 §10.1.1). */
    assert_int_equal(parse("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), 0);
    assert_false(req.expect_continue);
}

static void request_target_forms(void **state)
{
    assert_int_equal(parse("GET http://example.com:8080/p/q?z HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.path, "/p/q");
    assert_str(req.query, "z");
    assert_int_equal(parse("GET HTTPS://example.com HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.path, "/");
    assert_int_equal(parse("GET http://example.com?x=1 HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.path, "/");
    assert_str(req.query, "x=1");
    assert_int_equal(parse("OPTIONS * HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.path, "*");
    assert_int_equal(parse("CONNECT example.com:443 HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.target, "example.com:443");
}

static void leading_empty_lines(void **state)
{
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n";
    assert_int_equal(parse(s), 0);
    assert_str(req.method, "GET");
    assert_int_equal(req.head_len, strlen(s));
}

static void incomplete_heads(void **state)
{
    const char *s = "POST /up HTTP/1.1\r\n" H "Content-Length: 2\r\n\r\nok";
    size_t head = strlen(s) - 2;
    for (size_t n = 0; n < head; n++)
        assert_int_equal(parse_n(s, n), -TG_EAGAIN);
    assert_int_equal(parse_n(s, head), 0);
    assert_int_equal(req.head_len, head);
}

static void byte_by_byte_with_hint(void **state)
{
    const char *s = "GET /slow HTTP/1.1\r\n" H "A: 1\r\nB: 2\r\n\r\n";
    size_t prev = 0;
    int rc = -TG_EAGAIN;
    size_t n;
    for (n = 1; n <= strlen(s) && rc == -TG_EAGAIN; n++) {
        rc = tg_http_parse_request(s, n, prev, &lim, hdrs, &req);
        prev = n;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n - 1, strlen(s));
    assert_int_equal(req.nheaders, 3);
    assert_str(req.path, "/slow");
}

static void lowercase_method_is_a_token(void **state)
{
    assert_int_equal(parse("purge /x HTTP/1.1\r\n" H "\r\n"), 0);
    assert_str(req.method, "purge");
}

/* ---------------------------------------------------------------------------
 * Malformed requests (400)
 */

static void line_endings(void **state)
{
    refused("GET / HTTP/1.1\n" H "\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "\n", 400);
    refused("GET / HTTP/1.1\r\r\n" H "\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "X: a\rb\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "X: a\r\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "\rX\r\n", 400);
    refused("\rGET / HTTP/1.1\r\n" H "\r\n", 400);
    refused("\nGET / HTTP/1.1\r\n" H "\r\n", 400);
}

static void folding_and_whitespace(void **state)
{
    refused("GET / HTTP/1.1\r\n" H "X: a\r\n b\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "X: a\r\n\tb\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H ": novalue\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "NoColon\r\n\r\n", 400);
}

static void control_characters(void **state)
{
    static const char nul[] = "GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n";
    assert_int_equal(parse_n(nul, sizeof nul - 1), -TG_EPARSE);
    assert_int_equal(req.status, 400);
    refused("GET / HTTP/1.1\r\n" H "X: a\x01"
            "b\r\n\r\n",
            400);
    refused("GET / HTTP/1.1\r\n" H "X: a\x7f\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "X\x01: a\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "X(y): a\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "X@y: a\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H "\xc3\xa9: a\r\n\r\n", 400);
}

/* Field values are scanned eight bytes at a time: every byte value at every offset of a
 * long value (both halves of a word, word boundaries, the tail) is accepted or refused
 * exactly as the per-byte rule says, and accepted values keep all their bytes. */
static void field_value_bytes_everywhere(void **state)
{
    char buf[128];
    for (int b = 0; b < 256; b++) {
        for (size_t pos = 0; pos < 24; pos++) {
            char value[25] = "abcdefghijklmnopqrstuvwx";
            value[pos] = (char)b;
            int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\n" H "X: ");
            memcpy(buf + n, value, 24);
            memcpy(buf + n + 24, "\r\n\r\n", 5);
            int rc = parse_n(buf, (size_t)n + 28);
            bool ok = tg_http_cc_is((unsigned char)b, TG_HTTP_CC_VALUE);
            if ((rc == 0) != ok) fail_msg("byte 0x%02x at %zu: rc %d", b, pos, rc);
            if (!ok) continue;
            bool ows = b == ' ' || b == '\t'; /* trimmed at either end */
            size_t from = pos == 0 && ows ? 1 : 0, len = (pos == 0 || pos == 23) && ows ? 23 : 24;
            assert_int_equal(hdrs[1].value.len, len);
            assert_memory_equal(hdrs[1].value.p, value + from, len);
        }
    }
}

static void request_line_shapes(void **state)
{
    refused("G(ET / HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET  / HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /  HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET / HTTP/1.1 \r\n" H "\r\n", 400);
    refused("GET\t/ HTTP/1.1\r\n" H "\r\n", 400);
    refused(" GET / HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET / http/1.1\r\n" H "\r\n", 400);
    refused("GET / HTTP/1.10\r\n" H "\r\n", 400);
    refused("GET / HTTP/11\r\n" H "\r\n", 400);
    refused("GET / HTTP/1.x\r\n" H "\r\n", 400);
    /* HTTP/0.9: no version at all. */
    refused("GET /\r\n\r\n", 400);
    refused("GET\r\n\r\n", 400);
}

static void invalid_targets(void **state)
{
    refused("GET /a<b HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /a\"b HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /a\\b HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /a#frag HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /a\x01 HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /a%zz HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /a%2 HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET /a% HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET a/b HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET * HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET ftp://example.com/ HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET http://user@example.com/ HTTP/1.1\r\n" H "\r\n", 400);
    refused("GET http:///p HTTP/1.1\r\n" H "\r\n", 400);
    refused("CONNECT example.com:443/x HTTP/1.1\r\n" H "\r\n", 400);
}

static void host_rules(void **state)
{
    refused("GET / HTTP/1.1\r\n\r\n", 400);
    refused("GET / HTTP/1.1\r\n" H H "\r\n", 400);
    refused("GET / HTTP/1.0\r\n" H H "\r\n", 400);
}

/* ---------------------------------------------------------------------------
 * Request smuggling: framing headers (RFC 9112 §6)
 */

static void te_with_content_length(void **state)
{
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400);
}

static void duplicate_content_length(void **state)
{
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 5, 6\r\n\r\n", 400);
}

static void bad_content_length(void **state)
{
    refused("POST / HTTP/1.1\r\n" H "Content-Length: -1\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: +1\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: abc\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 0x10\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 1 2\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 9223372036854775808\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Content-Length: 99999999999999999999999\r\n\r\n", 400);
}

static void transfer_codings(void **state)
{
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, identity\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: identity\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;x=1\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: \r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chun(ked, chunked\r\n\r\n", 400);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            400);
    /* Well-formed but a coding we cannot decode. */
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", 501);
    refused("POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            501);
    /* HTTP/1.0 has no chunked coding: its framing cannot be trusted. */
    refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

/* ---------------------------------------------------------------------------
 * Limits and versions
 */

static void uri_too_long(void **state)
{
    char s[1024];
    char target[300];
    memset(target, 'a', sizeof target - 1);
    target[0] = '/';
    target[sizeof target - 1] = '\0';
    snprintf(s, sizeof s, "GET %s HTTP/1.1\r\n" H "\r\n", target);
    refused(s, 414);
    /* Detected before the request line is complete. */
    snprintf(s, sizeof s, "GET %s", target);
    refused(s, 414);
    /* Exactly at the limit is fine. */
    target[256] = '\0';
    snprintf(s, sizeof s, "GET %s HTTP/1.1\r\n" H "\r\n", target);
    assert_int_equal(parse(s), 0);
}

static void too_many_headers(void **state)
{
    char s[4096] = "GET / HTTP/1.1\r\n" H;
    for (int i = 1; i < 16; i++)
        snprintf(s + strlen(s), sizeof s - strlen(s), "X-%d: v\r\n", i);
    strcat(s, "\r\n");
    assert_int_equal(parse(s), 0);
    assert_int_equal(req.nheaders, 16);
    s[strlen(s) - 2] = '\0';
    strcat(s, "X-17: v\r\n\r\n");
    refused(s, 431);
}

static void head_too_large(void **state)
{
    char *s = malloc(8192);
    strcpy(s, "GET / HTTP/1.1\r\n" H "X-Big: ");
    size_t n = strlen(s);
    memset(s + n, 'v', 5000);
    strcpy(s + n + 5000, "\r\n\r\n");
    refused(s, 431);
    /* Incomplete but already over the limit: no need to wait for more. */
    s[4200] = '\0';
    refused(s, 431);
    /* Incomplete and under the limit: wait. */
    s[3000] = '\0';
    assert_int_equal(parse(s), -TG_EAGAIN);
    free(s);
}

static void versions(void **state)
{
    refused("GET / HTTP/2.0\r\n" H "\r\n", 505);
    refused("GET / HTTP/1.2\r\n" H "\r\n", 505);
    refused("GET / HTTP/0.9\r\n" H "\r\n", 505);
    refused("GET / HTTP/3.0\r\n" H "\r\n", 505);
}

static void long_method(void **state)
{
    refused("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\n" H "\r\n", 501);
}

static void early_rejection(void **state)
{
    /* A TLS ClientHello on a plain port fails on its first byte. */
    assert_int_equal(parse_n("\x16\x03\x01\x02", 4), -TG_EPARSE);
    assert_int_equal(req.status, 400);
    /* A bad header line fails even before the head is complete. */
    refused("GET / HTTP/1.1\r\nBad Header: x\r\n", 400);
}

/* ---------------------------------------------------------------------------
 * Responses
 */

static void response_basic(void **state)
{
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"), 0);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.minor_version, 1);
    assert_str(resp.reason, "OK");
    assert_int_equal(resp.content_length, 5);
    assert_int_equal(resp.nheaders, 2);
    assert_true(resp.keep_alive);
    assert_int_equal(resp.head_len,
                     strlen("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n"));
    assert_int_equal(tg_http_response_body(&resp, TG_STR("GET")), TG_HTTP_BODY_LENGTH);
    assert_int_equal(tg_http_response_body(&resp, TG_STR("HEAD")), TG_HTTP_BODY_NONE);
}

static void response_framing(void **state)
{
    assert_int_equal(parse_resp("HTTP/1.1 204 No Content\r\n\r\n"), 0);
    assert_int_equal(tg_http_response_body(&resp, TG_STR("GET")), TG_HTTP_BODY_NONE);
    assert_true(resp.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.1 304 Not Modified\r\n\r\n"), 0);
    assert_int_equal(tg_http_response_body(&resp, TG_STR("GET")), TG_HTTP_BODY_NONE);
    assert_int_equal(parse_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
                     0);
    assert_int_equal(resp.status, 101);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), 0);
    assert_int_equal(tg_http_response_body(&resp, TG_STR("GET")), TG_HTTP_BODY_CHUNKED);
    assert_true(resp.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.0 200 OK\r\n\r\n"), 0);
    assert_int_equal(tg_http_response_body(&resp, TG_STR("GET")), TG_HTTP_BODY_EOF);
    assert_false(resp.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), 0);
    assert_int_equal(tg_http_response_body(&resp, TG_STR("GET")), TG_HTTP_BODY_EOF);
    assert_false(resp.keep_alive);
    assert_int_equal(
        parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), 0);
    assert_false(resp.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\n\r\n"), 0);
    assert_int_equal(tg_http_response_body(&resp, TG_STR("CONNECT")), TG_HTTP_BODY_NONE);
    assert_int_equal(
        parse_resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n"), 0);
    assert_true(resp.keep_alive);
}

static void response_reason_optional(void **state)
{
    assert_int_equal(parse_resp("HTTP/1.1 404\r\n\r\n"), 0);
    assert_int_equal(resp.status, 404);
    assert_str(resp.reason, "");
    assert_int_equal(parse_resp("HTTP/1.1 500 \r\n\r\n"), 0);
    assert_str(resp.reason, "");
    assert_int_equal(parse_resp("HTTP/1.1 599 Very Custom\tReason\r\n\r\n"), 0);
    assert_str(resp.reason, "Very Custom\tReason");
}

static void response_refused(void **state)
{
    static const char *bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\nX: a\r\n\r\n",
        "HTTP/1.1 200 O\rK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse_resp(bad[i]);
        if (rc != -TG_EPARSE) fail_msg("response %zu accepted (rc %d)", i, rc);
        assert_int_equal(resp.error_status, 502);
    }
}

static void response_incomplete_and_limits(void **state)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for (size_t n = 0; n < strlen(s); n++)
        assert_int_equal(tg_http_parse_response(s, n, 0, &lim, hdrs, &resp), -TG_EAGAIN);
    char big[5000];
    strcpy(big, "HTTP/1.1 200 OK\r\nX: ");
    memset(big + strlen(big), 'a', 4500);
    big[4520] = '\0';
    assert_int_equal(parse_resp(big), -TG_ETOOBIG);
}

/* ---------------------------------------------------------------------------
 * Chunked bodies
 */

struct decoded {
    char data[8192];
    size_t len;
    size_t consumed;
    int rc;
    bool done;
};

/* Feeds `s` in pieces of `step` bytes (0 = all at once), as a server would. */
static struct decoded decode(const char *s, size_t n, size_t step)
{
    static struct decoded d;
    memset(&d, 0, sizeof d);
    tg_http_chunked_t c;
    tg_http_chunked_init(&c, &lim);
    size_t off = 0;
    while (off < n && !tg_http_chunked_done(&c)) {
        size_t avail = step && n - off > step ? step : n - off;
        size_t used;
        tg_str_t data;
        d.rc = tg_http_chunked_feed(&c, s + off, avail, &used, &data);
        assert_true(used <= avail);
        memcpy(d.data + d.len, data.p, data.len);
        d.len += data.len;
        off += used;
        if (d.rc < 0) break;
    }
    d.consumed = off;
    d.done = tg_http_chunked_done(&c);
    return d;
}

static void chunked_ok(const char *s, const char *want)
{
    size_t n = strlen(s);
    for (size_t step = 0; step <= 7; step++) {
        struct decoded d = decode(s, n, step);
        if (d.rc != 0) fail_msg("chunked body %s (step %zu): rc %d", s, step, d.rc);
        assert_true(d.done);
        assert_int_equal(d.len, strlen(want));
        assert_memory_equal(d.data, want, d.len);
        assert_int_equal(d.consumed, n);
    }
}

static void chunked_bad(const char *s, int want_rc)
{
    size_t n = strlen(s);
    for (size_t step = 0; step <= 3; step++) {
        struct decoded d = decode(s, n, step);
        if (d.rc != want_rc) fail_msg("chunked body %s (step %zu): rc %d", s, step, d.rc);
    }
}

static void chunked_simple(void **state)
{
    chunked_ok("5\r\nhello\r\n0\r\n\r\n", "hello");
    chunked_ok("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
    chunked_ok("0\r\n\r\n", "");
    chunked_ok("A\r\n0123456789\r\na\r\nabcdefghij\r\n0000\r\n\r\n", "0123456789abcdefghij");
    chunked_ok("0000000000000005\r\nhello\r\n0\r\n\r\n", "hello");
}

static void chunked_extensions(void **state)
{
    chunked_ok("5;foo=bar\r\nhello\r\n0;last\r\n\r\n", "hello");
    chunked_ok("5 ; a = \"q\\\"x;y\" ; b ;c=d\r\nhello\r\n0\r\n\r\n", "hello");
    chunked_ok("5;a=\"\"\r\nhello\r\n0\r\n\r\n", "hello");
    chunked_ok("5\t;a\r\nhello\r\n0\r\n\r\n", "hello");
}

static void chunked_trailers(void **state)
{
    chunked_ok("3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-Other:\r\n\r\n", "abc");
}

static void chunked_leaves_next_message(void **state)
{
    const char *s = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    struct decoded d = decode(s, strlen(s), 0);
    assert_int_equal(d.rc, 0);
    assert_true(d.done);
    assert_int_equal(d.consumed, strlen("3\r\nabc\r\n0\r\n\r\n"));
    d = decode(s, strlen(s), 1);
    assert_int_equal(d.consumed, strlen("3\r\nabc\r\n0\r\n\r\n"));
}

static void chunked_incomplete(void **state)
{
    const char *s = "5\r\nhello\r\n0\r\nX: y\r\n\r\n";
    for (size_t n = 0; n < strlen(s); n++) {
        struct decoded d = decode(s, n, 1);
        assert_int_equal(d.rc, 0);
        assert_false(d.done);
        assert_int_equal(d.consumed, n);
    }
}

static void chunked_malformed(void **state)
{
    chunked_bad("5\nhello\r\n0\r\n\r\n", -TG_EPARSE);
    chunked_bad("5\r\nhello\n0\r\n\r\n", -TG_EPARSE);
    chunked_bad("5\r\nhelloX\r\n0\r\n\r\n", -TG_EPARSE);
    chunked_bad("5\r\nhello\r\n0\r\n\n", -TG_EPARSE);
    chunked_bad("5\r\nhello\r\n0\n\r\n", -TG_EPARSE);
    chunked_bad("\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("g\r\n", -TG_EPARSE);
    chunked_bad("-5\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("+5\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("0x5\r\nhello\r\n", -TG_EPARSE);
    chunked_bad(" 5\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5 \r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5\r\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;a=\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;a=\"x\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;a=\"x\ny\"\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;a\nb\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;a\x01\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;a=b c\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("5;a=\"b\"c\r\nhello\r\n", -TG_EPARSE);
    chunked_bad("0\r\n X: y\r\n\r\n", -TG_EPARSE);
    chunked_bad("0\r\nX : y\r\n\r\n", -TG_EPARSE);
    chunked_bad("0\r\nX: y\r\n z\r\n\r\n", -TG_EPARSE);
    chunked_bad("0\r\nX: a\rb\r\n\r\n", -TG_EPARSE);
    chunked_bad("0\r\nX: a\x7f\r\n\r\n", -TG_EPARSE);
}

static void chunked_limits(void **state)
{
    /* 16 hex digits are accepted; a 17th could overflow 64 bits. */
    struct decoded d = decode("ffffffffffffffff\r\nabc", 21, 0);
    assert_int_equal(d.rc, 0);
    assert_int_equal(d.len, 3);
    chunked_bad("10000000000000000\r\n", -TG_ETOOBIG);
    chunked_bad("00000000000000000001\r\nx\r\n", -TG_ETOOBIG);
    /* Endless extensions. */
    char *s = malloc(TG_HTTP_CHUNK_LINE_MAX + 64);
    strcpy(s, "1;a=");
    memset(s + 4, 'x', TG_HTTP_CHUNK_LINE_MAX);
    strcpy(s + 4 + TG_HTTP_CHUNK_LINE_MAX, "\r\nx\r\n");
    chunked_bad(s, -TG_ETOOBIG);
    free(s);
    /* Trailers: too many, too large. */
    char t[8192] = "0\r\n";
    for (int i = 0; i < 17; i++)
        strcat(t, "X: y\r\n");
    strcat(t, "\r\n");
    chunked_bad(t, -TG_ETOOBIG);
    strcpy(t, "0\r\nX: ");
    memset(t + 6, 'v', 4200);
    strcpy(t + 4206, "\r\n\r\n");
    chunked_bad(t, -TG_ETOOBIG);
}

/* ---------------------------------------------------------------------------
 * Helpers
 */

static void helpers(void **state)
{
    assert_true(tg_http_is_token(TG_STR("X-Foo_bar.1~")));
    assert_false(tg_http_is_token(TG_STR("")));
    assert_false(tg_http_is_token(TG_STR("a b")));
    assert_true(tg_http_is_field_value(TG_STR("a b\tc")));
    assert_false(tg_http_is_field_value(TG_STR("a\r\nb")));
    assert_string_equal(tg_http_status_reason(404), "Not Found");
    assert_string_equal(tg_http_status_reason(431), "Request Header Fields Too Large");
    assert_string_equal(tg_http_status_reason(299), "Unknown");
    /* token_is: case-insensitive, word-wise, at every length around the 8-byte steps */
    assert_true(tg_http_token_is(TG_STR("Content-Length"), TG_STR("content-length")));
    assert_true(tg_http_token_is(TG_STR("CONNECTION"), TG_STR("connection")));
    assert_true(tg_http_token_is(TG_STR("X-Forwarded-Prefix"), TG_STR("x-forwarded-prefix")));
    assert_true(tg_http_token_is(TG_STR("te"), TG_STR("te")));
    assert_true(tg_http_token_is(TG_STR(""), TG_STR("")));
    assert_false(tg_http_token_is(TG_STR("Content-Lengtx"), TG_STR("content-length")));
    assert_false(tg_http_token_is(TG_STR("Xontent-Length"), TG_STR("content-length")));
    assert_false(tg_http_token_is(TG_STR("connectio"), TG_STR("connection")));
    assert_false(tg_http_token_is(TG_STR("keep_alive"), TG_STR("keep-alive")));
    assert_false(tg_http_token_is(TG_STR("x-real-id"), TG_STR("x-real-ip")));
    assert_false(tg_http_token_is(TG_STR("Hosts"), TG_STR("host")));
    char name[32], lower[32];
    for (size_t n = 1; n < sizeof name; n++) { /* one differing byte at each position */
        for (size_t k = 0; k < n; k++) {
            memset(lower, 'a', n);
            memset(name, 'A', n);
            name[k] = 'b';
            assert_false(tg_http_token_is((tg_str_t){name, n}, (tg_str_t){lower, n}));
            name[k] = 'A';
            assert_true(tg_http_token_is((tg_str_t){name, n}, (tg_str_t){lower, n}));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(simple_get),
        cmocka_unit_test(host_values),
        cmocka_unit_test(path_and_query_edges),
        cmocka_unit_test(header_values_trimmed),
        cmocka_unit_test(header_lookup),
        cmocka_unit_test(keep_alive_rules),
        cmocka_unit_test(content_length_and_body),
        cmocka_unit_test(chunked_and_expect),
        cmocka_unit_test(request_target_forms),
        cmocka_unit_test(leading_empty_lines),
        cmocka_unit_test(incomplete_heads),
        cmocka_unit_test(byte_by_byte_with_hint),
        cmocka_unit_test(lowercase_method_is_a_token),
        cmocka_unit_test(line_endings),
        cmocka_unit_test(folding_and_whitespace),
        cmocka_unit_test(control_characters),
        cmocka_unit_test(field_value_bytes_everywhere),
        cmocka_unit_test(request_line_shapes),
        cmocka_unit_test(invalid_targets),
        cmocka_unit_test(host_rules),
        cmocka_unit_test(te_with_content_length),
        cmocka_unit_test(duplicate_content_length),
        cmocka_unit_test(bad_content_length),
        cmocka_unit_test(transfer_codings),
        cmocka_unit_test(uri_too_long),
        cmocka_unit_test(too_many_headers),
        cmocka_unit_test(head_too_large),
        cmocka_unit_test(versions),
        cmocka_unit_test(long_method),
        cmocka_unit_test(early_rejection),
        cmocka_unit_test(response_basic),
        cmocka_unit_test(response_framing),
        cmocka_unit_test(response_reason_optional),
        cmocka_unit_test(response_refused),
        cmocka_unit_test(response_incomplete_and_limits),
        cmocka_unit_test(chunked_simple),
        cmocka_unit_test(chunked_extensions),
        cmocka_unit_test(chunked_trailers),
        cmocka_unit_test(chunked_leaves_next_message),
        cmocka_unit_test(chunked_incomplete),
        cmocka_unit_test(chunked_malformed),
        cmocka_unit_test(chunked_limits),
        cmocka_unit_test(helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
