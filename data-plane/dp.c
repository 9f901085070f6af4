/*
 * dp.c — the data plane's `dp start` (control thread, workers, status listener, control
 * socket, signals); `dp reload` is the control socket's client (dp_ctl.c). The main thread
 * is the control thread: it loads configuration, writes the store, compiles generations and
 * publishes them to the workers (worker.h), runs the control plane sync client
 * (sync_client.h) and serves status_listen. See dp.h.
 */
#include "dp.h"
#include "dp_ctl.h"
#include "alloc.h"
#include "config.h"
#include "crypto.h"
#include "dp_join.h"
#include "dp_load.h"
#include "dp_status.h"
#include "error.h"
#include "log.h"
#include "realm_lookup.h"
#include "sync_client.h"
#include "tls.h"
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_WORKERS 256
#define DRAIN_MS 10000

typedef struct dp {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup;
    tg_store_t *store;
    tg_worker_t *workers;
    int nworkers;
    tg_generation_t *gen;
    tg_dp_status_t status;
    tg_listen_addr_t listen[TG_WORKER_MAX_LISTENERS];
    int nlisten;
    SSL_CTX *server_ssl, *upstream_ssl;
    int log_fd;
    const char *decl_path; /* NULL: control-plane mode */
    bool cluster;          /* enrolled or cluster_control_plane set: sync from a control plane */
    tg_sync_client_t *sync;
    struct tg_realm_lookup *realms; /* realm key lookups over the sync stream (cluster mode) */
    char *pid_path;
    tg_dp_ctl_t ctl; /* the control socket: status, reload (dp_ctl.h) */
} dp_t;

/* ---------------------------------------------------------------- generations */

/* Makes `g` the generation every worker serves from (the old one lives on in requests). */
static void publish(dp_t *dp, tg_generation_t *g)
{
    for (int i = 0; i < dp->status.nworkers; i++)
        tg_worker_publish(&dp->workers[i], g);
    tg_generation_unref(dp->gen);
    dp->gen = g;
    dp->status.gen = g;
    TG_LOGN("dp",
            "serving configuration version %lld (%zu services, %zu routes, %zu plugins, "
            "hash %.16s...)",
            (long long)g->version, json_array_size(g->services), json_array_size(g->routes),
            json_array_size(g->plugins), g->hash);
}

static int load_initial(dp_t *dp)
{
    tg_generation_t *g = NULL;
    if (dp->decl_path) {
        int rc = tg_dp_load_declarative(dp->store, dp->decl_path, NULL, &g);
        if (rc != 0) {
            TG_LOGE("dp", "declarative_config %s was refused; not starting", dp->decl_path);
            return rc < 0 ? rc : -TG_ECONFIG;
        }
    } else {
        TG_LOGN("dp", "%s",
                dp->cluster ? "control-plane mode: serving the stored configuration "
                              "until the control plane sends a newer one"
                            : "no declarative_config and not enrolled with a control "
                              "plane (`tollgate dp join`): serving the stored "
                              "configuration");
        int rc = tg_dp_load_store(dp->store, &g);
        if (rc == -TG_ENOTFOUND) {
            TG_LOGW("dp", "the store holds no configuration: answering 404 until one arrives");
            return 0;
        }
        if (rc != 0) return rc;
    }
    publish(dp, g);
    return 0;
}

static int reload(dp_t *dp)
{
    if (!dp->decl_path) {
        TG_LOGN("dp", "SIGHUP: nothing to reload without declarative_config (%s)",
                dp->cluster ? "the control plane pushes changes" : "not enrolled either");
        return -TG_ENOTFOUND;
    }
    TG_LOGN("dp", "SIGHUP: reloading %s", dp->decl_path);
    tg_generation_t *g = NULL;
    int rc = tg_dp_load_declarative(dp->store, dp->decl_path, dp->gen, &g);
    if (rc == 1) {
        TG_LOGN("dp", "%s is unchanged; still serving version %lld", dp->decl_path,
                (long long)(dp->gen ? dp->gen->version : 0));
        dp->status.reloads_ok++;
    } else if (rc < 0) {
        TG_LOGE("dp", "reload refused; still serving configuration version %lld",
                (long long)(dp->gen ? dp->gen->version : 0));
        dp->status.reloads_failed++;
    } else {
        publish(dp, g);
        dp->status.reloads_ok++;
    }
    return rc;
}

