"""Workload-aware placement: layouts chosen by the performance model, graph-balanced rows, hot-row caching.

:func:`build_plan` turns tables, a trace and a DPU topology into a :class:`~updlrm.plan.Plan`:

1. **Statistics.**  Per table, the expected lookups per batch of every accessed row,
   cross-fitted over folds of batches so that rows ranked hot by luck regress to the
   mean (:func:`expected_rank_loads`), and, per bag, how many distinct
   rows it touches -- the input of the fan-out estimate
   ``E[parts touched] = sum_bags k * (1 - (1 - 1/k)^u_bag)`` for ``k`` balanced parts.
2. **Layout search.**  For every table a shape ``k`` row parts x ``c`` column slices
   (``k = c = 1`` is table-wise, ``c = 1`` row-wise, ``k = 1`` column-wise, else tiles)
   and, globally, the modeled cost level down to which the host cache relieves every
   table's parts (each table caching the shortest prefix of its hottest rows that
   reaches it, which keeps the DPUs balanced when the host is the bottleneck).  Candidates are
   scored with :func:`updlrm.perfmodel.model_batch` on the work they imply (kernel
   of the slowest DPU, index bytes in, partial sums out with rank padding, host merge,
   host cache overlapping the DPU phases), by coordinate descent over the tables.
3. **Rows.**  Rows heavier than 5% of a part are replicated on every part (each
   replica serves an even share of the bags, see :mod:`.routing`).  The hot rows'
   co-occurrence hypergraph is partitioned into ``k`` blocks with Mt-KaHyPar (km1 =
   bag fan-out) under per-block load budgets (or METIS on the clique expansion, or
   frequency-only LPT); the remaining accessed rows fill every part up to the same
   expected load, then single moves and swaps of rows between the heaviest and the
   lightest parts even out what the partitioners leave; unaccessed rows fill MRAM
   evenly.  Tables too large for explicit row lists are cut into load-balanced
   contiguous ``range`` shards (hot rows replicated on extra parts), so 100M-row
   plans stay small.
4. **DPUs.**  Parts go to DPUs by longest-processing-time first, each onto the DPU
   with the least modeled time so far (kernel plus its share of the transfers) that
   has MRAM left and holds no other part of the same table.
5. **Report.**  The plan is evaluated on the trace by routing every lookup as the
   engine does (:func:`evaluate_plan`); ``plan.expected_load`` and ``plan.metadata``
   record the result.

Example:
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec(f"t{i}", 5000, 16) for i in range(4)]
    >>> trace = synthetic_trace(tables, batch_size=256, num_batches=2, pooling=8, co_occurrence=0.5)
    >>> plan = build_plan(tables, trace, Topology(64), progress=False)
    >>> plan.validate()
    >>> report = evaluate_plan(plan, trace)
    >>> report.imbalance < 1.2 and report.modeled.total_s > 0
    True
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from updlrm import perfmodel
from updlrm.partitioner.graphpart import frequency_partition, graph_partition, hypergraph_partition
from updlrm.partitioner.routing import SliceRouter, column_slices, host_mask
from updlrm.partitioner.stats import cooccurrence_graph, cooccurrence_hypergraph, workload_stats
from updlrm.partitioner.workloads import Trace
from updlrm.plan import Plan, PlanError, Shard, column_bounds, format_bytes
from updlrm.specs import TableSpec, Topology, padded_row_bytes, tables_hash

DEFAULT_PROFILE = "upmem-350mhz-2556"
CACHE_MODES = ("auto", "replicate", "host", "none")
GRAPH_MODES = ("auto", "hypergraph", "graph", "none")
# Bytes of index payload per lookup and per touched bag: a 4-byte local row index per
# lookup (+ a 4-byte weight when weighted) and a 4-byte offset per bag, the layout the
# perfmodel's uniform_embedding_work assumes.
INDEX_BYTES_PER_LOOKUP = 4
OFFSET_BYTES_PER_BAG = 4
# Partial sums travel as 4-byte words whatever the row format (perfmodel.model_batch).
PARTIAL_ELEMENT_BYTES = 4
# A row of a range-stored table heavier than this share of its part's expected load is
# replicated on extra parts: cut points and LPT balance well only with items small next
# to a block.
REPLICATE_ABOVE_PART_SHARE = 0.25
# Tables stored as explicit row lists put a row heavier than this share of a part on
# every part: the rows left on one part each are then items of at most 5% of a part,
# which the partitioners and the move/swap pass pack to within the 5% imbalance goal.
REPLICATE_EVERYWHERE_ABOVE_PART_SHARE = 0.05
COLUMN_SLICE_CHOICES = (1, 2, 4, 8)
# Weight of the DPU side in the search's score, next to the modeled batch time.
DPU_TIE_BREAK = 0.05


# --------------------------------------------------------------------------- workload


@dataclass
class TableWorkload:
    """What a trace says about one table, scaled to one batch of ``batch_size`` bags.

    ``rows``/``load``: accessed rows, hottest first, and their expected lookups per
    batch on *future* traffic (:func:`expected_rank_loads`: counts shrunk by
    cross-fitting, since rows ranked hot partly because of luck regress to the mean);
    ``observed``: the same rows' lookups per batch in the trace itself; ``unranked``:
    expected lookups per batch of rows the trace did not rank (missing mass).
    ``pair_bag``/``pair_rank``: every distinct (bag, row) pair of the trace,
    the row given by its rank in ``rows`` -- enough to recount bag sizes once the
    hottest rows leave for the host cache.
    """

    table: int
    spec: TableSpec
    rows: np.ndarray
    load: np.ndarray
    pair_bag: np.ndarray
    pair_rank: np.ndarray
    num_bags: int
    batch_size: int
    observed: np.ndarray | None = None
    unranked: float = 0.0
    reliable: int = 0
    repeated: int = 0
    _hist_cache: dict = field(default_factory=dict, repr=False)

    @property
    def total_load(self) -> float:
        return float(self.load.sum()) + self.unranked

    def dpu_load(self, cached: int) -> float:
        """Expected lookups per batch left to the DPUs when the top ``cached`` rows are on the host."""
        return float(self.load[cached:].sum()) + self.unranked

    def bag_size_histogram(self, cached: int) -> np.ndarray:
        """``hist[u]`` = bags with ``u`` distinct DPU-served rows when the top ``cached`` rows are on the host."""
        if cached not in self._hist_cache:
            keep = self.pair_rank >= cached
            sizes = np.bincount(self.pair_bag[keep], minlength=self.num_bags)
            self._hist_cache[cached] = np.bincount(sizes)
        return self._hist_cache[cached]

    def fanout(self, parts: int, cached: int = 0) -> float:
        """Expected DPUs a bag's lookups reach when its rows fall into ``parts`` balanced parts at random.

        >>> from updlrm.partitioner.workloads import Trace
        >>> tr = Trace(1, 2, np.array([0, 1, 2, 3]), np.array([0, 2, 4]))
        >>> wl = table_workloads([TableSpec("a", 4, 4)], tr)[0]
        >>> wl.fanout(1), wl.fanout(2)
        (1.0, 1.5)
        """
        hist = self.bag_size_histogram(cached)
        u = np.arange(hist.size, dtype=np.float64)
        touched = parts * (1.0 - (1.0 - 1.0 / parts) ** u)
        return float((hist * touched).sum() / max(self.num_bags, 1))


def _fold_of_bag(trace: Trace, max_folds: int) -> tuple[np.ndarray, int]:
    """Fold of every global bag id: whole batches when there are several, else blocks of bags."""
    nb, B = trace.num_batches, trace.batch_size
    if nb >= 2:
        folds = min(nb, max_folds)
        return (np.arange(nb * B, dtype=np.int64) // B) * folds // nb, folds
    folds = min(B, max_folds)
    return np.arange(B, dtype=np.int64) * folds // max(B, 1), folds


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-increasing fit of ``values`` (pool-adjacent-violators).

    >>> _pool_adjacent_violators(np.array([3.0, 1, 2, 0]), np.ones(4)).tolist()
    [3.0, 1.5, 1.5, 0.0]
    """
    means: list[float] = []
    sizes: list[float] = []
    counts: list[int] = []
    for v, w in zip(values.tolist(), weights.tolist()):
        means.append(v)
        sizes.append(w)
        counts.append(1)
        while len(means) > 1 and means[-2] < means[-1]:
            w2, w1 = sizes.pop(), sizes[-1]
            m2, c2 = means.pop(), counts.pop()
            means[-1] = (means[-1] * w1 + m2 * w2) / (w1 + w2) if w1 + w2 > 0 else 0.0
            sizes[-1] = w1 + w2
            counts[-1] += c2
    return np.repeat(np.array(means, dtype=np.float64), counts)


