/*
 * Transfers and merge: inputs pushed and partial sums pulled per rank, host-cached
 * rows summed, partials merged into the output.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* ---- one batch: transfers, launch, merge ------------------------------------ */

/*
 * One transfer per rank, every DPU's buffer at once: the inputs pushed to the batch
 * offset (to_dpu), or the partial sums pulled from right after the rank's largest input.
 */
static int transfer_batch(struct eb_slot *slot, int to_dpu)
{
    const eb_engine *engine = slot->engine;
    for (uint32_t r = 0; r < engine->nr_ranks; r++) {
        struct rank *rank = &engine->ranks[r];
        struct dpu_set_t dpu;
        uint32_t i;
        DPU_FOREACH(rank->set, dpu, i)
        {
            const struct dpu_state *state = &slot->dpus[rank->first_dpu + i];
            dpu_prepare_xfer(dpu, to_dpu ? inputs_of(slot, state)->input : state->output);
        }
        dpu_error_t status =
            dpu_push_xfer(rank->set, to_dpu ? DPU_XFER_TO_DPU : DPU_XFER_FROM_DPU, DPU_MRAM_HEAP_POINTER_NAME,
                          engine->batch_offset + (to_dpu ? 0 : slot->max_input[r]),
                          to_dpu ? slot->max_input[r] : slot->max_output[r], DPU_XFER_DEFAULT);
        if (status != DPU_OK) {
            slot_error(slot, "%s rank %u failed: %s", to_dpu ? "pushing batch inputs to" : "pulling partial sums from",
                       r, dpu_detail(status));
            return -1;
        }
    }
    return 0;
}

int push_inputs(struct eb_slot *slot)
{
    return transfer_batch(slot, 1);
}

int pull_outputs(struct eb_slot *slot)
{
    return transfer_batch(slot, 0);
}

/* First position of `run` whose bag is >= `bag` (runs are sorted by bag). */
static uint32_t run_lower_bound(const struct merge_run *run, uint32_t bag)
{
    uint32_t low = run->first, high = run->end;
    while (low < high) {
        uint32_t middle = low + (high - low) / 2u;
        if (run->bags[middle] < bag) {
            low = middle + 1u;
        } else {
            high = middle;
        }
    }
    return low;
}

/* Output rows of this many bytes per block stay in the core's cache while every run passes. */
#define EB_MERGE_BLOCK_BYTES (128u << 10)

/* Positions a block's visit of a run (or column group) should take at least: each visit
 * restarts its streams (the partial order, one per member's sums), which the hardware
 * prefetchers pick up only after a few lines. */
#define EB_MERGE_PARTIALS_PER_VISIT 64u

/* How many runs ahead a visit's first bags and partial are prefetched: each visit takes
 * few partials, so it would otherwise begin with two cache misses. */
#define EB_MERGE_RUNS_AHEAD 8u

/* How many positions ahead a column group's visit prefetches the output cells it will add to. */
#define EB_MERGE_ROWS_AHEAD 4u

struct merge_job {
    const struct eb_slot *slot;
    float *output;
    uint32_t bag_start;
    uint32_t bag_stop;
    uint32_t block;      /* bags per block */
    uint32_t *positions; /* one per run */
    void *stage;         /* EB_MERGE_STAGE_BYTES or one staged row, whichever is larger */
    int others;          /* some table is not staged */
};

/* Where a visit adds its partials: bag b's cells start at base + (b - origin) x stride
 * accumulator elements, a run's at its `cell` - shift after that. The output (fp32 and
 * int32 cells) and the int64 scratch are rows of every bag (origin and shift 0); a staged
 * table's block holds rows of its own columns for bags from `origin`. */
struct merge_dest {
    void *base;
    size_t stride;
    uint32_t origin;
    uint32_t shift;
};

/* A staged table's block of bags: at most this many bytes (a few of the partials'
 * streams fit next to it in a 1-2 MB L2). */
#define EB_MERGE_STAGE_BYTES (256u << 10)

/* How many bags ahead a staged table's finish prefetches the output cells it will write:
 * one cell a row apart each, which the hardware prefetchers do not follow. */
#define EB_MERGE_FINISH_AHEAD 4u

/* Adds the partials [*position, run end) of a run whose bags are below `stop` into the
 * accumulator rows of `dest` (OUT: the accumulator type, P: the partial's). */
