/*
 * counters.h — rate-limiting counters shared by every worker thread of a data plane
 * (the `local` policy; DESIGN §7), and Kong's fixed calendar windows.
 *
 * Layout: one open-addressing table per period (second ... year). A slot holds the counter
 * of one key in one window: the key is Kong's
 * `ratelimit:<route_id>:<service_id>:<identifier>:<period_start_ms>:<period>`, hashed with
 * SipHash-2-4-128 keyed with a per-table secret (so clients can neither aim keys at one
 * bucket nor make keys collide): 64 bits choose the bucket, 64 are kept in the slot, with
 * the window's end.
 *
 * Growth: a table is a chain of levels that are never moved, so no counter ever has to be
 * copied while other threads count into it. A level is an array of buckets of
 * TG_RL_COUNTERS_BUCKET slots, and a key may only take a slot of its own bucket in each
 * level. Level 0 has the initial size; when a key finds its bucket in every level taken by
 * live windows of other keys, the next level is mapped (as many slots as all levels below
 * it: the table doubles) and the key goes there. Lookups walk the levels in order; a bucket
 * known to be full for the key's window costs one cache line (16-bit tags of its slots)
 * instead of a scan, so a key in level k costs about k cache misses more than one in
 * level 0.
 *
 * Concurrency: lock-free. Slot state, a generation and the count share one atomic word;
 * claiming a slot is a compare-and-swap, counting is a compare-and-swap that checks the
 * generation, and reading a slot's key is validated seqlock-style. A thread that meets a
 * slot another thread is filling in (a few stores) spins briefly; after a bounded wait it
 * gives up with -TG_EAGAIN instead of blocking. A new level is installed with one
 * compare-and-swap (a thread that lost the race unmaps its copy).
 *
 * Expiry and memory bound: slots are 16 bytes (20 with their share of the bucket header) in
 * anonymous mappings, touched as used. A slot whose window ended before the window of the key
 * being looked up is reused in place; there is no sweeper. Because every key in one table has the
 * same period, "ended before my window began" is exactly "expired", and the rule never depends on a
 * thread's clock. So a table holds about as many slots as the most identifiers ever live in one
 * window of its period, never more than the maximum given at creation (the shared table's:
 * rate_limiting_counters_max). Only past that maximum does acquire return -TG_ETOOBIG; the
 * plugin then behaves as Kong does on a store error (fault_tolerant: proxy without
 * rate-limit headers; otherwise 500), and logs and counts it (metrics.h).
 *
 * Ownership: the caller owns a table from create until destroy; tg_rl_counters_shared()
 * is the process-wide table the plugin uses, created on first use and never freed.
 * Handles are plain values valid as long as the table.
 */
#ifndef TG_RL_COUNTERS_H
#define TG_RL_COUNTERS_H

#include "str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_RL_COUNTERS_DEFAULT_SLOTS ((size_t)1 << 17) /* per period, initially */
#define TG_RL_COUNTERS_DEFAULT_MAX ((size_t)1 << 24)   /* per period, grown to at most */
#define TG_RL_COUNTERS_MAX_SLOTS ((size_t)1 << 30)
#define TG_RL_COUNTERS_BUCKET 16 /* slots a key may take in one level */

typedef enum tg_rl_period {
    TG_RL_SECOND,
    TG_RL_MINUTE,
    TG_RL_HOUR,
    TG_RL_DAY,
    TG_RL_MONTH,
    TG_RL_YEAR,
    TG_RL_NPERIODS,
} tg_rl_period_t;

/* A fixed window [start_ms, end_ms), calendar-aligned in UTC. */
typedef struct tg_rl_window {
    int64_t start_ms, end_ms;
} tg_rl_window_t;

typedef struct tg_rl_counters tg_rl_counters_t;

/* A counter found or created by acquire; a plain value, no release needed. */
typedef struct tg_rl_counter {
    void *slot;
    uint32_t gen;
} tg_rl_counter_t;

/* ---- windows ---- */

/* Kong's name of a period: "second" ... "year". */
const char *tg_rl_counters_period_name(tg_rl_period_t p);
/* Kong's window length in seconds (expiration.lua): month 30 days, year 365 days. */
int64_t tg_rl_counters_period_seconds(tg_rl_period_t p);
/*
 * The window of `p` containing now_ms: second, minute, hour and day aligned to the epoch;
 * month from day 1 00:00 UTC to the next month's; year from Jan 1 to the next Jan 1.
 */
tg_rl_window_t tg_rl_counters_window(tg_rl_period_t p, int64_t now_ms);

/* ---- tables ---- */

/*
 * Creates a table with `slots_per_period` slots per period (rounded up to a power of two,
 * at least TG_RL_COUNTERS_BUCKET), growing by doubling up to `max_per_period` slots
 * (below the initial size: never grows). 0 or -TG_EINVAL for a size of 0 or beyond 2^30.
 */
int tg_rl_counters_create(size_t slots_per_period, size_t max_per_period, tg_rl_counters_t **out);
/* Frees a table; no thread may use it any more. NULL is a no-op. */
void tg_rl_counters_destroy(tg_rl_counters_t *c);
/*
 * The process-wide table, created on first use growing to the config's
 * rate_limiting_counters_max from an eighth of it (at most TG_RL_COUNTERS_DEFAULT_SLOTS), unless
 * tg_rl_counters_shared_init chose other sizes before (-TG_EEXISTS after first use).
 */
tg_rl_counters_t *tg_rl_counters_shared(void);
int tg_rl_counters_shared_init(size_t slots_per_period, size_t max_per_period);
/* Slots period p's table has mapped now; *max (optional) the most it may map. */
size_t tg_rl_counters_capacity(tg_rl_counters_t *c, tg_rl_period_t p, size_t *max);

/*
 * Finds the counter of `key` in window `w` of period `p`, creating it at 0 when absent (and
 * growing the table when it must). 0 with *out; -TG_ETOOBIG when the table is at its
 * maximum and has no room for it; -TG_EAGAIN when a slot on
 * its bucket stayed busy for too long. Never blocks, never allocates for keys up to
 * 1 KiB. Thread-safe.
 */
int tg_rl_counters_acquire(tg_rl_counters_t *c, tg_rl_period_t p, tg_str_t key, tg_rl_window_t w,
                           tg_rl_counter_t *out);
/* The current count (0 once the slot went to another window). Thread-safe. */
uint64_t tg_rl_counters_get(const tg_rl_counter_t *h);
/*
 * Whether a handle from an earlier acquire still names its key's counter (the slot was not
 * reused for another key or window since), with the count in *count. A caller that keeps
 * handles across requests checks this before trusting one, and acquires again when false.
 * Thread-safe.
 */
bool tg_rl_counters_peek(const tg_rl_counter_t *h, uint64_t *count);
/* Adds n; dropped when the slot went to another window since acquire. Thread-safe. */
void tg_rl_counters_add(const tg_rl_counter_t *h, uint64_t n);

#endif
