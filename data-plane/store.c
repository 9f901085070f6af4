/*
 * store.c — see store.h.
 *
 * Map growth against readers: mdb_env_set_mapsize remaps the file, so it may only run while
 * no transaction is open anywhere in the process (LMDB does not check). Readers announce
 * themselves in one of READER_SLOTS counters, each on its own cache line so workers do not
 * contend (a "big reader" lock), and back off while `resizing` is set; the grower sets
 * `resizing`, waits for every counter to drain, remaps and clears it. Both sides use
 * sequentially consistent atomics, so either the reader sees the flag or the grower sees
 * the count. Growth is rare (the map doubles) and a remap takes microseconds.
 *
 * Index entries are removed only when they still point at the entity being changed: inside
 * one delta a key can move from one entity to another (two credentials swapping keys, a
 * username freed and taken), and the newer owner's entry must survive the older one's update.
 */
#include "store.h"
#include "alloc.h"
#include "config_digest.h"
#include "crypto.h"
#include "error.h"
#include "log.h"
#include "schema.h"

#include <lmdb.h>

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MOD "store"
#define STORE_FORMAT 1
#define MAX_TYPES 16
#define MAX_TYPE_INDEXES 4
#define MAX_DBS 32
/* Each reader holds an LMDB lock-table slot for its lifetime: one per worker plus a few. */
#define MAX_READERS 1024
#define READER_SLOTS 64
#define GROW_RETRIES 3
#define ID_MAX 255
/* Longer index strings are keyed by 0xff || SHA-256 (never valid UTF-8, so no clash). */
#define INDEX_STR_MAX 128
#define SNAPSHOT_HEADROOM ((size_t)16 << 20)

struct index_def {
    const char *db_name;
    const char *type;
    const char *field;
    bool digest32; /* 64 hex digits, stored as 32 raw bytes */
    bool required;
};

static const struct index_def index_defs[] = {
    {"idx:keyauth_credentials.key_digest", "keyauth_credentials", "key_digest", true, true},
    {"idx:consumers.username", "consumers", "username", false, false},
    {"idx:consumers.custom_id", "consumers", "custom_id", false, false},
};
#define N_INDEXES (sizeof index_defs / sizeof index_defs[0])
enum { IDX_KEY_DIGEST, IDX_USERNAME, IDX_CUSTOM_ID };

struct type_db {
    const tg_schema_t *schema;
    MDB_dbi dbi;
    unsigned idx[MAX_TYPE_INDEXES];
    unsigned n_idx;
};

struct reader_slot {
    _Alignas(64) atomic_ulong n;
};

struct tg_store {
    struct reader_slot slots[READER_SLOTS];
    atomic_bool resizing;
    atomic_uint next_slot;
    MDB_env *env;
    size_t map_size;
    struct type_db types[MAX_TYPES];
    size_t n_types;
    MDB_dbi index_dbi[N_INDEXES];
    MDB_dbi meta;
    tg_store_snapshot_t *snapshot;
};

/* An index key as stored. */
struct ikey {
    bool present;
    size_t len;
    uint8_t buf[INDEX_STR_MAX];
};

/* A write transaction in progress and the digest it maintains. */
struct wtx {
    tg_store_t *s;
    MDB_txn *txn;
    tg_config_digest_t digest;
};

struct tg_store_snapshot {
    struct wtx w;
    int failed;
};

/* ------------------------------------------------------------------ errors */

/* Maps an LMDB code to ours, logging the ones that mean something is broken. */
static int lmdb_err(int rc, const char *what)
{
    if (rc == MDB_NOTFOUND) return -TG_ENOTFOUND;
    if (rc == MDB_MAP_FULL) return -TG_ETOOBIG;
    TG_LOGE(MOD, "%s: %s", what, mdb_strerror(rc));
    return rc == MDB_BAD_VALSIZE ? -TG_EINVAL : -TG_EIO;
}

static void err_reset(tg_store_error_t *err)
{
    if (!err) return;
    err->index = SIZE_MAX;
    err->message[0] = '\0';
}

__attribute__((format(printf, 4, 5))) static int fail(tg_store_error_t *err, size_t index, int code,
                                                      const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->index = index;
    }
    return code;
}

/* Gives every failure a message, so a NACK never goes out empty. */
static int fail_default(tg_store_error_t *err, int rc)
{
    if (rc && err && !err->message[0])
        snprintf(err->message, sizeof err->message, "%s",
                 rc == -TG_ETOOBIG ? "config store is full" : tg_strerror(rc));
    return rc;
}

