/*
 * dp_join.c — `tollgate dp join HOST:PORT --token T [--ca-hash sha256:H] [--start]`, and the
 * enrolment files it leaves (see dp_join.h).
 *
 * Trust, step by step (kubeadm's token discovery):
 *  1. GET /v1/join/cluster-info over TLS *without* verifying the server: nothing is trusted
 *     yet. The answer is trusted only if its X-Tollgate-Signature is the HMAC-SHA256 of the
 *     body keyed with SHA-256(token): only someone holding the token (the CP stores that
 *     digest) can produce it. With --ca-hash the CA must also match that pin.
 *  2. From then on the CA is trusted: the CSR goes over TLS verified against it and HOST.
 * Everything is checked before anything is written, so a failed join leaves the prefix as
 * it was.
 */
#include "dp_join.h"
#include "alloc.h"
#include "config.h"
#include "crypto.h"
#include "dp.h"
#include "error.h"
#include "https_client.h"
#include "log.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define USAGE "usage: tollgate dp join HOST:PORT --token TOKEN [--ca-hash sha256:HEX] [--start]\n"
#define TOKEN_LEN 23
#define TOKEN_ID_LEN 6
#define MAX_ANSWER (256 * 1024)

typedef struct join_args {
    const char *hostport, *token;
    char host[256];
    int port;
    char ca_hash[72]; /* "" when not pinned */
    bool start;
} join_args_t;

typedef struct cluster_info {
    char *ca_pem;
    char ca_hash[72];
} cluster_info_t;

typedef struct issued {
    char *cert_pem;
    char node_id[37], cp_id[37];
    json_t *endpoints;
} issued_t;

__attribute__((format(printf, 1, 2))) static int say_error(const char *fmt, ...);

static int say_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tollgate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -TG_EINVAL;
}

/* ---------------------------------------------------------------- files */

static char *cluster_path(const char *name)
{
    return tg_asprintf("%s/%s%s%s", tg_config_get(TG_CONF_prefix), TG_DP_CLUSTER_DIR,
                       *name ? "/" : "", name);
}

static void fsync_dir(const char *path)
{
    char *dir = tg_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int tg_dp_join_write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    char *tmp = tg_asprintf("%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp); /* created 0600: a key is never readable, not even briefly */
    int rc = fd >= 0 ? 0 : -TG_EIO;
    for (size_t off = 0; rc == 0 && off < len;) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            rc = -TG_EIO;
        else
            off += (size_t)n;
    }
    if (rc == 0 && (fchmod(fd, mode) != 0 || fsync(fd) != 0)) rc = -TG_EIO;
    int saved = errno;
    if (fd >= 0) close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -TG_EIO;
        saved = errno;
    }
    if (rc)
        unlink(tmp);
    else
        fsync_dir(path);
    free(tmp);
    errno = saved;
    return rc;
}

