/*
 * identity_store.c — see identity_store.h.
 */
#include "identity_store.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "store_record.h"
#include "str.h"

#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 256 /* a power of two */
#define KEY_MAX 64      /* longer lookup keys are not cached */
#define KEY_SLOTS 256   /* key_by_digest answers cached; a power of two */
#define KEY_STRS 192    /* their strings, inline; answers with longer ones are not cached */

enum kind { BY_DIGEST, BY_ID, BY_USERNAME };

typedef int (*lookup_fn)(tg_store_reader_t *r, const void *arg, json_t **out);

/* One lookup's answer, valid while the store's last write is still `txn`. */
struct entry {
    uint64_t txn;
    enum kind kind;
    size_t klen;
    char key[KEY_MAX];
    json_t *value;
};

/* One key_by_digest answer, with its strings; valid under the same rule (txn 0: empty). */
struct key_entry {
    uint64_t txn;
    uint8_t digest[32];
    tg_identity_key_t view; /* its strings point into strs */
    char strs[KEY_STRS];
};

struct tg_identity_cache {
    struct entry slots[CACHE_SLOTS];
    struct key_entry keys[KEY_SLOTS];
};

/* Heap room for strings beyond tg_identity_store_t.strbuf. */
struct tg_identity_spill {
    struct tg_identity_spill *next;
    char data[];
};

tg_identity_cache_t *tg_identity_cache_new(void)
{
    return tg_calloc(1, sizeof(tg_identity_cache_t));
}

void tg_identity_cache_free(tg_identity_cache_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        json_decref(c->slots[i].value);
    free(c);
}

/* FNV-1a: keys are short, and a collision only costs a store read. A key digest is a
 * SHA-256 already: its first bytes are as good a hash as any, and cost nothing. */
static struct entry *slot_of(tg_identity_cache_t *c, enum kind kind, tg_str_t key)
{
    if (kind == BY_DIGEST) {
        uint64_t h;
        memcpy(&h, key.p, sizeof h); /* key.len == 32 */
        return &c->slots[(h ^ (uint64_t)kind) & (CACHE_SLOTS - 1)];
    }
    uint64_t h = tg_fnv1a(key.p, key.len, TG_FNV1A_BASIS ^ (uint64_t)kind);
    return &c->slots[(h ^ (h >> 32)) & (CACHE_SLOTS - 1)];
}

static bool holds(const struct entry *e, enum kind kind, tg_str_t key)
{
    return e->value && e->kind == kind && e->klen == key.len && memcmp(e->key, key.p, key.len) == 0;
}

/* Keeps a reference until tg_identity_store_end (takes `j`'s). */
static void own(tg_identity_store_t *s, json_t *j)
{
    if (s->nrefs < TG_IDENTITY_INLINE_REFS) {
        s->refs[s->nrefs++] = j;
        return;
    }
    if (!s->owned && !(s->owned = json_array())) tg_fatal("out of memory in identity lookup");
    if (json_array_append_new(s->owned, j) < 0) /* the array's reference keeps it alive */
        tg_fatal("out of memory in identity lookup");
}

/* The cache's answer for (kind, key) while the store still holds what it was read from. */
static struct entry *fresh(tg_identity_store_t *s, enum kind kind, tg_str_t key)
{
    struct entry *e = s->cache && key.len <= KEY_MAX ? slot_of(s->cache, kind, key) : NULL;
    if (e && holds(e, kind, key) && e->txn && e->txn == tg_store_last_txn(s->reader)) return e;
    return NULL;
}

static void remember(tg_identity_store_t *s, enum kind kind, tg_str_t key, json_t *j, uint64_t txn)
{
    if (!s->cache || key.len > KEY_MAX) return;
    struct entry *e = slot_of(s->cache, kind, key);
    json_decref(e->value); /* requests holding the old values keep them alive */
    e->value = json_incref(j);
    e->kind = kind;
    e->klen = key.len;
    memcpy(e->key, key.p, key.len);
    e->txn = txn;
}

