/*
 * proxy_int.h — state shared by proxy.c (client side), proxy_upstream.c (to the upstream)
 * and proxy_response.c (back to the client). Private to those three files.
 *
 * One tg_proxy_conn_t per client connection; it carries at most one request at a time (the
 * exchange, `x`), reset between requests. The head buffer holds the request head for the
 * whole exchange because the parsed headers and the request context point into it.
 *
 * Lifetime: the connection owns its stream, two timers (deadline.h), the exchange and the
 * upstream connection it has taken; it frees itself when its three handles have closed.
 */
#ifndef TG_PROXY_INT_H
#define TG_PROXY_INT_H

#include "deadline.h"
#include "generation.h"
#include "headbuf.h"
#include "http.h"
#include "http_chunked.h"
#include "identity_store.h"
#include "proxy.h"
#include "realm_lookup.h"
#include "request.h"
#include "resolver.h"
#include "router.h"
#include "stream.h"
#include "upstream_pool.h"
#include "worker.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define TG_PROXY_MAX_HEAD 65536
#define TG_PROXY_MAX_HEADERS 128
#define TG_PROXY_MAX_URI 8192
#define TG_PROXY_BODY_BUFFER_MAX ((size_t)10 << 20) /* bodies plugins ask for (key_in_body) */
#define TG_PROXY_HEADER_TIMEOUT_MS 10000            /* whole head, from its first byte */
#define TG_PROXY_IDLE_TIMEOUT_MS 60000              /* keep-alive between requests */
#define TG_PROXY_CLIENT_TIMEOUT_MS 60000            /* client body reads and response writes */
#define TG_PROXY_LINGER_MS 2000                     /* lingering close (nginx's lingering_time) */
#define TG_PROXY_WRITE_HIGH (1u << 20)              /* stop reading the other side above */
#define TG_PROXY_WRITE_LOW (256u << 10)             /* resume below */
#define TG_PROXY_OUT_COPY_MAX 16384                 /* body spans up to this size wait in c->out */

enum tg_proxy_state {
    TG_PX_IDLE,      /* keep-alive: waiting for the first byte of a request */
    TG_PX_HEAD,      /* reading a request head */
    TG_PX_BUFFERING, /* reading the whole body for a plugin */
    TG_PX_WAITING,   /* a plugin is parked on a realm lookup (proxy_realm.c) */
    TG_PX_UPSTREAM,  /* resolving, connecting, sending, waiting for the response */
    TG_PX_RESPONSE,  /* streaming the upstream's response */
    TG_PX_RESPOND,   /* writing a response the gateway generated */
    TG_PX_LINGER,    /* answered and closing: discarding what the client still sends */
    TG_PX_CLOSING,
};

#define TG_PROXY_REALMS_SEEN 8 /* identity_realms answers remembered per request */

enum tg_proxy_body { TG_PX_BODY_NONE, TG_PX_BODY_LENGTH, TG_PX_BODY_CHUNKED };

