/*
 * http_chunked.h — incremental decoder for the chunked transfer coding
 * (RFC 9112 §7.1).
 *
 * Feed it bytes as they arrive, in pieces of any size (one byte at a time is
 * fine); it hands back spans of chunk data that point into the bytes you fed,
 * so nothing is copied. Chunk extensions are checked against the grammar and
 * dropped; trailer fields are checked like header fields and dropped. Limits:
 * at most 16 hex digits of chunk size, TG_HTTP_CHUNK_LINE_MAX bytes per size
 * line, trailers bounded by the caller's tg_http_limits (size and count).
 *
 * The decoder is a small value type owned by the caller; it allocates nothing
 * and is used from one thread at a time.
 */
#ifndef TG_HTTP_CHUNKED_H
#define TG_HTTP_CHUNKED_H

#include "http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_HTTP_CHUNK_LINE_MAX 4096

typedef struct tg_http_chunked {
    uint64_t remaining; /* data bytes left in the current chunk */
    size_t line;        /* bytes in the current size or trailer line */
    size_t trailer_bytes, trailers;
    size_t max_trailer_bytes, max_trailers;
    unsigned digits;
    int state;
} tg_http_chunked_t;

/* Prepares `c` for one message body; trailers are bounded by `lim`. */
void tg_http_chunked_init(tg_http_chunked_t *c, const tg_http_limits_t *lim);

/*
 * Consumes bytes from buf[0..len) until it has one span of chunk data, needs
 * more input, or reaches the end of the body. Sets *consumed to the bytes used
 * and *data to the data span found (len 0 when none; it points into buf).
 * Call again with the rest of the input while *consumed < len and the body is
 * not done; bytes after the end of the body are left unconsumed (they are the
 * next message). Returns 0, or -TG_EPARSE on a malformed body (answer 400) and
 * -TG_ETOOBIG when the size line or trailers exceed their limits; after an
 * error the decoder must not be fed again.
 */
int tg_http_chunked_feed(tg_http_chunked_t *c, const char *buf, size_t len, size_t *consumed,
                         tg_str_t *data);

/* True once the last chunk and the trailer section have been consumed. */
bool tg_http_chunked_done(const tg_http_chunked_t *c);

#endif
