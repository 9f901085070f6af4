/*
 * access_log.c — buffered JSON access log lines; see access_log.h.
 */
#include "access_log.h"
#include "alloc.h"
#include "config.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define LINE_MAX_BYTES 16384
#define URI_LOGGED_MAX 2048 /* longer URIs are cut: a line must fit LINE_MAX_BYTES */

struct tg_access_log {
    int fd;
    size_t len;
    char buf[BUF_SIZE];
};

int tg_access_log_open(const char *value)
{
    if (!*value || strcmp(value, "stderr") == 0) return STDERR_FILENO;
    if (strcmp(value, "off") == 0) return -1;
    char *path = value[0] == '/' ? tg_strdup(value) : tg_config_prefix_path(value);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) TG_LOGE("dp", "cannot open proxy_access_log %s: %s", path, strerror(errno));
    free(path);
    return fd < 0 ? -2 : fd;
}

tg_access_log_t *tg_access_log_new(int fd)
{
    tg_access_log_t *l = tg_malloc(sizeof(*l));
    l->fd = fd;
    l->len = 0;
    return l;
}

void tg_access_log_free(tg_access_log_t *l)
{
    if (!l) return;
    tg_access_log_flush(l);
    free(l);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* a full disk or closed pipe loses log lines, never requests */
        p += w;
        n -= (size_t)w;
    }
}

void tg_access_log_flush(tg_access_log_t *l)
{
    size_t off = 0;
    while (off < l->len) {
        size_t n = l->len - off;
        if (n > PIPE_BUF) {
            /* end the piece on a line boundary; a single longer line goes alone */
            size_t cut = PIPE_BUF;
            while (cut > 0 && l->buf[off + cut - 1] != '\n')
                cut--;
            if (cut == 0)
                cut = (size_t)((char *)memchr(l->buf + off, '\n', n) - (l->buf + off)) + 1;
            n = cut;
        }
        write_all(l->fd, l->buf + off, n);
        off += n;
    }
    l->len = 0;
}

typedef struct line {
    char *p;
    size_t len, cap;
} line_t;

static void put(line_t *ln, const char *s, size_t n)
{
    if (ln->len + n > ln->cap) n = ln->cap - ln->len;
    memcpy(ln->p + ln->len, s, n);
    ln->len += n;
}

static void put_str(line_t *ln, const char *s)
{
    put(ln, s, strlen(s));
}

/* A JSON string (quotes included); bytes that are not printable ASCII become \u00XX. */
static void put_json(line_t *ln, tg_str_t s)
{
    put(ln, "\"", 1);
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(ln, esc, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(ln, esc, 6);
        } else {
            put(ln, (const char *)&c, 1);
        }
    }
    put(ln, "\"", 1);
}

static void put_field(line_t *ln, const char *name, const char *v)
{
    put(ln, ",\"", 2);
    put_str(ln, name);
    put(ln, "\":", 2);
    if (v)
        put_json(ln, tg_str_from(v));
    else
        put_str(ln, "null");
}

static void put_num(line_t *ln, const char *name, int64_t v, bool null_if_negative)
{
    char num[48];
    if (null_if_negative && v < 0)
        snprintf(num, sizeof(num), ",\"%s\":null", name);
    else
        snprintf(num, sizeof(num), ",\"%s\":%lld", name, (long long)v);
    put_str(ln, num);
}

static void put_time(line_t *ln, int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char t[64];
    snprintf(t, sizeof(t), "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    put_str(ln, t);
}

static void format(line_t *ln, const tg_access_log_entry_t *e)
{
    put_time(ln, e->time_ms);
    put_str(ln, ",\"request_id\":");
    put_json(ln, e->request_id);
    put_str(ln, ",\"client_ip\":");
    put_json(ln, e->client_ip);
    put_str(ln, ",\"method\":");
    put_json(ln, e->method);
    put_str(ln, ",\"uri\":");
    tg_str_t uri = e->uri;
    if (uri.len > URI_LOGGED_MAX) uri.len = URI_LOGGED_MAX;
    put_json(ln, uri);
    put_num(ln, "status", e->status, false);
    put_field(ln, "route_id", e->route_id);
    put_field(ln, "service_id", e->service_id);
    put_field(ln, "consumer_id", e->consumer_id);
    put_field(ln, "upstream", e->upstream);
    put_num(ln, "bytes_sent", (int64_t)e->bytes_sent, false);
    put_str(ln, ",\"latencies\":{\"request\":");
    char num[32];
    snprintf(num, sizeof(num), "%lld", (long long)(e->request_ms < 0 ? 0 : e->request_ms));
    put_str(ln, num);
    put_num(ln, "proxy", e->proxy_ms, true);
    put_num(ln, "upstream", e->upstream_ms, true);
    put_str(ln, "}");
    if (e->error) put_field(ln, "error", e->error);
    put_str(ln, "}");
}

void tg_access_log_write(tg_access_log_t *l, const tg_access_log_entry_t *e)
{
    if (l->fd < 0) return;
    if (BUF_SIZE - l->len < LINE_MAX_BYTES) tg_access_log_flush(l);
    line_t ln = {l->buf + l->len, 0, LINE_MAX_BYTES - 1};
    format(&ln, e);
    ln.p[ln.len++] = '\n';
    l->len += ln.len;
}
