/*
 * cluster_server.h — the control plane's `cluster_listen` listener (DESIGN §1, §5, §6).
 *
 * One TLS port served by libwebsockets on the control plane's libuv loop:
 *   - the join endpoints under /v1/join/ (plain HTTPS, the join token authenticates; join.c answers on a worker),
 *   - `/v1/sync` (websocket, subprotocol tollgate.sync.v1) only for a client certificate issued
 *     by the cluster CA; the data plane's node id and control plane come from that certificate
 *     and the session goes to the sync hub.
 * The server certificate is issued by the cluster CA for this node's names at every start.
 */
#ifndef TG_CLUSTER_SERVER_H
#define TG_CLUSTER_SERVER_H

#include "cluster_ca.h"
#include "sync_hub.h"
#include "workers.h"

#include <uv.h>

typedef struct tg_cluster_server tg_cluster_server_t;

typedef struct tg_cluster_server_opts {
    uv_loop_t *loop;
    tg_workers_t *workers;
    const tg_cluster_ca_t *ca;
    const char *conninfo;
    const char *node_id;
    const char *listen;      /* host:port */
    const char *const *names; /* DNS names / addresses for the server certificate */
    size_t nnames;
} tg_cluster_server_opts_t;

/* Starts the listener and the sync hub; NULL after logging why. */
tg_cluster_server_t *tg_cluster_server_start(const tg_cluster_server_opts_t *opts);
/* The hub (for status and metrics). */
tg_sync_hub_t *tg_cluster_server_hub(tg_cluster_server_t *cs);
/* The endpoints handed to data planes (in Welcome and join answers); borrowed reference kept. */
void tg_cluster_server_set_endpoints(tg_cluster_server_t *cs, json_t *endpoints);
/* Closes every connection and the listener; the loop must run afterwards to finish closing. */
void tg_cluster_server_stop(tg_cluster_server_t *cs);
/* Frees it once the loop has finished closing what stop closed. */
void tg_cluster_server_free(tg_cluster_server_t *cs);

#endif
