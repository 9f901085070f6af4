/*
 * crypto.c — see crypto.h.
 *
 * Every OpenSSL failure path clears the thread's error queue before
 * returning: a stale entry there would make a later SSL_get_error() on the
 * same thread report a bogus SSL_ERROR_SSL for an unrelated connection.
 */
#include "crypto.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GCM_NONCE_LEN 12
#define GCM_TAG_LEN 16
/* A keyring file holds 44 base64 characters and a newline; anything far larger is not ours. */
#define KEYRING_FILE_MAX 256
#define CERT_DAYS 3650

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

__attribute__((format(printf, 4, 5))) static int fail(char *errbuf, size_t errlen, int code,
                                                      const char *fmt, ...)
{
    if (errbuf && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Takes the oldest queued OpenSSL error as text and empties the queue (see the file comment). */
static const char *ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, len, "unknown OpenSSL error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/*
 * SHA-256 runs per request (key-auth hashes every key it has not seen lately) and per entity
 * (config digests, a million keys in a snapshot). Handed EVP_sha256(), OpenSSL 3 looks the
 * implementation up and allocates a context on every call; instead the algorithm is fetched
 * once and each thread keeps a context, freed when the thread exits. Without either (a
 * failed fetch or key), the one-shot call.
 */
static EVP_MD *sha256_md;
static pthread_key_t sha256_ctx_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static _Thread_local EVP_MD_CTX *sha256_ctx;

static void sha256_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
    sha256_ctx = NULL;
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256_md && pthread_key_create(&sha256_ctx_key, sha256_ctx_free) != 0) {
        EVP_MD_free(sha256_md);
        sha256_md = NULL;
    }
}

/* This thread's context, registered for freeing at thread exit; NULL when it cannot be. */
static EVP_MD_CTX *sha256_thread_ctx(void)
{
    if (sha256_ctx) return sha256_ctx;
    pthread_once(&sha256_once, sha256_fetch);
    if (!sha256_md) return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && pthread_setspecific(sha256_ctx_key, ctx) != 0) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return sha256_ctx = ctx;
}

void tg_sha256(const void *data, size_t len, uint8_t out[TG_SHA256_LEN])
{
    unsigned int n = 0;
    EVP_MD_CTX *ctx = sha256_thread_ctx();
    if (ctx && EVP_DigestInit_ex2(ctx, sha256_md, NULL) == 1 &&
        EVP_DigestUpdate(ctx, data, len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 &&
        n == TG_SHA256_LEN)
        return;
    ERR_clear_error(); /* whatever the reusable context left (see the file comment) */
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != TG_SHA256_LEN)
        tg_fatal("SHA-256 computation failed");
}

void tg_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

void tg_random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;
    /* RAND_bytes takes an int, so very large requests go in slices. */
    while (len > 0) {
        int n = len > INT_MAX ? INT_MAX : (int)len;
        if (RAND_bytes(p, n) != 1) tg_fatal("the OpenSSL CSPRNG failed to produce random bytes");
        p += n;
        len -= (size_t)n;
    }
}

void tg_uuid_v4(char out[TG_UUID_STR_LEN + 1])
{
    uint8_t b[16];
    tg_random_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    char hex[33];
    tg_hex_encode(b, sizeof b, hex);
    size_t o = 0;
    for (size_t i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20) out[o++] = '-';
        out[o++] = hex[i];
    }
    out[o] = '\0';
}

bool tg_uuid_valid(tg_str_t s)
{
    if (!s.p || s.len != TG_UUID_STR_LEN) return false;
    for (size_t i = 0; i < s.len; i++) {
        bool dash_pos = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash_pos ? s.p[i] != '-' : !isxdigit((unsigned char)s.p[i])) return false;
    }
    return true;
}

/* Uniform letter from `first`: bytes >= 234 are redrawn so that `% 26` carries no bias. */
static char random_letter(char first)
{
    for (;;) {
        uint8_t b;
        tg_random_bytes(&b, 1);
        if (b < 234) return (char)(first + b % 26);
    }
}

static void b64_encode_into(const uint8_t *in, size_t len, char *out)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        bool two = i + 1 < len;
        uint32_t v = (uint32_t)in[i] << 16 | (two ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = two ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
}

