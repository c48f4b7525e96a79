/*
 * Build-time check of the SDK headers: with -DREFUSED this file must fail to
 * build with the message below (as with the UPMEM SDK's dpu-upmem-dpurte-clang);
 * without it, the valid neighbour builds.
 *
 * expect: barrier counter must be encoded on a byte
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
BARRIER_INIT(b, 16u);
#else
BARRIER_INIT(b, 16);
#endif

int
main(void)
{
    return 0;
}
