/*
 * Routing work shared at load: column slices that route alike (followers copy their
 * leader's records) and DPUs whose inputs are another DPU's (mirrors send its buffer).
 * See host/README.md.
 */
#include "eb_internal.h"

/* ---- followers: column slices that route alike ---------------------------------- */

static int same_bytes(const void *a, const void *b, size_t size)
{
    return (a == NULL) == (b == NULL) && (a == NULL || memcmp(a, b, size) == 0);
}

/* Lane i of both slices holds the same rows in the same local order. */
static int same_lanes(const eb_engine *engine, const struct slice *a, const struct slice *b)
{
    for (uint32_t i = 0; i < a->nr_dpu_lanes; i++) {
        const struct shard *x = &engine->shards[a->lanes[i].shard];
        const struct shard *y = &engine->shards[b->lanes[i].shard];
        if (x->nr_rows != y->nr_rows || (x->row_ids == NULL) != (y->row_ids == NULL) ||
            (x->row_ids ? memcmp(x->row_ids, y->row_ids, (size_t)x->nr_rows * sizeof(int64_t)) != 0
                        : x->row_start != y->row_start)) {
            return 0;
        }
    }
    return 1;
}

static int same_exceptions(const struct slice *a, const struct slice *b)
{
    if ((a->exceptions == NULL) != (b->exceptions == NULL) || a->exception_mask != b->exception_mask) {
        return 0;
    }
    for (uint64_t c = 0; a->exceptions && c <= a->exception_mask; c++) {
        const struct exception *x = &a->exceptions[c], *y = &b->exceptions[c];
        /* Empty cells (row -1) carry no kind or index. */
        if (x->row != y->row || (x->row >= 0 && (x->kind != y->kind || x->index != y->index))) {
            return 0;
        }
    }
    return 1;
}

/*
 * Whether slice b routes every lookup to the same lane index and local row as slice a:
 * the same rows on every lane and the same routing tables. Column slices of a table
 * split the same way (tiles, replicated slices) do.
 */
static int routes_alike(const eb_engine *engine, const struct slice *a, const struct slice *b)
{
    const int64_t nr_rows = engine->tables[a->table].nr_rows;
    if (a->table != b->table || a->kind != b->kind || a->nr_lanes != b->nr_lanes ||
        a->nr_dpu_lanes != b->nr_dpu_lanes || a->nr_block_lanes != b->nr_block_lanes || a->nr_groups != b->nr_groups ||
        !same_lanes(engine, a, b)) {
        return 0;
    }
    uint64_t nr_replicas = 0;
    for (uint32_t g = 0; g < a->nr_groups; g++) {
        uint64_t end = (uint64_t)a->groups[g].first + a->groups[g].count;
        nr_replicas = end > nr_replicas ? end : nr_replicas;
    }
    if (!same_bytes(a->groups, b->groups, a->nr_groups * sizeof(struct replica_set)) ||
        !same_bytes(a->replicas, b->replicas, nr_replicas * sizeof(struct replica))) {
        return 0;
    }
    if (a->kind == ROUTE_HOST) {
        return 1;
    }
    if (a->kind == ROUTE_RANGES) {
        if (a->nr_ranges != b->nr_ranges || a->bucket_shift != b->bucket_shift || a->single_step != b->single_step) {
            return 0;
        }
        uint64_t nr_buckets = ((uint64_t)(nr_rows - 1) >> a->bucket_shift) + 1;
        return same_bytes(a->range_starts, b->range_starts, (a->nr_ranges + 1) * sizeof(int64_t)) &&
               same_bytes(a->origins, b->origins, a->nr_ranges * sizeof(int64_t)) &&
               same_bytes(a->sets, b->sets, a->nr_ranges * sizeof(struct replica_set)) &&
               same_bytes(a->buckets, b->buckets, nr_buckets * sizeof(uint32_t)) &&
               same_bytes(a->exception_bits, b->exception_bits, ((uint64_t)nr_rows + 63) / 64 * sizeof(uint64_t)) &&
               same_exceptions(a, b);
    }
    size_t entry_bytes = a->kind == ROUTE_EXPLICIT32 ? sizeof(uint32_t) : sizeof(uint64_t);
    return a->local_bits == b->local_bits && same_bytes(a->entries, b->entries, (size_t)nr_rows * entry_bytes);
}

