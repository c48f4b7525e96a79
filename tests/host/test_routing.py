"""Routing of the C host runtime: every routing kind against torch and against the partitioner's rule.

The runtime picks per column slice: row blocks tiling the table (bucket + one step, or a
search for very uneven blocks) with replicated / host-cached rows as exceptions, or
explicit per-row entries (4 bytes, or 8 when lane and local row do not fit). A bag's
end is closed by scanning every lane (few lanes) or by the lanes it touched (many).
Each test checks results against the reference and the per-DPU lookup counts against
``updlrm.partitioner.routing`` (replica = holders[b mod r], host cache first).
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference

from updlrm.host.engine import Engine, EngineError
from updlrm.partitioner.routing import SliceRouter, column_slices, host_mask
from updlrm.plan import Plan, Shard, uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology


def expected_lookups(plan: Plan, indices: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-DPU lookups and host-cache hits as updlrm.partitioner.routing routes them."""
    nr_tables = len(plan.tables)
    batch = (offsets.size - 1) // nr_tables
    per_dpu = np.zeros(plan.topology.nr_dpus, dtype=np.int64)
    hits = 0
    for t in range(nr_tables):
        lo, hi = offsets[t * batch], offsets[(t + 1) * batch]
        rows = indices[lo:hi]
        bags = np.repeat(np.arange(batch), np.diff(offsets[t * batch : (t + 1) * batch + 1]))
        host = host_mask(plan, t, rows)
        hits += int(host.sum())
        for col_start, _ in column_slices(plan, t):
            if host.all():
                continue  # the partitioner's router needs a shard; the engine does not
            shard, _ = SliceRouter(plan, t, col_start).route(rows[~host], bags[~host])
            np.add.at(per_dpu, np.array([plan.shards[s].dpu for s in shard], dtype=np.int64), 1)
    return per_dpu, hits


def run_and_check(plan, weights, indices, offsets, psw=None, pooling=PoolingMode.SUM, **engine_args):
    expected, magnitude = reference(plan.tables, weights, indices, offsets, psw, pooling)
    with Engine(plan, weights, **engine_args) as engine:
        out, stats = engine.run(indices, offsets, psw, pooling)
        routing_bytes = engine.routing_bytes
    assert_matches(plan.tables, out, expected, magnitude)
    per_dpu, hits = expected_lookups(plan, indices, offsets)
    assert stats.lookups.tolist() == per_dpu.tolist()
    assert stats.host_cache_hits == hits
    return out, stats, routing_bytes


def zipf_batch(tables, batch, pooling, rng, alpha=1.3, weighted=False):
    indices, offsets = [], [0]
    for spec in tables:
        for _ in range(batch):
            n = int(rng.integers(0, pooling + 1))
            indices.append((rng.zipf(alpha, n) - 1) % spec.num_embeddings)
            offsets.append(offsets[-1] + n)
    indices = np.concatenate(indices).astype(np.int64)
    psw = rng.uniform(-2, 2, indices.size).astype(np.float32) if weighted else None
    return indices, np.array(offsets, dtype=np.int64), psw


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("fmt", [RowFormat.FP32, RowFormat.INT8])
def test_blocks_with_replicated_and_host_cached_exceptions(weighted, fmt):
    """Blocks tile the table; a few hot rows are replicated (also held by their block) or host-cached."""
    rng = np.random.default_rng([weighted, fmt == RowFormat.INT8])
    tables = [TableSpec("t", 4000, 12, row_format=fmt, scale=0.25)]
    # Replica shards listed before and after the blocks: plan order decides holder order.
    shards = [Shard(0, 5, 0, 12, np.array([0, 1, 2, 1500]))]
    shards += [Shard(0, d, 0, 12, range(1000 * d, 1000 * (d + 1))) for d in range(4)]
    shards += [Shard(0, 4, 0, 12, np.array([1, 2, 3, 2999]))]
    plan = Plan(tables, Topology(6), shards, host_rows={0: np.array([4, 5, 3999])})
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 300, 12, rng, weighted=weighted)
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.host_cache_hits > 0 and stats.lookups[4] > 0 and stats.lookups[5] > 0
    # No per-row table: a bitmap bit per row and small tables.
    assert routing_bytes < 4000


