/* Private header of the DPU runtime of the updlrm emulator (libupdlrm_dpurt.so).
 *
 * Every emulator DPU executable links this library.  Its `main` turns the
 * process into a worker: it receives launch requests from the host library
 * over a pipe, and for each DPU of a request maps that DPU's MRAM at the DPU
 * MRAM address, swaps the DPU's WRAM (.data+.bss and heap) in, runs
 * NR_TASKLETS cooperative tasklets on the user's main, and swaps WRAM out.
 * All state a host may look at lives in shared memory (emu_shared.h).
 *
 * Units by role:
 *   dpurt_sched.c   context switch, tasklets and their round-robin scheduler, faults
 *   dpurt_dma.c     MRAM DMA: address checks and decoding, atomics, sequential reader
 *   dpurt_sync.c    barriers, mutexes, virtual mutexes, semaphores, handshakes
 *   dpurt_alloc.c   WRAM heap (mem_alloc) and buddy allocator
 *   dpurt_perf.c    performance counter
 *   dpurt_log.c     DPU printf log
 *   dpurt_worker.c  the worker process: launch loop, running one DPU, main
 * A DMA's hot path (mram_read -> check_dma -> schedule) crosses dpurt_dma.c
 * and dpurt_sched.c only through schedule(), which was never inlined.
 */
#ifndef UPDLRM_EMU_DPURT_H
#define UPDLRM_EMU_DPURT_H
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emu_shared.h"
#include "fault_inject.h"

/* ---- DPU-facing types (must match the headers in include/dpu) ----------- */

typedef struct barrier_t {
    uint8_t wait_queue;
    uint8_t count;
    uint8_t initial_count;
    uint8_t lock;
    uint32_t generation;
} barrier_t;

/* a mutex is one byte: 0 free, else owner tasklet + 1 */
typedef uint8_t *mutex_id_t;

struct vmutex {
    uint8_t *vm;
    uint8_t *hw_mutexes;
    uint8_t hw_mutexes_mask;
};

typedef struct sem_t {
    int32_t count;
} sem_t;

typedef uintptr_t seqreader_buffer_t;
typedef struct {
    seqreader_buffer_t wram_cache;
    uintptr_t mram_addr;
    uint32_t cache_size;
} seqreader_t;

#define EXPORT __attribute__((visibility("default")))

/* ---- AddressSanitizer fiber support (present only in sanitized programs) */

extern void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size)
    __attribute__((weak));
extern void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old)
    __attribute__((weak));
extern void __asan_unpoison_memory_region(void const volatile *addr, size_t size) __attribute__((weak));

/* ---- worker state ------------------------------------------------------- */

/* Host code needs far more stack than DPU code (x86-64 frames, libc
 * printf), so each tasklet gets a generous host stack; the DPU's logical
 * stack size only counts against WRAM capacity. */
#define EMU_HOST_STACK_SIZE (256u << 10)
#define EMU_GUARD_SIZE      4096u

enum tasklet_state {
    TASKLET_RUNNABLE,
    TASKLET_BLOCKED_BARRIER,
    TASKLET_BLOCKED_MUTEX,
    TASKLET_BLOCKED_VMUTEX,
    TASKLET_BLOCKED_SEM,
    TASKLET_BLOCKED_NOTIFY,
    TASKLET_BLOCKED_WAIT_FOR,
    TASKLET_FINISHED,
};

struct tasklet {
    void *sp;
    enum tasklet_state state;
    void *wait_object;
    uint32_t wait_generation; /* barrier round, or bit mask of a virtual mutex */
    uint32_t wait_for;
    bool hs_notifying; /* called handshake_notify, no waiter has taken it yet */
    bool hs_released;  /* a waiter took the notification */
    uint8_t *stack_lo;
    uint8_t *stack_hi;
    void *asan_fake_stack;
};
/* The worker's memory (dpurt_worker.c). */
struct dpurt_memory {
    uint8_t *ctrl;
    size_t ctrl_size;
    uint8_t *mram_all;   /* every DPU's MRAM, mapped once: DMAs go through it */
    uint8_t *mram;       /* the current DPU's part of mram_all */
    uint8_t *low_region; /* stacks + heap, below 4 GiB like real WRAM addresses */
    uint8_t *heap;       /* WRAM heap buffer, same address for every DPU */
    int64_t resident_mram_dpu;
};

