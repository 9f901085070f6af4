/*
 * rate-limiting/handler.c — Kong 3.10's rate-limiting, `local` policy (kong-compat.md §4.2).
 *
 * configure() compiles an instance into an rl_conf (process memory owned by the plugin chain
 * of one config generation, read-only afterwards). access() runs per request on a worker
 * thread: it reads the current count of every configured period from the counters shared by
 * all workers (counters.h), blocks when any period has nothing left, and otherwise counts
 * the request in every period — after the decision, as Kong does, so the first request of a
 * window reports Remaining = limit - 1 and blocked requests are not counted.
 *
 * The `redis` policy is refused at configure time until this data plane has a Redis client.
 */
#include "alloc.h"
#include "counters.h"
#include "error.h"
#include "headbuf.h"
#include "log.h"
#include "metrics.h"
#include "plugin.h"
#include "str.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "rate-limiting"
#define NULL_UUID "00000000-0000-0000-0000-000000000000"
#define ERR_UNEXPECTED "An unexpected error occurred"

enum limit_by { BY_CONSUMER, BY_CREDENTIAL, BY_IP, BY_SERVICE, BY_HEADER, BY_PATH };

static const char *const limit_by_names[] = {"consumer", "credential", "ip",
                                             "service",  "header",     "path"};

/* Header names per period, spelled as Kong sends them. */
static const tg_str_t x_limit[TG_RL_NPERIODS] = {
    TG_STR("X-RateLimit-Limit-Second"), TG_STR("X-RateLimit-Limit-Minute"),
    TG_STR("X-RateLimit-Limit-Hour"),   TG_STR("X-RateLimit-Limit-Day"),
    TG_STR("X-RateLimit-Limit-Month"),  TG_STR("X-RateLimit-Limit-Year")};
static const tg_str_t x_remaining[TG_RL_NPERIODS] = {
    TG_STR("X-RateLimit-Remaining-Second"), TG_STR("X-RateLimit-Remaining-Minute"),
    TG_STR("X-RateLimit-Remaining-Hour"),   TG_STR("X-RateLimit-Remaining-Day"),
    TG_STR("X-RateLimit-Remaining-Month"),  TG_STR("X-RateLimit-Remaining-Year")};

#define NUM_MAX 32 /* a number as %.14g prints it, NUL included */

typedef struct rl_conf {
    bool has[TG_RL_NPERIODS];
    double limit[TG_RL_NPERIODS];
    char limit_text[TG_RL_NPERIODS][NUM_MAX]; /* the limits as the headers show them */
    size_t limit_len[TG_RL_NPERIODS];
    enum limit_by by;
    char *header_name, *path;
    bool fault_tolerant, hide_client_headers;
    int error_code;
    char *error_message;
    char *route_id, *service_id; /* the instance's scope; NULL_UUID when unscoped */
    char *key_prefix;            /* "ratelimit:<route_id>:<service_id>:" */
    size_t key_prefix_len;
    uint64_t serial; /* unique per compiled instance, never reused (the handle memo's key) */
    tg_rl_counters_t *counters;
} rl_conf_t;

/* Per-request usage of one configured period. */
struct usage {
    tg_rl_counter_t counter;
    tg_rl_window_t window;
    double remaining; /* limit - count, before this request */
};

