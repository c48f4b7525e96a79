/*
 * Checksum of `nr_bytes` bytes of an MRAM buffer: tasklets read 2 KiB blocks
 * in turn, add their bytes, and tasklet 0 adds the partial sums after a
 * barrier and prints the result.
 */
#include <stdint.h>
#include <stdio.h>

#include <barrier.h>
#include <defs.h>
#include <mram.h>

#define BUFFER_BYTES (1u << 18)
#define BLOCK_BYTES 2048u

__mram_noinit uint8_t buffer[BUFFER_BYTES];
__host uint32_t nr_bytes;
__host uint32_t checksum;
__host uint32_t partial[NR_TASKLETS];
__dma_aligned uint8_t cache[NR_TASKLETS][BLOCK_BYTES];

BARRIER_INIT(all_done, NR_TASKLETS);

int
main(void)
{
    uint32_t id = me();
    uint32_t sum = 0;
    for (uint32_t offset = id * BLOCK_BYTES; offset < nr_bytes; offset += NR_TASKLETS * BLOCK_BYTES) {
        mram_read(&buffer[offset], cache[id], BLOCK_BYTES);
        for (uint32_t i = 0; i < BLOCK_BYTES && offset + i < nr_bytes; i++) {
            sum += cache[id][i];
        }
    }
    partial[id] = sum;
    barrier_wait(&all_done);
    if (id == 0) {
        uint32_t total = 0;
        for (uint32_t t = 0; t < NR_TASKLETS; t++) {
            total += partial[t];
        }
        checksum = total;
        printf("checksum 0x%08x over %u bytes\n", total, nr_bytes);
    }
    return 0;
}
