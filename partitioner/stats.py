"""Workload statistics the partitioner decides from: per-row frequencies and co-occurrence.

* :func:`workload_stats`: per table, which rows are looked up how often (sparse,
  sorted by count), their reuse histogram and bag fan-in.
* :func:`cooccurrence_hypergraph`: bags as hyperedges over a chosen row set (e.g.
  the hot rows), in CSR form, identical hyperedges merged with weights.
* :func:`cooccurrence_graph`: the clique expansion as a sparse symmetric matrix,
  sampling pairs in very large bags.

Everything is vectorised numpy: a 10^7-lookup trace takes seconds.

Example:
    >>> from updlrm.specs import TableSpec
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("t", 1000, 8)]
    >>> tr = synthetic_trace(tables, batch_size=256, pooling=8, co_occurrence=0.5, seed=0)
    >>> st = workload_stats(tr, tables)[0]
    >>> st.lookups == tr.num_lookups, int(st.counts[0]) >= int(st.counts[-1])
    (True, True)
    >>> hg = cooccurrence_hypergraph(tr, 0, st.hot_rows(k=100))
    >>> hg.num_vertices, bool(hg.num_edges > 0)
    (100, True)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from updlrm.partitioner.ranges import concat_ranges
from updlrm.partitioner.workloads import ReuseHistogram, Trace, TraceError
from updlrm.specs import TableSpec

# Above this many rows per lookup, counting by sorting beats a dense bincount.
_DENSE_COUNT_RATIO = 8


@dataclass
class BagFanin:
    """Bag sizes of one table: mean lookups per bag, share of empty bags, largest bag.

    >>> BagFanin.from_lengths(np.array([0, 2, 4]))
    BagFanin(mean_lookups=2.0, empty_fraction=0.3333333333333333, max_lookups=4, num_bags=3)
    """

    mean_lookups: float
    empty_fraction: float
    max_lookups: int
    num_bags: int

    @classmethod
    def from_lengths(cls, lengths: np.ndarray) -> BagFanin:
        lengths = np.asarray(lengths)
        if lengths.size == 0:
            return cls(0.0, 0.0, 0, 0)
        return cls(float(lengths.mean()), float((lengths == 0).mean()), int(lengths.max()), int(lengths.size))


@dataclass
class TableStats:
    """Access statistics of one table over a trace.

    ``rows``/``counts``: the rows looked up at least once and how often, by count
    descending (ties by row id). ``unique_ratio`` is distinct rows / lookups.

    >>> from updlrm.partitioner.workloads import Trace
    >>> tr = Trace(1, 3, np.array([5, 5, 2, 5, 9]), np.array([0, 2, 4, 5]))
    >>> st = workload_stats(tr)[0]
    >>> st.rows.tolist(), st.counts.tolist(), st.frequency(np.array([9, 0, 5])).tolist()
    ([5, 2, 9], [3, 1, 1], [1, 0, 3])
    """

    table: int
    num_rows: int
    lookups: int
    rows: np.ndarray
    counts: np.ndarray
    unique_ratio: float
    reuse_histogram: ReuseHistogram
    bag_fanin: BagFanin
    name: str = ""

    def __post_init__(self) -> None:
        order = np.argsort(self.rows, kind="stable")
        self._sorted_rows = self.rows[order]
        self._sorted_counts = self.counts[order]

    @property
    def num_unique(self) -> int:
        return int(self.rows.size)

    def frequency(self, rows: np.ndarray) -> np.ndarray:
        """Lookup counts of arbitrary ``rows`` (0 for rows never looked up).

        >>> from updlrm.partitioner.workloads import Trace
        >>> workload_stats(Trace(1, 1, np.array([3, 3]), np.array([0, 2])))[0].frequency([3, 4]).tolist()
        [2, 0]
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self._sorted_rows.size == 0:
            return np.zeros(rows.shape, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._sorted_rows, rows), 0, self._sorted_rows.size - 1)
        return np.where(self._sorted_rows[pos] == rows, self._sorted_counts[pos], 0).astype(np.int64)

    def dense_counts(self) -> np.ndarray:
        """Counts of every row ``0..num_rows-1`` as a dense array.

        >>> from updlrm.partitioner.workloads import Trace
        >>> workload_stats(Trace(1, 1, np.array([2, 2, 0]), np.array([0, 3])))[0].dense_counts().tolist()
        [1, 0, 2]
        """
        out = np.zeros(self.num_rows, dtype=np.int64)
        out[self.rows] = self.counts
        return out

    def hot_rows(self, fraction_of_lookups: float | None = None, k: int | None = None) -> np.ndarray:
        """The most looked-up rows, hottest first.

        ``k``: the top ``k``; ``fraction_of_lookups``: the fewest top rows that together
        serve at least that share of the lookups; both: whichever set is smaller.

        >>> from updlrm.partitioner.workloads import Trace
        >>> st = workload_stats(Trace(1, 1, np.array([7, 7, 7, 1, 2]), np.array([0, 5])))[0]
        >>> st.hot_rows(k=1).tolist(), st.hot_rows(fraction_of_lookups=0.7).tolist()
        ([7], [7, 1])
        """
        if fraction_of_lookups is None and k is None:
            raise ValueError("hot_rows needs fraction_of_lookups or k")
        n = self.rows.size
        if k is not None:
            if k < 0:
                raise ValueError(f"k must be >= 0, got {k}")
            n = min(n, int(k))
        if fraction_of_lookups is not None:
            if not 0.0 <= fraction_of_lookups <= 1.0:
                raise ValueError(f"fraction_of_lookups must be in [0, 1], got {fraction_of_lookups}")
            if self.lookups == 0 or fraction_of_lookups == 0:
                return self.rows[:0].copy()
            need = fraction_of_lookups * self.lookups
            covered = np.cumsum(self.counts)
            n = min(n, int(np.searchsorted(covered, need - 1e-9 * self.lookups, side="left")) + 1)
        return self.rows[:n].copy()

    def coverage(self, k: int) -> float:
        """Share of the lookups served by the top ``k`` rows.

        >>> from updlrm.partitioner.workloads import Trace
        >>> workload_stats(Trace(1, 1, np.array([7, 7, 7, 1]), np.array([0, 4])))[0].coverage(1)
        0.75
        """
        if self.lookups == 0:
            return 0.0
        return float(self.counts[: max(0, int(k))].sum() / self.lookups)


