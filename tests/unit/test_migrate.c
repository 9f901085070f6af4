/*
 * test_migrate.c — migrations against a real PostgreSQL, which also exercises pg_embedded:
 * the group setup starts an embedded server in a fresh temporary prefix (skipped when no
 * PostgreSQL binaries are installed), the tests apply fake migration lists through the
 * list-taking API, and the last tests restart the server over a stale postmaster.pid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "error.h"
#include "log.h"
#include "migrate.h"
#include "pg_embedded.h"

#include <ftw.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char prefix[PATH_MAX];
static char conninfo[1024];
static tg_pg_embedded_t *pg;

static int start_pg(void)
{
    char err[512];
    int rc =
        tg_pg_embedded_start(prefix, "tollgate", &pg, conninfo, sizeof(conninfo), err, sizeof(err));
    if (rc != 0) print_error("tg_pg_embedded_start: %s (%s)\n", err, tg_errname(rc));
    return rc;
}

static int group_setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(prefix, sizeof(prefix), "%s/tg-migrate-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(prefix)) return -1;
    tg_log_set_level(TG_LOG_WARN);
    int rc = start_pg();
    if (rc == -TG_ENOTFOUND) { /* no PostgreSQL installed: the tests that need it skip */
        pg = NULL;
        return 0;
    }
    return rc == 0 ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_teardown(void **state)
{
    tg_pg_embedded_stop(pg);
    pg = NULL;
    return nftw(prefix, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static PGconn *connect_db(void)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) fail_msg("connect: %s", PQerrorMessage(conn));
    return conn;
}

/* The first column of the first row of a query, as an integer. */
static long query_long(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static const tg_migration_t two[] = {
    {"001_first", "CREATE TABLE tg_first (id int PRIMARY KEY);\n"
                  "INSERT INTO tg_first VALUES (1), (2);"},
    {"002_second", "ALTER TABLE tg_first ADD COLUMN name text NOT NULL DEFAULT 'x';"},
};

static void test_builtin_list_is_ordered(void **state)
{
    size_t n = 99;
    const tg_migration_t *m = tg_migrate_builtin(&n);
    assert_non_null(m);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(m[i].name);
        assert_non_null(m[i].sql);
        if (i > 0) assert_true(strcmp(m[i - 1].name, m[i].name) < 0);
    }
    assert_null(m[n].name); /* sentinel */
}

/* The migrations shipped in the binary apply to an empty database, and only once. */
static void test_builtin_migrations_apply_cleanly(void **state)
{
    if (!pg) skip();
    char super[1200], fresh[1200], err[512];
    const char *db = strstr(conninfo, "dbname=");
    assert_non_null(db);
    snprintf(super, sizeof(super), "%.*sdbname='postgres' user='postgres'", (int)(db - conninfo),
             conninfo);
    snprintf(fresh, sizeof(fresh), "%.*sdbname='tg_builtin' user='tollgate'", (int)(db - conninfo),
             conninfo);
    PGconn *admin = PQconnectdb(super);
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PGresult *r = PQexec(admin, "CREATE DATABASE tg_builtin OWNER tollgate");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(admin);

    size_t n;
    const tg_migration_t *m = tg_migrate_builtin(&n);
    PGconn *conn = PQconnectdb(fresh);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    int rc = tg_migrate_apply(conn, m, n, err, sizeof(err));
    if (rc < 0) fail_msg("built-in migrations: %s", err);
    assert_int_equal(rc, (int)n);
    assert_int_equal(tg_migrate_apply(conn, m, n, err, sizeof(err)), 0);
    assert_int_equal(tg_migrate_pending(conn, m, n), 0);
    PQfinish(conn);
}

static void test_apply_then_reapply(void **state)
{
    if (!pg) skip();
    PGconn *conn = connect_db();
    char err[512];
    assert_int_equal(tg_migrate_pending(conn, two, 2), 2);
    assert_int_equal(tg_migrate_apply(conn, two, 2, err, sizeof(err)), 2);
    assert_int_equal(query_long(conn, "SELECT count(*) FROM tg_first WHERE name = 'x'"), 2);
    assert_int_equal(query_long(conn, "SELECT count(*) FROM schema_migrations WHERE name IN "
                                      "('001_first', '002_second') AND applied_at <= now()"),
                     2);
    assert_int_equal(tg_migrate_pending(conn, two, 2), 0);
    assert_int_equal(tg_migrate_apply(conn, two, 2, err, sizeof(err)), 0);
    assert_int_equal(query_long(conn, "SELECT count(*) FROM tg_first"), 2);
    /* A longer list (a newer binary) applies only what is new. */
    const tg_migration_t three[] = {two[0], two[1], {"003_third", "CREATE TABLE tg_third ();"}};
    assert_int_equal(tg_migrate_pending(conn, three, 3), 1);
    assert_int_equal(tg_migrate_apply(conn, three, 3, err, sizeof(err)), 1);
    PQfinish(conn);
}

