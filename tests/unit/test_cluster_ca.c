/*
 * test_cluster_ca.c — the cluster CA without a database: the CA certificate's shape, CP
 * server certificates, signing DP CSRs (and refusing bad ones), chains checked with
 * X509_verify_cert, the identity read back from a DP certificate, and the SPKI pin.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cluster_ca.h"
#include "crypto.h"
#include "dp_join.h"
#include "error.h"
#include "https_client.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODE "5b0c3a4e-1d2f-4a6b-8c9d-0e1f2a3b4c5d"
#define CPID "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"

static X509 *pem_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

static char *pem_of_req(X509_REQ *req)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509_REQ(b, req), 1);
    char *data;
    long len = BIO_get_mem_data(b, &data);
    char *out = strndup(data, (size_t)len);
    BIO_free(b);
    return out;
}

/* A CSR for `key` with a subject and an extension the CA must ignore. */
static char *csr_for(EVP_PKEY *key)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"root", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"attacker", -1, -1,
                               0);
    X509_REQ_set_subject_name(req, name);
    X509_REQ_set_pubkey(req, key);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    sk_X509_EXTENSION_push(
        exts, X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE"));
    X509_REQ_add_extensions(req, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    char *pem = pem_of_req(req);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return pem;
}

/* X509_verify_cert of `leaf` against the CA alone, for the given purpose. */
static int verify(const tg_cluster_ca_t *ca, X509 *leaf, int purpose)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, tg_cluster_ca_x509(ca));
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, NULL);
    X509_STORE_CTX_set_purpose(ctx, purpose);
    int ok = X509_verify_cert(ctx);
    if (ok != 1)
        print_error("verify: %s\n", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return ok;
}

static int setup_ca(void **state)
{
    tg_cluster_ca_t *ca;
    if (tg_cluster_ca_create(&ca) != 0) return -1;
    *state = ca;
    return 0;
}

static int teardown_ca(void **state)
{
    tg_cluster_ca_free(*state);
    return 0;
}

/* ---------------------------------------------------------------- the CA */

static void test_ca_certificate_shape(void **state)
{
    tg_cluster_ca_t *ca = *state;
    X509 *x = tg_cluster_ca_x509(ca);
    assert_true(X509_check_ca(x) > 0);
    char cn[64];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, TG_CLUSTER_CA_CN);
    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_true(bc->ca);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    uint32_t ku = X509_get_key_usage(x);
    assert_true(ku & KU_KEY_CERT_SIGN);
    assert_true(ku & KU_CRL_SIGN);
    assert_false(ku & KU_DIGITAL_SIGNATURE);
    /* ten years, give or take the leap days and the backdating */
    int days = 0, secs = 0;
    ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x));
    assert_in_range(days, 3649, 3651);
    /* self-signed, and the PEM form is the same certificate */
    assert_int_equal(X509_verify(x, X509_get0_pubkey(x)), 1);
    X509 *again = pem_cert(tg_cluster_ca_cert_pem(ca));
    assert_int_equal(X509_cmp(x, again), 0);
    X509_free(again);
}

static void test_spki_hash_stable(void **state)
{
    tg_cluster_ca_t *ca = *state;
    char h1[72], h2[72], h3[72];
    tg_cluster_ca_spki_hash(ca, h1);
    assert_int_equal(strlen(h1), 71);
    assert_memory_equal(h1, "sha256:", 7);
    tg_cluster_ca_spki_hash(ca, h2);
    assert_string_equal(h1, h2);
    assert_int_equal(tg_https_spki_hash(tg_cluster_ca_cert_pem(ca), h3), 0);
    assert_string_equal(h1, h3);

    /* computed independently: SHA-256 of the DER SubjectPublicKeyInfo */
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(X509_get0_pubkey(tg_cluster_ca_x509(ca)), &der);
    assert_true(len > 0);
    uint8_t d[32];
    char hex[65];
    tg_sha256(der, (size_t)len, d);
    tg_hex_encode(d, 32, hex);
    OPENSSL_free(der);
    assert_string_equal(h1 + 7, hex);

    /* a different CA has a different pin */
    tg_cluster_ca_t *other;
    assert_int_equal(tg_cluster_ca_create(&other), 0);
    tg_cluster_ca_spki_hash(other, h2);
    assert_string_not_equal(h1, h2);
    tg_cluster_ca_free(other);
    assert_int_equal(tg_https_spki_hash("not a certificate", h3), -TG_EPARSE);
}

static void test_from_pem_refuses_mismatch(void **state)
{
    tg_cluster_ca_t *ca = *state, *loaded;
    char *key_pem, *csr_pem;
    assert_int_equal(tg_dp_join_new_key_csr("x", &key_pem, &csr_pem), 0);
    /* a CA certificate paired with a key that is not its own is refused */
    assert_int_equal(tg_cluster_ca_from_pem(tg_cluster_ca_cert_pem(ca), key_pem, &loaded),
                     -TG_ECRYPTO);
    assert_null(loaded);
    assert_int_equal(tg_cluster_ca_from_pem("garbage", "garbage", &loaded), -TG_ECRYPTO);
    assert_null(loaded);
    free(key_pem);
    free(csr_pem);
}

