/*
 * store.h — the data plane's persisted configuration (DESIGN §7) in LMDB.
 *
 * Layout of the environment in the directory given to tg_store_open (<prefix>/dp), one named
 * database each:
 *   - "services", "routes", "plugins": id → the entity's canonical JSON (config_digest.h:
 *     sorted keys, compact, nulls kept so it round-trips);
 *   - "consumers": id key → the consumer; "keyauth_credentials": key digest (32 raw bytes)
 *     → the credential. These two are the ones that come by the million, so each value is
 *     a compact record (store_record.h: ~14 and ~35 bytes where canonical JSON takes ~130
 *     and ~210) whenever the entity has an exact one, else its canonical JSON. An id key is
 *     a UUID's 16 bytes (store_record.h has the form of other ids);
 *   - indexes: "idx:keyauth_credentials.id" (credential id key → key digest, for deltas that
 *     name a credential by id), "idx:consumers.username" and "idx:consumers.custom_id"
 *     (→ consumer id key; strings longer than 128 bytes are keyed by 0xff || SHA-256);
 *   - "changed:consumers": id keys of the consumers that deltas updated or deleted since the
 *     set was filled by a snapshot (below);
 *   - "meta": format, applied config version, control plane id, config digest, and which
 *     of two sets of the databases above is the config (the others carry a "#1" suffix).
 * A credential record may carry a copy of its consumer's record (store_record.h owned
 * records, ~17 bytes per key on disk): snapshots and DB-less loads join every credential to its
 * consumer, and a delta copies the consumer as it stands when it writes a credential. A copy
 * is current unless its consumer is in "changed:consumers", which a delta fills when it
 * updates or deletes a consumer that exists and which a snapshot empties; a new consumer has
 * no copies to invalidate. So a key-auth lookup is one B-tree search when the copy is current,
 * and the credential's search plus the consumer's otherwise (tg_store_owner_current; past
 * 65 536 changed consumers every copy is distrusted without searching the list).
 * A credential is stored as the DP receives it: `key_digest` instead of `key`. An entity
 * carrying a field its schema marks TG_F_SECRET (a plaintext `key`) is refused. A key digest
 * names one credential: an upsert taking a digest another credential holds replaces it
 * (store_write.c says why that ends where the CP is).
 *
 * Whatever the stored form, every read gives the entity back exactly (the JSON views are its
 * canonical JSON), so the config digest is the same function of the entity set as before.
 *
 * Writes (apply, snapshot, replace_all, set_cp_id) come from ONE thread at a time, the DP's
 * control thread. Each takes effect in one LMDB write transaction committed with LMDB's
 * default durability (fsync on commit): all of it or nothing, and a DP restarted without a
 * CP reads its last applied config at once. A delta is that one transaction. A snapshot (and
 * so replace_all) holds its entities in memory until the commit, which writes them in key
 * order into the store's spare set of databases over several transactions, then switches
 * sets in the one that counts (store_bulk.c): full pages, a fast load, and LMDB's page cache
 * kept small. When the memory map fills, the store aborts the transaction, doubles the map
 * and retries (up to 3 times per transaction).
 *
 * Reads: any number of threads, no locks. Each worker owns a tg_store_reader_t (an LMDB
 * read transaction opened with MDB_NOTLS, reset between uses) and brackets every lookup
 * with tg_store_read_begin/tg_store_read_end. The views returned point into the memory map
 * and are valid only until tg_store_read_end. Reads MUST be short: begin, look up, copy or
 * parse what is needed, end — never hold a read across a return to the event loop, and
 * never nest two reads on one thread. Growing the map waits for every open read to end,
 * and a held read also keeps LMDB from reusing freed pages (the file grows). For the same
 * reason the writing thread must not hold a read of its own while it writes.
 *
 * Ownership: the caller owns the store and each reader; free every reader before
 * tg_store_close. Functions return 0 or a negative -TG_E* code (error.h).
 */
#ifndef TG_STORE_H
#define TG_STORE_H

#include "config_digest.h"
#include "str.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Map size used when tg_store_open is given 0; it grows on demand. */
#define TG_STORE_DEFAULT_MAP_SIZE ((size_t)1 << 30)

typedef struct tg_store tg_store_t;
typedef struct tg_store_snapshot tg_store_snapshot_t;
struct MDB_txn;

enum tg_store_op { TG_STORE_UPSERT, TG_STORE_DELETE };

