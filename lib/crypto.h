/*
 * crypto.h — hashing, random, UUIDs, authenticated encryption, keyring, certs.
 *
 * Thin wrappers over OpenSSL 3 so the rest of the code never touches EVP
 * directly. All functions are thread-safe and allocate nothing unless stated.
 */
#ifndef TG_CRYPTO_H
#define TG_CRYPTO_H

#include "str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_SHA256_LEN 32
#define TG_UUID_STR_LEN 36
#define TG_AEAD_KEY_LEN 32
/* AES-256-GCM blob layout: 12-byte nonce || ciphertext || 16-byte tag. */
#define TG_AEAD_OVERHEAD (12 + 16)

/* Keeps one digest context per calling thread (allocated on its first call, freed when the
 * thread exits): it runs per request and per entity. */
void tg_sha256(const void *data, size_t len, uint8_t out[TG_SHA256_LEN]);
/* Lower-case hex; `out` must hold 2*len+1 bytes; NUL-terminated. */
void tg_hex_encode(const uint8_t *in, size_t len, char *out);
/* Fills buf with cryptographically secure random bytes; aborts if the CSPRNG fails. */
void tg_random_bytes(void *buf, size_t len);
/* Random version-4 UUID, lower-case, NUL-terminated (out holds 37 bytes). */
void tg_uuid_v4(char out[TG_UUID_STR_LEN + 1]);
/* True for a canonical 8-4-4-4-12 hex UUID (any case). */
bool tg_uuid_valid(tg_str_t s);
/*
 * Kong's generated credential key: 24 random bytes, base64, '/' and '+' and '='
 * replaced so the result is 32 alphanumerics. out holds 33 bytes.
 */
void tg_generate_key(char out[33]);
/* Constant-time comparison; true when equal. */
bool tg_ct_equal(const void *a, const void *b, size_t len);

/* Standard base64 with padding. encode: returns a fresh NUL-terminated string. */
char *tg_base64_encode(const uint8_t *in, size_t len);
/* decode: returns a fresh buffer and its length, or NULL on malformed input. */
uint8_t *tg_base64_decode(const char *in, size_t inlen, size_t *outlen);

/*
 * AES-256-GCM. encrypt: *out is a fresh buffer of len + TG_AEAD_OVERHEAD bytes
 * (nonce || ciphertext || tag). decrypt: *out is a fresh buffer of the
 * plaintext (+1 byte NUL-terminated for convenience); -TG_ECRYPTO when the tag
 * does not verify or the blob is malformed. `aad` may be NULL.
 */
int tg_aead_encrypt(const uint8_t key[TG_AEAD_KEY_LEN], const void *aad, size_t aadlen,
                    const void *pt, size_t len, uint8_t **out, size_t *outlen);
int tg_aead_decrypt(const uint8_t key[TG_AEAD_KEY_LEN], const void *aad, size_t aadlen,
                    const uint8_t *blob, size_t bloblen, uint8_t **out, size_t *outlen);

/*
 * The keyring key: `configured` (base64 of 32 bytes, from `keyring_key`) when
 * non-empty, else read from `path`, else generated into `path` (mode 0600,
 * created atomically). Returns -TG_ECONFIG with a message in errbuf.
 */
int tg_keyring_load(const char *configured, const char *path, uint8_t key[TG_AEAD_KEY_LEN],
                    char *errbuf, size_t errlen);

/*
 * Writes a self-signed certificate (EC P-256, SAN = DNS:cn, DNS:localhost,
 * IP:127.0.0.1, valid 10 years) and its key (mode 0600) unless both files
 * already exist.
 */
int tg_selfsigned_cert_ensure(const char *cn, const char *cert_path, const char *key_path,
                              char *errbuf, size_t errlen);

#endif
