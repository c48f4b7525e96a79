"""Workloads: TBE layout, generator statistics (skew, co-occurrence, reuse), loaders."""

import gzip

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from updlrm.partitioner.stats import cooccurrence_hypergraph, workload_stats
from updlrm.partitioner.synthetic import _bounded_zipf_ranks, _feistel_permute
from updlrm.partitioner.workloads import (
    CRITEO_KAGGLE_CARDINALITIES,
    ReuseHistogram,
    Trace,
    TraceError,
    criteo_like_tables,
    load_trace,
    meta_locality_stats_path,
    parse_locality_stats,
    synthetic_trace,
)
from updlrm.specs import TableSpec

TABLES = [TableSpec("big", 50_000, 16), TableSpec("tiny", 3, 8), TableSpec("mid", 700, 4)]


def naive_bags(tr: Trace):
    """{(batch, table, sample): list of rows} straight from the offsets."""
    out = {}
    T, B = tr.num_tables, tr.batch_size
    for i in range(tr.num_batches):
        for t in range(T):
            for b in range(B):
                g = (i * T + t) * B + b
                out[i, t, b] = tr.indices[tr.offsets[g] : tr.offsets[g + 1]].tolist()
    return out


def check_layout(tr: Trace, tables):
    T, B, nb = tr.num_tables, tr.batch_size, tr.num_batches
    assert tr.offsets.dtype == np.int64 and tr.indices.dtype == np.int64
    assert tr.offsets.size == nb * T * B + 1
    assert tr.offsets[0] == 0 and tr.offsets[-1] == tr.indices.size
    assert np.all(np.diff(tr.offsets) >= 0)
    parts = []
    for idx, off, _ in tr.batches():
        assert off.size == T * B + 1 and off[0] == 0 and off[-1] == idx.size
        assert np.all(np.diff(off) >= 0)
        parts.append(idx)
    assert np.array_equal(np.concatenate(parts), tr.indices)
    for t, spec in enumerate(tables):
        rows, bags = tr.table_lookups(t)
        assert rows.size == 0 or (rows.min() >= 0 and rows.max() < spec.num_embeddings)
        assert np.all(np.diff(bags) >= 0) and (bags.size == 0 or bags.max() < nb * B)


# ---- layout and determinism -------------------------------------------------------------


@pytest.mark.parametrize("dist", ["poisson", "fixed", "uniform"])
@pytest.mark.parametrize("co", [0.0, 0.6])
def test_generator_layout_is_valid_tbe(dist, co):
    tr = synthetic_trace(
        TABLES, batch_size=17, num_batches=3, pooling=[5, 2, 9], co_occurrence=co, pooling_distribution=dist, seed=4
    )
    check_layout(tr, TABLES)
    assert tr.table_names == ["big", "tiny", "mid"]
    lengths = tr.lengths()
    if dist == "fixed":
        assert np.array_equal(lengths[:, 0, :], np.full((3, 17), 5))
    means = lengths.mean(axis=(0, 2))
    assert abs(means[0] - 5) < 1.5 and abs(means[2] - 9) < 2.5


def test_table_lookups_and_batches_match_naive_offsets():
    tr = synthetic_trace(TABLES, batch_size=6, num_batches=4, pooling=3, seed=1)
    bags = naive_bags(tr)
    for t in range(3):
        rows, bag_ids = tr.table_lookups(t)
        exp_rows, exp_bags = [], []
        for i in range(4):
            for b in range(6):
                exp_rows += bags[i, t, b]
                exp_bags += [i * 6 + b] * len(bags[i, t, b])
        assert rows.tolist() == exp_rows and bag_ids.tolist() == exp_bags


def test_seed_determinism():
    kw = dict(batch_size=64, num_batches=2, pooling=7, co_occurrence=0.4, weighted=True)
    a = synthetic_trace(TABLES, seed=11, **kw)
    b = synthetic_trace(TABLES, seed=11, **kw)
    c = synthetic_trace(TABLES, seed=12, **kw)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(a.per_sample_weights, b.per_sample_weights)
    assert a.hash() == b.hash() != c.hash()


def test_pooling_zero_gives_empty_bags():
    tr = synthetic_trace(TABLES, batch_size=10, num_batches=2, pooling=0, seed=0)
    assert tr.num_lookups == 0 and tr.offsets.size == 2 * 3 * 10 + 1 and not tr.offsets.any()
    check_layout(tr, TABLES)
    mixed = synthetic_trace(TABLES, batch_size=10, pooling=[4, 0, 4], seed=0, pooling_distribution="fixed")
    assert mixed.table_lookups(1)[0].size == 0 and mixed.table_lookups(0)[0].size == 40
    assert workload_stats(mixed, TABLES)[1].bag_fanin.empty_fraction == 1.0


