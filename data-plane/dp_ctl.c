/*
 * dp_ctl.c — the data plane's control socket commands and `tollgate dp reload`; see
 * dp_ctl.h.
 */
#include "dp_ctl.h"
#include "alloc.h"
#include "config.h"
#include "declarative.h"
#include "dp.h"
#include "dp_join.h"
#include "error.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const store_types[] = {"services", "routes", "plugins", "consumers",
                                          "keyauth_credentials"};

/* ---------------------------------------------------------------- status */

/* Entity counts of the store (O(1) each), the consumers changed since the last snapshot (their
 * keys are looked up with a second search, store.h) and the space the file takes. */
static json_t *store_json(tg_store_t *store)
{
    json_t *o = json_object();
    tg_store_reader_t r;
    if (store && tg_store_reader_init(store, &r) == 0) {
        if (tg_store_read_begin(&r) == 0) {
            for (size_t i = 0; i < sizeof(store_types) / sizeof(store_types[0]); i++) {
                size_t n = 0;
                if (tg_store_count(&r, store_types[i], &n) == 0)
                    json_object_set_new(o, store_types[i], json_integer((json_int_t)n));
            }
            size_t changed = 0;
            if (tg_store_changed_consumers(&r, &changed) == 0)
                json_object_set_new(o, "changed_consumers", json_integer((json_int_t)changed));
            tg_store_read_end(&r);
        }
        tg_store_reader_free(&r);
    }
    char *path = tg_config_prefix_path("dp/data.mdb");
    struct stat st;
    if (stat(path, &st) == 0)
        json_object_set_new(o, "data_bytes", json_integer((json_int_t)st.st_blocks * 512));
    free(path);
    return o;
}

/*
 * The figures GET /status reports (dp_status.c), from the same sources: the generation
 * served, the sync client's applied version and digest (a delta of consumers or credentials
 * changes them without a new generation), and the workers' counters.
 */
static void status_figures(tg_dp_status_t *st, json_t *out)
{
    const tg_generation_t *g = st->gen;
    tg_dp_served_t s = tg_dp_status_served(st); /* the same figures as /status */
    json_object_set_new(out, "configuration",
                        json_pack("{s:b,s:I,s:s?}", "loaded", s.loaded, "version",
                                  (json_int_t)s.version, "hash", s.loaded ? s.hash : NULL));
    json_object_set_new(out, "control_plane", tg_dp_status_cluster_json(st));
    json_object_set_new(out, "realms", tg_dp_status_realms_json(st));
    tg_metrics_t *ms[256];
    int n = st->nworkers < 256 ? st->nworkers : 256;
    for (int i = 0; i < n; i++)
        ms[i] = st->workers[i].metrics;
    tg_metrics_totals_t t;
    tg_metrics_totals(ms, (size_t)n, &t);
    json_object_set_new(out, "server",
                        json_pack("{s:I,s:I,s:I}", "total_requests", (json_int_t)t.requests,
                                  "connections_active", (json_int_t)t.conns_active,
                                  "connections_accepted", (json_int_t)t.conns_accepted));
    json_object_set_new(out, "workers", json_integer(st->nworkers));
    json_object_set_new(out, "mode", json_string(st->mode ? st->mode : "starting"));
    json_object_set_new(out, "reloads",
                        json_pack("{s:I,s:I}", "ok", (json_int_t)st->reloads_ok, "failed",
                                  (json_int_t)st->reloads_failed));
    json_object_set_new(out, "generation",
                        json_pack("{s:I,s:I,s:I}", "services",
                                  (json_int_t)(g ? json_array_size(g->services) : 0), "routes",
                                  (json_int_t)(g ? json_array_size(g->routes) : 0), "plugins",
                                  (json_int_t)(g ? json_array_size(g->plugins) : 0)));
}

/* Node and control plane ids: from the enrolment, else the configured node_id. */
static void identity(json_t *out)
{
    tg_dp_enrolment_t e = {0};
    char err[256];
    if (tg_dp_enrolment_load(&e, err, sizeof(err)) == 0) {
        json_object_set_new(out, "node_id", json_string(e.node_id));
        json_object_set_new(out, "control_plane_id", json_string(e.cp_id));
        tg_dp_enrolment_free(&e);
        return;
    }
    const char *id = tg_config_get(TG_CONF_node_id);
    json_object_set_new(out, "node_id", *id ? json_string(id) : json_null());
    json_object_set_new(out, "control_plane_id", json_null());
}

static void cmd_status(tg_ctl_request_t *r, const json_t *req, void *ud)
{
    tg_dp_ctl_t *c = ud;
    json_t *out = json_pack("{s:s,s:I,s:s,s:s,s:s?}", "role", "data_plane", "pid",
                            (json_int_t)getpid(), "tollgate_version", TG_VERSION, "prefix",
                            tg_config_get(TG_CONF_prefix), "declarative_config", c->decl_path);
    json_object_set_new(out, "uptime_seconds",
                        json_integer((json_int_t)((uv_hrtime() / 1000000 - c->started_ms) / 1000)));
    identity(out);
    status_figures(c->status, out);
    json_object_set_new(out, "store", store_json(c->store));
    tg_ctl_reply(r, out);
}

/* ---------------------------------------------------------------- reload */

