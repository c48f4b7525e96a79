"""The host's phases in the planner's estimate: measured on a dry engine, charged to every
DPU candidate with ``host_cpu``, and able to tip the choice to the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from test_host_cpu import _tiny, model

from updlrm import perfmodel
from updlrm.partitioner import choose, host_phases, placement
from updlrm.partitioner.host_phases import HostPhases, estimate_plan, measure_host_phases, measured_at_build
from updlrm.partitioner.placement import build_plan
from updlrm.partitioner.summary import plan_summary
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.plan import Plan, uniform_plan
from updlrm.specs import TableSpec, Topology


def test_measures_the_plans_own_route_pack():
    tables, trace = _tiny()
    wide = measure_host_phases(uniform_plan(tables, Topology(64), "row_wise"), trace, repeats=5, host_threads=1)
    assert wide is not None and wide.batches == 5 and wide.host_threads == 1
    assert 0 < wide.best_s <= wide.median_s < 0.1
    assert wide.batch_size == trace.batch_size
    assert wide.seconds(4 * trace.batch_size) == pytest.approx(4 * wide.median_s)
    assert "route+pack" in str(wide)
    assert len(wide.host_cache_samples_s) == len(wide.merge_samples_s) == 5
    assert min(wide.merge_samples_s) > 0
    # The merge's copy counts what it reads and writes, as route+pack's does: partials and output rows.
    output_bytes = trace.batch_size * sum(t.embedding_dim for t in tables) * 4
    assert wide.pulled_bytes > 0 and wide.merge_bytes == wide.pulled_bytes + output_bytes
    # The engine's shape: a row-wise plan routes by ranges (tiny tables), no copies.
    assert wide.routing_bytes > 0 and wide.follower_slices == 0 and wide.mirror_dpus == 0
    # Nothing routed to DPUs: nothing to measure.
    host_only = Plan(tables, Topology(4), [], host_rows={t: np.arange(s.num_embeddings) for t, s in enumerate(tables)})
    assert measure_host_phases(host_only, trace) is None


def test_a_batch_is_charged_its_route_pack_in_series():
    t = perfmodel.PhaseTimes(1e-3, 0.0, 2e-3, 1e-3, 5e-4, 0.0, np.zeros(1), host_route_s=7e-4)
    assert t.total_s == pytest.approx(7e-4 + 4e-3 + 5e-4)
    assert t.as_dict()["host_route_s"] == 7e-4
    # A stream routes batch i+1 while the DPUs run batch i: by default each batch's own figure.
    assert perfmodel.model_stream(t, nr_batches=10).serial_s == pytest.approx(10 * t.total_s)
    assert perfmodel.model_stream(t, nr_batches=10, route_s=0.0).serial_s == pytest.approx(10 * (t.total_s - 7e-4))


def test_build_plan_with_a_host_model_records_and_charges_the_measured_host_phases():
    tables, trace = _tiny()
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu=model(10_000), graph="none")
    info = plan.metadata["host_cpu"]
    assert not info["cpu_only"]
    route = plan.metadata["row_assignment"]["host_phases"]["none"]
    assert route["median_s"] > 0 and route["batches"] == 5 and route["merge_median_s"] > 0
    # The chosen plan's estimate holds them, on the build part and held out.
    scale = plan.metadata["batch_size"] / route["batch_size"]
    modeled = plan.metadata["modeled"]
    assert modeled["host_route_s"] == pytest.approx(route["median_s"] * scale)
    assert modeled["host_merge_s"] == pytest.approx(route["merge_median_s"] * scale)
    assert modeled["host_cache_s"] == pytest.approx(route["host_cache_median_s"] * scale)
    assert info["plan_s"] == pytest.approx(plan.metadata["modeled"]["total_s"])
    assert plan.metadata["held_out"]["host_route_s"] > 0
    assert "host phases of none, measured" in plan_summary(plan)
    # Without a host model nothing is measured or charged.
    off = build_plan(tables, trace, Topology(32), progress=False, graph="none")
    assert off.metadata["modeled"]["host_route_s"] == 0.0


@pytest.mark.parametrize("route_s, cpu_only", [(0.0, False), (10.0, True)])
def test_route_pack_can_tip_the_choice_to_the_cpu(monkeypatch, route_s, cpu_only):
    """A DPU plan whose DPU side beats the CPU, but whose host routing would not: the CPU wins."""
    tables = [TableSpec("a", 4000, 16), TableSpec("b", 3000, 16)]
    trace = synthetic_trace(tables, batch_size=128, num_batches=3, pooling=6, seed=4)

    def measured(plan, trace):
        return HostPhases((route_s,) * 5, trace.batch_size, 2)

    monkeypatch.setattr(choose, "measure_side_by_side", lambda plans, trace: [measured(p, trace) for p in plans])
    monkeypatch.setattr(host_phases, "measure_host_phases", measured)
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu=model(2_000), graph="none", holdout=0)
    info = plan.metadata["host_cpu"]
    assert info["cpu_only"] == cpu_only
    assert info["plan_s"] <= info["cpu_only_s"] * (1 + 1e-9)
    if cpu_only:
        assert not plan.shards and info["plan_s"] < route_s


def test_candidates_are_measured_side_by_side_batch_by_batch(monkeypatch):
    """A burst of load must hit every candidate alike: their timed batches alternate."""
    from updlrm.host.engine import Engine
    from updlrm.partitioner.host_phases import measure_side_by_side

    tables = [TableSpec("a", 1000, 8)]
    plans = [uniform_plan(tables, Topology(4), "row_wise"), uniform_plan(tables, Topology(4), "column_wise")]
    trace = synthetic_trace(tables, batch_size=64, num_batches=2, pooling=4, seed=1)
    calls, original = [], Engine.dry_run

    def dry_run(self, *args, **kwargs):
        calls.append(self.plan)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "dry_run", dry_run)
    empty = Plan(tables, Topology(4), [], host_rows={0: np.arange(1000)})
    phases = measure_side_by_side([plans[0], empty, plans[1]], trace, repeats=4)
    assert phases[1] is None and phases[0].batches == phases[2].batches == 4
    timed = calls[2 * trace.num_batches :]  # after each engine's warm-up
    assert [id(p) for p in timed] == [id(plans[0]), id(plans[1])] * 4


def test_estimate_plan_on_the_build_trace_repeats_the_builds_estimate():
    tables, trace = _tiny()
    # A slow host (10 us a lookup): every table on the DPUs, host phases measured at build.
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu=model(10_000))
    build_part, held = placement.holdout_split(trace, placement.BuildOptions().holdout)
    built = plan.metadata["in_sample"]["phases"]
    assert measured_at_build(plan) and plan.shards and built["host_route_s"] > 0
    again = estimate_plan(plan, build_part).modeled.as_dict()
    # total = route + max(host cache, DPU side) + merge: the modeled DPU side is the build's
    # exactly; only the host phases timed again (route+pack, host-cache sum, merge) may differ.
    for k in ("cpu_to_dpu_s", "launch_s", "kernel_s", "dpu_to_cpu_s"):
        assert again[k] == pytest.approx(built[k], rel=1e-9, abs=1e-15), k
    timed = sum(abs(again[k] - built[k]) for k in ("host_route_s", "host_cache_s", "host_merge_s"))
    assert again["host_route_s"] > 0 and abs(again["total_s"] - built["total_s"]) <= timed + 1e-12
    # Held out, it is what build_plan recorded for the held-out part (same mechanism).
    assert estimate_plan(plan, held).modeled.kernel_s == pytest.approx(plan.metadata["held_out"]["phases"]["kernel_s"])
    modeled = estimate_plan(plan, build_part, measure_host=False).modeled
    assert modeled.host_route_s == 0.0 and modeled.kernel_s == pytest.approx(built["kernel_s"])
