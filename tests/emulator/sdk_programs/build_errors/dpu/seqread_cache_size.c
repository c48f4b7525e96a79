/*
 * Build-time check of the SDK headers: with -DREFUSED this file must fail to
 * build with the message below (as with the UPMEM SDK's dpu-upmem-dpurte-clang);
 * without it, the valid neighbour builds.
 *
 * expect: seqread error: invalid cache size defined
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
#define SEQREAD_CACHE_SIZE 48
#include <seqread.h>
#else
#define SEQREAD_CACHE_SIZE 512
#include <seqread.h>
#endif

int
main(void)
{
    return 0;
}
