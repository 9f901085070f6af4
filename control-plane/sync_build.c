/*
 * sync_build.c — deltas and snapshots read from the change log and the entity tables
 * (sync_build.h).
 *
 * Entities leave the control plane in their data-plane form (config_row.h).
 */
#include "sync_build.h"

#include "alloc.h"
#include "config_digest.h"
#include "config_row.h"
#include "entity_codec.h"
#include "error.h"
#include "log.h"
#include "schema.h"
#include "sync_frame.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_ROWS 2000 /* entities per query of a snapshot or a delta's documents */

typedef Tollgate__Sync__V1__Change change_t;

/* ---------------------------------------------------------------- transactions */

static int begin_snapshot_read(tg_db_t *db, char *err, size_t errlen)
{
    tg_db_err_t e;
    if (tg_db_run(db, &e, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) != 0) {
        snprintf(err, errlen, "%s", e.message);
        return -TG_EDB;
    }
    return 0;
}

static void end_read(tg_db_t *db)
{
    tg_db_err_t e;
    tg_db_run(db, &e, "COMMIT", 0, NULL);
}

int tg_sync_read_versions(tg_db_t *db, const char *cp_id, int64_t *latest, int64_t *oldest,
                          char digest[65], char *err, size_t errlen)
{
    tg_db_err_t e;
    const char *p[] = {cp_id};
    PGresult *res = tg_db_exec(db, &e,
                               "SELECT cp.config_version, (SELECT min(version) FROM config_versions"
                               " v WHERE v.cp_id = cp.id), cp.config_digest::text"
                               " FROM control_planes cp WHERE cp.id = $1",
                               1, p);
    if (!res) {
        snprintf(err, errlen, "%s", e.message);
        return tg_db_err_is_down(&e) ? -TG_EDBDOWN : -TG_EDB;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        snprintf(err, errlen, "unknown control plane %s", cp_id);
        return -TG_ENOTFOUND;
    }
    *latest = atoll(PQgetvalue(res, 0, 0));
    *oldest = PQgetisnull(res, 0, 1) ? *latest + 1 : atoll(PQgetvalue(res, 0, 1));
    if (digest) tg_config_digest_decimal_hex(PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2),
                                             digest);
    PQclear(res);
    return 0;
}

/* ---------------------------------------------------------------- entities */

static change_t *new_change(const char *type, const char *id, bool upsert)
{
    change_t *c = tg_malloc(sizeof(*c));
    tollgate__sync__v1__change__init(c);
    c->type = tg_strdup(type);
    c->id = tg_strdup(id);
    c->has_op = 1;
    c->op = upsert ? TOLLGATE__SYNC__V1__OP__OP_UPSERT : TOLLGATE__SYNC__V1__OP__OP_DELETE;
    return c;
}

/* Encodes one row as an upsert; adds its hash to `digest` when given. */
static change_t *row_change(const tg_schema_t *s, PGresult *res, int row,
                            tg_config_digest_t *digest, char *err, size_t errlen)
{
    tg_pb_entity_t *pb = tg_config_row_proto(s, res, row, 0, err, errlen);
    if (!pb) return NULL;
    const char *id = PQgetvalue(res, row, 0);
    if (digest) {
        uint8_t h[TG_CONFIG_DIGEST_LEN];
        if (tg_config_row_hash_proto(s, id, pb, h, err, errlen) != 0) {
            tg_proto_entity_free(pb);
            return NULL;
        }
        tg_config_digest_add(digest, h);
    }
    change_t *c = new_change(s->name, id, true);
    c->entity = pb;
    return c;
}

static void free_changes(change_t **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tollgate__sync__v1__change__free_unpacked(v[i], NULL);
    free(v);
}

/* ---------------------------------------------------------------- frames */

static void add_frame(tg_sync_payload_t *p, const tg_sync_env_t *env, size_t headroom)
{
    tg_sync_frame_t f;
    if (tg_sync_pack(env, headroom, &f.buf, &f.data, &f.len) != 0)
        abort(); /* callers bound sizes */
    p->frames = tg_realloc(p->frames, (p->nframes + 1) * sizeof(*p->frames));
    p->frames[p->nframes++] = f;
    p->bytes += f.len;
}

