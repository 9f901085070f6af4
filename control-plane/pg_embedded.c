#include "pg_embedded.h"
#include "alloc.h"
#include "error.h"
#include "log.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MOD "pg_embedded"
/* The socket lives in a private directory, so the port only names the socket file. */
#define PG_PORT "5432"
#define PG_SOCKET_FILE ".s.PGSQL." PG_PORT
#define PG_DISTRO_DIR "/usr/lib/postgresql"
#define READY_TIMEOUT_MS 60000
#define STOP_TIMEOUT_MS 30000
#define INITDB_TIMEOUT_MS 300000
#define USERADD_TIMEOUT_MS 60000

struct tg_pg_embedded {
    pid_t pid;   /* the postmaster we started; 0 when attached to another owner's server */
    int lock_fd; /* flock held while we own the server; -1 when attached */
};

/* Who runs initdb and postgres: ourselves, or (when we are root) an unprivileged user. */
struct runas {
    int drop;
    uid_t uid;
    gid_t gid;
};

/* Everything one start needs; heap-allocated because of the PATH_MAX buffers. */
struct ctx {
    char prefix[PATH_MAX], pgdir[PATH_MAX], data[PATH_MAX], run[PATH_MAX], log[PATH_MAX],
        lock[PATH_MAX], bindir[PATH_MAX];
    struct runas ra;
    char *err;
    size_t errlen;
};

