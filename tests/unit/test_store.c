/*
 * test_store.c — the data plane's LMDB config store and the config digest: deltas read back,
 * atomicity, version gaps, index upkeep, digest agreement, snapshots, persistence, map
 * growth under concurrent readers, snapshots switching database sets under concurrent
 * readers, a crash between a snapshot's transactions, and a 100 000-credential load.
 * Records and their round trip: test_store_record.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config_digest.h"
#include "crypto.h"
#include "error.h"
#include "store.h"

#include <ftw.h>
#include <jansson.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ fixtures */

struct fx {
    char root[64];
    char dir[96];
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/tg-store-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->dir, sizeof f->dir, "%s/dp", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static tg_store_t *open_store(struct fx *f, size_t map_size)
{
    tg_store_t *s = NULL;
    assert_int_equal(tg_store_open(f->dir, map_size, &s), 0);
    return s;
}

static off_t data_file_size(struct fx *f)
{
    char path[160];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* ------------------------------------------------------------------ entities */

static char *new_id(void)
{
    char *id = malloc(TG_UUID_STR_LEN + 1);
    tg_uuid_v4(id);
    return id;
}

static void key_digest_hex(const char *key, char out[65])
{
    uint8_t d[TG_SHA256_LEN];
    tg_sha256(key, strlen(key), d);
    tg_hex_encode(d, sizeof d, out);
}

static json_t *service(const char *id, const char *name)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:n, s:i}", "id", id, "name", name, "host",
                     "upstream.test", "port", 80, "protocol", "http", "path", "created_at",
                     1700000000);
}

static json_t *route(const char *id, const char *service_id, const char *path)
{
    return json_pack("{s:s, s:[s], s:{s:s}, s:[s,s], s:b}", "id", id, "paths", path, "service",
                     "id", service_id, "protocols", "http", "https", "strip_path", 1);
}

static json_t *consumer(const char *id, const char *username, const char *custom_id)
{
    return json_pack("{s:s, s:s?, s:s?, s:i, s:n}", "id", id, "username", username, "custom_id",
                     custom_id, "created_at", 1700000000, "tags");
}

static json_t *credential(const char *id, const char *consumer_id, const char *key)
{
    char hex[65];
    key_digest_hex(key, hex);
    return json_pack("{s:s, s:{s:s}, s:s, s:n, s:i, s:n}", "id", id, "consumer", "id", consumer_id,
                     "key_digest", hex, "expires_at", "created_at", 1700000000, "tags");
}

static json_t *plugin(const char *id, const char *route_id)
{
    return json_pack("{s:s, s:s, s:{s:s}, s:{s:[s], s:b}, s:b}", "id", id, "name", "key-auth",
                     "route", "id", route_id, "config", "key_names", "apikey", "hide_credentials",
                     0, "enabled", 1);
}

static tg_store_change_t up(const char *type, json_t *e)
{
    return (tg_store_change_t){type, json_string_value(json_object_get(e, "id")), TG_STORE_UPSERT,
                               e};
}

static tg_store_change_t del(const char *type, const char *id)
{
    return (tg_store_change_t){type, id, TG_STORE_DELETE, NULL};
}

/* ------------------------------------------------------------------ read helpers */

static json_t *get(tg_store_t *s, const char *type, const char *id)
{
    tg_store_reader_t r;
    tg_str_t v;
    json_t *out = NULL;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    int rc = tg_store_get(&r, type, tg_str_from(id), &v);
    if (rc == 0)
        out = json_loadb(v.p, v.len, 0, NULL);
    else
        assert_int_equal(rc, -TG_ENOTFOUND);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return out;
}

static bool stored_equal(tg_store_t *s, const char *type, const json_t *want)
{
    json_t *got = get(s, type, json_string_value(json_object_get(want, "id")));
    bool eq = got && json_equal(got, want);
    json_decref(got);
    return eq;
}

/* The id found through an index ("key", "username", "custom_id"), or "" when absent. */
static const char *lookup(tg_store_t *s, const char *how, const char *value)
{
    static char id[64];
    tg_store_reader_t r;
    tg_str_t v;
    int rc;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    if (strcmp(how, "key") == 0) {
        uint8_t d[TG_SHA256_LEN];
        tg_sha256(value, strlen(value), d);
        rc = tg_store_credential_by_digest(&r, d, &v);
    } else if (strcmp(how, "username") == 0) {
        rc = tg_store_consumer_by_username(&r, tg_str_from(value), &v);
    } else {
        rc = tg_store_consumer_by_custom_id(&r, tg_str_from(value), &v);
    }
    id[0] = '\0';
    if (rc == 0) {
        json_t *e = json_loadb(v.p, v.len, 0, NULL);
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(e, "id")));
        json_decref(e);
    } else {
        assert_int_equal(rc, -TG_ENOTFOUND);
    }
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return id;
}

static tg_store_info_t info(tg_store_t *s)
{
    tg_store_reader_t r;
    tg_store_info_t i;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_get_info(&r, &i), 0);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return i;
}

static size_t count(tg_store_t *s, const char *type)
{
    tg_store_reader_t r;
    size_t n = 0;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_count(&r, type, &n), 0);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    return n;
}

static void recomputed_hex(tg_store_t *s, char out[65])
{
    tg_store_reader_t r;
    tg_config_digest_t d;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_digest_recompute(&r, &d), 0);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    tg_config_digest_hex(&d, out);
}

/* The digest of a set of changes' entities computed from scratch, independently of the store. */
static void digest_of(const tg_store_change_t *c, size_t n, char out[65])
{
    tg_config_digest_t d = {{0}};
    for (size_t i = 0; i < n; i++) {
        uint8_t h[TG_CONFIG_DIGEST_LEN];
        assert_int_equal(tg_config_digest_entity(c[i].type, c[i].id, c[i].entity, h), 0);
        tg_config_digest_add(&d, h);
    }
    tg_config_digest_hex(&d, out);
}

static void decref_all(tg_store_change_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref((json_t *)c[i].entity);
}

/* A small config: service, route, consumer, credential, plugin. */
struct small {
    char *svc, *rt, *cons, *cred, *plg;
    tg_store_change_t ch[5];
};

