/*
 * sync_realms.h — the control plane's half of realm lookups on the sync stream
 * (sync-protocol.md "Realm lookups on the stream", issue 5).
 *
 * Two pure translations the hub (sync_hub.c) calls, kept apart from its session machinery:
 *   - tg_sync_realms_answer (a worker thread with its DB connection): a DP's RealmLookup into a
 *     RealmLookupResult, checking that the realm allows the DP's control plane;
 *   - tg_sync_realms_invalidations (the loop thread): a `tollgate_realms` NOTIFY payload
 *     (realms/realm_store.h documents it) into the Invalidate messages every connected DP gets.
 *
 * Invalidations go to every connected DP, not only those whose control plane the realm allows:
 * when a realm stops allowing a control plane, the DPs concerned are exactly the ones no longer
 * listed, and the payload cannot say who was listed before. An Invalidate reveals nothing a DP
 * could use (realm id, key digests it may have cached, consumer ids).
 */
#ifndef TG_SYNC_REALMS_H
#define TG_SYNC_REALMS_H

#include "db.h"
#include "sync_frame.h"

#include <stdbool.h>
#include <stdint.h>

/* How long a DP keeps the answer about a realm that does not exist. */
#define TG_SYNC_REALMS_NO_REALM_TTL_S 60u

typedef Tollgate__Sync__V1__RealmLookupResult tg_sync_realm_result_t;
typedef Tollgate__Sync__V1__Invalidate tg_sync_invalidate_t;

/*
 * Answers req for a DP of control plane cp_id into *out (initialised here; release with
 * tg_sync_realms_result_clear). A found key carries consumer_json shaped as a key-auth
 * credential, {"id": key id, "consumer": {"id"}, "key_digest": hex, "expires_at": null,
 * "realm_consumer": {id, username, custom_id, type, tags, realm_id, consumer_groups}}, and the
 * realm's ttl; a key the realm does not have, or a realm that
 * does not allow cp_id, is not found with the realm's negative_ttl (the DP cannot tell the
 * two apart: a realm does not reveal its keys to control planes it does not serve); a database
 * failure sets `error` and nothing may be cached. Malformed requests (realm id not a UUID,
 * digest not 32 bytes) are answered not found with no TTL.
 */
void tg_sync_realms_answer(tg_db_t *db, const char *cp_id, const Tollgate__Sync__V1__RealmLookup *req,
                           tg_sync_realm_result_t *out);
void tg_sync_realms_result_clear(tg_sync_realm_result_t *r);

/*
 * Turns one NOTIFY payload into at most 2 Invalidate messages in out[] (a moved consumer
 * concerns its old and its new realm) and returns how many; release each with
 * tg_sync_realms_invalidate_clear. A payload that cannot be read, or an op this version does not
 * know, becomes "everything in every realm" (realm_id NULL): dropping caches is always safe.
 */
int tg_sync_realms_invalidations(const char *payload, tg_sync_invalidate_t out[2]);
void tg_sync_realms_invalidate_clear(tg_sync_invalidate_t *inv);

#endif
