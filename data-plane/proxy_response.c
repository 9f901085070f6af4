/*
 * proxy_response.c — from the upstream back to the client: the response head is parsed
 * strictly (anything invalid is a 502), interim 1xx heads are skipped, the plugins'
 * response phase runs, the head goes out with hop-by-hop headers removed and the gateway's
 * headers added (Via, latencies, request id, Server), and the body streams back — length-
 * delimited as received, re-chunked otherwise — with backpressure: upstream reads stop
 * while the client's write queue is above TG_PROXY_WRITE_HIGH.
 */
#include "proxy_int.h"
#include "alloc.h"
#include "error.h"
#include "log.h"
#include "proxy_plugins.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD_GATEWAY "An invalid response was received from the upstream server"
#define RBUF_MAX (TG_PROXY_MAX_HEAD + 65536)

static const tg_http_limits_t limits = {TG_PROXY_MAX_HEAD, TG_PROXY_MAX_HEADERS, TG_PROXY_MAX_URI};

/* ---------------------------------------------------------------- the head */

static bool name_eq(tg_str_t a, const char *b, size_t blen)
{
    if (a.len != blen) return false;
    for (size_t i = 0; i < blen; i++) {
        char x = a.p[i] == '_' ? '-' : a.p[i], y = b[i] == '_' ? '-' : b[i];
        if ((x | 0x20) != (y | 0x20)) return false;
    }
    return true;
}

/* A plugin set or removed this response header: the upstream's copy goes. */
static bool plugin_sets(const tg_req_t *r, tg_str_t name, size_t from)
{
    for (size_t i = from; i < r->nresponse_headers; i++)
        if (name_eq(name, r->response_headers[i].name, r->response_headers[i].name_len))
            return true;
    return false;
}

void tg_proxy_response_plugin_headers(tg_proxy_conn_t *c, tg_headbuf_t *b)
{
    const tg_req_t *r = &c->x.req;
    for (size_t i = 0; i < r->nresponse_headers; i++) {
        const tg_req_header_edit_t *e = &r->response_headers[i];
        tg_str_t name = {e->name, e->name_len};
        if (!e->value.p || plugin_sets(r, name, i + 1)) continue; /* last wins */
        if (!tg_http_is_token(name) || !tg_http_is_field_value(e->value)) continue;
        tg_headbuf_header(b, name, e->value);
    }
}

static bool connection_listed(const tg_http_response_head_t *h, tg_str_t name)
{
    for (size_t i = 0; i < h->nheaders; i++) {
        if (!tg_proxy_caseeq(h->headers[i].name, TG_STR("connection"))) continue;
        tg_str_t v = h->headers[i].value;
        for (size_t s = 0; s <= v.len; s++) {
            size_t e = s;
            while (e < v.len && v.p[e] != ',')
                e++;
            tg_str_t tok = {v.p + s, e - s};
            while (tok.len && *tok.p == ' ')
                tok.p++, tok.len--;
            while (tok.len && tok.p[tok.len - 1] == ' ')
                tok.len--;
            if (tg_proxy_caseeq(tok, name)) return true;
            s = e;
        }
    }
    return false;
}

/* Upstream headers the client never sees as they are. */
static bool hop_by_hop(const tg_http_response_head_t *h, tg_str_t name, bool keep_length,
                       bool has_connection)
{
    static const tg_str_t names[] = {
        TG_STR("connection"),        TG_STR("keep-alive"), TG_STR("te"), TG_STR("trailer"),
        TG_STR("transfer-encoding"), TG_STR("upgrade"),    TG_STR("via")};
    if (name.len >= 6 && tg_proxy_caseeq((tg_str_t){name.p, 6}, TG_STR("proxy-"))) return true;
    if (!keep_length && tg_proxy_caseeq(name, TG_STR("content-length"))) return true;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (tg_proxy_caseeq(name, names[i])) return true;
    return has_connection && connection_listed(h, name);
}