@pytest.mark.parametrize("co", [0.0, 0.7])
def test_unique_per_bag_has_no_repeats(co):
    tables = TABLES + [TableSpec("crowded", 24, 4)]
    tr = synthetic_trace(
        tables,
        batch_size=500,
        num_batches=2,
        pooling=[30, 5, 60, 24],
        alpha=1.3,
        co_occurrence=co,
        unique_per_bag=True,
        seed=1,
    )
    check_layout(tr, tables)
    lengths = tr.lengths()
    assert lengths[:, 1].max() <= 3 and lengths[:, 3].max() <= 24  # capped at the table size
    for t in range(4):
        rows, bags = tr.table_lookups(t)
        assert np.unique(bags * 100_000 + rows).size == rows.size
    # the law is still skewed: the hottest row of "big" is in most bags
    top = workload_stats(tr, tables)[0].counts[0]
    assert top > 0.5 * tr.num_samples
    with pytest.raises(ValueError, match="Zipf mode"):
        synthetic_trace(
            TABLES, batch_size=2, unique_per_bag=True, reuse_histogram=ReuseHistogram.from_counts(np.array([1, 2]))
        )


def test_weights_are_float32_unit_interval():
    tr = synthetic_trace(TABLES, batch_size=50, pooling=4, weighted=True, seed=2)
    w = tr.per_sample_weights
    assert w.dtype == np.float32 and w.shape == tr.indices.shape and w.min() >= 0 and w.max() < 1
    assert tr.batch(0)[2].shape == tr.batch(0)[0].shape


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="co_occurrence"):
        synthetic_trace(TABLES, batch_size=2, co_occurrence=1.5)
    with pytest.raises(ValueError, match="pooling"):
        synthetic_trace(TABLES, batch_size=2, pooling=[1, 2])
    with pytest.raises(ValueError, match="alpha"):
        synthetic_trace(TABLES, batch_size=2, alpha=-1)
    with pytest.raises(TraceError, match="offsets"):
        Trace(2, 2, np.arange(3), np.array([0, 1, 2, 3]))
    with pytest.raises(TraceError, match="non-decreasing"):
        Trace(1, 3, np.arange(3), np.array([0, 2, 1, 3]))
    with pytest.raises(TraceError, match="negative"):
        Trace(1, 1, np.array([-1]), np.array([0, 1]))


# ---- distributions ----------------------------------------------------------------------


def rank_frequency_slope(counts: np.ndarray, lo: int, hi: int) -> float:
    c = np.sort(counts)[::-1][lo:hi].astype(float)
    ranks = np.arange(lo + 1, hi + 1, dtype=float)
    return float(np.polyfit(np.log(ranks), np.log(c), 1)[0])


@pytest.mark.parametrize("alpha", [0.8, 1.05, 1.3])
def test_zipf_rank_frequency_slope_matches_alpha(alpha):
    spec = TableSpec("z", 200_000, 8)
    tr = synthetic_trace([spec], batch_size=40_000, num_batches=2, pooling=40, alpha=alpha, seed=5)
    counts = workload_stats(tr, [spec])[0].counts
    # Ranks 1..1000 all have >= ~100 hits at these sizes, so sampling noise on the
    # fitted slope is well below the tolerance.
    slope = rank_frequency_slope(counts, 0, 1000)
    assert abs(-slope - alpha) < 0.02, slope


def test_bounded_zipf_sampler_matches_exact_pmf():
    rng = np.random.default_rng(0)
    E, alpha, n = 5000, 1.1, 2_000_000
    ranks = _bounded_zipf_ranks(rng, n, E, alpha)
    pmf = np.arange(1, E + 1, dtype=float) ** -alpha
    pmf /= pmf.sum()
    obs = np.bincount(ranks, minlength=E) / n
    # head (exact CDF) and tail (continuous inverse) both within 5 sigma
    sigma = np.sqrt(pmf * (1 - pmf) / n)
    assert np.all(np.abs(obs - pmf) < 5 * sigma + 1e-7)
    tail = slice(1024, None)
    assert abs(obs[tail].sum() - pmf[tail].sum()) < 0.003


