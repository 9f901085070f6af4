/*
 * entity_codec.c — generic JSON <-> protobuf conversion of entities (entity_codec.h).
 *
 * protobuf-c describes every message at run time (field names, types, and the offsets of each
 * value and of its presence flag inside the C struct), which is what lets one walker serve every
 * entity: the schema says how a JSON value is shaped, the descriptor says where it goes.
 */
#include "entity_codec.h"

#include "alloc.h"
#include "schema.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef const ProtobufCMessageDescriptor msg_desc_t;
typedef const ProtobufCFieldDescriptor field_desc_t;

static const struct {
    const char *type;   /* entity type (lib/entities.c) */
    const char *member; /* its member of Entity's oneof */
    msg_desc_t *desc;
} kinds[] = {
    {"services", "service", &tollgate__sync__v1__service__descriptor},
    {"routes", "route", &tollgate__sync__v1__route__descriptor},
    {"consumers", "consumer", &tollgate__sync__v1__consumer__descriptor},
    {"plugins", "plugin", &tollgate__sync__v1__plugin__descriptor},
    {"keyauth_credentials", "keyauth_credential",
     &tollgate__sync__v1__keyauth_credential__descriptor},
};

/* How a schema field travels (the mapping rule of tollgate_sync.proto). */
enum carriage { SCALAR, FOREIGN, LIST, JSON_TEXT };

static enum carriage carriage_of(const tg_field_t *f)
{
    switch (f->type) {
    case TG_T_FOREIGN:
        return FOREIGN;
    case TG_T_ARRAY:
    case TG_T_SET:
        return f->elem && f->elem->type == TG_T_STRING ? LIST : JSON_TEXT;
    case TG_T_MAP:
    case TG_T_RECORD:
        return JSON_TEXT;
    default:
        return SCALAR;
    }
}

static bool travels(const tg_field_t *f)
{
    return !(f->flags & (TG_F_INPUT_ONLY | TG_F_SECRET));
}

static int kind_index(const char *type)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kinds[i].type, type) == 0) return (int)i;
    return -1;
}

const ProtobufCMessageDescriptor *tg_proto_entity_descriptor(const char *type)
{
    int k = kind_index(type);
    return k < 0 ? NULL : kinds[k].desc;
}

/* ---------------------------------------------------------------- raw slots */

static void *slot(void *msg, unsigned offset)
{
    return (char *)msg + offset;
}

static const void *cslot(const void *msg, unsigned offset)
{
    return (const char *)msg + offset;
}

static bool present(const void *msg, field_desc_t *fd)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(void *const *)cslot(msg, fd->offset) != NULL;
    default:
        return *(const protobuf_c_boolean *)cslot(msg, fd->quantifier_offset);
    }
}

static void mark_present(void *msg, field_desc_t *fd)
{
    if (fd->type != PROTOBUF_C_TYPE_STRING && fd->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *)slot(msg, fd->quantifier_offset) = 1;
}

static void *new_message(msg_desc_t *d)
{
    void *m = tg_calloc(1, d->sizeof_message);
    protobuf_c_message_init(d, m);
    return m;
}

static bool is_extra(const tg_schema_t *s, field_desc_t *fd)
{
    const tg_field_t *f = tg_schema_field(s, fd->name);
    return !f || !travels(f);
}

/* ---------------------------------------------------------------- hex */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Hex digits (either case) to bytes; a snapshot decodes a million key digests, so no sscanf. */
static bool hex_n(const char *s, size_t n, ProtobufCBinaryData *out)
{
    if (n % 2) return false;
    uint8_t *b = tg_malloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(b);
            return false;
        }
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    out->data = b;
    out->len = n / 2;
    return true;
}

static bool from_hex(const char *hex, ProtobufCBinaryData *out)
{
    return hex_n(hex, strlen(hex), out);
}

