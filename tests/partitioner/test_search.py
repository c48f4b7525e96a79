"""The layout search (partitioner/search.py): replica counts levelled across tables."""

from __future__ import annotations

import numpy as np
import pytest

from updlrm import perfmodel
from updlrm.partitioner.cost import CostModel
from updlrm.partitioner.evaluate import imbalance_breakdown
from updlrm.partitioner.expected_loads import table_workloads
from updlrm.partitioner.placement import build_plan
from updlrm.partitioner.search import LayoutSearch
from updlrm.partitioner.synthetic import synthetic_trace
from updlrm.specs import RowFormat, TableSpec, Topology

# Three int8 tables whose loads are 5 : 3 : 1 (pooling), uniform rows, each of 40 MB
# whatever its column slices (8 columns, rows padded to 8 bytes): a DPU's MRAM holds one
# shard, so the search holds each whole, replicated, and only the replica counts balance
# them.
POOLINGS = [25, 15, 5]
ROWS = 5_000_000
NR_DPUS = 36


def tables() -> list[TableSpec]:
    return [TableSpec(f"t{i}", ROWS, 8, row_format=RowFormat.INT8, scale=0.01) for i in range(len(POOLINGS))]


def trace(seed: int, batches: int = 2):
    return synthetic_trace(
        tables(),
        batch_size=512,
        num_batches=batches,
        pooling=POOLINGS,
        alpha=0.0,
        seed=seed,
        pooling_distribution="fixed",
    )


def search() -> LayoutSearch:
    wls = table_workloads(tables(), trace(1))
    hw = perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=NR_DPUS)
    model = CostModel(tables(), hw, NR_DPUS, False, 16, [wl.total_load for wl in wls])
    return LayoutSearch(wls, model, capacity=48 << 20, replicate=True)


def test_levelled_replicas_follow_the_loads_not_powers_of_two():
    s = search()
    cached = np.zeros(3, dtype=np.int64)
    # Powers of two only: the best the candidates offer.
    shapes, best = s.descend(s.initial(cached), cached, passes=3)
    assert all(sh.replicas & (sh.replicas - 1) == 0 for sh in shapes if sh.replicas < NR_DPUS)
    levelled, score = s.level_replicas(list(shapes), cached, best)
    assert score < best
    assert sum(sh.dpus for sh in levelled) <= NR_DPUS
    replicas = [sh.replicas for sh in levelled]
    assert replicas[0] > replicas[1] > replicas[2] >= 1
    # The parts' costs come closer together than with powers of two.
    spread = lambda shs: max(sh.part_cost for sh in shs) / min(sh.part_cost for sh in shs)  # noqa: E731
    assert spread(levelled) < spread(shapes)
    assert max(sh.part_cost for sh in levelled) < max(sh.part_cost for sh in shapes)


def test_level_replicas_leaves_a_layout_without_replicas_alone():
    s = search()
    cached = np.zeros(3, dtype=np.int64)
    shapes = [s.shape(t, 1, 1, 0) for t in range(3)]
    s.candidates = [[(1, 1, 1)] for _ in range(3)]  # no replicated candidate: nothing to level
    best = s.score(shapes, cached)
    assert s.level_replicas(shapes, cached, best) == (shapes, best)


@pytest.mark.parametrize("seed", [3, 4])
def test_levelled_plans_balance_held_out_traffic(seed, monkeypatch):
    """Built on one trace and judged on another: levelling lowers the held-out imbalance."""
    built, judged = trace(seed), trace(seed + 100)

    def plan_imbalance() -> float:
        plan = build_plan(
            tables(), built, Topology(NR_DPUS), progress=False, holdout=0, graph="none", cache="replicate"
        )
        return imbalance_breakdown(plan, judged)["imbalance"]

    levelled = plan_imbalance()
    monkeypatch.setattr(LayoutSearch, "level_replicas", lambda self, shapes, cached, best: (shapes, best))
    powers = plan_imbalance()
    assert levelled < powers
    assert levelled < 1.1
