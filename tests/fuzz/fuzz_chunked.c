/*
 * fuzz_chunked.c — libFuzzer target for the chunked decoder.
 *
 * Decodes the input in one piece and again in pieces whose sizes come from
 * the input itself; both must agree on the data, the error, where it stopped
 * and whether the body ended, and every data span must lie in what was fed.
 */
#include "error.h"
#include "http_chunked.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const tg_http_limits_t lim = {.max_head_size = 1024, .max_headers = 8, .max_uri = 1024};

static void check(int ok)
{
    if (!ok) abort();
}

struct result {
    unsigned char *data;
    size_t len, consumed;
    int rc;
    int done;
};

/* Feeds `size` bytes in pieces of 1..16 bytes chosen by `seed` (0 = all at once). */
static void decode(const char *buf, size_t size, const uint8_t *seed, size_t nseed,
                   struct result *out)
{
    tg_http_chunked_t c;
    tg_http_chunked_init(&c, &lim);
    size_t off = 0, k = 0;
    out->len = 0;
    out->rc = 0;
    while (off < size && !tg_http_chunked_done(&c)) {
        size_t avail = size - off;
        if (nseed) {
            size_t piece = (size_t)(seed[k++ % nseed] % 16) + 1;
            if (piece < avail) avail = piece;
        }
        size_t used;
        tg_str_t d;
        out->rc = tg_http_chunked_feed(&c, buf + off, avail, &used, &d);
        check(used <= avail);
        check(d.len == 0 || (d.p >= buf + off && d.p + d.len <= buf + off + used));
        memcpy(out->data + out->len, d.p, d.len);
        out->len += d.len;
        off += used;
        if (out->rc < 0) break;
        /* No progress is only allowed at the end of the body. */
        check(used > 0 || tg_http_chunked_done(&c));
    }
    out->consumed = off;
    out->done = tg_http_chunked_done(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t nseed = data[0] % 8;
    if (size < 1 + nseed) return 0;
    const uint8_t *seed = data + 1;
    const char *body = (const char *)data + 1 + nseed;
    size_t n = size - 1 - nseed;

    struct result whole = {.data = malloc(n + 1)}, parts = {.data = malloc(n + 1)};
    decode(body, n, NULL, 0, &whole);
    /* With no seed bytes: one byte at a time. */
    decode(body, n, nseed ? seed : (const uint8_t *)"", nseed ? nseed : 1, &parts);
    check(whole.rc == parts.rc && whole.consumed == parts.consumed);
    check(whole.done == parts.done && whole.len == parts.len);
    check(memcmp(whole.data, parts.data, whole.len) == 0);
    check(whole.rc == 0 || whole.rc == -TG_EPARSE || whole.rc == -TG_ETOOBIG);
    free(whole.data);
    free(parts.data);
    return 0;
}
