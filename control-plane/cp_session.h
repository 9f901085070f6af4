/*
 * cp_session.h — what every control-plane command needs before it can work: the prefix
 * directory, PostgreSQL (the configured server, or the embedded one under <prefix>/pg), one
 * migrated connection, and the keyring key. `cp start`, `cp migrate`, `cp admin-token` and
 * `cp token` all open one; main thread only.
 */
#ifndef TG_CP_SESSION_H
#define TG_CP_SESSION_H

#include "db.h"
#include "pg_embedded.h"

#include <stdint.h>

typedef struct tg_cp_session {
    tg_pg_embedded_t *pg; /* the embedded server, when pg_host is empty */
    char *conninfo;       /* for further connections (the worker pool) */
    tg_db_t db;           /* connected, migrated */
} tg_cp_session_t;

/*
 * Creates the prefix, starts or attaches to the database (waiting up to 30 s for a server
 * that is still starting) and applies pending migrations. 0, or a negative code after
 * logging why; tg_cp_session_close must be called either way.
 */
int tg_cp_session_open(tg_cp_session_t *s);
void tg_cp_session_close(tg_cp_session_t *s);

/* The keyring key (keyring_key, or <prefix>/keyring.key created on first use). */
int tg_cp_load_keyring(uint8_t key[32]);

#endif
