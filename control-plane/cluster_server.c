/*
 * cluster_server.c — libwebsockets on the control plane's loop: join requests and sync
 * sessions (cluster_server.h).
 *
 * Client certificates are requested but not required at the TLS layer (LWS's
 * REQUIRE_VALID_OPENSSL_CLIENT_CERT + PEER_CERT_NOT_REQUIRED): a joining data plane has none
 * yet, while one presenting a certificate from another CA fails the handshake. /v1/sync then
 * insists on a verified certificate before the websocket upgrade is accepted.
 */
#include "cluster_server.h"

#include "alloc.h"
#include "config.h"
#include "join.h"
#include "log.h"
#include "sync_frame.h"

#include <libwebsockets.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "cluster"
#define JOIN_BODY_MAX 65536

struct tg_cluster_server {
    tg_cluster_server_opts_t o;
    struct lws_context *ctx;
    tg_sync_hub_t *hub;
    json_t *endpoints;
    char *cert_pem, *key_pem;
    const char *ca_pem;
    bool stopped;
};

/* ---------------------------------------------------------------- join requests */

typedef struct join_job join_job_t;

typedef struct http_pss {
    join_job_t *job;
    char *body;
    size_t body_len;
    bool too_big, post;
    char path[128], query[128], auth[256], peer[64];
} http_pss_t;

struct join_job {
    tg_job_t job;
    tg_cluster_server_t *cs;
    struct lws *wsi; /* NULL once the connection closed */
    tg_join_http_req_t req;
    tg_join_http_resp_t resp;
    char method[8], path[128], query[128], auth[256], peer[64];
    char *body;
    const char **endpoints;
    size_t nendpoints;
    bool done;
};

static void join_run(tg_job_t *job, tg_db_t *db)
{
    join_job_t *j = (join_job_t *)job;
    tg_join_handle(db, j->cs->o.ca, j->endpoints, j->nendpoints, &j->req, &j->resp);
}

static void join_free(join_job_t *j)
{
    free(j->resp.body);
    free(j->body);
    free(j->endpoints);
    free(j);
}

static void join_done(tg_job_t *job)
{
    join_job_t *j = (join_job_t *)job;
    j->done = true;
    if (!j->wsi) {
        join_free(j);
        return;
    }
    lws_callback_on_writable(j->wsi);
}

static void submit_join(tg_cluster_server_t *cs, struct lws *wsi, http_pss_t *pss)
{
    join_job_t *j = tg_calloc(1, sizeof(*j));
    j->cs = cs;
    j->wsi = wsi;
    snprintf(j->method, sizeof(j->method), "%s", pss->post ? "POST" : "GET");
    memcpy(j->path, pss->path, sizeof(j->path));
    memcpy(j->query, pss->query, sizeof(j->query));
    memcpy(j->auth, pss->auth, sizeof(j->auth));
    memcpy(j->peer, pss->peer, sizeof(j->peer));
    j->body = pss->body;
    pss->body = NULL;
    /* No list of ours: tg_join_handle reads the CP nodes' endpoints from PostgreSQL for each
     * join, so a DP joining through this node also learns of nodes started after it. */
    j->endpoints = tg_calloc(1, sizeof(char *));
    j->nendpoints = 0;
    j->req = (tg_join_http_req_t){
        j->method,     j->path, j->query[0] ? j->query : NULL, j->auth[0] ? j->auth : NULL, j->body,
        pss->body_len, j->peer};
    j->job.run = join_run;
    j->job.done = join_done;
    pss->job = j;
    tg_workers_submit(cs->o.workers, &j->job);
}

