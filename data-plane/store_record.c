/*
 * store_record.c — see store_record.h.
 */
#include "store_record.h"
#include "crypto.h"

#include <string.h>

#define DIGEST_LEN 32
#define VARINT_MAX 10

enum kind { K_UUID, K_REF, K_INT, K_STR, K_TAGS };
enum state { S_ABSENT, S_NULL, S_VALUE };

struct field {
    const char *name;
    enum kind kind;
};

/* What one type's records hold: every field but the key one, in the order they are written. */
struct shape {
    const char *key_field;
    size_t key_len; /* 16: a UUID; 32: a SHA-256 digest given as hex in the entity */
    const struct field *fields;
    size_t n;
};

static const struct field consumer_fields[] = {
    {"created_at", K_INT}, {"custom_id", K_STR}, {"tags", K_TAGS},
    {"updated_at", K_INT}, {"username", K_STR},
};
static const struct field credential_fields[] = {
    {"consumer", K_REF}, {"created_at", K_INT}, {"expires_at", K_INT},
    {"id", K_UUID},      {"tags", K_TAGS},
};

_Static_assert(sizeof consumer_fields / sizeof consumer_fields[0] == TG_RECORD_CONSUMER_NFIELDS,
               "store_record.h's consumer field enum follows consumer_fields");
_Static_assert(sizeof credential_fields / sizeof credential_fields[0] ==
                   TG_RECORD_CREDENTIAL_NFIELDS,
               "store_record.h's credential field enum follows credential_fields");
_Static_assert(TG_RECORD_CONSUMER_NFIELDS <= TG_RECORD_FIELDS_MAX &&
                   TG_RECORD_CREDENTIAL_NFIELDS <= TG_RECORD_FIELDS_MAX,
               "TG_RECORD_FIELDS_MAX holds every type's fields");

static const struct shape shapes[] = {
    [TG_RECORD_CONSUMER] = {"id", TG_RECORD_UUID_LEN, consumer_fields,
                            sizeof consumer_fields / sizeof consumer_fields[0]},
    [TG_RECORD_CREDENTIAL] = {"key_digest", DIGEST_LEN, credential_fields,
                              sizeof credential_fields / sizeof credential_fields[0]},
};

static size_t state_bytes(const struct shape *sh)
{
    return (2 * sh->n + 7) / 8;
}

/* ------------------------------------------------------------------ UUIDs, hex, id keys */

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* upper case too: it would not come back as written */
}

/* Lower-case hex of exactly 2*n digits into n bytes. */
static bool lower_hex_decode(const char *hex, size_t len, uint8_t *out, size_t n)
{
    if (len != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

bool tg_record_uuid_pack(tg_str_t s, uint8_t out[TG_RECORD_UUID_LEN])
{
    if (!s.p || s.len != TG_UUID_STR_LEN) return false;
    char hex[32];
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++) {
        bool dash_pos = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash_pos != (s.p[i] == '-')) return false;
        if (!dash_pos) hex[n++] = s.p[i];
    }
    return lower_hex_decode(hex, sizeof hex, out, TG_RECORD_UUID_LEN);
}

/* Every byte's two lower-case hex digits, so a UUID is written with one lookup per byte: this
 * runs twice per key-auth lookup. */
static const char hex_pairs[] = "000102030405060708090a0b0c0d0e0f"
                                "101112131415161718191a1b1c1d1e1f"
                                "202122232425262728292a2b2c2d2e2f"
                                "303132333435363738393a3b3c3d3e3f"
                                "404142434445464748494a4b4c4d4e4f"
                                "505152535455565758595a5b5c5d5e5f"
                                "606162636465666768696a6b6c6d6e6f"
                                "707172737475767778797a7b7c7d7e7f"
                                "808182838485868788898a8b8c8d8e8f"
                                "909192939495969798999a9b9c9d9e9f"
                                "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
                                "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                                "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
                                "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                                "e0e1e2e3e4e5e6e7e8e9eaebecedeeef"
                                "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void tg_record_uuid_unpack(const uint8_t in[TG_RECORD_UUID_LEN], char out[37])
{
    /* where each byte's two digits go: 8-4-4-4-12 with the dashes between */
    static const uint8_t at[TG_RECORD_UUID_LEN] = {0,  2,  4,  6,  9,  11, 14, 16,
                                                   19, 21, 24, 26, 28, 30, 32, 34};
    for (size_t i = 0; i < TG_RECORD_UUID_LEN; i++)
        memcpy(out + at[i], hex_pairs + 2 * in[i], 2);
    out[8] = out[13] = out[18] = out[23] = '-';
    out[36] = '\0';
}

