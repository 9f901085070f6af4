/*
 * cp_token.c — `tollgate cp token create | list | revoke`: join tokens for data planes.
 *
 * Opens the database as every CP command does (cp_session.h: the configured PostgreSQL, or the embedded
 * one under <prefix>/pg, attaching to it when a running CP owns it), applies pending
 * migrations, and makes sure the cluster CA exists, so the join command printed by `create`
 * carries the CA hash even before the first `cp start`. Runs on the main thread; prints
 * results on stdout and problems on stderr.
 */
#include "alloc.h"
#include "cluster_ca.h"
#include "config.h"
#include "cp.h"
#include "cp_session.h"
#include "crypto.h"
#include "db.h"
#include "error.h"
#include "join.h"
#include "log.h"

#include <openssl/crypto.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define USAGE                                                                                      \
    "usage: tollgate cp token create [--control-plane ID|NAME] [--ttl 24h|90m|3600] [--uses N]\n"  \
    "                                [--description TEXT]\n"                                       \
    "       tollgate cp token list [--control-plane ID|NAME]\n"                                    \
    "       tollgate cp token revoke ID\n"

typedef struct session {
    tg_cp_session_t cp; /* prefix, database, migrations (as every CP command) */
    uint8_t keyring[32];
    tg_cluster_ca_t *ca;
} session_t;

typedef struct create_args {
    const char *control_plane, *description;
    int64_t ttl;
    int uses;
} create_args_t;

/* ---------------------------------------------------------------- the database */





static int open_session(session_t *s)
{
    int rc = tg_cp_session_open(&s->cp);
    if (!rc) rc = tg_cp_load_keyring(s->keyring);
    if (!rc && (rc = tg_cluster_ca_ensure(&s->cp.db, s->keyring, &s->ca)) != 0)
        fprintf(stderr, "tollgate: cannot load the cluster CA (%s)\n", tg_strerror(rc));
    return rc;
}

static void close_session(session_t *s)
{
    tg_cluster_ca_free(s->ca);
    tg_cp_session_close(&s->cp);
    OPENSSL_cleanse(s->keyring, sizeof(s->keyring));
}

/* ---------------------------------------------------------------- arguments */

/* "--name value" or "--name=value": the value, advancing *i; NULL when argv[*i] is not --name. */
static const char *option(int argc, char **argv, int *i, const char *name, bool *missing)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != '\0') return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

static int parse_uses(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = s && *s >= '0' && *s <= '9' ? strtol(s, &end, 10) : -1;
    if (v < 0 || errno || *end || v > 1000000) return -TG_EINVAL;
    *out = (int)v;
    return 0;
}

static int bad(const char *msg, const char *value)
{
    fprintf(stderr, "tollgate: %s (got '%s')\n", msg, value);
    return -TG_EINVAL;
}

static int parse_create(int argc, char **argv, create_args_t *a)
{
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        if ((v = option(argc, argv, &i, "--control-plane", &missing)))
            a->control_plane = v;
        else if ((v = option(argc, argv, &i, "--description", &missing)))
            a->description = v;
        else if ((v = option(argc, argv, &i, "--ttl", &missing))) {
            if (tg_join_parse_ttl(v, &a->ttl) != 0)
                return bad(
                    "--ttl must be seconds or a duration such as 90m, 24h or 7d, at most 365d", v);
        } else if ((v = option(argc, argv, &i, "--uses", &missing))) {
            if (parse_uses(v, &a->uses) != 0)
                return bad("--uses must be an integer from 0 (unlimited) to 1000000", v);
        } else {
            fprintf(stderr,
                    missing ? "tollgate: %s needs a value\n%s"
                            : "tollgate: unknown option '%s'\n%s",
                    argv[i], USAGE);
            return -TG_EINVAL;
        }
    }
    if (a->description && strlen(a->description) > TG_JOIN_DESCRIPTION_MAX)
        return bad("--description is too long (at most 1000 characters)", "...");
    return 0;
}

/* ---------------------------------------------------------------- verbs */

static void format_time(json_t *unix_time, char *out, size_t cap)
{
    time_t t = (time_t)json_integer_value(unix_time);
    struct tm tm;
    if (!json_is_integer(unix_time) || !gmtime_r(&t, &tm) ||
        !strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, cap, "-");
}

