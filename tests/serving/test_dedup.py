"""In-batch dedup: exact grouping (even under hash collisions), outputs equal with and without it,
deduplicated (variable-batch) inputs, and the per-batch decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import assert_close_to_reference, random_kjt, reference_pool

import updlrm
from updlrm import EmbeddingBagConfig, KeyedJaggedTensor, dedup


def python_unique(values, weights, offsets):
    seen, first, inverse = {}, [], []
    for b in range(len(offsets) - 1):
        lo, hi = offsets[b], offsets[b + 1]
        key = (tuple(values[lo:hi]), None if weights is None else tuple(np.asarray(weights[lo:hi]).view(np.uint32)))
        if key not in seen:
            seen[key] = len(first)
            first.append(b)
        inverse.append(seen[key])
    return first, inverse


bags_strategy = st.lists(st.lists(st.integers(0, 3), max_size=4), max_size=30)


@settings(max_examples=150, deadline=None)
@given(bags_strategy, st.booleans(), st.booleans())
def test_unique_bags_matches_a_python_reference(bags, weighted, large_values):
    lengths = [len(b) for b in bags]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    values = np.array([v for b in bags for v in b], dtype=np.int64)
    if large_values:
        values = values * (1 << 40) - 3  # the hash sees all 64 bits (and negatives)
    weights = None
    if weighted:
        weights = np.where(values % 2 == 0, 1.0, -0.0).astype(np.float32)  # -0.0 and 0.0 are different bits
    first, inverse = dedup.unique_bags(values, weights, offsets)
    ref_first, ref_inverse = python_unique(values, weights, offsets)
    assert first.tolist() == ref_first and inverse.tolist() == ref_inverse


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bags_strategy)
def test_hash_collisions_never_merge_different_bags(monkeypatch, bags):
    # Every bag gets the same hash: grouping rests on the value-by-value verification alone.
    monkeypatch.setattr(dedup, "_hash_bags", lambda seq, wbits, local: np.zeros(local.size - 1, dtype=np.uint64))
    lengths = [len(b) for b in bags]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    values = np.array([v for b in bags for v in b], dtype=np.int64)
    first, inverse = dedup.unique_bags(values, None, offsets)
    for b in range(len(bags)):
        assert bags[int(first[inverse[b]])] == bags[b]


def ranking_kjt(rng, batch, user_rows, item_rows, user_len=6):
    """One user x ``batch`` candidates: user features repeat in every sample, candidate features differ."""
    keys = ["u_id", "u_hist", "c_item", "c_cat"]
    user_bags = [rng.integers(0, user_rows, 1), rng.integers(0, item_rows, user_len)]
    values, lengths = [], []
    for bag in user_bags:
        values += [bag] * batch
        lengths += [bag.size] * batch
    for rows in (item_rows, 1000):
        for _ in range(batch):
            bag = rng.integers(0, rows, rng.integers(1, 3))
            values.append(bag)
            lengths.append(bag.size)
    return KeyedJaggedTensor.from_lengths_sync(keys, torch.from_numpy(np.concatenate(values)), torch.tensor(lengths))


def ranking_tables(row_format):
    # The item table serves the candidate's item and the user's history (a shared table).
    return [
        EmbeddingBagConfig("user", 50, 4, ["u_id"], row_format=row_format),
        EmbeddingBagConfig("item", 200, 8, ["c_item", "u_hist"], pooling="MEAN", row_format=row_format),
        EmbeddingBagConfig("cat", 1000, 3, ["c_cat"], row_format=row_format),
    ]


@pytest.mark.parametrize("row_format", ["fp32", "int8", "int32"])
def test_ranking_batch_dedup_on_off(make_ebc, row_format):
    rng = np.random.default_rng(5)
    kjt = ranking_kjt(rng, 64, 50, 200)
    ebc = make_ebc(ranking_tables(row_format), nr_dpus=6)
    auto = ebc(kjt).values()
    report = ebc.last_report
    assert ebc.feature_names() == ["u_id", "c_item", "u_hist", "c_cat"]
    # The user's features are deduplicated, the candidates' are not worth it.
    assert report.deduplicated == [True, False, True, False]
    assert report.bags_run == [1, 64, 1, 64]
    assert report.lookups_run == int(ebc.last_stats.lookups.sum()) + ebc.last_stats.host_cache_hits
    user_lookups = 1 + 6
    candidate_lookups = int(kjt["c_item"].lengths().sum() + kjt["c_cat"].lengths().sum())
    assert report.lookups_run == user_lookups + candidate_lookups
    assert report.lookups_in == 64 * user_lookups + candidate_lookups
    ebc.dedup = False
    off = ebc(kjt).values()
    assert ebc.last_report.lookups_run == ebc.last_report.lookups_in and not any(ebc.last_report.deduplicated)
    if row_format == "fp32":
        # Same additions; the engine's split of a DPU's lookups over tasklets depends on
        # where a bag sits in the batch, so only rounding may differ.
        torch.testing.assert_close(auto, off, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(auto, off)  # exact int64 sums
    assert_close_to_reference(auto, reference_pool(ebc, kjt))


def test_fp32_bit_identical_when_a_bag_is_summed_in_one_piece(make_ebc):
    # One tasklet per DPU and no replicated rows: a bag's lookups on a DPU are one partial
    # whatever its position, so dedup changes nothing at all.
    ebc = make_ebc(ranking_tables("fp32"), nr_dpus=6, nr_tasklets=1)
    kjt = ranking_kjt(np.random.default_rng(1), 40, 50, 200)
    ebc.dedup = True
    on = ebc(kjt).values()
    ebc.dedup = False
    assert torch.equal(on, ebc(kjt).values())


def test_forced_and_disabled_dedup(make_ebc):
    ebc = make_ebc(ranking_tables("int8"), dedup=True)
    kjt = ranking_kjt(np.random.default_rng(2), 16, 50, 7)
    ebc(kjt)
    # dedup=True hashes every feature: u_* always repeat, c_item (7 of 200 rows drawn) by chance.
    assert ebc.last_report.deduplicated[0] and ebc.last_report.deduplicated[2]
    assert ebc.last_report.duplication > 1
    off = make_ebc(ranking_tables("int8"), dedup=False)
    assert torch.equal(off(kjt).values(), ebc(kjt).values())
    assert off.last_report.duplication == 1.0
    with pytest.raises(ValueError, match="dedup must be 'auto', True or False"):
        updlrm.EmbeddingBagCollection(ranking_tables("fp32"), dedup="yes", backend="emulator")


def test_same_indices_different_weights_are_different_bags(make_ebc):
    ebc = make_ebc([EmbeddingBagConfig("t", 10, 3, ["a"])], is_weighted=True, dedup=True)
    kjt = KeyedJaggedTensor(
        ["a"],
        torch.tensor([1, 2, 1, 2, 1, 2]),
        weights=torch.tensor([1.0, 1.0, 1.0, 2.0, 1.0, 1.0]),
        lengths=torch.tensor([2, 2, 2]),
    )
    out = ebc(kjt).values()
    assert ebc.last_report.bags_run == [2]
    assert_close_to_reference(out, reference_pool(ebc, kjt))
    assert not torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


@pytest.mark.parametrize("row_format", ["fp32", "int8"])
def test_deduplicated_input_is_accepted(make_ebc, row_format):
    """A variable-batch KJT (unique bags + inverse indices) gives the expanded batch's result."""
    ebc = make_ebc(ranking_tables(row_format))
    rng = np.random.default_rng(3)
    B = 5
    user = np.array([7]), np.array([3, 3, 9])
    items = [rng.integers(0, 200, rng.integers(0, 3)) for _ in range(B)]
    cats = [rng.integers(0, 1000, 1) for _ in range(B)]
    vbe = KeyedJaggedTensor(
        ["u_id", "u_hist", "c_item", "c_cat"],
        torch.from_numpy(np.concatenate([user[0], user[1], *items, *cats])),
        lengths=torch.tensor([1, 3] + [i.size for i in items] + [1] * B),
        stride_per_key_per_rank=[[1], [1], [B], [B]],
        inverse_indices=(
            ["u_id", "u_hist", "c_item", "c_cat"],
            torch.tensor([[0] * B, [0] * B, list(range(B)), list(range(B))]),
        ),
    )
    full = KeyedJaggedTensor(
        ["u_id", "u_hist", "c_item", "c_cat"],
        torch.from_numpy(np.concatenate([*[user[0]] * B, *[user[1]] * B, *items, *cats])),
        lengths=torch.tensor([1] * B + [3] * B + [i.size for i in items] + [1] * B),
    )
    a = ebc(vbe).values()
    assert ebc.last_report.bags_run == [1, B, 1, B] and ebc.last_report.deduplicated == [True] * 4  # all expanded
    ebc.dedup = False
    b = ebc(full).values()
    assert_close_to_reference(a, reference_pool(ebc, full))
    assert_close_to_reference(a, reference_pool(ebc, vbe))
    if row_format != "fp32":
        assert torch.equal(a, b)


