/*
 * dp_status.c — /status, /status/ready and /metrics of the data plane; see dp_status.h.
 */
#include "dp_status.h"
#include "realm_lookup.h"
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

/* The configuration being served: with a control plane the store's version and digest (a
 * delta of consumers or credentials changes them without a new generation), else the
 * generation's. Nothing before the first generation. */
typedef struct served {
    bool loaded;
    int64_t version;
    const char *hash;
} served_t;

static served_t served(const tg_dp_status_t *st, const tg_sync_client_status_t *cs)
{
    const tg_generation_t *g = st->gen;
    served_t s = {g != NULL, g ? g->version : 0, g && g->hash[0] ? g->hash : zero_hash};
    if (g && cs && cs->digest[0]) {
        s.version = cs->applied_version;
        s.hash = cs->digest;
    }
    return s;
}

static json_t *server_json(tg_dp_status_t *st)
{
    tg_metrics_t **ms = metrics_of(st);
    tg_metrics_totals_t t;
    tg_metrics_totals(ms, (size_t)st->nworkers, &t);
    free(ms);
    long waiting = t.conns_active - t.conns_reading - t.conns_writing;
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "total_requests", (json_int_t)t.requests,
                     "connections_active", (json_int_t)t.conns_active, "connections_accepted",
                     (json_int_t)t.conns_accepted, "connections_handled",
                     (json_int_t)t.conns_handled, "connections_reading",
                     (json_int_t)t.conns_reading, "connections_writing",
                     (json_int_t)t.conns_writing, "connections_waiting",
                     (json_int_t)(waiting < 0 ? 0 : waiting));
}

tg_dp_served_t tg_dp_status_served(const tg_dp_status_t *st)
{
    tg_sync_client_status_t cs;
    if (st->sync) tg_sync_client_status(st->sync, &cs);
    served_t s = served(st, st->sync ? &cs : NULL);
    tg_dp_served_t out = {.loaded = s.loaded, .version = s.version};
    snprintf(out.hash, sizeof out.hash, "%s", s.hash);
    return out;
}

json_t *tg_dp_status_realms_json(const tg_dp_status_t *st)
{
    if (!st->realms) return json_null();
    tg_realm_lookup_stats_t r = tg_realm_lookup_stats(st->realms);
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I}}", "lookups_sent",
                     (json_int_t)r.lookups_sent, "results", (json_int_t)r.results, "timeouts",
                     (json_int_t)r.timeouts, "unavailable", (json_int_t)r.unavailable,
                     "invalidations", (json_int_t)r.invalidations, "overflow",
                     (json_int_t)r.overflow, "in_flight", (json_int_t)r.in_flight, "cache",
                     "entries", (json_int_t)r.cache.entries, "hits", (json_int_t)r.cache.hits,
                     "negative_hits", (json_int_t)r.cache.negative_hits, "stale_hits",
                     (json_int_t)r.cache.stale_hits, "misses", (json_int_t)r.cache.misses,
                     "evictions", (json_int_t)r.cache.evictions);
}

static json_t *cluster_json(const tg_sync_client_status_t *cs)
{
    if (!cs) return json_null();
    return json_pack("{s:b,s:s,s:I,s:s?,s:s?,s:I,s:I,s:I,s:I,s:I,s:I}", "connected",
                     cs->connected, "endpoint", cs->endpoint, "applied_version",
                     (json_int_t)cs->applied_version, "last_error",
                     cs->last_error[0] ? cs->last_error : NULL, "last_nack",
                     cs->last_nack[0] ? cs->last_nack : NULL, "deltas_applied",
                     (json_int_t)cs->deltas_applied, "snapshots_applied",
                     (json_int_t)cs->snapshots_applied, "nacks_sent", (json_int_t)cs->nacks_sent,
                     "last_apply_at_ms", (json_int_t)cs->last_apply_unix_ms, "last_apply_us",
                     (json_int_t)cs->last_apply_us, "certificate_expires_at",
                     (json_int_t)cs->cert_not_after);
}

json_t *tg_dp_status_cluster_json(const tg_dp_status_t *st)
{
    tg_sync_client_status_t cs;
    if (st->sync) tg_sync_client_status(st->sync, &cs);
    return cluster_json(st->sync ? &cs : NULL);
}

static void status(tg_http_exchange_t *x, tg_dp_status_t *st)
{
    tg_sync_client_status_t cs;
    if (st->sync) tg_sync_client_status(st->sync, &cs);
    served_t s = served(st, st->sync ? &cs : NULL);
    json_t *body = json_pack("{s:o,s:s,s:I,s:b,s:s,s:i,s:{s:b},s:o}", "server", server_json(st),
                             "configuration_hash", s.hash, "config_version", (json_int_t)s.version,
                             "configuration_loaded", s.loaded, "mode", st->mode, "workers",
                             st->nworkers, "control_plane", "connected", st->sync && cs.connected,
                             "cluster", cluster_json(st->sync ? &cs : NULL));
    json_object_set_new(body, "realms", tg_dp_status_realms_json(st));
    reply_json(x, 200, body);
}

static void ready(tg_http_exchange_t *x, tg_dp_status_t *st)
{
    if (st->gen)
        reply_json(x, 200, json_pack("{s:s}", "message", "ready"));
    else
        reply_json(x, 503, json_pack("{s:s}", "message", "no configuration loaded yet"));
}

