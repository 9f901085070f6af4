/*
 * rate-limiting/schema.c — the rate-limiting plugin's config (Kong 3.10).
 * Compiled into tg_common: both planes validate it. Only the `local` and
 * `redis` policies exist, as in Kong's hybrid mode.
 */
#include "plugins.h"
#include "validators.h"

#include <stdio.h>
#include <string.h>

static const char *const limit_bys[] = {"consumer", "credential", "ip", "service", "header", "path",
                                        NULL};
static const char *const policies[] = {"local", "redis", NULL};

static const tg_field_t redis_fields[] = {
    {"host", TG_T_STRING, 0, .check = tg_check_host},
    {"port", TG_T_INTEGER, TG_F_BETWEEN, "6379", 0, 65535},
    {"timeout", TG_T_INTEGER, TG_F_BETWEEN, "2000", 0, 2147483646},
    {"connect_timeout", TG_T_INTEGER, TG_F_BETWEEN, "2000", 0, 2147483646},
    {"send_timeout", TG_T_INTEGER, TG_F_BETWEEN, "2000", 0, 2147483646},
    {"read_timeout", TG_T_INTEGER, TG_F_BETWEEN, "2000", 0, 2147483646},
    {"username", TG_T_STRING, 0},
    {"password", TG_T_STRING, 0},
    {"database", TG_T_INTEGER, 0, "0"},
    {"ssl", TG_T_BOOLEAN, TG_F_REQUIRED, "false"},
    {"ssl_verify", TG_T_BOOLEAN, TG_F_REQUIRED, "false"},
    {"server_name", TG_T_STRING, 0, .check = tg_check_sni},
    {0},
};
static const tg_schema_t redis = {.name = "redis", .fields = redis_fields};

#define WINDOW(name) {name, TG_T_NUMBER, TG_F_GT, NULL, 0}
static const tg_field_t fields[] = {
    WINDOW("second"),
    WINDOW("minute"),
    WINDOW("hour"),
    WINDOW("day"),
    WINDOW("month"),
    WINDOW("year"),
    {"limit_by", TG_T_STRING, TG_F_REQUIRED, "\"consumer\"", .one_of = limit_bys},
    {"header_name", TG_T_STRING, 0, .check = tg_check_header_name},
    {"path", TG_T_STRING, 0, .check = tg_check_path},
    {"policy", TG_T_STRING, TG_F_REQUIRED, "\"local\"", .one_of = policies},
    {"fault_tolerant", TG_T_BOOLEAN, TG_F_REQUIRED, "true"},
    {"redis", TG_T_RECORD, TG_F_REQUIRED, .rec = &redis},
    {"hide_client_headers", TG_T_BOOLEAN, TG_F_REQUIRED, "false"},
    {"error_code", TG_T_NUMBER, TG_F_GT, "429", 0},
    {"error_message", TG_T_STRING, 0, "\"API rate limit exceeded\""},
    {"sync_rate", TG_T_NUMBER, 0, "-1"},
    {0},
};

static const char *const windows[] = {"second", "minute", "hour", "day", "month", "year", NULL};

/* Kong: a longer window may not allow fewer requests than a shorter one. */
static void check_window_order(const json_t *c, json_t *entity_errs)
{
    for (size_t i = 0; windows[i]; i++) {
        json_t *small = json_object_get(c, windows[i]);
        if (!json_is_number(small)) continue;
        for (size_t j = i + 1; windows[j]; j++) {
            json_t *big = json_object_get(c, windows[j]);
            if (!json_is_number(big) || json_number_value(big) >= json_number_value(small)) continue;
            char msg[256];
            snprintf(msg, sizeof(msg), "The limit for %s(%.1f) cannot be lower than the limit for %s(%.1f)",
                     windows[j], json_number_value(big), windows[i], json_number_value(small));
            json_array_append_new(entity_errs, json_string(msg));
            return;
        }
    }
}

static void config_check(const json_t *c, json_t *errs, json_t *entity_errs)
{
    check_window_order(c, entity_errs);
    const char *by = json_string_value(json_object_get(c, "limit_by"));
    if (by && strcmp(by, "header") == 0 && json_is_null(json_object_get(c, "header_name")))
        json_object_set_new(errs, "header_name", json_string("required field missing"));
    if (by && strcmp(by, "path") == 0 && json_is_null(json_object_get(c, "path")))
        json_object_set_new(errs, "path", json_string("required field missing"));
    const char *policy = json_string_value(json_object_get(c, "policy"));
    bool is_redis = policy && strcmp(policy, "redis") == 0;
    if (is_redis && json_is_null(json_object_get(json_object_get(c, "redis"), "host")))
        json_object_set_new(errs, "redis", json_pack("{s:s}", "host", "required field missing"));
    double sync_rate = json_number_value(json_object_get(c, "sync_rate"));
    if (!is_redis && sync_rate != -1)
        json_array_append_new(entity_errs, json_string("sync_rate can only be used with the redis policy"));
    else if (is_redis && sync_rate != -1 && sync_rate < 0.02)
        json_object_set_new(errs, "sync_rate", json_string("value must be greater than or equal to 0.02"));
}

static const char *const at_least_one[] = {"second", "minute", "hour", "day", "month", "year", NULL};
static const tg_schema_t config = {
    .name = "rate-limiting",
    .fields = fields,
    .at_least_one_of = at_least_one,
    .entity_check = config_check,
};

const tg_plugin_info_t tg_plugin_rate_limiting = {
    .name = "rate-limiting",
    .priority = 910,
    .version = "3.10.0",
    .config_schema = &config,
    .default_protocols = "[\"grpc\",\"grpcs\",\"http\",\"https\"]",
};