size_t tg_record_id_key(tg_str_t id, uint8_t *out)
{
    if (id.len == 0 || id.len > 255) return 0;
    if (tg_record_uuid_pack(id, out)) return TG_RECORD_UUID_LEN;
    out[0] = 0x00;
    memcpy(out + 1, id.p, id.len);
    size_t n = id.len + 1;
    if (n == TG_RECORD_UUID_LEN) out[n++] = 0x00;
    return n;
}

bool tg_record_id_from_key(tg_str_t key, char out[256])
{
    if (key.len == TG_RECORD_UUID_LEN) {
        tg_record_uuid_unpack((const uint8_t *)key.p, out);
        return true;
    }
    if (key.len < 2 || key.p[0] != 0x00) return false;
    size_t n = key.len - 1;
    if (key.p[key.len - 1] == 0x00) n--; /* the padding: ids hold no NUL */
    if (n == 0 || n > 255 || memchr(key.p + 1, 0, n)) return false;
    memcpy(out, key.p + 1, n);
    out[n] = '\0';
    return true;
}

/* ------------------------------------------------------------------ writing */

struct writer {
    uint8_t *p;
    size_t len, cap;
    bool ok;
};

static void put_bytes(struct writer *w, const void *b, size_t n)
{
    if (!w->ok || w->cap - w->len < n) {
        w->ok = false;
        return;
    }
    memcpy(w->p + w->len, b, n);
    w->len += n;
}

static void put_varint(struct writer *w, uint64_t v)
{
    uint8_t b[VARINT_MAX];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) b[n] |= 0x80;
        n++;
    } while (v);
    put_bytes(w, b, n);
}

static void put_string(struct writer *w, const json_t *s)
{
    size_t n = json_string_length(s);
    put_varint(w, n);
    put_bytes(w, json_string_value(s), n);
}

static void put_uuid(struct writer *w, const json_t *s)
{
    uint8_t u[TG_RECORD_UUID_LEN];
    const char *v = json_string_value(s);
    if (!v || !tg_record_uuid_pack((tg_str_t){v, json_string_length(s)}, u))
        w->ok = false;
    else
        put_bytes(w, u, sizeof u);
}

/* A foreign key is {"id": uuid} and nothing else. */
static void put_ref(struct writer *w, const json_t *ref)
{
    if (!json_is_object(ref) || json_object_size(ref) != 1)
        w->ok = false;
    else
        put_uuid(w, json_object_get(ref, "id"));
}

static void put_tags(struct writer *w, const json_t *tags)
{
    size_t i;
    const json_t *t;
    if (!json_is_array(tags)) {
        w->ok = false;
        return;
    }
    put_varint(w, json_array_size(tags));
    json_array_foreach(tags, i, t)
    {
        if (!json_is_string(t)) w->ok = false;
        if (w->ok) put_string(w, t);
    }
}

/* Zigzag, so that small negative numbers stay short too. */
static void put_int(struct writer *w, const json_t *v)
{
    if (!json_is_integer(v)) {
        w->ok = false; /* a real: it would not come back as the same JSON */
        return;
    }
    uint64_t u = (uint64_t)(int64_t)json_integer_value(v);
    put_varint(w, (u << 1) ^ (0 - (u >> 63)));
}

