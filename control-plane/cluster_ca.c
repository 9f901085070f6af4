/*
 * cluster_ca.c — see cluster_ca.h.
 *
 * Extensions with fixed values are given to OpenSSL as its config strings; anything derived
 * from input (SAN names, the node id) is built as ASN.1 structures, so no input can inject
 * extra extension entries.
 */
#include "cluster_ca.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "https_client.h"
#include "log.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CA_DAYS 3650
#define CA_AAD "cluster_ca"
#define BACKDATE_S 300 /* tolerate clocks up to 5 minutes behind the CA's */
#define CSR_MAX 16384
#define LIFETIME_MIN_S 60
#define LIFETIME_MAX_S (3650L * 86400)

struct tg_cluster_ca {
    X509 *cert;
    EVP_PKEY *key;
    char *cert_pem;
    char spki_hash[72];
};

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int rc,
                                                      const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    ERR_clear_error();
    return rc;
}

/* ---------------------------------------------------------------- PEM */

static char *bio_text(BIO *bio)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    return len > 0 && data ? tg_strndup(data, (size_t)len) : NULL;
}

static char *cert_to_pem(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = bio && PEM_write_bio_X509(bio, x) == 1 ? bio_text(bio) : NULL;
    BIO_free(bio);
    return pem;
}

/* The PEM goes through a secure-heap BIO, which is wiped when freed. */
static char *key_to_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_secmem());
    char *pem = bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1
                    ? bio_text(bio)
                    : NULL;
    BIO_free(bio);
    return pem;
}

static void free_secret(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static X509 *pem_to_cert(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

static EVP_PKEY *pem_to_key(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return k;
}

/* ---------------------------------------------------------------- certificate building */

static int set_random_serial(X509 *x)
{
    uint8_t b[16];
    tg_random_bytes(b, sizeof b);
    b[0] = (uint8_t)((b[0] & 0x7f) | 0x40); /* positive, and always 16 bytes long */
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

/* A fixed-value extension; `issuer` is needed for authorityKeyIdentifier. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

static int add_name(X509_NAME *name, const char *field, const char *value)
{
    return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, (const unsigned char *)value, -1,
                                      -1, 0) == 1;
}

/* A certificate with version, serial, validity, subject, issuer and public key set. */
static X509 *new_cert(X509_NAME *subject, const X509 *issuer, EVP_PKEY *pubkey, long seconds)
{
    X509 *x = X509_new();
    int ok = x && X509_set_version(x, X509_VERSION_3) && set_random_serial(x) &&
             X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_S) &&
             X509_gmtime_adj(X509_getm_notAfter(x), seconds) && X509_set_subject_name(x, subject) &&
             X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) &&
             X509_set_pubkey(x, pubkey);
    if (ok) return x;
    X509_free(x);
    return NULL;
}

static int push_name(GENERAL_NAMES *names, int type, const char *value)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    if (!gn) return 0;
    if (type == GEN_IPADD) {
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(value);
        if (!ip) {
            GENERAL_NAME_free(gn);
            return 0;
        }
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
    } else {
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (!s || ASN1_STRING_set(s, value, -1) != 1) {
            ASN1_IA5STRING_free(s);
            GENERAL_NAME_free(gn);
            return 0;
        }
        GENERAL_NAME_set0_value(gn, type, s);
    }
    if (sk_GENERAL_NAME_push(names, gn) > 0) return 1;
    GENERAL_NAME_free(gn);
    return 0;
}

static int add_sans(X509 *x, GENERAL_NAMES *names)
{
    int ok = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(names);
    return ok;
}

static char *sign_to_pem(X509 *x, EVP_PKEY *signer)
{
    char *pem = X509_sign(x, signer, EVP_sha256()) > 0 ? cert_to_pem(x) : NULL;
    X509_free(x);
    return pem;
}

/* ---------------------------------------------------------------- the CA object */

