/*
 * bootstrap_token.h — the join token a control plane is handed by its environment
 * (`cluster_bootstrap_token`, i.e. TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN), so a deployment such as
 * deploy/docker-compose.yml can start data planes with `tollgate dp join ... --token $TOKEN`
 * without anyone running `tollgate cp token create` first.
 *
 * The token is an ordinary join token of the default control plane (join.h: same format,
 * stored as SHA-256 only, same endpoints), marked by its description so the CP knows which
 * rows it manages. Unlimited uses; it expires `cluster_bootstrap_token_ttl` after the last CP
 * start that ensured it. Main thread of `cp start`, on the session's connection, before the
 * listeners open.
 */
#ifndef TG_BOOTSTRAP_TOKEN_H
#define TG_BOOTSTRAP_TOKEN_H

#include "db.h"

/* The description that marks the rows this module manages. */
#define TG_BOOTSTRAP_TOKEN_DESCRIPTION "bootstrap token (cluster_bootstrap_token)"

/*
 * With cluster_bootstrap_token empty: does nothing and returns 0 (earlier bootstrap tokens
 * stay until they expire or are revoked). Otherwise, in one statement: creates the token, or
 * renews its secret, control plane and expiry when it is already a bootstrap token, and
 * deletes every other bootstrap token (a changed value is a rotation). Returns 0;
 * -TG_ECONFIG (malformed token or ttl), -TG_EEXISTS (the token's id belongs to a token made
 * with `cp token create`) or a db error, each logged once here.
 */
int tg_bootstrap_token_ensure(tg_db_t *db);

#endif
