/*
 * generation.h — one immutable, compiled configuration the proxy serves from (DESIGN §7).
 *
 * A generation owns the service, route and plugin entities it was built from, the router
 * compiled from them and the plugin chain. It never changes after tg_generation_build; the
 * control thread builds the next one aside and publishes it (worker.h), and every request
 * holds a reference to the generation it started with until it ends, so a swap never pulls
 * a config from under a request. Consumers and credentials are not part of a generation:
 * they are looked up in the store per request (identity_store.h), so a million keys cost
 * nothing here.
 *
 * Ownership and threads: built on the control thread; afterwards read-only and shared by
 * every worker. The reference count is atomic; the last tg_generation_unref frees it on
 * whichever thread that happens.
 */
#ifndef TG_GENERATION_H
#define TG_GENERATION_H

#include "config_digest.h"
#include "router.h"
#include "store.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

struct tg_plugin_chain;

typedef struct tg_generation {
    atomic_int refs;
    int64_t version;                         /* config version it serves */
    char hash[TG_CONFIG_DIGEST_HEX_LEN + 1]; /* config digest, hex ("" when unknown) */
    json_t *services, *routes, *plugins;     /* owned arrays of complete entities */
    tg_router_t *router;
    struct tg_plugin_chain *chain; /* NULL when no plugin is configured */
} tg_generation_t;

/*
 * Builds a generation from `entities`, an object with "services", "routes" and "plugins"
 * arrays (other keys are ignored; missing ones mean empty). The arrays are referenced, not
 * copied. Routes of a disabled service are left out (Kong does not route to them).
 * Returns 0 with *out holding one reference, or -TG_EINVAL with a message naming the
 * entity at fault in `err` (a regex that does not compile, a plugin config refused).
 */
int tg_generation_build(const json_t *entities, tg_generation_t **out, char *err, size_t errlen);

/*
 * Reads services, routes and plugins from the store into a new object shaped as
 * tg_generation_build wants it; *version and hash (optional) get the store's version and
 * digest. Returns 0, -TG_ENOTFOUND when the store never had a config, or a store error.
 */
int tg_generation_load_store(tg_store_t *store, json_t **entities, int64_t *version,
                             char hash[TG_CONFIG_DIGEST_HEX_LEN + 1]);

tg_generation_t *tg_generation_ref(tg_generation_t *g);
/* Drops a reference; frees the generation with the last one. NULL is a no-op. */
void tg_generation_unref(tg_generation_t *g);

#endif
