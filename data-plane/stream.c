/*
 * stream.c — plain TCP and TLS connections behind one interface; see stream.h.
 */
#include "stream.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* One read buffer per thread: libuv calls alloc and read back to back, and the bytes are
 * consumed (copied or parsed) before the read callback returns. */
#define READ_BUF_SIZE 65536
static _Thread_local char read_buf[READ_BUF_SIZE];

struct plain_write {
    uv_write_t req;
    tg_stream_t *s;
    tg_stream_write_cb cb;
    void *arg;
    char data[];
};

struct tls_write {
    tg_stream_t *s;
    tg_stream_write_cb cb;
    void *arg;
};

static tg_stream_t *from_tcp(uv_handle_t *h)
{
    return (tg_stream_t *)((char *)h - offsetof(tg_stream_t, tcp));
}

static void init_common(tg_stream_t *s, void *owner)
{
    memset(s, 0, sizeof(*s));
    s->owner = owner;
}

int tg_stream_accept(tg_stream_t *s, uv_loop_t *loop, uv_stream_t *server, void *owner)
{
    init_common(s, owner);
    uv_tcp_init(loop, &s->tcp);
    if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) return -TG_EIO;
    uv_tcp_nodelay(&s->tcp, 1);
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    tg_stream_t *s = (tg_stream_t *)((char *)req - offsetof(tg_stream_t, connect_req));
    if (s->closing) return;
    s->connect_errno = status;
    if (status == 0)
        uv_tcp_nodelay(&s->tcp, 1);
    else
        s->failed = true;
    s->on_status(s, status == 0 ? 0 : -TG_EIO);
}

int tg_stream_connect(tg_stream_t *s, uv_loop_t *loop, const struct sockaddr *addr, void *owner,
                      tg_stream_status_cb cb)
{
    init_common(s, owner);
    uv_tcp_init(loop, &s->tcp);
    s->on_status = cb;
    int rc = uv_tcp_connect(&s->connect_req, &s->tcp, addr, on_connect);
    if (rc != 0) {
        s->connect_errno = rc;
        s->failed = true;
        return -TG_EIO;
    }
    return 0;
}

static void on_handshake(tg_tls_t *t, int status, void *udata)
{
    tg_stream_t *s = udata;
    if (s->closing) return;
    if (status != 0) s->failed = true;
    s->on_status(s, status);
}

int tg_stream_start_tls(tg_stream_t *s, SSL_CTX *ctx, bool is_server, const char *sni,
                        tg_stream_status_cb cb)
{
    s->tls = tg_tls_new(ctx, (uv_stream_t *)&s->tcp, is_server, s);
    if (!s->tls) return -TG_ETLS;
    if (sni && *sni && tg_tls_set_hostname(s->tls, sni) != 0) return -TG_ETLS;
    s->on_status = cb;
    return tg_tls_handshake(s->tls, on_handshake);
}

const char *tg_stream_sni(tg_stream_t *s)
{
    if (!s->tls) return NULL;
    return SSL_get_servername(tg_tls_ssl(s->tls), TLSEXT_NAMETYPE_host_name);
}

/* ---------------------------------------------------------------- reading */

static void alloc_plain(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_plain_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    tg_stream_t *s = from_tcp((uv_handle_t *)h);
    if (nread == 0 || s->closing) return;
    if (nread > 0) {
        s->on_read(s, 0, buf->base, (size_t)nread);
        return;
    }
    uv_read_stop(h);
    s->reading = false;
    if (nread != UV_EOF) s->failed = true;
    s->on_read(s, nread == UV_EOF ? -TG_ECLOSED : -TG_EIO, NULL, 0);
}

static void on_tls_read(tg_tls_t *t, int status, const char *data, size_t len, void *udata)
{
    tg_stream_t *s = udata;
    if (s->closing) return;
    if (status != 0) {
        s->reading = false;
        if (status != -TG_ECLOSED) s->failed = true;
    }
    s->on_read(s, status, data, len);
}

int tg_stream_read_start(tg_stream_t *s, tg_stream_read_cb cb)
{
    if (cb) s->on_read = cb;
    if (s->reading || s->closing || s->failed) return s->failed ? -TG_EIO : 0;
    s->reading = true;
    int rc = s->tls ? tg_tls_read_start(s->tls, on_tls_read)
                    : uv_read_start((uv_stream_t *)&s->tcp, alloc_plain, on_plain_read);
    if (rc != 0) {
        s->reading = false;
        return -TG_EIO;
    }
    return 0;
}

void tg_stream_read_stop(tg_stream_t *s)
{
    if (!s->reading || s->closing) return;
    s->reading = false;
    if (s->tls)
        tg_tls_read_stop(s->tls);
    else
        uv_read_stop((uv_stream_t *)&s->tcp);
}

/* ---------------------------------------------------------------- writing */

static void on_plain_written(uv_write_t *req, int status)
{
    struct plain_write *w = (struct plain_write *)req;
    tg_stream_t *s = w->s;
    if (status < 0) s->failed = true;
    if (w->cb && !s->closing) w->cb(s, status < 0 ? -TG_EIO : 0, w->arg);
    free(w);
}

static void on_tls_written(tg_tls_t *t, int status, void *arg)
{
    struct tls_write *w = arg;
    tg_stream_t *s = w->s;
    if (status < 0) s->failed = true;
    if (w->cb && !s->closing) w->cb(s, status, w->arg);
    free(w);
}

static int write_plain(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                       void *arg)
{
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    struct plain_write *w = tg_malloc(sizeof(*w) + total);
    w->s = s;
    w->cb = cb;
    w->arg = arg;
    size_t off = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        if (bufs[i].len) memcpy(w->data + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    uv_buf_t one = uv_buf_init(w->data, (unsigned)total);
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &one, 1, on_plain_written) != 0) {
        free(w);
        s->failed = true;
        return -TG_EIO;
    }
    return 0;
}

int tg_stream_write(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                    void *arg)
{
    if (s->closing) return -TG_EIO;
    if (!s->tls) return write_plain(s, bufs, nbufs, cb, arg);
    struct tls_write *w = tg_malloc(sizeof(*w));
    *w = (struct tls_write){s, cb, arg};
    if (tg_tls_write(s->tls, bufs, nbufs, on_tls_written, w) != 0) {
        free(w);
        s->failed = true;
        return -TG_EIO;
    }
    return 0;
}

size_t tg_stream_write_queue(const tg_stream_t *s)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&s->tcp);
}

/* ---------------------------------------------------------------- closing */

static void on_closed(uv_handle_t *h)
{
    tg_stream_t *s = from_tcp(h);
    tg_tls_free(s->tls);
    s->tls = NULL;
    if (s->on_close) s->on_close(s);
}

void tg_stream_close(tg_stream_t *s, tg_stream_close_cb cb)
{
    if (s->closing) return;
    s->closing = true;
    s->reading = false;
    s->on_close = cb;
    uv_close((uv_handle_t *)&s->tcp, on_closed);
}

void tg_stream_peer_ip(tg_stream_t *s, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    out[0] = '\0';
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &n) != 0) return;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, out, len);
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, out, len);
}
