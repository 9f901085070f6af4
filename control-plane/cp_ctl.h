/*
 * cp_ctl.h — the control plane's side of the control socket (lib/ctl_socket.h):
 *   status  this node (pid, node id, hostname, uptime), PostgreSQL reachability and the Admin
 *           API counters (the handler of GET /status), the config version of every control
 *           plane, and every data plane with its version, lag, last seen and sync status (the
 *           handler of GET /clustering/data-planes).
 *
 * The request arrives on the CP's loop; the database work runs as a job on the Admin API's
 * worker pool (workers.h), through the same Admin API handlers, and the reply is sent from
 * the job's `done` on the loop. Borrows the tg_admin_t.
 */
#ifndef TG_CP_CTL_H
#define TG_CP_CTL_H

#include "admin.h"
#include "ctl_socket.h"

#include <stdint.h>
#include <uv.h>

typedef struct tg_cp_ctl {
    tg_admin_t *admin; /* set by the caller: workers, control plane and node ids, counters */
    /* private */
    tg_ctl_server_t *server;
    uint64_t started_ms;
} tg_cp_ctl_t;

/* Claims <prefix>/tollgate.sock before the prefix is used (a second CP on it stops here,
 * before touching its embedded PostgreSQL). 0 or the tg_ctl_server_open code (logged). */
int tg_cp_ctl_open(tg_cp_ctl_t *c);
/* Serves the commands on `loop` (admin->workers must be running). 0 or -TG_EIO. */
int tg_cp_ctl_start(tg_cp_ctl_t *c, uv_loop_t *loop);
/* Stops serving and removes the socket (loop thread). Call before stopping the workers: a
 * status job still queued is then answered into the void. Idempotent. */
void tg_cp_ctl_close(tg_cp_ctl_t *c);

#endif
