/*
 * http_chunked.c — byte-at-a-time state machine for chunked bodies, with a
 * fast path that hands out chunk data as one span.
 *
 * The grammar is followed to the letter (RFC 9112 §7.1, RFC 9110 §5.6):
 * request smuggling through chunked bodies lives in the corners — bare LF
 * line ends, oversized or signed sizes, CRLF hidden in extensions — where a
 * lenient decoder and the next hop disagree about where the body ends.
 */
#include "http_chunked.h"
#include "error.h"

#include <string.h>

enum {
    S_SIZE_FIRST,   /* first hex digit of chunk-size */
    S_SIZE,         /* more digits, or what follows them */
    S_EXT_SEMI,     /* BWS seen: only more BWS or ';' may follow */
    S_EXT_NAME0,    /* after ';': BWS or the first byte of the name */
    S_EXT_NAME,     /* inside chunk-ext-name */
    S_EXT_NAME_END, /* BWS after the name: '=', ';' or more BWS */
    S_EXT_VAL0,     /* after '=': BWS, a token or a quoted-string */
    S_EXT_TOKEN,    /* inside a token value */
    S_EXT_QUOTED,   /* inside a quoted-string value */
    S_EXT_ESCAPE,   /* after a backslash in a quoted-string */
    S_EXT_AFTER,    /* after a value: BWS, ';' or CR */
    S_SIZE_LF,      /* CR of the size line seen */
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_TRAILER0, /* start of a trailer line, or the final CRLF */
    S_TRAILER_NAME,
    S_TRAILER_VALUE,
    S_TRAILER_LF,
    S_END_LF,
    S_DONE,
};

#define SIZE_DIGITS_MAX 16 /* 64 bits of hex: no overflow check needed */

