/*
 * config_digest.h — the order-independent digest of a whole configuration
 * (sync-protocol rule 5), computed the same way by the CP and the DP.
 *
 * Definition (both planes must follow it byte for byte):
 *   canonical(e) = json_dumps(e, JSON_SORT_KEYS | JSON_COMPACT)
 *   h(e)         = SHA-256(type || 0x00 || id || 0x00 || canonical(e))
 *   digest       = sum of h(e) over every entity, each h read as a big-endian
 *                  256-bit unsigned integer, modulo 2^256
 * The empty configuration has the all-zero digest. A sum (rather than XOR) is
 * used so two identical entries do not cancel out. Because addition is
 * commutative and invertible the digest is maintained in O(1) per change:
 * insert adds h(new), update subtracts h(old) and adds h(new), delete
 * subtracts h(old).
 *
 * Pure functions; thread-safe. Only tg_config_digest_canonical allocates.
 */
#ifndef TG_CONFIG_DIGEST_H
#define TG_CONFIG_DIGEST_H

#include "str.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define TG_CONFIG_DIGEST_LEN 32
#define TG_CONFIG_DIGEST_HEX_LEN 64
#define TG_CONFIG_DIGEST_DEC_LEN 78 /* decimal digits of 2^256 - 1 */

typedef struct tg_config_digest {
    uint8_t sum[TG_CONFIG_DIGEST_LEN]; /* big-endian */
} tg_config_digest_t;

/*
 * The canonical JSON of an entity (see above) as a fresh NUL-terminated string
 * the caller frees; *len (optional) gets its length. NULL when `entity` is not
 * a JSON object.
 */
char *tg_config_digest_canonical(const json_t *entity, size_t *len);

/* h(e) from an entity's canonical bytes (as stored by the DP, say). */
void tg_config_digest_entity_raw(tg_str_t type, tg_str_t id, tg_str_t canonical,
                                 uint8_t out[TG_CONFIG_DIGEST_LEN]);

/* h(e) from a JSON entity. Returns -TG_EINVAL when `entity` is not an object. */
int tg_config_digest_entity(const char *type, const char *id, const json_t *entity,
                            uint8_t out[TG_CONFIG_DIGEST_LEN]);

/* digest += h and digest -= h, modulo 2^256. */
void tg_config_digest_add(tg_config_digest_t *d, const uint8_t h[TG_CONFIG_DIGEST_LEN]);
void tg_config_digest_sub(tg_config_digest_t *d, const uint8_t h[TG_CONFIG_DIGEST_LEN]);

/* Lower-case hex; out holds TG_CONFIG_DIGEST_HEX_LEN + 1 bytes, NUL-terminated. */
void tg_config_digest_hex(const tg_config_digest_t *d, char out[TG_CONFIG_DIGEST_HEX_LEN + 1]);
/* Parses 64 hex digits (any case). Returns -TG_EINVAL for anything else. */
int tg_config_digest_from_hex(const char *hex, tg_config_digest_t *d);
/* The digest as a decimal integer (no sign, no leading zeros; "0" for zero), and back: the
 * control plane's PostgreSQL form (numeric). from_decimal returns -TG_EINVAL for anything but
 * 1-78 digits below 2^256. */
void tg_config_digest_decimal(const tg_config_digest_t *d, char out[TG_CONFIG_DIGEST_DEC_LEN + 1]);
int tg_config_digest_from_decimal(const char *dec, tg_config_digest_t *d);
/* The decimal form straight to hex: true, or false with out "" when dec is NULL (SQL NULL:
 * not known) or not a digest. */
bool tg_config_digest_decimal_hex(const char *dec, char out[TG_CONFIG_DIGEST_HEX_LEN + 1]);

#endif
