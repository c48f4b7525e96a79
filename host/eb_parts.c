/*
 * One launch's route+pack over host threads: the tables cut into consecutive parts of
 * about equal routing time (as measured in the last launches), one thread per
 * part, then the DPUs left finished by the same threads, a chunk at a time.
 * See host/README.md (route+pack) for why a DPU's inputs do not depend on the parts.
 */
#include "eb_internal.h"

/* Below this many lookups a batch is routed as one part: a second part's copy costs more
 * than a second thread saves. */
#define EB_PARALLEL_ROUTE_LOOKUPS (1u << 16)

/* A part gets at least this many of the batch's lookups on average: the threshold above
 * gives two parts, each further part needs as much again. */
#define EB_PART_LOOKUPS (EB_PARALLEL_ROUTE_LOOKUPS / 2u)

/* A table's routing work for bags [b0, b1): its lookups times its routed slices
 * (followers copy, mirrors do nothing). */
static uint64_t table_work(const eb_engine *engine, uint32_t t, const int64_t *offsets, uint32_t batch, uint32_t b0,
                           uint32_t b1, uint64_t *lookups)
{
    const struct table *table = &engine->tables[t];
    const uint64_t table_lookups = (uint64_t)(offsets[(size_t)t * batch + b1] - offsets[(size_t)t * batch + b0]);
    uint64_t work = 0;
    for (uint32_t k = table->first_slice; k < table->first_slice + table->nr_slices; k++) {
        work += engine->slices[k].leader == EB_NO_LEADER ? table_lookups : 0;
    }
    *lookups += table_lookups;
    return work;
}

/* How table t's routing work counts when the tables are cut into parts: as measured in
 * the last launches (picoseconds) when every table with work has been timed, else as
 * work. Tables route at different speeds for the same work (a replica set's narrowing
 * copy, a tiled table's lookup of its row block and replica), so work alone can leave
 * one thread with most of the time. */
static uint64_t table_cost(const struct eb_slot *slot, uint32_t t, uint64_t work, int measured)
{
    if (!measured || work == 0) {
        return work;
    }
    const double picoseconds = (double)work * slot->engine->tables[t].route_rate * 1e12;
    return picoseconds < 1.0 ? 1u : picoseconds > 1e18 ? (uint64_t)1e18 : (uint64_t)picoseconds;
}

/*
 * Cuts the tables into at most `most` parts for bags [b0, b1): part p is tables
 * [first[p], first[p + 1]). A table goes to the part in which the middle of its cost
 * (table_cost) falls (part p holds the middles in [p, p + 1) / nr_parts of the total);
 * then every part is given at least one table. A small batch, or one with fewer lookups
 * than EB_PART_LOOKUPS per part, gets fewer parts. Returns the number of parts.
 */
static uint32_t cut_parts(const struct eb_slot *slot, uint32_t b0, uint32_t b1, uint32_t most, uint32_t *first)
{
    const eb_engine *engine = slot->engine;
    const int64_t *offsets = slot->offsets;
    const uint32_t batch = slot->batch, nr_tables = engine->nr_tables;
    uint64_t total = 0, lookups = 0, ignored = 0;
    int measured = 1;
    for (uint32_t t = 0; t < nr_tables && most > 1; t++) {
        const uint64_t work = table_work(engine, t, offsets, batch, b0, b1, &lookups);
        measured &= work == 0 || engine->tables[t].route_rate > 0.0;
    }
    for (uint32_t t = 0; t < nr_tables && most > 1; t++) {
        total += table_cost(slot, t, table_work(engine, t, offsets, batch, b0, b1, &ignored), measured);
    }
    uint64_t parts = most < nr_tables ? most : nr_tables;
    parts = parts < EB_MAX_ROUTE_PARTS ? parts : EB_MAX_ROUTE_PARTS;
    parts = lookups / EB_PART_LOOKUPS < parts ? lookups / EB_PART_LOOKUPS : parts;
    first[0] = 0;
    if (lookups < EB_PARALLEL_ROUTE_LOOKUPS || parts < 2 || total == 0) {
        first[1] = nr_tables;
        return 1;
    }
    const uint32_t nr_parts = (uint32_t)parts;
    for (uint32_t p = 1; p <= nr_parts; p++) {
        first[p] = nr_tables;
    }
    uint64_t before = 0;
    uint32_t reached = 0; /* the part of the last table seen */
    for (uint32_t t = 0; t < nr_tables; t++) {
        const uint64_t cost = table_cost(slot, t, table_work(engine, t, offsets, batch, b0, b1, &ignored), measured);
        uint64_t part = (uint64_t)((double)nr_parts * (2.0 * (double)before + (double)cost) / (2.0 * (double)total));
        part = part < nr_parts - 1 ? part : nr_parts - 1;
        for (; reached < part; reached++) {
            first[reached + 1] = t;
        }
        before += cost;
    }
    /* Every part holds a table (nr_parts <= nr_tables): starts strictly increasing, the
     * last one before nr_tables. */
    for (uint32_t p = 1; p < nr_parts; p++) {
        first[p] = first[p] > first[p - 1] ? first[p] : first[p - 1] + 1;
    }
    for (uint32_t p = nr_parts - 1; p >= 1; p--) {
        first[p] = first[p] < first[p + 1] ? first[p] : first[p + 1] - 1;
    }
    return nr_parts;
}