static json_t *to_hex(const ProtobufCBinaryData *b)
{
    static const char digits[] = "0123456789abcdef";
    char *s = tg_malloc(b->len * 2 + 1);
    for (size_t i = 0; i < b->len; i++) {
        s[2 * i] = digits[b->data[i] >> 4];
        s[2 * i + 1] = digits[b->data[i] & 15];
    }
    s[b->len * 2] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* ---------------------------------------------------------------- JSON -> message */

static int fail(char *err, size_t errlen, const char *type, const char *field, const char *what)
{
    snprintf(err, errlen, "%s.%s: %s", type, field, what);
    return -1;
}

static int put_scalar(void *m, field_desc_t *fd, const json_t *v, const char *type, char *err,
                      size_t errlen)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v)) return fail(err, errlen, type, fd->name, "expected a string");
        *(char **)slot(m, fd->offset) = tg_strdup(json_string_value(v));
        return 0;
    case PROTOBUF_C_TYPE_INT64:
        if (!json_is_integer(v)) return fail(err, errlen, type, fd->name, "expected an integer");
        *(int64_t *)slot(m, fd->offset) = json_integer_value(v);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v)) return fail(err, errlen, type, fd->name, "expected a number");
        *(double *)slot(m, fd->offset) = json_number_value(v);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) return fail(err, errlen, type, fd->name, "expected a boolean");
        *(protobuf_c_boolean *)slot(m, fd->offset) = json_is_true(v);
        break;
    case PROTOBUF_C_TYPE_BYTES:
        if (!json_is_string(v) || !from_hex(json_string_value(v), slot(m, fd->offset)))
            return fail(err, errlen, type, fd->name, "expected hex digits");
        break;
    default:
        return fail(err, errlen, type, fd->name, "unsupported message field type");
    }
    mark_present(m, fd);
    return 0;
}

static int put_list(void *m, field_desc_t *fd, const json_t *v, const char *type, char *err,
                    size_t errlen)
{
    if (!json_is_array(v)) return fail(err, errlen, type, fd->name, "expected an array");
    Tollgate__Sync__V1__StringList *list = new_message(fd->descriptor);
    *(void **)slot(m, fd->offset) = list;
    size_t n = json_array_size(v);
    list->values = tg_calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (!s) return fail(err, errlen, type, fd->name, "expected an array of strings");
        list->values[list->n_values++] = tg_strdup(s);
    }
    return 0;
}

static int put_field(void *m, const tg_field_t *f, field_desc_t *fd, const json_t *v,
                     const char *type, char *err, size_t errlen)
{
    if (!v || json_is_null(v)) return 0; /* absent = null */
    switch (f ? carriage_of(f) : SCALAR) {
    case FOREIGN: {
        const json_t *id = json_object_get(v, "id");
        if (!json_is_string(id)) return fail(err, errlen, type, fd->name, "expected {\"id\": ...}");
        return put_scalar(m, fd, id, type, err, errlen);
    }
    case LIST:
        return put_list(m, fd, v, type, err, errlen);
    case JSON_TEXT: {
        /* sorted keys, compact: the same text on every node for the same value */
        char *text = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) return fail(err, errlen, type, fd->name, "cannot encode");
        *(char **)slot(m, fd->offset) = tg_strdup(text);
        free(text);
        return 0;
    }
    default:
        return put_scalar(m, fd, v, type, err, errlen);
    }
}

/* Every key of the JSON must be something the message carries. */
static int check_keys(const tg_schema_t *s, msg_desc_t *d, const json_t *entity, const char *type,
                      char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)entity, key, v)
    {
        const tg_field_t *f = tg_schema_field(s, key);
        if (f && (f->flags & TG_F_SECRET))
            return fail(err, errlen, type, key, "a secret must not leave the control plane");
        if (f && (f->flags & TG_F_INPUT_ONLY)) continue;
        if (!protobuf_c_message_descriptor_get_field_by_name(d, key))
            return fail(err, errlen, type, key, "unknown field");
    }
    return 0;
}

