/* DPU runtime of the updlrm emulator (libupdlrm_dpurt.so).
 *
 * Every emulator DPU executable links this library.  Its `main` turns the
 * process into a worker: it receives launch requests from the host library
 * over a pipe, and for each DPU of a request maps that DPU's MRAM at the DPU
 * MRAM address, swaps the DPU's WRAM (.data+.bss and heap) in, runs
 * NR_TASKLETS cooperative tasklets on the user's main, and swaps WRAM out.
 * All state a host may look at lives in shared memory (emu_shared.h).
 */
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

/* ---- context switch ----------------------------------------------------- */

/* Saves the callee-saved registers on the current stack, stores the stack
 * pointer in *save_sp and resumes the context whose stack pointer is new_sp.
 * A cooperative switch only needs what the ABI says a call preserves. */
void emu_switch(void **save_sp, void *new_sp);

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl emu_switch\n"
        ".hidden emu_switch\n"
        ".type emu_switch,@function\n"
        "emu_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size emu_switch,.-emu_switch\n");
#define EMU_SWITCH_FRAME_WORDS 6
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl emu_switch\n"
        ".hidden emu_switch\n"
        ".type emu_switch,%function\n"
        "emu_switch:\n"
        "  sub sp, sp, #160\n"
        "  stp x19, x20, [sp, #0]\n"
        "  stp x21, x22, [sp, #16]\n"
        "  stp x23, x24, [sp, #32]\n"
        "  stp x25, x26, [sp, #48]\n"
        "  stp x27, x28, [sp, #64]\n"
        "  stp x29, x30, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  mov x2, sp\n"
        "  str x2, [x0]\n"
        "  mov sp, x1\n"
        "  ldp x19, x20, [sp, #0]\n"
        "  ldp x21, x22, [sp, #16]\n"
        "  ldp x23, x24, [sp, #32]\n"
        "  ldp x25, x26, [sp, #48]\n"
        "  ldp x27, x28, [sp, #64]\n"
        "  ldp x29, x30, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  add sp, sp, #160\n"
        "  ret\n"
        ".size emu_switch,.-emu_switch\n");
#else
#error "the updlrm emulator supports x86-64 and aarch64 hosts"
#endif

/* ---- worker state ------------------------------------------------------- */

/* Host code needs far more stack than DPU code (x86-64 frames, libc
 * printf), so each tasklet gets a generous host stack; the DPU's logical
 * stack size only counts against WRAM capacity. */
#define EMU_HOST_STACK_SIZE (256u << 10)
#define EMU_GUARD_SIZE 4096u

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

static struct {
    uint8_t *ctrl;
    size_t ctrl_size;
    uint8_t *mram_all;   /* every DPU's MRAM, mapped once: DMAs go through it */
    uint8_t *mram;       /* the current DPU's part of mram_all */
    uint8_t *low_region; /* stacks + heap, below 4 GiB like real WRAM addresses */
    uint8_t *heap;       /* WRAM heap buffer, same address for every DPU */
    int64_t resident_mram_dpu;
    struct emu_program_layout layout;
    struct emu_dpu_block *block; /* DPU being run */
    struct tasklet tasklets[EMU_MAX_TASKLETS];
    uint32_t nr_tasklets;
    uint32_t current;
    void *main_sp;
    void *main_fake_stack;
    const void *main_stack_bottom;
    size_t main_stack_size;
    bool faulted;
    bool asan;
    uintptr_t site; /* where the DPU program called the runtime (return address) */
    uint32_t nr_warned_sites;
    struct {
        uintptr_t site;
        uint32_t kind;
    } warned[64]; /* relaxed-DMA sites this worker has already reported */
} rt;

/* Exported DMA entry points note their caller, so that a DMA diagnostic can
 * name the program's source line (the host maps it with the debug info). */
#define NOTE_SITE() (rt.site = (uintptr_t)__builtin_return_address(0))

typedef int (*user_main_t)(void);
static user_main_t user_main;

/* Called by the start file the compiler driver links into every program. */
EXPORT void __updlrm_register_main(user_main_t main_function) { user_main = main_function; }

/* ---- helpers ------------------------------------------------------------ */

/* Copies without memcpy and without instrumentation: under AddressSanitizer
 * the redzones between the globals of the WRAM span are poisoned, yet the
 * whole span is the DPU's state. */
__attribute__((optimize("no-tree-loop-distribute-patterns"), no_sanitize_address)) static void
raw_copy(void *dst, const void *src, size_t size)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (size >= 8) {
        uint64_t word;
        __builtin_memcpy(&word, s, 8);
        __builtin_memcpy(d, &word, 8);
        d += 8;
        s += 8;
        size -= 8;
    }
    while (size--)
        *d++ = *s++;
}

static void die(const char *what)
{
    char message[256];
    int length = snprintf(message, sizeof message, "updlrm emulator worker: %s: %s\n", what, strerror(errno));
    if (length > 0 && write(STDERR_FILENO, message, (size_t)length) < 0)
        _exit(3);
    _exit(3);
}

static bool read_full(int fd, void *buffer, size_t size)
{
    uint8_t *p = buffer;
    while (size) {
        ssize_t n = read(fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        size -= (size_t)n;
    }
    return true;
}

static void write_full(int fd, const void *buffer, size_t size)
{
    const uint8_t *p = buffer;
    while (size) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("reply to host");
        p += n;
        size -= (size_t)n;
    }
}

static inline struct emu_dpu_state *state(void) { return &rt.block->state; }
static inline struct emu_tasklet_counters *counters(void) { return &state()->tasklet[rt.current]; }

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

/* ---- scheduling --------------------------------------------------------- */

static void switch_to(void **save_sp, void *new_sp, const struct tasklet *target, bool leaving_for_good)
{
    if (rt.asan && __sanitizer_start_switch_fiber) {
        struct tasklet *self = rt.current < rt.nr_tasklets ? &rt.tasklets[rt.current] : NULL;
        void **fake = leaving_for_good ? NULL : (self ? &self->asan_fake_stack : NULL);
        if (target)
            __sanitizer_start_switch_fiber(fake, target->stack_lo, (size_t)(target->stack_hi - target->stack_lo));
        else
            __sanitizer_start_switch_fiber(fake, rt.main_stack_bottom, rt.main_stack_size);
    }
    emu_switch(save_sp, new_sp);
    if (rt.asan && __sanitizer_finish_switch_fiber) {
        struct tasklet *self = &rt.tasklets[rt.current];
        __sanitizer_finish_switch_fiber(self->asan_fake_stack, NULL, NULL);
    }
}