/*
 * Inside a credential's read: key-auth asks for its consumer next, so the consumer is read
 * now and cached, and the request needs one read transaction rather than two (each costs a
 * few hundred ns before its first B-tree search).
 */
static void prefetch_owner(tg_identity_store_t *s, const json_t *cred, uint64_t txn)
{
    const json_t *id = json_object_get(json_object_get(cred, "consumer"), "id");
    tg_str_t key = {json_string_value(id), json_string_length(id)};
    if (!s->cache || !key.p || key.len > KEY_MAX) return;
    struct entry *e = slot_of(s->cache, BY_ID, key);
    if (holds(e, BY_ID, key) && e->txn == txn) return;
    json_t *consumer = NULL;
    if (tg_store_get_entity(s->reader, "consumers", key, &consumer) != 0) return;
    remember(s, BY_ID, key, consumer, txn);
    json_decref(consumer);
}

/*
 * One short read: the store hands out a new JSON value (records become JSON values directly,
 * canonical JSON is parsed), because views die with the read and the caller keeps the value
 * until the request ends. With a cache, an answer read while the store's last write was the
 * one still current is reused without a read; misses (not found) are never cached.
 */
static int read_json(tg_identity_store_t *s, enum kind kind, tg_str_t key, lookup_fn fn,
                     const void *arg, json_t **out)
{
    *out = NULL;
    struct entry *e = fresh(s, kind, key);
    if (e) {
        own(s, json_incref(e->value));
        *out = e->value;
        return 0;
    }
    int rc = tg_store_read_begin(s->reader);
    if (rc < 0) return rc;
    uint64_t txn = tg_store_read_txn(s->reader);
    json_t *j = NULL;
    rc = fn(s->reader, arg, &j);
    if (rc == 0 && kind == BY_DIGEST) prefetch_owner(s, j, txn);
    tg_store_read_end(s->reader);
    if (rc < 0) return rc;
    remember(s, kind, key, j, txn);
    own(s, j);
    *out = j;
    return 0;
}

static int by_digest(tg_store_reader_t *r, const void *arg, json_t **out)
{
    return tg_store_credential_entity_by_digest(r, arg, out);
}

static int by_id(tg_store_reader_t *r, const void *arg, json_t **out)
{
    return tg_store_get_entity(r, "consumers", *(const tg_str_t *)arg, out);
}

static int by_username(tg_store_reader_t *r, const void *arg, json_t **out)
{
    return tg_store_consumer_entity_by_username(r, *(const tg_str_t *)arg, out);
}

static int credential_by_digest(void *ud, const uint8_t d[32], json_t **cred)
{
    return read_json(ud, BY_DIGEST, (tg_str_t){(const char *)d, 32}, by_digest, d, cred);
}

static int consumer_by_id(void *ud, tg_str_t id, json_t **consumer)
{
    return read_json(ud, BY_ID, id, by_id, &id, consumer);
}

static int consumer_by_username(void *ud, tg_str_t name, json_t **consumer)
{
    return read_json(ud, BY_USERNAME, name, by_username, &name, consumer);
}

/* ------------------------------------------------------------------ key_by_digest */

/* n bytes for strings that live until tg_identity_store_end. */
static char *str_room(tg_identity_store_t *s, size_t n)
{
    if (TG_IDENTITY_STRBUF - s->strused >= n) {
        char *p = s->strbuf + s->strused;
        s->strused += n;
        return p;
    }
    struct tg_identity_spill *sp = tg_malloc(sizeof *sp + n);
    sp->next = s->spill;
    s->spill = sp;
    return sp->data;
}

static tg_str_t keep(tg_identity_store_t *s, const char *p, size_t len)
{
    char *at = str_room(s, len + 1);
    memcpy(at, p, len);
    at[len] = '\0';
    return (tg_str_t){at, len};
}

static tg_str_t keep_uuid(tg_identity_store_t *s, const uint8_t u[TG_RECORD_UUID_LEN])
{
    char *at = str_room(s, TG_UUID_STR_LEN + 1);
    tg_record_uuid_unpack(u, at);
    return (tg_str_t){at, TG_UUID_STR_LEN};
}

