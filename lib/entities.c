/*
 * entities.c — the description of every Admin API entity (Kong 3.10 OSS
 * fields, defaults and checks). The one place an entity's shape is written.
 */
#include "schema.h"
#include "validators.h"

#include <stdio.h>
#include <string.h>

#define FIELD(...) {__VA_ARGS__}
#define END {0}

/* Shared field descriptions. */
static const tg_field_t string_el = {"", TG_T_STRING, 0, .len_min = 1};
static const tg_field_t tag_el = {"", TG_T_STRING, 0, .len_min = 1, .check = tg_check_tag};
#define ID_FIELD FIELD("id", TG_T_STRING, TG_F_AUTO | TG_F_UUID)
#define CREATED_AT FIELD("created_at", TG_T_INTEGER, TG_F_AUTO | TG_F_TIMESTAMP)
#define UPDATED_AT FIELD("updated_at", TG_T_INTEGER, TG_F_AUTO | TG_F_TIMESTAMP)
#define TAGS FIELD("tags", TG_T_SET, 0, .elem = &tag_el)

/* ---------------------------------------------------------------- services */

static const char *const service_protocols[] = {"grpc", "grpcs", "http", "https", "tcp", "tls",
                                                 "tls_passthrough", "udp", "ws", "wss", NULL};
static const tg_field_t service_fields[] = {
    ID_FIELD,
    CREATED_AT,
    UPDATED_AT,
    FIELD("name", TG_T_STRING, TG_F_UNIQUE, .check = tg_check_utf8_name),
    FIELD("retries", TG_T_INTEGER, TG_F_BETWEEN, "5", 0, 32767),
    FIELD("protocol", TG_T_STRING, TG_F_REQUIRED, "\"http\"", .one_of = service_protocols),
    FIELD("host", TG_T_STRING, TG_F_REQUIRED, .check = tg_check_host),
    FIELD("port", TG_T_INTEGER, TG_F_REQUIRED | TG_F_BETWEEN, "80", 0, 65535),
    FIELD("path", TG_T_STRING, 0, .check = tg_check_path),
    FIELD("connect_timeout", TG_T_INTEGER, TG_F_BETWEEN, "60000", 1, 2147483646),
    FIELD("write_timeout", TG_T_INTEGER, TG_F_BETWEEN, "60000", 1, 2147483646),
    FIELD("read_timeout", TG_T_INTEGER, TG_F_BETWEEN, "60000", 1, 2147483646),
    TAGS,
    FIELD("client_certificate", TG_T_FOREIGN, 0),
    FIELD("tls_verify", TG_T_BOOLEAN, 0),
    FIELD("tls_verify_depth", TG_T_INTEGER, TG_F_BETWEEN, NULL, 0, 64),
    FIELD("ca_certificates", TG_T_ARRAY, 0, .elem = &string_el),
    FIELD("enabled", TG_T_BOOLEAN, TG_F_REQUIRED, "true"),
    FIELD("url", TG_T_STRING, TG_F_INPUT_ONLY),
    END,
};

static bool is_stream(const char *proto)
{
    return proto && (strcmp(proto, "tcp") == 0 || strcmp(proto, "tls") == 0 ||
                     strcmp(proto, "udp") == 0 || strcmp(proto, "grpc") == 0 ||
                     strcmp(proto, "grpcs") == 0 || strcmp(proto, "tls_passthrough") == 0);
}

static void service_check(const json_t *e, json_t *errs, json_t *entity_errs)
{
    const char *proto = json_string_value(json_object_get(e, "protocol"));
    if (is_stream(proto) && !json_is_null(json_object_get(e, "path")))
        json_object_set_new(errs, "path",
                            json_sprintf("value must be null when 'protocol' is %s", proto));
    bool tls = proto && (strcmp(proto, "https") == 0 || strcmp(proto, "tls") == 0 ||
                         strcmp(proto, "wss") == 0 || strcmp(proto, "grpcs") == 0);
    static const char *const tls_only[] = {"client_certificate", "tls_verify", "tls_verify_depth",
                                           "ca_certificates", NULL};
    for (size_t i = 0; !tls && tls_only[i]; i++)
        if (!json_is_null(json_object_get(e, tls_only[i])))
            json_object_set_new(errs, tls_only[i],
                                json_string("value must be null when 'protocol' is not https, "
                                            "tls, wss or grpcs"));
}

