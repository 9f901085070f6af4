/*
 * test_sync_apply.c — the data plane's sync protocol logic (sync_apply.h) over a real store:
 * deltas applied and acknowledged with the digest a control plane would compute, version gaps,
 * refused entities leaving the store as it was, chunked snapshots, chunks out of order,
 * digest mismatches, heartbeats, Hello and Welcome. Every message goes through the wire
 * format (packed and unpacked) as it would on a connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config_digest.h"
#include "crypto.h"
#include "entity_codec.h"
#include "error.h"
#include "schema.h"
#include "store.h"
#include "sync_apply.h"

#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef Tollgate__Sync__V1__Change pb_change_t;
#define BODY(x) TOLLGATE__SYNC__V1__ENVELOPE__BODY_##x
#define NACK(x) TOLLGATE__SYNC__V1__NACK_CODE__NACK_##x

#define SVC_ID "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0001"
#define SVC2_ID "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0002"
#define ROUTE_ID "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0011"
#define ROUTE2_ID "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0012"
#define CONSUMER_ID "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0021"
#define CRED_ID "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0031"
#define PLUGIN_ID "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0041"

/* ------------------------------------------------------------------ fixture */

struct fx {
    char root[64], dir[96], cluster_json[128];
    tg_store_t *store;
    tg_sync_apply_t *apply;
    tg_generation_t *published; /* the last generation handed to publish */
    int npublished;
};

static void on_publish(void *ud, tg_generation_t *g)
{
    struct fx *f = ud;
    tg_generation_unref(f->published);
    f->published = g;
    f->npublished++;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/tg-sync-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->dir, sizeof f->dir, "%s/dp", f->root);
    snprintf(f->cluster_json, sizeof f->cluster_json, "%s/cluster.json", f->root);
    assert_int_equal(tg_store_open(f->dir, 0, &f->store), 0);
    tg_sync_apply_opts_t o = {
        .store = f->store,
        .node_id = "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0099",
        .cluster_json = f->cluster_json,
        .headroom = 16,
        .publish = on_publish,
        .publish_ud = f,
    };
    f->apply = tg_sync_apply_new(&o);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    tg_sync_apply_free(f->apply);
    tg_generation_unref(f->published);
    tg_store_close(f->store);
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------ entities */

/* A complete entity as the control plane stores it (schema defaults filled in). */
static json_t *complete(const char *type, const char *input_json, const char *id)
{
    json_t *input = json_loads(input_json, 0, NULL);
    assert_non_null(input);
    json_t *errs = NULL;
    json_t *e = tg_schema_validate(tg_schema_by_name(type), TG_OP_INSERT, input, NULL, &errs);
    if (!e) fail_msg("%s invalid: %s", type, json_dumps(errs, 0));
    json_decref(input);
    json_object_set_new(e, "id", json_string(id));
    json_object_set_new(e, "created_at", json_integer(1700000000));
    if (json_object_get(e, "updated_at"))
        json_object_set_new(e, "updated_at", json_integer(1700000000));
    return e;
}

static json_t *service(const char *id, const char *name)
{
    char in[128];
    snprintf(in, sizeof in, "{\"name\":\"%s\",\"host\":\"upstream.test\"}", name);
    return complete("services", in, id);
}

static json_t *route(const char *id, const char *service_id, const char *path)
{
    char in[256];
    snprintf(in, sizeof in, "{\"paths\":[\"%s\"],\"service\":{\"id\":\"%s\"}}", path, service_id);
    return complete("routes", in, id);
}

static json_t *consumer(const char *id, const char *username)
{
    char in[128];
    snprintf(in, sizeof in, "{\"username\":\"%s\"}", username);
    return complete("consumers", in, id);
}

static json_t *credential(const char *id, const char *consumer_id, const char *key)
{
    uint8_t d[TG_SHA256_LEN];
    char hex[2 * TG_SHA256_LEN + 1];
    tg_sha256(key, strlen(key), d);
    tg_hex_encode(d, sizeof d, hex);
    return json_pack("{s:s,s:i,s:{s:s},s:n,s:s}", "id", id, "created_at", 1700000000, "consumer",
                     "id", consumer_id, "tags", "key_digest", hex);
}

static json_t *plugin(const char *id, const char *route_id)
{
    char in[256];
    snprintf(in, sizeof in, "{\"name\":\"key-auth\",\"route\":{\"id\":\"%s\"}}", route_id);
    return complete("plugins", in, id);
}

/* The digest of a whole configuration as both planes define it (config_digest.h). */
typedef struct {
    const char *type;
    json_t *e;
} typed_t;

