/*
 * fuzz_store_record.c — libFuzzer target for the config store's compact records
 * (data-plane/store_record.h): what a damaged data.mdb could hand the readers.
 *
 * The first byte picks consumer or credential, the next 16 or 32 bytes are the LMDB key and
 * the rest the stored value. Nothing may crash; splitting an owned record gives parts inside
 * the value; a record that decodes must also read in place, giving the values key-auth uses
 * (username, custom_id, the consumer ref, the expiry) exactly as the decoded entity has them;
 * and the decoded entity must encode again to a plain record that decodes to the same entity.
 */
#include "store_record.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok)
{
    if (!ok) abort();
}

/* A read field against the decoded entity's member `name` (absent, null or a string). */
static void same_string(const json_t *e, const char *name, const tg_record_value_t *v)
{
    const json_t *j = json_object_get(e, name);
    if (!j) {
        check(v->state == TG_RECORD_ABSENT);
    } else if (json_is_null(j)) {
        check(v->state == TG_RECORD_NULL);
    } else {
        check(v->state == TG_RECORD_VALUE && json_is_string(j));
        check(v->s.len == json_string_length(j));
        check(memcmp(v->s.p, json_string_value(j), v->s.len) == 0);
    }
}

/* A read uuid or ref field against the decoded entity's uuid string `j` (or null/absent). */
static void same_uuid(const json_t *j, const tg_record_value_t *v)
{
    if (!j) {
        check(v->state == TG_RECORD_ABSENT);
    } else if (json_is_null(j)) {
        check(v->state == TG_RECORD_NULL);
    } else {
        uint8_t u[TG_RECORD_UUID_LEN];
        check(v->state == TG_RECORD_VALUE && v->s.len == sizeof u);
        check(tg_record_uuid_pack((tg_str_t){json_string_value(j), json_string_length(j)}, u));
        check(memcmp(v->s.p, u, sizeof u) == 0);
    }
}

static void check_read(tg_record_type_t type, const json_t *e, const tg_record_value_t *f)
{
    if (type == TG_RECORD_CONSUMER) {
        same_string(e, "username", &f[TG_RECORD_CONSUMER_USERNAME]);
        same_string(e, "custom_id", &f[TG_RECORD_CONSUMER_CUSTOM_ID]);
        return;
    }
    same_uuid(json_object_get(e, "id"), &f[TG_RECORD_CREDENTIAL_ID]);
    const json_t *consumer = json_object_get(e, "consumer");
    same_uuid(json_is_object(consumer) ? json_object_get(consumer, "id") : consumer,
              &f[TG_RECORD_CREDENTIAL_CONSUMER]);
    const json_t *exp = json_object_get(e, "expires_at");
    const tg_record_value_t *v = &f[TG_RECORD_CREDENTIAL_EXPIRES_AT];
    if (!exp)
        check(v->state == TG_RECORD_ABSENT);
    else if (json_is_null(exp))
        check(v->state == TG_RECORD_NULL);
    else
        check(v->state == TG_RECORD_VALUE && v->i == json_integer_value(exp));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    tg_record_type_t type = data[0] & 1 ? TG_RECORD_CREDENTIAL : TG_RECORD_CONSUMER;
    size_t klen = type == TG_RECORD_CONSUMER ? TG_RECORD_UUID_LEN : 32;
    if (size < 1 + klen) return 0;
    tg_str_t key = {(const char *)data + 1, klen};
    tg_str_t value = {(const char *)data + 1 + klen, size - 1 - klen};

    tg_str_t rec, owner;
    if (tg_record_split(value, &rec, &owner)) {
        check(rec.p >= value.p && rec.p + rec.len <= value.p + value.len);
        check(owner.p >= value.p && owner.p + owner.len <= value.p + value.len);
        uint8_t joined[2 * TG_RECORD_MAX + 16];
        if (owner.len && rec.len <= TG_RECORD_MAX && owner.len <= TG_RECORD_MAX) {
            size_t n = tg_record_join(rec, owner, joined, sizeof joined);
            check(n == value.len && memcmp(joined, value.p, n) == 0); /* one way to write it */
        }
    }

    tg_record_value_t f[TG_RECORD_FIELDS_MAX];
    json_t *e = tg_record_decode(type, key, value);
    bool read = tg_record_read(type, value, f);
    if (e) {
        check(read);
        check_read(type, e, f);
        uint8_t again[TG_RECORD_MAX];
        size_t n = tg_record_encode(type, e, again, sizeof again);
        tg_str_t plain = value, unused;
        if (type == TG_RECORD_CREDENTIAL) check(tg_record_split(value, &plain, &unused));
        check(n > 0 || plain.len > TG_RECORD_MAX); /* what decodes encodes, no longer */
        if (n) {
            check(n <= plain.len);
            json_t *back = tg_record_decode(type, key, (tg_str_t){(const char *)again, n});
            check(back && json_equal(back, e));
            json_decref(back);
        }
        json_decref(e);
    }
    return 0;
}
