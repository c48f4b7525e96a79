/*
 * The start of the sums of tables with host-cached rows, during the launch: each such
 * table's cells of the launch's bags set to the sum of its host-cached rows, or to zero
 * when the bag has none; the merge then adds the DPUs' partial sums and finishes the rows
 * (eb_merge.c). The other tables are staged: the merge writes their cells.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

/* A lookup's weight as the accumulator multiplies it: fp32 bits, or Q16 for integer rows. */
static inline float weight_fp32(uint32_t bits)
{
    float weight;
    memcpy(&weight, &bits, sizeof(weight));
    return weight;
}

static inline int32_t weight_q16(uint32_t bits)
{
    int32_t q16;
    memcpy(&q16, &bits, sizeof(q16));
    return q16;
}

/* GCC's unroll-and-jam fuses two rows' column loops into one it does not vectorize:
 * the host-cache sum ran three times slower. */
#if defined(__GNUC__) && !defined(__clang__)
#define EB_NO_JAM __attribute__((optimize("no-loop-unroll-and-jam")))
#else
#define EB_NO_JAM
#endif

/*
 * NAME(out, table_rows, slots, weights, dim, position, end): the sum of one bag's host lookups
 * [position, end) (at least one) into its accumulator cells `out` of type ACC; each row
 * of element type T times its weight (WEIGHT of the weight's bits) when `weights` is not
 * NULL, unweighted rows added without a multiply by 1 (a 64-bit vector multiply is slow).
 * The first row is stored as 0 + row, which is what adding it to a zeroed cell gives
 * (for fp32, -0.0 becomes +0.0 as well) without a pass that zeroes the cells first.
 */
