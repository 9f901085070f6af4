/*
 * declarative.c — the loader's entry points: the top level of the file,
 * flattening nested entities into one list, and the result.
 *
 * Flow: YAML → tree with positions (declarative_yaml.c) → top-level keys
 * checked and every entity, nested or not, becomes one item with its path in
 * the file → items are resolved, given ids and validated type by type, parents
 * first (declarative_entities.c) → on no error, the entities are collected by
 * type in file order.
 */
#include "declarative.h"
#include "alloc.h"
#include "declarative_entities.h"
#include "declarative_yaml.h"
#include "error.h"
#include "validators.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Kong entities Tollgate does not load: named so that the error says so plainly. */
static const char *const unsupported[] = {
    "upstreams",
    "targets",
    "certificates",
    "ca_certificates",
    "snis",
    "vaults",
    "key_sets",
    "keys",
    "acls",
    "basicauth_credentials",
    "hmacauth_credentials",
    "jwt_secrets",
    "oauth2_credentials",
    "consumer_groups",
    "filter_chains",
    "workspaces",
    "parameters",
    NULL,
};

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

static json_t *report(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it, const json_t *path,
                      const char *msg, const char *level)
{
    return tg_declarative_entities_report(cx, it, path, msg, level);
}

static void report_field(tg_declarative_ctx_t *cx, const tg_declarative_item_t *it,
                         const char *field, const char *msg)
{
    json_t *path = json_pack("[s]", field);
    report(cx, it, path, msg, "error");
    json_decref(path);
}

/* ---------------------------------------------------------------- flattening */

static void add_collection(tg_declarative_ctx_t *cx, int type, const json_t *arr,
                           tg_declarative_item_t *parent, const char *prefix);

/* `_comment` and `_ignore` are allowed on every entity (Kong) and never stored. */
static void strip_extras(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    json_t *c = json_object_get(it->input, "_comment"),
           *ign = json_object_get(it->input, "_ignore");
    if (c && !json_is_string(c)) report_field(cx, it, "_comment", "expected a string");
    if (ign && !json_is_array(ign)) report_field(cx, it, "_ignore", "expected an array");
    json_object_del(it->input, "_comment");
    json_object_del(it->input, "_ignore");
}

/* Nested collections leave the parent's input and become items of their own. */
static void add_nested(tg_declarative_ctx_t *cx, tg_declarative_item_t *it)
{
    const tg_declarative_coll_t *c = &tg_declarative_colls[it->type];
    for (size_t i = 0; i < 2 && c->nested[i] >= 0; i++) {
        const char *name = tg_declarative_colls[c->nested[i]].name;
        const json_t *kids = json_object_get(it->src, name);
        if (!kids) continue;
        json_object_del(it->input, name);
        add_collection(cx, c->nested[i], kids, it, it->path);
    }
}

static void add_entry(tg_declarative_ctx_t *cx, int type, const json_t *el, size_t i,
                      tg_declarative_item_t *parent, const char *prefix)
{
    const char *name = tg_declarative_colls[type].name;
    if (!json_is_object(el)) {
        json_t *path = json_pack("[sI]", name, (json_int_t)i);
        report(cx, parent, path, "expected a record", "error");
        json_decref(path);
        return;
    }
    tg_declarative_item_t *it = tg_calloc(1, sizeof(*it));
    it->type = type;
    it->src = el;
    it->input = json_copy((json_t *)el);
    it->parent = parent;
    it->index = i;
    it->path =
        prefix ? tg_asprintf("%s.%s[%zu]", prefix, name, i) : tg_asprintf("%s[%zu]", name, i);
    tg_declarative_entities_add(cx, it);
    strip_extras(cx, it);
    add_nested(cx, it);
}

static void add_collection(tg_declarative_ctx_t *cx, int type, const json_t *arr,
                           tg_declarative_item_t *parent, const char *prefix)
{
    if (json_is_null(arr)) return;
    if (!json_is_array(arr)) {
        report_field(cx, parent, tg_declarative_colls[type].name, "expected an array");
        return;
    }
    size_t i;
    json_t *el;
    json_array_foreach(arr, i, el) add_entry(cx, type, el, i, parent, prefix);
}

