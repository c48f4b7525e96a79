"""Pipelined batches (Engine.pipeline, Engine.run_async, the C stage functions).

While the DPUs run batch i the host merges batch i-1 and routes batch i+1; every output
must be bit-identical to the serial Engine.run of the same batch, in order, whatever the
table formats, weighting, pooling, plan (replicas, host cache, split launches), and
whatever other threads do with the engine meanwhile. Errors belong to their batch.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference
from test_engine import HAND_TABLES, hand_made_plan
from test_engine_threads import MIXED, random_batches

from updlrm.host.engine import AccumulatorOverflowError, DpuFaultError, Engine, EngineError
from updlrm.plan import uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology


def same(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def serial_results(engine, batches):
    return [engine.run(*b) for b in batches]


@pytest.fixture(params=["row_wise", "column_wise", "hand_made"])
def setup(request):
    """An engine over mixed fp32/int8/int32 tables (hand_made: replicas and host-cached rows)."""
    if request.param == "hand_made":
        tables, plan = HAND_TABLES, hand_made_plan(HAND_TABLES, 4)
    else:
        tables, plan = MIXED, uniform_plan(MIXED, Topology(nr_dpus=5), request.param)
    weights = random_weights(tables, np.random.default_rng(3))
    with Engine(plan, weights, nr_tasklets=4) as engine:
        yield tables, weights, engine


def test_pipeline_is_bit_identical_to_serial_runs_and_in_order(setup):
    tables, weights, engine = setup
    batches = random_batches(tables, 40, seed=11)
    serial = serial_results(engine, batches)
    piped = list(engine.pipeline(batches))
    assert len(piped) == len(batches)
    for k, ((out, stats), (expected, expected_stats)) in enumerate(zip(piped, serial)):
        assert same(out, expected), k
        assert np.array_equal(stats.lookups, expected_stats.lookups) and stats.nr_bags == expected_stats.nr_bags
    # and the serial results are the reference's
    for (indices, offsets, psw, pooling), (out, _) in zip(batches[:10], serial):
        assert_matches(tables, out, *reference(tables, weights, indices, offsets, psw, pooling))


def test_run_async_futures_are_bit_identical_and_each_has_its_own_output(setup):
    tables, _, engine = setup
    batches = random_batches(tables, 30, seed=12)
    serial = serial_results(engine, batches)
    futures = [engine.run_async(*b) for b in batches]
    results = [f.result(timeout=120) for f in futures]
    assert len({id(out) for out, _ in results}) == len(results)
    for k, ((out, _), (expected, _)) in enumerate(zip(results, serial)):
        assert same(out, expected), k


def test_pipeline_accepts_any_iterable_and_default_pooling():
    tables = [TableSpec("a", 64, 8)]
    plan = uniform_plan(tables, Topology(nr_dpus=2), "row_wise")
    weights = random_weights(tables, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    batches = [random_batch(tables, 6, 5, rng)[:2] for _ in range(7)]
    with Engine(plan, weights) as engine:
        means = [out for out, _ in engine.pipeline(iter(batches), PoolingMode.MEAN)]
        for (indices, offsets), out in zip(batches, means):
            assert same(out, engine.run(indices, offsets, None, PoolingMode.MEAN)[0])
        assert list(engine.pipeline([])) == []
        one = list(engine.pipeline(batches[:1]))
        assert len(one) == 1 and same(one[0][0], engine.run(*batches[0])[0])


def test_split_batches_pipeline_like_the_others():
    """Too big for one launch: such a batch routes its parts on the DPU stage; results unchanged."""
    tables = [TableSpec("a", 1000, 32), TableSpec("q", 500, 16, row_format=RowFormat.INT8, scale=0.1)]
    rows_bytes = 1000 * 128 + 500 * 16
    plan = uniform_plan(tables, Topology(nr_dpus=1, mram_bytes_per_dpu=rows_bytes + 60_000), "table_wise")
    weights = random_weights(tables, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    batches = [
        random_batch(tables, b, p, rng, weighted=w)
        for b, p, w in [(400, 40, False), (3, 4, True), (300, 50, True), (5, 3, False), (500, 30, False)]
    ]
    with Engine(plan, weights, nr_tasklets=4) as engine:
        serial = serial_results(engine, batches)
        assert serial[0][1].nr_launches > 1 and serial[1][1].nr_launches == 1
        for k, ((out, stats), (expected, expected_stats)) in enumerate(zip(engine.pipeline(batches), serial)):
            assert same(out, expected), k
            assert stats.nr_launches == expected_stats.nr_launches


def test_an_error_belongs_to_its_batch_and_the_stream_goes_on(setup):
    tables, _, engine = setup
    batches = random_batches(tables, 12, seed=13)
    batches = [b for b in batches if b[0].size][:8]
    bad = list(batches[3])
    bad[0] = bad[0].copy()
    bad[0][-1] = 10**9  # an index outside its table
    serial = serial_results(engine, batches)
    stream = [*batches[:3], tuple(bad), *batches[3:]]

    futures = [engine.run_async(*b) for b in stream]
    with pytest.raises(EngineError, match="outside"):
        futures[3].result(timeout=60)
    rest = [f.result(timeout=60)[0] for k, f in enumerate(futures) if k != 3]
    assert all(same(a, b[0]) for a, b in zip(rest, serial))

    seen = []
    generator = engine.pipeline(stream)
    with pytest.raises(EngineError, match="outside"):
        for out, _ in generator:
            seen.append(out)
    assert [same(a, b[0]) for a, b in zip(seen, serial)] == [True] * 3 and len(seen) == 3
    # the engine keeps working, pipelined or not
    assert all(same(out, b[0]) for (out, _), b in zip(engine.pipeline(batches), serial))


def test_argument_errors():
    tables = [TableSpec("a", 64, 8), TableSpec("i", 64, 4, row_format=RowFormat.INT32, scale=1.0)]
    plan = uniform_plan(tables, Topology(nr_dpus=2), "row_wise")
    weights = [np.ones((64, 8), np.float32), np.full((64, 4), 2**31 - 1, np.int32)]
    with Engine(plan, weights) as engine:
        good = (np.array([1, 2]), np.array([0, 1, 2]))
        with pytest.raises(ValueError, match="offsets has 2 entries"):
            engine.run_async(np.array([1]), np.array([0, 1]))  # Python-side errors raise at once
        outputs = engine.pipeline([good, "nonsense", good])
        assert next(outputs)[0].shape == (1, 12)
        with pytest.raises(ValueError, match="each pipelined batch must be"):
            next(outputs)
        # an integer sum that could exceed int64: refused, on the right future
        heavy = (np.zeros(3, np.int64), np.array([0, 0, 3]), np.full(3, 32767.0, np.float32))
        futures = [engine.run_async(*good), engine.run_async(*heavy), engine.run_async(*good)]
        with pytest.raises(AccumulatorOverflowError, match="table 'i'"):
            futures[1].result(timeout=60)
        assert same(futures[0].result()[0], futures[2].result()[0])


def test_a_dpu_fault_names_the_dpu_on_its_batch_and_the_next_batches_are_right(monkeypatch):
    monkeypatch.setenv("UPDLRM_EMU_WORKERS", "2")
    tables = MIXED
    plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(tables, np.random.default_rng(8))
    rng = np.random.default_rng(9)
    batches = [random_batch(tables, 24, 10, rng, weighted=k % 2 == 1) for k in range(6)]
    with Engine(plan, weights, nr_tasklets=8) as engine:
        serial = serial_results(engine, batches)
    for how in ("pipeline", "run_async"):
        # the DPU 2's launch counter starts at the engine's creation: batch 2 of 6 faults
        monkeypatch.setenv("UPDLRM_EMU_FAULTS", "fault:dpu=2,tasklet=3,launch=2")
        with Engine(plan, weights, nr_tasklets=8) as engine:
            if how == "run_async":
                futures = [engine.run_async(*b) for b in batches]
                with pytest.raises(DpuFaultError) as caught:
                    futures[1].result(timeout=60)
                others = [f.result(timeout=60)[0] for k, f in enumerate(futures) if k != 1]
            else:
                generator, others = engine.pipeline(batches), []
                others.append(next(generator)[0])
                with pytest.raises(DpuFaultError) as caught:
                    next(generator)
                others += [out for out, _ in engine.pipeline(batches[2:])]
            e = caught.value
            assert e.dpu == 2 and e.tasklet == 3 and e.recovered and "DPU 2 tasklet 3 faulted" in str(e)
            assert all(same(a, b[0]) for a, b in zip(others, serial[:1] + serial[2:])), how


def test_threads_pipelines_and_async_callers_share_one_engine():
    tables = MIXED
    plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(tables, np.random.default_rng(10))
    batches = random_batches(tables, 48, seed=14)
    with Engine(plan, weights, nr_tasklets=4) as engine:
        serial = serial_results(engine, batches)
        start = threading.Barrier(6)

        def by_run(part):
            start.wait()
            return {k: engine.run(*batches[k])[0] for k in part}

        def by_pipeline(part):
            start.wait()
            return dict(zip(part, (out for out, _ in engine.pipeline([batches[k] for k in part]))))

        def by_async(part):
            start.wait()
            futures = {k: engine.run_async(*batches[k]) for k in part}
            return {k: f.result(timeout=120)[0] for k, f in futures.items()}

        workers = [by_run, by_run, by_pipeline, by_pipeline, by_async, by_async]
        with ThreadPoolExecutor(len(workers)) as pool:
            parts = [pool.submit(work, list(range(i, len(batches), len(workers)))) for i, work in enumerate(workers)]
            results = {}
            for part in parts:
                results.update(part.result(timeout=300))
        assert sorted(results) == list(range(len(batches)))
        for k, out in results.items():
            assert same(out, serial[k][0]), k


def test_close_waits_for_queued_batches_and_closes_suspended_pipelines():
    tables = MIXED
    plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(tables, np.random.default_rng(15))
    batches = list(random_batches(tables, 20, seed=16))
    engine = Engine(plan, weights, nr_tasklets=4)
    serial = serial_results(engine, batches)
    suspended = engine.pipeline(batches)
    first = next(suspended)[0]
    futures = [engine.run_async(*b) for b in batches]
    engine.close()  # the queue runs to its end first
    assert all(f.done() for f in futures)
    assert all(same(f.result()[0], s[0]) for f, s in zip(futures, serial))
    assert same(first, serial[0][0])
    assert list(suspended) == []  # closed with the engine
    with pytest.raises(EngineError, match="closed"):
        engine.run_async(*batches[0])
    with pytest.raises(EngineError, match="closed"):
        engine.pipeline(batches)
    with pytest.raises(EngineError, match="closed"):
        engine.run(*batches[0])
    engine.close()


def test_closing_a_pipeline_early_frees_its_slots():
    tables = MIXED
    plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(tables, np.random.default_rng(17))
    batches = random_batches(tables, 10, seed=18)
    with Engine(plan, weights, nr_tasklets=4) as engine:
        for _ in range(5):  # more early exits than slots: each gives its slots back
            for _out in engine.pipeline(batches):
                break
        assert same(engine.run(*batches[3])[0], list(engine.pipeline(batches))[3][0])


def test_the_c_stages_check_their_slot_and_stage():
    tables = [TableSpec("a", 64, 8)]
    plan = uniform_plan(tables, Topology(nr_dpus=2), "row_wise")
    with Engine(plan, [np.ones((64, 8), np.float32)]) as engine:
        ffi, lib, handle = engine._ffi, engine._lib, engine._engine
        indices, offsets = np.array([1, 2, 3], np.int64), np.array([0, 3], np.int64)
        out = np.full((1, 8), np.nan, np.float32)

        def prepare(slot):
            return lib.eb_engine_prepare(
                handle,
                slot,
                engine._ptr("int64_t *", indices),
                3,
                engine._ptr("int64_t *", offsets),
                2,
                ffi.NULL,
                0,
                engine._ptr("float *", out),
            )

        assert lib.eb_engine_launch(handle, 0) == lib.EB_RUN_BAD_SLOT  # nothing prepared
        assert lib.eb_engine_finish(handle, 0) == lib.EB_RUN_BAD_SLOT
        assert prepare(lib.EB_NR_SLOTS) == lib.EB_RUN_BAD_SLOT
        assert prepare(0) == 0 and np.isnan(out).all()  # the output is written from the launch on
        assert prepare(0) == lib.EB_RUN_BAD_SLOT  # already holds a batch
        assert lib.eb_engine_launch(handle, 0) == 0
        assert prepare(1) == 0
        assert lib.eb_engine_launch(handle, 1) == lib.EB_RUN_BUSY  # one batch on the DPUs at a time
        assert lib.eb_engine_collect(handle, 0) == 0 and lib.eb_engine_finish(handle, 0) == 0
        assert out.tolist() == [[3.0] * 8]
        assert lib.eb_engine_discard(handle, 1) == 0 and lib.eb_engine_launch(handle, 1) == lib.EB_RUN_BAD_SLOT
        assert (
            lib.eb_engine_run(
                handle,
                engine._ptr("int64_t *", indices),
                3,
                engine._ptr("int64_t *", offsets),
                2,
                ffi.NULL,
                0,
                engine._ptr("float *", out),
            )
            == 0
        )


def test_a_stream_with_one_free_slot_runs_serially_instead_of_waiting():
    """A consumer holding a suspended pipeline (two slots) waits on a run_async future: the
    driver gets the one slot left and runs its batches one after the other."""
    tables = MIXED
    plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(tables, np.random.default_rng(19))
    batches = random_batches(tables, 8, seed=20)
    with Engine(plan, weights, nr_tasklets=4) as engine:
        serial = serial_results(engine, batches)
        held = engine.pipeline(batches)
        first = next(held)[0]
        futures = [engine.run_async(*b) for b in batches]
        assert all(same(f.result(timeout=120)[0], s[0]) for f, s in zip(futures, serial))
        rest = [out for out, _ in held]
        assert all(same(a, s[0]) for a, s in zip([first, *rest], serial))
