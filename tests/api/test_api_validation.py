"""Every validation error of the TBE front-end, bounds-check modes, and recovery after errors."""

import warnings

import numpy as np
import pytest
import torch

from updlrm import BoundsCheckMode, PoolingMode, TableBatchedEmbeddingBags, TableSpec
from updlrm.tbe import IndexOutOfRangeError, InputTypeError, InvalidInputError, validate_tbe_inputs

TABLES = [TableSpec("user", 10, 4), TableSpec("item", 5, 2)]


def good_batch():
    # T=2, B=2: user bags [1,2] [3]; item bags [] [4,0]
    return np.array([1, 2, 3, 4, 0]), np.array([0, 2, 3, 3, 5])


def test_good_batch_is_converted_without_changes():
    idx, off = good_batch()
    b = validate_tbe_inputs(TABLES, idx.astype(np.int32), off.astype(np.int32))
    assert b.batch_size == 2 and b.dropped == 0
    assert b.indices.dtype == np.int64 and b.offsets.dtype == np.int64
    np.testing.assert_array_equal(b.indices, idx)
    np.testing.assert_array_equal(b.offsets, off)
    assert b.per_sample_weights is None


def test_torch_inputs_are_accepted_and_not_modified():
    idx, off = good_batch()
    ti, to = torch.from_numpy(idx.copy()), torch.from_numpy(off.copy())
    b = validate_tbe_inputs(TABLES, ti, to, torch.ones(5, dtype=torch.float64))
    assert b.per_sample_weights.dtype == np.float32
    assert torch.equal(ti, torch.from_numpy(idx)) and torch.equal(to, torch.from_numpy(off))


@pytest.mark.parametrize(
    "indices, offsets, weights, pooling, match",
    [
        (
            np.array([1.0, 2.0]),
            np.array([0, 1, 1, 2, 2]),
            None,
            PoolingMode.SUM,
            r"indices must have dtype int32 or int64, got float64",
        ),
        (
            np.array([True, False]),
            np.array([0, 1, 1, 2, 2]),
            None,
            PoolingMode.SUM,
            r"indices must have dtype int32 or int64, got bool",
        ),
        (np.array([1, 2], np.int16), np.array([0, 1, 1, 2, 2]), None, PoolingMode.SUM, r"got int16"),
        (
            np.array([[1, 2]]),
            np.array([0, 1, 1, 2, 2]),
            None,
            PoolingMode.SUM,
            r"indices must be one-dimensional, got shape \(1, 2\)",
        ),
        (
            np.array([1, 2]),
            np.array([0.0, 1, 1, 2, 2]),
            None,
            PoolingMode.SUM,
            r"offsets must have dtype int32 or int64, got float64",
        ),
        ([1, 2], "0,1", None, PoolingMode.SUM, r"offsets must be a numpy array or torch tensor, got str"),
        (
            np.array([1, 2]),
            np.array([0, 1, 1, 2, 2]),
            np.array([1, 1]),
            PoolingMode.SUM,
            r"per_sample_weights must be a floating-point array \(float32\), got int64",
        ),
        (
            np.array([1, 2]),
            np.array([0, 1, 1, 2, 2]),
            np.ones(3, np.float32),
            PoolingMode.SUM,
            r"per_sample_weights must have shape \(2,\), one weight per index, got \(3,\)",
        ),
        (
            np.array([1, 2]),
            np.array([0, 1, 1, 2, 2]),
            np.ones((2, 1), np.float32),
            PoolingMode.SUM,
            r"must have shape \(2,\)",
        ),
        (
            np.array([1, 2]),
            np.array([0, 1, 1, 2, 2]),
            np.array([1.0, np.nan], np.float32),
            PoolingMode.SUM,
            r"per_sample_weights\[1\] = nan is not finite",
        ),
        (
            np.array([1, 2]),
            np.array([0, 1, 1, 2, 2]),
            np.ones(2, np.float32),
            PoolingMode.MEAN,
            r"only supported with PoolingMode.SUM",
        ),
    ],
)
def test_type_and_shape_errors(indices, offsets, weights, pooling, match):
    with pytest.raises((InputTypeError, InvalidInputError), match=match):
        validate_tbe_inputs(TABLES, indices, offsets, weights, pooling_mode=pooling)


