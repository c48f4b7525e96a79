"""Test oracle: the Engine contract computed with torch, and torch references for the API.

``ReferenceEngine`` has the same constructor and ``run`` signature as
``updlrm.host.engine.Engine``; it lets the API's own logic (validation, conversions,
quantisation, padding) be tested independently of the DPU path, and its outputs are what
the real engine is compared with. It is a test double, never a backend.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import torch

from updlrm.specs import PoolingMode, RowFormat


def dequantized(weights: np.ndarray, spec) -> torch.Tensor:
    if spec.row_format == RowFormat.FP32:
        return torch.from_numpy(np.asarray(weights, dtype=np.float32))
    return torch.from_numpy((weights.astype(np.float64) * spec.scale).astype(np.float32))


def tbe_reference(
    tables_f32: list[torch.Tensor], indices, offsets, per_sample_weights, pooling: PoolingMode
) -> np.ndarray:
    """(B, sum dims) with torch.nn.functional.embedding_bag, table by table (TBE layout)."""
    indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    offsets = torch.as_tensor(np.asarray(offsets, dtype=np.int64))
    psw = None if per_sample_weights is None else torch.as_tensor(np.asarray(per_sample_weights, dtype=np.float32))
    T = len(tables_f32)
    B = (offsets.numel() - 1) // T
    mode = "sum" if PoolingMode(pooling) == PoolingMode.SUM else "mean"
    outs = []
    for t, w in enumerate(tables_f32):
        lo, hi = int(offsets[t * B]), int(offsets[(t + 1) * B])
        bag_offsets = offsets[t * B : (t + 1) * B + 1] - lo
        out = torch.nn.functional.embedding_bag(
            indices[lo:hi],
            w,
            bag_offsets,
            mode=mode,
            per_sample_weights=None if psw is None else psw[lo:hi],
            include_last_offset=True,
        )
        outs.append(out)
    return torch.cat(outs, dim=1).numpy() if outs else np.zeros((B, 0), np.float32)


def engine_weights(tables, off, psw):
    """The per-sample weights the engine applies: Q16 (``rint(w * 65536) / 65536``) on
    lookups of integer tables (engine contract, dpu_kernels/README.md), as given otherwise."""
    if psw is None:
        return None
    T = len(tables)
    B = (len(off) - 1) // T
    table_of_lookup = np.repeat(np.arange(T * B) // B, np.diff(off))
    integer_table = np.array([s.row_format != RowFormat.FP32 for s in tables])
    quantised = (np.rint(psw.astype(np.float64) * 65536.0) / 65536.0).astype(np.float32)
    return np.where(integer_table[table_of_lookup], quantised, psw)


class ReferenceEngine:
    """The Engine contract on the host with torch (see module docstring)."""

    instances: ClassVar[list[ReferenceEngine]] = []

    def __init__(self, plan, weights, *, backend="emulator", nr_tasklets=16):
        self.plan, self.backend, self.nr_tasklets = plan, backend, nr_tasklets
        self.weights = [np.array(w, copy=True) for w in weights]
        self.tables = [dequantized(w, s) for w, s in zip(self.weights, plan.tables)]
        self.calls = []
        self.closed = False
        ReferenceEngine.instances.append(self)

    def run(self, indices, offsets, per_sample_weights, pooling):
        assert not self.closed
        assert indices.dtype == np.int64 and offsets.dtype == np.int64
        assert per_sample_weights is None or per_sample_weights.dtype == np.float32
        assert offsets[0] == 0 and offsets[-1] == indices.size and np.all(np.diff(offsets) >= 0)
        self.calls.append(
            (indices.copy(), offsets.copy(), None if per_sample_weights is None else per_sample_weights.copy(), pooling)
        )
        psw = engine_weights(self.plan.tables, offsets, per_sample_weights)
        return tbe_reference(self.tables, indices, offsets, psw, pooling), SimpleNamespace(extra={}, reference=True)

    def close(self):
        self.closed = True
