"""What each rank runs in the distributed tests (spawned processes import this module by name)."""

import os
import time

import numpy as np

from updlrm.distributed.cluster import ClusterPlan
from updlrm.distributed.sharded import ShardedTableBatchedEmbeddingBags


def random_batch(tables, batch_size, rng, weighted, max_len=6):
    lengths = rng.integers(0, max_len + 1, len(tables) * batch_size)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate(
        [
            rng.integers(0, tables[t].num_embeddings, lengths[t * batch_size : (t + 1) * batch_size].sum())
            for t in range(len(tables))
        ]
    ).astype(np.int64)
    weights = rng.uniform(-2, 2, indices.size).astype(np.float32) if weighted else None
    return indices, offsets, weights


def run_batches(ctx, plan_dict, seed, batches, weighted, fault=None):
    """Run ``batches`` random batches (batch size differs per rank); ``fault`` = (rank, batch, kind)."""
    plan = ClusterPlan.from_dict(plan_dict)
    module = ShardedTableBatchedEmbeddingBags(plan, ctx, backend="emulator", seed=seed, nr_tasklets=4)
    results = []
    try:
        for k in range(batches):
            rng = np.random.default_rng([seed, k, ctx.rank])
            idx, off, psw = random_batch(plan.tables, 3 + 2 * ctx.rank, rng, weighted)
            if fault is not None and fault[0] == ctx.rank and fault[1] == k:
                if fault[2] == "die":
                    os._exit(3)
                if fault[2] == "hang":
                    time.sleep(120)
                if fault[2] == "bad_input":
                    idx = idx.copy()
                    idx[0] = 10**9
            out = module(idx, off, psw)
            results.append((idx, off, psw, out, module.last_stats.as_dict()))
    finally:
        module.close()
    return results


def run_collection(ctx, plan_dict, configs, seed, batches, fault=None):
    """A sharded collection over the plan: KJTs of 2-4 features (one shared table, one MEAN)."""
    import torch

    from updlrm.distributed.collection import ShardedEmbeddingBagCollection
    from updlrm.kjt import KeyedJaggedTensor

    plan = ClusterPlan.from_dict(plan_dict)
    ebc = ShardedEmbeddingBagCollection(
        configs, cluster_plan=plan, context=ctx, backend="emulator", seed=seed, nr_tasklets=4
    )
    keys = ebc.feature_names()
    sizes = {f: c.num_embeddings for c in configs for f in c.feature_names}
    results = []
    try:
        for k in range(batches):
            rng = np.random.default_rng([seed, k, ctx.rank])
            B = 0 if (fault == "empty" and ctx.rank == 1) else 2 + ctx.rank
            lengths = rng.integers(0, 5, len(keys) * B)
            values = np.concatenate(
                [rng.integers(0, sizes[f], lengths[i * B : (i + 1) * B].sum()) for i, f in enumerate(keys)]
                or [np.zeros(0)]
            ).astype(np.int64)
            if fault == "bad_key" and ctx.rank == 1 and k == 1:
                keys_used = keys[:-1] + ["nope"]
            else:
                keys_used = keys
            kjt = KeyedJaggedTensor.from_lengths_sync(keys_used, torch.from_numpy(values), torch.from_numpy(lengths))
            out = ebc(kjt)
            results.append((keys, values, lengths, out.values().numpy()))
    finally:
        ebc.close()
    return results
