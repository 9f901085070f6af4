/*
 * test_form.c — percent-decoding, urlencoded/query-string and
 * multipart/form-data decoding into Kong-shaped JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "error.h"
#include "form.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static void assert_json(json_t *got, const char *expect, const char *input)
{
    json_error_t jerr;
    json_t *want = json_loads(expect, JSON_DECODE_ANY, &jerr);
    if (!want) fail_msg("bad expectation %s: %s", expect, jerr.text);
    if (!json_equal(got, want)) {
        char *s = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fail_msg("input [%s]\n  got  %s\n  want %s", input, s ? s : "(null)", expect);
    }
    json_decref(want);
}

static void form_ok(const char *body, const char *expect)
{
    json_t *out = NULL;
    int rc = tg_form_parse_urlencoded(body, strlen(body), &out);
    if (rc != 0) fail_msg("input [%s]: rc %d", body, rc);
    assert_json(out, expect, body);
    json_decref(out);
}

static void form_err(const char *body)
{
    json_t *out = (json_t *)1;
    int rc = tg_form_parse_urlencoded(body, strlen(body), &out);
    if (rc != -TG_EPARSE) fail_msg("input [%s]: rc %d, expected -TG_EPARSE", body, rc);
    assert_null(out);
}

#define CT "multipart/form-data; boundary=XyZ"

static int mp(const char *ctype, const char *body, json_t **out)
{
    *out = (json_t *)1;
    return tg_form_parse_multipart(body, strlen(body), tg_str_from(ctype), out);
}

static void mp_ok(const char *ctype, const char *body, const char *expect)
{
    json_t *out;
    int rc = mp(ctype, body, &out);
    if (rc != 0) fail_msg("multipart [%s]: rc %d", body, rc);
    assert_json(out, expect, body);
    json_decref(out);
}

static void mp_err(const char *ctype, const char *body)
{
    json_t *out;
    int rc = mp(ctype, body, &out);
    if (rc != -TG_EPARSE) fail_msg("multipart [%s]: rc %d, expected -TG_EPARSE", body, rc);
    assert_null(out);
}

/* ---- tg_url_decode ---- */

static void test_url_decode(void **state)
{
    (void)state;
    size_t n = 0;
    char *s = tg_url_decode("a%20b+c%2B", 10, true, &n);
    assert_string_equal(s, "a b c+");
    assert_int_equal(n, 6);
    free(s);
    s = tg_url_decode("a%20b+c", 7, false, &n);
    assert_string_equal(s, "a b+c");
    free(s);
    s = tg_url_decode("%41%4a%4A%c3%B6", 15, true, &n);
    assert_string_equal(s, "AJJ\xc3\xb6");
    free(s);
    s = tg_url_decode("x%00y", 5, true, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "x\0y", 3);
    free(s);
    s = tg_url_decode("", 0, true, &n);
    assert_string_equal(s, "");
    assert_int_equal(n, 0);
    free(s);
    s = tg_url_decode("abc%41", 3, true, NULL); /* only the counted bytes */
    assert_non_null(s);
    assert_string_equal(s, "abc");
    free(s);
}

