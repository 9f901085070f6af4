/*
 * request.c — the request context's functions over struct tg_req; see
 * request.h. No I/O here: the proxy moves bytes, this only records.
 */
#include "request.h"
#include "alloc.h"
#include "error.h"
#include "router.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK 4096

struct tg_req_arena_chunk {
    tg_req_arena_chunk_t *next;
    size_t used, cap;
    max_align_t data[];
};

/*
 * Every request needs at least one chunk: each thread keeps released standard chunks for the
 * next requests instead of a malloc and free per request. A worker has many requests in
 * flight at once, so one spare chunk is not enough: up to SPARE_MAX are kept (128 KiB per
 * thread at most), freed when the thread exits.
 */
#define SPARE_MAX 32

struct spares {
    tg_req_arena_chunk_t *head; /* linked through ->next */
    unsigned n;
};

static _Thread_local struct spares *spares;
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static bool spare_ok;

static void free_spares(void *p)
{
    struct spares *sp = p;
    while (sp->head) {
        tg_req_arena_chunk_t *next = sp->head->next;
        free(sp->head);
        sp->head = next;
    }
    free(sp);
    spares = NULL;
}

static void spare_init(void)
{
    spare_ok = pthread_key_create(&spare_key, free_spares) == 0;
}

/* This thread's spare list, registered for freeing at thread exit; NULL when it cannot be. */
static struct spares *thread_spares(void)
{
    if (spares) return spares;
    pthread_once(&spare_once, spare_init);
    if (!spare_ok) return NULL;
    struct spares *sp = tg_calloc(1, sizeof(*sp));
    if (pthread_setspecific(spare_key, sp) != 0) {
        free(sp);
        return NULL;
    }
    return spares = sp;
}

static void put_spare(tg_req_arena_chunk_t *c)
{
    struct spares *sp = c->cap == ARENA_CHUNK ? thread_spares() : NULL;
    if (!sp || sp->n >= SPARE_MAX) {
        free(c);
        return;
    }
    c->next = sp->head;
    sp->head = c;
    sp->n++;
}

static tg_req_arena_chunk_t *new_chunk(size_t cap)
{
    if (cap == ARENA_CHUNK && spares && spares->head) {
        tg_req_arena_chunk_t *c = spares->head;
        spares->head = c->next;
        spares->n--;
        return c;
    }
    tg_req_arena_chunk_t *c = tg_malloc(sizeof(*c) + cap);
    c->cap = cap;
    return c;
}

void tg_req_init(tg_req_t *r)
{
    memset(r, 0, sizeof(*r));
}

void tg_req_release(tg_req_t *r)
{
    while (r->arena) {
        tg_req_arena_chunk_t *next = r->arena->next;
        put_spare(r->arena);
        r->arena = next;
    }
    free(r->exit_body);
    r->exit_body = NULL;
    r->upstream_edits = r->response_headers = NULL; /* arena memory */
    r->norm_path = TG_STR_NULL;                      /* may be arena memory too */
    r->nupstream_edits = r->nresponse_headers = 0;
    r->cap_upstream_edits = r->cap_response_headers = 0;
}

