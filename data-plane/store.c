/*
 * store.c — see store.h.
 *
 * Map growth against readers: mdb_env_set_mapsize remaps the file, so it may only run while
 * no transaction is open anywhere in the process (LMDB does not check). Readers announce
 * themselves in one of STORE_READER_SLOTS counters, each on its own cache line so workers do
 * not contend (a "big reader" lock), and back off while `resizing` is set; the grower sets
 * `resizing`, waits for every counter to drain, remaps and clears it. Both sides use
 * sequentially consistent atomics, so either the reader sees the flag or the grower sees
 * the count. Growth is rare (the map doubles) and a remap takes microseconds.
 *
 * Writing one change is store_write.c; snapshots are store_bulk.c; records store_record.c.
 */
#include "alloc.h"
#include "error.h"
#include "log.h"
#include "store_int.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MOD TG_STORE_MOD
/* 2: consumers and credentials as records, credentials keyed by digest (store.h).
 * 3: credentials may carry their consumer's record, and the "changed consumers" databases
 *    say when that copy is stale. A format-2 store is upgraded in place when opened: every
 *    record it holds is still valid (plain records carry no copy). */
#define STORE_FORMAT 3
#define STORE_FORMAT_UPGRADABLE 2
#define MAX_DBS 32
/*
 * Up to this many consumers changed since the last snapshot, a copy's consumer is looked up
 * among them (a small B-tree that stays cached). Beyond it (a bulk update of most consumers)
 * every copy is distrusted without that search, so a lookup costs the two searches it cost
 * before copies existed rather than three, until the next snapshot empties the list.
 */
#define CHANGED_CONSUMERS_SEARCHED 65536
/* Each reader holds an LMDB lock-table slot for its lifetime: one per worker plus a few. */
#define MAX_READERS 1024

/* ------------------------------------------------------------------ errors */

/* Maps an LMDB code to ours, logging the ones that mean something is broken. */
int store_lmdb_err(int rc, const char *what)
{
    if (rc == MDB_NOTFOUND) return -TG_ENOTFOUND;
    if (rc == MDB_MAP_FULL) return -TG_ETOOBIG;
    TG_LOGE(MOD, "%s: %s", what, mdb_strerror(rc));
    return rc == MDB_BAD_VALSIZE ? -TG_EINVAL : -TG_EIO;
}

void store_err_reset(tg_store_error_t *err)
{
    if (!err) return;
    err->index = SIZE_MAX;
    err->message[0] = '\0';
}

int store_fail(tg_store_error_t *err, size_t index, int code, const char *fmt, ...)
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
int store_fail_default(tg_store_error_t *err, int rc)
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
int store_grow(tg_store_t *s, size_t min_size)
{
    size_t size = s->map_size * 2;
    while (size < min_size)
        size *= 2;
    atomic_store(&s->resizing, true);
    for (unsigned i = 0; i < STORE_READER_SLOTS; i++)
        while (atomic_load(&s->slots[i].n) != 0)
            sched_yield();
    int rc = mdb_env_set_mapsize(s->env, size);
    atomic_store(&s->resizing, false);
    if (rc) return store_lmdb_err(rc, "mdb_env_set_mapsize");
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;
    TG_LOGN(MOD, "config store map grown to %zu KiB", s->map_size >> 10);
    return 0;
}

/* ------------------------------------------------------------------ types and meta */

const struct type_db *store_type_find(const tg_store_t *s, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < s->n_types; i++)
        if (strcmp(s->types[i].schema->name, name) == 0) return &s->types[i];
    return NULL;
}

static int meta_get(MDB_txn *txn, const tg_store_t *s, const char *key, MDB_val *v)
{
    MDB_val k = {strlen(key), (void *)key};
    int rc = mdb_get(txn, s->meta, &k, v);
    return rc ? store_lmdb_err(rc, "mdb_get meta") : 0;
}