void tg_sync_payload_free(tg_sync_payload_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nframes; i++)
        free(p->frames[i].buf);
    free(p->frames);
    free(p);
}

static tg_sync_payload_t *new_payload(bool snapshot, int64_t from, int64_t to, uint64_t nonce)
{
    tg_sync_payload_t *p = tg_calloc(1, sizeof(*p));
    p->snapshot = snapshot;
    p->from = from;
    p->to = to;
    p->nonce = nonce;
    return p;
}

/* ---------------------------------------------------------------- deltas */

typedef struct merged {
    const tg_schema_t *schema;
    int rank; /* index in tg_entities: parents first */
    char id[40];
    bool upsert;
} merged_t;

static int rank_of(const char *type)
{
    for (int i = 0; tg_entities[i]; i++)
        if (strcmp(tg_entities[i]->name, type) == 0) return i;
    return -1;
}

/* Deletes first, children before parents; then upserts, parents first. */
static int delta_order(const void *a, const void *b)
{
    const merged_t *x = a, *y = b;
    if (x->upsert != y->upsert) return x->upsert ? 1 : -1;
    if (x->rank != y->rank) return x->upsert ? x->rank - y->rank : y->rank - x->rank;
    return strcmp(x->id, y->id);
}

/* The last operation per (type, id) after `from`, in delta order. */
static int merged_changes(tg_db_t *db, const char *cp_id, int64_t from, int64_t to, merged_t **out,
                          size_t *n, char *err, size_t errlen)
{
    char f[24], t[24];
    snprintf(f, sizeof(f), "%lld", (long long)from);
    snprintf(t, sizeof(t), "%lld", (long long)to);
    const char *p[] = {cp_id, f, t};
    tg_db_err_t e;
    PGresult *res = tg_db_exec(db, &e,
                               "SELECT DISTINCT ON (entity_type, entity_id) entity_type,"
                               " entity_id::text, op FROM config_changes WHERE cp_id = $1 AND"
                               " version > $2::bigint AND version <= $3::bigint ORDER BY"
                               " entity_type, entity_id, version DESC, seq DESC",
                               3, p);
    if (!res) {
        snprintf(err, errlen, "%s", e.message);
        return -TG_EDB;
    }
    int rows = PQntuples(res);
    merged_t *m = tg_calloc(rows ? (size_t)rows : 1, sizeof(*m));
    size_t k = 0;
    for (int i = 0; i < rows; i++) {
        int rank = rank_of(PQgetvalue(res, i, 0));
        if (rank < 0) continue; /* a type this version does not sync */
        m[k].rank = rank;
        m[k].schema = tg_entities[rank];
        snprintf(m[k].id, sizeof(m[k].id), "%s", PQgetvalue(res, i, 1));
        m[k].upsert = strcmp(PQgetvalue(res, i, 2), "upsert") == 0;
        k++;
    }
    PQclear(res);
    qsort(m, k, sizeof(*m), delta_order);
    *out = m;
    *n = k;
    return 0;
}

