/*
 * proxy_realm.c — a request's realm key lookups (identity.h realm_key) and parking the
 * connection while one is answered.
 *
 * key-auth asks realm_key; on a worker cache hit it answers at once. On a miss the request's
 * waiter is parked in realm_lookup, the plugin returns TG_FLOW_WAIT and the connection waits
 * (TG_PX_WAITING, client reads off: nothing is expected from it now). When the answer comes
 * the wake callback runs the access phase again from the same plugin; its second realm_key
 * call for the same (realm, digest) is answered from the waiter. A lookup is bounded by the
 * lookup timeout (UNAVAILABLE), so a parked connection never waits forever; a connection that
 * closes meanwhile cancels its waiter in tg_proxy_realm_end.
 */
#include "proxy_int.h"

#include "error.h"
#include "log.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static tg_proxy_conn_t *conn_of(tg_realm_waiter_t *w)
{
    return (tg_proxy_conn_t *)((char *)w - offsetof(tg_proxy_conn_t, x.realm_wait));
}

/* Answers handed to a plugin stay alive until the exchange ends (identity.h's contract). */
static json_t *hold(tg_proxy_exchange_t *x, json_t *answer)
{
    if (!x->realm_answers) x->realm_answers = json_array();
    json_array_append(x->realm_answers, answer);
    return answer;
}

static int outcome_rc(tg_proxy_exchange_t *x, tg_realm_outcome_t o, json_t *answer, json_t **out)
{
    switch (o) {
    case TG_REALM_OUT_HIT:
        *out = hold(x, answer);
        return 0;
    case TG_REALM_OUT_UNKNOWN:
        return -TG_ENOTFOUND;
    case TG_REALM_OUT_PENDING:
        return -TG_EAGAIN;
    case TG_REALM_OUT_UNAVAILABLE:
        break;
    }
    return -TG_EDBDOWN;
}

static struct tg_proxy_realm_seen *seen_find(tg_proxy_exchange_t *x, const char *realm_id,
                                             const uint8_t d[32])
{
    for (int i = 0; i < x->nrealm_seen; i++) {
        struct tg_proxy_realm_seen *s = &x->realm_seen[i];
        if (memcmp(s->digest, d, 32) == 0 && strcmp(s->realm_id, realm_id) == 0) return s;
    }
    return NULL;
}

/* Remembers a final answer and hands it out. */
static int settle(tg_proxy_exchange_t *x, const char *realm_id, const uint8_t d[32],
                  tg_realm_outcome_t o, json_t *answer, json_t **out)
{
    int rc = outcome_rc(x, o, answer, out);
    if (x->nrealm_seen < TG_PROXY_REALMS_SEEN) {
        struct tg_proxy_realm_seen *s = &x->realm_seen[x->nrealm_seen++];
        snprintf(s->realm_id, sizeof s->realm_id, "%s", realm_id);
        memcpy(s->digest, d, 32);
        s->outcome = o;
        s->answer = rc == 0 ? *out : NULL;
    }
    return rc;
}

static int realm_key(void *ud, const char *realm_id, const uint8_t d[32], json_t **answer)
{
    tg_proxy_conn_t *c = ud;
    tg_proxy_exchange_t *x = &c->x;
    struct tg_proxy_realm_seen *s = seen_find(x, realm_id, d);
    if (s) {
        *answer = s->answer;
        return s->outcome == TG_REALM_OUT_HIT ? 0 : s->outcome == TG_REALM_OUT_UNKNOWN ? -TG_ENOTFOUND : -TG_EDBDOWN;
    }
    if (x->realm_parked && memcmp(x->realm_digest, d, 32) == 0 && strcmp(x->realm_id, realm_id) == 0) {
        /* the answer we were parked for */
        x->realm_parked = false;
        int rc = settle(x, realm_id, d, x->realm_wait.outcome, x->realm_wait.consumer, answer);
        tg_realm_waiter_reset(&x->realm_wait);
        return rc;
    }
    tg_realm_waiter_reset(&x->realm_wait);
    x->realm_parked = false;
    const json_t *cached = NULL;
    tg_realm_outcome_t o = tg_realm_lookup_query(c->w->opts.realms, c->w->index, realm_id, d,
                                                 &x->realm_wait, &cached);
    if (o != TG_REALM_OUT_PENDING) return settle(x, realm_id, d, o, (json_t *)cached, answer);
    x->realm_parked = true;
    snprintf(x->realm_id, sizeof x->realm_id, "%s", realm_id);
    memcpy(x->realm_digest, d, 32);
    return -TG_EAGAIN;
}

static void on_answer(tg_realm_waiter_t *w)
{
    tg_proxy_conn_t *c = conn_of(w);
    if (c->state != TG_PX_WAITING) return; /* cannot happen: ending the exchange cancels */
    c->state = c->x.wait_resume;
    if (c->x.wait_was_reading && tg_proxy_read_again(c) != 0) {
        tg_proxy_abort(c, "client connection failed");
        return;
    }
    tg_proxy_run_access(c);
}

void tg_proxy_realm_attach(tg_proxy_conn_t *c)
{
    if (!c->w->opts.realms) return;
    c->x.ids.source.realm_key = realm_key;
    c->x.ids.source.realm_ud = c;
    c->x.realm_wait.wake = on_answer;
}

void tg_proxy_realm_park(tg_proxy_conn_t *c)
{
    if (!c->x.realm_parked) { /* a plugin said WAIT without a lookup: a plugin bug */
        TG_LOGE("proxy", "a plugin waited on nothing (request %s)", c->x.request_id);
        tg_proxy_respond_error(c, 500, "An unexpected error occurred");
        return;
    }
    c->x.wait_resume = c->state;
    c->x.wait_was_reading = c->s.reading;
    c->state = TG_PX_WAITING;
    tg_stream_read_stop(&c->s);
}

void tg_proxy_realm_end(tg_proxy_exchange_t *x)
{
    tg_realm_waiter_reset(&x->realm_wait);
    x->realm_parked = false;
    x->nrealm_seen = 0;
    json_decref(x->realm_answers);
    x->realm_answers = NULL;
}
