/*
 * proxy.c — client connections: accept (TLS when the listener says so), read and parse
 * request heads, route, run the access phase, hand the request to proxy_upstream.c, read
 * the request body for the upstream or a plugin, and end each exchange (access log,
 * metrics, keep-alive or close). See proxy.h and proxy_int.h.
 */
#include "proxy_int.h"
#include "alloc.h"
#include "error.h"
#include "log.h"
#include "proxy_plugins.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const tg_http_limits_t limits = {TG_PROXY_MAX_HEAD, TG_PROXY_MAX_HEADERS, TG_PROXY_MAX_URI};

static void head_bytes(tg_proxy_conn_t *c, const char *data, size_t len);
static void start_request(tg_proxy_conn_t *c);
static void on_client_timeout(tg_deadline_t *t);
static void on_read(tg_stream_t *s, int status, const char *data, size_t len);

int64_t tg_proxy_ms(uint64_t from, uint64_t to)
{
    return from && to >= from ? (int64_t)((to - from) / 1000000) : -1;
}

/* ---------------------------------------------------------------- closing */

static void handle_gone(tg_proxy_conn_t *c)
{
    if (--c->open_handles > 0) return;
    free(c->buf);
    tg_headbuf_free(&c->out);
    free(c->x.rbuf);
    free(c->x.rheaders);
    free(c->x.up_request);
    free(c);
}

static void on_timer_closed(tg_deadline_t *d)
{
    handle_gone(d->data);
}

static void on_stream_closed(tg_stream_t *s)
{
    handle_gone((tg_proxy_conn_t *)s);
}

static void set_reading(tg_proxy_conn_t *c, bool on)
{
    if (on == c->counted_reading) return;
    c->counted_reading = on;
    tg_metrics_add(&c->w->metrics->conns_reading, on ? 1 : -1);
}

static void set_writing(tg_proxy_conn_t *c, bool on)
{
    if (on == c->counted_writing) return;
    c->counted_writing = on;
    tg_metrics_add(&c->w->metrics->conns_writing, on ? 1 : -1);
}

#define KEEP_MAX 16384 /* scratch buffers up to this size serve the next exchange */

/* Frees what an exchange holds, except the scratch buffers the next one reuses (freed with
 * the connection); the upstream side must already be released. */
static void exchange_reset(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (x->active) {
        tg_req_release(&x->req);
        tg_identity_store_end(&x->ids);
        tg_proxy_realm_end(x);
        tg_generation_unref(x->gen);
    }
    free(x->body);
    free(x->next_bytes);
    char *rbuf = x->rbuf, *up = x->up_request;
    size_t rcap = x->rcap, upcap = x->up_request_cap;
    tg_http_header_t *rheaders = x->rheaders;
    memset(x, 0, sizeof(*x));
    x->rheaders = rheaders;
    if (rcap <= KEEP_MAX) {
        x->rbuf = rbuf;
        x->rcap = rcap;
    } else {
        free(rbuf);
    }
    if (upcap <= KEEP_MAX) {
        x->up_request = up;
        x->up_request_cap = upcap;
    } else {
        free(up);
    }
}

static void conn_close(tg_proxy_conn_t *c)
{
    if (c->state == TG_PX_CLOSING) return;
    tg_worker_t *w = c->w;
    if (c->x.active) tg_proxy_upstream_release(c, false);
    exchange_reset(c);
    c->out.len = 0;
    c->state = TG_PX_CLOSING;
    set_reading(c, false);
    set_writing(c, false);
    tg_metrics_add(&w->metrics->conns_active, -1);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nconns--;
    tg_deadline_close(&c->timer, on_timer_closed);
    tg_deadline_close(&c->up_timer, on_timer_closed);
    tg_stream_close(&c->s, on_stream_closed);
    tg_worker_conn_gone(w);
}

/* ---------------------------------------------------------------- access log and metrics */

