/* updlrm emulator host library (hostlib.h): Host <-> DPU transfers: copies, broadcasts, prepared (push) and
 * scatter-gather transfers, all validated for every DPU before a byte moves.
 */
#include "hostlib.h"

/* ---- memory transfers --------------------------------------------------- */

/* Resolves [address + offset, +length) of a DPU to host memory. */
static dpu_error_t locate(struct emu_system *system, uint32_t d, uint64_t address, uint64_t symbol_size,
                          const char *symbol_name, uint32_t offset, size_t length, bool write, uint8_t **out)
{
    struct dpu_program_t *program = system->program_of[d];
    if (!program) {
        return fail(DPU_ERR_NO_PROGRAM_LOADED, "DPU %u has no program loaded", d);
    }
    char label[160];
    if (symbol_name) {
        snprintf(label, sizeof label, "symbol '%s'", symbol_name);
    } else {
        snprintf(label, sizeof label, "address 0x%llx", (unsigned long long)address);
    }
    /* the SDK's order: bounds of the symbol, then the memory's granularity */
    if ((uint64_t)offset + length > symbol_size) {
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "%s: [%u, %llu) is outside the symbol's %llu bytes", label, offset,
                    (unsigned long long)offset + length, (unsigned long long)symbol_size);
    }
    bool mram = address >= EMU_MRAM_BASE && address <= (uint64_t)EMU_MRAM_BASE + EMU_MRAM_SIZE;
    if (mram) {
        if (offset % 8 || length % 8) {
            return fail(DPU_ERR_INVALID_MRAM_ACCESS,
                        "%s: MRAM transfers need offset (%u) and length (%zu) multiple of 8", label, offset, length);
        }
    } else if (offset % 4 || length % 4) {
        return fail(DPU_ERR_INVALID_WRAM_ACCESS, "%s: WRAM transfers need offset (%u) and length (%zu) multiple of 4",
                    label, offset, length);
    }
    uint64_t start = address + offset;
    if (mram) {
        if (start + length > (uint64_t)EMU_MRAM_BASE + EMU_MRAM_SIZE) {
            return fail(DPU_ERR_INVALID_MRAM_ACCESS, "%s: beyond the 64 MiB MRAM", label);
        }
        *out = mram_of(system, d) + (start - EMU_MRAM_BASE);
        return DPU_OK;
    }
    const struct emu_program_layout *layout = &program->layout;
    if (start >= layout->wram_span_start && start + length <= layout->wram_span_start + layout->wram_span_size) {
        *out = block_of(system, d)->image + (start - layout->wram_span_start);
        return DPU_OK;
    }
    if (!write && program->rodata && start >= layout->rodata_start &&
        start + length <= layout->rodata_start + layout->rodata_size) {
        *out = program->rodata + (start - layout->rodata_start);
        return DPU_OK;
    }
    return fail(DPU_ERR_INVALID_WRAM_ACCESS, "%s: not a %s WRAM location", label, write ? "writable" : "readable");
}

static dpu_error_t lookup(struct emu_system *system, uint32_t d, const char *name, uint64_t *address, uint64_t *size)
{
    struct dpu_program_t *program = system->program_of[d];
    if (!program) {
        return fail(DPU_ERR_NO_PROGRAM_LOADED, "DPU %u has no program loaded", d);
    }
    const struct emu_symbol *s = find_symbol(program, name);
    if (!s) {
        return fail(DPU_ERR_UNKNOWN_SYMBOL, "unknown symbol '%s' in %s", name, program->path);
    }
    *address = s->address;
    *size = s->size;
    return DPU_OK;
}

struct xfer {
    struct emu_system *system;
    const char *name; /* NULL: use address/size */
    uint64_t address;
    uint64_t size;
    uint32_t offset;
    size_t length;
};