/* ------------------------------------------------------------------ numbers */

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* Decimal digits of v at p (no printf on the request path). */
static char *put_i64(char *p, int64_t v)
{
    if (v < 0) *p++ = '-';
    return p + tg_headbuf_dec(p, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
}

/* A number as Lua prints it (%.14g: 5, not 5.0) into buf (NUM_MAX bytes), NUL-terminated;
 * returns its length. Whole numbers below 1e14, which %.14g prints as plain integers, skip
 * printf. */
static size_t format_num(char *buf, double v)
{
    size_t n;
    if (v > -1e14 && v < 1e14 && v == (double)(int64_t)v && !(v == 0 && signbit(v)))
        n = (size_t)(put_i64(buf, (int64_t)v) - buf);
    else
        n = (size_t)snprintf(buf, NUM_MAX, "%.14g", v);
    buf[n] = '\0';
    return n;
}

/* ------------------------------------------------------------------ configure */

static void rl_release(void *compiled)
{
    rl_conf_t *c = compiled;
    if (!c) return;
    free(c->header_name);
    free(c->path);
    free(c->error_message);
    free(c->route_id);
    free(c->service_id);
    free(c->key_prefix);
    free(c);
}

static char *opt_str(const json_t *obj, const char *name)
{
    const char *s = json_string_value(json_object_get(obj, name));
    return s ? tg_strdup(s) : NULL;
}

/* The id of the instance's route or service, or Kong's all-zero UUID when not scoped. */
static char *scope_id(const json_t *plugin, const char *field)
{
    const char *id = json_string_value(json_object_get(json_object_get(plugin, field), "id"));
    return tg_strdup(id ? id : NULL_UUID);
}

static int parse_limit_by(const json_t *conf, enum limit_by *by)
{
    const char *s = json_string_value(json_object_get(conf, "limit_by"));
    *by = BY_CONSUMER;
    if (!s) return 0;
    for (size_t i = 0; i < sizeof(limit_by_names) / sizeof(limit_by_names[0]); i++) {
        if (strcmp(s, limit_by_names[i]) == 0) {
            *by = (enum limit_by)i;
            return 0;
        }
    }
    return -TG_EINVAL;
}

/* Only `local` exists on this data plane; `redis` needs a client we do not have yet. */
static int check_policy(const json_t *conf, char *err, size_t errlen)
{
    const char *policy = json_string_value(json_object_get(conf, "policy"));
    if (!policy || strcmp(policy, "local") == 0) return 0;
    snprintf(err, errlen, "policy '%s' is not supported by this data plane yet", policy);
    return -TG_EINVAL;
}

static int compile_limits(rl_conf_t *c, const json_t *conf, char *err, size_t errlen)
{
    bool any = false;
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        const json_t *v = json_object_get(conf, tg_rl_counters_period_name(p));
        if (!json_is_number(v)) continue;
        c->has[p] = any = true;
        c->limit[p] = json_number_value(v);
    }
    if (!any)
        snprintf(err, errlen,
                 "at least one of these fields must be non-empty: "
                 "'config.second', 'config.minute', 'config.hour', "
                 "'config.day', 'config.month', 'config.year'");
    return any ? 0 : -TG_EINVAL;
}

static int rl_configure(const json_t *plugin, void **compiled, char *err, size_t errlen)
{
    const json_t *conf = json_object_get(plugin, "config");
    rl_conf_t *c = tg_calloc(1, sizeof(*c));
    int rc = check_policy(conf, err, errlen);
    if (rc == 0) rc = compile_limits(c, conf, err, errlen);
    if (rc == 0 && (rc = parse_limit_by(conf, &c->by)) < 0)
        snprintf(err, errlen, "invalid limit_by");
    if (rc < 0) {
        rl_release(c);
        return rc;
    }
    const json_t *code = json_object_get(conf, "error_code");
    const json_t *ft = json_object_get(conf, "fault_tolerant");
    c->header_name = opt_str(conf, "header_name");
    c->path = opt_str(conf, "path");
    c->fault_tolerant = json_is_boolean(ft) ? json_is_true(ft) : true;
    c->hide_client_headers = json_is_true(json_object_get(conf, "hide_client_headers"));
    c->error_code = json_is_number(code) ? (int)json_number_value(code) : 429;
    c->error_message = opt_str(conf, "error_message");
    if (!c->error_message) c->error_message = tg_strdup("API rate limit exceeded");
    c->route_id = scope_id(plugin, "route");
    c->service_id = scope_id(plugin, "service");
    c->key_prefix = tg_asprintf("ratelimit:%s:%s:", c->route_id, c->service_id);
    c->key_prefix_len = strlen(c->key_prefix);
    for (int p = 0; p < TG_RL_NPERIODS; p++)
        if (c->has[p]) c->limit_len[p] = format_num(c->limit_text[p], c->limit[p]);
    static _Atomic uint64_t serials;
    c->serial = atomic_fetch_add(&serials, 1) + 1;
    c->counters = tg_rl_counters_shared();
    *compiled = c;
    return 0;
}

