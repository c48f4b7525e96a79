"""Request files for ``updlrm serve``: one sample = dense features + one bag per feature.

:class:`RequestSet` keeps every sample in memory in key-major jagged form (bag ``(f, n)``
is feature ``f`` of sample ``n``), so any set of sample ids becomes a batch with one
vectorised gather: ``dense[ids]`` and a ``KeyedJaggedTensor`` (torchrec's key-major
lengths). Files:

* Criteo TSV (``.txt``/``.tsv``, optionally gzipped): label, 13 dense, 26 categorical
  features ``C1..C26`` (read by :func:`updlrm.partitioner.workloads.read_criteo_tsv`);
* a TBE ``.npz`` trace (:meth:`updlrm.partitioner.workloads.Trace.save`): no dense
  features, features named after the trace's tables;
* a KJT ``.pt``: ``torch.save({"keys": [...], "values": ..., "lengths": ...(key-major),
  "weights": optional, "dense": optional (N, D), "labels": optional (N,)})``, written by
  :func:`save_kjt_requests`.

Example:
    >>> import tempfile, pathlib
    >>> f = write_synthetic_criteo(pathlib.Path(tempfile.mkdtemp()) / "c.tsv", 8, seed=0)
    >>> rs = load_requests(f, max_rows=1000)
    >>> rs
    RequestSet(8 samples, 26 features, 13 dense, 208 lookups, from c.tsv)
    >>> dense, kjt = rs.batch([3, 5])
    >>> tuple(dense.shape), kjt.keys()[:2], kjt.lengths().tolist()[:3]
    ((2, 13), ['C1', 'C2'], [1, 1, 1])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from updlrm.partitioner.ranges import concat_ranges
from updlrm.partitioner.workloads import (
    CRITEO_KAGGLE_CARDINALITIES,
    CRITEO_NUM_DENSE,
    CRITEO_NUM_SPARSE,
    TraceError,
    load_trace,
    read_criteo_tsv,
)

__all__ = [
    "RequestSet",
    "RequestError",
    "load_requests",
    "save_kjt_requests",
    "write_synthetic_criteo",
    "criteo_feature_names",
]


class RequestError(ValueError):
    """A request file that cannot be served as given; the message says what to fix."""


def criteo_feature_names() -> list[str]:
    """``C1..C26``, the categorical features of Criteo (and the tables they feed)."""
    return [f"C{i + 1}" for i in range(CRITEO_NUM_SPARSE)]


@dataclass
class RequestSet:
    """Samples in key-major jagged form: ``offsets[f*N + n] .. offsets[f*N + n + 1]`` is the bag.

    ``dense`` is ``(N, D)`` float32 or None; ``labels`` ``(N,)`` or None; ``weights``
    per lookup or None. :meth:`batch` gathers any samples into ``(dense, kjt)``.
    """

    keys: list[str]
    values: np.ndarray
    offsets: np.ndarray
    dense: np.ndarray | None = None
    labels: np.ndarray | None = None
    weights: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.values = np.ascontiguousarray(self.values, dtype=np.int64)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        F = len(self.keys)
        if F == 0 or (self.offsets.size - 1) % F or self.offsets.size < 2:
            raise RequestError(f"{self.source}: {self.offsets.size - 1} bags do not split into {F} features")
        if len(set(self.keys)) != F:
            raise RequestError(f"{self.source}: feature keys repeat: {self.keys}")
        if self.offsets[0] != 0 or self.offsets[-1] != self.values.size or np.any(np.diff(self.offsets) < 0):
            raise RequestError(f"{self.source}: bag lengths must be >= 0 and add up to the {self.values.size} values")
        if self.values.size and self.values.min() < 0:
            raise RequestError(f"{self.source}: negative index {int(self.values.min())}")
        n = self.num_samples
        if self.dense is not None:
            self.dense = np.ascontiguousarray(self.dense, dtype=np.float32)
            if self.dense.ndim != 2 or self.dense.shape[0] != n:
                raise RequestError(f"{self.source}: dense features of shape {self.dense.shape} for {n} samples")
        if self.labels is not None and np.asarray(self.labels).shape != (n,):
            raise RequestError(f"{self.source}: {np.asarray(self.labels).shape} labels for {n} samples")
        if self.weights is not None:
            self.weights = np.ascontiguousarray(self.weights, dtype=np.float32)
            if self.weights.shape != self.values.shape:
                raise RequestError(f"{self.source}: {self.weights.size} weights for {self.values.size} values")

    @property
    def num_samples(self) -> int:
        return (self.offsets.size - 1) // len(self.keys)

    @property
    def num_dense(self) -> int:
        return 0 if self.dense is None else int(self.dense.shape[1])

    def max_index(self) -> dict[str, int]:
        """Largest row id looked up per feature (-1 for a feature never looked up)."""
        N = self.num_samples
        out = {}
        for f, key in enumerate(self.keys):
            lo, hi = int(self.offsets[f * N]), int(self.offsets[(f + 1) * N])
            out[key] = int(self.values[lo:hi].max()) if hi > lo else -1
        return out

    def lookups_per_sample(self) -> float:
        return self.values.size / max(1, self.num_samples)

    def batch(self, ids: Sequence[int] | np.ndarray) -> tuple[torch.Tensor | None, object]:
        """``(dense (b, D) or None, KeyedJaggedTensor)`` of samples ``ids`` in that order."""
        from updlrm import KeyedJaggedTensor

        ids = np.asarray(ids, dtype=np.int64)
        N, F = self.num_samples, len(self.keys)
        bags = (np.arange(F, dtype=np.int64)[:, None] * N + ids[None, :]).ravel()
        starts = self.offsets[bags]
        lengths = self.offsets[bags + 1] - starts
        gather = concat_ranges(starts, lengths)
        weights = None if self.weights is None else torch.from_numpy(self.weights[gather])
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(self.keys),
            values=torch.from_numpy(self.values[gather]),
            lengths=torch.from_numpy(lengths),
            weights=weights,
        )
        dense = None if self.dense is None else torch.from_numpy(self.dense[ids])
        return dense, kjt

    def __repr__(self) -> str:
        return (
            f"RequestSet({self.num_samples:,} samples, {len(self.keys)} features, {self.num_dense} dense, "
            f"{self.values.size:,} lookups, from {Path(self.source).name or '?'})"
        )


# ------------------------------------------------------------------------------ loaders


def _from_criteo(
    path: Path, table_rows: dict[str, int] | None, max_rows: int | None, max_samples: int | None
) -> RequestSet:
    keys = criteo_feature_names()
    cap = max_rows or max(CRITEO_KAGGLE_CARDINALITIES)
    sizes = [int((table_rows or {}).get(k, min(CRITEO_KAGGLE_CARDINALITIES[i], cap))) for i, k in enumerate(keys)]
    labels, dense, cats = read_criteo_tsv(path, sizes, max_samples)
    n = labels.size
    return RequestSet(
        keys, cats.ravel(), np.arange(CRITEO_NUM_SPARSE * n + 1, dtype=np.int64), dense, labels, source=str(path)
    )


def _from_npz(path: Path) -> RequestSet:
    tr = load_trace(path)
    T, B, nb = tr.num_tables, tr.batch_size, tr.num_batches
    N = nb * B
    n = np.arange(N, dtype=np.int64)
    t = np.arange(T, dtype=np.int64)[:, None]
    g = (((n // B)[None, :] * T + t) * B + (n % B)[None, :]).ravel()  # key-major bag -> trace bag
    starts = tr.offsets[g]
    lengths = tr.offsets[g + 1] - starts
    gather = concat_ranges(starts, lengths)
    offsets = np.zeros(T * N + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    w = None if tr.per_sample_weights is None else tr.per_sample_weights[gather]
    keys = tr.table_names or [f"t{i}" for i in range(T)]
    return RequestSet(list(keys), tr.indices[gather], offsets, None, None, w, source=str(path))


def _from_kjt_pt(path: Path) -> RequestSet:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file it cannot read
        raise RequestError(f"{path}: not a torch file of KJT requests ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not {"keys", "values", "lengths"} <= set(data):
        raise RequestError(
            f"{path}: expected torch.save({{'keys', 'values', 'lengths', ['weights', 'dense', "
            f"'labels']}}) as save_kjt_requests writes"
        )

    def arr(name):
        x = data.get(name)
        return None if x is None else (x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x))

    keys = [str(k) for k in data["keys"]]
    lengths = arr("lengths").astype(np.int64).ravel()
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if np.any(lengths < 0):
        raise RequestError(f"{path}: negative lengths")
    return RequestSet(
        keys, arr("values").ravel(), offsets, arr("dense"), arr("labels"), arr("weights"), source=str(path)
    )


def load_requests(
    path: str | os.PathLike,
    *,
    table_rows: dict[str, int] | None = None,
    max_rows: int | None = None,
    max_samples: int | None = None,
) -> RequestSet:
    """Read a request file (Criteo TSV, TBE ``.npz`` trace or KJT ``.pt``; see the module doc).

    ``table_rows`` maps Criteo features to their tables' sizes (categorical ids are
    taken modulo them); features it lacks get the Criteo Kaggle cardinality, capped at
    ``max_rows`` (as hashing raw ids into smaller tables does). ``max_samples``
    stops a Criteo file early. Raises :class:`RequestError` (or ``FileNotFoundError``)
    with one line that says what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no request file at {path}")
    name = path.name.lower()
    try:
        if name.endswith(".npz"):
            try:
                rs = _from_npz(path)
            except (OSError, ValueError, KeyError) as exc:
                if isinstance(exc, TraceError):
                    raise
                raise RequestError(f"{path}: not a TBE .npz trace ({exc})") from None
        elif name.endswith((".pt", ".pth")):
            rs = _from_kjt_pt(path)
        else:
            rs = _from_criteo(path, table_rows, max_rows, max_samples)
    except TraceError as exc:
        raise RequestError(str(exc)) from None
    if max_samples is not None and rs.num_samples > max_samples:
        rs = _take(rs, np.arange(max_samples))
    return rs