const tg_schema_t tg_schema_services = {
    .name = "services",
    .admin_path = "services",
    .endpoint_key = "name",
    .fields = service_fields,
    .entity_check = service_check,
    .expand = tg_expand_service_url,
    .has_updated_at = true,
};

/* ---------------------------------------------------------------- routes */

static const char *const route_protocols[] = {"grpc", "grpcs", "http", "https", "tcp", "tls",
                                               "tls_passthrough", "udp", "ws", "wss", NULL};
static const char *const path_handlings[] = {"v0", "v1", NULL};
static const tg_field_t protocol_el = {"", TG_T_STRING, 0, .one_of = route_protocols};
static const tg_field_t method_el = {"", TG_T_STRING, 0, .check = tg_check_http_method};
static const tg_field_t host_el = {"", TG_T_STRING, 0, .check = tg_check_wildcard_host};
static const tg_field_t route_path_el = {"", TG_T_STRING, 0, .check = tg_check_route_path};
static const tg_field_t header_values_el = {"", TG_T_ARRAY, 0, .elem = &string_el};
static const tg_field_t sni_el = {"", TG_T_STRING, 0, .check = tg_check_sni};
static const tg_field_t cidr_port_el = {"", TG_T_RECORD, 0};

static const tg_field_t route_fields[] = {
    ID_FIELD,
    CREATED_AT,
    UPDATED_AT,
    FIELD("name", TG_T_STRING, TG_F_UNIQUE, .check = tg_check_utf8_name),
    FIELD("protocols", TG_T_SET, TG_F_REQUIRED, "[\"http\",\"https\"]", .len_min = 1,
          .elem = &protocol_el),
    FIELD("methods", TG_T_SET, 0, .elem = &method_el),
    FIELD("hosts", TG_T_ARRAY, 0, .elem = &host_el),
    FIELD("paths", TG_T_ARRAY, 0, .elem = &route_path_el),
    FIELD("headers", TG_T_MAP, 0, .elem = &header_values_el, .check = tg_check_route_headers),
    FIELD("https_redirect_status_code", TG_T_INTEGER, TG_F_REQUIRED, "426",
          .check = tg_check_redirect_code),
    FIELD("regex_priority", TG_T_INTEGER, 0, "0"),
    FIELD("strip_path", TG_T_BOOLEAN, TG_F_REQUIRED, "true"),
    FIELD("path_handling", TG_T_STRING, 0, "\"v0\"", .one_of = path_handlings),
    FIELD("preserve_host", TG_T_BOOLEAN, TG_F_REQUIRED, "false"),
    FIELD("request_buffering", TG_T_BOOLEAN, TG_F_REQUIRED, "true"),
    FIELD("response_buffering", TG_T_BOOLEAN, TG_F_REQUIRED, "true"),
    FIELD("snis", TG_T_SET, 0, .elem = &sni_el),
    FIELD("sources", TG_T_SET, 0, .elem = &cidr_port_el),
    FIELD("destinations", TG_T_SET, 0, .elem = &cidr_port_el),
    TAGS,
    FIELD("service", TG_T_FOREIGN, 0, .rec = &tg_schema_services),
    END,
};

static bool has_any(const json_t *e, const char *const *names)
{
    for (size_t i = 0; names[i]; i++) {
        const json_t *v = json_object_get(e, names[i]);
        if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0) &&
            !(json_is_object(v) && json_object_size(v) == 0))
            return true;
    }
    return false;
}