static void digest_of(const typed_t *ents, size_t n, char hex[TG_CONFIG_DIGEST_HEX_LEN + 1])
{
    tg_config_digest_t d = {{0}};
    for (size_t i = 0; i < n; i++) {
        uint8_t h[TG_CONFIG_DIGEST_LEN];
        const char *id = json_string_value(json_object_get(ents[i].e, "id"));
        assert_int_equal(tg_config_digest_entity(ents[i].type, id, ents[i].e, h), 0);
        tg_config_digest_add(&d, h);
    }
    tg_config_digest_hex(&d, hex);
}

/* ------------------------------------------------------------------ messages */

/* A change as the control plane encodes it (owned by the caller, freed with the envelope). */
static pb_change_t *upsert(const char *type, const json_t *e)
{
    pb_change_t *c = malloc(sizeof *c);
    tollgate__sync__v1__change__init(c);
    char err[256] = "";
    c->type = strdup(type);
    c->id = strdup(json_string_value(json_object_get(e, "id")));
    c->has_op = 1;
    c->op = TOLLGATE__SYNC__V1__OP__OP_UPSERT;
    c->entity = tg_proto_entity_from_json(type, e, err, sizeof err);
    if (!c->entity) fail_msg("encode %s: %s", type, err);
    return c;
}

static pb_change_t *delete (const char *type, const char *id)
{
    pb_change_t *c = malloc(sizeof *c);
    tollgate__sync__v1__change__init(c);
    c->type = strdup(type);
    c->id = strdup(id);
    c->has_op = 1;
    c->op = TOLLGATE__SYNC__V1__OP__OP_DELETE;
    return c;
}

static pb_change_t **list(size_t n, ...)
{
    pb_change_t **l = calloc(n + 1, sizeof *l);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        l[i] = va_arg(ap, pb_change_t *);
    va_end(ap);
    return l;
}

static tg_sync_env_t *env_new(void)
{
    tg_sync_env_t *env = malloc(sizeof *env);
    tollgate__sync__v1__envelope__init(env);
    return env;
}

static tg_sync_env_t *delta(uint64_t nonce, int64_t from, int64_t to, pb_change_t **changes,
                            size_t n)
{
    Tollgate__Sync__V1__Delta *d = malloc(sizeof *d);
    tollgate__sync__v1__delta__init(d);
    d->has_nonce = d->has_from_version = d->has_to_version = 1;
    d->nonce = nonce;
    d->from_version = from;
    d->to_version = to;
    d->n_changes = n;
    d->changes = changes;
    tg_sync_env_t *env = env_new();
    env->body_case = BODY(DELTA);
    env->delta = d;
    return env;
}

static tg_sync_env_t *snap_begin(uint64_t nonce, int64_t version, uint64_t count)
{
    Tollgate__Sync__V1__SnapshotBegin *b = malloc(sizeof *b);
    tollgate__sync__v1__snapshot_begin__init(b);
    b->has_nonce = b->has_version = b->has_entity_count = 1;
    b->nonce = nonce;
    b->version = version;
    b->entity_count = count;
    tg_sync_env_t *env = env_new();
    env->body_case = BODY(SNAPSHOT_BEGIN);
    env->snapshot_begin = b;
    return env;
}

static tg_sync_env_t *snap_chunk(uint64_t nonce, uint32_t seq, pb_change_t **ents, size_t n)
{
    Tollgate__Sync__V1__SnapshotChunk *c = malloc(sizeof *c);
    tollgate__sync__v1__snapshot_chunk__init(c);
    c->has_nonce = c->has_seq = 1;
    c->nonce = nonce;
    c->seq = seq;
    c->n_entities = n;
    c->entities = ents;
    tg_sync_env_t *env = env_new();
    env->body_case = BODY(SNAPSHOT_CHUNK);
    env->snapshot_chunk = c;
    return env;
}

static tg_sync_env_t *snap_end(uint64_t nonce, int64_t version, uint32_t chunks, const char *digest)
{
    Tollgate__Sync__V1__SnapshotEnd *e = malloc(sizeof *e);
    tollgate__sync__v1__snapshot_end__init(e);
    e->has_nonce = e->has_version = e->has_chunks = 1;
    e->nonce = nonce;
    e->version = version;
    e->chunks = chunks;
    e->config_digest = strdup(digest);
    tg_sync_env_t *env = env_new();
    env->body_case = BODY(SNAPSHOT_END);
    env->snapshot_end = e;
    return env;
}

static tg_sync_env_t *heartbeat(int64_t version, const char *digest)
{
    Tollgate__Sync__V1__Heartbeat *h = malloc(sizeof *h);
    tollgate__sync__v1__heartbeat__init(h);
    h->has_version = 1;
    h->version = version;
    h->config_digest = strdup(digest);
    tg_sync_env_t *env = env_new();
    env->body_case = BODY(HEARTBEAT);
    env->heartbeat = h;
    return env;
}

/*
 * Sends `env` (consumed) through the wire format to the object under test. Returns the
 * handler's result; the replies, unpacked, go to `replies` (NULL: there must be none).
 */
