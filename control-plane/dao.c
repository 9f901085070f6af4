/*
 * dao.c — see dao.h. SQL is built from the entity descriptions: every table
 * has (cp_id, id, created_at, tags, doc) plus one column per unique field and
 * one `<field>_id` column per foreign reference; credentials add key_digest,
 * key_enc and expires_at.
 */
#include "dao.h"
#include "alloc.h"
#include "changelog.h"
#include "config_row.h"
#include "crypto.h"
#include "error.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_COLS 24
#define ZERO_UUID "00000000-0000-0000-0000-000000000000"

void tg_dao_init(tg_dao_t *dao, tg_db_t *db, const char *cp_id, const uint8_t *keyring)
{
    memset(dao, 0, sizeof(*dao));
    dao->db = db;
    snprintf(dao->cp_id, sizeof(dao->cp_id), "%s", cp_id);
    dao->keyring = keyring;
}

void tg_dao_reset(tg_dao_t *dao)
{
    json_decref(dao->error);
    json_decref(dao->changes);
    dao->error = dao->changes = NULL;
    dao->status = 0;
}

static long long now_s(void)
{
    return (long long)time(NULL);
}

/*
 * The current second rounded up, for reporting a TTL's remaining seconds. Kong answers
 * floor(expiry - now) with a sub-second clock, so a credential created with ttl=10 reads 9
 * straight away (go-kong's TestKeyAuthCreateWithTTL relies on it); with whole-second
 * expiries, floor(expires_at - now) is expires_at - ceil(now). Adding a value read that way
 * back to this clock gives the same expiry again (updates keep a credential's expiry).
 */
static long long now_up_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec + (ts.tv_nsec > 0);
}

/* ---------------------------------------------------------------- errors */

int tg_dao_fail(tg_dao_t *dao, int code, const char *message, json_t *fields)
{
    json_decref(dao->error);
    dao->status = tg_api_error_status(code);
    dao->error = json_pack("{s:i,s:s,s:s}", "code", code, "name", tg_api_error_name(code),
                           "message", message);
    if (fields) json_object_set_new(dao->error, code == TG_API_INVALID_OPTIONS ? "options" : "fields", fields);
    return -1;
}

static int fail_plain(tg_dao_t *dao, int status, const char *message)
{
    json_decref(dao->error);
    dao->status = status;
    dao->error = json_pack("{s:s}", "message", message);
    return -1;
}

static int fail_not_found(tg_dao_t *dao)
{
    return fail_plain(dao, 404, "Not found");
}

/* Kong's `UNIQUE violation detected on '{field="value"}'`. */
static int fail_unique(tg_dao_t *dao, json_t *key)
{
    char *pretty = tg_lua_pretty(key);
    char *msg = tg_asprintf("UNIQUE violation detected on '%s'", pretty);
    tg_dao_fail(dao, TG_API_UNIQUE_VIOLATION, msg, key);
    free(pretty);
    free(msg);
    return -1;
}

static const tg_schema_t *schema_for_table_prefix(const char *constraint)
{
    const tg_schema_t *best = NULL;
    for (size_t i = 0; tg_entities[i]; i++) {
        size_t n = strlen(tg_entities[i]->name);
        if (strncmp(constraint, tg_entities[i]->name, n) == 0 && constraint[n] == '_' &&
            (!best || n > strlen(best->name)))
            best = tg_entities[i];
    }
    return best;
}

/* The field a constraint named `<table>_<field>_<suffix>` is about (static buffer-free copy). */
static char *constraint_field(const char *constraint, const char *table, const char *suffix)
{
    size_t tl = strlen(table), cl = strlen(constraint), sl = strlen(suffix);
    if (cl <= tl + 1 + sl) return NULL;
    return tg_strndup(constraint + tl + 1, cl - tl - 1 - sl);
}

static json_t *plugin_scope_key(const json_t *e)
{
    json_t *k = json_object();
    static const char *const names[] = {"consumer", "name", "route", "service"};
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(e, names[i]);
        json_object_set_new(k, names[i], v ? json_deep_copy(v) : json_null());
    }
    return k;
}

static int map_unique(tg_dao_t *dao, const tg_schema_t *s, const tg_db_err_t *err, const json_t *e,
                      const char *plain_key)
{
    char *field = constraint_field(err->constraint, s->name, "_key");
    json_t *key = NULL;
    if (strcmp(err->constraint, "plugins_scope_key") == 0) {
        key = plugin_scope_key(e);
    } else if (strstr(err->constraint, "_pkey") || (field && strcmp(field, "cp_id") == 0)) {
        free(field);
        json_t *pk = json_pack("{s:O}", "id", json_object_get(e, "id"));
        char *pretty = tg_lua_pretty(pk);
        char *msg = tg_asprintf("primary key violation on key '%s'", pretty);
        tg_dao_fail(dao, TG_API_PRIMARY_KEY_VIOLATION, msg, pk);
        free(pretty);
        free(msg);
        return -1;
    } else if (field) {
        json_t *v = json_object_get(e, field);
        if (strcmp(field, "key") == 0 && plain_key) v = json_string(plain_key);
        else v = v ? json_incref(v) : json_null();
        key = json_object();
        json_object_set_new(key, field, v);
    }
    free(field);
    if (!key) return fail_plain(dao, 500, "An unexpected error occurred");
    return fail_unique(dao, key);
}

