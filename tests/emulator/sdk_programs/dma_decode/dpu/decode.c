/*
 * Two DMA idioms of programs written for real DPUs (PrIM's TRNS and BFS) that
 * break the SDK's documented rules but work because of how the DPU's DMA
 * engine decodes addresses:
 *  - a byte-indexed MRAM bitmap read with mram_read(&bitmap[b], cache, 8):
 *    the engine drops the low 3 address bits, so the byte sits at cache[b & 7];
 *  - an MRAM offset from the start of MRAM used as an MRAM address: the engine
 *    sees MRAM modulo its 64 MiB bank, so the offset addresses that byte.
 */
#include <stdint.h>

#include <defs.h>
#include <mram.h>

#define NR_QUERIES 256
#define BITMAP_BYTES 4096

__mram_noinit uint8_t bitmap[BITMAP_BYTES];
__host uint32_t queries[NR_QUERIES];
__host uint32_t answers[NR_QUERIES];
__host uint32_t heap_offset; /* DPU_MRAM_HEAP_POINTER's offset in MRAM, from the host */
__host uint64_t copied[8];

int
main(void)
{
    __dma_aligned uint8_t cache[8];
    for (uint32_t q = me(); q < NR_QUERIES; q += NR_TASKLETS) {
        uint32_t b = queries[q];
        mram_read(&bitmap[b], cache, 8);
        answers[q] = cache[b & 7];
    }
    if (me() == 0) {
        mram_read((__mram_ptr void const *)(uintptr_t)heap_offset, copied, sizeof(copied));
    }
    return 0;
}
