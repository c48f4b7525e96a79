"""Traces of embedding lookups in FBGEMM's TBE layout (:class:`Trace`), several batches back to back.

Within a batch the layout is FBGEMM's ``(indices, offsets[T*B+1])`` with bags ordered
table-major (all ``B`` samples of table 0, then table 1, ...); batches follow each
other, so the whole trace has ``offsets`` of length ``num_batches*T*B + 1``.

Example:
    >>> tr = Trace(2, 1, np.array([3, 1, 1]), np.array([0, 2, 3]))
    >>> tr.num_batches, tr.table_lookups(0)[0].tolist()
    (1, [3, 1])
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from updlrm.partitioner.ranges import concat_ranges

__all__ = ["TRACE_FORMAT", "TRACE_FORMAT_VERSION", "Trace", "TraceError"]

TRACE_FORMAT = "updlrm-trace"
TRACE_FORMAT_VERSION = 1


class TraceError(ValueError):
    """A trace whose arrays do not form a valid TBE layout, or a file we cannot read."""


@dataclass
class Trace:
    """Lookups in FBGEMM's TBE layout, several batches back to back.

    ``offsets`` has ``num_batches*T*B + 1`` entries, ordered batch-major, then table,
    then sample; bag ``(i, t, b)`` is ``indices[offsets[g]:offsets[g+1]]`` with
    ``g = (i*T + t)*B + b``. Indices are row ids local to their table.

    >>> tr = Trace(2, 1, np.array([3, 1, 1]), np.array([0, 2, 3]))
    >>> tr.table_lookups(0)[0].tolist(), tr.num_batches
    ([3, 1], 1)
    """

    num_tables: int
    batch_size: int
    indices: np.ndarray
    offsets: np.ndarray
    per_sample_weights: np.ndarray | None = None
    table_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.num_tables < 1 or self.batch_size < 1:
            raise TraceError(
                f"a trace needs num_tables >= 1 and batch_size >= 1, got {self.num_tables}, {self.batch_size}"
            )
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if self.indices.ndim != 1 or self.offsets.ndim != 1:
            raise TraceError("indices and offsets must be one-dimensional")
        bags = self.num_tables * self.batch_size
        if self.offsets.size < 1 or (self.offsets.size - 1) % bags:
            raise TraceError(
                f"offsets has {self.offsets.size} entries; expected num_batches*T*B + 1 with "
                f"T={self.num_tables}, B={self.batch_size}"
            )
        if self.offsets[0] != 0 or self.offsets[-1] != self.indices.size:
            raise TraceError(
                f"offsets must start at 0 and end at len(indices)={self.indices.size}, "
                f"got {int(self.offsets[0])}..{int(self.offsets[-1])}"
            )
        if self.offsets.size > 1 and np.any(self.offsets[1:] < self.offsets[:-1]):
            bad = int(np.flatnonzero(self.offsets[1:] < self.offsets[:-1])[0])
            raise TraceError(f"offsets must be non-decreasing (offsets[{bad + 1}] < offsets[{bad}])")
        if self.indices.size and self.indices.min() < 0:
            raise TraceError(f"negative index {int(self.indices.min())} in the trace")
        if self.per_sample_weights is not None:
            self.per_sample_weights = np.ascontiguousarray(self.per_sample_weights, dtype=np.float32)
            if self.per_sample_weights.shape != self.indices.shape:
                raise TraceError(
                    f"per_sample_weights has shape {self.per_sample_weights.shape}, indices {self.indices.shape}"
                )
        if self.table_names is not None:
            self.table_names = [str(n) for n in self.table_names]
            if len(self.table_names) != self.num_tables:
                raise TraceError(f"{len(self.table_names)} table names for {self.num_tables} tables")

    # ---- shape ---------------------------------------------------------------------

    @property
    def num_batches(self) -> int:
        return (self.offsets.size - 1) // (self.num_tables * self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples per table over the whole trace (``num_batches * batch_size``)."""
        return self.num_batches * self.batch_size

    @property
    def num_lookups(self) -> int:
        return int(self.indices.size)

    def lengths(self) -> np.ndarray:
        """Bag sizes as an array of shape ``(num_batches, T, B)``.

        >>> Trace(1, 2, np.array([4, 5, 6]), np.array([0, 1, 3])).lengths().tolist()
        [[[1, 2]]]
        """
        return np.diff(self.offsets).reshape(self.num_batches, self.num_tables, self.batch_size)

    # ---- access ----------------------------------------------------------------------

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Batch ``i`` as ``(indices, offsets[T*B+1] starting at 0, weights or None)``.

        >>> tr = Trace(1, 1, np.array([7, 8, 9]), np.array([0, 2, 3]))
        >>> [a.tolist() for a in tr.batch(1)[:2]]
        [[9], [0, 1]]
        """
        if not -self.num_batches <= i < self.num_batches:
            raise IndexError(f"batch {i} of a trace with {self.num_batches} batches")
        i %= self.num_batches
        bags = self.num_tables * self.batch_size
        off = self.offsets[i * bags : (i + 1) * bags + 1]
        lo, hi = int(off[0]), int(off[-1])
        w = None if self.per_sample_weights is None else self.per_sample_weights[lo:hi]
        return self.indices[lo:hi], off - lo, w

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Iterate over :meth:`batch` for every batch.

        >>> sum(1 for _ in Trace(1, 1, np.array([1, 2]), np.array([0, 1, 2])).batches())
        2
        """
        for i in range(self.num_batches):
            yield self.batch(i)

    def _bag_ids(self, table: int) -> np.ndarray:
        if not 0 <= table < self.num_tables:
            raise IndexError(f"table {table} of a trace with {self.num_tables} tables")
        T, B = self.num_tables, self.batch_size
        base = (np.arange(self.num_batches, dtype=np.int64) * T + table) * B
        return (base[:, None] + np.arange(B, dtype=np.int64)[None, :]).ravel()

    def table_lookups(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """All lookups of table ``t``: ``(rows, bag_ids)``, bag id = global sample id.

        The global sample id of sample ``b`` in batch ``i`` is ``i*B + b``.

        >>> tr = Trace(2, 1, np.array([3, 1, 1, 4]), np.array([0, 2, 3, 3, 4]))
        >>> [a.tolist() for a in tr.table_lookups(1)]
        [[1, 4], [0, 1]]
        """
        g = self._bag_ids(t)
        starts = self.offsets[g]
        lens = self.offsets[g + 1] - starts
        if self.num_batches == 1:
            rows = self.indices[int(starts[0]) : int(starts[0]) + int(lens.sum())]
        else:
            rows = self.indices[concat_ranges(starts, lens)]
        bag_ids = np.repeat(np.arange(g.size, dtype=np.int64), lens)
        return rows, bag_ids

    def table_weights(self, t: int) -> np.ndarray | None:
        """Per-sample weights of table ``t``'s lookups, aligned with :meth:`table_lookups`.

        >>> Trace(2, 1, np.array([3, 1, 1]), np.array([0, 2, 3]), np.array([.5, .25, 1.])).table_weights(1).tolist()
        [1.0]
        """
        if self.per_sample_weights is None:
            return None
        g = self._bag_ids(t)
        starts = self.offsets[g]
        return self.per_sample_weights[concat_ranges(starts, self.offsets[g + 1] - starts)]

    # ---- reshaping -----------------------------------------------------------------

    def _gather_bags(self, bag_ids: np.ndarray, num_tables: int, batch_size: int, table_names) -> Trace:
        bag_ids = np.asarray(bag_ids, dtype=np.int64)
        starts = self.offsets[bag_ids]
        lens = self.offsets[bag_ids + 1] - starts
        pos = concat_ranges(starts, lens)
        offsets = np.zeros(bag_ids.size + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        w = None if self.per_sample_weights is None else self.per_sample_weights[pos]
        return Trace(num_tables, batch_size, self.indices[pos], offsets, w, table_names)

    def rebatch(self, batch_size: int) -> Trace:
        """The same samples regrouped into batches of ``batch_size``.

        Samples that do not fill a last batch are dropped (with a warning).

        >>> tr = Trace(1, 4, np.arange(4), np.arange(5))
        >>> tr.rebatch(2).batch(1)[0].tolist()
        [2, 3]
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        S, T, B = self.num_samples, self.num_tables, self.batch_size
        nb = S // batch_size
        if nb == 0:
            raise ValueError(f"batch_size {batch_size} exceeds the trace's {S} samples")
        if nb * batch_size < S:
            warnings.warn(
                f"rebatch: dropping the last {S - nb * batch_size} of {S} samples that do not fill a batch of {batch_size}",
                stacklevel=2,
            )
        s = np.arange(nb, dtype=np.int64)[:, None, None] * batch_size + np.arange(batch_size)[None, None, :]
        t = np.arange(T, dtype=np.int64)[None, :, None]
        old = ((s // B) * T + t) * B + s % B
        return self._gather_bags(old.ravel(), T, batch_size, self.table_names)

    def select_tables(self, tables: Sequence[int]) -> Trace:
        """Keep only ``tables`` (in that order), renumbered from 0.

        >>> tr = Trace(2, 1, np.array([3, 1, 1]), np.array([0, 2, 3]))
        >>> tr.select_tables([1]).indices.tolist()
        [1]
        """
        sel = np.asarray(list(tables), dtype=np.int64)
        if sel.size == 0 or sel.min() < 0 or sel.max() >= self.num_tables:
            raise IndexError(f"tables {sel.tolist()} out of range for a trace with {self.num_tables} tables")
        T, B = self.num_tables, self.batch_size
        i = np.arange(self.num_batches, dtype=np.int64)[:, None, None]
        g = (i * T + sel[None, :, None]) * B + np.arange(B)[None, None, :]
        names = None if self.table_names is None else [self.table_names[k] for k in sel]
        return self._gather_bags(g.ravel(), int(sel.size), B, names)

    def split(self, fraction: float) -> tuple[Trace, Trace]:
        """Two traces: the first ``fraction`` of the samples and the rest.

        Splits at a batch boundary when there are >= 2 batches, otherwise within the
        single batch (the two parts then have batch sizes summing to ``batch_size``).

        >>> tr = Trace(1, 1, np.arange(4), np.arange(5))
        >>> a, b = tr.split(0.75); a.num_batches, b.indices.tolist()
        (3, [3])
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        T, B, nb = self.num_tables, self.batch_size, self.num_batches
        if nb >= 2:
            k = min(nb - 1, max(1, round(fraction * nb)))
            cut = k * T * B
            first = np.arange(cut, dtype=np.int64)
            second = np.arange(cut, nb * T * B, dtype=np.int64)
            return (self._gather_bags(first, T, B, self.table_names), self._gather_bags(second, T, B, self.table_names))
        if B < 2:
            raise ValueError("cannot split a trace of one batch of one sample")
        k = min(B - 1, max(1, round(fraction * B)))
        g = np.arange(T, dtype=np.int64)[:, None] * B
        first = (g + np.arange(k)[None, :]).ravel()
        second = (g + np.arange(k, B)[None, :]).ravel()
        return (self._gather_bags(first, T, k, self.table_names), self._gather_bags(second, T, B - k, self.table_names))

    # ---- identity and persistence ----------------------------------------------------

    def hash(self) -> str:
        """Stable content hash (16 hex digits); plans store it to catch a workload mismatch.

        >>> Trace(1, 1, np.array([1]), np.array([0, 1])).hash() == Trace(1, 1, [1], [0, 1]).hash()
        True
        """
        h = hashlib.sha256()
        h.update(
            json.dumps(
                [TRACE_FORMAT, TRACE_FORMAT_VERSION, self.num_tables, self.batch_size, self.table_names]
            ).encode()
        )
        h.update(self.indices.astype("<i8", copy=False).tobytes())
        h.update(self.offsets.astype("<i8", copy=False).tobytes())
        if self.per_sample_weights is not None:
            h.update(b"w")
            h.update(self.per_sample_weights.astype("<f4", copy=False).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | os.PathLike, *, compress: bool = False) -> Path:
        """Write the trace as ``.npz`` in TBE layout (read back with :func:`~updlrm.partitioner.workloads.load_trace`).

        >>> import tempfile, pathlib
        >>> from updlrm.partitioner.workloads import load_trace
        >>> tr = Trace(1, 1, np.array([1, 2]), np.array([0, 2]), table_names=["x"])
        >>> f = tr.save(pathlib.Path(tempfile.mkdtemp()) / "t.npz")
        >>> load_trace(f).hash() == tr.hash()
        True
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = {
            "format": np.array(TRACE_FORMAT),
            "version": np.array(TRACE_FORMAT_VERSION),
            "num_tables": np.array(self.num_tables),
            "batch_size": np.array(self.batch_size),
            "indices": self.indices,
            "offsets": self.offsets,
        }
        if self.per_sample_weights is not None:
            arrays["per_sample_weights"] = self.per_sample_weights
        if self.table_names is not None:
            arrays["table_names"] = np.array(self.table_names, dtype=str)
        # numpy's stub types **kwds against savez_compressed's allow_pickle keyword.
        (np.savez_compressed if compress else np.savez)(path, **arrays)  # type: ignore[arg-type]
        return path

    def __repr__(self) -> str:
        return (
            f"Trace(num_tables={self.num_tables}, batch_size={self.batch_size}, "
            f"num_batches={self.num_batches}, num_lookups={self.num_lookups}, "
            f"weighted={self.per_sample_weights is not None})"
        )