/* A route's or service's name, else its id, from what the router read of it. */
static const char *info_label(tg_str_t name, tg_str_t id)
{
    return name.p ? name.p : id.p;
}

static void account(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    uint64_t now = uv_hrtime();
    int64_t total = tg_proxy_ms(x->t_start, now);
    int64_t proxy = x->t_upstream ? tg_proxy_ms(x->t_start, x->t_upstream) : -1;
    int64_t upstream = x->t_head ? tg_proxy_ms(x->t_upstream, x->t_head) : -1;
    /* the consumer as key-auth set it, JSON or strings (NUL-terminated either way) */
    const char *consumer_id = tg_req_consumer_id(&x->req).p;
    const char *username = tg_req_consumer_username(&x->req).p;
    /* the route and service as matched: their ids and labels were read when routing */
    const tg_route_info_t *in = x->req.route ? x->match.info : NULL;
    const char *route_id = in ? in->route_id.p : NULL;
    const char *service_id = in && x->req.service ? in->service_id.p : NULL;
    tg_metrics_request_t m = {x->status,
                              in ? info_label(in->route_name, in->route_id) : NULL,
                              in && x->req.service ? info_label(in->service_name, in->service_id)
                                                   : NULL,
                              username ? username : consumer_id,
                              total,
                              upstream,
                              proxy};
    tg_metrics_count_request(c->w->metrics, &m);
    if (c->w->opts.log_fd < 0) return; /* proxy_access_log off: no line to build */
    char upstream_addr[300]; /* "host:port" (host < 256 bytes) */
    size_t at = strlen(x->up_host);
    memcpy(upstream_addr, x->up_host, at);
    upstream_addr[at++] = ':';
    if (x->up_port < 0) upstream_addr[at++] = '-';
    at += tg_headbuf_dec(upstream_addr + at,
                         x->up_port < 0 ? 0 - (uint64_t)x->up_port : (uint64_t)x->up_port);
    upstream_addr[at] = '\0';
    tg_access_log_entry_t e = {
        .time_ms = x->start_unix_ms,
        .request_id = tg_str_from(x->request_id),
        .client_ip = tg_str_from(c->peer_ip),
        .method = c->head.method,
        .uri = c->head.target,
        .status = x->status,
        .route_id = route_id,
        .service_id = service_id,
        .consumer_id = consumer_id,
        .request_ms = total,
        .proxy_ms = proxy,
        .upstream_ms = upstream,
        .bytes_sent = x->bytes_sent,
        .upstream = x->up_host[0] ? upstream_addr : NULL,
        .error = x->error,
    };
    tg_access_log_write(c->w->log, &e);
}

/* ---------------------------------------------------------------- ending exchanges */

/* Bytes of the next request that arrived with this one. */
static void keep_leftover(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (x->req_kind == TG_PX_BODY_NONE) {
        size_t used = c->head.head_len;
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    } else {
        if (x->next_len > c->cap) {
            c->buf = tg_realloc(c->buf, x->next_len);
            c->cap = x->next_len;
        }
        if (x->next_len) memcpy(c->buf, x->next_bytes, x->next_len);
        c->len = x->next_len;
    }
}

/* Keep-alive: wait for the next request (parsing what already arrived of it). */
static void wait_next(tg_proxy_conn_t *c)
{
    c->state = TG_PX_IDLE;
    c->parsed = 0;
    c->close_after = false;
    memset(&c->head, 0, sizeof(c->head));
    tg_deadline_set(&c->timer, TG_PROXY_IDLE_TIMEOUT_MS);
    if (tg_stream_read_start(&c->s, on_read) != 0) {
        conn_close(c);
        return;
    }
    if (c->len > 0) head_bytes(c, NULL, 0);
}

/*
 * Closing right after answering a client that is still sending (a refused head, an unread
 * body) would make the kernel reset the connection, and the client could lose our answer
 * with it: send FIN, read and drop what still comes for a little while, then close.
 */
