"""Engine (C host runtime + DPU kernel on the emulator) against torch / exact integer sums."""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from updlrm.host.engine import BatchStats, Engine, EngineError
from updlrm.plan import Plan, Shard, uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology


def check(plan, weights, indices, offsets, psw=None, pooling=PoolingMode.SUM, *, nr_tasklets=16, engine=None):
    expected, magnitude = reference(plan.tables, weights, indices, offsets, psw, pooling)
    if engine is None:
        with Engine(plan, weights, nr_tasklets=nr_tasklets) as e:
            out, stats = e.run(indices, offsets, psw, pooling)
    else:
        out, stats = engine.run(indices, offsets, psw, pooling)
    assert out.dtype == np.float32 and out.shape == expected.shape
    assert_matches(plan.tables, out, expected, magnitude)
    return out, stats


MIXED_TABLES = [
    TableSpec("f_odd", 97, 7),
    TableSpec("i32", 60, 16, row_format=RowFormat.INT32, scale=2.0**-20),
    TableSpec("i8_odd", 45, 9, row_format=RowFormat.INT8, scale=0.03),
    TableSpec("f_one_row", 1, 3),
    TableSpec("f_wide", 33, 130),
]


@pytest.mark.parametrize("layout", ["table_wise", "row_wise", "column_wise", "tiled"])
@pytest.mark.parametrize("pooling", [PoolingMode.SUM, PoolingMode.MEAN])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_uniform_layout(layout, pooling, weighted):
    rng = np.random.default_rng([hash(layout) % 1000, int(pooling), weighted])
    plan = uniform_plan(MIXED_TABLES, Topology(nr_dpus=6), layout, column_slices=3)
    weights = random_weights(MIXED_TABLES, rng)
    indices, offsets, psw = random_batch(MIXED_TABLES, 37, 12, rng, weighted=weighted)
    check(plan, weights, indices, offsets, psw, pooling)


def hand_made_plan(tables, nr_dpus):
    """Explicit row sets, replicated hot rows (also across ranges), host-cached rows, column slices."""
    shards = []
    a = tables[0]  # fp32, 2 column slices; rows split by parity, rows 0..4 replicated on a third DPU
    even, odd = np.arange(0, a.num_embeddings, 2), np.arange(1, a.num_embeddings, 2)
    shards += [Shard(0, 0, 0, 4, even), Shard(0, 1, 0, 4, odd), Shard(0, 2, 0, 4, np.arange(5))]
    shards += [Shard(0, 3, 4, a.embedding_dim, range(a.num_embeddings))]
    b = tables[1]  # int8: ranges plus replicas of the hottest rows on every DPU, some rows on the host
    half = b.num_embeddings // 2
    shards += [
        Shard(1, 0, 0, b.embedding_dim, range(half)),
        Shard(1, 1, 0, b.embedding_dim, range(half, b.num_embeddings)),
    ]
    shards += [Shard(1, d, 0, b.embedding_dim, np.array([0, 1, half])) for d in (2, 3)]
    c = tables[2]  # int32: everything on DPU 3, plus host cache
    shards += [Shard(2, 3, 0, c.embedding_dim, range(c.num_embeddings))]
    host_rows = {1: np.array([2, 3, b.num_embeddings - 1]), 2: np.array([0, 5])}
    plan = Plan(tables, Topology(nr_dpus), shards, host_rows=host_rows)
    plan.validate()
    return plan


HAND_TABLES = [
    TableSpec("a", 50, 10),
    TableSpec("b", 40, 24, row_format=RowFormat.INT8, scale=0.5),
    TableSpec("c", 20, 5, row_format=RowFormat.INT32, scale=1e-3),
]


@pytest.mark.parametrize("pooling", [PoolingMode.SUM, PoolingMode.MEAN])
@pytest.mark.parametrize("weighted", [False, True])
def test_replicated_and_host_cached_rows(pooling, weighted):
    rng = np.random.default_rng(7)
    plan = hand_made_plan(HAND_TABLES, 5)
    weights = random_weights(HAND_TABLES, rng)
    # Skewed towards the replicated and cached rows.
    indices, offsets, psw = random_batch(HAND_TABLES, 64, 10, rng, weighted=weighted, zipf=1.3)
    _out, stats = check(plan, weights, indices, offsets, psw, pooling)
    host_rows = {t: set(r.tolist()) for t, r in plan.host_rows.items()}
    batch = 64
    expected_hits = sum(
        int(np.isin(indices[offsets[t * batch] : offsets[(t + 1) * batch]], list(host_rows[t])).sum())
        for t in host_rows
    )
    assert stats.host_cache_hits == expected_hits > 0
    # Table a's replicated rows 0..4 of the first slice are served by DPU 2 for some bags.
    assert stats.lookups[2] > 0