/* ------------------------------------------------------------------ readers vs. growth */

static void readers_enter(tg_store_t *s, unsigned slot)
{
    for (;;) {
        atomic_fetch_add(&s->slots[slot].n, 1);
        if (!atomic_load(&s->resizing)) return;
        atomic_fetch_sub(&s->slots[slot].n, 1);
        while (atomic_load(&s->resizing))
            sched_yield();
    }
}

static void readers_exit(tg_store_t *s, unsigned slot)
{
    atomic_fetch_sub(&s->slots[slot].n, 1);
}

/* Doubles the map (at least to min_size) once every open read has ended. Writer thread only,
 * with no write transaction open. */
static int grow(tg_store_t *s, size_t min_size)
{
    size_t size = s->map_size * 2;
    while (size < min_size)
        size *= 2;
    atomic_store(&s->resizing, true);
    for (unsigned i = 0; i < READER_SLOTS; i++)
        while (atomic_load(&s->slots[i].n) != 0)
            sched_yield();
    int rc = mdb_env_set_mapsize(s->env, size);
    atomic_store(&s->resizing, false);
    if (rc) return lmdb_err(rc, "mdb_env_set_mapsize");
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;
    TG_LOGN(MOD, "config store map grown to %zu KiB", s->map_size >> 10);
    return 0;
}

/* ------------------------------------------------------------------ keys and meta */

static struct type_db *type_find(tg_store_t *s, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < s->n_types; i++)
        if (strcmp(s->types[i].schema->name, name) == 0) return &s->types[i];
    return NULL;
}

static void ikey_string(const char *str, size_t n, struct ikey *k)
{
    k->present = n > 0; /* LMDB has no empty keys, and nobody looks up an empty name */
    if (n <= INDEX_STR_MAX) {
        memcpy(k->buf, str, n);
        k->len = n;
        return;
    }
    k->buf[0] = 0xff;
    tg_sha256(str, n, k->buf + 1);
    k->len = 1 + TG_SHA256_LEN;
}

/* Reads an index field of an entity into k; -TG_EINVAL when it is malformed. */
static int ikey_from_entity(const struct index_def *d, const json_t *e, struct ikey *k)
{
    const json_t *v = json_object_get(e, d->field);
    k->present = false;
    if (!v || json_is_null(v)) return d->required ? -TG_EINVAL : 0;
    if (!json_is_string(v)) return -TG_EINVAL;
    const char *str = json_string_value(v);
    size_t n = json_string_length(v);
    if (!d->digest32) {
        ikey_string(str, n, k);
        return 0;
    }
    tg_config_digest_t raw;
    if (n != TG_CONFIG_DIGEST_HEX_LEN || tg_config_digest_from_hex(str, &raw) != 0)
        return -TG_EINVAL;
    memcpy(k->buf, raw.sum, TG_SHA256_LEN);
    k->len = TG_SHA256_LEN;
    k->present = true;
    return 0;
}

static bool ikey_eq(const struct ikey *a, const struct ikey *b)
{
    return a->present == b->present && a->len == b->len && memcmp(a->buf, b->buf, a->len) == 0;
}

static int meta_get(MDB_txn *txn, const tg_store_t *s, const char *key, MDB_val *v)
{
    MDB_val k = {strlen(key), (void *)key};
    int rc = mdb_get(txn, s->meta, &k, v);
    return rc ? lmdb_err(rc, "mdb_get meta") : 0;
}

static int meta_put(MDB_txn *txn, const tg_store_t *s, const char *key, const void *data,
                    size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)data};
    int rc = mdb_put(txn, s->meta, &k, &v, 0);
    return rc ? lmdb_err(rc, "mdb_put meta") : 0;
}

/* The applied version (big-endian int64 in meta); 0 and !loaded on a fresh store. */
static int meta_version(MDB_txn *txn, const tg_store_t *s, int64_t *version, bool *loaded)
{
    MDB_val v;
    *version = 0;
    *loaded = false;
    int rc = meta_get(txn, s, "version", &v);
    if (rc == -TG_ENOTFOUND) return 0;
    if (rc) return rc;
    if (v.mv_size != 8) {
        TG_LOGE(MOD, "meta version has %zu bytes, want 8", v.mv_size);
        return -TG_EIO;
    }
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | ((const uint8_t *)v.mv_data)[i];
    *version = (int64_t)u;
    *loaded = true;
    return 0;
}

