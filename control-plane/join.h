/*
 * join.h — join tokens, data plane enrolment and the CP nodes' cluster endpoints
 * (DESIGN.md §6, modelled on kubeadm's bootstrap tokens).
 *
 * A join token is "<id>.<secret>" ([a-z0-9]{6}.[a-z0-9]{16}, from the CSPRNG), bound to one
 * control plane, with an expiry and an optional use count. Only SHA-256 of the whole token is
 * stored (join_tokens.secret_digest); the id is public and names the token.
 *
 * The join endpoints served on cluster_listen (tg_join_handle):
 *   GET  /v1/join/cluster-info?token_id=<id>  the CA certificate, its SPKI hash, the CP
 *        endpoints and the control plane id, with X-Tollgate-Signature: <id>:<hex HMAC-SHA256
 *        of the body keyed with SHA-256(token)>, so only a holder of the token can check it and
 *        a man in the middle without the token cannot forge it.
 *   POST /v1/join/csr  (Authorization: Bearer <token>, {"csr": PEM, "hostname": ...})
 *        consumes one use and enrols a new DP in one transaction: a CSR that is refused leaves
 *        the token as it was.
 *
 * Everything here runs on a thread that owns `db` (a CP worker or a CLI command), never on an
 * event loop. Functions that write several rows use their own transaction, or a savepoint when
 * `db` is already inside one (a group-commit batch), so a failure never half-applies. Unknown,
 * expired and used-up tokens get the same answer, so the API does not tell which.
 */
#ifndef TG_JOIN_H
#define TG_JOIN_H

#include "cluster_ca.h"
#include "db.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_JOIN_TOKEN_LEN 23 /* "abcdef.0123456789abcdef" */
#define TG_JOIN_TOKEN_ID_LEN 6
#define TG_JOIN_DEFAULT_TTL (24 * 3600)
#define TG_JOIN_MAX_TTL (365L * 86400)
#define TG_JOIN_DESCRIPTION_MAX 1000
#define TG_JOIN_SIGNATURE_HEADER "X-Tollgate-Signature"

/* True for a well-formed token / token id (format only). */
bool tg_join_token_valid(const char *token);
bool tg_join_token_id_valid(const char *id);
/*
 * A TTL: seconds ("3600") or a number with one unit s, m, h or d ("90m", "24h", "7d").
 * Returns 0 with 1 <= *out <= TG_JOIN_MAX_TTL, or -TG_EINVAL.
 */
int tg_join_parse_ttl(const char *s, int64_t *out);

/*
 * The host:port DPs use to reach this CP node: cluster_advertise when set, else the
 * cluster_listen address (first listener), with this host's name in place of a wildcard
 * address ("<hostname>:8005" by default).
 */
void tg_cluster_advertise(char *out, size_t cap);

/* The control plane named by id or name (NULL = "default"): 0, -TG_ENOTFOUND or a db error. */
int tg_join_resolve_cp(tg_db_t *db, const char *cp_id_or_name, char cp_id[37]);

/*
 * Creates a token for the control plane `cp_id_or_name` (NULL = default), valid ttl_s seconds
 * (0 = 24 h), for `uses` enrolments (0 = unlimited), with an optional description. On success
 * returns 0, the token in token_out and, when info_out is non-NULL, its record as
 * {"id","control_plane_id","expires_at","uses_left","description","created_at"} (times in
 * unix seconds, uses_left null when unlimited; no secret). Returns -TG_EINVAL (ttl_s < 0 or
 * above TG_JOIN_MAX_TTL, uses < 0, description too long), -TG_ENOTFOUND (no such control
 * plane) or a db error. Works inside a caller's transaction (no BEGIN of its own).
 */
int tg_join_token_create(tg_db_t *db, const char *cp_id_or_name, int64_t ttl_s, int uses,
                         const char *description, char token_out[24], json_t **info_out);
/* Every token's record (as above, plus "expired": bool), oldest first; cp_id NULL = all. */
int tg_join_token_list(tg_db_t *db, const char *cp_id, json_t **out);
/* Deletes a token: 0, -TG_ENOTFOUND, or a db error. */
int tg_join_token_delete(tg_db_t *db, const char *id);

/* ---------------------------------------------------------------- the join endpoints */

typedef struct tg_join_http_req {
    const char *method, *path, *query, *authorization; /* query without '?'; NULL = absent */
    const char *body;
    size_t body_len;
    const char *peer; /* the client's address, recorded on enrolment; may be NULL */
} tg_join_http_req_t;

typedef struct tg_join_http_resp {
    int status;
    char *body;          /* malloc'd JSON; the caller frees it */
    char signature[160]; /* "" or the value for the X-Tollgate-Signature header */
} tg_join_http_resp_t;

/*
 * Serves one request to /v1/join/... (see the file comment); every answer has a JSON body:
 * 200/201 on success, 400 bad input, 401 bad token, 404 unknown path, 405 wrong method,
 * 503 database unreachable. `endpoints` are the CP endpoints handed to DPs; when nendpoints
 * is 0 they are read with tg_cluster_nodes_endpoints(). The certificate lifetime comes from
 * cluster_dp_cert_lifetime.
 */
void tg_join_handle(tg_db_t *db, const tg_cluster_ca_t *ca, const char *const *endpoints,
                    size_t nendpoints, const tg_join_http_req_t *req, tg_join_http_resp_t *resp);

/* ---------------------------------------------------------------- enrolled data planes */

/*
 * For the sync server on every connect: 0 when the DP is enrolled in that control plane, not
 * revoked, and cert_serial (hex, any case) is its current certificate's; -TG_EPERM when it is
 * revoked or the serial was superseded by a renewal; -TG_ENOTFOUND when unknown; db errors.
 */
int tg_join_check_data_plane(tg_db_t *db, const char *node_id, const char *cp_id,
                             const char *cert_serial);

/*
 * Issues a new certificate for an enrolled, non-revoked DP from its CSR (over its live sync
 * connection) and records the new serial and expiry, in one transaction. Returns 0 with
 * *cert_pem (caller frees), -TG_ENOTFOUND, -TG_EPERM (revoked), -TG_EINVAL (CSR refused; reason
 * in err), or a db error.
 */
int tg_join_renew(tg_db_t *db, const tg_cluster_ca_t *ca, const char *node_id, const char *cp_id,
                  const char *csr_pem, char **cert_pem, char *err, size_t errlen);

/* ---------------------------------------------------------------- CP nodes */

/* Records that CP node `node_id` (re)started with this cluster endpoint (host:port). */
int tg_cluster_nodes_register(tg_db_t *db, const char *node_id, const char *endpoint,
                              const char *hostname);
/* Keeps a node in the endpoint list: call it more often than every 5 minutes. */
int tg_cluster_nodes_touch(tg_db_t *db, const char *node_id);
/*
 * The endpoints DPs should know: this node's advertised address first, then every node seen
 * in the last 5 minutes, without duplicates. Never NULL (the advertised address alone when
 * the database cannot be read); caller json_decref()s.
 */
json_t *tg_cluster_nodes_endpoints(tg_db_t *db);

#endif