def test_replica_choice_follows_the_bag_rule():
    """Holder b mod r, holders in shard order (partitioner/routing.py)."""
    tables = [TableSpec("t", 4, 2)]
    shards = [Shard(0, 0, 0, 2, range(4)), Shard(0, 1, 0, 2, np.array([2])), Shard(0, 2, 0, 2, np.array([2]))]
    plan = Plan(tables, Topology(3), shards)
    weights = [np.arange(8, dtype=np.float32).reshape(4, 2)]
    indices = np.full(6, 2, dtype=np.int64)
    offsets = np.arange(7, dtype=np.int64)  # six bags, one lookup of row 2 each
    _out, stats = check(plan, weights, indices, offsets)
    assert stats.lookups.tolist() == [2, 2, 2]


@pytest.mark.parametrize("dim", [1, 2, 3, 8, 63, 255, 256, 257, 512, 513, 700])
@pytest.mark.parametrize("fmt", [RowFormat.FP32, RowFormat.INT8])
def test_dims_including_rows_wider_than_one_dma(dim, fmt):
    rng = np.random.default_rng(dim)
    tables = [TableSpec("t", 23, dim, row_format=fmt, scale=0.25)]
    plan = uniform_plan(tables, Topology(nr_dpus=3), "row_wise")
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 9, 6, rng, weighted=dim % 2 == 1)
    check(plan, weights, indices, offsets, psw)


def test_empty_bags_and_empty_batch():
    rng = np.random.default_rng(1)
    tables = [TableSpec("a", 10, 4), TableSpec("b", 5, 8, row_format=RowFormat.INT32)]
    plan = uniform_plan(tables, Topology(nr_dpus=2), "row_wise")
    weights = random_weights(tables, rng)
    with Engine(plan, weights) as engine:
        for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
            out, stats = engine.run(np.zeros(0, np.int64), np.zeros(7, np.int64), None, pooling)
            assert out.shape == (3, 12) and not out.any() and stats.lookups.sum() == 0
            out, _ = engine.run(np.zeros(0, np.int64), np.zeros(1, np.int64), None, pooling)
            assert out.shape == (0, 12)
        # Only the last bag of table b is non-empty.
        indices = np.array([4, 4], np.int64)
        offsets = np.array([0, 0, 0, 0, 0, 0, 2], np.int64)
        check(plan, weights, indices, offsets, engine=engine)
        check(plan, weights, indices, offsets, None, PoolingMode.MEAN, engine=engine)


def test_large_pooling_and_long_bags_split_across_tasklets():
    rng = np.random.default_rng(2)
    tables = [TableSpec("f", 300, 16), TableSpec("q", 300, 16, row_format=RowFormat.INT8)]
    plan = uniform_plan(tables, Topology(nr_dpus=1), "table_wise")
    weights = random_weights(tables, rng)
    indices = rng.integers(0, 300, 2 * 3 * 1000).astype(np.int64)
    offsets = np.arange(0, indices.size + 1, 1000, dtype=np.int64)  # pooling 1000, 3 bags per table
    _out, stats = check(plan, weights, indices, offsets, rng.uniform(-1, 1, indices.size).astype(np.float32))
    # Six bags on one DPU with 16 tasklets: bags are cut, giving more partials than segments.
    assert stats.segments[0] == 6 and stats.partials[0] > 6


@pytest.mark.parametrize("nr_tasklets", [1, 11, 24])
def test_tasklet_counts(nr_tasklets):
    rng = np.random.default_rng(nr_tasklets)
    plan = uniform_plan(MIXED_TABLES, Topology(nr_dpus=3), "tiled")
    weights = random_weights(MIXED_TABLES, rng)
    indices, offsets, psw = random_batch(MIXED_TABLES, 20, 30, rng, weighted=True)
    check(plan, weights, indices, offsets, psw, nr_tasklets=nr_tasklets)


