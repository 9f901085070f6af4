/*
 * test_crypto.c — hashing, random, UUIDs, generated keys, base64, AEAD,
 * keyring files and the self-signed certificate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crypto.h"
#include "error.h"

#include <ctype.h>
#include <dirent.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---- */

static void sha_hex(const void *data, size_t len, char out[65])
{
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(data, len, d);
    tg_hex_encode(d, sizeof d, out);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int make_tmpdir(void **state)
{
    char tmpl[] = "/tmp/tg-crypto-XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    *state = strdup(dir);
    return 0;
}

static int remove_tmpdir(void **state)
{
    nftw(*state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 65536);
    *len = fread(buf, 1, 65535, f);
    fclose(f);
    return buf;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* ---- SHA-256 and hex ---- */

static void test_sha256_vectors(void **state)
{
    (void)state;
    char hex[65];
    sha_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    sha_hex(million, 1000000, hex);
    free(million);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_hex_encode(void **state)
{
    (void)state;
    char out[16];
    memset(out, 'x', sizeof out);
    tg_hex_encode((const uint8_t *)"", 0, out);
    assert_string_equal(out, "");
    const uint8_t in[] = {0x00, 0xff, 0x10, 0xab, 0x7e};
    tg_hex_encode(in, sizeof in, out);
    assert_string_equal(out, "00ff10ab7e");
}

/* ---- random, UUIDs, generated keys ---- */

static void test_random_bytes(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    tg_random_bytes(a, sizeof a);
    tg_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
    assert_memory_not_equal(a, zero, sizeof a);
    tg_random_bytes(NULL, 0); /* a zero-length request is a no-op */
}

static void test_uuid_v4_format(void **state)
{
    (void)state;
    enum { N = 1000 };
    static char ids[N][TG_UUID_STR_LEN + 1];
    for (int i = 0; i < N; i++) {
        tg_uuid_v4(ids[i]);
        assert_int_equal(strlen(ids[i]), TG_UUID_STR_LEN);
        assert_true(tg_uuid_valid(tg_str_from(ids[i])));
        assert_int_equal(ids[i][14], '4');
        assert_non_null(strchr("89ab", ids[i][19]));
        for (const char *p = ids[i]; *p; p++)
            assert_false(isupper((unsigned char)*p));
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(ids[i], ids[j]);
}

static void test_uuid_valid_cases(void **state)
{
    (void)state;
    assert_true(tg_uuid_valid(TG_STR("3c3b0a4e-8f0c-4c2b-9b3f-0e1d2c3b4a59")));
    assert_true(tg_uuid_valid(TG_STR("3C3B0A4E-8F0C-4C2B-9B3F-0E1D2C3B4A59")));
    assert_true(tg_uuid_valid(TG_STR("3c3B0a4E-8f0C-4c2B-9b3F-0e1D2c3B4a59")));
    assert_true(tg_uuid_valid(TG_STR("00000000-0000-0000-0000-000000000000")));
    /* Not version-checked: Kong accepts any canonical hex UUID. */
    assert_true(tg_uuid_valid(TG_STR("3c3b0a4e-8f0c-1c2b-0b3f-0e1d2c3b4a59")));

    assert_false(tg_uuid_valid(TG_STR("")));
    assert_false(tg_uuid_valid(TG_STR_NULL));
    assert_false(tg_uuid_valid(TG_STR("3c3b0a4e-8f0c-4c2b-9b3f-0e1d2c3b4a5")));
    assert_false(tg_uuid_valid(TG_STR("3c3b0a4e-8f0c-4c2b-9b3f-0e1d2c3b4a590")));
    assert_false(tg_uuid_valid(TG_STR("3c3b0a4e8f0c-4c2b-9b3f-0e1d2c3b4a59a")));
    assert_false(tg_uuid_valid(TG_STR("3c3b0a4-e8f0c-4c2b-9b3f-0e1d2c3b4a59")));
    assert_false(tg_uuid_valid(TG_STR("3c3b0a4e-8f0c-4c2b-9b3f-0e1d2c3b4a5g")));
    assert_false(tg_uuid_valid(TG_STR("3c3b0a4e_8f0c_4c2b_9b3f_0e1d2c3b4a59")));
    assert_false(tg_uuid_valid(TG_STR("{3c3b0a4e-8f0c-4c2b-9b3f-0e1d2c3b4a5}")));
    assert_false(tg_uuid_valid(TG_STR(" 3c3b0a4e-8f0c-4c2b-9b3f-0e1d2c3b4a5")));
    /* The length is taken from the view, not from a terminator. */
    tg_str_t prefix = {"3c3b0a4e-8f0c-4c2b-9b3f-0e1d2c3b4a59ff", 36};
    assert_true(tg_uuid_valid(prefix));
}

static void test_generate_key(void **state)
{
    (void)state;
    enum { N = 2000 };
    static char keys[N][33];
    for (int i = 0; i < N; i++) {
        memset(keys[i], '#', sizeof keys[i]);
        tg_generate_key(keys[i]);
        assert_int_equal(keys[i][32], '\0');
        assert_int_equal(strlen(keys[i]), 32);
        for (int j = 0; j < 32; j++)
            assert_true(isalnum((unsigned char)keys[i][j]));
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(keys[i], keys[j]);
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(tg_ct_equal("abcdef", "abcdef", 6));
    assert_false(tg_ct_equal("abcdef", "abcdeg", 6));
    assert_false(tg_ct_equal("xbcdef", "abcdef", 6));
    assert_true(tg_ct_equal("abc", "abd", 2));
    assert_true(tg_ct_equal("", "", 0));
}

/* ---- base64 ---- */

static void test_base64_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const vec[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        char *enc = tg_base64_encode((const uint8_t *)vec[i][0], strlen(vec[i][0]));
        assert_string_equal(enc, vec[i][1]);
        free(enc);
        size_t n = 99;
        uint8_t *dec = tg_base64_decode(vec[i][1], strlen(vec[i][1]), &n);
        assert_non_null(dec);
        assert_int_equal(n, strlen(vec[i][0]));
        assert_memory_equal(dec, vec[i][0], n);
        assert_int_equal(dec[n], '\0');
        free(dec);
    }
}

static void test_base64_binary_round_trip(void **state)
{
    (void)state;
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(255 - i);
    for (size_t len = 0; len <= sizeof buf; len += 7) {
        char *enc = tg_base64_encode(buf, len);
        assert_int_equal(strlen(enc), (len + 2) / 3 * 4);
        size_t n = 0;
        uint8_t *dec = tg_base64_decode(enc, strlen(enc), &n);
        assert_non_null(dec);
        assert_int_equal(n, len);
        assert_memory_equal(dec, buf, len);
        free(dec);
        free(enc);
    }
    char *enc = tg_base64_encode((const uint8_t *)"\xfb\xff", 2);
    assert_string_equal(enc, "+/8=");
    free(enc);
}

static void test_base64_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg",       /* padding missing */
        "Zg=",      /* length not a multiple of 4 */
        "Z===",     /* too much padding */
        "====",     /* padding only */
        "=Zg=",     /* padding first */
        "Zg=a",     /* data after padding */
        "Zg==Zg==", /* padding in the middle */
        "Zm9v!A==", /* character outside the alphabet */
        "Zm 9",     /* whitespace */
        "Zm9v\n",   /* newline */
        "-_8=",     /* URL-safe alphabet */
        "Zh==",     /* non-zero unused bits (canonical is Zg==) */
        "Zm9=",     /* non-zero unused bits (canonical is Zm8=) */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = 0;
        uint8_t *dec = tg_base64_decode(bad[i], strlen(bad[i]), &n);
        if (dec) fail_msg("accepted malformed base64 '%s'", bad[i]);
    }
    /* A NUL inside the counted length is a bad character, not a terminator. */
    assert_null(tg_base64_decode("Zm9v\0AAA", 8, NULL));
}

/* ---- AES-256-GCM ---- */

static const uint8_t test_key[TG_AEAD_KEY_LEN] = {
    1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
};

static void seal(const char *aad, const char *pt, uint8_t **blob, size_t *len)
{
    int rc = tg_aead_encrypt(test_key, aad, aad ? strlen(aad) : 0, pt, strlen(pt), blob, len);
    assert_int_equal(rc, 0);
    assert_int_equal(*len, strlen(pt) + TG_AEAD_OVERHEAD);
}

static void test_aead_round_trip(void **state)
{
    (void)state;
    const char *msgs[] = {"", "x", "hello, world", "a somewhat longer secret spanning blocks!!"};
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        for (int with_aad = 0; with_aad < 2; with_aad++) {
            const char *aad = with_aad ? "credential:1234" : NULL;
            uint8_t *blob, *pt;
            size_t blen, plen;
            seal(aad, msgs[i], &blob, &blen);
            int rc = tg_aead_decrypt(test_key, aad, aad ? strlen(aad) : 0, blob, blen, &pt, &plen);
            assert_int_equal(rc, 0);
            assert_int_equal(plen, strlen(msgs[i]));
            assert_string_equal((char *)pt, msgs[i]);
            free(pt);
            free(blob);
        }
    }
}

static void test_aead_nonce_is_random(void **state)
{
    (void)state;
    uint8_t *a, *b;
    size_t alen, blen;
    seal(NULL, "same plaintext", &a, &alen);
    seal(NULL, "same plaintext", &b, &blen);
    assert_memory_not_equal(a, b, 12);
    assert_memory_not_equal(a + 12, b + 12, alen - 12);
    /* The ciphertext is not the plaintext. */
    assert_memory_not_equal(a + 12, "same plaintext", 14);
    free(a);
    free(b);
}

static void expect_reject(const uint8_t *key, const char *aad, const uint8_t *blob, size_t len)
{
    uint8_t *pt = (uint8_t *)"untouched";
    size_t plen = 42;
    int rc = tg_aead_decrypt(key, aad, aad ? strlen(aad) : 0, blob, len, &pt, &plen);
    assert_int_equal(rc, -TG_ECRYPTO);
    assert_null(pt);
    assert_int_equal(plen, 0);
}

static void test_aead_tamper_detection(void **state)
{
    (void)state;
    uint8_t *blob;
    size_t len;
    seal("aad", "attack at dawn", &blob, &len);
    /* Every single-bit flip anywhere (nonce, ciphertext, tag) must be caught. */
    for (size_t i = 0; i < len; i++) {
        blob[i] ^= 0x01;
        expect_reject(test_key, "aad", blob, len);
        blob[i] ^= 0x01;
    }
    expect_reject(test_key, "aaD", blob, len);
    expect_reject(test_key, NULL, blob, len);
    uint8_t other[TG_AEAD_KEY_LEN];
    memcpy(other, test_key, sizeof other);
    other[31] ^= 0x80;
    expect_reject(other, "aad", blob, len);
    expect_reject(test_key, "aad", blob, len - 1);
    expect_reject(test_key, "aad", blob, TG_AEAD_OVERHEAD - 1);
    expect_reject(test_key, "aad", blob, 0);
    free(blob);
}

static void test_aead_aad_required_when_used(void **state)
{
    (void)state;
    uint8_t *blob;
    size_t len;
    seal(NULL, "no aad", &blob, &len);
    expect_reject(test_key, "x", blob, len);
    free(blob);
}

/* ---- keyring ---- */

static void test_keyring_configured(void **state)
{
    (void)state;
    uint8_t raw[32], key[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (uint8_t)(i * 7);
    char *b64 = tg_base64_encode(raw, 32);
    char err[256] = "";
    assert_int_equal(tg_keyring_load(b64, "/nonexistent/dir/keyring", key, err, sizeof err), 0);
    assert_memory_equal(key, raw, 32);
    free(b64);

    char *short_key = tg_base64_encode(raw, 31);
    assert_int_equal(tg_keyring_load(short_key, NULL, key, err, sizeof err), -TG_ECONFIG);
    assert_non_null(strstr(err, "keyring_key"));
    assert_non_null(strstr(err, "32 bytes"));
    free(short_key);
    assert_int_equal(tg_keyring_load("not base64!", NULL, key, err, sizeof err), -TG_ECONFIG);
    assert_int_equal(tg_keyring_load("", NULL, key, err, sizeof err), -TG_ECONFIG);
    assert_int_equal(tg_keyring_load(NULL, "", key, NULL, 0), -TG_ECONFIG);
}

static void test_keyring_file_created_and_reloaded(void **state)
{
    char *path = join(*state, "keyring.key");
    uint8_t k1[32], k2[32], zero[32] = {0};
    char err[256] = "";
    assert_int_equal(tg_keyring_load(NULL, path, k1, err, sizeof err), 0);
    assert_memory_not_equal(k1, zero, 32);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_true(S_ISREG(st.st_mode));
    size_t len = 0;
    char *text = slurp(path, &len);
    assert_int_equal(len, 45);
    assert_int_equal(text[44], '\n');
    size_t n = 0;
    uint8_t *raw = tg_base64_decode(text, 44, &n);
    assert_int_equal(n, 32);
    assert_memory_equal(raw, k1, 32);
    free(raw);
    free(text);
    /* Only the key file is left behind: the temporary file was removed. */
    assert_int_equal(count_entries(*state), 1);

    assert_int_equal(tg_keyring_load("", path, k2, err, sizeof err), 0);
    assert_memory_equal(k1, k2, 32);
    free(path);
}

/* Processes starting together on one prefix must all end up with the same key. */
static void test_keyring_concurrent_creation(void **state)
{
    enum { N = 8 };
    char *path = join(*state, "race.key");
    int fds[N][2];
    for (int i = 0; i < N; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            uint8_t key[32];
            char err[256];
            int rc = tg_keyring_load(NULL, path, key, err, sizeof err);
            ssize_t w = rc == 0 ? write(fds[i][1], key, 32) : 0;
            _exit(w == 32 ? 0 : 1);
        }
        close(fds[i][1]);
    }
    uint8_t first[32], key[32];
    for (int i = 0; i < N; i++) {
        int status = 0;
        assert_int_equal(read(fds[i][0], i ? key : first, 32), 32);
        close(fds[i][0]);
        wait(&status);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (i) assert_memory_equal(key, first, 32);
    }
    assert_int_equal(count_entries(*state), 1);
    free(path);
}

static void test_keyring_file_whitespace_tolerated(void **state)
{
    char *path = join(*state, "keyring.key");
    uint8_t raw[32], key[32];
    memset(raw, 0xa5, 32);
    char *b64 = tg_base64_encode(raw, 32);
    FILE *f = fopen(path, "w");
    fprintf(f, "  %s\r\n\n", b64);
    fclose(f);
    char err[256];
    assert_int_equal(tg_keyring_load(NULL, path, key, err, sizeof err), 0);
    assert_memory_equal(key, raw, 32);
    free(b64);
    free(path);
}

static void test_keyring_file_errors_name_the_path(void **state)
{
    char *path = join(*state, "bad.key");
    FILE *f = fopen(path, "w");
    fputs("this is not a key\n", f);
    fclose(f);
    uint8_t key[32];
    char err[512] = "";
    assert_int_equal(tg_keyring_load(NULL, path, key, err, sizeof err), -TG_ECONFIG);
    assert_non_null(strstr(err, path));

    f = fopen(path, "w");
    for (int i = 0; i < 100; i++)
        fputs("AAAAAAAAAA", f);
    fclose(f);
    assert_int_equal(tg_keyring_load(NULL, path, key, err, sizeof err), -TG_ECONFIG);
    assert_non_null(strstr(err, path));

    char *missing = join(*state, "no/such/dir/keyring.key");
    assert_int_equal(tg_keyring_load(NULL, missing, key, err, sizeof err), -TG_ECONFIG);
    assert_non_null(strstr(err, missing));

    char *dir_as_file = join(*state, "adir");
    assert_int_equal(mkdir(dir_as_file, 0700), 0);
    assert_int_equal(tg_keyring_load(NULL, dir_as_file, key, err, sizeof err), -TG_ECONFIG);
    assert_non_null(strstr(err, dir_as_file));
    free(dir_as_file);
    free(missing);
    free(path);
}

/* ---- self-signed certificate ---- */

static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    return k;
}

