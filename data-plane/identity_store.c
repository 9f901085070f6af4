/*
 * identity_store.c — see identity_store.h.
 */
#include "identity_store.h"
#include "error.h"
#include "log.h"

typedef int (*lookup_fn)(tg_store_reader_t *r, const void *arg, tg_str_t *view);

/*
 * One short read: the view into the memory map is parsed into a fresh JSON value before the
 * read ends, because the view dies with the read and the caller keeps the value until the
 * request ends.
 */
static int read_json(tg_identity_store_t *s, lookup_fn fn, const void *arg, json_t **out)
{
    *out = NULL;
    int rc = tg_store_read_begin(s->reader);
    if (rc < 0) return rc;
    tg_str_t view;
    rc = fn(s->reader, arg, &view);
    json_t *j = NULL;
    if (rc == 0) {
        json_error_t jerr;
        j = json_loadb(view.p, view.len, 0, &jerr);
        if (!j) {
            TG_LOGE("identity", "stored entity is not valid JSON: %s", jerr.text);
            rc = -TG_EPARSE;
        }
    }
    tg_store_read_end(s->reader);
    if (rc < 0) return rc;
    if (!s->owned && !(s->owned = json_array())) tg_fatal("out of memory in identity lookup");
    if (json_array_append_new(s->owned, j) < 0) /* the array's reference keeps it alive */
        tg_fatal("out of memory in identity lookup");
    *out = j;
    return 0;
}

static int by_digest(tg_store_reader_t *r, const void *arg, tg_str_t *view)
{
    return tg_store_credential_by_digest(r, arg, view);
}

static int by_id(tg_store_reader_t *r, const void *arg, tg_str_t *view)
{
    return tg_store_get(r, "consumers", *(const tg_str_t *)arg, view);
}

static int by_username(tg_store_reader_t *r, const void *arg, tg_str_t *view)
{
    return tg_store_consumer_by_username(r, *(const tg_str_t *)arg, view);
}

static int credential_by_digest(void *ud, const uint8_t d[32], json_t **cred)
{
    return read_json(ud, by_digest, d, cred);
}

static int consumer_by_id(void *ud, tg_str_t id, json_t **consumer)
{
    return read_json(ud, by_id, &id, consumer);
}

static int consumer_by_username(void *ud, tg_str_t name, json_t **consumer)
{
    return read_json(ud, by_username, &name, consumer);
}

void tg_identity_store_init(tg_identity_store_t *s, tg_store_reader_t *reader)
{
    s->source = (tg_identity_source_t){
        .credential_by_digest = credential_by_digest,
        .consumer_by_id = consumer_by_id,
        .consumer_by_username = consumer_by_username,
        .ud = s,
    };
    s->reader = reader;
    s->owned = NULL;
}

void tg_identity_store_end(tg_identity_store_t *s)
{
    json_decref(s->owned);
    s->owned = NULL;
}