/* Frees a slice's routing tables (not its lanes) and forgets them. */
void free_routing(struct slice *slice)
{
    if (slice->origins != slice->range_starts) {
        free(slice->origins);
    }
    free(slice->range_starts);
    free(slice->buckets);
    free(slice->exception_bits);
    free(slice->host_words);
    free(slice->exceptions);
    free(slice->entries);
    free(slice->sets);
    free(slice->groups);
    free(slice->replicas);
    slice->origins = slice->range_starts = NULL;
    slice->buckets = NULL;
    slice->exception_bits = NULL;
    slice->host_words = NULL;
    slice->exceptions = NULL;
    slice->entries = NULL;
    slice->sets = slice->groups = NULL;
    slice->one_set = 0;
    slice->replicas = NULL;
}

/* A follower keeps its lanes only: its passes read the leader's tables. */
static void drop_routing(struct slice *slice)
{
    free_routing(slice);
    slice->routing_bytes =
        (slice->nr_dpu_lanes + 2) * (sizeof(struct lane) + 4 * sizeof(uint32_t *) + sizeof(uint32_t));
}

/*
 * Each slice that routes like an earlier slice of its table (the first such) becomes
 * its follower. Called once the slices are complete (eb_engine_load).
 */
int link_followers(eb_engine *engine)
{
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        for (uint32_t k = table->first_slice + 1; k < table->first_slice + table->nr_slices; k++) {
            struct slice *slice = &engine->slices[k];
            for (uint32_t j = table->first_slice; j < k && slice->leader == EB_NO_LEADER; j++) {
                if (engine->slices[j].leader == EB_NO_LEADER && routes_alike(engine, &engine->slices[j], slice)) {
                    slice->leader = j;
                    drop_routing(slice);
                }
            }
        }
    }
    return 0;
}

/* ---- mirrors: DPUs whose inputs are another DPU's ----------------------------- */

/* Where one shard of a DPU sits in the batch's routing (link_mirrors). */
struct placed_shard {
    uint64_t order; /* routing order of its slice (tables in order, then their slices) << 32 | local shard */
    uint32_t root;  /* the slice whose routing fills it: its slice, or that slice's leader */
    uint32_t lane;
    uint32_t width; /* columns: its partial sums' size with the table's format */
    uint32_t local;
};

static int compare_placed(const void *a, const void *b)
{
    uint64_t x = ((const struct placed_shard *)a)->order, y = ((const struct placed_shard *)b)->order;
    return (x > y) - (x < y);
}

/* Whether two DPUs' placed shards (each in routing order) get byte-identical inputs. */
static int same_inputs(const struct placed_shard *a, const struct placed_shard *b, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        if (a[i].root != b[i].root || a[i].lane != b[i].lane || a[i].width != b[i].width ||
            a[i].local != b[i].local) {
            return 0;
        }
    }
    return 1;
}

struct mirror_key {
    uint64_t hash;
    uint32_t dpu;
};

static int compare_mirror_keys(const void *a, const void *b)
{
    const struct mirror_key *x = a, *y = b;
    if (x->hash != y->hash) {
        return (x->hash > y->hash) - (x->hash < y->hash);
    }
    return (x->dpu > y->dpu) - (x->dpu < y->dpu);
}

/*
 * A DPU mirrors an earlier DPU of its rank when every shard it holds is a lane of a
 * follower slice and the other DPU holds, in the same routing order and under the same
 * local shard numbers, the same lanes of the same leaders with as many columns: routing
 * writes both the same bytes (same local rows, segments naming the same local shards),
 * and both write partial sums of the same sizes in the same order. A mirror is then
 * neither routed nor packed: its transfer sends the other DPU's buffer, and the merge
 * reads that DPU's segments with the mirror's own partial sums and shard list. Column
 * slices replicated alike (what build_plan picks for UpDLRM-like workloads) make most
 * DPUs mirrors. The rank must be the same because the header's output offset is per rank.
 */
