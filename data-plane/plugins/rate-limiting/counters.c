/*
 * counters.c — see counters.h.
 *
 * Slot word: | gen (22 bits) | state (2 bits) | count (40 bits) |. A slot only moves
 * EMPTY → BUSY → READY, or READY → BUSY → READY when reused, each BUSY step bumping the
 * generation, so a handle (slot, gen) taken before a reuse can tell it is stale.
 *
 * A key's probe sequence is one bucket of BUCKET_SLOTS slots per level: its home bucket in
 * level 0, then in level 1, and so on.
 *
 * Why no duplicates of one key can appear: a key is inserted at the first slot of its
 * sequence that is EMPTY or holds a window that ended before the key's window began. A
 * slot's contents only move forward in time (a reuse needs the old window to have ended
 * before the new one began), so a slot that was live for a key when it was inserted stays
 * live for it; scanning the sequence therefore meets the key itself before any slot it
 * could claim. Two threads inserting the same key race for the same slot through one CAS;
 * the loser re-reads that slot and finds the key. Levels are only ever appended, so the
 * sequence of a key only grows at its end.
 *
 * What keeps a lookup cheap when lower levels are full (more keys live in this window
 * than they hold): each bucket has a header line with a 16-bit tag of each slot's
 * fingerprint and `min_end`, a lower bound of the window ends of its slots (EMPTY counting
 * as 0). A bucket whose min_end is past the start of the key's window has no slot the key
 * could claim, so the key is there only if a tag matches: one cache line per full level
 * instead of a scan of its slots. Why the bound stays a lower bound: every slot's end only
 * grows, and a scanner stores (atomic max) the minimum of ends it read. Why a tag cannot
 * be missed: a tag is stored before its slot turns READY (release); a scanner saw that
 * READY (acquire) before it published min_end (release); a reader loads min_end (acquire)
 * before the tags. A key's slot was the key's when that scanner read it (it was live for
 * the key, so never reused for it since), so its tag is visible.
 */
#include "counters.h"
#include "alloc.h"
#include "crypto.h"
#include "config.h"
#include "error.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

#define COUNT_BITS 40
#define STATE_SHIFT COUNT_BITS
#define GEN_SHIFT (COUNT_BITS + 2)
#define COUNT_MASK ((UINT64_C(1) << COUNT_BITS) - 1)
#define GEN_MASK ((UINT64_C(1) << (64 - GEN_SHIFT)) - 1)
#define SEED_LEN 16
#define SPINS 1024       /* busy-slot polls before yielding the CPU */
#define BUSY_WAIT_MS 100 /* then yields for at most this long */
#define MAX_RETRIES 4096

enum state { EMPTY = 0, BUSY = 1, READY = 2 };

/*
 * 16 bytes: a counter per live identifier is most of what rate-limiting by consumer costs at
 * a million consumers. `key` packs the key's fingerprint (32 bits of its hash) and its
 * window's end in whole seconds (windows are calendar-aligned, tg_rl_counters_window):
 * written and read as one word, so a reader never pairs one key's fingerprint with another's
 * window.
 */
struct slot {
    _Atomic uint64_t word;
    _Atomic uint64_t key; /* fingerprint << 32 | window end in seconds */
};

#define BUCKET_SLOTS TG_RL_COUNTERS_BUCKET

/* A bucket: its header fills the first cache line, its slots the next four. */
struct bucket {
    _Alignas(64) _Atomic uint16_t tags[BUCKET_SLOTS]; /* 0: no key yet */
    _Atomic int64_t min_end;
    struct slot slots[BUCKET_SLOTS];
};

/*
 * One period's table: a chain of levels, each an array of buckets. Level 0 has `base`
 * slots, level k >= 1 base << (k - 1), so the levels up to k hold base << k slots in all:
 * every new level doubles the table. A level is mapped when a key first finds no slot it
 * could take in its buckets of all lower levels, and stays until the table is destroyed
 * (its slots are reused in place once their windows end).
 */
#define MAX_LEVELS 24

