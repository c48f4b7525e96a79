"""The host runtime's helper threads (host/eb_workers.c).

An engine's helpers are made on its first parallel phase and kept until it is closed: a
batch neither adds threads nor leaves them behind, closing the engine ends them, and a
process forked from one that has them (which inherits none) still runs its batches,
with the same bits.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from engine_reference import random_weights
from test_engine_dry import sliced_plan
from test_routing import zipf_batch

from updlrm.host.engine import Engine
from updlrm.specs import PoolingMode

HOST_THREADS = 3


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
def batch():
    plan = sliced_plan(4)
    rng = np.random.default_rng(0)
    # Big enough to be routed and merged on several threads.
    indices, offsets, _ = zipf_batch(plan.tables, 2000, 80, rng)
    return plan, random_weights(plan.tables, rng), indices, offsets


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc/self/task (Linux)")
def test_helpers_live_as_long_as_their_engine(batch):
    plan, _, indices, offsets = batch
    before = threads()
    with Engine(plan, None, host_threads=HOST_THREADS) as engine:
        stats = engine.dry_run(indices, offsets)
        assert stats.route_parts > 1
        helpers = threads() - before
        assert 1 <= helpers <= HOST_THREADS - 1  # one per job beyond the first of its largest phase
        for _ in range(3):
            engine.dry_run(indices, offsets)
        assert threads() - before == helpers
    assert threads() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_process_runs_batches_with_the_same_bits(batch):
    plan, weights, indices, offsets = batch
    with Engine(plan, weights, host_threads=HOST_THREADS) as engine:
        expected, _ = engine.run(indices, offsets, None, PoolingMode.SUM)
        pid = os.fork()
        if pid == 0:  # the child: the engine's helpers are not there
            code = 1
            try:
                for _ in range(2):
                    out, stats = engine.run(indices, offsets, None, PoolingMode.SUM)
                    assert stats.route_parts > 1
                    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60
        while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if waited[0] == 0:  # waiting for helpers it does not have
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked process did not finish its batches in 60 s")
        assert os.waitstatus_to_exitcode(waited[1]) == 0
        again, _ = engine.run(indices, offsets, None, PoolingMode.SUM)
    assert np.array_equal(again.view(np.uint32), expected.view(np.uint32))
