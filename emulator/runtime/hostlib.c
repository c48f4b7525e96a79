/* Host library of the updlrm emulator (libupdlrm_dpu.so): the UPMEM SDK's
 * libdpu API over worker processes.
 *
 * A DPU set owns two memfds (see emu_shared.h): every DPU's MRAM, and every
 * DPU's state/WRAM image/log.  Host transfers read and write them directly;
 * launches are sent to worker processes running the DPU executable, DPU d
 * always to worker d % W of its program.  A worker that dies takes only the
 * DPU it was running with it: that DPU is reported in fault, the worker is
 * respawned and the rest of its list continues.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dpu.h>
#include <dpu_log.h>
#include <dpu_management.h>
#include <updlrm_emu_probe.h>

#include "emu_shared.h"
#include "fault_inject.h"

#define EXPORT __attribute__((visibility("default")))

extern char **environ;

/* ---- errors ------------------------------------------------------------- */

static _Thread_local char last_error[768];

EXPORT const char *updlrm_emu_last_error(void) { return last_error; }

static dpu_error_t fail(dpu_error_t code, const char *format, ...) __attribute__((format(printf, 2, 3)));
static dpu_error_t fail(dpu_error_t code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return code;
}

static dpu_error_t ok(void)
{
    last_error[0] = 0;
    return DPU_OK;
}

/* Texts of the SDK's dpu_error_to_string where known (2025.1); allocated, as
 * in 2025.1, so that callers that free() the result are right. */
static const char *error_text(dpu_error_t status)
{
    const char *text = "unknown error";
    switch (status) {
    case DPU_OK: text = "success"; break;
    case DPU_ERR_INTERNAL: text = "internal error"; break;
    case DPU_ERR_SYSTEM: text = "system error"; break;
    case DPU_ERR_DRIVER: text = "driver error"; break;
    case DPU_ERR_ALLOCATION: text = "dpu allocation error"; break;
    case DPU_ERR_INVALID_DPU_SET: text = "invalid action for this dpu set"; break;
    case DPU_ERR_INVALID_THREAD_ID: text = "invalid thread id"; break;
    case DPU_ERR_INVALID_NOTIFY_ID: text = "invalid notify id"; break;
    case DPU_ERR_INVALID_WRAM_ACCESS: text = "invalid wram access"; break;
    case DPU_ERR_INVALID_IRAM_ACCESS: text = "invalid iram access"; break;
    case DPU_ERR_INVALID_MRAM_ACCESS: text = "invalid mram access"; break;
    case DPU_ERR_INVALID_SYMBOL_ACCESS: text = "invalid memory symbol access"; break;
    case DPU_ERR_MRAM_BUSY: text = "mram is busy"; break;
    case DPU_ERR_TRANSFER_ALREADY_SET: text = "transfer buffer is already set"; break;
    case DPU_ERR_INVALID_PARALLEL_MEMORY_TRANSFER: text = "invalid parallel memory transfer"; break;
    case DPU_ERR_WRAM_FIFO_FULL: text = "wram fifo is full"; break;
    case DPU_ERR_NO_PROGRAM_LOADED: text = "no program has been loaded in the dpu set"; break;
    case DPU_ERR_DIFFERENT_DPU_PROGRAMS: text = "dpus have different programs"; break;
    case DPU_ERR_CORRUPTED_MEMORY: text = "corrupted memory"; break;
    case DPU_ERR_DPU_DISABLED: text = "dpu is disabled"; break;
    case DPU_ERR_DPU_ALREADY_RUNNING: text = "dpu is already running"; break;
    case DPU_ERR_INVALID_MEMORY_TRANSFER: text = "invalid memory transfer"; break;
    case DPU_ERR_INVALID_LAUNCH_POLICY: text = "invalid launch policy"; break;
    case DPU_ERR_DPU_FAULT: text = "dpu is in fault"; break;
    case DPU_ERR_ELF_INVALID_FILE: text = "invalid ELF file"; break;
    case DPU_ERR_ELF_NO_SUCH_FILE: text = "no such ELF file"; break;
    case DPU_ERR_ELF_NO_SUCH_SECTION: text = "no such ELF section"; break;
    case DPU_ERR_TIMEOUT: text = "timeout"; break;
    case DPU_ERR_INVALID_PROFILE: text = "invalid profile"; break;
    case DPU_ERR_UNKNOWN_SYMBOL: text = "undefined symbol"; break;
    case DPU_ERR_LOG_FORMAT: text = "log format error"; break;
    case DPU_ERR_LOG_CONTEXT_MISSING: text = "log context missing"; break;
    case DPU_ERR_LOG_BUFFER_TOO_SMALL: text = "log buffer too small"; break;
    case DPU_ERR_VPD_INVALID_FILE: text = "invalid VPD file"; break;
    case DPU_ERR_VPD_NO_REPAIR: text = "no SRAM repair in the VPD"; break;
    case DPU_ERR_NO_THREAD_PER_RANK: text = "no thread per rank"; break;
    case DPU_ERR_INVALID_BUFFER_SIZE: text = "invalid buffer size"; break;
    case DPU_ERR_NONBLOCKING_SYNC_CALLBACK: text = "non-blocking synchronous callback"; break;
    case DPU_ERR_TOO_MANY_TASKLETS: text = "the program uses more tasklets than the dpu has threads"; break;
    case DPU_ERR_SG_TOO_MANY_BLOCKS: text = "too many scatter-gather blocks"; break;
    case DPU_ERR_SG_LENGTH_MISMATCH: text = "scatter-gather length mismatch"; break;
    case DPU_ERR_SG_NOT_ACTIVATED: text = "scatter-gather transfers not activated"; break;
    case DPU_ERR_SG_NOT_MRAM_SYMBOL: text = "scatter-gather symbol is not in mram"; break;
    case DPU_ERR_ASYNC_JOBS: text = "error in an asynchronous job"; break;
    }
    return text;
}

EXPORT char *dpu_error_to_string(dpu_error_t status) { return strdup(error_text(status)); }

/* ---- data structures ---------------------------------------------------- */

enum symbol_kind { SYMBOL_WRAM, SYMBOL_WRAM_READONLY, SYMBOL_MRAM };

struct emu_symbol {
    char *name;
    uint64_t address;
    uint64_t size;
    enum symbol_kind kind;
    bool global;
};

struct worker {
    pid_t pid;
    int socket;
    bool busy;
    uint32_t *list; /* DPUs sent in the current launch */
    uint32_t list_size;
};

struct emu_system;

struct dpu_program_t {
    struct emu_system *system;
    struct dpu_program_t *next;
    char *path;
    char *temporary_path; /* written by dpu_load_from_memory, unlinked on free */
    struct emu_symbol *symbols; /* sorted by name */
    size_t nr_symbols;
    struct emu_program_layout layout;
    uint8_t *image_template; /* initial .data+.bss span */
    uint8_t *rodata;
    uint8_t *mram_init;
    uint64_t mram_init_size;
    uint64_t mram_used; /* __sys_used_mram_end - MRAM base */
    uint32_t nr_dpus;   /* DPUs currently running this program */
    uint32_t nr_workers;
    struct worker *workers;
    /* relaxed-DMA sites already reported (once per site and rule) */
    struct reported_site {
        uint64_t site;
        uint32_t kind;
    } *reported;
    uint32_t nr_reported;
    uint64_t described_site; /* last site described_where was made for */
    char described_where[512];
};

struct dpu_t {
    struct dpu_rank_t *rank;
    uint32_t index; /* in the system */
    void *xfer_buffer;
};

struct dpu_rank_t {
    struct emu_system *system;
    uint32_t index;
    uint32_t nr_dpus;
    struct dpu_t *dpus;
};

struct emu_system {
    uint32_t nr_dpus;
    uint32_t nr_ranks;
    struct dpu_rank_t *ranks;
    struct dpu_rank_t **rank_pointers;
    struct dpu_t *dpus;
    struct dpu_program_t **program_of; /* per DPU */
    struct dpu_program_t *programs;
    int ctrl_fd;
    int mram_fd;
    uint8_t *ctrl;
    uint8_t *mram;
    size_t ctrl_size;
    size_t mram_size;
    uint32_t max_workers;
    double timeout_seconds;
    uint32_t dma_mode; /* enum emu_dma_mode, from UPDLRM_EMU_DMA */
    uint32_t dpus_per_ci;
    bool sg_enabled;
    uint32_t sg_max_blocks;

    pthread_mutex_t lock;
    pthread_cond_t idle;
    bool busy; /* a launch is in flight */
    pthread_t launch_thread;
    bool launch_thread_joinable;
    uint32_t *launch_dpus;
    uint32_t launch_nr_dpus;
    struct updlrm_emu_fault_plan *faults; /* fault injection hook (fault_inject.h), NULL: none */
};

static struct emu_dpu_block *block_of(struct emu_system *system, uint32_t dpu)
{
    return (struct emu_dpu_block *)(system->ctrl + (size_t)dpu * EMU_DPU_BLOCK_SIZE);
}

static uint8_t *mram_of(struct emu_system *system, uint32_t dpu) { return system->mram + (size_t)dpu * EMU_MRAM_SIZE; }

/* ---- DPU sets ----------------------------------------------------------- */

static struct emu_system *system_of(struct dpu_set_t set)
{
    if (set.kind == DPU_SET_DPU)
        return set.dpu ? set.dpu->rank->system : NULL;
    if (set.kind == DPU_SET_RANKS && set.list.nr_ranks && set.list.ranks)
        return set.list.ranks[0]->system;
    return NULL;
}