void *tg_req_alloc(tg_req_t *r, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    tg_req_arena_chunk_t *c = r->arena;
    if (!c || c->cap - c->used < n) {
        c = new_chunk(n > ARENA_CHUNK ? n : ARENA_CHUNK);
        c->used = 0;
        c->next = r->arena;
        r->arena = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static tg_str_t copy_str(tg_req_t *r, tg_str_t s)
{
    if (!s.p) return s;
    char *p = tg_req_alloc(r, s.len + 1);
    memcpy(p, s.p, s.len);
    p[s.len] = '\0';
    return (tg_str_t){p, s.len};
}

tg_str_t tg_req_method(const tg_req_t *r) { return r->method; }
tg_str_t tg_req_path(const tg_req_t *r) { return r->path; }
tg_str_t tg_req_query(const tg_req_t *r) { return r->query; }

tg_str_t tg_req_normalized_path(tg_req_t *r)
{
    if (!r->norm_path.p) {
        char *buf = tg_req_alloc(r, r->path.len + 1); /* never longer than its input */
        size_t n = 0;
        if (r->path.len) tg_router_normalize_path(r->path, buf, &n);
        buf[n] = '\0';
        r->norm_path = (tg_str_t){buf, n};
    }
    return r->norm_path;
}
tg_str_t tg_req_client_ip(const tg_req_t *r) { return r->client_ip; }
int64_t tg_req_start_ms(const tg_req_t *r) { return r->start_ms; }
const json_t *tg_req_route(const tg_req_t *r) { return r->route; }
const json_t *tg_req_service(const tg_req_t *r) { return r->service; }
const json_t *tg_req_consumer(const tg_req_t *r) { return r->identity_ref ? NULL : r->consumer; }
const json_t *tg_req_credential(const tg_req_t *r)
{
    return r->identity_ref ? NULL : r->credential;
}

/* ASCII lower case of a byte, '_' read as '-': inline, since tolower() is a locale-aware
 * call per byte and this runs for every header of every request a plugin looks into. */
static inline unsigned char fold(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return (unsigned char)(c | 0x20);
    return c == '_' ? '-' : c;
}

/* Header names compare case-insensitively with '_' and '-' equivalent, as Kong's do. */
static bool name_eq(tg_str_t have, const char *want, size_t n)
{
    if (have.len != n) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)have.p[i], b = (unsigned char)want[i];
        if (a != b && fold(a) != fold(b)) return false;
    }
    return true;
}

bool tg_req_header(const tg_req_t *r, const char *name, size_t i, tg_str_t *value)
{
    size_t n = strlen(name);
    for (size_t k = 0; k < r->nheaders; k++) {
        if (!name_eq(r->headers[k].name, name, n)) continue;
        if (i-- == 0) {
            *value = r->headers[k].value;
            return true;
        }
    }
    return false;
}

size_t tg_req_header_count(const tg_req_t *r, const char *name)
{
    size_t n = 0, len = strlen(name);
    for (size_t k = 0; k < r->nheaders; k++) n += name_eq(r->headers[k].name, name, len);
    return n;
}

int tg_req_body(tg_req_t *r, tg_str_t *body)
{
    switch (r->body_state) {
    case TG_REQ_BODY_READY: *body = r->body; return 0;
    case TG_REQ_BODY_TOOBIG: return -TG_ETOOBIG;
    default: r->body_state = TG_REQ_BODY_WANTED; return -TG_EAGAIN;
    }
}

void tg_req_set_body(tg_req_t *r, tg_str_t body, tg_str_t content_type)
{
    r->body_replaced = true;
    r->new_body = copy_str(r, body);
    r->new_content_type = copy_str(r, content_type);
}

void tg_req_set_query(tg_req_t *r, tg_str_t query)
{
    r->query_replaced = true;
    r->new_query = copy_str(r, query);
}

/* Edits live in the arena like their strings: a full array moves to a larger arena block. */
static tg_req_header_edit_t *next_edit(tg_req_t *r, tg_req_header_edit_t **arr, size_t *n,
                                       size_t *cap)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        tg_req_header_edit_t *grown = tg_req_alloc(r, ncap * sizeof(**arr));
        if (*n) memcpy(grown, *arr, *n * sizeof(**arr));
        *arr = grown;
        *cap = ncap;
    }
    return &(*arr)[(*n)++];
}

static void push_edit(tg_req_t *r, tg_req_header_edit_t **arr, size_t *n, size_t *cap, const char *name,
                      tg_str_t value)
{
    tg_req_header_edit_t *e = next_edit(r, arr, n, cap);
    size_t len = strlen(name);
    char *nm = tg_req_alloc(r, len + 1 + (value.p ? value.len + 1 : 0));
    memcpy(nm, name, len + 1);
    tg_str_t v = TG_STR_NULL;
    if (value.p) {
        char *vp = nm + len + 1;
        if (value.len) memcpy(vp, value.p, value.len);
        vp[value.len] = '\0';
        v = (tg_str_t){vp, value.len};
    }
    *e = (tg_req_header_edit_t){nm, v, len, false};
}

