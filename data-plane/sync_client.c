/*
 * sync_client.c — the data plane's sync connection: libwebsockets on a foreign libuv loop,
 * back-off, heartbeats, certificate renewal; see sync_client.h.
 *
 * libwebsockets 4.1 with a foreign loop (read from its libuv event library and its
 * minimal-http-server-eventlib-foreign example, then checked under valgrind): lws adds its own
 * handles (an idle, timers, one poll per socket) to our loop and installs no signal handlers.
 * lws_context_destroy called on the loop closes the connections and starts closing those
 * handles; the loop must run on until they are closed. What is left is freed by a second
 * lws_context_destroy after uv_run returned (the example does the same), in
 * tg_sync_client_free; uv_loop_close then finds the loop empty.
 * lws' internal timers (lws_set_timeout, sul) are re-armed only while lws services its own
 * events on a foreign loop, so our own timers (back-off, heartbeats, silence) are uv timers.
 *
 * TLS: the client SSL_CTX is ours (provided_client_ssl_ctx), not built by lws from file
 * paths, so that a renewed key and certificate can be loaded into it for the next
 * connection without recreating the lws context. lws still sets SSL_VERIFY_PEER and the
 * host name check (X509_VERIFY_PARAM_set1_host/ip_asc) on every connection.
 */
#include "sync_client.h"
#include "alloc.h"
#include "config.h"
#include "crypto.h"
#include "dp_join.h"
#include "error.h"
#include "log.h"
#include "realm_lookup.h"

#include <libwebsockets.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MOD "sync"
#define DEFAULT_PORT 8005
#define RETRY_BASE_MS 500u
#define RETRY_MAX_MS 30000u
#define RENEW_RETRY_MS (10u * 60u * 1000u) /* after a refused or lost renewal */
#define RENEW_SPACING_MS (60u * 1000u)     /* between two renewals, whatever the lifetime */
#define RX_BUFFER 65536
#define MAX_ENDPOINTS (2 * TG_SYNC_MAX_ENDPOINTS)

typedef struct queued {
    struct queued *next;
    tg_sync_frame_t f;
} queued_t;

typedef struct endpoint {
    char text[TG_SYNC_ENDPOINT_MAX]; /* as configured: host:port */
    char host[256];
    int port;
} endpoint_t;

struct tg_sync_client {
    uv_loop_t *loop;
    tg_sync_apply_t *apply;
    struct tg_realm_lookup *realms; /* borrowed; NULL: no realm lookups */
    /* <prefix>/cluster */
    char *key_path, *crt_path, *ca_path, *json_path;
    char node_id[64], server_name[256];
    endpoint_t eps[MAX_ENDPOINTS];
    size_t neps, next_ep;
    /* TLS */
    SSL_CTX *ssl;
    int64_t cert_not_before, cert_not_after;
    /* the connection: one attempt or connection at a time, ended exactly once */
    struct lws_context *ctx;
    struct lws *wsi;
    bool active, reason_set, stopping;
    queued_t *q_head, *q_tail;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    uint64_t last_rx_ms;
    unsigned attempts; /* failed attempts since the last Welcome */
    uv_timer_t retry_timer, beat_timer;
    /* renewal */
    char *renew_key; /* PEM of the key whose CSR is in flight */
    uint64_t renew_not_before_ms;
    /* status */
    char endpoint[TG_SYNC_ENDPOINT_MAX], last_error[256];
    unsigned long connects, disconnects, renewals;
};

static uint64_t now_ms(const tg_sync_client_t *c)
{
    return uv_now(c->loop);
}

