/*
 * config_cmd_plan.c — what `config diff` shows and `config sync` does: the
 * control plane's entities within the selection, matched with the file's,
 * turned into an ordered list of creates, updates and deletes.
 *
 * Matching follows decK: an entity whose id the file wrote is that id; one
 * whose id the loader derived is found by its natural key (name, username or
 * custom_id, instance_name or plugin scope, credential key), so a file
 * without ids applies to entities created through the Admin API. When a file
 * entity matches a CP entity with another id, references to it are rewritten
 * to the CP's id before its children are compared.
 *
 * Order of application: deletes children first (plugins, credentials,
 * consumers, routes, then the services nothing kept still points at), then
 * creates and updates parents first, then the remaining service deletes (a
 * service whose routes move to another service can only go after they
 * moved). Every write is a PUT of the whole entity by id (Kong's upsert), so
 * an update leaves exactly the file's fields and a create keeps the file's id.
 */
#include "alloc.h"
#include "config_cmd_int.h"
#include "error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_CREATE, OP_UPDATE, OP_DELETE };

typedef struct change {
    int type;
    enum op op;
    json_t *desired; /* the body to PUT (create, update) */
    json_t *current; /* the CP's entity (update, delete) */
} change_t;

struct tg_config_cmd_plan {
    change_t *ch;
    size_t n, cap;
    json_t *labels; /* entity id → how a person calls it, for references in messages */
    size_t done[TG_CC_NTYPES][3];
};

/* Fields the CP owns: never compared, never sent. */
static const char *const server_fields[] = {"created_at", "updated_at", "ttl", NULL};

static bool is_server_field(const char *k)
{
    for (size_t i = 0; server_fields[i]; i++)
        if (strcmp(k, server_fields[i]) == 0) return true;
    return false;
}

static const char *str(const json_t *e, const char *k)
{
    return json_string_value(json_object_get(e, k));
}

static const char *ref(const json_t *e, const char *field)
{
    return str(json_object_get(e, field), "id");
}

/* ---------------------------------------------------------------- comparison */

static bool same(const json_t *a, const json_t *b, bool as_set);

static bool absent(const json_t *v)
{
    return !v || json_is_null(v);
}

static int cmp_json(const void *pa, const void *pb)
{
    char *a = json_dumps(*(json_t *const *)pa, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *b = json_dumps(*(json_t *const *)pb, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    int r = strcmp(a ? a : "", b ? b : "");
    free(a);
    free(b);
    return r;
}

/* Tags are a set: the order the CP stores them in is not a change. */
static bool same_set(const json_t *a, const json_t *b)
{
    size_t n = json_array_size(a);
    if (n != json_array_size(b)) return false;
    json_t **x = tg_calloc(n + 1, sizeof(*x)), **y = tg_calloc(n + 1, sizeof(*y));
    for (size_t i = 0; i < n; i++) {
        x[i] = json_array_get(a, i);
        y[i] = json_array_get(b, i);
    }
    qsort(x, n, sizeof(*x), cmp_json);
    qsort(y, n, sizeof(*y), cmp_json);
    bool eq = true;
    for (size_t i = 0; i < n && eq; i++)
        eq = same(x[i], y[i], false);
    free(x);
    free(y);
    return eq;
}

/* Structural equality where null equals absent and 5 equals 5.0 (a number field may come back
 * either way). */
static bool same(const json_t *a, const json_t *b, bool as_set)
{
    if (absent(a) || absent(b)) return absent(a) && absent(b);
    if (json_is_number(a) && json_is_number(b))
        return fabs(json_number_value(a) - json_number_value(b)) < 1e-9;
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_array(a)) {
        if (as_set) return same_set(a, b);
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i), false)) return false;
        return true;
    }
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k,
                            v) if (!same(v, json_object_get(b, k), false)) return false;
        json_object_foreach((json_t *)b, k,
                            v) if (!json_object_get(a, k) && !absent(v)) return false;
        return true;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

static bool same_entity(const json_t *desired, const json_t *current)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)desired, k, v)
    {
        if (is_server_field(k)) continue;
        if (!same(v, json_object_get(current, k), strcmp(k, "tags") == 0)) return false;
    }
    json_object_foreach((json_t *)current, k, v)
    {
        if (is_server_field(k) || json_object_get(desired, k)) continue;
        if (!absent(v)) return false;
    }
    return true;
}

