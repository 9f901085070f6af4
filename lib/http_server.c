/*
 * http_server.c — connections, timeouts and responses for http_server.h.
 *
 * A connection is a small state machine:
 *
 *   HANDSHAKE (TLS) → HEAD → BODY → APP → WRITE → HEAD ... → LINGER → CLOSED
 *
 * HEAD parses what the read buffer holds; BODY moves body bytes into the
 * exchange; APP waits for tg_http_respond; WRITE waits for the response to
 * reach the kernel. While a request is in flight the socket is still read so
 * that a vanished client is noticed, but pipelined bytes are only buffered, up
 * to max_head_size, and reading pauses beyond that. LINGER half-closes and
 * drains the socket briefly so that the client reads our last response
 * instead of a reset.
 *
 * When a head is parsed, the read buffer holding it is handed to the exchange
 * (the request's strings point into it) and the connection continues with a
 * fresh buffer holding the bytes that followed the head.
 */
#include "http_server.h"
#include "alloc.h"
#include "error.h"
#include "http_chunked.h"
#include "log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define READ_CHUNK 16384   /* bytes offered to each socket read */
#define BODY_INITIAL 16384 /* body buffers grow from here: a claimed length costs nothing */
#define LINGER_MS 2000     /* how long a closing connection drains the client */

enum conn_state { C_HANDSHAKE, C_HEAD, C_BODY, C_APP, C_WRITE, C_LINGER, C_CLOSED };

struct conn {
    uv_tcp_t tcp; /* handles live here; the conn is freed in their last close callback */
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    tg_http_server_t *srv;
    struct conn *prev, *next;
    tg_tls_t *tls;
    enum conn_state state;
    int open_handles;
    bool reading;      /* the transport is delivering bytes */
    bool head_started; /* header timeout (not idle timeout) is running */
    bool close_after;  /* close once the response in WRITE is out */
    char *rbuf;        /* unconsumed bytes are rbuf[rpos..rlen) */
    size_t rpos, rlen, rcap;
    size_t parsed_len; /* rlen - rpos at the last parse attempt (parser hint) */
    tg_http_header_t *hdrs;
    tg_http_request_head_t head;
    tg_http_chunked_t chunked;
    uint64_t body_left; /* Content-Length bytes still to read */
    struct tg_http_exchange *x;
    char peer[64];
};

struct tg_http_exchange {
    struct conn *c; /* NULL once the connection is gone */
    tg_http_request_t req;
    char *head_buf; /* the read buffer the request's strings point into */
    char *body;
    size_t body_cap;
    bool dispatched; /* on_request was called: the application owns it now */
    bool is_head;
};

struct tg_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    tg_http_server_opts_t opts;
    tg_http_limits_t limits;
    struct conn *conns;
    bool closing, listener_closed;
    time_t date_time;
    char date[40];
};

struct out_req {
    uv_write_t req; /* first: the uv_write_t pointer is the out_req pointer */
    struct conn *c;
    bool final;
    char *data;
};

static const char json_type[] = "application/json; charset=utf-8";

static void conn_close(struct conn *c);
static void process(struct conn *c);
static void update_reading(struct conn *c);

/* ---------------------------------------------------------------------------
 * Small helpers
 */

static size_t buffered(const struct conn *c)
{
    return c->rlen - c->rpos;
}

static void arm_timer(struct conn *c, unsigned ms);

static void exchange_free(struct tg_http_exchange *x)
{
    free(x->head_buf);
    free(x->req.headers);
    free(x->body);
    free(x);
}

/* Kong's messages for the errors the server answers by itself. */
static const char *error_message(int status)
{
    switch (status) {
    case 400:
        return "Bad request";
    case 408:
        return "Request timeout";
    case 413:
        return "Payload too large";
    case 414:
        return "URI too long";
    case 431:
        return "Request header fields too large";
    case 501:
        return "Not implemented";
    case 505:
        return "HTTP version not supported";
    default:
        return tg_http_status_reason(status);
    }
}

/* The IMF-fixdate of RFC 9110 §5.6.7, refreshed at most once per second. */
static const char *http_date(tg_http_server_t *s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now == s->date_time) return s->date;
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(s->date, sizeof s->date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    s->date_time = now;
    return s->date;
}

