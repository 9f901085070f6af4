/*
 * cp.c — the control plane's commands: start (embedded or external
 * PostgreSQL, migrations under a lock, worker pool, Admin API listeners,
 * clean shutdown on SIGINT/SIGTERM), migrate, and admin-token.
 */
#include "cp.h"
#include "bootstrap_token.h"
#include "cluster_ca.h"
#include "cluster_server.h"
#include "cp_ctl.h"
#include "cp_session.h"
#include "join.h"
#include "admin.h"
#include "alloc.h"
#include "config.h"
#include "crypto.h"
#include "dao.h"
#include "db.h"
#include "error.h"
#include "log.h"
#include "migrate.h"
#include "pg_embedded.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LISTENERS 8
#define PURGE_INTERVAL_MS 10000

typedef struct cp_state {
    uv_loop_t loop;
    tg_cp_session_t session; /* prefix, database, the main thread's connection */
    tg_admin_t admin;
    tg_http_server_t *servers[MAX_LISTENERS];
    int nservers;
    SSL_CTX *admin_ssl;
    uv_signal_t sigint, sigterm;
    uv_timer_t purge_timer;
    tg_job_t purge_job;
    bool purge_running;
    tg_cluster_ca_t *ca;
    tg_cluster_server_t *cluster;
    tg_cp_ctl_t ctl; /* the control socket: `tollgate status` (cp_ctl.h) */
} cp_state_t;

/* ---------------------------------------------------------------- database bootstrap */

static int default_cp_id(tg_db_t *db, char out[37])
{
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err, "SELECT id::text FROM control_planes WHERE name = 'default'", 0, NULL);
    if (!res || PQntuples(res) != 1) {
        if (res) PQclear(res);
        TG_LOGE("cp", "the default control plane is missing");
        return -TG_EDB;
    }
    snprintf(out, 37, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* A stable node id kept under the prefix (or the configured one). */
static void load_node_id(char out[37])
{
    if (*tg_config_get(TG_CONF_node_id)) {
        snprintf(out, 37, "%s", tg_config_get(TG_CONF_node_id));
        return;
    }
    char *path = tg_config_prefix_path("node_id");
    FILE *f = fopen(path, "r");
    if (f && fscanf(f, "%36s", out) == 1 && tg_uuid_valid(tg_str_from(out))) {
        fclose(f);
        free(path);
        return;
    }
    if (f) fclose(f);
    tg_uuid_v4(out);
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "%s\n", out);
        fclose(f);
    }
    free(path);
}

/* ---------------------------------------------------------------- listeners */

static int admin_tls_ctx(cp_state_t *cp)
{
    char err[512];
    char *cert = *tg_config_get(TG_CONF_admin_ssl_cert) ? tg_strdup(tg_config_get(TG_CONF_admin_ssl_cert))
                                                        : tg_config_prefix_path("certs/admin.crt");
    char *key = *tg_config_get(TG_CONF_admin_ssl_cert_key) ? tg_strdup(tg_config_get(TG_CONF_admin_ssl_cert_key))
                                                           : tg_config_prefix_path("certs/admin.key");
    int rc = 0;
    if (!*tg_config_get(TG_CONF_admin_ssl_cert) &&
        tg_selfsigned_cert_ensure(cp->admin.hostname, cert, key, err, sizeof(err)) != 0) {
        TG_LOGE("cp", "admin certificate: %s", err);
        rc = -TG_ECONFIG;
    } else if (!(cp->admin_ssl = tg_tls_server_ctx_new(cert, key, err, sizeof(err)))) {
        TG_LOGE("cp", "admin TLS: %s", err);
        rc = -TG_ECONFIG;
    }
    free(cert);
    free(key);
    return rc;
}

/* Creates one HTTP server on a listener address and starts listening. */
static int listen_on(cp_state_t *cp, const tg_listen_addr_t *l, const tg_http_server_opts_t *opts, const char *what)
{
    if (cp->nservers == MAX_LISTENERS) return -TG_ECONFIG;
    tg_http_server_t *s = tg_http_server_create(&cp->loop, opts);
    if (!s || tg_http_server_listen(s, l->host, l->port) != 0) {
        TG_LOGE("cp", "cannot listen on %s:%d", l->host, l->port);
        if (s) tg_http_server_close(s);
        return -TG_EIO;
    }
    cp->servers[cp->nservers++] = s;
    TG_LOGN("cp", "%s listening on %s:%d", what, l->host, l->port);
    return 0;
}

