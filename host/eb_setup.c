/*
 * Setup and description of the engine: errors, allocation and kernel load, tables,
 * shards and host rows, queries and teardown.
 * See host/README.md for the data layout and the summation order.
 */
#define _DEFAULT_SOURCE /* madvise */
#include "eb_internal.h"

#include <sys/mman.h>

static pthread_mutex_t error_lock = PTHREAD_MUTEX_INITIALIZER;

void set_error(eb_engine *engine, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    pthread_mutex_lock(&error_lock);
    vsnprintf(engine->error, sizeof(engine->error), format, args);
    engine->failure =
        (struct eb_failure){.kind = EB_FAILURE_OTHER, .dpu = -1, .tasklet = -1, .recovered = !engine->broken};
    pthread_mutex_unlock(&error_lock);
    va_end(args);
}

/* The error text of one batch in flight (its slot), read by eb_engine_slot_error. */
void slot_error(struct eb_slot *slot, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    pthread_mutex_lock(&error_lock);
    vsnprintf(slot->error, sizeof(slot->error), format, args);
    slot->failure =
        (struct eb_failure){.kind = EB_FAILURE_OTHER, .dpu = -1, .tasklet = -1, .recovered = !slot->engine->broken};
    pthread_mutex_unlock(&error_lock);
    va_end(args);
}

/* What the DPU library says about its last error: the emulator keeps a detailed text
 * per thread; the SDK only has the code's text (allocated: freed here). The result
 * lives until the thread's next call. */
const char *dpu_detail(dpu_error_t status)
{
    static _Thread_local char text[768];
#ifdef UPDLRM_EMULATOR
    const char *detail = updlrm_emu_last_error();
    if (detail && detail[0]) {
        snprintf(text, sizeof(text), "%s", detail);
        return text;
    }
#endif
    char *owned = dpu_error_to_string(status);
    snprintf(text, sizeof(text), "%s", owned ? owned : "unknown error");
    free(owned);
    return text;
}

/* The kernel's configuration (WRAM): written at load and after every reload. */
dpu_error_t write_config(eb_engine *engine)
{
    struct eb_config config = {.abi_version = EB_ABI_VERSION, .batch_offset = engine->batch_offset};
    return dpu_broadcast_to(engine->set, "eb_config", 0, &config, sizeof(config), DPU_XFER_DEFAULT);
}


/* Grow *array to hold at least `needed` elements; capacities double so that
 * appends cost amortised O(1). */
/* Huge pages: the x86-64 and ARMv8 (4 KB granule) size of a transparent huge page. */
#define EB_HUGE_PAGE_BYTES ((size_t)2 << 20)

/* Arrays of at least this many bytes are advised to use huge pages (two of them, so at
 * least one whole huge page lies inside). */
#define EB_HUGE_ARRAY_BYTES (2u * EB_HUGE_PAGE_BYTES)

/*
 * Advises the kernel to back the whole huge pages inside [memory, memory + bytes) with
 * transparent huge pages where it has them (madvise mode): pages touched from then on
 * come as 2 MB pages. The per-batch arrays (the partial sums of every DPU, the merge's
 * scratch) are written and read at scattered places each batch; on 4 KB pages each of
 * those places needs its own TLB entry.
 */
static void advise_huge_pages(void *memory, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    const uintptr_t start = ((uintptr_t)memory + EB_HUGE_PAGE_BYTES - 1u) & ~(uintptr_t)(EB_HUGE_PAGE_BYTES - 1u);
    const uintptr_t stop = ((uintptr_t)memory + bytes) & ~(uintptr_t)(EB_HUGE_PAGE_BYTES - 1u);
    if (stop > start) {
        (void)madvise((void *)start, stop - start, MADV_HUGEPAGE); /* advice: without it, 4 KB pages */
    }
#else
    (void)memory;
    (void)bytes;
#endif
}