static int fail(struct ctx *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct ctx *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* out[PATH_MAX] = dir/name (memcpy rather than snprintf: no truncation warnings to silence). */
static int join(char *out, const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    if (a + 1 + b >= PATH_MAX) return -TG_ETOOBIG;
    memmove(out, dir, a);
    out[a] = '/';
    memcpy(out + a + 1, name, b + 1);
    return 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads the first line of a small file into buf (without the newline); 0 or -TG_EIO. */
static int read_line(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f) return -TG_EIO;
    char *ok = fgets(buf, (int)cap, f);
    fclose(f);
    if (!ok) return -TG_EIO;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

/*
 * The most useful line of the server's log for an error message: the last FATAL/PANIC/ERROR
 * line of its tail, else the last line.
 */
static void log_reason(const char *path, char *out, size_t cap)
{
    char tail[4096];
    snprintf(out, cap, "see %s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(tail) - 1 ? size - (off_t)sizeof(tail) + 1 : 0;
    ssize_t n = pread(fd, tail, sizeof(tail) - 1, from);
    close(fd);
    if (n <= 0) return;
    tail[n] = '\0';
    const char *best = NULL, *last = NULL;
    char *save = NULL;
    for (char *line = strtok_r(tail, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        last = line;
        /* postgres says "FATAL:", initdb says "initdb: error:" */
        if (strcasestr(line, "fatal:") || strcasestr(line, "panic:") || strcasestr(line, "error:"))
            best = line;
    }
    if (best || last) snprintf(out, cap, "%s (log: %s)", best ? best : last, path);
}

/* ---- finding the binaries ---------------------------------------------------------------- */

static int usable_bindir(const char *dir)
{
    char p[PATH_MAX];
    if (join(p, dir, "initdb") != 0 || access(p, X_OK) != 0) return 0;
    return join(p, dir, "postgres") == 0 && access(p, X_OK) == 0;
}

static int bindir_from_pg_config(char *out)
{
    FILE *p = popen("pg_config --bindir 2>/dev/null", "r");
    if (!p) return -TG_ENOTFOUND;
    char line[PATH_MAX] = "";
    char *ok = fgets(line, sizeof(line), p);
    pclose(p);
    line[strcspn(line, "\r\n")] = '\0';
    if (!ok || !usable_bindir(line)) return -TG_ENOTFOUND;
    strcpy(out, line);
    return 0;
}

/*
 * Prefers the major version the existing cluster was created with (a newer server cannot open
 * it), then the highest /usr/lib/postgresql/<N>/bin, then `pg_config --bindir`.
 */
static int find_bindir(struct ctx *c)
{
    char path[PATH_MAX], ver[32];
    if (join(path, c->data, "PG_VERSION") == 0 && read_line(path, ver, sizeof(ver)) == 0 &&
        snprintf(c->bindir, PATH_MAX, PG_DISTRO_DIR "/%s/bin", ver) < PATH_MAX &&
        usable_bindir(c->bindir))
        return 0;
    long best = -1;
    DIR *d = opendir(PG_DISTRO_DIR);
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (!isdigit((unsigned char)e->d_name[0]) || *end || v <= best) continue;
        snprintf(path, sizeof(path), PG_DISTRO_DIR "/%ld/bin", v);
        if (usable_bindir(path)) best = v;
    }
    if (d) closedir(d);
    if (best >= 0) {
        snprintf(c->bindir, PATH_MAX, PG_DISTRO_DIR "/%ld/bin", best);
        return 0;
    }
    if (bindir_from_pg_config(c->bindir) == 0) return 0;
    return fail(c, -TG_ENOTFOUND,
                "no PostgreSQL server binaries found (looked in " PG_DISTRO_DIR
                "/<N>/bin and `pg_config --bindir`); install the `postgresql` package or set "
                "pg_host");
}

/* ---- child processes --------------------------------------------------------------------- */

struct spawn {
    const char *const *argv;
    const struct runas *ra;
    int outfd;       /* stdout+stderr of the child; -1 = inherit */
    const char *cwd; /* may be NULL */
    int server;      /* own process group + SIGINT when our thread dies */
};

static _Noreturn void child_fail(const char *what, const char *arg)
{
    /* Only async-signal-safe calls between fork and exec. */
    const char *parts[] = {"tollgate: ", what, " ", arg, "\n"};
    for (size_t i = 0; i < 5; i++) {
        ssize_t w = write(STDERR_FILENO, parts[i], strlen(parts[i]));
        (void)w;
    }
    _exit(127);
}

static pid_t spawn(const struct spawn *s)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;

    /* Child. The caller may block or ignore signals; exec'd programs expect defaults. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    if (s->server) setpgid(0, 0);
    int in = open("/dev/null", O_RDONLY);
    if (in >= 0 && in != STDIN_FILENO) {
        dup2(in, STDIN_FILENO);
        close(in);
    }
    if (s->outfd >= 0) {
        dup2(s->outfd, STDOUT_FILENO);
        dup2(s->outfd, STDERR_FILENO);
    }
    if (s->cwd && chdir(s->cwd) != 0) child_fail("cannot enter", s->cwd);
    if (s->ra->drop) {
        gid_t g = s->ra->gid;
        if (setgroups(1, &g) != 0 || setgid(s->ra->gid) != 0 || setuid(s->ra->uid) != 0)
            child_fail("cannot switch user for", s->argv[0]);
    }
    /* Set after setuid: a credential change clears it. */
    if (s->server && (prctl(PR_SET_PDEATHSIG, SIGINT) != 0 || getppid() != parent)) _exit(1);
    execv(s->argv[0], (char *const *)s->argv);
    child_fail("cannot execute", s->argv[0]);
}

/* Waits up to timeout_ms for pid to exit; 0 with *status set, or -TG_ETIMEOUT. */
static int wait_exit(pid_t pid, long timeout_ms, int *status)
{
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 0;
        if (r < 0 && errno != EINTR) { /* reaped elsewhere */
            *status = -1;
            return 0;
        }
        if (now_ms() >= deadline) return -TG_ETIMEOUT;
        sleep_ms(20);
    }
}

/* Runs argv to completion; returns its exit status (>= 0), or a negative TG_E code. */
static int run_sync(const struct spawn *s, long timeout_ms)
{
    int st;
    pid_t pid = spawn(s);
    if (pid < 0) return -TG_ESYS;
    if (wait_exit(pid, timeout_ms, &st) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -TG_ETIMEOUT;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/*
 * Stops a postmaster: fast shutdown, then immediate, then SIGKILL. `child` says whether we can
 * reap it; otherwise its disappearance is polled with kill(pid, 0).
 */
static int stop_postmaster(pid_t pid, int child)
{
    static const int sigs[] = {SIGINT, SIGQUIT, SIGKILL};
    static const long waits[] = {STOP_TIMEOUT_MS, 5000, 5000};
    for (int i = 0; i < 3; i++) {
        if (kill(pid, sigs[i]) != 0 && errno == ESRCH && !child) return i ? -TG_ETIMEOUT : 0;
        long deadline = now_ms() + waits[i];
        int st;
        if (child && wait_exit(pid, waits[i], &st) == 0) return i ? -TG_ETIMEOUT : 0;
        while (!child && now_ms() < deadline) {
            if (kill(pid, 0) != 0 && errno == ESRCH) return i ? -TG_ETIMEOUT : 0;
            sleep_ms(20);
        }
        TG_LOGW(MOD, "PostgreSQL (pid %d) did not stop after signal %d", (int)pid, sigs[i]);
    }
    return -TG_ETIMEOUT;
}

/* ---- the unprivileged user ------------------------------------------------------------------ */

static int valid_user_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32 || !(islower((unsigned char)s[0]) || s[0] == '_')) return 0;
    for (size_t i = 1; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_' &&
            s[i] != '-')
            return 0;
    return 1;
}

static int lookup_user(const char *name, struct runas *ra)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || !res) return -TG_ENOTFOUND;
    ra->uid = pw.pw_uid;
    ra->gid = pw.pw_gid;
    return 0;
}

