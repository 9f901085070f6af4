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
#include <stdbool.h>
#include <stdint.h>

/*
 * key-auth's whole lookup in one call (key_by_digest below): the credential whose key digest
 * is d and its consumer, as the few strings key-auth and the request keep of them. No JSON:
 * the source reads the stored entities in place and copies these out. Every string is
 * NUL-terminated and owned by the source until the request ends (like the JSON above), so the
 * request may keep pointing at them (tg_req_set_identity_ref).
 */
typedef struct tg_identity_key {
    /* 0 with a consumer; -TG_ENOTFOUND when the credential names no consumer or the store has
     * none with its id (Kong goes on without one); another -TG_E* when reading it failed */
    int consumer_rc;
    bool digest_ok; /* the credential's key digest is known, in digest */
    uint8_t digest[32];
    bool expires;              /* expires_at is a number (unix seconds) */
    double expires_ms;         /* expires_at * 1000 */
    tg_str_t id, consumer_ref; /* the credential's "id" and "consumer"."id"; .p NULL: absent */
    tg_str_t consumer_id, username, custom_id; /* the consumer's; .p NULL when absent */
    /* which of those four may be sent as HTTP field values as they are
     * (tg_http_is_field_value): key-auth passes them upstream as X-Consumer-* headers */
    bool id_ok, consumer_id_ok, username_ok, custom_id_ok;
} tg_identity_key_t;

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
    /* Optional (NULL: key-auth uses credential_by_digest then consumer_by_id): the credential
     * whose key digest is d with its consumer, in one call. 0 with *out filled (also when
     * only the consumer is missing: out->consumer_rc says so); -TG_ENOTFOUND when there is no
     * such credential; another -TG_E* when the lookup failed. The strings live until the
     * request ends. */
    int (*key_by_digest)(void *ud, const uint8_t d[32], tg_identity_key_t *out);
} tg_identity_source_t;

#endif
