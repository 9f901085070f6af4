/*
 * request.h — what plugins see of a proxied request (the contract between the
 * proxy core, data-plane/proxy.c and friends, and the plugins in data-plane/plugins/<name>/).
 *
 * A tg_req_t lives for one request on one worker thread; everything a
 * plugin receives from it (views, JSON) stays valid until the request ends.
 * Plugins never block: a function that may need more input (the body)
 * returns -TG_EAGAIN and the proxy calls the phase again when it arrived.
 * Memory a plugin needs per request comes from tg_req_alloc (freed in one go
 * when the request ends).
 */
#ifndef TG_REQUEST_H
#define TG_REQUEST_H

#include "http.h"
#include "str.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tg_req tg_req_t;

/* A pending change to what goes upstream or back to the client. */
typedef struct tg_req_header_edit {
    const char *name; /* arena copy, or borrowed (the _ref setters) */
    tg_str_t value;   /* arena copy, or borrowed; .p NULL = remove */
    size_t name_len;  /* strlen(name) */
    bool valid;       /* the setter vouched: name is a token, value a field value */
} tg_req_header_edit_t;

enum tg_req_body_state {
    TG_REQ_BODY_UNREAD,  /* nobody asked for it: it streams upstream */
    TG_REQ_BODY_WANTED,  /* a plugin asked: the proxy buffers it, then re-runs the phase */
    TG_REQ_BODY_READY,   /* buffered in `body` */
    TG_REQ_BODY_TOOBIG,  /* larger than the proxy's limit */
};

typedef struct tg_req_arena_chunk tg_req_arena_chunk_t;

/*
 * The request context. The proxy fills the "input" part and owns the
 * structure; plugins use the functions below only; the proxy then reads the
 * "results" part. Tests build one by hand (tg_req_init) without a proxy.
 */
struct tg_req {
    /* input (set by the proxy, views valid for the whole request) */
    tg_str_t method, path, query; /* query.p NULL when there is no '?' */
    /* the path as the router normalised it to match (tg_router_normalize_path); .p NULL
     * when nobody normalised it yet: tg_req_normalized_path then does, once */
    tg_str_t norm_path;
    const tg_http_header_t *headers;
    size_t nheaders;
    tg_str_t client_ip;
    int64_t start_ms;
    const json_t *route, *service;
    tg_str_t request_id;
    enum tg_req_body_state body_state;
    tg_str_t body, content_type; /* body when READY */
    /* where key-auth looks up credentials and consumers (identity.h); JSON it returns lives
     * until the request ends */
    const struct tg_identity_source *identity;
    /* results (read by the proxy) */
    /* The identity, set through tg_req_set_identity (JSON) or tg_req_set_identity_ref
     * (strings; identity_ref true, consumer and credential NULL). Read it through the
     * accessors: consumer_id is set in both forms. */
    const json_t *consumer, *credential;
    tg_str_t consumer_id, credential_id; /* their "id" (borrowed from them); .p NULL: none */
    tg_str_t username;                   /* identity_ref only: the consumer's username */
    bool identity_ref;
    tg_req_header_edit_t *upstream_edits, *response_headers;
    size_t nupstream_edits, cap_upstream_edits, nresponse_headers, cap_response_headers;
    bool query_replaced, body_replaced;
    tg_str_t new_query, new_body, new_content_type;
    int exit_status; /* non-zero once a plugin answered */
    char *exit_body; /* the JSON body of that answer */
    /* per-request memory */
    tg_req_arena_chunk_t *arena;
};

/* Prepares a context (zeroed, arena empty); the caller then fills the input part. */
void tg_req_init(tg_req_t *r);
/* Frees the arena and everything allocated from it. */
void tg_req_release(tg_req_t *r);

/* ---- the client request, as received ---- */
tg_str_t tg_req_method(const tg_req_t *r);
tg_str_t tg_req_path(const tg_req_t *r);  /* raw path, before '?' */
/*
 * The path as Kong's kong.request.get_path() gives it: normalised (RFC 3986 §6 as Kong's
 * uri.lua does it: escapes of unreserved and other non-reserved bytes decoded, reserved
 * ones upper-cased, dot segments removed, "//" merged). The proxy hands over what the
 * router already computed; otherwise it is computed here once, into the arena. Security
 * decisions on the path (rate-limit keys, ACLs) must use this, never the raw path.
 */
tg_str_t tg_req_normalized_path(tg_req_t *r);
tg_str_t tg_req_query(const tg_req_t *r); /* after '?', raw; .p NULL when there is no '?' */
/* Client header i (0-based) of those named `name`, compared case-insensitively and with '_'
 * and '-' equivalent (Kong's header-table normalisation); false when there is none. */
bool tg_req_header(const tg_req_t *r, const char *name, size_t i, tg_str_t *value);
size_t tg_req_header_count(const tg_req_t *r, const char *name);
/* The client address as Kong's get_forwarded_ip would give it (no trusted proxies: the peer). */
tg_str_t tg_req_client_ip(const tg_req_t *r);
/* Per-request memory, freed when the request ends. */
void *tg_req_alloc(tg_req_t *r, size_t n);

