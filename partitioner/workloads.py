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
import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from updlrm.partitioner.reuse import (
    META_REUSE_BIN_EDGES,
    ReuseHistogram,
    meta_locality_stats_path,
    parse_locality_stats,
)
from updlrm.partitioner.synthetic import synthetic_trace
from updlrm.partitioner.trace import TRACE_FORMAT, TRACE_FORMAT_VERSION, Trace, TraceError
from updlrm.specs import RowFormat, TableSpec

# The trace, its generator and the reuse histograms live in their own modules
# (trace, synthetic, reuse); this module gathers them with the loaders.
__all__ = [
    "CRITEO_KAGGLE_CARDINALITIES",
    "META_REUSE_BIN_EDGES",
    "TRACE_FORMAT",
    "TRACE_FORMAT_VERSION",
    "ReuseHistogram",
    "Trace",
    "TraceError",
    "criteo_like_tables",
    "load_trace",
    "meta_locality_stats_path",
    "parse_locality_stats",
    "synthetic_trace",
]

# The 26 categorical cardinalities of the Criteo Kaggle Display Advertising Challenge
# training set (train.txt, 45,840,617 samples), as produced by the reference DLRM
# preprocessing (facebookresearch/dlrm, data_utils.py; the same list is the default
# ``--arch-embedding-size`` in its Kaggle scripts).
CRITEO_KAGGLE_CARDINALITIES = (
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
)


def criteo_like_tables(
    *, dim: int = 64, max_rows: int | None = None, row_format: RowFormat | str = RowFormat.FP32
) -> list[TableSpec]:
    """The 26 Criteo Kaggle categorical tables (see ``CRITEO_KAGGLE_CARDINALITIES``).

    ``max_rows`` caps each table (as hashing the raw ids modulo a size does).

    >>> t = criteo_like_tables(dim=16, max_rows=100_000)
    >>> len(t), t[2].name, t[2].num_embeddings, t[0].num_embeddings
    (26, 'C3', 100000, 1460)
    """
    out = []
    for i, n in enumerate(CRITEO_KAGGLE_CARDINALITIES):
        rows = n if max_rows is None else min(n, int(max_rows))
        out.append(
            TableSpec(
                f"C{i + 1}",
                num_embeddings=rows,
                embedding_dim=dim,
                row_format=RowFormat(row_format),
                feature_names=(f"C{i + 1}",),
            )
        )
    return out


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _load_npz(path: Path) -> Trace:
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, OSError) and e.filename:
            raise
        raise TraceError(f"{path}: not an .npz archive (updlrm traces are written by Trace.save)") from None
    with z:
        if "format" not in z or str(z["format"]) != TRACE_FORMAT:
            raise TraceError(f"{path}: not an updlrm trace (.npz without format={TRACE_FORMAT!r})")
        if int(z["version"]) != TRACE_FORMAT_VERSION:
            raise TraceError(
                f"{path}: trace format version {int(z['version'])}, this updlrm reads {TRACE_FORMAT_VERSION}"
            )
        return Trace(
            int(z["num_tables"]),
            int(z["batch_size"]),
            z["indices"],
            z["offsets"],
            z.get("per_sample_weights"),
            [str(s) for s in z["table_names"]] if "table_names" in z else None,
        )


def _load_meta_pt(path: Path) -> Trace:
    try:
        data = _torch_load(path)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        if isinstance(e, OSError) and e.filename:
            raise
        raise TraceError(
            f"{path}: not a torch file of tensors (Meta dlrm_datasets .pt: (indices, offsets, "
            f"lengths)); {type(e).__name__}"
        ) from None
    return _check_meta_pt(path, data)


def _torch_load(path: Path):
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
    return data


def _check_meta_pt(path: Path, data) -> Trace:
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise TraceError(
            f"{path}: expected (indices, offsets, lengths) as in Meta's dlrm_datasets, got {type(data).__name__}"
        )
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
        raise TraceError(
            f"{path}: a (indices, offsets) pair does not say how many tables it has; "
            "save (indices, offsets, lengths[T, B]) as Meta's dlrm_datasets do"
        )
    # Meta's offsets may start at a non-zero base when cut from a larger file.
    offsets = offsets - offsets[0]
    indices = indices[: int(offsets[-1])] if indices.size > offsets[-1] else indices
    return Trace(T, B, indices, offsets)


CRITEO_NUM_DENSE = 13
CRITEO_NUM_SPARSE = 26


def read_criteo_tsv(
    path: str | os.PathLike, sizes: Sequence[int] | np.ndarray, max_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
                    raise TraceError(
                        f"{path}:{lineno}: expected 40 tab-separated fields (label, 13 dense, 26 "
                        f"categorical), got {len(fields)}"
                    )
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
            raise TraceError(
                f"{path}: not a Criteo TSV (non-ASCII bytes near line {len(labels) + 1}); traces are "
                ".npz, Meta .pt or Criteo TSV"
            ) from None
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
    specs = (
        [t for t in tables if isinstance(t, TableSpec)]
        if tables is not None and all(isinstance(t, TableSpec) for t in tables)
        else None
    )
    selection = None if tables is None or specs is not None else [int(cast(int, t)) for t in tables]
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
                raise TraceError(
                    f"{path}: table {spec.name} has {spec.num_embeddings} rows but the trace looks up row {int(rows.max())}"
                )
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