int reserve(void **array, size_t *capacity, size_t needed, size_t element_size)
{
    if (needed <= *capacity) {
        return 0;
    }
    size_t grown = *capacity ? *capacity : 64;
    while (grown < needed) {
        grown *= 2;
    }
    void *bigger = realloc(*array, grown * element_size);
    if (!bigger) {
        return -1;
    }
    if (grown * element_size >= EB_HUGE_ARRAY_BYTES) {
        advise_huge_pages(bigger, grown * element_size);
    }
    *array = bigger;
    *capacity = grown;
    return 0;
}

const char *status_text(uint32_t code)
{
    switch (code) {
    case EB_ERR_BAD_HEADER:
        return "batch header not found";
    case EB_ERR_TASKLET_COUNT:
        return "kernel built for another number of tasklets";
    case EB_ERR_BAD_SHARD:
        return "segment names an unknown shard";
    case EB_ERR_ROW_RANGE:
        return "local row outside its shard";
    case EB_ERR_BAD_SEGMENT:
        return "tasklet work does not match the segment table";
    case EB_ERR_BAD_FORMAT:
        return "unknown row format";
    default:
        return "unknown status";
    }
}

/* ---- setup ------------------------------------------------------------------ */

eb_engine *eb_engine_create(const char *kernel_path, const char *profile, uint32_t nr_dpus, uint32_t nr_tasklets,
                            uint64_t mram_bytes, uint32_t nr_tables, uint32_t nr_shards, char *error, size_t error_size,
                            int32_t *failure_kind)
{
    if (failure_kind) {
        *failure_kind = EB_FAILURE_OTHER;
    }
    if (nr_tasklets < 1 || nr_tasklets > EB_MAX_TASKLETS) {
        snprintf(error, error_size, "nr_tasklets must be in 1..%u, got %u", EB_MAX_TASKLETS, nr_tasklets);
        return NULL;
    }
    if (nr_dpus < 1) {
        snprintf(error, error_size, "need at least one DPU");
        return NULL;
    }
    eb_engine *engine = calloc(1, sizeof(*engine));
    if (!engine) {
        snprintf(error, error_size, "out of host memory");
        return NULL;
    }
    engine->nr_tasklets = nr_tasklets;
    engine->mram_bytes = mram_bytes;
    engine->worker_threads = sysconf(_SC_NPROCESSORS_ONLN);
    const char *scalar = getenv("UPDLRM_SCALAR_ROUTE");
    engine->simd_route = !(scalar && strcmp(scalar, "1") == 0);
    for (uint32_t k = 0; k < EB_NR_SLOTS; k++) {
        engine->slots[k].engine = engine;
    }
    engine->nr_tables = nr_tables;
    engine->nr_shards = nr_shards;
    engine->tables = calloc(nr_tables ? nr_tables : 1, sizeof(struct table));
    engine->shards = calloc(nr_shards ? nr_shards : 1, sizeof(struct shard));
    engine->dpus = calloc(nr_dpus, sizeof(struct dpu_state));
    engine->failed_dpus = calloc(nr_dpus, sizeof(uint32_t));
    engine->kernel_path = strdup(kernel_path);
    for (int s = 0; s < EB_NR_DPU_STATS; s++) {
        engine->dpu_stats[s] = calloc(nr_dpus, sizeof(int64_t));
        if (!engine->dpu_stats[s]) {
            goto out_of_memory;
        }
    }
    if (!engine->tables || !engine->shards || !engine->dpus || !engine->failed_dpus || !engine->kernel_path) {
        goto out_of_memory;
    }

    dpu_error_t status = dpu_alloc(nr_dpus, profile, &engine->set);
    if (status != DPU_OK) {
        if (profile && profile[0]) {
            snprintf(error, error_size, "cannot allocate %u DPUs with profile \"%s\": %s", nr_dpus, profile,
                     dpu_detail(status));
        } else {
            snprintf(error, error_size, "cannot allocate %u DPUs: %s", nr_dpus, dpu_detail(status));
        }
        if (failure_kind) {
            *failure_kind = EB_FAILURE_ALLOCATION;
        }
        eb_engine_destroy(engine);
        return NULL;
    }
    engine->allocated = 1;
    uint32_t allocated_dpus = 0;
    dpu_get_nr_dpus(engine->set, &allocated_dpus);
    dpu_get_nr_ranks(engine->set, &engine->nr_ranks);
    if (allocated_dpus != nr_dpus) {
        snprintf(error, error_size, "asked for %u DPUs, got %u", nr_dpus, allocated_dpus);
        if (failure_kind) {
            *failure_kind = EB_FAILURE_ALLOCATION;
        }
        eb_engine_destroy(engine);
        return NULL;
    }
    engine->nr_dpus = nr_dpus;
    engine->ranks = calloc(engine->nr_ranks, sizeof(struct rank));
    if (!engine->ranks) {
        goto out_of_memory;
    }
    struct dpu_set_t rank;
    uint32_t rank_index = 0;
    uint32_t first_dpu = 0;
    DPU_RANK_FOREACH(engine->set, rank)
    {
        uint32_t in_rank = 0;
        dpu_get_nr_dpus(rank, &in_rank);
        engine->ranks[rank_index] = (struct rank){.set = rank, .first_dpu = first_dpu, .nr_dpus = in_rank};
        for (uint32_t d = first_dpu; d < first_dpu + in_rank; d++) {
            engine->dpus[d].rank = rank_index;
        }
        first_dpu += in_rank;
        rank_index++;
    }

    struct dpu_program_t *program = NULL;
    status = dpu_load(engine->set, kernel_path, &program);
    if (status != DPU_OK) {
        snprintf(error, error_size, "dpu_load(%s) failed: %s", kernel_path, dpu_detail(status));
        eb_engine_destroy(engine);
        return NULL;
    }
    struct dpu_symbol_t heap;
    if (dpu_get_symbol(program, DPU_MRAM_HEAP_POINTER_NAME, &heap) == DPU_OK) {
        engine->heap_address = heap.address;
    }
    return engine;

out_of_memory:
    snprintf(error, error_size, "out of host memory");
    eb_engine_destroy(engine);
    return NULL;
}

