/*
 * key_auth_args.h — request arguments as Kong's key-auth sees them: query strings and
 * urlencoded bodies the way OpenResty's get_uri_args/get_post_args decode them, JSON and
 * multipart bodies the way kong.request.get_body does, plus removal of one argument
 * (hide_credentials) that leaves every other byte as it came.
 *
 * Names are flat and compared byte for byte after percent-decoding: `apikey[]` is not
 * `apikey`. A name given more than once, or a JSON object/array value, is a "table" in
 * Kong's Lua terms; a bare `apikey` in a query (no '=') is Lua `true`, i.e. no string.
 *
 * Memory: values and rewritten strings come from the request arena (tg_req_alloc) and live
 * until the request ends; a parsed body's JSON is owned by the tg_key_auth_args_body_t and
 * freed by tg_key_auth_args_body_free. Runs on the request's worker thread.
 */
#ifndef TG_KEY_AUTH_ARGS_H
#define TG_KEY_AUTH_ARGS_H

#include "request.h"

#include <jansson.h>
#include <stdbool.h>

typedef enum tg_key_auth_arg {
    TG_KEY_AUTH_ARG_ABSENT, /* no such argument (Lua nil) */
    TG_KEY_AUTH_ARG_STRING, /* exactly one string value */
    TG_KEY_AUTH_ARG_TABLE,  /* repeated, or a JSON object/array: "Duplicate API key found" */
    TG_KEY_AUTH_ARG_OTHER,  /* present, not a string: bare `name`, a JSON number/bool/null */
} tg_key_auth_arg_t;

enum tg_key_auth_body_kind {
    TG_KEY_AUTH_BODY_EMPTY, /* no body, unsupported content type, or not parseable */
    TG_KEY_AUTH_BODY_FORM,
    TG_KEY_AUTH_BODY_JSON,
    TG_KEY_AUTH_BODY_MULTIPART,
};

typedef struct tg_key_auth_args_body {
    enum tg_key_auth_body_kind kind;
    tg_str_t raw, content_type;
    tg_str_t boundary; /* multipart: the delimiter "--<boundary>" (arena) */
    json_t *json;      /* JSON: the parsed object or array (owned) */
} tg_key_auth_args_body_t;

/* ---- query strings and application/x-www-form-urlencoded ---- */

/* The argument `name` of `form` ("a=1&b=2"); *value (arena, decoded) when STRING. */
tg_key_auth_arg_t tg_key_auth_args_form_get(tg_req_t *r, tg_str_t form, const char *name,
                                            tg_str_t *value);
/* `form` without any pair named `name`, others in order and as received; false when none. */
bool tg_key_auth_args_form_remove(tg_req_t *r, tg_str_t form, const char *name, tg_str_t *out);

/* ---- bodies ---- */

/*
 * Classifies and parses a body by its Content-Type as kong.request.get_body does (the
 * type before ';', lower-cased, must start with the MIME type); anything it cannot decode
 * becomes EMPTY, which is not an error for key-auth.
 */
void tg_key_auth_args_body_parse(tg_req_t *r, tg_key_auth_args_body_t *b, tg_str_t raw,
                                 tg_str_t content_type);
void tg_key_auth_args_body_free(tg_key_auth_args_body_t *b);
tg_key_auth_arg_t tg_key_auth_args_body_get(tg_req_t *r, const tg_key_auth_args_body_t *b,
                                            const char *name, tg_str_t *value);
/*
 * The body without the field `name`, serialised with the same content type (JSON
 * re-encoded compactly; forms and multipart with the other fields byte for byte); false
 * when the field is absent or the body is EMPTY.
 */
bool tg_key_auth_args_body_remove(tg_req_t *r, tg_key_auth_args_body_t *b, const char *name,
                                  tg_str_t *out);

#endif
