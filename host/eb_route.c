/*
 * The routing hot loop (one batch: every lookup to a DPU lane or the host cache), one
 * slice at a time; eb_parts.c splits the tables over host threads.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

/* ---- one batch: routing ----------------------------------------------------- */

/* Q16 fixed point of a per-sample weight for integer rows (see the ABI header):
 * round half to even in the default rounding mode. */
static int quantise_weight(struct eb_slot *slot, float weight, int64_t lookup, uint32_t *bits)
{
    double q = nearbyint((double)weight * (double)EB_WEIGHT_Q16_ONE);
    if (!(q >= -2147483648.0 && q <= 2147483647.0)) {
        slot_error(slot, "per_sample_weights[%lld] = %g does not fit the Q16 weights of integer tables (|w| < 32768)",
                   (long long)lookup, (double)weight);
        return -1;
    }
    int32_t value = (int32_t)q;
    memcpy(bits, &value, sizeof(*bits));
    return 0;
}

/*
 * Attach the lanes to their DPUs' buffers for one pass over bags [b0, b1) of the
 * slice. A pass adds at most one segment per bag to each DPU, so segments are
 * reserved here and appended without checks.
 */
static int open_lanes(struct eb_slot *slot, struct slice *slice, uint32_t nr_bags, int scan)
{
    const eb_engine *engine = slot->engine;
    const uint32_t part = table_part(slot, slice->table);
    if (scan && !slice->chunk_ends) {
        slice->chunk_ends = malloc((size_t)(EB_SCAN_CHUNK + 1) * (slice->nr_lanes + 1) * sizeof(uint32_t *));
        if (!slice->chunk_ends) {
            slot_error(slot, "out of host memory");
            return -1;
        }
        slice->routing_bytes += (uint64_t)(EB_SCAN_CHUNK + 1) * (slice->nr_lanes + 1) * sizeof(uint32_t *);
    }
    for (uint32_t i = 0; i < slice->nr_lanes; i++) {
        struct lane *lane = &slice->lanes[i];
        struct dpu_state *dpu =
            lane->dpu == EB_HOST_LANE ? &slot->host_states[slice - engine->slices] : part_state(slot, part, lane->dpu);
        lane->state = dpu;
        lane->pass_first_lookup = dpu->nr_lookups;
        lane->pass_first_segment = dpu->nr_segments;
        size_t needed = (size_t)dpu->nr_segments + nr_bags + 1;
        if (needed > dpu->segments_capacity) {
            size_t capacity = dpu->segments_capacity;
            if (reserve((void **)&dpu->segments, &dpu->segments_capacity, needed, sizeof(struct eb_segment)) ||
                reserve((void **)&dpu->segment_bags, &capacity, needed, sizeof(uint32_t))) {
                slot_error(slot, "out of host memory");
                return -1;
            }
        }
        lane->locals = (uint32_t *)(dpu->input + EB_INDEX_START);
        lane->segments = dpu->segments;
        lane->segment_bags = dpu->segment_bags;
        lane->nr_segments = dpu->nr_segments;
        lane->capacity = dpu->nr_lookups; /* the first bag makes room */
        lane->local_shard = lane->dpu == EB_HOST_LANE ? 0 : engine->shards[lane->shard].local;
        slice->cursors[i] = lane->locals + dpu->nr_lookups;
        slice->marks[i] = slice->cursors[i];
        slice->limits[i] = slice->cursors[i];
        slice->weights[i] = dpu->weights;
    }
    return 0;
}

static void close_lanes(struct slice *slice)
{
    for (uint32_t i = 0; i < slice->nr_lanes; i++) {
        struct lane *lane = &slice->lanes[i];
        struct dpu_state *dpu = lane->state;
        dpu->nr_lookups = (uint32_t)(slice->cursors[i] - lane->locals);
        dpu->nr_segments = lane->nr_segments;
        lane->pass_lookups = dpu->nr_lookups - lane->pass_first_lookup;
        lane->pass_segments = dpu->nr_segments - lane->pass_first_segment;
    }
}

/*
 * A follower slice's pass: its leader routed the same bags to the same lanes with the
 * same local rows (link_followers), so lane i's records are copied from the leader's
 * lane i, each segment naming this lane's shard instead. Sequential copies in place of
 * a route per lookup: what makes column slices cheap for the host. DPU lanes only: the
 * host cache sums whole rows from the table's first slice's host lane (start_sums),
 * and a follower is never a table's first slice.
 */
static int copy_lanes(struct eb_slot *slot, struct slice *slice, int weighted)
{
    const eb_engine *engine = slot->engine;
    const struct slice *leader = &engine->slices[slice->leader];
    const uint32_t part = table_part(slot, slice->table);
    for (uint32_t i = 0; i < slice->nr_dpu_lanes; i++) {
        const struct lane *from = &leader->lanes[i];
        struct lane *to = &slice->lanes[i];
        if (slot->dpus[to->dpu].mirror != EB_NO_MIRROR) {
            continue; /* its inputs are another DPU's (link_mirrors) */
        }
        struct dpu_state *dpu = part_state(slot, part, to->dpu);
        const struct dpu_state *source = from->state;
        const uint64_t lookups = (uint64_t)dpu->nr_lookups + from->pass_lookups;
        if (lookups > UINT32_MAX / 2) {
            return RUN_SPLIT; /* as make_room: the launch's cap is checked when the DPU is finished */
        }
        size_t capacity = dpu->segments_capacity;
        const size_t segments = (size_t)dpu->nr_segments + from->pass_segments + 1;
        if (reserve((void **)&dpu->input, &dpu->input_capacity, EB_INDEX_START + lookups * sizeof(uint32_t), 1) ||
            (weighted && reserve((void **)&dpu->weights, &dpu->weights_capacity, lookups, sizeof(uint32_t))) ||
            reserve((void **)&dpu->segments, &dpu->segments_capacity, segments, sizeof(struct eb_segment)) ||
            reserve((void **)&dpu->segment_bags, &capacity, segments, sizeof(uint32_t))) {
            slot_error(slot, "out of host memory");
            return RUN_ERROR;
        }
        memcpy(dpu->input + EB_INDEX_START + (size_t)dpu->nr_lookups * sizeof(uint32_t),
               source->input + EB_INDEX_START + (size_t)from->pass_first_lookup * sizeof(uint32_t),
               (size_t)from->pass_lookups * sizeof(uint32_t));
        if (weighted) {
            memcpy(dpu->weights + dpu->nr_lookups, source->weights + from->pass_first_lookup,
                   (size_t)from->pass_lookups * sizeof(uint32_t));
        }
        const uint32_t local_shard = engine->shards[to->shard].local;
        const struct eb_segment *restrict in = source->segments + from->pass_first_segment;
        struct eb_segment *restrict out = dpu->segments + dpu->nr_segments;
        for (uint32_t s = 0; s < from->pass_segments; s++) {
            out[s] = (struct eb_segment){.shard = local_shard, .nr_lookups = in[s].nr_lookups};
        }
        memcpy(dpu->segment_bags + dpu->nr_segments, source->segment_bags + from->pass_first_segment,
               (size_t)from->pass_segments * sizeof(uint32_t));
        dpu->nr_lookups = (uint32_t)lookups;
        dpu->nr_segments += from->pass_segments;
    }
    return RUN_OK;
}