def _sorted_unique(a: np.ndarray, return_counts: bool = False):
    """``np.unique`` by sorting (numpy 2's hash-based unique is several times slower here)."""
    a = np.sort(a)
    first = np.r_[True, a[1:] != a[:-1]] if a.size else np.zeros(0, dtype=bool)
    uniq = a[first]
    if not return_counts:
        return uniq
    return uniq, np.diff(np.r_[np.flatnonzero(first), a.size])


def _count_rows(rows: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows and their counts, by count descending then row ascending."""
    if rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if num_rows <= _DENSE_COUNT_RATIO * rows.size + (1 << 20):
        dense = np.bincount(rows, minlength=num_rows)
        uniq = np.flatnonzero(dense)
        counts = dense[uniq]
    else:
        uniq, counts = _sorted_unique(rows, return_counts=True)
    # uniq is ascending, so a stable sort on -count keeps ties in row order.
    order = np.argsort(-counts, kind="stable")
    return uniq[order].astype(np.int64), counts[order].astype(np.int64)


def table_stats(trace: Trace, table: int, spec: TableSpec | None = None) -> TableStats:
    """Statistics of one table of ``trace`` (see :func:`workload_stats`).

    >>> from updlrm.partitioner.workloads import Trace
    >>> table_stats(Trace(2, 1, np.array([1, 0, 0]), np.array([0, 1, 3])), 1).counts.tolist()
    [2]
    """
    rows, _ = trace.table_lookups(table)
    name = spec.name if spec is not None else (trace.table_names[table] if trace.table_names else f"table{table}")
    max_row = int(rows.max()) if rows.size else -1
    if spec is not None:
        if max_row >= spec.num_embeddings:
            raise TraceError(f"table {spec.name} has {spec.num_embeddings} rows but the trace looks up row {max_row}")
        num_rows = spec.num_embeddings
    else:
        num_rows = max_row + 1
    uniq, counts = _count_rows(rows, max(num_rows, 0))
    g = trace._bag_ids(table)
    lengths = trace.offsets[g + 1] - trace.offsets[g]
    return TableStats(
        table=table,
        num_rows=num_rows,
        lookups=int(rows.size),
        rows=uniq,
        counts=counts,
        unique_ratio=float(uniq.size / rows.size) if rows.size else 0.0,
        reuse_histogram=ReuseHistogram.from_counts(counts, name=name),
        bag_fanin=BagFanin.from_lengths(lengths),
        name=name,
    )


def workload_stats(trace: Trace, tables: Sequence[TableSpec] | None = None) -> list[TableStats]:
    """Per-table statistics of ``trace``; ``tables`` gives row counts and bounds-checks.

    Without ``tables`` a table's size is taken as its largest looked-up row + 1.

    >>> from updlrm.partitioner.workloads import Trace
    >>> [s.lookups for s in workload_stats(Trace(2, 1, np.array([1, 0, 0]), np.array([0, 1, 3])))]
    [1, 2]
    """
    if tables is not None and len(tables) != trace.num_tables:
        raise TraceError(f"{len(tables)} table specs for a trace of {trace.num_tables} tables")
    return [table_stats(trace, t, None if tables is None else tables[t]) for t in range(trace.num_tables)]


# --------------------------------------------------------------------------------------
# co-occurrence
# --------------------------------------------------------------------------------------


@dataclass
class Hypergraph:
    """A weighted hypergraph in CSR form (the hMETIS / KaHyPar convention).

    Hyperedge ``e`` joins vertices ``eind[eptr[e]:eptr[e+1]]`` (sorted, distinct);
    ``edge_weights[e]`` counts the bags with exactly that vertex set;
    ``vertex_weights[v]`` is the lookup count of ``rows[v]``.

    >>> hg = Hypergraph(3, np.array([0, 2, 5]), np.array([0, 1, 0, 1, 2]), np.array([4, 1]), np.array([5, 5, 1]))
    >>> hg.num_edges, hg.edge(1).tolist(), hg.incidence().shape
    (2, [0, 1, 2], (2, 3))
    """

    num_vertices: int
    eptr: np.ndarray
    eind: np.ndarray
    edge_weights: np.ndarray
    vertex_weights: np.ndarray
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.eptr = np.asarray(self.eptr, dtype=np.int64)
        self.eind = np.asarray(self.eind, dtype=np.int64)
        self.edge_weights = np.asarray(self.edge_weights, dtype=np.int64)
        self.vertex_weights = np.asarray(self.vertex_weights, dtype=np.int64)
        if self.eptr.size < 1 or self.eptr[0] != 0 or self.eptr[-1] != self.eind.size:
            raise ValueError("eptr must start at 0 and end at len(eind)")
        if self.edge_weights.size != self.eptr.size - 1:
            raise ValueError("one edge weight per hyperedge")
        if self.vertex_weights.size != self.num_vertices:
            raise ValueError("one vertex weight per vertex")
        if self.eind.size and (self.eind.min() < 0 or self.eind.max() >= self.num_vertices):
            raise ValueError("hyperedge member out of range")

    @property
    def num_edges(self) -> int:
        return int(self.eptr.size - 1)

    def edge(self, e: int) -> np.ndarray:
        """Vertices of hyperedge ``e`` (see the class example)."""
        return self.eind[self.eptr[e] : self.eptr[e + 1]]

    def edge_sizes(self) -> np.ndarray:
        """Number of vertices of every hyperedge.

        >>> Hypergraph(2, np.array([0, 2, 4]), np.array([0, 1, 0, 1]), np.ones(2), np.ones(2)).edge_sizes().tolist()
        [2, 2]
        """
        return np.diff(self.eptr)

    def incidence(self) -> sp.csr_matrix:
        """Edge-by-vertex 0/1 incidence matrix (see the class example)."""
        return sp.csr_matrix(
            (np.ones(self.eind.size, dtype=np.int8), self.eind, self.eptr), shape=(self.num_edges, self.num_vertices)
        )

    def cut(self, parts: np.ndarray, metric: str = "connectivity") -> int:
        """Weighted cut of a vertex partition: ``connectivity`` = sum w_e (lambda_e - 1), or ``cut_net``.

        >>> hg = Hypergraph(3, np.array([0, 3]), np.array([0, 1, 2]), np.array([2]), np.ones(3, int))
        >>> hg.cut(np.array([0, 1, 1])), hg.cut(np.array([0, 1, 2])), hg.cut(np.array([0, 1, 2]), "cut_net")
        (2, 4, 2)
        """
        parts = np.asarray(parts, dtype=np.int64)
        if parts.shape != (self.num_vertices,):
            raise ValueError(f"need one part per vertex ({self.num_vertices})")
        if self.num_edges == 0:
            return 0
        edge_of = np.repeat(np.arange(self.num_edges, dtype=np.int64), self.edge_sizes())
        pairs = _sorted_unique(edge_of * (int(parts.max()) + 1) + parts[self.eind])
        lam = np.bincount(pairs // (int(parts.max()) + 1), minlength=self.num_edges)
        if metric == "connectivity":
            return int(((lam - 1) * self.edge_weights).sum())
        if metric == "cut_net":
            return int(self.edge_weights[lam > 1].sum())
        raise ValueError(f"unknown metric {metric!r}; choose connectivity or cut_net")

    def write_hmetis(self, path: str | os.PathLike) -> Path:
        """Write hMETIS format with edge and vertex weights (fmt 11), 1-based vertices.

        >>> import tempfile, pathlib
        >>> hg = Hypergraph(2, np.array([0, 2]), np.array([0, 1]), np.array([3]), np.array([1, 2]))
        >>> pathlib.Path(hg.write_hmetis(pathlib.Path(tempfile.mkdtemp()) / "g.hgr")).read_text()
        '1 2 11\\n3 1 2\\n1\\n2\\n'
        """
        path = Path(path)
        lines = [f"{self.num_edges} {self.num_vertices} 11"]
        one_based = (self.eind + 1).astype(str)
        for e in range(self.num_edges):
            lines.append(
                " ".join([str(int(self.edge_weights[e]))] + one_based[self.eptr[e] : self.eptr[e + 1]].tolist())
            )
        lines.extend(str(max(1, int(w))) for w in self.vertex_weights)
        path.write_text("\n".join(lines) + "\n")
        return path


def _vertex_map(rows: np.ndarray, max_looked_up: int, num_lookups: int):
    """``rows`` as an array and a function mapping row ids to vertex ids (-1 if absent)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError("rows must be one-dimensional")
    if rows.size and rows.min() < 0:
        raise ValueError("rows must be >= 0")
    if _sorted_unique(rows).size != rows.size:
        raise ValueError("rows must be distinct")
    limit = max(max_looked_up, int(rows.max()) if rows.size else 0) + 1
    if limit <= 2 * (num_lookups + rows.size) + (1 << 24):
        # A dense id -> vertex table costs 4 bytes a row and beats binary search ~10x.
        table = np.full(limit, -1, dtype=np.int32 if rows.size < (1 << 31) else np.int64)
        table[rows] = np.arange(rows.size)

        def lookup(r: np.ndarray) -> np.ndarray:
            return table[r].astype(np.int64)
    else:
        order = np.argsort(rows)
        srt = rows[order]

        def lookup(r: np.ndarray) -> np.ndarray:
            if srt.size == 0:
                return np.full(r.shape, -1, np.int64)
            pos = np.clip(np.searchsorted(srt, r), 0, srt.size - 1)
            return np.where(srt[pos] == r, order[pos], -1)

    return rows, lookup


def _bag_members(trace: Trace, table: int, rows: np.ndarray):
    """(vertex, bag) pairs of the lookups of ``table`` that hit ``rows``, deduplicated within bags."""
    looked, bags = trace.table_lookups(table)
    rows, lookup = _vertex_map(rows, int(looked.max()) if looked.size else 0, looked.size)
    v = lookup(looked)
    keep = v >= 0
    all_counts = np.bincount(v[keep], minlength=rows.size).astype(np.int64)
    v, bags = v[keep], bags[keep]
    nv = max(rows.size, 1)
    key = _sorted_unique(bags * nv + v)  # by bag, then vertex; drops repeats in a bag
    return rows, all_counts, key // nv, key % nv


def cooccurrence_hypergraph(trace: Trace, table: int, rows: np.ndarray, *, min_edge_size: int = 2) -> Hypergraph:
    """Bags of ``table`` as hyperedges over ``rows`` (vertex ``i`` is ``rows[i]``).

    Lookups of other rows are ignored, repeated rows in a bag count once, hyperedges
    with fewer than ``min_edge_size`` vertices are dropped and identical hyperedges
    are merged, their weight counting the bags. Vertex weights are lookup counts.

    >>> from updlrm.partitioner.workloads import Trace
    >>> tr = Trace(1, 3, np.array([1, 2, 9, 2, 1, 1, 5]), np.array([0, 3, 5, 7]))
    >>> hg = cooccurrence_hypergraph(tr, 0, np.array([1, 2, 5]))
    >>> hg.num_edges, hg.edge(0).tolist(), hg.edge_weights.tolist(), hg.vertex_weights.tolist()
    (2, [0, 1], [2, 1], [3, 2, 1])
    """
    rows, vweights, bag, vert = _bag_members(trace, table, rows)
    # Edges are runs of equal bag id; keep runs of >= min_edge_size.
    if bag.size:
        starts = np.flatnonzero(np.r_[True, bag[1:] != bag[:-1]])
        sizes = np.diff(np.r_[starts, bag.size])
    else:
        starts = sizes = np.empty(0, np.int64)
    big = sizes >= max(1, min_edge_size)
    starts, sizes = starts[big], sizes[big]
    members = vert[concat_ranges(starts, sizes)]
    eptr = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=eptr[1:])
    eptr, members, weights = _merge_identical_edges(eptr, members, rows.size)
    return Hypergraph(int(rows.size), eptr, members, weights, vweights, rows=rows)


