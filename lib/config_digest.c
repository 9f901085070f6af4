/*
 * config_digest.c — see config_digest.h.
 */
#include "config_digest.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "log.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Entities hashed from a stack buffer up to this size; larger ones (big plugin configs) malloc. */
#define STACK_BUF 2048

char *tg_config_digest_canonical(const json_t *entity, size_t *len)
{
    if (!json_is_object(entity)) return NULL;
    char *s = json_dumps(entity, JSON_SORT_KEYS | JSON_COMPACT);
    if (!s) tg_fatal("config_digest: out of memory dumping an entity");
    if (len) *len = strlen(s);
    return s;
}

void tg_config_digest_entity_raw(tg_str_t type, tg_str_t id, tg_str_t canonical,
                                 uint8_t out[TG_CONFIG_DIGEST_LEN])
{
    /* tg_sha256 is one-shot, so the three parts are laid out in one buffer. */
    char stack[STACK_BUF];
    size_t n = type.len + 1 + id.len + 1 + canonical.len;
    char *buf = n <= sizeof stack ? stack : tg_malloc(n);
    char *p = buf;
    memcpy(p, type.p, type.len);
    p += type.len;
    *p++ = '\0';
    memcpy(p, id.p, id.len);
    p += id.len;
    *p++ = '\0';
    if (canonical.len) memcpy(p, canonical.p, canonical.len);
    tg_sha256(buf, n, out);
    if (buf != stack) free(buf);
}

int tg_config_digest_entity(const char *type, const char *id, const json_t *entity,
                            uint8_t out[TG_CONFIG_DIGEST_LEN])
{
    size_t len = 0;
    char *canon = tg_config_digest_canonical(entity, &len);
    if (!canon) return -TG_EINVAL;
    tg_config_digest_entity_raw(tg_str_from(type), tg_str_from(id), (tg_str_t){canon, len}, out);
    free(canon);
    return 0;
}

void tg_config_digest_add(tg_config_digest_t *d, const uint8_t h[TG_CONFIG_DIGEST_LEN])
{
    unsigned carry = 0;
    for (int i = TG_CONFIG_DIGEST_LEN - 1; i >= 0; i--) {
        unsigned v = (unsigned)d->sum[i] + h[i] + carry;
        d->sum[i] = (uint8_t)v;
        carry = v >> 8;
    }
}

void tg_config_digest_sub(tg_config_digest_t *d, const uint8_t h[TG_CONFIG_DIGEST_LEN])
{
    unsigned borrow = 0;
    for (int i = TG_CONFIG_DIGEST_LEN - 1; i >= 0; i--) {
        int v = (int)d->sum[i] - h[i] - (int)borrow;
        borrow = v < 0;
        d->sum[i] = (uint8_t)(v + (borrow ? 256 : 0));
    }
}

void tg_config_digest_hex(const tg_config_digest_t *d, char out[TG_CONFIG_DIGEST_HEX_LEN + 1])
{
    tg_hex_encode(d->sum, sizeof d->sum, out);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tg_config_digest_from_hex(const char *hex, tg_config_digest_t *d)
{
    if (!hex || strlen(hex) != TG_CONFIG_DIGEST_HEX_LEN) return -TG_EINVAL;
    for (size_t i = 0; i < TG_CONFIG_DIGEST_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -TG_EINVAL;
        d->sum[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/*
 * Decimal text, for PostgreSQL's numeric type: the control plane keeps its running digest
 * there so that the change-log statement can add a write's contribution with SQL arithmetic
 * (sync_build.h, changelog.h). Schoolbook conversion on the 32 bytes; 78 digits at most.
 */
void tg_config_digest_decimal(const tg_config_digest_t *d, char out[TG_CONFIG_DIGEST_DEC_LEN + 1])
{
    uint8_t n[TG_CONFIG_DIGEST_LEN];
    memcpy(n, d->sum, sizeof n);
    char rev[TG_CONFIG_DIGEST_DEC_LEN];
    size_t len = 0;
    bool zero;
    do {
        unsigned rem = 0;
        zero = true;
        for (size_t i = 0; i < sizeof n; i++) { /* n /= 10, most significant byte first */
            unsigned cur = rem << 8 | n[i];
            n[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            if (n[i]) zero = false;
        }
        rev[len++] = (char)('0' + rem);
    } while (!zero);
    for (size_t i = 0; i < len; i++)
        out[i] = rev[len - 1 - i];
    out[len] = '\0';
}

int tg_config_digest_from_decimal(const char *dec, tg_config_digest_t *d)
{
    if (!dec || !*dec || strlen(dec) > TG_CONFIG_DIGEST_DEC_LEN) return -TG_EINVAL;
    memset(d->sum, 0, sizeof d->sum);
    for (const char *p = dec; *p; p++) {
        if (*p < '0' || *p > '9') return -TG_EINVAL;
        unsigned carry = (unsigned)(*p - '0');
        for (int i = TG_CONFIG_DIGEST_LEN - 1; i >= 0; i--) { /* sum = sum * 10 + digit */
            unsigned cur = d->sum[i] * 10u + carry;
            d->sum[i] = (uint8_t)cur;
            carry = cur >> 8;
        }
        if (carry) return -TG_EINVAL; /* 2^256 or more */
    }
    return 0;
}

bool tg_config_digest_decimal_hex(const char *dec, char out[TG_CONFIG_DIGEST_HEX_LEN + 1])
{
    tg_config_digest_t d;
    out[0] = '\0';
    if (!dec || tg_config_digest_from_decimal(dec, &d) != 0) return false;
    tg_config_digest_hex(&d, out);
    return true;
}
