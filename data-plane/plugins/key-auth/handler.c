/*
 * key-auth/handler.c — Kong 3.10's key-auth on the data plane (kong-compat.md §2.2–§2.5).
 *
 * configure() compiles an instance's config into a ka_conf (process memory, owned by the
 * plugin chain of one config generation, read-only afterwards, shared by all workers).
 * access() runs on a worker thread per request: find the key (key_names in order, each in
 * header → query → body), hide it if asked, look the credential up by the SHA-256 of the
 * key through the request's identity source (identity.h), and set the consumer and its
 * upstream headers — or fall back to the anonymous consumer, or answer 401/500.
 *
 * The phase may return TG_FLOW_AGAIN when it needs the body (key_in_body); it then runs
 * again from the start, so nothing is recorded on the request before the body is in.
 */
#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "identity.h"
#include "key_auth_args.h"
#include "log.h"
#include "plugin.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "key-auth"

#define ERR_DUPLICATE_API_KEY "Duplicate API key found"
#define ERR_NO_API_KEY "No API key found in request"
#define ERR_INVALID_AUTH_CRED "Unauthorized"
#define ERR_UNEXPECTED "An unexpected error occurred"
/* a realm is the only source that could know the key and cannot be asked (issue 5) */
#define ERR_REALM_UNAVAILABLE "identity realm unavailable"

enum scope { SCOPE_CP, SCOPE_REALM };

/* One entry of identity_realms: where keys are looked up, in order. */
struct source {
    enum scope scope;
    char *id; /* realm id (scope realm) */
    char *region;
};

typedef struct ka_conf {
    char **key_names;
    size_t nkeys;
    bool hide_credentials, key_in_header, key_in_query, key_in_body, run_on_preflight;
    char *anonymous; /* consumer id or username; NULL when unset */
    char *www;       /* the WWW-Authenticate value of every 401 */
    struct source *sources;
    size_t nsources;
} ka_conf_t;

/* What one authentication attempt came to. */
enum outcome {
    AUTH_OK,
    AUTH_AGAIN, /* waiting for the body */
    AUTH_FAIL,  /* status/message in the attempt; anonymous may still apply */
    AUTH_ERROR, /* a lookup failed: 500, anonymous does not apply (Kong raises) */
    AUTH_WAIT,  /* parked on a realm lookup: the phase runs again with the answer */
};

struct attempt {
    tg_req_t *r;
    const ka_conf_t *c;
    tg_key_auth_args_body_t body;
    bool body_loaded;
    int status;
    const char *message;
};

/* ------------------------------------------------------------------ configure */

static char *dup_or_null(const json_t *v)
{
    return json_is_string(v) ? tg_strdup(json_string_value(v)) : NULL;
}

static bool get_bool(const json_t *conf, const char *name, bool dflt)
{
    const json_t *v = json_object_get(conf, name);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static void ka_release(void *compiled)
{
    ka_conf_t *c = compiled;
    if (!c) return;
    for (size_t i = 0; i < c->nkeys; i++)
        free(c->key_names[i]);
    for (size_t i = 0; i < c->nsources; i++) {
        free(c->sources[i].id);
        free(c->sources[i].region);
    }
    free(c->key_names);
    free(c->sources);
    free(c->anonymous);
    free(c->www);
    free(c);
}

static int compile_key_names(ka_conf_t *c, const json_t *names, char *err, size_t errlen)
{
    size_t n = json_is_array(names) ? json_array_size(names) : 1;
    c->key_names = tg_calloc(n, sizeof(char *));
    if (!names || json_is_null(names)) { /* the schema's default */
        c->key_names[c->nkeys++] = tg_strdup("apikey");
        return 0;
    }
    for (size_t i = 0; json_is_array(names) && i < n; i++) {
        const char *name = json_string_value(json_array_get(names, i));
        if (!name) break;
        c->key_names[c->nkeys++] = tg_strdup(name);
    }
    if (json_is_array(names) && c->nkeys == n) return 0;
    /* Kong answers every request 500 "Invalid plugin configuration"; we refuse it up front */
    snprintf(err, errlen, "Invalid plugin configuration: key_names must be an array of strings");
    return -TG_EINVAL;
}

/* identity_realms: absent, null or empty means the classic [{scope: cp}]. */
static void compile_sources(ka_conf_t *c, const json_t *realms)
{
    size_t n = json_array_size(realms);
    c->sources = tg_calloc(n ? n : 1, sizeof(*c->sources));
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(realms, i);
        const char *scope = json_string_value(json_object_get(e, "scope"));
        struct source *s = &c->sources[c->nsources++];
        s->scope = scope && strcmp(scope, "realm") == 0 ? SCOPE_REALM : SCOPE_CP;
        s->id = dup_or_null(json_object_get(e, "id"));
        s->region = dup_or_null(json_object_get(e, "region"));
    }
    if (n == 0) c->sources[c->nsources++].scope = SCOPE_CP;
}

