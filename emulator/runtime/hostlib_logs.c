/* updlrm emulator host library (hostlib.h): DPU logs (dpu_log_read), probes (updlrm_emu_probe.h) and the emulator's
 * performance counters.
 */
#include "hostlib.h"

/* ---- logs --------------------------------------------------------------- */

static dpu_error_t single_dpu(struct dpu_set_t set, struct emu_system **system, struct dpu_t **dpu)
{
    if (check_set(set, system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    if (set.kind != DPU_SET_DPU) {
        if (count_dpus(set) != 1) {
            return fail(DPU_ERR_INVALID_DPU_SET, "this call needs a set of exactly one DPU");
        }
        *dpu = &set.list.ranks[0]->dpus[0];
        return DPU_OK;
    }
    *dpu = set.dpu;
    return DPU_OK;
}

/* Copies the log in order; when the ring wrapped, the oldest bytes are lost. */
static size_t read_log(struct emu_system *system, uint32_t d, char *out, size_t capacity)
{
    struct emu_dpu_block *b = block_of(system, d);
    uint32_t total = b->state.log_write_pos;
    uint32_t kept = total < EMU_LOG_SIZE ? total : EMU_LOG_SIZE;
    uint32_t first = total - kept;
    size_t n = kept < capacity ? kept : capacity;
    for (size_t i = 0; i < n; i++) {
        out[i] = b->log[(first + i) % EMU_LOG_SIZE];
    }
    return kept;
}

static dpu_error_t write_log(struct emu_system *system, struct dpu_t *dpu, FILE *stream)
{
    enter(system);
    char *buffer = malloc(EMU_LOG_SIZE);
    if (!buffer) {
        leave(system);
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    size_t n = read_log(system, dpu->index, buffer, EMU_LOG_SIZE);
    bool wrapped = block_of(system, dpu->index)->state.log_write_pos > EMU_LOG_SIZE;
    leave(system);
    if (wrapped) {
        fprintf(stream, "[log buffer wrapped: oldest output lost]\n");
    }
    fwrite(buffer, 1, n, stream);
    fflush(stream);
    free(buffer);
    return ok();
}

EXPORT dpu_error_t dpu_log_read(struct dpu_set_t set, FILE *stream)
{
    struct emu_system *system = NULL;
    struct dpu_t *dpu;
    dpu_error_t status = single_dpu(set, &system, &dpu);
    if (status != DPU_OK) {
        return status;
    }
    /* DPU_LOG_FORMAT_HEADER of the SDK's dpu_log_internals.h */
    fprintf(stream, "=== DPU#0x%x ===\n", dpu_get_id(dpu));
    return write_log(system, dpu, stream);
}

/* the SDK's dpulog_read_for_dpu prints no header */
EXPORT dpu_error_t dpulog_read_for_dpu(struct dpu_t *dpu, FILE *stream)
{
    if (!dpu) {
        return fail(DPU_ERR_INVALID_DPU_SET, "dpulog_read_for_dpu: no DPU");
    }
    return write_log(dpu->rank->system, dpu, stream);
}

EXPORT dpu_error_t updlrm_emu_log(struct dpu_set_t set, char *buffer, size_t capacity, size_t *length)
{
    struct emu_system *system = NULL;
    struct dpu_t *dpu;
    dpu_error_t status = single_dpu(set, &system, &dpu);
    if (status != DPU_OK) {
        return status;
    }
    enter(system);
    size_t n = read_log(system, dpu->index, buffer, capacity);
    leave(system);
    if (length) {
        *length = n;
    }
    return ok();
}

/* ---- probes (updlrm_emu_probe.h) -------------------------------------- */

EXPORT dpu_error_t updlrm_emu_probe_init(const char *name, struct updlrm_emu_probe *probe)
{
    if (!probe) {
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_init: probe is NULL");
    }
    memset(probe, 0, sizeof *probe);
    snprintf(probe->name, sizeof probe->name, "%s", name ? name : "");
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_deinit(struct updlrm_emu_probe *probe)
{
    if (!probe) {
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_deinit: probe is NULL");
    }
    memset(probe, 0, sizeof *probe);
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_start(struct updlrm_emu_probe *probe)
{
    if (!probe) {
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_start: probe is NULL");
    }
    if (probe->running) {
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_start: probe '%s' is already started", probe->name);
    }
    probe->running = true;
    probe->started_at = now_seconds();
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_stop(struct updlrm_emu_probe *probe)
{
    if (!probe) {
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_stop: probe is NULL");
    }
    if (!probe->running) {
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_stop: probe '%s' was not started", probe->name);
    }
    probe->total_seconds += now_seconds() - probe->started_at;
    probe->nr_intervals++;
    probe->running = false;
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_get(struct updlrm_emu_probe *probe, updlrm_emu_probe_option_t option,
                                        double *seconds)
{
    if (!probe || !seconds) {
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_get: probe or seconds is NULL");
    }
    switch (option) {
    case UPDLRM_EMU_PROBE_ACCUMULATE:
        *seconds = probe->total_seconds;
        return ok();
    case UPDLRM_EMU_PROBE_AVERAGE:
        *seconds = probe->nr_intervals ? probe->total_seconds / probe->nr_intervals : 0.0;
        return ok();
    }
    return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_get: unknown option %d", (int)option);
}

EXPORT dpu_error_t updlrm_emu_counters_array(struct dpu_set_t set, uint64_t *out, size_t capacity)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    const size_t row = EMU_DPU_COUNTER_FIELDS + EMU_MAX_TASKLETS * EMU_TASKLET_COUNTER_FIELDS;
    if (capacity < (size_t)count_dpus(set) * row) {
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "counters buffer too small");
    }
    enter(system);
    size_t i = 0;
    FOR_EACH_DPU_OF_SET(set, dpu, {
        const struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
        memcpy(out + i * row, &s->dpu_counters, sizeof s->dpu_counters);
        memcpy(out + i * row + EMU_DPU_COUNTER_FIELDS, s->tasklet, sizeof s->tasklet);
        i++;
    });
    leave(system);
    return ok();
}

EXPORT dpu_error_t updlrm_emu_get_counters(struct dpu_set_t set, struct updlrm_emu_counters *counters)
{
    struct emu_system *system = NULL;
    struct dpu_t *dpu;
    dpu_error_t status = single_dpu(set, &system, &dpu);
    if (status != DPU_OK) {
        return status;
    }
    _Static_assert(sizeof(struct updlrm_emu_counters) ==
                       sizeof(struct emu_dpu_counters) + EMU_MAX_TASKLETS * sizeof(struct emu_tasklet_counters),
                   "public and shared counter layouts differ");
    enter(system);
    const struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
    memcpy(&counters->dpu, &s->dpu_counters, sizeof s->dpu_counters);
    memcpy(counters->tasklet, s->tasklet, sizeof s->tasklet);
    leave(system);
    return ok();
}

EXPORT dpu_error_t updlrm_emu_reset_counters(struct dpu_set_t set)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    enter(system);
    FOR_EACH_DPU_OF_SET(set, dpu, {
        struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
        memset(&s->dpu_counters, 0, sizeof s->dpu_counters);
        memset(s->tasklet, 0, sizeof s->tasklet);
    });
    leave(system);
    return ok();
}
