/*
 * metrics.h — the data plane's request and connection counters, per worker.
 *
 * Each worker owns one tg_metrics_t and is its only writer, so counting never locks and
 * never shares a cache line with another worker: counters are atomics stored with relaxed
 * loads and stores, and the per-(status, route, service, consumer) table is filled by the
 * worker alone (an entry's labels are written before the entry is published with a release
 * store). The control thread reads every worker's metrics at once and sums them when
 * /status or /metrics is asked for. The table holds TG_METRICS_SERIES label sets per
 * worker; requests beyond that are counted in one series without route/consumer labels.
 *
 * Latency histograms use Kong's prometheus plugin buckets (milliseconds).
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TG_METRICS_SERIES 4096
#define TG_METRICS_LABEL_MAX 48
#define TG_METRICS_NBUCKETS 26

typedef struct tg_metrics_hist {
    atomic_ulong buckets[TG_METRICS_NBUCKETS + 1]; /* last: +Inf */
    atomic_ulong sum;
} tg_metrics_hist_t;

typedef struct tg_metrics_series {
    atomic_int ready;
    int status;
    char route[TG_METRICS_LABEL_MAX], service[TG_METRICS_LABEL_MAX], consumer[TG_METRICS_LABEL_MAX];
    atomic_ulong count;
} tg_metrics_series_t;

typedef struct tg_metrics {
    atomic_ulong requests;
    atomic_ulong conns_accepted, conns_handled;
    atomic_long conns_active, conns_reading, conns_writing;
    tg_metrics_hist_t request_ms, upstream_ms, proxy_ms;
    atomic_ulong overflow_status[6]; /* by status class 1xx..5xx when the table is full */
    tg_metrics_series_t series[TG_METRICS_SERIES];
} tg_metrics_t;

/* What one finished request adds. Labels may be NULL or empty; latencies < 0 are skipped. */
typedef struct tg_metrics_request {
    int status;
    const char *route, *service, *consumer;
    int64_t request_ms, upstream_ms, proxy_ms;
} tg_metrics_request_t;

/* Worker side (single writer). */
void tg_metrics_count_request(tg_metrics_t *m, const tg_metrics_request_t *r);
/* Adds `delta` to a gauge or counter owned by this worker. */
void tg_metrics_add(atomic_long *gauge, long delta);
void tg_metrics_inc(atomic_ulong *counter);

/* Control side: the sums over `n` workers. */
typedef struct tg_metrics_totals {
    unsigned long requests, conns_accepted, conns_handled;
    long conns_active, conns_reading, conns_writing;
} tg_metrics_totals_t;
void tg_metrics_totals(tg_metrics_t *const *ms, size_t n, tg_metrics_totals_t *out);

/*
 * Prometheus text for `n` workers' metrics (requests by code/route/service/consumer,
 * latency histograms, connections). A fresh string the caller frees; `extra` (may be NULL)
 * is appended verbatim.
 */
char *tg_metrics_render(tg_metrics_t *const *ms, size_t n, const char *extra);

#endif
