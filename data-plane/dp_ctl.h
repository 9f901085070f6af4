/*
 * dp_ctl.h — the data plane's side of the control socket (lib/ctl_socket.h):
 *   status  node id, mode, applied config version and hash, control plane connection,
 *           store and generation sizes, traffic counters, reloads;
 *   reload  re-reads declarative_config through the same path as SIGHUP (dp.c) and answers
 *           the outcome: the new version, "unchanged", or why the file was refused (file
 *           position, entity and field; the old configuration keeps being served).
 * And `tollgate dp reload`, the client of the latter.
 *
 * Runs on the control thread's loop (the socket's requests are handed to it), so it reads
 * the data plane's state (dp_status.h) without locks. Borrows everything in tg_dp_ctl_t.
 */
#ifndef TG_DP_CTL_H
#define TG_DP_CTL_H

#include "ctl_socket.h"
#include "dp_status.h"
#include "store.h"

#include <stdint.h>
#include <uv.h>

/* dp.c's reload (the SIGHUP path): 0 a new configuration is served, 1 the file is unchanged,
 * -TG_ENOTFOUND without declarative_config, another negative code when refused. */
typedef int (*tg_dp_ctl_reload_fn)(void *ud);

typedef struct tg_dp_ctl {
    /* set by the caller */
    tg_dp_status_t *status; /* what /status reads */
    tg_store_t *store;      /* may be NULL until opened */
    const char *decl_path;  /* NULL: control-plane mode */
    tg_dp_ctl_reload_fn reload;
    void *reload_ud;
    /* private */
    tg_ctl_server_t *server;
    uint64_t started_ms;
} tg_dp_ctl_t;

/* Claims <prefix>/tollgate.sock before anything else of the prefix is touched: a second data
 * plane on the same prefix stops here (logged). 0 or the tg_ctl_server_open code. */
int tg_dp_ctl_open(tg_dp_ctl_t *c);
/* Serves the commands on `loop`. 0 or -TG_EIO. */
int tg_dp_ctl_start(tg_dp_ctl_t *c, uv_loop_t *loop);
/* Stops serving and removes the socket (loop thread; run the loop afterwards). Idempotent. */
void tg_dp_ctl_close(tg_dp_ctl_t *c);

#endif
