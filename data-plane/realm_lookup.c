/*
 * realm_lookup.c — single-flight realm lookups between workers and the control thread; see
 * realm_lookup.h for the contract.
 *
 * Two kinds of pending state:
 *   - per worker, a "pending" record per (realm, digest) holding the parked requests: a worker
 *     asks the control thread once per key, however many of its requests wait;
 *   - on the control thread, a "flight" per (realm, digest) sent to the CP, with the set of
 *     workers waiting on it: the CP is asked once per key, however many workers wait.
 * Both are bounded by max_in_flight, so a flood of random keys costs bounded memory and at
 * most max_in_flight concurrent CP lookups; the excess is UNAVAILABLE (503), which is honest:
 * the DP cannot tell whether those keys are valid right now.
 */
#include "realm_lookup.h"

#include "alloc.h"
#include "error.h"
#include "log.h"

#include <stdatomic.h>
#include <string.h>

#define WORKER_BUCKETS 256
#define TICK_MS 100

typedef enum msg_kind {
    M_QUERY,     /* worker → control */
    M_ANSWER,    /* control → worker */
    M_EVICT_KEY, /* control → worker, and M_EVICT_* below */
    M_EVICT_CONSUMER,
    M_EVICT_REALM,
    M_CLEAR,
} msg_kind_t;

typedef struct msg {
    msg_kind_t kind;
    int worker;
    char realm[TG_REALM_ID_MAX + 1];
    uint8_t digest[32];
    char *consumer_id;          /* M_EVICT_CONSUMER (owned) */
    tg_realm_outcome_t outcome; /* M_ANSWER */
    json_t *answer;             /* M_ANSWER hit (a reference) */
    int64_t expires_ms;         /* M_ANSWER */
    bool cacheable;             /* M_ANSWER */
} msg_t;

typedef struct mailbox {
    uv_mutex_t mu;
    msg_t *v;
    size_t n, cap;
    uv_async_t async;
    bool open; /* guarded by mu: messages to a closed mailbox are dropped */
} mailbox_t;

struct tg_realm_pending {
    char realm[TG_REALM_ID_MAX + 1];
    uint8_t digest[32];
    tg_realm_waiter_t *waiters;
    struct tg_realm_pending *next;
};

typedef struct worker_side {
    tg_realm_lookup_t *l;
    int index;
    tg_realm_cache_t *cache;
    mailbox_t box;
    struct tg_realm_pending *buckets[WORKER_BUCKETS];
    size_t npending;
} worker_side_t;

typedef struct flight {
    uint64_t request_id;
    char realm[TG_REALM_ID_MAX + 1];
    uint8_t digest[32];
    int64_t started_ms;
    bool cacheable; /* false once an invalidation raced with it */
    uint8_t *waiting; /* one flag per worker */
    struct flight *next;
} flight_t;

struct tg_realm_lookup {
    tg_realm_lookup_opts_t opts;
    int nworkers;
    worker_side_t *workers;
    mailbox_t box; /* to the control thread */
    uv_timer_t tick;
    tg_realm_cache_t *cache;
    flight_t *flights;
    size_t nflights;
    uint64_t next_id;
    atomic_bool connected;
    bool ever_disconnected;
    tg_realm_lookup_stats_t stats; /* control thread only */
    /* Requests a worker refused because it already waits on max_in_flight keys: they get 503
     * without the control thread hearing of them, so the workers count them here (relaxed:
     * a statistic, read by the status thread). */
    atomic_uint_fast64_t worker_overflow;
};

static int64_t now_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000u);
}

