"""``updlrm serve``: the whole command on small files, JSON and PNG outputs, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from updlrm import EmbeddingBagConfig
from updlrm.cli import main
from updlrm.models import DLRM
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.serve.requests import criteo_feature_names, write_synthetic_criteo
from updlrm.specs import TableSpec

needs_loadgen = pytest.mark.skipif(
    not __import__("updlrm.serve.loadgen", fromlist=["x"]).loadgen_available(),
    reason="MLPerf LoadGen is not installed (pip install 'updlrm[serve]')",
)

FAST = [
    "--duration",
    "0.3",
    "--search-steps",
    "2",
    "--search-duration",
    "0.3",
    "--backend",
    "emulator",
    "--dpus",
    "4",
    "--quiet",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    tables = [
        EmbeddingBagConfig(name=k, num_embeddings=200, embedding_dim=4, feature_names=[k])
        for k in criteo_feature_names()
    ]
    DLRM(tables, 13, [8, 4], [8, 1], seed=1).save(d / "dlrm.pt")
    write_synthetic_criteo(d / "c.tsv", 200, seed=0)
    tr = synthetic_trace([TableSpec("a", 100, 4), TableSpec("b", 50, 4)], batch_size=16, num_batches=4, seed=0)
    tr.save(d / "t.npz")
    return d


def run(args):
    result = CliRunner().invoke(main, ["serve", *map(str, args)])
    return result.exit_code, result.output


@needs_loadgen
def test_serve_a_dlrm_checkpoint_in_both_scenarios_as_json(files):
    code, out = run(
        [files / "c.tsv", "--model", files / "dlrm.pt", "--json", "--accuracy", "--png", files / "lat.png", *FAST]
    )
    assert code == 0, out
    doc = json.loads(out)
    assert [s["scenario"] for s in doc["scenarios"]] == ["offline", "server"]
    off, srv = doc["scenarios"]
    assert (
        off["samples"] > 0 and off["throughput_samples_per_s"] > 0 and off["loadgen"]["result"] in ("VALID", "INVALID")
    )
    assert set(off["latency_s"]) >= {"p50", "p95", "p99"}
    assert set(off["modeled_upmem_phases_s_per_batch"]) >= {"cpu_to_dpu_s", "kernel_s", "dpu_to_cpu_s", "total_s"}
    assert off["host_phases_s_per_batch"]["dense_s"] > 0
    runs = doc["server_search"]["runs"]  # 2 search runs, then failed confirmations (at most 2 by default)
    assert 2 <= len(runs) <= 4 and "target_qps" in srv
    assert [r["duration_s"] for r in runs[:2]] == [0.3, 0.3] and all(not r["valid"] for r in runs[2:])
    assert doc["accuracy"]["responses"] == 200 and 0 <= doc["accuracy"]["auc"] <= 1
    assert (files / "lat.png").stat().st_size > 1000


@needs_loadgen
def test_serve_text_output_shows_loadgen_summary_and_ours(files):
    code, out = run(
        [files / "t.npz", "--scenario", "server", "--target-qps", "200", "--latency-bound-ms", "1000", *FAST]
    )
    assert code == 0, out
    assert "MLPerf Results Summary" in out and "Result is :" in out
    assert "updlrm serve: Server at 200 QPS" in out and "p99" in out
    assert "embedding layer on UPMEM, modeled" in out


@needs_loadgen
@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda d: d / "missing.tsv", [], "no request file"),
        (lambda d: (d / "bad.tsv").write_text("1\t2\n") and d / "bad.tsv", [], "expected 40 tab-separated fields"),
        (lambda d: d / "t.npz", ["--model", "DLRM"], "needs dense features"),
        (lambda d: d / "c.tsv", ["--model", "JUNK"], "not a torch checkpoint"),
        (lambda d: d / "c.tsv", ["--model", "EMPTY"], "neither a DLRM checkpoint"),
    ],
)
def test_bad_inputs_give_one_line_errors(files, make, extra, message):
    (files / "junk.pt").write_bytes(b"junk")
    torch.save({"x": torch.zeros(1)}, files / "empty.pt")
    extra = [
        {"DLRM": files / "dlrm.pt", "JUNK": files / "junk.pt", "EMPTY": files / "empty.pt"}.get(x, x) for x in extra
    ]
    code, out = run([make(files), *extra, *FAST])
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], out


@needs_loadgen
def test_an_unavailable_backend_is_one_line(files):
    from updlrm.backends import BackendUnavailable, resolve_backend

    try:
        resolve_backend("hw")
        pytest.skip("real DPUs are present here")
    except BackendUnavailable:
        pass
    code, out = run([files / "t.npz", "--backend", "hw", "--quiet"])
    assert code == 1 and len(out.strip().splitlines()) == 1 and out.startswith("Error: backend 'hw'"), out


@needs_loadgen
def test_rows_beyond_the_model_tables_are_refused(files, tmp_path):
    state = {f"embedding_bags.{k}.weight": torch.zeros(10, 4) for k in ("a", "b")}
    torch.save(state, tmp_path / "ebc.pt")
    code, out = run([files / "t.npz", "--model", tmp_path / "ebc.pt", *FAST])
    assert code == 1 and "has 10 rows" in out, out


def test_missing_loadgen_says_how_to_install(files, monkeypatch):
    import updlrm.serve.loadgen as lgmod

    monkeypatch.setattr(lgmod, "loadgen_available", lambda: False)
    monkeypatch.setattr("updlrm.serve.cli.loadgen_available", lambda: False)
    code, out = run([files / "c.tsv", *FAST])
    assert code == 1 and "pip install 'updlrm[serve]'" in out and len(out.strip().splitlines()) == 1


def test_make_criteo_writes_a_readable_file(tmp_path):
    from updlrm.serve.cli import make_criteo_command
    from updlrm.serve.requests import load_requests

    result = CliRunner().invoke(make_criteo_command, [str(tmp_path / "x.tsv"), "--samples", "25"])
    assert result.exit_code == 0, result.output
    rs = load_requests(tmp_path / "x.tsv", max_rows=100)
    assert rs.num_samples == 25 and np.all(rs.max_index()["C3"] < 100)