/* How the body reaches the client: length as received, re-chunked (HTTP/1.1 clients) or
 * delimited by closing the connection (HTTP/1.0 clients). */
static void choose_framing(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    x->resp_kind = tg_http_response_body(&x->resp, c->head.method);
    if (x->resp_kind == TG_HTTP_BODY_LENGTH) x->resp_left = (uint64_t)x->resp.content_length;
    if (x->resp_kind == TG_HTTP_BODY_CHUNKED) tg_http_chunked_init(&x->resp_chunked, &limits);
    bool streamed = x->resp_kind == TG_HTTP_BODY_CHUNKED || x->resp_kind == TG_HTTP_BODY_EOF;
    if (streamed && c->head.minor_version >= 1)
        x->resp_chunk_out = true;
    else if (streamed)
        c->close_after = true;
    if (!x->req_done) c->close_after = true; /* answered before the whole body arrived */
}

static void add_upstream_headers(tg_proxy_conn_t *c, tg_headbuf_t *b, bool *server, bool *date)
{
    tg_proxy_exchange_t *x = &c->x;
    bool keep_length = x->resp_kind == TG_HTTP_BODY_NONE; /* HEAD, 304: as the upstream said */
    bool conn = tg_http_header_find(x->resp.headers, x->resp.nheaders, "connection") != NULL;
    for (size_t i = 0; i < x->resp.nheaders; i++) {
        tg_str_t name = x->resp.headers[i].name;
        if (hop_by_hop(&x->resp, name, keep_length, conn) || plugin_sets(&x->req, name, 0))
            continue;
        if (tg_proxy_caseeq(name, TG_STR("server"))) *server = true;
        if (tg_proxy_caseeq(name, TG_STR("date"))) *date = true;
        tg_headbuf_header(b, name, x->resp.headers[i].value);
    }
}

static void build_head(tg_proxy_conn_t *c, tg_headbuf_t *b)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_str_t reason =
        x->resp.reason.len ? x->resp.reason : tg_str_from(tg_http_status_reason(x->status));
    TG_HEADBUF_LIT(b, "HTTP/1.1 ");
    tg_headbuf_addi(b, x->status);
    TG_HEADBUF_LIT(b, " ");
    tg_headbuf_adds(b, reason);
    TG_HEADBUF_LIT(b, "\r\n");
    bool server = false, date = false;
    add_upstream_headers(c, b, &server, &date);
    if (!date) {
        TG_HEADBUF_LIT(b, "Date: ");
        tg_headbuf_addz(b, tg_worker_date(c->w));
        TG_HEADBUF_LIT(b, "\r\n");
    }
    if (!server) TG_HEADBUF_LIT(b, "Server: tollgate/" TG_VERSION "\r\n");
    tg_proxy_response_plugin_headers(c, b);
    if (x->resp_kind == TG_HTTP_BODY_LENGTH) {
        TG_HEADBUF_LIT(b, "Content-Length: ");
        tg_headbuf_addu(b, x->resp_left);
        TG_HEADBUF_LIT(b, "\r\n");
    } else if (x->resp_chunk_out) {
        TG_HEADBUF_LIT(b, "Transfer-Encoding: chunked\r\n");
    }
    tg_headbuf_addz(b, c->close_after ? "Connection: close\r\n" : "Connection: keep-alive\r\n");
    TG_HEADBUF_LIT(b, "X-Tollgate-Upstream-Latency: ");
    tg_headbuf_addi(b, tg_proxy_ms(x->t_upstream, x->t_head));
    TG_HEADBUF_LIT(b, "\r\nX-Tollgate-Proxy-Latency: ");
    tg_headbuf_addi(b, tg_proxy_ms(x->t_start, x->t_upstream));
    TG_HEADBUF_LIT(b, "\r\nVia: ");
    const tg_http_header_t *via = tg_http_header_find(x->resp.headers, x->resp.nheaders, "via");
    if (via) {
        tg_headbuf_adds(b, via->value);
        TG_HEADBUF_LIT(b, ", ");
    }
    TG_HEADBUF_LIT(b, "1.1 tollgate/" TG_VERSION "\r\nX-Tollgate-Request-Id: ");
    tg_headbuf_addz(b, x->request_id);
    TG_HEADBUF_LIT(b, "\r\n\r\n");
}