static void test_url_decode_bad_escapes(void **state)
{
    (void)state;
    const char *bad[] = {"%", "%4", "a%zz", "%4g", "%g4", "100%", "%%41", "%u0041", "%-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (tg_url_decode(bad[i], strlen(bad[i]), true, NULL))
            fail_msg("accepted bad escape '%s'", bad[i]);
    /* "%4" followed by bytes beyond the counted length is still truncated. */
    assert_null(tg_url_decode("%41", 2, true, NULL));
}

/* ---- urlencoded: shapes ---- */

static void test_form_flat(void **state)
{
    (void)state;
    form_ok("", "{}");
    form_ok("name=example", "{\"name\":\"example\"}");
    form_ok("name=example&protocol=http&port=80",
            "{\"name\":\"example\",\"protocol\":\"http\",\"port\":\"80\"}");
    /* No type inference: numbers and booleans stay strings. */
    form_ok("retries=5&enabled=true&x=null",
            "{\"retries\":\"5\",\"enabled\":\"true\",\"x\":\"null\"}");
}

static void test_form_decoding(void **state)
{
    (void)state;
    form_ok("na+me=J%C3%B6rg+M%C3%BCller", "{\"na me\":\"J\\u00f6rg M\\u00fcller\"}");
    form_ok("url=http%3A%2F%2Fexample.com%2Fa%3Fb%3Dc%26d",
            "{\"url\":\"http://example.com/a?b=c&d\"}");
    form_ok("a%26b=c%3Dd", "{\"a&b\":\"c=d\"}");
    form_ok("k=a=b=c", "{\"k\":\"a=b=c\"}");
    form_ok("k=%2B1", "{\"k\":\"+1\"}");
    /* Structure is read after decoding, as Kong does after nginx decodes the name. */
    form_ok("a%2Eb=1&c%5B%5D=2", "{\"a\":{\"b\":\"1\"},\"c\":[\"2\"]}");
}

static void test_form_missing_value_and_empty_pairs(void **state)
{
    (void)state;
    form_ok("flag", "{\"flag\":\"\"}");
    form_ok("flag&x=1", "{\"flag\":\"\",\"x\":\"1\"}");
    form_ok("x=", "{\"x\":\"\"}");
    form_ok("&&a=1&&&b=2&", "{\"a\":\"1\",\"b\":\"2\"}");
    form_ok("&", "{}");
    /* A pair without a name is dropped, as nginx does. */
    form_ok("=v&a=1", "{\"a\":\"1\"}");
    form_ok("config.flag", "{\"config\":{\"flag\":\"\"}}");
}

static void test_form_dotted_keys(void **state)
{
    (void)state;
    form_ok("config.key_names=a", "{\"config\":{\"key_names\":\"a\"}}");
    form_ok("service.id=123e4567-e89b-12d3-a456-426614174000",
            "{\"service\":{\"id\":\"123e4567-e89b-12d3-a456-426614174000\"}}");
    form_ok("a.b.c=1&a.b.d=2&a.e=3", "{\"a\":{\"b\":{\"c\":\"1\",\"d\":\"2\"},\"e\":\"3\"}}");
    /* A numeric dotted segment is an object key, not an index. */
    form_ok("a.1=x", "{\"a\":{\"1\":\"x\"}}");
}

static void test_form_repeated_keys(void **state)
{
    (void)state;
    form_ok("hosts=a&hosts=b", "{\"hosts\":[\"a\",\"b\"]}");
    form_ok("hosts=c&x=1&hosts=a&hosts=b", "{\"hosts\":[\"c\",\"a\",\"b\"],\"x\":\"1\"}");
    form_ok("config.key_names=a&config.key_names=b", "{\"config\":{\"key_names\":[\"a\",\"b\"]}}");
    form_ok("a=&a=", "{\"a\":[\"\",\"\"]}");
}

static void test_form_bracket_append(void **state)
{
    (void)state;
    form_ok("hosts[]=a", "{\"hosts\":[\"a\"]}");
    form_ok("hosts[]=a&hosts[]=b", "{\"hosts\":[\"a\",\"b\"]}");
    form_ok("config.key_names[]=x&config.key_names[]=y&config.hide_credentials=true",
            "{\"config\":{\"key_names\":[\"x\",\"y\"],\"hide_credentials\":\"true\"}}");
    /* Mixing plain repeats and [] keeps arrival order. */
    form_ok("a=1&a[]=2&a=3", "{\"a\":[\"1\",\"2\",\"3\"]}");
    form_ok("a[]=1&a=2", "{\"a\":[\"1\",\"2\"]}");
}

static void test_form_bracket_index(void **state)
{
    (void)state;
    form_ok("hosts[1]=a&hosts[2]=b", "{\"hosts\":[\"a\",\"b\"]}");
    form_ok("hosts[2]=b&hosts[1]=a", "{\"hosts\":[\"a\",\"b\"]}");
    form_ok("hosts[3]=c", "{\"hosts\":[null,null,\"c\"]}");
    form_ok("hosts[01]=a", "{\"hosts\":[\"a\"]}");
    form_ok("hosts[1]=a&hosts[]=b", "{\"hosts\":[\"a\",\"b\"]}");
    form_ok("config.key_names[2]=y&config.key_names[1]=x",
            "{\"config\":{\"key_names\":[\"x\",\"y\"]}}");
}

static void test_form_nested_combinations(void **state)
{
    (void)state;
    form_ok("a[1].b=x&a[1].c=y&a[2].b=z", "{\"a\":[{\"b\":\"x\",\"c\":\"y\"},{\"b\":\"z\"}]}");
    form_ok("a[1][2]=x", "{\"a\":[[null,\"x\"]]}");
    form_ok("a[2][]=x&a[2][]=y", "{\"a\":[null,[\"x\",\"y\"]]}");
    /* An intermediate [] addresses the first element (Kong's behaviour). */
    form_ok("t[].b=1&t[].c=2", "{\"t\":[{\"b\":\"1\",\"c\":\"2\"}]}");
    form_ok("config.limits.minute[]=5", "{\"config\":{\"limits\":{\"minute\":[\"5\"]}}}");
}

static void test_form_map_brackets(void **state)
{
    (void)state;
    form_ok("config.headers[x-foo]=1", "{\"config\":{\"headers\":{\"x-foo\":\"1\"}}}");
    form_ok("m[a.b]=1&m[c]=2", "{\"m\":{\"a.b\":\"1\",\"c\":\"2\"}}");
    form_ok("m[a].b=1&m.c=2", "{\"m\":{\"a\":{\"b\":\"1\"},\"c\":\"2\"}}");
    form_ok("m[1x]=1", "{\"m\":{\"1x\":\"1\"}}");
}

static void test_form_depth_limit(void **state)
{
    (void)state;
    /* 16 levels are fine, 17 are not, whether by dots or brackets. */
    form_ok("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p=1",
            "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":{\"k\":{\"l\":"
            "{\"m\":{\"n\":{\"o\":{\"p\":\"1\"}}}}}}}}}}}}}}}}");
    form_err("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q=1");
    form_ok("a[][][][][][][][][][][][][][][]=1", "{\"a\":[[[[[[[[[[[[[[[\"1\"]]]]]]]]]]]]]]]}");
    form_err("a[][][][][][][][][][][][][][][][]=1");
    form_err("a.b.c.d.e.f.g.h[1][1][1][1][1][1][1][1][1]=1");
}

/* ---- urlencoded: errors ---- */

static void test_form_scalar_object_conflicts(void **state)
{
    (void)state;
    form_err("a=1&a.b=2");
    form_err("a.b=2&a=1");
    form_err("config.x=1&config=2");
    form_err("a[k]=1&a=2");
    form_err("a=1&a[k]=2");
    form_err("a[]=1&a.b=2"); /* array, then object */
    form_err("a.b=1&a[]=2"); /* object, then array */
    form_err("a.b=1&a[1]=2");
    form_err("a[1]=x&a[1]=y"); /* the same index twice */
    form_err("a[1]=x&a[1].b=y");
    form_err("a[1].b=x&a[1]=y");
    form_err("a=1&a=2&a.b=3");
}

static void test_form_bad_escapes(void **state)
{
    (void)state;
    form_err("a=%");
    form_err("a=%zz");
    form_err("a=1&b=%4");
    form_err("%=1");
    form_err("k%2=1");
    /* jansson holds only UTF-8. */
    form_err("a=%FF");
    form_err("%C3%28=1");
}

static void test_form_index_bounds(void **state)
{
    (void)state;
    form_err("a[0]=x");
    form_err("a[10001]=x");
    form_err("a[99999999999999999999999]=x");
    json_t *out = NULL;
    const char *body = "a[10000]=x";
    assert_int_equal(tg_form_parse_urlencoded(body, strlen(body), &out), 0);
    json_t *a = json_object_get(out, "a");
    assert_int_equal(json_array_size(a), 10000);
    assert_true(json_is_null(json_array_get(a, 0)));
    assert_string_equal(json_string_value(json_array_get(a, 9999)), "x");
    json_decref(out);
}

static void test_form_padding_budget(void **state)
{
    (void)state;
    /* Many maximal indexes in one body would allocate without bound; it is refused. */
    char body[512] = "";
    for (int i = 0; i < 11; i++) {
        char pair[32];
        snprintf(pair, sizeof pair, "%sk%d[10000]=x", i ? "&" : "", i);
        strcat(body, pair);
    }
    form_err(body);
}

static void test_form_malformed_names(void **state)
{
    (void)state;
    const char *bad[] = {".a=1",  "a.=1",  "a..b=1",  "a[=1",   "a]=1", "a[1]b=1",
                         "[1]=1", "a[1=1", "a.[1]=1", "a.b]=1", ".=1",  "[]=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        form_err(bad[i]);
}

static void test_form_not_nul_terminated(void **state)
{
    (void)state;
    const char body[] = {'a', '=', '1', '&', 'b', '=', '2', '%'};
    json_t *out = NULL;
    assert_int_equal(tg_form_parse_urlencoded(body, 7, &out), 0);
    assert_json(out, "{\"a\":\"1\",\"b\":\"2\"}", "a=1&b=2");
    json_decref(out);
    assert_int_equal(tg_form_parse_urlencoded(NULL, 0, &out), 0);
    assert_json(out, "{}", "(null)");
    json_decref(out);
}

/* ---- multipart ---- */

static void test_multipart_basic(void **state)
{
    (void)state;
    mp_ok(CT,
          "--XyZ\r\n"
          "Content-Disposition: form-data; name=\"name\"\r\n"
          "\r\n"
          "example\r\n"
          "--XyZ\r\n"
          "Content-Disposition: form-data; name=\"config.key_names\"\r\n"
          "\r\n"
          "apikey\r\n"
          "--XyZ\r\n"
          "Content-Disposition: form-data; name=\"hosts\"\r\n"
          "\r\n"
          "a.example\r\n"
          "--XyZ\r\n"
          "Content-Disposition: form-data; name=\"hosts\"\r\n"
          "\r\n"
          "b.example\r\n"
          "--XyZ--\r\n",
          "{\"name\":\"example\",\"config\":{\"key_names\":\"apikey\"},"
          "\"hosts\":[\"a.example\",\"b.example\"]}");
}

static void test_multipart_key_rules(void **state)
{
    (void)state;
    mp_ok(CT,
          "--XyZ\r\nContent-Disposition: form-data; name=\"paths[]\"\r\n\r\n/a\r\n"
          "--XyZ\r\nContent-Disposition: form-data; name=\"paths[]\"\r\n\r\n/b\r\n"
          "--XyZ\r\nContent-Disposition: form-data; name=\"t[2].w\"\r\n\r\n5\r\n"
          "--XyZ\r\nContent-Disposition: form-data; name=\"a%20b\"\r\n\r\nraw\r\n"
          "--XyZ--",
          "{\"paths\":[\"/a\",\"/b\"],\"t\":[null,{\"w\":\"5\"}],\"a%20b\":\"raw\"}");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
               "--XyZ\r\nContent-Disposition: form-data; name=\"a.b\"\r\n\r\n2\r\n--XyZ--");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a..b\"\r\n\r\n1\r\n--XyZ--");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"\"\r\n\r\n1\r\n--XyZ--");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\xff\r\n--XyZ--");
}

