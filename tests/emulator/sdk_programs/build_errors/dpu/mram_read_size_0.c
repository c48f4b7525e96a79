/*
 * Build-time check of the SDK headers: with -DREFUSED this file must fail to
 * build with the message below (as with the UPMEM SDK's dpu-upmem-dpurte-clang);
 * without it, the valid neighbour builds.
 *
 * expect: mram_read: nb_of_bytes must not be null
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
void f(uint8_t *w) { mram_read(DPU_MRAM_HEAP_POINTER, w, 0); }
#else
void f(uint8_t *w, unsigned n) { mram_read(DPU_MRAM_HEAP_POINTER, w, n); }
#endif

int
main(void)
{
    return 0;
}
