/*
 * Embedding-bag reduction on one DPU (UPMEM SDK dialect; also runs on the
 * updlrm emulator). The MRAM layout and records are in embedding_bag_abi.h;
 * the algorithm and summation order are described in dpu_kernels/README.md.
 *
 * Each tasklet owns an equal range of this DPU's lookups (cut by the host).
 * It walks the segments of its range; for each (piece of a) segment it sums
 * the rows named by the local indices into an accumulator kept in a WRAM
 * staging buffer, which is written back to MRAM when full. Row slices wider
 * than the WRAM row buffer are processed in column chunks.
 */
#include <stdint.h>

#include <barrier.h>
#include <defs.h>
#include <mram.h>
#include <perfcounter.h>

#include "embedding_bag_abi.h"

#ifndef NR_TASKLETS
#error "compile with -DNR_TASKLETS=N (1..24)"
#endif

/*
 * WRAM budget: 64 KB shared by globals, NR_TASKLETS stacks and these buffers
 * (UPMEM SDK documentation, "Memory"). With more tasklets each one gets less,
 * at the price of splitting wide rows into more DMAs. Row DMAs stay <= 2,048
 * bytes, the SDK maximum.
 */
#ifndef EB_ROW_BUFFER_BYTES
#if NR_TASKLETS <= 8
#define EB_ROW_BUFFER_BYTES 2048
#elif NR_TASKLETS <= 16
#define EB_ROW_BUFFER_BYTES 1024
#else
#define EB_ROW_BUFFER_BYTES 512
#endif
#endif

#ifndef EB_STAGING_BYTES
#define EB_STAGING_BYTES EB_ROW_BUFFER_BYTES
#endif

/* Indices and weights are streamed in blocks of this many 4-byte entries,
 * segments in blocks of EB_SEGMENT_BLOCK 8-byte records: one DMA per block. */
#define EB_LOOKUP_BLOCK  32
#define EB_SEGMENT_BLOCK 16

#if EB_ROW_BUFFER_BYTES < 64 || EB_ROW_BUFFER_BYTES > 2048 || EB_ROW_BUFFER_BYTES % 8
#error "EB_ROW_BUFFER_BYTES must be a multiple of 8 in [64, 2048]"
#endif
#if EB_STAGING_BYTES < 64 || EB_STAGING_BYTES > 2048 || EB_STAGING_BYTES % 8
#error "EB_STAGING_BYTES must be a multiple of 8 in [64, 2048]"
#endif

__host struct eb_config eb_config;

BARRIER_INIT(eb_start_barrier, NR_TASKLETS);
BARRIER_INIT(eb_end_barrier, NR_TASKLETS);

/*
 * The row and accumulator buffers start on 64-byte boundaries (and so does
 * every tasklet's, as the default sizes are multiples of 64). DMA needs only
 * 8; on a DPU the attribute costs at most 56 bytes of WRAM padding per array
 * and nothing else. On the emulator the row copy and the accumulate loop run
 * as 64-byte vector accesses on the host, which with 8-byte alignment each
 * straddled two cache lines (engine kernel, 10k rows per table: 45.8 -> 43.2
 * ns of CPU per lookup).
 */
static __attribute__((aligned(64))) uint8_t row_buffers[NR_TASKLETS][EB_ROW_BUFFER_BYTES];
static __attribute__((aligned(64))) uint8_t staging_buffers[NR_TASKLETS][EB_STAGING_BYTES];
static __dma_aligned uint32_t index_blocks[NR_TASKLETS][EB_LOOKUP_BLOCK];
static __dma_aligned uint32_t weight_blocks[NR_TASKLETS][EB_LOOKUP_BLOCK];
static __dma_aligned struct eb_segment segment_blocks[NR_TASKLETS][EB_SEGMENT_BLOCK];

/*
 * First error of the launch. Tasklets may race to set it; any one of the
 * competing errors is a correct report, and the host fails the batch either
 * way, so no mutex is spent on it.
 */
static uint32_t error_code;
static uint32_t error_detail;

static void report_error(uint32_t code, uint32_t detail)
{
    if (error_code == EB_OK) {
        error_code = code;
        error_detail = detail;
    }
}

static __mram_ptr uint8_t *heap_at(uint32_t offset)
{
    return (__mram_ptr uint8_t *)DPU_MRAM_HEAP_POINTER + offset;
}

/* A window of EB_LOOKUP_BLOCK consecutive 4-byte entries of an MRAM array. */
struct word_stream {
    __mram_ptr uint8_t *base;
    uint32_t total;
    uint32_t first;
    uint32_t count;
    uint32_t *block;
};