/* The reason this connection ends, for logs and /status; the first one given wins. */
static void note_reason(tg_sync_client_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note_reason(tg_sync_client_t *c, const char *fmt, ...)
{
    if (c->reason_set) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
    va_end(ap);
    c->reason_set = true;
}

/* ---------------------------------------------------------------- endpoints */

/* "host:port", "[v6]:port" or "host" (port 8005); a wss:// prefix and a path are ignored. */
static int parse_endpoint(const char *in, endpoint_t *ep)
{
    while (*in == ' ' || *in == '\t')
        in++;
    if (strncmp(in, "wss://", 6) == 0) in += 6;
    size_t n = strcspn(in, "/ \t");
    if (n == 0 || n >= sizeof(ep->text)) return -TG_EINVAL;
    snprintf(ep->text, sizeof(ep->text), "%.*s", (int)n, in);
    const char *host = ep->text, *colon;
    size_t hlen;
    if (*host == '[') {
        const char *close = strchr(host, ']');
        if (!close) return -TG_EINVAL;
        host++;
        hlen = (size_t)(close - host);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strrchr(host, ':');
        hlen = colon ? (size_t)(colon - host) : strlen(host);
    }
    if (hlen == 0 || hlen >= sizeof(ep->host)) return -TG_EINVAL;
    snprintf(ep->host, sizeof(ep->host), "%.*s", (int)hlen, host);
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : DEFAULT_PORT;
    if (colon && (end == colon + 1 || *end || port < 1 || port > 65535)) return -TG_EINVAL;
    ep->port = (int)port;
    return 0;
}

/* Adds an endpoint unless known. */
static void add_endpoint(tg_sync_client_t *c, const char *text)
{
    endpoint_t ep;
    if (!text || parse_endpoint(text, &ep) != 0) {
        TG_LOGW(MOD, "ignoring control plane endpoint '%s': not host:port", text ? text : "");
        return;
    }
    for (size_t i = 0; i < c->neps; i++)
        if (strcmp(c->eps[i].text, ep.text) == 0) return;
    if (c->neps < MAX_ENDPOINTS) c->eps[c->neps++] = ep;
}

static void add_endpoint_list(tg_sync_client_t *c, const char *list)
{
    char *copy = tg_strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (tok[strspn(tok, " \t")]) add_endpoint(c, tok);
    free(copy);
}

/* ---------------------------------------------------------------- cluster files */

/* The enrolment `dp join` left (cluster.json), or with cluster_control_plane set and no
 * cluster.json, the files under <prefix>/cluster with the node id from the certificate. */
static int read_enrolment(tg_sync_client_t *c, const char *configured)
{
    tg_dp_enrolment_t e;
    char err[256] = "";
    int rc = tg_dp_enrolment_load(&e, err, sizeof(err));
    bool have_list = configured && *configured;
    if (rc == -TG_ENOTFOUND && have_list) {
        c->key_path = tg_config_prefix_path(TG_DP_CLUSTER_DIR "/dp.key");
        c->crt_path = tg_config_prefix_path(TG_DP_CLUSTER_DIR "/dp.crt");
        c->ca_path = tg_config_prefix_path(TG_DP_CLUSTER_DIR "/ca.crt");
    } else if (rc != 0) {
        TG_LOGE(MOD, "%s",
                rc == -TG_ENOTFOUND
                    ? "this data plane is not enrolled: run `tollgate dp join` first"
                    : err);
        return -TG_ECONFIG;
    } else {
        c->key_path = e.key_path, c->crt_path = e.cert_path, c->ca_path = e.ca_path;
        e.key_path = e.cert_path = e.ca_path = NULL;
        c->json_path = tg_asprintf("%s/cluster.json", e.dir);
        snprintf(c->node_id, sizeof(c->node_id), "%s", e.node_id);
        snprintf(c->server_name, sizeof(c->server_name), "%s", e.server_name);
        size_t i;
        json_t *ep;
        if (!have_list)
            json_array_foreach(e.endpoints, i, ep) add_endpoint(c, json_string_value(ep));
        tg_dp_enrolment_free(&e);
    }
    if (have_list) add_endpoint_list(c, configured);
    if (c->neps == 0) {
        TG_LOGE(MOD, "no usable control plane endpoint: set cluster_control_plane or re-run join");
        return -TG_ECONFIG;
    }
    /* the name the control plane's certificate must carry: the host given at join */
    if (!c->server_name[0]) snprintf(c->server_name, sizeof(c->server_name), "%s", c->eps[0].host);
    return 0;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    return t && ASN1_TIME_to_tm(t, &tm) == 1 ? (int64_t)timegm(&tm) : 0;
}

/* Validity of the certificate in the SSL_CTX; node id from its CN when cluster.json has none. */
static void read_cert_facts(tg_sync_client_t *c)
{
    X509 *x = SSL_CTX_get0_certificate(c->ssl);
    if (!x) return;
    c->cert_not_before = asn1_unix(X509_get0_notBefore(x));
    c->cert_not_after = asn1_unix(X509_get0_notAfter(x));
    if (!c->node_id[0])
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, c->node_id,
                                  sizeof(c->node_id));
}