static int deliver(struct fx *f, tg_sync_env_t *env, tg_sync_env_t **replies, size_t cap,
                   size_t *nreplies)
{
    size_t n = protobuf_c_message_get_packed_size(&env->base);
    uint8_t *wire = malloc(n + 1);
    protobuf_c_message_pack(&env->base, wire);
    tollgate__sync__v1__envelope__free_unpacked(env, NULL);
    tg_sync_env_t *in = tg_sync_unpack(wire, n);
    free(wire);
    assert_non_null(in);
    tg_sync_out_t out = {.n = 0};
    int rc = tg_sync_apply_handle(f->apply, in, &out);
    tg_sync_env_free(in);
    if (nreplies) *nreplies = out.n;
    if (!replies) assert_int_equal(out.n, 0);
    for (size_t i = 0; i < out.n; i++) {
        assert_true(i < cap);
        assert_ptr_equal(out.frames[i].frame, out.frames[i].buf + 16); /* headroom kept */
        replies[i] = tg_sync_unpack(out.frames[i].frame, out.frames[i].len);
        assert_non_null(replies[i]);
    }
    tg_sync_out_free(&out);
    return rc;
}

/* Delivers `env` and returns its one reply, which must be of body `want`. */
static tg_sync_env_t *one_reply(struct fx *f, tg_sync_env_t *env, int want)
{
    tg_sync_env_t *r[TG_SYNC_OUT_MAX];
    size_t n = 0;
    assert_int_equal(deliver(f, env, r, TG_SYNC_OUT_MAX, &n), TG_SYNC_CONTINUE);
    assert_int_equal(n, 1);
    assert_int_equal(r[0]->body_case, want);
    return r[0];
}

