#include "db.h"
#include "alloc.h"
#include "config.h"
#include "error.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Quotes a conninfo value: single quotes with backslash escapes. */
static void append_kv(char *buf, size_t cap, const char *key, const char *value)
{
    size_t len = strlen(buf);
    len += (size_t)snprintf(buf + len, cap - len, "%s%s='", len ? " " : "", key);
    for (const char *p = value; *p && len + 3 < cap; p++) {
        if (*p == '\'' || *p == '\\') buf[len++] = '\\';
        buf[len++] = *p;
    }
    snprintf(buf + len, cap - len, "'");
}

char *tg_db_conninfo_from_config(void)
{
    char buf[2048] = "";
    append_kv(buf, sizeof(buf), "host", tg_config_get(TG_CONF_pg_host));
    append_kv(buf, sizeof(buf), "port", tg_config_get(TG_CONF_pg_port));
    append_kv(buf, sizeof(buf), "user", tg_config_get(TG_CONF_pg_user));
    append_kv(buf, sizeof(buf), "dbname", tg_config_get(TG_CONF_pg_database));
    if (*tg_config_get(TG_CONF_pg_password))
        append_kv(buf, sizeof(buf), "password", tg_config_get(TG_CONF_pg_password));
    append_kv(buf, sizeof(buf), "sslmode",
              strcmp(tg_config_get(TG_CONF_pg_ssl), "on") == 0 ? "require" : "prefer");
    append_kv(buf, sizeof(buf), "connect_timeout", "5");
    append_kv(buf, sizeof(buf), "application_name", "tollgate");
    return tg_strdup(buf);
}

int tg_db_open(tg_db_t *db, const char *conninfo, char *err, size_t errlen)
{
    db->conninfo = tg_strdup(conninfo);
    db->conn = PQconnectdb(conninfo);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(db->conn));
        return -TG_EDBDOWN;
    }
    return 0;
}

static void forget_statements(tg_db_t *db)
{
    for (int i = 0; i < db->nstmts; i++) free(db->stmts[i].sql);
    db->nstmts = 0;
}

void tg_db_close(tg_db_t *db)
{
    forget_statements(db);
    if (db->conn) PQfinish(db->conn);
    free(db->conninfo);
    db->conn = NULL;
    db->conninfo = NULL;
}

int tg_db_ensure(tg_db_t *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK) return 0;
    forget_statements(db); /* prepared statements die with the session */
    bool first = db->conn == NULL;
    if (db->conn) PQreset(db->conn);
    else db->conn = PQconnectdb(db->conninfo);
    if (PQstatus(db->conn) == CONNECTION_OK) {
        if (!first) TG_LOGN("db", "reconnected to PostgreSQL");
        return 0;
    }
    return -TG_EDBDOWN;
}

bool tg_db_err_is_down(const tg_db_err_t *err)
{
    return err->code == -TG_EDBDOWN;
}

static void fill_err(tg_db_t *db, const PGresult *res, tg_db_err_t *err)
{
    memset(err, 0, sizeof(*err));
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *cons = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (state) snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", state);
    if (cons) snprintf(err->constraint, sizeof(err->constraint), "%s", cons);
    snprintf(err->message, sizeof(err->message), "%s", msg ? msg : PQerrorMessage(db->conn));
    /* Class 08 (connection), 57P (shutdown), or a dead socket: the server is unreachable. */
    bool down = PQstatus(db->conn) != CONNECTION_OK || strncmp(err->sqlstate, "08", 2) == 0 ||
                strncmp(err->sqlstate, "57P", 3) == 0;
    err->code = down ? -TG_EDBDOWN : -TG_EDB;
}

static unsigned long hash_sql(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

/* The prepared name for sql ("s<N>"), preparing it on first use; NULL if it cannot be prepared. */
static const char *prepared(tg_db_t *db, const char *sql, int nparams, char name[16], tg_db_err_t *err)
{
    unsigned long h = hash_sql(sql);
    for (int i = 0; i < db->nstmts; i++) {
        if (db->stmts[i].hash == h && strcmp(db->stmts[i].sql, sql) == 0) {
            snprintf(name, 16, "s%d", i);
            return name;
        }
    }
    if (db->nstmts == TG_DB_STMT_CACHE) return NULL; /* full: run unprepared */
    snprintf(name, 16, "s%d", db->nstmts);
    PGresult *res = PQprepare(db->conn, name, sql, nparams, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fill_err(db, res, err);
        PQclear(res);
        return NULL;
    }
    PQclear(res);
    db->stmts[db->nstmts].sql = tg_strdup(sql);
    db->stmts[db->nstmts++].hash = h;
    return name;
}

/* One attempt: prepare if new, execute; NULL with *err filled on failure. */
static PGresult *exec_once(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams,
                           const char *const *params)
{
    if (tg_db_ensure(db) != 0) {
        memset(err, 0, sizeof(*err));
        err->code = -TG_EDBDOWN;
        snprintf(err->message, sizeof(err->message), "%s", PQerrorMessage(db->conn));
        return NULL;
    }
    char name[16];
    PGresult *res;
    err->code = 0;
    const char *stmt = nparams > 0 ? prepared(db, sql, nparams, name, err) : NULL;
    if (err->code != 0) return NULL;
    if (stmt) res = PQexecPrepared(db->conn, stmt, nparams, params, NULL, NULL, 0);
    else res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return res;
    fill_err(db, res, err);
    if (err->code == -TG_EDB && strncmp(err->sqlstate, "23", 2) != 0)
        TG_LOGW("db", "statement failed (%s): %s", err->sqlstate, err->message);
    PQclear(res);
    return NULL;
}

/*
 * A connection that died while idle in the pool (PostgreSQL restarted, a
 * session was terminated) is only noticed on use. Outside a transaction the
 * statement cannot have taken effect as part of anything larger, so it is
 * retried once on a fresh connection; inside one (including a batch) the
 * failure stands: the transaction is gone and the caller reports it.
 */
PGresult *tg_db_exec(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams,
                     const char *const *params)
{
    bool idle = db->conn && PQstatus(db->conn) == CONNECTION_OK &&
                PQtransactionStatus(db->conn) == PQTRANS_IDLE && !db->batch;
    PGresult *res = exec_once(db, err, sql, nparams, params);
    if (!res && idle && err->code == -TG_EDBDOWN) res = exec_once(db, err, sql, nparams, params);
    return res;
}

int tg_db_run(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = tg_db_exec(db, err, sql, nparams, params);
    if (!res) return err->code;
    PQclear(res);
    return 0;
}