static int finish_ca(tg_cluster_ca_t *ca)
{
    ca->cert_pem = cert_to_pem(ca->cert);
    if (!ca->cert_pem || tg_https_spki_hash(ca->cert_pem, ca->spki_hash) != 0) return -TG_ECRYPTO;
    return 0;
}

int tg_cluster_ca_from_pem(const char *cert_pem, const char *key_pem, tg_cluster_ca_t **out)
{
    tg_cluster_ca_t *ca = tg_calloc(1, sizeof(*ca));
    ca->cert = pem_to_cert(cert_pem);
    ca->key = pem_to_key(key_pem);
    int rc = ca->cert && ca->key && X509_check_private_key(ca->cert, ca->key) == 1 &&
                     X509_check_ca(ca->cert) > 0
                 ? finish_ca(ca)
                 : -TG_ECRYPTO;
    ERR_clear_error();
    if (rc) {
        tg_cluster_ca_free(ca);
        ca = NULL;
    }
    *out = ca;
    return rc;
}

/* pathlen:0: the CA signs leaf certificates only, never another CA. */
static X509 *build_ca_cert(EVP_PKEY *key)
{
    X509_NAME *name = X509_NAME_new();
    X509 *x = name && add_name(name, "O", "tollgate") && add_name(name, "CN", TG_CLUSTER_CA_CN)
                  ? new_cert(name, NULL, key, CA_DAYS * 86400L)
                  : NULL;
    X509_NAME_free(name);
    int ok = x && add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
             add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             add_ext(x, x, NID_subject_key_identifier, "hash") &&
             add_ext(x, x, NID_authority_key_identifier, "keyid:always") &&
             X509_sign(x, key, EVP_sha256()) > 0;
    if (ok) return x;
    X509_free(x);
    return NULL;
}

int tg_cluster_ca_create(tg_cluster_ca_t **out)
{
    tg_cluster_ca_t *ca = tg_calloc(1, sizeof(*ca));
    ca->key = EVP_EC_gen("P-256");
    ca->cert = ca->key ? build_ca_cert(ca->key) : NULL;
    int rc = ca->cert ? finish_ca(ca) : -TG_ECRYPTO;
    ERR_clear_error();
    if (rc) {
        tg_cluster_ca_free(ca);
        ca = NULL;
    }
    *out = ca;
    return rc;
}

void tg_cluster_ca_free(tg_cluster_ca_t *ca)
{
    if (!ca) return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca->cert_pem);
    free(ca);
}

const char *tg_cluster_ca_cert_pem(const tg_cluster_ca_t *ca)
{
    return ca->cert_pem;
}

X509 *tg_cluster_ca_x509(const tg_cluster_ca_t *ca)
{
    return ca->cert;
}

void tg_cluster_ca_spki_hash(const tg_cluster_ca_t *ca, char out[72])
{
    memcpy(out, ca->spki_hash, sizeof(ca->spki_hash));
}

/* ---------------------------------------------------------------- storage */

/* 1 with the CA loaded, 0 when there is no row, < 0 on failure. */
static int load_row(tg_db_t *db, const uint8_t keyring[32], tg_cluster_ca_t **out)
{
    tg_db_err_t err;
    PGresult *res =
        tg_db_exec(db, &err, "SELECT cert_pem, key_enc FROM cluster_ca WHERE id = 1", 0, NULL);
    if (!res) return err.code;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    size_t bloblen = 0;
    unsigned char *blob = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &bloblen);
    uint8_t *key_pem = NULL;
    size_t key_len = 0;
    int rc =
        blob ? tg_aead_decrypt(keyring, CA_AAD, strlen(CA_AAD), blob, bloblen, &key_pem, &key_len)
             : -TG_ECRYPTO;
    PQfreemem(blob);
    if (rc) {
        TG_LOGE("cluster", "the cluster CA's private key does not decrypt with this node's keyring "
                           "key: every CP node must use the same keyring_key");
    } else if ((rc = tg_cluster_ca_from_pem(PQgetvalue(res, 0, 0), (char *)key_pem, out)) != 0) {
        TG_LOGE("cluster", "the stored cluster CA is unusable (certificate and key do not match)");
    }
    if (key_pem) free_secret((char *)key_pem);
    PQclear(res);
    return rc ? rc : 1;
}

