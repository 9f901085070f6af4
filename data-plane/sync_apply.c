/*
 * sync_apply.c — the data plane's protocol logic over the store; see sync_apply.h.
 */
#include "sync_apply.h"
#include "alloc.h"
#include "dp_join.h"
#include "entity_codec.h"
#include "error.h"
#include "log.h"
#include "store_bulk.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef Tollgate__Sync__V1__Change pb_change_t;
typedef Tollgate__Sync__V1__NackCode nack_code_t;

#define NACK_VERSION_GAP TOLLGATE__SYNC__V1__NACK_CODE__NACK_VERSION_GAP
#define NACK_INVALID TOLLGATE__SYNC__V1__NACK_CODE__NACK_INVALID
#define NACK_STORE TOLLGATE__SYNC__V1__NACK_CODE__NACK_STORE
#define NACK_DIGEST TOLLGATE__SYNC__V1__NACK_CODE__NACK_DIGEST
#define BODY(x) TOLLGATE__SYNC__V1__ENVELOPE__BODY_##x

/* The entity types compiled into a generation; the others are read per request. */
static const char *const gen_types[] = {"services", "routes", "plugins"};
#define NGEN (sizeof(gen_types) / sizeof(gen_types[0]))

/* An open snapshot: what Begin announced and what arrived since. */
typedef struct snapshot {
    tg_store_snapshot_t *snap; /* NULL: none open */
    uint64_t nonce;
    int64_t version;
    bool has_count;
    uint64_t expected, received; /* entities */
    uint32_t chunks, next_seq;
    json_t *gen; /* services/routes/plugins seen so far, for the generation */
    uint64_t started_ns;
} snapshot_t;

struct tg_sync_apply {
    tg_store_t *store;
    char *node_id, *cluster_json;
    size_t headroom;
    tg_sync_publish_cb publish;
    void *publish_ud;
    tg_sync_apply_state_t st;
    snapshot_t snap;
    int64_t digest_nacked; /* the version a heartbeat digest mismatch was reported for */
};

/* ---------------------------------------------------------------- small helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t elapsed_us(uint64_t since_ns)
{
    uint64_t us = (now_ns() - since_ns) / 1000u;
    return us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static bool is_gen_type(const char *type)
{
    for (size_t i = 0; i < NGEN; i++)
        if (strcmp(type, gen_types[i]) == 0) return true;
    return false;
}

static json_t *empty_gen(void)
{
    return json_pack("{s:[],s:[],s:[]}", gen_types[0], gen_types[1], gen_types[2]);
}

/* ---------------------------------------------------------------- replies */

int tg_sync_apply_pack(const tg_sync_apply_t *a, const tg_sync_env_t *env, tg_sync_frame_t *out)
{
    if (tg_sync_pack(env, a->headroom, &out->buf, &out->frame, &out->len) != 0) {
        TG_LOGE("sync", "a %s reply is larger than the frame limit; not sent",
                tg_sync_body_name(env));
        *out = (tg_sync_frame_t){0};
        return -TG_ETOOBIG;
    }
    return 0;
}

static void reply(const tg_sync_apply_t *a, tg_sync_out_t *out, const tg_sync_env_t *env)
{
    if (out->n == TG_SYNC_OUT_MAX) tg_fatal("sync_apply: more than %d replies", TG_SYNC_OUT_MAX);
    if (tg_sync_apply_pack(a, env, &out->frames[out->n]) == 0) out->n++;
}

static void send_ack(tg_sync_apply_t *a, tg_sync_out_t *out, uint64_t nonce, int64_t version,
                     uint32_t us, const char *digest)
{
    Tollgate__Sync__V1__Ack ack = TOLLGATE__SYNC__V1__ACK__INIT;
    ack.has_nonce = ack.has_applied_version = ack.has_apply_time_us = 1;
    ack.nonce = nonce;
    ack.applied_version = version;
    ack.apply_time_us = us;
    ack.config_digest = (char *)digest;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = BODY(ACK);
    env.ack = &ack;
    reply(a, out, &env);
}

static const char *nack_name(nack_code_t code)
{
    switch (code) {
    case NACK_VERSION_GAP:
        return "VERSION_GAP";
    case NACK_INVALID:
        return "INVALID";
    case NACK_STORE:
        return "STORE";
    case NACK_DIGEST:
        return "DIGEST";
    default:
        return "UNSPECIFIED";
    }
}

