"""The array a batch's result goes to: a fresh one, or the caller's ``out``, checked.

A serving loop that passes the same ``out`` to every batch skips a fresh allocation per
batch and its first-touch page faults (13.6 MB a batch for 26 tables x 64 at batch 2048).

A fresh array starts on a 64-byte cache line (numpy's own start 16 bytes past one): the
merge streams finished cells past the caches only into whole aligned lines (host/README.md,
staged tables). A caller's ``out`` is used wherever it starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LINE_BYTES", "output_array"]

#: Cache-line size the output is aligned to (x86-64 and most ARMv8 cores).
LINE_BYTES = 64


def _line_aligned(batch: int, width: int) -> np.ndarray:
    """An uninitialised float32 ``(batch, width)`` array whose first byte starts a cache line."""
    items = LINE_BYTES // 4
    raw = np.empty(batch * width + items, dtype=np.float32)
    skip = (-raw.ctypes.data % LINE_BYTES) // 4
    return raw[skip : skip + batch * width].reshape(batch, width)


def output_array(out: Any, batch: int, width: int) -> np.ndarray:
    """``out`` checked to be a C-contiguous writeable float32 ``(batch, width)`` array, or a fresh one.

    >>> fresh = output_array(None, 2, 3)
    >>> fresh.shape, fresh.ctypes.data % LINE_BYTES
    ((2, 3), 0)
    >>> output_array(np.zeros((2, 4), np.float32), 2, 3)
    Traceback (most recent call last):
    ...
    ValueError: out has shape (2, 4); this batch needs (2, 3): B=2 samples x 3 columns
    """
    if out is None:
        return _line_aligned(batch, width)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.dtype != np.float32:
        raise ValueError(f"out has dtype {out.dtype}; pass a float32 array")
    if out.shape != (batch, width):
        raise ValueError(
            f"out has shape {out.shape}; this batch needs {(batch, width)}: B={batch} samples x {width} columns"
        )
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be C-contiguous and writeable (np.empty((B, width), np.float32) is)")
    return out
