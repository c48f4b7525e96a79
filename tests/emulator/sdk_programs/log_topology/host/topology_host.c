/*
 * Rank topology and the dpu_log_read format.  Hardware ranks hold 64 DPUs
 * (8 slices x 8); the SDK's functional simulator gives one DPU per rank
 * (selected, as with the SDK, by "backend=simulator" in UPMEM_PROFILE_BASE or
 * the dpu_alloc profile).  dpu_log_read prints "=== DPU#0x<id> ===" before a
 * DPU's output, id = rank << 16 | slice << 8 | member (dpu_get_id);
 * dpulog_read_for_dpu prints the output alone.
 */
#include <dpu.h>
#include <dpu_log.h>
#include <dpu_management.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/host_support.h"

static char *
read_all(FILE *stream)
{
    long length = ftell(stream);
    rewind(stream);
    char *text = calloc((size_t)length + 1, 1);
    EXPECT(fread(text, 1, (size_t)length, stream) == (size_t)length, "short read of the log");
    return text;
}

int
main(int argc, char **argv)
{
    struct host_args args = parse_host_args(argc, argv, 3);
    const char *base = getenv("UPMEM_PROFILE_BASE");
    int simulator = base != NULL && strstr(base, "backend=simulator") != NULL;
    uint32_t per_rank = simulator ? 1 : 64, per_slice = simulator ? 1 : 8;

    struct dpu_set_t set, rank, dpu;
    uint32_t each_rank, each_dpu, nr_ranks;
    DPU_ASSERT(dpu_alloc(args.nr_dpus, NULL, &set));
    DPU_ASSERT(dpu_load(set, args.dpu_binary, NULL));
    DPU_ASSERT(dpu_get_nr_ranks(set, &nr_ranks));
    EXPECT(nr_ranks == (args.nr_dpus + per_rank - 1) / per_rank, "%u DPUs in %u ranks, expected %u DPUs per rank",
        args.nr_dpus, nr_ranks, per_rank);

    uint32_t tag = 0;
    DPU_FOREACH (set, dpu, each_dpu) {
        tag = 1000 + each_dpu;
        DPU_ASSERT(dpu_copy_to(dpu, "dpu_tag", 0, &tag, sizeof(tag)));
    }
    DPU_ASSERT(dpu_launch(set, DPU_SYNCHRONOUS));

    uint32_t seen = 0;
    DPU_RANK_FOREACH (set, rank, each_rank) {
        uint32_t in_rank;
        DPU_ASSERT(dpu_get_nr_dpus(rank, &in_rank));
        uint32_t expected_in_rank = args.nr_dpus - seen < per_rank ? args.nr_dpus - seen : per_rank;
        EXPECT(in_rank == expected_in_rank, "rank %u holds %u DPUs, expected %u", each_rank, in_rank, expected_in_rank);
        uint32_t rank_id = dpu_get_rank_id(dpu_rank_from_set(rank));
        uint32_t position;
        DPU_FOREACH (rank, dpu, position) {
            uint32_t id = rank_id << 16 | (position / per_slice) << 8 | (position % per_slice);
            EXPECT(dpu_get_id(dpu_from_set(dpu)) == id, "DPU %u: dpu_get_id 0x%x, expected 0x%x", seen + position,
                dpu_get_id(dpu_from_set(dpu)), id);
            EXPECT(dpu_get_slice_id(dpu_from_set(dpu)) == position / per_slice
                    && dpu_get_member_id(dpu_from_set(dpu)) == position % per_slice,
                "DPU %u: slice/member", seen + position);

            FILE *stream = tmpfile();
            DPU_ASSERT(dpu_log_read(dpu, stream));
            char *log = read_all(stream);
            fclose(stream);
            char header[64];
            snprintf(header, sizeof(header), "=== DPU#0x%x ===\n", id);
            EXPECT(strncmp(log, header, strlen(header)) == 0, "DPU %u: log starts %.40s, expected %s", seen + position,
                log, header);
            char line[64];
            snprintf(line, sizeof(line), "tag %u tasklet 0\n", 1000 + seen + position);
            EXPECT(strstr(log, line) != NULL, "DPU %u: '%s' missing from its log:\n%s", seen + position, line, log);
            free(log);

            stream = tmpfile();
            DPU_ASSERT(dpulog_read_for_dpu(dpu_from_set(dpu), stream));
            log = read_all(stream);
            fclose(stream);
            EXPECT(strncmp(log, line, strlen(line)) == 0, "DPU %u: dpulog_read_for_dpu printed a header:\n%s",
                seen + position, log);
            free(log);
        }
        seen += in_rank;
    }
    EXPECT(seen == args.nr_dpus, "ranks hold %u DPUs, expected %u", seen, args.nr_dpus);

    printf("log_topology: %u DPUs in %u ranks x %u tasklets OK\n", args.nr_dpus, nr_ranks, args.nr_tasklets);
    DPU_ASSERT(dpu_free(set));
    return 0;
}