static void linger(tg_proxy_conn_t *c)
{
    c->state = TG_PX_LINGER;
    tg_deadline_set(&c->timer, TG_PROXY_LINGER_MS);
    uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->s.tcp, NULL);
    if (tg_stream_read_start(&c->s, on_read) != 0) conn_close(c);
}

void tg_proxy_finish(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->active) return;
    account(c);
    tg_proxy_upstream_release(c, false);
    bool close = c->close_after || c->w->stopping || c->s.failed;
    bool unread = c->head.status != 0 || !x->req_done;
    if (!close) keep_leftover(c);
    exchange_reset(c);
    set_writing(c, false);
    if (close && unread && !c->s.failed)
        linger(c);
    else if (close)
        conn_close(c);
    else
        wait_next(c);
}

void tg_proxy_abort(tg_proxy_conn_t *c, const char *why)
{
    tg_proxy_exchange_t *x = &c->x;
    if (c->out.len && !c->s.failed && c->state != TG_PX_CLOSING)
        tg_proxy_client_flush(c); /* a response head already decided on still goes out */
    if (x->active) {
        if (!x->status) x->status = 499; /* nginx's "client closed request" */
        if (!x->error) x->error = why;
        account(c);
    }
    conn_close(c);
}

/* ---------------------------------------------------------------- timeouts */

static void on_client_timeout(tg_deadline_t *t)
{
    tg_proxy_conn_t *c = t->data;
    switch (c->state) {
    case TG_PX_IDLE:
    case TG_PX_LINGER:
        conn_close(c);
        return;
    case TG_PX_HEAD:
        if (c->len == 0) { /* a connection that never sent a byte */
            conn_close(c);
            return;
        }
        c->head.status = 408; /* slowloris: the head took too long */
        c->close_after = true;
        tg_stream_read_stop(&c->s);
        start_request(c);
        return;
    case TG_PX_BUFFERING:
    case TG_PX_UPSTREAM:
        if (c->x.head_sent) break;
        c->close_after = true;
        tg_proxy_upstream_release(c, false);
        tg_proxy_client_reading(c, false);
        tg_proxy_respond_error(c, 408, "Request timeout");
        return;
    default:
        break;
    }
    tg_proxy_abort(c, "client timed out");
}

/* ---------------------------------------------------------------- reading */

int tg_proxy_read_again(tg_proxy_conn_t *c)
{
    return tg_stream_read_start(&c->s, on_read);
}

void tg_proxy_client_reading(tg_proxy_conn_t *c, bool on)
{
    if (on) {
        if (tg_stream_read_start(&c->s, on_read) != 0) {
            tg_proxy_abort(c, "client connection failed");
            return;
        }
        tg_deadline_set(&c->timer, TG_PROXY_CLIENT_TIMEOUT_MS);
    } else {
        tg_stream_read_stop(&c->s);
        tg_deadline_clear(&c->timer);
    }
}

static void client_gone(tg_proxy_conn_t *c, int status)
{
    if (c->state == TG_PX_IDLE || c->state == TG_PX_LINGER ||
        (c->state == TG_PX_HEAD && c->len == 0)) {
        conn_close(c);
        return;
    }
    if (c->state == TG_PX_HEAD) {
        conn_close(c); /* a partial head: nobody to answer */
        return;
    }
    tg_proxy_abort(c, status == -TG_ECLOSED ? "client closed the connection"
                                            : "client connection failed");
}

static void on_read(tg_stream_t *s, int status, const char *data, size_t len)
{
    tg_proxy_conn_t *c = (tg_proxy_conn_t *)s;
    if (status < 0) {
        client_gone(c, status);
        return;
    }
    switch (c->state) {
    case TG_PX_IDLE:
    case TG_PX_HEAD:
        head_bytes(c, data, len);
        break;
    case TG_PX_BUFFERING:
    case TG_PX_UPSTREAM:
        tg_proxy_client_body(c, data, len);
        break;
    case TG_PX_LINGER:
        break; /* dropped */
    default:
        tg_stream_read_stop(s);
        break; /* not expecting bytes now */
    }
}