def test_alpha_zero_is_uniform_and_hot_rows_are_scattered():
    spec = TableSpec("u", 1000, 8)
    tr = synthetic_trace([spec], batch_size=10_000, pooling=20, alpha=0.0, seed=3)
    counts = np.bincount(tr.indices, minlength=1000)
    assert counts.max() < 1.3 * counts.mean()
    skewed = synthetic_trace([TableSpec("s", 100_000, 8)], batch_size=10_000, pooling=20, alpha=1.2, seed=3)
    hot = workload_stats(skewed)[0].hot_rows(k=50)
    # real traces are not sorted by popularity: the hottest ids are spread over the table
    assert hot.mean() > 20_000 and (hot < 50).sum() <= 2


def test_feistel_is_a_permutation():
    for domain in [1, 2, 3, 17, 1000, 65537]:
        p = _feistel_permute(np.arange(domain), domain, key=domain)
        assert np.array_equal(np.sort(p), np.arange(domain))
    assert not np.array_equal(_feistel_permute(np.arange(100), 100, 1), _feistel_permute(np.arange(100), 100, 2))


def test_co_occurrence_keeps_counts_and_creates_correlated_pairs():
    spec = TableSpec("t", 20_000, 8)
    kw = dict(batch_size=20_000, pooling=16, alpha=1.05, seed=3)
    base = synthetic_trace([spec], co_occurrence=0.0, **kw)
    grouped = synthetic_trace([spec], co_occurrence=0.8, **kw)
    # only positions move: every row keeps its exact count, every bag its length
    assert np.array_equal(np.bincount(base.indices, minlength=20_000), np.bincount(grouped.indices, minlength=20_000))
    assert np.array_equal(base.offsets, grouped.offsets)

    def strong_pairs(tr):
        st = workload_stats(tr, [spec])[0]
        rows = st.rows[100:1100]  # popular but not in every bag
        hg = cooccurrence_hypergraph(tr, 0, rows, min_edge_size=1)
        inc = hg.incidence().astype(float)
        co = (inc.T @ sp.diags(hg.edge_weights.astype(float)) @ inc).toarray()
        bags_with = np.diag(co).copy()
        expected = np.outer(bags_with, bags_with) / tr.num_samples  # independence
        np.fill_diagonal(co, 0)
        strong = (co >= 10) & (co >= 10 * expected)
        return int(strong.sum() // 2), float(co.sum() / (expected.sum() - np.trace(expected)))

    pairs0, lift0 = strong_pairs(base)
    pairs8, _ = strong_pairs(grouped)
    assert pairs0 == 0 and abs(lift0 - 1) < 0.05  # independent bags: no pair stands out
    assert pairs8 >= 200  # many pairs co-occur >= 10x more often than independence predicts


# ---- reuse histograms -----------------------------------------------------------------


def test_parse_meta_locality_stats():
    h22 = parse_locality_stats(meta_locality_stats_path(2022))
    h21 = parse_locality_stats(meta_locality_stats_path(2021))
    assert len(h22) == 16 and len(h21) == 17
    assert h21[0].name == "fbgemm_t856_bs65536.pt" and h21[0].batch_size == 65536
    assert h21[0].num_indices == 887017990 and h21[0].num_unique == 128435723
    for h in h21 + h22:
        assert h.num_bins == 17 and list(h.bin_edges[:3]) == [0, 1, 2]
        assert abs(h.fraction_of_rows.sum() - 1) < 0.01 and abs(h.fraction_of_indices.sum() - 1) < 0.01
    assert h22[0].fraction_of_rows[0] == 0.342 and h22[0].fraction_of_indices[-1] == 0.076
    combined = ReuseHistogram.combine(h22)
    assert abs(combined.mean_reuse - 12.7) < 0.1


def test_parse_rejects_garbage(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("hello\n")
    with pytest.raises(TraceError):
        parse_locality_stats(f)


# Tolerance: every bin's share of rows and of lookups within 0.02 (absolute) of the
# target; the published numbers are rounded to 0.001.
REUSE_TOL = 0.02


@pytest.mark.parametrize("source", ["meta2022_combined", "meta2021_file3"])
def test_generator_matches_meta_reuse_histogram(source):
    if source == "meta2022_combined":
        target = ReuseHistogram.combine(parse_locality_stats(meta_locality_stats_path(2022)))
    else:
        target = parse_locality_stats(meta_locality_stats_path(2021))[4]
    spec = TableSpec("m", 5_000_000, 8)
    # 2.4M lookups: enough for the open last bin (> 32768 hits on one row) to exist.
    tr = synthetic_trace([spec], batch_size=60_000, pooling=40, reuse_histogram=target, seed=9)
    got = workload_stats(tr, [spec])[0].reuse_histogram
    d_rows, d_idx = got.distance(target)
    assert d_rows < REUSE_TOL and d_idx < REUSE_TOL, (d_rows, d_idx)


def test_generator_matches_a_table_histogram_and_keeps_co_occurrence_counts():
    spec = TableSpec("z", 100_000, 8)
    zipf = synthetic_trace([spec], batch_size=20_000, pooling=10, alpha=1.1, seed=1)
    target = workload_stats(zipf, [spec])[0].reuse_histogram
    for co in (0.0, 0.5):
        tr = synthetic_trace([spec], batch_size=20_000, pooling=10, reuse_histogram=target, co_occurrence=co, seed=2)
        d_rows, d_idx = workload_stats(tr, [spec])[0].reuse_histogram.distance(target)
        assert d_rows < REUSE_TOL and d_idx < REUSE_TOL


def test_reuse_counts_are_exact_and_degrade_gracefully():
    h = ReuseHistogram.combine(parse_locality_stats(meta_locality_stats_path(2022)))
    rng = np.random.default_rng(0)
    for n in [1, 7, 100, 5000]:
        c = h.counts_for(n, rng)
        assert c.sum() == n and c.min() >= 1 and np.all(np.diff(c) <= 0)
    # a 3-row table cannot hold the histogram's rows: ids fold, every lookup stays in range
    tr = synthetic_trace([TableSpec("t", 3, 4)], batch_size=100, pooling=5, reuse_histogram=h, seed=0)
    assert tr.indices.max() < 3


# ---- trace operations ------------------------------------------------------------------


def test_rebatch_split_select_preserve_bags():
    tr = synthetic_trace(TABLES, batch_size=6, num_batches=4, pooling=3, weighted=True, seed=8)
    bags = naive_bags(tr)
    re = tr.rebatch(4)
    assert re.num_batches == 6 and re.batch_size == 4
    rb = naive_bags(re)
    for i in range(6):
        for t in range(3):
            for b in range(4):
                s = i * 4 + b
                assert rb[i, t, b] == bags[s // 6, t, s % 6]
    with pytest.warns(UserWarning, match="dropping"):
        assert tr.rebatch(5).num_batches == 4
    a, b = tr.split(0.5)
    assert a.num_batches == 2 and b.num_batches == 2
    assert np.array_equal(np.concatenate([a.indices, b.indices]), tr.indices)
    assert np.array_equal(np.concatenate([a.per_sample_weights, b.per_sample_weights]), tr.per_sample_weights)
    one = synthetic_trace(TABLES, batch_size=10, pooling=3, seed=8)
    x, y = one.split(0.3)
    assert (x.batch_size, y.batch_size) == (3, 7)
    assert x.table_lookups(2)[0].size + y.table_lookups(2)[0].size == one.table_lookups(2)[0].size
    sel = tr.select_tables([2, 0])
    assert sel.table_names == ["mid", "big"]
    assert np.array_equal(sel.table_lookups(0)[0], tr.table_lookups(2)[0])
    assert np.array_equal(sel.table_lookups(1)[1], tr.table_lookups(0)[1])


def test_hash_sees_every_change():
    tr = synthetic_trace(TABLES, batch_size=8, pooling=3, weighted=True, seed=0)
    h = tr.hash()
    changed = Trace(tr.num_tables, tr.batch_size, tr.indices.copy(), tr.offsets, tr.per_sample_weights, tr.table_names)
    changed.indices[5] ^= 1
    assert changed.hash() != h
    no_w = Trace(tr.num_tables, tr.batch_size, tr.indices, tr.offsets, None, tr.table_names)
    assert no_w.hash() != h


# ---- loaders --------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    tr = synthetic_trace(TABLES, batch_size=9, num_batches=2, pooling=4, weighted=True, seed=3)
    f = tr.save(tmp_path / "trace")
    assert f.suffix == ".npz"
    back = load_trace(f)
    assert back.hash() == tr.hash() and back.table_names == tr.table_names
    assert np.array_equal(back.per_sample_weights, tr.per_sample_weights)
    assert load_trace(tr.save(tmp_path / "c.npz", compress=True)).hash() == tr.hash()
    assert load_trace(f, batch_size=6).num_batches == 3
    assert load_trace(f, tables=[1]).table_lookups(0)[0].tolist() == tr.table_lookups(1)[0].tolist()
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(TraceError, match="not an updlrm trace"):
        load_trace(tmp_path / "other.npz")


def meta_tensors(tr: Trace):
    """A one-batch trace as Meta's dlrm_datasets tuple (indices, offsets, lengths[T, B])."""
    assert tr.num_batches == 1
    return (
        torch.from_numpy(tr.indices.copy()),
        torch.from_numpy(tr.offsets.copy()),
        torch.from_numpy(tr.lengths()[0].copy()),
    )


@pytest.mark.parametrize("flavour", ["zip", "gz", "legacy"])
def test_meta_pt_round_trip(tmp_path, flavour):
    tr = synthetic_trace(TABLES, batch_size=12, pooling=5, seed=6)
    f = tmp_path / ("fbgemm_t3_bs12.pt" + (".gz" if flavour == "gz" else ""))
    if flavour == "gz":
        with gzip.open(f, "wb") as out:
            torch.save(meta_tensors(tr), out)
    else:
        torch.save(meta_tensors(tr), f, _use_new_zipfile_serialization=flavour == "zip")
    back = load_trace(f)
    assert (back.num_tables, back.batch_size) == (3, 12)
    assert np.array_equal(back.indices, tr.indices) and np.array_equal(back.offsets, tr.offsets)
    sel = load_trace(f, tables=[2, 0], batch_size=4)
    assert sel.num_tables == 2 and sel.num_batches == 3
    assert np.array_equal(sel.table_lookups(0)[0], tr.table_lookups(2)[0])
    named = load_trace(f, tables=TABLES)
    assert named.table_names == ["big", "tiny", "mid"]
    with pytest.raises(TraceError, match="looks up row"):
        load_trace(f, tables=[TableSpec("a", 1, 1)] * 3)


def test_meta_pt_rejects_inconsistent_lengths(tmp_path):
    tr = synthetic_trace(TABLES, batch_size=4, pooling=2, seed=6)
    indices, offsets, lengths = meta_tensors(tr)
    torch.save((indices, offsets, lengths[:, :3]), tmp_path / "bad.pt")
    with pytest.raises(TraceError, match="T\\*B\\+1"):
        load_trace(tmp_path / "bad.pt")
    lengths2 = lengths.clone()
    lengths2[0, 0] += 1
    torch.save((indices, offsets, lengths2), tmp_path / "bad2.pt")
    with pytest.raises(TraceError, match="disagree"):
        load_trace(tmp_path / "bad2.pt")


@pytest.mark.parametrize("gz", [False, True])
def test_criteo_tsv(tmp_path, gz):
    rng = np.random.default_rng(0)
    n = 25
    raw = rng.integers(0, 1 << 32, size=(n, 26))
    lines = []
    for s in range(n):
        dense = [str(int(x)) if x % 3 else "" for x in rng.integers(0, 100, 13)]
        cats = [format(int(v), "08x") for v in raw[s]]
        cats[s % 26] = ""  # missing value
        lines.append("\t".join([str(s % 2)] + dense + cats))
    text = "\n".join(lines) + "\n"
    f = tmp_path / ("day_0.gz" if gz else "train.txt")
    if gz:
        with gzip.open(f, "wt") as out:
            out.write(text)
    else:
        f.write_text(text)
    tables = criteo_like_tables(max_rows=1000)
    tr = load_trace(f, tables=tables)
    assert (tr.num_tables, tr.batch_size, tr.num_lookups) == (26, n, 26 * n)
    sizes = np.array([t.num_embeddings for t in tables])
    expected = raw % sizes
    for s in range(n):
        expected[s, s % 26] = 0
    for t in range(26):
        rows, bags = tr.table_lookups(t)
        assert rows.tolist() == expected[:, t].tolist() and bags.tolist() == list(range(n))
    default = load_trace(f, max_samples=10, batch_size=5)
    assert default.num_batches == 2 and default.table_lookups(2)[0].max() < CRITEO_KAGGLE_CARDINALITIES[2]
    (tmp_path / "short.txt").write_text("1\t2\t3\n")
    with pytest.raises(TraceError, match="40 tab-separated"):
        load_trace(tmp_path / "short.txt")


def test_criteo_like_tables():
    t = criteo_like_tables(dim=32, max_rows=10_000)
    assert [s.name for s in t][:3] == ["C1", "C2", "C3"] and len(t) == 26
    assert [s.num_embeddings for s in t] == [min(n, 10_000) for n in CRITEO_KAGGLE_CARDINALITIES]
    assert sum(CRITEO_KAGGLE_CARDINALITIES) == 33_762_577  # total quoted for Kaggle Criteo
    assert all(s.embedding_dim == 32 for s in t)
