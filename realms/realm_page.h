/*
 * realm_page.h — cursor pagination and list filters of the /v1/realms API.
 *
 * Lists are ordered by (created_at, id), which never changes for a row, so a cursor stays
 * valid while rows are added or deleted around it: `page[after]=C` continues after the row
 * C was made from even if that row is gone. A cursor is base64url (no padding) of
 * "<created_at in Unix microseconds>.<id>"; the client treats it as opaque.
 *
 * Query:  page[size]=N (1..1000, default 100), page[after]=C or page[before]=C,
 *         filter[<field>]=v or filter[<field>][<op>]=v with op eq|neq|oeq|contains|ocontains
 *         (o = case-insensitive).
 * Reply:  {"data":[...], "meta":{"next": <path>|null, "previous": <path>|null, "size": N}}
 *         where next/previous repeat the request's filters and page size.
 *
 * Runs on the worker thread of the request; everything returned is owned by the caller.
 */
#ifndef TG_REALM_PAGE_H
#define TG_REALM_PAGE_H

#include "admin_request.h"

#include <jansson.h>
#include <stdbool.h>

#define TG_REALM_PAGE_DEFAULT 100
#define TG_REALM_PAGE_MAX 1000
#define TG_REALM_SQL_MAX_PARAMS 16

/* A WHERE clause under construction with its text parameters. */
typedef struct tg_realm_sql {
    char where[2048];
    const char *params[TG_REALM_SQL_MAX_PARAMS];
    char *owned[TG_REALM_SQL_MAX_PARAMS];
    int n;
} tg_realm_sql_t;

/* Adds a parameter (copied) and returns its number ($n). */
int tg_realm_sql_param(tg_realm_sql_t *q, const char *value);
/* Appends " AND <cond>" where cond contains "%d" for the (single) value's placeholder. */
void tg_realm_sql_and(tg_realm_sql_t *q, const char *cond_fmt, const char *value);
void tg_realm_sql_free(tg_realm_sql_t *q);

typedef struct tg_realm_page {
    long size;
    bool backward; /* page[before] */
    bool has_cursor;
    char cursor_us[24]; /* decoded cursor: created_at in microseconds ... */
    char cursor_id[37]; /* ... and id */
} tg_realm_page_t;

/* A filterable column: the name clients use and the SQL column (alias t). */
typedef struct tg_realm_filter {
    const char *name;
    const char *column;
} tg_realm_filter_t;

/*
 * Reads page[...] and filter[...] from r's query into pg and q (filters: NULL-terminated
 * table of what may be filtered). Problems are appended to params (source "query").
 */
void tg_realm_page_parse(const tg_admin_req_t *r, const tg_realm_filter_t *filters,
                         tg_realm_page_t *pg, tg_realm_sql_t *q, json_t *params);

/*
 * Runs the list: SELECT <json_expr> FROM <from> WHERE true <q->where> in the page's order and
 * replies 200 with data and meta (links built on r's path and query), or the db problem.
 */
void tg_realm_page_reply(tg_admin_req_t *r, const char *json_expr, const char *from,
                         tg_realm_sql_t *q, const tg_realm_page_t *pg);

#endif
