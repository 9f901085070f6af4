/*
 * admin_request.h — what an Admin API handler sees and produces; shared by
 * the admin_*.c files only. Handlers run on a worker thread.
 */
#ifndef TG_ADMIN_REQUEST_H
#define TG_ADMIN_REQUEST_H

#include "admin.h"
#include "dao.h"

#include <jansson.h>

/* The deepest endpoint is /v2/control-planes/{id}/core-entities/{es}/{x}/{children}/{c}. */
#define TG_ADMIN_MAX_SEGS 8

typedef struct tg_admin_req {
    tg_admin_t *admin;
    const tg_http_request_t *http;
    tg_db_t *db;
    tg_dao_t dao;
    char method[16];
    char *path;                       /* decoded path without trailing slash */
    char *segs[TG_ADMIN_MAX_SEGS];    /* decoded segments */
    int nsegs;
    json_t *query;                    /* query arguments (strings) */
    /* the response */
    int status;
    json_t *body;                     /* NULL = no body */
    char *text;                       /* a body as text instead (metrics, pages); owned */
    bool text_is_json;                /* ... and it is JSON */
    const char *allow;                /* methods for 405 */
    const char *content_type;         /* media type of a JSON body; NULL = application/json */
} tg_admin_req_t;

/* Sets the response; takes ownership of body. */
void tg_admin_reply(tg_admin_req_t *r, int status, json_t *body);
void tg_admin_reply_message(tg_admin_req_t *r, int status, const char *message);
/*
 * An RFC 9457 problem (application/problem+json) as Konnect's APIs answer:
 * {"status","title","type","instance","detail"} plus, when given (ownership taken),
 * "invalid_parameters": [{"field","rule","reason","source"}...].
 */
void tg_admin_reply_problem(tg_admin_req_t *r, int status, const char *detail, json_t *invalid_parameters);
/* Replies with the DAO's last failure. */
void tg_admin_reply_dao_error(tg_admin_req_t *r);
/* Query argument as a string (NULL if absent or not a string). */
const char *tg_admin_query(const tg_admin_req_t *r, const char *name);
/*
 * Decodes the request body into an argument object (JSON, urlencoded or
 * multipart; the latter two typed with schema s, using `plugin_name` for a
 * plugin's config when the arguments carry no name). Returns NULL after
 * replying with 400/415 when the body is unacceptable.
 */
json_t *tg_admin_body_args(tg_admin_req_t *r, const tg_schema_t *s, const json_t *plugin_name);

/*
 * Routes segs[first..] as a root Admin API path (entities, nested paths, /tags, /schemas,
 * /plugins/enabled) with every DAO call scoped to control plane cp_id: the same handlers,
 * the same change log, that control plane's versions. The response lands in r; list links
 * keep r->path (the full path). Returns 1 if the sub-path was an Admin API path.
 */
int tg_admin_route_scoped(tg_admin_req_t *r, int first, const char *cp_id);
/* Control planes (admin_control_planes.c): /v2/control-planes[/{id}[/core-entities/...]]. */
int tg_admin_route_control_planes(tg_admin_req_t *r);
/* Entity endpoints (admin_entities.c): returns 1 if the path was an entity path. */
int tg_admin_route_entities(tg_admin_req_t *r);
/* Informational endpoints (admin_info.c): /, /status, /schemas, /endpoints, /tags ... */
int tg_admin_route_info(tg_admin_req_t *r);
/* Clustering endpoints (admin_cluster.c): /clustering/join-tokens, /clustering/data-planes. */
int tg_admin_route_cluster(tg_admin_req_t *r);
/* status_listen endpoints: /status, /status/ready, /metrics. */
int tg_admin_route_status(tg_admin_req_t *r);
/* The list of endpoint templates, for GET /endpoints (new reference). */
json_t *tg_admin_endpoint_list(void);

#endif
