#include "config.h"
#include "alloc.h"
#include "error.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const key_names[] = {
#define XX(key, def, desc) #key,
#include "config.def"
#undef XX
};

static const char *const key_defaults[] = {
#define XX(key, def, desc) def,
#include "config.def"
#undef XX
};

static char *values[TG_CONF__COUNT];

int tg_config_key_from_name(const char *name)
{
    for (int i = 0; i < TG_CONF__COUNT; i++)
        if (strcmp(key_names[i], name) == 0) return i;
    return -1;
}

const char *tg_config_key_name(enum tg_config_key key)
{
    return key_names[key];
}

int tg_config_set(const char *key, const char *value)
{
    int k = tg_config_key_from_name(key);
    if (k < 0) return -TG_EINVAL;
    free(values[k]);
    values[k] = tg_strdup(value);
    return 0;
}

const char *tg_config_get(enum tg_config_key key)
{
    return values[key] ? values[key] : key_defaults[key];
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* Strips a trailing comment and matching surrounding quotes from a value. */
static char *clean_value(char *v)
{
    char *hash = strchr(v, '#');
    if (hash) *hash = '\0';
    v = trim(v);
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        v[n - 1] = '\0';
        v++;
    }
    return v;
}

static int load_file(const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errbuf, errlen, "cannot open configuration file %s: %s", path, strerror(errno));
        return -TG_ECONFIG;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(errbuf, errlen, "%s:%d: expected `key = value`", path, lineno);
            rc = -TG_ECONFIG;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = clean_value(eq + 1);
        if (tg_config_set(key, val) != 0) {
            snprintf(errbuf, errlen, "%s:%d: unknown configuration key '%s'", path, lineno, key);
            rc = -TG_ECONFIG;
            break;
        }
    }
    fclose(f);
    return rc;
}

static void load_env(void)
{
    for (int i = 0; i < TG_CONF__COUNT; i++) {
        char name[128] = "TOLLGATE_";
        size_t n = strlen(name);
        for (const char *k = key_names[i]; *k && n < sizeof(name) - 1; k++)
            name[n++] = (char)toupper((unsigned char)*k);
        name[n] = '\0';
        const char *v = getenv(name);
        if (v) tg_config_set(key_names[i], v);
    }
}

int tg_config_load(const char *path, char *errbuf, size_t errlen)
{
    int rc = 0;
    if (path) {
        rc = load_file(path, errbuf, errlen);
    } else {
        const char *candidates[] = {"./tollgate.conf", "/etc/tollgate/tollgate.conf"};
        for (size_t i = 0; i < 2; i++) {
            if (access(candidates[i], R_OK) == 0) {
                rc = load_file(candidates[i], errbuf, errlen);
                break;
            }
        }
    }
    if (rc == 0) load_env();
    return rc;
}

int tg_config_int(enum tg_config_key key, long min, long max, long *out)
{
    const char *v = tg_config_get(key);
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max) return -TG_ECONFIG;
    *out = n;
    return 0;
}

int tg_config_size(enum tg_config_key key, uint64_t *out)
{
    const char *v = tg_config_get(key);
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v) return -TG_ECONFIG;
    uint64_t mult = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': mult = 1024ULL; end++; break;
    case 'm': mult = 1024ULL * 1024; end++; break;
    case 'g': mult = 1024ULL * 1024 * 1024; end++; break;
    default: return -TG_ECONFIG;
    }
    if (*end) return -TG_ECONFIG;
    *out = (uint64_t)n * mult;
    return 0;
}

static int parse_listener(char *item, tg_listen_addr_t *out)
{
    memset(out, 0, sizeof(*out));
    char *tok = strtok(item, " \t");
    if (!tok) return -TG_ECONFIG;
    char *colon = strrchr(tok, ':');
    if (!colon || colon == tok) return -TG_ECONFIG;
    *colon = '\0';
    char *host = tok;
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1]:8001 */
        host[hl - 1] = '\0';
        host++;
    }
    if (strlen(host) >= sizeof(out->host)) return -TG_ECONFIG;
    strcpy(out->host, host);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -TG_ECONFIG;
    out->port = (int)port;
    while ((tok = strtok(NULL, " \t")) != NULL) {
        if (strcmp(tok, "ssl") == 0) out->ssl = 1;
        else if (strcmp(tok, "reuseport") == 0 || strcmp(tok, "http2") == 0) continue;
        else return -TG_ECONFIG;
    }
    return 0;
}

int tg_config_listeners(enum tg_config_key key, tg_listen_addr_t *out, int cap)
{
    char *copy = tg_strdup(tg_config_get(key));
    char *t = trim(copy);
    int n = 0, rc = 0;
    if (*t == '\0' || strcmp(t, "off") == 0) {
        free(copy);
        return 0;
    }
    char *save = NULL;
    for (char *item = strtok_r(t, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (n >= cap) { rc = -TG_ECONFIG; break; }
        char *it = trim(item);
        if ((rc = parse_listener(it, &out[n])) != 0) break;
        n++;
    }
    free(copy);
    return rc ? rc : n;
}

char *tg_config_prefix_path(const char *rel)
{
    return tg_asprintf("%s/%s", tg_config_get(TG_CONF_prefix), rel);
}

int tg_mkdir_p(const char *path, unsigned mode)
{
    char *copy = tg_strdup(path);
    int rc = 0;
    for (char *p = copy + 1; *p && rc == 0; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(copy, (mode_t)mode) != 0 && errno != EEXIST) rc = -TG_ESYS;
        *p = '/';
    }
    if (rc == 0 && mkdir(copy, (mode_t)mode) != 0 && errno != EEXIST) rc = -TG_ESYS;
    int saved = errno;
    free(copy);
    errno = saved;
    return rc;
}
