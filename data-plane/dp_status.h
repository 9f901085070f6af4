/*
 * dp_status.h — the data plane's status_listen endpoints (DESIGN §7):
 *   GET /status        requests, connections, config version and configuration_hash (Kong's
 *                      DP shape: "server" counters and "configuration_hash"), plus the mode
 *                      and, with a control plane, the `cluster` object (sync_client.h);
 *   GET /status/ready  503 until a configuration is loaded, then 200 (also with no CP);
 *   GET /metrics       Prometheus text: requests by status/route/service/consumer, latency
 *                      histograms, connections, config version and reloads, and the
 *                      tollgate_dp_sync_* counters of the control plane connection.
 *
 * Runs on the control thread's loop (lib/http_server: small requests, buffered). It reads
 * the workers' metrics (metrics.h) and the fields below, which the control thread updates
 * between requests; no locking is needed because both happen on that one loop.
 */
#ifndef TG_DP_STATUS_H
#define TG_DP_STATUS_H

#include "generation.h"
#include "http_server.h"
#include "sync_client.h"
#include "worker.h"

#include <jansson.h>
#include <stdbool.h>

#include <stdint.h>
#include <uv.h>

#define TG_DP_STATUS_MAX_LISTENERS 8

typedef struct tg_dp_status {
    tg_worker_t *workers;
    int nworkers;
    const tg_generation_t *gen;   /* the generation being served; NULL before any */
    const char *mode;             /* "standalone" or "control_plane" */
    const tg_sync_client_t *sync; /* the control plane connection; NULL without one */
    const struct tg_realm_lookup *realms; /* realm key lookups; NULL without a CP */
    unsigned long reloads_ok, reloads_failed;
    tg_http_server_t *servers[TG_DP_STATUS_MAX_LISTENERS];
    int nservers;
} tg_dp_status_t;

/* What /status reports, for the control socket too (dp_ctl.c) so both say the same:
 * the configuration served (with a control plane, the store's version and digest), */
typedef struct tg_dp_served {
    bool loaded;
    int64_t version;
    char hash[TG_CONFIG_DIGEST_HEX_LEN + 1];
} tg_dp_served_t;
tg_dp_served_t tg_dp_status_served(const tg_dp_status_t *st);
/* ... the control plane connection (null without one) and the realm lookups (null without). */
json_t *tg_dp_status_cluster_json(const tg_dp_status_t *st);
json_t *tg_dp_status_realms_json(const tg_dp_status_t *st);

/* Listens on every status_listen address. 0, or -TG_ECONFIG / -TG_EIO (logged). */
int tg_dp_status_listen(tg_dp_status_t *st, uv_loop_t *loop);
/* Stops listening (the servers free themselves on the loop). */
void tg_dp_status_close(tg_dp_status_t *st);

#endif
