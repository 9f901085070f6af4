/*
 * store_write.c — checking one change and applying it inside a write transaction: the
 * entity's stored form, its indexes and its share of the config digest (see store.h).
 *
 * Index entries are removed only when they still point at the entity being changed: inside
 * one delta a key can move from one entity to another (a username freed and taken), and the
 * newer owner's entry must survive the older one's update.
 *
 * Credentials are stored under their key digest, so a digest names one credential. An upsert
 * whose digest another credential holds replaces that one (its id index entry goes too): the
 * CP keeps keys unique, so at every version each digest has one owner, and a delta that
 * hands a key from one credential to another, in either order of its changes, ends where the
 * CP is.
 */
#include "alloc.h"
#include "error.h"
#include "log.h"
#include "store_int.h"

#include <string.h>

/* ------------------------------------------------------------------ stored values */

static tg_record_type_t record_type(const struct type_db *t)
{
    return t->kind == KIND_CONSUMER ? TG_RECORD_CONSUMER : TG_RECORD_CREDENTIAL;
}

int store_stored_open(const struct type_db *t, tg_str_t key, tg_str_t value, struct stored *out)
{
    *out = (struct stored){NULL, value, NULL};
    if (t->kind != KIND_JSON && tg_record_is_compact(value)) {
        out->entity = tg_record_decode(record_type(t), key, value);
        if (out->entity) out->owned = tg_config_digest_canonical(out->entity, &out->canon.len);
        out->canon.p = out->owned;
    } else {
        out->entity = json_loadb(value.p, value.len, 0, NULL);
    }
    if (out->entity) return 0;
    TG_LOGE(TG_STORE_MOD, "a stored %s cannot be read back", t->schema->name);
    return -TG_EIO;
}

void store_stored_close(struct stored *st)
{
    json_decref(st->entity);
    free(st->owned);
    *st = (struct stored){0};
}

static void hash_of(const struct type_db *t, tg_str_t id, tg_str_t canon,
                    uint8_t h[TG_CONFIG_DIGEST_LEN])
{
    tg_config_digest_entity_raw(tg_str_from(t->schema->name), id, canon, h);
}

static void stored_hash_open(const struct type_db *t, const struct stored *st,
                             uint8_t h[TG_CONFIG_DIGEST_LEN])
{
    const json_t *id = json_object_get(st->entity, "id");
    hash_of(t, (tg_str_t){json_string_value(id), json_string_length(id)}, st->canon, h);
}

int store_stored_hash(const struct type_db *t, tg_str_t key, tg_str_t value,
                      uint8_t h[TG_CONFIG_DIGEST_LEN])
{
    if (t->kind == KIND_JSON) { /* keyed by the id itself: nothing to parse */
        hash_of(t, key, value, h);
        return 0;
    }
    struct stored st;
    int rc = store_stored_open(t, key, value, &st);
    if (rc == 0) stored_hash_open(t, &st, h);
    store_stored_close(&st);
    return rc;
}

static tg_str_t val_str(MDB_val v)
{
    return (tg_str_t){v.mv_data, v.mv_size};
}

/* ------------------------------------------------------------------ checking a change */

void store_ikey_string(const char *str, size_t n, struct ikey *k)
{
    k->present = n > 0; /* LMDB has no empty keys, and nobody looks up an empty name */
    if (n <= STORE_INDEX_STR_MAX) {
        memcpy(k->buf, str, n);
        k->len = n;
        return;
    }
    k->buf[0] = 0xff;
    tg_sha256(str, n, k->buf + 1);
    k->len = 1 + TG_SHA256_LEN;
}

/* A consumer's username or custom_id as an index key; -TG_EINVAL when it is not a string. */
static int ikey_of(const json_t *e, const char *field, struct ikey *k)
{
    const json_t *v = json_object_get(e, field);
    k->present = false;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return -TG_EINVAL;
    store_ikey_string(json_string_value(v), json_string_length(v), k);
    return 0;
}

/* The 32 bytes of a credential's key_digest (64 hex digits, any case). */
static int key_digest_of(const json_t *e, uint8_t out[TG_SHA256_LEN])
{
    const json_t *v = json_object_get(e, "key_digest");
    tg_config_digest_t raw;
    if (!json_is_string(v) || json_string_length(v) != TG_CONFIG_DIGEST_HEX_LEN ||
        tg_config_digest_from_hex(json_string_value(v), &raw) != 0)
        return -TG_EINVAL;
    memcpy(out, raw.sum, TG_SHA256_LEN);
    return 0;
}

