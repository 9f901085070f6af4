/*
 * sync_hub.c — data plane sessions, pushes and acknowledgements (sync_hub.h).
 *
 * Per session the rule is sync-protocol rule 2: at most one payload (a delta or a snapshot) is
 * in flight; while it is, newer versions simply accumulate, and the next delta is built from the
 * version the DP acknowledged to the latest one, so a slow DP gets one merged delta instead of a
 * backlog. A NACKed version is not pushed again until a newer version exists, except after
 * NACK_STORE (the DP could not write: a full disk, a store being grown), which is retried with
 * exponential back-off.
 *
 * Resync (rule 5) has one path, whoever notices first: the DP's NACK_DIGEST (its digest after a
 * delta, or at a heartbeat of ours, differs from the control plane's) and this side's check of
 * the DP's heartbeats both call request_resync(), which sends one snapshot per version; a
 * mismatch that survives it is recorded as `rejected` instead of looping.
 *
 * The hub also purges the change log (rule 8) from its timer, and publishes its counters and a
 * view of its sessions for the Admin API's worker threads (under `lock`).
 */
#include "sync_hub.h"

#include "alloc.h"
#include "changelog.h"
#include "config_digest.h"
#include "error.h"
#include "join.h"
#include "log.h"
#include "realm_store.h"
#include "sync_build.h"
#include "sync_frame.h"
#include "sync_realms.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "sync"
#define TICK_MS 1000
#define NODE_TOUCH_MS 60000
#define LISTEN_RETRY_MS 2000
#define ACK_TIMEOUT_INTERVALS 6 /* a pushed payload unacknowledged this long ends the session */
#define BEAT_FLOOD_MAX 10       /* heartbeats accepted per heartbeat interval */
#define STORE_RETRY_MIN_MS 500  /* NACK_STORE back-off: 0.5 s doubling to 60 s */
#define STORE_RETRY_MAX_MS 60000
#define PURGE_BATCH 5000
#define PURGE_MAX_BATCHES 20 /* per round: the next round continues */
/* Realm lookups one DP may have outstanding here; the DP bounds its own, this guards the
 * database against a DP that does not. */
#define REALM_JOBS_MAX 256

const double tg_sync_latency_bounds[TG_SYNC_LATENCY_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                0.5,   1,    2.5,   5,    10,  30};
const double tg_sync_size_bounds[TG_SYNC_SIZE_BUCKETS] = {
    256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864};

typedef struct ctl_frame {
    struct ctl_frame *next;
    tg_sync_frame_t f;
} ctl_frame_t;

/* Per control plane: what this node knows of its latest version, and the shared snapshot. */
typedef struct cp_entry {
    struct cp_entry *next;
    char cp_id[37];
    int64_t latest;
    char latest_digest[65];  /* config digest at `latest` (hex), "" when not known (rule 5) */
    int64_t oldest;          /* oldest version still in the change log (as last read) */
    uint64_t latest_seen_ms; /* when this node learned of `latest` (commit -> ack latency) */
    tg_sync_payload_t *snapshot;
    bool building;
    bool verify_next; /* a DP refused a snapshot announcing the kept digest: recompute it */
} cp_entry_t;

enum state { WAIT_HELLO, ADMITTING, READY, CLOSING };

struct tg_sync_session {
    tg_sync_hub_t *hub;
    tg_sync_session_t *next;
    void *conn; /* NULL once the transport is gone */
    enum state state;
    char node_id[37], cp_id[37], serial[41], peer[64];
    char hostname[128], dp_version[32];
    int64_t applied; /* the DP's applied version; -1 = unknown history (snapshot) */
    char digest[65];
    bool want_snapshot;
    int64_t rejected_to; /* a payload ending here was refused: wait for a newer version */
    int64_t resynced_at; /* digest-triggered snapshot already sent for this version */
    bool building;
    uint64_t retry_at_ms;
    uint32_t store_failures; /* consecutive NACK_STORE: the back-off exponent */
    uint64_t sent_done_ms;   /* the in-flight payload's last frame was handed out */
    uint64_t beat_window_ms; /* heartbeat flood check: start of the window ... */
    uint32_t beats;          /* ... and heartbeats in it */
    uint64_t deltas_sent, snapshots_sent, nacks;
    uint32_t realm_jobs; /* realm lookups of this DP being answered */
    int64_t connected_unix;
    tg_sync_payload_t *inflight;
    size_t next_frame;
    ctl_frame_t *ctl_head, *ctl_tail, *handed;
    bool close_after_flush;
    uint64_t last_heard_ms, last_beat_ms, behind_since_ms;
    int jobs;
    bool status_dirty, status_running;
    char status[16];
    char last_error[256];
};

struct tg_sync_hub {
    tg_sync_hub_opts_t o;
    tg_sync_session_t *sessions;
    cp_entry_t *cps;
    uv_timer_t timer;
    uv_poll_t poll;
    PGconn *listen;
    uint64_t listen_retry_ms, node_touch_ms;
    uint64_t next_nonce;
    json_t *endpoints;
    int jobs;
    bool stopping;
    uint64_t purge_at_ms;
    bool purging;
    uint64_t repair_at_ms; /* next look for control planes whose digest is not known */
    bool repairing, repair_now;
    /* snapshot frames on their way from a builder (worker thread) to this loop */
    pthread_mutex_t stream_lock;
    struct stream_batch *stream_head, *stream_tail;
    bool stream_closed;
    uv_async_t stream_async;
    int open_handles; /* timer + stream_async, freed when both are closed */
    /* read by other threads (tg_sync_hub_get_stats, tg_sync_hub_view) */
    pthread_mutex_t lock;
    tg_sync_hub_stats_t stats;
    json_t *view;
};

/* The hub of this process, for the Admin API's workers (one CP runs one hub). */
static pthread_mutex_t g_hub_lock = PTHREAD_MUTEX_INITIALIZER;
static tg_sync_hub_t *g_hub;

static uint64_t now_ms(const tg_sync_hub_t *h)
{
    return uv_now(h->o.loop);
}

/* ---------------------------------------------------------------- control planes */

/* ---------------------------------------------------------------- counters */

#define STAT(h, stmt)                                                                              \
    do {                                                                                           \
        pthread_mutex_lock(&(h)->lock);                                                            \
        stmt;                                                                                      \
        pthread_mutex_unlock(&(h)->lock);                                                          \
    } while (0)

static size_t bucket(const double *bounds, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    return i;
}

static void stat_push(tg_sync_hub_t *h, const tg_sync_payload_t *p)
{
    size_t b = bucket(tg_sync_size_bounds, TG_SYNC_SIZE_BUCKETS, (double)p->bytes);
    pthread_mutex_lock(&h->lock);
    if (p->snapshot) {
        h->stats.snapshots_sent++;
        h->stats.snapshot_bytes += p->bytes;
    } else {
        h->stats.deltas_sent++;
        h->stats.delta_bytes += p->bytes;
    }
    h->stats.push_size_count++;
    h->stats.push_size_sum += p->bytes;
    h->stats.push_size_hist[b]++;
    pthread_mutex_unlock(&h->lock);
}

static void stat_latency(tg_sync_hub_t *h, double seconds)
{
    size_t b = bucket(tg_sync_latency_bounds, TG_SYNC_LATENCY_BUCKETS, seconds);
    pthread_mutex_lock(&h->lock);
    h->stats.ack_latency_count++;
    h->stats.ack_latency_sum_s += seconds;
    h->stats.ack_latency_hist[b]++;
    pthread_mutex_unlock(&h->lock);
}

static cp_entry_t *cp_get(tg_sync_hub_t *h, const char *cp_id)
{
    for (cp_entry_t *c = h->cps; c; c = c->next)
        if (strcmp(c->cp_id, cp_id) == 0) return c;
    cp_entry_t *c = tg_calloc(1, sizeof(*c));
    snprintf(c->cp_id, sizeof(c->cp_id), "%s", cp_id);
    c->next = h->cps;
    h->cps = c;
    return c;
}

/* A deleted control plane: its DPs were cut off by the deletion; drop what this node kept for
 * it (its shared snapshot above all). A job still building one re-creates an empty entry,
 * which costs nothing. */
static void payload_unref(tg_sync_payload_t *p);
static void cp_forget(tg_sync_hub_t *h, const char *cp_id)
{
    for (cp_entry_t **p = &h->cps; *p; p = &(*p)->next) {
        if (strcmp((*p)->cp_id, cp_id) != 0) continue;
        cp_entry_t *c = *p;
        if (c->building) return; /* its snapshot job still points at it */
        *p = c->next;
        payload_unref(c->snapshot);
        free(c);
        return;
    }
}

/* A version of the control plane and its digest (NULL or "" when not known), from whatever
 * read or heard it: newer versions replace `latest`, a known digest fills an unknown one. */
