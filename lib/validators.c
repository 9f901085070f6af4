#include "validators.h"
#include "plugins.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static const char *fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return err;
}

/* Valid UTF-8 with no overlong forms, surrogates or code points past U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1Fu, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0Fu, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        if (i + n >= len) return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

const char *tg_check_tag(const json_t *v, char *err, size_t errlen)
{
    const unsigned char *s = (const unsigned char *)json_string_value(v);
    size_t len = json_string_length(v);
    bool ok = utf8_valid(s, len);
    for (size_t i = 0; ok && i < len; i++)
        if (s[i] < 0x80 && (s[i] < 0x21 || s[i] > 0x7E || s[i] == ',' || s[i] == '/')) ok = false;
    if (ok) return NULL;
    return fail(err, errlen,
                "invalid tag '%s': expected printable ascii (except `,` and `/`) or valid utf-8 "
                "sequences",
                (const char *)s);
}

const char *tg_check_utf8_name(const json_t *v, char *err, size_t errlen)
{
    const unsigned char *s = (const unsigned char *)json_string_value(v);
    size_t len = json_string_length(v);
    bool ok = len > 0 && utf8_valid(s, len);
    for (size_t i = 0; ok && i < len; i++)
        if (s[i] < 0x80 && !isalnum(s[i]) && !strchr(".-_~", s[i])) ok = false;
    if (ok) return NULL;
    return fail(err, errlen,
                "invalid value '%s': the only accepted ascii characters are alphanumerics or ., -, "
                "_, and ~",
                (const char *)s);
}

/* A DNS name or IPv4/IPv6 literal, optionally with :port; sets *has_port. */
static bool host_syntax(const char *s, bool *has_port)
{
    size_t len = strlen(s);
    *has_port = false;
    if (len == 0 || len > 253 + 6) return false;
    if (s[0] == '[') { /* [v6]:port */
        const char *close = strchr(s, ']');
        if (!close) return false;
        for (const char *p = s + 1; p < close; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.') return false;
        if (close[1] == ':') *has_port = true;
        else if (close[1]) return false;
        return true;
    }
    const char *colon = strchr(s, ':');
    if (colon && strchr(colon + 1, ':')) { /* bare IPv6 */
        for (const char *p = s; *p; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.') return false;
        return true;
    }
    size_t hostlen = colon ? (size_t)(colon - s) : len;
    if (colon) {
        *has_port = true;
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || port < 0 || port > 65535) return false;
    }
    if (hostlen == 0) return false;
    for (size_t i = 0; i < hostlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '.' && c != '_') return false;
    }
    return true;
}

const char *tg_check_host(const json_t *v, char *err, size_t errlen)
{
    bool port;
    const char *s = json_string_value(v);
    if (!host_syntax(s, &port)) return fail(err, errlen, "invalid value: %s", s);
    if (port) return fail(err, errlen, "%s", "must not have a port");
    return NULL;
}

const char *tg_check_sni(const json_t *v, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    bool port;
    if (!host_syntax(s, &port)) return fail(err, errlen, "invalid value: %s", s);
    bool ip = strchr(s, ':') != NULL || strspn(s, "0123456789.") == strlen(s);
    if (ip && !port) return fail(err, errlen, "%s", "must not be an IP");
    if (port) return fail(err, errlen, "%s", "must not have a port");
    return NULL;
}

/* RFC 3986 path characters and well-formed percent escapes. */
static const char *check_path_chars(const char *s, char *err, size_t errlen)
{
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!isalnum(c) && !strchr("./-_~%!$&'()*+,;=:@", c))
            return fail(err, errlen,
                        "invalid path: '%s' (characters outside of the reserved list of RFC 3986 "
                        "found)",
                        s);
        if (c == '%' && (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]))) {
            char bad[4] = {'%', p[1] ? p[1] : 0, p[1] && p[2] ? p[2] : 0, 0};
            return fail(err, errlen, "invalid url-encoded value: '%s'", bad);
        }
    }
    return NULL;
}

const char *tg_check_path(const json_t *v, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    if (s[0] != '/') return fail(err, errlen, "%s", "should start with: /");
    if (strstr(s, "//")) return fail(err, errlen, "%s", "must not have empty segments");
    return check_path_chars(s, err, errlen);
}

const char *tg_check_route_path(const json_t *v, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    if (s[0] == '~' && s[1] == '/') {
        /* Compiled here only to reject what the data plane's router could not compile. */
        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)(s + 1), PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
        if (re) {
            pcre2_code_free(re);
            return NULL;
        }
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return fail(err, errlen, "invalid regex: '%s' (PCRE returned: %s)", s + 1, (const char *)msg);
    }
    if (s[0] != '/')
        return fail(err, errlen, "%s", "should start with: / (fixed path) or ~/ (regex path)");
    return check_path_chars(s, err, errlen);
}

