/*
 * realm_lookup.h — realm key lookups between the proxy workers and the control thread
 * (issue 5, DESIGN §7, sync-protocol.md "Realm lookups on the stream").
 *
 * A worker answers from its own realm cache (realm_cache.h, no lock). On a miss it parks the
 * request on a waiter and asks the control thread, which answers from the DP-wide cache or
 * sends one RealmLookup to the control plane per (realm, digest) however many workers and
 * requests wait on it (single flight). The answer comes back to every waiting worker, which
 * stores it in its cache and wakes its waiters on its own loop.
 *
 * Outcomes a request sees:
 *   HIT          the realm knows the key: the consumer
 *   UNKNOWN      the realm says it has no such key (or does not allow this control plane)
 *   UNAVAILABLE  nobody can tell now: the CP is unreachable and nothing (not even a stale
 *                answer within realm_stale_ttl) is cached, the lookup timed out, the CP
 *                reported an error, or too many lookups are already in flight. Never cached.
 *
 * Revocation: the CP pushes Invalidate; the control thread evicts from its cache and relays the
 * eviction to every worker. Invalidations sent while the DP was disconnected are lost, so on
 * reconnecting every cache is cleared: a revoked key can never outlive a reconnection.
 *
 * Threads: tg_realm_lookup_new/free and every tg_realm_lookup_ctl_* run on the control thread;
 * tg_realm_lookup_attach/detach/query/cancel on the worker whose index they name (attach may
 * also run on the control thread before that worker's loop starts). Cross-thread messages go
 * through a mutex-protected mailbox plus uv_async per loop: only a miss or an answer takes the
 * mutex, never a cache hit.
 */
#ifndef TG_REALM_LOOKUP_H
#define TG_REALM_LOOKUP_H

#include "realm_cache.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef enum tg_realm_outcome {
    TG_REALM_OUT_PENDING, /* the waiter is parked; its wake callback will run */
    TG_REALM_OUT_HIT,
    TG_REALM_OUT_UNKNOWN,
    TG_REALM_OUT_UNAVAILABLE,
} tg_realm_outcome_t;

/* Sends RealmLookup{request_id, realm, digest} to the control plane. Control thread.
 * Returns 0 when sent, a negative -TG_E* code when no CP connection can take it. */
typedef int (*tg_realm_send_cb)(void *ud, uint64_t request_id, const char *realm_id,
                                const uint8_t digest[32]);

typedef struct tg_realm_lookup_opts {
    size_t cache_entries;       /* per cache (each worker's and the control thread's) */
    int64_t stale_ms;           /* realm_stale_ttl */
    int64_t timeout_ms;         /* a lookup unanswered this long fails (UNAVAILABLE) */
    size_t max_in_flight;       /* lookups outstanding at the CP at once */
    tg_realm_send_cb send;
    void *send_ud;
} tg_realm_lookup_opts_t;

/* A parked request. The owner embeds it, sets wake, and must call tg_realm_lookup_cancel if
 * the request ends while parked. When wake runs, outcome and consumer hold the answer; the
 * consumer (a reference owned by the waiter) is released by tg_realm_waiter_reset. */
typedef struct tg_realm_waiter {
    void (*wake)(struct tg_realm_waiter *w);
    tg_realm_outcome_t outcome;
    json_t *consumer;
    /* ---- owned by realm_lookup ---- */
    struct tg_realm_waiter *next, **pprev;
    struct tg_realm_pending *pending;
} tg_realm_waiter_t;

typedef struct tg_realm_lookup_stats {
    uint64_t lookups_sent, results, timeouts, unavailable, invalidations, overflow;
    size_t in_flight;
    tg_realm_cache_stats_t cache; /* the control thread's cache */
} tg_realm_lookup_stats_t;

typedef struct tg_realm_lookup tg_realm_lookup_t;

tg_realm_lookup_t *tg_realm_lookup_new(uv_loop_t *control_loop, int nworkers,
                                       const tg_realm_lookup_opts_t *opts);
/* After every worker detached and the control loop no longer runs its handles' callbacks
 * (its handles are closed here; run the loop once more to finish closing). */
void tg_realm_lookup_close(tg_realm_lookup_t *l);
void tg_realm_lookup_free(tg_realm_lookup_t *l);

/* ---- worker side ---- */
int tg_realm_lookup_attach(tg_realm_lookup_t *l, int worker, uv_loop_t *loop);
/* On the worker at stop, after every request parked on it ended (or cancelled). */
void tg_realm_lookup_detach(tg_realm_lookup_t *l, int worker);
/* The answer for (realm, digest): HIT (*consumer borrowed until the worker's next
 * realm_lookup call), UNKNOWN, UNAVAILABLE, or PENDING with w parked. */
tg_realm_outcome_t tg_realm_lookup_query(tg_realm_lookup_t *l, int worker, const char *realm_id,
                                         const uint8_t digest[32], tg_realm_waiter_t *w,
                                         const json_t **consumer);
void tg_realm_lookup_cancel(tg_realm_waiter_t *w);
void tg_realm_waiter_reset(tg_realm_waiter_t *w);

/* ---- control thread side ---- */
void tg_realm_lookup_ctl_connected(tg_realm_lookup_t *l, bool connected);
/* A RealmLookupResult: consumer_json NULL or empty when not found; error non-NULL when the
 * CP could not answer. ttl_s is the realm's ttl (found) or negative_ttl (not found). */
void tg_realm_lookup_ctl_result(tg_realm_lookup_t *l, uint64_t request_id, bool found,
                                const char *consumer_json, uint32_t ttl_s, const char *error);
/* An Invalidate: the named key digests and consumers of realm_id, or the whole realm
 * (everything, or realm_id with nothing named), or every realm (realm_id NULL/empty). */
void tg_realm_lookup_ctl_invalidate(tg_realm_lookup_t *l, const char *realm_id,
                                    const uint8_t (*digests)[32], size_t ndigests,
                                    const char *const *consumer_ids, size_t nconsumers,
                                    bool everything);
tg_realm_lookup_stats_t tg_realm_lookup_stats(const tg_realm_lookup_t *l);

#endif
