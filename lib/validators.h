/*
 * validators.h — field and entity checks shared by the entity and plugin
 * descriptions, each returning Kong's exact message. Pure functions, any thread.
 *
 * Field checks follow tg_field_check_fn: NULL when the value is fine, else the
 * message written into err (and returned).
 */
#ifndef TG_VALIDATORS_H
#define TG_VALIDATORS_H

#include "schema.h"

const char *tg_check_tag(const json_t *v, char *err, size_t errlen);
const char *tg_check_utf8_name(const json_t *v, char *err, size_t errlen);
const char *tg_check_host(const json_t *v, char *err, size_t errlen);
const char *tg_check_path(const json_t *v, char *err, size_t errlen);
const char *tg_check_http_method(const json_t *v, char *err, size_t errlen);
const char *tg_check_wildcard_host(const json_t *v, char *err, size_t errlen);
const char *tg_check_route_path(const json_t *v, char *err, size_t errlen);
const char *tg_check_route_headers(const json_t *v, char *err, size_t errlen);
const char *tg_check_redirect_code(const json_t *v, char *err, size_t errlen);
const char *tg_check_sni(const json_t *v, char *err, size_t errlen);
const char *tg_check_header_name(const json_t *v, char *err, size_t errlen);
const char *tg_check_plugin_name(const json_t *v, char *err, size_t errlen);

/* plugins: plugin-specific scope rules (key-auth cannot be scoped to a consumer). */
void tg_check_plugin_entity(const json_t *entity, json_t *errs, json_t *entity_errs);
/* services: expands the write-only `url` shorthand into protocol/host/port/path. */
void tg_expand_service_url(json_t *input, json_t *errs);

#endif
