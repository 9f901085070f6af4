/*
 * str.h — string views.
 *
 * A tg_str_t points into memory owned by someone else (a read buffer, a JSON
 * document, a literal); it is never freed through the view. Not NUL-terminated
 * unless the owner says so. Thread-agnostic.
 */
#ifndef TG_STR_H
#define TG_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

typedef struct tg_str {
    const char *p;
    size_t len;
} tg_str_t;

#define TG_STR(lit) ((tg_str_t){(lit), sizeof(lit) - 1})
#define TG_STR_NULL ((tg_str_t){NULL, 0})

static inline tg_str_t tg_str_from(const char *s)
{
    return (tg_str_t){s, s ? strlen(s) : 0};
}

static inline bool tg_str_eq(tg_str_t a, tg_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool tg_str_eq_lit(tg_str_t a, const char *lit)
{
    return tg_str_eq(a, tg_str_from(lit));
}

static inline bool tg_str_caseeq(tg_str_t a, tg_str_t b)
{
    return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

static inline bool tg_str_starts_with(tg_str_t s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.p, prefix, n) == 0;
}

/* FNV-1a's 64-bit offset basis: the usual start of tg_fnv1a (callers mix a seed into it). */
#define TG_FNV1A_BASIS UINT64_C(0xcbf29ce484222325)

/*
 * 64-bit FNV-1a of n bytes, continuing from h: for the process's own hash tables of short
 * keys (not for anything an attacker aims at without a secret mixed in). Its low bits mix
 * poorly, so tables fold the high bits in before masking.
 */
static inline uint64_t tg_fnv1a(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

#endif
