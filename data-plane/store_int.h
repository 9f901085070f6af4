/*
 * store_int.h — what store.c (environment, reads), store_write.c (one change at a time) and
 * store_bulk.c (snapshots) share. Not for use outside the store.
 */
#ifndef TG_STORE_INT_H
#define TG_STORE_INT_H

#include "config_digest.h"
#include "crypto.h"
#include "schema.h"
#include "store.h"
#include "store_record.h"

#include <lmdb.h>
#include <stdatomic.h>

#define TG_STORE_MOD "store"
#define STORE_MAX_TYPES 16
#define STORE_READER_SLOTS 64
#define STORE_ID_MAX 255
/* Times a write is retried after growing a full map. */
#define STORE_GROW_RETRIES 3
/* Longer index strings are keyed by 0xff || SHA-256 (never valid UTF-8, so no clash). */
#define STORE_INDEX_STR_MAX 128

/* How a type is stored (store.h has the layout). */
enum store_kind {
    KIND_JSON,       /* id → canonical JSON */
    KIND_CONSUMER,   /* id key → record or canonical JSON */
    KIND_CREDENTIAL, /* key digest → record or canonical JSON */
};

struct type_db {
    const tg_schema_t *schema;
    enum store_kind kind;
    size_t index; /* in tg_store.types and dbset.types */
};

/*
 * One complete set of entity and index databases. There are two: readers and deltas use the
 * active one while a snapshot is written into the other in bounded transactions, and one last
 * transaction makes it active (store_bulk.c says why).
 */
struct dbset {
    MDB_dbi types[STORE_MAX_TYPES];
    MDB_dbi cred_ids;   /* credential id key → key digest */
    MDB_dbi usernames;  /* consumer username → consumer id key */
    MDB_dbi custom_ids; /* consumer custom_id → consumer id key */
    /* id keys of consumers a delta updated or deleted since the set was filled: an owned
     * credential record's copy of such a consumer is stale (store.h) */
    MDB_dbi changed_consumers;
};

static inline MDB_dbi type_dbi(const struct dbset *set, const struct type_db *t)
{
    return set->types[t->index];
}

struct reader_slot {
    _Alignas(64) atomic_ulong n;
};

struct tg_store {
    struct reader_slot slots[STORE_READER_SLOTS];
    atomic_bool resizing;
    atomic_uint next_slot;
    /*
     * Which set a read sees: (W << 1) | s, where the write transaction W made set s active;
     * a read whose LMDB transaction is older than W sees the other set (tg_store_read_begin).
     */
    _Atomic uint64_t flip;
    MDB_env *env;
    size_t map_size;
    struct type_db types[STORE_MAX_TYPES];
    size_t n_types;
    /* the two the request path reads (key-auth), found once rather than by name each time */
    const struct type_db *consumers, *credentials;
    struct dbset sets[2];
    unsigned active; /* the writer's view of the active set */
    MDB_dbi meta;
    tg_store_snapshot_t *snapshot;
};

/* An index key as stored; !present when the entity has none. */
struct ikey {
    bool present;
    size_t len;
    uint8_t buf[STORE_INDEX_STR_MAX];
};

/* A write transaction in progress and the digest it maintains. */
struct wtx {
    tg_store_t *s;
    const struct dbset *set; /* the active set */
    MDB_txn *txn;
    tg_config_digest_t digest;
};

/* One change checked and turned into what the store writes. */
struct prepared {
    const struct type_db *t;
    enum tg_store_op op;
    tg_str_t id;
    uint8_t key[TG_RECORD_ID_KEY_MAX]; /* where the entity is stored */
    size_t klen;
    uint8_t id_key[TG_RECORD_ID_KEY_MAX]; /* credentials: the id index's key */
    size_t id_klen;
    struct ikey username, custom_id; /* consumers */
    /* upserts only: */
    char *canon; /* owned: canonical JSON */
    size_t canon_len;
    uint8_t rec[TG_RECORD_MAX]; /* the record, when rec_len > 0; else canon is stored */
    size_t rec_len;
    uint8_t hash[TG_CONFIG_DIGEST_LEN]; /* h(entity) */
};

/* A stored value read back: the entity and its canonical JSON. */
struct stored {
    json_t *entity;
    tg_str_t canon;
    char *owned; /* canon when it had to be rebuilt */
};

/* ---- store.c ---- */
int store_lmdb_err(int rc, const char *what);
int store_fail(tg_store_error_t *err, size_t index, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void store_err_reset(tg_store_error_t *err);
int store_fail_default(tg_store_error_t *err, int rc);
int store_grow(tg_store_t *s, size_t min_size);
const struct type_db *store_type_find(const tg_store_t *s, const char *name);
int store_wtx_begin(tg_store_t *s, struct wtx *w);
void store_wtx_abort(struct wtx *w);
int store_wtx_commit(struct wtx *w, int64_t version);
int store_meta_put(MDB_txn *txn, const tg_store_t *s, const char *key, const void *data,
                   size_t len);
/* Empties every database of a set. */
int store_clear_set(MDB_txn *txn, const tg_store_t *s, const struct dbset *set);

/* ---- store_write.c ---- */
/* Checks change i and fills p; on failure p needs no release. */
int store_prepare(const tg_store_t *s, const tg_store_change_t *c, size_t i, struct prepared *p,
                  tg_store_error_t *err);
void store_prepared_release(struct prepared *p);
/* The stored bytes of a prepared upsert. */
MDB_val store_prepared_value(const struct prepared *p);
/* Applies one prepared change inside w, keeping indexes and digest right. */
int store_apply_prepared(struct wtx *w, const struct prepared *p);
/* Reads a stored value of type t back; -TG_EIO when it is corrupt. */
int store_stored_open(const struct type_db *t, tg_str_t key, tg_str_t value, struct stored *out);
void store_stored_close(struct stored *st);
/* h(e) of a stored value. */
int store_stored_hash(const struct type_db *t, tg_str_t key, tg_str_t value,
                      uint8_t h[TG_CONFIG_DIGEST_LEN]);
void store_ikey_string(const char *str, size_t n, struct ikey *k);

#endif
