"""The DPU side of the performance model: DMA, instruction issue and tasklet bounds of a kernel.

Each function takes a :class:`~updlrm.hardware.HardwareProfile` (every constant has its
source there). :mod:`updlrm.perfmodel` combines these with the host transfers into a
batch's time and re-exports them.
"""

from __future__ import annotations

import numpy as np

from updlrm.hardware import PROFILES, HardwareProfile  # noqa: F401  (PROFILES: the examples use it)
from updlrm.specs import RowFormat

__all__ = [
    "ROW_FORMATS",
    "dma_cycles",
    "mram_bandwidth",
    "streaming_kernel_time",
    "element_cycles",
    "arithmetic_throughput",
    "kernel_cycles",
]

#: The row formats' names, as BatchWork and the model take them (RowFormat is their home).
ROW_FORMATS = tuple(f.value for f in RowFormat)


def dma_cycles(profile: HardwareProfile, transfer_bytes, op: str = "read") -> np.ndarray | float:
    """DMA-engine cycles of one ``mram_read``/``mram_write`` of ``transfer_bytes`` (PrIM: alpha + beta*size).

    Sizes are rounded up to 8 bytes and split into 2048-byte pieces, as the SDK requires.

    Example::

        >>> dma_cycles(PROFILES["upmem-350mhz-2556"], 2048)
        1101.0
    """
    if op not in ("read", "write"):
        raise ValueError(f"op must be 'read' or 'write', got {op!r}")
    size = np.asarray(transfer_bytes, dtype=np.float64)
    if np.any(size < 0):
        raise ValueError("transfer_bytes must be >= 0")
    alpha = profile.dma_read_alpha_cycles if op == "read" else profile.dma_write_alpha_cycles
    beta = profile.dma_read_beta_cycles_per_byte if op == "read" else profile.dma_write_beta_cycles_per_byte
    padded = np.ceil(size / profile.dma_min_bytes) * profile.dma_min_bytes
    pieces = np.ceil(padded / profile.dma_max_bytes)
    out = pieces * alpha + beta * padded
    return float(out) if out.ndim == 0 else out


def _bound_cycles(profile: HardwareProfile, dma_busy, issue_slots, nr_tasklets: int):
    """Cycles of a DPU whose tasklets share ``dma_busy`` DMA-engine cycles and ``issue_slots`` instructions.

    Three lower bounds, the largest wins: the DMA engine is serial; the pipeline
    issues one instruction per cycle; each tasklet issues at most every
    ``pipeline_issue_interval`` cycles and waits for its own DMAs, so with the
    work split evenly a tasklet's chain is ``(dma + interval*slots) / n``.
    """
    interval = profile.pipeline_issue_interval
    chain = (dma_busy + interval * issue_slots) / nr_tasklets
    return np.maximum(np.maximum(dma_busy, issue_slots), chain)


def mram_bandwidth(
    profile: HardwareProfile, transfer_bytes: int, nr_tasklets: int, op: str = "read", loop_instructions: float = 0.0
) -> float:
    """Sustained MRAM bytes/s of one DPU whose tasklets stream back-to-back DMAs of ``transfer_bytes``.

    ``loop_instructions`` are the instructions each iteration spends beside the
    DMA (0 reproduces PrIM's latency microbenchmark, which times the DMA call
    itself).  ``op="copy"`` reads and writes ``transfer_bytes`` per iteration
    (PrIM's COPY-DMA) and counts both directions.

    Example::

        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> round(mram_bandwidth(p, 2048, 1) / 1e6)     # PrIM measured 628.23 MB/s
        651
        >>> mram_bandwidth(p, 8, 16) < mram_bandwidth(p, 64, 16)
        True
    """
    _check_tasklets(profile, nr_tasklets)
    if transfer_bytes < profile.dma_min_bytes or transfer_bytes > profile.dma_max_bytes:
        raise ValueError(f"transfer_bytes must be within {profile.dma_min_bytes}..{profile.dma_max_bytes}")
    if op == "copy":
        busy = dma_cycles(profile, transfer_bytes, "read") + dma_cycles(profile, transfer_bytes, "write")
        moved = 2 * transfer_bytes
    else:
        busy = dma_cycles(profile, transfer_bytes, op)
        moved = transfer_bytes
    iterations = float(nr_tasklets)  # one iteration per tasklet: the steady state repeats this
    cycles = _bound_cycles(profile, iterations * busy, iterations * loop_instructions, nr_tasklets)
    return float(iterations * moved * profile.dpu_frequency_hz / cycles)


