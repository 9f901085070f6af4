/*
 * https_client.c — see https_client.h.
 *
 * Blocking sockets with SO_RCVTIMEO/SO_SNDTIMEO under OpenSSL's socket BIO: a read that
 * times out surfaces as SSL_ERROR_WANT_READ/WRITE, which here can only mean the timeout
 * (the socket is blocking), so it is reported as -TG_ETIMEOUT. The connect itself is
 * non-blocking with poll() so that it has its own bound.
 */
#include "https_client.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "http_chunked.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)
#define DEFAULT_MAX_BODY (1024 * 1024)
#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_IO_MS 30000

/* Everything one request holds, released in one place. */
typedef struct conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char *err;
    size_t errlen;
    /* raw bytes received, and how far the head parser had seen */
    char *buf;
    size_t len, cap, parsed;
} conn_t;

__attribute__((format(printf, 3, 4))) static int fail(conn_t *c, int rc, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    ERR_clear_error(); /* never leave stale entries for the thread's next TLS session */
    return rc;
}

static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "protocol error";
}

int tg_https_split_hostport(const char *hostport, char *host, size_t hostcap, int *port)
{
    const char *colon, *h = hostport;
    size_t hlen;
    if (!hostport) return -TG_EINVAL;
    if (*h == '[') { /* [v6]:port */
        const char *close = strchr(h, ']');
        if (!close || close[1] != ':') return -TG_EINVAL;
        h++;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon || memchr(h, ':', (size_t)(colon - h))) return -TG_EINVAL; /* bare v6 */
        hlen = (size_t)(colon - h);
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (hlen == 0 || hlen >= hostcap || !colon[1] || *end || errno || p < 1 || p > 65535)
        return -TG_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

/* ---------------------------------------------------------------- TCP */

static int wait_connected(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n;
    do {
        n = poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n == 0) return -TG_ETIMEOUT;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) return -TG_EIO;
    errno = soerr;
    return soerr ? -TG_EIO : 0;
}

static int try_address(const struct addrinfo *ai, int connect_ms, int io_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) return -TG_EIO;
    int rc = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        rc = errno == EINPROGRESS ? wait_connected(fd, connect_ms) : -TG_EIO;
    struct timeval tv = {.tv_sec = io_ms / 1000, .tv_usec = (io_ms % 1000) * 1000};
    if (rc == 0 && (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 ||
                    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
                    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0))
        rc = -TG_EIO;
    if (rc == 0) return fd;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Tries every address the name resolves to, in order. */
static int tcp_connect(conn_t *c, const char *host, int port, int connect_ms, int io_ms)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char service[8];
    snprintf(service, sizeof(service), "%d", port);
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) return fail(c, -TG_EIO, "cannot resolve %s: %s", host, gai_strerror(gai));
    int rc = -TG_EIO;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        rc = try_address(ai, connect_ms, io_ms);
        if (rc >= 0) {
            c->fd = rc;
            break;
        }
    }
    freeaddrinfo(res);
    if (rc == -TG_ETIMEOUT) return fail(c, rc, "connecting to %s:%d timed out", host, port);
    if (rc < 0) return fail(c, rc, "cannot connect to %s:%d: %s", host, port, strerror(errno));
    return 0;
}

/* ---------------------------------------------------------------- TLS */

static bool is_ip(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* Adds every certificate of a PEM bundle to the context's trust store. */
static int trust_pem(conn_t *c, const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509_STORE *store = SSL_CTX_get_cert_store(c->ctx);
    int added = 0;
    X509 *x;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        if (X509_STORE_add_cert(store, x) == 1) added++;
        X509_free(x);
    }
    BIO_free(bio);
    ERR_clear_error(); /* the loop ends on a "no start line" error */
    return added ? 0 : fail(c, -TG_EINVAL, "the CA certificate is not valid PEM");
}

static int tls_setup(conn_t *c, const char *host, const tg_https_opts_t *o)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx || SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1)
        return fail(c, -TG_ETLS, "cannot create a TLS context: %s", ssl_reason());
    const char *name = o->verify_name ? o->verify_name : host;
    if (o->ca_pem) {
        int rc = trust_pem(c, o->ca_pem);
        if (rc) return rc;
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    }
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return fail(c, -TG_ETLS, "cannot create a TLS session: %s", ssl_reason());
    /* SNI carries host names only (RFC 6066 §3); an IP is checked against IP SANs. */
    if (!is_ip(host)) SSL_set_tlsext_host_name(c->ssl, host);
    int ok = 1;
    if (o->ca_pem)
        ok = is_ip(name) ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name)
                         : SSL_set1_host(c->ssl, name);
    return ok == 1 ? 0 : fail(c, -TG_EINVAL, "invalid server name '%s'", name);
}

/* Maps a failed SSL_* call to a code: a WANT_* on a blocking socket is the socket timeout. */
static int io_error(conn_t *c, int ret, const char *what)
{
    int e = SSL_get_error(c->ssl, ret);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return fail(c, -TG_ETIMEOUT, "%s timed out", what);
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        return fail(c, -TG_EIO, "%s: %s", what, errno ? strerror(errno) : "connection closed");
    return fail(c, -TG_ETLS, "%s: %s", what, ssl_reason());
}