static int map_foreign(tg_dao_t *dao, const tg_schema_t *s, const tg_db_err_t *err, const json_t *e,
                       bool deleting)
{
    /* Every entity row references its control plane: that one was deleted during the write. */
    size_t cl = strlen(err->constraint);
    if (cl > 11 && strcmp(err->constraint + cl - 11, "_cp_id_fkey") == 0) return fail_not_found(dao);
    const tg_schema_t *child = schema_for_table_prefix(err->constraint);
    if (deleting && child) {
        char *msg = tg_asprintf("an existing '%s' entity references this '%s' entity", child->name,
                                s->name);
        tg_dao_fail(dao, TG_API_FOREIGN_KEY_VIOLATION, msg,
                    json_pack("{s:s}", "@referenced_by", child->name));
        free(msg);
        return -1;
    }
    char *field = child ? constraint_field(err->constraint, child->name, "_fkey") : NULL;
    const tg_field_t *f = field ? tg_schema_field(s, field) : NULL;
    if (!f || !f->rec) {
        free(field);
        return fail_plain(dao, 500, "An unexpected error occurred");
    }
    json_t *ref = json_object_get(e, field);
    char *pretty = tg_lua_pretty(ref);
    char *msg = tg_asprintf("the foreign key '%s' does not reference an existing '%s' entity.",
                            pretty, f->rec->name);
    json_t *fields = json_object();
    json_object_set(fields, field, ref);
    tg_dao_fail(dao, TG_API_FOREIGN_KEY_VIOLATION, msg, fields);
    free(pretty);
    free(msg);
    free(field);
    return -1;
}

static int map_db_error(tg_dao_t *dao, const tg_schema_t *s, const tg_db_err_t *err,
                        const json_t *e, const char *plain_key, bool deleting)
{
    if (err->code == -TG_EDBDOWN) return fail_plain(dao, 503, "Service unavailable");
    if (strcmp(err->sqlstate, "23505") == 0 && e) return map_unique(dao, s, err, e, plain_key);
    if (strcmp(err->sqlstate, "23503") == 0) return map_foreign(dao, s, err, e, deleting);
    TG_LOGE("dao", "%s: database error %s: %s", s->name, err->sqlstate, err->message);
    return fail_plain(dao, 500, "An unexpected error occurred");
}

/* ---------------------------------------------------------------- reading */

static const tg_field_t *secret_field(const tg_schema_t *s)
{
    for (const tg_field_t *f = s->fields; f->name; f++)
        if (f->flags & TG_F_SECRET) return f;
    return NULL;
}

/* The row id is aliased: an output column named `id` would make ORDER BY id sort by its text. */
static const char *select_list(const tg_schema_t *s)
{
    return secret_field(s) ? "doc::text, encode(key_enc, 'hex'), expires_at, id::text AS row_id"
                           : "doc::text, NULL, NULL, id::text AS row_id";
}

static const char *visible_clause(const tg_schema_t *s)
{
    return s->ttl ? " AND (expires_at IS NULL OR expires_at > extract(epoch from now())::bigint)" : "";
}

static char *hex_of(const uint8_t *p, size_t n)
{
    char *out = tg_malloc(2 * n + 3);
    out[0] = '\\';
    out[1] = 'x';
    tg_hex_encode(p, n, out + 2);
    return out;
}

static uint8_t *unhex(const char *hex, size_t *n)
{
    size_t len = strlen(hex);
    *n = len / 2;
    uint8_t *out = tg_malloc(*n + 1);
    for (size_t i = 0; i < *n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) { free(out); return NULL; }
        out[i] = (uint8_t)v;
    }
    return out;
}

static json_t *row_entity(tg_dao_t *dao, const tg_schema_t *s, PGresult *res, int row)
{
    json_t *e = json_loads(PQgetvalue(res, row, 0), 0, NULL);
    if (!e) return NULL;
    if (!PQgetisnull(res, row, 1)) {
        size_t n, ptn;
        uint8_t *blob = unhex(PQgetvalue(res, row, 1), &n), *pt = NULL;
        const char *id = PQgetvalue(res, row, 3);
        if (blob && tg_aead_decrypt(dao->keyring, id, strlen(id), blob, n, &pt, &ptn) == 0)
            json_object_set_new(e, "key", json_stringn((const char *)pt, ptn));
        else
            TG_LOGE("dao", "cannot decrypt the key of credential %s (wrong keyring_key?)", id);
        free(blob);
        free(pt);
    }
    if (!PQgetisnull(res, row, 2)) {
        long long left = atoll(PQgetvalue(res, row, 2)) - now_up_s();
        json_object_set_new(e, "ttl", json_integer(left > 0 ? left : 0));
    }
    return e;
}

/* WHERE fragment and parameter locating one entity by id or endpoint key. */
static const char *locate(const tg_schema_t *s, const char *id_or_key, char **param)
{
    if (tg_uuid_valid(tg_str_from(id_or_key))) {
        *param = tg_strdup(id_or_key);
        return "id = $2::uuid";
    }
    const tg_field_t *ek = s->endpoint_key ? tg_schema_field(s, s->endpoint_key) : NULL;
    if (!ek) return NULL;
    if (ek->flags & TG_F_SECRET) {
        uint8_t d[TG_SHA256_LEN];
        tg_sha256(id_or_key, strlen(id_or_key), d);
        *param = hex_of(d, sizeof(d));
        return "key_digest = $2::bytea";
    }
    *param = tg_strdup(id_or_key);
    return NULL; /* caller builds "<endpoint_key> = $2" */
}

