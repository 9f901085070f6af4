/*
 * dp.h — the data plane's commands (entry points called by app/main.c).
 *
 * Each takes the arguments after `tollgate dp <verb>` and returns 0 on success or a
 * negative TG_E code after logging why. They run on the main thread, which becomes the
 * data plane's control thread, and own everything they start.
 */
#ifndef TG_DP_H
#define TG_DP_H

/*
 * `tollgate dp start`: the data plane in the foreground. With `declarative_config` it runs
 * standalone (DB-less): the file is loaded into the store and served, SIGHUP reloads it.
 * Without, it serves whatever the store holds at once and, when enrolled (<prefix>/cluster,
 * `dp join`) or given `cluster_control_plane`, keeps it in sync with the control plane
 * (sync_client.h).
 * SIGTERM/SIGINT stop it gracefully (in-flight requests finish, bounded).
 */
int tg_dp_cmd_start(int argc, char **argv);

/* `tollgate dp reload` (dp_ctl.c): asks the data plane running with this prefix, over its
 * control socket, to re-read declarative_config as SIGHUP does, and prints the outcome;
 * non-zero when the file was refused (the old configuration stays). */
int tg_dp_cmd_reload(int argc, char **argv);

/*
 * `tollgate dp join HOST:PORT --token T [--ca-hash sha256:H] [--start]` (dp_join.c): enrols
 * this data plane with a control plane and writes its key, certificate, the cluster CA and
 * the CP endpoints under <prefix>/cluster/. An already enrolled prefix is left alone. With
 * --start, then runs the data plane as `dp start` does.
 */
int tg_dp_cmd_join(int argc, char **argv);

#endif
