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

typedef struct tg_headbuf {
    char *p;
    size_t len, cap;
} tg_headbuf_t;

void tg_headbuf_add(tg_headbuf_t *b, const char *s, size_t n);
void tg_headbuf_adds(tg_headbuf_t *b, tg_str_t s);
void tg_headbuf_addf(tg_headbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "name: value\r\n" */
void tg_headbuf_header(tg_headbuf_t *b, tg_str_t name, tg_str_t value);
/* Frees the bytes (the buffer may be used again). */
void tg_headbuf_free(tg_headbuf_t *b);

#endif