/*
 * Why a file was refused, for the reply. The reload itself logged it already (dp_load.c),
 * but gives no text back; the refusal is rare, so re-reading the file to phrase it costs
 * nothing on the normal path. Nothing here writes anything.
 */
static json_t *refusal(const char *path)
{
    tg_declarative_t d;
    json_t *errors = NULL, *lines = json_array();
    if (tg_declarative_load_file(path, &d, &errors) != 0) {
        size_t i;
        json_t *e;
        json_array_foreach(errors, i, e)
        {
            char *line = tg_declarative_error_format(e);
            json_array_append_new(lines, json_string(line));
            free(line);
        }
        json_decref(errors);
        return lines;
    }
    char err[512] = "";
    tg_generation_t *g = NULL;
    int rc = tg_generation_build(d.entities, &g, err, sizeof(err));
    tg_declarative_free(&d);
    tg_generation_unref(g);
    if (rc != 0)
        json_array_append_new(lines, json_sprintf("%s: %s", path, err));
    else
        json_array_append_new(lines, json_sprintf("%s could not be stored (see the data plane's "
                                                  "log)",
                                                  path));
    return lines;
}

static void cmd_reload(tg_ctl_request_t *r, const json_t *req, void *ud)
{
    tg_dp_ctl_t *c = ud;
    if (!c->decl_path) {
        tg_ctl_reply_error(r, "nothing to reload: this data plane has no declarative_config "
                              "(it is in control-plane mode; the control plane pushes changes)");
        return;
    }
    int64_t before = c->status->gen ? c->status->gen->version : 0;
    int rc = c->reload(c->reload_ud);
    const tg_generation_t *g = c->status->gen;
    if (rc < 0) {
        json_t *errors = refusal(c->decl_path);
        size_t n = json_array_size(errors);
        json_t *out =
            json_pack("{s:b,s:s,s:o,s:s,s:I}", "ok", 0, "message",
                      n ? json_string_value(json_array_get(errors, 0)) : "refused", "errors",
                      errors, "file", c->decl_path, "config_version", (json_int_t)before);
        tg_ctl_reply(r, out);
        return;
    }
    tg_ctl_reply(r,
                 json_pack("{s:s,s:b,s:s,s:I,s:I,s:s}", "result", rc == 1 ? "unchanged" : "loaded",
                           "unchanged", rc == 1, "file", c->decl_path, "previous_version",
                           (json_int_t)before, "config_version", (json_int_t)(g ? g->version : 0),
                           "hash", g ? g->hash : ""));
}

/* ---------------------------------------------------------------- life cycle */

static const tg_ctl_command_t commands[] = {
    {"status", cmd_status},
    {"reload", cmd_reload},
};

int tg_dp_ctl_open(tg_dp_ctl_t *c)
{
    char err[1024];
    c->started_ms = uv_hrtime() / 1000000;
    int rc = tg_ctl_server_open(tg_config_get(TG_CONF_prefix), &c->server, err, sizeof(err));
    if (rc) TG_LOGE("dp", "%s", err);
    return rc;
}

int tg_dp_ctl_start(tg_dp_ctl_t *c, uv_loop_t *loop)
{
    return tg_ctl_server_start(c->server, loop, commands, sizeof(commands) / sizeof(commands[0]),
                               c);
}

void tg_dp_ctl_close(tg_dp_ctl_t *c)
{
    tg_ctl_server_close(c->server);
    c->server = NULL;
}

/* ---------------------------------------------------------------- `tollgate dp reload` */

int tg_dp_cmd_reload(int argc, char **argv)
{
    if (argc > 0) {
        fprintf(stderr, "usage: tollgate dp reload   (re-reads declarative_config of the data "
                        "plane running with this prefix)\n");
        return -TG_EINVAL;
    }
    json_t *req = json_pack("{s:s}", "command", "reload"), *reply = NULL;
    char err[1024];
    const char *prefix = tg_config_get(TG_CONF_prefix);
    /* A reload of a million-key file takes a while: wait longer than for status. */
    int rc = tg_ctl_call(prefix, req, 600000, &reply, err, sizeof(err));
    json_decref(req);
    if (rc) {
        fprintf(stderr, "tollgate: %s\n", err);
        return rc;
    }
    const char *msg = json_string_value(json_object_get(reply, "message"));
    const char *file = json_string_value(json_object_get(reply, "file"));
    long long version = (long long)json_integer_value(json_object_get(reply, "config_version"));
    if (!json_is_true(json_object_get(reply, "ok"))) {
        const json_t *errors = json_object_get(reply, "errors");
        if (json_array_size(errors)) {
            fprintf(stderr, "tollgate: reload refused:\n");
            size_t i;
            json_t *e;
            json_array_foreach(errors, i, e) fprintf(stderr, "  %s\n", json_string_value(e));
        } else {
            fprintf(stderr, "tollgate: reload refused: %s\n", msg ? msg : "failed");
        }
        if (file)
            fprintf(stderr, "tollgate: the data plane keeps serving configuration version %lld\n",
                    version);
        rc = -TG_ECONFIG;
    } else if (json_is_true(json_object_get(reply, "unchanged"))) {
        printf("%s is unchanged: still serving configuration version %lld\n", file, version);
    } else {
        printf("loaded %s: now serving configuration version %lld (was %lld)\n", file, version,
               (long long)json_integer_value(json_object_get(reply, "previous_version")));
    }
    json_decref(reply);
    return rc;
}