def test_uneven_blocks_take_the_search_path():
    """Blocks of 1 and 10,000 rows: buckets cannot be shorter than every block."""
    rng = np.random.default_rng(1)
    tables = [TableSpec("t", 20_003, 4)]
    edges = [0, 1, 2, 3, 10_003, 20_003]
    shards = [Shard(0, d, 0, 4, range(a, b)) for d, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    plan = Plan(tables, Topology(5), shards)
    weights = random_weights(tables, rng)
    indices, offsets, _ = random_batch(tables, 64, 20, rng)
    indices[:3] = [0, 1, 2]  # the one-row blocks
    run_and_check(plan, weights, indices, offsets)


@pytest.mark.parametrize("host", [False, True])
def test_explicit_entries_with_replicas_in_plan_order(host):
    """Rows dealt to shards at random, hot rows on several DPUs, shards in shuffled plan order."""
    rng = np.random.default_rng(host)
    tables = [TableSpec("a", 500, 6), TableSpec("b", 300, 16, row_format=RowFormat.INT32, scale=1e-3)]
    shards = []
    for t, spec in enumerate(tables):
        owner = rng.integers(0, 4, spec.num_embeddings)
        for p in range(4):
            rows = np.flatnonzero(owner == p)
            hot = np.array([r for r in range(6) if owner[r] != p], dtype=np.int64)
            shards.append(Shard(t, (p + 3 * t) % 7, 0, spec.embedding_dim, np.union1d(rows, hot)))
    shards = [shards[i] for i in rng.permutation(len(shards))]
    host_rows = {0: np.array([0, 7, 499]), 1: np.array([3])} if host else {}
    plan = Plan(tables, Topology(7), shards, host_rows=host_rows)
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 200, 10, rng, weighted=True)
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert (stats.host_cache_hits > 0) == host
    # Four bytes per row and slice (plus small tables), not eight.
    assert routing_bytes < 4 * 800 + 4000


@pytest.mark.parametrize("pooling", [1, 3, 64])
def test_scanned_and_listed_lanes(pooling):
    """40 lanes per slice: bags of 1 or 3 lookups list the lanes they touch, bags of 64 scan all."""
    rng = np.random.default_rng(pooling)
    tables = [TableSpec("a", 4000, 8), TableSpec("b", 977, 4, row_format=RowFormat.INT8)]
    plan = uniform_plan(tables, Topology(nr_dpus=40), "row_wise")
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 150, pooling, rng, weighted=pooling == 3)
    for pooling_mode in (PoolingMode.SUM, PoolingMode.MEAN):
        run_and_check(plan, weights, indices, offsets, psw, pooling_mode)


def test_eight_byte_entries_when_lanes_and_rows_do_not_fit_four():
    """2,048 lanes (11 bits + codes) and a 2M-row explicit shard (21 bits): entries need 8 bytes."""
    rng = np.random.default_rng(2)
    nr_rows, nr_dpus = 1 << 21, 2048
    tables = [TableSpec("big", nr_rows, 2)]
    # Every row but row 1 (held by DPU 1): a list of consecutive rows would route as a block.
    shards = [Shard(0, 0, 0, 2, np.delete(np.arange(nr_rows), 1))]
    shards += [Shard(0, d, 0, 2, np.array([d, nr_rows - d])) for d in range(1, nr_dpus)]
    plan = Plan(tables, Topology(nr_dpus), shards)
    weights = [rng.standard_normal((nr_rows, 2), dtype=np.float32)]
    indices = np.concatenate([rng.integers(0, 3000, 3000), rng.integers(nr_rows - 3000, nr_rows, 1000)])
    offsets = np.arange(0, indices.size + 1, 8, dtype=np.int64)
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets)
    assert routing_bytes >= 8 * nr_rows
    assert (stats.lookups[1:] > 0).sum() > 500


@pytest.mark.parametrize("weighted", [False, True])
def test_split_launches_keep_replicas_and_host_cache(weighted):
    """Little MRAM forces several launches; host-cached rows and replicas are routed per launch."""
    rng = np.random.default_rng(3)
    tables = [TableSpec("a", 1000, 32), TableSpec("q", 600, 8, row_format=RowFormat.INT8, scale=0.5)]
    rows_bytes = 1000 * 128 // 2 + 8 * 600 // 2 + 16 * 3
    shards = [
        Shard(0, 0, 0, 32, range(500)),
        Shard(0, 1, 0, 32, range(500, 1000)),
        Shard(0, 2, 0, 32, np.array([0, 1, 999])),
        Shard(1, 0, 0, 8, range(300)),
        Shard(1, 1, 0, 8, range(300, 600)),
    ]
    plan = Plan(
        tables,
        Topology(3, mram_bytes_per_dpu=rows_bytes + 60_000),
        shards,
        host_rows={0: np.array([2, 3]), 1: np.array([0])},
    )
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 500, 30, rng, weighted=weighted)
    _, stats, _ = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.nr_launches > 1 and stats.host_cache_hits > 0 and stats.lookups[2] > 0


