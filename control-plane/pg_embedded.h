/*
 * pg_embedded.h — the control plane's private PostgreSQL (DESIGN.md §1, "Embedded default").
 *
 * A CP started with no `pg_host` runs its own PostgreSQL server from the system's binaries:
 *
 *   <prefix>/pg/            owned by the server's user, mode 0700
 *   <prefix>/pg/data/       the cluster (initdb on first run: UTF8, C locale)
 *   <prefix>/pg/run/        the server's unix socket; no TCP listener at all
 *   <prefix>/pg/postgres.log  initdb's and the server's output
 *   <prefix>/pg/lock        flock(2)ed by the process that owns the running server
 *
 * Authentication is `trust` over the unix socket only; the directory permissions are the access
 * control. The cluster's bootstrap superuser is `postgres`; the CP connects as the ordinary role
 * `tollgate`, which owns the database `tollgate`.
 *
 * PostgreSQL refuses to run as root: when the calling process is root, initdb and postgres run
 * as the unprivileged system user `run_as_user` (created with useradd when missing). Otherwise
 * they run as the calling user and `run_as_user` is ignored.
 *
 * The server runs in its own process group (a terminal's Ctrl-C reaches the CP only, which then
 * stops the server in order) and receives SIGINT (fast shutdown) if the thread that started it
 * dies, so a killed CP does not leave it behind.
 *
 * When another live process already owns the server for this prefix (it holds the lock), start
 * attaches to that server instead: the handle then does not own it and stop only frees it. This
 * lets CLI commands (`cp migrate`, `cp admin-token`) share a running CP's embedded server.
 *
 * Threading: call start and stop from the same thread (the main thread), before other threads
 * fork anything. The handle is owned by the caller and freed by tg_pg_embedded_stop().
 */
#ifndef TG_PG_EMBEDDED_H
#define TG_PG_EMBEDDED_H

#include <stddef.h>

typedef struct tg_pg_embedded tg_pg_embedded_t;

/*
 * Starts (or attaches to) the embedded server under <prefix>/pg: creates the directories and,
 * on first run, the cluster; starts `postgres` unless this prefix's server is already owned by a
 * live process; waits (bounded) until it accepts connections; creates the role and database
 * `tollgate` when missing. A stale postmaster.pid left by a crash does not block the start; an
 * orphaned server of this prefix (no live owner) is shut down and restarted.
 *
 * On success returns 0, stores the handle in *out and a libpq conninfo string
 * ("host=<prefix>/pg/run port=5432 dbname=tollgate user=tollgate") in conninfo[cap].
 * On failure returns -TG_ENOTFOUND (no PostgreSQL binaries installed), -TG_ETIMEOUT (server did
 * not become ready), -TG_ETOOBIG (prefix path too long for a unix socket), -TG_ESYS, -TG_EIO or
 * -TG_EDB, with a one-line reason in err[errlen] (the server's last log line when it failed),
 * and leaves nothing running.
 */
int tg_pg_embedded_start(const char *prefix, const char *run_as_user, tg_pg_embedded_t **out,
                         char *conninfo, size_t cap, char *err, size_t errlen);

/*
 * Stops an owned server with a fast shutdown (SIGINT to the postmaster), waits for it to exit
 * (bounded; escalates to an immediate shutdown, then SIGKILL), releases the lock and frees the
 * handle. For an attached handle it only frees. Returns 0, or -TG_ETIMEOUT when the server had
 * to be killed. NULL is accepted.
 */
int tg_pg_embedded_stop(tg_pg_embedded_t *pg);

#endif
