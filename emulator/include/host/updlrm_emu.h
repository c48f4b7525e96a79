/* Emulator-only host API (never needed by SDK programs): counters, fault
 * details and introspection of the updlrm UPMEM emulator.  Guard uses with
 * #ifdef UPDLRM_EMULATOR to keep a program buildable against the real SDK. */
#ifndef UPDLRM_EMU_H
#define UPDLRM_EMU_H

#include <stdint.h>
#include <dpu_error.h>
#include <dpu_types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UPDLRM_EMU_MAX_TASKLETS 24

/* Per-tasklet counters (same order as emulator/runtime/emu_shared.h). */
struct updlrm_emu_tasklet_counters {
    uint64_t mram_read_count;
    uint64_t mram_read_bytes;
    uint64_t mram_write_count;
    uint64_t mram_write_bytes;
    uint64_t barrier_waits;
    uint64_t mutex_waits;
    uint64_t sem_waits;
    uint64_t handshake_waits;
    uint64_t switches;
    uint64_t runtime_calls;
    uint64_t cycles;
};

struct updlrm_emu_dpu_counters {
    uint64_t launches;
    uint64_t host_to_dpu_bytes;
    uint64_t dpu_to_host_bytes;
    uint64_t faults;
    uint64_t last_launch_cycles;
};

struct updlrm_emu_counters {
    struct updlrm_emu_dpu_counters dpu;
    struct updlrm_emu_tasklet_counters tasklet[UPDLRM_EMU_MAX_TASKLETS];
};

/* Detailed text of the last error returned to this thread ("" if none). */
const char *updlrm_emu_last_error(void);
/* Counters of one DPU (dpu must be a single-DPU set). */
dpu_error_t updlrm_emu_get_counters(struct dpu_set_t dpu, struct updlrm_emu_counters *counters);
/* All counters of a set as uint64 rows: per DPU, 5 DPU fields then
 * 24 x 11 tasklet fields; `capacity` is in uint64 elements. */
dpu_error_t updlrm_emu_counters_array(struct dpu_set_t set, uint64_t *out, size_t capacity);
dpu_error_t updlrm_emu_reset_counters(struct dpu_set_t set);
/* The DPU of a set at a DPU_FOREACH index. */
dpu_error_t updlrm_emu_dpu_at(struct dpu_set_t set, uint32_t index, struct dpu_set_t *dpu);
/* Fault details of the last failed launch/sync of a set: first faulted DPU
 * (DPU_FOREACH index), tasklet (-1: not tasklet specific) and message. */
dpu_error_t updlrm_emu_fault_info(struct dpu_set_t set, uint32_t *dpu_index, int32_t *tasklet, char *message,
                                  size_t message_size);
/* Test hook: replace the fault injection rules of the set's system (NULL or "":
 * none); the grammar is UPDLRM_EMU_FAULTS's (emulator/README.md, "Fault injection").
 * Launch numbers in the rules count from this call. */
dpu_error_t updlrm_emu_set_faults(struct dpu_set_t set, const char *rules);
/* Number of worker processes serving the set's program(s). */
dpu_error_t updlrm_emu_nr_workers(struct dpu_set_t set, uint32_t *nr_workers);
/* Name of the index-th symbol of a loaded program (sorted by name);
 * DPU_ERR_INVALID_SYMBOL_ACCESS past the last one. */
dpu_error_t updlrm_emu_program_symbol(struct dpu_program_t *program, uint32_t index, const char **name);
/* Log of one DPU into a buffer; *length receives the full log length. */
dpu_error_t updlrm_emu_log(struct dpu_set_t dpu, char *buffer, size_t capacity, size_t *length);

#ifdef __cplusplus
}
#endif

#endif
