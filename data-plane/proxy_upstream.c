/*
 * proxy_upstream.c — from a routed request to the upstream: the target from the service,
 * a pooled or new connection (name resolution off the loop, connect and TLS with the
 * service's timeouts), the upstream request head (router path, Host, X-Forwarded-*, Via,
 * request id, plugin edits, hop-by-hop headers removed) and the body, streamed with
 * backpressure or sent from the plugin buffer. The response is read by proxy_response.c.
 */
#include "proxy_int.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD_GATEWAY "An invalid response was received from the upstream server"
#define TIMING_OUT "The upstream server is timing out"

static void acquire(tg_proxy_conn_t *c);

/* ---------------------------------------------------------------- timers */

void tg_proxy_on_up_timeout(tg_deadline_t *t)
{
    tg_proxy_conn_t *c = t->data;
    tg_proxy_exchange_t *x = &c->x;
    if (x->head_sent) {
        tg_proxy_abort(c, "upstream timed out while sending the response body");
        return;
    }
    bool connecting = x->resolving || !x->up || x->up->s.on_status != NULL;
    tg_proxy_upstream_fail(c, 504, TIMING_OUT,
                           connecting ? "upstream connect timed out" : "upstream timed out");
}

/* The upstream timer follows what we wait for: the upstream taking our bytes (write
 * timeout) or sending its own (read timeout). Waiting on the client is the client timer's. */
void tg_proxy_upstream_arm(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->up || x->up_paused)
        tg_deadline_clear(&c->up_timer);
    else if (tg_stream_write_queue(&x->up->s) > 0)
        tg_deadline_set(&c->up_timer, x->write_timeout);
    else if (x->req_sent || x->t_head)
        tg_deadline_set(&c->up_timer, x->read_timeout);
    else
        tg_deadline_clear(&c->up_timer);
}

/* ---------------------------------------------------------------- releasing and failing */

void tg_proxy_upstream_release(tg_proxy_conn_t *c, bool reuse)
{
    tg_proxy_exchange_t *x = &c->x;
    if (x->resolving) tg_resolver_cancel(&x->rwait);
    x->resolving = false;
    tg_deadline_clear(&c->up_timer);
    if (!x->up) return;
    if (reuse)
        tg_upstream_pool_put(x->up);
    else
        tg_upstream_pool_discard(x->up);
    x->up = NULL;
}

void tg_proxy_upstream_fail(tg_proxy_conn_t *c, int status, const char *message, const char *why)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_proxy_upstream_release(c, false);
    x->error = why;
    TG_LOGI("proxy", "%s: %s:%d (request %s)", why, x->up_host, x->up_port, x->request_id);
    if (x->head_sent) {
        tg_proxy_abort(c, why);
        return;
    }
    tg_proxy_client_reading(c, false);
    tg_proxy_respond_error(c, status, message);
}

/* ---------------------------------------------------------------- the target */

/* Host, port, TLS and timeouts from the service. -TG_EUNSUPPORTED for non-HTTP protocols. */
static int target(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    const tg_route_info_t *in = x->match.info; /* the service's fields, read once */
    const char *proto = in->protocol, *host = in->host;
    bool http = strcmp(proto, "http") == 0 || strcmp(proto, "ws") == 0;
    x->up_tls = strcmp(proto, "https") == 0 || strcmp(proto, "wss") == 0;
    if ((!http && !x->up_tls) || !host) return -TG_EUNSUPPORTED;
    size_t hlen = strlen(host);
    if (hlen >= sizeof(x->up_host)) hlen = sizeof(x->up_host) - 1;
    memcpy(x->up_host, host, hlen);
    x->up_host[hlen] = '\0';
    x->up_port = in->port > 0 ? (int)in->port : (x->up_tls ? 443 : 80);
    x->connect_timeout = in->connect_timeout;
    x->write_timeout = in->write_timeout;
    x->read_timeout = in->read_timeout;
    /* "host:port" or "host:port:tls" (up_key has room: host < 256, port <= 20 digits) */
    char *k = x->up_key;
    memcpy(k, x->up_host, hlen);
    k += hlen;
    *k++ = ':';
    if (x->up_port < 0) *k++ = '-';
    k += tg_headbuf_dec(k, x->up_port < 0 ? 0 - (uint64_t)x->up_port : (uint64_t)x->up_port);
    if (x->up_tls) memcpy(k, ":tls", 4), k += 4;
    *k = '\0';
    return 0;
}

