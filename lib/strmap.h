/*
 * strmap.h — a map from C strings to 32-bit numbers, compact enough for indexes of millions
 * of keys (the declarative loader's ids, endpoint keys and unique fields at a million
 * consumers).
 *
 * Why not a JSON object: jansson spends ~160 bytes on each entry (a hashtable pair with its
 * key, a boxed integer, a bucket); this map spends a 16-byte slot at ≤ 70 % load plus the
 * key's bytes in one growing arena, ~70 bytes for a UUID key, and two allocations in all.
 *
 * Keys are NUL-terminated and compared whole, as JSON object keys are. The hash is FNV-1a
 * with a per-map random seed: keys come from the operator's own files, so no stronger
 * defence against chosen collisions is needed. Not thread-safe; one owner.
 */
#ifndef TG_STRMAP_H
#define TG_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tg_strmap tg_strmap_t;

tg_strmap_t *tg_strmap_new(void);
void tg_strmap_free(tg_strmap_t *m); /* NULL is a no-op */

/* Whether `key` is in the map; its number in *value (may be NULL) when it is. */
bool tg_strmap_get(const tg_strmap_t *m, const char *key, uint32_t *value);
/* Sets `key` to `value`, adding the key when it is new. */
void tg_strmap_put(tg_strmap_t *m, const char *key, uint32_t value);
size_t tg_strmap_count(const tg_strmap_t *m);

#endif
