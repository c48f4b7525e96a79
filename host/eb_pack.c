/*
 * Packing: each DPU's routed lookups laid out as its launch input.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

/* ---- one batch: packing ----------------------------------------------------- */

/* The launch's work counters of a finished DPU (its tasklet split is made). */
static void count_work(struct dpu_state *dpu, uint32_t nr_tasklets)
{
    if (dpu->uniform_dim) {
        /* Every shard of one width and row size: no pass over the segments. */
        dpu->merge_elems = (int64_t)dpu->nr_partials * dpu->uniform_dim;
        dpu->reduce_elems = (int64_t)dpu->nr_lookups * dpu->uniform_dim;
        dpu->read_row_bytes = (int64_t)dpu->nr_lookups * dpu->uniform_row_bytes;
        return;
    }
    int64_t merged = 0, elements = 0, row_bytes = 0;
    /* A partial per segment and tasklet (a segment split between tasklets has two). */
    for (uint32_t k = 0; k < nr_tasklets; k++) {
        for (uint32_t s = dpu->tasklet_first[k]; s < dpu->tasklet_end[k]; s++) {
            merged += dpu->shard_dims[dpu->segments[s].shard];
        }
    }
    for (uint32_t s = 0; s < dpu->nr_segments; s++) {
        const struct eb_segment segment = dpu->segments[s];
        elements += (int64_t)segment.nr_lookups * dpu->shard_dims[segment.shard];
        row_bytes += (int64_t)segment.nr_lookups * dpu->shard_row_bytes[segment.shard];
    }
    dpu->merge_elems = merged;
    dpu->reduce_elems = elements;
    dpu->read_row_bytes = row_bytes;
}

/*
 * Finish one DPU's inputs once no later slice adds to it: cut its lookups into
 * nr_tasklets equal ranges (each tasklet writes one partial sum per segment of its
 * range), size its transfers and lay out header, local rows (already in place),
 * weights and segments. Done right after the DPU's last slice while its segments are
 * still in cache. RUN_SPLIT when its inputs and outputs do not fit the MRAM left after
 * the rows, so the caller retries with fewer bags. The header's output offset waits
 * for the rank's largest input (pack_inputs).
 */
int finish_dpu(struct eb_slot *slot, struct dpu_state *dpu)
{
    const eb_engine *engine = slot->engine;
    uint32_t nr_tasklets = engine->nr_tasklets;
    if (dpu->nr_lookups > EB_MAX_LOOKUPS_PER_LAUNCH) {
        return RUN_SPLIT;
    }
    struct eb_batch_header *header = (struct eb_batch_header *)dpu->input;
    memset(header, 0, sizeof(*header));
    const struct eb_segment *segments = dpu->segments;
    uint64_t total = dpu->nr_lookups;
    uint32_t segment = 0;
    uint32_t used = 0; /* lookups of `segment` that earlier tasklets take */
    uint64_t output = 0;
    uint32_t nr_partials = 0;
    for (uint32_t k = 0; k < nr_tasklets; k++) {
        uint32_t lo = (uint32_t)(total * k / nr_tasklets);
        uint32_t hi = (uint32_t)(total * (k + 1) / nr_tasklets);
        header->work[k] = (struct eb_tasklet_work){
            .first_segment = segment,
            .skip = used,
            .first_lookup = lo,
            .nr_lookups = hi - lo,
            .output_offset = (uint32_t)output,
        };
        uint32_t first = segment;
        if (hi == lo) {
            dpu->tasklet_first[k] = first;
            dpu->tasklet_end[k] = first;
            continue;
        }
        /* Find the segment holding the tasklet's last lookup, four segments at a time
         * while they all end before it. */
        uint64_t reach = (uint64_t)used + (hi - lo);
        while (segment + 4 <= dpu->nr_segments) {
            uint64_t four = (uint64_t)segments[segment].nr_lookups + segments[segment + 1].nr_lookups +
                            segments[segment + 2].nr_lookups + segments[segment + 3].nr_lookups;
            if (four >= reach) {
                break;
            }
            reach -= four;
            segment += 4;
        }
        while (segments[segment].nr_lookups < reach) {
            reach -= segments[segment].nr_lookups;
            segment++;
        }
        uint32_t end = segment + 1;
        if (reach == segments[segment].nr_lookups) {
            segment++;
            used = 0;
        } else {
            used = (uint32_t)reach;
        }
        dpu->tasklet_first[k] = first;
        dpu->tasklet_end[k] = end;
        nr_partials += end - first;
        if (dpu->uniform_partial_bytes) {
            output += (uint64_t)(end - first) * dpu->uniform_partial_bytes;
        } else {
            for (uint32_t s = first; s < end; s++) {
                output += dpu->partial_bytes[segments[s].shard];
            }
        }
    }
    dpu->nr_partials = nr_partials;
    count_work(dpu, nr_tasklets);
    uint64_t input = EB_INDEX_START + EB_PAD8((uint64_t)dpu->nr_lookups * 4u) * (slot->weighted ? 2u : 1u) +
                     (uint64_t)dpu->nr_segments * sizeof(struct eb_segment);
    output += EB_STATUS_BYTES;
    if (engine->batch_offset + input + output > engine->mram_bytes) {
        return RUN_SPLIT;
    }
    dpu->input_bytes = (uint32_t)input;
    dpu->output_bytes = (uint32_t)output;
    if (reserve((void **)&dpu->input, &dpu->input_capacity, input, 1)) {
        slot_error(slot, "out of host memory");
        return RUN_ERROR;
    }
    uint32_t index_bytes = EB_PAD8(dpu->nr_lookups * 4u);
    uint32_t cursor = EB_INDEX_START + index_bytes;
    if (dpu->nr_lookups & 1u) {
        memset(dpu->input + EB_INDEX_START + dpu->nr_lookups * 4u, 0, 4);
    }
    uint32_t weights_at = 0;
    if (slot->weighted) {
        weights_at = cursor;
        /* memcpy from NULL is undefined even for 0 bytes: an idle DPU has no weight array yet */
        if (dpu->nr_lookups) {
            memcpy(dpu->input + cursor, dpu->weights, (size_t)dpu->nr_lookups * 4u);
        }
        if (dpu->nr_lookups & 1u) {
            memset(dpu->input + cursor + dpu->nr_lookups * 4u, 0, 4);
        }
        cursor += index_bytes;
    }
    if (dpu->nr_segments) {
        memcpy(dpu->input + cursor, dpu->segments, (size_t)dpu->nr_segments * sizeof(struct eb_segment));
    }
    struct eb_batch_header *filled = (struct eb_batch_header *)dpu->input;
    filled->fields = (struct eb_batch_fields){
        .magic = EB_HEADER_MAGIC,
        .nr_tasklets = engine->nr_tasklets,
        .nr_shards = dpu->nr_shards,
        .flags = dpu->flags,
        .nr_segments = dpu->nr_segments,
        .nr_lookups = dpu->nr_lookups,
        .segments_offset = engine->batch_offset + cursor,
        .indices_offset = engine->batch_offset + EB_INDEX_START,
        .weights_offset = engine->batch_offset + weights_at,
    };
    dpu->finished = 1;
    return RUN_OK;
}

