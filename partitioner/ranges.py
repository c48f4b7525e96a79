"""Vectorised index ranges, the one helper the trace, statistics and routing code share.

Example:
    >>> concat_ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist()
    [5, 6, 9, 10, 11]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["concat_ranges"]


def concat_ranges(starts: ArrayLike, lengths: ArrayLike) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every ``(s, l)`` of ``starts`` and ``lengths``, as int64.

    >>> concat_ranges(np.array([3, 7]), np.array([1, 2])).tolist()
    [3, 7, 8]
    >>> concat_ranges(np.zeros(2, dtype=np.int64), np.array([0, 0])).tolist()
    []
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.asarray(starts, dtype=np.int64) - (ends - lengths)
    out: np.ndarray = np.arange(total, dtype=np.int64) + np.repeat(shift, lengths)
    return out