static bool is_ws(unsigned char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool is_token(unsigned char ch)
{
    return tg_http_cc_is(ch, TG_HTTP_CC_TOKEN);
}

static unsigned hex_value(unsigned char ch)
{
    if (ch <= '9') return ch - '0';
    return (ch | 0x20) - 'a' + 10;
}

/* qdtext / quoted-pair content: HTAB, SP, VCHAR and obs-text, never '"' or '\'. */
static bool is_qdtext(unsigned char ch)
{
    return tg_http_cc_is(ch, TG_HTTP_CC_VALUE) && ch != '"' && ch != '\\';
}

void tg_http_chunked_init(tg_http_chunked_t *c, const tg_http_limits_t *lim)
{
    memset(c, 0, sizeof *c);
    c->state = S_SIZE_FIRST;
    c->max_trailer_bytes = lim->max_head_size;
    c->max_trailers = lim->max_headers;
}

bool tg_http_chunked_done(const tg_http_chunked_t *c)
{
    return c->state == S_DONE;
}

/* A byte that may end a size or an extension value: BWS, ';' or CR. */
static int ext_separator(tg_http_chunked_t *c, unsigned char ch)
{
    if (is_ws(ch))
        c->state = S_EXT_SEMI;
    else if (ch == ';')
        c->state = S_EXT_NAME0;
    else if (ch == '\r')
        c->state = S_SIZE_LF;
    else
        return -TG_EPARSE;
    return 0;
}

static int step_size(tg_http_chunked_t *c, unsigned char ch)
{
    bool hex = tg_http_cc_is(ch, TG_HTTP_CC_HEX);
    if (c->state == S_SIZE_FIRST && !hex) return -TG_EPARSE;
    if (!hex) return ext_separator(c, ch);
    if (++c->digits > SIZE_DIGITS_MAX) return -TG_ETOOBIG;
    c->remaining = (c->remaining << 4) | hex_value(ch);
    c->state = S_SIZE;
    return 0;
}

/* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ) */
static int step_ext(tg_http_chunked_t *c, unsigned char ch)
{
    switch (c->state) {
    case S_EXT_SEMI:
        if (is_ws(ch)) return 0;
        if (ch != ';') return -TG_EPARSE;
        c->state = S_EXT_NAME0;
        return 0;
    case S_EXT_NAME0:
        if (is_ws(ch)) return 0;
        if (!is_token(ch)) return -TG_EPARSE;
        c->state = S_EXT_NAME;
        return 0;
    case S_EXT_NAME:
        if (is_token(ch)) return 0;
        if (ch == '=') {
            c->state = S_EXT_VAL0;
            return 0;
        }
        if (is_ws(ch)) {
            c->state = S_EXT_NAME_END;
            return 0;
        }
        return ext_separator(c, ch);
    case S_EXT_NAME_END:
        if (is_ws(ch)) return 0;
        if (ch == '=')
            c->state = S_EXT_VAL0;
        else if (ch == ';')
            c->state = S_EXT_NAME0;
        else
            return -TG_EPARSE;
        return 0;
    default:
        return -TG_EPARSE;
    }
}

static int step_ext_value(tg_http_chunked_t *c, unsigned char ch)
{
    switch (c->state) {
    case S_EXT_VAL0:
        if (is_ws(ch)) return 0;
        if (ch == '"')
            c->state = S_EXT_QUOTED;
        else if (is_token(ch))
            c->state = S_EXT_TOKEN;
        else
            return -TG_EPARSE;
        return 0;
    case S_EXT_TOKEN:
        return is_token(ch) ? 0 : ext_separator(c, ch);
    case S_EXT_QUOTED:
        if (ch == '"')
            c->state = S_EXT_AFTER;
        else if (ch == '\\')
            c->state = S_EXT_ESCAPE;
        else if (!is_qdtext(ch))
            return -TG_EPARSE;
        return 0;
    case S_EXT_ESCAPE:
        if (!tg_http_cc_is(ch, TG_HTTP_CC_VALUE)) return -TG_EPARSE;
        c->state = S_EXT_QUOTED;
        return 0;
    case S_EXT_AFTER:
        return ext_separator(c, ch);
    default:
        return -TG_EPARSE;
    }
}

/* Size line ended: a zero size starts the trailer section. */
static int end_size_line(tg_http_chunked_t *c, unsigned char ch)
{
    if (ch != '\n') return -TG_EPARSE;
    c->line = 0;
    c->digits = 0;
    c->state = c->remaining ? S_DATA : S_TRAILER0;
    return 0;
}

static int step_trailer(tg_http_chunked_t *c, unsigned char ch)
{
    if (++c->trailer_bytes > c->max_trailer_bytes) return -TG_ETOOBIG;
    switch (c->state) {
    case S_TRAILER0:
        if (ch == '\r') {
            c->state = S_END_LF;
            return 0;
        }
        /* Leading whitespace would be obs-fold; a name must start the line. */
        if (!is_token(ch)) return -TG_EPARSE;
        if (++c->trailers > c->max_trailers) return -TG_ETOOBIG;
        c->state = S_TRAILER_NAME;
        return 0;
    case S_TRAILER_NAME:
        if (ch == ':')
            c->state = S_TRAILER_VALUE;
        else if (!is_token(ch))
            return -TG_EPARSE;
        return 0;
    case S_TRAILER_VALUE:
        if (ch == '\r')
            c->state = S_TRAILER_LF;
        else if (!tg_http_cc_is(ch, TG_HTTP_CC_VALUE))
            return -TG_EPARSE;
        return 0;
    case S_TRAILER_LF:
    case S_END_LF:
        if (ch != '\n') return -TG_EPARSE;
        c->state = c->state == S_END_LF ? S_DONE : S_TRAILER0;
        return 0;
    default:
        return -TG_EPARSE;
    }
}

/* One framing byte (anything but chunk data). */
static int step(tg_http_chunked_t *c, unsigned char ch)
{
    if (c->state <= S_SIZE_LF && ++c->line > TG_HTTP_CHUNK_LINE_MAX) return -TG_ETOOBIG;
    switch (c->state) {
    case S_SIZE_FIRST:
    case S_SIZE:
        return step_size(c, ch);
    case S_EXT_SEMI:
    case S_EXT_NAME0:
    case S_EXT_NAME:
    case S_EXT_NAME_END:
        return step_ext(c, ch);
    case S_EXT_VAL0:
    case S_EXT_TOKEN:
    case S_EXT_QUOTED:
    case S_EXT_ESCAPE:
    case S_EXT_AFTER:
        return step_ext_value(c, ch);
    case S_SIZE_LF:
        return end_size_line(c, ch);
    case S_DATA_CR:
        if (ch != '\r') return -TG_EPARSE;
        c->state = S_DATA_LF;
        return 0;
    case S_DATA_LF:
        if (ch != '\n') return -TG_EPARSE;
        c->state = S_SIZE_FIRST;
        return 0;
    default:
        return step_trailer(c, ch);
    }
}

int tg_http_chunked_feed(tg_http_chunked_t *c, const char *buf, size_t len, size_t *consumed,
                         tg_str_t *data)
{
    size_t i = 0;
    int rc = 0;
    *data = (tg_str_t){buf, 0};
    while (i < len && c->state != S_DONE) {
        if (c->state == S_DATA) {
            size_t n = len - i;
            if (c->remaining < n) n = (size_t)c->remaining;
            *data = (tg_str_t){buf + i, n};
            c->remaining -= n;
            i += n;
            if (c->remaining == 0) c->state = S_DATA_CR;
            break;
        }
        rc = step(c, (unsigned char)buf[i]);
        if (rc < 0) break;
        i++;
    }
    *consumed = i;
    return rc;
}
