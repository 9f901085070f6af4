/*
 * router_int.h — the router's private data, shared by router.c (building) and
 * router_match.c (matching). Not for other modules.
 *
 * Everything here is written once by tg_router_build() and read-only afterwards. Strings
 * are either borrowed from the route JSON or copied (lower-cased) into the router's arena.
 */
#ifndef TG_ROUTER_INT_H
#define TG_ROUTER_INT_H

#include "router.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdint.h>

enum rhost_kind {
    RHOST_EXACT,  /* "example.com" */
    RHOST_SUFFIX, /* "*.example.com", stored as ".example.com" */
    RHOST_PREFIX, /* "example.*", stored as "example." */
};

typedef struct rhost {
    tg_str_t name; /* lower-cased, without the port and the '*' */
    long port;     /* -1: any port */
    enum rhost_kind kind;
} rhost_t;

typedef struct rhval {
    tg_str_t lit;   /* lower-cased literal value (re == NULL) */
    pcre2_code *re; /* "~*" value: unanchored, caseless */
} rhval_t;

typedef struct rheader {
    tg_str_t name; /* lower-cased, '_' written as '-' */
    rhval_t *vals;
    size_t nvals;
} rheader_t;

typedef struct rpath {
    tg_str_t text;  /* the path as configured (regexes keep their '~') */
    pcre2_code *re; /* NULL for a prefix */
} rpath_t;

/* One route entity, shared by the matchers its paths split into. */
typedef struct rroute {
    const json_t *route;
    const json_t *service;
    tg_str_t *methods;
    size_t nmethods;
    rhost_t *hosts;
    size_t nhosts;
    bool has_wildcard;
    tg_str_t *snis; /* trailing dot removed */
    size_t nsnis;
    rheader_t *headers;
    size_t nheaders;
    rpath_t *paths; /* regexes first, then prefixes by length: groups are contiguous */
    size_t npaths;
    int redirect_status; /* https only (no http): https_redirect_status_code, else 0 */
    bool strip_path, preserve_host, v1;
    tg_str_t service_path;
    tg_route_info_t info;
} rroute_t;

/* One matcher: a route restricted to one group of its paths, in priority order. */
/*
 * The last bytes of a matcher's only plain path, kept inline so the walk over the
 * matchers rejects most of them without touching the route: prefixes tend to share
 * their beginnings ("/api/v1/"), not their ends.
 */
#define RENTRY_QUICK 8

typedef struct rentry {
    const rroute_t *rt;
    uint32_t first_path, npaths; /* the group in rt->paths (npaths 0: route has no paths) */
    uint32_t qend;               /* quick check: the prefix's length; 0 = no quick check */
    uint8_t qlen;                /* bytes in `quick`, which ends at qend */
    char quick[RENTRY_QUICK];
} rentry_t;

/* Exact-host index: lower-cased host → the matchers (in priority order) naming it. */
typedef struct hbucket {
    tg_str_t host;
    uint32_t *idx;
    size_t n, cap;
} hbucket_t;

struct tg_router {
    rentry_t *entries; /* sorted, highest priority first */
    size_t nentries;
    uint32_t *general; /* matchers not reachable through the host index, in order */
    size_t ngeneral;
    hbucket_t *buckets; /* open addressing, power-of-two size, host.p NULL = empty */
    size_t nbuckets;
    pcre2_match_context *mctx; /* match limit shared by every regex (read-only) */
    struct arena *arena;       /* everything else the router owns */
    rroute_t *routes;
    size_t nroutes;
};

struct tg_router_scratch {
    pcre2_match_data *md;
};

/*
 * Splits "name:port" as Kong's split_host_port does: only an all-digit, non-empty tail
 * after the first ':' is a port (*port, else -1); otherwise the whole string is the host.
 */
tg_str_t tg_router_split_port(tg_str_t h, long *port);

/* ASCII case-insensitive FNV-1a, shared by the index build and lookups. */
uint64_t tg_router_host_hash(tg_str_t s);
/* The index bucket for `host` (any case), or NULL. */
const hbucket_t *tg_router_bucket(const tg_router_t *r, tg_str_t host);

#endif
