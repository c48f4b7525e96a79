"""The candidate stage (partitioner/choose.py): host-cache variants decided on measured host phases."""

from __future__ import annotations

import pytest

from updlrm.partitioner import choose, host_phases
from updlrm.partitioner.host_phases import HostPhases
from updlrm.partitioner.placement import build_plan
from updlrm.partitioner.summary import plan_summary
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.specs import TableSpec, Topology


def _workload():
    tables = [TableSpec("a", 2000, 8), TableSpec("b", 1500, 8)]
    trace = synthetic_trace(tables, batch_size=128, num_batches=3, pooling=8, alpha=1.2, seed=1)
    return tables, trace


def _build(tables, trace, **kw):
    return build_plan(tables, trace, Topology(4), progress=False, graph="none", host_cache_bytes=8 << 10, **kw)


@pytest.mark.parametrize("cache_s, keeps_cache", [(0.0, True), (1.0, False)])
def test_the_host_cache_is_kept_only_when_its_measured_host_phases_pay(monkeypatch, cache_s, keeps_cache):
    """The search host-caches rows; a host cache measured at 1 s per batch loses to the plan without one."""
    tables, trace = _workload()

    def measured(plan, trace):
        cached = any(len(rows) for rows in plan.host_rows.values())
        return HostPhases((1e-5,) * 5, trace.batch_size, 2, host_cache_samples_s=(cache_s if cached else 0.0,) * 5)

    monkeypatch.setattr(choose, "measure_side_by_side", lambda plans, trace: [measured(p, trace) for p in plans])
    monkeypatch.setattr(host_phases, "measure_host_phases", measured)
    plan = _build(tables, trace)
    info = plan.metadata["row_assignment"]
    assert set(info["modeled_s"]) == {"none", "none (no host cache)"}
    assert info["chosen"] == ("none" if keeps_cache else "none (no host cache)")
    assert any(len(r) for r in plan.host_rows.values()) == keeps_cache
    # The chosen candidate's estimate is the smaller one and holds its measured host phases.
    assert plan.metadata["modeled"]["total_s"] == pytest.approx(min(info["modeled_s"].values()))
    assert plan.metadata["modeled"]["host_cache_s"] == pytest.approx(cache_s if keeps_cache else 0.0)
    assert plan.metadata["held_out"]["host_route_s"] > 0  # measured held out as well
    assert f"-> {info['chosen']}" in plan_summary(plan)


def test_no_variant_without_a_host_cache_or_when_the_cache_mode_is_forced():
    tables, trace = _workload()
    for cache in ("host", "replicate", "none"):
        plan = _build(tables, trace, cache=cache)
        assert list(plan.metadata["row_assignment"]["modeled_s"]) == ["none"], cache
        assert "host_phases" not in plan.metadata["row_assignment"]
    # Nothing host-cached by the search (a budget of 0 bytes): one candidate, nothing measured.
    plan = build_plan(tables, trace, Topology(4), progress=False, graph="none", host_cache_bytes=0)
    assert list(plan.metadata["row_assignment"]["modeled_s"]) == ["none"]
    assert plan.metadata["modeled"]["host_route_s"] == 0.0
