/*
 * The merge's index of the partial sums: every DPU's status checked, its partials listed
 * in the order the kernel wrote them and cut into runs (eb_merge.c adds them), on the
 * merge's threads, a range of DPUs each.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

/* What went wrong on a DPU of a job's range (the first one in DPU order). */
enum { INDEX_OK, INDEX_NO_STATUS, INDEX_STATUS, INDEX_NO_MEMORY };

/* DPUs [d0, d1): their statuses and, but for mirrors, their runs, into `runs`. */
struct index_job {
    struct eb_slot *slot;
    uint32_t d0, d1;
    struct merge_run **runs;
    size_t *capacity;
    uint32_t nr_runs;
    int failure;
    uint32_t failed_dpu;
    struct eb_status status;
};

/* Adds run `run` to the job's list; -1 when out of memory. */
static int add_run(struct index_job *job, const struct merge_run *run)
{
    if (reserve((void **)job->runs, job->capacity, (size_t)job->nr_runs + 1u, sizeof(struct merge_run))) {
        return -1;
    }
    (*job->runs)[job->nr_runs++] = *run;
    return 0;
}

/* Where the partials of `run` (a run of shard `run->shard` of `dpu`) go. */
static void resolve_run(const struct eb_slot *slot, struct merge_run *run)
{
    const eb_engine *engine = slot->engine;
    const struct shard *shard = &engine->shards[run->dpu->shard_list[run->shard]];
    const struct table *table = &engine->tables[shard->table];
    run->dim = shard->col_stop - shard->col_start;
    run->cell = shard->out_col;
    run->table = shard->table;
    if (table->format == EB_FORMAT_FP32) {
        run->kind = MERGE_FP32;
        return;
    }
    const uint32_t partial = eb_accumulator_bytes(table->format, run->dpu->flags);
    const int wide_partials = partial == 8u;
    if (slot->int32_sums[shard->table]) {
        run->kind = wide_partials ? MERGE_INT32_INT64 : partial == 2u ? MERGE_INT32_INT16 : MERGE_INT32_INT32;
    } else {
        run->kind = wide_partials ? MERGE_INT64_INT64 : MERGE_INT64_INT32;
        run->cell = table->scratch_col + shard->col_start;
    }
}

/*
 * Lists a DPU's partials in the order the kernel wrote them (tasklet by tasklet) and cuts
 * that list into runs of one shard whose bags never decrease: about one run per slice
 * routed to the DPU, since routing visits the bags in order slice by slice. A run's
 * partials are consecutive in the DPU's output, all of its shard's size. first_run
 * indexes the job's list until the lists are joined.
 */
static int index_dpu(struct index_job *job, struct dpu_state *dpu, uint32_t nr_tasklets)
{
    const struct eb_slot *slot = job->slot;
    if (reserve((void **)&dpu->partial_bags, &dpu->partial_bags_capacity, dpu->nr_partials, sizeof(uint32_t))) {
        return -1;
    }
    dpu->first_run = job->nr_runs;
    struct merge_run run = {.dpu = dpu, .bags = dpu->partial_bags};
    if (dpu->nr_shards == 1 && dpu->nr_partials > 0) {
        /* One shard: its segments are of that shard, bags ascending, and the tasklets take
         * consecutive ranges of them (a bag cut between two tasklets is in both ranges,
         * giving two partials of one bag): the partials' bags are the ranges' bags, copied
         * tasklet by tasklet, one run. */
        uint32_t position = 0;
        for (uint32_t k = 0; k < nr_tasklets; k++) {
            const uint32_t n = dpu->tasklet_end[k] - dpu->tasklet_first[k];
            memcpy(dpu->partial_bags + position, dpu->segment_bags + dpu->tasklet_first[k], n * sizeof(uint32_t));
            position += n;
        }
        run.first = 0;
        run.end = position;
        run.offset = EB_STATUS_BYTES;
        run.sums = dpu->output + EB_STATUS_BYTES;
        run.partial_bytes = dpu->partial_bytes[0];
        run.shard = 0;
        resolve_run(slot, &run);
        if (add_run(job, &run)) {
            return -1;
        }
        dpu->nr_runs = 1;
        return 0;
    }
    uint32_t position = 0;
    uint32_t offset = EB_STATUS_BYTES;
    uint32_t previous_bag = 0;
    for (uint32_t k = 0; k < nr_tasklets; k++) {
        for (uint32_t segment = dpu->tasklet_first[k]; segment < dpu->tasklet_end[k]; segment++) {
            const uint32_t bag = dpu->segment_bags[segment];
            const uint32_t shard = dpu->segments[segment].shard;
            if (position == 0 || bag < previous_bag || shard != run.shard) {
                if (position > 0 && add_run(job, &run)) {
                    return -1;
                }
                run.first = position;
                run.offset = offset;
                run.sums = dpu->output + offset;
                run.partial_bytes = dpu->partial_bytes[shard];
                run.shard = shard;
                resolve_run(slot, &run);
            }
            run.end = position + 1u;
            previous_bag = bag;
            dpu->partial_bags[position] = bag;
            offset += dpu->partial_bytes[shard];
            position++;
        }
    }
    if (position > 0 && add_run(job, &run)) {
        return -1;
    }
    dpu->nr_runs = job->nr_runs - dpu->first_run;
    return 0;
}

