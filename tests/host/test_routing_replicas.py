"""Replica sets: row ranges held whole by several DPUs route by blocks, not by per-row entries.

A slice whose range shards, grouped by identical row ranges, tile the table is routed by
blocks; each block has a set of lanes that serve bags in turn (holder ``b mod r``, in
plan order, as ``updlrm.partitioner.routing`` says). Every test checks the results
against the reference and the per-DPU lookup counts against the partitioner's router.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_routing import expected_lookups, run_and_check, zipf_batch

from updlrm.host.engine import Engine, EngineError
from updlrm.plan import Plan, Shard
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

HOST = Path(__file__).resolve().parents[2] / "host"


def shuffled(shards: list[Shard], rng: np.random.Generator) -> list[Shard]:
    """Plan order other than DPU order: holder order is plan order."""
    return [shards[i] for i in rng.permutation(len(shards))]


def whole_table_plan(tables: list[TableSpec], k: int, rng: np.random.Generator) -> Plan:
    """Every table held whole by k DPUs (table t on DPUs t*k .. t*k + k - 1)."""
    shards = [
        Shard(t, t * k + d, 0, spec.embedding_dim, range(spec.num_embeddings))
        for t, spec in enumerate(tables)
        for d in range(k)
    ]
    return Plan(tables, Topology(k * len(tables)), shuffled(shards, rng))


@pytest.mark.parametrize("k", [2, 7, 16])
@pytest.mark.parametrize("weighted", [False, True])
def test_whole_table_replicas(k, weighted):
    """fp32 and int8 tables each on k DPUs; bags of 0..12 lookups, SUM and MEAN."""
    rng = np.random.default_rng([k, weighted])
    tables = [TableSpec("f", 3000, 12), TableSpec("q", 1000, 8, row_format=RowFormat.INT8, scale=0.25)]
    plan = whole_table_plan(tables, k, rng)
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 300, 12, rng, weighted=weighted)
    assert (np.diff(offsets) == 0).any()  # empty bags too
    for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
        _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw, pooling)
        assert (stats.lookups > 0).all()  # every replica gets its turn
        # No per-row entry or per-row replica list: a few hundred bytes per lane.
        assert routing_bytes < 2 * 1024 * (k + 2)


def test_routing_memory_does_not_grow_with_rows():
    """A whole-table replica plan: the same routing memory for 2,000 or 200,000 rows
    (explicit entries took 4 bytes + 8 per replica for every row)."""
    rng = np.random.default_rng(1)
    k = 12
    sizes = []
    for rows in (2_000, 200_000):
        tables = [TableSpec("t", rows, 2)]
        plan = whole_table_plan(tables, k, rng)
        weights = random_weights(tables, rng)
        indices, offsets, _ = random_batch(tables, 64, 6, rng)
        sizes.append(run_and_check(plan, weights, indices, offsets)[2])
    assert sizes[0] == sizes[1]
    assert sizes[1] < 200_000 * (4 + 8 * k) / 100


@pytest.mark.parametrize("weighted", [False, True])
def test_column_sliced_replicas(weighted):
    """Tables cut into column slices, each slice held whole by its own set of DPUs."""
    rng = np.random.default_rng([2, weighted])
    tables = [
        TableSpec("a", 2000, 16),
        TableSpec("b", 700, 12, row_format=RowFormat.INT32, scale=2.0**-16),
    ]
    shards, dpu = [], 0
    for t, spec in enumerate(tables):
        bounds = np.linspace(0, spec.embedding_dim, 4 - t).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            for _ in range(3 + 2 * t):
                shards.append(Shard(t, dpu % 14, int(lo), int(hi), range(spec.num_embeddings)))
                dpu += 1
    plan = Plan(tables, Topology(14), shuffled(shards, rng))
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 400, 10, rng, weighted=weighted)
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert (stats.lookups > 0).all()
    assert routing_bytes < 2000 * 4


@pytest.mark.parametrize("uneven", [False, True])
def test_row_ranges_held_by_sets_of_different_sizes(uneven):
    """Row blocks held by 1, 3 or 5 DPUs in one slice (sets of one keep their lane);
    uneven blocks take the search path."""
    rng = np.random.default_rng([3, uneven])
    edges = [0, 1, 2, 3, 5000, 10_003] if uneven else [0, 2500, 5000, 7500, 10_003]
    tables = [TableSpec("t", 10_003, 6)]
    shards, dpu = [], 0
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        for _ in range((1, 3, 5)[b % 3]):
            shards.append(Shard(0, dpu, 0, 6, range(lo, hi)))
            dpu += 1
    plan = Plan(tables, Topology(dpu), shuffled(shards, rng))
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 500, 9, rng, weighted=True)
    indices[:4] = [0, 1, 2, 10_002]
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert (uneven or (stats.lookups > 0).all()) and routing_bytes < 8000  # one-row blocks: not every replica


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("fmt", [RowFormat.FP32, RowFormat.INT8])
def test_replica_sets_with_hot_row_replicas_and_host_cache(weighted, fmt):
    """Two row blocks held by 4 and 2 DPUs, hot rows also on replica-only shards listed
    before, between and after the blocks' shards, host-cached rows (some of them held by
    replica-only shards too): a hot row's holders are all of them, in plan order."""
    rng = np.random.default_rng([4, weighted, fmt == RowFormat.INT8])
    tables = [TableSpec("t", 4000, 10, row_format=fmt, scale=0.5)]
    shards = [Shard(0, 9, 0, 10, np.array([0, 1, 2, 2500]))]
    shards += [Shard(0, d, 0, 10, range(2000)) for d in (0, 3)]
    shards += [Shard(0, 8, 0, 10, np.array([1, 3, 5, 2000, 3999]))]
    shards += [Shard(0, d, 0, 10, range(2000, 4000)) for d in (1, 5)]
    shards += [Shard(0, d, 0, 10, range(2000)) for d in (2, 7)]
    shards += [Shard(0, 6, 0, 10, np.array([2, 5, 2001]))]
    host_rows = {0: np.array([4, 5, 3998])}
    plan = Plan(tables, Topology(10), shards, host_rows=host_rows)
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 600, 12, rng, weighted=weighted)
    indices[: 4 * 20] = np.tile([1, 2, 2001, 5], 20)
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.host_cache_hits > 0 and (np.delete(stats.lookups, 4) > 0).all()  # DPU 4 holds nothing
    assert routing_bytes < 8000  # a bit per row and small tables


