"""Host/DPU co-execution: the host cost model, the planner's host-vs-DPU choice, and plans that never lose to the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from updlrm.batch_loop import check_close, torch_embedding_bags
from updlrm.partitioner import host_cost as hc
from updlrm.partitioner.host_cost import HostCostModel, calibrate, plan_host_seconds
from updlrm.partitioner.placement import build_plan, holdout_split
from updlrm.partitioner.summary import plan_summary
from updlrm.partitioner.workloads import load_trace, synthetic_trace
from updlrm.plan import Plan, PlanError
from updlrm.specs import RowFormat, TableSpec, Topology
from updlrm.tbe import TableBatchedEmbeddingBags


def model(ns_per_lookup: float, fixed_s: float = 1e-6) -> HostCostModel:
    """A host cost model with the same cost per lookup in every format (ns), for deterministic plans."""
    pts = [
        (16.0, float(1 << 18), ns_per_lookup * 1e-9),
        (16.0, float(1 << 26), ns_per_lookup * 1e-9),
        (128.0, float(1 << 18), ns_per_lookup * 1e-9),
        (128.0, float(1 << 26), ns_per_lookup * 1e-9),
    ]
    return HostCostModel("test host", {f.value: fixed_s for f in RowFormat}, {f.value: pts for f in RowFormat})


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return calibrate(cache_dir=tmp_path_factory.mktemp("host_cost"))


# ------------------------------------------------------------------ the cost model


def test_calibration_is_cached_per_machine_and_remeasured_when_the_key_changes(tmp_path, monkeypatch):
    first = calibrate(cache_dir=tmp_path)
    assert first.source == "measured" and first.machine == hc.cpu_model() and 0 < first.calibration_s < 30
    again = calibrate(cache_dir=tmp_path)
    assert again.source == "cached" and again.per_lookup_s == first.per_lookup_s
    assert set(first.per_lookup_s) == {f.value for f in RowFormat}
    monkeypatch.setattr(hc, "cpu_model", lambda: "another CPU")
    assert calibrate(cache_dir=tmp_path).source == "measured"
    (tmp_path / "host_cost.json").write_text("{not json")
    assert calibrate(cache_dir=tmp_path).source == "measured"  # an unreadable cache is measured again
    assert calibrate(cache_dir=tmp_path, cache=False).source == "measured"


def test_cost_grows_with_lookups_dim_and_working_set(calibrated):
    m = calibrated
    for fmt in RowFormat:
        spec = TableSpec("a", 1 << 20, 64, row_format=fmt)
        costs = [m.seconds(spec, n) for n in (1, 1_000, 100_000)]
        assert 0 < costs[0] < costs[1] < costs[2]
        assert m.seconds(spec, 0) == 0.0
        # The measured grid is positive and finite everywhere.
        assert all(np.isfinite(p[2]) and p[2] >= 0 for p in m.per_lookup_s[fmt.value])
    # Interpolation stays between the measured points and clamps outside them.
    lo = m.lookup_seconds("fp32", 16, hc.TABLE_BYTES[0])
    hi = m.lookup_seconds("fp32", 16, hc.TABLE_BYTES[-1])
    mid = m.lookup_seconds("fp32", 16, (hc.TABLE_BYTES[0] * hc.TABLE_BYTES[-1]) ** 0.5)
    assert min(lo, hi) <= mid <= max(lo, hi)
    assert m.lookup_seconds("fp32", 16, 1) == lo and m.lookup_seconds("fp32", 16, 1e15) == hi


def test_model_round_trips_through_json(calibrated):
    d = json.loads(json.dumps(calibrated.to_dict()))
    back = HostCostModel.from_dict(d)
    spec = TableSpec("a", 5000, 32, row_format="int8")
    assert back.seconds(spec, 1234) == pytest.approx(calibrated.seconds(spec, 1234))
    assert "AMD" in back.describe() or back.machine in back.describe()


# ------------------------------------------------------------------ the planner's choice


def _tiny():
    tables = [TableSpec(f"t{i}", 3000, 16) for i in range(3)] + [TableSpec("q", 2000, 16, row_format="int8", scale=0.1)]
    trace = synthetic_trace(tables, batch_size=128, num_batches=3, pooling=6, seed=3)
    return tables, trace


def test_cpu_wins_gives_an_all_host_plan_that_runs_on_the_engine_equal_to_torch(calibrated):
    tables, trace = _tiny()
    # A few thousand lookups on a host that needs 1 ns each: a DPU launch alone costs more.
    # (A model, not this machine's calibration: a 6-8x slow calibration on a loaded CI
    # machine would flip the choice; the calibrated build below may go either way.)
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu=model(1.0), holdout=0)
    info = plan.metadata["host_cpu"]
    assert info["cpu_only"] and plan.shards == []
    assert info["plan_s"] == pytest.approx(info["cpu_only_s"])
    assert all(np.array_equal(plan.host_rows[t], np.arange(s.num_embeddings)) for t, s in enumerate(tables))
    assert {s["layout"] for s in plan.metadata["strategy"].values()} == {"host"}
    assert info["model"]["machine"] == "test host"
    text = plan_summary(plan)
    assert "CPU only: every table on the host CPU" in text and "host cost calibrated on" in text
    # With this machine's calibration: whichever wins, the plan says so and is never worse.
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu=calibrated, holdout=0)
    info = plan.metadata["host_cpu"]
    assert info["cpu_only"] == (plan.shards == []) and info["plan_s"] <= info["cpu_only_s"] * (1 + 1e-9)
    assert info["model"]["machine"] == calibrated.machine
    # It runs on the engine, all from the host rows, equal to torch.
    with TableBatchedEmbeddingBags(tables, plan=plan, backend="emulator", seed=0) as tbe:
        weights = [__import__("torch").from_numpy(tbe.weights(t)) for t in range(len(tables))]
        for idx, off, psw in trace.batches():
            out = tbe(idx, off, psw)
            assert tbe.last_stats.host_cache_hits == idx.size
            _, ok = check_close(out, torch_embedding_bags(weights, idx, off, trace.batch_size).numpy())
            assert ok


def test_dpus_win_keeps_dpu_tables():
    tables, trace = _tiny()
    # A host that needs 10 us a lookup: the DPUs win for every table.
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu=model(10_000))
    info = plan.metadata["host_cpu"]
    assert not info["cpu_only"] and info["host_tables"] == []
    assert {plan.shards[i].table for i in range(len(plan.shards))} == set(range(len(tables)))
    assert info["plan_s"] < info["cpu_only_s"]
    for choice in info["tables"].values():
        assert choice["where"] == "dpus" and choice["batch_s_on_dpus"] <= choice["batch_s_on_host"]
    assert "DPUs only" in plan_summary(plan)


def test_a_mixed_plan_serves_host_tables_from_the_host_and_is_correct():
    # Host speeds from far faster to far slower than the DPUs: whatever the search picks,
    # host tables are whole in the host rows and have no shard, and the plan never
    # models slower than the CPU alone.
    tables = [TableSpec("wide", 4000, 64), TableSpec("narrow", 4000, 8, row_format="int8")]
    trace = synthetic_trace(tables, batch_size=256, num_batches=2, pooling=8, seed=5)
    for ns in (1.0, 30.0, 300.0, 3000.0):
        plan = build_plan(tables, trace, Topology(16), progress=False, host_cpu=model(ns))
        info = plan.metadata["host_cpu"]
        assert info["plan_s"] <= info["cpu_only_s"] * (1 + 1e-9)
        for t, spec in enumerate(tables):
            on_host = spec.name in info["host_tables"] or info["cpu_only"]
            assert on_host == (not plan.shards_of(t))
            if on_host:
                assert np.array_equal(plan.host_rows[t], np.arange(spec.num_embeddings))
        plan.validate()


def test_host_cpu_off_and_bad_modes():
    tables, trace = _tiny()
    # Off: no host cost model.  Tables that fit the host cache may still be held whole in
    # it (the model's choice); without a host cache every table is on the DPUs.
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu="off")
    assert "host_cpu" not in plan.metadata
    for t, spec in enumerate(tables):
        assert plan.shards_of(t) or np.array_equal(plan.host_rows[t], np.arange(spec.num_embeddings))
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu="off", cache="replicate")
    assert "host_cpu" not in plan.metadata and {s.table for s in plan.shards} == set(range(len(tables)))
    with pytest.raises(PlanError, match="host_cpu"):
        build_plan(tables, trace, Topology(32), progress=False, host_cpu="sometimes")


def test_the_plan_file_says_what_host_it_assumed(tmp_path, calibrated):
    tables, trace = _tiny()
    plan = build_plan(tables, trace, Topology(32), progress=False, host_cpu=calibrated, holdout=0)
    plan.save(tmp_path / "p.json")
    back = Plan.load(tmp_path / "p.json")
    assert (
        back.metadata["host_cpu"]["model"]["per_lookup_s"]
        == json.loads(json.dumps(calibrated.to_dict()))["per_lookup_s"]
    )
    # The recorded model prices every table on the host as the build did (whichever plan won).
    all_host = Plan(tables, Topology(32), [], host_rows={t: np.arange(s.num_embeddings) for t, s in enumerate(tables)})
    recorded = HostCostModel.from_dict(back.metadata["host_cpu"]["model"])
    assert plan_host_seconds(all_host, trace, recorded) == pytest.approx(back.metadata["host_cpu"]["cpu_only_s"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nr_tables=st.integers(1, 3),
    rows=st.integers(20, 3000),
    dim=st.sampled_from([4, 8, 16, 32]),
    fmt=st.sampled_from(["fp32", "int8", "int32"]),
    batch=st.integers(8, 128),
    pooling=st.integers(1, 12),
    dpus=st.sampled_from([4, 8, 16, 64]),
    ns=st.floats(0.5, 5_000),
    seed=st.integers(0, 100),
)
def test_the_plan_estimate_is_never_worse_than_cpu_only(nr_tables, rows, dim, fmt, batch, pooling, dpus, ns, seed):
    tables = [TableSpec(f"t{i}", rows + 17 * i, dim, row_format=fmt, scale=0.05) for i in range(nr_tables)]
    trace = synthetic_trace(tables, batch_size=batch, num_batches=2, pooling=pooling, seed=seed)
    host = model(ns)
    # holdout=0: the estimates are compared with the cost of the whole trace.
    plan = build_plan(tables, trace, Topology(dpus), progress=False, host_cpu=host, graph="none", holdout=0)
    info = plan.metadata["host_cpu"]
    assert info["plan_s"] <= info["cpu_only_s"] * (1 + 1e-9)
    assert plan.metadata["modeled"]["total_s"] == pytest.approx(info["plan_s"])
    # The CPU-only estimate is the host model's cost of every lookup of the trace.
    lookups = [trace.table_lookups(t)[0] for t in range(nr_tables)]
    expect = sum(
        host.seconds(s, r.size / trace.num_batches, np.unique(r).size * s.row_bytes()) for s, r in zip(tables, lookups)
    )
    assert info["cpu_only_s"] == pytest.approx(expect)
    plan.validate()


def test_plan_build_and_show_say_where_each_table_goes(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from updlrm.partitioner.cli import plan_group

    monkeypatch.setenv("UPDLRM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(
        plan_group,
        [
            "build",
            "--tables",
            "criteo",
            "--max-rows",
            "2000",
            "--dim",
            "8",
            "--synthetic",
            "--batch-size",
            "64",
            "--batches",
            "2",
            "--dpus",
            "64",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "host CPU vs DPUs: plan" in r.output and (tmp_path / "cache" / "host_cost.json").exists()
    shown = CliRunner().invoke(plan_group, ["show", str(out)])
    assert shown.exit_code == 0 and "host cost calibrated on" in shown.output
    meta = Plan.load(out).metadata["host_cpu"]
    assert meta["plan_s"] <= meta["cpu_only_s"] * (1 + 1e-9)
    # Evaluated on the trace it was built from, with the host model it recorded: the same estimate.
    r = CliRunner().invoke(
        plan_group,
        [
            "build",
            "--tables",
            "criteo",
            "--max-rows",
            "2000",
            "--dim",
            "8",
            "--synthetic",
            "--batch-size",
            "64",
            "--batches",
            "2",
            "--dpus",
            "64",
            "--quiet",
            "--save-trace",
            str(tmp_path / "tr.npz"),
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    # The plan was built on the first 80% of the saved trace (build_plan's holdout). Evaluated
    # on that part, with the host model it recorded and its host phases timed again as the
    # build timed them, it gives the build's estimate: the two differ only by timing noise.
    build_part, _ = holdout_split(load_trace(tmp_path / "tr.npz"), 0.2)
    build_part.save(tmp_path / "build_part.npz")
    report = tmp_path / "report.json"
    r = CliRunner().invoke(
        plan_group, ["evaluate", str(out), "--trace", str(tmp_path / "build_part.npz"), "--json", str(report)]
    )
    assert r.exit_code == 0, r.output
    plan = Plan.load(out)
    meta, built = plan.metadata["host_cpu"], plan.metadata["in_sample"]["phases"]
    assert ("measured on this machine" in r.output) == (not meta["cpu_only"])
    doc = json.loads(report.read_text())
    assert doc["host_phases"] == ("modeled" if meta["cpu_only"] else "measured")
    again = doc["modeled"]
    assert built["total_s"] == pytest.approx(meta["plan_s"], rel=1e-12)
    timed = ("host_route_s", "host_cache_s", "host_merge_s")
    for k in ("cpu_to_dpu_s", "launch_s", "kernel_s", "dpu_to_cpu_s"):
        assert again[k] == pytest.approx(built[k], rel=1e-9, abs=1e-15), k
    # total = route + max(host cache, DPU side) + merge: only the phases timed again may differ.
    moved = sum(abs(again[k] - built[k]) for k in timed)
    assert abs(again["total_s"] - built["total_s"]) <= moved + 1e-12
    r = CliRunner().invoke(
        plan_group,
        [
            "build",
            "--tables",
            "criteo",
            "--max-rows",
            "2000",
            "--dim",
            "8",
            "--synthetic",
            "--batch-size",
            "64",
            "--batches",
            "2",
            "--dpus",
            "64",
            "--host-cpu",
            "off",
            "--quiet",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0 and "host_cpu" not in Plan.load(out).metadata
