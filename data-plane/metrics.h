/*
 * metrics.h — the data plane's request and connection counters, per worker.
 *
 * Each worker owns one tg_metrics_t and is its only writer, so counting never locks and
 * never shares a cache line with another worker: counters are atomics stored with relaxed
 * loads and stores, and the per-(status, route, service, consumer) table is filled by the
 * worker alone (an entry's labels are written before the entry is published with a release
 * store). The control thread reads every worker's metrics at once and sums them when
 * /status or /metrics is asked for.
 *
 * Bounded label cardinality (Prometheus practice: a label must not take unbounded values).
 * Each worker labels requests with at most TG_METRICS_CONSUMERS distinct consumers, the first
 * ones it sees; the requests of every later consumer are counted with consumer="__other__"
 * (TG_METRICS_OTHER; route and service kept). The per-worker table holds at most
 * TG_METRICS_SERIES_MAX label sets (status, route, service, consumer); a request whose set
 * does not fit is counted under its status with route, service and consumer all
 * TG_METRICS_OTHER. So memory is fixed per worker, every request is counted in exactly one
 * series, and the sums by code stay exact. (With W workers the output may show up to
 * W * TG_METRICS_CONSUMERS consumers: each worker admits its own first ones.)
 *
 * Process-wide counters (tg_metrics_global_*) are for events outside one worker's request
 * accounting, e.g. the rate-limiting counter table; any thread may bump them (atomic adds).
 *
 * Latency histograms use Kong's prometheus plugin buckets (milliseconds).
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TG_METRICS_SERIES 4096     /* slots of the label-set table, a power of two */
#define TG_METRICS_SERIES_MAX 3072 /* label sets kept: the table stays 3/4 full at most */
#define TG_METRICS_CONSUMERS 1024  /* distinct consumer labels per worker */
#define TG_METRICS_OTHER "__other__"
#define TG_METRICS_LABEL_MAX 48
#define TG_METRICS_NBUCKETS 26

typedef struct tg_metrics_hist {
    atomic_ulong buckets[TG_METRICS_NBUCKETS + 1]; /* last: +Inf */
    atomic_ulong sum;
} tg_metrics_hist_t;

typedef struct tg_metrics_series {
    atomic_int ready;
    int status;
    uint64_t hash; /* of the label set: most probes compare this word only */
    char route[TG_METRICS_LABEL_MAX], service[TG_METRICS_LABEL_MAX], consumer[TG_METRICS_LABEL_MAX];
    atomic_ulong count;
} tg_metrics_series_t;

typedef struct tg_metrics {
    atomic_ulong requests;
    atomic_ulong conns_accepted, conns_handled;
    atomic_long conns_active, conns_reading, conns_writing;
    tg_metrics_hist_t request_ms, upstream_ms, proxy_ms;
    atomic_ulong overflow_status[600]; /* by status when the label-set table is full */
    size_t nseries;                    /* label sets in series[] (worker only) */
    size_t nconsumers;                 /* consumer names in consumers[] (worker only) */
    tg_metrics_series_t series[TG_METRICS_SERIES];
    /* consumers given their own label, open addressing (worker only) */
    struct tg_metrics_consumer {
        uint64_t hash;
        char name[TG_METRICS_LABEL_MAX]; /* "" = empty slot */
    } consumers[2 * TG_METRICS_CONSUMERS];
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

/* Process-wide counters and gauges, any thread. */
typedef enum tg_metrics_global {
    TG_METRICS_RL_ERRORS_PROXIED, /* rate-limiting could not count: proxied (fault_tolerant) */
    TG_METRICS_RL_ERRORS_REFUSED, /* ... answered 500 */
    TG_METRICS_RL_COUNTER_SLOTS,  /* gauge: counter slots mapped */
    TG_METRICS_NGLOBAL,
} tg_metrics_global_t;
void tg_metrics_global_add(tg_metrics_global_t g, unsigned long n);
void tg_metrics_global_set(tg_metrics_global_t g, unsigned long v);
unsigned long tg_metrics_global_get(tg_metrics_global_t g);

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