/* One change of a delta, or one entity of a snapshot (op ignored: always an upsert). */
typedef struct tg_store_change {
    const char *type; /* entity type: "services", ..., "keyauth_credentials" */
    const char *id;   /* entity id; for upserts NULL means entity's "id" */
    enum tg_store_op op;
    const json_t *entity; /* upserts: the complete entity (its "id" must equal id) */
} tg_store_change_t;

/* Why a write was refused, for the NACK: which change and a message. */
typedef struct tg_store_error {
    size_t index; /* the failing change; SIZE_MAX when not about one change */
    char message[200];
} tg_store_error_t;

typedef struct tg_store_info {
    bool loaded;                               /* a config was ever applied (false: fresh store) */
    int64_t version;                           /* applied config version; 0 when !loaded */
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1]; /* config digest, hex */
    char cp_id[64];                            /* control plane id; "" when unset */
} tg_store_info_t;

struct tg_store_views;

/* A worker's reader; fields are private. */
typedef struct tg_store_reader {
    tg_store_t *store;
    struct MDB_txn *txn;
    unsigned slot;
    unsigned set; /* which of the store's two database sets the open read sees */
    bool active;
    struct tg_store_views *views; /* JSON rebuilt from records, freed by tg_store_read_end */
} tg_store_reader_t;

/* ---- open / close ---- */

/*
 * Opens (creating `dir` with mode 0700 and the environment when missing) the store. map_size
 * 0 means TG_STORE_DEFAULT_MAP_SIZE; a larger size recorded in the environment wins.
 * -TG_ESYS when the directory cannot be created, -TG_EUNSUPPORTED for an unknown on-disk
 * format, -TG_EIO for other LMDB failures.
 */
int tg_store_open(const char *dir, size_t map_size, tg_store_t **out);
/* Closes the store. No reader may exist and no snapshot may be open. NULL is a no-op. */
void tg_store_close(tg_store_t *s);

/* ---- writes (control thread) ---- */

/*
 * Applies a delta in one transaction. `from_version` must equal the applied version (0 on a
 * fresh store), else -TG_ECONFLICT (NACK with VERSION_GAP); to_version > from_version.
 * Changes apply in order; deleting an absent entity is a no-op. An invalid change (unknown
 * type, bad id, missing or mismatched entity, malformed key_digest, plaintext secret)
 * fails the whole delta with -TG_EINVAL and `err` (optional) naming it. On any failure
 * nothing changes. -TG_ETOOBIG when the map cannot grow enough.
 */
int tg_store_apply(tg_store_t *s, int64_t from_version, int64_t to_version,
                   const tg_store_change_t *changes, size_t n, tg_store_error_t *err);

/*
 * Replaces the whole config with `entities` (snapshots, DB-less loads) at `version`, in one
 * transaction, through the snapshot functions below. Same errors as tg_store_apply except
 * the version check.
 */
int tg_store_replace_all(tg_store_t *s, int64_t version, const tg_store_change_t *entities,
                         size_t n, tg_store_error_t *err);

/*
 * A snapshot streamed in chunks: begin prepares the store's spare set of databases, put
 * checks and queues entities in memory (nothing is written yet), commit writes them into the
 * spare set and, in one last transaction, makes it the config (version, digest) while the old
 * one is emptied; readers keep seeing the old config until then (store_bulk.c). With
 * `expected_digest` (hex, from SnapshotEnd) a mismatch aborts with -TG_ECONFLICT. After a
 * failed put the snapshot is dead: later puts return the same error; commit or abort must
 * still be called and free it. A full map is grown by the commit itself; -TG_ETOOBIG when it
 * cannot grow (-TG_EAGAIN is never returned any more). Only one snapshot may be open, and no
 * tg_store_apply while it is (-TG_EINVAL).
 */
int tg_store_snapshot_begin(tg_store_t *s, tg_store_snapshot_t **out);
int tg_store_snapshot_put(tg_store_snapshot_t *snap, const tg_store_change_t *entities, size_t n,
                          tg_store_error_t *err);
int tg_store_snapshot_commit(tg_store_snapshot_t *snap, int64_t version,
                             const char *expected_digest, tg_store_error_t *err);
void tg_store_snapshot_abort(tg_store_snapshot_t *snap);

/* Records the control plane id the config came from (at most 63 bytes). */
int tg_store_set_cp_id(tg_store_t *s, const char *cp_id);

/* ---- reads (any thread) ---- */

