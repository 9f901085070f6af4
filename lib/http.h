/*
 * http.h — strict, zero-copy HTTP/1.1 message head parsers (RFC 9112).
 *
 * Parses request heads (server side) and response heads (the proxy's upstream
 * side). The parsers never allocate and never copy: every tg_str_t in a result
 * points into the caller's buffer, and headers are written into an array the
 * caller provides, so results stay valid exactly as long as that buffer does.
 * Bodies are decoded by http_chunked.h (chunked) or by counting Content-Length.
 *
 * Strictness is the point: this parser is the gateway's security boundary, so
 * anything two implementations could read differently is refused rather than
 * repaired — bare CR or LF, obs-fold, whitespace before a colon, control
 * characters, Transfer-Encoding together with Content-Length, duplicate
 * Content-Length, unknown codings. Each refusal carries the HTTP status the
 * server should answer with (400, 414, 431, 501, 505; 502 for responses).
 *
 * Stateless and reentrant: safe on any thread.
 */
#ifndef TG_HTTP_H
#define TG_HTTP_H

#include "str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct tg_http_header {
    tg_str_t name;
    tg_str_t value; /* optional whitespace around the value is trimmed */
} tg_http_header_t;

/* Caller-chosen bounds; every field must be non-zero. */
typedef struct tg_http_limits {
    size_t max_head_size; /* whole head incl. the start line and the blank line → 431 */
    size_t max_headers;   /* header lines; also bounds chunked trailers → 431 */
    size_t max_uri;       /* request-target bytes → 414 */
} tg_http_limits_t;

typedef struct tg_http_request_head {
    tg_str_t method;
    tg_str_t target; /* exactly as received */
    tg_str_t path;   /* target before '?', still percent-encoded ("/" for "http://h") */
    tg_str_t query;  /* after '?', empty when absent */
    int minor_version;
    tg_http_header_t *headers; /* the caller's array passed to the parser */
    size_t nheaders;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* 1.1 unless "Connection: close"; 1.0 only with keep-alive */
    bool expect_continue;   /* HTTP/1.1 "Expect: 100-continue" */
    size_t head_len;        /* bytes consumed by the head, blank line included */
    int status;             /* after an error: the status to answer with */
} tg_http_request_head_t;

typedef struct tg_http_response_head {
    int minor_version;
    int status;
    tg_str_t reason;
    tg_http_header_t *headers;
    size_t nheaders;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* the final transfer coding is chunked */
    bool keep_alive;        /* false when the body is delimited by close */
    size_t head_len;
    int error_status; /* after an error: 502, what a proxy answers with */
} tg_http_response_head_t;

/* How a response body is delimited (RFC 9112 §6.3). */
enum tg_http_body_kind {
    TG_HTTP_BODY_NONE,    /* HEAD, 1xx, 204, 304, 2xx to CONNECT */
    TG_HTTP_BODY_LENGTH,  /* content_length bytes */
    TG_HTTP_BODY_CHUNKED, /* decode with http_chunked.h */
    TG_HTTP_BODY_EOF,     /* until the server closes */
};

/*
 * Parses a request head from buf[0..len). `headers` must have room for
 * lim->max_headers entries. `prev_len` is the buffer length at the previous
 * call for this same request (0 the first time): when the new bytes cannot
 * have completed a line the call returns at once, so feeding a head one byte
 * at a time costs linear, not quadratic, time.
 *
 * The request-target may hold RFC 3986 characters plus "{|}" ('#' and
 * non-ASCII bytes are refused) and its path's %-escapes must be well-formed.
 * HTTP/1.1 requests need exactly one Host header.
 *
 * Returns 0 when the head is complete (out->head_len bytes consumed; the body,
 * if any, follows), -TG_EAGAIN when more bytes are needed, or on a malformed
 * request -TG_EPARSE (400), -TG_ETOOBIG (414 or 431) or -TG_EUNSUPPORTED
 * (501 or 505), with out->status set to the status to answer with.
 */
int tg_http_parse_request(const char *buf, size_t len, size_t prev_len, const tg_http_limits_t *lim,
                          tg_http_header_t *headers, tg_http_request_head_t *out);

/*
 * Parses a response head; same contract as tg_http_parse_request. Errors are
 * -TG_EPARSE or -TG_ETOOBIG with out->error_status = 502. 1xx heads parse
 * like any other; skipping interim responses is the caller's job.
 */
int tg_http_parse_response(const char *buf, size_t len, size_t prev_len,
                           const tg_http_limits_t *lim, tg_http_header_t *headers,
                           tg_http_response_head_t *out);

/* How the body of `r`, answering a request with `request_method`, is framed. */
enum tg_http_body_kind tg_http_response_body(const tg_http_response_head_t *r,
                                             tg_str_t request_method);

/* First header named `name` (ASCII case-insensitive), or NULL. */
const tg_http_header_t *tg_http_header_find(const tg_http_header_t *headers, size_t n,
                                            const char *name);
/* How many headers are named `name` (ASCII case-insensitive). */
size_t tg_http_header_count(const tg_http_header_t *headers, size_t n, const char *name);

/* Character classes of RFC 9110/3986, shared with the chunked decoder. */
enum {
    TG_HTTP_CC_TOKEN = 1, /* tchar */
    TG_HTTP_CC_VALUE = 2, /* field-vchar, obs-text, SP, HTAB */
    TG_HTTP_CC_URI = 4,   /* allowed in a request-target */
    TG_HTTP_CC_HEX = 8,
};
extern const unsigned char tg_http_cc[256];

static inline bool tg_http_cc_is(unsigned char c, unsigned cls)
{
    return (tg_http_cc[c] & cls) != 0;
}

/*
 * Whether a token (every header name the parsers return is one) equals a lower-case literal
 * made of letters, digits and '-', case-insensitively. Eight bytes at a time: OR-ing 0x20
 * into a token byte yields such a literal byte only from that byte or its upper-case
 * letter, so this is exact for tokens, and only for tokens (a CR would equal '-').
 */
static inline bool tg_http_token_is(tg_str_t name, tg_str_t lower)
{
    if (name.len != lower.len) return false;
    const uint64_t caps = 0x2020202020202020ULL;
    size_t i = 0;
    for (; i + 8 <= name.len; i += 8) {
        uint64_t a, b;
        memcpy(&a, name.p + i, 8);
        memcpy(&b, lower.p + i, 8);
        if ((a | caps) != b) return false;
    }
    for (; i < name.len; i++)
        if (((unsigned char)name.p[i] | 0x20) != (unsigned char)lower.p[i]) return false;
    return true;
}

/* True when `s` is a non-empty RFC 9110 token (methods, header names). */
bool tg_http_is_token(tg_str_t s);
/* True when `s` may be sent as a field value (no CR, LF, NUL or other controls). */
bool tg_http_is_field_value(tg_str_t s);

/* Standard reason phrase ("Not Found"); "Unknown" for unregistered codes. */
const char *tg_http_status_reason(int status);

#endif
