/*
 * dp_load.c — declarative file or store → store → generation; see dp_load.h.
 */
#include "dp_load.h"
#include "alloc.h"
#include "crypto.h"
#include "declarative.h"
#include "error.h"
#include "log.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The store's entity types, parents first (the order tg_store_replace_all gets them in). */
static const char *const types[] = {"services", "routes", "consumers", "plugins",
                                    "keyauth_credentials"};
#define NTYPES (sizeof(types) / sizeof(types[0]))

static void log_errors(const char *path, const json_t *errors)
{
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        char *line = tg_declarative_error_format(e);
        TG_LOGE("dp", "%s", line);
        free(line);
    }
    if (!json_array_size(errors)) TG_LOGE("dp", "%s: cannot be loaded", path);
}

static void log_notices(const json_t *notices)
{
    size_t i;
    json_t *e;
    json_array_foreach(notices, i, e)
    {
        char *line = tg_declarative_error_format(e);
        TG_LOGN("dp", "%s", line);
        free(line);
    }
}

/* key → key_digest (hex SHA-256): data planes keep digests only (DESIGN §4). */
static void digest_keys(json_t *creds)
{
    size_t i;
    json_t *c;
    json_array_foreach(creds, i, c)
    {
        const char *key = json_string_value(json_object_get(c, "key"));
        if (!key) continue;
        uint8_t d[TG_SHA256_LEN];
        char hex[2 * TG_SHA256_LEN + 1];
        tg_sha256(key, strlen(key), d);
        tg_hex_encode(d, sizeof(d), hex);
        json_object_set_new(c, "key_digest", json_string(hex));
        json_object_del(c, "key");
    }
}

/* The digest the store will hold after replace_all with these entities. */
static void digest_of(const json_t *entities, char hex[TG_CONFIG_DIGEST_HEX_LEN + 1])
{
    tg_config_digest_t d = {{0}};
    for (size_t t = 0; t < NTYPES; t++) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(entities, types[t]), i, e)
        {
            uint8_t h[TG_CONFIG_DIGEST_LEN];
            const char *id = json_string_value(json_object_get(e, "id"));
            if (id && tg_config_digest_entity(types[t], id, e, h) == 0) tg_config_digest_add(&d, h);
        }
    }
    tg_config_digest_hex(&d, hex);
}

static int replace_store(tg_store_t *store, const json_t *entities, int64_t version)
{
    size_t n = 0, cap = 0;
    for (size_t t = 0; t < NTYPES; t++)
        cap += json_array_size(json_object_get(entities, types[t]));
    tg_store_change_t *ch = tg_calloc(cap + 1, sizeof(*ch));
    for (size_t t = 0; t < NTYPES; t++) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(entities, types[t]), i, e) ch[n++] =
            (tg_store_change_t){types[t], NULL, TG_STORE_UPSERT, e};
    }
    tg_store_error_t err;
    int rc = tg_store_replace_all(store, version, ch, n, &err);
    if (rc != 0) TG_LOGE("dp", "cannot write the configuration to the store: %s", err.message);
    free(ch);
    return rc;
}

/* Parses and validates the file; the entities with digested keys, or NULL (logged). */
static json_t *parse_file(const char *path)
{
    tg_declarative_t d;
    json_t *errors = NULL;
    int rc = tg_declarative_load_file(path, &d, &errors);
    if (rc != 0) {
        log_errors(path, errors);
        json_decref(errors);
        return NULL;
    }
    log_notices(d.notices);
    json_t *entities = json_incref(d.entities);
    tg_declarative_free(&d);
    digest_keys(json_object_get(entities, "keyauth_credentials"));
    return entities;
}

int tg_dp_load_declarative(tg_store_t *store, const char *path, const tg_generation_t *cur,
                           tg_generation_t **out)
{
    *out = NULL;
    tg_store_info_t info;
    int rc = tg_store_info(store, &info);
    if (rc != 0) return rc;
    json_t *entities = parse_file(path);
    if (!entities) return -TG_ECONFIG;
    char hash[TG_CONFIG_DIGEST_HEX_LEN + 1], err[512] = "";
    digest_of(entities, hash);
    bool same = info.loaded && strcmp(hash, info.digest) == 0;
    if (same && cur && strcmp(hash, cur->hash) == 0) {
        json_decref(entities);
        return 1;
    }
    tg_generation_t *g = NULL;
    rc = tg_generation_build(entities, &g, err, sizeof(err));
    if (rc != 0) TG_LOGE("dp", "%s: %s", path, err);
    /* content the store already holds (a restart) keeps its version */
    if (rc == 0 && !same) rc = replace_store(store, entities, info.version + 1);
    json_decref(entities);
    /* The parse trees of a big file (gigabytes at a million keys) end up in malloc's free
     * lists, fragmented, and would stay in the DP's memory for good: give them back. */
    malloc_trim(0);
    if (rc != 0) {
        tg_generation_unref(g);
        return rc < 0 ? rc : -TG_ECONFIG;
    }
    if (tg_store_info(store, &info) == 0) { /* the store's own view is authoritative */
        g->version = info.version;
        snprintf(g->hash, sizeof(g->hash), "%s", info.digest);
    }
    *out = g;
    return 0;
}

int tg_dp_load_store(tg_store_t *store, tg_generation_t **out)
{
    json_t *entities = NULL;
    int64_t version = 0;
    char hash[TG_CONFIG_DIGEST_HEX_LEN + 1] = "", err[512] = "";
    *out = NULL;
    int rc = tg_generation_load_store(store, &entities, &version, hash);
    if (rc != 0) return rc;
    rc = tg_generation_build(entities, out, err, sizeof(err));
    json_decref(entities);
    if (rc != 0) {
        TG_LOGE("dp", "the stored configuration (version %lld) cannot be served: %s",
                (long long)version, err);
        return rc;
    }
    (*out)->version = version;
    snprintf((*out)->hash, sizeof((*out)->hash), "%s", hash);
    return 0;
}