typedef struct tg_proxy_exchange {
    bool active;
    tg_generation_t *gen;
    tg_req_t req;
    tg_identity_store_t ids;
    /* a realm lookup this request is (or was) parked on; see proxy_realm.c */
    tg_realm_waiter_t realm_wait;
    bool realm_parked;             /* realm_wait holds the answer for realm_key/realm_digest */
    char realm_id[TG_REALM_ID_MAX + 1];
    uint8_t realm_digest[32];
    json_t *realm_answers;         /* answers handed to plugins, released with the exchange */
    /* what each realm answered this request, so a re-run after parking on a later realm
     * does not ask (and park on) an earlier one again */
    struct tg_proxy_realm_seen {
        char realm_id[TG_REALM_ID_MAX + 1];
        uint8_t digest[32];
        tg_realm_outcome_t outcome;
        json_t *answer; /* borrowed from realm_answers */
    } realm_seen[TG_PROXY_REALMS_SEEN];
    int nrealm_seen;
    enum tg_proxy_state wait_resume; /* the state to go back to when the answer comes */
    bool wait_was_reading;           /* ... and whether client reads were on */
    char request_id[33];
    uint64_t t_start, t_upstream, t_head; /* uv_hrtime ns; 0 = not reached */
    int64_t start_unix_ms;
    tg_route_match_t match;
    char *path_buf;
    int plugin_next; /* access phase: index of the next plugin to run */
    int plugins_ran; /* how many ran their access phase (for the response phase) */
    const struct tg_plugin_instance **ran; /* those instances, in the order they ran */
    /* the upstream */
    char up_host[256];
    int up_port;
    bool up_tls;
    char up_key[TG_UPSTREAM_KEY_MAX];
    unsigned connect_timeout, write_timeout, read_timeout;
    tg_resolver_wait_t rwait;
    bool resolving;
    tg_upconn_t *up;
    bool retried;
    char *up_request; /* serialized request head, kept for a retry */
    size_t up_request_len, up_request_cap;
    /* the request body, from the client */
    enum tg_proxy_body req_kind;
    uint64_t req_left; /* LENGTH: bytes still to read */
    tg_http_chunked_t req_chunked;
    bool initial_fed;   /* body bytes read with the head were consumed */
    bool req_done;      /* the whole body was read from the client */
    bool body_finished; /* ... and handed on (upstream end marker, or the plugin buffer) */
    bool req_sent;      /* ... and handed to the upstream */
    bool req_streamed;  /* body bytes went upstream that we cannot send again */
    bool client_paused; /* client reads stopped for upstream backpressure */
    bool continue_sent; /* 100 Continue */
    char *body;         /* buffered body (plugins asked for it) */
    size_t body_len, body_cap;
    char *next_bytes; /* bytes of the next request read with this body */
    size_t next_len;
    /* the response (rbuf, rheaders and up_request are kept for the next exchange) */
    char *rbuf;
    size_t rlen, rcap, rparsed;
    tg_http_header_t *rheaders;
    tg_http_response_head_t resp;
    enum tg_http_body_kind resp_kind;
    uint64_t resp_left;
    tg_http_chunked_t resp_chunked;
    bool resp_chunk_out; /* re-chunk to the client */
    bool resp_done;
    bool up_paused;      /* upstream reads stopped for client backpressure */
    bool up_extra;       /* the upstream sent bytes past its response: do not reuse */
    unsigned up_pending; /* upstream writes whose callback has not run */
    bool head_sent;      /* a response head went to the client */
    unsigned pending_writes;
    int status;
    uint64_t bytes_sent;
    const char *error; /* why the gateway answered (access log) */
} tg_proxy_exchange_t;

typedef struct tg_proxy_conn {
    tg_stream_t s; /* first: a tg_stream_t* is the connection */
    tg_worker_t *w;
    tg_worker_listener_t *l;
    struct tg_proxy_conn *prev, *next;
    enum tg_proxy_state state;
    tg_deadline_t timer;    /* client side: header, idle, body, send */
    tg_deadline_t up_timer; /* upstream side: connect, write, read */
    uv_shutdown_t shutdown_req;
    int open_handles;
    char peer_ip[64];
    char *buf; /* request head (and what followed it in the same reads) */
    size_t len, cap, parsed;
    tg_http_header_t headers[TG_PROXY_MAX_HEADERS];
    tg_http_request_head_t head;
    uint64_t head_started; /* uv_now of the first byte of this head */
    bool close_after;      /* no keep-alive after this exchange */
    bool counted_reading, counted_writing;
    /* client bytes of a proxied response not written yet: what one upstream read produced
     * (head, body, last chunk) leaves in one write; reused from request to request */
    tg_headbuf_t out;
    tg_proxy_exchange_t x;
} tg_proxy_conn_t;

/* ASCII case-insensitive equality of header names (tokens), inline: strncasecmp's
 * locale-aware call costs more than the compare on these short strings. */
static inline bool tg_proxy_caseeq(tg_str_t a, tg_str_t b)
{
    if (a.len != b.len) return false;
    for (size_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b.p[i];
        if (x == y) continue;
        if ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 'z' - 'a') return false;
    }
    return true;
}

/*
 * The next comma-separated token of a header value such as Connection's, with optional
 * whitespace (SP, HTAB) trimmed; false once the value is used up. Start with *rest = the
 * value; an empty element (",,") comes back as an empty token.
 */
static inline bool tg_proxy_next_token(tg_str_t *rest, tg_str_t *tok)
{
    if (!rest->p) return false;
    const char *comma = rest->len ? memchr(rest->p, ',', rest->len) : NULL;
    size_t n = comma ? (size_t)(comma - rest->p) : rest->len;
    *tok = (tg_str_t){rest->p, n};
    if (comma) {
        rest->p = comma + 1;
        rest->len -= n + 1;
    } else {
        rest->p = NULL;
    }
    while (tok->len && (*tok->p == ' ' || *tok->p == '\t'))
        tok->p++, tok->len--;
    while (tok->len && (tok->p[tok->len - 1] == ' ' || tok->p[tok->len - 1] == '\t'))
        tok->len--;
    return true;
}

