/*
 * bootstrap_token.c — the join token given to the CP by its environment (see the header).
 *
 * Why one statement: several CP nodes start together in a compose or Kubernetes deployment,
 * each with the same token. INSERT ... ON CONFLICT makes the concurrent upserts agree, and
 * doing the upsert and the removal of older bootstrap tokens in one statement means no node
 * ever sees a state with both or neither.
 *
 * The statement writes join_tokens itself because join.h has no call that stores a token whose
 * value is given (tg_join_token_create draws a random one); it stores exactly what join.c
 * stores (SHA-256 of the whole token as bytea), so join.c's endpoints accept the token as any
 * other. A tg_join_token_put() in join.c would let this file drop its SQL.
 */
#include "bootstrap_token.h"
#include "config.h"
#include "crypto.h"
#include "error.h"
#include "join.h"
#include "log.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * $1 id, $2 control plane, $3 SHA-256 of the token (bytea), $4 lifetime in seconds,
 * $5 the marking description. The upsert only takes over a row that is already a bootstrap
 * token: a token an operator created by hand with the same id is never overwritten.
 */
static const char ENSURE_SQL[] =
    "WITH up AS ("
    " INSERT INTO join_tokens (id, cp_id, secret_digest, expires_at, uses_left, description)"
    " VALUES ($1, $2::uuid, $3::bytea, now() + $4::bigint * interval '1 second', NULL, $5)"
    " ON CONFLICT (id) DO UPDATE SET cp_id = EXCLUDED.cp_id,"
    "  secret_digest = EXCLUDED.secret_digest, expires_at = EXCLUDED.expires_at, uses_left = NULL"
    " WHERE join_tokens.description = EXCLUDED.description"
    " RETURNING id),"
    " gone AS ("
    " DELETE FROM join_tokens WHERE description = $5 AND id <> $1 AND EXISTS (SELECT 1 FROM up)"
    " RETURNING id)"
    " SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM gone)";

int tg_bootstrap_token_ensure(tg_db_t *db)
{
    const char *token = tg_config_get(TG_CONF_cluster_bootstrap_token);
    if (!*token) return 0;
    if (!tg_join_token_valid(token)) {
        /* Never echo the value: it is a secret, and logs travel further than env files. */
        TG_LOGE("cp", "cluster_bootstrap_token is not a join token: it must look like "
                      "[a-z0-9]{6}.[a-z0-9]{16} (e.g. from `tollgate cp token create` or "
                      "deploy/up.sh)");
        return -TG_ECONFIG;
    }
    int64_t ttl;
    if (tg_join_parse_ttl(tg_config_get(TG_CONF_cluster_bootstrap_token_ttl), &ttl) != 0) {
        TG_LOGE("cp",
                "cluster_bootstrap_token_ttl must be seconds or a number with s, m, h or d "
                "(at most 365d), not '%s'",
                tg_config_get(TG_CONF_cluster_bootstrap_token_ttl));
        return -TG_ECONFIG;
    }
    char cp_id[37];
    int rc = tg_join_resolve_cp(db, NULL, cp_id);
    if (rc != 0) {
        TG_LOGE("cp", "bootstrap token: cannot find the default control plane");
        return rc;
    }

    char id[TG_JOIN_TOKEN_ID_LEN + 1], digest[2 * TG_SHA256_LEN + 3] = "\\x", ttl_s[24];
    memcpy(id, token, TG_JOIN_TOKEN_ID_LEN);
    id[TG_JOIN_TOKEN_ID_LEN] = '\0';
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(token, strlen(token), d);
    tg_hex_encode(d, sizeof(d), digest + 2);
    OPENSSL_cleanse(d, sizeof(d));
    snprintf(ttl_s, sizeof(ttl_s), "%lld", (long long)ttl);
    const char *params[] = {id, cp_id, digest, ttl_s, TG_BOOTSTRAP_TOKEN_DESCRIPTION};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err, ENSURE_SQL, 5, params);
    if (!res) {
        TG_LOGE("cp", "cannot store the bootstrap token: %s", err.message);
        return err.code ? err.code : -TG_EDB;
    }
    long stored = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    long removed = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    if (stored != 1) {
        TG_LOGE("cp",
                "cluster_bootstrap_token: the id '%s' is taken by a join token made with "
                "`tollgate cp token create`; revoke it or choose another token",
                id);
        return -TG_EEXISTS;
    }
    if (removed > 0)
        TG_LOGN("cp", "bootstrap token rotated: %ld older bootstrap token(s) revoked", removed);
    TG_LOGN("cp", "bootstrap token %s valid for data plane joins for %llds", id, (long long)ttl);
    return 0;
}