/* ---------------------------------------------------------------- top level */

static void check_format_version(tg_declarative_ctx_t *cx, const json_t *v)
{
    if (!v) {
        report_field(cx, NULL, "_format_version", "required field missing");
    } else if (!json_is_string(v)) {
        report_field(cx, NULL, "_format_version", "expected a string (write \"3.0\" with quotes)");
    } else if (strcmp(json_string_value(v), "3.0") != 0) {
        char *m = tg_asprintf("expected one of: 3.0 (format '%s' is not loaded; convert the "
                              "file with 'deck file convert' first)",
                              json_string_value(v));
        report_field(cx, NULL, "_format_version", m);
        free(m);
    } else {
        cx->format_version = json_string_value(v);
    }
}

static void report_info(tg_declarative_ctx_t *cx, const char *a, const char *b, const char *c,
                        const char *msg, const char *level)
{
    json_t *path = json_pack("[s]", a);
    if (b) json_array_append_new(path, json_string(b));
    if (c) json_array_append_new(path, json_string(c));
    report(cx, NULL, path, msg, level);
    json_decref(path);
}

/* Checked once here: a bad tag would otherwise be reported on every entity. */
static void check_select_tags(tg_declarative_ctx_t *cx, const json_t *tags)
{
    size_t i;
    json_t *t;
    char msg[256];
    bool ok = true;
    if (!json_is_array(tags)) {
        report_info(cx, "_info", "select_tags", NULL, "expected a set", "error");
        return;
    }
    json_array_foreach(tags, i, t) {
        const char *why = !json_is_string(t) ? "expected a string"
                                              : tg_check_tag(t, msg, sizeof(msg));
        if (!why) continue;
        json_t *path = json_pack("[ssI]", "_info", "select_tags", (json_int_t)i);
        report(cx, NULL, path, why, "error");
        json_decref(path);
        ok = false;
    }
    if (ok) cx->select_tags = tags;
}

/* decK's `_info.defaults`: per-type values for fields an entity leaves out. */
static void check_defaults(tg_declarative_ctx_t *cx, const json_t *defs)
{
    const char *k, *f;
    json_t *v, *fv;
    if (!json_is_object(defs)) {
        report_info(cx, "_info", "defaults", NULL, "expected a record", "error");
        return;
    }
    json_object_foreach((json_t *)defs, k, v) {
        int type = strcmp(k, "service") == 0 ? TG_DECL_SERVICES
                   : strcmp(k, "route") == 0 ? TG_DECL_ROUTES
                                             : -1;
        if (type < 0 || !json_is_object(v)) {
            report_info(cx, "_info", "defaults", k,
                        type < 0 ? "unknown field" : "expected a record", "error");
            continue;
        }
        json_object_foreach(v, f, fv) {
            const tg_field_t *fd = tg_schema_field(tg_declarative_colls[type].schema, f);
            const char *why = !fd ? "unknown field"
                              : (fd->flags & (TG_F_AUTO | TG_F_UNIQUE)) || fd->type == TG_T_FOREIGN
                                  ? "cannot have a default"
                                  : NULL;
            if (why) report_info(cx, "_info", "defaults", k, why, "error");
        }
    }
    cx->defaults = defs;
}

static void check_info(tg_declarative_ctx_t *cx, const json_t *info)
{
    const char *k;
    json_t *v;
    if (!json_is_object(info)) {
        report_field(cx, NULL, "_info", "expected a record");
        return;
    }
    json_object_foreach((json_t *)info, k, v) {
        if (strcmp(k, "select_tags") == 0)
            check_select_tags(cx, v);
        else if (strcmp(k, "defaults") == 0)
            check_defaults(cx, v);
        else if (strcmp(k, "default_lookup_tags") == 0)
            report_info(cx, "_info", k, NULL, "ignored: lookups only see this file", "notice");
        else
            report_info(cx, "_info", k, NULL, "unknown field", "error");
    }
    cx->info = info;
}

