/*
 * ctl_socket.h — the local control socket (DESIGN §1, §3): nng req/rep on
 * ipc://<prefix>/tollgate.sock, one JSON request, one JSON reply.
 *
 * Server (a running CP or DP): tg_ctl_server_open claims the socket early in start-up (mode
 * 0600; refused when another live process answers on it, a stale file is replaced), then
 * tg_ctl_server_start attaches it to the process's libuv loop with a table of commands.
 * nng receives on its own threads; those threads only park the message in the server's reply
 * slot and wake the loop (uv_async). Decoding, the command and the reply all happen on the
 * loop thread, so a command may read and change the process's loop state freely. Requests are
 * served one at a time (a control socket carries a handful of requests per minute); a command
 * may answer later (after a database round trip) by keeping the tg_ctl_request_t and calling
 * tg_ctl_reply once.
 *
 * Wire format. Request: {"command": "<name>", ...arguments}. Reply: a JSON object with
 * "ok": true and the command's fields, or {"ok": false, "message": "..."} — for garbage,
 * non-object JSON, a missing or unknown command, a request over TG_CTL_MAX_REQUEST bytes, or
 * a command that failed. Bad requests never stop the process.
 *
 * Client (the CLI): tg_ctl_call sends one request and waits for the reply, with a timeout, and
 * says in plain words why nothing answered ("no Tollgate running with prefix X").
 *
 * Ownership: the server owns its nng socket, aio and uv_async_t; tg_ctl_server_close (loop
 * thread) releases them and frees the server once nothing is in flight.
 */
#ifndef TG_CTL_SOCKET_H
#define TG_CTL_SOCKET_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#define TG_CTL_SOCKET_NAME "tollgate.sock"
#define TG_CTL_MAX_REQUEST (64 * 1024) /* larger requests are answered with an error */
#define TG_CTL_DEFAULT_TIMEOUT_MS 30000

typedef struct tg_ctl_server tg_ctl_server_t;
typedef struct tg_ctl_server tg_ctl_request_t; /* the one request in flight */

/*
 * A command's handler, on the loop thread. `req` is the whole decoded request (borrowed,
 * valid until tg_ctl_reply). It must call tg_ctl_reply(r, ...) exactly once, now or later.
 */
typedef void (*tg_ctl_command_cb)(tg_ctl_request_t *r, const json_t *req, void *ud);

typedef struct tg_ctl_command {
    const char *name;
    tg_ctl_command_cb run;
} tg_ctl_command_t;

/*
 * Claims <prefix>/tollgate.sock: listens on it with mode 0600. Returns 0 with *out, or
 * -TG_EEXISTS when another live process answers on the socket (the message names it),
 * -TG_ECONFIG when the path is unusable (too long for a unix socket, not a socket), -TG_EIO
 * for other failures; err says why. Call before threads that create files exist (it sets
 * the umask for the bind).
 */
int tg_ctl_server_open(const char *prefix, tg_ctl_server_t **out, char *err, size_t errlen);

/*
 * Starts serving on `loop` with `commands` (ncommands entries, borrowed for the server's
 * life) and `ud` for every handler. Requests that arrived since open are served now.
 * 0 or -TG_EIO (logged).
 */
int tg_ctl_server_start(tg_ctl_server_t *s, uv_loop_t *loop, const tg_ctl_command_t *commands,
                        size_t ncommands, void *ud);

/* The socket's path (owned by the server). */
const char *tg_ctl_server_path(const tg_ctl_server_t *s);

/*
 * Answers the request in flight: takes ownership of `reply` (a JSON object; "ok": true is
 * added unless it has "ok"). Loop thread. After tg_ctl_server_close it only frees `reply`.
 */
void tg_ctl_reply(tg_ctl_request_t *r, json_t *reply);
/* Answers {"ok": false, "message": <printf format>}. */
void tg_ctl_reply_error(tg_ctl_request_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Stops listening, removes the socket file and frees the server (at once, or when the
 * request in flight is answered). Loop thread; NULL is a no-op. The uv_async_t closes
 * asynchronously: run the loop afterwards.
 */
void tg_ctl_server_close(tg_ctl_server_t *s);

/*
 * Client: sends `request` (borrowed) to the process running with `prefix` and waits up to
 * timeout_ms for its reply. 0 with *reply (new reference, an object — check its "ok"), or
 * -TG_ENOTFOUND (nothing runs with that prefix), -TG_EPERM (socket not ours to use),
 * -TG_ETIMEOUT (no answer in time), -TG_EPARSE (the answer is not a JSON object), -TG_EIO;
 * err holds a sentence for the user.
 */
int tg_ctl_call(const char *prefix, const json_t *request, int timeout_ms, json_t **reply,
                char *err, size_t errlen);

#endif
