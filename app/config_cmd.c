/*
 * config_cmd.c — `tollgate config validate|diff|sync|dump`: arguments, the
 * file (loaded and validated by lib/declarative.c, the same loader the DB-less
 * data plane uses), and the verbs.
 *
 * A file is validated completely before anything is sent: a bad file changes
 * nothing on the control plane. Output: changes and summaries on stdout,
 * errors, notices and warnings on stderr.
 */
#include "config_cmd.h"
#include "alloc.h"
#include "config_cmd_int.h"
#include "declarative.h"
#include "declarative_yaml.h"
#include "error.h"
#include "validators.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_ADMIN_URL "http://localhost:8001"

typedef struct args {
    const char *verb;
    const char *file;
    const char *admin_url, *admin_token, *ca_cert;
    bool skip_verify, with_ids;
    json_t *select_tags; /* from --select-tag, in order; empty when none */
} args_t;

static void usage(const char *verb)
{
    fprintf(stderr,
            "usage: tollgate config %s FILE [--admin-url URL] [--admin-token T] "
            "[--select-tag TAG]... [--ca-cert FILE | --tls-skip-verify]%s\n"
            "  --admin-url    the control plane's Admin API (default $TOLLGATE_ADMIN_URL or %s)\n"
            "  --admin-token  sent as 'Authorization: Bearer T' (default $TOLLGATE_ADMIN_TOKEN)\n"
            "  --select-tag   manage only entities carrying every given tag (like the file's\n"
            "                 _info.select_tags; both may be given only if they agree)\n",
            verb, strcmp(verb, "dump") == 0 ? " [--without-ids]" : "", DEFAULT_ADMIN_URL);
    if (strcmp(verb, "dump") == 0)
        fprintf(stderr, "  FILE           where to write the YAML ('-' for standard output)\n"
                        "  --without-ids  keep ids only for entities that have no name\n");
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static int parse_args(const char *verb, int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->verb = verb;
    a->admin_url = env_or("TOLLGATE_ADMIN_URL", DEFAULT_ADMIN_URL);
    a->admin_token = env_or("TOLLGATE_ADMIN_TOKEN", NULL);
    a->with_ids = true;
    a->select_tags = json_array();
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(verb);
            return 1;
        } else if (!strcmp(o, "--admin-url") && has_value) {
            a->admin_url = argv[++i];
        } else if (!strcmp(o, "--admin-token") && has_value) {
            a->admin_token = argv[++i];
        } else if (!strcmp(o, "--ca-cert") && has_value) {
            a->ca_cert = argv[++i];
        } else if (!strcmp(o, "--select-tag") && has_value) {
            json_t *t = json_string(argv[++i]);
            char msg[256];
            const char *why = t ? tg_check_tag(t, msg, sizeof(msg)) : "expected valid UTF-8";
            if (why) {
                fprintf(stderr, "tollgate config: --select-tag '%s': %s\n", argv[i], why);
                json_decref(t);
                return -TG_EINVAL;
            }
            json_array_append_new(a->select_tags, t);
        } else if (!strcmp(o, "--tls-skip-verify")) {
            a->skip_verify = true;
        } else if (!strcmp(o, "--without-ids") && !strcmp(verb, "dump")) {
            a->with_ids = false;
        } else if (o[0] == '-' && o[1] != '\0') {
            fprintf(stderr, "tollgate config %s: unknown option or missing value: %s\n", verb, o);
            usage(verb);
            return -TG_EINVAL;
        } else if (a->file) {
            fprintf(stderr, "tollgate config %s: one FILE only (got '%s' and '%s')\n", verb,
                    a->file, o);
            return -TG_EINVAL;
        } else {
            a->file = o;
        }
    }
    if (!a->file) {
        fprintf(stderr, "tollgate config %s: FILE is required\n", verb);
        usage(verb);
        return -TG_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------- the file */

typedef struct loaded {
    tg_declarative_t decl;
    json_t *ids, *keys; /* ids and credential keys the file writes (vs. derived or generated) */
    json_t *select_tags;
} loaded_t;

static char *read_text(const char *path, size_t *len)
{
    FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tollgate config: %s: cannot read the file: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 65536, n = 0;
    char *buf = tg_malloc(cap + 1);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n > TG_DECLARATIVE_MAX_BYTES) break;
        if (n == cap) buf = tg_realloc(buf, (cap *= 2) + 1);
    }
    bool bad = ferror(f) || n > TG_DECLARATIVE_MAX_BYTES;
    if (f != stdin) fclose(f);
    if (bad) {
        fprintf(stderr, "tollgate config: %s: %s\n", path,
                n > TG_DECLARATIVE_MAX_BYTES ? "the file is too large" : "read error");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Every "id" and "key" string the file writes, wherever it is (so a derived id or a
 * generated key can be told from one the user chose). */
static void collect_written(const json_t *v, json_t *ids, json_t *keys)
{
    const char *k;
    json_t *x;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, x)
        {
            if (json_is_string(x) && !strcmp(k, "id"))
                json_object_set_new(ids, json_string_value(x), json_true());
            if (json_is_string(x) && !strcmp(k, "key"))
                json_object_set_new(keys, json_string_value(x), json_true());
            collect_written(x, ids, keys);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) collect_written(x, ids, keys);
    }
}

