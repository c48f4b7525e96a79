/* Fault scenarios for the emulator's own tests.  The host sets `scenario`
 * and `faulting_tasklet` on one DPU; the other tasklets (and DPUs) finish
 * normally and count themselves in `finished`. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <alloc.h>
#include <barrier.h>
#include <defs.h>
#include <mram.h>
#include <mutex.h>

enum {
    NONE, DMA_SIZE, DMA_MRAM_MISALIGNED, DMA_WRAM_OUTSIDE, DMA_MRAM_OUTSIDE, HALT, ASSERT, SEGFAULT,
    STACK_OVERFLOW, DEADLOCK, HEAP_OVERFLOW, ABORT, EXIT, RELOCK, SPIN, DMA_TOO_BIG
};

__host uint32_t scenario;
__host uint32_t faulting_tasklet;
__host uint32_t finished;
MUTEX_INIT(count_lock);
MUTEX_INIT(relock);
BARRIER_INIT(everyone, NR_TASKLETS);
volatile uint32_t spin_flag;

static __dma_aligned uint64_t buffer[512];

static int __attribute__((noinline)) recurse(volatile int depth)
{
    volatile char pad[256];
    pad[0] = (char)depth;
    return recurse(depth + 1) + pad[0];
}

static void misbehave(void)
{
    uintptr_t heap = (uintptr_t)DPU_MRAM_HEAP_POINTER;
    /* sizes known only at run time: constant ones are build errors, as with the SDK */
    volatile unsigned int twelve = 12, too_big = 4096;
    switch (scenario) {
    case DMA_SIZE: mram_read((__mram_ptr void *)heap, buffer, twelve); break;
    case DMA_TOO_BIG: mram_read((__mram_ptr void *)heap, buffer, too_big); break;
    case DMA_MRAM_MISALIGNED: mram_read((__mram_ptr void *)(heap + 4), buffer, 16); break;
    case DMA_WRAM_OUTSIDE: mram_read((__mram_ptr void *)heap, (void *)(uintptr_t)0x1000, 16); break;
    case DMA_MRAM_OUTSIDE: mram_write(buffer, (__mram_ptr void *)(uintptr_t)(0x08000000u + (64u << 20) - 8), 16); break;
    case HALT: halt();
    case ASSERT: assert(scenario == NONE); break;
    case SEGFAULT: *(volatile int *)(uintptr_t)16 = 1; break;
    case STACK_OVERFLOW: recurse(0); break;
    case DEADLOCK: return; /* skips the barrier below: the others wait forever */
    case HEAP_OVERFLOW: for (;;) mem_alloc(1024);
    case ABORT: abort();
    case EXIT: exit(3);
    case RELOCK: mutex_lock(relock); mutex_lock(relock); break;
    case SPIN: while (!spin_flag) {} break;
    }
}

int main(void)
{
    if (me() == 0)
        mem_reset();
    barrier_wait(&everyone);
    if (scenario != NONE && me() == faulting_tasklet) {
        misbehave();
        if (scenario == DEADLOCK)
            return 0;
    }
    barrier_wait(&everyone);
    mutex_lock(count_lock);
    finished++;
    mutex_unlock(count_lock);
    return 0;
}