static void copy_realm(char dst[TG_REALM_ID_MAX + 1], const char *src)
{
    size_t n = strnlen(src, TG_REALM_ID_MAX);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---------------------------------------------------------------- mailboxes */

static void msg_free(msg_t *m)
{
    free(m->consumer_id);
    json_decref(m->answer);
}

/* The mutex lives from tg_realm_lookup_new to _free, so any thread may post at any time; the
 * async handle only while the receiving loop runs (open). */
static int mailbox_open(mailbox_t *b, uv_loop_t *loop, uv_async_cb cb, void *data)
{
    if (uv_async_init(loop, &b->async, cb) != 0) return -TG_ESYS;
    b->async.data = data;
    uv_mutex_lock(&b->mu);
    b->open = true;
    uv_mutex_unlock(&b->mu);
    return 0;
}

static void mailbox_post(mailbox_t *b, msg_t *m)
{
    uv_mutex_lock(&b->mu);
    if (!b->open) {
        uv_mutex_unlock(&b->mu);
        msg_free(m);
        return;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->v = tg_realloc(b->v, b->cap * sizeof *b->v);
    }
    b->v[b->n++] = *m;
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->async);
}

/* Takes every queued message; the caller processes and frees them. */
static msg_t *mailbox_take(mailbox_t *b, size_t *n)
{
    uv_mutex_lock(&b->mu);
    msg_t *v = b->v;
    *n = b->n;
    b->v = NULL;
    b->n = b->cap = 0;
    uv_mutex_unlock(&b->mu);
    return v;
}

/* Stops accepting messages and drops the queued ones; the async handle is closed by the caller
 * on its loop. */
static void mailbox_shut(mailbox_t *b)
{
    uv_mutex_lock(&b->mu);
    b->open = false;
    uv_mutex_unlock(&b->mu);
    size_t n;
    msg_t *v = mailbox_take(b, &n);
    for (size_t i = 0; i < n; i++) msg_free(&v[i]);
    free(v);
}

/* ---------------------------------------------------------------- worker side */

static size_t worker_bucket(const uint8_t d[32])
{
    /* The worker's table only holds keys it is waiting for (bounded), so the digest's own
     * bytes are spread enough; a ground collision costs the attacker, not the bound. */
    return ((size_t)d[0] | (size_t)d[1] << 8) % WORKER_BUCKETS;
}

static struct tg_realm_pending **pending_find(worker_side_t *ws, const char *realm, const uint8_t d[32])
{
    struct tg_realm_pending **pp = &ws->buckets[worker_bucket(d)];
    for (; *pp; pp = &(*pp)->next) {
        if (memcmp((*pp)->digest, d, 32) == 0 && strcmp((*pp)->realm, realm) == 0) return pp;
    }
    return pp;
}

static void park(struct tg_realm_pending *p, tg_realm_waiter_t *w)
{
    w->pending = p;
    w->outcome = TG_REALM_OUT_PENDING;
    w->next = p->waiters;
    w->pprev = &p->waiters;
    if (p->waiters) p->waiters->pprev = &w->next;
    p->waiters = w;
}

tg_realm_outcome_t tg_realm_lookup_query(tg_realm_lookup_t *l, int worker, const char *realm_id,
                                         const uint8_t digest[32], tg_realm_waiter_t *w,
                                         const json_t **answer)
{
    worker_side_t *ws = &l->workers[worker];
    bool stale_ok = !atomic_load_explicit(&l->connected, memory_order_relaxed);
    switch (tg_realm_cache_get(ws->cache, realm_id, digest, now_ms(), stale_ok, answer, NULL)) {
    case TG_REALM_HIT:
        return TG_REALM_OUT_HIT;
    case TG_REALM_UNKNOWN:
        return TG_REALM_OUT_UNKNOWN;
    case TG_REALM_MISS:
        break;
    }
    struct tg_realm_pending **pp = pending_find(ws, realm_id, digest);
    if (!*pp) {
        if (ws->npending >= l->opts.max_in_flight) {
            atomic_fetch_add_explicit(&l->worker_overflow, 1, memory_order_relaxed);
            return TG_REALM_OUT_UNAVAILABLE;
        }
        struct tg_realm_pending *p = tg_calloc(1, sizeof *p);
        copy_realm(p->realm, realm_id);
        memcpy(p->digest, digest, 32);
        *pp = p;
        ws->npending++;
        msg_t m = {.kind = M_QUERY, .worker = worker};
        memcpy(m.realm, p->realm, sizeof m.realm);
        memcpy(m.digest, digest, 32);
        mailbox_post(&l->box, &m);
    }
    park(*pp, w);
    return TG_REALM_OUT_PENDING;
}