static void print_entries(const json_t *entries, const char *level)
{
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        char *line = tg_declarative_error_format(e);
        fprintf(stderr, "%s: %s\n", level, line);
        free(line);
    }
}

static bool same_tags(const json_t *a, const json_t *b)
{
    size_t i, j;
    json_t *x, *y;
    json_array_foreach(a, i, x)
    {
        bool found = false;
        json_array_foreach(b, j, y) found |= json_equal(x, y);
        if (!found) return false;
    }
    json_array_foreach(b, i, x)
    {
        bool found = false;
        json_array_foreach(a, j, y) found |= json_equal(x, y);
        if (!found) return false;
    }
    return true;
}

/* Tags from --select-tag are given to every entity, as the file's would be. */
static void add_tags(json_t *entities, const json_t *tags)
{
    const char *coll;
    json_t *arr, *e, *t;
    size_t i, j;
    json_object_foreach(entities, coll, arr) json_array_foreach(arr, i, e)
    {
        json_t *have = json_object_get(e, "tags");
        json_t *merged = json_is_array(have) ? json_copy(have) : json_array();
        json_array_foreach(tags, j, t)
        {
            bool dup = false;
            size_t k;
            json_t *h;
            json_array_foreach(merged, k, h) dup |= json_equal(h, t);
            if (!dup) json_array_append(merged, t);
        }
        json_object_set_new(e, "tags", merged);
    }
}

static void unload(loaded_t *l);

static int load(const args_t *a, loaded_t *l)
{
    size_t len = 0;
    memset(l, 0, sizeof(*l));
    char *text = read_text(a->file, &len);
    if (!text) return -TG_EIO;
    json_t *errors = NULL;
    const char *label = !strcmp(a->file, "-") ? "<stdin>" : a->file;
    int rc = tg_declarative_parse(text, len, label, &l->decl, &errors);
    if (rc) {
        print_entries(errors, "error");
        fprintf(stderr, "tollgate config: %s is not valid (%zu error%s); nothing was changed\n",
                label, json_array_size(errors), json_array_size(errors) == 1 ? "" : "s");
        json_decref(errors);
        free(text);
        return rc;
    }
    print_entries(l->decl.notices, "notice");
    l->ids = json_object();
    l->keys = json_object();
    tg_declarative_yaml_t *doc = NULL;
    tg_declarative_yaml_error_t yerr;
    if (tg_declarative_yaml_parse(text, len, &doc, &yerr) == 0)
        collect_written(tg_declarative_yaml_root(doc), l->ids, l->keys);
    tg_declarative_yaml_free(doc);
    free(text);
    const json_t *file_tags = json_object_get(l->decl.info, "select_tags");
    if (json_array_size(file_tags) && json_array_size(a->select_tags) &&
        !same_tags(file_tags, a->select_tags)) {
        fprintf(stderr,
                "tollgate config: %s: _info.select_tags and --select-tag differ; give the "
                "same tags or only one of them\n",
                label);
        unload(l);
        return -TG_EINVAL;
    }
    if (json_array_size(file_tags)) {
        l->select_tags = json_incref((json_t *)file_tags);
    } else {
        l->select_tags = json_incref(a->select_tags);
        add_tags(l->decl.entities, a->select_tags);
    }
    return 0;
}

