/*
 * Host of the stream compaction: runs the select kernel, then the unique
 * kernel, on random small words, and checks the compacted output, its length
 * and the per-group survivor counts against the CPU.  Also reads each DPU's
 * log through <dpu_log.h>; on the emulator it also times the launches with an
 * emulator-only <updlrm_emu_probe.h> probe (the SDK has no such header).
 */
#include <dpu.h>
#include <dpu_log.h>
#ifdef UPDLRM_EMULATOR
#include <updlrm_emu_probe.h>
#endif
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../common/host_support.h"

#define BLOCK_WORDS 32
#define NR_GROUPS 2
#define MAX_WORDS (1 << 14)

static uint32_t compact_on_cpu(uint32_t kernel, const uint64_t *in, uint32_t nr_words, uint32_t nr_tasklets,
                               uint64_t *out, uint32_t *group_hits)
{
    uint32_t count = 0;
    for (uint32_t first = 0; first < nr_words; first += BLOCK_WORDS) {
        uint32_t group = (first / BLOCK_WORDS) % nr_tasklets % NR_GROUPS;
        for (uint32_t i = 0; i < BLOCK_WORDS; i++) {
            const uint64_t *block = in + first;
            bool keep = kernel == 0 ? (block[i] & 1) != 0 : (i == 0 || block[i] != block[i - 1]);
            if (keep) {
                out[count++] = block[i];
                group_hits[group]++;
            }
        }
    }
    return count;
}

int main(int argc, char **argv)
{
    struct host_args args = parse_host_args(argc, argv, 3);
    struct dpu_set_t set, dpu;
    uint32_t each_dpu;

    DPU_ASSERT(dpu_alloc(args.nr_dpus, NULL, &set));
    DPU_ASSERT(dpu_load(set, args.dpu_binary, NULL));
#ifdef UPDLRM_EMULATOR
    struct updlrm_emu_probe probe;
    DPU_ASSERT(updlrm_emu_probe_init("compact", &probe));
#endif

    uint32_t per_round = BLOCK_WORDS * args.nr_tasklets;
    uint32_t rounds = MAX_WORDS / per_round < 5 ? MAX_WORDS / per_round : 5;
    uint32_t nr_words = rounds * per_round;
    uint64_t(*inputs)[MAX_WORDS] = calloc(args.nr_dpus, sizeof(*inputs));
    uint64_t *expected = calloc(MAX_WORDS, sizeof(uint64_t));
    uint64_t *got = calloc(MAX_WORDS, sizeof(uint64_t));
    uint64_t rng = args.seed;
    for (uint32_t d = 0; d < args.nr_dpus; d++) {
        for (uint32_t i = 0; i < nr_words; i++) {
            inputs[d][i] = rng_next(&rng) % 6; /* many equal neighbours, some all-even blocks */
        }
    }
    DPU_FOREACH (set, dpu, each_dpu) {
        DPU_ASSERT(dpu_prepare_xfer(dpu, inputs[each_dpu]));
    }
    DPU_ASSERT(dpu_push_xfer(set, DPU_XFER_TO_DPU, "input", 0, nr_words * sizeof(uint64_t), DPU_XFER_DEFAULT));
    DPU_ASSERT(dpu_broadcast_to(set, "nr_words", 0, &nr_words, sizeof(nr_words), DPU_XFER_DEFAULT));

    for (uint32_t kernel = 0; kernel < 2; kernel++) {
        DPU_ASSERT(dpu_broadcast_to(set, "kernel", 0, &kernel, sizeof(kernel), DPU_XFER_DEFAULT));
#ifdef UPDLRM_EMULATOR
        DPU_ASSERT(updlrm_emu_probe_start(&probe));
#endif
        DPU_ASSERT(dpu_launch(set, DPU_SYNCHRONOUS));
#ifdef UPDLRM_EMULATOR
        DPU_ASSERT(updlrm_emu_probe_stop(&probe));
#endif
        DPU_FOREACH (set, dpu, each_dpu) {
            uint32_t expected_hits[NR_GROUPS] = { 0 }, hits[NR_GROUPS], out_count;
            uint32_t count
                = compact_on_cpu(kernel, inputs[each_dpu], nr_words, args.nr_tasklets, expected, expected_hits);
            DPU_ASSERT(dpu_copy_from(dpu, "out_count", 0, &out_count, sizeof(out_count)));
            DPU_ASSERT(dpu_copy_from(dpu, "group_hits", 0, hits, sizeof(hits)));
            EXPECT(out_count == count, "kernel %u, DPU %u: %u words kept, expected %u", kernel, each_dpu, out_count,
                   count);
            for (uint32_t g = 0; g < NR_GROUPS; g++) {
                EXPECT(hits[g] == expected_hits[g], "kernel %u, DPU %u: group %u counted %u, expected %u", kernel,
                       each_dpu, g, hits[g], expected_hits[g]);
            }
            DPU_ASSERT(dpu_copy_from(dpu, "output", 0, got, (count ? count : 1) * sizeof(uint64_t)));
            for (uint32_t i = 0; i < count; i++) {
                EXPECT(got[i] == expected[i], "kernel %u, DPU %u: output[%u] = %llu, expected %llu", kernel,
                       each_dpu, i, (unsigned long long)got[i], (unsigned long long)expected[i]);
            }
            FILE *log = tmpfile();
            DPU_ASSERT(dpulog_read_for_dpu(dpu.dpu, log));
            fclose(log);
        }
    }

#ifdef UPDLRM_EMULATOR
    double seconds, average;
    DPU_ASSERT(updlrm_emu_probe_get(&probe, UPDLRM_EMU_PROBE_ACCUMULATE, &seconds));
    DPU_ASSERT(updlrm_emu_probe_get(&probe, UPDLRM_EMU_PROBE_AVERAGE, &average));
    EXPECT(seconds > 0.0 && average * 2 == seconds, "probe measured %f s (%f s each) for two launches", seconds,
           average);
    DPU_ASSERT(updlrm_emu_probe_deinit(&probe));
#endif

    printf("compact: %u DPUs x %u tasklets OK\n", args.nr_dpus, args.nr_tasklets);
    free(got);
    free(expected);
    free(inputs);
    DPU_ASSERT(dpu_free(set));
    return 0;
}