/* Nacks `nonce`, keeping `kept`; logs the reason once, here where it is decided. */
static void send_nack(tg_sync_apply_t *a, tg_sync_out_t *out, uint64_t nonce, int64_t kept,
                      nack_code_t code, const char *type, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static void send_nack(tg_sync_apply_t *a, tg_sync_out_t *out, uint64_t nonce, int64_t kept,
                      nack_code_t code, const char *type, const char *id, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    TG_LOGW("sync", "rejecting push %llu (%s%s%s%s%s): %s; keeping configuration version %lld",
            (unsigned long long)nonce, nack_name(code), type ? " " : "", type ? type : "",
            id ? " " : "", id ? id : "", msg, (long long)kept);
    snprintf(a->st.last_nack, sizeof(a->st.last_nack), "%s: %.200s", nack_name(code), msg);
    a->st.nacks_sent++;
    Tollgate__Sync__V1__Nack nack = TOLLGATE__SYNC__V1__NACK__INIT;
    nack.has_nonce = nack.has_kept_version = nack.has_code = 1;
    nack.nonce = nonce;
    nack.kept_version = kept;
    nack.code = code;
    nack.entity_type = (char *)type;
    nack.entity_id = (char *)id;
    nack.message = msg;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = BODY(NACK);
    env.nack = &nack;
    reply(a, out, &env);
}

void tg_sync_out_free(tg_sync_out_t *out)
{
    for (size_t i = 0; i < out->n; i++)
        free(out->frames[i].buf);
    out->n = 0;
}

/* ---------------------------------------------------------------- decoding changes */

/* Decoded changes: the store's view and the JSON it points at (owned here). */
typedef struct decoded {
    tg_store_change_t *ch;
    json_t *owned; /* array keeping every decoded entity alive */
    size_t n;
    size_t bad; /* the change that failed to decode */
    char err[256];
} decoded_t;

static void decoded_free(decoded_t *d)
{
    free(d->ch);
    json_decref(d->owned);
}

/* One change into the store's form. `snapshot`: entities of a snapshot (upserts only). */
static int decode_one(const pb_change_t *c, bool snapshot, decoded_t *d)
{
    tg_store_change_t *out = &d->ch[d->n];
    if (!c->type || !tg_proto_entity_descriptor(c->type)) {
        snprintf(d->err, sizeof(d->err), "unknown entity type '%s'", c->type ? c->type : "");
        return -TG_EINVAL;
    }
    bool del = c->has_op && c->op == TOLLGATE__SYNC__V1__OP__OP_DELETE;
    if (del && snapshot) {
        snprintf(d->err, sizeof(d->err), "a snapshot carries upserts only");
        return -TG_EINVAL;
    }
    *out = (tg_store_change_t){c->type, c->id, del ? TG_STORE_DELETE : TG_STORE_UPSERT, NULL};
    if (del) {
        if (!c->id) snprintf(d->err, sizeof(d->err), "a delete without an id");
        return c->id ? 0 : -TG_EINVAL;
    }
    if (!snapshot && (!c->has_op || c->op != TOLLGATE__SYNC__V1__OP__OP_UPSERT)) {
        snprintf(d->err, sizeof(d->err), "a change without an operation");
        return -TG_EINVAL;
    }
    if (!c->entity) {
        snprintf(d->err, sizeof(d->err), "an upsert without an entity");
        return -TG_EINVAL;
    }
    json_t *e = tg_proto_entity_to_json(c->type, c->entity, d->err, sizeof(d->err));
    if (!e) return -TG_EINVAL;
    json_array_append_new(d->owned, e);
    out->entity = e;
    return 0;
}

static int decode_changes(pb_change_t *const *in, size_t n, bool snapshot, decoded_t *d)
{
    *d = (decoded_t){.ch = tg_calloc(n + 1, sizeof(*d->ch)), .owned = json_array()};
    for (size_t i = 0; i < n; i++) {
        if (decode_one(in[i], snapshot, d) != 0) {
            d->bad = i;
            return -TG_EINVAL;
        }
        d->n++;
    }
    return 0;
}

static const char *change_id(const tg_store_change_t *c)
{
    if (c->id) return c->id;
    return c->entity ? json_string_value(json_object_get(c->entity, "id")) : NULL;
}

/* ---------------------------------------------------------------- next generation */

static int by_id_cmp(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* The values of an id → entity object as an array in id order, the order the store keeps
 * them in, so the generation is the one a restart would compile from the store. */
static json_t *sorted_values(json_t *by_id)
{
    size_t n = json_object_size(by_id), i = 0;
    const char **keys = tg_calloc(n + 1, sizeof(*keys));
    const char *k;
    json_t *v;
    json_object_foreach(by_id, k, v) keys[i++] = k;
    qsort(keys, n, sizeof(*keys), by_id_cmp);
    json_t *arr = json_array();
    for (i = 0; i < n; i++)
        json_array_append(arr, json_object_get(by_id, keys[i]));
    free(keys);
    return arr;
}

static json_t *index_by_id(const json_t *arr)
{
    json_t *obj = json_object(), *e;
    size_t i;
    json_array_foreach(arr, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "id"));
        if (id) json_object_set(obj, id, e);
    }
    return obj;
}

