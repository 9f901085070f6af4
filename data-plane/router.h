/*
 * router.h — the proxy's request router, Kong 3.10 `traditional_compatible` semantics.
 *
 * A router is built once per config generation from the validated route and service
 * entities (jansson arrays, shapes of lib/entities.c) and is immutable afterwards: any
 * number of worker threads call tg_router_match() on it at once, without locks.
 *
 * Ownership: the router borrows the route and service JSON objects (pointers and string
 * values); the generation that owns that JSON must outlive the router, and frees the
 * router with tg_router_free() before dropping the JSON. Matching allocates nothing: the
 * caller passes a buffer for the normalised path (request memory) and a per-worker
 * tg_router_scratch_t that holds regex match state (one per worker thread, never shared
 * by two threads at once; it is independent of the router, so it survives config swaps).
 * Only where PCRE2 has no JIT does its interpreter grow the scratch's frame memory once.
 * Every view a match returns points into the router, its JSON or the caller's path buffer.
 *
 * Matching rules (kong/router/transform.lua, atc.lua, utils.lua; docs gateway/routing/
 * traditional.md): a route matches when every attribute it sets matches — methods (exact),
 * hosts (case-insensitive; `*.example.com` suffix, `example.*` prefix; a host with a port
 * also needs that port in the Host header), paths (prefix of the normalised path,
 * case-sensitive; `~` = PCRE2 regex anchored at the path start), headers (name
 * case-insensitive with `_` = `-`, value case-insensitive, `~*` = regex), snis (https
 * only). Protocols do not filter: an https-only route hit over plain http reports the
 * route's https_redirect_status_code. Routes are tried in Kong's priority order, see
 * router.c.
 */
#ifndef TG_ROUTER_H
#define TG_ROUTER_H

#include "http.h"
#include "str.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct tg_router tg_router_t;
typedef struct tg_router_scratch tg_router_scratch_t;

/* Regex path groups reported in tg_route_match_t.captures (groups beyond are dropped). */
#define TG_ROUTER_MAX_CAPTURES 15

typedef struct tg_router_opts {
    /*
     * Honour a route's path_handling "v1" (Kong's `traditional` flavour). Off by default:
     * under traditional_compatible, Kong 3.10's default, "v1" is accepted but behaves as
     * "v0" (atc.lua always calls get_upstream_uri_v0).
     */
    bool path_handling_v1;
} tg_router_opts_t;

/*
 * Builds a router from `routes` and `services` (JSON arrays of validated entities; NULL
 * = empty). Routes without an http-family protocol (http, https, grpc, grpcs, ws, wss)
 * are left out, as are routes that set no matching attribute at all (logged). `opts` may
 * be NULL. Returns 0 with *out set, or -TG_EINVAL when a regex (a `~` path or a `~*`
 * header value) does not compile; `err` then names the route (name, else id), the field
 * and PCRE2's message. The router borrows the JSON (see above).
 */
int tg_router_build(const json_t *routes, const json_t *services, const tg_router_opts_t *opts,
                    tg_router_t **out, char *err, size_t errlen);
void tg_router_free(tg_router_t *r);

/* Number of matchers (a route splits into one per regex group and path length). */
size_t tg_router_size(const tg_router_t *r);

/*
 * Compiles the regexes of one route entity the way tg_router_build would, so the control
 * plane can refuse it up front. Returns 0 or -TG_EINVAL with a message in `err`.
 */
int tg_router_check_route(const json_t *route, char *err, size_t errlen);

/* Per-worker regex state; NULL never returned (out-of-memory aborts). */
tg_router_scratch_t *tg_router_scratch_new(void);
void tg_router_scratch_free(tg_router_scratch_t *s);

typedef struct tg_router_request {
    tg_str_t method; /* "GET" */
    tg_str_t host;   /* Host header as received, may carry ":port"; empty when absent */
    tg_str_t path;   /* request path before '?', still percent-encoded */
    tg_str_t sni;    /* TLS server name; empty on plain connections */
    bool https;      /* the client spoke TLS (or a trusted X-Forwarded-Proto said https) */
    const tg_http_header_t *headers; /* request headers, for routes with `headers` */
    size_t nheaders;
    char *path_buf; /* caller's memory of at least path.len bytes: the normalised path */
    tg_router_scratch_t *scratch; /* the calling worker's scratch */
} tg_router_request_t;

/*
 * What the proxy reads of a matched route and its service on every request, taken from the
 * entities once when the router is built. Strings are borrowed from the entities (NUL-
 * terminated, living as long as the router); .p NULL when absent.
 */
typedef struct tg_route_info {
    tg_str_t route_id, route_name, service_id, service_name;
    const char *protocol; /* service.protocol, "http" when absent */
    const char *host;     /* service.host; NULL when absent */
    int64_t port;         /* service.port; 0 when absent */
    unsigned connect_timeout, write_timeout, read_timeout; /* ms; 60000 when not > 0 */
} tg_route_info_t;

typedef struct tg_route_match {
    const json_t *route;   /* the matched route entity */
    const json_t *service; /* its service; NULL → 503 "no Service found with those values" */
    tg_str_t path;         /* the normalised request path (in path_buf) */
    tg_str_t matched_path; /* what the route's path matched (prefix or regex match); p NULL
                              when the route has no paths */
    tg_str_t captures[TG_ROUTER_MAX_CAPTURES]; /* regex groups 1..n; p NULL when unset */
    size_t ncaptures;
    int https_redirect_status; /* non-zero: https-only route reached over http, answer this */
    bool strip_path;
    bool preserve_host;
    bool path_handling_v1; /* effective (see tg_router_opts_t) */
    tg_str_t service_path; /* service.path, "/" when null */
    const tg_route_info_t *info;
} tg_route_match_t;

/*
 * Finds the route for a request. Normalises req->path into req->path_buf first (RFC 3986
 * as Kong does it, see tg_router_normalize_path). Returns 0 with *out filled, or
 * -TG_ENOTFOUND (→ 404 "no Route matched with those values"). Thread-safe for concurrent
 * callers with distinct scratches.
 */
int tg_router_match(const tg_router_t *r, const tg_router_request_t *req, tg_route_match_t *out);

/*
 * Kong's request-path normalisation (kong/tools/uri.lua normalize, merging slashes):
 * %-escapes of reserved characters are upper-cased and kept, every other escape is decoded,
 * dot segments are removed and "//" collapses to "/". `out` needs in.len bytes (the result
 * is never longer); *outlen receives its length. Returns 0.
 */
int tg_router_normalize_path(tg_str_t in, char *out, size_t *outlen);

/*
 * Writes the upstream request-target for a match: service.path joined with the request
 * path by strip_path and path_handling (kong/router/utils.lua get_upstream_uri_v0, and the
 * traditional router's v1), escaped as Kong's kong/tools/uri.lua escape does, then "?" and
 * `query` verbatim when query.p is not NULL (an empty query keeps a bare "?", as Kong
 * does). Returns 0 with *len set (buf is not NUL-terminated), or -TG_ETOOBIG when `cap`
 * is too small (3 * (path + service path) + query + 2 always suffices).
 */
int tg_router_upstream_path(const tg_route_match_t *m, tg_str_t query, char *buf, size_t cap,
                            size_t *len);

#endif
