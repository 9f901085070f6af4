/*
 * worker.h — one proxy worker thread (DESIGN §7): its own libuv loop, its own SO_REUSEPORT
 * listener per proxy_listen entry, its own upstream pool, DNS cache, metrics and access log.
 *
 * Life cycle, driven by the control thread (dp.c):
 *   tg_worker_init   on the control thread: creates the loop and binds the listeners, so a
 *                    port that cannot be bound fails `dp start` before anything runs;
 *   tg_worker_publish hands the worker a generation (any time, from the control thread);
 *   tg_worker_start  runs the loop on a new thread;
 *   tg_worker_stop   asks for a graceful stop: listeners close, idle connections close,
 *                    requests in flight finish (at most `drain_ms`, then everything closes);
 *   tg_worker_join   waits for the thread and frees what the worker owns.
 *
 * Generation swap: tg_worker_publish stores the new generation (with a reference for the
 * worker) in an atomic slot and wakes the loop; the worker picks it up at its next loop
 * iteration or next request, whichever comes first, and drops its reference to the old one.
 * Requests keep their own reference, so nothing is freed under them and nothing locks.
 *
 * Threads: the fields below the marker belong to the worker thread; metrics are read by the
 * control thread (metrics.h explains how).
 */
#ifndef TG_WORKER_H
#define TG_WORKER_H

#include "access_log.h"
#include "config.h"
#include "generation.h"
#include "metrics.h"
#include "resolver.h"
#include "router.h"
#include "store.h"
#include "upstream_pool.h"

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#define TG_WORKER_MAX_LISTENERS 8

typedef struct tg_worker tg_worker_t;
struct tg_proxy_conn;

typedef struct tg_worker_listener {
    uv_tcp_t tcp;
    tg_worker_t *w;
    int port;
    bool ssl;
} tg_worker_listener_t;

typedef struct tg_worker_opts {
    const tg_listen_addr_t *listen; /* proxy_listen entries */
    int nlisten;
    SSL_CTX *server_ssl;   /* for `ssl` listeners (borrowed, shared by workers) */
    SSL_CTX *upstream_ssl; /* client context for https services (borrowed, shared) */
    tg_store_t *store;     /* identity lookups (borrowed) */
    struct tg_realm_lookup *realms; /* realm key lookups (borrowed); NULL: no CP to ask */
    int log_fd;            /* access log; -1 = off */
    unsigned drain_ms;     /* graceful stop bound */
} tg_worker_opts_t;

struct tg_worker {
    int index;
    uv_thread_t thread;
    tg_metrics_t *metrics;               /* read by the control thread */
    _Atomic(tg_generation_t *) next_gen; /* published, not yet picked up */
    atomic_bool stop_requested;
    bool started;
    /* ---- worker thread only ---- */
    uv_loop_t loop;
    uv_async_t wake;
    uv_check_t flush;
    uv_timer_t drain_timer;
    tg_worker_listener_t listeners[TG_WORKER_MAX_LISTENERS];
    int nlisteners;
    tg_worker_opts_t opts;
    tg_generation_t *gen; /* the worker's reference to the current generation */
    bool stopping;
    tg_access_log_t *log;
    tg_upstream_pool_t *pool;
    tg_resolver_t *resolver;
    tg_router_scratch_t *scratch;
    tg_store_reader_t reader;
    bool has_reader;
    struct tg_identity_cache *idcache; /* parsed credentials and consumers (identity_store.h) */
    uint64_t rng;
    struct tg_proxy_conn *conns; /* open client connections */
    size_t nconns;
    uint64_t date_sec;
    char date[40]; /* IMF-fixdate of date_sec */
};

/* Prepares worker `index` and binds its listeners. 0, or -TG_EIO (logged). */
int tg_worker_init(tg_worker_t *w, int index, const tg_worker_opts_t *opts);
int tg_worker_start(tg_worker_t *w);
/* Gives the worker `g` (takes its own reference); callable from the control thread. */
void tg_worker_publish(tg_worker_t *w, tg_generation_t *g);
void tg_worker_stop(tg_worker_t *w);
/* Waits for the thread (if started) and frees the worker's resources. */
void tg_worker_join(tg_worker_t *w);

/* ---- for the proxy, on the worker thread ---- */

/* The generation new requests use (picks up a published one first); NULL before any. */
tg_generation_t *tg_worker_generation(tg_worker_t *w);
/* A fresh 32-hex-digit request id into out[33]. */
void tg_worker_request_id(tg_worker_t *w, char out[33]);
/* The current Date header value. */
const char *tg_worker_date(tg_worker_t *w);
/* A connection closed: the worker may finish stopping. */
void tg_worker_conn_gone(tg_worker_t *w);

#endif