static tg_store_info_t info(struct fx *f)
{
    tg_store_reader_t r;
    tg_store_info_t i;
    assert_int_equal(tg_store_reader_init(f->store, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_get_info(&r, &i), 0);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return i;
}

static bool stored(struct fx *f, const char *type, const char *id)
{
    tg_store_reader_t r;
    tg_str_t v;
    assert_int_equal(tg_store_reader_init(f->store, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    int rc = tg_store_get(&r, type, tg_str_from(id), &v);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return rc == 0;
}

/* Version 1: a service, a route, a consumer and its credential. Returns the digest. */
static void load_v1(struct fx *f, char digest[TG_CONFIG_DIGEST_HEX_LEN + 1])
{
    typed_t e[] = {{"services", service(SVC_ID, "svc")},
                   {"routes", route(ROUTE_ID, SVC_ID, "/one")},
                   {"consumers", consumer(CONSUMER_ID, "alice")},
                   {"keyauth_credentials", credential(CRED_ID, CONSUMER_ID, "secret-1")}};
    pb_change_t **l = list(4, upsert(e[0].type, e[0].e), upsert(e[1].type, e[1].e),
                           upsert(e[2].type, e[2].e), upsert(e[3].type, e[3].e));
    tg_sync_env_t *r = one_reply(f, delta(11, 0, 1, l, 4), BODY(ACK));
    digest_of(e, 4, digest);
    assert_int_equal(r->ack->nonce, 11);
    assert_int_equal(r->ack->applied_version, 1);
    assert_string_equal(r->ack->config_digest, digest);
    tg_sync_env_free(r);
    for (size_t i = 0; i < 4; i++)
        json_decref(e[i].e);
}

/* ------------------------------------------------------------------ deltas */

static void delta_applies_and_acks_with_the_digest(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    tg_store_info_t i = info(f);
    assert_int_equal(i.version, 1);
    assert_string_equal(i.digest, digest);
    assert_true(stored(f, "keyauth_credentials", CRED_ID));
    /* the generation was compiled and published with the store's version and digest */
    assert_int_equal(f->npublished, 1);
    assert_int_equal(f->published->version, 1);
    assert_string_equal(f->published->hash, digest);
    assert_int_equal(json_array_size(f->published->routes), 1);
    const tg_sync_apply_state_t *st = tg_sync_apply_state(f->apply);
    assert_int_equal(st->applied_version, 1);
    assert_int_equal(st->deltas_applied, 1);
    assert_true(st->last_apply_unix_ms > 0);

    /* a delta touching only consumers and credentials needs no new generation */
    pb_change_t **l =
        list(2, delete ("keyauth_credentials", CRED_ID), delete ("consumers", CONSUMER_ID));
    tg_sync_env_t *r = one_reply(f, delta(12, 1, 3, l, 2), BODY(ACK));
    assert_int_equal(r->ack->applied_version, 3);
    assert_string_equal(r->ack->config_digest, info(f).digest);
    tg_sync_env_free(r);
    assert_int_equal(f->npublished, 1);
    assert_false(stored(f, "consumers", CONSUMER_ID));

    /* a plugin on the route: published again, with the plugin in the chain */
    json_t *p = plugin(PLUGIN_ID, ROUTE_ID);
    r = one_reply(f, delta(13, 3, 4, list(1, upsert("plugins", p)), 1), BODY(ACK));
    tg_sync_env_free(r);
    json_decref(p);
    assert_int_equal(f->npublished, 2);
    assert_int_equal(f->published->version, 4);
    assert_int_equal(json_array_size(f->published->plugins), 1);
    assert_non_null(f->published->chain);
}

static void the_first_config_is_published_whatever_it_holds(void **state)
{
    struct fx *f = *state;
    /* no route at all: still a generation, so the data plane becomes ready */
    json_t *c = consumer(CONSUMER_ID, "alice");
    tg_sync_env_t *r = one_reply(f, delta(15, 0, 1, list(1, upsert("consumers", c)), 1), BODY(ACK));
    json_decref(c);
    assert_int_equal(f->npublished, 1);
    assert_int_equal(f->published->version, 1);
    assert_int_equal(json_array_size(f->published->routes), 0);
    assert_string_equal(tg_sync_apply_state(f->apply)->digest, r->ack->config_digest);
    tg_sync_env_free(r);
}

static void a_gap_is_nacked_version_gap(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    json_t *s = service(SVC2_ID, "other");
    tg_sync_env_t *r = one_reply(f, delta(21, 5, 6, list(1, upsert("services", s)), 1), BODY(NACK));
    assert_int_equal(r->nack->nonce, 21);
    assert_int_equal(r->nack->code, NACK(VERSION_GAP));
    assert_int_equal(r->nack->kept_version, 1);
    tg_sync_env_free(r);
    json_decref(s);
    assert_false(stored(f, "services", SVC2_ID));
    assert_int_equal(info(f).version, 1);
    assert_int_equal(tg_sync_apply_state(f->apply)->nacks_sent, 1);
}

/* Sends a delta 1 -> 2 made of a valid service and `bad`; it must be refused as a whole. */
static void refused_whole(struct fx *f, const char *digest, pb_change_t *bad, const char *type,
                          const char *id, const char *msg_part)
{
    json_t *s = service(SVC2_ID, "other");
    tg_sync_env_t *r =
        one_reply(f, delta(31, 1, 2, list(2, upsert("services", s), bad), 2), BODY(NACK));
    json_decref(s);
    assert_int_equal(r->nack->code, NACK(INVALID));
    assert_int_equal(r->nack->kept_version, 1);
    if (type) assert_string_equal(r->nack->entity_type, type);
    if (id) assert_string_equal(r->nack->entity_id, id);
    if (!strstr(r->nack->message, msg_part))
        fail_msg("'%s' does not mention '%s'", r->nack->message, msg_part);
    tg_sync_env_free(r);
    tg_store_info_t i = info(f);
    assert_int_equal(i.version, 1);
    assert_string_equal(i.digest, digest);
    assert_false(stored(f, "services", SVC2_ID));
    assert_int_equal(f->npublished, 1);
}

static void an_invalid_entity_is_nacked_with_its_id_and_nothing_changes(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);

    /* the codec refuses it: a route change carrying a consumer */
    json_t *c = consumer(ROUTE2_ID, "bob");
    pb_change_t *bad = upsert("consumers", c);
    free(bad->type);
    bad->type = strdup("routes");
    refused_whole(f, digest, bad, "routes", ROUTE2_ID, "");
    json_decref(c);

    /* the store refuses it: the change's id is not the entity's */
    json_t *cred = credential(CRED_ID, CONSUMER_ID, "secret-2");
    bad = upsert("keyauth_credentials", cred);
    free(bad->id);
    bad->id = strdup("6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0039");
    refused_whole(f, digest, bad, "keyauth_credentials", "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0039",
                  "");
    json_decref(cred);

    /* the router refuses it: a path regex that does not compile */
    json_t *rt = route(ROUTE2_ID, SVC_ID, "/fine");
    json_object_set_new(rt, "paths", json_pack("[s]", "~/(unclosed")); /* a CP whose PCRE differs */
    refused_whole(f, digest, upsert("routes", rt), NULL, NULL, "regex");
    json_decref(rt);

    /* an upsert without an entity */
    bad = delete ("routes", ROUTE2_ID);
    bad->op = TOLLGATE__SYNC__V1__OP__OP_UPSERT;
    refused_whole(f, digest, bad, "routes", ROUTE2_ID, "without an entity");
}

static void a_delta_digest_mismatch_is_nacked_after_applying(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    json_t *s = service(SVC2_ID, "other");
    tg_sync_env_t *env = delta(41, 1, 2, list(1, upsert("services", s)), 1);
    env->delta->config_digest = strdup(digest); /* the old digest: cannot be right */
    tg_sync_env_t *r = one_reply(f, env, BODY(NACK));
    json_decref(s);
    assert_int_equal(r->nack->code, NACK(DIGEST));
    assert_int_equal(r->nack->kept_version, 2);
    tg_sync_env_free(r);
    assert_true(stored(f, "services", SVC2_ID));
}

/* ------------------------------------------------------------------ snapshots */

/* Version 7 in three chunks: services, routes, consumers + credentials. */
typedef struct {
    typed_t e[5];
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
} v7_t;

static void v7_make(v7_t *v)
{
    v->e[0] = (typed_t){"services", service(SVC2_ID, "svc2")};
    v->e[1] = (typed_t){"routes", route(ROUTE2_ID, SVC2_ID, "/two")};
    v->e[2] = (typed_t){"routes", route(ROUTE_ID, SVC2_ID, "/one-moved")};
    v->e[3] = (typed_t){"consumers", consumer(CONSUMER_ID, "alice")};
    v->e[4] = (typed_t){"keyauth_credentials", credential(CRED_ID, CONSUMER_ID, "secret-7")};
    digest_of(v->e, 5, v->digest);
}

static void v7_free(v7_t *v)
{
    for (size_t i = 0; i < 5; i++)
        json_decref(v->e[i].e);
}

static tg_sync_env_t *v7_chunk(const v7_t *v, uint64_t nonce, uint32_t seq)
{
    switch (seq) {
    case 0:
        return snap_chunk(nonce, 0, list(1, upsert("services", v->e[0].e)), 1);
    case 1:
        return snap_chunk(nonce, 1,
                          list(2, upsert("routes", v->e[1].e), upsert("routes", v->e[2].e)), 2);
    default:
        return snap_chunk(
            nonce, seq,
            list(2, upsert("consumers", v->e[3].e), upsert("keyauth_credentials", v->e[4].e)), 2);
    }
}

static void a_snapshot_in_three_chunks_replaces_everything(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    v7_t v;
    v7_make(&v);
    assert_int_equal(deliver(f, snap_begin(51, 7, 5), NULL, 0, NULL), TG_SYNC_CONTINUE);
    for (uint32_t seq = 0; seq < 3; seq++)
        assert_int_equal(deliver(f, v7_chunk(&v, 51, seq), NULL, 0, NULL), TG_SYNC_CONTINUE);
    assert_int_equal(info(f).version, 1); /* nothing visible before the end */
    tg_sync_env_t *r = one_reply(f, snap_end(51, 7, 3, v.digest), BODY(ACK));
    assert_int_equal(r->ack->nonce, 51);
    assert_int_equal(r->ack->applied_version, 7);
    assert_string_equal(r->ack->config_digest, v.digest);
    tg_sync_env_free(r);

    tg_store_info_t i = info(f);
    assert_int_equal(i.version, 7);
    assert_string_equal(i.digest, v.digest);
    assert_false(stored(f, "services", SVC_ID)); /* not in the snapshot: gone */
    assert_true(stored(f, "routes", ROUTE2_ID));
    assert_int_equal(f->npublished, 2);
    assert_int_equal(f->published->version, 7);
    assert_int_equal(json_array_size(f->published->routes), 2);
    assert_int_equal(tg_sync_apply_state(f->apply)->snapshots_applied, 1);
    v7_free(&v);

    /* deltas continue from the snapshot's version */
    r = one_reply(f, delta(52, 7, 8, list(1, delete ("routes", ROUTE2_ID)), 1), BODY(ACK));
    assert_int_equal(r->ack->applied_version, 8);
    tg_sync_env_free(r);
}

static void expect_old_config(struct fx *f, const char *digest)
{
    tg_store_info_t i = info(f);
    assert_int_equal(i.version, 1);
    assert_string_equal(i.digest, digest);
    assert_true(stored(f, "services", SVC_ID));
    assert_false(stored(f, "services", SVC2_ID));
    assert_int_equal(f->npublished, 1);
}

static void a_chunk_out_of_order_is_nacked_and_the_old_config_kept(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    v7_t v;
    v7_make(&v);
    deliver(f, snap_begin(61, 7, 5), NULL, 0, NULL);
    deliver(f, v7_chunk(&v, 61, 0), NULL, 0, NULL);
    tg_sync_env_t *r = one_reply(f, v7_chunk(&v, 61, 2), BODY(NACK));
    assert_int_equal(r->nack->nonce, 61);
    assert_int_equal(r->nack->code, NACK(INVALID));
    assert_int_equal(r->nack->kept_version, 1);
    assert_non_null(strstr(r->nack->message, "chunk 2"));
    tg_sync_env_free(r);
    /* what follows of that snapshot is ignored */
    deliver(f, v7_chunk(&v, 61, 1), NULL, 0, NULL);
    deliver(f, snap_end(61, 7, 3, v.digest), NULL, 0, NULL);
    expect_old_config(f, digest);

    /* a chunk of another snapshot inside this one */
    deliver(f, snap_begin(62, 7, 5), NULL, 0, NULL);
    r = one_reply(f, v7_chunk(&v, 99, 0), BODY(NACK));
    assert_int_equal(r->nack->nonce, 62);
    tg_sync_env_free(r);
    expect_old_config(f, digest);

    /* an end that does not add up */
    deliver(f, snap_begin(63, 7, 5), NULL, 0, NULL);
    deliver(f, v7_chunk(&v, 63, 0), NULL, 0, NULL);
    r = one_reply(f, snap_end(63, 7, 3, v.digest), BODY(NACK));
    assert_non_null(strstr(r->nack->message, "chunks"));
    tg_sync_env_free(r);
    expect_old_config(f, digest);

    /* a delta interrupting a snapshot: the snapshot is refused, the delta applies */
    deliver(f, snap_begin(64, 7, 5), NULL, 0, NULL);
    deliver(f, v7_chunk(&v, 64, 0), NULL, 0, NULL);
    tg_sync_env_t *two[TG_SYNC_OUT_MAX];
    size_t n = 0;
    deliver(
        f,
        delta(65, 1, 2, list(1, delete ("consumers", "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0077")), 1),
        two, TG_SYNC_OUT_MAX, &n);
    assert_int_equal(n, 2);
    assert_int_equal(two[0]->body_case, BODY(NACK));
    assert_int_equal(two[0]->nack->nonce, 64);
    assert_int_equal(two[1]->body_case, BODY(ACK));
    assert_int_equal(two[1]->ack->nonce, 65);
    tg_sync_env_free(two[0]);
    tg_sync_env_free(two[1]);
    v7_free(&v);
}

static void a_snapshot_digest_mismatch_is_nacked(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    v7_t v;
    v7_make(&v);
    deliver(f, snap_begin(71, 7, 5), NULL, 0, NULL);
    for (uint32_t seq = 0; seq < 3; seq++)
        deliver(f, v7_chunk(&v, 71, seq), NULL, 0, NULL);
    tg_sync_env_t *r = one_reply(f, snap_end(71, 7, 3, digest), BODY(NACK));
    assert_int_equal(r->nack->nonce, 71);
    assert_int_equal(r->nack->code, NACK(DIGEST));
    assert_int_equal(r->nack->kept_version, 1);
    tg_sync_env_free(r);
    expect_old_config(f, digest);

    /* the connection ending mid-snapshot leaves the old config too */
    deliver(f, snap_begin(72, 7, 5), NULL, 0, NULL);
    deliver(f, v7_chunk(&v, 72, 0), NULL, 0, NULL);
    tg_sync_apply_reset(f->apply);
    expect_old_config(f, digest);
    v7_free(&v);
}

/* ------------------------------------------------------------------ session messages */

static void hello_says_what_the_store_holds(void **state)
{
    struct fx *f = *state;
    tg_sync_frame_t fr;
    assert_int_equal(tg_sync_apply_hello(f->apply, &fr), 0);
    tg_sync_env_t *h = tg_sync_unpack(fr.frame, fr.len);
    free(fr.buf);
    assert_int_equal(h->body_case, BODY(HELLO));
    assert_int_equal(h->hello->protocol_version, TG_SYNC_PROTOCOL_VERSION);
    assert_string_equal(h->hello->tollgate_version, TG_VERSION);
    assert_int_equal(h->hello->have_version, 0);
    assert_string_equal(h->hello->config_digest, "");
    assert_string_equal(h->hello->control_plane_id, "");
    assert_string_equal(h->hello->node_id, "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0099");
    assert_int_equal(h->hello->n_capabilities, 2);
    assert_string_equal(h->hello->capabilities[0], "delta");
    assert_string_equal(h->hello->capabilities[1], "snapshot");
    tg_sync_env_free(h);

    /* after a Welcome and an apply, the store remembers the control plane */
    tg_sync_env_t *w = env_new();
    w->body_case = BODY(WELCOME);
    w->welcome = malloc(sizeof *w->welcome);
    tollgate__sync__v1__welcome__init(w->welcome);
    w->welcome->control_plane_id = strdup("6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0055");
    deliver(f, w, NULL, 0, NULL);
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    assert_int_equal(tg_sync_apply_hello(f->apply, &fr), 0);
    h = tg_sync_unpack(fr.frame, fr.len);
    free(fr.buf);
    assert_int_equal(h->hello->have_version, 1);
    assert_string_equal(h->hello->config_digest, digest);
    assert_string_equal(h->hello->control_plane_id, "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0055");
    tg_sync_env_free(h);

    assert_int_equal(tg_sync_apply_heartbeat(f->apply, &fr), 0);
    h = tg_sync_unpack(fr.frame, fr.len);
    free(fr.buf);
    assert_int_equal(h->body_case, BODY(HEARTBEAT));
    assert_int_equal(h->heartbeat->version, 1);
    assert_string_equal(h->heartbeat->config_digest, digest);
    tg_sync_env_free(h);
}

static void welcome_sets_the_session_and_persists_endpoints(void **state)
{
    struct fx *f = *state;
    FILE *fp = fopen(f->cluster_json, "w");
    fputs("{\"node_id\":\"n\",\"endpoints\":[\"old:8005\"],\"server_name\":\"cp\"}", fp);
    fclose(fp);
    tg_sync_env_t *w = env_new();
    w->body_case = BODY(WELCOME);
    w->welcome = malloc(sizeof *w->welcome);
    tollgate__sync__v1__welcome__init(w->welcome);
    w->welcome->has_heartbeat_interval_ms = 1;
    w->welcome->heartbeat_interval_ms = 10; /* below the floor */
    w->welcome->n_endpoints = 2;
    w->welcome->endpoints = calloc(2, sizeof(char *));
    w->welcome->endpoints[0] = strdup("cp1:8005");
    w->welcome->endpoints[1] = strdup("cp2:8005");
    deliver(f, w, NULL, 0, NULL);
    const tg_sync_apply_state_t *st = tg_sync_apply_state(f->apply);
    assert_true(st->welcomed);
    assert_int_equal(st->heartbeat_ms, TG_SYNC_HEARTBEAT_MS_MIN);
    assert_int_equal(st->nendpoints, 2);
    assert_string_equal(st->endpoints[1], "cp2:8005");
    json_t *doc = json_load_file(f->cluster_json, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "server_name")), "cp");
    assert_int_equal(json_array_size(json_object_get(doc, "endpoints")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "endpoints"), 0)),
                        "cp1:8005");
    json_decref(doc);
    tg_sync_apply_reset(f->apply);
    assert_false(st->welcomed);
    assert_int_equal(st->heartbeat_ms, TG_SYNC_HEARTBEAT_MS_DEFAULT);
}

