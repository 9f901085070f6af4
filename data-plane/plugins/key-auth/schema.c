/*
 * key-auth/schema.c — the key-auth plugin's config (Kong 3.10 + Konnect's
 * identity_realms). Compiled into tg_common: both planes validate it.
 */
#include "plugins.h"
#include "validators.h"

#include <string.h>

static const tg_field_t key_name_el = {"", TG_T_STRING, 0, .check = tg_check_header_name};
static const char *const scopes[] = {"cp", "realm", NULL};

static const tg_field_t identity_realm_fields[] = {
    {"region", TG_T_STRING, 0},
    {"id", TG_T_STRING, TG_F_UUID},
    {"scope", TG_T_STRING, 0, "\"cp\"", .one_of = scopes},
    {0},
};

/* A realm entry must name its realm; a cp entry names none. */
static void identity_realm_check(const json_t *e, json_t *errs, json_t *entity_errs)
{
    const char *scope = json_string_value(json_object_get(e, "scope"));
    if (scope && strcmp(scope, "realm") == 0 && json_is_null(json_object_get(e, "id")))
        json_object_set_new(errs, "id", json_string("required field missing"));
}

static const tg_schema_t identity_realm = {
    .name = "identity_realm",
    .fields = identity_realm_fields,
    .entity_check = identity_realm_check,
};
static const tg_field_t identity_realm_el = {"", TG_T_RECORD, 0, .rec = &identity_realm};

static const tg_field_t fields[] = {
    {"key_names", TG_T_ARRAY, TG_F_REQUIRED, "[\"apikey\"]", .elem = &key_name_el},
    {"hide_credentials", TG_T_BOOLEAN, TG_F_REQUIRED, "false"},
    {"anonymous", TG_T_STRING, 0},
    {"key_in_header", TG_T_BOOLEAN, TG_F_REQUIRED, "true"},
    {"key_in_query", TG_T_BOOLEAN, TG_F_REQUIRED, "true"},
    {"key_in_body", TG_T_BOOLEAN, TG_F_REQUIRED, "false"},
    {"run_on_preflight", TG_T_BOOLEAN, TG_F_REQUIRED, "true"},
    {"realm", TG_T_STRING, 0},
    {"identity_realms", TG_T_ARRAY, 0, "[{\"scope\":\"cp\",\"id\":null,\"region\":null}]",
     .elem = &identity_realm_el},
    {0},
};

static const tg_schema_t config = {.name = "key-auth", .fields = fields};

const tg_plugin_info_t tg_plugin_key_auth = {
    .name = "key-auth",
    .priority = 1250,
    .version = "3.10.0",
    .config_schema = &config,
    .default_protocols = "[\"grpc\",\"grpcs\",\"http\",\"https\",\"ws\",\"wss\"]",
    .no_consumer = true,
};
