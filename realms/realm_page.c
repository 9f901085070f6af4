/*
 * realm_page.c — see realm_page.h.
 */
#include "realm_page.h"
#include "alloc.h"
#include "crypto.h"
#include "log.h"
#include "realm_problem.h"
#include "realm_store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- WHERE builder */

int tg_realm_sql_param(tg_realm_sql_t *q, const char *value)
{
    if (q->n == TG_REALM_SQL_MAX_PARAMS)
        tg_fatal("realms: too many SQL parameters"); /* programming error */
    q->owned[q->n] = tg_strdup(value);
    q->params[q->n] = q->owned[q->n];
    return ++q->n;
}

void tg_realm_sql_and(tg_realm_sql_t *q, const char *cond_fmt, const char *value)
{
    char cond[512];
    int n = tg_realm_sql_param(q, value);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(cond, sizeof(cond), cond_fmt, n, n);
#pragma GCC diagnostic pop
    size_t len = strlen(q->where);
    snprintf(q->where + len, sizeof(q->where) - len, " AND %s", cond);
}

void tg_realm_sql_free(tg_realm_sql_t *q)
{
    for (int i = 0; i < q->n; i++)
        free(q->owned[i]);
    q->n = 0;
}

/* ---------------------------------------------------------------- cursors */

static char *cursor_encode(const char *us, const char *id)
{
    char raw[80];
    snprintf(raw, sizeof(raw), "%s.%s", us, id);
    char *b = tg_base64_encode((const uint8_t *)raw, strlen(raw));
    /* base64url without padding: a cursor goes into query strings unescaped */
    size_t n = strlen(b);
    for (size_t i = 0; i < n; i++)
        b[i] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
    while (n > 0 && b[n - 1] == '=')
        b[--n] = '\0';
    return b;
}

static bool cursor_decode(const char *c, tg_realm_page_t *pg)
{
    size_t n = strlen(c);
    if (n == 0 || n > 100) return false;
    char b64[108];
    for (size_t i = 0; i < n; i++) {
        char ch = c[i];
        if (ch == '+' || ch == '/' || ch == '=') return false;
        b64[i] = ch == '-' ? '+' : ch == '_' ? '/' : ch;
    }
    while (n % 4)
        b64[n++] = '=';
    b64[n] = '\0';
    size_t len;
    uint8_t *raw = tg_base64_decode(b64, n, &len);
    if (!raw) return false;
    char text[80];
    bool ok = len < sizeof(text);
    if (ok) {
        memcpy(text, raw, len);
        text[len] = '\0';
    }
    free(raw);
    if (!ok || memchr(text, '\0', len)) return false;
    char *dot = strchr(text, '.');
    if (!dot || dot == text || (size_t)(dot - text) >= sizeof(pg->cursor_us)) return false;
    *dot = '\0';
    errno = 0;
    char *end;
    long long us = strtoll(text, &end, 10);
    if (*end || errno || us < 0) return false;
    if (!tg_uuid_valid(tg_str_from(dot + 1))) return false;
    snprintf(pg->cursor_us, sizeof(pg->cursor_us), "%lld", us);
    snprintf(pg->cursor_id, sizeof(pg->cursor_id), "%s", dot + 1);
    pg->has_cursor = true;
    return true;
}

/* ---------------------------------------------------------------- query parsing */

static const char *const OPS[][2] = {
    {"eq", "t.%s = $%%d"},
    {"neq", "t.%s IS DISTINCT FROM $%%d"},
    {"oeq", "lower(t.%s) = lower($%%d)"},
    {"contains", "strpos(t.%s, $%%d) > 0"},
    {"ocontains", "strpos(lower(t.%s), lower($%%d)) > 0"},
};

static void add_filter(const tg_realm_filter_t *f, const char *op, const json_t *v,
                       tg_realm_sql_t *q, json_t *params, const char *field)
{
    if (!json_is_string(v)) {
        tg_realm_problem_add(params, field, "is_string", "query", NULL,
                             "must be given once, as a string");
        return;
    }
    /* Parameters are bounded (and so is the query): more filters than that are a client error. */
    if (q->n >= TG_REALM_SQL_MAX_PARAMS) {
        tg_realm_problem_add(params, field, "max_items", "query",
                             json_pack("{s:i}", "maximum", TG_REALM_SQL_MAX_PARAMS - 3),
                             "too many filters");
        return;
    }
    for (size_t i = 0; i < sizeof(OPS) / sizeof(OPS[0]); i++) {
        if (strcmp(OPS[i][0], op) != 0) continue;
        char fmt[256];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(fmt, sizeof(fmt), OPS[i][1], f->column);
#pragma GCC diagnostic pop
        tg_realm_sql_and(q, fmt, json_string_value(v));
        return;
    }
    json_t *choices = json_array();
    for (size_t i = 0; i < sizeof(OPS) / sizeof(OPS[0]); i++)
        json_array_append_new(choices, json_string(OPS[i][0]));
    tg_realm_problem_add(params, field, "enum", "query", json_pack("{s:o}", "choices", choices),
                         "unknown filter operator '%s': use eq, neq, oeq, contains or ocontains",
                         op);
}