/* `tollgate dp reload` over the control socket: the same path as SIGHUP. */
static int ctl_reload(void *ud)
{
    return reload(ud);
}

/* ---------------------------------------------------------------- signals */

static void shutdown_dp(dp_t *dp)
{
    tg_sync_client_stop(dp->sync); /* its handles finish closing while the loop drains */
    tg_realm_lookup_close(dp->realms); /* parked requests get UNAVAILABLE; handles close */
    tg_dp_ctl_close(&dp->ctl);
    tg_dp_status_close(&dp->status);
    uv_handle_t *handles[] = {(uv_handle_t *)&dp->sigint, (uv_handle_t *)&dp->sigterm,
                              (uv_handle_t *)&dp->sighup};
    for (size_t i = 0; i < 3; i++)
        if (handles[i]->loop && !uv_is_closing(handles[i])) uv_close(handles[i], NULL);
    for (int i = 0; i < dp->status.nworkers; i++)
        tg_worker_stop(&dp->workers[i]);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    dp_t *dp = sig->data;
    if (signum == SIGHUP) {
        reload(dp);
        return;
    }
    TG_LOGN("dp", "received %s, stopping: no new connections, finishing requests in flight",
            signum == SIGINT ? "SIGINT" : "SIGTERM");
    shutdown_dp(dp);
}

static void start_signals(dp_t *dp)
{
    uv_signal_t *s[] = {&dp->sigint, &dp->sigterm, &dp->sighup};
    int nums[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&dp->loop, s[i]);
        s[i]->data = dp;
        uv_signal_start(s[i], on_signal, nums[i]);
    }
}

/* ---------------------------------------------------------------- start-up pieces */

static int read_settings(dp_t *dp)
{
    long n;
    if (tg_config_int(TG_CONF_worker_threads, 0, MAX_WORKERS, &n) != 0) {
        TG_LOGE("dp", "worker_threads must be an integer between 0 and %d", MAX_WORKERS);
        return -TG_ECONFIG;
    }
    dp->nworkers = n > 0 ? (int)n : (int)uv_available_parallelism();
    if (dp->nworkers > MAX_WORKERS) dp->nworkers = MAX_WORKERS;
    dp->nlisten = tg_config_listeners(TG_CONF_proxy_listen, dp->listen, TG_WORKER_MAX_LISTENERS);
    if (dp->nlisten < 0) {
        TG_LOGE("dp", "invalid proxy_listen '%s'", tg_config_get(TG_CONF_proxy_listen));
        return -TG_ECONFIG;
    }
    const char *decl = tg_config_get(TG_CONF_declarative_config);
    dp->decl_path = *decl ? decl : NULL;
    dp->status.mode = dp->decl_path ? "standalone" : "control_plane";
    char *enrolment = tg_config_prefix_path(TG_DP_CLUSTER_DIR "/cluster.json");
    bool enrolled = access(enrolment, F_OK) == 0;
    dp->cluster = !dp->decl_path && (*tg_config_get(TG_CONF_cluster_control_plane) || enrolled);
    if (dp->decl_path && enrolled)
        TG_LOGN("dp",
                "declarative_config is set: running standalone, not syncing with the "
                "control plane this prefix is enrolled with (%s)",
                enrolment);
    free(enrolment);
    dp->log_fd = tg_access_log_open(tg_config_get(TG_CONF_proxy_access_log));
    return dp->log_fd == -2 ? -TG_ECONFIG : 0;
}

static int open_store(dp_t *dp)
{
    const char *prefix = tg_config_get(TG_CONF_prefix);
    if (tg_mkdir_p(prefix, 0755) != 0) {
        TG_LOGE("dp", "cannot create prefix %s: %s", prefix, strerror(errno));
        return -TG_ESYS;
    }
    char *dir = tg_config_prefix_path("dp");
    int rc = tg_store_open(dir, 0, &dp->store);
    if (rc != 0) TG_LOGE("dp", "cannot open the config store %s: %s", dir, tg_strerror(rc));
    free(dir);
    return rc;
}

