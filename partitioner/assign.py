"""Stage 4 of the planner: row parts onto DPUs (torchrec's partitioner).

Parts go to DPUs by longest-processing-time first, each onto the DPU with the least
modeled time so far (kernel plus its share of the transfers) that has MRAM left and
holds no other part of the same table (:func:`assign_dpus`).  When that order does
not pack the parts into MRAM (small parts taken first can leave every DPU too little
room for a big one), they are placed again in the order the layout search packed them
when it checked that the layout fits: table by table, each table's parts together onto
the cheapest DPUs with room (the trace's part costs interleave the tables where the
search's identical parts do not).  Only when that fails too are they placed biggest first
(first-fit decreasing, the classic bin-packing order).

Example:
    >>> from updlrm import perfmodel
    >>> from updlrm.partitioner.cost import CostModel
    >>> from updlrm.partitioner.expected_loads import table_workloads
    >>> from updlrm.partitioner.search import TableShape
    >>> tables = [TableSpec("a", 4, 4)]
    >>> tr = Trace(1, 2, np.array([0, 1, 2, 3]), np.array([0, 2, 4]))
    >>> wls = table_workloads(tables, tr)
    >>> model = CostModel(tables, perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=2), 2, False, 16, [4.0])
    >>> parts = [[RowPart(range(0, 2)), RowPart(range(2, 4))]]
    >>> shards = assign_dpus(tables, wls, parts, [TableShape(2, 1)], {}, model, 2, 1 << 20, tr)
    >>> sorted((s.dpu, s.rows) for s in shards)
    [(0, range(0, 2)), (1, range(2, 4))]
"""

from __future__ import annotations

import numpy as np

from updlrm.partitioner.cost import CostModel
from updlrm.partitioner.expected_loads import TableWorkload
from updlrm.partitioner.routing import SliceRouter, host_mask
from updlrm.partitioner.rows import RowPart
from updlrm.partitioner.search import TableShape
from updlrm.partitioner.workloads import Trace
from updlrm.plan import Plan, PlanError, Shard, column_bounds, format_bytes
from updlrm.specs import TableSpec, Topology, padded_row_bytes

__all__ = ["assign_dpus", "part_traffic"]


def assign_dpus(
    tables: list[TableSpec],
    wls: list[TableWorkload],
    parts_by_table: list[list[RowPart]],
    shapes: list[TableShape],
    host_rows: dict[int, np.ndarray],
    model: CostModel,
    n: int,
    capacity: int,
    trace: Trace,
) -> list[Shard]:
    """Longest-processing-time first: each part onto the cheapest DPU with room and no part of its table.

    Every row part of table ``t`` becomes one shard per column slice and replica of
    ``shapes[t]`` (the replicas of a part are listed in replica order, so that sample
    ``b`` meets replica ``b mod r`` of every part: one group of DPUs per bag);
    a shard's cost is what :meth:`~updlrm.partitioner.cost.CostModel.part_cost` gives for
    the lookups and bags the trace routes to its part (:func:`part_traffic`).  Raises
    :class:`~updlrm.plan.PlanError` naming the table when a shard fits on no DPU.
    """
    items = []  # (cost, table, part, replica, first column, end column, MRAM bytes)
    for t, parts in enumerate(parts_by_table):
        spec = tables[t]
        replicas = shapes[t].replicas
        lookups, touched = part_traffic(wls[t], parts, host_rows.get(t), trace)
        lookups, touched = lookups / replicas, touched / replicas
        bounds = column_bounds(spec, shapes[t].slices)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rb = padded_row_bytes(hi - lo, spec.row_format)
            out_b = model.partial_bytes(t, hi - lo)
            idx = model.index_bytes(lookups, touched)
            cost = model.part_cost(
                lookups, np.full(len(parts), rb), idx, touched * out_b, lookups * (hi - lo) * model.elem_factor[t]
            )
            for p, part in enumerate(parts):
                for rep in range(replicas):
                    items.append((float(cost[p]), t, p, rep, lo, hi, len(part.rows) * rb))
    by_cost = sorted(items, key=lambda it: (-it[0], -it[6], it[1], it[2], it[3], it[4]))
    try:
        placed = _place_items(by_cost, tables, n, capacity)
    except PlanError:
        try:
            placed = _place_as_search(items, shapes, tables, n, capacity)
        except PlanError:
            by_size = sorted(items, key=lambda it: (-it[6], -it[0], it[1], it[2], it[3], it[4]))
            placed = _place_items(by_size, tables, n, capacity)
    shards = []
    for t, parts in enumerate(parts_by_table):
        bounds = column_bounds(tables[t], shapes[t].slices)
        for p, part in enumerate(parts):
            for rep in range(shapes[t].replicas):
                for lo, hi in zip(bounds[:-1], bounds[1:]):
                    shards.append(Shard(t, placed[(t, p, rep, lo)], lo, hi, part.rows))
    return shards