/* Fetches one row; `lock` adds FOR UPDATE. Returns 1 found, 0 absent, -1 error. */
static int fetch(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key, bool lock, json_t **out)
{
    char *param = NULL;
    const char *where = locate(s, id_or_key, &param);
    if (!param) return 0;
    char *sql = where ? tg_asprintf("SELECT %s FROM %s WHERE cp_id = $1 AND %s%s%s", select_list(s),
                                    s->name, where, visible_clause(s), lock ? " FOR UPDATE" : "")
                      : tg_asprintf("SELECT %s FROM %s WHERE cp_id = $1 AND %s = $2%s%s",
                                    select_list(s), s->name, s->endpoint_key, visible_clause(s),
                                    lock ? " FOR UPDATE" : "");
    const char *params[] = {dao->cp_id, param};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(dao->db, &err, sql, 2, params);
    free(sql);
    free(param);
    if (!res) return map_db_error(dao, s, &err, NULL, NULL, false);
    int found = PQntuples(res) > 0;
    if (found) *out = row_entity(dao, s, res, 0);
    PQclear(res);
    return found;
}

int tg_dao_get(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key, json_t **out)
{
    int rc = fetch(dao, s, id_or_key, false, out);
    if (rc < 0) return -1;
    return rc ? 0 : fail_not_found(dao);
}

/* ---------------------------------------------------------------- listing */

/* A PostgreSQL text[] literal with every element quoted (tags columns and tag filters). */
static char *tags_literal(const json_t *tags)
{
    size_t i, cap = 3, len = 0;
    json_t *t;
    json_array_foreach(tags, i, t) cap += json_string_length(t) * 2 + 3;
    char *lit = tg_malloc(cap);
    lit[len++] = '{';
    json_array_foreach(tags, i, t) {
        if (i) lit[len++] = ',';
        lit[len++] = '"';
        for (const char *p = json_string_value(t); *p; p++) {
            if (*p == '"' || *p == '\\') lit[len++] = '\\';
            lit[len++] = *p;
        }
        lit[len++] = '"';
    }
    lit[len++] = '}';
    lit[len] = '\0';
    return lit;
}

/* Kong's tags filter: a,b = all of them; a/b = any of them. */
static int parse_tags(tg_dao_t *dao, const char *raw, char **array_literal, bool *any)
{
    if (!raw) return 0;
    if (!*raw) return tg_dao_fail(dao, TG_API_INVALID_OPTIONS, "invalid option (tags: cannot be null)",
                                   json_pack("{s:s}", "tags", "cannot be null"));
    bool comma = strchr(raw, ',') != NULL, slash = strchr(raw, '/') != NULL;
    if (comma && slash)
        return tg_dao_fail(dao, TG_API_INVALID_OPTIONS,
                           "invalid option (tags: invalid filter: mixing \"and\" and \"or\" is not supported)",
                           json_pack("{s:s}", "tags", "invalid filter: mixing \"and\" and \"or\" is not supported"));
    *any = slash;
    json_t *arr = json_array();
    char *copy = tg_strdup(raw), *save = NULL;
    for (char *t = strtok_r(copy, slash ? "/" : ",", &save); t; t = strtok_r(NULL, slash ? "/" : ",", &save))
        json_array_append_new(arr, json_string(t));
    free(copy);
    *array_literal = tags_literal(arr);
    json_decref(arr);
    return 0;
}

static int parse_size(tg_dao_t *dao, const char *raw, long *size)
{
    *size = 100;
    if (!raw) return 0;
    char *end;
    double d = strtod(raw, &end);
    if (end == raw || *end) return tg_dao_fail(dao, TG_API_INVALID_SIZE, "size must be a number", NULL);
    if (d != (long)d || d < 1 || d > 1000)
        return tg_dao_fail(dao, TG_API_INVALID_SIZE, "size must be an integer between 1 and 1000", NULL);
    *size = (long)d;
    return 0;
}

/* Offsets are the base64 of the last id of the previous page (keyset pagination). */
static int parse_offset(tg_dao_t *dao, const char *raw, char **after)
{
    *after = NULL;
    if (!raw) return 0;
    size_t n;
    uint8_t *dec = tg_base64_decode(raw, strlen(raw), &n);
    if (!dec || !tg_uuid_valid((tg_str_t){(const char *)dec, n})) {
        free(dec);
        char *msg = tg_asprintf("'%s' is not a valid offset: bad base64 encoding", raw);
        tg_dao_fail(dao, TG_API_INVALID_OFFSET, msg, NULL);
        free(msg);
        return -1;
    }
    *after = tg_strndup((const char *)dec, n);
    free(dec);
    return 0;
}

/* "[doc,doc,...]" straight from the stored documents (what the API returns for them). */
static char *concat_docs(PGresult *res, int n)
{
    size_t len = 2;
    for (int i = 0; i < n; i++) len += (size_t)PQgetlength(res, i, 0) + 1;
    char *out = tg_malloc(len + 1), *p = out;
    *p++ = '[';
    for (int i = 0; i < n; i++) {
        if (i) *p++ = ',';
        size_t l = (size_t)PQgetlength(res, i, 0);
        memcpy(p, PQgetvalue(res, i, 0), l);
        p += l;
    }
    *p++ = ']';
    *p = '\0';
    return out;
}