static int insert_new(tg_db_t *db, const uint8_t keyring[32])
{
    tg_cluster_ca_t *ca;
    int rc = tg_cluster_ca_create(&ca);
    if (rc) return rc;
    char *key_pem = key_to_pem(ca->key);
    uint8_t *blob = NULL;
    size_t bloblen = 0;
    rc = key_pem ? tg_aead_encrypt(keyring, CA_AAD, strlen(CA_AAD), key_pem, strlen(key_pem), &blob,
                                   &bloblen)
                 : -TG_ECRYPTO;
    free_secret(key_pem);
    if (rc == 0) {
        char *hex = tg_malloc(2 * bloblen + 3);
        memcpy(hex, "\\x", 2);
        tg_hex_encode(blob, bloblen, hex + 2);
        const char *params[] = {ca->cert_pem, hex};
        tg_db_err_t err;
        rc = tg_db_run(db, &err,
                       "INSERT INTO cluster_ca (id, cert_pem, key_enc) VALUES (1, $1, $2::bytea)"
                       " ON CONFLICT (id) DO NOTHING",
                       2, params);
        free(hex);
    }
    free(blob);
    tg_cluster_ca_free(ca);
    return rc;
}

int tg_cluster_ca_ensure(tg_db_t *db, const uint8_t keyring[32], tg_cluster_ca_t **out)
{
    *out = NULL;
    int rc = load_row(db, keyring, out);
    if (rc != 0) return rc < 0 ? rc : 0;
    /* Another node may insert first; either way the row read back is the one CA. */
    if ((rc = insert_new(db, keyring)) != 0) return rc;
    rc = load_row(db, keyring, out);
    if (rc == 0) return -TG_EDB; /* inserted, yet not there: nothing sensible to do */
    if (rc < 0) return rc;
    char hash[72];
    tg_cluster_ca_spki_hash(*out, hash);
    TG_LOGN("cluster", "cluster CA ready (%s)", hash);
    return 0;
}

/* ---------------------------------------------------------------- CP server certificates */

static bool is_ip(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

static bool host_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(".-_*", s[i])) return false;
    return true;
}

static X509 *server_cert(const tg_cluster_ca_t *ca, EVP_PKEY *key, const char *const *names,
                         size_t n, int days)
{
    X509_NAME *subject = X509_NAME_new();
    X509 *x = subject && add_name(subject, "O", "tollgate") && add_name(subject, "CN", names[0])
                  ? new_cert(subject, ca->cert, key, days * 86400L)
                  : NULL;
    X509_NAME_free(subject);
    GENERAL_NAMES *sans = x ? sk_GENERAL_NAME_new_null() : NULL;
    int ok = sans != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = push_name(sans, is_ip(names[i]) ? GEN_IPADD : GEN_DNS, names[i]);
    if (ok)
        ok = add_sans(x, sans); /* frees sans */
    else
        GENERAL_NAMES_free(sans);
    ok = ok && add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
         add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") &&
         add_ext(x, ca->cert, NID_subject_key_identifier, "hash") &&
         add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always");
    if (ok) return x;
    X509_free(x);
    return NULL;
}

int tg_cluster_ca_issue_server(const tg_cluster_ca_t *ca, const char *const *names, size_t n,
                               int days, char **cert_pem, char **key_pem)
{
    *cert_pem = *key_pem = NULL;
    if (n == 0 || days < 1 || days > 36500) return -TG_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!names[i] || (!is_ip(names[i]) && !host_name_ok(names[i]))) return -TG_EINVAL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = key ? server_cert(ca, key, names, n, days) : NULL;
    *cert_pem = x ? sign_to_pem(x, ca->key) : NULL;
    *key_pem = *cert_pem ? key_to_pem(key) : NULL;
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (*cert_pem && *key_pem) return 0;
    free(*cert_pem);
    *cert_pem = NULL;
    return -TG_ECRYPTO;
}

