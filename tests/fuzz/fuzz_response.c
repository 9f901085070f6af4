/*
 * fuzz_response.c — libFuzzer target for tg_http_parse_response and
 * tg_http_response_body.
 */
#include "error.h"
#include "http.h"

#include <stdint.h>
#include <stdlib.h>

static const tg_http_limits_t lim = {.max_head_size = 4096, .max_headers = 32, .max_uri = 1024};

static void check(int ok)
{
    if (!ok) abort();
}

static int inside(tg_str_t s, const char *buf, size_t len)
{
    return s.len == 0 || (s.p >= buf && s.p + s.len <= buf + len);
}

static void check_head(const tg_http_response_head_t *r, const char *buf, size_t len)
{
    check(r->head_len <= len && r->nheaders <= lim.max_headers);
    check(r->status >= 100 && r->status <= 999);
    check(r->minor_version == 0 || r->minor_version == 1);
    check(inside(r->reason, buf, r->head_len));
    check(!(r->chunked && r->content_length >= 0));
    for (size_t i = 0; i < r->nheaders; i++) {
        check(tg_http_is_token(r->headers[i].name));
        check(tg_http_is_field_value(r->headers[i].value));
        check(inside(r->headers[i].value, buf, r->head_len));
    }
    enum tg_http_body_kind k = tg_http_response_body(r, TG_STR("GET"));
    if (k == TG_HTTP_BODY_EOF) check(!r->keep_alive);
    if (k == TG_HTTP_BODY_LENGTH) check(r->content_length >= 0);
    check(tg_http_response_body(r, TG_STR("HEAD")) == TG_HTTP_BODY_NONE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    tg_http_header_t hdrs[32];
    tg_http_response_head_t r;
    int rc = tg_http_parse_response(buf, size, 0, &lim, hdrs, &r);
    if (rc == 0)
        check_head(&r, buf, size);
    else
        check(rc == -TG_EAGAIN || rc == -TG_EPARSE || rc == -TG_ETOOBIG);

    size_t split = size ? data[0] % size : 0;
    tg_http_response_head_t r1, r2;
    if (split == 0 || tg_http_parse_response(buf, split, 0, &lim, hdrs, &r1) != -TG_EAGAIN)
        return 0;
    int rc2 = tg_http_parse_response(buf, size, split, &lim, hdrs, &r2);
    check(rc2 == rc || (rc2 == -TG_EAGAIN && rc != 0));
    return 0;
}
