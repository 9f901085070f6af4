/*
 * sync_apply.h — the data plane's half of tollgate.sync.v1 without the transport
 * (../shared/spec/sync-protocol.md): what to do with each message from the control plane and
 * what to answer, over the config store (store.h).
 *
 *   Welcome          remembers the heartbeat interval, the control plane id and the endpoints
 *                    (written into cluster.json atomically when they differ from it);
 *   Delta            from_version must be the applied version (else Nack VERSION_GAP); every
 *                    change is decoded (entity_codec.h), a delta touching services, routes or
 *                    plugins is first compiled into the next generation (so a config the
 *                    router or a plugin refuses never reaches the store), then the whole delta
 *                    is one tg_store_apply. Ack{nonce, version, apply time, digest}, or Nack
 *                    naming the entity and the reason with the old config kept. A delta whose
 *                    config_digest differs from the store's after applying is Nacked
 *                    NACK_DIGEST (applied; the control plane answers with a snapshot);
 *   SnapshotBegin/Chunk/End
 *                    one store snapshot (tg_store_snapshot_*): chunks of the same nonce in seq
 *                    order (seq counts from 0; a first chunk numbered 1 is accepted too, then
 *                    +1 each), End checks version, chunk and entity counts, compiles the
 *                    generation, and commits with the expected digest. Anything unexpected
 *                    aborts the snapshot (the old config stays) and Nacks it, a Delta
 *                    arriving mid-snapshot included (then the Delta is applied);
 *   Heartbeat        the control plane's latest version and digest: same version, different
 *                    digest → Nack{nonce 0, NACK_DIGEST, kept_version} once per version, which
 *                    asks the control plane for a snapshot (the resync of rule 5; the
 *                    control plane also sees the mismatch in the DP's own heartbeats);
 *   Error            logged; the caller closes the connection.
 * RenewResult, RealmLookupResult and Invalidate are not handled here (the caller's business).
 *
 * After a successful apply that changed services, routes or plugins (and after every
 * snapshot, and after the first config a fresh store receives), the new generation — version and
 * hash from the store — is handed to the `publish` callback, which takes its reference. Consumers
 * and credentials are read from the store per request and need nothing.
 *
 * Replies are packed frames (sync_frame.h) with `headroom` spare bytes in front, so a
 * websocket transport can send them as they are.
 *
 * Threads: the DP's control thread only (it is the store's writer). The object owns copies of
 * everything it keeps; it borrows the store, which must outlive it.
 */
#ifndef TG_SYNC_APPLY_H
#define TG_SYNC_APPLY_H

#include "generation.h"
#include "store.h"
#include "sync_frame.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_SYNC_MAX_ENDPOINTS 16
#define TG_SYNC_ENDPOINT_MAX 262 /* host (255) + ':' + port + NUL */
/* Bounds on the heartbeat interval a Welcome may set. */
#define TG_SYNC_HEARTBEAT_MS_MIN 1000u
#define TG_SYNC_HEARTBEAT_MS_MAX 300000u

/* What tg_sync_apply_handle tells the transport to do next. */
enum { TG_SYNC_CONTINUE = 0, TG_SYNC_CLOSE = 1 };

/* One packed frame: `buf` owns the memory (free it), the message is `frame`[0..len). */
typedef struct tg_sync_frame {
    uint8_t *buf, *frame;
    size_t len;
} tg_sync_frame_t;

/* The replies to one message, in sending order. */
#define TG_SYNC_OUT_MAX 4
typedef struct tg_sync_out {
    tg_sync_frame_t frames[TG_SYNC_OUT_MAX];
    size_t n;
} tg_sync_out_t;

typedef void (*tg_sync_publish_cb)(void *ud, tg_generation_t *g);

typedef struct tg_sync_apply_opts {
    tg_store_t *store;          /* borrowed */
    const char *node_id;        /* sent in Hello (copied) */
    const char *cluster_json;   /* Welcome's endpoints are persisted here; NULL: not persisted */
    size_t headroom;            /* spare bytes in front of every frame (LWS_PRE) */
    tg_sync_publish_cb publish; /* may be NULL (tests): the generation is dropped */
    void *publish_ud;
} tg_sync_apply_opts_t;

/* What the transport and /status read; updated by tg_sync_apply_handle. */
typedef struct tg_sync_apply_state {
    bool welcomed;         /* a Welcome arrived on this connection */
    uint32_t heartbeat_ms; /* from Welcome; TG_SYNC_HEARTBEAT_MS_DEFAULT before */
    char cp_id[64];        /* the control plane of this connection ("" before Welcome) */
    char endpoints[TG_SYNC_MAX_ENDPOINTS][TG_SYNC_ENDPOINT_MAX]; /* Welcome's list */
    size_t nendpoints;
    int64_t applied_version;                   /* the store's, after the last write */
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1]; /* the store's config digest ("" when empty) */
    unsigned long deltas_applied, snapshots_applied, nacks_sent;
    int64_t last_apply_unix_ms; /* wall clock of the last successful apply; 0: none yet */
    uint32_t last_apply_us;     /* how long it took */
    char last_nack[256];        /* the reason of the last Nack sent ("" none) */
} tg_sync_apply_state_t;

typedef struct tg_sync_apply tg_sync_apply_t;

/* A new protocol state over opts->store. Never NULL (allocation failure aborts). */
tg_sync_apply_t *tg_sync_apply_new(const tg_sync_apply_opts_t *opts);
/* Aborts an open snapshot and frees. NULL is a no-op. */
void tg_sync_apply_free(tg_sync_apply_t *a);

/* The connection ended: aborts an open snapshot (the old config stays) and forgets what the
 * Welcome said about this connection (endpoints are kept). */
void tg_sync_apply_reset(tg_sync_apply_t *a);

const tg_sync_apply_state_t *tg_sync_apply_state(const tg_sync_apply_t *a);

/*
 * Handles one envelope from the control plane, appending the replies to `out` (which the
 * caller initialised with n = 0 and then owns, see tg_sync_out_free). Returns
 * TG_SYNC_CONTINUE, or TG_SYNC_CLOSE when the connection must end (an Error from the control
 * plane); `out` may hold frames either way.
 */
int tg_sync_apply_handle(tg_sync_apply_t *a, const tg_sync_env_t *in, tg_sync_out_t *out);

/* The Hello opening a connection: protocol and tollgate versions, hostname, capabilities
 * ("delta", "snapshot"), the store's version, digest and control plane id (0, "" and "" for
 * a fresh store), node id. 0, or a store error (logged). */
int tg_sync_apply_hello(tg_sync_apply_t *a, tg_sync_frame_t *out);
/* A Heartbeat with the applied version and digest. 0 or a store error. */
int tg_sync_apply_heartbeat(tg_sync_apply_t *a, tg_sync_frame_t *out);

/* Packs an envelope with the object's headroom. 0, or -TG_ETOOBIG. */
int tg_sync_apply_pack(const tg_sync_apply_t *a, const tg_sync_env_t *env, tg_sync_frame_t *out);

/* Frees the frames of `out` and empties it. */
void tg_sync_out_free(tg_sync_out_t *out);

#endif