int eb_engine_set_table(eb_engine *engine, uint32_t table, int64_t nr_rows, uint32_t dim, uint32_t format, double scale)
{
    if (table >= engine->nr_tables || nr_rows < 1 || dim < 1 || format > EB_FORMAT_INT8 || !(scale > 0)) {
        set_error(engine, "bad table %u: rows %lld, dim %u, format %u, scale %g", table, (long long)nr_rows, dim,
                  format, scale);
        return -1;
    }
    engine->tables[table] =
        (struct table){.nr_rows = nr_rows, .dim = dim, .format = format, .scale = scale, .defined = 1};
    snprintf(engine->tables[table].name, sizeof(engine->tables[table].name), "t%u", table);
    return 0;
}

int eb_engine_name_table(eb_engine *engine, uint32_t table, const char *name)
{
    if (table >= engine->nr_tables || !engine->tables[table].defined) {
        set_error(engine, "table %u was never described", table);
        return -1;
    }
    snprintf(engine->tables[table].name, sizeof(engine->tables[table].name), "%s", name);
    return 0;
}

int eb_engine_set_shard(eb_engine *engine, uint32_t shard, uint32_t table, uint32_t dpu, uint32_t col_start,
                        uint32_t col_stop, int64_t row_start, int64_t nr_rows, const int64_t *row_ids)
{
    if (shard >= engine->nr_shards || table >= engine->nr_tables || !engine->tables[table].defined ||
        dpu >= engine->nr_dpus || col_start >= col_stop || col_stop > engine->tables[table].dim || nr_rows < 0) {
        set_error(engine, "bad shard %u (table %u, DPU %u, columns [%u, %u))", shard, table, dpu, col_start, col_stop);
        return -1;
    }
    struct shard *s = &engine->shards[shard];
    free(s->row_ids);
    *s = (struct shard){
        .table = table,
        .dpu = dpu,
        .col_start = col_start,
        .col_stop = col_stop,
        .row_start = row_start,
        .nr_rows = nr_rows,
        .defined = 1,
    };
    if (row_ids) {
        s->row_ids = malloc((size_t)(nr_rows ? nr_rows : 1) * sizeof(int64_t));
        if (!s->row_ids) {
            set_error(engine, "out of host memory");
            return -1;
        }
        memcpy(s->row_ids, row_ids, (size_t)nr_rows * sizeof(int64_t));
    }
    return 0;
}