static void unload(loaded_t *l)
{
    tg_declarative_free(&l->decl);
    json_decref(l->ids);
    json_decref(l->keys);
    json_decref(l->select_tags);
}

/* ---------------------------------------------------------------- the control plane */

/* GET / first: a wrong URL or token is one clear message, not one per entity type. */
static int connect_cp(const args_t *a, tg_config_cmd_admin_t *admin)
{
    char err[1024];
    int rc = tg_config_cmd_admin_open(admin, a->admin_url, a->admin_token, a->ca_cert,
                                      a->skip_verify, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "tollgate config: %s\n", err);
        return rc;
    }
    int status = 0;
    json_t *resp = NULL;
    /* The server's root, also when the URL addresses a control plane below a path prefix. */
    char *base = admin->base;
    admin->base = "";
    rc = tg_config_cmd_admin_call(admin, "GET", "/", NULL, &status, &resp, err, sizeof(err));
    admin->base = base;
    if (rc) {
        fprintf(stderr, "tollgate config: cannot reach the Admin API: %s\n", err);
    } else if (status != 200 || !json_is_string(json_object_get(resp, "version"))) {
        char *why = tg_config_cmd_admin_error(status, resp);
        fprintf(stderr, "tollgate config: %s does not answer as an Admin API (GET / -> %s)%s\n",
                a->admin_url, why,
                status == 401 ? "; check --admin-token or $TOLLGATE_ADMIN_TOKEN" : "");
        free(why);
        rc = -TG_EIO;
    }
    json_decref(resp);
    if (rc) tg_config_cmd_admin_close(admin);
    return rc;
}

int tg_config_cmd_fetch(tg_config_cmd_admin_t *a, const json_t *select_tags, json_t **state,
                        char *err, size_t errlen)
{
    char *tags = NULL;
    size_t i;
    json_t *t;
    json_array_foreach(select_tags, i, t)
    {
        char *next = tg_asprintf("%s%s%s", tags ? tags : "", tags ? "," : "", json_string_value(t));
        free(tags);
        tags = next;
    }
    *state = json_object();
    int rc = 0;
    for (int k = 0; k < TG_CC_NTYPES && !rc; k++) {
        json_t *list = NULL;
        rc = tg_config_cmd_admin_list(a, tg_config_cmd_types[k].admin_path, tags, &list, err,
                                      errlen);
        if (!rc) json_object_set_new(*state, tg_config_cmd_types[k].collection, list);
    }
    free(tags);
    if (rc) {
        json_decref(*state);
        *state = NULL;
    }
    return rc;
}

/* ---------------------------------------------------------------- verbs */

static int run_validate(const args_t *a)
{
    loaded_t l;
    int rc = load(a, &l);
    if (rc) return rc;
    printf("%s: valid:", a->file);
    for (int t = 0; t < TG_CC_NTYPES; t++)
        printf("%s %zu %s", t ? "," : "",
               json_array_size(json_object_get(l.decl.entities, tg_config_cmd_types[t].collection)),
               tg_config_cmd_types[t].collection);
    printf("\n");
    unload(&l);
    return 0;
}