static int meta_digest(MDB_txn *txn, const tg_store_t *s, tg_config_digest_t *d)
{
    MDB_val v;
    memset(d, 0, sizeof *d);
    int rc = meta_get(txn, s, "digest", &v);
    if (rc == -TG_ENOTFOUND) return 0;
    if (rc) return rc;
    if (v.mv_size != sizeof d->sum) {
        TG_LOGE(MOD, "meta digest has %zu bytes, want %zu", v.mv_size, sizeof d->sum);
        return -TG_EIO;
    }
    memcpy(d->sum, v.mv_data, sizeof d->sum);
    return 0;
}

/* ------------------------------------------------------------------ write transactions */

static int wtx_begin(tg_store_t *s, struct wtx *w)
{
    w->s = s;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    if (rc) {
        w->txn = NULL;
        return lmdb_err(rc, "mdb_txn_begin");
    }
    rc = meta_digest(w->txn, s, &w->digest);
    if (rc) {
        mdb_txn_abort(w->txn);
        w->txn = NULL;
    }
    return rc;
}

static void wtx_abort(struct wtx *w)
{
    if (w->txn) mdb_txn_abort(w->txn);
    w->txn = NULL;
}

/* Records version and digest and commits; the transaction is gone either way. */
static int wtx_commit(struct wtx *w, int64_t version)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)version >> (56 - 8 * i));
    int rc = meta_put(w->txn, w->s, "version", be, sizeof be);
    if (rc == 0) rc = meta_put(w->txn, w->s, "digest", w->digest.sum, sizeof w->digest.sum);
    if (rc) {
        wtx_abort(w);
        return rc;
    }
    rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    return rc ? lmdb_err(rc, "mdb_txn_commit") : 0;
}

/* ------------------------------------------------------------------ applying one change */