def expected_rank_loads(rank: np.ndarray, fold: np.ndarray, counts: np.ndarray, folds: int,
                        row_ids: np.ndarray) -> tuple[np.ndarray, float]:
    """Out-of-sample lookups of the rows ranked by ``counts``, estimated by K-fold cross-fitting.

    ``counts`` are the rows' lookups in the trace, hottest first; every lookup is given
    by the position ``rank`` of its row and its ``fold`` (whole batches).  For each fold
    the rows are re-ranked on the *other* folds' counts (ties by row id, never by the
    held-out fold) and the held-out fold's lookups are credited to those rank
    positions.  Summed over folds this says how many lookups the i-th hottest row gets
    on traffic it was not selected on -- rows ranked hot by luck regress toward the
    mean.  Lookups of rows the other folds never saw cannot be ranked (no plan can
    cache or place them by name: the missing mass, as in Good-Turing); they are
    returned apart.  Positions of equal count are averaged (their rows are
    exchangeable) and the result is made non-increasing (pool-adjacent-violators),
    which keeps the hottest-first order and the total.

    Returns ``(per_row, unranked)``: expected lookups of each ranked row and of unseen
    rows, over the whole trace (the units of ``counts``; they add up to ``counts.sum()``).

    >>> # Row 0: 5 lookups in each of 4 folds; row 1: 14, all in fold 0; row 2: 3 per fold.
    >>> # Row 0 keeps its count; row 1's burst is traffic the other folds could not predict.
    >>> rank = np.repeat([0, 1, 2], [20, 14, 12])
    >>> fold = np.concatenate([np.repeat(np.arange(4), 5), np.zeros(14, int), np.tile(np.arange(4), 3)])
    >>> per_row, unranked = expected_rank_loads(rank, fold, np.array([20, 14, 12]), 4, np.array([0, 1, 2]))
    >>> per_row.tolist(), unranked
    ([20.0, 6.0, 6.0], 14.0)
    """
    n = counts.size
    if n == 0 or folds < 2:
        return counts.astype(np.float64), 0.0
    by_fold = np.bincount(rank * folds + fold, minlength=n * folds).reshape(n, folds)
    credited = np.zeros(n, dtype=np.float64)
    for k in range(folds):
        others = counts - by_fold[:, k]
        order = np.lexsort((row_ids, -others))
        seen = int(np.count_nonzero(others))
        credited[:seen] += by_fold[order[:seen], k]
    unranked = float(counts.sum() - credited.sum())
    # Average over runs of equal observed count (counts are non-increasing).
    starts = np.flatnonzero(np.r_[True, counts[1:] != counts[:-1]])
    sizes = np.diff(np.r_[starts, n]).astype(np.float64)
    block_mean = np.add.reduceat(credited, starts) / sizes
    return np.repeat(_pool_adjacent_violators(block_mean, sizes), sizes.astype(np.int64)), unranked


def table_workloads(tables: list[TableSpec], trace: Trace, batch_size: int | None = None,
                    min_count: int = 1, max_folds: int = 16) -> list[TableWorkload]:
    """Per-table expected loads and bag/row pairs of ``trace``, scaled to ``batch_size`` bags per batch.

    ``load`` is the cross-fitted out-of-sample estimate (:func:`expected_rank_loads`,
    up to ``max_folds`` folds of whole batches; ``max_folds=1`` keeps raw counts),
    ``observed`` the trace's own counts.  ``reliable`` counts the rows seen at least
    ``min_count`` times: only their loads are trusted for per-row decisions (caching,
    replication, graph partitioning).

    >>> from updlrm.partitioner.workloads import Trace
    >>> tr = Trace(1, 1, np.array([5, 5, 1, 5, 5, 2]), np.array([0, 3, 6]))  # two batches of one bag
    >>> wl = table_workloads([TableSpec("a", 8, 4)], tr)[0]
    >>> wl.rows.tolist(), wl.observed.tolist(), wl.load.tolist(), wl.unranked
    ([5, 1, 2], [2.0, 0.5, 0.5], [2.0, 0.0, 0.0], 1.0)
    """
    if trace.num_tables != len(tables):
        raise PlanError(f"the trace has {trace.num_tables} tables, the plan {len(tables)}")
    batch_size = trace.batch_size if batch_size is None else int(batch_size)
    num_bags = trace.num_batches * trace.batch_size
    scale = batch_size / max(num_bags, 1)
    fold_of_bag, folds = _fold_of_bag(trace, max_folds)
    out = []
    for t, st in enumerate(workload_stats(trace, tables)):
        rows, bags = trace.table_lookups(t)
        n = tables[t].num_embeddings
        order = np.argsort(st.rows)
        rank_of_lookup = (order[np.searchsorted(st.rows[order], rows)] if st.rows.size
                          else np.zeros(0, dtype=np.int64))
        expected, unranked = expected_rank_loads(rank_of_lookup, fold_of_bag[bags], st.counts, folds, st.rows)
        keys = np.unique(bags * n + rows)
        pair_bag, pair_row = np.divmod(keys, n)
        rank = order[np.searchsorted(st.rows[order], pair_row)] if st.rows.size else pair_row
        reliable = int(np.searchsorted(-st.counts, -min_count, side="right"))
        repeated = int(np.searchsorted(-st.counts, -2, side="right"))
        out.append(TableWorkload(t, tables[t], st.rows, expected * scale, pair_bag, rank.astype(np.int64),
                                 num_bags, batch_size, st.counts * scale, unranked * scale, reliable, repeated))
    return out


# --------------------------------------------------------------------------- cost model glue


