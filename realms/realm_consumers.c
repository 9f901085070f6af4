/*
 * realm_consumers.c — /v1/realms/{realmId}/consumers: consumers of a realm (list with
 * filter[...], create, get, patch, delete), `move` to another realm, and each consumer's keys
 * (list, create — the only response that ever carries the secret —, get, delete).
 *
 * Every write checks everything a client can get wrong (the body, the ids, the unique names)
 * before its first modifying statement, so a refused request has written nothing even inside
 * a group-commit batch; a unique violation that still happens (a concurrent write won the
 * race) aborts the transaction, which the batch then replays alone, and is answered 409.
 */
#include "alloc.h"
#include "crypto.h"
#include "realm_page.h"
#include "realm_problem.h"
#include "realm_schema.h"
#include "realm_store.h"
#include "realms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NIL_UUID "00000000-0000-0000-0000-000000000000"

/* ---------------------------------------------------------------- shared checks */

/* 0 when the realm exists; else replies 404 (or the db problem) and returns -1. */
static int need_realm(tg_admin_req_t *r, const char *realm_id)
{
    const char *p[] = {realm_id};
    bool found = false;
    int rc = tg_realms_exists(r, "SELECT 1 FROM realms WHERE id = $1::uuid", 1, p, &found);
    if (rc != 0)
        tg_realm_problem_db(r, rc);
    else if (!found)
        tg_realms_not_found(r, "realm");
    return rc == 0 && found ? 0 : -1;
}

/* 0 when the consumer exists in the realm (lock: FOR UPDATE inside a write). */
static int need_consumer(tg_admin_req_t *r, const char *realm_id, const char *consumer_id,
                         bool lock)
{
    if (need_realm(r, realm_id) != 0) return -1;
    const char *p[] = {realm_id, consumer_id};
    bool found = false;
    int rc = tg_realms_exists(
        r,
        lock
            ? "SELECT 1 FROM realm_consumers WHERE realm_id = $1::uuid AND id = $2::uuid FOR UPDATE"
            : "SELECT 1 FROM realm_consumers WHERE realm_id = $1::uuid AND id = $2::uuid",
        2, p, &found);
    if (rc != 0)
        tg_realm_problem_db(r, rc);
    else if (!found)
        tg_realms_not_found(r, "consumer");
    return rc == 0 && found ? 0 : -1;
}

/* Schema problems of body → 400; true when valid. */
static bool valid_body(tg_admin_req_t *r, const tg_realm_schema_t *s, const json_t *body,
                       bool create)
{
    json_t *params = json_array();
    if (tg_realm_schema_check(s, body, create, params) == 0) {
        json_decref(params);
        return true;
    }
    tg_realm_problem_reply(r, 400, params, "Invalid %s", s->name);
    return false;
}

/*
 * Username (case-insensitively) and custom_id are unique per realm. realm_id is where the
 * consumer is (or goes), self the consumer itself (NIL_UUID on create). Replies 409 on a clash.
 */
static bool unique_names(tg_admin_req_t *r, const char *realm_id, const char *self,
                         const char *username, const char *custom_id)
{
    const char *p[] = {realm_id, self, username ? username : "", custom_id ? custom_id : ""};
    bool taken = false;
    int rc = 0;
    if (username)
        rc = tg_realms_exists(
            r,
            "SELECT 1 FROM realm_consumers WHERE realm_id = $1::uuid AND id <> $2::uuid"
            " AND lower(username) = lower($3) AND $4 = $4",
            4, p, &taken);
    if (rc == 0 && taken) {
        tg_realms_conflict(r, "username",
                           "a consumer with this username already exists in the realm");
        return false;
    }
    if (rc == 0 && custom_id)
        rc = tg_realms_exists(
            r,
            "SELECT 1 FROM realm_consumers WHERE realm_id = $1::uuid AND id <> $2::uuid"
            " AND custom_id = $4 AND $3 = $3",
            4, p, &taken);
    if (rc != 0)
        tg_realm_problem_db(r, rc);
    else if (taken)
        tg_realms_conflict(r, "custom_id",
                           "a consumer with this custom_id already exists in the realm");
    return rc == 0 && !taken;
}

