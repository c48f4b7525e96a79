"""Stage 2a of the planner: the cost model, i.e. the planner's use of :mod:`updlrm.perfmodel`.

:class:`CostModel` prices a row part (kernel time plus its share of both transfers) and
a whole batch (:func:`updlrm.perfmodel.model_batch`) from the work a layout implies.
The layout search, the DPU assignment and the routed estimate of the evaluator share it.

The planner's byte model (what the search and :func:`assign_dpus` see) is simpler than
the runtime's ABI (``dpu_kernels/embedding_bag_abi.h``, mirrored in :mod:`updlrm.abi`);
the evaluator counts the engine's exact bytes instead whenever it can
(:func:`updlrm.partitioner.batch_work.derive_work`).  Where the two agree the numbers
come from :mod:`updlrm.abi`; where they differ the planner's number is kept as it is
here and named below (to be reconciled with the ABI by a later change):

* per lookup: a 4-byte local row (+ a 4-byte weight when weighted) -- as the ABI,
  except that the ABI pads each array to 8 bytes;
* per touched bag (and once per part): :data:`OFFSET_BYTES_PER_BAG` = 4 bytes; the
  ABI sends one 8-byte ``eb_segment`` per (bag, shard) run of lookups, plus a 616-byte
  ``eb_batch_header`` per DPU;
* partial sums: :data:`PARTIAL_ELEMENT_BYTES` = 4 bytes per element whatever the
  format; the ABI's accumulators are 8 bytes for int32 rows and for weighted integer
  rows (``RowFormat.accumulator_bytes``), and the DPU also returns a 24-byte status.

Example:
    >>> from updlrm.specs import TableSpec
    >>> hw = perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=4)
    >>> m = CostModel([TableSpec("a", 10, 8)], hw, 4, weighted=False, nr_tasklets=16, loads=[1.0])
    >>> m.index_bytes(10, 2).tolist(), partial_bytes(3)
    (52, 16)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from updlrm import abi, perfmodel
from updlrm.specs import TableSpec

__all__ = ["CostModel", "OFFSET_BYTES_PER_BAG", "PARTIAL_ELEMENT_BYTES", "lookup_bytes", "partial_bytes"]

# The planner's model of a DPU's index input: per touched bag (and once per part) one
# 4-byte word.  Not the ABI's 8-byte eb_segment per (bag, shard) run (see the module doc).
OFFSET_BYTES_PER_BAG = 4
# The planner's model of partial sums: 4 bytes per element whatever the row format.
# The ABI's accumulators (abi.accumulator_bytes) are 8 bytes for int32 and weighted
# integer rows (see the module doc).
PARTIAL_ELEMENT_BYTES = 4


def lookup_bytes(weighted: bool) -> int:
    """Index bytes per lookup: a local row, plus a weight when weighted (:mod:`updlrm.abi`).

    >>> lookup_bytes(False), lookup_bytes(True)
    (4, 8)
    """
    return abi.LOCAL_ROW_BYTES + (abi.WEIGHT_BYTES if weighted else 0)


def partial_bytes(dim: float) -> int:
    """Bytes of one partial sum of ``dim`` elements in the planner's model, padded to 8.

    ``dim`` may be a mean slice width (a fraction).

    >>> partial_bytes(3), partial_bytes(8.5)
    (16, 40)
    """
    return math.ceil(dim * PARTIAL_ELEMENT_BYTES / 8) * 8


class CostModel:
    """Part costs and whole-batch estimates for ``tables`` on ``nr_dpus`` DPUs of ``profile``.

    Mixed row formats share one ``BatchWork``: reductions are expressed in elements of
    the dominant format (the one with the most expected lookups, ``loads`` per table),
    scaled by the model's :func:`~updlrm.perfmodel.element_cycles` (``elem_factor``).
    """

    def __init__(self, tables: list[TableSpec], profile: perfmodel.HardwareProfile, nr_dpus: int,
                 weighted: bool, nr_tasklets: int, loads: list[float]) -> None:
        self.profile = profile
        self.nr_dpus = nr_dpus
        self.weighted = weighted
        self.nr_tasklets = nr_tasklets
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
        self.to_dpu_s_per_byte = (perfmodel.transfer_time(full, profile, "to_dpu")
                                  - profile.xfer_fixed_overhead_s) / probe
        self.from_dpu_s_per_byte = (perfmodel.transfer_time(full, profile, "from_dpu")
                                    - profile.xfer_fixed_overhead_s) / probe

    def index_bytes(self, lookups: ArrayLike, touched_bags: ArrayLike) -> np.ndarray:
        """Index bytes a part receives for ``lookups`` lookups of ``touched_bags`` bags."""
        out: np.ndarray = (np.asarray(lookups) * lookup_bytes(self.weighted)
                           + (np.asarray(touched_bags) + 1) * OFFSET_BYTES_PER_BAG)
        return out

    def kernel_s(self, lookups: ArrayLike, row_bytes: ArrayLike, index_bytes: ArrayLike, output_bytes: ArrayLike,
                 reduce_elems: ArrayLike) -> np.ndarray:
        """Modeled kernel seconds of DPUs with this work (arrays: one entry per DPU)."""
        cycles = perfmodel.kernel_cycles(self.profile, lookups=np.atleast_1d(np.asarray(lookups, np.float64)),
                                         row_bytes=row_bytes, index_bytes=index_bytes, output_bytes=output_bytes,
                                         reduce_elems=reduce_elems, row_format=self.row_format,
                                         weighted=self.weighted, nr_tasklets=self.nr_tasklets)
        return np.asarray(cycles / self.profile.dpu_frequency_hz)

    def part_cost(self, lookups: ArrayLike, row_bytes: ArrayLike, index_bytes: ArrayLike, output_bytes: ArrayLike,
                  reduce_elems: ArrayLike) -> np.ndarray:
        """Modeled seconds a part adds to its DPU: kernel plus its share of both transfers."""
        return (self.kernel_s(lookups, row_bytes, index_bytes, output_bytes, reduce_elems)
                + np.asarray(index_bytes) * self.to_dpu_s_per_byte
                + np.asarray(output_bytes) * self.from_dpu_s_per_byte)

    def work(self, *, lookups: ArrayLike, row_bytes: ArrayLike, index_bytes: ArrayLike, output_bytes: ArrayLike,
             reduce_elems: ArrayLike, host_merge_elems: float, host_cache_lookups: float,
             host_cache_row_bytes: float) -> perfmodel.BatchWork:
        """A :class:`~updlrm.perfmodel.BatchWork` in this model's format, weighting and tasklets."""
        def counts(values: ArrayLike) -> np.ndarray:
            return np.asarray(values, dtype=np.float64)

        return perfmodel.BatchWork(
            lookups=counts(lookups), row_bytes=counts(row_bytes), index_bytes=counts(index_bytes),
            output_bytes=counts(output_bytes), reduce_elems=counts(reduce_elems), row_format=self.row_format, weighted=self.weighted,
            nr_tasklets=self.nr_tasklets, host_merge_elems=int(round(host_merge_elems)),
            host_cache_lookups=int(round(host_cache_lookups)), host_cache_row_bytes=int(round(host_cache_row_bytes)))

    def batch(self, *, lookups: ArrayLike, row_bytes: ArrayLike, index_bytes: ArrayLike, output_bytes: ArrayLike,
              reduce_elems: ArrayLike, host_merge_elems: float, host_cache_lookups: float,
              host_cache_row_bytes: float) -> perfmodel.PhaseTimes:
        """Modeled phases of a batch: :meth:`work` through :func:`~updlrm.perfmodel.model_batch`."""
        work = self.work(lookups=lookups, row_bytes=row_bytes, index_bytes=index_bytes, output_bytes=output_bytes,
                         reduce_elems=reduce_elems, host_merge_elems=host_merge_elems,
                         host_cache_lookups=host_cache_lookups, host_cache_row_bytes=host_cache_row_bytes)
        return perfmodel.model_batch(work, self.profile)