static void cp_learn(tg_sync_hub_t *h, cp_entry_t *c, int64_t version, const char *digest)
{
    if (version < c->latest) return;
    if (version > c->latest) {
        /* known, then not: something could not be hashed (or was loaded behind the change
         * log's back) — look now rather than at the next periodic look */
        if (c->latest_digest[0] && !(digest && digest[0])) h->repair_now = true;
        c->latest = version;
        c->latest_seen_ms = now_ms(h);
        c->latest_digest[0] = '\0';
    }
    if (digest && digest[0] && !c->latest_digest[0])
        snprintf(c->latest_digest, sizeof(c->latest_digest), "%s", digest);
}

static void payload_unref(tg_sync_payload_t *p)
{
    if (p && --p->refs <= 0) tg_sync_payload_free(p);
}

/* ---------------------------------------------------------------- jobs */

typedef struct hub_job {
    tg_job_t job;
    tg_sync_hub_t *hub;
    tg_sync_session_t *s; /* NULL for control-plane jobs */
    char cp_id[37];
    int64_t from;
    uint64_t nonce;
    int rc;
    char err[256];
    tg_sync_payload_t *payload;
    tg_sync_stream_t stream;  /* a snapshot job: where its builder emits frames */
    bool verify;              /* ... and whether it recomputes the digest */
    tg_sync_payload_t *live;  /* ... and the payload they go into, on the loop thread */
    int64_t latest, oldest;
    char digest[65]; /* with latest */
    char *csr, *cert;
    char *sql_params[11]; /* the status UPDATE's parameters */
    /* a realm lookup: the request's fields, copied, and the answer */
    uint64_t realm_request_id;
    char realm_id[37];
    uint8_t realm_digest[32];
    bool realm_digest_ok;
    tg_sync_realm_result_t realm_result;
    json_t *endpoints; /* the CP nodes' endpoints, re-read with each touch */
} hub_job_t;

static hub_job_t *new_job(tg_sync_hub_t *h, tg_sync_session_t *s,
                          void (*run)(tg_job_t *, tg_db_t *), void (*done)(tg_job_t *))
{
    hub_job_t *j = tg_calloc(1, sizeof(*j));
    j->hub = h;
    j->s = s;
    j->job.run = run;
    j->job.done = done;
    h->jobs++;
    if (s) s->jobs++;
    return j;
}

static void session_free(tg_sync_session_t *s);

/* Ends a job: true when its session is still worth working on. */
static bool finish_job(hub_job_t *j)
{
    j->hub->jobs--;
    tg_sync_session_t *s = j->s;
    if (!s) return !j->hub->stopping;
    s->jobs--;
    if (!s->conn || s->state == CLOSING) {
        if (!s->conn && s->jobs == 0) session_free(s);
        return false;
    }
    return true;
}

static void free_job(hub_job_t *j)
{
    for (size_t i = 0; i < sizeof(j->sql_params) / sizeof(j->sql_params[0]); i++)
        free(j->sql_params[i]);
    free(j->csr);
    free(j->cert);
    tg_sync_realms_result_clear(&j->realm_result);
    json_decref(j->endpoints);
    free(j);
}

/* ---------------------------------------------------------------- sending */

static void wake(tg_sync_session_t *s)
{
    if (s->conn) s->hub->o.transport->wake(s->conn);
}

static void send_env(tg_sync_session_t *s, const tg_sync_env_t *env)
{
    ctl_frame_t *c = tg_calloc(1, sizeof(*c));
    if (tg_sync_pack(env, s->hub->o.headroom, &c->f.buf, &c->f.data, &c->f.len) != 0) {
        free(c);
        return;
    }
    if (s->ctl_tail)
        s->ctl_tail->next = c;
    else
        s->ctl_head = c;
    s->ctl_tail = c;
    wake(s);
}

static void send_error(tg_sync_session_t *s, Tollgate__Sync__V1__ErrorCode code, const char *msg)
{
    TG_LOGW(MOD, "data plane %s (%s): %s", s->node_id, s->peer, msg);
    Tollgate__Sync__V1__Error e = TOLLGATE__SYNC__V1__ERROR__INIT;
    e.has_code = 1;
    e.code = code;
    e.message = (char *)msg;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_ERROR;
    env.error = &e;
    send_env(s, &env);
    s->close_after_flush = true;
    s->state = CLOSING;
}

int tg_sync_session_next(tg_sync_session_t *s, uint8_t **data, size_t *len)
{
    if (s->handed) {
        free(s->handed->f.buf);
        free(s->handed);
        s->handed = NULL;
    }
    if (s->ctl_head) {
        ctl_frame_t *c = s->ctl_head;
        s->ctl_head = c->next;
        if (!s->ctl_head) s->ctl_tail = NULL;
        s->handed = c;
        *data = c->f.data;
        *len = c->f.len;
        return 1;
    }
    if (s->close_after_flush) return -1;
    if (s->inflight && s->next_frame < s->inflight->nframes) {
        const tg_sync_frame_t *f = &s->inflight->frames[s->next_frame++];
        *data = f->data;
        *len = f->len;
        STAT(s->hub, s->hub->stats.bytes_sent += f->len);
        /* the ACK timeout runs from here: a slow link is not a DP that never answers */
        if (s->next_frame == s->inflight->nframes && !s->inflight->growing)
            s->sent_done_ms = now_ms(s->hub);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- status */

static void mark_status(tg_sync_session_t *s, const char *status, const char *error)
{
    snprintf(s->status, sizeof(s->status), "%s", status);
    if (error) snprintf(s->last_error, sizeof(s->last_error), "%s", error);
    s->status_dirty = true;
}

static void status_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_db_err_t e;
    j->rc =
        tg_db_run(db, &e,
                  "UPDATE data_planes SET address = $2, hostname = $3, tollgate_version = $4,"
                  " config_version = $5::bigint, config_digest = NULLIF($6, ''), sync_status = $7,"
                  " last_error = NULLIF($8, ''), last_seen = now(), cp_node = $9,"
                  " lag_versions = $10::bigint, lag_seconds = $11::double precision"
                  " WHERE id = $1::uuid",
                  11, (const char *const *)j->sql_params);
}

static void status_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_session_t *s = j->s;
    s->status_running = false;
    finish_job(j);
    free_job(j);
}

static void write_status(tg_sync_session_t *s)
{
    if (s->status_running || !s->status[0]) return;
    tg_sync_hub_t *h = s->hub;
    cp_entry_t *c = cp_get(h, s->cp_id);
    int64_t lag = c->latest > s->applied && s->applied >= 0 ? c->latest - s->applied : 0;
    double lag_s = lag && s->behind_since_ms ? (double)(now_ms(h) - s->behind_since_ms) / 1000 : 0;
    char buf[4][32];
    snprintf(buf[0], sizeof(buf[0]), "%lld", (long long)(s->applied < 0 ? 0 : s->applied));
    snprintf(buf[1], sizeof(buf[1]), "%lld", (long long)lag);
    snprintf(buf[2], sizeof(buf[2]), "%.3f", lag_s);
    hub_job_t *j = new_job(h, s, status_run, status_done);
    const char *v[] = {s->node_id, s->peer,       s->hostname,  s->dp_version, buf[0], s->digest,
                       s->status,  s->last_error, h->o.node_id, buf[1],        buf[2]};
    for (size_t i = 0; i < 11; i++)
        j->sql_params[i] = tg_strdup(v[i]);
    s->status_running = true;
    s->status_dirty = false;
    tg_workers_submit(h->o.workers, &j->job);
}

/* ---------------------------------------------------------------- pushing */

static void schedule(tg_sync_session_t *s);

static void push(tg_sync_session_t *s, tg_sync_payload_t *p)
{
    p->refs++;
    s->inflight = p;
    s->next_frame = 0;
    s->sent_done_ms = 0;
    if (!p->growing) stat_push(s->hub, p); /* else counted when it is complete */
    if (p->snapshot)
        s->snapshots_sent++;
    else
        s->deltas_sent++;
    if (p->growing)
        TG_LOGI(MOD, "data plane %s: snapshot of %lld, streamed as it is built", s->node_id,
                (long long)p->to);
    else
        TG_LOGI(MOD, "data plane %s: %s %lld -> %lld (%zu entities, %zu bytes)", s->node_id,
                p->snapshot ? "snapshot" : "delta", (long long)p->from, (long long)p->to,
                p->entities, p->bytes);
    wake(s);
}

static void delta_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    j->rc = tg_sync_build_delta(db, j->cp_id, j->from, j->nonce, j->hub->o.headroom, &j->payload,
                                j->err, sizeof(j->err));
}

static void delta_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_session_t *s = j->s;
    if (!finish_job(j)) {
        tg_sync_payload_free(j->payload);
        free_job(j);
        return;
    }
    s->building = false;
    cp_entry_t *c = cp_get(s->hub, s->cp_id);
    if (j->rc == TG_SYNC_BUILT) {
        cp_learn(s->hub, c, j->payload->to, j->payload->digest);
        push(s, j->payload);
    } else if (j->rc == TG_SYNC_NEED_SNAPSHOT) {
        s->want_snapshot = true;
    } else if (j->rc < 0) {
        TG_LOGE(MOD, "data plane %s: cannot build a delta from %lld: %s", s->node_id,
                (long long)j->from, j->err);
        s->retry_at_ms = now_ms(s->hub) + 1000;
    }
    free_job(j);
    schedule(s);
}

