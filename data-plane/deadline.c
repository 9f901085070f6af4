/*
 * deadline.c — lazily re-armed timeouts; see deadline.h.
 */
#include "deadline.h"

static void on_fire(uv_timer_t *t)
{
    tg_deadline_t *d = t->data;
    d->armed = 0;
    if (!d->due) return; /* cleared meanwhile */
    uint64_t now = uv_now(t->loop);
    if (now < d->due) { /* moved later meanwhile: sleep for the rest */
        uv_timer_start(t, on_fire, d->due - now, 0);
        d->armed = d->due;
        return;
    }
    d->due = 0;
    d->cb(d);
}

void tg_deadline_init(tg_deadline_t *d, uv_loop_t *loop, tg_deadline_cb cb, void *data)
{
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->cb = cb;
    d->on_close = NULL;
    d->due = d->armed = 0;
    d->data = data;
}

void tg_deadline_set(tg_deadline_t *d, uint64_t ms)
{
    uint64_t due = uv_now(d->timer.loop) + ms;
    d->due = due ? due : 1;                     /* 0 means cleared */
    if (d->armed && d->armed <= d->due) return; /* fires in time; on_fire sleeps again */
    uv_timer_start(&d->timer, on_fire, ms, 0);
    d->armed = d->due;
}

void tg_deadline_clear(tg_deadline_t *d)
{
    d->due = 0;
}

static void on_closed(uv_handle_t *h)
{
    tg_deadline_t *d = h->data;
    if (d->on_close) d->on_close(d);
}

void tg_deadline_close(tg_deadline_t *d, tg_deadline_cb cb)
{
    d->due = 0;
    d->on_close = cb;
    uv_close((uv_handle_t *)&d->timer, on_closed);
}
