/*
 * Host runtime of the embedding-bag kernel: public C interface.
 *
 * Python (host/engine.py) loads this through cffi; it reads the declarations
 * between the BEGIN/END markers verbatim, so keep them free of preprocessor
 * lines and include only plain C declarations there.
 */
#ifndef UPDLRM_EB_HOST_H
#define UPDLRM_EB_HOST_H

#include <stddef.h>
#include <stdint.h>

/* BEGIN CDEF */
typedef struct eb_engine eb_engine;

/* Batches in flight per engine (eb_engine_prepare ... eb_engine_finish), see below. */
enum { EB_NR_SLOTS = 3 };

/* Phase times of the last eb_engine_run, in seconds, and batch-wide counts. */
struct eb_run_stats {
    double route_s;      /* validation of offsets, routing and packing */
    double push_s;       /* CPU->DPU transfers */
    double launch_s;     /* launch until every DPU is done (host-cache work overlaps it) */
    double pull_s;       /* DPU->CPU transfers */
    double merge_s;      /* adding partials, scale, mean */
    double host_cache_s; /* summing host-cached rows */
    int64_t nr_launches;
    int64_t host_cache_hits;
    int64_t host_cache_bytes; /* bytes of host-cached rows read */
    int64_t nr_lookups;
    int64_t nr_bags;
    int64_t parallel_routes; /* launches whose tables were routed in parts on several threads */
    int64_t route_parts;     /* the most parts of tables a launch was routed in (1: one pass) */
};

enum eb_dpu_stat {
    EB_STAT_LOOKUPS = 0,      /* row-slice gathers */
    EB_STAT_SEGMENTS = 1,     /* (bag, shard) runs */
    EB_STAT_PARTIALS = 2,     /* partial sums written back */
    EB_STAT_BYTES_TO_DPU = 3, /* input bytes the DPU needs */
    EB_STAT_BYTES_FROM_DPU = 4,
    EB_STAT_PADDED_TO_DPU = 5, /* bytes actually moved (padded to the largest in the rank) */
    EB_STAT_PADDED_FROM_DPU = 6,
    EB_STAT_REDUCE_ELEMS = 7, /* accumulator element updates */
    EB_STAT_CYCLES = 8,       /* perfcounter cycles reported by the DPU */
    EB_STAT_ROW_BYTES = 9,    /* bytes of row slices gathered */
    EB_STAT_MERGE_ELEMS = 10, /* partial-sum elements the host adds */
    EB_NR_DPU_STATS = 11
};

/*
 * Results of eb_engine_run. One batch runs at a time per engine: a call made while
 * another is running (another thread) returns EB_RUN_BUSY at once and touches
 * nothing, not even the error text or the stats of the running batch. The error
 * text and the stats describe the last run and are overwritten by the next one:
 * callers that share an engine serialise run + reading them (Engine.run holds a
 * lock). Setup calls and eb_engine_destroy must not overlap a run.
 */
enum eb_run_result {
    EB_RUN_OK = 0,
    EB_RUN_FAILED = -1, /* eb_engine_error says why */
    EB_RUN_BUSY = -2,   /* another eb_engine_run of this engine is in progress */
    EB_RUN_INEXACT =
        -3, /* refused before routing: an integer bag sum could exceed int64 (eb_engine_error says which) */
    EB_RUN_BAD_SLOT = -4 /* stage functions: no such slot, or it is not in the state the call needs */
};

eb_engine *eb_engine_create(const char *kernel_path, const char *profile, uint32_t nr_dpus, uint32_t nr_tasklets,
                            uint64_t mram_bytes, uint32_t nr_tables, uint32_t nr_shards, char *error, size_t error_size,
                            int32_t *failure_kind);
int eb_engine_set_table(eb_engine *engine, uint32_t table, int64_t nr_rows, uint32_t dim, uint32_t format,
                        double scale);
int eb_engine_name_table(eb_engine *engine, uint32_t table, const char *name);
int eb_engine_set_shard(eb_engine *engine, uint32_t shard, uint32_t table, uint32_t dpu, uint32_t col_start,
                        uint32_t col_stop, int64_t row_start, int64_t nr_rows, const int64_t *row_ids);
int eb_engine_set_host_rows(eb_engine *engine, uint32_t table, int64_t nr_rows, const int64_t *row_ids,
                            const void *rows);
int eb_engine_add_slice(eb_engine *engine, uint32_t table, uint32_t col_start, uint32_t col_stop);
/* weights NULL: a dry engine. Nothing goes to the DPUs (host-cached rows may have been
 * given NULL values: zeros); a batch is routed, packed, its host-cached rows summed and
 * merged with zero partial sums in place of the DPUs' (eb_host.h's stages as usual; the
 * output is the host-cached rows' sums). For measuring the host's phases of a plan whose
 * rows the host cannot hold. */
int eb_engine_load(eb_engine *engine, const void **weights, const int64_t *row_strides);
void eb_engine_set_host_threads(eb_engine *engine, uint32_t threads);
int eb_engine_run(eb_engine *engine, const int64_t *indices, int64_t nr_indices, const int64_t *offsets,
                  int64_t nr_offsets, const float *per_sample_weights, int pooling, float *output);
