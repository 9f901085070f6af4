/*
 * store_bulk.c — snapshots and replace_all: a whole config written into the store's other
 * database set, then made active in one transaction.
 *
 * Puts only check and encode: entities wait in memory, per type, until the commit sorts each
 * database's entries and appends them in key order (MDB_APPEND). Why: LMDB leaves pages
 * filled 50-70 % after inserts in random order (digests and UUIDs are random), and about
 * 100 % after appends, which at a million keys is the difference between meeting the store's
 * bytes-per-key budget or not; appending is also much faster than descending the tree for
 * every insert. The waiting entries cost about the size of the records in memory, for the
 * duration of the snapshot only.
 *
 * Why two sets: LMDB keeps every page a write transaction dirtied in a cache of its own
 * (malloc'd, reused by later writes, freed only when the environment closes), so one
 * transaction writing a million keys would leave ~200 MB of the DP's memory behind for good.
 * The commit therefore fills the inactive set in transactions of at most CHUNK_BYTES, and a
 * last transaction empties the active set, records version, digest and the new active set,
 * and commits: readers and a restarted DP see the old config or the new one, never a part.
 * A crash half-way leaves the inactive set half full; tg_store_open empties it.
 *
 * A snapshot is a set, so the same id put twice keeps the last one, and so does a username,
 * custom_id or key digest claimed by two entities (the later put owns it; a credential that
 * loses its digest is left out, as an upsert in a delta would replace it). Every put adds its
 * entity's hash to the digest; each entry dropped at commit takes its hash back out.
 */
#include "alloc.h"
#include "error.h"
#include "log.h"
#include "store_bulk.h"
#include "store_int.h"
#include "str.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SNAPSHOT_HEADROOM ((size_t)16 << 20)
/* Written per transaction: what LMDB then keeps cached (file comment). */
#define CHUNK_BYTES ((size_t)1 << 20)
#define PARTS 4 /* key, value, and two extra strings (index keys, a credential's digest) */
enum { P_KEY, P_VALUE, P_X1, P_X2 };

/* Entries of one type in put order, back to back: seq, PARTS lengths, then the parts. */
struct pending {
    uint8_t *buf;
    size_t len, cap, n;
};

struct tg_store_snapshot {
    tg_store_t *s;
    const struct dbset *set; /* the inactive set, being filled */
    tg_config_digest_t digest;
    int failed;
    uint32_t seq;
    bool written; /* the inactive set holds data and must be emptied if this fails */
    struct prepared *scratch; /* tg_store_snapshot_put_bulk's, reused (a few KiB) */
    EVP_MD_CTX *md;           /* its hashing context, reused */
    struct pending pend[STORE_MAX_TYPES];
};

/* An entry as sorted: by key, then by put order. */
struct ref {
    const uint8_t *key;
    const uint8_t *entry;
    uint32_t klen, seq;
    bool dropped;
    struct ref *origin; /* credentials sorted by digest: the same entry sorted by id */
};

/* ------------------------------------------------------------------ pending entries */

static void pending_grow(struct pending *p, size_t need)
{
    if (p->cap - p->len >= need) return;
    size_t cap = p->cap ? p->cap : (size_t)1 << 16;
    while (cap - p->len < need)
        cap *= 2;
    p->buf = tg_realloc(p->buf, cap);
    p->cap = cap;
}

static void pending_add(struct pending *p, uint32_t seq, const tg_str_t parts[PARTS])
{
    size_t need = sizeof(uint32_t) * (1 + PARTS);
    for (int i = 0; i < PARTS; i++)
        need += parts[i].len;
    pending_grow(p, need);
    uint8_t *at = p->buf + p->len;
    uint32_t head[1 + PARTS] = {seq};
    for (int i = 0; i < PARTS; i++)
        head[1 + i] = (uint32_t)parts[i].len;
    memcpy(at, head, sizeof head);
    at += sizeof head;
    for (int i = 0; i < PARTS; i++) {
        if (parts[i].len) memcpy(at, parts[i].p, parts[i].len);
        at += parts[i].len;
    }
    p->len += need;
    p->n++;
}