void tg_req_set_upstream_header(tg_req_t *r, const char *name, tg_str_t value)
{
    push_edit(r, &r->upstream_edits, &r->nupstream_edits, &r->cap_upstream_edits, name, value);
}

void tg_req_set_upstream_header_ref(tg_req_t *r, const char *name, size_t name_len,
                                    tg_str_t value, bool valid)
{
    *next_edit(r, &r->upstream_edits, &r->nupstream_edits, &r->cap_upstream_edits) =
        (tg_req_header_edit_t){name, value, name_len, valid};
}

void tg_req_add_response_header(tg_req_t *r, const char *name, tg_str_t value)
{
    push_edit(r, &r->response_headers, &r->nresponse_headers, &r->cap_response_headers, name, value);
}

void tg_req_add_response_header_ref(tg_req_t *r, const char *name, size_t name_len,
                                    tg_str_t value, bool valid)
{
    *next_edit(r, &r->response_headers, &r->nresponse_headers, &r->cap_response_headers) =
        (tg_req_header_edit_t){name, value, name_len, valid};
}

static tg_str_t entity_id(const json_t *entity)
{
    const json_t *id = json_object_get(entity, "id");
    return json_is_string(id) ? (tg_str_t){json_string_value(id), json_string_length(id)}
                              : TG_STR_NULL;
}

void tg_req_set_consumer(tg_req_t *r, const json_t *consumer, const json_t *credential)
{
    tg_req_set_identity(r, consumer, entity_id(consumer), credential, entity_id(credential));
}

void tg_req_set_identity(tg_req_t *r, const json_t *consumer, tg_str_t consumer_id,
                         const json_t *credential, tg_str_t credential_id)
{
    r->identity_ref = false;
    r->consumer = consumer;
    r->credential = credential;
    r->consumer_id = consumer ? consumer_id : TG_STR_NULL;
    r->credential_id = credential ? credential_id : TG_STR_NULL;
    r->username = TG_STR_NULL;
}

void tg_req_set_identity_ref(tg_req_t *r, tg_str_t consumer_id, tg_str_t username,
                             tg_str_t credential_id)
{
    r->identity_ref = true;
    r->consumer = NULL;
    r->credential = NULL;
    r->consumer_id = consumer_id;
    r->username = consumer_id.p ? username : TG_STR_NULL;
    r->credential_id = credential_id;
}

tg_str_t tg_req_consumer_username(const tg_req_t *r)
{
    if (r->identity_ref) return r->username;
    const json_t *name = r->consumer ? json_object_get(r->consumer, "username") : NULL;
    return json_is_string(name) ? (tg_str_t){json_string_value(name), json_string_length(name)}
                                : TG_STR_NULL;
}

bool tg_req_authenticated(const tg_req_t *r)
{
    return r->identity_ref ? r->credential_id.p != NULL : r->credential != NULL;
}

/* The ids as set with their entities; looked up when someone assigned the entity itself. */
tg_str_t tg_req_consumer_id(const tg_req_t *r)
{
    return r->consumer_id.p || !r->consumer ? r->consumer_id : entity_id(r->consumer);
}

tg_str_t tg_req_credential_id(const tg_req_t *r)
{
    return r->credential_id.p || !r->credential ? r->credential_id : entity_id(r->credential);
}

void tg_req_exit(tg_req_t *r, int status, const char *message, const tg_http_header_t *headers,
                 size_t nheaders)
{
    json_t *body = json_pack("{s:s,s:s%}", "message", message, "request_id",
                             r->request_id.p ? r->request_id.p : "", r->request_id.len);
    free(r->exit_body);
    r->exit_body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    r->exit_status = status;
    for (size_t i = 0; i < nheaders; i++) {
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)headers[i].name.len, headers[i].name.p);
        tg_req_add_response_header(r, name, headers[i].value);
    }
}
