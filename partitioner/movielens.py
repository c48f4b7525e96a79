"""MovieLens-100K interactions as a lookup trace, for judging plans on real traffic split by users.

The GroupLens ratings ship inside the ``recbole`` wheel on PyPI
(``recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}``, RecBole's atomic files:
a ``name:type`` header, tab-separated rows).  :func:`fetch_recbole_wheel` downloads the
wheel once with ``pip download recbole --no-deps`` into ``~/.cache/updlrm/datasets``
(``UPDLRM_CACHE_DIR`` overrides); nothing is committed.  :func:`movielens_trace` turns
the ratings of a set of users into a :class:`~updlrm.partitioner.workloads.Trace` over
four tables: ``user_id``, ``item_id``, ``occupation`` (one lookup a sample) and
``genres`` (every genre of the movie, 1..6 lookups), samples in time order.

Example (needs the wheel; skipped when the registry is unreachable)::

    wheel, reason = fetch_recbole_wheel()
    tables, trace = movielens_trace(wheel, users="even", batch_size=256)
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from updlrm.partitioner.workloads import Trace
from updlrm.specs import TableSpec

__all__ = ["RECBOLE", "fetch_recbole_wheel", "movielens_trace"]

RECBOLE = "recbole==1.2.1"
_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"


def _cache_dir() -> Path:
    root = os.environ.get("UPDLRM_CACHE_DIR") or os.path.join(Path.home(), ".cache", "updlrm")
    return Path(root) / "datasets"


def fetch_recbole_wheel() -> tuple[Path | None, str]:
    """The cached recbole wheel, downloading it first if needed; ``(None, reason)`` when that fails."""
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("recbole-1.2.1-*.whl"))
    if wheels:
        return wheels[0], ""
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                RECBOLE,
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                str(folder),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"pip download {RECBOLE} failed: {exc}"
    wheels = sorted(folder.glob("recbole-1.2.1-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"pip download {RECBOLE} failed (registry unreachable?): {last}"
    return wheels[0], ""


def _atomic(zf: zipfile.ZipFile, suffix: str) -> tuple[dict[str, int], list[list[str]]]:
    lines = zf.read(f"{_PREFIX}.{suffix}").decode("utf-8").rstrip("\n").split("\n")
    header = {h.split(":")[0]: i for i, h in enumerate(lines[0].split("\t"))}
    return header, [line.split("\t") for line in lines[1:]]


def movielens_trace(
    wheel: Path, *, users: str = "all", batch_size: int = 256, dim: int = 16
) -> tuple[list[TableSpec], Trace]:
    """Tables and the time-ordered trace of the ratings of ``users``: ``all``, ``even`` or ``odd`` user ids.

    Every table has a row per value in the *whole* data set (both halves index the same
    tables); the trace is cut into whole batches of ``batch_size`` (the last, partial
    batch is dropped).
    """
    if users not in ("all", "even", "odd"):
        raise ValueError(f"users must be all, even or odd, got {users!r}")
    with zipfile.ZipFile(wheel) as zf:
        ic, inter = _atomic(zf, "inter")
        uc, user_rows = _atomic(zf, "user")
        tc, item_rows = _atomic(zf, "item")
    occupation = {r[0]: r[uc["occupation"]] for r in user_rows}
    genres = {r[0]: (r[tc["class"]].split() if len(r) > tc["class"] else []) for r in item_rows}
    uid = np.array([int(r[ic["user_id"]]) for r in inter])
    iid = np.array([int(r[ic["item_id"]]) for r in inter])
    ts = np.array([int(float(r[ic["timestamp"]])) for r in inter])
    occ_names = sorted(set(occupation.values()))
    genre_names = sorted({g for gl in genres.values() for g in gl})
    occ_code = {o: i for i, o in enumerate(occ_names)}
    genre_code = {g: i for i, g in enumerate(genre_names)}
    keep = np.ones(uid.size, dtype=bool) if users == "all" else (uid % 2 == (0 if users == "even" else 1))
    order = np.flatnonzero(keep)[np.argsort(ts[keep], kind="stable")]
    n = order.size // batch_size * batch_size
    order = order[:n]
    tables = [
        TableSpec("user_id", int(uid.max()) + 1, dim),
        TableSpec("item_id", int(iid.max()) + 1, dim),
        TableSpec("occupation", len(occ_names), dim),
        TableSpec("genres", len(genre_names), dim),
    ]
    per_table_rows = [uid[order], iid[order], np.array([occ_code[occupation[str(u)]] for u in uid[order]])]
    per_table_len = [np.ones(n, dtype=np.int64)] * 3
    g_lists = [[genre_code[g] for g in genres.get(str(i), [])] or [0] for i in iid[order]]
    per_table_rows.append(np.array([g for gl in g_lists for g in gl], dtype=np.int64))
    per_table_len.append(np.array([len(gl) for gl in g_lists], dtype=np.int64))
    # Trace layout: per batch, per table, the batch's bags (FBGEMM's T*B+1 offsets).
    nb = n // batch_size
    idx_parts, lengths = [], []
    starts = [np.concatenate([[0], np.cumsum(ln)]) for ln in per_table_len]
    for b in range(nb):
        lo, hi = b * batch_size, (b + 1) * batch_size
        for t in range(len(tables)):
            idx_parts.append(per_table_rows[t][starts[t][lo] : starts[t][hi]])
            lengths.append(per_table_len[t][lo:hi])
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    return tables, Trace(len(tables), batch_size, np.concatenate(idx_parts).astype(np.int64), offsets)
