/*
 * stream.h — one TCP connection of the data plane, plain or TLS, behind one interface.
 *
 * The proxy talks to clients and upstreams the same way whether TLS is in between or not:
 * connect or accept, optionally run a TLS handshake, then read plaintext through a callback
 * and queue plaintext writes. Reads are delivered from a per-thread buffer (plain TCP) or the
 * TLS layer's buffer: the bytes are valid during the callback only, so owners copy what they
 * keep — which lets every connection of a worker share one read buffer instead of holding
 * 64 KiB each while idle. Writes copy their input (plain TCP) or encrypt it at once (TLS), so
 * callers may free their buffers as soon as tg_stream_write returns.
 *
 * Ownership: the owner embeds the tg_stream_t and frees it only from the close callback
 * (libuv owns the handle until then). Threads: a stream belongs to the loop it was created
 * on and is used only from that loop's thread.
 */
#ifndef TG_STREAM_H
#define TG_STREAM_H

#include "tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct tg_stream tg_stream_t;
struct tg_stream_done;

/* status 0: `len` plaintext bytes (valid during the call). -TG_ECLOSED: the peer closed;
 * -TG_EIO / -TG_ETLS: the connection failed. No reads follow a negative status. */
typedef void (*tg_stream_read_cb)(tg_stream_t *s, int status, const char *data, size_t len);
/* status 0, or a negative -TG_E* code (connect refused, handshake failed, write failed). */
typedef void (*tg_stream_status_cb)(tg_stream_t *s, int status);
typedef void (*tg_stream_write_cb)(tg_stream_t *s, int status, void *arg);
typedef void (*tg_stream_close_cb)(tg_stream_t *s);

struct tg_stream {
    uv_tcp_t tcp; /* with TLS attached, tcp.data belongs to the TLS layer */
    tg_tls_t *tls;
    void *owner;
    tg_stream_read_cb on_read;
    tg_stream_status_cb on_status; /* pending connect or handshake */
    tg_stream_close_cb on_close;
    uv_connect_t connect_req;
    bool reading, closing, failed;
    int connect_errno; /* the libuv error of a failed connect (UV_ECONNREFUSED...) */
    /* Plain TCP avoids epoll_ctl calls per request (see stream.c): reads pause lazily, and
     * writes the kernel takes at once complete from the `later` idle handle. */
    bool uv_reading, later_init;
    int held_status; /* 0, or -TG_ECLOSED / -TG_EIO received while paused */
    char *held;      /* bytes received while paused */
    size_t held_len;
    struct tg_stream_done *done; /* completed writes whose callbacks are due, in order */
    unsigned ndone, done_cap;
    unsigned uv_writes; /* writes handed to libuv whose callback has not run */
    int open_handles;   /* while closing */
    uv_idle_t later;
};

/* Initialises `s` on `loop` and accepts a pending connection of `server`. 0 or -TG_EIO. */
int tg_stream_accept(tg_stream_t *s, uv_loop_t *loop, uv_stream_t *server, void *owner);

/*
 * Initialises `s` on `loop` and connects to `addr`; `cb` runs once with 0 or -TG_EIO
 * (s->connect_errno says why). Returns 0, or -TG_EIO when the connect cannot start (then
 * the stream must still be closed, and `cb` does not run).
 */
int tg_stream_connect(tg_stream_t *s, uv_loop_t *loop, const struct sockaddr *addr, void *owner,
                      tg_stream_status_cb cb);

/*
 * Attaches TLS (server side when `is_server`) and runs the handshake; `cb` runs once.
 * `sni` (client side, may be NULL) is sent as the server name. 0 or a negative code.
 */
int tg_stream_start_tls(tg_stream_t *s, SSL_CTX *ctx, bool is_server, const char *sni,
                        tg_stream_status_cb cb);

/* The server name the client asked for (TLS server side), or NULL. */
const char *tg_stream_sni(tg_stream_t *s);

/* Starts or stops delivering plaintext to `cb`; starting again re-uses the last cb. Bytes
 * (at most one read) that arrive while stopped are delivered after the next start, from the
 * loop, never from within tg_stream_read_start. */
int tg_stream_read_start(tg_stream_t *s, tg_stream_read_cb cb);
void tg_stream_read_stop(tg_stream_t *s);

/*
 * Queues the bytes of `bufs` (copied or encrypted before return); `cb` (may be NULL) runs
 * once they reached the kernel or the connection failed. Returns 0 or -TG_EIO (then `cb`
 * does not run).
 */
int tg_stream_write(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                    void *arg);

/*
 * Like tg_stream_write, but when the kernel takes every byte at once (plain TCP with nothing
 * queued: the usual case) returns 1 and `cb` does not run, so the caller can go on at once
 * instead of waiting for the loop to deliver the callback. 0 (cb runs later) or -TG_EIO
 * otherwise, as tg_stream_write.
 */
int tg_stream_write_now(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                        void *arg);

/* Bytes queued for writing and not yet accepted by the kernel. */
size_t tg_stream_write_queue(const tg_stream_t *s);

/* Closes the connection (pending writes fail); `cb` runs once libuv released the handle. */
void tg_stream_close(tg_stream_t *s, tg_stream_close_cb cb);

/* The peer's address as text ("127.0.0.1"); "" when unknown. */
void tg_stream_peer_ip(tg_stream_t *s, char *out, size_t len);

#endif