static void fault(enum emu_fault_kind kind, bool tasklet_specific, const char *format, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* The fault injection hook (fault_inject.h) asked for a fault. */
static void injected(enum updlrm_emu_fault_action action)
{
    if (action == UPDLRM_EMU_FAULT_ACTION_FAULT)
        fault(EMU_FAULT_INJECTED, true, "%s", updlrm_emu_fault_message());
}

/* Whether a blocked tasklet may proceed; if so, performs the acquisition it
 * was waiting for, so that it owns the resource when it resumes. */
static bool try_wake_blocked(struct tasklet *t)
{
    switch (t->state) {
    case TASKLET_RUNNABLE:
        return true;
    case TASKLET_BLOCKED_BARRIER:
        if (((barrier_t *)t->wait_object)->generation == t->wait_generation)
            return false;
        break;
    case TASKLET_BLOCKED_MUTEX: {
        uint8_t *m = t->wait_object;
        if (*m)
            return false;
        *m = (uint8_t)(t - rt.tasklets + 1);
        break;
    }
    case TASKLET_BLOCKED_VMUTEX: {
        uint8_t *bits = t->wait_object;
        if (*bits & t->wait_generation)
            return false;
        *bits |= (uint8_t)t->wait_generation;
        break;
    }
    case TASKLET_BLOCKED_SEM: {
        sem_t *s = t->wait_object;
        if (s->count <= 0)
            return false;
        s->count--;
        break;
    }
    case TASKLET_BLOCKED_NOTIFY:
        if (!t->hs_released)
            return false;
        t->hs_released = false;
        break;
    case TASKLET_BLOCKED_WAIT_FOR: {
        struct tasklet *notifier = &rt.tasklets[t->wait_for];
        if (!notifier->hs_notifying)
            return false;
        notifier->hs_notifying = false;
        notifier->hs_released = true;
        break;
    }
    case TASKLET_FINISHED:
        return false;
    }
    t->state = TASKLET_RUNNABLE;
    return true;
}

/* At the switch after a DMA the next tasklet is almost always runnable: test
 * that inline, before the call and the indirect jump on the blocking reason
 * (perf put a third of the scheduler's samples on that dispatch). */
static inline bool try_wake(struct tasklet *t)
{
    return t->state == TASKLET_RUNNABLE || try_wake_blocked(t);
}

/* The calling tasklet has blocked or finished: run the next tasklet that
 * can proceed, in id order starting after the caller (round robin).  Returns
 * when the caller itself can proceed again. */
static void schedule(void)
{
    uint32_t self_id = rt.current;
    struct tasklet *self = &rt.tasklets[self_id];
    uint32_t id = self_id;
    for (uint32_t step = 1; step <= rt.nr_tasklets; step++) {
        id = id + 1 == rt.nr_tasklets ? 0 : id + 1; /* round robin without a division per step */
        struct tasklet *next = &rt.tasklets[id];
        if (!try_wake(next))
            continue;
        if (id == self_id)
            return;
        rt.current = id;
        state()->current_tasklet = id;
        state()->tasklet[id].switches++;
        switch_to(&self->sp, next->sp, next, self->state == TASKLET_FINISHED);
        /* resumed: whoever switched to us set rt.current to our id */
        return;
    }
    bool all_finished = true;
    for (uint32_t id = 0; id < rt.nr_tasklets; id++)
        all_finished &= rt.tasklets[id].state == TASKLET_FINISHED;
    if (all_finished) {
        switch_to(&self->sp, rt.main_sp, NULL, true);
        __builtin_unreachable();
    }
    char blocked[EMU_MAX_TASKLETS * 24] = "";
    size_t used = 0;
    static const char *const why[] = {
        [TASKLET_BLOCKED_BARRIER] = "barrier", [TASKLET_BLOCKED_MUTEX] = "mutex", [TASKLET_BLOCKED_VMUTEX] = "vmutex",
        [TASKLET_BLOCKED_SEM] = "semaphore",   [TASKLET_BLOCKED_NOTIFY] = "handshake_notify",
        [TASKLET_BLOCKED_WAIT_FOR] = "handshake_wait_for",
    };
    for (uint32_t id = 0; id < rt.nr_tasklets && used < sizeof blocked; id++) {
        enum tasklet_state s = rt.tasklets[id].state;
        if (s != TASKLET_FINISHED && s != TASKLET_RUNNABLE)
            used += (size_t)snprintf(blocked + used, sizeof blocked - used, "%s%u:%s", used ? " " : "", id, why[s]);
    }
    fault(EMU_FAULT_DEADLOCK, false, "deadlock: every unfinished tasklet is blocked (%s)", blocked);
}

/* Runs tasklet id now if it can proceed; the caller stays runnable and
 * resumes when the round robin comes back to it. */
static void yield_to(uint32_t id)
{
    struct tasklet *self = &rt.tasklets[rt.current];
    struct tasklet *next = &rt.tasklets[id];
    if (id == rt.current || !try_wake(next))
        return;
    rt.current = id;
    state()->current_tasklet = id;
    state()->tasklet[id].switches++;
    switch_to(&self->sp, next->sp, next, false);
}

static void block_on(enum tasklet_state why, void *object)
{
    struct tasklet *self = &rt.tasklets[rt.current];
    self->state = why;
    self->wait_object = object;
    schedule();
}

static void tasklet_entry(void)
{
    if (rt.asan && __sanitizer_finish_switch_fiber) {
        const void *bottom;
        size_t size;
        __sanitizer_finish_switch_fiber(NULL, &bottom, &size);
        if (!rt.main_stack_bottom) {
            rt.main_stack_bottom = bottom;
            rt.main_stack_size = size;
        }
    }
    if (updlrm_emu_fault_armed)
        injected(updlrm_emu_fault_at_start(rt.current));
    user_main();
    rt.tasklets[rt.current].state = TASKLET_FINISHED;
    schedule();
    __builtin_unreachable();
}

/* Tasklet stacks sit a whole number of pages apart, so without an offset
 * the hot frames of every tasklet (the switch frame, dma_read, the DPU
 * program's loop) would fall on the same L1 cache sets of the host core and
 * evict each other at every switch; staggering the tops by a few lines per
 * tasklet spreads them over the sets. */
#define EMU_STACK_STAGGER 320u

static uint8_t *stack_top(const struct tasklet *t)
{
    return (uint8_t *)(((uintptr_t)t->stack_hi - (uintptr_t)(t - rt.tasklets) * EMU_STACK_STAGGER) & ~(uintptr_t)15);
}

static void prepare_tasklet(struct tasklet *t)
{
    uintptr_t top = (uintptr_t)stack_top(t);
    void **sp = (void **)top;
#if defined(__x86_64__)
    *--sp = NULL;                 /* fake return address: keeps the ABI's call alignment */
    *--sp = (void *)tasklet_entry; /* popped by `ret` */
    for (int i = 0; i < EMU_SWITCH_FRAME_WORDS; i++)
        *--sp = NULL;
#else
    sp -= 20;
    memset(sp, 0, 20 * sizeof(void *));
    sp[11] = (void *)tasklet_entry; /* x30, the return address */
#endif
    t->sp = sp;
    t->state = TASKLET_RUNNABLE;
    t->wait_object = NULL;
    t->hs_notifying = false;
    t->hs_released = false;
    t->asan_fake_stack = NULL;
}

/* ---- faults ------------------------------------------------------------- */

static void fault(enum emu_fault_kind kind, bool tasklet_specific, const char *format, ...)
{
    struct emu_dpu_state *s = state();
    va_list args;
    va_start(args, format);
    vsnprintf(s->fault_msg, sizeof s->fault_msg, format, args);
    va_end(args);
    s->fault_kind = kind;
    s->fault_tasklet = tasklet_specific ? (int32_t)rt.current : -1;
    s->fault_site = kind == EMU_FAULT_DMA ? rt.site : 0;
    rt.faulted = true;
    switch_to(&rt.tasklets[rt.current].sp, rt.main_sp, NULL, true);
    __builtin_unreachable();
}

EXPORT void halt(void) { fault(EMU_FAULT_HALT, true, "halt() called by tasklet %u", rt.current); }

EXPORT void __updlrm_assert_fail(const char *expression, const char *file, unsigned int line)
{
    fault(EMU_FAULT_ASSERT, true, "assertion failed in tasklet %u: %s (%s:%u)", rt.current, expression, file, line);
}

/* ---- tasklet identity --------------------------------------------------- */

EXPORT unsigned int me(void) { return rt.current; }

EXPORT unsigned int check_stack(void)
{
    uint8_t marker;
    struct tasklet *t = &rt.tasklets[rt.current];
    size_t used = (size_t)(stack_top(t) - &marker);
    uint32_t logical = rt.layout.stack_size[rt.current];
    return used >= logical ? 0 : (unsigned int)(logical - used);
}

/* ---- DMA ---------------------------------------------------------------- */

static bool in_range(uintptr_t address, size_t size, uintptr_t start, size_t length)
{
    return address >= start && size <= length && address - start <= length - size;
}

/* WRAM on the emulator: the program's .data/.bss span, its .rodata (readable
 * only), the mem_alloc heap and the calling tasklet's stack. */
static bool is_wram(uintptr_t address, size_t size, bool for_write)
{
    struct tasklet *t = &rt.tasklets[rt.current];
    return in_range(address, size, rt.layout.wram_span_start, rt.layout.wram_span_size) ||
           in_range(address, size, (uintptr_t)rt.heap, state()->heap_used) ||
           in_range(address, size, (uintptr_t)t->stack_lo, (size_t)(t->stack_hi - t->stack_lo)) ||
           (!for_write && in_range(address, size, rt.layout.rodata_start, rt.layout.rodata_size));
}

static void check_dma_slow(const char *what, uintptr_t *mram, uintptr_t *wram, unsigned int size,
                           bool wram_is_destination);

/* The common legal case in one predictable branch; the diagnosis of an
 * illegal DMA (or the hardware's alignment, when asked for) is left to the
 * slow path, which may adjust the addresses. */
static inline void check_dma(const char *what, uintptr_t *mram, uintptr_t *wram, unsigned int size,
                             bool wram_is_destination)
{
    bool ok = size - 8u <= 2040u && ((size | *mram | *wram) & 7u) == 0 &&
              *mram - EMU_MRAM_BASE <= EMU_MRAM_SIZE - size &&
              (in_range(*wram, size, rt.layout.wram_span_start, rt.layout.wram_span_size) ||
               in_range(*wram, size, (uintptr_t)rt.heap, state()->heap_used));
    if (__builtin_expect(!ok, 0))
        check_dma_slow(what, mram, wram, size, wram_is_destination);
}

/* A DMA the SDK forbids but the DPU's DMA engine serves by decoding the
 * address: a fault in strict mode; otherwise decoded, and in the default mode
 * recorded once per program site for the host to report with its source line. */
static void relaxed_dma(bool is_write, enum emu_dma_relaxation kind, uintptr_t address, uintptr_t decoded,
                        unsigned int size)
{
    struct emu_dma_warning w = { rt.site, address, decoded, kind, (int32_t)rt.current, size, is_write };
    if (rt.layout.dma_mode == EMU_DMA_STRICT) {
        char text[EMU_FAULT_MSG_SIZE];
        emu_describe_dma_relaxation(text, sizeof text, &w);
        fault(EMU_FAULT_DMA, true, "%s (UPDLRM_EMU_DMA=strict makes this a fault)", text);
    }
    if (rt.layout.dma_mode != EMU_DMA_DEFAULT)
        return;
    for (uint32_t i = 0; i < rt.nr_warned_sites; i++)
        if (rt.warned[i].site == rt.site && rt.warned[i].kind == kind)
            return;
    if (rt.nr_warned_sites < sizeof rt.warned / sizeof rt.warned[0]) {
        rt.warned[rt.nr_warned_sites].site = rt.site;
        rt.warned[rt.nr_warned_sites].kind = kind;
        rt.nr_warned_sites++;
    }
    struct emu_dpu_state *s = state();
    if (s->nr_dma_warnings < EMU_MAX_DMA_WARNINGS)
        s->dma_warnings[s->nr_dma_warnings++] = w;
}

static void check_dma_slow(const char *what, uintptr_t *mram_address, uintptr_t *wram_address, unsigned int size,
                           bool wram_is_destination)
{
    /* mram.h of the SDK rejects constant sizes outside these rules at build
     * time and tells the compiler to assume them (__builtin_assume), so what
     * the DPU does with another size is undefined: always a fault here. */
    if (size < 8 || size > 2048 || size % 8)
        fault(EMU_FAULT_DMA, true, "%s: size %u bytes is invalid (must be a multiple of 8 in [8, 2048])", what, size);
    /* The DPU's DMA engine moves whole 8-byte words, ignoring the low three
     * address bits, and decodes an MRAM address modulo the 64 MiB bank; some
     * programs rely on that (bitmaps indexed by byte offset, MRAM offsets
     * used as addresses). */
    bool is_write = !wram_is_destination;
    uintptr_t mram = *mram_address, wram = *wram_address;
    if (mram % 8) {
        relaxed_dma(is_write, EMU_DMA_MRAM_UNALIGNED, mram, mram & ~(uintptr_t)7, size);
        mram &= ~(uintptr_t)7;
    }
    if (!in_range(mram, 8, EMU_MRAM_BASE, EMU_MRAM_SIZE)) {
        uintptr_t decoded = EMU_MRAM_BASE + (mram & (EMU_MRAM_SIZE - 1));
        relaxed_dma(is_write, EMU_DMA_MRAM_OUTSIDE, *mram_address, decoded, size);
        mram = decoded;
    }
    if (wram % 8) {
        relaxed_dma(is_write, EMU_DMA_WRAM_UNALIGNED, wram, wram & ~(uintptr_t)7, size);
        wram &= ~(uintptr_t)7;
    }
    /* a range running past the end of MRAM or WRAM is a DMA fault on the DPU */
    if (!in_range(mram, size, EMU_MRAM_BASE, EMU_MRAM_SIZE))
        fault(EMU_FAULT_DMA, true, "%s: MRAM range [0x%lx, +%u) runs past the end of MRAM [0x%x, 0x%x)", what,
              (unsigned long)mram, size, EMU_MRAM_BASE, EMU_MRAM_BASE + EMU_MRAM_SIZE);
    if (!is_wram(wram, size, wram_is_destination))
        fault(EMU_FAULT_DMA, true, "%s: WRAM range [0x%lx, +%u) is outside WRAM", what, (unsigned long)wram, size);
    *mram_address = mram;
    *wram_address = wram;
}

/* DMAs use the persistent mapping of all MRAMs rather than the window at the
 * DPU's MRAM address: the window is remapped for every DPU a worker runs and
 * would page-fault afresh each time, the persistent mapping keeps its page
 * tables across DPUs and launches. */
static inline uint8_t *mram_host(uintptr_t mram) { return rt.mram + (mram - EMU_MRAM_BASE); }

/* A DPU tasklet waits for its DMA (mram_write: 61 + 0.5 cycles/byte, PrIM,
 * Gomez-Luna et al., IEEE Access 2022, Sec. 3.2.1) while the pipeline runs
 * the other tasklets.  Programs written for hardware rely on that: e.g.
 * after a barrier every tasklet computes its output address before the
 * last one, done with its mram_write, bumps the shared offset.  Handing the
 * turn to the next runnable tasklet after each MRAM write reproduces that
 * order, deterministically (round robin in id order).  Reads yield too, after
 * prefetching their source: the other tasklets then issue their own DMAs
 * while this one's lines arrive, so a read-heavy kernel has as many row
 * fetches in flight as it has tasklets, as on the DPU, instead of paying one
 * cache miss at a time (embedding gather on 64 DPUs x 16 tasklets: 35 -> 81 M
 * rows/s; engine kernel 40 -> 27 ms per batch). */
static inline void dma_yield(void)
{
    if (rt.nr_tasklets > 1)
        schedule();
}

static void dma_read(const void *from, void *to, unsigned int nb_of_bytes)
{
    uintptr_t mram = (uintptr_t)from, wram = (uintptr_t)to;
    check_dma("mram_read", &mram, &wram, nb_of_bytes, true);
    if (__builtin_expect(updlrm_emu_fault_armed, 0))
        injected(updlrm_emu_fault_at_dma(rt.current));
    const uint8_t *source = mram_host(mram);
    /* MRAM DMAs are only 8-byte aligned, so a transfer may straddle one more
     * cache line than its size suggests (a 256-byte row at offset 24 touches
     * five lines): prefetch every line from the first byte's to the last's. */
    const uint8_t *last = source + nb_of_bytes - 1;
    for (const uint8_t *line = (const uint8_t *)((uintptr_t)source & ~(uintptr_t)63); line <= last; line += 64)
        __builtin_prefetch(line);
    dma_yield();
    memcpy((void *)wram, source, nb_of_bytes);
    struct emu_tasklet_counters *c = counters();
    c->mram_read_count++;
    c->mram_read_bytes += nb_of_bytes;
    charge(EMU_DMA_READ_ALPHA + nb_of_bytes * EMU_DMA_BETA_NUM / EMU_DMA_BETA_DEN);
}

static void dma_write(const void *from, void *to, unsigned int nb_of_bytes)
{
    uintptr_t mram = (uintptr_t)to, wram = (uintptr_t)from;
    check_dma("mram_write", &mram, &wram, nb_of_bytes, false);
    if (__builtin_expect(updlrm_emu_fault_armed, 0))
        injected(updlrm_emu_fault_at_dma(rt.current));
    memcpy(mram_host(mram), (const void *)wram, nb_of_bytes);
    struct emu_tasklet_counters *c = counters();
    c->mram_write_count++;
    c->mram_write_bytes += nb_of_bytes;
    charge(EMU_DMA_WRITE_ALPHA + nb_of_bytes * EMU_DMA_BETA_NUM / EMU_DMA_BETA_DEN);
}

EXPORT void mram_read(const void *from, void *to, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    dma_read(from, to, nb_of_bytes);
}

EXPORT void mram_write(const void *from, void *to, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    dma_write(from, to, nb_of_bytes);
    dma_yield();
}

/* Splits an arbitrary aligned range into legal DMA transfers. */
static void dma_read_range(uintptr_t mram, uint8_t *wram, size_t size)
{
    uintptr_t site = rt.site; /* other tasklets run during each chunk's DMA */
    while (size) {
        unsigned int chunk = size > 2048 ? 2048u : (unsigned int)size;
        rt.site = site;
        dma_read((const void *)mram, wram, chunk);
        mram += chunk;
        wram += chunk;
        size -= chunk;
    }
}

static void dma_write_range(const uint8_t *wram, uintptr_t mram, size_t size)
{
    uintptr_t site = rt.site;
    while (size) {
        unsigned int chunk = size > 2048 ? 2048u : (unsigned int)size;
        rt.site = site;
        dma_write(wram, (void *)mram, chunk);
        mram += chunk;
        wram += chunk;
        size -= chunk;
    }
}

EXPORT void *mram_read_unaligned(const void *from, void *buffer, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    uintptr_t start = (uintptr_t)from & ~(uintptr_t)7;
    uintptr_t end = ((uintptr_t)from + nb_of_bytes + 7) & ~(uintptr_t)7;
    if (nb_of_bytes == 0 || end - start > 2048)
        fault(EMU_FAULT_DMA, true, "mram_read_unaligned: size %u bytes is invalid", nb_of_bytes);
    dma_read_range(start, buffer, end - start);
    return (uint8_t *)buffer + ((uintptr_t)from - start);
}

EXPORT void mram_write_unaligned(const void *from, void *dest, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    uintptr_t start = (uintptr_t)dest & ~(uintptr_t)7;
    uintptr_t end = ((uintptr_t)dest + nb_of_bytes + 7) & ~(uintptr_t)7;
    if (nb_of_bytes == 0 || end - start > 2048)
        fault(EMU_FAULT_DMA, true, "mram_write_unaligned: size %u bytes is invalid", nb_of_bytes);
    /* the DMA engine moves whole 8-byte words: source and destination must
     * share their alignment (SDK "Unaligned MRAM Accesses", fault 8) */
    if (((uintptr_t)from ^ (uintptr_t)dest) & 7)
        fault(EMU_FAULT_DMA, true, "mram_write_unaligned: wrong alignment: WRAM %p and MRAM 0x%lx differ modulo 8",
              from, (unsigned long)(uintptr_t)dest);
    /* the SDK stages the surrounding words through the tasklet's stack */
    uint64_t staging[2048 / 8];
    dma_read_range(start, (uint8_t *)staging, end - start);
    memcpy((uint8_t *)staging + ((uintptr_t)dest - start), from, nb_of_bytes);
    dma_write_range((const uint8_t *)staging, start, end - start);
    dma_yield();
}

/* The word is staged on the tasklet's stack, 8-aligned, like the SDK's
 * per-tasklet buffer; no yield can happen between the two DMAs. */
static uint64_t *atomic_word_begin(const char *what, uintptr_t dest, unsigned int alignment, uint64_t *word)
{
    if (dest % alignment)
        fault(EMU_FAULT_DMA, true, "%s: MRAM address 0x%lx is not %u-byte aligned", what, (unsigned long)dest,
              alignment);
    dma_read((const void *)(dest & ~(uintptr_t)7), word, 8);
    return word;
}

EXPORT void __updlrm_mram_update_int_atomic(void *dest, void (*update)(int *, void *), void *args)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_update_int_atomic", (uintptr_t)dest, 4, &word);
    update((int *)((uint8_t *)&word + ((uintptr_t)dest & 7)), args);
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

EXPORT void __updlrm_mram_update_byte_atomic(void *dest, void (*update)(uint8_t *, void *), void *args)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_update_byte_atomic", (uintptr_t)dest, 1, &word);
    update((uint8_t *)&word + ((uintptr_t)dest & 7), args);
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

EXPORT void __updlrm_mram_write_int_atomic(void *dest, int value)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_write_int_atomic", (uintptr_t)dest, 4, &word);
    memcpy((uint8_t *)&word + ((uintptr_t)dest & 7), &value, sizeof value);
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

EXPORT void __updlrm_mram_write_byte_atomic(void *dest, uint8_t value)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_write_byte_atomic", (uintptr_t)dest, 1, &word);
    ((uint8_t *)&word)[(uintptr_t)dest & 7] = value;
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

/* ---- WRAM heap ---------------------------------------------------------- */

EXPORT void *mem_alloc(size_t size)
{
    runtime_call();
    struct emu_dpu_state *s = state();
    size_t start = s->heap_used;
    size_t rounded = (size + 7) & ~(size_t)7;
    if (rounded < size || rounded > rt.layout.heap_capacity - start)
        fault(EMU_FAULT_WRAM_OVERFLOW, true,
              "mem_alloc(%zu): WRAM heap exhausted (%zu of %u bytes already allocated)", size, start,
              rt.layout.heap_capacity);
    s->heap_used = (uint32_t)(start + rounded);
    return rt.heap + start;
}

EXPORT void *mem_reset(void)
{
    runtime_call();
    state()->heap_used = 0;
    state()->buddy_offset = 0;
    return rt.heap;
}

/* Buddy allocator kept entirely inside WRAM (so that it is per DPU): a
 * header, a tree of "largest free block" orders, then the arena. */
#define BUDDY_MIN_ORDER 5u /* 32-byte blocks */
#define BUDDY_MAX_SIZE (32u << 10)

struct buddy_header {
    uint32_t arena_size; /* power of two */
    uint32_t nr_leaves;
    uint8_t tree[]; /* 2 * nr_leaves - 1 nodes: 0 = nothing free, k = 2^(k-1) leaves free */
};

static struct buddy_header *buddy(void)
{
    uint32_t offset = state()->buddy_offset;
    if (!offset)
        fault(EMU_FAULT_WRAM_OVERFLOW, true, "buddy allocator used before buddy_init");
    return (struct buddy_header *)(rt.heap + offset - 1);
}

static uint8_t *buddy_arena(struct buddy_header *h)
{
    return (uint8_t *)h + ((sizeof *h + 2 * h->nr_leaves + 7) & ~(size_t)7);
}

static uint8_t leaf_order_value(uint32_t leaves)
{
    uint8_t value = 1;
    while (leaves > 1) {
        leaves >>= 1;
        value++;
    }
    return value;
}

EXPORT void buddy_reset(void)
{
    struct buddy_header *h = buddy();
    uint32_t level_leaves = h->nr_leaves;
    uint32_t first = 0, count = 1;
    while (count <= h->nr_leaves) {
        for (uint32_t i = 0; i < count; i++)
            h->tree[first + i] = leaf_order_value(level_leaves);
        first += count;
        count *= 2;
        level_leaves /= 2;
    }
}

EXPORT void buddy_init(size_t size_of_heap)
{
    uint32_t arena = 1u << BUDDY_MIN_ORDER;
    while (arena < size_of_heap && arena < BUDDY_MAX_SIZE)
        arena *= 2;
    uint32_t leaves = arena >> BUDDY_MIN_ORDER;
    size_t header = (sizeof(struct buddy_header) + 2 * leaves + 7) & ~(size_t)7;
    uint8_t *memory = mem_alloc(header + arena);
    struct buddy_header *h = (struct buddy_header *)memory;
    h->arena_size = arena;
    h->nr_leaves = leaves;
    state()->buddy_offset = (uint32_t)(memory - rt.heap) + 1;
    buddy_reset();
}

EXPORT void *buddy_alloc(size_t size)
{
    runtime_call();
    struct buddy_header *h = buddy();
    uint32_t leaves = 1;
    while ((size_t)leaves << BUDDY_MIN_ORDER < size)
        leaves *= 2;
    if (size == 0 || leaves > h->nr_leaves)
        return NULL;
    uint8_t need = leaf_order_value(leaves);
    if (h->tree[0] < need)
        return NULL;
    uint32_t node = 0, node_leaves = h->nr_leaves;
    while (node_leaves > leaves) {
        uint32_t left = 2 * node + 1;
        node = h->tree[left] >= need ? left : left + 1;
        node_leaves /= 2;
    }
    h->tree[node] = 0;
    uint32_t level_first = 0, level_count = 1;
    for (uint32_t l = h->nr_leaves; l > node_leaves; l /= 2) {
        level_first += level_count;
        level_count *= 2;
    }
    uint32_t offset = (node - level_first) * (node_leaves << BUDDY_MIN_ORDER);
    while (node) {
        node = (node - 1) / 2;
        uint8_t l = h->tree[2 * node + 1], r = h->tree[2 * node + 2];
        h->tree[node] = l > r ? l : r;
    }
    return buddy_arena(h) + offset;
}

EXPORT void buddy_free(void *pointer)
{
    runtime_call();
    if (!pointer)
        return;
    struct buddy_header *h = buddy();
    uint32_t offset = (uint32_t)((uint8_t *)pointer - buddy_arena(h));
    if ((uint8_t *)pointer < buddy_arena(h) || offset >= h->arena_size || offset % (1u << BUDDY_MIN_ORDER))
        fault(EMU_FAULT_WRAM_OVERFLOW, true, "buddy_free: %p was not returned by buddy_alloc", pointer);
    /* start at the leaf and climb to the allocated node (the first with value 0) */
    uint32_t node = h->nr_leaves - 1 + (offset >> BUDDY_MIN_ORDER);
    uint32_t node_leaves = 1;
    while (h->tree[node] != 0) {
        if (!node)
            fault(EMU_FAULT_WRAM_OVERFLOW, true, "buddy_free: %p is not allocated", pointer);
        node = (node - 1) / 2;
        node_leaves *= 2;
    }
    h->tree[node] = leaf_order_value(node_leaves);
    while (node) {
        node = (node - 1) / 2;
        node_leaves *= 2;
        uint8_t l = h->tree[2 * node + 1], r = h->tree[2 * node + 2];
        uint8_t half = leaf_order_value(node_leaves / 2);
        h->tree[node] = (l == half && r == half) ? leaf_order_value(node_leaves) : (l > r ? l : r);
    }
}

EXPORT void *buddy_realloc(void *pointer, size_t size)
{
    if (!pointer)
        return buddy_alloc(size);
    struct buddy_header *h = buddy();
    uint32_t offset = (uint32_t)((uint8_t *)pointer - buddy_arena(h));
    uint32_t node = h->nr_leaves - 1 + (offset >> BUDDY_MIN_ORDER);
    uint32_t block = 1u << BUDDY_MIN_ORDER;
    while (node && h->tree[node] != 0) {
        node = (node - 1) / 2;
        block *= 2;
    }
    if (size <= block)
        return pointer;
    void *fresh = buddy_alloc(size);
    if (fresh) {
        memcpy(fresh, pointer, block);
        buddy_free(pointer);
    }
    return fresh;
}

/* ---- synchronisation ---------------------------------------------------- */

EXPORT void barrier_wait(barrier_t *barrier)
{
    runtime_call();
    counters()->barrier_waits++;
    if (barrier->count == 0 || barrier->count > barrier->initial_count)
        fault(EMU_FAULT_SYNC, true, "barrier_wait: corrupted barrier (count %u of %u)", barrier->count,
              barrier->initial_count);
    if (--barrier->count == 0) {
        barrier->count = barrier->initial_count;
        barrier->generation++;
        return;
    }
    rt.tasklets[rt.current].wait_generation = barrier->generation;
    block_on(TASKLET_BLOCKED_BARRIER, barrier);
}

/* On a DPU a mutex id is an atomic-bit address of which only the low 8 bits
 * count; programs that store ids in a uint8_t (the SDK's barrier_t) or
 * leave them zero (bit 0) behave the same here. */
static uint8_t *atomic_bit(mutex_id_t mutex)
{
    return (uint8_t *)(uintptr_t)(rt.layout.atomic_start + ((uintptr_t)mutex & 0xff));
}

EXPORT void mutex_lock(mutex_id_t id)
{
    runtime_call();
    uint8_t *mutex = atomic_bit(id);
    if (!*mutex) {
        *mutex = (uint8_t)(rt.current + 1);
        return;
    }
    if (*mutex == rt.current + 1)
        fault(EMU_FAULT_DEADLOCK, true, "mutex_lock: tasklet %u locks a mutex it already holds", rt.current);
    counters()->mutex_waits++;
    block_on(TASKLET_BLOCKED_MUTEX, mutex);
}

EXPORT bool mutex_trylock(mutex_id_t id)
{
    runtime_call();
    uint8_t *mutex = atomic_bit(id);
    if (*mutex)
        return false;
    *mutex = (uint8_t)(rt.current + 1);
    return true;
}

EXPORT void mutex_unlock(mutex_id_t id)
{
    runtime_call();
    uint8_t *mutex = atomic_bit(id);
    *mutex = 0;
}

EXPORT void vmutex_lock(struct vmutex *vm, uint16_t id)
{
    runtime_call();
    uint8_t *bits = &vm->vm[id >> 3];
    uint8_t mask = (uint8_t)(1u << (id & 7));
    if (!(*bits & mask)) {
        *bits |= mask;
        return;
    }
    counters()->mutex_waits++;
    rt.tasklets[rt.current].wait_generation = mask;
    block_on(TASKLET_BLOCKED_VMUTEX, bits);
}

EXPORT void vmutex_unlock(struct vmutex *vm, uint16_t id)
{
    runtime_call();
    vm->vm[id >> 3] &= (uint8_t)~(1u << (id & 7));
}

EXPORT void sem_take(sem_t *sem)
{
    runtime_call();
    if (sem->count > 0) {
        sem->count--;
        return;
    }
    counters()->sem_waits++;
    block_on(TASKLET_BLOCKED_SEM, sem);
}

EXPORT void sem_give(sem_t *sem)
{
    runtime_call();
    sem->count++;
}

EXPORT void handshake_notify(void)
{
    runtime_call();
    /* SDK <handshake.h>: only a notifier that comes first stops until a
     * tasklet waits for it; a waiter already asleep is woken and the notifier
     * goes on, so its next steps (e.g. an mram_write) precede the waiter's. */
    for (uint32_t id = 0; id < rt.nr_tasklets; id++) {
        struct tasklet *waiter = &rt.tasklets[id];
        if (waiter->state == TASKLET_BLOCKED_WAIT_FOR && waiter->wait_for == rt.current) {
            waiter->state = TASKLET_RUNNABLE;
            return;
        }
    }
    struct tasklet *self = &rt.tasklets[rt.current];
    self->hs_notifying = true;
    counters()->handshake_waits++;
    block_on(TASKLET_BLOCKED_NOTIFY, NULL);
}

EXPORT int handshake_wait_for(unsigned int notifier)
{
    runtime_call();
    if (notifier >= rt.nr_tasklets)
        fault(EMU_FAULT_SYNC, true, "handshake_wait_for: notifier %u is not a tasklet (NR_TASKLETS=%u)", notifier,
              rt.nr_tasklets);
    for (uint32_t id = 0; id < rt.nr_tasklets; id++)
        if (rt.tasklets[id].state == TASKLET_BLOCKED_WAIT_FOR && rt.tasklets[id].wait_for == notifier) {
            errno = EALREADY;
            return EALREADY;
        }
    struct tasklet *n = &rt.tasklets[notifier];
    if (n->hs_notifying) {
        /* A stopped notifier resumes at once on a DPU, while the waiter still
         * has its own steps ahead: let the notifier run first. */
        n->hs_notifying = false;
        n->hs_released = true;
        yield_to(notifier);
        return 0;
    }
    counters()->handshake_waits++;
    rt.tasklets[rt.current].wait_for = notifier;
    block_on(TASKLET_BLOCKED_WAIT_FOR, NULL);
    return 0;
}

/* ---- performance counter ------------------------------------------------ */

static uint64_t perfcounter_value(void)
{
    struct emu_dpu_state *s = state();
    uint64_t now;
    if (s->perfcounter_mode == 2) {
        now = 0;
        for (uint32_t id = 0; id < rt.nr_tasklets; id++)
            now += s->tasklet[id].runtime_calls;
    } else {
        now = s->dpu_cycles;
    }
    return now - s->perfcounter_base;
}

EXPORT uint64_t perfcounter_config(int config, bool reset_value)
{
    runtime_call();
    struct emu_dpu_state *s = state();
    uint64_t previous = perfcounter_value();
    if (config == 1 || config == 2) {
        s->perfcounter_mode = (uint32_t)config;
    }
    if (reset_value) {
        s->perfcounter_base = 0;
        s->perfcounter_base = perfcounter_value();
    }
    return previous;
}

EXPORT uint64_t perfcounter_get(void)
{
    runtime_call();
    return perfcounter_value();
}

/* ---- log ---------------------------------------------------------------- */

static void log_append(const char *text, size_t length)
{
    struct emu_dpu_state *s = state();
    for (size_t i = 0; i < length; i++)
        rt.block->log[(s->log_write_pos + i) % EMU_LOG_SIZE] = text[i];
    s->log_write_pos += (uint32_t)length;
}

EXPORT int __updlrm_printf(const char *format, ...)
{
    runtime_call();
    char buffer[4096];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    if (length > 0)
        log_append(buffer, (size_t)length < sizeof buffer ? (size_t)length : sizeof buffer - 1);
    return length;
}

EXPORT int __updlrm_puts(const char *text)
{
    runtime_call();
    log_append(text, strlen(text));
    log_append("\n", 1);
    return 1;
}

EXPORT int __updlrm_putchar(int character)
{
    runtime_call();
    char c = (char)character;
    log_append(&c, 1);
    return (unsigned char)c;
}

/* ---- sequential reader -------------------------------------------------- */

EXPORT seqreader_buffer_t __updlrm_seqread_alloc(uint32_t cache_size)
{
    if (cache_size < 32 || cache_size > 1024 || (cache_size & (cache_size - 1)))
        fault(EMU_FAULT_SYNC, true, "seqread: SEQREAD_CACHE_SIZE %u must be 32, 64, ..., 1024", cache_size);
    return (seqreader_buffer_t)mem_alloc(2u * cache_size);
}

static void seqread_fill(seqreader_t *reader)
{
    size_t size = 2u * reader->cache_size;
    uintptr_t limit = EMU_MRAM_BASE + EMU_MRAM_SIZE;
    if (reader->mram_addr + size > limit)
        size = limit - reader->mram_addr;
    dma_read_range(reader->mram_addr, (uint8_t *)reader->wram_cache, size);
}

static void *seqread_seek(void *mram_addr, seqreader_t *reader)
{
    uintptr_t address = (uintptr_t)mram_addr;
    reader->mram_addr = address & ~(uintptr_t)7;
    seqread_fill(reader);
    return (uint8_t *)reader->wram_cache + (address - reader->mram_addr);
}

EXPORT void *__updlrm_seqread_seek(void *mram_addr, seqreader_t *reader)
{
    NOTE_SITE();
    return seqread_seek(mram_addr, reader);
}

EXPORT void *__updlrm_seqread_init(seqreader_buffer_t cache, void *mram_addr, seqreader_t *reader,
                                   uint32_t cache_size)
{
    NOTE_SITE();
    reader->wram_cache = cache;
    reader->cache_size = cache_size;
    return seqread_seek(mram_addr, reader);
}

EXPORT void *__updlrm_seqread_get(void *ptr, uint32_t increment, seqreader_t *reader)
{
    if (increment > reader->cache_size)
        fault(EMU_FAULT_SYNC, true, "seqread_get: increment %u exceeds the cache size %u", increment,
              reader->cache_size);
    uintptr_t offset = (uintptr_t)ptr + increment - reader->wram_cache;
    if (offset < reader->cache_size)
        return (uint8_t *)ptr + increment;
    NOTE_SITE();
    return seqread_seek((void *)(reader->mram_addr + offset), reader);
}

EXPORT void *__updlrm_seqread_tell(void *ptr, seqreader_t *reader)
{
    return (void *)(reader->mram_addr + ((uintptr_t)ptr - reader->wram_cache));
}

/* ---- running a DPU ------------------------------------------------------ */

static void map_mram(uint32_t dpu)
{
    if (rt.resident_mram_dpu == dpu)
        return;
    void *window = mmap((void *)(uintptr_t)EMU_MRAM_BASE, EMU_MRAM_SIZE, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_FIXED, EMU_WORKER_MRAM_FD, (off_t)dpu * EMU_MRAM_SIZE);
    if (window == MAP_FAILED)
        die("map MRAM window");
    rt.resident_mram_dpu = dpu;
}

static void run_dpu(uint32_t dpu)
{
    rt.block = (struct emu_dpu_block *)(rt.ctrl + (size_t)dpu * EMU_DPU_BLOCK_SIZE);
    struct emu_dpu_state *s = state();
    s->current_tasklet = 0;
    s->fault_kind = EMU_FAULT_NONE;
    s->fault_tasklet = -1;
    s->fault_msg[0] = 0;
    s->fault_site = 0;
    s->nr_dma_warnings = 0;
    s->log_write_pos = 0;
    updlrm_emu_fault_begin(&s->inject);
    s->status = EMU_DPU_RUNNING;
    s->dpu_counters.launches++;
    uint64_t start_cycles = s->dpu_cycles;

    map_mram(dpu);
    rt.mram = rt.mram_all + (size_t)dpu * EMU_MRAM_SIZE;
    raw_copy((void *)(uintptr_t)rt.layout.wram_span_start, rt.block->image, rt.layout.wram_span_size);
    raw_copy(rt.heap, rt.block->image + rt.layout.heap_offset, s->heap_used);
    /* boot releases every atomic bit, as the SDK's crt0 does */
    uint8_t *atomic = (uint8_t *)(uintptr_t)rt.layout.atomic_start;
    for (uint64_t i = 0; i < rt.layout.atomic_size; i++)
        atomic[i] = 0;

    rt.faulted = false;
    for (uint32_t id = 0; id < rt.nr_tasklets; id++) {
        /* frames never returned from (tasklet entries, faulted tasklets)
         * keep their AddressSanitizer poisoning on the reused stacks */
        if (rt.asan && __asan_unpoison_memory_region)
            __asan_unpoison_memory_region(rt.tasklets[id].stack_lo,
                                          (size_t)(rt.tasklets[id].stack_hi - rt.tasklets[id].stack_lo));
        prepare_tasklet(&rt.tasklets[id]);
    }
    rt.current = 0;
    s->tasklet[0].switches++;
    if (rt.asan && __sanitizer_start_switch_fiber)
        __sanitizer_start_switch_fiber(&rt.main_fake_stack, rt.tasklets[0].stack_lo,
                                       (size_t)(rt.tasklets[0].stack_hi - rt.tasklets[0].stack_lo));
    emu_switch(&rt.main_sp, rt.tasklets[0].sp);
    if (rt.asan && __sanitizer_finish_switch_fiber)
        __sanitizer_finish_switch_fiber(rt.main_fake_stack, NULL, NULL);

    raw_copy(rt.block->image, (void *)(uintptr_t)rt.layout.wram_span_start, rt.layout.wram_span_size);
    raw_copy(rt.block->image + rt.layout.heap_offset, rt.heap, s->heap_used);
    s->dpu_counters.last_launch_cycles = s->dpu_cycles - start_cycles;
    if (rt.faulted)
        s->dpu_counters.faults++;
    __atomic_store_n(&s->status, rt.faulted ? EMU_DPU_FAULT : EMU_DPU_DONE, __ATOMIC_RELEASE);
}

/* Tasklet stacks and the heap must sit below 4 GiB so that DPU code may
 * keep their addresses in 32-bit integers, as it does on a DPU. */
static void allocate_low_region(void)
{
    size_t per_stack = EMU_HOST_STACK_SIZE + EMU_GUARD_SIZE;
    size_t size = EMU_MAX_TASKLETS * per_stack + 2 * EMU_WRAM_SIZE;
    for (uintptr_t hint = 0x20000000u; hint + size < 0xF0000000u; hint += 0x01000000u) {
        void *p = mmap((void *)hint, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                       -1, 0);
        if (p == MAP_FAILED)
            continue;
        if (p != (void *)hint) {
            munmap(p, size);
            continue;
        }
        rt.low_region = p;
        break;
    }
    if (!rt.low_region)
        die("reserve low memory for tasklet stacks");
    for (uint32_t id = 0; id < EMU_MAX_TASKLETS; id++) {
        uint8_t *base = rt.low_region + id * per_stack;
        if (mprotect(base, EMU_GUARD_SIZE, PROT_NONE))
            die("stack guard page");
        rt.tasklets[id].stack_lo = base + EMU_GUARD_SIZE;
        rt.tasklets[id].stack_hi = base + per_stack;
    }
    rt.heap = rt.low_region + EMU_MAX_TASKLETS * per_stack;
}

static int worker_loop(void)
{
    struct stat st;
    if (fstat(EMU_WORKER_CTRL_FD, &st))
        die("stat control memory");
    rt.ctrl_size = (size_t)st.st_size;
    rt.ctrl = mmap(NULL, rt.ctrl_size, PROT_READ | PROT_WRITE, MAP_SHARED, EMU_WORKER_CTRL_FD, 0);
    if (rt.ctrl == MAP_FAILED)
        die("map control memory");
    if (fstat(EMU_WORKER_MRAM_FD, &st))
        die("stat MRAM");
    rt.mram_all = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                       EMU_WORKER_MRAM_FD, 0);
    if (rt.mram_all == MAP_FAILED)
        die("map MRAM");
    allocate_low_region();
    rt.resident_mram_dpu = -1;
    rt.asan = __sanitizer_start_switch_fiber != NULL;

    uint32_t *dpus = NULL;
    uint32_t capacity = 0;
    for (;;) {
        struct emu_launch_msg msg;
        if (!read_full(EMU_WORKER_CMD_FD, &msg, sizeof msg))
            break; /* host closed the socket: the DPU set was freed */
        if (msg.magic != EMU_LAUNCH_MAGIC || msg.layout.protocol_version != EMU_PROTOCOL_VERSION ||
            msg.layout.nr_tasklets == 0 || msg.layout.nr_tasklets > EMU_MAX_TASKLETS) {
            errno = EPROTO;
            die("bad launch message");
        }
        if (msg.nr_dpus > capacity) {
            capacity = msg.nr_dpus;
            dpus = realloc(dpus, capacity * sizeof *dpus);
            if (!dpus)
                die("allocate DPU list");
        }
        if (!read_full(EMU_WORKER_CMD_FD, dpus, msg.nr_dpus * sizeof *dpus))
            break;
        rt.layout = msg.layout;
        rt.nr_tasklets = msg.layout.nr_tasklets;
        for (uint32_t i = 0; i < msg.nr_dpus; i++) {
            if ((size_t)(dpus[i] + 1) * EMU_DPU_BLOCK_SIZE > rt.ctrl_size) {
                errno = ERANGE;
                die("DPU index out of range");
            }
            run_dpu(dpus[i]);
        }
        struct emu_launch_reply reply = { EMU_LAUNCH_MAGIC, msg.nr_dpus };
        write_full(EMU_WORKER_REPLY_FD, &reply, sizeof reply);
    }
    free(dpus);
    return 0;
}

EXPORT int main(int argc, char **argv)
{
    (void)argc;
    if (!getenv(EMU_WORKER_ENV)) {
        static const char usage[] = "This is a DPU program built for the updlrm emulator; load it from a host "
                                    "program with dpu_load(), or run it with `updlrm emu run`.\n";
        if (write(STDERR_FILENO, usage, sizeof usage - 1) < 0)
            return 2;
        return 2;
    }
    (void)argv;
    if (!user_main) {
        errno = ENOENT;
        die("no DPU main registered (program not built by the updlrm compiler driver)");
    }
    /* a crashing DPU program should not leave core files behind */
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core);
    return worker_loop();
}