static void write_failed(tg_admin_req_t *r, const tg_db_err_t *err)
{
    tg_realm_store_rollback(r->db);
    if (strcmp(err->sqlstate, "23505") != 0) {
        if (strcmp(err->sqlstate, "23503") == 0)
            tg_realms_not_found(r, "realm"); /* deleted meanwhile */
        else
            tg_realm_problem_db(r, err->code);
    } else if (strstr(err->constraint, "custom_id")) {
        tg_realms_conflict(r, "custom_id",
                           "a consumer with this custom_id already exists in the realm");
    } else if (strstr(err->constraint, "digest")) {
        tg_realms_conflict(r, "secret", "a key with this secret already exists in the realm");
    } else {
        tg_realms_conflict(r, "username",
                           "a consumer with this username already exists in the realm");
    }
}

/* ---------------------------------------------------------------- consumers */

static const tg_realm_filter_t CONSUMER_FILTERS[] = {{"username", "username"},
                                                     {"custom_id", "custom_id"},
                                                     {"type", "type"},
                                                     {"id", "id::text"},
                                                     {NULL, NULL}};

static void list_consumers(tg_admin_req_t *r, const char *rid)
{
    if (need_realm(r, rid) != 0) return;
    tg_realm_page_t pg;
    tg_realm_sql_t q = {.where = ""};
    json_t *params = json_array();
    tg_realm_sql_and(&q, "t.realm_id = $%d::uuid", rid);
    tg_realm_page_parse(r, CONSUMER_FILTERS, &pg, &q, params);
    if (json_array_size(params) > 0)
        tg_realm_problem_reply(r, 400, params, "Invalid query parameters");
    else {
        json_decref(params);
        tg_realm_page_reply(r, TG_REALM_SQL_CONSUMER_JSON, "realm_consumers t", &q, &pg);
    }
    tg_realm_sql_free(&q);
}

static const char *INSERT_CONSUMER =
    "INSERT INTO realm_consumers AS t (realm_id, id, username, custom_id, type, tags, "
    "consumer_groups,"
    "                                  created_at, updated_at)"
    " SELECT $1::uuid, $2::uuid, b->>'username', b->>'custom_id', b->>'type',"
    "        coalesce(ARRAY(SELECT jsonb_array_elements_text(b->'tags')), '{}'),"
    "        coalesce(ARRAY(SELECT jsonb_array_elements_text(b->'consumer_groups')), '{}'), ts, ts"
    "   FROM (SELECT $3::jsonb AS b, clock_timestamp() AS ts) AS arg"
    " RETURNING " TG_REALM_SQL_CONSUMER_JSON;

static void create_consumer(tg_admin_req_t *r, const char *rid)
{
    json_t *body = tg_realms_body(r);
    if (!body) return;
    if (need_realm(r, rid) != 0 || !valid_body(r, &tg_realm_schema_consumer, body, true) ||
        !unique_names(r, rid, NIL_UUID, json_string_value(json_object_get(body, "username")),
                      json_string_value(json_object_get(body, "custom_id")))) {
        json_decref(body);
        return;
    }
    char id[TG_UUID_STR_LEN + 1];
    tg_uuid_v4(id);
    char *text = tg_realms_json_text(body);
    const char *p[] = {rid, id, text};
    tg_db_err_t err;
    json_t *docs = NULL;
    int rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0) rc = tg_realm_store_docs(r->db, &err, INSERT_CONSUMER, 3, p, &docs);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else
        tg_realm_reply(r, 201, json_incref(json_array_get(docs, 0)));
    json_decref(docs);
    free(text);
    json_decref(body);
}

static void get_consumer(tg_admin_req_t *r, const char *rid, const char *cid)
{
    if (need_realm(r, rid) != 0) return;
    const char *p[] = {rid, cid};
    json_t *doc;
    int rc =
        tg_realms_doc(r,
                      "SELECT " TG_REALM_SQL_CONSUMER_JSON
                      " FROM realm_consumers t WHERE t.realm_id = $1::uuid AND t.id = $2::uuid",
                      2, p, &doc);
    if (rc != 0)
        tg_realm_problem_db(r, rc);
    else if (!doc)
        tg_realms_not_found(r, "consumer");
    else
        tg_realm_reply(r, 200, doc);
}

