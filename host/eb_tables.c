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
    *slice = (struct slice){.table = table, .col_start = col_start, .col_stop = col_stop};
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

/* A range shard's rows, for the tiling check. */
struct block {
    int64_t start;
    int64_t stop;
    uint32_t shard_index; /* position among the slice's shards in plan order */
};

static int compare_blocks(const void *a, const void *b)
{
    const struct block *x = a;
    const struct block *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
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
    for (uint32_t k = 0; k < nr_blocks; k++) {
        slice->range_starts[k] = blocks[k].start;
        shortest = blocks[k].stop - blocks[k].start < shortest ? blocks[k].stop - blocks[k].start : shortest;
    }
    slice->range_starts[nr_blocks] = nr_rows;
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
 * block's shard and the others, in plan order, serve bags in turn) and host-cached
 * rows. A bit per row says whether to look in the hash table.
 */
static int build_exceptions(eb_engine *engine, struct slice *slice, const struct table *table)
{
    uint64_t nr_holders = 0;
    for (uint32_t i = 0; i < slice->nr_dpu_lanes; i++) {
        const struct shard *shard = &engine->shards[slice->lanes[i].shard];
        nr_holders += shard->row_ids ? 2 * (uint64_t)shard->nr_rows : 0;
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
    for (uint32_t i = 0; i < slice->nr_dpu_lanes; i++) {
        const struct shard *shard = &engine->shards[slice->lanes[i].shard];
        for (int64_t local = 0; shard->row_ids && local < shard->nr_rows; local++) {
            int64_t row = shard->row_ids[local];
            uint32_t block = find_block(slice, row);
            holders[count++] =
                (struct holder){.row = row, .shard = slice->lanes[i].shard, .lane = i, .local = (uint32_t)local};
            holders[count++] = (struct holder){.row = row,
                                               .shard = slice->lanes[block].shard,
                                               .lane = block,
                                               .local = (uint32_t)(row - slice->range_starts[block])};
        }
    }
    qsort(holders, count, sizeof(struct holder), compare_holders);
    /* The block's shard was added once per explicit holder: keep one. */
    uint64_t kept = 0;
    uint32_t nr_groups = 0;
    for (uint64_t h = 0; h < count; h++) {
        if (kept && holders[kept - 1].row == holders[h].row && holders[kept - 1].lane == holders[h].lane) {
            continue;
        }
        nr_groups += !kept || holders[kept - 1].row != holders[h].row;
        holders[kept++] = holders[h];
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
    slice->group_first = malloc((nr_groups ? nr_groups : 1) * sizeof(uint32_t));
    slice->group_count = malloc((nr_groups ? nr_groups : 1) * sizeof(uint32_t));
    slice->replicas = malloc((kept ? kept : 1) * sizeof(struct replica));
    if (!slice->exceptions || !slice->exception_bits || !slice->group_first || !slice->group_count ||
        !slice->replicas) {
        free(holders);
        set_error(engine, "out of host memory");
        return -1;
    }
    for (uint64_t c = 0; c < cells; c++) {
        slice->exceptions[c].row = -1;
    }
    uint32_t group = 0;
    for (uint64_t h = 0; h < kept; h++) {
        if (h == 0 || holders[h].row != holders[h - 1].row) {
            slice->group_first[group] = (uint32_t)h;
            slice->group_count[group] = 0;
            put_exception(slice, holders[h].row, EXCEPTION_REPLICATED, group);
            group++;
        }
        slice->group_count[group - 1]++;
        slice->replicas[h] = (struct replica){.lane = holders[h].lane, .local = holders[h].local};
    }
    slice->nr_groups = nr_groups;
    free(holders);
    /* Host-cached rows are served by the host even where DPUs hold a copy. */
    for (int64_t h = 0; h < table->nr_host_rows; h++) {
        put_exception(slice, table->host_row_ids[h], EXCEPTION_HOST, (uint32_t)h);
    }
    slice->routing_bytes += cells * sizeof(struct exception) + ((uint64_t)table->nr_rows + 63) / 64 * sizeof(uint64_t) +
                            (uint64_t)nr_groups * 2 * sizeof(uint32_t) + kept * sizeof(struct replica);
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
    slice->group_first = malloc((nr_groups ? nr_groups : 1) * sizeof(uint32_t));
    slice->group_count = malloc((nr_groups ? nr_groups : 1) * sizeof(uint32_t));
    slice->replicas = malloc((nr_replicas ? nr_replicas : 1) * sizeof(struct replica));
    uint32_t *filled = calloc(nr_groups ? nr_groups : 1, sizeof(uint32_t));
    if (!slice->entries || !slice->group_first || !slice->group_count || !slice->replicas || !filled) {
        free(cover);
        free(filled);
        set_error(engine, "out of host memory");
        return -1;
    }
    uint32_t group = 0;
    uint64_t first = 0;
    for (int64_t row = 0; row < nr_rows; row++) {
        if (cover[row] > 1) {
            slice->group_first[group] = (uint32_t)first;
            slice->group_count[group] = cover[row];
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
                slice->replicas[slice->group_first[g] + filled[g]++] =
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
    slice->routing_bytes += (uint64_t)nr_rows * entry_bytes + (uint64_t)nr_groups * 2 * sizeof(uint32_t) +
                            nr_replicas * sizeof(struct replica);
    return 0;
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
    slice->weights = calloc(nr_lanes + 2, sizeof(uint32_t *));
    slice->touched = malloc((nr_lanes + 2) * sizeof(uint32_t));
    struct lane *plan_order = malloc((nr_lanes + 1) * sizeof(struct lane));
    struct block *blocks = malloc((nr_lanes + 1) * sizeof(struct block));
    uint8_t *dpu_taken = calloc(engine->nr_dpus, 1);
    if (!slice->lanes || !slice->cursors || !slice->marks || !slice->weights || !slice->touched || !plan_order ||
        !blocks || !dpu_taken) {
        free(plan_order);
        free(blocks);
        free(dpu_taken);
        set_error(engine, "out of host memory");
        return -1;
    }
    slice->nr_dpu_lanes = nr_lanes;
    slice->nr_lanes = nr_lanes + (t->nr_host_rows > 0);
    if (t->nr_host_rows > 0) {
        slice->lanes[nr_lanes] = (struct lane){.shard = UINT32_MAX, .dpu = EB_HOST_LANE};
    }
    uint32_t nr_blocks = 0;
    uint64_t explicit_rows = 0;
    uint32_t i = 0;
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        const struct shard *shard = &engine->shards[s];
        if (!shard->defined || shard->table != table || shard->col_start != col_start) {
            continue;
        }
        if (dpu_taken[shard->dpu]) {
            free(plan_order);
            free(blocks);
            free(dpu_taken);
            set_error(engine, "table %u: two shards of columns [%u, %u) on DPU %u; merge them", table, col_start,
                      col_stop, shard->dpu);
            return -1;
        }
        dpu_taken[shard->dpu] = 1;
        plan_order[i] = (struct lane){.shard = s, .dpu = shard->dpu};
        if (shard->row_ids) {
            explicit_rows += (uint64_t)shard->nr_rows;
        } else if (shard->nr_rows > 0) {
            blocks[nr_blocks++] =
                (struct block){.start = shard->row_start, .stop = shard->row_start + shard->nr_rows, .shard_index = i};
        }
        i++;
    }
    free(dpu_taken);
    qsort(blocks, nr_blocks, sizeof(struct block), compare_blocks);
    int tiles = nr_blocks > 0 && blocks[0].start == 0 && blocks[nr_blocks - 1].stop == t->nr_rows;
    for (uint32_t k = 1; k < nr_blocks && tiles; k++) {
        tiles = blocks[k].start == blocks[k - 1].stop;
    }
    /* Exceptions cost about 40 bytes each against 4 a row for explicit entries. */
    int rc;
    if (tiles && explicit_rows + (uint64_t)t->nr_host_rows <= (uint64_t)t->nr_rows / 8) {
        /* Lane k is block k, so a row's block is its lane; the other shards follow. */
        uint32_t lane = 0;
        for (uint32_t k = 0; k < nr_blocks; k++) {
            slice->lanes[lane++] = plan_order[blocks[k].shard_index];
            plan_order[blocks[k].shard_index].dpu = UINT32_MAX;
        }
        for (uint32_t k = 0; k < nr_lanes; k++) {
            if (plan_order[k].dpu != UINT32_MAX) {
                slice->lanes[lane++] = plan_order[k];
            }
        }
        rc = build_ranges(engine, slice, blocks, nr_blocks, t->nr_rows);
        if (rc == 0) {
            rc = build_exceptions(engine, slice, t);
        }
    } else {
        memcpy(slice->lanes, plan_order, nr_lanes * sizeof(struct lane));
        rc = build_explicit(engine, slice, t);
    }
    free(plan_order);
    free(blocks);
    slice->routing_bytes += (nr_lanes + 2) * (sizeof(struct lane) + 3 * sizeof(uint32_t *) + sizeof(uint32_t));
    return rc;
}