/*
 * Make every lane able to take `bag_lookups` more lookups (a bag adds at most its
 * length to any DPU) and return in *headroom how many lookups every lane can take
 * now, so the per-lookup loop needs no capacity check. Lanes close to full get room
 * for half as many lookups again, so this runs rarely. RUN_SPLIT only when a lane's
 * count would leave uint32 arithmetic: a launch's cap on a DPU's lookups
 * (EB_MAX_LOOKUPS_PER_LAUNCH) is checked on its exact total when the DPU is finished, so
 * whether a batch is split does not depend on how it was routed (one pass or two parts).
 * A lane's buffer is then bounded by the batch: 4 bytes per 8-byte index.
 */
static __attribute__((noinline)) int make_room(struct eb_slot *slot, struct slice *slice, uint64_t bag_lookups,
                                               int weighted, uint64_t *headroom)
{
    uint64_t least = UINT64_MAX;
    for (uint32_t i = 0; i < slice->nr_lanes; i++) {
        struct lane *lane = &slice->lanes[i];
        uint64_t used = (uint64_t)(slice->cursors[i] - lane->locals);
        const uint64_t limit = UINT32_MAX / 2;
        if (used + bag_lookups > limit) {
            return RUN_SPLIT;
        }
        uint64_t want = used / 2 + 1024 > bag_lookups ? used / 2 + 1024 : bag_lookups;
        if (lane->capacity - used < want) {
            struct dpu_state *dpu = lane->state;
            uint64_t needed = used + want;
            uint64_t marked = (uint64_t)(slice->marks[i] - lane->locals);
            if (reserve((void **)&dpu->input, &dpu->input_capacity, EB_INDEX_START + needed * sizeof(uint32_t), 1) ||
                (weighted && reserve((void **)&dpu->weights, &dpu->weights_capacity, needed, sizeof(uint32_t)))) {
                slot_error(slot, "out of host memory");
                return RUN_ERROR;
            }
            uint64_t capacity = (dpu->input_capacity - EB_INDEX_START) / sizeof(uint32_t);
            capacity = weighted && dpu->weights_capacity < capacity ? dpu->weights_capacity : capacity;
            lane->capacity = (uint32_t)(capacity < limit ? capacity : limit);
            lane->locals = (uint32_t *)(dpu->input + EB_INDEX_START);
            slice->cursors[i] = lane->locals + used;
            slice->marks[i] = lane->locals + marked;
            slice->limits[i] = lane->locals + lane->capacity;
            slice->weights[i] = dpu->weights;
        }
        least = lane->capacity - used < least ? lane->capacity - used : least;
    }
    *headroom = least;
    return RUN_OK;
}

/*
 * Scan mode: turn the remembered bag ends of a chunk into segments, lane by lane
 * (one segment per bag that reached the lane's DPU). A lane's ends are contiguous,
 * after its cursor when the chunk began, so every bag's record is a difference of
 * neighbours, written at the bag's place (vectorised); bags that missed the lane are
 * then squeezed out (branchless).
 */
static void flush_chunk(struct slice *slice, uint32_t nr_bags)
{
    const uint32_t nr_lanes = slice->nr_lanes;
    const uint32_t *restrict bags = slice->chunk_bags;
    for (uint32_t i = 0; i < nr_lanes; i++) {
        struct lane *lane = &slice->lanes[i];
        /* Locals and restrict: the stores below cannot change the slice's arrays, so
         * nothing is reloaded per bag. */
        struct eb_segment *restrict segments = lane->segments + lane->nr_segments;
        uint32_t *restrict segment_bags = lane->segment_bags + lane->nr_segments;
        uint32_t **restrict ends = slice->chunk_ends + (size_t)i * (EB_SCAN_CHUNK + 1);
        const uint64_t local_shard = lane->local_shard;
        ends[0] = slice->marks[i];
        /* One 8-byte store per record: eb_segment is {shard, nr_lookups}, little endian
         * on every host we build for; the byte distance << 30 is the count << 32. */
        int empty = 0;
        for (uint32_t c = 0; c < nr_bags; c++) {
            uint64_t record = ((uint64_t)((uintptr_t)ends[c + 1] - (uintptr_t)ends[c]) << 30) | local_shard;
            memcpy(&segments[c], &record, sizeof(record));
            segment_bags[c] = bags[c];
            empty |= ends[c + 1] == ends[c];
        }
        uint32_t nr_segments = nr_bags;
        if (empty) {
            /* Some bag missed the lane: the records from its first such bag on move
             * down over the empty ones. */
            uint32_t c = 0;
            while (ends[c + 1] != ends[c]) {
                c++;
            }
            nr_segments = c;
            for (; c < nr_bags; c++) {
                uint64_t record;
                memcpy(&record, &segments[c], sizeof(record));
                memcpy(&segments[nr_segments], &record, sizeof(record));
                segment_bags[nr_segments] = segment_bags[c];
                nr_segments += (record >> 32) != 0;
            }
        }
        lane->nr_segments += nr_segments;
        slice->marks[i] = ends[nr_bags];
        /* The next chunk's records go here; the arrays are cold after a launch. */
        /* 64: the cache line of every x86-64 and ARMv8 server part. */
        for (uint32_t line = 0; line < EB_SCAN_CHUNK * sizeof(struct eb_segment); line += 64) {
            __builtin_prefetch((const void *)((uintptr_t)(segments + nr_segments) + line), 1);
        }
        for (uint32_t line = 0; line < EB_SCAN_CHUNK * sizeof(uint32_t); line += 64) {
            __builtin_prefetch((const void *)((uintptr_t)(segment_bags + nr_segments) + line), 1);
        }
    }
}

