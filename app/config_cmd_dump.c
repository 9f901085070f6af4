/*
 * config_cmd_dump.c — the CP's entities as a decK-shaped declarative file.
 *
 * The file is built as a JSON tree first (entities in their file form, nested
 * where decK nests them) and then written with libyaml's emitter, so every
 * string is quoted exactly when YAML would otherwise read it as something
 * else ("123456" stays a string, `on` is not a boolean).
 *
 * What `config sync` needs to reproduce the CP exactly: every field except
 * those the CP owns (created_at, updated_at), references by name where the
 * referenced entity has one (its id otherwise), and ids — all of them by
 * default, or only for entities that have no natural key to be matched by.
 */
#include "alloc.h"
#include "config_cmd_int.h"
#include "error.h"
#include "schema.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

static const char *str(const json_t *e, const char *k)
{
    return json_string_value(json_object_get(e, k));
}

static const char *ref(const json_t *e, const char *field)
{
    return str(json_object_get(e, field), "id");
}

/* ---------------------------------------------------------------- the tree */

typedef struct dump {
    json_t *by_id[TG_CC_NTYPES];     /* id → entity in file form (where children are added) */
    json_t *ref_names[TG_CC_NTYPES]; /* id → the name references use */
    const json_t *state;
    bool with_ids;
    size_t warnings;
} dump_t;

static const char *name_key(int type)
{
    static const char *const k[TG_CC_NTYPES] = {"name", "name", "username", "key", "instance_name"};
    return k[type];
}

static const json_t *find(const dump_t *d, int type, const char *id)
{
    return id ? json_object_get(d->by_id[type], id) : NULL;
}

/* A reference as the loader reads it: the name when there is one, else the id. */
static json_t *ref_value(const dump_t *d, int type, const char *id)
{
    const char *n = str(d->ref_names[type], id);
    return json_string(n ? n : id);
}

/* id → name for every entity a reference can point at (consumers: username only, the key
 * the loader resolves). */
static void index_names(dump_t *d)
{
    for (int t = 0; t < TG_CC_NTYPES; t++) {
        const json_t *arr = json_object_get(d->state, tg_config_cmd_types[t].collection);
        size_t i;
        json_t *e;
        d->ref_names[t] = json_object();
        if (t == TG_CC_CREDENTIALS || t == TG_CC_PLUGINS) continue;
        json_array_foreach(arr, i, e)
        {
            const char *n = str(e, name_key(t));
            if (str(e, "id") && n)
                json_object_set_new(d->ref_names[t], str(e, "id"), json_string(n));
        }
    }
}

static int ref_type(const char *field)
{
    return strcmp(field, "service") == 0    ? TG_CC_SERVICES
           : strcmp(field, "route") == 0    ? TG_CC_ROUTES
           : strcmp(field, "consumer") == 0 ? TG_CC_CONSUMERS
                                            : -1;
}

static const tg_schema_t *const schemas[TG_CC_NTYPES] = {
    &tg_schema_services, &tg_schema_routes, &tg_schema_consumers, &tg_schema_keyauth_credentials,
    &tg_schema_plugins,
};

/* A null is written only where leaving the field out would bring back a non-null default. */
static bool null_matters(int type, const char *field)
{
    const tg_field_t *f = tg_schema_field(schemas[type], field);
    return f && f->dflt && strcmp(f->dflt, "null") != 0;
}

/* The entity as a file has it; `parent_field` is implied by nesting and left out. */
static json_t *file_form(dump_t *d, int type, const json_t *e, const char *parent_field)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    bool named = str(e, name_key(type)) || (type == TG_CC_CONSUMERS && str(e, "custom_id"));
    /* An unnamed plugin is matched by its scope; other unnamed entities need their id. */
    if (d->with_ids || (!named && type != TG_CC_PLUGINS))
        json_object_set(out, "id", json_object_get(e, "id"));
    json_object_foreach((json_t *)e, k, v)
    {
        if ((json_is_null(v) && !null_matters(type, k)) || !strcmp(k, "id") ||
            !strcmp(k, "created_at") || !strcmp(k, "updated_at") ||
            (parent_field && !strcmp(k, parent_field)))
            continue;
        if (!strcmp(k, "ttl")) {
            fprintf(stderr,
                    "tollgate config: warning: key-auth credential %s has a ttl; "
                    "declarative files cannot express expiry, it is dumped without one\n",
                    str(e, "id"));
            d->warnings++;
            continue;
        }
        int rt = ref_type(k);
        if (rt >= 0 && json_is_object(v) && str(v, "id")) {
            json_object_set_new(out, k, ref_value(d, rt, str(v, "id")));
            continue;
        }
        json_object_set(out, k, v);
    }
    return out;
}