int tg_dao_list(tg_dao_t *dao, const tg_schema_t *s, const tg_dao_query_t *q, tg_dao_page_t *page)
{
    long size;
    char *after = NULL, *tags = NULL, *sql = NULL;
    bool any = false;
    memset(page, 0, sizeof(*page));
    if (parse_size(dao, q->size, &size) || parse_offset(dao, q->offset, &after) ||
        parse_tags(dao, q->tags, &tags, &any)) {
        free(after);
        return -1;
    }
    const char *params[5] = {dao->cp_id};
    int np = 1;
    char where[512] = "";
    size_t wl = 0;
    if (q->parent_field) {
        params[np++] = q->parent_id;
        wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND %s_id = $%d::uuid", q->parent_field->name, np);
    }
    if (q->filter_field) {
        params[np++] = q->filter_value;
        wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND %s = $%d", q->filter_field, np);
    }
    if (after) {
        params[np++] = after;
        wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND id > $%d::uuid", np);
    }
    if (tags) {
        params[np++] = tags;
        wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND tags %s $%d::text[]", any ? "&&" : "@>", np);
    }
    /* The limit is part of the text, not a parameter: a prepared statement's generic plan
     * cannot see a parameter's value and may sort the whole table instead of walking the
     * (cp_id, id) index. `size` is validated, so this adds at most 1000 statement texts. */
    sql = tg_asprintf("SELECT %s FROM %s WHERE cp_id = $1%s%s ORDER BY id LIMIT %ld",
                      select_list(s), s->name, where, visible_clause(s), size + 1);
    tg_db_err_t err;
    PGresult *res = tg_db_exec(dao->db, &err, sql, np, params);
    free(sql);
    free(after);
    free(tags);
    if (!res) return map_db_error(dao, s, &err, NULL, NULL, false);
    int n = PQntuples(res);
    if (!s->ttl && !secret_field(s)) page->data_text = concat_docs(res, n < size ? n : (int)size);
    else page->data = json_array();
    for (int i = 0; page->data && i < n && i < size; i++) {
        json_t *e = row_entity(dao, s, res, i);
        if (e) json_array_append_new(page->data, e);
    }
    if (n > size) {
        const char *last = PQgetvalue(res, (int)size - 1, 3);
        page->next_offset = tg_base64_encode((const uint8_t *)last, strlen(last));
    }
    PQclear(res);
    return 0;
}

/* ---------------------------------------------------------------- the write transaction */

static int tx(tg_dao_t *dao, const tg_schema_t *s, const char *stmt)
{
    tg_db_err_t err;
    if (tg_db_run(dao->db, &err, stmt, 0, NULL) == 0) return 0;
    return map_db_error(dao, s, &err, NULL, NULL, false);
}

/*
 * A write is its own transaction, or part of a group-commit batch's
 * transaction (workers.c). In a batch there are no per-write savepoints: a
 * failing statement leaves the transaction aborted, and the worker then rolls
 * the batch back and replays every write of it in its own transaction, so
 * each gets its real answer. Here, in a batch, begin and rollback do nothing
 * and commit only leaves the write's change-log group for the batch.
 */
static void rollback(tg_dao_t *dao)
{
    tg_db_err_t err;
    if (!dao->db->batch && PQtransactionStatus(dao->db->conn) != PQTRANS_IDLE)
        tg_db_run(dao->db, &err, "ROLLBACK", 0, NULL);
    json_decref(dao->changes);
    dao->changes = NULL;
}

static int begin(tg_dao_t *dao, const tg_schema_t *s)
{
    json_decref(dao->changes);
    dao->changes = json_array();
    memset(&dao->digest_delta, 0, sizeof(dao->digest_delta));
    dao->digest_unknown = false;
    return dao->db->batch ? 0 : tx(dao, s, "BEGIN");
}

static void record_change(tg_dao_t *dao, const char *type, const char *id, const char *op)
{
    json_array_append_new(dao->changes, json_pack("[s,s,s]", type, id, op));
}

/*
 * Adds (a row written) or subtracts (a row replaced or deleted) the config hash of every row
 * of `res`, whose data-plane columns (tg_config_row_cols) start at `col`. A row that cannot
 * be hashed would fail the snapshot builder too; here it only makes the digest unknown, so
 * the write itself is not refused for it.
 */
static void hash_rows(tg_dao_t *dao, const tg_schema_t *s, const PGresult *res, int col, bool add)
{
    for (int r = 0; r < PQntuples(res) && !dao->digest_unknown; r++) {
        uint8_t h[TG_CONFIG_DIGEST_LEN];
        char err[256];
        if (tg_config_row_hash(s, res, r, col, h, err, sizeof(err)) != 0) {
            TG_LOGE("dao", "config digest: %s", err);
            dao->digest_unknown = true;
        } else if (add) {
            tg_config_digest_add(&dao->digest_delta, h);
        } else {
            tg_config_digest_sub(&dao->digest_delta, h);
        }
    }
}

/* Records the deletion of every row of `res` (DELETE ... RETURNING tg_config_row_cols). */
static void record_deleted(tg_dao_t *dao, const tg_schema_t *s, const PGresult *res)
{
    hash_rows(dao, s, res, 0, false);
    for (int r = 0; r < PQntuples(res); r++) record_change(dao, s->name, PQgetvalue(res, r, 0), "delete");
}

static int commit(tg_dao_t *dao, const tg_schema_t *s)
{
    int rc;
    dao->version = 0;
    const tg_config_digest_t *delta = dao->digest_unknown ? NULL : &dao->digest_delta;
    if (dao->db->batch) {
        tg_changelog_add(dao->db->batch, dao->cp_id, dao->changes, delta);
        rc = 0;
    } else {
        tg_changelog_t cl;
        tg_db_err_t err;
        tg_changelog_init(&cl);
        tg_changelog_add(&cl, dao->cp_id, dao->changes, delta);
        rc = tg_changelog_write(&cl, dao->db, &err, &dao->version);
        tg_changelog_clear(&cl);
        if (rc != 0) {
            rollback(dao);
            return map_db_error(dao, s, &err, NULL, NULL, false);
        }
        rc = tx(dao, s, "COMMIT");
    }
    json_decref(dao->changes);
    dao->changes = NULL;
    return rc;
}