/* Applies the generation-relevant changes of a delta to the entities read from the store. */
static void patch(json_t *entities, const tg_store_change_t *ch, size_t n)
{
    for (size_t t = 0; t < NGEN; t++) {
        json_t *by_id = index_by_id(json_object_get(entities, gen_types[t]));
        for (size_t i = 0; i < n; i++) {
            const char *id = change_id(&ch[i]);
            if (strcmp(ch[i].type, gen_types[t]) != 0 || !id) continue;
            if (ch[i].op == TG_STORE_DELETE)
                json_object_del(by_id, id);
            else
                json_object_set(by_id, id, (json_t *)ch[i].entity);
        }
        json_object_set_new(entities, gen_types[t], sorted_values(by_id));
        json_decref(by_id);
    }
}

/* Compiles what the store will serve once the delta is applied. */
static int delta_generation(tg_sync_apply_t *a, const decoded_t *d, tg_generation_t **g, char *err,
                            size_t errlen)
{
    json_t *entities = NULL;
    int rc = tg_generation_load_store(a->store, &entities, NULL, NULL);
    if (rc == -TG_ENOTFOUND) {
        entities = empty_gen();
        rc = 0;
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot read the stored configuration: %s", tg_strerror(rc));
        return rc;
    }
    patch(entities, d->ch, d->n);
    rc = tg_generation_build(entities, g, err, errlen);
    json_decref(entities);
    return rc;
}

static bool touches_generation(const decoded_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        if (is_gen_type(d->ch[i].type)) return true;
    return false;
}

/* Hands a compiled generation to the transport's owner, stamped with the store's state. */
static void publish(tg_sync_apply_t *a, tg_generation_t *g, const tg_store_info_t *info)
{
    g->version = info->version;
    snprintf(g->hash, sizeof(g->hash), "%s", info->digest);
    if (a->publish)
        a->publish(a->publish_ud, g);
    else
        tg_generation_unref(g);
}

/* After a successful write: the store's state, the control plane it now comes from, stats. */
static void applied(tg_sync_apply_t *a, tg_store_info_t *info, uint32_t us)
{
    if (a->st.cp_id[0] && strcmp(info->cp_id, a->st.cp_id) != 0) {
        int rc = tg_store_set_cp_id(a->store, a->st.cp_id);
        if (rc != 0) TG_LOGW("sync", "cannot record the control plane id: %s", tg_strerror(rc));
    }
    a->st.applied_version = info->version;
    snprintf(a->st.digest, sizeof(a->st.digest), "%s", info->digest);
    a->st.last_apply_unix_ms = wall_ms();
    a->st.last_apply_us = us;
    a->digest_nacked = -1;
}

/* ---------------------------------------------------------------- delta */

static nack_code_t store_nack_code(int rc)
{
    if (rc == -TG_EINVAL) return NACK_INVALID;
    if (rc == -TG_ECONFLICT) return NACK_VERSION_GAP;
    return NACK_STORE;
}

/* Writes a decoded delta and, when it compiled one, publishes the next generation. */
static void commit_delta(tg_sync_apply_t *a, const Tollgate__Sync__V1__Delta *dl, decoded_t *d,
                         tg_generation_t *g, int64_t kept, uint64_t t0, tg_sync_out_t *out)
{
    tg_store_error_t serr = {.index = SIZE_MAX};
    int rc = tg_store_apply(a->store, dl->from_version, dl->to_version, d->ch, d->n, &serr);
    tg_store_info_t info;
    if (rc == 0 && tg_store_info(a->store, &info) != 0) /* applied all the same */
        info = (tg_store_info_t){.loaded = true, .version = dl->to_version};
    if (rc != 0) {
        tg_generation_unref(g);
        const tg_store_change_t *c = serr.index < d->n ? &d->ch[serr.index] : NULL;
        send_nack(a, out, dl->nonce, kept, store_nack_code(rc), c ? c->type : NULL,
                  c ? change_id(c) : NULL, "%s", serr.message[0] ? serr.message : tg_strerror(rc));
        return;
    }
    uint32_t us = elapsed_us(t0);
    applied(a, &info, us);
    a->st.deltas_applied++;
    TG_LOGN("sync", "applied delta %lld -> %lld (%zu changes) in %u us",
            (long long)dl->from_version, (long long)dl->to_version, d->n, us);
    if (g) publish(a, g, &info);
    if (dl->config_digest && *dl->config_digest && strcmp(dl->config_digest, info.digest) != 0)
        send_nack(a, out, dl->nonce, info.version, NACK_DIGEST, NULL, NULL,
                  "applied version %lld but its digest %s differs from the control plane's %s",
                  (long long)info.version, info.digest, dl->config_digest);
    else
        send_ack(a, out, dl->nonce, info.version, us, info.digest);
}

