/*
 * counters.c — see counters.h.
 *
 * Slot word: | gen (22 bits) | state (2 bits) | count (40 bits) |. A slot only moves
 * EMPTY → BUSY → READY, or READY → BUSY → READY when reused, each BUSY step bumping the
 * generation, so a handle (slot, gen) taken before a reuse can tell it is stale.
 *
 * Why no duplicates of one key can appear: a key is inserted at the first slot of its
 * probe run that is EMPTY or holds a window that ended before the key's window began. A
 * slot's contents only move forward in time (a reuse needs the old window to have ended
 * before the new one began), so a slot that was live for a key when it was inserted stays
 * live for it; scanning the run therefore meets the key itself before any slot it could
 * claim. Two threads inserting the same key race for the same slot through one CAS; the
 * loser re-reads that slot and finds the key.
 */
#include "counters.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

#define COUNT_BITS 40
#define STATE_SHIFT COUNT_BITS
#define GEN_SHIFT (COUNT_BITS + 2)
#define COUNT_MASK ((UINT64_C(1) << COUNT_BITS) - 1)
#define GEN_MASK ((UINT64_C(1) << (64 - GEN_SHIFT)) - 1)
#define SEED_LEN 16
#define SPINS 1024  /* busy-slot polls before yielding the CPU */
#define YIELDS 1024 /* yields before giving up on a busy slot */
#define MAX_RETRIES 4096

enum state { EMPTY = 0, BUSY = 1, READY = 2 };

struct slot {
    _Atomic uint64_t word;
    _Atomic uint64_t fp[2];
    _Atomic int64_t end_ms;
};

struct table {
    struct slot *slots;
    size_t mask;
};

struct tg_rl_counters {
    struct table tables[TG_RL_NPERIODS];
    uint8_t seed[SEED_LEN];
};

static inline uint64_t w_count(uint64_t w)
{
    return w & COUNT_MASK;
}
static inline unsigned w_state(uint64_t w)
{
    return (unsigned)(w >> STATE_SHIFT) & 3u;
}
static inline uint32_t w_gen(uint64_t w)
{
    return (uint32_t)(w >> GEN_SHIFT);
}

static inline uint64_t mkword(uint32_t gen, enum state st, uint64_t count)
{
    return ((uint64_t)(gen & GEN_MASK) << GEN_SHIFT) | ((uint64_t)st << STATE_SHIFT) | count;
}

/* ------------------------------------------------------------------ windows */

static const char *const period_names[TG_RL_NPERIODS] = {"second", "minute", "hour",
                                                         "day",    "month",  "year"};
static const int64_t period_seconds[TG_RL_NPERIODS] = {1, 60, 3600, 86400, 2592000, 31536000};

const char *tg_rl_counters_period_name(tg_rl_period_t p)
{
    return p < TG_RL_NPERIODS ? period_names[p] : "?";
}

