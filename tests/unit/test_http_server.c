/*
 * test_http_server.c — the HTTP/1.1 server on a real loopback socket.
 *
 * Each test starts a server on 127.0.0.1:0 with its loop running in a thread
 * and talks to it with blocking sockets (plain, or OpenSSL for TLS). The
 * application callback answers by path: /echo at once, /later and /hold from
 * a uv_timer (like the control plane answering from a worker), /close with
 * "Connection: close". Socket reads time out after 10 s so a broken server
 * fails a test instead of hanging it; nothing depends on timing otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "error.h"
#include "http.h"
#include "http_server.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 10

struct fixture {
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t thread;
    tg_http_server_t *srv;
    int port;
    atomic_int requests;
    atomic_int responded_later;
    SSL_CTX *server_ctx;
};

static char cert_path[64], key_path[64];

/* ---------------------------------------------------------------------------
 * The application
 */

struct delayed {
    uv_timer_t timer;
    tg_http_exchange_t *x;
    struct fixture *f;
};

static void delayed_closed(uv_handle_t *h)
{
    free(h->data);
}

static void delayed_fire(uv_timer_t *t)
{
    struct delayed *d = t->data;
    tg_http_header_t h = {TG_STR("Content-Type"), TG_STR("text/plain")};
    atomic_fetch_add(&d->f->responded_later, 1); /* before: the client may read at once */
    tg_http_respond(d->x, 200, &h, 1, "later", 5);
    uv_close((uv_handle_t *)t, delayed_closed);
}

static void respond_after(struct fixture *f, tg_http_exchange_t *x, unsigned ms)
{
    struct delayed *d = calloc(1, sizeof *d);
    d->x = x;
    d->f = f;
    uv_timer_init(&f->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, delayed_fire, ms, 0);
}

static void echo(tg_http_exchange_t *x, const tg_http_request_t *r)
{
    size_t cap = 256 + r->target.len + r->body_len;
    char *body = malloc(cap);
    int n = snprintf(body, cap, "%.*s %.*s|%.*s|%.*s|%s|%s|", (int)r->method.len, r->method.p,
                     (int)r->target.len, r->target.p, (int)r->path.len, r->path.p,
                     (int)r->query.len, r->query.p, r->tls ? "tls" : "plain",
                     r->body[r->body_len] == '\0' ? "nul" : "no-nul");
    memcpy(body + n, r->body, r->body_len);
    char count[32];
    snprintf(count, sizeof count, "%zu", r->nheaders);
    tg_http_header_t h[] = {
        {TG_STR("X-Header-Count"), tg_str_from(count)},
        {TG_STR("Content-Length"), TG_STR("999")}, /* dropped: framing is the server's */
        {TG_STR("X-Bad"), TG_STR("a\r\nInjected: yes")},
    };
    tg_http_respond(x, 200, h, 3, body, (size_t)n + r->body_len);
    free(body);
}

static void on_request(tg_http_exchange_t *x, const tg_http_request_t *r, void *udata)
{
    struct fixture *f = udata;
    atomic_fetch_add(&f->requests, 1);
    if (tg_str_eq_lit(r->path, "/later")) {
        respond_after(f, x, 50);
    } else if (tg_str_eq_lit(r->path, "/hold")) {
        respond_after(f, x, 300);
    } else if (tg_str_eq_lit(r->path, "/close")) {
        tg_http_header_t h = {TG_STR("Connection"), TG_STR("close")};
        tg_http_respond(x, 200, &h, 1, "bye", 3);
    } else if (tg_str_eq_lit(r->path, "/empty")) {
        tg_http_respond(x, 204, NULL, 0, NULL, 0);
    } else {
        echo(x, r);
    }
}

/* ---------------------------------------------------------------------------
 * Server fixture
 */

static void on_stop(uv_async_t *a)
{
    struct fixture *f = a->data;
    tg_http_server_close(f->srv);
    uv_close((uv_handle_t *)a, NULL);
}

static void run_loop(void *arg)
{
    struct fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static int start_server(void **state, tg_http_server_opts_t opts)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    opts.on_request = on_request;
    opts.udata = f;
    if (!opts.server_header) opts.server_header = "tollgate/test";
    f->srv = tg_http_server_create(&f->loop, &opts);
    assert_non_null(f->srv);
    assert_int_equal(tg_http_server_listen(f->srv, "127.0.0.1", 0), 0);
    f->port = tg_http_server_port(f->srv);
    assert_true(f->port > 0);
    uv_async_init(&f->loop, &f->stop, on_stop);
    f->stop.data = f;
    assert_int_equal(uv_thread_create(&f->thread, run_loop, f), 0);
    *state = f;
    return 0;
}