static int make_dirs(void)
{
    int rc = tg_mkdir_p(tg_config_get(TG_CONF_prefix), 0755);
    char *dir = cluster_path("");
    /* The directory holds a private key: private even if it existed before. */
    if (rc == 0 && ((mkdir(dir, 0700) != 0 && errno != EEXIST) || chmod(dir, 0700) != 0))
        rc = -TG_ESYS;
    if (rc) say_error("cannot create %s: %s", dir, strerror(errno));
    free(dir);
    return rc ? -TG_ESYS : 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---------------------------------------------------------------- loading an enrolment */

void tg_dp_enrolment_free(tg_dp_enrolment_t *e)
{
    json_decref(e->endpoints);
    free(e->dir);
    free(e->key_path);
    free(e->cert_path);
    free(e->ca_path);
    memset(e, 0, sizeof(*e));
}

static bool copy_id(json_t *doc, const char *name, char out[37])
{
    const char *v = json_string_value(json_object_get(doc, name));
    if (!v || !tg_uuid_valid(tg_str_from(v))) return false;
    memcpy(out, v, 37);
    return true;
}

int tg_dp_enrolment_load(tg_dp_enrolment_t *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof(*e));
    char *path = cluster_path("cluster.json");
    if (!exists(path)) {
        free(path);
        return -TG_ENOTFOUND;
    }
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    e->dir = cluster_path("");
    e->key_path = cluster_path("dp.key");
    e->cert_path = cluster_path("dp.crt");
    e->ca_path = cluster_path("ca.crt");
    const char *server = json_string_value(json_object_get(doc, "server_name"));
    json_t *eps = json_object_get(doc, "endpoints");
    int rc = -TG_EPARSE;
    if (!doc || !copy_id(doc, "node_id", e->node_id) ||
        !copy_id(doc, "control_plane_id", e->cp_id) || !server ||
        strlen(server) >= sizeof(e->server_name) || !json_is_array(eps) ||
        json_array_size(eps) == 0)
        snprintf(err, errlen, "%s is not a valid enrolment record", path);
    else if (!exists(e->key_path) || !exists(e->cert_path) || !exists(e->ca_path))
        snprintf(err, errlen, "%s lacks dp.key, dp.crt or ca.crt", e->dir);
    else
        rc = 0;
    if (rc == 0) {
        snprintf(e->server_name, sizeof(e->server_name), "%s", server);
        e->endpoints = json_incref(eps);
    }
    json_decref(doc);
    free(path);
    if (rc) tg_dp_enrolment_free(e);
    return rc;
}

/* ---------------------------------------------------------------- arguments */

static bool token_format_ok(const char *t)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    if (!t || strlen(t) != TOKEN_LEN || t[TOKEN_ID_LEN] != '.') return false;
    for (size_t i = 0; i < TOKEN_LEN; i++)
        if (i != TOKEN_ID_LEN && !strchr(ok, t[i])) return false;
    return true;
}

/* "sha256:<64 hex>" in any case → lower-case into out; false when malformed. */
static bool ca_hash_ok(const char *h, char out[72])
{
    if (!h || strncasecmp(h, "sha256:", 7) != 0 || strlen(h) != 7 + 64) return false;
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < 64; i++) {
        if (!isxdigit((unsigned char)h[7 + i])) return false;
        out[7 + i] = (char)tolower((unsigned char)h[7 + i]);
    }
    out[71] = '\0';
    return true;
}

static const char *value(int argc, char **argv, int *i)
{
    return *i + 1 < argc ? argv[++*i] : NULL;
}

static int parse_args(int argc, char **argv, join_args_t *a)
{
    const char *hash = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--token") == 0)
            a->token = value(argc, argv, &i);
        else if (strncmp(argv[i], "--token=", 8) == 0)
            a->token = argv[i] + 8;
        else if (strcmp(argv[i], "--ca-hash") == 0)
            hash = value(argc, argv, &i);
        else if (strncmp(argv[i], "--ca-hash=", 10) == 0)
            hash = argv[i] + 10;
        else if (strcmp(argv[i], "--start") == 0)
            a->start = true;
        else if (argv[i][0] != '-' && !a->hostport)
            a->hostport = argv[i];
        else
            return say_error("unexpected argument '%s'\n%s", argv[i], USAGE);
    }
    if (!a->hostport || !a->token)
        return say_error("HOST:PORT and --token are required\n%s", USAGE);
    if (!token_format_ok(a->token))
        return say_error("the token is malformed: it looks like abcdef.0123456789abcdef "
                         "(6 and 16 characters a-z, 0-9); `tollgate cp token create` prints one");
    if (tg_https_split_hostport(a->hostport, a->host, sizeof(a->host), &a->port) != 0)
        return say_error("'%s' is not HOST:PORT (the control plane's cluster_listen address)",
                         a->hostport);
    if (hash && !ca_hash_ok(hash, a->ca_hash))
        return say_error("--ca-hash must be sha256: followed by 64 hex digits (got '%s')", hash);
    return 0;
}

/* ---------------------------------------------------------------- step 1: cluster-info */

