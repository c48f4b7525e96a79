/*
 * Private header of the host runtime (host/eb_*.c): the engine, slot and per-DPU
 * state shared by its translation units, and the functions one unit calls in another.
 * Not part of the ABI: Python sees only eb_host.h.
 */
#ifndef EB_INTERNAL_H
#define EB_INTERNAL_H

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
    int host_rows_zeroed; /* given no values (eb_engine_set_host_rows with NULL): zeros, for a dry engine */
    int defined;
    uint64_t max_abs; /* largest |q| of an integer table's rows, measured at load (exactness bound) */
    /* Seconds its routing took per unit of routing work in the last launches (eb_parts.c;
     * 0 until measured): launches cut their parts by it. Written only while routing,
     * which one slot at a time does (route_busy), each table by one thread. */
    double route_rate;
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
    /* What this pass wrote to the lane's buffers: its lookups and segments start here. */
    uint32_t pass_first_lookup;
    uint32_t pass_first_segment;
    uint32_t pass_lookups;
    uint32_t pass_segments;
};

/* The lane of a slice's host-cached rows: its "local rows" are host-cache slots. */
#define EB_HOST_LANE UINT32_MAX

/* Bags whose ends are remembered before their segments are written (scan mode). */
#define EB_SCAN_CHUNK 64u

enum route_kind {
    ROUTE_RANGES = 0,     /* contiguous row blocks tiling the table, plus an exception table */
    ROUTE_EXPLICIT32 = 1, /* a 4-byte entry per row: lane << local_bits | local row */
    ROUTE_EXPLICIT64 = 2, /* the same in 8 bytes, when lane and local do not fit 32 bits */
    ROUTE_HOST = 3,       /* every row host-cached: the host-cache slot is the row */
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

/*
 * Holders that serve bags in turn: bag b goes to holder b mod count, holders in plan
 * order (updlrm.partitioner.routing). A block's replica set lists lanes `first` ..
 * `first + count - 1`; a replica group lists replicas[first .. first + count - 1].
 * `magic` = 2^64 / count rounded up makes b mod count two multiplications instead of a
 * division (Lemire, Kaser and Kurz, "Faster remainder by direct computation", Software:
 * Practice and Experience 49(6), 2019: exact for 32-bit b and count with a 64-bit magic).
 */
struct replica_set {
    uint64_t magic;
    uint32_t first;
    uint32_t count;
};

static inline uint64_t replica_magic(uint32_t count)
{
    return UINT64_MAX / count + 1; /* 0 for count 1: every bag gets holder 0 */
}

/* b mod set->count, by the magic. */
static inline uint32_t replica_turn(const struct replica_set *set, uint32_t b)
{
    __extension__ typedef unsigned __int128 u128;
    return (uint32_t)(((u128)(set->magic * b) * set->count) >> 64);
}

struct dpu_state;
struct eb_slot;

struct slice {
    uint32_t table;
    uint32_t col_start;
    uint32_t col_stop;
    enum route_kind kind;
    uint32_t nr_lanes; /* the DPU lanes, then the host lane if the table has host-cached rows */
    uint32_t nr_dpu_lanes;
    struct lane *lanes;    /* ranges slices: the blocks' holders first, in row order */
    uint32_t **cursors;    /* per lane: where the DPU's next local row goes */
    uint32_t **marks;      /* per lane: the cursor when the current bag (scan: chunk) started */
    uint32_t **limits;     /* per lane: the end of the room made for its lookups */
    uint32_t **weights;    /* per lane: the DPU's weight array (weighted batches) */
    uint32_t *touched;     /* lanes hit by the current bag, nr_lanes + 1 entries */
    uint32_t **chunk_ends; /* scan, per lane: its cursor when the chunk began, then at the end of each bag */
    uint32_t chunk_bags[EB_SCAN_CHUNK];