def _place_as_search(
    items: list[tuple[float, int, int, int, int, int, int]],
    shapes: list[TableShape],
    tables: list[TableSpec],
    n: int,
    capacity: int,
) -> dict[tuple[int, int, int, int], int]:
    """The items packed as :meth:`~updlrm.partitioner.search.LayoutSearch.estimate` packed
    the layout: table by table (the search's order: costliest part, then biggest part
    first), each table's parts onto the cheapest DPUs with room for them, DPU cost counted
    in the search's part costs, so that MRAM fills exactly as the search checked it would;
    within a table, its costliest parts (by the trace) go to the cheapest of those DPUs.
    """
    by_t: dict[int, list[tuple[float, int, int, int, int, int, int]]] = {}
    for it in items:
        by_t.setdefault(it[1], []).append(it)
    cost = np.zeros(n)
    free = np.full(n, capacity, dtype=np.int64)
    placed: dict[tuple[int, int, int, int], int] = {}
    for t in sorted(by_t, key=lambda t: (-shapes[t].part_cost, -shapes[t].part_bytes, t)):
        its = sorted(by_t[t], key=lambda it: (-it[0], -it[6], it[2], it[3], it[4]))
        d = len(its)
        room = free >= max(it[6] for it in its)
        if int(room.sum()) < d:
            raise PlanError(
                f"table {tables[t].name}: {d} shards of {format_bytes(its[0][6])} find {int(room.sum())} "
                f"DPUs with room; lower the replication or add DPUs"
            )
        masked = np.where(room, cost, np.inf)
        chosen = np.argpartition(masked, d - 1)[:d] if d < n else np.arange(n)
        chosen = chosen[np.argsort(cost[chosen], kind="stable")]
        for it, dpu in zip(its, chosen.tolist()):
            placed[(t, it[2], it[3], it[4])] = dpu
            free[dpu] -= it[6]
        cost[chosen] += shapes[t].part_cost
    return placed


def _place_items(
    items: list[tuple[float, int, int, int, int, int, int]], tables: list[TableSpec], n: int, capacity: int
) -> dict[tuple[int, int, int, int], int]:
    """Each item in the given order onto the cheapest DPU with room and no part of its table."""
    dpu_cost = np.zeros(n)
    dpu_free = np.full(n, capacity, dtype=np.int64)
    holds = np.zeros((len(tables), n), dtype=bool)
    placed: dict[tuple[int, int, int, int], int] = {}
    for part_cost, t, p, rep, lo, _hi, nbytes in items:
        eligible = ~holds[t] & (dpu_free >= nbytes)
        if not eligible.any():
            spec = tables[t]
            raise PlanError(
                f"table {spec.name}: a shard of {format_bytes(nbytes)} fits on no DPU without "
                f"another shard of the table ({format_bytes(int(dpu_free.max()))} MRAM free at most, "
                f"{int((~holds[t]).sum())} DPUs without it)"
            )
        d = int(np.argmin(np.where(eligible, dpu_cost, np.inf)))
        dpu_cost[d] += part_cost
        dpu_free[d] -= nbytes
        holds[t, d] = True
        placed[(t, p, rep, lo)] = d
    return placed


def part_traffic(
    wl: TableWorkload, parts: list[RowPart], host: np.ndarray | None, trace: Trace
) -> tuple[np.ndarray, np.ndarray]:
    """Expected lookups and touched bags per batch of each row part, routed as the engine would.

    >>> from updlrm.partitioner.expected_loads import table_workloads
    >>> tr = Trace(1, 2, np.array([0, 1, 2, 3]), np.array([0, 2, 4]))
    >>> wl = table_workloads([TableSpec("a", 4, 4)], tr)[0]
    >>> lookups, bags = part_traffic(wl, [RowPart(range(0, 2)), RowPart(range(2, 4))], None, tr)
    >>> lookups.tolist(), bags.tolist()
    ([2.0, 2.0], [1.0, 1.0])
    """
    spec = wl.spec
    if not parts:
        return np.zeros(0), np.zeros(0)
    tmp = Plan(
        [spec], Topology(len(parts)), [Shard(0, p, 0, spec.embedding_dim, part.rows) for p, part in enumerate(parts)]
    )
    if host is not None:
        tmp.host_rows[0] = host
    rows, bags = trace.table_lookups(wl.table)
    keep = ~host_mask(tmp, 0, rows)
    rows, bags = rows[keep], bags[keep]
    shard = SliceRouter(tmp, 0, 0).route_shards(rows, bags % trace.batch_size)
    scale = wl.batch_size / max(wl.num_bags, 1)
    lookups = np.bincount(shard, minlength=len(parts)) * scale
    touched_keys = np.unique(bags * len(parts) + shard)
    touched = np.bincount(touched_keys % len(parts), minlength=len(parts)) * scale
    return lookups.astype(np.float64), touched.astype(np.float64)