def _take(rs: RequestSet, ids: np.ndarray) -> RequestSet:
    dense, kjt = rs.batch(ids)
    lengths = kjt.lengths().numpy().astype(np.int64)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    w = kjt.weights_or_none()
    return RequestSet(
        rs.keys,
        kjt.values().numpy(),
        offsets,
        None if dense is None else dense.numpy(),
        None if rs.labels is None else np.asarray(rs.labels)[ids],
        None if w is None else w.numpy(),
        source=rs.source,
    )


def save_kjt_requests(path: str | os.PathLike, kjt, dense=None, labels=None) -> Path:
    """Write requests as a KJT ``.pt`` file (``kjt``: a KeyedJaggedTensor of all samples).

    >>> import tempfile, pathlib, updlrm
    >>> kjt = updlrm.KeyedJaggedTensor.from_lengths_sync(["a"], torch.tensor([4, 5]), torch.tensor([2, 0]))
    >>> f = save_kjt_requests(pathlib.Path(tempfile.mkdtemp()) / "r.pt", kjt)
    >>> load_requests(f).batch([0])[1].values().tolist()
    [4, 5]
    """
    path = Path(path)
    data = {"keys": list(kjt.keys()), "values": kjt.values(), "lengths": kjt.lengths()}
    if kjt.weights_or_none() is not None:
        data["weights"] = kjt.weights_or_none()
    if dense is not None:
        data["dense"] = torch.as_tensor(dense, dtype=torch.float32)
    if labels is not None:
        data["labels"] = torch.as_tensor(labels)
    torch.save(data, path)
    return path