static const char *UPDATE_CONSUMER =
    "UPDATE realm_consumers AS t SET"
    "  username = CASE WHEN $3::jsonb ? 'username' THEN $3::jsonb->>'username' ELSE t.username END,"
    "  custom_id = CASE WHEN $3::jsonb ? 'custom_id' THEN $3::jsonb->>'custom_id' ELSE t.custom_id "
    "END,"
    "  type = CASE WHEN $3::jsonb ? 'type' THEN $3::jsonb->>'type' ELSE t.type END,"
    "  tags = CASE WHEN $3::jsonb ? 'tags' THEN ARRAY(SELECT "
    "jsonb_array_elements_text($3::jsonb->'tags'))"
    "         ELSE t.tags END,"
    "  consumer_groups = CASE WHEN $3::jsonb ? 'consumer_groups'"
    "         THEN ARRAY(SELECT jsonb_array_elements_text($3::jsonb->'consumer_groups')) ELSE "
    "t.consumer_groups END,"
    "  updated_at = clock_timestamp()"
    " WHERE t.realm_id = $1::uuid AND t.id = $2::uuid"
    " RETURNING " TG_REALM_SQL_CONSUMER_JSON;

static void patch_consumer(tg_admin_req_t *r, const char *rid, const char *cid)
{
    json_t *body = tg_realms_body(r);
    if (!body) return;
    if (need_consumer(r, rid, cid, false) != 0 ||
        !valid_body(r, &tg_realm_schema_consumer, body, false) ||
        !unique_names(r, rid, cid, json_string_value(json_object_get(body, "username")),
                      json_string_value(json_object_get(body, "custom_id")))) {
        json_decref(body);
        return;
    }
    char *text = tg_realms_json_text(body);
    const char *p[] = {rid, cid, text};
    tg_db_err_t err;
    json_t *docs = NULL;
    json_t *ids = json_pack("[s]", cid);
    int rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0) rc = tg_realm_store_docs(r->db, &err, UPDATE_CONSUMER, 3, p, &docs);
    bool found = rc == 0 && json_array_size(docs) == 1;
    /* Data planes cache the consumer with its names, tags and groups: refresh them. */
    if (found && json_object_size(body) > 0)
        rc = tg_realm_store_notify(r->db, &err, rid, "consumer_updated", ids, NULL, false, NULL);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else if (!found)
        tg_realms_not_found(r, "consumer");
    else
        tg_realm_reply(r, 200, json_incref(json_array_get(docs, 0)));
    json_decref(ids);
    json_decref(docs);
    free(text);
    json_decref(body);
}

/* The hex digests of a consumer's keys (locked), for the invalidation. */
static int key_digests(tg_admin_req_t *r, const char *rid, const char *cid, json_t **out,
                       tg_db_err_t *err)
{
    const char *p[] = {rid, cid};
    PGresult *res = tg_db_exec(r->db, err,
                               "SELECT encode(key_digest, 'hex') FROM realm_keys"
                               " WHERE realm_id = $1::uuid AND consumer_id = $2::uuid FOR UPDATE",
                               2, p);
    if (!res) return err->code;
    *out = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(*out, json_string(PQgetvalue(res, i, 0)));
    PQclear(res);
    return 0;
}

static void delete_consumer(tg_admin_req_t *r, const char *rid, const char *cid)
{
    const char *p[] = {rid, cid};
    tg_db_err_t err;
    json_t *digests = NULL, *ids = json_pack("[s]", cid);
    bool found = false;
    int rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0) rc = key_digests(r, rid, cid, &digests, &err);
    if (rc == 0) {
        PGresult *res = tg_db_exec(
            r->db, &err,
            "DELETE FROM realm_consumers WHERE realm_id = $1::uuid AND id = $2::uuid RETURNING id",
            2, p);
        if (!res)
            rc = err.code;
        else {
            found = PQntuples(res) == 1;
            PQclear(res);
        }
    }
    if (rc == 0 && found)
        rc = tg_realm_store_notify(r->db, &err, rid, "consumer_deleted", ids, digests, false, NULL);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else if (!found)
        tg_realms_not_found(r, need_realm(r, rid) == 0 ? "consumer" : "realm");
    else
        tg_realm_reply(r, 204, NULL);
    json_decref(ids);
    json_decref(digests);
}