    uint32_t nr_ranges;       /* blocks: distinct row ranges of range shards, in row order */
    int64_t *range_starts;    /* nr_ranges + 1, the last is the table's row count */
    int64_t *origins;         /* per block: local row = row - origin (range_starts itself when they agree) */
    struct replica_set *sets; /* per block, its lanes; NULL when block k is lane k */
    int one_set;              /* every block has the same set: a bag's lane is that of its block rows */
    uint32_t nr_block_lanes;  /* the blocks' lanes come first; the other DPU lanes hold exceptions */
    uint32_t bucket_shift;
    int single_step; /* every bucket is shorter than every range: one step at most */
    uint32_t *buckets;
    uint64_t *exception_bits;     /* one bit per row; NULL when the slice has no exception */
    /* When every exception is host-cached: per 64 rows, their exception bits and the host
     * rows before them, side by side so that routing a lookup misses one cache line. */
    struct host_word {
        uint64_t bits;
        uint32_t rank;
        uint32_t unused;
    } *host_words;
    struct exception *exceptions; /* open addressing, linear probing */
    uint64_t exception_mask;      /* hash cells - 1 */
    uint32_t exception_hash_shift;

    void *entries;
    uint32_t local_bits;

    uint32_t nr_groups;
    struct replica_set *groups; /* a replicated row's holders: replicas[first ..] */
    struct replica *replicas;
    uint64_t routing_bytes;
    /* An earlier slice of the table whose routing is this one's (same rows on lane i,
     * same tables): a pass copies its lanes' records instead of routing again, and the
     * slice keeps no routing tables. EB_NO_LEADER: the slice routes itself. */
    uint32_t leader;
};

#define EB_NO_LEADER UINT32_MAX
#define EB_NO_MIRROR UINT32_MAX

/* The most parts (so threads) a launch's tables are routed in, and the merge's threads
 * (eb_parts.c, eb_merge.c): a part's tail per DPU is kept by every slot. */
#define EB_MAX_ROUTE_PARTS 16u


struct dpu_state {
    uint32_t rank;
    uint32_t nr_shards;
    uint32_t *shard_list;
    uint32_t *partial_bytes; /* per local shard, of this slot's batch (depends on `flags`) */
    uint32_t flags;          /* this batch's EB_FLAG_* bits in its header (the same for its mirrors) */
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
    uint8_t *output; /* its part of slot->outputs */
    /* Tasklet k writes one partial sum per segment of [tasklet_first[k], tasklet_end[k]). */
    uint32_t tasklet_first[EB_MAX_TASKLETS];
    uint32_t tasklet_end[EB_MAX_TASKLETS];
    uint32_t nr_partials;
    uint32_t uniform_partial_bytes; /* partial bytes shared by all its shards, else 0 */
    /* Per shard in its list: columns and row bytes (for the launch statistics); with one
     * value for all its shards, uniform_dim and uniform_row_bytes, else 0. */
    uint32_t *shard_dims;
    uint32_t *shard_row_bytes;
    uint32_t uniform_dim;
    uint32_t uniform_row_bytes;
    /* This launch's work (finish_dpu): elements of its partials, elements and bytes of the
     * rows it reads. */
    int64_t merge_elems;
    int64_t reduce_elems;
    int64_t read_row_bytes;
    uint32_t first_slice;           /* its first slice in routing order (UINT32_MAX: none) */
    uint32_t last_slice;            /* after routing this slice the DPU's inputs are complete */
    /* This launch's part holding its first slice: its records go straight to its own
     * buffers in that part, to its tails in later parts (eb_parts.c). */
    uint32_t home_part;
    /* A DPU whose inputs this one's equal byte for byte (link_mirrors): routing and packing
     * skip this one, its transfer sends that DPU's buffer, and the merge reads that DPU's
     * segments and partial order. EB_NO_MIRROR: its own. */
    uint32_t mirror;
    uint32_t first_run; /* its runs of partials in the slot's merge index: first_run .. + nr_runs */
    uint32_t nr_runs;
    int finished;                   /* inputs laid out for this launch */
    /* The bag of each partial, in the order the kernel wrote them. */
    uint32_t *partial_bags;
    size_t partial_bags_capacity;
};

/* Positions [first, end) of one DPU's partials, of one shard, whose bags never decrease:
 * consecutive in its output from byte `offset`, partial_bytes each. The bags are listed
 * by the DPU itself or, for a mirror, by the DPU it mirrors (same order and sizes). */
/* Where a run's partials go: fp32 sums, int32 output cells from int16, int32 or int64
 * partials, int64 scratch cells from int32 or int64 partials (int16 partials only come
 * from tables whose sums fit int32: check_integer_sums). */
enum merge_kind {
    MERGE_FP32,
    MERGE_INT32_INT16,
    MERGE_INT32_INT32,
    MERGE_INT32_INT64,
    MERGE_INT64_INT32,
    MERGE_INT64_INT64
};

/* Kinds whose cells are in the int64 scratch rows, not the output rows. */
static inline int scratch_kind(uint32_t kind)
{
    return kind == MERGE_INT64_INT32 || kind == MERGE_INT64_INT64;
}

/* Largest column group merged in lockstep (eb_index.c, group_mirrors). */
#define EB_GROUP_MAX_MEMBERS 16u

struct merge_run {
    const struct dpu_state *dpu;
    const uint32_t *bags; /* the bag of each position */
    const uint8_t *sums;  /* the DPU's output at `offset`: position `first`'s partial */
    uint32_t first;
    uint32_t end;
    uint32_t offset;
    uint32_t partial_bytes;
    uint32_t shard; /* the shard's index in the DPU's shard list */
    uint32_t table; /* the shard's table */
    /* Resolved once a batch (index_partials): each partial's `dim` cells start at `cell`
     * of its bag's output row (fp32 and int32 sums) or int64 scratch row (kind). */
    uint32_t cell;
    uint32_t dim;
    uint32_t kind; /* enum merge_kind */
    /* The runs right after this one that are merged in lockstep with it (eb_index.c,
     * column groups): the same bags, other columns. 0: none; they are skipped as visits. */
    uint32_t mates;
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
    /* Every DPU's output buffer, one after another in DPU order (pack_inputs): the merge
     * reads its partial sums from one ascending stream of memory. */
    uint8_t *outputs;
    size_t outputs_capacity;

