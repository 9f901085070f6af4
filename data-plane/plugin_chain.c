/*
 * plugin_chain.c — see plugin_chain.h.
 *
 * Instances live in one array; an open-addressing table of pointers indexes them by a hash
 * of (plugin, scope ids). Each plugin also keeps a bit set of the scope combinations it
 * has, so a lookup only hashes the levels that can match — a plugin configured globally
 * only costs one probe per request.
 */
#include "plugin_chain.h"
#include "alloc.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROUTE = 1, SERVICE = 2, CONSUMER = 4 };
enum { NSCOPES = 3 };

/* Kong's lookup order, most specific first, as sets of scope bits. */
static const uint8_t precedence[] = {
    ROUTE | SERVICE | CONSUMER,
    ROUTE | CONSUMER,
    SERVICE | CONSUMER,
    ROUTE | SERVICE,
    CONSUMER,
    ROUTE,
    SERVICE,
    0,
};

struct entry {
    tg_plugin_instance_t inst;
    uint8_t combo;         /* which scopes the instance names */
    tg_str_t ids[NSCOPES]; /* route, service, consumer (owned copies; .p NULL when absent) */
    uint64_t hash;
};

struct tg_plugin_chain {
    struct entry *entries;
    size_t n;
    struct entry **table;
    size_t mask;
    size_t nplugins;
    uint8_t *combos; /* per plugin index: bit (1 << combo) set when that scope set exists */
    size_t *order;
    size_t norder;
};

/* ------------------------------------------------------------------ hashing */

/* Mixes n bytes into h, a word at a time (ids are UUIDs: 36 bytes per lookup level). */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (; n >= 8; b += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = (h ^ w) * UINT64_C(0x9e3779b97f4a7c15);
        h ^= h >> 29;
    }
    if (n) { /* the tail as one zero-padded word (lengths are hashed apart, see scope_hash) */
        uint64_t w = 0;
        memcpy(&w, b, n);
        h = (h ^ w) * UINT64_C(0x9e3779b97f4a7c15);
        h ^= h >> 29;
    }
    return h;
}

/* Hash of (plugin, the ids the combo names); an id's length is hashed so "a"+"bc" ≠ "ab"+"c". */
static uint64_t scope_hash(size_t plugin, uint8_t combo, const tg_str_t ids[NSCOPES])
{
    uint64_t h = fnv(UINT64_C(0xcbf29ce484222325), &plugin, sizeof(plugin));
    h = fnv(h, &combo, 1);
    for (int i = 0; i < NSCOPES; i++) {
        if (!(combo & (1 << i))) continue;
        h = fnv(h, &ids[i].len, sizeof(ids[i].len));
        h = fnv(h, ids[i].p, ids[i].len);
    }
    return h;
}

static bool same_scope(const struct entry *e, size_t plugin, uint8_t combo,
                       const tg_str_t ids[NSCOPES])
{
    if (e->inst.plugin_index != plugin || e->combo != combo) return false;
    for (int i = 0; i < NSCOPES; i++)
        if ((combo & (1 << i)) && !tg_str_eq(e->ids[i], ids[i])) return false;
    return true;
}

static const struct entry *find(const tg_plugin_chain_t *c, size_t plugin, uint8_t combo,
                                const tg_str_t ids[NSCOPES])
{
    uint64_t h = scope_hash(plugin, combo, ids);
    for (size_t i = h & c->mask;; i = (i + 1) & c->mask) {
        const struct entry *e = c->table[i];
        if (!e) return NULL;
        if (e->hash == h && same_scope(e, plugin, combo, ids)) return e;
    }
}

/* ------------------------------------------------------------------ lookup */

const tg_plugin_instance_t *tg_plugin_chain_lookup(const tg_plugin_chain_t *c, size_t plugin_index,
                                                   tg_str_t route_id, tg_str_t service_id,
                                                   tg_str_t consumer_id)
{
    if (!c || plugin_index >= c->nplugins || !c->combos[plugin_index]) return NULL;
    if (tg_plugins[plugin_index]->no_consumer) consumer_id = TG_STR_NULL;
    const tg_str_t ids[NSCOPES] = {route_id, service_id, consumer_id};
    uint8_t have = 0;
    for (int i = 0; i < NSCOPES; i++)
        if (ids[i].p && ids[i].len) have |= (uint8_t)(1 << i);
    for (size_t l = 0; l < sizeof(precedence); l++) {
        uint8_t combo = precedence[l];
        if ((combo & have) != combo || !(c->combos[plugin_index] & (1u << combo))) continue;
        const struct entry *e = find(c, plugin_index, combo, ids);
        if (e) return &e->inst;
    }
    return NULL;
}

const size_t *tg_plugin_chain_order(const tg_plugin_chain_t *c, size_t *n)
{
    *n = c ? c->norder : 0;
    return c ? c->order : NULL;
}

size_t tg_plugin_chain_size(const tg_plugin_chain_t *c)
{
    return c ? c->n : 0;
}

void tg_plugin_chain_free(tg_plugin_chain_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        struct entry *e = &c->entries[i];
        if (e->inst.handler->release) e->inst.handler->release(e->inst.compiled);
        free((char *)e->inst.id);
        for (int k = 0; k < NSCOPES; k++)
            free((char *)e->ids[k].p);
    }
    free(c->entries);
    free(c->table);
    free(c->combos);
    free(c->order);
    free(c);
}