/* ---------------------------------------------------------------- request heads */

static const char *head_error_message(int status)
{
    switch (status) {
    case 414:
        return "URI too long";
    case 431:
        return "Request header or cookie too large";
    case 501:
        return "Not implemented";
    case 505:
        return "HTTP version not supported";
    default:
        return "Bad request";
    }
}

static void begin_head(tg_proxy_conn_t *c)
{
    c->state = TG_PX_HEAD;
    c->head_started = uv_now(&c->w->loop);
    c->x.t_start = uv_hrtime();
    set_reading(c, true);
    tg_deadline_set(&c->timer, TG_PROXY_HEADER_TIMEOUT_MS);
}

static bool append(tg_proxy_conn_t *c, const char *data, size_t len)
{
    if (c->len + len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len)
            cap *= 2;
        if (cap > TG_PROXY_MAX_HEAD + 65536) cap = TG_PROXY_MAX_HEAD + 65536;
        if (cap < c->len + len) return false;
        c->buf = tg_realloc(c->buf, cap);
        c->cap = cap;
    }
    if (len) memcpy(c->buf + c->len, data, len);
    c->len += len;
    return true;
}

static void head_bytes(tg_proxy_conn_t *c, const char *data, size_t len)
{
    if (c->state == TG_PX_IDLE) begin_head(c);
    if (!append(c, data, len)) {
        c->head.status = 431;
        c->close_after = true;
        start_request(c);
        return;
    }
    int rc = tg_http_parse_request(c->buf, c->len, c->parsed, &limits, c->headers, &c->head);
    c->parsed = c->len;
    if (rc == -TG_EAGAIN) return;
    if (rc < 0)
        c->close_after = true; /* head.status says what to answer */
    else
        c->head.status = 0;
    tg_stream_read_stop(&c->s);
    tg_deadline_clear(&c->timer);
    start_request(c);
}

/* ---------------------------------------------------------------- requests */

static tg_str_t header_value(const tg_proxy_conn_t *c, const char *name)
{
    const tg_http_header_t *h = tg_http_header_find(c->head.headers, c->head.nheaders, name);
    return h ? h->value : TG_STR("");
}

static void fill_request(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_req_t *r = &x->req;
    tg_req_init(r);
    r->method = c->head.method;
    r->path = c->head.path;
    bool has_query = memchr(c->head.target.p, '?', c->head.target.len) != NULL;
    r->query = has_query ? c->head.query : TG_STR_NULL;
    r->headers = c->head.headers;
    r->nheaders = c->head.nheaders;
    r->client_ip = tg_str_from(c->peer_ip);
    r->start_ms = x->start_unix_ms;
    r->request_id = tg_str_from(x->request_id);
    if (c->w->has_reader) {
        tg_identity_store_init(&x->ids, &c->w->reader);
        x->ids.cache = c->w->idcache;
        r->identity = &x->ids.source;
        tg_proxy_realm_attach(c);
    }
    if (c->head.chunked)
        x->req_kind = TG_PX_BODY_CHUNKED;
    else if (c->head.content_length > 0)
        x->req_kind = TG_PX_BODY_LENGTH;
    x->req_left = c->head.content_length > 0 ? (uint64_t)c->head.content_length : 0;
    x->req_done = x->req_kind == TG_PX_BODY_NONE;
    if (x->req_kind == TG_PX_BODY_CHUNKED) tg_http_chunked_init(&x->req_chunked, &limits);
}