/* The head waits in c->out for the body bytes that came with it (see tg_proxy_client_flush). */
static void send_head(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    x->status = x->resp.status;
    choose_framing(c);
    if (!x->req_done) tg_proxy_client_reading(c, false);
    c->state = TG_PX_RESPONSE;
    tg_proxy_plugins_response(c, x->status);
    build_head(c, &c->out);
    x->head_sent = true;
}

static bool flush(tg_proxy_conn_t *c)
{
    if (tg_proxy_client_flush(c)) return true;
    tg_proxy_abort(c, "client connection failed while writing");
    return false;
}

/* ---------------------------------------------------------------- the body */

static void complete(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    x->resp_done = true;
    bool reuse = x->resp.keep_alive && x->resp_kind != TG_HTTP_BODY_EOF && x->req_sent &&
                 x->up_pending == 0 && !x->up_extra && !x->up_paused;
    tg_proxy_upstream_release(c, reuse);
    if (x->resp_chunk_out) TG_HEADBUF_LIT(&c->out, "0\r\n\r\n");
    if (!flush(c)) return;
    if (x->pending_writes == 0)
        tg_proxy_finish(c);
    else
        tg_proxy_send_timer(c);
}

/* A body span to the client (chunk-framed when re-chunking): small ones join c->out, large
 * ones go out at once behind what c->out holds. */
static bool forward(tg_proxy_conn_t *c, const char *data, size_t len)
{
    char size[24];
    size_t n = c->x.resp_chunk_out ? tg_headbuf_hex(size, len) : 0;
    if (n) size[n++] = '\r', size[n++] = '\n';
    if (len <= TG_PROXY_OUT_COPY_MAX) {
        tg_headbuf_add(&c->out, size, n);
        tg_headbuf_add(&c->out, data, len);
        if (n) TG_HEADBUF_LIT(&c->out, "\r\n");
        return true;
    }
    uv_buf_t bufs[4];
    unsigned k = 0;
    if (c->out.len) bufs[k++] = uv_buf_init(c->out.p, (unsigned)c->out.len);
    if (n) bufs[k++] = uv_buf_init(size, (unsigned)n);
    bufs[k++] = uv_buf_init((char *)data, (unsigned)len);
    if (n) bufs[k++] = uv_buf_init("\r\n", 2);
    c->out.len = 0;
    if (tg_proxy_client_write(c, bufs, k)) return true;
    tg_proxy_abort(c, "client connection failed while writing");
    return false;
}

/* Client backpressure: stop reading the upstream while the client lags behind. */
static void throttle(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (x->up_paused || !x->up || tg_stream_write_queue(&c->s) <= TG_PROXY_WRITE_HIGH) return;
    x->up_paused = true;
    tg_stream_read_stop(&x->up->s);
    tg_proxy_upstream_arm(c);
    tg_proxy_send_timer(c);
}

static void body_data(tg_proxy_conn_t *c, const char *data, size_t len)
{
    tg_proxy_exchange_t *x = &c->x;
    while (len > 0 && !x->resp_done) {
        size_t used = len;
        tg_str_t span = {data, len};
        if (x->resp_kind == TG_HTTP_BODY_LENGTH) {
            used = span.len = len < x->resp_left ? len : (size_t)x->resp_left;
            x->resp_left -= used;
        } else if (x->resp_kind == TG_HTTP_BODY_CHUNKED &&
                   tg_http_chunked_feed(&x->resp_chunked, data, len, &used, &span) != 0) {
            tg_proxy_abort(c, "upstream sent a malformed chunked body");
            return;
        }
        data += used;
        len -= used;
        if (span.len && !forward(c, span.p, span.len)) return;
        if ((x->resp_kind == TG_HTTP_BODY_LENGTH && x->resp_left == 0) ||
            (x->resp_kind == TG_HTTP_BODY_CHUNKED && tg_http_chunked_done(&x->resp_chunked))) {
            if (len) x->up_extra = true;
            complete(c);
            return;
        }
        if (used == 0 && span.len == 0) break;
    }
    if (len && x->resp_done) x->up_extra = true;
    if (!x->resp_done && flush(c)) throttle(c);
}

