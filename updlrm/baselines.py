"""Like-for-like CPU baselines and honest timings.

A DPU figure means something only next to the CPU doing the same job on the same
bytes. Per row format the baseline is:

* ``fp32``: ``torch.nn.functional.embedding_bag`` on the float32 rows;
* ``int8``: torch's quantized byte-rowwise bag
  (``torch.ops.quantized.embedding_bag_byte_rowwise_offsets``, FBGEMM's CPU kernel)
  on the *same* quantized rows: updlrm's symmetric ``q * scale`` becomes
  ``uint8(q + 128)`` with a per-row scale ``scale`` and bias ``-128 * scale``;
* ``int32``: torch has no integer embedding bag; int32 rows are 4 bytes an element
  like fp32, so they are compared with ``embedding_bag`` on the dequantized float32
  rows (same bytes read per lookup).

Timings are best of N >= 5 with the spread (median and worst over best) kept, and a
comparison gives a verdict only when the ratio is outside the spread.

Example:
    >>> import numpy as np
    >>> from updlrm.specs import TableSpec
    >>> tables = [TableSpec("a", 4, 2), TableSpec("b", 3, 2, row_format="int8", scale=0.5)]
    >>> stored = [np.arange(8, dtype=np.float32).reshape(4, 2), np.array([[2, -4], [0, 1], [6, 6]], np.int8)]
    >>> base = CpuBaseline(tables, stored)
    >>> base.describe()
    'a: torch fp32 embedding_bag; b: torch quantized byte-rowwise embedding_bag (int8)'
    >>> base(np.array([0, 1, 2, 0, 2]), np.array([0, 2, 3, 4, 5]), batch_size=2).tolist()
    [[2.0, 4.0, 1.0, -2.0], [4.0, 5.0, 3.0, 3.0]]
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from updlrm.specs import RowFormat, TableSpec

MIN_REPEATS = 5  # the project's rule: best of N >= 5


def cpu_model() -> str:
    """This host's CPU model name, which every timing is quoted with (``/proc/cpuinfo``), or the platform's processor string.

    >>> isinstance(cpu_model(), str)
    True
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class Timing:
    """Wall seconds of repeated runs of one thing.

    >>> t = Timing((0.002, 0.0021, 0.0025, 0.002, 0.0022))
    >>> t.best, t.median, round(t.spread, 3)
    (0.002, 0.0021, 0.25)
    >>> str(t)
    '2.00 ms (best of 5; median +5.0%, worst +25.0%)'
    """

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def worst(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> float:
        """(worst - best) / best."""
        return self.worst / self.best - 1.0 if self.best > 0 else 0.0

    def to_dict(self) -> dict:
        return {"best_s": self.best, "median_s": self.median, "worst_s": self.worst, "runs": len(self.samples)}

    def __str__(self) -> str:
        median = self.median / self.best - 1.0 if self.best > 0 else 0.0
        return f"{_ms(self.best)} (best of {len(self.samples)}; median {median:+.1%}, worst {self.spread:+.1%})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.1f} us"


def time_call(
    fn: Callable[[], object],
    *,
    repeats: int = MIN_REPEATS,
    warmup: int = 2,
    min_total_s: float = 0.2,
    max_repeats: int = 100,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``repeats`` (>= 5) timed ones,
    more until ``min_total_s`` has passed (at most ``max_repeats``).

    >>> t = time_call(lambda: sum(range(100)), min_total_s=0)
    >>> len(t.samples), t.best > 0
    (5, True)
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be at least {MIN_REPEATS} (best of N >= 5), got {repeats}")
    for _ in range(max(0, warmup)):
        fn()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < repeats or (spent < min_total_s and len(samples) < max_repeats):
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        samples.append(took)
        spent += took
    return Timing(tuple(samples))


@dataclass(frozen=True)
class Comparison:
    """``cpu`` against ``dpu`` (a measured :class:`Timing` or a modeled number of seconds).

    ``ratio`` is best CPU time over best DPU time (> 1: the DPUs win). The verdict is
    given only when the whole range the spreads allow lies on one side of 1: CPU median
    and best against DPU median and best.

    >>> Comparison(Timing((2e-3,) * 5), 1e-3).verdict
    'DPUs win'
    >>> Comparison(Timing((1e-3, 1e-3, 1.2e-3, 1.3e-3, 1.4e-3)), 1.1e-3).verdict
    'within the spread: no verdict'
    """

    cpu: Timing
    dpu: Timing | float

    def _dpu_range(self) -> tuple[float, float]:
        if isinstance(self.dpu, Timing):
            return self.dpu.best, self.dpu.median
        return float(self.dpu), float(self.dpu)

    @property
    def ratio(self) -> float:
        best, _ = self._dpu_range()
        return self.cpu.best / best if best > 0 else float("inf")

    @property
    def ratio_range(self) -> tuple[float, float]:
        """Lowest and highest ratio the medians and bests give."""
        d_best, d_median = self._dpu_range()
        ratios = [c / d for c in (self.cpu.best, self.cpu.median) for d in (d_best, d_median) if d > 0]
        if not ratios:
            return float("inf"), float("inf")
        return min(ratios), max(ratios)

    @property
    def verdict(self) -> str:
        low, high = self.ratio_range
        if low > 1.0:
            return "DPUs win"
        if high < 1.0:
            return "CPU wins"
        return "within the spread: no verdict"

    def __str__(self) -> str:
        low, high = self.ratio_range
        return f"{self.ratio:.2f}x (range {low:.2f}-{high:.2f}x): {self.verdict}"


@dataclass(frozen=True)
class CopyFloor:
    """The fastest copy of ``nbytes`` measured on this host: what a host phase moving those bytes is held to.

    ``copies`` holds each way's best seconds; ``how`` names the fastest.

    >>> floor = CopyFloor(1 << 20, {"numpy copyto, 1 thread": 2e-4, "torch copy_, 2 threads": 1e-4})
    >>> floor.best_s, floor.how
    (0.0001, 'torch copy_, 2 threads')
    >>> str(floor)
    '1.0 MB in 0.10 ms (torch copy_, 2 threads; numpy copyto, 1 thread 0.20 ms)'
    """

    nbytes: int
    copies: dict[str, float]

    @property
    def best_s(self) -> float:
        return min(self.copies.values())

    @property
    def how(self) -> str:
        return min(self.copies, key=lambda k: self.copies[k])

    def __str__(self) -> str:
        others = "; ".join(f"{k} {_ms(v)}" for k, v in self.copies.items() if k != self.how)
        return f"{self.nbytes / 1e6:.1f} MB in {_ms(self.best_s)} ({self.how}" + (f"; {others})" if others else ")")


def copy_floor(nbytes: int, threads: int = 1, repeats: int = MIN_REPEATS) -> CopyFloor:
    """Best of ``repeats`` warm copies of ``nbytes`` bytes, each way, on this host.

    Two ways: numpy's ``copyto`` (one thread; glibc's ``memmove``, which above a size
    threshold streams past the caches with non-temporal stores) and torch's ``copy_`` on
    ``threads`` intra-op threads (vector loads and stores through the caches, the bytes
    cut between threads). A host phase running on ``threads`` threads is compared with the
    faster of the two: on an AMD EPYC VM (2 vCPUs) 21.7 MB took 1.39 ms with numpy and
    0.66 ms with torch on two threads.

    >>> floor = copy_floor(1 << 16, threads=1)
    >>> sorted(floor.copies), floor.best_s > 0
    (['numpy copyto, 1 thread', 'torch copy_, 1 thread'], True)
    """
    import torch

    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be at least {MIN_REPEATS} (best of N >= 5), got {repeats}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    src = np.ones(max(nbytes, 8), dtype=np.uint8)
    dst = np.zeros_like(src)
    copies = {"numpy copyto, 1 thread": time_call(lambda: np.copyto(dst, src), repeats=repeats, min_total_s=0).best}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t_src, t_dst = torch.from_numpy(src), torch.from_numpy(dst)
        label = f"torch copy_, {threads} thread" + ("s" if threads > 1 else "")
        copies[label] = time_call(lambda: t_dst.copy_(t_src), repeats=repeats, min_total_s=0).best
    finally:
        torch.set_num_threads(before)
    return CopyFloor(nbytes, copies)


def byte_rowwise_pack(stored: np.ndarray, scale: float):
    """Rows ``q * scale`` (int8 ``q``) in the layout of torch's quantized byte-rowwise ops.

    Each row: ``dim`` uint8 values ``q + 128``, then float32 scale and float32 bias
    (``-128 * scale``), as ``torch.ops.quantized.embedding_bag_byte_prepack`` writes.

    >>> p = byte_rowwise_pack(np.array([[1, -2]], np.int8), 0.5)
    >>> tuple(p.shape), p[0, :2].tolist()
    ((1, 10), [129, 126])
    """
    import torch

    q = np.ascontiguousarray(stored, dtype=np.int8)
    values = (q.astype(np.int16) + 128).astype(np.uint8)
    scale_bias = np.empty((q.shape[0], 2), dtype=np.float32)
    scale_bias[:, 0] = np.float32(scale)
    scale_bias[:, 1] = np.float32(-128.0 * scale)
    packed = np.concatenate([values, scale_bias.view(np.uint8)], axis=1)
    return torch.from_numpy(np.ascontiguousarray(packed))


_OP_NAMES = {
    RowFormat.FP32: "torch fp32 embedding_bag",
    RowFormat.INT8: "torch quantized byte-rowwise embedding_bag (int8)",
    RowFormat.INT32: "torch fp32 embedding_bag on the dequantized int32 rows (torch has no integer bag)",
}


class CpuBaseline:
    """The like-for-like torch CPU computation of a TBE batch over ``tables``.

    ``stored`` are the rows as updlrm stores them (float32, or the quantized ints of
    int8/int32 tables, whose ``TableSpec.scale`` dequantizes them). Calling it pools a
    TBE-layout batch (``offsets[T*B+1]``) and returns the ``(B, sum of dims)`` float32
    output; :meth:`time` times that call.
    """

    def __init__(self, tables: Sequence[TableSpec], stored: Sequence[np.ndarray]) -> None:
        import torch

        if len(tables) != len(stored):
            raise ValueError(f"{len(tables)} tables but {len(stored)} stored arrays")
        self.tables = list(tables)
        self._weights = []
        for spec, rows in zip(self.tables, stored):
            fmt = RowFormat(spec.row_format)
            if fmt is RowFormat.INT8:
                self._weights.append(byte_rowwise_pack(rows, spec.scale))
            elif fmt is RowFormat.INT32:
                values = (np.asarray(rows, dtype=np.float64) * spec.scale).astype(np.float32)
                self._weights.append(torch.from_numpy(values))
            else:
                self._weights.append(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))

    def describe(self) -> str:
        """Which torch operation serves each table."""
        return "; ".join(f"{t.name}: {_OP_NAMES[RowFormat(t.row_format)]}" for t in self.tables)

    def __call__(self, indices, offsets, batch_size: int, per_sample_weights=None, mode: str = "sum") -> np.ndarray:
        import torch

        idx = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
        off = np.ascontiguousarray(offsets, dtype=np.int64)
        psw = (
            None
            if per_sample_weights is None
            else torch.from_numpy(np.ascontiguousarray(per_sample_weights, np.float32))
        )
        if mode not in ("sum", "mean"):
            raise ValueError(f"mode must be 'sum' or 'mean', not {mode!r}")
        outs = []
        for t, (spec, w) in enumerate(zip(self.tables, self._weights)):
            lo, hi = int(off[t * batch_size]), int(off[(t + 1) * batch_size])
            bag_offsets = torch.from_numpy(off[t * batch_size : (t + 1) * batch_size + 1] - lo)
            weights = None if psw is None else psw[lo:hi]
            if RowFormat(spec.row_format) is RowFormat.INT8:
                # The quantized op sums whatever mode it is given (torch 2.13 ignores
                # mode=1), so a mean divides the sums by the bag sizes here.
                pooled = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
                    w, idx[lo:hi], bag_offsets, False, 0, False, weights, None, True
                )
                if mode == "mean":
                    pooled = pooled / torch.diff(bag_offsets).clamp(min=1).unsqueeze(1).to(pooled.dtype)
                outs.append(pooled)
            else:
                outs.append(
                    torch.nn.functional.embedding_bag(
                        idx[lo:hi], w, bag_offsets, mode=mode, include_last_offset=True, per_sample_weights=weights
                    )
                )
        return torch.cat(outs, dim=1).numpy()

    def time(
        self,
        indices,
        offsets,
        batch_size: int,
        per_sample_weights=None,
        mode: str = "sum",
        *,
        repeats: int = MIN_REPEATS,
        thread_counts: Sequence[int] | None = None,
    ) -> tuple[Timing, np.ndarray]:
        """Timing and output of this baseline on one batch.

        Each torch thread count in ``thread_counts`` (default: torch's current count and
        1) is timed; the count with the best time is kept (on a loaded machine a
        preempted thread stalls every parallel region, which one thread avoids). The
        thread count is restored afterwards.
        """
        import torch

        threads = torch.get_num_threads()
        counts = sorted({threads, 1}, reverse=True) if thread_counts is None else list(thread_counts)
        best: Timing | None = None
        out: np.ndarray | None = None
        try:
            for count in counts:
                torch.set_num_threads(int(count))
                holder: list[np.ndarray] = []

                def call(holder: list[np.ndarray] = holder) -> None:  # bound: B023
                    holder.append(self(indices, offsets, batch_size, per_sample_weights, mode))

                timing = time_call(call, repeats=repeats)
                if best is None or timing.best < best.best:
                    best, out = timing, holder[-1]
        finally:
            torch.set_num_threads(threads)
        assert best is not None and out is not None
        return best, out
