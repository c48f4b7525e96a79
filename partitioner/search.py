"""Stage 2b of the planner: the layout search (torchrec's enumerator, proposer and estimator in one).

For every table a shape ``k`` row parts x ``c`` column slices (``k = c = 1`` is
table-wise, ``c = 1`` row-wise, ``k = 1`` column-wise, else tiles) and, globally, the
modeled cost level down to which the host cache relieves every table's parts (each
table caching the shortest prefix of its hottest rows that reaches it, which keeps the
DPUs balanced when the host is the bottleneck).  Candidates are scored with
:func:`updlrm.perfmodel.model_batch` on the work they imply (kernel of the slowest DPU,
index bytes in, partial sums out with rank padding, host merge, host cache overlapping
the DPU phases; :class:`~updlrm.partitioner.cost.CostModel`), by coordinate descent over
the tables (:class:`LayoutSearch`).  :func:`search_layout` runs the whole stage and
returns a :class:`Layout`.

Example:
    >>> from updlrm import perfmodel
    >>> from updlrm.specs import TableSpec
    >>> from updlrm.partitioner.expected_loads import table_workloads
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8), TableSpec("b", 300, 8)]
    >>> wls = table_workloads(tables, synthetic_trace(tables, batch_size=64, pooling=4, seed=1))
    >>> model = CostModel(tables, perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=8), 8, False, 16,
    ...                   [wl.total_load for wl in wls])
    >>> layout = search_layout(wls, model, 1 << 20, replicate=True, host_cache=False, host_cache_bytes=0)
    >>> [s.dpus for s in layout.shapes], layout.cached.tolist(), layout.estimate_s > 0
    ([8, 8], [0, 0], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from updlrm import perfmodel
from updlrm.partitioner.cost import CostModel, partial_bytes
from updlrm.partitioner.expected_loads import TableWorkload
from updlrm.plan import PlanError, column_bounds, format_bytes
from updlrm.specs import padded_row_bytes

__all__ = ["COLUMN_SLICE_CHOICES", "DPU_TIE_BREAK", "Layout", "LayoutSearch", "TableShape", "cached_for_level",
           "search_layout"]

COLUMN_SLICE_CHOICES = (1, 2, 4, 8)
# Weight of the DPU side in the search's score, next to the modeled batch time.
DPU_TIE_BREAK = 0.05


@dataclass
class TableShape:
    """``parts`` row parts x ``slices`` column slices, and what they imply per part (per batch)."""

    parts: int
    slices: int
    part_lookups: float = 0.0
    row_bytes: float = 0.0
    index_bytes: float = 0.0
    output_bytes: float = 0.0
    reduce_elems: float = 0.0
    part_cost: float = 0.0
    merge_elems: float = 0.0

    @property
    def dpus(self) -> int:
        return self.parts * self.slices


class LayoutSearch:
    """Coordinate descent over table shapes and the host-cache size, scored by the perfmodel."""

    def __init__(self, workloads: list[TableWorkload], model: CostModel, capacity: int, replicate: bool) -> None:
        self.wls = workloads
        self.model = model
        self.n = model.nr_dpus
        self.capacity = capacity
        self.replicate = replicate
        self.candidates = [self._candidates(wl) for wl in workloads]

    def _candidates(self, wl: TableWorkload) -> list[tuple[int, int]]:
        spec = wl.spec
        out: list[tuple[int, int]] = []
        for c in COLUMN_SLICE_CHOICES:
            bounds = column_bounds(spec, c)
            if len(bounds) - 1 != c or c > self.n:
                continue
            widest = max(padded_row_bytes(hi - lo, spec.row_format) for lo, hi in zip(bounds[:-1], bounds[1:]))
            k_min = max(1, math.ceil(spec.num_embeddings * widest / self.capacity))
            # Replicas let a table use more parts than it has rows.
            k_max = self.n // c if self.replicate else min(self.n // c, spec.num_embeddings)
            if k_min > k_max:
                continue
            ks = {k_min, k_max}
            k = 1
            while k <= k_max:
                if k >= k_min:
                    ks.add(k)
                k *= 2
            out.extend((k, c) for k in sorted(ks))
        if not out:
            need = spec.num_embeddings * spec.row_bytes()
            raise PlanError(f"table {spec.name} needs {format_bytes(need)}, {format_bytes(self.n * self.capacity)} "
                            f"of MRAM free on {self.n} DPUs (at most one shard of a table per DPU)")
        return out

    def shape(self, t: int, parts: int, slices: int, cached: int) -> TableShape:
        wl, m = self.wls[t], self.model
        spec = wl.spec
        dpu_load = wl.dpu_load(cached)
        fanout = wl.fanout(parts, cached)
        slice_dim = spec.embedding_dim / slices
        bounds = column_bounds(spec, slices)
        row_bytes = float(np.mean([padded_row_bytes(hi - lo, spec.row_format) for lo, hi in zip(bounds[:-1], bounds[1:])]))
        out_bytes = partial_bytes(slice_dim)
        s = TableShape(parts, slices)
        s.part_lookups = dpu_load / parts
        touched = wl.batch_size * fanout / parts
        s.row_bytes = row_bytes
        s.index_bytes = float(m.index_bytes(s.part_lookups, touched))
        s.output_bytes = touched * out_bytes
        s.reduce_elems = s.part_lookups * slice_dim * m.elem_factor[t]
        s.part_cost = float(m.part_cost(s.part_lookups, row_bytes, s.index_bytes, s.output_bytes, s.reduce_elems)[0])
        s.merge_elems = wl.batch_size * fanout * spec.embedding_dim
        return s

    def estimate(self, shapes: list[TableShape], cached: np.ndarray) -> perfmodel.PhaseTimes:
        """Modeled batch after an LPT placement of every table's (identical) parts on the DPUs."""
        n = self.n
        per_dpu = np.zeros((5, n))
        cost = np.zeros(n)
        for t in sorted(range(len(shapes)), key=lambda t: -shapes[t].part_cost):
            s = shapes[t]
            d = min(s.dpus, n)
            chosen = np.argpartition(cost, d - 1)[:d] if d < n else np.arange(n)
            cost[chosen] += s.part_cost
            per_dpu[:, chosen] += np.array([[s.part_lookups], [s.part_lookups * s.row_bytes], [s.index_bytes],
                                            [s.output_bytes], [s.reduce_elems]])
        lookups = per_dpu[0]
        row_bytes = np.divide(per_dpu[1], lookups, out=np.full(n, 8.0), where=lookups > 0)
        host_lookups = host_bytes = 0.0
        for wl, h in zip(self.wls, cached):
            served = float(wl.load[:h].sum())
            host_lookups += served
            host_bytes += served * wl.spec.row_bytes()
        return self.model.batch(lookups=lookups, row_bytes=row_bytes, index_bytes=per_dpu[2],
                                output_bytes=per_dpu[3], reduce_elems=per_dpu[4],
                                host_merge_elems=sum(s.merge_elems for s in shapes),
                                host_cache_lookups=host_lookups,
                                host_cache_row_bytes=host_bytes / host_lookups if host_lookups else 0)

    def score(self, shapes: list[TableShape], cached: np.ndarray) -> float:
        """Modeled batch time, plus a small share of the DPU side to break near-ties.

        With a host cache the batch takes ``max(host, dpu) + merge``: a move that speeds
        up the DPUs alone changes nothing until the cache shrinks, so without the tie-break
        the search would stall where the two sides meet.
        """
        t = self.estimate(shapes, cached)
        return t.total_s + DPU_TIE_BREAK * t.dpu_s

    def descend(self, shapes: list[TableShape], cached: np.ndarray, passes: int,
                local: bool = False) -> tuple[list[TableShape], float]:
        """Per table in turn, the shape that minimises :meth:`score`; ``local`` tries only neighbours.

        Each pass ends with global moves (every table's row parts doubled or halved at
        once), which a table-by-table search cannot see when many tables share the
        straggler's role.
        """
        best = self.score(shapes, cached)
        order = np.argsort([-wl.total_load for wl in self.wls], kind="stable")
        for _ in range(passes):
            changed = False
            for t in order:
                current = shapes[t]
                for k, c in self.candidates[t]:
                    if (k, c) == (current.parts, current.slices):
                        continue
                    if local and (abs(math.log2(k / current.parts)) > 1 or abs(math.log2(c / current.slices)) > 1):
                        continue
                    trial = self.shape(t, k, c, int(cached[t]))
                    shapes[t] = trial
                    total = self.score(shapes, cached)
                    if total < best * (1 - 1e-9):
                        best, current, changed = total, trial, True
                    shapes[t] = current
            # Global moves: all tables, or only those whose parts outweigh an even share.
            even_share = sum(s.part_cost * s.dpus for s in shapes) / self.n
            for factor, only_heavy in ((2.0, True), (2.0, False), (0.5, False)):
                trial_shapes = []
                for t, s in enumerate(shapes):
                    allowed = set(self.candidates[t])
                    k = int(s.parts * factor)
                    move = (k, s.slices) in allowed and (not only_heavy or s.part_cost > even_share)
                    trial_shapes.append(self.shape(t, k, s.slices, int(cached[t])) if move else s)
                total = self.score(trial_shapes, cached)
                if total < best * (1 - 1e-9):
                    best, shapes, changed = total, trial_shapes, True
            if not changed:
                break
        return shapes, best

    def initial(self, cached: np.ndarray) -> list[TableShape]:
        shapes = []
        share = max(1, self.n // max(len(self.wls), 1))
        for t in range(len(self.wls)):
            ks = [k for k, c in self.candidates[t] if c == self.candidates[t][0][1]]
            k = max([k for k in ks if k <= share] or [min(ks)])
            shapes.append(self.shape(t, k, self.candidates[t][0][1], int(cached[t])))
        return shapes


@dataclass
class Layout:
    """The layout search's result: every table's shape, its host-cached row count, the modeled batch.

    ``cached[t]``: how many of table ``t``'s hottest rows (``workloads[t].rows[:cached[t]]``)
    the host cache serves; ``estimate_s``: the search's score of the layout
    (:meth:`LayoutSearch.score`).
    """

    shapes: list[TableShape]
    cached: np.ndarray
    estimate_s: float

    def host_rows(self, workloads: list[TableWorkload]) -> dict[int, np.ndarray]:
        """The host-cached rows of every table that has some, sorted (``Plan.host_rows``)."""
        return {t: np.sort(wl.rows[: int(self.cached[t])]) for t, wl in enumerate(workloads) if self.cached[t] > 0}


def search_layout(workloads: list[TableWorkload], model: CostModel, capacity: int, *, replicate: bool,
                  host_cache: bool, host_cache_bytes: int) -> Layout:
    """Shapes and host cache of every table minimising the modeled batch time under ``capacity`` bytes per DPU."""
    search = LayoutSearch(workloads, model, capacity, replicate)
    cached = np.zeros(len(workloads), dtype=np.int64)
    shapes = search.initial(cached)
    shapes, best = search.descend(shapes, cached, passes=2)
    if host_cache:
        # The host cache takes lookups off the DPUs down to a common level: every table
        # caches the shortest prefix of its hottest rows that brings its parts' modeled
        # cost to the level, so the DPUs stay balanced whichever side is the bottleneck
        # (host time grows with the lookups served, not with which rows serve them).
        # The level is searched on a geometric grid, then a finer one around the best,
        # each point with a local re-shaping of the tables (the two choices interact).
        levels = [max(s.part_cost for s in shapes) * 2 ** (-i / 2) for i in range(1, 41)]
        best_level = None
        for _round in range(2):
            for level in levels:
                trial_cached = cached_for_level(workloads, shapes, level, host_cache_bytes)
                if trial_cached is None:
                    break
                trial = [search.shape(t, s.parts, s.slices, int(trial_cached[t])) for t, s in enumerate(shapes)]
                trial, total = search.descend(trial, trial_cached, passes=1, local=True)
                if total < best:
                    best, best_level, cached, shapes = total, level, trial_cached, trial
            shapes, best = search.descend(shapes, cached, passes=3)
            if best_level is None:
                break
            levels = [best_level * 2 ** (i / 8) for i in range(-3, 4) if i]
    shapes, best = search.descend(shapes, cached, passes=3)
    return Layout(shapes, cached, best)


def cached_for_level(wls: list[TableWorkload], shapes: list[TableShape], level: float,
                      host_cache_bytes: int) -> np.ndarray | None:
    """Per table, the fewest hottest rows to host-cache so that its parts cost at most ``level`` seconds.

    A part's cost is taken as proportional to its lookups (the per-lookup cost of the
    table's current shape).  ``None`` when the rows exceed ``host_cache_bytes``.
    """
    cached = np.zeros(len(wls), dtype=np.int64)
    nbytes = 0
    for t, (wl, s) in enumerate(zip(wls, shapes)):
        if s.part_lookups <= 0:
            continue
        allowed = level / (s.part_cost / s.part_lookups) * s.parts
        # suffix[h] = DPU lookups left when the top h rows are cached (non-increasing in h).
        suffix = np.r_[np.cumsum(wl.load[::-1])[::-1], 0.0] + wl.unranked
        cached[t] = min(int(np.searchsorted(-suffix, -allowed, side="left")), wl.rows.size)
        nbytes += int(cached[t]) * wl.spec.row_bytes()
    return cached if nbytes <= host_cache_bytes else None
