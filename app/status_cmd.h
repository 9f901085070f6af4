/*
 * status_cmd.h — `tollgate status [-c FILE] [--json] [--timeout SECONDS]`: asks the CP or DP
 * running with this configuration's `prefix` for its state over the control socket
 * (lib/ctl_socket.h) and prints it, readable by default, as JSON with --json.
 * Main thread of the CLI; nothing is kept.
 */
#ifndef TG_STATUS_CMD_H
#define TG_STATUS_CMD_H

/* Returns 0, or a negative TG_E code after printing why to stderr. */
int tg_status_cmd_run(int argc, char **argv);

#endif
