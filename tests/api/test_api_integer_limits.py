"""Integer tables through the modules: Q16 weight validation and exact-or-refused sums.

Weights of integer tables' lookups must fit Q16 (-32768 <= w < 32768): checked by
``validate_tbe_inputs`` before the engine is called. A bag whose integer sum could leave
int64 is refused by the engine (``AccumulatorOverflowError``), never wrapped.
"""

import numpy as np
import pytest
import torch

from updlrm import RowFormat, TableBatchedEmbeddingBags, TableSpec
from updlrm.host.engine import AccumulatorOverflowError
from updlrm.tbe import InvalidInputError, validate_tbe_inputs

TABLES = [
    TableSpec("f", 10, 2),
    TableSpec("i8", 10, 2, row_format=RowFormat.INT8),
    TableSpec("i32", 10, 2, row_format=RowFormat.INT32),
]


def one_lookup_per_table(weights):
    return np.array([1, 2, 3]), np.array([0, 1, 2, 3]), np.array(weights, np.float32)


@pytest.mark.parametrize(
    "weights, match",
    [
        (
            [0.0, 32768.0, 0.0],
            r"table 'i8' \(t=1\), sample 0: per_sample_weights\[1\] = 32768.0 is outside the Q16 range of int8 tables \(-32768 <= w < 32768\)",
        ),
        (
            [0.0, 0.0, -32768.01],
            r"table 'i32' \(t=2\), sample 0: per_sample_weights\[2\] = -32768.01\d* is outside the Q16 range of int32",
        ),
        ([0.0, 0.0, 1e30], r"table 'i32' .*per_sample_weights\[2\] = 1e\+30 is outside the Q16 range"),
    ],
)
def test_weights_outside_q16_fail_validation_naming_table_and_position(weights, match):
    with pytest.raises(InvalidInputError, match=match):
        validate_tbe_inputs(TABLES, *one_lookup_per_table(weights))


def test_q16_edges_and_fp32_tables_are_accepted():
    # -32768 is Q16's most negative value, 32767.99609375 (float32) is below 32768; fp32 rows take any finite weight.
    b = validate_tbe_inputs(TABLES, *one_lookup_per_table([1e30, -32768.0, 32767.99609375]))
    assert np.array_equal(b.per_sample_weights, np.array([1e30, -32768.0, 32767.99609375], np.float32))


def test_q16_error_reaches_no_engine_and_the_module_keeps_working(engine_kind, reference_engine_calls):
    with TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=3, nr_tasklets=4) as tbe:
        with pytest.raises(InvalidInputError, match="outside the Q16 range"):
            tbe(*one_lookup_per_table([0.0, 0.0, 40000.0]))
        assert reference_engine_calls() in (None, 0)
        out = tbe(*one_lookup_per_table([2.0, 2.0, 2.0]))
        expected = np.concatenate([2 * tbe.weights(t)[t + 1] for t in range(3)])
        np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def fit_module(**kwargs):
    """int32 table, quantization='fit': row 1 is the max-magnitude row (q = 2^24, value 1.0)."""
    w = np.zeros((4, 2), np.float32)
    w[1] = 1.0
    return TableBatchedEmbeddingBags(
        [TableSpec("c", 4, 2, row_format=RowFormat.INT32)],
        weights=[w],
        backend="emulator",
        nr_dpus=2,
        nr_tasklets=4,
        **kwargs,
    )


@pytest.mark.parametrize("weight, bag, fits", [(32767.0, 300, 256), (100.0, 90_000, 83_886)])
def test_issue_overflows_are_refused_and_the_largest_exact_bag_is_exact(weight, bag, fits):
    """Formerly -6,947,116 for 32767 x 300 (9,830,100 expected): now an error; 256 lookups give 8,388,352 exactly."""
    with fit_module() as tbe:
        with pytest.raises(
            AccumulatorOverflowError,
            match=r"table 'c' \(t=0\), sample 0: its int32 sum could exceed int64, so it would not be exact",
        ):
            tbe(torch.ones(bag, dtype=torch.int64), torch.tensor([0, bag]), torch.full((bag,), weight))
        out = tbe(torch.ones(fits, dtype=torch.int64), torch.tensor([0, fits]), torch.full((fits,), weight))
        assert out[0, 0].item() == weight * fits
        with pytest.raises(AccumulatorOverflowError):
            tbe(torch.ones(fits + 1, dtype=torch.int64), torch.tensor([0, fits + 1]), torch.full((fits + 1,), weight))
        assert tbe(torch.tensor([1, 1]), torch.tensor([0, 2])).tolist() == [[2.0, 2.0]]


def test_table_quantization_at_the_int32_limit():
    """Rows at 2^31-1 with quantization='table': 2 lookups at weight 32767 fit, 3 are refused; unweighted is exact."""
    q = np.zeros((4, 2), np.int32)
    q[1] = (1 << 31) - 1
    q[2] = -(1 << 31)
    spec = TableSpec("t", 4, 2, row_format=RowFormat.INT32, scale=1.0)
    with TableBatchedEmbeddingBags(
        [spec], weights=[q], quantization="table", backend="emulator", nr_dpus=2, nr_tasklets=4
    ) as tbe:
        out = tbe(np.array([1, 1]), np.array([0, 2]), np.full(2, 32767.0, np.float32))
        assert out[0, 0] == np.float32(float(2 * ((1 << 31) - 1) * 32767 * 65536) / 65536)
        with pytest.raises(
            AccumulatorOverflowError,
            match="max \\|row\\| 2147483648 x 65536 x sum of \\|weights\\| 98301 \\(3 lookups\\)",
        ):
            tbe(np.array([1, 1, 2]), np.array([0, 3]), np.full(3, 32767.0, np.float32))
        n = 100_000
        out = tbe(np.full(n, 2), np.array([0, n]))
        assert out[0, 0] == np.float32(-(1 << 31) * n)