/* The keys starting with '_': metadata, not entities. False when `k` is none of them. */
static bool check_meta(tg_declarative_ctx_t *cx, const char *k, const json_t *v)
{
    if (strcmp(k, "_format_version") == 0) {
        check_format_version(cx, v);
    } else if (strcmp(k, "_transform") == 0) {
        if (!json_is_boolean(v)) report_field(cx, NULL, k, "expected a boolean");
    } else if (strcmp(k, "_comment") == 0) {
        if (!json_is_string(v)) report_field(cx, NULL, k, "expected a string");
    } else if (strcmp(k, "_ignore") == 0) {
        if (!json_is_array(v)) report_field(cx, NULL, k, "expected an array");
    } else if (strcmp(k, "_info") == 0) {
        check_info(cx, v);
    } else if (strcmp(k, "_konnect") == 0) {
        report_info(cx, k, NULL, NULL,
                    "ignored: Konnect control plane selection has no meaning for Tollgate",
                    "notice");
    } else {
        return false;
    }
    return true;
}

static void check_top(tg_declarative_ctx_t *cx)
{
    const char *k;
    json_t *v;
    json_object_foreach(cx->root, k, v) {
        int type = tg_declarative_entities_type(k);
        if (type >= 0) {
            add_collection(cx, type, v, NULL, NULL);
        } else if (check_meta(cx, k, v)) {
            continue;
        } else if (in_list(k, unsupported)) {
            char *m = tg_asprintf("entity '%s' is not supported (Tollgate loads services, routes, "
                                  "consumers, plugins and keyauth_credentials)",
                                  k);
            report_field(cx, NULL, k, m);
            free(m);
        } else {
            report_field(cx, NULL, k, "unknown field");
        }
    }
    if (!json_object_get(cx->root, "_format_version")) check_format_version(cx, NULL);
}

/* ---------------------------------------------------------------- result */

static void build_result(tg_declarative_ctx_t *cx, tg_declarative_t *out)
{
    out->entities = json_object();
    for (int t = 0; t < TG_DECL_COUNT; t++)
        json_object_set_new(out->entities, tg_declarative_colls[t].name, json_array());
    for (size_t i = 0; i < cx->n; i++) {
        json_t *arr = json_object_get(out->entities, tg_declarative_colls[cx->items[i]->type].name);
        json_array_append(arr, cx->items[i]->entity);
    }
    out->info = cx->info ? json_deep_copy(cx->info) : NULL;
    out->format_version = tg_strdup(cx->format_version);
    out->notices = json_incref(cx->notices);
}

static int parse_tree(tg_declarative_ctx_t *cx, const char *text, size_t len)
{
    tg_declarative_yaml_error_t yerr;
    tg_declarative_yaml_t *doc = NULL;
    int rc = tg_declarative_yaml_parse(text, len, &doc, &yerr);
    if (rc) {
        json_t *e = report(cx, NULL, NULL, yerr.message, "error");
        if (e && yerr.line) {
            json_object_set_new(e, "line", json_integer(yerr.line));
            json_object_set_new(e, "column", json_integer(yerr.column));
        }
        return rc;
    }
    cx->doc = doc;
    cx->root = tg_declarative_yaml_root(doc);
    if (!json_is_object(cx->root)) {
        report(cx, NULL, NULL,
               cx->root ? "expected an object"
                        : "expected a declarative configuration (the document is empty)",
               "error");
        return -TG_ECONFIG;
    }
    return 0;
}

int tg_declarative_parse(const char *text, size_t len, const char *filename, tg_declarative_t *out,
                         json_t **errors)
{
    tg_declarative_ctx_t cx = {.file = filename};
    int rc;
    memset(out, 0, sizeof(*out));
    tg_declarative_entities_init(&cx);
    if (len > TG_DECLARATIVE_MAX_BYTES) {
        char *m =
            tg_asprintf("the configuration is larger than %zu bytes", TG_DECLARATIVE_MAX_BYTES);
        report(&cx, NULL, NULL, m, "error");
        free(m);
        rc = -TG_ETOOBIG;
    } else if ((rc = parse_tree(&cx, text, len)) == 0) {
        check_top(&cx);
        tg_declarative_entities_process(&cx);
        if (json_array_size(cx.errors) > 0)
            rc = -TG_ECONFIG;
        else
            build_result(&cx, out);
    }
    json_t *errs = tg_declarative_entities_finish(&cx);
    if (errors) *errors = rc ? errs : NULL;
    if (!errors || !rc) json_decref(errs);
    return rc;
}