def test_dtype_errors_are_type_errors():
    with pytest.raises(TypeError):
        validate_tbe_inputs(TABLES, np.array([1.5]), np.array([0, 1, 1]))


@pytest.mark.parametrize(
    "indices, offsets, match",
    [
        (np.array([1, 2]), np.array([], np.int64), r"offsets is empty"),
        (np.array([1, 2]), np.array([0, 1, 2, 2]), r"offsets has 4 entries, but with T=2 tables it must have T\*B\+1"),
        (np.array([1, 2]), np.array([1, 1, 1, 2, 2]), r"offsets\[0\] must be 0 .* got 1"),
        (
            np.array([1, 2, 3]),
            np.array([0, 2, 1, 3, 3]),
            r"non-decreasing, but offsets\[2\] = 1 < offsets\[1\] = 2 \(bag 1 of table 'user'",
        ),
        (np.array([1, 2]), np.array([0, 1, 1, 2, 1]), r"non-decreasing.*bag 3 of table 'item'"),
        (np.array([1, 2, 3]), np.array([0, 1, 1, 2, 2]), r"offsets\[-1\] = 2 must equal len\(indices\) = 3"),
        (np.array([1]), np.array([0, 1, 1, 2, 2]), r"offsets\[-1\] = 2 must equal len\(indices\) = 1"),
    ],
)
def test_offset_errors(indices, offsets, match):
    with pytest.raises(InvalidInputError, match=match):
        validate_tbe_inputs(TABLES, indices, offsets)


@pytest.mark.parametrize(
    "indices, match",
    [
        (
            np.array([1, 2, 10, 4, 0]),
            r"table 'user' \(t=0\), sample 1: indices\[2\] = 10 is out of range \[0, 10\); 1 of 5",
        ),
        (np.array([1, 2, 3, 4, 5]), r"table 'item' \(t=1\), sample 1: indices\[4\] = 5 is out of range \[0, 5\)"),
        (np.array([-1, 2, 3, 4, 0]), r"table 'user' \(t=0\), sample 0: indices\[0\] = -1 is out of range"),
        (np.array([-1, 99, 3, 7, 9]), r"indices\[0\] = -1 .* 4 of 5 indices are out of range"),
    ],
)
def test_fatal_bounds_errors_name_table_sample_position_value(indices, match):
    _, off = good_batch()
    with pytest.raises(IndexOutOfRangeError, match=match) as info:
        validate_tbe_inputs(TABLES, indices, off)
    assert isinstance(info.value, IndexError)


def test_warning_mode_warns_and_drops_bad_lookups():
    idx, off = np.array([1, 12, 3, 4, -2]), np.array([0, 2, 3, 3, 5])
    with pytest.warns(RuntimeWarning, match=r"dropping 2 out-of-range lookups"):
        b = validate_tbe_inputs(
            TABLES, idx, off, np.arange(5, dtype=np.float32), bounds_check_mode=BoundsCheckMode.WARNING
        )
    np.testing.assert_array_equal(b.indices, [1, 3, 4])
    np.testing.assert_array_equal(b.offsets, [0, 1, 2, 2, 3])
    np.testing.assert_array_equal(b.per_sample_weights, [0, 2, 3])
    assert b.dropped == 2


