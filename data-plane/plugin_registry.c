/*
 * plugin_registry.c — the data plane's handler of every plugin in lib/plugins.def.
 *
 * The table is generated from the same X-macro list as lib/plugins.c, so a plugin added
 * to plugins.def without a handler (tg_plugin_handler_<sym> in its handler.c) fails to
 * link instead of being silently ignored. Static and immutable: any thread may call it.
 */
#include "plugin.h"

#include <string.h>

#define XX(name, sym, prio, ver) extern const tg_plugin_handler_t tg_plugin_handler_##sym;
#include "plugins.def"
#undef XX

static const tg_plugin_handler_t *const handlers[] = {
#define XX(name, sym, prio, ver) &tg_plugin_handler_##sym,
#include "plugins.def"
#undef XX
};

const tg_plugin_handler_t *tg_plugin_handler(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if (strcmp(handlers[i]->name, name) == 0) return handlers[i];
    return NULL;
}
