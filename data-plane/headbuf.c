/*
 * headbuf.c — growable byte buffer; see headbuf.h.
 */
#include "headbuf.h"
#include "alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void reserve(tg_headbuf_t *b, size_t n)
{
    if (b->len + n <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
        cap *= 2;
    b->p = tg_realloc(b->p, cap);
    b->cap = cap;
}

void tg_headbuf_add(tg_headbuf_t *b, const char *s, size_t n)
{
    reserve(b, n + 1);
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void tg_headbuf_adds(tg_headbuf_t *b, tg_str_t s)
{
    tg_headbuf_add(b, s.p, s.len);
}

void tg_headbuf_addf(tg_headbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        reserve(b, 64);
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        reserve(b, (size_t)n + 1);
    }
}

void tg_headbuf_header(tg_headbuf_t *b, tg_str_t name, tg_str_t value)
{
    reserve(b, name.len + value.len + 5);
    tg_headbuf_adds(b, name);
    tg_headbuf_add(b, ": ", 2);
    tg_headbuf_adds(b, value);
    tg_headbuf_add(b, "\r\n", 2);
}

void tg_headbuf_free(tg_headbuf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