static void entry_parts(const uint8_t *entry, tg_str_t parts[PARTS], uint32_t *seq,
                        size_t *size)
{
    uint32_t head[1 + PARTS];
    memcpy(head, entry, sizeof head);
    const uint8_t *at = entry + sizeof head;
    for (int i = 0; i < PARTS; i++) {
        parts[i] = (tg_str_t){(const char *)at, head[1 + i]};
        at += head[1 + i];
    }
    *seq = head[0];
    *size = (size_t)(at - entry);
}

static void pending_free(struct pending *p)
{
    free(p->buf);
    *p = (struct pending){0};
}

/* ------------------------------------------------------------------ sorting */

/* LMDB's default order: bytes, then the shorter key first; then put order. */
static int ref_cmp(const void *pa, const void *pb)
{
    const struct ref *a = pa, *b = pb;
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, n);
    if (c) return c;
    if (a->klen != b->klen) return a->klen < b->klen ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Sorts refs unless they are in order already: a snapshot arrives in id order (the CP pages
 * by the uuid column, whose order is the order of the 16-byte keys), and a check is one pass
 * where a sort of a million refs is seconds. */
static void sort_refs(struct ref *r, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (ref_cmp(&r[i - 1], &r[i]) > 0) {
            qsort(r, n, sizeof *r, ref_cmp);
            return;
        }
}

/* Refs to every entry, keyed by part `by` (entries where it is empty are left out). */
static struct ref *refs_of(const struct pending *p, int by, size_t *n)
{
    struct ref *r = tg_malloc((p->n + 1) * sizeof *r);
    size_t k = 0;
    for (size_t off = 0; off < p->len;) {
        tg_str_t parts[PARTS];
        uint32_t seq;
        size_t size;
        entry_parts(p->buf + off, parts, &seq, &size);
        if (parts[by].len)
            r[k++] = (struct ref){(const uint8_t *)parts[by].p, p->buf + off,
                                  (uint32_t)parts[by].len, seq, false, NULL};
        off += size;
    }
    sort_refs(r, k);
    *n = k;
    return r;
}

static bool same_key(const struct ref *a, const struct ref *b)
{
    return a->klen == b->klen && memcmp(a->key, b->key, a->klen) == 0;
}

/* Marks every entry but the last put of each key as dropped. */
static void keep_last(struct ref *r, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (same_key(&r[i], &r[i + 1])) r[i].dropped = true;
}

static tg_str_t part(const struct ref *r, int i)
{
    tg_str_t parts[PARTS];
    uint32_t seq;
    size_t size;
    entry_parts(r->entry, parts, &seq, &size);
    return parts[i];
}

/* A dropped entry's hash leaves the digest: it was added when it was put. */
static int unhash(tg_store_snapshot_t *snap, const struct type_db *t, tg_str_t key,
                  tg_str_t value)
{
    uint8_t h[TG_CONFIG_DIGEST_LEN];
    int rc = store_stored_hash(t, key, value, h);
    if (rc == 0) tg_config_digest_sub(&snap->digest, h);
    return rc;
}

/* ------------------------------------------------------------------ owners */

/*
 * The snapshot's consumers by id key (the last put of an id, as write_consumers keeps), so
 * that each credential is written with a copy of its consumer's record (store_record.h owned
 * records): open addressing over the pending entries, about 16 bytes per consumer for the
 * duration of the credentials' append.
 */
struct owners {
    const uint8_t **slot; /* pending entries; NULL: empty */
    size_t mask;
};

static size_t owner_hash(tg_str_t key)
{
    uint64_t h = tg_fnv1a(key.p, key.len, TG_FNV1A_BASIS);
    return (size_t)(h ^ (h >> 29));
}

static const uint8_t **owner_slot(const struct owners *o, tg_str_t key)
{
    for (size_t i = owner_hash(key) & o->mask;; i = (i + 1) & o->mask) {
        const uint8_t **at = &o->slot[i];
        if (!*at) return at;
        tg_str_t parts[PARTS];
        uint32_t seq;
        size_t size;
        entry_parts(*at, parts, &seq, &size);
        if (parts[P_KEY].len == key.len && memcmp(parts[P_KEY].p, key.p, key.len) == 0)
            return at;
    }
}

