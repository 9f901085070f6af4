/*
 * alloc.h — process-lifetime allocation that aborts on out-of-memory.
 *
 * CONVENTIONS: out-of-memory aborts with a message rather than threading
 * TG_ENOMEM through every caller. Thread-safe.
 */
#ifndef TG_ALLOC_H
#define TG_ALLOC_H

#include <stddef.h>

void *tg_malloc(size_t n);
void *tg_calloc(size_t count, size_t size);
void *tg_realloc(void *p, size_t n);
char *tg_strdup(const char *s);
char *tg_strndup(const char *s, size_t n);
/* printf into a fresh heap string; caller frees. */
char *tg_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
