/*
 * changelog.h — the change log of DESIGN.md §4, written at commit time.
 *
 * A write records its touched entities as one *group*; each group becomes one
 * config version. Groups are collected for a whole transaction (one Admin
 * write, or a batch of them under group commit) and written by one statement
 * that bumps the control plane's config_version by the number of groups,
 * adds their digest contributions to its config_digest (sync-protocol rule 5),
 * inserts the versions (each with its digest) and their change rows, and is the last statement
 * before COMMIT: the control-plane row lock is held only across the commit,
 * and versions become visible in commit order with no gaps. A trigger on
 * config_versions NOTIFYs listeners at commit.
 *
 * A tg_changelog_t belongs to the thread running the transaction.
 */
#ifndef TG_CHANGELOG_H
#define TG_CHANGELOG_H

#include "config_digest.h"
#include "db.h"

#include <jansson.h>

typedef struct tg_changelog {
    json_t *groups; /* [[cp_id, [[type, id, op], ...]], ...] in commit order */
} tg_changelog_t;

void tg_changelog_init(tg_changelog_t *cl);
void tg_changelog_clear(tg_changelog_t *cl);
/*
 * Adds one group (one future version); `changes` is borrowed ([type, id, op] rows). `delta` is
 * the group's contribution to the config digest (sum of the hashes of the rows it wrote minus
 * those of the rows it replaced or deleted, config_row.h), or NULL when it could not be
 * computed: the control plane's digest is then unknown (NULL) until recomputed.
 */
void tg_changelog_add(tg_changelog_t *cl, const char *cp_id, json_t *changes,
                      const tg_config_digest_t *delta);
/*
 * Writes every group (one statement per control plane) inside the caller's
 * open transaction. Returns 0 or the db error code; *last_version receives the
 * highest version written (0 when there were no groups).
 */
int tg_changelog_write(tg_changelog_t *cl, tg_db_t *db, tg_db_err_t *err, long long *last_version);

/*
 * Retention (sync-protocol rule 8): deletes the oldest config versions (their change rows
 * cascade) of every control plane, keeping at least its last `keep_versions` versions and
 * every version younger than `keep_seconds`. Runs in batches of `batch` rows, each its own
 * transaction under a tried transaction-level advisory lock, so at most one CP node purges at
 * a time and writers are never blocked for long; stops after `max_batches`. Opens and closes
 * its own transactions (call it outside one). 0 (also when another node holds the lock) or
 * the db error code; *purged counts the versions deleted.
 */
int tg_changelog_purge(tg_db_t *db, long long keep_versions, double keep_seconds, int batch,
                       int max_batches, long long *purged, tg_db_err_t *err);

#endif