static void owners_build(struct owners *o, const struct pending *consumers)
{
    size_t cap = 16;
    while (cap < 2 * consumers->n)
        cap *= 2;
    o->slot = tg_calloc(cap, sizeof *o->slot);
    o->mask = cap - 1;
    for (size_t off = 0; off < consumers->len;) { /* put order: a later put replaces */
        tg_str_t parts[PARTS];
        uint32_t seq;
        size_t size;
        entry_parts(consumers->buf + off, parts, &seq, &size);
        *owner_slot(o, parts[P_KEY]) = consumers->buf + off;
        off += size;
    }
}

static void owners_free(struct owners *o)
{
    free(o->slot);
    o->slot = NULL;
}

/* A credential's stored value with its consumer's record when both are records; else as is. */
static tg_str_t owners_join(const struct owners *o, tg_str_t value, uint8_t *buf, size_t cap)
{
    tg_str_t ref = tg_record_is_compact(value) ? tg_record_credential_owner_key(value)
                                               : TG_STR_NULL;
    const uint8_t *entry = ref.len ? *owner_slot(o, ref) : NULL;
    if (!entry) return value;
    tg_str_t parts[PARTS];
    uint32_t seq;
    size_t size;
    entry_parts(entry, parts, &seq, &size);
    size_t n = tg_record_join(value, parts[P_VALUE], buf, cap);
    return n ? (tg_str_t){(const char *)buf, n} : value;
}

/* ------------------------------------------------------------------ appending */

/* Appends the kept refs from `from` on, one transaction's worth; *next: where to go on.
 * With `own` (credentials), each value gets its consumer's record (owners_join). */
static int append_chunk(tg_store_t *s, MDB_dbi dbi, const struct ref *r, size_t n, int v,
                        const struct owners *own, size_t from, size_t *next)
{
    uint8_t owned[2 * TG_RECORD_MAX];
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return store_lmdb_err(rc, "mdb_txn_begin");
    rc = mdb_cursor_open(txn, dbi, &cur);
    size_t i = from, bytes = 0;
    for (; rc == 0 && i < n && bytes < CHUNK_BYTES; i++) {
        if (r[i].dropped) continue;
        tg_str_t value = part(&r[i], v);
        if (own) value = owners_join(own, value, owned, sizeof owned);
        MDB_val k = {r[i].klen, (void *)r[i].key}, d = {value.len, (void *)value.p};
        rc = mdb_cursor_put(cur, &k, &d, MDB_APPEND);
        bytes += k.mv_size + d.mv_size;
    }
    if (cur) mdb_cursor_close(cur);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    *next = i;
    return rc ? store_lmdb_err(rc, "appending a snapshot") : 0;
}

/* Appends part `v` of the kept refs under their sort key; a full map is grown and the
 * transaction that did not fit is written again. */
static int append_refs(tg_store_snapshot_t *snap, MDB_dbi dbi, const struct ref *r, size_t n,
                       int v, const struct owners *own)
{
    snap->written = true;
    for (size_t i = 0, next = 0, tries = 0; i < n; i = next) {
        int rc = append_chunk(snap->s, dbi, r, n, v, own, i, &next);
        if (rc == -TG_ETOOBIG && tries++ < STORE_GROW_RETRIES && store_grow(snap->s, 0) == 0)
            next = i;
        else if (rc)
            return rc;
        else
            tries = 0;
    }
    return 0;
}

/* ------------------------------------------------------------------ per kind */