/* ------------------------------------------------------------------ identifier */

static tg_str_t entity_id(const json_t *entity)
{
    const json_t *id = json_object_get(entity, "id");
    return json_is_string(id) ? (tg_str_t){json_string_value(id), json_string_length(id)}
                              : TG_STR_NULL;
}

/* Who is counted (§4.2); whenever limit_by yields nothing, the client address. */
static tg_str_t identifier(tg_req_t *r, const rl_conf_t *c)
{
    tg_str_t id = TG_STR_NULL;
    switch (c->by) {
    case BY_CONSUMER:
        id = tg_req_consumer_id(r);
        if (!id.p) id = tg_req_credential_id(r);
        break;
    case BY_CREDENTIAL:
        id = tg_req_credential_id(r);
        break;
    case BY_SERVICE:
        id = entity_id(tg_req_service(r));
        break;
    case BY_HEADER:
        if (c->header_name && !tg_req_header(r, c->header_name, 0, &id)) id = TG_STR_NULL;
        break;
    case BY_PATH: /* Kong compares kong.request.get_path(): the normalised path, so that
                     "/a/../limited" or "/%6Cimited" cannot dodge a limit on "/limited" */
        if (c->path && tg_str_eq(tg_req_normalized_path(r), tg_str_from(c->path)))
            id = tg_req_normalized_path(r);
        break;
    case BY_IP:
        break;
    }
    if (!id.p) id = tg_req_client_ip(r);
    return id.p ? id : TG_STR("");
}

/* ------------------------------------------------------------------ usage */

/* Kong's local key: ratelimit:<route_id>:<service_id>:<identifier>:<period_start_ms>:<period> */
static tg_str_t counter_key(char *buf, const rl_conf_t *c, tg_str_t ident, tg_rl_period_t p,
                            int64_t start_ms)
{
    const char *period = tg_rl_counters_period_name(p);
    char *e = put(buf, c->key_prefix, c->key_prefix_len);
    e = put(e, ident.p, ident.len);
    *e++ = ':';
    e = put_i64(e, start_ms);
    *e++ = ':';
    e = put(e, period, strlen(period));
    *e = '\0';
    return (tg_str_t){buf, (size_t)(e - buf)};
}

/*
 * Counter handles of recent (instance, period, window, identifier) tuples, per thread: the
 * same clients come back within a window, and the key text and its keyed hash (SipHash over
 * ~120 bytes) were most of the plugin's cost. A handle is only used after
 * tg_rl_counters_peek confirmed that its slot still holds that key and window; otherwise
 * the counter is acquired again. Direct-mapped, replaced on collision; identifiers longer
 * than HANDLE_IDENT_MAX are not kept.
 */
#define HANDLE_SLOTS 128
#define HANDLE_IDENT_MAX 64

struct handle_slot {
    uint64_t serial; /* rl_conf serial; 0 = empty */
    int64_t start_ms;
    uint8_t period, len;
    char ident[HANDLE_IDENT_MAX];
    tg_rl_counter_t counter;
};

static _Thread_local struct handle_slot handles[HANDLE_SLOTS];

