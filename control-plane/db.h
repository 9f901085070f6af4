/*
 * db.h — one PostgreSQL connection with reconnection and error classification.
 *
 * A tg_db_t belongs to exactly one thread at a time (each CP worker owns
 * one). Results are libpq PGresult objects the caller PQclear()s.
 */
#ifndef TG_DB_H
#define TG_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#define TG_DB_STMT_CACHE 256

/*
 * Statements are prepared once per connection and then executed by name:
 * parsing and planning dominated PostgreSQL's CPU per Admin API write.
 * The cache maps SQL text to a prepared name; it is dropped on reconnect.
 */
typedef struct tg_db_stmt {
    char *sql;
    unsigned long hash;
} tg_db_stmt_t;

struct tg_changelog;

typedef struct tg_db {
    PGconn *conn;
    char *conninfo;
    /* Non-NULL while the connection runs a group-commit batch (workers.c):
     * writes then use savepoints and leave their change-log groups here. */
    struct tg_changelog *batch;

    tg_db_stmt_t stmts[TG_DB_STMT_CACHE];
    int nstmts;
} tg_db_t;

/* What went wrong with the last statement, for mapping to Kong's errors. */
typedef struct tg_db_err {
    int code;            /* -TG_EDB, -TG_EDBDOWN, or 0 */
    char sqlstate[6];    /* e.g. "23505" unique, "23503" foreign key */
    char constraint[64];
    char message[256];
} tg_db_err_t;

/* The libpq conninfo string for the configured pg_* keys; caller frees. */
char *tg_db_conninfo_from_config(void);
int tg_db_open(tg_db_t *db, const char *conninfo, char *err, size_t errlen);
void tg_db_close(tg_db_t *db);
/* Reconnects if the connection is broken. -TG_EDBDOWN when PostgreSQL cannot be reached. */
int tg_db_ensure(tg_db_t *db);
/*
 * Runs one parameterised statement (text parameters, NULL = SQL NULL).
 * Returns the result on success (PGRES_COMMAND_OK or TUPLES_OK), else NULL
 * with *err filled. Never returns a failed PGresult.
 */
PGresult *tg_db_exec(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams,
                     const char *const *params);
/* Runs a statement with no result needed; 0 or the error code. */
int tg_db_run(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams, const char *const *params);
/* True when the last failure means the server is gone (connection-class errors). */
bool tg_db_err_is_down(const tg_db_err_t *err);

#endif