static int tls_handshake(conn_t *c)
{
    int ret = SSL_connect(c->ssl);
    if (ret == 1) return 0;
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK)
        return fail(c, -TG_ETLS, "the server's certificate was refused: %s",
                    X509_verify_cert_error_string(v));
    return io_error(c, ret, "TLS handshake");
}

static int write_all(conn_t *c, const char *p, size_t len)
{
    while (len > 0) {
        int n = SSL_write(c->ssl, p, len > 1 << 30 ? 1 << 30 : (int)len);
        if (n <= 0) return io_error(c, n, "sending the request");
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads more ciphertext-decoded bytes into c->buf. Returns bytes read, 0 at EOF, or < 0. */
static int read_more(conn_t *c, size_t limit)
{
    if (c->len >= limit) return fail(c, -TG_ETOOBIG, "the response is too large");
    if (c->cap - c->len < 16384) {
        c->cap = c->cap ? c->cap * 2 : 32768;
        c->buf = tg_realloc(c->buf, c->cap + 1);
    }
    size_t room = c->cap - c->len;
    int n = SSL_read(c->ssl, c->buf + c->len, room > 1 << 30 ? 1 << 30 : (int)room);
    if (n > 0) {
        c->len += (size_t)n;
        return n;
    }
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    /* A peer that closes without close_notify: OpenSSL 3 reports it as an SSL error. */
    if (e == SSL_ERROR_SSL &&
        ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return 0;
    }
    return io_error(c, n, "reading the response");
}

/* ---------------------------------------------------------------- the response */

static const tg_http_limits_t limits = {
    .max_head_size = HEAD_MAX, .max_headers = TG_HTTPS_MAX_HEADERS, .max_uri = 8192};

/* Reads until a final (non-1xx) head is parsed; interim heads are dropped. */
static int read_head(conn_t *c, tg_https_response_t *r, tg_http_response_head_t *h)
{
    for (;;) {
        int rc = c->len ? tg_http_parse_response(c->buf, c->len, c->parsed, &limits, r->headers, h)
                        : -TG_EAGAIN;
        if (rc == 0 && h->status >= 200) return 0;
        if (rc == 0) { /* 1xx: forget it and parse what follows */
            memmove(c->buf, c->buf + h->head_len, c->len - h->head_len);
            c->len -= h->head_len;
            c->parsed = 0;
            continue;
        }
        if (rc != -TG_EAGAIN) return fail(c, -TG_EPARSE, "malformed response head from the server");
        c->parsed = c->len;
        int n = read_more(c, HEAD_MAX + 1);
        if (n < 0) return n == -TG_ETOOBIG ? fail(c, n, "the response head is too large") : n;
        if (n == 0)
            return fail(c, -TG_EPARSE, "the server closed the connection without a response");
    }
}

static int body_length(conn_t *c, size_t start, int64_t want, size_t max, tg_https_response_t *r)
{
    if (want < 0 || (uint64_t)want > max)
        return fail(c, -TG_ETOOBIG, "the response body is too large");
    while (c->len - start < (size_t)want) {
        int n = read_more(c, start + (size_t)want);
        if (n < 0) return n;
        if (n == 0) return fail(c, -TG_EPARSE, "the server closed the connection inside the body");
    }
    r->body = tg_strndup(c->buf + start, (size_t)want);
    r->body_len = (size_t)want;
    return 0;
}

static int body_eof(conn_t *c, size_t start, size_t max, tg_https_response_t *r)
{
    int n;
    while ((n = read_more(c, start + max + 1)) > 0) {
    }
    if (n < 0) return n;
    if (c->len - start > max) return fail(c, -TG_ETOOBIG, "the response body is too large");
    r->body_len = c->len - start;
    r->body = tg_strndup(c->buf + start, r->body_len);
    return 0;
}

static int body_chunked(conn_t *c, size_t start, size_t max, tg_https_response_t *r)
{
    tg_http_chunked_t dec;
    tg_http_chunked_init(&dec, &limits);
    size_t fed = start;
    r->body = tg_malloc(1);
    r->body_len = 0;
    /* Framing overhead is small; the raw bound keeps a trickle of tiny chunks finite. */
    size_t raw_limit = start + 2 * max + 65536;
    while (!tg_http_chunked_done(&dec)) {
        while (fed < c->len && !tg_http_chunked_done(&dec)) {
            size_t used;
            tg_str_t data;
            if (tg_http_chunked_feed(&dec, c->buf + fed, c->len - fed, &used, &data) != 0)
                return fail(c, -TG_EPARSE, "malformed chunked body from the server");
            fed += used;
            if (r->body_len + data.len > max)
                return fail(c, -TG_ETOOBIG, "the response body is too large");
            r->body = tg_realloc(r->body, r->body_len + data.len + 1);
            memcpy(r->body + r->body_len, data.p, data.len);
            r->body_len += data.len;
        }
        if (tg_http_chunked_done(&dec)) break;
        int n = read_more(c, raw_limit);
        if (n < 0) return n;
        if (n == 0) return fail(c, -TG_EPARSE, "the server closed the connection inside the body");
    }
    r->body[r->body_len] = '\0';
    return 0;
}

static int read_response(conn_t *c, const char *method, size_t max, tg_https_response_t *r)
{
    tg_http_response_head_t h;
    int rc = read_head(c, r, &h);
    if (rc) return rc;
    r->status = h.status;
    r->nheaders = h.nheaders;
    /* The headers point into c->buf, which keeps growing: give them a buffer of their own. */
    r->head = tg_strndup(c->buf, h.head_len);
    for (size_t i = 0; i < h.nheaders; i++) {
        r->headers[i].name.p = r->head + (r->headers[i].name.p - c->buf);
        r->headers[i].value.p = r->head + (r->headers[i].value.p - c->buf);
    }
    switch (tg_http_response_body(&h, tg_str_from(method))) {
    case TG_HTTP_BODY_NONE:
        r->body = tg_strdup("");
        return 0;
    case TG_HTTP_BODY_LENGTH:
        return body_length(c, h.head_len, h.content_length, max, r);
    case TG_HTTP_BODY_CHUNKED:
        return body_chunked(c, h.head_len, max, r);
    default:
        return body_eof(c, h.head_len, max, r);
    }
}

/* ---------------------------------------------------------------- the request */

static char *request_text(const char *method, const char *path, const char *host, int port,
                          const char *const *headers, size_t nheaders, const char *body,
                          size_t body_len)
{
    bool v6 = strchr(host, ':') != NULL;
    char *text = tg_asprintf("%s %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nConnection: close\r\n"
                             "User-Agent: tollgate/" TG_VERSION "\r\n",
                             method, path, v6 ? "[" : "", host, v6 ? "]" : "", port);
    for (size_t i = 0; i < nheaders; i++) {
        char *next = tg_asprintf("%s%s\r\n", text, headers[i]);
        free(text);
        text = next;
    }
    char *next = body ? tg_asprintf("%sContent-Length: %zu\r\n\r\n", text, body_len)
                      : tg_asprintf("%s\r\n", text);
    free(text);
    return next;
}

/* Header lines must not smuggle extra lines into the request. */
static bool headers_ok(const char *const *headers, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!headers[i] || strpbrk(headers[i], "\r\n") || !strchr(headers[i], ':')) return false;
    return true;
}

static void conn_close(conn_t *c)
{
    if (c->ssl) {
        SSL_free(c->ssl); /* no close_notify: "Connection: close" and the response is complete */
    }
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0) close(c->fd);
    free(c->buf);
}