#define EB_DEFINE_HOST_SUM(NAME, T, ACC, WEIGHT)                                                            \
    EB_NO_JAM static void NAME(ACC *restrict out, const void *table_rows, const uint32_t *restrict slots,            \
                     const uint32_t *restrict weights, uint32_t dim, uint32_t position, uint32_t end)       \
    {                                                                                                       \
        const T *rows = table_rows;                                                                         \
        const T *row = rows + (size_t)slots[position] * dim;                                                \
        if (weights) {                                                                                      \
            ACC weight = WEIGHT(weights[position]);                                                         \
            for (uint32_t c = 0; c < dim; c++) {                                                            \
                out[c] = (ACC)0 + (ACC)row[c] * weight;                                                     \
            }                                                                                               \
            for (position++; position < end; position++) {                                                  \
                row = rows + (size_t)slots[position] * dim;                                                 \
                weight = WEIGHT(weights[position]);                                                         \
                for (uint32_t c = 0; c < dim; c++) {                                                        \
                    out[c] += (ACC)row[c] * weight;                                                         \
                }                                                                                           \
            }                                                                                               \
        } else {                                                                                            \
            for (uint32_t c = 0; c < dim; c++) {                                                            \
                out[c] = (ACC)0 + (ACC)row[c];                                                              \
            }                                                                                               \
            for (position++; position < end; position++) {                                                  \
                row = rows + (size_t)slots[position] * dim;                                                 \
                for (uint32_t c = 0; c < dim; c++) {                                                        \
                    out[c] += (ACC)row[c];                                                                  \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
    }

EB_DEFINE_HOST_SUM(sum_fp32, float, float, weight_fp32)
EB_DEFINE_HOST_SUM(sum_int32_narrow, int32_t, int32_t, weight_q16)
EB_DEFINE_HOST_SUM(sum_int32_wide, int32_t, int64_t, weight_q16)
EB_DEFINE_HOST_SUM(sum_int8_narrow, int8_t, int32_t, weight_q16)
EB_DEFINE_HOST_SUM(sum_int8_wide, int8_t, int64_t, weight_q16)

/* Bags [b0, b1) of the launch; cursors: one per table. */
struct sums_job {
    struct eb_slot *slot;
    uint32_t b0, b1;
    struct sums_cursor *cursors;
};

/* The host lookups [position, end) of one bag into its cells: fp32 rows into the output,
 * integer rows into int32 output cells or the int64 scratch (`narrow`: slot->int32_sums). */
static void sum_host_rows(const struct eb_slot *slot, const struct table *table, const struct dpu_state *host,
                          void *cells, int narrow, uint32_t position, uint32_t end)
{
    const uint32_t *slots = (const uint32_t *)(host->input + EB_INDEX_START);
    const uint32_t *weights = slot->weighted ? host->weights : NULL;
    const uint32_t dim = table->dim;
    if (table->format == EB_FORMAT_FP32) {
        sum_fp32(cells, table->host_rows, slots, weights, dim, position, end);
    } else if (table->format == EB_FORMAT_INT32) {
        if (narrow) {
            sum_int32_narrow(cells, table->host_rows, slots, weights, dim, position, end);
        } else {
            sum_int32_wide(cells, table->host_rows, slots, weights, dim, position, end);
        }
    } else if (narrow) {
        sum_int8_narrow(cells, table->host_rows, slots, weights, dim, position, end);
    } else {
        sum_int8_wide(cells, table->host_rows, slots, weights, dim, position, end);
    }
}

/*
 * Bags [b0, b1) of the launch, bag by bag, so that each output row is written front to
 * back (the stores stream): each unstaged table's cells get the sum of its host-cached
 * rows, in lookup order, or zero (the host lane of the table's first slice lists the
 * slots, one segment per bag that has any, bags ascending, and the weights as fp32 bits
 * or Q16 like a DPU's). Cells: the output columns (fp32 and int32 sums) or the int64
 * scratch, whose output columns the finish writes.
 */
static void *start_bags(void *argument)
{
    struct sums_job *job = argument;
    struct eb_slot *slot = job->slot;
    const eb_engine *engine = slot->engine;
    /* Each table's first segment and lookup at or after bag b0. */
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        struct sums_cursor cursor = {0, 0};
        if (table->nr_host_rows) {
            const struct dpu_state *host = &slot->host_states[table->first_slice];
            while (cursor.segment < host->nr_segments && host->segment_bags[cursor.segment] < job->b0) {
                cursor.position += host->segments[cursor.segment++].nr_lookups;
            }
        }
        job->cursors[t] = cursor;
    }
    for (uint32_t b = job->b0; b < job->b1; b++) {
        float *row = slot->output + (size_t)b * engine->total_dim;
        int64_t *scratch_row = slot->merge.scratch + (size_t)b * engine->int_dim;
        for (uint32_t t = 0; t < engine->nr_tables; t++) {
            const struct table *table = &engine->tables[t];
            if (staged_table(table)) {
                continue; /* the merge writes every cell of it (eb_merge.c, staged tables) */
            }
            const int narrow = table->format == EB_FORMAT_FP32 || slot->int32_sums[t];
            void *cells = narrow ? (void *)(row + table->out_col) : (void *)(scratch_row + table->scratch_col);
            struct sums_cursor *cursor = &job->cursors[t];
            const struct dpu_state *host = table->nr_host_rows ? &slot->host_states[table->first_slice] : NULL;
            if (host && cursor->segment < host->nr_segments && host->segment_bags[cursor->segment] == b) {
                const uint32_t end = cursor->position + host->segments[cursor->segment].nr_lookups;
                sum_host_rows(slot, table, host, cells, table->format != EB_FORMAT_FP32 && narrow, cursor->position,
                              end);
                cursor->position = end;
                cursor->segment++;
            } else {
                memset(cells, 0, (size_t)table->dim * (narrow ? sizeof(float) : sizeof(int64_t)));
            }
        }
    }
    return NULL;
}

/* Below this much work (host-cached lookups plus bag cells) a second thread costs more
 * than it saves. */
#define EB_PARALLEL_START_WORK 32768u

/*
 * Starts the sums of the launch's bags on up to the engine's worker threads, each a
 * consecutive range of bags: every row has one writer, and each bag's sum is added in
 * the same order whatever the threads.
 */
void start_sums(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    const uint32_t nr_bags = slot->b1 - slot->b0;
    uint64_t work = 0;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        if (!staged_table(table)) {
            work += nr_bags;
        }
        if (table->nr_host_rows) {
            const uint32_t hits = slot->host_states[table->first_slice].nr_lookups;
            work += hits;
            slot->stats.host_cache_hits += hits;
            slot->stats.host_cache_bytes += (int64_t)hits * table->dim * eb_element_bytes(table->format);
        }
    }
    uint64_t threads = engine->worker_threads > 1 ? (uint64_t)engine->worker_threads : 1u;
    threads = threads < EB_MAX_ROUTE_PARTS ? threads : EB_MAX_ROUTE_PARTS;
    if (work == 0) {
        return; /* every table is staged */
    }
    threads = threads < work / EB_PARALLEL_START_WORK ? threads : work / EB_PARALLEL_START_WORK;
    threads = threads < nr_bags ? threads : nr_bags;
    threads = threads ? threads : 1u;
    struct sums_job jobs[EB_MAX_ROUTE_PARTS];
    for (uint32_t j = 0; j < threads; j++) {
        jobs[j] = (struct sums_job){
            .slot = slot,
            .b0 = slot->b0 + (uint32_t)((uint64_t)nr_bags * j / threads),
            .b1 = slot->b0 + (uint32_t)((uint64_t)nr_bags * (j + 1) / threads),
            .cursors = slot->sums_cursors + (size_t)j * engine->nr_tables,
        };
    }
    run_jobs(start_bags, jobs, sizeof(jobs[0]), (uint32_t)threads);
}
