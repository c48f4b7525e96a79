"""model_stream: a pipelined stream never takes longer than the serial one, its steady state
is push + pull + max(host work, launch + kernel), and it matches a hand-worked schedule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm.perfmodel import PhaseTimes, model_stream

seconds = st.floats(min_value=0.0, max_value=1e-2, allow_nan=False)


def phases(push, launch, kernel, pull, merge, cache):
    return PhaseTimes(push, launch, kernel, pull, merge, cache, np.zeros(1))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(seconds, seconds, seconds, seconds, seconds, seconds, seconds), min_size=1, max_size=12))
def test_pipelined_is_never_slower_and_never_faster_than_its_bound(batches):
    times = [phases(*b[:6]) for b in batches]
    routes = [b[6] for b in batches]
    s = model_stream(times, route_s=routes)
    assert s.pipelined_s <= s.serial_s + 1e-12
    # nothing beats the DPU side alone, nor the host thread's own work
    dpu_side = sum(t.cpu_to_dpu_s + t.launch_s + t.kernel_s + t.dpu_to_cpu_s for t in times)
    host_side = sum(
        r + t.cpu_to_dpu_s + t.host_cache_s + t.dpu_to_cpu_s + t.host_merge_s for r, t in zip(routes, times)
    )
    assert s.pipelined_s >= max(dpu_side, host_side) - 1e-12


def test_a_hand_worked_stream():
    # host work 3 (route 1 + merge 2), DPU work 5 (launch 1 + kernel 4), push = pull = 1
    t = phases(1.0, 1.0, 4.0, 1.0, 2.0, 0.0)
    s = model_stream(t, route_s=1.0, nr_batches=3)
    assert s.serial_s == pytest.approx(3 * (1 + 1 + 5 + 1 + 2))
    # route0 | push0 launch+kernel0 (route1 meanwhile) | pull0 push1 | merge0 route2 during DPU1 | ...
    assert s.pipelined_s == pytest.approx(1 + 1 + 5 + 1 + 1 + 5 + 1 + 1 + 5 + 1 + 2)
    assert s.period_s == pytest.approx(1 + 1 + max(3, 5)) and s.bound == "dpu"
    host_bound = model_stream(phases(0.1, 0.0, 0.5, 0.1, 2.0, 0.0), route_s=1.0, nr_batches=50)
    assert host_bound.bound == "host" and host_bound.period_s == pytest.approx(0.2 + 3.0)


def test_bad_arguments():
    t = phases(1, 1, 1, 1, 1, 0)
    with pytest.raises(ValueError, match="at least one batch"):
        model_stream([], route_s=0.0)
    with pytest.raises(ValueError, match="one per batch"):
        model_stream([t, t], route_s=[1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        model_stream(t, route_s=-1.0, nr_batches=2)