/* ---------------------------------------------------------------- the request head */

static bool is_name(tg_str_t name, const char *want)
{
    return tg_proxy_caseeq(name, tg_str_from(want));
}

/* Listed in the client's Connection header: hop-by-hop by declaration. */
static bool connection_token(const tg_proxy_conn_t *c, tg_str_t name)
{
    for (size_t i = 0; i < c->head.nheaders; i++) {
        if (!is_name(c->head.headers[i].name, "connection")) continue;
        tg_str_t rest = c->head.headers[i].value, tok;
        while (tg_proxy_next_token(&rest, &tok))
            if (tg_proxy_caseeq(tok, name)) return true;
    }
    return false;
}

/* What a client header is to the upstream head. */
enum client_class {
    CH_FORWARD,    /* passes (unless a plugin edits it or Connection lists it) */
    CH_DROP,       /* hop-by-hop, or one we set ourselves */
    CH_HOST,       /* dropped, and read: Host (preserve_host, X-Forwarded-Host) */
    CH_XFF,        /* dropped, and read: X-Forwarded-For */
    CH_VIA,        /* dropped, and read: Via */
    CH_CONNECTION, /* dropped, and its tokens are dropped too */
};

/* Client headers we never forward as they are: hop-by-hop ones and those we set. By
 * length first, so most names cost one switch and at most two compares. */
static enum client_class classify(tg_str_t name)
{
    if (name.len >= 6 && tg_http_token_is((tg_str_t){name.p, 6}, TG_STR("proxy-"))) return CH_DROP;
#define IS(lit) tg_http_token_is(name, TG_STR(lit))
    switch (name.len) {
    case 2:
        return IS("te") ? CH_DROP : CH_FORWARD;
    case 3:
        return IS("via") ? CH_VIA : CH_FORWARD;
    case 4:
        return IS("host") ? CH_HOST : CH_FORWARD;
    case 6:
        return IS("expect") ? CH_DROP : CH_FORWARD;
    case 7:
        return IS("trailer") || IS("upgrade") ? CH_DROP : CH_FORWARD;
    case 9:
        return IS("x-real-ip") ? CH_DROP : CH_FORWARD;
    case 10:
        if (IS("connection")) return CH_CONNECTION;
        return IS("keep-alive") ? CH_DROP : CH_FORWARD;
    case 14:
        return IS("content-length") ? CH_DROP : CH_FORWARD;
    case 15:
        return IS("x-forwarded-for") ? CH_XFF : CH_FORWARD;
    case 16:
        return IS("x-forwarded-host") || IS("x-forwarded-port") || IS("x-forwarded-path")
                   ? CH_DROP
                   : CH_FORWARD;
    case 17:
        return IS("transfer-encoding") || IS("x-forwarded-proto") ? CH_DROP : CH_FORWARD;
    case 18:
        return IS("x-forwarded-prefix") ? CH_DROP : CH_FORWARD;
    case 21:
        return IS("x-tollgate-request-id") ? CH_DROP : CH_FORWARD;
    default:
        return CH_FORWARD;
    }
#undef IS
}

/* The client's headers as the upstream head needs them, from one pass: each one's class,
 * and the first Host, X-Forwarded-For and Via. */
typedef struct client_view {
    uint8_t cls[TG_PROXY_MAX_HEADERS];
    tg_str_t host, xff, via; /* .p NULL when absent */
    bool has_connection;
} client_view_t;