static void ssl_error(const char *what, const char *path)
{
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    ERR_clear_error();
    TG_LOGE(MOD, "%s %s: %s", what, path, buf);
}

/* Loads key and certificate into ctx; they must match. */
static int load_identity(SSL_CTX *ctx, const char *crt, const char *key)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1) {
        ssl_error("cannot load the client certificate", crt);
        return -TG_ECONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error("the private key does not load or does not match the certificate:", key);
        return -TG_ECONFIG;
    }
    return 0;
}

static int build_ssl(tg_sync_client_t *c)
{
    c->ssl = SSL_CTX_new(TLS_client_method());
    if (!c->ssl) return -TG_ETLS;
    SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(c->ssl, c->ca_path, NULL) != 1) {
        ssl_error("cannot load the cluster CA", c->ca_path);
        return -TG_ECONFIG;
    }
    int rc = load_identity(c->ssl, c->crt_path, c->key_path);
    if (rc == 0) read_cert_facts(c);
    return rc;
}

/* Whether the certificate and the key in these PEM files belong together. */
static bool pair_matches(const char *crt_path, const char *key_path)
{
    FILE *fc = fopen(crt_path, "r"), *fk = fopen(key_path, "r");
    X509 *x = fc ? PEM_read_X509(fc, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = fk ? PEM_read_PrivateKey(fk, NULL, NULL, NULL) : NULL;
    bool ok = x && k && X509_check_private_key(x, k) == 1;
    if (fc) fclose(fc);
    if (fk) fclose(fk);
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return ok;
}

/*
 * A renewal replaces dp.key then dp.crt, each by rename, after writing both as *.new. A
 * crash between the two renames leaves a new key with the old certificate; this finishes
 * (or discards) such an interrupted renewal so the pair on disk always matches.
 */
static void recover_renewal(tg_sync_client_t *c)
{
    char *crt_new = tg_asprintf("%s.new", c->crt_path),
         *key_new = tg_asprintf("%s.new", c->key_path);
    if (access(crt_new, F_OK) == 0) {
        if (access(key_new, F_OK) == 0 && pair_matches(crt_new, key_new))
            (void)rename(key_new, c->key_path);
        if (pair_matches(crt_new, c->key_path) && rename(crt_new, c->crt_path) == 0)
            TG_LOGN(MOD, "finished a certificate renewal interrupted by a restart");
    }
    unlink(crt_new);
    unlink(key_new);
    free(crt_new);
    free(key_new);
}

/* ---------------------------------------------------------------- sending */

static void queue_frame(tg_sync_client_t *c, tg_sync_frame_t f)
{
    queued_t *q = tg_calloc(1, sizeof(*q));
    q->f = f;
    if (c->q_tail)
        c->q_tail->next = q;
    else
        c->q_head = q;
    c->q_tail = q;
    if (c->wsi) lws_callback_on_writable(c->wsi);
}

static void queue_clear(tg_sync_client_t *c)
{
    while (c->q_head) {
        queued_t *q = c->q_head;
        c->q_head = q->next;
        free(q->f.buf);
        free(q);
    }
    c->q_tail = NULL;
}

static int on_writable(tg_sync_client_t *c, struct lws *wsi)
{
    queued_t *q = c->q_head;
    if (!q) return 0;
    c->q_head = q->next;
    if (!c->q_head) c->q_tail = NULL;
    int n = lws_write(wsi, q->f.frame, q->f.len, LWS_WRITE_BINARY);
    bool ok = n >= 0 && (size_t)n >= q->f.len;
    free(q->f.buf);
    free(q);
    if (!ok) {
        note_reason(c, "cannot write to the connection");
        return -1;
    }
    if (c->q_head) lws_callback_on_writable(wsi);
    return 0;
}

/* ---------------------------------------------------------------- reconnecting */

static void connect_next(tg_sync_client_t *c);

static void on_retry(uv_timer_t *t)
{
    connect_next(t->data);
}

/* Jittered exponential back-off: 0.5 s doubling to 30 s, each delay drawn in [d/2, d]. */
static uint64_t backoff_ms(unsigned attempts)
{
    uint64_t d = RETRY_BASE_MS;
    for (unsigned i = 1; i < attempts && d < RETRY_MAX_MS; i++)
        d *= 2;
    if (d > RETRY_MAX_MS) d = RETRY_MAX_MS;
    uint32_t r;
    tg_random_bytes(&r, sizeof(r));
    return d / 2 + r % (d / 2 + 1);
}

static void schedule_retry(tg_sync_client_t *c, bool was_connected)
{
    c->attempts++;
    uint64_t delay = backoff_ms(c->attempts);
    if (was_connected)
        TG_LOGW(MOD, "lost the connection to the control plane at %s: %s; reconnecting in %llu ms",
                c->endpoint, c->last_error, (unsigned long long)delay);
    else
        TG_LOGW(MOD, "cannot sync with the control plane at %s: %s; next attempt in %llu ms",
                c->endpoint, c->last_error, (unsigned long long)delay);
    uv_timer_start(&c->retry_timer, on_retry, delay, 0);
}

/* Frees a private key's PEM text after overwriting it. */
static void wipe(char *pem)
{
    if (pem) OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
}

static void renew_forget(tg_sync_client_t *c)
{
    wipe(c->renew_key);
    c->renew_key = NULL;
}

/* The attempt or connection is over (called once per attempt, from whichever path sees it
 * first); unless stopping, the next one is scheduled. */
static void conn_ended(tg_sync_client_t *c, struct lws *wsi, const char *reason)
{
    if (!c->active || (c->wsi && wsi && wsi != c->wsi)) return;
    bool was_connected = tg_sync_apply_state(c->apply)->welcomed;
    c->active = false;
    c->wsi = NULL;
    note_reason(c, "%s", reason);
    tg_sync_apply_reset(c->apply);
    queue_clear(c);
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
    if (c->renew_key) c->renew_not_before_ms = now_ms(c) + RENEW_RETRY_MS;
    renew_forget(c);
    uv_timer_stop(&c->beat_timer);
    if (was_connected) c->disconnects++;
    if (was_connected && c->realms) tg_realm_lookup_ctl_connected(c->realms, false);
    if (!c->stopping) schedule_retry(c, was_connected);
}

static void on_beat(uv_timer_t *t);

static void connect_next(tg_sync_client_t *c)
{
    if (c->stopping || c->active) return;
    const endpoint_t *ep = &c->eps[c->next_ep++ % c->neps];
    snprintf(c->endpoint, sizeof(c->endpoint), "%s", ep->text);
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = c->ctx;
    ci.address = ep->host;
    ci.port = ep->port;
    ci.ssl_connection = LCCSCF_USE_SSL; /* verification and host name check stay on */
    ci.path = TG_SYNC_PATH;
    ci.host = c->server_name;
    ci.origin = c->server_name;
    ci.protocol = TG_SYNC_SUBPROTOCOL;
    ci.local_protocol_name = TG_SYNC_SUBPROTOCOL;
    c->active = true;
    c->reason_set = false;
    c->last_rx_ms = now_ms(c);
    TG_LOGI(MOD, "connecting to the control plane at %s (as %s)", ep->text, c->server_name);
    /* the silence watchdog also bounds a connection that never gets its Welcome */
    uv_timer_start(&c->beat_timer, on_beat, TG_SYNC_HEARTBEAT_MS_DEFAULT,
                   TG_SYNC_HEARTBEAT_MS_DEFAULT);
    struct lws *wsi = lws_client_connect_via_info(&ci);
    if (wsi && c->active)
        c->wsi = wsi;
    else if (!wsi)
        conn_ended(c, NULL, "libwebsockets could not start the connection");
}

/*
 * Ends the connection now, from outside any lws callback (a timer of ours). Not
 * LWS_TO_KILL_ASYNC: that schedules lws' internal timer, which lws 4.1 on a foreign libuv
 * loop only re-arms while servicing its own events, so a silent peer is never dropped. The
 * synchronous kill closes at once (CLIENT_CLOSED, hence conn_ended, run before it returns).
 */
static void drop(tg_sync_client_t *c)
{
    if (c->wsi) lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

/* ---------------------------------------------------------------- renewal */

/* Past 2/3 of the certificate's lifetime, asks for a new one (at most one at a time). */
static void renew_check(tg_sync_client_t *c)
{
    int64_t life = c->cert_not_after - c->cert_not_before;
    if (life <= 0 || c->renew_key || now_ms(c) < c->renew_not_before_ms) return;
    if ((int64_t)time(NULL) < c->cert_not_before + life * 2 / 3) return;
    char *key = NULL, *csr = NULL;
    if (tg_dp_join_new_key_csr(c->node_id, &key, &csr) != 0) {
        TG_LOGE(MOD, "cannot make a key and CSR for certificate renewal");
        c->renew_not_before_ms = now_ms(c) + RENEW_RETRY_MS;
        return;
    }
    Tollgate__Sync__V1__RenewRequest rr = TOLLGATE__SYNC__V1__RENEW_REQUEST__INIT;
    rr.csr_pem = csr;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_RENEW_REQUEST;
    env.renew_request = &rr;
    tg_sync_frame_t f;
    if (tg_sync_apply_pack(c->apply, &env, &f) == 0) {
        queue_frame(c, f);
        c->renew_key = key;
        TG_LOGN(MOD, "client certificate expires at %lld: asking the control plane for a new one",
                (long long)c->cert_not_after);
    } else {
        wipe(key);
    }
    free(csr);
}

/* The issued certificate must be for our new key and signed by the cluster CA. */
static const char *check_issued(const tg_sync_client_t *c, const char *pem, const char *key_pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    BIO_free(kb);
    const char *why = NULL;
    if (!x || !key)
        why = "it is not a PEM certificate";
    else if (X509_check_private_key(x, key) != 1)
        why = "it is not for the key that was sent";
    else {
        X509_STORE *store = SSL_CTX_get_cert_store(c->ssl);
        X509_STORE_CTX *sc = X509_STORE_CTX_new();
        if (!sc || X509_STORE_CTX_init(sc, store, x, NULL) != 1 || X509_verify_cert(sc) != 1)
            why = "it does not chain to the cluster CA";
        X509_STORE_CTX_free(sc);
    }
    X509_free(x);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return why;
}

/* Writes *.new files, then renames key and certificate into place (see recover_renewal). */
static int write_pair(const tg_sync_client_t *c, const char *crt_pem, const char *key_text)
{
    char *crt_new = tg_asprintf("%s.new", c->crt_path),
         *key_new = tg_asprintf("%s.new", c->key_path);
    int rc = tg_dp_join_write_file(crt_new, crt_pem, strlen(crt_pem), 0644);
    if (rc == 0) rc = tg_dp_join_write_file(key_new, key_text, strlen(key_text), 0600);
    if (rc == 0 && rename(key_new, c->key_path) != 0) rc = -TG_EIO;
    if (rc == 0 && rename(crt_new, c->crt_path) != 0) rc = -TG_EIO;
    if (rc != 0) {
        TG_LOGE(MOD, "cannot store the renewed certificate in %s: %s", c->crt_path,
                strerror(errno));
        unlink(crt_new);
        unlink(key_new);
    }
    free(crt_new);
    free(key_new);
    return rc;
}

static void on_renew_result(tg_sync_client_t *c, const Tollgate__Sync__V1__RenewResult *r)
{
    char *key = c->renew_key;
    c->renew_key = NULL;
    c->renew_not_before_ms = now_ms(c) + RENEW_RETRY_MS; /* if anything below fails */
    if (!key) {
        TG_LOGW(MOD, "a certificate renewal result nobody asked for; ignored");
        return;
    }
    const char *pem = r->certificate_pem;
    const char *why = r->error && *r->error ? r->error
                      : !pem || !*pem       ? "no certificate in the answer"
                                            : check_issued(c, pem, key);
    if (why) {
        TG_LOGW(MOD, "certificate renewal refused: %s; retrying in %u min", why,
                RENEW_RETRY_MS / 60000u);
    } else if (write_pair(c, pem, key) == 0 &&
               load_identity(c->ssl, c->crt_path, c->key_path) == 0) {
        read_cert_facts(c);
        c->renewals++;
        c->renew_not_before_ms = now_ms(c) + RENEW_SPACING_MS;
        TG_LOGN(MOD, "client certificate renewed (valid until %lld); used from the next connection",
                (long long)c->cert_not_after);
    }
    wipe(key);
}

/* ---------------------------------------------------------------- receiving */

static void on_welcomed(tg_sync_client_t *c)
{
    const tg_sync_apply_state_t *st = tg_sync_apply_state(c->apply);
    c->attempts = 0;
    c->connects++;
    c->last_error[0] = '\0';
    for (size_t i = 0; i < st->nendpoints; i++)
        add_endpoint(c, st->endpoints[i]);
    uv_timer_start(&c->beat_timer, on_beat, st->heartbeat_ms, st->heartbeat_ms);
    TG_LOGN(MOD, "connected to the control plane at %s (control plane %s, node %s)", c->endpoint,
            st->cp_id, c->node_id);
    if (c->realms) tg_realm_lookup_ctl_connected(c->realms, true);
    renew_check(c);
}

/* ---------------------------------------------------------------- realm lookups */

int tg_sync_client_realm_lookup(void *client, uint64_t request_id, const char *realm_id,
                                const uint8_t digest[32])
{
    tg_sync_client_t *c = client;
    if (!c->active || !c->wsi || !tg_sync_apply_state(c->apply)->welcomed) return -TG_ECLOSED;
    Tollgate__Sync__V1__RealmLookup m = TOLLGATE__SYNC__V1__REALM_LOOKUP__INIT;
    m.has_request_id = true;
    m.request_id = request_id;
    m.realm_id = (char *)realm_id;
    m.has_key_digest = true;
    m.key_digest = (ProtobufCBinaryData){32, (uint8_t *)digest}; /* the digest, never the key */
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_REALM_LOOKUP;
    env.realm_lookup = &m;
    tg_sync_frame_t f;
    if (tg_sync_pack(&env, LWS_PRE, &f.buf, &f.frame, &f.len) != 0) return -TG_ETOOBIG;
    queue_frame(c, f);
    return 0;
}

static void on_realm_result(tg_sync_client_t *c, const Tollgate__Sync__V1__RealmLookupResult *r)
{
    if (!c->realms || !r->has_request_id) return;
    tg_realm_lookup_ctl_result(c->realms, r->request_id, r->has_found && r->found, r->consumer_json,
                               r->has_ttl_s ? r->ttl_s : 0, r->error);
}

static void on_invalidate(tg_sync_client_t *c, const Tollgate__Sync__V1__Invalidate *m)
{
    if (!c->realms) return;
    /* digests of any other length cannot name a cached key: skipping them is exact */
    uint8_t(*digests)[32] = tg_calloc(m->n_key_digests ? m->n_key_digests : 1, 32);
    size_t nd = 0;
    for (size_t i = 0; i < m->n_key_digests; i++)
        if (m->key_digests[i].len == 32) memcpy(digests[nd++], m->key_digests[i].data, 32);
    tg_realm_lookup_ctl_invalidate(c->realms, m->realm_id, (const uint8_t(*)[32])digests, nd,
                                   (const char *const *)m->consumer_ids, m->n_consumer_ids,
                                   m->has_everything && m->everything);
    free(digests);
}

/* One complete message. TG_SYNC_CLOSE when the connection must end. */
static int dispatch(tg_sync_client_t *c, const tg_sync_env_t *env)
{
    switch (env->body_case) {
    case TOLLGATE__SYNC__V1__ENVELOPE__BODY_RENEW_RESULT:
        on_renew_result(c, env->renew_result);
        return TG_SYNC_CONTINUE;
    case TOLLGATE__SYNC__V1__ENVELOPE__BODY_REALM_LOOKUP_RESULT:
        on_realm_result(c, env->realm_lookup_result);
        return TG_SYNC_CONTINUE;
    case TOLLGATE__SYNC__V1__ENVELOPE__BODY_INVALIDATE:
        on_invalidate(c, env->invalidate);
        return TG_SYNC_CONTINUE;
    default:
        break;
    }
    if (env->body_case == TOLLGATE__SYNC__V1__ENVELOPE__BODY_ERROR) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &tollgate__sync__v1__error_code__descriptor, env->error->code);
        note_reason(c, "refused by the control plane: %s: %s", v ? v->name : "ERROR",
                    env->error->message ? env->error->message : "");
        /* A revoked DP (or one whose control plane is gone) will be refused again: knock
         * rarely rather than every few seconds. */
        if (env->error->code == TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_REVOKED) c->attempts = 64;
    }
    bool was = tg_sync_apply_state(c->apply)->welcomed;
    tg_sync_out_t out = {.n = 0};
    int rc = tg_sync_apply_handle(c->apply, env, &out);
    for (size_t i = 0; i < out.n; i++)
        queue_frame(c, out.frames[i]); /* the queue owns them now */
    if (!was && tg_sync_apply_state(c->apply)->welcomed) on_welcomed(c);
    return rc;
}