static void start_delta(tg_sync_session_t *s)
{
    hub_job_t *j = new_job(s->hub, s, delta_run, delta_done);
    snprintf(j->cp_id, sizeof(j->cp_id), "%s", s->cp_id);
    j->from = s->applied;
    j->nonce = ++s->hub->next_nonce;
    s->building = true;
    tg_workers_submit(s->hub->o.workers, &j->job);
}

static void schedule_cp(tg_sync_hub_t *h, const char *cp_id)
{
    for (tg_sync_session_t *s = h->sessions; s; s = s->next)
        if (strcmp(s->cp_id, cp_id) == 0) schedule(s);
}

/*
 * Snapshots are streamed: the builder (a worker thread) emits each chunk as soon as it is full,
 * the frames reach this loop through a mailbox (stream_lock, stream_async), and go into one
 * shared payload that is the control plane's cached snapshot from its first frame on. A data
 * plane that needs a snapshot is pushed that growing payload and gets its frames as they
 * arrive, so it applies chunk N while the control plane still reads chunk N+1 (a new data
 * plane of a million keys used to wait for the whole build first). Only the last batch
 * (SnapshotEnd) completes the payload: the ACK timeout starts there, and the snapshot's
 * digest and size are known from then on.
 */
typedef struct stream_batch {
    struct stream_batch *next;
    hub_job_t *job;
    int64_t version;
    uint64_t nonce;
    size_t entities;
    char digest[65];
    bool drift, kept, last;
    tg_sync_frame_t *frames;
    size_t n;
} stream_batch_t;

static void stream_emit(tg_sync_stream_t *st, const tg_sync_payload_t *desc,
                        tg_sync_frame_t *frames, size_t n, bool last)
{
    hub_job_t *j = (hub_job_t *)((char *)st - offsetof(hub_job_t, stream));
    tg_sync_hub_t *h = j->hub;
    stream_batch_t *b = tg_calloc(1, sizeof(*b));
    b->job = j;
    b->version = desc->to;
    b->nonce = desc->nonce;
    b->entities = desc->entities;
    b->last = last;
    if (last) {
        memcpy(b->digest, desc->digest, sizeof(b->digest));
        b->drift = desc->digest_drift;
        b->kept = desc->digest_kept;
    }
    b->frames = frames;
    b->n = n;
    pthread_mutex_lock(&h->stream_lock);
    bool closed = h->stream_closed;
    if (!closed) {
        if (h->stream_tail)
            h->stream_tail->next = b;
        else
            h->stream_head = b;
        h->stream_tail = b;
        uv_async_send(&h->stream_async);
    }
    pthread_mutex_unlock(&h->stream_lock);
    if (closed) { /* the hub is stopping: nobody will send these */
        for (size_t i = 0; i < n; i++)
            free(frames[i].buf);
        free(frames);
        free(b);
    }
}

static void for_each_on(tg_sync_hub_t *h, const tg_sync_payload_t *p,
                        void (*fn)(tg_sync_session_t *s))
{
    for (tg_sync_session_t *s = h->sessions, *n; s; s = n) {
        n = s->next;
        if (s->inflight == p) fn(s);
    }
}

/* A streamed snapshot is complete: what push() could not do for it yet. */
static void snapshot_complete_for(tg_sync_session_t *s)
{
    stat_push(s->hub, s->inflight);
    if (s->next_frame == s->inflight->nframes) s->sent_done_ms = now_ms(s->hub);
    wake(s);
}

static void stream_append(tg_sync_hub_t *h, stream_batch_t *b)
{
    hub_job_t *j = b->job;
    cp_entry_t *c = cp_get(h, j->cp_id);
    tg_sync_payload_t *p = j->live;
    if (!p) { /* the first frames (SnapshotBegin): from now on, the cached snapshot */
        p = j->live = tg_calloc(1, sizeof(*p));
        p->snapshot = p->growing = true;
        p->from = -1;
        p->to = b->version;
        p->nonce = b->nonce;
        p->refs = 1; /* the cache's reference */
        payload_unref(c->snapshot);
        c->snapshot = p;
        cp_learn(h, c, p->to, NULL);
        schedule_cp(h, c->cp_id); /* sessions waiting for a snapshot take it now */
    }
    if (p->nframes + b->n > p->cap) {
        p->cap = (p->nframes + b->n) * 2;
        p->frames = tg_realloc(p->frames, p->cap * sizeof(*p->frames));
    }
    for (size_t i = 0; i < b->n; i++) {
        p->frames[p->nframes++] = b->frames[i];
        p->bytes += b->frames[i].len;
    }
    p->entities = b->entities;
    if (b->last) {
        p->growing = false;
        memcpy(p->digest, b->digest, sizeof(p->digest));
        p->digest_drift = b->drift;
        p->digest_kept = b->kept;
        STAT(h, h->stats.snapshots_built++);
        /* recomputed from the entities: the truth, should the kept digest ever differ */
        if (c->snapshot == p && p->to == c->latest)
            snprintf(c->latest_digest, sizeof(c->latest_digest), "%s", p->digest);
        if (p->digest_drift) h->repair_now = true;
        TG_LOGI(MOD, "control plane %s: snapshot of version %lld built (%zu entities, %zu bytes)",
                c->cp_id, (long long)p->to, p->entities, p->bytes);
        for_each_on(h, p, snapshot_complete_for);
    } else {
        for_each_on(h, p, wake);
    }
    free(b->frames);
    free(b);
}

/* Takes every batch in the mailbox, in emission order. */
static void stream_drain(tg_sync_hub_t *h)
{
    pthread_mutex_lock(&h->stream_lock);
    stream_batch_t *b = h->stream_head;
    h->stream_head = h->stream_tail = NULL;
    pthread_mutex_unlock(&h->stream_lock);
    while (b) {
        stream_batch_t *next = b->next;
        stream_append(h, b);
        b = next;
    }
}

static void on_stream_async(uv_async_t *a)
{
    stream_drain(a->data);
}

static void snapshot_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    j->stream.emit = stream_emit;
    j->rc = tg_sync_build_snapshot(db, j->cp_id, j->nonce, j->hub->o.headroom, j->verify,
                                   &j->stream, &j->payload, j->err, sizeof(j->err));
}

/* A session was being sent a snapshot that will never be finished: it has a SnapshotBegin
 * and some chunks; closing is the one clean way to make its DP drop them. */
static void snapshot_abandoned_for(tg_sync_session_t *s)
{
    send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_INTERNAL,
               "the snapshot being sent could not be completed; reconnect");
}

static void snapshot_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_hub_t *h = j->hub;
    stream_drain(h); /* frames emitted before the job ended come first */
    cp_entry_t *c = cp_get(h, j->cp_id);
    c->building = false;
    bool alive = finish_job(j);
    tg_sync_payload_t *p = j->live;
    if (j->rc != 0) {
        TG_LOGE(MOD, "control plane %s: cannot build a snapshot: %s", c->cp_id, j->err);
        if (p) {
            for_each_on(h, p, snapshot_abandoned_for);
            if (c->snapshot == p) {
                c->snapshot = NULL;
                payload_unref(p);
            }
        }
        for (tg_sync_session_t *s = h->sessions; s; s = s->next)
            if (strcmp(s->cp_id, c->cp_id) == 0) s->retry_at_ms = now_ms(h) + 1000;
    }
    tg_sync_payload_free(j->payload); /* the description only: the frames went to j->live */
    free_job(j);
    if (alive) schedule_cp(h, c->cp_id);
}

static void start_snapshot(tg_sync_session_t *s)
{
    tg_sync_hub_t *h = s->hub;
    cp_entry_t *c = cp_get(h, s->cp_id);
    /* the one being built is the newest there will be soon: take it (a delta follows if
     * versions came since) rather than wait for its end and build another */
    if (c->snapshot && (c->snapshot->to >= c->latest || c->snapshot->growing)) {
        s->want_snapshot = false;
        push(s, c->snapshot);
        return;
    }
    if (c->building) return; /* snapshot_done schedules every session of this control plane */
    hub_job_t *j = new_job(h, NULL, snapshot_run, snapshot_done);
    snprintf(j->cp_id, sizeof(j->cp_id), "%s", c->cp_id);
    j->nonce = ++h->next_nonce;
    j->verify = c->verify_next;
    c->verify_next = false;
    c->building = true;
    tg_workers_submit(h->o.workers, &j->job);
}

