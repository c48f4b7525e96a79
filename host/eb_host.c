/*
 * Host runtime of the embedding-bag kernel, written against the UPMEM SDK's
 * <dpu.h>: it builds unchanged against the real SDK (hardware or functional
 * simulator) and against the updlrm emulator's libdpu.
 *
 * Per batch: route every lookup to (DPU, shard, local row) or the host cache,
 * pack per-DPU inputs, push them per rank, launch, sum host-cached rows while
 * the DPUs run, pull partial sums per rank and add them into the output. See
 * host/README.md for the data layout and the summation order.
 */
#define _POSIX_C_SOURCE 200809L

#include "eb_host.h"

#include <dpu.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "embedding_bag_abi.h"

/* Local rows follow the header directly, so routing writes them in place. */
#define EB_INDEX_START ((uint32_t)sizeof(struct eb_batch_header))

/* Static data is pushed in slices of this many bytes per DPU, bounding the
 * staging memory to 64 x this per rank. */
#define EB_LOAD_CHUNK_BYTES (1u << 20)

/* Every per-DPU count of a launch fits the ABI's uint32 fields with room to
 * spare below this, and int8 partials stay exact (see the ABI header). */
#define EB_MAX_LOOKUPS_PER_LAUNCH EB_MAX_LOOKUPS_PER_INT8_PARTIAL

enum { EB_POOLING_SUM = 0, EB_POOLING_MEAN = 1 };
enum { RUN_OK = 0, RUN_ERROR = -1, RUN_SPLIT = 1 };

struct table {
    int64_t nr_rows;
    uint32_t dim;
    uint32_t format;
    double scale;
    uint32_t out_col;
    uint32_t scratch_col;
    uint32_t first_slice;
    uint32_t nr_slices;
    int64_t nr_host_rows;
    int64_t *host_row_ids; /* sorted; a row's position is its host-cache slot */
    uint8_t *host_rows;
    int defined;
    uint64_t max_abs; /* largest |q| of an integer table's rows, measured at load (exactness bound) */
    char name[64];    /* for messages; "t<index>" unless eb_engine_name_table named it */
};

struct shard {
    uint32_t table;
    uint32_t dpu;
    uint32_t local;
    uint32_t col_start;
    uint32_t col_stop;
    uint32_t out_col;
    int64_t row_start;
    int64_t nr_rows;
    int64_t *row_ids;
    uint32_t rows_offset;
    int defined;
};

/*
 * One shard of a column slice while the slice is routed (a "lane" of the slice).
 * The plan puts at most one shard of a slice on a DPU, so a lane owns its DPU's
 * buffers for the pass: local rows are written straight to their final place in
 * the DPU's input buffer, segments to its segment arrays. The per-lookup state
 * (cursors) lives in dense per-lane arrays of the slice.
 */
struct lane {
    struct dpu_state *state; /* the DPU's buffers, or the slice's host-cache buffers */
    uint32_t *locals;        /* the DPU's local rows, right after its batch header */
    struct eb_segment *segments;
    uint32_t *segment_bags;
    uint32_t nr_segments;
    uint32_t local_shard; /* the shard's index on its DPU */
    uint32_t capacity;    /* lookups the DPU's buffers hold */
    uint32_t shard;
    uint32_t dpu; /* EB_HOST_LANE for the host cache */
};

/* The lane of a slice's host-cached rows: its "local rows" are host-cache slots. */
#define EB_HOST_LANE UINT32_MAX

/* Bags whose ends are remembered before their segments are written (scan mode). */
#define EB_SCAN_CHUNK 64u

enum route_kind {
    ROUTE_RANGES = 0,     /* contiguous row blocks tiling the table, plus an exception table */
    ROUTE_EXPLICIT32 = 1, /* a 4-byte entry per row: lane << local_bits | local row */
    ROUTE_EXPLICIT64 = 2, /* the same in 8 bytes, when lane and local do not fit 32 bits */
};

/* Lane codes past the slice's last lane in explicit entries; the low bits of a
 * replicated row's entry hold its replica group. */
enum { CODE_REPLICATED = 0, CODE_NONE = 1, NR_CODES = 2 };

enum exception_kind { EXCEPTION_REPLICATED = 0, EXCEPTION_HOST = 1 };

/* A row of a range-routed slice that is not served by its block's shard. */
struct exception {
    int64_t row; /* -1: empty hash cell */
    uint32_t kind;
    uint32_t index; /* replica group or host-cache slot */
};

struct replica {
    uint32_t lane;
    uint32_t local;
};

struct dpu_state;
struct eb_slot;

struct slice {
    uint32_t table;
    uint32_t col_start;
    uint32_t col_stop;
    enum route_kind kind;
    uint32_t nr_lanes; /* the DPU lanes, then the host lane if the table has host-cached rows */
    uint32_t nr_dpu_lanes;
    struct lane *lanes;    /* ranges slices: the blocks in row order first */
    uint32_t **cursors;    /* per lane: where the DPU's next local row goes */
    uint32_t **marks;      /* per lane: the cursor when the current bag (scan: chunk) started */
    uint32_t **weights;    /* per lane: the DPU's weight array (weighted batches) */
    uint32_t *touched;     /* lanes hit by the current bag, nr_lanes + 1 entries */
    uint32_t **chunk_ends; /* scan: every lane's cursor at the end of each bag of the chunk */
    uint32_t chunk_bags[EB_SCAN_CHUNK];

    uint32_t nr_ranges;    /* range k is lane k */
    int64_t *range_starts; /* nr_ranges + 1, the last is the table's row count */
    uint32_t bucket_shift;
    int single_step; /* every bucket is shorter than every range: one step at most */
    uint32_t *buckets;
    uint64_t *exception_bits;     /* one bit per row; NULL when the slice has no exception */
    struct exception *exceptions; /* open addressing, linear probing */
    uint64_t exception_mask;      /* hash cells - 1 */
    uint32_t exception_hash_shift;

    void *entries;
    uint32_t local_bits;

    uint32_t nr_groups;
    uint32_t *group_first;
    uint32_t *group_count;
    struct replica *replicas;
    uint64_t routing_bytes;
};


struct dpu_state {
    uint32_t rank;
    uint32_t nr_shards;
    uint32_t *shard_list;
    uint32_t *partial_bytes; /* per local shard, of this slot's batch (depends on weighting) */
    uint64_t static_bytes;

    uint8_t *input;
    size_t input_capacity;
    uint32_t nr_lookups;
    uint32_t *weights;
    size_t weights_capacity;
    /* Segments as the DPU reads them, and the bag of each for the merge. */
    struct eb_segment *segments;
    uint32_t *segment_bags;
    uint32_t nr_segments;
    size_t segments_capacity;

    uint32_t input_bytes;
    uint32_t output_bytes;
    uint8_t *output;
    size_t output_capacity;
    /* Tasklet k writes one partial sum per segment of [tasklet_first[k], tasklet_end[k]). */
    uint32_t tasklet_first[EB_MAX_TASKLETS];
    uint32_t tasklet_end[EB_MAX_TASKLETS];
    uint32_t nr_partials;
    uint32_t uniform_partial_bytes; /* partial bytes shared by all its shards, else 0 */
    uint32_t last_slice;            /* after routing this slice the DPU's inputs are complete */
    int finished;                   /* inputs laid out for this launch */
    /* Partials in the order the kernel wrote them: segment and byte offset in `output`. */
    uint32_t *partial_segments;
    size_t partial_order_capacity;
    uint32_t *partial_offsets;
    size_t partial_offsets_capacity;
};

/* Positions [first, end) of one DPU's partials, whose bags never decrease. */
struct merge_run {
    const struct dpu_state *dpu;
    uint32_t first;
    uint32_t end;
};

struct rank {
    struct dpu_set_t set;
    uint32_t first_dpu;
    uint32_t nr_dpus;
};

enum slot_state {
    SLOT_FREE = 0,
    SLOT_BUSY = 1,      /* a stage call is working on it */
    SLOT_PREPARED = 2,  /* routed and packed */
    SLOT_LAUNCHED = 3,  /* pushed, running on the DPUs */
    SLOT_COLLECTED = 4, /* partial sums pulled (a split batch: also merged) */
};

/*
 * Everything one batch in flight owns, from its route+pack to its merge: every DPU's
 * input and output buffers, the host-cache lanes, the rank transfer sizes, the integer
 * scratch, the merge indexes, its stats and its error text. The stages of different
 * slots run concurrently; each stage function moves its slot from one state to the next.
 */
struct eb_slot {
    eb_engine *engine;
    atomic_int state;              /* enum slot_state */
    int ready;                     /* buffers below allocated (on first use) */
    struct dpu_state *dpus;        /* per DPU: this batch's buffers (shard lists borrowed from the engine) */
    struct dpu_state *host_states; /* per slice: its host-cache lane */
    uint32_t *max_input;           /* per rank: the padded transfer sizes of the current launch */
    uint32_t *max_output;

    /* the batch (the caller keeps these arrays alive until eb_engine_finish) */
    const int64_t *indices;
    const int64_t *offsets;
    const float *per_sample_weights;
    uint32_t batch;
    int pooling;
    float *output;
    int weighted;
    int split; /* too big for one launch: eb_engine_launch runs it in parts, route to merge */

    int64_t *scratch;
    size_t scratch_capacity;
    struct merge_run *merge_runs;
    size_t merge_runs_capacity;
    uint32_t nr_merge_runs;
    uint32_t *merge_positions;
    size_t merge_positions_capacity;

    double launched_at;
    struct eb_run_stats stats;
    int64_t *dpu_stats[EB_NR_DPU_STATS];
    char error[1024];
    struct eb_failure failure; /* what its failure was (eb_host.h) */
    uint32_t *failed_dpus;     /* the DPUs it names */
};

struct eb_engine {
    struct dpu_set_t set;
    int allocated;
    uint32_t nr_dpus;
    uint32_t nr_ranks;
    uint32_t nr_tasklets;
    uint64_t mram_bytes;
    struct rank *ranks;
    struct dpu_state *dpus;

