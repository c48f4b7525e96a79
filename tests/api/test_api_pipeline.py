"""TableBatchedEmbeddingBags.pipeline / .forward_async: the module's outputs, overlapped.

Bit-identical to forward on every row format, weighted or not, SUM and MEAN, with torch
and numpy inputs; in order; input errors at their turn; faults on their own future.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from updlrm import TableBatchedEmbeddingBags, TableSpec
from updlrm.host.engine import DpuFaultError
from updlrm.specs import RowFormat
from updlrm.tbe import InvalidInputError

TABLES = [
    TableSpec("f", 300, 12),
    TableSpec("i8", 200, 9, row_format=RowFormat.INT8),
    TableSpec("i32", 250, 16, row_format=RowFormat.INT32),
]


def batches(count, seed, torch_inputs=True, weighted=True):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        B = int(rng.integers(1, 30))
        lengths = rng.integers(0, 12, size=len(TABLES) * B)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate(
            [
                rng.integers(0, TABLES[t].num_embeddings, size=lengths[t * B : (t + 1) * B].sum())
                for t in range(len(TABLES))
            ]
        )
        weights = rng.uniform(-2, 2, size=indices.size).astype(np.float32) if k % 2 and weighted else None
        item = (indices, offsets) if weights is None else (indices, offsets, weights)
        out.append(tuple(torch.from_numpy(a) for a in item) if torch_inputs else item)
    return out


@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("torch_inputs", [True, False])
def test_pipeline_and_forward_async_equal_forward(pooling, torch_inputs):
    with TableBatchedEmbeddingBags(
        TABLES, backend="emulator", nr_dpus=6, pooling_mode=pooling, nr_tasklets=4, seed=2
    ) as tbe:
        items = batches(16, 3, torch_inputs, weighted=pooling == "sum")  # weights need SUM (torch's rule)
        serial = [tbe(*item) for item in items]
        piped = list(tbe.pipeline(items))
        futures = [tbe.forward_async(*item) for item in items]
        for k, (a, b, f) in enumerate(zip(serial, piped, futures)):
            c = f.result(timeout=120)
            assert type(a) is type(b) is type(c)
            a, b, c = (np.asarray(x) for x in (a, b, c))
            assert np.array_equal(a, b) and np.array_equal(a, c), k
        assert tbe.last_stats is not None and tbe.last_stats.nr_bags == np.asarray(serial[-1]).shape[0]


def test_a_bad_batch_raises_at_its_turn():
    with TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=3, nr_tasklets=4) as tbe:
        items = batches(5, 4)
        bad = (items[2][0].clone(), items[2][1])
        bad[0][0] = 10**6
        seen = []
        with pytest.raises(InvalidInputError):
            for out in tbe.pipeline([*items[:2], bad, *items[3:]]):
                seen.append(out)
        assert len(seen) == 2 and all(torch.equal(s, tbe(*i)) for s, i in zip(seen, items))
        with pytest.raises(InvalidInputError):
            tbe.forward_async(*bad)


def test_a_fault_is_on_its_future_and_the_module_goes_on(monkeypatch):
    monkeypatch.setenv("UPDLRM_EMU_FAULTS", "kill:dpu=1,launch=2")
    with TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=3, nr_tasklets=4, seed=5) as tbe:
        items = batches(5, 6)
        futures = [tbe.forward_async(*item) for item in items]
        with pytest.raises(DpuFaultError, match="DPU 1"):
            futures[1].result(timeout=60)
        monkeypatch.delenv("UPDLRM_EMU_FAULTS")
        for k in (0, 2, 3, 4):
            assert torch.equal(futures[k].result(timeout=60), tbe(*items[k]))


def test_faults_on_every_launch_while_another_thread_changes_the_environment(monkeypatch):
    # Every launch kills a worker, so the pipeline's driver thread spawns workers again
    # for each batch while this thread sets and unsets environment variables (as the test
    # above does with monkeypatch.delenv). The emulator must spawn them from its own copy
    # of the environment: reading `environ` while another thread changes it crashed.
    monkeypatch.setenv("UPDLRM_EMU_FAULTS", "kill:dpu=1")
    tables = [TableSpec("f", 3000, 16), TableSpec("g", 2000, 8)]
    rng = np.random.default_rng(7)
    items = []
    for _ in range(12):
        lengths = rng.integers(0, 40, size=len(tables) * 256)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        items.append((torch.from_numpy(rng.integers(0, 2000, size=int(offsets[-1]))), torch.from_numpy(offsets)))
    names = [f"UPDLRM_TEST_CHURN_{k}" for k in range(50)]
    for name in names:
        monkeypatch.delenv(name, raising=False)  # restored (removed) at teardown
    stop = threading.Event()

    def churn():
        k = 0
        while not stop.is_set():
            os.environ[names[k % 50]] = "x" * (k % 200)
            if k % 3 == 0:
                del os.environ[names[k % 50]]
            k += 1

    changer = threading.Thread(target=churn, daemon=True)
    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=3, nr_tasklets=4, seed=5) as tbe:
        changer.start()
        try:
            futures = [tbe.forward_async(*item) for item in items]
            for future in futures:
                with pytest.raises(DpuFaultError, match=r"DPU 1.*kernel reloaded, tables kept"):
                    future.result(timeout=120)
        finally:
            stop.set()
            changer.join()


def test_close_finishes_queued_batches():
    tbe = TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=3, nr_tasklets=4)
    items = batches(10, 7)
    futures = [tbe.forward_async(*item) for item in items]
    tbe.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(RuntimeError, match="closed"):
        tbe.forward_async(*items[0])