void tg_generate_key(char out[33])
{
    uint8_t raw[24];
    tg_random_bytes(raw, sizeof raw);
    b64_encode_into(raw, sizeof raw, out); /* 24 bytes → exactly 32 chars, never '=' */
    OPENSSL_cleanse(raw, sizeof raw);
    for (size_t i = 0; i < 32; i++) {
        if (out[i] == '/')
            out[i] = random_letter('A');
        else if (out[i] == '+')
            out[i] = random_letter('a');
    }
}

bool tg_ct_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

char *tg_base64_encode(const uint8_t *in, size_t len)
{
    if (len > (SIZE_MAX / 4 - 1) * 3) tg_fatal("base64 input of %zu bytes is too large", len);
    char *out = tg_malloc((len + 2) / 3 * 4 + 1);
    b64_encode_into(in, len, out);
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/*
 * Decodes one 4-character group whose last `pad` characters are '='. The
 * bits a padded group leaves unused must be zero: accepting them would give
 * one byte string several encodings, which is what "strict" rules out.
 */
static int decode_quad(const char *q, int pad, uint8_t out[3])
{
    uint32_t v = 0;
    for (int j = 0; j < 4; j++) {
        int d = j < 4 - pad ? b64_value((unsigned char)q[j]) : 0;
        if (d < 0) return -1;
        v = v << 6 | (uint32_t)d;
    }
    if ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff))) return -1;
    out[0] = (uint8_t)(v >> 16);
    out[1] = (uint8_t)(v >> 8);
    out[2] = (uint8_t)v;
    return 0;
}

uint8_t *tg_base64_decode(const char *in, size_t inlen, size_t *outlen)
{
    if (inlen % 4 != 0) return NULL;
    int pad = 0;
    if (inlen > 0 && in[inlen - 1] == '=') pad = (inlen > 1 && in[inlen - 2] == '=') ? 2 : 1;
    size_t n = inlen / 4 * 3 - (size_t)pad;
    /* One spare byte so callers may treat decoded text as a C string. */
    uint8_t *out = tg_malloc(n + 3);
    for (size_t i = 0, o = 0; i < inlen; i += 4, o += 3) {
        if (decode_quad(in + i, i + 4 == inlen ? pad : 0, out + o) < 0) {
            OPENSSL_cleanse(out, n + 3);
            free(out);
            return NULL;
        }
    }
    out[n] = '\0';
    if (outlen) *outlen = n;
    return out;
}

/*
 * One AES-256-GCM pass in either direction over `len` bytes of `in` into
 * `out`. Encrypting fills `tag`; decrypting checks it and fails on mismatch.
 */
static int gcm_run(int enc, const uint8_t *key, const uint8_t *nonce, const void *aad,
                   size_t aadlen, const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) tg_fatal("out of memory allocating a cipher context");
    int n = 0;
    int ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE_LEN, NULL) == 1 &&
             EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) == 1;
    if (ok && aadlen > 0) ok = EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aadlen) == 1;
    if (ok && len > 0) ok = EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1 && (size_t)n == len;
    if (ok && !enc) ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, tag) == 1;
    if (ok) ok = EVP_CipherFinal_ex(ctx, out + len, &n) == 1;
    if (ok && enc) ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) ERR_clear_error();
    return ok ? 0 : -TG_ECRYPTO;
}

int tg_aead_encrypt(const uint8_t key[TG_AEAD_KEY_LEN], const void *aad, size_t aadlen,
                    const void *pt, size_t len, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (len > INT_MAX - TG_AEAD_OVERHEAD || aadlen > INT_MAX) return -TG_EINVAL;
    uint8_t *blob = tg_malloc(len + TG_AEAD_OVERHEAD);
    /* A fresh random nonce per message: 2^-32 collision odds only after ~2^32 messages per key. */
    tg_random_bytes(blob, GCM_NONCE_LEN);
    uint8_t *tag = blob + GCM_NONCE_LEN + len;
    int rc = gcm_run(1, key, blob, aad, aadlen, pt, len, blob + GCM_NONCE_LEN, tag);
    if (rc < 0) {
        free(blob);
        return rc;
    }
    *out = blob;
    *outlen = len + TG_AEAD_OVERHEAD;
    return 0;
}

