/*
 * MRAM image loading: the static rows of every shard pushed to the DPUs, and the
 * integer-exactness bounds measured from them.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

/* ---- loading ---------------------------------------------------------------- */

/* Bytes [offset, offset + length) of DPU d's static MRAM image: the shard
 * table, then every shard's rows, each row padded to 8 bytes with zeros. */
static void render_static(const eb_engine *engine, uint32_t d, uint64_t offset, uint32_t length, uint8_t *out,
                          const void **weights, const int64_t *row_strides)
{
    const struct dpu_state *dpu = &engine->dpus[d];
    uint64_t end = offset + length;
    memset(out, 0, length);
    for (uint32_t k = 0; k < dpu->nr_shards; k++) {
        const struct shard *s = &engine->shards[dpu->shard_list[k]];
        const struct table *t = &engine->tables[s->table];
        uint64_t record_at = (uint64_t)k * sizeof(struct eb_shard);
        /* Chunks are multiples of 16 bytes, so a record is wholly inside one. */
        if (record_at >= offset && record_at < end) {
            struct eb_shard record = {
                .rows_offset = s->rows_offset,
                .nr_rows = (uint32_t)s->nr_rows,
                .dim = s->col_stop - s->col_start,
                .format = t->format,
            };
            memcpy(out + (record_at - offset), &record, sizeof(record));
        }
        uint32_t element = eb_element_bytes(t->format);
        uint64_t row_bytes = eb_row_bytes(t->format, s->col_stop - s->col_start);
        uint64_t data_bytes = (uint64_t)(s->col_stop - s->col_start) * element;
        uint64_t rows_begin = s->rows_offset;
        uint64_t rows_end = rows_begin + (uint64_t)s->nr_rows * row_bytes;
        if (rows_end <= offset || rows_begin >= end || s->nr_rows == 0) {
            continue;
        }
        int64_t first = offset > rows_begin ? (int64_t)((offset - rows_begin) / row_bytes) : 0;
        int64_t last = (int64_t)(((end < rows_end ? end : rows_end) - rows_begin + row_bytes - 1) / row_bytes);
        const uint8_t *base = weights[s->table];
        for (int64_t local = first; local < last; local++) {
            int64_t row = s->row_ids ? s->row_ids[local] : s->row_start + local;
            const uint8_t *source = base + row * row_strides[s->table] + (uint64_t)s->col_start * element;
            uint64_t row_at = rows_begin + (uint64_t)local * row_bytes;
            uint64_t from = row_at < offset ? offset : row_at;
            uint64_t to = row_at + data_bytes > end ? end : row_at + data_bytes;
            if (to > from) {
                memcpy(out + (from - offset), source + (from - row_at), to - from);
            }
        }
    }
}

static int push_static(eb_engine *engine, const void **weights, const int64_t *row_strides)
{
    uint8_t **staging = calloc(engine->nr_dpus, sizeof(uint8_t *));
    int rc = 0;
    if (!staging) {
        set_error(engine, "out of host memory");
        return -1;
    }
    for (uint32_t r = 0; r < engine->nr_ranks && rc == 0; r++) {
        struct rank *rank = &engine->ranks[r];
        uint64_t rank_bytes = 0;
        for (uint32_t i = 0; i < rank->nr_dpus; i++) {
            uint64_t bytes = EB_PAD8(engine->dpus[rank->first_dpu + i].static_bytes);
            rank_bytes = bytes > rank_bytes ? bytes : rank_bytes;
        }
        for (uint32_t i = 0; i < rank->nr_dpus && rank_bytes; i++) {
            staging[i] = malloc(EB_LOAD_CHUNK_BYTES);
            if (!staging[i]) {
                set_error(engine, "out of host memory");
                rc = -1;
                break;
            }
        }
        for (uint64_t offset = 0; offset < rank_bytes && rc == 0; offset += EB_LOAD_CHUNK_BYTES) {
            uint32_t length =
                (uint32_t)(rank_bytes - offset < EB_LOAD_CHUNK_BYTES ? rank_bytes - offset : EB_LOAD_CHUNK_BYTES);
            for (uint32_t i = 0; i < rank->nr_dpus; i++) {
                render_static(engine, rank->first_dpu + i, offset, length, staging[i], weights, row_strides);
            }
            struct dpu_set_t dpu;
            uint32_t i;
            DPU_FOREACH(rank->set, dpu, i)
            {
                dpu_prepare_xfer(dpu, staging[i]);
            }
            dpu_error_t status = dpu_push_xfer(rank->set, DPU_XFER_TO_DPU, DPU_MRAM_HEAP_POINTER_NAME, (uint32_t)offset,
                                               length, DPU_XFER_DEFAULT);
            if (status != DPU_OK) {
                set_error(engine, "loading rows into rank %u failed: %s", r, dpu_error_to_string(status));
                rc = -1;
            }
        }
        for (uint32_t i = 0; i < rank->nr_dpus; i++) {
            free(staging[i]);
            staging[i] = NULL;
        }
    }
    free(staging);
    return rc;
}