def test_ignore_mode_drops_silently_and_none_mode_does_not_look():
    idx, off = np.array([1, 12, 3, 4, -2]), np.array([0, 2, 3, 3, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = validate_tbe_inputs(TABLES, idx, off, bounds_check_mode=BoundsCheckMode.IGNORE)
        np.testing.assert_array_equal(b.indices, [1, 3, 4])
        b = validate_tbe_inputs(TABLES, idx, off, bounds_check_mode=BoundsCheckMode.NONE)
        np.testing.assert_array_equal(b.indices, idx)


def test_include_last_offset_false_appends_len_indices():
    idx, off = good_batch()
    b = validate_tbe_inputs(TABLES, idx, off[:-1], include_last_offset=False)
    np.testing.assert_array_equal(b.offsets, off)
    with pytest.raises(InvalidInputError, match=r"offsets has 4 entries"):
        validate_tbe_inputs(TABLES, idx, off[:-2], include_last_offset=False)


def test_empty_batch_and_empty_bags():
    b = validate_tbe_inputs(TABLES, np.array([], np.int64), np.array([0]))
    assert b.batch_size == 0
    b = validate_tbe_inputs(TABLES, np.array([], np.int32), np.zeros(7, np.int64))
    assert b.batch_size == 3 and b.indices.size == 0


def test_unknown_pooling_mode():
    with pytest.raises(ValueError, match="supported: 'sum', 'mean'"):
        validate_tbe_inputs(TABLES, np.array([1]), np.array([0, 1, 1]), pooling_mode="max")
    with pytest.raises(NotImplementedError, match="SUM or MEAN"):
        validate_tbe_inputs(TABLES, np.array([1]), np.array([0, 1, 1]), pooling_mode=PoolingMode.NONE)


def test_validation_is_vectorised_on_large_batches():
    # 2M lookups over 26 tables must validate in well under a second (no per-lookup Python).
    import time

    tables = [TableSpec(f"t{i}", 1000, 4) for i in range(26)]
    B = 4096
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=26 * B)
    off = np.concatenate(([0], np.cumsum(lengths)))
    idx = rng.integers(0, 1000, size=off[-1])
    start = time.perf_counter()
    b = validate_tbe_inputs(tables, idx, off)
    elapsed = time.perf_counter() - start
    assert b.indices.size == idx.size
    assert elapsed < 2.0, f"validation of {idx.size} lookups took {elapsed:.2f}s"


def test_errors_happen_before_the_engine_and_the_next_batch_works(engine_kind, reference_engine_calls):
    tbe = TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=2)
    idx, off = good_batch()
    bad_inputs = [
        (np.array([1, 2, 3, 4, 99]), off, None),
        (idx, off[::-1].copy(), None),
        (idx.astype(np.float32), off, None),
        (idx, off, np.ones(4, np.float32)),
        (idx, off[:-1], None),
    ]
    for bad in bad_inputs:
        with pytest.raises(InvalidInputError):
            tbe(*bad)
    assert reference_engine_calls() in (None, 0)
    out = tbe(idx, off)
    assert reference_engine_calls() in (None, 1)
    expected = np.concatenate([tbe.weights(0)[[1, 2]].sum(0), tbe.weights(1)[[]].sum(0)])
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    expected = np.concatenate([tbe.weights(0)[3], tbe.weights(1)[[4, 0]].sum(0)])
    np.testing.assert_allclose(out[1], expected, rtol=1e-6)
    tbe.close()


def test_dropped_lookups_contribute_nothing_on_the_engine(engine_kind):
    with TableBatchedEmbeddingBags(
        TABLES, backend="emulator", nr_dpus=2, pooling_mode="mean", bounds_check_mode=BoundsCheckMode.IGNORE
    ) as tbe:
        out = tbe(np.array([1, 12, 3, 4, -2]), np.array([0, 2, 3, 3, 5]))
        w0, w1 = tbe.weights(0), tbe.weights(1)
        expected = np.array([np.concatenate([w0[1], np.zeros(2)]), np.concatenate([w0[3], w1[4]])], np.float32)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
        assert tbe.last_stats.extra["dropped_lookups"] == 2


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_bounds_at_the_edges_of_the_index_types(dtype):
    info = np.iinfo(dtype)
    huge = [TableSpec("huge", 3_000_000_000, 1)]
    b = validate_tbe_inputs(
        huge, np.array([info.max if dtype == np.int32 else 2_999_999_999, 0], dtype), np.array([0, 2])
    )
    assert b.indices.dtype == np.int64 and b.indices[0] > 0
    for value in (info.min, -1):
        with pytest.raises(IndexOutOfRangeError, match=f"indices\\[1\\] = {value} is out of range"):
            validate_tbe_inputs(huge, np.array([0, value], dtype), np.array([0, 2]))
    small = [TableSpec("small", 7, 1), TableSpec("other", 3, 1)]
    idx = np.array([6, 0, 3, info.max], dtype)  # 3 is fine for 'small' but not for 'other'
    with pytest.raises(IndexOutOfRangeError, match=r"table 'other' \(t=1\), sample 0: indices\[2\] = 3 .* 2 of 4"):
        validate_tbe_inputs(small, idx, np.array([0, 2, 4]))
