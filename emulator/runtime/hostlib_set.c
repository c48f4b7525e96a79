/* updlrm emulator host library (hostlib.h): Errors, DPU sets and their iterators, rank/DPU ids (dpu_management.h),
 * and the queue every API call joins behind a launch in flight.
 */
#include "hostlib.h"

/* ---- errors ------------------------------------------------------------- */

_Thread_local char last_error[EMU_LAST_ERROR_SIZE];

EXPORT const char *updlrm_emu_last_error(void)
{
    return last_error;
}

dpu_error_t fail(dpu_error_t code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return code;
}

/* Texts of the SDK's dpu_error_to_string where known (2025.1); allocated, as
 * in 2025.1, so that callers that free() the result are right. */
static const char *error_text(dpu_error_t status)
{
    const char *text = "unknown error";
    switch (status) {
    case DPU_OK:
        text = "success";
        break;
    case DPU_ERR_INTERNAL:
        text = "internal error";
        break;
    case DPU_ERR_SYSTEM:
        text = "system error";
        break;
    case DPU_ERR_DRIVER:
        text = "driver error";
        break;
    case DPU_ERR_ALLOCATION:
        text = "dpu allocation error";
        break;
    case DPU_ERR_INVALID_DPU_SET:
        text = "invalid action for this dpu set";
        break;
    case DPU_ERR_INVALID_THREAD_ID:
        text = "invalid thread id";
        break;
    case DPU_ERR_INVALID_NOTIFY_ID:
        text = "invalid notify id";
        break;
    case DPU_ERR_INVALID_WRAM_ACCESS:
        text = "invalid wram access";
        break;
    case DPU_ERR_INVALID_IRAM_ACCESS:
        text = "invalid iram access";
        break;
    case DPU_ERR_INVALID_MRAM_ACCESS:
        text = "invalid mram access";
        break;
    case DPU_ERR_INVALID_SYMBOL_ACCESS:
        text = "invalid memory symbol access";
        break;
    case DPU_ERR_MRAM_BUSY:
        text = "mram is busy";
        break;
    case DPU_ERR_TRANSFER_ALREADY_SET:
        text = "transfer buffer is already set";
        break;
    case DPU_ERR_INVALID_PARALLEL_MEMORY_TRANSFER:
        text = "invalid parallel memory transfer";
        break;
    case DPU_ERR_WRAM_FIFO_FULL:
        text = "wram fifo is full";
        break;
    case DPU_ERR_NO_PROGRAM_LOADED:
        text = "no program has been loaded in the dpu set";
        break;
    case DPU_ERR_DIFFERENT_DPU_PROGRAMS:
        text = "dpus have different programs";
        break;
    case DPU_ERR_CORRUPTED_MEMORY:
        text = "corrupted memory";
        break;
    case DPU_ERR_DPU_DISABLED:
        text = "dpu is disabled";
        break;
    case DPU_ERR_DPU_ALREADY_RUNNING:
        text = "dpu is already running";
        break;
    case DPU_ERR_INVALID_MEMORY_TRANSFER:
        text = "invalid memory transfer";
        break;
    case DPU_ERR_INVALID_LAUNCH_POLICY:
        text = "invalid launch policy";
        break;
    case DPU_ERR_DPU_FAULT:
        text = "dpu is in fault";
        break;
    case DPU_ERR_ELF_INVALID_FILE:
        text = "invalid ELF file";
        break;
    case DPU_ERR_ELF_NO_SUCH_FILE:
        text = "no such ELF file";
        break;
    case DPU_ERR_ELF_NO_SUCH_SECTION:
        text = "no such ELF section";
        break;
    case DPU_ERR_TIMEOUT:
        text = "timeout";
        break;
    case DPU_ERR_INVALID_PROFILE:
        text = "invalid profile";
        break;
    case DPU_ERR_UNKNOWN_SYMBOL:
        text = "undefined symbol";
        break;
    case DPU_ERR_LOG_FORMAT:
        text = "log format error";
        break;
    case DPU_ERR_LOG_CONTEXT_MISSING:
        text = "log context missing";
        break;
    case DPU_ERR_LOG_BUFFER_TOO_SMALL:
        text = "log buffer too small";
        break;
    case DPU_ERR_VPD_INVALID_FILE:
        text = "invalid VPD file";
        break;
    case DPU_ERR_VPD_NO_REPAIR:
        text = "no SRAM repair in the VPD";
        break;
    case DPU_ERR_NO_THREAD_PER_RANK:
        text = "no thread per rank";
        break;
    case DPU_ERR_INVALID_BUFFER_SIZE:
        text = "invalid buffer size";
        break;
    case DPU_ERR_NONBLOCKING_SYNC_CALLBACK:
        text = "non-blocking synchronous callback";
        break;
    case DPU_ERR_TOO_MANY_TASKLETS:
        text = "the program uses more tasklets than the dpu has threads";
        break;
    case DPU_ERR_SG_TOO_MANY_BLOCKS:
        text = "too many scatter-gather blocks";
        break;
    case DPU_ERR_SG_LENGTH_MISMATCH:
        text = "scatter-gather length mismatch";
        break;
    case DPU_ERR_SG_NOT_ACTIVATED:
        text = "scatter-gather transfers not activated";
        break;
    case DPU_ERR_SG_NOT_MRAM_SYMBOL:
        text = "scatter-gather symbol is not in mram";
        break;
    case DPU_ERR_ASYNC_JOBS:
        text = "error in an asynchronous job";
        break;
    }
    return text;
}

