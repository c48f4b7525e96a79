"""Workload statistics equal a naive computation; hypergraph/graph equal naive co-occurrence."""

from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm.partitioner.stats import (
    BagFanin,
    Hypergraph,
    cooccurrence_graph,
    cooccurrence_hypergraph,
    workload_stats,
)
from updlrm.partitioner.workloads import ReuseHistogram, Trace, TraceError, synthetic_trace
from updlrm.specs import TableSpec


@st.composite
def small_traces(draw):
    T = draw(st.integers(1, 3))
    B = draw(st.integers(1, 5))
    nb = draw(st.integers(1, 3))
    max_row = draw(st.integers(1, 25))
    lengths = draw(st.lists(st.integers(0, 5), min_size=nb * T * B, max_size=nb * T * B))
    n = sum(lengths)
    indices = draw(st.lists(st.integers(0, max_row - 1), min_size=n, max_size=n))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Trace(T, B, np.array(indices, dtype=np.int64), offsets), max_row


def naive_table_bags(tr: Trace, t: int) -> list[list[int]]:
    """Bags of table t in global-sample order, by a plain loop over offsets."""
    out = []
    for i in range(tr.num_batches):
        for b in range(tr.batch_size):
            g = (i * tr.num_tables + t) * tr.batch_size + b
            out.append([int(x) for x in tr.indices[tr.offsets[g] : tr.offsets[g + 1]]])
    return out


@settings(max_examples=150, deadline=None)
@given(small_traces())
def test_table_stats_equal_naive(case):
    tr, max_row = case
    specs = [TableSpec(f"t{t}", max_row, 4) for t in range(tr.num_tables)]
    for t, s in enumerate(workload_stats(tr, specs)):
        bags = naive_table_bags(tr, t)
        flat = [r for bag in bags for r in bag]
        cnt = Counter(flat)
        expected_order = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))
        assert s.table == t and s.num_rows == max_row and s.lookups == len(flat)
        assert list(zip(s.rows.tolist(), s.counts.tolist())) == expected_order
        assert s.unique_ratio == pytest.approx(len(cnt) / len(flat) if flat else 0.0)
        assert s.frequency(np.arange(max_row + 3)).tolist() == [cnt.get(r, 0) for r in range(max_row + 3)]
        assert s.dense_counts().tolist() == [cnt.get(r, 0) for r in range(max_row)]
        lens = [len(b) for b in bags]
        assert s.bag_fanin.num_bags == len(bags)
        assert s.bag_fanin.mean_lookups == pytest.approx(np.mean(lens))
        assert s.bag_fanin.empty_fraction == pytest.approx(np.mean([x == 0 for x in lens]))
        assert s.bag_fanin.max_lookups == max(lens)
        # reuse histogram: rows and lookups per (lo, hi] bin, by hand
        edges = list(s.reuse_histogram.bin_edges) + [10**18]
        for i in range(len(edges) - 1):
            in_bin = [c for c in cnt.values() if edges[i] < c <= edges[i + 1]]
            assert s.reuse_histogram.fraction_of_rows[i] == pytest.approx(len(in_bin) / len(cnt) if cnt else 0.0)
            if flat:
                assert s.reuse_histogram.fraction_of_indices[i] == pytest.approx(sum(in_bin) / len(flat))
        # hot rows: the shortest prefix reaching a share of the lookups
        if flat:
            for frac in (0.1, 0.5, 0.9, 1.0):
                hot = s.hot_rows(fraction_of_lookups=frac)
                covered = sum(cnt[r] for r in hot.tolist())
                assert covered >= frac * len(flat) - 1e-9
                assert covered - cnt[int(hot[-1])] < frac * len(flat) - 1e-9
            assert s.hot_rows(k=2).tolist() == [r for r, _ in expected_order[:2]]


@settings(max_examples=150, deadline=None)
@given(small_traces(), st.data())
def test_hypergraph_and_graph_equal_naive(case, data):
    tr, max_row = case
    t = data.draw(st.integers(0, tr.num_tables - 1))
    rows = np.array(data.draw(st.lists(st.integers(0, max_row + 2), unique=True, max_size=max_row + 3)), dtype=np.int64)
    vertex = {int(r): i for i, r in enumerate(rows)}
    bags = naive_table_bags(tr, t)
    edges = Counter()
    for bag in bags:
        members = tuple(sorted({vertex[r] for r in bag if r in vertex}))
        if len(members) >= 2:
            edges[members] += 1
    hg = cooccurrence_hypergraph(tr, t, rows)
    got = Counter()
    for e in range(hg.num_edges):
        members = tuple(hg.edge(e).tolist())
        assert members not in got  # identical hyperedges are merged
        got[members] = int(hg.edge_weights[e])
    assert got == edges
    flat = Counter(r for bag in bags for r in bag)
    assert hg.vertex_weights.tolist() == [flat.get(int(r), 0) for r in rows]
    assert hg.num_vertices == rows.size and np.array_equal(hg.rows, rows)

    pair = Counter()
    for members, w in edges.items():
        for a, b in combinations(members, 2):
            pair[a, b] += w
    g = cooccurrence_graph(tr, t, rows, max_pairs_per_bag=1000)
    dense = g.toarray()
    assert dense.shape == (rows.size, rows.size)
    assert np.array_equal(dense, dense.T) and not np.diag(dense).any()
    for i in range(rows.size):
        for j in range(i + 1, rows.size):
            assert dense[i, j] == pair.get((i, j), 0)