static void heartbeat_digest_mismatch_asks_for_a_resync_once(void **state)
{
    struct fx *f = *state;
    char digest[TG_CONFIG_DIGEST_HEX_LEN + 1];
    load_v1(f, digest);
    deliver(f, heartbeat(1, digest), NULL, 0, NULL); /* same: nothing */
    deliver(f, heartbeat(5, "00ff"), NULL, 0, NULL); /* other version: nothing */
    tg_sync_env_t *r = one_reply(f, heartbeat(1, "00ff"), BODY(NACK));
    assert_int_equal(r->nack->nonce, 0);
    assert_int_equal(r->nack->code, NACK(DIGEST));
    assert_int_equal(r->nack->kept_version, 1);
    tg_sync_env_free(r);
    deliver(f, heartbeat(1, "00ff"), NULL, 0, NULL); /* once per version */
}

static void an_error_closes(void **state)
{
    struct fx *f = *state;
    tg_sync_env_t *e = env_new();
    e->body_case = BODY(ERROR);
    e->error = malloc(sizeof *e->error);
    tollgate__sync__v1__error__init(e->error);
    e->error->has_code = 1;
    e->error->code = TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_REVOKED;
    e->error->message = strdup("revoked");
    assert_int_equal(deliver(f, e, NULL, 0, NULL), TG_SYNC_CLOSE);
}