/* The stored version of (t, id): takes its hash out of the digest, collects its index keys. */
static int take_old(struct wtx *w, const struct type_db *t, tg_str_t id, struct ikey *keys,
                    bool *found)
{
    MDB_val k = {id.len, (void *)id.p}, v;
    *found = false;
    for (unsigned j = 0; j < t->n_idx; j++)
        keys[j].present = false;
    int rc = mdb_get(w->txn, t->dbi, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return lmdb_err(rc, "mdb_get");
    *found = true;
    uint8_t h[TG_CONFIG_DIGEST_LEN];
    tg_config_digest_entity_raw(tg_str_from(t->schema->name), id, (tg_str_t){v.mv_data, v.mv_size},
                                h);
    tg_config_digest_sub(&w->digest, h);
    if (t->n_idx == 0) return 0;
    /* Parsed before any write: a put may move the page v points into. */
    json_t *old = json_loadb(v.mv_data, v.mv_size, 0, NULL);
    if (!old) {
        TG_LOGE(MOD, "stored %s %.*s is not JSON", t->schema->name, (int)id.len, id.p);
        return -TG_EIO;
    }
    for (unsigned j = 0; j < t->n_idx; j++)
        (void)ikey_from_entity(&index_defs[t->idx[j]], old, &keys[j]); /* checked when stored */
    json_decref(old);
    return 0;
}

/* Deletes an index entry unless another entity has taken the key since (see file comment). */
static int index_remove(struct wtx *w, unsigned idx, const struct ikey *key, tg_str_t id)
{
    MDB_val k = {key->len, (void *)key->buf}, v;
    int rc = mdb_get(w->txn, w->s->index_dbi[idx], &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return lmdb_err(rc, "mdb_get index");
    if (v.mv_size != id.len || memcmp(v.mv_data, id.p, id.len) != 0) return 0;
    rc = mdb_del(w->txn, w->s->index_dbi[idx], &k, NULL);
    return rc ? lmdb_err(rc, "mdb_del index") : 0;
}

static int index_update(struct wtx *w, unsigned idx, const struct ikey *old, const struct ikey *new,
                        tg_str_t id)
{
    int rc;
    if (old->present && !ikey_eq(old, new) && (rc = index_remove(w, idx, old, id)) != 0) return rc;
    if (!new->present) return 0;
    MDB_val k = {new->len, (void *)new->buf}, v = {id.len, (void *)id.p};
    rc = mdb_put(w->txn, w->s->index_dbi[idx], &k, &v, 0);
    return rc ? lmdb_err(rc, "mdb_put index") : 0;
}

static int put_entity(struct wtx *w, const struct type_db *t, tg_str_t id, const json_t *e,
                      const struct ikey *old_keys, const struct ikey *new_keys)
{
    size_t len = 0;
    char *canon = tg_config_digest_canonical(e, &len);
    MDB_val k = {id.len, (void *)id.p}, v = {len, canon};
    int rc = mdb_put(w->txn, t->dbi, &k, &v, 0);
    if (rc == 0) {
        uint8_t h[TG_CONFIG_DIGEST_LEN];
        tg_config_digest_entity_raw(tg_str_from(t->schema->name), id, (tg_str_t){canon, len}, h);
        tg_config_digest_add(&w->digest, h);
    }
    free(canon);
    if (rc) return lmdb_err(rc, "mdb_put");
    for (unsigned j = 0; j < t->n_idx; j++)
        if ((rc = index_update(w, t->idx[j], &old_keys[j], &new_keys[j], id)) != 0) return rc;
    return 0;
}

static int delete_entity(struct wtx *w, const struct type_db *t, tg_str_t id,
                         const struct ikey *old_keys)
{
    MDB_val k = {id.len, (void *)id.p};
    int rc = mdb_del(w->txn, t->dbi, &k, NULL);
    if (rc) return lmdb_err(rc, "mdb_del");
    for (unsigned j = 0; j < t->n_idx; j++)
        if (old_keys[j].present && (rc = index_remove(w, t->idx[j], &old_keys[j], id)) != 0)
            return rc;
    return 0;
}

/* Refuses plaintext secrets and malformed index fields; fills the new index keys. */
static int check_entity(const struct type_db *t, const json_t *e, struct ikey *keys, size_t i,
                        tg_store_error_t *err)
{
    const char *type = t->schema->name;
    for (const tg_field_t *f = t->schema->fields; f->name; f++) {
        const json_t *v = json_object_get(e, f->name);
        if ((f->flags & TG_F_SECRET) && v && !json_is_null(v))
            return fail(err, i, -TG_EINVAL, "%s: plaintext '%s' must not reach the data plane",
                        type, f->name);
    }
    for (unsigned j = 0; j < t->n_idx; j++) {
        const struct index_def *d = &index_defs[t->idx[j]];
        if (ikey_from_entity(d, e, &keys[j]) != 0)
            return fail(err, i, -TG_EINVAL, "%s: invalid '%s'", type, d->field);
    }
    return 0;
}

static int check_change(const struct type_db *t, const tg_store_change_t *c, size_t i,
                        tg_store_error_t *err, tg_str_t *id, struct ikey *keys)
{
    const char *type = t->schema->name, *cid = c->id;
    if (c->op == TG_STORE_UPSERT) {
        if (!json_is_object(c->entity))
            return fail(err, i, -TG_EINVAL, "%s upsert without an entity object", type);
        const char *eid = json_string_value(json_object_get(c->entity, "id"));
        if (!eid) return fail(err, i, -TG_EINVAL, "%s entity without a string id", type);
        if (!cid) cid = eid;
        if (strcmp(cid, eid) != 0)
            return fail(err, i, -TG_EINVAL, "%s %s carries entity id %s", type, cid, eid);
        int rc = check_entity(t, c->entity, keys, i, err);
        if (rc) return rc;
    } else if (c->op != TG_STORE_DELETE) {
        return fail(err, i, -TG_EINVAL, "%s: unknown operation %d", type, (int)c->op);
    }
    if (!cid || !*cid || strlen(cid) > ID_MAX)
        return fail(err, i, -TG_EINVAL, "%s: missing or oversized id", type);
    *id = tg_str_from(cid);
    return 0;
}

static int apply_change(struct wtx *w, const tg_store_change_t *c, size_t i, tg_store_error_t *err)
{
    const struct type_db *t = type_find(w->s, c->type);
    if (!t) return fail(err, i, -TG_EINVAL, "unknown entity type '%s'", c->type ? c->type : "");
    tg_str_t id = TG_STR_NULL;
    struct ikey new_keys[MAX_TYPE_INDEXES], old_keys[MAX_TYPE_INDEXES];
    bool found = false;
    int rc = check_change(t, c, i, err, &id, new_keys);
    if (rc) return rc;
    rc = take_old(w, t, id, old_keys, &found);
    if (rc == 0 && c->op == TG_STORE_DELETE)
        rc = found ? delete_entity(w, t, id, old_keys) : 0;
    else if (rc == 0)
        rc = put_entity(w, t, id, c->entity, old_keys, new_keys);
    /* Storage failures name the change too, for the NACK. */
    if (rc && err && err->index == SIZE_MAX) err->index = i;
    return rc;
}

/* ------------------------------------------------------------------ deltas */

static int apply_once(tg_store_t *s, int64_t from, int64_t to, const tg_store_change_t *changes,
                      size_t n, tg_store_error_t *err)
{
    struct wtx w;
    int rc = wtx_begin(s, &w);
    if (rc) return rc;
    int64_t have;
    bool loaded;
    rc = meta_version(w.txn, s, &have, &loaded);
    if (rc == 0 && have != from)
        rc = fail(err, SIZE_MAX, -TG_ECONFLICT,
                  "delta from version %" PRId64 " but version %" PRId64 " is applied", from, have);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = apply_change(&w, &changes[i], i, err);
    if (rc == 0) return wtx_commit(&w, to);
    wtx_abort(&w);
    return rc;
}

int tg_store_apply(tg_store_t *s, int64_t from_version, int64_t to_version,
                   const tg_store_change_t *changes, size_t n, tg_store_error_t *err)
{
    err_reset(err);
    if (!s || (n > 0 && !changes)) return -TG_EINVAL;
    if (to_version <= from_version)
        return fail(err, SIZE_MAX, -TG_EINVAL,
                    "delta to version %" PRId64 " does not follow version %" PRId64, to_version,
                    from_version);
    if (s->snapshot) return fail(err, SIZE_MAX, -TG_EINVAL, "a snapshot is being loaded");
    int rc;
    for (int tries = 0;; tries++) {
        rc = apply_once(s, from_version, to_version, changes, n, err);
        if (rc != -TG_ETOOBIG || tries == GROW_RETRIES || grow(s, 0) != 0) break;
        err_reset(err);
    }
    return fail_default(err, rc);
}

/* ------------------------------------------------------------------ snapshots */

/* A snapshot rewrites everything while the old pages stay referenced until it commits, so it
 * needs about twice the used size: growing up front beats failing halfway through a stream. */
static int reserve_for_snapshot(tg_store_t *s)
{
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    size_t need = 2 * (info.me_last_pgno + 1) * (size_t)st.ms_psize + SNAPSHOT_HEADROOM;
    return s->map_size >= need ? 0 : grow(s, need);
}

static int clear_all(struct wtx *w)
{
    tg_store_t *s = w->s;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->n_types; i++)
        rc = mdb_drop(w->txn, s->types[i].dbi, 0);
    for (size_t i = 0; rc == 0 && i < N_INDEXES; i++)
        rc = mdb_drop(w->txn, s->index_dbi[i], 0);
    memset(&w->digest, 0, sizeof w->digest);
    return rc ? lmdb_err(rc, "mdb_drop") : 0;
}

int tg_store_snapshot_begin(tg_store_t *s, tg_store_snapshot_t **out)
{
    if (!s || !out || s->snapshot) return -TG_EINVAL;
    int rc = reserve_for_snapshot(s);
    if (rc) return rc;
    tg_store_snapshot_t *snap = tg_calloc(1, sizeof *snap);
    rc = wtx_begin(s, &snap->w);
    if (rc == 0) rc = clear_all(&snap->w);
    if (rc) {
        wtx_abort(&snap->w);
        free(snap);
        return rc;
    }
    s->snapshot = snap;
    *out = snap;
    return 0;
}

/* Kills the snapshot; a full map is grown so that the caller's next attempt fits. */
static int snapshot_fail(tg_store_snapshot_t *snap, int rc)
{
    wtx_abort(&snap->w);
    if (rc == -TG_ETOOBIG && grow(snap->w.s, 0) == 0) rc = -TG_EAGAIN;
    snap->failed = rc;
    return rc;
}

int tg_store_snapshot_put(tg_store_snapshot_t *snap, const tg_store_change_t *entities, size_t n,
                          tg_store_error_t *err)
{
    err_reset(err);
    if (!snap || (n > 0 && !entities)) return -TG_EINVAL;
    if (snap->failed) return fail_default(err, snap->failed);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        tg_store_change_t c = entities[i];
        c.op = TG_STORE_UPSERT;
        rc = apply_change(&snap->w, &c, i, err);
    }
    if (rc) rc = snapshot_fail(snap, rc);
    return fail_default(err, rc);
}

