"""Per-batch profiles: what a batch took here, and what it would take on UPMEM hardware.

Three pieces, used by ``updlrm bench``, ``updlrm demo`` and ``benchmarks/bench_sweeps.py``:

* :class:`BatchProfile` / :func:`profile_batch`: for one batch, the host phases the
  engine measured (``BatchStats``) next to the phases :mod:`updlrm.perfmodel` gives
  for the batch's exact per-DPU work on a chosen hardware profile, with the bytes
  moved each way and the host-cache hits.
* :func:`derive_work`: the exact :class:`~updlrm.perfmodel.BatchWork` the engine would
  produce for a batch under *any* plan, computed from the plan's routing rule
  (:mod:`updlrm.partitioner.routing`) and the host runtime's accounting
  (``host/eb_host.c``: segments, per-tasklet partial sums, header and status bytes),
  without running a single DPU. This is how the sweeps reach 2,560 DPUs while the
  emulator runs 64; on every emulated run the derivation is checked against the
  engine's own counters (:func:`work_mismatch`).
* One table printer (:func:`format_phase_table`, :func:`format_seconds`,
  :func:`format_bytes`) shared with ``updlrm demo``.

Example:
    >>> import numpy as np
    >>> from updlrm import TableBatchedEmbeddingBags, TableSpec
    >>> tbe = TableBatchedEmbeddingBags([TableSpec("a", 100, 8)], backend="emulator", nr_dpus=2)
    >>> _ = tbe(np.array([1, 2, 3]), np.array([0, 2, 3]))
    >>> p = profile_batch(tbe, "upmem-350mhz-2556")
    >>> p.nr_dpus, p.modeled.total_s > 0, int(p.lookups_per_dpu.sum())
    (2, True, 3)
    >>> work_mismatch(derive_work(tbe.plan, np.array([1, 2, 3]), np.array([0, 2, 3])), tbe.last_stats.work())
    []
    >>> tbe.close()
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import click
import numpy as np

from updlrm import abi, perfmodel
from updlrm.plan import Plan, PlanError, format_bytes, uniform_plan
from updlrm.specs import RowFormat, TableSpec, Topology

__all__ = [
    "BatchProfile",
    "profile_batch",
    "profile_work",
    "derive_work",
    "work_mismatch",
    "bench_plan",
    "torch_embedding_bags",
    "time_torch",
    "check_close",
    "BenchResult",
    "run_bench",
    "format_bench",
    "format_phase_table",
    "format_seconds",
    "format_bytes",
    "PHASES",
    "DEFAULT_PROFILE",
    "bench_command",
]

DEFAULT_PROFILE = "upmem-350mhz-2556"

# torch.testing.assert_close's default float32 tolerances (torch documentation,
# "torch.testing.assert_close"): |actual - expected| <= atol + rtol * |expected|.
FP32_RTOL, FP32_ATOL = 1.3e-6, 1e-5

# ---------------------------------------------------------------------------- the C runtime's accounting
# Record sizes come from the ABI mirror (updlrm.abi, checked against the header by
# tests/test_abi.py); should the engine's accounting change, the engine-vs-derivation
# tests (tests/profile) fail rather than drift silently.


def _pad8(n):
    return (np.asarray(n, dtype=np.int64) + 7) // 8 * 8


def _dominant_format(tables: list[TableSpec]) -> str:
    # The engine's rule (host/engine.py, Engine._dominant_format): the format with the most rows.
    count: dict[str, int] = {}
    for spec in tables:
        count[spec.row_format.value] = count.get(spec.row_format.value, 0) + spec.num_embeddings
    return max(count, key=count.get)


def derive_work(plan: Plan, indices, offsets, per_sample_weights=None, *, nr_tasklets: int = 16,
                router_cache: dict | None = None) -> perfmodel.BatchWork:
    """The engine's ``BatchStats.work()`` for one batch under ``plan``, without running DPUs.

    Each lookup is routed by the plan's rule (host-cached rows to the host, else the
    holder ``bag mod replicas`` of its row, per column slice; see
    :mod:`updlrm.partitioner.routing`), then counted as ``host/eb_host.c`` counts it:
    consecutive lookups of one bag on one shard form a segment; each DPU's lookups are
    cut into ``nr_tasklets`` equal ranges and every (tasklet, segment) overlap yields
    one partial sum; a DPU receives header + local rows (+ weights) + segment records
    and returns a status block + its partial sums. Assumes the batch fits one launch
    (raises :class:`~updlrm.plan.PlanError` when the engine would have to split it).

    ``router_cache`` (a dict the caller keeps) reuses routing tables across batches of
    the same plan.

    >>> from updlrm.specs import TableSpec, Topology
    >>> plan = uniform_plan([TableSpec("t", 10, 4)], Topology(nr_dpus=2), "row_wise")
    >>> w = derive_work(plan, np.array([0, 1, 9]), np.array([0, 2, 3]))
    >>> w.lookups.tolist(), w.output_bytes.tolist(), w.host_merge_elems   # 2 + 1 partials of 16 B, 24 B status
    ([2.0, 1.0], [56.0, 40.0], 12)
    """
    from updlrm.partitioner.routing import SliceRouter, column_slices, host_mask

    tables = plan.tables
    n = plan.topology.nr_dpus
    nr_tables = len(tables)
    nr_tasklets = abi.check_nr_tasklets(nr_tasklets)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or (offsets.size - 1) % nr_tables:
        raise ValueError(f"offsets has {offsets.size} entries; expected T*B+1 with T={nr_tables}")
    if offsets[0] != 0 or offsets[-1] != indices.size or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0, be non-decreasing and end at len(indices)")
    weighted = per_sample_weights is not None
    batch = (offsets.size - 1) // nr_tables
    dpu_of_shard = np.array([s.dpu for s in plan.shards], dtype=np.int64)
    cache = {} if router_cache is None else router_cache

    keys, slice_dims, slice_partial, slice_rowbytes = [], [], [], []
    host_hits = 0
    host_bytes = 0
    g = 0  # global slice number, in the engine's order: tables, then their column slices
    slices_total = sum(len(column_slices(plan, t)) for t in range(nr_tables))
    for t, spec in enumerate(tables):
        lo_i, hi_i = int(offsets[t * batch]), int(offsets[(t + 1) * batch])
        rows = indices[lo_i:hi_i]
        if rows.size and (rows.min() < 0 or rows.max() >= spec.num_embeddings):
            raise ValueError(f"table {spec.name}: an index is outside [0, {spec.num_embeddings})")
        bags = np.repeat(np.arange(batch, dtype=np.int64), np.diff(offsets[t * batch:(t + 1) * batch + 1]))
        on_host = host_mask(plan, t, rows)
        hits = int(np.count_nonzero(on_host))
        host_hits += hits
        host_bytes += hits * spec.embedding_dim * spec.row_format.element_bytes
        if hits:
            rows, bags = rows[~on_host], bags[~on_host]
        for lo, hi in column_slices(plan, t):
            dim = hi - lo
            slice_dims.append(dim)
            slice_partial.append(abi.partial_bytes(spec.row_format.abi_code, weighted, dim))
            slice_rowbytes.append(abi.row_bytes(spec.row_format.abi_code, dim))
            if rows.size:
                router = cache.get((t, lo))
                if router is None:
                    router = cache[(t, lo)] = SliceRouter(plan, t, lo)
                shard = router.route_shards(rows, bags)
                keys.append((dpu_of_shard[shard] * slices_total + g) * batch + bags)
            g += 1
    slice_dims = np.asarray(slice_dims, dtype=np.int64)
    slice_partial = np.asarray(slice_partial, dtype=np.int64)
    slice_rowbytes = np.asarray(slice_rowbytes, dtype=np.int64)

    key = np.concatenate(keys) if keys else np.empty(0, np.int64)
    # Sorted unique keys are the segments in the engine's order: DPU, then table/slice, then bag.
    seg_key, seg_len = np.unique(key, return_counts=True)
    seg_dpu = seg_key // (slices_total * batch)
    seg_slice = (seg_key // batch) % slices_total
    lookups = np.bincount(seg_dpu, weights=seg_len, minlength=n).astype(np.int64)
    segments = np.bincount(seg_dpu, minlength=n).astype(np.int64)
    reduce_elems = np.bincount(seg_dpu, weights=seg_len * slice_dims[seg_slice], minlength=n)
    gathered = np.bincount(seg_dpu, weights=seg_len * slice_rowbytes[seg_slice], minlength=n)
    if lookups.max(initial=0) > abi.MAX_LOOKUPS_PER_LAUNCH:
        raise PlanError(f"a DPU gets {int(lookups.max())} lookups, more than one launch takes; "
                        "the engine would split this batch")

    # Tasklet k of DPU d takes its lookups [total*k/T, total*(k+1)/T): each segment it
    # overlaps gives one partial sum (plan_transfers in host/eb_host.c).
    seg_end = np.cumsum(seg_len)
    dpu_base = np.concatenate(([0], np.cumsum(lookups)[:-1]))
    k = np.arange(nr_tasklets, dtype=np.int64)
    lo = dpu_base[:, None] + lookups[:, None] * k // nr_tasklets
    hi = dpu_base[:, None] + lookups[:, None] * (k + 1) // nr_tasklets
    busy = hi > lo
    first = np.searchsorted(seg_end, lo[busy], side="right")
    last = np.searchsorted(seg_end, hi[busy] - 1, side="right")
    partial_prefix = np.concatenate(([0], np.cumsum(slice_partial[seg_slice])))
    dim_prefix = np.concatenate(([0], np.cumsum(slice_dims[seg_slice])))
    owner = np.broadcast_to(np.arange(n)[:, None], lo.shape)[busy]
    out_bytes = np.bincount(owner, weights=partial_prefix[last + 1] - partial_prefix[first], minlength=n)
    merge_elems = int((dim_prefix[last + 1] - dim_prefix[first]).sum())

    in_bytes = (abi.HEADER_BYTES + _pad8(lookups * abi.LOCAL_ROW_BYTES)
                + (_pad8(lookups * abi.WEIGHT_BYTES) if weighted else 0) + segments * abi.SEGMENT_BYTES)
    out_bytes = out_bytes.astype(np.int64) + abi.STATUS_BYTES
    static = plan.mram_bytes_per_dpu() + abi.SHARD_BYTES * np.bincount(dpu_of_shard, minlength=n)
    batch_offset = int(_pad8(static.max(initial=0)))
    per_rank = plan.topology.dpus_per_rank
    ranks = -(-n // per_rank)
    pad = np.zeros(ranks * per_rank, dtype=np.int64)
    pad[:n] = in_bytes
    rank_in = pad.reshape(ranks, per_rank).max(axis=1)
    pad[:n] = out_bytes
    rank_out = pad.reshape(ranks, per_rank).max(axis=1)
    if batch_offset + int((rank_in + rank_out).max(initial=0)) > plan.topology.mram_bytes_per_dpu:
        raise PlanError("the batch's inputs and outputs do not fit the MRAM left after the rows; "
                        "the engine would split this batch into several launches")
    row_bytes = np.divide(gathered, lookups, out=np.zeros(n), where=lookups > 0)
    return perfmodel.BatchWork(
        lookups=lookups, row_bytes=row_bytes, index_bytes=in_bytes, output_bytes=out_bytes,
        reduce_elems=reduce_elems, row_format=_dominant_format(tables), weighted=weighted,
        nr_tasklets=int(nr_tasklets), host_merge_elems=merge_elems, host_cache_lookups=host_hits,
        host_cache_row_bytes=int(round(host_bytes / host_hits)) if host_hits else 0)


def work_mismatch(a: perfmodel.BatchWork, b: perfmodel.BatchWork) -> list[str]:
    """Names of the fields in which two ``BatchWork`` differ (empty: identical).

    >>> w = perfmodel.BatchWork.uniform(nr_dpus=2, lookups=3, row_bytes=8, index_bytes=8, output_bytes=8)
    >>> work_mismatch(w, w)
    []
    """
    diff = []
    for name in ("lookups", "row_bytes", "index_bytes", "output_bytes", "reduce_elems"):
        x, y = getattr(a, name), getattr(b, name)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-12, atol=0):
            diff.append(name)
    for name in ("row_format", "weighted", "nr_tasklets", "host_merge_elems", "host_cache_lookups",
                 "host_cache_row_bytes"):
        if getattr(a, name) != getattr(b, name):
            diff.append(name)
    return diff


def bench_plan(tables: list[TableSpec], nr_dpus: int) -> Plan:
    """The plan ``updlrm bench`` and the sweeps use for ``nr_dpus`` DPUs.

    Row-wise, each table cut into equal row blocks over its share ``nr_dpus // T`` of
    the DPUs (the API's default plan): a bag's partial sums come back from few DPUs.

    >>> p = bench_plan([TableSpec("a", 100, 8), TableSpec("b", 100, 8)], 4)
    >>> sorted({(s.table, s.dpu) for s in p.shards})
    [(0, 0), (0, 1), (1, 2), (1, 3)]
    """
    return uniform_plan(list(tables), Topology(nr_dpus=int(nr_dpus)), "row_wise",
                        dpus_per_table=max(1, int(nr_dpus) // len(tables)))


# ---------------------------------------------------------------------------- profiles

# (label, measured key (BatchStats field or .extra key), modeled PhaseTimes fields)
PHASES = [
    ("validate", "validate_s", ()),
    ("route + pack", "route_s", ()),
    ("CPU->DPU push", "push_s", ("cpu_to_dpu_s",)),
    ("launch + kernel", "launch_s", ("launch_s", "kernel_s")),
    ("DPU->CPU pull", "pull_s", ("dpu_to_cpu_s",)),
    ("merge partials", "merge_s", ("host_merge_s",)),
    ("host-cache rows*", "host_cache_s", ("host_cache_s",)),
]


def _measured_phase(stats, key: str) -> float:
    if key in stats.extra:
        return float(stats.extra[key])
    return float(getattr(stats, key)) if hasattr(stats, key) else 0.0


def _padded_total(per_dpu: np.ndarray, per_rank: int) -> int:
    n = per_dpu.size
    ranks = -(-n // per_rank)
    pad = np.zeros(ranks * per_rank)
    pad[:n] = per_dpu
    rank_max = pad.reshape(ranks, per_rank).max(axis=1)
    return int((rank_max * np.minimum(per_rank, n - per_rank * np.arange(ranks))).sum())


@dataclass
class BatchProfile:
    """One batch: measured host phases, modeled hardware phases, bytes, cache hits.

    ``measured_s`` maps the ``PHASES`` keys (plus ``total_s``) to this machine's wall
    seconds, or is empty for a derived batch that never ran. ``modeled`` is the
    :class:`~updlrm.perfmodel.PhaseTimes` of the batch's exact work on ``profile``
    with ``nr_dpus`` DPUs. Bytes are per batch, summed over DPUs; ``*_padded`` count
    what parallel transfers move (every buffer of a rank padded to its largest).

    >>> w = perfmodel.BatchWork.uniform(nr_dpus=2, lookups=10, row_bytes=64, index_bytes=656, output_bytes=280)
    >>> p = profile_work(w, "upmem-350mhz-2556")
    >>> p.bytes_to_dpu, p.measured_s, p.modeled.kernel_s > 0
    (1312, {}, True)
    """

    profile: str
    nr_dpus: int
    work: perfmodel.BatchWork
    modeled: perfmodel.PhaseTimes
    measured_s: dict = field(default_factory=dict)
    bytes_to_dpu: int = 0
    bytes_from_dpu: int = 0
    padded_bytes_to_dpu: int = 0
    padded_bytes_from_dpu: int = 0
    host_cache_hits: int = 0
    nr_lookups: int = 0

    @property
    def lookups_per_dpu(self) -> np.ndarray:
        return self.work.lookups

    @property
    def imbalance(self) -> float:
        """Max over mean lookups per DPU (1.0 is perfect balance; the slowest DPU sets the pace)."""
        mean = float(self.work.lookups.mean())
        return float(self.work.lookups.max() / mean) if mean > 0 else 1.0

    def modeled_phase(self, fields: tuple[str, ...]) -> float | None:
        """Sum of modeled ``PhaseTimes`` fields, None for a phase the model does not cover."""
        if not fields:
            return None
        d = self.modeled.as_dict()
        return float(sum(d[f] for f in fields))

    def to_dict(self) -> dict:
        """JSON-ready scalars.

        >>> w = perfmodel.BatchWork.uniform(nr_dpus=1, lookups=1, row_bytes=8, index_bytes=8, output_bytes=8)
        >>> sorted(profile_work(w, "upmem-350mhz-2556").to_dict())[:3]
        ['bytes_from_dpu', 'bytes_to_dpu', 'host_cache_hits']
        """
        modeled = {k: v for k, v in self.modeled.as_dict().items() if v is not None}
        return {
            "profile": self.profile, "nr_dpus": self.nr_dpus, "measured_s": dict(self.measured_s),
            "modeled_s": modeled, "bytes_to_dpu": self.bytes_to_dpu, "bytes_from_dpu": self.bytes_from_dpu,
            "padded_bytes_to_dpu": self.padded_bytes_to_dpu, "padded_bytes_from_dpu": self.padded_bytes_from_dpu,
            "host_cache_hits": self.host_cache_hits, "nr_lookups": self.nr_lookups,
            "lookups_per_dpu_mean": float(self.work.lookups.mean()),
            "lookups_per_dpu_max": float(self.work.lookups.max()), "imbalance": self.imbalance,
        }

    def format(self) -> str:
        """The profile as a text table (measured here vs modeled on hardware).

        >>> w = perfmodel.BatchWork.uniform(nr_dpus=1, lookups=1, row_bytes=8, index_bytes=8, output_bytes=8)
        >>> "DPU->CPU pull" in profile_work(w, "upmem-350mhz-2556").format()
        True
        """
        measured = self.measured_s or None
        modeled = {key: self.modeled_phase(fields) for _, key, fields in PHASES}
        modeled["total_s"] = self.modeled.total_s
        lines = format_phase_table(measured, modeled, measured_label="measured here",
                                   modeled_label=f"modeled, {self.nr_dpus} DPUs")
        lines += [
            f"  bytes  CPU->DPU {format_bytes(self.bytes_to_dpu)} ({format_bytes(self.padded_bytes_to_dpu)} padded), "
            f"DPU->CPU {format_bytes(self.bytes_from_dpu)} ({format_bytes(self.padded_bytes_from_dpu)} padded)",
            f"  lookups per DPU mean {self.work.lookups.mean():,.1f}, max {self.work.lookups.max():,.0f} "
            f"(imbalance {self.imbalance:.2f}x); host-cache hits {self.host_cache_hits:,}; profile {self.profile}",
        ]
        return "\n".join(lines)


def profile_work(work: perfmodel.BatchWork, profile: str | perfmodel.HardwareProfile = DEFAULT_PROFILE,
                 measured_s: dict | None = None) -> BatchProfile:
    """Model ``work`` on ``profile`` sized to the work's DPU count (no measured phases unless given).

    >>> w = perfmodel.BatchWork.uniform(nr_dpus=128, lookups=100, row_bytes=256, index_bytes=1000, output_bytes=4096)
    >>> p = profile_work(w)
    >>> p.nr_dpus, p.padded_bytes_to_dpu
    (128, 128000)
    """
    hw = perfmodel.get_profile(profile, nr_dpus=work.nr_dpus)
    return BatchProfile(
        profile=hw.name, nr_dpus=work.nr_dpus, work=work, modeled=perfmodel.model_batch(work, hw),
        measured_s=dict(measured_s or {}), bytes_to_dpu=int(work.index_bytes.sum()),
        bytes_from_dpu=int(work.output_bytes.sum()),
        padded_bytes_to_dpu=_padded_total(work.index_bytes, hw.dpus_per_rank),
        padded_bytes_from_dpu=_padded_total(work.output_bytes, hw.dpus_per_rank),
        host_cache_hits=int(work.host_cache_lookups), nr_lookups=int(work.lookups.sum() + work.host_cache_lookups))


def profile_batch(stats_or_module, profile: str | perfmodel.HardwareProfile = DEFAULT_PROFILE) -> BatchProfile:
    """The :class:`BatchProfile` of an engine batch: a ``BatchStats`` or a module's ``last_stats``.

    Accepts ``BatchStats``, a :class:`~updlrm.tbe.TableBatchedEmbeddingBags` or an
    :class:`~updlrm.tbe.EmbeddingBag` (their last batch). The hardware profile is sized
    to the plan's DPU count; for another count, :func:`derive_work` the batch under a
    plan for that count and call :func:`profile_work`.

    >>> from updlrm.host.engine import BatchStats
    >>> profile_batch(BatchStats.empty(4)).modeled.total_s
    0.0
    """
    stats = getattr(stats_or_module, "last_stats", stats_or_module)
    if stats is None:
        raise ValueError("no batch has run yet (last_stats is None)")
    measured = {key: _measured_phase(stats, key) for _, key, _ in PHASES}
    measured["total_s"] = float(stats.total_s + stats.extra.get("validate_s", 0.0))
    p = profile_work(stats.work(), profile, measured)
    p.bytes_to_dpu = int(stats.bytes_to_dpu.sum())
    p.bytes_from_dpu = int(stats.bytes_from_dpu.sum())
    p.padded_bytes_to_dpu = int(stats.padded_bytes_to_dpu.sum())
    p.padded_bytes_from_dpu = int(stats.padded_bytes_from_dpu.sum())
    p.host_cache_hits = int(stats.host_cache_hits)
    p.nr_lookups = int(stats.nr_lookups)
    return p


# ---------------------------------------------------------------------------- the one table printer


def format_seconds(seconds: float | None) -> str:
    """Seconds with a unit that keeps 3-4 significant digits, right-aligned in 11 characters.

    >>> format_seconds(0.0123), format_seconds(None), format_seconds(2.5e-6)
    ('  12.300 ms', '-', '     2.5 us')
    """
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:8.3f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds * 1e6:8.1f} us"


def format_phase_table(measured_s: dict | None, modeled_s: dict, *, measured_label: str = "measured here",
                       modeled_label: str = "modeled on UPMEM", title: str = "phase (mean per batch)",
                       total_label: str = "total (end to end)") -> list[str]:
    """Rows of the phase table: one line per ``PHASES`` entry plus the total.

    ``measured_s``/``modeled_s`` map the ``PHASES`` keys and ``total_s`` (or
    ``end_to_end_s``) to seconds or None; ``measured_s=None`` omits that column.

    >>> lines = format_phase_table({"push_s": 1e-3, "total_s": 2e-3}, {"push_s": 5e-6, "total_s": 9e-6})
    >>> lines[3].split()[:3], lines[-1].split()[-2:]
    (['CPU->DPU', 'push', '1.000'], ['9.0', 'us'])
    """
    def total(d):
        return d.get("total_s", d.get("end_to_end_s"))

    width = max(len(measured_label), 13) + 2
    mwidth = max(len(modeled_label), 16) + 2
    head = f"  {title:<24}"
    if measured_s is not None:
        head += f"{measured_label:>{width}}"
    lines = [head + f"{modeled_label:>{mwidth}}"]
    rows = [(label, key) for label, key, _ in PHASES] + [(total_label, None)]
    for label, key in rows:
        line = f"  {label:<24}"
        if measured_s is not None:
            value = total(measured_s) if key is None else measured_s.get(key)
            line += f"{format_seconds(value):>{width}}"
        value = total(modeled_s) if key is None else modeled_s.get(key)
        lines.append(line + f"{format_seconds(value):>{mwidth}}")
    return lines


# ---------------------------------------------------------------------------- torch reference


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
        outs.append(torch.nn.functional.embedding_bag(
            idx[lo:hi], w, torch.from_numpy(off[t * batch_size:(t + 1) * batch_size + 1] - lo), mode=mode,
            include_last_offset=True, per_sample_weights=None if psw is None else psw[lo:hi]))
    return torch.cat(outs, dim=1)


def time_torch(weights, indices, offsets, batch_size: int, per_sample_weights=None, repeats: int = 5,
               min_total_s: float = 0.2, max_repeats: int = 100, warmup: int = 2, thread_counts=None):
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


# ---------------------------------------------------------------------------- updlrm bench


@dataclass
class BenchResult:
    """What one ``updlrm bench`` run measured and modeled (means per batch); ``to_dict()`` is ``--json``.

    ``emulated`` is the DPU count the backend ran, ``nr_dpus`` the count modeled; when
    they differ the modeled work comes from :func:`derive_work` on the plan for
    ``nr_dpus`` DPUs. ``estimate_s`` is the end-to-end hardware estimate: host phases
    measured here (validation, routing, merge scaled to the modeled partial sums)
    plus the modeled DPU side.
    """

    config: dict
    backend: str
    emulated: int
    nr_dpus: int
    profile: str
    derived: bool
    derivation_checked: bool
    batches: int
    lookups_per_batch: float
    torch_s: float
    torch_threads: int
    wall_s: float
    measured_s: dict
    modeled_s: dict
    estimate_s: float
    bytes_per_batch: dict
    dpu_load: dict
    host_cache_hits: float
    max_abs_err: float
    passed: bool

    @property
    def speedup(self) -> float:
        """torch CPU time over the modeled hardware batch latency (> 1: the DPUs win)."""
        return self.torch_s / self.modeled_s["total_s"] if self.modeled_s["total_s"] > 0 else float("inf")

    @property
    def speedup_estimate(self) -> float:
        """torch CPU time over the end-to-end estimate (host work measured here + modeled DPU side)."""
        return self.torch_s / self.estimate_s if self.estimate_s > 0 else float("inf")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["speedup"] = self.speedup
        d["speedup_estimate"] = self.speedup_estimate
        d["result"] = "PASS" if self.passed else "FAIL"
        return d


def _tables(nr_tables: int, rows: int, dim: int, row_format: str) -> list[TableSpec]:
    return [TableSpec(f"t{i}", int(rows), int(dim), row_format=RowFormat(row_format)) for i in range(nr_tables)]


def end_to_end_estimate(modeled: perfmodel.PhaseTimes, measured_s: dict, merge_scale: float = 1.0) -> float:
    """Hardware batch latency with the host's own work measured here instead of modeled.

    ``validate + route + max(host_cache, DPU side) + merge * merge_scale``: validation,
    routing/packing and the merge are host CPU work that a UPMEM server's host does the
    same way (``merge_scale`` scales the merge to another DPU count's partial sums);
    the DPU side (push, launch, kernel, pull) is the model's.

    >>> t = perfmodel.PhaseTimes(1e-3, 0, 2e-3, 1e-3, 5e-4, 0, np.zeros(1))
    >>> round(end_to_end_estimate(t, {"validate_s": 1e-4, "route_s": 2e-4, "merge_s": 3e-4, "host_cache_s": 0}), 6)
    0.0046
    """
    return float(measured_s.get("validate_s", 0.0) + measured_s.get("route_s", 0.0)
                 + max(measured_s.get("host_cache_s", 0.0), modeled.dpu_s)
                 + measured_s.get("merge_s", 0.0) * merge_scale)


def run_bench(*, tables: int = 8, rows: int = 100_000, dim: int = 64, batch_size: int = 1024, pooling: float = 32,
              alpha: float = 1.05, row_format: str = "fp32", dpus: int = 64, emulate_dpus: int | None = None,
              profile: str = DEFAULT_PROFILE, batches: int = 3, bag_sizes: str = "fixed", weighted: bool = False,
              nr_tasklets: int = 16, seed: int = 0, backend: str = "emulator", progress=None) -> BenchResult:
    """Run a synthetic workload on the backend, check it against torch, time torch, model the hardware.

    ``dpus`` is the modeled DPU count; the backend runs ``emulate_dpus`` (default
    ``min(dpus, 256)``) and, when fewer, the per-DPU work for ``dpus`` is derived from
    the plan's routing (:func:`derive_work`), itself checked against the engine's
    counters on the DPUs that did run.

    >>> r = run_bench(tables=2, rows=100, dim=8, batch_size=16, pooling=4, dpus=4, batches=1)
    >>> r.passed, r.derived, r.derivation_checked, r.nr_dpus
    (True, False, True, 4)
    """
    import torch

    from updlrm.partitioner.workloads import synthetic_trace
    from updlrm.tbe import TableBatchedEmbeddingBags

    say = progress or (lambda msg: None)
    emulate = int(emulate_dpus) if emulate_dpus is not None else min(int(dpus), 256)
    if emulate < 1 or dpus < 1:
        raise ValueError("dpus and emulate_dpus must be >= 1")
    if emulate > dpus:
        raise ValueError(f"emulate_dpus ({emulate}) cannot exceed the modeled dpus ({dpus})")
    config = dict(tables=tables, rows=rows, dim=dim, batch_size=batch_size, pooling=pooling, alpha=alpha,
                  row_format=row_format, dpus=dpus, emulate_dpus=emulate, profile=profile, batches=batches,
                  bag_sizes=bag_sizes, weighted=weighted, nr_tasklets=nr_tasklets, seed=seed, backend=backend)
    specs = _tables(tables, rows, dim, row_format)
    say(f"generating {batches} batch(es) of {batch_size} samples over {tables} tables")
    trace = synthetic_trace(specs, batch_size=batch_size, num_batches=batches, pooling=pooling, alpha=alpha,
                            seed=seed, pooling_distribution=bag_sizes, weighted=weighted)
    run_plan = bench_plan(specs, emulate)
    model_plan = run_plan if emulate == dpus else bench_plan(specs, dpus)
    hw = perfmodel.get_profile(profile, nr_dpus=dpus)
    say(f"loading the tables into {emulate} DPUs ({backend})")
    tbe = TableBatchedEmbeddingBags(specs, plan=run_plan, backend=backend, seed=seed, nr_tasklets=nr_tasklets)
    with tbe:
        weights = [torch.from_numpy(tbe.weights(t)) for t in range(len(specs))]
        measured, modeled, estimates, wall, torch_times, checked = [], [], [], [], [], True
        bytes_rows, loads, hits = [], [], []
        max_err, passed = 0.0, True
        run_cache, model_cache = {}, {}
        for i, (idx, off, psw) in enumerate(trace.batches()):
            say(f"batch {i + 1}/{batches}: {idx.size:,} lookups")
            t0 = time.perf_counter()
            out = tbe(idx, off, psw)
            wall.append(time.perf_counter() - t0)
            stats = tbe.last_stats
            here = profile_batch(stats, hw)
            if stats.nr_launches == 1:
                checked &= not work_mismatch(derive_work(run_plan, idx, off, psw, nr_tasklets=nr_tasklets,
                                                         router_cache=run_cache), stats.work())
            else:
                checked = False
            if model_plan is run_plan:
                target = here
            else:
                target = profile_work(derive_work(model_plan, idx, off, psw, nr_tasklets=nr_tasklets,
                                                  router_cache=model_cache), hw)
            merge_scale = (target.work.host_merge_elems / here.work.host_merge_elems
                           if here.work.host_merge_elems else 1.0)
            measured.append(here.measured_s)
            modeled.append(target)
            estimates.append(end_to_end_estimate(target.modeled, here.measured_s, merge_scale))
            bytes_rows.append((target.bytes_to_dpu, target.bytes_from_dpu, target.padded_bytes_to_dpu,
                               target.padded_bytes_from_dpu))
            loads.append(target.work.lookups)
            hits.append(target.host_cache_hits)
            t_s, ref = time_torch(weights, idx, off, batch_size, psw)
            torch_times.append(t_s)
            err, ok = check_close(out, ref)
            max_err, passed = max(max_err, err), passed and ok
        backend_name = tbe.backend

    mean_measured = {k: float(np.mean([m[k] for m in measured])) for k in measured[0]}
    mean_modeled = {key: (float(np.mean([p.modeled_phase(fields) for p in modeled])) if fields else None)
                    for _, key, fields in PHASES}
    mean_modeled["total_s"] = float(np.mean([p.modeled.total_s for p in modeled]))
    mean_modeled["kernel_s"] = float(np.mean([p.modeled.kernel_s for p in modeled]))
    b = np.mean(np.array(bytes_rows, dtype=np.float64), axis=0)
    load = np.mean(loads, axis=0)
    return BenchResult(
        config=config, backend=backend_name, emulated=emulate, nr_dpus=int(dpus), profile=hw.name,
        derived=model_plan is not run_plan, derivation_checked=bool(checked), batches=batches,
        lookups_per_batch=float(trace.num_lookups / batches), torch_s=float(np.mean(torch_times)),
        torch_threads=torch.get_num_threads(), wall_s=float(np.mean(wall)), measured_s=mean_measured,
        modeled_s=mean_modeled, estimate_s=float(np.mean(estimates)),
        bytes_per_batch={"cpu_to_dpu": b[0], "dpu_to_cpu": b[1], "cpu_to_dpu_padded": b[2],
                         "dpu_to_cpu_padded": b[3]},
        dpu_load={"mean_lookups": float(load.mean()), "max_lookups": float(load.max()),
                  "imbalance": float(load.max() / load.mean()) if load.mean() > 0 else 1.0},
        host_cache_hits=float(np.mean(hits)), max_abs_err=max_err, passed=passed)


def format_bench(r: BenchResult) -> str:
    """The text report of ``updlrm bench``."""
    c = r.config
    derived = (f"per-DPU work for {r.nr_dpus} DPUs derived from the plan's routing"
               if r.derived else "per-DPU work as the engine counted it")
    check = "matches the engine's counters" if r.derivation_checked else "NOT checked against the engine"
    lines = [
        f"updlrm bench: {c['tables']} tables x {c['rows']:,} rows, dim {c['dim']}, {c['row_format']}; "
        f"batch {c['batch_size']:,}, pooling {c['pooling']:g} ({c['bag_sizes']}), Zipf alpha {c['alpha']:g}, "
        f"{r.batches} batch(es), {r.lookups_per_batch:,.0f} lookups per batch",
        f"  ran       {r.backend} on {r.emulated} DPUs (row-wise, {max(1, r.emulated // c['tables'])} DPUs per table)",
        f"  modeled   {r.profile} with {r.nr_dpus} DPUs: {derived} (derivation {check})",
        "",
    ]
    measured = dict(r.measured_s)
    measured["total_s"] = r.wall_s
    lines += format_phase_table(measured, r.modeled_s, measured_label=f"{r.backend} here ({r.emulated})",
                                modeled_label=f"modeled UPMEM ({r.nr_dpus})")
    lines += [
        f"  {'  of which DPU kernel':<24}{'':>{max(len(r.backend) + len(str(r.emulated)) + 9, 13) + 2}}"
        f"{format_seconds(r.modeled_s['kernel_s']):>{max(len(f'modeled UPMEM ({r.nr_dpus})'), 16) + 2}}",
        f"  (*overlaps the DPU phases; 'total' measured is the whole forward() on this machine)",
        "",
        f"  torch embedding_bag, CPU (best of {r.torch_threads} and 1 thread(s))   {format_seconds(r.torch_s).strip()}",
        f"  modeled UPMEM batch latency (perfmodel)          {format_seconds(r.modeled_s['total_s']).strip()}"
        f"   -> speedup {r.speedup:.2f}x " + ("(DPUs win)" if r.speedup > 1 else "(CPU wins)"),
        f"  end-to-end estimate (host work measured here)    {format_seconds(r.estimate_s).strip()}"
        f"   -> speedup {r.speedup_estimate:.2f}x " + ("(DPUs win)" if r.speedup_estimate > 1 else "(CPU wins)"),
        "",
    ]
    lines += format_traffic(r.bytes_per_batch, r.dpu_load, r.host_cache_hits, f"bytes per batch ({r.nr_dpus} DPUs)")
    lines += ["", format_verdict(r.max_abs_err, r.passed)]
    return "\n".join(lines)


def format_traffic(bytes_per_batch: dict, dpu_load: dict, host_cache_hits: float, heading: str = "bytes per batch") -> list[str]:
    """Report lines for the bytes moved each way and the DPU load of a batch.

    ``*_max_per_dpu`` bytes and ``launches_per_batch`` are printed when present.

    >>> b = {"cpu_to_dpu": 2e6, "cpu_to_dpu_padded": 3e6, "dpu_to_cpu": 1e6, "dpu_to_cpu_padded": 1e6}
    >>> print("\\n".join(format_traffic(b, {"mean_lookups": 10, "max_lookups": 12, "imbalance": 1.2}, 0)))
      bytes per batch  CPU->DPU 2.0 MB (3.0 MB with rank padding)
                       DPU->CPU 1.0 MB (1.0 MB with rank padding)
      lookups per DPU  mean 10, max 12 (imbalance 1.20x), host-cache hits 0
    """
    def direction(key: str) -> str:
        peak = f", max {format_bytes(bytes_per_batch[key + '_max_per_dpu'])} per DPU" if key + "_max_per_dpu" in bytes_per_batch else ""
        return f"{format_bytes(bytes_per_batch[key])} ({format_bytes(bytes_per_batch[key + '_padded'])} with rank padding{peak})"

    launches = f", {dpu_load['launches_per_batch']:g} launch(es) per batch" if "launches_per_batch" in dpu_load else ""
    return [
        f"  {heading}  CPU->DPU {direction('cpu_to_dpu')}",
        f"  {' ' * len(heading)}  DPU->CPU {direction('dpu_to_cpu')}",
        f"  lookups per DPU  mean {dpu_load['mean_lookups']:,.0f}, max {dpu_load['max_lookups']:,.0f} "
        f"(imbalance {dpu_load['imbalance']:.2f}x){launches}, host-cache hits {host_cache_hits:,.0f}",
    ]


def format_verdict(max_abs_err: float, passed: bool) -> str:
    """The PASS/FAIL line against torch.

    >>> format_verdict(1e-6, True).split()[-1]
    'PASS'
    """
    return (f"  max abs err vs torch: {max_abs_err:.3g} (tolerance {FP32_ATOL:g} + {FP32_RTOL:g} x |expected|)   "
            + ("PASS" if passed else "FAIL"))


@click.command("bench")
@click.option("--tables", default=8, show_default=True, type=click.IntRange(1), help="Number of tables.")
@click.option("--rows", default=100_000, show_default=True, type=click.IntRange(1), help="Rows per table.")
@click.option("--dim", default=64, show_default=True, type=click.IntRange(1), help="Embedding dimension.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1), help="Samples per batch.")
@click.option("--pooling", default=32.0, show_default=True, type=click.FloatRange(0), help="Lookups per bag (mean).")
@click.option("--bag-sizes", default="fixed", show_default=True, type=click.Choice(["fixed", "poisson", "uniform"]),
              help="Bag-size law around --pooling (fixed: FBGEMM's benchmark convention).")
@click.option("--alpha", default=1.05, show_default=True, type=click.FloatRange(0),
              help="Zipf exponent of row popularity (0 = uniform).")
@click.option("--format", "row_format", default="fp32", show_default=True, type=click.Choice(["fp32", "int32", "int8"]),
              help="Row storage format on the DPUs.")
@click.option("--dpus", default=64, show_default=True, type=click.IntRange(1), help="DPUs of the modeled hardware.")
@click.option("--emulate-dpus", default=None, type=click.IntRange(1),
              help="DPUs the backend runs (default min(--dpus, 256)); fewer than --dpus derives the rest.")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, type=click.Choice(sorted(perfmodel.PROFILES)),
              help="Hardware profile of the modeled times.")
@click.option("--batches", default=3, show_default=True, type=click.IntRange(1), help="Batches to run.")
@click.option("--weighted", is_flag=True, help="Per-sample weights.")
@click.option("--tasklets", "nr_tasklets", default=16, show_default=True, type=click.IntRange(1, 24),
              help="Tasklets per DPU.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of weights and workload.")
@click.option("--backend", default="emulator", show_default=True,
              type=click.Choice(["emulator", "simulator", "hw", "auto"]), help="Where to run the batches.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
def bench_command(as_json: bool, **options) -> None:
    """Time torch CPU and updlrm on one workload; model each phase on UPMEM hardware.

    The batches run on the backend (checked against torch), torch's CPU embedding_bag
    is timed on the same batches in the same run, and the perfmodel gives each phase
    on --dpus DPUs of the chosen hardware profile. Exit status 1 if a result is wrong.
    """
    progress = None if as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    result = run_bench(progress=progress, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_bench(result))
    if not result.passed:
        raise SystemExit(1)