/* ---- integer exactness -------------------------------------------------------
 *
 * Integer sums are exact or refused, never wrapped. Every integer accumulator that holds
 * part of a bag - a DPU partial (int64; int32 for unweighted int8 rows), the host-cache
 * sum, the host's merge sum - holds, after every single addition, a sum over a subset of
 * that bag's terms q * w (w = 1 unweighted, the Q16 weight otherwise). Each is therefore
 * at most max|q| of the table x the sum over the bag of |w| in magnitude, whatever the
 * order of the additions or the split into partials. A batch runs only if that bound fits
 * int64 for every bag of every integer table (checked before routing); the int32 partials
 * of unweighted int8 rows hold at most EB_MAX_LOOKUPS_PER_LAUNCH lookups, 128 x 2^23 =
 * 2^30 < 2^31. Where the bound fits int32 for every bag of a table in the batch, the host
 * sums that table in int32 (in its output cells, half the bytes of the int64 scratch);
 * every term q * w fits too, being part of the bound. The conversion takes the exact sum.
 */

#define EB_INT64_LIMIT ((uint64_t)INT64_MAX)

static void measure_table(struct table *table, const void *rows, int64_t row_stride)
{
    table->max_abs = 0;
    if (table->format == EB_FORMAT_FP32) {
        return;
    }
    int64_t low = 0, high = 0;
    for (int64_t r = 0; r < table->nr_rows; r++) {
        const uint8_t *row = (const uint8_t *)rows + r * row_stride;
        if (table->format == EB_FORMAT_INT32) {
            int32_t row_low = 0, row_high = 0;
            for (uint32_t c = 0; c < table->dim; c++) {
                int32_t x;
                memcpy(&x, row + 4u * c, sizeof(x));
                row_low = x < row_low ? x : row_low;
                row_high = x > row_high ? x : row_high;
            }
            low = row_low < low ? row_low : low;
            high = row_high > high ? row_high : high;
        } else {
            const int8_t *x = (const int8_t *)row;
            int32_t row_low = 0, row_high = 0;
            for (uint32_t c = 0; c < table->dim; c++) {
                row_low = x[c] < row_low ? x[c] : row_low;
                row_high = x[c] > row_high ? x[c] : row_high;
            }
            low = row_low < low ? row_low : low;
            high = row_high > high ? row_high : high;
        }
    }
    table->max_abs = (uint64_t)(-low > high ? -low : high);
}

/*
 * Refuses a batch in which some bag of an integer table could leave int64 (see above),
 * or whose weights for integer rows do not fit Q16; nothing has been routed yet. Sets
 * slot->int32_sums (the tables whose every bag's bound fits int32), slot->int16_partials
 * (the unweighted int8 tables whose bags are short enough for int16 partial sums) and
 * slot->nr_scratch_tables (the other integer tables).
 * Returns EB_RUN_INEXACT, EB_RUN_FAILED (bad weight) or 0.
 */