/*
 * Whether every index of lookups [begin, end) lies in [0, nr_rows): an index i is
 * outside exactly when i or (nr_rows - 1 - i), in two's complement, has its top bit
 * set (i is a signed 64-bit value, nr_rows is below 2^63). Only subtractions and ORs,
 * so it vectorises.
 */
static inline int bag_inside(const int64_t *indices, int64_t begin, int64_t end, uint64_t nr_rows)
{
    uint64_t bits = 0;
    for (int64_t j = begin; j < end; j++) {
        bits |= (uint64_t)indices[j] | (nr_rows - 1 - (uint64_t)indices[j]);
    }
    return (bits >> 63) == 0;
}

/* How far ahead (bytes) a lane's local rows and segments are prefetched for writing
 * when a bag ends: the buffers are cold after a launch (the kernel's data evicts
 * them), and without this the stores stall on their cache misses. One line ahead: a
 * lane's next bag often comes many bags later (a bag of a replicated table goes to one
 * lane in r), so a line fetched farther ahead has left the L1 before it is written. */
#define EB_WRITE_PREFETCH_BYTES 64

static inline __attribute__((always_inline)) void prefetch_for_write(const void *cursor)
{
    /* An integer detour: the address may lie past the buffer, which is harmless for
     * a prefetch but not a valid pointer operation. */
    __builtin_prefetch((const void *)((uintptr_t)cursor + EB_WRITE_PREFETCH_BYTES), 1);
}

/* How far ahead (bytes) the indices are prefetched when a bag starts. */
#define EB_INDEX_PREFETCH_BYTES 2048

/* How far ahead (lookups) explicit entries are prefetched: at a few nanoseconds per
 * lookup this covers a DRAM miss; 64..128 measured best on bench_engine's explicit
 * plans (2.3-2.4 ms against 3.1 ms at 16 and 3.7 ms without). */
#define EB_PREFETCH_DISTANCE 128

/* The block of a ranges slice holding `row` (bucket, then one step or a short search). */
static inline __attribute__((always_inline)) uint64_t row_block(const int64_t *starts, const uint32_t *buckets,
                                                                uint32_t shift, int64_t row, const int single_step)
{
    uint64_t block = buckets[(uint64_t)row >> shift];
    if (single_step) {
        /* Unsigned (both are in [0, nr_rows]): a compare and a subtract with borrow. */
        block += (uint64_t)row >= (uint64_t)starts[block + 1];
    } else {
        while (row >= starts[block + 1]) {
            block++;
        }
    }
    return block;
}

/* The lane and local row of a ranges slice's exception row (its bit is set). */
static inline __attribute__((always_inline)) void route_exception(const struct slice *slice, int64_t row, uint32_t b,
                                                                  uint64_t *lane, uint32_t *local)
{
    const struct exception *exception = find_exception(slice, row);
    if (exception->kind == EXCEPTION_HOST) {
        *lane = slice->nr_dpu_lanes;
        *local = exception->index;
    } else {
        /* Replica by bag: deterministic, and consecutive bags spread over all
         * replicas (updlrm.partitioner.routing). */
        const struct replica_set *group = &slice->groups[exception->index];
        const struct replica *replica = &slice->replicas[group->first + replica_turn(group, b)];
        *lane = replica->lane;
        *local = replica->local;
    }
}

/* exceptions: none, any (the hash table), or host-cached rows only (their slot by rank). */
enum { EXCEPTIONS_NONE = 0, EXCEPTIONS_HASHED = 1, EXCEPTIONS_HOST_RANKS = 2 };

/* Whether `row` is host-cached (*host) and, if so, its host slot: the host rows before it
 * (slice->host_words). Branchless: a hot row's 1-in-3 unpredictable branch costs more. */
static inline __attribute__((always_inline)) uint32_t host_rank(const struct host_word *words, int64_t row, int *host)
{
    const struct host_word *at = &words[(uint64_t)row >> 6];
    const uint64_t offset = (uint64_t)row & 63;
    *host = (int)(at->bits >> offset & 1);
    return at->rank + (uint32_t)__builtin_popcountll(at->bits & ((1ull << offset) - 1));
}

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#define EB_ROUTE_SIMD 1

/*
 * The unweighted lookups [begin, stop) of one bag of a slice with one row range whose
 * exceptions are all host-cached, 8 at a time: the rows that are not host-cached go, in
 * lookup order, to the bag's lane at `row - origin`, the others to the host lane at their
 * host slot (host_rank); the cursors move on. Every row is inside the table (bag_inside).
 * The bit and count words of the lookups EB_PREFETCH_DISTANCE ahead are prefetched, as in
 * the scalar loop. Returns how many went to the host lane.
 */