    uint32_t nr_tables;
    struct table *tables;
    uint32_t nr_shards;
    struct shard *shards;
    uint32_t nr_slices;
    uint32_t slices_capacity;
    struct slice *slices;

    uint32_t total_dim;
    uint32_t int_dim;
    uint32_t batch_offset;
    uint64_t heap_address; /* MRAM address of DPU_MRAM_HEAP_POINTER (0 if unknown) */
    int loaded;
    atomic_int route_busy; /* a batch is being routed and packed (the slices' routing scratch) */
    atomic_int dpu_busy;   /* a batch is on the DPUs: from its push until its outputs are pulled */
    struct eb_slot slots[EB_NR_SLOTS];

    long worker_threads; /* host threads for routing and merging (two at most are used) */

    uint32_t *slice_group; /* routing group of each slice, built on first use */
    uint32_t nr_route_groups;
    uint32_t *slice_thread;
    size_t slice_thread_capacity;
    uint64_t *group_work;
    size_t group_work_capacity;
    uint32_t *group_thread;
    size_t group_thread_capacity;

    struct eb_run_stats stats; /* of the last eb_engine_run (copied from its slot) */
    int64_t *dpu_stats[EB_NR_DPU_STATS];
    char error[1024];
    struct eb_failure failure; /* what the last failure was (eb_host.h) */
    uint32_t *failed_dpus;     /* the DPUs it names */
    char *kernel_path;         /* reloaded after a fault */
    int broken;                /* a reload after a fault failed: no more launches */
};

