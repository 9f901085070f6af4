/*
 * stream.c — plain TCP and TLS connections behind one interface; see stream.h.
 *
 * Plain TCP keeps libuv's epoll registration still on keep-alive connections, because every
 * change costs an epoll_ctl system call:
 *   - a paused stream keeps libuv reading; bytes or EOF that arrive meanwhile are held, and
 *     only then does libuv stop reading (at most one read is held); the next read_start hands
 *     them over from the `later` idle handle, then reads again;
 *   - a write first goes straight to the socket (send(2): uv_try_write, but through the
 *     kernel's shorter socket path); when the kernel took it all, which is the rule, its
 *     callback is due from the `later` handle, and libuv (whose write completion re-arms the
 *     poll watcher) is not involved. The rest of a partial write, and every write while
 *     libuv still has one, go through uv_write. Callbacks keep the order of the writes: a
 *     libuv completion queues behind due ones.
 */
#include "stream.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

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

/* Bytes or EOF while paused: keep them for the next read_start and stop libuv reads now. */
static void hold(tg_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    uv_read_stop((uv_stream_t *)&s->tcp);
    s->uv_reading = false;
    if (nread < 0) {
        s->held_status = nread == UV_EOF ? -TG_ECLOSED : -TG_EIO;
        return;
    }
    s->held = tg_realloc(s->held, s->held_len + (size_t)nread);
    memcpy(s->held + s->held_len, buf->base, (size_t)nread);
    s->held_len += (size_t)nread;
}

static void on_plain_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    tg_stream_t *s = from_tcp((uv_handle_t *)h);
    if (nread == 0 || s->closing) return;
    if (!s->reading) {
        hold(s, nread, buf);
        return;
    }
    if (nread > 0) {
        s->on_read(s, 0, buf->base, (size_t)nread);
        return;
    }
    uv_read_stop(h);
    s->uv_reading = false;
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

static int plain_read_on(tg_stream_t *s)
{
    if (s->uv_reading) return 0;
    if (uv_read_start((uv_stream_t *)&s->tcp, alloc_plain, on_plain_read) != 0) return -TG_EIO;
    s->uv_reading = true;
    return 0;
}

static void on_later(uv_idle_t *i);

/* Runs on_later at the next loop iteration. */
static int defer(tg_stream_t *s)
{
    if (!s->later_init) {
        uv_idle_init(s->tcp.loop, &s->later);
        s->later.data = s;
        s->later_init = true;
    }
    return uv_idle_start(&s->later, on_later);
}

/* What was held while paused, handed over once the owner reads again. */
static void redeliver(tg_stream_t *s)
{
    char *data = s->held;
    size_t len = s->held_len;
    s->held = NULL;
    s->held_len = 0;
    if (len) s->on_read(s, 0, data, len);
    free(data);
    if (s->closing || !s->reading) return;
    int status = s->held_status;
    s->held_status = 0;
    if (status == 0 && plain_read_on(s) == 0) return;
    if (status == 0) status = -TG_EIO;
    s->reading = false;
    if (status != -TG_ECLOSED) s->failed = true;
    s->on_read(s, status, NULL, 0);
}

int tg_stream_read_start(tg_stream_t *s, tg_stream_read_cb cb)
{
    if (cb) s->on_read = cb;
    if (s->reading || s->closing || s->failed) return s->failed ? -TG_EIO : 0;
    s->reading = true;
    int rc;
    if (s->tls) {
        rc = tg_tls_read_start(s->tls, on_tls_read);
    } else if (s->held_len || s->held_status) {
        rc = defer(s);
    } else {
        rc = plain_read_on(s);
    }
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
    if (s->tls) tg_tls_read_stop(s->tls); /* plain TCP: see hold() */
}

/* ---------------------------------------------------------------- writing */

struct tg_stream_done {
    tg_stream_write_cb cb;
    void *arg;
    int status;
};

static void push_done(tg_stream_t *s, tg_stream_write_cb cb, void *arg, int status)
{
    if (s->ndone == s->done_cap) {
        s->done_cap = s->done_cap ? 2 * s->done_cap : 4;
        s->done = tg_realloc(s->done, s->done_cap * sizeof(*s->done));
    }
    s->done[s->ndone++] = (struct tg_stream_done){cb, arg, status};
    if (defer(s) != 0) tg_fatal("uv_idle_start failed");
}

/* The callbacks due when this round began; those their callbacks add wait for the next. */
static void deliver_writes(tg_stream_t *s)
{
    unsigned n = s->ndone;
    for (unsigned i = 0; i < n && !s->closing; i++) {
        struct tg_stream_done d = s->done[i]; /* a callback may grow the array */
        if (d.status < 0) s->failed = true;
        if (d.cb) d.cb(s, d.status, d.arg);
    }
    if (s->closing) {
        s->ndone = 0;
        return;
    }
    memmove(s->done, s->done + n, (s->ndone - n) * sizeof(*s->done));
    s->ndone -= n;
}

