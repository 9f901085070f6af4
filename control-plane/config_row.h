/*
 * config_row.h — one stored entity row in its data-plane form, and its config hash.
 *
 * Entities leave the control plane as the stored document plus, for key-auth credentials,
 * the key's SHA-256 (`key_digest`) and `expires_at` — never the key, never its ciphertext
 * (DESIGN §4). The config hash h(e) of config_digest.h is computed from that form after it
 * went through the sync message (the canonical text the data plane will compute from what it
 * decodes), so both planes agree byte for byte.
 *
 * Two readers need exactly the same bytes: the snapshot and delta builders (sync_build.c) and
 * the DAO, which adds h(new) and subtracts h(old) for every row a write touches so that the
 * change log can keep the control plane's digest current in O(1) per change (rule 5). Both
 * select the row with tg_config_row_cols and hand the result here.
 */
#ifndef TG_CONFIG_ROW_H
#define TG_CONFIG_ROW_H

#include "config_digest.h"
#include "entity_codec.h"
#include "schema.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

/* Number of columns tg_config_row_cols selects for `s` (2, or 4 for credentials). */
int tg_config_row_ncols(const tg_schema_t *s);

/*
 * The select list of the data-plane form, each column qualified by `alias` ("" or e.g. "o."):
 * id::text, doc::text and, for credentials, encode(key_digest, 'hex'), expires_at. The
 * returned string is static per (schema, alias) and must not be freed; at most 4 aliases.
 */
const char *tg_config_row_cols(const tg_schema_t *s, const char *alias);

/* The sync message of the row whose columns start at `col` (NULL with err when the stored
 * document does not parse or does not fit its message). */
tg_pb_entity_t *tg_config_row_proto(const tg_schema_t *s, const PGresult *res, int row, int col,
                                    char *err, size_t errlen);

/* h(e) of an entity already in its message form, under `id`. */
int tg_config_row_hash_proto(const tg_schema_t *s, const char *id, const tg_pb_entity_t *pb,
                             uint8_t out[TG_CONFIG_DIGEST_LEN], char *err, size_t errlen);

/* h(e) of the row whose columns start at `col`. 0, or a negative code with err. */
int tg_config_row_hash(const tg_schema_t *s, const PGresult *res, int row, int col,
                       uint8_t out[TG_CONFIG_DIGEST_LEN], char *err, size_t errlen);

#endif