/* ---------------------------------------------------------------- move */

/* Refuses a move that would clash in the target realm: names, or a key secret it already has. */
static bool movable(tg_admin_req_t *r, const char *cid, const char *target)
{
    const char *p[] = {cid, target};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(
        r->db, &err,
        "SELECT EXISTS (SELECT 1 FROM realm_consumers o JOIN realm_consumers c ON c.id = $1::uuid"
        "               WHERE o.realm_id = $2::uuid AND lower(o.username) = lower(c.username)),"
        "       EXISTS (SELECT 1 FROM realm_consumers o JOIN realm_consumers c ON c.id = $1::uuid"
        "               WHERE o.realm_id = $2::uuid AND o.custom_id = c.custom_id),"
        "       EXISTS (SELECT 1 FROM realm_keys o JOIN realm_keys k ON k.consumer_id = $1::uuid"
        "               WHERE o.realm_id = $2::uuid AND o.key_digest = k.key_digest)",
        2, p);
    if (!res) {
        tg_realm_problem_db(r, err.code);
        return false;
    }
    const char *clash = strcmp(PQgetvalue(res, 0, 0), "t") == 0   ? "username"
                        : strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? "custom_id"
                        : strcmp(PQgetvalue(res, 0, 2), "t") == 0 ? "secret"
                                                                  : NULL;
    PQclear(res);
    if (!clash) return true;
    char detail[200];
    snprintf(detail, sizeof(detail), "the target realm already has a %s with the same %s",
             strcmp(clash, "secret") == 0 ? "key" : "consumer", clash);
    tg_realms_conflict(r, strcmp(clash, "secret") == 0 ? "target_realm_id" : clash, detail);
    return false;
}

static void move_consumer(tg_admin_req_t *r, const char *rid, const char *cid)
{
    json_t *body = tg_realms_body(r);
    if (!body) return;
    if (need_consumer(r, rid, cid, false) != 0 ||
        !valid_body(r, &tg_realm_schema_move, body, true)) {
        json_decref(body);
        return;
    }
    char target[TG_UUID_STR_LEN + 1];
    const char *t = json_string_value(json_object_get(body, "target_realm_id"));
    for (size_t k = 0; k <= TG_UUID_STR_LEN; k++)
        target[k] = (char)(t[k] >= 'A' && t[k] <= 'F' ? t[k] + 32 : t[k]);
    json_decref(body);
    const char *p0[] = {target};
    bool exists = false;
    int rc = tg_realms_exists(r, "SELECT 1 FROM realms WHERE id = $1::uuid", 1, p0, &exists);
    if (rc != 0) {
        tg_realm_problem_db(r, rc);
        return;
    }
    if (!exists || strcasecmp(target, rid) == 0) {
        json_t *params = json_array();
        tg_realm_problem_add(
            params, "target_realm_id", exists ? "different" : "reference", "body", NULL,
            exists ? "is the realm the consumer is already in" : "no realm has this id");
        tg_realm_problem_reply(r, 400, params, "Invalid move");
        return;
    }
    if (!movable(r, cid, target)) return;
    tg_db_err_t err;
    json_t *digests = NULL, *ids = json_pack("[s]", cid);
    const char *p[] = {rid, cid, target};
    bool moved = false;
    rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0) rc = key_digests(r, rid, cid, &digests, &err);
    if (rc == 0) {
        /* the keys follow through realm_keys_consumer_fkey ON UPDATE CASCADE */
        PGresult *res = tg_db_exec(
            r->db, &err,
            "UPDATE realm_consumers SET realm_id = $3::uuid, updated_at = clock_timestamp()"
            " WHERE realm_id = $1::uuid AND id = $2::uuid RETURNING id",
            3, p);
        if (!res)
            rc = err.code;
        else {
            moved = PQntuples(res) == 1;
            PQclear(res);
        }
    }
    if (rc == 0 && moved)
        rc = tg_realm_store_notify(r->db, &err, rid, "consumer_moved", ids, digests, false, target);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else if (!moved)
        tg_realms_not_found(r, "consumer");
    else
        tg_realm_reply(r, 201, json_pack("{s:s}", "realm_id", target));
    json_decref(ids);
    json_decref(digests);
}

