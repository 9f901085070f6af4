/*
 * identity_store.c — see identity_store.h.
 */
#include "identity_store.h"
#include "alloc.h"
#include "error.h"
#include "http.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 256 /* a power of two */
#define KEY_MAX 64      /* longer lookup keys are not cached */

enum kind { BY_DIGEST, BY_ID, BY_USERNAME, BY_KEY /* key_by_digest: credential + consumer */ };

typedef int (*lookup_fn)(tg_store_reader_t *r, const void *arg, json_t **out);

/* One lookup's answer, valid while the store's last write is still `txn`. */
struct entry {
    uint64_t txn;
    enum kind kind;
    size_t klen;
    char key[KEY_MAX];
    json_t *value;
    /* BY_KEY: value is the credential; its consumer (a reference, NULL when missing) and
     * what key-auth reads of both, borrowing from them */
    json_t *consumer;
    tg_identity_key_t view;
};

struct tg_identity_cache {
    struct entry slots[CACHE_SLOTS];
};

tg_identity_cache_t *tg_identity_cache_new(void)
{
    return tg_calloc(1, sizeof(tg_identity_cache_t));
}

void tg_identity_cache_free(tg_identity_cache_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        json_decref(c->slots[i].value);
        json_decref(c->slots[i].consumer);
    }
    free(c);
}

/* FNV-1a: keys are short, and a collision only costs a store read. A key digest is a
 * SHA-256 already: its first bytes are as good a hash as any, and cost nothing. */
static struct entry *slot_of(tg_identity_cache_t *c, enum kind kind, tg_str_t key)
{
    if (kind == BY_KEY || kind == BY_DIGEST) {
        uint64_t h;
        memcpy(&h, key.p, sizeof h); /* key.len == 32 */
        return &c->slots[(h ^ (uint64_t)kind) & (CACHE_SLOTS - 1)];
    }
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)kind;
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ (unsigned char)key.p[i]) * 0x100000001b3ULL;
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

static struct entry *remember(tg_identity_store_t *s, enum kind kind, tg_str_t key, json_t *j,
                              uint64_t txn)
{
    if (!s->cache || key.len > KEY_MAX) return NULL;
    struct entry *e = slot_of(s->cache, kind, key);
    json_decref(e->value); /* requests holding the old values keep them alive */
    json_decref(e->consumer);
    e->consumer = NULL;
    e->view = (tg_identity_key_t){0}; /* it borrowed from the values just dropped */
    e->value = json_incref(j);
    e->kind = kind;
    e->klen = key.len;
    memcpy(e->key, key.p, key.len);
    e->txn = txn;
    return e;
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

static tg_str_t str_of(const json_t *v)
{
    return json_is_string(v) ? (tg_str_t){json_string_value(v), json_string_length(v)}
                             : TG_STR_NULL;
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

/*
 * What key-auth reads of a credential and of its consumer. One pass over each object's few
 * fields: a hash lookup per field (json_object_get) costs more than walking them all, and
 * at a million random keys this runs for nearly every request.
 */
static void describe_credential(tg_identity_key_t *k, json_t *cred)
{
    const char *name;
    json_t *v;
    json_object_foreach(cred, name, v)
    {
        if (strcmp(name, "id") == 0) {
            k->id = str_of(v);
        } else if (strcmp(name, "consumer") == 0) {
            k->consumer_ref = str_of(json_object_get(v, "id"));
        } else if (strcmp(name, "key_digest") == 0) {
            k->digest_ok = digest_from_hex(str_of(v), k->digest);
        } else if (strcmp(name, "expires_at") == 0 && json_is_number(v)) {
            k->expires = true;
            k->expires_ms = json_number_value(v) * 1000.0;
        }
    }
}

static bool sendable(tg_str_t s)
{
    return s.p && tg_http_is_field_value(s);
}

static void describe_consumer(tg_identity_key_t *k, json_t *consumer)
{
    const char *name;
    json_t *v;
    json_object_foreach(consumer, name, v)
    {
        if (strcmp(name, "id") == 0)
            k->consumer_id = str_of(v);
        else if (strcmp(name, "username") == 0)
            k->username = str_of(v);
        else if (strcmp(name, "custom_id") == 0)
            k->custom_id = str_of(v);
    }
}

/* Hands out a cached answer: the request takes its own references to both entities. */
static void hand_out(tg_identity_store_t *s, const tg_identity_key_t *view, tg_identity_key_t *out)
{
    own(s, json_incref(view->credential));
    if (view->consumer) own(s, json_incref(view->consumer));
    *out = *view;
}

/*
 * The credential and its consumer in one short read, described once: a cached answer (same
 * rules as the other lookups: valid while no write was committed since it was read) hands
 * out both entities and their description without touching the store or the JSON. An
 * answer whose consumer is missing is cached too (the write that adds it invalidates it);
 * one whose consumer read failed is not.
 */
static int key_by_digest(void *ud, const uint8_t d[32], tg_identity_key_t *out)
{
    tg_identity_store_t *s = ud;
    tg_str_t key = {(const char *)d, 32};
    struct entry *e = fresh(s, BY_KEY, key);
    if (e) {
        hand_out(s, &e->view, out);
        return 0;
    }
    int rc = tg_store_read_begin(s->reader);
    if (rc < 0) return rc;
    uint64_t txn = tg_store_read_txn(s->reader);
    tg_identity_key_t k = {.consumer_rc = -TG_ENOTFOUND};
    json_t *cred = NULL, *consumer = NULL;
    rc = tg_store_credential_entity_by_digest(s->reader, d, &cred);
    if (rc == 0) {
        describe_credential(&k, cred);
        k.id_ok = sendable(k.id);
        if (k.consumer_ref.p)
            k.consumer_rc = tg_store_get_entity(s->reader, "consumers", k.consumer_ref, &consumer);
        if (k.consumer_rc == 0) {
            describe_consumer(&k, consumer);
            k.consumer_id_ok = sendable(k.consumer_id);
            k.username_ok = sendable(k.username);
            k.custom_id_ok = sendable(k.custom_id);
        } else {
            consumer = NULL;
        }
    }
    tg_store_read_end(s->reader);
    if (rc < 0) return rc;
    k.credential = cred;
    k.consumer = consumer;
    if (k.consumer_rc == 0 || k.consumer_rc == -TG_ENOTFOUND) {
        e = remember(s, BY_KEY, key, cred, txn);
        if (e) {
            e->consumer = json_incref(consumer);
            e->view = k;
        }
    }
    own(s, cred);
    if (consumer) own(s, consumer);
    *out = k;
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
}

void tg_identity_store_end(tg_identity_store_t *s)
{
    for (size_t i = 0; i < s->nrefs; i++)
        json_decref(s->refs[i]);
    s->nrefs = 0;
    json_decref(s->owned);
    s->owned = NULL;
}
