"""One Engine shared by many threads: every caller gets exactly its serial result.

The engine runs one batch at a time (``Engine.run`` holds a lock); the C library refuses a
second concurrent ``eb_engine_run`` instead of overwriting the running batch's buffers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference
from test_engine import HAND_TABLES, hand_made_plan

from updlrm.host.engine import Engine, EngineError
from updlrm.plan import uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

THREADS = 8
BATCHES_PER_THREAD = 100

MIXED = [
    TableSpec("f", 300, 12),
    TableSpec("i8", 200, 9, row_format=RowFormat.INT8, scale=0.02),
    TableSpec("i32", 250, 16, row_format=RowFormat.INT32, scale=2.0**-20),
]


def random_batches(tables, count, seed):
    """Batches of varied size (some empty), weighted or not, SUM or MEAN."""
    rng = np.random.default_rng(seed)
    batches = []
    for k in range(count):
        weighted = bool(rng.integers(0, 2))
        pooling = PoolingMode.MEAN if rng.integers(0, 2) else PoolingMode.SUM
        batch = 0 if k % 37 == 5 else int(rng.integers(1, 40))
        indices, offsets, psw = random_batch(tables, batch, int(rng.integers(0, 24)), rng, weighted=weighted)
        batches.append((indices, offsets, psw, pooling))
    return batches


def run_shared(engine, batches, threads):
    """Run every batch once, spread over `threads` threads in an interleaved order."""
    order = np.random.default_rng(1).permutation(len(batches))
    start = threading.Barrier(threads)
    results = [None] * len(batches)

    def work(part):
        start.wait()
        for k in part:
            out, stats = engine.run(*batches[k])
            results[k] = (out, stats)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, order[t::threads]) for t in range(threads)]:
            future.result()
    return results


@pytest.mark.parametrize("layout", ["row_wise", "hand_made"])
def test_threads_sharing_one_engine_get_the_serial_results(layout):
    if layout == "hand_made":
        tables = HAND_TABLES
        plan = hand_made_plan(tables, 5)  # replicas and host-cached rows
    else:
        tables = MIXED
        plan = uniform_plan(tables, Topology(nr_dpus=8), "row_wise")
    weights = random_weights(tables, np.random.default_rng(3))
    batches = random_batches(tables, THREADS * BATCHES_PER_THREAD, seed=hash(layout) % 1000)
    with Engine(plan, weights, nr_tasklets=8) as engine:
        serial = [engine.run(*batch) for batch in batches]
        shared = run_shared(engine, batches, THREADS)
        after = engine.run(*batches[0])
    wrong = [k for k, ((a, _), (b, _)) in enumerate(zip(serial, shared)) if not np.array_equal(a, b)]
    assert not wrong, f"{len(wrong)} of {len(batches)} outputs differ from the serial run, first batch {wrong[0]}"
    for (_, s1), (_, s2), (indices, offsets, _, _) in zip(serial, shared, batches):
        # Every caller got its own stats object, describing its own batch.
        assert s1 is not s2 and s2.nr_lookups == indices.size and s2.nr_bags == (offsets.size - 1) // len(tables)
        assert np.array_equal(s1.lookups, s2.lookups) and np.array_equal(s1.bytes_to_dpu, s2.bytes_to_dpu)
    assert np.array_equal(after[0], serial[0][0])
    for k in range(0, len(batches), 97):  # and the serial results are right
        expected, magnitude = reference(tables, weights, *batches[k])
        assert_matches(tables, shared[k][0], expected, magnitude)


def test_outputs_and_stats_held_by_a_caller_are_never_overwritten():
    plan = uniform_plan(MIXED, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(MIXED, np.random.default_rng(4))
    batches = random_batches(MIXED, 40, seed=5)
    with Engine(plan, weights, nr_tasklets=4) as engine:
        held = [engine.run(*batch) for batch in batches]
        copies = [(out.copy(), stats.lookups.copy(), stats.nr_lookups) for out, stats in held]
        run_shared(engine, batches * 4, 4)
    for (out, stats), (out0, lookups0, nr0) in zip(held, copies):
        assert np.array_equal(out, out0) and np.array_equal(stats.lookups, lookups0) and stats.nr_lookups == nr0


def test_the_c_library_refuses_a_concurrent_run():
    """Two threads calling eb_engine_run directly (no Engine lock): the later one is refused, nothing is corrupted."""
    plan = uniform_plan(MIXED, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(MIXED, np.random.default_rng(6))
    rng = np.random.default_rng(7)
    big = random_batch(MIXED, 2000, 64, rng, weighted=True)  # long enough to be caught running
    small = random_batch(MIXED, 3, 4, rng)
    with Engine(plan, weights, nr_tasklets=4) as engine:
        expected_big, _ = engine.run(*big, PoolingMode.SUM)
        expected_small, _ = engine.run(*small, PoolingMode.SUM)
        ffi, lib = engine._ffi, engine._lib

        def raw_run(batch, output):
            indices, offsets, psw = batch
            return lib.eb_engine_run(
                engine._engine,
                engine._ptr("int64_t *", indices),
                indices.size,
                engine._ptr("int64_t *", offsets),
                offsets.size,
                ffi.NULL if psw is None else engine._ptr("float *", psw),
                int(PoolingMode.SUM),
                engine._ptr("float *", output),
            )

        stop = threading.Event()
        big_results = []

        def keep_running_big():
            while not stop.is_set():
                out = np.full_like(expected_big, np.nan)
                big_results.append((raw_run(big, out), out))

        runner = threading.Thread(target=keep_running_big)
        runner.start()
        busy = ok = 0
        try:
            while busy < 3 and ok + busy < 100000:
                out = np.full_like(expected_small, np.nan)
                rc = raw_run(small, out)
                if rc == lib.EB_RUN_BUSY:
                    busy += 1
                    assert np.isnan(out).all(), "a refused call wrote into its output"
                else:
                    assert rc == lib.EB_RUN_OK and np.array_equal(out, expected_small)
                    ok += 1
        finally:
            stop.set()
            runner.join()
        assert busy >= 3, "never caught the other thread inside eb_engine_run"
        for rc, out in big_results:  # the running batch was never disturbed
            # The big runner can itself be the one refused (the small call got in first): then
            # it must have left its output alone, like any refused call.
            if rc == lib.EB_RUN_BUSY:
                assert np.isnan(out).all(), "a refused call wrote into its output"
                continue
            assert rc == lib.EB_RUN_OK and np.array_equal(out, expected_big)
        # Through Engine.run the same race queues instead, and the engine still works.
        assert np.array_equal(engine.run(*small, PoolingMode.SUM)[0], expected_small)


def test_close_waits_for_the_running_batch():
    plan = uniform_plan(MIXED, Topology(nr_dpus=4), "row_wise")
    weights = random_weights(MIXED, np.random.default_rng(8))
    batch = random_batch(MIXED, 2000, 64, np.random.default_rng(9))
    engine = Engine(plan, weights, nr_tasklets=4)
    expected, _ = engine.run(*batch)
    results = []
    started = threading.Event()

    def run():
        started.set()
        try:
            results.append(engine.run(*batch)[0])
        except EngineError as error:  # closed before this thread got the lock
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    engine.close()
    thread.join()
    assert isinstance(results[0], EngineError) or np.array_equal(results[0], expected)
    with pytest.raises(EngineError, match="closed"):
        engine.run(*batch)
