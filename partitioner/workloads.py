"""Embedding-lookup workloads: traces in FBGEMM's TBE layout, loaders and generators.

A :class:`Trace` holds several batches of lookups back to back. Within a batch the
layout is FBGEMM's ``(indices, offsets[T*B+1])`` with bags ordered table-major (all
``B`` samples of table 0, then table 1, ...); batches follow each other, so the whole
trace has ``offsets`` of length ``num_batches*T*B + 1``.

Sources of traces:

* :func:`synthetic_trace`: Zipf-skewed (or reuse-histogram-matched) lookups with
  optional co-occurring "topic" groups; deterministic for a seed and vectorised.
* :func:`load_trace`: our ``.npz``, Meta's ``dlrm_datasets`` ``.pt``/``.pt.gz`` files,
  Criteo Kaggle/Terabyte TSV files.
* :func:`parse_locality_stats` reads the reuse histograms Meta published for its
  production traces (``meta_dlrm_20{21,22}_locality_stats.txt``).

Example:
    >>> from updlrm.specs import TableSpec
    >>> tables = [TableSpec("a", 1000, 16), TableSpec("b", 50, 16)]
    >>> tr = synthetic_trace(tables, batch_size=4, num_batches=3, pooling=2, seed=1)
    >>> tr.num_tables, tr.batch_size, tr.num_batches, tr.offsets.size
    (2, 4, 3, 25)
    >>> idx, off, w = tr.batch(1)
    >>> int(off[0]), int(off[-1]) == idx.size, w is None
    (0, True, True)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from updlrm.specs import RowFormat, TableSpec

TRACE_FORMAT = "updlrm-trace"
TRACE_FORMAT_VERSION = 1

# The 26 categorical cardinalities of the Criteo Kaggle Display Advertising Challenge
# training set (train.txt, 45,840,617 samples), as produced by the reference DLRM
# preprocessing (facebookresearch/dlrm, data_utils.py; the same list is the default
# ``--arch-embedding-size`` in its Kaggle scripts).
CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)

# Lower edges of the "col size" bins of Meta's locality statistics: bin i holds rows
# accessed (edges[i], edges[i+1]] times, the last bin (32768, inf). Source:
# facebookresearch/dlrm_datasets, embedding_bag/locality_stats.txt.
META_REUSE_BIN_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

_DATA_DIR = Path(__file__).resolve().parent / "data"


class TraceError(ValueError):
    """A trace whose arrays do not form a valid TBE layout, or a file we cannot read."""


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s+l)`` for every (s, l), vectorised.

    >>> _ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist()
    [5, 6, 9, 10, 11]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.asarray(starts, dtype=np.int64) - (ends - lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(shift, lengths)


def _feistel_permute(x: np.ndarray, domain: int, key: int) -> np.ndarray:
    """A keyed pseudo-random bijection of ``[0, domain)``, evaluated element-wise.

    A balanced 4-round Feistel network on the smallest even bit width covering
    ``domain``, with cycle walking for values that land outside it. It permutes ids
    without materialising a ``domain``-sized permutation (tables have 10^7+ rows).

    >>> p = _feistel_permute(np.arange(10), 10, key=3)
    >>> sorted(p.tolist()) == list(range(10))
    True
    """
    x = np.asarray(x, dtype=np.uint64)
    if domain <= 1:
        return np.zeros(x.shape, dtype=np.int64)
    bits = max(2, int(domain - 1).bit_length())
    bits += bits & 1
    half = bits // 2
    mask = np.uint64((1 << half) - 1)
    keys = np.random.default_rng(key).integers(0, 1 << 62, size=4, dtype=np.uint64)
    mul = np.uint64(0x9E3779B97F4A7C15)

    def encrypt(v: np.ndarray) -> np.ndarray:
        left, right = v >> np.uint64(half), v & mask
        for k in keys:
            f = (right ^ k) * mul
            f ^= f >> np.uint64(29)
            left, right = right, left ^ (f & mask)
        return (left << np.uint64(half)) | right

    with np.errstate(over="ignore"):
        out = encrypt(x)
        outside = np.flatnonzero(out >= domain)
        while outside.size:
            out[outside] = encrypt(out[outside])
            outside = outside[out[outside] >= domain]
    return out.astype(np.int64)


def _bounded_zipf_ranks(rng: np.random.Generator, n: int, num_rows: int, alpha: float) -> np.ndarray:
    """``n`` ranks in ``[0, num_rows)`` with P(rank k) proportional to (k+1)^-alpha.

    The first 1024 ranks use the exact discrete CDF; the tail uses the inverse of the
    continuous density on [k-1/2, k+1/2) intervals, whose error per rank is below
    alpha*(alpha+1)/(24 k^2) < 1e-6 there. ``alpha == 0`` is uniform.

    >>> r = _bounded_zipf_ranks(np.random.default_rng(0), 100_000, 10, 1.0)
    >>> int(r.min()), int(r.max()), bool((r == 0).mean() > (r == 9).mean() * 5)
    (0, 9, True)
    """
    if alpha == 0 or num_rows == 1:
        return rng.integers(0, num_rows, size=n, dtype=np.int64)
    head = min(num_rows, 1024)
    k = np.arange(1, head + 1, dtype=np.float64)
    head_w = k**-alpha
    head_mass = head_w.sum()
    one_minus = 1.0 - alpha
    lo, hi = head + 0.5, num_rows + 0.5
    if num_rows > head:
        if abs(one_minus) < 1e-12:
            tail_mass = math.log(hi / lo)
        else:
            tail_mass = (hi**one_minus - lo**one_minus) / one_minus
    else:
        tail_mass = 0.0
    head_cdf = np.cumsum(head_w) / (head_mass + tail_mass)
    u = rng.random(n)
    ranks = np.searchsorted(head_cdf, u, side="right").astype(np.int64)
    in_tail = np.flatnonzero(ranks >= head)
    if in_tail.size:
        v = (u[in_tail] - head_cdf[-1]) / (1.0 - head_cdf[-1])
        if abs(one_minus) < 1e-12:
            x = lo * np.exp(v * math.log(hi / lo))
        else:
            x = (lo**one_minus + v * (hi**one_minus - lo**one_minus)) ** (1.0 / one_minus)
        ranks[in_tail] = np.clip(np.floor(x + 0.5).astype(np.int64), head + 1, num_rows) - 1
    return ranks


def _per_table(value, num_tables: int, name: str) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != num_tables:
            raise ValueError(f"{name}: got {len(value)} values for {num_tables} tables")
        return list(value)
    return [value] * num_tables


# --------------------------------------------------------------------------------------
# Trace
# --------------------------------------------------------------------------------------


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
            raise TraceError(f"a trace needs num_tables >= 1 and batch_size >= 1, got {self.num_tables}, {self.batch_size}")
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
            raise TraceError(f"offsets must start at 0 and end at len(indices)={self.indices.size}, "
                             f"got {int(self.offsets[0])}..{int(self.offsets[-1])}")
        if self.offsets.size > 1 and np.any(self.offsets[1:] < self.offsets[:-1]):
            bad = int(np.flatnonzero(self.offsets[1:] < self.offsets[:-1])[0])
            raise TraceError(f"offsets must be non-decreasing (offsets[{bad + 1}] < offsets[{bad}])")
        if self.indices.size and self.indices.min() < 0:
            raise TraceError(f"negative index {int(self.indices.min())} in the trace")
        if self.per_sample_weights is not None:
            self.per_sample_weights = np.ascontiguousarray(self.per_sample_weights, dtype=np.float32)
            if self.per_sample_weights.shape != self.indices.shape:
                raise TraceError(f"per_sample_weights has shape {self.per_sample_weights.shape}, indices {self.indices.shape}")
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
            rows = self.indices[_ranges(starts, lens)]
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
        return self.per_sample_weights[_ranges(starts, self.offsets[g + 1] - starts)]

    # ---- reshaping -----------------------------------------------------------------

    def _gather_bags(self, bag_ids: np.ndarray, num_tables: int, batch_size: int, table_names) -> "Trace":
        bag_ids = np.asarray(bag_ids, dtype=np.int64)
        starts = self.offsets[bag_ids]
        lens = self.offsets[bag_ids + 1] - starts
        pos = _ranges(starts, lens)
        offsets = np.zeros(bag_ids.size + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        w = None if self.per_sample_weights is None else self.per_sample_weights[pos]
        return Trace(num_tables, batch_size, self.indices[pos], offsets, w, table_names)

    def rebatch(self, batch_size: int) -> "Trace":
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
            warnings.warn(f"rebatch: dropping the last {S - nb * batch_size} of {S} samples that do not fill a batch of {batch_size}")
        s = (np.arange(nb, dtype=np.int64)[:, None, None] * batch_size + np.arange(batch_size)[None, None, :])
        t = np.arange(T, dtype=np.int64)[None, :, None]
        old = ((s // B) * T + t) * B + s % B
        return self._gather_bags(old.ravel(), T, batch_size, self.table_names)

    def select_tables(self, tables: Sequence[int]) -> "Trace":
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

    def split(self, fraction: float) -> tuple["Trace", "Trace"]:
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
            return (self._gather_bags(first, T, B, self.table_names),
                    self._gather_bags(second, T, B, self.table_names))
        if B < 2:
            raise ValueError("cannot split a trace of one batch of one sample")
        k = min(B - 1, max(1, round(fraction * B)))
        g = np.arange(T, dtype=np.int64)[:, None] * B
        first = (g + np.arange(k)[None, :]).ravel()
        second = (g + np.arange(k, B)[None, :]).ravel()
        return (self._gather_bags(first, T, k, self.table_names),
                self._gather_bags(second, T, B - k, self.table_names))

    # ---- identity and persistence ----------------------------------------------------

    def hash(self) -> str:
        """Stable content hash (16 hex digits); plans store it to catch a workload mismatch.

        >>> Trace(1, 1, np.array([1]), np.array([0, 1])).hash() == Trace(1, 1, [1], [0, 1]).hash()
        True
        """
        h = hashlib.sha256()
        h.update(json.dumps([TRACE_FORMAT, TRACE_FORMAT_VERSION, self.num_tables, self.batch_size, self.table_names]).encode())
        h.update(self.indices.astype("<i8", copy=False).tobytes())
        h.update(self.offsets.astype("<i8", copy=False).tobytes())
        if self.per_sample_weights is not None:
            h.update(b"w")
            h.update(self.per_sample_weights.astype("<f4", copy=False).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | os.PathLike, *, compress: bool = False) -> Path:
        """Write the trace as ``.npz`` in TBE layout (read back with :func:`load_trace`).

        >>> import tempfile, pathlib
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
        (np.savez_compressed if compress else np.savez)(path, **arrays)
        return path

    def __repr__(self) -> str:
        return (f"Trace(num_tables={self.num_tables}, batch_size={self.batch_size}, "
                f"num_batches={self.num_batches}, num_lookups={self.num_lookups}, "
                f"weighted={self.per_sample_weights is not None})")


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------