int store_meta_put(MDB_txn *txn, const tg_store_t *s, const char *key, const void *data,
                   size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)data};
    int rc = mdb_put(txn, s->meta, &k, &v, 0);
    return rc ? store_lmdb_err(rc, "mdb_put meta") : 0;
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

int store_wtx_begin(tg_store_t *s, struct wtx *w)
{
    w->s = s;
    w->set = &s->sets[s->active];
    int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    if (rc) {
        w->txn = NULL;
        return store_lmdb_err(rc, "mdb_txn_begin");
    }
    rc = meta_digest(w->txn, s, &w->digest);
    if (rc) {
        mdb_txn_abort(w->txn);
        w->txn = NULL;
    }
    return rc;
}

void store_wtx_abort(struct wtx *w)
{
    if (w->txn) mdb_txn_abort(w->txn);
    w->txn = NULL;
}

/* Records version and digest and commits; the transaction is gone either way. */
int store_wtx_commit(struct wtx *w, int64_t version)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)((uint64_t)version >> (56 - 8 * i));
    int rc = store_meta_put(w->txn, w->s, "version", be, sizeof be);
    if (rc == 0) rc = store_meta_put(w->txn, w->s, "digest", w->digest.sum, sizeof w->digest.sum);
    if (rc) {
        store_wtx_abort(w);
        return rc;
    }
    rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    return rc ? store_lmdb_err(rc, "mdb_txn_commit") : 0;
}

/* ------------------------------------------------------------------ deltas */

static int apply_change(struct wtx *w, const tg_store_change_t *c, size_t i, struct prepared *p,
                        tg_store_error_t *err)
{
    int rc = store_prepare(w->s, c, i, p, err);
    if (rc == 0) rc = store_apply_prepared(w, p);
    store_prepared_release(p);
    /* Storage failures name the change too, for the NACK. */
    if (rc && err && err->index == SIZE_MAX) err->index = i;
    return rc;
}

static int apply_once(tg_store_t *s, int64_t from, int64_t to, const tg_store_change_t *changes,
                      size_t n, tg_store_error_t *err)
{
    struct wtx w;
    int rc = store_wtx_begin(s, &w);
    if (rc) return rc;
    int64_t have;
    bool loaded;
    rc = meta_version(w.txn, s, &have, &loaded);
    if (rc == 0 && have != from)
        rc = store_fail(err, SIZE_MAX, -TG_ECONFLICT,
                        "delta from version %" PRId64 " but version %" PRId64 " is applied", from,
                        have);
    struct prepared *p = tg_malloc(sizeof *p); /* a few KiB: not on a worker's stack */
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = apply_change(&w, &changes[i], i, p, err);
    free(p);
    if (rc == 0) return store_wtx_commit(&w, to);
    store_wtx_abort(&w);
    return rc;
}

int tg_store_apply(tg_store_t *s, int64_t from_version, int64_t to_version,
                   const tg_store_change_t *changes, size_t n, tg_store_error_t *err)
{
    store_err_reset(err);
    if (!s || (n > 0 && !changes)) return -TG_EINVAL;
    if (to_version <= from_version)
        return store_fail(err, SIZE_MAX, -TG_EINVAL,
                          "delta to version %" PRId64 " does not follow version %" PRId64,
                          to_version, from_version);
    if (s->snapshot) return store_fail(err, SIZE_MAX, -TG_EINVAL, "a snapshot is being loaded");
    int rc;
    for (int tries = 0;; tries++) {
        rc = apply_once(s, from_version, to_version, changes, n, err);
        if (rc != -TG_ETOOBIG || tries == STORE_GROW_RETRIES || store_grow(s, 0) != 0) break;
        store_err_reset(err);
    }
    return store_fail_default(err, rc);
}