EXPORT char *dpu_error_to_string(dpu_error_t status)
{
    return strdup(error_text(status));
}

/* ---- DPU sets ----------------------------------------------------------- */

static struct emu_system *system_of(struct dpu_set_t set)
{
    if (set.kind == DPU_SET_DPU) {
        return set.dpu ? set.dpu->rank->system : NULL;
    }
    if (set.kind == DPU_SET_RANKS && set.list.nr_ranks && set.list.ranks) {
        return set.list.ranks[0]->system;
    }
    return NULL;
}


dpu_error_t check_set(struct dpu_set_t set, struct emu_system **system_out)
{
    struct emu_system *system = system_of(set);
    if (!system) {
        return fail(DPU_ERR_INVALID_DPU_SET, "invalid or empty DPU set");
    }
    *system_out = system;
    return DPU_OK;
}

EXPORT struct dpu_set_rank_iterator_t dpu_set_rank_iterator_from(struct dpu_set_t *set)
{
    struct dpu_set_rank_iterator_t it;
    memset(&it, 0, sizeof it);
    it.set = set;
    if (set->kind == DPU_SET_DPU) {
        it.has_next = set->dpu != NULL;
        it.next = *set;
    } else if (set->kind == DPU_SET_RANKS && set->list.nr_ranks) {
        it.has_next = true;
        it.next.kind = DPU_SET_RANKS;
        it.next.list.nr_ranks = 1;
        it.next.list.ranks = &set->list.ranks[0];
    }
    it.next_idx = 1;
    return it;
}

EXPORT void dpu_set_rank_iterator_next(struct dpu_set_rank_iterator_t *it)
{
    if (!it->has_next) {
        return;
    }
    it->count++;
    if (it->set->kind == DPU_SET_DPU || it->next_idx >= it->set->list.nr_ranks) {
        it->has_next = false;
        return;
    }
    it->next.list.ranks = &it->set->list.ranks[it->next_idx++];
}

static void dpu_iterator_load_rank(struct dpu_set_dpu_iterator_t *it)
{
    for (;;) {
        if (!it->rank_iterator.has_next) {
            it->has_next = false;
            return;
        }
        struct dpu_set_t rank = it->rank_iterator.next;
        if (rank.kind == DPU_SET_DPU) {
            it->next = rank;
            it->has_next = true;
            it->next_idx = 1;
            return;
        }
        struct dpu_rank_t *r = rank.list.ranks[0];
        if (r->nr_dpus) {
            it->next.kind = DPU_SET_DPU;
            it->next.dpu = &r->dpus[0];
            it->next_idx = 1;
            it->has_next = true;
            return;
        }
        dpu_set_rank_iterator_next(&it->rank_iterator);
    }
}

