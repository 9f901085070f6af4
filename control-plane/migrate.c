#include "migrate.h"
#include "error.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "migrate"
/* "tollgate" in ASCII, as a bigint: the one advisory lock key all CP nodes agree on. */
#define LOCK_KEY "8390043843661231205"

/* Generated at build time from control-plane/migrations/NNN_name.sql (see CMakeLists.txt). */
extern const tg_migration_t tg_migrate_builtin_list[];
extern const size_t tg_migrate_builtin_count;

const tg_migration_t *tg_migrate_builtin(size_t *count)
{
    *count = tg_migrate_builtin_count;
    return tg_migrate_builtin_list;
}

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* "message (SQLSTATE x, line n)" from a failed result; `sql` locates the error position. */
static void describe(const PGresult *r, const PGconn *conn, const char *sql, char *out, size_t cap)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
    if (!msg) {
        snprintf(out, cap, "%s", PQerrorMessage(conn));
        out[strcspn(out, "\n")] = '\0';
        return;
    }
    int line = 0;
    if (pos && sql) { /* the position counts characters, 1-based */
        long chars = strtol(pos, NULL, 10);
        line = 1;
        for (const char *p = sql; *p && chars > 1; p++) {
            if ((*p & 0xC0) != 0x80) chars--;
            if (*p == '\n') line++;
        }
    }
    if (line)
        snprintf(out, cap, "%s (SQLSTATE %s, line %d)", msg, state ? state : "?", line);
    else
        snprintf(out, cap, "%s (SQLSTATE %s)", msg, state ? state : "?");
}

/* Runs one command; on failure describes it into err (prefixed by `what`) and returns -TG_EDB. */
static int exec_cmd(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = 0;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_EMPTY_QUERY) {
        char why[512];
        describe(r, conn, sql, why, sizeof(why));
        rc = fail(err, errlen, -TG_EDB, "%s: %s", what, why);
    }
    PQclear(r);
    return rc;
}

static int valid_list(const tg_migration_t *m, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (!m[i].name || !m[i].name[0] || !m[i].sql) return 0;
        if (i > 0 && strcmp(m[i - 1].name, m[i].name) >= 0) return 0;
    }
    return 1;
}

/* Names already applied, or NULL (with err filled) on failure. Caller PQclear()s. */
static PGresult *applied_names(PGconn *conn, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, "SELECT name FROM schema_migrations");
    if (PQresultStatus(r) == PGRES_TUPLES_OK) return r;
    char why[512];
    describe(r, conn, NULL, why, sizeof(why));
    fail(err, errlen, -TG_EDB, "reading schema_migrations: %s", why);
    PQclear(r);
    return NULL;
}

static int is_applied(const PGresult *applied, const char *name)
{
    for (int i = 0; i < PQntuples(applied); i++)
        if (strcmp(PQgetvalue(applied, i, 0), name) == 0) return 1;
    return 0;
}

/* One migration and its schema_migrations row in one transaction. */
static int apply_one(PGconn *conn, const tg_migration_t *m, char *err, size_t errlen)
{
    char what[256];
    snprintf(what, sizeof(what), "migration %s", m->name);
    int rc = exec_cmd(conn, "BEGIN", what, err, errlen);
    if (rc == 0) rc = exec_cmd(conn, m->sql, what, err, errlen);
    if (rc == 0 && PQtransactionStatus(conn) != PQTRANS_INTRANS)
        rc = fail(err, errlen, -TG_EDB, "%s: must not end its transaction (COMMIT/ROLLBACK)", what);
    if (rc == 0) {
        const char *params[1] = {m->name};
        PGresult *r = PQexecParams(conn, "INSERT INTO schema_migrations (name) VALUES ($1)", 1,
                                   NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char why[512];
            describe(r, conn, NULL, why, sizeof(why));
            rc = fail(err, errlen, -TG_EDB, "%s: recording it: %s", what, why);
        }
        PQclear(r);
    }
    if (rc == 0) rc = exec_cmd(conn, "COMMIT", what, err, errlen);
    if (rc != 0 && PQtransactionStatus(conn) != PQTRANS_IDLE) PQclear(PQexec(conn, "ROLLBACK"));
    return rc;
}

int tg_migrate_apply(PGconn *conn, const tg_migration_t *m, size_t count, char *err, size_t errlen)
{
    if (!conn || (count && !m) || !err || !errlen) return -TG_EINVAL;
    err[0] = '\0';
    if (!valid_list(m, count))
        return fail(err, errlen, -TG_EINVAL, "migration names must be unique and ascending");
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return fail(err, errlen, -TG_EINVAL, "connection is busy or inside a transaction");

    int rc = exec_cmd(conn, "SELECT pg_advisory_lock(" LOCK_KEY ")", "taking the migration lock",
                      err, errlen);
    if (rc != 0) return rc;
    /* Not CREATE TABLE IF NOT EXISTS: its "already exists" NOTICE would be printed every run. */
    rc = exec_cmd(conn,
                  "DO $$BEGIN IF to_regclass('schema_migrations') IS NULL THEN "
                  "CREATE TABLE schema_migrations (name text PRIMARY KEY, "
                  "applied_at timestamptz NOT NULL DEFAULT now()); END IF; END$$",
                  "creating schema_migrations", err, errlen);
    PGresult *applied = rc == 0 ? applied_names(conn, err, errlen) : NULL;
    int n = 0;
    if (rc == 0 && !applied) rc = -TG_EDB;
    for (size_t i = 0; rc == 0 && i < count; i++) {
        if (is_applied(applied, m[i].name)) continue;
        if ((rc = apply_one(conn, &m[i], err, errlen)) == 0) {
            TG_LOGN(MOD, "applied migration %s", m[i].name);
            n++;
        }
    }
    PQclear(applied);
    /* A broken connection drops the session lock with it; nothing else to undo. */
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" LOCK_KEY ")"));
    if (rc != 0) TG_LOGE(MOD, "%s", err);
    return rc != 0 ? rc : n;
}

int tg_migrate_pending(PGconn *conn, const tg_migration_t *m, size_t count)
{
    if (!conn || (count && !m)) return -TG_EINVAL;
    PGresult *r = PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    int exists = ok && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!ok) return -TG_EDB;
    if (!exists) return (int)count;
    char err[512];
    PGresult *applied = applied_names(conn, err, sizeof(err));
    if (!applied) return -TG_EDB;
    int pending = 0;
    for (size_t i = 0; i < count; i++)
        if (!is_applied(applied, m[i].name)) pending++;
    PQclear(applied);
    return pending;
}
