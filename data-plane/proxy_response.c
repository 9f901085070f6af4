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

static bool name_eq(tg_str_t a, const char *b)
{
    size_t n = strlen(b);
    if (a.len != n) return false;
    for (size_t i = 0; i < n; i++) {
        char x = a.p[i] == '_' ? '-' : a.p[i], y = b[i] == '_' ? '-' : b[i];
        if ((x | 0x20) != (y | 0x20)) return false;
    }
    return true;
}

/* A plugin set or removed this response header: the upstream's copy goes. */
static bool plugin_sets(const tg_req_t *r, tg_str_t name, size_t from)
{
    for (size_t i = from; i < r->nresponse_headers; i++)
        if (name_eq(name, r->response_headers[i].name)) return true;
    return false;
}

void tg_proxy_response_plugin_headers(tg_proxy_conn_t *c, tg_headbuf_t *b)
{
    const tg_req_t *r = &c->x.req;
    for (size_t i = 0; i < r->nresponse_headers; i++) {
        const tg_req_header_edit_t *e = &r->response_headers[i];
        if (!e->value.p || plugin_sets(r, tg_str_from(e->name), i + 1)) continue; /* last wins */
        if (!tg_http_is_token(tg_str_from(e->name)) || !tg_http_is_field_value(e->value)) continue;
        tg_headbuf_header(b, tg_str_from(e->name), e->value);
    }
}

static bool connection_listed(const tg_http_response_head_t *h, tg_str_t name)
{
    for (size_t i = 0; i < h->nheaders; i++) {
        if (!tg_str_caseeq(h->headers[i].name, TG_STR("connection"))) continue;
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
            if (tg_str_caseeq(tok, name)) return true;
            s = e;
        }
    }
    return false;
}

/* Upstream headers the client never sees as they are. */
static bool hop_by_hop(const tg_http_response_head_t *h, tg_str_t name, bool keep_length)
{
    static const char *const names[] = {"connection",        "keep-alive", "te",  "trailer",
                                        "transfer-encoding", "upgrade",    "via", NULL};
    if (name.len >= 6 && strncasecmp(name.p, "proxy-", 6) == 0) return true;
    if (!keep_length && tg_str_caseeq(name, TG_STR("content-length"))) return true;
    for (size_t i = 0; names[i]; i++)
        if (tg_str_caseeq(name, tg_str_from(names[i]))) return true;
    return connection_listed(h, name);
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
    for (size_t i = 0; i < x->resp.nheaders; i++) {
        tg_str_t name = x->resp.headers[i].name;
        if (hop_by_hop(&x->resp, name, keep_length) || plugin_sets(&x->req, name, 0)) continue;
        if (tg_str_caseeq(name, TG_STR("server"))) *server = true;
        if (tg_str_caseeq(name, TG_STR("date"))) *date = true;
        tg_headbuf_header(b, name, x->resp.headers[i].value);
    }
}

static void build_head(tg_proxy_conn_t *c, tg_headbuf_t *b)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_str_t reason =
        x->resp.reason.len ? x->resp.reason : tg_str_from(tg_http_status_reason(x->status));
    tg_headbuf_addf(b, "HTTP/1.1 %d %.*s\r\n", x->status, (int)reason.len, reason.p);
    bool server = false, date = false;
    add_upstream_headers(c, b, &server, &date);
    if (!date) tg_headbuf_addf(b, "Date: %s\r\n", tg_worker_date(c->w));
    if (!server)
        tg_headbuf_add(b, "Server: tollgate/" TG_VERSION "\r\n",
                       strlen("Server: tollgate/" TG_VERSION "\r\n"));
    tg_proxy_response_plugin_headers(c, b);
    if (x->resp_kind == TG_HTTP_BODY_LENGTH)
        tg_headbuf_addf(b, "Content-Length: %llu\r\n", (unsigned long long)x->resp_left);
    else if (x->resp_chunk_out)
        tg_headbuf_add(b, "Transfer-Encoding: chunked\r\n", 28);
    tg_headbuf_addf(b, "Connection: %s\r\n", c->close_after ? "close" : "keep-alive");
    tg_headbuf_addf(b, "X-Tollgate-Upstream-Latency: %lld\r\nX-Tollgate-Proxy-Latency: %lld\r\n",
                    (long long)tg_proxy_ms(x->t_upstream, x->t_head),
                    (long long)tg_proxy_ms(x->t_start, x->t_upstream));
    const tg_http_header_t *via = tg_http_header_find(x->resp.headers, x->resp.nheaders, "via");
    if (via)
        tg_headbuf_addf(b, "Via: %.*s, 1.1 tollgate/" TG_VERSION "\r\n", (int)via->value.len,
                        via->value.p);
    else
        tg_headbuf_addf(b, "Via: 1.1 tollgate/%s\r\n", TG_VERSION);
    tg_headbuf_addf(b, "X-Tollgate-Request-Id: %s\r\n\r\n", x->request_id);
}

static bool send_head(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    x->status = x->resp.status;
    choose_framing(c);
    if (!x->req_done) tg_proxy_client_reading(c, false);
    c->state = TG_PX_RESPONSE;
    tg_proxy_plugins_response(c, x->status);
    tg_headbuf_t b = {0};
    build_head(c, &b);
    uv_buf_t buf = uv_buf_init(b.p, (unsigned)b.len);
    bool ok = tg_proxy_client_write(c, &buf, 1);
    tg_headbuf_free(&b);
    x->head_sent = true;
    if (!ok) tg_proxy_abort(c, "client connection failed while writing");
    return ok;
}

/* ---------------------------------------------------------------- the body */

static void complete(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    x->resp_done = true;
    bool reuse = x->resp.keep_alive && x->resp_kind != TG_HTTP_BODY_EOF && x->req_sent &&
                 x->up_pending == 0 && !x->up_extra && !x->up_paused;
    tg_proxy_upstream_release(c, reuse);
    if (x->resp_chunk_out) {
        uv_buf_t last = uv_buf_init("0\r\n\r\n", 5);
        if (!tg_proxy_client_write(c, &last, 1)) {
            tg_proxy_abort(c, "client connection failed while writing");
            return;
        }
    }
    if (x->pending_writes == 0)
        tg_proxy_finish(c);
    else
        tg_proxy_send_timer(c);
}

static bool forward(tg_proxy_conn_t *c, const char *data, size_t len)
{
    char size[24];
    int n = snprintf(size, sizeof(size), "%zx\r\n", len);
    uv_buf_t framed[3] = {uv_buf_init(size, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                          uv_buf_init("\r\n", 2)};
    bool ok = c->x.resp_chunk_out ? tg_proxy_client_write(c, framed, 3)
                                  : tg_proxy_client_write(c, &framed[1], 1);
    if (!ok) tg_proxy_abort(c, "client connection failed while writing");
    return ok;
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
    if (!x->resp_done) throttle(c);
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
    if (!x->rheaders) x->rheaders = tg_calloc(TG_PROXY_MAX_HEADERS, sizeof(*x->rheaders));
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
    uv_timer_stop(&c->up_timer);
    if (!send_head(c)) return;
    size_t body = x->rlen - x->resp.head_len;
    if (x->resp_kind == TG_HTTP_BODY_NONE) {
        if (body) x->up_extra = true;
        complete(c);
        return;
    }
    if (body) body_data(c, x->rbuf + x->resp.head_len, body);
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
        uv_timer_stop(&c->timer);
        tg_proxy_upstream_arm(c);
        tg_stream_read_start(&x->up->s, NULL);
    }
}