/* ------------------------------------------------------------------ the bulk path */

static int collect_each(void *ud, tg_str_t id, tg_str_t json)
{
    json_t *list = ud;
    json_array_append_new(list, json_pack("[s%,s%]", id.p, id.len, json.p, json.len));
    return 0;
}

/* Everything a store holds, as [type, [[id, canonical JSON]...], lookups...]. */
static json_t *store_contents(tg_store_t *s)
{
    static const char *const types[] = {"services", "routes", "consumers", "plugins",
                                        "keyauth_credentials"};
    tg_store_reader_t r;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    json_t *out = json_array();
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        json_t *l = json_array();
        assert_int_equal(tg_store_each(&r, types[i], collect_each, l), 0);
        json_array_append_new(out, l);
    }
    static const char *const names[] = {"alice", "bob", "ünïcode", "nobody"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tg_str_t v;
        int rc = tg_store_consumer_by_username(&r, tg_str_from(names[i]), &v);
        json_array_append_new(out, rc == 0 ? json_stringn(v.p, v.len) : json_integer(rc));
        rc = tg_store_consumer_by_custom_id(&r, tg_str_from(names[i]), &v);
        json_array_append_new(out, rc == 0 ? json_stringn(v.p, v.len) : json_integer(rc));
    }
    static const char *const keys[] = {"k1", "k2", "k3", "k4"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint8_t d[TG_SHA256_LEN];
        tg_str_t v;
        tg_sha256(keys[i], strlen(keys[i]), d);
        int rc = tg_store_credential_by_digest(&r, d, &v);
        json_array_append_new(out, rc == 0 ? json_stringn(v.p, v.len) : json_integer(rc));
    }
    tg_store_info_t info;
    assert_int_equal(tg_store_get_info(&r, &info), 0);
    json_array_append_new(out, json_string(info.digest));
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return out;
}