static struct handle_slot *handle_slot(const rl_conf_t *c, tg_rl_period_t p, int64_t start_ms,
                                       tg_str_t ident)
{
    /* a multiplicative mix, a word at a time: it only spreads slots, keys are compared */
    uint64_t h = (c->serial * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)p ^ (uint64_t)start_ms;
    size_t i = 0;
    for (; i + 8 <= ident.len; i += 8) {
        uint64_t w;
        memcpy(&w, ident.p + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    h = tg_fnv1a(ident.p + i, ident.len - i, h);
    return &handles[(h ^ (h >> 32)) & (HANDLE_SLOTS - 1)];
}

/* The counter of `ident` in period p's window `w`, and its count. */
static int counter_for(const rl_conf_t *c, tg_str_t ident, tg_rl_period_t p, tg_rl_window_t w,
                       tg_rl_counter_t *out, uint64_t *count)
{
    struct handle_slot *hs =
        ident.len <= HANDLE_IDENT_MAX ? handle_slot(c, p, w.start_ms, ident) : NULL;
    if (hs && hs->serial == c->serial && hs->period == p && hs->start_ms == w.start_ms &&
        hs->len == ident.len && memcmp(hs->ident, ident.p, ident.len) == 0 &&
        tg_rl_counters_peek(&hs->counter, count)) {
        *out = hs->counter;
        return 0;
    }
    char stack[512];
    size_t need = c->key_prefix_len + ident.len + 48;
    char *buf = need <= sizeof(stack) ? stack : tg_malloc(need);
    int rc = tg_rl_counters_acquire(c->counters, p, counter_key(buf, c, ident, p, w.start_ms), w,
                                    out);
    if (buf != stack) free(buf);
    if (rc < 0) return rc;
    *count = tg_rl_counters_get(out);
    if (hs) {
        *hs = (struct handle_slot){c->serial, w.start_ms, (uint8_t)p, (uint8_t)ident.len, {0}, *out};
        memcpy(hs->ident, ident.p, ident.len);
    }
    return 0;
}

/*
 * Reads every configured period's count. 0 with u[] filled and *blocked set, or the
 * counters' error (table full, slot busy too long).
 */
static int get_usage(tg_req_t *r, const rl_conf_t *c, int64_t now_ms, struct usage *u,
                     bool *blocked)
{
    tg_str_t ident = identifier(r, c);
    *blocked = false;
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        if (!c->has[p]) continue;
        u[p].window = tg_rl_counters_window(p, now_ms);
        uint64_t count;
        int rc = counter_for(c, ident, p, u[p].window, &u[p].counter, &count);
        if (rc < 0) return rc;
        u[p].remaining = c->limit[p] - (double)count;
        if (u[p].remaining <= 0) *blocked = true;
    }
    return 0;
}

/* ------------------------------------------------------------------ headers */

#define NUMS (TG_RL_NPERIODS + 3) /* remaining per period, RateLimit-Remaining/Reset, Retry-After */

struct headers {
    tg_http_header_t h[2 * TG_RL_NPERIODS + 4];
    size_t n;
    char (*num)[NUM_MAX]; /* NUMS values, in request memory: the request borrows them */
    size_t nnum;
};

static void add_num(struct headers *hs, tg_str_t name, double v)
{
    char *buf = hs->num[hs->nnum++];
    hs->h[hs->n++] = (tg_http_header_t){name, {buf, format_num(buf, v)}};
}

/* A limit, formatted once when the instance was compiled. */
static void add_limit(struct headers *hs, tg_str_t name, const rl_conf_t *c, int p)
{
    hs->h[hs->n++] = (tg_http_header_t){name, {c->limit_text[p], c->limit_len[p]}};
}

/*
 * X-RateLimit-Limit/Remaining-<Period> for every period, and RateLimit-* for the most
 * restrictive one: the lowest remaining, a tie going to the longer window. The remaining
 * shown counts this request unless it is blocked. Returns the RateLimit-Reset seconds.
 */
static int64_t build_headers(const rl_conf_t *c, int64_t now_ms, const struct usage *u,
                             bool blocked, struct headers *hs)
{
    int best = -1;
    double best_remaining = 0;
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        if (!c->has[p]) continue;
        double shown = fmax(0, blocked ? u[p].remaining : u[p].remaining - 1);
        add_limit(hs, x_limit[p], c, p);
        add_num(hs, x_remaining[p], shown);
        /* periods ascend in length, so `<=` hands a tie to the longer window */
        if (best < 0 || shown <= best_remaining) {
            best = p;
            best_remaining = shown;
        }
    }
    int64_t elapsed = (now_ms - u[best].window.start_ms) / 1000;
    int64_t reset = tg_rl_counters_period_seconds(best) - elapsed;
    if (reset < 1) reset = 1;
    add_limit(hs, TG_STR("RateLimit-Limit"), c, best);
    add_num(hs, TG_STR("RateLimit-Remaining"), best_remaining);
    add_num(hs, TG_STR("RateLimit-Reset"), (double)reset);
    return reset;
}

