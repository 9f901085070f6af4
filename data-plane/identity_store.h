/*
 * identity_store.h — the identity source (identity.h) over the DP's LMDB config store.
 *
 * One tg_identity_store_t per request, usually embedded in the proxy's request state:
 *
 *     tg_identity_store_init(&ids, worker_reader);
 *     ids.cache = worker_cache;      // optional: reuse parsed entities (below)
 *     req.identity = &ids.source;
 *     ... run the plugins ...
 *     tg_req_release(&req);
 *     tg_identity_store_end(&ids);   // drops what was handed out for this request
 *
 * Each lookup is one short read (tg_store_read_begin, look up the entity as a JSON value,
 * tg_store_read_end), so no read is ever held across a return to the event loop. The JSON
 * handed out is owned by this object (a reference) until tg_identity_store_end;
 * tg_req_set_consumer may point at it for the request's lifetime. Callers only read it.
 *
 * The cache: reading and parsing the stored entity dominate a lookup, and the same
 * credential and consumer come back request after request. A tg_identity_cache_t keeps the
 * parsed answer of recent lookups (credential by digest, consumer by id or username) with
 * the store snapshot it was read from, and hands it out again only while no write has been
 * committed to the store since (tg_store_last_txn): any config change, to any entity, makes
 * the next lookup read the store again. A credential read from the store brings its
 * consumer into the cache from the same read, since key-auth asks for it next. Answers "not
 * found" are not cached. Bounded: one entry per slot, replaced on collision; a replaced value
 * lives on while requests hold it.
 *
 * key_by_digest (identity.h), key-auth's lookup: the credential and its consumer in one read
 * (two B-tree searches, one read transaction), read in place (store_record.h tg_record_read)
 * and only the strings key-auth and the request keep copied out, into this object (a small
 * buffer, heap beyond it): no JSON is built or freed, so a key the cache does not hold costs
 * the two searches and a few hundred instructions. The cache keeps those strings too: a
 * repeated key costs a slot probe and a copy of ~150 bytes. An answer whose consumer is
 * missing is cached like any other (a write invalidates it); one whose consumer could not be
 * read is not.
 *
 * Threads: the store object, its cache and its reader belong to the request's worker thread.
 * The reader is borrowed and must outlive the object; it must not have a read open during a
 * lookup. A cache is owned by its worker and must outlive the requests that use it.
 */
#ifndef TG_IDENTITY_STORE_H
#define TG_IDENTITY_STORE_H

#include "identity.h"
#include "store.h"

#define TG_IDENTITY_INLINE_REFS 4
/* Bytes of key_by_digest strings held inline; two UUIDs, a username and a custom_id fit. */
#define TG_IDENTITY_STRBUF 256

typedef struct tg_identity_cache tg_identity_cache_t;

typedef struct tg_identity_store {
    tg_identity_source_t source; /* give &source to the request; source.ud is this object */
    tg_store_reader_t *reader;   /* borrowed */
    tg_identity_cache_t *cache;  /* borrowed, may be NULL */
    json_t *refs[TG_IDENTITY_INLINE_REFS]; /* JSON handed out so far */
    size_t nrefs;
    json_t *owned; /* the ones beyond refs[] (a jansson array), or NULL */
    /* key_by_digest's strings handed out so far: strbuf, then heap blocks in `spill` */
    size_t strused;
    struct tg_identity_spill *spill;
    char strbuf[TG_IDENTITY_STRBUF];
} tg_identity_store_t;

/* Prepares a source reading through `reader`, without a cache. Allocates nothing. */
void tg_identity_store_init(tg_identity_store_t *s, tg_store_reader_t *reader);
/* Releases every JSON and string handed out since init; the object may then be initialised
 * again. */
void tg_identity_store_end(tg_identity_store_t *s);

tg_identity_cache_t *tg_identity_cache_new(void);
/* Drops the cache's references (values requests still hold stay alive). NULL is a no-op. */
void tg_identity_cache_free(tg_identity_cache_t *c);

#endif
