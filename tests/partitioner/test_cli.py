"""`updlrm plan build|show|evaluate` through click's CliRunner."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from updlrm.cli import main
from updlrm.partitioner.placement import evaluate_plan
from updlrm.partitioner.workloads import load_trace
from updlrm.plan import Plan

SYNTH = ["--synthetic", "--batch-size", "64", "--batches", "3", "--pooling", "6"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    tables = [
        {"name": "users", "num_embeddings": 3000, "embedding_dim": 16},
        {"name": "items", "num_embeddings": 800, "embedding_dim": 8, "row_format": "int8", "scale": 0.5},
    ]
    (d / "tables.json").write_text(json.dumps({"tables": tables}))
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "build",
            "--tables",
            str(d / "tables.json"),
            *SYNTH,
            "--dpus",
            "16",
            "-o",
            str(d / "plan.json"),
            "--save-trace",
            str(d / "trace.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    return d, result.output


def test_build_prints_summary_and_writes_plan(built):
    d, output = built
    assert "users" in output and "items" in output and "modeled batch" in output
    plan = Plan.load(d / "plan.json")
    trace = load_trace(d / "trace.npz")
    assert plan.workload_hash == trace.hash()
    assert [t.name for t in plan.tables] == ["users", "items"]
    np.testing.assert_allclose(plan.expected_load, evaluate_plan(plan, trace).load_per_dpu)


def test_show_with_png(built):
    d, _ = built
    result = CliRunner().invoke(main, ["plan", "show", str(d / "plan.json"), "--png", str(d / "load.png")])
    assert result.exit_code == 0, result.output
    assert "rank 0" in result.output
    assert (d / "load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_on_another_trace(built):
    d, _ = built
    result = CliRunner().invoke(
        main,
        ["plan", "evaluate", str(d / "plan.json"), *SYNTH[:-4], "--batches", "5", "--json", str(d / "report.json")],
    )
    assert result.exit_code == 0, result.output
    assert "is not the one the plan was built for" in result.output
    report = json.loads((d / "report.json").read_text())
    assert len(report["load_per_dpu"]) == 16 and report["modeled"]["total_s"] > 0
    same = CliRunner().invoke(main, ["plan", "evaluate", str(d / "plan.json"), "--trace", str(d / "trace.npz")])
    assert same.exit_code == 0 and "is not the one" not in same.output


def test_criteo_tables_and_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "plan",
            "build",
            "--tables",
            "criteo",
            "--max-rows",
            "500",
            "--dim",
            "8",
            *SYNTH,
            "--dpus",
            "32",
            "-o",
            str(tmp_path / "c.json"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(Plan.load(tmp_path / "c.json").tables) == 26
    both = runner.invoke(main, ["plan", "build", "--tables", "criteo", "--dpus", "4", "-o", str(tmp_path / "x.json")])
    assert both.exit_code != 0 and "exactly one of --trace" in both.output
    missing = runner.invoke(
        main, ["plan", "build", "--tables", "nope.json", *SYNTH, "--dpus", "4", "-o", str(tmp_path / "x.json")]
    )
    assert missing.exit_code != 0 and "neither 'criteo'" in missing.output
    (tmp_path / "huge.json").write_text(
        json.dumps([{"name": "huge", "num_embeddings": 10_000_000, "embedding_dim": 128}])
    )
    full = runner.invoke(
        main,
        [
            "plan",
            "build",
            "--tables",
            str(tmp_path / "huge.json"),
            *SYNTH,
            "--dpus",
            "2",
            "-o",
            str(tmp_path / "x.json"),
            "--quiet",
        ],
    )
    assert full.exit_code != 0 and "table huge needs 5.1 GB" in full.output
    (tmp_path / "bad.json").write_text("{}")
    bad = runner.invoke(main, ["plan", "show", str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "not an updlrm plan" in bad.output


@pytest.mark.parametrize("holdout", ["0", "0.34"])
def test_build_holdout_reports_in_sample_and_held_out(tmp_path, holdout):
    tables = [{"name": "a", "num_embeddings": 500, "embedding_dim": 8}]
    (tmp_path / "tables.json").write_text(json.dumps({"tables": tables}))
    args = ["plan", "build", "--tables", str(tmp_path / "tables.json"), *SYNTH, "--dpus", "4"]
    result = CliRunner().invoke(main, [*args, "--holdout", holdout, "-o", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    meta = Plan.load(tmp_path / "p.json").metadata
    if holdout == "0":
        assert "held_out" not in meta and "held-out batch" not in result.output
    else:
        # 3 batches: the last one is held out, and the summary quotes both estimates.
        assert meta["held_out"]["batches"] == 1
        assert f"on 1 held-out batch(es) it was not built from {meta['held_out']['modeled_s'] * 1e3:.3f} ms" in (
            result.output
        )
        assert f"estimate on the build trace {meta['in_sample']['modeled_s'] * 1e3:.3f} ms" in result.output