/* The tasklets of the DPU being run and the scheduler's state (dpurt_sched.c). */
struct dpurt_scheduler {
    struct tasklet tasklets[EMU_MAX_TASKLETS];
    uint32_t nr_tasklets;
    uint32_t current;
    void *main_sp;
    void *main_fake_stack;
    const void *main_stack_bottom;
    size_t main_stack_size;
    bool faulted;
    bool asan;
};

/* Where the program called the runtime, and the relaxed-DMA sites this
 * worker has already reported (dpurt_dma.c). */
struct dpurt_dma_sites {
    uintptr_t site; /* return address into the DPU program */
    uint32_t nr_warned_sites;
    struct {
        uintptr_t site;
        uint32_t kind;
    } warned[64];
};

struct dpurt_state {
    struct dpurt_memory mem;
    struct emu_program_layout layout;
    struct emu_dpu_block *block; /* DPU being run */
    struct dpurt_scheduler sched;
    struct dpurt_dma_sites dma;
};

/* The worker's one runtime state (defined in dpurt_worker.c; hidden). */
extern struct dpurt_state rt;

/* Exported DMA entry points note their caller, so that a DMA diagnostic can
 * name the program's source line (the host maps it with the debug info). */
#define NOTE_SITE() (rt.dma.site = (uintptr_t)__builtin_return_address(0))

typedef int (*user_main_t)(void);
extern user_main_t user_main; /* dpurt_worker.c */

static inline struct emu_dpu_state *state(void)
{
    return &rt.block->state;
}
static inline struct emu_tasklet_counters *counters(void)
{
    return &state()->tasklet[rt.sched.current];
}

static inline void charge(uint64_t cycles)
{
    counters()->cycles += cycles;
    state()->dpu_cycles += cycles;
}

static inline void runtime_call(void)
{
    counters()->runtime_calls++;
    charge(EMU_RUNTIME_CALL_CYCLES);
}

/* ---- functions shared between the units (hidden: -fvisibility=hidden) --- */

/* dpurt_sched.c */
void fault(enum emu_fault_kind kind, bool tasklet_specific, const char *format, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
void schedule(void);
void switch_to(void **save_sp, void *new_sp, const struct tasklet *target, bool leaving_for_good);
bool try_wake_blocked(struct tasklet *t);
void run_tasklets(void);

/* Inline, as they were when the runtime was one file: the synchronisation
 * primitives block and switch through them. */

/* At the switch after a DMA the next tasklet is almost always runnable: test
 * that inline, before the call and the indirect jump on the blocking reason
 * (perf put a third of the scheduler's samples on that dispatch). */
static inline bool try_wake(struct tasklet *t)
{
    return t->state == TASKLET_RUNNABLE || try_wake_blocked(t);
}

/* Runs tasklet id now if it can proceed; the caller stays runnable and
 * resumes when the round robin comes back to it. */
static inline void yield_to(uint32_t id)
{
    struct tasklet *self = &rt.sched.tasklets[rt.sched.current];
    struct tasklet *next = &rt.sched.tasklets[id];
    if (id == rt.sched.current || !try_wake(next)) {
        return;
    }
    rt.sched.current = id;
    state()->current_tasklet = id;
    state()->tasklet[id].switches++;
    switch_to(&self->sp, next->sp, next, false);
}

static inline void block_on(enum tasklet_state why, void *object)
{
    struct tasklet *self = &rt.sched.tasklets[rt.sched.current];
    self->state = why;
    self->wait_object = object;
    schedule();
}

/* dpurt_alloc.c (exported: the DPU program's mem_alloc) */
EXPORT void *mem_alloc(size_t size);

/* dpurt_worker.c */
void die(const char *what) __attribute__((noreturn));

/* The fault injection hook (fault_inject.h) asked for a fault. */
static inline void injected(enum updlrm_emu_fault_action action)
{
    if (action == UPDLRM_EMU_FAULT_ACTION_FAULT) {
        fault(EMU_FAULT_INJECTED, true, "%s", updlrm_emu_fault_message());
    }
}

#endif
