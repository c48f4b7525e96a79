/*
 * Pipeline stages over a slot (prepare, launch, collect, finish), fault recovery,
 * orchestration of a whole run and launch statistics.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

static void record_launch_stats(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    int64_t **dpu_stats = slot->dpu_stats;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        const struct dpu_state *dpu = &slot->dpus[d];
        dpu_stats[EB_STAT_LOOKUPS][d] += dpu->nr_lookups;
        dpu_stats[EB_STAT_SEGMENTS][d] += dpu->nr_segments;
        dpu_stats[EB_STAT_PARTIALS][d] += dpu->nr_partials;
        dpu_stats[EB_STAT_BYTES_TO_DPU][d] += dpu->input_bytes;
        dpu_stats[EB_STAT_BYTES_FROM_DPU][d] += dpu->output_bytes;
        dpu_stats[EB_STAT_PADDED_TO_DPU][d] += slot->max_input[dpu->rank];
        dpu_stats[EB_STAT_PADDED_FROM_DPU][d] += slot->max_output[dpu->rank];
        dpu_stats[EB_STAT_MERGE_ELEMS][d] += dpu->merge_elems;
        dpu_stats[EB_STAT_REDUCE_ELEMS][d] += dpu->reduce_elems;
        dpu_stats[EB_STAT_ROW_BYTES][d] += dpu->read_row_bytes;
    }
}

/* Appends ", d" for the first DPUs of a list, then the count of the others. */
static size_t append_dpus(char *out, size_t size, const uint32_t *dpus, uint32_t count)
{
    size_t used = 0;
    for (uint32_t k = 0; k < count && used < size; k++) {
        if (k == 8 && count > 9) {
            used += (size_t)snprintf(out + used, size - used, " and %u more", count - k);
            break;
        }
        used += (size_t)snprintf(out + used, size - used, "%s%u", k ? ", " : "", dpus[k]);
    }
    return used;
}

/*
 * A launch failed. Names the DPUs in fault (on the emulator also the tasklet and the
 * cause: a DMA rule, a crash of the worker process, a timeout), then reloads the kernel
 * on every DPU: after a fault the WRAM of a DPU may hold a barrier mid-round, and a load
 * resets WRAM but leaves MRAM (the tables) alone, as on hardware. The batch inputs are
 * pushed again by the next run, so the next batch is right.
 */