/* ------------------------------------------------------------------ build */

/* Kong only runs, in the http subsystem, instances with at least one http-side protocol. */
static bool http_subsystem(const json_t *protocols)
{
    static const char *const http[] = {"http", "https", "grpc", "grpcs", "ws", "wss"};
    if (!json_is_array(protocols)) return true;
    for (size_t i = 0; i < json_array_size(protocols); i++) {
        const char *p = json_string_value(json_array_get(protocols, i));
        for (size_t k = 0; p && k < sizeof(http) / sizeof(http[0]); k++)
            if (strcmp(p, http[k]) == 0) return true;
    }
    return false;
}

static size_t plugin_index_of(const char *name)
{
    for (size_t i = 0; name && tg_plugins[i]; i++)
        if (strcmp(tg_plugins[i]->name, name) == 0) return i;
    return SIZE_MAX;
}

/* The instance's scope: which of route/service/consumer it names, with copies of the ids. */
static uint8_t read_scope(const json_t *plugin, tg_str_t ids[NSCOPES])
{
    static const char *const fields[NSCOPES] = {"route", "service", "consumer"};
    uint8_t combo = 0;
    for (int i = 0; i < NSCOPES; i++) {
        const char *id =
            json_string_value(json_object_get(json_object_get(plugin, fields[i]), "id"));
        ids[i] = TG_STR_NULL;
        if (!id || !*id) continue;
        ids[i] = (tg_str_t){tg_strdup(id), strlen(id)};
        combo |= (uint8_t)(1 << i);
    }
    return combo;
}

static int add_instance(tg_plugin_chain_t *c, const json_t *p, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(p, "name"));
    const char *id = json_string_value(json_object_get(p, "id"));
    if (json_is_false(json_object_get(p, "enabled")) ||
        !http_subsystem(json_object_get(p, "protocols")))
        return 0;
    size_t idx = plugin_index_of(name);
    const tg_plugin_handler_t *h = idx == SIZE_MAX ? NULL : tg_plugin_handler(name);
    if (!h) {
        snprintf(err, errlen, "plugin %s: '%s' is not available on this data plane", id ? id : "?",
                 name ? name : "(no name)");
        return -TG_EINVAL;
    }
    char msg[256] = "";
    void *compiled = NULL;
    if (h->configure(p, &compiled, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "plugin %s (%s): %s", id ? id : "?", name, msg);
        return -TG_EINVAL;
    }
    struct entry *e = &c->entries[c->n++];
    e->inst = (tg_plugin_instance_t){h, tg_plugins[idx], idx, compiled, tg_strdup(id ? id : "")};
    e->combo = read_scope(p, e->ids);
    e->hash = scope_hash(idx, e->combo, e->ids);
    c->combos[idx] |= (uint8_t)(1u << e->combo);
    return 0;
}

static int index_entries(tg_plugin_chain_t *c, char *err, size_t errlen)
{
    size_t cap = 8;
    while (cap < 2 * c->n)
        cap <<= 1;
    c->table = tg_calloc(cap, sizeof(*c->table));
    c->mask = cap - 1;
    for (size_t i = 0; i < c->n; i++) {
        struct entry *e = &c->entries[i];
        const struct entry *dup = find(c, e->inst.plugin_index, e->combo, e->ids);
        if (dup) {
            snprintf(err, errlen, "plugins %s and %s: both enabled with the same scope",
                     dup->inst.id, e->inst.id);
            return -TG_EINVAL;
        }
        size_t k = e->hash & c->mask;
        while (c->table[k])
            k = (k + 1) & c->mask;
        c->table[k] = e;
    }
    return 0;
}

/* Higher priority first; equal priorities by name, so the order never depends on input. */
static int by_priority(const void *a, const void *b)
{
    const tg_plugin_info_t *x = tg_plugins[*(const size_t *)a], *y = tg_plugins[*(const size_t *)b];
    if (x->priority != y->priority) return x->priority > y->priority ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void build_order(tg_plugin_chain_t *c)
{
    c->order = tg_calloc(c->nplugins ? c->nplugins : 1, sizeof(size_t));
    for (size_t i = 0; i < c->nplugins; i++)
        if (c->combos[i]) c->order[c->norder++] = i;
    qsort(c->order, c->norder, sizeof(size_t), by_priority);
}

int tg_plugin_chain_build(const json_t *plugins, tg_plugin_chain_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (plugins && !json_is_array(plugins)) {
        snprintf(err, errlen, "plugins must be an array");
        return -TG_EINVAL;
    }
    tg_plugin_chain_t *c = tg_calloc(1, sizeof(*c));
    while (tg_plugins[c->nplugins])
        c->nplugins++;
    c->combos = tg_calloc(c->nplugins ? c->nplugins : 1, 1);
    c->entries = tg_calloc(json_array_size(plugins) + 1, sizeof(*c->entries));
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(plugins); i++)
        rc = add_instance(c, json_array_get(plugins, i), err, errlen);
    if (rc == 0) rc = index_entries(c, err, errlen);
    if (rc < 0) {
        tg_plugin_chain_free(c);
        return rc;
    }
    build_order(c);
    *out = c;
    return 0;
}