class _WorkModel:
    """The partitioner's use of :mod:`updlrm.perfmodel`: part costs and whole-batch estimates.

    Mixed row formats share one ``BatchWork``: reductions are expressed in elements of
    the dominant format, scaled by the model's :func:`~updlrm.perfmodel.element_cycles`.
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
        self.row_format = max(by_format, key=by_format.get)
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

    def index_bytes(self, lookups, touched_bags):
        per_lookup = INDEX_BYTES_PER_LOOKUP * (2 if self.weighted else 1)
        return np.asarray(lookups) * per_lookup + (np.asarray(touched_bags) + 1) * OFFSET_BYTES_PER_BAG

    def kernel_s(self, lookups, row_bytes, index_bytes, output_bytes, reduce_elems) -> np.ndarray:
        cycles = perfmodel.kernel_cycles(self.profile, lookups=np.atleast_1d(np.asarray(lookups, np.float64)),
                                         row_bytes=row_bytes, index_bytes=index_bytes, output_bytes=output_bytes,
                                         reduce_elems=reduce_elems, row_format=self.row_format,
                                         weighted=self.weighted, nr_tasklets=self.nr_tasklets)
        return cycles / self.profile.dpu_frequency_hz

    def part_cost(self, lookups, row_bytes, index_bytes, output_bytes, reduce_elems) -> np.ndarray:
        """Modeled seconds a part adds to its DPU: kernel plus its share of both transfers."""
        return (self.kernel_s(lookups, row_bytes, index_bytes, output_bytes, reduce_elems)
                + np.asarray(index_bytes) * self.to_dpu_s_per_byte
                + np.asarray(output_bytes) * self.from_dpu_s_per_byte)

    def batch(self, *, lookups, row_bytes, index_bytes, output_bytes, reduce_elems, host_merge_elems,
              host_cache_lookups, host_cache_row_bytes) -> perfmodel.PhaseTimes:
        work = perfmodel.BatchWork(
            lookups=lookups, row_bytes=row_bytes, index_bytes=index_bytes, output_bytes=output_bytes,
            reduce_elems=reduce_elems, row_format=self.row_format, weighted=self.weighted,
            nr_tasklets=self.nr_tasklets, host_merge_elems=int(round(host_merge_elems)),
            host_cache_lookups=int(round(host_cache_lookups)), host_cache_row_bytes=int(round(host_cache_row_bytes)))
        return perfmodel.model_batch(work, self.profile)


@dataclass
class _Shape:
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


class _Search:
    """Coordinate descent over table shapes and the host-cache size, scored by the perfmodel."""

    def __init__(self, workloads: list[TableWorkload], model: _WorkModel, capacity: int, replicate: bool) -> None:
        self.wls = workloads
        self.model = model
        self.n = model.nr_dpus
        self.capacity = capacity
        self.replicate = replicate
        self.candidates = [self._candidates(wl) for wl in workloads]

    def _candidates(self, wl: TableWorkload) -> list[tuple[int, int]]:
        spec = wl.spec
        out = []
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

    def shape(self, t: int, parts: int, slices: int, cached: int) -> _Shape:
        wl, m = self.wls[t], self.model
        spec = wl.spec
        dpu_load = wl.dpu_load(cached)
        fanout = wl.fanout(parts, cached)
        slice_dim = spec.embedding_dim / slices
        bounds = column_bounds(spec, slices)
        row_bytes = float(np.mean([padded_row_bytes(hi - lo, spec.row_format) for lo, hi in zip(bounds[:-1], bounds[1:])]))
        out_bytes = math.ceil(slice_dim * PARTIAL_ELEMENT_BYTES / 8) * 8
        s = _Shape(parts, slices)
        s.part_lookups = dpu_load / parts
        touched = wl.batch_size * fanout / parts
        s.row_bytes = row_bytes
        s.index_bytes = float(m.index_bytes(s.part_lookups, touched))
        s.output_bytes = touched * out_bytes
        s.reduce_elems = s.part_lookups * slice_dim * m.elem_factor[t]
        s.part_cost = float(m.part_cost(s.part_lookups, row_bytes, s.index_bytes, s.output_bytes, s.reduce_elems)[0])
        s.merge_elems = wl.batch_size * fanout * spec.embedding_dim
        return s

    def estimate(self, shapes: list[_Shape], cached: np.ndarray) -> perfmodel.PhaseTimes:
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

    def score(self, shapes: list[_Shape], cached: np.ndarray) -> float:
        """Modeled batch time, plus a small share of the DPU side to break near-ties.

        With a host cache the batch takes ``max(host, dpu) + merge``: a move that speeds
        up the DPUs alone changes nothing until the cache shrinks, so without the tie-break
        the search would stall where the two sides meet.
        """
        t = self.estimate(shapes, cached)
        return t.total_s + DPU_TIE_BREAK * t.dpu_s

    def descend(self, shapes: list[_Shape], cached: np.ndarray, passes: int,
                local: bool = False) -> tuple[list[_Shape], float]:
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

    def initial(self, cached: np.ndarray) -> list[_Shape]:
        shapes = []
        share = max(1, self.n // max(len(self.wls), 1))
        for t in range(len(self.wls)):
            ks = [k for k, c in self.candidates[t] if c == self.candidates[t][0][1]]
            k = max([k for k in ks if k <= share] or [min(ks)])
            shapes.append(self.shape(t, k, self.candidates[t][0][1], int(cached[t])))
        return shapes


# --------------------------------------------------------------------------- rows of one table


@dataclass
class _RowPart:
    rows: range | np.ndarray


def _fill_by_cumulative(values: np.ndarray, deficits: np.ndarray) -> np.ndarray:
    """Deal consecutive items to blocks so that block ``j`` receives about ``deficits[j]`` of ``values``.

    >>> _fill_by_cumulative(np.ones(6), np.array([1.0, 2.0, 3.0])).tolist()
    [0, 1, 1, 2, 2, 2]
    """
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if values.sum() <= 0:
        # Weightless items (no expected traffic) only take MRAM: deal them by count.
        values = np.ones_like(values, dtype=np.float64)
    deficits = np.maximum(deficits, 0)
    if deficits.sum() <= 0:
        deficits = np.ones_like(deficits)
    cuts = np.cumsum(deficits) / deficits.sum() * values.sum()
    mid = np.cumsum(values) - values / 2
    return np.minimum(np.searchsorted(cuts, mid, side="right"), len(deficits) - 1).astype(np.int64)


def _replicas(load: np.ndarray, target: float, parts: int) -> np.ndarray:
    if parts <= 1 or target <= 0:
        return np.ones(load.size, dtype=np.int64)
    return np.clip(np.ceil(load / (REPLICATE_ABOVE_PART_SHARE * target)), 1, parts).astype(np.int64)


def _place_replicas(load: np.ndarray, copies: np.ndarray, part_load: np.ndarray) -> list[np.ndarray]:
    """Each replicated row onto its ``copies`` least-loaded parts; returns the parts per row."""
    out = []
    for w, r in zip(load, copies):
        chosen = np.argpartition(part_load, r - 1)[:r] if r < part_load.size else np.arange(part_load.size)
        part_load[chosen] += w / r
        out.append(np.sort(chosen))
    return out


def _best_transfer(src_items: np.ndarray, src_share: np.ndarray, dst_items: np.ndarray, dst_share: np.ndarray,
                   gap: float, allow_move: bool = True) -> tuple[float, int, int]:
    """The move (one item ``src -> dst``) or swap whose load change ``d`` lies in ``(0, gap)`` closest to ``gap/2``.

    Returns ``(d, src_item, dst_item)`` with ``dst_item = -1`` for a move; ``d = 0`` if none helps.
    Moving ``d`` of load from a part ``gap`` above another lowers the pair's maximum
    exactly when ``0 < d < gap``, the most at ``d = gap / 2``.

    >>> _best_transfer(np.array([0, 1]), np.array([5.0, 4.0]), np.array([2]), np.array([2.0]), 6.0)  # swap 5, 2
    (3.0, 0, 2)
    >>> _best_transfer(np.array([0, 1]), np.array([5.0, 3.0]), np.array([2]), np.array([2.0]), 6.0)  # move 3
    (3.0, 1, -1)
    """
    best = (0.0, -1, -1)
    half = gap / 2

    def consider(d: float, a: int, b: int) -> None:
        nonlocal best
        if 0 < d < gap and (best[0] == 0 or abs(d - half) < abs(best[0] - half)):
            best = (float(d), int(a), int(b))

    if allow_move and src_items.size:
        order = np.argsort(src_share, kind="stable")
        ss = src_share[order]
        for j in np.searchsorted(ss, half) + np.array([-1, 0]):
            if 0 <= j < ss.size:
                consider(ss[j], src_items[order[j]], -1)
    if src_items.size and dst_items.size:
        order = np.argsort(dst_share, kind="stable")
        ds = dst_share[order]
        # For every source item a, the destination item b with a - b nearest gap/2.
        pos = np.searchsorted(ds, src_share - half)
        for j in (pos - 1, pos):
            ok = np.flatnonzero((j >= 0) & (j < ds.size))
            d = src_share[ok] - ds[j[ok]]
            useful = np.flatnonzero((d > 0) & (d < gap))
            if useful.size:
                k = useful[np.argmin(np.abs(d[useful] - half))]
                consider(d[k], src_items[ok[k]], dst_items[order[j[ok[k]]]])
    return best


def _rebalance(item_row: np.ndarray, item_part: np.ndarray, item_share: np.ndarray, parts: int,
               room: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """Moves and swaps of items between parts until the heaviest part cannot get lighter; returns new parts.

    An item is a row (or one replica of a row, carrying its share of the row's load);
    two replicas of a row never share a part, and a part gains items only while it has
    ``room`` (rows of MRAM) left.  The partitioners balance well only with items small next
    to a part: with few heavy rows (small tables, replicas of hot rows) METIS's epsilon
    constraint and LPT leave parts several items apart, and with one part per DPU
    that spread is the DPUs' imbalance.  Each round takes the heaviest part and, over the
    lightest parts, the single move or swap that lowers the pair's maximum the most.

    >>> # Loads 10 and 2: moving the 4 evens them out.
    >>> _rebalance(np.arange(4), np.array([0, 0, 1, 1]), np.array([6.0, 4, 1, 1]), 2, np.full(2, 9)).tolist()
    [0, 1, 1, 1]
    >>> # Loads 7 and 5, no move helps: swapping the 4 for the 3 gives 6 and 6.
    >>> _rebalance(np.arange(4), np.array([0, 0, 1, 1]), np.array([4.0, 3, 3, 2]), 2, np.full(2, 9)).tolist()
    [1, 0, 0, 1]
    """
    item_part = item_part.copy()
    if parts < 2 or item_row.size == 0:
        return item_part
    load = np.bincount(item_part, weights=item_share, minlength=parts)
    room = room.astype(np.int64).copy()
    mean = float(load.mean())
    # Each round lowers the heaviest part (or a tie of it); a few rounds per part suffice.
    for _ in range(4 * parts + 64):
        src = int(np.argmax(load))
        if load[src] <= mean * (1 + tolerance):
            break
        in_src = np.flatnonzero(item_part == src)
        best_peak, best = float(load[src]), None
        # The lightest parts: the gap, and so the room for a good transfer, is largest there.
        for dst in np.argsort(load, kind="stable")[: min(parts - 1, 8)].tolist():
            gap = float(load[src] - load[dst])
            if gap <= 0:
                break
            in_dst = np.flatnonzero(item_part == dst)
            movable = in_src[~np.isin(item_row[in_src], item_row[in_dst])]
            back = in_dst[~np.isin(item_row[in_dst], item_row[in_src])]
            d, a, b = _best_transfer(movable, item_share[movable], back, item_share[back], gap,
                                     allow_move=room[dst] > 0)
            peak = max(load[src] - d, load[dst] + d)
            if d > 0 and peak < best_peak:
                best_peak, best = peak, (a, b, dst)
        if best is None:
            break
        a, b, dst = best
        item_part[a] = dst
        load[src] -= item_share[a]
        load[dst] += item_share[a]
        if b >= 0:
            item_part[b] = src
            load[dst] -= item_share[b]
            load[src] += item_share[b]
        else:
            room[dst] -= 1
            room[src] += 1
    return item_part


def _explicit_parts(wl: TableWorkload, trace: Trace, parts: int, cached: int, opts: "_Options",
                    row_capacity: int) -> tuple[list[_RowPart], dict]:
    spec = wl.spec
    # Traffic of rows the trace could not rank falls, as far as it can tell, on any row
    # alike: every row carries an even share of it on top of its own estimate, so rows
    # seen too rarely to be ranked are dealt by count rather than piled up as weightless.
    diffuse = wl.unranked / spec.num_embeddings
    rows, load = wl.rows[cached:], wl.load[cached:] + diffuse
    target = (float(load.sum()) + diffuse * (spec.num_embeddings - wl.rows.size)) / parts
    part_load = np.zeros(parts)
    # A heavy row goes on every part, not on just enough parts to cut it to a quarter of
    # one: shares of load/r on r < parts parts are items as coarse as the row's share, and
    # a small table made of such items leaves its parts an item apart whatever the
    # packing.  On every part, each replica serves the bags b = p (mod parts) (the
    # routing rule), so the parts get even shares and a bag's heavy rows meet on one DPU.
    heavy_rows = np.zeros(load.size, dtype=bool)
    if opts.replicate and parts > 1:
        heavy_rows[: max(wl.reliable - cached, 0)] = True
        heavy_rows &= load > REPLICATE_EVERYWHERE_ABOVE_PART_SHARE * target
    heavy = np.flatnonzero(heavy_rows)
    part_load += float(load[heavy].sum()) / parts
    rest = np.flatnonzero(~heavy_rows)
    rest_rows, rest_load = rows[rest], load[rest]
    # Hot set: the fewest remaining rows holding `hot_fraction` of the remaining load.
    covered = np.cumsum(rest_load)
    n_hot = int(np.searchsorted(covered, opts.hot_fraction * covered[-1])) + 1 if rest.size else 0
    # Rows seen once carry no co-occurrence evidence worth partitioning on.
    n_hot = min(n_hot, opts.max_hot_rows, int((rest < max(wl.repeated - cached, 0)).sum()))
    hot_rows, hot_load = rest_rows[:n_hot], rest_load[:n_hot]
    deficits = np.maximum(target - part_load, 0)
    method = "frequency"
    if parts > 1 and n_hot:
        budget = deficits * (hot_load.sum() / max(deficits.sum(), 1e-300)) * (1 + opts.epsilon)
        assignment = None
        if opts.graph == "hypergraph" and n_hot > parts:
            hg = cooccurrence_hypergraph(trace, wl.table, hot_rows)
            if hg.num_edges:
                assignment = hypergraph_partition(hg.num_vertices, hg.eptr, hg.eind, hg.edge_weights, hot_load,
                                                  budget, epsilon=opts.epsilon, seed=opts.seed)
                method = "mtkahypar"
        if assignment is None and opts.graph in ("auto", "graph") and n_hot > parts:
            adjacency = cooccurrence_graph(trace, wl.table, hot_rows, seed=opts.seed)
            if adjacency.nnz:
                assignment = graph_partition(adjacency, hot_load, budget, epsilon=opts.epsilon, seed=opts.seed)
                method = "metis"
        if assignment is None:
            assignment = frequency_partition(hot_load, budget)
    else:
        assignment = np.zeros(n_hot, dtype=np.int64)
    np.add.at(part_load, assignment, hot_load)
    # Cold accessed rows top every part up to the common target, in row-id order.
    cold_rows, cold_load = rest_rows[n_hot:], rest_load[n_hot:]
    order = np.argsort(cold_rows)
    cold_rows, cold_load = cold_rows[order], cold_load[order]
    cold_part = _fill_by_cumulative(cold_load, target - part_load)
    np.add.at(part_load, cold_part, cold_load)
    # Rows never looked up (and not host-cached) carry only the diffuse share: even them out by count.
    held = np.zeros(spec.num_embeddings, dtype=bool)
    held[wl.rows] = True
    unseen = np.flatnonzero(~held)
    counts = np.full(parts, float(heavy.size))
    np.add.at(counts, assignment, 1)
    np.add.at(counts, cold_part, 1)
    room = np.maximum(row_capacity - counts, 0)
    even = np.maximum((counts.sum() + unseen.size) / parts - counts, 0)
    unseen_part = _fill_by_cumulative(np.ones(unseen.size), np.minimum(even, room) if np.minimum(even, room).sum()
                                      >= unseen.size else room)
    # The rows on one part each, rebalanced so that no part is left items above the others
    # (the replicated rows load every part alike).
    item_row = np.concatenate([hot_rows, cold_rows]).astype(np.int64)
    item_part = np.concatenate([assignment, cold_part]).astype(np.int64)
    np.add.at(counts, unseen_part, 1)
    item_part = _rebalance(item_row, item_part, np.concatenate([hot_load, cold_load]), parts,
                           row_capacity - counts)
    out = []
    for p in range(parts):
        chunks = [rows[heavy], item_row[item_part == p], unseen[unseen_part == p]]
        out.append(_RowPart(np.sort(np.concatenate(chunks)).astype(np.int64)))
    info = {"partitioner": method, "hot_rows": int(n_hot), "replicated_rows": int(heavy.size),
            "max_replicas": parts if heavy.size else 1}
    return out, info


def _range_parts(wl: TableWorkload, parts: int, cached: int, opts: "_Options", row_capacity: int,
                 max_extra: int) -> tuple[list[_RowPart], dict]:
    n = wl.spec.num_embeddings
    diffuse = wl.unranked / n  # see _explicit_parts
    rows, load = wl.rows[cached:], wl.load[cached:] + diffuse
    target = float(load.sum()) / parts
    copies = _replicas(load, target, parts) if opts.replicate else np.ones(load.size, dtype=np.int64)
    copies[max(wl.reliable - cached, 0):] = 1
    copies = np.minimum(copies, max_extra + 1)
    extra = int(copies.max()) - 1 if copies.size else 0
    # The home range keeps 1/r of a replicated row's load; cut points balance that load,
    # blended with row count so that no range outgrows MRAM.
    order = np.argsort(rows)
    srows, sload = rows[order], (load / copies)[order]
    total = float(sload.sum()) + diffuse * (n - srows.size)
    cuts = [0]
    for j in range(1, parts):
        want = j / parts
        # Find x with 0.9*load_share(x) + 0.1*row_share(x) = want by bisection on rows.
        lo, hi = cuts[-1], n
        while lo < hi:
            mid = (lo + hi) // 2
            below = float(sload[: np.searchsorted(srows, mid)].sum()) + diffuse * (mid - np.searchsorted(srows, mid))
            share = 0.9 * (below / total if total else mid / n) + 0.1 * mid / n
            if share < want:
                lo = mid + 1
            else:
                hi = mid
        cuts.append(max(lo, cuts[-1]))
    cuts.append(n)
    out: list[_RowPart] = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        for start in range(a, b, max(row_capacity, 1)):
            out.append(_RowPart(range(start, min(b, start + row_capacity))))
    if extra:
        extra_load = np.zeros(extra)
        members: list[list[int]] = [[] for _ in range(extra)]
        heavy = np.flatnonzero(copies > 1)
        for row, chosen in zip(rows[heavy], _place_replicas(load[heavy], copies[heavy] - 1, extra_load)):
            for p in chosen:
                members[p].append(int(row))
        out.extend(_RowPart(np.array(sorted(m), dtype=np.int64)) for m in members if m)
    info = {"partitioner": "ranges", "hot_rows": 0, "replicated_rows": int((copies > 1).sum()),
            "max_replicas": int(copies.max()) if copies.size else 1}
    return out, info


# --------------------------------------------------------------------------- build


@dataclass
class _Options:
    hot_fraction: float
    max_hot_rows: int
    graph: str
    replicate: bool
    host_cache: bool
    epsilon: float
    seed: int


def build_plan(
    tables: list[TableSpec],
    trace_or_stats: Trace,
    topology: Topology | int,
    *,
    profile: str | perfmodel.HardwareProfile = DEFAULT_PROFILE,
    batch_size: int | None = None,
    hot_fraction: float = 0.9,
    max_hot_rows: int = 20_000,
    min_count: int = 8,
    cache: str = "auto",
    host_cache_bytes: int = 256 << 20,
    graph: str = "auto",
    nr_tasklets: int = 16,
    mram_reserved_bytes: int = 8 << 20,
    explicit_row_limit: int = 1 << 21,
    epsilon: float = 0.03,
    seed: int = 0,
    progress: bool = True,
) -> Plan:
    """A placement of ``tables`` on ``topology`` tuned to the workload in ``trace_or_stats``.

    * ``profile``: the hardware the plan is tuned for (:func:`updlrm.perfmodel.get_profile`).
    * ``batch_size``: bags per batch the plan is tuned for (default: the trace's).
    * ``min_count``: rows seen fewer times in the trace are too noisy to replicate or
      partition one by one; they are spread in bulk.  (The host cache ranks every row by
      its cross-fitted expected load, see :func:`table_workloads`.)
    * ``hot_fraction``/``max_hot_rows``: share of a table's DPU lookups whose rows go
      through the graph partitioner (at most ``max_hot_rows`` rows seen twice or more).
    * ``graph``: ``graph``: METIS on the co-occurrence graph (clique expansion of the
      bags); ``hypergraph``: Mt-KaHyPar on the bag hypergraph (km1, deterministic
      preset -- cuts a few percent lower, but takes seconds per table where METIS takes
      a fraction of one); ``none``: frequency-only LPT; ``auto``: builds the rows both
      with METIS and frequency-only and keeps the plan the model finds faster on the
      trace (lower fan-out can come with burstier per-batch DPU load).
    * ``cache``: ``auto`` (replicate hot rows and host-cache rows when the model says it
      pays), ``replicate``, ``host`` or ``none``; the host cache holds at most
      ``host_cache_bytes`` of rows.
    * ``mram_reserved_bytes``: MRAM per DPU kept for the kernel's batch buffers.
    * ``explicit_row_limit``: tables with more rows are stored as contiguous ranges.

    Deterministic for a given ``seed``.  Raises :class:`~updlrm.plan.PlanError` naming
    the table and the shortfall when the tables do not fit.

    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8), TableSpec("b", 300, 8)]
    >>> tr = synthetic_trace(tables, batch_size=64, pooling=4, seed=1)
    >>> p = build_plan(tables, tr, Topology(8), progress=False)
    >>> sorted(p.metadata["strategy"])
    ['a', 'b']
    """
    started = time.perf_counter()
    tables = list(tables)
    if isinstance(topology, int):
        topology = Topology(topology)
    if cache not in CACHE_MODES:
        raise PlanError(f"unknown cache mode {cache!r}; choose one of {', '.join(CACHE_MODES)}")
    if graph not in GRAPH_MODES:
        raise PlanError(f"unknown graph mode {graph!r}; choose one of {', '.join(GRAPH_MODES)}")
    if not isinstance(trace_or_stats, Trace):
        raise PlanError("build_plan needs a Trace (bags are needed for fan-out and co-occurrence)")
    if not 0.0 <= hot_fraction <= 1.0:
        raise PlanError(f"hot_fraction must be within [0, 1], got {hot_fraction}")
    trace = trace_or_stats
    n = topology.nr_dpus
    capacity = topology.mram_bytes_per_dpu - mram_reserved_bytes
    if capacity <= 0:
        raise PlanError(f"mram_reserved_bytes={mram_reserved_bytes} leaves no MRAM for rows")
    _check_total_capacity(tables, n, capacity)
    hw = perfmodel.get_profile(profile, nr_dpus=n)
    opts = _Options(hot_fraction, max_hot_rows, graph, cache in ("auto", "replicate"),
                    cache in ("auto", "host"), epsilon, seed)
    bar = _progress(progress, 3 + len(["none", "graph"] if graph == "auto" else [graph]))

    bar.set_description("workload statistics")
    wls = table_workloads(tables, trace, batch_size, min_count)
    batch = wls[0].batch_size if wls else (batch_size or trace.batch_size)
    weighted = trace.per_sample_weights is not None
    model = _WorkModel(tables, hw, n, weighted, nr_tasklets, [wl.total_load for wl in wls])
    bar.update(1)

    bar.set_description("layout search")
    search = _Search(wls, model, capacity, opts.replicate)
    cached = np.zeros(len(tables), dtype=np.int64)
    shapes = search.initial(cached)
    shapes, best = search.descend(shapes, cached, passes=2)
    if opts.host_cache:
        # The host cache takes lookups off the DPUs down to a common level: every table
        # caches the shortest prefix of its hottest rows that brings its parts' modeled
        # cost to the level, so the DPUs stay balanced whichever side is the bottleneck
        # (host time grows with the lookups served, not with which rows serve them).
        # The level is searched on a geometric grid, then a finer one around the best,
        # each point with a local re-shaping of the tables (the two choices interact).
        levels = [max(s.part_cost for s in shapes) * 2 ** (-i / 2) for i in range(1, 41)]
        best_level = None
        for round_ in range(2):
            for level in levels:
                trial_cached = _cached_for_level(wls, shapes, level, host_cache_bytes)
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
    bar.update(1)

    def row_capacity(spec: TableSpec, slices: int) -> int:
        bounds = column_bounds(spec, slices)
        return max(1, capacity // max(padded_row_bytes(hi - lo, spec.row_format)
                                      for lo, hi in zip(bounds[:-1], bounds[1:])))

    host_rows = {t: np.sort(wl.rows[: int(cached[t])]) for t, wl in enumerate(wls) if cached[t] > 0}
    # graph="auto" builds the rows both ways and keeps what the model prefers on the
    # trace: grouping co-occurring rows cuts fan-out, but also makes a DPU's load burstier
    # from batch to batch (a bag's topic lands on one DPU), which can cost more kernel
    # time at the straggler than the saved partial sums are worth.
    row_methods = ["none", "graph"] if graph == "auto" else [graph]
    candidates = []
    for method in row_methods:
        method_opts = dataclasses.replace(opts, graph=method)
        parts_by_table: list[list[_RowPart]] = []
        infos = []
        for t, (wl, s) in enumerate(zip(wls, shapes)):
            bar.set_description(f"rows of {wl.spec.name} ({method})")
            row_cap = row_capacity(wl.spec, s.slices)
            if wl.spec.num_embeddings <= explicit_row_limit:
                parts, info = _explicit_parts(wl, trace, s.parts, int(cached[t]), method_opts, row_cap)
            else:
                parts, info = _range_parts(wl, s.parts, int(cached[t]), method_opts, row_cap,
                                           max_extra=max(0, n // s.slices - s.parts))
            # Parts left empty (every row host-cached, or fewer rows than parts) need no DPU.
            parts_by_table.append([part for part in parts if len(part.rows)])
            infos.append(info)
        bar.set_description(f"assigning DPUs ({method})")
        shards = _assign(tables, wls, parts_by_table, shapes, host_rows, model, n, capacity, trace)
        plan = Plan(tables=tables, topology=topology, shards=shards, host_rows=host_rows,
                    workload_hash=trace.hash(), metadata={})
        report = evaluate_plan(plan, trace, hw, nr_tasklets=nr_tasklets, batch_size=batch)
        candidates.append((report.modeled.total_s, method, plan, report, infos))
        bar.update(1)
    _, chosen, plan, report, infos = min(candidates, key=lambda c: c[0])
    plan.validate(mram_reserved_bytes)
    plan.expected_load = report.load_per_dpu
    strategy = {}
    for t, (spec, s, info) in enumerate(zip(tables, shapes, infos)):
        layout = ("table_wise" if s.parts == 1 and s.slices == 1 else "row_wise" if s.slices == 1
                  else "column_wise" if s.parts == 1 else "tiled")
        strategy[spec.name] = {"layout": layout, "row_parts": s.parts, "column_slices": s.slices,
                               "shards": len(plan.shards_of(t)),
                               "storage": "ranges" if spec.num_embeddings > explicit_row_limit else "explicit",
                               "host_rows": int(cached[t]), "expected_fanout": report.fanout_per_table[t], **info}
    plan.metadata = {
        "builder": "updlrm.partitioner.build_plan",
        "tables_hash": tables_hash(tables),
        "profile": hw.name,
        "batch_size": batch,
        "options": {"cache": cache, "graph": graph, "hot_fraction": hot_fraction, "max_hot_rows": max_hot_rows,
                    "min_count": min_count,
                    "host_cache_bytes": host_cache_bytes, "nr_tasklets": nr_tasklets,
                    "mram_reserved_bytes": mram_reserved_bytes, "seed": seed},
        "strategy": strategy,
        "search_estimate_s": best,
        "row_assignment": {"chosen": chosen, "modeled_s": {m: c[0] for c, m in zip(candidates, row_methods)}},
        **report.summary_dict(),
        "build_time_s": time.perf_counter() - started,
    }
    bar.update(1)
    bar.close()
    return plan


def _progress(enabled: bool, total: int):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", leave=False)


def _check_total_capacity(tables: list[TableSpec], n: int, capacity: int) -> None:
    free = n * capacity
    for spec in sorted(tables, key=lambda s: s.num_embeddings * s.row_bytes()):
        need = spec.num_embeddings * spec.row_bytes()
        if need > free:
            raise PlanError(f"table {spec.name} needs {format_bytes(need)}, {format_bytes(max(free, 0))} of MRAM "
                            f"free on {n} DPUs (after the smaller tables)")
        free -= need


def _cached_for_level(wls: list[TableWorkload], shapes: list[_Shape], level: float,
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


def _assign(tables, wls, parts_by_table, shapes, host_rows, model: _WorkModel, n: int, capacity: int,
            trace: Trace) -> list[Shard]:
    """Longest-processing-time first: each part onto the cheapest DPU with room and no part of its table."""
    items = []  # (cost, table, part, lo, hi, bytes, lookups, row_bytes, index_bytes, output_bytes, reduce)
    for t, parts in enumerate(parts_by_table):
        spec = tables[t]
        lookups, touched = _part_traffic(wls[t], parts, host_rows.get(t), trace)
        bounds = column_bounds(spec, shapes[t].slices)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rb = padded_row_bytes(hi - lo, spec.row_format)
            out_b = math.ceil((hi - lo) * PARTIAL_ELEMENT_BYTES / 8) * 8
            idx = model.index_bytes(lookups, touched)
            cost = model.part_cost(lookups, np.full(len(parts), rb), idx, touched * out_b,
                                   lookups * (hi - lo) * model.elem_factor[t])
            for p, part in enumerate(parts):
                items.append((float(cost[p]), t, p, lo, hi, len(part.rows) * rb))
    items.sort(key=lambda it: (-it[0], it[1], it[2], it[3]))
    dpu_cost = np.zeros(n)
    dpu_free = np.full(n, capacity, dtype=np.int64)
    holds = np.zeros((len(tables), n), dtype=bool)
    placed: dict[tuple[int, int, int], int] = {}
    for cost, t, p, lo, hi, nbytes in items:
        eligible = ~holds[t] & (dpu_free >= nbytes)
        if not eligible.any():
            spec = tables[t]
            raise PlanError(f"table {spec.name}: a shard of {format_bytes(nbytes)} fits on no DPU without "
                            f"another shard of the table ({format_bytes(int(dpu_free.max()))} MRAM free at most, "
                            f"{int((~holds[t]).sum())} DPUs without it)")
        d = int(np.argmin(np.where(eligible, dpu_cost, np.inf)))
        dpu_cost[d] += cost
        dpu_free[d] -= nbytes
        holds[t, d] = True
        placed[(t, p, lo)] = d
    shards = []
    for t, parts in enumerate(parts_by_table):
        bounds = column_bounds(tables[t], shapes[t].slices)
        for p, part in enumerate(parts):
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                shards.append(Shard(t, placed[(t, p, lo)], lo, hi, part.rows))
    return shards


def _part_traffic(wl: TableWorkload, parts: list[_RowPart], host: np.ndarray | None,
                  trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Expected lookups and touched bags per batch of each row part, routed as the engine would."""
    spec = wl.spec
    if not parts:
        return np.zeros(0), np.zeros(0)
    tmp = Plan([spec], Topology(len(parts)), [Shard(0, p, 0, spec.embedding_dim, part.rows)
                                              for p, part in enumerate(parts)])
    if host is not None:
        tmp.host_rows[0] = host
    rows, bags = trace.table_lookups(wl.table)
    keep = ~host_mask(tmp, 0, rows)
    rows, bags = rows[keep], bags[keep]
    shard = SliceRouter(tmp, 0, 0).route_shards(rows, bags % trace.batch_size)
    scale = wl.batch_size / max(wl.num_bags, 1)
    lookups = np.bincount(shard, minlength=len(parts)) * scale
    touched_keys = np.unique(bags * len(parts) + shard)
    touched = np.bincount(touched_keys % len(parts), minlength=len(parts)) * scale
    return lookups.astype(np.float64), touched.astype(np.float64)