int64_t tg_rl_counters_period_seconds(tg_rl_period_t p)
{
    return p < TG_RL_NPERIODS ? period_seconds[p] : 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Unix ms of 00:00 UTC on day 1 of (year, month 0-11), months past 11 rolling over. */
static int64_t month_start_ms(int year, int month)
{
    struct tm tm = {.tm_year = year + month / 12, .tm_mon = month % 12, .tm_mday = 1};
    return (int64_t)timegm(&tm) * 1000;
}

tg_rl_window_t tg_rl_counters_window(tg_rl_period_t p, int64_t now_ms)
{
    if (p <= TG_RL_DAY) {
        int64_t len = period_seconds[p] * 1000;
        int64_t start = floor_div(now_ms, len) * len;
        return (tg_rl_window_t){start, start + len};
    }
    time_t secs = (time_t)floor_div(now_ms, 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    if (p == TG_RL_MONTH)
        return (tg_rl_window_t){month_start_ms(tm.tm_year, tm.tm_mon),
                                month_start_ms(tm.tm_year, tm.tm_mon + 1)};
    return (tg_rl_window_t){month_start_ms(tm.tm_year, 0), month_start_ms(tm.tm_year + 1, 0)};
}

/* ------------------------------------------------------------------ tables */

int tg_rl_counters_create(size_t slots_per_period, tg_rl_counters_t **out)
{
    *out = NULL;
    if (slots_per_period == 0 || slots_per_period > ((size_t)1 << 30)) return -TG_EINVAL;
    size_t n = TG_RL_COUNTERS_MAX_PROBE;
    while (n < slots_per_period)
        n <<= 1;
    tg_rl_counters_t *c = tg_calloc(1, sizeof(*c));
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        /* calloc of a large block maps zero pages: untouched slots cost no memory */
        c->tables[p].slots = tg_calloc(n, sizeof(struct slot));
        c->tables[p].mask = n - 1;
    }
    tg_random_bytes(c->seed, sizeof(c->seed));
    *out = c;
    return 0;
}

void tg_rl_counters_destroy(tg_rl_counters_t *c)
{
    if (!c) return;
    for (int p = 0; p < TG_RL_NPERIODS; p++)
        free(c->tables[p].slots);
    free(c);
}

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(tg_rl_counters_t *) shared;

int tg_rl_counters_shared_init(size_t slots_per_period)
{
    pthread_mutex_lock(&shared_lock);
    int rc = -TG_EEXISTS;
    if (!atomic_load(&shared)) {
        tg_rl_counters_t *c;
        rc = tg_rl_counters_create(slots_per_period, &c);
        if (rc == 0) atomic_store(&shared, c);
    }
    pthread_mutex_unlock(&shared_lock);
    return rc;
}

tg_rl_counters_t *tg_rl_counters_shared(void)
{
    /* the lock is taken once per process, at the first request that rate-limits */
    tg_rl_counters_t *c = atomic_load_explicit(&shared, memory_order_acquire);
    if (!c) {
        tg_rl_counters_shared_init(TG_RL_COUNTERS_DEFAULT_SLOTS);
        c = atomic_load(&shared);
    }
    return c;
}

/* ------------------------------------------------------------------ SipHash-2-4-128 */

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = rotl(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = rotl(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = rotl(v2, 32);                                                                         \
    } while (0)

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* SipHash-2-4 with 128-bit output (the reference algorithm, little-endian words). */
static void siphash128(const uint8_t key[SEED_LEN], const uint8_t *in, size_t len, uint64_t out[2])
{
    uint64_t k0 = load64(key), k1 = load64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    v1 ^= 0xee;
    const uint8_t *end = in + (len & ~(size_t)7);
    for (; in != end; in += 8) {
        uint64_t m = load64(in);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xee;
    for (int i = 0; i < 4; i++)
        SIPROUND;
    out[0] = v0 ^ v1 ^ v2 ^ v3;
    v1 ^= 0xdd;
    for (int i = 0; i < 4; i++)
        SIPROUND;
    out[1] = v0 ^ v1 ^ v2 ^ v3;
}

/* ------------------------------------------------------------------ slots */

struct want {
    uint64_t fp[2];
    tg_rl_window_t w;
};

/*
 * The key's 128-bit fingerprint, SipHash-2-4-128 keyed with the table's secret seed (a keyed
 * PRF: clients who do not know the seed can neither aim keys at one probe run nor make two
 * keys collide), and its home slot, mixed from the fingerprint's two halves.
 */
static void fingerprint(const tg_rl_counters_t *c, tg_str_t key, uint64_t *home, struct want *k)
{
    siphash128(c->seed, (const uint8_t *)key.p, key.len, k->fp);
    *home = k->fp[0] ^ rotl(k->fp[1], 31);
}

/* Waits for a slot being filled in by another thread; false when it takes too long. */
static bool wait_not_busy(struct slot *s, uint64_t *w)
{
    for (unsigned i = 0; i < SPINS + YIELDS; i++) {
        *w = atomic_load_explicit(&s->word, memory_order_acquire);
        if (w_state(*w) != BUSY) return true;
        if (i >= SPINS) sched_yield();
    }
    return false;
}

/*
 * Takes the slot whose word is still `w` for key k. The fields are written between the
 * BUSY and the READY store, each with release order: a reader that sees a new field value
 * (acquire) therefore also sees the BUSY word when it checks the word again.
 */
static bool claim(struct slot *s, uint64_t w, const struct want *k, tg_rl_counter_t *out)
{
    uint32_t gen = (w_gen(w) + 1) & GEN_MASK;
    if (!atomic_compare_exchange_strong_explicit(&s->word, &w, mkword(gen, BUSY, 0),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    atomic_store_explicit(&s->fp[0], k->fp[0], memory_order_release);
    atomic_store_explicit(&s->fp[1], k->fp[1], memory_order_release);
    atomic_store_explicit(&s->end_ms, k->w.end_ms, memory_order_release);
    atomic_store_explicit(&s->word, mkword(gen, READY, 0), memory_order_release);
    *out = (tg_rl_counter_t){s, gen};
    return true;
}

/*
 * What a READY slot holds, read consistently (a seqlock): the acquire loads keep the second
 * look at the word after them, so an unchanged generation means no writer came in between.
 */
static bool read_key(struct slot *s, uint64_t w, uint64_t fp[2], int64_t *end)
{
    fp[0] = atomic_load_explicit(&s->fp[0], memory_order_acquire);
    fp[1] = atomic_load_explicit(&s->fp[1], memory_order_acquire);
    *end = atomic_load_explicit(&s->end_ms, memory_order_acquire);
    uint64_t again = atomic_load_explicit(&s->word, memory_order_acquire);
    return w_state(again) == READY && w_gen(again) == w_gen(w);
}

enum verdict { FOUND, CLAIMED, NEXT, RETRY, TIMEOUT };

/* One probe step: is this slot the key, free for it, or someone else's live window? */
static enum verdict probe(struct slot *s, const struct want *k, tg_rl_counter_t *out)
{
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    if (w_state(w) == BUSY && !wait_not_busy(s, &w)) return TIMEOUT;
    if (w_state(w) == EMPTY) return claim(s, w, k, out) ? CLAIMED : RETRY;
    uint64_t fp[2];
    int64_t end;
    if (!read_key(s, w, fp, &end)) return RETRY;
    if (fp[0] == k->fp[0] && fp[1] == k->fp[1] && end == k->w.end_ms) {
        *out = (tg_rl_counter_t){s, w_gen(w)};
        return FOUND;
    }
    if (end <= k->w.start_ms) return claim(s, w, k, out) ? CLAIMED : RETRY;
    return NEXT;
}

int tg_rl_counters_acquire(tg_rl_counters_t *c, tg_rl_period_t p, tg_str_t key, tg_rl_window_t w,
                           tg_rl_counter_t *out)
{
    if (p >= TG_RL_NPERIODS) return -TG_EINVAL;
    struct table *t = &c->tables[p];
    struct want k = {.w = w};
    uint64_t home;
    fingerprint(c, key, &home, &k);
    unsigned retries = 0;
    for (size_t i = 0; i < TG_RL_COUNTERS_MAX_PROBE;) {
        struct slot *s = &t->slots[(home + i) & t->mask];
        switch (probe(s, &k, out)) {
        case FOUND:
        case CLAIMED:
            return 0;
        case NEXT:
            i++;
            break;
        case RETRY: /* the slot changed under us: look at it again, a bounded number of times */
            if (++retries > MAX_RETRIES) return -TG_EAGAIN;
            break;
        case TIMEOUT:
            return -TG_EAGAIN;
        }
    }
    return -TG_ETOOBIG;
}

uint64_t tg_rl_counters_get(const tg_rl_counter_t *h)
{
    const struct slot *s = h->slot;
    uint64_t w = atomic_load_explicit(&((struct slot *)s)->word, memory_order_acquire);
    return w_state(w) == READY && w_gen(w) == h->gen ? w_count(w) : 0;
}

bool tg_rl_counters_peek(const tg_rl_counter_t *h, uint64_t *count)
{
    /* a slot changes key or window only through claim(), which bumps the generation */
    uint64_t w = atomic_load_explicit(&((struct slot *)h->slot)->word, memory_order_acquire);
    if (w_state(w) != READY || w_gen(w) != h->gen) return false;
    *count = w_count(w);
    return true;
}

void tg_rl_counters_add(const tg_rl_counter_t *h, uint64_t n)
{
    struct slot *s = h->slot;
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    for (;;) {
        if (w_state(w) != READY || w_gen(w) != h->gen) return; /* its window is over */
        uint64_t count = w_count(w) + n;
        if (count > COUNT_MASK) count = COUNT_MASK;
        uint64_t next = mkword(h->gen, READY, count);
        if (atomic_compare_exchange_weak_explicit(&s->word, &w, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
    }
}