static int write_json(tg_store_snapshot_t *snap, const struct type_db *t, const struct pending *p)
{
    size_t n;
    struct ref *r = refs_of(p, P_KEY, &n);
    int rc = 0;
    keep_last(r, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (r[i].dropped) rc = unhash(snap, t, part(&r[i], P_KEY), part(&r[i], P_VALUE));
    if (rc == 0) rc = append_refs(snap, type_dbi(snap->set, t), r, n, P_VALUE, NULL);
    free(r);
    return rc;
}

/* An index over the kept entities: part `by` → their key; the last put of a name owns it. */
static int write_index(tg_store_snapshot_t *snap, MDB_dbi dbi, const struct ref *kept,
                       size_t nkept, int by)
{
    /* Entities dropped as duplicates must not claim names: only the kept ones are indexed. */
    struct ref *r = tg_malloc((nkept + 1) * sizeof *r);
    size_t n = 0;
    for (size_t i = 0; i < nkept; i++) {
        tg_str_t name = part(&kept[i], by);
        if (!kept[i].dropped && name.len)
            r[n++] = (struct ref){(const uint8_t *)name.p, kept[i].entry, (uint32_t)name.len,
                                  kept[i].seq, false, NULL};
    }
    sort_refs(r, n);
    keep_last(r, n);
    int rc = append_refs(snap, dbi, r, n, P_KEY, NULL);
    free(r);
    return rc;
}

static int write_consumers(tg_store_snapshot_t *snap, const struct type_db *t,
                           const struct pending *p)
{
    size_t n;
    struct ref *r = refs_of(p, P_KEY, &n);
    int rc = 0;
    keep_last(r, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (r[i].dropped) rc = unhash(snap, t, part(&r[i], P_KEY), part(&r[i], P_VALUE));
    if (rc == 0) rc = append_refs(snap, type_dbi(snap->set, t), r, n, P_VALUE, NULL);
    if (rc == 0) rc = write_index(snap, snap->set->usernames, r, n, P_X1);
    if (rc == 0) rc = write_index(snap, snap->set->custom_ids, r, n, P_X2);
    free(r);
    return rc;
}

/*
 * Credentials are put keyed by id (P_KEY) with their digest (P_X1): the last put of an id
 * wins, then the last put of a digest among those; the losers of either leave the digest.
 */
static int write_credentials(tg_store_snapshot_t *snap, const struct type_db *t,
                             const struct pending *p)
{
    size_t n, m = 0;
    struct ref *by_id = refs_of(p, P_KEY, &n);
    struct ref *by_digest = tg_malloc((n + 1) * sizeof *by_digest);
    int rc = 0;
    keep_last(by_id, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        tg_str_t digest = part(&by_id[i], P_X1);
        if (by_id[i].dropped)
            rc = unhash(snap, t, digest, part(&by_id[i], P_VALUE));
        else
            by_digest[m++] = (struct ref){(const uint8_t *)digest.p, by_id[i].entry,
                                          (uint32_t)digest.len, by_id[i].seq, false, &by_id[i]};
    }
    sort_refs(by_digest, m);
    keep_last(by_digest, m);
    for (size_t i = 0; rc == 0 && i < m; i++) {
        if (!by_digest[i].dropped) continue;
        by_digest[i].origin->dropped = true; /* displaced: out of the id index too */
        rc = unhash(snap, t, part(&by_digest[i], P_X1), part(&by_digest[i], P_VALUE));
    }
    struct owners own;
    owners_build(&own, &snap->pend[snap->s->consumers->index]);
    if (rc == 0) rc = append_refs(snap, type_dbi(snap->set, t), by_digest, m, P_VALUE, &own);
    owners_free(&own);
    if (rc == 0) rc = append_refs(snap, snap->set->cred_ids, by_id, n, P_X1, NULL);
    free(by_digest);
    free(by_id);
    return rc;
}

static int write_type(tg_store_snapshot_t *snap, const struct type_db *t, const struct pending *p)
{
    switch (t->kind) {
    case KIND_CONSUMER: return write_consumers(snap, t, p);
    case KIND_CREDENTIAL: return write_credentials(snap, t, p);
    case KIND_JSON: break;
    }
    return write_json(snap, t, p);
}

/* ------------------------------------------------------------------ snapshots */

/* Old and new config both live until the flip, so a snapshot needs about twice the used
 * size: growing up front beats growing again and again on the way. */
static int reserve_for_snapshot(tg_store_t *s)
{
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    size_t need = 2 * (info.me_last_pgno + 1) * (size_t)st.ms_psize + SNAPSHOT_HEADROOM;
    return s->map_size >= need ? 0 : store_grow(s, need);
}

/* Empties a set in a transaction of its own. */
static int clear_set(tg_store_t *s, const struct dbset *set)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return store_lmdb_err(rc, "mdb_txn_begin");
    rc = store_clear_set(txn, s, set);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    return rc ? store_lmdb_err(rc, "mdb_txn_commit") : 0;
}

static void pending_free_all(tg_store_snapshot_t *snap)
{
    for (size_t i = 0; i < STORE_MAX_TYPES; i++)
        pending_free(&snap->pend[i]);
}

int tg_store_snapshot_begin(tg_store_t *s, tg_store_snapshot_t **out)
{
    if (!s || !out || s->snapshot) return -TG_EINVAL;
    const struct dbset *set = &s->sets[!s->active];
    /* Normally empty already: the last flip or abort emptied it, or tg_store_open did. */
    int rc = reserve_for_snapshot(s);
    if (rc == 0) rc = clear_set(s, set);
    if (rc) return rc;
    tg_store_snapshot_t *snap = tg_calloc(1, sizeof *snap);
    snap->s = s;
    snap->set = set;
    s->snapshot = snap;
    *out = snap;
    return 0;
}

static int snapshot_fail(tg_store_snapshot_t *snap, int rc)
{
    pending_free_all(snap);
    snap->failed = rc;
    return rc;
}

static void queue(tg_store_snapshot_t *snap, const struct prepared *p)
{
    MDB_val v = store_prepared_value(p);
    tg_str_t parts[PARTS] = {{0}};
    parts[P_VALUE] = (tg_str_t){v.mv_data, v.mv_size};
    if (p->t->kind == KIND_CREDENTIAL) { /* by id first, see write_credentials */
        parts[P_KEY] = (tg_str_t){(const char *)p->id_key, p->id_klen};
        parts[P_X1] = (tg_str_t){(const char *)p->key, TG_SHA256_LEN};
    } else {
        parts[P_KEY] = (tg_str_t){(const char *)p->key, p->klen};
    }
    if (p->username.present)
        parts[P_X1] = (tg_str_t){(const char *)p->username.buf, p->username.len};
    if (p->custom_id.present)
        parts[P_X2] = (tg_str_t){(const char *)p->custom_id.buf, p->custom_id.len};
    pending_add(&snap->pend[p->t->index], snap->seq++, parts);
    tg_config_digest_add(&snap->digest, p->hash);
}

int tg_store_snapshot_put(tg_store_snapshot_t *snap, const tg_store_change_t *entities, size_t n,
                          tg_store_error_t *err)
{
    store_err_reset(err);
    if (!snap || (n > 0 && !entities)) return -TG_EINVAL;
    if (snap->failed) return store_fail_default(err, snap->failed);
    int rc = 0;
    struct prepared *p = tg_malloc(sizeof *p); /* a few KiB: not on the caller's stack */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        tg_store_change_t c = entities[i];
        c.op = TG_STORE_UPSERT;
        rc = store_prepare(snap->s, &c, i, p, err);
        if (rc == 0) queue(snap, p);
        store_prepared_release(p);
    }
    free(p);
    if (rc) rc = snapshot_fail(snap, rc);
    return store_fail_default(err, rc);
}