/* ---------------------------------------------------------------- DP certificates */

/* EC P-256/P-384 or RSA 2048..8192: strong enough, and cheap enough to verify. */
static int check_key(EVP_PKEY *pk, char *err, size_t errlen)
{
    int type = EVP_PKEY_get_base_id(pk);
    if (type == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits < 2048 || bits > 8192)
            return fail(err, errlen, -TG_EINVAL, "RSA keys must have 2048 to 8192 bits (got %d)",
                        bits);
        return 0;
    }
    if (type == EVP_PKEY_EC) {
        char group[64] = "";
        size_t len = 0;
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len);
        int nid = OBJ_sn2nid(group);
        if (nid == NID_undef) nid = EC_curve_nist2nid(group);
        if (nid == NID_X9_62_prime256v1 || nid == NID_secp384r1) return 0;
        return fail(err, errlen, -TG_EINVAL, "EC keys must use P-256 or P-384 (got %s)",
                    *group ? group : "an unknown curve");
    }
    return fail(err, errlen, -TG_EINVAL, "the key must be EC P-256, EC P-384 or RSA");
}

/* Parses a CSR and checks its signature and key; the subject and extensions are not used. */
static X509_REQ *parse_csr(const char *csr_pem, char *err, size_t errlen, int *rc)
{
    *rc = -TG_EINVAL;
    size_t len = csr_pem ? strlen(csr_pem) : 0;
    if (len == 0 || len > CSR_MAX) {
        fail(err, errlen, -TG_EINVAL,
             "the CSR must be a PEM certificate request of at most %d bytes", CSR_MAX);
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(csr_pem, (int)len);
    X509_REQ *req = bio ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    EVP_PKEY *pk = req ? X509_REQ_get0_pubkey(req) : NULL;
    if (!req)
        fail(err, errlen, -TG_EINVAL, "the CSR is not a PEM certificate request");
    else if (!pk)
        fail(err, errlen, -TG_EINVAL, "the CSR's public key cannot be read");
    else if (check_key(pk, err, errlen) != 0)
        ;
    else if (X509_REQ_verify(req, pk) != 1)
        fail(err, errlen, -TG_EINVAL, "the CSR's signature does not verify");
    else
        *rc = 0;
    ERR_clear_error();
    if (*rc == 0) return req;
    X509_REQ_free(req);
    return NULL;
}

static X509 *dp_cert(const tg_cluster_ca_t *ca, EVP_PKEY *pubkey, const char *node_id,
                     const char *cp_id, int lifetime_s)
{
    X509_NAME *subject = X509_NAME_new();
    X509 *x = subject && add_name(subject, "O", TG_CLUSTER_DP_ORG) &&
                      add_name(subject, "OU", cp_id) && add_name(subject, "CN", node_id)
                  ? new_cert(subject, ca->cert, pubkey, lifetime_s)
                  : NULL;
    X509_NAME_free(subject);
    char uri[64];
    snprintf(uri, sizeof(uri), "%s%s", TG_CLUSTER_DP_URI_PREFIX, node_id);
    GENERAL_NAMES *sans = x ? sk_GENERAL_NAME_new_null() : NULL;
    int ok = sans && push_name(sans, GEN_URI, uri);
    if (ok)
        ok = add_sans(x, sans); /* frees sans */
    else
        GENERAL_NAMES_free(sans);
    ok = ok && add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, ca->cert, NID_ext_key_usage, "clientAuth") &&
         add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always");
    if (ok) return x;
    X509_free(x);
    return NULL;
}

static int64_t not_after(X509 *x)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) return 0;
    return (int64_t)timegm(&tm);
}

