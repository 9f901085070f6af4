/*
 * identity_store.h — the identity source (identity.h) over the DP's LMDB config store.
 *
 * One tg_identity_store_t per request, usually embedded in the proxy's request state:
 *
 *     tg_identity_store_init(&ids, worker_reader);
 *     req.identity = &ids.source;
 *     ... run the plugins ...
 *     tg_req_release(&req);
 *     tg_identity_store_end(&ids);   // drops every JSON handed out for this request
 *
 * Each lookup is one short read (tg_store_read_begin, look up, json_loadb of the view,
 * tg_store_read_end), so no read is ever held across a return to the event loop. The JSON
 * handed out is parsed into fresh jansson values that this object owns until
 * tg_identity_store_end; tg_req_set_consumer may point at them for the request's lifetime.
 *
 * Threads: the store object and its reader belong to the request's worker thread. The reader
 * is borrowed and must outlive the object; it must not have a read open during a lookup.
 */
#ifndef TG_IDENTITY_STORE_H
#define TG_IDENTITY_STORE_H

#include "identity.h"
#include "store.h"

typedef struct tg_identity_store {
    tg_identity_source_t source; /* give &source to the request; source.ud is this object */
    tg_store_reader_t *reader;   /* borrowed */
    json_t *owned;               /* JSON handed out so far (a jansson array), or NULL */
} tg_identity_store_t;

/* Prepares a source reading through `reader`. Allocates nothing until the first hit. */
void tg_identity_store_init(tg_identity_store_t *s, tg_store_reader_t *reader);
/* Releases every JSON handed out since init; the object may then be initialised again. */
void tg_identity_store_end(tg_identity_store_t *s);

#endif