struct table {
    _Atomic(struct bucket *) levels[MAX_LEVELS];
    size_t base;        /* slots of level 0, a power of two >= BUCKET_SLOTS */
    unsigned maxlevels; /* levels this table may map: base << (maxlevels - 1) <= max slots */
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

static size_t level_slots(const struct table *t, unsigned level)
{
    return level == 0 ? t->base : t->base << (level - 1);
}

static size_t level_bytes(size_t slots)
{
    return slots / BUCKET_SLOTS * sizeof(struct bucket);
}

/* Untouched pages of an anonymous mapping cost no memory; calloc gives no such promise once
 * glibc has raised its mmap threshold (after a large config load it hands out zeroed heap). */
static struct bucket *map_slots(size_t n)
{
    void *p = mmap(NULL, level_bytes(n), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) tg_fatal("out of memory mapping %zu rate-limiting counters", n);
    return p;
}

static _Atomic size_t mapped_total; /* slots mapped by every table, for the metric */

static void account_slots(ptrdiff_t delta)
{
    size_t now = atomic_fetch_add(&mapped_total, (size_t)delta) + (size_t)delta;
    tg_metrics_global_set(TG_METRICS_RL_COUNTER_SLOTS, now);
}

int tg_rl_counters_create(size_t slots_per_period, size_t max_per_period, tg_rl_counters_t **out)
{
    *out = NULL;
    if (slots_per_period == 0 || slots_per_period > TG_RL_COUNTERS_MAX_SLOTS ||
        max_per_period > TG_RL_COUNTERS_MAX_SLOTS)
        return -TG_EINVAL;
    size_t n = BUCKET_SLOTS;
    while (n < slots_per_period)
        n <<= 1;
    /* level k's cumulative size is n << k: as many levels as keep it within the maximum */
    unsigned levels = 1;
    while (levels < MAX_LEVELS && (n << levels) <= max_per_period)
        levels++;
    tg_rl_counters_t *c = tg_calloc(1, sizeof(*c));
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        c->tables[p].base = n;
        c->tables[p].maxlevels = levels;
        atomic_init(&c->tables[p].levels[0], map_slots(n));
    }
    account_slots((ptrdiff_t)(n * TG_RL_NPERIODS));
    tg_random_bytes(c->seed, sizeof(c->seed));
    *out = c;
    return 0;
}

void tg_rl_counters_destroy(tg_rl_counters_t *c)
{
    if (!c) return;
    size_t total = 0;
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        for (unsigned l = 0; l < MAX_LEVELS; l++) {
            struct bucket *b = atomic_load(&c->tables[p].levels[l]);
            if (!b) continue;
            munmap(b, level_bytes(level_slots(&c->tables[p], l)));
            total += level_slots(&c->tables[p], l);
        }
    }
    account_slots(-(ptrdiff_t)total);
    free(c);
}

size_t tg_rl_counters_capacity(tg_rl_counters_t *c, tg_rl_period_t p, size_t *max)
{
    const struct table *t = &c->tables[p < TG_RL_NPERIODS ? p : 0];
    size_t n = 0;
    for (unsigned l = 0; l < t->maxlevels; l++)
        if (atomic_load_explicit(&t->levels[l], memory_order_acquire)) n += level_slots(t, l);
    if (max) *max = t->base << (t->maxlevels - 1);
    return n;
}

/*
 * Level `l` of t, mapped now when no thread did yet; NULL past the table's maximum. Two
 * threads may map it at once: one mapping wins the compare-and-swap, the other is unmapped
 * before anyone saw it.
 */
static struct bucket *level(struct table *t, unsigned l)
{
    struct bucket *s = atomic_load_explicit(&t->levels[l], memory_order_acquire);
    if (s || l >= t->maxlevels) return s;
    struct bucket *fresh = map_slots(level_slots(t, l));
    if (atomic_compare_exchange_strong_explicit(&t->levels[l], &s, fresh, memory_order_acq_rel,
                                                memory_order_acquire)) {
        account_slots((ptrdiff_t)level_slots(t, l));
        TG_LOGN("rate-limiting", "counter table grown to %zu slots for one period", t->base << l);
        return fresh;
    }
    munmap(fresh, level_bytes(level_slots(t, l)));
    return s;
}

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(tg_rl_counters_t *) shared;

int tg_rl_counters_shared_init(size_t slots_per_period, size_t max_per_period)
{
    pthread_mutex_lock(&shared_lock);
    int rc = -TG_EEXISTS;
    if (!atomic_load(&shared)) {
        tg_rl_counters_t *c;
        rc = tg_rl_counters_create(slots_per_period, max_per_period, &c);
        if (rc == 0) atomic_store(&shared, c);
    }
    pthread_mutex_unlock(&shared_lock);
    return rc;
}

/* The configured maximum (rate_limiting_counters_max), or the default when it is invalid. */
static size_t configured_max(void)
{
    long v;
    if (tg_config_int(TG_CONF_rate_limiting_counters_max, TG_RL_COUNTERS_BUCKET,
                      (long)TG_RL_COUNTERS_MAX_SLOTS, &v) == 0)
        return (size_t)v;
    TG_LOGE("rate-limiting", "invalid rate_limiting_counters_max (%d..%lu): using %lu",
            TG_RL_COUNTERS_BUCKET, (unsigned long)TG_RL_COUNTERS_MAX_SLOTS,
            (unsigned long)TG_RL_COUNTERS_DEFAULT_MAX);
    return TG_RL_COUNTERS_DEFAULT_MAX;
}