/* ---------------------------------------------------------------------------
 * Response text
 */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->p = tg_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_header(struct buf *b, const char *name, tg_str_t value)
{
    buf_str(b, name);
    buf_add(b, ": ", 2);
    buf_add(b, value.p, value.len);
    buf_add(b, "\r\n", 2);
}

/* Headers whose framing the server owns, or that would break the message. */
static bool header_dropped(const tg_http_header_t *h)
{
    if (!tg_http_is_token(h->name) || !tg_http_is_field_value(h->value)) {
        TG_LOGW("http", "dropping invalid response header \"%.*s\"", (int)h->name.len,
                h->name.p ? h->name.p : "");
        return true;
    }
    return tg_str_caseeq(h->name, TG_STR("content-length")) ||
           tg_str_caseeq(h->name, TG_STR("transfer-encoding")) ||
           tg_str_caseeq(h->name, TG_STR("connection"));
}

struct response {
    int status;
    const tg_http_header_t *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
    bool send_body, keep_alive;
};

static void add_user_headers(struct buf *b, const struct response *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        const tg_http_header_t *h = &r->headers[i];
        if (header_dropped(h)) continue;
        buf_add(b, h->name.p, h->name.len);
        buf_add(b, ": ", 2);
        buf_add(b, h->value.p, h->value.len);
        buf_add(b, "\r\n", 2);
    }
}

static char *build_response(tg_http_server_t *s, const struct response *r, size_t *len)
{
    struct buf b = {0};
    char line[96];
    snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", r->status, tg_http_status_reason(r->status));
    buf_str(&b, line);
    buf_header(&b, "Date", tg_str_from(http_date(s)));
    if (s->opts.server_header && !tg_http_header_find(r->headers, r->nheaders, "server"))
        buf_header(&b, "Server", tg_str_from(s->opts.server_header));
    add_user_headers(&b, r);
    /* 1xx and 204 must not carry Content-Length; 304's would describe another body. */
    if (r->status != 204 && r->status != 304) {
        snprintf(line, sizeof line, "Content-Length: %zu\r\n", r->body_len);
        buf_str(&b, line);
    }
    buf_header(&b, "Connection", r->keep_alive ? TG_STR("keep-alive") : TG_STR("close"));
    buf_add(&b, "\r\n", 2);
    if (r->send_body && r->status != 204 && r->status != 304) buf_add(&b, r->body, r->body_len);
    *len = b.len;
    return b.p;
}

/* ---------------------------------------------------------------------------
 * Writing
 */

static void begin_linger(struct conn *c);

static void response_written(struct conn *c)
{
    if (c->close_after || c->srv->closing) {
        begin_linger(c);
        return;
    }
    c->state = C_HEAD;
    c->head_started = buffered(c) > 0;
    arm_timer(c, c->head_started ? c->srv->opts.header_timeout_ms : c->srv->opts.idle_timeout_ms);
    process(c);
    update_reading(c);
}

static void write_done(struct conn *c, int status, bool final)
{
    if (c->state == C_CLOSED) return;
    if (status < 0) {
        TG_LOGD("http", "%s: write failed", c->peer);
        conn_close(c);
        return;
    }
    if (final && c->state == C_WRITE) response_written(c);
}

static void on_tcp_written(uv_write_t *req, int status)
{
    struct out_req *o = (struct out_req *)req;
    write_done(o->c, status, o->final);
    free(o->data);
    free(o);
}

static void on_tls_final_written(tg_tls_t *t, int status, void *arg)
{
    write_done(arg, status, true);
}

static void on_tls_interim_written(tg_tls_t *t, int status, void *arg)
{
    write_done(arg, status, false);
}

