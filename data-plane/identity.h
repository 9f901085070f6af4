/*
 * identity.h — where authentication plugins look up credentials and consumers.
 *
 * Types only. The proxy gives every request (tg_req_t.identity) a source; key-auth never
 * touches the config store itself, so tests hand it a fake and the realm cache can later
 * slot in behind the same calls. identity_store.h implements it over the LMDB store.
 *
 * Contract of every lookup:
 *   - returns 0 with *out set, -TG_ENOTFOUND when there is no such entity, or another
 *     negative -TG_E* code when the lookup itself failed (the plugin answers 500);
 *   - the JSON handed out is owned by the request: the source keeps a reference and drops
 *     it when the request ends, so callers neither decref it nor use it afterwards;
 *   - called on the request's worker thread; it must not block.
 * Credentials carry `id`, `consumer.id`, `key_digest` (hex SHA-256 of the key) and
 * `expires_at` (unix seconds, or null); consumers carry `id`, `username`, `custom_id`.
 */
#ifndef TG_IDENTITY_H
#define TG_IDENTITY_H

#include "str.h"

#include <jansson.h>
#include <stdint.h>

typedef struct tg_identity_source {
    /* The key-auth credential whose key digest is d (32 raw bytes of SHA-256). */
    int (*credential_by_digest)(void *ud, const uint8_t d[32], json_t **cred);
    int (*consumer_by_id)(void *ud, tg_str_t id, json_t **consumer);
    int (*consumer_by_username)(void *ud, tg_str_t name, json_t **consumer);
    void *ud;
    /* The answer of realm `realm_id` for the key whose digest is d: a credential with its
     * consumer inline as "realm_consumer" (realm_cache.h). 0 with *answer; -TG_ENOTFOUND when the realm has
     * no such key (or does not allow this control plane); -TG_EAGAIN when the request is parked
     * until the answer comes: the plugin returns TG_FLOW_WAIT and is run again, and the same
     * call then answers; -TG_EDBDOWN when nobody can tell now (the CP unreachable and nothing
     * cached). NULL where the data plane has no control plane to ask (standalone). */
    int (*realm_key)(void *realm_ud, const char *realm_id, const uint8_t d[32], json_t **answer);
    void *realm_ud;
} tg_identity_source_t;

#endif