/* Calls visit(dpu) for each DPU of the set in DPU_FOREACH order. */
#define FOR_EACH_DPU_OF_SET(set, dpu_var, body)                                                         \
    do {                                                                                                \
        if ((set).kind == DPU_SET_DPU) {                                                                \
            struct dpu_t *dpu_var = (set).dpu;                                                          \
            body;                                                                                       \
        } else {                                                                                        \
            for (uint32_t __r = 0; __r < (set).list.nr_ranks; __r++) {                                  \
                struct dpu_rank_t *__rank = (set).list.ranks[__r];                                      \
                for (uint32_t __d = 0; __d < __rank->nr_dpus; __d++) {                                  \
                    struct dpu_t *dpu_var = &__rank->dpus[__d];                                         \
                    body;                                                                               \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    } while (0)

static uint32_t count_dpus(struct dpu_set_t set)
{
    uint32_t n = 0;
    FOR_EACH_DPU_OF_SET(set, dpu, { (void)dpu; n++; });
    return n;
}

static dpu_error_t check_set(struct dpu_set_t set, struct emu_system **system_out)
{
    struct emu_system *system = system_of(set);
    if (!system)
        return fail(DPU_ERR_INVALID_DPU_SET, "invalid or empty DPU set");
    *system_out = system;
    return DPU_OK;
}

/* Every API call except dpu_status waits for an in-flight launch first:
 * the SDK queues operations on a rank behind its running program. */
static void enter(struct emu_system *system)
{
    pthread_mutex_lock(&system->lock);
    while (system->busy)
        pthread_cond_wait(&system->idle, &system->lock);
    if (system->launch_thread_joinable) {
        pthread_join(system->launch_thread, NULL);
        system->launch_thread_joinable = false;
    }
}

static void leave(struct emu_system *system) { pthread_mutex_unlock(&system->lock); }

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
    if (!it->has_next)
        return;
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
    if (!it->has_next)
        return;
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

/* ---- allocation --------------------------------------------------------- */

static int high_cloexec(int fd)
{
    /* descriptors above the worker's fixed slots make the dup2 in
     * posix_spawn order-independent */
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 64);
    close(fd);
    return high;
}

static uint32_t env_uint(const char *name, uint32_t fallback)
{
    const char *value = getenv(name);
    if (!value || !*value)
        return fallback;
    char *end;
    unsigned long parsed = strtoul(value, &end, 10);
    return (*end || parsed == 0 || parsed > 1000000) ? fallback : (uint32_t)parsed;
}

struct profile {
    uint32_t nr_ranks_available;
    uint32_t dpus_per_rank;
    uint32_t dpus_per_ci; /* DPUs per control interface (slice) of a rank */
    uint32_t nr_workers;
    double timeout_seconds;
    uint32_t dma_mode;
    bool sg_enabled;          /* sgXferEnable=true */
    uint32_t sg_max_blocks;   /* sgXferMaxBlocksPerDpu, 0: no limit */
};

/* UPDLRM_EMU_DMA: unset or "default", "hardware", "strict" (emulator/README.md). */
static dpu_error_t parse_dma_mode(uint32_t *mode)
{
    const char *value = getenv("UPDLRM_EMU_DMA");
    if (!value || !*value || !strcmp(value, "default"))
        *mode = EMU_DMA_DEFAULT;
    else if (!strcmp(value, "hardware"))
        *mode = EMU_DMA_HARDWARE;
    else if (!strcmp(value, "strict"))
        *mode = EMU_DMA_STRICT;
    else
        return fail(DPU_ERR_INVALID_PROFILE,
                    "UPDLRM_EMU_DMA='%s' is not a DMA mode: use default (decode as the DPU, warn once per site), "
                    "strict (fault) or hardware (decode silently)",
                    value);
    return DPU_OK;
}

/* Hardware ranks: 8 chips (control interfaces) x 8 DPUs (UPMEM SDK
 * documentation, "DPU chip characteristics"). */
#define EMU_CIS_PER_RANK 8u
/* A full 20-DIMM UPMEM server: 40 ranks = 2560 DPUs (UPMEM SDK documentation;
 * PrIM, Gomez-Luna et al. 2022, Sec. 2.1). */
#define EMU_MACHINE_DPUS 2560u

static bool parse_count(const char *value, unsigned long max, uint32_t *out)
{
    char *end = NULL;
    unsigned long v = strtoul(value, &end, 10);
    if (!*value || *end || v == 0 || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* The profile is the SDK's "key=value,..." string, after UPMEM_PROFILE_BASE
 * (libdpu merges that variable into every allocation's profile; a key given
 * twice takes its last value).  Topology: hardware ranks of 64 DPUs (8 CIs x
 * 8) unless "backend=simulator", whose ranks hold one DPU as the SDK's
 * functional simulator's do; nrDpusPerCI (the SDK's key, 1..8) and
 * nrDpusPerRank (the emulator's, 1..64) override the rank size. */
static dpu_error_t parse_profile(const char *text, struct profile *p)
{
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    memset(p, 0, sizeof *p);
    uint32_t ranks_from_env = env_uint("UPDLRM_EMU_NR_RANKS", 0);
    p->nr_workers = env_uint("UPDLRM_EMU_WORKERS", nproc > 0 ? (uint32_t)nproc : 1);
    dpu_error_t dma_status = parse_dma_mode(&p->dma_mode);
    if (dma_status != DPU_OK)
        return dma_status;
    const char *timeout_env = getenv("UPDLRM_EMU_TIMEOUT");
    if (timeout_env && *timeout_env)
        p->timeout_seconds = atof(timeout_env);
    const char *base = getenv("UPMEM_PROFILE_BASE");
    size_t length = (base ? strlen(base) : 0) + (text ? strlen(text) : 0) + 2;
    char *copy = malloc(length);
    if (!copy)
        return fail(DPU_ERR_SYSTEM, "out of memory");
    snprintf(copy, length, "%s,%s", base ? base : "", text ? text : "");
    dpu_error_t status = DPU_OK;
    bool simulator = false;
    uint32_t nr_ranks = 0, dpus_per_rank = 0, dpus_per_ci = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        if (!*item)
            continue;
        char *equal = strchr(item, '=');
        if (!equal) {
            status = fail(DPU_ERR_INVALID_PROFILE, "profile item '%s' is not key=value", item);
            break;
        }
        *equal = 0;
        const char *key = item, *value = equal + 1;
        char *end = NULL;
        bool bad = false;
        if (!strcmp(key, "backend")) {
            if (strcmp(value, "emulator") && strcmp(value, "simulator") && strcmp(value, "hw")) {
                status = fail(DPU_ERR_INVALID_PROFILE, "unknown backend '%s' (emulator, simulator or hw)", value);
                break;
            }
            simulator = !strcmp(value, "simulator");
        } else if (!strcmp(key, "nrRanks")) {
            bad = !parse_count(value, 100000, &nr_ranks);
        } else if (!strcmp(key, "nrDpusPerRank")) {
            bad = !parse_count(value, EMU_DPUS_PER_RANK, &dpus_per_rank);
        } else if (!strcmp(key, "nrDpusPerCI")) {
            bad = !parse_count(value, EMU_DPUS_PER_RANK / EMU_CIS_PER_RANK, &dpus_per_ci);
        } else if (!strcmp(key, "nrWorkers")) {
            bad = !parse_count(value, 100000, &p->nr_workers);
        } else if (!strcmp(key, "sgXferEnable")) {
            bad = strcmp(value, "true") && strcmp(value, "false");
            p->sg_enabled = !strcmp(value, "true");
        } else if (!strcmp(key, "sgXferMaxBlocksPerDpu")) {
            bad = !parse_count(value, UINT32_MAX, &p->sg_max_blocks);
        } else if (!strcmp(key, "timeout")) {
            double v = strtod(value, &end);
            bad = !*value || *end || v < 0;
            if (!bad)
                p->timeout_seconds = v;
        }
        /* other keys belong to the SDK's hardware/simulator backends and
         * have no meaning here; they are accepted so profiles stay portable */
        if (bad) {
            status = fail(DPU_ERR_INVALID_PROFILE, "invalid value '%s' for profile key %s", value, key);
            break;
        }
    }
    free(copy);
    if (status != DPU_OK)
        return status;
    uint32_t nr_cis = simulator ? 1 : EMU_CIS_PER_RANK;
    if (dpus_per_rank) {
        p->dpus_per_rank = dpus_per_rank;
        p->dpus_per_ci = dpus_per_rank < EMU_CIS_PER_RANK ? dpus_per_rank : EMU_CIS_PER_RANK;
    } else {
        p->dpus_per_ci = dpus_per_ci ? dpus_per_ci : (simulator ? 1 : EMU_DPUS_PER_RANK / EMU_CIS_PER_RANK);
        p->dpus_per_rank = nr_cis * p->dpus_per_ci;
    }
    /* the machine keeps its 2560 DPUs whatever the rank size */
    p->nr_ranks_available = nr_ranks ? nr_ranks
                            : ranks_from_env ? ranks_from_env
                                             : (EMU_MACHINE_DPUS + p->dpus_per_rank - 1) / p->dpus_per_rank;
    return DPU_OK;
}

static void destroy_system(struct emu_system *system);

static dpu_error_t create_system(uint32_t nr_dpus, const struct profile *profile, struct dpu_set_t *set)
{
    struct emu_system *system = calloc(1, sizeof *system);
    if (!system)
        return fail(DPU_ERR_SYSTEM, "out of memory");
    system->ctrl_fd = system->mram_fd = -1;
    system->nr_dpus = nr_dpus;
    system->nr_ranks = (nr_dpus + profile->dpus_per_rank - 1) / profile->dpus_per_rank;
    system->max_workers = profile->nr_workers;
    system->timeout_seconds = profile->timeout_seconds;
    system->dma_mode = profile->dma_mode;
    system->dpus_per_ci = profile->dpus_per_ci;
    system->sg_enabled = profile->sg_enabled;
    system->sg_max_blocks = profile->sg_max_blocks;
    pthread_mutex_init(&system->lock, NULL);
    pthread_cond_init(&system->idle, NULL);
    char why[256];
    if (updlrm_emu_fault_plan_parse(getenv(UPDLRM_EMU_FAULTS_ENV), &system->faults, why, sizeof why)) {
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "%s: %s", UPDLRM_EMU_FAULTS_ENV, why);
    }
    system->ranks = calloc(system->nr_ranks, sizeof *system->ranks);
    system->rank_pointers = calloc(system->nr_ranks, sizeof *system->rank_pointers);
    system->dpus = calloc(nr_dpus, sizeof *system->dpus);
    system->program_of = calloc(nr_dpus, sizeof *system->program_of);
    system->launch_dpus = calloc(nr_dpus, sizeof *system->launch_dpus);
    if (!system->ranks || !system->rank_pointers || !system->dpus || !system->program_of || !system->launch_dpus) {
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    for (uint32_t r = 0; r < system->nr_ranks; r++) {
        struct dpu_rank_t *rank = &system->ranks[r];
        rank->system = system;
        rank->index = r;
        rank->dpus = &system->dpus[r * profile->dpus_per_rank];
        uint32_t remaining = nr_dpus - r * profile->dpus_per_rank;
        rank->nr_dpus = remaining < profile->dpus_per_rank ? remaining : profile->dpus_per_rank;
        system->rank_pointers[r] = rank;
    }
    for (uint32_t d = 0; d < nr_dpus; d++) {
        system->dpus[d].rank = &system->ranks[d / profile->dpus_per_rank];
        system->dpus[d].index = d;
    }
    system->ctrl_size = (size_t)nr_dpus * EMU_DPU_BLOCK_SIZE;
    system->mram_size = (size_t)nr_dpus * EMU_MRAM_SIZE;
    int ctrl = memfd_create("updlrm-emu-ctrl", MFD_CLOEXEC);
    int mram = memfd_create("updlrm-emu-mram", MFD_CLOEXEC);
    if (ctrl >= 0)
        system->ctrl_fd = high_cloexec(ctrl);
    if (mram >= 0)
        system->mram_fd = high_cloexec(mram);
    if (system->ctrl_fd < 0 || system->mram_fd < 0 || ftruncate(system->ctrl_fd, (off_t)system->ctrl_size) ||
        ftruncate(system->mram_fd, (off_t)system->mram_size)) {
        int saved = errno;
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "cannot create emulator shared memory: %s", strerror(saved));
    }
    system->ctrl = mmap(NULL, system->ctrl_size, PROT_READ | PROT_WRITE, MAP_SHARED, system->ctrl_fd, 0);
    system->mram =
        mmap(NULL, system->mram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, system->mram_fd, 0);
    if (system->ctrl == MAP_FAILED || system->mram == MAP_FAILED) {
        int saved = errno;
        if (system->ctrl == MAP_FAILED)
            system->ctrl = NULL;
        if (system->mram == MAP_FAILED)
            system->mram = NULL;
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "cannot map emulator shared memory (%u DPUs): %s", nr_dpus, strerror(saved));
    }
    for (uint32_t d = 0; d < nr_dpus; d++)
        block_of(system, d)->state.fault_tasklet = -1;
    set->kind = DPU_SET_RANKS;
    set->list.nr_ranks = system->nr_ranks;
    set->list.ranks = system->rank_pointers;
    return ok();
}

/* What dpu_alloc and dpu_alloc_ranks check before they size the machine. */
static dpu_error_t begin_alloc(const char *caller, const char *profile_text, const struct dpu_set_t *dpu_set,
                               struct profile *profile)
{
    if (!dpu_set)
        return fail(DPU_ERR_INVALID_DPU_SET, "%s: NULL dpu_set", caller);
    struct updlrm_emu_fault_plan *faults = NULL;
    char why[256];
    const char *rules = getenv(UPDLRM_EMU_FAULTS_ENV);
    if (updlrm_emu_fault_plan_parse(rules, &faults, why, sizeof why))
        return fail(DPU_ERR_INVALID_PROFILE, "%s: %s: %s", caller, UPDLRM_EMU_FAULTS_ENV, why);
    bool refused = updlrm_emu_fault_plan_refuses_alloc(faults);
    updlrm_emu_fault_plan_free(faults);
    if (refused)
        return fail(DPU_ERR_ALLOCATION, "%s: refused by the fault injection hook (%s=%s)", caller,
                    UPDLRM_EMU_FAULTS_ENV, rules);
    return parse_profile(profile_text, profile);
}

EXPORT dpu_error_t dpu_alloc(uint32_t nr_dpus, const char *profile_text, struct dpu_set_t *dpu_set)
{
    struct profile profile;
    dpu_error_t status = begin_alloc("dpu_alloc", profile_text, dpu_set, &profile);
    if (status != DPU_OK)
        return status;
    uint64_t available = (uint64_t)profile.nr_ranks_available * profile.dpus_per_rank;
    if (nr_dpus == DPU_ALLOCATE_ALL)
        nr_dpus = (uint32_t)available;
    if (nr_dpus == 0)
        return fail(DPU_ERR_ALLOCATION, "dpu_alloc: cannot allocate 0 DPUs");
    if (nr_dpus > available)
        return fail(DPU_ERR_ALLOCATION,
                    "dpu_alloc: %u DPUs requested but the emulated machine has %u ranks x %u DPUs = %llu "
                    "(set nrRanks=N in the profile or UPDLRM_EMU_NR_RANKS)",
                    nr_dpus, profile.nr_ranks_available, profile.dpus_per_rank, (unsigned long long)available);
    return create_system(nr_dpus, &profile, dpu_set);
}

EXPORT dpu_error_t dpu_alloc_ranks(uint32_t nr_ranks, const char *profile_text, struct dpu_set_t *dpu_set)
{
    struct profile profile;
    dpu_error_t status = begin_alloc("dpu_alloc_ranks", profile_text, dpu_set, &profile);
    if (status != DPU_OK)
        return status;
    if (nr_ranks == DPU_ALLOCATE_ALL)
        nr_ranks = profile.nr_ranks_available;
    if (nr_ranks == 0 || nr_ranks > profile.nr_ranks_available)
        return fail(DPU_ERR_ALLOCATION, "dpu_alloc_ranks: %u ranks requested, %u available", nr_ranks,
                    profile.nr_ranks_available);
    return create_system(nr_ranks * profile.dpus_per_rank, &profile, dpu_set);
}

static void stop_workers(struct dpu_program_t *program)
{
    for (uint32_t w = 0; w < program->nr_workers; w++) {
        struct worker *worker = &program->workers[w];
        if (worker->socket >= 0)
            close(worker->socket); /* EOF makes the worker exit */
        worker->socket = -1;
        if (worker->pid > 0) {
            int wstatus;
            while (waitpid(worker->pid, &wstatus, 0) < 0 && errno == EINTR)
                ;
        }
        worker->pid = 0;
        free(worker->list);
        worker->list = NULL;
    }
    free(program->workers);
    program->workers = NULL;
    program->nr_workers = 0;
}

static void free_program(struct dpu_program_t *program)
{
    stop_workers(program);
    for (size_t i = 0; i < program->nr_symbols; i++)
        free(program->symbols[i].name);
    free(program->symbols);
    free(program->image_template);
    free(program->rodata);
    free(program->mram_init);
    free(program->reported);
    if (program->temporary_path) {
        unlink(program->temporary_path);
        free(program->temporary_path);
    }
    free(program->path);
    free(program);
}

static void destroy_system(struct emu_system *system)
{
    for (struct dpu_program_t *p = system->programs, *next; p; p = next) {
        next = p->next;
        free_program(p);
    }
    if (system->ctrl)
        munmap(system->ctrl, system->ctrl_size);
    if (system->mram)
        munmap(system->mram, system->mram_size);
    if (system->ctrl_fd >= 0)
        close(system->ctrl_fd);
    if (system->mram_fd >= 0)
        close(system->mram_fd);
    pthread_mutex_destroy(&system->lock);
    pthread_cond_destroy(&system->idle);
    free(system->ranks);
    free(system->rank_pointers);
    free(system->dpus);
    free(system->program_of);
    free(system->launch_dpus);
    updlrm_emu_fault_plan_free(system->faults);
    free(system);
}

EXPORT dpu_error_t dpu_free(struct dpu_set_t dpu_set)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    if (dpu_set.kind != DPU_SET_RANKS || dpu_set.list.ranks != system->rank_pointers)
        return fail(DPU_ERR_INVALID_DPU_SET, "dpu_free: the set was not returned by dpu_alloc");
    enter(system);
    leave(system);
    destroy_system(system);
    return ok();
}