static void put_value(struct writer *w, enum kind kind, const json_t *v)
{
    switch (kind) {
    case K_UUID: put_uuid(w, v); break;
    case K_REF: put_ref(w, v); break;
    case K_INT: put_int(w, v); break;
    case K_STR:
        if (json_is_string(v))
            put_string(w, v);
        else
            w->ok = false;
        break;
    case K_TAGS: put_tags(w, v); break;
    }
}

/* The record's key from the entity's key field, in the form decode expects it. */
static bool entity_key(const struct shape *sh, const json_t *e, uint8_t *key)
{
    const json_t *v = json_object_get(e, sh->key_field);
    const char *s = json_string_value(v);
    if (!s) return false;
    size_t n = json_string_length(v);
    if (sh->key_len == TG_RECORD_UUID_LEN) return tg_record_uuid_pack((tg_str_t){s, n}, key);
    return lower_hex_decode(s, n, key, sh->key_len);
}

/* Writes states and values; false when some field has no exact compact form. */
static bool encode_fields(const struct shape *sh, const json_t *e, struct writer *w)
{
    uint8_t states[8] = {0};
    size_t known = 1; /* the key field */
    for (size_t i = 0; i < sh->n; i++) {
        const json_t *v = json_object_get(e, sh->fields[i].name);
        enum state st = !v ? S_ABSENT : json_is_null(v) ? S_NULL : S_VALUE;
        states[i / 4] |= (uint8_t)(st << (2 * (i % 4)));
        known += v != NULL;
    }
    if (json_object_size(e) != known) return false; /* a field the shape does not know */
    uint8_t tag = TG_RECORD_TAG;
    put_bytes(w, &tag, 1);
    put_bytes(w, states, state_bytes(sh));
    for (size_t i = 0; i < sh->n && w->ok; i++) {
        const json_t *v = json_object_get(e, sh->fields[i].name);
        if (v && !json_is_null(v)) put_value(w, sh->fields[i].kind, v);
    }
    return w->ok;
}

size_t tg_record_encode(tg_record_type_t type, const json_t *e, uint8_t *buf, size_t cap)
{
    const struct shape *sh = &shapes[type];
    uint8_t key[DIGEST_LEN];
    struct writer w = {buf, 0, cap, true};
    if (!json_is_object(e) || !entity_key(sh, e, key) || !encode_fields(sh, e, &w)) return 0;
    /* Proof rather than argument: what comes back must be the entity itself. */
    json_t *back = tg_record_decode(type, (tg_str_t){(const char *)key, sh->key_len},
                                    (tg_str_t){(const char *)buf, w.len});
    bool exact = back && json_equal(back, e);
    json_decref(back);
    return exact ? w.len : 0;
}

/* ------------------------------------------------------------------ reading */

struct reader {
    const uint8_t *p, *end;
    bool ok;
};

static const uint8_t *take(struct reader *r, size_t n)
{
    if (!r->ok || (size_t)(r->end - r->p) < n) {
        r->ok = false;
        return NULL;
    }
    const uint8_t *at = r->p;
    r->p += n;
    return at;
}

static uint64_t take_varint(struct reader *r)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < VARINT_MAX; i++) {
        const uint8_t *b = take(r, 1);
        if (!b) return 0;
        v |= (uint64_t)(*b & 0x7f) << (7 * i);
        if (*b & 0x80) continue;
        /* Only the shortest form, the one put_varint writes: a final 0 after other bytes is
         * an overlong encoding, and the tenth byte holds the 64th bit alone. So a value is
         * read back from exactly one byte string, and a record re-written from what it
         * holds is the same bytes (a damaged one is refused, not read another way). */
        if ((i > 0 && *b == 0) || (i == VARINT_MAX - 1 && *b > 1)) break;
        return v;
    }
    r->ok = false;
    return 0;
}

static json_t *take_string(struct reader *r)
{
    uint64_t n = take_varint(r);
    const uint8_t *s = r->ok && n <= TG_RECORD_MAX ? take(r, (size_t)n) : NULL;
    if (!s) {
        r->ok = false;
        return NULL;
    }
    return json_stringn((const char *)s, (size_t)n);
}

