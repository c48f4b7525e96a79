/*
 * Build-time check of the SDK headers: with -DREFUSED this file must fail to
 * build with the message below (as with the UPMEM SDK's dpu-upmem-dpurte-clang);
 * without it, the valid neighbour builds.
 *
 * expect: stdout buffer size must be a multiple of 8 and > 0
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
STDOUT_BUFFER_INIT(12);
#else
STDOUT_BUFFER_INIT(4096);
#endif

int
main(void)
{
    return 0;
}