static void schedule(tg_sync_session_t *s)
{
    if (s->state != READY || !s->conn || s->inflight || s->building) return;
    if (s->retry_at_ms && now_ms(s->hub) < s->retry_at_ms) return;
    s->retry_at_ms = 0;
    cp_entry_t *c = cp_get(s->hub, s->cp_id);
    if (c->latest > s->applied && !s->behind_since_ms) s->behind_since_ms = now_ms(s->hub);
    /* a refused version, snapshot or delta, is not offered again until a newer one exists */
    if (c->latest <= s->rejected_to) return;
    if (s->want_snapshot || s->applied < 0) {
        start_snapshot(s);
        return;
    }
    if (c->latest <= s->applied) return;
    start_delta(s);
}

/* ---------------------------------------------------------------- Hello and admission */

static bool newer_minor(const char *theirs, const char *ours)
{
    int a1 = 0, b1 = 0, a2 = 0, b2 = 0;
    if (sscanf(theirs, "%d.%d", &a1, &b1) != 2 || sscanf(ours, "%d.%d", &a2, &b2) != 2) return true;
    return a1 != a2 || b1 > b2;
}

static void admit_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_session_t *s = j->s;
    j->rc = tg_join_check_data_plane(db, s->node_id, s->cp_id, s->serial);
    if (j->rc == 0)
        j->rc = tg_sync_read_versions(db, s->cp_id, &j->latest, &j->oldest, j->digest, j->err,
                                      sizeof(j->err));
}

static void send_welcome(tg_sync_session_t *s, int64_t latest, int64_t oldest)
{
    tg_sync_hub_t *h = s->hub;
    Tollgate__Sync__V1__Welcome w = TOLLGATE__SYNC__V1__WELCOME__INIT;
    static char *caps[] = {"delta", "snapshot"};
    w.tollgate_version = TG_VERSION;
    w.n_capabilities = 2;
    w.capabilities = caps;
    w.control_plane_id = s->cp_id;
    w.has_latest_version = w.has_oldest_version = w.has_heartbeat_interval_ms = 1;
    w.latest_version = latest;
    w.oldest_version = oldest;
    w.heartbeat_interval_ms = h->o.heartbeat_ms;
    w.cp_node_id = (char *)h->o.node_id;
    size_t n = h->endpoints ? json_array_size(h->endpoints) : 0;
    char **eps = tg_calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        eps[i] = (char *)json_string_value(json_array_get(h->endpoints, i));
    w.n_endpoints = n;
    w.endpoints = eps;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_WELCOME;
    env.welcome = &w;
    send_env(s, &env);
    free(eps);
}

static void admit_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_session_t *s = j->s;
    if (!finish_job(j)) {
        free_job(j);
        return;
    }
    if (j->rc == -TG_EPERM || j->rc == -TG_ENOTFOUND) {
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_REVOKED,
                   j->rc == -TG_EPERM ? "this data plane's certificate is revoked or superseded"
                                      : "this data plane is not enrolled");
    } else if (j->rc != 0) {
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_INTERNAL,
                   "the control plane cannot read its database; retry later");
    } else {
        cp_entry_t *c = cp_get(s->hub, s->cp_id);
        cp_learn(s->hub, c, j->latest, j->digest);
        c->oldest = j->oldest;
        send_welcome(s, j->latest, j->oldest);
        s->state = READY;
        s->connected_unix = (int64_t)time(NULL);
        STAT(s->hub, s->hub->stats.connected++);
        mark_status(s, s->applied == c->latest ? "normal" : "behind", NULL);
        s->last_error[0] = '\0';
        write_status(s);
        schedule(s);
    }
    free_job(j);
}

static void on_hello(tg_sync_session_t *s, const Tollgate__Sync__V1__Hello *m)
{
    if (s->state != WAIT_HELLO) {
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL, "unexpected second Hello");
        return;
    }
    snprintf(s->hostname, sizeof(s->hostname), "%s", m->hostname ? m->hostname : "");
    snprintf(s->dp_version, sizeof(s->dp_version), "%s",
             m->tollgate_version ? m->tollgate_version : "");
    if (m->node_id && m->node_id[0] && strcmp(m->node_id, s->node_id) != 0) {
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_IDENTITY,
                   "the node id in Hello is not the one in the client certificate");
        return;
    }
    if (!m->has_protocol_version || m->protocol_version != TG_SYNC_PROTOCOL_VERSION ||
        newer_minor(s->dp_version, TG_VERSION)) {
        mark_status(s, "incompatible",
                    "data plane version or protocol is newer than this control plane");
        write_status(s);
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_INCOMPATIBLE,
                   "data plane protocol or version is newer than this control plane " TG_VERSION);
        return;
    }
    s->applied = m->has_have_version ? m->have_version : 0;
    /* A store filled from another control plane (or from a file) has an unrelated history, and
     * a fresh store (no control plane id yet) has none: both get a snapshot. For a fresh DP of
     * a control plane never written to, that is the empty snapshot of version 0 which makes it
     * ready (DESIGN §7: /status/ready answers 200 once a config is loaded). */
    if (!m->control_plane_id || !m->control_plane_id[0] || strcmp(m->control_plane_id, s->cp_id))
        s->applied = -1;
    snprintf(s->digest, sizeof(s->digest), "%s", m->config_digest ? m->config_digest : "");
    s->state = ADMITTING;
    hub_job_t *j = new_job(s->hub, s, admit_run, admit_done);
    tg_workers_submit(s->hub->o.workers, &j->job);
}

/* ---------------------------------------------------------------- ACK / NACK / heartbeats */

static void end_inflight(tg_sync_session_t *s)
{
    payload_unref(s->inflight);
    s->inflight = NULL;
}

/*
 * The one resync path (rule 5), called when either side sees different digests at the same
 * version: a snapshot, once per version. If the mismatch survives that snapshot, sending it
 * again would not help: the DP is recorded as rejected with the reason, and the next version
 * gets its chance.
 */
static void request_resync(tg_sync_session_t *s, int64_t version, const char *why)
{
    if (s->want_snapshot || (s->inflight && s->inflight->snapshot)) return; /* one is coming */
    if (s->resynced_at == version) {
        if (strcmp(s->status, "rejected") == 0) return; /* said already */
        TG_LOGW(MOD, "data plane %s: %s, again after a resync at version %lld", s->node_id, why,
                (long long)version);
        mark_status(s, "rejected", why);
        write_status(s);
        return;
    }
    TG_LOGW(MOD, "data plane %s: %s at version %lld; resyncing with a snapshot", s->node_id, why,
            (long long)version);
    s->resynced_at = version;
    s->want_snapshot = true;
    STAT(s->hub, s->hub->stats.resyncs++);
    schedule(s);
}

static void on_ack(tg_sync_session_t *s, const Tollgate__Sync__V1__Ack *m)
{
    tg_sync_hub_t *h = s->hub;
    if (!s->inflight || m->nonce != s->inflight->nonce) {
        TG_LOGW(MOD, "data plane %s: ACK for an unknown push ignored", s->node_id);
        return;
    }
    STAT(h, h->stats.acks++);
    cp_entry_t *c = cp_get(h, s->cp_id);
    s->applied = m->applied_version;
    s->store_failures = 0;
    snprintf(s->digest, sizeof(s->digest), "%s", m->config_digest ? m->config_digest : "");
    if (s->applied == c->latest && c->latest_seen_ms)
        stat_latency(h, (double)(now_ms(h) - c->latest_seen_ms) / 1000);
    bool mismatch =
        s->inflight->digest[0] && s->digest[0] && strcmp(s->inflight->digest, s->digest) != 0;
    bool was_snapshot = s->inflight->snapshot;
    end_inflight(s);
    s->behind_since_ms = s->applied >= c->latest ? 0 : now_ms(h);
    if (mismatch && !was_snapshot) {
        /* a DP that does not check a delta's digest itself: the same repair as its NACK */
        mark_status(s, s->applied >= c->latest ? "normal" : "behind", "");
        request_resync(s, s->applied,
                       "config digest differs from the control plane's after a delta");
    } else if (mismatch) {
        /* the DP checks the announced digest before it commits a snapshot, so this is a DP
         * that does not: nothing another snapshot would fix */
        mark_status(s, "rejected",
                    "config digest differs from the control plane's after a snapshot");
        s->resynced_at = s->applied;
    } else {
        mark_status(s, s->applied >= c->latest ? "normal" : "behind", "");
    }
    write_status(s);
    schedule(s);
}

/* NACK_STORE: the DP could not write (disk full, store being grown). Not the version's fault:
 * the same push is retried, after 0.5 s doubling to 60 s, never in a tight loop. */
static void store_retry(tg_sync_session_t *s, bool was_snapshot, const char *msg)
{
    uint32_t n = s->store_failures < 16 ? s->store_failures : 16;
    uint64_t delay = (uint64_t)STORE_RETRY_MIN_MS << n;
    if (delay > STORE_RETRY_MAX_MS) delay = STORE_RETRY_MAX_MS;
    s->store_failures++;
    s->retry_at_ms = now_ms(s->hub) + delay;
    s->want_snapshot = was_snapshot;
    STAT(s->hub, s->hub->stats.store_retries++);
    char why[256];
    snprintf(why, sizeof(why), "%.180s (retry %u in %.1f s)", msg, s->store_failures,
             (double)delay / 1000);
    TG_LOGW(MOD, "data plane %s could not store the push: %s", s->node_id, why);
    mark_status(s, "rejected", why);
    write_status(s);
}

