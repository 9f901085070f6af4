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

void tg_db_close(tg_db_t *db)
{
    if (db->conn) PQfinish(db->conn);
    free(db->conninfo);
    db->conn = NULL;
    db->conninfo = NULL;
}

int tg_db_ensure(tg_db_t *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK) return 0;
    if (db->conn) PQreset(db->conn);
    else db->conn = PQconnectdb(db->conninfo);
    if (PQstatus(db->conn) == CONNECTION_OK) {
        TG_LOGN("db", "reconnected to PostgreSQL");
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

PGresult *tg_db_exec(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams,
                     const char *const *params)
{
    if (tg_db_ensure(db) != 0) {
        memset(err, 0, sizeof(*err));
        err->code = -TG_EDBDOWN;
        snprintf(err->message, sizeof(err->message), "%s", PQerrorMessage(db->conn));
        return NULL;
    }
    PGresult *res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return res;
    fill_err(db, res, err);
    if (err->code == -TG_EDB && strncmp(err->sqlstate, "23", 2) != 0)
        TG_LOGW("db", "statement failed (%s): %s", err->sqlstate, err->message);
    PQclear(res);
    return NULL;
}

int tg_db_run(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = tg_db_exec(db, err, sql, nparams, params);
    if (!res) return err->code;
    PQclear(res);
    return 0;
}
