/*
 * workers.h — a fixed pool of threads, each owning one PostgreSQL connection.
 *
 * Admin API handlers are synchronous code that talks to PostgreSQL; they run
 * here so the libuv loop never blocks. A job's `run` executes on a worker
 * thread with that worker's tg_db_t; its `done` executes afterwards on the
 * loop thread (woken through a uv_async_t). The loop thread owns the pool.
 */
#ifndef TG_WORKERS_H
#define TG_WORKERS_H

#include "db.h"

#include <stdbool.h>

#include <uv.h>

typedef struct tg_job tg_job_t;
struct tg_job {
    void (*run)(tg_job_t *job, tg_db_t *db); /* worker thread */
    void (*done)(tg_job_t *job);             /* loop thread */
    /*
     * Writes set `batchable` and `abort`: they run on the writer threads,
     * which takes every queued write (up to 64) and runs them in one
     * transaction (group commit), each with its own config version; everything
     * else runs on the reader threads. `run` may be called twice for a write
     * (a batch that hit an error is replayed one write at a time), so it must
     * start from scratch each time. If that
     * transaction then fails to commit, `abort` replaces each job's result
     * with the given HTTP status: nothing of it was acknowledged.
     */
    bool batchable;
    void (*abort)(tg_job_t *job, int status);
    tg_job_t *next;
};

typedef struct tg_workers tg_workers_t;

/* Starts n threads (at least 3: two writers, the rest readers), each connecting with conninfo lazily (a down database is not fatal). */
tg_workers_t *tg_workers_start(uv_loop_t *loop, int n, const char *conninfo);
/* Queues a job; callable from the loop thread. */
void tg_workers_submit(tg_workers_t *w, tg_job_t *job);
/* Finishes queued jobs, joins the threads, runs the remaining `done`s, frees the pool. */
void tg_workers_stop(tg_workers_t *w);

#endif