static void on_later(uv_idle_t *i)
{
    tg_stream_t *s = i->data;
    uv_idle_stop(i);
    if (!s->closing && s->ndone) deliver_writes(s);
    if (!s->closing && s->reading && (s->held_len || s->held_status)) redeliver(s);
}

static void on_plain_written(uv_write_t *req, int status)
{
    struct plain_write *w = (struct plain_write *)req;
    tg_stream_t *s = w->s;
    int st = status < 0 ? -TG_EIO : 0;
    s->uv_writes--;
    if (s->ndone && !s->closing) {
        push_done(s, w->cb, w->arg, st); /* behind the completions already due */
    } else {
        if (status < 0) s->failed = true;
        if (w->cb && !s->closing) w->cb(s, st, w->arg);
    }
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

/*
 * What uv_try_write does when libuv has no write queued (the only time it is called), as
 * send(2)/sendmsg(2): the socket path is shorter in the kernel than write(2)'s. Returns the
 * bytes the kernel took (0 when its buffer is full) or -1 on an error.
 */
static ssize_t try_send(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs)
{
    uv_os_fd_t fd;
    if (uv_fileno((const uv_handle_t *)&s->tcp, &fd) != 0) return -1;
    ssize_t n;
    do {
        if (nbufs == 1) {
            n = send(fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            struct msghdr m = {.msg_iov = (struct iovec *)bufs, .msg_iovlen = nbufs};
            n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) return 0;
    return n;
}

/* 1: all sent at once and `now` (cb will not run); 0: cb runs later; -TG_EIO. */
static int write_plain(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                       void *arg, bool now)
{
    size_t total = 0, sent = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (s->uv_writes == 0) {
        ssize_t n = try_send(s, bufs, nbufs);
        if (n >= 0) sent = (size_t)n;
        if (n >= 0 && sent == total) {
            if (now) return 1;
            push_done(s, cb, arg, 0);
            return 0;
        }
        /* the kernel's buffer is full, or an error that uv_write reports as it always did */
    }
    struct plain_write *w = tg_malloc(sizeof(*w) + total - sent);
    w->s = s;
    w->cb = cb;
    w->arg = arg;
    size_t off = 0, skip = sent;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t k = skip < bufs[i].len ? skip : bufs[i].len;
        skip -= k;
        if (bufs[i].len > k) memcpy(w->data + off, bufs[i].base + k, bufs[i].len - k);
        off += bufs[i].len - k;
    }
    uv_buf_t one = uv_buf_init(w->data, (unsigned)off);
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &one, 1, on_plain_written) != 0) {
        free(w);
        s->failed = true;
        return -TG_EIO;
    }
    s->uv_writes++;
    return 0;
}

static int write_any(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                     void *arg, bool now)
{
    if (s->closing) return -TG_EIO;
    if (!s->tls) return write_plain(s, bufs, nbufs, cb, arg, now);
    struct tls_write *w = tg_malloc(sizeof(*w));
    *w = (struct tls_write){s, cb, arg};
    if (tg_tls_write(s->tls, bufs, nbufs, on_tls_written, w) != 0) {
        free(w);
        s->failed = true;
        return -TG_EIO;
    }
    return 0;
}

int tg_stream_write(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                    void *arg)
{
    return write_any(s, bufs, nbufs, cb, arg, false);
}

int tg_stream_write_now(tg_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, tg_stream_write_cb cb,
                        void *arg)
{
    return write_any(s, bufs, nbufs, cb, arg, true);
}

size_t tg_stream_write_queue(const tg_stream_t *s)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&s->tcp);
}

/* ---------------------------------------------------------------- closing */

static void closed(tg_stream_t *s)
{
    if (--s->open_handles > 0) return;
    tg_tls_free(s->tls);
    s->tls = NULL;
    free(s->held);
    s->held = NULL;
    free(s->done);
    s->done = NULL;
    if (s->on_close) s->on_close(s);
}

static void on_closed(uv_handle_t *h)
{
    closed(from_tcp(h));
}

static void on_later_closed(uv_handle_t *h)
{
    closed(h->data);
}

void tg_stream_close(tg_stream_t *s, tg_stream_close_cb cb)
{
    if (s->closing) return;
    s->closing = true;
    s->reading = false;
    s->on_close = cb;
    s->open_handles = s->later_init ? 2 : 1;
    if (s->later_init) uv_close((uv_handle_t *)&s->later, on_later_closed);
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