/* ---- proxy_realm.c ---- */
/* Gives the request's identity source its realm lookup (when the worker has one). */
void tg_proxy_realm_attach(tg_proxy_conn_t *c);
/* Parks the connection until the realm answer comes (TG_FLOW_WAIT from a plugin). */
void tg_proxy_realm_park(tg_proxy_conn_t *c);
/* Ends the exchange's realm state: cancels a parked lookup, drops held answers. */
void tg_proxy_realm_end(tg_proxy_exchange_t *x);

/* ---- proxy.c ---- */
/* Runs (or resumes) the access phase, then sends the request upstream. */
void tg_proxy_run_access(tg_proxy_conn_t *c);
/* Client reads on again as they were before a pause that was not about the client. */
int tg_proxy_read_again(tg_proxy_conn_t *c);
/* Ends the exchange after the last byte was written: log, metrics, keep-alive or close. */
void tg_proxy_finish(tg_proxy_conn_t *c);
/* Tears the connection down now (client gone, upstream broken mid-response). */
void tg_proxy_abort(tg_proxy_conn_t *c, const char *why);
/* Client body bytes that arrived: for the upstream (streaming) or the buffer. */
void tg_proxy_client_body(tg_proxy_conn_t *c, const char *data, size_t len);
/* Client reads on/off (upstream backpressure), with the client timer. */
void tg_proxy_client_reading(tg_proxy_conn_t *c, bool on);
/* Arms the client timer while we wait for the client to take our writes. */
void tg_proxy_send_timer(tg_proxy_conn_t *c);
/* Milliseconds between two uv_hrtime stamps. */
int64_t tg_proxy_ms(uint64_t from, uint64_t to);
/* Adds the client-side write to the exchange's accounting; false when it failed. */
bool tg_proxy_client_write(tg_proxy_conn_t *c, const uv_buf_t *bufs, unsigned n);
/* Writes what waits in c->out (nothing to do when it is empty); false when it failed. */
bool tg_proxy_client_flush(tg_proxy_conn_t *c);

/* ---- proxy_reply.c ---- */
/* A generated error response in Kong's format (JSON, HTML, XML or text by Accept) with the
 * request id. Ends the exchange once written. */
void tg_proxy_respond_error(tg_proxy_conn_t *c, int status, const char *message);
/* A generated response with the given body; `headers` are added (e.g. Location). */
void tg_proxy_respond(tg_proxy_conn_t *c, int status, const char *content_type, const char *body,
                      size_t body_len, const tg_http_header_t *headers, size_t nheaders);
/* The answer a plugin's tg_req_exit recorded, re-rendered in Kong's format. */
void tg_proxy_respond_exit(tg_proxy_conn_t *c);

/* ---- proxy_upstream.c ---- */
/* Sends the routed request (its plugins done) to the service. */
void tg_proxy_upstream_start(tg_proxy_conn_t *c);
/* Feeds body bytes read from the client to the upstream (streaming mode). */
void tg_proxy_upstream_body(tg_proxy_conn_t *c, const char *data, size_t len);
/* Releases the upstream side of an exchange; `reuse` puts the connection back in the pool. */
void tg_proxy_upstream_release(tg_proxy_conn_t *c, bool reuse);
/* The upstream timer's callback. */
void tg_proxy_on_up_timeout(tg_deadline_t *t);
/* Restarts the upstream timer for what we wait on now (write or read timeout). */
void tg_proxy_upstream_arm(tg_proxy_conn_t *c);
/* Answers an upstream failure (502/503/504) when nothing was sent to the client yet. */
void tg_proxy_upstream_fail(tg_proxy_conn_t *c, int status, const char *message, const char *why);

/* ---- proxy_response.c ---- */
/* Upstream bytes (response head, then body). */
void tg_proxy_response_data(tg_proxy_conn_t *c, const char *data, size_t len);
/* The upstream closed or failed while we were reading its response. */
void tg_proxy_response_eof(tg_proxy_conn_t *c, int status);
/* A client write completed: resume upstream reads, finish once all is written. */
void tg_proxy_response_written(tg_proxy_conn_t *c);
/* Appends "Name: value\r\n" for every header plugins set on the response (value NULL =
 * removed: skipped). */
void tg_proxy_response_plugin_headers(tg_proxy_conn_t *c, tg_headbuf_t *b);

#endif