static int setup_plain(void **state)
{
    return start_server(state, (tg_http_server_opts_t){0});
}

/* Short timeouts, still long enough that a loaded machine never trips them early. */
static int setup_timeouts(void **state)
{
    return start_server(state, (tg_http_server_opts_t){
                                   .header_timeout_ms = 1000,
                                   .body_timeout_ms = 1000,
                                   .idle_timeout_ms = 1000,
                               });
}

static int setup_small_bodies(void **state)
{
    return start_server(state, (tg_http_server_opts_t){.max_body_size = 1000});
}

static int setup_tls(void **state)
{
    char err[256];
    SSL_CTX *ctx = tg_tls_server_ctx_new(cert_path, key_path, err, sizeof err);
    if (!ctx) fail_msg("server context: %s", err);
    int rc = start_server(state, (tg_http_server_opts_t){.ssl_ctx = ctx});
    /* The server holds its own reference. */
    SSL_CTX_free(ctx);
    return rc;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_async_send(&f->stop);
    uv_thread_join(&f->thread);
    /* Every handle (server, connections, timers) is closed and freed. */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------------------
 * A blocking client
 */

static int cli_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void cli_send_n(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

static void cli_send(int fd, const char *s)
{
    cli_send_n(fd, s, strlen(s));
}

struct response {
    int status;
    char head[4096];
    char body[65536];
    size_t body_len;
    tg_http_header_t hdrs[64];
    tg_http_response_head_t parsed;
};

/* Bytes read past the previous response (pipelining), per connection. */
struct conn_buf {
    char data[70000];
    size_t len;
};

typedef ssize_t (*read_fn)(void *io, char *buf, size_t len);

static ssize_t fd_read(void *io, char *buf, size_t len)
{
    return recv(*(int *)io, buf, len, 0);
}

static ssize_t ssl_read(void *io, char *buf, size_t len)
{
    int n = SSL_read(io, buf, (int)len);
    return n > 0 ? n : 0;
}

static void fill(read_fn rd, void *io, struct conn_buf *b)
{
    ssize_t n = rd(io, b->data + b->len, sizeof b->data - b->len);
    if (n <= 0) fail_msg("connection ended or timed out before a full response (%zd)", n);
    b->len += (size_t)n;
}

/* Reads one response (Content-Length framed) using our own response parser. */
static void read_response_io(read_fn rd, void *io, struct conn_buf *b, struct response *r,
                             bool head_request)
{
    static const tg_http_limits_t lim = {65536, 64, 8192};
    int rc;
    while ((rc = tg_http_parse_response(b->data, b->len, 0, &lim, r->hdrs, &r->parsed)) ==
           -TG_EAGAIN)
        fill(rd, io, b);
    assert_int_equal(rc, 0);
    size_t head = r->parsed.head_len;
    snprintf(r->head, sizeof r->head, "%.*s", (int)head, b->data);
    r->status = r->parsed.status;
    size_t body =
        head_request || r->parsed.content_length < 0 ? 0 : (size_t)r->parsed.content_length;
    while (b->len < head + body)
        fill(rd, io, b);
    memcpy(r->body, b->data + head, body);
    r->body[body] = '\0';
    r->body_len = body;
    memmove(b->data, b->data + head + body, b->len - head - body);
    b->len -= head + body;
}

static void read_response(int fd, struct conn_buf *b, struct response *r)
{
    read_response_io(fd_read, &fd, b, r, false);
}

static const char *header(struct response *r, const char *name)
{
    static char v[512];
    const tg_http_header_t *h = tg_http_header_find(r->hdrs, r->parsed.nheaders, name);
    if (!h) return NULL;
    snprintf(v, sizeof v, "%.*s", (int)h->value.len, h->value.p);
    return v;
}

/* True when the server closed the connection (EOF or reset), false on timeout. */
static bool cli_closed(int fd)
{
    char c;
    for (;;) {
        ssize_t n = recv(fd, &c, 1, 0);
        if (n == 0) return true;
        if (n < 0) return errno == ECONNRESET;
    }
}

/* Waits (up to the I/O timeout) for the loop thread to bump a counter. */
static void wait_for(atomic_int *counter)
{
    for (int i = 0; i < IO_TIMEOUT_S * 1000 && atomic_load(counter) == 0; i++)
        usleep(1000);
    assert_true(atomic_load(counter) > 0);
}

static struct response *one(struct fixture *f, const char *request)
{
    static struct response r;
    static struct conn_buf b;
    b.len = 0;
    int fd = cli_connect(f->port);
    cli_send(fd, request);
    read_response(fd, &b, &r);
    close(fd);
    return &r;
}

/* An error the server answers itself: JSON message, then the connection closes. */
static void expect_error(struct fixture *f, const char *request, int status, const char *message)
{
    static struct response r;
    struct conn_buf *b = calloc(1, sizeof *b);
    int fd = cli_connect(f->port);
    cli_send(fd, request);
    read_response(fd, b, &r);
    if (r.status != status) fail_msg("want %d, got %d for %s", status, r.status, request);
    assert_string_equal(header(&r, "Content-Type"), "application/json; charset=utf-8");
    assert_string_equal(header(&r, "Connection"), "close");
    char want[128];
    snprintf(want, sizeof want, "{\"message\":\"%s\"}", message);
    assert_string_equal(r.body, want);
    assert_true(cli_closed(fd));
    close(fd);
    free(b);
}

#define H "Host: test\r\n"

/* ---------------------------------------------------------------------------
 * Tests: plain HTTP
 */

static void basic_get(void **state)
{
    struct fixture *f = *state;
    struct response *r = one(f, "GET /echo?a=1 HTTP/1.1\r\n" H "\r\n");
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "GET /echo?a=1|/echo|a=1|plain|nul|");
    assert_string_equal(header(r, "Server"), "tollgate/test");
    assert_string_equal(header(r, "Connection"), "keep-alive");
    assert_string_equal(header(r, "X-Header-Count"), "1");
    assert_non_null(header(r, "Date"));
    assert_int_equal(strlen(header(r, "Date")), 29);
    assert_int_equal(tg_http_header_count(r->hdrs, r->parsed.nheaders, "content-length"), 1);
    assert_null(header(r, "X-Bad"));
    assert_null(header(r, "Injected"));
}

static void keep_alive(void **state)
{
    struct fixture *f = *state;
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    int fd = cli_connect(f->port);
    for (int i = 0; i < 5; i++) {
        cli_send(fd, "GET /echo HTTP/1.1\r\n" H "\r\n");
        read_response(fd, b, r);
        assert_int_equal(r->status, 200);
    }
    assert_int_equal(atomic_load(&f->requests), 5);
    close(fd);
    free(r);
    free(b);
}

static void pipelining_in_order(void **state)
{
    struct fixture *f = *state;
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    int fd = cli_connect(f->port);
    /* The first answer comes late; the others must still follow it, in order. */
    cli_send(fd, "GET /later HTTP/1.1\r\n" H "\r\n"
                 "POST /echo/1 HTTP/1.1\r\n" H "Content-Length: 3\r\n\r\nabc"
                 "GET /echo/2 HTTP/1.1\r\n" H "\r\n");
    read_response(fd, b, r);
    assert_string_equal(r->body, "later");
    read_response(fd, b, r);
    assert_string_equal(r->body, "POST /echo/1|/echo/1||plain|nul|abc");
    read_response(fd, b, r);
    assert_string_equal(r->body, "GET /echo/2|/echo/2||plain|nul|");
    close(fd);
    free(r);
    free(b);
}

static void post_bodies(void **state)
{
    struct fixture *f = *state;
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    int fd = cli_connect(f->port);
    /* Content-Length body arriving in pieces. */
    cli_send(fd, "POST /echo HTTP/1.1\r\n" H "Content-Length: 11\r\n\r\nhel");
    cli_send(fd, "lo ");
    cli_send(fd, "world");
    read_response(fd, b, r);
    assert_string_equal(r->body, "POST /echo|/echo||plain|nul|hello world");
    /* Chunked body, with an extension and a trailer, split mid-chunk. */
    cli_send(fd, "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n"
                 "5;ext=1\r\nhel");
    cli_send(fd, "lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    read_response(fd, b, r);
    assert_string_equal(r->body, "POST /echo|/echo||plain|nul|hello world");
    /* Empty chunked body. */
    cli_send(fd, "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    read_response(fd, b, r);
    assert_string_equal(r->body, "POST /echo|/echo||plain|nul|");
    close(fd);
    free(r);
    free(b);
}

static void head_has_length_but_no_body(void **state)
{
    struct fixture *f = *state;
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    int fd = cli_connect(f->port);
    cli_send(fd, "HEAD /echo HTTP/1.1\r\n" H "\r\n");
    read_response_io(fd_read, &fd, b, r, true);
    assert_int_equal(r->status, 200);
    assert_string_equal(header(r, "Content-Length"), "28"); /* the GET body */
    /* No body bytes were sent: the next response starts right away. */
    cli_send(fd, "GET /empty HTTP/1.1\r\n" H "\r\n");
    read_response(fd, b, r);
    assert_int_equal(r->status, 204);
    assert_null(header(r, "Content-Length"));
    assert_int_equal(b->len, 0);
    close(fd);
    free(r);
    free(b);
}

static void http10_and_connection_close(void **state)
{
    struct fixture *f = *state;
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    int fd = cli_connect(f->port);
    cli_send(fd, "GET /echo HTTP/1.0\r\n\r\n");
    read_response(fd, b, r);
    assert_string_equal(header(r, "Connection"), "close");
    assert_true(cli_closed(fd));
    close(fd);

    fd = cli_connect(f->port);
    b->len = 0;
    cli_send(fd, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    read_response(fd, b, r);
    assert_string_equal(header(r, "Connection"), "keep-alive");
    cli_send(fd, "GET /echo HTTP/1.1\r\n" H "Connection: close\r\n\r\n");
    read_response(fd, b, r);
    assert_string_equal(header(r, "Connection"), "close");
    assert_true(cli_closed(fd));
    close(fd);

    fd = cli_connect(f->port);
    b->len = 0;
    cli_send(fd, "GET /close HTTP/1.1\r\n" H "\r\n");
    read_response(fd, b, r);
    assert_string_equal(r->body, "bye");
    assert_string_equal(header(r, "Connection"), "close");
    assert_true(cli_closed(fd));
    close(fd);
    free(r);
    free(b);
}

static void refused_requests(void **state)
{
    struct fixture *f = *state;
    expect_error(f, "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "Bad request");
    expect_error(f, "GET / HTTP/1.1\n" H "\n", 400, "Bad request");
    expect_error(f, "GET / HTTP/1.1\r\n" H "X: a\r\n b\r\n\r\n", 400, "Bad request");
    expect_error(f,
                 "POST / HTTP/1.1\r\n" H "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                 400, "Bad request");
    expect_error(f, "POST / HTTP/1.1\r\n" H "Content-Length: 3\r\nContent-Length: 4\r\n\r\n", 400,
                 "Bad request");
    expect_error(f, "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", 501,
                 "Not implemented");
    expect_error(f, "GET / HTTP/2.0\r\n" H "\r\n", 505, "HTTP version not supported");
    expect_error(f, "POST / HTTP/1.1\r\n" H "Content-Length: 20000000\r\n\r\n", 413,
                 "Payload too large");
    expect_error(f, "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
                 "Bad request");
    assert_int_equal(atomic_load(&f->requests), 0);
}

static void oversized_heads(void **state)
{
    struct fixture *f = *state;
    char *s = malloc(80000);
    strcpy(s, "GET /");
    memset(s + 5, 'a', 9000);
    strcpy(s + 9005, " HTTP/1.1\r\n" H "\r\n");
    expect_error(f, s, 414, "URI too long");

    strcpy(s, "GET / HTTP/1.1\r\n" H);
    for (int i = 0; i < 101; i++)
        sprintf(s + strlen(s), "X-%d: v\r\n", i);
    strcat(s, "\r\n");
    expect_error(f, s, 431, "Request header fields too large");

    strcpy(s, "GET / HTTP/1.1\r\n" H "X-Big: ");
    size_t n = strlen(s);
    memset(s + n, 'v', 70000);
    strcpy(s + n + 70000, "\r\n\r\n");
    expect_error(f, s, 431, "Request header fields too large");
    free(s);
}

static void expect_continue(void **state)
{
    struct fixture *f = *state;
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    int fd = cli_connect(f->port);
    cli_send(fd, "PUT /echo HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    read_response(fd, b, r);
    assert_int_equal(r->status, 100);
    cli_send(fd, "data");
    read_response(fd, b, r);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "PUT /echo|/echo||plain|nul|data");
    close(fd);
    /* Too large: 413 instead of 100, and the body is never read. */
    expect_error(
        f, "PUT /echo HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 99999999\r\n\r\n",
        413, "Payload too large");
    free(r);
    free(b);
}

static void respond_later(void **state)
{
    struct fixture *f = *state;
    struct response *r = one(f, "GET /later HTTP/1.1\r\n" H "\r\n");
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "later");
    assert_string_equal(header(r, "Content-Type"), "text/plain");
    assert_int_equal(atomic_load(&f->responded_later), 1);
}

static void client_gone_before_respond(void **state)
{
    struct fixture *f = *state;
    int fd = cli_connect(f->port);
    cli_send(fd, "GET /hold HTTP/1.1\r\n" H "\r\n");
    /* Wait until the application has the request, then vanish. */
    wait_for(&f->requests);
    close(fd);
    /* The late answer must be dropped quietly; the server keeps serving. */
    wait_for(&f->responded_later);
    struct response *r = one(f, "GET /echo HTTP/1.1\r\n" H "\r\n");
    assert_int_equal(r->status, 200);
}

static void client_gone_mid_body(void **state)
{
    struct fixture *f = *state;
    int fd = cli_connect(f->port);
    cli_send(fd, "POST /echo HTTP/1.1\r\n" H "Content-Length: 100\r\n\r\npartial");
    close(fd);
    fd = cli_connect(f->port);
    cli_send(fd, "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n5\r\nab");
    close(fd);
    struct response *r = one(f, "GET /echo HTTP/1.1\r\n" H "\r\n");
    assert_int_equal(r->status, 200);
    /* Neither half-sent request reached the application. */
    assert_int_equal(atomic_load(&f->requests), 1);
}

/* ---------------------------------------------------------------------------
 * Tests: timeouts (1 s) and body limits (1000 bytes)
 */

static void slow_head_gets_408(void **state)
{
    struct fixture *f = *state;
    expect_error(f, "GET / HTTP/1.1\r\nHost: slow", 408, "Request timeout");
}

static void slow_body_gets_408(void **state)
{
    struct fixture *f = *state;
    expect_error(f, "POST /echo HTTP/1.1\r\n" H "Content-Length: 10\r\n\r\nabc", 408,
                 "Request timeout");
}

static void silent_connection_is_closed(void **state)
{
    struct fixture *f = *state;
    int fd = cli_connect(f->port);
    assert_true(cli_closed(fd)); /* no bytes, no 408: just closed */
    close(fd);
    /* Idle keep-alive connections are closed too. */
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    fd = cli_connect(f->port);
    cli_send(fd, "GET /echo HTTP/1.1\r\n" H "\r\n");
    read_response(fd, b, r);
    assert_int_equal(r->status, 200);
    assert_true(cli_closed(fd));
    close(fd);
    free(r);
    free(b);
}

static void body_limits(void **state)
{
    struct fixture *f = *state;
    expect_error(f, "POST /echo HTTP/1.1\r\n" H "Content-Length: 1001\r\n\r\n", 413,
                 "Payload too large");
    /* A chunked body is cut off as soon as it announces too much. */
    expect_error(f, "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n3e9\r\n", 413,
                 "Payload too large");
    /* Sizes near 2^64 must not wrap around the check. */
    expect_error(f,
                 "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n"
                 "1\r\nx\r\nffffffffffffffff\r\nxxxx",
                 413, "Payload too large");
    /* ... or once the chunks together grow too large. */
    char *s = malloc(4000);
    strcpy(s, "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        strcat(s, "190\r\n");
        size_t n = strlen(s);
        memset(s + n, 'x', 400);
        strcpy(s + n + 400, "\r\n");
    }
    expect_error(f, s, 413, "Payload too large");
    /* Exactly the limit is fine. */
    strcpy(s, "POST /echo HTTP/1.1\r\n" H "Content-Length: 1000\r\n\r\n");
    size_t n = strlen(s);
    memset(s + n, 'y', 1000);
    s[n + 1000] = '\0';
    struct response *r = one(f, s);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_len, strlen("POST /echo|/echo||plain|nul|") + 1000);
    free(s);
}

/* ---------------------------------------------------------------------------
 * Tests: TLS
 */

static SSL *tls_connect(int fd, SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        fail_msg("TLS handshake failed");
    }
    return ssl;
}

static void tls_requests(void **state)
{
    struct fixture *f = *state;
    /* Our client context, verifying the throwaway certificate as its own CA. */
    SSL_CTX *ctx = tg_tls_client_ctx_new(cert_path, true);
    assert_non_null(ctx);
    int fd = cli_connect(f->port);
    SSL *ssl = tls_connect(fd, ctx);
    assert_int_equal(SSL_get_verify_result(ssl), X509_V_OK);
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    static const char req[] = "POST /echo HTTP/1.1\r\n" H "Content-Length: 6\r\n\r\nsecret"
                              "GET /later HTTP/1.1\r\n" H "\r\n";
    assert_int_equal(SSL_write(ssl, req, sizeof req - 1), (int)sizeof req - 1);
    read_response_io(ssl_read, ssl, b, r, false);
    assert_string_equal(r->body, "POST /echo|/echo||tls|nul|secret");
    read_response_io(ssl_read, ssl, b, r, false);
    assert_string_equal(r->body, "later");
    static const char bye[] = "GET /close HTTP/1.1\r\n" H "\r\n";
    assert_int_equal(SSL_write(ssl, bye, sizeof bye - 1), (int)sizeof bye - 1);
    read_response_io(ssl_read, ssl, b, r, false);
    assert_string_equal(r->body, "bye");
    /* The server ends the session with close_notify. */
    char c;
    assert_int_equal(SSL_read(ssl, &c, 1), 0);
    assert_int_equal(SSL_get_error(ssl, 0), SSL_ERROR_ZERO_RETURN);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    free(r);
    free(b);
}

static void tls_bad_handshake_then_good(void **state)
{
    struct fixture *f = *state;
    /* Plain HTTP on the TLS port: the handshake fails, the connection closes. */
    int fd = cli_connect(f->port);
    cli_send(fd, "GET / HTTP/1.1\r\n" H "\r\n");
    assert_true(cli_closed(fd));
    close(fd);
    SSL_CTX *ctx = tg_tls_client_ctx_new(NULL, false);
    fd = cli_connect(f->port);
    SSL *ssl = tls_connect(fd, ctx);
    static const char req[] = "GET /echo HTTP/1.1\r\n" H "\r\n";
    SSL_write(ssl, req, sizeof req - 1);
    struct conn_buf *b = calloc(1, sizeof *b);
    struct response *r = malloc(sizeof *r);
    read_response_io(ssl_read, ssl, b, r, false);
    assert_int_equal(r->status, 200);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    free(r);
    free(b);
}

/* A tg_tls client on a libuv loop, talking to the server on the same loop. */
struct uv_client {
    struct fixture *f;
    uv_tcp_t tcp;
    uv_connect_t connect;
    tg_tls_t *tls;
    int handshake_status;
    int read_status;
    char data[4096];
    size_t len;
};

static void uv_client_closed(uv_handle_t *h)
{
    struct uv_client *cl = h->data;
    tg_tls_free(cl->tls);
    cl->tls = NULL;
}

static void uv_client_done(struct uv_client *cl)
{
    if (!uv_is_closing((uv_handle_t *)&cl->tcp)) {
        cl->tcp.data = cl; /* the TLS session no longer needs it */
        uv_close((uv_handle_t *)&cl->tcp, uv_client_closed);
    }
    tg_http_server_close(cl->f->srv);
}

static void uv_client_read(tg_tls_t *t, int status, const char *data, size_t len, void *udata)
{
    struct uv_client *cl = udata;
    if (status < 0) {
        cl->read_status = status;
        uv_client_done(cl);
        return;
    }
    memcpy(cl->data + cl->len, data, len);
    cl->len += len;
    if (strstr(cl->data, "\r\n\r\n") && cl->len > 100 && strstr(cl->data, "|tls|")) {
        tg_tls_read_stop(t);
        uv_client_done(cl);
    }
}

static void uv_client_handshake(tg_tls_t *t, int status, void *udata)
{
    struct uv_client *cl = udata;
    cl->handshake_status = status;
    if (status < 0) {
        uv_client_done(cl);
        return;
    }
    static const char req[] = "GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)req, sizeof req - 1);
    assert_int_equal(tg_tls_write(t, &b, 1, NULL, NULL), 0);
    assert_int_equal(tg_tls_read_start(t, uv_client_read), 0);
}

static void uv_client_connected(uv_connect_t *req, int status)
{
    struct uv_client *cl = req->data;
    assert_int_equal(status, 0);
    assert_non_null(cl->tls);
    assert_int_equal(tg_tls_handshake(cl->tls, uv_client_handshake), 0);
}

static void run_uv_client(struct uv_client *cl, SSL_CTX *client_ctx)
{
    char err[256];
    struct fixture *f = calloc(1, sizeof *f);
    cl->f = f;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    SSL_CTX *server_ctx = tg_tls_server_ctx_new(cert_path, key_path, err, sizeof err);
    assert_non_null(server_ctx);
    tg_http_server_opts_t opts = {.ssl_ctx = server_ctx, .on_request = on_request, .udata = f};
    f->srv = tg_http_server_create(&f->loop, &opts);
    SSL_CTX_free(server_ctx);
    assert_int_equal(tg_http_server_listen(f->srv, "127.0.0.1", 0), 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", tg_http_server_port(f->srv), &a);
    uv_tcp_init(&f->loop, &cl->tcp);
    cl->tls = tg_tls_new(client_ctx, (uv_stream_t *)&cl->tcp, false, cl);
    assert_int_equal(tg_tls_set_hostname(cl->tls, "localhost"), 0);
    cl->connect.data = cl;
    uv_tcp_connect(&cl->connect, &cl->tcp, (struct sockaddr *)&a, uv_client_connected);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
}

static void tls_client_transport(void **state)
{
    struct uv_client *cl = calloc(1, sizeof *cl);
    SSL_CTX *ctx = tg_tls_client_ctx_new(cert_path, true);
    run_uv_client(cl, ctx);
    assert_int_equal(cl->handshake_status, 0);
    assert_non_null(strstr(cl->data, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(cl->data, "GET /echo|/echo||tls|nul|"));
    SSL_CTX_free(ctx);

    /* Verification against the system store rejects the self-signed server. */
    memset(cl, 0, sizeof *cl);
    ctx = tg_tls_client_ctx_new(NULL, true);
    run_uv_client(cl, ctx);
    assert_int_equal(cl->handshake_status, -TG_ETLS);
    SSL_CTX_free(ctx);
    free(cl);
}

static void tls_context_errors(void **state)
{
    char err[256] = "";
    assert_null(tg_tls_server_ctx_new("/nonexistent/cert.pem", key_path, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/cert.pem"));
    assert_null(tg_tls_server_ctx_new(cert_path, "/nonexistent/key.pem", err, sizeof err));
    assert_non_null(strstr(err, "key"));
    assert_null(tg_tls_client_ctx_new("/nonexistent/ca.pem", true));
}

/* ---------------------------------------------------------------------------
 * A throwaway self-signed certificate for "localhost"
 */

static void make_cert(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:localhost");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);

    strcpy(cert_path, "/tmp/tg-test-cert-XXXXXX");
    strcpy(key_path, "/tmp/tg-test-key-XXXXXX");
    FILE *cf = fdopen(mkstemp(cert_path), "w");
    FILE *kf = fdopen(mkstemp(key_path), "w");
    assert_true(cf && kf);
    PEM_write_X509(cf, x);
    PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL);
    fclose(cf);
    fclose(kf);
    X509_free(x);
    EVP_PKEY_free(key);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_cert();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(basic_get, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(keep_alive, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(pipelining_in_order, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(post_bodies, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(head_has_length_but_no_body, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(http10_and_connection_close, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(refused_requests, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(oversized_heads, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(expect_continue, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(respond_later, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(client_gone_before_respond, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(client_gone_mid_body, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(slow_head_gets_408, setup_timeouts, teardown),
        cmocka_unit_test_setup_teardown(slow_body_gets_408, setup_timeouts, teardown),
        cmocka_unit_test_setup_teardown(silent_connection_is_closed, setup_timeouts, teardown),
        cmocka_unit_test_setup_teardown(body_limits, setup_small_bodies, teardown),
        cmocka_unit_test_setup_teardown(tls_requests, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(tls_bad_handshake_then_good, setup_tls, teardown),
        cmocka_unit_test(tls_client_transport),
        cmocka_unit_test(tls_context_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(cert_path);
    unlink(key_path);
    return rc;
}
