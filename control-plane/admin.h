/*
 * admin.h — the Kong-compatible Admin API of the control plane.
 *
 * Requests arrive on the loop thread from lib/http_server; each becomes a
 * job on the worker pool (control-plane/workers.h), where it is decoded,
 * authenticated (HTTPS listeners require an admin token), routed and answered
 * from PostgreSQL through the DAO; the response is sent back on the loop.
 * The tg_admin_t is created and freed on the loop thread and read-only while
 * requests run, except for atomic counters.
 */
#ifndef TG_ADMIN_H
#define TG_ADMIN_H

#include "http_server.h"
#include "workers.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct tg_admin {
    tg_workers_t *workers;
    char cp_id[37];               /* the `default` control plane */
    uint8_t keyring[32];
    char node_id[37];
    char hostname[256];
    atomic_ullong total_requests;
    atomic_int active_requests;
} tg_admin_t;

/* The tg_http_request_cb for a plain listener (no token needed) ... */
void tg_admin_on_request(tg_http_exchange_t *x, const tg_http_request_t *req, void *admin);
/* ... and for an HTTPS listener (Authorization: Bearer <admin token> required). */
void tg_admin_on_request_tls(tg_http_exchange_t *x, const tg_http_request_t *req, void *admin);
/* ... and for status_listen: only /status, /status/ready and /metrics. */
void tg_admin_on_status_request(tg_http_exchange_t *x, const tg_http_request_t *req, void *admin);

#endif