EXPORT dpu_error_t dpu_get_nr_ranks(struct dpu_set_t dpu_set, uint32_t *nr_ranks)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    *nr_ranks = dpu_set.kind == DPU_SET_DPU ? 1 : dpu_set.list.nr_ranks;
    return ok();
}

EXPORT dpu_error_t dpu_get_nr_dpus(struct dpu_set_t dpu_set, uint32_t *nr_dpus)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    *nr_dpus = count_dpus(dpu_set);
    return ok();
}

/* ---- ELF loading -------------------------------------------------------- */

static int compare_symbols(const void *a, const void *b)
{
    const struct emu_symbol *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return (int)y->global - (int)x->global; /* globals first */
}

static const struct emu_symbol *find_symbol(const struct dpu_program_t *program, const char *name)
{
    size_t lo = 0, hi = program->nr_symbols;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(program->symbols[mid].name, name);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < program->nr_symbols && !strcmp(program->symbols[lo].name, name))
        return &program->symbols[lo];
    return NULL;
}

#if defined(__x86_64__)
#define EMU_ELF_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define EMU_ELF_MACHINE EM_AARCH64
#endif

static dpu_error_t parse_program(const char *path, struct dpu_program_t *program)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(DPU_ERR_ELF_NO_SUCH_FILE, "cannot open DPU program '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || st.st_size < (off_t)sizeof(Elf64_Ehdr)) {
        close(fd);
        return fail(DPU_ERR_ELF_INVALID_FILE, "'%s' is not an ELF file", path);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *file = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (file == MAP_FAILED)
        return fail(DPU_ERR_SYSTEM, "cannot map '%s': %s", path, strerror(errno));
    dpu_error_t status = DPU_OK;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)file;