int check_integer_sums(struct eb_slot *slot, const int64_t *offsets, uint32_t batch, const float *weights)
{
    const eb_engine *engine = slot->engine;
    slot->nr_scratch_tables = 0;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        slot->int32_sums[t] = 0;
        slot->int16_partials[t] = 0;
        if (table->format == EB_FORMAT_FP32) {
            continue;
        }
        /* Largest sum of |w| (Q16 units when weighted) a bag may have, in int64 and in int32. */
        uint64_t limit = table->max_abs ? EB_INT64_LIMIT / table->max_abs : UINT64_MAX;
        const uint64_t limit32 = table->max_abs ? (uint64_t)INT32_MAX / table->max_abs : UINT64_MAX;
        uint64_t largest = 0; /* the largest bound (sum of |w|) of the batch's bags */
        const char *format = table->format == EB_FORMAT_INT32 ? "int32" : "int8";
        uint32_t b = 0;
        if (!weights) {
            /* Unweighted, the bound is the bag's length: the longest, in a loop the compiler
             * vectorises; the bags are walked one by one below only when one is too long. */
            const int64_t *bags = offsets + (int64_t)t * batch;
            int64_t longest = 0;
            for (uint32_t k = 0; k < batch; k++) {
                const int64_t length = bags[k + 1] - bags[k];
                longest = length > longest ? length : longest;
            }
            largest = (uint64_t)longest;
            b = largest <= limit ? batch : 0u;
        }
        for (; b < batch; b++) {
            int64_t first = offsets[(int64_t)t * batch + b], end = offsets[(int64_t)t * batch + b + 1];
            uint64_t total = 0;
            if (!weights) {
                total = (uint64_t)(end - first);
            } else {
                /* Sufficient and cheap (vectorised): lookups x Q16(max |w|) within the limit
                 * (then that product is the bag's bound, and it cannot wrap).
                 * NaN weights compare false here and are refused by the routing. */
                float peak = 0;
                for (int64_t k = first; k < end; k++) {
                    float magnitude = fabsf(weights[k]);
                    peak = magnitude > peak ? magnitude : peak;
                }
                double peak_q = nearbyint((double)peak * (double)EB_WEIGHT_Q16_ONE);
                const uint64_t lookups = (uint64_t)(end - first);
                if (peak_q <= 2147483647.0 && (uint64_t)peak_q <= limit / (lookups ? lookups : 1u)) {
                    const uint64_t bound = (uint64_t)peak_q * lookups;
                    largest = bound > largest ? bound : largest;
                    continue;
                }
                /* Otherwise the exact sum of |q|; total <= limit + 2^31 cannot wrap. */
                for (int64_t k = first; k < end && total <= limit; k++) {
                    double q = nearbyint((double)weights[k] * (double)EB_WEIGHT_Q16_ONE);
                    if (!(q >= -2147483648.0 && q <= 2147483647.0)) {
                        slot_error(
                            slot,
                            "table '%s' (t=%u), sample %u: per_sample_weights[%lld] = %g is outside the Q16 range of "
                            "%s tables (-32768 <= w < 32768); scale the weights down or store the table as fp32",
                            table->name, t, b, (long long)k, (double)weights[k], format);
                        return EB_RUN_FAILED;
                    }
                    total += (uint64_t)fabs(q);
                }
            }
            if (total > limit) {
                int64_t lookups = end - first;
                if (weights) {
                    double magnitude = 0; /* the whole bag's sum of |w|, for the message */
                    for (int64_t k = first; k < end; k++) {
                        magnitude += fabs((double)weights[k]);
                    }
                    slot_error(
                        slot,
                        "table '%s' (t=%u), sample %u: its %s sum could exceed int64, so it would not be exact: "
                        "max |row| %llu x 65536 x sum of |weights| %.9g (%lld lookups) = %.4g > 2^63-1; use smaller "
                        "weights or shorter bags, integer rows of smaller magnitude, or an fp32 table",
                        table->name, t, b, format, (unsigned long long)table->max_abs, magnitude, (long long)lookups,
                        (double)table->max_abs * 65536.0 * magnitude);
                } else {
                    slot_error(
                        slot,
                        "table '%s' (t=%u), sample %u: its %s sum could exceed int64, so it would not be exact: "
                        "max |row| %llu x %lld lookups = %.4g > 2^63-1; use shorter bags, integer rows of smaller "
                        "magnitude, or an fp32 table",
                        table->name, t, b, format, (unsigned long long)table->max_abs, (long long)lookups,
                        (double)table->max_abs * (double)lookups);
                }
                return EB_RUN_INEXACT;
            }
            largest = total > largest ? total : largest;
        }
        slot->int32_sums[t] = largest <= limit32;
        slot->int16_partials[t] = slot->int32_sums[t] && !weights && table->format == EB_FORMAT_INT8 &&
                                  largest <= EB_MAX_LOOKUPS_PER_INT16_PARTIAL;
        slot->nr_scratch_tables += !slot->int32_sums[t];
    }
    return 0;
}