static void test_multipart_boundary_forms(void **state)
{
    (void)state;
    const char *body = "--b: c'd(e)\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n"
                       "--b: c'd(e)--\r\n";
    mp_ok("multipart/form-data; boundary=\"b: c'd(e)\"", body, "{\"x\":\"1\"}");
    mp_ok("multipart/form-data;charset=utf-8;  BOUNDARY=\"b: c'd(e)\" ; foo=bar", body,
          "{\"x\":\"1\"}");
    mp_ok("Multipart/Form-Data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
          "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
          "Content-Disposition: form-data; name=\"k\"\r\n\r\nv\r\n"
          "------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n",
          "{\"k\":\"v\"}");
}

static void test_multipart_value_bytes_exact(void **state)
{
    (void)state;
    mp_ok(CT,
          "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n"
          "line1\r\nline2\r\n\r\n"
          "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n"
          "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\n"
          "x\r\n--XyZz\r\n--XyZ-\r\n-- XyZ\r\n--xyz"
          "\r\n--XyZ--",
          "{\"a\":\"line1\\r\\nline2\\r\\n\\r\\n\",\"b\":\"\","
          "\"c\":\"x\\r\\n--XyZz\\r\\n--XyZ-\\r\\n-- XyZ\\r\\n--xyz\"}");
}

