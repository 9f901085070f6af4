/*
 * upstream_pool.c — keep-alive upstream connections of one worker; see upstream_pool.h.
 */
#include "upstream_pool.h"
#include "alloc.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDLE_TIMEOUT_MS 60000
#define MAX_REQUESTS 10000
#define MAX_IDLE 512
#define SWEEP_MS 1000

struct tg_upstream_pool {
    uv_loop_t *loop;
    uv_timer_t sweep;
    tg_upconn_t *head, *tail; /* most recently used at the head */
    unsigned nidle;
};

static void on_sweep(uv_timer_t *t);

tg_upstream_pool_t *tg_upstream_pool_new(uv_loop_t *loop)
{
    tg_upstream_pool_t *p = tg_calloc(1, sizeof(*p));
    p->loop = loop;
    uv_timer_init(loop, &p->sweep);
    p->sweep.data = p;
    uv_timer_start(&p->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&p->sweep); /* an idle pool must not keep a stopping loop alive */
    return p;
}

static void unlink_idle(tg_upconn_t *c)
{
    tg_upstream_pool_t *p = c->pool;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        p->tail = c->prev;
    c->prev = c->next = NULL;
    c->idle = false;
    p->nidle--;
}

static void on_conn_closed(tg_stream_t *s)
{
    free((tg_upconn_t *)s);
}

void tg_upstream_pool_discard(tg_upconn_t *c)
{
    if (c->idle) unlink_idle(c);
    tg_stream_close(&c->s, on_conn_closed);
}

static void on_pool_closed(uv_handle_t *h)
{
    free(h->data);
}

void tg_upstream_pool_free(tg_upstream_pool_t *p)
{
    if (!p) return;
    while (p->head)
        tg_upstream_pool_discard(p->head);
    uv_close((uv_handle_t *)&p->sweep, on_pool_closed);
}

/* Any byte or EOF on an idle connection makes it unusable. */
static void on_idle_read(tg_stream_t *s, int status, const char *data, size_t len)
{
    tg_upstream_pool_discard((tg_upconn_t *)s);
}

static void on_sweep(uv_timer_t *t)
{
    tg_upstream_pool_t *p = t->data;
    uint64_t now = uv_now(p->loop);
    while (p->tail && now - p->tail->idle_since >= IDLE_TIMEOUT_MS)
        tg_upstream_pool_discard(p->tail);
}

tg_upconn_t *tg_upstream_pool_take(tg_upstream_pool_t *p, const char *key, void *owner)
{
    for (tg_upconn_t *c = p->head; c; c = c->next) {
        if (strcmp(c->key, key) != 0) continue;
        unlink_idle(c);
        tg_stream_read_stop(&c->s);
        c->s.owner = owner;
        c->reused = true;
        return c;
    }
    return NULL;
}

tg_upconn_t *tg_upstream_pool_conn_new(tg_upstream_pool_t *p, const char *key, void *owner)
{
    tg_upconn_t *c = tg_calloc(1, sizeof(*c));
    c->pool = p;
    c->s.owner = owner;
    snprintf(c->key, sizeof(c->key), "%s", key);
    return c;
}

void tg_upstream_pool_put(tg_upconn_t *c)
{
    tg_upstream_pool_t *p = c->pool;
    c->requests++;
    c->s.owner = NULL;
    if (c->s.failed || c->s.closing || c->requests >= MAX_REQUESTS ||
        tg_stream_read_start(&c->s, on_idle_read) != 0) {
        tg_upstream_pool_discard(c);
        return;
    }
    if (c->s.closing) return; /* TLS delivered buffered bytes at once: already discarded */
    c->idle = true;
    c->idle_since = uv_now(p->loop);
    c->prev = NULL;
    c->next = p->head;
    if (p->head)
        p->head->prev = c;
    else
        p->tail = c;
    p->head = c;
    p->nidle++;
    if (p->nidle > MAX_IDLE) tg_upstream_pool_discard(p->tail);
}

unsigned tg_upstream_pool_idle(const tg_upstream_pool_t *p)
{
    return p->nidle;
}