#define EB_MERGE_RUN(OUT, P)                                                                                \
    do {                                                                                                    \
        OUT *const base = (OUT *)dest->base + (run->cell - dest->shift);                                    \
        const size_t stride = dest->stride;                                                                 \
        const uint32_t origin = dest->origin;                                                               \
        for (; position < end && bags[position] < stop; position++) {                                       \
            OUT *restrict out = base + (size_t)(bags[position] - origin) * stride;                          \
            const P *restrict partial = (const P *)(sums + (size_t)(position - first) * bytes);             \
            for (uint32_t c = 0; c < dim; c++) {                                                            \
                out[c] += (OUT)partial[c];                                                                  \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

/* ADD(OUT, P) for `run`'s accumulator kind: its partials' type P added into fp32, int32
 * or int64 cells OUT (an int64 partial of an int32 cell fits int32: part of the bound). */
#define EB_MERGE_BY_KIND(ADD)                                                                               \
    do {                                                                                                    \
        switch (run->kind) {                                                                                \
        case MERGE_FP32:                                                                                    \
            ADD(float, float);                                                                              \
            break;                                                                                          \
        case MERGE_INT32_INT16:                                                                             \
            ADD(int32_t, int16_t);                                                                          \
            break;                                                                                          \
        case MERGE_INT32_INT32:                                                                             \
            ADD(int32_t, int32_t);                                                                          \
            break;                                                                                          \
        case MERGE_INT32_INT64:                                                                             \
            ADD(int32_t, int64_t);                                                                          \
            break;                                                                                          \
        case MERGE_INT64_INT32:                                                                             \
            ADD(int64_t, int32_t);                                                                          \
            break;                                                                                          \
        default:                                                                                            \
            ADD(int64_t, int64_t);                                                                          \
            break;                                                                                          \
        }                                                                                                   \
    } while (0)

/* EB_MERGE_RUN for a run and its `mates` (lockstep: the same bags, other columns): at
 * each position every member's partial is added into the bag's row, member by member. */
#define EB_MERGE_GROUP(OUT, P)                                                                              \
    do {                                                                                                    \
        OUT *const base = (OUT *)dest->base;                                                                \
        const size_t stride = dest->stride;                                                                 \
        const uint32_t origin = dest->origin;                                                               \
        for (; position < end && bags[position] < stop; position++) {                                       \
            if (position + EB_MERGE_ROWS_AHEAD < end && bags[position + EB_MERGE_ROWS_AHEAD] < stop) {      \
                const char *ahead =                                                                         \
                    (const char *)(base + (size_t)(bags[position + EB_MERGE_ROWS_AHEAD] - origin) * stride + lo); \
                for (size_t line = 0; line < span * sizeof(OUT); line += 64u) {                             \
                    __builtin_prefetch(ahead + line, 1);                                                    \
                }                                                                                           \
            }                                                                                               \
            OUT *const row = base + (size_t)(bags[position] - origin) * stride;                             \
            const size_t at = position - first;                                                             \
            for (uint32_t j = 0; j < members; j++) {                                                        \
                OUT *restrict out = row + cells[j];                                                         \
                const P *restrict partial = (const P *)(sums[j] + at * bytes[j]);                           \
                for (uint32_t c = 0; c < dims[j]; c++) {                                                    \
                    out[c] += (OUT)partial[c];                                                              \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

/* Adds the partials of a column group (a run and its mates) from `position` on whose bags
 * are below `stop`; returns the first position not added. */
static uint32_t merge_group(const struct merge_run *run, uint32_t position, uint32_t stop,
                            const struct merge_dest *dest)
{
    const uint32_t *const bags = run->bags;
    const uint32_t first = run->first, end = run->end, members = run->mates + 1u;
    /* The members' fields in locals: stores to int32 cells could alias them otherwise. */
    uint32_t cells[EB_GROUP_MAX_MEMBERS], dims[EB_GROUP_MAX_MEMBERS];
    size_t bytes[EB_GROUP_MAX_MEMBERS];
    const uint8_t *sums[EB_GROUP_MAX_MEMBERS];
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint32_t j = 0; j < members; j++) {
        cells[j] = run[j].cell - dest->shift;
        lo = cells[j] < lo ? cells[j] : lo;
        hi = cells[j] + run[j].dim > hi ? cells[j] + run[j].dim : hi;
        dims[j] = run[j].dim;
        bytes[j] = run[j].partial_bytes;
        sums[j] = run[j].sums;
    }
    const size_t span = hi - lo;
    EB_MERGE_BY_KIND(EB_MERGE_GROUP);
    return position;
}

/*
 * Adds the partials of `run` from `position` on whose bags are below `stop` into their
 * bags' output columns (fp32), int32 output cells or int64 scratch (integer tables, see
 * slot->int32_sums); returns the first position not added. Everything it needs is in the
 * run (resolved by index_partials), so a visit starts with no lookups. Partials start
 * 8-byte aligned in a malloc'ed buffer: every access is aligned.
 */
static uint32_t merge_run(const struct merge_run *run, uint32_t position, uint32_t stop,
                          const struct merge_dest *dest)
{
    const uint32_t *const bags = run->bags;
    const uint8_t *const sums = run->sums;
    const uint32_t first = run->first, end = run->end, bytes = run->partial_bytes, dim = run->dim;
    EB_MERGE_BY_KIND(EB_MERGE_RUN);
    return position;
}

/* OUT[c] = float32(float64(SUMS[c]) x factor / divisor) for N columns; the division is
 * left out when it is by 1 (x / 1.0 is x, so the bits are the same). OUT may be SUMS
 * (int32 cells finished in place: each is read before its float is written). */
#define EB_FINISH_SUMS(OUT, SUMS, N)                                                                        \
    do {                                                                                                    \
        float *finished = (OUT);                                                                            \
        const __typeof__(*(SUMS)) *sum = (SUMS);                                                            \
        if (divisor == 1.0) {                                                                               \
            for (uint32_t c = 0; c < (N); c++) {                                                            \
                finished[c] = (float)((double)sum[c] * factor);                                             \
            }                                                                                               \
        } else {                                                                                            \
            for (uint32_t c = 0; c < (N); c++) {                                                            \
                finished[c] = (float)((double)sum[c] * factor / divisor);                                   \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

/* The last step of the merge for bags [b0, b1), bag by bag (their rows are still in
 * cache): integer sums scaled (int32 cells in place, each read before its float is
 * written), means divided. */
static void finish_bags(const struct eb_slot *slot, uint32_t b0, uint32_t b1, float *output)
{
    const eb_engine *engine = slot->engine;
    const int64_t *offsets = slot->offsets;
    const uint32_t batch = slot->batch;
    const int mean = slot->pooling == EB_POOLING_MEAN;
    for (uint32_t b = b0; b < b1; b++) {
        for (uint32_t t = 0; t < engine->nr_tables; t++) {
            const struct table *table = &engine->tables[t];
            if (staged_table(table)) {
                continue; /* finish_staged wrote its cells */
            }
            const uint32_t dim = table->dim;
            const int64_t count = offsets[(int64_t)t * batch + b + 1] - offsets[(int64_t)t * batch + b];
            float *out = output + (size_t)b * engine->total_dim + table->out_col;
            if (table->format == EB_FORMAT_FP32) {
                if (mean && count > 0) {
                    const float divisor = (float)count;
                    for (uint32_t c = 0; c < dim; c++) {
                        out[c] /= divisor;
                    }
                }
                continue;
            }
            const double factor = slot->weighted ? table->scale / (double)EB_WEIGHT_Q16_ONE : table->scale;
            const double divisor = mean && count > 0 ? (double)count : 1.0;
            if (slot->int32_sums[t]) {
                EB_FINISH_SUMS(out, (const int32_t *)out, dim);
            } else {
                EB_FINISH_SUMS(out, slot->merge.scratch + (size_t)b * engine->int_dim + table->scratch_col, dim);
            }
        }
    }
}

/*
 * Finished cells are stored past the caches (non-temporal stores) where the output's cells
 * are whole aligned lines: each cell is written once, a row apart from the next, and a
 * cached store first reads the line it writes. The widest stores the build has.
 */
#if defined(__AVX512F__)
#define EB_STREAM_FLOATS 16u
static inline void stream_floats(float *out, const float *in)
{
    _mm512_stream_ps(out, _mm512_load_ps(in));
}
#elif defined(__AVX__)
#define EB_STREAM_FLOATS 8u
static inline void stream_floats(float *out, const float *in)
{
    _mm256_stream_ps(out, _mm256_load_ps(in));
}
#elif defined(__SSE2__)
#define EB_STREAM_FLOATS 4u
static inline void stream_floats(float *out, const float *in)
{
    _mm_stream_ps(out, _mm_load_ps(in));
}
#endif

/* Columns of a staged cell finished at a time (in a line-aligned buffer), then stored. */
#define EB_FINISH_CHUNK 64u

/* Whether table t's output cells can be streamed: every cell starts on a 64-byte line and
 * is whole lines. */
static int stream_cells(const eb_engine *engine, const struct table *table, const float *output)
{
#ifdef EB_STREAM_FLOATS
    return ((uintptr_t)output & 63u) == 0 && (engine->total_dim * sizeof(float)) % 64u == 0 &&
           (table->out_col * sizeof(float)) % 64u == 0 && (table->dim * sizeof(float)) % 64u == 0;
#else
    (void)engine;
    (void)table;
    (void)output;
    return 0;
#endif
}

static inline void store_chunk(float *out, const float *chunk, uint32_t n, int stream)
{
#ifdef EB_STREAM_FLOATS
    if (stream) {
        for (uint32_t c = 0; c < n; c += EB_STREAM_FLOATS) {
            stream_floats(out + c, chunk + c);
        }
        return;
    }
#endif
    (void)stream;
    memcpy(out, chunk, n * sizeof(float));
}

/* Table t's cells of bags [b0, b1) written to the output from its staged block (rows of
 * its `dim` columns from bag b0, `cells` of the accumulator type), with the values
 * finish_bags would give from the output's own cells or the int64 scratch. */
static void finish_staged(const struct eb_slot *slot, uint32_t t, uint32_t b0, uint32_t b1, const void *cells,
                          float *output)
{
    const eb_engine *engine = slot->engine;
    const struct table *table = &engine->tables[t];
    const int64_t *counts = slot->offsets + (int64_t)t * slot->batch;
    const uint32_t dim = table->dim;
    const int mean = slot->pooling == EB_POOLING_MEAN;
    const int fp32 = table->format == EB_FORMAT_FP32, narrow = slot->int32_sums[t];
    const double factor = slot->weighted ? table->scale / (double)EB_WEIGHT_Q16_ONE : table->scale;
    const int stream = stream_cells(engine, table, output);
    float chunk[EB_FINISH_CHUNK] __attribute__((aligned(64)));
    for (uint32_t b = b0; b < b1; b++) {
        const int64_t count = counts[b + 1] - counts[b];
        const size_t row = (size_t)(b - b0) * dim;
        float *out = output + (size_t)b * engine->total_dim + table->out_col;
        if (!stream && b + EB_MERGE_FINISH_AHEAD < b1) {
            const char *later = (const char *)(out + (size_t)EB_MERGE_FINISH_AHEAD * engine->total_dim);
            for (size_t line = 0; line <= dim * sizeof(float); line += 64u) {
                __builtin_prefetch(later + line, 1);
            }
        }
        const double divisor = mean && count > 0 ? (double)count : 1.0;
        for (uint32_t c0 = 0; c0 < dim; c0 += EB_FINISH_CHUNK) {
            const uint32_t n = dim - c0 < EB_FINISH_CHUNK ? dim - c0 : EB_FINISH_CHUNK;
            if (fp32) {
                const float *sum = (const float *)cells + row + c0;
                if (mean && count > 0) {
                    const float by = (float)count;
                    for (uint32_t c = 0; c < n; c++) {
                        chunk[c] = sum[c] / by;
                    }
                } else {
                    memcpy(chunk, sum, n * sizeof(float));
                }
            } else if (narrow) {
                EB_FINISH_SUMS(chunk, (const int32_t *)cells + row + c0, n);
            } else {
                EB_FINISH_SUMS(chunk, (const int64_t *)cells + row + c0, n);
            }
            store_chunk(out + c0, chunk, n, stream);
        }
    }
}

/* The streams a visit starts with: its bags and each member's first partial. */
static inline void prefetch_visit(const struct merge_run *run, uint32_t position)
{
    __builtin_prefetch(run->bags + position);
    for (uint32_t j = 0; j <= run->mates; j++) {
        __builtin_prefetch(run[j].sums + (size_t)(position - run[j].first) * run[j].partial_bytes);
    }
}

/* Adds the partials of the visit at run `r` (with its mates) whose bags are below `stop`
 * into `dest`, from the job's position, and moves the positions of the visit's runs on. */
static inline void visit(const struct merge_job *job, uint32_t r, uint32_t stop, const struct merge_dest *dest)
{
    const struct merge_run *run = &job->slot->merge.runs[r];
    const uint32_t next = run->mates ? merge_group(run, job->positions[r], stop, dest)
                                     : merge_run(run, job->positions[r], stop, dest);
    for (uint32_t j = 0; j <= run->mates; j++) {
        job->positions[r + j] = next;
    }
}

/*
 * The staged tables of the job's bags, table by table and in blocks of bags whose rows of
 * the table's columns take at most EB_MERGE_STAGE_BYTES: each block zeroed, the table's
 * visits added into it in run order, then written to the output finished. Every cell is
 * written once, as the partials' streams are read; the launch does not zero the output
 * cells of these tables (eb_sums.c).
 */
static void merge_staged(const struct merge_job *job)
{
    const struct eb_slot *slot = job->slot;
    const eb_engine *engine = slot->engine;
    const struct merge_run *const runs = slot->merge.runs;
    const uint32_t *const order = slot->merge.visit_order;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        if (!staged_table(table)) {
            continue;
        }
        const int wide = table->format != EB_FORMAT_FP32 && !slot->int32_sums[t];
        const size_t row_bytes = (size_t)table->dim * (wide ? sizeof(int64_t) : sizeof(int32_t));
        const size_t fit = EB_MERGE_STAGE_BYTES / row_bytes;
        const uint32_t block = fit > 1u ? (fit < UINT32_MAX ? (uint32_t)fit : UINT32_MAX) : 1u;
        struct merge_dest dest = {job->stage, table->dim, 0, wide ? table->scratch_col : table->out_col};
        const uint32_t v0 = slot->merge.table_visits[t], v1 = slot->merge.table_visits[t + 1u];
        for (uint32_t b0 = job->bag_start; b0 < job->bag_stop; b0 += block) {
            const uint32_t b1 = job->bag_stop - b0 < block ? job->bag_stop : b0 + block;
            memset(job->stage, 0, (size_t)(b1 - b0) * row_bytes);
            dest.origin = b0;
            for (uint32_t v = v0; v < v1; v++) {
                if (v + EB_MERGE_RUNS_AHEAD < v1) {
                    const uint32_t ahead = order[v + EB_MERGE_RUNS_AHEAD];
                    prefetch_visit(&runs[ahead], job->positions[ahead]);
                }
                visit(job, order[v], b1, &dest);
            }
            finish_staged(slot, t, b0, b1, job->stage, job->output);
        }
    }
}

/*
 * Merges bags [bag_start, bag_stop) block by block, each finished once all its partials
 * are in. A bag's partials are added DPU by DPU and, within a DPU, in the order its
 * tasklets wrote them (host/README.md, summation order).
 */
static void *merge_bags(void *argument)
{
    const struct merge_job *job = argument;
    const struct eb_slot *slot = job->slot;
    const uint32_t block = job->block;
    const struct merge_run *const runs = slot->merge.runs;
    const uint32_t nr_runs = slot->merge.nr_runs;
    for (uint32_t r = 0; r < nr_runs; r++) {
        job->positions[r] = run_lower_bound(&runs[r], job->bag_start);
    }
    merge_staged(job);
    /* The other tables: their cells in the output rows (or the int64 scratch). */
    const uint32_t *const order = slot->merge.visit_order;
    const uint32_t v0 = slot->merge.other_visits, v1 = v0 + slot->merge.nr_visits;
    const struct merge_dest cells[2] = {
        {job->output, slot->engine->total_dim, 0, 0},
        {slot->merge.scratch, slot->engine->int_dim, 0, 0},
    };
    for (uint32_t block_start = job->bag_start; block_start < job->bag_stop && job->others; block_start += block) {
        uint32_t block_stop = job->bag_stop - block_start < block ? job->bag_stop : block_start + block;
        for (uint32_t v = v0; v < v1; v++) {
            if (v + EB_MERGE_RUNS_AHEAD < v1) {
                const uint32_t ahead = order[v + EB_MERGE_RUNS_AHEAD];
                prefetch_visit(&runs[ahead], job->positions[ahead]);
            }
            visit(job, order[v], block_stop, &cells[scratch_kind(runs[order[v]].kind)]);
        }
        finish_bags(slot, block_start, block_stop, job->output);
    }
#ifdef EB_STREAM_FLOATS
    _mm_sfence(); /* the streamed cells are in memory before the caller learns the job is done */
#endif
    return NULL;
}

/* Below this many partial bytes a second merge thread costs more than it saves; each
 * further thread needs half as many again (as a part of route_bags). */
#define EB_PARALLEL_MERGE_BYTES (1u << 20)

int merge_partials(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    const eb_engine *engine = slot->engine;
    float *output = slot->output;
    uint64_t partial_bytes = 0;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        partial_bytes += slot->dpus[d].output_bytes;
    }
    /* Bags cut in consecutive ranges, one per thread: every output row belongs to one
     * thread, so no locking, and a bag's sum is the same whatever the threads. The index
     * runs on as many threads, a range of DPUs each. */
    uint64_t threads = engine->worker_threads > 1 ? (uint64_t)engine->worker_threads : 1u;
    threads = threads < EB_MAX_ROUTE_PARTS ? threads : EB_MAX_ROUTE_PARTS;
    threads = threads < b1 - b0 ? threads : (b1 - b0 ? b1 - b0 : 1u);
    const uint64_t justified = partial_bytes / (EB_PARALLEL_MERGE_BYTES / 2u);
    threads = threads < justified ? threads : justified;
    const uint32_t nr_jobs = partial_bytes >= EB_PARALLEL_MERGE_BYTES && threads ? (uint32_t)threads : 1u;
    if (index_partials(slot, nr_jobs)) {
        return -1;
    }
    /* Blocks of bags whose output rows stay in a core's cache, but every block visits every
     * run, and each visit restarts a run's streams (its partial order, offsets, sums) with
     * cache misses: with many runs of few partials (thousands of DPUs, each serving one
     * sample in r) the visits would cost more than the adds. Blocks grow until a visit
     * (of a run, or of a column group's runs at once) takes EB_MERGE_PARTIALS_PER_VISIT
     * positions on average. The order in which a bag's partials are added does not change. */
    const uint64_t bag_bytes = row_bytes(slot);
    uint64_t block = bag_bytes ? EB_MERGE_BLOCK_BYTES / bag_bytes : 1u;
    const uint64_t spans = slot->merge.visit_spans;
    const uint64_t wide = (uint64_t)(b1 - b0) * slot->merge.nr_visits * EB_MERGE_PARTIALS_PER_VISIT / (spans ? spans : 1u);
    block = block > wide ? block : wide;
    block = block < 1u ? 1u : block > UINT32_MAX ? UINT32_MAX : block;
    if (reserve((void **)&slot->merge.positions, &slot->merge.positions_capacity,
                (size_t)nr_jobs * slot->merge.nr_runs + 1u, sizeof(uint32_t))) {
        slot_error(slot, "out of memory merging the partial sums");
        return -1;
    }
    size_t stage_bytes = EB_MERGE_STAGE_BYTES;
    int others = 0;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const size_t widest = (size_t)engine->tables[t].dim * sizeof(int64_t);
        stage_bytes = widest > stage_bytes ? widest : stage_bytes;
        others |= !staged_table(&engine->tables[t]);
    }
    struct merge_job jobs[EB_MAX_ROUTE_PARTS];
    for (uint32_t j = 0; j < nr_jobs; j++) {
        if (reserve(&slot->merge.stage[j], &slot->merge.stage_capacity[j], stage_bytes, 1)) {
            slot_error(slot, "out of memory merging the partial sums");
            return -1;
        }
        jobs[j] = (struct merge_job){
            slot,
            output,
            b0 + (uint32_t)((uint64_t)(b1 - b0) * j / nr_jobs),
            b0 + (uint32_t)((uint64_t)(b1 - b0) * (j + 1) / nr_jobs),
            (uint32_t)block,
            slot->merge.positions + (size_t)j * slot->merge.nr_runs,
            slot->merge.stage[j],
            others,
        };
    }
    run_jobs(merge_bags, jobs, sizeof(jobs[0]), nr_jobs);
    return 0;
}