/* Routes the tables of part p. A DPU whose slices are all in this part (its records all
 * in its own buffers) is finished right after its last slice, while its segments are in
 * cache; the others when every part is routed (finish_dpus). */
static int route_part(struct eb_slot *slot, uint32_t p)
{
    eb_engine *engine = slot->engine;
    for (uint32_t t = slot->part_first[p]; t < slot->part_first[p + 1]; t++) {
        const struct table *table = &engine->tables[t];
        const double start = now_s();
        for (uint32_t k = table->first_slice; k < table->first_slice + table->nr_slices; k++) {
            struct slice *slice = &engine->slices[k];
            int rc = route_slice_bags(slot, slice);
            for (uint32_t i = 0; rc == RUN_OK && i < slice->nr_dpu_lanes; i++) {
                struct dpu_state *dpu = &slot->dpus[slice->lanes[i].dpu];
                rc = dpu->last_slice == k && dpu->home_part == p && dpu->mirror == EB_NO_MIRROR ? finish_dpu(slot, dpu)
                                                                                                : RUN_OK;
            }
            if (rc != RUN_OK) {
                return rc;
            }
        }
        /* This table's seconds per unit of work, averaged with the last launches' (a
         * quarter weight for the newest, so one slow launch moves the cut little). */
        uint64_t ignored = 0;
        const uint64_t work = table_work(engine, t, slot->offsets, slot->batch, slot->b0, slot->b1, &ignored);
        if (work > 0) {
            const double rate = (now_s() - start) / (double)work;
            struct table *timed = &engine->tables[t];
            timed->route_rate = timed->route_rate > 0.0 ? 0.75 * timed->route_rate + 0.25 * rate : rate;
        }
    }
    return RUN_OK;
}

/* The threads of one launch: each routes its part, waits until every part is routed,
 * then (unless a part failed) finishes its range of DPUs. */
struct parts_run {
    struct eb_slot *slot;
    pthread_mutex_t lock;
    pthread_cond_t all_routed;
    uint32_t routed; /* parts routed so far */
    int failed;      /* some part did not route: nothing is finished */
    atomic_uint next_chunk; /* the next EB_FINISH_CHUNK DPUs a thread finishes */
};

struct part_job {
    struct parts_run *run;
    uint32_t part;
    int route_result;
    int finish_result;
};

static void part_routed(struct part_job *job)
{
    struct parts_run *run = job->run;
    pthread_mutex_lock(&run->lock);
    run->failed |= job->route_result != RUN_OK;
    if (++run->routed == run->slot->nr_parts) {
        pthread_cond_broadcast(&run->all_routed);
    }
    pthread_mutex_unlock(&run->lock);
}

static int wait_routed(struct parts_run *run)
{
    pthread_mutex_lock(&run->lock);
    while (run->routed < run->slot->nr_parts) {
        pthread_cond_wait(&run->all_routed, &run->lock);
    }
    int failed = run->failed;
    pthread_mutex_unlock(&run->lock);
    return failed;
}

/* DPUs a thread takes at a time to finish once every part is routed. */
#define EB_FINISH_CHUNK 32u

/* The threads finish the DPUs left (each with its tails in part order) in chunks they
 * take in turn until none is left: the DPUs left to finish (those holding tables of
 * several parts) cluster where the plan put them, so fixed ranges would leave one thread
 * with most of them. A DPU's bytes do not depend on which thread finishes it. */
static void finish_part(struct part_job *job)
{
    struct eb_slot *slot = job->run->slot;
    const uint32_t nr_dpus = slot->engine->nr_dpus;
    for (;;) {
        const uint64_t d0 = (uint64_t)atomic_fetch_add(&job->run->next_chunk, 1u) * EB_FINISH_CHUNK;
        if (d0 >= nr_dpus) {
            return;
        }
        const uint32_t d1 = d0 + EB_FINISH_CHUNK < nr_dpus ? (uint32_t)d0 + EB_FINISH_CHUNK : nr_dpus;
        job->finish_result = finish_dpus(slot, (uint32_t)d0, d1);
        if (job->finish_result != RUN_OK) {
            return;
        }
    }
}

static void *part_thread(void *argument)
{
    struct part_job *job = argument;
    job->route_result = route_part(job->run->slot, job->part);
    part_routed(job);
    if (!wait_routed(job->run)) {
        finish_part(job);
    }
    return NULL;
}

static int reset_state(struct eb_slot *slot, struct dpu_state *dpu)
{
    dpu->nr_lookups = 0;
    dpu->nr_segments = 0;
    dpu->finished = 0;
    if (reserve((void **)&dpu->input, &dpu->input_capacity, EB_INDEX_START + 8, 1)) {
        slot_error(slot, "out of host memory");
        return -1;
    }
    return 0;
}