tg_pb_entity_t *tg_proto_entity_from_json(const char *type, const json_t *entity, char *err,
                                          size_t errlen)
{
    int k = kind_index(type);
    const tg_schema_t *s = tg_schema_by_name(type);
    if (k < 0 || !s) {
        snprintf(err, errlen, "unknown entity type '%s'", type);
        return NULL;
    }
    if (!json_is_object(entity)) {
        snprintf(err, errlen, "%s: expected a JSON object", type);
        return NULL;
    }
    msg_desc_t *d = kinds[k].desc;
    tg_pb_entity_t *e = new_message(&tollgate__sync__v1__entity__descriptor);
    field_desc_t *member = protobuf_c_message_descriptor_get_field_by_name(
        &tollgate__sync__v1__entity__descriptor, kinds[k].member);
    void *m = new_message(d);
    *(void **)slot(e, member->offset) = m;
    *(uint32_t *)slot(e, member->quantifier_offset) = member->id;
    if (check_keys(s, d, entity, type, err, errlen) != 0) goto bad;
    for (unsigned i = 0; i < d->n_fields; i++) {
        field_desc_t *fd = &d->fields[i];
        const tg_field_t *f = tg_schema_field(s, fd->name);
        if (f && !travels(f)) f = NULL;
        if (put_field(m, f, fd, json_object_get(entity, fd->name), type, err, errlen) != 0)
            goto bad;
    }
    return e;
bad:
    tg_proto_entity_free(e);
    return NULL;
}

/* ---------------------------------------------------------------- JSON text -> message */

/*
 * The control plane turns every row of a snapshot into a message, and a jansson tree per row
 * was most of that work (hash tables, a malloc per value). Stored documents are flat objects
 * of strings, integers, booleans, nulls, string arrays and {"id": ...} references, which this
 * reader puts straight into the message under exactly the rules of tg_proto_entity_from_json.
 * Anything else (an escape in a string, a number that is not a plain integer, a JSON-carrying
 * field, a key the message lacks, a repeated key, a wrong type) gives up on the fast path, and
 * the document goes through jansson and from_json, which also writes the error messages: the
 * message built is the same either way (test_proto_entities checks it).
 */
typedef struct reader {
    const char *p, *end;
} reader_t;

static void skip_ws(reader_t *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static bool eat(reader_t *r, char c)
{
    skip_ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return true;
    }
    return false;
}

/* An ASCII string without escapes or control characters: [*s, *s + *n) inside the text.
 * (Non-ASCII text takes the general path, where jansson checks that it is UTF-8.) */
static bool read_plain_string(reader_t *r, const char **s, size_t *n)
{
    if (!eat(r, '"')) return false;
    const char *start = r->p;
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        if (c == '\\' || c < 0x20 || c >= 0x80) return false;
        r->p++;
    }
    if (r->p >= r->end) return false;
    *s = start;
    *n = (size_t)(r->p - start);
    r->p++;
    return true;
}

static bool read_word(reader_t *r, const char *w)
{
    size_t n = strlen(w);
    skip_ws(r);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0) return false;
    r->p += n;
    return true;
}

/* A JSON integer as jansson reads one: -?digits with no fraction or exponent, in range. */
static bool read_integer(reader_t *r, int64_t *out)
{
    skip_ws(r);
    const char *start = r->p;
    if (r->p < r->end && *r->p == '-') r->p++;
    const char *digits = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
        r->p++;
    size_t nd = (size_t)(r->p - digits);
    if (nd == 0 || nd > 18 || (nd > 1 && *digits == '0')) return false; /* 19+ digits: jansson */
    if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E')) return false;
    int64_t v = 0;
    for (const char *c = digits; c < r->p; c++)
        v = v * 10 + (*c - '0');
    *out = *start == '-' ? -v : v;
    return true;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = tg_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* One value into field fd (schema field f, NULL for extras), as put_field would. */
static bool fast_value(reader_t *r, void *m, const tg_field_t *f, field_desc_t *fd)
{
    if (read_word(r, "null")) return true; /* absent = null */
    const char *str;
    size_t n;
    switch (f ? carriage_of(f) : SCALAR) {
    case FOREIGN: /* {"id": "<string>"} and nothing else */
        if (fd->type != PROTOBUF_C_TYPE_STRING || !eat(r, '{') ||
            !read_plain_string(r, &str, &n) || n != 2 || memcmp(str, "id", 2) || !eat(r, ':') ||
            !read_plain_string(r, &str, &n) || !eat(r, '}'))
            return false;
        *(char **)slot(m, fd->offset) = dup_n(str, n);
        return true;
    case LIST: {
        if (!eat(r, '[')) return false;
        Tollgate__Sync__V1__StringList *list = new_message(fd->descriptor);
        *(void **)slot(m, fd->offset) = list; /* freed with the message on failure */
        size_t cap = 0;
        if (eat(r, ']')) return true;
        do {
            if (!read_plain_string(r, &str, &n)) return false;
            if (list->n_values == cap) {
                cap = cap ? cap * 2 : 4;
                list->values = tg_realloc(list->values, cap * sizeof(char *));
            }
            list->values[list->n_values++] = dup_n(str, n);
        } while (eat(r, ','));
        return eat(r, ']');
    }
    case JSON_TEXT:
        return false;
    default:
        break;
    }
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!read_plain_string(r, &str, &n)) return false;
        *(char **)slot(m, fd->offset) = dup_n(str, n);
        return true;
    case PROTOBUF_C_TYPE_INT64: {
        int64_t v;
        if (!read_integer(r, &v)) return false;
        *(int64_t *)slot(m, fd->offset) = v;
        break;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (read_word(r, "true"))
            *(protobuf_c_boolean *)slot(m, fd->offset) = 1;
        else if (read_word(r, "false"))
            *(protobuf_c_boolean *)slot(m, fd->offset) = 0;
        else
            return false;
        break;
    case PROTOBUF_C_TYPE_BYTES:
        if (!read_plain_string(r, &str, &n) || !hex_n(str, n, slot(m, fd->offset))) return false;
        break;
    default: /* doubles and the rest: jansson's number reading is the reference */
        return false;
    }
    mark_present(m, fd);
    return true;
}