    /* the batch (the caller keeps these arrays alive until eb_engine_finish) */
    const int64_t *indices;
    const int64_t *offsets;
    const float *per_sample_weights;
    uint32_t batch;
    int pooling;
    float *output;
    int weighted;
    int split; /* too big for one launch: eb_engine_launch runs it in parts, route to merge */

    /* Routing of the current launch (eb_parts.c): bags [b0, b1); the tables in nr_parts
     * consecutive parts, part p = tables [part_first[p], part_first[p + 1]). Part 0 routes
     * into the DPUs' buffers, part p >= 1 into the DPUs' tails[p - 1] (their records for
     * that part), appended in part order at finishing. nr_parts = 1: no tails. */
    uint32_t b0;
    uint32_t b1;
    uint32_t nr_parts;
    uint32_t part_first[EB_MAX_ROUTE_PARTS + 1];
    struct dpu_state *tails[EB_MAX_ROUTE_PARTS - 1]; /* per DPU, allocated for the first batch with that part */

    /* Per table, this batch's integer sums fit int32 (check_integer_sums): they are added
     * as int32 in the table's own output cells, converted to fp32 in place when finishing.
     * The other integer tables sum into the int64 scratch; nr_scratch_tables counts them. */
    uint8_t *int32_sums;
    /* Per table, its bags in this batch are short enough for int16 partial sums of int8
     * rows (EB_FLAG_INT16_PARTIALS); a DPU gets the flag if all its int8 tables do. */
    uint8_t *int16_partials;
    /* What the DPUs' flags and partial sizes were last set for (set_partial_layout). */
    int layout_set;
    int layout_weighted;
    uint8_t *layout_int16;
    /* Per starting thread and table (eb_sums.c): its next host segment and lookup. */
    struct sums_cursor {
        uint32_t segment;
        uint32_t position;
    } *sums_cursors;
    uint32_t nr_scratch_tables;