static void launch_failed(struct eb_slot *slot, dpu_error_t status)
{
    eb_engine *engine = slot->engine;
    int timeout = status == DPU_ERR_TIMEOUT;
    char cause[256];
    snprintf(cause, sizeof(cause), "%.255s", dpu_detail(status));
    uint32_t nr_listed = 0, not_started = 0;
    int32_t first_tasklet = -1;
    struct dpu_set_t dpu;
    uint32_t d;
    DPU_FOREACH(engine->set, dpu, d)
    {
        bool done = false, fault = false;
        if (dpu_status(dpu, &done, &fault) != DPU_OK || !fault) {
            continue;
        }
        int32_t tasklet = -1;
#ifdef UPDLRM_EMULATOR
        uint32_t index = 0;
        char message[256] = "";
        if (updlrm_emu_fault_info(dpu, &index, &tasklet, message, sizeof(message)) == DPU_OK && timeout &&
            tasklet < 0) {
            not_started++; /* queued behind a DPU that hung: it never ran */
            continue;
        }
        if (nr_listed == 0 && message[0]) {
            snprintf(cause, sizeof(cause), "%s", message);
        }
#endif
        if (nr_listed == 0) {
            first_tasklet = tasklet;
        }
        slot->failed_dpus[nr_listed++] = d;
    }

    char where[64] = "";
    if (nr_listed) {
        snprintf(where, sizeof(where), first_tasklet >= 0 ? "DPU %u tasklet %d" : "DPU %u", slot->failed_dpus[0],
                 first_tasklet);
    }
    char list[160] = "";
    append_dpus(list, sizeof(list), slot->failed_dpus, nr_listed);
    char others[96] = "";
    if (not_started) {
        snprintf(others, sizeof(others), "; %u DPU(s) queued behind did not run", not_started);
    }

    struct dpu_program_t *program = NULL;
    dpu_error_t reload = dpu_load(engine->set, engine->kernel_path, &program);
    if (reload == DPU_OK) {
        reload = write_config(engine);
    }
    char recovery[320];
    if (reload == DPU_OK) {
        snprintf(recovery, sizeof(recovery), "kernel reloaded, tables kept");
    } else {
        snprintf(recovery, sizeof(recovery), "reloading the kernel failed too (%.240s): close this engine",
                 dpu_detail(reload));
    }

    if (timeout) {
        char all[200] = "";
        if (nr_listed > 1) {
            snprintf(all, sizeof(all), " (DPUs still running: %s)", list);
        }
        slot_error(slot, "the launch timed out with %s still running%s: %s%s; %s", nr_listed ? where : "no DPU", all,
                   cause, others, recovery);
    } else if (nr_listed > 1) {
        slot_error(slot, "%s faulted: %s (DPUs in fault: %s); %s", where, cause, list, recovery);
    } else if (nr_listed == 1) {
        slot_error(slot, "%s faulted: %s; %s", where, cause, recovery);
    } else {
        slot_error(slot, "the kernel launch failed: %s; %s", cause, recovery);
    }
    slot->failure.kind = timeout ? EB_FAILURE_TIMEOUT : EB_FAILURE_DPU_FAULT;
    slot->failure.dpu = nr_listed ? (int32_t)slot->failed_dpus[0] : -1;
    slot->failure.tasklet = first_tasklet;
    slot->failure.nr_dpus = nr_listed;
    engine->broken = reload != DPU_OK;
    slot->failure.recovered = reload == DPU_OK;
    snprintf(slot->failure.cause, sizeof(slot->failure.cause), "%s", cause);
}

/* Pushes a packed launch, starts the DPUs and, while they run, sums the host-cached rows. */
static int launch_packed(struct eb_slot *slot)
{
    eb_engine *engine = slot->engine;
    double start = now_s();
    if (push_inputs(slot)) {
        return -1;
    }
    double pushed = now_s();
    slot->stats.push_s += pushed - start;

    if (engine->broken) {
        slot_error(slot, "the engine could not recover from an earlier DPU failure; close it and create a new one");
        return -1;
    }
    dpu_error_t status = dpu_launch(engine->set, DPU_ASYNCHRONOUS);
    if (status != DPU_OK) {
        launch_failed(slot, status);
        return -1;
    }
    slot->launched_at = pushed;
    double cache_start = now_s();
    start_sums(slot);
    slot->stats.host_cache_s += now_s() - cache_start;
    return 0;
}

/* Waits for the DPUs and pulls their partial sums; the DPUs are free afterwards. */
static int collect_launched(struct eb_slot *slot)
{
    eb_engine *engine = slot->engine;
    dpu_error_t status = dpu_sync(engine->set);
    if (status != DPU_OK) {
        launch_failed(slot, status);
        return -1;
    }
    double launched = now_s();
    slot->stats.launch_s += launched - slot->launched_at;

    if (pull_outputs(slot)) {
        return -1;
    }
    slot->stats.pull_s += now_s() - launched;
    record_launch_stats(slot);
    slot->stats.nr_launches++;
    return 0;
}

static int merge_launch(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    double start = now_s();
    if (merge_partials(slot, b0, b1)) {
        return -1;
    }
    slot->stats.merge_s += now_s() - start;
    return 0;
}

static int split_error(struct eb_slot *slot, uint32_t bag)
{
    const eb_engine *engine = slot->engine;
    slot_error(slot,
               "bag %u alone needs more MRAM on some DPU than is left after the rows (%llu bytes) "
               "or more than %u lookups on one DPU; spread its tables over more DPUs",
               bag, (unsigned long long)(engine->mram_bytes - engine->batch_offset), EB_MAX_LOOKUPS_PER_LAUNCH);
    return -1;
}

