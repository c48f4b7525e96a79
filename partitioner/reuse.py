"""Reuse histograms: how often rows are looked up, as Meta published for its production traces.

:class:`ReuseHistogram` is Meta's "col size" histogram; :func:`parse_locality_stats`
reads ``meta_dlrm_20{21,22}_locality_stats.txt`` (MIT, from Meta's ``dlrm_datasets``,
shipped with updlrm: :func:`meta_locality_stats_path`).

Example:
    >>> h = ReuseHistogram.from_counts(np.array([1, 1, 2, 5]))
    >>> h.mean_reuse
    2.25
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from updlrm.partitioner.trace import TraceError

__all__ = ["META_REUSE_BIN_EDGES", "ReuseHistogram", "meta_locality_stats_path", "parse_locality_stats"]

# Lower edges of the "col size" bins of Meta's locality statistics: bin i holds rows
# accessed (edges[i], edges[i+1]] times, the last bin (32768, inf). Source:
# facebookresearch/dlrm_datasets, embedding_bag/locality_stats.txt.
META_REUSE_BIN_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

_DATA_DIR = Path(__file__).resolve().parent / "data"


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
    def from_counts(
        cls, counts: np.ndarray, bin_edges: Sequence[int] = META_REUSE_BIN_EDGES, name: str = ""
    ) -> ReuseHistogram:
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
        return cls(
            edges,
            rows / max(n_rows, 1),
            idx / max(n_idx, 1) if n_idx else np.full(edges.size, 1.0 / edges.size),
            name=name,
            num_indices=n_idx,
            num_unique=n_rows,
        )

    @classmethod
    def combine(cls, histograms: Sequence[ReuseHistogram], name: str = "combined") -> ReuseHistogram:
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
        return cls(
            edges,
            rows,
            idx,
            name=name,
            num_indices=int(wi.sum()) if known else None,
            num_unique=int(wr.sum()) if known else None,
            batch_size=histograms[0].batch_size,
        )

    def distance(self, other: ReuseHistogram) -> tuple[float, float]:
        """Largest absolute per-bin difference of (fraction_of_rows, fraction_of_indices).

        >>> h = ReuseHistogram.from_counts(np.array([1, 2])); h.distance(h)
        (0.0, 0.0)
        """
        if not np.array_equal(self.bin_edges, other.bin_edges):
            raise ValueError("histograms have different bins")
        return (
            float(np.abs(self.fraction_of_rows - other.fraction_of_rows).max()),
            float(np.abs(self.fraction_of_indices - other.fraction_of_indices).max()),
        )

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
            raise TraceError(
                f"{path}: section {cur['name']!r} has {len(cur['rows'])} row bins and {len(cur['idx'])} index bins"
            )
        sections.append(
            ReuseHistogram(
                np.array(cur["edges"]),
                np.array(cur["rows"]),
                np.array(cur["idx"]),
                name=cur["name"],
                num_indices=cur.get("ni"),
                num_unique=cur.get("nu"),
                batch_size=cur.get("bs"),
            )
        )

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
        if line.startswith(("[", "'")):
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
