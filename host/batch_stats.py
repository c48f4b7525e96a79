"""What one ``Engine`` batch measured: phase times and per-DPU work (``BatchStats``).

The per-DPU statistics are the C runtime's ``enum eb_dpu_stat`` (host/eb_host.h), read by
``Engine`` after each batch; ``BatchStats.work`` turns them into the timing model's input.
``updlrm.host.engine.BatchStats`` is the same class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from updlrm.perfmodel import BatchWork

__all__ = ["BatchStats", "DPU_STATS", "read_slot_stats"]

# Per-DPU statistics (host/eb_host.h, enum eb_dpu_stat).
DPU_STATS = (
    "lookups",
    "segments",
    "partials",
    "bytes_to_dpu",
    "bytes_from_dpu",
    "padded_bytes_to_dpu",
    "padded_bytes_from_dpu",
    "reduce_elems",
    "kernel_cycles",
    "row_bytes_gathered",
    "merge_elems",
)


@dataclass
class BatchStats:
    """Measured phases of one ``Engine.run`` and what it asked of each DPU.

    Times are host wall-clock seconds. ``launch_s`` runs from the launch until every DPU
    is done; the host-cache sum (``host_cache_s``) runs inside that window. Per-DPU
    arrays have one entry per DPU of the plan; ``bytes_*`` are what each DPU needs,
    ``padded_bytes_*`` what was moved (parallel transfers are padded to the largest
    buffer of the rank, as the SDK does).

    >>> s = BatchStats.empty(2)
    >>> s.total_s, s.lookups.tolist()
    (0.0, [0, 0])
    """

    route_s: float
    push_s: float
    launch_s: float
    pull_s: float
    merge_s: float
    host_cache_s: float
    nr_launches: int
    nr_bags: int
    nr_lookups: int
    host_cache_hits: int
    host_cache_bytes: int
    lookups: np.ndarray
    segments: np.ndarray
    partials: np.ndarray
    bytes_to_dpu: np.ndarray
    bytes_from_dpu: np.ndarray
    padded_bytes_to_dpu: np.ndarray
    padded_bytes_from_dpu: np.ndarray
    reduce_elems: np.ndarray
    kernel_cycles: np.ndarray
    row_bytes_gathered: np.ndarray
    merge_elems: np.ndarray
    row_format: str = "fp32"
    weighted: bool = False
    nr_tasklets: int = 16
    #: Launches whose tables were routed in parts on several host threads (big batches
    #: with ``host_threads >= 2``); the inputs are those of a one-thread run either way.
    parallel_routes: int = 0
    #: The most parts of tables a launch of the batch was routed in, one thread each: at
    #: most ``host_threads``, 16, the tables, and one per 32,768 lookups (one part below
    #: 65,536); 1 for a batch routed in one pass, 0 when nothing was routed.
    route_parts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, nr_dpus: int) -> BatchStats:
        zeros: dict[str, Any] = {name: np.zeros(nr_dpus, dtype=np.int64) for name in DPU_STATS}
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0, **zeros)

    @property
    def total_s(self) -> float:
        """Wall time of the batch (the host-cache part overlaps the launch)."""
        return self.route_s + self.push_s + self.launch_s + self.pull_s + self.merge_s

    def work(self) -> BatchWork:
        """The batch as ``updlrm.perfmodel.BatchWork``, for the timing model.

        ``row_bytes`` is each DPU's mean gathered row-slice size; ``index_bytes`` the
        inputs it streams (header, local rows, weights, segments); ``output_bytes`` its
        partial sums and status.

        >>> from updlrm.perfmodel import BatchWork
        >>> isinstance(BatchStats.empty(2).work(), BatchWork)
        True
        """
        from updlrm.perfmodel import BatchWork

        lookups = self.lookups.astype(np.float64)
        row_bytes = np.divide(self.row_bytes_gathered, lookups, out=np.zeros_like(lookups), where=lookups > 0)
        mean_host_row = self.host_cache_bytes / self.host_cache_hits if self.host_cache_hits else 0
        return BatchWork(
            lookups=self.lookups.copy(),
            row_bytes=row_bytes,
            index_bytes=self.bytes_to_dpu.copy(),
            output_bytes=self.bytes_from_dpu.copy(),
            reduce_elems=self.reduce_elems.copy(),
            row_format=self.row_format,
            weighted=self.weighted,
            nr_tasklets=self.nr_tasklets,
            host_merge_elems=int(self.merge_elems.sum()),
            host_cache_lookups=int(self.host_cache_hits),
            host_cache_row_bytes=int(round(mean_host_row)),
        )


def read_slot_stats(engine: Any, slot: int, weighted: bool) -> BatchStats:
    """The ``BatchStats`` of an ``Engine`` slot's last batch, read from the C runtime."""
    ffi, lib = engine._ffi, engine._lib
    run = lib.eb_engine_slot_stats(engine._engine, slot)
    per_dpu = {}
    for k, name in enumerate(DPU_STATS):
        buffer = ffi.buffer(lib.eb_engine_slot_dpu_stat(engine._engine, slot, k), 8 * engine.nr_dpus)
        per_dpu[name] = np.frombuffer(buffer, dtype=np.int64).copy()
    # BatchWork takes one row format; with mixed tables, the one with the most rows.
    rows: dict[str, int] = {}
    for spec in engine.plan.tables:
        rows[spec.row_format.value] = rows.get(spec.row_format.value, 0) + spec.num_embeddings
    return BatchStats(
        route_s=run.route_s,
        push_s=run.push_s,
        launch_s=run.launch_s,
        pull_s=run.pull_s,
        merge_s=run.merge_s,
        host_cache_s=run.host_cache_s,
        nr_launches=int(run.nr_launches),
        nr_bags=int(run.nr_bags),
        nr_lookups=int(run.nr_lookups),
        host_cache_hits=int(run.host_cache_hits),
        host_cache_bytes=int(run.host_cache_bytes),
        **per_dpu,
        row_format=max(rows, key=rows.__getitem__),
        weighted=weighted,
        nr_tasklets=engine.nr_tasklets,
        parallel_routes=int(run.parallel_routes),
        route_parts=int(run.route_parts),
    )