@pytest.mark.parametrize("weighted", [False, True])
def test_split_launches_with_replica_sets(weighted):
    """Little MRAM forces several launches; bags keep their replica (b is the bag's index in the batch)."""
    rng = np.random.default_rng([5, weighted])
    tables = [TableSpec("a", 1000, 32), TableSpec("q", 600, 8, row_format=RowFormat.INT8, scale=0.5)]
    shards = [Shard(0, d, 0, 32, range(1000)) for d in (0, 1, 2)]
    shards += [Shard(0, 3, 0, 32, np.array([0, 1, 999]))]
    shards += [Shard(1, d, 0, 8, range(600)) for d in (1, 3)]
    plan = Plan(
        tables,
        Topology(4, mram_bytes_per_dpu=1000 * 128 + 8 * 600 + 16 * 3 + 60_000),
        shards,
        host_rows={0: np.array([2, 3]), 1: np.array([0])},
    )
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 700, 30, rng, weighted=weighted)
    _, stats, _ = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.nr_launches > 1 and stats.host_cache_hits > 0 and (stats.lookups > 0).all()


def test_two_routing_threads_with_replica_sets():
    """Tables on disjoint DPU sets route on two threads: the inputs and results of one thread."""
    rng = np.random.default_rng(6)
    tables = [TableSpec("a", 3000, 8), TableSpec("b", 2000, 8, row_format=RowFormat.INT8, scale=0.1)]
    tables += [TableSpec("c", 1500, 4)]
    plan = whole_table_plan(tables, 5, rng)
    plan.shards.append(Shard(2, 0, 0, 4, np.array([0, 1, 7])))  # hot rows on a DPU of table a
    plan.host_rows = {1: np.array([0, 3])}
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 4096, 12, rng, weighted=True, zipf=1.2)
    assert indices.size >= 1 << 16
    runs = []
    for threads in (1, 2):
        runs.append(run_and_check(plan, weights, indices, offsets, psw, host_threads=threads))
    (one, one_stats, _), (two, two_stats, _) = runs
    assert np.array_equal(one, two)
    for field in ("lookups", "bytes_to_dpu", "partials"):
        assert np.array_equal(getattr(one_stats, field), getattr(two_stats, field)), field


