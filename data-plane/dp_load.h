/*
 * dp_load.h — turning a configuration source into a served generation.
 *
 * Standalone (DB-less): the declarative file is parsed and validated (lib/declarative),
 * credentials' `key` become `key_digest` (hex SHA-256; the plaintext never reaches the
 * store), a generation is compiled from it — so a config the router or a plugin refuses
 * is rejected before anything changes — and only then is the store replaced in one
 * transaction, at the next version. Every reason a file is refused is logged with the
 * file position, entity and field (tg_declarative_error_format).
 * Control-plane mode: the generation is compiled from what the store holds.
 *
 * Control thread only (these are the store's writes).
 */
#ifndef TG_DP_LOAD_H
#define TG_DP_LOAD_H

#include "generation.h"
#include "store.h"

/*
 * Loads `path` into the store and compiles it. Returns 0 with *out (one reference,
 * version and hash set), 1 when the file's content equals what the store holds and `cur`
 * (the generation being served, may be NULL) already serves it (*out NULL), or a negative
 * code after logging why the file was refused (nothing changed).
 */
int tg_dp_load_declarative(tg_store_t *store, const char *path, const tg_generation_t *cur,
                           tg_generation_t **out);

/* Compiles the store's content. 0, -TG_ENOTFOUND for a store that never had a config, or
 * another negative code (logged). */
int tg_dp_load_store(tg_store_t *store, tg_generation_t **out);

#endif