/* Routing threads may fail at the same time; the batch is then routed again alone. */
static pthread_mutex_t error_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_error(eb_engine *engine, const char *format, ...)
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
static void slot_error(struct eb_slot *slot, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void slot_error(struct eb_slot *slot, const char *format, ...)
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
static const char *dpu_detail(dpu_error_t status)
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
static dpu_error_t write_config(eb_engine *engine)
{
    struct eb_config config = {.abi_version = EB_ABI_VERSION, .batch_offset = engine->batch_offset};
    return dpu_broadcast_to(engine->set, "eb_config", 0, &config, sizeof(config), DPU_XFER_DEFAULT);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Grow *array to hold at least `needed` elements; capacities double so that
 * appends cost amortised O(1). */
static int reserve(void **array, size_t *capacity, size_t needed, size_t element_size)
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
    *array = bigger;
    *capacity = grown;
    return 0;
}

static const char *status_text(uint32_t code)
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
    t->host_rows = copy_array(rows, (size_t)nr_rows * t->dim * eb_element_bytes(t->format));
    t->host_row_ids = copy_array(row_ids, (size_t)nr_rows * sizeof(int64_t));
    t->nr_host_rows = nr_rows;
    if (!t->host_rows || !t->host_row_ids) {
        set_error(engine, "out of host memory");
        return -1;
    }
    return 0;
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

/* ---- routing tables ------------------------------------------------------------- */

/* Fibonacci hashing (Knuth, TAOCP vol. 3, 6.4): multiplicative, spreads consecutive rows. */
static inline uint64_t exception_cell(const struct slice *slice, int64_t row)
{
    return ((uint64_t)row * 0x9e3779b97f4a7c15ull) >> slice->exception_hash_shift;
}

static inline const struct exception *find_exception(const struct slice *slice, int64_t row)
{
    uint64_t cell = exception_cell(slice, row);
    while (slice->exceptions[cell].row != row) {
        cell = (cell + 1) & slice->exception_mask;
    }
    return &slice->exceptions[cell];
}

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
 * sum, the host's int64 merge scratch - holds, after every single addition, a sum over a
 * subset of that bag's terms q * w (w = 1 unweighted, the Q16 weight otherwise). Each is
 * therefore at most max|q| of the table x the sum over the bag of |w| in magnitude,
 * whatever the order of the additions or the split into partials. A batch runs only if
 * that bound fits int64 for every bag of every integer table (checked before routing);
 * the int32 partials of unweighted int8 rows hold at most EB_MAX_LOOKUPS_PER_LAUNCH
 * lookups, 128 x 2^23 = 2^30 < 2^31. The output conversion takes the exact int64 sum.
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
 * or whose weights for integer rows do not fit Q16; nothing has been routed yet.
 * Returns EB_RUN_INEXACT, EB_RUN_FAILED (bad weight) or 0.
 */
static int check_integer_sums(struct eb_slot *slot, const int64_t *offsets, uint32_t batch, const float *weights)
{
    const eb_engine *engine = slot->engine;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        if (table->format == EB_FORMAT_FP32) {
            continue;
        }
        /* Largest sum of |w| (Q16 units when weighted) a bag may have. */
        uint64_t limit = table->max_abs ? EB_INT64_LIMIT / table->max_abs : UINT64_MAX;
        const char *format = table->format == EB_FORMAT_INT32 ? "int32" : "int8";
        for (uint32_t b = 0; b < batch; b++) {
            int64_t first = offsets[(int64_t)t * batch + b], end = offsets[(int64_t)t * batch + b + 1];
            uint64_t total = 0;
            if (!weights) {
                total = (uint64_t)(end - first);
            } else {
                /* Sufficient and cheap (vectorised): lookups x Q16(max |w|) within the limit.
                 * NaN weights compare false here and are refused by the routing. */
                float peak = 0;
                for (int64_t k = first; k < end; k++) {
                    float magnitude = fabsf(weights[k]);
                    peak = magnitude > peak ? magnitude : peak;
                }
                double peak_q = nearbyint((double)peak * (double)EB_WEIGHT_Q16_ONE);
                if (peak_q <= 2147483647.0 &&
                    (uint64_t)peak_q <= limit / (uint64_t)(end - first > 0 ? end - first : 1)) {
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
        }
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

    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        engine->dpus[d].last_slice = UINT32_MAX;
    }
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        for (uint32_t i = 0; i < engine->slices[k].nr_dpu_lanes; i++) {
            engine->dpus[engine->slices[k].lanes[i].dpu].last_slice = k;
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
    engine->batch_offset = (uint32_t)EB_PAD8(largest);
    if ((uint64_t)engine->batch_offset + EB_INDEX_START + 8 + EB_STATUS_BYTES > engine->mram_bytes) {
        set_error(engine, "no MRAM left for batch inputs after the rows (%u bytes used)", engine->batch_offset);
        return -1;
    }

    for (uint32_t t = 0; t < engine->nr_tables; t++) {
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
    if (scan && !slice->chunk_ends) {
        slice->chunk_ends = malloc((size_t)EB_SCAN_CHUNK * (slice->nr_lanes + 1) * sizeof(uint32_t *));
        if (!slice->chunk_ends) {
            slot_error(slot, "out of host memory");
            return -1;
        }
        slice->routing_bytes += (uint64_t)EB_SCAN_CHUNK * (slice->nr_lanes + 1) * sizeof(uint32_t *);
    }
    for (uint32_t i = 0; i < slice->nr_lanes; i++) {
        struct lane *lane = &slice->lanes[i];
        struct dpu_state *dpu =
            lane->dpu == EB_HOST_LANE ? &slot->host_states[slice - engine->slices] : &slot->dpus[lane->dpu];
        lane->state = dpu;
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
        slice->weights[i] = dpu->weights;
    }
    return 0;
}

static void close_lanes(const struct slice *slice)
{
    for (uint32_t i = 0; i < slice->nr_lanes; i++) {
        struct dpu_state *dpu = slice->lanes[i].state;
        dpu->nr_lookups = (uint32_t)(slice->cursors[i] - slice->lanes[i].locals);
        dpu->nr_segments = slice->lanes[i].nr_segments;
    }
}

/*
 * Make every lane able to take `bag_lookups` more lookups (a bag adds at most its
 * length to any DPU) and return in *headroom how many lookups every lane can take
 * now, so the per-lookup loop needs no capacity check. Lanes close to full get room
 * for half as many lookups again, so this runs rarely. RUN_SPLIT when a DPU would
 * exceed the lookups of one launch.
 */
static __attribute__((noinline)) int make_room(struct eb_slot *slot, struct slice *slice, uint64_t bag_lookups,
                                               int weighted, uint64_t *headroom)
{
    uint64_t least = UINT64_MAX;
    for (uint32_t i = 0; i < slice->nr_lanes; i++) {
        struct lane *lane = &slice->lanes[i];
        uint64_t used = (uint64_t)(slice->cursors[i] - lane->locals);
        /* The host lane is not a DPU, but its counts are uint32 too. */
        uint64_t limit = lane->dpu == EB_HOST_LANE ? UINT32_MAX / 2 : EB_MAX_LOOKUPS_PER_LAUNCH;
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
            slice->weights[i] = dpu->weights;
        }
        least = lane->capacity - used < least ? lane->capacity - used : least;
    }
    *headroom = least;
    return RUN_OK;
}

/*
 * Scan mode: turn the remembered bag ends of a chunk into segments, lane by lane
 * (one segment per bag that reached the lane's DPU). Branchless: each record is
 * written and kept only when it counts lookups.
 */
static void flush_chunk(struct slice *slice, uint32_t nr_bags)
{
    const uint32_t nr_lanes = slice->nr_lanes;
    for (uint32_t i = 0; i < nr_lanes; i++) {
        struct lane *lane = &slice->lanes[i];
        struct eb_segment *segments = lane->segments;
        uint32_t *segment_bags = lane->segment_bags;
        const uint32_t local_shard = lane->local_shard;
        uint32_t nr_segments = lane->nr_segments;
        const uint32_t *previous = slice->marks[i];
        for (uint32_t c = 0; c < nr_bags; c++) {
            const uint32_t *end = slice->chunk_ends[(size_t)c * nr_lanes + i];
            uint32_t count = (uint32_t)(end - previous);
            /* One 8-byte store: eb_segment is {shard, nr_lookups}, little endian on every host we build for. */
            uint64_t record = (uint64_t)count << 32 | local_shard;
            memcpy(&segments[nr_segments], &record, sizeof(record));
            segment_bags[nr_segments] = slice->chunk_bags[c];
            nr_segments += count != 0;
            previous = end;
        }
        lane->nr_segments = nr_segments;
        slice->marks[i] = (uint32_t *)previous;
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

/* How far ahead (bytes) a lane's local rows and segments are prefetched for writing
 * when a bag ends: the buffers are cold after a launch (the kernel's data evicts
 * them), and without this the stores stall on their cache misses (bench_engine
 * route+pack 1.92 -> 1.75 ms for local rows, -> 1.7 ms with segments too). */
#define EB_WRITE_PREFETCH_BYTES 256

static inline __attribute__((always_inline)) void prefetch_for_write(const void *cursor)
{
    /* An integer detour: the address may lie past the buffer, which is harmless for
     * a prefetch but not a valid pointer operation. */
    __builtin_prefetch((const void *)((uintptr_t)cursor + EB_WRITE_PREFETCH_BYTES), 1);
}

/* How far ahead (lookups) explicit entries are prefetched: at a few nanoseconds per
 * lookup this covers a DRAM miss; 64..128 measured best on bench_engine's explicit
 * plans (2.3-2.4 ms against 3.1 ms at 16 and 3.7 ms without). */
#define EB_PREFETCH_DISTANCE 128

/*
 * Route bags [b0, b1) of one column slice, bag by bag: each lookup's local row goes
 * straight to its DPU's input buffer; every DPU a bag reached gets one segment for
 * it. With few lanes (`scan`), a bag's end only copies the lanes' cursors, and
 * segments are written per chunk of bags; with many, the loop lists the lanes a bag
 * touches. `kind`, `single_step`, `exceptions`, `weighted` and `scan` are constants
 * at every call site, so each combination is its own loop.
 */
static inline __attribute__((always_inline)) int
route_slice(struct eb_slot *slot, struct slice *slice, const int64_t *indices, const int64_t *offsets,
            const float *per_sample_weights, uint32_t batch, uint32_t b0, uint32_t b1, const enum route_kind kind,
            const int single_step, const int exceptions, const int weighted, const int scan)
{
    const eb_engine *engine = slot->engine;
    const struct table *table = &engine->tables[slice->table];
    const uint64_t nr_rows = (uint64_t)table->nr_rows;
    const int integer_rows = table->format != EB_FORMAT_FP32;
    const int64_t *bag_offsets = offsets + (int64_t)slice->table * batch;
    uint32_t **const cursors = slice->cursors;
    uint32_t **const marks = slice->marks;
    uint32_t *const touched = slice->touched;
    const uint32_t nr_lanes = slice->nr_lanes;
    const int64_t *const starts = slice->range_starts;
    const uint32_t *const buckets = slice->buckets;
    const uint32_t shift = slice->bucket_shift;
    const uint64_t *const exception_bits = slice->exception_bits;
    const uint32_t local_bits = slice->local_bits;
    const uint64_t local_mask = (1ull << local_bits) - 1;
    const int64_t last_lookup = bag_offsets[b1] - 1;
    if (open_lanes(slot, slice, b1 - b0, scan)) {
        return RUN_ERROR;
    }
    uint32_t **const chunk_ends = slice->chunk_ends;
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
        headroom -= (uint64_t)(end - begin);
        uint32_t nr_touched = 0;
        for (int64_t j = begin; j < end; j++) {
            const int64_t row = indices[j];
            if ((uint64_t)row >= nr_rows) {
                slot_error(slot, "table %u: indices[%lld] = %lld is outside [0, %lld)", slice->table, (long long)j,
                           (long long)row, (long long)table->nr_rows);
                return RUN_ERROR;
            }
            uint64_t lane;
            uint32_t local;
            if (kind == ROUTE_RANGES) {
                lane = buckets[(uint64_t)row >> shift];
                if (single_step) {
                    lane += row >= starts[lane + 1];
                } else {
                    while (row >= starts[lane + 1]) {
                        lane++;
                    }
                }
                local = (uint32_t)(row - starts[lane]);
                if (exceptions && (exception_bits[(uint64_t)row >> 6] >> ((uint64_t)row & 63) & 1)) {
                    const struct exception *exception = find_exception(slice, row);
                    if (exception->kind == EXCEPTION_HOST) {
                        lane = slice->nr_dpu_lanes;
                        local = exception->index;
                    } else {
                        /* Replica by bag: deterministic, and consecutive bags spread over all
                         * replicas (updlrm.partitioner.routing). */
                        uint32_t group = exception->index;
                        const struct replica *replica =
                            &slice->replicas[slice->group_first[group] + b % slice->group_count[group]];
                        lane = replica->lane;
                        local = replica->local;
                    }
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
                    const struct replica *replica =
                        &slice->replicas[slice->group_first[local] + b % slice->group_count[local]];
                    lane = replica->lane;
                    local = replica->local;
                }
            }
            uint32_t *const cursor = cursors[lane];
            if (!scan) {
                /* Listed once per bag without a branch: the entry is kept only when this
                 * is the lane's first lookup of the bag. */
                touched[nr_touched] = (uint32_t)lane;
                nr_touched += cursor == marks[lane];
            }
            *cursor = local;
            if (weighted) {
                uint32_t weight_bits;
                if (integer_rows) {
                    if (quantise_weight(slot, per_sample_weights[j], j, &weight_bits)) {
                        return RUN_ERROR;
                    }
                } else {
                    memcpy(&weight_bits, &per_sample_weights[j], sizeof(weight_bits));
                }
                slice->weights[lane][cursor - slice->lanes[lane].locals] = weight_bits;
            }
            cursors[lane] = cursor + 1;
        }
        if (scan) {
            uint32_t **ends = chunk_ends + (size_t)nr_chunk_bags * nr_lanes;
            for (uint32_t i = 0; i < nr_lanes; i++) {
                ends[i] = cursors[i];
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

#define EB_ROUTE_VARIANT(name, kind, single_step, exceptions, weighted, scan)                                          \
    static int name(struct eb_slot *slot, struct slice *slice, const int64_t *indices, const int64_t *offsets,         \
                    const float *per_sample_weights, uint32_t batch, uint32_t b0, uint32_t b1)                         \
    {                                                                                                                  \
        return route_slice(slot, slice, indices, offsets, per_sample_weights, batch, b0, b1, kind, single_step,        \
                           exceptions, weighted, scan);                                                                \
    }

/* Names: step/search = range lookup, x = exceptions, w = weighted, s = scan. */
EB_ROUTE_VARIANT(route_step, ROUTE_RANGES, 1, 0, 0, 0)
EB_ROUTE_VARIANT(route_step_s, ROUTE_RANGES, 1, 0, 0, 1)
EB_ROUTE_VARIANT(route_step_w, ROUTE_RANGES, 1, 0, 1, 0)
EB_ROUTE_VARIANT(route_step_ws, ROUTE_RANGES, 1, 0, 1, 1)
EB_ROUTE_VARIANT(route_step_x, ROUTE_RANGES, 1, 1, 0, 0)
EB_ROUTE_VARIANT(route_step_xs, ROUTE_RANGES, 1, 1, 0, 1)
EB_ROUTE_VARIANT(route_step_xw, ROUTE_RANGES, 1, 1, 1, 0)
EB_ROUTE_VARIANT(route_step_xws, ROUTE_RANGES, 1, 1, 1, 1)
EB_ROUTE_VARIANT(route_search, ROUTE_RANGES, 0, 0, 0, 0)
EB_ROUTE_VARIANT(route_search_s, ROUTE_RANGES, 0, 0, 0, 1)
EB_ROUTE_VARIANT(route_search_w, ROUTE_RANGES, 0, 0, 1, 0)
EB_ROUTE_VARIANT(route_search_ws, ROUTE_RANGES, 0, 0, 1, 1)
EB_ROUTE_VARIANT(route_search_x, ROUTE_RANGES, 0, 1, 0, 0)
EB_ROUTE_VARIANT(route_search_xs, ROUTE_RANGES, 0, 1, 0, 1)
EB_ROUTE_VARIANT(route_search_xw, ROUTE_RANGES, 0, 1, 1, 0)
EB_ROUTE_VARIANT(route_search_xws, ROUTE_RANGES, 0, 1, 1, 1)
EB_ROUTE_VARIANT(route_explicit32, ROUTE_EXPLICIT32, 0, 0, 0, 0)
EB_ROUTE_VARIANT(route_explicit32_s, ROUTE_EXPLICIT32, 0, 0, 0, 1)
EB_ROUTE_VARIANT(route_explicit32_w, ROUTE_EXPLICIT32, 0, 0, 1, 0)
EB_ROUTE_VARIANT(route_explicit32_ws, ROUTE_EXPLICIT32, 0, 0, 1, 1)
EB_ROUTE_VARIANT(route_explicit64, ROUTE_EXPLICIT64, 0, 0, 0, 0)
EB_ROUTE_VARIANT(route_explicit64_s, ROUTE_EXPLICIT64, 0, 0, 0, 1)
EB_ROUTE_VARIANT(route_explicit64_w, ROUTE_EXPLICIT64, 0, 0, 1, 0)
EB_ROUTE_VARIANT(route_explicit64_ws, ROUTE_EXPLICIT64, 0, 0, 1, 1)

/*
 * Scan mode costs a cursor copy per lane and bag plus a branchless segment append
 * per lane and bag later; listing touched lanes costs about three instructions per
 * lookup plus an append per touched lane (callgrind). Scanning wins while the lanes
 * are not many more than a bag's lookups.
 */
static int scan_lanes(const struct slice *slice, const int64_t *offsets, uint32_t batch, uint32_t b0, uint32_t b1)
{
    const int64_t *bag_offsets = offsets + (int64_t)slice->table * batch;
    uint64_t mean_length = (uint64_t)(bag_offsets[b1] - bag_offsets[b0]) / (b1 - b0);
    return (uint64_t)slice->nr_lanes <= 2 * mean_length + 1;
}

static route_function pick_route(const struct slice *slice, int weighted, int scan)
{
    static const route_function ranges[2][2][2][2] = {
        {{{route_search, route_search_s}, {route_search_w, route_search_ws}},
         {{route_search_x, route_search_xs}, {route_search_xw, route_search_xws}}},
        {{{route_step, route_step_s}, {route_step_w, route_step_ws}},
         {{route_step_x, route_step_xs}, {route_step_xw, route_step_xws}}},
    };
    static const route_function explicit32[2][2] = {{route_explicit32, route_explicit32_s},
                                                    {route_explicit32_w, route_explicit32_ws}};
    static const route_function explicit64[2][2] = {{route_explicit64, route_explicit64_s},
                                                    {route_explicit64_w, route_explicit64_ws}};
    switch (slice->kind) {
    case ROUTE_RANGES:
        return ranges[slice->single_step != 0][slice->exception_bits != NULL][weighted != 0][scan != 0];
    case ROUTE_EXPLICIT32:
        return explicit32[weighted != 0][scan != 0];
    default:
        return explicit64[weighted != 0][scan != 0];
    }
}

static int finish_dpu(struct eb_slot *slot, struct dpu_state *dpu);

/*
 * Slices that reach a common DPU form one routing group (union-find over DPUs, groups
 * numbered by first slice): a DPU's buffers are then written by one thread only, and in
 * slice order as in a sequential run, so the inputs do not depend on the thread count.
 */
static int group_slices(eb_engine *engine)
{
    uint32_t *parent = malloc((size_t)engine->nr_dpus * sizeof(uint32_t));
    uint32_t *group_of_root = malloc((size_t)engine->nr_dpus * sizeof(uint32_t));
    engine->slice_group = calloc(engine->nr_slices ? engine->nr_slices : 1, sizeof(uint32_t));
    if (!parent || !group_of_root || !engine->slice_group) {
        free(parent);
        free(group_of_root);
        free(engine->slice_group);
        engine->slice_group = NULL;
        return -1;
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        parent[d] = d;
        group_of_root[d] = UINT32_MAX;
    }
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        const struct slice *slice = &engine->slices[k];
        for (uint32_t i = 1; i < slice->nr_dpu_lanes; i++) {
            uint32_t a = slice->lanes[0].dpu, b = slice->lanes[i].dpu;
            while (parent[a] != a) {
                a = parent[a] = parent[parent[a]];
            }
            while (parent[b] != b) {
                b = parent[b] = parent[parent[b]];
            }
            parent[a > b ? a : b] = a < b ? a : b;
        }
    }
    engine->nr_route_groups = 0;
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        const struct slice *slice = &engine->slices[k];
        if (slice->nr_dpu_lanes == 0) {
            engine->slice_group[k] = engine->nr_route_groups++; /* host-cached only */
            continue;
        }
        uint32_t root = slice->lanes[0].dpu;
        while (parent[root] != root) {
            root = parent[root];
        }
        if (group_of_root[root] == UINT32_MAX) {
            group_of_root[root] = engine->nr_route_groups++;
        }
        engine->slice_group[k] = group_of_root[root];
    }
    free(parent);
    free(group_of_root);
    return 0;
}

struct route_job {
    struct eb_slot *slot;
    const int64_t *indices;
    const int64_t *offsets;
    const float *per_sample_weights;
    uint32_t batch;
    uint32_t b0;
    uint32_t b1;
    uint32_t thread; /* routes the slices assigned to this thread; UINT32_MAX: every slice */
    int result;
};

static void *route_slices(void *argument)
{
    struct route_job *job = argument;
    struct eb_slot *slot = job->slot;
    eb_engine *engine = slot->engine;
    int weighted = job->per_sample_weights != NULL;
    job->result = RUN_OK;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        for (uint32_t k = table->first_slice; k < table->first_slice + table->nr_slices; k++) {
            if (job->thread != UINT32_MAX && engine->slice_thread[k] != job->thread) {
                continue;
            }
            struct slice *slice = &engine->slices[k];
            int scan = scan_lanes(slice, job->offsets, job->batch, job->b0, job->b1);
            int rc = pick_route(slice, weighted, scan)(slot, slice, job->indices, job->offsets, job->per_sample_weights,
                                                       job->batch, job->b0, job->b1);
            for (uint32_t i = 0; rc == RUN_OK && i < slice->nr_dpu_lanes; i++) {
                struct dpu_state *dpu = &slot->dpus[slice->lanes[i].dpu];
                rc = dpu->last_slice == k ? finish_dpu(slot, dpu) : RUN_OK;
            }
            if (rc != RUN_OK) {
                job->result = rc;
                return NULL;
            }
        }
    }
    return NULL;
}

/* Below this many lookups a second routing thread costs more than it saves. */
#define EB_PARALLEL_ROUTE_LOOKUPS (1u << 16)

/*
 * Assigns the routing groups to two threads: in group order, a group goes to the first
 * thread while the middle of its work (the batch's lookups of its slices' tables) lies
 * in the first half of the total. False when one thread should route the batch.
 */
static int assign_route_threads(eb_engine *engine, const int64_t *offsets, uint32_t batch, uint32_t b0, uint32_t b1)
{
    if (engine->worker_threads < 2 || engine->nr_slices < 2) {
        return 0;
    }
    if (!engine->slice_group && group_slices(engine)) {
        return 0;
    }
    if (engine->nr_route_groups < 2 ||
        reserve((void **)&engine->slice_thread, &engine->slice_thread_capacity, engine->nr_slices, sizeof(uint32_t)) ||
        reserve((void **)&engine->group_work, &engine->group_work_capacity, engine->nr_route_groups,
                sizeof(uint64_t)) ||
        reserve((void **)&engine->group_thread, &engine->group_thread_capacity, engine->nr_route_groups,
                sizeof(uint32_t))) {
        return 0;
    }
    memset(engine->group_work, 0, engine->nr_route_groups * sizeof(uint64_t));
    uint64_t total = 0;
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        uint32_t t = engine->slices[k].table;
        uint64_t work = (uint64_t)(offsets[(size_t)t * batch + b1] - offsets[(size_t)t * batch + b0]);
        engine->group_work[engine->slice_group[k]] += work;
        total += work;
    }
    if (total < EB_PARALLEL_ROUTE_LOOKUPS) {
        return 0;
    }
    uint64_t before = 0;
    uint32_t first_thread_groups = 0;
    for (uint32_t g = 0; g < engine->nr_route_groups; g++) {
        engine->group_thread[g] = 2 * before + engine->group_work[g] < total ? 0u : 1u;
        first_thread_groups += engine->group_thread[g] == 0u;
        before += engine->group_work[g];
    }
    if (first_thread_groups == 0 || first_thread_groups == engine->nr_route_groups) {
        return 0;
    }
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        engine->slice_thread[k] = engine->group_thread[engine->slice_group[k]];
    }
    return 1;
}

static __attribute__((noinline)) int route_bags(struct eb_slot *slot, uint32_t b0, uint32_t b1, int parallel)
{
    eb_engine *engine = slot->engine;
    const int64_t *indices = slot->indices, *offsets = slot->offsets;
    const float *per_sample_weights = slot->per_sample_weights;
    const uint32_t batch = slot->batch;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        dpu->nr_lookups = 0;
        dpu->nr_segments = 0;
        dpu->finished = 0;
        if (reserve((void **)&dpu->input, &dpu->input_capacity, EB_INDEX_START + 8, 1)) {
            slot_error(slot, "out of host memory");
            return RUN_ERROR;
        }
    }
    for (uint32_t k = 0; k < engine->nr_slices; k++) {
        struct dpu_state *host = &slot->host_states[k];
        if (engine->slices[k].nr_lanes > engine->slices[k].nr_dpu_lanes) {
            host->nr_lookups = 0;
            host->nr_segments = 0;
            if (reserve((void **)&host->input, &host->input_capacity, EB_INDEX_START + 8, 1)) {
                slot_error(slot, "out of host memory");
                return RUN_ERROR;
            }
        }
    }
    struct route_job jobs[2] = {
        {slot, indices, offsets, per_sample_weights, batch, b0, b1, UINT32_MAX, RUN_OK},
        {slot, indices, offsets, per_sample_weights, batch, b0, b1, 1u, RUN_OK},
    };
    pthread_t helper;
    if (parallel && assign_route_threads(engine, offsets, batch, b0, b1) &&
        pthread_create(&helper, NULL, route_slices, &jobs[1]) == 0) {
        jobs[0].thread = 0;
        route_slices(&jobs[0]);
        pthread_join(helper, NULL);
        if (jobs[0].result == RUN_ERROR || jobs[1].result == RUN_ERROR) {
            /* Route again alone, so the error reported is the first one in table order. */
            return route_bags(slot, b0, b1, 0);
        }
        return jobs[0].result == RUN_SPLIT || jobs[1].result == RUN_SPLIT ? RUN_SPLIT : RUN_OK;
    }
    route_slices(&jobs[0]);
    return jobs[0].result;
}

/* ---- one batch: packing ----------------------------------------------------- */

/*
 * Finish one DPU's inputs once no later slice adds to it: cut its lookups into
 * nr_tasklets equal ranges (each tasklet writes one partial sum per segment of its
 * range), size its transfers and lay out header, local rows (already in place),
 * weights and segments. Done right after the DPU's last slice while its segments are
 * still in cache. RUN_SPLIT when its inputs and outputs do not fit the MRAM left after
 * the rows, so the caller retries with fewer bags. The header's output offset waits
 * for the rank's largest input (pack_inputs).
 */
static int finish_dpu(struct eb_slot *slot, struct dpu_state *dpu)
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
        .flags = slot->weighted ? EB_FLAG_WEIGHTED : 0u,
        .nr_segments = dpu->nr_segments,
        .nr_lookups = dpu->nr_lookups,
        .segments_offset = engine->batch_offset + cursor,
        .indices_offset = engine->batch_offset + EB_INDEX_START,
        .weights_offset = engine->batch_offset + weights_at,
    };
    dpu->finished = 1;
    return RUN_OK;
}