/* https_redirect_status_code: 426 with Kong's body, else a redirect to the https URL. */
static void redirect_https(tg_proxy_conn_t *c, int status)
{
    if (status == 426) {
        static const char body[] = "{\"message\":\"Please use HTTPS protocol\"}";
        tg_http_header_t h = {TG_STR("Upgrade"), TG_STR("TLS/1.2, HTTP/1.1")};
        tg_proxy_respond(c, 426, "application/json; charset=utf-8", body, sizeof(body) - 1, &h, 1);
        return;
    }
    tg_str_t host = header_value(c, "host");
    const char *colon = memchr(host.p, ':', host.len);
    if (colon && host.p[0] != '[') host.len = (size_t)(colon - host.p);
    char *loc = tg_req_alloc(&c->x.req, host.len + c->head.target.len + 16);
    int n = sprintf(loc, "https://%.*s%.*s", (int)host.len, host.p, (int)c->head.target.len,
                    c->head.target.p);
    tg_http_header_t h = {TG_STR("Location"), {loc, (size_t)n}};
    tg_proxy_respond(c, status, NULL, "", 0, &h, 1);
}

static int route(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->gen || !x->gen->router) return -TG_ENOTFOUND;
    x->path_buf = tg_req_alloc(&x->req, c->head.path.len + 1);
    const char *sni = tg_stream_sni(&c->s);
    tg_router_request_t rr = {
        .method = c->head.method,
        .host = header_value(c, "host"),
        .path = c->head.path,
        .sni = tg_str_from(sni),
        .https = c->l->ssl,
        .headers = c->head.headers,
        .nheaders = c->head.nheaders,
        .path_buf = x->path_buf,
        .scratch = c->w->scratch,
    };
    return tg_router_match(x->gen->router, &rr, &x->match);
}

/* Routing done: plugins, then the upstream. Also the re-entry point after body buffering. */
void tg_proxy_run_access(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    switch (tg_proxy_plugins_access(c)) {
    case TG_FLOW_DONE:
        return; /* the plugin's answer is on its way */
    case TG_FLOW_WAIT:
        tg_proxy_realm_park(c);
        return;
    case TG_FLOW_AGAIN:
        if (x->body_finished) { /* it has the body and still waits: a plugin bug */
            TG_LOGE("proxy", "a plugin asked for the body again (request %s)", x->request_id);
            tg_proxy_respond_error(c, 500, "An unexpected error occurred");
            return;
        }
        c->state = TG_PX_BUFFERING;
        tg_proxy_client_body(c, NULL, 0);
        return;
    default:
        break;
    }
    tg_proxy_upstream_start(c);
}

static void start_request(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_worker_t *w = c->w;
    x->active = true;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x->start_unix_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    tg_worker_request_id(w, x->request_id);
    x->gen = tg_worker_generation(w);
    if (x->gen) tg_generation_ref(x->gen);
    c->state = TG_PX_UPSTREAM;
    set_reading(c, false);
    set_writing(c, true);
    if (c->head.status) { /* the parser refused the head, or the timer fired */
        int status = c->head.status;
        tg_req_init(&x->req);
        x->req.request_id = tg_str_from(x->request_id);
        tg_proxy_respond_error(c, status,
                               status == 408 ? "Request timeout" : head_error_message(status));
        return;
    }
    if (!c->head.keep_alive || w->stopping) c->close_after = true;
    fill_request(c);
    if (route(c) != 0) {
        tg_proxy_respond_error(c, 404, "no Route matched with those values");
        return;
    }
    x->req.route = x->match.route;
    x->req.service = x->match.service;
    x->req.norm_path = x->match.path; /* normalised once, for routing and plugins alike */
    if (!x->match.service) {
        tg_proxy_respond_error(c, 503, "no Service found with those values");
        return;
    }
    if (x->match.https_redirect_status) {
        redirect_https(c, x->match.https_redirect_status);
        return;
    }
    tg_proxy_run_access(c);
}

/* ---------------------------------------------------------------- request bodies */

static void on_client_written(tg_stream_t *s, int status, void *arg)
{
    tg_proxy_conn_t *c = (tg_proxy_conn_t *)s;
    c->x.pending_writes--;
    if (status != 0) {
        tg_proxy_abort(c, "client connection failed while writing");
        return;
    }
    tg_proxy_response_written(c);
}

