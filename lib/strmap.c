/*
 * strmap.c — see strmap.h.
 *
 * Open addressing with linear probing over 16-byte slots: a 32-bit hash of the key, the
 * value, and the key's offset + 1 in the arena (0: an empty slot). The stored hash both picks
 * the home slot and filters probes (one that meets another key rarely reads its bytes), and
 * growing places every slot again from it alone: the arena, hundreds of MiB for millions of
 * keys, is not read then. The arena holds the keys one after another with their NULs;
 * offsets stay valid when it grows. Nothing is ever removed, so probing needs no tombstones.
 */
#include "strmap.h"
#include "alloc.h"
#include "crypto.h"
#include "str.h"

#include <stdlib.h>
#include <string.h>

#define MIN_SLOTS 64 /* a power of two */

struct slot {
    uint32_t hash;
    uint32_t value;
    uint64_t key; /* offset + 1 of the key in the arena; 0: empty */
};

struct tg_strmap {
    struct slot *slots;
    size_t nslots, count; /* nslots: a power of two */
    char *arena;
    size_t used, cap;
    uint64_t seed;
};

static uint32_t hash(const tg_strmap_t *m, const char *key)
{
    uint64_t h = tg_fnv1a(key, strlen(key), TG_FNV1A_BASIS ^ m->seed);
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

tg_strmap_t *tg_strmap_new(void)
{
    tg_strmap_t *m = tg_calloc(1, sizeof *m);
    m->nslots = MIN_SLOTS;
    m->slots = tg_calloc(m->nslots, sizeof *m->slots);
    tg_random_bytes(&m->seed, sizeof m->seed);
    return m;
}

void tg_strmap_free(tg_strmap_t *m)
{
    if (!m) return;
    free(m->slots);
    free(m->arena);
    free(m);
}

size_t tg_strmap_count(const tg_strmap_t *m)
{
    return m->count;
}

/* The slot holding `key`, or the empty one where it would go. */
static struct slot *probe(const tg_strmap_t *m, const char *key, uint32_t h)
{
    for (size_t i = h & (m->nslots - 1);; i = (i + 1) & (m->nslots - 1)) {
        struct slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && strcmp(m->arena + s->key - 1, key) == 0)) return s;
    }
}

bool tg_strmap_get(const tg_strmap_t *m, const char *key, uint32_t *value)
{
    const struct slot *s = probe(m, key, hash(m, key));
    if (!s->key) return false;
    if (value) *value = s->value;
    return true;
}

/* Doubles the slots and places every key again by its stored hash (keys are distinct, so
 * the first empty slot of the probe is its place). */
static void grow(tg_strmap_t *m)
{
    struct slot *old = m->slots;
    size_t n = m->nslots;
    m->nslots = n * 2;
    m->slots = tg_calloc(m->nslots, sizeof *m->slots);
    for (size_t i = 0; i < n; i++) {
        if (!old[i].key) continue;
        size_t at = old[i].hash & (m->nslots - 1);
        while (m->slots[at].key)
            at = (at + 1) & (m->nslots - 1);
        m->slots[at] = old[i];
    }
    free(old);
}

void tg_strmap_put(tg_strmap_t *m, const char *key, uint32_t value)
{
    uint32_t h = hash(m, key);
    struct slot *s = probe(m, key, h);
    if (s->key) {
        s->value = value;
        return;
    }
    if ((m->count + 1) * 10 > m->nslots * 7) { /* keep the load at most 70 % */
        grow(m);
        s = probe(m, key, h);
    }
    size_t len = strlen(key) + 1;
    if (m->cap - m->used < len) {
        while (m->cap - m->used < len)
            m->cap = m->cap ? m->cap * 2 : 4096;
        m->arena = tg_realloc(m->arena, m->cap);
    }
    memcpy(m->arena + m->used, key, len);
    *s = (struct slot){h, value, (uint64_t)m->used + 1};
    m->used += len;
    m->count++;
}