/* Reads the documents of the upserts of one type (ids m[lo..hi)) into changes[lo..hi). */
static int fetch_upserts(tg_db_t *db, const char *cp_id, const merged_t *m, size_t lo, size_t hi,
                         change_t **changes, char *err, size_t errlen)
{
    const tg_schema_t *s = m[lo].schema;
    size_t cap = 2 + (hi - lo) * 37;
    char *ids = tg_malloc(cap), *w = ids;
    *w++ = '{';
    for (size_t i = lo; i < hi; i++)
        w += sprintf(w, "%s%s", i > lo ? "," : "", m[i].id);
    *w++ = '}';
    *w = '\0';
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT %s FROM %s WHERE cp_id = $1 AND id = ANY($2::uuid[])",
             tg_config_row_cols(s, ""), s->name);
    const char *p[] = {cp_id, ids};
    tg_db_err_t e;
    PGresult *res = tg_db_exec(db, &e, sql, 2, p);
    free(ids);
    if (!res) {
        snprintf(err, errlen, "%s", e.message);
        return -TG_EDB;
    }
    int rc = 0;
    for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
        const char *id = PQgetvalue(res, r, 0);
        for (size_t i = lo; i < hi; i++) {
            if (strcmp(m[i].id, id) != 0) continue;
            changes[i] = row_change(s, res, r, NULL, err, errlen);
            if (!changes[i]) rc = -TG_EINVAL;
            break;
        }
    }
    PQclear(res);
    /* an upsert whose row is gone was deleted later than `to`: impossible within one snapshot
     * read, so a missing row means the log and the tables disagree */
    for (size_t i = lo; i < hi && rc == 0; i++)
        if (!changes[i]) {
            snprintf(err, errlen, "%s %s: logged as upserted but not found", s->name, m[i].id);
            rc = -TG_EINVAL;
        }
    return rc;
}

static int delta_changes(tg_db_t *db, const char *cp_id, const merged_t *m, size_t n,
                         change_t **changes, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (!m[i].upsert) changes[i] = new_change(m[i].schema->name, m[i].id, false);
    for (size_t lo = 0; lo < n;) {
        if (!m[lo].upsert) {
            lo++;
            continue;
        }
        size_t hi = lo;
        while (hi < n && m[hi].upsert && m[hi].rank == m[lo].rank && hi - lo < FETCH_ROWS)
            hi++;
        int rc = fetch_upserts(db, cp_id, m, lo, hi, changes, err, errlen);
        if (rc) return rc;
        lo = hi;
    }
    return 0;
}

int tg_sync_build_delta(tg_db_t *db, const char *cp_id, int64_t from, uint64_t nonce,
                        size_t headroom, tg_sync_payload_t **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = begin_snapshot_read(db, err, errlen);
    if (rc) return rc;
    int64_t latest, oldest;
    char digest[65] = "";
    rc = tg_sync_read_versions(db, cp_id, &latest, &oldest, digest, err, errlen);
    if (rc == 0 && from == latest) rc = TG_SYNC_UP_TO_DATE;
    if (rc == 0 && (from > latest || from < 0 || oldest > from + 1)) rc = TG_SYNC_NEED_SNAPSHOT;
    merged_t *m = NULL;
    size_t n = 0;
    change_t **changes = NULL;
    if (rc == 0) rc = merged_changes(db, cp_id, from, latest, &m, &n, err, errlen);
    if (rc == 0) {
        changes = tg_calloc(n ? n : 1, sizeof(*changes));
        rc = delta_changes(db, cp_id, m, n, changes, err, errlen);
    }
    end_read(db);
    if (rc == 0) {
        Tollgate__Sync__V1__Delta d = TOLLGATE__SYNC__V1__DELTA__INIT;
        d.has_nonce = d.has_from_version = d.has_to_version = 1;
        d.nonce = nonce;
        d.from_version = from;
        d.to_version = latest;
        d.n_changes = n;
        d.changes = changes;
        d.config_digest = digest; /* the DP checks its own after applying (rule 5) */
        tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
        env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_DELTA;
        env.delta = &d;
        if (protobuf_c_message_get_packed_size(&env.base) > TG_SYNC_FRAME_MAX) {
            rc = TG_SYNC_NEED_SNAPSHOT; /* too big for one frame: snapshots are chunked */
        } else {
            *out = new_payload(false, from, latest, nonce);
            (*out)->entities = n;
            memcpy((*out)->digest, digest, sizeof(digest));
            add_frame(*out, &env, headroom);
        }
    }
    if (changes) free_changes(changes, n);
    free(m);
    return rc;
}

/* ---------------------------------------------------------------- snapshots */

/* Hands the frames built so far to the stream, which owns them from then on. */
static void emit(tg_sync_payload_t *p, tg_sync_stream_t *stream, bool last)
{
    if (!stream || !p->nframes) return;
    stream->emit(stream, p, p->frames, p->nframes, last);
    p->frames = NULL;
    p->nframes = 0;
}