def streaming_kernel_time(
    profile: HardwareProfile,
    *,
    elements_per_dpu: int,
    element_bytes: int,
    block_bytes: int = 1024,
    reads_per_block: int = 1,
    writes_per_block: int = 0,
    nr_tasklets: int = 16,
    cycles_per_element: float | None = None,
    launch: bool = True,
) -> float:
    """Seconds of a DPU kernel whose tasklets stream blocks through WRAM (PrIM VA, RED, STREAM-like).

    Each block of ``block_bytes`` costs ``reads_per_block`` mram_reads and
    ``writes_per_block`` mram_writes (:func:`dma_cycles`) and one pass over
    its elements at ``cycles_per_element`` issue slots (default: the profile's
    INT32 ADD loop, PrIM Fig. 4); tasklets take blocks round-robin.  Bounds as
    in :func:`mram_bandwidth`; ``launch`` adds the profile's fixed launch cost.
    Real-hardware check: tests/perfmodel/test_kernel_validation.py.

    Example::

        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> va = dict(element_bytes=4, reads_per_block=2, writes_per_block=1, launch=False)
        >>> t1 = streaming_kernel_time(p, elements_per_dpu=1 << 20, nr_tasklets=1, **va)
        >>> t16 = streaming_kernel_time(p, elements_per_dpu=1 << 20, nr_tasklets=16, **va)
        >>> t16 < t1 / 5   # eleven tasklets fill the pipeline; DMA then bounds it
        True
    """
    _check_tasklets(profile, nr_tasklets)
    if elements_per_dpu < 0 or element_bytes < 1 or reads_per_block < 0 or writes_per_block < 0:
        raise ValueError("elements_per_dpu, reads/writes_per_block must be >= 0 and element_bytes >= 1")
    if not profile.dma_min_bytes <= block_bytes <= profile.dma_max_bytes:
        raise ValueError(f"block_bytes must be within {profile.dma_min_bytes}..{profile.dma_max_bytes}")
    per_element = profile.cycles_int32_add if cycles_per_element is None else float(cycles_per_element)
    total_bytes = float(elements_per_dpu) * element_bytes
    full_blocks, tail = divmod(total_bytes, block_bytes)
    per_block_dma = reads_per_block * dma_cycles(profile, block_bytes, "read") + writes_per_block * dma_cycles(
        profile, block_bytes, "write"
    )
    tail_dma: float | np.ndarray = 0.0
    if tail:
        tail_dma = reads_per_block * dma_cycles(profile, tail, "read") + writes_per_block * dma_cycles(
            profile, tail, "write"
        )
    blocks = full_blocks + (1 if tail else 0)
    dma_busy = full_blocks * per_block_dma + tail_dma
    issue = (
        elements_per_dpu * per_element + blocks * (reads_per_block + writes_per_block) * profile.instructions_per_dma
    )
    active = int(min(nr_tasklets, max(blocks, 1)))
    cycles = float(_bound_cycles(profile, dma_busy, issue, active)) if blocks else 0.0
    return cycles / profile.dpu_frequency_hz + (profile.launch_overhead_s if launch else 0.0)


def _check_tasklets(profile: HardwareProfile, nr_tasklets: int) -> None:
    if int(nr_tasklets) != nr_tasklets or not 1 <= nr_tasklets <= profile.max_tasklets:
        raise ValueError(f"nr_tasklets must be an integer in 1..{profile.max_tasklets}, got {nr_tasklets!r}")


def element_cycles(profile: HardwareProfile, row_format: str, weighted: bool) -> float:
    """Issue slots to fold one row element into a bag's accumulator (load, op, store, loop share).

    Example::

        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> element_cycles(p, "fp32", False) > 10 * element_cycles(p, "int32", False)
        True
    """
    if row_format == "fp32":
        return profile.cycles_fp32_add + (profile.cycles_fp32_mul if weighted else 0.0)
    if row_format == "int32":
        return profile.cycles_int32_add + (profile.cycles_int32_mul if weighted else 0.0)
    if row_format == "int8":
        return profile.cycles_int8_widening_mac if weighted else profile.cycles_int32_add
    raise ValueError(f"row_format must be one of {ROW_FORMATS}, got {row_format!r}")


