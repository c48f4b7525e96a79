"""Mirrors: a DPU whose shards are all lanes of follower slices, at the same places as an
earlier DPU of its rank holds the same lanes of their leaders, gets that DPU's inputs byte
for byte, so a batch sends it that DPU's buffer without routing or packing it
(``link_mirrors`` in ``host/eb_share.c``).

Every test runs the plan twice: once as given, and once with every DPU in a rank of its
own, where nothing can be mirrored (a mirror's source must share its rank). Outputs and
per-DPU work must be identical, and both must match the reference (``run_and_check``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from engine_reference import random_weights
from test_routing import run_and_check, zipf_batch
from test_routing_followers import blocks_with_replicas, sliced

from updlrm.host.engine import Engine, EngineError
from updlrm.plan import Plan, Shard, column_bounds
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

# Per-DPU work that does not depend on how DPUs are grouped into ranks.
PER_DPU = ("lookups", "segments", "partials", "bytes_to_dpu", "bytes_from_dpu", "reduce_elems")
PER_DPU += ("row_bytes_gathered", "merge_elems")


def ranks_of_one(plan: Plan) -> Plan:
    """The same shards with every DPU in a rank of its own: no DPU can mirror another."""
    topology = dataclasses.replace(plan.topology, dpus_per_rank=1)
    return Plan(plan.tables, topology, plan.shards, host_rows=plan.host_rows)


def mirrors_of(plan: Plan, weights) -> int:
    with Engine(plan, weights) as engine:
        return engine.mirror_dpus


def check_against_unmirrored(plan, weights, indices, offsets, psw=None, pooling=PoolingMode.SUM, **engine_args):
    """Runs the plan and its rank-of-one twin: both right, and the same bits and work."""
    out, stats, _ = run_and_check(plan, weights, indices, offsets, psw, pooling, **engine_args)
    alone = ranks_of_one(plan)
    assert mirrors_of(alone, weights) == 0
    out_alone, stats_alone, _ = run_and_check(alone, weights, indices, offsets, psw, pooling, **engine_args)
    assert np.array_equal(out, out_alone, equal_nan=True)
    for name in PER_DPU:
        assert getattr(stats, name).tolist() == getattr(stats_alone, name).tolist(), name
    return out, stats


@pytest.mark.parametrize("slices", [2, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_replicated_column_slices_mirror_the_first(slices, weighted):
    """Blocks with replica sets, hot rows on one more DPU and host-cached rows, in 2 or 4
    column slices of equal width: every DPU of slices 1.. mirrors its slice-0 twin."""
    rng = np.random.default_rng([slices, weighted, 11])
    tables = [TableSpec("f", 4000, 16), TableSpec("q", 1000, 32, row_format=RowFormat.INT8, scale=0.25)]
    layouts = [blocks_with_replicas(4000) + [np.array([1, 2, 3999])], blocks_with_replicas(1000)]
    shards, nr_dpus = sliced(tables, layouts, slices)
    plan = Plan(tables, Topology(nr_dpus), shards, host_rows={0: np.array([4, 5, 3000]), 1: np.array([0])})
    plan.validate()
    weights = random_weights(tables, rng)
    assert mirrors_of(plan, weights) == (slices - 1) * (7 + 6)
    indices, offsets, psw = zipf_batch(tables, 300, 12, rng, weighted=weighted)
    for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
        _, stats = check_against_unmirrored(plan, weights, indices, offsets, psw, pooling)
        assert stats.host_cache_hits > 0 and (stats.lookups > 0).all()


def test_uneven_widths_mirror_only_slices_of_equal_width():
    """10 columns in 4 slices are 2, 2, 4, 2 wide (column_bounds): the 4-wide slice's
    partial sums are larger, so its DPUs mirror none; the 2-wide followers mirror slice 0."""
    rng = np.random.default_rng(12)
    tables = [TableSpec("u", 2000, 10)]
    shards, nr_dpus = sliced(tables, [blocks_with_replicas(2000)], 4)
    assert [s.col_stop - s.col_start for s in shards[::6]] == [2, 2, 4, 2]
    plan = Plan(tables, Topology(nr_dpus), shards)
    weights = random_weights(tables, rng)
    assert mirrors_of(plan, weights) == 6 + 6
    indices, offsets, _ = zipf_batch(tables, 250, 10, rng)
    check_against_unmirrored(plan, weights, indices, offsets)


def test_dpus_holding_several_shards_mirror_only_when_all_of_them_agree():
    """Two tables, two column slices, two row blocks; DPUs hold one shard of each table.
    DPU 1 holds slice 1 of both where DPU 0 holds slice 0: a mirror. DPU 2 and DPU 3 mix
    a leader's lane with a follower's; DPU 5 holds DPU 4's lanes under swapped local shard
    numbers (its segments name other local shards): none of them mirrors."""
    rng = np.random.default_rng(13)
    tables = [TableSpec("a", 1000, 8), TableSpec("b", 600, 8, row_format=RowFormat.INT8, scale=0.5)]
    ha, hb = range(500), range(300)
    ta, tb = range(500, 1000), range(300, 600)
    shards = [
        Shard(0, 0, 0, 4, ha),
        Shard(1, 0, 0, 4, hb),
        Shard(0, 1, 4, 8, ha),
        Shard(1, 1, 4, 8, hb),
        Shard(0, 2, 0, 4, ta),
        Shard(1, 2, 4, 8, tb),
        Shard(0, 3, 4, 8, ta),
        Shard(1, 3, 0, 4, tb),
    ]
    # A second replica of the head blocks, in slice 0 on DPU 4 and slice 1 on DPU 5, whose
    # shards are listed table b first.
    shards += [Shard(0, 4, 0, 4, ha), Shard(1, 4, 0, 4, hb), Shard(1, 5, 4, 8, hb), Shard(0, 5, 4, 8, ha)]
    plan = Plan(tables, Topology(6), shards)
    plan.validate()
    weights = random_weights(tables, rng)
    assert mirrors_of(plan, weights) == 1
    indices, offsets, _ = zipf_batch(tables, 200, 10, rng)
    check_against_unmirrored(plan, weights, indices, offsets)


def test_a_mirror_needs_its_source_in_its_rank():
    """The header's output offset is per rank: twins split across ranks route on their own."""
    rng = np.random.default_rng(14)
    tables = [TableSpec("r", 1200, 8)]
    shards, nr_dpus = sliced(tables, [[range(600), range(600, 1200)]], 2)
    weights = random_weights(tables, rng)
    same_rank = Plan(tables, Topology(nr_dpus, dpus_per_rank=4), shards)
    other_ranks = Plan(tables, Topology(nr_dpus, dpus_per_rank=2), shards)
    assert mirrors_of(same_rank, weights) == 2
    assert mirrors_of(other_ranks, weights) == 0