/* ---------------------------------------------------------------- keys */

static void list_keys(tg_admin_req_t *r, const char *rid, const char *cid)
{
    if (need_consumer(r, rid, cid, false) != 0) return;
    static const tg_realm_filter_t filters[] = {{"type", "type"}, {"id", "id::text"}, {NULL, NULL}};
    tg_realm_page_t pg;
    tg_realm_sql_t q = {.where = ""};
    json_t *params = json_array();
    tg_realm_sql_and(&q, "t.realm_id = $%d::uuid", rid);
    tg_realm_sql_and(&q, "t.consumer_id = $%d::uuid", cid);
    tg_realm_page_parse(r, filters, &pg, &q, params);
    if (json_array_size(params) > 0)
        tg_realm_problem_reply(r, 400, params, "Invalid query parameters");
    else {
        json_decref(params);
        tg_realm_page_reply(r, TG_REALM_SQL_KEY_JSON, "realm_keys t", &q, &pg);
    }
    tg_realm_sql_free(&q);
}

static const char *INSERT_KEY =
    "INSERT INTO realm_keys AS t (realm_id, consumer_id, id, type, key_digest, tags, created_at, "
    "updated_at)"
    " SELECT $1::uuid, $2::uuid, $3::uuid, b->>'type', $5::bytea,"
    "        coalesce(ARRAY(SELECT jsonb_array_elements_text(b->'tags')), '{}'), ts, ts"
    "   FROM (SELECT $4::jsonb AS b, clock_timestamp() AS ts) AS arg"
    " RETURNING " TG_REALM_SQL_KEY_JSON;

static void create_key(tg_admin_req_t *r, const char *rid, const char *cid)
{
    json_t *body = tg_realms_body(r);
    if (!body) return;
    if (need_consumer(r, rid, cid, false) != 0 ||
        !valid_body(r, &tg_realm_schema_key, body, true)) {
        json_decref(body);
        return;
    }
    char secret_buf[33];
    const char *secret = json_string_value(json_object_get(body, "secret"));
    if (!secret) { /* type new: ~190 random bits, alphanumeric so it survives any header */
        tg_generate_key(secret_buf);
        secret = secret_buf;
    }
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(secret, strlen(secret), d);
    char hex[2 + 2 * TG_SHA256_LEN + 1] = "\\x";
    tg_hex_encode(d, sizeof(d), hex + 2);
    const char *pd[] = {rid, hex};
    bool clash = false;
    int rc = tg_realms_exists(
        r, "SELECT 1 FROM realm_keys WHERE realm_id = $1::uuid AND key_digest = $2::bytea", 2, pd,
        &clash);
    if (rc != 0 || clash) {
        if (rc != 0)
            tg_realm_problem_db(r, rc);
        else
            tg_realms_conflict(r, "secret", "a key with this secret already exists in the realm");
        json_decref(body);
        return;
    }
    char id[TG_UUID_STR_LEN + 1];
    tg_uuid_v4(id);
    char *text = tg_realms_json_text(body);
    const char *p[] = {rid, cid, id, text, hex};
    json_t *digests = json_pack("[s]", hex + 2), *ids = json_pack("[s]", cid);
    tg_db_err_t err;
    json_t *docs = NULL;
    rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0) rc = tg_realm_store_docs(r->db, &err, INSERT_KEY, 5, p, &docs);
    if (rc == 0)
        rc = tg_realm_store_notify(r->db, &err, rid, "key_created", ids, digests, false, NULL);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0) {
        write_failed(r, &err);
    } else {
        /* CreateApiKeyResult: the only time the secret leaves the control plane */
        json_t *doc = json_incref(json_array_get(docs, 0));
        json_object_set_new(doc, "secret", json_string(secret));
        tg_realm_reply(r, 201, doc);
    }
    memset(secret_buf, 0, sizeof(secret_buf));
    json_decref(digests);
    json_decref(ids);
    json_decref(docs);
    free(text);
    json_decref(body);
}

