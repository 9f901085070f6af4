/*
 * sync_frame.h — what both ends of the sync stream agree on besides the messages: the websocket
 * subprotocol, limits, and turning an Envelope into one binary frame and back.
 */
#ifndef TG_SYNC_FRAME_H
#define TG_SYNC_FRAME_H

#include "tollgate_sync.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define TG_SYNC_SUBPROTOCOL "tollgate.sync.v1"
#define TG_SYNC_PATH "/v1/sync"
#define TG_SYNC_PROTOCOL_VERSION 1u
/* Frames above this are refused by the receiver; snapshots are chunked well below it. */
#define TG_SYNC_FRAME_MAX ((size_t)16 << 20)
/* A snapshot chunk is closed once its entities add up to about this many encoded bytes. */
#define TG_SYNC_CHUNK_TARGET ((size_t)1 << 20)
#define TG_SYNC_HEARTBEAT_MS_DEFAULT 10000u
/* A peer silent for this many heartbeat intervals is dropped (sync-protocol rule 6). */
#define TG_SYNC_SILENT_INTERVALS 3u

typedef Tollgate__Sync__V1__Envelope tg_sync_env_t;

/*
 * Packs env into a fresh buffer with `headroom` spare bytes in front (libwebsockets wants
 * LWS_PRE there). *frame points at the message, *len is its length; free(*buf) releases it.
 * -1 when the message is larger than TG_SYNC_FRAME_MAX.
 */
int tg_sync_pack(const tg_sync_env_t *env, size_t headroom, uint8_t **buf, uint8_t **frame,
                 size_t *len);

/* Unpacks one frame (NULL when it is not a valid Envelope or is too large); free with
 * tg_sync_env_free. */
tg_sync_env_t *tg_sync_unpack(const uint8_t *frame, size_t len);
void tg_sync_env_free(tg_sync_env_t *env);

/* The name of an envelope's body for logs ("hello", "delta", ...). */
const char *tg_sync_body_name(const tg_sync_env_t *env);

#endif