/* Checks the statuses of DPUs [d0, d1) in order (stopping at the first failure) and
 * indexes those that are not mirrors. */
static void *index_dpus(void *argument)
{
    struct index_job *job = argument;
    struct eb_slot *slot = job->slot;
    const eb_engine *engine = slot->engine;
    job->nr_runs = 0;
    for (uint32_t d = job->d0; d < job->d1; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        memcpy(&job->status, dpu->output, sizeof(job->status));
        job->failure = job->status.magic != EB_STATUS_MAGIC ? INDEX_NO_STATUS
                       : job->status.code != EB_OK          ? INDEX_STATUS
                                                            : INDEX_OK;
        if (job->failure == INDEX_OK && dpu->mirror == EB_NO_MIRROR && index_dpu(job, dpu, engine->nr_tasklets)) {
            job->failure = INDEX_NO_MEMORY;
        }
        if (job->failure != INDEX_OK) {
            job->failed_dpu = d;
            return NULL;
        }
        slot->dpu_stats[EB_STAT_CYCLES][d] +=
            (int64_t)(((uint64_t)job->status.cycles_high << 32) | job->status.cycles_low);
    }
    return NULL;
}

/* The first failure in DPU order, reported; 0 when there is none. */
static int report_failure(struct eb_slot *slot, const struct index_job *jobs, uint32_t nr_jobs)
{
    for (uint32_t j = 0; j < nr_jobs; j++) {
        const struct index_job *job = &jobs[j];
        const uint32_t d = job->failed_dpu;
        switch (job->failure) {
        case INDEX_NO_STATUS:
            slot_error(slot, "DPU %u did not report a status (the kernel did not run to its end)", d);
            return -1;
        case INDEX_STATUS:
            slot_error(slot, "DPU %u: %s (code %u, detail %u)", d, status_text(job->status.code), job->status.code,
                       job->status.detail);
            return -1;
        case INDEX_NO_MEMORY:
            slot_error(slot, "out of memory indexing the partial sums of DPU %u", d);
            return -1;
        default:
            break;
        }
    }
    return 0;
}

/*
 * The runs of every DPU in DPU order into slot->merge.runs (the order in which a bag's
 * partials are added: host/README.md, summation order). A mirror (link_mirrors) takes
 * its source's bags and runs, with its own partial sums; its source has a lower index.
 */