static int on_receive(tg_sync_client_t *c, struct lws *wsi, const void *in, size_t len)
{
    c->last_rx_ms = now_ms(c);
    if (!lws_frame_is_binary(wsi)) {
        note_reason(c, "the control plane sent a text message");
        lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, NULL, 0);
        return -1;
    }
    if (len > TG_SYNC_FRAME_MAX - c->rx_len) {
        note_reason(c, "the control plane sent a message above the %zu-byte limit",
                    TG_SYNC_FRAME_MAX);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, NULL, 0);
        return -1;
    }
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : RX_BUFFER;
        while (cap < c->rx_len + len)
            cap *= 2;
        c->rx = tg_realloc(c->rx, cap);
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi)) return 0;
    tg_sync_env_t *env = tg_sync_unpack(c->rx, c->rx_len);
    c->rx_len = 0;
    if (!env) {
        note_reason(c, "the control plane sent a malformed message");
        lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, NULL, 0);
        return -1;
    }
    int rc = dispatch(c, env);
    tg_sync_env_free(env);
    c->last_rx_ms = now_ms(c); /* a long apply is not the control plane's silence */
    return rc == TG_SYNC_CLOSE ? -1 : 0;
}

static void on_established(tg_sync_client_t *c, struct lws *wsi)
{
    c->wsi = wsi;
    c->last_rx_ms = now_ms(c);
    tg_sync_frame_t hello;
    if (tg_sync_apply_hello(c->apply, &hello) == 0) queue_frame(c, hello);
    TG_LOGI(MOD, "websocket open to %s; Hello sent", c->endpoint);
}