# --------------------------------------------------------------------------- evaluation


@dataclass
class PlanReport:
    """How a plan serves a trace, per batch on average, with the perfmodel's phase times.

    ``load_per_dpu``: mean lookups per batch of each DPU; ``imbalance``: max/mean of it
    over all DPUs of the topology; ``kernel_imbalance``: the same for modeled kernel
    time; ``batch_imbalance``: max/mean of the DPUs' lookups within each batch,
    averaged over batches (what the straggler of a batch sees: a placement balanced on
    average can still be bursty from batch to batch).  ``mean_fanout``: DPUs a (sample, table) bag's lookups reach, per column slice,
    over bags with at least one DPU lookup.  Bytes are per batch, ``*_padded`` with every
    DPU of a rank padded to the rank's largest buffer (as parallel transfers are).
    """

    num_batches: int
    batch_size: int
    load_per_dpu: np.ndarray
    kernel_s_per_dpu: np.ndarray
    imbalance: float
    kernel_imbalance: float
    batch_imbalance: float
    mean_fanout: float
    fanout_per_table: list[float]
    bytes_in: float
    bytes_out: float
    bytes_in_padded: float
    bytes_out_padded: float
    mram_bytes_per_dpu: np.ndarray
    host_cache_hit_rate: float
    modeled: perfmodel.PhaseTimes

    @property
    def load_min(self) -> float:
        return float(self.load_per_dpu.min())

    @property
    def load_mean(self) -> float:
        return float(self.load_per_dpu.mean())

    @property
    def load_max(self) -> float:
        return float(self.load_per_dpu.max())

    def summary_dict(self) -> dict:
        """JSON-ready scalars (what ``plan.metadata`` stores)."""
        return {
            "modeled": {k: v for k, v in self.modeled.as_dict().items()},
            "imbalance": self.imbalance,
            "kernel_imbalance": self.kernel_imbalance,
            "batch_imbalance": self.batch_imbalance,
            "load_min": self.load_min, "load_mean": self.load_mean, "load_max": self.load_max,
            "mean_fanout": self.mean_fanout,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "bytes_in_padded": self.bytes_in_padded, "bytes_out_padded": self.bytes_out_padded,
            "mram_max_bytes": int(self.mram_bytes_per_dpu.max()),
            "mram_total_bytes": int(self.mram_bytes_per_dpu.sum()),
            "host_cache_hit_rate": self.host_cache_hit_rate,
        }


