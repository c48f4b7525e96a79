"""A ``KeyedJaggedTensor`` as numpy (:class:`SparseBatch`), and its features stacked into one TBE batch.

:func:`read_kjt` reads updlrm's or torchrec's KJT; :func:`stack_bags` lays the chosen
bags of every feature out as the ``T`` tables x ``B'`` bags batch the engine runs (see
:mod:`updlrm.collection`, steps 1 and 3).

Example:
    >>> b = read_kjt(KeyedJaggedTensor(["a"], torch.tensor([3, 4, 5]), lengths=torch.tensor([2, 1])))
    >>> b.keys, b.lengths.tolist(), b.bag_start.tolist()
    (['a'], [2, 1], [0, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from updlrm.kjt import KeyedJaggedTensor
from updlrm.partitioner.ranges import concat_ranges
from updlrm.validation import InputTypeError

__all__ = ["SparseBatch", "read_kjt", "read_kjt_key", "stack_bags"]


# --------------------------------------------------------------------------------------
# reading a KJT (updlrm's or torchrec's)


@dataclass
class SparseBatch:
    """A KJT as numpy: bag lengths/offsets over all bags (key-major), values, weights.

    ``bag_start[k]`` is the first bag of key ``k``; ``inverse[k]`` maps the ``B`` samples
    to that key's bags (None: bag ``b`` is sample ``b``).
    """

    keys: list[str]
    values: np.ndarray  # int64 (N,)
    weights: np.ndarray | None  # float32 (N,)
    lengths: np.ndarray  # int64 (bags,)
    offsets: np.ndarray  # int64 (bags + 1,)
    bag_start: np.ndarray  # int64 (K + 1,)
    batch_size: int
    inverse: list[np.ndarray | None]


def _np(x: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def read_kjt(kjt: Any) -> SparseBatch:
    """Read a ``KeyedJaggedTensor`` (updlrm's, torchrec's, or anything with its methods).

    >>> b = read_kjt(KeyedJaggedTensor(["a"], torch.tensor([3, 4]), lengths=torch.tensor([2, 0])))
    >>> b.offsets.tolist(), b.batch_size
    ([0, 2, 2], 2)
    """
    if not (hasattr(kjt, "keys") and hasattr(kjt, "values") and (hasattr(kjt, "lengths") or hasattr(kjt, "offsets"))):
        raise InputTypeError(f"expected a KeyedJaggedTensor (updlrm's or torchrec's), got {type(kjt).__name__}")
    if not isinstance(kjt, KeyedJaggedTensor):
        # torchrec's KJT validates nothing at construction; rebuild ours to check it.
        variable = hasattr(kjt, "variable_stride_per_key") and kjt.variable_stride_per_key()
        lengths = kjt.lengths_or_none() if hasattr(kjt, "lengths_or_none") else None
        offsets = kjt.offsets_or_none() if hasattr(kjt, "offsets_or_none") else None
        if lengths is None and offsets is None:
            lengths = kjt.lengths()
        kwargs: dict[str, Any] = {}
        if variable:
            kwargs = {
                "stride_per_key_per_rank": kjt.stride_per_key_per_rank(),
                "inverse_indices": kjt.inverse_indices(),
            }
        elif hasattr(kjt, "inverse_indices_or_none") and kjt.inverse_indices_or_none() is not None:
            kwargs = {"inverse_indices": kjt.inverse_indices_or_none()}
        kjt = KeyedJaggedTensor(
            list(kjt.keys()), kjt.values(), weights=kjt.weights_or_none(), lengths=lengths, offsets=offsets, **kwargs
        )
    keys = kjt.keys()
    values = _np(kjt.values(), np.int64)
    w = kjt.weights_or_none()
    weights = None if w is None else _np(w, np.float32)
    if kjt.lengths_or_none() is not None:
        lengths = _np(kjt.lengths(), np.int64)
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
    else:
        offsets = _np(kjt.offsets(), np.int64)
        lengths = np.diff(offsets)
    strides = kjt.stride_per_key()
    bag_start = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(strides, out=bag_start[1:])
    inv = kjt.inverse_indices_or_none()
    inverse: list[np.ndarray | None] = [None] * len(keys)
    if inv is not None:
        table = _np(inv[1], np.int64)
        inverse = [table[k] for k in range(len(keys))]
    return SparseBatch(keys, values, weights, lengths, offsets, bag_start, kjt.stride(), inverse)


def read_kjt_key(kjt: Any, key: str):
    """(values int64, offsets int64 with the last one, weights or None, inverse or None) of one key."""
    jt = kjt.to_dict()[key]
    inverse = None
    inv = kjt.inverse_indices_or_none() if hasattr(kjt, "inverse_indices_or_none") else None
    if inv is not None:
        inverse = torch.as_tensor(inv[1])[list(inv[0]).index(key)].to(torch.int64)
    return jt.values().to(torch.int64), jt.offsets().to(torch.int64), jt.weights_or_none(), inverse


# --------------------------------------------------------------------------------------
# stacking


def stack_bags(batch: SparseBatch, bags: list[np.ndarray], feature_table: Sequence[int], nr_tables: int):
    """One TBE batch: table t's bags are its features' chosen bags in turn, padded to B'.

    ``bags[i]`` are the global bag ids chosen for feature ``i``, which reads table
    ``feature_table[i]``. Returns ``(indices, offsets, per_sample_weights, row_start, B')``:
    feature ``i``'s pooled rows start at row ``row_start[i]`` of its table's ``B'`` rows;
    the first three are None when no bag has a lookup.

    >>> b = read_kjt(KeyedJaggedTensor(["a", "b"], torch.tensor([5, 6, 7]), lengths=torch.tensor([1, 0, 2, 0])))
    >>> indices, offsets, _, row_start, Bp = stack_bags(b, [np.array([0, 1]), np.array([2, 3])], [0, 0], 1)
    >>> indices.tolist(), offsets.tolist(), row_start.tolist(), Bp
    ([5, 6, 7], [0, 1, 1, 3, 3], [0, 2], 4)
    """
    T = nr_tables
    per_table: list[list[np.ndarray]] = [[] for _ in range(T)]
    row_start = np.zeros(len(bags), dtype=np.int64)
    for i, b in enumerate(bags):
        t = feature_table[i]
        row_start[i] = sum(x.size for x in per_table[t])
        per_table[t].append(b)
    counts = [sum(x.size for x in p) for p in per_table]
    Bp = max(counts)
    if _is_kjt_order(per_table, Bp, batch.lengths.size):
        # The stacked batch is the KJT as it came (one feature per table, in order,
        # every bag): its values and offsets go to the engine without a gather.
        if int(batch.offsets[-1]) == 0:
            return None, None, None, row_start, Bp
        return batch.values, batch.offsets, batch.weights, row_start, Bp
    ids = np.full(T * Bp, -1, dtype=np.int64)
    for t, p in enumerate(per_table):
        if p:
            ids[t * Bp : t * Bp + counts[t]] = np.concatenate(p)
    real = ids >= 0
    lengths = np.where(real, batch.lengths[np.where(real, ids, 0)], 0)
    offsets = np.zeros(ids.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    n = int(offsets[-1])
    if n == 0:
        return None, None, None, row_start, Bp
    # Element gather: bag j's values are values[start_j : start_j + lengths_j].
    starts = np.where(real, batch.offsets[np.where(real, ids, 0)], 0)
    gather = concat_ranges(starts, lengths)
    indices = batch.values[gather]
    psw = None if batch.weights is None else batch.weights[gather]
    return indices, offsets, psw, row_start, Bp


def _is_kjt_order(per_table: list[list[np.ndarray]], Bp: int, nr_bags: int) -> bool:
    """Whether the stacked bag ids are 0, 1, ..., nr_bags - 1 (bag arrays are increasing)."""
    expected = 0
    for p in per_table:
        if len(p) != 1 or p[0].size != Bp or (Bp and (p[0][0] != expected or p[0][-1] != expected + Bp - 1)):
            return False
        expected += Bp
    return expected == nr_bags