int link_mirrors(eb_engine *engine)
{
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        engine->dpus[d].mirror = EB_NO_MIRROR;
    }
    uint32_t *slice_order = malloc((engine->nr_slices + 1) * sizeof(uint32_t));
    uint32_t *first = malloc((engine->nr_dpus + 1) * sizeof(uint32_t));
    struct placed_shard *placed = malloc((engine->nr_shards + 1) * sizeof(struct placed_shard));
    struct mirror_key *keys = malloc((engine->nr_dpus + 1) * sizeof(struct mirror_key));
    uint8_t *followers_only = malloc(engine->nr_dpus + 1);
    if (!slice_order || !first || !placed || !keys || !followers_only) {
        free(slice_order);
        free(first);
        free(placed);
        free(keys);
        free(followers_only);
        set_error(engine, "out of host memory");
        return -1;
    }
    uint32_t position = 0;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        for (uint32_t k = table->first_slice; k < table->first_slice + table->nr_slices; k++) {
            slice_order[k] = position++;
        }
    }
    /* Each DPU's shards, grouped by DPU (first[d] ..), then sorted in routing order. */
    uint32_t used = 0;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        first[d] = used;
        used += engine->dpus[d].nr_shards;
        followers_only[d] = engine->dpus[d].nr_shards > 0;
    }
    first[engine->nr_dpus] = used;
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        const struct slice *slice = &engine->slices[k];
        for (uint32_t i = 0; i < slice->nr_dpu_lanes; i++) {
            const struct shard *shard = &engine->shards[slice->lanes[i].shard];
            placed[first[shard->dpu] + shard->local] = (struct placed_shard){
                .order = (uint64_t)slice_order[k] << 32 | shard->local,
                .root = slice->leader != EB_NO_LEADER ? slice->leader : k,
                .lane = i,
                .width = shard->col_stop - shard->col_start,
                .local = shard->local,
            };
            followers_only[shard->dpu] &= slice->leader != EB_NO_LEADER;
        }
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        uint32_t count = first[d + 1] - first[d];
        qsort(placed + first[d], count, sizeof(*placed), compare_placed);
        /* FNV-1a over what same_inputs compares, and the rank. */
        uint64_t hash = 0xcbf29ce484222325ull ^ engine->dpus[d].rank;
        for (uint32_t i = first[d]; i < first[d + 1]; i++) {
            const uint32_t fields[4] = {placed[i].root, placed[i].lane, placed[i].width, placed[i].local};
            for (int f = 0; f < 4; f++) {
                hash = (hash ^ fields[f]) * 0x100000001b3ull;
            }
        }
        keys[d] = (struct mirror_key){hash, d};
    }
    qsort(keys, engine->nr_dpus, sizeof(*keys), compare_mirror_keys);
    for (uint32_t a = 0; a < engine->nr_dpus;) {
        uint32_t b = a + 1;
        while (b < engine->nr_dpus && keys[b].hash == keys[a].hash) {
            b++;
        }
        /* Within a run of equal hashes, DPUs in index order: each mirrors the first
         * earlier DPU that is no mirror and matches. */
        for (uint32_t m = a + 1; m < b; m++) {
            const uint32_t d = keys[m].dpu;
            if (!followers_only[d]) {
                continue;
            }
            for (uint32_t s = a; s < m; s++) {
                const uint32_t source = keys[s].dpu;
                if (engine->dpus[source].mirror == EB_NO_MIRROR && engine->dpus[source].rank == engine->dpus[d].rank &&
                    engine->dpus[source].nr_shards == engine->dpus[d].nr_shards &&
                    same_inputs(placed + first[source], placed + first[d], engine->dpus[d].nr_shards)) {
                    engine->dpus[d].mirror = source;
                    break;
                }
            }
        }
        a = b;
    }
    free(slice_order);
    free(first);
    free(placed);
    free(keys);
    free(followers_only);
    return 0;
}