static void on_nack(tg_sync_session_t *s, const Tollgate__Sync__V1__Nack *m)
{
    bool digest = m->has_code && m->code == TOLLGATE__SYNC__V1__NACK_CODE__NACK_DIGEST;
    bool ours = s->inflight && m->nonce == s->inflight->nonce;
    char msg[256];
    snprintf(msg, sizeof(msg), "%s%s%s%s%s",
             m->entity_type && m->entity_type[0] ? m->entity_type : "",
             m->entity_id && m->entity_id[0] ? " " : "", m->entity_id ? m->entity_id : "",
             m->entity_type && m->entity_type[0] ? ": " : "", m->message ? m->message : "");
    if (!ours) {
        /* nonce 0: a digest mismatch the DP saw in one of our heartbeats */
        if (digest && m->nonce == 0 && m->has_kept_version && m->kept_version == s->applied) {
            s->nacks++;
            STAT(s->hub, s->hub->stats.nacks++);
            request_resync(s, s->applied, "config digest differs from the control plane's");
        }
        return;
    }
    s->nacks++;
    STAT(s->hub, s->hub->stats.nacks++);
    bool was_snapshot = s->inflight->snapshot;
    int64_t to = s->inflight->to;
    if (digest && was_snapshot && s->inflight->digest_kept) {
        /* the DP hashed what it received and it is not the digest the writes kept: rows
         * changed behind the change log's back (or a bug). Not the DP's fault: build a
         * snapshot that recomputes the digest (which also repairs the kept one) and send it */
        cp_entry_t *c = cp_get(s->hub, s->cp_id);
        TG_LOGW(MOD, "data plane %s: the snapshot of %lld does not match its kept digest; "
                "recomputing it from the rows", s->node_id, (long long)to);
        c->verify_next = true;
        if (c->snapshot == s->inflight) {
            payload_unref(c->snapshot);
            c->snapshot = NULL;
        }
        end_inflight(s);
        s->want_snapshot = true;
        schedule(s);
        return;
    }
    end_inflight(s);
    /* a snapshot refused by a DP of unknown history leaves it unknown */
    if (m->has_kept_version && (!was_snapshot || s->applied >= 0)) s->applied = m->kept_version;
    if (m->code == TOLLGATE__SYNC__V1__NACK_CODE__NACK_STORE) {
        store_retry(s, was_snapshot, msg);
    } else if (m->code == TOLLGATE__SYNC__V1__NACK_CODE__NACK_VERSION_GAP && !was_snapshot) {
        TG_LOGN(MOD, "data plane %s: %s; sending a snapshot", s->node_id, msg);
        s->want_snapshot = true;
    } else if (digest && !was_snapshot) {
        request_resync(s, s->applied,
                       "config digest differs from the control plane's after a delta");
    } else {
        TG_LOGW(MOD, "data plane %s rejected version %lld: %s", s->node_id, (long long)to, msg);
        s->rejected_to = to;
        s->want_snapshot = false;
        mark_status(s, "rejected", msg);
        write_status(s);
    }
    schedule(s);
}

static void on_heartbeat(tg_sync_session_t *s, const Tollgate__Sync__V1__Heartbeat *m)
{
    tg_sync_hub_t *h = s->hub;
    uint64_t now = now_ms(h);
    if (now - s->beat_window_ms >= h->o.heartbeat_ms) {
        s->beat_window_ms = now;
        s->beats = 0;
    }
    if (++s->beats > BEAT_FLOOD_MAX) {
        STAT(h, h->stats.floods++);
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL,
                   "heartbeat flood: more than 10 heartbeats in one heartbeat interval");
        return;
    }
    if (m->config_digest) snprintf(s->digest, sizeof(s->digest), "%s", m->config_digest);
    /* rule 5 at every version: the digest the writes kept for the DP's version (the latest),
     * or that of the shared snapshot */
    cp_entry_t *c = cp_get(h, s->cp_id);
    const char *want = s->applied == c->latest && c->latest_digest[0] ? c->latest_digest
                       : c->snapshot && c->snapshot->to == s->applied ? c->snapshot->digest
                                                                      : "";
    if (want[0] && s->digest[0] && !s->inflight && strcmp(want, s->digest) != 0)
        request_resync(s, s->applied, "config digest differs from the control plane's");
    s->status_dirty = true;
}

/* ---------------------------------------------------------------- renewal */

static void renew_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_session_t *s = j->s;
    j->rc = tg_join_renew(db, j->hub->o.ca, s->node_id, s->cp_id, j->csr, &j->cert, j->err,
                          sizeof(j->err));
}

static void renew_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_session_t *s = j->s;
    if (finish_job(j)) {
        Tollgate__Sync__V1__RenewResult r = TOLLGATE__SYNC__V1__RENEW_RESULT__INIT;
        r.certificate_pem = j->rc == 0 ? j->cert : "";
        r.error = j->rc == 0 ? "" : (j->err[0] ? j->err : "renewal refused");
        tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
        env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_RENEW_RESULT;
        env.renew_result = &r;
        send_env(s, &env);
        TG_LOGN(MOD, "data plane %s: certificate renewal %s", s->node_id,
                j->rc == 0 ? "issued" : "refused");
    }
    free_job(j);
}

static void on_renew(tg_sync_session_t *s, const Tollgate__Sync__V1__RenewRequest *m)
{
    hub_job_t *j = new_job(s->hub, s, renew_run, renew_done);
    j->csr = tg_strdup(m->csr_pem ? m->csr_pem : "");
    tg_workers_submit(s->hub->o.workers, &j->job);
}

/* ---------------------------------------------------------------- realm lookups */

static void send_realm_result(tg_sync_session_t *s, tg_sync_realm_result_t *r)
{
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_REALM_LOOKUP_RESULT;
    env.realm_lookup_result = r;
    send_env(s, &env);
}

static void realm_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    Tollgate__Sync__V1__RealmLookup req = TOLLGATE__SYNC__V1__REALM_LOOKUP__INIT;
    req.has_request_id = true;
    req.request_id = j->realm_request_id;
    req.realm_id = j->realm_id;
    req.has_key_digest = j->realm_digest_ok;
    req.key_digest = (ProtobufCBinaryData){j->realm_digest_ok ? 32 : 0, j->realm_digest};
    tg_sync_realms_answer(db, j->cp_id, &req, &j->realm_result);
}

static void realm_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_session_t *s = j->s;
    s->realm_jobs--;
    if (finish_job(j)) {
        send_realm_result(s, &j->realm_result);
        STAT(j->hub, {
            j->hub->stats.realm_lookups++;
            if (j->realm_result.error) j->hub->stats.realm_lookup_errors++;
        });
    }
    free_job(j);
}

/* A DP's realm key lookup: answered from PostgreSQL on the worker pool, for the control
 * plane of the DP's certificate (never one the DP names). */
static void on_realm_lookup(tg_sync_session_t *s, const Tollgate__Sync__V1__RealmLookup *m)
{
    if (s->state != READY) {
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL, "realm lookup before Welcome");
        return;
    }
    if (s->realm_jobs >= REALM_JOBS_MAX) {
        tg_sync_realm_result_t r = TOLLGATE__SYNC__V1__REALM_LOOKUP_RESULT__INIT;
        r.has_request_id = m->has_request_id;
        r.request_id = m->request_id;
        r.realm_id = m->realm_id;
        r.error = "too many realm lookups in flight";
        send_realm_result(s, &r);
        STAT(s->hub, s->hub->stats.realm_lookup_errors++);
        return;
    }
    hub_job_t *j = new_job(s->hub, s, realm_run, realm_done);
    snprintf(j->cp_id, sizeof(j->cp_id), "%s", s->cp_id);
    snprintf(j->realm_id, sizeof(j->realm_id), "%s", m->realm_id ? m->realm_id : "");
    j->realm_request_id = m->request_id;
    j->realm_digest_ok = m->has_key_digest && m->key_digest.len == 32;
    if (j->realm_digest_ok) memcpy(j->realm_digest, m->key_digest.data, 32);
    s->realm_jobs++;
    tg_workers_submit(s->hub->o.workers, &j->job);
}

/* Every connected DP drops the cached answers a realm change may have made wrong. */
static void broadcast_invalidate(tg_sync_hub_t *h, tg_sync_invalidate_t *inv)
{
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_INVALIDATE;
    env.invalidate = inv;
    uint64_t n = 0;
    for (tg_sync_session_t *s = h->sessions; s; s = s->next) {
        if (!s->conn || s->state != READY) continue;
        send_env(s, &env);
        n++;
    }
    STAT(h, h->stats.realm_invalidations += n);
}

