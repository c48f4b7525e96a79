"""Modules shared by many threads (serving): every call gets exactly its serial result.

8 threads x 100 random batches on one module, mixed fp32/int8/int32 tables, weighted and
not; ``last_stats`` / ``last_profile()`` belong to the calling thread.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from updlrm import EmbeddingBag, RowFormat, TableBatchedEmbeddingBags, TableSpec

THREADS = 8
BATCHES_PER_THREAD = 100

TABLES = [
    TableSpec("f", 400, 8),
    TableSpec("i8", 300, 12, row_format=RowFormat.INT8),
    TableSpec("i32", 350, 6, row_format=RowFormat.INT32),
]


def tbe_batches(count, seed):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        B = int(rng.integers(1, 48))
        lengths = rng.integers(0, 20, len(TABLES) * B)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        indices = np.concatenate(
            [rng.integers(0, TABLES[k // B].num_embeddings, n) for k, n in enumerate(lengths)] + [np.zeros(0, np.int64)]
        )
        weights = rng.uniform(-3, 3, indices.size).astype(np.float32) if rng.integers(0, 2) else None
        batches.append((torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(offsets), weights))
    return batches


def shared_run(call, batches, threads=THREADS):
    """Call `call(k)` for every batch index, spread over threads that start together."""
    order = np.random.default_rng(2).permutation(len(batches))
    barrier = threading.Barrier(threads)
    results = [None] * len(batches)

    def work(part):
        barrier.wait()
        for k in part:
            results[k] = call(k)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, order[t::threads]) for t in range(threads)]:
            future.result()
    return results


def test_tbe_shared_by_threads_gives_the_serial_results():
    batches = tbe_batches(THREADS * BATCHES_PER_THREAD, seed=11)
    with TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=8, nr_tasklets=8, seed=3) as tbe:
        serial = [tbe(*batch) for batch in batches]

        def call(k):
            out = tbe(*batches[k])
            stats = tbe.last_stats  # this thread's batch, whatever the others ran meanwhile
            return out, stats

        shared = shared_run(call, batches)
    wrong = [k for k, (a, (b, _)) in enumerate(zip(serial, shared)) if not torch.equal(a, b)]
    assert not wrong, f"{len(wrong)} of {len(batches)} outputs differ from the serial run"
    for (indices, offsets, _), (_, stats) in zip(batches, shared):
        assert stats.nr_lookups == indices.numel() and stats.nr_bags == (offsets.numel() - 1) // len(TABLES)


def test_embedding_bag_shared_by_threads_gives_the_serial_results():
    rng = np.random.default_rng(12)
    inputs = []
    for k in range(THREADS * BATCHES_PER_THREAD):
        x = torch.from_numpy(rng.integers(0, 500, (int(rng.integers(1, 30)), int(rng.integers(1, 12)))))
        w = torch.from_numpy(rng.uniform(-2, 2, tuple(x.shape)).astype(np.float32)) if k % 2 else None
        inputs.append((x, w))
    for row_format in (RowFormat.FP32, RowFormat.INT8):
        with EmbeddingBag(
            500, 10, mode="sum", backend="emulator", nr_dpus=4, nr_tasklets=8, row_format=row_format
        ) as bag:
            serial = [bag(x, per_sample_weights=w) for x, w in inputs]
            shared = shared_run(lambda k: bag(inputs[k][0], per_sample_weights=inputs[k][1]), inputs)
        assert all(torch.equal(a, b) for a, b in zip(serial, shared)), row_format


def test_last_profile_is_the_calling_threads_last_batch():
    with TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=4, nr_tasklets=4) as tbe:
        tbe(np.array([1, 2, 3]), np.array([0, 1, 2, 3]))
        mine = tbe.last_stats
        seen = []

        def other():
            seen.append(tbe.last_stats)  # a new thread has run nothing yet
            tbe(np.arange(30), np.array([0, 10, 20, 30]))
            seen.append(tbe.last_stats)
            seen.append(tbe.last_profile())

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen[0] is None and seen[1].nr_lookups == 30 and seen[2] is not None
        assert tbe.last_stats is mine and mine.nr_lookups == 3
        assert tbe.last_profile().nr_lookups == 3


def test_closing_while_other_threads_run_gives_results_or_a_clear_error():
    batches = tbe_batches(200, seed=13)
    tbe = TableBatchedEmbeddingBags(TABLES, backend="emulator", nr_dpus=4, nr_tasklets=4, seed=3)
    serial = [tbe(*batch) for batch in batches]
    outcomes = []

    def call(k):
        if k == 100:
            tbe.close()
        try:
            out = tbe(*batches[k])
            outcomes.append(torch.equal(out, serial[k]))
        except RuntimeError as error:  # the module's "closed" error or the engine's
            assert "closed" in str(error)
            outcomes.append("closed")
        return None

    shared_run(call, batches, threads=4)
    assert all(o is True or o == "closed" for o in outcomes) and "closed" in outcomes