static void test_multipart_file_part(void **state)
{
    (void)state;
    mp_ok(CT,
          "--XyZ\r\n"
          "Content-Disposition: form-data; name=\"cert\"; filename=\"c.pem\"\r\n"
          "Content-Type: application/x-pem-file\r\n"
          "\r\n"
          "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\r\n"
          "--XyZ\r\n"
          "Content-Disposition: form-data; name=\"key\"; filename=\"\"\r\n"
          "\r\n"
          "\r\n"
          "--XyZ--\r\n",
          "{\"cert\":\"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\","
          "\"key\":\"\"}");
}

static void test_multipart_header_variants(void **state)
{
    (void)state;
    mp_ok(CT,
          "preamble to ignore\r\n"
          "--XyZ  \t\r\n"
          "content-disposition:FORM-DATA;NAME=plain\r\n"
          "X-Other: whatever\r\n"
          "\r\n"
          "1\r\n"
          "--XyZ\r\n"
          "Content-Disposition: form-data; name=\"q\\\"uo\\\\te\"\r\n\r\n2\r\n"
          "--XyZ\r\n"
          "Content-Disposition: form-data; filename=\"f;x\"; name=\"semi;colon\"\r\n\r\n3\r\n"
          "--XyZ--\r\n"
          "epilogue, also ignored\r\n--XyZ\r\nnot a part",
          "{\"plain\":\"1\",\"q\\\"uo\\\\te\":\"2\",\"semi;colon\":\"3\"}");
    mp_ok(CT, "--XyZ--", "{}");
}

