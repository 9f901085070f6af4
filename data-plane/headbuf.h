/*
 * headbuf.h — a growable byte buffer for the message heads the proxy writes (the upstream
 * request head, the client response head, generated bodies).
 *
 * A value type owned by its user; tg_headbuf_take hands the bytes over (free them).
 * Out-of-memory aborts. Any thread, one user at a time.
 */
#ifndef TG_HEADBUF_H
#define TG_HEADBUF_H

#include "str.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct tg_headbuf {
    char *p;
    size_t len, cap;
} tg_headbuf_t;

/* Appends n bytes (the buffer stays NUL-terminated). */
static inline void tg_headbuf_add(tg_headbuf_t *b, const char *s, size_t n);
/* The slow path of tg_headbuf_add: grows the buffer first. */
void tg_headbuf_add_grow(tg_headbuf_t *b, const char *s, size_t n);
/* A string literal, its length known at compile time. */
#define TG_HEADBUF_LIT(b, lit) tg_headbuf_add((b), "" lit, sizeof(lit) - 1)
void tg_headbuf_adds(tg_headbuf_t *b, tg_str_t s);
/* A NUL-terminated string. */
void tg_headbuf_addz(tg_headbuf_t *b, const char *s);
void tg_headbuf_addf(tg_headbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Decimal digits of v (the proxy's numbers, without printf on the request path). */
void tg_headbuf_addu(tg_headbuf_t *b, uint64_t v);
void tg_headbuf_addi(tg_headbuf_t *b, int64_t v);
/* Lowercase hex digits of v into out (at least 16 bytes), no NUL; returns their count. */
size_t tg_headbuf_hex(char *out, uint64_t v);
/* Decimal digits of v into out (at least 20 bytes), no NUL; returns their count. */
size_t tg_headbuf_dec(char *out, uint64_t v);
/* "name: value\r\n" */
void tg_headbuf_header(tg_headbuf_t *b, tg_str_t name, tg_str_t value);
/* Frees the bytes (the buffer may be used again). */
void tg_headbuf_free(tg_headbuf_t *b);

static inline void tg_headbuf_add(tg_headbuf_t *b, const char *s, size_t n)
{
    if (b->len + n >= b->cap) {
        tg_headbuf_add_grow(b, s, n);
        return;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

#endif
