/* updlrm emulator DPU runtime (dpurt.h): the context switch, the tasklets and their
 * round-robin scheduler (hot: every DMA passes through schedule()), faults,
 * tasklet identity.
 */
#include "dpurt.h"

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

/* ---- scheduling --------------------------------------------------------- */

void switch_to(void **save_sp, void *new_sp, const struct tasklet *target, bool leaving_for_good)
{
    if (rt.sched.asan && __sanitizer_start_switch_fiber) {
        struct tasklet *self = rt.sched.current < rt.sched.nr_tasklets ? &rt.sched.tasklets[rt.sched.current] : NULL;
        void **fake = leaving_for_good ? NULL : (self ? &self->asan_fake_stack : NULL);
        if (target) {
            __sanitizer_start_switch_fiber(fake, target->stack_lo, (size_t)(target->stack_hi - target->stack_lo));
        } else {
            __sanitizer_start_switch_fiber(fake, rt.sched.main_stack_bottom, rt.sched.main_stack_size);
        }
    }
    emu_switch(save_sp, new_sp);
    if (rt.sched.asan && __sanitizer_finish_switch_fiber) {
        struct tasklet *self = &rt.sched.tasklets[rt.sched.current];
        __sanitizer_finish_switch_fiber(self->asan_fake_stack, NULL, NULL);
    }
}


/* Whether a blocked tasklet may proceed; if so, performs the acquisition it
 * was waiting for, so that it owns the resource when it resumes. */
