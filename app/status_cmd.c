/*
 * status_cmd.c — `tollgate status`; see status_cmd.h. The process answers with JSON
 * (data-plane/dp_ctl.c, control-plane/cp_ctl.c); this file only renders it.
 */
#include "status_cmd.h"
#include "config.h"
#include "ctl_socket.h"
#include "error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *str(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

static long long num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long long)json_integer_value(v)
           : json_is_real(v)  ? (long long)json_real_value(v)
                              : 0;
}

/* "12s ago" style, from unix seconds (0/absent: "never"). */
static void ago(long long when, char *out, size_t n)
{
    if (when <= 0) {
        snprintf(out, n, "never");
        return;
    }
    long long d = (long long)time(NULL) - when;
    if (d < 0) d = 0;
    if (d < 120)
        snprintf(out, n, "%llds ago", d);
    else if (d < 7200)
        snprintf(out, n, "%lldm ago", d / 60);
    else
        snprintf(out, n, "%lldh ago", d / 3600);
}

static void print_header(const json_t *r, const char *what)
{
    printf("Tollgate %s (pid %lld, tollgate %s), up %llds\n", what, num(r, "pid"),
           str(r, "tollgate_version", "?"), num(r, "uptime_seconds"));
    printf("  prefix:          %s\n", str(r, "prefix", "?"));
    printf("  node id:         %s\n", str(r, "node_id", "- (not enrolled)"));
}

static void print_dp(const json_t *r)
{
    print_header(r, "data plane");
    const json_t *conf = json_object_get(r, "configuration");
    printf("  mode:            %s", str(r, "mode", "?"));
    if (json_is_string(json_object_get(r, "declarative_config")))
        printf(" (declarative_config %s)", str(r, "declarative_config", ""));
    printf("\n");
    if (json_is_true(json_object_get(conf, "loaded")))
        printf("  configuration:   version %lld, hash %.16s...\n", num(conf, "version"),
               str(conf, "hash", ""));
    else
        printf("  configuration:   none loaded yet\n");
    const json_t *cp = json_object_get(r, "control_plane");
    if (!json_is_object(cp))
        printf("  control plane:   none (standalone)\n");
    else if (json_is_true(json_object_get(cp, "connected")))
        printf("  control plane:   connected to %s (applied version %lld)\n",
               str(cp, "endpoint", "?"), num(cp, "applied_version"));
    else
        printf("  control plane:   not connected (%s%s%s)\n", str(cp, "endpoint", "?"),
               json_is_string(json_object_get(cp, "last_error")) ? ": " : "",
               str(cp, "last_error", ""));
    const json_t *st = json_object_get(r, "store");
    long long bytes = num(st, "data_bytes");
    printf("  store:           %lld services, %lld routes, %lld plugins, %lld consumers, "
           "%lld key-auth credentials; %.1f %s on disk\n",
           num(st, "services"), num(st, "routes"), num(st, "plugins"), num(st, "consumers"),
           num(st, "keyauth_credentials"), bytes < 1048576 ? bytes / 1024.0 : bytes / 1048576.0,
           bytes < 1048576 ? "KiB" : "MiB");
    if (num(st, "changed_consumers") > 0)
        printf("                   %lld consumers changed by deltas since the last snapshot "
               "(their keys take a second lookup)\n",
               num(st, "changed_consumers"));
    const json_t *g = json_object_get(r, "generation");
    printf("  serving:         %lld services, %lld routes, %lld plugins compiled\n",
           num(g, "services"), num(g, "routes"), num(g, "plugins"));
    const json_t *caches = json_object_get(r, "caches");
    if (json_is_object(caches))
        printf("  caches:          identity %lld entries per worker (at most)\n",
               num(caches, "identity_entries_per_worker"));
    const json_t *srv = json_object_get(r, "server");
    printf("  traffic:         %lld workers, %lld requests, %lld connections active\n",
           num(r, "workers"), num(srv, "total_requests"), num(srv, "connections_active"));
    const json_t *rl = json_object_get(r, "reloads");
    printf("  reloads:         %lld ok, %lld failed\n", num(rl, "ok"), num(rl, "failed"));
}

static void print_cp(const json_t *r)
{
    print_header(r, "control plane");
    printf("  database:        %s\n",
           json_is_true(json_object_get(json_object_get(r, "database"), "reachable"))
               ? "reachable"
               : "UNREACHABLE");
    const json_t *srv = json_object_get(r, "server");
    printf("  admin requests:  %lld total, %lld active\n", num(srv, "total_requests"),
           num(srv, "requests_active"));
    printf("  control planes:\n");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r, "control_planes"), i, c)
        printf("    %-20s %s  config version %lld\n", str(c, "name", "?"), str(c, "id", "?"),
               num(c, "config_version"));
    const json_t *dps = json_object_get(r, "data_planes");
    printf("  data planes:     %zu\n", json_array_size(dps));
    if (!json_array_size(dps)) return;
    printf("    %-36s  %-9s  %-7s  %-12s  %-10s  %s\n", "NODE ID", "VERSION", "LAG", "LAST SEEN",
           "SYNC", "HOSTNAME");
    json_t *d;
    json_array_foreach(dps, i, d)
    {
        char seen[32], lag[32];
        ago(num(d, "last_seen"), seen, sizeof(seen));
        snprintf(lag, sizeof(lag), "%lld", num(d, "lag_versions"));
        printf("    %-36s  %-9lld  %-7s  %-12s  %-10s  %s%s\n", str(d, "id", "?"),
               num(d, "config_version"), lag, seen, str(d, "sync_status", "-"),
               str(d, "hostname", "-"),
               json_is_number(json_object_get(d, "revoked_at")) ? " (revoked)" : "");
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: tollgate status [-c tollgate.conf] [--json] [--timeout SECONDS]\n");
    return -TG_EINVAL;
}

int tg_status_cmd_run(int argc, char **argv)
{
    bool as_json = false;
    int timeout_ms = 10000;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--conf") == 0) && i + 1 < argc) {
            char err[512]; /* `tollgate status -c FILE` as well as `tollgate -c FILE status` */
            if (tg_config_load(argv[++i], err, sizeof(err)) != 0) {
                fprintf(stderr, "tollgate: %s\n", err);
                return -TG_ECONFIG;
            }
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            long s = strtol(argv[++i], &end, 10);
            if (*end || s < 1 || s > 3600) return usage();
            timeout_ms = (int)s * 1000;
        } else {
            return usage();
        }
    }
    json_t *req = json_pack("{s:s}", "command", "status"), *reply = NULL;
    char err[1024];
    int rc = tg_ctl_call(tg_config_get(TG_CONF_prefix), req, timeout_ms, &reply, err, sizeof(err));
    json_decref(req);
    if (rc) {
        fprintf(stderr, "tollgate: %s\n", err);
        return rc;
    }
    if (!json_is_true(json_object_get(reply, "ok"))) {
        fprintf(stderr, "tollgate: status: %s\n", str(reply, "message", "failed"));
        json_decref(reply);
        return -TG_EIO;
    }
    if (as_json) {
        json_object_del(reply, "ok");
        json_dumpf(reply, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("\n");
    } else if (strcmp(str(reply, "role", ""), "control_plane") == 0) {
        print_cp(reply);
    } else {
        print_dp(reply);
    }
    json_decref(reply);
    return 0;
}
