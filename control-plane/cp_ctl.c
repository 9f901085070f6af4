/*
 * cp_ctl.c — the control plane's control socket commands; see cp_ctl.h.
 */
#include "cp_ctl.h"
#include "admin_request.h"
#include "alloc.h"
#include "config.h"
#include "dao.h"
#include "error.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct status_job {
    tg_job_t job; /* first: the pool hands back this pointer */
    tg_cp_ctl_t *ctl;
    tg_ctl_request_t *req;
    json_t *reply; /* built on the worker, sent from done */
} status_job_t;

/*
 * Runs one GET through the Admin API's own handler (`route`) on this worker's connection, so
 * the status shows exactly what the Admin API would. Returns the body (new reference) or NULL
 * with *status set.
 */
static json_t *admin_get(tg_cp_ctl_t *c, tg_db_t *db, int (*route)(tg_admin_req_t *),
                         const char *seg0, const char *seg1, int *status)
{
    char s0[32], s1[32];
    snprintf(s0, sizeof(s0), "%s", seg0);
    snprintf(s1, sizeof(s1), "%s", seg1 ? seg1 : "");
    tg_admin_req_t r = {.admin = c->admin, .db = db, .nsegs = seg1 ? 2 : 1};
    snprintf(r.method, sizeof(r.method), "GET");
    r.segs[0] = s0;
    r.segs[1] = s1;
    tg_dao_init(&r.dao, db, c->admin->cp_id, c->admin->keyring);
    int handled = route(&r);
    tg_dao_reset(&r.dao);
    free(r.text);
    *status = handled ? r.status : 404;
    json_t *body = *status == 200 ? r.body : NULL;
    if (!body) json_decref(r.body);
    return body;
}

/* Every control plane with its latest config version. */
static json_t *control_planes(tg_db_t *db, bool *ok)
{
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err,
                               "SELECT id::text, name, config_version FROM control_planes"
                               " ORDER BY name",
                               0, NULL);
    json_t *list = json_array();
    *ok = res != NULL;
    for (int i = 0; res && i < PQntuples(res); i++)
        json_array_append_new(list,
                              json_pack("{s:s,s:s,s:I}", "id", PQgetvalue(res, i, 0), "name",
                                        PQgetvalue(res, i, 1), "config_version",
                                        (json_int_t)strtoll(PQgetvalue(res, i, 2), NULL, 10)));
    if (res) PQclear(res);
    return list;
}

static void status_run(tg_job_t *job, tg_db_t *db)
{
    status_job_t *j = (status_job_t *)job;
    tg_cp_ctl_t *c = j->ctl;
    json_t *out = json_pack(
        "{s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:I}", "role", "control_plane", "pid", (json_int_t)getpid(),
        "tollgate_version", TG_VERSION, "prefix", tg_config_get(TG_CONF_prefix), "node_id",
        c->admin->node_id, "hostname", c->admin->hostname, "control_plane_id", c->admin->cp_id,
        "uptime_seconds", (json_int_t)((uv_hrtime() / 1000000 - c->started_ms) / 1000));
    int st;
    json_t *kong_status = admin_get(c, db, tg_admin_route_status, "status", NULL, &st);
    json_object_set_new(out, "database", json_incref(json_object_get(kong_status, "database")));
    json_object_set_new(out, "server", json_incref(json_object_get(kong_status, "server")));
    json_decref(kong_status);
    bool db_ok;
    json_object_set_new(out, "control_planes", control_planes(db, &db_ok));
    json_t *dps = admin_get(c, db, tg_admin_route_cluster, "clustering", "data-planes", &st);
    json_object_set_new(out, "data_planes", json_incref(json_object_get(dps, "data")));
    json_decref(dps);
    if (!json_is_object(json_object_get(out, "database")))
        json_object_set_new(out, "database", json_pack("{s:b}", "reachable", 0));
    if (!db_ok || !json_is_array(json_object_get(out, "data_planes"))) {
        /* PostgreSQL down: the node still answers, with what it knows of itself. */
        json_object_set_new(out, "data_planes", json_array());
        json_object_set_new(json_object_get(out, "database"), "reachable", json_false());
    }
    j->reply = out;
}

static void status_done(tg_job_t *job)
{
    status_job_t *j = (status_job_t *)job;
    tg_ctl_reply(j->req, j->reply);
    free(j);
}

static void cmd_status(tg_ctl_request_t *r, const json_t *req, void *ud)
{
    tg_cp_ctl_t *c = ud;
    if (!c->admin->workers) {
        tg_ctl_reply_error(r, "the control plane is shutting down");
        return;
    }
    status_job_t *j = tg_calloc(1, sizeof(*j));
    j->ctl = c;
    j->req = r;
    j->job.run = status_run;
    j->job.done = status_done;
    tg_workers_submit(c->admin->workers, &j->job);
}

static const tg_ctl_command_t commands[] = {
    {"status", cmd_status},
};

int tg_cp_ctl_open(tg_cp_ctl_t *c)
{
    char err[1024];
    c->started_ms = uv_hrtime() / 1000000;
    int rc = tg_ctl_server_open(tg_config_get(TG_CONF_prefix), &c->server, err, sizeof(err));
    if (rc) TG_LOGE("cp", "%s", err);
    return rc;
}

int tg_cp_ctl_start(tg_cp_ctl_t *c, uv_loop_t *loop)
{
    return tg_ctl_server_start(c->server, loop, commands, sizeof(commands) / sizeof(commands[0]),
                               c);
}

void tg_cp_ctl_close(tg_cp_ctl_t *c)
{
    tg_ctl_server_close(c->server);
    c->server = NULL;
}
