"""Staged tables (eb_merge.c): a table without host-cached rows is merged in a block of bags
and written to the output once, finished; the launch leaves its cells alone.

The same plan with one host-cached row per table that no lookup asks for takes the other
path (cells started during the launch, partials added in the output rows, a finish pass):
both must give the same bits, fp32 included, since each cell sums 0 and then the same
partials in the same order."""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference

from updlrm.host.engine import Engine
from updlrm.plan import Plan, uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

TABLES = [
    TableSpec("f", 400, 16),
    TableSpec("q", 300, 64, row_format=RowFormat.INT8, scale=0.25),
    # rows up to 2^24 in bags of up to 30: sums past int32, so the int64 scratch path
    TableSpec("w", 200, 64, row_format=RowFormat.INT32, scale=2.0**-20),
    TableSpec("g", 100, 8),
]


def plans(mram_bytes: int | None = None) -> tuple[Plan, Plan]:
    topology = Topology(4) if mram_bytes is None else Topology(4, mram_bytes_per_dpu=mram_bytes)
    staged = uniform_plan(TABLES, topology, "row_wise")
    # The last row of every table on the host: no lookup below asks for it.
    unused = {t: np.array([spec.num_embeddings - 1]) for t, spec in enumerate(TABLES)}
    return staged, Plan(TABLES, topology, staged.shards, host_rows=unused)


def batch(rng, bags: int, weighted: bool):
    indices, offsets, psw = random_batch(TABLES, bags, 30, rng, weighted=weighted)
    for t, spec in enumerate(TABLES):
        part = slice(offsets[t * bags], offsets[(t + 1) * bags])
        indices[part] %= spec.num_embeddings - 1  # never the host-cached last row
    return indices, offsets, psw


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_staged_tables_give_the_bits_of_the_output_path(weighted, threads):
    """2,000 bags: blocks of 512 bags for the int64 table (several a thread), two merge
    threads when asked; every cell written over a NaN-filled output, empty bags included."""
    rng = np.random.default_rng([7, weighted, threads])
    staged, unstaged = plans()
    weights = random_weights(TABLES, rng)
    out = np.full((2000, sum(t.embedding_dim for t in TABLES)), np.nan, np.float32)
    with Engine(staged, weights, host_threads=threads) as a, Engine(unstaged, weights, host_threads=threads) as b:
        for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
            indices, offsets, psw = batch(rng, 2000, weighted)
            assert (np.diff(offsets) == 0).any()  # empty bags
            out[:] = np.nan
            got, stats = a.run(indices, offsets, psw, pooling, out=out)
            other, other_stats = b.run(indices, offsets, psw, pooling)
            assert stats.host_cache_hits == other_stats.host_cache_hits == 0
            assert np.array_equal(got, other)
            expected, magnitude = reference(TABLES, weights, indices, offsets, psw, pooling)
            assert_matches(TABLES, got, expected, magnitude)


def test_staged_tables_over_split_launches():
    """Little MRAM: the batch runs as several launches, each merging its own bags."""
    rng = np.random.default_rng(11)
    rows_bytes = max(spec.num_embeddings * spec.embedding_dim * 4 for spec in TABLES)
    staged, unstaged = plans(mram_bytes=rows_bytes + 80_000)
    weights = random_weights(TABLES, rng)
    indices, offsets, psw = batch(rng, 600, True)
    out = np.full((600, sum(t.embedding_dim for t in TABLES)), np.nan, np.float32)
    with Engine(staged, weights) as a, Engine(unstaged, weights) as b:
        got, stats = a.run(indices, offsets, psw, PoolingMode.MEAN, out=out)
        other, _ = b.run(indices, offsets, psw, PoolingMode.MEAN)
    assert stats.nr_launches > 1
    assert np.array_equal(got, other)
    expected, magnitude = reference(TABLES, weights, indices, offsets, psw, PoolingMode.MEAN)
    assert_matches(TABLES, got, expected, magnitude)


def test_streamed_cells_equal_cached_ones():
    """Cells of whole 64-byte lines (every table's columns a multiple of 16 floats) go to
    a line-aligned output with non-temporal stores; to an output 16 bytes off a line, with
    plain ones. Same bits either way, and the engine's own output is line-aligned."""
    rng = np.random.default_rng(5)
    tables = [
        TableSpec("f", 400, 16),
        TableSpec("q", 300, 64, row_format=RowFormat.INT8, scale=0.25),
        TableSpec("w", 200, 64, row_format=RowFormat.INT32, scale=2.0**-20),
        TableSpec("g", 100, 32),
    ]
    width = sum(t.embedding_dim for t in tables)
    plan = uniform_plan(tables, Topology(4), "row_wise")
    weights = random_weights(tables, rng)
    raw = np.full(1500 * width + 32, np.nan, np.float32)
    skip = (-raw.ctypes.data % 64) // 4 + 4  # 16 bytes past a line
    off_line = raw[skip : skip + 1500 * width].reshape(1500, width)
    with Engine(plan, weights, host_threads=2) as engine:
        for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
            indices, offsets, psw = random_batch(tables, 1500, 30, rng, weighted=pooling == PoolingMode.SUM)
            streamed, _ = engine.run(indices, offsets, psw, pooling)
            assert streamed.ctypes.data % 64 == 0
            cached, _ = engine.run(indices, offsets, psw, pooling, out=off_line)
            assert cached is off_line and np.array_equal(streamed, cached)
            expected, magnitude = reference(tables, weights, indices, offsets, psw, pooling)
            assert_matches(tables, streamed, expected, magnitude)