/* ---------------------------------------------------------------- entry points */

static bool append(tg_proxy_exchange_t *x, const char *data, size_t len)
{
    if (x->rlen + len > x->rcap) {
        size_t cap = x->rcap ? x->rcap * 2 : 8192;
        while (cap < x->rlen + len)
            cap *= 2;
        if (cap > RBUF_MAX) cap = RBUF_MAX;
        if (cap < x->rlen + len) return false;
        x->rbuf = tg_realloc(x->rbuf, cap);
        x->rcap = cap;
    }
    memcpy(x->rbuf + x->rlen, data, len);
    x->rlen += len;
    return true;
}

/* Parses the head; skips 1xx. Returns 1 when complete, 0 for more, -1 after answering. */
static int parse_head(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->rheaders) x->rheaders = tg_malloc(TG_PROXY_MAX_HEADERS * sizeof(*x->rheaders));
    for (;;) {
        int rc =
            tg_http_parse_response(x->rbuf, x->rlen, x->rparsed, &limits, x->rheaders, &x->resp);
        x->rparsed = x->rlen;
        if (rc == -TG_EAGAIN) return 0;
        if (rc < 0 || x->resp.status == 101) {
            tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, "upstream sent an invalid response head");
            return -1;
        }
        if (x->resp.status >= 200) return 1;
        memmove(x->rbuf, x->rbuf + x->resp.head_len, x->rlen - x->resp.head_len); /* 1xx */
        x->rlen -= x->resp.head_len;
        x->rparsed = 0;
        if (x->rlen == 0) return 0;
    }
}

void tg_proxy_response_data(tg_proxy_conn_t *c, const char *data, size_t len)
{
    tg_proxy_exchange_t *x = &c->x;
    if (x->t_head) {
        body_data(c, data, len);
        return;
    }
    if (!append(x, data, len)) {
        tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, "upstream response head too large");
        return;
    }
    if (parse_head(c) != 1) return;
    x->t_head = uv_hrtime();
    tg_deadline_clear(&c->up_timer);
    send_head(c);
    size_t body = x->rlen - x->resp.head_len;
    if (x->resp_kind == TG_HTTP_BODY_NONE) {
        if (body) x->up_extra = true;
        complete(c);
        return;
    }
    if (body)
        body_data(c, x->rbuf + x->resp.head_len, body); /* flushes c->out */
    else
        flush(c);
}

void tg_proxy_response_eof(tg_proxy_conn_t *c, int status)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->t_head) {
        tg_proxy_upstream_fail(c, 502, BAD_GATEWAY,
                               "upstream closed before a complete response head");
        return;
    }
    if (x->resp_kind == TG_HTTP_BODY_EOF && status == -TG_ECLOSED && !x->resp_done) {
        complete(c);
        return;
    }
    if (!x->resp_done) tg_proxy_abort(c, "upstream closed before the end of the response");
}

void tg_proxy_response_written(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->active || c->state == TG_PX_CLOSING) return;
    if (x->resp_done) {
        if (x->pending_writes == 0) tg_proxy_finish(c);
        return;
    }
    if (x->up_paused && x->up && tg_stream_write_queue(&c->s) < TG_PROXY_WRITE_LOW) {
        x->up_paused = false;
        tg_deadline_clear(&c->timer);
        tg_proxy_upstream_arm(c);
        tg_stream_read_start(&x->up->s, NULL);
    }
}
