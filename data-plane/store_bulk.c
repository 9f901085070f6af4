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
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#define SNAPSHOT_HEADROOM ((size_t)16 << 20)
/* Written per transaction: what LMDB then keeps cached (file comment). */
#define CHUNK_BYTES ((size_t)1 << 20)
#define PARTS 4 /* key, value, and two extra strings (index keys, a credential's digest) */

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
    qsort(r, k, sizeof *r, ref_cmp);
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

/* ------------------------------------------------------------------ appending */

/* Appends the kept refs from `from` on, one transaction's worth; *next: where to go on. */
static int append_chunk(tg_store_t *s, MDB_dbi dbi, const struct ref *r, size_t n, int v,
                        size_t from, size_t *next)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return store_lmdb_err(rc, "mdb_txn_begin");
    rc = mdb_cursor_open(txn, dbi, &cur);
    size_t i = from, bytes = 0;
    for (; rc == 0 && i < n && bytes < CHUNK_BYTES; i++) {
        if (r[i].dropped) continue;
        tg_str_t value = part(&r[i], v);
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
                       int v)
{
    snap->written = true;
    for (size_t i = 0, next = 0, tries = 0; i < n; i = next) {
        int rc = append_chunk(snap->s, dbi, r, n, v, i, &next);
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

enum { P_KEY, P_VALUE, P_X1, P_X2 };

static int write_json(tg_store_snapshot_t *snap, const struct type_db *t, const struct pending *p)
{
    size_t n;
    struct ref *r = refs_of(p, P_KEY, &n);
    int rc = 0;
    keep_last(r, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (r[i].dropped) rc = unhash(snap, t, part(&r[i], P_KEY), part(&r[i], P_VALUE));
    if (rc == 0) rc = append_refs(snap, type_dbi(snap->set, t), r, n, P_VALUE);
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
    qsort(r, n, sizeof *r, ref_cmp);
    keep_last(r, n);
    int rc = append_refs(snap, dbi, r, n, P_KEY);
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
    if (rc == 0) rc = append_refs(snap, type_dbi(snap->set, t), r, n, P_VALUE);
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
    qsort(by_digest, m, sizeof *by_digest, ref_cmp);
    keep_last(by_digest, m);
    for (size_t i = 0; rc == 0 && i < m; i++) {
        if (!by_digest[i].dropped) continue;
        by_digest[i].origin->dropped = true; /* displaced: out of the id index too */
        rc = unhash(snap, t, part(&by_digest[i], P_X1), part(&by_digest[i], P_VALUE));
    }
    if (rc == 0) rc = append_refs(snap, type_dbi(snap->set, t), by_digest, m, P_VALUE);
    if (rc == 0) rc = append_refs(snap, snap->set->cred_ids, by_id, n, P_X1);
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
        pending_free(&snap->pend[i]);
    }
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
