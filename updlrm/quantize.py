"""Table weights in their row format: float values quantised to INT32/INT8 rows and back.

Example:
    >>> import numpy as np
    >>> from updlrm.specs import TableSpec
    >>> q, spec = quantize_table(np.array([[1.0, -0.5]]), TableSpec("a", 1, 2, row_format="int8"))
    >>> q.tolist(), dequantize_table(q, spec).tolist()
    ([[127, -64]], [[1.0, -0.5039370059967041]])
"""

from __future__ import annotations

import dataclasses

import numpy as np

from updlrm.specs import RowFormat, TableSpec
from updlrm.validation import InputTypeError, InvalidInputError

__all__ = ["FIT_QMAX", "FORMAT_QMAX", "quantize_table", "dequantize_table"]


# The fitted-scale rule for integer row formats (``quantization="fit"``): the largest
# |weight| of a table maps to QMAX. INT8 is symmetric int8 (-127..127, as
# torch.quantize_per_tensor with a symmetric qint8 range). INT32 maps to 2**24, the
# float32 significand: finer steps could not show in the float32 output, and the DPU sums
# int32 rows in int64 (dpu_kernels/embedding_bag_abi.h): unweighted bags never overflow,
# weighted ones only if sum |w| of a bag >= 2**23, which the engine refuses
# (AccumulatorOverflowError) rather than wrap.
FIT_QMAX = {RowFormat.INT8: 127, RowFormat.INT32: 1 << 24}
# Largest |q| a format can store at all (``quantization="table"`` checks against it).
FORMAT_QMAX = {RowFormat.INT8: 127, RowFormat.INT32: (1 << 31) - 1}


def quantize_table(values: np.ndarray, spec: TableSpec, *, fit_scale: bool = True) -> tuple[np.ndarray, TableSpec]:
    """Store ``values`` (float, shape (rows, dim)) in ``spec.row_format``; return (stored, spec).

    FP32 is stored as float32. INT32/INT8 store ``q = round(value / scale)``. With
    ``fit_scale`` the scale is fitted to the data (``max|value| / QMAX``, see ``FIT_QMAX``)
    and the returned spec carries it; otherwise ``spec.scale`` is used and a value that
    does not fit the format raises. Integer arrays (int8 for INT8, int32 for INT32) are
    taken as already quantised with ``spec.scale``.

    >>> spec = TableSpec("a", 2, 2, row_format="int8")
    >>> q, s = quantize_table(np.array([[0.5, -1.0], [0.25, 0.0]]), spec)
    >>> q.tolist(), round(s.scale * 127, 6)
    ([[64, -127], [32, 0]], 1.0)
    """
    arr = np.asarray(values)
    shape = (spec.num_embeddings, spec.embedding_dim)
    if arr.shape != shape:
        raise InvalidInputError(f"table {spec.name!r}: weights have shape {arr.shape}, expected {shape}")
    fmt = spec.row_format
    if fmt == RowFormat.FP32:
        if arr.dtype.kind not in "fiu":
            raise InputTypeError(f"table {spec.name!r}: weights must be numeric, got {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.float32), spec
    if arr.dtype.kind in "iu":
        if arr.dtype != fmt.dtype:
            raise InputTypeError(
                f"table {spec.name!r} is {fmt.value}: integer weights must be {fmt.dtype.name} "
                f"(already quantised with scale={spec.scale}), got {arr.dtype}; pass float weights to quantise them"
            )
        return np.ascontiguousarray(arr), spec
    if arr.dtype.kind != "f":
        raise InputTypeError(f"table {spec.name!r}: weights must be float or {fmt.dtype.name}, got {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"table {spec.name!r}: weights contain NaN or inf, which {fmt.value} cannot store")
    scale = spec.scale
    if fit_scale:
        peak = float(np.abs(arr).max()) if arr.size else 0.0
        scale = peak / FIT_QMAX[fmt] if peak > 0 else 1.0
        spec = dataclasses.replace(spec, scale=scale)
    q = np.rint(arr / scale)
    qmax = FORMAT_QMAX[fmt]
    if q.size and np.abs(q).max() > qmax:
        raise InvalidInputError(
            f"table {spec.name!r}: with scale={scale} the weights need |q| up to {int(np.abs(q).max())}, "
            f"more than {fmt.value} holds ({qmax}); use a larger scale or quantization='fit'"
        )
    return q.astype(fmt.dtype), spec


def dequantize_table(stored: np.ndarray, spec: TableSpec) -> np.ndarray:
    """Float32 values of a stored table (``q * scale`` for integer formats).

    >>> dequantize_table(np.array([[2, -4]], np.int8), TableSpec("a", 1, 2, row_format="int8", scale=0.5)).tolist()
    [[1.0, -2.0]]
    """
    if spec.row_format == RowFormat.FP32:
        return np.array(stored, dtype=np.float32, copy=True)
    return (stored.astype(np.float64) * spec.scale).astype(np.float32)