static int check_expected(const struct wtx *w, const char *expected, tg_store_error_t *err)
{
    tg_config_digest_t want;
    if (tg_config_digest_from_hex(expected, &want) != 0)
        return fail(err, SIZE_MAX, -TG_EINVAL, "snapshot digest is not 64 hex digits");
    if (memcmp(want.sum, w->digest.sum, sizeof want.sum) == 0) return 0;
    char got[TG_CONFIG_DIGEST_HEX_LEN + 1];
    tg_config_digest_hex(&w->digest, got);
    return fail(err, SIZE_MAX, -TG_ECONFLICT, "snapshot digest %s but its entities hash to %s",
                expected, got);
}

int tg_store_snapshot_commit(tg_store_snapshot_t *snap, int64_t version,
                             const char *expected_digest, tg_store_error_t *err)
{
    err_reset(err);
    if (!snap) return -TG_EINVAL;
    int rc = snap->failed;
    if (rc == 0 && expected_digest) rc = check_expected(&snap->w, expected_digest, err);
    if (rc == 0) {
        rc = wtx_commit(&snap->w, version);
        if (rc == -TG_ETOOBIG && grow(snap->w.s, 0) == 0) rc = -TG_EAGAIN;
    }
    tg_store_snapshot_abort(snap);
    return fail_default(err, rc);
}