/* Finish the DPUs no slice reached or whose last slice came earlier, and size each
 * rank's transfers (padded to its largest DPU). */
static __attribute__((noinline)) int plan_transfers(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    uint32_t *max_input = slot->max_input, *max_output = slot->max_output;
    for (uint32_t r = 0; r < engine->nr_ranks; r++) {
        max_input[r] = 0;
        max_output[r] = 0;
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        if (!dpu->finished) {
            int rc = finish_dpu(slot, dpu);
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

/* Every buffer of a rank is read up to the rank's largest input; outputs follow it. */
static __attribute__((noinline)) int pack_inputs(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        if (reserve((void **)&dpu->input, &dpu->input_capacity, slot->max_input[dpu->rank], 1) ||
            reserve((void **)&dpu->output, &dpu->output_capacity, slot->max_output[dpu->rank], 1)) {
            slot_error(slot, "out of host memory");
            return -1;
        }
        ((struct eb_batch_header *)dpu->input)->fields.output_offset =
            engine->batch_offset + slot->max_input[dpu->rank];
    }
    return 0;
}

/* ---- one batch: transfers, launch, merge ------------------------------------ */

static int push_inputs(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    for (uint32_t r = 0; r < engine->nr_ranks; r++) {
        struct rank *rank = &engine->ranks[r];
        struct dpu_set_t dpu;
        uint32_t i;
        DPU_FOREACH(rank->set, dpu, i)
        {
            dpu_prepare_xfer(dpu, slot->dpus[rank->first_dpu + i].input);
        }
        dpu_error_t status = dpu_push_xfer(rank->set, DPU_XFER_TO_DPU, DPU_MRAM_HEAP_POINTER_NAME, engine->batch_offset,
                                           slot->max_input[r], DPU_XFER_DEFAULT);
        if (status != DPU_OK) {
            slot_error(slot, "pushing batch inputs to rank %u failed: %s", r, dpu_detail(status));
            return -1;
        }
    }
    return 0;
}

static int pull_outputs(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    for (uint32_t r = 0; r < engine->nr_ranks; r++) {
        struct rank *rank = &engine->ranks[r];
        struct dpu_set_t dpu;
        uint32_t i;
        DPU_FOREACH(rank->set, dpu, i)
        {
            dpu_prepare_xfer(dpu, slot->dpus[rank->first_dpu + i].output);
        }
        dpu_error_t status =
            dpu_push_xfer(rank->set, DPU_XFER_FROM_DPU, DPU_MRAM_HEAP_POINTER_NAME,
                          engine->batch_offset + slot->max_input[r], slot->max_output[r], DPU_XFER_DEFAULT);
        if (status != DPU_OK) {
            slot_error(slot, "pulling partial sums from rank %u failed: %s", r, dpu_detail(status));
            return -1;
        }
    }
    return 0;
}

/*
 * Host-cached rows: fp32 into the output, integers into the int64 scratch. The host
 * lane of each table's first slice lists the slots in lookup order with one segment
 * per bag, and the weights (fp32 bits or Q16) like a DPU's.
 */
static void sum_host_hits(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    const int weighted = slot->weighted;
    float *output = slot->output;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        if (table->nr_host_rows == 0) {
            continue;
        }
        const struct dpu_state *host = &slot->host_states[table->first_slice];
        const uint32_t *slots = (const uint32_t *)(host->input + EB_INDEX_START);
        const uint32_t dim = table->dim;
        uint32_t position = 0;
        for (uint32_t s = 0; s < host->nr_segments; s++) {
            const uint32_t bag = host->segment_bags[s];
            const uint32_t end = position + host->segments[s].nr_lookups;
            if (table->format == EB_FORMAT_FP32) {
                float *out = output + (size_t)bag * engine->total_dim + table->out_col;
                for (; position < end; position++) {
                    const float *row = (const float *)table->host_rows + (size_t)slots[position] * dim;
                    if (weighted) {
                        float weight;
                        memcpy(&weight, &host->weights[position], sizeof(weight));
                        for (uint32_t c = 0; c < dim; c++) {
                            out[c] += weight * row[c];
                        }
                    } else {
                        for (uint32_t c = 0; c < dim; c++) {
                            out[c] += row[c];
                        }
                    }
                }
                continue;
            }
            int64_t *out = slot->scratch + (size_t)bag * engine->int_dim + table->scratch_col;
            for (; position < end; position++) {
                int64_t weight = 1;
                if (weighted) {
                    int32_t q16;
                    memcpy(&q16, &host->weights[position], sizeof(q16));
                    weight = q16;
                }
                if (table->format == EB_FORMAT_INT32) {
                    const int32_t *row = (const int32_t *)table->host_rows + (size_t)slots[position] * dim;
                    for (uint32_t c = 0; c < dim; c++) {
                        out[c] += (int64_t)row[c] * weight;
                    }
                } else {
                    const int8_t *row = (const int8_t *)table->host_rows + (size_t)slots[position] * dim;
                    for (uint32_t c = 0; c < dim; c++) {
                        out[c] += (int64_t)row[c] * weight;
                    }
                }
            }
        }
        slot->stats.host_cache_hits += host->nr_lookups;
        slot->stats.host_cache_bytes += (int64_t)host->nr_lookups * dim * eb_element_bytes(table->format);
    }
}

/* Adds the partial of `segment` (a DPU segment) into its bag's output row or integer scratch row. */
static inline void add_partial(const struct eb_slot *slot, const struct dpu_state *dpu, uint32_t segment,
                               const uint8_t *partial_bytes, float *output)
{
    const eb_engine *engine = slot->engine;
    const struct shard *shard = &engine->shards[dpu->shard_list[dpu->segments[segment].shard]];
    const struct table *table = &engine->tables[shard->table];
    const uint32_t bag = dpu->segment_bags[segment];
    const uint32_t dim = shard->col_stop - shard->col_start;
    if (table->format == EB_FORMAT_FP32) {
        float *restrict out = output + (size_t)bag * engine->total_dim + shard->out_col;
        /* Partials start 8-byte aligned in a malloc'ed buffer: float access is aligned. */
        const float *restrict partial = (const float *)partial_bytes;
        for (uint32_t c = 0; c < dim; c++) {
            out[c] += partial[c];
        }
        return;
    }
    int64_t *restrict out = slot->scratch + (size_t)bag * engine->int_dim + table->scratch_col + shard->col_start;
    if (eb_accumulator_bytes(table->format, (uint32_t)slot->weighted) == 4u) {
        const int32_t *restrict partial = (const int32_t *)partial_bytes;
        for (uint32_t c = 0; c < dim; c++) {
            out[c] += partial[c];
        }
    } else {
        const int64_t *restrict partial = (const int64_t *)partial_bytes;
        for (uint32_t c = 0; c < dim; c++) {
            out[c] += partial[c];
        }
    }
}

/*
 * Checks every DPU's status, then lists its partials in the order the kernel wrote them
 * (tasklet by tasklet) and cuts that list into runs whose bags never decrease: one run per
 * slice routed to the DPU, since routing visits the bags in order slice by slice.
 */
static int index_partials(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    slot->nr_merge_runs = 0;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        struct eb_status status;
        memcpy(&status, dpu->output, sizeof(status));
        uint64_t cycles = ((uint64_t)status.cycles_high << 32) | status.cycles_low;
        if (status.magic != EB_STATUS_MAGIC) {
            slot_error(slot, "DPU %u did not report a status (the kernel did not run to its end)", d);
            return -1;
        }
        if (status.code != EB_OK) {
            slot_error(slot, "DPU %u: %s (code %u, detail %u)", d, status_text(status.code), status.code,
                       status.detail);
            return -1;
        }
        slot->dpu_stats[EB_STAT_CYCLES][d] += (int64_t)cycles;
        if (reserve((void **)&dpu->partial_segments, &dpu->partial_order_capacity, dpu->nr_partials,
                    sizeof(uint32_t)) ||
            reserve((void **)&dpu->partial_offsets, &dpu->partial_offsets_capacity, dpu->nr_partials,
                    sizeof(uint32_t))) {
            slot_error(slot, "out of memory indexing the partial sums of DPU %u", d);
            return -1;
        }
        uint32_t position = 0;
        uint32_t offset = EB_STATUS_BYTES;
        uint32_t previous_bag = 0;
        for (uint32_t k = 0; k < engine->nr_tasklets; k++) {
            for (uint32_t segment = dpu->tasklet_first[k]; segment < dpu->tasklet_end[k]; segment++) {
                uint32_t bag = dpu->segment_bags[segment];
                if (position == 0 || bag < previous_bag) {
                    if (reserve((void **)&slot->merge_runs, &slot->merge_runs_capacity, slot->nr_merge_runs + 1u,
                                sizeof(struct merge_run))) {
                        slot_error(slot, "out of memory indexing the partial sums");
                        return -1;
                    }
                    slot->merge_runs[slot->nr_merge_runs++] = (struct merge_run){dpu, position, position};
                }
                slot->merge_runs[slot->nr_merge_runs - 1u].end = position + 1u;
                previous_bag = bag;
                dpu->partial_segments[position] = segment;
                dpu->partial_offsets[position] = offset;
                offset += dpu->partial_bytes[dpu->segments[segment].shard];
                position++;
            }
        }
    }
    return 0;
}