static void view_client(const tg_proxy_conn_t *c, client_view_t *v)
{
    v->host = v->xff = v->via = TG_STR_NULL;
    v->has_connection = false;
    for (size_t i = 0; i < c->head.nheaders; i++) {
        const tg_http_header_t *h = &c->head.headers[i];
        enum client_class k = classify(h->name);
        v->cls[i] = (uint8_t)k;
        if (k == CH_HOST && !v->host.p) v->host = h->value;
        if (k == CH_XFF && !v->xff.p) v->xff = h->value;
        if (k == CH_VIA && !v->via.p) v->via = h->value;
        if (k == CH_CONNECTION) v->has_connection = true;
    }
}

/* A plugin set or removed this header (names compare as Kong's: case and '_' vs '-'). */
static bool edited(const tg_req_t *r, tg_str_t name, size_t from)
{
    for (size_t i = from; i < r->nupstream_edits; i++) {
        const char *e = r->upstream_edits[i].name;
        if (r->upstream_edits[i].name_len != name.len) continue;
        size_t k = 0;
        for (; k < name.len; k++) {
            char a = name.p[k] == '_' ? '-' : name.p[k], b = e[k] == '_' ? '-' : e[k];
            if ((a | 0x20) != (b | 0x20)) break;
        }
        if (k == name.len) return true;
    }
    return false;
}

static void add_request_line(tg_proxy_conn_t *c, tg_headbuf_t *b)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_req_t *r = &x->req;
    tg_str_t query = r->query;
    if (r->query_replaced) query = r->new_query.len ? r->new_query : TG_STR_NULL;
    size_t cap = 3 * (x->match.path.len + x->match.service_path.len) + query.len + 2;
    char *path = tg_req_alloc(r, cap);
    size_t len = 0;
    tg_router_upstream_path(&x->match, query, path, cap, &len);
    tg_headbuf_adds(b, c->head.method);
    TG_HEADBUF_LIT(b, " ");
    tg_headbuf_add(b, path, len);
    TG_HEADBUF_LIT(b, " HTTP/1.1\r\n");
}

static void add_host(tg_proxy_conn_t *c, tg_headbuf_t *b, const client_view_t *v)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_str_t h = v->host;
    if (x->match.preserve_host && h.p) {
        tg_headbuf_header(b, TG_STR("Host"), h);
        return;
    }
    bool dflt = x->up_port == (x->up_tls ? 443 : 80);
    TG_HEADBUF_LIT(b, "Host: ");
    tg_headbuf_addz(b, x->up_host);
    if (!dflt) {
        TG_HEADBUF_LIT(b, ":");
        tg_headbuf_addi(b, x->up_port);
    }
    TG_HEADBUF_LIT(b, "\r\n");
}

static void add_client_headers(tg_proxy_conn_t *c, tg_headbuf_t *b, const client_view_t *v)
{
    tg_req_t *r = &c->x.req;
    for (size_t i = 0; i < c->head.nheaders; i++) {
        tg_str_t name = c->head.headers[i].name;
        if (v->cls[i] != CH_FORWARD || (v->has_connection && connection_token(c, name)) ||
            edited(r, name, 0))
            continue;
        if (r->body_replaced && r->new_content_type.len && is_name(name, "content-type")) continue;
        tg_headbuf_header(b, name, c->head.headers[i].value);
    }
    for (size_t i = 0; i < r->nupstream_edits; i++) {
        const tg_req_header_edit_t *e = &r->upstream_edits[i];
        tg_str_t name = {e->name, e->name_len};
        if (!e->value.p || edited(r, name, i + 1)) continue; /* last edit wins */
        if (!e->valid && (!tg_http_is_token(name) || !tg_http_is_field_value(e->value)))
            continue; /* e.g. a consumer name with a line break must not split the head */
        tg_headbuf_header(b, name, e->value);
    }
    if (r->body_replaced && r->new_content_type.len)
        tg_headbuf_header(b, TG_STR("Content-Type"), r->new_content_type);
}