static inline __attribute__((always_inline)) void route_host_ranked_bag(const int64_t *indices, int64_t begin,
                                                                        int64_t stop, int64_t last_lookup,
                                                                        uint64_t nr_rows,
                                                                        const struct host_word *words, int64_t origin,
                                                                        uint32_t **bag_cursor, uint32_t **host_cursor)
{
    const __m512i one = _mm512_set1_epi64(1), low6 = _mm512_set1_epi64(63);
    const __m512i last_row = _mm512_set1_epi64((int64_t)nr_rows - 1), origins = _mm512_set1_epi64(origin);
    uint32_t *to_bag = *bag_cursor, *to_host = *host_cursor;
    for (int64_t j = begin; j < stop; j += 8) {
        if (j + EB_PREFETCH_DISTANCE + 8 <= last_lookup + 1) {
            /* Rows ahead are not checked yet: clamped into the table for the address. */
            __m512i ahead = _mm512_loadu_si512((const void *)(indices + j + EB_PREFETCH_DISTANCE));
            ahead = _mm512_srli_epi64(_mm512_min_epu64(ahead, last_row), 6);
            uint64_t ahead_words[8];
            _mm512_storeu_si512((void *)ahead_words, ahead);
            for (int k = 0; k < 8; k++) {
                __builtin_prefetch(words + ahead_words[k]);
            }
        }
        const __mmask8 valid = stop - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (stop - j)) - 1u);
        const __m512i row = _mm512_maskz_loadu_epi64(valid, (const void *)(indices + j));
        const __m512i word_index = _mm512_srli_epi64(row, 6);
        /* A host_word is 16 bytes: its bits at 2 x 8 bytes per word, its rank at 4 x 4 + 2. */
        const __m512i word = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), valid,
                                                         _mm512_slli_epi64(word_index, 1), (const void *)words, 8);
        const __m512i offset = _mm512_and_si512(row, low6);
        const __mmask8 host = _mm512_mask_test_epi64_mask(valid, _mm512_srlv_epi64(word, offset), one);
        const __mmask8 dpu = valid & (__mmask8)~host;
        const __m256i local = _mm512_cvtepi64_epi32(_mm512_sub_epi64(row, origins));
        const uint32_t nr_dpu = (uint32_t)__builtin_popcount(dpu);
        _mm256_mask_storeu_epi32(to_bag, (__mmask8)((1u << nr_dpu) - 1u), _mm256_maskz_compress_epi32(dpu, local));
        to_bag += nr_dpu;
        if (host) {
            const __m512i below = _mm512_and_si512(word, _mm512_sub_epi64(_mm512_sllv_epi64(one, offset), one));
            const __m512i rank_index = _mm512_add_epi64(_mm512_slli_epi64(word_index, 2), _mm512_set1_epi64(2));
            const __m256i before =
                _mm512_mask_i64gather_epi32(_mm256_setzero_si256(), host, rank_index, (const void *)words, 4);
            const __m256i slot = _mm256_add_epi32(before, _mm512_cvtepi64_epi32(_mm512_popcnt_epi64(below)));
            const uint32_t nr_host = (uint32_t)__builtin_popcount(host);
            _mm256_mask_storeu_epi32(to_host, (__mmask8)((1u << nr_host) - 1u), _mm256_maskz_compress_epi32(host, slot));
            to_host += nr_host;
        }
    }
    *bag_cursor = to_bag;
    *host_cursor = to_host;
}
#else
#define EB_ROUTE_SIMD 0
#endif

/*
 * Writes lookup j's local row (and weight) at the lane's cursor `*cursor`, which moves
 * on; without `scan`, lists the lane in `touched` when this is its first lookup of the
 * bag (`mark`: the lane's cursor when the bag began). The cursor is the slice's array
 * entry or, for a bag's own lane, a local kept in a register.
 */
static inline __attribute__((always_inline)) int
put_lookup(struct eb_slot *slot, const struct slice *slice, uint32_t **cursor_of, const uint32_t *mark, uint32_t lane,
           uint32_t local, const float *per_sample_weights, int64_t j, uint32_t *touched, uint32_t *nr_touched,
           const int integer_rows, const int weighted, const int scan)
{
    uint32_t *const cursor = *cursor_of;
    if (!scan) {
        /* Listed once per bag without a branch: the entry is kept only when this
         * is the lane's first lookup of the bag. */
        touched[*nr_touched] = lane;
        *nr_touched += cursor == mark;
    }
    *cursor = local;
    if (weighted) {
        uint32_t weight_bits;
        if (integer_rows) {
            if (quantise_weight(slot, per_sample_weights[j], j, &weight_bits)) {
                return -1;
            }
        } else {
            memcpy(&weight_bits, &per_sample_weights[j], sizeof(weight_bits));
        }
        slice->weights[lane][cursor - slice->lanes[lane].locals] = weight_bits;
    }
    *cursor_of = cursor + 1;
    return 0;
}

/*
 * Route bags [b0, b1) of one column slice, bag by bag: each lookup's local row goes
 * straight to its DPU's input buffer; every DPU a bag reached gets one segment for
 * it. With few lanes (`scan`), a bag's end only copies the lanes' cursors, and
 * segments are written per chunk of bags; with many, the loop lists the lanes a bag
 * touches. `kind`, `single_step`, `sets`, `one_set`, `exceptions`, `weighted` and
 * `scan` are constants at every call site, so each combination is its own loop.
 * `one_set`: every block has the same replica set (slice->one_set), so a bag's lane is
 * that of all its lookups but exceptions; it is found once per bag and its cursor kept
 * in a register.
 */
