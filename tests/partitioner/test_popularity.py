"""The popularity model against synthetic Zipf traces of known exponent, and its use by the planner."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm.partitioner.expected_loads import table_workloads
from updlrm.partitioner.popularity import MIN_FIT_COUNT, fit_popularity
from updlrm.partitioner.workloads import Trace
from updlrm.specs import TableSpec


def _zipf(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


@pytest.mark.parametrize("s", [0.8, 1.0, 1.2])
@pytest.mark.parametrize("n, lookups", [(10_000, 20_000), (5_000, 50_000)])
def test_fit_recovers_the_exponent_and_the_unseen_mass(s, n, lookups):
    rng = np.random.default_rng(int(s * 10) + n)
    p = _zipf(n, s)
    counts = np.bincount(rng.choice(n, lookups, p=p), minlength=n)
    pop = fit_popularity(counts, n)
    assert pop.exponent == pytest.approx(s, abs=0.08)
    true_unseen = float(p[counts == 0].sum())
    assert pop.unseen_mass == pytest.approx(true_unseen, abs=0.01 + 0.1 * true_unseen)
    assert pop.seen + pop.unseen_rows == n and pop.singletons == int((counts == 1).sum())


@pytest.mark.parametrize("s", [0.8, 1.0, 1.2])
def test_shares_predict_fresh_traffic_better_than_raw_counts(s):
    n, lookups = 20_000, 40_000
    rng = np.random.default_rng(7)
    p = _zipf(n, s)
    counts = np.bincount(rng.choice(n, lookups, p=p), minlength=n)
    fresh = rng.choice(n, lookups, p=p)
    shares = fit_popularity(counts, n).shares(counts)
    raw = counts / counts.sum()
    # Expected-load error per row, and held-out log-likelihood (raw counts give unseen rows 0).
    assert np.abs(shares - p).sum() < 0.85 * np.abs(raw - p).sum()
    assert np.all(shares > 0)
    assert np.log(shares[fresh]).sum() > np.log(np.maximum(raw[fresh], 1e-300)).sum()
    assert np.isneginf(np.log(raw[fresh])).any()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=200), st.integers(0, 50))
def test_shares_are_a_distribution_and_keep_the_head(counts, extra_rows):
    counts = np.array(counts)
    n = counts.size + extra_rows
    padded = np.r_[counts, np.zeros(extra_rows, dtype=int)]
    pop = fit_popularity(padded, n)
    shares = pop.shares(padded)
    assert shares.sum() == pytest.approx(1.0)
    assert np.all(shares >= 0)
    assert 0.0 <= pop.unseen_mass <= 1.0
    if pop.unseen_rows == 0:
        assert pop.unseen_mass == 0.0
    # Rows counted often keep their order.
    head = np.flatnonzero(padded >= MIN_FIT_COUNT)
    order = head[np.argsort(-padded[head], kind="stable")]
    assert np.all(np.diff(shares[order]) <= 1e-12)


def test_bad_counts_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="non-negative"):
        fit_popularity(np.array([1, -1]), 4)
    with pytest.raises(ValueError, match="3 rows seen in a table of 2 rows"):
        fit_popularity(np.array([1, 1, 1]), 2)


def test_planner_unseen_mass_is_at_least_good_turing():
    rng = np.random.default_rng(3)
    n, bags, pooling = 50_000, 512, 8
    rows = rng.choice(n, bags * pooling, p=_zipf(n, 0.9))
    trace = Trace(1, 64, rows, np.arange(0, bags * pooling + 1, pooling))
    wl = table_workloads([TableSpec("t", n, 8)], trace)[0]
    assert wl.popularity is not None
    gt = wl.popularity.singletons / wl.popularity.lookups
    assert wl.unranked >= gt * wl.total_load * (1 - 1e-9)
    assert wl.total_load == pytest.approx(bags * pooling * 64 / bags)