static void get_key(tg_admin_req_t *r, const char *rid, const char *cid, const char *kid)
{
    if (need_consumer(r, rid, cid, false) != 0) return;
    const char *p[] = {rid, cid, kid};
    json_t *doc;
    int rc = tg_realms_doc(r,
                           "SELECT " TG_REALM_SQL_KEY_JSON
                           " FROM realm_keys t WHERE t.realm_id = $1::uuid"
                           " AND t.consumer_id = $2::uuid AND t.id = $3::uuid",
                           3, p, &doc);
    if (rc != 0)
        tg_realm_problem_db(r, rc);
    else if (!doc)
        tg_realms_not_found(r, "key");
    else
        tg_realm_reply(r, 200, doc);
}

static void delete_key(tg_admin_req_t *r, const char *rid, const char *cid, const char *kid)
{
    if (need_consumer(r, rid, cid, false) != 0) return;
    const char *p[] = {rid, cid, kid};
    tg_db_err_t err;
    json_t *digests = json_array(), *ids = json_pack("[s]", cid);
    int rc = tg_realm_store_begin(r->db, &err);
    if (rc == 0) {
        PGresult *res =
            tg_db_exec(r->db, &err,
                       "DELETE FROM realm_keys WHERE realm_id = $1::uuid AND consumer_id = $2::uuid"
                       " AND id = $3::uuid RETURNING encode(key_digest, 'hex')",
                       3, p);
        if (!res)
            rc = err.code;
        else {
            if (PQntuples(res) == 1)
                json_array_append_new(digests, json_string(PQgetvalue(res, 0, 0)));
            PQclear(res);
        }
    }
    bool found = json_array_size(digests) == 1;
    if (rc == 0 && found)
        rc = tg_realm_store_notify(r->db, &err, rid, "key_deleted", ids, digests, false, NULL);
    if (rc == 0) rc = tg_realm_store_commit(r->db, &err);
    if (rc != 0)
        write_failed(r, &err);
    else if (!found)
        tg_realms_not_found(r, "key");
    else
        tg_realm_reply(r, 204, NULL);
    json_decref(digests);
    json_decref(ids);
}

/* ---------------------------------------------------------------- routing */

void tg_realms_consumers(tg_admin_req_t *r)
{
    const char *rid = r->segs[2];
    if (r->nsegs == 4) {
        if (!tg_realms_method(r, "GET POST", "GET, HEAD, POST, OPTIONS")) return;
        if (strcmp(r->method, "GET") == 0)
            list_consumers(r, rid);
        else
            create_consumer(r, rid);
        return;
    }
    if (!tg_realms_path_uuid(r, 4, "consumerId")) return;
    const char *cid = r->segs[4];
    if (r->nsegs == 5) {
        if (!tg_realms_method(r, "GET PATCH DELETE", "GET, HEAD, PATCH, DELETE, OPTIONS")) return;
        if (strcmp(r->method, "GET") == 0)
            get_consumer(r, rid, cid);
        else if (strcmp(r->method, "PATCH") == 0)
            patch_consumer(r, rid, cid);
        else
            delete_consumer(r, rid, cid);
    } else if (r->nsegs == 6 && strcmp(r->segs[5], "move") == 0) {
        if (tg_realms_method(r, "POST", "POST, OPTIONS")) move_consumer(r, rid, cid);
    } else if (r->nsegs == 6 && strcmp(r->segs[5], "keys") == 0) {
        if (!tg_realms_method(r, "GET POST", "GET, HEAD, POST, OPTIONS")) return;
        if (strcmp(r->method, "GET") == 0)
            list_keys(r, rid, cid);
        else
            create_key(r, rid, cid);
    } else if (r->nsegs == 7 && strcmp(r->segs[5], "keys") == 0) {
        if (!tg_realms_path_uuid(r, 6, "keyId")) return;
        if (!tg_realms_method(r, "GET DELETE", "GET, HEAD, DELETE, OPTIONS")) return;
        if (strcmp(r->method, "GET") == 0)
            get_key(r, rid, cid, r->segs[6]);
        else
            delete_key(r, rid, cid, r->segs[6]);
    } else {
        tg_realm_problem_reply(r, 404, NULL, "No such endpoint: %s", r->path);
    }
}