/* First position of `run` whose bag is >= `bag` (runs are sorted by bag). */
static uint32_t run_lower_bound(const struct merge_run *run, uint32_t bag)
{
    uint32_t low = run->first, high = run->end;
    while (low < high) {
        uint32_t middle = low + (high - low) / 2u;
        if (run->dpu->segment_bags[run->dpu->partial_segments[middle]] < bag) {
            low = middle + 1u;
        } else {
            high = middle;
        }
    }
    return low;
}

/* Output rows of this many bytes per block stay in the core's cache while every run passes. */
#define EB_MERGE_BLOCK_BYTES (128u << 10)

struct merge_job {
    const struct eb_slot *slot;
    float *output;
    uint32_t bag_start;
    uint32_t bag_stop;
    uint32_t *positions; /* one per run */
};

/*
 * Merges bags [bag_start, bag_stop) block by block. A bag's partials are added DPU by DPU
 * and, within a DPU, in the order its tasklets wrote them (host/README.md, summation order).
 */
static void *merge_bags(void *argument)
{
    const struct merge_job *job = argument;
    const struct eb_slot *slot = job->slot;
    const eb_engine *engine = slot->engine;
    uint32_t row_bytes = engine->total_dim * 4u + engine->int_dim * 8u;
    uint32_t block = row_bytes ? EB_MERGE_BLOCK_BYTES / row_bytes : 1u;
    block = block ? block : 1u;
    for (uint32_t r = 0; r < slot->nr_merge_runs; r++) {
        job->positions[r] = run_lower_bound(&slot->merge_runs[r], job->bag_start);
    }
    for (uint32_t block_start = job->bag_start; block_start < job->bag_stop; block_start += block) {
        uint32_t block_stop = job->bag_stop - block_start < block ? job->bag_stop : block_start + block;
        for (uint32_t r = 0; r < slot->nr_merge_runs; r++) {
            const struct merge_run *run = &slot->merge_runs[r];
            const struct dpu_state *dpu = run->dpu;
            uint32_t position = job->positions[r];
            for (; position < run->end; position++) {
                uint32_t segment = dpu->partial_segments[position];
                if (dpu->segment_bags[segment] >= block_stop) {
                    break;
                }
                add_partial(slot, dpu, segment, dpu->output + dpu->partial_offsets[position], job->output);
            }
            job->positions[r] = position;
        }
    }
    return NULL;
}