/* The control plane connection's series (empty without one). */
static char *sync_metrics(const tg_sync_client_status_t *cs)
{
    if (!cs) return tg_strdup("");
    return tg_asprintf(
        "# HELP tollgate_dp_sync_connected 1 while a control plane has welcomed this data plane.\n"
        "# TYPE tollgate_dp_sync_connected gauge\ntollgate_dp_sync_connected %d\n"
        "# HELP tollgate_dp_sync_deltas_applied_total Deltas from the control plane applied.\n"
        "# TYPE tollgate_dp_sync_deltas_applied_total counter\n"
        "tollgate_dp_sync_deltas_applied_total %lu\n"
        "# HELP tollgate_dp_sync_snapshots_applied_total Snapshots from the control plane "
        "applied.\n"
        "# TYPE tollgate_dp_sync_snapshots_applied_total counter\n"
        "tollgate_dp_sync_snapshots_applied_total %lu\n"
        "# HELP tollgate_dp_sync_nacks_total Pushes refused (NACK) by this data plane.\n"
        "# TYPE tollgate_dp_sync_nacks_total counter\ntollgate_dp_sync_nacks_total %lu\n"
        "# HELP tollgate_dp_sync_connects_total Connections a control plane welcomed.\n"
        "# TYPE tollgate_dp_sync_connects_total counter\ntollgate_dp_sync_connects_total %lu\n"
        "# HELP tollgate_dp_sync_disconnects_total Welcomed connections lost.\n"
        "# TYPE tollgate_dp_sync_disconnects_total counter\n"
        "tollgate_dp_sync_disconnects_total %lu\n"
        "# HELP tollgate_dp_sync_cert_renewals_total Client certificates renewed.\n"
        "# TYPE tollgate_dp_sync_cert_renewals_total counter\n"
        "tollgate_dp_sync_cert_renewals_total %lu\n"
        "# HELP tollgate_dp_sync_last_apply_seconds Time the last applied delta or snapshot "
        "took.\n"
        "# TYPE tollgate_dp_sync_last_apply_seconds gauge\n"
        "tollgate_dp_sync_last_apply_seconds %.6f\n"
        "# HELP tollgate_dp_sync_cert_expiry_timestamp_seconds When the client certificate "
        "expires.\n"
        "# TYPE tollgate_dp_sync_cert_expiry_timestamp_seconds gauge\n"
        "tollgate_dp_sync_cert_expiry_timestamp_seconds %lld\n",
        cs->connected, cs->deltas_applied, cs->snapshots_applied, cs->nacks_sent, cs->connects,
        cs->disconnects, cs->renewals, cs->last_apply_us / 1e6, (long long)cs->cert_not_after);
}

static void metrics(tg_http_exchange_t *x, tg_dp_status_t *st)
{
    tg_sync_client_status_t cs;
    if (st->sync) tg_sync_client_status(st->sync, &cs);
    served_t s = served(st, st->sync ? &cs : NULL);
    char *sync = sync_metrics(st->sync ? &cs : NULL);
    if (st->realms) {
        tg_realm_lookup_stats_t r = tg_realm_lookup_stats(st->realms);
        char *with = tg_asprintf(
            "%s# HELP tollgate_dp_realm_lookups_total Realm key lookups sent to the control plane.\n"
            "# TYPE tollgate_dp_realm_lookups_total counter\ntollgate_dp_realm_lookups_total %llu\n"
            "# HELP tollgate_dp_realm_unavailable_total Realm lookups nobody could answer (503).\n"
            "# TYPE tollgate_dp_realm_unavailable_total counter\n"
            "tollgate_dp_realm_unavailable_total %llu\n"
            "# HELP tollgate_dp_realm_invalidations_total Invalidations pushed by the control plane.\n"
            "# TYPE tollgate_dp_realm_invalidations_total counter\n"
            "tollgate_dp_realm_invalidations_total %llu\n"
            "# HELP tollgate_dp_realm_cache_entries Realm answers in the control thread's cache.\n"
            "# TYPE tollgate_dp_realm_cache_entries gauge\ntollgate_dp_realm_cache_entries %zu\n",
            sync, (unsigned long long)r.lookups_sent, (unsigned long long)r.unavailable,
            (unsigned long long)r.invalidations, r.cache.entries);
        free(sync);
        sync = with;
    }
    char *extra = tg_asprintf(
        "# HELP tollgate_config_version Config version the data plane serves (0: none).\n"
        "# TYPE tollgate_config_version gauge\ntollgate_config_version %lld\n"
        "# HELP tollgate_dp_config_version Config version the data plane serves (0: none).\n"
        "# TYPE tollgate_dp_config_version gauge\ntollgate_dp_config_version %lld\n"
        "# HELP tollgate_config_loaded 1 once a configuration is being served.\n"
        "# TYPE tollgate_config_loaded gauge\ntollgate_config_loaded %d\n"
        "# HELP tollgate_config_reloads_total Configuration loads after start-up, by result.\n"
        "# TYPE tollgate_config_reloads_total counter\n"
        "tollgate_config_reloads_total{result=\"ok\"} %lu\n"
        "tollgate_config_reloads_total{result=\"failed\"} %lu\n"
        "# HELP tollgate_workers Proxy worker threads.\n"
        "# TYPE tollgate_workers gauge\ntollgate_workers %d\n%s",
        (long long)s.version, (long long)s.version, s.loaded, st->reloads_ok, st->reloads_failed,
        st->nworkers, sync);
    free(sync);
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