static void small_make(struct small *m)
{
    m->svc = new_id(), m->rt = new_id(), m->cons = new_id(), m->cred = new_id();
    m->plg = new_id();
    m->ch[0] = up("services", service(m->svc, "example"));
    m->ch[1] = up("routes", route(m->rt, m->svc, "/mock"));
    m->ch[2] = up("consumers", consumer(m->cons, "alice", "ext-1"));
    m->ch[3] = up("keyauth_credentials", credential(m->cred, m->cons, "alice-key"));
    m->ch[4] = up("plugins", plugin(m->plg, m->rt));
}

static void small_free(struct small *m)
{
    decref_all(m->ch, 5);
    free(m->svc), free(m->rt), free(m->cons), free(m->cred), free(m->plg);
}

/* ------------------------------------------------------------------ config digest */

static void test_digest_arithmetic(void **state)
{
    (void)state;
    tg_config_digest_t d = {{0}}, ones;
    uint8_t one[32] = {0}, h[32];
    one[31] = 1;
    memset(ones.sum, 0xff, sizeof ones.sum);
    tg_config_digest_add(&ones, one); /* wraps modulo 2^256 */
    assert_memory_equal(ones.sum, d.sum, 32);
    tg_config_digest_sub(&ones, one);
    for (int i = 0; i < 32; i++)
        assert_int_equal(ones.sum[i], 0xff);

    json_t *a = json_pack("{s:s, s:i, s:{s:b, s:n}}", "id", "x", "n", 1, "r", "b", 1, "a");
    json_t *b = json_pack("{s:{s:n, s:b}, s:i, s:s}", "r", "a", "b", 1, "n", 1, "id", "x");
    char *ca = tg_config_digest_canonical(a, NULL);
    assert_string_equal(ca, "{\"id\":\"x\",\"n\":1,\"r\":{\"a\":null,\"b\":true}}");
    uint8_t ha[32], hb[32];
    assert_int_equal(tg_config_digest_entity("services", "x", a, ha), 0);
    assert_int_equal(tg_config_digest_entity("services", "x", b, hb), 0);
    assert_memory_equal(ha, hb, 32); /* key order of the input does not matter */
    assert_int_equal(tg_config_digest_entity("routes", "x", a, h), 0);
    assert_memory_not_equal(ha, h, 32); /* the type is part of the hash */
    json_t *arr = json_array();
    assert_int_equal(tg_config_digest_entity("services", "x", arr, h), -TG_EINVAL);
    json_decref(arr);

    tg_config_digest_add(&d, ha);
    tg_config_digest_add(&d, hb);
    tg_config_digest_sub(&d, ha);
    assert_memory_equal(d.sum, hb, 32); /* a sum, so duplicates do not cancel as with XOR */
    char hex[65];
    tg_config_digest_t back;
    tg_config_digest_hex(&d, hex);
    assert_int_equal(tg_config_digest_from_hex(hex, &back), 0);
    assert_memory_equal(back.sum, d.sum, 32);
    assert_int_equal(tg_config_digest_from_hex("abc", &back), -TG_EINVAL);
    hex[5] = 'g';
    assert_int_equal(tg_config_digest_from_hex(hex, &back), -TG_EINVAL);
    free(ca);
    json_decref(a);
    json_decref(b);
}

/* ------------------------------------------------------------------ store */