#define BAD(...)                                                                                        \
    do {                                                                                                \
        status = fail(DPU_ERR_ELF_INVALID_FILE, __VA_ARGS__);                                           \
        goto out;                                                                                       \
    } while (0)
    /* e_machine of the UPMEM SDK's DPU binaries (dpu-upmem-dpurte-clang emits
     * 32-bit little-endian ELF files for machine 245) */
    if (!memcmp(eh->e_ident, ELFMAG, SELFMAG) && eh->e_ident[EI_CLASS] == ELFCLASS32 &&
        ((const Elf32_Ehdr *)file)->e_machine == 245)
        BAD("'%s' is a DPU binary built by the UPMEM SDK's compiler (32-bit ELF, machine EM_DPU): it runs on real "
            "DPUs or the SDK's simulator, not on the emulator. Build the DPU sources for the emulator instead: "
            "`updlrm emu build --dpu <sources>`, updlrm.emulator.compile_dpu_program, or the SDK's Makefile with "
            "`updlrm emu shims` on PATH",
            path);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64)
        BAD("'%s' is not a 64-bit ELF file (DPU programs for the emulator are built with the updlrm compiler "
            "driver)",
            path);
    if (eh->e_machine != EMU_ELF_MACHINE)
        BAD("'%s' was built for another machine (e_machine %u); a program built by dpu-upmem-dpurte-clang for "
            "real DPUs cannot run on the emulator",
            path, eh->e_machine);
    if (eh->e_type != ET_EXEC)
        BAD("'%s' is not a non-PIE executable", path);
    if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
        eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > size || eh->e_shstrndx >= eh->e_shnum)
        BAD("'%s' has no valid section headers", path);
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(file + eh->e_shoff);
    const Elf64_Shdr *shstr = &sh[eh->e_shstrndx];
    if (shstr->sh_offset + shstr->sh_size > size)
        BAD("'%s': bad section name table", path);
    const char *names = (const char *)file + shstr->sh_offset;
    const Elf64_Shdr *data = NULL, *bss = NULL, *rodata = NULL, *mram = NULL, *config = NULL,
                     *symtab = NULL, *atomic = NULL;
    int data_index = -1, bss_index = -1, rodata_index = -1, mram_index = -1, mram_noinit_index = -1, atomic_index = -1;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_name >= shstr->sh_size)
            continue;
        const char *name = names + sh[i].sh_name;
        if (!strcmp(name, ".data"))
            data = &sh[i], data_index = i;
        else if (!strcmp(name, ".bss"))
            bss = &sh[i], bss_index = i;
        else if (!strcmp(name, ".rodata"))
            rodata = &sh[i], rodata_index = i;
        else if (!strcmp(name, ".mram"))
            mram = &sh[i], mram_index = i;
        else if (!strcmp(name, ".mram.noinit"))
            mram_noinit_index = i;
        else if (!strcmp(name, EMU_CONFIG_SECTION))
            config = &sh[i];
        else if (!strcmp(name, ".atomic"))
            atomic = &sh[i], atomic_index = i;
        else if (sh[i].sh_type == SHT_SYMTAB)
            symtab = &sh[i];
    }
    if (!config || config->sh_size < sizeof(struct emu_program_config) ||
        config->sh_offset + sizeof(struct emu_program_config) > size)
        BAD("'%s' is not an updlrm emulator DPU program (no %s section); build it with "
            "updlrm.emulator.compile_dpu_program or `updlrm emu build`",
            path, EMU_CONFIG_SECTION);
    struct emu_program_config cfg;
    memcpy(&cfg, file + config->sh_offset, sizeof cfg);
    if (cfg.magic != EMU_CONFIG_MAGIC || cfg.protocol_version != EMU_PROTOCOL_VERSION)
        BAD("'%s' was built for another version of the updlrm emulator; rebuild it", path);
    if (cfg.nr_tasklets > EMU_MAX_TASKLETS) {
        status = fail(DPU_ERR_TOO_MANY_TASKLETS, "'%s': NR_TASKLETS=%u but a DPU has %u hardware threads", path,
                      cfg.nr_tasklets, EMU_MAX_TASKLETS);
        goto out;
    }
    if (cfg.nr_tasklets == 0)
        BAD("'%s': NR_TASKLETS=%u is out of range [1, %u]", path, cfg.nr_tasklets, EMU_MAX_TASKLETS);
    if (!data || !bss || !symtab)
        BAD("'%s' lacks .data, .bss or .symtab (was it stripped?)", path);
    if (bss->sh_addr < data->sh_addr)
        BAD("'%s': unexpected layout, .bss before .data", path);

    struct emu_program_layout *layout = &program->layout;
    memset(layout, 0, sizeof *layout);
    layout->protocol_version = EMU_PROTOCOL_VERSION;
    layout->nr_tasklets = cfg.nr_tasklets;
    layout->wram_span_start = data->sh_addr;
    layout->wram_span_size = bss->sh_addr + bss->sh_size - data->sh_addr;
    if (atomic && atomic->sh_size) {
        if (atomic->sh_addr < layout->wram_span_start ||
            atomic->sh_addr + atomic->sh_size > layout->wram_span_start + layout->wram_span_size)
            BAD("'%s': .atomic lies outside .data..bss", path);
        layout->atomic_start = atomic->sh_addr;
        layout->atomic_size = atomic->sh_size;
    }
    layout->rodata_start = rodata ? rodata->sh_addr : 0;
    layout->rodata_size = rodata ? rodata->sh_size : 0;
    uint64_t stacks = 0;
    for (uint32_t t = 0; t < cfg.nr_tasklets; t++) {
        layout->stack_size[t] = cfg.stack_size[t];
        stacks += cfg.stack_size[t];
    }
    /* atomic bits live in the DPU's separate atomic register, not in WRAM */
    uint64_t globals = data->sh_size + bss->sh_size + (rodata ? rodata->sh_size : 0);
    if (globals + stacks > EMU_WRAM_SIZE)
        BAD("'%s': WRAM overflow: globals %llu B (.data %llu + .bss %llu + .rodata %llu) + stacks %llu B "
            "(%u tasklets) = %llu B > %u B",
            path, (unsigned long long)globals, (unsigned long long)data->sh_size, (unsigned long long)bss->sh_size,
            (unsigned long long)(rodata ? rodata->sh_size : 0), (unsigned long long)stacks, cfg.nr_tasklets,
            (unsigned long long)(globals + stacks), EMU_WRAM_SIZE);
    layout->heap_offset = (uint32_t)((layout->wram_span_size + 7) & ~7ull);
    layout->heap_capacity = (uint32_t)((EMU_WRAM_SIZE - globals - stacks) & ~7ull);
    if (layout->heap_offset + (uint64_t)layout->heap_capacity > EMU_IMAGE_SIZE)
        BAD("'%s': WRAM span of %llu B does not fit the emulator's image", path,
            (unsigned long long)layout->wram_span_size);

    program->image_template = calloc(1, layout->wram_span_size ? layout->wram_span_size : 1);
    if (!program->image_template)
        BAD("out of memory");
    if (data->sh_type == SHT_PROGBITS) {
        if (data->sh_offset + data->sh_size > size)
            BAD("'%s': truncated .data", path);
        memcpy(program->image_template, file + data->sh_offset, data->sh_size);
    }
    if (rodata && rodata->sh_type == SHT_PROGBITS && rodata->sh_offset + rodata->sh_size <= size) {
        program->rodata = malloc(rodata->sh_size ? rodata->sh_size : 1);
        if (!program->rodata)
            BAD("out of memory");
        memcpy(program->rodata, file + rodata->sh_offset, rodata->sh_size);
    }
    if (mram && mram->sh_type == SHT_PROGBITS && mram->sh_size) {
        if (mram->sh_addr < EMU_MRAM_BASE || mram->sh_offset + mram->sh_size > size)
            BAD("'%s': bad .mram section", path);
        program->mram_init_size = mram->sh_addr - EMU_MRAM_BASE + mram->sh_size;
        program->mram_init = calloc(1, program->mram_init_size);
        if (!program->mram_init)
            BAD("out of memory");
        memcpy(program->mram_init + (mram->sh_addr - EMU_MRAM_BASE), file + mram->sh_offset, mram->sh_size);
    }

    const Elf64_Shdr *strtab = &sh[symtab->sh_link < eh->e_shnum ? symtab->sh_link : 0];
    if (symtab->sh_offset + symtab->sh_size > size || strtab->sh_offset + strtab->sh_size > size)
        BAD("'%s': bad symbol table", path);
    const Elf64_Sym *syms = (const Elf64_Sym *)(file + symtab->sh_offset);
    size_t nr_syms = symtab->sh_size / sizeof(Elf64_Sym);
    const char *strings = (const char *)file + strtab->sh_offset;
    program->symbols = calloc(nr_syms ? nr_syms : 1, sizeof *program->symbols);
    if (!program->symbols)
        BAD("out of memory");
    bool found_heap_pointer = false;
    for (size_t i = 0; i < nr_syms; i++) {
        const Elf64_Sym *s = &syms[i];
        if (s->st_name >= strtab->sh_size || !strings[s->st_name])
            continue;
        int type = ELF64_ST_TYPE(s->st_info);
        if (type != STT_OBJECT && type != STT_NOTYPE)
            continue;
        enum symbol_kind kind;
        int shndx = s->st_shndx;
        const char *name = strings + s->st_name;
        uint64_t symbol_size = s->st_size;
        if (!strcmp(name, DPU_MRAM_HEAP_POINTER_NAME)) {
            kind = SYMBOL_MRAM;
            if (s->st_value < EMU_MRAM_BASE || s->st_value > EMU_MRAM_BASE + EMU_MRAM_SIZE)
                BAD("'%s': %s outside MRAM", path, name);
            symbol_size = EMU_MRAM_BASE + EMU_MRAM_SIZE - s->st_value;
            program->mram_used = s->st_value - EMU_MRAM_BASE;
            found_heap_pointer = true;
        } else if (shndx == data_index || shndx == bss_index || shndx == atomic_index) {
            kind = SYMBOL_WRAM;
        } else if (shndx == rodata_index) {
            kind = SYMBOL_WRAM_READONLY;
        } else if (shndx == mram_index || shndx == mram_noinit_index) {
            kind = SYMBOL_MRAM;
        } else {
            continue;
        }
        if (type == STT_NOTYPE && kind != SYMBOL_MRAM)
            continue; /* linker markers such as __bss_start */
        struct emu_symbol *out = &program->symbols[program->nr_symbols++];
        out->name = strdup(name);
        if (!out->name)
            BAD("out of memory");
        out->address = s->st_value;
        out->size = symbol_size;
        out->kind = kind;
        out->global = ELF64_ST_BIND(s->st_info) != STB_LOCAL;
    }
    if (!found_heap_pointer)
        BAD("'%s' lacks %s: not linked by the updlrm compiler driver", path, DPU_MRAM_HEAP_POINTER_NAME);
    qsort(program->symbols, program->nr_symbols, sizeof *program->symbols, compare_symbols);
    /* keep the first (global) definition of each name */
    size_t unique = 0;
    for (size_t i = 0; i < program->nr_symbols; i++) {
        if (unique && !strcmp(program->symbols[unique - 1].name, program->symbols[i].name)) {
            free(program->symbols[i].name);
            continue;
        }
        program->symbols[unique++] = program->symbols[i];
    }
    program->nr_symbols = unique;
#undef BAD
out:
    munmap(file, size);
    return status;
}

static void detach_dpu(struct emu_system *system, uint32_t d)
{
    struct dpu_program_t *old = system->program_of[d];
    if (!old)
        return;
    system->program_of[d] = NULL;
    if (--old->nr_dpus)
        return;
    /* like the SDK's reference-counted programs: the last DPU frees it */
    for (struct dpu_program_t **link = &system->programs; *link; link = &(*link)->next)
        if (*link == old) {
            *link = old->next;
            break;
        }
    free_program(old);
}

static void reset_dpu(struct emu_system *system, uint32_t d, struct dpu_program_t *program)
{
    struct emu_dpu_block *b = block_of(system, d);
    struct emu_dpu_state *s = &b->state;
    s->status = EMU_DPU_IDLE;
    s->fault_kind = EMU_FAULT_NONE;
    s->fault_tasklet = -1;
    s->fault_msg[0] = 0;
    s->heap_used = 0;
    s->buddy_offset = 0;
    s->log_write_pos = 0;
    s->perfcounter_base = 0;
    s->perfcounter_mode = 1;
    s->dpu_cycles = 0;
    memcpy(b->image, program->image_template, program->layout.wram_span_size);
    if (program->mram_init_size)
        memcpy(mram_of(system, d), program->mram_init, program->mram_init_size);
}

