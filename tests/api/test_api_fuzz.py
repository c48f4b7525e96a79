"""Differential fuzzing of ``TableBatchedEmbeddingBags`` on the emulator.

Random tables of every row format (odd and wider-than-the-row-buffer dims), given as
stored integers or as floats quantised with ``quantization="fit"`` or ``"table"``; the
default plan or a random one (every layout, replicas, host cache, partitioner plans);
random batches (empty, huge and duplicate-heavy bags) as numpy or torch, int32 or int64,
with or without the last offset; SUM/MEAN; per-sample weights up to the edge of the exact
range; every bounds-check mode with out-of-range indices. The expected output is computed
independently: out-of-range lookups removed bag by bag, then ``engine_reference.reference``
(torch's ``embedding_bag`` for fp32 tables within the documented bound, the exact integer
sum of the quantised rows otherwise).

CI runs a small fixed number of examples (derandomized under ``CI=true``); a long run::

    UPDLRM_FUZZ_EXAMPLES=5000 python -m pytest -q tests/host/test_engine_fuzz.py tests/api/test_api_fuzz.py
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz_strategies import (
    FORMATS,
    MAX_FLOAT32_Q16_WEIGHT,
    assert_matches,
    batches,
    fp32_rtol,
    fuzz_settings,
    per_sample_weights,
    plans,
    reference,
    table_of_lookup,
    table_rows,
    table_specs,
    topologies,
)
from hypothesis import event, given
from hypothesis import strategies as st

from updlrm import BoundsCheckMode, EmbeddingBag, PoolingMode, RowFormat, TableBatchedEmbeddingBags, TableSpec
from updlrm.host.engine import EngineError
from updlrm.quantize import FIT_QMAX, FORMAT_QMAX
from updlrm.tbe import IndexOutOfRangeError, InvalidInputError


def given_weights(spec: TableSpec, stored: np.ndarray, kind: str, rng: np.random.Generator):
    """What the user passes for one table, and the quantised rows the module must hold
    (before the fitted scale is known, None for "fit": see ``fitted_rows``)."""
    if spec.row_format == RowFormat.FP32 or kind == "stored":
        return stored, stored
    qmax = FORMAT_QMAX[spec.row_format]
    q = np.clip(stored.astype(np.int64), -qmax, qmax)
    if kind == "table":  # exact multiples of the table's scale
        return q * spec.scale, q.astype(stored.dtype)
    return q * float(rng.choice([1e-3, 0.7, 3.0])), None  # "fit": any float values


def fitted_rows(spec_given: TableSpec, values: np.ndarray, spec_module: TableSpec) -> np.ndarray:
    """The documented "fit" rule: max |w| maps to FIT_QMAX, q = rint(w / scale)."""
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = peak / FIT_QMAX[spec_given.row_format] if peak > 0 else 1.0
    assert spec_module.scale == scale, (spec_module.scale, scale)
    dtype = np.int32 if spec_given.row_format == RowFormat.INT32 else np.int8
    return np.rint(values / scale).astype(dtype)


def in_range_batch(tables, indices, offsets, psw):
    """The batch without out-of-range lookups, computed bag by bag (independently of the API)."""
    T = len(tables)
    B = (len(offsets) - 1) // T
    keep_idx, keep_w, new_offsets = [], [], [0]
    for bag in range(T * B):
        spec = tables[bag // B]
        lo, hi = int(offsets[bag]), int(offsets[bag + 1])
        ok = (indices[lo:hi] >= 0) & (indices[lo:hi] < spec.num_embeddings)
        keep_idx.append(indices[lo:hi][ok])
        if psw is not None:
            keep_w.append(psw[lo:hi][ok])
        new_offsets.append(new_offsets[-1] + int(ok.sum()))
    idx = np.concatenate(keep_idx).astype(np.int64) if keep_idx else np.zeros(0, np.int64)
    w = None if psw is None else (np.concatenate(keep_w).astype(np.float32) if keep_w else np.zeros(0, np.float32))
    return idx, np.array(new_offsets, np.int64), w


def as_input(indices, offsets, psw, kind: str, index_dtype, include_last: bool):
    off = offsets if include_last else offsets[:-1]
    idx = indices.astype(index_dtype)
    off = off.astype(index_dtype)
    if kind == "torch":
        return torch.from_numpy(idx), torch.from_numpy(off), None if psw is None else torch.from_numpy(psw)
    return idx, off, psw


@fuzz_settings(ci_examples=50)
@given(data=st.data())
def test_tbe_matches_the_reference(data):
    specs = data.draw(table_specs(16), label="tables")
    stored = data.draw(table_rows(specs), label="rows")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    kind = data.draw(st.sampled_from(["stored", "table", "fit"]), label="weights given as")
    user = [given_weights(s, w, kind, rng) for s, w in zip(specs, stored)]
    pooling = data.draw(st.sampled_from([PoolingMode.SUM, PoolingMode.MEAN]), label="pooling")
    bounds = data.draw(st.sampled_from(list(BoundsCheckMode)), label="bounds_check_mode")
    topology = data.draw(topologies(), label="topology")
    plan = data.draw(st.one_of(st.none(), plans(specs, topology)), label="plan")
    with tempfile.TemporaryDirectory() as folder:
        if plan is not None and data.draw(st.booleans(), label="plan as a path"):
            plan = str(plan.save(Path(folder) / "plan.json"))
        tbe = TableBatchedEmbeddingBags(
            specs,
            plan=plan,
            backend="emulator",
            nr_dpus=None if plan is not None else topology.nr_dpus,
            pooling_mode=pooling,
            bounds_check_mode=bounds,
            weights=[u[0] for u in user],
            quantization="fit" if kind == "fit" else "table",
        )
    with tbe:
        rows = [q if q is not None else fitted_rows(s, values, m) for s, (values, q), m in zip(specs, user, tbe.tables)]
        for t, spec in enumerate(tbe.tables):
            assert np.array_equal(
                tbe.weights(t),
                (rows[t].astype(np.float64) * spec.scale).astype(np.float32)
                if spec.row_format != RowFormat.FP32
                else rows[t],
            )
        for _ in range(data.draw(st.integers(1, 4), label="batches")):
            run_one_batch(data, tbe, rows)


def run_one_batch(data, tbe, rows):
    tables = tbe.tables
    indices, offsets = data.draw(batches(tbe.plan), label="batch")
    psw = None
    if tbe.pooling_mode == PoolingMode.SUM:
        psw = data.draw(per_sample_weights(tables, rows, offsets), label="per_sample_weights")
    kind = data.draw(st.sampled_from(["numpy", "torch"]), label="input kind")
    index_dtype = data.draw(st.sampled_from([np.int64, np.int32]), label="index dtype")
    include_last = data.draw(st.booleans(), label="include_last_offset")
    nr_bad = 0
    if indices.size and data.draw(st.integers(0, 3), label="out of range") == 0:
        info = np.iinfo(index_dtype)
        owner = table_of_lookup(len(tables), offsets)
        indices = indices.copy()
        for p in data.draw(
            st.lists(st.integers(0, indices.size - 1), min_size=1, max_size=4, unique=True), label="bad positions"
        ):
            n = tables[int(owner[p])].num_embeddings
            indices[p] = data.draw(
                st.sampled_from([-1, n, n + 1, int(info.min), int(info.max)]).filter(lambda v, n=n: not 0 <= v < n),
                label="bad value",
            )
        nr_bad = int(((indices < 0) | (indices >= np.array([t.num_embeddings for t in tables])[owner])).sum())
    args = as_input(indices, offsets, psw, kind, index_dtype, include_last)
    event(f"bounds {tbe.bounds_check_mode.name}, bad lookups: {bool(nr_bad)}")

    if nr_bad and tbe.bounds_check_mode == BoundsCheckMode.FATAL:
        with pytest.raises(IndexOutOfRangeError, match=f"{nr_bad} of {indices.size} indices are out of range"):
            tbe(*args, include_last_offset=include_last)
        return
    if nr_bad and tbe.bounds_check_mode == BoundsCheckMode.NONE:
        with pytest.raises(EngineError, match="is outside"):  # not looked at by the API; the engine refuses
            tbe(*args, include_last_offset=include_last)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = tbe(*args, include_last_offset=include_last)
    warned = [w for w in caught if issubclass(w.category, RuntimeWarning) and "out-of-range" in str(w.message)]
    assert len(warned) == (1 if nr_bad and tbe.bounds_check_mode == BoundsCheckMode.WARNING else 0), [
        str(w.message) for w in caught
    ]

    assert isinstance(out, torch.Tensor if kind == "torch" else np.ndarray)
    out = out.numpy() if kind == "torch" else out
    idx, off, w = in_range_batch(tables, indices, offsets, psw)
    expected, tolerance = reference(tables, rows, idx, off, w, tbe.pooling_mode)
    assert out.dtype == np.float32 and out.shape == expected.shape
    assert_matches(tables, out, expected, tolerance)
    if expected.shape[0]:
        assert tbe.last_stats.extra["dropped_lookups"] == nr_bad


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != RowFormat.FP32])
def test_weights_outside_the_q16_range_fail_validation(fmt):
    """Just beyond the largest and smallest Q16 weights (|w| >= 32768 after rounding):
    a validation error naming the weight, and the module keeps working."""
    spec = TableSpec("q", 5, 3, row_format=fmt, scale=0.25)
    q = np.arange(-7, 8).reshape(5, 3).astype(np.int32 if fmt == RowFormat.INT32 else np.int8)
    with TableBatchedEmbeddingBags([spec], backend="emulator", nr_dpus=1, weights=[q], quantization="table") as tbe:
        for bad in (32768.0, -32768.0078125):
            w = np.array([1.0, bad], np.float32)
            with pytest.raises(InvalidInputError, match=r"per_sample_weights\[1\]"):
                tbe(np.array([0, 1]), np.array([0, 2]), w)
        edge = np.array([MAX_FLOAT32_Q16_WEIGHT, -32768.0], np.float32)
        out = tbe(np.array([1, 1]), np.array([0, 2]), edge)
        q16_sum = int(np.rint(float(edge[0]) * 65536)) - (1 << 31)  # (2**31 - 128) + (-2**31)
        expected = q[1].astype(np.float64) * q16_sum * 0.25 / 65536
        np.testing.assert_array_equal(out[0], expected.astype(np.float32))


@fuzz_settings(ci_examples=25)
@given(data=st.data())
def test_embedding_bag_matches_torch_nn_embedding_bag(data):
    """``EmbeddingBag`` against ``torch.nn.EmbeddingBag`` with the same weights: 1-D input
    with offsets (with or without the last one) or 2-D input, padding_idx, sum/mean,
    per-sample weights with sum."""
    num = data.draw(st.one_of(st.just(1), st.integers(1, 200)), label="num_embeddings")
    dim = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([255, 256, 257])), label="embedding_dim")
    mode = data.draw(st.sampled_from(["sum", "mean"]), label="mode")
    padding_idx = data.draw(st.one_of(st.none(), st.integers(-num, num - 1)), label="padding_idx")
    include_last = data.draw(st.booleans(), label="include_last_offset")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    weight = torch.from_numpy(rng.standard_normal((num, dim)).astype(np.float32))
    options = dict(mode=mode, padding_idx=padding_idx, include_last_offset=include_last)
    ours = EmbeddingBag.from_pretrained(
        weight, backend="emulator", nr_dpus=data.draw(st.integers(1, 5), label="nr_dpus"), **options
    )
    theirs = torch.nn.EmbeddingBag.from_pretrained(weight, **options)
    magnitude = torch.nn.EmbeddingBag.from_pretrained(weight.abs(), **options)
    with ours:
        for _ in range(data.draw(st.integers(1, 3), label="batches")):
            bags = data.draw(st.integers(1, 12), label="bags")
            hot = data.draw(st.sampled_from(["uniform", "padding", "one_row"]), label="rows")
            if data.draw(st.booleans(), label="2-D"):
                length = data.draw(st.integers(1, 40), label="length")
                lengths = np.full(bags, length)
            else:
                lengths = rng.integers(0, 30, bags)
                lengths[rng.random(bags) < 0.1] = int(rng.integers(100, 600))
            total = int(lengths.sum())
            pad = padding_idx % num if padding_idx is not None else 0
            values = {
                "uniform": rng.integers(0, num, total),
                "padding": rng.choice([pad, int(rng.integers(0, num))], total),
                "one_row": np.full(total, int(rng.integers(0, num))),
            }[hot]
            values = torch.from_numpy(values.astype(np.int64))
            psw = None
            if mode == "sum" and data.draw(st.booleans(), label="weighted"):
                psw = torch.from_numpy(rng.uniform(-3, 3, total).astype(np.float32))
            # torch cannot take a 2-D input of empty bags (shape (B, 0): "step must be nonzero")
            if len(set(lengths.tolist())) == 1 and lengths[0] > 0 and data.draw(st.booleans(), label="use 2-D"):
                args = (values.reshape(bags, -1), None, None if psw is None else psw.reshape(bags, -1))
            else:
                offsets = torch.from_numpy(
                    np.concatenate(([0], np.cumsum(lengths)))[: bags + include_last].astype(np.int64)
                )
                args = (values, offsets, psw)
            out = ours(*args)
            expected = theirs(*args)
            bound = magnitude(args[0], args[1], None if psw is None else args[2].abs())
            kept = (
                lengths
                if padding_idx is None
                else np.array(
                    [int((values[s : s + n] != pad).sum()) for s, n in zip(np.cumsum(lengths) - lengths, lengths)]
                )
            )
            tolerance = torch.from_numpy(fp32_rtol(kept).astype(np.float32))[:, None] * bound + 1e-30
            assert isinstance(out, torch.Tensor) and out.shape == expected.shape == (bags, dim)
            assert torch.all((out - expected).abs() <= tolerance), (out - expected).abs().max()