int tg_aead_decrypt(const uint8_t key[TG_AEAD_KEY_LEN], const void *aad, size_t aadlen,
                    const uint8_t *blob, size_t bloblen, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (bloblen < TG_AEAD_OVERHEAD || bloblen > INT_MAX || aadlen > INT_MAX) return -TG_ECRYPTO;
    size_t len = bloblen - TG_AEAD_OVERHEAD;
    uint8_t tag[GCM_TAG_LEN];
    memcpy(tag, blob + GCM_NONCE_LEN + len, GCM_TAG_LEN);
    uint8_t *pt = tg_malloc(len + 1);
    int rc = gcm_run(0, key, blob, aad, aadlen, blob + GCM_NONCE_LEN, len, pt, tag);
    if (rc < 0) {
        /* Never hand out (or leave lying around) plaintext whose tag did not verify. */
        OPENSSL_cleanse(pt, len + 1);
        free(pt);
        return rc;
    }
    pt[len] = '\0';
    *out = pt;
    *outlen = len;
    return 0;
}

/* ---- keyring ---- */

static int decode_key(const char *b64, size_t len, uint8_t key[TG_AEAD_KEY_LEN])
{
    size_t n = 0;
    uint8_t *raw = tg_base64_decode(b64, len, &n);
    if (!raw) return -1;
    int rc = n == TG_AEAD_KEY_LEN ? 0 : -1;
    if (rc == 0) memcpy(key, raw, TG_AEAD_KEY_LEN);
    OPENSSL_cleanse(raw, n);
    free(raw);
    return rc;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads at most `cap` bytes; *len == cap means the file may be larger than the caller allows. */
static int read_small(int fd, char *buf, size_t cap, size_t *len)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        got += (size_t)n;
    }
    *len = got;
    return 0;
}

static void warn_if_exposed(int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        TG_LOGW("crypto", "keyring file %s is accessible by other users (mode %03o); use 0600",
                path, (unsigned)(st.st_mode & 0777));
}

/* -TG_ENOTFOUND (errbuf untouched) when the file does not exist, so the caller can create it. */
static int read_key_file(const char *path, uint8_t key[TG_AEAD_KEY_LEN], char *errbuf,
                         size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) return -TG_ENOTFOUND;
    if (fd < 0)
        return fail(errbuf, errlen, -TG_ECONFIG, "cannot open keyring file %s: %s", path,
                    strerror(errno));
    char buf[KEYRING_FILE_MAX];
    size_t len = 0;
    int rc = read_small(fd, buf, sizeof buf, &len);
    int saved = errno;
    warn_if_exposed(fd, path);
    close(fd);
    if (rc < 0)
        return fail(errbuf, errlen, -TG_ECONFIG, "cannot read keyring file %s: %s", path,
                    strerror(saved));
    bool too_big = len == sizeof buf;
    size_t start = 0;
    while (start < len && isspace((unsigned char)buf[start]))
        start++;
    while (len > start && isspace((unsigned char)buf[len - 1]))
        len--;
    rc = too_big ? -1 : decode_key(buf + start, len - start, key);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc < 0)
        return fail(errbuf, errlen, -TG_ECONFIG,
                    "keyring file %s does not hold the base64 encoding of exactly %d bytes", path,
                    TG_AEAD_KEY_LEN);
    return 0;
}