int tg_store_set_cp_id(tg_store_t *s, const char *cp_id)
{
    if (!s || !cp_id || strlen(cp_id) >= sizeof((tg_store_info_t *)0)->cp_id || s->snapshot)
        return -TG_EINVAL;
    int rc;
    for (int tries = 0;; tries++) {
        MDB_txn *txn;
        if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
            return store_lmdb_err(rc, "mdb_txn_begin");
        rc = store_meta_put(txn, s, "cp_id", cp_id, strlen(cp_id));
        if (rc) {
            mdb_txn_abort(txn);
        } else if ((rc = mdb_txn_commit(txn)) != 0) {
            rc = store_lmdb_err(rc, "mdb_txn_commit");
        }
        if (rc != -TG_ETOOBIG || tries == STORE_GROW_RETRIES || store_grow(s, 0) != 0) break;
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
        return store_lmdb_err(rc, "mdb_env_create");
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
    if (rc == -TG_ENOTFOUND) return store_meta_put(txn, s, "format", want, sizeof want);
    if (rc) return rc;
    uint8_t older[4] = {0, 0, 0, STORE_FORMAT_UPGRADABLE};
    if (v.mv_size == sizeof older && memcmp(v.mv_data, older, sizeof older) == 0) {
        TG_LOGI(MOD, "config store format %d upgraded to %d", STORE_FORMAT_UPGRADABLE,
                STORE_FORMAT);
        return store_meta_put(txn, s, "format", want, sizeof want);
    }
    if (v.mv_size != sizeof want || memcmp(v.mv_data, want, sizeof want) != 0) {
        TG_LOGE(MOD, "config store has an unknown format; remove it to resync from the CP");
        return -TG_EUNSUPPORTED;
    }
    return 0;
}

static enum store_kind kind_of(const char *type)
{
    if (strcmp(type, "consumers") == 0) return KIND_CONSUMER;
    if (strcmp(type, "keyauth_credentials") == 0) return KIND_CREDENTIAL;
    return KIND_JSON;
}

/*
 * LMDB's own order (memcmp over the shorter length, then the shorter key first), computed
 * faster: a search at a million keys compares ~25 keys per B-tree, and LMDB's comparator
 * calls memcmp for each. Keys here are mostly digests and UUIDs, random bytes, so the first
 * eight bytes, compared as one big-endian word, nearly always decide. Same order, so stores
 * written before (and LMDB's tools, which use memcmp) agree with it.
 */
static int key_cmp(const MDB_val *a, const MDB_val *b)
{
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    const uint8_t *x = a->mv_data, *y = b->mv_data;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n >= 8) {
        uint64_t u, v;
        memcpy(&u, x, 8);
        memcpy(&v, y, 8);
        if (u != v) return __builtin_bswap64(u) < __builtin_bswap64(v) ? -1 : 1;
    }
#endif
    int d = n ? memcmp(x, y, n) : 0;
    if (d) return d;
    return a->mv_size < b->mv_size ? -1 : a->mv_size > b->mv_size;
}

/* The comparator must be set on every opening, before any access (LMDB's rule). */
static int dbi_open(MDB_txn *txn, const char *name, unsigned set, MDB_dbi *dbi)
{
    char full[64];
    snprintf(full, sizeof full, "%s%s", name, set ? "#1" : ""); /* set 0 keeps plain names */
    int rc = mdb_dbi_open(txn, full, MDB_CREATE, dbi);
    return rc ? rc : mdb_set_compare(txn, *dbi, key_cmp);
}

static int attach_set(MDB_txn *txn, tg_store_t *s, unsigned i)
{
    struct dbset *set = &s->sets[i];
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < s->n_types; t++)
        rc = dbi_open(txn, s->types[t].schema->name, i, &set->types[t]);
    if (rc == 0) rc = dbi_open(txn, "idx:keyauth_credentials.id", i, &set->cred_ids);
    if (rc == 0) rc = dbi_open(txn, "idx:consumers.username", i, &set->usernames);
    if (rc == 0) rc = dbi_open(txn, "idx:consumers.custom_id", i, &set->custom_ids);
    if (rc == 0) rc = dbi_open(txn, "changed:consumers", i, &set->changed_consumers);
    return rc ? store_lmdb_err(rc, "mdb_dbi_open") : 0;
}

