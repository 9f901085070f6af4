/*
 * worker.c — worker threads: loop, SO_REUSEPORT listeners, generation pick-up and graceful
 * stop; see worker.h. Connections themselves live in proxy.c.
 */
#include "worker.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "identity_store.h"
#include "log.h"
#include "proxy.h"
#include "realm_lookup.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BACKLOG 511

/* ---------------------------------------------------------------- listeners */

static void on_connection(uv_stream_t *server, int status)
{
    tg_worker_listener_t *l = (tg_worker_listener_t *)server;
    if (status < 0 || l->w->stopping) return;
    tg_proxy_accept(l->w, l);
}

static int resolve_listen(const tg_listen_addr_t *a, struct sockaddr_storage *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", a->port);
    if (getaddrinfo(a->host, port, &hints, &res) != 0 || !res) return -TG_EINVAL;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* Every worker binds the same address with SO_REUSEPORT: the kernel spreads connections. */
static int bind_listener(tg_worker_t *w, tg_worker_listener_t *l, const tg_listen_addr_t *a)
{
    struct sockaddr_storage ss;
    if (resolve_listen(a, &ss) != 0) {
        TG_LOGE("dp", "proxy_listen: cannot resolve %s", a->host);
        return -TG_EIO;
    }
    uv_tcp_init_ex(&w->loop, &l->tcp, ss.ss_family);
    l->w = w;
    l->port = a->port;
    l->ssl = a->ssl != 0;
    uv_os_fd_t fd;
    int one = 1, rc = uv_fileno((uv_handle_t *)&l->tcp, &fd);
    if (rc == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) rc = -1;
    if (rc == 0) rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&l->tcp, BACKLOG, on_connection);
    if (rc != 0) {
        TG_LOGE("dp", "cannot listen on %s:%d: %s", a->host, a->port,
                rc < 0 ? uv_strerror(rc) : "SO_REUSEPORT refused");
        return -TG_EIO;
    }
    return 0;
}

/* ---------------------------------------------------------------- generations */

void tg_worker_publish(tg_worker_t *w, tg_generation_t *g)
{
    tg_generation_ref(g);
    tg_generation_t *old = atomic_exchange(&w->next_gen, g);
    tg_generation_unref(old);
    if (w->started) uv_async_send(&w->wake);
}

tg_generation_t *tg_worker_generation(tg_worker_t *w)
{
    if (atomic_load_explicit(&w->next_gen, memory_order_acquire)) {
        tg_generation_t *g = atomic_exchange(&w->next_gen, NULL);
        if (g) {
            tg_generation_unref(w->gen);
            w->gen = g;
        }
    }
    return w->gen;
}

/* ---------------------------------------------------------------- per-request helpers */

