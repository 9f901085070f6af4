/*
 * http_server.h — HTTP/1.1 server on a libuv loop, over plain TCP or TLS.
 *
 * One listener per server. Each connection carries one request at a time:
 * the head is parsed by http.h, the body is read whole (de-chunked, bounded by
 * max_body_size) and the request is handed to on_request; the next pipelined
 * request is only looked at once the response has been written. Requests the
 * parser refuses, oversized bodies and timeouts are answered by the server
 * itself with Kong's JSON error body and the connection is closed.
 *
 * Ownership: the server owns its connections and their buffers. A request
 * (tg_http_request_t, every string in it, the headers and the body) belongs to
 * its exchange and stays valid until tg_http_respond is called for it, even if
 * the client has gone away meanwhile. The caller keeps ownership of the loop
 * and of opts->ssl_ctx (the server holds a reference while it lives).
 *
 * Threads: everything, tg_http_respond included, runs on the loop's thread.
 * To answer from another thread, hand the exchange back with uv_async.
 */
#ifndef TG_HTTP_SERVER_H
#define TG_HTTP_SERVER_H

#include "http.h"
#include "str.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct tg_http_request {          /* valid until tg_http_respond */
    tg_str_t method, target, path, query; /* path/query still percent-encoded */
    int minor_version;
    tg_http_header_t *headers;
    size_t nheaders;
    const char *body; /* whole body, de-chunked, NUL-terminated copy (body[body_len]==0) */
    size_t body_len;
    bool keep_alive, tls;
    char peer_addr[64]; /* "ip:port", "[ip6]:port" for IPv6 */
} tg_http_request_t;

typedef struct tg_http_server tg_http_server_t;
typedef struct tg_http_exchange tg_http_exchange_t; /* one request in flight */

typedef void (*tg_http_request_cb)(tg_http_exchange_t *x, const tg_http_request_t *req,
                                   void *udata);

typedef struct tg_http_server_opts {
    size_t max_head_size;   /* 0 → 64 KiB */
    size_t max_headers;     /* 0 → 100 */
    size_t max_uri;         /* 0 → 8 KiB */
    uint64_t max_body_size; /* 0 → 10 MiB; larger Content-Length → 413 before reading the body */
    unsigned header_timeout_ms; /* 0 → 10000: whole head must arrive in time, else 408 + close */
    unsigned body_timeout_ms;   /* 0 → 60000 between body reads (and response writes) */
    unsigned idle_timeout_ms;   /* 0 → 60000 keep-alive idle */
    SSL_CTX *ssl_ctx;           /* NULL = plain TCP; otherwise TLS server with this context */
    const char *server_header;  /* value of Server:, e.g. "tollgate/0.1.0"; NULL = none (copied) */
    tg_http_request_cb on_request;
    void *udata;
} tg_http_server_opts_t;

/*
 * Creates a server on `loop` (not yet listening). opts is copied. Returns NULL
 * when opts->on_request is missing.
 */
tg_http_server_t *tg_http_server_create(uv_loop_t *loop, const tg_http_server_opts_t *opts);

/*
 * Binds and listens on host:port (an address or a name; port 0 picks a free
 * port). Call once per server. Returns 0, -TG_EINVAL for an unresolvable host
 * or -TG_EIO when bind/listen fails (logged).
 */
int tg_http_server_listen(tg_http_server_t *s, const char *host, int port);

/* The bound port (useful after listening on port 0), or -TG_EINVAL. */
int tg_http_server_port(tg_http_server_t *s);

/*
 * Stops accepting and closes connections that have no request in flight;
 * those with one are closed once their response is written. The server frees
 * itself when its last handle has closed; do not use `s` after this call.
 */
void tg_http_server_close(tg_http_server_t *s);

/*
 * Sends the response to `x` and frees `x`: call exactly once per exchange, on
 * the loop thread, possibly long after on_request returned. Adds Date, Server
 * (unless present in `headers`), Content-Length and Connection; drops any
 * Content-Length, Transfer-Encoding or Connection given in `headers` (a
 * "Connection: close" there closes the connection after the response), and
 * headers whose name or value could split the response. HEAD requests get the
 * Content-Length of `body` but no body. Everything is copied before return.
 * If the client disconnected meanwhile this only frees `x`.
 */
void tg_http_respond(tg_http_exchange_t *x, int status, const tg_http_header_t *headers,
                     size_t nheaders, const char *body, size_t body_len);

/* tg_http_status_reason(int status) is declared in http.h. */

#endif
