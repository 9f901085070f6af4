/*
 * store_bulk.h — the snapshot's fast path for consumers and key-auth credentials.
 *
 * A snapshot of a large config is a million consumers and as many credentials. The general
 * put (tg_store_snapshot_put) takes every entity as a JSON tree and builds from it the
 * canonical text, the hash and the compact record (store_record.h), which then proves itself
 * by decoding back to a tree: most of a new data plane's time went there. This put takes the
 * entity's fields as they arrived (the sync message's values) with its canonical JSON already
 * written (tg_proto_entity_canonical) and writes the same record bytes, the same index keys
 * and the same hash as the general put would for the JSON form of those values. Callers
 * send only entities whose strings are ASCII (UTF-8 checks stay with the general path) and
 * use the general put for anything else; the two mix freely within one snapshot, in put
 * order.
 *
 * Kept apart from store.h because only the sync apply uses it; it is part of the store's
 * snapshot API all the same (store.h's rules apply: the writer thread only).
 */
#ifndef TG_STORE_BULK_H
#define TG_STORE_BULK_H

#include "store.h"
#include "str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tg_store_bulk_entity {
    const char *type;   /* "consumers" or "keyauth_credentials" */
    const char *id;     /* NUL-terminated */
    tg_str_t canonical; /* canonical JSON of the entity's JSON form (config_digest.h) */
    /* The fields; a NULL string or a false has_* is JSON null, except expires_at, which is
     * absent from a credential without one (the JSON form of entity_codec.h). */
    bool has_created_at, has_updated_at, has_expires_at, has_tags;
    int64_t created_at, updated_at, expires_at;
    const char *username, *custom_id; /* consumers */
    const char *consumer;             /* credentials: the consumer's id */
    const uint8_t *key_digest;        /* credentials: SHA-256 of the key */
    size_t key_digest_len;            /* must be 32 */
    char *const *tags;
    size_t ntags;
} tg_store_bulk_entity_t;

/*
 * Puts one entity into an open snapshot, as tg_store_snapshot_put would put its JSON form.
 * 0, or -TG_EINVAL with err (index 0) for an entity the store refuses; the snapshot has then
 * failed as with tg_store_snapshot_put.
 */
int tg_store_snapshot_put_bulk(tg_store_snapshot_t *snap, const tg_store_bulk_entity_t *e,
                               tg_store_error_t *err);

#endif