static int create_token(session_t *s, const create_args_t *a)
{
    char token[24];
    json_t *info = NULL;
    int rc = tg_join_token_create(&s->cp.db, a->control_plane, a->ttl, a->uses, a->description, token,
                                  &info);
    if (rc == -TG_ENOTFOUND) {
        fprintf(stderr, "tollgate: no control plane with id or name '%s'\n", a->control_plane);
        return rc;
    }
    if (rc) {
        fprintf(stderr, "tollgate: cannot create the token: %s\n", tg_strerror(rc));
        return rc;
    }
    char hash[72], advertise[300], expires[32];
    tg_cluster_ca_spki_hash(s->ca, hash);
    tg_cluster_advertise(advertise, sizeof(advertise));
    format_time(json_object_get(info, "expires_at"), expires, sizeof(expires));
    printf("%s\ntollgate dp join %s --token %s --ca-hash %s\n", token, advertise, token, hash);
    char uses[32] = "unlimited uses";
    if (a->uses) snprintf(uses, sizeof(uses), "%d use%s", a->uses, a->uses == 1 ? "" : "s");
    fprintf(stderr, "join token %s for control plane %s, valid until %s, %s\n",
            json_string_value(json_object_get(info, "id")),
            json_string_value(json_object_get(info, "control_plane_id")), expires, uses);
    OPENSSL_cleanse(token, sizeof(token));
    json_decref(info);
    return 0;
}

/* Every token, or those of one control plane (named by id or name). */
static int list_tokens(session_t *s, const char *control_plane)
{
    json_t *tokens;
    char cp_id[37];
    int rc = control_plane ? tg_join_resolve_cp(&s->cp.db, control_plane, cp_id) : 0;
    if (rc == -TG_ENOTFOUND) {
        fprintf(stderr, "tollgate: no control plane with id or name '%s'\n", control_plane);
        return rc;
    }
    if (!rc) rc = tg_join_token_list(&s->cp.db, control_plane ? cp_id : NULL, &tokens);
    if (rc) {
        fprintf(stderr, "tollgate: cannot list tokens: %s\n", tg_strerror(rc));
        return rc;
    }
    printf("%-6s  %-36s  %-20s  %-9s  %s\n", "ID", "CONTROL PLANE", "EXPIRES", "USES LEFT",
           "DESCRIPTION");
    size_t i;
    json_t *t;
    json_array_foreach(tokens, i, t)
    {
        char expires[32], uses[16];
        format_time(json_object_get(t, "expires_at"), expires, sizeof(expires));
        if (json_is_true(json_object_get(t, "expired")))
            snprintf(expires, sizeof(expires), "expired");
        json_t *u = json_object_get(t, "uses_left");
        if (json_is_integer(u))
            snprintf(uses, sizeof(uses), "%lld", (long long)json_integer_value(u));
        else
            snprintf(uses, sizeof(uses), "unlimited");
        const char *desc = json_string_value(json_object_get(t, "description"));
        printf("%-6s  %-36s  %-20s  %-9s  %s\n", json_string_value(json_object_get(t, "id")),
               json_string_value(json_object_get(t, "control_plane_id")), expires, uses,
               desc ? desc : "");
    }
    json_decref(tokens);
    return 0;
}

static int revoke_token(session_t *s, const char *id)
{
    int rc = tg_join_token_delete(&s->cp.db, id);
    if (rc == -TG_ENOTFOUND)
        fprintf(stderr, "tollgate: no join token with id '%s'\n", id);
    else if (rc)
        fprintf(stderr, "tollgate: cannot revoke the token: %s\n", tg_strerror(rc));
    else
        printf("join token %s revoked\n", id);
    return rc;
}

int tg_cp_cmd_token(int argc, char **argv)
{
    const char *verb = argc > 0 ? argv[0] : "";
    create_args_t a = {0};
    const char *list_cp = NULL;
    bool missing = false;
    int at = 1;
    if (strcmp(verb, "list") == 0 && argc == 3) list_cp = option(argc, argv, &at, "--control-plane", &missing);
    else if (strcmp(verb, "list") == 0 && argc == 2 && strncmp(argv[1], "--control-plane=", 16) == 0)
        list_cp = argv[1] + 16;
    bool ok = (strcmp(verb, "create") == 0) || (strcmp(verb, "list") == 0 && (argc == 1 || list_cp)) ||
              (strcmp(verb, "revoke") == 0 && argc == 2);
    if (!ok) {
        fprintf(stderr, "%s", USAGE);
        return -TG_EINVAL;
    }
    if (strcmp(verb, "create") == 0 && parse_create(argc, argv, &a) != 0) return -TG_EINVAL;
    if (strcmp(verb, "revoke") == 0 && !tg_join_token_id_valid(argv[1])) {
        fprintf(stderr, "tollgate: '%s' is not a join token id (6 characters a-z, 0-9)\n", argv[1]);
        return -TG_EINVAL;
    }
    session_t s = {0};
    int rc = open_session(&s);
    if (!rc && strcmp(verb, "create") == 0)
        rc = create_token(&s, &a);
    else if (!rc && strcmp(verb, "list") == 0)
        rc = list_tokens(&s, list_cp);
    else if (!rc)
        rc = revoke_token(&s, argv[1]);
    close_session(&s);
    return rc;
}