static int write_join_response(struct lws *wsi, http_pss_t *pss)
{
    join_job_t *j = pss->job;
    if (!j || !j->done) return 0;
    const char *body = j->resp.body ? j->resp.body : "{}";
    size_t len = strlen(body);
    uint8_t head[LWS_PRE + 1024], *start = head + LWS_PRE, *p = start,
                                  *end = head + sizeof(head) - 1;
    if (lws_add_http_common_headers(wsi, (unsigned)j->resp.status, "application/json", len, &p,
                                    end))
        return -1;
    if (j->resp.signature[0] &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"x-tollgate-signature:",
                                    (const unsigned char *)j->resp.signature,
                                    (int)strlen(j->resp.signature), &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
    uint8_t *out = tg_malloc(LWS_PRE + len + 1);
    memcpy(out + LWS_PRE, body, len);
    int rc = lws_write(wsi, out + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
    free(out);
    pss->job = NULL;
    join_free(j);
    if (rc < (int)len) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int http_request(tg_cluster_server_t *cs, struct lws *wsi, http_pss_t *pss, const char *uri)
{
    memset(pss, 0, sizeof(*pss));
    snprintf(pss->path, sizeof(pss->path), "%s", uri);
    pss->post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    if (strncmp(pss->path, "/v1/join/", 9) != 0) {
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    char arg[80];
    const char *tok = lws_get_urlarg_by_name(wsi, "token_id=", arg, sizeof(arg));
    if (tok) snprintf(pss->query, sizeof(pss->query), "token_id=%s", tok);
    if (lws_hdr_copy(wsi, pss->auth, sizeof(pss->auth), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        pss->auth[0] = '\0';
    lws_get_peer_simple(wsi, pss->peer, sizeof(pss->peer));
    if (!pss->post) submit_join(cs, wsi, pss); /* a POST waits for its body */
    return 0;
}

static int http_body(struct lws *wsi, http_pss_t *pss, const void *in, size_t len)
{
    if (pss->too_big || pss->body_len + len > JOIN_BODY_MAX) {
        pss->too_big = true;
        return 0;
    }
    pss->body = tg_realloc(pss->body, pss->body_len + len + 1);
    memcpy(pss->body + pss->body_len, in, len);
    pss->body_len += len;
    pss->body[pss->body_len] = '\0';
    return 0;
}

static int http_body_done(tg_cluster_server_t *cs, struct lws *wsi, http_pss_t *pss)
{
    if (pss->too_big) {
        lws_return_http_status(wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, NULL);
        return -1;
    }
    if (!pss->body) pss->body = tg_strdup("");
    submit_join(cs, wsi, pss);
    return 0;
}

/* Client certificates are verified against the cluster CA (and nothing else). */
static int trust_cluster_ca(tg_cluster_server_t *cs, SSL_CTX *ctx)
{
    BIO *bio = BIO_new_mem_buf(cs->ca_pem, -1);
    X509 *ca = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    int rc = ca && X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca) == 1 ? 0 : 1;
    X509_free(ca);
    BIO_free(bio);
    if (rc) TG_LOGE(MOD, "cannot trust the cluster CA for client certificates");
    return rc;
}

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    if (reason == LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS)
        return trust_cluster_ca(lws_context_user(lws_get_context(wsi)), user);
    tg_cluster_server_t *cs = lws_context_user(lws_get_context(wsi));
    http_pss_t *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return http_request(cs, wsi, pss, in);
    case LWS_CALLBACK_HTTP_BODY:
        return http_body(wsi, pss, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return http_body_done(cs, wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return write_join_response(wsi, pss);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss && pss->job) {
            if (pss->job->done)
                join_free(pss->job);
            else
                pss->job->wsi = NULL; /* join_done frees it */
            pss->job = NULL;
        }
        if (pss) {
            free(pss->body);
            pss->body = NULL;
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* ---------------------------------------------------------------- sync sessions */

typedef struct ws_pss {
    tg_sync_session_t *s;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    bool closing;
} ws_pss_t;

/* The verified client certificate's identity; false refuses the upgrade. */
static bool peer_identity(struct lws *wsi, char node[37], char cp[37], char serial[41])
{
    SSL *ssl = lws_get_ssl(wsi);
    if (!ssl) return false;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    long verify = SSL_get_verify_result(ssl);
    bool ok = cert && verify == X509_V_OK && tg_cluster_cert_identity(cert, node, cp) == 0 &&
              tg_cluster_cert_serial(cert, serial) == 0;
    if (cert && !ok)
        TG_LOGW(MOD, "client certificate refused: %s",
                verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "no identity in it");
    X509_free(cert);
    return ok;
}

static int ws_filter(struct lws *wsi)
{
    char uri[64] = "";
    lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI);
    char node[37], cp[37], serial[41], peer[64] = "";
    lws_get_peer_simple(wsi, peer, sizeof(peer));
    if (strcmp(uri, TG_SYNC_PATH) != 0) {
        TG_LOGW(MOD, "%s: websocket upgrade on %s refused (only %s)", peer, uri, TG_SYNC_PATH);
        return 1;
    }
    if (!peer_identity(wsi, node, cp, serial)) {
        TG_LOGW(MOD, "%s: sync refused: no client certificate from the cluster CA", peer);
        return 1;
    }
    return 0;
}

static void ws_wake(void *conn)
{
    lws_callback_on_writable(conn);
}

static void ws_close(void *conn)
{
    ws_pss_t *pss = lws_wsi_user(conn);
    if (pss) pss->closing = true;
    lws_callback_on_writable(conn);
}

static const tg_sync_transport_t ws_transport = {ws_wake, ws_close};

static int ws_established(tg_cluster_server_t *cs, struct lws *wsi, ws_pss_t *pss)
{
    char node[37], cp[37], serial[41], peer[64] = "";
    lws_get_peer_simple(wsi, peer, sizeof(peer));
    memset(pss, 0, sizeof(*pss));
    if (!peer_identity(wsi, node, cp, serial)) return -1;
    pss->s = tg_sync_session_open(cs->hub, wsi, node, cp, serial, peer);
    return pss->s ? 0 : -1;
}

static int ws_receive(struct lws *wsi, ws_pss_t *pss, const void *in, size_t len)
{
    if (!pss->s) return -1;
    if (pss->rx_len + len > TG_SYNC_FRAME_MAX) {
        /* refused before it is buffered whole; the close frame says why (1009) */
        static const char why[] = "message above the 16 MiB frame limit";
        TG_LOGW(MOD, "data plane sent a sync message above %zu bytes: closing", TG_SYNC_FRAME_MAX);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)why,
                         sizeof(why) - 1);
        return -1;
    }
    /* lws hands a frame larger than its buffer over in pieces: a message is complete at the
     * final fragment with nothing of its payload left to come */
    bool complete = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
    if (!complete || pss->rx_len) {
        if (pss->rx_len + len > pss->rx_cap) { /* doubling: a big message costs O(n), not O(n²) */
            size_t cap = pss->rx_cap ? pss->rx_cap : 65536;
            while (cap < pss->rx_len + len)
                cap *= 2;
            pss->rx = tg_realloc(pss->rx, cap);
            pss->rx_cap = cap;
        }
        memcpy(pss->rx + pss->rx_len, in, len);
        pss->rx_len += len;
        if (!complete) {
            tg_sync_session_heard(pss->s);
            return 0;
        }
        tg_sync_session_receive(pss->s, pss->rx, pss->rx_len);
        free(pss->rx);
        pss->rx = NULL;
        pss->rx_len = pss->rx_cap = 0;
        return 0;
    }
    tg_sync_session_receive(pss->s, in, len);
    return 0;
}

static int ws_writeable(struct lws *wsi, ws_pss_t *pss)
{
    if (!pss->s) return -1;
    uint8_t *data;
    size_t len;
    int rc = tg_sync_session_next(pss->s, &data, &len);
    if (rc < 0 || (rc == 0 && pss->closing)) return -1;
    if (rc == 0) return 0;
    if (lws_write(wsi, data, len, LWS_WRITE_BINARY) < (int)len) return -1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int cb_sync(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    tg_cluster_server_t *cs = lws_context_user(lws_get_context(wsi));
    ws_pss_t *pss = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return ws_filter(wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return ws_established(cs, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return ws_receive(wsi, pss, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_writeable(wsi, pss);
    case LWS_CALLBACK_CLOSED:
        if (pss && pss->s) tg_sync_session_closed(pss->s);
        if (pss) {
            pss->s = NULL;
            free(pss->rx);
            pss->rx = NULL;
            pss->rx_len = pss->rx_cap = 0;
        }
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {"http", cb_http, sizeof(http_pss_t), 0, 0, NULL, 0},
    {TG_SYNC_SUBPROTOCOL, cb_sync, sizeof(ws_pss_t), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---------------------------------------------------------------- lifecycle */

static void lws_to_our_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        TG_LOGE("lws", "%.*s", (int)n, line);
    else
        TG_LOGW("lws", "%.*s", (int)n, line);
}

static int split_listen(const char *listen, char *host, size_t hostcap, int *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon) return -1;
    size_t hl = (size_t)(colon - listen);
    if (hl >= hostcap) return -1;
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

/* The change log's retention keys (sync-protocol rule 8); a bad value stops the start. */
static int retention(tg_sync_hub_opts_t *ho)
{
    long versions, interval;
    const char *days_text = tg_config_get(TG_CONF_cluster_changelog_keep_days);
    char *end = NULL;
    double days = strtod(days_text, &end);
    if (tg_config_int(TG_CONF_cluster_changelog_keep_versions, 1, 1000000000L, &versions) != 0) {
        TG_LOGE(MOD, "cluster_changelog_keep_versions must be an integer from 1 to 1000000000");
        return -1;
    }
    if (end == days_text || *end || !(days >= 0 && days <= 36500)) {
        TG_LOGE(MOD, "cluster_changelog_keep_days must be a number of days from 0 to 36500");
        return -1;
    }
    if (tg_config_int(TG_CONF_cluster_changelog_purge_interval, 0, 86400, &interval) != 0) {
        TG_LOGE(MOD, "cluster_changelog_purge_interval must be seconds from 0 (never) to 86400");
        return -1;
    }
    ho->keep_versions = versions;
    ho->keep_seconds = days * 86400;
    ho->purge_interval_ms = (uint32_t)interval * 1000u;
    return 0;
}

tg_cluster_server_t *tg_cluster_server_start(const tg_cluster_server_opts_t *opts)
{
    tg_cluster_server_t *cs = tg_calloc(1, sizeof(*cs));
    cs->o = *opts;
    char host[256];
    int port;
    if (split_listen(opts->listen, host, sizeof(host), &port) != 0) {
        TG_LOGE(MOD, "cluster_listen '%s' is not host:port", opts->listen);
        free(cs);
        return NULL;
    }
    if (tg_cluster_ca_issue_server(opts->ca, opts->names, opts->nnames, 365, &cs->cert_pem,
                                   &cs->key_pem) != 0) {
        TG_LOGE(MOD, "cannot issue the cluster server certificate");
        free(cs);
        return NULL;
    }
    cs->ca_pem = tg_cluster_ca_cert_pem(opts->ca);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_to_our_log);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    void *loops[1] = {opts->loop};
    info.foreign_loops = loops;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                   LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT |
                   LWS_SERVER_OPTION_PEER_CERT_NOT_REQUIRED;
    info.port = port;
    info.iface = strcmp(host, "0.0.0.0") == 0 || !host[0] ? NULL : host;
    info.protocols = protocols;
    info.user = cs;
    info.server_ssl_cert_mem = cs->cert_pem;
    info.server_ssl_cert_mem_len = (unsigned)strlen(cs->cert_pem);
    info.server_ssl_private_key_mem = cs->key_pem;
    info.server_ssl_private_key_mem_len = (unsigned)strlen(cs->key_pem);
    info.server_ssl_ca_mem = cs->ca_pem;
    info.server_ssl_ca_mem_len = (unsigned)strlen(cs->ca_pem);
    info.ssl_options_set = SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
    info.timeout_secs = 30;
    tg_sync_hub_opts_t ho = {.loop = opts->loop,
                             .workers = opts->workers,
                             .conninfo = opts->conninfo,
                             .node_id = opts->node_id,
                             .ca = opts->ca,
                             .transport = &ws_transport,
                             .headroom = LWS_PRE};
    long hb;
    if (tg_config_int(TG_CONF_cluster_heartbeat_ms, 100, 3600000, &hb) == 0)
        ho.heartbeat_ms = (uint32_t)hb;
    if (retention(&ho) != 0) {
        free(cs->cert_pem);
        free(cs->key_pem);
        free(cs);
        return NULL;
    }
    cs->hub = tg_sync_hub_start(&ho);
    cs->ctx = lws_create_context(&info);
    if (!cs->ctx) {
        TG_LOGE(MOD, "cannot listen on %s (cluster_listen)", opts->listen);
        tg_sync_hub_stop(cs->hub);
        free(cs->cert_pem);
        free(cs->key_pem);
        free(cs);
        return NULL;
    }
    TG_LOGN(MOD, "cluster listener on %s (join and sync, TLS)", opts->listen);
    return cs;
}

tg_sync_hub_t *tg_cluster_server_hub(tg_cluster_server_t *cs)
{
    return cs->hub;
}

void tg_cluster_server_set_endpoints(tg_cluster_server_t *cs, json_t *endpoints)
{
    json_decref(cs->endpoints);
    cs->endpoints = json_incref(endpoints);
    tg_sync_hub_set_endpoints(cs->hub, endpoints);
}

void tg_cluster_server_stop(tg_cluster_server_t *cs)
{
    if (!cs || cs->stopped) return;
    cs->stopped = true;
    tg_sync_hub_stop(cs->hub);
    /* on a foreign loop the first call closes lws's handles; the loop must then run */
    lws_context_destroy(cs->ctx);
}

void tg_cluster_server_free(tg_cluster_server_t *cs)
{
    if (!cs) return;
    lws_context_destroy(cs->ctx); /* the loop has run: this call finishes the destruction */
    json_decref(cs->endpoints);
    free(cs->cert_pem);
    free(cs->key_pem);
    free(cs);
}
