/*
 * ctl_socket.c — the local control socket over nng req/rep; see ctl_socket.h.
 *
 * Threads: nng completes the server's aio on its own threads. That callback touches only
 * the reply slot (`incoming`, under `mu`) and the aio itself, then wakes the loop with
 * uv_async_send; everything else (decoding, commands, replies) runs on the loop thread.
 */
#include "ctl_socket.h"
#include "alloc.h"
#include "config.h"
#include "error.h"
#include "log.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* What nng accepts off the wire. Above TG_CTL_MAX_REQUEST we still read the message so the
 * client gets an error reply; above this nng drops the connection without reading it all, so
 * a runaway client cannot make the process allocate without bound. */
#define WIRE_MAX (4u * 1024 * 1024)
/* How often the watchdog checks that the listener still accepts, and how long it waits. */
#define WATCHDOG_INTERVAL_MS 2000
#define WATCHDOG_TIMEOUT_MS 3000

struct tg_ctl_server {
    char *path; /* absolute path of the socket file */
    nng_socket sock;
    nng_ctx ctx;
    nng_aio *aio;
    bool sock_open, ctx_open;
    atomic_bool stopping; /* set before the aio is stopped: the callback re-arms nothing */
    bool sending;         /* what the aio is doing: set by whoever arms it */

    pthread_mutex_t mu;
    nng_msg *incoming; /* parked by nng's thread, taken by the loop (under mu) */

    uv_loop_t *loop;
    uv_async_t async;
    bool async_init, async_closed;
    const tg_ctl_command_t *commands;
    size_t ncommands;
    void *ud;
    bool busy;        /* a request is with a command: the reply is owed */
    json_t *req;      /* that request */
    bool closing;     /* tg_ctl_server_close was called */
    int open_handles; /* uv handles not yet closed: the server is freed at 0 (and !busy) */

    /* The watchdog (see watchdog_tick): one SP handshake with ourselves now and then. */
    uv_timer_t wd_timer, wd_deadline;
    uv_pipe_t wd_pipe;
    uv_connect_t wd_connect;
    uv_write_t wd_write;
    uint8_t wd_buf[64];
    size_t wd_got;
    bool wd_running, wd_reported;
};

/* ---------------------------------------------------------------- paths and probing */

/* <prefix>/tollgate.sock, absolute when the prefix exists (messages and nng's URL). */
static char *socket_path(const char *prefix)
{
    char real[PATH_MAX];
    const char *base = realpath(prefix, real) ? real : prefix;
    return tg_asprintf("%s/%s", base, TG_CTL_SOCKET_NAME);
}

enum probe {
    PROBE_LIVE,
    PROBE_HUNG, /* something accepts connections but never completes the handshake */
    PROBE_NONE,
    PROBE_STALE,
    PROBE_DENIED,
    PROBE_NOT_SOCKET,
    PROBE_ERROR
};

/*
 * Is a process serving on `path`? Asked with nng itself, never with a bare connect: nng 1.5
 * (Debian 12) stops accepting for good when a peer disconnects during the SP handshake
 * (nanomsg/nng#1518), so only complete handshakes may ever reach a listener. On PROBE_LIVE
 * *live (when not NULL) is the connected req socket, for the caller to use and close; *uid is
 * the file's owner.
 */
static enum probe probe(const char *path, int *uid, nng_socket *live)
{
    struct stat st;
    *uid = -1;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? PROBE_NONE : errno == EACCES ? PROBE_DENIED : PROBE_ERROR;
    *uid = (int)st.st_uid;
    if (!S_ISSOCK(st.st_mode)) return PROBE_NOT_SOCKET;
    nng_socket sock;
    if (nng_req0_open(&sock) != 0) return PROBE_ERROR;
    char *url = tg_asprintf("ipc://%s", path);
    int rv = nng_dial(sock, url, NULL, 0); /* connect + handshake; at most nng's 10 s */
    free(url);
    if (rv == 0 && live) {
        *live = sock;
        return PROBE_LIVE;
    }
    nng_close(sock);
    switch (rv) {
    case 0:
        return PROBE_LIVE;
    case NNG_ECONNREFUSED:
    case NNG_ENOENT:
        return PROBE_STALE;
    case NNG_EPERM:
        return PROBE_DENIED;
    case NNG_ETIMEDOUT:
        return PROBE_HUNG;
    default:
        errno = EIO;
        return PROBE_ERROR;
    }
}