/* Below this many partial bytes a second merge thread costs more than it saves. */
#define EB_PARALLEL_MERGE_BYTES (1u << 20)

static int merge_partials(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    const eb_engine *engine = slot->engine;
    float *output = slot->output;
    if (index_partials(slot)) {
        return -1;
    }
    if (reserve((void **)&slot->merge_positions, &slot->merge_positions_capacity, 2u * slot->nr_merge_runs + 1u,
                sizeof(uint32_t))) {
        slot_error(slot, "out of memory merging the partial sums");
        return -1;
    }
    uint64_t partial_bytes = 0;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        partial_bytes += slot->dpus[d].output_bytes;
    }
    uint32_t middle = b0 + (b1 - b0) / 2u;
    struct merge_job jobs[2] = {
        {slot, output, b0, middle, slot->merge_positions},
        {slot, output, middle, b1, slot->merge_positions + slot->nr_merge_runs},
    };
    pthread_t helper;
    /* Bags split in two halves: every output row belongs to one thread, so no locking. */
    int parallel = engine->worker_threads > 1 && partial_bytes >= EB_PARALLEL_MERGE_BYTES && b1 - b0 > 1u &&
                   pthread_create(&helper, NULL, merge_bags, &jobs[1]) == 0;
    if (!parallel) {
        jobs[0].bag_stop = b1;
    }
    merge_bags(&jobs[0]);
    if (parallel) {
        pthread_join(helper, NULL);
    }
    return 0;
}

static void record_launch_stats(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    int64_t **dpu_stats = slot->dpu_stats;
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        const struct dpu_state *dpu = &slot->dpus[d];
        dpu_stats[EB_STAT_LOOKUPS][d] += dpu->nr_lookups;
        dpu_stats[EB_STAT_SEGMENTS][d] += dpu->nr_segments;
        dpu_stats[EB_STAT_PARTIALS][d] += dpu->nr_partials;
        int64_t merged = 0;
        for (uint32_t k = 0; k < engine->nr_tasklets; k++) {
            for (uint32_t s = dpu->tasklet_first[k]; s < dpu->tasklet_end[k]; s++) {
                const struct shard *shard = &engine->shards[dpu->shard_list[dpu->segments[s].shard]];
                merged += shard->col_stop - shard->col_start;
            }
        }
        dpu_stats[EB_STAT_MERGE_ELEMS][d] += merged;
        dpu_stats[EB_STAT_BYTES_TO_DPU][d] += dpu->input_bytes;
        dpu_stats[EB_STAT_BYTES_FROM_DPU][d] += dpu->output_bytes;
        dpu_stats[EB_STAT_PADDED_TO_DPU][d] += slot->max_input[dpu->rank];
        dpu_stats[EB_STAT_PADDED_FROM_DPU][d] += slot->max_output[dpu->rank];
        int64_t elements = 0;
        int64_t row_bytes = 0;
        for (uint32_t s = 0; s < dpu->nr_segments; s++) {
            const struct shard *shard = &engine->shards[dpu->shard_list[dpu->segments[s].shard]];
            uint32_t dim = shard->col_stop - shard->col_start;
            elements += (int64_t)dpu->segments[s].nr_lookups * dim;
            row_bytes += (int64_t)dpu->segments[s].nr_lookups * eb_row_bytes(engine->tables[shard->table].format, dim);
        }
        dpu_stats[EB_STAT_REDUCE_ELEMS][d] += elements;
        dpu_stats[EB_STAT_ROW_BYTES][d] += row_bytes;
    }
}

/* Appends ", d" for the first DPUs of a list, then the count of the others. */
static size_t append_dpus(char *out, size_t size, const uint32_t *dpus, uint32_t count)
{
    size_t used = 0;
    for (uint32_t k = 0; k < count && used < size; k++) {
        if (k == 8 && count > 9) {
            used += (size_t)snprintf(out + used, size - used, " and %u more", count - k);
            break;
        }
        used += (size_t)snprintf(out + used, size - used, "%s%u", k ? ", " : "", dpus[k]);
    }
    return used;
}

/*
 * A launch failed. Names the DPUs in fault (on the emulator also the tasklet and the
 * cause: a DMA rule, a crash of the worker process, a timeout), then reloads the kernel
 * on every DPU: after a fault the WRAM of a DPU may hold a barrier mid-round, and a load
 * resets WRAM but leaves MRAM (the tables) alone, as on hardware. The batch inputs are
 * pushed again by the next run, so the next batch is right.
 */
static void launch_failed(struct eb_slot *slot, dpu_error_t status)
{
    eb_engine *engine = slot->engine;
    int timeout = status == DPU_ERR_TIMEOUT;
    char cause[256];
    snprintf(cause, sizeof(cause), "%.255s", dpu_detail(status));
    uint32_t nr_listed = 0, not_started = 0;
    int32_t first_tasklet = -1;
    struct dpu_set_t dpu;
    uint32_t d;
    DPU_FOREACH(engine->set, dpu, d)
    {
        bool done = false, fault = false;
        if (dpu_status(dpu, &done, &fault) != DPU_OK || !fault) {
            continue;
        }
        int32_t tasklet = -1;
#ifdef UPDLRM_EMULATOR
        uint32_t index = 0;
        char message[256] = "";
        if (updlrm_emu_fault_info(dpu, &index, &tasklet, message, sizeof(message)) == DPU_OK && timeout &&
            tasklet < 0) {
            not_started++; /* queued behind a DPU that hung: it never ran */
            continue;
        }
        if (nr_listed == 0 && message[0]) {
            snprintf(cause, sizeof(cause), "%s", message);
        }
#endif
        if (nr_listed == 0) {
            first_tasklet = tasklet;
        }
        slot->failed_dpus[nr_listed++] = d;
    }

    char where[64] = "";
    if (nr_listed) {
        snprintf(where, sizeof(where), first_tasklet >= 0 ? "DPU %u tasklet %d" : "DPU %u", slot->failed_dpus[0],
                 first_tasklet);
    }
    char list[160] = "";
    append_dpus(list, sizeof(list), slot->failed_dpus, nr_listed);
    char others[96] = "";
    if (not_started) {
        snprintf(others, sizeof(others), "; %u DPU(s) queued behind did not run", not_started);
    }

    struct dpu_program_t *program = NULL;
    dpu_error_t reload = dpu_load(engine->set, engine->kernel_path, &program);
    if (reload == DPU_OK) {
        reload = write_config(engine);
    }
    char recovery[320];
    if (reload == DPU_OK) {
        snprintf(recovery, sizeof(recovery), "kernel reloaded, tables kept");
    } else {
        snprintf(recovery, sizeof(recovery), "reloading the kernel failed too (%.240s): close this engine",
                 dpu_detail(reload));
    }

    if (timeout) {
        char all[200] = "";
        if (nr_listed > 1) {
            snprintf(all, sizeof(all), " (DPUs still running: %s)", list);
        }
        slot_error(slot, "the launch timed out with %s still running%s: %s%s; %s", nr_listed ? where : "no DPU", all,
                   cause, others, recovery);
    } else if (nr_listed > 1) {
        slot_error(slot, "%s faulted: %s (DPUs in fault: %s); %s", where, cause, list, recovery);
    } else if (nr_listed == 1) {
        slot_error(slot, "%s faulted: %s; %s", where, cause, recovery);
    } else {
        slot_error(slot, "the kernel launch failed: %s; %s", cause, recovery);
    }
    slot->failure.kind = timeout ? EB_FAILURE_TIMEOUT : EB_FAILURE_DPU_FAULT;
    slot->failure.dpu = nr_listed ? (int32_t)slot->failed_dpus[0] : -1;
    slot->failure.tasklet = first_tasklet;
    slot->failure.nr_dpus = nr_listed;
    engine->broken = reload != DPU_OK;
    slot->failure.recovered = reload == DPU_OK;
    snprintf(slot->failure.cause, sizeof(slot->failure.cause), "%s", cause);
}

