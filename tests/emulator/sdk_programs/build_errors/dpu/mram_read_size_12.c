/*
 * Build-time check of the SDK headers: with -DREFUSED this file must fail to
 * build with the message below (as with the UPMEM SDK's dpu-upmem-dpurte-clang);
 * without it, the valid neighbour builds.
 *
 * expect: mram_read: nb_of_bytes must be a multiple of 8
 */
#include <stdint.h>
#include <defs.h>
#include <barrier.h>
#include <mram.h>
#include <mutex_pool.h>
#include <perfcounter.h>
#include <sem.h>
#include <vmutex.h>
#include <stdio.h>

#ifdef REFUSED
void f(uint8_t *w) { mram_read(DPU_MRAM_HEAP_POINTER, w, 12); }
#else
void f(uint8_t *w) { mram_read(DPU_MRAM_HEAP_POINTER, w, 16); }
#endif

int
main(void)
{
    return 0;
}