void tg_realm_lookup_cancel(tg_realm_waiter_t *w)
{
    if (!w->pending) return;
    *w->pprev = w->next;
    if (w->next) w->next->pprev = w->pprev;
    w->next = NULL;
    w->pprev = NULL;
    w->pending = NULL; /* the pending record stays until its answer comes: it was asked for */
}

void tg_realm_waiter_reset(tg_realm_waiter_t *w)
{
    tg_realm_lookup_cancel(w);
    json_decref(w->consumer);
    w->consumer = NULL;
    w->outcome = TG_REALM_OUT_PENDING;
}

/* Wakes every request parked on (realm, digest). The list is detached first: a wake callback
 * may query again (another key, or the same one) or cancel other waiters. */
static void answer_waiters(worker_side_t *ws, const msg_t *m)
{
    struct tg_realm_pending **pp = pending_find(ws, m->realm, m->digest);
    struct tg_realm_pending *p = *pp;
    if (!p) return;
    *pp = p->next;
    ws->npending--;
    tg_realm_waiter_t *w = p->waiters;
    free(p);
    while (w) {
        tg_realm_waiter_t *next = w->next;
        if (next) next->pprev = &next;
        w->pending = NULL;
        w->next = NULL;
        w->pprev = NULL;
        w->outcome = m->outcome;
        w->consumer = m->outcome == TG_REALM_OUT_HIT ? json_incref(m->answer) : NULL;
        w->wake(w);
        w = next;
    }
}

static void worker_handle(worker_side_t *ws, msg_t *m)
{
    switch (m->kind) {
    case M_ANSWER:
        if (m->cacheable && m->outcome != TG_REALM_OUT_UNAVAILABLE)
            tg_realm_cache_put(ws->cache, m->realm, m->digest,
                               m->outcome == TG_REALM_OUT_HIT ? m->answer : NULL, m->expires_ms);
        answer_waiters(ws, m);
        break;
    case M_EVICT_KEY:
        tg_realm_cache_evict_key(ws->cache, m->realm, m->digest);
        break;
    case M_EVICT_CONSUMER:
        tg_realm_cache_evict_consumer(ws->cache, m->realm, m->consumer_id);
        break;
    case M_EVICT_REALM:
        tg_realm_cache_evict_realm(ws->cache, m->realm);
        break;
    case M_CLEAR:
        tg_realm_cache_clear(ws->cache);
        break;
    case M_QUERY:
        break;
    }
}

static void on_worker_mail(uv_async_t *a)
{
    worker_side_t *ws = a->data;
    size_t n;
    msg_t *v = mailbox_take(&ws->box, &n);
    for (size_t i = 0; i < n; i++) {
        worker_handle(ws, &v[i]);
        msg_free(&v[i]);
    }
    free(v);
}

int tg_realm_lookup_attach(tg_realm_lookup_t *l, int worker, uv_loop_t *loop)
{
    worker_side_t *ws = &l->workers[worker];
    ws->l = l;
    ws->index = worker;
    ws->cache = tg_realm_cache_new(l->opts.cache_entries, l->opts.stale_ms);
    return mailbox_open(&ws->box, loop, on_worker_mail, ws);
}

static void free_worker_pending(worker_side_t *ws)
{
    for (size_t b = 0; b < WORKER_BUCKETS; b++) {
        while (ws->buckets[b]) {
            struct tg_realm_pending *p = ws->buckets[b];
            ws->buckets[b] = p->next;
            free(p); /* its waiters were cancelled: their requests ended before the worker stopped */
        }
    }
    ws->npending = 0;
}

