/*
 * upstream_pool.h — one worker's keep-alive connections to upstreams.
 *
 * Connections are keyed by "host:port" plus ":tls" and the server name for https services,
 * so a connection is only reused for the same destination and security. An idle connection
 * is watched: any byte or EOF from the upstream while idle means it is no longer usable and
 * it is closed. Idle connections are closed after 60 s (Kong's
 * upstream_keepalive_idle_timeout), after 10 000 requests (upstream_keepalive_max_requests),
 * and beyond 512 idle per worker (the oldest go first).
 *
 * Ownership: the pool owns idle connections; a taken connection belongs to its user (the
 * proxied request) until it is put back or discarded. Threads: one worker loop.
 */
#ifndef TG_UPSTREAM_POOL_H
#define TG_UPSTREAM_POOL_H

#include "stream.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define TG_UPSTREAM_KEY_MAX 320

typedef struct tg_upstream_pool tg_upstream_pool_t;
typedef struct tg_upconn tg_upconn_t;

struct tg_upconn {
    tg_stream_t s; /* s.owner is the user while taken */
    tg_upstream_pool_t *pool;
    tg_upconn_t *prev, *next; /* idle list */
    uint64_t idle_since;      /* loop ms */
    unsigned requests;        /* requests completed on this connection */
    bool idle;
    bool reused; /* taken from the pool rather than freshly connected */
    char key[TG_UPSTREAM_KEY_MAX];
};

tg_upstream_pool_t *tg_upstream_pool_new(uv_loop_t *loop);
/* Closes every idle connection and frees the pool (taken ones must be gone already). */
void tg_upstream_pool_free(tg_upstream_pool_t *p);

/* An idle connection for `key`, most recently used first, or NULL. */
tg_upconn_t *tg_upstream_pool_take(tg_upstream_pool_t *p, const char *key, void *owner);

/* A new, unconnected connection for `key`; connect it with tg_stream_connect(&c->s, ...). */
tg_upconn_t *tg_upstream_pool_conn_new(tg_upstream_pool_t *p, const char *key, void *owner);

/* Gives a connection whose exchange ended cleanly back to the pool (or closes it). */
void tg_upstream_pool_put(tg_upconn_t *c);

/* Closes a connection that cannot be reused; it frees itself once closed. */
void tg_upstream_pool_discard(tg_upconn_t *c);

/* Idle connections held now. */
unsigned tg_upstream_pool_idle(const tg_upstream_pool_t *p);

#endif
