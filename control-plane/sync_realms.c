/*
 * sync_realms.c — realm lookups and invalidations, CP side; see sync_realms.h.
 */
#include "sync_realms.h"

#include "alloc.h"
#include "crypto.h"
#include "error.h"
#include "log.h"
#include "realm_store.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MOD "sync"

/* ---------------------------------------------------------------- lookups */

static void set_ttl(tg_sync_realm_result_t *out, uint32_t ttl_s)
{
    out->has_ttl_s = true;
    out->ttl_s = ttl_s;
}

static uint32_t minutes(int m)
{
    return m > 0 ? (uint32_t)m * 60u : 0u;
}

/* The DP's answer, shaped as the key-auth credential the plugin already handles (its
 * consumer inline, since the DP's store has no realm consumers). */
static char *answer_json(json_t *consumer, const uint8_t digest[32], char **credential_id)
{
    json_t *c = json_deep_copy(consumer);
    const char *key_id = json_string_value(json_object_get(c, "key_id"));
    const char *consumer_id = json_string_value(json_object_get(c, "id"));
    char hex[65];
    tg_hex_encode(digest, 32, hex);
    *credential_id = key_id ? tg_strdup(key_id) : NULL;
    json_t *answer = json_pack("{s:s?, s:{s:s?}, s:s, s:n}", "id", key_id, "consumer", "id", consumer_id,
                               "key_digest", hex, "expires_at");
    json_object_del(c, "key_id"); /* after the pack, which copied it */
    json_object_set_new(answer, "realm_consumer", c);
    char *text = json_dumps(answer, JSON_COMPACT);
    json_decref(answer);
    return text;
}

void tg_sync_realms_answer(tg_db_t *db, const char *cp_id, const Tollgate__Sync__V1__RealmLookup *req,
                           tg_sync_realm_result_t *out)
{
    tg_sync_realm_result_t init = TOLLGATE__SYNC__V1__REALM_LOOKUP_RESULT__INIT;
    *out = init;
    out->has_request_id = req->has_request_id;
    out->request_id = req->request_id;
    out->has_found = true;
    out->found = false;
    out->realm_id = tg_strdup(req->realm_id ? req->realm_id : "");
    if (!req->realm_id || !req->has_key_digest || req->key_digest.len != 32 ||
        !tg_uuid_valid(tg_str_from(req->realm_id)))
        return;
    tg_realm_store_answer_t found;
    tg_db_err_t err = {0};
    int rc = tg_realm_store_lookup(db, req->realm_id, req->key_digest.data, cp_id, &found, &err);
    if (rc != 0) {
        TG_LOGW(MOD, "realm %s lookup failed: %s", req->realm_id, err.message[0] ? err.message : tg_strerror(rc));
        out->error = tg_strdup(rc == -TG_EDBDOWN ? "database unavailable" : "database error");
        return;
    }
    switch (found.result) {
    case TG_REALM_LOOKUP_FOUND:
        out->found = true;
        out->consumer_json = answer_json(found.consumer, req->key_digest.data, &out->credential_id);
        set_ttl(out, minutes(found.ttl_minutes));
        break;
    case TG_REALM_LOOKUP_NOT_FOUND:
    case TG_REALM_LOOKUP_NOT_ALLOWED:
        set_ttl(out, minutes(found.negative_ttl_minutes));
        break;
    case TG_REALM_LOOKUP_NO_REALM:
        set_ttl(out, TG_SYNC_REALMS_NO_REALM_TTL_S);
        break;
    }
    tg_realm_store_answer_clear(&found);
}

void tg_sync_realms_result_clear(tg_sync_realm_result_t *r)
{
    free(r->consumer_json);
    free(r->credential_id);
    free(r->realm_id);
    free(r->error);
    r->consumer_json = r->credential_id = r->realm_id = r->error = NULL;
}

/* ---------------------------------------------------------------- invalidations */