static int join_runs(struct eb_slot *slot, const struct index_job *jobs)
{
    const eb_engine *engine = slot->engine;
    size_t total = 0;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        const struct dpu_state *dpu = &slot->dpus[d];
        total += dpu->mirror != EB_NO_MIRROR ? slot->dpus[dpu->mirror].nr_runs : dpu->nr_runs;
    }
    if (reserve((void **)&slot->merge.runs, &slot->merge.runs_capacity, total ? total : 1u,
                sizeof(struct merge_run))) {
        slot_error(slot, "out of memory indexing the partial sums");
        return -1;
    }
    uint32_t nr_runs = 0, j = 0;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        while (d >= jobs[j].d1) {
            j++;
        }
        if (dpu->mirror != EB_NO_MIRROR) {
            const struct dpu_state *source = &slot->dpus[dpu->mirror];
            for (uint32_t r = 0; r < source->nr_runs; r++) {
                struct merge_run run = slot->merge.runs[source->first_run + r];
                run.dpu = dpu;
                run.sums = dpu->output + run.offset;
                resolve_run(slot, &run); /* its own shard: the same local index, other columns */
                slot->merge.runs[nr_runs + r] = run;
            }
            dpu->nr_runs = source->nr_runs;
        } else {
            memcpy(slot->merge.runs + nr_runs, *jobs[j].runs + dpu->first_run, dpu->nr_runs * sizeof(struct merge_run));
        }
        dpu->first_run = nr_runs;
        nr_runs += dpu->nr_runs;
    }
    slot->merge.nr_runs = nr_runs;
    return 0;
}

/* Most runs per member of a column group merged in lockstep. */
#define EB_GROUP_MAX_RUNS 8u

/* Whether two runs' cells [cell, cell + dim) overlap in the same destination rows (output
 * cells, or int64 scratch). */
static int cells_overlap(const struct merge_run *x, const struct merge_run *y)
{
    return scratch_kind(x->kind) == scratch_kind(y->kind) && x->cell < y->cell + y->dim && y->cell < x->cell + x->dim;
}

/* Whether the k members' runs (member-major, n each) can be merged in lockstep: run i of
 * every member has the same bags and accumulator kind, and no two members share a column. */
static int groupable(const struct merge_run *runs, uint32_t k, uint32_t n)
{
    for (uint32_t j = 1; j < k; j++) {
        for (uint32_t i = 0; i < n; i++) {
            const struct merge_run *a = &runs[i], *b = &runs[j * n + i];
            if (a->bags != b->bags || a->first != b->first || a->end != b->end || a->kind != b->kind ||
                a->table != b->table) {
                return 0;
            }
        }
    }
    for (uint32_t j = 0; j < k; j++) {
        for (uint32_t other = j + 1; other < k; other++) {
            for (uint32_t i = 0; i < n; i++) {
                for (uint32_t m = 0; m < n; m++) {
                    if (cells_overlap(&runs[j * n + i], &runs[other * n + m])) {
                        return 0;
                    }
                }
            }
        }
    }
    return 1;
}

/*
 * Column groups: a DPU followed by its mirrors (the column slices of one replica, placed
 * side by side) returns partials of the same bags in the same order, for other columns.
 * Their runs are interleaved, run i of every member after another, and merged in lockstep:
 * a bag's cells of the whole group are added at one visit of its output row instead of
 * one per slice. No column's summation order changes: the members' columns are disjoint,
 * each member's runs keep their order, and no other DPU lies between the members.
 */
static void group_mirrors(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    struct merge_run *runs = slot->merge.runs;
    struct merge_run members[EB_GROUP_MAX_MEMBERS * EB_GROUP_MAX_RUNS];
    for (uint32_t d = 0; d < engine->nr_dpus;) {
        const struct dpu_state *source = &slot->dpus[d];
        uint32_t k = 1;
        while (source->mirror == EB_NO_MIRROR && d + k < engine->nr_dpus && k < EB_GROUP_MAX_MEMBERS &&
               slot->dpus[d + k].mirror == d) {
            k++;
        }
        const uint32_t n = source->nr_runs, first = source->first_run;
        if (k > 1 && n <= EB_GROUP_MAX_RUNS && groupable(runs + first, k, n)) {
            memcpy(members, runs + first, (size_t)k * n * sizeof(struct merge_run));
            for (uint32_t i = 0; i < n; i++) {
                for (uint32_t j = 0; j < k; j++) {
                    runs[first + i * k + j] = members[j * n + i];
                    runs[first + i * k + j].mates = j == 0 ? k - 1u : 0u;
                }
            }
        }
        /* Not a group: every run of the k DPUs is a visit of its own (mates 0). */
        d += k;
    }
}