static char *www_authenticate(const json_t *realm)
{
    if (!json_is_string(realm)) return tg_strdup("Key");
    return tg_asprintf("Key realm=\"%s\"", json_string_value(realm));
}

static int ka_configure(const json_t *plugin, void **compiled, char *err, size_t errlen)
{
    const json_t *conf = json_object_get(plugin, "config");
    ka_conf_t *c = tg_calloc(1, sizeof(*c));
    int rc = compile_key_names(c, json_object_get(conf, "key_names"), err, errlen);
    if (rc < 0) {
        ka_release(c);
        return rc;
    }
    c->hide_credentials = get_bool(conf, "hide_credentials", false);
    c->key_in_header = get_bool(conf, "key_in_header", true);
    c->key_in_query = get_bool(conf, "key_in_query", true);
    c->key_in_body = get_bool(conf, "key_in_body", false);
    c->run_on_preflight = get_bool(conf, "run_on_preflight", true);
    c->anonymous = dup_or_null(json_object_get(conf, "anonymous"));
    c->www = www_authenticate(json_object_get(conf, "realm"));
    compile_sources(c, json_object_get(conf, "identity_realms"));
    *compiled = c;
    return 0;
}

/* ------------------------------------------------------------------ finding the key */

static enum outcome fail(struct attempt *a, int status, const char *message)
{
    a->status = status;
    a->message = message;
    return status == 500 ? AUTH_ERROR : AUTH_FAIL;
}

/* The body, read once per attempt; a body that cannot be read or decoded is empty. */
static enum outcome load_body(struct attempt *a)
{
    if (a->body_loaded) return AUTH_OK;
    tg_str_t raw = TG_STR_NULL, ctype = TG_STR_NULL;
    int rc = tg_req_body(a->r, &raw);
    if (rc == -TG_EAGAIN) return AUTH_AGAIN;
    if (rc < 0) {
        TG_LOGI(MOD, "cannot process request body: %s", tg_strerror(rc));
        raw = TG_STR_NULL;
    }
    tg_req_header(a->r, "Content-Type", 0, &ctype);
    tg_key_auth_args_body_parse(a->r, &a->body, raw, ctype);
    a->body_loaded = true;
    return AUTH_OK;
}

static tg_key_auth_arg_t header_arg(const tg_req_t *r, const char *name, tg_str_t *value)
{
    size_t n = tg_req_header_count(r, name);
    if (n == 0) return TG_KEY_AUTH_ARG_ABSENT;
    if (n > 1) return TG_KEY_AUTH_ARG_TABLE;
    tg_req_header(r, name, 0, value);
    return TG_KEY_AUTH_ARG_STRING;
}