static void on_peer_close(tg_sync_client_t *c, const uint8_t *in, size_t len)
{
    unsigned code = len >= 2 ? (unsigned)(in[0] << 8 | in[1]) : 0;
    note_reason(c, "closed by the control plane (code %u%s%.*s)", code, len > 2 ? ": " : "",
                len > 2 ? (int)(len - 2) : 0, len > 2 ? (const char *)in + 2 : "");
}

/* lws asks before deciding on the control plane's certificate: its own verdict stands (0),
 * this only keeps a readable reason for a refusal (lws' connection error does not say). */
static void on_server_cert(tg_sync_client_t *c, X509_STORE_CTX *store, size_t preverify_ok)
{
    if (preverify_ok || !store) return;
    int err = X509_STORE_CTX_get_error(store);
    note_reason(c, "the control plane's certificate was refused: %s (expected name %s, CA %s)",
                X509_verify_cert_error_string(err), c->server_name, c->ca_path);
}

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    tg_sync_client_t *c = lws_context_user(lws_get_context(wsi));
    if (!c) return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        conn_ended(c, wsi, in && len ? (const char *)in : "connection failed");
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        on_established(c, wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return on_receive(c, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writable(c, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        on_peer_close(c, in, len);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        conn_ended(c, wsi, "connection closed");
        return 0;
    case LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION:
        on_server_cert(c, user, len);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY: /* a safety net: whatever path closed it */
        if (wsi == c->wsi) conn_ended(c, wsi, "connection closed");
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {TG_SYNC_SUBPROTOCOL, on_lws, 0, RX_BUFFER, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---------------------------------------------------------------- heartbeats */

static void on_beat(uv_timer_t *t)
{
    tg_sync_client_t *c = t->data;
    const tg_sync_apply_state_t *st = tg_sync_apply_state(c->apply);
    if (!c->active) return;
    uint64_t silent = now_ms(c) - c->last_rx_ms;
    if (silent >= (uint64_t)st->heartbeat_ms * TG_SYNC_SILENT_INTERVALS) {
        note_reason(c, "the control plane was silent for %llu ms", (unsigned long long)silent);
        if (c->wsi)
            drop(c);
        else
            conn_ended(c, NULL, "timed out"); /* lws never handed us the connection */
        return;
    }
    tg_sync_frame_t f;
    if (st->welcomed && tg_sync_apply_heartbeat(c->apply, &f) == 0) queue_frame(c, f);
    if (st->welcomed) renew_check(c);
}

/* ---------------------------------------------------------------- lifecycle */

static void lws_to_log(int level, const char *line)
{
    int n = (int)strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        TG_LOGW("lws", "%.*s", n, line);
    else
        TG_LOGI("lws", "%.*s", n, line);
}

static int create_context(tg_sync_client_t *c)
{
    struct lws_context_creation_info info;
    void *loops[1] = {c->loop};
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = loops;
    info.user = c;
    info.pcontext = &c->ctx;
    info.provided_client_ssl_ctx = c->ssl;
    info.timeout_secs = 15;
    info.connect_timeout_secs = 10;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_to_log);
    c->ctx = lws_create_context(&info);
    if (!c->ctx) {
        TG_LOGE(MOD, "libwebsockets cannot start (is its libuv event library, package "
                     "libwebsockets-evlib-uv, installed?)");
        return -TG_EIO;
    }
    return 0;
}

int tg_sync_client_start(const tg_sync_client_opts_t *o, tg_sync_client_t **out)
{
    tg_sync_client_t *c = tg_calloc(1, sizeof(*c));
    *out = NULL;
    c->loop = o->loop;
    c->realms = o->realms;
    int rc = read_enrolment(c, o->endpoints);
    if (rc == 0) recover_renewal(c);
    if (rc == 0) rc = build_ssl(c);
    if (rc == 0) rc = create_context(c);
    if (rc != 0) {
        tg_sync_client_free(c);
        return rc;
    }
    tg_sync_apply_opts_t ao = {
        .store = o->store,
        .node_id = c->node_id,
        .cluster_json = c->json_path, /* NULL without cluster.json */
        .headroom = LWS_PRE,
        .publish = o->publish,
        .publish_ud = o->publish_ud,
    };
    c->apply = tg_sync_apply_new(&ao);
    uv_timer_init(c->loop, &c->retry_timer);
    uv_timer_init(c->loop, &c->beat_timer);
    c->retry_timer.data = c->beat_timer.data = c;
    TG_LOGN(MOD,
            "data plane %s syncing from %zu control plane endpoint(s), first %s (certificate "
            "valid until %lld)",
            c->node_id, c->neps, c->eps[0].text, (long long)c->cert_not_after);
    uv_timer_start(&c->retry_timer, on_retry, 0, 0);
    *out = c;
    return 0;
}

void tg_sync_client_stop(tg_sync_client_t *c)
{
    if (!c || c->stopping) return;
    c->stopping = true;
    uv_handle_t *timers[] = {(uv_handle_t *)&c->retry_timer, (uv_handle_t *)&c->beat_timer};
    for (size_t i = 0; i < 2; i++)
        if (timers[i]->loop && !uv_is_closing(timers[i])) uv_close(timers[i], NULL);
    /* closes the connection and starts closing lws' handles on the loop */
    if (c->ctx) lws_context_destroy(c->ctx);
}

void tg_sync_client_free(tg_sync_client_t *c)
{
    if (!c) return;
    if (c->ctx) lws_context_destroy(c->ctx); /* frees what the loop has closed */
    queue_clear(c);
    free(c->rx);
    renew_forget(c);
    tg_sync_apply_free(c->apply);
    if (c->ssl) SSL_CTX_free(c->ssl);
    free(c->key_path);
    free(c->crt_path);
    free(c->ca_path);
    free(c->json_path);
    free(c);
}

void tg_sync_client_status(const tg_sync_client_t *c, tg_sync_client_status_t *st)
{
    const tg_sync_apply_state_t *a = tg_sync_apply_state(c->apply);
    *st = (tg_sync_client_status_t){
        .connected = c->active && a->welcomed,
        .applied_version = a->applied_version,
        .deltas_applied = a->deltas_applied,
        .snapshots_applied = a->snapshots_applied,
        .nacks_sent = a->nacks_sent,
        .connects = c->connects,
        .disconnects = c->disconnects,
        .renewals = c->renewals,
        .last_apply_unix_ms = a->last_apply_unix_ms,
        .last_apply_us = a->last_apply_us,
        .cert_not_after = c->cert_not_after,
    };
    snprintf(st->digest, sizeof(st->digest), "%s", a->digest);
    snprintf(st->endpoint, sizeof(st->endpoint), "%s", c->endpoint);
    snprintf(st->last_error, sizeof(st->last_error), "%s", c->last_error);
    snprintf(st->last_nack, sizeof(st->last_nack), "%s", a->last_nack);
}