static int resolve_runas(struct ctx *c, const char *user)
{
    memset(&c->ra, 0, sizeof(c->ra));
    if (geteuid() != 0) {
        c->ra.uid = geteuid();
        c->ra.gid = getegid();
        return 0;
    }
    c->ra.drop = 1;
    if (!user || !valid_user_name(user))
        return fail(c, -TG_ECONFIG, "pg_embedded_user '%s' is not a valid user name",
                    user ? user : "");
    if (lookup_user(user, &c->ra) == 0) {
        if (c->ra.uid != 0) return 0;
        return fail(c, -TG_ECONFIG, "pg_embedded_user '%s' is root; PostgreSQL refuses root", user);
    }
    const char *useradd =
        access("/usr/sbin/useradd", X_OK) == 0 ? "/usr/sbin/useradd" : "/sbin/useradd";
    const char *argv[] = {useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                          user,    NULL};
    struct runas self = {0, 0, 0};
    struct spawn s = {argv, &self, -1, NULL, 0};
    TG_LOGN(MOD, "creating system user '%s' to run the embedded PostgreSQL", user);
    int rc = run_sync(&s, USERADD_TIMEOUT_MS);
    /* Another process may have created it at the same moment: look again either way. */
    if (lookup_user(user, &c->ra) == 0) return 0;
    return fail(c, -TG_ESYS, "could not create system user '%s' (useradd exit %d)", user, rc);
}

/* ---- directories ---------------------------------------------------------------------------- */

static int mkdir_p(char *path, mode_t mode)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int r = mkdir(path, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST) return -TG_ESYS;
    }
    return mkdir(path, mode) == 0 || errno == EEXIST ? 0 : -TG_ESYS;
}

static int can_traverse(const struct stat *st, const struct runas *ra)
{
    if (st->st_uid == ra->uid) return (st->st_mode & S_IXUSR) != 0;
    if (st->st_gid == ra->gid) return (st->st_mode & S_IXGRP) != 0;
    return (st->st_mode & S_IXOTH) != 0;
}

/*
 * The server's user must be able to walk from / to <prefix>/pg. Directories that stop it get
 * the search bit for others (not the read bit: their listing stays private), loudly.
 */
static int make_traversable(struct ctx *c)
{
    char path[PATH_MAX];
    strcpy(path, c->prefix);
    for (char *p = path;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        struct stat st;
        const char *dir = path[0] ? path : "/";
        if (stat(dir, &st) != 0)
            return fail(c, -TG_ESYS, "cannot stat %s: %s", dir, strerror(errno));
        if (!can_traverse(&st, &c->ra)) {
            if (chmod(dir, (st.st_mode & 07777) | S_IXOTH) != 0)
                return fail(c, -TG_ESYS, "cannot make %s traversable: %s", dir, strerror(errno));
            TG_LOGW(MOD, "added o+x (search only) to %s so the PostgreSQL user can reach %s", dir,
                    c->pgdir);
        }
        *p = saved;
        if (saved == '\0') return 0;
    }
}

static int own_dir(struct ctx *c, const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fail(c, -TG_ESYS, "cannot create %s: %s", dir, strerror(errno));
    if ((c->ra.drop && chown(dir, c->ra.uid, c->ra.gid) != 0) || chmod(dir, 0700) != 0)
        return fail(c, -TG_ESYS, "cannot set owner/mode of %s: %s", dir, strerror(errno));
    return 0;
}