static void test_open_fresh(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    struct stat st;
    assert_int_equal(stat(f->dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    tg_store_info_t i = info(s);
    assert_false(i.loaded);
    assert_int_equal(i.version, 0);
    assert_string_equal(i.digest,
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_string_equal(i.cp_id, "");
    assert_int_equal(count(s, "keyauth_credentials"), 0);
    assert_null(get(s, "services", "00000000-0000-4000-8000-000000000000"));
    tg_store_close(s);

    tg_store_t *bad = NULL;
    assert_int_equal(tg_store_open("/proc/no/such/dir", 0, &bad), -TG_ESYS);
    assert_null(bad);
}

static int collect_ids(void *ud, tg_str_t id, tg_str_t json)
{
    json_t *arr = ud;
    json_t *e = json_loadb(json.p, json.len, 0, NULL);
    assert_non_null(e);
    assert_true(tg_str_eq_lit(id, json_string_value(json_object_get(e, "id"))));
    json_array_append_new(arr, json_stringn(id.p, id.len));
    json_decref(e);
    return 0;
}

static int stop_at_first(void *ud, tg_str_t id, tg_str_t json)
{
    (void)id;
    (void)json;
    ++*(int *)ud;
    return 42;
}

static void test_apply_and_read_back(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    struct small m;
    small_make(&m);
    tg_store_error_t err;
    assert_int_equal(tg_store_apply(s, 0, 7, m.ch, 5, &err), 0);

    for (int i = 0; i < 5; i++)
        assert_true(stored_equal(s, m.ch[i].type, m.ch[i].entity));
    assert_string_equal(lookup(s, "key", "alice-key"), m.cred);
    assert_string_equal(lookup(s, "key", "other-key"), "");
    assert_string_equal(lookup(s, "username", "alice"), m.cons);
    assert_string_equal(lookup(s, "custom_id", "ext-1"), m.cons);
    assert_string_equal(lookup(s, "username", "ext-1"), "");
    assert_int_equal(count(s, "routes"), 1);

    tg_store_info_t i = info(s);
    char want[65];
    digest_of(m.ch, 5, want);
    assert_true(i.loaded);
    assert_int_equal(i.version, 7);
    assert_string_equal(i.digest, want);

    /* Stored compact and canonical: what the CP hashes is byte for byte what is on disk. */
    tg_store_reader_t r;
    tg_str_t v;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_get(&r, "services", tg_str_from(m.svc), &v), 0);
    char *canon = tg_config_digest_canonical(m.ch[0].entity, NULL);
    assert_true(tg_str_eq(v, tg_str_from(canon)));
    free(canon);
    assert_int_equal(tg_store_get(&r, "nope", tg_str_from(m.svc), &v), -TG_EINVAL);
    json_t *ids = json_array();
    assert_int_equal(tg_store_each(&r, "services", collect_ids, ids), 0);
    assert_int_equal(json_array_size(ids), 1);
    int calls = 0;
    assert_int_equal(tg_store_each(&r, "consumers", stop_at_first, &calls), 42);
    assert_int_equal(calls, 1);
    tg_store_read_end(&r);
    tg_store_reader_free(&r);
    json_decref(ids);
    small_free(&m);
    tg_store_close(s);
}

/* Everything a refused delta could have touched, captured for comparison. */
struct state_snap {
    tg_store_info_t info;
    char cred_by_key[64], by_username[64];
    size_t n_consumers, n_services;
};

static struct state_snap capture(tg_store_t *s)
{
    struct state_snap st = {.info = info(s)};
    snprintf(st.cred_by_key, sizeof st.cred_by_key, "%s", lookup(s, "key", "alice-key"));
    snprintf(st.by_username, sizeof st.by_username, "%s", lookup(s, "username", "alice"));
    st.n_consumers = count(s, "consumers");
    st.n_services = count(s, "services");
    return st;
}

static void assert_same_state(tg_store_t *s, const struct state_snap *before)
{
    struct state_snap now = capture(s);
    assert_int_equal(now.info.version, before->info.version);
    assert_string_equal(now.info.digest, before->info.digest);
    assert_string_equal(now.cred_by_key, before->cred_by_key);
    assert_string_equal(now.by_username, before->by_username);
    assert_int_equal(now.n_consumers, before->n_consumers);
    assert_int_equal(now.n_services, before->n_services);
}

static void test_apply_is_atomic(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    struct small m;
    small_make(&m);
    assert_int_equal(tg_store_apply(s, 0, 1, m.ch, 5, NULL), 0);
    struct state_snap before = capture(s);

    char *c2 = new_id(), *k2 = new_id();
    json_t *bad_digest = credential(k2, m.cons, "x");
    json_object_set_new(bad_digest, "key_digest", json_string("abcd"));
    json_t *no_digest = credential(k2, m.cons, "x");
    json_object_del(no_digest, "key_digest");
    json_t *plaintext = credential(k2, m.cons, "x");
    json_object_set_new(plaintext, "key", json_string("x"));
    json_t *num_username = consumer(c2, NULL, NULL);
    json_object_set_new(num_username, "username", json_integer(5));
    json_t *good_cons = consumer(c2, "bob", NULL);
    tg_store_change_t bad[] = {
        up("keyauth_credentials", bad_digest),
        up("keyauth_credentials", no_digest),
        up("keyauth_credentials", plaintext),
        up("consumers", num_username),
        up("widgets", good_cons),
        {"consumers", m.cons, TG_STORE_UPSERT, good_cons}, /* id mismatch */
        {"consumers", c2, TG_STORE_UPSERT, NULL},
        {"consumers", NULL, TG_STORE_DELETE, NULL},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        /* Valid changes first, so a partial apply would show. */
        json_t *renamed = consumer(m.cons, "alice2", NULL);
        json_t *rekeyed = credential(m.cred, m.cons, "new-key");
        tg_store_change_t batch[] = {up("consumers", good_cons), up("consumers", renamed),
                                     up("keyauth_credentials", rekeyed), del("services", m.svc),
                                     bad[b]};
        tg_store_error_t err;
        assert_int_equal(tg_store_apply(s, 1, 2, batch, 5, &err), -TG_EINVAL);
        assert_int_equal(err.index, 4);
        assert_true(err.message[0] != '\0');
        assert_same_state(s, &before);
        assert_string_equal(lookup(s, "username", "bob"), "");
        json_decref(renamed);
        json_decref(rekeyed);
    }
    json_t *drops[] = {bad_digest, no_digest, plaintext, num_username, good_cons};
    for (size_t i = 0; i < 5; i++)
        json_decref(drops[i]);
    free(c2), free(k2);
    small_free(&m);
    tg_store_close(s);
}

static void test_version_gap(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    struct small m;
    small_make(&m);
    tg_store_error_t err;
    assert_int_equal(tg_store_apply(s, 3, 4, m.ch, 5, &err), -TG_ECONFLICT); /* fresh = 0 */
    assert_false(info(s).loaded);
    assert_int_equal(tg_store_apply(s, 0, 10, m.ch, 5, &err), 0);
    struct state_snap before = capture(s);
    tg_store_change_t d = del("services", m.svc);
    assert_int_equal(tg_store_apply(s, 9, 11, &d, 1, &err), -TG_ECONFLICT);
    assert_int_equal(err.index, SIZE_MAX);
    assert_non_null(strstr(err.message, "version 10 is applied"));
    assert_int_equal(tg_store_apply(s, 11, 12, &d, 1, &err), -TG_ECONFLICT);
    assert_int_equal(tg_store_apply(s, 10, 10, &d, 1, &err), -TG_EINVAL);
    assert_same_state(s, &before);
    assert_int_equal(tg_store_apply(s, 10, 11, &d, 1, &err), 0);
    assert_int_equal(info(s).version, 11);
    assert_null(get(s, "services", m.svc));
    /* An empty delta still advances the version. */
    assert_int_equal(tg_store_apply(s, 11, 15, NULL, 0, &err), 0);
    assert_int_equal(info(s).version, 15);
    small_free(&m);
    tg_store_close(s);
}

static void test_index_maintenance(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    char *ca = new_id(), *cb = new_id(), *ka = new_id(), *kb = new_id();
    json_t *e[4] = {consumer(ca, "ann", "A-1"), consumer(cb, "ben", NULL),
                    credential(ka, ca, "key-a"), credential(kb, cb, "key-b")};
    tg_store_change_t ch[4] = {up("consumers", e[0]), up("consumers", e[1]),
                               up("keyauth_credentials", e[2]), up("keyauth_credentials", e[3])};
    assert_int_equal(tg_store_apply(s, 0, 1, ch, 4, NULL), 0);

    /* A key changes: the old digest no longer finds anything. */
    json_t *ka2 = credential(ka, ca, "key-a2");
    tg_store_change_t c1 = up("keyauth_credentials", ka2);
    assert_int_equal(tg_store_apply(s, 1, 2, &c1, 1, NULL), 0);
    assert_string_equal(lookup(s, "key", "key-a"), "");
    assert_string_equal(lookup(s, "key", "key-a2"), ka);

    /* Two credentials swap keys and two consumers swap names inside one delta. */
    json_t *sw[4] = {credential(ka, ca, "key-b"), credential(kb, cb, "key-a2"),
                     consumer(ca, "ben", NULL), consumer(cb, "ann", "A-1")};
    tg_store_change_t c2[4] = {up("keyauth_credentials", sw[0]), up("keyauth_credentials", sw[1]),
                               up("consumers", sw[2]), up("consumers", sw[3])};
    assert_int_equal(tg_store_apply(s, 2, 3, c2, 4, NULL), 0);
    assert_string_equal(lookup(s, "key", "key-b"), ka);
    assert_string_equal(lookup(s, "key", "key-a2"), kb);
    assert_string_equal(lookup(s, "username", "ben"), ca);
    assert_string_equal(lookup(s, "username", "ann"), cb);
    assert_string_equal(lookup(s, "custom_id", "A-1"), cb);

    /* custom_id dropped, a long username (hashed key) set; then deletes clean up. */
    char longname[400];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    json_t *ln = consumer(cb, longname, NULL);
    tg_store_change_t c3 = up("consumers", ln);
    assert_int_equal(tg_store_apply(s, 3, 4, &c3, 1, NULL), 0);
    assert_string_equal(lookup(s, "custom_id", "A-1"), "");
    assert_string_equal(lookup(s, "username", "ann"), "");
    assert_string_equal(lookup(s, "username", longname), cb);
    longname[10] = 'x';
    assert_string_equal(lookup(s, "username", longname), "");
    longname[10] = 'n';

    tg_store_change_t c4[3] = {del("keyauth_credentials", ka), del("consumers", cb),
                               del("consumers", "00000000-0000-4000-8000-000000000000")};
    assert_int_equal(tg_store_apply(s, 4, 5, c4, 3, NULL), 0); /* absent delete: no-op */
    assert_string_equal(lookup(s, "key", "key-b"), "");
    assert_string_equal(lookup(s, "key", "key-a2"), kb);
    assert_string_equal(lookup(s, "username", longname), "");
    assert_string_equal(lookup(s, "username", "ben"), ca);

    json_decref(ka2), json_decref(ln);
    for (int i = 0; i < 4; i++)
        json_decref(e[i]), json_decref(sw[i]);
    free(ca), free(cb), free(ka), free(kb);
    tg_store_close(s);
}

static void test_digest_order_independent(void **state)
{
    struct fx *f = *state;
    enum { N = 60 };
    tg_store_change_t ch[N], rev[N];
    char *ids[N];
    for (int i = 0; i < N; i++) {
        ids[i] = new_id();
        char name[32];
        snprintf(name, sizeof name, "user-%d", i);
        ch[i] = i % 2 ? up("consumers", consumer(ids[i], name, NULL))
                      : up("services", service(ids[i], name));
        rev[N - 1 - i] = ch[i];
    }
    char want[65];
    digest_of(ch, N, want);

    tg_store_t *a = open_store(f, 0);
    assert_int_equal(tg_store_apply(a, 0, 1, ch, N, NULL), 0);
    char other[96];
    snprintf(other, sizeof other, "%s/other", f->root);
    tg_store_t *b = NULL;
    assert_int_equal(tg_store_open(other, 0, &b), 0);
    /* Reverse order, in three deltas, with a detour through a different value. */
    json_t *detour = service(ids[0], "detour");
    tg_store_change_t d = up("services", detour);
    assert_int_equal(tg_store_apply(b, 0, 1, &d, 1, NULL), 0);
    assert_int_equal(tg_store_apply(b, 1, 2, rev, N / 2, NULL), 0);
    assert_int_equal(tg_store_apply(b, 2, 3, rev + N / 2, N / 2, NULL), 0);

    assert_string_equal(info(a).digest, want);
    assert_string_equal(info(b).digest, want);
    char re[65];
    recomputed_hex(b, re);
    assert_string_equal(re, want);
    tg_store_close(a);
    tg_store_close(b);
    json_decref(detour);
    decref_all(ch, N);
    for (int i = 0; i < N; i++)
        free(ids[i]);
}

/* The model a random walk is checked against: "type\nid" -> entity. */
static const char *const rand_types[] = {"consumers", "keyauth_credentials", "services"};

static json_t *random_entity(const char *type, const char *id, unsigned *seed)
{
    char v[32];
    snprintf(v, sizeof v, "v%u", rand_r(seed) % 50);
    if (strcmp(type, "consumers") == 0) return consumer(id, v, rand_r(seed) % 2 ? v : NULL);
    if (strcmp(type, "services") == 0) return service(id, v);
    return credential(id, "00000000-0000-4000-8000-000000000001", v);
}

/* A key digest names one credential: the one just upserted replaces any other holding it. */
static void displace_same_key(json_t *model, const char *key, const json_t *e)
{
    const json_t *digest = json_object_get(e, "key_digest");
    const char *k;
    json_t *other;
    void *tmp;
    if (!digest) return;
    json_object_foreach_safe(model, tmp, k, other)
    {
        if (strcmp(k, key) != 0 && json_equal(json_object_get(other, "key_digest"), digest))
            json_object_del(model, k);
    }
}

static void random_delta(json_t *model, tg_store_change_t *ch, size_t n, json_t *keep,
                         unsigned *seed)
{
    for (size_t i = 0; i < n; i++) {
        size_t have = json_object_size(model);
        const char *mk = NULL;
        if (have > 0 && rand_r(seed) % 3 != 0) { /* touch an existing entity */
            size_t pick = (size_t)rand_r(seed) % have, j = 0;
            json_t *val;
            json_object_foreach(model, mk, val) if (j++ == pick) break;
        }
        char key[80], *id;
        if (mk) {
            snprintf(key, sizeof key, "%s", mk);
        } else {
            id = new_id();
            snprintf(key, sizeof key, "%s\n%s", rand_types[rand_r(seed) % 3], id);
            free(id);
        }
        char *nl = strchr(key, '\n');
        *nl = '\0';
        json_t *type = json_string(key), *jid = json_string(nl + 1);
        json_array_append_new(keep, type), json_array_append_new(keep, jid);
        *nl = '\n';
        if (mk && rand_r(seed) % 4 == 0) {
            ch[i] = del(json_string_value(type), json_string_value(jid));
            json_object_del(model, key);
        } else {
            json_t *e = random_entity(json_string_value(type), json_string_value(jid), seed);
            ch[i] = (tg_store_change_t){json_string_value(type), json_string_value(jid),
                                        TG_STORE_UPSERT, e};
            json_array_append_new(keep, e);
            json_object_set(model, key, e);
            displace_same_key(model, key, e);
        }
    }
}

static void model_digest(json_t *model, char out[65])
{
    tg_config_digest_t d = {{0}};
    const char *k;
    json_t *e;
    json_object_foreach(model, k, e)
    {
        char type[40];
        const char *nl = strchr(k, '\n');
        snprintf(type, sizeof type, "%.*s", (int)(nl - k), k);
        uint8_t h[32];
        assert_int_equal(tg_config_digest_entity(type, nl + 1, e, h), 0);
        tg_config_digest_add(&d, h);
    }
    tg_config_digest_hex(&d, out);
}

static void test_digest_after_random_deltas(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    json_t *model = json_object();
    unsigned seed = 12345;
    for (int64_t v = 0; v < 300; v++) {
        tg_store_change_t ch[12];
        size_t n = 1 + (size_t)rand_r(&seed) % 12;
        json_t *keep = json_array();
        random_delta(model, ch, n, keep, &seed);
        tg_store_error_t err;
        int rc = tg_store_apply(s, v, v + 1, ch, n, &err);
        if (rc) fail_msg("delta %lld: %s", (long long)v, err.message);
        json_decref(keep);
    }
    char want[65], re[65];
    model_digest(model, want);
    recomputed_hex(s, re);
    assert_string_equal(info(s).digest, want);
    assert_string_equal(re, want);

    size_t total = 0;
    const char *k;
    json_t *e;
    json_object_foreach(model, k, e)
    {
        char type[40];
        const char *nl = strchr(k, '\n');
        snprintf(type, sizeof type, "%.*s", (int)(nl - k), k);
        assert_true(stored_equal(s, type, e));
    }
    for (int t = 0; t < 3; t++)
        total += count(s, rand_types[t]);
    assert_int_equal(total, json_object_size(model));
    json_decref(model);
    tg_store_close(s);
}

static void test_replace_all(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    struct small m;
    small_make(&m);
    assert_int_equal(tg_store_apply(s, 0, 5, m.ch, 5, NULL), 0);

    char *c = new_id(), *k = new_id();
    json_t *e[2] = {consumer(c, "zed", NULL), credential(k, c, "zed-key")};
    tg_store_change_t snap[2] = {{"consumers", NULL, TG_STORE_UPSERT, e[0]},
                                 up("keyauth_credentials", e[1])};
    tg_store_error_t err;
    assert_int_equal(tg_store_replace_all(s, 3, snap, 2, &err), 0);
    tg_store_info_t i = info(s);
    char want[65];
    snap[0].id = c;
    digest_of(snap, 2, want);
    assert_int_equal(i.version, 3); /* a snapshot may move back (CP restored) */
    assert_string_equal(i.digest, want);
    assert_null(get(s, "services", m.svc));
    assert_int_equal(count(s, "plugins"), 0);
    assert_string_equal(lookup(s, "key", "alice-key"), "");
    assert_string_equal(lookup(s, "username", "alice"), "");
    assert_string_equal(lookup(s, "key", "zed-key"), k);
    assert_string_equal(lookup(s, "username", "zed"), c);

    /* Streamed in chunks: a wrong digest keeps the old config, the right one commits. */
    char wrong[65], small_digest[65];
    memcpy(wrong, want, sizeof wrong);
    wrong[0] = wrong[0] == '0' ? '1' : '0';
    digest_of(m.ch, 5, small_digest);
    tg_store_snapshot_t *sn;
    assert_int_equal(tg_store_snapshot_begin(s, &sn), 0);
    assert_int_equal(tg_store_apply(s, 3, 4, NULL, 0, &err), -TG_EINVAL); /* one writer */
    assert_int_equal(tg_store_snapshot_put(sn, m.ch, 2, &err), 0);
    assert_string_equal(lookup(s, "key", "zed-key"), k); /* readers see the old config */
    assert_int_equal(tg_store_snapshot_put(sn, m.ch + 2, 3, &err), 0);
    assert_int_equal(tg_store_snapshot_commit(sn, 9, wrong, &err), -TG_ECONFLICT);
    assert_non_null(strstr(err.message, small_digest));
    assert_int_equal(info(s).version, 3);
    assert_string_equal(lookup(s, "key", "zed-key"), k);

    assert_int_equal(tg_store_snapshot_begin(s, &sn), 0);
    json_t *badc = credential(k, c, "x");
    json_object_set_new(badc, "key", json_string("x"));
    tg_store_change_t bad = up("keyauth_credentials", badc);
    assert_int_equal(tg_store_snapshot_put(sn, &bad, 1, &err), -TG_EINVAL);
    assert_int_equal(tg_store_snapshot_put(sn, m.ch, 5, &err), -TG_EINVAL); /* dead */
    assert_int_equal(tg_store_snapshot_commit(sn, 9, NULL, &err), -TG_EINVAL);
    assert_string_equal(lookup(s, "key", "zed-key"), k);

    assert_int_equal(tg_store_snapshot_begin(s, &sn), 0);
    assert_int_equal(tg_store_snapshot_put(sn, m.ch, 5, &err), 0);
    assert_int_equal(tg_store_snapshot_commit(sn, 9, small_digest, &err), 0);
    assert_int_equal(info(s).version, 9);
    assert_string_equal(lookup(s, "key", "alice-key"), m.cred);
    assert_string_equal(lookup(s, "key", "zed-key"), "");
    json_decref(badc);
    json_decref(e[0]), json_decref(e[1]);
    free(c), free(k);
    small_free(&m);
    tg_store_close(s);
}

static void test_persistence(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    struct small m;
    small_make(&m);
    assert_int_equal(tg_store_apply(s, 0, 42, m.ch, 5, NULL), 0);
    assert_int_equal(tg_store_set_cp_id(s, "7f1b2c3d-0000-4000-8000-000000000001"), 0);
    tg_store_info_t before = info(s);
    tg_store_close(s);

    s = open_store(f, 0);
    tg_store_info_t after = info(s);
    assert_true(after.loaded);
    assert_int_equal(after.version, 42);
    assert_string_equal(after.digest, before.digest);
    assert_string_equal(after.cp_id, "7f1b2c3d-0000-4000-8000-000000000001");
    for (int i = 0; i < 5; i++)
        assert_true(stored_equal(s, m.ch[i].type, m.ch[i].entity));
    assert_string_equal(lookup(s, "key", "alice-key"), m.cred);
    assert_string_equal(lookup(s, "custom_id", "ext-1"), m.cons);
    /* ...and it carries on from there. */
    tg_store_change_t d = del("plugins", m.plg);
    assert_int_equal(tg_store_apply(s, 42, 43, &d, 1, NULL), 0);
    char want[65];
    digest_of(m.ch, 4, want);
    assert_string_equal(info(s).digest, want);
    small_free(&m);
    tg_store_close(s);
}

/* Credentials i in [from, to) of one consumer, key "key-<i>", id derived from i. */
static void cred_batch(tg_store_change_t *ch, char (*ids)[40], int from, int to, const char *cons)
{
    for (int i = from; i < to; i++) {
        char key[32];
        snprintf(ids[i - from], 40, "00000000-0000-4000-8000-%012d", i);
        snprintf(key, sizeof key, "key-%d", i);
        ch[i - from] = up("keyauth_credentials", credential(ids[i - from], cons, key));
    }
}

struct reader_arg {
    tg_store_t *s;
    atomic_bool *stop;
    long reads;
};

/* Looks up credential 0 over and over while the writer grows the map under it. */
static void *reader_thread(void *p)
{
    struct reader_arg *a = p;
    tg_store_reader_t r;
    uint8_t d[TG_SHA256_LEN];
    tg_sha256("key-0", 5, d);
    if (tg_store_reader_init(a->s, &r) != 0) return (void *)1;
    bool ok = true;
    while (ok && !atomic_load(a->stop)) {
        tg_str_t v;
        if (tg_store_read_begin(&r) != 0) return (void *)1;
        int rc = tg_store_credential_by_digest(&r, d, &v);
        /* Checked before read_end: the view dies with the read. */
        ok = rc == -TG_ENOTFOUND || (rc == 0 && memmem(v.p, v.len, "000000000000\"", 13));
        tg_store_read_end(&r);
        a->reads++;
    }
    tg_store_reader_free(&r);
    return ok ? NULL : (void *)1;
}

static void test_map_growth(void **state)
{
    struct fx *f = *state;
    size_t small_map = 256 * 1024;
    tg_store_t *s = open_store(f, small_map);
    atomic_bool stop = false;
    struct reader_arg args[3];
    pthread_t th[3];
    for (int t = 0; t < 3; t++) {
        args[t] = (struct reader_arg){s, &stop, 0};
        assert_int_equal(pthread_create(&th[t], NULL, reader_thread, &args[t]), 0);
    }
    enum { B = 1000, ROUNDS = 6 };
    static tg_store_change_t ch[B];
    static char ids[B][40];
    for (int round = 0; round < ROUNDS; round++) {
        cred_batch(ch, ids, round * B, (round + 1) * B, "00000000-0000-4000-8000-00000000cccc");
        tg_store_error_t err;
        int rc = tg_store_apply(s, round, round + 1, ch, B, &err);
        if (rc) fail_msg("round %d: %s", round, err.message);
        decref_all(ch, B);
    }
    atomic_store(&stop, true);
    for (int t = 0; t < 3; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        assert_null(ret);
        assert_true(args[t].reads > 0);
    }
    assert_true((size_t)data_file_size(f) > small_map); /* it did outgrow the first map */
    assert_int_equal(count(s, "keyauth_credentials"), B * ROUNDS);
    assert_string_equal(lookup(s, "key", "key-5999"), "00000000-0000-4000-8000-000000005999");

    /* A snapshot bigger than the map left after a close and reopen with the small size. */
    tg_store_close(s);
    s = open_store(f, small_map);
    cred_batch(ch, ids, 0, B, "00000000-0000-4000-8000-00000000dddd");
    assert_int_equal(tg_store_replace_all(s, 100, ch, B, NULL), 0);
    decref_all(ch, B);
    assert_int_equal(count(s, "keyauth_credentials"), B);
    assert_int_equal(info(s).version, 100);
    tg_store_close(s);
}

/* ------------------------------------------------------------------ snapshot set switches */

/* The config of version v: one consumer whose custom_id names v, and its credential. */
static void versioned_config(int64_t v, tg_store_change_t ch[2])
{
    char custom[32];
    snprintf(custom, sizeof custom, "v%lld", (long long)v);
    ch[0] = up("consumers", consumer("00000000-0000-4000-8000-00000000c001", "user", custom));
    ch[1] = up("keyauth_credentials", credential("00000000-0000-4000-8000-00000000c002",
                                                 "00000000-0000-4000-8000-00000000c001", custom));
}

struct flip_reader {
    tg_store_t *s;
    atomic_bool *stop;
    long reads, mismatches;
};

/* Every read must see one config whole: the version in meta and the data of the same set. */
static void *flip_reader_thread(void *p)
{
    struct flip_reader *a = p;
    tg_store_reader_t r;
    if (tg_store_reader_init(a->s, &r) != 0) return (void *)1;
    while (!atomic_load(a->stop)) {
        tg_store_info_t i;
        tg_str_t v;
        char want[40];
        if (tg_store_read_begin(&r) != 0) return (void *)1;
        int rc = tg_store_get_info(&r, &i);
        if (rc == 0) rc = tg_store_consumer_by_username(&r, TG_STR("user"), &v);
        snprintf(want, sizeof want, "\"custom_id\":\"v%lld\"", (long long)i.version);
        if (rc != 0 || !memmem(v.p, v.len, want, strlen(want))) a->mismatches++;
        tg_store_read_end(&r);
        a->reads++;
    }
    tg_store_reader_free(&r);
    return NULL;
}

static void test_snapshot_switches_sets(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    tg_store_change_t ch[2];
    versioned_config(1, ch);
    assert_int_equal(tg_store_replace_all(s, 1, ch, 2, NULL), 0);
    decref_all(ch, 2);

    /* A read open across a snapshot keeps its config; the next read sees the new one. */
    tg_store_reader_t held;
    tg_str_t v;
    assert_int_equal(tg_store_reader_init(s, &held), 0);
    assert_int_equal(tg_store_read_begin(&held), 0);
    versioned_config(2, ch);
    assert_int_equal(tg_store_replace_all(s, 2, ch, 2, NULL), 0);
    decref_all(ch, 2);
    assert_int_equal(tg_store_consumer_by_custom_id(&held, TG_STR("v1"), &v), 0);
    tg_store_read_end(&held);
    tg_store_reader_free(&held);
    assert_string_equal(lookup(s, "custom_id", "v1"), "");
    assert_string_equal(lookup(s, "custom_id", "v2"), "00000000-0000-4000-8000-00000000c001");

    /* Readers racing many switches never see one set's data under the other's version. */
    atomic_bool stop = false;
    struct flip_reader args[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        args[t] = (struct flip_reader){s, &stop, 0, 0};
        assert_int_equal(pthread_create(&th[t], NULL, flip_reader_thread, &args[t]), 0);
    }
    for (int64_t ver = 3; ver < 60; ver++) {
        versioned_config(ver, ch);
        assert_int_equal(tg_store_replace_all(s, ver, ch, 2, NULL), 0);
        decref_all(ch, 2);
        if (ver % 2) { /* a delta in between goes to whichever set is the config */
            versioned_config(ver * 1000, ch);
            assert_int_equal(tg_store_apply(s, ver, ver * 1000, ch, 1, NULL), 0);
            decref_all(ch, 2);
        }
    }
    atomic_store(&stop, true);
    for (int t = 0; t < 2; t++) {
        pthread_join(th[t], NULL);
        assert_true(args[t].reads > 0);
        assert_int_equal(args[t].mismatches, 0);
    }
    tg_store_close(s);
}

/* A snapshot cut short by a crash leaves data in the spare set; opening the store empties it. */
static void test_half_written_snapshot_is_dropped(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    tg_store_change_t ch[2];
    versioned_config(1, ch);
    assert_int_equal(tg_store_replace_all(s, 1, ch, 2, NULL), 0); /* set #1 is the config now */
    decref_all(ch, 2);
    tg_store_close(s);

    /* What a crash between the set's transactions and the switch leaves behind. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "idx:consumers.username", 0, &dbi), 0);
    MDB_val k = {5, "ghost"}, v = {16, "0123456789abcdef"};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    s = open_store(f, 0);
    assert_string_equal(lookup(s, "username", "ghost"), "");
    assert_string_equal(lookup(s, "custom_id", "v1"), "00000000-0000-4000-8000-00000000c001");
    versioned_config(2, ch); /* and the next snapshot goes into a clean set */
    assert_int_equal(tg_store_replace_all(s, 2, ch, 2, NULL), 0);
    decref_all(ch, 2);
    assert_string_equal(lookup(s, "username", "ghost"), "");
    assert_string_equal(lookup(s, "custom_id", "v2"), "00000000-0000-4000-8000-00000000c001");
    tg_store_close(s);
}

/* Walks database `name` with LMDB's own comparator (memcmp order): every key is greater
 * than the one before and found by mdb_get. Returns the number of keys. */
static size_t check_lmdb_order(MDB_txn *txn, const char *name)
{
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v, prev = {0, NULL};
    assert_int_equal(mdb_dbi_open(txn, name, 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    size_t n = 0;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
        if (prev.mv_data) assert_true(mdb_cmp(txn, dbi, &prev, &k) < 0);
        MDB_val found;
        assert_int_equal(mdb_get(txn, dbi, &k, &found), 0);
        prev = k;
    }
    mdb_cursor_close(cur);
    return n;
}

/*
 * The store's faster key comparator keeps LMDB's order exactly: keys it inserted in random
 * order (ids of every length sharing prefixes, digests sharing their first bytes) are in
 * memcmp order for LMDB's own comparator, and all found with it.
 */
static void test_key_order_is_lmdb_order(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    enum { N = 600 };
    json_t *e[2 * N];
    tg_store_change_t ch[2 * N];
    srand(7);
    for (int i = 0; i < N; i++) {
        char id[64], cid[72];
        uint8_t d[32];
        if (i % 3 == 0) /* plain ids: "p", "pp", ... and their neighbours */
            snprintf(id, sizeof id, "%.*s%c", 1 + i % 20, "pppppppppppppppppppppppp",
                     'a' + rand() % 3);
        else
            snprintf(id, sizeof id, "%08x-%04x-4%03x-8%03x-%012x", (unsigned)rand(),
                     (unsigned)rand() & 0xffff, (unsigned)rand() & 0xfff, (unsigned)rand() & 0xfff,
                     (unsigned)rand());
        snprintf(cid, sizeof cid, "c-%s", id);
        memset(d, 0, sizeof d);
        d[i % 9] = (uint8_t)rand(); /* long shared prefixes, differing anywhere in 9 bytes */
        d[31] = (uint8_t)i;
        d[30] = (uint8_t)(i >> 8);
        char hex[65];
        tg_hex_encode(d, 32, hex);
        e[2 * i] = json_pack("{s:s,s:s}", "id", id, "username", cid);
        e[2 * i + 1] =
            json_pack("{s:s,s:{s:s},s:s}", "id", cid, "consumer", "id", id, "key_digest", hex);
        ch[2 * i] = (tg_store_change_t){"consumers", id, TG_STORE_UPSERT, e[2 * i]};
        ch[2 * i + 1] =
            (tg_store_change_t){"keyauth_credentials", cid, TG_STORE_UPSERT, e[2 * i + 1]};
    }
    for (int i = 0; i < 2 * N; i++) /* ids are read from the entities: point at them */
        ch[i].id = json_string_value(json_object_get(e[i], "id"));
    tg_store_error_t err;
    int rc = tg_store_apply(s, 0, 1, ch, 2 * N, &err);
    if (rc) fail_msg("apply: %s", err.message);
    tg_store_close(s);

    MDB_env *env;
    MDB_txn *txn;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    size_t consumers = check_lmdb_order(txn, "consumers");
    assert_true(consumers > N / 2); /* duplicate plain ids replace each other */
    assert_int_equal(check_lmdb_order(txn, "keyauth_credentials"), consumers);
    check_lmdb_order(txn, "idx:keyauth_credentials.id");
    check_lmdb_order(txn, "idx:consumers.username");
    mdb_txn_abort(txn);
    mdb_env_close(env);
    for (int i = 0; i < 2 * N; i++)
        json_decref(e[i]);
}

static void test_reader_misuse(void **state)
{
    struct fx *f = *state;
    tg_store_t *s = open_store(f, 0);
    tg_store_reader_t r;
    tg_str_t v;
    size_t n;
    assert_int_equal(tg_store_reader_init(s, &r), 0);
    assert_int_equal(tg_store_get(&r, "services", TG_STR("x"), &v), -TG_EINVAL); /* not begun */
    assert_int_equal(tg_store_read_begin(&r), 0);
    assert_int_equal(tg_store_read_begin(&r), -TG_EINVAL); /* no nesting */
    assert_int_equal(tg_store_count(&r, "widgets", &n), -TG_EINVAL);
    assert_int_equal(tg_store_consumer_by_username(&r, TG_STR(""), &v), -TG_ENOTFOUND);
    tg_store_read_end(&r);
    tg_store_read_end(&r); /* harmless */
    tg_store_reader_free(&r);
    assert_int_equal(tg_store_set_cp_id(s, "this-id-is-far-too-long-to-be-a-control-plane-id-"
                                           "of-any-kind-at-all"),
                     -TG_EINVAL);
    tg_store_close(s);
}

/* A random-looking but reproducible UUID for entity n of a kind, as real ids are. */
static void hashed_id(const char *kind, int n, char out[40])
{
    char in[48], hex[65];
    uint8_t d[TG_SHA256_LEN];
    snprintf(in, sizeof in, "%s-%d", kind, n);
    tg_sha256(in, strlen(in), d);
    tg_hex_encode(d, sizeof d, hex);
    snprintf(out, 40, "%.8s-%.4s-4%.3s-8%.3s-%.12s", hex, hex + 8, hex + 12, hex + 15, hex + 18);
}

static void test_100k_credentials(void **state)
{
    struct fx *f = *state;
    enum { N = 100000, B = 10000 };
    tg_store_t *s = open_store(f, 0);
    static tg_store_change_t ch[B];
    off_t empty = data_file_size(f);

    /* Credentials as a snapshot streamed in chunks: one transaction, bounded memory. */
    tg_store_snapshot_t *snap;
    assert_int_equal(tg_store_snapshot_begin(s, &snap), 0);
    for (int b = 0; b < N / B; b++) {
        for (int i = 0; i < B; i++) {
            char id[40], cons[40], key[32];
            hashed_id("cred", b * B + i, id);
            hashed_id("cons", b * B + i, cons);
            snprintf(key, sizeof key, "key-%d", b * B + i);
            ch[i] = up("keyauth_credentials", credential(id, cons, key));
        }
        assert_int_equal(tg_store_snapshot_put(snap, ch, B, NULL), 0);
        decref_all(ch, B);
    }
    assert_int_equal(tg_store_snapshot_commit(snap, 1, NULL, NULL), 0);
    off_t with_creds = data_file_size(f);
    print_message("[ store ] %d credentials: %.0f bytes each on disk (data.mdb %lld bytes)\n", N,
                  (double)(with_creds - empty) / N, (long long)with_creds);

    /* Their consumers as ten deltas (this includes copy-on-write churn between commits). */
    for (int b = 0; b < N / B; b++) {
        for (int i = 0; i < B; i++) {
            char id[40], name[32];
            hashed_id("cons", b * B + i, id);
            snprintf(name, sizeof name, "user-%d", b * B + i);
            ch[i] = up("consumers", consumer(id, name, NULL));
        }
        assert_int_equal(tg_store_apply(s, 1 + b, 2 + b, ch, B, NULL), 0);
        decref_all(ch, B);
    }
    print_message("[ store ] %d consumers: %.0f bytes each on disk\n", N,
                  (double)(data_file_size(f) - with_creds) / N);

    assert_int_equal(count(s, "keyauth_credentials"), N);
    assert_int_equal(count(s, "consumers"), N);
    unsigned seed = 7;
    for (int i = 0; i < 1000; i++) {
        int n = rand_r(&seed) % N;
        char key[32], want[40], name[32];
        snprintf(key, sizeof key, "key-%d", n);
        hashed_id("cred", n, want);
        assert_string_equal(lookup(s, "key", key), want);
        snprintf(name, sizeof name, "user-%d", n);
        hashed_id("cons", n, want);
        assert_string_equal(lookup(s, "username", name), want);
    }
    assert_string_equal(lookup(s, "key", "key-100000"), "");
    char re[65];
    recomputed_hex(s, re);
    assert_string_equal(info(s).digest, re);
    tg_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_arithmetic),
        cmocka_unit_test_setup_teardown(test_open_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_is_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_gap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_maintenance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_order_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_after_random_deltas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_switches_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_written_snapshot_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_order_is_lmdb_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_misuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_100k_credentials, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
