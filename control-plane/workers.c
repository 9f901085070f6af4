#include "workers.h"
#include "alloc.h"
#include "log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct worker {
    pthread_t thread;
    tg_db_t db;
    struct tg_workers *pool;
} worker_t;

struct tg_workers {
    uv_loop_t *loop;
    uv_async_t wakeup; /* signals the loop that jobs completed */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tg_job_t *queue_head, *queue_tail; /* waiting to run */
    tg_job_t *done_head, *done_tail;   /* ran, waiting for `done` on the loop */
    bool stopping;
    int n;
    worker_t *workers;
};

static void push(tg_job_t **head, tg_job_t **tail, tg_job_t *job)
{
    job->next = NULL;
    if (*tail) (*tail)->next = job;
    else *head = job;
    *tail = job;
}

static void *worker_main(void *arg)
{
    worker_t *self = arg;
    tg_workers_t *w = self->pool;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->queue_head && !w->stopping) pthread_cond_wait(&w->cond, &w->lock);
        tg_job_t *job = w->queue_head;
        if (!job) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        w->queue_head = job->next;
        if (!w->queue_head) w->queue_tail = NULL;
        pthread_mutex_unlock(&w->lock);

        job->run(job, &self->db);

        pthread_mutex_lock(&w->lock);
        push(&w->done_head, &w->done_tail, job);
        pthread_mutex_unlock(&w->lock);
        uv_async_send(&w->wakeup);
    }
    return NULL;
}

static void drain_done(tg_workers_t *w)
{
    pthread_mutex_lock(&w->lock);
    tg_job_t *job = w->done_head;
    w->done_head = w->done_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (job) {
        tg_job_t *next = job->next;
        job->done(job);
        job = next;
    }
}

static void on_wakeup(uv_async_t *h)
{
    drain_done(h->data);
}

tg_workers_t *tg_workers_start(uv_loop_t *loop, int n, const char *conninfo)
{
    tg_workers_t *w = tg_calloc(1, sizeof(*w));
    w->loop = loop;
    w->n = n;
    w->workers = tg_calloc((size_t)n, sizeof(worker_t));
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    uv_async_init(loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    for (int i = 0; i < n; i++) {
        worker_t *k = &w->workers[i];
        k->pool = w;
        k->db.conninfo = tg_strdup(conninfo); /* connected on first use by tg_db_ensure */
        if (pthread_create(&k->thread, NULL, worker_main, k) != 0) tg_fatal("cannot start worker thread");
    }
    return w;
}

void tg_workers_submit(tg_workers_t *w, tg_job_t *job)
{
    pthread_mutex_lock(&w->lock);
    push(&w->queue_head, &w->queue_tail, job);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void free_pool(uv_handle_t *h)
{
    tg_workers_t *w = h->data;
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w->workers);
    free(w);
}

void tg_workers_stop(tg_workers_t *w)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->n; i++) {
        pthread_join(w->workers[i].thread, NULL);
        tg_db_close(&w->workers[i].db);
    }
    drain_done(w);
    uv_close((uv_handle_t *)&w->wakeup, free_pool);
}