static int set_paths(struct ctx *c, const char *prefix)
{
    char abs[PATH_MAX], cwd[PATH_MAX];
    int n;
    if (prefix[0] == '/') {
        n = snprintf(abs, sizeof(abs), "%s", prefix);
    } else {
        if (!getcwd(cwd, sizeof(cwd))) return fail(c, -TG_ESYS, "getcwd: %s", strerror(errno));
        n = snprintf(abs, sizeof(abs), "%s/%s", cwd, prefix);
    }
    if (n < 0 || n >= (int)sizeof(abs)) return fail(c, -TG_ETOOBIG, "prefix path too long");
    if (mkdir_p(abs, 0700) != 0 || !realpath(abs, c->prefix))
        return fail(c, -TG_ESYS, "cannot create prefix %s: %s", abs, strerror(errno));
    if (join(c->pgdir, c->prefix, "pg") || join(c->data, c->pgdir, "data") ||
        join(c->run, c->pgdir, "run") || join(c->log, c->pgdir, "postgres.log") ||
        join(c->lock, c->pgdir, "lock"))
        return fail(c, -TG_ETOOBIG, "prefix path too long");
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 2 - strlen(PG_SOCKET_FILE);
    if (strlen(c->run) > max)
        return fail(c, -TG_ETOOBIG,
                    "prefix %s is too long for PostgreSQL's unix socket (%s must be at most %zu "
                    "bytes); choose a shorter prefix or set pg_host",
                    c->prefix, c->run, max);
    return 0;
}

static int prepare_dirs(struct ctx *c)
{
    int rc;
    if (c->ra.drop && (rc = make_traversable(c)) != 0) return rc;
    if ((rc = own_dir(c, c->pgdir)) != 0 || (rc = own_dir(c, c->run)) != 0) return rc;
    return 0;
}