def _padded_total(per_dpu: np.ndarray, per_rank: int) -> float:
    n = per_dpu.size
    ranks = -(-n // per_rank)
    padded = np.zeros(ranks * per_rank)
    padded[:n] = per_dpu
    rank_max = padded.reshape(ranks, per_rank).max(axis=1)
    dpus = np.minimum(per_rank, n - per_rank * np.arange(ranks))
    return float((rank_max * dpus).sum())


@dataclass
class _Routed:
    """Per batch (rows) and DPU (columns): what routing the trace through a plan asks for."""

    lookups: np.ndarray
    row_bytes: np.ndarray
    index_bytes: np.ndarray
    output_bytes: np.ndarray
    reduce_elems: np.ndarray
    merge_elems: np.ndarray
    host_lookups: np.ndarray
    host_row_bytes: np.ndarray
    fanout_per_table: list[float]
    mean_fanout: float
    host_cache_hit_rate: float

    def work(self, i: int, model: _WorkModel) -> perfmodel.BatchWork:
        return perfmodel.BatchWork(
            lookups=self.lookups[i], row_bytes=self.row_bytes[i], index_bytes=self.index_bytes[i],
            output_bytes=self.output_bytes[i], reduce_elems=self.reduce_elems[i], row_format=model.row_format,
            weighted=model.weighted, nr_tasklets=model.nr_tasklets,
            host_merge_elems=int(round(self.merge_elems[i])), host_cache_lookups=int(round(self.host_lookups[i])),
            host_cache_row_bytes=int(round(self.host_row_bytes[i])))


def _route_trace(plan: Plan, trace: Trace, model: _WorkModel, scale: float) -> _Routed:
    n = plan.topology.nr_dpus
    nb, B = trace.num_batches, trace.batch_size
    shape = (nb, n)
    lookups = np.zeros(shape)
    lookup_bytes = np.zeros(shape)
    touched = np.zeros(shape)
    out_bytes = np.zeros(shape)
    reduce = np.zeros(shape)
    segments = np.zeros(shape)
    merge = np.zeros(nb)
    host_lookups = np.zeros(nb)
    host_bytes = np.zeros(nb)
    nr_shards = max(len(plan.shards), 1)
    dpu_of_shard = np.array([s.dpu for s in plan.shards], dtype=np.int64)
    fanout_per_table = []
    fan_sum = fan_bags = 0.0
    total_lookups = 0
    for t, spec in enumerate(plan.tables):
        rows, bags = trace.table_lookups(t)
        if rows.size and int(rows.max()) >= spec.num_embeddings:
            raise PlanError(f"table {spec.name}: the trace looks up row {int(rows.max())}, "
                            f"the table has {spec.num_embeddings}")
        total_lookups += rows.size
        on_host = host_mask(plan, t, rows)
        per_batch = np.bincount(bags[on_host] // B, minlength=nb)
        host_lookups += per_batch
        host_bytes += per_batch * spec.row_bytes()
        rows, bags = rows[~on_host], bags[~on_host]
        batch_of = bags // B
        t_fan = t_bags = 0.0
        routed_slices: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for lo, hi in column_slices(plan, t):
            if rows.size == 0:
                continue
            # Slices whose shards hold the same row sets in the same order route alike:
            # route (and dedup) once, then rename the shards.
            members = [i for i in plan.shards_of(t) if plan.shards[i].col_start == lo]
            signature = tuple(_rows_signature(plan.shards[i].rows) for i in members)
            if signature in routed_slices:
                first_members, shard0, pairs0 = routed_slices[signature]
                rename = np.zeros(nr_shards, dtype=np.int64)
                rename[first_members] = members
                shard = rename[shard0]
                p_bag, p_shard = pairs0[0], rename[pairs0[1]]
            else:
                shard = SliceRouter(plan, t, lo).route_shards(rows, bags % B)
                pairs = np.unique(bags * nr_shards + shard)
                p_bag, p_shard = np.divmod(pairs, nr_shards)
                routed_slices[signature] = (np.array(members), shard, (p_bag, p_shard))
            cnt = np.bincount(batch_of * n + dpu_of_shard[shard], minlength=nb * n).reshape(shape)
            lookups += cnt
            lookup_bytes += cnt * padded_row_bytes(hi - lo, spec.row_format)
            reduce += cnt * (hi - lo) * model.elem_factor[t]
            # One partial sum per (bag, shard) with at least one lookup.
            p_dpu = dpu_of_shard[p_shard]
            tcnt = np.bincount((p_bag // B) * n + p_dpu, minlength=nb * n).reshape(shape)
            touched += tcnt
            out_bytes += tcnt * (math.ceil((hi - lo) * PARTIAL_ELEMENT_BYTES / 8) * 8)
            # Each shard with work in a batch is one segment of the DPU's input.
            seg = np.unique((p_bag // B) * nr_shards + p_shard)
            segments += np.bincount((seg // nr_shards) * n + dpu_of_shard[seg % nr_shards],
                                    minlength=nb * n).reshape(shape)
            merge += np.bincount(p_bag // B, minlength=nb) * (hi - lo)
            # Fan-out: distinct DPUs per bag (shards of one slice sit on distinct DPUs).
            bag_dpus = np.bincount(p_bag, minlength=nb * B)
            nonempty = bag_dpus > 0
            t_fan += float(bag_dpus[nonempty].sum())
            t_bags += float(nonempty.sum())
        fanout_per_table.append(t_fan / t_bags if t_bags else 0.0)
        fan_sum += t_fan
        fan_bags += t_bags
    hit_rate = float(host_lookups.sum() / total_lookups) if total_lookups else 0.0
    per_lookup = INDEX_BYTES_PER_LOOKUP * (2 if model.weighted else 1)
    index_bytes = lookups * per_lookup + (touched + segments) * OFFSET_BYTES_PER_BAG
    row_bytes = np.divide(lookup_bytes, lookups, out=np.full(shape, 8.0), where=lookups > 0)
    host_row_bytes = np.divide(host_bytes, host_lookups, out=np.zeros(nb), where=host_lookups > 0)
    return _Routed(lookups * scale, row_bytes, index_bytes * scale, out_bytes * scale, reduce * scale,
                   merge * scale, host_lookups * scale, host_row_bytes, fanout_per_table,
                   fan_sum / fan_bags if fan_bags else 0.0, hit_rate)


def _batch_imbalance(lookups: np.ndarray) -> float:
    """Mean over batches (rows) of max/mean lookups over DPUs (columns); 1.0 for batches without DPU work.

    >>> _batch_imbalance(np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    1.3333333333333333
    """
    mean = lookups.mean(axis=1)
    ratio = np.divide(lookups.max(axis=1), mean, out=np.ones_like(mean), where=mean > 0)
    return float(ratio.mean()) if ratio.size else 1.0


def _rows_signature(rows: range | np.ndarray) -> tuple:
    if isinstance(rows, range):
        return ("range", rows.start, rows.stop)
    return ("array", id(rows), rows.size)


def _batch_works(plan: Plan, trace: Trace, routed: _Routed, model: _WorkModel,
                 scale: float) -> list[perfmodel.BatchWork]:
    """Per batch, the work exactly as the engine counts it (:func:`updlrm.profile.derive_work`:
    segments, per-tasklet partials, headers), or the routed estimate when the counts are
    rescaled to another batch size or a batch would need several launches."""
    if scale == 1.0:
        from updlrm.profile import derive_work

        cache: dict = {}
        try:
            return [derive_work(plan, *trace.batch(i), nr_tasklets=model.nr_tasklets, router_cache=cache)
                    for i in range(trace.num_batches)]
        except PlanError:
            pass
    return [routed.work(i, model) for i in range(trace.num_batches)]


def evaluate_plan(plan: Plan, trace: Trace, profile: str | perfmodel.HardwareProfile = DEFAULT_PROFILE, *,
                  nr_tasklets: int = 16, batch_size: int | None = None) -> PlanReport:
    """Route every lookup of ``trace`` through ``plan`` and model each batch with the perfmodel.

    Works on any trace over the plan's tables, including one the plan was not built
    from.  Per batch, each DPU's lookups, index and output bytes are counted as the
    engine counts them (:func:`updlrm.profile.derive_work`) into a
    :class:`~updlrm.perfmodel.BatchWork`; the reported phases are the means over the
    batches.  ``batch_size`` rescales counts
    to another batch size (default: the trace's).

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> r = evaluate_plan(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])))
    >>> r.load_per_dpu.tolist(), r.mean_fanout
    ([2.0, 1.0], 1.0)
    """
    if trace.num_tables != len(plan.tables):
        raise PlanError(f"the trace has {trace.num_tables} tables, the plan {len(plan.tables)}")
    n = plan.topology.nr_dpus
    hw = perfmodel.get_profile(profile, nr_dpus=n)
    B = trace.batch_size
    scale = (B if batch_size is None else batch_size) / B
    loads = [float(len(trace.table_lookups(t)[0])) for t in range(len(plan.tables))]
    model = _WorkModel(plan.tables, hw, n, trace.per_sample_weights is not None, nr_tasklets, loads)
    routed = _route_trace(plan, trace, model, scale)
    nb = trace.num_batches
    works = _batch_works(plan, trace, routed, model, scale)
    phases = [perfmodel.model_batch(w, hw) for w in works]
    mean_phases = perfmodel.PhaseTimes(
        **{f: float(np.mean([getattr(p, f) for p in phases]))
           for f in ("cpu_to_dpu_s", "launch_s", "kernel_s", "dpu_to_cpu_s", "host_merge_s", "host_cache_s")},
        per_dpu_kernel_s=np.mean([p.per_dpu_kernel_s for p in phases], axis=0),
        energy_j=None if phases[0].energy_j is None else float(np.mean([p.energy_j for p in phases])))
    load = routed.lookups.mean(axis=0)
    kernel = mean_phases.per_dpu_kernel_s
    per_rank = plan.topology.dpus_per_rank
    return PlanReport(
        num_batches=nb,
        batch_size=int(round(B * scale)),
        load_per_dpu=load,
        kernel_s_per_dpu=kernel,
        imbalance=float(load.max() / load.mean()) if load.mean() > 0 else 1.0,
        kernel_imbalance=float(kernel.max() / kernel.mean()) if kernel.mean() > 0 else 1.0,
        batch_imbalance=_batch_imbalance(routed.lookups),
        mean_fanout=routed.mean_fanout,
        fanout_per_table=routed.fanout_per_table,
        bytes_in=float(np.mean([w.index_bytes.sum() for w in works])),
        bytes_out=float(np.mean([w.output_bytes.sum() for w in works])),
        bytes_in_padded=float(np.mean([_padded_total(w.index_bytes, per_rank) for w in works])),
        bytes_out_padded=float(np.mean([_padded_total(w.output_bytes, per_rank) for w in works])),
        mram_bytes_per_dpu=plan.mram_bytes_per_dpu(),
        host_cache_hit_rate=routed.host_cache_hit_rate,
        modeled=mean_phases,
    )


def shard_loads(plan: Plan, trace: Trace) -> np.ndarray:
    """Mean lookups per batch that each shard of ``plan`` serves on ``trace`` (routed as the engine does).

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> shard_loads(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3]))).tolist()
    [2.0, 1.0]
    """
    load = np.zeros(len(plan.shards))
    for t in range(len(plan.tables)):
        rows, bags = trace.table_lookups(t)
        keep = ~host_mask(plan, t, rows)
        rows, bags = rows[keep], bags[keep] % trace.batch_size
        routed: dict[tuple, tuple[list[int], np.ndarray]] = {}
        for lo, _ in column_slices(plan, t):
            members = [i for i in plan.shards_of(t) if plan.shards[i].col_start == lo]
            signature = tuple(_rows_signature(plan.shards[i].rows) for i in members)
            if signature not in routed:
                shard = SliceRouter(plan, t, lo).route_shards(rows, bags) if rows.size else np.zeros(0, np.int64)
                routed[signature] = (members, np.bincount(shard, minlength=len(plan.shards))[members])
            load[members] += routed[signature][1]
    return load / max(trace.num_batches, 1)


def imbalance_breakdown(plan: Plan, trace: Trace) -> dict:
    """The DPU load imbalance (max/mean) of ``plan`` on ``trace`` as a product of three factors.

    * ``idle``: DPUs / DPUs that serve lookups (DPUs with no shard, or only shards of
      rows nobody looks up, e.g. MRAM filled by a host-cached table);
    * ``across_tables``: the heaviest table's mean shard load over the mean load of
      the serving DPUs (tables whose parts come out at different levels);
    * ``within_tables``: the heaviest DPU over that heaviest table mean (uneven parts of
      a table, or several shards on one DPU).

    ``imbalance = idle * across_tables * within_tables``; ``heaviest_table`` names the
    table of the second factor, ``max_dpu_tables`` the tables with a shard on the
    heaviest DPU.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(3))
    >>> b = imbalance_breakdown(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])))
    >>> b["serving_dpus"], b["idle"], round(b["across_tables"], 3), b["within_tables"], b["imbalance"]
    (2, 1.5, 0.667, 2.0, 2.0)
    """
    n = plan.topology.nr_dpus
    per_shard = shard_loads(plan, trace)
    dpu_of = np.array([s.dpu for s in plan.shards], dtype=np.int64)
    table_of = np.array([s.table for s in plan.shards], dtype=np.int64)
    per_dpu = np.bincount(dpu_of, weights=per_shard, minlength=n)
    total = float(per_dpu.sum())
    if total <= 0:
        return {"imbalance": 1.0, "idle": 1.0, "across_tables": 1.0, "within_tables": 1.0, "serving_dpus": 0,
                "dpus_without_shard": n - int(np.unique(dpu_of).size), "heaviest_table": None,
                "table_mean_shard_load": {}, "max_dpu_tables": []}
    serving = int((per_dpu > 0).sum())
    table_mean = {plan.tables[t].name: float(per_shard[table_of == t].mean())
                  for t in range(len(plan.tables)) if (table_of == t).any()}
    heaviest = max(table_mean, key=table_mean.get)
    top = int(np.argmax(per_dpu))
    return {
        "imbalance": float(per_dpu.max() * n / total),
        "idle": n / serving,
        "across_tables": table_mean[heaviest] * serving / total,
        "within_tables": float(per_dpu.max()) / table_mean[heaviest],
        "serving_dpus": serving,
        "dpus_without_shard": n - int(np.unique(dpu_of).size),
        "heaviest_table": heaviest,
        "table_mean_shard_load": table_mean,
        "max_dpu_tables": sorted({plan.tables[table_of[i]].name for i in np.flatnonzero(dpu_of == top)}),
    }


def expected_work(plan: Plan, trace: Trace, *, batch: int = 0, nr_tasklets: int = 16,
                  profile: str | perfmodel.HardwareProfile = DEFAULT_PROFILE) -> perfmodel.BatchWork:
    """The :class:`~updlrm.perfmodel.BatchWork` of batch ``batch`` of ``trace`` under ``plan``.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> expected_work(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3]))).lookups.tolist()
    [2.0, 1.0]
    """
    if not 0 <= batch < trace.num_batches:
        raise IndexError(f"batch {batch} of a trace with {trace.num_batches} batches")
    idx, off, w = trace.batch(batch)
    one = Trace(trace.num_tables, trace.batch_size, idx, off, w, trace.table_names)
    n = plan.topology.nr_dpus
    hw = perfmodel.get_profile(profile, nr_dpus=n)
    loads = [float(len(one.table_lookups(t)[0])) for t in range(len(plan.tables))]
    model = _WorkModel(plan.tables, hw, n, w is not None, nr_tasklets, loads)
    return _batch_works(plan, one, _route_trace(plan, one, model, 1.0), model, 1.0)[0]


__all__ = ["build_plan", "evaluate_plan", "expected_work", "expected_rank_loads", "imbalance_breakdown",
           "shard_loads", "PlanReport", "TableWorkload", "table_workloads",
           "CACHE_MODES", "GRAPH_MODES", "DEFAULT_PROFILE"]
