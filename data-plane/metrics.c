/*
 * metrics.c — per-worker counters and their Prometheus rendering; see metrics.h.
 */
#include "metrics.h"
#include "alloc.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kong's prometheus plugin DEFAULT_BUCKETS, in ms. */
static const long bucket_le[TG_METRICS_NBUCKETS] = {
    1,  2,  5,   7,   10,  15,  20,  25,   30,   40,   50,    60,    70,
    80, 90, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000, 30000, 60000};

/* ---------------------------------------------------------------- worker side */

void tg_metrics_inc(atomic_ulong *c)
{
    /* single writer: a plain load and store, no locked instruction */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

void tg_metrics_add(atomic_long *g, long delta)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

static void hist_observe(tg_metrics_hist_t *h, int64_t ms)
{
    if (ms < 0) return;
    size_t i = 0;
    while (i < TG_METRICS_NBUCKETS && ms > bucket_le[i])
        i++;
    tg_metrics_inc(&h->buckets[i]);
    atomic_store_explicit(&h->sum,
                          atomic_load_explicit(&h->sum, memory_order_relaxed) + (unsigned long)ms,
                          memory_order_relaxed);
}

/* FNV-1a over a label as stored (its first TG_METRICS_LABEL_MAX - 1 bytes). */
static uint64_t fnv(uint64_t h, const char *s)
{
    for (size_t i = 0; s && s[i] && i < TG_METRICS_LABEL_MAX - 1; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL;
}

static void copy_label(char *dst, const char *src)
{
    snprintf(dst, TG_METRICS_LABEL_MAX, "%s", src ? src : "");
}

/* A label as stored: at most TG_METRICS_LABEL_MAX - 1 bytes of it. */
static bool label_is(const char *stored, const char *v)
{
    return strncmp(stored, v ? v : "", TG_METRICS_LABEL_MAX - 1) == 0;
}

static bool series_is(const tg_metrics_series_t *s, const tg_metrics_request_t *r,
                      const char *consumer)
{
    return s->status == r->status && label_is(s->route, r->route) &&
           label_is(s->service, r->service) && label_is(s->consumer, consumer);
}

/*
 * Whether this consumer has a label of its own: it has one already, or fewer than
 * TG_METRICS_CONSUMERS have and it becomes one. The set is at most half full and never
 * loses an entry, so a probe ends at the consumer or at an empty slot after a few steps.
 */
static bool consumer_labelled(tg_metrics_t *m, const char *name)
{
    /* compared as the label stores it: two names equal there are one label */
    uint64_t h = fnv(14695981039346656037ULL, name);
    const size_t mask = 2 * TG_METRICS_CONSUMERS - 1;
    for (size_t i = 0;; i++) {
        struct tg_metrics_consumer *c = &m->consumers[(h + i) & mask];
        if (!c->name[0]) {
            if (m->nconsumers >= TG_METRICS_CONSUMERS) return false;
            c->hash = h;
            copy_label(c->name, name);
            m->nconsumers++;
            return true;
        }
        if (c->hash == h && label_is(c->name, name)) return true;
    }
}

/* The series of a label set: found, or claimed from an empty slot (linear probing); NULL
 * when the table already holds TG_METRICS_SERIES_MAX sets. */
static tg_metrics_series_t *series_for(tg_metrics_t *m, const tg_metrics_request_t *r)
{
    const char *consumer = r->consumer && r->consumer[0] && !consumer_labelled(m, r->consumer)
                               ? TG_METRICS_OTHER
                               : r->consumer;
    uint64_t h = fnv(fnv(fnv(14695981039346656037ULL ^ (uint64_t)r->status, r->route), r->service),
                     consumer);
    /* at most 3/4 full: an absent set meets an empty slot after a few probes */
    for (size_t probe = 0;; probe++) {
        tg_metrics_series_t *s = &m->series[(h + probe) & (TG_METRICS_SERIES - 1)];
        if (!atomic_load_explicit(&s->ready, memory_order_relaxed)) {
            if (m->nseries >= TG_METRICS_SERIES_MAX) return NULL;
            s->status = r->status;
            s->hash = h;
            copy_label(s->route, r->route);
            copy_label(s->service, r->service);
            copy_label(s->consumer, consumer);
            atomic_store_explicit(&s->ready, 1, memory_order_release);
            m->nseries++;
            return s;
        }
        if (s->hash == h && series_is(s, r, consumer)) return s;
    }
}

void tg_metrics_count_request(tg_metrics_t *m, const tg_metrics_request_t *r)
{
    tg_metrics_inc(&m->requests);
    tg_metrics_series_t *s = series_for(m, r);
    if (s)
        tg_metrics_inc(&s->count);
    else
        tg_metrics_inc(&m->overflow_status[r->status >= 0 && r->status < 600 ? r->status : 0]);
    hist_observe(&m->request_ms, r->request_ms);
    hist_observe(&m->upstream_ms, r->upstream_ms);
    hist_observe(&m->proxy_ms, r->proxy_ms);
}

/* ---------------------------------------------------------------- process-wide */

static atomic_ulong globals[TG_METRICS_NGLOBAL];

void tg_metrics_global_add(tg_metrics_global_t g, unsigned long n)
{
    if (g < TG_METRICS_NGLOBAL) atomic_fetch_add_explicit(&globals[g], n, memory_order_relaxed);
}

void tg_metrics_global_set(tg_metrics_global_t g, unsigned long v)
{
    if (g < TG_METRICS_NGLOBAL) atomic_store_explicit(&globals[g], v, memory_order_relaxed);
}

unsigned long tg_metrics_global_get(tg_metrics_global_t g)
{
    return g < TG_METRICS_NGLOBAL ? atomic_load_explicit(&globals[g], memory_order_relaxed) : 0;
}

/* ---------------------------------------------------------------- control side */

static unsigned long ld(atomic_ulong *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void tg_metrics_totals(tg_metrics_t *const *ms, size_t n, tg_metrics_totals_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        out->requests += ld(&ms[i]->requests);
        out->conns_accepted += ld(&ms[i]->conns_accepted);
        out->conns_handled += ld(&ms[i]->conns_handled);
        out->conns_active += atomic_load_explicit(&ms[i]->conns_active, memory_order_relaxed);
        out->conns_reading += atomic_load_explicit(&ms[i]->conns_reading, memory_order_relaxed);
        out->conns_writing += atomic_load_explicit(&ms[i]->conns_writing, memory_order_relaxed);
    }
}

typedef struct sb {
    char *p;
    size_t len, cap;
} sb_t;

__attribute__((format(printf, 2, 3))) static void sb_printf(sb_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (n > 0 ? (size_t)n : 0);
        b->p = tg_realloc(b->p, b->cap);
    }
}

/* A label value with Prometheus escaping (backslash, quote, newline). */
static void sb_label(sb_t *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_printf(b, "\\%c", *v);
        else if (*v == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *v);
    }
}