    /* Merge scratch (eb_merge.c): the int64 sums of integer tables, and the runs of partials. */
    struct merge_scratch {
        int64_t *scratch;
        size_t scratch_capacity;
        struct merge_run *runs;
        size_t runs_capacity;
        uint32_t nr_runs;
        /* Visits (a run that is not a lockstep mate of an earlier run, with its mates), by
         * the index of their first run: the staged tables' visits table by table
         * (visit_order[table_visits[t] .. table_visits[t + 1]), empty for other tables), then
         * from other_visits on the visits of tables summed in their output cells; each part
         * in run order. nr_visits and visit_spans (their partial positions: partials /
         * group sizes) count that last part. */
        uint32_t *visit_order;
        size_t visit_order_capacity;
        uint32_t *table_visits;
        size_t table_visits_capacity;
        uint32_t other_visits;
        uint32_t nr_visits;
        uint64_t visit_spans;
        /* Per merge thread: the block of a staged table's sums (eb_merge.c). */
        void *stage[EB_MAX_ROUTE_PARTS];
        size_t stage_capacity[EB_MAX_ROUTE_PARTS];
        uint32_t *positions;
        size_t positions_capacity;
        struct merge_run *part_runs[EB_MAX_ROUTE_PARTS]; /* per indexing thread (eb_index.c) */
        size_t part_runs_capacity[EB_MAX_ROUTE_PARTS];
    } merge;

    double launched_at;
    struct eb_run_stats stats;
    int64_t *dpu_stats[EB_NR_DPU_STATS];
    char error[1024];
    struct eb_failure failure; /* what its failure was (eb_host.h) */
    uint32_t *failed_dpus;     /* the DPUs it names */
};

/* The process's helper threads, kept between phases (eb_workers.c); helper w runs job w + 1. */
struct eb_worker {
    struct eb_workers *pool;
    uint32_t index;
    unsigned start; /* the generation when it was made: it waits for the next */
};

struct eb_workers {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a phase for the helpers (generation moved) */
    pthread_cond_t done; /* every helper is through with the phase (pending reached 0) */
    atomic_int busy;     /* a phase holds the helpers */
    atomic_uint generation; /* phases handed out so far */
    atomic_uint pending;    /* helpers not through with the current phase */
    void *(*fn)(void *);
    char *jobs;
    size_t job_size;
    uint32_t nr_jobs;
    uint32_t nr_workers;
    pid_t pid; /* of the process that made them: a forked child has none */
    struct eb_worker workers[EB_MAX_ROUTE_PARTS - 1];
};

/* One phase's jobs: taken[j], job j runs on a helper or on a thread of its own (spawned). */
struct job_group {
    int pooled;
    uint32_t nr_jobs;
    uint8_t taken[EB_MAX_ROUTE_PARTS];
    uint8_t spawned[EB_MAX_ROUTE_PARTS];
    pthread_t threads[EB_MAX_ROUTE_PARTS];
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
    int dry; /* loaded without rows (eb_engine_load with NULL weights): no DPU runs, its partial sums are zeros */
    atomic_int route_busy; /* a batch is being routed and packed (the slices' routing scratch) */
    atomic_int dpu_busy;   /* a batch is on the DPUs: from its push until its outputs are pulled */
    struct eb_slot slots[EB_NR_SLOTS];

    long worker_threads; /* host threads for routing and merging (EB_MAX_ROUTE_PARTS at most are used) */
    int simd_route;      /* fast routing paths: vectors where built, whole tables lane by lane (eb_route.c);
                            UPDLRM_SCALAR_ROUTE=1 at creation: off, every bag by the scalar loop */