def write_synthetic_criteo(
    path: str | os.PathLike,
    num_samples: int,
    *,
    seed: int = 0,
    alpha: float = 1.05,
    vocab: int = 1_000_000,
    missing: float = 0.05,
) -> Path:
    """Write ``num_samples`` lines of Criteo-format TSV with Criteo-like statistics.

    Labels are 1 with probability 0.25 (Criteo Kaggle's click rate is ~0.26);
    dense features are non-negative integer counts (geometric with per-column means
    of 1..1000); each categorical feature draws Zipf(``alpha``)-skewed ids over
    ``min(cardinality, vocab)`` values, scattered over 32-bit hex ids; a fraction
    ``missing`` of the fields is empty. Deterministic for a seed.

    >>> import tempfile, pathlib
    >>> f = write_synthetic_criteo(pathlib.Path(tempfile.mkdtemp()) / "c.tsv", 3, seed=1)
    >>> [len(line.split("\\t")) for line in f.read_text().splitlines()]
    [40, 40, 40]
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    n = int(num_samples)
    labels = (rng.random(n) < 0.25).astype(np.int64)
    means = np.logspace(0, 3, CRITEO_NUM_DENSE)
    dense = rng.geometric(1.0 / (1.0 + means)[None, :], size=(n, CRITEO_NUM_DENSE)) - 1
    cats = np.empty((CRITEO_NUM_SPARSE, n), dtype=np.int64)
    for j, card in enumerate(CRITEO_KAGGLE_CARDINALITIES):
        values = min(card, vocab)
        ranks = np.arange(1, values + 1, dtype=np.float64)
        p = ranks**-alpha
        cats[j] = rng.choice(values, size=n, p=p / p.sum())
    # Scatter ranks over 32-bit ids (an odd multiplier is a bijection modulo 2**32).
    hashed = (cats * 2654435761 + np.arange(CRITEO_NUM_SPARSE)[:, None] * 40503) % (1 << 32)
    dense_missing = rng.random((n, CRITEO_NUM_DENSE)) < missing
    cat_missing = rng.random((CRITEO_NUM_SPARSE, n)) < missing
    with open(path, "w", encoding="ascii") as f:
        for i in range(n):
            d = ["" if dense_missing[i, k] else str(dense[i, k]) for k in range(CRITEO_NUM_DENSE)]
            c = ["" if cat_missing[j, i] else f"{hashed[j, i]:08x}" for j in range(CRITEO_NUM_SPARSE)]
            f.write("\t".join([str(labels[i])] + d + c) + "\n")
    return path