/* ---------------------------------------------------------------- server: nng side */

static void arm_recv(tg_ctl_server_t *s)
{
    if (atomic_load(&s->stopping)) return;
    s->sending = false;
    nng_ctx_recv(s->ctx, s->aio);
}

/* nng's thread: park what arrived and wake the loop; after a send, listen again. */
static void on_aio(void *arg)
{
    tg_ctl_server_t *s = arg;
    int rv = nng_aio_result(s->aio);
    if (s->sending) {
        if (rv != 0) nng_msg_free(nng_aio_get_msg(s->aio)); /* not sent: still ours */
        if (rv != NNG_ECLOSED) arm_recv(s);
        return;
    }
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED || atomic_load(&s->stopping)) return;
    if (rv != 0) { /* a pipe that went away mid-request: nothing to answer */
        arm_recv(s);
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->incoming = nng_aio_get_msg(s->aio);
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

/* ---------------------------------------------------------------- server: loop side */

/*
 * The server is the process's only long-lived nng user and is freed when the process stops
 * (or fails to start): end nng too. nng tears sockets down on a reaper thread of its own, and
 * nng_fini waits for it, so nothing of the closed socket is left behind at exit (LeakSanitizer
 * would see it). nng initialises itself again if used afterwards.
 */
static void server_free(tg_ctl_server_t *s)
{
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
    nng_fini();
}

static void maybe_free(tg_ctl_server_t *s)
{
    if (s->closing && !s->busy && s->open_handles == 0) server_free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    tg_ctl_server_t *s = h->data;
    s->open_handles--;
    maybe_free(s);
}

static void close_handle(tg_ctl_server_t *s, uv_handle_t *h)
{
    if (!h->loop || uv_is_closing(h)) return;
    h->data = s;
    uv_close(h, on_handle_closed);
}

void tg_ctl_reply(tg_ctl_request_t *s, json_t *reply)
{
    if (!s->busy) { /* a second reply to one request: a bug in the command */
        TG_LOGE("ctl", "a control command answered twice; the second answer is dropped");
        json_decref(reply);
        return;
    }
    s->busy = false;
    json_decref(s->req);
    s->req = NULL;
    if (s->closing || !s->ctx_open) { /* closed, or being re-opened: nobody to answer */
        json_decref(reply);
        maybe_free(s);
        return;
    }
    if (!json_is_object(reply)) {
        json_decref(reply);
        reply = json_pack("{s:b,s:s}", "ok", 0, "message", "internal error: no reply");
    }
    if (!json_object_get(reply, "ok")) json_object_set_new(reply, "ok", json_true());
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    nng_msg *m = NULL;
    if (!text || nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, text, strlen(text)) != 0)
        tg_fatal("ctl: out of memory building a reply");
    free(text);
    nng_aio_set_msg(s->aio, m);
    s->sending = true;
    nng_ctx_send(s->ctx, s->aio);
}

void tg_ctl_reply_error(tg_ctl_request_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) tg_fatal("ctl: out of memory");
    va_end(ap);
    tg_ctl_reply(r, json_pack("{s:b,s:s}", "ok", 0, "message", msg));
    free(msg);
}

static char *known_commands(const tg_ctl_server_t *s)
{
    char *list = tg_strdup("");
    for (size_t i = 0; i < s->ncommands; i++) {
        char *next = tg_asprintf("%s%s%s", list, i ? ", " : "", s->commands[i].name);
        free(list);
        list = next;
    }
    return list;
}

/* Decodes one request and hands it to its command; every failure is answered. */
static void dispatch(tg_ctl_server_t *s, const char *body, size_t len)
{
    s->busy = true;
    if (len > TG_CTL_MAX_REQUEST) {
        tg_ctl_reply_error(s, "request too large: %zu bytes (at most %d)", len, TG_CTL_MAX_REQUEST);
        return;
    }
    json_error_t jerr;
    json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!req) {
        tg_ctl_reply_error(s, "malformed request: %s (at byte %d)", jerr.text, jerr.position);
        return;
    }
    const char *name = json_string_value(json_object_get(req, "command"));
    if (name && strcmp(name, "_ping") == 0) { /* the watchdog's */
        json_decref(req);
        tg_ctl_reply(s, json_object());
        return;
    }
    const tg_ctl_command_t *cmd = NULL;
    for (size_t i = 0; name && i < s->ncommands; i++)
        if (strcmp(s->commands[i].name, name) == 0) cmd = &s->commands[i];
    if (!cmd) {
        char *known = known_commands(s);
        if (!json_is_object(req))
            tg_ctl_reply_error(s, "a request is a JSON object such as {\"command\": \"status\"}");
        else if (!name)
            tg_ctl_reply_error(s, "the request has no \"command\" string (known: %s)", known);
        else
            tg_ctl_reply_error(s, "unknown command '%s' (known: %s)", name, known);
        free(known);
        json_decref(req);
        return;
    }
    s->req = req;
    TG_LOGI("ctl", "control socket: %s", name);
    cmd->run(s, req, s->ud);
}

