/*
 * Build-time check of the SDK headers: with -DREFUSED this file must fail to
 * build with the message below (as with the UPMEM SDK's dpu-upmem-dpurte-clang);
 * without it, the valid neighbour builds.
 *
 * expect: semaphore counter must be encoded on a byte
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
SEMAPHORE_INIT(s, 128);
#else
SEMAPHORE_INIT(s, 127);
#endif

int
main(void)
{
    return 0;
}
