"""Python mirror of ``dpu_kernels/embedding_bag_abi.h``: record sizes, format codes, byte rules.

The header is the contract between the DPU kernel and the host runtime; this module is
the one place Python code reads its sizes from (the batch-work derivation, the
planner's byte accounting, the row formats of :class:`updlrm.specs.RowFormat`).
Every record holds only ``uint32_t`` fields, so a record's size is 4 bytes per field;
``tests/test_abi.py`` compiles a small C program against the header with gcc and checks
every size, field offset, constant and byte rule below against the C ``sizeof``,
``offsetof`` and ``static inline`` functions.

Example:
    >>> HEADER_BYTES, SEGMENT_BYTES, STATUS_BYTES
    (616, 8, 24)
    >>> row_bytes(FORMAT_INT8, 9), partial_bytes(FORMAT_INT32, 0, 3)
    (16, 24)
"""

from __future__ import annotations

__all__ = [
    "ABI_VERSION",
    "HEADER_MAGIC",
    "STATUS_MAGIC",
    "MAX_TASKLETS",
    "DMA_ALIGNMENT",
    "FORMAT_FP32",
    "FORMAT_INT32",
    "FORMAT_INT8",
    "FLAG_WEIGHTED",
    "FLAG_INT16_PARTIALS",
    "WEIGHT_Q16_ONE",
    "CONFIG_FIELDS",
    "SHARD_FIELDS",
    "SEGMENT_FIELDS",
    "TASKLET_WORK_FIELDS",
    "BATCH_FIELDS",
    "STATUS_FIELDS",
    "WORD_BYTES",
    "CONFIG_BYTES",
    "SHARD_BYTES",
    "SEGMENT_BYTES",
    "TASKLET_WORK_BYTES",
    "BATCH_FIELDS_BYTES",
    "HEADER_BYTES",
    "STATUS_BYTES",
    "LOCAL_ROW_BYTES",
    "WEIGHT_BYTES",
    "MAX_LOOKUPS_PER_INT8_PARTIAL",
    "MAX_LOOKUPS_PER_LAUNCH",
    "MAX_LOOKUPS_PER_INT16_PARTIAL",
    "pad8",
    "element_bytes",
    "accumulator_bytes",
    "int16_partials",
    "batch_flags",
    "row_bytes",
    "partial_bytes",
    "check_nr_tasklets",
]

ABI_VERSION = 1  # EB_ABI_VERSION
HEADER_MAGIC = 0x45424231  # EB_HEADER_MAGIC, "EBB1"
STATUS_MAGIC = 0x45425331  # EB_STATUS_MAGIC, "EBS1"
# EB_MAX_TASKLETS: the SDK runs at most 24 tasklets per DPU (UPMEM SDK documentation, "Tasklets").
MAX_TASKLETS = 24
# EB_PAD8: MRAM<->WRAM DMA moves multiples of 8 bytes (UPMEM SDK documentation, "mram_read").
DMA_ALIGNMENT = 8

# enum eb_row_format
FORMAT_FP32 = 0
FORMAT_INT32 = 1
FORMAT_INT8 = 2
FLAG_WEIGHTED = 1  # EB_FLAG_WEIGHTED
# EB_FLAG_INT16_PARTIALS: a DPU's unweighted int8 rows sum in int16 (set per DPU and batch).
FLAG_INT16_PARTIALS = 2
WEIGHT_Q16_ONE = 1 << 16  # EB_WEIGHT_Q16_ONE: integer rows take Q16 per-sample weights

# The records' fields in declaration order (each a uint32_t).
WORD_BYTES = 4
CONFIG_FIELDS = ("abi_version", "batch_offset")
SHARD_FIELDS = ("rows_offset", "nr_rows", "dim", "format")
SEGMENT_FIELDS = ("shard", "nr_lookups")
TASKLET_WORK_FIELDS = ("first_segment", "skip", "first_lookup", "nr_lookups", "output_offset", "reserved")
BATCH_FIELDS = (
    "magic",
    "nr_tasklets",
    "nr_shards",
    "flags",
    "nr_segments",
    "nr_lookups",
    "segments_offset",
    "indices_offset",
    "weights_offset",
    "output_offset",
)
STATUS_FIELDS = ("magic", "code", "detail", "nr_tasklets", "cycles_low", "cycles_high")

CONFIG_BYTES = WORD_BYTES * len(CONFIG_FIELDS)  # struct eb_config
SHARD_BYTES = WORD_BYTES * len(SHARD_FIELDS)  # struct eb_shard, one per shard in the static MRAM region
SEGMENT_BYTES = WORD_BYTES * len(SEGMENT_FIELDS)  # struct eb_segment, one per (bag, shard) run of lookups
TASKLET_WORK_BYTES = WORD_BYTES * len(TASKLET_WORK_FIELDS)  # struct eb_tasklet_work
BATCH_FIELDS_BYTES = WORD_BYTES * len(BATCH_FIELDS)  # struct eb_batch_fields
# struct eb_batch_header: the fields, then one eb_tasklet_work per possible tasklet. The
# local rows of a launch follow it (EB_INDEX_START in host/eb_pack.c).
HEADER_BYTES = BATCH_FIELDS_BYTES + MAX_TASKLETS * TASKLET_WORK_BYTES
STATUS_BYTES = WORD_BYTES * len(STATUS_FIELDS)  # EB_STATUS_BYTES
LOCAL_ROW_BYTES = 4  # uint32_t local_row[nr_lookups]
WEIGHT_BYTES = 4  # uint32_t weight[nr_lookups] (fp32 bits, or Q16 for integer rows)