static void test_failure_rolls_back_and_names_migration(void **state)
{
    if (!pg) skip();
    PGconn *conn = connect_db();
    char err[512];
    tg_migration_t m[] = {
        {"101_ok", "CREATE TABLE tg_ok (id int);"},
        {"102_bad", "CREATE TABLE tg_partial (id int);\nSELECT no_such_function();"},
        {"103_after", "CREATE TABLE tg_after (id int);"},
    };
    assert_int_equal(tg_migrate_apply(conn, m, 3, err, sizeof(err)), -TG_EDB);
    assert_non_null(strstr(err, "102_bad"));
    assert_non_null(strstr(err, "no_such_function"));
    assert_non_null(strstr(err, "line 2"));
    /* The good one before it stays; the failed one and the one after leave no trace. */
    assert_int_equal(query_long(conn, "SELECT count(*) FROM schema_migrations "
                                      "WHERE name LIKE '10%'"),
                     1);
    assert_int_equal(query_long(conn, "SELECT count(*) FROM pg_tables WHERE tablename IN "
                                      "('tg_ok', 'tg_partial', 'tg_after')"),
                     1);
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_IDLE);
    assert_int_equal(tg_migrate_pending(conn, m, 3), 2);
    /* Fixed, the run resumes where it stopped. */
    m[1].sql = "CREATE TABLE tg_partial (id int);";
    assert_int_equal(tg_migrate_apply(conn, m, 3, err, sizeof(err)), 2);
    /* A migration may not end the transaction it runs in. */
    const tg_migration_t commits[] = {{"104_commit", "CREATE TABLE tg_c (id int); COMMIT;"}};
    assert_int_equal(tg_migrate_apply(conn, commits, 1, err, sizeof(err)), -TG_EDB);
    assert_non_null(strstr(err, "104_commit"));
    PQfinish(conn);
}

static void test_bad_arguments(void **state)
{
    if (!pg) skip();
    PGconn *conn = connect_db();
    char err[512];
    const tg_migration_t unordered[] = {two[1], two[0]};
    const tg_migration_t dup[] = {two[0], two[0]};
    assert_int_equal(tg_migrate_apply(conn, unordered, 2, err, sizeof(err)), -TG_EINVAL);
    assert_int_equal(tg_migrate_apply(conn, dup, 2, err, sizeof(err)), -TG_EINVAL);
    PQclear(PQexec(conn, "BEGIN"));
    assert_int_equal(tg_migrate_apply(conn, two, 2, err, sizeof(err)), -TG_EINVAL);
    PQclear(PQexec(conn, "ROLLBACK"));
    PQfinish(conn);
}

/* Two nodes migrating at once: the lock serialises them, so each migration runs once. */
static const tg_migration_t slow[] = {
    {"201_slow", "CREATE TABLE tg_conc (n int); SELECT pg_sleep(0.3); "
                 "INSERT INTO tg_conc VALUES (1);"},
    {"202_next", "INSERT INTO tg_conc VALUES (2);"},
};

struct node {
    pthread_t thread;
    int rc;
    char err[512];
};

static void *migrate_node(void *arg)
{
    struct node *n = arg;
    PGconn *conn = PQconnectdb(conninfo);
    n->rc = PQstatus(conn) == CONNECTION_OK ? tg_migrate_apply(conn, slow, 2, n->err, 512) : -1;
    PQfinish(conn);
    return NULL;
}

static void test_concurrent_nodes_apply_once(void **state)
{
    if (!pg) skip();
    struct node nodes[2];
    memset(nodes, 0, sizeof(nodes));
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&nodes[i].thread, NULL, migrate_node, &nodes[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(nodes[i].thread, NULL);
    if (nodes[0].rc < 0 || nodes[1].rc < 0)
        fail_msg("apply failed: [%s] [%s]", nodes[0].err, nodes[1].err);
    assert_int_equal(nodes[0].rc + nodes[1].rc, 2);
    PGconn *conn = connect_db();
    assert_int_equal(query_long(conn, "SELECT count(*) FROM tg_conc"), 2);
    PQfinish(conn);
}

static void test_second_start_attaches(void **state)
{
    if (!pg) skip();
    tg_pg_embedded_t *other = NULL;
    char ci[1024], err[512];
    int rc = tg_pg_embedded_start(prefix, "tollgate", &other, ci, sizeof(ci), err, sizeof(err));
    if (rc != 0) fail_msg("attach: %s", err);
    assert_string_equal(ci, conninfo);
    tg_pg_embedded_stop(other); /* does not own the server: it keeps running */
    PGconn *conn = connect_db();
    assert_int_equal(query_long(conn, "SELECT 1"), 1);
    PQfinish(conn);
}

static void test_restart_over_stale_pid_file_keeps_data(void **state)
{
    if (!pg) skip();
    assert_int_equal(tg_pg_embedded_stop(pg), 0);
    pg = NULL;
    /* A crash left a postmaster.pid naming a live process that is not our server. */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/pg/data/postmaster.pid", prefix);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "1\n%s/pg/data\n0\n5432\n", prefix);
    fclose(f);
    assert_int_equal(start_pg(), 0);
    PGconn *conn = connect_db();
    assert_int_equal(tg_migrate_pending(conn, two, 2), 0);
    PQfinish(conn);
}

static void test_prefix_too_long_for_socket(void **state)
{
    char longp[PATH_MAX + 128], ci[256], err[512];
    snprintf(longp, sizeof(longp), "%s/%0100d", prefix, 0);
    tg_pg_embedded_t *h = NULL;
    int rc = tg_pg_embedded_start(longp, "tollgate", &h, ci, sizeof(ci), err, sizeof(err));
    assert_int_equal(rc, -TG_ETOOBIG);
    assert_null(h);
    assert_non_null(strstr(err, "too long"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_list_is_ordered),
        cmocka_unit_test(test_builtin_migrations_apply_cleanly),
        cmocka_unit_test(test_apply_then_reapply),
        cmocka_unit_test(test_failure_rolls_back_and_names_migration),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_concurrent_nodes_apply_once),
        cmocka_unit_test(test_second_start_attaches),
        cmocka_unit_test(test_restart_over_stale_pid_file_keeps_data),
        cmocka_unit_test(test_prefix_too_long_for_socket),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
