"""``updlrm demo`` on a tiny configuration, through click's CliRunner."""

import json

import numpy as np
from click.testing import CliRunner

from updlrm.cli import main

TINY = [
    "--batch-size",
    "16",
    "--batches",
    "2",
    "--dpus",
    "4",
    "--max-rows",
    "300",
    "--dim",
    "8",
    "--pooling",
    "4",
    "--backend",
    "emulator",
]


def test_demo_text_report():
    result = CliRunner().invoke(main, ["demo", *TINY])
    assert result.exit_code == 0, result.output
    out = result.output
    for needle in (
        "26 Criteo-Kaggle-like tables",
        "backend   emulator",
        "route + pack",
        "CPU->DPU push",
        "DPU->CPU pull",
        "merge partials",
        "modeled on UPMEM",
        "bytes per batch",
        "lookups per DPU",
        "max abs err vs torch",
        "PASS",
    ):
        assert needle in out, needle


def test_demo_json_is_complete_and_deterministic():
    runs = [
        CliRunner().invoke(main, ["demo", *TINY, "--json", "--seed", "3", "--row-format", fmt])
        for fmt in ("int8", "int8", "fp32")
    ]
    for r in runs:
        assert r.exit_code == 0, r.output
    a, b, c = (json.loads(r.output) for r in runs)
    assert a["result"] == "PASS" and a["backend"] == "emulator"
    assert a["lookups_per_batch"] == b["lookups_per_batch"] == c["lookups_per_batch"] > 0
    assert a["max_abs_err"] == b["max_abs_err"]
    assert a["bytes_per_batch"] == b["bytes_per_batch"]
    assert a["bytes_per_batch"]["dpu_to_cpu"] > 0 and a["bytes_per_batch"]["cpu_to_dpu"] > 0
    assert a["plan"]["nr_dpus"] == 4 and a["config"]["batch_size"] == 16
    for key in ("validate_s", "route_s", "push_s", "launch_s", "pull_s", "merge_s", "end_to_end_s"):
        assert a["measured_s"][key] >= 0
    assert a["modeled_s"]["end_to_end_s"] > 0 and a["modeled_s"]["route_s"] is None


def test_demo_reports_fail_when_results_are_wrong(monkeypatch):
    import updlrm.tbe

    original = updlrm.tbe.TableBatchedEmbeddingBags._run

    def off_by_a_little(self, batch, validate_s):
        out = original(self, batch, validate_s)
        out[0, 0] += np.float32(1e-3)
        return out

    monkeypatch.setattr(updlrm.tbe.TableBatchedEmbeddingBags, "_run", off_by_a_little)
    result = CliRunner().invoke(main, ["demo", *TINY])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_demo_with_a_saved_plan(tmp_path):
    from updlrm.partitioner.workloads import criteo_like_tables
    from updlrm.plan import uniform_plan
    from updlrm.specs import Topology

    plan = uniform_plan(criteo_like_tables(dim=8, max_rows=300), Topology(nr_dpus=3), "table_wise")
    path = plan.save(tmp_path / "plan.json")
    result = CliRunner().invoke(main, ["demo", *TINY, "--plan", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["plan"]["nr_dpus"] == 3 and report["plan"]["builder"] == "uniform_plan:table_wise"
