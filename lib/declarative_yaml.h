/*
 * declarative_yaml.h — YAML (and therefore JSON) text to a jansson tree that
 * remembers where every mapping, sequence, key and element was written.
 *
 * Used by declarative.c only: errors about an entity or one of its fields
 * name the file line and column, so the loader keeps, beside the tree, an
 * index from each container node to its mark and to the marks of its
 * members (mapping keys, sequence elements). The index is keyed by node
 * address, so it is valid only while the tree it was built with is alive and
 * unchanged; both are owned by the tg_declarative_yaml_t and freed together.
 *
 * Scalars are resolved with the YAML 1.2 core schema: quoted scalars are
 * strings ("123456" stays a string), plain null/~/empty are null, true/false
 * are booleans (yes/no/on/off stay strings), integers stay integers. Aliases
 * are refused (no billion laughs); anchors alone are harmless and ignored.
 * Nesting is bounded by TG_DECLARATIVE_YAML_MAX_DEPTH.
 *
 * Pure functions with no shared state: any thread.
 */
#ifndef TG_DECLARATIVE_YAML_H
#define TG_DECLARATIVE_YAML_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define TG_DECLARATIVE_YAML_MAX_DEPTH 64

typedef struct tg_declarative_yaml tg_declarative_yaml_t;

/* Where a parse failed: 1-based line and column (0 when unknown) and why. */
typedef struct tg_declarative_yaml_error {
    unsigned line, column;
    char message[256];
} tg_declarative_yaml_error_t;

/*
 * Parses one YAML document. On success returns 0 and *out owns the tree
 * (tg_declarative_yaml_root; NULL for an empty document). Returns -TG_EPARSE
 * for a syntax error, an alias, an unsupported tag or a duplicate key, and
 * -TG_ETOOBIG past the nesting bound, with *err filled.
 */
int tg_declarative_yaml_parse(const char *text, size_t len, tg_declarative_yaml_t **out,
                              tg_declarative_yaml_error_t *err);

/* The parsed tree (borrowed; owned by doc). */
json_t *tg_declarative_yaml_root(const tg_declarative_yaml_t *doc);

/*
 * The 1-based position of `node` itself (key NULL, index < 0), of the key
 * `key` of a mapping, or of element `index` of a sequence. Returns false when
 * the node is not from this document or has no such member.
 */
bool tg_declarative_yaml_mark(const tg_declarative_yaml_t *doc, const json_t *node, const char *key,
                              long index, unsigned *line, unsigned *column);

void tg_declarative_yaml_free(tg_declarative_yaml_t *doc);

#endif
