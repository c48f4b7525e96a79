"""`updlrm bench` and `updlrm demo` time the like-for-like CPU baseline and give a verdict only outside the spread."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from updlrm.baselines import Comparison, Timing
from updlrm.batch_loop import mean_timing, run_batches
from updlrm.bench import bench_command, format_bench, run_bench
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.specs import TableSpec
from updlrm.tbe import TableBatchedEmbeddingBags

TINY = dict(tables=2, rows=300, dim=8, batch_size=16, pooling=4, dpus=4, batches=2)

OPS = {
    "fp32": "torch fp32 embedding_bag",
    "int8": "torch quantized byte-rowwise embedding_bag (int8)",
    "int32": "torch fp32 embedding_bag on the dequantized int32 rows",
}


@pytest.mark.parametrize("fmt", ["fp32", "int8", "int32"])
def test_bench_json_names_the_like_for_like_baseline_and_its_spread(fmt):
    args = [
        "--tables",
        "2",
        "--rows",
        "300",
        "--dim",
        "8",
        "--batch-size",
        "16",
        "--pooling",
        "4",
        "--dpus",
        "4",
        "--batches",
        "2",
        "--format",
        fmt,
        "--json",
    ]
    r = CliRunner().invoke(bench_command, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["baseline"].startswith(OPS[fmt])
    t = d["torch_timing"]
    assert t["runs"] >= 5 and 0 < t["best_s"] <= t["median_s"] <= t["worst_s"]
    assert t["spread"] == pytest.approx(t["worst_s"] / t["best_s"] - 1)
    assert d["torch_s"] == pytest.approx(t["best_s"])
    # The planner's host cost model's prediction for the same batch is reported beside it.
    assert d["host_model_s"] > 0 and "host cost model" in d["host_model"]
    for key, total in (("speedup", d["modeled_s"]["total_s"]), ("speedup_estimate", d["estimate_s"])):
        low, high = d[f"{key}_range"]
        assert d[key] == pytest.approx(t["best_s"] / total)
        assert low == pytest.approx(min(t["best_s"], t["median_s"]) / total)
        assert high == pytest.approx(max(t["best_s"], t["median_s"]) / total)
        expected = "DPUs win" if low > 1 else "CPU wins" if high < 1 else "within the spread: no verdict"
        assert d[f"{key}_verdict"] == expected


@pytest.fixture(scope="module")
def tiny_result():
    return run_bench(**TINY)


@pytest.mark.parametrize(
    "cpu, dpu, verdict",
    [
        ((2e-3,) * 5, 1e-3, "DPUs win"),
        ((1e-3,) * 5, 2e-3, "CPU wins"),
        ((1e-3, 1e-3, 3e-3, 3e-3, 3e-3), 2e-3, "within the spread: no verdict"),  # median 3 ms, best 1 ms
    ],
)
def test_bench_report_gives_a_verdict_only_outside_the_spread(tiny_result, cpu, dpu, verdict):
    r = dataclasses.replace(
        tiny_result,
        torch_timing=Timing(cpu),
        torch_s=min(cpu),
        modeled_s=dict(tiny_result.modeled_s, total_s=dpu),
        estimate_s=dpu,
    )
    text = format_bench(r)
    lines = [line for line in text.splitlines() if "-> speedup" in line]
    assert len(lines) == 2 and all(line.endswith(verdict) for line in lines)
    assert str(Timing(cpu)) in text
    if verdict.startswith("within"):
        assert "DPUs win" not in text and "CPU wins" not in text
    assert r.to_dict()["speedup_verdict"] == verdict == Comparison(Timing(cpu), dpu).verdict


def test_run_batches_times_the_baseline_it_is_given():
    tables = [TableSpec("a", 40, 4, row_format="int8", scale=0.25), TableSpec("b", 30, 4)]
    trace = synthetic_trace(tables, batch_size=8, num_batches=3, pooling=3, seed=2)
    calls = []

    class Spy:
        def time(self, idx, off, batch_size, psw=None):
            calls.append((idx.size, batch_size))
            return Timing((1e-3,) * 5), None

    import torch

    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=2) as tbe:
        weights = [torch.from_numpy(tbe.weights(t)) for t in range(2)]
        runs = list(run_batches(tbe, trace, weights, baseline=Spy()))
        default = list(run_batches(tbe, trace, weights))
    assert len(calls) == 3 and all(b == 8 for _, b in calls)
    assert all(r.torch == Timing((1e-3,) * 5) and r.torch_s == 1e-3 for r in runs)
    # The default baseline is the module's own like-for-like one, and the reference is torch's fp32 output.
    assert all(len(r.torch.samples) >= 5 for r in default)
    for r in runs:
        np.testing.assert_allclose(r.output, r.reference, rtol=1.3e-6, atol=1e-5)


def test_mean_timing_keeps_best_and_worst_means():
    t = mean_timing([Timing((1.0, 1.5, 9.0, 2.0, 1.2)), Timing((2.0, 2.0, 2.0, 2.0, 4.0, 2.0))])
    assert t.best == pytest.approx(1.5) and t.worst == pytest.approx(6.5) and len(t.samples) == 5
    with pytest.raises(ValueError):
        mean_timing([])


def test_demo_json_carries_the_baseline_and_its_spread():
    from updlrm.demo import demo_command

    r = CliRunner().invoke(
        demo_command,
        [
            "--batch-size",
            "16",
            "--batches",
            "1",
            "--dpus",
            "4",
            "--backend",
            "emulator",
            "--max-rows",
            "200",
            "--row-format",
            "int8",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["baseline"] == OPS["int8"]
    assert d["torch_timing"]["runs"] >= 5 and d["torch_s"] == pytest.approx(d["torch_timing"]["best_s"])