def criteo_like_tables(*, dim: int = 64, max_rows: int | None = None,
                       row_format: RowFormat | str = RowFormat.FP32) -> list[TableSpec]:
    """The 26 Criteo Kaggle categorical tables (see ``CRITEO_KAGGLE_CARDINALITIES``).

    ``max_rows`` caps each table (as hashing the raw ids modulo a size does).

    >>> t = criteo_like_tables(dim=16, max_rows=100_000)
    >>> len(t), t[2].name, t[2].num_embeddings, t[0].num_embeddings
    (26, 'C3', 100000, 1460)
    """
    out = []
    for i, n in enumerate(CRITEO_KAGGLE_CARDINALITIES):
        rows = n if max_rows is None else min(n, int(max_rows))
        out.append(TableSpec(f"C{i + 1}", num_embeddings=rows, embedding_dim=dim, row_format=RowFormat(row_format),
                             feature_names=(f"C{i + 1}",)))
    return out


# --------------------------------------------------------------------------------------
# reuse histograms (Meta's locality statistics)
# --------------------------------------------------------------------------------------


@dataclass
class ReuseHistogram:
    """How often rows are reused: Meta's "col size" histogram.

    ``bin_edges`` are the lower edges; bin ``i`` holds rows accessed
    ``(bin_edges[i], bin_edges[i+1]]`` times (the last bin is open-ended).
    ``fraction_of_rows[i]`` is the share of accessed rows in bin ``i``;
    ``fraction_of_indices[i]`` the share of lookups that hit those rows.

    >>> h = ReuseHistogram.from_counts(np.array([1, 1, 2, 5]))
    >>> h.fraction_of_rows[:4].tolist(), h.fraction_of_indices[:4].tolist()
    ([0.5, 0.25, 0.0, 0.25], [0.2222222222222222, 0.2222222222222222, 0.0, 0.5555555555555556])
    """

    bin_edges: np.ndarray
    fraction_of_rows: np.ndarray
    fraction_of_indices: np.ndarray
    name: str = ""
    num_indices: int | None = None
    num_unique: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        self.bin_edges = np.asarray(self.bin_edges, dtype=np.int64)
        self.fraction_of_rows = np.asarray(self.fraction_of_rows, dtype=np.float64)
        self.fraction_of_indices = np.asarray(self.fraction_of_indices, dtype=np.float64)
        n = self.bin_edges.size
        if n < 1 or self.bin_edges[0] != 0 or np.any(np.diff(self.bin_edges) <= 0):
            raise ValueError(f"bin_edges must start at 0 and increase, got {self.bin_edges.tolist()}")
        if self.fraction_of_rows.shape != (n,) or self.fraction_of_indices.shape != (n,):
            raise ValueError(f"need {n} fractions per histogram (one per bin edge)")
        if np.any(self.fraction_of_rows < 0) or np.any(self.fraction_of_indices < 0):
            raise ValueError("histogram fractions must be >= 0")
        if self.fraction_of_indices.sum() <= 0:
            raise ValueError("fraction_of_indices is all zero")

    @property
    def num_bins(self) -> int:
        return int(self.bin_edges.size)

    def bin_of(self, counts: np.ndarray) -> np.ndarray:
        """Bin index of each access count (counts must be >= 1).

        >>> ReuseHistogram.from_counts(np.array([1])).bin_of(np.array([1, 2, 3, 4, 5, 10**6])).tolist()
        [0, 1, 2, 2, 3, 16]
        """
        return np.searchsorted(self.bin_edges, np.asarray(counts), side="left") - 1

    def labels(self) -> list[str]:
        """Bin labels as Meta prints them.

        >>> ReuseHistogram.from_counts(np.array([1]), bin_edges=(0, 1, 2)).labels()
        ['(0, 1]', '(1, 2]', '(2+']
        """
        e = self.bin_edges.tolist()
        return [f"({a}, {b}]" for a, b in zip(e[:-1], e[1:])] + [f"({e[-1]}+"]

    @property
    def mean_reuse(self) -> float | None:
        """Lookups per accessed row (Meta's "Avg col size"), if known.

        >>> ReuseHistogram.from_counts(np.array([1, 3])).mean_reuse
        2.0
        """
        if self.num_indices and self.num_unique:
            return self.num_indices / self.num_unique
        return None

    @classmethod
    def from_counts(cls, counts: np.ndarray, bin_edges: Sequence[int] = META_REUSE_BIN_EDGES,
                    name: str = "") -> "ReuseHistogram":
        """The histogram of per-row access counts (zeros, i.e. unused rows, are ignored).

        >>> ReuseHistogram.from_counts(np.array([0, 3, 3])).fraction_of_rows.tolist()[2]
        1.0
        """
        counts = np.asarray(counts, dtype=np.int64)
        counts = counts[counts > 0]
        edges = np.asarray(bin_edges, dtype=np.int64)
        bins = np.searchsorted(edges, counts, side="left") - 1
        rows = np.bincount(bins, minlength=edges.size).astype(np.float64)
        idx = np.bincount(bins, weights=counts, minlength=edges.size)
        n_rows, n_idx = counts.size, int(counts.sum())
        return cls(edges, rows / max(n_rows, 1), idx / max(n_idx, 1) if n_idx else np.full(edges.size, 1.0 / edges.size),
                   name=name, num_indices=n_idx, num_unique=n_rows)

    @classmethod
    def combine(cls, histograms: Sequence["ReuseHistogram"], name: str = "combined") -> "ReuseHistogram":
        """Pool several histograms, weighting rows by ``num_unique`` and lookups by ``num_indices``.

        >>> a = ReuseHistogram.from_counts(np.array([1])); b = ReuseHistogram.from_counts(np.array([2]))
        >>> ReuseHistogram.combine([a, b]).fraction_of_rows[:2].tolist()
        [0.5, 0.5]
        """
        if not histograms:
            raise ValueError("nothing to combine")
        edges = histograms[0].bin_edges
        if any(not np.array_equal(h.bin_edges, edges) for h in histograms):
            raise ValueError("histograms with different bins cannot be combined")
        wr = np.array([h.num_unique or 1 for h in histograms], dtype=np.float64)
        wi = np.array([h.num_indices or 1 for h in histograms], dtype=np.float64)
        rows = sum(w * h.fraction_of_rows for w, h in zip(wr, histograms)) / wr.sum()
        idx = sum(w * h.fraction_of_indices for w, h in zip(wi, histograms)) / wi.sum()
        known = all(h.num_indices and h.num_unique for h in histograms)
        return cls(edges, rows, idx, name=name,
                   num_indices=int(wi.sum()) if known else None, num_unique=int(wr.sum()) if known else None,
                   batch_size=histograms[0].batch_size)

    def distance(self, other: "ReuseHistogram") -> tuple[float, float]:
        """Largest absolute per-bin difference of (fraction_of_rows, fraction_of_indices).

        >>> h = ReuseHistogram.from_counts(np.array([1, 2])); h.distance(h)
        (0.0, 0.0)
        """
        if not np.array_equal(self.bin_edges, other.bin_edges):
            raise ValueError("histograms have different bins")
        return (float(np.abs(self.fraction_of_rows - other.fraction_of_rows).max()),
                float(np.abs(self.fraction_of_indices - other.fraction_of_indices).max()))

    def counts_for(self, num_lookups: int, rng: np.random.Generator) -> np.ndarray:
        """Per-row access counts (descending) summing to ``num_lookups`` that follow this histogram.

        Lookups are split over bins by ``fraction_of_indices``. The mean count within a
        bin comes from the ratio of the two histograms (reliable where the published
        row fraction is >= 0.01; elsewhere the bin's geometric centre is used, twice the
        lower edge for the open last bin). Bins that need more lookups per row than the
        trace has merge into the highest possible bin.

        >>> c = ReuseHistogram.from_counts(np.array([1] * 50 + [3] * 10)).counts_for(80, np.random.default_rng(0))
        >>> int(c.sum()), sorted(set(c.tolist()))
        (80, [1, 3])
        """
        if num_lookups <= 0:
            return np.empty(0, dtype=np.int64)
        edges = self.bin_edges
        lo = edges + 1
        hi = np.append(edges[1:], np.iinfo(np.int64).max // 4)
        g = self.fraction_of_indices / self.fraction_of_indices.sum()
        f = self.fraction_of_rows / max(self.fraction_of_rows.sum(), 1e-300)
        feasible = lo <= num_lookups
        top = int(np.flatnonzero(feasible)[-1])
        g = g.copy()
        g[top] += g[~feasible].sum()
        g[~feasible] = 0.0
        hi = np.minimum(hi, num_lookups)
        centre = np.sqrt(lo * hi.astype(np.float64))
        centre[-1] = min(2.0 * edges[-1], num_lookups) if edges.size > 1 else centre[-1]
        reliable = (f >= 0.01) & (g > 0)
        mean_all = self.mean_reuse
        if mean_all is None and reliable.any():
            # A consistent histogram has mean = 1 / sum(f_b / m_b) over all bins; with the
            # bin means unknown, take it from the reliable bins' share of lookups and rows.
            mean_all = g[reliable].sum() / f[reliable].sum() * 1.0
        means = centre.copy()
        if mean_all is not None:
            means[reliable] = g[reliable] / f[reliable] * mean_all
        means = np.clip(means, lo, np.maximum(lo, hi))
        # Split lookups over bins exactly (largest remainder).
        raw = g * num_lookups
        per_bin = np.floor(raw).astype(np.int64)
        short = num_lookups - int(per_bin.sum())
        if short:
            per_bin[np.argsort(-(raw - per_bin), kind="stable")[:short]] += 1
        chunks = []
        carry = 0
        for b in range(edges.size - 1, -1, -1):
            n_b = int(per_bin[b]) + carry
            carry = 0
            if n_b == 0:
                continue
            rows_b = max(1, int(round(n_b / means[b])), -(-n_b // int(hi[b])))
            rows_b = min(rows_b, n_b // int(lo[b])) if n_b >= lo[b] else 0
            if rows_b == 0:
                carry = n_b  # too few lookups for one row of this bin: give them to the next lower bin
                continue
            chunks.append(self._fill_bin(rows_b, n_b, int(lo[b]), int(hi[b]), rng))
        if carry:
            chunks.append(np.ones(carry, dtype=np.int64))
        counts = np.concatenate(chunks)
        return np.sort(counts)[::-1]

    @staticmethod
    def _fill_bin(rows: int, total: int, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
        """``rows`` integers in ``[lo, hi]`` summing to ``total`` (``rows*lo <= total``), spread log-uniformly."""
        hi = max(lo, min(hi, total - (rows - 1) * lo))
        if rows * hi < total:  # cannot fit: let the last row overflow (only in the open last bin)
            hi = total
        extra_total = total - rows * lo
        room = hi - lo
        if extra_total == 0 or room == 0:
            c = np.full(rows, lo, dtype=np.int64)
            c[: total - rows * lo] += 1 if room else 0
            return c
        shape = np.exp(rng.uniform(np.log(lo), np.log(hi + 1), size=rows)) - lo
        shape = shape + 1e-9
        extra = np.minimum(np.floor(shape / shape.sum() * extra_total).astype(np.int64), room)
        left = extra_total - int(extra.sum())
        while left > 0:
            free = np.flatnonzero(extra < room)
            give = min(left, free.size)
            pick = free if give == free.size else rng.choice(free, size=give, replace=False)
            step = np.minimum(room - extra[pick], max(1, left // give))
            extra[pick] += step
            left -= int(step.sum())
        return lo + extra


_HIST_LINE = re.compile(r"^\((\d+)(?:,\s*(\d+)\]|\+):\s*([0-9.eE+-]+)\s*$")


def parse_locality_stats(path: str | os.PathLike) -> list[ReuseHistogram]:
    """Read Meta's ``locality_stats.txt`` (dlrm_datasets) into one histogram per section.

    Each section names a trace file, then gives "Avg # of indices", "Avg # of unique
    cols", a "Histogram of col sizes" (share of rows) and a "Ratio of index
    distribution at different column sizes" (share of lookups), 17 bins each.

    >>> hs = parse_locality_stats(meta_locality_stats_path(2022))
    >>> len(hs), hs[0].name, float(hs[0].fraction_of_rows[0]), round(hs[0].mean_reuse, 1)
    (16, 'fbgemm_t788_bs131072_0.pt', 0.342, 12.7)
    """
    text = Path(path).read_text()
    sections: list[ReuseHistogram] = []
    cur: dict | None = None
    target = None

    def finish() -> None:
        if cur is None:
            return
        if len(cur["rows"]) != len(cur["idx"]) or not cur["rows"]:
            raise TraceError(f"{path}: section {cur['name']!r} has {len(cur['rows'])} row bins and {len(cur['idx'])} index bins")
        sections.append(ReuseHistogram(np.array(cur["edges"]), np.array(cur["rows"]), np.array(cur["idx"]),
                                       name=cur["name"], num_indices=cur.get("ni"), num_unique=cur.get("nu"),
                                       batch_size=cur.get("bs")))

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _HIST_LINE.match(line)
        if m and cur is not None and target is not None:
            cur[target].append(float(m.group(3)))
            if target == "rows":
                cur["edges"].append(int(m.group(1)))
            continue
        if line.startswith("[") or line.startswith("'"):
            continue
        if line.endswith((".pt", ".gz", ".npz")):
            finish()
            cur = {"name": line, "rows": [], "idx": [], "edges": []}
            target = None
        elif line.startswith("Locality stats"):
            if cur is None or cur["rows"]:
                finish()
                cur = {"name": f"section {len(sections)}", "rows": [], "idx": [], "edges": []}
                target = None
            bs = re.search(r"size (\d+)", line)
            if bs:
                cur["bs"] = int(bs.group(1))
        elif cur is None:
            raise TraceError(f"{path}: statistics before any section header: {raw!r}")
        elif line.startswith("Avg # of indices:"):
            cur["ni"] = int(float(line.split(":")[1]))
        elif line.startswith("Avg # of unique cols:"):
            cur["nu"] = int(float(line.split(":")[1]))
        elif line.startswith("Avg col size"):
            pass
        elif line.startswith("Histogram of col sizes"):
            target = "rows"
        elif line.startswith("Ratio of index distribution"):
            target = "idx"
        else:
            raise TraceError(f"{path}: unexpected line {raw!r}")
    finish()
    if not sections:
        raise TraceError(f"{path}: no locality statistics found")
    return sections


def meta_locality_stats_path(year: int) -> Path:
    """Path of Meta's published locality statistics for ``year`` (2021: 856 tables, 2022: 788).

    >>> meta_locality_stats_path(2021).name
    'meta_dlrm_2021_locality_stats.txt'
    """
    if year not in (2021, 2022):
        raise ValueError(f"Meta published locality statistics for 2021 and 2022, not {year}")
    name = f"meta_dlrm_{year}_locality_stats.txt"
    for d in (_DATA_DIR, Path(__file__).resolve().parents[1] / "data"):
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"{name} is not installed with updlrm (looked in {_DATA_DIR})")


# --------------------------------------------------------------------------------------
# synthetic traces
# --------------------------------------------------------------------------------------


def _draw_lengths(rng: np.random.Generator, pooling: float, n: int, distribution: str) -> np.ndarray:
    if pooling < 0:
        raise ValueError(f"pooling must be >= 0, got {pooling}")
    if pooling == 0:
        return np.zeros(n, dtype=np.int64)
    if distribution == "fixed":
        if pooling != int(pooling):
            raise ValueError(f"fixed pooling needs an integer, got {pooling}")
        return np.full(n, int(pooling), dtype=np.int64)
    if distribution == "poisson":
        return rng.poisson(pooling, size=n).astype(np.int64)
    if distribution == "uniform":
        return rng.integers(0, int(round(2 * pooling)) + 1, size=n, dtype=np.int64)
    raise ValueError(f"unknown pooling_distribution {distribution!r}; choose fixed, poisson or uniform")


def _group_topics(rng: np.random.Generator, rows: np.ndarray, bag_of: np.ndarray, num_bags: int,
                  co_occurrence: float, topic_of_row) -> np.ndarray:
    """Reorder lookups so a ``co_occurrence`` share of each bag comes from one topic group.

    Only positions are exchanged, so every row keeps its exact count. The chosen
    lookups are sorted by (topic, round, random) and dealt out, in that order, to the chosen
    slots of the bags taken in random order: consecutive slots of a bag then hold
    rows of the same topic.
    """
    n = rows.size
    chosen = np.flatnonzero(rng.random(n) < co_occurrence)
    if chosen.size < 2:
        return rows
    picked = rows[chosen]
    # Round-robin within a topic (every member once, then members with a second
    # lookup, ...) so that a run of slots holds distinct rows of the topic rather than
    # copies of its hottest row.
    by_row = np.argsort(picked, kind="stable")
    sorted_rows = picked[by_row]
    run_start = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    run_len = np.diff(np.r_[run_start, sorted_rows.size])
    occurrence = np.empty(picked.size, dtype=np.uint64)
    occurrence[by_row] = (np.arange(picked.size) - np.repeat(run_start, run_len)).astype(np.uint64)
    topic = topic_of_row(picked).astype(np.uint64)
    key = (topic << np.uint64(40)) | (np.minimum(occurrence, np.uint64((1 << 20) - 1)) << np.uint64(20)) \
        | rng.integers(0, 1 << 20, size=picked.size, dtype=np.uint64)
    stream = picked[np.argsort(key)]
    bag_rank = rng.permutation(num_bags)
    slot_order = chosen[np.argsort(bag_rank[bag_of[chosen]], kind="stable")]
    out = rows.copy()
    out[slot_order] = stream
    return out


def _redraw_repeats(rng: np.random.Generator, rows: np.ndarray, lengths: np.ndarray, num_rows: int,
                    alpha: float, perm_key: int) -> np.ndarray:
    """Make every bag hold distinct rows (bags must have <= num_rows lookups).

    Repeated entries are redrawn from the same law, revisiting only bags that still
    repeat; bags still crowded after a few rounds are drawn whole without replacement
    (Efraimidis-Spirakis: keys u^(1/p), the ``length`` largest win).
    """
    rows = rows.copy()
    num_bags = lengths.size
    starts = np.zeros(num_bags, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    dirty = np.arange(num_bags, dtype=np.int64)
    # Bags filling over a quarter of the table collide at nearly every redraw: draw them whole.
    rounds = 0 if lengths.size and lengths.mean() * 4 > num_rows else 8
    for _ in range(rounds):
        pos = _ranges(starts[dirty], lengths[dirty])
        key = np.repeat(dirty, lengths[dirty]) * num_rows + rows[pos]
        order = np.argsort(key)  # which copy of a repeat survives does not matter
        sorted_key = key[order]
        repeat = pos[order[1:][sorted_key[1:] == sorted_key[:-1]]]
        if repeat.size == 0:
            return rows
        rows[repeat] = _feistel_permute(_bounded_zipf_ranks(rng, repeat.size, num_rows, alpha), num_rows, perm_key)
        dirty = np.unique(np.searchsorted(starts, repeat, side="right") - 1)
    weights = np.arange(1, num_rows + 1, dtype=np.float64) ** -alpha
    ids = _feistel_permute(np.arange(num_rows), num_rows, perm_key)
    chunk = max(1, (1 << 23) // num_rows)
    for lo in range(0, dirty.size, chunk):
        bags = dirty[lo : lo + chunk]
        keys = np.log(rng.random((bags.size, num_rows))) / weights  # log of u^(1/p), same order
        order = np.argsort(-keys, axis=1)
        lens = lengths[bags]
        take = np.arange(num_rows)[None, :] < lens[:, None]
        rows[_ranges(starts[bags], lens)] = ids[order[take]]
    return rows


def synthetic_trace(
    tables: Sequence[TableSpec],
    *,
    batch_size: int,
    num_batches: int = 1,
    pooling: float | Sequence[float] = 32,
    alpha: float | Sequence[float] = 1.05,
    co_occurrence: float | Sequence[float] = 0.0,
    reuse_histogram: "ReuseHistogram | Sequence[ReuseHistogram] | None" = None,
    weighted: bool = False,
    seed: int = 0,
    pooling_distribution: str = "poisson",
    topic_size: int = 32,
    unique_per_bag: bool = False,
) -> Trace:
    """A deterministic synthetic trace with Zipf-skewed lookups and co-occurring rows.

    * Bag sizes: ``pooling_distribution`` around ``pooling`` (per table or scalar):
      ``poisson`` (default), ``fixed`` or ``uniform`` on ``[0, 2*pooling]``; 0 gives
      empty bags.
    * Popularity: P(rank k) proportional to k^-alpha over the table's rows, alpha
      being the Zipf exponent as in FBGEMM's ``generate_requests`` (``a`` of
      ``np.random.zipf``; FBGEMM bench utilities, ``fbgemm_gpu/bench``). Unlike
      FBGEMM, which folds the unbounded law with ``% E`` and treats alpha <= 1 as
      uniform, the law here is bounded to the table, so every alpha >= 0 is defined
      (0 = uniform). As in FBGEMM, ranks are mapped to row ids by a random
      permutation, so hot rows are scattered ids.
    * ``reuse_histogram``: instead of Zipf, per-row access counts are drawn to follow
      a :class:`ReuseHistogram` over the whole trace (see
      :meth:`ReuseHistogram.counts_for`); tables with fewer rows than the histogram
      needs fold extra rows onto existing ones (ids modulo the size).
    * ``co_occurrence`` in [0, 1]: the share of lookups moved into their row's
      "topic" group (rows are randomly grouped ``topic_size`` at a time), so that a
      bag's topic lookups come from one group; the rows' counts are unchanged.
    * ``weighted``: float32 per-sample weights uniform in [0, 1).
    * ``unique_per_bag``: no row twice in a bag, as FBGEMM's generator (it samples
      without replacement per bag); repeats are redrawn from the same law, bags are
      capped at the table size. Zipf mode only (a histogram fixes exact counts).

    Generation is vectorised (about 10^7 lookups per second) and the result depends
    only on the arguments.

    >>> from updlrm.specs import TableSpec
    >>> tr = synthetic_trace([TableSpec("t", 100, 8)], batch_size=3, pooling=2, seed=7, pooling_distribution="fixed")
    >>> tr.offsets.tolist(), tr.hash() == synthetic_trace([TableSpec("t", 100, 8)], batch_size=3, pooling=2,
    ...     seed=7, pooling_distribution="fixed").hash()
    ([0, 2, 4, 6], True)
    """
    tables = list(tables)
    if not tables:
        raise ValueError("synthetic_trace needs at least one table")
    if batch_size < 1 or num_batches < 1:
        raise ValueError(f"batch_size and num_batches must be >= 1, got {batch_size}, {num_batches}")
    if topic_size < 1:
        raise ValueError(f"topic_size must be >= 1, got {topic_size}")
    T, B, nb = len(tables), int(batch_size), int(num_batches)
    poolings = _per_table(pooling, T, "pooling")
    alphas = _per_table(alpha, T, "alpha")
    cos = _per_table(co_occurrence, T, "co_occurrence")
    hists = _per_table(reuse_histogram, T, "reuse_histogram") if not isinstance(reuse_histogram, ReuseHistogram) \
        else [reuse_histogram] * T
    for t in range(T):
        if not 0.0 <= float(cos[t]) <= 1.0:
            raise ValueError(f"co_occurrence must be in [0, 1], got {cos[t]} for table {tables[t].name}")
        if float(alphas[t]) < 0:
            raise ValueError(f"alpha must be >= 0, got {alphas[t]} for table {tables[t].name}")

    if unique_per_bag and any(h is not None for h in hists):
        raise ValueError("unique_per_bag needs Zipf mode: a reuse histogram fixes every row's count")
    root = np.random.SeedSequence(seed)
    table_seeds = root.spawn(T)
    per_table_rows: list[np.ndarray] = []
    lens = np.empty((T, nb * B), dtype=np.int64)
    for t, spec in enumerate(tables):
        rng = np.random.default_rng(table_seeds[t])
        E = spec.num_embeddings
        perm_key, topic_key = (int(k) for k in rng.integers(0, 1 << 62, size=2))
        lens[t] = _draw_lengths(rng, float(poolings[t]), nb * B, pooling_distribution)
        if unique_per_bag:
            np.minimum(lens[t], E, out=lens[t])
        n = int(lens[t].sum())
        if hists[t] is not None:
            counts = hists[t].counts_for(n, rng)
            ranks = np.arange(counts.size, dtype=np.int64) % E
            rows = np.repeat(_feistel_permute(ranks, E, perm_key), counts)
            rows = rows[rng.permutation(rows.size)]
        else:
            rows = _feistel_permute(_bounded_zipf_ranks(rng, n, E, float(alphas[t])), E, perm_key)
        if float(cos[t]) > 0 and n:
            bag_of = np.repeat(np.arange(nb * B, dtype=np.int64), lens[t])
            rows = _group_topics(rng, rows, bag_of, nb * B, float(cos[t]),
                                 lambda r, E=E, k=topic_key: _feistel_permute(r, E, k) // topic_size)
        if unique_per_bag and n:
            rows = _redraw_repeats(rng, rows, lens[t], E, float(alphas[t]), perm_key)
        per_table_rows.append(rows)

    # Interleave the table-major streams into the batch-major TBE layout.
    seg = lens.reshape(T, nb, B).sum(axis=2)  # lookups of (table, batch)
    src_start = np.concatenate(([0], np.cumsum(seg.ravel())[:-1])).reshape(T, nb)
    dst_len = seg.T.ravel()  # batch-major order (i, t)
    dst_start = np.concatenate(([0], np.cumsum(dst_len)[:-1])).reshape(nb, T).T
    stream = np.concatenate(per_table_rows) if per_table_rows else np.empty(0, np.int64)
    seg_id = np.repeat(np.arange(T * nb, dtype=np.int64), seg.ravel())
    shift = (dst_start - src_start).ravel()
    indices = np.empty_like(stream)
    indices[np.arange(stream.size, dtype=np.int64) + shift[seg_id]] = stream
    offsets = np.zeros(nb * T * B + 1, dtype=np.int64)
    np.cumsum(lens.reshape(T, nb, B).transpose(1, 0, 2).ravel(), out=offsets[1:])
    weights = None
    if weighted:
        weights = np.random.default_rng(root.spawn(1)[0]).random(indices.size, dtype=np.float32)
    return Trace(T, B, indices, offsets, weights, [s.name for s in tables])


# --------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _load_npz(path: Path) -> Trace:
    with np.load(path, allow_pickle=False) as z:
        if "format" not in z or str(z["format"]) != TRACE_FORMAT:
            raise TraceError(f"{path}: not an updlrm trace (.npz without format={TRACE_FORMAT!r})")
        if int(z["version"]) != TRACE_FORMAT_VERSION:
            raise TraceError(f"{path}: trace format version {int(z['version'])}, this updlrm reads {TRACE_FORMAT_VERSION}")
        return Trace(int(z["num_tables"]), int(z["batch_size"]), z["indices"], z["offsets"],
                     z["per_sample_weights"] if "per_sample_weights" in z else None,
                     [str(s) for s in z["table_names"]] if "table_names" in z else None)


def _load_meta_pt(path: Path) -> Trace:
    import torch

    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if gzipped:
        with gzip.open(path, "rb") as f:
            data = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    else:
        # Meta's files hold ~10^9 indices: map them instead of reading a copy. Files in
        # torch's pre-1.6 (non-zip) format cannot be mapped and are read normally.
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise TraceError(f"{path}: expected (indices, offsets, lengths) as in Meta's dlrm_datasets, got {type(data).__name__}")
    indices = np.asarray(data[0].numpy(), dtype=np.int64).ravel()
    offsets = np.asarray(data[1].numpy(), dtype=np.int64).ravel()
    if len(data) == 3:
        lengths = data[2].numpy()
        if lengths.ndim != 2:
            raise TraceError(f"{path}: lengths must have shape (T, B), got {tuple(lengths.shape)}")
        T, B = (int(x) for x in lengths.shape)
        if offsets.size != T * B + 1:
            raise TraceError(f"{path}: offsets has {offsets.size} entries, lengths says T*B+1 = {T * B + 1}")
        if not np.array_equal(np.diff(offsets), lengths.ravel().astype(np.int64)):
            raise TraceError(f"{path}: lengths disagree with the offsets")
    else:
        raise TraceError(f"{path}: a (indices, offsets) pair does not say how many tables it has; "
                         "save (indices, offsets, lengths[T, B]) as Meta's dlrm_datasets do")
    # Meta's offsets may start at a non-zero base when cut from a larger file.
    offsets = offsets - offsets[0]
    indices = indices[: int(offsets[-1])] if indices.size > offsets[-1] else indices
    return Trace(T, B, indices, offsets)


CRITEO_NUM_DENSE = 13
CRITEO_NUM_SPARSE = 26


def read_criteo_tsv(path: str | os.PathLike, sizes: Sequence[int] | np.ndarray,
                    max_samples: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a Criteo Kaggle/Terabyte TSV file (optionally gzipped) column by column.

    Each line is ``label``, 13 integer dense fields and 26 hexadecimal categorical
    fields, tab-separated; empty fields are missing values. Returns ``(labels (n,)
    int64, dense (n, 13) float32, categorical (26, n) int64)``: dense values as the
    reference DLRM preprocesses them (``log(1 + max(x, 0))``, missing = 0;
    facebookresearch/dlrm, data_utils.py), categorical ids modulo ``sizes[j]``
    (missing = 0, as torchrec's Criteo reader).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "day.txt"
    >>> _ = f.write_text("1\\t3" + "\\t" * 13 + "\\t".join(["1f"] * 26) + "\\n")
    >>> y, dense, cat = read_criteo_tsv(f, [10] * 26)
    >>> int(y[0]), round(float(dense[0, 0]), 4), float(dense[0, 1]), int(cat[0, 0])
    (1, 1.3863, 0.0, 1)
    """
    path = Path(path)
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size != CRITEO_NUM_SPARSE:
        raise TraceError(f"Criteo has 26 categorical features; got {sizes.size} table sizes")
    labels: list[int] = []
    dense: list[list[int]] = []
    cols: list[list[int]] = [[] for _ in range(CRITEO_NUM_SPARSE)]
    with _open_maybe_gzip(path) as f:
        try:
            for lineno, raw in enumerate(io.TextIOWrapper(f, encoding="ascii", errors="strict"), start=1):
                fields = raw.rstrip("\r\n").split("\t")
                if len(fields) != 1 + CRITEO_NUM_DENSE + CRITEO_NUM_SPARSE:
                    raise TraceError(f"{path}:{lineno}: expected 40 tab-separated fields (label, 13 dense, 26 "
                                     f"categorical), got {len(fields)}")
                try:
                    labels.append(int(fields[0] or "0"))
                    dense.append([int(x or "0") for x in fields[1:14]])
                except ValueError:
                    raise TraceError(f"{path}:{lineno}: label and dense features must be integers") from None
                try:
                    # Missing categorical values read as "0", as in torchrec's Criteo reader.
                    for j in range(CRITEO_NUM_SPARSE):
                        cols[j].append(int(fields[14 + j] or "0", 16))
                except ValueError:
                    raise TraceError(f"{path}:{lineno}: categorical features must be hexadecimal") from None
                if max_samples is not None and len(labels) >= max_samples:
                    break
        except UnicodeDecodeError:
            raise TraceError(f"{path}: not a Criteo TSV (non-ASCII bytes near line {len(labels) + 1}); traces are "
                             ".npz, Meta .pt or Criteo TSV") from None
    if not labels:
        raise TraceError(f"{path}: no samples")
    dense_arr = np.log1p(np.maximum(np.array(dense, dtype=np.float64), 0.0)).astype(np.float32)
    cats = np.array(cols, dtype=np.int64) % sizes[:, None]  # (26, n), table-major = TBE order
    return np.array(labels, dtype=np.int64), dense_arr, cats


def _load_criteo_tsv(path: Path, tables: Sequence[TableSpec], max_samples: int | None) -> Trace:
    _, _, ids = read_criteo_tsv(path, [t.num_embeddings for t in tables], max_samples)
    n = ids.shape[1]
    return Trace(26, n, ids.ravel(), np.arange(26 * n + 1, dtype=np.int64), table_names=[t.name for t in tables])


def load_trace(
    path: str | os.PathLike,
    *,
    tables: Sequence[int] | Sequence[TableSpec] | None = None,
    batch_size: int | None = None,
    max_samples: int | None = None,
) -> Trace:
    """Read a trace: our ``.npz``, Meta's ``dlrm_datasets`` ``.pt``/``.pt.gz``, or Criteo TSV.

    * ``.npz``: written by :meth:`Trace.save`.
    * ``.pt`` (optionally gzipped): ``torch.save((indices, offsets, lengths))`` with
      ``offsets[T*B+1]`` table-major and ``lengths`` of shape ``(T, B)``, one batch per
      file (facebookresearch/dlrm_datasets README; FBGEMM's
      ``generate_requests_from_data_file`` reads it the same way).
    * anything else (``.txt``, ``.tsv``, ``.gz``): Criteo TSV, ``label``, 13 dense,
      26 hexadecimal categorical fields; each categorical value is taken modulo its
      table's size (``tables`` given as specs, else :func:`criteo_like_tables`), one
      lookup per table per sample; ``max_samples`` stops early.

    ``tables`` as integers selects those tables; as :class:`TableSpec` it names them
    and bounds-checks the indices. ``batch_size`` regroups the samples
    (:meth:`Trace.rebatch`).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "day.txt").write_text("1\\t" + "\\t" * 13 + "\\t".join(["1f"] * 26) + "\\n")
    >>> tr = load_trace(d / "day.txt")
    >>> tr.num_tables, tr.batch_size, int(tr.indices[0]), int(tr.indices[8])
    (26, 1, 31, 1)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trace file at {path}")
    specs = [t for t in tables] if tables is not None and all(isinstance(t, TableSpec) for t in tables) else None
    selection = None if tables is None or specs is not None else [int(t) for t in tables]
    name = path.name.lower()
    if name.endswith(".npz"):
        trace = _load_npz(path)
    elif name.endswith((".pt", ".pt.gz", ".pth")):
        trace = _load_meta_pt(path)
    else:
        trace = _load_criteo_tsv(path, specs or criteo_like_tables(), max_samples)
    if selection is not None:
        trace = trace.select_tables(selection)
    if specs is not None:
        if len(specs) != trace.num_tables:
            raise TraceError(f"{path}: {trace.num_tables} tables in the trace, {len(specs)} table specs given")
        for t, spec in enumerate(specs):
            rows, _ = trace.table_lookups(t)
            if rows.size and rows.max() >= spec.num_embeddings:
                raise TraceError(f"{path}: table {spec.name} has {spec.num_embeddings} rows but the trace looks up row {int(rows.max())}")
        trace.table_names = [s.name for s in specs]
    if batch_size is not None and batch_size != trace.batch_size:
        trace = trace.rebatch(batch_size)
    return trace


__all__ = [
    "CRITEO_KAGGLE_CARDINALITIES",
    "CRITEO_NUM_DENSE",
    "CRITEO_NUM_SPARSE",
    "META_REUSE_BIN_EDGES",
    "ReuseHistogram",
    "Trace",
    "TraceError",
    "criteo_like_tables",
    "load_trace",
    "meta_locality_stats_path",
    "parse_locality_stats",
    "read_criteo_tsv",
    "synthetic_trace",
]