static void route_check(const json_t *e, json_t *errs, json_t *entity_errs)
{
    const json_t *protos = json_object_get(e, "protocols");
    bool http_only = json_array_size(protos) > 0, tls = false;
    size_t i;
    json_t *p;
    json_array_foreach(protos, i, p) {
        const char *s = json_string_value(p);
        if (strcmp(s, "http") != 0 && strcmp(s, "ws") != 0) http_only = false;
        if (strcmp(s, "https") == 0 || strcmp(s, "wss") == 0 || strcmp(s, "grpcs") == 0 ||
            strcmp(s, "tls") == 0)
            tls = true;
    }
    static const char *const http_attrs[] = {"methods", "hosts", "headers", "paths", NULL};
    static const char *const https_attrs[] = {"methods", "hosts", "headers", "paths", "snis", NULL};
    if (http_only && !has_any(e, http_attrs))
        json_array_append_new(entity_errs,
                              json_string("must set one of 'methods', 'hosts', 'headers', 'paths' "
                                          "when 'protocols' is 'http'"));
    else if (tls && !has_any(e, https_attrs))
        json_array_append_new(entity_errs,
                              json_string("must set one of 'methods', 'hosts', 'headers', 'paths', "
                                          "'snis' when 'protocols' is 'https'"));
    if (!tls && !json_is_null(json_object_get(e, "snis")) &&
        json_array_size(json_object_get(e, "snis")) > 0)
        json_object_set_new(errs, "snis",
                            json_string("'snis' can only be set when 'protocols' is 'grpcs', "
                                        "'https', 'tls' or 'tls_passthrough'"));
}

const tg_schema_t tg_schema_routes = {
    .name = "routes",
    .admin_path = "routes",
    .endpoint_key = "name",
    .fields = route_fields,
    .entity_check = route_check,
    .has_updated_at = true,
};

/* ---------------------------------------------------------------- consumers */

static const tg_field_t consumer_fields[] = {
    ID_FIELD,
    CREATED_AT,
    UPDATED_AT,
    FIELD("username", TG_T_STRING, TG_F_UNIQUE),
    FIELD("custom_id", TG_T_STRING, TG_F_UNIQUE),
    TAGS,
    END,
};
static const char *const consumer_one_of[] = {"custom_id", "username", NULL};

const tg_schema_t tg_schema_consumers = {
    .name = "consumers",
    .admin_path = "consumers",
    .endpoint_key = "username",
    .fields = consumer_fields,
    .at_least_one_of = consumer_one_of,
    .has_updated_at = true,
};

/* ---------------------------------------------------------------- plugins */

static const char *const plugin_protocols[] = {"grpc", "grpcs", "http", "https", "tcp", "tls",
                                                "tls_passthrough", "udp", "ws", "wss", NULL};
static const tg_field_t plugin_protocol_el = {"", TG_T_STRING, 0, .one_of = plugin_protocols};

static const tg_field_t plugin_fields[] = {
    ID_FIELD,
    FIELD("name", TG_T_STRING, TG_F_REQUIRED, .check = tg_check_plugin_name),
    FIELD("instance_name", TG_T_STRING, TG_F_UNIQUE, .check = tg_check_utf8_name),
    CREATED_AT,
    UPDATED_AT,
    FIELD("route", TG_T_FOREIGN, TG_F_CASCADE, .rec = &tg_schema_routes),
    FIELD("service", TG_T_FOREIGN, TG_F_CASCADE, .rec = &tg_schema_services),
    FIELD("consumer", TG_T_FOREIGN, TG_F_CASCADE, .rec = &tg_schema_consumers),
    FIELD("config", TG_T_RECORD, TG_F_REQUIRED | TG_F_PLUGIN_CONFIG),
    FIELD("protocols", TG_T_SET, TG_F_REQUIRED | TG_F_PLUGIN_PROTOCOLS, .elem = &plugin_protocol_el),
    FIELD("enabled", TG_T_BOOLEAN, TG_F_REQUIRED, "true"),
    TAGS,
    END,
};

const tg_schema_t tg_schema_plugins = {
    .name = "plugins",
    .admin_path = "plugins",
    .endpoint_key = "instance_name",
    .fields = plugin_fields,
    .entity_check = tg_check_plugin_entity,
    .has_updated_at = true,
};

/* ---------------------------------------------------------------- key-auth credentials */

static const tg_field_t keyauth_fields[] = {
    ID_FIELD,
    CREATED_AT,
    FIELD("consumer", TG_T_FOREIGN, TG_F_REQUIRED | TG_F_CASCADE, .rec = &tg_schema_consumers),
    FIELD("key", TG_T_STRING, TG_F_UNIQUE | TG_F_SECRET | TG_F_REQUIRED, .len_min = 1),
    TAGS,
    END,
};

const tg_schema_t tg_schema_keyauth_credentials = {
    .name = "keyauth_credentials",
    .admin_path = "key-auths",
    .nested_path = "key-auth",
    .endpoint_key = "key",
    .fields = keyauth_fields,
    .ttl = true,
};