static inline __attribute__((always_inline)) int
route_slice(struct eb_slot *slot, struct slice *slice, const int64_t *indices, const int64_t *offsets,
            const float *per_sample_weights, uint32_t batch, uint32_t b0, uint32_t b1, const enum route_kind kind,
            const int single_step, const int sets, const int one_set, const int exceptions, const int weighted,
            const int scan)
{
    const eb_engine *engine = slot->engine;
    const struct table *table = &engine->tables[slice->table];
    const uint64_t nr_rows = (uint64_t)table->nr_rows;
    const int integer_rows = table->format != EB_FORMAT_FP32;
    const int64_t *bag_offsets = offsets + (int64_t)slice->table * batch;
    uint32_t **const cursors = slice->cursors;
    uint32_t **const marks = slice->marks;
    uint32_t *const *const limits = slice->limits;
    uint32_t *const touched = slice->touched;
    const uint32_t nr_lanes = slice->nr_lanes;
    const int64_t *const starts = slice->range_starts;
    const int64_t *const origins = slice->origins;
    const uint32_t *const buckets = slice->buckets;
    const uint32_t shift = slice->bucket_shift;
    const struct replica_set *const slice_sets = slice->sets;
    const uint64_t *const exception_bits = slice->exception_bits;
    const struct host_word *const host_words = slice->host_words;
    const uint32_t local_bits = slice->local_bits;
    const uint64_t local_mask = (1ull << local_bits) - 1;
    const int64_t last_lookup = bag_offsets[b1] - 1;
    if (open_lanes(slot, slice, b1 - b0, scan)) {
        return RUN_ERROR;
    }
    uint32_t **const chunk_ends = slice->chunk_ends;
    /* One row range, host-cached exceptions only: whole bags 8 lookups at a time. */
    const int simd = EB_ROUTE_SIMD && slice->nr_ranges == 1 && slot->engine->simd_route;
    uint64_t headroom = 0;
    uint32_t nr_chunk_bags = 0;
    for (uint32_t b = b0; b < b1; b++) {
        const int64_t begin = bag_offsets[b];
        const int64_t end = bag_offsets[b + 1];
        if (begin == end) {
            continue;
        }
        if ((uint64_t)(end - begin) > headroom) {
            /* Buffers may move: the chunk's remembered cursors must be used first. */
            if (scan) {
                flush_chunk(slice, nr_chunk_bags);
                nr_chunk_bags = 0;
            }
            int rc = make_room(slot, slice, (uint64_t)(end - begin), weighted, &headroom);
            if (rc != RUN_OK) {
                return rc;
            }
        }
        /* The indices of later bags: 8 per 64-byte line. */
        for (int64_t j = begin; j < end; j += 8) {
            __builtin_prefetch((const void *)((uintptr_t)(indices + j) + EB_INDEX_PREFETCH_BYTES));
        }
        uint32_t nr_touched = 0;
        if (kind == ROUTE_HOST && !weighted) {
            /* Every row host-cached (slot = row): a checked copy, no per-lookup branch. */
            const uint32_t lane = slice->nr_dpu_lanes;
            uint32_t *const cursor = cursors[lane];
            uint64_t outside = 0;
            for (int64_t j = begin; j < end; j++) {
                outside |= (uint64_t)indices[j] >= nr_rows;
                cursor[j - begin] = (uint32_t)indices[j];
            }
            if (outside) {
                int64_t j = begin;
                while ((uint64_t)indices[j] < nr_rows) {
                    j++;
                }
                slot_error(slot, "table %u: indices[%lld] = %lld is outside [0, %lld)", slice->table, (long long)j,
                           (long long)indices[j], (long long)table->nr_rows);
                return RUN_ERROR;
            }
            touched[0] = lane;
            nr_touched = 1;
            cursors[lane] = cursor + (end - begin);
        }
        /* The bag's indices are checked up front, without a branch per lookup: its
         * lookups before the first one outside the table are routed (they may fail
         * first), then that one is reported. */
        int64_t stop = kind == ROUTE_HOST && !weighted ? begin : end;
        if (!(kind == ROUTE_HOST && !weighted) && !bag_inside(indices, begin, end, nr_rows)) {
            stop = begin;
            while ((uint64_t)indices[stop] < nr_rows) {
                stop++;
            }
        }
        /* The bag's lane (one_set): its cursor lives in a register for the bag. */
        const uint32_t bag_lane = one_set ? slice_sets[0].first + replica_turn(&slice_sets[0], b) : 0;
        uint32_t *bag_cursor = one_set ? cursors[bag_lane] : NULL;
        const uint32_t *const bag_mark = one_set ? marks[bag_lane] : NULL;
        /* And the host lane's, when host-cached rows are found by rank. */
        const uint32_t host_lane = slice->nr_dpu_lanes;
        const int host_ranked = one_set && exceptions == EXCEPTIONS_HOST_RANKS;
        uint32_t *host_cursor = host_ranked ? cursors[host_lane] : NULL;
        const uint32_t *const host_mark = host_ranked ? marks[host_lane] : NULL;
        int64_t scalar_stop = stop;
#if EB_ROUTE_SIMD
        if (host_ranked && !weighted && !scan && simd && stop == end) {
            route_host_ranked_bag(indices, begin, end, last_lookup, nr_rows, host_words, origins[0],
                                  &bag_cursor, &host_cursor);
            touched[nr_touched] = bag_lane;
            nr_touched += bag_cursor != bag_mark;
            touched[nr_touched] = host_lane;
            nr_touched += host_cursor != host_mark;
            scalar_stop = begin; /* routed */
        }
#endif
        /* One row range and no exceptions (a whole table in every replica): every lookup
         * goes to the bag's lane at its row's distance from the range's origin, a
         * narrowing copy the compiler vectorises. */
        if (one_set && exceptions == EXCEPTIONS_NONE && !weighted && slice->nr_ranges == 1 && stop == end) {
            const int64_t origin = origins[0];
            for (int64_t j = begin; j < end; j++) {
                bag_cursor[j - begin] = (uint32_t)(indices[j] - origin);
            }
            bag_cursor += end - begin;
            if (!scan) {
                touched[nr_touched] = bag_lane;
                nr_touched += bag_cursor != bag_mark;
            }
            scalar_stop = begin; /* routed */
        }
        /* Two lookups per iteration: the loop control is paid once for both. */
#pragma GCC unroll 2
        for (int64_t j = begin; j < scalar_stop; j++) {
            const int64_t row = indices[j];
            uint64_t lane;
            uint32_t local;
            if (host_ranked) {
                /* The bit and count words of a later lookup: Zipf rows of a large table miss the caches. */
                const int64_t ahead =
                    indices[j + EB_PREFETCH_DISTANCE <= last_lookup ? j + EB_PREFETCH_DISTANCE : last_lookup];
                const uint64_t ahead_word = ((uint64_t)ahead < nr_rows ? (uint64_t)ahead : 0) >> 6;
                __builtin_prefetch(host_words + ahead_word);
                int host;
                const uint32_t host_slot = host_rank(host_words, row, &host);
                const uint32_t block_local =
                    (uint32_t)(row - origins[row_block(starts, buckets, shift, row, single_step)]);
                uint32_t *cursor = host ? host_cursor : bag_cursor;
                if (put_lookup(slot, slice, &cursor, host ? host_mark : bag_mark, host ? host_lane : bag_lane,
                               host ? host_slot : block_local, per_sample_weights, j, touched, &nr_touched,
                               integer_rows, weighted, scan)) {
                    return RUN_ERROR;
                }
                host_cursor += host;
                bag_cursor += !host;
                continue;
            } else if (one_set) {
                if (!(exceptions && (exception_bits[(uint64_t)row >> 6] >> ((uint64_t)row & 63) & 1))) {
                    local = (uint32_t)(row - origins[row_block(starts, buckets, shift, row, single_step)]);
                    if (put_lookup(slot, slice, &bag_cursor, bag_mark, bag_lane, local, per_sample_weights, j,
                                   touched, &nr_touched, integer_rows, weighted, scan)) {
                        return RUN_ERROR;
                    }
                    continue;
                }
                route_exception(slice, row, b, &lane, &local);
                if (lane == bag_lane) {
                    /* A replicated row whose turn falls on the bag's lane. */
                    if (put_lookup(slot, slice, &bag_cursor, bag_mark, bag_lane, local, per_sample_weights, j,
                                   touched, &nr_touched, integer_rows, weighted, scan)) {
                        return RUN_ERROR;
                    }
                    continue;
                }
            } else if (kind == ROUTE_HOST) {
                lane = slice->nr_dpu_lanes;
                local = (uint32_t)row;
            } else if (kind == ROUTE_RANGES) {
                const uint64_t block = row_block(starts, buckets, shift, row, single_step);
                local = (uint32_t)(row - origins[block]);
                /* A replica set's lanes take the bags in turn; without sets lane k is block k. */
                lane = sets ? slice_sets[block].first + replica_turn(&slice_sets[block], b) : block;
                if (exceptions == EXCEPTIONS_HOST_RANKS) {
                    int host;
                    const uint32_t host_slot = host_rank(host_words, row, &host);
                    lane = host ? host_lane : lane;
                    local = host ? host_slot : local;
                } else if (exceptions && (exception_bits[(uint64_t)row >> 6] >> ((uint64_t)row & 63) & 1)) {
                    route_exception(slice, row, b, &lane, &local);
                }
            } else {
                const int64_t ahead =
                    indices[j + EB_PREFETCH_DISTANCE <= last_lookup ? j + EB_PREFETCH_DISTANCE : last_lookup];
                const uint64_t ahead_row = (uint64_t)ahead < nr_rows ? (uint64_t)ahead : 0;
                uint64_t entry;
                if (kind == ROUTE_EXPLICIT32) {
                    __builtin_prefetch((const uint32_t *)slice->entries + ahead_row);
                    entry = ((const uint32_t *)slice->entries)[row];
                } else {
                    __builtin_prefetch((const uint64_t *)slice->entries + ahead_row);
                    entry = ((const uint64_t *)slice->entries)[row];
                }
                lane = (uint32_t)(entry >> local_bits);
                local = (uint32_t)(entry & local_mask);
                if (lane >= nr_lanes) {
                    if (lane != nr_lanes + CODE_REPLICATED) {
                        slot_error(slot, "table %u: row %lld is held by no DPU and not host-cached", slice->table,
                                   (long long)row);
                        return RUN_ERROR;
                    }
                    const struct replica_set *group = &slice->groups[local];
                    const struct replica *replica = &slice->replicas[group->first + replica_turn(group, b)];
                    lane = replica->lane;
                    local = replica->local;
                }
            }
            if (put_lookup(slot, slice, &cursors[lane], marks[lane], (uint32_t)lane, local, per_sample_weights, j,
                           touched, &nr_touched, integer_rows, weighted, scan)) {
                return RUN_ERROR;
            }
        }
        if (one_set) {
            cursors[bag_lane] = bag_cursor;
        }
        if (host_ranked) {
            cursors[host_lane] = host_cursor;
        }
        if (!(kind == ROUTE_HOST && !weighted) && stop < end) {
            slot_error(slot, "table %u: indices[%lld] = %lld is outside [0, %lld)", slice->table, (long long)stop,
                       (long long)indices[stop], (long long)table->nr_rows);
            return RUN_ERROR;
        }
        if (scan) {
            /* Few lanes: as if the bag had reached every one (a subtraction per bag). */
            headroom -= (uint64_t)(end - begin);
            uint32_t **ends = chunk_ends + 1 + nr_chunk_bags;
            for (uint32_t i = 0; i < nr_lanes; i++) {
                ends[(size_t)i * (EB_SCAN_CHUNK + 1)] = cursors[i];
                prefetch_for_write(cursors[i]);
            }
            slice->chunk_bags[nr_chunk_bags++] = b;
            if (nr_chunk_bags == EB_SCAN_CHUNK) {
                flush_chunk(slice, nr_chunk_bags);
                nr_chunk_bags = 0;
            }
        } else {
            for (uint32_t t = 0; t < nr_touched; t++) {
                const uint32_t i = touched[t];
                struct lane *lane = &slice->lanes[i];
                lane->segments[lane->nr_segments] =
                    (struct eb_segment){.shard = lane->local_shard, .nr_lookups = (uint32_t)(cursors[i] - marks[i])};
                lane->segment_bags[lane->nr_segments++] = b;
                marks[i] = cursors[i];
                /* Many lanes: the room of those it reached (the others' did not change), so
                 * that make_room, a pass over every lane, runs only when one is nearly full. */
                const uint64_t room = (uint64_t)(limits[i] - cursors[i]);
                headroom = room < headroom ? room : headroom;
                prefetch_for_write(cursors[i]);
                prefetch_for_write((const uint32_t *)(lane->segments + lane->nr_segments));
                prefetch_for_write(lane->segment_bags + lane->nr_segments);
            }
        }
    }
    if (scan) {
        flush_chunk(slice, nr_chunk_bags);
    }
    close_lanes(slice);
    return RUN_OK;
}