/* Appends `child` to parent[key], creating the array. */
static void nest(json_t *parent, const char *key, json_t *child)
{
    json_t *arr = json_object_get(parent, key);
    if (!arr) {
        arr = json_array();
        json_object_set_new(parent, key, arr);
    }
    json_array_append_new(arr, child);
}

static void top(json_t *doc, const char *collection, json_t *entity)
{
    nest(doc, collection, entity);
}

/* The single entity a plugin is scoped to, when it has exactly one scope. */
static int single_scope(const json_t *plugin, const char **id)
{
    static const char *const refs[] = {"service", "route", "consumer"};
    int found = -1, n = 0;
    for (int i = 0; i < 3; i++)
        if (ref(plugin, refs[i])) {
            n++;
            found = ref_type(refs[i]);
            *id = ref(plugin, refs[i]);
        }
    return n == 1 ? found : -1;
}

static void warn_missing(dump_t *d, const char *what, const char *id, const char *parent)
{
    fprintf(stderr,
            "tollgate config: warning: %s %s refers to %s outside the dump (not carrying "
            "the selected tags); the file will not validate on its own\n",
            what, id, parent);
    d->warnings++;
}

static void place(dump_t *d, json_t *doc, int type, const json_t *e)
{
    const char *pid = NULL;
    int ptype = -1;
    const char *pfield = NULL, *nested_key = tg_config_cmd_types[type].collection;
    if (type == TG_CC_ROUTES && ref(e, "service")) {
        ptype = TG_CC_SERVICES;
        pid = ref(e, "service");
        pfield = "service";
    } else if (type == TG_CC_CREDENTIALS) {
        ptype = TG_CC_CONSUMERS;
        pid = ref(e, "consumer");
        pfield = "consumer";
    } else if (type == TG_CC_PLUGINS) {
        ptype = single_scope(e, &pid);
        pfield = ptype == TG_CC_SERVICES ? "service" : ptype == TG_CC_ROUTES ? "route" : "consumer";
    }
    json_t *parent = ptype >= 0 ? (json_t *)find(d, ptype, pid) : NULL;
    if (ptype >= 0 && !parent && (type != TG_CC_PLUGINS || pid))
        warn_missing(d, tg_config_cmd_types[type].singular, str(e, "id"),
                     tg_config_cmd_types[ptype].singular);
    json_t *f = file_form(d, type, e, parent ? pfield : NULL);
    if (type != TG_CC_PLUGINS && type != TG_CC_CREDENTIALS && str(e, "id"))
        json_object_set(d->by_id[type], str(e, "id"), f);
    if (parent)
        nest(parent, nested_key, f);
    else
        top(doc, tg_config_cmd_types[type].collection, f);
}

/* Sorted by name (id when unnamed) so that two dumps of one config are the same file. */
static const char *sort_key(const json_t *e)
{
    static const char *const keys[] = {"name",          "username", "custom_id",
                                       "instance_name", "key",      "id"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (str(e, keys[i])) return str(e, keys[i]);
    return "";
}

static int by_key(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int r = strcmp(sort_key(x), sort_key(y));
    return r ? r : strcmp(str(x, "id") ? str(x, "id") : "", str(y, "id") ? str(y, "id") : "");
}

static json_t *build(const json_t *state, const json_t *select_tags, bool with_ids,
                     size_t *warnings)
{
    dump_t d = {.state = state, .with_ids = with_ids};
    json_t *doc = json_object();
    json_object_set_new(doc, "_format_version", json_string("3.0"));
    if (json_array_size(select_tags))
        json_object_set_new(doc, "_info", json_pack("{s:O}", "select_tags", select_tags));
    for (int t = 0; t < TG_CC_NTYPES; t++)
        d.by_id[t] = json_object();
    index_names(&d);
    for (int t = 0; t < TG_CC_NTYPES; t++) {
        const json_t *arr = json_object_get(state, tg_config_cmd_types[t].collection);
        size_t n = json_array_size(arr);
        json_t **v = tg_calloc(n + 1, sizeof(*v));
        for (size_t i = 0; i < n; i++)
            v[i] = json_array_get(arr, i);
        qsort(v, n, sizeof(*v), by_key);
        for (size_t i = 0; i < n; i++)
            place(&d, doc, t, v[i]);
        free(v);
    }
    for (int t = 0; t < TG_CC_NTYPES; t++) {
        json_decref(d.by_id[t]);
        json_decref(d.ref_names[t]);
    }
    *warnings = d.warnings;
    return doc;
}

/* ---------------------------------------------------------------- YAML */

/*
 * Would a YAML reader take this plain scalar for anything but this string? Then it is quoted:
 * the 1.2 core schema's null, booleans and numbers, and what YAML 1.1 readers (still common)
 * also resolve: yes/no/on/off, 0x/0o numbers, 1_000, 12:30 and dates, all made of digits and
 * the separators [-+_.:]. A UUID with letters stays plain.
 */
static bool needs_quotes(const char *s)
{
    static const char *const words[] = {"null", "~", "true", "false", "yes",   "no",   "on", "off",
                                        "y",    "n", ".inf", "-.inf", "+.inf", ".nan", NULL};
    if (!*s) return true;
    for (size_t i = 0; words[i]; i++)
        if (strcasecmp(s, words[i]) == 0) return true;
    char *end;
    (void)strtod(s, &end);
    if (*end == '\0') return true;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'X' || s[1] == 'O')) return true;
    const char *p = s + (*s == '-' || *s == '+');
    if (*p < '0' || *p > '9') return false;
    return strspn(p, "0123456789-+_.:eE") == strlen(p);
}