/* ---------------------------------------------------------------- preparing an entity */

/* {"service": {"name": "x"}} → {"service": {"id": "<uuid>"}}, as Kong resolves endpoint keys. */
static int resolve_foreign(tg_dao_t *dao, const tg_schema_t *s, json_t *input)
{
    for (const tg_field_t *f = s->fields; f->name; f++) {
        json_t *ref = json_object_get(input, f->name);
        if (f->type != TG_T_FOREIGN || !f->rec || !json_is_object(ref) || json_object_get(ref, "id"))
            continue;
        const char *ek = f->rec->endpoint_key;
        json_t *key = ek ? json_object_get(ref, ek) : NULL;
        if (!json_is_string(key) || json_object_size(ref) != 1) continue;
        json_t *parent = NULL;
        int found = fetch(dao, f->rec, json_string_value(key), false, &parent);
        if (found < 0) return -1;
        if (!found) {
            json_t *pk = json_object();
            json_object_set(pk, ek, key);
            char *pretty = tg_lua_pretty(pk);
            char *why = tg_asprintf("the foreign key cannot be resolved with '%s' for an existing '%s' entity",
                                    pretty, f->rec->name);
            char *msg = tg_asprintf("foreign key unresolved (%s.%s: %s)", f->name, ek, why);
            json_t *fields = json_object(), *sub = json_object();
            json_object_set_new(sub, ek, json_string(why));
            json_object_set_new(fields, f->name, sub);
            tg_dao_fail(dao, TG_API_FOREIGN_KEYS_UNRESOLVED, msg, fields);
            json_decref(pk);
            free(pretty);
            free(why);
            free(msg);
            return -1;
        }
        json_object_set_new(input, f->name, json_pack("{s:O}", "id", json_object_get(parent, "id")));
        json_decref(parent);
    }
    return 0;
}

/* Reads `ttl` (seconds) for TTL entities: sets *expires_at (0 = never). */
static int take_ttl(tg_dao_t *dao, const tg_schema_t *s, const json_t *input, const json_t *existing,
                    long long *expires_at)
{
    json_t *ttl = json_object_get(input, "ttl");
    *expires_at = 0;
    if (existing && json_is_integer(json_object_get(existing, "ttl")))
        *expires_at = now_up_s() + json_integer_value(json_object_get(existing, "ttl"));
    if (!s->ttl || !ttl || json_is_null(ttl)) return 0;
    if (!json_is_integer(ttl) || json_integer_value(ttl) < 0) {
        json_t *fields = json_pack("{s:s}", "ttl", "expected a non-negative integer");
        return tg_dao_fail(dao, TG_API_SCHEMA_VIOLATION, "schema violation (ttl: expected a non-negative integer)", fields);
    }
    *expires_at = json_integer_value(ttl) ? now_s() + json_integer_value(ttl) : 0;
    return 0;
}

/*
 * Validates input into a complete entity with id and timestamps. `existing`
 * is the stored entity for PUT-over-existing and PATCH.
 */
static int prepare(tg_dao_t *dao, const tg_schema_t *s, enum tg_schema_op op, const json_t *input,
                   const json_t *existing, json_t **entity, long long *expires_at)
{
    json_t *in = json_deep_copy(input), *errs = NULL;
    const tg_field_t *secret = secret_field(s);
    if (resolve_foreign(dao, s, in) || take_ttl(dao, s, in, existing, expires_at)) {
        json_decref(in);
        return -1;
    }
    json_object_del(in, "ttl");
    if (secret && op != TG_OP_UPDATE) {
        json_t *k = json_object_get(in, secret->name);
        if (!k || json_is_null(k)) { /* Kong generates a key when none is given */
            char key[33];
            tg_generate_key(key);
            json_object_set_new(in, secret->name, json_string(key));
        }
    }
    json_t *e = tg_schema_validate(s, op, in, existing, &errs);
    json_decref(in);
    if (!e) {
        char *msg = tg_schema_error_message(errs);
        tg_dao_fail(dao, TG_API_SCHEMA_VIOLATION, msg, errs);
        free(msg);
        return -1;
    }
    json_t *id = json_object_get(e, "id");
    if (json_is_null(id) || !id) {
        json_t *old = existing ? json_object_get(existing, "id") : NULL;
        char uuid[TG_UUID_STR_LEN + 1];
        tg_uuid_v4(uuid);
        json_object_set_new(e, "id", old ? json_incref(old) : json_string(uuid));
    }
    json_t *created = existing ? json_object_get(existing, "created_at") : NULL;
    if (!json_is_integer(json_object_get(e, "created_at")))
        json_object_set_new(e, "created_at", created ? json_incref(created) : json_integer(now_s()));
    if (s->has_updated_at) json_object_set_new(e, "updated_at", json_integer(now_s()));
    *entity = e;
    return 0;
}

/* ---------------------------------------------------------------- columns */

typedef struct cols {
    const char *names[MAX_COLS];
    char fk_names[MAX_COLS][64]; /* storage for "<field>_id" column names */
    char *values[MAX_COLS];
    int n;
} cols_t;

static void col(cols_t *c, const char *name, char *value)
{
    c->names[c->n] = name;
    c->values[c->n++] = value;
}

static void cols_free(cols_t *c)
{
    for (int i = 0; i < c->n; i++) free(c->values[i]);
}

static char *str_or_null(const json_t *v)
{
    if (json_is_string(v)) return tg_strdup(json_string_value(v));
    if (json_is_integer(v)) return tg_asprintf("%lld", (long long)json_integer_value(v));
    return NULL;
}

