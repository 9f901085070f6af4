/*
 * form.h — request argument decoding: URL-encoded forms and query strings,
 * multipart/form-data, percent-decoding.
 *
 * Produces a jansson object shaped as Kong's arguments.lua decodes it, before
 * any schema-driven type inference (that happens in schema.c):
 *   - dotted keys nest:           config.key_names=a   → {"config":{"key_names":"a"}}
 *   - repeated keys make arrays:  hosts=a&hosts=b      → {"hosts":["a","b"]}
 *   - `k[]=v` appends:            hosts[]=a            → {"hosts":["a"]}
 *   - `k[N]=v` sets index N (1-based, gaps filled with null in order)
 *   - every leaf value is a JSON string (possibly ""); a key with no `=` is "".
 * The caller owns the returned object (json_decref). Thread-safe.
 */
#ifndef TG_FORM_H
#define TG_FORM_H

#include "str.h"

#include <jansson.h>

/* Percent-decodes `in` ('+' → ' ' when plus_as_space) into a fresh string. NULL on bad escapes. */
char *tg_url_decode(const char *in, size_t len, bool plus_as_space, size_t *outlen);
/* Decodes a query string or urlencoded body. -TG_EPARSE on malformed input (bad %XX, keys too deep). */
int tg_form_parse_urlencoded(const char *body, size_t len, json_t **out);
/*
 * Decodes multipart/form-data given the full Content-Type header value (the
 * boundary is read from it). File parts are kept as strings. -TG_EPARSE when
 * the boundary is missing or the body is malformed.
 */
int tg_form_parse_multipart(const char *body, size_t len, tg_str_t content_type, json_t **out);

#endif