static void fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash ? tg_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : tg_strdup(".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Writes `text` to a new file (O_EXCL, exactly `mode`), flushed to disk; removed on failure. */
static int write_new_file(const char *path, const char *text, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return -1;
    /* The umask may only narrow the mode; fchmod makes it exactly what was asked. */
    int rc = fchmod(fd, mode) == 0 && write_all(fd, text, len) == 0 && fsync(fd) == 0 ? 0 : -1;
    int saved = errno;
    close(fd);
    if (rc < 0) {
        unlink(path);
        errno = saved;
    }
    return rc;
}

/*
 * Publishes `text` at `path` by writing a private temporary file and linking
 * it into place: link() fails with EEXIST instead of replacing, so when two
 * processes race the loser reads the winner's complete file rather than a
 * half-written one. Returns 0, -TG_EEXISTS (lost the race) or -TG_EIO with errno set.
 */
static int publish_file(const char *path, const char *text, size_t len)
{
    uint8_t suffix[4];
    char hex[9];
    tg_random_bytes(suffix, sizeof suffix);
    tg_hex_encode(suffix, sizeof suffix, hex);
    char *tmp = tg_asprintf("%s.tmp-%s", path, hex);
    int rc = write_new_file(tmp, text, len, 0600);
    if (rc == 0) {
        rc = link(tmp, path);
        int saved = errno;
        unlink(tmp);
        errno = saved;
    }
    free(tmp);
    if (rc == 0) fsync_parent(path);
    if (rc == 0) return 0;
    return errno == EEXIST ? -TG_EEXISTS : -TG_EIO;
}

static int create_key_file(const char *path, uint8_t key[TG_AEAD_KEY_LEN], char *errbuf,
                           size_t errlen)
{
    uint8_t raw[TG_AEAD_KEY_LEN];
    char line[64];
    tg_random_bytes(raw, sizeof raw);
    char *text = tg_base64_encode(raw, sizeof raw);
    int n = snprintf(line, sizeof line, "%s\n", text);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    int rc = publish_file(path, line, (size_t)n);
    if (rc == 0) memcpy(key, raw, sizeof raw);
    if (rc == -TG_EIO)
        rc = fail(errbuf, errlen, -TG_ECONFIG,
                  "cannot create keyring file %s: %s (or set keyring_key)", path, strerror(errno));
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(line, sizeof line);
    return rc;
}

int tg_keyring_load(const char *configured, const char *path, uint8_t key[TG_AEAD_KEY_LEN],
                    char *errbuf, size_t errlen)
{
    if (configured && *configured) {
        if (decode_key(configured, strlen(configured), key) == 0) return 0;
        return fail(errbuf, errlen, -TG_ECONFIG,
                    "keyring_key must be the base64 encoding of exactly %d bytes", TG_AEAD_KEY_LEN);
    }
    if (!path || !*path)
        return fail(errbuf, errlen, -TG_ECONFIG, "no keyring_key set and no keyring file path");
    int rc = read_key_file(path, key, errbuf, errlen);
    if (rc != -TG_ENOTFOUND) return rc;
    rc = create_key_file(path, key, errbuf, errlen);
    if (rc != -TG_EEXISTS) return rc;
    rc = read_key_file(path, key, errbuf, errlen);
    if (rc == -TG_ENOTFOUND)
        rc =
            fail(errbuf, errlen, -TG_ECONFIG, "keyring file %s vanished while being created", path);
    return rc;
}

/* ---- self-signed certificate ---- */

static bool path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* mkdir -p of the directory holding `path`; new directories are private (0700). */
static int make_parent_dirs(const char *path, char *errbuf, size_t errlen)
{
    char *dir = tg_strdup(path);
    int rc = 0;
    for (char *p = strchr(dir + 1, '/'); p && rc == 0; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            rc = fail(errbuf, errlen, -TG_ECONFIG, "cannot create directory %s: %s", dir,
                      strerror(errno));
        *p = '/';
    }
    free(dir);
    return rc;
}

/* A CN becomes a DNS or IP SAN entry, so only host-name characters are allowed. */
static bool cn_valid(const char *cn)
{
    size_t n = strlen(cn);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)cn[i];
        if (!isalnum(c) && !strchr(".-_*:", c)) return false;
    }
    return true;
}

static int push_alt_name(GENERAL_NAMES *names, const char *value)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    if (!gn) return 0;
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(value);
    ERR_clear_error(); /* a2i_IPADDRESS may queue an error for a plain host name */
    if (ip) {
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
    } else {
        ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
        if (!dns || ASN1_STRING_set(dns, value, -1) != 1) {
            ASN1_IA5STRING_free(dns);
            GENERAL_NAME_free(gn);
            return 0;
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
    }
    if (sk_GENERAL_NAME_push(names, gn) > 0) return 1;
    GENERAL_NAME_free(gn);
    return 0;
}