static void on_realms_notify(tg_sync_hub_t *h, const char *payload)
{
    tg_sync_invalidate_t inv[2];
    int n = tg_sync_realms_invalidations(payload, inv);
    for (int i = 0; i < n; i++) {
        broadcast_invalidate(h, &inv[i]);
        tg_sync_realms_invalidate_clear(&inv[i]);
    }
}

/* ---------------------------------------------------------------- sessions */

tg_sync_session_t *tg_sync_session_open(tg_sync_hub_t *h, void *conn, const char *node_id,
                                        const char *cp_id, const char *cert_serial,
                                        const char *peer)
{
    if (h->stopping) return NULL;
    /* one live session per node: a reconnecting DP replaces its stale connection */
    for (tg_sync_session_t *o = h->sessions; o; o = o->next)
        if (strcmp(o->node_id, node_id) == 0 && o->conn && o->state != CLOSING)
            send_error(o, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL,
                       "replaced by a newer connection of the same data plane");
    tg_sync_session_t *s = tg_calloc(1, sizeof(*s));
    s->hub = h;
    s->conn = conn;
    snprintf(s->node_id, sizeof(s->node_id), "%s", node_id);
    snprintf(s->cp_id, sizeof(s->cp_id), "%s", cp_id);
    snprintf(s->serial, sizeof(s->serial), "%s", cert_serial);
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
    s->last_heard_ms = s->last_beat_ms = now_ms(h);
    s->resynced_at = -1;
    s->rejected_to = -1;
    s->next = h->sessions;
    h->sessions = s;
    STAT(h, h->stats.sessions++);
    TG_LOGN(MOD, "data plane %s of control plane %s connected from %s", node_id, cp_id, peer);
    return s;
}

void tg_sync_session_heard(tg_sync_session_t *s)
{
    s->last_heard_ms = now_ms(s->hub);
}

void tg_sync_session_receive(tg_sync_session_t *s, const uint8_t *frame, size_t len)
{
    if (s->state == CLOSING) return;
    s->last_heard_ms = now_ms(s->hub);
    tg_sync_env_t *env = tg_sync_unpack(frame, len);
    if (!env) {
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL, "malformed frame");
        return;
    }
    if (s->state == WAIT_HELLO && env->body_case != TOLLGATE__SYNC__V1__ENVELOPE__BODY_HELLO) {
        send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL, "expected Hello first");
    } else {
        switch (env->body_case) {
        case TOLLGATE__SYNC__V1__ENVELOPE__BODY_HELLO:
            on_hello(s, env->hello);
            break;
        case TOLLGATE__SYNC__V1__ENVELOPE__BODY_ACK:
            on_ack(s, env->ack);
            break;
        case TOLLGATE__SYNC__V1__ENVELOPE__BODY_NACK:
            on_nack(s, env->nack);
            break;
        case TOLLGATE__SYNC__V1__ENVELOPE__BODY_HEARTBEAT:
            on_heartbeat(s, env->heartbeat);
            break;
        case TOLLGATE__SYNC__V1__ENVELOPE__BODY_RENEW_REQUEST:
            on_renew(s, env->renew_request);
            break;
        case TOLLGATE__SYNC__V1__ENVELOPE__BODY_REALM_LOOKUP:
            on_realm_lookup(s, env->realm_lookup);
            break;
        case TOLLGATE__SYNC__V1__ENVELOPE__BODY_ERROR:
            TG_LOGW(MOD, "data plane %s reports: %s", s->node_id,
                    env->error->message ? env->error->message : "");
            s->close_after_flush = true;
            s->state = CLOSING;
            wake(s);
            break;
        default:
            send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL,
                       "a message a data plane does not send");
        }
    }
    tg_sync_env_free(env);
}

static void session_free(tg_sync_session_t *s)
{
    tg_sync_hub_t *h = s->hub;
    for (tg_sync_session_t **p = &h->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    end_inflight(s);
    while (s->ctl_head) {
        ctl_frame_t *c = s->ctl_head;
        s->ctl_head = c->next;
        free(c->f.buf);
        free(c);
    }
    if (s->handed) {
        free(s->handed->f.buf);
        free(s->handed);
    }
    free(s);
}

void tg_sync_session_closed(tg_sync_session_t *s)
{
    TG_LOGN(MOD, "data plane %s disconnected", s->node_id);
    if (s->connected_unix) STAT(s->hub, s->hub->stats.connected--);
    s->connected_unix = 0;
    if (s->state == READY) {
        s->conn = NULL; /* a last status row (last_seen) goes out without the session */
        s->state = CLOSING;
    }
    s->conn = NULL;
    if (s->jobs == 0) session_free(s);
}

/* ---------------------------------------------------------------- NOTIFY */

static void listen_close(tg_sync_hub_t *h)
{
    if (!h->listen) return;
    uv_poll_stop(&h->poll);
    PQfinish(h->listen);
    h->listen = NULL;
}

static void on_notify(tg_sync_hub_t *h, const PGnotify *n)
{
    STAT(h, h->stats.notifies++);
    if (strcmp(n->relname, "tollgate_config") == 0) {
        /* "cp_id:version:digest" (migration 005; digest decimal, empty when not known) */
        const char *colon = strchr(n->extra, ':');
        if (!colon || colon - n->extra != 36) return;
        char cp_id[37], hex[65];
        memcpy(cp_id, n->extra, 36);
        cp_id[36] = '\0';
        const char *dec = strchr(colon + 1, ':');
        tg_config_digest_decimal_hex(dec ? dec + 1 : NULL, hex);
        cp_learn(h, cp_get(h, cp_id), atoll(colon + 1), hex);
        schedule_cp(h, cp_id);
    } else if (strcmp(n->relname, "tollgate_cluster") == 0 &&
               strncmp(n->extra, "revoke:", 7) == 0) {
        for (tg_sync_session_t *s = h->sessions; s; s = s->next)
            if (strcmp(s->node_id, n->extra + 7) == 0 && s->conn && s->state != CLOSING)
                send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_REVOKED,
                           "this data plane has been revoked");
    } else if (strcmp(n->relname, "tollgate_cluster") == 0 &&
               strncmp(n->extra, "control-plane-deleted:", 22) == 0) {
        cp_forget(h, n->extra + 22);
    } else if (strcmp(n->relname, TG_REALM_NOTIFY_CHANNEL) == 0) {
        on_realms_notify(h, n->extra);
    }
}

static void on_listen_readable(uv_poll_t *p, int status, int events)
{
    tg_sync_hub_t *h = p->data;
    if (status < 0 || !PQconsumeInput(h->listen)) {
        TG_LOGW(MOD, "LISTEN connection lost: %s", PQerrorMessage(h->listen));
        listen_close(h);
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(h->listen))) {
        on_notify(h, n);
        PQfreemem(n);
    }
}

static void versions_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    j->rc = tg_sync_read_versions(db, j->cp_id, &j->latest, &j->oldest, j->digest, j->err,
                                  sizeof(j->err));
}

static void versions_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    if (finish_job(j) && j->rc == 0) {
        cp_entry_t *c = cp_get(j->hub, j->cp_id);
        c->oldest = j->oldest;
        cp_learn(j->hub, c, j->latest, j->digest);
        /* read from the database just now: authoritative for its version (after a repair) */
        if (j->latest == c->latest && j->digest[0])
            snprintf(c->latest_digest, sizeof(c->latest_digest), "%s", j->digest);
        schedule_cp(j->hub, j->cp_id);
    }
    free_job(j);
}

/* After (re)connecting LISTEN, notifications may have been missed: read each version once. */
static void catch_up_versions(tg_sync_hub_t *h)
{
    for (cp_entry_t *c = h->cps; c; c = c->next) {
        hub_job_t *j = new_job(h, NULL, versions_run, versions_done);
        snprintf(j->cp_id, sizeof(j->cp_id), "%s", c->cp_id);
        tg_workers_submit(h->o.workers, &j->job);
    }
}

static void listen_open(tg_sync_hub_t *h)
{
    char *conninfo = tg_malloc(strlen(h->o.conninfo) + 32);
    sprintf(conninfo, "%s connect_timeout=3", h->o.conninfo);
    h->listen = PQconnectdb(conninfo);
    free(conninfo);
    PGresult *r = NULL;
    if (PQstatus(h->listen) == CONNECTION_OK)
        r = PQexec(h->listen, "LISTEN tollgate_config; LISTEN tollgate_cluster; LISTEN " TG_REALM_NOTIFY_CHANNEL);
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok || PQsetnonblocking(h->listen, 1) != 0) {
        TG_LOGW(MOD, "cannot LISTEN for config changes yet: %s", PQerrorMessage(h->listen));
        PQfinish(h->listen);
        h->listen = NULL;
        return;
    }
    uv_poll_init(h->o.loop, &h->poll, PQsocket(h->listen));
    h->poll.data = h;
    uv_poll_start(&h->poll, UV_READABLE, on_listen_readable);
    catch_up_versions(h);
    /* Realm changes notified while LISTEN was down are lost: every DP drops its realm answers
     * (nobody is connected yet at start, so this costs nothing then). */
    tg_sync_invalidate_t all = TOLLGATE__SYNC__V1__INVALIDATE__INIT;
    all.has_everything = all.everything = true;
    broadcast_invalidate(h, &all);
}