/* The whole document on the fast path, or NULL to take the general one. */
static tg_pb_entity_t *fast_from_text(int k, const tg_schema_t *s, const char *text, size_t len)
{
    msg_desc_t *d = kinds[k].desc;
    if (d->n_fields > 64) return NULL; /* the seen-set below */
    tg_pb_entity_t *e = new_message(&tollgate__sync__v1__entity__descriptor);
    field_desc_t *member = protobuf_c_message_descriptor_get_field_by_name(
        &tollgate__sync__v1__entity__descriptor, kinds[k].member);
    void *m = new_message(d);
    *(void **)slot(e, member->offset) = m;
    *(uint32_t *)slot(e, member->quantifier_offset) = member->id;
    reader_t r = {text, text + len};
    uint64_t seen = 0;
    if (!eat(&r, '{')) goto slow;
    if (!eat(&r, '}')) {
        do {
            const char *key;
            size_t n;
            char name[64];
            if (!read_plain_string(&r, &key, &n) || n >= sizeof(name) || !eat(&r, ':')) goto slow;
            memcpy(name, key, n);
            name[n] = '\0';
            const tg_field_t *f = tg_schema_field(s, name);
            if (f && (f->flags & TG_F_SECRET)) goto slow; /* from_json refuses it, with words */
            field_desc_t *fd = protobuf_c_message_descriptor_get_field_by_name(d, name);
            if (!fd && !(f && (f->flags & TG_F_INPUT_ONLY))) goto slow; /* unknown field */
            if (!fd) { /* an input-only key, ignored as from_json does, if its value is simple */
                const char *ignored;
                size_t in;
                int64_t iv;
                if (!read_word(&r, "null") && !read_plain_string(&r, &ignored, &in) &&
                    !read_integer(&r, &iv) && !read_word(&r, "true") && !read_word(&r, "false"))
                    goto slow;
                continue;
            }
            unsigned idx = (unsigned)(fd - d->fields);
            if (seen & (UINT64_C(1) << idx)) goto slow; /* a repeated key: jansson decides */
            seen |= UINT64_C(1) << idx;
            if (f && !travels(f)) f = NULL;
            if (!fast_value(&r, m, f, fd)) goto slow;
        } while (eat(&r, ','));
        if (!eat(&r, '}')) goto slow;
    }
    skip_ws(&r);
    if (r.p != r.end) goto slow;
    return e;
slow:
    tg_proto_entity_free(e);
    return NULL;
}

tg_pb_entity_t *tg_proto_entity_from_text(const char *type, const char *text, size_t len,
                                          char *err, size_t errlen)
{
    int k = kind_index(type);
    const tg_schema_t *s = tg_schema_by_name(type);
    if (k < 0 || !s) {
        snprintf(err, errlen, "unknown entity type '%s'", type);
        return NULL;
    }
    tg_pb_entity_t *e = fast_from_text(k, s, text, len);
    if (e) return e;
    json_error_t je;
    json_t *j = json_loadb(text, len, 0, &je);
    if (!j) {
        snprintf(err, errlen, "%s: not JSON: %s", type, je.text);
        return NULL;
    }
    e = tg_proto_entity_from_json(type, j, err, errlen);
    json_decref(j);
    return e;
}