/* ------------------------------------------------------------------ access */

#define WARN_EVERY_MS 10000 /* at most one "failed to get usage" line per this, per process */

/*
 * Logs a failure at most once per WARN_EVERY_MS with how many it stands for: when the table
 * is at its maximum every new identifier fails, and a line per request would cost more than
 * the request (and flood the log). The first thread past the deadline takes it with a CAS.
 */
static void warn_failed(int64_t now_ms, int rc)
{
    static _Atomic int64_t next_ms;
    static _Atomic unsigned long unlogged;
    int64_t due = atomic_load_explicit(&next_ms, memory_order_relaxed);
    if (now_ms < due || !atomic_compare_exchange_strong(&next_ms, &due, now_ms + WARN_EVERY_MS)) {
        atomic_fetch_add_explicit(&unlogged, 1, memory_order_relaxed);
        return;
    }
    unsigned long more = atomic_exchange(&unlogged, 0);
    TG_LOGW(MOD,
            "failed to get usage: %s (%lu more since the last warning; requests not counted, "
            "see tollgate_rate_limiting_errors_total)",
            tg_strerror(rc), more);
}

static tg_flow_t store_failed(tg_req_t *r, const rl_conf_t *c, int rc)
{
    warn_failed(tg_req_start_ms(r), rc);
    if (c->fault_tolerant) { /* proxied without headers, not counted */
        tg_metrics_global_add(TG_METRICS_RL_ERRORS_PROXIED, 1);
        return TG_FLOW_CONTINUE;
    }
    tg_metrics_global_add(TG_METRICS_RL_ERRORS_REFUSED, 1);
    tg_req_exit(r, 500, ERR_UNEXPECTED, NULL, 0);
    return TG_FLOW_DONE;
}

static tg_flow_t rl_access(tg_req_t *r, void *compiled)
{
    const rl_conf_t *c = compiled;
    /* Kong's clock here is ngx.time(): whole seconds */
    int64_t now_ms = tg_req_start_ms(r) / 1000 * 1000;
    struct usage u[TG_RL_NPERIODS];
    bool blocked;
    int rc = get_usage(r, c, now_ms, u, &blocked);
    if (rc < 0) return store_failed(r, c, rc);
    struct headers hs; /* filled in order up to n: no need to zero its arrays */
    hs.n = hs.nnum = 0;
    if (!c->hide_client_headers) {
        hs.num = tg_req_alloc(r, NUMS * NUM_MAX);
        int64_t reset = build_headers(c, now_ms, u, blocked, &hs);
        if (blocked) add_num(&hs, TG_STR("Retry-After"), (double)reset);
    }
    if (blocked) {
        tg_req_exit(r, c->error_code, c->error_message, hs.h, hs.n);
        return TG_FLOW_DONE;
    }
    /* names are literals, values digits in request memory or the instance's (which the
     * request's generation keeps): borrowed, and valid as they are */
    for (size_t i = 0; i < hs.n; i++)
        tg_req_add_response_header_ref(r, hs.h[i].name.p, hs.h[i].name.len, hs.h[i].value, true);
    for (int p = 0; p < TG_RL_NPERIODS; p++)
        if (c->has[p]) tg_rl_counters_add(&u[p].counter, 1);
    return TG_FLOW_CONTINUE;
}

extern const tg_plugin_handler_t tg_plugin_handler_rate_limiting;
const tg_plugin_handler_t tg_plugin_handler_rate_limiting = {
    .name = "rate-limiting",
    .configure = rl_configure,
    .release = rl_release,
    .access = rl_access,
};