int store_clear_set(MDB_txn *txn, const tg_store_t *s, const struct dbset *set)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->n_types; i++)
        rc = mdb_drop(txn, set->types[i], 0);
    if (rc == 0) rc = mdb_drop(txn, set->cred_ids, 0);
    if (rc == 0) rc = mdb_drop(txn, set->usernames, 0);
    if (rc == 0) rc = mdb_drop(txn, set->custom_ids, 0);
    if (rc == 0) rc = mdb_drop(txn, set->changed_consumers, 0);
    return rc ? store_lmdb_err(rc, "mdb_drop") : 0;
}

/* The active set from meta (absent: 0). The other one may hold half a snapshot a crash
 * interrupted: it is emptied. */
static int attach_active(MDB_txn *txn, tg_store_t *s)
{
    MDB_val v;
    int rc = meta_get(txn, s, "active", &v);
    if (rc == 0 && (v.mv_size != 1 || *(const uint8_t *)v.mv_data > 1)) {
        TG_LOGE(MOD, "meta active is malformed");
        rc = -TG_EIO;
    }
    if (rc && rc != -TG_ENOTFOUND) return rc;
    s->active = rc == 0 ? *(const uint8_t *)v.mv_data : 0;
    atomic_store(&s->flip, (uint64_t)s->active); /* from transaction 0 on */
    return store_clear_set(txn, s, &s->sets[!s->active]);
}

static int attach_dbs(MDB_txn *txn, tg_store_t *s)
{
    for (size_t i = 0; tg_entities[i]; i++) {
        if (i == STORE_MAX_TYPES) tg_fatal("store: more than %d entity types", STORE_MAX_TYPES);
        s->types[i] = (struct type_db){tg_entities[i], kind_of(tg_entities[i]->name), i};
        s->n_types = i + 1;
    }
    s->consumers = store_type_find(s, "consumers");
    s->credentials = store_type_find(s, "keyauth_credentials");
    if (!s->consumers || !s->credentials) tg_fatal("store: no consumers or credentials type");
    int rc = attach_set(txn, s, 0);
    if (rc == 0) rc = attach_set(txn, s, 1);
    return rc ? rc : attach_active(txn, s);
}

static int open_dbs(tg_store_t *s)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return store_lmdb_err(rc, "mdb_txn_begin");
    /* The format first: an older store must not get this version's databases added. */
    rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta);
    rc = rc ? store_lmdb_err(rc, "mdb_dbi_open") : check_format(txn, s);
    if (rc == 0) rc = attach_dbs(txn, s);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    return rc ? store_lmdb_err(rc, "mdb_txn_commit") : 0;
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

/* ------------------------------------------------------------------ readers */

/* JSON rebuilt from records during one read, freed when it ends. */
struct tg_store_views {
    struct tg_store_views *next;
    char *text;
};

static void views_free(tg_store_reader_t *r)
{
    while (r->views) {
        struct tg_store_views *v = r->views;
        r->views = v->next;
        free(v->text);
        free(v);
    }
}

int tg_store_reader_init(tg_store_t *s, tg_store_reader_t *r)
{
    if (!s || !r) return -TG_EINVAL;
    memset(r, 0, sizeof *r);
    r->store = s;
    r->slot = atomic_fetch_add(&s->next_slot, 1) % STORE_READER_SLOTS;
    /* Beginning reads the meta pages in the map, so it too must not race a remap. */
    readers_enter(s, r->slot);
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0) mdb_txn_reset(txn);
    readers_exit(s, r->slot);
    if (rc) return store_lmdb_err(rc, "mdb_txn_begin (read)");
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

/*
 * The flip word is read before and after the transaction starts; when both agree, no snapshot
 * made a set active meanwhile, so the transaction is either older than the last flip W (it
 * sees the set that was active before W) or not (it sees W's set).
 */
