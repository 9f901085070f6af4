/*
 * access_log.h — one JSON line per proxied request (proxy_access_log).
 *
 * Each worker owns a tg_access_log_t that collects lines in a buffer and writes them with
 * one write(2) per loop iteration (tg_access_log_flush from the worker's check handle), so
 * logging costs no system call per request. Writes never exceed PIPE_BUF unless one line
 * alone does, and always end on a line boundary, so lines of different workers never
 * interleave on a pipe (stderr under a supervisor) or an O_APPEND file.
 *
 * Ownership: the file descriptor is opened once by tg_access_log_open and shared by every
 * worker's log; the caller closes it after the workers stopped. Threads: one log per worker.
 */
#ifndef TG_ACCESS_LOG_H
#define TG_ACCESS_LOG_H

#include "str.h"

#include <stdint.h>

typedef struct tg_access_log tg_access_log_t;

typedef struct tg_access_log_entry {
    int64_t time_ms; /* unix ms of the request start */
    tg_str_t request_id, client_ip, method, uri;
    int status;
    const char *route_id, *service_id, *consumer_id; /* NULL when none */
    int64_t request_ms, proxy_ms, upstream_ms;       /* < 0 when not applicable */
    uint64_t bytes_sent;
    const char *upstream; /* "host:port" or NULL */
    const char *error;    /* why the gateway answered itself (upstream failures), or NULL */
} tg_access_log_entry_t;

/*
 * Opens the destination named by proxy_access_log: "stderr" (or empty) → 2, "off" → -1,
 * else a file (relative to the prefix) opened for appending, created 0640. Returns the fd,
 * -1 for off, or -2 when the file cannot be opened (logged).
 */
int tg_access_log_open(const char *value);

/* A worker's log writing to `fd` (-1: every call is a no-op). */
tg_access_log_t *tg_access_log_new(int fd);
void tg_access_log_free(tg_access_log_t *l);

/* Adds one line (flushes first when the buffer is full). */
void tg_access_log_write(tg_access_log_t *l, const tg_access_log_entry_t *e);

/* Writes out buffered lines. */
void tg_access_log_flush(tg_access_log_t *l);

#endif