def _merge_identical_edges(eptr: np.ndarray, eind: np.ndarray, num_vertices: int):
    """Merge hyperedges with identical (sorted) member lists; weight = multiplicity."""
    m = eptr.size - 1
    if m == 0:
        return eptr, eind, np.empty(0, np.int64)
    sizes = np.diff(eptr)
    # Order-independent 64-bit fingerprint: sum of random per-vertex keys (wrapping).
    keys = np.random.default_rng(0x5EED).integers(1, 1 << 63, size=max(num_vertices, 1), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = np.add.reduceat(keys[eind], eptr[:-1]) if eind.size else np.zeros(m, np.uint64)
    order = np.lexsort((h, sizes))
    s_sorted, h_sorted = sizes[order], h[order]
    cand = np.flatnonzero((s_sorted[1:] == s_sorted[:-1]) & (h_sorted[1:] == h_sorted[:-1]))
    same = np.zeros(m, dtype=bool)  # same[i]: sorted edge i equals sorted edge i-1
    if cand.size:
        a, b = order[cand], order[cand + 1]
        la = sizes[a]
        pa = concat_ranges(eptr[a], la)
        pb = concat_ranges(eptr[b], la)
        eq = eind[pa] == eind[pb]
        seg = np.zeros(la.size + 1, dtype=np.int64)
        np.cumsum(la, out=seg[1:])
        all_eq = np.logical_and.reduceat(eq, seg[:-1]) if eq.size else np.ones(la.size, bool)
        same[cand + 1] = all_eq
    group = np.cumsum(~same) - 1
    weights = np.bincount(group).astype(np.int64)
    # lexsort is stable, so each run starts with its earliest edge; keep first-seen order.
    firsts = order[~same]
    by_first = np.argsort(firsts)
    firsts, weights = firsts[by_first], weights[by_first]
    new_sizes = sizes[firsts]
    new_eptr = np.zeros(firsts.size + 1, dtype=np.int64)
    np.cumsum(new_sizes, out=new_eptr[1:])
    return new_eptr, eind[concat_ranges(eptr[firsts], new_sizes)], weights


def cooccurrence_graph(
    trace: Trace, table: int, rows: np.ndarray, *, max_pairs_per_bag: int = 256, seed: int = 0
) -> sp.csr_matrix:
    """Clique expansion of :func:`cooccurrence_hypergraph`: ``W[i, j]`` = bags holding both.

    A bag with more than ``max_pairs_per_bag`` pairs contributes that many pairs
    drawn at random, each weighted so the expected total is exact. The matrix is
    symmetric with a zero diagonal.

    >>> from updlrm.partitioner.workloads import Trace
    >>> tr = Trace(1, 2, np.array([1, 2, 3, 1, 2]), np.array([0, 3, 5]))
    >>> cooccurrence_graph(tr, 0, np.array([1, 2, 3])).toarray().tolist()
    [[0.0, 2.0, 1.0], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    """
    if max_pairs_per_bag < 1:
        raise ValueError(f"max_pairs_per_bag must be >= 1, got {max_pairs_per_bag}")
    hg = cooccurrence_hypergraph(trace, table, rows)
    n = hg.num_vertices
    sizes = hg.edge_sizes()
    pairs = sizes * (sizes - 1) // 2
    exact = pairs <= max_pairs_per_bag
    # Exact part: W = I^T diag(w) I over the small hyperedges, as a sparse product
    # (compiled, and it never materialises the pair list); the diagonal is dropped.
    keep = np.flatnonzero(exact)
    k_sizes = sizes[keep]
    k_ptr = np.zeros(keep.size + 1, dtype=np.int64)
    np.cumsum(k_sizes, out=k_ptr[1:])
    k_ind = hg.eind[concat_ranges(hg.eptr[keep], k_sizes)]
    ones = sp.csr_matrix((np.ones(k_ind.size), k_ind, k_ptr), shape=(keep.size, n))
    weighted = sp.csr_matrix(
        (np.repeat(hg.edge_weights[keep].astype(np.float64), k_sizes), k_ind, k_ptr), shape=(keep.size, n)
    )
    graph = (ones.T.tocsr() @ weighted).tocsr()
    sampled = np.flatnonzero(~exact)
    if sampled.size:
        rng = np.random.default_rng(seed)
        s = np.repeat(sizes[sampled], max_pairs_per_bag)
        base = np.repeat(hg.eptr[sampled], max_pairs_per_bag)
        i = np.floor(rng.random(s.size) * s).astype(np.int64)
        j = np.floor(rng.random(s.size) * (s - 1)).astype(np.int64)
        j += j >= i
        a, b = hg.eind[base + i], hg.eind[base + j]
        # each unordered pair is drawn with probability 1/pairs per draw; this scale
        # makes the expected weight exactly the edge weight
        scale = hg.edge_weights[sampled] * pairs[sampled] / max_pairs_per_bag
        w = np.repeat(scale.astype(np.float64), max_pairs_per_bag)
        upper = sp.coo_matrix((w, (np.minimum(a, b), np.maximum(a, b))), shape=(n, n)).tocsr()
        graph = graph + upper + upper.T
    graph = graph.tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph.sort_indices()
    return graph


__all__ = [
    "BagFanin",
    "Hypergraph",
    "TableStats",
    "cooccurrence_graph",
    "cooccurrence_hypergraph",
    "table_stats",
    "workload_stats",
]