static void on_async(uv_async_t *a)
{
    tg_ctl_server_t *s = a->data;
    pthread_mutex_lock(&s->mu);
    nng_msg *m = s->incoming;
    s->incoming = NULL;
    pthread_mutex_unlock(&s->mu);
    if (!m || s->closing) {
        if (m) nng_msg_free(m);
        return;
    }
    dispatch(s, nng_msg_body(m), nng_msg_len(m));
    nng_msg_free(m);
}

/* ---------------------------------------------------------------- server: claiming */

/* The pid and role of the process serving on `sock` (one status request, bounded). */
static void who(nng_socket sock, int *pid, const char **role)
{
    static const char req[] = "{\"command\":\"status\"}";
    char *buf = NULL;
    size_t len = 0;
    *pid = 0;
    *role = "process";
    nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 3000);
    nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, 3000);
    if (nng_send(sock, (void *)req, sizeof(req) - 1, 0) != 0 ||
        nng_recv(sock, &buf, &len, NNG_FLAG_ALLOC) != 0)
        return;
    json_t *r = json_loadb(buf, len, 0, NULL);
    nng_free(buf, len);
    *pid = (int)json_integer_value(json_object_get(r, "pid"));
    const char *rl = json_string_value(json_object_get(r, "role"));
    if (rl) *role = strcmp(rl, "data_plane") == 0 ? "data plane" : "control plane";
    json_decref(r);
}

static int claim(tg_ctl_server_t *s, char *err, size_t errlen)
{
    int uid, pid;
    const char *role;
    nng_socket live;
    switch (probe(s->path, &uid, &live)) {
    case PROBE_LIVE: {
        who(live, &pid, &role);
        nng_close(live);
        char pidtext[32] = "";
        if (pid > 0) snprintf(pidtext, sizeof(pidtext), " (pid %d)", pid);
        snprintf(err, errlen,
                 "another Tollgate %s%s is already running with this prefix: its control socket "
                 "%s answers; stop it or use another prefix",
                 role, pidtext, s->path);
        return -TG_EEXISTS;
    }
    case PROBE_HUNG:
        snprintf(err, errlen,
                 "another process holds the control socket %s but does not answer; stop it or "
                 "use another prefix",
                 s->path);
        return -TG_EEXISTS;
    case PROBE_NOT_SOCKET:
        snprintf(err, errlen, "%s exists and is not a socket; move it away", s->path);
        return -TG_ECONFIG;
    case PROBE_DENIED:
        snprintf(err, errlen,
                 "cannot check the control socket %s (owned by uid %d): permission "
                 "denied",
                 s->path, uid);
        return -TG_EPERM;
    case PROBE_ERROR:
        snprintf(err, errlen, "cannot check the control socket %s: %s", s->path, strerror(errno));
        return -TG_EIO;
    case PROBE_STALE:
        /* Left behind by a process that died without cleaning up (SIGKILL, crash). */
        TG_LOGN("ctl", "replacing the stale control socket %s (no process listens on it)", s->path);
        if (unlink(s->path) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove the stale control socket %s: %s", s->path,
                     strerror(errno));
            return -TG_EIO;
        }
        break;
    case PROBE_NONE:
        break;
    }
    return 0;
}

static int listen_nng(tg_ctl_server_t *s, char *err, size_t errlen)
{
    char *url = tg_asprintf("ipc://%s", s->path);
    nng_listener l;
    int rv = nng_rep0_open(&s->sock);
    if (rv == 0) {
        s->sock_open = true;
        rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, WIRE_MAX);
    }
    if (rv == 0) rv = nng_listener_create(&l, s->sock, url);
    /* 0600 through nng, and a umask so the file is never wider even between bind and chmod. */
    if (rv == 0) rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0600);
    if (rv == 0) {
        mode_t old = umask(077);
        rv = nng_listener_start(l, 0);
        umask(old);
    }
    free(url);
    if (rv == 0) return 0;
    if (s->sock_open) nng_close(s->sock);
    s->sock_open = false;
    if (rv == NNG_EADDRINUSE) {
        snprintf(err, errlen,
                 "another Tollgate process took the control socket %s just now; "
                 "stop it or use another prefix",
                 s->path);
        return -TG_EEXISTS;
    }
    snprintf(err, errlen, "cannot listen on the control socket %s: %s", s->path, nng_strerror(rv));
    return -TG_EIO;
}