typedef struct emit {
    yaml_emitter_t em;
    bool failed;
} emit_t;

static void event(emit_t *e, yaml_event_t *ev)
{
    if (!e->failed && !yaml_emitter_emit(&e->em, ev)) e->failed = true;
}

static void scalar(emit_t *e, const char *text, bool quoted)
{
    yaml_event_t ev;
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1, 1,
                                 quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE);
    event(e, &ev);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void emit_value(emit_t *e, const json_t *v, bool sort_keys)
{
    yaml_event_t ev;
    char num[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        const char **keys = tg_calloc(n + 1, sizeof(*keys));
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) keys[i++] = k;
        if (sort_keys) qsort(keys, n, sizeof(*keys), by_name);
        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
        event(e, &ev);
        for (i = 0; i < n; i++) {
            scalar(e, keys[i], needs_quotes(keys[i]));
            emit_value(e, json_object_get(v, keys[i]), true);
        }
        free(keys);
        yaml_mapping_end_event_initialize(&ev);
        event(e, &ev);
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
        event(e, &ev);
        json_array_foreach(v, i, x) emit_value(e, x, true);
        yaml_sequence_end_event_initialize(&ev);
        event(e, &ev);
        break;
    }
    case JSON_STRING:
        scalar(e, json_string_value(v), needs_quotes(json_string_value(v)));
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        scalar(e, num, false);
        break;
    case JSON_REAL:
        snprintf(num, sizeof(num), "%.17g", json_real_value(v));
        if (!strpbrk(num, ".eEn")) strcat(num, ".0"); /* stays a float when read back */
        scalar(e, num, false);
        break;
    case JSON_TRUE:
        scalar(e, "true", false);
        break;
    case JSON_FALSE:
        scalar(e, "false", false);
        break;
    default:
        scalar(e, "null", false);
    }
}

static int write_yaml(const json_t *doc, FILE *out, char *err, size_t errlen)
{
    emit_t e = {0};
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&e.em)) {
        snprintf(err, errlen, "cannot initialise the YAML writer");
        return -TG_ENOMEM;
    }
    yaml_emitter_set_output_file(&e.em, out);
    yaml_emitter_set_unicode(&e.em, 1);
    yaml_emitter_set_width(&e.em, -1); /* long values stay on one line */
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    event(&e, &ev);
    yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
    event(&e, &ev);
    /* Top level in the order built (_format_version first); entities' keys sorted as decK does. */
    yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
    event(&e, &ev);
    static const char *const order[] = {
        "_format_version",     "_info", "services", "routes", "consumers", "plugins",
        "keyauth_credentials", NULL};
    for (size_t i = 0; order[i]; i++) {
        const json_t *v = json_object_get(doc, order[i]);
        if (!v) continue;
        scalar(&e, order[i], false);
        if (i == 0)
            scalar(&e, json_string_value(v), true);
        else
            emit_value(&e, v, true);
    }
    yaml_mapping_end_event_initialize(&ev);
    event(&e, &ev);
    yaml_document_end_event_initialize(&ev, 1);
    event(&e, &ev);
    yaml_stream_end_event_initialize(&ev);
    event(&e, &ev);
    bool failed = e.failed || !yaml_emitter_flush(&e.em);
    if (failed)
        snprintf(err, errlen, "writing YAML: %s", e.em.problem ? e.em.problem : "output error");
    yaml_emitter_delete(&e.em);
    return failed ? -TG_EIO : 0;
}

int tg_config_cmd_dump_write(const json_t *state, const json_t *select_tags, bool with_ids,
                             FILE *out, char *err, size_t errlen)
{
    size_t warnings = 0;
    json_t *doc = build(state, select_tags, with_ids, &warnings);
    int rc = write_yaml(doc, out, err, errlen);
    json_decref(doc);
    return rc;
}
