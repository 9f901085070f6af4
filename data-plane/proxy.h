/*
 * proxy.h — the proxy's client connections on a worker (DESIGN §7, kong-compat §5).
 *
 * A connection reads a request head with the strict parser, answers malformed ones itself
 * (400/414/431/501/505 with Kong's JSON error and request id, then closes), routes the
 * request, runs the plugins' access phase, proxies it over a pooled upstream connection
 * with the body streamed both ways, and keeps the client connection alive between
 * requests. proxy.c holds the client side, proxy_upstream.c the way to the upstream and
 * proxy_response.c the way back; proxy_int.h is their shared state.
 *
 * Ownership: the worker's list owns its connections; each frees itself once its handles
 * closed. Threads: everything runs on the worker's loop.
 */
#ifndef TG_PROXY_H
#define TG_PROXY_H

#include "worker.h"

/* Accepts a pending connection on listener `l` of worker `w`. */
void tg_proxy_accept(tg_worker_t *w, tg_worker_listener_t *l);

/* Graceful stop: closes idle connections now; busy ones close after their response. */
void tg_proxy_drain(tg_worker_t *w);

/* End of the drain period: closes every connection still open. */
void tg_proxy_close_all(tg_worker_t *w);

#endif
