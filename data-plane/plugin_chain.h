/*
 * plugin_chain.h — which plugin instance applies to a request, with Kong's precedence.
 *
 * Built once per config generation from the generation's plugin entities: every enabled
 * instance is compiled with its handler's configure() and indexed by (plugin, route id,
 * service id, consumer id). At request time the proxy walks tg_plugin_chain_order() — the
 * plugins that have at least one instance, highest priority first (key-auth 1250 before
 * rate-limiting 910) — and for each asks tg_plugin_chain_lookup() for the most specific
 * instance (kong-compat.md §4.3, OSS order):
 *   1 route+service+consumer  2 route+consumer  3 service+consumer  4 route+service
 *   5 consumer  6 route  7 service  8 global.
 * The consumer is the one known at that point of the request (set by an earlier, higher
 * priority auth plugin), which is why lookups are lazy. Disabled instances are not indexed,
 * so a less specific enabled one applies in their place; plugins whose protocols are all
 * stream protocols (tcp, tls, udp, tls_passthrough) are not indexed either.
 *
 * Ownership and threads: the chain is owned by its generation (tg_plugin_chain_free when
 * the last request using it ends), immutable after build, and read by any number of worker
 * threads without locks. Lookups do not allocate.
 */
#ifndef TG_PLUGIN_CHAIN_H
#define TG_PLUGIN_CHAIN_H

#include "plugin.h"
#include "plugins.h"
#include "str.h"

#include <jansson.h>
#include <stddef.h>

/* One compiled plugin instance. */
typedef struct tg_plugin_instance {
    const tg_plugin_handler_t *handler;
    const tg_plugin_info_t *info;
    size_t plugin_index; /* into tg_plugins[] */
    void *compiled;      /* handler->configure's result, passed to its phases */
    const char *id;      /* the plugin entity's id */
} tg_plugin_instance_t;

typedef struct tg_plugin_chain tg_plugin_chain_t;

/*
 * Compiles a JSON array of plugin entities. 0 with *out; -TG_EINVAL with a message in err
 * when an entity is malformed, names a plugin this data plane lacks, fails its handler's
 * configure, or repeats the scope of another enabled instance of the same plugin (nothing
 * is kept then).
 */
int tg_plugin_chain_build(const json_t *plugins, tg_plugin_chain_t **out, char *err, size_t errlen);
/* Releases every compiled config and the chain. NULL is a no-op. */
void tg_plugin_chain_free(tg_plugin_chain_t *c);

/* Indexes into tg_plugins[] of the plugins with an instance, by descending priority. */
const size_t *tg_plugin_chain_order(const tg_plugin_chain_t *c, size_t *n);

/*
 * The instance of plugin `plugin_index` for a request on route/service by consumer (an
 * absent id is TG_STR_NULL or empty), by the precedence above; NULL when none applies.
 * The consumer is ignored for plugins that cannot be scoped to one (key-auth).
 */
const tg_plugin_instance_t *tg_plugin_chain_lookup(const tg_plugin_chain_t *c, size_t plugin_index,
                                                   tg_str_t route_id, tg_str_t service_id,
                                                   tg_str_t consumer_id);

/* Number of compiled instances (for status and tests). */
size_t tg_plugin_chain_size(const tg_plugin_chain_t *c);

#endif
