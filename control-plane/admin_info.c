/*
 * admin_info.c — the Admin API's informational endpoints: GET / (node info
 * decK and go-kong read), /status, /endpoints, /schemas/..., /plugins/enabled,
 * /tags and /tags/{tag}.
 */
#include "admin_request.h"
#include "alloc.h"
#include "config.h"
#include "plugins.h"
#include "sync_hub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KONG_COMPAT_VERSION "3.10.0"

static bool is(const tg_admin_req_t *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

static bool seg(const tg_admin_req_t *r, int i, const char *s)
{
    return r->nsegs > i && strcmp(r->segs[i], s) == 0;
}

static int only_get(tg_admin_req_t *r)
{
    if (is(r, "GET") || is(r, "HEAD")) return 1;
    r->allow = "GET, HEAD, OPTIONS";
    tg_admin_reply_message(r, 405, "Method not allowed");
    return 0;
}

static json_t *listeners_json(enum tg_config_key key)
{
    tg_listen_addr_t l[8];
    int n = tg_config_listeners(key, l, 8);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:i,s:b,s:s}", "ip", l[i].host, "port", l[i].port, "ssl",
                                             l[i].ssl, "listener", tg_config_get(key)));
    return arr;
}

/* Plugin names configured anywhere on this control plane. */
static json_t *plugins_in_use(tg_admin_req_t *r)
{
    json_t *names = json_array();
    const char *params[] = {r->dao.cp_id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err, "SELECT DISTINCT doc->>'name' FROM plugins WHERE cp_id = $1::uuid ORDER BY 1",
                               1, params);
    for (int i = 0; res && i < PQntuples(res); i++) json_array_append_new(names, json_string(PQgetvalue(res, i, 0)));
    if (res) PQclear(res);
    return names;
}

static void root(tg_admin_req_t *r)
{
    json_t *available = json_object();
    for (size_t i = 0; tg_plugins[i]; i++)
        json_object_set_new(available, tg_plugins[i]->name,
                            json_pack("{s:s,s:i}", "version", tg_plugins[i]->version, "priority", tg_plugins[i]->priority));
    json_t *conf = json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:s,s:b,s:b,s:s}",
                             "database", "postgres", "role", "control_plane", "log_level",
                             tg_config_get(TG_CONF_log_level), "admin_listeners", listeners_json(TG_CONF_admin_listen),
                             "status_listeners", listeners_json(TG_CONF_status_listen), "cluster_listeners",
                             listeners_json(TG_CONF_cluster_listen), "prefix", tg_config_get(TG_CONF_prefix),
                             "rbac", 0, "portal", 0, "pg_database", tg_config_get(TG_CONF_pg_database));
    /* Kong 3.x's default router; our routes take its fields (no `expression`/`priority`), and
     * go-kong's tests decide which route/service/plugin cases apply from this key. */
    json_object_set_new(conf, "router_flavor", json_string("traditional_compatible"));
    json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:{s:o,s:o},s:o,s:{s:i,s:i},s:{s:i}}",
                             "tagline", "Welcome to tollgate", "version", KONG_COMPAT_VERSION, "tollgate_version",
                             TG_VERSION, "edition", "community", "hostname", r->admin->hostname, "node_id",
                             r->admin->node_id, "plugins", "available_on_server", available, "enabled_in_cluster",
                             plugins_in_use(r), "configuration", conf, "timers", "running", 0, "pending", 0, "pids",
                             "master", (int)getpid());
    json_object_set_new(body, "lua_version", json_string("none (tollgate " TG_VERSION ")"));
    tg_admin_reply(r, 200, body);
}

static void status(tg_admin_req_t *r)
{
    long long version = tg_dao_config_version(&r->dao);
    bool reachable = version >= 0;
    /* Kong's shape, with only what we measure: no per-connection gauges. */
    json_t *body = json_pack("{s:{s:b},s:{s:I,s:i},s:{s:s,s:I}}",
        "database", "reachable", reachable,
        "server", "total_requests", (json_int_t)atomic_load(&r->admin->total_requests),
        "requests_active", atomic_load(&r->admin->active_requests),
        "configuration", "control_plane_id", r->admin->cp_id, "config_version", (json_int_t)(reachable ? version : -1));
    tg_admin_reply(r, 200, body);
}

/* status_listen: /status/ready is 200 once PostgreSQL answers, else 503. */
static void ready(tg_admin_req_t *r)
{
    if (tg_dao_config_version(&r->dao) >= 0) tg_admin_reply_message(r, 200, "ready");
    else tg_admin_reply_message(r, 503, "database unreachable");
}