int tg_cluster_cert_serial(X509 *cert, char serial_hex[41])
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    BN_free(bn);
    int rc = hex && strlen(hex) <= 40 ? 0 : -TG_EINVAL;
    if (rc == 0) {
        for (size_t i = 0; hex[i]; i++)
            serial_hex[i] = (char)tolower((unsigned char)hex[i]);
        serial_hex[strlen(hex)] = '\0';
    }
    OPENSSL_free(hex);
    ERR_clear_error();
    return rc;
}

int tg_cluster_ca_sign_csr(const tg_cluster_ca_t *ca, const char *csr_pem, const char *node_id,
                           const char *cp_id, int lifetime_s, char **cert_pem, char serial_hex[41],
                           int64_t *not_after_unix, char *err, size_t errlen)
{
    *cert_pem = NULL;
    if (!node_id || !cp_id || !tg_uuid_valid(tg_str_from(node_id)) ||
        !tg_uuid_valid(tg_str_from(cp_id)))
        return fail(err, errlen, -TG_EINVAL, "node and control plane ids must be UUIDs");
    if (lifetime_s < LIFETIME_MIN_S || lifetime_s > LIFETIME_MAX_S)
        return fail(err, errlen, -TG_EINVAL, "certificate lifetime must be %d s to %ld s",
                    LIFETIME_MIN_S, LIFETIME_MAX_S);
    int rc;
    X509_REQ *req = parse_csr(csr_pem, err, errlen, &rc);
    if (!req) return rc;
    X509 *x = dp_cert(ca, X509_REQ_get0_pubkey(req), node_id, cp_id, lifetime_s);
    X509_REQ_free(req);
    if (x && X509_sign(x, ca->key, EVP_sha256()) > 0 &&
        tg_cluster_cert_serial(x, serial_hex) == 0) {
        *not_after_unix = not_after(x);
        *cert_pem = cert_to_pem(x);
    }
    X509_free(x);
    if (*cert_pem) return 0;
    return fail(err, errlen, -TG_ECRYPTO, "cannot sign the certificate");
}

/* ---------------------------------------------------------------- identity */

/* The one entry of `nid` in `name` as a NUL-terminated string; 0 when absent or repeated. */
static int name_entry(X509_NAME *name, int nid, char *out, size_t cap)
{
    int i = X509_NAME_get_index_by_NID(name, nid, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(name, nid, i) >= 0) return 0;
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    int len = ASN1_STRING_length(s);
    if (len <= 0 || (size_t)len >= cap) return 0;
    memcpy(out, ASN1_STRING_get0_data(s), (size_t)len);
    out[len] = '\0';
    return strlen(out) == (size_t)len; /* no embedded NUL */
}

static bool has_uri(X509 *cert, const char *uri)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && !found; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type != GEN_URI) continue;
        const ASN1_STRING *s = gn->d.uniformResourceIdentifier;
        found = (size_t)ASN1_STRING_length(s) == strlen(uri) &&
                strncasecmp((const char *)ASN1_STRING_get0_data(s), uri, strlen(uri)) == 0;
    }
    GENERAL_NAMES_free(sans);
    return found;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

int tg_cluster_cert_identity(X509 *cert, char node_id[37], char cp_id[37])
{
    X509_NAME *name = cert ? X509_get_subject_name(cert) : NULL;
    char org[32], cn[37], ou[37];
    if (!name || !name_entry(name, NID_organizationName, org, sizeof(org)) ||
        strcmp(org, TG_CLUSTER_DP_ORG) != 0 || !name_entry(name, NID_commonName, cn, sizeof(cn)) ||
        !name_entry(name, NID_organizationalUnitName, ou, sizeof(ou)) ||
        !tg_uuid_valid(tg_str_from(cn)) || !tg_uuid_valid(tg_str_from(ou)))
        return -TG_EINVAL;
    lower(cn);
    lower(ou);
    char uri[64];
    snprintf(uri, sizeof(uri), "%s%s", TG_CLUSTER_DP_URI_PREFIX, cn);
    if (!has_uri(cert, uri)) return -TG_EINVAL;
    memcpy(node_id, cn, 37);
    memcpy(cp_id, ou, 37);
    return 0;
}
