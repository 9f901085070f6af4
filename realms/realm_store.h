/*
 * realm_store.h — storage of realms, realm consumers and realm keys in PostgreSQL
 * (migration 004_realms.sql), shared by the /v1/realms handlers and the sync side.
 *
 * Everything here runs on a control-plane worker thread with that worker's tg_db_t (one
 * connection, one thread). Results handed out as json_t are owned by the caller.
 *
 * ---------------------------------------------------------------- lookup (for sync)
 *
 * tg_realm_store_lookup() answers a data plane's "which consumer owns this key in this realm?"
 * from the key's SHA-256 digest (the secret never travels, and is never stored). It is one
 * indexed statement (realm_keys_digest_key) and is safe outside a transaction.
 *
 * ---------------------------------------------------------------- invalidations
 *
 * Every committed realm write that can revoke access, or make a cached answer wrong, sends
 *
 *     NOTIFY tollgate_realms, '<payload>'
 *
 * from inside its own transaction, so PostgreSQL delivers it to every LISTENing CP node only
 * when (and if) the write commits; a rolled-back or replayed batch notifies nothing twice.
 * The payload is one compact JSON object (always well under PostgreSQL's 8000-byte limit):
 *
 *   {"realm_id":"<uuid>",            the realm whose cached answers are concerned
 *    "op":"<what changed>",          see below
 *    "flush":false,                  true = drop EVERY cached answer (hit or miss) of realm_id
 *    "key_digests":["<hex>", ...],   SHA-256 digests (lower-case hex) to evict, hits and misses
 *    "consumer_ids":["<uuid>", ...], consumers whose cached hits must be evicted
 *    "target_realm_id":"<uuid>"}     only for consumer_moved: the realm the consumer went to
 *
 *   op                  sent when                                  carries
 *   key_created         a key was created                          key_digests (evicts a stale
 *                                                                  negative entry, not a
 * revocation) key_deleted         a key was deleted                          key_digests,
 * consumer_ids consumer_updated    username/custom_id/type/tags/groups edited consumer_ids
 *   consumer_deleted    a consumer (and its keys) was deleted      consumer_ids, key_digests
 *   consumer_moved      a consumer (and its keys) changed realm    consumer_ids, key_digests,
 *                                                                  target_realm_id; receivers
 *                                                                  evict in both realms
 *   realm_updated       allowed_control_planes, ttl, negative_ttl  flush = true
 *                       or consumer_groups changed
 *   realm_deleted       the realm (and everything in it) is gone   flush = true
 *
 * When more than TG_REALM_NOTIFY_MAX_KEYS digests would be listed (a consumer with many keys),
 * the lists are omitted and flush is true: evicting a whole realm is always correct.
 * Receivers must treat an unknown op as flush (forward compatibility).
 */
#ifndef TG_REALM_STORE_H
#define TG_REALM_STORE_H

#include "db.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define TG_REALM_NOTIFY_CHANNEL "tollgate_realms"
#define TG_REALM_NOTIFY_MAX_KEYS 64

/* The API's JSON documents, built by PostgreSQL (key order as Konnect's schemas; ISO-8601 UTC
 * times with milliseconds). Each expects the table aliased `t`. */
#define TG_REALM_SQL_ISO(col)                                                                      \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define TG_REALM_SQL_REALM_JSON                                                                    \
    "json_build_object('id', t.id, 'name', t.name, 'allowed_control_planes', "                     \
    "to_json(t.allowed_control_planes),"                                                           \
    " 'ttl', t.ttl, 'negative_ttl', t.negative_ttl, 'consumer_groups', "                           \
    "to_json(t.consumer_groups),"                                                                  \
    " 'created_at', " TG_REALM_SQL_ISO("t.created_at") ", 'updated_at', " TG_REALM_SQL_ISO(        \
        "t.updated_at") ")"