/* ssl_cert/ssl_cert_key (Kong's names), else a self-signed pair under <prefix>/certs. */
static int tls_contexts(dp_t *dp)
{
    dp->upstream_ssl = tg_tls_client_ctx_new(NULL, false);
    bool any = false;
    for (int i = 0; i < dp->nlisten; i++)
        any |= dp->listen[i].ssl != 0;
    if (!any) return dp->upstream_ssl ? 0 : -TG_ECONFIG;
    const char *cfg_cert = tg_config_get(TG_CONF_ssl_cert);
    char *cert = *cfg_cert ? tg_strdup(cfg_cert) : tg_config_prefix_path("certs/proxy.crt");
    char *key = *cfg_cert ? tg_strdup(tg_config_get(TG_CONF_ssl_cert_key))
                          : tg_config_prefix_path("certs/proxy.key");
    char err[512], host[256] = "localhost";
    int rc = 0;
    gethostname(host, sizeof(host) - 1);
    char *certs = tg_config_prefix_path("certs");
    if (!*cfg_cert && (tg_mkdir_p(certs, 0700) != 0 ||
                       tg_selfsigned_cert_ensure(host, cert, key, err, sizeof(err)) != 0)) {
        TG_LOGE("dp", "proxy certificate: %s", err);
        rc = -TG_ECONFIG;
    } else if (!(dp->server_ssl = tg_tls_server_ctx_new(cert, key, err, sizeof(err)))) {
        TG_LOGE("dp", "proxy TLS: %s", err);
        rc = -TG_ECONFIG;
    }
    free(certs);
    free(cert);
    free(key);
    return rc;
}

/* The realm lookup service sends over the sync client, which starts after the workers. */
static int realm_send(void *ud, uint64_t id, const char *realm_id, const uint8_t digest[32])
{
    dp_t *dp = ud;
    return dp->sync ? tg_sync_client_realm_lookup(dp->sync, id, realm_id, digest) : -TG_ECLOSED;
}

/* Only a DP with a control plane can ask realms; a standalone one finds its realm sources
 * unavailable (key-auth answers 503 when nothing else knows the key). */
static int start_realms(dp_t *dp)
{
    if (!dp->cluster) return 0;
    long entries, stale_s, timeout_ms, in_flight;
    if (tg_config_int(TG_CONF_realm_cache_size, 1, 100000000, &entries) != 0 ||
        tg_config_int(TG_CONF_realm_stale_ttl, 0, 30L * 86400, &stale_s) != 0 ||
        tg_config_int(TG_CONF_realm_lookup_timeout, 1, 600000, &timeout_ms) != 0 ||
        tg_config_int(TG_CONF_realm_lookups_max, 1, 1000000, &in_flight) != 0) {
        TG_LOGE("dp", "realm_cache_size, realm_stale_ttl, realm_lookup_timeout and "
                      "realm_lookups_max must be positive integers (see lib/config.def)");
        return -TG_ECONFIG;
    }
    tg_realm_lookup_opts_t o = {.cache_entries = (size_t)entries,
                                .stale_ms = (int64_t)stale_s * 1000,
                                .timeout_ms = timeout_ms,
                                .max_in_flight = (size_t)in_flight,
                                .send = realm_send,
                                .send_ud = dp};
    dp->realms = tg_realm_lookup_new(&dp->loop, dp->nworkers, &o);
    dp->status.realms = dp->realms;
    return dp->realms ? 0 : -TG_ESYS;
}

