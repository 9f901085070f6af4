/*
 * sync_hub.h — the control plane's side of the sync protocol, without the transport.
 *
 * The hub owns one session per connected data plane and everything they share: the latest
 * version of each control plane (learned from LISTEN/NOTIFY on `tollgate_config`, so no node
 * polls), the snapshot of the latest version (built once, shared by every DP that needs one),
 * revocations (NOTIFY `tollgate_cluster`), heartbeats and silence detection. PostgreSQL work
 * runs on the worker pool; everything else on the loop thread, which owns the hub.
 *
 * The transport (cluster_server.c, libwebsockets) feeds received frames in and pulls frames to
 * send out: tg_sync_session_next() hands the next frame; `wake` tells the transport that a
 * session has frames waiting, `close` that it must be closed once they are written.
 */
#ifndef TG_SYNC_HUB_H
#define TG_SYNC_HUB_H

#include "cluster_ca.h"
#include "workers.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct tg_sync_hub tg_sync_hub_t;
typedef struct tg_sync_session tg_sync_session_t;

typedef struct tg_sync_transport {
    void (*wake)(void *conn);
    void (*close)(void *conn);
} tg_sync_transport_t;

typedef struct tg_sync_hub_opts {
    uv_loop_t *loop;
    tg_workers_t *workers;
    const char *conninfo;      /* for the LISTEN connection */
    const char *node_id;       /* this CP node */
    const tg_cluster_ca_t *ca; /* for certificate renewals */
    const tg_sync_transport_t *transport;
    size_t headroom; /* spare bytes the transport wants before each frame */
    uint32_t heartbeat_ms;
    /* change-log retention (rule 8): keep at least the latest `keep_versions` versions and
     * every version younger than `keep_seconds`; purge every `purge_interval_ms` (0: never) */
    int64_t keep_versions;
    double keep_seconds;
    uint32_t purge_interval_ms;
} tg_sync_hub_opts_t;

tg_sync_hub_t *tg_sync_hub_start(const tg_sync_hub_opts_t *opts);
/* Closes every session (the transport gets `close`), stops LISTEN and timers. */
void tg_sync_hub_stop(tg_sync_hub_t *h);

/* The endpoints sent in Welcome (borrowed: the hub keeps a reference). */
void tg_sync_hub_set_endpoints(tg_sync_hub_t *h, json_t *endpoints);

/* A verified client certificate's data plane connected; NULL refuses it. */
tg_sync_session_t *tg_sync_session_open(tg_sync_hub_t *h, void *conn, const char *node_id,
                                        const char *cp_id, const char *cert_serial,
                                        const char *peer);
/* Part of a message arrived: the DP is not silent (a large message may take a while). */
void tg_sync_session_heard(tg_sync_session_t *s);
/* One complete websocket message. */
void tg_sync_session_receive(tg_sync_session_t *s, const uint8_t *frame, size_t len);
/*
 * The next frame to write: 1 with *data and *len (valid until the next call; the hub's headroom is
 * before *data), 0 when nothing is waiting, -1 when everything was written and the connection
 * must now be closed (after an Error).
 */
int tg_sync_session_next(tg_sync_session_t *s, uint8_t **data, size_t *len);
/* The transport's connection is gone; the session is freed once its jobs finish. */
void tg_sync_session_closed(tg_sync_session_t *s);

/* Histogram bounds (upper, inclusive) of the metrics; the last bucket is +Inf. */
#define TG_SYNC_LATENCY_BUCKETS 12 /* 5 ms .. 30 s */
#define TG_SYNC_SIZE_BUCKETS 10    /* 256 B .. 64 MiB */
extern const double tg_sync_latency_bounds[TG_SYNC_LATENCY_BUCKETS];
extern const double tg_sync_size_bounds[TG_SYNC_SIZE_BUCKETS];

/* Counters for the metrics endpoint, GET /clustering/status and `tollgate status`. */
typedef struct tg_sync_hub_stats {
    uint64_t sessions, deltas_sent, snapshots_sent, snapshots_built, acks, nacks;
    uint64_t bytes_sent, notifies;
    uint64_t delta_bytes, snapshot_bytes; /* payload sizes by kind */
    uint64_t connected;                   /* data planes welcomed and connected now */
    uint64_t resyncs;                     /* snapshots sent to repair a digest mismatch */
    uint64_t store_retries;               /* pushes re-sent after a NACK_STORE */
    uint64_t ack_timeouts, floods;    /* sessions closed for silence on ACK / heartbeat floods */
    uint64_t purges, purged_versions; /* change-log purge rounds run here, versions deleted */
    uint64_t realm_lookups;           /* RealmLookups answered (found or not) */
    uint64_t realm_lookup_errors;     /* ... answered with an error (database down, overload) */
    uint64_t realm_invalidations;     /* Invalidate messages sent (one per DP per change) */
    int64_t last_purge_unix;          /* wall clock of the last purge round (0: none) */
    uint64_t ack_latency_count;
    double ack_latency_sum_s; /* commit seen by this node -> ACK received */
    uint64_t ack_latency_hist[TG_SYNC_LATENCY_BUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t push_size_count, push_size_sum;
    uint64_t push_size_hist[TG_SYNC_SIZE_BUCKETS + 1];
} tg_sync_hub_stats_t;
/* Thread-safe (the Admin API's workers read it while the loop counts). */
void tg_sync_hub_get_stats(tg_sync_hub_t *h, tg_sync_hub_stats_t *out);

/*
 * The running hub of this process, seen from any thread (the Admin API's workers): NULL / ""
 * when no hub runs. The view is refreshed by the loop every second:
 *   {"node_id", "control_planes": [{"id", "latest_version", "oldest_version"}],
 *    "data_planes": [{"id", "control_plane_id", "address", "hostname", "applied_version",
 *      "lag_versions", "lag_seconds", "sync_status", "last_error", "connected_at",
 *      "deltas_sent", "snapshots_sent", "nacks", "in_flight"}],
 *    "retention": {"keep_versions", "keep_days", "purge_interval_seconds"}}
 * tg_sync_hub_view returns a new reference; tg_sync_hub_metrics a malloc'd Prometheus text.
 */
json_t *tg_sync_hub_view(void);
/* The running hub's counters (zeros when none runs). */
void tg_sync_hub_current_stats(tg_sync_hub_stats_t *out);
char *tg_sync_hub_metrics(void);

#endif