# EB_MAX_LOOKUPS_PER_INT8_PARTIAL: an int32 sum of int8 rows stays exact below this many
# lookups; host/eb_pack.c caps a launch's lookups per DPU at it (EB_MAX_LOOKUPS_PER_LAUNCH).
MAX_LOOKUPS_PER_INT8_PARTIAL = 1 << 23
MAX_LOOKUPS_PER_LAUNCH = MAX_LOOKUPS_PER_INT8_PARTIAL
# EB_MAX_LOOKUPS_PER_INT16_PARTIAL: an int16 sum of int8 rows stays exact up to this many
# lookups (255 x 128 = 32,640 <= 32,767).
MAX_LOOKUPS_PER_INT16_PARTIAL = 255


def pad8(nbytes: int) -> int:
    """``EB_PAD8``: ``nbytes`` rounded up to a multiple of 8.

    >>> pad8(0), pad8(1), pad8(16)
    (0, 8, 16)
    """
    return -(-int(nbytes) // DMA_ALIGNMENT) * DMA_ALIGNMENT


def element_bytes(format_code: int) -> int:
    """``eb_element_bytes``: bytes of one stored row element.

    >>> element_bytes(FORMAT_FP32), element_bytes(FORMAT_INT8)
    (4, 1)
    """
    return 1 if format_code == FORMAT_INT8 else 4


def accumulator_bytes(format_code: int, flags: int) -> int:
    """``eb_accumulator_bytes``: bytes of a partial sum's element under a batch's ``flags``.

    fp32 rows sum in fp32; unweighted int8 rows in int16 under :data:`FLAG_INT16_PARTIALS`,
    else in int32; int32 rows and weighted integer rows in int64.

    >>> accumulator_bytes(FORMAT_FP32, FLAG_WEIGHTED), accumulator_bytes(FORMAT_INT8, 0), accumulator_bytes(FORMAT_INT8, FLAG_WEIGHTED)
    (4, 4, 8)
    >>> accumulator_bytes(FORMAT_INT8, FLAG_INT16_PARTIALS), accumulator_bytes(FORMAT_INT32, FLAG_INT16_PARTIALS)
    (2, 8)
    """
    if format_code == FORMAT_FP32:
        return 4
    if format_code == FORMAT_INT8 and not flags & FLAG_WEIGHTED:
        return 2 if flags & FLAG_INT16_PARTIALS else 4
    return 8


def int16_partials(format_code: int, weighted: bool, longest_bag: int) -> bool:
    """Whether a table's partial sums can be int16 in a batch whose longest bag of it has ``longest_bag`` lookups.

    The host runtime's rule (``check_integer_sums`` in ``host/eb_load.c``); a DPU gets
    :data:`FLAG_INT16_PARTIALS` when this holds for every int8 table it holds a slice of.

    >>> int16_partials(FORMAT_INT8, False, 255), int16_partials(FORMAT_INT8, False, 256), int16_partials(FORMAT_INT8, True, 1)
    (True, False, False)
    """
    return format_code == FORMAT_INT8 and not weighted and int(longest_bag) <= MAX_LOOKUPS_PER_INT16_PARTIAL


def batch_flags(weighted: bool, int16: bool = False) -> int:
    """A DPU's ``flags`` in its batch header: weighted, or (unweighted) int16 partials of its int8 rows.

    >>> batch_flags(True, True), batch_flags(False, True), batch_flags(False)
    (1, 2, 0)
    """
    if weighted:
        return FLAG_WEIGHTED
    return FLAG_INT16_PARTIALS if int16 else 0


def row_bytes(format_code: int, dim: int) -> int:
    """``eb_row_bytes``: MRAM bytes of one row (slice) of ``dim`` elements, padded to 8.

    >>> row_bytes(FORMAT_FP32, 3)
    16
    """
    return pad8(dim * element_bytes(format_code))


def partial_bytes(format_code: int, flags: int, dim: int) -> int:
    """``eb_partial_bytes``: bytes of one partial sum of ``dim`` elements a DPU returns, padded to 8.

    >>> partial_bytes(FORMAT_FP32, 0, 3), partial_bytes(FORMAT_INT32, 0, 3), partial_bytes(FORMAT_INT8, FLAG_INT16_PARTIALS, 3)
    (16, 24, 8)
    """
    return pad8(dim * accumulator_bytes(format_code, flags))


def check_nr_tasklets(nr_tasklets: int, error: type[Exception] = ValueError) -> int:
    """``nr_tasklets`` as an int, or ``error`` saying it must lie in ``1..MAX_TASKLETS``.

    >>> check_nr_tasklets(16)
    16
    >>> check_nr_tasklets(25)
    Traceback (most recent call last):
    ...
    ValueError: nr_tasklets=25 is out of range: a DPU runs 1..24 tasklets
    """
    if int(nr_tasklets) != nr_tasklets or not 1 <= int(nr_tasklets) <= MAX_TASKLETS:
        raise error(f"nr_tasklets={nr_tasklets} is out of range: a DPU runs 1..{MAX_TASKLETS} tasklets")
    return int(nr_tasklets)