def test_estimate_skips_features_without_repeats():
    from updlrm.collection import read_kjt

    rng = np.random.default_rng(0)
    kjt = random_kjt(rng, ["a", "b"], {"a": 10**6, "b": 3}, 256, max_len=3)
    batch = read_kjt(kjt)
    repeated = dedup._estimate(batch, [0, 1])
    assert repeated[0] < dedup.MIN_REPEATED <= repeated[1]
    bags, inverse, done = dedup.choose_bags(batch, [0, 1], "auto")
    assert done == [False, True] and inverse[0] is None and bags[0].size == 256 and bags[1].size < 256
    # The inverse indices rebuild every bag.
    for b in range(256):
        src = int(bags[1][inverse[1][b]])
        lo, hi = batch.offsets[256 + b], batch.offsets[256 + b + 1]
        assert batch.values[batch.offsets[src] : batch.offsets[src + 1]].tolist() == batch.values[lo:hi].tolist()


def test_collisions_across_features_never_merge(monkeypatch):
    """Every bag of every feature hashes alike: only the verification (feature, length, values) groups."""
    from updlrm.collection import read_kjt

    monkeypatch.setattr(dedup, "_hash_bags", lambda seq, wbits, local: np.zeros(local.size - 1, dtype=np.uint64))
    monkeypatch.setattr(dedup, "_mix", lambda x: x * np.uint64(0))
    # Feature a's bags equal feature b's bags; within each feature, bags 0 and 2 repeat.
    lengths = torch.tensor([2, 1, 2, 2, 1, 2])
    kjt = KeyedJaggedTensor(["a", "b"], torch.tensor([4, 5, 6, 4, 5, 4, 5, 6, 4, 5]), lengths=lengths)
    batch = read_kjt(kjt)
    bags, inverse, _ = dedup.choose_bags(batch, [0, 1], mode=True)
    assert bags[0].tolist() == [0, 1] and inverse[0].tolist() == [0, 1, 0]
    # b's bags all collide with a's first bag, which the feature check refuses: b stays whole
    # (a missed duplicate, never a wrong one).
    assert set(bags[1].tolist()) <= {3, 4, 5}
    for k in (0, 1):
        rows = bags[k] if inverse[k] is None else bags[k][inverse[k]]
        for b, src in enumerate(rows.tolist()):
            own = 3 * k + b
            assert (
                batch.values[batch.offsets[src] : batch.offsets[src + 1]].tolist()
                == batch.values[batch.offsets[own] : batch.offsets[own + 1]].tolist()
            )


def test_estimate_sees_repeats_wherever_they_sit():
    """Bags repeated in neighbouring samples (a user with two candidates) count as much as spread ones."""
    from updlrm.collection import read_kjt

    rng = np.random.default_rng(1)
    bags = [rng.integers(0, 10**6, 5) for _ in range(256)]
    adjacent = [b for b in bags for _ in range(2)]  # 0 0 1 1 2 2 ...
    spread = bags + bags  # 0 1 2 ... 0 1 2 ...
    values = np.concatenate(adjacent + spread)
    kjt = KeyedJaggedTensor(["a", "b"], torch.from_numpy(values), lengths=torch.full((1024,), 5))
    batch = read_kjt(kjt)
    assert dedup._estimate(batch, [0, 1]).tolist() == [0.5, 0.5]
    bags_run, _, done = dedup.choose_bags(batch, [0, 1], "auto")
    assert done == [True, True] and [b.size for b in bags_run] == [256, 256]
