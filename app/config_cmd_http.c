/*
 * config_cmd_http.c — the Admin API client of `tollgate config`.
 *
 * The Admin API's default listener is plain HTTP on loopback, which
 * lib/https_client does not speak, so plain requests are made here with the
 * same pieces (our response parser and chunked decoder); https URLs go
 * through tg_https_request. A sync makes one request per changed entity plus
 * one per page: plain connections are kept alive between requests (one
 * connection per entity would leave a TIME_WAIT socket per entity, and a
 * million-key sync would run out of ports); https ones are one request per
 * connection, as lib/https_client makes them.
 */
#include "alloc.h"
#include "config_cmd_int.h"
#include "error.h"
#include "http.h"
#include "http_chunked.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define CONNECT_MS 10000
#define IO_MS 60000
/* A page is at most 1000 entities; plugin configs make that a few MB at most. */
#define MAX_RESPONSE ((size_t)128 << 20)
#define MAX_CA_FILE ((size_t)1 << 20)

const tg_config_cmd_type_t tg_config_cmd_types[TG_CC_NTYPES] = {
    {"services", "services", "service"},
    {"routes", "routes", "route"},
    {"consumers", "consumers", "consumer"},
    {"keyauth_credentials", "key-auths", "key-auth credential"},
    {"plugins", "plugins", "plugin"},
};

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int rc,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---------------------------------------------------------------- opening */