/*
 * The visits in the order the merge takes them (slot->merge.visit_order): the staged
 * tables' visits table by table, then the others, each part in run order. A bag's cells
 * of one table get their partials in run order either way (only that table's runs add to
 * them), so the summation order is that of the runs.
 */
static int order_visits(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    const struct merge_run *runs = slot->merge.runs;
    const uint32_t nr_runs = slot->merge.nr_runs, nr_tables = engine->nr_tables;
    if (reserve((void **)&slot->merge.visit_order, &slot->merge.visit_order_capacity, nr_runs ? nr_runs : 1u,
                sizeof(uint32_t)) ||
        reserve((void **)&slot->merge.table_visits, &slot->merge.table_visits_capacity, (size_t)nr_tables + 2u,
                sizeof(uint32_t))) {
        slot_error(slot, "out of memory indexing the partial sums");
        return -1;
    }
    /* Counts per table (staged) and for the rest (slot nr_tables), then starts. */
    uint32_t *starts = slot->merge.table_visits;
    memset(starts, 0, ((size_t)nr_tables + 2u) * sizeof(uint32_t));
    for (uint32_t r = 0; r < nr_runs; r += 1u + runs[r].mates) {
        const uint32_t t = runs[r].table;
        starts[(staged_table(&engine->tables[t]) ? t : nr_tables) + 1u]++;
    }
    for (uint32_t t = 0; t <= nr_tables; t++) {
        starts[t + 1u] += starts[t];
    }
    /* Filled through the starts, which then end up one part later: shifted back after. */
    uint64_t spans = 0;
    for (uint32_t r = 0; r < nr_runs; r += 1u + runs[r].mates) {
        const uint32_t t = runs[r].table;
        const uint32_t part = staged_table(&engine->tables[t]) ? t : nr_tables;
        slot->merge.visit_order[starts[part]++] = r;
        spans += part == nr_tables ? runs[r].end - runs[r].first : 0u;
    }
    memmove(starts + 1, starts, ((size_t)nr_tables + 1u) * sizeof(uint32_t));
    starts[0] = 0;
    slot->merge.other_visits = starts[nr_tables];
    slot->merge.nr_visits = starts[nr_tables + 1u] - starts[nr_tables];
    slot->merge.visit_spans = spans;
    return 0;
}

int index_partials(struct eb_slot *slot, uint32_t nr_jobs)
{
    const eb_engine *engine = slot->engine;
    uint64_t total = 0;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        total += slot->dpus[d].nr_partials;
    }
    /* Consecutive DPU ranges with about equal partials. */
    struct index_job jobs[EB_MAX_ROUTE_PARTS];
    uint32_t d = 0;
    uint64_t done = 0;
    for (uint32_t j = 0; j < nr_jobs; j++) {
        const uint64_t goal = total * (j + 1u) / nr_jobs;
        const uint32_t d0 = d;
        while (d < engine->nr_dpus && (done < goal || j + 1u == nr_jobs)) {
            done += slot->dpus[d++].nr_partials;
        }
        jobs[j] = (struct index_job){
            .slot = slot,
            .d0 = d0,
            .d1 = d,
            .runs = &slot->merge.part_runs[j],
            .capacity = &slot->merge.part_runs_capacity[j],
        };
    }
    run_jobs(index_dpus, jobs, sizeof(jobs[0]), nr_jobs);
    if (report_failure(slot, jobs, nr_jobs) || join_runs(slot, jobs)) {
        return -1;
    }
    group_mirrors(slot);
    return order_visits(slot);
}
