"""The planner's host-CPU cost model, calibrated on the machine at plan time.

The planner chooses per table (and per hottest-row prefix, the host cache) between the
DPUs and the host CPU.  For that it needs what a lookup costs on *this* host, per row
format, embedding dimension and table size -- not a datasheet bandwidth.
:func:`calibrate` measures it with a short microbenchmark of the like-for-like torch
CPU op of each format (:class:`updlrm.baselines.CpuBaseline`: fp32 ``embedding_bag``,
int8 torch's quantized byte-rowwise bag, int32 ``embedding_bag`` on the dequantized rows):

* per format, a fixed cost per table call (one bag of one lookup);
* per format, dims :data:`DIMS` and table sizes :data:`TABLE_BYTES` (one that stays in
  the caches, one well past this host's last-level cache), seconds per lookup of a
  batch of uniform random lookups (the working set is the whole table).

A table's cost is ``fixed + lookups x per-lookup(format, dim, working set)``: linear
in the dimension between the two measured dims, log-linear in the working-set bytes
between the two sizes (clamped outside).  Measuring takes a second or two; the result
is cached per machine (CPU model, torch version, torch threads) under
``$UPDLRM_CACHE_DIR`` (default ``~/.cache/updlrm``) and stored in the plan's metadata
(:meth:`HostCostModel.to_dict`), so a plan says what it assumed.

Example:
    >>> from updlrm.specs import TableSpec
    >>> m = HostCostModel.from_dict({"machine": "example", "fixed_s": {"fp32": 1e-5},
    ...     "per_lookup_s": {"fp32": [[16, 65536, 1e-8], [16, 268435456, 4e-8],
    ...                               [128, 65536, 4e-8], [128, 268435456, 1.6e-7]]}})
    >>> round(m.seconds(TableSpec("a", 1000, 16), lookups=1000, working_set_bytes=65536) * 1e6, 3)
    20.0
    >>> m.seconds(TableSpec("a", 1000, 16), lookups=0)
    0.0
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from updlrm.baselines import cpu_model
from updlrm.specs import RowFormat, TableSpec

__all__ = ["DIMS", "TABLE_BYTES", "HostCostModel", "calibrate", "cpu_model", "default_cache_dir"]

DIMS = (16, 128)
# A table that stays in the L2/L3 caches and one past this host's last-level cache
# (an AMD EPYC here; 64 MB is past the L3 a core's complex can use).
TABLE_BYTES = (1 << 18, 1 << 26)
BATCH, POOLING = 512, 32  # the microbenchmark's batch: 16,384 lookups
_VERSION = 1  # bump when the grid or the method changes (invalidates caches)


def default_cache_dir() -> Path:
    """Where calibrations are cached: ``$UPDLRM_CACHE_DIR`` or ``~/.cache/updlrm``.

    >>> default_cache_dir().name in ("updlrm",) or "UPDLRM_CACHE_DIR" in os.environ
    True
    """
    env = os.environ.get("UPDLRM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "updlrm"


@dataclass(frozen=True)
class HostCostModel:
    """Seconds the host CPU needs for a table's lookups (see the module doc for the method).

    ``fixed_s[fmt]``: one table call; ``per_lookup_s[fmt]``: ``(dim, table_bytes,
    seconds per lookup)`` points.  ``machine``, ``threads``, ``torch`` and
    ``measured_at`` say where and when it was measured; ``source`` is ``measured``,
    ``cached`` or ``given``.
    """

    machine: str
    fixed_s: dict[str, float]
    per_lookup_s: dict[str, list[tuple[float, float, float]]]
    threads: int = 1
    torch: str = ""
    measured_at: str = ""
    calibration_s: float = 0.0
    source: str = "given"
    ops: dict[str, str] = field(default_factory=dict)

    def lookup_seconds(self, row_format: str, dim: int, working_set_bytes: float) -> float:
        """Seconds per lookup of a ``row_format`` table of ``dim`` whose lookups touch ``working_set_bytes``.

        >>> m = HostCostModel("x", {"fp32": 0.0}, {"fp32": [(16, 1e3, 1e-9), (16, 1e5, 3e-9)]})
        >>> [round(m.lookup_seconds("fp32", 16, ws) * 1e9, 3) for ws in (10, 1e3, 1e4, 1e5, 1e9)]
        [1.0, 1.0, 2.0, 3.0, 3.0]
        """
        fmt = RowFormat(row_format).value
        points = self.per_lookup_s.get(fmt) or self.per_lookup_s[RowFormat.FP32.value]
        dims = sorted({p[0] for p in points})
        sizes = sorted({p[1] for p in points})
        grid = {(p[0], p[1]): p[2] for p in points}

        def at_size(size: float) -> float:
            # Linear in dim between the measured dims (extrapolated, never below 0).
            if len(dims) == 1:
                return grid[(dims[0], size)] * dim / dims[0]
            d0, d1 = dims[0], dims[-1]
            s0, s1 = grid[(d0, size)], grid[(d1, size)]
            return max(s0 + (s1 - s0) * (dim - d0) / (d1 - d0), s0 * min(1.0, dim / d0))

        ws = float(min(max(working_set_bytes, sizes[0]), sizes[-1]))
        if len(sizes) == 1 or ws <= sizes[0]:
            return at_size(sizes[0])
        lo = max(s for s in sizes if s <= ws)
        hi = min(s for s in sizes if s >= ws)
        if lo == hi:
            return at_size(lo)
        w = (math.log(ws) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return at_size(lo) * (1 - w) + at_size(hi) * w

    def seconds(self, spec: TableSpec, lookups: float, working_set_bytes: float | None = None) -> float:
        """Host seconds for ``lookups`` lookups of table ``spec`` (0 for none).

        ``working_set_bytes``: the bytes of the rows the lookups touch (default: the
        whole table).
        """
        if lookups <= 0:
            return 0.0
        fmt = spec.row_format.value
        ws = spec.num_embeddings * spec.row_bytes() if working_set_bytes is None else working_set_bytes
        fixed = self.fixed_s.get(fmt, self.fixed_s.get(RowFormat.FP32.value, 0.0))
        return float(fixed + lookups * self.lookup_seconds(fmt, spec.embedding_dim, ws))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``plan.metadata["host_cpu"]["model"]`` stores); :meth:`from_dict` reads it back.

        >>> m = HostCostModel("x", {"fp32": 1e-6}, {"fp32": [(16, 1e3, 1e-9)]})
        >>> HostCostModel.from_dict(m.to_dict()) == m
        True
        """
        return {
            "machine": self.machine,
            "threads": self.threads,
            "torch": self.torch,
            "measured_at": self.measured_at,
            "calibration_s": self.calibration_s,
            "source": self.source,
            "ops": dict(self.ops),
            "fixed_s": dict(self.fixed_s),
            "per_lookup_s": {k: [list(p) for p in v] for k, v in self.per_lookup_s.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HostCostModel:
        return cls(
            machine=str(d["machine"]),
            fixed_s={k: float(v) for k, v in d["fixed_s"].items()},
            per_lookup_s={k: [(float(a), float(b), float(c)) for a, b, c in v] for k, v in d["per_lookup_s"].items()},
            threads=int(d.get("threads", 1)),
            torch=str(d.get("torch", "")),
            measured_at=str(d.get("measured_at", "")),
            calibration_s=float(d.get("calibration_s", 0.0)),
            source=str(d.get("source", "given")),
            ops=dict(d.get("ops", {})),
        )

    def describe(self) -> str:
        """One line: where it was measured and the per-lookup cost of each format at dim 64.

        >>> HostCostModel("cpu X", {"fp32": 1e-5}, {"fp32": [(64, 1e6, 2e-8)]}).describe()
        'host cost model (given) on cpu X, 1 thread(s): fp32 20.0 ns/lookup (dim 64, cached) .. 20.0 ns (past the LLC)'
        """
        parts = []
        for fmt in sorted(self.per_lookup_s):
            small = self.lookup_seconds(fmt, 64, TABLE_BYTES[0]) * 1e9
            big = self.lookup_seconds(fmt, 64, TABLE_BYTES[-1]) * 1e9
            parts.append(f"{fmt} {small:.1f} ns/lookup (dim 64, cached) .. {big:.1f} ns (past the LLC)")
        return f"host cost model ({self.source}) on {self.machine}, {self.threads} thread(s): " + "; ".join(parts)


def _cache_key(threads: int) -> str:
    import torch

    return json.dumps([_VERSION, cpu_model(), torch.__version__, threads, DIMS, TABLE_BYTES, BATCH, POOLING])


def _measure(fmt: RowFormat, rows: int, dim: int, lookups_per_bag: int, bags: int, rng: np.random.Generator) -> float:
    from updlrm.baselines import CpuBaseline

    spec = TableSpec("probe", rows, dim, row_format=fmt, scale=0.01 if fmt is not RowFormat.FP32 else 1.0)
    if fmt is RowFormat.INT8:
        stored = np.full((rows, dim), 3, dtype=np.int8)
    elif fmt is RowFormat.INT32:
        stored = np.full((rows, dim), 3, dtype=np.int32)
    else:
        stored = np.full((rows, dim), 0.5, dtype=np.float32)
    import torch

    from updlrm.baselines import time_call

    base = CpuBaseline([spec], [stored])
    idx = rng.integers(0, rows, size=bags * lookups_per_bag)
    off = np.arange(bags + 1, dtype=np.int64) * lookups_per_bag
    # As CpuBaseline.time: torch's thread count and 1, the better kept; best of 5 each,
    # without the baseline's 0.2 s floor (the whole calibration stays near a second).
    threads = torch.get_num_threads()
    best = math.inf
    try:
        for count in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(count)
            best = min(best, time_call(lambda: base(idx, off, bags), min_total_s=0.0).best)
    finally:
        torch.set_num_threads(threads)
    return best


def calibrate(*, cache: bool = True, cache_dir: str | os.PathLike | None = None, seed: int = 0) -> HostCostModel:
    """Measure (or load this machine's cached) :class:`HostCostModel`.

    A cached calibration is reused when the CPU model, torch version, torch threads
    and the method match; ``cache=False`` measures afresh (and does not write).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> m = calibrate(cache_dir=d)
    >>> m.source, calibrate(cache_dir=d).source, m.seconds(TableSpec("a", 10**6, 64), 16384) > 0
    ('measured', 'cached', True)
    """
    import torch

    threads = torch.get_num_threads()
    key = _cache_key(threads)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file = path / "host_cost.json"
    if cache and file.exists():
        try:
            doc = json.loads(file.read_text())
            if doc.get("key") == key:
                return HostCostModel.from_dict({**doc["model"], "source": "cached"})
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable cache is measured again and rewritten
    from updlrm.baselines import _OP_NAMES

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    fixed: dict[str, float] = {}
    per_lookup: dict[str, list[tuple[float, float, float]]] = {}
    for fmt in RowFormat:
        fixed[fmt.value] = _measure(fmt, 64, 16, 1, 1, rng)
        points = []
        for dim in DIMS:
            row_bytes = TableSpec("probe", 1, dim, row_format=fmt).row_bytes()
            for nbytes in TABLE_BYTES:
                rows = max(64, nbytes // row_bytes)
                best = _measure(fmt, rows, dim, POOLING, BATCH, rng)
                points.append(
                    (float(dim), float(rows * row_bytes), max(best - fixed[fmt.value], 0.0) / (BATCH * POOLING))
                )
        per_lookup[fmt.value] = points
    model = HostCostModel(
        machine=cpu_model(),
        fixed_s=fixed,
        per_lookup_s=per_lookup,
        threads=threads,
        torch=torch.__version__,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        calibration_s=time.perf_counter() - started,
        source="measured",
        ops={fmt.value: _OP_NAMES[fmt] for fmt in RowFormat},
    )
    if cache:
        try:
            path.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"key": key, "model": model.to_dict()}, indent=1))
            tmp.replace(file)
        except OSError:
            pass  # a read-only home: the calibration is just not reused
    return model