static void word_stream_fill(struct word_stream *stream, uint32_t index)
{
    /* DMA needs an 8-byte aligned source: start at an even entry. The host
     * pads each array to 8 bytes, so reading up to the pad is in bounds. */
    uint32_t start = index & ~1u;
    uint32_t count = stream->total - start;
    if (count > EB_LOOKUP_BLOCK) {
        count = EB_LOOKUP_BLOCK;
    }
    mram_read(stream->base + start * 4u, stream->block, EB_PAD8(count * 4u));
    stream->first = start;
    stream->count = count;
}

static inline uint32_t word_stream_get(struct word_stream *stream, uint32_t index)
{
    /* Unsigned wrap makes index < first fall outside the window too. */
    if (index - stream->first >= stream->count) {
        word_stream_fill(stream, index);
    }
    return stream->block[index - stream->first];
}

struct segment_stream {
    __mram_ptr uint8_t *base;
    uint32_t total;
    uint32_t first;
    uint32_t count;
    struct eb_segment *block;
};

static struct eb_segment segment_stream_get(struct segment_stream *stream, uint32_t index)
{
    if (index - stream->first >= stream->count) {
        uint32_t count = stream->total - index;
        if (count > EB_SEGMENT_BLOCK) {
            count = EB_SEGMENT_BLOCK;
        }
        mram_read(stream->base + index * (uint32_t)sizeof(struct eb_segment), stream->block,
                  count * (uint32_t)sizeof(struct eb_segment));
        stream->first = index;
        stream->count = count;
    }
    return stream->block[index - stream->first];
}

/* Output of one tasklet: accumulators live in the staging buffer until it is full. */
struct output_stream {
    __mram_ptr uint8_t *cursor;
    uint32_t fill;
    uint8_t *staging;
};

static void output_flush(struct output_stream *out)
{
    if (out->fill) {
        mram_write(out->staging, out->cursor, out->fill);
        out->cursor += out->fill;
        out->fill = 0;
    }
}

struct piece {
    const struct eb_shard *shard;
    __mram_ptr uint8_t *rows;
    uint32_t row_bytes;
    uint32_t first_lookup;
    uint32_t nr_lookups;
    uint32_t column;  /* first column of this chunk */
    uint32_t columns; /* columns in this chunk */
};

struct tasklet_state {
    struct word_stream indices;
    struct word_stream weights;
    uint8_t *row_buffer;
};

/*
 * Fetch the chunk of the k-th lookup's row into the row buffer; false (and an
 * error report) if the local row is outside the shard.
 */
static int fetch_row(struct tasklet_state *state, const struct piece *piece, uint32_t lookup, uint32_t element_bytes)
{
    uint32_t local_row = word_stream_get(&state->indices, lookup);
    if (local_row >= piece->shard->nr_rows) {
        report_error(EB_ERR_ROW_RANGE, local_row);
        return 0;
    }
    mram_read(piece->rows + local_row * piece->row_bytes + piece->column * element_bytes, state->row_buffer,
              EB_PAD8(piece->columns * element_bytes));
    return 1;
}

/* One loop per (format, accumulator) pair keeps the inner loops free of branches. */
static void sum_fp32(struct tasklet_state *state, const struct piece *piece, uint8_t *accumulator)
{
    float *acc = (float *)accumulator;
    const float *row = (const float *)state->row_buffer;
    for (uint32_t k = 0; k < piece->nr_lookups; k++) {
        if (fetch_row(state, piece, piece->first_lookup + k, 4)) {
            for (uint32_t c = 0; c < piece->columns; c++) {
                acc[c] += row[c];
            }
        }
    }
}

static void sum_fp32_weighted(struct tasklet_state *state, const struct piece *piece, uint8_t *accumulator)
{
    float *acc = (float *)accumulator;
    const float *row = (const float *)state->row_buffer;
    for (uint32_t k = 0; k < piece->nr_lookups; k++) {
        uint32_t lookup = piece->first_lookup + k;
        if (fetch_row(state, piece, lookup, 4)) {
            union {
                uint32_t bits;
                float value;
            } weight = {.bits = word_stream_get(&state->weights, lookup)};
            for (uint32_t c = 0; c < piece->columns; c++) {
                acc[c] += weight.value * row[c];
            }
        }
    }
}

static void sum_int32(struct tasklet_state *state, const struct piece *piece, uint8_t *accumulator)
{
    int64_t *acc = (int64_t *)accumulator;
    const int32_t *row = (const int32_t *)state->row_buffer;
    for (uint32_t k = 0; k < piece->nr_lookups; k++) {
        if (fetch_row(state, piece, piece->first_lookup + k, 4)) {
            for (uint32_t c = 0; c < piece->columns; c++) {
                acc[c] += row[c];
            }
        }
    }
}

