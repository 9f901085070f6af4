/*
 * proxy_reply.c — responses the gateway writes itself: no route, plugin answers, bad
 * requests, upstream failures. Bodies follow Kong's templates (kong/tools/http.lua,
 * kong/error_handlers.lua), picked by the Accept header the way Kong's get_response_type
 * does; headers carry X-Tollgate-Response-Latency, Server and the request id (DESIGN §8).
 */
#include "proxy_int.h"
#include "alloc.h"
#include "error.h"
#include "log.h"
#include "proxy_plugins.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum rtype { RT_JSON, RT_HTML, RT_XML, RT_PLAIN };

static const char *const content_types[] = {
    "application/json; charset=utf-8", "text/html; charset=utf-8", "application/xml; charset=utf-8",
    "text/plain; charset=utf-8"};

static tg_str_t trim(tg_str_t s)
{
    while (s.len && (*s.p == ' ' || *s.p == '\t'))
        s.p++, s.len--;
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* Kong's get_mime_type: known types, text/any = plain, anything else = JSON. */
static enum rtype mime_of(tg_str_t media)
{
    if (tg_str_caseeq(media, TG_STR("text/html"))) return RT_HTML;
    if (tg_str_caseeq(media, TG_STR("application/xml"))) return RT_XML;
    if (tg_str_caseeq(media, TG_STR("text/plain")) || tg_str_caseeq(media, TG_STR("text/*")))
        return RT_PLAIN;
    return RT_JSON;
}

/* The q of "type; q=0.5; x=y" (1 when absent) and the media type itself. */
static double entry_q(tg_str_t e, tg_str_t *media)
{
    const char *semi = memchr(e.p, ';', e.len);
    *media = trim((tg_str_t){e.p, semi ? (size_t)(semi - e.p) : e.len});
    for (const char *p = semi; p && p < e.p + e.len;
         p = memchr(p + 1, ';', (size_t)(e.p + e.len - p - 1))) {
        tg_str_t prm = trim((tg_str_t){p + 1, (size_t)(e.p + e.len - p - 1)});
        if (prm.len >= 2 && (prm.p[0] == 'q' || prm.p[0] == 'Q') && prm.p[1] == '=') {
            char num[16];
            snprintf(num, sizeof(num), "%.*s", (int)(prm.len - 2 < 15 ? prm.len - 2 : 15),
                     prm.p + 2);
            return atof(num);
        }
    }
    return 1.0;
}

/* Kong's get_response_type: the first entry with the highest q decides. */
static enum rtype pick_type(tg_str_t accept)
{
    enum rtype t = RT_JSON;
    double best = 0;
    while (accept.len) {
        const char *comma = memchr(accept.p, ',', accept.len);
        size_t n = comma ? (size_t)(comma - accept.p) : accept.len;
        tg_str_t media;
        double q = entry_q((tg_str_t){accept.p, n}, &media);
        if (media.len && q > best) {
            best = q;
            t = mime_of(media);
        }
        accept.p += comma ? n + 1 : n;
        accept.len -= comma ? n + 1 : n;
    }
    return t;
}

/* kong.response.error uses Accept (JSON by default); nginx's error pages fall back to the
 * request's Content-Type, then error_default_type (text/plain). */
static enum rtype response_type(tg_proxy_conn_t *c, bool upstream_error)
{
    const tg_http_header_t *h = tg_http_header_find(c->head.headers, c->head.nheaders, "accept");
    if (!h && upstream_error) {
        h = tg_http_header_find(c->head.headers, c->head.nheaders, "content-type");
        if (!h) return RT_PLAIN;
    }
    return h ? pick_type(h->value) : RT_JSON;
}

static void add_escaped(tg_headbuf_t *b, const char *s, bool markup)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!markup && (ch == '"' || ch == '\\'))
            tg_headbuf_addf(b, "\\%c", ch);
        else if (!markup && ch < 0x20)
            tg_headbuf_addf(b, "\\u%04x", ch);
        else if (markup && ch == '<')
            tg_headbuf_add(b, "&lt;", 4);
        else if (markup && ch == '>')
            tg_headbuf_add(b, "&gt;", 4);
        else if (markup && ch == '&')
            tg_headbuf_add(b, "&amp;", 5);
        else
            tg_headbuf_add(b, s, 1);
    }
}