/* Queues `data` (taken over) on the connection; a final write ends the exchange. */
static void conn_send(struct conn *c, char *data, size_t len, bool final)
{
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int rc;
    if (c->tls) {
        rc = tg_tls_write(c->tls, &b, 1, final ? on_tls_final_written : on_tls_interim_written, c);
        free(data);
    } else {
        struct out_req *o = tg_malloc(sizeof *o);
        o->c = c;
        o->final = final;
        o->data = data;
        rc = uv_write(&o->req, (uv_stream_t *)&c->tcp, &b, 1, on_tcp_written);
        if (rc < 0) {
            free(data);
            free(o);
        }
    }
    if (rc < 0) {
        conn_close(c);
        return;
    }
    if (final) {
        c->state = C_WRITE;
        /* A client that stops reading must not hold the connection forever. */
        arm_timer(c, c->srv->opts.body_timeout_ms);
    }
}

/* Answers a request the server refuses, then closes. */
static void send_error(struct conn *c, int status)
{
    if (c->x && !c->x->dispatched) {
        exchange_free(c->x);
        c->x = NULL;
    }
    char body[128];
    int n = snprintf(body, sizeof body, "{\"message\":\"%s\"}", error_message(status));
    tg_http_header_t ct = {TG_STR("Content-Type"), TG_STR(json_type)};
    struct response r = {.status = status,
                         .headers = &ct,
                         .nheaders = 1,
                         .body = body,
                         .body_len = (size_t)n,
                         .send_body = true};
    size_t len;
    char *out = build_response(c->srv, &r, &len);
    c->close_after = true;
    c->rpos = c->rlen = 0;
    TG_LOGD("http", "%s: answering %d", c->peer, status);
    conn_send(c, out, len, true);
    update_reading(c);
}

void tg_http_respond(tg_http_exchange_t *x, int status, const tg_http_header_t *headers,
                     size_t nheaders, const char *body, size_t body_len)
{
    struct conn *c = x->c;
    if (!c) {
        exchange_free(x);
        return;
    }
    if (status < 200 || status > 999) {
        TG_LOGE("http", "invalid response status %d, sending 500", status);
        status = 500;
    }
    const tg_http_header_t *conn_hdr = tg_http_header_find(headers, nheaders, "connection");
    bool close = conn_hdr && tg_str_caseeq(conn_hdr->value, TG_STR("close"));
    struct response r = {.status = status,
                         .headers = headers,
                         .nheaders = nheaders,
                         .body = body,
                         .body_len = body_len,
                         .send_body = !x->is_head,
                         .keep_alive = x->req.keep_alive && !close && !c->srv->closing};
    size_t len;
    char *out = build_response(c->srv, &r, &len);
    c->x = NULL;
    exchange_free(x);
    c->close_after = !r.keep_alive;
    conn_send(c, out, len, true);
}

/* ---------------------------------------------------------------------------
 * Requests
 */

static void dispatch(struct conn *c)
{
    struct tg_http_exchange *x = c->x;
    if (x->body) x->body[x->req.body_len] = '\0';
    x->req.body = x->body ? x->body : "";
    x->dispatched = true;
    c->state = C_APP;
    uv_timer_stop(&c->timer);
    c->srv->opts.on_request(x, &x->req, c->srv->opts.udata);
}

/* Hands the buffer holding the head to a new exchange (see the file comment). */
static struct tg_http_exchange *new_exchange(struct conn *c)
{
    const tg_http_request_head_t *h = &c->head;
    struct tg_http_exchange *x = tg_calloc(1, sizeof *x);
    x->c = c;
    x->head_buf = c->rbuf;
    x->is_head = tg_str_eq_lit(h->method, "HEAD");
    tg_http_request_t *r = &x->req;
    r->method = h->method;
    r->target = h->target;
    r->path = h->path;
    r->query = h->query;
    r->minor_version = h->minor_version;
    r->nheaders = h->nheaders;
    r->headers = tg_malloc(h->nheaders * sizeof *r->headers);
    memcpy(r->headers, h->headers, h->nheaders * sizeof *r->headers);
    r->keep_alive = h->keep_alive;
    r->tls = c->tls != NULL;
    memcpy(r->peer_addr, c->peer, sizeof r->peer_addr);

