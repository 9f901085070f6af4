/*
 * plugin.h — the plugin handler interface of the data plane.
 *
 * Each plugin (one folder under data-plane/plugins/<name>/, listed once in
 * lib/plugins.def) provides a tg_plugin_handler_t. For every config
 * generation the DP calls `configure` once per plugin instance to turn its
 * validated config JSON into a compiled form; requests then run `access`
 * (before proxying) and `response` (once the upstream's response head is
 * known, before it is sent to the client) with that compiled config, in
 * Kong's priority order (higher first). Phases run on worker threads and
 * must not block or take locks on the request path.
 */
#ifndef TG_PLUGIN_H
#define TG_PLUGIN_H

#include "request.h"

#include <jansson.h>

typedef enum tg_flow {
    TG_FLOW_CONTINUE, /* go on with the next plugin / proxy the request */
    TG_FLOW_DONE,     /* the plugin answered (tg_req_exit); stop */
    TG_FLOW_AGAIN,    /* waiting for input (the body); call this phase again later */
    TG_FLOW_WAIT,     /* parked on an answer from elsewhere (a realm lookup); the proxy runs
                         this phase again when it comes */
} tg_flow_t;

typedef struct tg_plugin_handler {
    const char *name;
    /* Compiles an instance's config; 0 or -TG_EINVAL with a message (the generation is refused). */
    int (*configure)(const json_t *plugin, void **compiled, char *err, size_t errlen);
    void (*release)(void *compiled);
    tg_flow_t (*access)(tg_req_t *r, void *compiled);
    /* Optional: called with the response status before the head is sent to the client. */
    void (*response)(tg_req_t *r, void *compiled, int status);
} tg_plugin_handler_t;

/* The handler of a plugin by name (from plugins.def), or NULL. */
const tg_plugin_handler_t *tg_plugin_handler(const char *name);

#endif