static void parse_filters(const json_t *filter, const tg_realm_filter_t *filters, tg_realm_sql_t *q,
                          json_t *params)
{
    if (!filter) return;
    if (!json_is_object(filter)) {
        tg_realm_problem_add(params, "filter", "is_object", "query", NULL,
                             "use filter[<field>]=<value>");
        return;
    }
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)filter, name, v)
    {
        char field[160];
        snprintf(field, sizeof(field), "filter[%s]", name);
        const tg_realm_filter_t *f = filters;
        while (f->name && strcmp(f->name, name) != 0)
            f++;
        if (!f->name) {
            tg_realm_problem_add(params, field, "unknown_property", "query", NULL,
                                 "'%s' cannot be filtered on", name);
            continue;
        }
        if (!json_is_object(v)) {
            add_filter(f, "eq", v, q, params, field);
            continue;
        }
        const char *op;
        json_t *ov;
        json_object_foreach(v, op, ov)
        {
            char opfield[256];
            snprintf(opfield, sizeof(opfield), "%s[%s]", field, op);
            add_filter(f, op, ov, q, params, opfield);
        }
    }
}

static void parse_page(const json_t *page, tg_realm_page_t *pg, json_t *params)
{
    if (!page) return;
    if (!json_is_object(page)) {
        tg_realm_problem_add(params, "page", "is_object", "query", NULL,
                             "use page[size], page[after] or page[before]");
        return;
    }
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)page, name, v)
    {
        char field[160];
        snprintf(field, sizeof(field), "page[%s]", name);
        const char *s = json_string_value(v);
        if (strcmp(name, "size") == 0) {
            char *end = NULL;
            errno = 0;
            long n = s ? strtol(s, &end, 10) : 0;
            if (!s || !*s || *end || errno)
                tg_realm_problem_add(params, field, "is_integer", "query", NULL,
                                     "must be an integer");
            else if (n < 1 || n > TG_REALM_PAGE_MAX)
                tg_realm_problem_add(params, field, n < 1 ? "min" : "max", "query",
                                     json_pack("{s:i}", n < 1 ? "minimum" : "maximum",
                                               n < 1 ? 1 : TG_REALM_PAGE_MAX),
                                     "must be between 1 and %d", TG_REALM_PAGE_MAX);
            else
                pg->size = n;
        } else if (strcmp(name, "after") == 0 || strcmp(name, "before") == 0) {
            if (pg->has_cursor) {
                tg_realm_problem_add(params, field, "exclusive", "query", NULL,
                                     "page[after] and page[before] cannot be used together");
            } else if (!s || !cursor_decode(s, pg)) {
                tg_realm_problem_add(params, field, "is_cursor", "query", NULL,
                                     "is not a cursor from a previous page's meta");
            } else {
                pg->backward = name[0] == 'b';
            }
        } else {
            tg_realm_problem_add(params, field, "unknown_property", "query", NULL,
                                 "is not a page parameter (size, after, before)");
        }
    }
}

void tg_realm_page_parse(const tg_admin_req_t *r, const tg_realm_filter_t *filters,
                         tg_realm_page_t *pg, tg_realm_sql_t *q, json_t *params)
{
    memset(pg, 0, sizeof(*pg));
    pg->size = TG_REALM_PAGE_DEFAULT;
    parse_page(json_object_get(r->query, "page"), pg, params);
    parse_filters(json_object_get(r->query, "filter"), filters, q, params);
}

/* ---------------------------------------------------------------- running the list */

/* The row position (created_at, id) compared with a cursor's, as SQL on parameters $a, $b. */
#define POS_SQL                                                                                    \
    "(t.created_at, t.id) %s (timestamptz 'epoch' + ($%d::bigint / 1000000) * interval '1 second'" \
    " + ($%d::bigint %% 1000000) * interval '1 microsecond', $%d::uuid)"

static void append(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

/* Is there any row strictly after (greater) or before the position (us, id)? */
static int exists_beyond(tg_admin_req_t *r, const char *from, tg_realm_sql_t *q, const char *us,
                         const char *id, bool greater, bool *out)
{
    char sql[4096];
    snprintf(sql, sizeof(sql), "SELECT EXISTS (SELECT 1 FROM %s WHERE true%s AND ", from, q->where);
    int a = q->n + 1;
    append(sql, sizeof(sql), POS_SQL ")", greater ? ">" : "<", a, a, a + 1);
    const char *params[TG_REALM_SQL_MAX_PARAMS + 2];
    memcpy(params, q->params, sizeof(char *) * (size_t)q->n);
    params[q->n] = us;
    params[q->n + 1] = id;
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err, sql, q->n + 2, params);
    if (!res) return err.code;
    *out = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

static void url_append_encoded(char *buf, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(buf);
    for (; *s && len + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c)) {
            buf[len++] = (char)c;
        } else {
            buf[len++] = '%';
            buf[len++] = hex[c >> 4];
            buf[len++] = hex[c & 15];
        }
    }
    buf[len] = '\0';
}