/* Prometheus text exposition of the control plane's own counters. */
static void metrics(tg_admin_req_t *r)
{
    long long version = tg_dao_config_version(&r->dao);
    char *sync = tg_sync_hub_metrics(); /* the cluster sync's series (sync_hub.c) */
    r->text = tg_asprintf(
        "# HELP tollgate_admin_requests_total Admin API requests received.\n"
        "# TYPE tollgate_admin_requests_total counter\n"
        "tollgate_admin_requests_total %llu\n"
        "# HELP tollgate_admin_requests_active Admin API requests being processed.\n"
        "# TYPE tollgate_admin_requests_active gauge\n"
        "tollgate_admin_requests_active %d\n"
        "# HELP tollgate_database_reachable 1 when PostgreSQL answers.\n"
        "# TYPE tollgate_database_reachable gauge\n"
        "tollgate_database_reachable %d\n"
        "# HELP tollgate_config_version Latest config version of the control plane.\n"
        "# TYPE tollgate_config_version gauge\n"
        "tollgate_config_version{control_plane=\"%s\"} %lld\n%s",
        (unsigned long long)atomic_load(&r->admin->total_requests), atomic_load(&r->admin->active_requests),
        version >= 0, r->admin->cp_id, version, sync);
    free(sync);
    r->status = 200;
}

int tg_admin_route_status(tg_admin_req_t *r)
{
    bool is_status = r->nsegs == 1 && seg(r, 0, "status");
    bool is_ready = r->nsegs == 2 && seg(r, 0, "status") && seg(r, 1, "ready");
    bool is_metrics = r->nsegs == 1 && seg(r, 0, "metrics");
    if (!is_status && !is_ready && !is_metrics) return 0;
    if (!only_get(r)) return 1;
    if (is_status) status(r);
    else if (is_ready) ready(r);
    else metrics(r);
    return 1;
}

static void plugin_schema(tg_admin_req_t *r, const char *name)
{
    const tg_plugin_info_t *p = tg_plugin_find(name);
    if (!p) {
        char *msg = tg_asprintf("No plugin named '%s'", name);
        tg_admin_reply_message(r, 404, msg);
        free(msg);
        return;
    }
    json_t *config = tg_schema_to_json(p->config_schema);
    json_object_set_new(config, "type", json_string("record"));
    json_object_set_new(config, "required", json_true());
    json_t *protocols = json_pack("{s:s,s:b,s:o,s:{s:s}}", "type", "set", "required", 1, "default",
                                  json_loads(p->default_protocols, 0, NULL), "elements", "type", "string");
    json_t *fields = json_pack("[{s:o},{s:o}]", "config", config, "protocols", protocols);
    if (!p->no_consumer)
        json_array_insert_new(fields, 0, json_pack("{s:{s:s,s:s}}", "consumer", "type", "foreign", "reference", "consumers"));
    tg_admin_reply(r, 200, json_pack("{s:o}", "fields", fields));
}

/* POST /schemas/{entity}/validate and /schemas/plugins/validate: validate without storing. */
static void validate(tg_admin_req_t *r, const tg_schema_t *s)
{
    if (!is(r, "POST")) {
        r->allow = "POST, OPTIONS";
        tg_admin_reply_message(r, 405, "Method not allowed");
        return;
    }
    json_t *args = tg_admin_body_args(r, s, NULL), *errs = NULL;
    if (!args) return;
    json_t *e = tg_schema_validate(s, TG_OP_INSERT, args, NULL, &errs);
    if (e) tg_admin_reply_message(r, 200, "schema validation successful");
    else tg_admin_reply(r, 400, tg_schema_error_body(errs));
    json_decref(errs);
    json_decref(e);
    json_decref(args);
}

static const tg_schema_t *entity_named(const char *name)
{
    for (size_t i = 0; tg_entities[i]; i++)
        if (strcmp(tg_entities[i]->name, name) == 0 || strcmp(tg_entities[i]->admin_path, name) == 0)
            return tg_entities[i];
    return NULL;
}

static void schemas(tg_admin_req_t *r)
{
    if (seg(r, 1, "plugins") && r->nsegs == 3 && strcmp(r->segs[2], "validate") == 0) {
        validate(r, &tg_schema_plugins);
        return;
    }
    if (seg(r, 1, "plugins") && r->nsegs == 3) {
        if (only_get(r)) plugin_schema(r, r->segs[2]);
        return;
    }
    const tg_schema_t *s = r->nsegs >= 2 ? entity_named(r->segs[1]) : NULL;
    if (!s || r->nsegs > 3 || (r->nsegs == 3 && strcmp(r->segs[2], "validate") != 0)) {
        char *msg = tg_asprintf("No entity named '%s'", r->nsegs >= 2 ? r->segs[1] : "");
        tg_admin_reply_message(r, 404, msg);
        free(msg);
    } else if (r->nsegs == 3) {
        validate(r, s);
    } else if (only_get(r)) {
        tg_admin_reply(r, 200, tg_schema_to_json(s));
    }
}