static void everything_everywhere(tg_sync_invalidate_t *inv)
{
    tg_sync_invalidate_t init = TOLLGATE__SYNC__V1__INVALIDATE__INIT;
    *inv = init;
    inv->has_everything = true;
    inv->everything = true;
}

static bool hex32(const char *hex, uint8_t out[32])
{
    if (!hex || strlen(hex) != 64) return false;
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                         : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
            if (d > 15) return false;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

/* One realm's Invalidate from the payload's lists; false when a list is malformed. */
static bool fill(tg_sync_invalidate_t *inv, const char *realm_id, bool flush, const json_t *digests,
                 const json_t *consumers)
{
    tg_sync_invalidate_t init = TOLLGATE__SYNC__V1__INVALIDATE__INIT;
    *inv = init;
    inv->realm_id = tg_strdup(realm_id);
    size_t nd = json_array_size(digests), nc = json_array_size(consumers);
    if (flush || (nd == 0 && nc == 0)) {
        inv->has_everything = true;
        inv->everything = true;
        return true;
    }
    inv->key_digests = tg_calloc(nd ? nd : 1, sizeof *inv->key_digests);
    for (size_t i = 0; i < nd; i++) {
        uint8_t *d = tg_malloc(32);
        inv->key_digests[inv->n_key_digests++] = (ProtobufCBinaryData){32, d};
        if (!hex32(json_string_value(json_array_get(digests, i)), d)) return false;
    }
    inv->consumer_ids = tg_calloc(nc ? nc : 1, sizeof *inv->consumer_ids);
    for (size_t i = 0; i < nc; i++) {
        const char *id = json_string_value(json_array_get(consumers, i));
        if (!id) return false;
        inv->consumer_ids[inv->n_consumer_ids++] = tg_strdup(id);
    }
    return true;
}

static bool known_op(const char *op)
{
    static const char *const ops[] = {"key_created", "key_deleted", "consumer_updated", "consumer_deleted",
                                      "consumer_moved", "realm_updated", "realm_deleted", NULL};
    for (int i = 0; op && ops[i]; i++)
        if (strcmp(op, ops[i]) == 0) return true;
    return false;
}

int tg_sync_realms_invalidations(const char *payload, tg_sync_invalidate_t out[2])
{
    json_t *p = json_loads(payload ? payload : "", 0, NULL);
    const char *realm = json_string_value(json_object_get(p, "realm_id"));
    const char *op = json_string_value(json_object_get(p, "op"));
    int n = 0;
    if (!realm || !known_op(op)) goto everything;
    bool flush = json_is_true(json_object_get(p, "flush"));
    const json_t *digests = json_object_get(p, "key_digests"), *consumers = json_object_get(p, "consumer_ids");
    if (!fill(&out[n++], realm, flush, digests, consumers)) goto everything;
    const char *target = json_string_value(json_object_get(p, "target_realm_id"));
    if (strcmp(op, "consumer_moved") == 0 && target && strcmp(target, realm) != 0) {
        if (!fill(&out[n++], target, flush, digests, consumers)) goto everything;
    }
    json_decref(p);
    return n;
everything:
    TG_LOGW(MOD, "unreadable realm invalidation (%s): dropping every DP's realm cache", payload ? payload : "");
    for (int i = 0; i < n; i++) tg_sync_realms_invalidate_clear(&out[i]);
    everything_everywhere(&out[0]);
    json_decref(p);
    return 1;
}

void tg_sync_realms_invalidate_clear(tg_sync_invalidate_t *inv)
{
    for (size_t i = 0; i < inv->n_key_digests; i++) free(inv->key_digests[i].data);
    for (size_t i = 0; i < inv->n_consumer_ids; i++) free(inv->consumer_ids[i]);
    free(inv->key_digests);
    free(inv->consumer_ids);
    free(inv->realm_id);
    inv->key_digests = NULL;
    inv->consumer_ids = NULL;
    inv->realm_id = NULL;
    inv->n_key_digests = inv->n_consumer_ids = 0;
}
