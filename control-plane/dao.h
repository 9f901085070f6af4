/*
 * dao.h — generic storage of Admin API entities in PostgreSQL.
 *
 * Walks the entity descriptions of lib/schema.h for SQL columns, resolves
 * foreign endpoint keys, validates, encrypts credential keys (digest + AES-GCM
 * copy under the keyring), cascades deletes, and appends the change log: every
 * successful write is one transaction that also bumps the control plane's
 * config version, records one change row per touched entity and adds the
 * write's contribution to the control plane's config digest.
 *
 * A tg_dao_t is used by one worker thread at a time and borrows its
 * connection. Every function returns 0 on success or -1 on failure, in which
 * case dao->status is the HTTP status and dao->error a Kong error body
 * (owned by the dao, replaced on the next failure).
 */
#ifndef TG_DAO_H
#define TG_DAO_H

#include "config_digest.h"
#include "db.h"
#include "schema.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tg_dao {
    tg_db_t *db;
    char cp_id[37];
    const uint8_t *keyring; /* 32-byte AES key */
    int status;
    json_t *error;
    json_t *changes;        /* [type, id, op] rows of the write in progress */
    /* the write's contribution to the config digest (sync-protocol rule 5): + h(row written),
     * - h(row replaced or deleted), config_row.h; digest_unknown when a row could not be
     * hashed (the change log then records the digest as unknown) */
    tg_config_digest_t digest_delta;
    bool digest_unknown;
    long long version;      /* config version written by the last successful write */
} tg_dao_t;

typedef struct tg_dao_query {
    const tg_field_t *parent_field; /* nested lists: the child's foreign field... */
    const char *parent_id;          /* ...and the parent's id */
    const char *filter_field;       /* optional equality filter on a unique column */
    const char *filter_value;
    const char *size;               /* raw `size` argument or NULL */
    const char *offset;             /* raw `offset` argument or NULL */
    const char *tags;               /* raw `tags` argument or NULL */
} tg_dao_query_t;

typedef struct tg_dao_page {
    json_t *data;      /* array of entities, or NULL when data_text is set */
    char *data_text;   /* the same as JSON array text, for entities stored exactly as
                          returned (no secrets, no TTL): no parse and re-serialise */
    char *next_offset; /* NULL on the last page; caller frees */
} tg_dao_page_t;

void tg_dao_init(tg_dao_t *dao, tg_db_t *db, const char *cp_id, const uint8_t *keyring);
void tg_dao_reset(tg_dao_t *dao);

/* Looks an entity up by id (UUID-shaped) or endpoint key; 404 when absent. */
int tg_dao_get(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key, json_t **out);
int tg_dao_list(tg_dao_t *dao, const tg_schema_t *s, const tg_dao_query_t *q, tg_dao_page_t *page);
int tg_dao_insert(tg_dao_t *dao, const tg_schema_t *s, const json_t *input, json_t **out);
/* PUT: replaces the entity named by id_or_key, creating it when absent. */
int tg_dao_upsert(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key, const json_t *input,
                  json_t **out);
/* PATCH: merges input into the existing entity; 404 when absent. */
int tg_dao_update(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key, const json_t *input,
                  json_t **out);
/* DELETE with cascades; succeeds when the entity does not exist. */
int tg_dao_delete(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key);
/* Tags across all entities (GET /tags, /tags/{tag}). */
int tg_dao_list_tags(tg_dao_t *dao, const char *tag, const tg_dao_query_t *q, tg_dao_page_t *page);
/* Deletes expired credentials (with change-log rows); returns how many or -1. */
int tg_dao_purge_expired(tg_dao_t *dao);
/*
 * The same for every control plane that has expired credentials (each purge is its own
 * transaction and version of that control plane); returns the total or -1.
 */
int tg_dao_purge_expired_all(tg_db_t *db, const uint8_t *keyring);
/* The control plane's current config version, or -1. */
long long tg_dao_config_version(tg_dao_t *dao);

/* Sets dao->status/error to a Kong error body built from a code and message. */
int tg_dao_fail(tg_dao_t *dao, int code, const char *message, json_t *fields);

#endif