/* X-Forwarded-*, X-Real-IP, Via and the request id (kong/runloop/handler.lua). */
static void add_forwarded(tg_proxy_conn_t *c, tg_headbuf_t *b, const client_view_t *v)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_str_t xff = v->xff, via = v->via;
    TG_HEADBUF_LIT(b, "X-Forwarded-For: ");
    if (xff.p) {
        tg_headbuf_adds(b, xff);
        TG_HEADBUF_LIT(b, ", ");
    }
    tg_headbuf_addz(b, c->peer_ip);
    tg_headbuf_addz(b, c->l->ssl ? "\r\nX-Forwarded-Proto: https\r\n"
                                 : "\r\nX-Forwarded-Proto: http\r\n");
    tg_str_t host = v->host;
    if (host.p) {
        const char *colon = host.p[0] == '[' ? NULL : memchr(host.p, ':', host.len);
        if (colon) host.len = (size_t)(colon - host.p);
        tg_headbuf_header(b, TG_STR("X-Forwarded-Host"), host);
    }
    TG_HEADBUF_LIT(b, "X-Forwarded-Port: ");
    tg_headbuf_addi(b, c->l->port);
    TG_HEADBUF_LIT(b, "\r\n");
    tg_headbuf_header(b, TG_STR("X-Forwarded-Path"), c->head.path);
    tg_str_t prefix = x->match.matched_path;
    if (x->match.strip_path && prefix.p && prefix.len > 1)
        tg_headbuf_header(b, TG_STR("X-Forwarded-Prefix"), prefix);
    TG_HEADBUF_LIT(b, "X-Real-IP: ");
    tg_headbuf_addz(b, c->peer_ip);
    TG_HEADBUF_LIT(b, "\r\nVia: ");
    if (via.p) {
        tg_headbuf_adds(b, via);
        TG_HEADBUF_LIT(b, ", ");
    }
    TG_HEADBUF_LIT(b, "1.1 tollgate/" TG_VERSION "\r\nX-Tollgate-Request-Id: ");
    tg_headbuf_addz(b, x->request_id);
    TG_HEADBUF_LIT(b, "\r\n");
}

/* The body we send from memory (plugin buffer or replacement), or NULL when it streams. */
static const tg_str_t *memory_body(tg_proxy_conn_t *c)
{
    tg_req_t *r = &c->x.req;
    if (r->body_replaced) return &r->new_body;
    if (r->body_state == TG_REQ_BODY_READY) return &r->body;
    return NULL;
}

static void add_framing(tg_proxy_conn_t *c, tg_headbuf_t *b)
{
    tg_proxy_exchange_t *x = &c->x;
    const tg_str_t *mem = memory_body(c);
    if (mem && (x->req_kind != TG_PX_BODY_NONE || mem->len || x->req.body_replaced)) {
        TG_HEADBUF_LIT(b, "Content-Length: ");
        tg_headbuf_addu(b, mem->len);
        TG_HEADBUF_LIT(b, "\r\n");
    } else if (x->req_kind == TG_PX_BODY_CHUNKED) {
        TG_HEADBUF_LIT(b, "Transfer-Encoding: chunked\r\n");
    } else if (x->req_kind == TG_PX_BODY_LENGTH || c->head.content_length == 0) {
        TG_HEADBUF_LIT(b, "Content-Length: ");
        tg_headbuf_addi(b, c->head.content_length);
        TG_HEADBUF_LIT(b, "\r\n");
    }
    TG_HEADBUF_LIT(b, "\r\n");
}

static void build_request(tg_proxy_conn_t *c)
{
    tg_headbuf_t b = {c->x.up_request, 0, c->x.up_request_cap}; /* the last exchange's buffer */
    client_view_t v;
    view_client(c, &v);
    add_request_line(c, &b);
    add_host(c, &b, &v);
    add_client_headers(c, &b, &v);
    add_forwarded(c, &b, &v);
    add_framing(c, &b);
    c->x.up_request = b.p;
    c->x.up_request_len = b.len;
    c->x.up_request_cap = b.cap;
}