bool tg_proxy_client_write(tg_proxy_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (tg_stream_write(&c->s, bufs, n, on_client_written, NULL) != 0) return false;
    c->x.pending_writes++;
    for (unsigned i = 0; i < n; i++)
        c->x.bytes_sent += bufs[i].len;
    return true;
}

bool tg_proxy_client_flush(tg_proxy_conn_t *c)
{
    if (c->out.len == 0) return true;
    uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
    c->out.len = 0;
    /* written at once (the rule) needs no callback: complete() can end the exchange now */
    int rc = tg_stream_write_now(&c->s, &b, 1, on_client_written, NULL);
    if (rc == 0) c->x.pending_writes++;
    if (rc >= 0) c->x.bytes_sent += b.len;
    if (c->out.cap > 4 * TG_PROXY_OUT_COPY_MAX) tg_headbuf_free(&c->out); /* a huge head */
    return rc >= 0;
}

/* "Expect: 100-continue": the client waits for this before sending its body. */
static void send_continue(tg_proxy_conn_t *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    tg_proxy_exchange_t *x = &c->x;
    if (!c->head.expect_continue || x->continue_sent || x->req_done) return;
    x->continue_sent = true;
    uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
    if (tg_proxy_client_write(c, &b, 1)) x->bytes_sent -= b.len; /* interim: not body bytes */
}

static void stash(tg_proxy_conn_t *c, const char *data, size_t len)
{
    tg_proxy_exchange_t *x = &c->x;
    x->next_bytes = tg_realloc(x->next_bytes, x->next_len + len);
    memcpy(x->next_bytes + x->next_len, data, len);
    x->next_len += len;
}

/* A span of body data: into the plugin's buffer or on to the upstream. False: stop. */
static bool body_span(tg_proxy_conn_t *c, const char *p, size_t n)
{
    tg_proxy_exchange_t *x = &c->x;
    if (c->state == TG_PX_UPSTREAM) {
        tg_proxy_upstream_body(c, p, n);
        return c->state == TG_PX_UPSTREAM && x->active;
    }
    if (x->body_len + n > TG_PROXY_BODY_BUFFER_MAX) {
        x->req.body_state = TG_REQ_BODY_TOOBIG;
        c->close_after = true;
        tg_proxy_client_reading(c, false);
        tg_proxy_respond_error(c, 413, "Payload too large");
        return false;
    }
    if (x->body_len + n > x->body_cap) {
        x->body_cap = x->body_cap ? x->body_cap * 2 : 16384;
        while (x->body_cap < x->body_len + n)
            x->body_cap *= 2;
        x->body = tg_realloc(x->body, x->body_cap + 1);
    }
    memcpy(x->body + x->body_len, p, n);
    x->body_len += n;
    return true;
}

static void bad_body(tg_proxy_conn_t *c)
{
    c->close_after = true;
    if (c->x.head_sent) {
        tg_proxy_abort(c, "malformed chunked request body");
        return;
    }
    tg_proxy_client_reading(c, false);
    tg_proxy_upstream_release(c, false);
    tg_proxy_respond_error(c, 400, "Bad request");
}

/* Decodes body framing; returns false when the exchange went elsewhere meanwhile. */
static bool consume(tg_proxy_conn_t *c, const char *data, size_t len)
{
    tg_proxy_exchange_t *x = &c->x;
    while (len > 0 && !x->req_done) {
        size_t used = 0;
        tg_str_t span = TG_STR_NULL;
        if (x->req_kind == TG_PX_BODY_LENGTH) {
            used = len < x->req_left ? len : (size_t)x->req_left;
            span = (tg_str_t){data, used};
            x->req_left -= used;
            x->req_done = x->req_left == 0;
        } else {
            if (tg_http_chunked_feed(&x->req_chunked, data, len, &used, &span) != 0) {
                bad_body(c);
                return false;
            }
            x->req_done = tg_http_chunked_done(&x->req_chunked);
        }
        data += used;
        len -= used;
        if (span.len && !body_span(c, span.p, span.len)) return false;
        if (used == 0 && span.len == 0) break;
    }
    if (len > 0) stash(c, data, len);
    return true;
}