/* Pushes a packed launch, starts the DPUs and, while they run, sums the host-cached rows. */
static int launch_packed(struct eb_slot *slot)
{
    eb_engine *engine = slot->engine;
    double start = now_s();
    if (push_inputs(slot)) {
        return -1;
    }
    double pushed = now_s();
    slot->stats.push_s += pushed - start;

    if (engine->broken) {
        slot_error(slot, "the engine could not recover from an earlier DPU failure; close it and create a new one");
        return -1;
    }
    dpu_error_t status = dpu_launch(engine->set, DPU_ASYNCHRONOUS);
    if (status != DPU_OK) {
        launch_failed(slot, status);
        return -1;
    }
    slot->launched_at = pushed;
    double cache_start = now_s();
    sum_host_hits(slot);
    slot->stats.host_cache_s += now_s() - cache_start;
    return 0;
}

/* Waits for the DPUs and pulls their partial sums; the DPUs are free afterwards. */
static int collect_launched(struct eb_slot *slot)
{
    eb_engine *engine = slot->engine;
    dpu_error_t status = dpu_sync(engine->set);
    if (status != DPU_OK) {
        launch_failed(slot, status);
        return -1;
    }
    double launched = now_s();
    slot->stats.launch_s += launched - slot->launched_at;

    if (pull_outputs(slot)) {
        return -1;
    }
    slot->stats.pull_s += now_s() - launched;
    record_launch_stats(slot);
    slot->stats.nr_launches++;
    return 0;
}

static int merge_launch(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    double start = now_s();
    if (merge_partials(slot, b0, b1)) {
        return -1;
    }
    slot->stats.merge_s += now_s() - start;
    return 0;
}

static int split_error(struct eb_slot *slot, uint32_t bag)
{
    const eb_engine *engine = slot->engine;
    slot_error(slot,
               "bag %u alone needs more MRAM on some DPU than is left after the rows (%llu bytes) "
               "or more than %u lookups on one DPU; spread its tables over more DPUs",
               bag, (unsigned long long)(engine->mram_bytes - engine->batch_offset), EB_MAX_LOOKUPS_PER_LAUNCH);
    return -1;
}

/* Routes and packs bags [b0, b1) for one launch: RUN_OK, RUN_SPLIT (too big) or RUN_ERROR. */
static int route_launch(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    double start = now_s();
    int plan = route_bags(slot, b0, b1, 1);
    if (plan == RUN_OK) {
        plan = plan_transfers(slot);
    }
    if (plan == RUN_OK && pack_inputs(slot)) {
        plan = RUN_ERROR;
    }
    slot->stats.route_s += now_s() - start;
    return plan;
}

/*
 * Bags [b0, b1) of a batch too big for one launch, one launch after the other: routed,
 * run and merged, in halves until they fit (each half in bag order, so the summation
 * order of every bag is that of one launch).
 */
static int run_bags(struct eb_slot *slot, uint32_t b0, uint32_t b1)
{
    int plan = route_launch(slot, b0, b1);
    if (plan == RUN_ERROR) {
        return -1;
    }
    if (plan == RUN_SPLIT) {
        if (b1 - b0 == 1) {
            return split_error(slot, b0);
        }
        uint32_t middle = b0 + (b1 - b0) / 2;
        return run_bags(slot, b0, middle) || run_bags(slot, middle, b1) ? -1 : 0;
    }
    if (launch_packed(slot) || collect_launched(slot)) {
        return -1;
    }
    return merge_launch(slot, b0, b1);
}

/* Scale integer sums, divide means: the last step of the merge. */
static void finish_output(struct eb_slot *slot)
{
    const eb_engine *engine = slot->engine;
    const int64_t *offsets = slot->offsets;
    const uint32_t batch = slot->batch;
    float *output = slot->output;
    for (uint32_t t = 0; t < engine->nr_tables; t++) {
        const struct table *table = &engine->tables[t];
        uint32_t dim = table->dim;
        double factor = slot->weighted ? table->scale / (double)EB_WEIGHT_Q16_ONE : table->scale;
        for (uint32_t b = 0; b < batch; b++) {
            int64_t count = offsets[(int64_t)t * batch + b + 1] - offsets[(int64_t)t * batch + b];
            float *out = output + (size_t)b * engine->total_dim + table->out_col;
            if (table->format == EB_FORMAT_FP32) {
                if (slot->pooling == EB_POOLING_MEAN && count > 0) {
                    float divisor = (float)count;
                    for (uint32_t c = 0; c < dim; c++) {
                        out[c] /= divisor;
                    }
                }
                continue;
            }
            const int64_t *sum = slot->scratch + (size_t)b * engine->int_dim + table->scratch_col;
            double divisor = slot->pooling == EB_POOLING_MEAN && count > 0 ? (double)count : 1.0;
            for (uint32_t c = 0; c < dim; c++) {
                out[c] = (float)((double)sum[c] * factor / divisor);
            }
        }
    }
}

/* ---- one batch: stages over a slot ------------------------------------------- */

/* A slot's buffers, made on its first batch (the engine is loaded: shards and slices are final). */
static int ready_slot(struct eb_slot *slot)
{
    eb_engine *engine = slot->engine;
    if (slot->ready) {
        return 0;
    }
    slot->dpus = calloc(engine->nr_dpus, sizeof(struct dpu_state));
    slot->host_states = calloc(engine->nr_slices ? engine->nr_slices : 1, sizeof(struct dpu_state));
    slot->max_input = calloc(engine->nr_ranks, sizeof(uint32_t));
    slot->max_output = calloc(engine->nr_ranks, sizeof(uint32_t));
    slot->failed_dpus = calloc(engine->nr_dpus, sizeof(uint32_t));
    int failed = !slot->dpus || !slot->host_states || !slot->max_input || !slot->max_output || !slot->failed_dpus;
    for (int s = 0; s < EB_NR_DPU_STATS && !failed; s++) {
        slot->dpu_stats[s] = calloc(engine->nr_dpus, sizeof(int64_t));
        failed = !slot->dpu_stats[s];
    }
    for (uint32_t d = 0; d < engine->nr_dpus && !failed; d++) {
        const struct dpu_state *model = &engine->dpus[d];
        struct dpu_state *dpu = &slot->dpus[d];
        dpu->rank = model->rank;
        dpu->nr_shards = model->nr_shards;
        dpu->shard_list = model->shard_list; /* borrowed */
        dpu->static_bytes = model->static_bytes;
        dpu->last_slice = model->last_slice;
        dpu->partial_bytes = malloc((dpu->nr_shards + 1) * sizeof(uint32_t));
        failed = !dpu->partial_bytes;
    }
    if (failed) {
        slot_error(slot, "out of host memory");
        return -1;
    }
    slot->ready = 1;
    return 0;
}

static void free_slot(struct eb_slot *slot, uint32_t nr_dpus, uint32_t nr_slices)
{
    for (uint32_t d = 0; slot->dpus && d < nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        free(dpu->partial_bytes);
        free(dpu->input);
        free(dpu->weights);
        free(dpu->segments);
        free(dpu->segment_bags);
        free(dpu->output);
        free(dpu->partial_segments);
        free(dpu->partial_offsets);
    }
    for (uint32_t k = 0; slot->host_states && k < nr_slices; k++) {
        free(slot->host_states[k].input);
        free(slot->host_states[k].weights);
        free(slot->host_states[k].segments);
        free(slot->host_states[k].segment_bags);
    }
    for (int s = 0; s < EB_NR_DPU_STATS; s++) {
        free(slot->dpu_stats[s]);
    }
    free(slot->dpus);
    free(slot->host_states);
    free(slot->max_input);
    free(slot->max_output);
    free(slot->failed_dpus);
    free(slot->scratch);
    free(slot->merge_runs);
    free(slot->merge_positions);
}