static int open_owned(struct ctx *c, const char *path, int flags)
{
    int fd = open(path, flags | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return fail(c, -TG_ESYS, "cannot open %s: %s", path, strerror(errno));
    if (c->ra.drop && fchown(fd, c->ra.uid, c->ra.gid) != 0) {
        close(fd);
        return fail(c, -TG_ESYS, "cannot chown %s: %s", path, strerror(errno));
    }
    return fd;
}

/* ---- the server ------------------------------------------------------------------------------ */

/* Appends key='value' (libpq quoting) to a conninfo string being built in buf[cap]. */
static int ci_add(char *buf, size_t cap, const char *key, const char *val)
{
    size_t n = strlen(buf);
    int w = snprintf(buf + n, cap - n, "%s%s='", n ? " " : "", key);
    if (w < 0 || (size_t)w >= cap - n) return -TG_ETOOBIG;
    n += (size_t)w;
    for (const char *v = val; *v; v++) {
        if (n + 3 >= cap) return -TG_ETOOBIG;
        if (*v == '\'' || *v == '\\') buf[n++] = '\\';
        buf[n++] = *v;
    }
    if (n + 2 > cap) return -TG_ETOOBIG;
    buf[n++] = '\'';
    buf[n] = '\0';
    return 0;
}

static int conninfo_for(const struct ctx *c, const char *db, const char *user, char *buf,
                        size_t cap)
{
    if (cap == 0) return -TG_ETOOBIG;
    buf[0] = '\0';
    if (ci_add(buf, cap, "host", c->run) || ci_add(buf, cap, "port", PG_PORT) ||
        ci_add(buf, cap, "dbname", db) || ci_add(buf, cap, "user", user))
        return -TG_ETOOBIG;
    return 0;
}

/*
 * Live processes whose working directory is our data directory: every process of a server
 * (postmaster, backends, auxiliaries) chdirs there, so this finds a server left behind by a
 * crash, or backends still draining after their postmaster was killed. Zombies have no cwd.
 */
static int data_dir_users(const struct ctx *c, pid_t *pids, int cap)
{
    int n = 0;
    DIR *d = opendir("/proc");
    for (struct dirent *e = d ? readdir(d) : NULL; e && n < cap; e = readdir(d)) {
        char path[64], cwd[PATH_MAX];
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        snprintf(path, sizeof(path), "/proc/%.20s/cwd", e->d_name);
        ssize_t len = readlink(path, cwd, sizeof(cwd) - 1);
        if (len <= 0) continue;
        cwd[len] = '\0';
        if (strcmp(cwd, c->data) == 0) pids[n++] = (pid_t)strtol(e->d_name, NULL, 10);
    }
    if (d) closedir(d);
    return n;
}

/*
 * Called with the lock held, so no live owner uses this prefix: whatever server still runs on
 * the data directory is an orphan of a crashed owner. Stops it (fast shutdown of its
 * postmaster, then SIGKILL for stragglers) and removes the lock files it left, which would
 * otherwise make postgres refuse to start when their recorded pid has been reused.
 */
static int clear_leftovers(struct ctx *c)
{
    char pidfile[PATH_MAX], sock[PATH_MAX], line[64] = "";
    pid_t users[64];
    int n = data_dir_users(c, users, 64);
    if (n > 0) {
        join(pidfile, c->data, "postmaster.pid");
        read_line(pidfile, line, sizeof(line));
        pid_t pm = (pid_t)strtol(line, NULL, 10);
        TG_LOGW(MOD, "stopping a PostgreSQL left running on %s by an earlier run", c->data);
        for (int i = 0; i < n; i++)
            if (users[i] == pm) stop_postmaster(pm, 0);
        for (long deadline = now_ms() + 10000; n > 0 && now_ms() < deadline; sleep_ms(50))
            n = data_dir_users(c, users, 64);
        for (int i = 0; i < n; i++)
            kill(users[i], SIGKILL);
        for (long deadline = now_ms() + 5000; n > 0 && now_ms() < deadline; sleep_ms(50))
            n = data_dir_users(c, users, 64);
        if (n > 0)
            return fail(c, -TG_ESYS, "processes (pid %d ...) still use %s", (int)users[0], c->data);
    }
    if (join(pidfile, c->data, "postmaster.pid") == 0 && unlink(pidfile) == 0)
        TG_LOGN(MOD, "removed stale %s", pidfile);
    if (join(sock, c->run, PG_SOCKET_FILE) == 0) unlink(sock);
    if (join(sock, c->run, PG_SOCKET_FILE ".lock") == 0) unlink(sock);
    return 0;
}

static int initdb(struct ctx *c, int logfd)
{
    char path[PATH_MAX], exe[PATH_MAX];
    if (join(path, c->data, "PG_VERSION") == 0 && access(path, F_OK) == 0) return 0;
    TG_LOGN(MOD, "creating the embedded PostgreSQL cluster in %s", c->data);
    join(exe, c->bindir, "initdb");
    const char *argv[] = {exe,
                          "-D",
                          c->data,
                          "-U",
                          "postgres",
                          "-E",
                          "UTF8",
                          "--locale=C",
                          "--auth-local=trust",
                          "--auth-host=reject",
                          NULL};
    struct spawn s = {argv, &c->ra, logfd, c->pgdir, 0};
    int rc = run_sync(&s, INITDB_TIMEOUT_MS);
    if (rc == 0) return 0;
    char why[512];
    log_reason(c->log, why, sizeof(why));
    return fail(c, rc < 0 ? rc : -TG_ESYS, "initdb failed (%s): %s",
                rc < 0 ? tg_strerror(rc) : "non-zero exit", why);
}

static pid_t start_server(struct ctx *c, int logfd)
{
    char exe[PATH_MAX];
    join(exe, c->bindir, "postgres");
    const char *argv[] = {
        exe, "-D", c->data, "-k", c->run, "-p", PG_PORT, "-c", "listen_addresses=", NULL};
    struct spawn s = {argv, &c->ra, logfd, c->pgdir, 1};
    TG_LOGI(MOD, "starting PostgreSQL (%s) on %s", c->bindir, c->run);
    pid_t pid = spawn(&s);
    if (pid < 0) fail(c, -TG_ESYS, "fork: %s", strerror(errno));
    return pid;
}

/*
 * Waits until the server accepts connections, watching our child (*child > 0) for an early
 * exit; a child that exited is reaped and *child set to 0.
 */
static int wait_ready(struct ctx *c, pid_t *child)
{
    char ci[PATH_MAX + 128];
    if (conninfo_for(c, "postgres", "postgres", ci, sizeof(ci)) != 0)
        return fail(c, -TG_ETOOBIG, "conninfo too long");
    long deadline = now_ms() + READY_TIMEOUT_MS;
    for (;;) {
        if (PQping(ci) == PQPING_OK) return 0;
        int st;
        if (*child > 0 && waitpid(*child, &st, WNOHANG) == *child) {
            *child = 0;
            char why[512];
            log_reason(c->log, why, sizeof(why));
            return fail(c, -TG_EDB, "PostgreSQL exited during start-up: %s", why);
        }
        if (now_ms() >= deadline)
            return fail(c, -TG_ETIMEOUT, "PostgreSQL did not accept connections on %s within %d s",
                        c->run, READY_TIMEOUT_MS / 1000);
        sleep_ms(100);
    }
}

/* Runs one statement as the superuser; `ok_state` is a SQLSTATE that also counts as success. */
static int exec_ok(struct ctx *c, PGconn *conn, const char *sql, const char *ok_state)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType s = PQresultStatus(r);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    int rc = 0;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK &&
        !(state && ok_state && strcmp(state, ok_state) == 0)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        msg[strcspn(msg, "\n")] = '\0';
        rc = fail(c, -TG_EDB, "embedded PostgreSQL: %s", msg);
    }
    PQclear(r);
    return rc;
}

