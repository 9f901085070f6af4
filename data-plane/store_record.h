/*
 * store_record.h — the compact form of the config store's high-cardinality entities,
 * consumers and key-auth credentials (a million keys is a million of each).
 *
 * A record gives back exactly the entity it was made from: decoding yields an entity
 * json_equal to the one encoded, hence the same canonical JSON (config_digest.h) and the same
 * config digest. Encoding refuses (returns 0) what it could not give back exactly — a field it
 * does not know, a real where an integer is expected, an id that is not a lower-case UUID,
 * upper-case hex — and the store keeps that entity as canonical JSON instead. It does not
 * trust itself on this: every encoding is decoded and compared before it is accepted.
 *
 * Layout: byte 0 is TG_RECORD_TAG (canonical JSON starts with '{', so a stored value says
 * which form it is); then 2 bits per field of the type's table, in table order, low bits
 * first (0 absent, 1 null, 2 a value); then, in table order, each field holding a value:
 *   uuid   16 bytes                     ref  {"id": uuid}, as the uuid's 16 bytes
 *   int    zigzag LEB128 varint         str  varint length, then the bytes
 *   tags   varint count, then each tag as a str
 * One field of each entity is not in the record: the LMDB key the record is stored under
 * ("id" for consumers as 16 bytes, "key_digest" for credentials as 32 raw bytes).
 *
 * Sizes: a consumer {id, username, custom_id, created_at, updated_at, tags} with a 10-byte
 * username and the rest null is 14 bytes; a credential {id, consumer, key_digest,
 * created_at, tags} with nulls is 35 (its canonical JSON: 212).
 *
 * Pure functions; thread-safe.
 */
#ifndef TG_STORE_RECORD_H
#define TG_STORE_RECORD_H

#include "str.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_RECORD_TAG 0x01
/* A credential record carrying a copy of its consumer's record (tg_record_join below). */
#define TG_RECORD_TAG_OWNED 0x02
/* Records are built in a buffer of this size; an entity that needs more stays JSON. */
#define TG_RECORD_MAX 1024
#define TG_RECORD_UUID_LEN 16
/* An id key (below) is at most this long: 0x00, a 255-byte id, 0x00. */
#define TG_RECORD_ID_KEY_MAX 257

typedef enum tg_record_type {
    TG_RECORD_CONSUMER,   /* stored under its id key */
    TG_RECORD_CREDENTIAL, /* stored under its 32-byte key digest */
} tg_record_type_t;

/*
 * Encodes entity e of a type into buf (cap bytes). Returns the record's length, or 0 when e
 * has no exact compact form (the caller stores its canonical JSON).
 */
size_t tg_record_encode(tg_record_type_t type, const json_t *e, uint8_t *buf, size_t cap);

/*
 * The entity of the record `rec` stored under `key`, as a new object; NULL when either is
 * malformed.
 */
json_t *tg_record_decode(tg_record_type_t type, tg_str_t key, tg_str_t rec);

/*
 * Reading a record in place, for the request path: no JSON is built, the values are views of
 * the record (valid as long as it is). Fields come in the type's table order, the same order
 * the enums below give (a field's index in `out`).
 */
enum tg_record_state { TG_RECORD_ABSENT, TG_RECORD_NULL, TG_RECORD_VALUE };

typedef struct tg_record_value {
    enum tg_record_state state;
    int64_t i;  /* an int field's value */
    tg_str_t s; /* str: its bytes; uuid and ref: the 16 bytes; tags: their encoded list */
} tg_record_value_t;

enum tg_record_consumer_field {
    TG_RECORD_CONSUMER_CREATED_AT,
    TG_RECORD_CONSUMER_CUSTOM_ID,
    TG_RECORD_CONSUMER_TAGS,
    TG_RECORD_CONSUMER_UPDATED_AT,
    TG_RECORD_CONSUMER_USERNAME,
    TG_RECORD_CONSUMER_NFIELDS
};

enum tg_record_credential_field {
    TG_RECORD_CREDENTIAL_CONSUMER, /* a ref: the consumer's id as 16 bytes, i.e. its id key */
    TG_RECORD_CREDENTIAL_CREATED_AT,
    TG_RECORD_CREDENTIAL_EXPIRES_AT,
    TG_RECORD_CREDENTIAL_ID,
    TG_RECORD_CREDENTIAL_TAGS,
    TG_RECORD_CREDENTIAL_NFIELDS
};

#define TG_RECORD_FIELDS_MAX 5

/*
 * Reads every field of record `rec` of a type into out[0 .. its NFIELDS - 1]; false when the
 * record is malformed. Every record tg_record_decode accepts reads, with the same values
 * (tests/fuzz/fuzz_store_record.c checks it); strings are not checked for UTF-8 here, which
 * decoding does (records are written from JSON strings). The record's key field is not among
 * them: it is the LMDB key.
 */
bool tg_record_read(tg_record_type_t type, tg_str_t rec, tg_record_value_t *out);

/* True when a stored value is a record (owned or not) rather than canonical JSON. */
static inline bool tg_record_is_compact(tg_str_t value)
{
    return value.len > 0 &&
           ((uint8_t)value.p[0] == TG_RECORD_TAG || (uint8_t)value.p[0] == TG_RECORD_TAG_OWNED);
}

/*
 * An owned credential record: a credential's record followed by a copy of its consumer's
 * record (the "owner"), so that key-auth reads both with one B-tree search instead of two.
 * Layout: TG_RECORD_TAG_OWNED, varint length of the credential record, the credential record,
 * the consumer record (both starting with TG_RECORD_TAG). The copy is not part of the entity:
 * tg_record_decode and tg_record_read of a credential skip it, so every reader and the config
 * digest see the credential alone. When the copy may be trusted is the store's business
 * (store.h: "changed consumers").
 *
 * tg_record_join writes one into out (cap bytes) and returns its length, 0 when it does not
 * fit or either part is not a record. tg_record_split views the parts of a stored credential
 * value: an owned record gives both, a plain record gives itself and an empty owner; false
 * when the value is malformed.
 */
size_t tg_record_join(tg_str_t credential, tg_str_t owner, uint8_t *out, size_t cap);
bool tg_record_split(tg_str_t value, tg_str_t *credential, tg_str_t *owner);
/* The id key of the consumer a credential record (owned or not) names: a view of its 16-byte
 * ref; empty when the record names none or is malformed. Who to copy into an owned record. */
tg_str_t tg_record_credential_owner_key(tg_str_t value);

/* A lower-case canonical UUID as 16 bytes; false for anything else (upper case too). */
bool tg_record_uuid_pack(tg_str_t s, uint8_t out[TG_RECORD_UUID_LEN]);
/* The reverse: 36 characters and a NUL. */
void tg_record_uuid_unpack(const uint8_t in[TG_RECORD_UUID_LEN], char out[37]);

/*
 * The LMDB key of an id: its 16 bytes when it is a lower-case UUID, else 0x00 || id, with a
 * second 0x00 appended when that would be 16 bytes long, so the two forms never meet. out
 * holds TG_RECORD_ID_KEY_MAX bytes; returns the key's length, 0 for an id of 0 or more than
 * 255 bytes.
 */
size_t tg_record_id_key(tg_str_t id, uint8_t *out);
/* The id of an id key, NUL-terminated into out (256 bytes); false for a malformed key. */
bool tg_record_id_from_key(tg_str_t key, char out[256]);

#endif
