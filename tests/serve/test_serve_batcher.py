"""Dynamic batching: every item once, in arrival order, batches <= max_batch, waits bounded."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm.serve.batcher import DynamicBatcher


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.integers(1, 40), min_size=1, max_size=8), max_batch=st.integers(1, 16))
def test_every_item_runs_once_in_order_in_bounded_batches(chunks, max_batch):
    seen = []
    with DynamicBatcher(lambda items, t: seen.append(list(items)), max_batch=max_batch, max_wait_s=0.001) as b:
        start = 0
        for n in chunks:
            b.submit(range(start, start + n))
            start += n
    assert [i for batch in seen for i in batch] == list(range(start))
    assert all(1 <= len(batch) <= max_batch for batch in seen)


def test_a_burst_becomes_full_batches():
    seen = []
    with DynamicBatcher(lambda items, t: seen.append(len(items)), max_batch=8, max_wait_s=10.0) as b:
        b.submit(range(20))
    assert seen == [8, 8, 4]  # the tail runs at close, without waiting 10 s


def test_a_lone_item_waits_at_most_max_wait():
    done = threading.Event()
    ran_at = []

    def run(items, arrivals):
        ran_at.append(time.perf_counter() - arrivals[0])
        done.set()

    with DynamicBatcher(run, max_batch=100, max_wait_s=0.05) as b:
        b.submit([1])
        assert done.wait(5.0)
    # Not before max_wait (same clock); done.wait(5.0) bounds it from above, so a loaded
    # machine's scheduling delay is not a failure.
    assert ran_at[0] >= 0.04


def test_items_from_many_threads_all_arrive():
    seen = []
    lock = threading.Lock()

    def run(items, _):
        with lock:
            seen.extend(items)

    with DynamicBatcher(run, max_batch=7, max_wait_s=0.0005) as b:

        def submit(k):
            for i in range(50):
                b.submit([(k, i)])

        threads = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(seen) == [(k, i) for k in range(4) for i in range(50)]
    for k in range(4):  # each thread's items keep their order
        assert [i for kk, i in seen if kk == k] == list(range(50))


def test_an_error_in_run_reaches_the_caller():
    def run(items, _):
        raise ValueError("bad batch")

    b = DynamicBatcher(run, max_batch=2, max_wait_s=0.0)
    b.submit([1])
    with pytest.raises(ValueError, match="bad batch"):
        b.close()


def test_bad_settings():
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(lambda i, t: None, max_batch=0, max_wait_s=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        DynamicBatcher(lambda i, t: None, max_batch=1, max_wait_s=-1)