static int run_plan(const args_t *a, bool apply)
{
    loaded_t l;
    tg_config_cmd_admin_t admin;
    json_t *state = NULL;
    char err[1024];
    int rc = load(a, &l);
    if (rc) return rc;
    rc = connect_cp(a, &admin);
    if (rc) {
        unload(&l);
        return rc;
    }
    rc = tg_config_cmd_fetch(&admin, l.select_tags, &state, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "tollgate config: reading the control plane's configuration: %s\n", err);
    } else {
        tg_config_cmd_plan_t *p = tg_config_cmd_plan_build(l.decl.entities, state, l.ids, l.keys);
        if (apply)
            rc = tg_config_cmd_plan_apply(p, &admin, stdout);
        else
            tg_config_cmd_plan_print(p, stdout);
        tg_config_cmd_plan_free(p);
    }
    json_decref(state);
    tg_config_cmd_admin_close(&admin);
    unload(&l);
    return rc;
}

/* Written next to the target and renamed over it: a failed dump leaves the old file. */
static int run_dump(const args_t *a)
{
    tg_config_cmd_admin_t admin;
    json_t *state = NULL;
    char err[1024];
    int rc = connect_cp(a, &admin);
    if (rc) return rc;
    rc = tg_config_cmd_fetch(&admin, a->select_tags, &state, err, sizeof(err));
    tg_config_cmd_admin_close(&admin);
    if (rc) {
        fprintf(stderr, "tollgate config: reading the control plane's configuration: %s\n", err);
        return rc;
    }
    bool to_stdout = !strcmp(a->file, "-");
    char *tmp = to_stdout ? NULL : tg_asprintf("%s.tmp-%d", a->file, (int)getpid());
    FILE *out = to_stdout ? stdout : fopen(tmp, "w");
    if (!out) {
        fprintf(stderr, "tollgate config: cannot write %s: %s\n", tmp, strerror(errno));
        rc = -TG_EIO;
    } else {
        rc = tg_config_cmd_dump_write(state, a->select_tags, a->with_ids, out, err, sizeof(err));
        if (!to_stdout && fclose(out) != 0 && !rc) {
            snprintf(err, sizeof(err), "%s", strerror(errno));
            rc = -TG_EIO;
        }
        if (!to_stdout && !rc && rename(tmp, a->file) != 0) {
            snprintf(err, sizeof(err), "%s", strerror(errno));
            rc = -TG_EIO;
        }
        if (rc) fprintf(stderr, "tollgate config: cannot write %s: %s\n", a->file, err);
        if (rc && tmp) unlink(tmp);
    }
    if (!rc && !to_stdout) {
        size_t n = 0;
        for (int t = 0; t < TG_CC_NTYPES; t++)
            n += json_array_size(json_object_get(state, tg_config_cmd_types[t].collection));
        fprintf(stderr, "tollgate config: wrote %zu entities to %s\n", n, a->file);
    }
    free(tmp);
    json_decref(state);
    return rc;
}

static int command(const char *verb, int argc, char **argv)
{
    args_t a;
    int rc = parse_args(verb, argc, argv, &a);
    if (rc == 0) {
        if (!strcmp(verb, "validate"))
            rc = run_validate(&a);
        else if (!strcmp(verb, "dump"))
            rc = run_dump(&a);
        else
            rc = run_plan(&a, !strcmp(verb, "sync"));
    } else if (rc > 0) {
        rc = 0; /* --help */
    }
    json_decref(a.select_tags);
    fflush(stdout);
    return rc;
}

int tg_config_cmd_validate(int argc, char **argv)
{
    return command("validate", argc, argv);
}

int tg_config_cmd_diff(int argc, char **argv)
{
    return command("diff", argc, argv);
}

int tg_config_cmd_sync(int argc, char **argv)
{
    return command("sync", argc, argv);
}

int tg_config_cmd_dump(int argc, char **argv)
{
    return command("dump", argc, argv);
}