/* Refuses plaintext secrets and malformed indexed fields; fills p's keys from the entity. */
static int check_entity(struct prepared *p, const json_t *e, size_t i, tg_store_error_t *err)
{
    const char *type = p->t->schema->name;
    for (const tg_field_t *f = p->t->schema->fields; f->name; f++) {
        const json_t *v = json_object_get(e, f->name);
        if ((f->flags & TG_F_SECRET) && v && !json_is_null(v))
            return store_fail(err, i, -TG_EINVAL,
                              "%s: plaintext '%s' must not reach the data plane", type, f->name);
    }
    if (p->t->kind == KIND_CONSUMER) {
        if (ikey_of(e, "username", &p->username) != 0)
            return store_fail(err, i, -TG_EINVAL, "%s: invalid 'username'", type);
        if (ikey_of(e, "custom_id", &p->custom_id) != 0)
            return store_fail(err, i, -TG_EINVAL, "%s: invalid 'custom_id'", type);
    }
    if (p->t->kind == KIND_CREDENTIAL && key_digest_of(e, p->key) != 0)
        return store_fail(err, i, -TG_EINVAL, "%s: invalid 'key_digest'", type);
    return 0;
}

/* The change's id: the explicit one, else the entity's; they must agree. */
static int change_id(const struct prepared *p, const tg_store_change_t *c, size_t i,
                     tg_store_error_t *err, const char **out)
{
    const char *type = p->t->schema->name, *cid = c->id;
    if (c->op == TG_STORE_UPSERT) {
        if (!json_is_object(c->entity))
            return store_fail(err, i, -TG_EINVAL, "%s upsert without an entity object", type);
        const char *eid = json_string_value(json_object_get(c->entity, "id"));
        if (!eid) return store_fail(err, i, -TG_EINVAL, "%s entity without a string id", type);
        if (!cid) cid = eid;
        if (strcmp(cid, eid) != 0)
            return store_fail(err, i, -TG_EINVAL, "%s %s carries entity id %s", type, cid, eid);
    } else if (c->op != TG_STORE_DELETE) {
        return store_fail(err, i, -TG_EINVAL, "%s: unknown operation %d", type, (int)c->op);
    }
    if (!cid || !*cid || strlen(cid) > STORE_ID_MAX)
        return store_fail(err, i, -TG_EINVAL, "%s: missing or oversized id", type);
    *out = cid;
    return 0;
}

/* The stored form of an upsert: the record when the entity has an exact one. */
static void encode(struct prepared *p, const json_t *e)
{
    p->canon = tg_config_digest_canonical(e, &p->canon_len);
    hash_of(p->t, p->id, (tg_str_t){p->canon, p->canon_len}, p->hash);
    p->rec_len = p->t->kind == KIND_JSON ? 0 : tg_record_encode(record_type(p->t), e, p->rec,
                                                                 sizeof p->rec);
}

int store_prepare(const tg_store_t *s, const tg_store_change_t *c, size_t i, struct prepared *p,
                  tg_store_error_t *err)
{
    p->canon = NULL;
    p->t = store_type_find(s, c->type);
    if (!p->t)
        return store_fail(err, i, -TG_EINVAL, "unknown entity type '%s'", c->type ? c->type : "");
    const char *id = NULL;
    int rc = change_id(p, c, i, err, &id);
    if (rc) return rc;
    p->op = c->op;
    p->id = tg_str_from(id);
    p->rec_len = 0;
    p->id_klen = tg_record_id_key(p->id, p->id_key);
    p->username.present = p->custom_id.present = false;
    if (p->t->kind == KIND_JSON) {
        memcpy(p->key, id, p->id.len);
        p->klen = p->id.len;
    } else if (p->t->kind == KIND_CONSUMER) {
        memcpy(p->key, p->id_key, p->id_klen);
        p->klen = p->id_klen;
    } else {
        p->klen = TG_SHA256_LEN; /* filled by check_entity for upserts; deletes go by id */
    }
    if (p->op == TG_STORE_DELETE) return 0;
    rc = check_entity(p, c->entity, i, err);
    if (rc == 0) encode(p, c->entity);
    return rc;
}

void store_prepared_release(struct prepared *p)
{
    free(p->canon);
    p->canon = NULL;
}

MDB_val store_prepared_value(const struct prepared *p)
{
    if (p->rec_len) return (MDB_val){p->rec_len, (void *)p->rec};
    return (MDB_val){p->canon_len, p->canon};
}

/* ------------------------------------------------------------------ LMDB helpers */

static int get(struct wtx *w, MDB_dbi dbi, const void *k, size_t klen, MDB_val *v, bool *found)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_get(w->txn, dbi, &key, v);
    *found = rc == 0;
    if (rc == MDB_NOTFOUND) return 0;
    return rc ? store_lmdb_err(rc, "mdb_get") : 0;
}