bool try_wake_blocked(struct tasklet *t)
{
    switch (t->state) {
    case TASKLET_RUNNABLE:
        return true;
    case TASKLET_BLOCKED_BARRIER:
        if (((barrier_t *)t->wait_object)->generation == t->wait_generation) {
            return false;
        }
        break;
    case TASKLET_BLOCKED_MUTEX: {
        uint8_t *m = t->wait_object;
        if (*m) {
            return false;
        }
        *m = (uint8_t)(t - rt.sched.tasklets + 1);
        break;
    }
    case TASKLET_BLOCKED_VMUTEX: {
        uint8_t *bits = t->wait_object;
        if (*bits & t->wait_generation) {
            return false;
        }
        *bits |= (uint8_t)t->wait_generation;
        break;
    }
    case TASKLET_BLOCKED_SEM: {
        sem_t *s = t->wait_object;
        if (s->count <= 0) {
            return false;
        }
        s->count--;
        break;
    }
    case TASKLET_BLOCKED_NOTIFY:
        if (!t->hs_released) {
            return false;
        }
        t->hs_released = false;
        break;
    case TASKLET_BLOCKED_WAIT_FOR: {
        struct tasklet *notifier = &rt.sched.tasklets[t->wait_for];
        if (!notifier->hs_notifying) {
            return false;
        }
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

/* The calling tasklet has blocked or finished: run the next tasklet that
 * can proceed, in id order starting after the caller (round robin).  Returns
 * when the caller itself can proceed again. */
void schedule(void)
{
    uint32_t self_id = rt.sched.current;
    struct tasklet *self = &rt.sched.tasklets[self_id];
    uint32_t id = self_id;
    for (uint32_t step = 1; step <= rt.sched.nr_tasklets; step++) {
        id = id + 1 == rt.sched.nr_tasklets ? 0 : id + 1; /* round robin without a division per step */
        struct tasklet *next = &rt.sched.tasklets[id];
        if (!try_wake(next)) {
            continue;
        }
        if (id == self_id) {
            return;
        }
        rt.sched.current = id;
        state()->current_tasklet = id;
        state()->tasklet[id].switches++;
        switch_to(&self->sp, next->sp, next, self->state == TASKLET_FINISHED);
        /* resumed: whoever switched to us set rt.sched.current to our id */
        return;
    }
    bool all_finished = true;
    for (uint32_t id = 0; id < rt.sched.nr_tasklets; id++) {
        all_finished &= rt.sched.tasklets[id].state == TASKLET_FINISHED;
    }
    if (all_finished) {
        switch_to(&self->sp, rt.sched.main_sp, NULL, true);
        __builtin_unreachable();
    }
    char blocked[EMU_MAX_TASKLETS * 24] = "";
    size_t used = 0;
    static const char *const why[] = {
        [TASKLET_BLOCKED_BARRIER] = "barrier",         [TASKLET_BLOCKED_MUTEX] = "mutex",
        [TASKLET_BLOCKED_VMUTEX] = "vmutex",           [TASKLET_BLOCKED_SEM] = "semaphore",
        [TASKLET_BLOCKED_NOTIFY] = "handshake_notify", [TASKLET_BLOCKED_WAIT_FOR] = "handshake_wait_for",
    };
    for (uint32_t id = 0; id < rt.sched.nr_tasklets && used < sizeof blocked; id++) {
        enum tasklet_state s = rt.sched.tasklets[id].state;
        if (s != TASKLET_FINISHED && s != TASKLET_RUNNABLE) {
            used += (size_t)snprintf(blocked + used, sizeof blocked - used, "%s%u:%s", used ? " " : "", id, why[s]);
        }
    }
    fault(EMU_FAULT_DEADLOCK, false, "deadlock: every unfinished tasklet is blocked (%s)", blocked);
}

static void tasklet_entry(void)
{
    if (rt.sched.asan && __sanitizer_finish_switch_fiber) {
        const void *bottom;
        size_t size;
        __sanitizer_finish_switch_fiber(NULL, &bottom, &size);
        if (!rt.sched.main_stack_bottom) {
            rt.sched.main_stack_bottom = bottom;
            rt.sched.main_stack_size = size;
        }
    }
    if (updlrm_emu_fault_armed) {
        injected(updlrm_emu_fault_at_start(rt.sched.current));
    }
    user_main();
    rt.sched.tasklets[rt.sched.current].state = TASKLET_FINISHED;
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
    return (uint8_t *)(((uintptr_t)t->stack_hi - (uintptr_t)(t - rt.sched.tasklets) * EMU_STACK_STAGGER) &
                       ~(uintptr_t)15);
}

static void prepare_tasklet(struct tasklet *t)
{
    uintptr_t top = (uintptr_t)stack_top(t);
    void **sp = (void **)top;
#if defined(__x86_64__)
    *--sp = NULL;                  /* fake return address: keeps the ABI's call alignment */
    *--sp = (void *)tasklet_entry; /* popped by `ret` */
    for (int i = 0; i < EMU_SWITCH_FRAME_WORDS; i++) {
        *--sp = NULL;
    }
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

/* Runs the current DPU's tasklets from their entry until all have finished
 * or one faulted (rt.sched.faulted); called by the worker for each DPU. */
void run_tasklets(void)
{
    rt.sched.faulted = false;
    for (uint32_t id = 0; id < rt.sched.nr_tasklets; id++) {
        /* frames never returned from (tasklet entries, faulted tasklets)
         * keep their AddressSanitizer poisoning on the reused stacks */
        if (rt.sched.asan && __asan_unpoison_memory_region) {
            __asan_unpoison_memory_region(rt.sched.tasklets[id].stack_lo,
                                          (size_t)(rt.sched.tasklets[id].stack_hi - rt.sched.tasklets[id].stack_lo));
        }
        prepare_tasklet(&rt.sched.tasklets[id]);
    }
    rt.sched.current = 0;
    state()->tasklet[0].switches++;
    if (rt.sched.asan && __sanitizer_start_switch_fiber) {
        __sanitizer_start_switch_fiber(&rt.sched.main_fake_stack, rt.sched.tasklets[0].stack_lo,
                                       (size_t)(rt.sched.tasklets[0].stack_hi - rt.sched.tasklets[0].stack_lo));
    }
    emu_switch(&rt.sched.main_sp, rt.sched.tasklets[0].sp);
    if (rt.sched.asan && __sanitizer_finish_switch_fiber) {
        __sanitizer_finish_switch_fiber(rt.sched.main_fake_stack, NULL, NULL);
    }
}

/* ---- faults ------------------------------------------------------------- */

void fault(enum emu_fault_kind kind, bool tasklet_specific, const char *format, ...)
{
    struct emu_dpu_state *s = state();
    va_list args;
    va_start(args, format);
    vsnprintf(s->fault_msg, sizeof s->fault_msg, format, args);
    va_end(args);
    s->fault_kind = kind;
    s->fault_tasklet = tasklet_specific ? (int32_t)rt.sched.current : -1;
    s->fault_site = kind == EMU_FAULT_DMA ? rt.dma.site : 0;
    rt.sched.faulted = true;
    switch_to(&rt.sched.tasklets[rt.sched.current].sp, rt.sched.main_sp, NULL, true);
    __builtin_unreachable();
}

EXPORT void halt(void)
{
    fault(EMU_FAULT_HALT, true, "halt() called by tasklet %u", rt.sched.current);
}

EXPORT void __updlrm_assert_fail(const char *expression, const char *file, unsigned int line)
{
    fault(EMU_FAULT_ASSERT, true, "assertion failed in tasklet %u: %s (%s:%u)", rt.sched.current, expression, file,
          line);
}

/* ---- tasklet identity --------------------------------------------------- */

EXPORT unsigned int me(void)
{
    return rt.sched.current;
}

EXPORT unsigned int check_stack(void)
{
    uint8_t marker;
    struct tasklet *t = &rt.sched.tasklets[rt.sched.current];
    size_t used = (size_t)(stack_top(t) - &marker);
    uint32_t logical = rt.layout.stack_size[rt.sched.current];
    return used >= logical ? 0 : (unsigned int)(logical - used);
}