EXPORT struct dpu_set_dpu_iterator_t dpu_set_dpu_iterator_from(struct dpu_set_t *set)
{
    struct dpu_set_dpu_iterator_t it;
    memset(&it, 0, sizeof it);
    it.rank_iterator = dpu_set_rank_iterator_from(set);
    dpu_iterator_load_rank(&it);
    return it;
}

EXPORT void dpu_set_dpu_iterator_next(struct dpu_set_dpu_iterator_t *it)
{
    if (!it->has_next) {
        return;
    }
    it->count++;
    struct dpu_set_t rank = it->rank_iterator.next;
    if (rank.kind == DPU_SET_RANKS) {
        struct dpu_rank_t *r = rank.list.ranks[0];
        if (it->next_idx < r->nr_dpus) {
            it->next.dpu = &r->dpus[it->next_idx++];
            return;
        }
    }
    dpu_set_rank_iterator_next(&it->rank_iterator);
    dpu_iterator_load_rank(it);
}

/* ---- ranks and DPUs (dpu_management.h) --------------------------------- */

EXPORT dpu_id_t dpu_get_id(struct dpu_t *dpu)
{
    uint32_t member = (uint32_t)(dpu - dpu->rank->dpus), per_ci = dpu->rank->system->settings.dpus_per_ci;
    return (dpu->rank->index << 16) | (((member / per_ci) & 0xff) << 8) | ((member % per_ci) & 0xff);
}

EXPORT dpu_id_t dpu_get_rank_id(struct dpu_rank_t *rank)
{
    return rank->index;
}

EXPORT struct dpu_rank_t *dpu_get_rank(struct dpu_t *dpu)
{
    return dpu->rank;
}

EXPORT dpu_slice_id_t dpu_get_slice_id(struct dpu_t *dpu)
{
    return (dpu_slice_id_t)((dpu_get_id(dpu) >> 8) & 0xff);
}

EXPORT dpu_member_id_t dpu_get_member_id(struct dpu_t *dpu)
{
    return (dpu_member_id_t)(dpu_get_id(dpu) & 0xff);
}

EXPORT bool dpu_is_enabled(struct dpu_t *dpu)
{
    return dpu != NULL;
}

EXPORT struct dpu_t *dpu_get(struct dpu_rank_t *rank, dpu_slice_id_t slice_id, dpu_member_id_t member_id)
{
    uint32_t per_ci = rank->system->settings.dpus_per_ci, index = (uint32_t)slice_id * per_ci + member_id;
    return member_id < per_ci && index < rank->nr_dpus ? &rank->dpus[index] : NULL;
}

EXPORT struct dpu_set_t dpu_set_from_rank(struct dpu_rank_t **rank)
{
    struct dpu_set_t set = {.kind = DPU_SET_RANKS, .list = {.nr_ranks = 1, .ranks = rank}};
    return set;
}

EXPORT struct dpu_set_t dpu_set_from_dpu(struct dpu_t *dpu)
{
    struct dpu_set_t set = {.kind = DPU_SET_DPU, .dpu = dpu};
    return set;
}

EXPORT struct dpu_rank_t *dpu_rank_from_set(struct dpu_set_t set)
{
    return set.kind == DPU_SET_RANKS && set.list.nr_ranks == 1 ? set.list.ranks[0] : NULL;
}

EXPORT struct dpu_t *dpu_from_set(struct dpu_set_t set)
{
    return set.kind == DPU_SET_DPU ? set.dpu : NULL;
}

EXPORT dpu_error_t updlrm_emu_dpu_at(struct dpu_set_t set, uint32_t index, struct dpu_set_t *out)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    uint32_t i = 0;
    FOR_EACH_DPU_OF_SET(set, dpu, {
        if (i++ == index) {
            out->kind = DPU_SET_DPU;
            out->dpu = dpu;
            return ok();
        }
    });
    return fail(DPU_ERR_INVALID_DPU_SET, "DPU index %u out of range (%u DPUs in the set)", index, i);
}
