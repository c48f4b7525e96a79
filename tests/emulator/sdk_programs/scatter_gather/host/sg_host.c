/*
 * Scatter-gather transfers (dpu_push_sg_xfer, SDK 2023.1+): every DPU's MRAM
 * buffer is gathered from a different number of host blocks of different
 * lengths, the DPU adds 1 to each word, and the result is scattered back into
 * another block layout.  Also: without "sgXferEnable=true" the call fails with
 * DPU_ERR_SG_NOT_ACTIVATED, and blocks that do not add up to the length with
 * DPU_ERR_SG_LENGTH_MISMATCH.
 */
#include <dpu.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/host_support.h"

#define WORDS_PER_DPU 4096u

struct layout {
    uint64_t *data;       /* WORDS_PER_DPU words per DPU */
    uint32_t block_words; /* words per block (last block shorter) */
    uint32_t nr_dpus;
    uint32_t shortfall;   /* bytes left out of the last block (misuse check) */
};

/* Block b of DPU d: block_words(d) words from data + d * WORDS_PER_DPU. */
static bool
get_block(struct sg_block_info *out, uint32_t dpu_index, uint32_t block_index, void *args)
{
    struct layout *layout = args;
    uint32_t per_block = layout->block_words + dpu_index; /* a different layout per DPU */
    uint32_t first = block_index * per_block;
    if (first >= WORDS_PER_DPU) {
        return false;
    }
    uint32_t count = WORDS_PER_DPU - first < per_block ? WORDS_PER_DPU - first : per_block;
    out->addr = (uint8_t *)(layout->data + (size_t)dpu_index * WORDS_PER_DPU + first);
    out->length = count * sizeof(uint64_t);
    if (first + count == WORDS_PER_DPU) {
        out->length -= layout->shortfall;
    }
    return true;
}

int
main(int argc, char **argv)
{
    struct host_args args = parse_host_args(argc, argv, 4);
    struct dpu_set_t set, dpu;
    uint32_t each_dpu;
    uint64_t rng = args.seed;

    /* the SDK refuses scatter-gather unless the profile enables it */
    DPU_ASSERT(dpu_alloc(args.nr_dpus, NULL, &set));
    DPU_ASSERT(dpu_load(set, args.dpu_binary, NULL));
    uint64_t *input = calloc((size_t)args.nr_dpus * WORDS_PER_DPU, sizeof(uint64_t));
    struct layout gather = { input, 7, args.nr_dpus, 0 };
    get_block_t info = { .f = get_block, .args = &gather, .args_size = sizeof(gather) };
    dpu_error_t status
        = dpu_push_sg_xfer(set, DPU_XFER_TO_DPU, "words", 0, WORDS_PER_DPU * sizeof(uint64_t), &info, DPU_SG_XFER_DEFAULT);
    EXPECT(status == DPU_ERR_SG_NOT_ACTIVATED, "scatter-gather without sgXferEnable: status %d", (int)status);
    DPU_ASSERT(dpu_free(set));

    DPU_ASSERT(dpu_alloc(args.nr_dpus, "sgXferEnable=true", &set));
    DPU_ASSERT(dpu_load(set, args.dpu_binary, NULL));
    for (size_t i = 0; i < (size_t)args.nr_dpus * WORDS_PER_DPU; i++) {
        input[i] = rng_next(&rng) >> 8;
    }
    gather.shortfall = 8;
    status = dpu_push_sg_xfer(set, DPU_XFER_TO_DPU, "words", 0, WORDS_PER_DPU * sizeof(uint64_t), &info, DPU_SG_XFER_DEFAULT);
    EXPECT(status == DPU_ERR_SG_LENGTH_MISMATCH, "blocks 8 bytes short of the length: status %d", (int)status);
    gather.shortfall = 0;
    DPU_ASSERT(dpu_push_sg_xfer(set, DPU_XFER_TO_DPU, "words", 0, WORDS_PER_DPU * sizeof(uint64_t), &info, DPU_SG_XFER_DEFAULT));
    uint32_t nr_words = WORDS_PER_DPU;
    DPU_ASSERT(dpu_broadcast_to(set, "nr_words", 0, &nr_words, sizeof(nr_words), DPU_XFER_DEFAULT));
    DPU_ASSERT(dpu_launch(set, DPU_SYNCHRONOUS));

    uint64_t *output = calloc((size_t)args.nr_dpus * WORDS_PER_DPU, sizeof(uint64_t));
    struct layout scatter = { output, 61, args.nr_dpus, 0 };
    info.args = &scatter;
    DPU_ASSERT(dpu_push_sg_xfer(set, DPU_XFER_FROM_DPU, "words", 0, WORDS_PER_DPU * sizeof(uint64_t), &info, DPU_SG_XFER_DEFAULT));

    uint64_t *sums = calloc(args.nr_tasklets, sizeof(uint64_t));
    DPU_FOREACH (set, dpu, each_dpu) {
        uint64_t expected = 0, got = 0;
        for (uint32_t i = 0; i < WORDS_PER_DPU; i++) {
            size_t k = (size_t)each_dpu * WORDS_PER_DPU + i;
            expected += input[k];
            EXPECT(output[k] == input[k] + 1, "DPU %u word %u: %llu, expected %llu", each_dpu, i,
                (unsigned long long)output[k], (unsigned long long)input[k] + 1);
        }
        DPU_ASSERT(dpu_copy_from(dpu, "tasklet_sums", 0, sums, args.nr_tasklets * sizeof(uint64_t)));
        for (uint32_t t = 0; t < args.nr_tasklets; t++) {
            got += sums[t];
        }
        EXPECT(got == expected, "DPU %u: sum %llu, expected %llu", each_dpu, (unsigned long long)got,
            (unsigned long long)expected);
    }

    printf("scatter_gather: %u DPUs x %u tasklets OK\n", args.nr_dpus, args.nr_tasklets);
    free(sums);
    free(output);
    free(input);
    DPU_ASSERT(dpu_free(set));
    return 0;
}
