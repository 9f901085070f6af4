#include "changelog.h"
#include "alloc.h"
#include "error.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg_changelog_init(tg_changelog_t *cl)
{
    cl->groups = json_array();
}

void tg_changelog_clear(tg_changelog_t *cl)
{
    json_decref(cl->groups);
    cl->groups = NULL;
}

void tg_changelog_add(tg_changelog_t *cl, const char *cp_id, json_t *changes,
                      const tg_config_digest_t *delta)
{
    if (json_array_size(changes) == 0) return;
    json_t *d = json_null();
    if (delta) {
        char dec[TG_CONFIG_DIGEST_DEC_LEN + 1];
        tg_config_digest_decimal(delta, dec);
        d = json_string(dec);
    }
    json_array_append_new(cl->groups, json_pack("[s,O,o]", cp_id, changes, d));
}

/* Growable PostgreSQL array literal; values are ids, numbers and plain words (no quoting needed).
 */
typedef struct lit {
    char *p;
    size_t len, cap, count;
} lit_t;

static void lit_put(lit_t *l, const char *v)
{
    size_t n = strlen(v) + 2;
    if (l->len + n + 1 > l->cap) {
        l->cap = (l->len + n + 1) * 2;
        l->p = tg_realloc(l->p, l->cap);
    }
    memcpy(l->p + l->len, v, n - 2);
    l->len += n - 2;
    l->p[l->len] = '\0';
}

static void lit_start(lit_t *l)
{
    memset(l, 0, sizeof(*l));
    lit_put(l, "{");
}

static void lit_add(lit_t *l, const char *v)
{
    if (l->count++) lit_put(l, ",");
    lit_put(l, v);
}

static char *lit_end(lit_t *l)
{
    lit_put(l, "}");
    return l->p;
}

/*
 * The digest arithmetic is done here, under the control-plane row lock the version counter
 * already takes: $8 is the sum of the groups' contributions and $9 their running sums (both
 * modulo 2^256, NULL when a contribution is not known). The UPDATE adds $8 to the running
 * digest; version k's digest is the new digest minus $8 plus the k-th running sum. Taking the
 * base from RETURNING (not from a separate read) keeps it right when the UPDATE had to wait
 * for a concurrent writer's commit.
 */
#define MOD256 "115792089237316195423570985008687907853269984665640564039457584007913129639936"
static const char *SQL =
    "WITH v AS (UPDATE control_planes SET config_version = config_version + $2::int,"
    "           config_digest = mod(config_digest + $8::numeric, " MOD256 ")"
    "           WHERE id = $1::uuid RETURNING config_version - $2::int AS base,"
    "           config_digest AS d),"
    " ins AS (INSERT INTO config_versions (cp_id, version, changes, digest)"
    "         SELECT $1::uuid, v.base + g.n, g.cnt,"
    "         mod(v.d - $8::numeric + g.cum + " MOD256 ", " MOD256 ")"
    "         FROM v, unnest($3::int[], $9::numeric[]) WITH ORDINALITY AS g(cnt, cum, n))"
    " INSERT INTO config_changes (cp_id, version, seq, entity_type, entity_id, op)"
    " SELECT $1::uuid, v.base + c.grp, row_number() OVER (PARTITION BY c.grp ORDER BY c.ord), c.t, "
    "c.i, c.o"
    " FROM v, unnest($4::int[], $5::text[], $6::uuid[], $7::text[]) WITH ORDINALITY AS c(grp, t, "
    "i, o, ord)"
    " RETURNING version";