/* ---------------------------------------------------------------- connection errors */

/* A reused connection the upstream had already closed fails at once: one new connection
 * may try again, as long as nothing that cannot be replayed was sent. */
static bool retry(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->up || !x->up->reused || x->retried || x->req_streamed || x->rlen || x->t_head)
        return false;
    x->retried = true;
    tg_upstream_pool_discard(x->up);
    x->up = NULL;
    acquire(c);
    return true;
}

/* The upstream connection failed before a response head arrived. */
static void failed_early(tg_proxy_conn_t *c, const char *why)
{
    if (!retry(c)) tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, why);
}

/* ---------------------------------------------------------------- reading and writing */

static void on_up_read(tg_stream_t *s, int status, const char *data, size_t len)
{
    tg_proxy_conn_t *c = s->owner;
    if (status < 0) {
        if (!c->x.t_head && !c->x.rlen) {
            failed_early(c, status == -TG_ECLOSED ? "upstream closed the connection"
                                                  : "upstream connection failed");
            return;
        }
        tg_proxy_response_eof(c, status);
        return;
    }
    tg_proxy_response_data(c, data, len);
    if (c->x.up && c->state != TG_PX_CLOSING) tg_proxy_upstream_arm(c);
}

static void on_up_written(tg_stream_t *s, int status, void *arg)
{
    tg_proxy_conn_t *c = s->owner;
    if (!c) return;
    tg_proxy_exchange_t *x = &c->x;
    x->up_pending--;
    if (status != 0) {
        if (x->t_head) return; /* the response is on its way; the read side decides */
        failed_early(c, "upstream connection failed while sending the request");
        return;
    }
    if (x->client_paused && tg_stream_write_queue(s) < TG_PROXY_WRITE_LOW) {
        x->client_paused = false;
        if (!x->req_done) tg_proxy_client_body(c, NULL, 0); /* read the client again */
        if (c->state != TG_PX_UPSTREAM) return;
    }
    tg_proxy_upstream_arm(c);
}

static bool up_write(tg_proxy_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (tg_stream_write(&c->x.up->s, bufs, n, on_up_written, NULL) == 0) {
        c->x.up_pending++;
        return true;
    }
    failed_early(c, "upstream connection failed while sending the request");
    return false;
}

/* up_write for the request head: written at once (the rule), it needs no callback. */
static bool up_write_now(tg_proxy_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    int rc = tg_stream_write_now(&c->x.up->s, bufs, n, on_up_written, NULL);
    if (rc == 0) c->x.up_pending++;
    if (rc >= 0) return true;
    failed_early(c, "upstream connection failed while sending the request");
    return false;
}

