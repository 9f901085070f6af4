/*
 * realm_cache.c — bounded LRU of realm key lookups; see realm_cache.h.
 *
 * All entries live in one array allocated at creation (capacity entries), so the memory bound
 * is fixed up front and no request can make the cache allocate. Buckets chain entries by index;
 * the LRU list is doubly linked by index; free entries sit on a singly linked free list.
 */
#include "realm_cache.h"

#include "alloc.h"
#include "crypto.h"
#include "str.h"

#include <string.h>

#define NIL UINT32_MAX

typedef struct entry {
    char realm[TG_REALM_ID_MAX + 1];
    uint8_t digest[32];
    json_t *consumer; /* the answer; NULL: negative entry */
    int64_t expires_ms;
    uint32_t bucket_next;
    uint32_t lru_prev, lru_next; /* also the free list's link (lru_next) */
    bool used;
} entry_t;

struct tg_realm_cache {
    entry_t *entries;
    uint32_t *buckets;
    size_t capacity, nbuckets; /* nbuckets is a power of two */
    uint32_t lru_head, lru_tail, free_head; /* head = most recently used */
    uint64_t secret;
    int64_t max_stale_ms;
    tg_realm_cache_stats_t stats;
};

/* The bucket of a key. The digest is SHA-256 output, but its preimage (the key) is chosen by
 * whoever sends requests, so grinding keys into one bucket is cheap if the bucket index is
 * predictable. Mixing in a per-cache random secret through a non-linear finaliser makes the
 * index unpredictable without the secret. */
static size_t bucket_of(const tg_realm_cache_t *c, const char *realm, const uint8_t d[32])
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    h = tg_fnv1a(realm, strlen(realm), h);
    h ^= c->secret;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return (size_t)h & (c->nbuckets - 1);
}

tg_realm_cache_t *tg_realm_cache_new(size_t capacity, int64_t max_stale_ms)
{
    if (capacity < 1) capacity = 1;
    if (capacity >= NIL) capacity = NIL - 1;
    tg_realm_cache_t *c = tg_calloc(1, sizeof *c);
    c->capacity = capacity;
    c->nbuckets = 1;
    while (c->nbuckets < capacity) c->nbuckets <<= 1;
    c->entries = tg_calloc(capacity, sizeof *c->entries);
    c->buckets = tg_malloc(c->nbuckets * sizeof *c->buckets);
    for (size_t i = 0; i < c->nbuckets; i++) c->buckets[i] = NIL;
    for (size_t i = 0; i < capacity; i++) c->entries[i].lru_next = i + 1 < capacity ? (uint32_t)(i + 1) : NIL;
    c->free_head = 0;
    c->lru_head = c->lru_tail = NIL;
    c->max_stale_ms = max_stale_ms > 0 ? max_stale_ms : 0;
    tg_random_bytes(&c->secret, sizeof c->secret);
    return c;
}

void tg_realm_cache_free(tg_realm_cache_t *c)
{
    if (!c) return;
    tg_realm_cache_clear(c);
    free(c->entries);
    free(c->buckets);
    free(c);
}

/* ---------------------------------------------------------------- LRU list */

static void lru_unlink(tg_realm_cache_t *c, uint32_t i)
{
    entry_t *e = &c->entries[i];
    if (e->lru_prev != NIL) c->entries[e->lru_prev].lru_next = e->lru_next;
    else c->lru_head = e->lru_next;
    if (e->lru_next != NIL) c->entries[e->lru_next].lru_prev = e->lru_prev;
    else c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NIL;
}

static void lru_push_front(tg_realm_cache_t *c, uint32_t i)
{
    entry_t *e = &c->entries[i];
    e->lru_prev = NIL;
    e->lru_next = c->lru_head;
    if (c->lru_head != NIL) c->entries[c->lru_head].lru_prev = i;
    c->lru_head = i;
    if (c->lru_tail == NIL) c->lru_tail = i;
}

/* ---------------------------------------------------------------- entries */

static uint32_t find(const tg_realm_cache_t *c, const char *realm, const uint8_t d[32], size_t *bucket)
{
    size_t b = bucket_of(c, realm, d);
    if (bucket) *bucket = b;
    for (uint32_t i = c->buckets[b]; i != NIL; i = c->entries[i].bucket_next) {
        const entry_t *e = &c->entries[i];
        if (memcmp(e->digest, d, 32) == 0 && strcmp(e->realm, realm) == 0) return i;
    }
    return NIL;
}