/* The secret's digest and ciphertext (bound to the row id); the document never holds it. */
static int secret_cols(tg_dao_t *dao, const tg_field_t *f, json_t *doc, cols_t *c)
{
    const char *key = json_string_value(json_object_get(doc, f->name));
    const char *id = json_string_value(json_object_get(doc, "id"));
    uint8_t digest[TG_SHA256_LEN], *blob;
    size_t bloblen;
    tg_sha256(key, strlen(key), digest);
    if (tg_aead_encrypt(dao->keyring, id, strlen(id), key, strlen(key), &blob, &bloblen) != 0)
        return fail_plain(dao, 500, "An unexpected error occurred");
    col(c, "key_digest", hex_of(digest, sizeof(digest)));
    col(c, "key_enc", hex_of(blob, bloblen));
    free(blob);
    json_object_del(doc, f->name);
    return 0;
}

static int build_cols(tg_dao_t *dao, const tg_schema_t *s, const json_t *e, long long expires_at,
                      cols_t *c)
{
    json_t *doc = json_deep_copy(e);
    memset(c, 0, sizeof(*c));
    col(c, "created_at", str_or_null(json_object_get(e, "created_at")));
    json_t *tags = json_object_get(e, "tags");
    col(c, "tags", tags_literal(json_is_array(tags) ? tags : NULL));
    for (const tg_field_t *f = s->fields; f->name; f++) {
        if ((f->flags & TG_F_SECRET) && secret_cols(dao, f, doc, c) != 0) {
            json_decref(doc);
            return -1;
        } else if ((f->flags & TG_F_UNIQUE) && !(f->flags & TG_F_SECRET)) {
            col(c, f->name, str_or_null(json_object_get(e, f->name)));
        } else if (f->type == TG_T_FOREIGN && f->rec) {
            snprintf(c->fk_names[c->n], sizeof(c->fk_names[c->n]), "%s_id", f->name);
            col(c, c->fk_names[c->n], str_or_null(json_object_get(json_object_get(e, f->name), "id")));
        }
    }
    if (s->ttl) col(c, "expires_at", expires_at ? tg_asprintf("%lld", expires_at) : NULL);
    col(c, "doc", json_dumps(doc, JSON_COMPACT));
    json_decref(doc);
    return 0;
}

/*
 * INSERT (existing == false) or UPDATE of the row with the entity's id. Both return the row's
 * data-plane form for the config digest; the UPDATE also returns the form it replaces, read
 * by its FROM item from the statement's snapshot (the row is locked by the fetch before).
 */
static int store(tg_dao_t *dao, const tg_schema_t *s, const json_t *e, long long expires_at,
                 bool update)
{
    cols_t c;
    if (build_cols(dao, s, e, expires_at, &c) != 0) return -1;
    const char *params[MAX_COLS + 2] = {dao->cp_id, json_string_value(json_object_get(e, "id"))};
    char sql[3072];
    size_t len = update ? (size_t)snprintf(sql, sizeof(sql), "UPDATE %s AS t SET ", s->name)
                        : (size_t)snprintf(sql, sizeof(sql), "INSERT INTO %s (cp_id, id", s->name);
    for (int i = 0; i < c.n; i++) {
        params[i + 2] = c.values[i];
        len += update ? (size_t)snprintf(sql + len, sizeof(sql) - len, "%s%s = $%d", i ? ", " : "", c.names[i], i + 3)
                      : (size_t)snprintf(sql + len, sizeof(sql) - len, ", %s", c.names[i]);
    }
    if (update) {
        snprintf(sql + len, sizeof(sql) - len,
                 " FROM (SELECT * FROM %s WHERE cp_id = $1::uuid AND id = $2::uuid) AS o"
                 " WHERE t.cp_id = $1::uuid AND t.id = $2::uuid RETURNING %s, %s",
                 s->name, tg_config_row_cols(s, "t."), tg_config_row_cols(s, "o."));
    } else {
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, ") VALUES ($1::uuid, $2::uuid");
        for (int i = 0; i < c.n; i++) len += (size_t)snprintf(sql + len, sizeof(sql) - len, ", $%d", i + 3);
        snprintf(sql + len, sizeof(sql) - len, ") RETURNING %s", tg_config_row_cols(s, ""));
    }
    tg_db_err_t err;
    PGresult *res = tg_db_exec(dao->db, &err, sql, c.n + 2, params);
    const char *plain = json_string_value(json_object_get(e, "key"));
    cols_free(&c);
    if (!res) return map_db_error(dao, s, &err, e, plain, false);
    hash_rows(dao, s, res, 0, true);
    if (update) hash_rows(dao, s, res, tg_config_row_ncols(s), false);
    PQclear(res);
    record_change(dao, s->name, json_string_value(json_object_get(e, "id")), "upsert");
    return 0;
}

/* Credentials whose TTL ran out still hold their digest: drop the one in the way. */
static int drop_expired_duplicate(tg_dao_t *dao, const tg_schema_t *s, const json_t *e)
{
    const tg_field_t *secret = secret_field(s);
    if (!secret || !s->ttl) return 0;
    const char *key = json_string_value(json_object_get(e, secret->name));
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(key, strlen(key), d);
    char *hex = hex_of(d, sizeof(d));
    const char *params[] = {dao->cp_id, hex};
    tg_db_err_t err;
    char *sql = tg_asprintf("DELETE FROM %s WHERE cp_id = $1::uuid AND key_digest = $2::bytea"
                            " AND expires_at <= extract(epoch from now())::bigint RETURNING %s", s->name,
                            tg_config_row_cols(s, ""));
    PGresult *res = tg_db_exec(dao->db, &err, sql, 2, params);
    free(sql);
    free(hex);
    if (!res) return map_db_error(dao, s, &err, NULL, NULL, false);
    record_deleted(dao, s, res);
    PQclear(res);
    return 0;
}

