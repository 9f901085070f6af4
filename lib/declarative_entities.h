/*
 * declarative_entities.h — the entity half of the declarative loader,
 * private to declarative.c: the collection table, one item per entity found
 * in the file, error reporting with file positions, and the per-entity work
 * (references, ids, uniqueness, validation).
 *
 * Memory: the context owns its items and their JSON; the YAML document (and
 * with it every `src` node) outlives the context. Single-threaded per context.
 */
#ifndef TG_DECLARATIVE_ENTITIES_H
#define TG_DECLARATIVE_ENTITIES_H

#include "crypto.h"
#include "declarative_yaml.h"
#include "schema.h"
#include "strmap.h"

#include <jansson.h>
#include <stdbool.h>

/* Collections in dependency order: an entity only refers to earlier ones. */
enum tg_declarative_type {
    TG_DECL_SERVICES,
    TG_DECL_ROUTES,
    TG_DECL_CONSUMERS,
    TG_DECL_PLUGINS,
    TG_DECL_CREDENTIALS,
    TG_DECL_COUNT,
};

typedef struct tg_declarative_coll {
    const char *name; /* key in the file and in the result */
    const tg_schema_t *schema;
    int nested[2]; /* collections allowed inside one entry; -1 when none */
} tg_declarative_coll_t;

extern const tg_declarative_coll_t tg_declarative_colls[TG_DECL_COUNT];

/* Tables of unique values: the unique fields of all collections, and plugins' scope. */
#define TG_DECLARATIVE_SEEN_MAX 16

/* One entity of the file, nested or top-level. */
typedef struct tg_declarative_item {
    int type;
    const json_t *src; /* the mapping as written: positions come from it */
    json_t *input;     /* shallow copy without nested collections; refs resolved in place */
    struct tg_declarative_item *parent; /* the enclosing entity when nested */
    char *path;                         /* "services[0].routes[1]" */
    size_t index;                       /* within its own array */
    size_t seq;                         /* position in the context's item list */
    char id[TG_UUID_STR_LEN + 1];
    json_t *entity; /* complete and valid, or NULL */
} tg_declarative_item_t;

typedef struct tg_declarative_ctx {
    const char *file;
    tg_declarative_yaml_t *doc;
    json_t *root;
    json_t *errors, *notices;
    size_t dropped;                /* errors past TG_DECLARATIVE_MAX_ERRORS */
    tg_declarative_item_t **items; /* parents before their children */
    size_t n, cap;
    const char *format_version;
    const json_t *info, *select_tags, *defaults;
    /* Indexes (item positions fit 32 bits: a file holds at most TG_DECLARATIVE_MAX_BYTES) */
    tg_strmap_t *by_id[TG_DECL_COUNT];  /* id → item position */
    tg_strmap_t *by_key[TG_DECL_COUNT]; /* endpoint key → item position */
    struct tg_declarative_seen {        /* per "<collection>.<field>": value → item position */
        char *table;
        tg_strmap_t *values;
    } seen[TG_DECLARATIVE_SEEN_MAX];
    size_t nseen;
    tg_strmap_t *ordinals; /* "<collection>/<scope>" → count of unnamed entities so far */
} tg_declarative_ctx_t;

/* The collection called `name`, or -1. */
int tg_declarative_entities_type(const char *name);

void tg_declarative_entities_init(tg_declarative_ctx_t *cx);
void tg_declarative_entities_add(tg_declarative_ctx_t *cx, tg_declarative_item_t *it);

/*
 * Records an entry at `level` ("error" or "notice"). `it` is the entity at
 * fault (NULL: the top level); `path` is a JSON array of keys and indexes
 * below it (may be NULL) which both names the field and finds its position.
 * Returns the entry (borrowed), or NULL when past the error limit.
 */
json_t *tg_declarative_entities_report(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it,
                                       const json_t *path, const char *msg, const char *level);

/* Resolves, identifies and validates every item, parents' types first. */
void tg_declarative_entities_process(tg_declarative_ctx_t *cx);

/*
 * Frees the items, indexes and YAML document. Returns the errors (a new
 * reference) in file order, with a final summary of any dropped ones.
 */
json_t *tg_declarative_entities_finish(tg_declarative_ctx_t *cx);

#endif
