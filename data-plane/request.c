/*
 * request.c — the request context's functions over struct tg_req; see
 * request.h. No I/O here: the proxy moves bytes, this only records.
 */
#include "request.h"
#include "alloc.h"
#include "error.h"

#include <ctype.h>
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
 * Every request needs at least one chunk: each thread keeps one released standard chunk for
 * the next request instead of a malloc and free per request (freed when the thread exits).
 */
static _Thread_local tg_req_arena_chunk_t *spare;
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static bool spare_ok;

static void free_spare(void *chunk)
{
    free(chunk);
}

static void spare_init(void)
{
    spare_ok = pthread_key_create(&spare_key, free_spare) == 0;
}

static void put_spare(tg_req_arena_chunk_t *c)
{
    pthread_once(&spare_once, spare_init);
    if (spare || c->cap != ARENA_CHUNK || !spare_ok || pthread_setspecific(spare_key, c) != 0) {
        free(c);
        return;
    }
    spare = c;
}

static tg_req_arena_chunk_t *new_chunk(size_t cap)
{
    if (cap == ARENA_CHUNK && spare) {
        tg_req_arena_chunk_t *c = spare;
        spare = NULL;
        pthread_setspecific(spare_key, NULL);
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
tg_str_t tg_req_client_ip(const tg_req_t *r) { return r->client_ip; }
int64_t tg_req_start_ms(const tg_req_t *r) { return r->start_ms; }
const json_t *tg_req_route(const tg_req_t *r) { return r->route; }
const json_t *tg_req_service(const tg_req_t *r) { return r->service; }
const json_t *tg_req_consumer(const tg_req_t *r) { return r->consumer; }
const json_t *tg_req_credential(const tg_req_t *r) { return r->credential; }

/* Header names compare case-insensitively with '_' and '-' equivalent, as Kong's do. */
static bool name_eq(tg_str_t have, const char *want)
{
    size_t n = strlen(want);
    if (have.len != n) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)have.p[i], b = (unsigned char)want[i];
        if (a == '_') a = '-';
        if (b == '_') b = '-';
        if (tolower(a) != tolower(b)) return false;
    }
    return true;
}

bool tg_req_header(const tg_req_t *r, const char *name, size_t i, tg_str_t *value)
{
    for (size_t k = 0; k < r->nheaders; k++) {
        if (!name_eq(r->headers[k].name, name)) continue;
        if (i-- == 0) {
            *value = r->headers[k].value;
            return true;
        }
    }
    return false;
}

size_t tg_req_header_count(const tg_req_t *r, const char *name)
{
    size_t n = 0;
    for (size_t k = 0; k < r->nheaders; k++) n += name_eq(r->headers[k].name, name);
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
static void push_edit(tg_req_t *r, tg_req_header_edit_t **arr, size_t *n, size_t *cap, const char *name,
                      tg_str_t value)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        tg_req_header_edit_t *grown = tg_req_alloc(r, ncap * sizeof(**arr));
        if (*n) memcpy(grown, *arr, *n * sizeof(**arr));
        *arr = grown;
        *cap = ncap;
    }
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
    (*arr)[(*n)++] = (tg_req_header_edit_t){nm, v, len};
}

void tg_req_set_upstream_header(tg_req_t *r, const char *name, tg_str_t value)
{
    push_edit(r, &r->upstream_edits, &r->nupstream_edits, &r->cap_upstream_edits, name, value);
}

void tg_req_add_response_header(tg_req_t *r, const char *name, tg_str_t value)
{
    push_edit(r, &r->response_headers, &r->nresponse_headers, &r->cap_response_headers, name, value);
}

void tg_req_set_consumer(tg_req_t *r, const json_t *consumer, const json_t *credential)
{
    r->consumer = consumer;
    r->credential = credential;
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
