"""NaN and infinite table values, per row format: fp32 behaves as torch; integer formats refuse them."""

import numpy as np
import pytest
import torch

from updlrm import PoolingMode, TableBatchedEmbeddingBags, TableSpec
from updlrm.tbe import InvalidInputError


def _weights():
    w = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    w[2, 1], w[3, 0], w[4, 0] = np.nan, np.inf, -np.inf
    return w


@pytest.mark.parametrize("mode", [PoolingMode.SUM, PoolingMode.MEAN])
def test_fp32_tables_propagate_nan_and_inf_like_torch(mode):
    w = _weights()
    # bags: NaN row, +inf row, -inf row, +inf and -inf together (NaN), an empty bag, finite rows
    idx = np.array([2, 1, 3, 4, 3, 4, 5, 6])
    off = np.array([0, 2, 3, 4, 6, 6, 8])
    with TableBatchedEmbeddingBags(
        [TableSpec("a", 10, 4)], weights=[w], pooling_mode=mode, backend="emulator", nr_dpus=2
    ) as tbe:
        out = tbe(idx, off)
    ref = torch.nn.functional.embedding_bag(
        torch.from_numpy(idx),
        torch.from_numpy(w),
        torch.from_numpy(off),
        mode="sum" if mode == PoolingMode.SUM else "mean",
        include_last_offset=True,
    ).numpy()
    assert np.isnan(out[3, 0]) and np.isinf(out[1, 0])
    np.testing.assert_allclose(out, ref, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("row_format", ["int8", "int32"])
@pytest.mark.parametrize("quantization", ["fit", "table"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_integer_tables_refuse_nan_and_inf(row_format, quantization, bad):
    w = np.zeros((10, 4), np.float32)
    w[7, 3] = bad
    with pytest.raises(
        InvalidInputError, match=f"table 'a': weights contain NaN or inf, which {row_format} cannot store"
    ):
        TableBatchedEmbeddingBags(
            [TableSpec("a", 10, 4, row_format=row_format)],
            weights=[w],
            backend="emulator",
            nr_dpus=2,
            quantization=quantization,
        )
