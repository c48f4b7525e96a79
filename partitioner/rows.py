"""Stage 3 of the planner: the rows of each table, cut into its layout's row parts.

Rows heavier than 5% of a part are replicated on every part (each replica serves an
even share of the bags, see :mod:`.routing`).  The hot rows' co-occurrence hypergraph
is partitioned into ``k`` blocks with Mt-KaHyPar (km1 = bag fan-out) under per-block
load budgets (or METIS on the clique expansion, or frequency-only LPT); the remaining
accessed rows fill every part up to the same expected load, then single moves and swaps
of rows between the heaviest and the lightest parts even out what the partitioners leave
(:func:`rebalance`); unaccessed rows fill MRAM evenly.  Tables too large for explicit
row lists are cut into load-balanced contiguous ``range`` parts (hot rows replicated on
extra parts), so 100M-row plans stay small.  :func:`partition_rows` runs the stage for
one table and returns its :class:`TableRows`.

Example:
    >>> from updlrm.partitioner.expected_loads import table_workloads
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8)]
    >>> tr = synthetic_trace(tables, batch_size=64, pooling=4, seed=1)
    >>> wl = table_workloads(tables, tr)[0]
    >>> opts = RowOptions(hot_fraction=0.9, max_hot_rows=1000, graph="none", replicate=True, epsilon=0.03, seed=0)
    >>> rows = partition_rows(wl, tr, 4, 0, opts, row_capacity=1000, explicit_row_limit=1 << 21, max_extra=0)
    >>> len(rows.parts), sum(len(p.rows) for p in rows.parts) >= 1000, rows.partitioner
    (4, True, 'frequency')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from updlrm.partitioner.expected_loads import TableWorkload
from updlrm.partitioner.graphpart import frequency_partition, graph_partition, hypergraph_partition
from updlrm.partitioner.stats import cooccurrence_graph, cooccurrence_hypergraph
from updlrm.partitioner.workloads import Trace
from updlrm.plan import column_bounds
from updlrm.specs import TableSpec, padded_row_bytes

__all__ = [
    "REPLICATE_ABOVE_PART_SHARE",
    "REPLICATE_EVERYWHERE_ABOVE_PART_SHARE",
    "RowOptions",
    "RowPart",
    "TableRows",
    "partition_rows",
    "rebalance",
    "row_capacity",
]

# A row of a range-stored table heavier than this share of its part's expected load is
# replicated on extra parts: cut points and LPT balance well only with items small next
# to a block.
REPLICATE_ABOVE_PART_SHARE = 0.25
# Tables stored as explicit row lists put a row heavier than this share of a part on
# every part: the rows left on one part each are then items of at most 5% of a part,
# which the partitioners and the move/swap pass pack to within the 5% imbalance goal.
REPLICATE_EVERYWHERE_ABOVE_PART_SHARE = 0.05


@dataclass(frozen=True)
class RowOptions:
    """How :func:`partition_rows` treats hot rows (see :func:`~updlrm.partitioner.placement.build_plan`).

    ``graph``: ``hypergraph`` (Mt-KaHyPar), ``graph``/``auto`` (METIS) or ``none``
    (frequency-only LPT) for the hot rows; ``replicate``: whether heavy rows may be
    replicated.
    """

    hot_fraction: float
    max_hot_rows: int
    graph: str
    replicate: bool
    epsilon: float
    seed: int


@dataclass
class RowPart:
    """The rows one part of a table holds: a contiguous range or an explicit sorted array."""

    rows: range | np.ndarray


def _fill_by_cumulative(values: np.ndarray, deficits: np.ndarray) -> np.ndarray:
    """Deal consecutive items to blocks so that block ``j`` receives about ``deficits[j]`` of ``values``.

    >>> _fill_by_cumulative(np.ones(6), np.array([1.0, 2.0, 3.0])).tolist()
    [0, 1, 1, 2, 2, 2]
    """
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if values.sum() <= 0:
        # Weightless items (no expected traffic) only take MRAM: deal them by count.
        values = np.ones_like(values, dtype=np.float64)
    deficits = np.maximum(deficits, 0)
    if deficits.sum() <= 0:
        deficits = np.ones_like(deficits)
    cuts = np.cumsum(deficits) / deficits.sum() * values.sum()
    mid = np.cumsum(values) - values / 2
    return np.minimum(np.searchsorted(cuts, mid, side="right"), len(deficits) - 1).astype(np.int64)


def _replicas(load: np.ndarray, target: float, parts: int) -> np.ndarray:
    if parts <= 1 or target <= 0:
        return np.ones(load.size, dtype=np.int64)
    return np.clip(np.ceil(load / (REPLICATE_ABOVE_PART_SHARE * target)), 1, parts).astype(np.int64)


def _place_replicas(load: np.ndarray, copies: np.ndarray, part_load: np.ndarray) -> list[np.ndarray]:
    """Each replicated row onto its ``copies`` least-loaded parts; returns the parts per row."""
    out = []
    for w, r in zip(load, copies):
        chosen = np.argpartition(part_load, r - 1)[:r] if r < part_load.size else np.arange(part_load.size)
        part_load[chosen] += w / r
        out.append(np.sort(chosen))
    return out


def _best_transfer(
    src_items: np.ndarray,
    src_share: np.ndarray,
    dst_items: np.ndarray,
    dst_share: np.ndarray,
    gap: float,
    allow_move: bool = True,
) -> tuple[float, int, int]:
    """The move (one item ``src -> dst``) or swap whose load change ``d`` lies in ``(0, gap)`` closest to ``gap/2``.

    Returns ``(d, src_item, dst_item)`` with ``dst_item = -1`` for a move; ``d = 0`` if none helps.
    Moving ``d`` of load from a part ``gap`` above another lowers the pair's maximum
    exactly when ``0 < d < gap``, the most at ``d = gap / 2``.

    >>> _best_transfer(np.array([0, 1]), np.array([5.0, 4.0]), np.array([2]), np.array([2.0]), 6.0)  # swap 5, 2
    (3.0, 0, 2)
    >>> _best_transfer(np.array([0, 1]), np.array([5.0, 3.0]), np.array([2]), np.array([2.0]), 6.0)  # move 3
    (3.0, 1, -1)
    """
    best = (0.0, -1, -1)
    half = gap / 2

    def consider(d: float, a: int, b: int) -> None:
        nonlocal best
        if 0 < d < gap and (best[0] == 0 or abs(d - half) < abs(best[0] - half)):
            best = (float(d), int(a), int(b))

    if allow_move and src_items.size:
        order = np.argsort(src_share, kind="stable")
        ss = src_share[order]
        for j in np.searchsorted(ss, half) + np.array([-1, 0]):
            if 0 <= j < ss.size:
                consider(ss[j], src_items[order[j]], -1)
    if src_items.size and dst_items.size:
        order = np.argsort(dst_share, kind="stable")
        ds = dst_share[order]
        # For every source item a, the destination item b with a - b nearest gap/2.
        pos = np.searchsorted(ds, src_share - half)
        for j in (pos - 1, pos):
            ok = np.flatnonzero((j >= 0) & (j < ds.size))
            d = src_share[ok] - ds[j[ok]]
            useful = np.flatnonzero((d > 0) & (d < gap))
            if useful.size:
                k = useful[np.argmin(np.abs(d[useful] - half))]
                consider(d[k], src_items[ok[k]], dst_items[order[j[ok[k]]]])
    return best


def rebalance(
    item_row: np.ndarray,
    item_part: np.ndarray,
    item_share: np.ndarray,
    parts: int,
    room: np.ndarray,
    tolerance: float = 1e-3,
) -> np.ndarray:
    """Moves and swaps of items between parts until the heaviest part cannot get lighter; returns new parts.

    An item is a row (or one replica of a row, carrying its share of the row's load);
    two replicas of a row never share a part, and a part gains items only while it has
    ``room`` (rows of MRAM) left.  The partitioners balance well only with items small next
    to a part: with few heavy rows (small tables, replicas of hot rows) METIS's epsilon
    constraint and LPT leave parts several items apart, and with one part per DPU
    that spread is the DPUs' imbalance.  Each round takes the heaviest part and, over the
    lightest parts, the single move or swap that lowers the pair's maximum the most.

    >>> # Loads 10 and 2: moving the 4 evens them out.
    >>> rebalance(np.arange(4), np.array([0, 0, 1, 1]), np.array([6.0, 4, 1, 1]), 2, np.full(2, 9)).tolist()
    [0, 1, 1, 1]
    >>> # Loads 7 and 5, no move helps: swapping the 4 for the 3 gives 6 and 6.
    >>> rebalance(np.arange(4), np.array([0, 0, 1, 1]), np.array([4.0, 3, 3, 2]), 2, np.full(2, 9)).tolist()
    [1, 0, 0, 1]
    """
    item_part = item_part.copy()
    if parts < 2 or item_row.size == 0:
        return item_part
    load = np.bincount(item_part, weights=item_share, minlength=parts)
    room = room.astype(np.int64).copy()
    mean = float(load.mean())
    # Each round lowers the heaviest part (or a tie of it); a few rounds per part suffice.
    for _ in range(4 * parts + 64):
        src = int(np.argmax(load))
        if load[src] <= mean * (1 + tolerance):
            break
        in_src = np.flatnonzero(item_part == src)
        best_peak, best = float(load[src]), None
        # The lightest parts: the gap, and so the room for a good transfer, is largest there.
        for dst in np.argsort(load, kind="stable")[: min(parts - 1, 8)].tolist():
            gap = float(load[src] - load[dst])
            if gap <= 0:
                break
            in_dst = np.flatnonzero(item_part == dst)
            movable = in_src[~np.isin(item_row[in_src], item_row[in_dst])]
            back = in_dst[~np.isin(item_row[in_dst], item_row[in_src])]
            d, a, b = _best_transfer(
                movable, item_share[movable], back, item_share[back], gap, allow_move=room[dst] > 0
            )
            peak = max(load[src] - d, load[dst] + d)
            if d > 0 and peak < best_peak:
                best_peak, best = peak, (a, b, dst)
        if best is None:
            break
        a, b, dst = best
        item_part[a] = dst
        load[src] -= item_share[a]
        load[dst] += item_share[a]
        if b >= 0:
            item_part[b] = src
            load[dst] -= item_share[b]
            load[src] += item_share[b]
        else:
            room[dst] -= 1
            room[src] += 1
    return item_part


def _explicit_parts(
    wl: TableWorkload, trace: Trace, parts: int, cached: int, opts: RowOptions, row_capacity: int
) -> tuple[list[RowPart], dict[str, Any]]:
    spec = wl.spec
    # Traffic of rows the trace could not rank falls, as far as it can tell, on any row
    # alike: every row carries an even share of it on top of its own estimate, so rows
    # seen too rarely to be ranked are dealt by count rather than piled up as weightless.
    diffuse = wl.unranked / spec.num_embeddings
    rows, load = wl.rows[cached:], wl.load[cached:] + diffuse
    target = (float(load.sum()) + diffuse * (spec.num_embeddings - wl.rows.size)) / parts
    part_load = np.zeros(parts)
    # A heavy row goes on every part, not on just enough parts to cut it to a quarter of
    # one: shares of load/r on r < parts parts are items as coarse as the row's share, and
    # a small table made of such items leaves its parts an item apart whatever the
    # packing.  On every part, each replica serves the bags b = p (mod parts) (the
    # routing rule), so the parts get even shares and a bag's heavy rows meet on one DPU.
    heavy_rows = np.zeros(load.size, dtype=bool)
    if opts.replicate and parts > 1:
        heavy_rows[: max(wl.reliable - cached, 0)] = True
        heavy_rows &= load > REPLICATE_EVERYWHERE_ABOVE_PART_SHARE * target
    heavy = np.flatnonzero(heavy_rows)
    part_load += float(load[heavy].sum()) / parts
    rest = np.flatnonzero(~heavy_rows)
    rest_rows, rest_load = rows[rest], load[rest]
    # Hot set: the fewest remaining rows holding `hot_fraction` of the remaining load.
    covered = np.cumsum(rest_load)
    n_hot = int(np.searchsorted(covered, opts.hot_fraction * covered[-1])) + 1 if rest.size else 0
    # Rows seen once carry no co-occurrence evidence worth partitioning on.
    n_hot = min(n_hot, opts.max_hot_rows, int((rest < max(wl.repeated - cached, 0)).sum()))
    hot_rows, hot_load = rest_rows[:n_hot], rest_load[:n_hot]
    deficits = np.maximum(target - part_load, 0)
    method = "frequency"
    if parts > 1 and n_hot:
        budget = deficits * (hot_load.sum() / max(deficits.sum(), 1e-300)) * (1 + opts.epsilon)
        assignment = None
        if opts.graph == "hypergraph" and n_hot > parts:
            hg = cooccurrence_hypergraph(trace, wl.table, hot_rows)
            if hg.num_edges:
                assignment = hypergraph_partition(
                    hg.num_vertices,
                    hg.eptr,
                    hg.eind,
                    hg.edge_weights,
                    hot_load,
                    budget,
                    epsilon=opts.epsilon,
                    seed=opts.seed,
                )
                method = "mtkahypar"
        if assignment is None and opts.graph in ("auto", "graph") and n_hot > parts:
            adjacency = cooccurrence_graph(trace, wl.table, hot_rows, seed=opts.seed)
            if adjacency.nnz:
                assignment = graph_partition(adjacency, hot_load, budget, epsilon=opts.epsilon, seed=opts.seed)
                method = "metis"
        if assignment is None:
            assignment = frequency_partition(hot_load, budget)
    else:
        assignment = np.zeros(n_hot, dtype=np.int64)
    np.add.at(part_load, assignment, hot_load)
    # Cold accessed rows top every part up to the common target, in row-id order.
    cold_rows, cold_load = rest_rows[n_hot:], rest_load[n_hot:]
    order = np.argsort(cold_rows)
    cold_rows, cold_load = cold_rows[order], cold_load[order]
    cold_part = _fill_by_cumulative(cold_load, target - part_load)
    np.add.at(part_load, cold_part, cold_load)
    # Rows never looked up (and not host-cached) carry only the diffuse share: even them out by count.
    held = np.zeros(spec.num_embeddings, dtype=bool)
    held[wl.rows] = True
    unseen = np.flatnonzero(~held)
    counts = np.full(parts, float(heavy.size))
    np.add.at(counts, assignment, 1)
    np.add.at(counts, cold_part, 1)
    room = np.maximum(row_capacity - counts, 0)
    even = np.maximum((counts.sum() + unseen.size) / parts - counts, 0)
    unseen_part = _fill_by_cumulative(
        np.ones(unseen.size), np.minimum(even, room) if np.minimum(even, room).sum() >= unseen.size else room
    )
    # The rows on one part each, rebalanced so that no part is left items above the others
    # (the replicated rows load every part alike).
    item_row = np.concatenate([hot_rows, cold_rows]).astype(np.int64)
    item_part = np.concatenate([assignment, cold_part]).astype(np.int64)
    np.add.at(counts, unseen_part, 1)
    item_part = rebalance(item_row, item_part, np.concatenate([hot_load, cold_load]), parts, row_capacity - counts)
    out = []
    for p in range(parts):
        chunks = [rows[heavy], item_row[item_part == p], unseen[unseen_part == p]]
        out.append(RowPart(np.sort(np.concatenate(chunks)).astype(np.int64)))
    info = {
        "partitioner": method,
        "hot_rows": int(n_hot),
        "replicated_rows": int(heavy.size),
        "max_replicas": parts if heavy.size else 1,
    }
    return out, info


def _range_parts(
    wl: TableWorkload, parts: int, cached: int, opts: RowOptions, row_capacity: int, max_extra: int
) -> tuple[list[RowPart], dict[str, Any]]:
    n = wl.spec.num_embeddings
    diffuse = wl.unranked / n  # see _explicit_parts
    rows, load = wl.rows[cached:], wl.load[cached:] + diffuse
    target = float(load.sum()) / parts
    copies = _replicas(load, target, parts) if opts.replicate else np.ones(load.size, dtype=np.int64)
    copies[max(wl.reliable - cached, 0) :] = 1
    copies = np.minimum(copies, max_extra + 1)
    extra = int(copies.max()) - 1 if copies.size else 0
    # The home range keeps 1/r of a replicated row's load; cut points balance that load,
    # blended with row count so that no range outgrows MRAM.
    order = np.argsort(rows)
    srows, sload = rows[order], (load / copies)[order]
    total = float(sload.sum()) + diffuse * (n - srows.size)
    cuts = [0]
    for j in range(1, parts):
        want = j / parts
        # Find x with 0.9*load_share(x) + 0.1*row_share(x) = want by bisection on rows.
        lo, hi = cuts[-1], n
        while lo < hi:
            mid = (lo + hi) // 2
            below = float(sload[: np.searchsorted(srows, mid)].sum()) + diffuse * (mid - np.searchsorted(srows, mid))
            share = 0.9 * (below / total if total else mid / n) + 0.1 * mid / n
            if share < want:
                lo = mid + 1
            else:
                hi = mid
        cuts.append(max(lo, cuts[-1]))
    cuts.append(n)
    out: list[RowPart] = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        for start in range(a, b, max(row_capacity, 1)):
            out.append(RowPart(range(start, min(b, start + row_capacity))))
    if extra:
        extra_load = np.zeros(extra)
        members: list[list[int]] = [[] for _ in range(extra)]
        heavy = np.flatnonzero(copies > 1)
        for row, chosen in zip(rows[heavy], _place_replicas(load[heavy], copies[heavy] - 1, extra_load)):
            for p in chosen:
                members[p].append(int(row))
        out.extend(RowPart(np.array(sorted(m), dtype=np.int64)) for m in members if m)
    info = {
        "partitioner": "ranges",
        "hot_rows": 0,
        "replicated_rows": int((copies > 1).sum()),
        "max_replicas": int(copies.max()) if copies.size else 1,
    }
    return out, info


@dataclass
class TableRows:
    """One table's row parts (none empty) and how they were made (recorded in ``plan.metadata``)."""

    parts: list[RowPart]
    partitioner: str
    hot_rows: int
    replicated_rows: int
    max_replicas: int

    def info(self) -> dict[str, str | int]:
        """The JSON-ready record of how the rows were partitioned."""
        return {
            "partitioner": self.partitioner,
            "hot_rows": self.hot_rows,
            "replicated_rows": self.replicated_rows,
            "max_replicas": self.max_replicas,
        }


def row_capacity(spec: TableSpec, slices: int, capacity: int) -> int:
    """Rows of ``spec`` cut into ``slices`` column slices that fit ``capacity`` bytes of MRAM (at least 1).

    >>> row_capacity(TableSpec("a", 10, 8), 2, 100)
    6
    """
    bounds = column_bounds(spec, slices)
    return max(
        1, capacity // max(padded_row_bytes(hi - lo, spec.row_format) for lo, hi in zip(bounds[:-1], bounds[1:]))
    )


def partition_rows(
    wl: TableWorkload,
    trace: Trace,
    parts: int,
    cached: int,
    opts: RowOptions,
    *,
    row_capacity: int,
    explicit_row_limit: int,
    max_extra: int,
) -> TableRows:
    """The rows of ``wl``'s table left after its top ``cached`` rows go to the host, cut into ``parts`` parts.

    Tables of at most ``explicit_row_limit`` rows get explicit row lists, larger ones
    contiguous ranges (with up to ``max_extra`` extra parts of replicated hot rows).  A
    part holds at most ``row_capacity`` rows; parts left empty (every row host-cached, or
    fewer rows than parts) are dropped: they need no DPU.
    """
    if wl.spec.num_embeddings <= explicit_row_limit:
        out, info = _explicit_parts(wl, trace, parts, cached, opts, row_capacity)
    else:
        out, info = _range_parts(wl, parts, cached, opts, row_capacity, max_extra=max_extra)
    return TableRows([part for part in out if len(part.rows)], **info)