def test_ranges_overlapping_in_part_take_explicit_entries():
    """[0, 600) and [300, 1000): no tiling by identical ranges, so an entry per row."""
    rng = np.random.default_rng(7)
    tables = [TableSpec("t", 1000, 4)]
    shards = [Shard(0, 0, 0, 4, range(600)), Shard(0, 1, 0, 4, range(300, 1000)), Shard(0, 2, 0, 4, range(1000))]
    plan = Plan(tables, Topology(3), shards)
    weights = random_weights(tables, rng)
    indices, offsets, psw = random_batch(tables, 200, 8, rng, weighted=True)
    _, _, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert routing_bytes >= 4 * 1000


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_replica_turn_is_the_remainder(tmp_path):
    """The multiply-based b mod count of eb_internal.h equals % for 32-bit bags and counts."""
    program = tmp_path / "turn.c"
    program.write_text(
        """
        #include "eb_internal.h"
        int main(void)
        {
            uint64_t state = 1;
            for (uint32_t count = 1; count < 5000; count++) {
                struct replica_set set = {.magic = replica_magic(count), .first = 0, .count = count};
                for (uint32_t i = 0; i < 2000; i++) {
                    state = state * 6364136223846793005ull + 1442695040888963407ull; /* Knuth's MMIX LCG */
                    uint32_t b = i < 1000 ? i : (uint32_t)(state >> 32);
                    if (replica_turn(&set, b) != b % count || replica_turn(&set, UINT32_MAX - i) != (UINT32_MAX - i) % count) {
                        printf("count %u bag %u\\n", count, b);
                        return 1;
                    }
                }
            }
            uint32_t big[] = {UINT32_MAX, UINT32_MAX - 1, 1u << 31, (1u << 31) + 1, 65537, 2560};
            for (uint32_t k = 0; k < sizeof(big) / sizeof(big[0]); k++) {
                struct replica_set set = {.magic = replica_magic(big[k]), .first = 0, .count = big[k]};
                for (uint32_t b = UINT32_MAX - 100000; b != 100000; b++) {
                    if (replica_turn(&set, b) != b % big[k]) {
                        printf("count %u bag %u\\n", big[k], b);
                        return 1;
                    }
                }
            }
            return 0;
        }
        """
    )
    from updlrm.emulator import host_cflags

    root = HOST.parent
    binary = tmp_path / "turn"
    subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{HOST}", f"-I{root / 'dpu_kernels'}"]
        + host_cflags().split()
        + [str(program), "-o", str(binary)],
        check=True,
    )
    result = subprocess.run([str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_engine_reports_no_error_for_sets_with_empty_batch():
    """A batch of only empty bags on a replica-set plan."""
    rng = np.random.default_rng(8)
    tables = [TableSpec("t", 100, 4)]
    plan = whole_table_plan(tables, 3, rng)
    with Engine(plan, random_weights(tables, rng)) as engine:
        out, stats = engine.run(np.zeros(0, np.int64), np.zeros(6, np.int64))
    assert out.shape == (5, 4) and not out.any() and stats.lookups.sum() == 0


@pytest.mark.parametrize("form", ["ranges", "lists", "one list"])
def test_blocks_between_host_cached_rows(form):
    """The planner's shards of a replicated table: every row but the host-cached ones, as
    row lists (one list with holes, or lists of consecutive rows) or ranges; host-cached
    rows before, between and after the blocks, and hot rows on a replica-only list.
    Routed by blocks, a bit per row for the exceptions."""
    rng = np.random.default_rng([9, len(form)])
    tables = [TableSpec("t", 3000, 6), TableSpec("q", 500, 4, row_format=RowFormat.INT8, scale=0.5)]
    host = np.array([0, 1, 1400, 1401, 1402, 2000, 2998, 2999])

    def rows(lo, hi):
        return np.setdiff1d(np.arange(lo, hi), host) if form != "ranges" else range(lo, hi)

    if form == "one list":
        shards = [Shard(0, d, 0, 6, rows(0, 3000)) for d in (4, 1, 2, 3)]
    else:
        shards = [Shard(0, d, 0, 6, rows(2, 1400)) for d in (4, 1, 2)] + [Shard(0, 3, 0, 6, rows(1403, 2998))]
    shards += [Shard(0, 0, 0, 6, np.array([7, 1403, 2001]))]
    shards += [Shard(1, d, 0, 4, np.arange(500) if form != "ranges" else range(500)) for d in (0, 3)]
    plan = Plan(tables, Topology(5), shards, host_rows={0: host})
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 400, 10, rng, weighted=True)
    indices[:10] = [0, 1, 2, 7, 1399, 1400, 1402, 1403, 2001, 2999]
    _, stats, routing_bytes = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.host_cache_hits > 0 and (stats.lookups > 0).all()
    assert routing_bytes < 3000 * 4


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [3, 24])
@pytest.mark.parametrize("form", ["one block", "blocks"])
def test_one_replica_set_for_every_block(form, k, weighted):
    """Every block held by the same k DPUs (one block: the table by ranges; blocks: row
    lists of all rows but the host-cached ones, cut at them), so a bag's lane is found
    once per bag: host-cached rows, hot rows also on replica-only shards (listed before
    and after, so a hot row's turn sometimes lands on the bag's own lane), bags reaching
    one lane or many (k=3 scans the lanes, k=24 lists those a bag touched), empty bags.
    Table q has host-cached exceptions only: their slots come by rank, branchless."""
    rng = np.random.default_rng([10, k, weighted, len(form)])
    tables = [TableSpec("t", 5000, 8), TableSpec("q", 800, 4, row_format=RowFormat.INT8, scale=0.5)]
    host = {0: np.array([0, 3, 4, 700, 2500, 4999]), 1: np.array([9, 10])}

    def rows(t):
        n = tables[t].num_embeddings
        return range(n) if form == "one block" else np.setdiff1d(np.arange(n), host[t])

    shards = [Shard(0, k, 0, 8, np.array([1, 2, 5, 700, 1200]))]
    shards += [Shard(t, d, 0, spec.embedding_dim, rows(t)) for t, spec in enumerate(tables) for d in range(k)]
    shards += [Shard(0, k + 1, 0, 8, np.array([2, 5, 6, 4998]))]
    plan = Plan(tables, Topology(k + 2), shuffled(shards, rng), host_rows=host)
    plan.validate()
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 500, 2 * k if k < 10 else 10, rng, weighted=weighted)
    hot = np.array([0, 1, 2, 3, 5, 6, 700, 1200, 4998, 4999, 17, 2501])
    indices[: 12 * 30] = rng.choice(hot, 12 * 30)  # the first bags reach many lanes
    lengths = np.diff(offsets)
    assert (lengths == 0).any() and (lengths == 1).any()
    _, stats, _ = run_and_check(plan, weights, indices, offsets, psw)
    assert stats.host_cache_hits > 0 and (stats.lookups > 0).all()