typedef int (*route_function)(struct eb_slot *, struct slice *, const int64_t *, const int64_t *, const float *,
                              uint32_t, uint32_t, uint32_t);

#define EB_ROUTE_VARIANT(name, kind, single_step, sets, one_set, exceptions, weighted, scan)                           \
    static int name(struct eb_slot *slot, struct slice *slice, const int64_t *indices, const int64_t *offsets,         \
                    const float *per_sample_weights, uint32_t batch, uint32_t b0, uint32_t b1)                         \
    {                                                                                                                  \
        return route_slice(slot, slice, indices, offsets, per_sample_weights, batch, b0, b1, kind, single_step, sets,  \
                           one_set, exceptions, weighted, scan);                                                       \
    }

/* The ranges variants of one block lookup (step or search), replica sets or not, one
 * set for every block or not: x = exceptions (hashed), h = host-cached exceptions only
 * (ranked), w = weighted, s = scan. */
#define EB_RANGES_VARIANTS(prefix, single_step, sets, one_set)                                                         \
    EB_ROUTE_VARIANT(prefix, ROUTE_RANGES, single_step, sets, one_set, 0, 0, 0)                                        \
    EB_ROUTE_VARIANT(prefix##_s, ROUTE_RANGES, single_step, sets, one_set, 0, 0, 1)                                    \
    EB_ROUTE_VARIANT(prefix##_w, ROUTE_RANGES, single_step, sets, one_set, 0, 1, 0)                                    \
    EB_ROUTE_VARIANT(prefix##_ws, ROUTE_RANGES, single_step, sets, one_set, 0, 1, 1)                                   \
    EB_ROUTE_VARIANT(prefix##_x, ROUTE_RANGES, single_step, sets, one_set, 1, 0, 0)                                    \
    EB_ROUTE_VARIANT(prefix##_xs, ROUTE_RANGES, single_step, sets, one_set, 1, 0, 1)                                   \
    EB_ROUTE_VARIANT(prefix##_xw, ROUTE_RANGES, single_step, sets, one_set, 1, 1, 0)                                   \
    EB_ROUTE_VARIANT(prefix##_xws, ROUTE_RANGES, single_step, sets, one_set, 1, 1, 1)                                  \
    EB_ROUTE_VARIANT(prefix##_h, ROUTE_RANGES, single_step, sets, one_set, 2, 0, 0)                                    \
    EB_ROUTE_VARIANT(prefix##_hs, ROUTE_RANGES, single_step, sets, one_set, 2, 0, 1)                                   \
    EB_ROUTE_VARIANT(prefix##_hw, ROUTE_RANGES, single_step, sets, one_set, 2, 1, 0)                                   \
    EB_ROUTE_VARIANT(prefix##_hws, ROUTE_RANGES, single_step, sets, one_set, 2, 1, 1)

/* step/search = range lookup, r = replica sets, o = one replica set for every block. */
EB_RANGES_VARIANTS(route_step, 1, 0, 0)
EB_RANGES_VARIANTS(route_step_r, 1, 1, 0)
EB_RANGES_VARIANTS(route_step_o, 1, 1, 1)
EB_RANGES_VARIANTS(route_search, 0, 0, 0)
EB_RANGES_VARIANTS(route_search_r, 0, 1, 0)
EB_RANGES_VARIANTS(route_search_o, 0, 1, 1)

/* The four variants of a kind without ranges: w = weighted, s = scan. */
#define EB_KIND_VARIANTS(prefix, kind)                                                                                 \
    EB_ROUTE_VARIANT(prefix, kind, 0, 0, 0, 0, 0, 0)                                                                   \
    EB_ROUTE_VARIANT(prefix##_s, kind, 0, 0, 0, 0, 0, 1)                                                               \
    EB_ROUTE_VARIANT(prefix##_w, kind, 0, 0, 0, 0, 1, 0)                                                               \
    EB_ROUTE_VARIANT(prefix##_ws, kind, 0, 0, 0, 0, 1, 1)

EB_KIND_VARIANTS(route_explicit32, ROUTE_EXPLICIT32)
EB_KIND_VARIANTS(route_explicit64, ROUTE_EXPLICIT64)
EB_KIND_VARIANTS(route_host, ROUTE_HOST)

/*
 * Scan mode costs a cursor copy per lane and bag plus a branchless segment append
 * per lane and bag later; listing touched lanes costs about three instructions per
 * lookup plus an append per touched lane (callgrind). Scanning wins while the lanes
 * are not many more than a bag's lookups, and a bag touches most of them: not in a
 * slice with one replica set, where each bag goes to one replica.
 */
static int scan_lanes(const struct slice *slice, const int64_t *offsets, uint32_t batch, uint32_t b0, uint32_t b1)
{
    const int64_t *bag_offsets = offsets + (int64_t)slice->table * batch;
    uint64_t mean_length = (uint64_t)(bag_offsets[b1] - bag_offsets[b0]) / (b1 - b0);
    if (slice->one_set) {
        /* A bag reaches its replica's lane and, through exceptions, rarely another:
         * listing them is cheaper than scanning every lane of the set for each bag. */
        return slice->nr_lanes <= 1;
    }
    return (uint64_t)slice->nr_lanes <= 2 * mean_length + 1;
}

static route_function pick_route(const struct slice *slice, int weighted, int scan)
{
#define EB_RANGES_TABLE(prefix)                                                                                        \
    {                                                                                                                  \
        {{prefix, prefix##_s}, {prefix##_w, prefix##_ws}}, {{prefix##_x, prefix##_xs}, {prefix##_xw, prefix##_xws}},  \
            {{prefix##_h, prefix##_hs}, {prefix##_hw, prefix##_hws}}                                                   \
    }
    static const route_function ranges[2][3][3][2][2] = {
        {EB_RANGES_TABLE(route_search), EB_RANGES_TABLE(route_search_r), EB_RANGES_TABLE(route_search_o)},
        {EB_RANGES_TABLE(route_step), EB_RANGES_TABLE(route_step_r), EB_RANGES_TABLE(route_step_o)},
    };
#undef EB_RANGES_TABLE
    static const route_function explicit32[2][2] = {{route_explicit32, route_explicit32_s},
                                                    {route_explicit32_w, route_explicit32_ws}};
    static const route_function explicit64[2][2] = {{route_explicit64, route_explicit64_s},
                                                    {route_explicit64_w, route_explicit64_ws}};
    static const route_function host[2][2] = {{route_host, route_host_s}, {route_host_w, route_host_ws}};
    switch (slice->kind) {
    case ROUTE_HOST:
        return host[weighted != 0][scan != 0];
    case ROUTE_RANGES:
        return ranges[slice->single_step != 0][slice->sets == NULL ? 0 : slice->one_set ? 2 : 1]
                     [slice->exception_bits == NULL ? EXCEPTIONS_NONE
                      : slice->host_words       ? EXCEPTIONS_HOST_RANKS
                                                : EXCEPTIONS_HASHED][weighted != 0][scan != 0];
    case ROUTE_EXPLICIT32:
        return explicit32[weighted != 0][scan != 0];
    default:
        return explicit64[weighted != 0][scan != 0];
    }
}


/*
 * A whole table in every replica (one row range, one replica set, no exceptions),
 * unweighted: every lookup of bag b goes to replica b mod r at its row's distance from
 * the range's origin. Routed replica by replica instead of bag by bag, so each lane's
 * rows and segments are written in one sequential stream (bag by bag, r lanes are
 * written r bags apart and every store misses); the records are the same, bag order
 * kept within a lane. Every index is checked first: with one outside the table it returns
 * RUN_FALLBACK, for the bag-by-bag loop to route the bags before it and report it. A lane
 * past UINT32_MAX / 2 lookups gives RUN_SPLIT, as make_room does.
 */
enum { RUN_FALLBACK = -100 };

static int route_by_lane(struct eb_slot *slot, struct slice *slice)
{
    const uint32_t batch = slot->batch, b0 = slot->b0, b1 = slot->b1;
    const int64_t *const indices = slot->indices;
    const int64_t *const bag_offsets = slot->offsets + (int64_t)slice->table * batch;
    const uint64_t nr_rows = (uint64_t)slot->engine->tables[slice->table].nr_rows;
    if (!bag_inside(indices, bag_offsets[b0], bag_offsets[b1], nr_rows)) {
        return RUN_FALLBACK;
    }
    if (open_lanes(slot, slice, b1 - b0, 0)) {
        return RUN_ERROR;
    }
    const struct replica_set *set = &slice->sets[0];
    const uint32_t count = set->count;
    const int64_t origin = slice->origins[0];
    for (uint32_t k = 0; k < count; k++) {
        const uint32_t i = set->first + k;
        struct lane *lane = &slice->lanes[i];
        const uint32_t first = b0 + (k + count - b0 % count) % count;
        uint64_t lookups = 0;
        for (uint32_t b = first; b < b1; b += count) {
            lookups += (uint64_t)(bag_offsets[b + 1] - bag_offsets[b]);
        }
        const uint64_t used = (uint64_t)(slice->cursors[i] - lane->locals);
        if (used + lookups > UINT32_MAX / 2) {
            return RUN_SPLIT; /* as make_room */
        }
        struct dpu_state *dpu = lane->state;
        if (reserve((void **)&dpu->input, &dpu->input_capacity, EB_INDEX_START + (used + lookups) * sizeof(uint32_t),
                    1)) {
            slot_error(slot, "out of host memory");
            return RUN_ERROR;
        }
        lane->locals = (uint32_t *)(dpu->input + EB_INDEX_START);
        uint32_t *restrict cursor = lane->locals + used;
        struct eb_segment *restrict segments = lane->segments + lane->nr_segments;
        uint32_t *restrict segment_bags = lane->segment_bags + lane->nr_segments;
        const uint32_t local_shard = lane->local_shard;
        uint32_t nr_segments = 0;
        for (uint32_t b = first; b < b1; b += count) {
            const int64_t begin = bag_offsets[b], end = bag_offsets[b + 1];
            if (b + 2 * count < b1) {
                /* A later bag's indices: its first two lines (the stride is r bags). */
                const int64_t *ahead = indices + bag_offsets[b + 2 * count];
                __builtin_prefetch(ahead);
                __builtin_prefetch(ahead + 8);
            }
            for (int64_t j = begin; j < end; j++) {
                cursor[j - begin] = (uint32_t)(indices[j] - origin);
            }
            cursor += end - begin;
            segments[nr_segments] = (struct eb_segment){.shard = local_shard, .nr_lookups = (uint32_t)(end - begin)};
            segment_bags[nr_segments] = b;
            nr_segments += begin != end;
        }
        lane->nr_segments += nr_segments;
        slice->cursors[i] = cursor;
        slice->marks[i] = cursor;
    }
    close_lanes(slice);
    return RUN_OK;
}

/* One pass of a slice over the slot's bags [b0, b1): its own routing, or a follower's copy
 * of its leader's records (the leader, of the same table, passed before it). */
int route_slice_bags(struct eb_slot *slot, struct slice *slice)
{
    const int weighted = slot->per_sample_weights != NULL;
    if (slice->leader != EB_NO_LEADER) {
        return copy_lanes(slot, slice, weighted);
    }
    if (slice->kind == ROUTE_RANGES && slice->one_set && slice->exception_bits == NULL && slice->nr_ranges == 1 &&
        !weighted && slot->engine->simd_route) {
        const int rc = route_by_lane(slot, slice);
        if (rc != RUN_FALLBACK) {
            return rc;
        }
    }
    int scan = scan_lanes(slice, slot->offsets, slot->batch, slot->b0, slot->b1);
    return pick_route(slice, weighted, scan)(slot, slice, slot->indices, slot->offsets, slot->per_sample_weights,
                                             slot->batch, slot->b0, slot->b1);
}
