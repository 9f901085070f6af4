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
#include "plugin.h"

#include <inttypes.h>
#include <math.h>
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
static const char *const x_limit[TG_RL_NPERIODS] = {
    "X-RateLimit-Limit-Second", "X-RateLimit-Limit-Minute", "X-RateLimit-Limit-Hour",
    "X-RateLimit-Limit-Day",    "X-RateLimit-Limit-Month",  "X-RateLimit-Limit-Year"};
static const char *const x_remaining[TG_RL_NPERIODS] = {
    "X-RateLimit-Remaining-Second", "X-RateLimit-Remaining-Minute", "X-RateLimit-Remaining-Hour",
    "X-RateLimit-Remaining-Day",    "X-RateLimit-Remaining-Month",  "X-RateLimit-Remaining-Year"};

typedef struct rl_conf {
    bool has[TG_RL_NPERIODS];
    double limit[TG_RL_NPERIODS];
    enum limit_by by;
    char *header_name, *path;
    bool fault_tolerant, hide_client_headers;
    int error_code;
    char *error_message;
    char *route_id, *service_id; /* the instance's scope; NULL_UUID when unscoped */
    tg_rl_counters_t *counters;
} rl_conf_t;

/* Per-request usage of one configured period. */
struct usage {
    tg_rl_counter_t counter;
    tg_rl_window_t window;
    double remaining; /* limit - count, before this request */
};

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
static tg_str_t identifier(const tg_req_t *r, const rl_conf_t *c)
{
    tg_str_t id = TG_STR_NULL;
    switch (c->by) {
    case BY_CONSUMER:
        id = entity_id(tg_req_consumer(r));
        if (!id.p) id = entity_id(tg_req_credential(r));
        break;
    case BY_CREDENTIAL:
        id = entity_id(tg_req_credential(r));
        break;
    case BY_SERVICE:
        id = entity_id(tg_req_service(r));
        break;
    case BY_HEADER:
        if (c->header_name && !tg_req_header(r, c->header_name, 0, &id)) id = TG_STR_NULL;
        break;
    case BY_PATH:
        if (c->path && tg_str_eq(tg_req_path(r), tg_str_from(c->path))) id = tg_req_path(r);
        break;
    case BY_IP:
        break;
    }
    if (!id.p) id = tg_req_client_ip(r);
    return id.p ? id : TG_STR("");
}

/* ------------------------------------------------------------------ usage */

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

/* Kong's local key: ratelimit:<route_id>:<service_id>:<identifier>:<period_start_ms>:<period> */
static tg_str_t counter_key(tg_req_t *r, const rl_conf_t *c, tg_str_t ident, tg_rl_period_t p,
                            int64_t start_ms)
{
    const char *period = tg_rl_counters_period_name(p);
    size_t route = strlen(c->route_id), service = strlen(c->service_id), plen = strlen(period);
    char *buf = tg_req_alloc(r, route + service + ident.len + plen + 48);
    char *e = put(buf, "ratelimit:", 10);
    e = put(e, c->route_id, route);
    *e++ = ':';
    e = put(e, c->service_id, service);
    *e++ = ':';
    e = put(e, ident.p, ident.len);
    *e++ = ':';
    e = put_i64(e, start_ms);
    *e++ = ':';
    e = put(e, period, plen);
    *e = '\0';
    return (tg_str_t){buf, (size_t)(e - buf)};
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
        tg_str_t key = counter_key(r, c, ident, p, u[p].window.start_ms);
        int rc = tg_rl_counters_acquire(c->counters, p, key, u[p].window, &u[p].counter);
        if (rc < 0) return rc;
        u[p].remaining = c->limit[p] - (double)tg_rl_counters_get(&u[p].counter);
        if (u[p].remaining <= 0) *blocked = true;
    }
    return 0;
}

/* ------------------------------------------------------------------ headers */

struct headers {
    tg_http_header_t h[2 * TG_RL_NPERIODS + 4];
    char num[2 * TG_RL_NPERIODS + 4][32]; /* the values: copied when they are handed on */
    size_t n;
};

/* Numbers print as Lua prints them (%.14g): 5, not 5.0. Whole numbers below 1e14, which
 * %.14g prints as plain integers, skip printf. */
static void add_num(struct headers *hs, const char *name, double v)
{
    char *buf = hs->num[hs->n];
    size_t n;
    if (v > -1e14 && v < 1e14 && v == (double)(int64_t)v && !(v == 0 && signbit(v)))
        n = (size_t)(put_i64(buf, (int64_t)v) - buf);
    else
        n = (size_t)snprintf(buf, 32, "%.14g", v);
    buf[n] = '\0';
    hs->h[hs->n++] = (tg_http_header_t){tg_str_from(name), (tg_str_t){buf, n}};
}

/*
 * X-RateLimit-Limit/Remaining-<Period> for every period, and RateLimit-* for the most
 * restrictive one: the lowest remaining, a tie going to the longer window. The remaining
 * shown counts this request unless it is blocked. Returns the RateLimit-Reset seconds.
 */
static int64_t build_headers(tg_req_t *r, const rl_conf_t *c, int64_t now_ms, const struct usage *u,
                             bool blocked, struct headers *hs)
{
    int best = -1;
    double best_remaining = 0;
    for (int p = 0; p < TG_RL_NPERIODS; p++) {
        if (!c->has[p]) continue;
        double shown = fmax(0, blocked ? u[p].remaining : u[p].remaining - 1);
        add_num(hs, x_limit[p], c->limit[p]);
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
    add_num(hs, "RateLimit-Limit", c->limit[best]);
    add_num(hs, "RateLimit-Remaining", best_remaining);
    add_num(hs, "RateLimit-Reset", (double)reset);
    return reset;
}

/* ------------------------------------------------------------------ access */

static tg_flow_t store_failed(tg_req_t *r, const rl_conf_t *c, int rc)
{
    TG_LOGE(MOD, "failed to get usage: %s", tg_strerror(rc));
    if (c->fault_tolerant) return TG_FLOW_CONTINUE; /* proxied without headers, not counted */
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
    struct headers hs = {.n = 0};
    if (!c->hide_client_headers) {
        int64_t reset = build_headers(r, c, now_ms, u, blocked, &hs);
        if (blocked) add_num(&hs, "Retry-After", (double)reset);
    }
    if (blocked) {
        tg_req_exit(r, c->error_code, c->error_message, hs.h, hs.n);
        return TG_FLOW_DONE;
    }
    for (size_t i = 0; i < hs.n; i++) /* names are string literals: NUL-terminated */
        tg_req_add_response_header(r, hs.h[i].name.p, hs.h[i].value);
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