/* Appends one of a DPU's tails (its records for a later part of the tables, route_bags)
 * to its own: local rows, weights, segments and their bags. */
static int append_tail(struct eb_slot *slot, struct dpu_state *dpu, const struct dpu_state *tail)
{
    const uint64_t lookups = (uint64_t)dpu->nr_lookups + tail->nr_lookups;
    if (lookups > EB_MAX_LOOKUPS_PER_LAUNCH) {
        return RUN_SPLIT; /* what finish_dpu would say */
    }
    const size_t segments = (size_t)dpu->nr_segments + tail->nr_segments + 1;
    size_t capacity = dpu->segments_capacity;
    if (reserve((void **)&dpu->input, &dpu->input_capacity, EB_INDEX_START + lookups * sizeof(uint32_t), 1) ||
        (slot->weighted && reserve((void **)&dpu->weights, &dpu->weights_capacity, lookups, sizeof(uint32_t))) ||
        reserve((void **)&dpu->segments, &dpu->segments_capacity, segments, sizeof(struct eb_segment)) ||
        reserve((void **)&dpu->segment_bags, &capacity, segments, sizeof(uint32_t))) {
        slot_error(slot, "out of host memory");
        return RUN_ERROR;
    }
    /* memcpy from NULL is undefined even for 0 bytes: an empty tail may have no arrays */
    if (tail->nr_lookups) {
        memcpy(dpu->input + EB_INDEX_START + (size_t)dpu->nr_lookups * sizeof(uint32_t),
               tail->input + EB_INDEX_START, (size_t)tail->nr_lookups * sizeof(uint32_t));
        if (slot->weighted) {
            memcpy(dpu->weights + dpu->nr_lookups, tail->weights, (size_t)tail->nr_lookups * sizeof(uint32_t));
        }
    }
    if (tail->nr_segments) {
        memcpy(dpu->segments + dpu->nr_segments, tail->segments, (size_t)tail->nr_segments * sizeof(struct eb_segment));
        memcpy(dpu->segment_bags + dpu->nr_segments, tail->segment_bags, (size_t)tail->nr_segments * sizeof(uint32_t));
    }
    dpu->nr_lookups = (uint32_t)lookups;
    dpu->nr_segments += tail->nr_segments;
    return RUN_OK;
}