/*
 * The request body, buffered whole (bounded by the proxy's body limit): 0 with *body set,
 * -TG_EAGAIN when it has not fully arrived (the phase is called again later), -TG_ETOOBIG
 * when it exceeds the limit. Only plugins that need it (key_in_body) call this; otherwise
 * bodies stream to the upstream untouched.
 */
int tg_req_body(tg_req_t *r, tg_str_t *body);
/* Replaces the body sent upstream (hide_credentials on a body); copied. */
void tg_req_set_body(tg_req_t *r, tg_str_t body, tg_str_t content_type);
/* Replaces the query string sent upstream (without '?'; empty removes it); copied. */
void tg_req_set_query(tg_req_t *r, tg_str_t query);

/* ---- what goes upstream ---- */
/* Sets (replacing every client copy) or, with value.p == NULL, removes a request header. */
void tg_req_set_upstream_header(tg_req_t *r, const char *name, tg_str_t value);
/*
 * The same without copying, for the request path: `name` (NUL-terminated, name_len bytes)
 * and `value` must stay valid until the request ends (literals, tg_req_alloc memory, JSON
 * the request holds). `valid` says the caller checked that name is an RFC 9110 token and
 * value a field value (tg_http_is_token, tg_http_is_field_value), so the proxy does not
 * check them again; false leaves the check to the proxy, as for the copying setters.
 */
void tg_req_set_upstream_header_ref(tg_req_t *r, const char *name, size_t name_len,
                                    tg_str_t value, bool valid);

/* ---- identity (key-auth) ---- */
/*
 * The authenticated consumer and credential (borrowed JSON from the config generation or a
 * realm cache entry that outlives the request). credential NULL = anonymous. Later plugins
 * (rate-limiting by consumer/credential, consumer-scoped configs) read them back.
 */
void tg_req_set_consumer(tg_req_t *r, const json_t *consumer, const json_t *credential);
/* The same with their "id" strings already at hand (borrowed from that JSON, so
 * NUL-terminated; .p NULL when absent): later plugins and the proxy read the ids on every
 * request, and this spares the lookups. */
void tg_req_set_identity(tg_req_t *r, const json_t *consumer, tg_str_t consumer_id,
                         const json_t *credential, tg_str_t credential_id);
/*
 * The identity as the strings everyone after key-auth reads, without JSON (identity.h
 * key_by_digest): the consumer's id and username, the credential's id. Borrowed: they must be
 * NUL-terminated and stay valid until the request ends. consumer_id .p NULL = no consumer;
 * credential_id .p NULL = anonymous. tg_req_consumer and tg_req_credential then return NULL;
 * the id and username accessors give these.
 */
void tg_req_set_identity_ref(tg_req_t *r, tg_str_t consumer_id, tg_str_t username,
                             tg_str_t credential_id);
/* The JSON of the consumer / credential; NULL when none, or when set as strings. */
const json_t *tg_req_consumer(const tg_req_t *r);
const json_t *tg_req_credential(const tg_req_t *r);
/* The "id" of the consumer / credential; .p NULL when there is none. NUL-terminated when they
 * come from JSON or tg_req_set_identity_ref. */
tg_str_t tg_req_consumer_id(const tg_req_t *r);
tg_str_t tg_req_credential_id(const tg_req_t *r);
/* The consumer's username; .p NULL when there is no consumer or it has none. */
tg_str_t tg_req_consumer_username(const tg_req_t *r);
/* True once a credential authenticated the request (either form): Kong's "already
 * authenticated" for auth plugins with anonymous set. */
bool tg_req_authenticated(const tg_req_t *r);
/* The route and service that matched (borrowed; service may be NULL). */
const json_t *tg_req_route(const tg_req_t *r);
const json_t *tg_req_service(const tg_req_t *r);

/* ---- the response ---- */
/*
 * Ends the request with a Kong error response: status, Content-Type
 * application/json; charset=utf-8, body {"message": message, "request_id": id},
 * plus the given headers (e.g. WWW-Authenticate, rate-limit headers). The
 * phase then returns TG_FLOW_DONE.
 */
void tg_req_exit(tg_req_t *r, int status, const char *message, const tg_http_header_t *headers,
                 size_t nheaders);
/* Adds a header to the response the client will get (proxied or generated); copied. */
void tg_req_add_response_header(tg_req_t *r, const char *name, tg_str_t value);
/* The same without copying; the contract of tg_req_set_upstream_header_ref. */
void tg_req_add_response_header_ref(tg_req_t *r, const char *name, size_t name_len,
                                    tg_str_t value, bool valid);

/* Unix time of the request start in milliseconds (windows, TTLs). */
int64_t tg_req_start_ms(const tg_req_t *r);

#endif