static int put(struct wtx *w, MDB_dbi dbi, const void *k, size_t klen, MDB_val v)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_put(w->txn, dbi, &key, &v, 0);
    return rc ? store_lmdb_err(rc, "mdb_put") : 0;
}

static int del(struct wtx *w, MDB_dbi dbi, const void *k, size_t klen)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(w->txn, dbi, &key, NULL);
    if (rc == MDB_NOTFOUND) return 0;
    return rc ? store_lmdb_err(rc, "mdb_del") : 0;
}

/* Deletes an index entry unless another entity has taken the key since (file comment). */
static int index_remove(struct wtx *w, MDB_dbi dbi, const void *k, size_t klen, const void *owner,
                        size_t olen)
{
    MDB_val v;
    bool found;
    int rc = get(w, dbi, k, klen, &v, &found);
    if (rc || !found || v.mv_size != olen || memcmp(v.mv_data, owner, olen) != 0) return rc;
    return del(w, dbi, k, klen);
}

static int index_update(struct wtx *w, MDB_dbi dbi, const struct ikey *old, const struct ikey *new,
                        const struct prepared *p)
{
    bool moved = old->present && (!new->present || old->len != new->len ||
                                  memcmp(old->buf, new->buf, old->len) != 0);
    int rc = moved ? index_remove(w, dbi, old->buf, old->len, p->key, p->klen) : 0;
    if (rc || !new->present) return rc;
    return put(w, dbi, new->buf, new->len, (MDB_val){p->klen, (void *)p->key});
}

static void digest_sub(struct wtx *w, const uint8_t h[TG_CONFIG_DIGEST_LEN])
{
    tg_config_digest_sub(&w->digest, h);
}

/* ------------------------------------------------------------------ per kind */

static int apply_json(struct wtx *w, const struct prepared *p)
{
    MDB_dbi dbi = type_dbi(w->set, p->t);
    MDB_val old;
    bool found;
    int rc = get(w, dbi, p->key, p->klen, &old, &found);
    if (rc == 0 && found) {
        uint8_t h[TG_CONFIG_DIGEST_LEN];
        store_stored_hash(p->t, p->id, val_str(old), h);
        digest_sub(w, h);
    }
    if (rc) return rc;
    if (p->op == TG_STORE_DELETE) return found ? del(w, dbi, p->key, p->klen) : 0;
    rc = put(w, dbi, p->key, p->klen, store_prepared_value(p));
    if (rc == 0) tg_config_digest_add(&w->digest, p->hash);
    return rc;
}

/* The stored consumer's hash leaves the digest; its index keys go to *u and *c. */
static int consumer_take_old(struct wtx *w, const struct prepared *p, struct ikey *u,
                             struct ikey *c, bool *found)
{
    MDB_val old;
    u->present = c->present = false;
    int rc = get(w, type_dbi(w->set, p->t), p->key, p->klen, &old, found);
    if (rc || !*found) return rc;
    struct stored st;
    /* Read before any write: a put may move the page old points into. */
    rc = store_stored_open(p->t, (tg_str_t){(const char *)p->key, p->klen}, val_str(old), &st);
    if (rc == 0) {
        uint8_t h[TG_CONFIG_DIGEST_LEN];
        stored_hash_open(p->t, &st, h);
        digest_sub(w, h);
        (void)ikey_of(st.entity, "username", u); /* checked when stored */
        (void)ikey_of(st.entity, "custom_id", c);
    }
    store_stored_close(&st);
    return rc;
}

static int apply_consumer(struct wtx *w, const struct prepared *p)
{
    struct ikey old_u, old_c;
    bool found;
    int rc = consumer_take_old(w, p, &old_u, &old_c, &found);
    /* Credentials may hold a copy of this consumer as it was (owned records): from now on
     * they are read with the consumer's own record. A new consumer has no copies yet. */
    if (rc == 0 && found)
        rc = put(w, w->set->changed_consumers, p->key, p->klen, (MDB_val){0, (void *)""});
    if (rc) return rc;
    if (p->op == TG_STORE_DELETE) {
        if (!found) return 0;
        rc = del(w, type_dbi(w->set, p->t), p->key, p->klen);
        if (rc == 0 && old_u.present)
            rc = index_remove(w, w->set->usernames, old_u.buf, old_u.len, p->key, p->klen);
        if (rc == 0 && old_c.present)
            rc = index_remove(w, w->set->custom_ids, old_c.buf, old_c.len, p->key, p->klen);
        return rc;
    }
    rc = put(w, type_dbi(w->set, p->t), p->key, p->klen, store_prepared_value(p));
    if (rc == 0) tg_config_digest_add(&w->digest, p->hash);
    if (rc == 0) rc = index_update(w, w->set->usernames, &old_u, &p->username, p);
    if (rc == 0) rc = index_update(w, w->set->custom_ids, &old_c, &p->custom_id, p);
    return rc;
}

