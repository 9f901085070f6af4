/*
 * cp_session.c — prefix, database, migrations and keyring for the CP commands (cp_session.h).
 */
#include "cp_session.h"

#include "alloc.h"
#include "config.h"
#include "crypto.h"
#include "error.h"
#include "log.h"
#include "migrate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "cp"
#define CONNECT_ATTEMPTS 30 /* one a second: PostgreSQL may still be starting (compose, systemd) */

static int prepare_prefix(void)
{
    const char *prefix = tg_config_get(TG_CONF_prefix);
    if (tg_mkdir_p(prefix, 0755) != 0) {
        TG_LOGE(MOD, "cannot create prefix %s: %s", prefix, strerror(errno));
        return -TG_ESYS;
    }
    return 0;
}

/* Embedded PostgreSQL when pg_host is empty, else the configured server. */
static int open_database(tg_cp_session_t *s)
{
    if (*tg_config_get(TG_CONF_pg_host)) {
        s->conninfo = tg_db_conninfo_from_config();
        return 0;
    }
    char conninfo[1024], err[1024];
    if (tg_pg_embedded_start(tg_config_get(TG_CONF_prefix), tg_config_get(TG_CONF_pg_embedded_user),
                             &s->pg, conninfo, sizeof(conninfo), err, sizeof(err)) != 0) {
        TG_LOGE(MOD, "embedded PostgreSQL: %s", err);
        return -TG_EDBDOWN;
    }
    s->conninfo = tg_strdup(conninfo);
    return 0;
}

static int connect_retry(tg_db_t *db, const char *conninfo)
{
    char err[1024] = "";
    for (int attempt = 0; attempt < CONNECT_ATTEMPTS; attempt++) {
        if (tg_db_open(db, conninfo, err, sizeof(err)) == 0) return 0;
        tg_db_close(db);
        if (attempt == 0) TG_LOGW(MOD, "%s (retrying)", err);
        sleep(1);
    }
    TG_LOGE(MOD, "%s", err);
    return -TG_EDBDOWN;
}

static int migrate(tg_db_t *db)
{
    size_t n;
    const tg_migration_t *m = tg_migrate_builtin(&n);
    char err[1024];
    int applied = tg_migrate_apply(db->conn, m, n, err, sizeof(err));
    if (applied < 0) {
        TG_LOGE(MOD, "migrations failed: %s", err);
        return applied;
    }
    if (applied > 0) TG_LOGN(MOD, "applied %d migration(s)", applied);
    return 0;
}

int tg_cp_session_open(tg_cp_session_t *s)
{
    int rc = prepare_prefix();
    if (!rc) rc = open_database(s);
    if (!rc) rc = connect_retry(&s->db, s->conninfo);
    if (!rc) rc = migrate(&s->db);
    return rc;
}

void tg_cp_session_close(tg_cp_session_t *s)
{
    tg_db_close(&s->db);
    if (s->pg) tg_pg_embedded_stop(s->pg);
    s->pg = NULL;
    free(s->conninfo);
    s->conninfo = NULL;
}

int tg_cp_load_keyring(uint8_t key[32])
{
    char err[512];
    char *path = tg_config_prefix_path("keyring.key");
    int rc = tg_keyring_load(tg_config_get(TG_CONF_keyring_key), path, key, err, sizeof(err));
    free(path);
    if (rc != 0) TG_LOGE(MOD, "keyring: %s", err);
    return rc;
}
