"""Stage 2a of the planner: the cost model, i.e. the planner's use of :mod:`updlrm.perfmodel`.

:class:`CostModel` prices a row part (kernel time plus its share of both transfers) and
a whole batch (:func:`updlrm.perfmodel.model_batch`) from the work a layout implies.
The layout search, the DPU assignment and the routed estimate of the evaluator share it.

The planner counts bytes as the runtime's ABI does (``dpu_kernels/embedding_bag_abi.h``,
mirrored in :mod:`updlrm.abi`; the one home of the rules is :func:`dpu_input_bytes` and
:func:`dpu_output_bytes`, which :func:`updlrm.partitioner.batch_work.derive_work` uses too):

* a DPU receives a 616-byte ``eb_batch_header``, its local rows (4 bytes a lookup, and
  4-byte weights when weighted, each array padded to 8) and one 8-byte ``eb_segment``
  per (bag, shard) run of lookups;
* it returns a 24-byte status and one partial sum per segment and tasklet the segment
  spans, of ``abi.partial_bytes`` (4-byte accumulators for fp32 and unweighted int8
  rows, 2-byte for unweighted int8 rows in batches of short bags, 8-byte for int32 and
  weighted integer rows).

Two things are expectations here, which
:func:`~updlrm.partitioner.batch_work.derive_work` counts exactly for a concrete batch:
the tasklet splits (a DPU's lookups are cut into ``nr_tasklets`` equal ranges; a cut
inside a segment adds one partial sum, :func:`tasklet_splits`), and int16 partials (a
table's are priced int16 when its longest bag in the trace allows,
:func:`updlrm.abi.int16_partials`; the engine decides per batch and DPU).

Example:
    >>> from updlrm.specs import TableSpec
    >>> hw = perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=4)
    >>> m = CostModel([TableSpec("a", 10, 8)], hw, 4, weighted=False, nr_tasklets=16, loads=[1.0])
    >>> m.index_bytes(10, 2).tolist(), m.partial_bytes(0, 3)
    (56.0, 16)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from updlrm import abi, perfmodel
from updlrm.specs import TableSpec

__all__ = [
    "CostModel",
    "dpu_input_bytes",
    "dpu_output_bytes",
    "longest_bags",
    "lookup_bytes",
    "partial_bytes",
    "tasklet_splits",
]


def lookup_bytes(weighted: bool) -> int:
    """Index bytes per lookup: a local row, plus a weight when weighted (:mod:`updlrm.abi`).

    >>> lookup_bytes(False), lookup_bytes(True)
    (4, 8)
    """
    return abi.LOCAL_ROW_BYTES + (abi.WEIGHT_BYTES if weighted else 0)


def partial_bytes(spec: TableSpec, flags: int, dim: float) -> int:
    """Bytes of one partial sum of ``dim`` elements of ``spec``'s rows under batch ``flags`` (``abi.partial_bytes``).

    ``dim`` may be a mean slice width (a fraction: rounded up).

    >>> from updlrm.specs import RowFormat
    >>> partial_bytes(TableSpec("a", 1, 3), 0, 3), partial_bytes(TableSpec("q", 1, 3, row_format=RowFormat.INT32), 0, 3)
    (16, 24)
    """
    return abi.partial_bytes(spec.row_format.abi_code, flags, math.ceil(dim))


def longest_bags(lengths: np.ndarray) -> list[int]:
    """Per table, its longest bag in ``lengths`` (``Trace.lengths()``, shape ``(batches, T, B)``).

    >>> longest_bags(np.array([[[1, 3], [0, 2]]]))
    [3, 2]
    """
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return [0] * (lengths.shape[1] if lengths.ndim == 3 else 0)
    return [int(x) for x in lengths.max(axis=(0, 2))]


def _pad8(n: ArrayLike) -> np.ndarray:
    return np.ceil(np.asarray(n, dtype=np.float64) / abi.DMA_ALIGNMENT) * abi.DMA_ALIGNMENT


def dpu_input_bytes(lookups: ArrayLike, segments: ArrayLike, weighted: bool) -> np.ndarray:
    """Bytes a DPU receives for a launch: header, local rows (and weights), each padded to 8, and segments.

    The host runtime's rule (``host/eb_*.c``), sizes from :mod:`updlrm.abi`.

    >>> dpu_input_bytes([3, 0], [2, 0], False).tolist()
    [648.0, 616.0]
    """
    lookups = np.asarray(lookups, dtype=np.float64)
    out = abi.HEADER_BYTES + _pad8(lookups * abi.LOCAL_ROW_BYTES) + np.asarray(segments) * abi.SEGMENT_BYTES
    if weighted:
        out = out + _pad8(lookups * abi.WEIGHT_BYTES)
    return np.asarray(out, dtype=np.float64)


def dpu_output_bytes(partial_sum_bytes: ArrayLike) -> np.ndarray:
    """Bytes a DPU returns: its status block and its partial sums (``partial_sum_bytes`` in all).

    >>> dpu_output_bytes([32, 0]).tolist()
    [56.0, 24.0]
    """
    return np.asarray(partial_sum_bytes, dtype=np.float64) + abi.STATUS_BYTES


def tasklet_splits(lookups: ArrayLike, segments: ArrayLike, nr_tasklets: int) -> np.ndarray:
    """Expected extra partial sums of a DPU whose ``lookups`` in ``segments`` runs are cut among ``nr_tasklets``.

    Each of the ``min(T, lookups) - 1`` cuts adds a partial sum unless it falls on a
    segment boundary, which ``segments - 1`` of the ``lookups - 1`` gaps are.

    >>> tasklet_splits([16, 16, 1], [16, 1, 1], 16).tolist()
    [0.0, 15.0, 0.0]
    """
    lookups = np.asarray(lookups, dtype=np.float64)
    segments = np.asarray(segments, dtype=np.float64)
    cuts = np.maximum(np.minimum(float(nr_tasklets), lookups) - 1.0, 0.0)
    inside = np.divide(lookups - segments, lookups - 1.0, out=np.zeros_like(lookups), where=lookups > 1)
    return np.asarray(cuts * np.clip(inside, 0.0, 1.0))


class CostModel:
    """Part costs and whole-batch estimates for ``tables`` on ``nr_dpus`` DPUs of ``profile``.

    Mixed row formats share one ``BatchWork``: reductions are expressed in elements of
    the dominant format (the one with the most expected lookups, ``loads`` per table),
    scaled by the model's :func:`~updlrm.perfmodel.element_cycles` (``elem_factor``).
    """

    def __init__(
        self,
        tables: list[TableSpec],
        profile: perfmodel.HardwareProfile,
        nr_dpus: int,
        weighted: bool,
        nr_tasklets: int,
        loads: list[float],
        longest: list[int] | None = None,
    ) -> None:
        self.profile = profile
        self.tables = list(tables)
        self.nr_dpus = nr_dpus
        self.weighted = weighted
        self.nr_tasklets = nr_tasklets
        # Per table, the flags its partials are priced under: int16 partials of int8 rows
        # where its longest bag (``longest``, :func:`longest_bags`; unknown: none) allows.
        self.flags = [
            abi.batch_flags(
                weighted, longest is not None and abi.int16_partials(s.row_format.abi_code, weighted, longest[t])
            )
            for t, s in enumerate(self.tables)
        ]
        by_format: dict[str, float] = {}
        for spec, load in zip(tables, loads):
            by_format[spec.row_format.value] = by_format.get(spec.row_format.value, 0.0) + load + 1e-9
        self.row_format: str = max(by_format, key=lambda fmt: by_format[fmt])
        base = perfmodel.element_cycles(profile, self.row_format, weighted)
        self.elem_factor = [perfmodel.element_cycles(profile, s.row_format.value, weighted) / base for s in tables]
        # Seconds per byte a DPU adds to a full parallel transfer (rank padding makes the
        # busiest DPU of a rank set the pace, so balancing bytes per DPU is what counts).
        probe = 1 << 16
        full = np.full(nr_dpus, float(probe))
        self.to_dpu_s_per_byte = (
            perfmodel.transfer_time(full, profile, "to_dpu") - profile.xfer_fixed_overhead_s
        ) / probe
        self.from_dpu_s_per_byte = (
            perfmodel.transfer_time(full, profile, "from_dpu") - profile.xfer_fixed_overhead_s
        ) / probe

    def index_bytes(self, lookups: ArrayLike, touched_bags: ArrayLike) -> np.ndarray:
        """Index bytes a part adds to its DPU's input for ``lookups`` lookups of ``touched_bags`` bags.

        One segment per touched bag; the DPU's header and padding are added once per DPU
        (:meth:`work`).
        """
        out: np.ndarray = (
            np.asarray(lookups, dtype=np.float64) * lookup_bytes(self.weighted)
            + np.asarray(touched_bags, dtype=np.float64) * abi.SEGMENT_BYTES
        )
        return out

    def partial_bytes(self, t: int, dim: float) -> int:
        """Bytes of one partial sum of ``dim`` elements of table ``t`` (:func:`partial_bytes`)."""
        return partial_bytes(self.tables[t], self.flags[t], dim)

    def kernel_s(
        self,
        lookups: ArrayLike,
        row_bytes: ArrayLike,
        index_bytes: ArrayLike,
        output_bytes: ArrayLike,
        reduce_elems: ArrayLike,
    ) -> np.ndarray:
        """Modeled kernel seconds of DPUs with this work (arrays: one entry per DPU)."""
        cycles = perfmodel.kernel_cycles(
            self.profile,
            lookups=np.atleast_1d(np.asarray(lookups, np.float64)),
            row_bytes=row_bytes,
            index_bytes=index_bytes,
            output_bytes=output_bytes,
            reduce_elems=reduce_elems,
            row_format=self.row_format,
            weighted=self.weighted,
            nr_tasklets=self.nr_tasklets,
        )
        return np.asarray(cycles / self.profile.dpu_frequency_hz)

    def part_cost(
        self,
        lookups: ArrayLike,
        row_bytes: ArrayLike,
        index_bytes: ArrayLike,
        output_bytes: ArrayLike,
        reduce_elems: ArrayLike,
    ) -> np.ndarray:
        """Modeled seconds a part adds to its DPU: kernel plus its share of both transfers."""
        return (
            self.kernel_s(lookups, row_bytes, index_bytes, output_bytes, reduce_elems)
            + np.asarray(index_bytes) * self.to_dpu_s_per_byte
            + np.asarray(output_bytes) * self.from_dpu_s_per_byte
        )

    def work(
        self,
        *,
        lookups: ArrayLike,
        row_bytes: ArrayLike,
        index_bytes: ArrayLike,
        output_bytes: ArrayLike,
        reduce_elems: ArrayLike,
        host_merge_elems: float,
        host_cache_lookups: float,
        host_cache_row_bytes: float,
        gap_bytes: ArrayLike | None = None,
    ) -> perfmodel.BatchWork:
        """A :class:`~updlrm.perfmodel.BatchWork` in this model's format, weighting and tasklets.

        ``index_bytes``/``output_bytes`` are per DPU the sums of its parts' bytes
        (:meth:`index_bytes`; one partial sum per segment); the header, the padding, the
        status block and the expected tasklet splits (:func:`tasklet_splits`) are added
        here, as the runtime adds them once per DPU.  A cut falls into a segment in
        proportion to its length, so a split's expected bytes are ``gap_bytes`` (per DPU,
        the sum over its segments of ``(lookups - 1) x partial bytes``) over the DPU's
        ``lookups - 1`` gaps; without ``gap_bytes`` every segment counts alike.
        """

        def counts(values: ArrayLike) -> np.ndarray:
            return np.asarray(values, dtype=np.float64)

        n_look = counts(lookups)
        segment_bytes = np.maximum(counts(index_bytes) - n_look * lookup_bytes(self.weighted), 0.0)
        seg = segment_bytes / abi.SEGMENT_BYTES
        in_bytes = dpu_input_bytes(n_look, seg, self.weighted)
        out = counts(output_bytes)
        splits = tasklet_splits(n_look, seg, self.nr_tasklets)
        if gap_bytes is None:
            per_split = np.divide(out, seg, out=np.zeros_like(out), where=seg > 0)
        else:
            gaps = n_look - seg
            per_split = np.divide(counts(gap_bytes), gaps, out=np.zeros_like(out), where=gaps > 0)
        out_bytes = dpu_output_bytes(out + splits * per_split)
        return perfmodel.BatchWork(
            lookups=n_look,
            row_bytes=counts(row_bytes),
            index_bytes=in_bytes,
            output_bytes=out_bytes,
            reduce_elems=counts(reduce_elems),
            row_format=self.row_format,
            weighted=self.weighted,
            nr_tasklets=self.nr_tasklets,
            host_merge_elems=int(round(host_merge_elems)),
            host_cache_lookups=int(round(host_cache_lookups)),
            host_cache_row_bytes=int(round(host_cache_row_bytes)),
        )

    def batch(
        self,
        *,
        lookups: ArrayLike,
        row_bytes: ArrayLike,
        index_bytes: ArrayLike,
        output_bytes: ArrayLike,
        reduce_elems: ArrayLike,
        host_merge_elems: float,
        host_cache_lookups: float,
        host_cache_row_bytes: float,
        gap_bytes: ArrayLike | None = None,
    ) -> perfmodel.PhaseTimes:
        """Modeled phases of a batch: :meth:`work` through :func:`~updlrm.perfmodel.model_batch`."""
        work = self.work(
            lookups=lookups,
            row_bytes=row_bytes,
            index_bytes=index_bytes,
            output_bytes=output_bytes,
            reduce_elems=reduce_elems,
            host_merge_elems=host_merge_elems,
            host_cache_lookups=host_cache_lookups,
            host_cache_row_bytes=host_cache_row_bytes,
            gap_bytes=gap_bytes,
        )
        return perfmodel.model_batch(work, self.profile)
