"""Route+pack in parts on host threads, cut by measured routing time (host/eb_parts.c).

A slot times each table's routing and cuts later launches' tables into parts of about
equal measured time, so the parts move from batch to batch. A DPU's inputs must not
depend on them: every batch of a stream, routed on several threads with the cut its slot
learned so far, gives the bits and per-DPU counts of a one-thread engine.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import random_weights
from test_engine_dry import PACKED
from test_routing import zipf_batch

from updlrm.host.engine import Engine
from updlrm.plan import Plan, Shard
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology


def mixed_plan() -> Plan:
    """Tables of about equal work that route at different speeds: three whole tables, each
    replicated on 4 DPUs (a bag's lookups are one narrowing copy), then a table whose rows
    are dealt round-robin to 8 DPUs in 2 column slices (a routing entry per lookup, a bag
    spread over every lane; about twice the time per lookup here). The cut by measured
    time differs from the cut by work and moves with each launch's timings."""
    tables = [TableSpec(f"whole{t}", 3000, 16, row_format=RowFormat.INT8, scale=0.5) for t in range(3)]
    tables.append(TableSpec("dealt", 4000, 16))
    shards = [Shard(t, 4 * t + d, 0, 16, range(3000)) for t in range(3) for d in range(4)]
    for lo, hi in ((0, 8), (8, 16)):
        shards += [Shard(3, 12 + d + (8 if lo else 0), lo, hi, np.arange(d, 4000, 8)) for d in range(8)]
    plan = Plan(tables, Topology(28), shards)
    plan.validate()
    return plan


@pytest.mark.parametrize("host_threads", [2, 3])
def test_every_batch_routes_as_on_one_thread_while_the_cut_moves(host_threads):
    rng = np.random.default_rng(host_threads)
    plan = mixed_plan()
    weights = random_weights(plan.tables, rng)
    # Batches of different sizes and poolings (each >= 65,536 lookups: routed in parts).
    batches = [
        zipf_batch(plan.tables, int(b), int(p), rng) for b, p in ((1500, 60), (2200, 50), (1800, 90), (1500, 60))
    ]
    with Engine(plan, weights, host_threads=1) as one, Engine(plan, weights, host_threads=host_threads) as many:
        for indices, offsets, _ in batches:
            expected, one_stats = one.run(indices, offsets, None, PoolingMode.SUM)
            out, stats = many.run(indices, offsets, None, PoolingMode.SUM)
            assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
            for name in PACKED:
                assert getattr(stats, name).tolist() == getattr(one_stats, name).tolist(), name
            assert stats.route_parts > 1 and one_stats.route_parts == 1
