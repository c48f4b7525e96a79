/*
 * Host worker threads kept between a batch's phases. Routing, the start of the sums, the
 * merge's index and the merge each run on several threads; a thread created per phase
 * starts late for phases this short (host/README.md has the figures). The process keeps
 * one set of helpers, shared by its engines, made as phases first need them: after a
 * phase each waits for the next a short while (EB_WORKER_SPIN_S, yielding the CPU to
 * anything runnable), then sleeps on a condition variable. They are never stopped (as
 * torch's and OpenMP's pools are not); the library is never unloaded.
 *
 * One phase at a time uses them (a try-lock): a phase that finds them busy (another
 * engine's, or another slot's stage in Engine.pipeline) or too few, or runs in a process
 * forked after they were made, creates threads of its own. Job 0 always runs on the
 * calling thread; a job no thread took is left to the caller, which runs it.
 */
#define _DEFAULT_SOURCE /* sched_yield */
#include "eb_internal.h"

#include <sched.h>

/* How long a helper keeps checking for work after a phase before it sleeps: about the
 * serial stretches between a batch's phases (packing, the index's checks). */
#define EB_WORKER_SPIN_S 300e-6

static void *worker_main(void *argument)
{
    const struct eb_worker *self = argument;
    struct eb_workers *pool = self->pool;
    unsigned seen = self->start;
    for (;;) {
        unsigned generation = atomic_load(&pool->generation);
        const double idle_since = now_s();
        while (generation == seen && now_s() - idle_since < EB_WORKER_SPIN_S) {
            sched_yield();
            generation = atomic_load(&pool->generation);
        }
        if (generation == seen) {
            pthread_mutex_lock(&pool->lock);
            while ((generation = atomic_load(&pool->generation)) == seen) {
                pthread_cond_wait(&pool->wake, &pool->lock);
            }
            pthread_mutex_unlock(&pool->lock);
        }
        seen = generation;
        if (self->index < pool->nr_jobs) {
            pool->fn(pool->jobs + self->index * pool->job_size);
        }
        if (atomic_fetch_sub(&pool->pending, 1u) == 1u) {
            pthread_mutex_lock(&pool->lock);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->lock);
        }
    }
    return NULL;
}

/* At least `count` helpers (fewer if threads cannot be made); the caller holds `busy`. */
static void grow_workers(struct eb_workers *pool, uint32_t count)
{
    if (pool->pid != getpid()) {
        return;
    }
    while (pool->nr_workers < count) {
        struct eb_worker *worker = &pool->workers[pool->nr_workers];
        /* Made between phases (the caller holds `busy`): its first phase is the next. */
        *worker = (struct eb_worker){pool, pool->nr_workers + 1u, atomic_load(&pool->generation)};
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker_main, worker) != 0) {
            return;
        }
        pthread_detach(thread); /* never joined: it lives as long as the process */
        pool->nr_workers++;
    }
}

/* The process's helpers (made under its try-lock, `busy`). */
static struct eb_workers workers;
static pthread_once_t workers_once = PTHREAD_ONCE_INIT;

static void init_workers(void)
{
    pthread_mutex_init(&workers.lock, NULL);
    pthread_cond_init(&workers.wake, NULL);
    pthread_cond_init(&workers.done, NULL);
    workers.pid = getpid();
}

void start_jobs(void *(*fn)(void *), void *jobs, size_t job_size, uint32_t nr_jobs, struct job_group *group)
{
    pthread_once(&workers_once, init_workers);
    struct eb_workers *pool = &workers;
    nr_jobs = nr_jobs < EB_MAX_ROUTE_PARTS ? nr_jobs : EB_MAX_ROUTE_PARTS;
    memset(group, 0, sizeof(*group));
    group->nr_jobs = nr_jobs;
    if (nr_jobs < 2) {
        return;
    }
    if (pool->pid == getpid() && !atomic_exchange(&pool->busy, 1)) {
        grow_workers(pool, nr_jobs - 1u);
        if (pool->nr_workers >= nr_jobs - 1u) {
            pool->fn = fn;
            pool->jobs = jobs;
            pool->job_size = job_size;
            pool->nr_jobs = nr_jobs;
            atomic_store(&pool->pending, pool->nr_workers);
            pthread_mutex_lock(&pool->lock);
            atomic_fetch_add(&pool->generation, 1u);
            pthread_cond_broadcast(&pool->wake);
            pthread_mutex_unlock(&pool->lock);
            group->pooled = 1;
            for (uint32_t j = 1; j < nr_jobs; j++) {
                group->taken[j] = 1;
            }
            return;
        }
        atomic_store(&pool->busy, 0);
    }
    for (uint32_t j = 1; j < nr_jobs; j++) {
        group->taken[j] = group->spawned[j] =
            pthread_create(&group->threads[j], NULL, fn, (char *)jobs + j * job_size) == 0;
    }
}

void join_jobs(struct job_group *group)
{
    struct eb_workers *pool = &workers;
    if (group->pooled) {
        /* The helpers finish about when this thread does: a short wait without sleeping
         * spares the wake-up. */
        const double since = now_s();
        while (atomic_load(&pool->pending) && now_s() - since < EB_WORKER_SPIN_S) {
            sched_yield();
        }
        if (atomic_load(&pool->pending)) {
            pthread_mutex_lock(&pool->lock);
            while (atomic_load(&pool->pending)) {
                pthread_cond_wait(&pool->done, &pool->lock);
            }
            pthread_mutex_unlock(&pool->lock);
        }
        atomic_store(&pool->busy, 0);
        return;
    }
    for (uint32_t j = 1; j < group->nr_jobs; j++) {
        if (group->spawned[j]) {
            pthread_join(group->threads[j], NULL);
        }
    }
}

void run_jobs(void *(*fn)(void *), void *jobs, size_t job_size, uint32_t nr_jobs)
{
    struct job_group group;
    start_jobs(fn, jobs, job_size, nr_jobs, &group);
    for (uint32_t j = 0; j < group.nr_jobs; j++) {
        if (!group.taken[j]) {
            fn((char *)jobs + j * job_size);
        }
    }
    join_jobs(&group);
}