/* ---------------------------------------------------------------- CP server certificates */

static void test_issue_server(void **state)
{
    tg_cluster_ca_t *ca = *state;
    const char *names[] = {"cp1.example.net", "127.0.0.1", "::1", "localhost"};
    char *cert_pem, *key_pem;
    assert_int_equal(tg_cluster_ca_issue_server(ca, names, 4, 30, &cert_pem, &key_pem), 0);
    X509 *x = pem_cert(cert_pem);
    assert_int_equal(verify(ca, x, X509_PURPOSE_SSL_SERVER), 1);
    assert_int_equal(X509_check_host(x, "cp1.example.net", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "other.example.net", 0, 0, NULL), 0);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "10.0.0.1", 0), 0);
    assert_true(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
    assert_false(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
    assert_int_equal(X509_check_ca(x), 0);
    BIO *b = BIO_new_mem_buf(key_pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    assert_int_equal(X509_check_private_key(x, k), 1);
    /* a server certificate is not a DP identity */
    char node[37], cp[37];
    assert_int_equal(tg_cluster_cert_identity(x, node, cp), -TG_EINVAL);
    EVP_PKEY_free(k);
    BIO_free(b);
    X509_free(x);
    free(cert_pem);
    free(key_pem);

    const char *bad[] = {"host with spaces"};
    assert_int_equal(tg_cluster_ca_issue_server(ca, bad, 1, 30, &cert_pem, &key_pem), -TG_EINVAL);
    assert_int_equal(tg_cluster_ca_issue_server(ca, names, 0, 30, &cert_pem, &key_pem), -TG_EINVAL);
    assert_int_equal(tg_cluster_ca_issue_server(ca, names, 1, 0, &cert_pem, &key_pem), -TG_EINVAL);
}

/* ---------------------------------------------------------------- DP certificates */

static void test_sign_csr(void **state)
{
    tg_cluster_ca_t *ca = *state;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    char *csr = csr_for(key), *cert_pem = NULL, serial[41], err[256] = "";
    int64_t not_after = 0;
    time_t now = time(NULL);
    int rc = tg_cluster_ca_sign_csr(ca, csr, NODE, CPID, 3600, &cert_pem, serial, &not_after, err,
                                    sizeof(err));
    assert_int_equal(rc, 0);
    X509 *x = pem_cert(cert_pem);
    assert_int_equal(verify(ca, x, X509_PURPOSE_SSL_CLIENT), 1);
    assert_int_equal(X509_check_private_key(x, key), 1);
    /* the CSR's subject and its CA:TRUE request were ignored */
    assert_int_equal(X509_check_ca(x), 0);
    char buf[64];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof(buf));
    assert_string_equal(buf, NODE);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationalUnitName, buf,
                              sizeof(buf));
    assert_string_equal(buf, CPID);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, buf, sizeof(buf));
    assert_string_equal(buf, "tollgate-dp");
    assert_true(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
    assert_false(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
    /* validity: backdated 5 minutes, lifetime as asked */
    assert_in_range(not_after, now + 3600 - 5, now + 3600 + 5);
    assert_true(X509_cmp_time(X509_get0_notBefore(x), &(time_t){now - 290}) < 0);
    /* serial: 128 random bits, in the form data_planes stores */
    char again[41];
    assert_int_equal(tg_cluster_cert_serial(x, again), 0);
    assert_string_equal(serial, again);
    assert_int_equal(strlen(serial), 32);
    /* identity round trip */
    char node[37], cp[37];
    assert_int_equal(tg_cluster_cert_identity(x, node, cp), 0);
    assert_string_equal(node, NODE);
    assert_string_equal(cp, CPID);
    /* another certificate for the same CSR gets another serial */
    char *cert2 = NULL, serial2[41];
    assert_int_equal(tg_cluster_ca_sign_csr(ca, csr, NODE, CPID, 3600, &cert2, serial2, &not_after,
                                            err, sizeof(err)),
                     0);
    assert_string_not_equal(serial, serial2);
    free(cert2);
    X509_free(x);
    free(cert_pem);
    free(csr);
    EVP_PKEY_free(key);
}

static void test_sign_csr_from_dp_helper_and_p384_rsa(void **state)
{
    tg_cluster_ca_t *ca = *state;
    char *key_pem, *csr_pem, *cert = NULL, serial[41], err[256];
    int64_t na;
    assert_int_equal(tg_dp_join_new_key_csr("dp-host", &key_pem, &csr_pem), 0);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, csr_pem, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)),
        0);
    free(cert);
    free(key_pem);
    free(csr_pem);

    EVP_PKEY *p384 = EVP_EC_gen("P-384"), *rsa = EVP_RSA_gen(2048);
    char *c1 = csr_for(p384), *c2 = csr_for(rsa);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, c1, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)), 0);
    free(cert);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, c2, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)), 0);
    free(cert);
    free(c1);
    free(c2);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(rsa);
}

