"""The one performance model of updlrm: what a batch would take on real UPMEM hardware.

The engine's per-batch profile and the partitioner's cost decisions both call
this module, so that every number updlrm prints about hardware time comes from
one place.  Every hardware constant lives in :class:`HardwareProfile`, and each
field carries the publication it comes from (``HardwareProfile.source_of``).

Model, per batch (all DPUs launched together, see :func:`model_batch`)::

    total = max(host_cache, cpu_to_dpu + launch + kernel + dpu_to_cpu) + host_merge

* Host transfers (:func:`transfer_time`): one fixed cost per SDK call, then per
  rank ``d * max_bytes / B_rank(d)`` -- a parallel transfer pads every buffer of
  a rank to the largest one (UPMEM SDK rule) and the rank's sustained bandwidth
  grows with the number ``d`` of DPUs it serves (PrIM Key Observation, Fig. 9);
  ranks are served concurrently, optionally up to a host-wide cap.
* DPU kernel (:func:`kernel_cycles`): three lower bounds, the largest wins --
  the DMA engine serves one MRAM<->WRAM transfer at a time, each costing
  ``alpha + beta * bytes`` cycles (PrIM Sec. 3.2); the pipeline issues at most
  one instruction per cycle; and one tasklet issues at most every 11 cycles
  (revolver pipeline), so a tasklet's chain of DMA waits and instructions
  bounds it from below.  With fewer than 11 tasklets the pipeline idles.
* The straggler decides: ``kernel_s`` is the slowest DPU.

The hardware profiles (:class:`HardwareProfile`, :data:`PROFILES`, :func:`get_profile`,
:func:`calibrate`) live in :mod:`updlrm.hardware` and are re-exported here.

Example::

    >>> import numpy as np
    >>> from updlrm.perfmodel import BatchWork, get_profile, model_batch
    >>> p = get_profile("upmem-350mhz-2556", nr_dpus=64)
    >>> w = BatchWork.uniform(nr_dpus=64, lookups=1000, row_bytes=128,
    ...                       index_bytes=8000, output_bytes=4096)
    >>> t = model_batch(w, p)
    >>> t.kernel_s > 0 and t.total_s >= t.kernel_s
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from updlrm.hardware import (
    DEFAULT_HARDWARE_PROFILE,
    PROFILES,
    XFER_CURVES,
    HardwareProfile,
    calibrate,
    get_profile,
)
from updlrm.kernel_model import (
    ROW_FORMATS,
    arithmetic_throughput,
    dma_cycles,
    element_cycles,
    kernel_cycles,
    mram_bandwidth,
    streaming_kernel_time,
)
from updlrm.specs import RowFormat
from updlrm.transfer_model import padded_total, rank_bandwidth, transfer_calls_time, transfer_time

__all__ = [
    "HardwareProfile",
    "PROFILES",
    "DEFAULT_HARDWARE_PROFILE",
    "padded_total",
    "XFER_CURVES",
    "get_profile",
    "BatchWork",
    "PhaseTimes",
    "model_batch",
    "transfer_time",
    "transfer_calls_time",
    "rank_bandwidth",
    "mram_bandwidth",
    "dma_cycles",
    "kernel_cycles",
    "streaming_kernel_time",
    "arithmetic_throughput",
    "element_cycles",
    "work_from_counters",
    "calibrate",
]

# --------------------------------------------------------------------------- work and results


def _as_counts(name: str, values, nr_dpus: int | None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        if nr_dpus is None:
            raise ValueError(f"BatchWork.{name} must be one value per DPU")
        arr = np.full(nr_dpus, float(arr))
    if arr.ndim != 1:
        raise ValueError(f"BatchWork.{name} must be 1-D (one value per DPU), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"BatchWork.{name} must be finite and >= 0")
    return arr


@dataclass
class BatchWork:
    """What one batch asks of each DPU (arrays of length nr_dpus) and of the host.

    DPU ``i`` sits in rank ``i // dpus_per_rank`` (rank-major order, as the SDK
    enumerates a DPU set).

    Example::

        >>> w = BatchWork.uniform(nr_dpus=4, lookups=10, row_bytes=64, index_bytes=80, output_bytes=256)
        >>> w.nr_dpus, float(w.reduce_elems[0])
        (4, 160.0)
    """

    lookups: np.ndarray
    row_bytes: np.ndarray
    index_bytes: np.ndarray
    output_bytes: np.ndarray
    reduce_elems: np.ndarray
    row_format: str = "fp32"
    weighted: bool = False
    nr_tasklets: int = 16
    host_merge_elems: int = 0
    host_cache_lookups: int = 0
    host_cache_row_bytes: int = 0

    def __post_init__(self) -> None:
        n = None
        for name in ("lookups", "row_bytes", "index_bytes", "output_bytes", "reduce_elems"):
            arr = _as_counts(name, getattr(self, name), n)
            n = len(arr) if n is None else n
            if len(arr) != n:
                raise ValueError(f"BatchWork.{name} has {len(arr)} entries, expected {n} (one per DPU)")
            setattr(self, name, arr)
        if n == 0:
            raise ValueError("BatchWork needs at least one DPU")
        if self.row_format not in ROW_FORMATS:
            raise ValueError(f"row_format must be one of {ROW_FORMATS}, got {self.row_format!r}")
        if int(self.nr_tasklets) != self.nr_tasklets or self.nr_tasklets < 1:
            raise ValueError(f"nr_tasklets must be a positive integer, got {self.nr_tasklets!r}")
        for name in ("host_merge_elems", "host_cache_lookups", "host_cache_row_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"BatchWork.{name} must be >= 0")

    @property
    def nr_dpus(self) -> int:
        """Number of DPUs the batch runs on."""
        return len(self.lookups)

    @classmethod
    def uniform(
        cls,
        *,
        nr_dpus: int,
        lookups: float,
        row_bytes: float,
        index_bytes: float,
        output_bytes: float,
        reduce_elems: float | None = None,
        **kwargs,
    ) -> BatchWork:
        """The same work on every DPU; ``reduce_elems`` defaults to one add per 4-byte word gathered.

        Example::

            >>> BatchWork.uniform(nr_dpus=2, lookups=1, row_bytes=32, index_bytes=8, output_bytes=32).reduce_elems
            array([8., 8.])
        """
        if reduce_elems is None:
            elem = 1 if kwargs.get("row_format") == "int8" else 4
            reduce_elems = lookups * row_bytes / elem
        return cls(
            lookups=np.full(nr_dpus, float(lookups)),
            row_bytes=np.full(nr_dpus, float(row_bytes)),
            index_bytes=np.full(nr_dpus, float(index_bytes)),
            output_bytes=np.full(nr_dpus, float(output_bytes)),
            reduce_elems=np.full(nr_dpus, float(reduce_elems)),
            **kwargs,
        )


@dataclass
class PhaseTimes:
    """Modeled seconds per phase of one batch.

    Overlap rule: the host serves host-cache rows while the DPUs transfer and
    compute, so ``total_s = host_route_s + max(host_cache_s, cpu_to_dpu_s + launch_s +
    kernel_s + dpu_to_cpu_s) + host_merge_s``. ``host_route_s`` is the host's route+pack
    of the batch, measured rather than modeled (:mod:`updlrm.partitioner.host_phases`);
    0 where nobody measured it.

    Example::

        >>> t = PhaseTimes(0.1, 0.0, 0.2, 0.1, 0.05, 0.5, np.array([0.2]), None)
        >>> round(t.total_s, 3), round(t.dpu_s, 3)
        (0.55, 0.4)
    """

    cpu_to_dpu_s: float
    launch_s: float
    kernel_s: float
    dpu_to_cpu_s: float
    host_merge_s: float
    host_cache_s: float
    per_dpu_kernel_s: np.ndarray
    energy_j: float | None = None
    host_route_s: float = 0.0

    @property
    def dpu_s(self) -> float:
        """The DPU side: push, launch, kernel, pull (serial, one after the other)."""
        return float(self.cpu_to_dpu_s + self.launch_s + self.kernel_s + self.dpu_to_cpu_s)

    @property
    def total_s(self) -> float:
        """Batch latency under the overlap rule stated in the class docstring."""
        return float(self.host_route_s + max(self.host_cache_s, self.dpu_s) + self.host_merge_s)

    def as_dict(self) -> dict[str, float | None]:
        """Scalar phases plus total, for JSON reports.

        Example::

            >>> PhaseTimes(1, 0, 0, 0, 0, 0, np.zeros(1)).as_dict()["total_s"]
            1.0
        """
        return {
            "cpu_to_dpu_s": self.cpu_to_dpu_s,
            "launch_s": self.launch_s,
            "kernel_s": self.kernel_s,
            "dpu_to_cpu_s": self.dpu_to_cpu_s,
            "host_merge_s": self.host_merge_s,
            "host_cache_s": self.host_cache_s,
            "host_route_s": self.host_route_s,
            "total_s": self.total_s,
            "energy_j": self.energy_j,
        }


# --------------------------------------------------------------------------- DPU side
# --------------------------------------------------------------------------- one batch
def model_batch(work: BatchWork, profile: HardwareProfile) -> PhaseTimes:
    """Modeled time of every phase of one batch on ``profile``'s hardware.

    Example::

        >>> p = get_profile("upmem-350mhz-2556", nr_dpus=128)
        >>> w = BatchWork.uniform(nr_dpus=128, lookups=500, row_bytes=256, index_bytes=4000,
        ...                       output_bytes=8192, host_merge_elems=128 * 2048)
        >>> t = model_batch(w, p)
        >>> t.total_s == max(t.host_cache_s, t.dpu_s) + t.host_merge_s
        True
    """
    if work.nr_dpus > profile.nr_dpus:
        raise ValueError(f"work spans {work.nr_dpus} DPUs but profile {profile.name!r} has {profile.nr_dpus}")
    per_dpu_cycles = kernel_cycles(
        profile,
        lookups=work.lookups,
        row_bytes=work.row_bytes,
        index_bytes=work.index_bytes,
        output_bytes=work.output_bytes,
        reduce_elems=work.reduce_elems,
        row_format=work.row_format,
        weighted=work.weighted,
        nr_tasklets=work.nr_tasklets,
    )
    per_dpu_s = per_dpu_cycles / profile.dpu_frequency_hz
    launched = bool(np.any(per_dpu_cycles > 0))
    kernel_s = float(per_dpu_s.max())
    launch_s = profile.launch_overhead_s if launched else 0.0
    # Every allocated DPU draws power while the slowest one finishes.
    energy = None if profile.dpu_power_w is None else profile.dpu_power_w * work.nr_dpus * (launch_s + kernel_s)
    # The merge is modeled at 4 bytes per partial element whatever the row format: right for
    # fp32 rows and int32 partials of unweighted int8 rows; the ABI's int16 partials of
    # short int8 bags (2 bytes) and int64 partials of int32 and weighted integer rows (8
    # bytes, RowFormat.accumulator_bytes) are priced alike.
    return PhaseTimes(
        cpu_to_dpu_s=transfer_time(work.index_bytes, profile, "to_dpu", "parallel"),
        launch_s=launch_s,
        kernel_s=kernel_s,
        dpu_to_cpu_s=transfer_time(work.output_bytes, profile, "from_dpu", "parallel"),
        host_merge_s=work.host_merge_elems * 4 / profile.host_merge_bytes_per_s,
        host_cache_s=work.host_cache_lookups * work.host_cache_row_bytes / profile.host_gather_bytes_per_s,
        per_dpu_kernel_s=per_dpu_s,
        energy_j=energy,
    )


# --------------------------------------------------------------------------- emulator counters
def _per_dpu(counters: Mapping[str, object], key: str) -> np.ndarray:
    arr = np.asarray(counters[key], dtype=np.float64)
    if arr.ndim == 2:  # (nr_dpus, nr_tasklets): the DMA engine is per DPU, so tasklets add up
        arr = arr.sum(axis=1)
    if arr.ndim != 1:
        raise ValueError(f"counter {key!r} must be per DPU (1-D) or per DPU and tasklet (2-D), got shape {arr.shape}")
    return arr


def work_from_counters(
    counters: Mapping[str, object],
    *,
    index_bytes,
    output_bytes,
    row_format: str = "fp32",
    weighted: bool = False,
    nr_tasklets: int = 16,
    index_block_bytes: int = 2048,
    host_merge_elems: int = 0,
    host_cache_lookups: int = 0,
    host_cache_row_bytes: int = 0,
) -> BatchWork:
    """Turn an emulator run's per-DPU DMA counters into a :class:`BatchWork`.

    ``counters`` maps names to per-DPU (or per-DPU-and-tasklet) arrays:
    ``mram_read_count`` and ``mram_read_bytes`` are required; ``lookups``
    (row gathers the kernel counted) is used when present.  Otherwise the reads
    that were not index blocks (``ceil(index_bytes / index_block_bytes)`` per
    DPU) are taken to be row gathers.  ``index_bytes``/``output_bytes`` are what
    the host pushed to / pulled from each DPU.

    Example::

        >>> c = {"mram_read_count": [11, 21], "mram_read_bytes": [10 * 64 + 80, 20 * 64 + 160]}
        >>> w = work_from_counters(c, index_bytes=[80, 160], output_bytes=[256, 256])
        >>> w.lookups.tolist(), w.row_bytes.tolist()
        ([10.0, 20.0], [64.0, 64.0])
    """
    if "mram_read_count" not in counters or "mram_read_bytes" not in counters:
        raise KeyError("counters need 'mram_read_count' and 'mram_read_bytes' (per DPU)")
    reads = _per_dpu(counters, "mram_read_count")
    read_bytes = _per_dpu(counters, "mram_read_bytes")
    index_bytes = np.broadcast_to(np.asarray(index_bytes, dtype=np.float64), reads.shape).copy()
    output_bytes = np.broadcast_to(np.asarray(output_bytes, dtype=np.float64), reads.shape).copy()
    if "lookups" in counters:
        lookups = _per_dpu(counters, "lookups")
    else:
        lookups = np.maximum(reads - np.ceil(index_bytes / index_block_bytes), 0.0)
    gathered = np.maximum(read_bytes - index_bytes, 0.0)
    row_bytes = np.divide(gathered, lookups, out=np.zeros_like(gathered), where=lookups > 0)
    elem = RowFormat(row_format).element_bytes
    return BatchWork(
        lookups=lookups,
        row_bytes=row_bytes,
        index_bytes=index_bytes,
        output_bytes=output_bytes,
        reduce_elems=gathered / elem,
        row_format=row_format,
        weighted=weighted,
        nr_tasklets=nr_tasklets,
        host_merge_elems=host_merge_elems,
        host_cache_lookups=host_cache_lookups,
        host_cache_row_bytes=host_cache_row_bytes,
    )


# --------------------------------------------------------------------------- a stream of batches, pipelined
@dataclass
class StreamTimes:
    """Modeled seconds for a stream of batches, one after the other and pipelined.

    ``period_s`` is the steady-state time per pipelined batch and ``bound`` says which
    side sets it (``"host"`` or ``"dpu"``); see :func:`model_stream`.

    Example::

        >>> s = StreamTimes(nr_batches=4, serial_s=8.0, pipelined_s=5.0, period_s=1.0, bound="dpu")
        >>> s.speedup, round(s.batches_per_s(), 3)
        (1.6, 0.8)
    """

    nr_batches: int
    serial_s: float
    pipelined_s: float
    period_s: float
    bound: str

    @property
    def speedup(self) -> float:
        """Serial stream time over pipelined stream time."""
        return self.serial_s / self.pipelined_s if self.pipelined_s > 0 else 1.0

    def batches_per_s(self, pipelined: bool = True) -> float:
        """Throughput of the whole stream (batches per second)."""
        seconds = self.pipelined_s if pipelined else self.serial_s
        return self.nr_batches / seconds if seconds > 0 else math.inf

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain values for JSON reports.

        Example::

            >>> StreamTimes(2, 4.0, 3.0, 1.0, "host").as_dict()["speedup"]
            1.3333333333333333
        """
        return {
            "nr_batches": self.nr_batches,
            "serial_s": self.serial_s,
            "pipelined_s": self.pipelined_s,
            "period_s": self.period_s,
            "bound": self.bound,
            "speedup": self.speedup,
        }


