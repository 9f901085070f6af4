/*
 * realm_cache.h — the data plane's bounded cache of realm key lookups (issue 5, DESIGN §7).
 *
 * key-auth asks a realm for a key by (realm id, SHA-256 of the key); the answer comes from the
 * control plane over the sync stream and is kept here: a hit (the realm consumer) for the
 * realm's `ttl`, a miss ("no such key in this realm") for its `negative_ttl`. Entries are
 * isolated per realm (the realm id is part of the key), the table holds at most `capacity`
 * entries and drops the least recently used one to make room, so a flood of random keys costs
 * a bounded amount of memory however long it lasts.
 *
 * Staleness: an expired entry is not dropped at once. While the control plane is unreachable
 * the caller passes allow_stale and an entry up to `max_stale_ms` past its expiry is still
 * answered (realm_stale_ttl, default 1 h): authentication keeps working through a CP outage
 * with the last known answer. Once reachable again, an expired entry is a miss and is asked
 * for anew.
 *
 * Threads: a cache is single-threaded. The data plane keeps one per worker (read on the
 * request path with no lock) and one on the control thread (shared truth for single-flight
 * lookups); invalidations are delivered to each owner on its own loop.
 *
 * What is stored for a hit is the realm's answer shaped as a key-auth credential:
 * `{"id": key id, "consumer": {"id"}, "key_digest", "expires_at": null, "realm_consumer":
 * {"id", "username", "custom_id", "tags", ...}}` (control-plane/sync_realms.h); evict_consumer
 * matches on consumer.id.
 *
 * Ownership: the cache keeps a reference to each answer JSON it stores; get hands out a
 * borrowed pointer valid until the next call that changes this cache.
 */
#ifndef TG_REALM_CACHE_H
#define TG_REALM_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_REALM_ID_MAX 36 /* realm ids are uuids */

typedef enum tg_realm_answer {
    TG_REALM_MISS,    /* nothing usable: the control plane must be asked */
    TG_REALM_HIT,     /* the realm knows the key; *consumer is set */
    TG_REALM_UNKNOWN, /* the realm said it has no such key (negative entry) */
} tg_realm_answer_t;

typedef struct tg_realm_cache_stats {
    size_t entries;
    uint64_t hits, negative_hits, stale_hits, misses, evictions, invalidations;
} tg_realm_cache_stats_t;

typedef struct tg_realm_cache tg_realm_cache_t;

/* A cache of at most `capacity` (>= 1) entries whose expired entries may be served up to
 * max_stale_ms past expiry when the caller allows it. Never NULL (out of memory aborts). */
tg_realm_cache_t *tg_realm_cache_new(size_t capacity, int64_t max_stale_ms);
void tg_realm_cache_free(tg_realm_cache_t *c);

/* Looks (realm_id, digest) up at time now_ms. On TG_REALM_HIT *answer is a borrowed
 * reference. With allow_stale an expired entry still within max_stale_ms answers as if fresh
 * (counted in stale_hits). A hit or negative entry becomes the most recently used, and
 * *expires_ms (when not NULL) tells when it expires(d). */
tg_realm_answer_t tg_realm_cache_get(tg_realm_cache_t *c, const char *realm_id,
                                     const uint8_t digest[32], int64_t now_ms, bool allow_stale,
                                     const json_t **answer, int64_t *expires_ms);

/* Stores an answer: the answer JSON (a new reference is taken) for a hit, NULL for "no such
 * key", valid until expires_ms (in the past is allowed: such an entry only serves stale). Replaces any entry of the same key; evicts the least
 * recently used entry when full. */
void tg_realm_cache_put(tg_realm_cache_t *c, const char *realm_id, const uint8_t digest[32],
                        json_t *answer, int64_t expires_ms);

/* Invalidation, as the control plane pushes it. Each returns how many entries it dropped.
 * evict_consumer drops every entry of that realm whose consumer has that id; evict_realm
 * drops every entry of the realm; clear drops everything. */
size_t tg_realm_cache_evict_key(tg_realm_cache_t *c, const char *realm_id, const uint8_t digest[32]);
size_t tg_realm_cache_evict_consumer(tg_realm_cache_t *c, const char *realm_id, const char *consumer_id);
size_t tg_realm_cache_evict_realm(tg_realm_cache_t *c, const char *realm_id);
size_t tg_realm_cache_clear(tg_realm_cache_t *c);

tg_realm_cache_stats_t tg_realm_cache_stats(const tg_realm_cache_t *c);

#endif