/* Routes and packs bags [b0, b1) for one launch: RUN_OK, RUN_SPLIT (too big) or RUN_ERROR. */
static int route_launch(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    double start = now_s();
    int plan = route_bags(slot, b0, b1, 1);
    if (plan == RUN_OK) {
        plan = plan_transfers(slot);
    }
    if (plan == RUN_OK && pack_inputs(slot)) {
        plan = RUN_ERROR;
    }
    slot->stats.route_s += now_s() - start;
    return plan;
}

/*
 * A dry engine's launch: no DPU runs; the host sums its cached rows (zeros) as during a
 * launch, so the host cache costs what it costs with real DPUs.
 */
static int dry_launch(struct eb_slot *slot)
{
    double start = now_s();
    start_sums(slot);
    slot->stats.host_cache_s += now_s() - start;
    return 0;
}

/*
 * A dry engine's collect, where the pull writes the partial sums: each DPU's output is
 * what a kernel that summed nothing would write (its status, zero partial sums; the
 * pull's bytes). Written here, after the host cache and right before the merge, as the
 * pull writes them, so the merge finds them in the caches as it would with real DPUs.
 */
static int dry_collect(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    const struct eb_status done = {.magic = EB_STATUS_MAGIC, .code = EB_OK, .nr_tasklets = engine->nr_tasklets};
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        memset(dpu->output, 0, dpu->output_bytes);
        memcpy(dpu->output, &done, sizeof(done));
    }
    record_launch_stats(slot);
    slot->stats.nr_launches++;
    return 0;
}

/*
 * Bags [b0, b1) of a batch too big for one launch, one launch after the other: routed,
 * run and merged, in halves until they fit (each half in bag order, so the summation
 * order of every bag is that of one launch).
 */
static int run_bags(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    int plan = route_launch(slot, b0, b1);
    if (plan == RUN_ERROR) {
        return -1;
    }
    if (plan == RUN_SPLIT) {
        if (b1 - b0 == 1) {
            return split_error(slot, b0);
        }
        uint32_t middle = b0 + (b1 - b0) / 2;
        return run_bags(slot, b0, middle) || run_bags(slot, middle, b1) ? -1 : 0;
    }
    if (slot->engine->dry ? dry_launch(slot) || dry_collect(slot) : launch_packed(slot) || collect_launched(slot)) {
        return -1;
    }
    return merge_launch(slot, b0, b1);
}

/* ---- one batch: stages over a slot ------------------------------------------- */