/* Empties this launch's buffers: the DPUs', their tails for parts 1.. (allocated for the
 * first launch with that part) and the host-cache lanes. Mirrors are left alone: nothing
 * routes into them, and plan_transfers sets their counts from their sources'. */
static int reset_states(struct eb_slot *slot)
{
    eb_engine *engine = slot->engine;
    for (uint32_t p = 1; p < slot->nr_parts; p++) {
        if (!slot->tails[p - 1]) {
            slot->tails[p - 1] = calloc(engine->nr_dpus, sizeof(struct dpu_state));
            if (!slot->tails[p - 1]) {
                slot_error(slot, "out of host memory");
                return -1;
            }
        }
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        if (dpu->mirror != EB_NO_MIRROR) {
            continue;
        }
        if (reset_state(slot, dpu)) {
            return -1;
        }
        dpu->home_part =
            dpu->first_slice == UINT32_MAX ? 0 : table_part(slot, engine->slices[dpu->first_slice].table);
        for (uint32_t p = 1; p < slot->nr_parts; p++) {
            if (reset_state(slot, &slot->tails[p - 1][d])) {
                return -1;
            }
        }
    }
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        if (engine->slices[k].nr_lanes > engine->slices[k].nr_dpu_lanes && reset_state(slot, &slot->host_states[k])) {
            return -1;
        }
    }
    return 0;
}

/*
 * Routes bags [b0, b1) of the slot's batch and finishes the DPUs' inputs. With `parallel`
 * and several worker threads a big batch routes as consecutive parts of tables
 * (cut_parts), one thread per part; then the threads finish the DPUs left (finish_part). A
 * thread writes only its part's buffers: the DPUs' own (part 0) or their tails for its
 * part. The parts follow one another in table order, as in one pass over the tables, and
 * the tails are appended in part order: a DPU's inputs are the same bytes whatever the
 * parts. On an error the batch is routed again on one thread, so the error reported is
 * the first in table order.
 */
__attribute__((noinline)) int route_bags(struct eb_slot *slot, uint32_t b0, uint32_t b1, int parallel)
{
    eb_engine *engine = slot->engine;
    slot->b0 = b0;
    slot->b1 = b1;
    const long threads = parallel && engine->worker_threads > 1 ? engine->worker_threads : 1;
    const uint32_t most = threads < EB_MAX_ROUTE_PARTS ? (uint32_t)threads : EB_MAX_ROUTE_PARTS;
    slot->nr_parts = cut_parts(slot, b0, b1, most, slot->part_first);
    if (reset_states(slot)) {
        return RUN_ERROR;
    }
    const uint32_t nr_parts = slot->nr_parts;
    if (nr_parts == 1) {
        int rc = route_part(slot, 0);
        slot->stats.route_parts = rc == RUN_OK && slot->stats.route_parts < 1 ? 1 : slot->stats.route_parts;
        return rc;
    }
    struct parts_run run = {.slot = slot, .routed = 0, .failed = 0};
    atomic_init(&run.next_chunk, 0u);
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.all_routed, NULL);
    struct part_job jobs[EB_MAX_ROUTE_PARTS];
    struct job_group group;
    int threaded = 0;
    for (uint32_t p = 0; p < nr_parts; p++) {
        jobs[p] = (struct part_job){.run = &run, .part = p, .route_result = RUN_OK, .finish_result = RUN_OK};
    }
    start_jobs(part_thread, jobs, sizeof(jobs[0]), nr_parts, &group);
    /* This thread routes part 0 and any part no helper took, in part order. */
    for (uint32_t p = 0; p < nr_parts; p++) {
        threaded |= group.taken[p];
        if (!group.taken[p]) {
            jobs[p].route_result = route_part(slot, p);
            part_routed(&jobs[p]);
        }
    }
    if (!wait_routed(&run)) {
        for (uint32_t p = 0; p < nr_parts; p++) {
            if (!group.taken[p]) {
                finish_part(&jobs[p]);
            }
        }
    }
    join_jobs(&group);
    pthread_cond_destroy(&run.all_routed);
    pthread_mutex_destroy(&run.lock);
    int rc = RUN_OK;
    for (uint32_t p = 0; p < nr_parts; p++) {
        if (jobs[p].route_result == RUN_ERROR) {
            return route_bags(slot, b0, b1, 0);
        }
        rc = rc == RUN_OK ? jobs[p].route_result : rc;
    }
    if (rc != RUN_OK) {
        return rc;
    }
    for (uint32_t p = 0; p < nr_parts; p++) {
        if (jobs[p].finish_result == RUN_ERROR) {
            return RUN_ERROR;
        }
        rc = rc == RUN_OK ? jobs[p].finish_result : rc;
    }
    if (rc != RUN_OK) {
        return rc;
    }
    slot->stats.parallel_routes += threaded; /* a launch's inputs, routed on several threads */
    slot->stats.route_parts = slot->stats.route_parts < nr_parts ? nr_parts : slot->stats.route_parts;
    return RUN_OK;
}