/* Creates a reader for one thread at a time (it may move between threads between reads). */
int tg_store_reader_init(tg_store_t *s, tg_store_reader_t *r);
void tg_store_reader_free(tg_store_reader_t *r);
/* Starts a consistent snapshot read; -TG_EINVAL when this reader already has one open. */
int tg_store_read_begin(tg_store_reader_t *r);
void tg_store_read_end(tg_store_reader_t *r);
/* The snapshot the open read sees, as an LMDB transaction id; 0 when no read is open. */
uint64_t tg_store_read_txn(const tg_store_reader_t *r);
/* The id of the last committed write, read without opening a read: while it equals the
 * tg_store_read_txn of an earlier read, the store holds what that read saw. 0 on error. */
uint64_t tg_store_last_txn(tg_store_reader_t *r);

/* Inside a read: version, digest, control plane id. */
int tg_store_get_info(tg_store_reader_t *r, tg_store_info_t *info);
/* The same outside any read, through a reader of its own (control thread, between writes). */
int tg_store_info(tg_store_t *s, tg_store_info_t *info);

/*
 * Inside a read: the digest recomputed from every stored entity (O(config)), to check the
 * incremental one, e.g. after a digest mismatch before asking for a resync.
 */
int tg_store_digest_recompute(tg_store_reader_t *r, tg_config_digest_t *out);

/*
 * Lookups inside a read: *json is a view of the entity's canonical JSON (not NUL-terminated;
 * parse with json_loadb), valid until tg_store_read_end. For an entity stored as a record the
 * JSON is rebuilt (and allocated) by the call. -TG_ENOTFOUND when absent, -TG_EINVAL for an
 * unknown type.
 */
int tg_store_get(tg_store_reader_t *r, const char *type, tg_str_t id, tg_str_t *json);
int tg_store_credential_by_digest(tg_store_reader_t *r, const uint8_t digest[32], tg_str_t *json);
int tg_store_consumer_by_username(tg_store_reader_t *r, tg_str_t username, tg_str_t *json);
int tg_store_consumer_by_custom_id(tg_store_reader_t *r, tg_str_t custom_id, tg_str_t *json);

/*
 * The same lookups giving the entity as a new JSON value the caller owns (decref it), equal
 * to what parsing the view gives. For the request path: a record becomes JSON values
 * directly, with no text to write and parse. Same return codes.
 */
int tg_store_get_entity(tg_store_reader_t *r, const char *type, tg_str_t id, json_t **out);
int tg_store_credential_entity_by_digest(tg_store_reader_t *r, const uint8_t digest[32],
                                         json_t **out);
int tg_store_consumer_entity_by_username(tg_store_reader_t *r, tg_str_t username, json_t **out);

/*
 * The request path's lookups (identity_store.c reads records in place, store_record.h
 * tg_record_read, and copies out the few strings it needs): where an entity is stored and
 * its stored value, a record when tg_record_is_compact(value), else its canonical JSON. Both
 * views are valid until tg_store_read_end. Same return codes as the lookups above.
 */
typedef struct tg_store_raw {
    tg_str_t key;   /* a credential's 32-byte key digest; a consumer's id key */
    tg_str_t value; /* the stored value */
} tg_store_raw_t;

int tg_store_credential_raw(tg_store_reader_t *r, const uint8_t digest[32], tg_store_raw_t *out);
/* By id key (store_record.h tg_record_id_key; a credential record's consumer ref is one). */
int tg_store_consumer_raw(tg_store_reader_t *r, tg_str_t id_key, tg_store_raw_t *out);
/*
 * Whether a credential value's copy of its consumer's record (an owned record,
 * store_record.h tg_record_split) is that consumer as stored: *current is false when a delta
 * updated or deleted the consumer after the copy may have been made. The caller then reads
 * the consumer with tg_store_consumer_raw. 0, or -TG_EIO.
 */
int tg_store_owner_current(tg_store_reader_t *r, tg_str_t id_key, bool *current);

/* Number of entities of a type. */
int tg_store_count(tg_store_reader_t *r, const char *type, size_t *n);
/* Number of consumers deltas changed since the last snapshot (whose keys take two searches). */
int tg_store_changed_consumers(tg_store_reader_t *r, size_t *n);

/*
 * Calls cb for every entity of a type in id order (UUIDs in the order of their text; for
 * building the router / plugin generation). The json view is valid during the call only.
 * A non-zero return from cb stops the walk and is returned.
 */
typedef int (*tg_store_each_cb)(void *ud, tg_str_t id, tg_str_t json);
int tg_store_each(tg_store_reader_t *r, const char *type, tg_store_each_cb cb, void *ud);

#endif