/* ------------------------------------------------------------------ the fast path */

/*
 * The record of store_record.c written from field values (store_bulk.h says why): byte 0 the
 * tag, 2 bits per field of the type's table (in table order, low bits first: 0 absent,
 * 1 null, 2 a value), then each value in table order. The tables, in the order
 * store_record.c writes them:
 *   consumers    created_at int, custom_id str, tags tags, updated_at int, username str
 *   credentials  consumer ref, created_at int, expires_at int, id uuid, tags tags
 * 0 where the general encoder would refuse too (an id or a reference that is not a
 * lower-case UUID, more than TG_RECORD_MAX bytes): the canonical JSON is stored then.
 */
enum { F_ABSENT, F_NULL, F_VALUE };

struct recw {
    uint8_t *p;
    size_t len;
    bool ok;
};

static void rec_bytes(struct recw *w, const void *b, size_t n)
{
    if (!w->ok || TG_RECORD_MAX - w->len < n) {
        w->ok = false;
        return;
    }
    memcpy(w->p + w->len, b, n);
    w->len += n;
}

static void rec_varint(struct recw *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) b[n] |= 0x80;
        n++;
    } while (v);
    rec_bytes(w, b, n);
}

static void rec_int(struct recw *w, int64_t v)
{
    uint64_t u = (uint64_t)v;
    rec_varint(w, (u << 1) ^ (0 - (u >> 63)));
}