int tg_store_read_begin(tg_store_reader_t *r)
{
    if (!r || !r->txn || r->active) return -TG_EINVAL;
    for (;;) {
        uint64_t before = atomic_load(&r->store->flip);
        readers_enter(r->store, r->slot);
        int rc = mdb_txn_renew(r->txn);
        if (rc) {
            readers_exit(r->store, r->slot);
            return store_lmdb_err(rc, "mdb_txn_renew");
        }
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load(&r->store->flip) == before) {
            bool newer = (uint64_t)mdb_txn_id(r->txn) >= before >> 1;
            r->set = newer ? (unsigned)(before & 1) : !(before & 1);
            break;
        }
        mdb_txn_reset(r->txn);
        readers_exit(r->store, r->slot);
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
    views_free(r);
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

/* ------------------------------------------------------------------ lookups */

/* A found entity: its type, the key it is stored under and the stored value. */
struct found {
    const struct type_db *t;
    tg_str_t key, value;
};

static int raw_get(tg_store_reader_t *r, MDB_dbi dbi, tg_str_t key, tg_str_t *value)
{
    MDB_val k = {key.len, (void *)key.p}, v;
    int rc = mdb_get(r->txn, dbi, &k, &v);
    if (rc) return store_lmdb_err(rc, "mdb_get");
    *value = (tg_str_t){v.mv_data, v.mv_size};
    return 0;
}

/* Finds a consumer by id key, or a credential by digest: what their databases are keyed by. */
static const struct dbset *set_of(const tg_store_reader_t *r)
{
    return &r->store->sets[r->set];
}

static int find_at(tg_store_reader_t *r, const struct type_db *t, tg_str_t key, struct found *f)
{
    f->t = t;
    f->key = key;
    return raw_get(r, type_dbi(set_of(r), t), key, &f->value);
}

static int find_by_id(tg_store_reader_t *r, const char *type, tg_str_t id,
                      uint8_t key[TG_RECORD_ID_KEY_MAX], struct found *f)
{
    if (!r || !r->active) return -TG_EINVAL;
    const struct type_db *t = store_type_find(r->store, type);
    if (!t) return -TG_EINVAL;
    if (id.len == 0 || id.len > STORE_ID_MAX) return -TG_ENOTFOUND;
    if (t->kind == KIND_JSON) return find_at(r, t, id, f);
    tg_str_t k = {(const char *)key, tg_record_id_key(id, key)};
    if (t->kind == KIND_CONSUMER) return find_at(r, t, k, f);
    tg_str_t digest;
    int rc = raw_get(r, set_of(r)->cred_ids, k, &digest);
    return rc ? rc : find_at(r, t, digest, f);
}

enum consumer_index { USERNAMES, CUSTOM_IDS };

static int find_by_index(tg_store_reader_t *r, enum consumer_index which, tg_str_t name,
                         struct found *f)
{
    if (!r || !r->active) return -TG_EINVAL;
    struct ikey k;
    store_ikey_string(name.p, name.len, &k);
    if (!k.present) return -TG_ENOTFOUND;
    tg_str_t id_key;
    MDB_dbi dbi = which == USERNAMES ? set_of(r)->usernames : set_of(r)->custom_ids;
    int rc = raw_get(r, dbi, (tg_str_t){(const char *)k.buf, k.len}, &id_key);
    return rc ? rc : find_at(r, r->store->consumers, id_key, f);
}

static int find_by_digest(tg_store_reader_t *r, const uint8_t digest[32], struct found *f)
{
    if (!r || !r->active || !digest) return -TG_EINVAL;
    return find_at(r, r->store->credentials, (tg_str_t){(const char *)digest, TG_SHA256_LEN}, f);
}

/* The canonical JSON of a found entity: the stored value, or rebuilt into the reader's views. */
static int view_of(tg_store_reader_t *r, const struct found *f, int rc, tg_str_t *json)
{
    if (rc) return rc;
    if (!json) return -TG_EINVAL;
    if (f->t->kind == KIND_JSON || !tg_record_is_compact(f->value)) {
        *json = f->value;
        return 0;
    }
    struct stored st;
    rc = store_stored_open(f->t, f->key, f->value, &st);
    if (rc) return rc;
    struct tg_store_views *v = tg_malloc(sizeof *v);
    *v = (struct tg_store_views){r->views, st.owned};
    r->views = v;
    *json = st.canon;
    st.owned = NULL; /* the view keeps it */
    store_stored_close(&st);
    return 0;
}

/* A found entity as a new JSON value. */
static int entity_of(const struct found *f, int rc, json_t **out)
{
    if (rc) return rc;
    if (!out) return -TG_EINVAL;
    *out = f->t->kind != KIND_JSON && tg_record_is_compact(f->value)
               ? tg_record_decode(f->t->kind == KIND_CONSUMER ? TG_RECORD_CONSUMER
                                                              : TG_RECORD_CREDENTIAL,
                                  f->key, f->value)
               : json_loadb(f->value.p, f->value.len, 0, NULL);
    if (*out) return 0;
    TG_LOGE(MOD, "a stored %s cannot be read back", f->t->schema->name);
    return -TG_EIO;
}

int tg_store_get(tg_store_reader_t *r, const char *type, tg_str_t id, tg_str_t *json)
{
    uint8_t key[TG_RECORD_ID_KEY_MAX];
    struct found f;
    return view_of(r, &f, find_by_id(r, type, id, key, &f), json);
}

int tg_store_credential_by_digest(tg_store_reader_t *r, const uint8_t digest[32], tg_str_t *json)
{
    struct found f;
    return view_of(r, &f, find_by_digest(r, digest, &f), json);
}

int tg_store_consumer_by_username(tg_store_reader_t *r, tg_str_t username, tg_str_t *json)
{
    struct found f;
    return view_of(r, &f, find_by_index(r, USERNAMES, username, &f), json);
}

int tg_store_consumer_by_custom_id(tg_store_reader_t *r, tg_str_t custom_id, tg_str_t *json)
{
    struct found f;
    return view_of(r, &f, find_by_index(r, CUSTOM_IDS, custom_id, &f), json);
}

int tg_store_get_entity(tg_store_reader_t *r, const char *type, tg_str_t id, json_t **out)
{
    uint8_t key[TG_RECORD_ID_KEY_MAX];
    struct found f;
    return entity_of(&f, find_by_id(r, type, id, key, &f), out);
}

int tg_store_credential_entity_by_digest(tg_store_reader_t *r, const uint8_t digest[32],
                                         json_t **out)
{
    struct found f;
    return entity_of(&f, find_by_digest(r, digest, &f), out);
}

int tg_store_consumer_entity_by_username(tg_store_reader_t *r, tg_str_t username, json_t **out)
{
    struct found f;
    return entity_of(&f, find_by_index(r, USERNAMES, username, &f), out);
}

static int raw_of(const struct found *f, int rc, tg_store_raw_t *out)
{
    if (rc) return rc;
    if (!out) return -TG_EINVAL;
    *out = (tg_store_raw_t){f->key, f->value};
    return 0;
}

int tg_store_credential_raw(tg_store_reader_t *r, const uint8_t digest[32], tg_store_raw_t *out)
{
    struct found f;
    return raw_of(&f, find_by_digest(r, digest, &f), out);
}

int tg_store_consumer_raw(tg_store_reader_t *r, tg_str_t id_key, tg_store_raw_t *out)
{
    if (!r || !r->active) return -TG_EINVAL;
    if (id_key.len == 0 || id_key.len > TG_RECORD_ID_KEY_MAX) return -TG_ENOTFOUND;
    struct found f;
    int rc = find_at(r, r->store->consumers, id_key, &f);
    return raw_of(&f, rc, out);
}

int tg_store_changed_consumers(tg_store_reader_t *r, size_t *n)
{
    if (!r || !r->active || !n) return -TG_EINVAL;
    MDB_stat st;
    int rc = mdb_stat(r->txn, set_of(r)->changed_consumers, &st);
    if (rc) return store_lmdb_err(rc, "mdb_stat");
    *n = st.ms_entries;
    return 0;
}

int tg_store_owner_current(tg_store_reader_t *r, tg_str_t id_key, bool *current)
{
    if (!current) return -TG_EINVAL;
    size_t changed;
    int rc = tg_store_changed_consumers(r, &changed);
    if (rc) return rc;
    *current = changed == 0;
    if (changed == 0 || changed > CHANGED_CONSUMERS_SEARCHED || !id_key.len) return 0;
    tg_str_t v;
    rc = raw_get(r, set_of(r)->changed_consumers, id_key, &v);
    *current = rc == -TG_ENOTFOUND;
    return rc == 0 || rc == -TG_ENOTFOUND ? 0 : rc;
}

/* ------------------------------------------------------------------ walks */

int tg_store_count(tg_store_reader_t *r, const char *type, size_t *n)
{
    if (!r || !r->active || !n) return -TG_EINVAL;
    const struct type_db *t = store_type_find(r->store, type);
    if (!t) return -TG_EINVAL;
    MDB_stat st;
    int rc = mdb_stat(r->txn, type_dbi(set_of(r), t), &st);
    if (rc) return store_lmdb_err(rc, "mdb_stat");
    *n = st.ms_entries;
    return 0;
}

/* One entity of a walk: its id and canonical JSON handed to cb. */
static int each_one(const struct found *f, tg_str_t id, tg_store_each_cb cb, void *ud)
{
    if (f->t->kind == KIND_JSON || !tg_record_is_compact(f->value)) return cb(ud, id, f->value);
    struct stored st;
    int rc = store_stored_open(f->t, f->key, f->value, &st);
    if (rc == 0) rc = cb(ud, id, st.canon);
    store_stored_close(&st);
    return rc;
}

/* Walks a database in key order: an entity type, or the credential id index. */
static int each_entry(tg_store_reader_t *r, const struct type_db *t, tg_store_each_cb cb, void *ud)
{
    bool by_id_index = t->kind == KIND_CREDENTIAL;
    MDB_cursor *cur;
    const struct dbset *set = set_of(r);
    int rc = mdb_cursor_open(r->txn, by_id_index ? set->cred_ids : type_dbi(set, t), &cur);
    if (rc) return store_lmdb_err(rc, "mdb_cursor_open");
    MDB_val k, v;
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && ret == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char id[256];
        tg_str_t key = {k.mv_data, k.mv_size};
        struct found f = {t, key, {v.mv_data, v.mv_size}};
        if (t->kind == KIND_JSON) {
            ret = each_one(&f, key, cb, ud);
            continue;
        }
        if (!tg_record_id_from_key(key, id)) ret = store_lmdb_err(MDB_CORRUPTED, "id key");
        if (ret == 0 && by_id_index) ret = find_at(r, t, f.value, &f);
        if (ret == 0) ret = each_one(&f, tg_str_from(id), cb, ud);
    }
    mdb_cursor_close(cur);
    if (ret) return ret;
    return rc == MDB_NOTFOUND ? 0 : store_lmdb_err(rc, "mdb_cursor_get");
}

int tg_store_each(tg_store_reader_t *r, const char *type, tg_store_each_cb cb, void *ud)
{
    if (!r || !r->active || !cb) return -TG_EINVAL;
    const struct type_db *t = store_type_find(r->store, type);
    if (!t) return -TG_EINVAL;
    return each_entry(r, t, cb, ud);
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

int tg_store_info(tg_store_t *s, tg_store_info_t *info)
{
    tg_store_reader_t rd;
    int rc = tg_store_reader_init(s, &rd);
    if (rc != 0) return rc;
    rc = tg_store_read_begin(&rd);
    if (rc == 0) {
        rc = tg_store_get_info(&rd, info);
        tg_store_read_end(&rd);
    }
    tg_store_reader_free(&rd);
    return rc;
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
