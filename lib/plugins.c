/* plugins.c — the registry table built from plugins.def. */
#include "plugins.h"

#include <string.h>

const tg_plugin_info_t *const tg_plugins[] = {
#define XX(name, sym, prio, ver) &tg_plugin_##sym,
#include "plugins.def"
#undef XX
    NULL,
};

const tg_plugin_info_t *tg_plugin_find(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; tg_plugins[i]; i++)
        if (strcmp(tg_plugins[i]->name, name) == 0) return tg_plugins[i];
    return NULL;
}