static void rec_str(struct recw *w, const char *s)
{
    size_t n = strlen(s);
    rec_varint(w, n);
    rec_bytes(w, s, n);
}

static void rec_uuid(struct recw *w, const char *s)
{
    uint8_t u[TG_RECORD_UUID_LEN];
    if (!tg_record_uuid_pack(tg_str_from(s), u))
        w->ok = false;
    else
        rec_bytes(w, u, sizeof u);
}

static void rec_tags(struct recw *w, const tg_store_bulk_entity_t *e)
{
    rec_varint(w, e->ntags);
    for (size_t i = 0; i < e->ntags && w->ok; i++)
        rec_str(w, e->tags[i]);
}

static size_t bulk_record(const struct type_db *t, const tg_store_bulk_entity_t *e, uint8_t *buf)
{
    struct recw w = {buf, 0, true};
    uint8_t head[3] = {TG_RECORD_TAG, 0, 0};
    int st[5];
    if (t->kind == KIND_CONSUMER) {
        uint8_t key[TG_RECORD_UUID_LEN];
        if (!tg_record_uuid_pack(tg_str_from(e->id), key)) return 0; /* not keyed by a UUID */
        st[0] = e->has_created_at ? F_VALUE : F_NULL;
        st[1] = e->custom_id ? F_VALUE : F_NULL;
        st[2] = e->has_tags ? F_VALUE : F_NULL;
        st[3] = e->has_updated_at ? F_VALUE : F_NULL;
        st[4] = e->username ? F_VALUE : F_NULL;
    } else {
        st[0] = e->consumer ? F_VALUE : F_NULL;
        st[1] = e->has_created_at ? F_VALUE : F_NULL;
        st[2] = e->has_expires_at ? F_VALUE : F_ABSENT;
        st[3] = F_VALUE; /* the id */
        st[4] = e->has_tags ? F_VALUE : F_NULL;
    }
    for (int i = 0; i < 5; i++)
        head[1 + i / 4] |= (uint8_t)(st[i] << (2 * (i % 4)));
    rec_bytes(&w, head, sizeof head);
    if (t->kind == KIND_CONSUMER) {
        if (st[0] == F_VALUE) rec_int(&w, e->created_at);
        if (st[1] == F_VALUE) rec_str(&w, e->custom_id);
        if (st[2] == F_VALUE) rec_tags(&w, e);
        if (st[3] == F_VALUE) rec_int(&w, e->updated_at);
        if (st[4] == F_VALUE) rec_str(&w, e->username);
    } else {
        if (st[0] == F_VALUE) rec_uuid(&w, e->consumer);
        if (st[1] == F_VALUE) rec_int(&w, e->created_at);
        if (st[2] == F_VALUE) rec_int(&w, e->expires_at);
        rec_uuid(&w, e->id);
        if (st[4] == F_VALUE) rec_tags(&w, e);
    }
    return w.ok ? w.len : 0;
}