typedef struct chunker {
    tg_sync_payload_t *p;
    tg_sync_stream_t *stream; /* NULL: the frames stay in p */
    size_t headroom;
    change_t **pending;
    size_t npending, cap, pending_bytes;
    uint32_t seq;
} chunker_t;

static void flush_chunk(chunker_t *ck)
{
    if (!ck->npending) return;
    Tollgate__Sync__V1__SnapshotChunk c = TOLLGATE__SYNC__V1__SNAPSHOT_CHUNK__INIT;
    c.has_nonce = c.has_seq = 1;
    c.nonce = ck->p->nonce;
    c.seq = ck->seq++;
    c.n_entities = ck->npending;
    c.entities = ck->pending;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_SNAPSHOT_CHUNK;
    env.snapshot_chunk = &c;
    add_frame(ck->p, &env, ck->headroom);
    emit(ck->p, ck->stream, false);
    for (size_t i = 0; i < ck->npending; i++)
        tollgate__sync__v1__change__free_unpacked(ck->pending[i], NULL);
    ck->npending = 0;
    ck->pending_bytes = 0;
}

static void chunk_add(chunker_t *ck, change_t *c)
{
    if (ck->npending == ck->cap) {
        ck->cap = ck->cap ? ck->cap * 2 : 256;
        ck->pending = tg_realloc(ck->pending, ck->cap * sizeof(*ck->pending));
    }
    ck->pending[ck->npending++] = c;
    ck->pending_bytes += protobuf_c_message_get_packed_size(&c->base) + 8;
    if (ck->pending_bytes >= TG_SYNC_CHUNK_TARGET) flush_chunk(ck);
}

/*
 * Snapshot pages are read with libpq's asynchronous calls so that PostgreSQL reads and sends
 * page N+1 (on its own core) while this thread encodes page N: the next page's key is known
 * as soon as a page arrives, before any of its rows is encoded. The transaction (REPEATABLE
 * READ, begin_snapshot_read) makes the pages one consistent read, as before.
 */
static int page_send(tg_db_t *db, const char *sql, const char *cp_id, const char *after, char *err,
                     size_t errlen)
{
    const char *p[] = {cp_id, after};
    if (db->conn && PQsendQueryParams(db->conn, sql, 2, NULL, p, NULL, NULL, 0) == 1) return 0;
    snprintf(err, errlen, "%s", db->conn ? PQerrorMessage(db->conn) : "not connected");
    err[strcspn(err, "\n")] = '\0';
    return -TG_EDB;
}

/* The result of the page sent last (NULL with err on failure); leaves the connection idle. */
static PGresult *page_wait(tg_db_t *db, char *err, size_t errlen)
{
    PGresult *res = NULL, *r;
    while ((r = PQgetResult(db->conn)) != NULL) { /* one result, then NULL */
        if (!res)
            res = r;
        else
            PQclear(r);
    }
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK) return res;
    snprintf(err, errlen, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn));
    err[strcspn(err, "\n")] = '\0'; /* libpq ends its messages with a newline */
    PQclear(res);
    return NULL;
}

/* Every entity of one type, in id order, FETCH_ROWS at a time. */
static int snapshot_type(tg_db_t *db, const char *cp_id, const tg_schema_t *s, chunker_t *ck,
                         tg_config_digest_t *digest, char *err, size_t errlen)
{
    char sql[384], after[40] = "00000000-0000-0000-0000-000000000000";
    /* ORDER BY the table's column, qualified: the select list has an `id::text` output column
     * also named id, and an unqualified ORDER BY id would sort by that text, which no index
     * serves, so every page would scan and sort the whole table (quadratic at 1M keys). */
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM %s WHERE cp_id = $1 AND id > $2::uuid ORDER BY %s.id LIMIT %d",
             tg_config_row_cols(s, ""), s->name, s->name, FETCH_ROWS);
    int rc = page_send(db, sql, cp_id, after, err, errlen);
    while (rc == 0) {
        PGresult *res = page_wait(db, err, errlen);
        if (!res) return -TG_EDB;
        int rows = PQntuples(res);
        bool more = rows == FETCH_ROWS;
        if (more) {
            snprintf(after, sizeof(after), "%s", PQgetvalue(res, rows - 1, 0));
            rc = page_send(db, sql, cp_id, after, err, errlen);
        }
        for (int r = 0; rc == 0 && r < rows; r++) {
            change_t *c = row_change(s, res, r, digest, err, errlen);
            if (!c) {
                rc = -TG_EINVAL;
                break;
            }
            if (!ck) { /* digest only (tg_sync_digest_repair) */
                tollgate__sync__v1__change__free_unpacked(c, NULL);
                continue;
            }
            chunk_add(ck, c);
            ck->p->entities++;
        }
        PQclear(res);
        if (rc != 0 && more) { /* a page is on its way: take it so the connection is usable */
            char ignored[8];
            PQclear(page_wait(db, ignored, sizeof(ignored)));
        }
        if (!more) break;
    }
    return rc;
}

