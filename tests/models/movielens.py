"""MovieLens-100K (GroupLens) as shipped inside the ``recbole`` wheel on PyPI, for DLRM tests.

The wheel (``recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}``, RecBole's
atomic-file format: a header of ``name:type`` fields, tab-separated rows) is fetched
with ``pip download`` into a cache folder at test time and never committed. When the
registry cannot be reached the caller skips with the reason.

Features for DLRM, one sample per rating:

* label: rating >= 4;
* dense (4): age / 100, (release year - 1900) / 100 (0 when unknown), hour of day / 24,
  day of week / 7 (from the rating's Unix timestamp, UTC);
* sparse (7): ``user_id``, ``item_id``, ``gender``, ``occupation``, ``zip3`` (first
  three zip characters), ``year`` (release year as a category), ``genres`` (every genre
  of the movie: a bag of 1..6 lookups).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from updlrm.partitioner.movielens import RECBOLE, fetch_recbole_wheel  # noqa: F401  (one download, one cache)

WHEEL_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
SPARSE = ("user_id", "item_id", "gender", "occupation", "zip3", "year", "genres")


def _atomic(zf: zipfile.ZipFile, suffix: str) -> tuple[list[str], list[list[str]]]:
    text = zf.read(f"{WHEEL_PREFIX}.{suffix}").decode("utf-8")
    lines = text.rstrip("\n").split("\n")
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    return header, [line.split("\t") for line in lines[1:]]


def _codes(tokens) -> tuple[np.ndarray, int]:
    uniq, inverse = np.unique(np.asarray(tokens, dtype=str), return_inverse=True)
    return inverse.astype(np.int64), int(uniq.size)


@dataclass
class MovieLens:
    labels: np.ndarray  # (N,)
    dense: np.ndarray  # (N, 4) float32
    sparse: dict  # feature -> (values int64, lengths int64 (N,))
    cardinality: dict  # feature -> rows of its table
    num_users: int
    num_items: int


def load_movielens(wheel: Path) -> MovieLens:
    with zipfile.ZipFile(wheel) as zf:
        ih, inter = _atomic(zf, "inter")
        uh, users = _atomic(zf, "user")
        th, items = _atomic(zf, "item")
    col = {n: i for i, n in enumerate(ih)}
    user_of = {row[0]: row for row in users}
    item_of = {row[0]: row for row in items}
    ucol, tcol = {n: i for i, n in enumerate(uh)}, {n: i for i, n in enumerate(th)}
    uid = [r[col["user_id"]] for r in inter]
    iid = [r[col["item_id"]] for r in inter]
    rating = np.array([float(r[col["rating"]]) for r in inter])
    ts = np.array([int(float(r[col["timestamp"]])) for r in inter], dtype=np.int64)
    urow = [user_of[u] for u in uid]
    irow = [item_of[i] for i in iid]
    age = np.array([float(r[ucol["age"]]) for r in urow])
    year_tok = [r[tcol["release_year"]] if len(r) > tcol["release_year"] else "" for r in irow]
    # A few movies have no release year ("" or RecBole's "unkonwn" [sic]).
    year = np.array([float(y) if y.strip().isdigit() else 1900.0 for y in year_tok])
    dense = np.stack([age / 100, (year - 1900) / 100, (ts // 3600 % 24) / 24, ((ts // 86400 + 4) % 7) / 7], axis=1)
    sparse, card = {}, {}
    n = len(inter)
    ones = np.ones(n, dtype=np.int64)
    for name, tokens in (
        ("user_id", uid),
        ("item_id", iid),
        ("gender", [r[ucol["gender"]] for r in urow]),
        ("occupation", [r[ucol["occupation"]] for r in urow]),
        ("zip3", [r[ucol["zip_code"]][:3] for r in urow]),
        ("year", year_tok),
    ):
        codes, k = _codes(tokens)
        sparse[name], card[name] = (codes, ones), k
    genre_lists = [(r[tcol["class"]].split() if len(r) > tcol["class"] else []) for r in irow]
    codes, k = _codes([g for gl in genre_lists for g in gl])
    sparse["genres"], card["genres"] = (codes, np.array([len(gl) for gl in genre_lists], dtype=np.int64)), k
    return MovieLens(
        labels=(rating >= 4).astype(np.int64),
        dense=dense.astype(np.float32),
        sparse=sparse,
        cardinality=card,
        num_users=len(set(uid)),
        num_items=len(set(iid)),
    )
