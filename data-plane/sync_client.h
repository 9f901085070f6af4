/*
 * sync_client.h — the data plane's connection to its control plane (DESIGN §5–§7): a
 * libwebsockets client on the control thread's libuv loop speaking tollgate.sync.v1
 * (sync_apply.h does the protocol; this module is the transport around it).
 *
 *   - Identity and trust come from <prefix>/cluster (written by `tollgate dp join`, read with
 *     dp_join.h's tg_dp_enrolment_load): dp.key,
 *     dp.crt (the client certificate the control plane requires), ca.crt (the cluster CA the
 *     control plane's certificate must chain to) and cluster.json {node_id, control_plane_id,
 *     endpoints, server_name}. The control plane's certificate must name `server_name` (the
 *     host given at join): host name verification is always on.
 *   - Endpoints: `cluster_control_plane` when set, else cluster.json's, then whatever the
 *     control planes' Welcome lists. Each attempt takes the next one in turn; failed attempts
 *     and lost connections back off exponentially with jitter (0.5 s doubling to 30 s), reset
 *     once a Welcome arrives.
 *   - One Envelope per binary websocket message; fragmented messages are reassembled up to
 *     TG_SYNC_FRAME_MAX, a larger one closes the connection. Replies queue and go out as the
 *     socket becomes writable.
 *   - Heartbeats every interval (Welcome's, default 10 s); a control plane silent for 3
 *     intervals is dropped and the client reconnects.
 *   - Certificate renewal: past 2/3 of the client certificate's lifetime a new EC P-256 key
 *     and CSR are made and sent (RenewRequest); the certificate that comes back is checked
 *     against the key and the CA, key and certificate are replaced on disk atomically (key
 *     0600) and used from the next connection on.
 *
 * The data plane keeps serving whatever the store holds whatever happens here.
 *
 * Threads and ownership: everything runs on the loop given to tg_sync_client_start (the
 * DP's control thread). The client owns its libwebsockets context, its timers and its
 * SSL_CTX; it borrows the store. Shutdown is two steps because libuv closes handles
 * asynchronously: tg_sync_client_stop (on the loop; the loop then ends once libwebsockets
 * has closed its handles), then tg_sync_client_free after uv_run returned.
 */
#ifndef TG_SYNC_CLIENT_H
#define TG_SYNC_CLIENT_H

#include "store.h"
#include "sync_apply.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct tg_sync_client tg_sync_client_t;

typedef struct tg_sync_client_opts {
    uv_loop_t *loop;            /* the control thread's loop */
    tg_store_t *store;          /* borrowed */
    const char *endpoints;      /* cluster_control_plane ("host:port, ..."); NULL or "": from
                                   cluster.json */
    tg_sync_publish_cb publish; /* a new generation to serve (takes the reference) */
    void *publish_ud;
    /* realm key lookups ride this stream (realm_lookup.h): answers and invalidations are
     * handed to it, and it is told when the connection comes and goes. Borrowed; NULL: none. */
    struct tg_realm_lookup *realms;
} tg_sync_client_opts_t;

/* realm_lookup.h's tg_realm_send_cb (ud = the client): queues a RealmLookup; -TG_ECLOSED
 * unless a control plane has welcomed us. */
int tg_sync_client_realm_lookup(void *client, uint64_t request_id, const char *realm_id,
                                const uint8_t digest[32]);

/* For /status and /metrics. */
typedef struct tg_sync_client_status {
    bool connected;                      /* welcomed by a control plane right now */
    char endpoint[TG_SYNC_ENDPOINT_MAX]; /* the current or last endpoint tried */
    char last_error[256];                /* why the last connection failed or ended ("" none) */
    int64_t applied_version;             /* the store's config version and digest */
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    unsigned long deltas_applied, snapshots_applied, nacks_sent;
    char last_nack[256]; /* the reason of the last push this DP refused ("" none) */
    unsigned long connects, disconnects, renewals;
    int64_t last_apply_unix_ms; /* 0: nothing applied since start */
    uint32_t last_apply_us;
    int64_t cert_not_after; /* unix seconds */
} tg_sync_client_status_t;

/*
 * Reads the enrolment (dp_join.h: <prefix>/cluster), builds the TLS context and the libwebsockets
 * context on opts->loop and schedules the first connection. Returns 0, or -TG_ECONFIG after logging
 * what is missing or unreadable (no cluster.json and no cluster_control_plane, a key that does not
 * match the certificate, no endpoint) or -TG_EIO when libwebsockets cannot start.
 */
int tg_sync_client_start(const tg_sync_client_opts_t *opts, tg_sync_client_t **out);

/* Closes the connection and starts freeing libwebsockets' handles; nothing reconnects after.
 * Call on the loop's thread; idempotent. NULL is a no-op. */
void tg_sync_client_stop(tg_sync_client_t *c);

/* Frees the client once its loop has run to completion after tg_sync_client_stop. */
void tg_sync_client_free(tg_sync_client_t *c);

void tg_sync_client_status(const tg_sync_client_t *c, tg_sync_client_status_t *st);

#endif
