/*
 * config.h — the configuration system of DESIGN.md §1.
 *
 * Every key has a default (config.def), may be set in a tollgate.conf file
 * (`key = value`, `#` comments) and is overridden by TOLLGATE_<KEY>. The
 * loaded configuration is a process-lifetime object, written once at start-up
 * on the main thread and read-only afterwards (safe to read from any thread).
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum tg_config_key {
#define XX(key, def, desc) TG_CONF_##key,
#include "config.def"
#undef XX
    TG_CONF__COUNT
};

/* A host:port listener parsed from a `*_listen` value. */
typedef struct tg_listen_addr {
    char host[256];
    int port;
    int ssl;
} tg_listen_addr_t;

/*
 * Loads defaults, then `path` (may be NULL: then ./tollgate.conf and
 * /etc/tollgate/tollgate.conf are tried if they exist), then the environment.
 * On failure returns -TG_ECONFIG and writes a message naming the file, line and
 * key into errbuf.
 */
int tg_config_load(const char *path, char *errbuf, size_t errlen);
/* Sets one key programmatically (tests, CLI flags). Returns -TG_EINVAL for an unknown key. */
int tg_config_set(const char *key, const char *value);
/* The current value of a key; never NULL (empty string when unset). */
const char *tg_config_get(enum tg_config_key key);
/* Looks a key up by name; returns -1 when there is no such key. */
int tg_config_key_from_name(const char *name);
const char *tg_config_key_name(enum tg_config_key key);

/* Integer value; -TG_ECONFIG when the value is not an integer in [min, max]. */
int tg_config_int(enum tg_config_key key, long min, long max, long *out);
/* Size value with optional k/m/g suffix (1024-based). */
int tg_config_size(enum tg_config_key key, uint64_t *out);
/*
 * Parses a comma-separated listener list ("127.0.0.1:8001, 0.0.0.0:8444 ssl").
 * Fills up to `cap` entries; returns the count or -TG_ECONFIG. "off" = none.
 */
int tg_config_listeners(enum tg_config_key key, tg_listen_addr_t *out, int cap);
/* Returns "<prefix>/<rel>" in a fresh heap string; caller frees. */
char *tg_config_prefix_path(const char *rel);
/*
 * Creates `path` and any missing parent directories with `mode` (existing ones are left as
 * they are). 0, or -TG_ESYS with errno set.
 */
int tg_mkdir_p(const char *path, unsigned mode);

#endif