/* ---------------------------------------------------------------- labels */

static char *plain_label(int type, const json_t *e)
{
    static const char *const keys[TG_CC_NTYPES][2] = {{"name", NULL},
                                                      {"name", NULL},
                                                      {"username", "custom_id"},
                                                      {NULL, NULL},
                                                      {"instance_name", NULL}};
    for (size_t i = 0; i < 2 && keys[type][i]; i++)
        if (str(e, keys[type][i])) return tg_strdup(str(e, keys[type][i]));
    return tg_strdup(str(e, "id") ? str(e, "id") : "?");
}

static const char *label_of(const tg_config_cmd_plan_t *p, const char *id)
{
    const char *l = id ? str(p->labels, id) : NULL;
    return l ? l : id;
}

/* "service httpbin-service", "plugin rate-limiting (rl1) on consumer alice". */
static char *describe(const tg_config_cmd_plan_t *p, int type, const json_t *e)
{
    char *own = plain_label(type, e);
    char *out;
    if (type == TG_CC_CREDENTIALS) {
        out = tg_asprintf("key-auth credential %s of consumer %s", str(e, "id"),
                          label_of(p, ref(e, "consumer")));
    } else if (type == TG_CC_PLUGINS) {
        char *scope = tg_strdup("");
        static const char *const refs[] = {"service", "route", "consumer"};
        for (size_t i = 0; i < 3; i++) {
            if (!ref(e, refs[i])) continue;
            char *next = tg_asprintf("%s%s%s %s", scope, *scope ? ", " : " on ", refs[i],
                                     label_of(p, ref(e, refs[i])));
            free(scope);
            scope = next;
        }
        const char *inst = str(e, "instance_name");
        out = tg_asprintf("plugin %s%s%s%s%s", str(e, "name") ? str(e, "name") : "?",
                          inst ? " (" : "", inst ? inst : "", inst ? ")" : "",
                          *scope ? scope : " (global)");
        free(scope);
    } else {
        out = tg_asprintf("%s %s", tg_config_cmd_types[type].singular, own);
    }
    free(own);
    return out;
}

static void learn_labels(tg_config_cmd_plan_t *p, int type, const json_t *list)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (!str(e, "id")) continue;
        char *l = plain_label(type, e);
        json_object_set_new(p->labels, str(e, "id"), json_string(l));
        free(l);
    }
}

/* ---------------------------------------------------------------- matching */

static void add(tg_config_cmd_plan_t *p, int type, enum op op, json_t *desired,
                const json_t *current)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->ch = tg_realloc(p->ch, p->cap * sizeof(*p->ch));
    }
    p->ch[p->n++] = (change_t){type, op, desired, current ? json_incref((json_t *)current) : NULL};
}

/* The CP's entities of one type, indexed by id and by each natural key. */
typedef struct index {
    json_t *by_id, *by_key, *taken;
} index_t;

/* Natural keys as "<kind>:<value>"; a plugin without instance_name is unique by its scope. */
static size_t natural_keys(int type, const json_t *e, char *keys[2])
{
    size_t n = 0;
    switch (type) {
    case TG_CC_SERVICES:
    case TG_CC_ROUTES:
        if (str(e, "name")) keys[n++] = tg_asprintf("name:%s", str(e, "name"));
        break;
    case TG_CC_CONSUMERS:
        if (str(e, "username")) keys[n++] = tg_asprintf("username:%s", str(e, "username"));
        if (str(e, "custom_id")) keys[n++] = tg_asprintf("custom_id:%s", str(e, "custom_id"));
        break;
    case TG_CC_CREDENTIALS:
        if (str(e, "key")) keys[n++] = tg_asprintf("key:%s", str(e, "key"));
        break;
    default:
        if (str(e, "instance_name"))
            keys[n++] = tg_asprintf("instance:%s", str(e, "instance_name"));
        if (str(e, "name"))
            keys[n++] = tg_asprintf("scope:%s|%s|%s|%s", str(e, "name"),
                                    ref(e, "route") ? ref(e, "route") : "",
                                    ref(e, "service") ? ref(e, "service") : "",
                                    ref(e, "consumer") ? ref(e, "consumer") : "");
    }
    return n;
}