static int start_workers(dp_t *dp)
{
    dp->workers = tg_calloc((size_t)dp->nworkers, sizeof(*dp->workers));
    tg_worker_opts_t opts = {
        .listen = dp->listen,
        .nlisten = dp->nlisten,
        .server_ssl = dp->server_ssl,
        .upstream_ssl = dp->upstream_ssl,
        .store = dp->store,
        .log_fd = dp->log_fd,
        .drain_ms = DRAIN_MS,
        .realms = dp->realms,
    };
    dp->status.workers = dp->workers;
    for (int i = 0; i < dp->nworkers; i++) {
        int rc = tg_worker_init(&dp->workers[i], i, &opts);
        dp->status.nworkers = i + 1;
        if (rc != 0) return rc;
        if (dp->gen) tg_worker_publish(&dp->workers[i], dp->gen);
    }
    for (int i = 0; i < dp->nworkers; i++)
        if (tg_worker_start(&dp->workers[i]) != 0) return -TG_ESYS;
    for (int i = 0; i < dp->nlisten; i++)
        TG_LOGN("dp", "proxy listening on %s:%d%s (%d workers)", dp->listen[i].host,
                dp->listen[i].port, dp->listen[i].ssl ? " ssl" : "", dp->nworkers);
    return 0;
}

/* A generation the sync client compiled after applying a change: serve it. */
static void on_sync_publish(void *ud, tg_generation_t *g)
{
    publish(ud, g);
}

static int start_sync(dp_t *dp)
{
    if (!dp->cluster) return 0;
    tg_sync_client_opts_t o = {
        .loop = &dp->loop,
        .store = dp->store,
        .endpoints = tg_config_get(TG_CONF_cluster_control_plane),
        .publish = on_sync_publish,
        .publish_ud = dp,
        .realms = dp->realms,
    };
    int rc = tg_sync_client_start(&o, &dp->sync);
    dp->status.sync = dp->sync;
    return rc;
}

static void write_pid(dp_t *dp)
{
    dp->pid_path = tg_config_prefix_path("dp.pid");
    FILE *f = fopen(dp->pid_path, "w");
    if (!f) return;
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
}

static void teardown(dp_t *dp)
{
    tg_sync_client_free(dp->sync); /* before the store it writes */
    for (int i = 0; i < dp->status.nworkers; i++)
        tg_worker_join(&dp->workers[i]);
    tg_realm_lookup_free(dp->realms); /* after the workers detached from it */
    free(dp->workers);
    tg_generation_unref(dp->gen);
    tg_store_close(dp->store);
    if (dp->server_ssl) SSL_CTX_free(dp->server_ssl);
    if (dp->upstream_ssl) SSL_CTX_free(dp->upstream_ssl);
    if (dp->log_fd > STDERR_FILENO) close(dp->log_fd);
    if (dp->pid_path) unlink(dp->pid_path);
    free(dp->pid_path);
}

/* ---------------------------------------------------------------- commands */

int tg_dp_cmd_start(int argc, char **argv)
{
    static dp_t dp;
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&dp.loop);
    int rc = read_settings(&dp);
    dp.ctl = (tg_dp_ctl_t){.status = &dp.status, .decl_path = dp.decl_path, .reload = ctl_reload,
                           .reload_ud = &dp};
    if (!rc) rc = tg_dp_ctl_open(&dp.ctl); /* first: a second DP on this prefix stops here */
    if (!rc) rc = open_store(&dp);
    if (!rc) rc = load_initial(&dp);
    if (!rc) rc = tls_contexts(&dp);
    if (!rc) rc = start_realms(&dp);
    if (!rc) rc = start_workers(&dp);
    if (!rc) rc = tg_dp_status_listen(&dp.status, &dp.loop);
    if (!rc) rc = start_sync(&dp);
    dp.ctl.store = dp.store;
    if (!rc) rc = tg_dp_ctl_start(&dp.ctl, &dp.loop);
    if (!rc) {
        start_signals(&dp);
        write_pid(&dp);
        TG_LOGN("dp", "data plane ready (%s mode, tollgate %s)", dp.status.mode, TG_VERSION);
    } else {
        shutdown_dp(&dp);
    }
    uv_run(&dp.loop, UV_RUN_DEFAULT);
    teardown(&dp);
    uv_loop_close(&dp.loop);
    TG_LOGN("dp", "stopped");
    return rc;
}