/* A context and an aio of our own (a stopped aio cannot be used again), receiving. */
static int open_ctx(tg_ctl_server_t *s)
{
    int rv = nng_aio_alloc(&s->aio, on_aio, s);
    if (rv == 0) rv = nng_ctx_open(&s->ctx, s->sock);
    if (rv != 0) {
        TG_LOGE("ctl", "control socket %s: %s", s->path, nng_strerror(rv));
        return -TG_EIO;
    }
    s->ctx_open = true;
    atomic_store(&s->stopping, false);
    arm_recv(s);
    return 0;
}

/* Stops nng's side: afterwards no callback runs, and the socket file is gone. */
static void close_nng(tg_ctl_server_t *s)
{
    atomic_store(&s->stopping, true);
    if (s->aio) {
        nng_aio_stop(s->aio);
        if (s->sending) nng_msg_free(nng_aio_get_msg(s->aio)); /* stopped mid-send */
        nng_aio_free(s->aio);
        s->aio = NULL;
    }
    s->sending = false;
    if (s->ctx_open) nng_ctx_close(s->ctx);
    if (s->sock_open) nng_close(s->sock); /* nng removes the socket file it created */
    s->ctx_open = s->sock_open = false;
    pthread_mutex_lock(&s->mu);
    if (s->incoming) nng_msg_free(s->incoming);
    s->incoming = NULL;
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- server: watchdog */

/*
 * nng 1.5 (Debian 12) has a listener bug (nanomsg/nng#1518, fixed in 1.6): a peer that
 * disconnects during the SP handshake — `nc -U`, a crashed client, any bare connect — makes
 * the listener stop handing new connections to the socket for good: they connect and
 * handshake, but their requests are never read, and the process could never be asked
 * anything again. So every WATCHDOG_INTERVAL_MS the loop sends itself one real request
 * (the internal command "_ping") through the socket file, the way a req0 client does; when no
 * reply comes back within WATCHDOG_TIMEOUT_MS (or the file was removed) the nng socket is
 * re-created on the same path. A complete exchange followed by a close is harmless to nng.
 */
static void wd_finish(tg_ctl_server_t *s, bool healthy);

static void reopen(tg_ctl_server_t *s)
{
    char err[1024];
    close_nng(s);
    int rc = claim(s, err, sizeof(err));
    if (!rc) rc = listen_nng(s, err, sizeof(err));
    if (!rc) rc = open_ctx(s);
    if (rc) {
        if (!s->wd_reported) TG_LOGE("ctl", "cannot re-open the control socket: %s", err);
        s->wd_reported = true;
        return;
    }
    s->wd_reported = false;
    TG_LOGN("ctl", "control socket %s re-opened", s->path);
}

static void wd_pipe_closed(uv_handle_t *h)
{
    tg_ctl_server_t *s = h->data;
    s->open_handles--;
    s->wd_running = false;
    maybe_free(s);
}

static void wd_finish(tg_ctl_server_t *s, bool healthy)
{
    if (!s->wd_running || uv_is_closing((uv_handle_t *)&s->wd_pipe)) return;
    uv_timer_stop(&s->wd_deadline);
    s->wd_pipe.data = s;
    uv_close((uv_handle_t *)&s->wd_pipe, wd_pipe_closed);
    if (healthy || s->closing) return;
    if (s->busy) return; /* a command is running: look again at the next tick */
    TG_LOGW("ctl",
            "the control socket %s stopped answering (nng listener bug, see "
            "ctl_socket.c); re-opening it",
            s->path);
    reopen(s);
}

static void wd_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    tg_ctl_server_t *s = h->data;
    *buf = uv_buf_init((char *)s->wd_buf + s->wd_got, (unsigned)(sizeof(s->wd_buf) - s->wd_got));
}