/* ---------------------------------------------------------------- the tick */

static void send_heartbeat(tg_sync_session_t *s)
{
    cp_entry_t *c = cp_get(s->hub, s->cp_id);
    Tollgate__Sync__V1__Heartbeat hb = TOLLGATE__SYNC__V1__HEARTBEAT__INIT;
    hb.has_version = 1;
    hb.version = c->latest;
    hb.config_digest = c->latest_digest;
    tg_sync_env_t env = TOLLGATE__SYNC__V1__ENVELOPE__INIT;
    env.body_case = TOLLGATE__SYNC__V1__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(s, &env);
    s->last_beat_ms = now_ms(s->hub);
}

static void touch_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    j->rc = tg_cluster_nodes_touch(db, j->hub->o.node_id);
    if (j->rc == 0) j->endpoints = tg_cluster_nodes_endpoints(db);
}

/* Welcome lists every CP node seen lately, not only those up when this node started: a DP
 * must be able to fail over to a node started after it joined. */
static void touch_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    if (finish_job(j) && j->endpoints && json_array_size(j->endpoints) > 0)
        tg_sync_hub_set_endpoints(j->hub, j->endpoints);
    free_job(j);
}

/* ---------------------------------------------------------------- retention */

static void purge_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_db_err_t e = {0};
    long long n = 0;
    j->rc = tg_changelog_purge(db, j->hub->o.keep_versions, j->hub->o.keep_seconds, PURGE_BATCH,
                               PURGE_MAX_BATCHES, &n, &e);
    j->latest = n;
    if (j->rc) snprintf(j->err, sizeof(j->err), "%s", e.message);
}

static void purge_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_hub_t *h = j->hub;
    h->purging = false;
    if (finish_job(j)) {
        if (j->rc)
            TG_LOGW(MOD, "cannot purge the change log: %s", j->err);
        else if (j->latest > 0)
            TG_LOGN(MOD, "purged %lld old config version(s) from the change log",
                    (long long)j->latest);
        STAT(h, {
            h->stats.purges += j->rc == 0;
            h->stats.purged_versions += j->rc == 0 ? (uint64_t)j->latest : 0;
            h->stats.last_purge_unix = (int64_t)time(NULL);
        });
        /* what Welcome will announce as the oldest version changed */
        if (j->rc == 0 && j->latest > 0) catch_up_versions(h);
    }
    free_job(j);
}

static void maybe_purge(tg_sync_hub_t *h, uint64_t now)
{
    if (!h->o.purge_interval_ms || h->purging || now < h->purge_at_ms) return;
    h->purge_at_ms = now + h->o.purge_interval_ms;
    h->purging = true;
    tg_workers_submit(h->o.workers, &new_job(h, NULL, purge_run, purge_done)->job);
}

/* ---------------------------------------------------------------- digest repair */

/*
 * A control plane whose digest is not known (it held entities before migration 005, or a write
 * could not hash a row) gets it computed from its entities (tg_sync_digest_repair): once at
 * start, then at most once a minute while this node knows of one.
 */
#define REPAIR_INTERVAL_MS 60000

static void repair_run(tg_job_t *job, tg_db_t *db)
{
    hub_job_t *j = (hub_job_t *)job;
    int n = 0;
    j->rc = tg_sync_digest_repair(db, &n, j->err, sizeof(j->err));
    j->latest = n;
}

static void repair_done(tg_job_t *job)
{
    hub_job_t *j = (hub_job_t *)job;
    tg_sync_hub_t *h = j->hub;
    h->repairing = false;
    if (finish_job(j)) {
        if (j->rc)
            TG_LOGW(MOD, "cannot compute unknown config digests: %s", j->err);
        else if (j->latest > 0)
            TG_LOGN(MOD, "computed the config digest of %lld control plane(s)",
                    (long long)j->latest);
        if (j->rc == 0 && j->latest > 0) catch_up_versions(h);
    }
    free_job(j);
}

static void maybe_repair(tg_sync_hub_t *h, uint64_t now)
{
    if (h->repairing || (now < h->repair_at_ms && !h->repair_now)) return;
    bool unknown = h->repair_at_ms == 0 || h->repair_now; /* at start, or a snapshot's say */
    h->repair_now = false;
    for (cp_entry_t *c = h->cps; c && !unknown; c = c->next)
        unknown = c->latest > 0 && !c->latest_digest[0];
    h->repair_at_ms = now + REPAIR_INTERVAL_MS;
    if (!unknown) return;
    h->repairing = true;
    tg_workers_submit(h->o.workers, &new_job(h, NULL, repair_run, repair_done)->job);
}

/* ---------------------------------------------------------------- the published view */

static json_t *session_json(tg_sync_hub_t *h, tg_sync_session_t *s)
{
    cp_entry_t *c = cp_get(h, s->cp_id);
    int64_t lag = s->applied >= 0 && c->latest > s->applied ? c->latest - s->applied : 0;
    if (s->applied < 0) lag = c->latest;
    double lag_s = lag && s->behind_since_ms ? (double)(now_ms(h) - s->behind_since_ms) / 1000 : 0;
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:f,s:s,s:s?,s:I,s:I,s:I,s:I,s:b}", "id", s->node_id,
                     "control_plane_id", s->cp_id, "address", s->peer, "hostname", s->hostname,
                     "applied_version", (json_int_t)(s->applied < 0 ? 0 : s->applied),
                     "lag_versions", (json_int_t)lag, "lag_seconds", lag_s, "sync_status",
                     s->status[0] ? s->status : "behind", "last_error",
                     s->last_error[0] ? s->last_error : NULL, "connected_at",
                     (json_int_t)s->connected_unix, "deltas_sent", (json_int_t)s->deltas_sent,
                     "snapshots_sent", (json_int_t)s->snapshots_sent, "nacks", (json_int_t)s->nacks,
                     "in_flight", s->inflight != NULL);
}

static void publish_view(tg_sync_hub_t *h)
{
    json_t *cps = json_array(), *dps = json_array();
    for (cp_entry_t *c = h->cps; c; c = c->next)
        json_array_append_new(cps, json_pack("{s:s,s:I,s:I,s:s?}", "id", c->cp_id,
                                             "latest_version", (json_int_t)c->latest,
                                             "oldest_version", (json_int_t)c->oldest,
                                             "latest_digest",
                                             c->latest_digest[0] ? c->latest_digest : NULL));
    for (tg_sync_session_t *s = h->sessions; s; s = s->next)
        if (s->conn && s->state == READY) json_array_append_new(dps, session_json(h, s));
    json_t *view =
        json_pack("{s:s,s:o,s:o,s:{s:I,s:f,s:f}}", "node_id", h->o.node_id, "control_planes", cps,
                  "data_planes", dps, "retention", "keep_versions", (json_int_t)h->o.keep_versions,
                  "keep_days", h->o.keep_seconds / 86400, "purge_interval_seconds",
                  (double)h->o.purge_interval_ms / 1000);
    pthread_mutex_lock(&h->lock);
    json_t *old = h->view;
    h->view = view;
    pthread_mutex_unlock(&h->lock);
    json_decref(old);
}

static void on_tick(uv_timer_t *t)
{
    tg_sync_hub_t *h = t->data;
    uint64_t now = now_ms(h);
    maybe_purge(h, now);
    maybe_repair(h, now);
    if (!h->listen && now >= h->listen_retry_ms) {
        listen_open(h);
        h->listen_retry_ms = now + LISTEN_RETRY_MS;
    }
    if (now >= h->node_touch_ms) {
        h->node_touch_ms = now + NODE_TOUCH_MS;
        tg_workers_submit(h->o.workers, &new_job(h, NULL, touch_run, touch_done)->job);
    }
    uint64_t silent = (uint64_t)h->o.heartbeat_ms * TG_SYNC_SILENT_INTERVALS;
    for (tg_sync_session_t *s = h->sessions; s; s = s->next) {
        if (!s->conn || s->state == CLOSING) continue;
        if (now - s->last_heard_ms > silent) {
            send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL,
                       "no message for three heartbeat intervals");
            continue;
        }
        uint64_t ack_wait = (uint64_t)h->o.heartbeat_ms * ACK_TIMEOUT_INTERVALS;
        if (s->inflight && s->sent_done_ms && now - s->sent_done_ms > ack_wait) {
            char msg[160];
            snprintf(msg, sizeof(msg), "no acknowledgement of push %llu within %.1f s",
                     (unsigned long long)s->inflight->nonce, (double)ack_wait / 1000);
            STAT(h, h->stats.ack_timeouts++);
            send_error(s, TOLLGATE__SYNC__V1__ERROR_CODE__ERROR_PROTOCOL, msg);
            continue;
        }
        if (s->state == READY && now - s->last_beat_ms >= h->o.heartbeat_ms) send_heartbeat(s);
        if (s->status_dirty) write_status(s);
        if (s->retry_at_ms && now >= s->retry_at_ms) schedule(s);
    }
    publish_view(h);
}