/* A slot's buffers, made on its first batch (the engine is loaded: shards and slices are final). */
static int ready_slot(struct eb_slot *slot)
{
    eb_engine *engine = slot->engine;
    if (slot->ready) {
        return 0;
    }
    slot->dpus = calloc(engine->nr_dpus, sizeof(struct dpu_state));
    slot->host_states = calloc(engine->nr_slices ? engine->nr_slices : 1, sizeof(struct dpu_state));
    slot->max_input = calloc(engine->nr_ranks, sizeof(uint32_t));
    slot->max_output = calloc(engine->nr_ranks, sizeof(uint32_t));
    slot->failed_dpus = calloc(engine->nr_dpus, sizeof(uint32_t));
    slot->int32_sums = calloc(engine->nr_tables ? engine->nr_tables : 1, sizeof(uint8_t));
    slot->int16_partials = calloc(engine->nr_tables ? engine->nr_tables : 1, sizeof(uint8_t));
    slot->layout_int16 = calloc(engine->nr_tables ? engine->nr_tables : 1, sizeof(uint8_t));
    slot->sums_cursors =
        calloc((size_t)EB_MAX_ROUTE_PARTS * (engine->nr_tables ? engine->nr_tables : 1), sizeof(struct sums_cursor));
    int failed = !slot->dpus || !slot->host_states || !slot->max_input || !slot->max_output || !slot->failed_dpus ||
                 !slot->int32_sums || !slot->int16_partials || !slot->layout_int16 || !slot->sums_cursors;
    for (int s = 0; s < EB_NR_DPU_STATS && !failed; s++) {
        slot->dpu_stats[s] = calloc(engine->nr_dpus, sizeof(int64_t));
        failed = !slot->dpu_stats[s];
    }
    for (uint32_t d = 0; d < engine->nr_dpus && !failed; d++) {
        const struct dpu_state *model = &engine->dpus[d];
        struct dpu_state *dpu = &slot->dpus[d];
        dpu->rank = model->rank;
        dpu->nr_shards = model->nr_shards;
        dpu->shard_list = model->shard_list; /* borrowed */
        dpu->static_bytes = model->static_bytes;
        dpu->first_slice = model->first_slice;
        dpu->last_slice = model->last_slice;
        dpu->mirror = model->mirror;
        dpu->partial_bytes = malloc((dpu->nr_shards + 1) * sizeof(uint32_t));
        dpu->shard_dims = malloc((dpu->nr_shards + 1) * sizeof(uint32_t));
        dpu->shard_row_bytes = malloc((dpu->nr_shards + 1) * sizeof(uint32_t));
        failed = !dpu->partial_bytes || !dpu->shard_dims || !dpu->shard_row_bytes;
        for (uint32_t k = 0; k < dpu->nr_shards && !failed; k++) {
            const struct shard *shard = &engine->shards[dpu->shard_list[k]];
            dpu->shard_dims[k] = shard->col_stop - shard->col_start;
            dpu->shard_row_bytes[k] = eb_row_bytes(engine->tables[shard->table].format, dpu->shard_dims[k]);
            const int same = k == 0 || (dpu->shard_dims[k] == dpu->uniform_dim &&
                                        dpu->shard_row_bytes[k] == dpu->uniform_row_bytes);
            dpu->uniform_dim = same ? dpu->shard_dims[k] : 0;
            dpu->uniform_row_bytes = same ? dpu->shard_row_bytes[k] : 0;
        }
    }
    if (failed) {
        slot_error(slot, "out of host memory");
        return -1;
    }
    slot->ready = 1;
    return 0;
}

void free_slot(struct eb_slot *slot, uint32_t nr_dpus, uint32_t nr_slices)
{
    for (uint32_t d = 0; slot->dpus && d < nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        free(dpu->partial_bytes);
        free(dpu->shard_dims);
        free(dpu->shard_row_bytes);
        free(dpu->input);
        free(dpu->weights);
        free(dpu->segments);
        free(dpu->segment_bags);
        free(dpu->partial_bags);
    }
    for (uint32_t k = 0; slot->host_states && k < nr_slices; k++) {
        free(slot->host_states[k].input);
        free(slot->host_states[k].weights);
        free(slot->host_states[k].segments);
        free(slot->host_states[k].segment_bags);
    }
    for (uint32_t p = 0; p < EB_MAX_ROUTE_PARTS - 1; p++) {
        for (uint32_t d = 0; slot->tails[p] && d < nr_dpus; d++) {
            free(slot->tails[p][d].input);
            free(slot->tails[p][d].weights);
            free(slot->tails[p][d].segments);
            free(slot->tails[p][d].segment_bags);
        }
        free(slot->tails[p]);
    }
    for (int s = 0; s < EB_NR_DPU_STATS; s++) {
        free(slot->dpu_stats[s]);
    }
    free(slot->dpus);
    free(slot->host_states);
    free(slot->max_input);
    free(slot->max_output);
    free(slot->outputs);
    free(slot->failed_dpus);
    free(slot->int32_sums);
    free(slot->int16_partials);
    free(slot->layout_int16);
    free(slot->sums_cursors);
    free(slot->merge.scratch);
    free(slot->merge.runs);
    free(slot->merge.positions);
    free(slot->merge.visit_order);
    free(slot->merge.table_visits);
    for (uint32_t j = 0; j < EB_MAX_ROUTE_PARTS; j++) {
        free(slot->merge.part_runs[j]);
        free(slot->merge.stage[j]);
    }
}

/* Validate, refuse inexact integer sums, zero the output and route+pack the batch. */
/* Every DPU's flags and partial-sum sizes for the slot's batch. They follow from whether
 * it is weighted and which int8 tables get int16 partials (check_integer_sums), so they
 * are set again only when those differ from the slot's last batch: the passes touch
 * every DPU's state and every shard. */