    size_t rest = c->rlen - (c->rpos + h->head_len);
    c->rcap = rest > READ_CHUNK ? rest + READ_CHUNK : 2 * READ_CHUNK;
    c->rbuf = tg_malloc(c->rcap);
    memcpy(c->rbuf, x->head_buf + c->rpos + h->head_len, rest);
    c->rpos = 0;
    c->rlen = rest;
    return x;
}

static void body_append(struct tg_http_exchange *x, const char *p, size_t n)
{
    size_t need = x->req.body_len + n + 1;
    if (need > x->body_cap) {
        x->body_cap = need > 2 * x->body_cap ? need : 2 * x->body_cap;
        x->body = tg_realloc(x->body, x->body_cap);
    }
    memcpy(x->body + x->req.body_len, p, n);
    x->req.body_len += n;
}

static void send_continue(struct conn *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    conn_send(c, tg_strndup(msg, sizeof msg - 1), sizeof msg - 1, false);
}

/* A parsed head: refuse it, dispatch it, or start reading its body. */
static void start_request(struct conn *c)
{
    const tg_http_request_head_t *h = &c->head;
    if (h->content_length > 0 && (uint64_t)h->content_length > c->srv->opts.max_body_size) {
        send_error(c, 413);
        return;
    }
    c->x = new_exchange(c);
    if (!h->chunked && h->content_length <= 0) {
        dispatch(c);
        return;
    }
    c->state = C_BODY;
    c->body_left = h->chunked ? 0 : (uint64_t)h->content_length;
    size_t first = BODY_INITIAL;
    if (!h->chunked && c->body_left < first) first = (size_t)c->body_left;
    c->x->body_cap = first + 1;
    c->x->body = tg_malloc(c->x->body_cap);
    if (h->chunked) tg_http_chunked_init(&c->chunked, &c->srv->limits);
    if (h->expect_continue && buffered(c) == 0) send_continue(c);
    arm_timer(c, c->srv->opts.body_timeout_ms);
}

static void parse_head(struct conn *c)
{
    size_t len = buffered(c);
    int rc = tg_http_parse_request(c->rbuf + c->rpos, len, c->parsed_len, &c->srv->limits, c->hdrs,
                                   &c->head);
    c->parsed_len = len;
    if (rc == -TG_EAGAIN) return;
    c->parsed_len = 0;
    if (rc < 0) {
        send_error(c, c->head.status ? c->head.status : 400);
        return;
    }
    start_request(c);
}

static void body_fixed(struct conn *c)
{
    size_t n = buffered(c);
    if (n > c->body_left) n = (size_t)c->body_left;
    body_append(c->x, c->rbuf + c->rpos, n);
    c->rpos += n;
    c->body_left -= n;
    if (c->body_left == 0) dispatch(c);
}

static void body_chunked(struct conn *c)
{
    uint64_t max = c->srv->opts.max_body_size;
    while (buffered(c) > 0 && !tg_http_chunked_done(&c->chunked)) {
        size_t used;
        tg_str_t data;
        int rc = tg_http_chunked_feed(&c->chunked, c->rbuf + c->rpos, buffered(c), &used, &data);
        c->rpos += used;
        if (rc < 0) {
            send_error(c, 400);
            return;
        }
        /* A declared chunk size is refused before its bytes are read; sizes reach 2^64. */
        uint64_t have = c->x->req.body_len + data.len;
        if (have > max || c->chunked.remaining > max - have) {
            send_error(c, 413);
            return;
        }
        body_append(c->x, data.p, data.len);
    }
    if (tg_http_chunked_done(&c->chunked)) dispatch(c);
}

/* Consumes buffered bytes while the state allows; stops when waiting. */
static void process(struct conn *c)
{
    for (;;) {
        enum conn_state before = c->state;
        size_t had = buffered(c);
        if (c->state == C_HEAD && had > 0)
            parse_head(c);
        else if (c->state == C_BODY && had > 0)
            c->head.chunked ? body_chunked(c) : body_fixed(c);
        else
            break;
        if (c->state == before && buffered(c) == had) break;
    }
    if (c->rpos == c->rlen) c->rpos = c->rlen = 0;
}

/* ---------------------------------------------------------------------------
 * Reading
 */