/* Re-reads the stored entity so responses show exactly what readers will see. */
static int finish(tg_dao_t *dao, const tg_schema_t *s, const json_t *e, long long expires_at, json_t **out)
{
    json_t *res = json_deep_copy(e);
    long long left = expires_at - now_up_s();
    if (s->ttl && expires_at) json_object_set_new(res, "ttl", json_integer(left > 0 ? left : 0));
    *out = res;
    return 0;
}

/* ---------------------------------------------------------------- public writes */

/* True when the last failure was a duplicate secret (a key that may belong to an expired row). */
static bool secret_conflict(const tg_dao_t *dao, const tg_schema_t *s)
{
    json_t *fields = json_object_get(dao->error, "fields");
    const tg_field_t *secret = secret_field(s);
    return s->ttl && secret && dao->status == 409 && json_object_get(fields, secret->name);
}

int tg_dao_insert(tg_dao_t *dao, const tg_schema_t *s, const json_t *input, json_t **out)
{
    json_t *e = NULL;
    long long expires_at;
    if (prepare(dao, s, TG_OP_INSERT, input, NULL, &e, &expires_at)) return -1;
    int rc = begin(dao, s);
    if (!rc) rc = store(dao, s, e, expires_at, false);
    if (rc && secret_conflict(dao, s)) {
        /* Expired credentials keep their digest until purged: clear one in the way, retry once. */
        rollback(dao);
        rc = begin(dao, s);
        if (!rc) rc = drop_expired_duplicate(dao, s, e);
        if (!rc) rc = store(dao, s, e, expires_at, false);
    }
    if (!rc) rc = commit(dao, s);
    else rollback(dao);
    if (!rc) finish(dao, s, e, expires_at, out);
    json_decref(e);
    return rc;
}

int tg_dao_upsert(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key, const json_t *input,
                  json_t **out)
{
    json_t *in = json_deep_copy(input), *existing = NULL, *e = NULL;
    bool by_id = tg_uuid_valid(tg_str_from(id_or_key));
    if (by_id) json_object_set_new(in, "id", json_string(id_or_key));
    else if (s->endpoint_key) json_object_set_new(in, s->endpoint_key, json_string(id_or_key));
    long long expires_at = 0;
    int rc = begin(dao, s);
    int found = rc ? -1 : fetch(dao, s, id_or_key, true, &existing);
    if (found < 0) rc = -1;
    if (!rc && existing) json_object_set(in, "id", json_object_get(existing, "id"));
    if (!rc) rc = prepare(dao, s, TG_OP_UPSERT, in, existing, &e, &expires_at);
    if (!rc && !existing) rc = drop_expired_duplicate(dao, s, e);
    if (!rc) rc = store(dao, s, e, expires_at, existing != NULL);
    if (!rc) rc = commit(dao, s);
    else rollback(dao);
    if (!rc) finish(dao, s, e, expires_at, out);
    json_decref(in);
    json_decref(existing);
    json_decref(e);
    return rc;
}

int tg_dao_update(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key, const json_t *input,
                  json_t **out)
{
    json_t *existing = NULL, *e = NULL;
    long long expires_at = 0;
    int rc = begin(dao, s);
    int found = rc ? -1 : fetch(dao, s, id_or_key, true, &existing);
    if (found < 0) rc = -1;
    else if (!rc && !found) rc = fail_not_found(dao);
    if (!rc) {
        json_t *stored = json_deep_copy(existing);
        json_object_del(stored, "ttl");
        json_t *in = json_deep_copy(input);
        json_object_del(in, "id"); /* the id of an existing entity never changes */
        rc = prepare(dao, s, TG_OP_UPDATE, in, stored, &e, &expires_at);
        if (!rc && !json_object_get(input, "ttl") && json_is_integer(json_object_get(existing, "ttl")))
            expires_at = now_up_s() + json_integer_value(json_object_get(existing, "ttl"));
        json_decref(stored);
        json_decref(in);
    }
    if (!rc) rc = store(dao, s, e, expires_at, true);
    if (!rc) rc = commit(dao, s);
    else rollback(dao);
    if (!rc) finish(dao, s, e, expires_at, out);
    json_decref(existing);
    json_decref(e);
    return rc;
}

/* Deletes the children that cascade from a parent, recording each. */
static int cascade(tg_dao_t *dao, const tg_schema_t *parent, const char *parent_id)
{
    for (size_t i = 0; tg_entities[i]; i++) {
        const tg_schema_t *c = tg_entities[i];
        for (const tg_field_t *f = c->fields; f->name; f++) {
            if (f->type != TG_T_FOREIGN || f->rec != parent || !(f->flags & TG_F_CASCADE)) continue;
            char *sql = tg_asprintf("DELETE FROM %s WHERE cp_id = $1::uuid AND %s_id = $2::uuid RETURNING %s",
                                    c->name, f->name, tg_config_row_cols(c, ""));
            const char *params[] = {dao->cp_id, parent_id};
            tg_db_err_t err;
            PGresult *res = tg_db_exec(dao->db, &err, sql, 2, params);
            free(sql);
            if (!res) return map_db_error(dao, c, &err, NULL, NULL, true);
            record_deleted(dao, c, res);
            PQclear(res);
        }
    }
    return 0;
}

