#include "alloc.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *tg_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) tg_fatal("out of memory allocating %zu bytes", n);
    return p;
}

void *tg_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) tg_fatal("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *tg_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) tg_fatal("out of memory reallocating %zu bytes", n);
    return q;
}

char *tg_strdup(const char *s)
{
    return tg_strndup(s, strlen(s));
}

char *tg_strndup(const char *s, size_t n)
{
    char *p = tg_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *tg_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    int n = vasprintf(&out, fmt, ap);
    va_end(ap);
    if (n < 0 || !out) tg_fatal("out of memory formatting a string");
    return out;
}