const char *eb_engine_error(const eb_engine *engine);

/*
 * What the last failed call of an engine ran into, beyond its text (eb_engine_error);
 * eb_engine_create's failure_kind (may be NULL) receives the kind when it returns NULL.
 * After a DPU fault or a timeout the engine has reloaded the kernel on its DPUs (the
 * tables in MRAM stay), so the next batch runs normally.
 */
enum eb_failure_kind {
    EB_FAILURE_NONE = 0,       /* the last call succeeded */
    EB_FAILURE_OTHER = 1,      /* bad input, host memory, transfers: the text says what */
    EB_FAILURE_ALLOCATION = 2, /* dpu_alloc failed or gave fewer DPUs (eb_engine_create) */
    EB_FAILURE_DPU_FAULT = 3,  /* DPUs faulted during a launch (or their worker process died) */
    EB_FAILURE_TIMEOUT = 4     /* the launch exceeded its timeout; the DPUs listed were still running */
};

struct eb_failure {
    int32_t kind;      /* enum eb_failure_kind */
    int32_t dpu;       /* first DPU listed, -1: none */
    int32_t tasklet;   /* its tasklet, -1: unknown or not tasklet specific */
    uint32_t nr_dpus;  /* DPUs listed by eb_engine_failed_dpus */
    int32_t recovered; /* 1: the kernel was reloaded and the engine is usable; 0: close it */
    char cause[256];   /* the first DPU's fault as the DPU library reported it */
};
const struct eb_failure *eb_engine_failure(const eb_engine *engine);
const uint32_t *eb_engine_failed_dpus(const eb_engine *engine);

const struct eb_run_stats *eb_engine_stats(const eb_engine *engine);
const int64_t *eb_engine_dpu_stat(const eb_engine *engine, int which);

/*
 * Pipelining: one batch in three stages over a slot (0 .. EB_NR_SLOTS-1), each slot
 * owning one batch's buffers, scratch, stats and error text.
 *   eb_engine_prepare  validate, route and pack into the slot (FREE -> PREPARED); the
 *                      arrays must stay alive and unchanged until eb_engine_finish
 *   eb_engine_launch   push and start the DPUs asynchronously, sum host-cached rows
 *                      (PREPARED -> LAUNCHED; a batch too big for one launch runs
 *                      here in parts, route to merge: -> COLLECTED)
 *   eb_engine_collect  wait for the DPUs, pull the partial sums (LAUNCHED -> COLLECTED;
 *                      nothing to do on COLLECTED)
 *   eb_engine_finish   merge, scale, divide means into the output (COLLECTED -> FREE)
 *   eb_engine_discard  give a slot up at any state (waits for its launch)
 * One prepare at a time (the routing scratch) and one batch on the DPUs at a time
 * (launch .. collect); the other stages of other slots run concurrently with them, so
 * the host routes batch i+1 and merges batch i-1 while the DPUs run batch i. A stage
 * whose stage is taken returns EB_RUN_BUSY, one given a slot in the wrong state
 * EB_RUN_BAD_SLOT; both touch nothing. A failed stage frees its slot; its error text
 * and failure stay readable (eb_engine_slot_error, _slot_failure) until the slot is
 * prepared again. A DPU fault is reported by the launch or collect of the batch that
 * was on the DPUs; the kernel is reloaded there, so the batches prepared meanwhile run
 * normally.
 * eb_engine_run is these four on slot 0; eb_engine_error/_stats/_dpu_stat describe the
 * last eb_engine_run, eb_engine_slot_* a slot's last batch.
 */
int eb_engine_prepare(eb_engine *engine, uint32_t slot, const int64_t *indices, int64_t nr_indices,
                      const int64_t *offsets, int64_t nr_offsets, const float *per_sample_weights, int pooling,
                      float *output);
int eb_engine_launch(eb_engine *engine, uint32_t slot);
int eb_engine_collect(eb_engine *engine, uint32_t slot);
int eb_engine_finish(eb_engine *engine, uint32_t slot);
int eb_engine_discard(eb_engine *engine, uint32_t slot);
const char *eb_engine_slot_error(const eb_engine *engine, uint32_t slot);
const struct eb_run_stats *eb_engine_slot_stats(const eb_engine *engine, uint32_t slot);
const int64_t *eb_engine_slot_dpu_stat(const eb_engine *engine, uint32_t slot, int which);
const struct eb_failure *eb_engine_slot_failure(const eb_engine *engine, uint32_t slot);
const uint32_t *eb_engine_slot_failed_dpus(const eb_engine *engine, uint32_t slot);

uint32_t eb_engine_nr_dpus(const eb_engine *engine);
uint32_t eb_engine_nr_ranks(const eb_engine *engine);
uint64_t eb_engine_static_bytes(const eb_engine *engine);
uint64_t eb_engine_routing_bytes(const eb_engine *engine);
uint32_t eb_engine_nr_followers(const eb_engine *engine);
uint32_t eb_engine_nr_mirrors(const eb_engine *engine);
void eb_engine_destroy(eb_engine *engine);
/* END CDEF */

#endif
