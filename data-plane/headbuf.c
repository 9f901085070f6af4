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

void tg_headbuf_add_grow(tg_headbuf_t *b, const char *s, size_t n)
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

void tg_headbuf_addz(tg_headbuf_t *b, const char *s)
{
    tg_headbuf_add(b, s, strlen(s));
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

size_t tg_headbuf_dec(char *out, uint64_t v)
{
    static const char pairs[201] = "0001020304050607080910111213141516171819"
                                   "2021222324252627282930313233343536373839"
                                   "4041424344454647484950515253545556575859"
                                   "6061626364656667686970717273747576777879"
                                   "8081828384858687888990919293949596979899";
    char tmp[20];
    char *p = tmp + sizeof(tmp);
    while (v >= 100) { /* two digits per division */
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        *--p = pairs[d + 1];
        *--p = pairs[d];
    }
    if (v >= 10) {
        *--p = pairs[v * 2 + 1];
        *--p = pairs[v * 2];
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof(tmp) - p);
    memcpy(out, p, n);
    return n;
}

size_t tg_headbuf_hex(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = 1;
    while (n < 16 && v >> (4 * n))
        n++;
    for (size_t i = 0; i < n; i++)
        out[i] = digits[(v >> (4 * (n - 1 - i))) & 0xf];
    return n;
}

void tg_headbuf_addu(tg_headbuf_t *b, uint64_t v)
{
    reserve(b, 21);
    b->len += tg_headbuf_dec(b->p + b->len, v);
    b->p[b->len] = '\0';
}

void tg_headbuf_addi(tg_headbuf_t *b, int64_t v)
{
    if (v < 0) {
        tg_headbuf_add(b, "-", 1);
        tg_headbuf_addu(b, (uint64_t)0 - (uint64_t)v);
        return;
    }
    tg_headbuf_addu(b, (uint64_t)v);
}

void tg_headbuf_header(tg_headbuf_t *b, tg_str_t name, tg_str_t value)
{
    /* one bounds check and one terminator per line: heads are built of these */
    reserve(b, name.len + value.len + 5);
    char *p = b->p + b->len;
    if (name.len) memcpy(p, name.p, name.len);
    p += name.len;
    *p++ = ':';
    *p++ = ' ';
    if (value.len) memcpy(p, value.p, value.len);
    p += value.len;
    *p++ = '\r';
    *p++ = '\n';
    *p = '\0';
    b->len = (size_t)(p - b->p);
}

void tg_headbuf_free(tg_headbuf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