int tg_https_request(const char *hostport, const char *method, const char *path,
                     const char *const *headers, size_t nheaders, const char *body, size_t body_len,
                     const tg_https_opts_t *opts, tg_https_response_t *resp, char *err,
                     size_t errlen)
{
    static const tg_https_opts_t none;
    const tg_https_opts_t *o = opts ? opts : &none;
    conn_t c = {.fd = -1, .err = err, .errlen = errlen};
    memset(resp, 0, sizeof(*resp));
    char host[256];
    int port;
    if (tg_https_split_hostport(hostport, host, sizeof(host), &port) != 0)
        return fail(&c, -TG_EINVAL, "'%s' is not HOST:PORT", hostport ? hostport : "");
    if (!method || !path || *path != '/' || strpbrk(path, " \r\n") ||
        !headers_ok(headers, nheaders))
        return fail(&c, -TG_EINVAL, "invalid request");
    int rc = tcp_connect(&c, host, port,
                         o->connect_timeout_ms > 0 ? o->connect_timeout_ms : DEFAULT_CONNECT_MS,
                         o->io_timeout_ms > 0 ? o->io_timeout_ms : DEFAULT_IO_MS);
    if (!rc) rc = tls_setup(&c, host, o);
    if (!rc) rc = tls_handshake(&c);
    if (!rc) {
        char *head = request_text(method, path, host, port, headers, nheaders, body, body_len);
        rc = write_all(&c, head, strlen(head));
        free(head);
    }
    if (!rc && body && body_len) rc = write_all(&c, body, body_len);
    if (!rc) rc = read_response(&c, method, o->max_body ? o->max_body : DEFAULT_MAX_BODY, resp);
    conn_close(&c);
    if (rc) tg_https_response_free(resp);
    return rc;
}

char *tg_https_response_header(const tg_https_response_t *resp, const char *name)
{
    const tg_http_header_t *h = tg_http_header_find(resp->headers, resp->nheaders, name);
    return h ? tg_strndup(h->value.p, h->value.len) : NULL;
}

void tg_https_response_free(tg_https_response_t *resp)
{
    free(resp->head);
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

int tg_https_spki_hash(const char *cert_pem, char out[72])
{
    BIO *bio = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    unsigned char *der = NULL;
    int len = x ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : -1;
    X509_free(x);
    if (len <= 0) {
        ERR_clear_error();
        return -TG_EPARSE;
    }
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(der, (size_t)len, d);
    OPENSSL_free(der);
    memcpy(out, "sha256:", 7);
    tg_hex_encode(d, sizeof(d), out + 7);
    return 0;
}