static dpu_error_t xfer_target(const struct xfer *x, uint32_t d, bool write, uint8_t **out)
{
    uint64_t address = x->address, size = x->size;
    if (x->name) {
        dpu_error_t status = lookup(x->system, d, x->name, &address, &size);
        if (status != DPU_OK) {
            return status;
        }
    }
    return locate(x->system, d, address, size, x->name, x->offset, x->length, write, out);
}

/* Large transfers copy in parallel, like the SDK's per-rank threads. */
struct copy_job {
    uint8_t **dst;
    uint8_t **src;
    size_t length;
    uint32_t count;
    uint32_t next;
    pthread_mutex_t lock;
};

static void *copy_worker(void *arg)
{
    struct copy_job *job = arg;
    for (;;) {
        pthread_mutex_lock(&job->lock);
        uint32_t i = job->next++;
        pthread_mutex_unlock(&job->lock);
        if (i >= job->count) {
            return NULL;
        }
        memcpy(job->dst[i], job->src[i], job->length);
    }
}

static void copy_many(uint8_t **dst, uint8_t **src, uint32_t count, size_t length)
{
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t threads = nproc > 1 ? (uint32_t)(nproc > 16 ? 16 : nproc) : 1;
    if ((uint64_t)count * length < (8u << 20) || count < 2 || threads == 1) {
        for (uint32_t i = 0; i < count; i++) {
            memcpy(dst[i], src[i], length);
        }
        return;
    }
    struct copy_job job = {dst, src, length, count, 0, PTHREAD_MUTEX_INITIALIZER};
    pthread_t ids[16];
    uint32_t started = 0;
    for (uint32_t t = 1; t < threads; t++) {
        if (!pthread_create(&ids[started], NULL, copy_worker, &job)) {
            started++;
        }
    }
    copy_worker(&job);
    for (uint32_t t = 0; t < started; t++) {
        pthread_join(ids[t], NULL);
    }
}

/* Copies to (or from) every DPU of the set; buffer_of(dpu) gives the host
 * side, NULL to skip the DPU.  All DPUs are validated before any byte moves. */