void tg_store_snapshot_abort(tg_store_snapshot_t *snap)
{
    if (!snap) return;
    wtx_abort(&snap->w);
    snap->w.s->snapshot = NULL;
    free(snap);
}

int tg_store_replace_all(tg_store_t *s, int64_t version, const tg_store_change_t *entities,
                         size_t n, tg_store_error_t *err)
{
    int rc;
    for (int tries = 0;; tries++) {
        tg_store_snapshot_t *snap;
        err_reset(err);
        rc = tg_store_snapshot_begin(s, &snap);
        if (rc) break;
        rc = tg_store_snapshot_put(snap, entities, n, err);
        if (rc == 0)
            rc = tg_store_snapshot_commit(snap, version, NULL, err);
        else
            tg_store_snapshot_abort(snap);
        if (rc != -TG_EAGAIN || tries == GROW_RETRIES) break;
    }
    if (rc == -TG_EAGAIN) rc = -TG_ETOOBIG;
    return fail_default(err, rc);
}

int tg_store_set_cp_id(tg_store_t *s, const char *cp_id)
{
    if (!s || !cp_id || strlen(cp_id) >= sizeof((tg_store_info_t *)0)->cp_id || s->snapshot)
        return -TG_EINVAL;
    int rc;
    for (int tries = 0;; tries++) {
        MDB_txn *txn;
        if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) return lmdb_err(rc, "mdb_txn_begin");
        rc = meta_put(txn, s, "cp_id", cp_id, strlen(cp_id));
        if (rc) {
            mdb_txn_abort(txn);
        } else if ((rc = mdb_txn_commit(txn)) != 0) {
            rc = lmdb_err(rc, "mdb_txn_commit");
        }
        if (rc != -TG_ETOOBIG || tries == GROW_RETRIES || grow(s, 0) != 0) break;
    }
    return rc;
}

/* ------------------------------------------------------------------ open / close */

static int env_open(tg_store_t *s, const char *dir, size_t map_size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    map_size = map_size ? map_size : TG_STORE_DEFAULT_MAP_SIZE;
    map_size = (map_size + page - 1) / page * page;
    int rc = mdb_env_create(&s->env);
    if (rc) {
        s->env = NULL;
        return lmdb_err(rc, "mdb_env_create");
    }
    mdb_env_set_maxdbs(s->env, MAX_DBS);
    mdb_env_set_maxreaders(s->env, MAX_READERS);
    mdb_env_set_mapsize(s->env, map_size);
    /* MDB_NOTLS: a read transaction belongs to its tg_store_reader_t, not to a thread. */
    rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600);
    if (rc) {
        TG_LOGE(MOD, "cannot open the config store in %s: %s", dir, mdb_strerror(rc));
        return rc == MDB_VERSION_MISMATCH || rc == MDB_INVALID ? -TG_EUNSUPPORTED : -TG_EIO;
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead); /* slots left by a crashed process */
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;
    return 0;
}

static int check_format(MDB_txn *txn, tg_store_t *s)
{
    MDB_val v;
    uint8_t want[4] = {0, 0, 0, STORE_FORMAT};
    int rc = meta_get(txn, s, "format", &v);
    if (rc == -TG_ENOTFOUND) return meta_put(txn, s, "format", want, sizeof want);
    if (rc) return rc;
    if (v.mv_size != sizeof want || memcmp(v.mv_data, want, sizeof want) != 0) {
        TG_LOGE(MOD, "config store has an unknown format; remove it to resync from the CP");
        return -TG_EUNSUPPORTED;
    }
    return 0;
}

