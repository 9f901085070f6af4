/*
 * cp.h — the control plane's commands (entry points called by app/main.c).
 *
 * Each takes the arguments after `tollgate cp <verb>` and returns 0 on
 * success or a negative TG_E code after printing a message to stderr. They
 * run on the main thread and own everything they start.
 */
#ifndef TG_CP_H
#define TG_CP_H

int tg_cp_cmd_start(int argc, char **argv);
int tg_cp_cmd_migrate(int argc, char **argv);
int tg_cp_cmd_admin_token(int argc, char **argv);
/* `cp token create | list | revoke`: join tokens for data planes (cp_token.c). */
int tg_cp_cmd_token(int argc, char **argv);

#endif
