"""Stage 1 of the planner: what a trace says about each table, as expected loads per batch.

Per table, the expected lookups per batch of every accessed row, cross-fitted over folds
of batches so that rows ranked hot by luck regress to the mean
(:func:`expected_rank_loads`), and every distinct (bag, row) pair -- the input of the
fan-out estimate ``E[parts touched] = sum_bags k * (1 - (1 - 1/k)^u_bag)`` for ``k``
balanced parts (:meth:`TableWorkload.fanout`).

Example:
    >>> from updlrm.partitioner.workloads import Trace
    >>> tr = Trace(1, 2, np.array([0, 1, 2, 3]), np.array([0, 2, 4]))
    >>> wl = table_workloads([TableSpec("a", 4, 4)], tr)[0]
    >>> wl.rows.tolist(), wl.fanout(2)
    ([0, 1, 2, 3], 1.5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from updlrm.partitioner.popularity import Popularity, fit_popularity
from updlrm.partitioner.stats import workload_stats
from updlrm.partitioner.workloads import Trace
from updlrm.plan import PlanError
from updlrm.specs import TableSpec

__all__ = ["TableWorkload", "expected_rank_loads", "table_workloads"]


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
    popularity: Popularity | None = None
    _hist_cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

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


def expected_rank_loads(
    rank: np.ndarray, fold: np.ndarray, counts: np.ndarray, folds: int, row_ids: np.ndarray
) -> tuple[np.ndarray, float]:
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


def table_workloads(
    tables: list[TableSpec], trace: Trace, batch_size: int | None = None, min_count: int = 1, max_folds: int = 16
) -> list[TableWorkload]:
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
        rank_of_lookup = order[np.searchsorted(st.rows[order], rows)] if st.rows.size else np.zeros(0, dtype=np.int64)
        expected, unranked = expected_rank_loads(rank_of_lookup, fold_of_bag[bags], st.counts, folds, st.rows)
        # The unseen mass: the cross-fitted one or Good-Turing's, whichever is larger;
        # the ranked rows keep their shape and give up the difference.
        total = float(st.counts.sum())
        pop = fit_popularity(st.counts, n, missing_mass=unranked / total if total else 0.0)
        if total and pop.unseen_mass * total > unranked and expected.sum() > 0:
            expected = expected * (total * (1.0 - pop.unseen_mass) / expected.sum())
            unranked = total * pop.unseen_mass
        keys = np.unique(bags * n + rows)
        pair_bag, pair_row = np.divmod(keys, n)
        rank = order[np.searchsorted(st.rows[order], pair_row)] if st.rows.size else pair_row
        reliable = int(np.searchsorted(-st.counts, -min_count, side="right"))
        repeated = int(np.searchsorted(-st.counts, -2, side="right"))
        out.append(
            TableWorkload(
                t,
                tables[t],
                st.rows,
                expected * scale,
                pair_bag,
                rank.astype(np.int64),
                num_bags,
                batch_size,
                st.counts * scale,
                unranked * scale,
                reliable,
                repeated,
                pop,
            )
        )
    return out
