/*
 * resolver.c — per-worker DNS cache over uv_getaddrinfo; see resolver.h.
 */
#include "resolver.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SIZE 128
#define HOST_MAX 256
#define TTL_OK_MS 30000
#define TTL_FAIL_MS 1000

struct entry {
    char host[HOST_MAX];
    struct sockaddr_storage addr; /* port 0 */
    uint64_t expires;             /* loop time in ms; 0 = empty slot */
    bool failed;
};

struct query {
    uv_getaddrinfo_t req;
    tg_resolver_t *r; /* NULL once the resolver is gone */
    struct query *next;
    tg_resolver_wait_t *waiters;
    char host[HOST_MAX];
};

struct tg_resolver {
    uv_loop_t *loop;
    struct entry cache[CACHE_SIZE];
    struct query *queries;
};

tg_resolver_t *tg_resolver_new(uv_loop_t *loop)
{
    tg_resolver_t *r = tg_calloc(1, sizeof(*r));
    r->loop = loop;
    return r;
}

void tg_resolver_free(tg_resolver_t *r)
{
    if (!r) return;
    for (struct query *q = r->queries; q; q = q->next) {
        q->r = NULL;
        q->waiters = NULL;
    }
    free(r);
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* Parses an IP literal ("10.0.0.1", "::1", "[::1]") into *out. */
static bool parse_ip(const char *host, int port, struct sockaddr_storage *out)
{
    char buf[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    memset(out, 0, sizeof(*out));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0) return true;
    if (strchr(host, ':') && uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0) return true;
    return false;
}

bool tg_resolver_is_ip(const char *host)
{
    struct sockaddr_storage ss;
    return parse_ip(host, 0, &ss);
}

static struct entry *cache_find(tg_resolver_t *r, const char *host)
{
    uint64_t now = uv_now(r->loop);
    for (size_t i = 0; i < CACHE_SIZE; i++) {
        struct entry *e = &r->cache[i];
        if (e->expires > now && strcmp(e->host, host) == 0) return e;
    }
    return NULL;
}

/* The slot to overwrite: an expired one, else the one expiring soonest. */
static struct entry *cache_slot(tg_resolver_t *r, const char *host)
{
    uint64_t now = uv_now(r->loop);
    struct entry *victim = &r->cache[0];
    for (size_t i = 0; i < CACHE_SIZE; i++) {
        struct entry *e = &r->cache[i];
        if (strcmp(e->host, host) == 0 || e->expires <= now) return e;
        if (e->expires < victim->expires) victim = e;
    }
    return victim;
}

/* Picks the first IPv4 answer, else the first IPv6 one. */
static const struct addrinfo *pick(const struct addrinfo *res)
{
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) return a;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET6) return a;
    return NULL;
}

static void unlink_query(tg_resolver_t *r, struct query *q)
{
    for (struct query **p = &r->queries; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct query *q = (struct query *)req;
    const struct addrinfo *a = status == 0 ? pick(res) : NULL;
    tg_resolver_t *r = q->r;
    if (r) {
        unlink_query(r, q);
        struct entry *e = cache_slot(r, q->host);
        snprintf(e->host, sizeof(e->host), "%s", q->host);
        e->failed = a == NULL;
        memset(&e->addr, 0, sizeof(e->addr));
        if (a) memcpy(&e->addr, a->ai_addr, a->ai_addrlen);
        e->expires = uv_now(r->loop) + (a ? TTL_OK_MS : TTL_FAIL_MS);
        if (!a) TG_LOGW("resolver", "cannot resolve %s: %s", q->host, uv_strerror(status));
    }
    tg_resolver_wait_t *w = q->waiters;
    while (w) {
        tg_resolver_wait_t *next = w->next;
        struct sockaddr_storage ss;
        w->query = NULL;
        if (a) {
            memcpy(&ss, a->ai_addr, a->ai_addrlen);
            set_port(&ss, w->port);
        }
        w->cb(w, a ? 0 : -TG_ENOTFOUND, a ? (struct sockaddr *)&ss : NULL);
        w = next;
    }
    uv_freeaddrinfo(res);
    free(q);
}

static int start_query(tg_resolver_t *r, const char *host, tg_resolver_wait_t *w)
{
    struct query *q;
    for (q = r->queries; q; q = q->next)
        if (strcmp(q->host, host) == 0) break;
    if (!q) {
        q = tg_calloc(1, sizeof(*q));
        q->r = r;
        snprintf(q->host, sizeof(q->host), "%s", host);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        if (uv_getaddrinfo(r->loop, &q->req, on_resolved, host, NULL, &hints) != 0) {
            free(q);
            return -TG_ENOTFOUND;
        }
        q->next = r->queries;
        r->queries = q;
    }
    w->query = q;
    w->next = q->waiters;
    q->waiters = w;
    return 0;
}

int tg_resolver_resolve(tg_resolver_t *r, const char *host, int port, struct sockaddr_storage *out,
                        tg_resolver_wait_t *w)
{
    if (parse_ip(host, port, out)) return 1;
    if (strlen(host) >= HOST_MAX) return -TG_ENOTFOUND;
    struct entry *e = cache_find(r, host);
    if (e) {
        if (e->failed) return -TG_ENOTFOUND;
        memcpy(out, &e->addr, sizeof(*out));
        set_port(out, port);
        return 1;
    }
    w->port = port;
    return start_query(r, host, w);
}

void tg_resolver_cancel(tg_resolver_wait_t *w)
{
    struct query *q = w->query;
    if (!q) return;
    for (tg_resolver_wait_t **p = &q->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    w->query = NULL;
}
