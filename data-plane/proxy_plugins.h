/*
 * proxy_plugins.h — the plugin phases of a proxied request (DESIGN §7).
 *
 * Access: the plugins that apply to the request run in Kong's priority order (higher
 * first), each with the configuration chosen by Kong's precedence for the request's route,
 * service and consumer — the consumer being whatever an earlier plugin (key-auth)
 * identified. A plugin answering (TG_FLOW_DONE) ends the phase; one waiting for the body
 * (TG_FLOW_AGAIN) makes the proxy buffer it and resume the phase at that same plugin, so no
 * plugin runs twice. Response: every plugin whose access phase ran gets the final status
 * before the response head is written, proxied or generated.
 *
 * Runs on the request's worker thread; the configurations come from the request's
 * generation, which outlives the request.
 */
#ifndef TG_PROXY_PLUGINS_H
#define TG_PROXY_PLUGINS_H

#include "plugin.h"
#include "proxy_int.h"

/* Runs or resumes the access phase. On TG_FLOW_DONE the plugin's answer was sent. */
tg_flow_t tg_proxy_plugins_access(tg_proxy_conn_t *c);

/* The response phase, with the status the client will get. */
void tg_proxy_plugins_response(tg_proxy_conn_t *c, int status);

#endif