static void index_build(index_t *ix, int type, const json_t *list)
{
    size_t i;
    json_t *e;
    ix->by_id = json_object();
    ix->by_key = json_object();
    ix->taken = json_object();
    json_array_foreach(list, i, e)
    {
        if (str(e, "id")) json_object_set(ix->by_id, str(e, "id"), e);
        char *keys[2];
        size_t n = natural_keys(type, e, keys);
        for (size_t k = 0; k < n; k++) {
            json_object_set(ix->by_key, keys[k], e);
            free(keys[k]);
        }
    }
}

static void index_free(index_t *ix)
{
    json_decref(ix->by_id);
    json_decref(ix->by_key);
    json_decref(ix->taken);
}

static const json_t *find_match(index_t *ix, int type, const json_t *d, bool id_written)
{
    const char *id = str(d, "id");
    const json_t *m = id ? json_object_get(ix->by_id, id) : NULL;
    if (!m && !id_written) {
        char *keys[2];
        size_t n = natural_keys(type, d, keys);
        for (size_t k = 0; k < n; k++) {
            if (!m) m = json_object_get(ix->by_key, keys[k]);
            free(keys[k]);
        }
    }
    /* Two file entities cannot claim one CP entity: the second becomes a create. */
    if (m && json_object_get(ix->taken, str(m, "id"))) return NULL;
    if (m) json_object_set_new(ix->taken, str(m, "id"), json_true());
    return m;
}

/* The file's references rewritten to the ids its entities have on the CP. */
static void remap_refs(json_t *d, const json_t *idmap)
{
    static const char *const refs[] = {"service", "route", "consumer"};
    for (size_t i = 0; i < 3; i++) {
        json_t *r = json_object_get(d, refs[i]);
        const char *to = ref(d, refs[i]) ? str(idmap, ref(d, refs[i])) : NULL;
        if (to) json_object_set_new(r, "id", json_string(to));
    }
}

static json_t *desired_body(const json_t *e, const json_t *idmap)
{
    json_t *d = json_deep_copy(e);
    for (size_t i = 0; server_fields[i]; i++)
        json_object_del(d, server_fields[i]);
    remap_refs(d, idmap);
    return d;
}

static void plan_type(tg_config_cmd_plan_t *p, int type, const json_t *want, const json_t *have,
                      json_t *idmap, const json_t *ids, const json_t *keys, change_t **dels,
                      size_t *ndels)
{
    index_t ix;
    size_t i;
    json_t *e;
    index_build(&ix, type, have);
    json_array_foreach(want, i, e)
    {
        json_t *d = desired_body(e, idmap);
        const char *fid = str(e, "id");
        const json_t *m = find_match(&ix, type, d, fid && json_object_get(ids, fid));
        if (!m) {
            add(p, type, OP_CREATE, d, NULL);
            continue;
        }
        json_object_set_new(idmap, fid, json_string(str(m, "id")));
        json_object_set_new(d, "id", json_string(str(m, "id")));
        /* A key the loader generated (none in the file) must not rotate the CP's key. */
        if (type == TG_CC_CREDENTIALS && str(d, "key") && !json_object_get(keys, str(d, "key")) &&
            str(m, "key"))
            json_object_set_new(d, "key", json_string(str(m, "key")));
        if (same_entity(d, m))
            json_decref(d);
        else
            add(p, type, OP_UPDATE, d, m);
    }
    json_array_foreach(have, i, e)
    {
        if (json_object_get(ix.taken, str(e, "id"))) continue;
        *dels = tg_realloc(*dels, (*ndels + 1) * sizeof(**dels));
        (*dels)[(*ndels)++] = (change_t){type, OP_DELETE, NULL, json_incref(e)};
    }
    index_free(&ix);
}

/*
 * The ids of the services that a route staying on the CP points at now: deleting one of them
 * has to wait until the upserts moved its routes. One pass over the routes.
 */