static void on_bytes(struct conn *c)
{
    if (c->state == C_LINGER || c->close_after) {
        c->rpos = c->rlen = 0; /* nobody will read these */
        return;
    }
    if (c->state == C_HEAD && !c->head_started) {
        c->head_started = true;
        arm_timer(c, c->srv->opts.header_timeout_ms);
    } else if (c->state == C_BODY) {
        arm_timer(c, c->srv->opts.body_timeout_ms);
    }
    process(c);
    update_reading(c);
}

/* Room for one more socket read, compacting before growing. */
static void reserve_read(struct conn *c, size_t want)
{
    if (c->rcap - c->rlen >= want) return;
    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, buffered(c));
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->rcap - c->rlen >= want) return;
    c->rcap = c->rlen + want > 2 * c->rcap ? c->rlen + want : 2 * c->rcap;
    c->rbuf = tg_realloc(c->rbuf, c->rcap);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = container_of(h, struct conn, tcp);
    reserve_read(c, READ_CHUNK);
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = container_of(s, struct conn, tcp);
    if (nread > 0) {
        c->rlen += (size_t)nread;
        on_bytes(c);
    } else if (nread < 0) {
        /* EOF or reset: the request in progress (if any) is dropped quietly. */
        conn_close(c);
    }
}

static void on_tls_read(tg_tls_t *t, int status, const char *data, size_t len, void *udata)
{
    struct conn *c = udata;
    if (status < 0) {
        conn_close(c);
        return;
    }
    reserve_read(c, len);
    memcpy(c->rbuf + c->rlen, data, len);
    c->rlen += len;
    on_bytes(c);
}

/*
 * Reads while parsing or draining; with a request in flight, reads only to
 * notice a vanished client, and pauses once max_head_size bytes are waiting.
 */
static bool wants_read(const struct conn *c)
{
    switch (c->state) {
    case C_HEAD:
    case C_BODY:
    case C_LINGER:
        return true;
    case C_APP:
    case C_WRITE:
        return buffered(c) < c->srv->limits.max_head_size;
    default:
        return false;
    }
}

static void update_reading(struct conn *c)
{
    if (c->state == C_CLOSED) return;
    bool want = wants_read(c);
    if (want == c->reading) return;
    c->reading = want;
    if (c->tls) {
        /* May deliver buffered plaintext right away, re-entering on_bytes. */
        if (want)
            tg_tls_read_start(c->tls, on_tls_read);
        else
            tg_tls_read_stop(c->tls);
    } else if (want) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read) < 0) conn_close(c);
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* ---------------------------------------------------------------------------
 * Connection lifetime
 */

static void maybe_free_server(tg_http_server_t *s)
{
    if (!s->listener_closed || s->conns) return;
    if (s->opts.ssl_ctx) SSL_CTX_free(s->opts.ssl_ctx);
    free((char *)s->opts.server_header);
    free(s);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0) return;
    tg_http_server_t *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    tg_tls_free(c->tls);
    free(c->rbuf);
    free(c->hdrs);
    free(c);
    maybe_free_server(s);
}

static void conn_close(struct conn *c)
{
    if (c->state == C_CLOSED) return;
    c->state = C_CLOSED;
    if (c->x) {
        if (c->x->dispatched)
            c->x->c = NULL; /* tg_http_respond will just free it */
        else
            exchange_free(c->x);
        c->x = NULL;
    }
    /* The TLS session owns tcp.data while attached; our close callback needs the conn. */
    c->tcp.data = c;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->state == C_HEAD && buffered(c) > 0)
        send_error(c, 408);
    else if (c->state == C_BODY)
        send_error(c, 408);
    else
        conn_close(c); /* idle, handshake, stalled write or linger */
}

static void arm_timer(struct conn *c, unsigned ms)
{
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = container_of(req, struct conn, shutdown);
    if (status < 0) conn_close(c);
}

static void begin_linger(struct conn *c)
{
    c->state = C_LINGER;
    c->rpos = c->rlen = 0;
    if (c->tls) tg_tls_shutdown(c->tls, NULL, NULL);
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    arm_timer(c, LINGER_MS);
    update_reading(c);
}