/* The value of one key name: header, else query, else body (Kong's `if not v` chain). */
static enum outcome lookup_name(struct attempt *a, const char *name, tg_key_auth_arg_t *kind,
                                tg_str_t *value)
{
    const ka_conf_t *c = a->c;
    tg_str_t query = tg_req_query(a->r);
    *kind = TG_KEY_AUTH_ARG_ABSENT;
    if (c->key_in_header) *kind = header_arg(a->r, name, value);
    if (*kind == TG_KEY_AUTH_ARG_ABSENT && c->key_in_query && query.p)
        *kind = tg_key_auth_args_form_get(a->r, query, name, value);
    if (*kind == TG_KEY_AUTH_ARG_ABSENT && c->key_in_body) {
        enum outcome o = load_body(a);
        if (o != AUTH_OK) return o;
        *kind = tg_key_auth_args_body_get(a->r, &a->body, name, value);
    }
    return AUTH_OK;
}

/*
 * The first key name with a string value gives the key — even an empty or invalid one:
 * there is no fallback to later names. A repeated value is refused outright.
 */
static enum outcome find_key(struct attempt *a, tg_str_t *key, const char **name)
{
    *name = NULL;
    for (size_t i = 0; i < a->c->nkeys; i++) {
        tg_key_auth_arg_t kind;
        enum outcome o = lookup_name(a, a->c->key_names[i], &kind, key);
        if (o != AUTH_OK) return o;
        if (kind == TG_KEY_AUTH_ARG_STRING) {
            /* a copy: hiding the key may free the JSON body the value points into */
            char *copy = tg_req_alloc(a->r, key->len + 1);
            if (key->len) memcpy(copy, key->p, key->len);
            copy[key->len] = '\0';
            *key = (tg_str_t){copy, key->len};
            *name = a->c->key_names[i];
            return AUTH_OK;
        }
        if (kind == TG_KEY_AUTH_ARG_TABLE) return fail(a, 401, ERR_DUPLICATE_API_KEY);
    }
    return AUTH_OK;
}

/* hide_credentials: the key name leaves the query, the headers and (key_in_body) the body. */
static enum outcome hide_key(struct attempt *a, const char *name)
{
    if (a->c->key_in_body) {
        enum outcome o = load_body(a); /* before any edit: AGAIN re-runs the phase */
        if (o != AUTH_OK) return o;
    }
    tg_str_t query = tg_req_query(a->r), rest;
    if (query.p && tg_key_auth_args_form_remove(a->r, query, name, &rest))
        tg_req_set_query(a->r, rest);
    tg_req_set_upstream_header(a->r, name, TG_STR_NULL);
    if (a->c->key_in_body && tg_key_auth_args_body_remove(a->r, &a->body, name, &rest))
        tg_req_set_body(a->r, rest, a->body.content_type);
    return AUTH_OK;
}

/* ------------------------------------------------------------------ identities */

static tg_str_t json_str(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? (tg_str_t){json_string_value(v), json_string_length(v)}
                             : TG_STR_NULL;
}

/* An entity's id for log lines. */
static const char *id_of(const json_t *entity)
{
    const char *id = json_string_value(json_object_get(entity, "id"));
    return id ? id : "?";
}

/*
 * identity_realms entries with scope "realm": the realm's answer through the DP's realm cache,
 * which asks the control plane on a miss (identity.h realm_key): a credential with its
 * consumer inline, not found, -TG_EAGAIN (parked: the phase runs again), or -TG_EDBDOWN (no
 * one can tell now). A DP with no control plane (standalone) cannot ask any realm.
 */
static int realm_credential_lookup(tg_req_t *r, const struct source *realm,
                                   const uint8_t digest[TG_SHA256_LEN], json_t **cred)
{
    const tg_identity_source_t *ids = r->identity;
    *cred = NULL;
    if (!realm->id) return -TG_ENOTFOUND; /* the schema requires one; nothing to ask */
    if (!ids || !ids->realm_key) return -TG_EDBDOWN;
    return ids->realm_key(ids->realm_ud, realm->id, digest, cred);
}