static dpu_error_t load_path(struct dpu_set_t set, const char *path, const char *temporary_path,
                             struct dpu_program_t **program_out)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    struct dpu_program_t *program = calloc(1, sizeof *program);
    if (!program)
        return fail(DPU_ERR_SYSTEM, "out of memory");
    program->system = system;
    program->path = realpath(path, NULL);
    dpu_error_t status = parse_program(path, program);
    if (status == DPU_OK && !program->path)
        status = fail(DPU_ERR_ELF_NO_SUCH_FILE, "cannot resolve '%s'", path);
    if (status != DPU_OK) {
        free_program(program);
        return status;
    }
    if (temporary_path)
        program->temporary_path = strdup(temporary_path);
    enter(system);
    FOR_EACH_DPU_OF_SET(set, dpu, {
        detach_dpu(system, dpu->index);
        system->program_of[dpu->index] = program;
        program->nr_dpus++;
        reset_dpu(system, dpu->index, program);
    });
    program->next = system->programs;
    system->programs = program;
    leave(system);
    if (program_out)
        *program_out = program;
    return ok();
}

EXPORT dpu_error_t dpu_load(struct dpu_set_t dpu_set, const char *binary_path, struct dpu_program_t **program)
{
    if (!binary_path)
        return fail(DPU_ERR_ELF_NO_SUCH_FILE, "dpu_load: NULL path");
    return load_path(dpu_set, binary_path, NULL, program);
}

EXPORT dpu_error_t dpu_load_from_memory(struct dpu_set_t dpu_set, uint8_t *buffer, size_t buffer_size,
                                        struct dpu_program_t **program)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/updlrm-dpu-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return fail(DPU_ERR_SYSTEM, "dpu_load_from_memory: cannot create %s: %s", path, strerror(errno));
    bool written = write(fd, buffer, buffer_size) == (ssize_t)buffer_size && fchmod(fd, 0700) == 0;
    close(fd);
    if (!written) {
        unlink(path);
        return fail(DPU_ERR_SYSTEM, "dpu_load_from_memory: cannot write %s", path);
    }
    dpu_error_t status = load_path(dpu_set, path, path, program);
    if (status != DPU_OK)
        unlink(path);
    return status;
}

EXPORT dpu_error_t dpu_load_from_incbin(struct dpu_set_t dpu_set, struct dpu_incbin_t *incbin,
                                        struct dpu_program_t **program)
{
    return dpu_load_from_memory(dpu_set, incbin->buffer, incbin->size, program);
}

EXPORT dpu_error_t dpu_get_symbol(struct dpu_program_t *program, const char *symbol_name, struct dpu_symbol_t *symbol)
{
    if (!program || !symbol_name || !symbol)
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "dpu_get_symbol: NULL argument");
    const struct emu_symbol *s = find_symbol(program, symbol_name);
    if (!s)
        return fail(DPU_ERR_UNKNOWN_SYMBOL, "unknown symbol '%s' in %s", symbol_name, program->path);
    symbol->address = (uint32_t)s->address;
    symbol->size = (uint32_t)s->size;
    return ok();
}

/* ---- workers ------------------------------------------------------------ */