/* ---------------------------------------------------------------- message -> JSON */

static json_t *get_scalar(const void *m, field_desc_t *fd)
{
    const void *p = cslot(m, fd->offset);
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        return json_string(*(char *const *)p);
    case PROTOBUF_C_TYPE_INT64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_BYTES:
        return to_hex(p);
    default:
        return NULL;
    }
}

static json_t *get_field(const void *m, const tg_field_t *f, field_desc_t *fd)
{
    if (!present(m, fd)) return json_null();
    switch (f ? carriage_of(f) : SCALAR) {
    case FOREIGN:
        return json_pack("{s:o}", "id", get_scalar(m, fd));
    case LIST: {
        const Tollgate__Sync__V1__StringList *list = *(void *const *)cslot(m, fd->offset);
        json_t *a = json_array();
        for (size_t i = 0; i < list->n_values; i++)
            json_array_append_new(a, json_string(list->values[i]));
        return a;
    }
    case JSON_TEXT:
        return json_loads(*(char *const *)cslot(m, fd->offset), JSON_DECODE_ANY, NULL);
    default:
        return get_scalar(m, fd);
    }
}

json_t *tg_proto_entity_to_json(const char *type, const tg_pb_entity_t *e, char *err, size_t errlen)
{
    int k = kind_index(type);
    const tg_schema_t *s = tg_schema_by_name(type);
    if (k < 0 || !s || !e) {
        snprintf(err, errlen, "unknown entity type '%s'", type);
        return NULL;
    }
    field_desc_t *member = protobuf_c_message_descriptor_get_field_by_name(
        &tollgate__sync__v1__entity__descriptor, kinds[k].member);
    const void *m = *(void *const *)cslot(e, member->offset);
    if (*(const uint32_t *)cslot(e, member->quantifier_offset) != member->id || !m) {
        snprintf(err, errlen, "%s: the message carries another kind of entity", type);
        return NULL;
    }
    msg_desc_t *d = kinds[k].desc;
    json_t *out = json_object();
    for (unsigned i = 0; i < d->n_fields; i++) {
        field_desc_t *fd = &d->fields[i];
        const tg_field_t *f = tg_schema_field(s, fd->name);
        if (f && !travels(f)) f = NULL;
        if (!f && !present(m, fd)) continue; /* extras are omitted when absent */
        json_t *v = get_field(m, f, fd);
        if (!v) {
            snprintf(err, errlen, "%s.%s: malformed value", type, fd->name);
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, fd->name, v);
    }
    return out;
}

void tg_proto_entity_free(tg_pb_entity_t *e)
{
    if (e) protobuf_c_message_free_unpacked(&e->base, NULL);
}

/* ---------------------------------------------------------------- the description check */

static bool proto_type_fits(const tg_field_t *f, field_desc_t *fd)
{
    switch (carriage_of(f)) {
    case FOREIGN:
    case JSON_TEXT:
        return fd->type == PROTOBUF_C_TYPE_STRING;
    case LIST:
        return fd->type == PROTOBUF_C_TYPE_MESSAGE &&
               fd->descriptor == &tollgate__sync__v1__string_list__descriptor;
    default:
        break;
    }
    switch (f->type) {
    case TG_T_STRING:
        return fd->type == PROTOBUF_C_TYPE_STRING;
    case TG_T_INTEGER:
        return fd->type == PROTOBUF_C_TYPE_INT64;
    case TG_T_NUMBER:
        return fd->type == PROTOBUF_C_TYPE_DOUBLE;
    case TG_T_BOOLEAN:
        return fd->type == PROTOBUF_C_TYPE_BOOL;
    default:
        return false;
    }
}