/* The answer's message, or a placeholder: for telling the user why the CP refused. */
static const char *answer_message(const tg_https_response_t *r, json_t **doc)
{
    *doc = json_loadb(r->body, r->body_len, 0, NULL);
    const char *m = json_string_value(json_object_get(*doc, "message"));
    return m ? m : "(no message)";
}

static int refused(const char *what, const tg_https_response_t *r)
{
    json_t *doc;
    const char *msg = answer_message(r, &doc);
    if (r->status == 401)
        say_error("the control plane refused the token (%s): it is unknown, expired or used up",
                  msg);
    else
        say_error("%s: the control plane answered %d: %s", what, r->status, msg);
    json_decref(doc);
    return -TG_EPERM;
}

/* True when `header` is "<token id>:<hex HMAC-SHA256(SHA-256(token), body)>". */
static bool signature_ok(const char *token, const char *header, const char *body, size_t len)
{
    uint8_t key[TG_SHA256_LEN], mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    tg_sha256(token, strlen(token), key);
    HMAC(EVP_sha256(), key, sizeof(key), (const unsigned char *)body, len, mac, &maclen);
    OPENSSL_cleanse(key, sizeof(key));
    char want[TOKEN_ID_LEN + 2 + 2 * EVP_MAX_MD_SIZE];
    memcpy(want, token, TOKEN_ID_LEN);
    want[TOKEN_ID_LEN] = ':';
    tg_hex_encode(mac, maclen, want + TOKEN_ID_LEN + 1);
    size_t n = strlen(want);
    return header && strlen(header) == n && tg_ct_equal(header, want, n);
}

static int check_cluster_info(const join_args_t *a, const tg_https_response_t *r,
                              cluster_info_t *info)
{
    char *sig = tg_https_response_header(r, "X-Tollgate-Signature");
    bool signed_ok = signature_ok(a->token, sig, r->body, r->body_len);
    free(sig);
    if (!signed_ok)
        return say_error(
            "the cluster information from %s is not signed with this token: either the token is "
            "wrong or something between this node and the control plane altered the answer; "
            "nothing was written",
            a->hostport);
    json_t *doc = json_loadb(r->body, r->body_len, 0, NULL);
    const char *ca = json_string_value(json_object_get(doc, "ca_certificate"));
    int rc = ca && tg_https_spki_hash(ca, info->ca_hash) == 0 ? 0 : -TG_EPARSE;
    if (rc)
        say_error("the control plane's cluster information holds no valid CA certificate");
    else
        info->ca_pem = tg_strdup(ca);
    json_decref(doc);
    if (rc == 0 && a->ca_hash[0] && strcmp(a->ca_hash, info->ca_hash) != 0)
        rc = say_error("CA hash mismatch: the control plane at %s presents CA %s but --ca-hash is "
                       "%s; refusing to "
                       "join (nothing was written)",
                       a->hostport, info->ca_hash, a->ca_hash);
    return rc;
}

static int fetch_cluster_info(const join_args_t *a, cluster_info_t *info)
{
    char path[64], err[512];
    snprintf(path, sizeof(path), "/v1/join/cluster-info?token_id=%.*s", TOKEN_ID_LEN, a->token);
    tg_https_opts_t opts = {.max_body =
                                MAX_ANSWER}; /* unverified on purpose: see the file comment */
    tg_https_response_t r;
    int rc =
        tg_https_request(a->hostport, "GET", path, NULL, 0, NULL, 0, &opts, &r, err, sizeof(err));
    if (rc) {
        say_error("cannot reach the control plane at %s: %s", a->hostport, err);
        return rc;
    }
    rc = r.status == 200 ? check_cluster_info(a, &r, info) : refused("cluster-info", &r);
    tg_https_response_free(&r);
    return rc;
}

/* ---------------------------------------------------------------- step 2: the certificate */

static char *bio_text(BIO *bio)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    return len > 0 && data ? tg_strndup(data, (size_t)len) : NULL;
}

