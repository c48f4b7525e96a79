"""Dry engines (``Engine(plan, None)``): a batch's host phases without DPUs.

What such an engine routes must be what a loaded engine routes: the per-DPU counts its
``dry_run`` reports equal those of ``run`` on the same plan and batch, on plans with
followers, mirrors, replica sets, host-cached rows and batches too big for one launch,
on one and several host threads; it sums the host-cached rows and merges as ``run``
does. Running raises a one-line error.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import random_weights
from test_routing import zipf_batch
from test_routing_followers import blocks_with_replicas, sliced

from updlrm.host.batch_stats import DPU_STATS
from updlrm.host.engine import Engine, EngineError
from updlrm.plan import Plan, uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

# Per-DPU counts known once a batch is packed (the DPU reports its cycles itself).
PACKED = tuple(name for name in DPU_STATS if name != "kernel_cycles")


def sliced_plan(slices: int) -> Plan:
    tables = [TableSpec("f", 4000, 16), TableSpec("q", 1000, 32, row_format=RowFormat.INT8, scale=0.25)]
    layouts = [blocks_with_replicas(4000) + [np.array([1, 2, 3999])], blocks_with_replicas(1000)]
    shards, nr_dpus = sliced(tables, layouts, slices)
    plan = Plan(tables, Topology(nr_dpus), shards, host_rows={0: np.array([4, 5, 3000]), 1: np.array([0])})
    plan.validate()
    return plan


def assert_same_routing(dry, ran) -> None:
    for name in PACKED:
        assert getattr(dry, name).tolist() == getattr(ran, name).tolist(), name
    assert (dry.nr_launches, dry.nr_bags, dry.nr_lookups) == (ran.nr_launches, ran.nr_bags, ran.nr_lookups)
    assert (dry.host_cache_hits, dry.host_cache_bytes) == (ran.host_cache_hits, ran.host_cache_bytes)
    assert dry.route_parts == ran.route_parts
    assert dry.route_s > 0 and dry.merge_s > 0 and dry.host_cache_s > 0
    assert dry.push_s == dry.launch_s == dry.pull_s == 0.0
    assert not dry.kernel_cycles.any()


@pytest.mark.parametrize("slices", [1, 4])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("host_threads", [1, 3])
def test_routes_and_merges_as_a_loaded_engine(slices, weighted, host_threads):
    rng = np.random.default_rng([slices, weighted, host_threads])
    plan = sliced_plan(slices)
    weights = random_weights(plan.tables, rng)
    # Big enough to be routed in parts on several threads (>= 65,536 lookups).
    indices, offsets, psw = zipf_batch(plan.tables, 2000, 80, rng, weighted=weighted)
    with Engine(plan, weights, host_threads=host_threads) as loaded:
        _, ran = loaded.run(indices, offsets, psw, PoolingMode.SUM)
        mirrors = loaded.mirror_dpus
    with Engine(plan, None, host_threads=host_threads) as dry:
        assert dry.dry and dry.backend == "emulator"
        assert dry.mirror_dpus == mirrors
        routed = dry.dry_run(indices, offsets, psw)
        again = dry.dry_run(indices, offsets, psw)  # the slot's buffers are reused
    assert_same_routing(routed, ran)
    assert_same_routing(again, ran)
    if host_threads > 1:
        assert routed.route_parts > 1


def test_a_batch_too_big_for_one_launch_runs_in_its_parts():
    """Little MRAM left after the rows: the batch runs in halves until each part fits, as
    ``run`` runs it (its launches and per-DPU counts add up alike)."""
    tables = [TableSpec("a", 1000, 32), TableSpec("q", 500, 16, row_format=RowFormat.INT8, scale=0.1)]
    plan = Plan(
        tables,
        Topology(2, mram_bytes_per_dpu=1000 * 128 + 60_000),
        uniform_plan(tables, Topology(2), "table_wise").shards,
        host_rows={0: np.array([2, 3])},
    )
    rng = np.random.default_rng(5)
    indices, offsets, psw = zipf_batch(tables, 500, 60, rng, weighted=True)
    with Engine(plan, random_weights(tables, rng)) as loaded:
        _, ran = loaded.run(indices, offsets, psw)
    with Engine(plan, None) as dry:
        routed = dry.dry_run(indices, offsets, psw)
    assert ran.nr_launches > 2
    assert_same_routing(routed, ran)


def test_running_a_dry_engine_says_what_to_do():
    plan = uniform_plan([TableSpec("t", 10, 4)], Topology(nr_dpus=2), "row_wise")
    indices, offsets = np.array([0, 9]), np.array([0, 2])
    with Engine(plan, None) as dry:
        for call in (
            lambda: dry.run(indices, offsets),
            lambda: dry.run_async(indices, offsets),
            lambda: dry.pipeline([(indices, offsets)]),
        ):
            with pytest.raises(EngineError, match=r"dry .*weights=None.*Engine.dry_run.*tables' weights"):
                call()
        with pytest.raises(EngineError, match="offsets must start at 0"):
            dry.dry_run(indices, np.array([1, 2]))
        assert dry.dry_run(indices, offsets).nr_lookups == 2  # still usable
    with (
        Engine(plan, [np.zeros((10, 4), np.float32)]) as loaded,
        pytest.raises(EngineError, match=r"dry engines.*Engine\(plan, None\)"),
    ):
        loaded.dry_run(indices, offsets)


def test_a_dry_engine_ignores_the_backend_it_would_not_use():
    plan = uniform_plan([TableSpec("t", 10, 4)], Topology(nr_dpus=2), "row_wise")
    with Engine(plan, None, backend="hw") as dry:  # no DPUs are used: the emulator stands in
        assert dry.backend == "emulator"
        assert dry.dry_run(np.array([3]), np.array([0, 1])).nr_lookups == 1