static void wd_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    tg_ctl_server_t *s = st->data;
    if (n < 0) {
        wd_finish(s, false);
        return;
    }
    s->wd_got += (size_t)n;
    /* nng's handshake (0 'S' 'P' 0, protocol, 0 0), then one message: type 1, 64-bit length,
     * our request id back, the reply. */
    if (s->wd_got < 8 + 9 + 4 && s->wd_got < sizeof(s->wd_buf)) return;
    wd_finish(s, memcmp(s->wd_buf, "\0SP\0", 4) == 0 && s->wd_buf[8] == 1);
}

static void wd_written(uv_write_t *w, int status)
{
    if (status < 0) wd_finish(w->data, false);
}

static void wd_connected(uv_connect_t *c, int status)
{
    tg_ctl_server_t *s = c->data;
    if (status < 0) { /* refused: our listener is gone; ENOENT: the file was removed */
        wd_finish(s, status == UV_ECANCELED);
        return;
    }
    /* Our half of the handshake as a req0 peer (protocol 0x30), then one request: type 1,
     * length (big endian), a request id with its top bit set, the body. */
    static const char body[] = "{\"command\":\"_ping\"}";
    static uint8_t hello[8 + 9 + 4 + sizeof(body) - 1] = {0, 'S', 'P', 0, 0, 0x30, 0, 0, 1};
    hello[16] = (uint8_t)(4 + sizeof(body) - 1);
    memcpy(hello + 17, "\x80\0\0\x01", 4);
    memcpy(hello + 21, body, sizeof(body) - 1);
    uv_buf_t b = uv_buf_init((char *)hello, sizeof(hello));
    s->wd_write.data = s;
    s->wd_pipe.data = s;
    if (uv_write(&s->wd_write, (uv_stream_t *)&s->wd_pipe, &b, 1, wd_written) != 0 ||
        uv_read_start((uv_stream_t *)&s->wd_pipe, wd_alloc, wd_read) != 0)
        wd_finish(s, false);
}

static void wd_timeout(uv_timer_t *t)
{
    wd_finish(t->data, false);
}

static void wd_tick(uv_timer_t *t)
{
    tg_ctl_server_t *s = t->data;
    if (s->wd_running || s->closing) return;
    if (!s->sock_open) { /* an earlier re-open failed: try again */
        if (!s->busy) reopen(s);
        return;
    }
    if (uv_pipe_init(s->loop, &s->wd_pipe, 0) != 0) return;
    s->open_handles++;
    s->wd_running = true;
    s->wd_got = 0;
    s->wd_connect.data = s;
    uv_pipe_connect(&s->wd_connect, &s->wd_pipe, s->path, wd_connected);
    uv_timer_start(&s->wd_deadline, wd_timeout, WATCHDOG_TIMEOUT_MS, 0);
}

/* ---------------------------------------------------------------- server: life cycle */