def test_big_batch_and_several_ranks():
    rng = np.random.default_rng(3)
    tables = [TableSpec("a", 5000, 16), TableSpec("b", 3000, 8, row_format=RowFormat.INT8, scale=0.1)]
    plan = uniform_plan(tables, Topology(nr_dpus=130), "row_wise")
    weights = random_weights(tables, rng)
    indices, offsets, _ = random_batch(tables, 65536, 2, rng)
    _out, stats = check(plan, weights, indices, offsets)
    assert stats.lookups.sum() == indices.size
    # Three ranks (64 + 64 + 2 DPUs): transfers are padded to the rank's largest buffer.
    for lo, hi in ((0, 64), (64, 128), (128, 130)):
        assert np.all(stats.padded_bytes_to_dpu[lo:hi] == stats.bytes_to_dpu[lo:hi].max())


def test_parallel_blocked_merge_with_several_tables_per_dpu():
    """Each DPU holds shards of several tables, so its partials form several bag-ordered runs;
    the batch is big enough for the merge's two threads and many cache blocks."""
    rng = np.random.default_rng(11)
    tables = [
        TableSpec("f64", 300, 64),
        TableSpec("i32", 200, 24, row_format=RowFormat.INT32, scale=2.0**-18),
        TableSpec("i8", 100, 40, row_format=RowFormat.INT8, scale=0.05),
        TableSpec("f5", 50, 5),
        TableSpec("f128", 400, 128),
    ]
    plan = uniform_plan(tables, Topology(nr_dpus=3), "tiled")
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 6000, 6, rng, weighted=True)
    out, stats = check(plan, weights, indices, offsets, psw)
    assert stats.bytes_from_dpu.sum() > 2 << 20
    again, _ = check(plan, weights, indices, offsets, psw)
    assert np.array_equal(out, again)


def test_many_small_tables():
    rng = np.random.default_rng(4)
    tables = [
        TableSpec(
            f"t{i}",
            int(rng.integers(1, 40)),
            int(rng.integers(1, 9)),
            row_format=(RowFormat.FP32, RowFormat.INT8)[i % 2],
        )
        for i in range(820)
    ]
    plan = uniform_plan(tables, Topology(nr_dpus=16), "table_wise")
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 4, 3, rng, weighted=True)
    check(plan, weights, indices, offsets, psw)


def test_batch_split_when_inputs_exceed_free_mram():
    """A topology with little MRAM forces several launches per batch; results do not change."""
    rng = np.random.default_rng(5)
    tables = [TableSpec("a", 1000, 32)]
    rows_bytes = 1000 * 128
    plan = uniform_plan(tables, Topology(nr_dpus=1, mram_bytes_per_dpu=rows_bytes + 40_000), "table_wise")
    weights = random_weights(tables, rng)
    indices, offsets, _ = random_batch(tables, 400, 40, rng)
    _out, stats = check(plan, weights, indices, offsets)
    assert stats.nr_launches > 1
    assert stats.lookups.sum() == indices.size


def test_bag_too_big_for_mram_is_a_clear_error():
    tables = [TableSpec("a", 10, 2)]
    plan = uniform_plan(tables, Topology(nr_dpus=1, mram_bytes_per_dpu=4096), "table_wise")
    with (
        Engine(plan, [np.ones((10, 2), np.float32)]) as engine,
        pytest.raises(EngineError, match="bag 0 alone needs more MRAM"),
    ):
        engine.run(np.zeros(5000, np.int64), np.array([0, 5000], np.int64))


def test_bad_input_is_rejected_and_the_engine_keeps_working():
    rng = np.random.default_rng(6)
    tables = [TableSpec("a", 10, 4), TableSpec("b", 10, 4, row_format=RowFormat.INT32)]
    plan = uniform_plan(tables, Topology(nr_dpus=2), "row_wise")
    weights = random_weights(tables, rng)
    good_indices, good_offsets, _ = random_batch(tables, 5, 4, rng)
    with Engine(plan, weights) as engine:
        with pytest.raises(EngineError, match=r"table 1: indices\[\d+\] = 10 is outside \[0, 10\)"):
            bad = good_indices.copy()
            bad[-1] = 10
            engine.run(bad, good_offsets)
        with pytest.raises(EngineError, match="outside"):
            bad = good_indices.copy()
            bad[0] = -1
            engine.run(bad, good_offsets)
        with pytest.raises(EngineError, match="offsets decrease"):
            engine.run(np.zeros(2, np.int64), np.array([0, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2], np.int64))
        with pytest.raises(EngineError, match="start at 0 and end"):
            engine.run(np.zeros(2, np.int64), np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], np.int64))
        with pytest.raises(ValueError, match="T\\*B\\+1"):
            engine.run(np.zeros(2, np.int64), np.array([0, 1, 1, 2], np.int64))
        with pytest.raises(EngineError, match="Q16"):
            psw = np.ones(good_indices.size, np.float32)
            psw[-1] = 1e6  # the last lookups belong to the int32 table
            engine.run(good_indices, good_offsets, psw)
        with pytest.raises(NotImplementedError, match="NONE"):
            engine.run(good_indices, good_offsets, None, PoolingMode.NONE)
        with pytest.raises(ValueError, match="per_sample_weights"):
            engine.run(good_indices, good_offsets, np.ones(3, np.float32))
        check(plan, weights, good_indices, good_offsets, engine=engine)