static void set_partial_layout(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    if (slot->layout_set && slot->layout_weighted == slot->weighted &&
        memcmp(slot->layout_int16, slot->int16_partials, engine->nr_tables) == 0) {
        return;
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        slot->dpus[d].flags = slot->weighted ? EB_FLAG_WEIGHTED : EB_FLAG_INT16_PARTIALS;
    }
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        const struct shard *shard = &engine->shards[s];
        if (engine->tables[shard->table].format == EB_FORMAT_INT8 && !slot->int16_partials[shard->table]) {
            slot->dpus[shard->dpu].flags &= ~EB_FLAG_INT16_PARTIALS;
        }
    }
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        const struct shard *shard = &engine->shards[s];
        struct dpu_state *dpu = &slot->dpus[shard->dpu];
        dpu->partial_bytes[shard->local] = eb_partial_bytes(engine->tables[shard->table].format, dpu->flags,
                                                            shard->col_stop - shard->col_start);
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        dpu->uniform_partial_bytes = dpu->nr_shards ? dpu->partial_bytes[0] : 0;
        for (uint32_t k = 1; k < dpu->nr_shards; k++) {
            dpu->uniform_partial_bytes =
                dpu->partial_bytes[k] == dpu->partial_bytes[0] ? dpu->uniform_partial_bytes : 0;
        }
    }
    slot->layout_set = 1;
    slot->layout_weighted = slot->weighted;
    memcpy(slot->layout_int16, slot->int16_partials, engine->nr_tables);
}

static int prepare_slot(struct eb_slot *slot, const int64_t *indices, int64_t nr_indices, const int64_t *offsets,
                        int64_t nr_offsets, const float *per_sample_weights, int pooling, float *output)
{
    eb_engine *engine = slot->engine;
    double start = now_s();
    memset(&slot->stats, 0, sizeof(slot->stats));
    slot->split = 0;
    slot->batch = 0;
    if (!engine->loaded) {
        slot_error(slot, "tables are not loaded");
        return -1;
    }
    if (ready_slot(slot)) {
        return -1;
    }
    for (int s = 0; s < EB_NR_DPU_STATS; s++) {
        memset(slot->dpu_stats[s], 0, engine->nr_dpus * sizeof(int64_t));
    }
    if (pooling != EB_POOLING_SUM && pooling != EB_POOLING_MEAN) {
        slot_error(slot, "pooling mode %d is not supported (SUM=0, MEAN=1)", pooling);
        return -1;
    }
    if (nr_offsets < 1 || (nr_offsets - 1) % engine->nr_tables != 0) {
        slot_error(slot, "offsets has %lld entries; expected T*B+1 with T=%u", (long long)nr_offsets,
                   engine->nr_tables);
        return -1;
    }
    int64_t batch = (nr_offsets - 1) / engine->nr_tables;
    if (batch >= UINT32_MAX || nr_indices < 0 || nr_indices >= ((int64_t)1 << 40)) {
        slot_error(slot, "batch of %lld bags or %lld indices is too large", (long long)batch, (long long)nr_indices);
        return -1;
    }
    if (offsets[0] != 0 || offsets[nr_offsets - 1] != nr_indices) {
        slot_error(slot, "offsets must start at 0 and end at len(indices) = %lld (got %lld .. %lld)",
                   (long long)nr_indices, (long long)offsets[0], (long long)offsets[nr_offsets - 1]);
        return -1;
    }
    /* Any decrease, in a loop the compiler vectorises; then the first one, for the message. */
    int decreasing = 0;
    for (int64_t k = 0; k + 1 < nr_offsets; k++) {
        decreasing |= offsets[k + 1] < offsets[k];
    }
    for (int64_t k = 0; decreasing && k + 1 < nr_offsets; k++) {
        if (offsets[k + 1] < offsets[k]) {
            slot_error(slot, "offsets decrease at position %lld (%lld > %lld)", (long long)k, (long long)offsets[k],
                       (long long)offsets[k + 1]);
            return -1;
        }
    }
    int refused = check_integer_sums(slot, offsets, (uint32_t)batch, per_sample_weights);
    if (refused) {
        return refused;
    }
    slot->indices = indices;
    slot->offsets = offsets;
    slot->per_sample_weights = per_sample_weights;
    slot->batch = (uint32_t)batch;
    slot->pooling = pooling;
    slot->output = output;
    slot->weighted = per_sample_weights != NULL;
    set_partial_layout(slot);
    size_t scratch_elements = (size_t)batch * engine->int_dim;
    if (reserve((void **)&slot->merge.scratch, &slot->merge.scratch_capacity, scratch_elements ? scratch_elements : 1,
                sizeof(int64_t))) {
        slot_error(slot, "out of host memory");
        return -1;
    }
    slot->stats.route_s += now_s() - start;
    slot->stats.nr_bags = batch;
    slot->stats.nr_lookups = nr_indices;
    if (batch == 0) {
        return 0;
    }
    int plan = route_launch(slot, 0, (uint32_t)batch);
    if (plan == RUN_ERROR) {
        return -1;
    }
    if (plan == RUN_SPLIT) {
        if (batch == 1) {
            return split_error(slot, 0);
        }
        slot->split = 1;
    }
    return 0;
}