static int attach_types(MDB_txn *txn, tg_store_t *s)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && tg_entities[i]; i++) {
        if (i == MAX_TYPES) tg_fatal("store: more than %d entity types", MAX_TYPES);
        s->types[i].schema = tg_entities[i];
        rc = mdb_dbi_open(txn, tg_entities[i]->name, MDB_CREATE, &s->types[i].dbi);
        s->n_types = i + 1;
    }
    for (unsigned j = 0; rc == 0 && j < N_INDEXES; j++) {
        struct type_db *t = type_find(s, index_defs[j].type);
        if (!t || t->n_idx == MAX_TYPE_INDEXES)
            tg_fatal("store: bad index %s", index_defs[j].db_name);
        t->idx[t->n_idx++] = j;
        rc = mdb_dbi_open(txn, index_defs[j].db_name, MDB_CREATE, &s->index_dbi[j]);
    }
    if (rc == 0) rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta);
    return rc ? lmdb_err(rc, "mdb_dbi_open") : 0;
}

static int open_dbs(tg_store_t *s)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return lmdb_err(rc, "mdb_txn_begin");
    rc = attach_types(txn, s);
    if (rc == 0) rc = check_format(txn, s);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    return rc ? lmdb_err(rc, "mdb_txn_commit") : 0;
}

int tg_store_open(const char *dir, size_t map_size, tg_store_t **out)
{
    if (!dir || !out) return -TG_EINVAL;
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        TG_LOGE(MOD, "cannot create %s: %s", dir, strerror(errno));
        return -TG_ESYS;
    }
    /* Aligned so each reader slot really has a cache line to itself. */
    tg_store_t *s = aligned_alloc(_Alignof(tg_store_t), sizeof *s);
    if (!s) tg_fatal("store: out of memory");
    memset(s, 0, sizeof *s);
    int rc = env_open(s, dir, map_size);
    if (rc == 0) rc = open_dbs(s);
    if (rc) {
        tg_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void tg_store_close(tg_store_t *s)
{
    if (!s) return;
    tg_store_snapshot_abort(s->snapshot);
    if (s->env) mdb_env_close(s->env);
    free(s);
}

/* ------------------------------------------------------------------ reads */

int tg_store_reader_init(tg_store_t *s, tg_store_reader_t *r)
{
    if (!s || !r) return -TG_EINVAL;
    memset(r, 0, sizeof *r);
    r->store = s;
    r->slot = atomic_fetch_add(&s->next_slot, 1) % READER_SLOTS;
    /* Beginning reads the meta pages in the map, so it too must not race a remap. */
    readers_enter(s, r->slot);
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0) mdb_txn_reset(txn);
    readers_exit(s, r->slot);
    if (rc) return lmdb_err(rc, "mdb_txn_begin (read)");
    r->txn = txn;
    return 0;
}

void tg_store_reader_free(tg_store_reader_t *r)
{
    if (!r || !r->txn) return;
    tg_store_read_end(r);
    mdb_txn_abort(r->txn);
    r->txn = NULL;
}

int tg_store_read_begin(tg_store_reader_t *r)
{
    if (!r || !r->txn || r->active) return -TG_EINVAL;
    readers_enter(r->store, r->slot);
    int rc = mdb_txn_renew(r->txn);
    if (rc) {
        readers_exit(r->store, r->slot);
        return lmdb_err(rc, "mdb_txn_renew");
    }
    r->active = true;
    return 0;
}

void tg_store_read_end(tg_store_reader_t *r)
{
    if (!r || !r->active) return;
    mdb_txn_reset(r->txn);
    r->active = false;
    readers_exit(r->store, r->slot);
}

uint64_t tg_store_read_txn(const tg_store_reader_t *r)
{
    return r && r->active ? (uint64_t)mdb_txn_id(r->txn) : 0;
}

uint64_t tg_store_last_txn(tg_store_reader_t *r)
{
    if (!r || !r->txn || r->active) return 0;
    MDB_envinfo info;
    readers_enter(r->store, r->slot); /* the meta pages live in the map: no remap meanwhile */
    int rc = mdb_env_info(r->store->env, &info);
    readers_exit(r->store, r->slot);
    return rc == 0 ? (uint64_t)info.me_last_txnid : 0;
}

int tg_store_get(tg_store_reader_t *r, const char *type, tg_str_t id, tg_str_t *json)
{
    if (!r || !r->active || !json) return -TG_EINVAL;
    const struct type_db *t = type_find(r->store, type);
    if (!t) return -TG_EINVAL;
    if (id.len == 0 || id.len > ID_MAX) return -TG_ENOTFOUND;
    MDB_val k = {id.len, (void *)id.p}, v;
    int rc = mdb_get(r->txn, t->dbi, &k, &v);
    if (rc) return lmdb_err(rc, "mdb_get");
    *json = (tg_str_t){v.mv_data, v.mv_size};
    return 0;
}

