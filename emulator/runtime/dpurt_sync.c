/* updlrm emulator DPU runtime (dpurt.h): synchronisation primitives (barriers, mutexes,
 * virtual mutexes, semaphores, handshakes) on the cooperative scheduler.
 */
#include "dpurt.h"

/* ---- synchronisation ---------------------------------------------------- */

EXPORT void barrier_wait(barrier_t *barrier)
{
    runtime_call();
    counters()->barrier_waits++;
    if (barrier->count == 0 || barrier->count > barrier->initial_count) {
        fault(EMU_FAULT_SYNC, true, "barrier_wait: corrupted barrier (count %u of %u)", barrier->count,
              barrier->initial_count);
    }
    if (--barrier->count == 0) {
        barrier->count = barrier->initial_count;
        barrier->generation++;
        return;
    }
    rt.sched.tasklets[rt.sched.current].wait_generation = barrier->generation;
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
        *mutex = (uint8_t)(rt.sched.current + 1);
        return;
    }
    if (*mutex == rt.sched.current + 1) {
        fault(EMU_FAULT_DEADLOCK, true, "mutex_lock: tasklet %u locks a mutex it already holds", rt.sched.current);
    }
    counters()->mutex_waits++;
    block_on(TASKLET_BLOCKED_MUTEX, mutex);
}

EXPORT bool mutex_trylock(mutex_id_t id)
{
    runtime_call();
    uint8_t *mutex = atomic_bit(id);
    if (*mutex) {
        return false;
    }
    *mutex = (uint8_t)(rt.sched.current + 1);
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
    rt.sched.tasklets[rt.sched.current].wait_generation = mask;
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
    for (uint32_t id = 0; id < rt.sched.nr_tasklets; id++) {
        struct tasklet *waiter = &rt.sched.tasklets[id];
        if (waiter->state == TASKLET_BLOCKED_WAIT_FOR && waiter->wait_for == rt.sched.current) {
            waiter->state = TASKLET_RUNNABLE;
            return;
        }
    }
    struct tasklet *self = &rt.sched.tasklets[rt.sched.current];
    self->hs_notifying = true;
    counters()->handshake_waits++;
    block_on(TASKLET_BLOCKED_NOTIFY, NULL);
}

EXPORT int handshake_wait_for(unsigned int notifier)
{
    runtime_call();
    if (notifier >= rt.sched.nr_tasklets) {
        fault(EMU_FAULT_SYNC, true, "handshake_wait_for: notifier %u is not a tasklet (NR_TASKLETS=%u)", notifier,
              rt.sched.nr_tasklets);
    }
    for (uint32_t id = 0; id < rt.sched.nr_tasklets; id++) {
        if (rt.sched.tasklets[id].state == TASKLET_BLOCKED_WAIT_FOR && rt.sched.tasklets[id].wait_for == notifier) {
            errno = EALREADY;
            return EALREADY;
        }
    }
    struct tasklet *n = &rt.sched.tasklets[notifier];
    if (n->hs_notifying) {
        /* A stopped notifier resumes at once on a DPU, while the waiter still
         * has its own steps ahead: let the notifier run first. */
        n->hs_notifying = false;
        n->hs_released = true;
        yield_to(notifier);
        return 0;
    }
    counters()->handshake_waits++;
    rt.sched.tasklets[rt.sched.current].wait_for = notifier;
    block_on(TASKLET_BLOCKED_WAIT_FOR, NULL);
    return 0;
}