static void test_reject_bad_csr_signature(void **state)
{
    tg_cluster_ca_t *ca = *state;
    EVP_PKEY *key = EVP_EC_gen("P-256"), *other = EVP_EC_gen("P-256");
    /* a CSR carrying `key` but signed by `other`: the holder of `key` did not ask for it */
    X509_REQ *req = X509_REQ_new();
    X509_REQ_set_pubkey(req, key);
    X509_REQ_sign(req, other, EVP_sha256());
    char *pem = pem_of_req(req), *cert = NULL, serial[41], err[256] = "";
    int64_t na;
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, pem, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    assert_null(cert);
    assert_non_null(strstr(err, "signature"));
    assert_int_equal(ERR_peek_error(), 0); /* nothing left on the thread's error queue */
    free(pem);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

static void test_reject_weak_keys(void **state)
{
    tg_cluster_ca_t *ca = *state;
    char *cert = NULL, serial[41], err[256] = "";
    int64_t na;
    EVP_PKEY *rsa = EVP_RSA_gen(1024);
    char *pem = csr_for(rsa);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, pem, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    assert_non_null(strstr(err, "2048"));
    assert_null(cert);
    free(pem);
    EVP_PKEY_free(rsa);

    EVP_PKEY *p224 = EVP_EC_gen("P-224");
    pem = csr_for(p224);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, pem, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    assert_non_null(strstr(err, "P-256"));
    free(pem);
    EVP_PKEY_free(p224);

    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    X509_REQ *req = X509_REQ_new();
    X509_REQ_set_pubkey(req, ed);
    X509_REQ_sign(req, ed, NULL);
    pem = pem_of_req(req);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, pem, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    free(pem);
    X509_REQ_free(req);
    EVP_PKEY_free(ed);
}

static void test_reject_bad_input(void **state)
{
    tg_cluster_ca_t *ca = *state;
    char *cert = NULL, serial[41], err[256] = "", *key_pem, *csr_pem;
    int64_t na;
    assert_int_equal(tg_cluster_ca_sign_csr(ca, "not a csr", NODE, CPID, 600, &cert, serial, &na,
                                            err, sizeof(err)),
                     -TG_EINVAL);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, "", NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    char *huge = calloc(1, 20000);
    memset(huge, 'A', 19999);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, huge, NODE, CPID, 600, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    free(huge);
    assert_int_equal(tg_dp_join_new_key_csr("h", &key_pem, &csr_pem), 0);
    assert_int_equal(tg_cluster_ca_sign_csr(ca, csr_pem, "node-1", CPID, 600, &cert, serial, &na,
                                            err, sizeof(err)),
                     -TG_EINVAL);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, csr_pem, NODE, "x", 600, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    assert_int_equal(
        tg_cluster_ca_sign_csr(ca, csr_pem, NODE, CPID, 10, &cert, serial, &na, err, sizeof(err)),
        -TG_EINVAL);
    assert_null(cert);
    free(key_pem);
    free(csr_pem);
}

/* A self-signed certificate with the DP subject but a SAN for another node: not an identity. */
static void test_identity_requires_matching_uri(void **state)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"tollgate-dp", -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_ASC, (const unsigned char *)CPID, -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)NODE, -1, -1, 0);
    X509_set_pubkey(x, key);
    X509_EXTENSION *ext =
        X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
                            "URI:urn:tollgate:dp:00000000-0000-4000-8000-000000000000");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(x, key, EVP_sha256());
    char node[37], cp[37];
    assert_int_equal(tg_cluster_cert_identity(x, node, cp), -TG_EINVAL);
    assert_int_equal(tg_cluster_cert_identity(NULL, node, cp), -TG_EINVAL);
    X509_free(x);
    EVP_PKEY_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ca_certificate_shape),
        cmocka_unit_test(test_spki_hash_stable),
        cmocka_unit_test(test_from_pem_refuses_mismatch),
        cmocka_unit_test(test_issue_server),
        cmocka_unit_test(test_sign_csr),
        cmocka_unit_test(test_sign_csr_from_dp_helper_and_p384_rsa),
        cmocka_unit_test(test_reject_bad_csr_signature),
        cmocka_unit_test(test_reject_weak_keys),
        cmocka_unit_test(test_reject_bad_input),
        cmocka_unit_test(test_identity_requires_matching_uri),
    };
    return cmocka_run_group_tests(tests, setup_ca, teardown_ca);
}