static void sum_int32_weighted(struct tasklet_state *state, const struct piece *piece, uint8_t *accumulator)
{
    int64_t *acc = (int64_t *)accumulator;
    const int32_t *row = (const int32_t *)state->row_buffer;
    for (uint32_t k = 0; k < piece->nr_lookups; k++) {
        uint32_t lookup = piece->first_lookup + k;
        if (fetch_row(state, piece, lookup, 4)) {
            int64_t weight = (int32_t)word_stream_get(&state->weights, lookup);
            for (uint32_t c = 0; c < piece->columns; c++) {
                acc[c] += (int64_t)row[c] * weight;
            }
        }
    }
}

static void sum_int8(struct tasklet_state *state, const struct piece *piece, uint8_t *accumulator)
{
    int32_t *acc = (int32_t *)accumulator;
    const int8_t *row = (const int8_t *)state->row_buffer;
    for (uint32_t k = 0; k < piece->nr_lookups; k++) {
        if (fetch_row(state, piece, piece->first_lookup + k, 1)) {
            for (uint32_t c = 0; c < piece->columns; c++) {
                acc[c] += row[c];
            }
        }
    }
}

/* The host sets EB_FLAG_INT16_PARTIALS only where no partial leaves int16. */
static void sum_int8_int16(struct tasklet_state *state, const struct piece *piece, uint8_t *accumulator)
{
    int16_t *acc = (int16_t *)accumulator;
    const int8_t *row = (const int8_t *)state->row_buffer;
    for (uint32_t k = 0; k < piece->nr_lookups; k++) {
        if (fetch_row(state, piece, piece->first_lookup + k, 1)) {
            for (uint32_t c = 0; c < piece->columns; c++) {
                acc[c] = (int16_t)(acc[c] + row[c]);
            }
        }
    }
}

static void sum_int8_weighted(struct tasklet_state *state, const struct piece *piece, uint8_t *accumulator)
{
    int64_t *acc = (int64_t *)accumulator;
    const int8_t *row = (const int8_t *)state->row_buffer;
    for (uint32_t k = 0; k < piece->nr_lookups; k++) {
        uint32_t lookup = piece->first_lookup + k;
        if (fetch_row(state, piece, lookup, 1)) {
            int64_t weight = (int32_t)word_stream_get(&state->weights, lookup);
            for (uint32_t c = 0; c < piece->columns; c++) {
                acc[c] += (int64_t)row[c] * weight;
            }
        }
    }
}

/* Sum lookups [first_lookup, first_lookup + nr_lookups) of one shard into one partial. */
static void reduce_piece(struct tasklet_state *state, struct output_stream *out, const struct eb_shard *shard,
                         uint32_t first_lookup, uint32_t nr_lookups, uint32_t flags)
{
    uint32_t element_bytes = eb_element_bytes(shard->format);
    uint32_t accumulator_bytes = eb_accumulator_bytes(shard->format, flags);
    uint32_t weighted = flags & EB_FLAG_WEIGHTED;
    uint32_t chunk = EB_ROW_BUFFER_BYTES / element_bytes;
    if (chunk > EB_STAGING_BYTES / accumulator_bytes) {
        chunk = EB_STAGING_BYTES / accumulator_bytes;
    }
    /* Chunks other than the last must end on 8-byte boundaries in both the
     * row and the accumulator: a multiple of 8 columns does that. */
    chunk &= ~7u;

    struct piece piece = {
        .shard = shard,
        .rows = heap_at(shard->rows_offset),
        .row_bytes = eb_row_bytes(shard->format, shard->dim),
        .first_lookup = first_lookup,
        .nr_lookups = nr_lookups,
    };
    for (uint32_t column = 0; column < shard->dim; column += chunk) {
        uint32_t columns = shard->dim - column < chunk ? shard->dim - column : chunk;
        uint32_t chunk_bytes = EB_PAD8(columns * accumulator_bytes);
        if (out->fill + chunk_bytes > EB_STAGING_BYTES) {
            output_flush(out);
        }
        uint8_t *accumulator = out->staging + out->fill;
        uint64_t *words = (uint64_t *)accumulator;
        for (uint32_t w = 0; w < chunk_bytes / 8u; w++) {
            words[w] = 0;
        }
        piece.column = column;
        piece.columns = columns;
        switch (shard->format * 2u + (weighted ? 1u : 0u)) {
        case EB_FORMAT_FP32 * 2u:
            sum_fp32(state, &piece, accumulator);
            break;
        case EB_FORMAT_FP32 * 2u + 1u:
            sum_fp32_weighted(state, &piece, accumulator);
            break;
        case EB_FORMAT_INT32 * 2u:
            sum_int32(state, &piece, accumulator);
            break;
        case EB_FORMAT_INT32 * 2u + 1u:
            sum_int32_weighted(state, &piece, accumulator);
            break;
        case EB_FORMAT_INT8 * 2u:
            if (accumulator_bytes == 2u) {
                sum_int8_int16(state, &piece, accumulator);
            } else {
                sum_int8(state, &piece, accumulator);
            }
            break;
        default:
            sum_int8_weighted(state, &piece, accumulator);
            break;
        }
        out->fill += chunk_bytes;
    }
}

