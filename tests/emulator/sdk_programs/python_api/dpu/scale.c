/*
 * values[i] = values[i] * factor + i for the first `count` 32-bit words of a
 * WRAM array and of an MRAM array; prints one line.  Built by the Python host
 * itself (DpuSet(c_source=...)), so with the SDK's default of one tasklet.
 */
#include <stdint.h>
#include <stdio.h>

#include <defs.h>
#include <mram.h>

#define MAX_VALUES 64

__host int32_t factor;
__host uint32_t count;
__host int32_t values[MAX_VALUES];
__mram uint64_t mram_values[MAX_VALUES];
__host uint64_t mram_sum;

int
main(void)
{
    __dma_aligned uint64_t cache[MAX_VALUES];
    uint64_t sum = 0;
    for (uint32_t i = 0; i < count; i++) {
        values[i] = values[i] * factor + (int32_t)i;
    }
    mram_read(mram_values, cache, sizeof(cache));
    for (uint32_t i = 0; i < count; i++) {
        cache[i] = cache[i] * (uint64_t)factor;
        sum += cache[i];
    }
    mram_write(cache, mram_values, sizeof(cache));
    mram_sum = sum;
    printf("factor %d count %u tasklets %u\n", factor, count, NR_TASKLETS);
    return 0;
}
