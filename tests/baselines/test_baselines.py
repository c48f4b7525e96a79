"""Like-for-like CPU baselines compute what the reference computes, and timings keep their spread."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm.baselines import Comparison, CopyFloor, CpuBaseline, Timing, byte_rowwise_pack, copy_floor, time_call
from updlrm.specs import TableSpec


def _reference(tables, stored, indices, offsets, batch, psw, mode):
    outs = []
    for t, (spec, rows) in enumerate(zip(tables, stored)):
        values = torch.from_numpy(
            (np.asarray(rows, np.float64) * (spec.scale if spec.row_format != "fp32" else 1.0)).astype(np.float32)
        )
        lo, hi = offsets[t * batch], offsets[(t + 1) * batch]
        off = torch.from_numpy(offsets[t * batch : (t + 1) * batch + 1] - lo)
        w = None if psw is None else torch.from_numpy(psw[lo:hi])
        outs.append(
            torch.nn.functional.embedding_bag(
                torch.from_numpy(indices[lo:hi]), values, off, mode=mode, include_last_offset=True, per_sample_weights=w
            )
        )
    return torch.cat(outs, 1).numpy()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    data=st.data(),
    formats=st.lists(st.sampled_from(["fp32", "int8", "int32"]), min_size=1, max_size=3),
    batch=st.integers(1, 6),
    weighted=st.booleans(),
    mode=st.sampled_from(["sum", "mean"]),
)
def test_baseline_matches_reference(data, formats, batch, weighted, mode):
    if weighted and mode == "mean":
        mode = "sum"  # torch's bags take per-sample weights with sum pooling only
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    tables, stored = [], []
    for i, fmt in enumerate(formats):
        rows, dim = int(rng.integers(1, 30)), int(rng.integers(1, 20))
        if fmt == "fp32":
            tables.append(TableSpec(f"t{i}", rows, dim))
            stored.append(rng.standard_normal((rows, dim), dtype=np.float32))
        elif fmt == "int8":
            tables.append(TableSpec(f"t{i}", rows, dim, row_format="int8", scale=0.01))
            stored.append(rng.integers(-127, 128, (rows, dim)).astype(np.int8))
        else:
            tables.append(TableSpec(f"t{i}", rows, dim, row_format="int32", scale=1e-4))
            stored.append(rng.integers(-(2**20), 2**20, (rows, dim)).astype(np.int32))
    lengths = rng.integers(0, 8, len(tables) * batch)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate(
        [
            rng.integers(0, tables[t].num_embeddings, lengths[t * batch : (t + 1) * batch].sum())
            for t in range(len(tables))
        ]
    ).astype(np.int64)
    psw = rng.random(len(indices), dtype=np.float32) if weighted else None
    out = CpuBaseline(tables, stored)(indices, offsets, batch, psw, mode)
    expected = _reference(tables, stored, indices, offsets, batch, psw, mode)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_pack_matches_torch_prepack_on_exact_rows():
    # Rows whose min is -128*scale and max 127*scale pack to the same bytes torch's own prepack writes.
    q = np.array([[-128, 127, 0, 5], [-128, 127, -7, 1]], np.int8)
    ours = byte_rowwise_pack(q, 0.25)
    theirs = torch.ops.quantized.embedding_bag_byte_prepack(torch.from_numpy(q.astype(np.float32) * 0.25))
    assert torch.equal(ours[:, :4], theirs[:, :4])
    np.testing.assert_allclose(
        ours[:, 4:].contiguous().view(torch.float32).numpy(),
        theirs[:, 4:].contiguous().view(torch.float32).numpy(),
        rtol=1e-6,
    )


def test_time_call_takes_at_least_five_runs():
    with pytest.raises(ValueError, match="at least 5"):
        time_call(lambda: None, repeats=3)
    calls = []
    timing = time_call(lambda: calls.append(1), warmup=1, min_total_s=0)
    assert len(timing.samples) == 5 and len(calls) == 6


def test_baseline_time_returns_its_output():
    tables = [TableSpec("a", 10, 4)]
    stored = [np.ones((10, 4), np.float32)]
    timing, out = CpuBaseline(tables, stored).time(np.array([1, 2, 3]), np.array([0, 1, 3]), 2)
    assert len(timing.samples) >= 5
    assert out.tolist() == [[1.0] * 4, [2.0] * 4]


@pytest.mark.parametrize(
    "cpu, dpu, verdict",
    [
        ((2.0, 2.1, 2.2, 2.0, 2.0), 1.0, "DPUs win"),
        ((0.5, 0.5, 0.6, 0.55, 0.5), 1.0, "CPU wins"),
        ((0.9, 1.2, 1.3, 1.2, 1.1), 1.0, "within the spread: no verdict"),
    ],
)
def test_verdict_only_outside_the_spread(cpu, dpu, verdict):
    comparison = Comparison(Timing(cpu), dpu)
    assert comparison.verdict == verdict
    low, high = comparison.ratio_range
    assert low <= comparison.ratio <= high


def test_comparison_of_two_timings_uses_both_spreads():
    # best ratio 1.05 but the DPU median is 20% slower: no verdict.
    comparison = Comparison(Timing((1.05,) * 5), Timing((1.0, 1.2, 1.2, 1.2, 1.3)))
    assert comparison.verdict == "within the spread: no verdict"
    assert "no verdict" in str(comparison)


def test_int8_mean_divides_by_bag_size():
    """torch's quantized byte-rowwise bag sums whatever mode it is given; the baseline
    must still return a mean (empty bags give 0, as F.embedding_bag does)."""
    tables = [TableSpec("t", 3, 4, row_format="int8", scale=0.5)]
    stored = [np.array([[2] * 4, [4] * 4, [6] * 4], np.int8)]
    offsets = np.array([0, 3, 3, 4], np.int64)
    out = CpuBaseline(tables, stored)(np.array([0, 1, 2, 1], np.int64), offsets, 3, mode="mean")
    np.testing.assert_allclose(out, [[2.0] * 4, [0.0] * 4, [2.0] * 4])


def test_copy_floor_times_both_copies_and_keeps_torch_threads():
    before = torch.get_num_threads()
    floor = copy_floor(1 << 20, threads=2)
    assert torch.get_num_threads() == before
    assert set(floor.copies) == {"numpy copyto, 1 thread", "torch copy_, 2 threads"}
    assert floor.best_s == min(floor.copies.values()) > 0
    assert floor.copies[floor.how] == floor.best_s
    assert "1.0 MB in" in str(floor) and floor.how in str(floor)


def test_copy_floor_is_the_faster_copy():
    floor = CopyFloor(10, {"a": 3.0, "b": 1.0, "c": 2.0})
    assert (floor.best_s, floor.how) == (1.0, "b")


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"repeats": 4}])
def test_copy_floor_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="at least"):
        copy_floor(1024, **kwargs)