int tg_dao_delete(tg_dao_t *dao, const tg_schema_t *s, const char *id_or_key)
{
    json_t *existing = NULL;
    int rc = begin(dao, s);
    int found = rc ? -1 : fetch(dao, s, id_or_key, true, &existing);
    if (found <= 0) {
        rollback(dao);
        return found < 0 ? -1 : 0;
    }
    const char *id = json_string_value(json_object_get(existing, "id"));
    rc = cascade(dao, s, id);
    if (!rc) {
        char *sql = tg_asprintf("DELETE FROM %s WHERE cp_id = $1::uuid AND id = $2::uuid RETURNING %s", s->name,
                                tg_config_row_cols(s, ""));
        const char *params[] = {dao->cp_id, id};
        tg_db_err_t err;
        PGresult *res = tg_db_exec(dao->db, &err, sql, 2, params);
        if (!res) rc = map_db_error(dao, s, &err, existing, NULL, true);
        else record_deleted(dao, s, res);
        PQclear(res);
        free(sql);
    }
    if (!rc) rc = commit(dao, s);
    else rollback(dao);
    json_decref(existing);
    return rc;
}

/* ---------------------------------------------------------------- tags, purge, version */

int tg_dao_list_tags(tg_dao_t *dao, const char *tag, const tg_dao_query_t *q, tg_dao_page_t *page)
{
    long size;
    memset(page, 0, sizeof(*page));
    if (parse_size(dao, q->size, &size)) return -1;
    long long skip = 0;
    if (q->offset) {
        size_t n;
        uint8_t *dec = tg_base64_decode(q->offset, strlen(q->offset), &n);
        char *end = NULL;
        if (dec) { dec[n] = 0; skip = strtoll((char *)dec, &end, 10); }
        if (!dec || n == 0 || *end || skip < 0) {
            free(dec);
            char *msg = tg_asprintf("'%s' is not a valid offset: bad base64 encoding", q->offset);
            tg_dao_fail(dao, TG_API_INVALID_OFFSET, msg, NULL);
            free(msg);
            return -1;
        }
        free(dec);
    }
    char *sqlu = tg_strdup("");
    for (size_t i = 0; tg_entities[i]; i++) {
        char *next = tg_asprintf("%s%sSELECT '%s'::text AS entity_name, id AS entity_id, unnest(tags) AS tag"
                                 " FROM %s WHERE cp_id = $1::uuid%s", sqlu, i ? " UNION ALL " : "",
                                 tg_entities[i]->name, tg_entities[i]->name, visible_clause(tg_entities[i]));
        free(sqlu);
        sqlu = next;
    }
    char lim[32], off[32];
    snprintf(lim, sizeof(lim), "%ld", size + 1);
    snprintf(off, sizeof(off), "%lld", skip);
    char *sql = tg_asprintf("SELECT entity_name, entity_id::text, tag FROM (%s) t WHERE ($2::text IS NULL OR tag = $2)"
                            " ORDER BY tag, entity_name, entity_id LIMIT $3::bigint OFFSET $4::bigint", sqlu);
    free(sqlu);
    const char *params[] = {dao->cp_id, tag, lim, off};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(dao->db, &err, sql, 4, params);
    free(sql);
    if (!res) return map_db_error(dao, &tg_schema_services, &err, NULL, NULL, false);
    page->data = json_array();
    int n = PQntuples(res);
    for (int i = 0; i < n && i < size; i++)
        json_array_append_new(page->data, json_pack("{s:s,s:s,s:s}", "entity_name", PQgetvalue(res, i, 0),
                                                    "entity_id", PQgetvalue(res, i, 1), "tag", PQgetvalue(res, i, 2)));
    if (n > size) {
        char next[32];
        snprintf(next, sizeof(next), "%lld", skip + size);
        page->next_offset = tg_base64_encode((const uint8_t *)next, strlen(next));
    }
    PQclear(res);
    return 0;
}

int tg_dao_purge_expired(tg_dao_t *dao)
{
    const tg_schema_t *s = &tg_schema_keyauth_credentials;
    int total = 0;
    if (begin(dao, s)) return -1;
    char *sql = tg_asprintf("DELETE FROM %s WHERE cp_id = $1::uuid AND expires_at <= extract(epoch from now())::bigint"
                            " RETURNING %s", s->name, tg_config_row_cols(s, ""));
    const char *params[] = {dao->cp_id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(dao->db, &err, sql, 1, params);
    free(sql);
    if (!res) {
        rollback(dao);
        return map_db_error(dao, s, &err, NULL, NULL, false);
    }
    total = PQntuples(res);
    record_deleted(dao, s, res);
    PQclear(res);
    return commit(dao, s) ? -1 : total;
}

int tg_dao_purge_expired_all(tg_db_t *db, const uint8_t *keyring)
{
    tg_db_err_t err;
    PGresult *res = tg_db_exec(db, &err, "SELECT DISTINCT cp_id::text FROM keyauth_credentials"
                               " WHERE expires_at <= extract(epoch from now())::bigint", 0, NULL);
    if (!res) return -1;
    int total = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        tg_dao_t dao;
        tg_dao_init(&dao, db, PQgetvalue(res, i, 0), keyring);
        int n = tg_dao_purge_expired(&dao);
        tg_dao_reset(&dao);
        if (n < 0) {
            total = -1;
            break;
        }
        total += n;
    }
    PQclear(res);
    return total;
}

long long tg_dao_config_version(tg_dao_t *dao)
{
    const char *params[] = {dao->cp_id};
    tg_db_err_t err;
    PGresult *res = tg_db_exec(dao->db, &err, "SELECT config_version FROM control_planes WHERE id = $1::uuid", 1, params);
    if (!res) return -1;
    long long v = PQntuples(res) ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return v;
}