/*
 * A snapshot's plain consumers and credentials take the bulk path (store_bulk.h), the others
 * the general one; the store must end exactly as tg_store_replace_all leaves it with the same
 * entities as JSON: same entities, same index lookups (duplicates resolved the same way),
 * same digest.
 */
static void the_bulk_path_stores_what_the_general_path_would(void **state)
{
    struct fx *f = *state;
    typed_t e[10];
    size_t n = 0;
    e[n++] = (typed_t){"consumers", consumer(CONSUMER_ID, "alice")};
    e[n++] = (typed_t){"consumers", complete("consumers",
                                             "{\"username\":\"bob\",\"custom_id\":\"c\\\"1\\n\","
                                             "\"tags\":[\"x\",\"y-z\"]}",
                                             "6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0022")};
    e[n++] = (typed_t){"consumers",
                       consumer("6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0023", "ünïcode")}; /* general */
    e[n++] = (typed_t){"consumers", consumer("not-a-uuid", "nobody")}; /* JSON, not a record */
    /* the same username again: the later put owns it */
    e[n++] = (typed_t){"consumers", consumer("6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0024", "alice")};
    e[n++] = (typed_t){"keyauth_credentials", credential(CRED_ID, CONSUMER_ID, "k1")};
    json_t *c2 = credential("6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0032", CONSUMER_ID, "k2");
    json_object_set_new(c2, "expires_at", json_integer(1800000000));
    json_object_set_new(c2, "tags", json_pack("[s,s]", "t1", ""));
    e[n++] = (typed_t){"keyauth_credentials", c2};
    e[n++] = (typed_t){"keyauth_credentials",
                       credential("6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0033", "not-a-uuid", "k3")};
    /* the same key again under another id: it displaces the first */
    e[n++] = (typed_t){"keyauth_credentials",
                       credential("6f1d2a54-1a53-4b6e-9d0a-7d3c7a0f0034", CONSUMER_ID, "k1")};
    e[n++] = (typed_t){"keyauth_credentials", credential("kc-plain", CONSUMER_ID, "k4")};

    /* the general path, into a second store */
    char dir2[128];
    snprintf(dir2, sizeof dir2, "%s/general", f->root);
    tg_store_t *general;
    assert_int_equal(tg_store_open(dir2, 0, &general), 0);
    tg_store_change_t ch[10];
    for (size_t i = 0; i < n; i++)
        ch[i] = (tg_store_change_t){e[i].type, NULL, TG_STORE_UPSERT, e[i].e};
    tg_store_error_t serr = {.index = SIZE_MAX};
    if (tg_store_replace_all(general, 9, ch, n, &serr) != 0) fail_msg("%s", serr.message);
    json_t *want = store_contents(general);
    tg_store_close(general);
    const char *digest = json_string_value(json_array_get(want, json_array_size(want) - 1));

    pb_change_t **l = calloc(n + 1, sizeof *l);
    for (size_t i = 0; i < n; i++)
        l[i] = upsert(e[i].type, e[i].e);
    assert_int_equal(deliver(f, snap_begin(61, 9, n), NULL, 0, NULL), TG_SYNC_CONTINUE);
    assert_int_equal(deliver(f, snap_chunk(61, 0, l, n), NULL, 0, NULL), TG_SYNC_CONTINUE);
    tg_sync_env_t *r = one_reply(f, snap_end(61, 9, 1, digest), BODY(ACK));
    assert_string_equal(r->ack->config_digest, digest);
    tg_sync_env_free(r);

    json_t *got = store_contents(f->store);
    if (!json_equal(got, want)) {
        char *a = json_dumps(got, 0), *b = json_dumps(want, 0);
        fail_msg("bulk path: %s\ngeneral path: %s", a, b);
    }
    json_decref(got);
    json_decref(want);
    for (size_t i = 0; i < n; i++)
        json_decref(e[i].e);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(delta_applies_and_acks_with_the_digest),
        T(the_first_config_is_published_whatever_it_holds),
        T(a_gap_is_nacked_version_gap),
        T(an_invalid_entity_is_nacked_with_its_id_and_nothing_changes),
        T(a_delta_digest_mismatch_is_nacked_after_applying),
        T(a_snapshot_in_three_chunks_replaces_everything),
        T(a_chunk_out_of_order_is_nacked_and_the_old_config_kept),
        T(a_snapshot_digest_mismatch_is_nacked),
        T(the_bulk_path_stores_what_the_general_path_would),
        T(hello_says_what_the_store_holds),
        T(welcome_sets_the_session_and_persists_endpoints),
        T(heartbeat_digest_mismatch_asks_for_a_resync_once),
        T(an_error_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
