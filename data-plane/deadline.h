/*
 * deadline.h — a timeout that is cheap to move, for connections that set and clear their
 * timeouts several times per request.
 *
 * Each libuv timer start or stop is a heap operation. A deadline keeps one libuv timer and
 * re-arms it only when the deadline moves earlier than the time the timer fires at; moving
 * it later or clearing it only records the new due time, and a timer that fires before the
 * deadline sleeps again for the rest. The callback runs at the due time, as it would with
 * uv_timer_start, and never for a cleared deadline.
 *
 * Ownership: embedded in its owner, which closes it with tg_deadline_close and frees the
 * memory only after the close callback (libuv owns the handle until then). Threads: the
 * loop the deadline was initialised on.
 */
#ifndef TG_DEADLINE_H
#define TG_DEADLINE_H

#include <stdint.h>
#include <uv.h>

typedef struct tg_deadline tg_deadline_t;
typedef void (*tg_deadline_cb)(tg_deadline_t *d);

struct tg_deadline {
    uv_timer_t timer;
    tg_deadline_cb cb, on_close;
    uint64_t due;   /* loop ms of the deadline; 0 = cleared */
    uint64_t armed; /* loop ms the libuv timer fires at; 0 = not armed */
    void *data;     /* the owner's */
};

void tg_deadline_init(tg_deadline_t *d, uv_loop_t *loop, tg_deadline_cb cb, void *data);
/* Sets the deadline `ms` milliseconds after the loop's current time. */
void tg_deadline_set(tg_deadline_t *d, uint64_t ms);
/* No callback until the next set. */
void tg_deadline_clear(tg_deadline_t *d);
/* Closes the timer; `cb` runs once libuv released it. */
void tg_deadline_close(tg_deadline_t *d, tg_deadline_cb cb);

#endif