static json_t *services_still_used(const json_t *routes, const change_t *dels, size_t ndels)
{
    json_t *deleted = json_object(), *used = json_object(), *r;
    size_t i;
    for (size_t k = 0; k < ndels; k++)
        if (dels[k].type == TG_CC_ROUTES && str(dels[k].current, "id"))
            json_object_set_new(deleted, str(dels[k].current, "id"), json_true());
    json_array_foreach(routes, i, r)
    {
        const char *s = ref(r, "service"), *id = str(r, "id");
        if (s && !(id && json_object_get(deleted, id))) json_object_set_new(used, s, json_true());
    }
    json_decref(deleted);
    return used;
}

tg_config_cmd_plan_t *tg_config_cmd_plan_build(const json_t *desired, const json_t *state,
                                               const json_t *explicit_ids,
                                               const json_t *explicit_keys)
{
    tg_config_cmd_plan_t *p = tg_calloc(1, sizeof(*p));
    p->labels = json_object();
    json_t *idmap = json_object();
    change_t *dels = NULL;
    size_t ndels = 0;
    for (int t = 0; t < TG_CC_NTYPES; t++) {
        learn_labels(p, t, json_object_get(state, tg_config_cmd_types[t].collection));
        learn_labels(p, t, json_object_get(desired, tg_config_cmd_types[t].collection));
    }
    for (int t = 0; t < TG_CC_NTYPES; t++)
        plan_type(p, t, json_object_get(desired, tg_config_cmd_types[t].collection),
                  json_object_get(state, tg_config_cmd_types[t].collection), idmap, explicit_ids,
                  explicit_keys, &dels, &ndels);
    /* p->ch holds the upserts parents-first; deletes go around them, children first. */
    change_t *ups = p->ch;
    size_t nups = p->n;
    p->ch = NULL;
    p->n = p->cap = 0;
    json_t *used = services_still_used(json_object_get(state, "routes"), dels, ndels);
    bool *late = tg_calloc(ndels + 1, sizeof(*late));
    for (int t = TG_CC_NTYPES - 1; t >= 0; t--)
        for (size_t k = 0; k < ndels; k++) {
            if (dels[k].type != t) continue;
            late[k] = t == TG_CC_SERVICES && json_object_get(used, str(dels[k].current, "id"));
            if (!late[k]) add(p, t, OP_DELETE, NULL, dels[k].current);
        }
    for (size_t k = 0; k < nups; k++)
        add(p, ups[k].type, ups[k].op, ups[k].desired, ups[k].current);
    for (size_t k = 0; k < ndels; k++)
        if (late[k]) add(p, dels[k].type, OP_DELETE, NULL, dels[k].current);
    for (size_t k = 0; k < nups; k++)
        json_decref(ups[k].current);
    for (size_t k = 0; k < ndels; k++)
        json_decref(dels[k].current);
    free(ups);
    free(dels);
    free(late);
    json_decref(used);
    json_decref(idmap);
    return p;
}

void tg_config_cmd_plan_free(tg_config_cmd_plan_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) {
        json_decref(p->ch[i].desired);
        json_decref(p->ch[i].current);
    }
    free(p->ch);
    json_decref(p->labels);
    free(p);
}

size_t tg_config_cmd_plan_changes(const tg_config_cmd_plan_t *p)
{
    return p->n;
}

/* ---------------------------------------------------------------- printing */

static const char *const verbs[] = {"creating", "updating", "deleting"};

/* A value for a person; keys are secrets even though the file holds them. */
static char *show(const tg_config_cmd_plan_t *p, const char *field, const json_t *v)
{
    if (absent(v)) return tg_strdup("null");
    if (strcmp(field, "key") == 0) return tg_strdup("(secret)");
    if (json_is_object(v) && json_object_size(v) == 1 && str(v, "id")) /* a reference */
        return tg_asprintf("%s %s", field, label_of(p, str(v, "id")));
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s && strlen(s) > 400) {
        s[397] = s[398] = s[399] = '.';
        s[400] = '\0';
    }
    return s ? s : tg_strdup("?");
}