@pytest.mark.parametrize("bad", [5000, -1])
@pytest.mark.parametrize("cached", [True, False])
def test_one_replica_set_index_outside(bad, cached):
    """An index outside the table in the middle of a bag of a one-set slice, with
    host-cached rows (bag by bag) or without (lane by lane, which hands the batch back to
    the bag-by-bag loop): the message names its position and value."""
    rng = np.random.default_rng(11)
    tables = [TableSpec("t", 5000, 8)]
    host = np.array([3, 9]) if cached else np.array([], np.int64)
    shards = [Shard(0, d, 0, 8, np.setdiff1d(np.arange(5000), host)) for d in range(4)]
    plan = Plan(tables, Topology(4), shards, host_rows={0: host} if cached else {})
    indices, offsets, _ = random_batch(tables, 50, 8, rng)
    bag = 20 + int(np.argmax(np.diff(offsets)[20:] >= 3))
    position = int(offsets[bag]) + 1
    indices[position] = bad
    message = re.escape(f"table 0: indices[{position}] = {bad} is outside [0, 5000)")
    with Engine(plan, random_weights(tables, rng)) as engine, pytest.raises(EngineError, match=message):
        engine.run(indices, offsets)


def _batch_of_lengths(tables, lengths, rng, last_share, pick=None):
    """A TBE batch whose bags have `lengths` in every table: uniform rows, some changed by
    `pick(t, rows)`, then a `last_share` of them set to the table's last row (its edge)."""
    parts, offsets = [], [0]
    for t, spec in enumerate(tables):
        for n in lengths:
            rows = rng.integers(0, spec.num_embeddings, n)
            if pick is not None:
                pick(t, rows)
            rows[rng.random(n) < last_share] = spec.num_embeddings - 1
            parts.append(rows)
            offsets.append(offsets[-1] + n)
    return np.concatenate(parts).astype(np.int64), np.array(offsets, np.int64)