def plan_host_seconds(plan, trace, host_cost: HostCostModel, batch_size: int | None = None) -> float:
    """Calibrated host seconds per batch of ``plan``'s host rows (host tables and host cache) on ``trace``.

    Per table: the mean lookups per batch that hit its host rows, at the cost of a
    working set of the distinct host rows the trace touches.  ``batch_size`` rescales
    to another batch size (default: the trace's).

    >>> from updlrm.plan import Plan
    >>> from updlrm.specs import Topology
    >>> from updlrm.partitioner.workloads import Trace
    >>> spec = TableSpec("a", 8, 4)
    >>> p = Plan([spec], Topology(1), [], host_rows={0: np.arange(8)})
    >>> m = HostCostModel("x", {"fp32": 0.0}, {"fp32": [(4, 1.0, 1e-9)]})
    >>> round(plan_host_seconds(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])), m) * 1e9, 6)
    3.0
    """
    from updlrm.partitioner.routing import host_mask

    scale = (trace.batch_size if batch_size is None else batch_size) / trace.batch_size
    total = 0.0
    for t, spec in enumerate(plan.tables):
        if not len(plan.host_rows.get(t, ())):
            continue
        rows, _bags = trace.table_lookups(t)
        rows = np.asarray(rows, dtype=np.int64)
        hits = rows[host_mask(plan, t, rows)]
        if hits.size == 0:
            continue
        touched = np.unique(hits).size
        total += host_cost.seconds(spec, hits.size * scale / trace.num_batches, touched * spec.row_bytes())
    return total