static void render(tg_headbuf_t *b, enum rtype t, const char *msg, const char *id)
{
    static const char *const pre[] = {
        "{\n  \"message\":\"",
        "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n"
        "    <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\">\n"
        "    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n"
        "    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>", ""};
    static const char *const mid[] = {"\",\n  \"request_id\":\"",
                                      ".</p>\n    <p>request_id: ", "</message>\n  <requestid>",
                                      "\nrequest_id: "};
    static const char *const post[] = {"\"\n}", "</p>\n  </body>\n</html>\n",
                                       "</requestid>\n</error>\n", "\n"};
    tg_headbuf_add(b, pre[t], strlen(pre[t]));
    add_escaped(b, msg, t == RT_HTML || t == RT_XML);
    tg_headbuf_add(b, mid[t], strlen(mid[t]));
    tg_headbuf_add(b, id, strlen(id));
    tg_headbuf_add(b, post[t], strlen(post[t]));
}

void tg_proxy_respond_error(tg_proxy_conn_t *c, int status, const char *message)
{
    enum rtype t = response_type(c, status == 502 || status == 503 || status == 504);
    tg_headbuf_t body = {0};
    render(&body, t, message, c->x.request_id);
    tg_proxy_respond(c, status, content_types[t], body.p, body.len, NULL, 0);
    tg_headbuf_free(&body);
}

void tg_proxy_respond_exit(tg_proxy_conn_t *c)
{
    tg_req_t *r = &c->x.req;
    json_t *j = r->exit_body ? json_loads(r->exit_body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "message"));
    tg_proxy_respond_error(c, r->exit_status, msg ? msg : tg_http_status_reason(r->exit_status));
    json_decref(j);
}

/* Headers of a generated response, before the body. */
static void build_head(tg_proxy_conn_t *c, tg_headbuf_t *b, int status, const char *ctype,
                       size_t body_len, const tg_http_header_t *headers, size_t n)
{
    tg_proxy_exchange_t *x = &c->x;
    tg_headbuf_addf(b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, tg_http_status_reason(status),
                    tg_worker_date(c->w));
    if (ctype) tg_headbuf_addf(b, "Content-Type: %s\r\n", ctype);
    tg_headbuf_addf(b, "Connection: %s\r\n", c->close_after ? "close" : "keep-alive");
    for (size_t i = 0; i < n; i++)
        tg_headbuf_header(b, headers[i].name, headers[i].value);
    tg_proxy_response_plugin_headers(c, b);
    tg_headbuf_addf(b,
                    "Content-Length: %zu\r\nX-Tollgate-Response-Latency: %lld\r\n"
                    "Server: tollgate/" TG_VERSION "\r\nX-Tollgate-Request-Id: %s\r\n\r\n",
                    body_len, (long long)tg_proxy_ms(x->t_start, uv_hrtime()), x->request_id);
}

void tg_proxy_respond(tg_proxy_conn_t *c, int status, const char *content_type, const char *body,
                      size_t body_len, const tg_http_header_t *headers, size_t nheaders)
{
    tg_proxy_exchange_t *x = &c->x;
    x->status = status;
    if (!x->req_done) c->close_after = true; /* the unread body is in the way of the next request */
    tg_deadline_clear(&c->up_timer);
    c->state = TG_PX_RESPOND;
    tg_proxy_plugins_response(c, status);
    tg_headbuf_t b = {0};
    build_head(c, &b, status, content_type, body_len, headers, nheaders);
    bool head_only = tg_str_eq_lit(c->head.method, "HEAD");
    uv_buf_t bufs[2] = {uv_buf_init(b.p, (unsigned)b.len),
                        uv_buf_init((char *)body, head_only ? 0 : (unsigned)body_len)};
    x->head_sent = true;
    x->resp_done = true;
    bool ok = tg_proxy_client_write(c, bufs, 2);
    tg_headbuf_free(&b);
    if (!ok) {
        tg_proxy_abort(c, "client connection failed while writing");
        return;
    }
    tg_proxy_send_timer(c);
}