static void body_done(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (x->body_finished) return; /* a resumed read after backpressure found it complete */
    x->body_finished = true;
    tg_proxy_client_reading(c, false);
    if (c->state == TG_PX_UPSTREAM) {
        tg_proxy_upstream_body(c, NULL, 0);
        return;
    }
    if (x->body) x->body[x->body_len] = '\0';
    x->req.body_state = TG_REQ_BODY_READY;
    x->req.body = (tg_str_t){x->body ? x->body : "", x->body_len};
    x->req.content_type = header_value(c, "content-type");
    c->state = TG_PX_UPSTREAM;
    tg_proxy_run_access(c);
}

void tg_proxy_client_body(tg_proxy_conn_t *c, const char *data, size_t len)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->initial_fed) { /* body bytes that came with the head */
        x->initial_fed = true;
        size_t off = c->head.head_len;
        if (x->req_kind != TG_PX_BODY_NONE && c->len > off &&
            !consume(c, c->buf + off, c->len - off))
            return;
    }
    if (len && !consume(c, data, len)) return;
    if (x->req_done)
        body_done(c);
    else if (!x->client_paused) {
        send_continue(c);
        tg_proxy_client_reading(c, true);
    }
}

/* ---------------------------------------------------------------- connections */

static void on_handshake(tg_stream_t *s, int status)
{
    tg_proxy_conn_t *c = (tg_proxy_conn_t *)s;
    if (status != 0 || tg_stream_read_start(&c->s, on_read) != 0) conn_close(c);
}

void tg_proxy_accept(tg_worker_t *w, tg_worker_listener_t *l)
{
    tg_proxy_conn_t *c = tg_calloc(1, sizeof(*c));
    c->w = w;
    c->l = l;
    c->state = TG_PX_IDLE;
    tg_deadline_init(&c->timer, &w->loop, on_client_timeout, c);
    tg_deadline_init(&c->up_timer, &w->loop, tg_proxy_on_up_timeout, c);
    c->open_handles = 3;
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    tg_metrics_inc(&w->metrics->conns_accepted);
    tg_metrics_add(&w->metrics->conns_active, 1);
    if (tg_stream_accept(&c->s, &w->loop, (uv_stream_t *)&l->tcp, c) != 0) {
        conn_close(c);
        return;
    }
    tg_metrics_inc(&w->metrics->conns_handled);
    tg_stream_peer_ip(&c->s, c->peer_ip, sizeof(c->peer_ip));
    /* a new connection gets the header timeout from the start, TLS handshake included */
    tg_deadline_set(&c->timer, TG_PROXY_HEADER_TIMEOUT_MS);
    int rc = l->ssl ? tg_stream_start_tls(&c->s, w->opts.server_ssl, true, NULL, on_handshake)
                    : tg_stream_read_start(&c->s, on_read);
    if (rc != 0) conn_close(c);
}

void tg_proxy_drain(tg_worker_t *w)
{
    tg_proxy_conn_t *next;
    for (tg_proxy_conn_t *c = w->conns; c; c = next) {
        next = c->next;
        if (c->state == TG_PX_IDLE)
            conn_close(c);
        else
            c->close_after = true;
    }
}

void tg_proxy_close_all(tg_worker_t *w)
{
    tg_proxy_conn_t *next;
    for (tg_proxy_conn_t *c = w->conns; c; c = next) {
        next = c->next;
        tg_proxy_abort(c, "worker stopped before the request ended");
    }
}

void tg_proxy_send_timer(tg_proxy_conn_t *c)
{
    tg_deadline_set(&c->timer, TG_PROXY_CLIENT_TIMEOUT_MS);
}