static void on_delta(tg_sync_apply_t *a, const Tollgate__Sync__V1__Delta *dl, tg_sync_out_t *out)
{
    uint64_t t0 = now_ns();
    tg_store_info_t info;
    int rc = tg_store_info(a->store, &info);
    if (rc != 0) {
        send_nack(a, out, dl->nonce, 0, NACK_STORE, NULL, NULL, "cannot read the store: %s",
                  tg_strerror(rc));
        return;
    }
    int64_t kept = info.version;
    if (!dl->has_from_version || dl->from_version != kept) {
        send_nack(a, out, dl->nonce, kept, NACK_VERSION_GAP, NULL, NULL,
                  "delta from version %lld, but the applied version is %lld",
                  (long long)dl->from_version, (long long)kept);
        return;
    }
    if (!dl->has_to_version || dl->to_version <= dl->from_version) {
        send_nack(a, out, dl->nonce, kept, NACK_INVALID, NULL, NULL,
                  "delta to version %lld does not follow %lld", (long long)dl->to_version,
                  (long long)dl->from_version);
        return;
    }
    decoded_t d;
    if (decode_changes(dl->changes, dl->n_changes, false, &d) != 0) {
        const pb_change_t *c = dl->changes[d.bad];
        send_nack(a, out, dl->nonce, kept, NACK_INVALID, c->type, c->id, "%s", d.err);
        decoded_free(&d);
        return;
    }
    tg_generation_t *g = NULL;
    char err[512] = "";
    /* the first config of a fresh store is compiled whatever it holds: it makes the DP ready */
    bool compile = touches_generation(&d) || !info.loaded;
    if (compile && delta_generation(a, &d, &g, err, sizeof(err)) != 0)
        send_nack(a, out, dl->nonce, kept, NACK_INVALID, NULL, NULL, "%s", err);
    else
        commit_delta(a, dl, &d, g, kept, t0, out);
    decoded_free(&d);
}

/* ---------------------------------------------------------------- snapshots */

static void snapshot_close(tg_sync_apply_t *a)
{
    tg_store_snapshot_abort(a->snap.snap);
    json_decref(a->snap.gen);
    a->snap = (snapshot_t){0};
}

/* Abandons the open snapshot (old config kept) and Nacks it. */
static void snapshot_refuse(tg_sync_apply_t *a, tg_sync_out_t *out, nack_code_t code,
                            const char *type, const char *id, const char *msg)
{
    uint64_t nonce = a->snap.nonce;
    snapshot_close(a);
    tg_store_info_t info = {0};
    (void)tg_store_info(a->store, &info);
    send_nack(a, out, nonce, info.version, code, type, id, "%s", msg);
}

static void on_snapshot_begin(tg_sync_apply_t *a, const Tollgate__Sync__V1__SnapshotBegin *b,
                              tg_sync_out_t *out)
{
    if (a->snap.snap)
        snapshot_refuse(a, out, NACK_INVALID, NULL, NULL, "superseded by a new snapshot");
    int rc = tg_store_snapshot_begin(a->store, &a->snap.snap);
    if (rc != 0) {
        a->snap.snap = NULL;
        tg_store_info_t info = {0};
        (void)tg_store_info(a->store, &info);
        send_nack(a, out, b->nonce, info.version, NACK_STORE, NULL, NULL,
                  "cannot start a snapshot: %s", tg_strerror(rc));
        return;
    }
    a->snap.nonce = b->nonce;
    a->snap.version = b->version;
    a->snap.has_count = b->has_entity_count;
    a->snap.expected = b->entity_count;
    a->snap.gen = empty_gen();
    a->snap.started_ns = now_ns();
    if (b->has_entity_count)
        TG_LOGN("sync", "receiving snapshot of version %lld (%llu entities)",
                (long long)b->version, (unsigned long long)b->entity_count);
    else /* a control plane streaming the snapshot as it reads it does not know the count */
        TG_LOGN("sync", "receiving snapshot of version %lld", (long long)b->version);
}

/* Whether a chunk is the next one of the open snapshot; msg says why not. */
static bool chunk_expected(const snapshot_t *s, const Tollgate__Sync__V1__SnapshotChunk *c,
                           char *msg, size_t len)
{
    if (c->nonce != s->nonce) {
        snprintf(msg, len, "chunk of snapshot %llu inside snapshot %llu",
                 (unsigned long long)c->nonce, (unsigned long long)s->nonce);
        return false;
    }
    bool first_ok = s->chunks == 0 && (c->seq == 0 || c->seq == 1);
    if (!first_ok && (s->chunks == 0 || c->seq != s->next_seq)) {
        snprintf(msg, len, "chunk %u arrived where chunk %u was expected", c->seq,
                 s->chunks ? s->next_seq : 0);
        return false;
    }
    return true;
}

