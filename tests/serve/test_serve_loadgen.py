"""LoadGen driving the served model: responses are right, scenarios report, the QPS search bisects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("mlperf_loadgen", reason="MLPerf LoadGen is not installed (pip install 'updlrm[serve]')")

from updlrm import EmbeddingBagConfig
from updlrm.models import DLRM
from updlrm.serve import loadgen as driver
from updlrm.serve.loadgen import ScenarioResult, ServeSettings, find_max_qps, roc_auc, run_scenario
from updlrm.serve.model import ServedModel, load_model_file
from updlrm.serve.requests import criteo_feature_names, load_requests, write_synthetic_criteo


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    tables = [
        EmbeddingBagConfig(name=k, num_embeddings=300, embedding_dim=4, feature_names=[k])
        for k in criteo_feature_names()
    ]
    ref = DLRM(tables, 13, [8, 4], [16, 1], seed=3)
    ckpt = ref.save(d / "dlrm.pt")
    rs = load_requests(
        write_synthetic_criteo(d / "c.tsv", 300, seed=2), table_rows=dict.fromkeys(criteo_feature_names(), 300)
    )
    model = ServedModel.open(load_model_file(ckpt), rs, backend="emulator", nr_dpus=4)
    model.check(rs)
    yield ref, rs, model, d
    model.close()


def reference_outputs(ref, rs) -> np.ndarray:
    dense, kjt = rs.batch(np.arange(rs.num_samples))
    with torch.no_grad():
        return ref(dense, kjt).numpy()


@pytest.mark.parametrize("scenario", ["offline", "server"])
def test_every_response_is_the_reference_prediction_of_its_sample(setup, scenario):
    ref, rs, model, _ = setup
    settings = ServeSettings(
        scenario=scenario,
        accuracy=True,
        duration_s=0.2,
        expected_qps=2000,
        target_qps=3000,
        latency_bound_s=1.0,
        max_batch=32,
        max_wait_s=0.001,
        progress=False,
    )
    r = run_scenario(model, rs, settings)
    expected = reference_outputs(ref, rs)
    assert sorted(r.outputs) == list(range(rs.num_samples))  # every sample answered once
    got = np.stack([r.outputs[i] for i in range(rs.num_samples)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if scenario == "server":
        assert r.batch_sizes.max() <= 32 and r.batch_sizes.min() >= 1


def test_offline_performance_run_reports_phases(setup):
    _, rs, model, d = setup
    r = driver.run_offline(
        model,
        rs,
        ServeSettings(duration_s=0.3, expected_qps=500, max_batch=64, progress=False, log_dir=str(d / "logs")),
    )
    assert r.loadgen["result"] in ("VALID", "INVALID") and (d / "logs" / "mlperf_log_summary.txt").is_file()
    assert r.samples == int(r.batch_sizes.sum()) and r.samples >= 64
    assert r.batch_sizes.max() <= 64
    assert r.throughput > 0 and r.percentile(50) <= r.percentile(99)
    assert r.host_s["sparse_s"] > 0 and r.host_s["dense_s"] > 0 and r.host_s["gather_s"] > 0
    assert r.profiled_batches == min(driver.PROFILED_BATCHES, r.batch_sizes.size) and r.profiled_samples > 0
    assert r.modeled_s["kernel_s"] > 0 and r.modeled_s["total_s"] > 0 and r.engine_s["launch_s"] > 0
    d_ = r.to_dict()
    assert set(d_["latency_s"]) >= {"p50", "p95", "p99"} and d_["throughput_samples_per_s"] > 0


def test_server_run_at_a_low_rate_meets_a_loose_bound(setup):
    _, rs, model, _ = setup
    r = run_scenario(
        model,
        rs,
        ServeSettings(scenario="server", target_qps=100, latency_bound_s=10.0, duration_s=0.5, progress=False),
    )
    assert r.loadgen.get("result") in ("VALID", "INVALID")
    # About 50 queries: LoadGen's early-stopping p99 is about the slowest one, so the bound
    # is loose enough for a loaded CI machine's stalls (batches take milliseconds).
    assert r.samples >= 40 and r.percentile(99) < 10.0
    assert r.loadgen.get("performance_constraints_satisfied") is True


def test_the_qps_search_bisects_on_the_verdicts(setup, monkeypatch):
    _, rs, model, _ = setup
    tried = []

    def fake_run(model_, rs_, settings):
        tried.append(settings.target_qps)
        lat = np.full(10, 0.001 if settings.target_qps <= 300 else 0.5)
        return ScenarioResult("server", settings, 10, 1.0, lat, np.array([10]), loadgen={"result": "VALID"})

    monkeypatch.setattr(driver, "run_scenario", fake_run)
    best, runs = find_max_qps(model, rs, ServeSettings(latency_bound_s=0.03, progress=False), upper_qps=1000, steps=6)
    assert tried[:3] == [500.0, 250.0, 375.0]
    assert 300 - 1000 / 2**6 <= best <= 300
    assert all(r.valid == (r.settings.target_qps <= 300) for r in runs)


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        pos.size * neg.size
    )
    assert roc_auc(labels, scores) == pytest.approx(pairwise)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="scenario"):
        ServeSettings(scenario="multistream")
    with pytest.raises(ValueError, match="> 0"):
        dataclasses.replace(ServeSettings(), target_qps=0)


def test_confirmation_steps_down_until_valid(setup, monkeypatch):
    _, rs, model, _ = setup

    def fake_run(model_, rs_, settings):
        lat = np.full(10, 0.001 if settings.target_qps <= 800 else 0.5)
        return ScenarioResult("server", settings, 10, 1.0, lat, np.array([10]), loadgen={"result": "VALID"})

    monkeypatch.setattr(driver, "run_scenario", fake_run)
    final, runs = driver.confirm_server(model, rs, ServeSettings(latency_bound_s=0.03), 1000, retries=3, step=0.9)
    assert [round(r.settings.target_qps) for r in runs] == [1000, 900, 810, 729]
    assert final.valid and final.settings.target_qps == pytest.approx(729)
    final, runs = driver.confirm_server(model, rs, ServeSettings(latency_bound_s=0.03), 1000, retries=1)
    assert len(runs) == 2 and not final.valid