/* SAN must be exactly DNS:cn, DNS:localhost, IP:127.0.0.1 (cn "localhost" not repeated). */
static void assert_san(X509 *x, const char *cn)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(names);
    int dns_cn = 0, dns_localhost = 0, ip_loopback = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type == GEN_DNS) {
            const char *s = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
            dns_cn += strcmp(s, cn) == 0;
            dns_localhost += strcmp(s, "localhost") == 0;
        } else if (gn->type == GEN_IPADD) {
            const unsigned char lo[4] = {127, 0, 0, 1};
            ip_loopback += ASN1_STRING_length(gn->d.iPAddress) == 4 &&
                           memcmp(ASN1_STRING_get0_data(gn->d.iPAddress), lo, 4) == 0;
        }
    }
    bool is_localhost = strcmp(cn, "localhost") == 0;
    assert_int_equal(sk_GENERAL_NAME_num(names), is_localhost ? 2 : 3);
    assert_int_equal(dns_cn, 1);
    assert_int_equal(dns_localhost, 1);
    assert_int_equal(ip_loopback, 1);
    GENERAL_NAMES_free(names);
    /* The host-name checks a TLS client would run. */
    assert_int_equal(X509_check_host(x, cn, 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_not_equal(X509_check_host(x, "other.example", 0, 0, NULL), 1);
}

static void assert_validity_10_years(X509 *x)
{
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
    assert_in_range(days, 3649, 3650);
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), NULL), 1);
    assert_in_range(days, 0, 0);
}

