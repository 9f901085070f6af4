/*
 * sync_build.h — what the control plane sends a data plane, read from PostgreSQL.
 *
 * A *payload* is a ready-to-send sequence of packed Envelopes: either one Delta (the merged
 * changes between two versions, sync-protocol rule 1) or a snapshot (SnapshotBegin, chunks,
 * SnapshotEnd). Each is read in one REPEATABLE READ, READ ONLY transaction, so the entities and
 * the version they are sent as come from the same instant even while writers commit.
 *
 * Builders run on a worker thread (workers.h) with that worker's connection; payloads are
 * immutable once built and shared by reference between data plane sessions (loop thread).
 */
#ifndef TG_SYNC_BUILD_H
#define TG_SYNC_BUILD_H

#include "db.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tg_sync_frame {
    uint8_t *buf;  /* allocation, `headroom` bytes before data */
    uint8_t *data; /* the packed Envelope */
    size_t len;
} tg_sync_frame_t;

typedef struct tg_sync_payload {
    bool snapshot;
    int64_t from, to; /* delta from→to; a snapshot has from = -1 */
    uint64_t nonce;
    tg_sync_frame_t *frames;
    size_t nframes;
    size_t bytes;       /* sum of frame lengths */
    size_t entities;    /* changes in the delta, entities in the snapshot */
    char digest[65];    /* config digest at `to` (hex); "" when not known */
    bool digest_drift;  /* snapshot: the digest the writes kept differed (now being repaired) */
    bool digest_kept;   /* snapshot: announces the kept digest, not one recomputed from rows */
    bool growing;       /* a snapshot still being built: more frames will be appended */
    size_t cap;         /* frames allocated (a growing payload's appends) */
    int refs;           /* loop thread only */
} tg_sync_payload_t;

enum tg_sync_build_rc {
    TG_SYNC_BUILT = 0,
    TG_SYNC_UP_TO_DATE = 1, /* nothing after `from` */
    TG_SYNC_NEED_SNAPSHOT = 2, /* the log no longer covers `from` (or from is ahead) */
};

/*
 * The latest config version of a control plane, the oldest version still in its change log
 * (latest + 1 when the log is empty) and, when `digest` is not NULL, the config digest the
 * writes kept for the latest version (hex; "" when not known).
 */
int tg_sync_read_versions(tg_db_t *db, const char *cp_id, int64_t *latest, int64_t *oldest,
                          char digest[65], char *err, size_t errlen);

/*
 * The merged delta from `from` to the latest version: the last operation of each (type, id)
 * wins; deletes go first, children before parents, then upserts parents first. Frames get
 * `headroom` spare bytes in front. Returns a tg_sync_build_rc, or a negative code with err.
 */
int tg_sync_build_delta(tg_db_t *db, const char *cp_id, int64_t from, uint64_t nonce,
                        size_t headroom, tg_sync_payload_t **out, char *err, size_t errlen);

/*
 * Where a snapshot's frames go while it is being built: emit() is called on the builder's
 * thread with frames in send order (SnapshotBegin first, then each chunk as soon as it is
 * full, SnapshotEnd last) and takes ownership of the array and its buffers. `desc` is the
 * snapshot so far (version, nonce, bytes, entities; with `last`, also its digest): read it
 * during the call only. A snapshot that fails part way never emits `last`; the receiver
 * must then drop what it got.
 */
typedef struct tg_sync_stream {
    void (*emit)(struct tg_sync_stream *st, const struct tg_sync_payload *desc,
                 tg_sync_frame_t *frames, size_t n, bool last);
} tg_sync_stream_t;

/*
 * A chunked snapshot of the latest version. Its config digest is the one the writes kept for
 * that version (read in the same transaction) unless `verify` is set or that one is not
 * known: then it is recomputed from every row and checked against the kept one (a
 * difference is logged and the kept one set to be recomputed). With a stream, the frames go
 * there as they are built, so a data plane can apply chunk N while chunk N+1 is read, and
 * *out holds only the description (version, entities, bytes, digest); without one, *out
 * holds every frame.
 */
int tg_sync_build_snapshot(tg_db_t *db, const char *cp_id, uint64_t nonce, size_t headroom,
                           bool verify, tg_sync_stream_t *stream, tg_sync_payload_t **out,
                           char *err, size_t errlen);

/*
 * Computes the config digest of every control plane whose digest is not known (NULL: it held
 * entities before migration 005, or a write could not hash a row) and stores it. Runs its own
 * transactions; *repaired counts the control planes set. 0 or a negative code with err.
 */
int tg_sync_digest_repair(tg_db_t *db, int *repaired, char *err, size_t errlen);

/* Frees a payload (no reference counting: the caller decides when). */
void tg_sync_payload_free(tg_sync_payload_t *p);

#endif