static dpu_error_t spawn_worker(struct dpu_program_t *program, uint32_t w)
{
    struct emu_system *system = program->system;
    struct worker *worker = &program->workers[w];
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair))
        return fail(DPU_ERR_SYSTEM, "socketpair: %s", strerror(errno));
    int host_end = high_cloexec(pair[0]);
    int worker_end = high_cloexec(pair[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, system->ctrl_fd, EMU_WORKER_CTRL_FD);
    posix_spawn_file_actions_adddup2(&actions, system->mram_fd, EMU_WORKER_MRAM_FD);
    posix_spawn_file_actions_adddup2(&actions, worker_end, EMU_WORKER_CMD_FD);
    size_t nr_env = 0;
    while (environ[nr_env])
        nr_env++;
    char **env = calloc(nr_env + 2, sizeof *env);
    char marker[64];
    snprintf(marker, sizeof marker, "%s=%u", EMU_WORKER_ENV, w);
    size_t e = 0;
    for (size_t i = 0; i < nr_env; i++)
        if (strncmp(environ[i], EMU_WORKER_ENV "=", sizeof EMU_WORKER_ENV))
            env[e++] = environ[i];
    env[e++] = marker;
    env[e] = NULL;
    char *argv[] = { program->path, NULL };
    pid_t pid;
    int rc = posix_spawn(&pid, program->path, &actions, NULL, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    free(env);
    close(worker_end);
    if (rc) {
        close(host_end);
        return fail(DPU_ERR_SYSTEM, "cannot start worker for %s: %s", program->path, strerror(rc));
    }
    worker->pid = pid;
    worker->socket = host_end;
    worker->busy = false;
    return DPU_OK;
}

static dpu_error_t ensure_workers(struct dpu_program_t *program)
{
    if (program->workers)
        return DPU_OK;
    uint32_t n = program->system->max_workers;
    if (n > program->nr_dpus)
        n = program->nr_dpus;
    if (n == 0)
        n = 1;
    program->workers = calloc(n, sizeof *program->workers);
    if (!program->workers)
        return fail(DPU_ERR_SYSTEM, "out of memory");
    program->nr_workers = n;
    for (uint32_t w = 0; w < n; w++) {
        program->workers[w].socket = -1;
        program->workers[w].list = calloc(program->system->nr_dpus, sizeof(uint32_t));
        if (!program->workers[w].list)
            return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    for (uint32_t w = 0; w < n; w++) {
        dpu_error_t status = spawn_worker(program, w);
        if (status != DPU_OK)
            return status;
    }
    return DPU_OK;
}

static bool send_all(int fd, const void *data, size_t size)
{
    const uint8_t *p = data;
    while (size) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        size -= (size_t)n;
    }
    return true;
}

static bool send_launch(struct dpu_program_t *program, struct worker *worker)
{
    struct emu_launch_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.magic = EMU_LAUNCH_MAGIC;
    msg.nr_dpus = worker->list_size;
    msg.layout = program->layout;
    msg.layout.dma_mode = program->system->dma_mode;
    worker->busy = true;
    return send_all(worker->socket, &msg, sizeof msg) &&
           send_all(worker->socket, worker->list, worker->list_size * sizeof(uint32_t));
}

static void describe_exit(int wstatus, char *out, size_t size)
{
    if (WIFSIGNALED(wstatus))
        snprintf(out, size, "killed by signal %d (%s)", WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
    else if (WIFEXITED(wstatus))
        snprintf(out, size, "exited with status %d", WEXITSTATUS(wstatus));
    else
        snprintf(out, size, "stopped");
}

/* The worker is gone (crash, exit or timeout kill): fault the DPU it was
 * running, respawn it and resend the DPUs it had not started. */
static void recover_worker(struct dpu_program_t *program, uint32_t w, enum emu_fault_kind kind)
{
    struct emu_system *system = program->system;
    struct worker *worker = &program->workers[w];
    int wstatus = 0;
    close(worker->socket);
    worker->socket = -1;
    while (waitpid(worker->pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    char why[128];
    describe_exit(wstatus, why, sizeof why);
    uint32_t remaining = 0;
    for (uint32_t i = 0; i < worker->list_size; i++) {
        uint32_t d = worker->list[i];
        struct emu_dpu_state *s = &block_of(system, d)->state;
        uint32_t status = __atomic_load_n(&s->status, __ATOMIC_ACQUIRE);
        if (status == EMU_DPU_RUNNING) {
            s->fault_kind = kind;
            s->fault_tasklet = (int32_t)s->current_tasklet;
            if (kind == EMU_FAULT_TIMEOUT)
                snprintf(s->fault_msg, sizeof s->fault_msg,
                         "launch exceeded the %.3g s timeout while tasklet %u was running (worker killed)",
                         system->timeout_seconds, s->current_tasklet);
            else
                snprintf(s->fault_msg, sizeof s->fault_msg, "tasklet %u crashed: worker process %s",
                         s->current_tasklet, why);
            s->dpu_counters.faults++;
            s->status = EMU_DPU_FAULT;
        } else if (status == EMU_DPU_QUEUED) {
            worker->list[remaining++] = d;
        }
    }
    worker->list_size = remaining;
    worker->busy = false;
    if (spawn_worker(program, w) != DPU_OK) {
        for (uint32_t i = 0; i < remaining; i++) {
            struct emu_dpu_state *s = &block_of(system, worker->list[i])->state;
            s->fault_kind = EMU_FAULT_CRASH;
            s->fault_tasklet = -1;
            snprintf(s->fault_msg, sizeof s->fault_msg, "could not restart the worker: %.200s", last_error);
            s->status = EMU_DPU_FAULT;
        }
        worker->list_size = 0;
        return;
    }
    /* after a timeout the rest is reported "not run" (run_launch), not run late */
    if (remaining && kind != EMU_FAULT_TIMEOUT && !send_launch(program, worker))
        worker->busy = true; /* the next poll sees the failure */
}

/* ---- source lines of DPU program sites ---------------------------------- */

/* "file:line (function)" of a return address in a DPU program (a non-PIE
 * executable built with -g, so addresses are the same in every worker),
 * through binutils' addr2line, which the compiler driver needs anyway; the
 * bare address when that fails.  The last answer is cached per program. */
static const char *describe_site(struct dpu_program_t *program, uint64_t site)
{
    if (program->described_site == site && site)
        return program->described_where;
    char *out = program->described_where;
    size_t size = sizeof program->described_where;
    snprintf(out, size, "address 0x%llx", (unsigned long long)site);
    program->described_site = site;
    int fds[2];
    if (!site || pipe2(fds, O_CLOEXEC))
        return out;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    char address[32];
    /* the return address follows the call: look up the byte before it */
    snprintf(address, sizeof address, "0x%llx", (unsigned long long)(site - 1));
    char *argv[] = { (char *)"addr2line", (char *)"-f", (char *)"-e", program->path, address, NULL };
    pid_t pid;
    int rc = posix_spawnp(&pid, "addr2line", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    char text[1024];
    size_t used = 0;
    while (rc == 0 && used < sizeof text - 1) {
        ssize_t n = read(fds[0], text + used, sizeof text - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
    }
    close(fds[0]);
    if (rc)
        return out;
    int wstatus;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    text[used] = 0;
    char *function = text, *location = strchr(text, '\n');
    if (!location)
        return out;
    *location++ = 0;
    location[strcspn(location, "\n")] = 0;
    char *discriminator = strstr(location, " (discriminator");
    if (discriminator)
        *discriminator = 0;
    if (!*location || location[0] == '?')
        return out;
    snprintf(out, size, "%.300s (%.200s)", location, function);
    return out;
}

/* Default DMA mode: each relaxed DMA rule is reported once per program site. */
static void report_dma_warnings(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus)
{
    if (system->dma_mode != EMU_DMA_DEFAULT)
        return;
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct emu_dpu_state *s = &block_of(system, dpus[i])->state;
        struct dpu_program_t *program = system->program_of[dpus[i]];
        uint32_t n = s->nr_dma_warnings < EMU_MAX_DMA_WARNINGS ? s->nr_dma_warnings : EMU_MAX_DMA_WARNINGS;
        for (uint32_t k = 0; k < n && program; k++) {
            const struct emu_dma_warning *w = &s->dma_warnings[k];
            bool seen = false;
            for (uint32_t r = 0; r < program->nr_reported && !seen; r++)
                seen = program->reported[r].site == w->site && program->reported[r].kind == w->kind;
            if (seen)
                continue;
            struct reported_site *grown =
                realloc(program->reported, (program->nr_reported + 1) * sizeof *program->reported);
            if (!grown)
                return;
            program->reported = grown;
            program->reported[program->nr_reported].site = w->site;
            program->reported[program->nr_reported].kind = w->kind;
            program->nr_reported++;
            char text[EMU_FAULT_MSG_SIZE];
            emu_describe_dma_relaxation(text, sizeof text, w);
            const struct dpu_t *dpu = &system->dpus[dpus[i]];
            fprintf(stderr,
                    "updlrm emulator: warning: DPU %u (rank %u, dpu %u) tasklet %d: %s, at %s. The SDK forbids "
                    "this DMA but the DPU accepts it; UPDLRM_EMU_DMA=strict makes it a fault, "
                    "UPDLRM_EMU_DMA=hardware silences this warning.\n",
                    dpus[i], dpu->rank->index, (uint32_t)(dpu - dpu->rank->dpus), w->tasklet, text,
                    describe_site(program, w->site));
        }
        s->nr_dma_warnings = 0;
    }
    fflush(stderr);
}

/* A DMA fault names the program's source line. */
static void annotate_fault_sites(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus)
{
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct emu_dpu_state *s = &block_of(system, dpus[i])->state;
        struct dpu_program_t *program = system->program_of[dpus[i]];
        if (s->status != EMU_DPU_FAULT || !s->fault_site || !program)
            continue;
        size_t length = strlen(s->fault_msg);
        snprintf(s->fault_msg + length, sizeof s->fault_msg - length, " at %s",
                 describe_site(program, s->fault_site));
        s->fault_site = 0;
    }
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static dpu_error_t run_launch(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus)
{
    for (struct dpu_program_t *p = system->programs; p; p = p->next)
        if (p->workers)
            for (uint32_t w = 0; w < p->nr_workers; w++)
                p->workers[w].list_size = 0;
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct dpu_program_t *program = system->program_of[dpus[i]];
        dpu_error_t status = ensure_workers(program);
        if (status != DPU_OK)
            return status;
        struct worker *worker = &program->workers[dpus[i] % program->nr_workers];
        worker->list[worker->list_size++] = dpus[i];
        block_of(system, dpus[i])->state.status = EMU_DPU_QUEUED;
        updlrm_emu_fault_plan_arm(system->faults, system->nr_dpus, dpus[i], system->timeout_seconds > 0,
                                  &block_of(system, dpus[i])->state.inject);
    }
    uint32_t nr_busy = 0;
    for (struct dpu_program_t *p = system->programs; p; p = p->next)
        for (uint32_t w = 0; w < p->nr_workers; w++)
            if (p->workers[w].list_size) {
                nr_busy++;
                if (!send_launch(p, &p->workers[w]))
                    p->workers[w].busy = true; /* detected as a dead worker below */
            }
    struct pollfd *fds = calloc(nr_busy ? nr_busy : 1, sizeof *fds);
    struct {
        struct dpu_program_t *program;
        uint32_t worker;
    } *owners = calloc(nr_busy ? nr_busy : 1, sizeof *owners);
    if (!fds || !owners) {
        free(fds);
        free(owners);
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    double deadline = system->timeout_seconds > 0 ? now_seconds() + system->timeout_seconds : 0;
    for (;;) {
        nfds_t n = 0;
        for (struct dpu_program_t *p = system->programs; p; p = p->next)
            for (uint32_t w = 0; w < p->nr_workers; w++)
                if (p->workers[w].busy) {
                    fds[n].fd = p->workers[w].socket;
                    fds[n].events = POLLIN;
                    fds[n].revents = 0;
                    owners[n].program = p;
                    owners[n].worker = w;
                    n++;
                }
        if (n == 0)
            break;
        int timeout_ms = -1;
        if (deadline > 0) {
            double left = deadline - now_seconds();
            timeout_ms = left <= 0 ? 0 : (int)(left * 1000) + 1;
        }
        int ready = poll(fds, n, timeout_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready == 0) {
            for (nfds_t i = 0; i < n; i++) {
                struct worker *worker = &owners[i].program->workers[owners[i].worker];
                kill(worker->pid, SIGKILL);
                recover_worker(owners[i].program, owners[i].worker, EMU_FAULT_TIMEOUT);
                worker->busy = false; /* no retry of the rest after a timeout */
                for (uint32_t k = 0; k < worker->list_size; k++) {
                    struct emu_dpu_state *s = &block_of(system, worker->list[k])->state;
                    s->fault_kind = EMU_FAULT_TIMEOUT;
                    s->fault_tasklet = -1;
                    snprintf(s->fault_msg, sizeof s->fault_msg, "not run: launch timed out");
                    s->status = EMU_DPU_FAULT;
                }
            }
            continue;
        }
        for (nfds_t i = 0; i < n; i++) {
            if (!fds[i].revents)
                continue;
            struct dpu_program_t *p = owners[i].program;
            struct worker *worker = &p->workers[owners[i].worker];
            struct emu_launch_reply reply;
            ssize_t got = recv(worker->socket, &reply, sizeof reply, MSG_WAITALL);
            if (got == (ssize_t)sizeof reply && reply.magic == EMU_LAUNCH_MAGIC && reply.nr_done == worker->list_size)
                worker->busy = false;
            else
                recover_worker(p, owners[i].worker, EMU_FAULT_CRASH);
        }
    }
    free(fds);
    free(owners);
    report_dma_warnings(system, dpus, nr_dpus);
    annotate_fault_sites(system, dpus, nr_dpus);
    uint32_t first_fault = UINT32_MAX;
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct emu_dpu_state *s = &block_of(system, dpus[i])->state;
        if (s->status == EMU_DPU_FAULT) {
            if (first_fault == UINT32_MAX)
                first_fault = dpus[i];
        } else if (s->status != EMU_DPU_DONE) {
            s->status = EMU_DPU_FAULT;
            s->fault_kind = EMU_FAULT_CRASH;
            snprintf(s->fault_msg, sizeof s->fault_msg, "worker did not run this DPU");
            if (first_fault == UINT32_MAX)
                first_fault = dpus[i];
        }
    }
    if (first_fault != UINT32_MAX) {
        struct emu_dpu_state *s = &block_of(system, first_fault)->state;
        dpu_error_t code = s->fault_kind == EMU_FAULT_TIMEOUT ? DPU_ERR_TIMEOUT : DPU_ERR_DPU_FAULT;
        const struct dpu_t *dpu = &system->dpus[first_fault];
        uint32_t member = (uint32_t)(dpu - dpu->rank->dpus);
        if (s->fault_tasklet >= 0)
            return fail(code, "DPU %u (rank %u, dpu %u) tasklet %d: %s", first_fault, dpu->rank->index, member,
                        s->fault_tasklet, s->fault_msg);
        return fail(code, "DPU %u (rank %u, dpu %u): %s", first_fault, dpu->rank->index, member, s->fault_msg);
    }
    return ok();
}

static void *launch_thread_main(void *arg)
{
    struct emu_system *system = arg;
    /* faults are found again by dpu_sync from the DPUs' states */
    (void)run_launch(system, system->launch_dpus, system->launch_nr_dpus);
    pthread_mutex_lock(&system->lock);
    system->busy = false;
    pthread_cond_broadcast(&system->idle);
    pthread_mutex_unlock(&system->lock);
    return NULL;
}

EXPORT dpu_error_t dpu_launch(struct dpu_set_t dpu_set, dpu_launch_policy_t policy)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    if (policy != DPU_SYNCHRONOUS && policy != DPU_ASYNCHRONOUS)
        return fail(DPU_ERR_INVALID_LAUNCH_POLICY, "dpu_launch: unknown policy %d", (int)policy);
    enter(system);
    uint32_t n = 0;
    dpu_error_t status = DPU_OK;
    FOR_EACH_DPU_OF_SET(dpu_set, dpu, {
        if (!system->program_of[dpu->index] && status == DPU_OK)
            status = fail(DPU_ERR_NO_PROGRAM_LOADED, "dpu_launch: no program loaded on DPU %u", dpu->index);
        system->launch_dpus[n++] = dpu->index;
    });
    if (status != DPU_OK) {
        leave(system);
        return status;
    }
    system->launch_nr_dpus = n;
    if (policy == DPU_SYNCHRONOUS) {
        system->busy = true;
        leave(system);
        status = run_launch(system, system->launch_dpus, n);
        pthread_mutex_lock(&system->lock);
        system->busy = false;
        pthread_cond_broadcast(&system->idle);
        pthread_mutex_unlock(&system->lock);
        return status;
    }
    system->busy = true;
    int rc = pthread_create(&system->launch_thread, NULL, launch_thread_main, system);
    if (rc) {
        system->busy = false;
        leave(system);
        return fail(DPU_ERR_SYSTEM, "cannot start launch thread: %s", strerror(rc));
    }
    system->launch_thread_joinable = true;
    leave(system);
    return ok();
}

static dpu_error_t faults_of_set(struct emu_system *system, struct dpu_set_t set)
{
    uint32_t index = 0;
    dpu_error_t status = DPU_OK;
    FOR_EACH_DPU_OF_SET(set, dpu, {
        struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
        if (s->status == EMU_DPU_FAULT && status == DPU_OK)
            status = fail(s->fault_kind == EMU_FAULT_TIMEOUT ? DPU_ERR_TIMEOUT : DPU_ERR_DPU_FAULT,
                          "DPU %u (set index %u) tasklet %d: %s", dpu->index, index, s->fault_tasklet, s->fault_msg);
        index++;
    });
    return status;
}

EXPORT dpu_error_t dpu_sync(struct dpu_set_t dpu_set)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    enter(system);
    dpu_error_t status = faults_of_set(system, dpu_set);
    leave(system);
    return status == DPU_OK ? ok() : status;
}

EXPORT dpu_error_t dpu_status(struct dpu_set_t dpu_set, bool *done, bool *fault)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    bool all_done = true, any_fault = false;
    FOR_EACH_DPU_OF_SET(dpu_set, dpu, {
        uint32_t s = __atomic_load_n(&block_of(system, dpu->index)->state.status, __ATOMIC_ACQUIRE);
        if (s == EMU_DPU_QUEUED || s == EMU_DPU_RUNNING)
            all_done = false;
        if (s == EMU_DPU_FAULT)
            any_fault = true;
    });
    if (done)
        *done = all_done;
    if (fault)
        *fault = any_fault;
    return ok();
}

/* ---- memory transfers --------------------------------------------------- */

/* Resolves [address + offset, +length) of a DPU to host memory. */
static dpu_error_t locate(struct emu_system *system, uint32_t d, uint64_t address, uint64_t symbol_size,
                          const char *symbol_name, uint32_t offset, size_t length, bool write, uint8_t **out)
{
    struct dpu_program_t *program = system->program_of[d];
    if (!program)
        return fail(DPU_ERR_NO_PROGRAM_LOADED, "DPU %u has no program loaded", d);
    char label[160];
    if (symbol_name)
        snprintf(label, sizeof label, "symbol '%s'", symbol_name);
    else
        snprintf(label, sizeof label, "address 0x%llx", (unsigned long long)address);
    /* the SDK's order: bounds of the symbol, then the memory's granularity */
    if ((uint64_t)offset + length > symbol_size)
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "%s: [%u, %llu) is outside the symbol's %llu bytes", label, offset,
                    (unsigned long long)offset + length, (unsigned long long)symbol_size);
    bool mram = address >= EMU_MRAM_BASE && address <= (uint64_t)EMU_MRAM_BASE + EMU_MRAM_SIZE;
    if (mram) {
        if (offset % 8 || length % 8)
            return fail(DPU_ERR_INVALID_MRAM_ACCESS,
                        "%s: MRAM transfers need offset (%u) and length (%zu) multiple of 8", label, offset, length);
    } else if (offset % 4 || length % 4) {
        return fail(DPU_ERR_INVALID_WRAM_ACCESS,
                    "%s: WRAM transfers need offset (%u) and length (%zu) multiple of 4", label, offset, length);
    }
    uint64_t start = address + offset;
    if (mram) {
        if (start + length > (uint64_t)EMU_MRAM_BASE + EMU_MRAM_SIZE)
            return fail(DPU_ERR_INVALID_MRAM_ACCESS, "%s: beyond the 64 MiB MRAM", label);
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
    if (!program)
        return fail(DPU_ERR_NO_PROGRAM_LOADED, "DPU %u has no program loaded", d);
    const struct emu_symbol *s = find_symbol(program, name);
    if (!s)
        return fail(DPU_ERR_UNKNOWN_SYMBOL, "unknown symbol '%s' in %s", name, program->path);
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
        if (status != DPU_OK)
            return status;
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
        if (i >= job->count)
            return NULL;
        memcpy(job->dst[i], job->src[i], job->length);
    }
}