static void test_selfsigned_cert_created(void **state)
{
    char *cert = join(*state, "ssl/sub/tollgate.crt"), *key = join(*state, "ssl/sub/tollgate.key");
    char err[512] = "";
    int rc = tg_selfsigned_cert_ensure("gateway.example", cert, key, err, sizeof err);
    if (rc != 0) fail_msg("%s", err);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    X509 *x = load_cert(cert);
    EVP_PKEY *k = load_key(key);
    assert_int_equal(X509_check_private_key(x, k), 1);
    assert_true(EVP_PKEY_is_a(k, "EC"));
    char curve[64] = "";
    assert_int_equal(EVP_PKEY_get_utf8_string_param(k, "group", curve, sizeof curve, NULL), 1);
    assert_string_equal(curve, "prime256v1");
    assert_int_equal(X509_get_version(x), X509_VERSION_3);
    EVP_PKEY *pub = X509_get0_pubkey(x);
    assert_int_equal(X509_verify(x, pub), 1); /* self-signed */
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "gateway.example");
    assert_san(x, "gateway.example");
    assert_validity_10_years(x);
    X509_free(x);
    EVP_PKEY_free(k);
    free(cert);
    free(key);
}

static void test_selfsigned_cert_existing_untouched(void **state)
{
    char *cert = join(*state, "a.crt"), *key = join(*state, "a.key");
    char err[512] = "";
    assert_int_equal(tg_selfsigned_cert_ensure("localhost", cert, key, err, sizeof err), 0);
    size_t l1, l2;
    char *c1 = slurp(cert, &l1);
    assert_int_equal(tg_selfsigned_cert_ensure("other", cert, key, err, sizeof err), 0);
    char *c2 = slurp(cert, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(c1, c2, l1);
    /* "localhost" as the CN is not listed twice. */
    X509 *x = load_cert(cert);
    assert_san(x, "localhost");
    X509_free(x);
    free(c1);
    free(c2);
    free(cert);
    free(key);
}

static void test_selfsigned_cert_refuses_half_pair(void **state)
{
    char *cert = join(*state, "b.crt"), *key = join(*state, "b.key");
    FILE *f = fopen(key, "w");
    fputs("someone's key\n", f);
    fclose(f);
    char err[512] = "";
    assert_int_equal(tg_selfsigned_cert_ensure("localhost", cert, key, err, sizeof err),
                     -TG_ECONFIG);
    assert_non_null(strstr(err, key));
    assert_non_null(strstr(err, cert));
    size_t len;
    char *kept = slurp(key, &len);
    assert_string_equal(kept, "someone's key\n");
    assert_int_equal(access(cert, F_OK), -1);
    free(kept);
    free(cert);
    free(key);
}

static void test_selfsigned_cert_errors(void **state)
{
    char *cert = join(*state, "c.crt"), *key = join(*state, "c.key");
    char err[512] = "";
    assert_int_equal(tg_selfsigned_cert_ensure("bad name,DNS:evil", cert, key, err, sizeof err),
                     -TG_EINVAL);
    assert_int_equal(tg_selfsigned_cert_ensure("", cert, key, err, sizeof err), -TG_EINVAL);
    assert_int_equal(access(cert, F_OK), -1);
    assert_int_equal(access(key, F_OK), -1);

    /* A parent that is a regular file cannot become a directory. */
    char *blocker = join(*state, "file");
    FILE *f = fopen(blocker, "w");
    fclose(f);
    char *cert2 = join(*state, "file/x.crt"), *key2 = join(*state, "file/x.key");
    assert_int_not_equal(tg_selfsigned_cert_ensure("localhost", cert2, key2, err, sizeof err), 0);
    assert_non_null(strstr(err, blocker));
    free(blocker);
    free(cert2);
    free(key2);
    free(cert);
    free(key);
}

static void test_selfsigned_cert_ip_cn(void **state)
{
    char *cert = join(*state, "ip.crt"), *key = join(*state, "ip.key");
    char err[512] = "";
    assert_int_equal(tg_selfsigned_cert_ensure("10.1.2.3", cert, key, err, sizeof err), 0);
    X509 *x = load_cert(cert);
    assert_int_equal(X509_check_ip_asc(x, "10.1.2.3", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    X509_free(x);
    free(cert);
    free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_uuid_v4_format),
        cmocka_unit_test(test_uuid_valid_cases),
        cmocka_unit_test(test_generate_key),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_base64_rfc4648_vectors),
        cmocka_unit_test(test_base64_binary_round_trip),
        cmocka_unit_test(test_base64_rejects),
        cmocka_unit_test(test_aead_round_trip),
        cmocka_unit_test(test_aead_nonce_is_random),
        cmocka_unit_test(test_aead_tamper_detection),
        cmocka_unit_test(test_aead_aad_required_when_used),
        cmocka_unit_test(test_keyring_configured),
        cmocka_unit_test_setup_teardown(test_keyring_file_created_and_reloaded, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_keyring_concurrent_creation, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_keyring_file_whitespace_tolerated, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_keyring_file_errors_name_the_path, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_selfsigned_cert_created, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_selfsigned_cert_existing_untouched, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_selfsigned_cert_refuses_half_pair, make_tmpdir,
                                        remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_selfsigned_cert_errors, make_tmpdir, remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_selfsigned_cert_ip_cn, make_tmpdir, remove_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