/* "<path>?filter[..]=..&page[size]=N&page[<dir>]=<cursor>" */
static json_t *page_link(const tg_admin_req_t *r, const tg_realm_page_t *pg, const char *dir,
                         const char *cursor)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s?", r->path);
    const json_t *filter = json_object_get(r->query, "filter");
    const char *name, *op;
    json_t *v, *ov;
    json_object_foreach((json_t *)filter, name, v)
    {
        if (json_is_string(v)) {
            append(buf, sizeof(buf), "filter[%s]=", name);
            url_append_encoded(buf, sizeof(buf), json_string_value(v));
            append(buf, sizeof(buf), "&");
        } else {
            json_object_foreach(v, op, ov)
            {
                append(buf, sizeof(buf), "filter[%s][%s]=", name, op);
                url_append_encoded(buf, sizeof(buf), json_string_value(ov));
                append(buf, sizeof(buf), "&");
            }
        }
    }
    append(buf, sizeof(buf), "page[size]=%ld&page[%s]=%s", pg->size, dir, cursor);
    return json_string(buf);
}

static void reply_db(tg_admin_req_t *r, int code, json_t *data)
{
    json_decref(data);
    tg_realm_problem_db(r, code);
}

void tg_realm_page_reply(tg_admin_req_t *r, const char *json_expr, const char *from,
                         tg_realm_sql_t *q, const tg_realm_page_t *pg)
{
    char sql[8192];
    const char *params[TG_REALM_SQL_MAX_PARAMS + 2];
    int np = q->n;
    memcpy(params, q->params, sizeof(char *) * (size_t)q->n);
    snprintf(sql, sizeof(sql),
             "SELECT %s, (extract(epoch FROM t.created_at) * 1000000)::bigint::text, t.id FROM %s "
             "WHERE true%s",
             json_expr, from, q->where);
    if (pg->has_cursor) {
        append(sql, sizeof(sql), " AND " POS_SQL, pg->backward ? "<" : ">", np + 1, np + 1, np + 2);
        params[np++] = pg->cursor_us;
        params[np++] = pg->cursor_id;
    }
    const char *dir = pg->backward ? "DESC" : "ASC";
    append(sql, sizeof(sql), " ORDER BY t.created_at %s, t.id %s LIMIT %ld", dir, dir,
           pg->size + 1);
    tg_db_err_t err;
    PGresult *res = tg_db_exec(r->db, &err, sql, np, params);
    if (!res) {
        tg_realm_problem_db(r, err.code);
        return;
    }
    int rows = PQntuples(res);
    int n = rows > pg->size ? (int)pg->size : rows;
    bool more = rows > pg->size; /* in the scan's direction */
    json_t *data = json_array();
    for (int i = 0; i < n; i++) {
        int row = pg->backward ? n - 1 - i : i;
        json_t *doc = json_loads(PQgetvalue(res, row, 0), 0, NULL);
        if (doc) json_array_append_new(data, doc);
    }
    /* positions of the first and last items shown (or the cursor for an empty page) */
    char first_us[24], first_id[37], last_us[24], last_id[37];
    if (n > 0) {
        int fr = pg->backward ? n - 1 : 0, lr = pg->backward ? 0 : n - 1;
        snprintf(first_us, sizeof(first_us), "%s", PQgetvalue(res, fr, 1));
        snprintf(first_id, sizeof(first_id), "%s", PQgetvalue(res, fr, 2));
        snprintf(last_us, sizeof(last_us), "%s", PQgetvalue(res, lr, 1));
        snprintf(last_id, sizeof(last_id), "%s", PQgetvalue(res, lr, 2));
    } else {
        snprintf(first_us, sizeof(first_us), "%s", pg->cursor_us);
        snprintf(first_id, sizeof(first_id), "%s", pg->cursor_id);
        snprintf(last_us, sizeof(last_us), "%s", pg->cursor_us);
        snprintf(last_id, sizeof(last_id), "%s", pg->cursor_id);
    }
    PQclear(res);
    bool has_next = false, has_prev = false;
    if (!pg->backward) {
        has_next = more && n > 0;
        int rc =
            pg->has_cursor ? exists_beyond(r, from, q, first_us, first_id, false, &has_prev) : 0;
        if (rc != 0) {
            reply_db(r, rc, data);
            return;
        }
    } else {
        has_prev = more && n > 0;
        int rc = exists_beyond(r, from, q, last_us, last_id, true, &has_next);
        if (rc != 0) {
            reply_db(r, rc, data);
            return;
        }
    }
    json_t *meta = json_object();
    if (has_next) {
        char *c = cursor_encode(last_us, last_id);
        json_object_set_new(meta, "next", page_link(r, pg, "after", c));
        free(c);
    } else {
        json_object_set_new(meta, "next", json_null());
    }
    if (has_prev) {
        char *c = cursor_encode(first_us, first_id);
        json_object_set_new(meta, "previous", page_link(r, pg, "before", c));
        free(c);
    } else {
        json_object_set_new(meta, "previous", json_null());
    }
    json_object_set_new(meta, "size", json_integer(pg->size));
    tg_realm_reply(r, 200, json_pack("{s:o,s:o}", "data", data, "meta", meta));
}