#define TG_REALM_SQL_CONSUMER_JSON                                                                 \
    "json_build_object('id', t.id, 'username', t.username, 'custom_id', t.custom_id, 'type', "     \
    "t.type,"                                                                                      \
    " 'tags', to_json(t.tags), 'consumer_groups', to_json(t.consumer_groups),"                     \
    " 'created_at', " TG_REALM_SQL_ISO("t.created_at") ", 'updated_at', " TG_REALM_SQL_ISO(        \
        "t.updated_at") ")"
/* The ApiKey read model has no secret: it is shown once, by the create response. */
#define TG_REALM_SQL_KEY_JSON                                                                      \
    "json_build_object('id', t.id, 'type', t.type, 'tags', to_json(t.tags),"                       \
    " 'created_at', " TG_REALM_SQL_ISO("t.created_at") ", 'updated_at', " TG_REALM_SQL_ISO(        \
        "t.updated_at") ")"

enum tg_realm_store_result {
    TG_REALM_LOOKUP_FOUND,       /* consumer is set */
    TG_REALM_LOOKUP_NOT_FOUND,   /* the realm has no such key: cache for negative_ttl */
    TG_REALM_LOOKUP_NOT_ALLOWED, /* the realm does not list the requesting control plane */
    TG_REALM_LOOKUP_NO_REALM,    /* no realm with that id (ttl fields are 0) */
};

typedef struct tg_realm_store_answer {
    enum tg_realm_store_result result;
    int ttl_minutes;          /* the realm's ttl: how long a hit may be cached */
    int negative_ttl_minutes; /* the realm's negative_ttl: how long a miss may be cached */
    /*
     * FOUND only (else NULL), owned by the caller:
     * {"id", "username", "custom_id", "type", "tags", "realm_id", "key_id",
     *  "consumer_groups": realm groups ∪ consumer groups (realm's first, no duplicates)}
     */
    json_t *consumer;
} tg_realm_store_answer_t;

/*
 * Looks up the key whose SHA-256 digest is `digest` in realm `realm_id` (a UUID string) on
 * behalf of a data plane of control plane `cp_id`. A realm that does not allow cp_id answers
 * NOT_ALLOWED without saying whether the key exists. Returns 0 with *out filled, -TG_EINVAL
 * for ids that are not UUIDs, or the tg_db error code (-TG_EDB, -TG_EDBDOWN) with *err filled.
 * Call tg_realm_store_answer_clear(out) afterwards.
 */
int tg_realm_store_lookup(tg_db_t *db, const char *realm_id, const uint8_t digest[32],
                          const char *cp_id, tg_realm_store_answer_t *out, tg_db_err_t *err);
void tg_realm_store_answer_clear(tg_realm_store_answer_t *out);

/*
 * Transactions of the /v1/realms writes. A write is its own transaction, or one of a
 * group-commit batch (control-plane/workers.c: db->batch set), in which case begin/commit/
 * rollback do nothing and the batch commits (or rolls back and replays each write alone).
 * Hence a write must detect every client error BEFORE its first modifying statement.
 */
int tg_realm_store_begin(tg_db_t *db, tg_db_err_t *err);
int tg_realm_store_commit(tg_db_t *db, tg_db_err_t *err);
void tg_realm_store_rollback(tg_db_t *db);

/*
 * Queues the invalidation described above inside the current transaction. op is one of the
 * names above; consumer_ids and key_digests (arrays of strings) are borrowed, may be NULL.
 * Returns 0 or the tg_db error code.
 */
int tg_realm_store_notify(tg_db_t *db, tg_db_err_t *err, const char *realm_id, const char *op,
                          const json_t *consumer_ids, const json_t *key_digests, bool flush,
                          const char *target_realm_id);

/*
 * Runs sql (parameters as tg_db_exec) whose first column is one JSON document per row and
 * returns them as an array (owned by the caller) in *out. 0 or the tg_db error code.
 */
int tg_realm_store_docs(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams,
                        const char *const *params, json_t **out);

#endif