/* SnapshotBegin goes out before the entities are read, so it carries no entity count (the
 * field is optional; the DP then checks only the chunk count and the digest). */
static void add_snapshot_begin(tg_sync_payload_t *p, size_t headroom)
{
    Tollgate__Sync__V1__SnapshotBegin b = TOLLGATE__SYNC__V1__SNAPSHOT_BEGIN__INIT;
    b.has_nonce = b.has_version = 1;
    b.nonce = p->nonce;
    b.version = p->to;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_SNAPSHOT_BEGIN;
    env.snapshot_begin = &b;
    add_frame(p, &env, headroom);
}

static void add_snapshot_end(tg_sync_payload_t *p, uint32_t chunks, size_t headroom)
{
    Tollgate__Sync__V1__SnapshotEnd end = TOLLGATE__SYNC__V1__SNAPSHOT_END__INIT;
    end.has_nonce = end.has_version = end.has_chunks = 1;
    end.nonce = p->nonce;
    end.version = p->to;
    end.chunks = chunks;
    end.config_digest = p->digest;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_SNAPSHOT_END;
    env.snapshot_end = &end;
    add_frame(p, &env, headroom);
}

int tg_sync_build_snapshot(tg_db_t *db, const char *cp_id, uint64_t nonce, size_t headroom,
                           bool verify, tg_sync_stream_t *stream, tg_sync_payload_t **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    int rc = begin_snapshot_read(db, err, errlen);
    if (rc) return rc;
    int64_t latest, oldest;
    char kept[65] = "";
    rc = tg_sync_read_versions(db, cp_id, &latest, &oldest, kept, err, errlen);
    tg_sync_payload_t *p = new_payload(true, -1, latest, nonce);
    if (rc == 0) {
        add_snapshot_begin(p, headroom);
        emit(p, stream, false); /* the DP can start while the rows are still being read */
    }
    chunker_t ck = {.p = p, .stream = stream, .headroom = headroom};
    tg_config_digest_t digest = {{0}};
    /* the digest the writes kept is read in this same transaction, so it is the digest of
     * exactly these rows unless they were changed behind the change log's back: announcing
     * it spares hashing every row (a third of the build), and the DP, which hashes what it
     * receives before it commits, refuses the snapshot if it was wrong (the hub then asks
     * for a verified one) */
    bool recompute = verify || !kept[0];
    for (int i = 0; rc == 0 && tg_entities[i]; i++)
        rc = snapshot_type(db, cp_id, tg_entities[i], &ck, recompute ? &digest : NULL, err,
                           errlen);
    end_read(db);
    if (rc == 0) flush_chunk(&ck);
    for (size_t i = 0; i < ck.npending; i++)
        tollgate__sync__v1__change__free_unpacked(ck.pending[i], NULL);
    free(ck.pending);
    if (rc != 0) {
        tg_sync_payload_free(p);
        return rc;
    }
    if (recompute)
        tg_config_digest_hex(&digest, p->digest);
    else
        memcpy(p->digest, kept, sizeof(p->digest));
    p->digest_kept = !recompute;
    /* the digest the writes kept (rule 5) must be the one recomputed here; if not, the
     * recomputed one is the truth the DP will hold, and the difference is a bug to report */
    bool drift = recompute && kept[0] && strcmp(kept, p->digest) != 0;
    if (drift) {
        /* rows changed behind the change log's back (or a bug): forget the kept digest so the
         * repair (tg_sync_digest_repair) recomputes it under the row lock; only if no write
         * came since, whose contribution would then be lost twice */
        TG_LOGE("sync", "control plane %s, version %lld: config digest kept by the writes %s"
                " differs from the one recomputed for the snapshot %s; recomputing it", cp_id,
                (long long)latest, kept, p->digest);
        char v[24];
        snprintf(v, sizeof(v), "%lld", (long long)latest);
        const char *u[] = {cp_id, v};
        tg_db_err_t e;
        tg_db_run(db, &e,
                  "UPDATE control_planes SET config_digest = NULL WHERE id = $1"
                  " AND config_version = $2::bigint",
                  2, u);
    }
    p->digest_drift = drift;
    add_snapshot_end(p, ck.seq, headroom);
    emit(p, stream, true);
    *out = p;
    return 0;
}