static dpu_error_t transfer(struct dpu_set_t set, const struct xfer *x, bool to_dpu, const void *broadcast,
                            bool use_prepared, bool single_dpu_only)
{
    struct emu_system *system = x->system;
    if (single_dpu_only && set.kind != DPU_SET_DPU) {
        return fail(DPU_ERR_INVALID_DPU_SET, "copy from DPUs needs a single-DPU set (use dpu_push_xfer for many)");
    }
    uint32_t n = count_dpus(set);
    uint8_t **dpu_side = calloc(n ? n : 1, sizeof *dpu_side);
    uint8_t **host_side = calloc(n ? n : 1, sizeof *host_side);
    uint32_t *ids = calloc(n ? n : 1, sizeof *ids);
    if (!dpu_side || !host_side || !ids) {
        free(dpu_side);
        free(host_side);
        free(ids);
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    uint32_t count = 0;
    dpu_error_t status = DPU_OK;
    if (x->name) {
        /* a symbol name is resolved in the set's one program (the SDK's
         * dpu_get_common_program) */
        struct dpu_program_t *common = NULL;
        FOR_EACH_DPU_OF_SET(set, dpu, {
            struct dpu_program_t *program = system->program_of[dpu->index];
            if (status != DPU_OK) {
                break;
            }
            if (!program) {
                status = fail(DPU_ERR_NO_PROGRAM_LOADED, "DPU %u has no program loaded", dpu->index);
            } else if (common && program != common) {
                status = fail(DPU_ERR_DIFFERENT_DPU_PROGRAMS,
                              "symbol '%s': the DPUs of the set run different programs (%s, %s)", x->name, common->path,
                              program->path);
            }
            common = program;
        });
    }
    FOR_EACH_DPU_OF_SET(set, dpu, {
        if (status != DPU_OK) {
            break;
        }
        void *host = use_prepared ? dpu->xfer_buffer : (void *)broadcast;
        if (!host) {
            continue;
        }
        status = xfer_target(x, dpu->index, to_dpu, &dpu_side[count]);
        host_side[count] = host;
        ids[count] = dpu->index;
        count++;
    });
    if (status == DPU_OK && x->length) {
        if (to_dpu) {
            copy_many(dpu_side, host_side, count, x->length);
        } else {
            copy_many(host_side, dpu_side, count, x->length);
        }
        for (uint32_t i = 0; i < count; i++) {
            struct emu_dpu_counters *c = &block_of(system, ids[i])->state.dpu_counters;
            if (to_dpu) {
                c->host_to_dpu_bytes += x->length;
            } else {
                c->dpu_to_host_bytes += x->length;
            }
        }
    }
    free(dpu_side);
    free(host_side);
    free(ids);
    return status == DPU_OK ? ok() : status;
}

static dpu_error_t begin_xfer(struct dpu_set_t set, struct xfer *x, const char *name, uint32_t offset, size_t length)
{
    if (check_set(set, &x->system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    if (!name) {
        return fail(DPU_ERR_UNKNOWN_SYMBOL, "NULL symbol name");
    }
    x->name = name;
    x->offset = offset;
    x->length = length;
    return DPU_OK;
}

static dpu_error_t begin_xfer_symbol(struct dpu_set_t set, struct xfer *x, struct dpu_symbol_t symbol, uint32_t offset,
                                     size_t length)
{
    if (check_set(set, &x->system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    x->name = NULL;
    x->address = symbol.address;
    x->size = symbol.size;
    x->offset = offset;
    x->length = length;
    return DPU_OK;
}

/* The by-name and by-address entry points differ only in how the transfer
 * begins (begun is that step's status); the rest runs here, under the lock.
 * A copy from DPUs must name one DPU, a copy to them may broadcast. */
static dpu_error_t copy_begun(struct dpu_set_t set, dpu_error_t begun, const struct xfer *x, bool to_dpu,
                              const void *host)
{
    if (begun != DPU_OK) {
        return begun;
    }
    enter(x->system);
    dpu_error_t status = transfer(set, x, to_dpu, host, false, !to_dpu);
    leave(x->system);
    return status;
}

EXPORT dpu_error_t dpu_copy_to(struct dpu_set_t set, const char *symbol_name, uint32_t offset, const void *src,
                               size_t length)
{
    struct xfer x;
    return copy_begun(set, begin_xfer(set, &x, symbol_name, offset, length), &x, true, src);
}

EXPORT dpu_error_t dpu_copy_from(struct dpu_set_t set, const char *symbol_name, uint32_t offset, void *dst,
                                 size_t length)
{
    struct xfer x;
    return copy_begun(set, begin_xfer(set, &x, symbol_name, offset, length), &x, false, dst);
}

EXPORT dpu_error_t dpu_copy_to_symbol(struct dpu_set_t set, struct dpu_symbol_t symbol, uint32_t offset,
                                      const void *src, size_t length)
{
    struct xfer x;
    return copy_begun(set, begin_xfer_symbol(set, &x, symbol, offset, length), &x, true, src);
}

EXPORT dpu_error_t dpu_copy_from_symbol(struct dpu_set_t set, struct dpu_symbol_t symbol, uint32_t offset, void *dst,
                                        size_t length)
{
    struct xfer x;
    return copy_begun(set, begin_xfer_symbol(set, &x, symbol, offset, length), &x, false, dst);
}

EXPORT dpu_error_t dpu_broadcast_to(struct dpu_set_t set, const char *symbol_name, uint32_t offset, const void *src,
                                    size_t length, dpu_xfer_flags_t flags)
{
    (void)flags; /* transfers complete before returning, which DPU_XFER_ASYNC permits */
    return dpu_copy_to(set, symbol_name, offset, src, length);
}

EXPORT dpu_error_t dpu_broadcast_to_symbol(struct dpu_set_t set, struct dpu_symbol_t symbol, uint32_t offset,
                                           const void *src, size_t length, dpu_xfer_flags_t flags)
{
    (void)flags;
    return dpu_copy_to_symbol(set, symbol, offset, src, length);
}

EXPORT dpu_error_t dpu_prepare_xfer(struct dpu_set_t set, void *buffer)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    FOR_EACH_DPU_OF_SET(set, dpu, { dpu->xfer_buffer = buffer; });
    return ok();
}

static void clear_prepared(struct dpu_set_t set, dpu_xfer_flags_t flags)
{
    if (flags & DPU_XFER_NO_RESET) {
        return;
    }
    FOR_EACH_DPU_OF_SET(set, dpu, { dpu->xfer_buffer = NULL; });
}

/* As copy_begun, for the buffers dpu_prepare_xfer set on each DPU. */
static dpu_error_t push_begun(struct dpu_set_t set, dpu_error_t begun, const struct xfer *x, dpu_xfer_t xfer,
                              dpu_xfer_flags_t flags)
{
    if (begun != DPU_OK) {
        return begun;
    }
    enter(x->system);
    dpu_error_t status = transfer(set, x, xfer == DPU_XFER_TO_DPU, NULL, true, false);
    clear_prepared(set, flags);
    leave(x->system);
    return status;
}

EXPORT dpu_error_t dpu_push_xfer(struct dpu_set_t set, dpu_xfer_t xfer, const char *symbol_name, uint32_t offset,
                                 size_t length, dpu_xfer_flags_t flags)
{
    if (xfer != DPU_XFER_TO_DPU && xfer != DPU_XFER_FROM_DPU) {
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_xfer: unknown direction %d", (int)xfer);
    }
    struct xfer x;
    return push_begun(set, begin_xfer(set, &x, symbol_name, offset, length), &x, xfer, flags);
}

EXPORT dpu_error_t dpu_push_xfer_symbol(struct dpu_set_t set, dpu_xfer_t xfer, struct dpu_symbol_t symbol,
                                        uint32_t offset, size_t length, dpu_xfer_flags_t flags)
{
    if (xfer != DPU_XFER_TO_DPU && xfer != DPU_XFER_FROM_DPU) {
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_xfer_symbol: unknown direction %d", (int)xfer);
    }
    struct xfer x;
    return push_begun(set, begin_xfer_symbol(set, &x, symbol, offset, length), &x, xfer, flags);
}

EXPORT dpu_error_t dpu_callback(struct dpu_set_t set, dpu_error_t (*callback)(struct dpu_set_t, uint32_t, void *),
                                void *args, dpu_callback_flags_t flags)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    enter(system);
    leave(system);
    if (flags & DPU_CALLBACK_SINGLE_CALL) {
        return callback(set, 0, args);
    }
    struct dpu_set_t rank;
    uint32_t index;
    DPU_RANK_FOREACH(set, rank, index)
    {
        dpu_error_t status = callback(rank, index, args);
        if (status != DPU_OK) {
            return status;
        }
    }
    return ok();
}

/* ---- scatter-gather transfers ------------------------------------------ */

/* Each DPU's blocks (get_block_info->f, DPU_FOREACH order) are gathered into
 * (or scattered from) [symbol + offset, + length) of its MRAM.  Everything is
 * checked for every DPU before any byte moves. */
static dpu_error_t sg_transfer(struct dpu_set_t set, dpu_error_t begun, const struct xfer *x, dpu_xfer_t xfer,
                               get_block_t *info, dpu_sg_xfer_flags_t flags)
{
    if (begun != DPU_OK) {
        return begun;
    }
    struct emu_system *system = x->system;
    if (xfer != DPU_XFER_TO_DPU && xfer != DPU_XFER_FROM_DPU) {
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_sg_xfer: unknown direction %d", (int)xfer);
    }
    if (!system->settings.sg_enabled) {
        return fail(DPU_ERR_SG_NOT_ACTIVATED,
                    "scatter-gather transfers are off: allocate with \"sgXferEnable=true\" in the dpu_alloc profile");
    }
    if (!info || !info->f) {
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_sg_xfer: no get_block function");
    }
    bool to_dpu = xfer == DPU_XFER_TO_DPU;
    enter(system);
    dpu_error_t status = DPU_OK;
    for (int pass = 0; pass < 2 && status == DPU_OK; pass++) { /* pass 0 checks, pass 1 copies */
        uint32_t index = 0;
        FOR_EACH_DPU_OF_SET(set, dpu, {
            if (status != DPU_OK) {
                break;
            }
            uint64_t address = x->address;
            uint64_t size = x->size;
            if (x->name) {
                status = lookup(system, dpu->index, x->name, &address, &size);
            }
            if (status == DPU_OK && address < EMU_MRAM_BASE) {
                status = fail(DPU_ERR_SG_NOT_MRAM_SYMBOL, "scatter-gather transfer to '%s': not an MRAM symbol",
                              x->name ? x->name : "symbol");
            }
            uint8_t *target = NULL;
            if (status == DPU_OK) {
                status = locate(system, dpu->index, address, size, x->name, x->offset, x->length, to_dpu, &target);
            }
            uint64_t done = 0;
            struct sg_block_info block;
            for (uint32_t b = 0; status == DPU_OK && info->f(&block, index, b, info->args); b++) {
                if (system->settings.sg_max_blocks && b >= system->settings.sg_max_blocks) {
                    status = fail(DPU_ERR_SG_TOO_MANY_BLOCKS, "DPU %u: more than sgXferMaxBlocksPerDpu=%u blocks",
                                  index, system->settings.sg_max_blocks);
                } else if (done + block.length > x->length) {
                    status = fail(DPU_ERR_SG_LENGTH_MISMATCH, "DPU %u: the blocks exceed the %zu bytes transferred",
                                  index, x->length);
                } else if (pass == 1 && block.length) {
                    if (to_dpu) {
                        memcpy(target + done, block.addr, block.length);
                    } else {
                        memcpy(block.addr, target + done, block.length);
                    }
                }
                done += block.length;
            }
            if (status == DPU_OK && done != x->length && !(flags & DPU_SG_XFER_DISABLE_LENGTH_CHECK)) {
                status = fail(DPU_ERR_SG_LENGTH_MISMATCH, "DPU %u: blocks hold %llu bytes, the transfer %zu", index,
                              (unsigned long long)done, x->length);
            }
            if (status == DPU_OK && pass == 1) {
                struct emu_dpu_counters *c = &block_of(system, dpu->index)->state.dpu_counters;
                if (to_dpu) {
                    c->host_to_dpu_bytes += done;
                } else {
                    c->dpu_to_host_bytes += done;
                }
            }
            index++;
        });
    }
    leave(system);
    return status == DPU_OK ? ok() : status;
}

EXPORT dpu_error_t dpu_push_sg_xfer(struct dpu_set_t set, dpu_xfer_t xfer, const char *symbol_name,
                                    uint32_t symbol_offset, size_t length, get_block_t *get_block_info,
                                    dpu_sg_xfer_flags_t flags)
{
    struct xfer x;
    return sg_transfer(set, begin_xfer(set, &x, symbol_name, symbol_offset, length), &x, xfer, get_block_info, flags);
}

EXPORT dpu_error_t dpu_push_sg_xfer_symbol(struct dpu_set_t set, dpu_xfer_t xfer, struct dpu_symbol_t symbol,
                                           uint32_t symbol_offset, size_t length, get_block_t *get_block_info,
                                           dpu_sg_xfer_flags_t flags)
{
    struct xfer x;
    return sg_transfer(set, begin_xfer_symbol(set, &x, symbol, symbol_offset, length), &x, xfer, get_block_info, flags);
}
