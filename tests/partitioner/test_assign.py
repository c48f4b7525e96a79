"""DPU assignment of row parts and the routing of parts replicated by the planner."""

import numpy as np
import pytest

from updlrm import perfmodel
from updlrm.partitioner import routing
from updlrm.partitioner.assign import assign_dpus
from updlrm.partitioner.cost import CostModel
from updlrm.partitioner.expected_loads import table_workloads
from updlrm.partitioner.routing import SliceRouter
from updlrm.partitioner.rows import RowPart
from updlrm.partitioner.search import TableShape
from updlrm.partitioner.workloads import Trace
from updlrm.plan import Plan, Shard
from updlrm.specs import TableSpec, Topology


def _holders_rule(plan, row, bag):
    """The routing rule written out: the holders of the row in shard order, holder bag mod r."""
    holders = [i for i, s in enumerate(plan.shards) if row in set(s.row_ids().tolist())]
    return holders[bag % len(holders)]


@pytest.mark.parametrize("dense", [True, False])
def test_router_routes_replicas_sharing_one_row_array(dense, monkeypatch):
    # assign_dpus gives every replica of a part the part's own row array; the router
    # groups them by it. Hot rows held by a second array (another group) and a range
    # shard overlapping both make rows with holders in several groups.
    rng = np.random.default_rng(3)
    part_a = np.sort(rng.choice(40, 20, replace=False)).astype(np.int64)
    part_b = np.setdiff1d(np.arange(40), part_a)
    hot = np.unique(np.array([int(part_a[0]), int(part_b[0]), 39], dtype=np.int64))
    shards = [Shard(0, d, 0, 4, part_a) for d in (4, 0, 2)]
    shards += [Shard(0, d, 0, 4, part_b) for d in (1, 3)]
    shards += [Shard(0, 5, 0, 4, hot), Shard(0, 6, 0, 4, range(30, 40)), Shard(0, 7, 0, 4, hot.copy())]
    plan = Plan([TableSpec("t", 40, 4)], Topology(8), shards)
    plan.validate()
    if not dense:
        monkeypatch.setattr(routing, "DENSE_ROUTING_MAX_ROWS", 0)
    router = SliceRouter(plan, 0, 0)
    rows = np.repeat(np.arange(40), 7)
    bags = np.tile(np.arange(7), 40)
    shard, local = router.route(rows, bags)
    for r, b, s, li in zip(rows.tolist(), bags.tolist(), shard.tolist(), local.tolist()):
        assert s == _holders_rule(plan, r, b)
        assert plan.shards[s].row_ids()[li] == r


def test_parts_that_cost_order_cannot_pack_are_placed_biggest_first():
    # The 8-byte parts of two busy tables go first by cost, one to each DPU, leaving 28 of
    # 36 bytes on each: the 32-byte part of the quiet table fits only if it goes first.
    tables = [TableSpec("big", 4, 2), TableSpec("s1", 1, 2), TableSpec("s2", 1, 2)]
    indices = np.array([0] + [0] * 6 + [0] * 6, dtype=np.int64)
    offsets = np.array([0, 1, 7, 13], dtype=np.int64)
    trace = Trace(3, 1, indices, offsets)
    wls = table_workloads(tables, trace)
    hw = perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=2)
    model = CostModel(tables, hw, 2, False, 16, [wl.total_load for wl in wls])
    parts = [[RowPart(range(4))], [RowPart(range(1))], [RowPart(range(1))]]
    shapes = [TableShape(1, 1), TableShape(1, 1), TableShape(1, 1)]
    shards = assign_dpus(tables, wls, parts, shapes, {}, model, 2, 36, trace)
    by_table = {s.table: s.dpu for s in shards}
    assert by_table[1] == by_table[2] != by_table[0]


def test_parts_are_packed_table_by_table_as_the_search_packs_them():
    # Part costs from the trace interleave the tables: cost order (R0, S, B, R1) puts B
    # next to S and leaves R1 no DPU; biggest first (B, R0, S, R1) fills the DPU without
    # R the same way.  The search packs table by table in its own cost order (R's parts,
    # then S, then B, each onto the cheapest DPU with room), which fits.
    tables = [TableSpec("r", 6, 2), TableSpec("s", 3, 2), TableSpec("b", 7, 2)]
    bag_r = [0] * 90 + [3] * 10
    indices = np.array(bag_r + [0] * 40 + [0] * 20, dtype=np.int64)
    offsets = np.array([0, 100, 140, 160], dtype=np.int64)
    trace = Trace(3, 1, indices, offsets)
    wls = table_workloads(tables, trace)
    hw = perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=2)
    model = CostModel(tables, hw, 2, False, 16, [wl.total_load for wl in wls])
    parts = [[RowPart(range(3)), RowPart(range(3, 6))], [RowPart(range(3))], [RowPart(range(7))]]
    shapes = [TableShape(2, 1), TableShape(1, 1), TableShape(1, 1)]
    for shape, part_cost in zip(shapes, [5.0, 4.0, 2.0]):  # the search's (mean) part costs
        shape.part_cost = part_cost
    shards = assign_dpus(tables, wls, parts, shapes, {}, model, 2, 80, trace)
    dpu = {(s.table, s.rows.start): s.dpu for s in shards}
    assert dpu[(0, 0)] != dpu[(0, 3)]
    Plan(tables, Topology(2), shards).validate(Topology(2).mram_bytes_per_dpu - 80)