void tg_worker_request_id(tg_worker_t *w, char out[33])
{
    /* splitmix64: request ids must be unique, not secret. Hex digits a byte (two digits) at
     * a time from a table: this runs for every request. */
    static const char pairs[513] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (int half = 0; half < 2; half++) {
        uint64_t z = (w->rng += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        for (int i = 0; i < 8; i++) /* most significant byte first, as before */
            memcpy(out + half * 16 + 2 * i, pairs + 2 * ((z >> (56 - 8 * i)) & 0xff), 2);
    }
    out[32] = '\0';
}

const char *tg_worker_date(tg_worker_t *w)
{
    time_t now = time(NULL);
    if ((uint64_t)now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_sec = (uint64_t)now;
    }
    return w->date;
}

/* ---------------------------------------------------------------- stopping */

static void close_handle(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

/* Last step: every connection is gone; close what keeps the loop alive. */
static void finish_stop(tg_worker_t *w)
{
    close_handle((uv_handle_t *)&w->wake);
    close_handle((uv_handle_t *)&w->flush);
    close_handle((uv_handle_t *)&w->drain_timer);
    tg_upstream_pool_free(w->pool);
    w->pool = NULL;
    if (w->opts.realms) tg_realm_lookup_detach(w->opts.realms, w->index);
    tg_access_log_flush(w->log);
}

void tg_worker_conn_gone(tg_worker_t *w)
{
    if (w->stopping && w->nconns == 0) finish_stop(w);
}

static void on_drain_timeout(uv_timer_t *t)
{
    tg_worker_t *w = t->data;
    TG_LOGW("dp", "worker %d: %zu connection(s) still busy after the drain period; closing them",
            w->index, w->nconns);
    tg_proxy_close_all(w);
}

static void begin_stop(tg_worker_t *w)
{
    w->stopping = true;
    for (int i = 0; i < w->nlisteners; i++)
        close_handle((uv_handle_t *)&w->listeners[i].tcp);
    tg_proxy_drain(w);
    if (w->nconns == 0) {
        finish_stop(w);
        return;
    }
    uv_timer_start(&w->drain_timer, on_drain_timeout, w->opts.drain_ms, 0);
}

static void on_wake(uv_async_t *a)
{
    tg_worker_t *w = a->data;
    tg_worker_generation(w);
    if (atomic_load(&w->stop_requested) && !w->stopping) begin_stop(w);
}

static void on_check(uv_check_t *c)
{
    tg_worker_t *w = c->data;
    tg_access_log_flush(w->log);
}

/* ---------------------------------------------------------------- life cycle */

int tg_worker_init(tg_worker_t *w, int index, const tg_worker_opts_t *opts)
{
    w->index = index;
    w->opts = *opts;
    w->metrics = tg_calloc(1, sizeof(*w->metrics));
    atomic_init(&w->next_gen, NULL);
    atomic_init(&w->stop_requested, false);
    uv_loop_init(&w->loop);
    w->loop.data = w;
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_check_init(&w->loop, &w->flush);
    w->flush.data = w;
    uv_check_start(&w->flush, on_check);
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    w->log = tg_access_log_new(opts->log_fd);
    w->pool = tg_upstream_pool_new(&w->loop);
    w->resolver = tg_resolver_new(&w->loop);
    w->scratch = tg_router_scratch_new();
    tg_random_bytes(&w->rng, sizeof(w->rng));
    if (opts->store && tg_store_reader_init(opts->store, &w->reader) == 0) w->has_reader = true;
    w->idcache = tg_identity_cache_new();
    if (opts->realms && tg_realm_lookup_attach(opts->realms, index, &w->loop) != 0) return -TG_ESYS;
    for (int i = 0; i < opts->nlisten && i < TG_WORKER_MAX_LISTENERS; i++) {
        w->nlisteners++;
        if (bind_listener(w, &w->listeners[i], &opts->listen[i]) != 0) return -TG_EIO;
    }
    return 0;
}

static void run(void *arg)
{
    tg_worker_t *w = arg;
    tg_worker_generation(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

int tg_worker_start(tg_worker_t *w)
{
    if (uv_thread_create(&w->thread, run, w) != 0) {
        TG_LOGE("dp", "cannot start worker thread %d", w->index);
        return -TG_ESYS;
    }
    w->started = true;
    return 0;
}

void tg_worker_stop(tg_worker_t *w)
{
    atomic_store(&w->stop_requested, true);
    if (w->started) uv_async_send(&w->wake);
}

void tg_worker_join(tg_worker_t *w)
{
    if (w->started)
        uv_thread_join(&w->thread);
    else {
        /* never ran: close what init opened, then let the loop release it */
        for (int i = 0; i < w->nlisteners; i++)
            close_handle((uv_handle_t *)&w->listeners[i].tcp);
        finish_stop(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&w->loop);
    tg_access_log_free(w->log);
    tg_resolver_free(w->resolver);
    tg_router_scratch_free(w->scratch);
    if (w->has_reader) tg_store_reader_free(&w->reader);
    tg_identity_cache_free(w->idcache);
    w->idcache = NULL;
    tg_generation_unref(w->gen);
    tg_generation_unref(atomic_exchange(&w->next_gen, NULL));
    free(w->metrics);
    w->metrics = NULL;
}
