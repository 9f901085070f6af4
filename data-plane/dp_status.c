/*
 * dp_status.c — /status, /status/ready and /metrics of the data plane; see dp_status.h.
 */
#include "dp_status.h"
#include "alloc.h"
#include "config.h"
#include "error.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char zero_hash[] = "0000000000000000000000000000000000000000000000000000000000000000";

static tg_metrics_t **metrics_of(tg_dp_status_t *st)
{
    tg_metrics_t **ms = tg_calloc((size_t)st->nworkers + 1, sizeof(*ms));
    for (int i = 0; i < st->nworkers; i++)
        ms[i] = st->workers[i].metrics;
    return ms;
}

static void reply_json(tg_http_exchange_t *x, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    tg_http_header_t h = {TG_STR("Content-Type"), TG_STR("application/json; charset=utf-8")};
    tg_http_respond(x, status, &h, 1, text, strlen(text));
    free(text);
    json_decref(body);
}

static void status(tg_http_exchange_t *x, tg_dp_status_t *st)
{
    tg_metrics_t **ms = metrics_of(st);
    tg_metrics_totals_t t;
    tg_metrics_totals(ms, (size_t)st->nworkers, &t);
    free(ms);
    long waiting = t.conns_active - t.conns_reading - t.conns_writing;
    const tg_generation_t *g = st->gen;
    json_t *body = json_pack(
        "{s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:s,s:I,s:b,s:s,s:i,s:{s:b,s:s}}", "server",
        "total_requests", (json_int_t)t.requests, "connections_active", (json_int_t)t.conns_active,
        "connections_accepted", (json_int_t)t.conns_accepted, "connections_handled",
        (json_int_t)t.conns_handled, "connections_reading", (json_int_t)t.conns_reading,
        "connections_writing", (json_int_t)t.conns_writing, "connections_waiting",
        (json_int_t)(waiting < 0 ? 0 : waiting), "configuration_hash",
        g && g->hash[0] ? g->hash : zero_hash, "config_version", (json_int_t)(g ? g->version : 0),
        "configuration_loaded", g != NULL, "mode", st->mode, "workers", st->nworkers,
        "control_plane", "connected", 0, "sync", "not built");
    reply_json(x, 200, body);
}

static void ready(tg_http_exchange_t *x, tg_dp_status_t *st)
{
    if (st->gen)
        reply_json(x, 200, json_pack("{s:s}", "message", "ready"));
    else
        reply_json(x, 503, json_pack("{s:s}", "message", "no configuration loaded yet"));
}

static void metrics(tg_http_exchange_t *x, tg_dp_status_t *st)
{
    const tg_generation_t *g = st->gen;
    char *extra = tg_asprintf(
        "# HELP tollgate_config_version Config version the data plane serves (0: none).\n"
        "# TYPE tollgate_config_version gauge\ntollgate_config_version %lld\n"
        "# HELP tollgate_config_loaded 1 once a configuration is being served.\n"
        "# TYPE tollgate_config_loaded gauge\ntollgate_config_loaded %d\n"
        "# HELP tollgate_config_reloads_total Configuration loads after start-up, by result.\n"
        "# TYPE tollgate_config_reloads_total counter\n"
        "tollgate_config_reloads_total{result=\"ok\"} %lu\n"
        "tollgate_config_reloads_total{result=\"failed\"} %lu\n"
        "# HELP tollgate_workers Proxy worker threads.\n"
        "# TYPE tollgate_workers gauge\ntollgate_workers %d\n",
        (long long)(g ? g->version : 0), g != NULL, st->reloads_ok, st->reloads_failed,
        st->nworkers);
    tg_metrics_t **ms = metrics_of(st);
    char *text = tg_metrics_render(ms, (size_t)st->nworkers, extra);
    free(ms);
    free(extra);
    tg_http_header_t h = {TG_STR("Content-Type"),
                          TG_STR("text/plain; version=0.0.4; charset=utf-8")};
    tg_http_respond(x, 200, &h, 1, text, strlen(text));
    free(text);
}

static void on_request(tg_http_exchange_t *x, const tg_http_request_t *req, void *udata)
{
    tg_dp_status_t *st = udata;
    tg_str_t p = req->path;
    if (p.len > 1 && p.p[p.len - 1] == '/') p.len--;
    bool known = tg_str_eq_lit(p, "/status") || tg_str_eq_lit(p, "/status/ready") ||
                 tg_str_eq_lit(p, "/metrics");
    if (!known)
        reply_json(x, 404, json_pack("{s:s}", "message", "Not found"));
    else if (!tg_str_eq_lit(req->method, "GET") && !tg_str_eq_lit(req->method, "HEAD"))
        reply_json(x, 405, json_pack("{s:s}", "message", "Method not allowed"));
    else if (tg_str_eq_lit(p, "/status"))
        status(x, st);
    else if (tg_str_eq_lit(p, "/status/ready"))
        ready(x, st);
    else
        metrics(x, st);
}

int tg_dp_status_listen(tg_dp_status_t *st, uv_loop_t *loop)
{
    tg_listen_addr_t l[TG_DP_STATUS_MAX_LISTENERS];
    int n = tg_config_listeners(TG_CONF_status_listen, l, TG_DP_STATUS_MAX_LISTENERS);
    if (n < 0) {
        TG_LOGE("dp", "invalid status_listen");
        return -TG_ECONFIG;
    }
    tg_http_server_opts_t opts = {
        .max_body_size = 1024,
        .server_header = "tollgate/" TG_VERSION,
        .on_request = on_request,
        .udata = st,
    };
    for (int i = 0; i < n; i++) {
        tg_http_server_t *s = tg_http_server_create(loop, &opts);
        if (!s || tg_http_server_listen(s, l[i].host, l[i].port) != 0) {
            TG_LOGE("dp", "cannot listen on %s:%d (status_listen)", l[i].host, l[i].port);
            if (s) tg_http_server_close(s);
            return -TG_EIO;
        }
        st->servers[st->nservers++] = s;
        TG_LOGN("dp", "status listening on %s:%d", l[i].host, l[i].port);
    }
    return 0;
}

void tg_dp_status_close(tg_dp_status_t *st)
{
    for (int i = 0; i < st->nservers; i++)
        tg_http_server_close(st->servers[i]);
    st->nservers = 0;
}
