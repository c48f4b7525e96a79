/* Private header of the updlrm emulator's host library (libupdlrm_dpu.so):
 * the UPMEM SDK's libdpu API over worker processes.
 *
 * A DPU set owns two memfds (see emu_shared.h): every DPU's MRAM, and every
 * DPU's state/WRAM image/log.  Host transfers read and write them directly;
 * launches are sent to worker processes running the DPU executable, DPU d
 * always to worker d % W of its program.  A worker that dies takes only the
 * DPU it was running with it: that DPU is reported in fault, the worker is
 * respawned and the rest of its list continues.
 *
 * Units by role:
 *   hostlib_set.c      errors, DPU sets and iterators, rank/DPU ids
 *   hostlib_alloc.c    profile parsing, dpu_alloc/dpu_free, the shared memory
 *   hostlib_program.c  ELF loading, symbols, dpu_load
 *   hostlib_launch.c   worker processes, launch, recovery of dead workers, sync
 *   hostlib_diag.c     DMA warnings and fault sites named by source line, fault info
 *   hostlib_xfer.c     copies, broadcasts, prepared and scatter-gather transfers
 *   hostlib_logs.c     DPU logs, probes, counters
 */
#ifndef UPDLRM_EMU_HOSTLIB_H
#define UPDLRM_EMU_HOSTLIB_H
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

/* Relaxed-DMA sites already reported (once per site and rule) and the last
 * source line looked up for a site (hostlib_diag.c). */
struct program_diagnostics {
    struct reported_site {
        uint64_t site;
        uint32_t kind;
    } *reported;
    uint32_t nr_reported;
    uint64_t described_site; /* last site described_where was made for */
    char described_where[512];
};

struct dpu_program_t {
    struct emu_system *system;
    struct dpu_program_t *next;
    char *path;
    char *temporary_path; /* written by dpu_load_from_memory, unlinked on free */
    /* the executable (hostlib_program.c) */
    struct emu_symbol *symbols; /* sorted by name */
    size_t nr_symbols;
    struct emu_program_layout layout;
    uint8_t *image_template; /* initial .data+.bss span */
    uint8_t *rodata;
    uint8_t *mram_init;
    uint64_t mram_init_size;
    uint64_t mram_used; /* __sys_used_mram_end - MRAM base */
    uint32_t nr_dpus;   /* DPUs currently running this program */
    /* its worker processes (hostlib_launch.c) */
    uint32_t nr_workers;
    struct worker *workers;
    struct program_diagnostics diag;
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

/* What the allocation's profile and environment decided (hostlib_alloc.c). */
struct emu_settings {
    uint32_t max_workers;
    double timeout_seconds;
    uint32_t dma_mode; /* enum emu_dma_mode, from UPDLRM_EMU_DMA */
    uint32_t dpus_per_ci;
    bool sg_enabled;        /* sgXferEnable=true */
    uint32_t sg_max_blocks; /* sgXferMaxBlocksPerDpu, 0: no limit */
};

/* The two memfds every worker maps (emu_shared.h) and the host's mappings. */
struct emu_shared_memory {
    int ctrl_fd;
    int mram_fd;
    uint8_t *ctrl;
    uint8_t *mram;
    size_t ctrl_size;
    size_t mram_size;
};

/* API calls queue behind a launch in flight (enter/leave below). */
struct emu_launch_state {
    pthread_mutex_t lock;
    pthread_cond_t idle;
    bool busy; /* a launch is in flight */
    pthread_t thread;
    bool thread_joinable;
    uint32_t *dpus;
    uint32_t nr_dpus;
};

struct emu_system {
    uint32_t nr_dpus;
    uint32_t nr_ranks;
    struct dpu_rank_t *ranks;
    struct dpu_rank_t **rank_pointers;
    struct dpu_t *dpus;
    struct dpu_program_t **program_of; /* per DPU */
    struct dpu_program_t *programs;
    struct emu_settings settings;
    struct emu_shared_memory shm;
    struct emu_launch_state launch;
    struct updlrm_emu_fault_plan *faults; /* fault injection hook (fault_inject.h), NULL: none */
    /* The workers' environment: the process's, copied at dpu_alloc. spawn_worker (run
     * again after a worker dies, on whichever thread syncs) must not read `environ`: another
     * thread may be changing it (setenv/unsetenv are not thread-safe), which crashed it. */
    char **worker_env;
};

static inline struct emu_dpu_block *block_of(struct emu_system *system, uint32_t dpu)
{
    return (struct emu_dpu_block *)(system->shm.ctrl + (size_t)dpu * EMU_DPU_BLOCK_SIZE);
}

static inline uint8_t *mram_of(struct emu_system *system, uint32_t dpu)
{
    return system->shm.mram + (size_t)dpu * EMU_MRAM_SIZE;
}

/* Calls visit(dpu) for each DPU of the set in DPU_FOREACH order. */
#define FOR_EACH_DPU_OF_SET(set, dpu_var, body)                                                                        \
    do {                                                                                                               \
        if ((set).kind == DPU_SET_DPU) {                                                                               \
            struct dpu_t *dpu_var = (set).dpu;                                                                         \
            body;                                                                                                      \
        } else {                                                                                                       \
            for (uint32_t __r = 0; __r < (set).list.nr_ranks; __r++) {                                                 \
                struct dpu_rank_t *__rank = (set).list.ranks[__r];                                                     \
                for (uint32_t __d = 0; __d < __rank->nr_dpus; __d++) {                                                 \
                    struct dpu_t *dpu_var = &__rank->dpus[__d];                                                        \
                    body;                                                                                              \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

static inline double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- functions shared between the units (hidden: -fvisibility=hidden) --- */

/* hostlib_set.c: errors, DPU sets */
#define EMU_LAST_ERROR_SIZE 768
extern _Thread_local char last_error[EMU_LAST_ERROR_SIZE]; /* updlrm_emu_last_error() */
dpu_error_t fail(dpu_error_t code, const char *format, ...) __attribute__((format(printf, 2, 3)));
dpu_error_t check_set(struct dpu_set_t set, struct emu_system **system_out);

/* The helpers below are called by nearly every API function: inline, as
 * they were when the library was one file. */
static inline dpu_error_t ok(void)
{
    last_error[0] = 0;
    return DPU_OK;
}

static inline uint32_t count_dpus(struct dpu_set_t set)
{
    uint32_t n = 0;
    FOR_EACH_DPU_OF_SET(set, dpu, {
        (void)dpu;
        n++;
    });
    return n;
}

/* Every API call except dpu_status waits for an in-flight launch first:
 * the SDK queues operations on a rank behind its running program. */
static inline void enter(struct emu_system *system)
{
    pthread_mutex_lock(&system->launch.lock);
    while (system->launch.busy) {
        pthread_cond_wait(&system->launch.idle, &system->launch.lock);
    }
    if (system->launch.thread_joinable) {
        pthread_join(system->launch.thread, NULL);
        system->launch.thread_joinable = false;
    }
}

static inline void leave(struct emu_system *system)
{
    pthread_mutex_unlock(&system->launch.lock);
}

/* hostlib_alloc.c */
int high_cloexec(int fd);

/* hostlib_program.c */
void free_program(struct dpu_program_t *program);
const struct emu_symbol *find_symbol(const struct dpu_program_t *program, const char *name);

/* hostlib_launch.c */
void stop_workers(struct dpu_program_t *program);

/* hostlib_diag.c */
void report_dma_warnings(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus);
void annotate_fault_sites(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus);

#endif