static void print_fields(const tg_config_cmd_plan_t *p, FILE *out, const char *prefix,
                         const json_t *want, const json_t *have, bool top)
{
    const char *k;
    json_t *v;
    json_t *keys = json_object();
    json_object_foreach((json_t *)want, k, v) json_object_set_new(keys, k, json_true());
    json_object_foreach((json_t *)have, k, v) json_object_set_new(keys, k, json_true());
    json_object_foreach(keys, k, v)
    {
        if (top && (is_server_field(k) || strcmp(k, "id") == 0)) continue;
        const json_t *a = json_object_get(want, k), *b = json_object_get(have, k);
        if (same(a, b, top && strcmp(k, "tags") == 0)) continue;
        char *path = tg_asprintf("%s%s%s", prefix, *prefix ? "." : "", k);
        if (json_is_object(a) && json_is_object(b)) {
            print_fields(p, out, path, a, b, false);
        } else if (!have) {
            char *sa = show(p, k, a);
            fprintf(out, "    + %s: %s\n", path, sa);
            free(sa);
        } else {
            char *sa = show(p, k, a), *sb = show(p, k, b);
            fprintf(out, "    ~ %s: %s -> %s\n", path, sb, sa);
            free(sa);
            free(sb);
        }
        free(path);
    }
    json_decref(keys);
}

static void print_summary(FILE *out, const size_t counts[TG_CC_NTYPES][3], const char *title)
{
    size_t tot[3] = {0, 0, 0};
    fprintf(out, "%s:\n", title);
    for (int t = 0; t < TG_CC_NTYPES; t++) {
        fprintf(out, "  %-20s created %zu, updated %zu, deleted %zu\n",
                tg_config_cmd_types[t].collection, counts[t][0], counts[t][1], counts[t][2]);
        for (int o = 0; o < 3; o++)
            tot[o] += counts[t][o];
    }
    fprintf(out, "  %-20s created %zu, updated %zu, deleted %zu\n", "total", tot[0], tot[1],
            tot[2]);
}

void tg_config_cmd_plan_print(const tg_config_cmd_plan_t *p, FILE *out)
{
    size_t counts[TG_CC_NTYPES][3] = {{0}};
    for (size_t i = 0; i < p->n; i++) {
        const change_t *c = &p->ch[i];
        char *what = describe(p, c->type, c->desired ? c->desired : c->current);
        fprintf(out, "%s %s\n", verbs[c->op], what);
        if (c->op != OP_DELETE) print_fields(p, out, "", c->desired, c->current, true);
        free(what);
        counts[c->type][c->op]++;
    }
    if (p->n == 0) fprintf(out, "No changes: the control plane matches the file.\n");
    print_summary(out, (const size_t(*)[3])counts, "Summary (would apply)");
}

/* ---------------------------------------------------------------- applying */

int tg_config_cmd_plan_apply(tg_config_cmd_plan_t *p, tg_config_cmd_admin_t *a, FILE *out)
{
    int rc = 0;
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        change_t *c = &p->ch[i];
        const json_t *e = c->desired ? c->desired : c->current;
        char *what = describe(p, c->type, e);
        char *path = tg_asprintf("/%s/%s", tg_config_cmd_types[c->type].admin_path, str(e, "id"));
        const char *method = c->op == OP_DELETE ? "DELETE" : "PUT";
        fprintf(out, "%s %s\n", verbs[c->op], what);
        fflush(out);
        int status = 0;
        json_t *resp = NULL;
        char err[1024];
        rc =
            tg_config_cmd_admin_call(a, method, path, c->desired, &status, &resp, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "tollgate config: error %s %s: %s\n", verbs[c->op], what, err);
        } else if (c->op == OP_DELETE ? (status != 204 && status != 200 && status != 404)
                                      : (status != 200 && status != 201)) {
            char *why = tg_config_cmd_admin_error(status, resp);
            fprintf(stderr, "tollgate config: error %s %s: %s %s%s: %s\n", verbs[c->op], what,
                    method, a->url, path, why);
            free(why);
            rc = -TG_EIO;
        } else {
            p->done[c->type][c->op]++;
        }
        json_decref(resp);
        free(path);
        free(what);
    }
    if (rc) fprintf(out, "Stopped at the first error; the changes above it were applied.\n");
    print_summary(out, (const size_t(*)[3])p->done, "Summary");
    return rc;
}