/* A split batch runs here in halves, from routing to merging. */
static int launch_slot(struct eb_slot *slot)
{
    if (slot->batch == 0) {
        return 0;
    }
    if (slot->engine->dry && !slot->split) {
        return dry_launch(slot);
    }
    if (slot->split) {
        uint32_t middle = slot->batch / 2;
        return run_bags(slot, 0, middle) || run_bags(slot, middle, slot->batch) ? -1 : 0;
    }
    return launch_packed(slot);
}

static int collect_slot(struct eb_slot *slot)
{
    if (slot->batch == 0 || slot->split) {
        return 0;
    }
    return slot->engine->dry ? dry_collect(slot) : collect_launched(slot);
}

static int finish_slot(struct eb_slot *slot)
{
    return slot->batch > 0 && !slot->split && merge_launch(slot, 0, slot->batch) ? -1 : 0;
}

/* Moves a slot from state `from` to SLOT_BUSY; false (touching nothing) if it is elsewhere. */
static int claim_slot(eb_engine *engine, uint32_t index, int from, struct eb_slot **slot)
{
    if (index >= EB_NR_SLOTS) {
        return 0;
    }
    int expected = from;
    if (!atomic_compare_exchange_strong(&engine->slots[index].state, &expected, SLOT_BUSY)) {
        return 0;
    }
    *slot = &engine->slots[index];
    return 1;
}

int eb_engine_prepare(eb_engine *engine, uint32_t index, const int64_t *indices, int64_t nr_indices,
                      const int64_t *offsets, int64_t nr_offsets, const float *per_sample_weights, int pooling,
                      float *output)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_FREE, &slot)) {
        return EB_RUN_BAD_SLOT;
    }
    if (atomic_exchange(&engine->route_busy, 1)) {
        atomic_store(&slot->state, SLOT_FREE);
        return EB_RUN_BUSY;
    }
    int result = prepare_slot(slot, indices, nr_indices, offsets, nr_offsets, per_sample_weights, pooling, output);
    atomic_store(&engine->route_busy, 0);
    atomic_store(&slot->state, result == 0 ? SLOT_PREPARED : SLOT_FREE);
    return result;
}

int eb_engine_launch(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_PREPARED, &slot)) {
        return EB_RUN_BAD_SLOT;
    }
    if (atomic_exchange(&engine->dpu_busy, 1)) {
        atomic_store(&slot->state, SLOT_PREPARED);
        return EB_RUN_BUSY;
    }
    /* A split batch routes its parts here: it needs the routing stage too. */
    if (slot->split && atomic_exchange(&engine->route_busy, 1)) {
        atomic_store(&engine->dpu_busy, 0);
        atomic_store(&slot->state, SLOT_PREPARED);
        return EB_RUN_BUSY;
    }
    int result = launch_slot(slot);
    if (slot->split) {
        atomic_store(&engine->route_busy, 0);
    }
    int running = result == 0 && slot->batch > 0 && !slot->split; /* dry too: its collect writes the outputs */
    if (!running) {
        atomic_store(&engine->dpu_busy, 0);
    }
    atomic_store(&slot->state, result != 0 ? SLOT_FREE : running ? SLOT_LAUNCHED : SLOT_COLLECTED);
    return result;
}

