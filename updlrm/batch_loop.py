"""The batch loop ``updlrm bench`` and ``updlrm demo`` share, and the CPU references it checks against.

* :func:`torch_embedding_bags`, torch's ``embedding_bag`` on float32 values, and
  :func:`check_close` / :func:`format_verdict` with torch's float32 tolerances;
* :func:`time_torch` and the like-for-like CPU baseline of a module (:func:`baseline_for`);
* :func:`run_batches`: every batch of a trace through a module, timed, next to torch's
  output and the baseline's timing (:class:`BatchRun`), and :func:`mean_timing`.

``updlrm.bench`` re-exports all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from updlrm.baselines import _OP_NAMES, CpuBaseline, Timing
from updlrm.specs import RowFormat, TableSpec

__all__ = [
    "FP32_RTOL",
    "FP32_ATOL",
    "torch_embedding_bags",
    "time_torch",
    "check_close",
    "format_verdict",
    "baseline_for",
    "baseline_name",
    "mean_timing",
    "BatchRun",
    "run_batches",
]

# torch.testing.assert_close's default float32 tolerances (torch documentation,
# "torch.testing.assert_close"): |actual - expected| <= atol + rtol * |expected|.
FP32_RTOL, FP32_ATOL = 1.3e-6, 1e-5


def torch_embedding_bags(weights, indices, offsets, batch_size: int, per_sample_weights=None, mode: str = "sum"):
    """Pool a TBE-layout batch with ``torch.nn.functional.embedding_bag``, one call per table.

    This is what torchrec's ``EmbeddingBagCollection`` does on CPU. ``weights`` are
    float32 torch tensors (one per table); returns a ``(B, sum of dims)`` tensor.

    >>> import torch
    >>> w = [torch.ones(5, 2), torch.arange(6.0).reshape(3, 2)]
    >>> torch_embedding_bags(w, np.array([0, 1, 2, 2]), np.array([0, 2, 2, 3, 4]), 2).tolist()
    [[2.0, 2.0, 4.0, 5.0], [0.0, 0.0, 4.0, 5.0]]
    """
    import torch

    idx = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    psw = None if per_sample_weights is None else torch.from_numpy(np.ascontiguousarray(per_sample_weights, np.float32))
    outs = []
    for t, w in enumerate(weights):
        lo, hi = int(off[t * batch_size]), int(off[(t + 1) * batch_size])
        outs.append(
            torch.nn.functional.embedding_bag(
                idx[lo:hi],
                w,
                torch.from_numpy(off[t * batch_size : (t + 1) * batch_size + 1] - lo),
                mode=mode,
                include_last_offset=True,
                per_sample_weights=None if psw is None else psw[lo:hi],
            )
        )
    return torch.cat(outs, dim=1)


def time_torch(
    weights,
    indices,
    offsets,
    batch_size: int,
    per_sample_weights=None,
    repeats: int = 5,
    min_total_s: float = 0.2,
    max_repeats: int = 100,
    warmup: int = 2,
    thread_counts=None,
):
    """Best wall seconds of :func:`torch_embedding_bags` and its output (numpy).

    For each torch thread count in ``thread_counts`` (default: torch's current count
    and 1): ``warmup`` untimed calls (torch's first calls for a new shape pay one-off
    setup), then at least ``repeats`` timed calls, more until ``min_total_s`` has
    passed (at most ``max_repeats``). The minimum over all is returned, so the CPU gets
    its best showing: on a loaded machine a preempted thread stalls every parallel
    region of a multi-threaded run by a scheduler timeslice, which one thread avoids.
    The thread count is restored afterwards.

    >>> import torch
    >>> s, out = time_torch([torch.ones(4, 2)], np.array([1, 3]), np.array([0, 2]), 1)
    >>> s > 0, out.tolist()
    (True, [[2.0, 2.0]])
    """
    import torch

    threads = torch.get_num_threads()
    counts = sorted({threads, 1}, reverse=True) if thread_counts is None else list(thread_counts)
    best, out = np.inf, None
    try:
        for count in counts:
            torch.set_num_threads(int(count))
            for _ in range(max(0, warmup)):
                torch_embedding_bags(weights, indices, offsets, batch_size, per_sample_weights)
            spent, runs = 0.0, 0
            while runs < max(1, repeats) or (spent < min_total_s and runs < max_repeats):
                t0 = time.perf_counter()
                out = torch_embedding_bags(weights, indices, offsets, batch_size, per_sample_weights)
                took = time.perf_counter() - t0
                best, spent, runs = min(best, took), spent + took, runs + 1
    finally:
        torch.set_num_threads(threads)
    if out is None:
        raise ValueError("thread_counts is empty: give at least one torch thread count")
    return best, out.numpy()


def check_close(actual: np.ndarray, expected: np.ndarray) -> tuple[float, bool]:
    """(max abs error, within torch's float32 ``assert_close`` tolerance everywhere).

    >>> err, ok = check_close(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]))
    >>> round(err, 9), ok
    (1e-07, True)
    """
    err = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    bound = FP32_ATOL + FP32_RTOL * np.abs(np.asarray(expected, dtype=np.float64))
    return float(err.max(initial=0.0)), bool(np.all(err <= bound))


def format_verdict(max_abs_err: float, passed: bool) -> str:
    """The PASS/FAIL line against torch.

    >>> format_verdict(1e-6, True).split()[-1]
    'PASS'
    """
    return f"  max abs err vs torch: {max_abs_err:.3g} (tolerance {FP32_ATOL:g} + {FP32_RTOL:g} x |expected|)   " + (
        "PASS" if passed else "FAIL"
    )


def baseline_for(module: Any) -> CpuBaseline:
    """The like-for-like CPU baseline of a TBE module: its tables, on the rows it stores.

    >>> from updlrm import TableBatchedEmbeddingBags
    >>> with TableBatchedEmbeddingBags([TableSpec("a", 50, 4, row_format="int8")], backend="emulator", nr_dpus=1) as tbe:
    ...     baseline_name(baseline_for(tbe).tables)
    'torch quantized byte-rowwise embedding_bag (int8)'
    """
    return CpuBaseline(module.tables, module._stored)


def baseline_name(tables: Sequence[TableSpec]) -> str:
    """The torch operation(s) the baseline of ``tables`` runs, one per row format present.

    >>> baseline_name([TableSpec("a", 4, 2), TableSpec("b", 4, 2, row_format="int32")])
    'torch fp32 embedding_bag; torch fp32 embedding_bag on the dequantized int32 rows (torch has no integer bag)'
    """
    formats = sorted({RowFormat(t.row_format) for t in tables}, key=lambda f: list(RowFormat).index(f))
    return "; ".join(_OP_NAMES[f] for f in formats)


def mean_timing(timings: Sequence[Timing]) -> Timing:
    """One batch's timing from several batches' (each resampled at the fewest runs' quantiles, then averaged).

    Best, median and worst of the result are the batches' means of theirs.

    >>> t = mean_timing([Timing((1.0, 2.0, 3.0, 4.0, 5.0)), Timing((3.0,) * 7)])
    >>> t.best, t.median, t.worst, len(t.samples)
    (2.0, 3.0, 4.0, 5)
    """
    if not timings:
        raise ValueError("mean_timing needs at least one timing")
    k = min(len(t.samples) for t in timings)
    grid = np.linspace(0.0, 1.0, k)
    rows = [np.quantile(np.sort(np.asarray(t.samples)), grid) for t in timings]
    return Timing(tuple(float(x) for x in np.mean(rows, axis=0)))


@dataclass
class BatchRun:
    """One batch of a trace, run through a module and through torch.

    ``output``/``wall_s``: the module's output and the wall seconds of its call;
    ``stats``: its ``last_stats`` after the call; ``reference``: torch's float32 output
    on the same (dequantized) weights; ``torch``: the like-for-like baseline's timing
    (:meth:`CpuBaseline.time <updlrm.baselines.CpuBaseline.time>`), ``torch_s`` its best.
    """

    index: int
    indices: np.ndarray
    offsets: np.ndarray
    per_sample_weights: np.ndarray | None
    output: np.ndarray
    wall_s: float
    stats: Any
    reference: np.ndarray
    torch: Timing

    @property
    def torch_s(self) -> float:
        return self.torch.best


def run_batches(
    module: Callable[..., Any],
    trace: Any,
    weights: Sequence[Any],
    progress: Callable[[str], None] | None = None,
    baseline: CpuBaseline | None = None,
) -> Iterator[BatchRun]:
    """Every batch of ``trace`` through ``module`` (a TBE module) and through torch on ``weights``, one at a time.

    ``weights`` (float32 torch tensors) give the reference output; ``baseline`` is
    timed (default: :func:`baseline_for` the module when it has tables, else fp32
    ``embedding_bag`` on ``weights``).  ``progress`` gets a line per batch.

    >>> import torch
    >>> from updlrm import TableBatchedEmbeddingBags
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 50, 4)]
    >>> with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=2) as tbe:
    ...     runs = list(run_batches(tbe, synthetic_trace(tables, batch_size=4, num_batches=2, pooling=3),
    ...                             [torch.from_numpy(tbe.weights(0))]))
    >>> len(runs), all(check_close(r.output, r.reference)[1] for r in runs)
    (2, True)
    """
    say = progress or (lambda msg: None)
    if baseline is None:
        if hasattr(module, "tables") and hasattr(module, "_stored"):
            baseline = baseline_for(module)
        else:
            baseline = CpuBaseline(
                [TableSpec(f"t{i}", int(w.shape[0]), int(w.shape[1])) for i, w in enumerate(weights)],
                [np.asarray(w) for w in weights],
            )
    for i, (idx, off, psw) in enumerate(trace.batches()):
        say(f"batch {i + 1}/{trace.num_batches}: {idx.size:,} lookups")
        t0 = time.perf_counter()
        out = module(idx, off, psw)
        wall_s = time.perf_counter() - t0
        stats = module.last_stats  # type: ignore[attr-defined]
        reference = torch_embedding_bags(weights, idx, off, trace.batch_size, psw).numpy()
        timing, _ = baseline.time(idx, off, trace.batch_size, psw)
        yield BatchRun(i, idx, off, psw, out, wall_s, stats, reference, timing)
