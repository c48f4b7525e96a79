/*
 * Routing-table construction: for each slice (a table's column range), where every
 * row lives - DPU lanes, shard-local rows, exceptions and the host cache.
 * See host/README.md for the data layout and the summation order.
 */
#include "eb_internal.h"

/* ---- routing tables ------------------------------------------------------------- */
static struct slice *new_slice(eb_engine *engine, uint32_t table, uint32_t col_start, uint32_t col_stop)
{
    if (table >= engine->nr_tables || !engine->tables[table].defined || col_start >= col_stop ||
        col_stop > engine->tables[table].dim) {
        set_error(engine, "bad slice: table %u, columns [%u, %u)", table, col_start, col_stop);
        return NULL;
    }
    if (engine->nr_slices) {
        const struct slice *last = &engine->slices[engine->nr_slices - 1];
        if (last->table > table || (last->table == table && last->col_stop != col_start)) {
            set_error(engine, "slices must be added in table order, columns contiguous (table %u, column %u)", table,
                      col_start);
            return NULL;
        }
    }
    if (engine->nr_slices == engine->slices_capacity) {
        uint32_t capacity = engine->slices_capacity ? 2 * engine->slices_capacity : 16;
        struct slice *bigger = realloc(engine->slices, capacity * sizeof(struct slice));
        if (!bigger) {
            set_error(engine, "out of host memory");
            return NULL;
        }
        engine->slices = bigger;
        engine->slices_capacity = capacity;
    }
    struct slice *slice = &engine->slices[engine->nr_slices++];
    *slice = (struct slice){.table = table, .col_start = col_start, .col_stop = col_stop, .leader = EB_NO_LEADER};
    return slice;
}


static uint32_t bits_for(uint64_t largest_value)
{
    uint32_t bits = 0;
    while (bits < 64 && (largest_value >> bits) != 0) {
        bits++;
    }
    return bits;
}

static int64_t shard_row(const struct shard *shard, int64_t local)
{
    return shard->row_ids ? shard->row_ids[local] : shard->row_start + local;
}


/* Fibonacci hashing (Knuth, TAOCP vol. 3, 6.4): multiplicative, spreads consecutive rows. */
static void put_exception(struct slice *slice, int64_t row, uint32_t kind, uint32_t index)
{
    uint64_t cell = exception_cell(slice, row);
    while (slice->exceptions[cell].row != -1 && slice->exceptions[cell].row != row) {
        cell = (cell + 1) & slice->exception_mask;
    }
    slice->exceptions[cell] = (struct exception){.row = row, .kind = kind, .index = index};
    slice->exception_bits[(uint64_t)row >> 6] |= 1ull << ((uint64_t)row & 63);
}

struct holder {
    int64_t row;
    uint32_t shard; /* plan order decides which replica serves a bag */
    uint32_t lane;
    uint32_t local;
};