static char *read_small_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail(err, errlen, -TG_EIO, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = tg_malloc(MAX_CA_FILE + 1);
    size_t n = fread(buf, 1, MAX_CA_FILE + 1, f);
    bool bad = ferror(f) || n > MAX_CA_FILE;
    fclose(f);
    if (bad) {
        free(buf);
        fail(err, errlen, -TG_EIO, "cannot read %s: not a readable PEM file under 1 MiB", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* "host", "host:port", "[v6]", "[v6]:port" → "host:port" with the scheme's default port. */
static int authority(const char *s, size_t len, bool tls, char *out, size_t outcap)
{
    const char *end = s + len, *colon = NULL;
    if (len == 0) return -TG_EINVAL;
    if (*s == '[') {
        const char *close = memchr(s, ']', len);
        if (!close) return -TG_EINVAL;
        colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
        if (!colon && close + 1 != end) return -TG_EINVAL;
    } else {
        colon = memchr(s, ':', len);
    }
    int n = colon ? snprintf(out, outcap, "%.*s", (int)len, s)
                  : snprintf(out, outcap, "%.*s:%d", (int)len, s, tls ? 443 : 80);
    if (n < 0 || (size_t)n >= outcap) return -TG_EINVAL;
    char host[256];
    int port;
    return tg_https_split_hostport(out, host, sizeof(host), &port);
}

int tg_config_cmd_admin_open(tg_config_cmd_admin_t *a, const char *url, const char *token,
                             const char *ca_file, bool skip_verify, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->fd = -1;
    const char *rest;
    if (strncmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncmp(url, "https://", 8) == 0)
        rest = url + 8, a->tls = true;
    else
        return fail(err, errlen, -TG_EINVAL,
                    "--admin-url %s: expected http://HOST[:PORT] or "
                    "https://HOST[:PORT]",
                    url);
    size_t alen = strcspn(rest, "/?#");
    if (rest[alen] == '?' || rest[alen] == '#' || strpbrk(rest, " \r\n?#") ||
        authority(rest, alen, a->tls, a->hostport, sizeof(a->hostport)) != 0)
        return fail(err, errlen, -TG_EINVAL,
                    "--admin-url %s: not a valid URL (HOST[:PORT] and "
                    "an optional path)",
                    url);
    a->url = tg_strdup(url);
    a->base = tg_strdup(rest + alen);
    size_t bl = strlen(a->base);
    while (bl > 0 && a->base[bl - 1] == '/')
        a->base[--bl] = '\0';
    if (token && *token) {
        if (strpbrk(token, "\r\n")) {
            tg_config_cmd_admin_close(a);
            return fail(err, errlen, -TG_EINVAL, "the admin token must be one line");
        }
        a->auth = tg_asprintf("Authorization: Bearer %s", token);
    }
    if (a->tls && !ca_file && !skip_verify) {
        tg_config_cmd_admin_close(a);
        return fail(err, errlen, -TG_EINVAL,
                    "an https Admin API URL needs --ca-cert FILE (the "
                    "CA of the Admin API's certificate) or --tls-skip-verify");
    }
    a->skip_verify = skip_verify;
    if (a->tls && ca_file && !skip_verify && !(a->ca_pem = read_small_file(ca_file, err, errlen))) {
        tg_config_cmd_admin_close(a);
        return -TG_EIO;
    }
    return 0;
}

void tg_config_cmd_admin_close(tg_config_cmd_admin_t *a)
{
    if (a->fd >= 0) close(a->fd);
    free(a->url);
    free(a->base);
    free(a->auth);
    free(a->ca_pem);
    memset(a, 0, sizeof(*a));
}

/* ---------------------------------------------------------------- plain HTTP */

typedef struct plain {
    int fd;
    char *buf;
    size_t len, cap;
} plain_t;

static int connect_to(plain_t *c, const char *hostport, char *err, size_t errlen)
{
    char host[256], service[8];
    int port;
    tg_https_split_hostport(hostport, host, sizeof(host), &port);
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return fail(err, errlen, -TG_EIO, "cannot resolve %s: %s", host, gai_strerror(gai));
    int saved = ECONNREFUSED;
    for (const struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) continue;
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n;
            do
                n = poll(&p, 1, CONNECT_MS);
            while (n < 0 && errno == EINTR);
            int soerr = n == 0 ? ETIMEDOUT : 0;
            socklen_t sl = sizeof(soerr);
            if (n > 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        struct timeval tv = {.tv_sec = IO_MS / 1000};
        if (rc == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0 &&
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 &&
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0) {
            c->fd = fd;
            break;
        }
        saved = errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (c->fd < 0)
        return fail(err, errlen, -TG_EIO, "cannot connect to %s: %s", hostport, strerror(saved));
    return 0;
}

static int send_all(plain_t *c, const char *p, size_t len, char *err, size_t errlen)
{
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return fail(err, errlen, errno == EAGAIN ? -TG_ETIMEOUT : -TG_EIO,
                        "sending the request: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads more bytes; returns how many, 0 at EOF, or < 0. */
static int recv_more(plain_t *c, char *err, size_t errlen)
{
    if (c->len >= MAX_RESPONSE) return fail(err, errlen, -TG_ETOOBIG, "the response is too large");
    if (c->cap - c->len < 65536) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        c->buf = tg_realloc(c->buf, c->cap + 1);
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return fail(err, errlen, errno == EAGAIN ? -TG_ETIMEOUT : -TG_EIO,
                        "reading the response: %s",
                        errno == EAGAIN ? "timed out" : strerror(errno));
        c->len += (size_t)n;
        return (int)n;
    }
}

static const tg_http_limits_t limits = {
    .max_head_size = 64 * 1024, .max_headers = TG_HTTPS_MAX_HEADERS, .max_uri = 8192};

/* The body framed as the head says, decoded into *body. */
static int read_body(plain_t *c, const tg_http_response_head_t *h, const char *method, char **body,
                     size_t *blen, size_t *end, char *err, size_t errlen)
{
    enum tg_http_body_kind kind = tg_http_response_body(h, tg_str_from(method));
    size_t start = h->head_len;
    int n = 1;
    if (kind == TG_HTTP_BODY_LENGTH && (uint64_t)h->content_length > MAX_RESPONSE)
        return fail(err, errlen, -TG_ETOOBIG, "the response is too large");
    if (kind == TG_HTTP_BODY_LENGTH)
        while (c->len - start < (size_t)h->content_length && (n = recv_more(c, err, errlen)) > 0) {
        }
    else if (kind == TG_HTTP_BODY_EOF)
        while ((n = recv_more(c, err, errlen)) > 0) {
        }
    if (n < 0) return n;
    *end = SIZE_MAX; /* unless the framing says where the answer ends */
    if (kind == TG_HTTP_BODY_NONE) {
        *body = tg_strdup("");
        *blen = 0;
        *end = start;
        return 0;
    }
    if (kind == TG_HTTP_BODY_LENGTH) {
        if (c->len - start < (size_t)h->content_length)
            return fail(err, errlen, -TG_EPARSE,
                        "the server closed the connection inside the body");
        *blen = (size_t)h->content_length;
        *body = tg_strndup(c->buf + start, *blen);
        *end = start + *blen;
        return 0;
    }
    if (kind == TG_HTTP_BODY_EOF) {
        *blen = c->len - start;
        *body = tg_strndup(c->buf + start, *blen);
        return 0;
    }
    tg_http_chunked_t dec;
    tg_http_chunked_init(&dec, &limits);
    size_t fed = start;
    *body = tg_malloc(1);
    *blen = 0;
    while (!tg_http_chunked_done(&dec)) {
        while (fed < c->len && !tg_http_chunked_done(&dec)) {
            size_t used;
            tg_str_t data;
            if (tg_http_chunked_feed(&dec, c->buf + fed, c->len - fed, &used, &data) != 0)
                return fail(err, errlen, -TG_EPARSE, "malformed chunked body from the server");
            fed += used;
            *body = tg_realloc(*body, *blen + data.len + 1);
            memcpy(*body + *blen, data.p, data.len);
            *blen += data.len;
        }
        if (tg_http_chunked_done(&dec)) break;
        if ((n = recv_more(c, err, errlen)) <= 0)
            return n < 0 ? n
                         : fail(err, errlen, -TG_EPARSE,
                                "the server closed the connection inside the body");
    }
    (*body)[*blen] = '\0';
    *end = fed;
    return 0;
}

/* One exchange on a->fd (opened when there is none). *fresh_failure: the request failed before
 * a single response byte on a kept-alive connection the server may have closed meanwhile. */
static int plain_once(tg_config_cmd_admin_t *a, const char *method, const char *req, size_t reqlen,
                      int *status, char **body, size_t *blen, bool *fresh_failure, char *err,
                      size_t errlen)
{
    plain_t c = {.fd = a->fd};
    tg_http_header_t headers[TG_HTTPS_MAX_HEADERS];
    tg_http_response_head_t h;
    bool reused = c.fd >= 0;
    a->fd = -1; /* ours until the exchange ends cleanly */
    int rc = reused ? 0 : connect_to(&c, a->hostport, err, errlen);
    if (!rc) rc = send_all(&c, req, reqlen, err, errlen);
    size_t parsed = 0, end = 0;
    while (!rc) {
        int p =
            c.len ? tg_http_parse_response(c.buf, c.len, parsed, &limits, headers, &h) : -TG_EAGAIN;
        if (p == 0 && h.status >= 200) break;
        if (p == 0) { /* an interim 1xx: drop it */
            memmove(c.buf, c.buf + h.head_len, c.len - h.head_len);
            c.len -= h.head_len;
            parsed = 0;
            continue;
        }
        if (p != -TG_EAGAIN) {
            rc = fail(err, errlen, -TG_EPARSE, "malformed response from the server");
            break;
        }
        parsed = c.len;
        int n = recv_more(&c, err, errlen);
        if (n == 0)
            rc = fail(err, errlen, -TG_EPARSE,
                      "the server closed the connection without a response");
        else if (n < 0)
            rc = n;
    }
    *fresh_failure = rc && reused && c.len == 0 && rc != -TG_ETIMEOUT;
    if (!rc) rc = read_body(&c, &h, method, body, blen, &end, err, errlen);
    if (!rc) *status = h.status;
    /* Kept only when the answer ended exactly where the bytes did. */
    if (!rc && h.keep_alive && end == c.len)
        a->fd = c.fd;
    else if (c.fd >= 0)
        close(c.fd);
    free(c.buf);
    return rc;
}

/* Every request we send (GET, PUT, DELETE) is idempotent, so a request that found its kept-alive
 * connection closed by the server is sent again once on a new one. */
static int plain_request(tg_config_cmd_admin_t *a, const char *method, const char *req,
                         size_t reqlen, int *status, char **body, size_t *blen, char *err,
                         size_t errlen)
{
    bool retry = false;
    int rc = plain_once(a, method, req, reqlen, status, body, blen, &retry, err, errlen);
    if (rc && retry)
        rc = plain_once(a, method, req, reqlen, status, body, blen, &retry, err, errlen);
    return rc;
}

/* ---------------------------------------------------------------- requests */

int tg_config_cmd_admin_call(tg_config_cmd_admin_t *a, const char *method, const char *path,
                             const json_t *body, int *status, json_t **resp, char *err,
                             size_t errlen)
{
    char *full = tg_asprintf("%s%s", a->base, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    size_t tlen = text ? strlen(text) : 0;
    char *rbody = NULL;
    size_t rlen = 0;
    int rc;
    *resp = NULL;
    if (a->tls) {
        const char *hdrs[3] = {"Accept: application/json"};
        size_t nh = 1;
        if (text) hdrs[nh++] = "Content-Type: application/json";
        if (a->auth) hdrs[nh++] = a->auth;
        tg_https_opts_t o = {.ca_pem = a->ca_pem,
                             .connect_timeout_ms = CONNECT_MS,
                             .io_timeout_ms = IO_MS,
                             .max_body = MAX_RESPONSE};
        tg_https_response_t r;
        rc = tg_https_request(a->hostport, method, full, hdrs, nh, text, tlen, &o, &r, err, errlen);
        if (!rc) {
            *status = r.status;
            rbody = r.body;
            rlen = r.body_len;
            r.body = NULL;
            tg_https_response_free(&r);
        }
    } else {
        char *req =
            tg_asprintf("%s %s HTTP/1.1\r\nHost: %s\r\n"
                        "User-Agent: tollgate/" TG_VERSION "\r\nAccept: application/json\r\n"
                        "%s%s%s",
                        method, full, a->hostport, a->auth ? a->auth : "", a->auth ? "\r\n" : "",
                        text ? "Content-Type: application/json\r\n" : "");
        char *whole = text ? tg_asprintf("%sContent-Length: %zu\r\n\r\n%s", req, tlen, text)
                           : tg_asprintf("%s\r\n", req);
        free(req);
        rc = plain_request(a, method, whole, strlen(whole), status, &rbody, &rlen, err, errlen);
        free(whole);
    }
    if (rc) {
        char reason[512];
        snprintf(reason, sizeof(reason), "%s", err);
        snprintf(err, errlen, "%s %s%s: %s", method, a->url, path, reason);
    } else if (rlen) {
        *resp = json_loadb(rbody, rlen, 0, NULL);
    }
    free(rbody);
    free(text);
    free(full);
    return rc;
}

char *tg_config_cmd_admin_error(int status, const json_t *resp)
{
    const char *msg = json_string_value(json_object_get(resp, "message"));
    if (msg) return tg_asprintf("HTTP %d: %s", status, msg);
    if (resp) {
        char *dump = json_dumps(resp, JSON_COMPACT);
        char *out = tg_asprintf("HTTP %d: %.300s", status, dump ? dump : "");
        free(dump);
        return out;
    }
    return tg_asprintf("HTTP %d", status);
}

/* Query values are our own tags: only characters that need escaping in a URL are escaped. */
static char *escape_query(const char *s)
{
    char *out = tg_malloc(strlen(s) * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~,", *p))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    *o = '\0';
    return out;
}

int tg_config_cmd_admin_list(tg_config_cmd_admin_t *a, const char *collection, const char *tags,
                             json_t **out, char *err, size_t errlen)
{
    json_t *all = json_array();
    char *offset = NULL, *etags = tags ? escape_query(tags) : NULL;
    int rc = 0;
    /* A bound on pages: an Admin API that keeps answering the same offset must not hang us. */
    for (int page = 0; page < 1000000; page++) {
        char *eoff = offset ? escape_query(offset) : NULL;
        char *path = tg_asprintf("/%s?size=1000%s%s%s%s", collection, etags ? "&tags=" : "",
                                 etags ? etags : "", eoff ? "&offset=" : "", eoff ? eoff : "");
        int status = 0;
        json_t *resp = NULL;
        rc = tg_config_cmd_admin_call(a, "GET", path, NULL, &status, &resp, err, errlen);
        json_t *data = json_object_get(resp, "data");
        if (!rc && (status != 200 || !json_is_array(data))) {
            char *why = tg_config_cmd_admin_error(status, resp);
            rc = fail(err, errlen, -TG_EIO, "GET %s%s: %s", a->url, path, why);
            free(why);
        }
        free(path);
        free(eoff);
        free(offset);
        offset = NULL;
        if (!rc) {
            json_array_extend(all, data);
            const char *next = json_string_value(json_object_get(resp, "offset"));
            if (next && *next) offset = tg_strdup(next);
        }
        json_decref(resp);
        if (rc || !offset) break;
    }
    free(etags);
    free(offset);
    if (rc) {
        json_decref(all);
        return rc;
    }
    *out = all;
    return 0;
}
