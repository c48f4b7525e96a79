"""The host runtime's helper threads (host/eb_workers.c).

The process keeps one set of helpers for its engines' parallel phases, made as phases first
need them: later batches and engines add no threads, closing an engine leaves them, and
a process forked from one that has them (which inherits none) still runs its batches,
with the same bits.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from engine_reference import random_weights
from test_engine_dry import sliced_plan
from test_routing import zipf_batch

from updlrm.host.engine import Engine
from updlrm.specs import PoolingMode

HOST_THREADS = 3


@pytest.fixture
def batch():
    plan = sliced_plan(4)
    rng = np.random.default_rng(0)
    # Big enough to be routed and merged on several threads.
    indices, offsets, _ = zipf_batch(plan.tables, 2000, 80, rng)
    return plan, random_weights(plan.tables, rng), indices, offsets


# Run in a fresh process, where no phase has made helpers yet.
_THREADS_SCRIPT = """
import os, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_engine_dry import sliced_plan
from test_routing import zipf_batch
from updlrm.host.engine import Engine

def threads():
    return len(os.listdir("/proc/self/task"))

plan = sliced_plan(4)
indices, offsets, _ = zipf_batch(plan.tables, 2000, 80, np.random.default_rng(0))
counts = [threads()]
with Engine(plan, None, host_threads={threads}) as engine:
    assert engine.dry_run(indices, offsets).route_parts > 1
    counts.append(threads())
    for _ in range(3):
        engine.dry_run(indices, offsets)
    counts.append(threads())
counts.append(threads())
with Engine(plan, None, host_threads={threads}) as engine:
    engine.dry_run(indices, offsets)
    counts.append(threads())
print(counts)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc/self/task (Linux)")
def test_the_first_parallel_phase_makes_the_helpers_and_nothing_after_it_does():
    script = _THREADS_SCRIPT.format(tests=os.path.dirname(__file__), threads=HOST_THREADS)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    before, *after = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    # One helper per job beyond the caller's in the largest phase; then none added or removed.
    assert 1 <= after[0] - before <= HOST_THREADS - 1
    assert after == [after[0]] * len(after)


_GROWTH_SCRIPT = """
import os, sys
import numpy as np
sys.path.insert(0, {tests!r})
from engine_reference import random_weights
from test_routing import zipf_batch
from updlrm.host.engine import Engine
from updlrm.plan import uniform_plan
from updlrm.specs import TableSpec, Topology

# Six tables row-wise on 16 DPUs: up to 6 routing parts, megabytes of partials to merge.
plan = uniform_plan([TableSpec(f"t{{t}}", 4000, 16) for t in range(6)], Topology(16), "row_wise")
rng = np.random.default_rng(1)
weights = random_weights(plan.tables, rng)
batches = [zipf_batch(plan.tables, 2000, 80, rng)[:2] for _ in range(2)]
with Engine(plan, weights, host_threads=1) as one:
    expected = [one.run(i, o)[0] for i, o in batches]
base = len(os.listdir("/proc/self/task"))
most = 1
for threads in (2, 3, 4, 5, 3):  # each larger count makes helpers after many phases
    with Engine(plan, weights, host_threads=threads) as engine:
        for (indices, offsets), want in zip(batches, expected):
            out, stats = engine.run(indices, offsets)
            assert np.array_equal(out.view(np.uint32), want.view(np.uint32)), threads
            assert stats.route_parts == threads, (threads, stats.route_parts)
    most = max(most, threads)
    assert len(os.listdir("/proc/self/task")) == base + most - 1, (threads, base)
print("ok")
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc/self/task (Linux)")
def test_engines_asking_for_more_threads_grow_the_helpers_between_phases():
    """Each engine that asks for more threads than the ones before adds helpers (one per
    job beyond the caller's), made after many phases have run; every batch gives one
    thread's bits. A helper made between phases takes the next phase only (its generation
    is recorded when it is made, under the helpers' lock)."""
    script = _GROWTH_SCRIPT.format(tests=os.path.dirname(__file__))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


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
