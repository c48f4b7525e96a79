"""The rank ordering stage (partitioner/rank_order.py): a permutation that never pads more,
reports that follow it, plans that stay valid and serve the same lookups."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm import perfmodel
from updlrm.partitioner import placement
from updlrm.partitioner.evaluate import evaluate_plan, shard_loads
from updlrm.partitioner.placement import build_plan
from updlrm.partitioner.rank_order import order_ranks, relabel_plan, transfer_weights
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.plan import PlanError, uniform_plan
from updlrm.specs import TableSpec, Topology
from updlrm.transfer_model import padded_total

TABLES = [TableSpec("a", 3000, 8), TableSpec("b", 2000, 256), TableSpec("c", 1500, 32)]
TOPOLOGY = Topology(16, dpus_per_rank=4)


@pytest.fixture(scope="module")
def trace():
    return synthetic_trace(TABLES, batch_size=128, num_batches=8, pooling=[24, 1, 6], alpha=1.1, seed=3)


def _padded(matrix, new_id, per_rank):
    """Rank-padded bytes per batch of ``matrix`` (batches x DPUs) with DPU d renamed new_id[d], summed directly."""
    moved = np.empty_like(matrix)
    moved[:, new_id] = matrix
    total = 0.0
    for row in moved:
        for lo in range(0, row.size, per_rank):
            chunk = row[lo : lo + per_rank]
            total += chunk.max() * chunk.size
    return total / len(matrix)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda nb: st.integers(1, 24).flatmap(
            lambda n: st.tuples(
                st.lists(st.lists(st.floats(0, 1e6), min_size=n, max_size=n), min_size=nb, max_size=nb),
                st.lists(st.lists(st.floats(0, 1e6), min_size=n, max_size=n), min_size=nb, max_size=nb),
                st.integers(1, 8),
                st.floats(0.1, 10.0),
            )
        )
    )
)
def test_order_is_a_permutation_that_never_pads_more(case):
    index_bytes, output_bytes, per_rank, w_out = np.array(case[0]), np.array(case[1]), case[2], case[3]
    order = order_ranks(index_bytes, output_bytes, per_rank, (1.0, w_out))
    n = index_bytes.shape[1]
    assert sorted(order.new_id.tolist()) == list(range(n))
    ident = np.arange(n)
    before_in, before_out = _padded(index_bytes, ident, per_rank), _padded(output_bytes, ident, per_rank)
    after_in, after_out = _padded(index_bytes, order.new_id, per_rank), _padded(output_bytes, order.new_id, per_rank)
    assert after_in <= before_in * (1 + 1e-12) and after_out <= before_out * (1 + 1e-12)
    np.testing.assert_allclose(order.bytes_in_padded, (before_in, after_in), rtol=1e-12)
    np.testing.assert_allclose(order.bytes_out_padded, (before_out, after_out), rtol=1e-12)


def test_order_puts_heavy_dpus_together():
    # Four heavy DPUs spread over four ranks of four: sorted, they fill one rank.
    out = np.ones((3, 16))
    out[:, [0, 5, 10, 15]] = 100.0
    order = order_ranks(np.ones((3, 16)), out, 4, (1.0, 1.0))
    assert order.key == "output"
    assert sorted(order.new_id[[0, 5, 10, 15]].tolist()) == [12, 13, 14, 15]
    assert order.bytes_out_padded == (1600.0, 412.0)  # 3 ranks of 4 x 1 byte, one of 4 x 100
    assert padded_total(np.sort(out[0]), 4) == 412.0


def test_order_rejects_mismatched_shapes():
    with pytest.raises(PlanError, match="one shape"):
        order_ranks(np.ones((2, 4)), np.ones((2, 5)), 2, (1.0, 1.0))


def test_relabelled_plan_serves_the_same_lookups_and_its_report_is_the_evaluators(trace):
    plan = build_plan(TABLES, trace, TOPOLOGY, progress=False, holdout=0)
    new_id = np.random.default_rng(5).permutation(TOPOLOGY.nr_dpus)
    moved = relabel_plan(plan, new_id)
    moved.validate()
    assert [s.dpu for s in moved.shards] == [int(new_id[s.dpu]) for s in plan.shards]
    np.testing.assert_array_equal(moved.mram_bytes_per_dpu()[new_id], plan.mram_bytes_per_dpu())
    np.testing.assert_array_equal(shard_loads(moved, trace), shard_loads(plan, trace))
    hw = perfmodel.get_profile(perfmodel.DEFAULT_HARDWARE_PROFILE, nr_dpus=TOPOLOGY.nr_dpus)
    capped = hw.with_values("test", xfer_host_cap_bytes_per_s=1e9)  # padded bytes cost time
    for profile in (hw, capped):
        fresh = evaluate_plan(moved, trace, profile)
        followed = evaluate_plan(plan, trace, profile).relabelled(new_id, TOPOLOGY.dpus_per_rank, profile)
        for name in ("load_per_dpu", "kernel_s_per_dpu", "mram_bytes_per_dpu", "index_bytes", "output_bytes"):
            np.testing.assert_array_equal(getattr(followed, name), getattr(fresh, name), err_msg=name)
        for name, value in fresh.summary_dict().items():
            if name != "modeled":
                assert followed.summary_dict()[name] == pytest.approx(value, rel=1e-12, nan_ok=True), name
        for name, value in fresh.modeled.as_dict().items():
            # Fields the run leaves unset (None, e.g. host-CPU figures without a calibration) match as None.
            expected = value if value is None else pytest.approx(value, rel=1e-12)
            assert followed.modeled.as_dict()[name] == expected, name


def test_relabel_plan_rejects_a_non_permutation(trace):
    plan = uniform_plan(TABLES, TOPOLOGY)
    with pytest.raises(PlanError, match="permutation"):
        relabel_plan(plan, np.zeros(TOPOLOGY.nr_dpus, dtype=np.int64))


def test_build_plan_records_the_order_and_pads_no_more_than_the_assignment(trace, monkeypatch):
    plan = build_plan(TABLES, trace, TOPOLOGY, progress=False)
    meta = plan.metadata["rank_order"]
    (in0, in1), (out0, out1) = meta["bytes_in_padded"], meta["bytes_out_padded"]
    assert in1 <= in0 and out1 <= out0
    assert meta["bytes_in"] <= in1 and meta["bytes_out"] <= out1
    # metadata's figures are the chosen report's: the in-sample padded bytes after renaming.
    assert plan.metadata["bytes_in_padded"] == pytest.approx(in1)
    assert plan.metadata["bytes_out_padded"] == pytest.approx(out1)
    # Without the stage (every DPU taken as one rank: the assignment's ids), the same plan up to DPU names.
    monkeypatch.setattr(placement, "order_ranks", lambda i, o, r, w: order_ranks(i, o, max(i.shape[1], 1), w))
    plain = build_plan(TABLES, trace, TOPOLOGY, progress=False)
    assert len(plain.shards) == len(plan.shards)
    assert plain.metadata["bytes_in_padded"] == pytest.approx(in0)
    assert plain.metadata["bytes_out_padded"] == pytest.approx(out0)
    assert plain.metadata["modeled"]["kernel_s"] == pytest.approx(plan.metadata["modeled"]["kernel_s"])


def test_transfer_weights_follow_the_rank_bandwidths():
    hw = perfmodel.get_profile("upmem-sdk-default-pool")
    w_in, w_out = transfer_weights(hw)
    assert w_out / w_in == pytest.approx(4.91 / 1.48)


def test_relabelled_plan_runs_on_the_engine_with_the_same_results(trace):
    """The renaming moves each DPU's work to another id and nothing else: integer tables
    bit-equal, fp32 within rounding (partials are merged in DPU order), each DPU's lookups
    and bytes those of the DPU it was."""
    import updlrm
    from updlrm.specs import RowFormat

    tables = [TableSpec("i8", 3000, 8, row_format=RowFormat.INT8, scale=0.01), TableSpec("f32", 2000, 32)]
    tr = synthetic_trace(tables, batch_size=64, num_batches=2, pooling=[12, 4], alpha=1.1, seed=4)
    plan = build_plan(tables, tr, TOPOLOGY, progress=False, holdout=0, cache="replicate")
    new_id = np.random.default_rng(9).permutation(TOPOLOGY.nr_dpus)
    moved = relabel_plan(plan, new_id)
    rng = np.random.default_rng(1)
    weights = [
        rng.integers(-127, 128, size=(3000, 8), dtype=np.int8),
        rng.standard_normal((2000, 32)).astype(np.float32),
    ]
    runs = []
    for p in (plan, moved):
        with updlrm.TableBatchedEmbeddingBags(
            tables, plan=p, weights=weights, backend="emulator", quantization="table"
        ) as tbe:
            got = []
            for i in range(tr.num_batches):
                idx, off, _ = tr.batch(i)
                out = np.array(tbe(idx, off))
                stats = tbe.last_stats
                got.append((out, stats.lookups.copy(), stats.bytes_to_dpu.copy(), stats.bytes_from_dpu.copy()))
            runs.append(got)
    for (out0, look0, in0, out_b0), (out1, look1, in1, out_b1) in zip(*runs):
        np.testing.assert_array_equal(out1[:, :8], out0[:, :8])
        np.testing.assert_allclose(out1[:, 8:], out0[:, 8:], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(look1[new_id], look0)
        np.testing.assert_array_equal(in1[new_id], in0)
        np.testing.assert_array_equal(out_b1[new_id], out_b0)
        assert look0.sum() > 0 and not np.array_equal(look1, look0)


def test_order_chosen_on_build_batches_pads_held_out_batches_less_when_dpus_differ():
    # Row-wise blocks of Zipf-skewed tables: some DPUs hold hot blocks, systematically
    # heavier from batch to batch.  (build_plan's own plans balance the DPUs' costs, so
    # what padding is left there is mostly batch-to-batch noise; see the README.)
    tr = synthetic_trace(TABLES, batch_size=128, num_batches=8, pooling=[24, 1, 6], alpha=1.1, seed=3)
    build, held = tr.split(0.5)
    hw = perfmodel.get_profile(perfmodel.DEFAULT_HARDWARE_PROFILE, nr_dpus=TOPOLOGY.nr_dpus)
    plan = uniform_plan(TABLES, TOPOLOGY, "row_wise")
    on_build = evaluate_plan(plan, build, hw)
    order = order_ranks(on_build.index_bytes, on_build.output_bytes, TOPOLOGY.dpus_per_rank, transfer_weights(hw))
    before, after = evaluate_plan(plan, held, hw), evaluate_plan(relabel_plan(plan, order.new_id), held, hw)
    assert after.bytes_in == before.bytes_in and after.bytes_out == before.bytes_out
    assert after.bytes_in_padded / after.bytes_in < before.bytes_in_padded / before.bytes_in - 0.02
    assert after.bytes_out_padded / after.bytes_out < before.bytes_out_padded / before.bytes_out - 0.05
