"""Stage 2c of the planner: cost levels, the layout search's two ways of evening out the DPUs.

Both bring every table's parts down to one modeled cost level: :func:`cached_for_level`
host-caches the fewest hottest rows of each table that reach the level, and
:func:`level_replicas` holds each replicable table's group of shards the fewest times that
reach it (any count, where the search's candidates try powers of two).
:class:`~.search.LayoutSearch` scores the levels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from updlrm.partitioner.expected_loads import TableWorkload

if TYPE_CHECKING:
    from updlrm.partitioner.search import LayoutSearch, TableShape

__all__ = ["LEVEL_STEPS_PER_HALVING", "cached_for_level", "level_replicas", "replicas_for_level"]

# Levels per halving of the part cost tried when replica counts are levelled.
LEVEL_STEPS_PER_HALVING = 32


def replicas_for_level(search: LayoutSearch, t: int, s: TableShape, cached: int, level: float) -> int:
    """Fewest replicas of table ``t``'s parts x slices whose parts cost at most ``level``; the most allowed if none does."""
    most = max(1, min(search.n // (s.parts * s.slices), search.max_replicas))

    def cost(r: int) -> float:
        return search.shape(t, s.parts, s.slices, cached, r).part_cost

    if cost(most) > level:
        return most
    low, high = 1, most
    while low < high:
        middle = (low + high) // 2
        if cost(middle) <= level:
            high = middle
        else:
            low = middle + 1
    return low


def level_replicas(
    search: LayoutSearch, shapes: list[TableShape], cached: np.ndarray, best: float
) -> tuple[list[TableShape], float]:
    """Replica counts that bring every replicable table's parts down to one cost level.

    The candidates hold a group ``r`` times only for powers of two (and the most that
    fit), so tables whose loads differ by less than 2x end up with parts up to 2x apart
    in cost, and the slowest sets the batch's pace.  Here any count is allowed: each
    table whose shape may be replicated (keeping its parts and slices) gets the fewest
    replicas that bring its parts to the level.  The level falls from the costliest
    part's in steps of ``2 ** (-1 / LEVEL_STEPS_PER_HALVING)`` until the layout no
    longer fits, each level scored by :meth:`~.search.LayoutSearch.score`; then the DPUs
    the best level leaves over go, one replica at a time, to the table with the costliest
    parts while the score improves.  Returns the best shapes and score, unchanged if nothing beats
    ``best``.
    """
    movable = [
        t
        for t, s in enumerate(shapes)
        if not s.on_host and (s.replicas > 1 or (s.parts, s.slices, 2) in search.candidates[t])
    ]
    if not movable:
        return shapes, best
    top = max(shapes[t].part_cost for t in movable)
    out = shapes
    # Lower levels take more replicas; the scan stops at the first that does not fit.
    for i in range(LEVEL_STEPS_PER_HALVING * 16):
        level = top * 2 ** (-i / LEVEL_STEPS_PER_HALVING)
        trial = list(shapes)
        for t in movable:
            s = shapes[t]
            r = replicas_for_level(search, t, s, int(cached[t]), level)
            trial[t] = search.shape(t, s.parts, s.slices, int(cached[t]), r)
        total = search.score(trial, cached)
        if math.isinf(total):
            break
        if total < best * (1 - 1e-9):
            best, out = total, trial
    # A level's step moves several tables at once and leaves DPUs over: they go one
    # replica at a time to the table with the costliest parts while that pays.
    while True:
        t = max(movable, key=lambda t: out[t].part_cost)
        s = out[t]
        trial = list(out)
        trial[t] = search.shape(t, s.parts, s.slices, int(cached[t]), s.replicas + 1)
        if s.replicas + 1 > search.max_replicas or trial[t].dpus > search.n:
            break
        total = search.score(trial, cached)
        if not total < best * (1 - 1e-9):
            break
        best, out = total, trial
    return out, best


def cached_for_level(
    wls: list[TableWorkload], shapes: list[TableShape], level: float, host_cache_bytes: int
) -> np.ndarray | None:
    """Per table, the fewest hottest rows to host-cache so that its parts cost at most ``level`` seconds.

    A part's cost is taken as proportional to its lookups (the per-lookup cost of the
    table's current shape).  ``None`` when the rows exceed ``host_cache_bytes``.
    """
    cached = np.zeros(len(wls), dtype=np.int64)
    nbytes = 0
    for t, (wl, s) in enumerate(zip(wls, shapes)):
        if s.on_host or s.part_lookups <= 0:
            continue
        allowed = level / (s.part_cost / s.part_lookups) * s.parts * s.replicas
        # suffix[h] = DPU lookups left when the top h rows are cached (non-increasing in h).
        suffix = np.r_[np.cumsum(wl.load[::-1])[::-1], 0.0] + wl.unranked
        cached[t] = min(int(np.searchsorted(-suffix, -allowed, side="left")), wl.rows.size)
        nbytes += int(cached[t]) * wl.spec.row_bytes()
    return cached if nbytes <= host_cache_bytes else None
