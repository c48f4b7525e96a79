"""Followers: column slices of a table split into the same rows on every lane copy the first
slice's routing each batch instead of routing every lookup again.

A slice follows an earlier slice of its table when lane i of both holds the same rows and
their routing tables agree (``link_followers`` in ``host/eb_tables.c``). Every test checks
the results against the reference and the per-DPU lookup counts against the partitioner's
router (``run_and_check``), and how many slices follow.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import random_weights
from test_routing import run_and_check, zipf_batch

from updlrm.host.engine import Engine
from updlrm.plan import Plan, Shard, column_bounds
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology


def sliced(tables: list[TableSpec], layouts: list[list[object]], slices: int) -> tuple[list[Shard], int]:
    """Each table's row layout (a list of row sets, one per shard) repeated in every column
    slice on DPUs of its own; returns the shards and the DPUs used."""
    shards, dpu = [], 0
    for t, (spec, rows_of) in enumerate(zip(tables, layouts)):
        bounds = column_bounds(spec, slices)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            for rows in rows_of:
                shards.append(Shard(t, dpu, lo, hi, rows))
                dpu += 1
    return shards, dpu


def blocks_with_replicas(nr_rows: int) -> list[object]:
    """Four blocks, the first two held twice (replica sets), and a list of hot rows."""
    q = nr_rows // 4
    return [range(q), range(q), range(q, 2 * q), range(q, 2 * q), range(2 * q, 3 * q), range(3 * q, nr_rows)]


@pytest.mark.parametrize("slices", [2, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_sliced_blocks_with_replicas_and_host_cache_follow(slices, weighted):
    rng = np.random.default_rng([slices, weighted])
    tables = [TableSpec("f", 4000, 12), TableSpec("q", 1000, 32, row_format=RowFormat.INT8, scale=0.25)]
    layouts = [blocks_with_replicas(4000) + [np.array([1, 2, 3999])], blocks_with_replicas(1000)]
    assert all(len(column_bounds(spec, slices)) == slices + 1 for spec in tables)
    shards, nr_dpus = sliced(tables, layouts, slices)
    plan = Plan(tables, Topology(nr_dpus), shards, host_rows={0: np.array([4, 5, 3000]), 1: np.array([0])})
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 300, 12, rng, weighted=weighted)
    for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
        _, stats, _ = run_and_check(plan, weights, indices, offsets, psw, pooling)
        assert stats.host_cache_hits > 0 and (stats.lookups > 0).all()
    with Engine(plan, weights) as engine:
        assert engine.follower_slices == 2 * (slices - 1)


@pytest.mark.parametrize("host", [False, True])
def test_sliced_explicit_entries_follow(host):
    """Rows dealt to shards at random (explicit entries), hot rows on several DPUs."""
    rng = np.random.default_rng(host)
    tables = [TableSpec("a", 500, 6), TableSpec("b", 300, 16, row_format=RowFormat.INT32, scale=1e-3)]
    layouts = []
    for spec in tables:
        owner = rng.integers(0, 4, spec.num_embeddings)
        layouts.append([np.union1d(np.flatnonzero(owner == p), np.arange(3)) for p in range(4)])
    shards, nr_dpus = sliced(tables, layouts, 3)
    host_rows = {0: np.array([0, 7, 499]), 1: np.array([3])} if host else {}
    plan = Plan(tables, Topology(nr_dpus), shards, host_rows=host_rows)
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 200, 10, rng, weighted=True)
    _, stats, _ = run_and_check(plan, weights, indices, offsets, psw)
    assert (stats.host_cache_hits > 0) == host
    with Engine(plan, weights) as engine:
        assert engine.follower_slices == 2 * 2


def test_slices_split_differently_route_themselves():
    """Slice 1 splits its rows at another row, slice 2 lists its replicas on other rows:
    neither follows slice 0 (their lookups reach other lanes), and the results hold."""
    rng = np.random.default_rng(5)
    tables = [TableSpec("t", 2000, 12)]
    shards = [Shard(0, 0, 0, 4, range(1000)), Shard(0, 1, 0, 4, range(1000, 2000))]
    shards += [Shard(0, 2, 4, 8, range(999)), Shard(0, 3, 4, 8, range(999, 2000))]
    shards += [Shard(0, 4, 8, 12, range(1000)), Shard(0, 5, 8, 12, range(1000, 2000))]
    shards += [Shard(0, 6, 8, 12, np.array([5, 6]))]
    plan = Plan(tables, Topology(7), shards)
    weights = random_weights(tables, rng)
    indices, offsets, _ = zipf_batch(tables, 200, 10, rng)
    run_and_check(plan, weights, indices, offsets)
    with Engine(plan, weights) as engine:
        assert engine.follower_slices == 0


@pytest.mark.parametrize("weighted", [False, True])
def test_followers_across_split_launches(weighted):
    """Little MRAM forces several launches: every launch's followers copy that launch's records."""
    rng = np.random.default_rng([6, weighted])
    tables = [TableSpec("a", 1000, 32)]
    layouts = [[range(500), range(500, 1000), np.array([0, 1, 999])]]
    shards, nr_dpus = sliced(tables, layouts, 2)
    rows_bytes = 500 * 64 + 16 * 3
    plan = Plan(tables, Topology(nr_dpus, mram_bytes_per_dpu=rows_bytes + 30_000), shards, host_rows={0: np.array([2])})
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 1500, 30, rng, weighted=weighted)
    _, stats, _ = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.nr_launches > 1 and stats.host_cache_hits > 0
    assert stats.lookups[:3].tolist() == stats.lookups[3:].tolist()


def test_two_routing_threads_give_the_same_inputs():
    """A batch big enough for two routing threads: the same outputs and per-DPU work as one."""
    rng = np.random.default_rng(7)
    tables = [TableSpec(f"t{t}", 3000, 16, row_format=RowFormat.INT8, scale=0.5) for t in range(4)]
    layouts = [blocks_with_replicas(3000) for _ in tables]
    shards, nr_dpus = sliced(tables, layouts, 4)
    plan = Plan(tables, Topology(nr_dpus), shards)
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 2048, 24, rng)
    assert indices.size > 1 << 16  # the engine's threshold for a second routing thread
    runs = []
    for threads in (1, 2):
        out, stats, _ = run_and_check(plan, weights, indices, offsets, psw, host_threads=threads)
        runs.append((out, stats.lookups, stats.bytes_to_dpu))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert np.array_equal(runs[0][1], runs[1][1]) and np.array_equal(runs[0][2], runs[1][2])
