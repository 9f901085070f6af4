/*
 * generation.c — building, loading and releasing config generations; see generation.h.
 */
#include "generation.h"
#include "alloc.h"
#include "error.h"
#include "log.h"
#include "plugin_chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *array_ref(const json_t *entities, const char *key)
{
    json_t *a = json_object_get(entities, key);
    return json_is_array(a) ? json_incref(a) : json_array();
}

/* Ids of the services with enabled = false. */
static json_t *disabled_services(const json_t *services)
{
    json_t *ids = json_object();
    size_t i;
    json_t *s;
    json_array_foreach(services, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "id"));
        if (id && json_is_false(json_object_get(s, "enabled")))
            json_object_set_new(ids, id, json_true());
    }
    return ids;
}

/* The routes the router gets: every route except those of a disabled service. */
static json_t *routable(const json_t *routes, const json_t *services)
{
    json_t *off = disabled_services(services), *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(routes, i, r)
    {
        const char *sid = json_string_value(json_object_get(json_object_get(r, "service"), "id"));
        if (!sid || !json_object_get(off, sid)) json_array_append(out, r);
    }
    json_decref(off);
    return out;
}

static void destroy(tg_generation_t *g)
{
    tg_plugin_chain_free(g->chain);
    tg_router_free(g->router);
    json_decref(g->services);
    json_decref(g->routes);
    json_decref(g->plugins);
    free(g);
}

int tg_generation_build(const json_t *entities, tg_generation_t **out, char *err, size_t errlen)
{
    *out = NULL;
    tg_generation_t *g = tg_calloc(1, sizeof(*g));
    atomic_init(&g->refs, 1);
    g->services = array_ref(entities, "services");
    g->routes = array_ref(entities, "routes");
    g->plugins = array_ref(entities, "plugins");
    json_t *routes = routable(g->routes, g->services);
    int rc = tg_router_build(routes, g->services, NULL, &g->router, err, errlen);
    json_decref(routes); /* the router borrows the entities, which g->routes keeps */
    if (rc == 0 && json_array_size(g->plugins))
        rc = tg_plugin_chain_build(g->plugins, &g->chain, err, errlen);
    if (rc != 0) {
        destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

tg_generation_t *tg_generation_ref(tg_generation_t *g)
{
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void tg_generation_unref(tg_generation_t *g)
{
    if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) destroy(g);
}

/* ---------------------------------------------------------------- from the store */

static int append_entity(void *ud, tg_str_t id, tg_str_t text)
{
    json_error_t jerr;
    json_t *e = json_loadb(text.p, text.len, 0, &jerr);
    if (!e) {
        TG_LOGE("generation", "stored entity %.*s is not JSON: %s", (int)id.len, id.p, jerr.text);
        return -TG_EIO;
    }
    json_array_append_new(ud, e);
    return 0;
}

static int read_all(tg_store_reader_t *rd, json_t *entities, int64_t *version, char *hash)
{
    tg_store_info_t info;
    int rc = tg_store_get_info(rd, &info);
    if (rc == 0 && !info.loaded) rc = -TG_ENOTFOUND;
    static const char *const types[] = {"services", "routes", "plugins"};
    for (size_t i = 0; rc == 0 && i < 3; i++) {
        json_t *a = json_array();
        json_object_set_new(entities, types[i], a);
        rc = tg_store_each(rd, types[i], append_entity, a);
    }
    if (rc == 0 && version) *version = info.version;
    if (rc == 0 && hash) snprintf(hash, TG_CONFIG_DIGEST_HEX_LEN + 1, "%s", info.digest);
    return rc;
}

int tg_generation_load_store(tg_store_t *store, json_t **entities, int64_t *version,
                             char hash[TG_CONFIG_DIGEST_HEX_LEN + 1])
{
    tg_store_reader_t rd;
    *entities = NULL;
    int rc = tg_store_reader_init(store, &rd);
    if (rc != 0) return rc;
    json_t *e = json_object();
    rc = tg_store_read_begin(&rd);
    if (rc == 0) {
        rc = read_all(&rd, e, version, hash);
        tg_store_read_end(&rd);
    }
    tg_store_reader_free(&rd);
    if (rc != 0)
        json_decref(e);
    else
        *entities = e;
    return rc;
}