/* ---------------------------------------------------------------- files */

static int file_error(json_t **errors, const char *path, int rc, const char *msg)
{
    if (errors)
        *errors = json_pack("[{s:s,s:s,s:s}]", "level", "error", "file", path, "message", msg);
    return rc;
}

static int read_all(int fd, char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t r = read(fd, buf + off, len - off);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) errno = EIO; /* the file shrank while we read it */
        if (r <= 0) return -1;
        off += (size_t)r;
    }
    return 0;
}

/* The whole file in a fresh buffer, refusing what is not a regular file or too large. */
static int slurp(const char *path, char **buf, size_t *len, json_t **errors)
{
    struct stat st;
    char msg[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(msg, sizeof(msg), "cannot read the file: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return file_error(errors, path, -TG_EIO, msg);
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > TG_DECLARATIVE_MAX_BYTES) {
        bool reg = S_ISREG(st.st_mode);
        if (reg)
            snprintf(msg, sizeof(msg), "the file is larger than %zu bytes",
                     TG_DECLARATIVE_MAX_BYTES);
        else
            snprintf(msg, sizeof(msg), "cannot read the file: not a regular file");
        close(fd);
        return file_error(errors, path, reg ? -TG_ETOOBIG : -TG_EIO, msg);
    }
    *len = (size_t)st.st_size;
    *buf = tg_malloc(*len + 1);
    int rc = read_all(fd, *buf, *len);
    if (rc != 0) snprintf(msg, sizeof(msg), "cannot read the file: %s", strerror(errno));
    close(fd);
    if (rc == 0) return 0;
    free(*buf);
    return file_error(errors, path, -TG_EIO, msg);
}

int tg_declarative_load_file(const char *path, tg_declarative_t *out, json_t **errors)
{
    char *buf = NULL;
    size_t len = 0;
    memset(out, 0, sizeof(*out));
    if (errors) *errors = NULL;
    int rc = slurp(path, &buf, &len, errors);
    if (rc) return rc;
    rc = tg_declarative_parse(buf, len, path, out, errors);
    free(buf);
    return rc;
}

void tg_declarative_free(tg_declarative_t *d)
{
    if (!d) return;
    json_decref(d->entities);
    json_decref(d->info);
    json_decref(d->notices);
    free(d->format_version);
    memset(d, 0, sizeof(*d));
}

/* ---------------------------------------------------------------- rendering */

char *tg_declarative_error_format(const json_t *e)
{
    const char *file = json_string_value(json_object_get(e, "file"));
    const char *epath = json_string_value(json_object_get(e, "entity_path"));
    const char *ename = json_string_value(json_object_get(e, "entity_name"));
    const char *field = json_string_value(json_object_get(e, "field"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    json_int_t line = json_integer_value(json_object_get(e, "line"));
    json_int_t col = json_integer_value(json_object_get(e, "column"));
    char where[64] = "";
    if (line && col)
        snprintf(where, sizeof(where), ":%lld:%lld", (long long)line, (long long)col);
    else if (line)
        snprintf(where, sizeof(where), ":%lld", (long long)line);
    char *ent = epath
                    ? (ename ? tg_asprintf("%s (%s): ", epath, ename) : tg_asprintf("%s: ", epath))
                    : tg_strdup("");
    char *out = tg_asprintf("%s%s%s%s%s%s%s", file ? file : "<input>", where, ": ", ent,
                            field ? field : "", field ? ": " : "", msg ? msg : "invalid");
    free(ent);
    return out;
}

char *tg_declarative_error_text(const json_t *errors)
{
    size_t n = json_array_size(errors);
    if (n == 0) return tg_strdup("no errors");
    char *first = tg_declarative_error_format(json_array_get(errors, 0));
    if (n == 1) return first;
    char *out = tg_asprintf("%s (and %zu more error%s)", first, n - 1, n > 2 ? "s" : "");
    free(first);
    return out;
}