/* Keeps the generation's entities of a chunk for End. */
static void collect(snapshot_t *s, const decoded_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        if (is_gen_type(d->ch[i].type))
            json_array_append(json_object_get(s->gen, d->ch[i].type), (json_t *)d->ch[i].entity);
}

/* ---------------------------------------------------------------- the bulk path */

static bool ascii(const char *s)
{
    if (!s) return true;
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

static bool tags_ascii(const Tollgate__Sync__V1__StringList *tags)
{
    if (!tags) return true;
    for (size_t i = 0; i < tags->n_values; i++)
        if (!tags->values[i] || !ascii(tags->values[i])) return false;
    return true;
}

/*
 * A snapshot's consumers and credentials go to the store from their message's values with
 * their canonical text written directly (store_bulk.h, entity_codec.h): no JSON tree per
 * entity. Only the plain case takes this path: an upsert of one of those two kinds whose id
 * agrees with its entity's and whose strings are ASCII; everything else, errors included,
 * takes the general path, which words them. Fills *e (its canonical text is *canon, to
 * free) and returns true when the entity is plain.
 */
static bool bulk_form(const pb_change_t *c, tg_store_bulk_entity_t *e, char **canon, char *err,
                      size_t errlen)
{
    const Tollgate__Sync__V1__Entity *ent = c->entity;
    if (!c->type || !ent || (c->has_op && c->op != TOLLGATE__SYNC__V1__OP__OP_UPSERT)) return false;
    *e = (tg_store_bulk_entity_t){.type = c->type};
    const char *id = NULL;
    const Tollgate__Sync__V1__StringList *tags = NULL;
    if (strcmp(c->type, "consumers") == 0 &&
        ent->kind_case == TOLLGATE__SYNC__V1__ENTITY__KIND_CONSUMER && ent->consumer) {
        const Tollgate__Sync__V1__Consumer *m = ent->consumer;
        id = m->id;
        tags = m->tags;
        e->has_created_at = m->has_created_at;
        e->created_at = m->created_at;
        e->has_updated_at = m->has_updated_at;
        e->updated_at = m->updated_at;
        e->username = m->username;
        e->custom_id = m->custom_id;
        if (!ascii(m->username) || !ascii(m->custom_id)) return false;
    } else if (strcmp(c->type, "keyauth_credentials") == 0 &&
               ent->kind_case == TOLLGATE__SYNC__V1__ENTITY__KIND_KEYAUTH_CREDENTIAL &&
               ent->keyauth_credential) {
        const Tollgate__Sync__V1__KeyauthCredential *m = ent->keyauth_credential;
        id = m->id;
        tags = m->tags;
        e->has_created_at = m->has_created_at;
        e->created_at = m->created_at;
        e->has_expires_at = m->has_expires_at;
        e->expires_at = m->expires_at;
        e->consumer = m->consumer;
        if (!m->has_key_digest || m->key_digest.len != 32 || !ascii(m->consumer)) return false;
        e->key_digest = m->key_digest.data;
        e->key_digest_len = m->key_digest.len;
    } else {
        return false;
    }
    if (!id || !ascii(id) || (c->id && strcmp(c->id, id) != 0) || !tags_ascii(tags)) return false;
    e->id = id;
    e->has_tags = tags != NULL;
    e->tags = tags ? tags->values : NULL;
    e->ntags = tags ? tags->n_values : 0;
    size_t len = 0;
    *canon = tg_proto_entity_canonical(c->type, ent, &len, err, errlen);
    if (!*canon) return false;
    e->canonical = (tg_str_t){*canon, len};
    return true;
}

/* Puts the entities of a chunk, each by the bulk path or the general one, in order. 0, or
 * a store error with the failing change in *bad and the reason in msg. */
static int put_chunk(tg_sync_apply_t *a, const Tollgate__Sync__V1__SnapshotChunk *c, decoded_t *d,
                     size_t *bad, char *msg, size_t len)
{
    *d = (decoded_t){.ch = tg_calloc(c->n_entities + 1, sizeof(*d->ch)), .owned = json_array()};
    for (size_t i = 0; i < c->n_entities; i++) {
        const pb_change_t *ch = c->entities[i];
        tg_store_error_t serr = {.index = SIZE_MAX};
        tg_store_bulk_entity_t e;
        char *canon = NULL;
        int rc;
        *bad = i;
        if (bulk_form(ch, &e, &canon, d->err, sizeof(d->err))) {
            rc = tg_store_snapshot_put_bulk(a->snap.snap, &e, &serr);
            free(canon);
        } else {
            free(canon);
            if (decode_one(ch, true, d) != 0) {
                snprintf(msg, len, "%s", d->err);
                return -TG_EINVAL;
            }
            rc = tg_store_snapshot_put(a->snap.snap, &d->ch[d->n], 1, &serr);
            d->n++;
        }
        if (rc != 0) {
            snprintf(msg, len, "%s",
                     rc == -TG_EAGAIN  ? "the store was full and has been grown; send it again"
                     : serr.message[0] ? serr.message
                                       : tg_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static void on_snapshot_chunk(tg_sync_apply_t *a, const Tollgate__Sync__V1__SnapshotChunk *c,
                              tg_sync_out_t *out)
{
    char msg[256];
    if (!a->snap.snap) {
        TG_LOGW("sync", "snapshot chunk %u of %llu outside a snapshot; ignored", c->seq,
                (unsigned long long)c->nonce);
        return;
    }
    if (!chunk_expected(&a->snap, c, msg, sizeof(msg))) {
        snapshot_refuse(a, out, NACK_INVALID, NULL, NULL, msg);
        return;
    }
    a->snap.next_seq = c->seq + 1;
    a->snap.chunks++;
    decoded_t d;
    size_t bad = 0;
    int rc = put_chunk(a, c, &d, &bad, msg, sizeof(msg));
    if (rc == 0) {
        collect(&a->snap, &d);
        a->snap.received += c->n_entities;
    } else {
        const pb_change_t *b = c->entities[bad];
        snapshot_refuse(a, out, store_nack_code(rc), b->type, b->id, msg);
    }
    decoded_free(&d);
}

/* Whether End matches what Begin announced and what arrived; msg says why not. */
static bool end_consistent(const snapshot_t *s, const Tollgate__Sync__V1__SnapshotEnd *e, char *msg,
                           size_t len)
{
    if (e->nonce != s->nonce)
        snprintf(msg, len, "end of snapshot %llu inside snapshot %llu",
                 (unsigned long long)e->nonce, (unsigned long long)s->nonce);
    else if (e->has_version && e->version != s->version)
        snprintf(msg, len, "snapshot began at version %lld and ends at %lld", (long long)s->version,
                 (long long)e->version);
    else if (e->has_chunks && e->chunks != s->chunks)
        snprintf(msg, len, "%u chunks announced, %u received", e->chunks, s->chunks);
    else if (s->has_count && s->expected != s->received)
        snprintf(msg, len, "%llu entities announced, %llu received",
                 (unsigned long long)s->expected, (unsigned long long)s->received);
    else
        return true;
    return false;
}

static void sort_gen(json_t *gen)
{
    for (size_t t = 0; t < NGEN; t++) {
        json_t *by_id = index_by_id(json_object_get(gen, gen_types[t]));
        json_object_set_new(gen, gen_types[t], sorted_values(by_id));
        json_decref(by_id);
    }
}

static void on_snapshot_end(tg_sync_apply_t *a, const Tollgate__Sync__V1__SnapshotEnd *e,
                            tg_sync_out_t *out)
{
    char msg[512];
    if (!a->snap.snap) {
        TG_LOGW("sync", "end of snapshot %llu outside a snapshot; ignored",
                (unsigned long long)e->nonce);
        return;
    }
    if (!end_consistent(&a->snap, e, msg, sizeof(msg))) {
        snapshot_refuse(a, out, NACK_INVALID, NULL, NULL, msg);
        return;
    }
    tg_generation_t *g = NULL;
    sort_gen(a->snap.gen);
    if (tg_generation_build(a->snap.gen, &g, msg, sizeof(msg)) != 0) {
        snapshot_refuse(a, out, NACK_INVALID, NULL, NULL, msg);
        return;
    }
    const char *want = e->config_digest && *e->config_digest ? e->config_digest : NULL;
    uint64_t nonce = a->snap.nonce, t0 = a->snap.started_ns;
    int64_t version = a->snap.version;
    tg_store_error_t serr = {.index = SIZE_MAX};
    int rc = tg_store_snapshot_commit(a->snap.snap, version, want, &serr);
    a->snap.snap = NULL; /* commit freed it, whatever the outcome */
    tg_store_info_t info;
    if (rc == 0 && tg_store_info(a->store, &info) != 0) /* committed all the same */
        info = (tg_store_info_t){.loaded = true, .version = version};
    if (rc != 0) {
        tg_generation_unref(g);
        snprintf(msg, sizeof(msg), "%s%s%s",
                 rc == -TG_ECONFLICT ? "the snapshot's digest differs from the one announced"
                 : rc == -TG_EAGAIN  ? "the store was full and has been grown; send it again"
                                     : tg_strerror(rc),
                 serr.message[0] ? ": " : "", serr.message);
        snapshot_refuse(a, out, rc == -TG_ECONFLICT ? NACK_DIGEST : NACK_STORE, NULL, NULL, msg);
        return;
    }
    uint32_t us = elapsed_us(t0);
    applied(a, &info, us);
    a->st.snapshots_applied++;
    TG_LOGN("sync", "applied snapshot of version %lld (%llu entities, %u chunks) in %u us",
            (long long)version, (unsigned long long)a->snap.received, a->snap.chunks, us);
    snapshot_close(a);
    publish(a, g, &info);
    send_ack(a, out, nonce, info.version, us, info.digest);
}

/* ---------------------------------------------------------------- welcome, heartbeat */

/* cluster.json with `endpoints` replaced; other keys kept. */
static void persist_endpoints(tg_sync_apply_t *a)
{
    if (!a->cluster_json) return;
    json_error_t jerr;
    json_t *doc = json_load_file(a->cluster_json, 0, &jerr);
    if (!doc) doc = json_object();
    json_t *list = json_array();
    for (size_t i = 0; i < a->st.nendpoints; i++)
        json_array_append_new(list, json_string(a->st.endpoints[i]));
    if (json_equal(list, json_object_get(doc, "endpoints"))) {
        json_decref(list);
        json_decref(doc);
        return;
    }
    json_object_set_new(doc, "endpoints", list);
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (tg_dp_join_write_file(a->cluster_json, text, strlen(text), 0644) == 0)
        TG_LOGN("sync", "control plane endpoints updated in %s", a->cluster_json);
    else
        TG_LOGW("sync", "cannot update %s: %s", a->cluster_json, strerror(errno));
    free(text);
    json_decref(doc);
}

static void on_welcome(tg_sync_apply_t *a, const Tollgate__Sync__V1__Welcome *w)
{
    uint32_t hb = w->has_heartbeat_interval_ms ? w->heartbeat_interval_ms : 0;
    if (hb == 0) hb = TG_SYNC_HEARTBEAT_MS_DEFAULT;
    if (hb < TG_SYNC_HEARTBEAT_MS_MIN) hb = TG_SYNC_HEARTBEAT_MS_MIN;
    if (hb > TG_SYNC_HEARTBEAT_MS_MAX) hb = TG_SYNC_HEARTBEAT_MS_MAX;
    a->st.welcomed = true;
    a->st.heartbeat_ms = hb;
    snprintf(a->st.cp_id, sizeof(a->st.cp_id), "%s",
             w->control_plane_id ? w->control_plane_id : "");
    size_t n = 0;
    for (size_t i = 0; i < w->n_endpoints && n < TG_SYNC_MAX_ENDPOINTS; i++)
        if (w->endpoints[i] && *w->endpoints[i] && strlen(w->endpoints[i]) < TG_SYNC_ENDPOINT_MAX)
            snprintf(a->st.endpoints[n++], TG_SYNC_ENDPOINT_MAX, "%s", w->endpoints[i]);
    if (n) {
        a->st.nendpoints = n;
        persist_endpoints(a);
    }
    TG_LOGN("sync",
            "welcomed by control plane node %s (tollgate %s): control plane %s, latest version "
            "%lld, oldest kept %lld, heartbeat every %u ms",
            w->cp_node_id ? w->cp_node_id : "?", w->tollgate_version ? w->tollgate_version : "?",
            a->st.cp_id, (long long)w->latest_version, (long long)w->oldest_version, hb);
}

static void on_heartbeat(tg_sync_apply_t *a, const Tollgate__Sync__V1__Heartbeat *h,
                         tg_sync_out_t *out)
{
    tg_store_info_t info;
    if (!h->config_digest || !*h->config_digest || tg_store_info(a->store, &info) != 0) return;
    if (!h->has_version || h->version != info.version || a->snap.snap) return;
    if (strcmp(h->config_digest, info.digest) == 0 || a->digest_nacked == info.version) return;
    /* Same version, different content: only a snapshot repairs that. A Nack with
     * NACK_DIGEST asks for one; sent once per version so a CP that cannot help is not
     * flooded every heartbeat. */
    a->digest_nacked = info.version;
    send_nack(a, out, 0, info.version, NACK_DIGEST, NULL, NULL,
              "at version %lld the digest is %s here but %s on the control plane",
              (long long)info.version, info.digest, h->config_digest);
}

static void on_error(const Tollgate__Sync__V1__Error *e)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&tollgate__sync__v1__error_code__descriptor, e->code);
    TG_LOGE("sync", "the control plane refused this data plane: %s: %s",
            v ? v->name : "ERROR_UNSPECIFIED", e->message ? e->message : "(no message)");
}

/* ---------------------------------------------------------------- entry points */

int tg_sync_apply_handle(tg_sync_apply_t *a, const tg_sync_env_t *in, tg_sync_out_t *out)
{
    if (a->snap.snap && in->body_case == BODY(DELTA))
        snapshot_refuse(a, out, NACK_INVALID, NULL, NULL, "interrupted by a delta");
    switch (in->body_case) {
    case BODY(WELCOME):
        on_welcome(a, in->welcome);
        break;
    case BODY(DELTA):
        on_delta(a, in->delta, out);
        break;
    case BODY(SNAPSHOT_BEGIN):
        on_snapshot_begin(a, in->snapshot_begin, out);
        break;
    case BODY(SNAPSHOT_CHUNK):
        on_snapshot_chunk(a, in->snapshot_chunk, out);
        break;
    case BODY(SNAPSHOT_END):
        on_snapshot_end(a, in->snapshot_end, out);
        break;
    case BODY(HEARTBEAT):
        on_heartbeat(a, in->heartbeat, out);
        break;
    case BODY(ERROR):
        on_error(in->error);
        return TG_SYNC_CLOSE;
    default:
        /* Newer control planes may send more; nothing here depends on them. */
        TG_LOGD("sync", "ignoring a %s message", tg_sync_body_name(in));
        break;
    }
    return TG_SYNC_CONTINUE;
}

int tg_sync_apply_hello(tg_sync_apply_t *a, tg_sync_frame_t *out)
{
    tg_store_info_t info;
    int rc = tg_store_info(a->store, &info);
    if (rc != 0) {
        TG_LOGE("sync", "cannot read the store for Hello: %s", tg_strerror(rc));
        return rc;
    }
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
    static char cap_delta[] = "delta", cap_snapshot[] = "snapshot";
    char *caps[] = {cap_delta, cap_snapshot};
    Tollgate__Sync__V1__Hello hello = TOLLGATE__SYNC__V1__HELLO__INIT;
    hello.has_protocol_version = hello.has_have_version = 1;
    hello.protocol_version = TG_SYNC_PROTOCOL_VERSION;
    hello.tollgate_version = (char *)TG_VERSION;
    hello.hostname = host;
    hello.n_capabilities = 2;
    hello.capabilities = caps;
    hello.have_version = info.loaded ? info.version : 0;
    hello.config_digest = info.loaded ? info.digest : (char *)"";
    hello.control_plane_id = info.cp_id;
    hello.node_id = a->node_id;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = BODY(HELLO);
    env.hello = &hello;
    a->st.applied_version = hello.have_version;
    snprintf(a->st.digest, sizeof(a->st.digest), "%s", hello.config_digest);
    return tg_sync_apply_pack(a, &env, out);
}

int tg_sync_apply_heartbeat(tg_sync_apply_t *a, tg_sync_frame_t *out)
{
    tg_store_info_t info;
    int rc = tg_store_info(a->store, &info);
    if (rc != 0) return rc;
    Tollgate__Sync__V1__Heartbeat hb = TOLLGATE__SYNC__V1__HEARTBEAT__INIT;
    hb.has_version = 1;
    hb.version = info.loaded ? info.version : 0;
    hb.config_digest = info.loaded ? info.digest : (char *)"";
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = BODY(HEARTBEAT);
    env.heartbeat = &hb;
    return tg_sync_apply_pack(a, &env, out);
}

tg_sync_apply_t *tg_sync_apply_new(const tg_sync_apply_opts_t *opts)
{
    tg_sync_apply_t *a = tg_calloc(1, sizeof(*a));
    a->store = opts->store;
    a->node_id = tg_strdup(opts->node_id ? opts->node_id : "");
    a->cluster_json = opts->cluster_json ? tg_strdup(opts->cluster_json) : NULL;
    a->headroom = opts->headroom;
    a->publish = opts->publish;
    a->publish_ud = opts->publish_ud;
    a->st.heartbeat_ms = TG_SYNC_HEARTBEAT_MS_DEFAULT;
    a->digest_nacked = -1;
    tg_store_info_t info;
    if (tg_store_info(a->store, &info) == 0 && info.loaded) {
        a->st.applied_version = info.version;
        snprintf(a->st.digest, sizeof(a->st.digest), "%s", info.digest);
    }
    return a;
}

void tg_sync_apply_reset(tg_sync_apply_t *a)
{
    if (a->snap.snap)
        TG_LOGW("sync", "connection lost during snapshot %llu; keeping the old configuration",
                (unsigned long long)a->snap.nonce);
    snapshot_close(a);
    a->st.welcomed = false;
    a->st.heartbeat_ms = TG_SYNC_HEARTBEAT_MS_DEFAULT;
    a->st.cp_id[0] = '\0';
    a->digest_nacked = -1;
}

const tg_sync_apply_state_t *tg_sync_apply_state(const tg_sync_apply_t *a)
{
    return &a->st;
}

void tg_sync_apply_free(tg_sync_apply_t *a)
{
    if (!a) return;
    snapshot_close(a);
    free(a->node_id);
    free(a->cluster_json);
    free(a);
}
