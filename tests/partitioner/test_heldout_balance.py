"""Held-out DPU balance: the sampling-noise floor of the imbalance, and a layout search that sees per-batch stragglers."""

import numpy as np
import pytest

from updlrm.partitioner import search, straggler
from updlrm.partitioner.evaluate import noise_floor
from updlrm.partitioner.placement import build_plan, evaluate_plan
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.plan import Plan, Shard
from updlrm.specs import TableSpec, Topology


def _data_parallel_plan(tables, n):
    """Every table whole on every DPU: sample b goes to DPU b mod n, so every DPU expects the same load."""
    shards = [
        Shard(t, d, 0, spec.embedding_dim, range(spec.num_embeddings))
        for t, spec in enumerate(tables)
        for d in range(n)
    ]
    return Plan(tables=tables, topology=Topology(n), shards=shards)


def test_noise_floor_is_the_imbalance_of_an_evenly_loaded_plan_and_shrinks_with_the_trace():
    # Equal expected loads: whatever imbalance the trace shows is sampling noise, which
    # the floor should predict, bags of several lookups included (dispersion > 1).
    tables = [TableSpec("a", 2000, 8), TableSpec("b", 500, 8)]
    plan = _data_parallel_plan(tables, 64)
    trace = synthetic_trace(tables, batch_size=256, num_batches=40, pooling=6, alpha=1.0, co_occurrence=0.5, seed=2)
    short, _ = trace.split(0.1)
    figures = []
    for part in (short, trace):
        report = evaluate_plan(plan, part)
        figures.append((report.imbalance, report.noise_floor))
        assert report.noise_floor > 1.0
        assert abs(report.imbalance - report.noise_floor) < 0.35 * (report.noise_floor - 1.0)
    (_, floor_short), (_, floor_long) = figures
    # 10x the batches: about 1/sqrt(10) of the excess.
    assert floor_long - 1.0 < 0.45 * (floor_short - 1.0)


def test_noise_floor_follows_poisson_counts():
    rng = np.random.default_rng(5)
    for mean in (50.0, 800.0):
        loads = rng.poisson(mean, size=(8, 512)).astype(float)
        floors = noise_floor(loads)
        drawn = [(d.max() / d.mean()) for d in rng.poisson(mean * 8, size=(200, 512)).astype(float)]
        assert floors == pytest.approx(float(np.mean(drawn)), rel=0.01)


def test_part_dispersion_falls_to_poisson_with_more_parts():
    bags = np.bincount(np.random.default_rng(0).poisson(8, size=5000) * 3)  # lookups come 3 at a time
    one, many = straggler.part_dispersion(bags, 1), straggler.part_dispersion(bags, 64)
    assert one == pytest.approx(3.0, rel=0.05)  # Var/mean of 3 x Poisson(8): 9 * 8 / 24
    assert many == pytest.approx(1.0 - 1 / 64 + 3.0 / 64, rel=0.01)


@pytest.fixture(scope="module")
def skewed():
    # Hot rows and whole tables fill a small host cache, the DPUs serve the tail: a few
    # bags per DPU and batch, each bringing several lookups of a cold topic at once.
    tables = [TableSpec(f"t{i}", 20_000, 32) for i in range(4)]
    trace = synthetic_trace(tables, batch_size=256, num_batches=24, pooling=32, alpha=1.05, co_occurrence=0.6, seed=0)
    return tables, *trace.split(1 / 3)


def test_straggler_aware_search_is_faster_and_better_balanced_held_out(skewed, monkeypatch):
    tables, build, held = skewed

    def held_out():
        plan = build_plan(
            tables, build, Topology(64), graph="none", holdout=0, host_cache_bytes=4 << 20, progress=False
        )
        return evaluate_plan(plan, held)

    new = held_out()
    with monkeypatch.context() as m:
        # The search as it was: each DPU at its mean load, no straggler.
        m.setattr(search, "straggler_z", lambda n: 0.0)
        old = held_out()
    assert new.modeled.total_s < 0.97 * old.modeled.total_s
    assert new.batch_imbalance < old.batch_imbalance - 0.1
    assert new.imbalance < old.imbalance
    assert new.imbalance <= new.noise_floor + 0.02