int tg_ctl_server_open(const char *prefix, tg_ctl_server_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (tg_mkdir_p(prefix, 0755) != 0) {
        snprintf(err, errlen, "cannot create prefix %s: %s", prefix, strerror(errno));
        return -TG_ESYS;
    }
    tg_ctl_server_t *s = tg_calloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->path = socket_path(prefix);
    struct sockaddr_un sa;
    int rc = 0;
    if (strlen(s->path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen,
                 "the control socket path %s is longer than a unix socket allows "
                 "(%zu bytes): use a shorter prefix",
                 s->path, sizeof(sa.sun_path) - 1);
        rc = -TG_ECONFIG;
    }
    if (!rc) rc = claim(s, err, errlen);
    if (!rc) rc = listen_nng(s, err, errlen);
    if (rc) {
        server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int tg_ctl_server_start(tg_ctl_server_t *s, uv_loop_t *loop, const tg_ctl_command_t *commands,
                        size_t ncommands, void *ud)
{
    s->loop = loop;
    s->commands = commands;
    s->ncommands = ncommands;
    s->ud = ud;
    uv_async_init(loop, &s->async, on_async);
    uv_timer_init(loop, &s->wd_timer);
    uv_timer_init(loop, &s->wd_deadline);
    s->async.data = s->wd_timer.data = s->wd_deadline.data = s;
    s->open_handles += 3;
    if (open_ctx(s) != 0) return -TG_EIO;
    uv_timer_start(&s->wd_timer, wd_tick, WATCHDOG_INTERVAL_MS, WATCHDOG_INTERVAL_MS);
    uv_unref((uv_handle_t *)&s->wd_timer); /* the watchdog alone keeps no loop alive */
    TG_LOGN("ctl", "control socket listening on %s", s->path);
    return 0;
}

const char *tg_ctl_server_path(const tg_ctl_server_t *s)
{
    return s->path;
}

void tg_ctl_server_close(tg_ctl_server_t *s)
{
    if (!s || s->closing) return;
    s->closing = true;
    /* After close_nng no nng callback runs or will run: the uv handles are ours alone. */
    close_nng(s);
    if (s->loop) {
        close_handle(s, (uv_handle_t *)&s->async);
        close_handle(s, (uv_handle_t *)&s->wd_timer);
        close_handle(s, (uv_handle_t *)&s->wd_deadline);
        if (s->wd_running && !uv_is_closing((uv_handle_t *)&s->wd_pipe)) {
            s->wd_pipe.data = s;
            uv_close((uv_handle_t *)&s->wd_pipe, wd_pipe_closed);
        }
    }
    maybe_free(s);
}

/* ---------------------------------------------------------------- client */

/*
 * Connects to the process serving `path`: 0 with *sock, or a sentence for the user in err
 * when nothing (usable) listens there.
 */
static int connect_to(const char *prefix, const char *path, nng_socket *sock, char *err,
                      size_t errlen)
{
    int uid;
    switch (probe(path, &uid, sock)) {
    case PROBE_LIVE:
        return 0;
    case PROBE_HUNG:
        snprintf(err, errlen,
                 "the process with prefix %s accepts connections on %s but does not "
                 "answer",
                 prefix, path);
        return -TG_ETIMEOUT;
    case PROBE_NONE:
        snprintf(err, errlen, "no Tollgate running with prefix %s (no control socket %s)", prefix,
                 path);
        return -TG_ENOTFOUND;
    case PROBE_STALE:
        snprintf(err, errlen,
                 "no Tollgate running with prefix %s (%s is left over from a process that is "
                 "gone)",
                 prefix, path);
        return -TG_ENOTFOUND;
    case PROBE_DENIED:
        snprintf(err, errlen,
                 "permission denied on the control socket %s: it is owner-only (uid %d); run "
                 "this command as that user",
                 path, uid);
        return -TG_EPERM;
    case PROBE_NOT_SOCKET:
        snprintf(err, errlen, "no Tollgate running with prefix %s (%s is not a socket)", prefix,
                 path);
        return -TG_ENOTFOUND;
    case PROBE_ERROR:
        break;
    }
    snprintf(err, errlen, "cannot reach the control socket %s: %s", path, strerror(errno));
    return -TG_EIO;
}

static int exchange(nng_socket sock, const char *prefix, const char *text, int timeout_ms,
                    json_t **reply, char *err, size_t errlen)
{
    int rv = nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, timeout_ms);
    if (rv == 0) rv = nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, timeout_ms);
    /* Never re-send on our own: a reload must run once. */
    if (rv == 0) rv = nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if (rv == 0) rv = nng_send(sock, (void *)text, strlen(text), 0);
    char *buf = NULL;
    size_t len = 0;
    if (rv == 0) rv = nng_recv(sock, &buf, &len, NNG_FLAG_ALLOC);
    if (rv == NNG_ETIMEDOUT) {
        snprintf(err, errlen, "the Tollgate process with prefix %s did not answer within %d s",
                 prefix, timeout_ms / 1000);
        return -TG_ETIMEOUT;
    }
    if (rv != 0) {
        snprintf(err, errlen, "control socket of prefix %s: %s", prefix, nng_strerror(rv));
        return -TG_EIO;
    }
    *reply = json_loadb(buf, len, 0, NULL);
    nng_free(buf, len);
    if (!json_is_object(*reply)) {
        json_decref(*reply);
        *reply = NULL;
        snprintf(err, errlen,
                 "the process with prefix %s answered something that is not a JSON "
                 "object",
                 prefix);
        return -TG_EPARSE;
    }
    return 0;
}

int tg_ctl_call(const char *prefix, const json_t *request, int timeout_ms, json_t **reply,
                char *err, size_t errlen)
{
    *reply = NULL;
    char *path = socket_path(prefix);
    nng_socket sock;
    int rc = connect_to(prefix, path, &sock, err, errlen);
    free(path);
    if (rc) return rc;
    char *text = json_dumps(request, JSON_COMPACT);
    rc = exchange(sock, prefix, text, timeout_ms, reply, err, errlen);
    free(text);
    nng_close(sock);
    return rc;
}