    struct eb_run_stats stats; /* of the last eb_engine_run (copied from its slot) */
    int64_t *dpu_stats[EB_NR_DPU_STATS];
    char error[1024];
    struct eb_failure failure; /* what the last failure was (eb_host.h) */
    uint32_t *failed_dpus;     /* the DPUs it names */
    char *kernel_path;         /* reloaded after a fault */
    int broken;                /* a reload after a fault failed: no more launches */
};

/* Routing threads may fail at the same time; the batch is then routed again alone. */

/* Functions shared between the units: not exported from the library. */
#define EB_INTERNAL __attribute__((visibility("hidden")))

/* eb_setup.c */
EB_INTERNAL void slot_error(struct eb_slot *slot, const char *format, ...) __attribute__((format(printf, 2, 3)));
EB_INTERNAL void set_error(eb_engine *engine, const char *format, ...);
/* Runs fn on each of nr_jobs jobs (job_size bytes apart, at most EB_MAX_ROUTE_PARTS): job 0
 * and any job no new thread took on this thread, the others on threads of their own;
 * returns when every job is done. */
/* eb_workers.c: run_jobs runs jobs [0, nr_jobs) at once and returns when all are done;
 * start_jobs starts jobs 1 .. on other threads (those it could not start are left
 * untaken, for the caller to run, as is job 0), join_jobs waits for them. */
EB_INTERNAL void start_jobs(void *(*fn)(void *), void *jobs, size_t job_size, uint32_t nr_jobs,
                            struct job_group *group);
EB_INTERNAL void join_jobs(struct job_group *group);
EB_INTERNAL void run_jobs(void *(*fn)(void *), void *jobs, size_t job_size, uint32_t nr_jobs);
EB_INTERNAL const char *dpu_detail(dpu_error_t status);
EB_INTERNAL dpu_error_t write_config(eb_engine *engine);
EB_INTERNAL int reserve(void **array, size_t *capacity, size_t needed, size_t element_size);
EB_INTERNAL const char *status_text(uint32_t code);

/* eb_load.c */
/*
 * Whether a table's sums are staged (eb_merge.c): summed table by table in a block of
 * bags that stays in the core's cache, then written to the output finished, once per
 * cell. Tables with host-cached rows are not: the start of their sums (the host rows'
 * sum, during the launch) is in their output cells, and the DPUs' partials are added there.
 */
static inline int staged_table(const struct table *table)
{
    return table->nr_host_rows == 0;
}

/* Bytes a bag's sums take in the host's memory: its output row, and its int64 scratch row
 * when some integer table of the batch sums there. */
static inline uint64_t row_bytes(const struct eb_slot *slot)
{
    const uint64_t scratch = slot->nr_scratch_tables ? slot->engine->int_dim * 8u : 0u;
    return (uint64_t)slot->engine->total_dim * 4u + scratch;
}

EB_INTERNAL int check_integer_sums(struct eb_slot *slot, const int64_t *offsets, uint32_t batch, const float *weights);

/* eb_share.c */
EB_INTERNAL int link_followers(eb_engine *engine);
EB_INTERNAL int link_mirrors(eb_engine *engine);
EB_INTERNAL void free_routing(struct slice *slice);

/* eb_route.c */
EB_INTERNAL int route_slice_bags(struct eb_slot *slot, struct slice *slice);

/* eb_parts.c */
EB_INTERNAL __attribute__((noinline)) int route_bags(struct eb_slot *slot, uint32_t b0, uint32_t b1, int parallel);

/* eb_pack.c */
EB_INTERNAL int finish_dpu(struct eb_slot *slot, struct dpu_state *dpu);
EB_INTERNAL int finish_dpus(struct eb_slot *slot, uint32_t first_dpu, uint32_t end_dpu);
EB_INTERNAL __attribute__((noinline)) int plan_transfers(struct eb_slot *slot);
EB_INTERNAL __attribute__((noinline)) int pack_inputs(struct eb_slot *slot);

/* eb_merge.c */
EB_INTERNAL int push_inputs(struct eb_slot *slot);
EB_INTERNAL int pull_outputs(struct eb_slot *slot);
EB_INTERNAL int merge_partials(struct eb_slot *slot, uint32_t b0, uint32_t b1);

/* eb_index.c */
EB_INTERNAL int index_partials(struct eb_slot *slot, uint32_t nr_jobs);

/* eb_sums.c */
EB_INTERNAL void start_sums(struct eb_slot *slot);

/* eb_pipeline.c */
EB_INTERNAL void free_slot(struct eb_slot *slot, uint32_t nr_dpus, uint32_t nr_slices);

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The DPU state holding a DPU's inputs and segments: its own, or its mirror source's. */
static inline const struct dpu_state *inputs_of(const struct eb_slot *slot, const struct dpu_state *dpu)
{
    return dpu->mirror == EB_NO_MIRROR ? dpu : &slot->dpus[dpu->mirror];
}

/* The part of this launch's routing that holds table t (eb_parts.c). */
static inline uint32_t table_part(const struct eb_slot *slot, uint32_t t)
{
    uint32_t p = slot->nr_parts - 1;
    while (t < slot->part_first[p]) {
        p--;
    }
    return p;
}

/* Where part p's records for DPU d go: its own buffers in its home part (the part of its
 * first slice), else its tail for part p. */
static inline struct dpu_state *part_state(struct eb_slot *slot, uint32_t p, uint32_t d)
{
    return slot->dpus[d].home_part == p ? &slot->dpus[d] : &slot->tails[p - 1][d];
}

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


#endif /* EB_INTERNAL_H */