/* ---------------------------------------------------------------- digest repair */

/* One control plane: its digest computed from every entity under the control-plane row lock
 * (READ COMMITTED: writers wait at their change-log statement, which needs that lock, so no
 * write commits between the pages and every write after it adds to the value stored here). */
static int repair_one(tg_db_t *db, const char *cp_id, bool *repaired, char *err, size_t errlen)
{
    tg_db_err_t e;
    const char *p[] = {cp_id};
    if (tg_db_run(db, &e, "BEGIN", 0, NULL) != 0) {
        snprintf(err, errlen, "%s", e.message);
        return -TG_EDB;
    }
    PGresult *res = tg_db_exec(db, &e,
                               "SELECT config_digest IS NULL FROM control_planes WHERE id = $1"
                               " FOR UPDATE",
                               1, p);
    int rc = res ? 0 : -TG_EDB;
    if (!res) snprintf(err, errlen, "%s", e.message);
    bool missing = res && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    if (res) PQclear(res);
    tg_config_digest_t digest = {{0}};
    for (int i = 0; rc == 0 && missing && tg_entities[i]; i++)
        rc = snapshot_type(db, cp_id, tg_entities[i], NULL, &digest, err, errlen);
    if (rc == 0 && missing) {
        char dec[TG_CONFIG_DIGEST_DEC_LEN + 1];
        tg_config_digest_decimal(&digest, dec);
        const char *u[] = {cp_id, dec};
        /* the latest version's row too, so a NOTIFY-less reader of it agrees */
        if (tg_db_run(db, &e,
                      "WITH cp AS (UPDATE control_planes SET config_digest = $2::numeric"
                      " WHERE id = $1 RETURNING config_version)"
                      " UPDATE config_versions v SET digest = $2::numeric FROM cp"
                      " WHERE v.cp_id = $1 AND v.version = cp.config_version",
                      2, u) != 0) {
            snprintf(err, errlen, "%s", e.message);
            rc = -TG_EDB;
        }
    }
    tg_db_err_t ignored;
    tg_db_run(db, rc ? &ignored : &e, rc ? "ROLLBACK" : "COMMIT", 0, NULL);
    if (rc == 0 && missing) *repaired = true;
    return rc;
}

int tg_sync_digest_repair(tg_db_t *db, int *repaired, char *err, size_t errlen)
{
    *repaired = 0;
    tg_db_err_t e;
    PGresult *res = tg_db_exec(db, &e,
                               "SELECT id::text FROM control_planes WHERE config_digest IS NULL",
                               0, NULL);
    if (!res) {
        snprintf(err, errlen, "%s", e.message);
        return tg_db_err_is_down(&e) ? -TG_EDBDOWN : -TG_EDB;
    }
    int rc = 0;
    for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
        bool done = false;
        rc = repair_one(db, PQgetvalue(res, i, 0), &done, err, errlen);
        *repaired += done;
    }
    PQclear(res);
    return rc;
}
