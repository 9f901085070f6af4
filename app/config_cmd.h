/*
 * config_cmd.h — `tollgate config validate|diff|sync|dump`: a client of a
 * control plane's Admin API that applies Kong's declarative files
 * (`_format_version: "3.0"`, decK's shape) the way decK does.
 *
 * Each function is a command of app/main.c's table: it takes the arguments
 * after the verb, prints to stdout/stderr and returns 0 or a negative -TG_E*
 * code (the process exits non-zero). Single-threaded, blocking.
 */
#ifndef TG_CONFIG_CMD_H
#define TG_CONFIG_CMD_H

int tg_config_cmd_validate(int argc, char **argv);
int tg_config_cmd_diff(int argc, char **argv);
int tg_config_cmd_sync(int argc, char **argv);
int tg_config_cmd_dump(int argc, char **argv);

#endif