static X509_REQ *build_csr(EVP_PKEY *key, const char *cn)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    int ok = req && name && X509_REQ_set_version(req, X509_REQ_VERSION_1) &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
                                        -1, 0) &&
             X509_REQ_set_subject_name(req, name) && X509_REQ_set_pubkey(req, key) &&
             X509_REQ_sign(req, key, EVP_sha256()) > 0;
    X509_NAME_free(name);
    if (ok) return req;
    X509_REQ_free(req);
    return NULL;
}

int tg_dp_join_new_key_csr(const char *cn, char **key_pem, char **csr_pem)
{
    *key_pem = *csr_pem = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509_REQ *req = key ? build_csr(key, cn && *cn ? cn : "tollgate-dp") : NULL;
    BIO *kb = BIO_new(BIO_s_secmem()), *cb = BIO_new(BIO_s_mem());
    if (req && kb && cb && PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) == 1 &&
        PEM_write_bio_X509_REQ(cb, req) == 1) {
        *key_pem = bio_text(kb);
        *csr_pem = bio_text(cb);
    }
    BIO_free(kb);
    BIO_free(cb);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (*key_pem && *csr_pem) return 0;
    free(*csr_pem);
    free(*key_pem);
    *key_pem = *csr_pem = NULL;
    return -TG_ECRYPTO;
}