static int by_index(tg_store_reader_t *r, unsigned idx, const struct ikey *key, tg_str_t *json)
{
    if (!r || !r->active || !json) return -TG_EINVAL;
    if (!key->present) return -TG_ENOTFOUND;
    MDB_val k = {key->len, (void *)key->buf}, id;
    int rc = mdb_get(r->txn, r->store->index_dbi[idx], &k, &id);
    if (rc) return lmdb_err(rc, "mdb_get index");
    return tg_store_get(r, index_defs[idx].type, (tg_str_t){id.mv_data, id.mv_size}, json);
}

int tg_store_credential_by_digest(tg_store_reader_t *r, const uint8_t digest[32], tg_str_t *json)
{
    struct ikey k = {.present = true, .len = TG_SHA256_LEN};
    memcpy(k.buf, digest, TG_SHA256_LEN);
    return by_index(r, IDX_KEY_DIGEST, &k, json);
}

int tg_store_consumer_by_username(tg_store_reader_t *r, tg_str_t username, tg_str_t *json)
{
    struct ikey k;
    ikey_string(username.p, username.len, &k);
    return by_index(r, IDX_USERNAME, &k, json);
}

int tg_store_consumer_by_custom_id(tg_store_reader_t *r, tg_str_t custom_id, tg_str_t *json)
{
    struct ikey k;
    ikey_string(custom_id.p, custom_id.len, &k);
    return by_index(r, IDX_CUSTOM_ID, &k, json);
}

int tg_store_count(tg_store_reader_t *r, const char *type, size_t *n)
{
    if (!r || !r->active || !n) return -TG_EINVAL;
    const struct type_db *t = type_find(r->store, type);
    if (!t) return -TG_EINVAL;
    MDB_stat st;
    int rc = mdb_stat(r->txn, t->dbi, &st);
    if (rc) return lmdb_err(rc, "mdb_stat");
    *n = st.ms_entries;
    return 0;
}

int tg_store_each(tg_store_reader_t *r, const char *type, tg_store_each_cb cb, void *ud)
{
    if (!r || !r->active || !cb) return -TG_EINVAL;
    const struct type_db *t = type_find(r->store, type);
    if (!t) return -TG_EINVAL;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, t->dbi, &cur);
    if (rc) return lmdb_err(rc, "mdb_cursor_open");
    MDB_val k, v;
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && ret == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        ret = cb(ud, (tg_str_t){k.mv_data, k.mv_size}, (tg_str_t){v.mv_data, v.mv_size});
    mdb_cursor_close(cur);
    if (ret) return ret;
    return rc == MDB_NOTFOUND ? 0 : lmdb_err(rc, "mdb_cursor_get");
}

int tg_store_get_info(tg_store_reader_t *r, tg_store_info_t *info)
{
    if (!r || !r->active || !info) return -TG_EINVAL;
    memset(info, 0, sizeof *info);
    tg_config_digest_t d;
    int rc = meta_version(r->txn, r->store, &info->version, &info->loaded);
    if (rc == 0) rc = meta_digest(r->txn, r->store, &d);
    if (rc) return rc;
    tg_config_digest_hex(&d, info->digest);
    MDB_val v;
    rc = meta_get(r->txn, r->store, "cp_id", &v);
    if (rc == 0 && v.mv_size < sizeof info->cp_id) memcpy(info->cp_id, v.mv_data, v.mv_size);
    return rc == -TG_ENOTFOUND ? 0 : rc;
}

struct recompute {
    tg_str_t type;
    tg_config_digest_t *sum;
};

static int recompute_one(void *ud, tg_str_t id, tg_str_t json)
{
    struct recompute *rc = ud;
    uint8_t h[TG_CONFIG_DIGEST_LEN];
    tg_config_digest_entity_raw(rc->type, id, json, h);
    tg_config_digest_add(rc->sum, h);
    return 0;
}

int tg_store_digest_recompute(tg_store_reader_t *r, tg_config_digest_t *out)
{
    if (!r || !r->active || !out) return -TG_EINVAL;
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < r->store->n_types; i++) {
        const char *name = r->store->types[i].schema->name;
        struct recompute ctx = {tg_str_from(name), out};
        int rc = tg_store_each(r, name, recompute_one, &ctx);
        if (rc) return rc;
    }
    return 0;
}