/*
 * Takes the credential stored under `digest` out of the digest. When it is not `keep_id`
 * (another credential holding the key an upsert takes), its id index entry goes too.
 */
static int credential_drop(struct wtx *w, const struct type_db *t, const uint8_t *digest,
                           const struct prepared *keep, bool *found)
{
    MDB_val v;
    int rc = get(w, type_dbi(w->set, t), digest, TG_SHA256_LEN, &v, found);
    if (rc || !*found) return rc;
    struct stored st;
    rc = store_stored_open(t, (tg_str_t){(const char *)digest, TG_SHA256_LEN}, val_str(v), &st);
    if (rc) return rc;
    uint8_t h[TG_CONFIG_DIGEST_LEN], idk[TG_RECORD_ID_KEY_MAX];
    stored_hash_open(t, &st, h);
    digest_sub(w, h);
    const json_t *id = json_object_get(st.entity, "id");
    size_t n = tg_record_id_key((tg_str_t){json_string_value(id), json_string_length(id)}, idk);
    store_stored_close(&st);
    if (n == keep->id_klen && memcmp(idk, keep->id_key, n) == 0) return 0;
    return index_remove(w, w->set->cred_ids, idk, n, digest, TG_SHA256_LEN);
}

/*
 * A credential record gets a copy of its consumer's record when the consumer is stored as a
 * record and no delta has changed it since its set was filled: then the copy is current until
 * apply_consumer marks the consumer changed. Otherwise the value stays the plain record.
 */
static int with_owner(struct wtx *w, const struct prepared *p, uint8_t *buf, size_t cap,
                      MDB_val *value)
{
    tg_str_t rec = {(const char *)p->rec, p->rec_len};
    tg_str_t ref = p->rec_len ? tg_record_credential_owner_key(rec) : TG_STR_NULL;
    if (!ref.len) return 0;
    MDB_val consumer, mark;
    bool found, changed;
    int rc = get(w, w->set->changed_consumers, ref.p, ref.len, &mark, &changed);
    if (rc == 0 && !changed)
        rc = get(w, type_dbi(w->set, w->s->consumers), ref.p, ref.len, &consumer, &found);
    if (rc || changed || !found) return rc;
    size_t n = tg_record_join(rec, val_str(consumer), buf, cap);
    if (n) *value = (MDB_val){n, buf}; /* a consumer stored as JSON gets no copy */
    return 0;
}

static int apply_credential(struct wtx *w, const struct prepared *p)
{
    MDB_val v;
    bool has_old, found;
    uint8_t old[TG_SHA256_LEN];
    int rc = get(w, w->set->cred_ids, p->id_key, p->id_klen, &v, &has_old);
    if (rc) return rc;
    if (has_old && v.mv_size != TG_SHA256_LEN) return store_lmdb_err(MDB_CORRUPTED, "id index");
    if (has_old) memcpy(old, v.mv_data, TG_SHA256_LEN);
    if (has_old) rc = credential_drop(w, p->t, old, p, &found);
    if (rc == 0 && has_old && found &&
        (p->op == TG_STORE_DELETE || memcmp(old, p->key, TG_SHA256_LEN) != 0))
        rc = del(w, type_dbi(w->set, p->t), old, TG_SHA256_LEN);
    if (rc) return rc;
    if (p->op == TG_STORE_DELETE)
        return has_old ? del(w, w->set->cred_ids, p->id_key, p->id_klen) : 0;
    if (!has_old || memcmp(old, p->key, TG_SHA256_LEN) != 0)
        rc = credential_drop(w, p->t, p->key, p, &found); /* whoever holds the key now */
    uint8_t owned[2 * TG_RECORD_MAX];
    MDB_val value = store_prepared_value(p);
    if (rc == 0) rc = with_owner(w, p, owned, sizeof owned, &value);
    if (rc == 0) rc = put(w, type_dbi(w->set, p->t), p->key, p->klen, value);
    if (rc == 0)
        rc = put(w, w->set->cred_ids, p->id_key, p->id_klen, (MDB_val){p->klen, (void *)p->key});
    if (rc == 0) tg_config_digest_add(&w->digest, p->hash);
    return rc;
}

int store_apply_prepared(struct wtx *w, const struct prepared *p)
{
    switch (p->t->kind) {
    case KIND_CONSUMER: return apply_consumer(w, p);
    case KIND_CREDENTIAL: return apply_credential(w, p);
    case KIND_JSON: break;
    }
    return apply_json(w, p);
}
