/*
 * tls.c — OpenSSL on memory BIOs, driven by libuv reads and writes.
 *
 * Ciphertext from the socket goes into `rbio`; whatever OpenSSL writes to
 * `wbio` (handshake records, application data, alerts) is drained into one
 * heap buffer per uv_write. Plaintext is pulled with SSL_read only while the
 * user wants it, which is how backpressure reaches the socket.
 */
#include "tls.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RAW_BUF_SIZE 16384   /* one TLS record, roughly */
#define PLAIN_BUF_SIZE 16384 /* max TLS plaintext record */

struct tg_tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* network side: we fill rbio and drain wbio */
    uv_stream_t *stream;
    void *udata;
    tg_tls_handshake_cb on_handshake;
    tg_tls_read_cb on_read;
    int eof_status;   /* 0, or how the socket ended (-TG_ECLOSED / -TG_EIO) */
    bool handshaking; /* tg_tls_handshake called, result not reported yet */
    bool established;
    bool reading;    /* the user wants plaintext */
    bool uv_reading; /* uv_read_start is in effect */
    bool in_pump;    /* guards against re-entry from user callbacks */
    bool ended;      /* a final status was reported, or a fatal error happened */
    char raw[RAW_BUF_SIZE];
};

struct write_req {
    uv_write_t req; /* first: the uv_write_t pointer is the write_req pointer */
    tg_tls_t *t;
    tg_tls_write_cb cb;
    void *arg;
    char data[];
};

static void log_ssl_error(const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char msg[256] = "no details";
    if (e) ERR_error_string_n(e, msg, sizeof msg);
    TG_LOGD("tls", "%s: %s", what, msg);
    ERR_clear_error();
}

static bool stream_closing(const tg_tls_t *t)
{
    return uv_is_closing((const uv_handle_t *)t->stream) != 0;
}

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    if (w->cb) w->cb(w->t, status < 0 ? -TG_EIO : 0, w->arg);
    free(w);
}

/* Moves everything OpenSSL produced into one uv_write. */
static int flush(tg_tls_t *t, tg_tls_write_cb cb, void *arg)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    if (n == 0 && !cb) return 0;
    if (stream_closing(t)) return -TG_EIO;
    struct write_req *w = tg_malloc(sizeof *w + n);
    w->t = t;
    w->cb = cb;
    w->arg = arg;
    size_t got = 0;
    while (got < n) {
        int chunk = n - got > INT_MAX ? INT_MAX : (int)(n - got);
        int r = BIO_read(t->wbio, w->data + got, chunk);
        if (r <= 0) break;
        got += (size_t)r;
    }
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)got);
    int rc = uv_write(&w->req, t->stream, &buf, 1, on_written);
    if (rc < 0) {
        free(w);
        t->ended = true;
        return -TG_EIO;
    }
    return 0;
}

static void alloc_raw(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tg_tls_t *t = h->data;
    *buf = uv_buf_init(t->raw, sizeof t->raw);
}

static void on_raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Reads the socket exactly while someone needs ciphertext. */
static void sync_reading(tg_tls_t *t)
{
    bool want = (t->handshaking || t->reading) && !t->ended && !t->eof_status;
    if (stream_closing(t)) want = false;
    if (want && !t->uv_reading) {
        if (uv_read_start(t->stream, alloc_raw, on_raw_read) == 0) t->uv_reading = true;
    } else if (!want && t->uv_reading) {
        if (!stream_closing(t)) uv_read_stop(t->stream);
        t->uv_reading = false;
    }
}

static void continue_handshake(tg_tls_t *t)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    /* Send our flight, or the alert explaining a failure. */
    flush(t, NULL, NULL);
    if (e == SSL_ERROR_WANT_READ && !t->eof_status) return;
    t->handshaking = false;
    int status = 0;
    if (r == 1) {
        t->established = true;
    } else {
        status = e == SSL_ERROR_WANT_READ ? t->eof_status : -TG_ETLS;
        if (status == -TG_ETLS) log_ssl_error("handshake failed");
        t->ended = true;
    }
    t->on_handshake(t, status, t->udata);
}

static void finish_reading(tg_tls_t *t, int status)
{
    t->ended = true;
    t->reading = false;
    t->on_read(t, status, NULL, 0, t->udata);
}

/* Hands decrypted plaintext to the user while they want it. */
static void deliver(tg_tls_t *t)
{
    char plain[PLAIN_BUF_SIZE];
    while (t->reading && !t->ended && !stream_closing(t)) {
        ERR_clear_error();
        int n = SSL_read(t->ssl, plain, sizeof plain);
        if (n > 0) {
            t->on_read(t, 0, plain, (size_t)n, t->udata);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            if (t->eof_status) finish_reading(t, t->eof_status);
            break;
        }
        if (e != SSL_ERROR_ZERO_RETURN) log_ssl_error("read failed");
        finish_reading(t, e == SSL_ERROR_ZERO_RETURN ? -TG_ECLOSED : -TG_ETLS);
    }
}

static void pump(tg_tls_t *t)
{
    if (t->in_pump) return; /* the outer pump sees the new state when the callback returns */
    t->in_pump = true;
    if (t->handshaking) continue_handshake(t);
    if (t->established) deliver(t);
    /* SSL_read may have produced records of its own (key updates, alerts). */
    if (t->established && !t->ended) flush(t, NULL, NULL);
    t->in_pump = false;
    sync_reading(t);
}

