/*
 * plugins.h — the plugin registry generated from plugins.def.
 *
 * Static, immutable, shared by all threads. Each plugin contributes the
 * schema of its `config` record and its default `protocols`.
 */
#ifndef TG_PLUGINS_H
#define TG_PLUGINS_H

#include "schema.h"

typedef struct tg_plugin_info {
    const char *name;
    int priority;
    const char *version;
    const tg_schema_t *config_schema;
    const char *default_protocols; /* JSON array text */
    bool no_consumer;              /* cannot be scoped to a consumer */
} tg_plugin_info_t;

#define XX(name, sym, prio, ver) extern const tg_plugin_info_t tg_plugin_##sym;
#include "plugins.def"
#undef XX

/* NULL-terminated, in plugins.def order. */
extern const tg_plugin_info_t *const tg_plugins[];
const tg_plugin_info_t *tg_plugin_find(const char *name);

#endif