static void copy_many(uint8_t **dst, uint8_t **src, uint32_t count, size_t length)
{
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t threads = nproc > 1 ? (uint32_t)(nproc > 16 ? 16 : nproc) : 1;
    if ((uint64_t)count * length < (8u << 20) || count < 2 || threads == 1) {
        for (uint32_t i = 0; i < count; i++)
            memcpy(dst[i], src[i], length);
        return;
    }
    struct copy_job job = { dst, src, length, count, 0, PTHREAD_MUTEX_INITIALIZER };
    pthread_t ids[16];
    uint32_t started = 0;
    for (uint32_t t = 1; t < threads; t++)
        if (!pthread_create(&ids[started], NULL, copy_worker, &job))
            started++;
    copy_worker(&job);
    for (uint32_t t = 0; t < started; t++)
        pthread_join(ids[t], NULL);
}

/* Copies to (or from) every DPU of the set; buffer_of(dpu) gives the host
 * side, NULL to skip the DPU.  All DPUs are validated before any byte moves. */
static dpu_error_t transfer(struct dpu_set_t set, const struct xfer *x, bool to_dpu, const void *broadcast,
                            bool use_prepared, bool single_dpu_only)
{
    struct emu_system *system = x->system;
    if (single_dpu_only && set.kind != DPU_SET_DPU)
        return fail(DPU_ERR_INVALID_DPU_SET, "copy from DPUs needs a single-DPU set (use dpu_push_xfer for many)");
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
            if (status != DPU_OK)
                break;
            if (!program)
                status = fail(DPU_ERR_NO_PROGRAM_LOADED, "DPU %u has no program loaded", dpu->index);
            else if (common && program != common)
                status = fail(DPU_ERR_DIFFERENT_DPU_PROGRAMS,
                              "symbol '%s': the DPUs of the set run different programs (%s, %s)", x->name,
                              common->path, program->path);
            common = program;
        });
    }
    FOR_EACH_DPU_OF_SET(set, dpu, {
        if (status != DPU_OK)
            break;
        void *host = use_prepared ? dpu->xfer_buffer : (void *)broadcast;
        if (!host)
            continue;
        status = xfer_target(x, dpu->index, to_dpu, &dpu_side[count]);
        host_side[count] = host;
        ids[count] = dpu->index;
        count++;
    });
    if (status == DPU_OK && x->length) {
        if (to_dpu)
            copy_many(dpu_side, host_side, count, x->length);
        else
            copy_many(host_side, dpu_side, count, x->length);
        for (uint32_t i = 0; i < count; i++) {
            struct emu_dpu_counters *c = &block_of(system, ids[i])->state.dpu_counters;
            if (to_dpu)
                c->host_to_dpu_bytes += x->length;
            else
                c->dpu_to_host_bytes += x->length;
        }
    }
    free(dpu_side);
    free(host_side);
    free(ids);
    return status == DPU_OK ? ok() : status;
}