void tg_proxy_upstream_body(tg_proxy_conn_t *c, const char *data, size_t len)
{
    tg_proxy_exchange_t *x = &c->x;
    if (x->t_head) return; /* the upstream answered already: the rest of the body is moot */
    bool chunked = x->req_kind == TG_PX_BODY_CHUNKED;
    if (!data) { /* end of the body */
        x->req_sent = true;
        uv_buf_t last = uv_buf_init("0\r\n\r\n", 5);
        if (!chunked || up_write(c, &last, 1)) tg_proxy_upstream_arm(c);
        return;
    }
    char size[24];
    size_t n = tg_headbuf_hex(size, len);
    size[n++] = '\r';
    size[n++] = '\n';
    uv_buf_t framed[3] = {uv_buf_init(size, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                          uv_buf_init("\r\n", 2)};
    x->req_streamed = true; /* these bytes are gone from the client: no retry from here on */
    bool ok = chunked ? up_write(c, framed, 3) : up_write(c, &framed[1], 1);
    if (!ok) return;
    if (tg_stream_write_queue(&x->up->s) > TG_PROXY_WRITE_HIGH) {
        x->client_paused = true;
        tg_proxy_client_reading(c, false);
    }
    tg_proxy_upstream_arm(c);
}

/* The connection is ready: head, then the body from memory or streamed from the client. */
static void connected(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    x->up->s.on_status = NULL;
    tg_deadline_clear(&c->up_timer);
    if (tg_stream_read_start(&x->up->s, on_up_read) != 0) {
        failed_early(c, "upstream connection failed");
        return;
    }
    const tg_str_t *mem = memory_body(c);
    uv_buf_t bufs[2] = {uv_buf_init(x->up_request, (unsigned)x->up_request_len),
                        uv_buf_init((char *)(mem ? mem->p : ""), mem ? (unsigned)mem->len : 0)};
    if (mem || x->req_kind == TG_PX_BODY_NONE) { /* head and body in one write */
        if (!up_write_now(c, bufs, mem && mem->len ? 2 : 1)) return;
        x->req_sent = true;
        tg_proxy_upstream_arm(c);
        return;
    }
    if (!up_write_now(c, bufs, 1)) return;
    tg_proxy_upstream_arm(c);
    tg_proxy_client_body(c, NULL, 0); /* what came with the head, then reads from the client */
}

/* ---------------------------------------------------------------- connecting */

static void on_tls(tg_stream_t *s, int status)
{
    tg_proxy_conn_t *c = s->owner;
    if (status != 0)
        tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, "upstream TLS handshake failed");
    else
        connected(c);
}

static void on_connected(tg_stream_t *s, int status)
{
    tg_proxy_conn_t *c = s->owner;
    tg_proxy_exchange_t *x = &c->x;
    if (status != 0) { /* the why names the error: ECONNREFUSED, ETIMEDOUT... */
        tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, uv_err_name(s->connect_errno));
        return;
    }
    if (!x->up_tls) {
        connected(c);
        return;
    }
    const char *sni = tg_resolver_is_ip(x->up_host) ? NULL : x->up_host;
    if (tg_stream_start_tls(s, c->w->opts.upstream_ssl, false, sni, on_tls) != 0)
        tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, "upstream TLS handshake failed");
}

static void connect_to(tg_proxy_conn_t *c, const struct sockaddr *addr)
{
    tg_proxy_exchange_t *x = &c->x;
    x->up = tg_upstream_pool_conn_new(c->w->pool, x->up_key, c);
    tg_deadline_set(&c->up_timer, x->connect_timeout);
    if (tg_stream_connect(&x->up->s, &c->w->loop, addr, c, on_connected) != 0)
        tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, "upstream connect failed");
}

static void on_resolved(tg_resolver_wait_t *wt, int status, const struct sockaddr *addr)
{
    tg_proxy_conn_t *c = wt->arg;
    c->x.resolving = false;
    if (status != 0)
        tg_proxy_upstream_fail(c, 503, "name resolution failed", "name resolution failed");
    else
        connect_to(c, addr);
}

static void acquire(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    if (!x->retried && (x->up = tg_upstream_pool_take(c->w->pool, x->up_key, c))) {
        connected(c);
        return;
    }
    struct sockaddr_storage ss;
    x->rwait.cb = on_resolved;
    x->rwait.arg = c;
    int rc = tg_resolver_resolve(c->w->resolver, x->up_host, x->up_port, &ss, &x->rwait);
    if (rc == 1)
        connect_to(c, (struct sockaddr *)&ss);
    else if (rc < 0)
        tg_proxy_upstream_fail(c, 503, "name resolution failed", "name resolution failed");
    else {
        x->resolving = true;
        tg_deadline_set(&c->up_timer, x->connect_timeout);
    }
}

void tg_proxy_upstream_start(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    c->state = TG_PX_UPSTREAM;
    x->t_upstream = uv_hrtime();
    if (target(c) != 0) {
        tg_proxy_upstream_fail(c, 502, BAD_GATEWAY, "service protocol not supported by the proxy");
        return;
    }
    build_request(c);
    acquire(c);
}