const char *tg_check_http_method(const json_t *v, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    bool ok = *s != '\0';
    for (const char *p = s; *p; p++) ok &= isupper((unsigned char)*p) != 0;
    return ok ? NULL : fail(err, errlen, "invalid value: %s", s);
}

const char *tg_check_wildcard_host(const json_t *v, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    const char *star = strchr(s, '*');
    if (star) {
        if (strchr(star + 1, '*'))
            return fail(err, errlen, "%s", "invalid wildcard: must have at most one wildcard");
        size_t len = strlen(s);
        bool leftmost = star == s && s[1] == '.';
        bool rightmost = star == s + len - 1 && len > 1 && star[-1] == '.';
        if (!leftmost && !rightmost)
            return fail(err, errlen, "%s",
                        "invalid wildcard: must be placed at leftmost or rightmost label");
        char *copy = strdup(s);
        copy[star - s] = 'x';
        bool port;
        bool ok = host_syntax(copy, &port);
        free(copy);
        return ok ? NULL : fail(err, errlen, "invalid hostname: %s", s);
    }
    bool port;
    return host_syntax(s, &port) ? NULL : fail(err, errlen, "invalid hostname: %s", s);
}

const char *tg_check_header_name(const json_t *v, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    bool ok = *s != '\0';
    for (const char *p = s; *p; p++) ok &= isalnum((unsigned char)*p) || *p == '_' || *p == '-';
    if (ok) return NULL;
    return fail(err, errlen,
                "bad header name '%s', allowed characters are A-Z, a-z, 0-9, '_', and '-'", s);
}

const char *tg_check_route_headers(const json_t *v, char *err, size_t errlen)
{
    const char *k;
    json_t *el;
    json_object_foreach((json_t *)v, k, el) {
        if (strcasecmp(k, "host") == 0) return fail(err, errlen, "%s", "cannot contain 'host' header");
        json_t *name = json_string(k);
        const char *bad = tg_check_header_name(name, err, errlen);
        json_decref(name);
        if (bad) return bad;
    }
    return NULL;
}

const char *tg_check_redirect_code(const json_t *v, char *err, size_t errlen)
{
    json_int_t c = json_integer_value(v);
    if (c == 426 || c == 301 || c == 302 || c == 307 || c == 308) return NULL;
    return fail(err, errlen, "%s", "expected one of: 426, 301, 302, 307, 308");
}

const char *tg_check_plugin_name(const json_t *v, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    if (tg_plugin_find(s)) return NULL;
    return fail(err, errlen, "plugin '%s' not enabled; add it to the 'plugins' configuration property", s);
}

void tg_check_plugin_entity(const json_t *e, json_t *errs, json_t *entity_errs)
{
    const tg_plugin_info_t *p = tg_plugin_find(json_string_value(json_object_get(e, "name")));
    if (p && p->no_consumer && !json_is_null(json_object_get(e, "consumer")))
        json_object_set_new(errs, "consumer", json_string("value must be null"));
}

void tg_expand_service_url(json_t *input, json_t *errs)
{
    json_t *url = json_object_get(input, "url");
    if (!url || json_is_null(url)) {
        json_object_del(input, "url");
        return;
    }
    if (!json_is_string(url)) {
        json_object_set_new(errs, "url", json_string("expected a string"));
        return;
    }
    const char *s = json_string_value(url), *sep = strstr(s, "://");
    if (!sep || sep == s) {
        json_object_set_new(errs, "url", json_string("missing scheme in url"));
        return;
    }
    const char *host = sep + 3, *path = strchr(host, '/');
    size_t hostport_len = path ? (size_t)(path - host) : strlen(host);
    if (hostport_len == 0) {
        json_object_set_new(errs, "url", json_string("missing host in url"));
        return;
    }
    char scheme[32], hostport[512];
    if ((size_t)(sep - s) >= sizeof(scheme) || hostport_len >= sizeof(hostport)) {
        json_object_set_new(errs, "url", json_string("could not parse url"));
        return;
    }
    memcpy(scheme, s, (size_t)(sep - s));
    scheme[sep - s] = '\0';
    memcpy(hostport, host, hostport_len);
    hostport[hostport_len] = '\0';
    long port = strcmp(scheme, "https") == 0 || strcmp(scheme, "wss") == 0 || strcmp(scheme, "grpcs") == 0 ? 443 : 80;
    char *colon = hostport[0] == '[' ? strstr(hostport, "]:") : strrchr(hostport, ':');
    if (colon) {
        if (hostport[0] == '[') colon++;
        char *end;
        port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1) {
            json_object_set_new(errs, "url", json_string("could not parse url"));
            return;
        }
        *colon = '\0';
    }
    json_object_set_new(input, "protocol", json_string(scheme));
    json_object_set_new(input, "host", json_string(hostport));
    json_object_set_new(input, "port", json_integer(port));
    json_object_set_new(input, "path", path && *path ? json_string(path) : json_null());
    json_object_del(input, "url");
}
