/*
 * Contract between the embedding-bag DPU kernel (embedding_bag.c) and the host
 * runtime (host/eb_*.c): MRAM layout, record formats, status codes.
 *
 * Both sides include this file. The DPU is a 32-bit target and the host is
 * 64-bit, so every record holds only uint32_t fields: the layout is then the
 * same on both without packing pragmas.
 *
 * MRAM heap (offsets relative to DPU_MRAM_HEAP_POINTER), see dpu_kernels/README.md:
 *
 *   0                      shard table: eb_shard[nr_shards]          (static)
 *   shard_table_bytes      rows of shard 0, shard 1, ...             (static)
 *   batch_offset           eb_batch_header                           (per launch)
 *                          uint32_t local_row[nr_lookups]   (8-byte padded)
 *                          uint32_t weight[nr_lookups]      (8-byte padded, if weighted)
 *                          eb_segment[nr_segments]
 *   output_offset          eb_status, then partial sums      (written by the DPU)
 *
 * The kernel finds each array through the header's offsets, so only the host
 * fixes this order.
 *
 * batch_offset is the same on every DPU of a set (the largest static region,
 * because parallel transfers use one MRAM offset for all DPUs); the DPU learns
 * it from the WRAM variable eb_config, written once at load time.
 */
#ifndef UPDLRM_EMBEDDING_BAG_ABI_H
#define UPDLRM_EMBEDDING_BAG_ABI_H

#include <stdint.h>

#define EB_ABI_VERSION  1u
#define EB_HEADER_MAGIC 0x45424231u /* "EBB1" */
#define EB_STATUS_MAGIC 0x45425331u /* "EBS1": the DPU finished and wrote its status */

/* Hard limit of the SDK: at most 24 tasklets per DPU (UPMEM SDK documentation, "Tasklets"). */
#define EB_MAX_TASKLETS 24u

/* MRAM<->WRAM DMA moves 8..2048 bytes, multiples of 8 (UPMEM SDK documentation, "mram_read"). */
#define EB_PAD8(n) (((n) + 7u) & ~7u)

enum eb_row_format {
    EB_FORMAT_FP32 = 0,
    EB_FORMAT_INT32 = 1,
    EB_FORMAT_INT8 = 2,
};

#define EB_FLAG_WEIGHTED 1u
/* Unweighted int8 rows sum in int16 (half the bytes pulled and merged). The host sets
 * it for a DPU only if every int8 bag of the batch it holds a slice of has at most
 * EB_MAX_LOOKUPS_PER_INT16_PARTIAL lookups, which keeps every partial sum exact. */
#define EB_FLAG_INT16_PARTIALS 2u

/*
 * Per-sample weights for integer rows are fixed point Q16 (int32, value =
 * q / 65536): the DPU multiplies int32 row elements by them into int64, which
 * keeps integer results exact and reproducible bit for bit by a reference
 * that quantises the weights the same way (round half to even).
 */
#define EB_WEIGHT_Q16_ONE 65536

enum eb_status_code {
    EB_OK = 0,
    EB_ERR_BAD_HEADER = 1,    /* header magic wrong: the batch was not written */
    EB_ERR_TASKLET_COUNT = 2, /* host planned for another NR_TASKLETS; detail = host's value */
    EB_ERR_BAD_SHARD = 3,     /* segment names a shard this DPU does not hold; detail = shard */
    EB_ERR_ROW_RANGE = 4,     /* local row >= shard rows; detail = local row */
    EB_ERR_BAD_SEGMENT = 5,   /* tasklet work does not match the segment table; detail = segment */
    EB_ERR_BAD_FORMAT = 6,    /* unknown row format; detail = format */
};

/* WRAM symbol "eb_config", written once by the host after loading the program. */
struct eb_config {
    uint32_t abi_version;
    uint32_t batch_offset; /* heap offset of eb_batch_header */
};

/* One table slice held by the DPU: rows [0, nr_rows) of `dim` elements, each
 * row padded to 8 bytes, starting at heap offset rows_offset. */
struct eb_shard {
    uint32_t rows_offset;
    uint32_t nr_rows;
    uint32_t dim;
    uint32_t format; /* enum eb_row_format */
};

/* Consecutive lookups of one bag that hit one shard of this DPU. */
struct eb_segment {
    uint32_t shard;
    uint32_t nr_lookups;
};

/*
 * Lookups [first_lookup, first_lookup + nr_lookups) of the DPU, starting in
 * segment first_segment after its first `skip` lookups. The host cuts the
 * lookups into equal ranges, so a long bag may be split between tasklets; each
 * piece then yields its own partial sum, which the host adds up.
 */
struct eb_tasklet_work {
    uint32_t first_segment;
    uint32_t skip;
    uint32_t first_lookup;
    uint32_t nr_lookups;
    uint32_t output_offset; /* bytes after the status block where this tasklet's partials start */
    uint32_t reserved;
};

struct eb_batch_fields {
    uint32_t magic;
    uint32_t nr_tasklets;
    uint32_t nr_shards;
    uint32_t flags;
    uint32_t nr_segments;
    uint32_t nr_lookups;
    uint32_t segments_offset; /* heap offsets, all 8-byte aligned */
    uint32_t indices_offset;
    uint32_t weights_offset;
    uint32_t output_offset;
};

struct eb_batch_header {
    struct eb_batch_fields fields;
    struct eb_tasklet_work work[EB_MAX_TASKLETS];
};

/* Written by tasklet 0 at output_offset once all tasklets are done. */
struct eb_status {
    uint32_t magic;
    uint32_t code; /* enum eb_status_code */
    uint32_t detail;
    uint32_t nr_tasklets;
    uint32_t cycles_low; /* perfcounter cycles of the launch */
    uint32_t cycles_high;
};

#define EB_STATUS_BYTES ((uint32_t)sizeof(struct eb_status))

/* Bytes of one stored element and of one accumulator element (`flags`: the batch's
 * EB_FLAG_* bits). fp32 rows sum in fp32; unweighted int8 rows in int16 under
 * EB_FLAG_INT16_PARTIALS, else in int32 (exact below 2^24 lookups per partial, which the
 * host guarantees); int32 rows and weighted integer rows sum in int64, exact because the
 * host runs a batch only if every bag's max |row| x sum |weight| (Q16; x lookups
 * unweighted) fits int64. */
static inline uint32_t eb_element_bytes(uint32_t format)
{
    return format == EB_FORMAT_INT8 ? 1u : 4u;
}

static inline uint32_t eb_accumulator_bytes(uint32_t format, uint32_t flags)
{
    if (format == EB_FORMAT_FP32) {
        return 4u;
    }
    if (format == EB_FORMAT_INT8 && !(flags & EB_FLAG_WEIGHTED)) {
        return flags & EB_FLAG_INT16_PARTIALS ? 2u : 4u;
    }
    return 8u;
}

static inline uint32_t eb_row_bytes(uint32_t format, uint32_t dim)
{
    return EB_PAD8(dim * eb_element_bytes(format));
}

static inline uint32_t eb_partial_bytes(uint32_t format, uint32_t flags, uint32_t dim)
{
    return EB_PAD8(dim * eb_accumulator_bytes(format, flags));
}

/* A partial sum of int8 rows in int32 stays exact while it has fewer lookups than this. */
#define EB_MAX_LOOKUPS_PER_INT8_PARTIAL (1u << 23)

/* ... and in int16 while it has at most this many: 255 x 128 = 32,640 <= INT16_MAX. */
#define EB_MAX_LOOKUPS_PER_INT16_PARTIAL 255u

#endif