/* Kong's order: '/' sorts before every other character. */
static int endpoint_cmp(const void *a, const void *b)
{
    const unsigned char *x = (const unsigned char *)json_string_value(*(json_t *const *)a);
    const unsigned char *y = (const unsigned char *)json_string_value(*(json_t *const *)b);
    for (; *x && *x == *y; x++, y++) {}
    int cx = *x == '/' ? 1 : *x ? *x + 1 : 0, cy = *y == '/' ? 1 : *y ? *y + 1 : 0;
    return cx - cy;
}

static void add_endpoint(json_t *list, const char *path)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) if (strcmp(json_string_value(v), path) == 0) return;
    json_array_append_new(list, json_string(path));
}

json_t *tg_admin_endpoint_list(void)
{
    static const char *const fixed[] = {"/", "/status", "/endpoints", "/plugins/enabled",
        "/schemas/{db_entity_name}", "/schemas/{db_entity_name}/validate", "/schemas/plugins/{name}",
        "/schemas/plugins/validate", "/tags", "/tags/{tags}", NULL};
    json_t *list = json_array();
    char buf[256];
    for (size_t i = 0; fixed[i]; i++) add_endpoint(list, fixed[i]);
    for (size_t i = 0; tg_entities[i]; i++) {
        const tg_schema_t *s = tg_entities[i];
        const char *child = s->nested_path ? s->nested_path : s->admin_path;
        snprintf(buf, sizeof(buf), "/%s", s->admin_path), add_endpoint(list, buf);
        snprintf(buf, sizeof(buf), "/%s/{%s}", s->admin_path, s->name), add_endpoint(list, buf);
        for (const tg_field_t *f = s->fields; f->name; f++) {
            if (f->type != TG_T_FOREIGN || !f->rec) continue;
            snprintf(buf, sizeof(buf), "/%s/{%s}/%s", s->admin_path, s->name, f->name), add_endpoint(list, buf);
            snprintf(buf, sizeof(buf), "/%s/{%s}/%s", f->rec->admin_path, f->rec->name, child), add_endpoint(list, buf);
            snprintf(buf, sizeof(buf), "/%s/{%s}/%s/{%s}", f->rec->admin_path, f->rec->name, child, s->name);
            add_endpoint(list, buf);
        }
    }
    size_t n = json_array_size(list);
    json_t **items = tg_calloc(n, sizeof(json_t *));
    for (size_t i = 0; i < n; i++) items[i] = json_incref(json_array_get(list, i));
    qsort(items, n, sizeof(json_t *), endpoint_cmp);
    json_array_clear(list);
    for (size_t i = 0; i < n; i++) json_array_append_new(list, items[i]);
    free(items);
    return list;
}

static void tags(tg_admin_req_t *r)
{
    if (!only_get(r)) return;
    if (r->nsegs > 2) {
        tg_admin_reply_message(r, 404, "Not found");
        return;
    }
    tg_dao_query_t q = {.size = tg_admin_query(r, "size"), .offset = tg_admin_query(r, "offset")};
    tg_dao_page_t page;
    if (tg_dao_list_tags(&r->dao, r->nsegs == 2 ? r->segs[1] : NULL, &q, &page) != 0) {
        tg_admin_reply_dao_error(r);
        return;
    }
    json_t *body = json_pack("{s:o}", "data", page.data);
    if (page.next_offset) {
        json_object_set_new(body, "offset", json_string(page.next_offset));
        json_object_set_new(body, "next", json_sprintf("%s?offset=%s", r->path, page.next_offset));
        free(page.next_offset);
    } else {
        json_object_set_new(body, "next", json_null());
    }
    tg_admin_reply(r, 200, body);
}

int tg_admin_route_info(tg_admin_req_t *r)
{
    if (r->nsegs == 0) {
        if (only_get(r)) root(r);
    } else if (seg(r, 0, "status") && r->nsegs == 1) {
        if (only_get(r)) status(r);
    } else if (seg(r, 0, "endpoints") && r->nsegs == 1) {
        if (only_get(r)) tg_admin_reply(r, 200, json_pack("{s:o}", "data", tg_admin_endpoint_list()));
    } else if (seg(r, 0, "plugins") && seg(r, 1, "enabled") && r->nsegs == 2) {
        json_t *names = json_array();
        for (size_t i = 0; tg_plugins[i]; i++) json_array_append_new(names, json_string(tg_plugins[i]->name));
        if (only_get(r)) tg_admin_reply(r, 200, json_pack("{s:o}", "enabled_plugins", names));
        else json_decref(names);
    } else if (seg(r, 0, "schemas")) {
        schemas(r);
    } else if (seg(r, 0, "tags")) {
        tags(r);
    } else {
        return 0;
    }
    return 1;
}