/*
 * h(e) of config_digest.h, SHA-256(type || 0 || id || 0 || canonical), as
 * tg_config_digest_entity_raw computes it but with the digest algorithm fetched once and one
 * context reused: OpenSSL 3's one-shot EVP_Digest looks the algorithm up and allocates a
 * context on every call, which at two million entities was a third of the hashing time.
 * Falls back to the one-shot function if OpenSSL refuses anything.
 */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void bulk_hash(tg_store_snapshot_t *snap, tg_str_t type, tg_str_t id, tg_str_t canon,
                      uint8_t h[TG_CONFIG_DIGEST_LEN])
{
    static const unsigned char zero = 0;
    unsigned int n = 0;
    pthread_once(&sha256_once, sha256_fetch);
    if (!snap->md) snap->md = EVP_MD_CTX_new();
    if (sha256_md && snap->md && EVP_DigestInit_ex2(snap->md, sha256_md, NULL) == 1 &&
        EVP_DigestUpdate(snap->md, type.p, type.len) == 1 &&
        EVP_DigestUpdate(snap->md, &zero, 1) == 1 &&
        EVP_DigestUpdate(snap->md, id.p, id.len) == 1 &&
        EVP_DigestUpdate(snap->md, &zero, 1) == 1 &&
        EVP_DigestUpdate(snap->md, canon.p, canon.len) == 1 &&
        EVP_DigestFinal_ex(snap->md, h, &n) == 1 && n == TG_CONFIG_DIGEST_LEN)
        return;
    tg_config_digest_entity_raw(type, id, canon, h);
}

/* What store_prepare makes of the entity's JSON form, from its values. */
static int prepare_bulk(tg_store_snapshot_t *snap, const tg_store_bulk_entity_t *e,
                        struct prepared *p, tg_store_error_t *err)
{
    const tg_store_t *s = snap->s;
    p->canon = NULL;
    p->t = store_type_find(s, e->type);
    if (!p->t || p->t->kind == KIND_JSON)
        return store_fail(err, 0, -TG_EINVAL, "no bulk form for entity type '%s'",
                          e->type ? e->type : "");
    const char *type = p->t->schema->name;
    size_t idlen = e->id ? strlen(e->id) : 0;
    if (!idlen || idlen > STORE_ID_MAX)
        return store_fail(err, 0, -TG_EINVAL, "%s: missing or oversized id", type);
    p->op = TG_STORE_UPSERT;
    p->id = (tg_str_t){e->id, idlen};
    p->id_klen = tg_record_id_key(p->id, p->id_key);
    p->username.present = p->custom_id.present = false;
    if (p->t->kind == KIND_CONSUMER) {
        memcpy(p->key, p->id_key, p->id_klen);
        p->klen = p->id_klen;
        if (e->username) store_ikey_string(e->username, strlen(e->username), &p->username);
        if (e->custom_id) store_ikey_string(e->custom_id, strlen(e->custom_id), &p->custom_id);
    } else {
        if (!e->key_digest || e->key_digest_len != TG_SHA256_LEN)
            return store_fail(err, 0, -TG_EINVAL, "%s: invalid 'key_digest'", type);
        memcpy(p->key, e->key_digest, TG_SHA256_LEN);
        p->klen = TG_SHA256_LEN;
    }
    p->canon = (char *)e->canonical.p; /* borrowed: queue copies what it keeps */
    p->canon_len = e->canonical.len;
    bulk_hash(snap, tg_str_from(type), p->id, e->canonical, p->hash);
    p->rec_len = bulk_record(p->t, e, p->rec);
    return 0;
}

int tg_store_snapshot_put_bulk(tg_store_snapshot_t *snap, const tg_store_bulk_entity_t *e,
                               tg_store_error_t *err)
{
    store_err_reset(err);
    if (!snap || !e || !e->canonical.p) return -TG_EINVAL;
    if (snap->failed) return store_fail_default(err, snap->failed);
    if (!snap->scratch) snap->scratch = tg_malloc(sizeof *snap->scratch);
    struct prepared *p = snap->scratch;
    int rc = prepare_bulk(snap, e, p, err);
    if (rc == 0) queue(snap, p);
    p->canon = NULL; /* never owned here */
    if (rc) rc = snapshot_fail(snap, rc);
    return store_fail_default(err, rc);
}

