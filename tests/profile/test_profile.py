"""updlrm.profile (batch profiles), partitioner.batch_work (the N-DPU work derivation), updlrm.bench, the sweep's quick mode."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from updlrm import perfmodel
from updlrm.bench import bench_command, bench_plan
from updlrm.partitioner.batch_work import derive_work
from updlrm.partitioner.placement import build_plan
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.plan import Plan, Shard, uniform_plan
from updlrm.profile import BatchProfile, format_phase_table, profile_batch, profile_work, work_mismatch
from updlrm.specs import TableSpec, Topology
from updlrm.tbe import TableBatchedEmbeddingBags

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ hand-computed small case


def test_profile_matches_perfmodel_by_hand():
    """One table of 8 rows x dim 4 fp32 on 2 DPUs (rows 0-3 / 4-7), 16 tasklets, 2 bags.

    Bag 0 = rows {0, 1, 5}, bag 1 = row {6}. DPU 0: 2 lookups in 1 segment (bag 0);
    DPU 1: 2 lookups in 2 segments (bag 0, bag 1).
    Input per DPU: header 4*(10+24*6) = 616 B + pad8(2 lookups * 4 B) = 8 + 8 B per segment.
    Output: status 24 B + one 16 B fp32 partial (dim 4) per (tasklet, segment) overlap:
    2 lookups over 16 tasklets give tasklets 7 and 15 one lookup each -> 2 partials on both DPUs.
    """
    plan = uniform_plan([TableSpec("t", 8, 4)], Topology(nr_dpus=2), "row_wise")
    w = derive_work(plan, np.array([0, 1, 5, 6]), np.array([0, 3, 4]))
    assert w.lookups.tolist() == [2, 2]
    assert w.index_bytes.tolist() == [616 + 8 + 8, 616 + 8 + 16]
    assert w.output_bytes.tolist() == [24 + 2 * 16, 24 + 2 * 16]
    assert w.row_bytes.tolist() == [16, 16] and w.reduce_elems.tolist() == [8, 8]
    assert w.host_merge_elems == 4 * 4  # four partials of 4 elements

    hw = perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=2)
    p = profile_work(w, hw)
    # Kernel by hand, per DPU (both DPUs do the same): PrIM DMA alpha 77 + 0.5 B/cycle per read,
    # write alpha 61; 2 row reads of 16 B, one index block of 632/640 B, one output block of 56 B.
    for d, in_bytes in enumerate([632, 640]):
        dma = 2 * (77 + 0.5 * 16) + (77 + 0.5 * in_bytes) + (61 + 0.5 * 56)
        issue = 2 * hw.instructions_per_lookup + (2 + 1 + 1) * hw.instructions_per_dma + 8 * hw.cycles_fp32_add
        cycles = max(dma, issue, (dma + 11 * issue) / 16)
        assert p.modeled.per_dpu_kernel_s[d] == pytest.approx(cycles / 350e6, rel=1e-12)
    # One rank of 2 DPUs: padded to the larger buffer, bandwidth B(2) of the rank curve.
    push = hw.xfer_fixed_overhead_s + 2 * 640 / perfmodel.rank_bandwidth(hw, 2, "to_dpu")
    pull = hw.xfer_fixed_overhead_s + 2 * 56 / perfmodel.rank_bandwidth(hw, 2, "from_dpu")
    assert p.modeled.cpu_to_dpu_s == pytest.approx(push, rel=1e-12)
    assert p.modeled.dpu_to_cpu_s == pytest.approx(pull, rel=1e-12)
    merge = 16 * 4 / hw.host_merge_bytes_per_s
    assert p.modeled.total_s == pytest.approx(push + hw.launch_overhead_s + p.modeled.kernel_s + pull + merge)
    assert (p.bytes_to_dpu, p.padded_bytes_to_dpu, p.bytes_from_dpu, p.padded_bytes_from_dpu) == (1272, 1280, 112, 112)
    assert p.imbalance == 1.0 and p.host_cache_hits == 0


def test_profile_batch_of_engine_run_equals_model_of_its_work():
    tables = [TableSpec("a", 300, 8), TableSpec("b", 50, 12)]
    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=4) as tbe:
        idx = np.array([1, 2, 299, 0, 49, 7, 7, 7], dtype=np.int64)
        off = np.array([0, 2, 3, 5, 8], dtype=np.int64)
        tbe(idx, off)
        p = profile_batch(tbe, "upmem-400mhz-2560")
        expect = perfmodel.model_batch(tbe.last_stats.work(), perfmodel.get_profile("upmem-400mhz-2560", nr_dpus=4))
        assert isinstance(p, BatchProfile)
        assert p.modeled.as_dict() == expect.as_dict()
        assert p.nr_lookups == 8 and p.bytes_to_dpu == int(tbe.last_stats.bytes_to_dpu.sum())
        assert p.measured_s["route_s"] == tbe.last_stats.route_s
        assert p.measured_s["validate_s"] == tbe.last_stats.extra["validate_s"]
        text = p.format()
        assert "CPU->DPU push" in text and "4 DPUs" in text
    with pytest.raises(ValueError, match="no batch"):
        profile_batch(None)


def test_phase_table_has_every_phase_and_blank_for_unmodeled():
    lines = format_phase_table({"validate_s": 1e-3, "total_s": 2.0}, {"validate_s": None, "total_s": 5e-6})
    assert len(lines) == 1 + 7 + 1
    assert lines[1].split()[-1] == "-"  # validation is not modeled
    assert lines[-1].split()[-4:] == ["2.000", "s", "5.0", "us"]


# ------------------------------------------------------------------ derivation vs the engine


def _check_engine(plan: Plan, tables, trace, weighted: bool = False):
    with TableBatchedEmbeddingBags(tables, plan=plan, backend="emulator") as tbe:
        for idx, off, psw in trace.batches():
            tbe(idx, off, psw)
            derived = derive_work(plan, idx, off, psw)
            assert tbe.last_stats.nr_launches == 1
            assert work_mismatch(derived, tbe.last_stats.work()) == []


@pytest.mark.parametrize("fmt", ["fp32", "int32", "int8"])
@pytest.mark.parametrize("weighted", [False, True])
def test_derived_work_equals_engine_counters(fmt, weighted):
    # dims not multiples of 8 B, empty bags (poisson), skew: every padding and split rule matters
    tables = [TableSpec(f"t{i}", 700 + 300 * i, 5 + 6 * i, row_format=fmt) for i in range(3)]
    trace = synthetic_trace(
        tables, batch_size=97, num_batches=2, pooling=[0.5, 7, 40], alpha=1.3, seed=5, weighted=weighted
    )
    for layout in ("row_wise", "column_wise", "tiled", "table_wise"):
        _check_engine(uniform_plan(tables, Topology(nr_dpus=11, dpus_per_rank=4), layout), tables, trace, weighted)


def test_derived_work_with_replicas_and_host_cache():
    tables = [TableSpec("a", 40, 8), TableSpec("b", 30, 6)]
    # Rows 0-4 and 21 of table a on up to three DPUs (replicas pick bag % copies), rows 35-39 host-cached;
    # table b in two column slices on different DPUs.
    shards = [
        Shard(0, 0, 0, 8, range(20)),
        Shard(0, 1, 0, 8, np.arange(20, 35)),
        Shard(0, 2, 0, 8, np.array([0, 1, 2, 3, 4])),
        Shard(0, 3, 0, 8, np.array([2, 3, 4, 21])),
        Shard(1, 1, 0, 4, range(30)),
        Shard(1, 2, 4, 6, range(30)),
    ]
    plan = Plan(tables, Topology(nr_dpus=4, dpus_per_rank=2), shards, host_rows={0: np.arange(35, 40)})
    plan.validate()
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 9, size=2 * 50)
    idx = np.concatenate([rng.integers(0, 40, size=lengths[:50].sum()), rng.integers(0, 30, size=lengths[50:].sum())])
    idx[:30] = rng.integers(0, 6, size=30)  # plenty of replicated rows
    off = np.concatenate([[0], np.cumsum(lengths)])
    with TableBatchedEmbeddingBags(tables, plan=plan, backend="emulator") as tbe:
        tbe(idx, off)
        derived = derive_work(plan, idx, off)
        assert derived.host_cache_lookups > 0
        assert work_mismatch(derived, tbe.last_stats.work()) == []


def test_derived_work_with_partitioner_plan():
    tables = [TableSpec(f"t{i}", 2000, 16) for i in range(3)]
    trace = synthetic_trace(tables, batch_size=128, num_batches=2, pooling=12, alpha=1.3, seed=2)
    plan = build_plan(tables, trace, Topology(12), progress=False)
    _check_engine(plan, tables, trace)


def test_derived_work_scales_to_thousands_of_dpus_consistently():
    """Work is conserved across DPU counts: the same lookups and rows, only spread differently."""
    tables = [TableSpec(f"t{i}", 5000, 32) for i in range(4)]
    trace = synthetic_trace(tables, batch_size=256, pooling=16, alpha=0.8, seed=1, pooling_distribution="fixed")
    idx, off, _ = trace.batch(0)
    totals = []
    for n in (64, 640, 2560):
        w = derive_work(bench_plan(tables, n), idx, off)
        assert w.nr_dpus == n
        totals.append((w.lookups.sum(), (w.lookups * w.row_bytes).sum(), w.reduce_elems.sum()))
        assert np.all(w.index_bytes >= 616) and np.all(w.output_bytes >= 24)
    assert all(t == pytest.approx(totals[0]) for t in totals)


def test_derive_work_rejects_bad_batches():
    plan = uniform_plan([TableSpec("t", 8, 4)], Topology(nr_dpus=2))
    with pytest.raises(ValueError, match="outside"):
        derive_work(plan, np.array([8]), np.array([0, 1]))
    with pytest.raises(ValueError, match="T\\*B\\+1"):
        derive_work(
            uniform_plan([TableSpec("a", 8, 4), TableSpec("b", 8, 4)], Topology(2)), np.array([1]), np.array([0, 1])
        )
    with pytest.raises(ValueError, match="non-decreasing"):
        derive_work(plan, np.array([1, 2]), np.array([0, 2, 1, 2]))


# ------------------------------------------------------------------ updlrm bench


def test_bench_cli_tiny_config_emulated_and_derived():
    args = [
        "--tables",
        "2",
        "--rows",
        "300",
        "--dim",
        "8",
        "--batch-size",
        "32",
        "--pooling",
        "4",
        "--dpus",
        "64",
        "--emulate-dpus",
        "4",
        "--batches",
        "2",
        "--json",
    ]
    r = CliRunner().invoke(bench_command, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["result"] == "PASS" and d["derived"] and d["derivation_checked"]
    assert d["nr_dpus"] == 64 and d["emulated"] == 4 and d["torch_s"] > 0
    assert d["modeled_s"]["total_s"] > 0 and d["speedup"] == pytest.approx(d["torch_s"] / d["modeled_s"]["total_s"])
    assert d["lookups_per_batch"] == 2 * 32 * 4
    assert d["bytes_per_batch"]["cpu_to_dpu_padded"] >= d["bytes_per_batch"]["cpu_to_dpu"] > 0

    r = CliRunner().invoke(
        bench_command,
        [
            "--tables",
            "2",
            "--rows",
            "300",
            "--dim",
            "8",
            "--batch-size",
            "16",
            "--dpus",
            "4",
            "--batches",
            "1",
            "--format",
            "int8",
            "--weighted",
        ],
    )
    assert r.exit_code == 0, r.output
    for label in (
        "CPU->DPU push",
        "launch + kernel",
        "DPU->CPU pull",
        "CPU baseline: torch quantized byte-rowwise",
        "speedup",
        "bytes per batch",
        "PASS",
        "matches the engine's counters",
    ):
        assert label in r.output


def test_bench_cli_rejects_emulating_more_than_modeled():
    r = CliRunner().invoke(bench_command, ["--dpus", "4", "--emulate-dpus", "8", "--rows", "100", "--batches", "1"])
    assert r.exit_code != 0 and "cannot exceed" in str(r.exception)


# ------------------------------------------------------------------ the sweep, quick mode


def _load_sweeps():
    spec = importlib.util.spec_from_file_location("bench_sweeps", ROOT / "benchmarks" / "bench_sweeps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_quick_mode_writes_json_and_pngs(tmp_path):
    sweeps = _load_sweeps()
    tiny = dict(sweeps.QUICK)
    tiny.update(
        base=dict(sweeps.QUICK["base"], rows=500, batch_size=32, pooling=4),
        sweeps={
            "batch_size": [8, 32],
            "pooling": [1, 4],
            "dim": [8, 16],
            "alpha": [0.0, 1.05],
            "row_format": ["fp32", "int8"],
        },
        dpu_counts=[16, 64, 2560],
        plot_dpus=[16, 2560],
        emulate_dpus=16,
        partitioner_dpus=[16, 64],
    )
    sweeps.QUICK = tiny
    stem = tmp_path / "sw"
    doc = sweeps.main(["--quick", "--out", str(stem)])
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["all_passed"] and data["all_derivations_checked"]
    assert set(data["sweeps"]) == {"batch_size", "pooling", "dim", "alpha", "row_format", "dpus"}
    for name in ("batch_size", "pooling", "dim", "alpha", "row_format"):
        s = data["sweeps"][name]
        assert [pt["config"][name] for pt in s["points"]] == tiny["sweeps"][name]
        assert set(s["crossovers"]) == {"16", "64", "2560"}
        for pt in s["points"]:
            assert pt["torch_s"] > 0 and pt["passed"]
            for n in ("16", "64", "2560"):
                m = pt["modeled"][n]
                assert {
                    "cpu_to_dpu_s",
                    "kernel_s",
                    "dpu_to_cpu_s",
                    "host_merge_s",
                    "total_s",
                    "speedup",
                    "estimate_s",
                    "bytes_to_dpu",
                    "bytes_from_dpu",
                    "imbalance",
                } <= set(m)
                assert m["speedup"] == pytest.approx(pt["torch_s"] / m["total_s"])
            c = s["crossovers"]["2560"]
            assert sorted(map(str, c["dpu_wins_at"] + c["cpu_wins_at"])) == sorted(map(str, tiny["sweeps"][name]))
    plans = data["sweeps"]["dpus"]["plans"]
    assert set(plans) == {"row_wise", "partitioner"}
    assert plans["partitioner"]["emulator_check"]["passed"]
    assert plans["partitioner"]["emulator_check"]["derivation_checked"]
    assert data["summary"] and doc["meta"]["emulated_dpus"] == 16
    for suffix in ("speedup", "latency", "phases"):
        png = stem.with_name(f"sw_{suffix}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
