/*
 * proxy_plugins.c — the access and response phases over the generation's plugin chain
 * (plugin_chain.h); see proxy_plugins.h.
 */
#include "proxy_plugins.h"
#include "plugin_chain.h"

#include <string.h>

/* Remembers an instance whose access phase ran, once, for the response phase. */
static void ran(tg_proxy_exchange_t *x, const tg_plugin_instance_t *inst, size_t n)
{
    if (!x->ran) x->ran = tg_req_alloc(&x->req, n * sizeof(*x->ran));
    if (x->plugins_ran > 0 && x->ran[x->plugins_ran - 1] == inst) return; /* resumed */
    x->ran[x->plugins_ran++] = inst;
}

tg_flow_t tg_proxy_plugins_access(tg_proxy_conn_t *c)
{
    tg_proxy_exchange_t *x = &c->x;
    const tg_plugin_chain_t *chain = x->gen ? x->gen->chain : NULL;
    if (!chain) return TG_FLOW_CONTINUE;
    size_t n;
    const size_t *order = tg_plugin_chain_order(chain, &n);
    /* ids of the route and service as the router read them */
    tg_str_t route = x->match.info->route_id;
    tg_str_t service = x->req.service ? x->match.info->service_id : TG_STR_NULL;
    for (size_t i = (size_t)x->plugin_next; i < n; i++) {
        /* the consumer is whoever an earlier (higher priority) plugin identified, in either
         * form (request.h): its id, set with it */
        tg_str_t consumer_id = tg_req_consumer_id(&x->req);
        const tg_plugin_instance_t *inst =
            tg_plugin_chain_lookup(chain, order[i], route, service, consumer_id);
        if (!inst || !inst->handler->access) continue;
        x->plugin_next = (int)i;
        ran(x, inst, n);
        tg_flow_t flow = inst->handler->access(&x->req, inst->compiled);
        if (flow == TG_FLOW_AGAIN || flow == TG_FLOW_WAIT) return flow;
        if (flow == TG_FLOW_DONE || x->req.exit_status) {
            tg_proxy_respond_exit(c);
            return TG_FLOW_DONE;
        }
    }
    x->plugin_next = (int)n;
    return TG_FLOW_CONTINUE;
}

void tg_proxy_plugins_response(tg_proxy_conn_t *c, int status)
{
    tg_proxy_exchange_t *x = &c->x;
    for (int i = 0; i < x->plugins_ran; i++) {
        const tg_plugin_instance_t *inst = x->ran[i];
        if (inst->handler->response) inst->handler->response(&x->req, inst->compiled, status);
    }
}
