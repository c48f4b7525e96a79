"""Input validation for the embedding-bag modules: one TBE batch checked and brought to the engine's form.

:func:`validate_tbe_inputs` runs on the host, vectorised, before anything is sent to a
DPU; a rejected batch raises an :class:`InvalidInputError` (or a subclass) whose message
says what to fix. :class:`~updlrm.tbe.TableBatchedEmbeddingBags`, the collection and the
sharded collection all call it.

Example:
    >>> import numpy as np
    >>> from updlrm.specs import TableSpec
    >>> b = validate_tbe_inputs([TableSpec("a", 10, 4)], np.array([3, 1]), np.array([0, 1, 2]))
    >>> b.batch_size, b.offsets.tolist()
    (2, [0, 1, 2])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from updlrm.abi import WEIGHT_Q16_ONE
from updlrm.specs import BoundsCheckMode, PoolingMode, RowFormat, TableSpec

__all__ = [
    "ValidatedBatch",
    "InvalidInputError",
    "IndexOutOfRangeError",
    "InputTypeError",
    "validate_tbe_inputs",
]


class InvalidInputError(ValueError):
    """A batch that cannot be run as given; the message says what to fix."""


class InputTypeError(InvalidInputError, TypeError):
    """An input of the wrong kind, dtype or shape."""


class IndexOutOfRangeError(InvalidInputError, IndexError):
    """An index outside ``[0, num_embeddings)`` under ``BoundsCheckMode.FATAL``."""


@dataclass
class ValidatedBatch:
    """A batch in the form the engine runs: int64 indices, int64 offsets (T*B+1), float32 weights.

    ``dropped`` counts lookups removed (out of range under WARNING/IGNORE, or padding).
    """

    indices: np.ndarray
    offsets: np.ndarray
    per_sample_weights: np.ndarray | None
    batch_size: int
    dropped: int = 0


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.is_sparse or x.layout != torch.strided:
            raise InputTypeError(f"{what} must be a dense tensor, got layout {x.layout}")
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple, range)):
        arr = np.asarray(x)
        if arr.size == 0:
            return arr.astype(np.int64)
        return arr
    raise InputTypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


def _check_index_array(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.ndim != 1:
        raise InputTypeError(f"{what} must be one-dimensional, got shape {tuple(arr.shape)}")
    if arr.dtype not in (np.int32, np.int64):
        hint = " (convert with .long() / .astype(np.int64))" if arr.dtype.kind in "iuf" else ""
        raise InputTypeError(f"{what} must have dtype int32 or int64, got {arr.dtype}{hint}")
    return np.ascontiguousarray(arr)


def _first_bad_bag(offsets: np.ndarray, position: int) -> int:
    return int(np.searchsorted(offsets, position, side="right")) - 1


def validate_tbe_inputs(
    tables: Sequence[TableSpec],
    indices: Any,
    offsets: Any,
    per_sample_weights: Any = None,
    *,
    pooling_mode: PoolingMode = PoolingMode.SUM,
    bounds_check_mode: BoundsCheckMode = BoundsCheckMode.FATAL,
    include_last_offset: bool = True,
) -> ValidatedBatch:
    """Check one TBE batch and bring it to the engine's form; raise a specific error if bad.

    Structural checks always run: dtypes (int32/int64 indices and offsets, float weights),
    1-D shapes, ``len(offsets) == T*B + 1`` (or ``T*B`` with ``include_last_offset=False``,
    torch's convention, then ``len(indices)`` is appended), ``offsets[0] == 0``,
    non-decreasing offsets, ``offsets[-1] == len(indices)``, ``per_sample_weights`` of
    length ``len(indices)`` and finite, no weights with MEAN pooling, and weights of
    integer tables' lookups in the Q16 range ``-32768 <= w < 32768``. Index bounds follow
    ``bounds_check_mode``: FATAL raises naming table, sample, position and value; WARNING
    warns and drops the bad lookups; IGNORE drops them silently; NONE does not look.

    Dropped lookups contribute nothing (FBGEMM instead substitutes row 0, which silently
    adds that row's embedding); under MEAN they are not counted in the bag's length.

    >>> t = [TableSpec("a", 10, 4)]
    >>> b = validate_tbe_inputs(t, np.array([1, 2, 3], np.int32), np.array([0, 2, 3]))
    >>> b.indices.dtype, b.batch_size
    (dtype('int64'), 2)
    >>> validate_tbe_inputs(t, np.array([1, 10]), np.array([0, 2]))
    Traceback (most recent call last):
    ...
    updlrm.validation.IndexOutOfRangeError: table 'a' (t=0), sample 0: indices[1] = 10 is out of range [0, 10); 1 of 2 indices are out of range (bounds_check_mode=FATAL; use WARNING or IGNORE to drop them)
    """
    T = len(tables)
    pooling_mode = _pooling_mode(pooling_mode)
    bounds_check_mode = BoundsCheckMode(bounds_check_mode)
    idx = _check_index_array(_to_numpy(indices, "indices"), "indices")
    off = _check_index_array(_to_numpy(offsets, "offsets"), "offsets").astype(np.int64, copy=False)
    n = idx.shape[0]
    if not include_last_offset:
        off = np.append(off, n)
    if off.size == 0:
        raise InvalidInputError("offsets is empty; it must have T*B+1 entries (at least [0])")
    if (off.size - 1) % T:
        raise InvalidInputError(
            f"offsets has {off.size} entries, but with T={T} tables it must have T*B+1 for a batch size B "
            f"(got {off.size - 1} bags, not a multiple of {T})"
        )
    B = (off.size - 1) // T
    if off[0] != 0:
        raise InvalidInputError(f"offsets[0] must be 0 (the first bag starts at the first index), got {int(off[0])}")
    steps = np.diff(off)
    if steps.size and steps.min() < 0:
        k = int(np.argmax(steps < 0))
        raise InvalidInputError(
            f"offsets must be non-decreasing, but offsets[{k + 1}] = {int(off[k + 1])} < offsets[{k}] = {int(off[k])} "
            f"(bag {k} of table {tables[k // B].name!r} would have negative length)"
        )
    if off[-1] != n:
        raise InvalidInputError(
            f"offsets[-1] = {int(off[-1])} must equal len(indices) = {n} (the last bag ends at the last index)"
        )
    psw = None
    if per_sample_weights is not None:
        if pooling_mode == PoolingMode.MEAN:
            # FBGEMM's CPU TBE silently skips the division when weights are given
            # ("MEAN pooling will not work with indice_weights", embedding_forward_split_cpu.cpp)
            # and torch.nn.EmbeddingBag accepts per_sample_weights only with mode='sum'.
            raise InvalidInputError(
                "per_sample_weights are only supported with PoolingMode.SUM (as in torch.nn.EmbeddingBag; "
                "FBGEMM does not apply MEAN to weighted bags); scale the weights by 1/bag length and use SUM instead"
            )
        w = _to_numpy(per_sample_weights, "per_sample_weights")
        if w.dtype.kind != "f":
            raise InputTypeError(f"per_sample_weights must be a floating-point array (float32), got {w.dtype}")
        if w.ndim != 1 or w.shape[0] != n:
            raise InputTypeError(
                f"per_sample_weights must have shape ({n},), one weight per index, got {tuple(w.shape)}"
            )
        # Weights are computed in float32 whatever their input precision, as FBGEMM's TBE
        # does (pytorch/FBGEMM PR #2369, "Force casting per_sample_weights to float in TBE").
        psw = np.ascontiguousarray(w, dtype=np.float32)
        finite = np.isfinite(psw)
        if not finite.all():
            k = int(np.argmin(finite))
            raise InvalidInputError(f"per_sample_weights[{k}] = {psw[k]} is not finite")
        _check_q16_weights(tables, psw, off, B)
    if bounds_check_mode != BoundsCheckMode.NONE and n:
        bad = _out_of_range(tables, idx, off, B)
        if bad is not None:
            nbad = int(np.count_nonzero(bad))
            p = int(np.argmax(bad))
            bag = _first_bad_bag(off, p)
            t, b = divmod(bag, B)
            where = (
                f"table {tables[t].name!r} (t={t}), sample {b}: indices[{p}] = {int(idx[p])} "
                f"is out of range [0, {tables[t].num_embeddings})"
            )
            if bounds_check_mode == BoundsCheckMode.FATAL:
                raise IndexOutOfRangeError(
                    f"{where}; {nbad} of {n} indices are out of range "
                    "(bounds_check_mode=FATAL; use WARNING or IGNORE to drop them)"
                )
            if bounds_check_mode == BoundsCheckMode.WARNING:
                warnings.warn(
                    f"{where}; dropping {nbad} out-of-range lookups (they contribute nothing)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return _drop_lookups(ValidatedBatch(idx.astype(np.int64, copy=False), off, psw, B), ~bad)
    return ValidatedBatch(idx.astype(np.int64, copy=False), off, psw, B)


# Integer rows take per-sample weights as Q16 fixed point, rint(w * WEIGHT_Q16_ONE) in int32
# (dpu_kernels/embedding_bag_abi.h).
_Q16_RANGE = (-(1 << 31), (1 << 31) - 1)


def _check_q16_weights(tables: Sequence[TableSpec], psw: np.ndarray, off: np.ndarray, B: int) -> None:
    """Weights of integer tables' lookups must fit Q16 (|w| < 32768); name the first that does not."""
    starts = off[np.arange(len(tables) + 1) * B]
    for t, spec in enumerate(tables):
        lo, hi = int(starts[t]), int(starts[t + 1])
        if spec.row_format == RowFormat.FP32 or lo == hi:
            continue
        segment = psw[lo:hi]
        # rint is monotone: the smallest and largest weights decide (no per-weight temporaries).
        q_low, q_high = (
            np.rint(np.float64(segment.min()) * WEIGHT_Q16_ONE),
            np.rint(np.float64(segment.max()) * WEIGHT_Q16_ONE),
        )
        if _Q16_RANGE[0] <= q_low and q_high <= _Q16_RANGE[1]:
            continue
        q = np.rint(segment.astype(np.float64) * WEIGHT_Q16_ONE)
        bad = (q < _Q16_RANGE[0]) | (q > _Q16_RANGE[1])
        if bad.any():
            k = lo + int(np.argmax(bad))
            b = _first_bad_bag(off, k) - t * B
            raise InvalidInputError(
                f"table {spec.name!r} (t={t}), sample {b}: per_sample_weights[{k}] = {psw[k]!s} is outside the Q16 range "
                f"of {spec.row_format.value} tables (-32768 <= w < 32768); scale the weights down or store the table as fp32"
            )


def _out_of_range(tables: Sequence[TableSpec], idx: np.ndarray, off: np.ndarray, B: int) -> np.ndarray | None:
    """Mask of out-of-range lookups, or None if there are none (the common case).

    Viewing the indices as unsigned makes a negative index a huge one, so one comparison
    per table segment finds both kinds; a mask is only built for tables that have any.
    """
    unsigned = idx.view(np.uint64 if idx.dtype == np.int64 else np.uint32)
    # An int32 index is always below 2**31, so larger tables only reject negatives.
    cap = (1 << 64) - 1 if idx.dtype == np.int64 else 1 << 31
    starts = off[np.arange(len(tables) + 1) * B]
    bad = None
    for t, spec in enumerate(tables):
        lo, hi = int(starts[t]), int(starts[t + 1])
        if lo == hi:
            continue
        limit = unsigned.dtype.type(min(spec.num_embeddings, cap))
        segment = unsigned[lo:hi] >= limit
        if segment.any():
            if bad is None:
                bad = np.zeros(idx.size, dtype=bool)
            bad[lo:hi] = segment
    return bad


def _drop_lookups(batch: ValidatedBatch, keep: np.ndarray) -> ValidatedBatch:
    """Remove the lookups where ``keep`` is False, in place; bags shrink, none disappear."""
    if keep.all():
        return batch
    kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    batch.offsets = kept_before[batch.offsets]
    batch.indices = batch.indices[keep]
    if batch.per_sample_weights is not None:
        batch.per_sample_weights = batch.per_sample_weights[keep]
    batch.dropped += int(keep.size - np.count_nonzero(keep))
    return batch


def _pooling_mode(mode: PoolingMode | str | int) -> PoolingMode:
    if isinstance(mode, str):
        try:
            mode = PoolingMode[mode.upper()]
        except KeyError:
            raise ValueError(f"unknown pooling mode {mode!r}; supported: 'sum', 'mean'") from None
    mode = PoolingMode(mode)
    if mode not in (PoolingMode.SUM, PoolingMode.MEAN):
        raise NotImplementedError(f"pooling mode {mode.name} is not supported; updlrm pools with SUM or MEAN")
    return mode