static void test_multipart_malformed(void **state)
{
    (void)state;
    const char *one = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--";
    mp_err("multipart/form-data", one);
    mp_err("multipart/form-data; boundary=", one);
    mp_err("multipart/form-data; boundary=\"\"", one);
    mp_err("multipart/form-data; boundary=\"XyZ", one);
    mp_err("multipart/form-data; boundary", one);
    mp_err("multipart/form-data; boundary=XyZ junk", one);
    mp_err("multipart/form-data; boundary="
           "12345678901234567890123456789012345678901234567890123456789012345678901",
           one);
    json_t *out;
    assert_int_equal(tg_form_parse_multipart(one, strlen(one), TG_STR_NULL, &out), -TG_EPARSE);
}

static void test_multipart_bad_bodies(void **state)
{
    (void)state;
    /* missing final boundary, in its several forms */
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\n");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ");
    /* no boundary at all, or a different one */
    mp_err(CT, "");
    mp_err(CT, "name=value");
    mp_err(CT, "--Other\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--Other--");
    /* bare LF instead of CRLF */
    mp_err(CT, "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\n1\n--XyZ--\n");
    mp_err(CT, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\n\n1\r\n--XyZ--");
}

static void test_multipart_bad_part_headers(void **state)
{
    (void)state;
    const char *bad[] = {
        /* no headers at all */
        "--XyZ\r\n\r\n1\r\n--XyZ--",
        /* headers never end */
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n1\r\n--XyZ--",
        /* no Content-Disposition */
        "--XyZ\r\nContent-Type: text/plain\r\n\r\n1\r\n--XyZ--",
        /* not form-data */
        "--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\n1\r\n--XyZ--",
        /* no name */
        "--XyZ\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\n1\r\n--XyZ--",
        /* two dispositions */
        ("--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n"
         "Content-Disposition: form-data; name=\"b\"\r\n\r\n1\r\n--XyZ--"),
        /* a line that is not a header */
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\ngarbage\r\n\r\n1\r\n--XyZ--",
        /* folded continuation line */
        "--XyZ\r\nContent-Disposition: form-data;\r\n name=\"a\"\r\n\r\n1\r\n--XyZ--",
        /* unterminated quoted name */
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--XyZ--",
        /* junk after a quoted value */
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"x\r\n\r\n1\r\n--XyZ--",
        /* parameter without a value */
        "--XyZ\r\nContent-Disposition: form-data; name\r\n\r\n1\r\n--XyZ--",
        /* an empty part between two boundaries */
        "--XyZ\r\n\r\n--XyZ--",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        mp_err(CT, bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_url_decode_bad_escapes),
        cmocka_unit_test(test_form_flat),
        cmocka_unit_test(test_form_decoding),
        cmocka_unit_test(test_form_missing_value_and_empty_pairs),
        cmocka_unit_test(test_form_dotted_keys),
        cmocka_unit_test(test_form_repeated_keys),
        cmocka_unit_test(test_form_bracket_append),
        cmocka_unit_test(test_form_bracket_index),
        cmocka_unit_test(test_form_nested_combinations),
        cmocka_unit_test(test_form_map_brackets),
        cmocka_unit_test(test_form_depth_limit),
        cmocka_unit_test(test_form_scalar_object_conflicts),
        cmocka_unit_test(test_form_bad_escapes),
        cmocka_unit_test(test_form_index_bounds),
        cmocka_unit_test(test_form_padding_budget),
        cmocka_unit_test(test_form_malformed_names),
        cmocka_unit_test(test_form_not_nul_terminated),
        cmocka_unit_test(test_multipart_basic),
        cmocka_unit_test(test_multipart_key_rules),
        cmocka_unit_test(test_multipart_boundary_forms),
        cmocka_unit_test(test_multipart_value_bytes_exact),
        cmocka_unit_test(test_multipart_file_part),
        cmocka_unit_test(test_multipart_header_variants),
        cmocka_unit_test(test_multipart_malformed),
        cmocka_unit_test(test_multipart_bad_bodies),
        cmocka_unit_test(test_multipart_bad_part_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