int eb_engine_collect(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_LAUNCHED, &slot)) {
        /* after the launch of an empty or split batch there is nothing to wait for */
        int collected = index < EB_NR_SLOTS && atomic_load(&engine->slots[index].state) == SLOT_COLLECTED;
        return collected ? 0 : EB_RUN_BAD_SLOT;
    }
    int result = collect_slot(slot);
    atomic_store(&engine->dpu_busy, 0);
    atomic_store(&slot->state, result == 0 ? SLOT_COLLECTED : SLOT_FREE);
    return result;
}

int eb_engine_finish(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_COLLECTED, &slot)) {
        return EB_RUN_BAD_SLOT;
    }
    int result = finish_slot(slot);
    atomic_store(&slot->state, SLOT_FREE);
    return result;
}

int eb_engine_discard(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (claim_slot(engine, index, SLOT_PREPARED, &slot) || claim_slot(engine, index, SLOT_COLLECTED, &slot)) {
        atomic_store(&slot->state, SLOT_FREE);
        return 0;
    }
    if (claim_slot(engine, index, SLOT_LAUNCHED, &slot)) {
        int result = collect_slot(slot); /* the DPUs must stop before anyone pushes again */
        atomic_store(&engine->dpu_busy, 0);
        atomic_store(&slot->state, SLOT_FREE);
        return result;
    }
    return index < EB_NR_SLOTS && atomic_load(&engine->slots[index].state) == SLOT_FREE ? 0 : EB_RUN_BAD_SLOT;
}

/*
 * One batch, every stage in turn, on slot 0. It claims slot 0 and both stages first, so
 * a call while another batch holds any of them returns EB_RUN_BUSY at once and touches
 * nothing (not even the error text); the stage functions let batches overlap instead.
 */
int eb_engine_run(eb_engine *engine, const int64_t *indices, int64_t nr_indices, const int64_t *offsets,
                  int64_t nr_offsets, const float *per_sample_weights, int pooling, float *output)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, 0, SLOT_FREE, &slot)) {
        return EB_RUN_BUSY;
    }
    if (atomic_exchange(&engine->route_busy, 1)) {
        atomic_store(&slot->state, SLOT_FREE);
        return EB_RUN_BUSY;
    }
    if (atomic_exchange(&engine->dpu_busy, 1)) {
        atomic_store(&engine->route_busy, 0);
        atomic_store(&slot->state, SLOT_FREE);
        return EB_RUN_BUSY;
    }
    int result = prepare_slot(slot, indices, nr_indices, offsets, nr_offsets, per_sample_weights, pooling, output);
    if (result == 0) {
        result = launch_slot(slot);
    }
    atomic_store(&engine->route_busy, 0);
    if (result == 0) {
        result = collect_slot(slot);
    }
    atomic_store(&engine->dpu_busy, 0);
    if (result == 0) {
        result = finish_slot(slot);
    }
    /* The engine-wide error and stats describe the last eb_engine_run. */
    memcpy(engine->error, slot->error, sizeof(engine->error));
    engine->failure = slot->failure;
    if (slot->ready) {
        memcpy(engine->failed_dpus, slot->failed_dpus, engine->nr_dpus * sizeof(uint32_t));
    }
    engine->stats = slot->stats;
    for (int s = 0; s < EB_NR_DPU_STATS && slot->ready; s++) {
        memcpy(engine->dpu_stats[s], slot->dpu_stats[s], engine->nr_dpus * sizeof(int64_t));
    }
    atomic_store(&slot->state, SLOT_FREE);
    return result;
}