static X509 *read_cert(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

/* The issued certificate must be for our key and signed by the CA we pinned. */
static bool cert_matches(const char *cert_pem, const char *key_pem, const char *ca_pem)
{
    X509 *cert = read_cert(cert_pem), *ca = read_cert(ca_pem);
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *ca_key = ca ? X509_get0_pubkey(ca) : NULL;
    bool ok = cert && key && ca_key && X509_check_private_key(cert, key) == 1 &&
              X509_verify(cert, ca_key) == 1;
    EVP_PKEY_free(key);
    BIO_free(kb);
    X509_free(cert);
    X509_free(ca);
    ERR_clear_error();
    return ok;
}

static int read_issued(const tg_https_response_t *r, const char *key_pem, const char *ca_pem,
                       issued_t *out)
{
    json_t *doc = json_loadb(r->body, r->body_len, 0, NULL);
    const char *cert = json_string_value(json_object_get(doc, "certificate"));
    json_t *eps = json_object_get(doc, "endpoints");
    int rc = 0;
    if (!cert || !copy_id(doc, "node_id", out->node_id) ||
        !copy_id(doc, "control_plane_id", out->cp_id))
        rc = say_error("the control plane's answer to the CSR is incomplete");
    else if (!cert_matches(cert, key_pem, ca_pem))
        rc = say_error("the certificate the control plane issued does not match this node's key or "
                       "the cluster CA");
    if (rc == 0) {
        out->cert_pem = tg_strdup(cert);
        out->endpoints = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(eps, i, v)
        {
            if (json_is_string(v)) json_array_append(out->endpoints, v);
        }
    }
    json_decref(doc);
    return rc;
}

static int request_certificate(const join_args_t *a, const cluster_info_t *info,
                               const char *key_pem, const char *csr_pem, issued_t *out)
{
    char hostname[256] = "", auth[TOKEN_LEN + 32], err[512];
    gethostname(hostname, sizeof(hostname) - 1);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", a->token);
    json_t *req = json_pack("{s:s,s:s}", "csr", csr_pem, "hostname", hostname);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    const char *headers[] = {auth, "Content-Type: application/json", "Accept: application/json"};
    tg_https_opts_t opts = {.ca_pem = info->ca_pem, .max_body = MAX_ANSWER};
    tg_https_response_t r;
    int rc = tg_https_request(a->hostport, "POST", "/v1/join/csr", headers, 3, body, strlen(body),
                              &opts, &r, err, sizeof(err));
    OPENSSL_cleanse(auth, sizeof(auth));
    free(body);
    if (rc) {
        say_error("cannot send the certificate request to %s: %s", a->hostport, err);
        return rc;
    }
    rc = r.status == 201 ? read_issued(&r, key_pem, info->ca_pem, out)
                         : refused("certificate request", &r);
    tg_https_response_free(&r);
    return rc;
}

/* ---------------------------------------------------------------- step 3: the files */

static int write_one(const char *name, const char *text, mode_t mode)
{
    char *path = cluster_path(name);
    int rc = tg_dp_join_write_file(path, text, strlen(text), mode);
    if (rc) say_error("cannot write %s: %s", path, strerror(errno));
    free(path);
    return rc;
}

static int write_enrolment(const join_args_t *a, const cluster_info_t *info, const char *key_pem,
                           const issued_t *got)
{
    json_t *eps = json_array_size(got->endpoints) ? json_incref(got->endpoints)
                                                  : json_pack("[s]", a->hostport);
    json_t *rec = json_pack("{s:s,s:s,s:o,s:s}", "node_id", got->node_id, "control_plane_id",
                            got->cp_id, "endpoints", eps, "server_name", a->host);
    char *text = json_dumps(rec, JSON_INDENT(2));
    json_decref(rec);
    char *with_nl = tg_asprintf("%s\n", text);
    free(text);
    /* cluster.json last: its presence is what marks the enrolment complete. */
    int rc = make_dirs();
    if (!rc) rc = write_one("dp.key", key_pem, 0600);
    if (!rc) rc = write_one("dp.crt", got->cert_pem, 0644);
    if (!rc) rc = write_one("ca.crt", info->ca_pem, 0644);
    if (!rc) rc = write_one("cluster.json", with_nl, 0644);
    free(with_nl);
    return rc;
}

/* ---------------------------------------------------------------- the command */

static int already_enrolled(const join_args_t *a, int load_rc, const tg_dp_enrolment_t *e,
                            const char *err)
{
    if (load_rc != 0) {
        say_error("%s; remove %s/%s to join again", err, tg_config_get(TG_CONF_prefix),
                  TG_DP_CLUSTER_DIR);
        return load_rc;
    }
    printf(
        "this data plane is already enrolled (node %s, control plane %s) under %s; nothing to do\n",
        e->node_id, e->cp_id, e->dir);
    fflush(stdout);
    return a->start ? tg_dp_cmd_start(0, NULL) : 0;
}

static int enrol(const join_args_t *a)
{
    cluster_info_t info = {0};
    issued_t got = {0};
    char *key_pem = NULL, *csr_pem = NULL, hostname[256] = "";
    gethostname(hostname, sizeof(hostname) - 1);
    int rc = fetch_cluster_info(a, &info);
    if (!rc && !a->ca_hash[0])
        fprintf(stderr,
                "tollgate: trusting cluster CA %s on the token's signature alone (pass --ca-hash "
                "to pin it)\n",
                info.ca_hash);
    if (!rc && (rc = tg_dp_join_new_key_csr(hostname, &key_pem, &csr_pem)) != 0)
        say_error("cannot generate a key and certificate request");
    if (!rc) rc = request_certificate(a, &info, key_pem, csr_pem, &got);
    if (!rc) rc = write_enrolment(a, &info, key_pem, &got);
    if (!rc)
        printf("joined control plane %s as data plane node %s (CA %s); credentials in %s/%s\n",
               got.cp_id, got.node_id, info.ca_hash, tg_config_get(TG_CONF_prefix),
               TG_DP_CLUSTER_DIR);
    if (key_pem) OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
    free(csr_pem);
    free(info.ca_pem);
    free(got.cert_pem);
    json_decref(got.endpoints);
    return rc;
}

int tg_dp_cmd_join(int argc, char **argv)
{
    join_args_t a = {0};
    signal(SIGPIPE, SIG_IGN); /* a CP that hangs up mid-request is an error, not a crash */
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    tg_dp_enrolment_t e;
    char err[512] = "";
    int load = tg_dp_enrolment_load(&e, err, sizeof(err));
    if (load != -TG_ENOTFOUND) {
        rc = already_enrolled(&a, load, &e, err);
        if (load == 0) tg_dp_enrolment_free(&e);
        return rc;
    }
    rc = enrol(&a);
    if (rc == 0 && a.start) {
        fflush(stdout);
        rc = tg_dp_cmd_start(0, NULL);
    }
    return rc;
}