def _vector_and_scalar_engines(plan, weights, monkeypatch):
    """The same plan on an engine that routes with its fast paths (vectors where the build
    has them, whole tables lane by lane) and on one that routes every lookup bag by bag in
    scalar code (UPDLRM_SCALAR_ROUTE=1 at creation)."""
    vector = Engine(plan, weights)
    monkeypatch.setenv("UPDLRM_SCALAR_ROUTE", "1")
    scalar = Engine(plan, weights)
    monkeypatch.delenv("UPDLRM_SCALAR_ROUTE")
    return vector, scalar


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=60),
    hot=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_vector_routing_equals_scalar_routing(monkeypatch, lengths, hot, seed):
    """Whole tables on 24 DPUs (one row range, one replica set), host-cached rows at word
    edges (0, 63, 64, 127, 128, the last): unweighted bags take the vector path (8 lookups
    at a time, a masked tail) where the build has it. Outputs, per-DPU counts and host-cache
    hits equal the scalar path's and the reference, for bags of 0-40 lookups, all or none
    of them host-cached, and rows at both ends of the table."""
    rng = np.random.default_rng(seed)
    tables = [TableSpec("q", 700, 8, row_format=RowFormat.INT8, scale=0.5), TableSpec("f", 300, 4)]
    host = {0: np.array([0, 63, 64, 127, 128, 300, 699]), 1: np.array([5, 6, 7, 299])}
    shards = [
        Shard(t, d, 0, spec.embedding_dim, range(spec.num_embeddings))
        for t, spec in enumerate(tables)
        for d in range(24)
    ]
    plan = Plan(tables, Topology(24), shards, host_rows=host)
    weights = random_weights(tables, rng)

    def host_cached(t, rows):
        cached = rng.random(rows.size) < hot
        rows[cached] = rng.choice(host[t], int(cached.sum()))

    indices, offsets = _batch_of_lengths(tables, lengths, rng, 0.05, host_cached)
    vector, scalar = _vector_and_scalar_engines(plan, weights, monkeypatch)
    with vector, scalar:
        out, stats = vector.run(indices, offsets)
        out_scalar, stats_scalar = scalar.run(indices, offsets)
    assert np.array_equal(out, out_scalar)
    assert stats.lookups.tolist() == stats_scalar.lookups.tolist()
    assert stats.host_cache_hits == stats_scalar.host_cache_hits
    expected, magnitude = reference(tables, weights, indices, offsets, None, PoolingMode.SUM)
    assert_matches(tables, out, expected, magnitude)
    per_dpu, hits = expected_lookups(plan, indices, offsets)
    assert stats.lookups.tolist() == per_dpu.tolist() and stats.host_cache_hits == hits


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    replicas=st.lists(st.integers(1, 30), min_size=2, max_size=2),
    budget=st.sampled_from([None, 1500, 6000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_lane_by_lane_routing_equals_bag_by_bag(monkeypatch, lengths, replicas, budget, seed):
    """Whole tables without host-cached rows, each on its own number of DPUs: each lane's
    records are written replica by replica. fp32 and int8 outputs (fp32 sums in the DPUs'
    lookup order) and per-DPU counts equal the bag-by-bag loop's and the reference, with
    empty bags, one replica or more replicas than bags, and launches split by a small
    MRAM (bags [b0, b1) that start at any replica's turn)."""
    rng = np.random.default_rng(seed)
    tables = [TableSpec("f", 500, 8), TableSpec("q", 300, 16, row_format=RowFormat.INT8, scale=0.5)]
    shards, d = [], 0
    for t, (spec, r) in enumerate(zip(tables, replicas)):
        shards += [Shard(t, d + k, 0, spec.embedding_dim, range(spec.num_embeddings)) for k in range(r)]
        d += r
    topology = Topology(d) if budget is None else Topology(d, mram_bytes_per_dpu=500 * 8 * 4 + 64 + budget)
    plan = Plan(tables, topology, shuffled(shards, rng))  # a small MRAM: the fp32 rows and a few bags
    weights = random_weights(tables, rng)
    indices, offsets = _batch_of_lengths(tables, lengths, rng, 0.1)
    fast, scalar = _vector_and_scalar_engines(plan, weights, monkeypatch)
    with fast, scalar:
        out, stats = fast.run(indices, offsets)
        out_scalar, stats_scalar = scalar.run(indices, offsets)
    assert out.tobytes() == out_scalar.tobytes()
    assert stats.lookups.tolist() == stats_scalar.lookups.tolist()
    assert stats.nr_launches == stats_scalar.nr_launches
    expected, magnitude = reference(tables, weights, indices, offsets, None, PoolingMode.SUM)
    assert_matches(tables, out, expected, magnitude)
    per_dpu, _ = expected_lookups(plan, indices, offsets)
    assert stats.lookups.tolist() == per_dpu.tolist()
