/*
 * fuzz_request.c — libFuzzer target for tg_http_parse_request.
 *
 * Besides crashes and sanitizer reports it checks what callers rely on: the
 * results point inside the input, framing is never ambiguous, errors carry a
 * status, and feeding the input in two parts (with the prev_len hint) never
 * hides a result the one-shot parse finds.
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
    if (s.len == 0) return 1; /* empty views may point at a literal */
    return s.p >= buf && s.p + s.len <= buf + len;
}

static void check_head(const tg_http_request_head_t *r, const char *buf, size_t len)
{
    check(r->head_len <= len && r->head_len <= lim.max_head_size);
    check(r->nheaders <= lim.max_headers);
    check(tg_http_is_token(r->method));
    check(inside(r->method, buf, r->head_len) && inside(r->target, buf, r->head_len));
    check(inside(r->query, buf, r->head_len));
    check(r->target.len > 0 && r->target.len <= lim.max_uri);
    check(r->path.len > 0 || tg_str_eq_lit(r->method, "CONNECT"));
    check(r->minor_version == 0 || r->minor_version == 1);
    check(!(r->chunked && r->content_length >= 0));
    check(r->content_length >= -1);
    for (size_t i = 0; i < r->nheaders; i++) {
        check(tg_http_is_token(r->headers[i].name));
        check(tg_http_is_field_value(r->headers[i].value));
        check(inside(r->headers[i].name, buf, r->head_len));
        check(inside(r->headers[i].value, buf, r->head_len));
    }
}

static void check_error(int rc, int status)
{
    if (rc == -TG_EPARSE)
        check(status == 400);
    else if (rc == -TG_ETOOBIG)
        check(status == 414 || status == 431);
    else if (rc == -TG_EUNSUPPORTED)
        check(status == 501 || status == 505);
    else
        check(0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    tg_http_header_t hdrs[32];
    tg_http_request_head_t r;
    int rc = tg_http_parse_request(buf, size, 0, &lim, hdrs, &r);
    if (rc == 0)
        check_head(&r, buf, size);
    else if (rc != -TG_EAGAIN)
        check_error(rc, r.status);

    /* The same bytes in two reads, as a server sees them. */
    size_t split = size ? data[0] % size : 0;
    tg_http_request_head_t r1, r2;
    int rc1 = tg_http_parse_request(buf, split, 0, &lim, hdrs, &r1);
    if (rc1 != -TG_EAGAIN || split == 0) return 0;
    int rc2 = tg_http_parse_request(buf, size, split, &lim, hdrs, &r2);
    check(rc2 == rc || (rc2 == -TG_EAGAIN && rc != 0));
    if (rc2 == 0) check(r2.head_len == r.head_len && r2.nheaders == r.nheaders);
    return 0;
}