def arithmetic_throughput(profile: HardwareProfile, op: str, nr_tasklets: int) -> float:
    """Operations/s of PrIM's WRAM arithmetic microbenchmark: linear in tasklets up to 11, flat beyond.

    ``op`` is one of ``int32_add``, ``int32_mul``, ``fp32_add``, ``fp32_mul``.

    Example::

        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> round(arithmetic_throughput(p, "int32_add", 16) / 1e6, 2)
        58.56
        >>> arithmetic_throughput(p, "int32_add", 11) == arithmetic_throughput(p, "int32_add", 24)
        True
    """
    _check_tasklets(profile, nr_tasklets)
    cycles = {
        "int32_add": profile.cycles_int32_add,
        "int32_mul": profile.cycles_int32_mul,
        "fp32_add": profile.cycles_fp32_add,
        "fp32_mul": profile.cycles_fp32_mul,
    }
    if op not in cycles:
        raise ValueError(f"op must be one of {sorted(cycles)}, got {op!r}")
    ops = 1e6
    total = _bound_cycles(profile, 0.0, ops * cycles[op], nr_tasklets)
    return float(ops * profile.dpu_frequency_hz / total)


def kernel_cycles(
    profile: HardwareProfile,
    *,
    lookups,
    row_bytes,
    index_bytes,
    output_bytes,
    reduce_elems,
    row_format: str = "fp32",
    weighted: bool = False,
    nr_tasklets: int = 16,
    index_block_bytes: int | None = None,
) -> np.ndarray:
    """Cycles each DPU spends in the embedding-bag kernel (array, one entry per DPU).

    Per DPU: ``lookups`` row-slice gathers of ``row_bytes`` each (MRAM reads),
    the batch's indices/offsets/weights streamed from MRAM in blocks of
    ``index_block_bytes`` (default the 2048-byte DMA maximum), the partial sums
    written back in 2048-byte blocks, and ``reduce_elems`` accumulations at
    :func:`element_cycles` each.  Bounds as in :func:`mram_bandwidth`.

    Example::

        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> c = kernel_cycles(p, lookups=[100, 200], row_bytes=[64, 64], index_bytes=[800, 1600],
        ...                   output_bytes=[256, 256], reduce_elems=[1600, 3200])
        >>> bool(c[1] > c[0])
        True
    """
    _check_tasklets(profile, nr_tasklets)
    lookups = np.asarray(lookups, dtype=np.float64)
    row_bytes = np.broadcast_to(np.asarray(row_bytes, dtype=np.float64), lookups.shape)
    index_bytes = np.broadcast_to(np.asarray(index_bytes, dtype=np.float64), lookups.shape)
    output_bytes = np.broadcast_to(np.asarray(output_bytes, dtype=np.float64), lookups.shape)
    reduce_elems = np.broadcast_to(np.asarray(reduce_elems, dtype=np.float64), lookups.shape)
    block = profile.dma_max_bytes if index_block_bytes is None else index_block_bytes
    if not profile.dma_min_bytes <= block <= profile.dma_max_bytes:
        raise ValueError(f"index_block_bytes must be within {profile.dma_min_bytes}..{profile.dma_max_bytes}")

    row_dmas = np.ceil(np.ceil(row_bytes / profile.dma_min_bytes) * profile.dma_min_bytes / profile.dma_max_bytes)
    index_blocks = np.ceil(index_bytes / block)
    output_blocks = np.ceil(output_bytes / profile.dma_max_bytes)
    dma_busy = (
        lookups * dma_cycles(profile, row_bytes, "read")
        + index_blocks * profile.dma_read_alpha_cycles
        + profile.dma_read_beta_cycles_per_byte * np.ceil(index_bytes / 8) * 8
        + output_blocks * profile.dma_write_alpha_cycles
        + profile.dma_write_beta_cycles_per_byte * np.ceil(output_bytes / 8) * 8
    )
    nr_dmas = lookups * row_dmas + index_blocks + output_blocks
    issue = (
        lookups * profile.instructions_per_lookup
        + nr_dmas * profile.instructions_per_dma
        + reduce_elems * element_cycles(profile, row_format, weighted)
    )
    cycles = _bound_cycles(profile, dma_busy, issue, nr_tasklets)
    return np.where((lookups > 0) | (index_bytes > 0) | (output_bytes > 0), cycles, 0.0)