int eb_engine_load(eb_engine *engine, const void **weights, const int64_t *row_strides)
{
    if (engine->loaded) {
        set_error(engine, "tables are already loaded");
        return -1;
    }
    uint32_t column = 0;
    uint32_t int_column = 0;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        struct table *table = &engine->tables[t];
        if (!table->defined) {
            set_error(engine, "table %u was never described", t);
            return -1;
        }
        table->out_col = column;
        column += table->dim;
        if (table->format != EB_FORMAT_FP32) {
            table->scratch_col = int_column;
            int_column += table->dim;
        }
        table->nr_slices = 0;
    }
    engine->total_dim = column;
    engine->int_dim = int_column;
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        struct table *table = &engine->tables[engine->slices[k].table];
        if (table->nr_slices == 0) {
            table->first_slice = k;
            if (engine->slices[k].col_start != 0) {
                set_error(engine, "table %u: first slice starts at column %u", engine->slices[k].table,
                          engine->slices[k].col_start);
                return -1;
            }
        }
        table->nr_slices++;
    }
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        if (table->nr_slices == 0 || engine->slices[table->first_slice + table->nr_slices - 1].col_stop != table->dim) {
            set_error(engine, "table %u: its slices do not cover all %u columns", t, table->dim);
            return -1;
        }
    }

    link_followers(engine);
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        engine->dpus[d].first_slice = engine->dpus[d].last_slice = UINT32_MAX;
    }
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        for (uint32_t i = 0; i < engine->slices[k].nr_dpu_lanes; i++) {
            struct dpu_state *dpu = &engine->dpus[engine->slices[k].lanes[i].dpu];
            dpu->first_slice = dpu->first_slice == UINT32_MAX ? k : dpu->first_slice;
            dpu->last_slice = k;
        }
    }
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        struct shard *shard = &engine->shards[s];
        if (!shard->defined) {
            set_error(engine, "shard %u was never described", s);
            return -1;
        }
        shard->out_col = engine->tables[shard->table].out_col + shard->col_start;
        struct dpu_state *dpu = &engine->dpus[shard->dpu];
        shard->local = dpu->nr_shards++;
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        engine->dpus[d].shard_list = malloc((engine->dpus[d].nr_shards + 1) * sizeof(uint32_t));
        if (!engine->dpus[d].shard_list) {
            set_error(engine, "out of host memory");
            return -1;
        }
        engine->dpus[d].static_bytes = EB_PAD8((uint64_t)engine->dpus[d].nr_shards * sizeof(struct eb_shard));
    }
    uint64_t largest = 0;
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        struct shard *shard = &engine->shards[s];
        const struct table *table = &engine->tables[shard->table];
        struct dpu_state *dpu = &engine->dpus[shard->dpu];
        dpu->shard_list[shard->local] = s;
        uint64_t bytes = (uint64_t)shard->nr_rows * eb_row_bytes(table->format, shard->col_stop - shard->col_start);
        /* Rows start on 64-byte MRAM addresses: the emulator's row copies then touch
         * whole host cache lines (a 256-byte row spans 4 lines, not 5); a DPU's DMAs
         * only need 8 bytes, so there it costs at most 56 bytes per shard. */
        uint64_t aligned = ((engine->heap_address + dpu->static_bytes + 63u) & ~(uint64_t)63u) - engine->heap_address;
        if (aligned + bytes > engine->mram_bytes) {
            set_error(engine, "DPU %u: rows need more than its %llu MRAM bytes", shard->dpu,
                      (unsigned long long)engine->mram_bytes);
            return -1;
        }
        shard->rows_offset = (uint32_t)aligned;
        dpu->static_bytes = aligned + bytes;
        largest = dpu->static_bytes > largest ? dpu->static_bytes : largest;
    }
    if (link_mirrors(engine)) {
        return -1;
    }
    engine->batch_offset = (uint32_t)EB_PAD8(largest);
    if ((uint64_t)engine->batch_offset + EB_INDEX_START + 8 + EB_STATUS_BYTES > engine->mram_bytes) {
        set_error(engine, "no MRAM left for batch inputs after the rows (%u bytes used)", engine->batch_offset);
        return -1;
    }

    if (weights == NULL) {
        /* Dry: nothing goes to the DPUs; integer sums are not checked (max_abs 0). */
        engine->dry = 1;
        engine->loaded = 1;
        return 0;
    }
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        if (engine->tables[t].nr_host_rows > 0 && engine->tables[t].host_rows_zeroed) {
            set_error(engine, "table %u: its host-cached rows were given no values", t);
            return -1;
        }
        measure_table(&engine->tables[t], weights[t], row_strides[t]);
    }
    if (push_static(engine, weights, row_strides)) {
        return -1;
    }
    dpu_error_t status = write_config(engine);
    if (status != DPU_OK) {
        set_error(engine, "writing eb_config failed: %s", dpu_detail(status));
        return -1;
    }
    engine->loaded = 1;
    return 0;
}
