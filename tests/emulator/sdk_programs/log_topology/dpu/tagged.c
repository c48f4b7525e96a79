/*
 * Every tasklet prints one line carrying the DPU's tag, so that the host can
 * tell the logs of different DPUs apart.
 */
#include <stdint.h>
#include <stdio.h>

#include <defs.h>

__host uint32_t dpu_tag;

int
main(void)
{
    printf("tag %u tasklet %u\n", dpu_tag, me());
    return 0;
}