static void on_handshake(tg_tls_t *t, int status, void *udata)
{
    struct conn *c = udata;
    if (status < 0) {
        TG_LOGD("http", "%s: TLS handshake failed: %s", c->peer, tg_strerror(status));
        conn_close(c);
        return;
    }
    c->state = C_HEAD;
    update_reading(c);
}

static void peer_name(uv_tcp_t *tcp, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    snprintf(out, len, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) < 0) return;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(out, len, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(out, len, "%s:%u", ip, ntohs(a->sin_port));
    }
}

static struct conn *conn_new(tg_http_server_t *s)
{
    struct conn *c = tg_calloc(1, sizeof *c);
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    c->rcap = 2 * READ_CHUNK;
    c->rbuf = tg_malloc(c->rcap);
    c->hdrs = tg_malloc(s->limits.max_headers * sizeof *c->hdrs);
    return c;
}

static void on_connection(uv_stream_t *l, int status)
{
    tg_http_server_t *s = container_of(l, tg_http_server_t, listener);
    if (status < 0) {
        TG_LOGW("http", "accept failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = conn_new(s);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    peer_name(&c->tcp, c->peer, sizeof c->peer);
    c->head_started = true; /* the first head is timed from the accept */
    arm_timer(c, s->opts.header_timeout_ms);
    if (!s->opts.ssl_ctx) {
        c->state = C_HEAD;
        update_reading(c);
        return;
    }
    c->state = C_HANDSHAKE;
    c->tls = tg_tls_new(s->opts.ssl_ctx, (uv_stream_t *)&c->tcp, true, c);
    if (!c->tls || tg_tls_handshake(c->tls, on_handshake) < 0) conn_close(c);
}

/* ---------------------------------------------------------------------------
 * Server
 */

static void apply_defaults(tg_http_server_opts_t *o)
{
    if (!o->max_head_size) o->max_head_size = 64 * 1024;
    if (!o->max_headers) o->max_headers = 100;
    if (!o->max_uri) o->max_uri = 8 * 1024;
    if (!o->max_body_size) o->max_body_size = 10 * 1024 * 1024;
    if (!o->header_timeout_ms) o->header_timeout_ms = 10000;
    if (!o->body_timeout_ms) o->body_timeout_ms = 60000;
    if (!o->idle_timeout_ms) o->idle_timeout_ms = 60000;
}

tg_http_server_t *tg_http_server_create(uv_loop_t *loop, const tg_http_server_opts_t *opts)
{
    if (!opts || !opts->on_request) return NULL;
    tg_http_server_t *s = tg_calloc(1, sizeof *s);
    s->loop = loop;
    s->opts = *opts;
    apply_defaults(&s->opts);
    if (opts->server_header) s->opts.server_header = tg_strdup(opts->server_header);
    if (opts->ssl_ctx) SSL_CTX_up_ref(opts->ssl_ctx);
    s->limits = (tg_http_limits_t){s->opts.max_head_size, s->opts.max_headers, s->opts.max_uri};
    uv_tcp_init(loop, &s->listener);
    return s;
}

int tg_http_server_listen(tg_http_server_t *s, const char *host, int port)
{
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai;
    if (getaddrinfo(host, portstr, &hints, &ai) != 0) {
        TG_LOGE("http", "cannot resolve listen address %s", host ? host : "(null)");
        return -TG_EINVAL;
    }
    int rc = uv_tcp_bind(&s->listener, ai->ai_addr, 0);
    freeaddrinfo(ai);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc < 0) {
        TG_LOGE("http", "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        return -TG_EIO;
    }
    return 0;
}

int tg_http_server_port(tg_http_server_t *s)
{
    struct sockaddr_storage ss;
    int n = sizeof ss;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &n) < 0) return -TG_EINVAL;
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void on_listener_closed(uv_handle_t *h)
{
    tg_http_server_t *s = container_of(h, tg_http_server_t, listener);
    s->listener_closed = true;
    maybe_free_server(s);
}

void tg_http_server_close(tg_http_server_t *s)
{
    if (s->closing) return;
    s->closing = true;
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != C_APP && c->state != C_WRITE) conn_close(c);
    }
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}