@pytest.mark.parametrize("weighted", [False, True])
def test_mirrors_across_split_launches(weighted):
    """Little MRAM forces several launches; every launch's mirrors send that launch's inputs."""
    rng = np.random.default_rng([15, weighted])
    tables = [TableSpec("a", 1000, 32)]
    shards, nr_dpus = sliced(tables, [[range(500), range(500, 1000), np.array([0, 1, 999])]], 2)
    rows_bytes = 500 * 64 + 16 * 3
    plan = Plan(tables, Topology(nr_dpus, mram_bytes_per_dpu=rows_bytes + 30_000), shards, host_rows={0: np.array([2])})
    weights = random_weights(tables, rng)
    assert mirrors_of(plan, weights) == 3
    indices, offsets, psw = zipf_batch(tables, 1500, 30, rng, weighted=weighted)
    _, stats = check_against_unmirrored(plan, weights, indices, offsets, psw)
    assert stats.nr_launches > 1


def test_mirrors_under_two_routing_and_merge_threads():
    """A batch big enough for two routing and two merge threads: same bits as one thread."""
    rng = np.random.default_rng(16)
    tables = [TableSpec(f"t{t}", 3000, 16, row_format=RowFormat.INT8, scale=0.5) for t in range(4)]
    shards, nr_dpus = sliced(tables, [blocks_with_replicas(3000) for _ in tables], 4)
    plan = Plan(tables, Topology(nr_dpus), shards)
    weights = random_weights(tables, rng)
    nr_slices = len({s.col_start for s in shards if s.table == 0})  # int8 slices are 8 columns wide at least
    assert nr_slices == 2 and mirrors_of(plan, weights) == 4 * (nr_slices - 1) * 6
    indices, offsets, _ = zipf_batch(tables, 6000, 14, rng)
    out_two, stats = check_against_unmirrored(plan, weights, indices, offsets, host_threads=2)
    assert stats.parallel_routes == 1
    out_one, _, _ = run_and_check(plan, weights, indices, offsets, host_threads=1)
    assert np.array_equal(out_two, out_one)


@pytest.mark.parametrize("weighted", [False, True])
def test_split_launches_routed_in_two_parts(weighted):
    """Little MRAM splits a big batch into launches big enough for two routing threads:
    each launch routes its tables in two parts, and every input and output bit equals
    the one-thread run's."""
    rng = np.random.default_rng([17, weighted])
    tables = [TableSpec(f"s{t}", 1000, 8) for t in range(3)]
    shards, nr_dpus = sliced(tables, [[range(500), range(500, 1000), np.array([0, 1, 999])]] * 3, 2)
    plan = Plan(tables, Topology(nr_dpus, mram_bytes_per_dpu=500 * 16 + 400_000), shards)
    weights = random_weights(tables, rng)
    indices, offsets, psw = zipf_batch(tables, 4000, 60, rng, weighted=weighted)
    runs = []
    for threads in (1, 2):
        out, stats, _ = run_and_check(plan, weights, indices, offsets, psw, host_threads=threads)
        runs.append((out, stats))
    (one, one_stats), (two, two_stats) = runs
    assert one_stats.nr_launches == two_stats.nr_launches > 1
    assert one_stats.parallel_routes == 0 and two_stats.parallel_routes == two_stats.nr_launches
    assert np.array_equal(one, two)
    for name in PER_DPU:
        assert getattr(one_stats, name).tolist() == getattr(two_stats, name).tolist(), name


