/*
 * config_digest.c — see config_digest.h.
 */
#include "config_digest.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "log.h"

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