static int compare_holders(const void *a, const void *b)
{
    const struct holder *x = a;
    const struct holder *y = b;
    if (x->row != y->row) {
        return x->row < y->row ? -1 : 1;
    }
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* Rows [start, stop) of one shard whose local rows count on from `origin` (local = row -
 * origin): a range shard, or a run of consecutive rows of a row list. After grouping, one
 * distinct block: its holders are lanes first .. first + count - 1. */
struct block {
    int64_t start;
    int64_t stop;
    int64_t origin;
    uint32_t shard_index; /* position among the slice's shards in plan order */
    uint32_t first;
    uint32_t count;
};

/* Row order; shards of the same rows in plan order (their turn order). */
static int compare_blocks(const void *a, const void *b)
{
    const struct block *x = a;
    const struct block *y = b;
    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    if (x->stop != y->stop) {
        return x->stop < y->stop ? -1 : 1;
    }
    if (x->origin != y->origin) {
        return x->origin < y->origin ? -1 : 1;
    }
    return x->shard_index < y->shard_index ? -1 : x->shard_index > y->shard_index;
}

static void set_turns(struct replica_set *set, uint32_t first, uint32_t count)
{
    *set = (struct replica_set){.magic = replica_magic(count), .first = first, .count = count};
}

/* The block holding `row` (blocks tile the table). */
static uint32_t find_block(const struct slice *slice, int64_t row)
{
    uint32_t lo = 0;
    uint32_t hi = slice->nr_ranges;
    while (hi - lo > 1) {
        uint32_t middle = lo + (hi - lo) / 2;
        if (slice->range_starts[middle] <= row) {
            lo = middle;
        } else {
            hi = middle;
        }
    }
    return lo;
}

/* Ranges routing: the block of a row is found through buckets of 2^shift rows. */
static int build_ranges(eb_engine *engine, struct slice *slice, const struct block *blocks, uint32_t nr_blocks,
                        int64_t nr_rows)
{
    slice->kind = ROUTE_RANGES;
    slice->nr_ranges = nr_blocks;
    slice->range_starts = malloc((nr_blocks + 1) * sizeof(int64_t));
    if (!slice->range_starts) {
        set_error(engine, "out of host memory");
        return -1;
    }
    int64_t shortest = nr_rows;
    int replicated = 0, shifted = 0;
    for (uint32_t k = 0; k < nr_blocks; k++) {
        slice->range_starts[k] = blocks[k].start;
        shortest = blocks[k].stop - blocks[k].start < shortest ? blocks[k].stop - blocks[k].start : shortest;
        replicated |= blocks[k].count > 1 || blocks[k].first != k;
        shifted |= blocks[k].origin != blocks[k].start;
    }
    slice->range_starts[nr_blocks] = nr_rows;
    slice->origins = slice->range_starts;
    if (shifted) {
        slice->origins = malloc(nr_blocks * sizeof(int64_t));
        if (!slice->origins) {
            set_error(engine, "out of host memory");
            return -1;
        }
        for (uint32_t k = 0; k < nr_blocks; k++) {
            slice->origins[k] = blocks[k].origin;
        }
        slice->routing_bytes += nr_blocks * sizeof(int64_t);
    }
    if (replicated) {
        /* Replica sets: the holders of block k are lanes first .. first + count - 1 (without
         * them lane k is block k). */
        slice->sets = malloc(nr_blocks * sizeof(struct replica_set));
        if (!slice->sets) {
            set_error(engine, "out of host memory");
            return -1;
        }
        slice->one_set = 1;
        for (uint32_t k = 0; k < nr_blocks; k++) {
            set_turns(&slice->sets[k], blocks[k].first, blocks[k].count);
            slice->one_set &= blocks[k].first == blocks[0].first && blocks[k].count == blocks[0].count;
        }
        slice->routing_bytes += nr_blocks * sizeof(struct replica_set);
    }
    /* A bucket no longer than the shortest block contains at most one block boundary,
     * so one branchless step after the bucket lookup finds the block. When the blocks
     * are so uneven that this needs a large bucket table, about sixteen buckets per
     * block and a short search instead. */
    uint32_t shift = bits_for((uint64_t)shortest) - 1;
    uint64_t nr_buckets = ((uint64_t)(nr_rows - 1) >> shift) + 1;
    slice->single_step = nr_buckets <= 4096 || nr_buckets <= 32ull * nr_blocks;
    if (!slice->single_step) {
        shift = 0;
        while (((nr_rows - 1) >> shift) >= 16 * (int64_t)nr_blocks) {
            shift++;
        }
        nr_buckets = ((uint64_t)(nr_rows - 1) >> shift) + 1;
    }
    slice->bucket_shift = shift;
    slice->buckets = malloc(nr_buckets * sizeof(uint32_t));
    if (!slice->buckets) {
        set_error(engine, "out of host memory");
        return -1;
    }
    uint32_t k = 0;
    for (uint64_t bucket = 0; bucket < nr_buckets; bucket++) {
        int64_t first_row = (int64_t)(bucket << shift);
        while (first_row >= slice->range_starts[k + 1]) {
            k++;
        }
        slice->buckets[bucket] = k;
    }
    slice->routing_bytes += nr_buckets * sizeof(uint32_t) + (nr_blocks + 1) * sizeof(int64_t);
    return 0;
}

/*
 * Exceptions of a ranges slice: rows also held by explicit shards (replicas: the
 * block's lanes and the explicit holders, merged in plan order, serve bags in turn)
 * and host-cached rows. A bit per row says whether to look in the hash table.
 */
static int build_exceptions(eb_engine *engine, struct slice *slice, const struct table *table)
{
    uint64_t nr_holders = 0;
    for (uint32_t i = slice->nr_block_lanes; i < slice->nr_dpu_lanes; i++) {
        const struct shard *shard = &engine->shards[slice->lanes[i].shard];
        nr_holders += shard->row_ids ? (uint64_t)shard->nr_rows : 0;
    }
    if (nr_holders == 0 && table->nr_host_rows == 0) {
        return 0;
    }
    struct holder *holders = malloc((nr_holders ? nr_holders : 1) * sizeof(struct holder));
    if (!holders) {
        set_error(engine, "out of host memory");
        return -1;
    }
    uint64_t count = 0;
    for (uint32_t i = slice->nr_block_lanes; i < slice->nr_dpu_lanes; i++) {
        const struct shard *shard = &engine->shards[slice->lanes[i].shard];
        for (int64_t local = 0; shard->row_ids && local < shard->nr_rows; local++) {
            holders[count++] = (struct holder){
                .row = shard->row_ids[local], .shard = slice->lanes[i].shard, .lane = i, .local = (uint32_t)local};
        }
    }
    qsort(holders, count, sizeof(struct holder), compare_holders);
    /* Each row's group: its explicit holders and its block's lanes. */
    uint32_t nr_groups = 0;
    uint64_t nr_replicas = 0;
    for (uint64_t h = 0; h < count; h++) {
        if (h == 0 || holders[h].row != holders[h - 1].row) {
            uint32_t block = find_block(slice, holders[h].row);
            nr_groups++;
            nr_replicas += slice->sets ? slice->sets[block].count : 1;
        }
        nr_replicas++;
    }
    uint64_t nr_exceptions = (uint64_t)nr_groups + (uint64_t)table->nr_host_rows;
    uint64_t cells = 16;
    while (cells < 2 * nr_exceptions) {
        cells *= 2;
    }
    slice->exception_mask = cells - 1;
    slice->exception_hash_shift = 64 - bits_for(cells - 1);
    slice->exceptions = malloc(cells * sizeof(struct exception));
    slice->exception_bits = calloc(((uint64_t)table->nr_rows + 63) / 64, sizeof(uint64_t));
    slice->groups = malloc((nr_groups ? nr_groups : 1) * sizeof(struct replica_set));
    slice->replicas = malloc((nr_replicas ? nr_replicas : 1) * sizeof(struct replica));
    if (!slice->exceptions || !slice->exception_bits || !slice->groups || !slice->replicas) {
        free(holders);
        set_error(engine, "out of host memory");
        return -1;
    }
    for (uint64_t c = 0; c < cells; c++) {
        slice->exceptions[c].row = -1;
    }
    uint32_t group = 0;
    uint64_t kept = 0;
    for (uint64_t h = 0; h < count;) {
        const int64_t row = holders[h].row;
        uint64_t end = h;
        while (end < count && holders[end].row == row) {
            end++;
        }
        const uint32_t block = find_block(slice, row);
        const uint32_t first_lane = slice->sets ? slice->sets[block].first : block;
        const uint32_t end_lane = first_lane + (slice->sets ? slice->sets[block].count : 1);
        const uint32_t local = (uint32_t)(row - slice->origins[block]);
        /* Both lists are in plan order (a shard is either a range or a row list): merge them. */
        uint64_t first = kept;
        uint32_t lane = first_lane;
        while (h < end || lane < end_lane) {
            if (lane < end_lane && (h == end || slice->lanes[lane].shard < holders[h].shard)) {
                slice->replicas[kept++] = (struct replica){.lane = lane++, .local = local};
            } else {
                slice->replicas[kept++] = (struct replica){.lane = holders[h].lane, .local = holders[h].local};
                h++;
            }
        }
        set_turns(&slice->groups[group], (uint32_t)first, (uint32_t)(kept - first));
        put_exception(slice, row, EXCEPTION_REPLICATED, group++);
    }
    slice->nr_groups = nr_groups;
    free(holders);
    /* Host-cached rows are served by the host even where DPUs hold a copy. */
    for (int64_t h = 0; h < table->nr_host_rows; h++) {
        put_exception(slice, table->host_row_ids[h], EXCEPTION_HOST, (uint32_t)h);
    }
    if (nr_groups == 0) {
        /* Host-cached exceptions only: a row's host slot is the number of host rows before
         * it, a count per word and a popcount, no probe. */
        const uint64_t words = ((uint64_t)table->nr_rows + 63) / 64;
        slice->host_words = malloc(words * sizeof(struct host_word));
        if (!slice->host_words) {
            set_error(engine, "out of host memory");
            return -1;
        }
        uint32_t before = 0;
        for (uint64_t w = 0; w < words; w++) {
            slice->host_words[w] = (struct host_word){.bits = slice->exception_bits[w], .rank = before};
            before += (uint32_t)__builtin_popcountll(slice->exception_bits[w]);
        }
        slice->routing_bytes += words * sizeof(struct host_word);
    }
    slice->routing_bytes += cells * sizeof(struct exception) + ((uint64_t)table->nr_rows + 63) / 64 * sizeof(uint64_t) +
                            (uint64_t)nr_groups * sizeof(struct replica_set) + kept * sizeof(struct replica);
    return 0;
}

static void set_entry(struct slice *slice, int64_t row, uint64_t slot_code, uint64_t value)
{
    uint64_t entry = slot_code << slice->local_bits | value;
    if (slice->kind == ROUTE_EXPLICIT32) {
        ((uint32_t *)slice->entries)[row] = (uint32_t)entry;
    } else {
        ((uint64_t *)slice->entries)[row] = entry;
    }
}

static uint64_t get_entry(const struct slice *slice, int64_t row)
{
    return slice->kind == ROUTE_EXPLICIT32 ? ((const uint32_t *)slice->entries)[row]
                                           : ((const uint64_t *)slice->entries)[row];
}

/*
 * Explicit routing: an entry per row, lane << local_bits | local row, in 4 bytes
 * whenever lane codes and local rows fit (they do for tables up to 2^20 rows and
 * 4,000 shards per slice), else 8. Rows with several holders point to a replica
 * group; host-cached rows go to the host lane, their local row is the host slot.
 */
static int build_explicit(eb_engine *engine, struct slice *slice, const struct table *table)
{
    int64_t nr_rows = table->nr_rows;
    uint32_t *cover = calloc((size_t)nr_rows, sizeof(uint32_t));
    if (!cover) {
        set_error(engine, "out of host memory");
        return -1;
    }
    uint64_t largest_local = 0;
    for (uint32_t i = 0; i < slice->nr_dpu_lanes; i++) {
        const struct shard *shard = &engine->shards[slice->lanes[i].shard];
        for (int64_t local = 0; local < shard->nr_rows; local++) {
            cover[shard_row(shard, local)]++;
        }
        largest_local = shard->nr_rows > 0 && (uint64_t)shard->nr_rows - 1 > largest_local
                            ? (uint64_t)shard->nr_rows - 1
                            : largest_local;
    }
    uint32_t nr_groups = 0;
    uint64_t nr_replicas = 0;
    for (int64_t row = 0; row < nr_rows; row++) {
        if (cover[row] > 1) {
            nr_groups++;
            nr_replicas += cover[row];
        }
    }
    uint64_t largest = largest_local;
    largest = nr_groups > largest + 1 ? nr_groups - 1 : largest;
    largest = (uint64_t)table->nr_host_rows > largest + 1 ? (uint64_t)table->nr_host_rows - 1 : largest;
    uint32_t local_bits = bits_for(largest);
    uint32_t lane_bits = bits_for((uint64_t)slice->nr_lanes + NR_CODES - 1);
    slice->kind = local_bits + lane_bits <= 32 ? ROUTE_EXPLICIT32 : ROUTE_EXPLICIT64;
    slice->local_bits = slice->kind == ROUTE_EXPLICIT32 ? local_bits : 32;
    size_t entry_bytes = slice->kind == ROUTE_EXPLICIT32 ? sizeof(uint32_t) : sizeof(uint64_t);
    slice->entries = malloc((size_t)nr_rows * entry_bytes);
    slice->groups = malloc((nr_groups ? nr_groups : 1) * sizeof(struct replica_set));
    slice->replicas = malloc((nr_replicas ? nr_replicas : 1) * sizeof(struct replica));
    uint32_t *filled = calloc(nr_groups ? nr_groups : 1, sizeof(uint32_t));
    if (!slice->entries || !slice->groups || !slice->replicas || !filled) {
        free(cover);
        free(filled);
        set_error(engine, "out of host memory");
        return -1;
    }
    uint32_t group = 0;
    uint64_t first = 0;
    for (int64_t row = 0; row < nr_rows; row++) {
        if (cover[row] > 1) {
            set_turns(&slice->groups[group], (uint32_t)first, cover[row]);
            first += cover[row];
            set_entry(slice, row, slice->nr_lanes + CODE_REPLICATED, group++);
        } else if (cover[row] == 0) {
            set_entry(slice, row, slice->nr_lanes + CODE_NONE, 0);
        }
    }
    /* Lanes are in plan order, so each group lists its holders in plan order. */
    for (uint32_t i = 0; i < slice->nr_dpu_lanes; i++) {
        const struct shard *shard = &engine->shards[slice->lanes[i].shard];
        for (int64_t local = 0; local < shard->nr_rows; local++) {
            int64_t row = shard_row(shard, local);
            if (cover[row] == 1) {
                set_entry(slice, row, i, (uint64_t)local);
            } else {
                uint32_t g = (uint32_t)(get_entry(slice, row) & ((1ull << slice->local_bits) - 1));
                slice->replicas[slice->groups[g].first + filled[g]++] =
                    (struct replica){.lane = i, .local = (uint32_t)local};
            }
        }
    }
    free(cover);
    free(filled);
    for (int64_t h = 0; h < table->nr_host_rows; h++) {
        set_entry(slice, table->host_row_ids[h], slice->nr_dpu_lanes, (uint64_t)h);
    }
    slice->nr_groups = nr_groups;
    slice->routing_bytes += (uint64_t)nr_rows * entry_bytes + (uint64_t)nr_groups * sizeof(struct replica_set) +
                            nr_replicas * sizeof(struct replica);
    return 0;
}

/* Host-cached rows of the table in [start, stop). */
static int64_t host_rows_in(const struct table *table, int64_t start, int64_t stop)
{
    int64_t lo = 0, hi = table->nr_host_rows;
    while (lo < hi) { /* the first host row >= start */
        int64_t middle = lo + (hi - lo) / 2;
        if (table->host_row_ids[middle] < start) {
            lo = middle + 1;
        } else {
            hi = middle;
        }
    }
    int64_t end = lo;
    while (end < table->nr_host_rows && table->host_row_ids[end] < stop) {
        end++;
    }
    return end - lo;
}

/* Runs of consecutive rows of a row list, or 0 when rows between them are not all host-cached. */
static uint64_t list_runs(const struct table *table, const struct shard *shard)
{
    uint64_t runs = 1;
    for (int64_t local = 1; local < shard->nr_rows; local++) {
        int64_t gap = shard->row_ids[local] - shard->row_ids[local - 1] - 1;
        if (gap != 0) {
            if (gap < 0 || host_rows_in(table, shard->row_ids[local - 1] + 1, shard->row_ids[local]) != gap) {
                return 0;
            }
            runs++;
        }
    }
    return runs;
}

/*
 * The blocks of a slice: its range shards and, with `lists`, row lists whose rows run
 * consecutively apart from host-cached ones (a planner's list of a whole table but its
 * host-cached rows), cut into runs (local row = row - origin). `holders` gets every
 * shard's blocks, sorted; `blocks` the distinct ones, in row order, with `first` = the
 * position of their first holder. The number of distinct blocks, 0 when they do not
 * tile the table apart from host-cached rows (the host serves those whatever the blocks
 * say), or -1 out of memory. `explicit_rows`: rows of the other lists.
 */
static int64_t collect_blocks(const eb_engine *engine, const struct table *table, const struct lane *plan_order,
                              uint32_t nr_lanes, int lists, struct block **holders, size_t *holders_capacity,
                              struct block **blocks, size_t *blocks_capacity, uint64_t *explicit_rows)
{
    uint64_t count = 0;
    *explicit_rows = 0;
    for (uint32_t i = 0; i < nr_lanes; i++) {
        const struct shard *shard = &engine->shards[plan_order[i].shard];
        if (shard->nr_rows == 0) {
            continue;
        }
        uint64_t runs = !shard->row_ids ? 1 : lists ? list_runs(table, shard) : 0;
        if (runs == 0) {
            *explicit_rows += (uint64_t)shard->nr_rows;
            continue;
        }
        if (reserve((void **)holders, holders_capacity, count + runs, sizeof(struct block))) {
            return -1;
        }
        struct block *out = *holders;
        if (!shard->row_ids) {
            out[count++] = (struct block){.start = shard->row_start,
                                          .stop = shard->row_start + shard->nr_rows,
                                          .origin = shard->row_start,
                                          .shard_index = i};
            continue;
        }
        for (int64_t local = 0; local < shard->nr_rows; local++) {
            int64_t row = shard->row_ids[local];
            if (local == 0 || row != shard->row_ids[local - 1] + 1) {
                out[count++] = (struct block){.start = row, .origin = row - local, .shard_index = i};
            }
            out[count - 1].stop = row + 1;
        }
    }
    if (count == 0 || count > UINT32_MAX / 2 ||
        reserve((void **)blocks, blocks_capacity, count, sizeof(struct block))) {
        return count == 0 || count > UINT32_MAX / 2 ? 0 : -1;
    }
    struct block *sorted = *holders, *out = *blocks;
    qsort(sorted, count, sizeof(struct block), compare_blocks);
    uint32_t nr_blocks = 0;
    for (uint32_t k = 0; k < count; k++) {
        if (nr_blocks && out[nr_blocks - 1].start == sorted[k].start && out[nr_blocks - 1].stop == sorted[k].stop &&
            out[nr_blocks - 1].origin == sorted[k].origin) {
            out[nr_blocks - 1].count++;
            continue;
        }
        /* The next block starts past the last one, the rows between are host-cached. */
        int64_t end = nr_blocks ? out[nr_blocks - 1].stop : 0;
        if (sorted[k].start < end || host_rows_in(table, end, sorted[k].start) != sorted[k].start - end) {
            return 0;
        }
        out[nr_blocks] = sorted[k];
        out[nr_blocks].first = k;
        out[nr_blocks++].count = 1;
    }
    int64_t end = out[nr_blocks - 1].stop;
    if (host_rows_in(table, end, table->nr_rows) != table->nr_rows - end) {
        return 0;
    }
    /* Host-cached gaps join the block before them, or the first block. */
    out[0].start = 0;
    for (uint32_t k = 0; k + 1 < nr_blocks; k++) {
        out[k].stop = out[k + 1].start;
    }
    out[nr_blocks - 1].stop = table->nr_rows;
    return nr_blocks;
}

/*
 * Gives the blocks' shards the first lanes, so that each block's holders are consecutive
 * lanes in plan order (lane k is block k when each shard is one block) and sets `first`
 * to a block's first lane. False when a shard of several blocks meets other holders in
 * them (explicit entries then).
 */
static int assign_block_lanes(struct slice *slice, struct block *blocks, uint32_t nr_blocks,
                              const struct block *holders, struct lane *plan_order, uint32_t nr_lanes,
                              uint32_t *lane_of)
{
    for (uint32_t i = 0; i < nr_lanes; i++) {
        lane_of[i] = UINT32_MAX;
    }
    uint32_t next = 0;
    for (uint32_t k = 0; k < nr_blocks; k++) {
        const struct block *mine = &holders[blocks[k].first];
        int fresh = lane_of[mine[0].shard_index] == UINT32_MAX;
        uint32_t first = fresh ? next : lane_of[mine[0].shard_index];
        for (uint32_t h = 0; h < blocks[k].count; h++) {
            uint32_t *lane = &lane_of[mine[h].shard_index];
            if (fresh && *lane == UINT32_MAX) {
                *lane = next++;
            } else if (fresh || *lane != first + h) {
                return 0;
            }
        }
        blocks[k].first = first;
    }
    slice->nr_block_lanes = next;
    for (uint32_t i = 0; i < nr_lanes; i++) {
        if (lane_of[i] != UINT32_MAX) {
            slice->lanes[lane_of[i]] = plan_order[i];
        }
    }
    for (uint32_t i = 0; i < nr_lanes; i++) {
        if (lane_of[i] == UINT32_MAX) {
            slice->lanes[next++] = plan_order[i];
        }
    }
    return 1;
}

/*
 * Routing of table `table`, columns [col_start, col_stop), built from the shards of
 * exactly those columns and the table's host-cached rows (so call it after
 * eb_engine_set_shard and eb_engine_set_host_rows). Blocks of rows that tile the
 * table route arithmetically, with the few replicated or host-cached rows as
 * exceptions; other plans get an entry per row.
 */
int eb_engine_add_slice(eb_engine *engine, uint32_t table, uint32_t col_start, uint32_t col_stop)
{
    struct slice *slice = new_slice(engine, table, col_start, col_stop);
    if (!slice) {
        return -1;
    }
    const struct table *t = &engine->tables[table];
    uint32_t nr_lanes = 0;
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        const struct shard *shard = &engine->shards[s];
        if (!shard->defined || shard->table != table || shard->col_stop <= col_start || shard->col_start >= col_stop) {
            continue;
        }
        if (shard->col_start != col_start || shard->col_stop != col_stop) {
            set_error(engine, "table %u: shard %u (columns [%u, %u)) straddles the slice [%u, %u)", table, s,
                      shard->col_start, shard->col_stop, col_start, col_stop);
            return -1;
        }
        int bad_rows = shard->row_ids ? 0 : shard->row_start < 0 || shard->row_start + shard->nr_rows > t->nr_rows;
        for (int64_t local = 0; shard->row_ids && local < shard->nr_rows && !bad_rows; local++) {
            bad_rows = shard->row_ids[local] < 0 || shard->row_ids[local] >= t->nr_rows;
        }
        if (bad_rows) {
            set_error(engine, "table %u: shard %u holds rows outside [0, %lld)", table, s, (long long)t->nr_rows);
            return -1;
        }
        nr_lanes++;
    }
    /* Room for the host lane and one spare entry of `touched`. */
    slice->lanes = malloc((nr_lanes + 2) * sizeof(struct lane));
    slice->cursors = calloc(nr_lanes + 2, sizeof(uint32_t *));
    slice->marks = calloc(nr_lanes + 2, sizeof(uint32_t *));
    slice->limits = calloc(nr_lanes + 2, sizeof(uint32_t *));
    slice->weights = calloc(nr_lanes + 2, sizeof(uint32_t *));
    slice->touched = malloc((nr_lanes + 2) * sizeof(uint32_t));
    struct lane *plan_order = malloc((nr_lanes + 1) * sizeof(struct lane));
    uint8_t *dpu_taken = calloc(engine->nr_dpus, 1);
    if (!slice->lanes || !slice->cursors || !slice->marks || !slice->limits || !slice->weights || !slice->touched ||
        !plan_order || !dpu_taken) {
        free(plan_order);
        free(dpu_taken);
        set_error(engine, "out of host memory");
        return -1;
    }
    slice->nr_dpu_lanes = nr_lanes;
    slice->nr_lanes = nr_lanes + (t->nr_host_rows > 0);
    if (t->nr_host_rows > 0) {
        slice->lanes[nr_lanes] = (struct lane){.shard = UINT32_MAX, .dpu = EB_HOST_LANE};
    }
    uint32_t i = 0;
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        const struct shard *shard = &engine->shards[s];
        if (!shard->defined || shard->table != table || shard->col_start != col_start) {
            continue;
        }
        if (dpu_taken[shard->dpu]) {
            free(plan_order);
            free(dpu_taken);
            set_error(engine, "table %u: two shards of columns [%u, %u) on DPU %u; merge them", table, col_start,
                      col_stop, shard->dpu);
            return -1;
        }
        dpu_taken[shard->dpu] = 1;
        plan_order[i++] = (struct lane){.shard = s, .dpu = shard->dpu};
    }
    free(dpu_taken);
    /*
     * Blocks: first with row lists of consecutive rows, else (a list of a few hot rows
     * within a block) with range shards only, the lists then holding exceptions.
     * Exceptions cost about 40 bytes each against 4 a row for explicit entries, and 8
     * more per holder for every row of a replicated block.
     */
    struct block *holders = NULL, *blocks = NULL;
    size_t holders_capacity = 0, blocks_capacity = 0;
    uint32_t *lane_of = malloc((nr_lanes + 1) * sizeof(uint32_t));
    int rc = 1; /* 1: no blocks yet */
    if (!lane_of) {
        set_error(engine, "out of host memory");
        rc = -1;
    } else if (t->nr_host_rows == t->nr_rows) {
        /* Host-cached row ids increase inside the table: slot k is row k. */
        slice->kind = ROUTE_HOST;
        memcpy(slice->lanes, plan_order, nr_lanes * sizeof(struct lane));
        rc = 0;
    }
    for (int lists = 1; rc == 1 && lists >= 0; lists--) {
        uint64_t explicit_rows = 0;
        int64_t nr_blocks = collect_blocks(engine, t, plan_order, nr_lanes, lists, &holders, &holders_capacity, &blocks,
                                           &blocks_capacity, &explicit_rows);
        if (nr_blocks < 0) {
            set_error(engine, "out of host memory");
            rc = -1;
            break;
        }
        int replicated = 0;
        for (int64_t k = 0; k < nr_blocks; k++) {
            replicated |= blocks[k].count > 1;
        }
        if (nr_blocks == 0 || (!replicated && explicit_rows + (uint64_t)t->nr_host_rows > (uint64_t)t->nr_rows / 8) ||
            !assign_block_lanes(slice, blocks, (uint32_t)nr_blocks, holders, plan_order, nr_lanes, lane_of)) {
            continue;
        }
        rc = build_ranges(engine, slice, blocks, (uint32_t)nr_blocks, t->nr_rows);
        if (rc == 0) {
            rc = build_exceptions(engine, slice, t);
        }
    }
    if (rc == 1) {
        memcpy(slice->lanes, plan_order, nr_lanes * sizeof(struct lane));
        rc = build_explicit(engine, slice, t);
    }
    free(plan_order);
    free(holders);
    free(blocks);
    free(lane_of);
    slice->routing_bytes += (nr_lanes + 2) * (sizeof(struct lane) + 4 * sizeof(uint32_t *) + sizeof(uint32_t));
    return rc;
}