/* Sums the series of every worker by label set: "status\x01route\x01service\x01consumer" → n. */
static json_t *merge_series(tg_metrics_t *const *ms, size_t n)
{
    json_t *sum = json_object();
    for (size_t w = 0; w < n; w++) {
        for (size_t i = 0; i < TG_METRICS_SERIES; i++) {
            tg_metrics_series_t *s = &ms[w]->series[i];
            if (!atomic_load_explicit(&s->ready, memory_order_acquire)) continue;
            char key[4 * TG_METRICS_LABEL_MAX];
            snprintf(key, sizeof(key), "%d\x01%s\x01%s\x01%s", s->status, s->route, s->service,
                     s->consumer);
            json_int_t prev = json_integer_value(json_object_get(sum, key));
            json_object_set_new(sum, key, json_integer(prev + (json_int_t)ld(&s->count)));
        }
        for (int code = 0; code < 600; code++) {
            unsigned long v = ld(&ms[w]->overflow_status[code]);
            if (!v) continue;
            char key[64];
            snprintf(key, sizeof(key), "%d\x01%s\x01%s\x01%s", code, TG_METRICS_OTHER,
                     TG_METRICS_OTHER, TG_METRICS_OTHER);
            json_int_t prev = json_integer_value(json_object_get(sum, key));
            json_object_set_new(sum, key, json_integer(prev + (json_int_t)v));
        }
    }
    return sum;
}

static void render_requests(sb_t *b, tg_metrics_t *const *ms, size_t n)
{
    sb_printf(b, "# HELP tollgate_http_requests_total HTTP requests proxied or answered, by "
                 "status code, route, service and consumer.\n"
                 "# TYPE tollgate_http_requests_total counter\n");
    json_t *sum = merge_series(ms, n);
    const char *key;
    json_t *v;
    json_object_foreach(sum, key, v)
    {
        char copy[4 * TG_METRICS_LABEL_MAX];
        snprintf(copy, sizeof(copy), "%s", key);
        char *f[4] = {"", "", "", ""};
        char *p = copy;
        for (int i = 0; i < 4; i++) {
            f[i] = p;
            p = strchr(p, '\x01');
            if (!p) break;
            *p++ = '\0';
        }
        const char *names[4] = {"code", "route", "service", "consumer"};
        sb_printf(b, "tollgate_http_requests_total{");
        for (int i = 0; i < 4; i++) {
            sb_printf(b, "%s%s=\"", i ? "," : "", names[i]);
            sb_label(b, f[i]);
            sb_printf(b, "\"");
        }
        sb_printf(b, "} %lld\n", (long long)json_integer_value(v));
    }
    json_decref(sum);
}