static void on_raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    tg_tls_t *t = s->data;
    if (nread > 0) {
        /* A memory BIO only fails on out-of-memory. */
        if (BIO_write(t->rbio, buf->base, (int)nread) != (int)nread)
            tg_fatal("out of memory in TLS read buffer");
    } else if (nread < 0) {
        t->eof_status = nread == UV_EOF ? -TG_ECLOSED : -TG_EIO;
    }
    if (nread != 0) pump(t);
}

tg_tls_t *tg_tls_new(SSL_CTX *ctx, uv_stream_t *stream, bool is_server, void *udata)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        log_ssl_error("SSL_new");
        return NULL;
    }
    tg_tls_t *t = tg_calloc(1, sizeof *t);
    t->ssl = ssl;
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->rbio || !t->wbio) tg_fatal("out of memory creating TLS buffers");
    /* An empty BIO means "no data yet", not end of file. */
    BIO_set_mem_eof_return(t->rbio, -1);
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(ssl, t->rbio, t->wbio);
    if (is_server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    t->stream = stream;
    t->udata = udata;
    stream->data = t;
    return t;
}

int tg_tls_set_hostname(tg_tls_t *t, const char *host)
{
    if (!SSL_set_tlsext_host_name(t->ssl, host) || !SSL_set1_host(t->ssl, host)) {
        log_ssl_error("set hostname");
        return -TG_ETLS;
    }
    return 0;
}

int tg_tls_handshake(tg_tls_t *t, tg_tls_handshake_cb cb)
{
    t->on_handshake = cb;
    t->handshaking = true;
    if (!SSL_is_server(t->ssl)) {
        /* The client speaks first; the server result can only follow a read. */
        ERR_clear_error();
        SSL_do_handshake(t->ssl);
        if (flush(t, NULL, NULL) < 0) return -TG_EIO;
    }
    sync_reading(t);
    return t->uv_reading ? 0 : -TG_EIO;
}

int tg_tls_read_start(tg_tls_t *t, tg_tls_read_cb cb)
{
    if (!t->established) return -TG_ETLS;
    t->on_read = cb;
    t->reading = true;
    pump(t);
    return 0;
}

void tg_tls_read_stop(tg_tls_t *t)
{
    t->reading = false;
    if (!t->in_pump) sync_reading(t);
}

int tg_tls_write(tg_tls_t *t, const uv_buf_t *bufs, unsigned nbufs, tg_tls_write_cb cb, void *arg)
{
    if (!t->established || t->ended) return -TG_ETLS;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t off = 0;
        while (off < bufs[i].len) {
            size_t left = bufs[i].len - off;
            int chunk = left > INT_MAX ? INT_MAX : (int)left;
            ERR_clear_error();
            int r = SSL_write(t->ssl, bufs[i].base + off, chunk);
            if (r <= 0) {
                log_ssl_error("write failed");
                t->ended = true;
                return -TG_ETLS;
            }
            off += (size_t)r;
        }
    }
    return flush(t, cb, arg);
}

int tg_tls_shutdown(tg_tls_t *t, tg_tls_write_cb cb, void *arg)
{
    if (!t->established) return -TG_ETLS;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    return flush(t, cb, arg);
}

size_t tg_tls_write_queue_size(const tg_tls_t *t)
{
    return uv_stream_get_write_queue_size(t->stream);
}

SSL *tg_tls_ssl(tg_tls_t *t)
{
    return t->ssl;
}

void tg_tls_free(tg_tls_t *t)
{
    if (!t) return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

static SSL_CTX *ctx_new(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Renegotiation would let the peer make SSL_write wait for a read. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

static SSL_CTX *ctx_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *what, const char *path)
{
    char msg[256] = "unknown error";
    unsigned long e = ERR_peek_last_error();
    if (e) ERR_error_string_n(e, msg, sizeof msg);
    ERR_clear_error();
    if (err && errlen) snprintf(err, errlen, "%s %s: %s", what, path ? path : "", msg);
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tg_tls_server_ctx_new(const char *cert_pem_path, const char *key_pem_path, char *err,
                               size_t errlen)
{
    SSL_CTX *ctx = ctx_new(TLS_server_method());
    if (!ctx) return ctx_fail(NULL, err, errlen, "cannot create TLS context", NULL);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_pem_path) != 1)
        return ctx_fail(ctx, err, errlen, "cannot load certificate", cert_pem_path);
    if (SSL_CTX_use_PrivateKey_file(ctx, key_pem_path, SSL_FILETYPE_PEM) != 1)
        return ctx_fail(ctx, err, errlen, "cannot load private key", key_pem_path);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return ctx_fail(ctx, err, errlen, "private key does not match certificate", key_pem_path);
    return ctx;
}

SSL_CTX *tg_tls_client_ctx_new(const char *ca_path, bool verify)
{
    char err[512];
    SSL_CTX *ctx = ctx_new(TLS_client_method());
    if (!ctx) {
        log_ssl_error("cannot create TLS client context");
        return NULL;
    }
    if (!verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    struct stat st;
    int ok;
    if (!ca_path)
        ok = SSL_CTX_set_default_verify_paths(ctx);
    else if (stat(ca_path, &st) == 0 && S_ISDIR(st.st_mode))
        ok = SSL_CTX_load_verify_dir(ctx, ca_path);
    else
        ok = SSL_CTX_load_verify_file(ctx, ca_path);
    if (ok != 1) {
        ctx_fail(ctx, err, sizeof err, "cannot load CA certificates", ca_path);
        TG_LOGE("tls", "%s", err);
        return NULL;
    }
    return ctx;
}
