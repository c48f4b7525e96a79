"""Reference results for the engine: torch for fp32 tables, exact integer sums otherwise.

Integer tables follow the engine's documented arithmetic (host/README.md): the sum of
``q`` (times the Q16 weight ``rint(w * 65536)`` when weighted) in int64, then
``float32(float64(sum) * factor / count)`` with ``factor = scale`` (``scale / 65536``
when weighted) and ``count`` the bag size for MEAN (1 for SUM or empty bags).
"""

from __future__ import annotations

import numpy as np
import torch

from updlrm.specs import PoolingMode, RowFormat


def q16(weights: np.ndarray) -> np.ndarray:
    return np.rint(weights.astype(np.float64) * 65536.0).astype(np.int64)


# fp32: any summation order of L terms errs by at most (L - 1) * u * sum |terms| (u = 2**-24;
# Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., section 4.2), products
# and the MEAN division add one rounding each. Engine and torch each err that much, so they
# may differ by twice the bound; 1e-5 covers bags of up to 81 lookups.
FP32_UNIT_ROUNDOFF = 2.0**-24
FP32_MIN_RTOL = 1e-5


def fp32_rtol(bag_lengths: np.ndarray) -> np.ndarray:
    """Admissible error of an fp32 bag, relative to the sum of |terms|, per bag length."""
    return np.maximum(FP32_MIN_RTOL, 2 * (np.asarray(bag_lengths, np.float64) + 2) * FP32_UNIT_ROUNDOFF)


def reference(tables, weights, indices, offsets, per_sample_weights, pooling):
    """(B, sum of dims) float32 output and, for fp32 columns, the admissible error per
    element (``fp32_rtol`` of the bag x the sum of |terms|; 0 for integer columns)."""
    nr_tables = len(tables)
    batch = (len(offsets) - 1) // nr_tables
    outs, magnitudes = [], []
    for t, spec in enumerate(tables):
        lo, hi = offsets[t * batch], offsets[(t + 1) * batch]
        idx = indices[lo:hi]
        bag_offsets = offsets[t * batch : (t + 1) * batch + 1] - lo
        counts = np.diff(bag_offsets)
        psw = None if per_sample_weights is None else per_sample_weights[lo:hi]
        bag_of = np.repeat(np.arange(batch), counts)
        if spec.row_format == RowFormat.FP32:
            w = torch.from_numpy(np.ascontiguousarray(weights[t]))
            sums = torch.nn.functional.embedding_bag(
                torch.from_numpy(idx),
                w,
                torch.from_numpy(bag_offsets[:-1].copy()),
                mode="sum",
                per_sample_weights=None if psw is None else torch.from_numpy(psw),
                include_last_offset=False,
            ).numpy()
            terms = np.abs(weights[t][idx].astype(np.float64))
            if psw is not None:
                terms *= np.abs(psw.astype(np.float64))[:, None]
            magnitude = np.zeros((batch, spec.embedding_dim))
            np.add.at(magnitude, bag_of, terms)
            magnitude *= fp32_rtol(counts)[:, None]
            if pooling == PoolingMode.MEAN:
                divisor = np.maximum(counts, 1).astype(np.float32)[:, None]
                sums = sums / divisor
                magnitude = magnitude / divisor
            outs.append(sums.astype(np.float32))
            magnitudes.append(magnitude)
        else:
            rows = weights[t][idx].astype(np.int64)
            factor = spec.scale
            if psw is not None:
                rows = rows * q16(psw)[:, None]
                factor = spec.scale / 65536.0
            sums = np.zeros((batch, spec.embedding_dim), dtype=np.int64)
            np.add.at(sums, bag_of, rows)
            divisor = np.maximum(counts, 1).astype(np.float64)[:, None] if pooling == PoolingMode.MEAN else 1.0
            outs.append((sums.astype(np.float64) * factor / divisor).astype(np.float32))
            magnitudes.append(np.zeros((batch, spec.embedding_dim)))
    return np.concatenate(outs, axis=1), np.concatenate(magnitudes, axis=1)


def assert_matches(tables, out, expected, tolerance):
    """fp32 columns within ``tolerance`` (from ``reference``: a reordered sum's error bound); integer columns exact."""
    start = 0
    for spec in tables:
        cols = slice(start, start + spec.embedding_dim)
        start += spec.embedding_dim
        if spec.row_format == RowFormat.FP32:
            error = np.abs(out[:, cols].astype(np.float64) - expected[:, cols])
            bound = tolerance[:, cols] + 1e-30
            worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
            assert np.all(error <= bound), f"table {spec.name}: error {error[worst]} > {bound[worst]} at {worst}"
        else:
            assert np.array_equal(out[:, cols], expected[:, cols]), f"table {spec.name}: integer result differs"


def random_weights(tables, rng):
    out = []
    for spec in tables:
        shape = (spec.num_embeddings, spec.embedding_dim)
        if spec.row_format == RowFormat.FP32:
            out.append(rng.standard_normal(shape, dtype=np.float32))
        elif spec.row_format == RowFormat.INT32:
            out.append(rng.integers(-(1 << 24), 1 << 24, shape, dtype=np.int32))
        else:
            out.append(rng.integers(-128, 128, shape, dtype=np.int8))
    return out


def random_batch(tables, batch, max_pooling, rng, *, weighted=False, zipf=None):
    """TBE-layout batch: per (table, bag) a pooling in [0, max_pooling]."""
    indices, offsets = [], [0]
    for spec in tables:
        for _ in range(batch):
            n = int(rng.integers(0, max_pooling + 1))
            if zipf:
                rows = (rng.zipf(zipf, n) - 1) % spec.num_embeddings
            else:
                rows = rng.integers(0, spec.num_embeddings, n)
            indices.append(rows)
            offsets.append(offsets[-1] + n)
    indices = np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
    offsets = np.array(offsets, dtype=np.int64)
    weights = rng.uniform(-2, 2, indices.size).astype(np.float32) if weighted else None
    return indices, offsets, weights
