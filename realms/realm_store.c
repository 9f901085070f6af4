/*
 * realm_store.c — see realm_store.h.
 */
#include "realm_store.h"
#include "alloc.h"
#include "crypto.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- lookup */

/*
 * One statement: the realm row always comes back (when it exists), the key and its consumer
 * only when the digest matches, so "no realm", "not allowed" and "no key" are told apart
 * without a second round trip. The consumer is built only for an allowed control plane.
 */
static const char *LOOKUP_SQL =
    "SELECT r.ttl, r.negative_ttl,"
    "       ($3 = ANY (r.allowed_control_planes) OR '*' = ANY (r.allowed_control_planes)) AS "
    "allowed,"
    "       CASE WHEN c.id IS NOT NULL THEN json_build_object("
    "           'id', c.id, 'username', c.username, 'custom_id', c.custom_id, 'type', c.type,"
    "           'tags', to_json(c.tags), 'realm_id', r.id, 'key_id', k.id,"
    "           'consumer_groups', to_json(ARRAY(SELECT g FROM unnest(r.consumer_groups || "
    "c.consumer_groups)"
    "                                            WITH ORDINALITY AS u(g, n) GROUP BY g ORDER BY "
    "min(n))))"
    "       END"
    "  FROM realms r"
    "  LEFT JOIN realm_keys k ON k.realm_id = r.id AND k.key_digest = $2::bytea"
    "  LEFT JOIN realm_consumers c ON c.realm_id = k.realm_id AND c.id = k.consumer_id"
    " WHERE r.id = $1::uuid";

int tg_realm_store_lookup(tg_db_t *db, const char *realm_id, const uint8_t digest[32],
                          const char *cp_id, tg_realm_store_answer_t *out, tg_db_err_t *err)
{
    memset(out, 0, sizeof(*out));
    if (!tg_uuid_valid(tg_str_from(realm_id)) || !tg_uuid_valid(tg_str_from(cp_id)))
        return -TG_EINVAL;
    char hex[2 + 64 + 1] = "\\x";
    tg_hex_encode(digest, 32, hex + 2);
    /* allowed_control_planes holds lower-case ids (the API normalises them) */
    char cp[TG_UUID_STR_LEN + 1];
    for (size_t i = 0; i <= TG_UUID_STR_LEN; i++)
        cp[i] = (char)(cp_id[i] >= 'A' && cp_id[i] <= 'F' ? cp_id[i] + 32 : cp_id[i]);
    const char *params[] = {realm_id, hex, cp};
    PGresult *res = tg_db_exec(db, err, LOOKUP_SQL, 3, params);
    if (!res) return err->code;
    if (PQntuples(res) == 0) {
        out->result = TG_REALM_LOOKUP_NO_REALM;
        PQclear(res);
        return 0;
    }
    out->ttl_minutes = atoi(PQgetvalue(res, 0, 0));
    out->negative_ttl_minutes = atoi(PQgetvalue(res, 0, 1));
    if (strcmp(PQgetvalue(res, 0, 2), "t") != 0)
        out->result = TG_REALM_LOOKUP_NOT_ALLOWED;
    else if (PQgetisnull(res, 0, 3))
        out->result = TG_REALM_LOOKUP_NOT_FOUND;
    else {
        out->consumer = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
        out->result = out->consumer ? TG_REALM_LOOKUP_FOUND : TG_REALM_LOOKUP_NOT_FOUND;
    }
    PQclear(res);
    return 0;
}

void tg_realm_store_answer_clear(tg_realm_store_answer_t *out)
{
    json_decref(out->consumer);
    out->consumer = NULL;
}

/* ---------------------------------------------------------------- transactions */

int tg_realm_store_begin(tg_db_t *db, tg_db_err_t *err)
{
    return db->batch ? 0 : tg_db_run(db, err, "BEGIN", 0, NULL);
}

int tg_realm_store_commit(tg_db_t *db, tg_db_err_t *err)
{
    if (db->batch) return 0;
    PGresult *res = tg_db_exec(db, err, "COMMIT", 0, NULL);
    if (!res) return err->code;
    /* An aborted transaction answers COMMIT with ROLLBACK: nothing was written. */
    int rc = strcmp(PQcmdStatus(res), "COMMIT") == 0 ? 0 : -TG_EDB;
    if (rc != 0) snprintf(err->message, sizeof(err->message), "transaction rolled back at commit");
    err->code = rc;
    PQclear(res);
    return rc;
}

void tg_realm_store_rollback(tg_db_t *db)
{
    tg_db_err_t err;
    if (!db->batch && db->conn && PQtransactionStatus(db->conn) != PQTRANS_IDLE)
        tg_db_run(db, &err, "ROLLBACK", 0, NULL);
}

/* ---------------------------------------------------------------- notify */

int tg_realm_store_notify(tg_db_t *db, tg_db_err_t *err, const char *realm_id, const char *op,
                          const json_t *consumer_ids, const json_t *key_digests, bool flush,
                          const char *target_realm_id)
{
    /* Bounded payload: past the limit a whole-realm flush says the same, correctly. */
    if (json_array_size(key_digests) > TG_REALM_NOTIFY_MAX_KEYS ||
        json_array_size(consumer_ids) > TG_REALM_NOTIFY_MAX_KEYS)
        flush = true;
    json_t *p = json_pack("{s:s,s:s,s:b}", "realm_id", realm_id, "op", op, "flush", flush);
    if (!flush) {
        json_object_set_new(p, "key_digests",
                            key_digests ? json_deep_copy(key_digests) : json_array());
        json_object_set_new(p, "consumer_ids",
                            consumer_ids ? json_deep_copy(consumer_ids) : json_array());
    }
    if (target_realm_id) json_object_set_new(p, "target_realm_id", json_string(target_realm_id));
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    const char *params[] = {TG_REALM_NOTIFY_CHANNEL, text};
    int rc = tg_db_run(db, err, "SELECT pg_notify($1, $2)", 2, params);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- documents */

int tg_realm_store_docs(tg_db_t *db, tg_db_err_t *err, const char *sql, int nparams,
                        const char *const *params, json_t **out)
{
    *out = NULL;
    PGresult *res = tg_db_exec(db, err, sql, nparams, params);
    if (!res) return err->code;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *doc = json_loads(PQgetvalue(res, i, 0), 0, NULL);
        if (!doc) { /* PostgreSQL built it: cannot happen short of memory exhaustion */
            json_decref(arr);
            PQclear(res);
            memset(err, 0, sizeof(*err));
            err->code = -TG_EDB;
            return err->code;
        }
        json_array_append_new(arr, doc);
    }
    PQclear(res);
    *out = arr;
    return 0;
}