/* Creates role and database `tollgate` when missing; tolerates a concurrent creator. */
static int ensure_database(struct ctx *c)
{
    char ci[PATH_MAX + 128];
    if (conninfo_for(c, "postgres", "postgres", ci, sizeof(ci)) != 0) return -TG_ETOOBIG;
    PGconn *conn = PQconnectdb(ci);
    int rc;
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(conn));
        msg[strcspn(msg, "\n")] = '\0';
        rc = fail(c, -TG_EDB, "cannot connect to the embedded PostgreSQL: %s", msg);
    } else if ((rc = exec_ok(c, conn,
                             "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                             "'tollgate') THEN CREATE ROLE tollgate LOGIN; END IF; END$$",
                             "42710")) == 0) {
        PGresult *r = PQexec(conn, "SELECT 1 FROM pg_database WHERE datname = 'tollgate'");
        int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
        PQclear(r);
        if (!exists) {
            TG_LOGN(MOD, "creating database tollgate");
            rc = exec_ok(c, conn,
                         "CREATE DATABASE tollgate OWNER tollgate ENCODING 'UTF8' "
                         "TEMPLATE template0",
                         "42P04");
        }
    }
    PQfinish(conn);
    return rc;
}

/* We own the prefix (lock held): clear what a crash left behind, initdb, start the server. */
static int start_owned(struct ctx *c, tg_pg_embedded_t *pg)
{
    int logfd = open_owned(c, c->log, O_WRONLY | O_APPEND);
    if (logfd < 0) return logfd;
    int rc = clear_leftovers(c);
    if (rc == 0) rc = initdb(c, logfd);
    if (rc == 0) {
        pg->pid = start_server(c, logfd);
        if (pg->pid > 0) {
            rc = wait_ready(c, &pg->pid);
        } else {
            pg->pid = 0;
            rc = -TG_ESYS;
        }
    }
    close(logfd);
    return rc; /* on failure the caller's tg_pg_embedded_stop() stops what we started */
}

int tg_pg_embedded_start(const char *prefix, const char *run_as_user, tg_pg_embedded_t **out,
                         char *conninfo, size_t cap, char *err, size_t errlen)
{
    if (!prefix || !*prefix || !out || !conninfo || !err || !errlen) return -TG_EINVAL;
    *out = NULL;
    err[0] = '\0';
    struct ctx *c = tg_calloc(1, sizeof(*c));
    c->err = err;
    c->errlen = errlen;
    tg_pg_embedded_t *pg = tg_calloc(1, sizeof(*pg));
    pg->lock_fd = -1;
    int rc;
    if ((rc = set_paths(c, prefix)) != 0 || (rc = find_bindir(c)) != 0 ||
        (rc = resolve_runas(c, run_as_user)) != 0 || (rc = prepare_dirs(c)) != 0)
        goto out;
    if ((pg->lock_fd = open_owned(c, c->lock, O_RDWR)) < 0) {
        rc = pg->lock_fd;
        goto out;
    }
    if (flock(pg->lock_fd, LOCK_EX | LOCK_NB) == 0) {
        rc = start_owned(c, pg);
    } else {
        /* A live process owns this prefix's server: share it. */
        TG_LOGI(MOD, "embedded PostgreSQL under %s is owned by another process; attaching",
                c->pgdir);
        close(pg->lock_fd);
        pg->lock_fd = -1;
        pid_t none = 0;
        rc = wait_ready(c, &none);
    }
    if (rc == 0) rc = ensure_database(c);
    if (rc == 0 && conninfo_for(c, "tollgate", "tollgate", conninfo, cap) != 0)
        rc = fail(c, -TG_ETOOBIG, "conninfo buffer too small");
out:
    if (rc == 0) {
        TG_LOGI(MOD, "embedded PostgreSQL ready (%s)", conninfo);
        *out = pg;
    } else {
        tg_pg_embedded_stop(pg);
    }
    free(c);
    return rc;
}

int tg_pg_embedded_stop(tg_pg_embedded_t *pg)
{
    if (!pg) return 0;
    int rc = 0;
    if (pg->pid > 0) {
        TG_LOGI(MOD, "stopping PostgreSQL (pid %d)", (int)pg->pid);
        rc = stop_postmaster(pg->pid, 1);
    }
    if (pg->lock_fd >= 0) close(pg->lock_fd);
    free(pg);
    return rc;
}