static json_t *take_uuid(struct reader *r)
{
    const uint8_t *u = take(r, TG_RECORD_UUID_LEN);
    if (!u) return NULL;
    char s[37];
    tg_record_uuid_unpack(u, s);
    return json_stringn_nocheck(s, TG_UUID_STR_LEN); /* hex and dashes: no UTF-8 to check */
}

static json_t *take_tags(struct reader *r)
{
    uint64_t n = take_varint(r);
    if (n > TG_RECORD_MAX) r->ok = false; /* each tag takes at least a byte */
    json_t *tags = r->ok ? json_array() : NULL;
    for (uint64_t i = 0; r->ok && i < n; i++) {
        json_t *t = take_string(r);
        if (t) json_array_append_new(tags, t);
    }
    return tags;
}

static json_t *take_value(struct reader *r, enum kind kind)
{
    switch (kind) {
    case K_UUID: return take_uuid(r);
    case K_REF: {
        json_t *id = take_uuid(r), *ref = id ? json_object() : NULL;
        if (ref) json_object_set_new_nocheck(ref, "id", id);
        return ref;
    }
    case K_INT: {
        uint64_t u = take_varint(r);
        return r->ok ? json_integer((json_int_t)((u >> 1) ^ (0 - (u & 1)))) : NULL;
    }
    case K_STR: return take_string(r);
    case K_TAGS: return take_tags(r);
    }
    return NULL;
}

static json_t *key_value(const struct shape *sh, tg_str_t key)
{
    char s[2 * DIGEST_LEN + 1];
    if (key.len != sh->key_len) return NULL;
    if (sh->key_len == TG_RECORD_UUID_LEN) {
        tg_record_uuid_unpack((const uint8_t *)key.p, s);
        return json_stringn_nocheck(s, TG_UUID_STR_LEN);
    }
    tg_hex_encode((const uint8_t *)key.p, sh->key_len, s);
    return json_stringn_nocheck(s, 2 * sh->key_len);
}

/* Reads every field into e; false when the record is malformed. */
static bool decode_fields(const struct shape *sh, struct reader *r, json_t *e)
{
    const uint8_t *tag = take(r, 1), *states = take(r, state_bytes(sh));
    if (!tag || *tag != TG_RECORD_TAG || !states) return false;
    for (size_t i = 0; i < sh->n && r->ok; i++) {
        enum state st = (enum state)((states[i / 4] >> (2 * (i % 4))) & 3);
        json_t *v = st == S_ABSENT ? NULL : st == S_NULL ? json_null() : NULL;
        if (st == S_VALUE) v = take_value(r, sh->fields[i].kind);
        if (st > S_VALUE || (st != S_ABSENT && !v)) r->ok = false;
        if (v) json_object_set_new_nocheck(e, sh->fields[i].name, v); /* our ASCII names */
    }
    return r->ok && r->p == r->end;
}

json_t *tg_record_decode(tg_record_type_t type, tg_str_t key, tg_str_t rec)
{
    const struct shape *sh = &shapes[type];
    tg_str_t owner;
    if (type == TG_RECORD_CREDENTIAL && !tg_record_split(rec, &rec, &owner)) return NULL;
    json_t *k = key_value(sh, key);
    if (!k) return NULL;
    json_t *e = json_object();
    json_object_set_new_nocheck(e, sh->key_field, k);
    struct reader r = {(const uint8_t *)rec.p, (const uint8_t *)rec.p + rec.len, true};
    if (decode_fields(sh, &r, e)) return e;
    json_decref(e);
    return NULL;
}

/* ------------------------------------------------------------------ reading in place */

/* A string's bytes without copying them: the same checks as take_string. */
static tg_str_t view_string(struct reader *r)
{
    uint64_t n = take_varint(r);
    const uint8_t *s = r->ok && n <= TG_RECORD_MAX ? take(r, (size_t)n) : NULL;
    if (!s) {
        r->ok = false;
        return TG_STR_NULL;
    }
    return (tg_str_t){(const char *)s, (size_t)n};
}