/* Unlinks entry i from its bucket and the LRU list and returns it to the free list. */
static void drop(tg_realm_cache_t *c, uint32_t i)
{
    entry_t *e = &c->entries[i];
    size_t b = bucket_of(c, e->realm, e->digest);
    uint32_t *link = &c->buckets[b];
    while (*link != i) link = &c->entries[*link].bucket_next;
    *link = e->bucket_next;
    lru_unlink(c, i);
    json_decref(e->consumer);
    memset(e, 0, sizeof *e);
    e->lru_next = c->free_head;
    c->free_head = i;
    c->stats.entries--;
}

tg_realm_answer_t tg_realm_cache_get(tg_realm_cache_t *c, const char *realm_id,
                                     const uint8_t digest[32], int64_t now_ms, bool allow_stale,
                                     const json_t **answer, int64_t *expires_ms)
{
    uint32_t i = find(c, realm_id, digest, NULL);
    if (i == NIL) {
        c->stats.misses++;
        return TG_REALM_MISS;
    }
    entry_t *e = &c->entries[i];
    if (now_ms >= e->expires_ms) {
        bool usable = allow_stale && now_ms < e->expires_ms + c->max_stale_ms;
        if (!usable) {
            /* Past any use even when stale: free the slot now rather than at LRU's pace. */
            if (now_ms >= e->expires_ms + c->max_stale_ms) drop(c, i);
            c->stats.misses++;
            return TG_REALM_MISS;
        }
        c->stats.stale_hits++;
    }
    lru_unlink(c, i);
    lru_push_front(c, i);
    if (expires_ms) *expires_ms = e->expires_ms;
    if (!e->consumer) {
        c->stats.negative_hits++;
        return TG_REALM_UNKNOWN;
    }
    c->stats.hits++;
    if (answer) *answer = e->consumer;
    return TG_REALM_HIT;
}

void tg_realm_cache_put(tg_realm_cache_t *c, const char *realm_id, const uint8_t digest[32],
                        json_t *answer, int64_t expires_ms)
{
    if (strlen(realm_id) > TG_REALM_ID_MAX) return; /* not a realm id: never cached */
    size_t b;
    uint32_t i = find(c, realm_id, digest, &b);
    if (i != NIL) {
        drop(c, i);
        b = bucket_of(c, realm_id, digest);
    }
    if (c->free_head == NIL) {
        drop(c, c->lru_tail);
        c->stats.evictions++;
    }
    i = c->free_head;
    entry_t *e = &c->entries[i];
    c->free_head = e->lru_next;
    memcpy(e->realm, realm_id, strlen(realm_id) + 1);
    memcpy(e->digest, digest, 32);
    e->consumer = answer ? json_incref(answer) : NULL;
    e->expires_ms = expires_ms;
    e->used = true;
    e->bucket_next = c->buckets[b];
    c->buckets[b] = i;
    lru_push_front(c, i);
    c->stats.entries++;
}

size_t tg_realm_cache_evict_key(tg_realm_cache_t *c, const char *realm_id, const uint8_t digest[32])
{
    uint32_t i = find(c, realm_id, digest, NULL);
    if (i == NIL) return 0;
    drop(c, i);
    c->stats.invalidations++;
    return 1;
}

/* Drops every used entry that `match` accepts; invalidations are rare, so a scan is fine. */
static size_t drop_where(tg_realm_cache_t *c, bool (*match)(const entry_t *, const void *), const void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < c->capacity; i++) {
        if (c->entries[i].used && match(&c->entries[i], arg)) {
            drop(c, (uint32_t)i);
            n++;
        }
    }
    c->stats.invalidations += n;
    return n;
}

typedef struct consumer_match {
    const char *realm, *consumer_id;
} consumer_match_t;

static bool of_consumer(const entry_t *e, const void *arg)
{
    const consumer_match_t *m = arg;
    if (!e->consumer || strcmp(e->realm, m->realm) != 0) return false;
    const char *id = json_string_value(json_object_get(json_object_get(e->consumer, "consumer"), "id"));
    return id && strcmp(id, m->consumer_id) == 0;
}

static bool of_realm(const entry_t *e, const void *arg)
{
    return strcmp(e->realm, (const char *)arg) == 0;
}

static bool any(const entry_t *e, const void *arg)
{
    (void)e;
    (void)arg;
    return true;
}

size_t tg_realm_cache_evict_consumer(tg_realm_cache_t *c, const char *realm_id, const char *consumer_id)
{
    consumer_match_t m = {realm_id, consumer_id};
    return drop_where(c, of_consumer, &m);
}

size_t tg_realm_cache_evict_realm(tg_realm_cache_t *c, const char *realm_id)
{
    return drop_where(c, of_realm, realm_id);
}

size_t tg_realm_cache_clear(tg_realm_cache_t *c)
{
    return drop_where(c, any, NULL);
}

tg_realm_cache_stats_t tg_realm_cache_stats(const tg_realm_cache_t *c)
{
    return c->stats;
}