/*
 * `bytes` of memory for random access (free() releases it): at least a huge page of it is
 * aligned to huge pages and advised to use them, where the kernel has transparent huge
 * pages, before any page is touched. Host-cached rows are read at random: with 4 KB pages
 * nearly every row needs its own TLB walk.
 */
static void *alloc_random_access(size_t bytes)
{
#ifdef MADV_HUGEPAGE
    if (bytes >= EB_HUGE_PAGE_BYTES) {
        void *memory = NULL;
        const size_t rounded = (bytes + EB_HUGE_PAGE_BYTES - 1u) / EB_HUGE_PAGE_BYTES * EB_HUGE_PAGE_BYTES;
        if (posix_memalign(&memory, EB_HUGE_PAGE_BYTES, rounded) != 0) {
            return NULL;
        }
        (void)madvise(memory, rounded, MADV_HUGEPAGE); /* advice: without it, 4 KB pages */
        return memory;
    }
#endif
    return malloc(bytes ? bytes : 1);
}

static void *copy_array(const void *source, size_t bytes)
{
    void *copy = malloc(bytes ? bytes : 1);
    if (copy && bytes) {
        memcpy(copy, source, bytes);
    }
    return copy;
}

int eb_engine_set_host_rows(eb_engine *engine, uint32_t table, int64_t nr_rows, const int64_t *row_ids,
                            const void *rows)
{
    if (table >= engine->nr_tables || !engine->tables[table].defined || nr_rows < 0) {
        set_error(engine, "bad host-cache rows for table %u", table);
        return -1;
    }
    struct table *t = &engine->tables[table];
    for (int64_t k = 0; k < nr_rows; k++) {
        if (row_ids[k] < 0 || row_ids[k] >= t->nr_rows || (k > 0 && row_ids[k] <= row_ids[k - 1])) {
            set_error(engine, "table %u: host-cached row ids must be increasing and inside [0, %lld)", table,
                      (long long)t->nr_rows);
            return -1;
        }
    }
    free(t->host_rows);
    free(t->host_row_ids);
    /* No values (rows NULL) is for a dry engine (eb_engine_load checks): zeros, written so
     * that summing them touches memory as real rows would. */
    size_t bytes = (size_t)nr_rows * t->dim * eb_element_bytes(t->format);
    t->host_rows = alloc_random_access(bytes);
    if (t->host_rows && bytes) {
        if (rows) {
            memcpy(t->host_rows, rows, bytes);
        } else {
            memset(t->host_rows, 0, bytes);
        }
    }
    t->host_rows_zeroed = rows == NULL;
    t->host_row_ids = copy_array(row_ids, (size_t)nr_rows * sizeof(int64_t));
    t->nr_host_rows = nr_rows;
    if (!t->host_rows || !t->host_row_ids) {
        set_error(engine, "out of host memory");
        return -1;
    }
    return 0;
}
/* ---- queries and teardown --------------------------------------------------- */

const char *eb_engine_error(const eb_engine *engine)
{
    return engine->error;
}

const struct eb_failure *eb_engine_failure(const eb_engine *engine)
{
    return &engine->failure;
}

const uint32_t *eb_engine_failed_dpus(const eb_engine *engine)
{
    return engine->failed_dpus;
}

const struct eb_failure *eb_engine_slot_failure(const eb_engine *engine, uint32_t slot)
{
    return slot < EB_NR_SLOTS ? &engine->slots[slot].failure : NULL;
}

const uint32_t *eb_engine_slot_failed_dpus(const eb_engine *engine, uint32_t slot)
{
    return slot < EB_NR_SLOTS ? engine->slots[slot].failed_dpus : NULL;
}

