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

/* One bit per name length (mod 64) of the response edits: a name whose bit is clear cannot
 * be among them, which spares most of the comparisons on every response. */
static uint64_t edit_lengths(const tg_req_t *r, uint64_t *repeated)
{
    uint64_t seen = 0, twice = 0;
    for (size_t i = 0; i < r->nresponse_headers; i++) {
        uint64_t bit = UINT64_C(1) << (r->response_headers[i].name_len & 63);
        twice |= seen & bit;
        seen |= bit;
    }
    if (repeated) *repeated = twice;
    return seen;
}

void tg_proxy_response_plugin_headers(tg_proxy_conn_t *c, tg_headbuf_t *b)
{
    const tg_req_t *r = &c->x.req;
    uint64_t repeated;
    edit_lengths(r, &repeated);
    for (size_t i = 0; i < r->nresponse_headers; i++) {
        const tg_req_header_edit_t *e = &r->response_headers[i];
        tg_str_t name = {e->name, e->name_len};
        if (!e->value.p) continue;
        if ((repeated >> (name.len & 63) & 1) && plugin_sets(r, name, i + 1)) continue; /* last wins */
        if (!e->valid && (!tg_http_is_token(name) || !tg_http_is_field_value(e->value)))
            continue;
        tg_headbuf_header(b, name, e->value);
    }
}

static bool connection_listed(const tg_http_response_head_t *h, tg_str_t name)
{
    for (size_t i = 0; i < h->nheaders; i++) {
        if (!tg_proxy_caseeq(h->headers[i].name, TG_STR("connection"))) continue;
        tg_str_t rest = h->headers[i].value, tok;
        while (tg_proxy_next_token(&rest, &tok))
            if (tg_proxy_caseeq(tok, name)) return true;
    }
    return false;
}

/* The tokens of the upstream's Connection headers, split once per response rather than once
 * per header they could name. */
#define CONN_TOKENS 16

typedef struct conn_tokens {
    tg_str_t tok[CONN_TOKENS];
    size_t n;
    bool overflow; /* more than fit: connection_listed() decides */
} conn_tokens_t;

/* Adds one Connection value's tokens, split and trimmed as connection_listed() does them. */
static void add_tokens(conn_tokens_t *t, tg_str_t v)
{
    tg_str_t rest = v, tok;
    while (!t->overflow && tg_proxy_next_token(&rest, &tok)) {
        if (!tok.len) continue; /* an empty one never equals a header name */
        if (t->n == CONN_TOKENS)
            t->overflow = true;
        else
            t->tok[t->n++] = tok;
    }
}

static bool token_listed(const conn_tokens_t *t, const tg_http_response_head_t *h, tg_str_t name)
{
    if (t->overflow) return connection_listed(h, name);
    for (size_t i = 0; i < t->n; i++)
        if (tg_proxy_caseeq(t->tok[i], name)) return true;
    return false;
}

/* What an upstream response header is to the client's head. */
enum up_class {
    UH_FORWARD,    /* passes (unless a plugin sets it or Connection lists it) */
    UH_DROP,       /* hop-by-hop */
    UH_LENGTH,     /* Content-Length: ours replaces it, except on bodiless responses */
    UH_VIA,        /* dropped, and extended in ours */
    UH_CONNECTION, /* dropped, and its tokens are dropped too */
    UH_SERVER,     /* passes; no Server of ours then */
    UH_DATE,       /* passes; no Date of ours then */
};

/* Upstream headers the client never sees as they are. By length first, so most names cost
 * one switch and at most two compares. */
static enum up_class classify(tg_str_t name)
{
    if (name.len >= 6 && tg_http_token_is((tg_str_t){name.p, 6}, TG_STR("proxy-"))) return UH_DROP;
#define IS(lit) tg_http_token_is(name, TG_STR(lit))
    switch (name.len) {
    case 2:
        return IS("te") ? UH_DROP : UH_FORWARD;
    case 3:
        return IS("via") ? UH_VIA : UH_FORWARD;
    case 4:
        return IS("date") ? UH_DATE : UH_FORWARD;
    case 6:
        return IS("server") ? UH_SERVER : UH_FORWARD;
    case 7:
        return IS("trailer") || IS("upgrade") ? UH_DROP : UH_FORWARD;
    case 10:
        if (IS("connection")) return UH_CONNECTION;
        return IS("keep-alive") ? UH_DROP : UH_FORWARD;
    case 14:
        return IS("content-length") ? UH_LENGTH : UH_FORWARD;
    case 17:
        return IS("transfer-encoding") ? UH_DROP : UH_FORWARD;
    default:
        return UH_FORWARD;
    }
#undef IS
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

/* The upstream's headers that pass, with what the rest of the head needs to know of them:
 * whether Server and Date passed, and the first Via. */
static void add_upstream_headers(tg_proxy_conn_t *c, tg_headbuf_t *b, bool *server, bool *date,
                                 tg_str_t *via)
{
    tg_proxy_exchange_t *x = &c->x;
    const tg_http_response_head_t *h = &x->resp;
    bool keep_length = x->resp_kind == TG_HTTP_BODY_NONE; /* HEAD, 304: as the upstream said */
    uint8_t cls[TG_PROXY_MAX_HEADERS];
    uint64_t edits = edit_lengths(&x->req, NULL);
    conn_tokens_t ct; /* filled up to n: no need to zero its array */
    ct.n = 0;
    ct.overflow = false;
    bool conn = false;
    *via = TG_STR_NULL;
    for (size_t i = 0; i < h->nheaders; i++) { /* first pass: Connection may come last */
        enum up_class k = classify(h->headers[i].name);
        cls[i] = (uint8_t)k;
        if (k == UH_CONNECTION) {
            conn = true;
            add_tokens(&ct, h->headers[i].value);
        }
        if (k == UH_VIA && !via->p) *via = h->headers[i].value;
    }
    for (size_t i = 0; i < h->nheaders; i++) {
        tg_str_t name = h->headers[i].name;
        enum up_class k = cls[i];
        if (k == UH_DROP || k == UH_VIA || k == UH_CONNECTION || (k == UH_LENGTH && !keep_length))
            continue;
        if (conn && token_listed(&ct, h, name)) continue;
        if ((edits >> (name.len & 63) & 1) && plugin_sets(&x->req, name, 0)) continue;
        if (k == UH_SERVER) *server = true;
        if (k == UH_DATE) *date = true;
        tg_headbuf_header(b, name, h->headers[i].value);
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
    tg_str_t via;
    add_upstream_headers(c, b, &server, &date, &via);
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
    if (via.p) {
        tg_headbuf_adds(b, via);
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