/* Validate, refuse inexact integer sums, zero the output and route+pack the batch. */
static int prepare_slot(struct eb_slot *slot, const int64_t *indices, int64_t nr_indices, const int64_t *offsets,
                        int64_t nr_offsets, const float *per_sample_weights, int pooling, float *output)
{
    eb_engine *engine = slot->engine;
    double start = now_s();
    memset(&slot->stats, 0, sizeof(slot->stats));
    slot->split = 0;
    slot->batch = 0;
    if (!engine->loaded) {
        slot_error(slot, "tables are not loaded");
        return -1;
    }
    if (ready_slot(slot)) {
        return -1;
    }
    for (int s = 0; s < EB_NR_DPU_STATS; s++) {
        memset(slot->dpu_stats[s], 0, engine->nr_dpus * sizeof(int64_t));
    }
    if (pooling != EB_POOLING_SUM && pooling != EB_POOLING_MEAN) {
        slot_error(slot, "pooling mode %d is not supported (SUM=0, MEAN=1)", pooling);
        return -1;
    }
    if (nr_offsets < 1 || (nr_offsets - 1) % engine->nr_tables != 0) {
        slot_error(slot, "offsets has %lld entries; expected T*B+1 with T=%u", (long long)nr_offsets,
                   engine->nr_tables);
        return -1;
    }
    int64_t batch = (nr_offsets - 1) / engine->nr_tables;
    if (batch >= UINT32_MAX || nr_indices < 0 || nr_indices >= ((int64_t)1 << 40)) {
        slot_error(slot, "batch of %lld bags or %lld indices is too large", (long long)batch, (long long)nr_indices);
        return -1;
    }
    if (offsets[0] != 0 || offsets[nr_offsets - 1] != nr_indices) {
        slot_error(slot, "offsets must start at 0 and end at len(indices) = %lld (got %lld .. %lld)",
                   (long long)nr_indices, (long long)offsets[0], (long long)offsets[nr_offsets - 1]);
        return -1;
    }
    for (int64_t k = 0; k + 1 < nr_offsets; k++) {
        if (offsets[k + 1] < offsets[k]) {
            slot_error(slot, "offsets decrease at position %lld (%lld > %lld)", (long long)k, (long long)offsets[k],
                       (long long)offsets[k + 1]);
            return -1;
        }
    }
    int refused = check_integer_sums(slot, offsets, (uint32_t)batch, per_sample_weights);
    if (refused) {
        return refused;
    }
    slot->indices = indices;
    slot->offsets = offsets;
    slot->per_sample_weights = per_sample_weights;
    slot->batch = (uint32_t)batch;
    slot->pooling = pooling;
    slot->output = output;
    slot->weighted = per_sample_weights != NULL;
    for (uint32_t s = 0; s < engine->nr_shards; s++) {
        const struct shard *shard = &engine->shards[s];
        slot->dpus[shard->dpu].partial_bytes[shard->local] = eb_partial_bytes(
            engine->tables[shard->table].format, (uint32_t)slot->weighted, shard->col_stop - shard->col_start);
    }
    for (uint32_t d = 0; d < engine->nr_dpus; d++) {
        struct dpu_state *dpu = &slot->dpus[d];
        dpu->uniform_partial_bytes = dpu->nr_shards ? dpu->partial_bytes[0] : 0;
        for (uint32_t k = 1; k < dpu->nr_shards; k++) {
            dpu->uniform_partial_bytes =
                dpu->partial_bytes[k] == dpu->partial_bytes[0] ? dpu->uniform_partial_bytes : 0;
        }
    }
    size_t scratch_elements = (size_t)batch * engine->int_dim;
    if (reserve((void **)&slot->scratch, &slot->scratch_capacity, scratch_elements ? scratch_elements : 1,
                sizeof(int64_t))) {
        slot_error(slot, "out of host memory");
        return -1;
    }
    slot->stats.route_s += now_s() - start;
    /* Zeroing the sums is the first step of the merge (the host cache adds into them
     * during the launch), so it is timed as merge. */
    double zero_start = now_s();
    memset(slot->scratch, 0, scratch_elements * sizeof(int64_t));
    if (batch > 0) {
        memset(output, 0, (size_t)batch * engine->total_dim * sizeof(float));
    }
    slot->stats.merge_s += now_s() - zero_start;
    slot->stats.nr_bags = batch;
    slot->stats.nr_lookups = nr_indices;
    if (batch == 0) {
        return 0;
    }
    int plan = route_launch(slot, 0, (uint32_t)batch);
    if (plan == RUN_ERROR) {
        return -1;
    }
    if (plan == RUN_SPLIT) {
        if (batch == 1) {
            return split_error(slot, 0);
        }
        slot->split = 1;
    }
    return 0;
}

/* A split batch runs here in halves, from routing to merging. */
static int launch_slot(struct eb_slot *slot)
{
    if (slot->batch == 0) {
        return 0;
    }
    if (slot->split) {
        uint32_t middle = slot->batch / 2;
        return run_bags(slot, 0, middle) || run_bags(slot, middle, slot->batch) ? -1 : 0;
    }
    return launch_packed(slot);
}

static int collect_slot(struct eb_slot *slot)
{
    return slot->batch == 0 || slot->split ? 0 : collect_launched(slot);
}

static int finish_slot(struct eb_slot *slot)
{
    if (slot->batch > 0 && !slot->split && merge_launch(slot, 0, slot->batch)) {
        return -1;
    }
    double start = now_s();
    finish_output(slot);
    slot->stats.merge_s += now_s() - start;
    return 0;
}

/* Moves a slot from state `from` to SLOT_BUSY; false (touching nothing) if it is elsewhere. */
static int claim_slot(eb_engine *engine, uint32_t index, int from, struct eb_slot **slot)
{
    if (index >= EB_NR_SLOTS) {
        return 0;
    }
    int expected = from;
    if (!atomic_compare_exchange_strong(&engine->slots[index].state, &expected, SLOT_BUSY)) {
        return 0;
    }
    *slot = &engine->slots[index];
    return 1;
}

int eb_engine_prepare(eb_engine *engine, uint32_t index, const int64_t *indices, int64_t nr_indices,
                      const int64_t *offsets, int64_t nr_offsets, const float *per_sample_weights, int pooling,
                      float *output)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_FREE, &slot)) {
        return EB_RUN_BAD_SLOT;
    }
    if (atomic_exchange(&engine->route_busy, 1)) {
        atomic_store(&slot->state, SLOT_FREE);
        return EB_RUN_BUSY;
    }
    int result = prepare_slot(slot, indices, nr_indices, offsets, nr_offsets, per_sample_weights, pooling, output);
    atomic_store(&engine->route_busy, 0);
    atomic_store(&slot->state, result == 0 ? SLOT_PREPARED : SLOT_FREE);
    return result;
}

int eb_engine_launch(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_PREPARED, &slot)) {
        return EB_RUN_BAD_SLOT;
    }
    if (atomic_exchange(&engine->dpu_busy, 1)) {
        atomic_store(&slot->state, SLOT_PREPARED);
        return EB_RUN_BUSY;
    }
    /* A split batch routes its parts here: it needs the routing stage too. */
    if (slot->split && atomic_exchange(&engine->route_busy, 1)) {
        atomic_store(&engine->dpu_busy, 0);
        atomic_store(&slot->state, SLOT_PREPARED);
        return EB_RUN_BUSY;
    }
    int result = launch_slot(slot);
    if (slot->split) {
        atomic_store(&engine->route_busy, 0);
    }
    int running = result == 0 && slot->batch > 0 && !slot->split;
    if (!running) {
        atomic_store(&engine->dpu_busy, 0);
    }
    atomic_store(&slot->state, result != 0 ? SLOT_FREE : running ? SLOT_LAUNCHED : SLOT_COLLECTED);
    return result;
}

int eb_engine_collect(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_LAUNCHED, &slot)) {
        /* after the launch of an empty or split batch there is nothing to wait for */
        int collected = index < EB_NR_SLOTS && atomic_load(&engine->slots[index].state) == SLOT_COLLECTED;
        return collected ? 0 : EB_RUN_BAD_SLOT;
    }
    int result = collect_slot(slot);
    atomic_store(&engine->dpu_busy, 0);
    atomic_store(&slot->state, result == 0 ? SLOT_COLLECTED : SLOT_FREE);
    return result;
}

int eb_engine_finish(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, index, SLOT_COLLECTED, &slot)) {
        return EB_RUN_BAD_SLOT;
    }
    int result = finish_slot(slot);
    atomic_store(&slot->state, SLOT_FREE);
    return result;
}

int eb_engine_discard(eb_engine *engine, uint32_t index)
{
    struct eb_slot *slot;
    if (claim_slot(engine, index, SLOT_PREPARED, &slot) || claim_slot(engine, index, SLOT_COLLECTED, &slot)) {
        atomic_store(&slot->state, SLOT_FREE);
        return 0;
    }
    if (claim_slot(engine, index, SLOT_LAUNCHED, &slot)) {
        int result = collect_slot(slot); /* the DPUs must stop before anyone pushes again */
        atomic_store(&engine->dpu_busy, 0);
        atomic_store(&slot->state, SLOT_FREE);
        return result;
    }
    return index < EB_NR_SLOTS && atomic_load(&engine->slots[index].state) == SLOT_FREE ? 0 : EB_RUN_BAD_SLOT;
}

/*
 * One batch, every stage in turn, on slot 0. It claims slot 0 and both stages first, so
 * a call while another batch holds any of them returns EB_RUN_BUSY at once and touches
 * nothing (not even the error text); the stage functions let batches overlap instead.
 */
int eb_engine_run(eb_engine *engine, const int64_t *indices, int64_t nr_indices, const int64_t *offsets,
                  int64_t nr_offsets, const float *per_sample_weights, int pooling, float *output)
{
    struct eb_slot *slot;
    if (!claim_slot(engine, 0, SLOT_FREE, &slot)) {
        return EB_RUN_BUSY;
    }
    if (atomic_exchange(&engine->route_busy, 1)) {
        atomic_store(&slot->state, SLOT_FREE);
        return EB_RUN_BUSY;
    }
    if (atomic_exchange(&engine->dpu_busy, 1)) {
        atomic_store(&engine->route_busy, 0);
        atomic_store(&slot->state, SLOT_FREE);
        return EB_RUN_BUSY;
    }
    int result = prepare_slot(slot, indices, nr_indices, offsets, nr_offsets, per_sample_weights, pooling, output);
    if (result == 0) {
        result = launch_slot(slot);
    }
    atomic_store(&engine->route_busy, 0);
    if (result == 0) {
        result = collect_slot(slot);
    }
    atomic_store(&engine->dpu_busy, 0);
    if (result == 0) {
        result = finish_slot(slot);
    }
    /* The engine-wide error and stats describe the last eb_engine_run. */
    memcpy(engine->error, slot->error, sizeof(engine->error));
    engine->failure = slot->failure;
    if (slot->ready) {
        memcpy(engine->failed_dpus, slot->failed_dpus, engine->nr_dpus * sizeof(uint32_t));
    }
    engine->stats = slot->stats;
    for (int s = 0; s < EB_NR_DPU_STATS && slot->ready; s++) {
        memcpy(engine->dpu_stats[s], slot->dpu_stats[s], engine->nr_dpus * sizeof(int64_t));
    }
    atomic_store(&slot->state, SLOT_FREE);
    return result;
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

/* Routing and merging use two threads when given two or more (and the batch is big). */
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
        free(slice->weights);
        free(slice->touched);
        free(slice->chunk_ends);
        free(slice->range_starts);
        free(slice->buckets);
        free(slice->exception_bits);
        free(slice->exceptions);
        free(slice->entries);
        free(slice->group_first);
        free(slice->group_count);
        free(slice->replicas);
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
    free(engine->slice_group);
    free(engine->slice_thread);
    free(engine->group_work);
    free(engine->group_thread);
    free(engine);
}