/* Finishes DPUs [first_dpu, end_dpu) of a batch routed in several parts: each DPU that is
 * no mirror gets its tails appended in part order (so its records are in table order, as
 * in one pass), then is finished. */
int finish_dpus(struct eb_slot *slot, uint32_t first_dpu, uint32_t end_dpu)
{
    for (uint32_t d = first_dpu; d < end_dpu; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        if (dpu->mirror != EB_NO_MIRROR || dpu->finished) {
            continue;
        }
        int rc = RUN_OK;
        /* Its tails for the parts after its home part (the earlier ones are empty). */
        for (uint32_t p = dpu->home_part + 1; p < slot->nr_parts && rc == RUN_OK; p++) {
            rc = append_tail(slot, dpu, &slot->tails[p - 1][d]);
        }
        rc = rc == RUN_OK ? finish_dpu(slot, dpu) : rc;
        if (rc != RUN_OK) {
            return rc;
        }
    }
    return RUN_OK;
}

/* A mirror's launch is its source's (link_mirrors): the same counts and transfer sizes;
 * its buffers are not written, and reset_states leaves it alone, so it is finished here
 * every launch. */
static int finish_mirror(struct eb_slot *slot, struct dpu_state *dpu)
{
    struct dpu_state *source = &slot->dpus[dpu->mirror];
    if (!source->finished) {
        int rc = finish_dpu(slot, source);
        if (rc != RUN_OK) {
            return rc;
        }
    }
    dpu->nr_lookups = source->nr_lookups;
    dpu->nr_segments = source->nr_segments;
    dpu->nr_partials = source->nr_partials;
    dpu->merge_elems = source->merge_elems; /* its shards have its source's sizes (link_mirrors) */
    dpu->reduce_elems = source->reduce_elems;
    dpu->read_row_bytes = source->read_row_bytes;
    dpu->input_bytes = source->input_bytes;
    dpu->output_bytes = source->output_bytes;
    dpu->finished = 1; /* (its tasklet split is read from its source: eb_index.c) */
    return RUN_OK;
}

/* Finish the DPUs no slice reached or whose last slice came earlier, and size each
 * rank's transfers (padded to its largest DPU). */
__attribute__((noinline)) int plan_transfers(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    uint32_t *max_input = slot->max_input, *max_output = slot->max_output;
    for (uint32_t r = 0; r < engine->nr_ranks; r++) {
        max_input[r] = 0;
        max_output[r] = 0;
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        if (dpu->mirror != EB_NO_MIRROR || !dpu->finished) {
            int rc = dpu->mirror == EB_NO_MIRROR ? finish_dpu(slot, dpu) : finish_mirror(slot, dpu);
            if (rc != RUN_OK) {
                return rc;
            }
        }
        max_input[dpu->rank] = dpu->input_bytes > max_input[dpu->rank] ? dpu->input_bytes : max_input[dpu->rank];
        max_output[dpu->rank] = dpu->output_bytes > max_output[dpu->rank] ? dpu->output_bytes : max_output[dpu->rank];
    }
    for (uint32_t r = 0; r < engine->nr_ranks; r++) {
        if ((uint64_t)engine->batch_offset + max_input[r] + max_output[r] > engine->mram_bytes) {
            return RUN_SPLIT;
        }
    }
    return RUN_OK;
}

/* Bytes of a DPU's output buffer: its rank's transfer size, whole cache lines. */
static size_t output_buffer_bytes(const struct eb_slot *slot, const struct dpu_state *dpu)
{
    return ((size_t)slot->max_output[dpu->rank] + 63u) & ~(size_t)63u;
}

/* Every buffer of a rank is read up to the rank's largest input; outputs follow it. The
 * outputs are laid out in DPU order in one allocation (slot->outputs). */
__attribute__((noinline)) int pack_inputs(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    size_t total = 64u; /* room to align the first buffer to a cache line */
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        total += output_buffer_bytes(slot, &slot->dpus[d]);
    }
    if (reserve((void **)&slot->outputs, &slot->outputs_capacity, total, 1)) {
        slot_error(slot, "out of host memory");
        return -1;
    }
    uint8_t *next = (uint8_t *)(((uintptr_t)slot->outputs + 63u) & ~(uintptr_t)63u);
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        dpu->output = next;
        next += output_buffer_bytes(slot, dpu);
        if (dpu->mirror != EB_NO_MIRROR) {
            continue; /* it sends its source's buffer, of the same rank */
        }
        if (reserve((void **)&dpu->input, &dpu->input_capacity, slot->max_input[dpu->rank], 1)) {
            slot_error(slot, "out of host memory");
            return -1;
        }
        ((struct eb_batch_header *)dpu->input)->fields.output_offset =
            engine->batch_offset + slot->max_input[dpu->rank];
    }
    return 0;
}