def test_routing_in_up_to_four_parts():
    """Six tables with column slices (followers, mirrors), replica sets and host-cached
    rows, one batch big enough for four routing parts: with 1, 2, 3 or 4 host threads the
    tables route in as many parts (each part into its own per-DPU tails, appended in part
    order), and every output bit and per-DPU count equals the one-thread run's. A bad
    index in a table of a later part is reported as with one thread: the first in table
    order."""
    rng = np.random.default_rng(18)
    tables = [
        TableSpec(f"p{t}", 2000, 16, row_format=(RowFormat.FP32, RowFormat.INT8)[t % 2], scale=0.5) for t in range(6)
    ]
    shards, nr_dpus = sliced(tables, [blocks_with_replicas(2000) + [np.array([1, 2, 1999])]] * 6, 2)
    plan = Plan(tables, Topology(nr_dpus), shards, host_rows={0: np.array([3, 4]), 3: np.array([0, 1500])})
    plan.validate()
    weights = random_weights(tables, rng)
    assert mirrors_of(plan, weights) > 0
    indices, offsets, psw = zipf_batch(tables, 4000, 30, rng, weighted=True)
    batch = 4000
    bad = indices.copy()
    # Tables of about equal work: parts [0, 3) [3, 6) with two threads, [0, 2) [2, 4) [4, 6)
    # with three, about [0, 1) [1, 3) [3, 4) [4, 6) with four (table 3's middle falls in part
    # 2, table 5's in part 3). Table 5 is in the last part and table 3 in a later part than
    # table 0; with three or four threads in an earlier part than table 5: table 3's error is
    # the one reported, as with one thread.
    bad[offsets[5 * batch]] = 2000
    bad[offsets[3 * batch]] = -1
    runs, messages = [], []
    for threads in (1, 2, 3, 4):
        out, stats, _ = run_and_check(plan, weights, indices, offsets, psw, host_threads=threads)
        runs.append((out, stats))
        with Engine(plan, weights, host_threads=threads) as engine, pytest.raises(EngineError) as error:
            engine.run(bad, offsets, psw)
        messages.append(str(error.value))
    one, one_stats = runs[0]
    assert one_stats.parallel_routes == 0 and one_stats.route_parts == 1
    assert "table 3: indices" in messages[0] and messages == [messages[0]] * 4
    for threads, (out, stats) in enumerate(runs[1:], 2):
        assert stats.route_parts == threads and stats.parallel_routes == stats.nr_launches == 1
        assert np.array_equal(out, one)
        for name in PER_DPU:
            assert getattr(stats, name).tolist() == getattr(one_stats, name).tolist(), (threads, name)
    out, _ = check_against_unmirrored(plan, weights, indices, offsets, psw, host_threads=4)
    assert np.array_equal(out, one)


def side_by_side(tables: list[TableSpec], layouts: list[list[object]], slices: int) -> tuple[list[Shard], int]:
    """Like ``sliced``, but each row set's column slices on consecutive DPUs, as ``build_plan``
    places a replica's slices: every slice-0 DPU is followed by its mirrors."""
    shards, dpu = [], 0
    for t, (spec, rows_of) in enumerate(zip(tables, layouts)):
        bounds = column_bounds(spec, slices)
        for rows in rows_of:
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                shards.append(Shard(t, dpu, lo, hi, rows))
                dpu += 1
    return shards, dpu


@pytest.mark.parametrize("slices", [2, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_slices_side_by_side_are_merged_in_lockstep_in_the_same_order(slices, weighted):
    """A DPU and its mirrors side by side form a column group whose partials the merge adds
    together (``group_mirrors`` in ``host/eb_index.c``). Row blocks make each bag's columns
    sums over several DPUs, so fp32 bits would show any change of summation order: they are
    those of the twin with no mirrors."""
    rng = np.random.default_rng([slices, weighted, 15])
    tables = [TableSpec("f", 4000, 16), TableSpec("q", 1000, 32, row_format=RowFormat.INT8, scale=0.25)]
    layouts = [blocks_with_replicas(4000), blocks_with_replicas(1000)]
    shards, nr_dpus = side_by_side(tables, layouts, slices)
    plan = Plan(tables, Topology(nr_dpus), shards, host_rows={0: np.array([4, 5, 3000])})
    plan.validate()
    weights = random_weights(tables, rng)
    assert mirrors_of(plan, weights) == (slices - 1) * (6 + 6)
    indices, offsets, psw = zipf_batch(tables, 300, 24, rng, weighted=weighted)
    for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
        check_against_unmirrored(plan, weights, indices, offsets, psw, pooling)