const struct eb_run_stats *eb_engine_stats(const eb_engine *engine)
{
    return &engine->stats;
}

const int64_t *eb_engine_dpu_stat(const eb_engine *engine, int which)
{
    return which >= 0 && which < EB_NR_DPU_STATS ? engine->dpu_stats[which] : NULL;
}

const char *eb_engine_slot_error(const eb_engine *engine, uint32_t slot)
{
    return slot < EB_NR_SLOTS ? engine->slots[slot].error : "no such slot";
}

const struct eb_run_stats *eb_engine_slot_stats(const eb_engine *engine, uint32_t slot)
{
    return slot < EB_NR_SLOTS ? &engine->slots[slot].stats : NULL;
}

const int64_t *eb_engine_slot_dpu_stat(const eb_engine *engine, uint32_t slot, int which)
{
    if (slot >= EB_NR_SLOTS || which < 0 || which >= EB_NR_DPU_STATS) {
        return NULL;
    }
    return engine->slots[slot].dpu_stats[which];
}

uint32_t eb_engine_nr_dpus(const eb_engine *engine)
{
    return engine->nr_dpus;
}

uint32_t eb_engine_nr_ranks(const eb_engine *engine)
{
    return engine->nr_ranks;
}

uint64_t eb_engine_static_bytes(const eb_engine *engine)
{
    return engine->batch_offset;
}

uint64_t eb_engine_routing_bytes(const eb_engine *engine)
{
    uint64_t bytes = 0;
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        bytes += engine->slices[k].routing_bytes;
    }
    return bytes;
}

/* Slices that copy an earlier slice's routing instead of routing (link_followers). */
uint32_t eb_engine_nr_followers(const eb_engine *engine)
{
    uint32_t count = 0;
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        count += engine->slices[k].leader != EB_NO_LEADER;
    }
    return count;
}

/* DPUs that send another DPU's inputs instead of being routed and packed (link_mirrors). */
uint32_t eb_engine_nr_mirrors(const eb_engine *engine)
{
    uint32_t count = 0;
    for (uint32_t d = 0; engine->loaded && d < engine->nr_dpus; d++) {
        count += engine->dpus[d].mirror != EB_NO_MIRROR;
    }
    return count;
}

/* Routing and merging use up to this many threads (EB_MAX_ROUTE_PARTS at most) on big batches. */
void eb_engine_set_host_threads(eb_engine *engine, uint32_t threads)
{
    engine->worker_threads = threads ? threads : 1;
}

void eb_engine_destroy(eb_engine *engine)
{
    if (!engine) {
        return;
    }
    if (engine->allocated) {
        dpu_free(engine->set);
    }
    free(engine->failed_dpus);
    free(engine->kernel_path);
    for (uint32_t t = 0; t < engine->nr_tables && engine->tables; t++) {
        free(engine->tables[t].host_rows);
        free(engine->tables[t].host_row_ids);
    }
    for (uint32_t s = 0; s < engine->nr_shards && engine->shards; s++) {
        free(engine->shards[s].row_ids);
    }
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        struct slice *slice = &engine->slices[k];
        free(slice->lanes);
        free(slice->cursors);
        free(slice->marks);
        free(slice->limits);
        free(slice->weights);
        free(slice->touched);
        free(slice->chunk_ends);
        free_routing(slice);
    }
    if (engine->dpus) {
        for (uint32_t d = 0; d < engine->nr_dpus; d++) {
            free(engine->dpus[d].shard_list); /* its batch buffers live in the slots */
        }
    }
    for (uint32_t k = 0; k < EB_NR_SLOTS; k++) {
        free_slot(&engine->slots[k], engine->nr_dpus, engine->nr_slices);
    }
    for (int s = 0; s < EB_NR_DPU_STATS; s++) {
        free(engine->dpu_stats[s]);
    }
    free(engine->slices);
    free(engine->tables);
    free(engine->shards);
    free(engine->dpus);
    free(engine->ranks);
    free(engine);
}