static dpu_error_t begin_xfer(struct dpu_set_t set, struct xfer *x, const char *name, uint32_t offset, size_t length)
{
    if (check_set(set, &x->system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    if (!name)
        return fail(DPU_ERR_UNKNOWN_SYMBOL, "NULL symbol name");
    x->name = name;
    x->offset = offset;
    x->length = length;
    return DPU_OK;
}

static dpu_error_t begin_xfer_symbol(struct dpu_set_t set, struct xfer *x, struct dpu_symbol_t symbol,
                                     uint32_t offset, size_t length)
{
    if (check_set(set, &x->system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
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
    if (begun != DPU_OK)
        return begun;
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
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    FOR_EACH_DPU_OF_SET(set, dpu, { dpu->xfer_buffer = buffer; });
    return ok();
}

static void clear_prepared(struct dpu_set_t set, dpu_xfer_flags_t flags)
{
    if (flags & DPU_XFER_NO_RESET)
        return;
    FOR_EACH_DPU_OF_SET(set, dpu, { dpu->xfer_buffer = NULL; });
}

/* As copy_begun, for the buffers dpu_prepare_xfer set on each DPU. */
static dpu_error_t push_begun(struct dpu_set_t set, dpu_error_t begun, const struct xfer *x, dpu_xfer_t xfer,
                              dpu_xfer_flags_t flags)
{
    if (begun != DPU_OK)
        return begun;
    enter(x->system);
    dpu_error_t status = transfer(set, x, xfer == DPU_XFER_TO_DPU, NULL, true, false);
    clear_prepared(set, flags);
    leave(x->system);
    return status;
}

EXPORT dpu_error_t dpu_push_xfer(struct dpu_set_t set, dpu_xfer_t xfer, const char *symbol_name, uint32_t offset,
                                 size_t length, dpu_xfer_flags_t flags)
{
    if (xfer != DPU_XFER_TO_DPU && xfer != DPU_XFER_FROM_DPU)
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_xfer: unknown direction %d", (int)xfer);
    struct xfer x;
    return push_begun(set, begin_xfer(set, &x, symbol_name, offset, length), &x, xfer, flags);
}

EXPORT dpu_error_t dpu_push_xfer_symbol(struct dpu_set_t set, dpu_xfer_t xfer, struct dpu_symbol_t symbol,
                                        uint32_t offset, size_t length, dpu_xfer_flags_t flags)
{
    if (xfer != DPU_XFER_TO_DPU && xfer != DPU_XFER_FROM_DPU)
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_xfer_symbol: unknown direction %d", (int)xfer);
    struct xfer x;
    return push_begun(set, begin_xfer_symbol(set, &x, symbol, offset, length), &x, xfer, flags);
}

EXPORT dpu_error_t dpu_callback(struct dpu_set_t set, dpu_error_t (*callback)(struct dpu_set_t, uint32_t, void *),
                                void *args, dpu_callback_flags_t flags)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    enter(system);
    leave(system);
    if (flags & DPU_CALLBACK_SINGLE_CALL)
        return callback(set, 0, args);
    struct dpu_set_t rank;
    uint32_t index;
    DPU_RANK_FOREACH(set, rank, index)
    {
        dpu_error_t status = callback(rank, index, args);
        if (status != DPU_OK)
            return status;
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
    if (begun != DPU_OK)
        return begun;
    struct emu_system *system = x->system;
    if (xfer != DPU_XFER_TO_DPU && xfer != DPU_XFER_FROM_DPU)
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_sg_xfer: unknown direction %d", (int)xfer);
    if (!system->sg_enabled)
        return fail(DPU_ERR_SG_NOT_ACTIVATED,
                    "scatter-gather transfers are off: allocate with \"sgXferEnable=true\" in the dpu_alloc profile");
    if (!info || !info->f)
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "dpu_push_sg_xfer: no get_block function");
    bool to_dpu = xfer == DPU_XFER_TO_DPU;
    enter(system);
    dpu_error_t status = DPU_OK;
    for (int pass = 0; pass < 2 && status == DPU_OK; pass++) { /* pass 0 checks, pass 1 copies */
        uint32_t index = 0;
        FOR_EACH_DPU_OF_SET(set, dpu, {
            if (status != DPU_OK)
                break;
            uint64_t address = x->address;
            uint64_t size = x->size;
            if (x->name)
                status = lookup(system, dpu->index, x->name, &address, &size);
            if (status == DPU_OK && address < EMU_MRAM_BASE)
                status = fail(DPU_ERR_SG_NOT_MRAM_SYMBOL, "scatter-gather transfer to '%s': not an MRAM symbol",
                              x->name ? x->name : "symbol");
            uint8_t *target = NULL;
            if (status == DPU_OK)
                status = locate(system, dpu->index, address, size, x->name, x->offset, x->length, to_dpu, &target);
            uint64_t done = 0;
            struct sg_block_info block;
            for (uint32_t b = 0; status == DPU_OK && info->f(&block, index, b, info->args); b++) {
                if (system->sg_max_blocks && b >= system->sg_max_blocks)
                    status = fail(DPU_ERR_SG_TOO_MANY_BLOCKS, "DPU %u: more than sgXferMaxBlocksPerDpu=%u blocks",
                                  index, system->sg_max_blocks);
                else if (done + block.length > x->length)
                    status = fail(DPU_ERR_SG_LENGTH_MISMATCH, "DPU %u: the blocks exceed the %zu bytes transferred",
                                  index, x->length);
                else if (pass == 1 && block.length) {
                    if (to_dpu)
                        memcpy(target + done, block.addr, block.length);
                    else
                        memcpy(block.addr, target + done, block.length);
                }
                done += block.length;
            }
            if (status == DPU_OK && done != x->length && !(flags & DPU_SG_XFER_DISABLE_LENGTH_CHECK))
                status = fail(DPU_ERR_SG_LENGTH_MISMATCH, "DPU %u: blocks hold %llu bytes, the transfer %zu", index,
                              (unsigned long long)done, x->length);
            if (status == DPU_OK && pass == 1) {
                struct emu_dpu_counters *c = &block_of(system, dpu->index)->state.dpu_counters;
                if (to_dpu)
                    c->host_to_dpu_bytes += done;
                else
                    c->dpu_to_host_bytes += done;
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
    return sg_transfer(set, begin_xfer_symbol(set, &x, symbol, symbol_offset, length), &x, xfer, get_block_info,
                       flags);
}

/* ---- ranks and DPUs (dpu_management.h) --------------------------------- */

EXPORT dpu_id_t dpu_get_id(struct dpu_t *dpu)
{
    uint32_t member = (uint32_t)(dpu - dpu->rank->dpus), per_ci = dpu->rank->system->dpus_per_ci;
    return (dpu->rank->index << 16) | (((member / per_ci) & 0xff) << 8) | ((member % per_ci) & 0xff);
}

EXPORT dpu_id_t dpu_get_rank_id(struct dpu_rank_t *rank) { return rank->index; }

EXPORT struct dpu_rank_t *dpu_get_rank(struct dpu_t *dpu) { return dpu->rank; }

EXPORT dpu_slice_id_t dpu_get_slice_id(struct dpu_t *dpu) { return (dpu_slice_id_t)((dpu_get_id(dpu) >> 8) & 0xff); }

EXPORT dpu_member_id_t dpu_get_member_id(struct dpu_t *dpu) { return (dpu_member_id_t)(dpu_get_id(dpu) & 0xff); }

EXPORT bool dpu_is_enabled(struct dpu_t *dpu) { return dpu != NULL; }

EXPORT struct dpu_t *dpu_get(struct dpu_rank_t *rank, dpu_slice_id_t slice_id, dpu_member_id_t member_id)
{
    uint32_t per_ci = rank->system->dpus_per_ci, index = (uint32_t)slice_id * per_ci + member_id;
    return member_id < per_ci && index < rank->nr_dpus ? &rank->dpus[index] : NULL;
}

EXPORT struct dpu_set_t dpu_set_from_rank(struct dpu_rank_t **rank)
{
    struct dpu_set_t set = { .kind = DPU_SET_RANKS, .list = { .nr_ranks = 1, .ranks = rank } };
    return set;
}

EXPORT struct dpu_set_t dpu_set_from_dpu(struct dpu_t *dpu)
{
    struct dpu_set_t set = { .kind = DPU_SET_DPU, .dpu = dpu };
    return set;
}

EXPORT struct dpu_rank_t *dpu_rank_from_set(struct dpu_set_t set)
{
    return set.kind == DPU_SET_RANKS && set.list.nr_ranks == 1 ? set.list.ranks[0] : NULL;
}

EXPORT struct dpu_t *dpu_from_set(struct dpu_set_t set) { return set.kind == DPU_SET_DPU ? set.dpu : NULL; }

/* ---- logs --------------------------------------------------------------- */

static dpu_error_t single_dpu(struct dpu_set_t set, struct emu_system **system, struct dpu_t **dpu)
{
    if (check_set(set, system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    if (set.kind != DPU_SET_DPU) {
        if (count_dpus(set) != 1)
            return fail(DPU_ERR_INVALID_DPU_SET, "this call needs a set of exactly one DPU");
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
    for (size_t i = 0; i < n; i++)
        out[i] = b->log[(first + i) % EMU_LOG_SIZE];
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
    if (wrapped)
        fprintf(stream, "[log buffer wrapped: oldest output lost]\n");
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
    if (status != DPU_OK)
        return status;
    /* DPU_LOG_FORMAT_HEADER of the SDK's dpu_log_internals.h */
    fprintf(stream, "=== DPU#0x%x ===\n", dpu_get_id(dpu));
    return write_log(system, dpu, stream);
}

/* the SDK's dpulog_read_for_dpu prints no header */
EXPORT dpu_error_t dpulog_read_for_dpu(struct dpu_t *dpu, FILE *stream)
{
    if (!dpu)
        return fail(DPU_ERR_INVALID_DPU_SET, "dpulog_read_for_dpu: no DPU");
    return write_log(dpu->rank->system, dpu, stream);
}

EXPORT dpu_error_t updlrm_emu_log(struct dpu_set_t set, char *buffer, size_t capacity, size_t *length)
{
    struct emu_system *system = NULL;
    struct dpu_t *dpu;
    dpu_error_t status = single_dpu(set, &system, &dpu);
    if (status != DPU_OK)
        return status;
    enter(system);
    size_t n = read_log(system, dpu->index, buffer, capacity);
    leave(system);
    if (length)
        *length = n;
    return ok();
}

/* ---- probes (updlrm_emu_probe.h) -------------------------------------- */

EXPORT dpu_error_t updlrm_emu_probe_init(const char *name, struct updlrm_emu_probe *probe)
{
    if (!probe)
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_init: probe is NULL");
    memset(probe, 0, sizeof *probe);
    snprintf(probe->name, sizeof probe->name, "%s", name ? name : "");
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_deinit(struct updlrm_emu_probe *probe)
{
    if (!probe)
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_deinit: probe is NULL");
    memset(probe, 0, sizeof *probe);
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_start(struct updlrm_emu_probe *probe)
{
    if (!probe)
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_start: probe is NULL");
    if (probe->running)
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_start: probe '%s' is already started", probe->name);
    probe->running = true;
    probe->started_at = now_seconds();
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_stop(struct updlrm_emu_probe *probe)
{
    if (!probe)
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_stop: probe is NULL");
    if (!probe->running)
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_stop: probe '%s' was not started", probe->name);
    probe->total_seconds += now_seconds() - probe->started_at;
    probe->nr_intervals++;
    probe->running = false;
    return ok();
}

EXPORT dpu_error_t updlrm_emu_probe_get(struct updlrm_emu_probe *probe, updlrm_emu_probe_option_t option,
                                        double *seconds)
{
    if (!probe || !seconds)
        return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_get: probe or seconds is NULL");
    switch (option) {
    case UPDLRM_EMU_PROBE_ACCUMULATE: *seconds = probe->total_seconds; return ok();
    case UPDLRM_EMU_PROBE_AVERAGE:
        *seconds = probe->nr_intervals ? probe->total_seconds / probe->nr_intervals : 0.0;
        return ok();
    }
    return fail(DPU_ERR_INTERNAL, "updlrm_emu_probe_get: unknown option %d", (int)option);
}

/* ---- emulator extras ---------------------------------------------------- */

EXPORT dpu_error_t updlrm_emu_dpu_at(struct dpu_set_t set, uint32_t index, struct dpu_set_t *out)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
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

EXPORT dpu_error_t updlrm_emu_counters_array(struct dpu_set_t set, uint64_t *out, size_t capacity)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    const size_t row = EMU_DPU_COUNTER_FIELDS + EMU_MAX_TASKLETS * EMU_TASKLET_COUNTER_FIELDS;
    if (capacity < (size_t)count_dpus(set) * row)
        return fail(DPU_ERR_INVALID_MEMORY_TRANSFER, "counters buffer too small");
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
    if (status != DPU_OK)
        return status;
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
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    enter(system);
    FOR_EACH_DPU_OF_SET(set, dpu, {
        struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
        memset(&s->dpu_counters, 0, sizeof s->dpu_counters);
        memset(s->tasklet, 0, sizeof s->tasklet);
    });
    leave(system);
    return ok();
}

EXPORT dpu_error_t updlrm_emu_fault_info(struct dpu_set_t set, uint32_t *dpu_index, int32_t *tasklet, char *message,
                                         size_t message_size)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    enter(system);
    uint32_t i = 0;
    bool found = false;
    FOR_EACH_DPU_OF_SET(set, dpu, {
        const struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
        if (!found && s->status == EMU_DPU_FAULT) {
            found = true;
            *dpu_index = i;
            *tasklet = s->fault_tasklet;
            if (message && message_size)
                snprintf(message, message_size, "%s", s->fault_msg);
        }
        i++;
    });
    leave(system);
    if (!found)
        return fail(DPU_ERR_INVALID_DPU_SET, "no DPU of the set is in fault");
    return ok();
}

/* The symbols a host can name in transfers, by index (sorted by name). */
EXPORT dpu_error_t updlrm_emu_program_symbol(struct dpu_program_t *program, uint32_t index, const char **name)
{
    if (!program || !name)
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "updlrm_emu_program_symbol: NULL argument");
    if (index >= program->nr_symbols)
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "symbol index %u out of range (%zu symbols)", index,
                    program->nr_symbols);
    *name = program->symbols[index].name;
    return ok();
}

EXPORT dpu_error_t updlrm_emu_set_faults(struct dpu_set_t set, const char *rules)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    struct updlrm_emu_fault_plan *plan = NULL;
    char why[256];
    if (updlrm_emu_fault_plan_parse(rules, &plan, why, sizeof why))
        return fail(DPU_ERR_INVALID_PROFILE, "updlrm_emu_set_faults: %s", why);
    enter(system);
    updlrm_emu_fault_plan_free(system->faults);
    system->faults = plan;
    leave(system);
    return ok();
}

EXPORT dpu_error_t updlrm_emu_nr_workers(struct dpu_set_t set, uint32_t *nr_workers)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK)
        return DPU_ERR_INVALID_DPU_SET;
    enter(system);
    uint32_t n = 0;
    for (struct dpu_program_t *p = system->programs; p; p = p->next)
        n += p->nr_workers;
    leave(system);
    *nr_workers = n;
    return ok();
}