static void render_hist(sb_t *b, tg_metrics_t *const *ms, size_t n, const char *name,
                        const char *help, size_t off)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long cum = 0, sum = 0;
    for (size_t i = 0; i <= TG_METRICS_NBUCKETS; i++) {
        for (size_t w = 0; w < n; w++)
            cum += ld(&((tg_metrics_hist_t *)((char *)ms[w] + off))->buckets[i]);
        if (i < TG_METRICS_NBUCKETS)
            sb_printf(b, "%s_bucket{le=\"%ld\"} %lu\n", name, bucket_le[i], cum);
        else
            sb_printf(b, "%s_bucket{le=\"+Inf\"} %lu\n", name, cum);
    }
    for (size_t w = 0; w < n; w++)
        sum += ld(&((tg_metrics_hist_t *)((char *)ms[w] + off))->sum);
    sb_printf(b, "%s_sum %lu\n%s_count %lu\n", name, sum, name, cum);
}

static void render_conns(sb_t *b, tg_metrics_t *const *ms, size_t n)
{
    tg_metrics_totals_t t;
    tg_metrics_totals(ms, n, &t);
    long waiting = t.conns_active - t.conns_reading - t.conns_writing;
    sb_printf(b,
              "# HELP tollgate_connections_total Client connections accepted and handled.\n"
              "# TYPE tollgate_connections_total counter\n"
              "tollgate_connections_total{state=\"accepted\"} %lu\n"
              "tollgate_connections_total{state=\"handled\"} %lu\n"
              "# HELP tollgate_connections Client connections open now, by state.\n"
              "# TYPE tollgate_connections gauge\n"
              "tollgate_connections{state=\"active\"} %ld\n"
              "tollgate_connections{state=\"reading\"} %ld\n"
              "tollgate_connections{state=\"writing\"} %ld\n"
              "tollgate_connections{state=\"waiting\"} %ld\n",
              t.conns_accepted, t.conns_handled, t.conns_active, t.conns_reading, t.conns_writing,
              waiting < 0 ? 0 : waiting);
}

static void render_globals(sb_t *b)
{
    sb_printf(b,
              "# HELP tollgate_rate_limiting_errors_total Requests rate-limiting could not count "
              "(no room for a new counter, or a slot busy too long), by what was done.\n"
              "# TYPE tollgate_rate_limiting_errors_total counter\n"
              "tollgate_rate_limiting_errors_total{result=\"proxied\"} %lu\n"
              "tollgate_rate_limiting_errors_total{result=\"refused\"} %lu\n"
              "# HELP tollgate_rate_limiting_counter_slots Rate-limiting counter slots mapped "
              "(28 bytes each), all periods.\n"
              "# TYPE tollgate_rate_limiting_counter_slots gauge\n"
              "tollgate_rate_limiting_counter_slots %lu\n",
              tg_metrics_global_get(TG_METRICS_RL_ERRORS_PROXIED),
              tg_metrics_global_get(TG_METRICS_RL_ERRORS_REFUSED),
              tg_metrics_global_get(TG_METRICS_RL_COUNTER_SLOTS));
}

char *tg_metrics_render(tg_metrics_t *const *ms, size_t n, const char *extra)
{
    sb_t b = {tg_malloc(16384), 0, 16384};
    b.p[0] = '\0';
    render_requests(&b, ms, n);
    render_hist(&b, ms, n, "tollgate_request_latency_ms",
                "Time from the first byte of a request to the end of its response.",
                offsetof(tg_metrics_t, request_ms));
    render_hist(&b, ms, n, "tollgate_upstream_latency_ms",
                "Time from sending a request upstream to the upstream's response head.",
                offsetof(tg_metrics_t, upstream_ms));
    render_hist(&b, ms, n, "tollgate_proxy_latency_ms",
                "Time spent in the gateway before the request went upstream.",
                offsetof(tg_metrics_t, proxy_ms));
    render_conns(&b, ms, n);
    render_globals(&b);
    if (extra) sb_printf(&b, "%s", extra);
    return b.p;
}