/* SAN built as structures, not as a config string, so a CN cannot inject extra entries. */
static int add_alt_names(X509 *x, const char *cn)
{
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    int ok = names && push_alt_name(names, cn);
    if (ok && strcasecmp(cn, "localhost") != 0) ok = push_alt_name(names, "localhost");
    if (ok && strcmp(cn, "127.0.0.1") != 0) ok = push_alt_name(names, "127.0.0.1");
    if (ok) ok = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(names);
    return ok;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

static int set_random_serial(X509 *x)
{
    uint8_t b[16];
    tg_random_bytes(b, sizeof b);
    b[0] = (uint8_t)((b[0] & 0x7f) | 0x40); /* positive, non-zero, full 16 bytes */
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

static X509 *build_cert(EVP_PKEY *pkey, const char *cn)
{
    X509 *x = X509_new();
    if (!x) return NULL;
    X509_NAME *name = X509_get_subject_name(x);
    int ok = X509_set_version(x, X509_VERSION_3) && set_random_serial(x) &&
             X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
             X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                        0) &&
             X509_set_issuer_name(x, name) && X509_set_pubkey(x, pkey) &&
             add_ext(x, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, NID_key_usage, "critical,digitalSignature") &&
             add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth") &&
             add_ext(x, NID_subject_key_identifier, "hash") && add_alt_names(x, cn) &&
             X509_sign(x, pkey, EVP_sha256()) > 0;
    if (ok) return x;
    X509_free(x);
    return NULL;
}

static int write_bio_file(BIO *bio, const char *path, mode_t mode, char *errbuf, size_t errlen)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || !data)
        return fail(errbuf, errlen, -TG_ECRYPTO, "cannot encode PEM for %s", path);
    if (write_new_file(path, data, (size_t)len, mode) != 0)
        return fail(errbuf, errlen, -TG_ECONFIG, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* Key first (secure memory BIO, wiped on free), then the certificate; never leaves just one. */
static int write_pair(X509 *x, EVP_PKEY *pkey, const char *cert_path, const char *key_path,
                      char *errbuf, size_t errlen)
{
    char ebuf[256];
    BIO *kb = BIO_new(BIO_s_secmem()), *cb = BIO_new(BIO_s_mem());
    int rc = 0;
    if (!kb || !cb || PEM_write_bio_PrivateKey(kb, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_X509(cb, x) != 1)
        rc = fail(errbuf, errlen, -TG_ECRYPTO, "cannot encode the self-signed certificate: %s",
                  ssl_error(ebuf, sizeof ebuf));
    if (rc == 0) rc = write_bio_file(kb, key_path, 0600, errbuf, errlen);
    if (rc == 0) {
        rc = write_bio_file(cb, cert_path, 0644, errbuf, errlen);
        if (rc < 0) unlink(key_path);
    }
    BIO_free(kb);
    BIO_free(cb);
    return rc;
}

int tg_selfsigned_cert_ensure(const char *cn, const char *cert_path, const char *key_path,
                              char *errbuf, size_t errlen)
{
    bool have_cert = path_exists(cert_path), have_key = path_exists(key_path);
    if (have_cert && have_key) return 0;
    /* Regenerating would overwrite a key or certificate someone put there on purpose. */
    if (have_cert || have_key)
        return fail(errbuf, errlen, -TG_ECONFIG,
                    "%s exists but %s does not; provide both or neither",
                    have_cert ? cert_path : key_path, have_cert ? key_path : cert_path);
    if (!cn || !cn_valid(cn))
        return fail(errbuf, errlen, -TG_EINVAL, "invalid certificate common name '%s'",
                    cn ? cn : "");
    int rc = make_parent_dirs(cert_path, errbuf, errlen);
    if (rc == 0) rc = make_parent_dirs(key_path, errbuf, errlen);
    if (rc < 0) return rc;
    char ebuf[256];
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = pkey ? build_cert(pkey, cn) : NULL;
    if (!x)
        rc = fail(errbuf, errlen, -TG_ECRYPTO, "cannot generate a self-signed certificate: %s",
                  ssl_error(ebuf, sizeof ebuf));
    else
        rc = write_pair(x, pkey, cert_path, key_path, errbuf, errlen);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}
