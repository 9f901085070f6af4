/*
 * main.c — the `tollgate` binary: one visible table of commands.
 *
 * Every command is a function in a plane's core library; this file only
 * loads the configuration and dispatches. It is the only place that exits.
 */
#include "config.h"
#include "config_cmd.h"
#include "cp.h"
#include "dp.h"
#include "log.h"
#include "status_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*command_fn)(int argc, char **argv);

static const struct command {
    const char *group, *verb;
    command_fn run;
    const char *help;
} commands[] = {
    {"cp", "start", tg_cp_cmd_start, "run the control plane in the foreground"},
    {"cp", "migrate", tg_cp_cmd_migrate, "apply pending database migrations"},
    {"cp", "admin-token", tg_cp_cmd_admin_token,
     "create [--name N] | list | revoke ID: admin tokens for the HTTPS Admin API"},
    {"cp", "token", tg_cp_cmd_token,
     "create [--control-plane ID] [--ttl 24h] [--uses N] | list | revoke ID: data plane join tokens"},
    {"dp", "start", tg_dp_cmd_start,
     "run a data plane in the foreground (standalone with declarative_config)"},
    {"dp", "reload", tg_dp_cmd_reload,
     "make the running data plane re-read its declarative_config"},
    {"dp", "join", tg_dp_cmd_join,
     "HOST:PORT --token T [--ca-hash sha256:H] [--start]: enrol this data plane"},
    {"config", "validate", tg_config_cmd_validate, "FILE: check a declarative file offline"},
    {"config", "diff", tg_config_cmd_diff,
     "FILE [--admin-url URL] [--select-tag T]: show what sync would change"},
    {"config", "sync", tg_config_cmd_sync,
     "FILE [--admin-url URL] [--select-tag T]: make the Admin API match the file"},
    {"config", "dump", tg_config_cmd_dump, "FILE [--admin-url URL]: write the CP's config as YAML"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: tollgate [-c tollgate.conf] <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %s %-12s %s\n", commands[i].group, commands[i].verb, commands[i].help);
    fprintf(out, "  status           [--json]: state of the CP or DP running with this prefix\n");
    fprintf(out, "  version          print the version\n");
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    int i = 1;
    if (i + 1 < argc && (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--conf") == 0)) {
        conf_path = argv[i + 1];
        i += 2;
    }
    if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
        usage(i >= argc ? stderr : stdout);
        return i >= argc ? 2 : 0;
    }
    if (strcmp(argv[i], "version") == 0 || strcmp(argv[i], "--version") == 0) {
        printf("tollgate %s\n", TG_VERSION);
        return 0;
    }
    char err[512];
    if (tg_config_load(conf_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "tollgate: %s\n", err);
        return 1;
    }
    if (tg_log_set_level_name(tg_config_get(TG_CONF_log_level)) != 0) {
        fprintf(stderr, "tollgate: log_level must be one of debug, info, notice, warn, error\n");
        return 1;
    }
    /* One word, no group: asks whichever plane runs with this prefix (control socket). */
    if (strcmp(argv[i], "status") == 0) return tg_status_cmd_run(argc - i - 1, argv + i + 1) == 0 ? 0 : 1;
    for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
        if (strcmp(argv[i], commands[c].group) == 0 && i + 1 < argc &&
            strcmp(argv[i + 1], commands[c].verb) == 0)
            return commands[c].run(argc - i - 2, argv + i + 2) == 0 ? 0 : 1;
    }
    fprintf(stderr, "tollgate: unknown command '%s%s%s'\n", argv[i], i + 1 < argc ? " " : "",
            i + 1 < argc ? argv[i + 1] : "");
    usage(stderr);
    return 2;
}