def model_stream(
    batches: PhaseTimes | Iterable[PhaseTimes],
    *,
    route_s: float | Iterable[float] | None = None,
    nr_batches: int | None = None,
) -> StreamTimes:
    """A stream of batches run one after the other, and pipelined as the host runtime does it.

    ``batches`` are the modeled phases of each batch (one :class:`PhaseTimes` repeated
    ``nr_batches`` times, or one per batch); ``route_s`` is the host's route+pack time per
    batch (a scalar or one per batch; the host CPU is the same on hardware, so the engine's
    measured ``BatchStats.route_s`` is the right figure); None takes each batch's
    ``host_route_s``.

    Serial (``Engine.run``, one batch after the other): each batch is
    ``route + push + max(host_cache, launch + kernel) + pull + merge`` (the host sums its
    cached rows after the asynchronous launch, while the kernel runs).
    Pipelined (``Engine.pipeline``): one host thread issues, for batch ``i``, ``pull(i-1)``,
    ``push(i)``, the asynchronous launch, the host-cache rows of ``i``, then the merge of
    ``i-1`` and the route+pack of ``i+1`` while the DPUs run ``i``; the DPUs run one batch at
    a time, and the host can touch a DPU's MRAM only while it is stopped (so push and pull
    sit on both sides). Steady state per batch::

        push + pull + max(host_cache + merge + route, launch + kernel)

    instead of their sum. The whole stream is simulated event by event (fill and drain
    included); it never takes longer than the serial stream.

    Example::

        >>> t = PhaseTimes(cpu_to_dpu_s=1e-4, launch_s=1e-5, kernel_s=5e-4, dpu_to_cpu_s=1e-4,
        ...                host_merge_s=2e-4, host_cache_s=0.0, per_dpu_kernel_s=np.zeros(1))
        >>> s = model_stream(t, route_s=2e-4, nr_batches=100)
        >>> s.bound, round(s.period_s * 1e6), round(s.serial_s / 100 * 1e6)
        ('dpu', 710, 1110)
        >>> s.pipelined_s < s.serial_s
        True
    """
    phases = [batches] if isinstance(batches, PhaseTimes) else list(batches)
    if nr_batches is None:
        nr_batches = len(phases)
    if nr_batches < 1 or not phases:
        raise ValueError("model_stream needs at least one batch")
    if len(phases) not in (1, nr_batches):
        raise ValueError(f"got {len(phases)} PhaseTimes for {nr_batches} batches (give one, or one per batch)")
    if route_s is None:
        route_s = [p.host_route_s for p in phases]
    routes = [float(route_s)] if np.ndim(route_s) == 0 else [float(r) for r in route_s]
    if len(routes) not in (1, nr_batches):
        raise ValueError(f"got {len(routes)} route_s values for {nr_batches} batches (give one, or one per batch)")
    if any(r < 0 for r in routes):
        raise ValueError("route_s must be >= 0")

    def phase(i: int) -> PhaseTimes:
        return phases[i if len(phases) > 1 else 0]

    def route(i: int) -> float:
        return routes[i if len(routes) > 1 else 0]

    serial = sum(
        route(i)
        + phase(i).cpu_to_dpu_s
        + max(phase(i).host_cache_s, phase(i).launch_s + phase(i).kernel_s)
        + phase(i).dpu_to_cpu_s
        + phase(i).host_merge_s
        for i in range(nr_batches)
    )
    # One host thread (the clock `host`) and the DPUs (busy until `dpus_done`).
    host = route(0)
    dpus_done = 0.0
    for i in range(nr_batches):
        p = phase(i)
        if i > 0:
            host = max(host, dpus_done) + phase(i - 1).dpu_to_cpu_s  # collect batch i-1
        host += p.cpu_to_dpu_s
        dpus_done = host + p.launch_s + p.kernel_s
        host += p.host_cache_s
        if i > 0:
            host += phase(i - 1).host_merge_s
        if i + 1 < nr_batches:
            host += route(i + 1)
    last = phase(nr_batches - 1)
    pipelined = max(host, dpus_done) + last.dpu_to_cpu_s + last.host_merge_s
    steady = phase(nr_batches - 1)
    host_side = steady.host_cache_s + steady.host_merge_s + route(nr_batches - 1)
    dpu_side = steady.launch_s + steady.kernel_s
    period = steady.cpu_to_dpu_s + steady.dpu_to_cpu_s + max(host_side, dpu_side)
    return StreamTimes(
        nr_batches=nr_batches,
        serial_s=float(serial),
        pipelined_s=float(pipelined),
        period_s=float(period),
        bound="host" if host_side > dpu_side else "dpu",
    )
