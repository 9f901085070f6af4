/*
 * tls.h — TLS over a libuv stream, for servers and clients.
 *
 * A tg_tls_t is a transport: it runs OpenSSL on a pair of memory BIOs, reads
 * ciphertext from the stream it is attached to and writes ciphertext back with
 * uv_write, and talks plaintext to its user through callbacks. It knows
 * nothing about HTTP, so the HTTP server, upstream https and websocket clients
 * can all sit on it.
 *
 * Ownership: the caller owns the stream (usually a uv_tcp_t embedded in the
 * caller's connection object) and the SSL_CTX. While attached, the tg_tls_t
 * uses stream->data, so owners reach their object from the handle with
 * container_of rather than through ->data. Closing: uv_close the stream, then
 * tg_tls_free from the close callback (pending write callbacks have run by
 * then, with -TG_EIO).
 *
 * Threads: one tg_tls_t belongs to the loop of its stream; SSL_CTXs may be
 * shared between loops.
 */
#ifndef TG_TLS_H
#define TG_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct tg_tls tg_tls_t;

/* status: 0 when the handshake succeeded, otherwise -TG_ETLS, -TG_ECLOSED or -TG_EIO. */
typedef void (*tg_tls_handshake_cb)(tg_tls_t *t, int status, void *udata);
/*
 * status 0: `len` bytes of plaintext in `data` (valid during the call only).
 * status -TG_ECLOSED: the peer closed (close_notify or EOF); -TG_ETLS: protocol
 * error; -TG_EIO: socket error. No further reads follow a negative status.
 */
typedef void (*tg_tls_read_cb)(tg_tls_t *t, int status, const char *data, size_t len, void *udata);
/* status 0 once the ciphertext was handed to the kernel, else -TG_EIO. */
typedef void (*tg_tls_write_cb)(tg_tls_t *t, int status, void *arg);

/*
 * Attaches a new TLS session to `stream` (connected, not reading). `udata` is
 * passed to the handshake and read callbacks. Returns NULL when OpenSSL
 * cannot create the session (logged).
 */
tg_tls_t *tg_tls_new(SSL_CTX *ctx, uv_stream_t *stream, bool is_server, void *udata);

/* Client side: sets SNI and the name the peer certificate must match. */
int tg_tls_set_hostname(tg_tls_t *t, const char *host);

/*
 * Starts reading and runs the handshake (a client sends its hello at once);
 * `cb` runs exactly once. Returns 0 or -TG_EIO when reading cannot start.
 */
int tg_tls_handshake(tg_tls_t *t, tg_tls_handshake_cb cb);

/*
 * Delivers plaintext to `cb` until tg_tls_read_stop. Plaintext already
 * decrypted or buffered is delivered before this returns when called outside
 * a tg_tls callback, so call it last. Returns 0, or -TG_ETLS before the
 * handshake completed.
 */
int tg_tls_read_start(tg_tls_t *t, tg_tls_read_cb cb);
/* Stops delivering plaintext (and reading the socket); data stays buffered. */
void tg_tls_read_stop(tg_tls_t *t);

/*
 * Encrypts the buffers at once (they may be freed on return) and queues the
 * ciphertext; `cb` (may be NULL) runs when it was written. Returns 0, or
 * -TG_ETLS before the handshake completed or after a failure, -TG_EIO when the
 * write cannot be queued (then `cb` does not run).
 */
int tg_tls_write(tg_tls_t *t, const uv_buf_t *bufs, unsigned nbufs, tg_tls_write_cb cb, void *arg);

/* Queues a close_notify alert; `cb` as for tg_tls_write. */
int tg_tls_shutdown(tg_tls_t *t, tg_tls_write_cb cb, void *arg);

/* Bytes of ciphertext queued on the stream and not yet written. */
size_t tg_tls_write_queue_size(const tg_tls_t *t);

/* The OpenSSL session (peer certificate, ALPN, version); owned by `t`. */
SSL *tg_tls_ssl(tg_tls_t *t);

/* Frees the session; the stream must be closed or closing. NULL is fine. */
void tg_tls_free(tg_tls_t *t);

/*
 * Server context (TLS 1.2 and later) with the PEM certificate chain and key.
 * Returns NULL and a message in err on failure. Caller frees with SSL_CTX_free.
 */
SSL_CTX *tg_tls_server_ctx_new(const char *cert_pem_path, const char *key_pem_path, char *err,
                               size_t errlen);

/*
 * Client context (TLS 1.2 and later). With `verify`, peers must present a
 * certificate chaining to `ca_path` (a PEM file or a hashed directory) or, when
 * NULL, to the system store. Returns NULL on failure (logged).
 */
SSL_CTX *tg_tls_client_ctx_new(const char *ca_path, bool verify);

#endif