/* ---------------------------------------------------------------- the hub */

tg_sync_hub_t *tg_sync_hub_start(const tg_sync_hub_opts_t *opts)
{
    tg_sync_hub_t *h = tg_calloc(1, sizeof(*h));
    h->o = *opts;
    if (!h->o.heartbeat_ms) h->o.heartbeat_ms = TG_SYNC_HEARTBEAT_MS_DEFAULT;
    h->next_nonce = uv_hrtime(); /* distinct across restarts */
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->stream_lock, NULL);
    uv_async_init(h->o.loop, &h->stream_async, on_stream_async);
    h->stream_async.data = h;
    h->open_handles = 2;
    h->purge_at_ms = uv_now(h->o.loop) + h->o.purge_interval_ms / 4; /* not all at start-up */
    publish_view(h);
    pthread_mutex_lock(&g_hub_lock);
    g_hub = h;
    pthread_mutex_unlock(&g_hub_lock);
    uv_timer_init(h->o.loop, &h->timer);
    h->timer.data = h;
    uv_timer_start(&h->timer, on_tick, 0, TICK_MS);
    return h;
}

void tg_sync_hub_set_endpoints(tg_sync_hub_t *h, json_t *endpoints)
{
    json_decref(h->endpoints);
    h->endpoints = json_incref(endpoints);
}

static void free_hub(uv_handle_t *handle)
{
    tg_sync_hub_t *h = handle->data;
    if (--h->open_handles > 0) return;
    for (stream_batch_t *b = h->stream_head, *n; b; b = n) { /* emitted after the last drain */
        n = b->next;
        for (size_t i = 0; i < b->n; i++)
            free(b->frames[i].buf);
        free(b->frames);
        free(b);
    }
    pthread_mutex_destroy(&h->stream_lock);
    for (cp_entry_t *c = h->cps, *n; c; c = n) {
        n = c->next;
        payload_unref(c->snapshot);
        free(c);
    }
    json_decref(h->endpoints);
    json_decref(h->view);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void tg_sync_hub_stop(tg_sync_hub_t *h)
{
    if (!h) return;
    pthread_mutex_lock(&g_hub_lock);
    if (g_hub == h) g_hub = NULL;
    pthread_mutex_unlock(&g_hub_lock);
    h->stopping = true;
    for (tg_sync_session_t *s = h->sessions; s; s = s->next)
        if (s->conn) h->o.transport->close(s->conn);
    listen_close(h);
    uv_timer_stop(&h->timer);
    pthread_mutex_lock(&h->stream_lock);
    h->stream_closed = true; /* a builder still running frees what it emits */
    pthread_mutex_unlock(&h->stream_lock);
    uv_close((uv_handle_t *)&h->stream_async, free_hub);
    /* sessions are freed by tg_sync_session_closed as the transport closes them; jobs still
     * queued finish before the workers stop (cp.c stops them after the hub) */
    uv_close((uv_handle_t *)&h->timer, free_hub);
}

void tg_sync_hub_get_stats(tg_sync_hub_t *h, tg_sync_hub_stats_t *out)
{
    pthread_mutex_lock(&h->lock);
    *out = h->stats;
    pthread_mutex_unlock(&h->lock);
}

json_t *tg_sync_hub_view(void)
{
    json_t *v = NULL;
    pthread_mutex_lock(&g_hub_lock);
    if (g_hub) {
        pthread_mutex_lock(&g_hub->lock);
        /* a deep copy: the loop thread replaces (and frees) the view it published */
        v = json_deep_copy(g_hub->view);
        pthread_mutex_unlock(&g_hub->lock);
    }
    pthread_mutex_unlock(&g_hub_lock);
    return v;
}

void tg_sync_hub_current_stats(tg_sync_hub_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&g_hub_lock);
    if (g_hub) tg_sync_hub_get_stats(g_hub, out);
    pthread_mutex_unlock(&g_hub_lock);
}

/* ---------------------------------------------------------------- Prometheus */

typedef struct text {
    char *p;
    size_t len, cap;
} text_t;

static void put(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = (t->cap + (size_t)(n > 0 ? n : 0) + 1) * 2;
        t->p = tg_realloc(t->p, t->cap);
    }
}

static void histogram(text_t *t, const char *name, const char *help, const double *bounds, size_t n,
                      const uint64_t *hist, uint64_t count, double sum)
{
    put(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += hist[i];
        put(t, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
    }
    put(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
        (unsigned long long)count, name, sum, name, (unsigned long long)count);
}

static void counter(text_t *t, const char *name, const char *help, uint64_t v)
{
    put(t, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
        (unsigned long long)v);
}

char *tg_sync_hub_metrics(void)
{
    tg_sync_hub_stats_t st;
    pthread_mutex_lock(&g_hub_lock);
    bool running = g_hub != NULL;
    if (running) tg_sync_hub_get_stats(g_hub, &st);
    pthread_mutex_unlock(&g_hub_lock);
    text_t t = {tg_malloc(4096), 0, 4096};
    t.p[0] = '\0';
    if (!running) return t.p;
    histogram(&t, "tollgate_sync_commit_to_ack_seconds",
              "Time from this node learning of a config version to a data plane acknowledging it.",
              tg_sync_latency_bounds, TG_SYNC_LATENCY_BUCKETS, st.ack_latency_hist,
              st.ack_latency_count, st.ack_latency_sum_s);
    histogram(&t, "tollgate_sync_push_bytes", "Size of each delta or snapshot pushed.",
              tg_sync_size_bounds, TG_SYNC_SIZE_BUCKETS, st.push_size_hist, st.push_size_count,
              (double)st.push_size_sum);
    put(&t,
        "# HELP tollgate_sync_pushes_total Pushes to data planes, by kind.\n"
        "# TYPE tollgate_sync_pushes_total counter\n"
        "tollgate_sync_pushes_total{kind=\"delta\"} %llu\n"
        "tollgate_sync_pushes_total{kind=\"snapshot\"} %llu\n"
        "# HELP tollgate_sync_push_bytes_total Bytes of pushes, by kind.\n"
        "# TYPE tollgate_sync_push_bytes_total counter\n"
        "tollgate_sync_push_bytes_total{kind=\"delta\"} %llu\n"
        "tollgate_sync_push_bytes_total{kind=\"snapshot\"} %llu\n",
        (unsigned long long)st.deltas_sent, (unsigned long long)st.snapshots_sent,
        (unsigned long long)st.delta_bytes, (unsigned long long)st.snapshot_bytes);
    counter(&t, "tollgate_sync_bytes_sent_total", "Bytes of push frames written to data planes.",
            st.bytes_sent);
    counter(&t, "tollgate_sync_snapshots_built_total", "Snapshots read from PostgreSQL.",
            st.snapshots_built);
    counter(&t, "tollgate_sync_acks_total", "Pushes acknowledged by data planes.", st.acks);
    counter(&t, "tollgate_sync_nacks_total", "Pushes refused (NACK) by data planes.", st.nacks);
    counter(&t, "tollgate_sync_resyncs_total", "Snapshots sent to repair a config digest mismatch.",
            st.resyncs);
    counter(&t, "tollgate_sync_store_retries_total",
            "Pushes sent again after a data plane could not store them.", st.store_retries);
    counter(&t, "tollgate_sync_sessions_total", "Sync connections opened by data planes.",
            st.sessions);
    counter(&t, "tollgate_sync_ack_timeouts_total",
            "Sessions closed because a push was not acknowledged in time.", st.ack_timeouts);
    counter(&t, "tollgate_sync_heartbeat_floods_total",
            "Sessions closed for sending heartbeats too fast.", st.floods);
    counter(&t, "tollgate_sync_changelog_purged_versions_total",
            "Config versions this node purged from the change log.", st.purged_versions);
    counter(&t, "tollgate_realm_lookups_total",
            "Realm key lookups answered for data planes (found or not).", st.realm_lookups);
    counter(&t, "tollgate_realm_lookup_errors_total",
            "Realm key lookups answered with an error (database unavailable, too many).",
            st.realm_lookup_errors);
    counter(&t, "tollgate_realm_invalidations_total",
            "Realm cache invalidations sent to data planes.", st.realm_invalidations);
    put(&t,
        "# HELP tollgate_sync_connected_data_planes Data planes connected to this node.\n"
        "# TYPE tollgate_sync_connected_data_planes gauge\n"
        "tollgate_sync_connected_data_planes %llu\n",
        (unsigned long long)st.connected);
    return t.p;
}