/* Writes the groups of one control plane. */
static int write_cp(tg_changelog_t *cl, const char *cp_id, tg_db_t *db, tg_db_err_t *err,
                    long long *last)
{
    lit_t counts, grps, types, ids, ops, cums;
    lit_start(&counts), lit_start(&grps), lit_start(&types), lit_start(&ids), lit_start(&ops);
    lit_start(&cums);
    tg_config_digest_t cum = {{0}};
    bool known = true; /* every contribution so far */
    char dec[TG_CONFIG_DIGEST_DEC_LEN + 1] = "";
    size_t i, j;
    json_t *g, *row;
    int ngroups = 0;
    char num[32];
    json_array_foreach(cl->groups, i, g)
    {
        if (strcmp(json_string_value(json_array_get(g, 0)), cp_id) != 0) continue;
        json_t *changes = json_array_get(g, 1);
        tg_config_digest_t delta;
        if (known && tg_config_digest_from_decimal(json_string_value(json_array_get(g, 2)),
                                                   &delta) == 0)
            tg_config_digest_add(&cum, delta.sum);
        else
            known = false;
        if (known) tg_config_digest_decimal(&cum, dec);
        lit_add(&cums, known ? dec : "NULL");
        snprintf(num, sizeof(num), "%zu", json_array_size(changes));
        lit_add(&counts, num);
        snprintf(num, sizeof(num), "%d", ++ngroups);
        json_array_foreach(changes, j, row)
        {
            lit_add(&grps, num);
            lit_add(&types, json_string_value(json_array_get(row, 0)));
            lit_add(&ids, json_string_value(json_array_get(row, 1)));
            lit_add(&ops, json_string_value(json_array_get(row, 2)));
        }
    }
    char n[32];
    snprintf(n, sizeof(n), "%d", ngroups);
    const char *params[] = {cp_id,         n,
                            lit_end(&counts), lit_end(&grps),
                            lit_end(&types),  lit_end(&ids),
                            lit_end(&ops),    known ? dec : NULL,
                            lit_end(&cums)};
    PGresult *res = tg_db_exec(db, err, SQL, 9, params);
    for (int k = 2; k < 9; k++)
        if (k != 7) free((char *)params[k]);
    if (!res) return err->code;
    for (int r = 0; r < PQntuples(res); r++) {
        long long v = atoll(PQgetvalue(res, r, 0));
        if (v > *last) *last = v;
    }
    PQclear(res);
    return 0;
}

int tg_changelog_write(tg_changelog_t *cl, tg_db_t *db, tg_db_err_t *err, long long *last_version)
{
    *last_version = 0;
    json_t *done = json_object();
    size_t i;
    json_t *g;
    int rc = 0;
    /* One statement per control plane, in the order each first appears. */
    json_array_foreach(cl->groups, i, g)
    {
        const char *cp = json_string_value(json_array_get(g, 0));
        if (json_object_get(done, cp)) continue;
        json_object_set_new(done, cp, json_true());
        if ((rc = write_cp(cl, cp, db, err, last_version)) != 0) break;
    }
    json_decref(done);
    return rc;
}

/* ---------------------------------------------------------------- retention */

/*
 * Advisory lock key of the purge: "tgpurge" as a bigint. Transaction-scoped and tried, never
 * waited for, so a node that finds another purging simply skips this round.
 */
#define PURGE_LOCK_KEY "8388043436693351"

static const char *PURGE_SQL =
    "WITH doomed AS (SELECT v.cp_id, v.version FROM config_versions v"
    "                JOIN control_planes cp ON cp.id = v.cp_id"
    "                WHERE v.version <= cp.config_version - $1::bigint"
    "                AND v.created_at < now() - make_interval(secs => $2::double precision)"
    "                ORDER BY v.cp_id, v.version LIMIT $3::int)"
    " DELETE FROM config_versions v USING doomed d"
    " WHERE v.cp_id = d.cp_id AND v.version = d.version";

/* One batch in its own transaction: 1 when this node holds the lock and deleted `*n` rows. */
static int purge_batch(tg_db_t *db, const char *const params[3], long long *n, tg_db_err_t *err)
{
    *n = 0;
    int rc = tg_db_run(db, err, "BEGIN", 0, NULL);
    if (rc) return rc;
    PGresult *res =
        tg_db_exec(db, err, "SELECT pg_try_advisory_xact_lock(" PURGE_LOCK_KEY ")", 0, NULL);
    bool locked = res && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    if (res) PQclear(res);
    rc = res ? 0 : (err->code ? err->code : -TG_EDB);
    if (locked) {
        res = tg_db_exec(db, err, PURGE_SQL, 3, params);
        if (res) {
            *n = atoll(PQcmdTuples(res));
            PQclear(res);
        } else {
            rc = err->code ? err->code : -TG_EDB;
        }
    }
    tg_db_err_t ignored;
    tg_db_run(db, rc ? &ignored : err, rc ? "ROLLBACK" : "COMMIT", 0, NULL);
    if (rc) return rc;
    return locked ? 1 : 0;
}

int tg_changelog_purge(tg_db_t *db, long long keep_versions, double keep_seconds, int batch,
                       int max_batches, long long *purged, tg_db_err_t *err)
{
    char v[32], s[32], b[16];
    snprintf(v, sizeof(v), "%lld", keep_versions);
    snprintf(s, sizeof(s), "%.3f", keep_seconds);
    snprintf(b, sizeof(b), "%d", batch);
    const char *params[] = {v, s, b};
    *purged = 0;
    for (int i = 0; i < max_batches; i++) {
        long long n;
        int rc = purge_batch(db, params, &n, err);
        if (rc < 0) return rc;
        if (rc == 0) return 0; /* another node is purging */
        *purged += n;
        if (n < batch) break;
    }
    return 0;
}