def apply_host_cost(report, plan, trace, host_cost: HostCostModel | None = None, batch_size: int | None = None):
    """``report`` (a :class:`~updlrm.partitioner.evaluate.PlanReport` of ``plan`` on ``trace``) with its host phase
    priced by ``host_cost`` (default: the model recorded in ``plan.metadata["host_cpu"]``; unchanged without one).

    A plan without shards (CPU only) has no DPU phase at all.

    >>> from updlrm.plan import Plan
    >>> from updlrm.specs import Topology
    >>> from updlrm.partitioner.evaluate import evaluate_plan
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = Plan([TableSpec("a", 8, 4)], Topology(1), [], host_rows={0: np.arange(8)})
    >>> tr = Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3]))
    >>> r = apply_host_cost(evaluate_plan(p, tr), p, tr, HostCostModel("x", {"fp32": 0.0}, {"fp32": [(4, 1.0, 1e-9)]}))
    >>> round(r.modeled.total_s * 1e9, 6), r.modeled.dpu_s
    (3.0, 0.0)
    """
    import dataclasses

    from updlrm import perfmodel

    if host_cost is None:
        recorded = plan.metadata.get("host_cpu", {}).get("model") if plan.metadata else None
        if recorded is None:
            return report
        host_cost = HostCostModel.from_dict(recorded)
    host_s = plan_host_seconds(plan, trace, host_cost, batch_size)
    if plan.shards:
        report.modeled = dataclasses.replace(report.modeled, host_cache_s=host_s)
    else:
        report.modeled = perfmodel.PhaseTimes(0.0, 0.0, 0.0, 0.0, 0.0, host_s, np.zeros(plan.topology.nr_dpus))
    return report