int tg_proto_entity_check_description(const char *type, const char *const *extras, char *err,
                                      size_t errlen)
{
    int k = kind_index(type);
    const tg_schema_t *s = tg_schema_by_name(type);
    if (k < 0 || !s) return fail(err, errlen, type, "*", "no message for this entity");
    msg_desc_t *d = kinds[k].desc;
    for (const tg_field_t *f = s->fields; f->name; f++) {
        if (!travels(f)) continue;
        field_desc_t *fd = protobuf_c_message_descriptor_get_field_by_name(d, f->name);
        if (!fd) return fail(err, errlen, type, f->name, "missing from the message");
        if (fd->label != PROTOBUF_C_LABEL_OPTIONAL)
            return fail(err, errlen, type, f->name, "must be optional (absent = null)");
        if (!proto_type_fits(f, fd))
            return fail(err, errlen, type, f->name, "message field type does not fit");
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        if (!is_extra(s, &d->fields[i])) continue;
        bool listed = false;
        for (size_t j = 0; extras && extras[j]; j++)
            listed = listed || strcmp(extras[j], d->fields[i].name) == 0;
        if (!listed) return fail(err, errlen, type, d->fields[i].name, "not in the description");
    }
    return 0;
}

/* ---------------------------------------------------------------- canonical text, directly */

/*
 * The snapshot of a large config is mostly consumers and credentials, and the CP (for the
 * digest) and the DP (for the digest and the store) each needed the canonical JSON of every
 * one: message → jansson tree → sorted dump cost a dozen allocations per entity. The writer
 * below produces the same bytes from the message itself for the values whose JSON text is
 * unambiguous (ASCII strings, integers, booleans, bytes as hex, foreign keys, string lists);
 * anything else (non-ASCII text, reals, JSON-carrying fields) goes through the JSON form, so
 * the result is always exactly tg_config_digest_canonical(tg_proto_entity_to_json(...)).
 * Escapes follow jansson's dump without flags: '"' and '\\', the short forms of \b \f \n \r
 * \t, \u00XX for the other control characters, everything else as it is.
 */

typedef struct text {
    char *p;
    size_t len, cap;
} text_t;

static void text_put(text_t *t, const char *s, size_t n)
{
    if (t->cap - t->len < n + 1) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap - t->len < n + 1)
            cap *= 2;
        t->p = tg_realloc(t->p, cap);
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

/* A JSON string; false for a byte outside ASCII (left to jansson's UTF-8 rules). */
static bool text_string(text_t *t, const char *s)
{
    if (!s) return false;
    text_put(t, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x80) return false;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        text_put(t, run, (size_t)(s - run));
        run = s + 1;
        char esc[8];
        switch (c) {
        case '"':
            text_put(t, "\\\"", 2);
            break;
        case '\\':
            text_put(t, "\\\\", 2);
            break;
        case '\b':
            text_put(t, "\\b", 2);
            break;
        case '\f':
            text_put(t, "\\f", 2);
            break;
        case '\n':
            text_put(t, "\\n", 2);
            break;
        case '\r':
            text_put(t, "\\r", 2);
            break;
        case '\t':
            text_put(t, "\\t", 2);
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04X", c);
            text_put(t, esc, 6);
            break;
        }
    }
    text_put(t, run, (size_t)(s - run));
    text_put(t, "\"", 1);
    return true;
}

static bool text_scalar(text_t *t, const void *m, field_desc_t *fd)
{
    const void *p = cslot(m, fd->offset);
    char num[32];
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        return text_string(t, *(char *const *)p);
    case PROTOBUF_C_TYPE_INT64: {
        /* as "%lld" writes it; snprintf was a fifth of this writer's time */
        int64_t v = *(const int64_t *)p;
        uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
        char *end = num + sizeof num, *w = end;
        do {
            *--w = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0) *--w = '-';
        text_put(t, w, (size_t)(end - w));
        return true;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (*(const protobuf_c_boolean *)p)
            text_put(t, "true", 4);
        else
            text_put(t, "false", 5);
        return true;
    case PROTOBUF_C_TYPE_BYTES: {
        static const char digits[] = "0123456789abcdef";
        const ProtobufCBinaryData *b = p;
        text_put(t, "\"", 1);
        for (size_t i = 0; i < b->len; i++) {
            char h[2] = {digits[b->data[i] >> 4], digits[b->data[i] & 15]};
            text_put(t, h, 2);
        }
        text_put(t, "\"", 1);
        return true;
    }
    default:
        return false; /* reals: jansson's number formatting is its own */
    }
}