def test_weights_must_match_the_plan():
    plan = uniform_plan([TableSpec("a", 10, 4, row_format=RowFormat.INT8)], Topology(nr_dpus=1), "row_wise")
    with pytest.raises(EngineError, match="int8"):
        Engine(plan, [np.zeros((10, 4), np.float32)])
    with pytest.raises(EngineError, match="shape"):
        Engine(plan, [np.zeros((10, 5), np.int8)])
    with pytest.raises(EngineError, match="unknown backend"):
        Engine(plan, [np.zeros((10, 4), np.int8)], backend="gpu")


def test_non_contiguous_weights_and_repeated_runs_are_deterministic():
    rng = np.random.default_rng(8)
    tables = [TableSpec("a", 40, 6)]
    big = rng.standard_normal((40, 12), dtype=np.float32)
    weights = [big[:, ::2]]
    plan = uniform_plan(tables, Topology(nr_dpus=3), "column_wise")
    indices, offsets, psw = random_batch(tables, 30, 8, rng, weighted=True)
    with Engine(plan, weights) as engine:
        first, _ = check(plan, [np.ascontiguousarray(weights[0])], indices, offsets, psw, engine=engine)
        again, _ = engine.run(indices, offsets, psw)
    assert np.array_equal(first, again)


def test_out_is_reused_across_batches_and_checked():
    """A serving loop's one output array: every batch writes all of it (stale values from the
    batch before, empty bags included, are overwritten), and a wrong array is one clear error."""
    rng = np.random.default_rng(12)
    plan = uniform_plan(MIXED_TABLES, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(MIXED_TABLES, rng)
    width = sum(t.embedding_dim for t in MIXED_TABLES)
    out = np.full((20, width), np.nan, np.float32)
    with Engine(plan, weights) as engine:
        for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
            indices, offsets, psw = random_batch(MIXED_TABLES, 20, 6, rng, weighted=True)
            fresh, _ = engine.run(indices, offsets, psw, pooling)
            result, _ = engine.run(indices, offsets, psw, pooling, out=out)
            assert result is out and np.array_equal(out, fresh)
            assert np.array_equal(engine.run_async(indices, offsets, psw, pooling, out=out).result()[0], fresh)
        for bad, message in (
            (np.zeros((20, width), np.float64), "dtype float64"),
            (np.zeros((21, width), np.float32), r"shape \(21, \d+\); this batch needs \(20, \d+\)"),
            (np.zeros((width, 20), np.float32).T, "C-contiguous"),
            ([[0.0] * width] * 20, "numpy array"),
        ):
            with pytest.raises((ValueError, TypeError), match=message):
                engine.run(indices, offsets, psw, out=bad)
        assert np.array_equal(engine.run(indices, offsets, psw, PoolingMode.MEAN)[0], fresh)  # still works
    with Engine(plan, None) as dry:
        out[:] = np.nan
        dry.dry_run(indices, offsets, psw, out=out)
        assert not np.isnan(out).any()


def test_stats_and_model_work():
    rng = np.random.default_rng(9)
    tables = [TableSpec("a", 200, 32), TableSpec("b", 100, 16)]
    plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(tables, rng)
    indices, offsets, _ = random_batch(tables, 50, 10, rng)
    with Engine(plan, weights) as engine:
        _, stats = engine.run(indices, offsets)
    assert isinstance(stats, BatchStats)
    assert stats.nr_lookups == indices.size == stats.lookups.sum()
    assert stats.nr_bags == 50 and stats.nr_launches == 1
    assert all(t >= 0 for t in (stats.route_s, stats.push_s, stats.launch_s, stats.pull_s, stats.merge_s))
    assert np.all(stats.bytes_to_dpu <= stats.padded_bytes_to_dpu)
    assert np.all(stats.kernel_cycles > 0)
    # Every lookup gathers one padded row slice; fp32 elements are summed once each.
    assert stats.row_bytes_gathered.sum() == sum(
        4 * t.embedding_dim * (offsets[(i + 1) * 50] - offsets[i * 50]) for i, t in enumerate(tables)
    )
    assert stats.reduce_elems.sum() == stats.row_bytes_gathered.sum() // 4
    from updlrm.perfmodel import get_profile, model_batch

    times = model_batch(stats.work(), get_profile("upmem-350mhz-2556", nr_dpus=4))
    assert times.kernel_s > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    nr_tables=st.integers(1, 5),
    nr_dpus=st.integers(1, 9),
    layout=st.sampled_from(["table_wise", "row_wise", "column_wise", "tiled"]),
    batch=st.integers(1, 40),
    max_pooling=st.integers(0, 20),
    weighted=st.booleans(),
    pooling=st.sampled_from([PoolingMode.SUM, PoolingMode.MEAN]),
)
def test_random_plans_and_batches(seed, nr_tables, nr_dpus, layout, batch, max_pooling, weighted, pooling):
    rng = np.random.default_rng(seed)
    formats = [RowFormat.FP32, RowFormat.INT32, RowFormat.INT8]
    tables = [
        TableSpec(
            f"t{i}",
            int(rng.integers(1, 300)),
            int(rng.integers(1, 70)),
            row_format=formats[int(rng.integers(0, 3))],
            scale=float(rng.uniform(0.01, 2)),
        )
        for i in range(nr_tables)
    ]
    plan = uniform_plan(tables, Topology(nr_dpus=nr_dpus), layout, column_slices=int(rng.integers(1, 4)))
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, batch, max_pooling, rng, weighted=weighted)
    check(plan, weights, indices, offsets, psw, pooling)