static int check_expected(const tg_config_digest_t *got, const char *expected,
                          tg_store_error_t *err)
{
    tg_config_digest_t want;
    if (tg_config_digest_from_hex(expected, &want) != 0)
        return store_fail(err, SIZE_MAX, -TG_EINVAL, "snapshot digest is not 64 hex digits");
    if (memcmp(want.sum, got->sum, sizeof want.sum) == 0) return 0;
    char hex[TG_CONFIG_DIGEST_HEX_LEN + 1];
    tg_config_digest_hex(got, hex);
    return store_fail(err, SIZE_MAX, -TG_ECONFLICT,
                      "snapshot digest %s but its entities hash to %s", expected, hex);
}

static int write_pending(tg_store_snapshot_t *snap)
{
    tg_store_t *s = snap->s;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->n_types; i++) {
        rc = write_type(snap, &s->types[i], &snap->pend[i]);
        if (i != s->consumers->index) pending_free(&snap->pend[i]);
    }
    pending_free(&snap->pend[s->consumers->index]); /* copied into credentials meanwhile */
    return rc;
}

/*
 * The one transaction that switches sets: empties the active one, records version, digest
 * and the new active set. Readers learn the switch from s->flip, published before the commit
 * with the transaction's id (tg_store_read_begin).
 */
static int flip_once(tg_store_snapshot_t *snap, int64_t version)
{
    tg_store_t *s = snap->s;
    unsigned next = !s->active;
    uint8_t b = (uint8_t)next;
    struct wtx w;
    int rc = store_wtx_begin(s, &w);
    if (rc) return rc;
    w.digest = snap->digest;
    rc = store_clear_set(w.txn, s, &s->sets[s->active]);
    if (rc == 0) rc = store_meta_put(w.txn, s, "active", &b, 1);
    if (rc) {
        store_wtx_abort(&w);
        return rc;
    }
    uint64_t before = atomic_load(&s->flip);
    atomic_store(&s->flip, (uint64_t)mdb_txn_id(w.txn) << 1 | next);
    atomic_thread_fence(memory_order_seq_cst);
    rc = store_wtx_commit(&w, version);
    if (rc) {
        atomic_store(&s->flip, before);
        return rc;
    }
    s->active = next;
    snap->written = false; /* it is the active set now */
    return 0;
}

static int flip(tg_store_snapshot_t *snap, int64_t version)
{
    int rc;
    for (int tries = 0;; tries++) {
        rc = flip_once(snap, version);
        if (rc != -TG_ETOOBIG || tries == STORE_GROW_RETRIES || store_grow(snap->s, 0) != 0)
            return rc;
    }
}

int tg_store_snapshot_commit(tg_store_snapshot_t *snap, int64_t version,
                             const char *expected_digest, tg_store_error_t *err)
{
    store_err_reset(err);
    if (!snap) return -TG_EINVAL;
    int rc = snap->failed;
    if (rc == 0) rc = write_pending(snap);
    if (rc == 0 && expected_digest) rc = check_expected(&snap->digest, expected_digest, err);
    if (rc == 0) rc = flip(snap, version);
    tg_store_snapshot_abort(snap);
    return store_fail_default(err, rc);
}

void tg_store_snapshot_abort(tg_store_snapshot_t *snap)
{
    if (!snap) return;
    /* Best effort: tg_store_open or the next snapshot empties the set otherwise. */
    if (snap->written) (void)clear_set(snap->s, snap->set);
    pending_free_all(snap);
    free(snap->scratch);
    EVP_MD_CTX_free(snap->md);
    snap->s->snapshot = NULL;
    free(snap);
}

int tg_store_replace_all(tg_store_t *s, int64_t version, const tg_store_change_t *entities,
                         size_t n, tg_store_error_t *err)
{
    tg_store_snapshot_t *snap;
    store_err_reset(err);
    int rc = tg_store_snapshot_begin(s, &snap);
    if (rc) return store_fail_default(err, rc);
    rc = tg_store_snapshot_put(snap, entities, n, err);
    if (rc == 0) return tg_store_snapshot_commit(snap, version, NULL, err);
    tg_store_snapshot_abort(snap);
    return store_fail_default(err, rc);
}