static bool text_field(text_t *t, const void *m, const tg_field_t *f, field_desc_t *fd)
{
    if (!present(m, fd)) {
        text_put(t, "null", 4);
        return true;
    }
    switch (f ? carriage_of(f) : SCALAR) {
    case FOREIGN:
        text_put(t, "{\"id\":", 6);
        if (!text_scalar(t, m, fd)) return false;
        text_put(t, "}", 1);
        return true;
    case LIST: {
        const Tollgate__Sync__V1__StringList *list = *(void *const *)cslot(m, fd->offset);
        text_put(t, "[", 1);
        for (size_t i = 0; i < list->n_values; i++) {
            if (i) text_put(t, ",", 1);
            if (!text_string(t, list->values[i])) return false;
        }
        text_put(t, "]", 1);
        return true;
    }
    case JSON_TEXT:
        return false; /* its text must be parsed and sorted again */
    default:
        return text_scalar(t, m, fd);
    }
}

/* The message of kind k inside e, NULL when e carries another kind. */
static const void *member_of(int k, const tg_pb_entity_t *e)
{
    field_desc_t *member = protobuf_c_message_descriptor_get_field_by_name(
        &tollgate__sync__v1__entity__descriptor, kinds[k].member);
    const void *m = *(void *const *)cslot(e, member->offset);
    if (*(const uint32_t *)cslot(e, member->quantifier_offset) != member->id) return NULL;
    return m;
}

/* Per kind, what the writer walks: the message's fields in key order, with their schema
 * field (NULL for extras). Computed once: the descriptors and the schema are constants. */
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))
#define PLAN_MAX 64
static struct plan {
    bool usable; /* false: more fields than PLAN_MAX, the JSON form is used */
    unsigned n;
    field_desc_t *fd[PLAN_MAX];
    const tg_field_t *f[PLAN_MAX];
} plans[NKINDS];
static pthread_once_t plans_once = PTHREAD_ONCE_INIT;

static void plans_init(void)
{
    for (size_t k = 0; k < NKINDS; k++) {
        msg_desc_t *d = kinds[k].desc;
        const tg_schema_t *s = tg_schema_by_name(kinds[k].type);
        struct plan *p = &plans[k];
        if (!s || d->n_fields > PLAN_MAX) continue;
        /* keys sorted as JSON_SORT_KEYS sorts them (byte order of the ASCII field names) */
        for (unsigned i = 0; i < d->n_fields; i++) {
            unsigned j = p->n++;
            while (j > 0 && strcmp(p->fd[j - 1]->name, d->fields[i].name) > 0) {
                p->fd[j] = p->fd[j - 1];
                p->f[j] = p->f[j - 1];
                j--;
            }
            const tg_field_t *f = tg_schema_field(s, d->fields[i].name);
            p->fd[j] = &d->fields[i];
            p->f[j] = f && travels(f) ? f : NULL;
        }
        p->usable = true;
    }
}

/* Writes the canonical text of m; false when some value needs the JSON form. */
static bool text_entity(text_t *t, const struct plan *p, const void *m)
{
    bool first = true;
    text_put(t, "{", 1);
    for (unsigned i = 0; i < p->n; i++) {
        field_desc_t *fd = p->fd[i];
        if (!p->f[i] && !present(m, fd)) continue; /* extras are omitted when absent */
        if (!first) text_put(t, ",", 1);
        first = false;
        if (!text_string(t, fd->name)) return false;
        text_put(t, ":", 1);
        if (!text_field(t, m, p->f[i], fd)) return false;
    }
    text_put(t, "}", 1);
    return true;
}

char *tg_proto_entity_canonical(const char *type, const tg_pb_entity_t *e, size_t *len, char *err,
                                size_t errlen)
{
    int k = kind_index(type);
    const tg_schema_t *s = tg_schema_by_name(type);
    const void *m = k >= 0 && s && e ? member_of(k, e) : NULL;
    pthread_once(&plans_once, plans_init);
    if (m && plans[k].usable) {
        text_t t = {0};
        if (text_entity(&t, &plans[k], m)) {
            if (len) *len = t.len;
            return t.p;
        }
        free(t.p);
    }
    /* the general path; it also words the errors */
    json_t *j = tg_proto_entity_to_json(type, e, err, errlen);
    if (!j) return NULL;
    char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    if (!text) {
        snprintf(err, errlen, "%s: cannot encode", type);
        return NULL;
    }
    if (len) *len = strlen(text);
    return text;
}