@pytest.mark.parametrize("layout", ["row_wise", "tiled", "table_wise", "partitioned"])
def test_two_host_threads_give_the_same_inputs_and_results(layout):
    """Batches big enough for two routing and merging threads: outputs and per-DPU inputs
    equal the one-thread run's bit for bit (the second part of the tables routes into
    per-DPU tails appended after the first part's records, as one pass would order them),
    and a bad index is reported as the first one in table order."""
    from updlrm.partitioner.placement import build_plan
    from updlrm.partitioner.workloads import synthetic_trace

    rng = np.random.default_rng(12)
    tables = [
        TableSpec("a", 3000, 16),
        TableSpec("b", 2000, 8, row_format=RowFormat.INT8, scale=0.1),
        TableSpec("c", 1000, 24, row_format=RowFormat.INT32, scale=2.0**-16),
        TableSpec("d", 500, 32),
        TableSpec("e", 800, 4),
    ]
    if layout == "partitioned":
        trace = synthetic_trace(tables, batch_size=512, num_batches=2, pooling=8, alpha=1.1, seed=3)
        plan = build_plan(tables, trace, Topology(nr_dpus=12), progress=False)
    else:
        plan = uniform_plan(tables, Topology(nr_dpus=7), layout)
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 4096, 8, rng, weighted=True)
    assert indices.size >= 1 << 16
    runs = []
    for threads in (1, 2):
        with Engine(plan, weights, host_threads=threads) as engine:
            runs.append(check(plan, weights, indices, offsets, psw, engine=engine))
            with pytest.raises(EngineError, match=r"table 1: indices\[\d+\] = 2000 is outside"):
                bad = indices.copy()
                bad[offsets[4096 * 4]] = 3000  # table 4 fails too, after table 1 in table order
                bad[offsets[4096]] = 2000
                engine.run(bad, offsets, psw)
    (one, one_stats), (two, two_stats) = runs
    assert one_stats.parallel_routes == 0 and two_stats.parallel_routes == two_stats.nr_launches >= 1
    assert np.array_equal(one, two)
    for field in ("lookups", "bytes_to_dpu", "bytes_from_dpu", "partials"):
        assert np.array_equal(getattr(one_stats, field), getattr(two_stats, field)), field