static tg_str_t str_of(const json_t *v)
{
    return json_is_string(v) ? (tg_str_t){json_string_value(v), json_string_length(v)}
                             : TG_STR_NULL;
}

static tg_str_t keep_json(tg_identity_store_t *s, const json_t *v)
{
    tg_str_t str = str_of(v);
    return str.p ? keep(s, str.p, str.len) : TG_STR_NULL;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = (char)(ch | 0x20); /* upper and lower case alike, as key-auth always took them */
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static bool digest_from_hex(tg_str_t hex, uint8_t out[32])
{
    if (hex.len != 64) return false;
    for (size_t i = 0; i < 32; i++) {
        int hi = hex_value(hex.p[2 * i]), lo = hex_value(hex.p[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool sendable(tg_str_t s)
{
    return s.p && tg_http_is_field_value(s);
}

static int unreadable(const char *what)
{
    TG_LOGE("identity", "a stored %s cannot be read back", what);
    return -TG_EIO;
}

/*
 * A credential stored as a record: its key is the digest, the id a UUID (hex and dashes, so
 * always sendable) and the consumer ref its consumer's 16-byte id key already. *owner is the
 * copy of the consumer's record an owned record carries (empty for a plain one).
 */
static int credential_record(tg_identity_store_t *s, const tg_store_raw_t *raw,
                             tg_identity_key_t *k, tg_str_t *owner_key, tg_str_t *owner)
{
    tg_record_value_t f[TG_RECORD_FIELDS_MAX];
    tg_str_t rec;
    if (raw->key.len != 32 || !tg_record_split(raw->value, &rec, owner) ||
        !tg_record_read(TG_RECORD_CREDENTIAL, rec, f))
        return unreadable("keyauth_credential");
    k->digest_ok = true;
    memcpy(k->digest, raw->key.p, 32);
    const tg_record_value_t *id = &f[TG_RECORD_CREDENTIAL_ID],
                            *ref = &f[TG_RECORD_CREDENTIAL_CONSUMER],
                            *exp = &f[TG_RECORD_CREDENTIAL_EXPIRES_AT];
    if (id->state == TG_RECORD_VALUE) {
        k->id = keep_uuid(s, (const uint8_t *)id->s.p);
        k->id_ok = true;
    }
    if (ref->state == TG_RECORD_VALUE) {
        k->consumer_ref = keep_uuid(s, (const uint8_t *)ref->s.p);
        *owner_key = ref->s;
    }
    if (exp->state == TG_RECORD_VALUE) { /* a JSON integer, as json_number_value reads it */
        k->expires = true;
        k->expires_ms = (double)exp->i * 1000.0;
    }
    return 0;
}

/* A credential stored as canonical JSON (one a record could not hold exactly): parsed. */
static int credential_json(tg_identity_store_t *s, const tg_store_raw_t *raw, tg_identity_key_t *k,
                           tg_str_t *owner_key, uint8_t key_buf[TG_RECORD_ID_KEY_MAX])
{
    json_t *cred = json_loadb(raw->value.p, raw->value.len, 0, NULL);
    if (!json_is_object(cred)) {
        json_decref(cred);
        return unreadable("keyauth_credential");
    }
    k->id = keep_json(s, json_object_get(cred, "id"));
    k->id_ok = sendable(k->id);
    k->consumer_ref = keep_json(s, json_object_get(json_object_get(cred, "consumer"), "id"));
    k->digest_ok = digest_from_hex(str_of(json_object_get(cred, "key_digest")), k->digest);
    const json_t *exp = json_object_get(cred, "expires_at");
    if (json_is_number(exp)) {
        k->expires = true;
        k->expires_ms = json_number_value(exp) * 1000.0;
    }
    json_decref(cred);
    if (k->consumer_ref.p)
        *owner_key = (tg_str_t){(const char *)key_buf, tg_record_id_key(k->consumer_ref, key_buf)};
    return 0;
}

/* A consumer's username and custom_id from its record (views valid during the read). */
static int consumer_record(tg_identity_store_t *s, tg_str_t rec, tg_identity_key_t *k)
{
    tg_record_value_t f[TG_RECORD_FIELDS_MAX];
    if (!tg_record_read(TG_RECORD_CONSUMER, rec, f)) return unreadable("consumer");
    const tg_record_value_t *name = &f[TG_RECORD_CONSUMER_USERNAME],
                            *custom = &f[TG_RECORD_CONSUMER_CUSTOM_ID];
    if (name->state == TG_RECORD_VALUE) k->username = keep(s, name->s.p, name->s.len);
    if (custom->state == TG_RECORD_VALUE) k->custom_id = keep(s, custom->s.p, custom->s.len);
    return 0;
}

static void consumer_flags(tg_identity_key_t *k, bool ref_is_uuid)
{
    k->consumer_id = k->consumer_ref;
    k->consumer_id_ok = ref_is_uuid || sendable(k->consumer_id); /* hex and dashes */
    k->username_ok = sendable(k->username);
    k->custom_id_ok = sendable(k->custom_id);
}

/*
 * The credential's consumer, found by the id key it names: its id is that ref (id keys and ids
 * correspond one to one), the rest comes from the record, or from the JSON of a consumer
 * stored as canonical JSON.
 */
static int read_consumer(tg_identity_store_t *s, tg_str_t owner_key, bool ref_is_uuid,
                         tg_identity_key_t *k)
{
    tg_store_raw_t raw;
    int rc = tg_store_consumer_raw(s->reader, owner_key, &raw);
    if (rc < 0) return rc;
    if (tg_record_is_compact(raw.value)) {
        rc = consumer_record(s, raw.value, k);
        if (rc < 0) return rc;
    } else {
        json_t *consumer = json_loadb(raw.value.p, raw.value.len, 0, NULL);
        if (!json_is_object(consumer)) {
            json_decref(consumer);
            return unreadable("consumer");
        }
        k->username = keep_json(s, json_object_get(consumer, "username"));
        k->custom_id = keep_json(s, json_object_get(consumer, "custom_id"));
        json_decref(consumer);
    }
    consumer_flags(k, ref_is_uuid);
    return 0;
}

/*
 * The consumer from the copy an owned credential record carries, when the store says it is
 * still that consumer's record; *used false otherwise (read_consumer then searches for it).
 */
static int owner_copy(tg_identity_store_t *s, tg_str_t owner, tg_str_t owner_key,
                      tg_identity_key_t *k, bool *used)
{
    bool current = false;
    *used = false;
    int rc = tg_store_owner_current(s->reader, owner_key, &current);
    if (rc < 0 || !current) return rc;
    rc = consumer_record(s, owner, k);
    if (rc < 0) return rc;
    consumer_flags(k, true);
    k->consumer_rc = 0;
    *used = true;
    return 0;
}

/* One search for an owned record whose copy is current, two otherwise; the copies. */
static int read_key(tg_identity_store_t *s, const uint8_t d[32], tg_identity_key_t *k)
{
    tg_store_raw_t raw;
    int rc = tg_store_credential_raw(s->reader, d, &raw);
    if (rc < 0) return rc;
    uint8_t key_buf[TG_RECORD_ID_KEY_MAX];
    tg_str_t owner_key = TG_STR_NULL, owner = TG_STR_NULL;
    bool record = tg_record_is_compact(raw.value), used = false;
    rc = record ? credential_record(s, &raw, k, &owner_key, &owner)
                : credential_json(s, &raw, k, &owner_key, key_buf);
    if (rc < 0) return rc;
    if (owner.len && owner_key.len) {
        rc = owner_copy(s, owner, owner_key, k, &used);
        if (rc < 0) return rc;
    }
    if (owner_key.len && !used) k->consumer_rc = read_consumer(s, owner_key, record, k);
    return 0;
}

/* The bytes copy_strings needs for a view's strings. */
static size_t strings_len(const tg_identity_key_t *k)
{
    const tg_str_t src[] = {k->id, k->consumer_ref, k->username, k->custom_id};
    size_t n = 0;
    for (size_t i = 0; i < sizeof src / sizeof src[0]; i++)
        n += src[i].p ? src[i].len + 1 : 0;
    return n;
}

/* Copies a view's strings into buf (strings_len bytes), one after the other, with their NULs.
 * The consumer's id is its credential's ref (read_consumer): one copy serves both. */
static void copy_strings(const tg_identity_key_t *from, tg_identity_key_t *to, char *buf)
{
    tg_str_t *const dst[] = {&to->id, &to->consumer_ref, &to->username, &to->custom_id};
    const tg_str_t src[] = {from->id, from->consumer_ref, from->username, from->custom_id};
    for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
        if (!src[i].p) continue;
        memcpy(buf, src[i].p, src[i].len + 1);
        *dst[i] = (tg_str_t){buf, src[i].len};
        buf += src[i].len + 1;
    }
    if (from->consumer_id.p) to->consumer_id = to->consumer_ref;
}

static struct key_entry *key_slot(tg_identity_cache_t *c, const uint8_t d[32])
{
    uint64_t h;
    memcpy(&h, d, sizeof h); /* a SHA-256: its first bytes are as good a hash as any */
    return &c->keys[h & (KEY_SLOTS - 1)];
}

static void remember_key(tg_identity_store_t *s, const uint8_t d[32], const tg_identity_key_t *k,
                         uint64_t txn)
{
    if (!s->cache) return;
    struct key_entry *e = key_slot(s->cache, d);
    if (strings_len(k) > sizeof e->strs) {
        e->txn = 0; /* too long to keep: the slot is left empty */
        return;
    }
    e->view = *k;
    copy_strings(k, &e->view, e->strs);
    memcpy(e->digest, d, 32);
    e->txn = txn;
}

/* A cached answer, its strings copied for the request (the slot may be replaced before the
 * request ends). */
static bool cached_key(tg_identity_store_t *s, const uint8_t d[32], tg_identity_key_t *out)
{
    struct key_entry *e = s->cache ? key_slot(s->cache, d) : NULL;
    if (!e || !e->txn || memcmp(e->digest, d, 32) != 0 || e->txn != tg_store_last_txn(s->reader))
        return false;
    *out = e->view;
    copy_strings(&e->view, out, str_room(s, strings_len(&e->view)));
    return true;
}

/*
 * The credential and its consumer in one short read, read in place: see identity_store.h.
 * Cached under the usual rule (valid while no write was committed since it was read); an
 * answer whose consumer read failed is not cached.
 */
static int key_by_digest(void *ud, const uint8_t d[32], tg_identity_key_t *out)
{
    tg_identity_store_t *s = ud;
    if (cached_key(s, d, out)) return 0;
    int rc = tg_store_read_begin(s->reader);
    if (rc < 0) return rc;
    uint64_t txn = tg_store_read_txn(s->reader);
    *out = (tg_identity_key_t){.consumer_rc = -TG_ENOTFOUND};
    rc = read_key(s, d, out);
    tg_store_read_end(s->reader);
    if (rc < 0) return rc;
    if (out->consumer_rc == 0 || out->consumer_rc == -TG_ENOTFOUND) remember_key(s, d, out, txn);
    return 0;
}

void tg_identity_store_init(tg_identity_store_t *s, tg_store_reader_t *reader)
{
    s->source = (tg_identity_source_t){
        .credential_by_digest = credential_by_digest,
        .consumer_by_id = consumer_by_id,
        .consumer_by_username = consumer_by_username,
        .ud = s,
        .key_by_digest = key_by_digest,
    };
    s->reader = reader;
    s->cache = NULL;
    s->nrefs = 0;
    s->owned = NULL;
    s->strused = 0;
    s->spill = NULL;
}

void tg_identity_store_end(tg_identity_store_t *s)
{
    for (size_t i = 0; i < s->nrefs; i++)
        json_decref(s->refs[i]);
    s->nrefs = 0;
    json_decref(s->owned);
    s->owned = NULL;
    while (s->spill) {
        struct tg_identity_spill *next = s->spill->next;
        free(s->spill);
        s->spill = next;
    }
    s->strused = 0;
}