void tg_realm_lookup_detach(tg_realm_lookup_t *l, int worker)
{
    worker_side_t *ws = &l->workers[worker];
    if (!ws->cache) return;
    mailbox_shut(&ws->box);
    uv_close((uv_handle_t *)&ws->box.async, NULL);
    free_worker_pending(ws);
    tg_realm_cache_free(ws->cache);
    ws->cache = NULL;
}

/* ---------------------------------------------------------------- control side */

static void tell_worker(tg_realm_lookup_t *l, int worker, msg_t *m)
{
    mailbox_post(&l->workers[worker].box, m); /* dropped if that worker is not attached */
}

static void answer_worker(tg_realm_lookup_t *l, int worker, const char *realm, const uint8_t d[32],
                          tg_realm_outcome_t outcome, const json_t *answer, int64_t expires_ms,
                          bool cacheable)
{
    msg_t m = {.kind = M_ANSWER, .worker = worker, .outcome = outcome,
               .answer = answer ? json_incref((json_t *)answer) : NULL,
               .expires_ms = expires_ms, .cacheable = cacheable};
    copy_realm(m.realm, realm);
    memcpy(m.digest, d, 32);
    if (outcome == TG_REALM_OUT_UNAVAILABLE) l->stats.unavailable++;
    tell_worker(l, worker, &m);
}

static void flight_finish(tg_realm_lookup_t *l, flight_t *f, tg_realm_outcome_t outcome,
                          const json_t *answer, int64_t expires_ms)
{
    for (int i = 0; i < l->nworkers; i++) {
        if (f->waiting[i]) answer_worker(l, i, f->realm, f->digest, outcome, answer, expires_ms, f->cacheable);
    }
}