tg_rl_counters_t *tg_rl_counters_shared(void)
{
    /* the lock is taken once per process, at the first request that rate-limits */
    tg_rl_counters_t *c = atomic_load_explicit(&shared, memory_order_acquire);
    if (!c) {
        /* a small maximum still leaves a few doublings to grow by */
        size_t max = configured_max(), initial = max >> 3;
        if (initial > TG_RL_COUNTERS_DEFAULT_SLOTS) initial = TG_RL_COUNTERS_DEFAULT_SLOTS;
        if (initial < TG_RL_COUNTERS_BUCKET) initial = TG_RL_COUNTERS_BUCKET;
        tg_rl_counters_shared_init(initial, max);
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
    uint64_t fp;  /* its upper half is stored in the slot and compared */
    uint64_t sel; /* chooses the bucket in level 0 and the tag, also compared */
    uint64_t key; /* what the slot's key word holds for this key and window */
    tg_rl_window_t w;
};

/*
 * The key's 128-bit hash, SipHash-2-4-128 keyed with the table's secret seed (a keyed PRF:
 * clients who do not know the seed can neither aim keys at one bucket nor make two keys
 * collide): 32 bits of h[0] are kept in the slot as the key's fingerprint, h[1] chooses its
 * bucket and its 16-bit tag. Two keys are taken for one only if bucket, tag and fingerprint
 * all agree: 2^-48 per comparison within a bucket, so a new key meets another's counter
 * about once in 2^44 lookups (16 slots a bucket), for keys no client can choose.
 */
static void fingerprint(const tg_rl_counters_t *c, tg_str_t key, uint64_t *home, struct want *k)
{
    uint64_t h[2];
    siphash128(c->seed, (const uint8_t *)key.p, key.len, h);
    k->fp = h[0];
    k->sel = h[1];
    k->key = (h[0] >> 32) << 32 | (uint64_t)(k->w.end_ms / 1000);
    *home = h[1];
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Waits for a slot being filled in by another thread (a few stores); false when it takes
 * longer than BUSY_WAIT_MS. The filler can only be that slow when it was preempted between
 * those stores, and on a loaded machine it may wait a few scheduler periods for a CPU: so
 * the bound is time, not a count of polls (a count measured ~1 ms and gave up too early).
 */
static bool wait_not_busy(struct slot *s, uint64_t *w)
{
    int64_t deadline = 0;
    for (unsigned i = 0;; i++) {
        *w = atomic_load_explicit(&s->word, memory_order_acquire);
        if (w_state(*w) != BUSY) return true;
        if (i < SPINS) continue;
        if (i % 64 == 0) { /* the clock is read now and then: yields are cheaper */
            int64_t now = monotonic_ms();
            if (!deadline)
                deadline = now + BUSY_WAIT_MS;
            else if (now > deadline)
                return false;
        }
        sched_yield();
    }
}

/* A slot's tag: 16 bits of the hash other than those that chose the bucket; never 0. */
static inline uint16_t tag_of(const struct want *k)
{
    uint16_t t = (uint16_t)(k->sel >> 48);
    return t ? t : 1;
}

/*
 * Takes slot i of bucket b, whose word is still `w`, for key k. The tag and fields are
 * written between the BUSY and the READY store, each with release order: a reader that
 * sees a new field value (acquire) therefore also sees the BUSY word when it checks the
 * word again, and one that sees READY sees the tag.
 */
static bool claim(struct bucket *b, unsigned i, uint64_t w, const struct want *k,
                  tg_rl_counter_t *out)
{
    struct slot *s = &b->slots[i];
    uint32_t gen = (w_gen(w) + 1) & GEN_MASK;
    if (!atomic_compare_exchange_strong_explicit(&s->word, &w, mkword(gen, BUSY, 0),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    atomic_store_explicit(&b->tags[i], tag_of(k), memory_order_release);
    atomic_store_explicit(&s->key, k->key, memory_order_release);
    atomic_store_explicit(&s->word, mkword(gen, READY, 0), memory_order_release);
    *out = (tg_rl_counter_t){s, gen};
    return true;
}

/*
 * What a READY slot holds, read consistently (a seqlock): the acquire loads keep the second
 * look at the word after them, so an unchanged generation means no writer came in between.
 */
static bool read_key(struct bucket *b, unsigned i, uint64_t w, uint16_t *tag, uint64_t *key)
{
    *tag = atomic_load_explicit(&b->tags[i], memory_order_acquire);
    *key = atomic_load_explicit(&b->slots[i].key, memory_order_acquire);
    uint64_t again = atomic_load_explicit(&b->slots[i].word, memory_order_acquire);
    return w_state(again) == READY && w_gen(again) == w_gen(w);
}

enum verdict { FOUND, CLAIMED, NEXT, RETRY, TIMEOUT };

/* One probe step: is slot i the key, free for it, or someone else's live window (whose end
 * goes to *end)? */
static enum verdict probe(struct bucket *b, unsigned i, const struct want *k, tg_rl_counter_t *out,
                          int64_t *end)
{
    struct slot *s = &b->slots[i];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    if (w_state(w) == BUSY && !wait_not_busy(s, &w)) return TIMEOUT;
    if (w_state(w) == EMPTY) return claim(b, i, w, k, out) ? CLAIMED : RETRY;
    uint64_t key;
    uint16_t tag;
    if (!read_key(b, i, w, &tag, &key)) return RETRY;
    *end = (int64_t)(uint32_t)key * 1000;
    if (key == k->key && tag == tag_of(k)) {
        *out = (tg_rl_counter_t){s, w_gen(w)};
        return FOUND;
    }
    if (*end <= k->w.start_ms) return claim(b, i, w, k, out) ? CLAIMED : RETRY;
    return NEXT;
}

/* Raises b's min_end to at least m (never lowers it: see the top of the file). */
static void raise_min_end(struct bucket *b, int64_t m)
{
    int64_t cur = atomic_load_explicit(&b->min_end, memory_order_relaxed);
    while (cur < m && !atomic_compare_exchange_weak_explicit(
                          &b->min_end, &cur, m, memory_order_release, memory_order_relaxed))
        ;
}

enum step { STEP_DONE, STEP_NEXT_LEVEL, STEP_AGAIN };

/*
 * The key in one bucket: found or claimed (STEP_DONE, or *rc < 0 after too many retries),
 * or no slot there for it (STEP_NEXT_LEVEL).
 */
static enum step in_bucket(struct bucket *b, const struct want *k, tg_rl_counter_t *out,
                           unsigned *retries, int *rc)
{
    int64_t end, min = INT64_MAX;
    *rc = 0;
    bool full = atomic_load_explicit(&b->min_end, memory_order_acquire) > k->w.start_ms;
    uint16_t tag = tag_of(k);
    for (unsigned i = 0; i < BUCKET_SLOTS;) {
        /* a full bucket holds the key only where its tag is */
        if (full && atomic_load_explicit(&b->tags[i], memory_order_relaxed) != tag) {
            i++;
            continue;
        }
        switch (probe(b, i, k, out, &end)) {
        case FOUND:
        case CLAIMED:
            return STEP_DONE;
        case NEXT:
            if (end < min) min = end;
            i++;
            break;
        case RETRY: /* the slot changed under us: look again, a bounded number of times */
            if (++*retries > MAX_RETRIES) {
                *rc = -TG_EAGAIN;
                return STEP_DONE;
            }
            break;
        case TIMEOUT:
            *rc = -TG_EAGAIN;
            return STEP_DONE;
        }
    }
    if (!full) raise_min_end(b, min); /* every slot was live for this key: remember it */
    return STEP_NEXT_LEVEL;
}

int tg_rl_counters_acquire(tg_rl_counters_t *c, tg_rl_period_t p, tg_str_t key, tg_rl_window_t w,
                           tg_rl_counter_t *out)
{
    if (p >= TG_RL_NPERIODS) return -TG_EINVAL;
    /* the slot keeps the window's end in whole seconds, as 32 bits (until 2106) */
    if (w.end_ms % 1000 != 0 || w.end_ms < 0 || w.end_ms / 1000 > UINT32_MAX) return -TG_EINVAL;
    struct table *t = &c->tables[p];
    struct want k = {.w = w};
    uint64_t home;
    fingerprint(c, key, &home, &k);
    unsigned retries = 0;
    for (unsigned l = 0; l < t->maxlevels; l++) {
        struct bucket *lv = level(t, l);
        size_t nb = level_slots(t, l) / BUCKET_SLOTS;
        /* each level picks its bucket with other bits, so keys crowded together in one
         * level spread out in the next */
        uint64_t h = l == 0 ? home : home ^ rotl(k.fp, (int)(7 * l) & 63);
        int rc;
        if (in_bucket(&lv[h & (nb - 1)], &k, out, &retries, &rc) == STEP_DONE) return rc;
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
