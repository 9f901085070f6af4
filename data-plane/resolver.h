/*
 * resolver.h — upstream name resolution for one worker, off the request path.
 *
 * IP literals are answered at once. Names go to libuv's thread pool (uv_getaddrinfo) and
 * the answer is cached per worker (answers 30 s, failures 1 s, as Kong caches DNS errors
 * briefly); concurrent lookups of one name share one query. IPv4 addresses are preferred
 * over IPv6, as Kong's default record order (A before AAAA) does.
 *
 * Ownership: the worker owns its resolver; a waiter is embedded in its owner (the proxied
 * request) and must be cancelled before the owner is freed. Threads: one loop only.
 */
#ifndef TG_RESOLVER_H
#define TG_RESOLVER_H

#include <stdbool.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct tg_resolver tg_resolver_t;
typedef struct tg_resolver_wait tg_resolver_wait_t;

/* status 0 with the address (port set), or -TG_ENOTFOUND when the name does not resolve. */
typedef void (*tg_resolver_cb)(tg_resolver_wait_t *w, int status, const struct sockaddr *addr);

struct tg_resolver_wait {
    tg_resolver_wait_t *next;
    void *query; /* private */
    tg_resolver_cb cb;
    void *arg;
    int port;
};

tg_resolver_t *tg_resolver_new(uv_loop_t *loop);
/* Frees the cache; queries still in the thread pool finish on their own (their waiters must
 * have been cancelled). */
void tg_resolver_free(tg_resolver_t *r);

/*
 * Resolves host:port. Returns 1 with *out filled when the answer is known now (IP literal or
 * cached), 0 when `w` will be called back (w->cb and w->arg set by the caller), or
 * -TG_ENOTFOUND for a cached failure.
 */
int tg_resolver_resolve(tg_resolver_t *r, const char *host, int port, struct sockaddr_storage *out,
                        tg_resolver_wait_t *w);

/* Forgets a waiter that has not been called back yet; no-op otherwise. */
void tg_resolver_cancel(tg_resolver_wait_t *w);

/* True when `host` is an IPv4 or IPv6 literal (brackets allowed). */
bool tg_resolver_is_ip(const char *host);

#endif