def test_host_cached_weights_are_checked_like_dpu_weights():
    tables = [TableSpec("q", 10, 4, row_format=RowFormat.INT32)]
    plan = uniform_plan(tables, Topology(nr_dpus=1), "table_wise")
    plan.host_rows[0] = np.array([3])
    with Engine(plan, [np.ones((10, 4), np.int32)]) as engine:
        with pytest.raises(EngineError, match=r"per_sample_weights\[1\] = 1e\+06"):
            engine.run(np.array([1, 3]), np.array([0, 2]), np.array([1.0, 1e6], np.float32))
        out, stats = engine.run(np.array([1, 3]), np.array([0, 2]), np.array([1.0, 2.5], np.float32))
    assert out.tolist() == [[3.5] * 4] and stats.host_cache_hits == 1


@pytest.mark.parametrize("weighted", [False, True])
def test_every_row_host_cached(weighted):
    """Tables whose every row is host-cached (one with no shard, one also on a DPU): every
    lookup is a host-cache hit (slot = row, no routing table); an index outside is named."""
    rng = np.random.default_rng([4, weighted])
    tables = [TableSpec("h", 30, 5), TableSpec("d", 30, 5), TableSpec("q", 40, 4, row_format=RowFormat.INT8)]
    shards = [Shard(1, 1, 0, 5, range(30)), Shard(2, 0, 0, 4, range(40))]
    plan = Plan(tables, Topology(2), shards, host_rows={0: np.arange(30), 2: np.arange(40)})
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 20, 6, rng, weighted=weighted)
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.lookups[0] == 0 and stats.host_cache_hits == offsets[20] + offsets[60] - offsets[40]
    assert routing_bytes < 4000
    bad = indices.copy()
    first = offsets[3] + 1  # of table 0; table 2's bad index comes later
    bad[[first, offsets[40]]] = [30, -1]
    with (
        Engine(plan, weights) as engine,
        pytest.raises(EngineError, match=rf"table 0: indices\[{first}\] = 30 is outside"),
    ):
        engine.run(bad, offsets, psw)


def test_build_plan_end_to_end():
    """A partitioner plan (graph-partitioned row sets, replicas, host cache) against torch and its own router."""
    from updlrm.partitioner.placement import build_plan
    from updlrm.partitioner.workloads import synthetic_trace

    rng = np.random.default_rng(5)
    tables = [TableSpec(f"t{i}", 3000, 16) for i in range(3)]
    trace = synthetic_trace(tables, batch_size=256, num_batches=2, pooling=12, alpha=1.2, seed=5)
    plan = build_plan(tables, trace, Topology(12), progress=False, host_cache_bytes=16 << 10)
    weights = random_weights(tables, rng)
    for i in range(2):
        indices, offsets, _ = trace.batch(i)
        run_and_check(plan, weights, indices, offsets)


@pytest.mark.parametrize("weighted", [False, True])
def test_host_cache_sums_on_several_threads_as_on_one(weighted):
    """Over 65,536 host-cached lookups the host-cache sum splits its tables over threads
    (each table's columns have one writer): the same bits as one thread, and right."""
    rng = np.random.default_rng([weighted, 31])
    tables = [
        TableSpec("f", 900, 24),
        TableSpec("q", 700, 40, row_format=RowFormat.INT8, scale=0.5),
        TableSpec("i", 500, 16, row_format=RowFormat.INT32, scale=2.0**-16),
        TableSpec("g", 800, 8),
    ]
    plan = Plan(tables, Topology(2), [], host_rows={t: np.arange(s.num_embeddings) for t, s in enumerate(tables)})
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 2000, 40, rng, weighted=weighted)
    assert indices.size > 2 * 65_536
    one, stats, _ = run_and_check(plan, weights, indices, offsets, psw, host_threads=1)
    for threads in (2, 3):
        out, _, _ = run_and_check(plan, weights, indices, offsets, psw, host_threads=threads)
        assert np.array_equal(out, one), threads
    assert stats.host_cache_hits == indices.size