def test_graph_samples_large_bags_without_bias():
    # 400 bags of the same 40 rows: 780 pairs each, sampled 50 at a time.
    B, n = 400, 40
    tr = Trace(1, B, np.tile(np.arange(n), B), np.arange(0, B * n + 1, n))
    g = cooccurrence_graph(tr, 0, np.arange(n), max_pairs_per_bag=50, seed=1).toarray()
    # identical bags merge into one hyperedge of weight 400, so sampling draws 50 pairs
    # and scales them: the expected total weight is exact
    assert g.sum() / 2 == pytest.approx(B * n * (n - 1) / 2)
    assert np.array_equal(g, g.T) and not np.diag(g).any()
    rng = np.random.default_rng(3)
    varied = Trace(
        1,
        B,
        np.concatenate([np.append(np.arange(n - 1), n + rng.integers(0, 5)) for _ in range(B)]),
        np.arange(0, B * n + 1, n),
    )
    gv = cooccurrence_graph(varied, 0, np.arange(n + 5), max_pairs_per_bag=50, seed=2).toarray()
    exact = cooccurrence_graph(varied, 0, np.arange(n + 5), max_pairs_per_bag=10_000).toarray()
    assert gv.sum() == pytest.approx(exact.sum(), rel=1e-9)
    # each sampled entry is unbiased; averaged over the pairs among the first 39 rows
    assert gv[: n - 1, : n - 1].sum() == pytest.approx(exact[: n - 1, : n - 1].sum(), rel=0.1)


def test_hot_rows_k_and_fraction_together():
    tr = Trace(1, 1, np.array([4, 4, 4, 4, 2, 2, 9, 1]), np.array([0, 8]))
    s = workload_stats(tr)[0]
    assert s.hot_rows(k=10).tolist() == [4, 2, 1, 9]
    assert s.hot_rows(fraction_of_lookups=0.5).tolist() == [4]
    assert s.hot_rows(fraction_of_lookups=0.9, k=2).tolist() == [4, 2]
    assert s.hot_rows(fraction_of_lookups=0.0).size == 0
    assert s.coverage(2) == 0.75
    with pytest.raises(ValueError):
        s.hot_rows()
    with pytest.raises(ValueError):
        s.hot_rows(fraction_of_lookups=1.5)


def test_bounds_are_checked_against_specs():
    tr = Trace(1, 1, np.array([0, 10]), np.array([0, 2]))
    with pytest.raises(TraceError, match="looks up row 10"):
        workload_stats(tr, [TableSpec("a", 10, 4)])
    with pytest.raises(TraceError, match="table specs"):
        workload_stats(tr, [TableSpec("a", 10, 4)] * 2)
    assert workload_stats(tr)[0].num_rows == 11


def test_sparse_counting_path_for_huge_tables():
    # 10^12 rows: counting must not allocate a dense array
    spec = TableSpec("huge", 10**12, 4)
    tr = Trace(1, 2, np.array([5, 10**12 - 1, 5]), np.array([0, 2, 3]))
    s = workload_stats(tr, [spec])[0]
    assert s.rows.tolist() == [5, 10**12 - 1] and s.counts.tolist() == [2, 1]
    hg = cooccurrence_hypergraph(tr, 0, np.array([10**12 - 1, 5]))
    assert hg.edge(0).tolist() == [0, 1] and hg.vertex_weights.tolist() == [1, 2]


def test_hypergraph_cut_and_hmetis(tmp_path):
    hg = Hypergraph(
        4, np.array([0, 3, 5, 7]), np.array([0, 1, 2, 2, 3, 0, 3]), np.array([2, 1, 5]), np.array([1, 2, 3, 4])
    )
    parts = np.array([0, 0, 1, 1])
    # edge0 spans {0,1}: lambda 2; edge1 {1}: 1; edge2 {0,1}: 2
    assert hg.cut(parts) == 2 * 1 + 0 + 5 * 1
    assert hg.cut(parts, "cut_net") == 7
    text = hg.write_hmetis(tmp_path / "h.hgr").read_text().splitlines()
    assert text[0] == "3 4 11" and text[1] == "2 1 2 3" and text[3] == "5 1 4" and text[4:] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError):
        Hypergraph(2, np.array([0, 2]), np.array([0, 2]), np.array([1]), np.ones(2))


def test_fanin_and_histogram_helpers():
    assert BagFanin.from_lengths(np.array([], dtype=int)).num_bags == 0
    h = ReuseHistogram.from_counts(np.array([1, 2, 3, 4, 5, 40_000]))
    assert h.fraction_of_rows.tolist()[:4] == [1 / 6, 1 / 6, 2 / 6, 1 / 6] and h.fraction_of_rows[-1] == 1 / 6


def test_stats_on_generated_trace_agree_with_lookups():
    tables = [TableSpec("a", 3000, 8), TableSpec("b", 40, 8)]
    tr = synthetic_trace(tables, batch_size=300, num_batches=3, pooling=[6, 2], co_occurrence=0.5, seed=5)
    stats = workload_stats(tr, tables)
    for t, s in enumerate(stats):
        rows, _ = tr.table_lookups(t)
        assert np.array_equal(s.dense_counts(), np.bincount(rows, minlength=tables[t].num_embeddings))
        assert s.reuse_histogram.num_indices == rows.size
