/*
 * migrate.h — ordered SQL migrations, applied once per database under a lock.
 *
 * The built-in migrations are the files control-plane/migrations/NNN_name.sql, embedded into
 * the binary at build time (CMake generates an array from them in name order; a migration's
 * name is its file name without ".sql"). Applied migrations are recorded in the table
 * schema_migrations(name, applied_at). Each pending migration runs in its own transaction
 * together with its schema_migrations row, so a failed migration leaves no trace and the next
 * run retries it. The whole run holds a session-level pg_advisory_lock so that CP nodes
 * starting at the same time against one database apply each migration exactly once.
 *
 * A migration's SQL may hold several statements but none that cannot run inside a transaction
 * block (CREATE INDEX CONCURRENTLY, VACUUM, CREATE DATABASE).
 *
 * Memory: migration arrays are owned by the caller (the built-in one is static). Functions use
 * the caller's connection on the caller's thread, which must not be inside a transaction.
 */
#ifndef TG_MIGRATE_H
#define TG_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

typedef struct tg_migration {
    const char *name; /* "001_core": unique, ascending order within an array */
    const char *sql;
} tg_migration_t;

/* The migrations built into this binary, in order; *count receives their number. */
const tg_migration_t *tg_migrate_builtin(size_t *count);

/*
 * Applies the migrations of m[count] not yet recorded in schema_migrations, in order, each in
 * its own transaction, creating schema_migrations when missing. Holds pg_advisory_lock(key)
 * for the whole run (waits for a concurrent run to finish). Returns the number applied (>= 0),
 * -TG_EINVAL for bad arguments (NULL/duplicate/out-of-order names, conn in a transaction), or
 * -TG_EDB with "migration <name>: <PostgreSQL message>" (or the failing step) in err[errlen].
 * Migrations before the failing one stay applied.
 */
int tg_migrate_apply(PGconn *conn, const tg_migration_t *m, size_t count, char *err, size_t errlen);

/* Number of migrations of m[count] not yet applied (all of them on an empty database), or
 * -TG_EDB. Takes no lock. */
int tg_migrate_pending(PGconn *conn, const tg_migration_t *m, size_t count);

#endif