static void flight_unlink_free(tg_realm_lookup_t *l, flight_t *f)
{
    for (flight_t **pp = &l->flights; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    l->nflights--;
    free(f->waiting);
    free(f);
}

static flight_t *flight_by_key(tg_realm_lookup_t *l, const char *realm, const uint8_t d[32])
{
    for (flight_t *f = l->flights; f; f = f->next) {
        if (memcmp(f->digest, d, 32) == 0 && strcmp(f->realm, realm) == 0) return f;
    }
    return NULL;
}

static void ctl_query(tg_realm_lookup_t *l, const msg_t *q)
{
    bool connected = atomic_load(&l->connected);
    const json_t *answer = NULL;
    int64_t expires = 0;
    switch (tg_realm_cache_get(l->cache, q->realm, q->digest, now_ms(), !connected, &answer, &expires)) {
    case TG_REALM_HIT:
        answer_worker(l, q->worker, q->realm, q->digest, TG_REALM_OUT_HIT, answer, expires, true);
        return;
    case TG_REALM_UNKNOWN:
        answer_worker(l, q->worker, q->realm, q->digest, TG_REALM_OUT_UNKNOWN, NULL, expires, true);
        return;
    case TG_REALM_MISS:
        break;
    }
    flight_t *f = flight_by_key(l, q->realm, q->digest);
    if (f) {
        f->waiting[q->worker] = 1;
        return;
    }
    if (!connected || l->nflights >= l->opts.max_in_flight) {
        if (connected) l->stats.overflow++;
        answer_worker(l, q->worker, q->realm, q->digest, TG_REALM_OUT_UNAVAILABLE, NULL, 0, false);
        return;
    }
    f = tg_calloc(1, sizeof *f);
    f->request_id = ++l->next_id;
    memcpy(f->realm, q->realm, sizeof f->realm);
    memcpy(f->digest, q->digest, 32);
    f->started_ms = now_ms();
    f->cacheable = true;
    f->waiting = tg_calloc((size_t)l->nworkers, 1);
    f->waiting[q->worker] = 1;
    if (l->opts.send(l->opts.send_ud, f->request_id, f->realm, f->digest) != 0) {
        answer_worker(l, q->worker, q->realm, q->digest, TG_REALM_OUT_UNAVAILABLE, NULL, 0, false);
        free(f->waiting);
        free(f);
        return;
    }
    f->next = l->flights;
    l->flights = f;
    l->nflights++;
    l->stats.lookups_sent++;
}

static void on_control_mail(uv_async_t *a)
{
    tg_realm_lookup_t *l = a->data;
    size_t n;
    msg_t *v = mailbox_take(&l->box, &n);
    for (size_t i = 0; i < n; i++) {
        if (v[i].kind == M_QUERY) ctl_query(l, &v[i]);
        msg_free(&v[i]);
    }
    free(v);
}

static void fail_flights(tg_realm_lookup_t *l, bool only_expired)
{
    int64_t now = now_ms();
    flight_t *f = l->flights;
    while (f) {
        flight_t *next = f->next;
        if (!only_expired || now - f->started_ms >= l->opts.timeout_ms) {
            if (only_expired) l->stats.timeouts++;
            flight_finish(l, f, TG_REALM_OUT_UNAVAILABLE, NULL, 0);
            flight_unlink_free(l, f);
        }
        f = next;
    }
}

static void on_tick(uv_timer_t *t)
{
    fail_flights(t->data, true);
}

tg_realm_lookup_t *tg_realm_lookup_new(uv_loop_t *control_loop, int nworkers,
                                       const tg_realm_lookup_opts_t *opts)
{
    tg_realm_lookup_t *l = tg_calloc(1, sizeof *l);
    l->opts = *opts;
    if (l->opts.cache_entries < 1) l->opts.cache_entries = 1;
    if (l->opts.max_in_flight < 1) l->opts.max_in_flight = 1;
    if (l->opts.timeout_ms < 1) l->opts.timeout_ms = 1;
    l->nworkers = nworkers;
    l->workers = tg_calloc((size_t)nworkers, sizeof *l->workers);
    for (int i = 0; i < nworkers; i++) uv_mutex_init(&l->workers[i].box.mu);
    uv_mutex_init(&l->box.mu);
    l->cache = tg_realm_cache_new(l->opts.cache_entries, l->opts.stale_ms);
    if (mailbox_open(&l->box, control_loop, on_control_mail, l) != 0) {
        tg_realm_lookup_free(l);
        return NULL;
    }
    uv_timer_init(control_loop, &l->tick);
    l->tick.data = l;
    uv_timer_start(&l->tick, on_tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&l->tick);
    return l;
}

void tg_realm_lookup_close(tg_realm_lookup_t *l)
{
    if (!l) return;
    fail_flights(l, false);
    mailbox_shut(&l->box);
    uv_close((uv_handle_t *)&l->box.async, NULL);
    uv_close((uv_handle_t *)&l->tick, NULL);
}

void tg_realm_lookup_free(tg_realm_lookup_t *l)
{
    if (!l) return;
    mailbox_shut(&l->box); /* drops whatever is still queued */
    uv_mutex_destroy(&l->box.mu);
    for (int i = 0; i < l->nworkers; i++) {
        mailbox_shut(&l->workers[i].box);
        uv_mutex_destroy(&l->workers[i].box.mu);
        free_worker_pending(&l->workers[i]);
        tg_realm_cache_free(l->workers[i].cache);
    }
    tg_realm_cache_free(l->cache);
    free(l->workers);
    free(l);
}

static void broadcast(tg_realm_lookup_t *l, const msg_t *proto)
{
    for (int i = 0; i < l->nworkers; i++) {
        msg_t m = *proto;
        m.worker = i;
        m.consumer_id = proto->consumer_id ? tg_strdup(proto->consumer_id) : NULL;
        tell_worker(l, i, &m);
    }
}

void tg_realm_lookup_ctl_connected(tg_realm_lookup_t *l, bool connected)
{
    bool was = atomic_exchange(&l->connected, connected);
    if (was == connected) return;
    if (!connected) {
        l->ever_disconnected = true;
        fail_flights(l, false);
        return;
    }
    /* Invalidations sent while we were away are lost: start every cache afresh. */
    if (l->ever_disconnected) {
        tg_realm_cache_clear(l->cache);
        broadcast(l, &(msg_t){.kind = M_CLEAR});
    }
}

void tg_realm_lookup_ctl_result(tg_realm_lookup_t *l, uint64_t request_id, bool found,
                                const char *consumer_json, uint32_t ttl_s, const char *error)
{
    flight_t *f = l->flights;
    while (f && f->request_id != request_id) f = f->next;
    if (!f) return; /* timed out or failed already */
    l->stats.results++;
    if (error && *error) {
        TG_LOGW("realm", "realm %s lookup failed at the control plane: %s", f->realm, error);
        flight_finish(l, f, TG_REALM_OUT_UNAVAILABLE, NULL, 0);
        flight_unlink_free(l, f);
        return;
    }
    json_t *answer = NULL;
    if (found) {
        answer = consumer_json ? json_loads(consumer_json, 0, NULL) : NULL;
        if (!json_is_object(json_object_get(answer, "consumer"))) {
            TG_LOGW("realm", "realm %s lookup: malformed answer from the control plane", f->realm);
            json_decref(answer);
            flight_finish(l, f, TG_REALM_OUT_UNAVAILABLE, NULL, 0);
            flight_unlink_free(l, f);
            return;
        }
    }
    int64_t expires = now_ms() + (int64_t)ttl_s * 1000;
    if (f->cacheable) tg_realm_cache_put(l->cache, f->realm, f->digest, answer, expires);
    flight_finish(l, f, found ? TG_REALM_OUT_HIT : TG_REALM_OUT_UNKNOWN, answer, expires);
    json_decref(answer);
    flight_unlink_free(l, f);
}

void tg_realm_lookup_ctl_invalidate(tg_realm_lookup_t *l, const char *realm_id,
                                    const uint8_t (*digests)[32], size_t ndigests,
                                    const char *const *consumer_ids, size_t nconsumers,
                                    bool everything)
{
    l->stats.invalidations++;
    bool all_realms = !realm_id || !*realm_id;
    bool whole_realm = everything || (ndigests == 0 && nconsumers == 0);
    /* A lookup answered from before the change must not be cached after it. */
    for (flight_t *f = l->flights; f; f = f->next) {
        if (all_realms || strcmp(f->realm, realm_id) == 0) f->cacheable = false;
    }
    msg_t m = {0};
    if (all_realms) {
        tg_realm_cache_clear(l->cache);
        m.kind = M_CLEAR;
        broadcast(l, &m);
        return;
    }
    copy_realm(m.realm, realm_id);
    if (whole_realm) {
        tg_realm_cache_evict_realm(l->cache, realm_id);
        m.kind = M_EVICT_REALM;
        broadcast(l, &m);
        return;
    }
    for (size_t i = 0; i < ndigests; i++) {
        tg_realm_cache_evict_key(l->cache, realm_id, digests[i]);
        m.kind = M_EVICT_KEY;
        memcpy(m.digest, digests[i], 32);
        broadcast(l, &m);
    }
    for (size_t i = 0; i < nconsumers; i++) {
        tg_realm_cache_evict_consumer(l->cache, realm_id, consumer_ids[i]);
        m.kind = M_EVICT_CONSUMER;
        m.consumer_id = (char *)consumer_ids[i]; /* broadcast copies it */
        broadcast(l, &m);
    }
}

tg_realm_lookup_stats_t tg_realm_lookup_stats(const tg_realm_lookup_t *l)
{
    tg_realm_lookup_stats_t s = l->stats;
    uint64_t refused = atomic_load_explicit(&l->worker_overflow, memory_order_relaxed);
    s.unavailable += refused; /* every 503 counts; `overflow` stays the control thread's bound */
    s.in_flight = l->nflights;
    s.cache = tg_realm_cache_stats(l->cache);
    return s;
}