static int start_admin(cp_state_t *cp)
{
    tg_listen_addr_t l[MAX_LISTENERS];
    int n = tg_config_listeners(TG_CONF_admin_listen, l, MAX_LISTENERS);
    uint64_t body_max;
    if (n < 0 || tg_config_size(TG_CONF_admin_body_max, &body_max) != 0) {
        TG_LOGE("cp", "invalid admin_listen or admin_body_max");
        return -TG_ECONFIG;
    }
    for (int i = 0; i < n; i++) {
        if (l[i].ssl && !cp->admin_ssl && admin_tls_ctx(cp) != 0) return -TG_ECONFIG;
        tg_http_server_opts_t opts = {
            .max_body_size = body_max,
            .ssl_ctx = l[i].ssl ? cp->admin_ssl : NULL,
            .server_header = "tollgate/" TG_VERSION,
            .on_request = l[i].ssl ? tg_admin_on_request_tls : tg_admin_on_request,
            .udata = &cp->admin,
        };
        int rc = listen_on(cp, &l[i], &opts, l[i].ssl ? "Admin API (https, admin token required)" : "Admin API");
        if (rc) return rc;
    }
    return 0;
}

static int start_status(cp_state_t *cp)
{
    tg_listen_addr_t l[MAX_LISTENERS];
    int n = tg_config_listeners(TG_CONF_status_listen, l, MAX_LISTENERS);
    if (n < 0) {
        TG_LOGE("cp", "invalid status_listen");
        return -TG_ECONFIG;
    }
    tg_http_server_opts_t opts = {
        .max_body_size = 1024,
        .server_header = "tollgate/" TG_VERSION,
        .on_request = tg_admin_on_status_request,
        .udata = &cp->admin,
    };
    for (int i = 0; i < n; i++) {
        int rc = listen_on(cp, &l[i], &opts, "status");
        if (rc) return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- timers and signals */

/* The names this node's cluster certificate is valid for: what DPs may dial. */
static size_t cluster_names(const char *hostname, const char *advertise, char names[][256],
                            size_t cap)
{
    size_t n = 0;
    const char *fixed[] = {hostname, "localhost", "127.0.0.1", "::1"};
    for (size_t i = 0; i < 4 && n < cap; i++)
        if (fixed[i][0]) snprintf(names[n++], 256, "%s", fixed[i]);
    char host[256] = "";
    size_t alen = strlen(advertise);
    if (alen < sizeof(host)) memcpy(host, advertise, alen + 1);
    char *colon = strrchr(host, ':');
    if (colon) *colon = '\0';
    if (host[0] == '[') memmove(host, host + 1, strlen(host)); /* [v6]:port */
    char *bracket = strchr(host, ']');
    if (bracket) *bracket = '\0';
    if (host[0] && n < cap) snprintf(names[n++], 256, "%s", host);
    const char *extra = tg_config_get(TG_CONF_cluster_server_names);
    while (extra && *extra && n < cap) {
        size_t len = strcspn(extra, ", ");
        if (len) snprintf(names[n++], 256, "%.*s", (int)len, extra);
        extra += len;
        extra += strspn(extra, ", ");
    }
    return n;
}

/* The cluster CA (created on the first start of any node), this node's registration, and the
 * listener for joins and sync. */
static int start_cluster(cp_state_t *cp, tg_db_t *db)
{
    if (tg_cluster_ca_ensure(db, cp->admin.keyring, &cp->ca) != 0) {
        TG_LOGE("cp", "cannot load or create the cluster CA");
        return -TG_EDB;
    }
    char advertise[300];
    tg_cluster_advertise(advertise, sizeof(advertise));
    tg_cluster_nodes_register(db, cp->admin.node_id, advertise, cp->admin.hostname);
    char names[12][256];
    size_t n = cluster_names(cp->admin.hostname, advertise, names, 12);
    const char *ptrs[12];
    for (size_t i = 0; i < n; i++) ptrs[i] = names[i];
    tg_cluster_server_opts_t o = {.loop = &cp->loop,
                                  .workers = cp->admin.workers,
                                  .ca = cp->ca,
                                  .conninfo = cp->session.conninfo,
                                  .node_id = cp->admin.node_id,
                                  .listen = tg_config_get(TG_CONF_cluster_listen),
                                  .names = ptrs,
                                  .nnames = n};
    cp->cluster = tg_cluster_server_start(&o);
    if (!cp->cluster) return -TG_ESYS;
    json_t *endpoints = tg_cluster_nodes_endpoints(db);
    tg_cluster_server_set_endpoints(cp->cluster, endpoints);
    json_decref(endpoints);
    return 0;
}

static void purge_run(tg_job_t *job, tg_db_t *db)
{
    cp_state_t *cp = (cp_state_t *)((char *)job - offsetof(cp_state_t, purge_job));
    /* every control plane's, not only the default one's */
    int n = tg_dao_purge_expired_all(db, cp->admin.keyring);
    if (n > 0) TG_LOGI("cp", "purged %d expired credential(s)", n);
}

static void purge_done(tg_job_t *job)
{
    cp_state_t *cp = (cp_state_t *)((char *)job - offsetof(cp_state_t, purge_job));
    cp->purge_running = false;
}

static void on_purge_timer(uv_timer_t *t)
{
    cp_state_t *cp = t->data;
    if (cp->purge_running) return;
    cp->purge_running = true;
    cp->purge_job.run = purge_run;
    cp->purge_job.done = purge_done;
    tg_workers_submit(cp->admin.workers, &cp->purge_job);
}

/* Closes listeners, timers and signal handles, then stops the workers (they finish queued jobs). */
static void shutdown_loop(cp_state_t *cp)
{
    tg_cluster_server_stop(cp->cluster); /* before the workers: its jobs finish as they stop */
    tg_cp_ctl_close(&cp->ctl);           /* likewise: a queued status job is answered, unsent */
    for (int i = 0; i < cp->nservers; i++) tg_http_server_close(cp->servers[i]);
    cp->nservers = 0;
    uv_handle_t *handles[] = {(uv_handle_t *)&cp->purge_timer, (uv_handle_t *)&cp->sigint,
                              (uv_handle_t *)&cp->sigterm};
    for (size_t i = 0; i < 3; i++)
        if (handles[i]->loop && !uv_is_closing(handles[i])) uv_close(handles[i], NULL);
    if (cp->admin.workers) tg_workers_stop(cp->admin.workers);
    cp->admin.workers = NULL;
}

static void on_signal(uv_signal_t *sig, int signum)
{
    TG_LOGN("cp", "received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    shutdown_loop(sig->data);
}

/* ---------------------------------------------------------------- commands */

int tg_cp_cmd_start(int argc, char **argv)
{
    static cp_state_t cp;
    tg_db_t *db = &cp.session.db;
    long pool;
    signal(SIGPIPE, SIG_IGN);
    if (tg_config_int(TG_CONF_pg_pool_size, 1, 256, &pool) != 0) {
        TG_LOGE("cp", "pg_pool_size must be an integer between 1 and 256");
        return -TG_ECONFIG;
    }
    gethostname(cp.admin.hostname, sizeof(cp.admin.hostname) - 1);
    cp.ctl.admin = &cp.admin;
    int ctl_rc = tg_cp_ctl_open(&cp.ctl); /* first: a second CP on this prefix stops here */
    if (ctl_rc) return ctl_rc;
    int rc = tg_cp_session_open(&cp.session);
    if (!rc) rc = tg_cp_load_keyring(cp.admin.keyring);
    if (!rc) rc = default_cp_id(db, cp.admin.cp_id);
    if (!rc) rc = tg_bootstrap_token_ensure(db); /* before DPs can reach cluster_listen */
    load_node_id(cp.admin.node_id);
    uv_loop_init(&cp.loop);
    if (!rc) {
        cp.admin.workers = tg_workers_start(&cp.loop, (int)pool, cp.session.conninfo);
        rc = start_admin(&cp);
        if (!rc) rc = start_status(&cp);
        if (!rc) rc = start_cluster(&cp, db);
        if (!rc) rc = tg_cp_ctl_start(&cp.ctl, &cp.loop);
        if (rc) shutdown_loop(&cp);
    }
    if (!rc) {
        uv_signal_init(&cp.loop, &cp.sigint);
        uv_signal_init(&cp.loop, &cp.sigterm);
        cp.sigint.data = cp.sigterm.data = &cp;
        uv_signal_start(&cp.sigint, on_signal, SIGINT);
        uv_signal_start(&cp.sigterm, on_signal, SIGTERM);
        uv_timer_init(&cp.loop, &cp.purge_timer);
        cp.purge_timer.data = &cp;
        uv_timer_start(&cp.purge_timer, on_purge_timer, PURGE_INTERVAL_MS, PURGE_INTERVAL_MS);
        TG_LOGN("cp", "control plane %s ready (node %s)", cp.admin.cp_id, cp.admin.node_id);
        uv_run(&cp.loop, UV_RUN_DEFAULT);
    }
    tg_cp_ctl_close(&cp.ctl); /* when start-up failed before the loop had it */
    uv_run(&cp.loop, UV_RUN_DEFAULT); /* let closing handles finish */
    uv_loop_close(&cp.loop);
    if (cp.admin_ssl) SSL_CTX_free(cp.admin_ssl);
    tg_cluster_server_free(cp.cluster);
    tg_cluster_ca_free(cp.ca);
    tg_cp_session_close(&cp.session);
    TG_LOGN("cp", "stopped");
    return rc;
}

int tg_cp_cmd_migrate(int argc, char **argv)
{
    tg_cp_session_t session = {0};
    int rc = tg_cp_session_open(&session);
    if (!rc) printf("database is up to date\n");
    tg_cp_session_close(&session);
    return rc;
}

static int token_create(tg_db_t *db, const char *name)
{
    uint8_t raw[24];
    tg_random_bytes(raw, sizeof(raw));
    char *b64 = tg_base64_encode(raw, sizeof(raw));
    for (char *p = b64; *p; p++) /* URL- and header-safe alphabet */
        if (*p == '+') *p = '-';
        else if (*p == '/') *p = '_';
    char *token = tg_asprintf("tgat_%s", b64);
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(token, strlen(token), d);
    char hex[2 * TG_SHA256_LEN + 3] = "\\x", id[TG_UUID_STR_LEN + 1];
    tg_hex_encode(d, sizeof(d), hex + 2);
    tg_uuid_v4(id);
    const char *params[] = {id, name, hex};
    tg_db_err_t err;
    int rc = tg_db_run(db, &err, "INSERT INTO admin_tokens (id, name, token_digest) VALUES ($1, $2, $3::bytea)", 3, params);
    if (rc == 0) printf("%s\n", token);
    else fprintf(stderr, "tollgate: cannot store the token: %s\n", err.message);
    free(b64);
    free(token);
    return rc;
}

static int token_list(tg_db_t *db)
{
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err, "SELECT id, name, created_at, coalesce(last_used_at::text, '-') FROM admin_tokens ORDER BY created_at", 0, NULL);
    if (!res) return err.code;
    printf("%-36s  %-20s  %-30s  %s\n", "ID", "NAME", "CREATED", "LAST USED");
    for (int i = 0; i < PQntuples(res); i++)
        printf("%-36s  %-20s  %-30s  %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
    PQclear(res);
    return 0;
}

static int token_revoke(tg_db_t *db, const char *id)
{
    if (!tg_uuid_valid(tg_str_from(id))) {
        fprintf(stderr, "tollgate: '%s' is not a token id\n", id);
        return -TG_EINVAL;
    }
    const char *params[] = {id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err, "DELETE FROM admin_tokens WHERE id = $1::uuid", 1, params);
    if (!res) return err.code;
    int n = atoi(PQcmdTuples(res));
    PQclear(res);
    if (n == 0) fprintf(stderr, "tollgate: no admin token with id %s\n", id);
    return n ? 0 : -TG_ENOTFOUND;
}

int tg_cp_cmd_admin_token(int argc, char **argv)
{
    const char *verb = argc > 0 ? argv[0] : "";
    const char *name = "admin";
    if (strcmp(verb, "create") == 0 && argc == 3 && strcmp(argv[1], "--name") == 0) name = argv[2];
    else if (!((strcmp(verb, "create") == 0 && argc == 1) || (strcmp(verb, "list") == 0 && argc == 1) ||
               (strcmp(verb, "revoke") == 0 && argc == 2))) {
        fprintf(stderr, "usage: tollgate cp admin-token create [--name NAME] | list | revoke ID\n");
        return -TG_EINVAL;
    }
    tg_cp_session_t session = {0};
    int rc = tg_cp_session_open(&session);
    if (!rc && strcmp(verb, "create") == 0) rc = token_create(&session.db, name);
    else if (!rc && strcmp(verb, "list") == 0) rc = token_list(&session.db);
    else if (!rc) rc = token_revoke(&session.db, argv[1]);
    tg_cp_session_close(&session);
    return rc;
}