static int nibble(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static bool hex_to_bytes(tg_str_t hex, uint8_t *out, size_t n)
{
    if (hex.len != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        int hi = nibble(hex.p[2 * i]), lo = nibble(hex.p[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* ------------------------------------------------------------------ per-thread memos */

/*
 * The same few keys, credentials and consumers come back request after request, and what
 * key-auth derives from them cost more than the rest of the plugin (a SHA-256, a dozen JSON
 * lookups, decoding the stored digest, copying five header values). Each worker thread
 * keeps two small direct-mapped tables instead:
 *
 *  - key → digest. SHA-256 is a pure function, so an entry is never stale. Keys are
 *    compared in constant time; the table holds recent plaintext keys in memory (as the
 *    request buffers they arrived in do), never on disk, and wipes them when the thread
 *    ends. Keys longer than DIGEST_KEY_MAX are hashed every time.
 *  - credential → what key-auth reads of it and of its consumer, keyed by the JSON objects
 *    the identity source handed out. An entry holds a reference to both, so their addresses
 *    cannot be reused by other entities while it exists; a source that hands out another
 *    object (the config changed, a source without a cache) misses, and the entry is filled
 *    from the new one. Header values are borrowed from the JSON, which the request itself
 *    holds until it ends (identity.h), so they are valid for every request that matched.
 *
 * Bounded: DIGEST_SLOTS and CRED_SLOTS entries per thread, replaced on collision; JSON an
 * entry holds lives until the entry is replaced or the thread ends.
 *
 * A source offering key_by_digest (the proxy's) hands out what key-auth reads of the
 * credential and its consumer as strings, with no JSON, and caches them itself; those answers
 * skip the credential memo (key_info below) and go on the request as strings.
 */
#define DIGEST_SLOTS 64
#define DIGEST_KEY_MAX 64
#define CRED_SLOTS 64

struct digest_slot {
    uint8_t len; /* 0: empty (an empty key is refused before any lookup) */
    char key[DIGEST_KEY_MAX];
    uint8_t digest[TG_SHA256_LEN];
};

/* What set_consumer sends upstream for one consumer. */
struct consumer_info {
    const json_t *consumer;
    tg_str_t id, custom_id, username; /* .p NULL when absent */
    bool id_ok, custom_id_ok, username_ok; /* a field value that may be sent */
};

struct cred_slot {
    json_t *cred, *consumer; /* references when `held`; cred NULL: empty (or `keyed`) */
    bool held;               /* a memo entry (else a one-request scratch copy) */
    bool digest_ok;          /* key_digest was 64 hex digits, decoded into digest */
    uint8_t digest[TG_SHA256_LEN];
    bool expires;
    double expires_ms;
    tg_str_t id, consumer_id; /* credential id, consumer.id; .p NULL when absent */
    bool id_ok;
    bool has_consumer_info; /* info describes `consumer` (which may be NULL: not found) */
    struct consumer_info info;
    /* a copy of a key_by_digest answer (never a memo entry): no JSON (cred and consumer
     * NULL), consumer_rc is the consumer's lookup, made by the source along with the
     * credential's, and the strings live until the request ends */
    bool keyed;
    int consumer_rc;
};

struct memo {
    struct digest_slot digests[DIGEST_SLOTS];
    struct cred_slot creds[CRED_SLOTS];
};

static _Thread_local struct memo *thread_memo;
static pthread_key_t memo_key;
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;
static bool memo_key_ok;

static void cred_slot_clear(struct cred_slot *e)
{
    json_decref(e->cred);
    json_decref(e->consumer);
    memset(e, 0, sizeof(*e));
}

static void free_memo(void *p)
{
    struct memo *m = p;
    for (size_t i = 0; i < CRED_SLOTS; i++)
        cred_slot_clear(&m->creds[i]);
    explicit_bzero(m->digests, sizeof(m->digests)); /* plaintext keys */
    free(m);
    thread_memo = NULL;
}

static void memo_init(void)
{
    memo_key_ok = pthread_key_create(&memo_key, free_memo) == 0;
}

/* This thread's memo; NULL when it cannot be registered for freeing (then nothing is kept). */
static struct memo *memo(void)
{
    if (thread_memo) return thread_memo;
    pthread_once(&memo_once, memo_init);
    if (!memo_key_ok) return NULL;
    struct memo *m = tg_calloc(1, sizeof(*m));
    if (pthread_setspecific(memo_key, m) != 0) {
        free(m);
        return NULL;
    }
    return thread_memo = m;
}

/* FNV-1a: spreads short keys over the slots; the table needs no more (collisions only
 * replace an entry, and the slot is never trusted without comparing the key). */
static size_t key_slot(tg_str_t key)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ (unsigned char)key.p[i]) * 16777619u;
    return (h ^ (h >> 16)) & (DIGEST_SLOTS - 1);
}

static void key_digest(tg_str_t key, uint8_t out[TG_SHA256_LEN])
{
    struct memo *m = key.len <= DIGEST_KEY_MAX ? memo() : NULL;
    if (!m) {
        tg_sha256(key.p, key.len, out);
        return;
    }
    struct digest_slot *d = &m->digests[key_slot(key)];
    if (d->len == key.len && tg_ct_equal(d->key, key.p, key.len)) {
        memcpy(out, d->digest, TG_SHA256_LEN);
        return;
    }
    tg_sha256(key.p, key.len, out);
    d->len = (uint8_t)key.len;
    memcpy(d->key, key.p, key.len);
    memcpy(d->digest, out, TG_SHA256_LEN);
}

static void describe_consumer(const json_t *consumer, struct consumer_info *ci)
{
    ci->consumer = consumer;
    ci->id = json_str(consumer, "id");
    ci->custom_id = json_str(consumer, "custom_id");
    ci->username = json_str(consumer, "username");
    ci->id_ok = ci->id.p && tg_http_is_field_value(ci->id);
    ci->custom_id_ok = ci->custom_id.p && tg_http_is_field_value(ci->custom_id);
    ci->username_ok = ci->username.p && tg_http_is_field_value(ci->username);
}

/* Fills `e` from a credential; takes a reference when `hold` (a memo entry). */
static void describe_credential(struct cred_slot *e, json_t *cred, bool hold)
{
    e->cred = hold ? json_incref(cred) : cred;
    e->held = hold;
    e->digest_ok = hex_to_bytes(json_str(cred, "key_digest"), e->digest, sizeof(e->digest));
    const json_t *exp = json_object_get(cred, "expires_at");
    e->expires = json_is_number(exp);
    e->expires_ms = e->expires ? json_number_value(exp) * 1000.0 : 0;
    e->id = json_str(cred, "id");
    e->id_ok = e->id.p && tg_http_is_field_value(e->id);
    e->consumer_id = json_str(json_object_get(cred, "consumer"), "id");
}

/* The memo entry for a credential the source handed out, filled when it is new. */
static struct cred_slot *cred_info(json_t *cred, struct cred_slot *scratch)
{
    struct memo *m = memo();
    if (!m) {
        memset(scratch, 0, sizeof(*scratch));
        describe_credential(scratch, cred, false);
        return scratch;
    }
    uintptr_t h = (uintptr_t)cred;
    struct cred_slot *e = &m->creds[((h >> 4) ^ (h >> 12)) & (CRED_SLOTS - 1)];
    if (e->cred == cred) return e;
    cred_slot_clear(e);
    describe_credential(e, cred, true);
    return e;
}

/*
 * A key_by_digest answer as the entry find_credential hands on: everything is in the answer
 * already (the source reads the stored entities once and caches the strings), so this is a
 * copy into the caller's scratch entry, and the memo is not involved.
 */
static struct cred_slot *key_info(const tg_identity_key_t *k, struct cred_slot *e)
{
    *e = (struct cred_slot){
        .keyed = true,
        .consumer_rc = k->consumer_rc,
        .digest_ok = k->digest_ok,
        .expires = k->expires,
        .expires_ms = k->expires_ms,
        .id = k->id,
        .id_ok = k->id_ok,
        .consumer_id = k->consumer_ref,
        .has_consumer_info = true,
        .info = {NULL, k->consumer_id, k->custom_id, k->username, k->consumer_id_ok,
                 k->custom_id_ok, k->username_ok},
    };
    memcpy(e->digest, k->digest, sizeof(e->digest));
    return e;
}

/* What to send for the credential's consumer (found by the caller; NULL: not found). */
static const struct consumer_info *consumer_info(struct cred_slot *e, json_t *consumer,
                                                 struct consumer_info *scratch)
{
    if (e->has_consumer_info && e->consumer == consumer) return &e->info;
    if (!e->held) {
        describe_consumer(consumer, scratch);
        return scratch;
    }
    json_decref(e->consumer);
    e->consumer = json_incref(consumer);
    describe_consumer(consumer, &e->info);
    e->has_consumer_info = true;
    return &e->info;
}

/* ------------------------------------------------------------------ credentials */

/* A credential's id for log lines. */
static const char *cred_name(const struct cred_slot *e)
{
    return e->keyed ? (e->id.p ? e->id.p : "?") : id_of(e->cred);
}

/*
 * A credential found by digest counts only if its stored digest is the one computed
 * (compared in constant time: the index is a lookup structure, this is the check) and it
 * has not expired (expires_at <= now is Kong's ttl reaching 0: treated as not found).
 */
static bool credential_usable(const tg_req_t *r, const struct cred_slot *e,
                              const uint8_t digest[TG_SHA256_LEN])
{
    if (!e->digest_ok) {
        TG_LOGE(MOD, "credential %s has no valid key_digest", cred_name(e));
        return false;
    }
    if (!tg_ct_equal(e->digest, digest, TG_SHA256_LEN)) return false;
    return !e->expires || e->expires_ms > (double)tg_req_start_ms(r);
}

/* 0 with *info (its JSON in ->cred, NULL for a key_by_digest answer), -TG_ENOTFOUND, -TG_EAGAIN
 * when a realm lookup parked the request, or, when no source had the key, the first lookup error.
 * Sources are tried in order and an unreachable realm is skipped, so a later source may still know
 * the key; when none does, the key is unknown (401) if any source could answer, and -TG_EDBDOWN
 * (503) only when every source was an unreachable realm: nobody could tell (issue 5). */
static int find_credential(tg_req_t *r, const ka_conf_t *c, tg_str_t key, struct cred_slot **info,
                           struct cred_slot *scratch)
{
    const tg_identity_source_t *ids = r->identity;
    uint8_t digest[TG_SHA256_LEN];
    key_digest(key, digest);
    int first_err = 0;
    bool unavailable = false, answered = false;
    for (size_t i = 0; i < c->nsources; i++) {
        json_t *found = NULL;
        struct cred_slot *e = NULL;
        int rc;
        if (c->sources[i].scope == SCOPE_REALM) {
            rc = realm_credential_lookup(r, &c->sources[i], digest, &found);
            if (rc == -TG_EAGAIN) return rc;
            if (rc == -TG_EDBDOWN) {
                unavailable = true;
                continue;
            }
        } else if (ids && ids->key_by_digest) {
            /* the credential with its consumer, already described: one call, one read */
            tg_identity_key_t k;
            rc = ids->key_by_digest(ids->ud, digest, &k);
            if (rc == 0) e = key_info(&k, scratch);
        } else {
            rc = ids ? ids->credential_by_digest(ids->ud, digest, &found) : -TG_EINVAL;
        }
        answered = true;
        if (rc == 0) {
            if (!e) e = cred_info(found, scratch);
            if (credential_usable(r, e, digest)) {
                *info = e;
                return 0;
            }
        }
        if (rc < 0 && rc != -TG_ENOTFOUND && first_err == 0) first_err = rc;
    }
    return first_err ? first_err : unavailable && !answered ? -TG_EDBDOWN : -TG_ENOTFOUND;
}

/* One X-Consumer-* header: set to the value (borrowed: the request holds the JSON or the
 * source's strings), or removed when there is none, so a client cannot pass a forged one
 * through. */
#define SET_OR_CLEAR(r, lit, v, ok)                                                               \
    tg_req_set_upstream_header_ref((r), "" lit, sizeof(lit) - 1, (v).p ? (v) : TG_STR_NULL, (ok))

/* Sets the X-Consumer-* headers upstream; anonymous: no credential, X-Anonymous-Consumer. */
static void consumer_headers(tg_req_t *r, const struct consumer_info *ci, tg_str_t cred_id,
                             bool cred_id_ok, bool anonymous)
{
    SET_OR_CLEAR(r, "X-Consumer-ID", ci->id, ci->id_ok);
    SET_OR_CLEAR(r, "X-Consumer-Custom-ID", ci->custom_id, ci->custom_id_ok);
    SET_OR_CLEAR(r, "X-Consumer-Username", ci->username, ci->username_ok);
    SET_OR_CLEAR(r, "X-Credential-Identifier", cred_id, cred_id_ok);
    tg_req_set_upstream_header_ref(r, "X-Anonymous-Consumer", sizeof("X-Anonymous-Consumer") - 1,
                                   anonymous ? TG_STR("true") : TG_STR_NULL, true);
}

/* Records an authenticated identity: as strings for a key_by_digest answer (no JSON), else
 * the JSON the source or realm handed out. */
static void set_authenticated(tg_req_t *r, const struct cred_slot *e,
                              const struct consumer_info *ci)
{
    if (e->keyed)
        tg_req_set_identity_ref(r, ci->id, ci->username, e->id);
    else
        tg_req_set_identity(r, ci->consumer, ci->id, e->cred, e->id);
    consumer_headers(r, ci, e->id, e->id_ok, false);
}

/* The credential's consumer; Kong goes on without one when it is missing. */
static enum outcome load_owner(struct attempt *a, const struct cred_slot *e, json_t **consumer)
{
    const tg_identity_source_t *ids = a->r->identity;
    json_t *found = NULL;
    int rc;
    if (e->keyed) { /* the source looked the consumer up with the credential */
        rc = e->consumer_rc;
    } else {
        /* a realm's answer carries its consumer: realm consumers are not in the DP's store */
        json_t *inline_consumer = json_object_get(e->cred, "realm_consumer");
        if (json_is_object(inline_consumer)) {
            *consumer = inline_consumer;
            return AUTH_OK;
        }
        tg_str_t id = e->consumer_id;
        rc = id.p ? ids->consumer_by_id(ids->ud, id, &found) : -TG_ENOTFOUND;
    }
    if (rc == -TG_ENOTFOUND) {
        TG_LOGW(MOD, "consumer of credential %s not found", cred_name(e));
        found = NULL;
    } else if (rc < 0) {
        TG_LOGE(MOD, "loading the consumer of credential %s: %s", cred_name(e), tg_strerror(rc));
        a->status = 500; /* Kong answers it, but through the anonymous fallback */
        a->message = ERR_UNEXPECTED;
        return AUTH_FAIL;
    }
    *consumer = found;
    return AUTH_OK;
}

/* Steps 3–8 of §2.2. */
static enum outcome authenticate(struct attempt *a)
{
    tg_str_t key = TG_STR_NULL;
    const char *name;
    enum outcome o = find_key(a, &key, &name);
    if (o != AUTH_OK) return o;
    json_t *consumer = NULL;
    struct cred_slot scratch, *e = NULL;
    int rc = name && key.len ? find_credential(a->r, a->c, key, &e, &scratch) : 0;
    /* Parked on a realm: nothing may change yet, the phase runs again from the start. */
    if (rc == -TG_EAGAIN) return AUTH_WAIT;
    /* Kong hides the key before looking it up; hiding after it is the same to everyone (the
     * upstream sees the request only afterwards) and keeps the key for a parked re-run. */
    if (name && a->c->hide_credentials && (o = hide_key(a, name)) != AUTH_OK) return o;
    if (!name || key.len == 0) return fail(a, 401, ERR_NO_API_KEY);
    if (rc == -TG_ENOTFOUND) return fail(a, 401, ERR_INVALID_AUTH_CRED);
    if (rc == -TG_EDBDOWN) {
        a->status = 503; /* not a failed authentication: anonymous does not apply */
        a->message = ERR_REALM_UNAVAILABLE;
        return AUTH_ERROR;
    }
    if (rc < 0) {
        TG_LOGE(MOD, "credential lookup failed: %s", tg_strerror(rc));
        return fail(a, 500, ERR_UNEXPECTED);
    }
    o = load_owner(a, e, &consumer);
    if (o != AUTH_OK) return o;
    struct consumer_info ci;
    set_authenticated(a->r, e, consumer_info(e, consumer, &ci));
    return AUTH_OK;
}

/* The anonymous consumer: by id when the value is a UUID, else (or when absent) by username. */
static tg_flow_t use_anonymous(tg_req_t *r, const ka_conf_t *c)
{
    const tg_identity_source_t *ids = r->identity;
    tg_str_t v = tg_str_from(c->anonymous);
    json_t *consumer = NULL;
    int rc = -TG_ENOTFOUND;
    if (tg_uuid_valid(v)) rc = ids->consumer_by_id(ids->ud, v, &consumer);
    if (rc == -TG_ENOTFOUND) rc = ids->consumer_by_username(ids->ud, v, &consumer);
    if (rc == -TG_ENOTFOUND) {
        char msg[512];
        snprintf(msg, sizeof(msg), "anonymous consumer %s is configured but doesn't exist",
                 c->anonymous);
        TG_LOGE(MOD, "%s", msg);
        tg_req_exit(r, 500, msg, NULL, 0);
        return TG_FLOW_DONE;
    }
    if (rc < 0) {
        TG_LOGE(MOD, "loading anonymous consumer %s: %s", c->anonymous, tg_strerror(rc));
        tg_req_exit(r, 500, ERR_UNEXPECTED, NULL, 0);
        return TG_FLOW_DONE;
    }
    struct consumer_info ci;
    describe_consumer(consumer, &ci);
    tg_req_set_identity(r, ci.consumer, ci.id, NULL, TG_STR_NULL);
    consumer_headers(r, &ci, TG_STR_NULL, false, true);
    return TG_FLOW_CONTINUE;
}

static tg_flow_t answer(tg_req_t *r, const ka_conf_t *c, int status, const char *message)
{
    tg_http_header_t www = {TG_STR("WWW-Authenticate"), tg_str_from(c->www)};
    tg_req_exit(r, status, message, status == 401 ? &www : NULL, status == 401 ? 1 : 0);
    return TG_FLOW_DONE;
}

static tg_flow_t ka_access(tg_req_t *r, void *compiled)
{
    const ka_conf_t *c = compiled;
    if (!c->run_on_preflight && tg_str_eq_lit(tg_req_method(r), "OPTIONS")) return TG_FLOW_CONTINUE;
    /* logical OR between auth plugins: an earlier one already authenticated the request */
    if (c->anonymous && tg_req_authenticated(r)) return TG_FLOW_CONTINUE;
    if (!r->identity) {
        TG_LOGE(MOD, "no identity source on the request");
        return answer(r, c, 500, ERR_UNEXPECTED);
    }
    struct attempt a = {.r = r, .c = c};
    enum outcome o = authenticate(&a);
    tg_key_auth_args_body_free(&a.body);
    switch (o) {
    case AUTH_OK:
        return TG_FLOW_CONTINUE;
    case AUTH_AGAIN:
        return TG_FLOW_AGAIN;
    case AUTH_WAIT:
        return TG_FLOW_WAIT;
    case AUTH_FAIL:
        return c->anonymous ? use_anonymous(r, c) : answer(r, c, a.status, a.message);
    default:
        return answer(r, c, a.status, a.message);
    }
}

extern const tg_plugin_handler_t tg_plugin_handler_key_auth;
const tg_plugin_handler_t tg_plugin_handler_key_auth = {
    .name = "key-auth",
    .configure = ka_configure,
    .release = ka_release,
    .access = ka_access,
};
