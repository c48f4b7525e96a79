/*
 * Host of dma_decode: random bitmap and queries, the heap's MRAM offset (the
 * heap symbol's address without the MRAM bit, as BFS passes MRAM offsets),
 * then checks every answer and the 64 bytes read through the offset.
 */
#include <dpu.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../common/host_support.h"

#define NR_QUERIES 256
#define BITMAP_BYTES 4096
#define MRAM_BYTES (64u << 20)

int
main(int argc, char **argv)
{
    struct host_args args = parse_host_args(argc, argv, 2);
    struct dpu_set_t set, dpu;
    struct dpu_program_t *program;
    uint32_t each_dpu;
    uint64_t rng = args.seed;

    DPU_ASSERT(dpu_alloc(args.nr_dpus, NULL, &set));
    DPU_ASSERT(dpu_load(set, args.dpu_binary, &program));
    struct dpu_symbol_t heap;
    DPU_ASSERT(dpu_get_symbol(program, DPU_MRAM_HEAP_POINTER_NAME, &heap));
    uint32_t heap_offset = heap.address % MRAM_BYTES;

    uint8_t (*bitmaps)[BITMAP_BYTES] = calloc(args.nr_dpus, sizeof(*bitmaps));
    uint32_t (*queries)[NR_QUERIES] = calloc(args.nr_dpus, sizeof(*queries));
    uint64_t (*heaps)[8] = calloc(args.nr_dpus, sizeof(*heaps));
    for (uint32_t d = 0; d < args.nr_dpus; d++) {
        for (uint32_t i = 0; i < BITMAP_BYTES; i++) {
            bitmaps[d][i] = (uint8_t)rng_next(&rng);
        }
        for (uint32_t q = 0; q < NR_QUERIES; q++) {
            queries[d][q] = (uint32_t)(rng_next(&rng) % (BITMAP_BYTES - 8));
        }
        for (uint32_t i = 0; i < 8; i++) {
            heaps[d][i] = rng_next(&rng);
        }
    }
    DPU_FOREACH (set, dpu, each_dpu) {
        DPU_ASSERT(dpu_copy_to(dpu, "bitmap", 0, bitmaps[each_dpu], BITMAP_BYTES));
        DPU_ASSERT(dpu_copy_to(dpu, "queries", 0, queries[each_dpu], sizeof(queries[each_dpu])));
        DPU_ASSERT(dpu_copy_to(dpu, DPU_MRAM_HEAP_POINTER_NAME, 0, heaps[each_dpu], sizeof(heaps[each_dpu])));
    }
    DPU_ASSERT(dpu_broadcast_to(set, "heap_offset", 0, &heap_offset, sizeof(heap_offset), DPU_XFER_DEFAULT));
    DPU_ASSERT(dpu_launch(set, DPU_SYNCHRONOUS));

    DPU_FOREACH (set, dpu, each_dpu) {
        uint32_t answers[NR_QUERIES];
        uint64_t copied[8];
        DPU_ASSERT(dpu_copy_from(dpu, "answers", 0, answers, sizeof(answers)));
        DPU_ASSERT(dpu_copy_from(dpu, "copied", 0, copied, sizeof(copied)));
        for (uint32_t q = 0; q < NR_QUERIES; q++) {
            uint32_t b = queries[each_dpu][q];
            EXPECT(answers[q] == bitmaps[each_dpu][b], "DPU %u query %u (byte %u): %u, expected %u", each_dpu, q, b,
                answers[q], bitmaps[each_dpu][b]);
        }
        for (uint32_t i = 0; i < 8; i++) {
            EXPECT(copied[i] == heaps[each_dpu][i], "DPU %u: word %u read through MRAM offset 0x%x differs", each_dpu,
                i, heap_offset);
        }
    }
    printf("dma_decode: %u DPUs x %u tasklets OK\n", args.nr_dpus, args.nr_tasklets);
    free(heaps);
    free(queries);
    free(bitmaps);
    DPU_ASSERT(dpu_free(set));
    return 0;
}