/* One value as a view; tags are walked (to find their end and check them) but not split. */
static void view_value(struct reader *r, enum kind kind, tg_record_value_t *v)
{
    const uint8_t *at = r->p;
    switch (kind) {
    case K_UUID:
    case K_REF: {
        const uint8_t *u = take(r, TG_RECORD_UUID_LEN);
        v->s = u ? (tg_str_t){(const char *)u, TG_RECORD_UUID_LEN} : TG_STR_NULL;
        return;
    }
    case K_INT: {
        uint64_t u = take_varint(r);
        v->i = (int64_t)((u >> 1) ^ (0 - (u & 1)));
        return;
    }
    case K_STR: v->s = view_string(r); return;
    case K_TAGS: {
        uint64_t n = take_varint(r);
        if (n > TG_RECORD_MAX) r->ok = false;
        for (uint64_t i = 0; r->ok && i < n; i++)
            view_string(r);
        v->s = (tg_str_t){(const char *)at, (size_t)(r->p - at)};
        return;
    }
    }
}

bool tg_record_read(tg_record_type_t type, tg_str_t rec, tg_record_value_t *out)
{
    const struct shape *sh = &shapes[type];
    tg_str_t owner;
    if (type == TG_RECORD_CREDENTIAL && !tg_record_split(rec, &rec, &owner)) return false;
    struct reader r = {(const uint8_t *)rec.p, (const uint8_t *)rec.p + rec.len, true};
    const uint8_t *tag = take(&r, 1), *states = take(&r, state_bytes(sh));
    if (!tag || *tag != TG_RECORD_TAG || !states) return false;
    for (size_t i = 0; i < sh->n && r.ok; i++) {
        enum state st = (enum state)((states[i / 4] >> (2 * (i % 4))) & 3);
        out[i] = (tg_record_value_t){.state = (enum tg_record_state)st};
        if (st > S_VALUE) r.ok = false;
        if (st == S_VALUE) view_value(&r, sh->fields[i].kind, &out[i]);
    }
    return r.ok && r.p == r.end;
}

/* ------------------------------------------------------------------ owned credentials */

static bool is_plain_record(tg_str_t r)
{
    return r.len > 0 && (uint8_t)r.p[0] == TG_RECORD_TAG;
}

size_t tg_record_join(tg_str_t credential, tg_str_t owner, uint8_t *out, size_t cap)
{
    if (!is_plain_record(credential) || !is_plain_record(owner)) return 0;
    struct writer w = {out, 0, cap, true};
    uint8_t tag = TG_RECORD_TAG_OWNED;
    put_bytes(&w, &tag, 1);
    put_varint(&w, credential.len);
    put_bytes(&w, credential.p, credential.len);
    put_bytes(&w, owner.p, owner.len);
    return w.ok ? w.len : 0;
}

bool tg_record_split(tg_str_t value, tg_str_t *credential, tg_str_t *owner)
{
    *owner = (tg_str_t){value.p + value.len, 0};
    if (is_plain_record(value)) {
        *credential = value;
        return true;
    }
    struct reader r = {(const uint8_t *)value.p, (const uint8_t *)value.p + value.len, true};
    const uint8_t *tag = take(&r, 1);
    uint64_t n = tag && *tag == TG_RECORD_TAG_OWNED ? take_varint(&r) : 0;
    const uint8_t *c = r.ok && n <= TG_RECORD_MAX ? take(&r, (size_t)n) : NULL;
    if (!c) return false;
    *credential = (tg_str_t){(const char *)c, (size_t)n};
    *owner = (tg_str_t){(const char *)r.p, (size_t)(r.end - r.p)};
    return is_plain_record(*credential) && is_plain_record(*owner);
}

tg_str_t tg_record_credential_owner_key(tg_str_t value)
{
    tg_record_value_t f[TG_RECORD_FIELDS_MAX];
    if (!tg_record_read(TG_RECORD_CREDENTIAL, value, f) ||
        f[TG_RECORD_CREDENTIAL_CONSUMER].state != TG_RECORD_VALUE)
        return (tg_str_t){value.p, 0};
    return f[TG_RECORD_CREDENTIAL_CONSUMER].s;
}