static void run_tasklet(const struct eb_batch_fields *batch, uint32_t batch_offset, uint32_t tasklet)
{
    __dma_aligned struct eb_tasklet_work work;
    mram_read(heap_at(batch_offset + (uint32_t)sizeof(struct eb_batch_fields) + tasklet * (uint32_t)sizeof(work)),
              &work, sizeof(work));

    struct tasklet_state state = {
        .indices = {heap_at(batch->indices_offset), batch->nr_lookups, 0, 0, index_blocks[tasklet]},
        .weights = {heap_at(batch->weights_offset), batch->nr_lookups, 0, 0, weight_blocks[tasklet]},
        .row_buffer = row_buffers[tasklet],
    };
    struct segment_stream segments = {heap_at(batch->segments_offset), batch->nr_segments, 0, 0,
                                      segment_blocks[tasklet]};
    struct output_stream out = {heap_at(batch->output_offset + EB_STATUS_BYTES + work.output_offset), 0,
                                staging_buffers[tasklet]};
    uint32_t flags = batch->flags;

    __dma_aligned struct eb_shard shard;
    uint32_t cached_shard = UINT32_MAX;
    uint32_t segment = work.first_segment;
    uint32_t skip = work.skip;
    uint32_t lookup = work.first_lookup;
    uint32_t left = work.nr_lookups;
    while (left) {
        if (segment >= batch->nr_segments) {
            report_error(EB_ERR_BAD_SEGMENT, segment);
            break;
        }
        struct eb_segment record = segment_stream_get(&segments, segment);
        if (record.nr_lookups <= skip) {
            report_error(EB_ERR_BAD_SEGMENT, segment);
            break;
        }
        if (record.shard != cached_shard) {
            if (record.shard >= batch->nr_shards) {
                report_error(EB_ERR_BAD_SHARD, record.shard);
                break;
            }
            mram_read(heap_at(record.shard * (uint32_t)sizeof(struct eb_shard)), &shard, sizeof(shard));
            if (shard.format > EB_FORMAT_INT8) {
                report_error(EB_ERR_BAD_FORMAT, shard.format);
                break;
            }
            cached_shard = record.shard;
        }
        uint32_t take = record.nr_lookups - skip < left ? record.nr_lookups - skip : left;
        reduce_piece(&state, &out, &shard, lookup, take, flags);
        lookup += take;
        left -= take;
        segment++;
        skip = 0;
    }
    output_flush(&out);
}

int main(void)
{
    uint32_t tasklet = me();
    uint32_t batch_offset = eb_config.batch_offset;
    if (tasklet == 0) {
        perfcounter_config(COUNT_CYCLES, true);
        error_code = EB_OK;
        error_detail = 0;
    }
    barrier_wait(&eb_start_barrier);

    __dma_aligned struct eb_batch_fields batch;
    mram_read(heap_at(batch_offset), &batch, sizeof(batch));
    if (batch.magic != EB_HEADER_MAGIC) {
        report_error(EB_ERR_BAD_HEADER, batch.magic);
    } else if (batch.nr_tasklets != NR_TASKLETS) {
        report_error(EB_ERR_TASKLET_COUNT, batch.nr_tasklets);
    } else {
        run_tasklet(&batch, batch_offset, tasklet);
    }

    barrier_wait(&eb_end_barrier);
    if (tasklet == 0 && batch.magic == EB_HEADER_MAGIC) {
        perfcounter_t cycles = perfcounter_get();
        __dma_aligned struct eb_status status = {
            .magic = EB_STATUS_MAGIC,
            .code = error_code,
            .detail = error_detail,
            .nr_tasklets = NR_TASKLETS,
            .cycles_low = (uint32_t)cycles,
            .cycles_high = (uint32_t)((uint64_t)cycles >> 32),
        };
        mram_write(&status, heap_at(batch.output_offset), sizeof(status));
    }
    return 0;
}
