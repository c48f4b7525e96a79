"""Hypothesis strategies for the differential fuzz tests (tests/host/test_engine_fuzz.py,
tests/api/test_api_fuzz.py): random tables, weights, plans and batches.

The strategies draw the *structure* (how many tables, which formats and dims, which plan
layout, which kind of batch) through hypothesis, so failures shrink towards small,
readable cases; the bulk numbers (row values, indices) come from a numpy generator whose
seed is drawn too.

Default strategies stay inside the range where integer results are exact: for every
integer table, max |row| x max |Q16 weight| x longest bag < 2**63 (``q16_weight_limit``).
Cases beyond it belong to the explicit overflow tests.

The fuzz tests run a fixed, small number of examples (derandomized under ``CI=true``, see
tests/conftest.py); ``UPDLRM_FUZZ_EXAMPLES=N`` runs N examples per fuzz test instead
(fewer for tests whose examples are costly, see ``fuzz_examples``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from updlrm.plan import Plan, Shard, uniform_plan
from updlrm.specs import RowFormat, TableSpec, Topology

# The exact integer / torch reference lives with the engine tests; the API fuzz test
# imports it from here (tests/api has no path to tests/host otherwise).
sys.path.insert(0, str(Path(__file__).resolve().parent / "host"))
from engine_reference import assert_matches, fp32_rtol, q16, reference  # noqa: F401 (after the path it needs)

KERNEL_SOURCE = Path(__file__).resolve().parents[1] / "dpu_kernels" / "embedding_bag.c"
FORMATS = (RowFormat.FP32, RowFormat.INT32, RowFormat.INT8)
INT64_MAX = (1 << 63) - 1
Q16_MAX = (1 << 31) - 1  # int32 Q16 weights (dpu_kernels/embedding_bag_abi.h, EB_WEIGHT_Q16_ONE)
Q16_MIN = -(1 << 31)
# Largest float32 below 32768 (32767.998): its Q16 value 2**31 - 128 still fits an int32.
MAX_FLOAT32_Q16_WEIGHT = float(np.nextafter(np.float32(32768), np.float32(0)))


def fuzz_examples(ci_examples: int, cost: int = 1) -> int:
    """Examples per fuzz test: ``ci_examples``, or with ``UPDLRM_FUZZ_EXAMPLES=N`` set, N
    (N / ``cost`` for a test whose examples cost ``cost`` times more than most)."""
    value = os.environ.get("UPDLRM_FUZZ_EXAMPLES")
    return max(ci_examples, int(value) // cost) if value else ci_examples


def fuzz_settings(ci_examples: int, cost: int = 1):
    """Settings of one fuzz test: no per-example deadline (the first example may compile
    a kernel), health checks that only measure data size/speed off."""
    return settings(
        max_examples=fuzz_examples(ci_examples, cost),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---- the kernel's WRAM row buffer (the one home of that fact: embedding_bag.c) -----------


def kernel_row_buffer_bytes(nr_tasklets: int) -> int:
    """EB_ROW_BUFFER_BYTES of the kernel built for ``nr_tasklets``, read from its source."""
    text = KERNEL_SOURCE.read_text()
    block = re.search(r"#ifndef EB_ROW_BUFFER_BYTES\n(.*?)\n#endif\n#endif", text, re.S)
    assert block, "embedding_bag.c: EB_ROW_BUFFER_BYTES block not found; update kernel_row_buffer_bytes"
    for bound, size in re.findall(r"NR_TASKLETS <= (\d+)\n#define EB_ROW_BUFFER_BYTES (\d+)", block.group(1)):
        if nr_tasklets <= int(bound):
            return int(size)
    return int(re.search(r"#else\n#define EB_ROW_BUFFER_BYTES (\d+)", block.group(1)).group(1))


def chunk_columns(row_format: RowFormat, nr_tasklets: int, weighted: bool) -> int:
    """Columns of one kernel column chunk (row buffer / element, staging / accumulator)."""
    buffer = kernel_row_buffer_bytes(nr_tasklets)
    element = row_format.element_bytes
    accumulator = 4 if row_format == RowFormat.FP32 or (row_format == RowFormat.INT8 and not weighted) else 8
    return min(buffer // element, buffer // accumulator) & ~7


def wide_dims(row_format: RowFormat, nr_tasklets: int) -> list[int]:
    """Dims at and around one and two column chunks, weighted or not."""
    dims = set()
    for weighted in (False, True):
        c = chunk_columns(row_format, nr_tasklets, weighted)
        dims.update({c - 1, c, c + 1, 2 * c + 3})
    return sorted(dims)


# ---- tables and their stored rows --------------------------------------------------------


@st.composite
def table_specs(
    draw, nr_tasklets: int = 16, max_tables: int = 4, max_rows: int = 300, wide: bool = True
) -> list[TableSpec]:
    """1..max_tables tables, every row format, odd and (``wide``) wider-than-the-row-buffer dims."""
    tables = []
    for i in range(draw(st.integers(1, max_tables))):
        fmt = draw(st.sampled_from(FORMATS))
        dims = [st.integers(1, 12), st.integers(13, 70)] + (
            [st.sampled_from(wide_dims(fmt, nr_tasklets))] if wide else []
        )
        dim = draw(st.one_of(*dims))
        rows = draw(st.one_of(st.just(1), st.integers(1, max_rows)))
        scale = 1.0 if fmt == RowFormat.FP32 else draw(st.sampled_from([1.0, 0.5, 0.03, 2.0**-20, 3.75]))
        tables.append(TableSpec(f"t{i}_{fmt.value}", rows, dim, row_format=fmt, scale=scale))
    return tables


ROW_VALUE_MODES = ("normal", "extreme", "constant", "sparse")


def stored_rows(spec: TableSpec, mode: str, rng: np.random.Generator) -> np.ndarray:
    """A table's rows as the engine stores them (float32 / int32 / int8 values)."""
    shape = (spec.num_embeddings, spec.embedding_dim)
    fmt = spec.row_format
    if fmt == RowFormat.FP32:
        if mode == "extreme":  # large and tiny magnitudes side by side (no inf within a bag)
            values = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 7, shape)
        elif mode == "constant":
            values = np.full(shape, rng.standard_normal())
        else:
            values = rng.standard_normal(shape)
        if mode == "sparse":
            values[rng.random(shape) < 0.8] = 0.0
        return values.astype(np.float32)
    info = np.iinfo(np.int32 if fmt == RowFormat.INT32 else np.int8)
    if mode == "extreme":  # the format's full range, its minimum included
        values = rng.choice(np.array([info.min, info.min + 1, -1, 0, 1, info.max - 1, info.max], np.int64), shape)
    elif mode == "constant":
        values = np.full(shape, info.max if rng.random() < 0.5 else info.min, np.int64)
    else:
        bound = (1 << 24) if fmt == RowFormat.INT32 else 127  # updlrm's fitted ranges (tbe.FIT_QMAX)
        values = rng.integers(-bound, bound + 1, shape)
    if mode == "sparse":
        values[rng.random(shape) < 0.8] = 0
    return values.astype(info.dtype)


@st.composite
def table_rows(draw, tables: list[TableSpec]) -> list[np.ndarray]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [stored_rows(spec, draw(st.sampled_from(ROW_VALUE_MODES)), rng) for spec in tables]


# ---- plans --------------------------------------------------------------------------------


def _row_parts(rows: np.ndarray, nr_parts: int, contiguous: bool, rng) -> list[np.ndarray]:
    if contiguous:
        cuts = (
            np.sort(rng.choice(np.arange(1, rows.size), size=min(nr_parts - 1, max(0, rows.size - 1)), replace=False))
            if rows.size > 1
            else []
        )
        return list(np.split(rows, cuts))
    owner = rng.integers(0, nr_parts, rows.size)
    return [rows[owner == k] for k in range(nr_parts)]


@st.composite
def random_plan(draw, tables: list[TableSpec], topology: Topology) -> Plan:
    """Arbitrary valid plans: any column boundaries, row ranges or explicit row sets,
    replicated rows (also onto range shards and extra replica-only shards), row ranges
    held again whole (replica sets) or in part, in any plan order, host-cached rows (up
    to whole host-only tables), empty shards."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = topology.nr_dpus
    shards: list[Shard] = []
    host_rows: dict[int, np.ndarray] = {}
    for t, spec in enumerate(tables):
        all_rows = np.arange(spec.num_embeddings, dtype=np.int64)
        host_mode = draw(st.sampled_from(["none", "none", "some", "all"]))
        host = np.empty(0, np.int64)
        if host_mode == "some":
            host = np.flatnonzero(rng.random(spec.num_embeddings) < rng.uniform(0.05, 0.6)).astype(np.int64)
        elif host_mode == "all":
            host = all_rows
        if host.size:
            # The plan format allows any order and repeats; the engine deduplicates.
            host_rows[t] = (
                host
                if draw(st.booleans())
                else rng.permutation(np.concatenate([host, host[: int(rng.integers(0, 3))]]))
            )
        # Rows the DPUs must hold: the non-cached ones, or all of them (a cached row held
        # by a DPU too is legal; the host serves it).
        dpu_rows = all_rows if draw(st.booleans()) else np.setdiff1d(all_rows, host)
        max_slices = min(3, spec.embedding_dim, n)
        nr_slices = draw(st.integers(1, max_slices))
        cuts = (
            sorted(rng.choice(np.arange(1, spec.embedding_dim), size=nr_slices - 1, replace=False).tolist())
            if nr_slices > 1
            else []
        )
        bounds = [0, *cuts, spec.embedding_dim]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if dpu_rows.size == 0 and host.size == spec.num_embeddings and draw(st.booleans()):
                continue  # a host-only table slice: no shard at all
            dpus = rng.permutation(n)
            nr_parts = draw(st.integers(1, n))
            contiguous = draw(st.booleans())
            parts = _row_parts(dpu_rows, nr_parts, contiguous, rng)
            sets: list[np.ndarray | range] = []
            for part in parts:
                if contiguous and part.size and part[-1] - part[0] + 1 == part.size and draw(st.booleans()):
                    sets.append(range(int(part[0]), int(part[-1]) + 1))
                else:
                    sets.append(part)
            if draw(st.booleans()) and len(sets) > 1:  # replicate some rows onto other parts
                hot = (
                    rng.choice(dpu_rows, size=min(dpu_rows.size, int(rng.integers(1, 6))), replace=False)
                    if dpu_rows.size
                    else []
                )
                for row in hot:
                    k = int(rng.integers(0, len(sets)))
                    sets[k] = np.union1d(
                        np.asarray(
                            sets[k] if not isinstance(sets[k], range) else np.arange(sets[k].start, sets[k].stop)
                        ),
                        [row],
                    ).astype(np.int64)
            mine = []
            for k, rows in enumerate(sets):
                if len(rows) or draw(st.integers(0, 4)) == 0:  # keep a few empty shards
                    mine.append(Shard(t, int(dpus[k]), lo, hi, rows))
            free = list(dpus[len(sets) :])
            if free and dpu_rows.size and draw(st.booleans()):  # a replica-only shard
                extra = np.sort(
                    rng.choice(dpu_rows, size=int(rng.integers(1, min(dpu_rows.size, 8) + 1)), replace=False)
                )
                mine.append(Shard(t, int(free.pop(0)), lo, hi, extra))
            ranges = [r for r in sets if isinstance(r, range) and len(r)]
            if free and ranges and draw(st.booleans()):  # replica sets: whole ranges held again
                partial = draw(st.integers(0, 3)) == 0  # now and then a copy that overlaps only in part
                for _ in range(int(rng.integers(1, len(free) + 1))):
                    r = ranges[int(rng.integers(0, len(ranges)))]
                    rows = range(r.start, r.stop - 1) if partial and len(r) > 1 else r
                    mine.insert(int(rng.integers(0, len(mine) + 1)), Shard(t, int(free.pop(0)), lo, hi, rows))
            shards += mine
    plan = Plan(list(tables), topology, shards, host_rows=host_rows, metadata={"builder": "fuzz:random_plan"})
    plan.validate()
    return plan


@st.composite
def partitioner_plan(draw, tables: list[TableSpec], topology: Topology) -> Plan:
    """``build_plan`` on a small synthetic trace: explicit row sets, replicas, host cache."""
    from updlrm.partitioner.placement import build_plan
    from updlrm.partitioner.workloads import synthetic_trace

    trace = synthetic_trace(
        tables,
        batch_size=draw(st.sampled_from([16, 64])),
        num_batches=2,
        pooling=draw(st.sampled_from([2, 8])),
        alpha=draw(st.sampled_from([0.0, 1.1, 1.5])),
        seed=draw(st.integers(0, 1000)),
    )
    return build_plan(
        tables,
        trace,
        topology,
        progress=False,
        min_count=2,
        cache=draw(st.sampled_from(["auto", "replicate", "host", "none"])),
        graph=draw(st.sampled_from(["none", "graph"])),
        mram_reserved_bytes=0,
    )


@st.composite
def plans(draw, tables: list[TableSpec], topology: Topology) -> Plan:
    """Every layout: uniform table-, row-, column-wise and tiled plans, random plans and
    partitioner plans."""
    kind = draw(st.sampled_from(["table_wise", "row_wise", "column_wise", "tiled", "random", "random", "partitioner"]))
    if kind == "random":
        return draw(random_plan(tables, topology))
    if kind == "partitioner":
        return draw(partitioner_plan(tables, topology))
    return uniform_plan(
        tables,
        topology,
        kind,
        column_slices=draw(st.integers(1, 4)),
        dpus_per_table=draw(st.one_of(st.none(), st.integers(1, topology.nr_dpus))),
    )


def topologies(max_dpus: int = 9, ranks: bool = False):
    """A few DPUs; with ``ranks``, now and then more than one rank of 64 (transfers are
    padded per rank)."""
    counts = st.integers(1, max_dpus)
    if ranks:
        counts = st.one_of(counts, counts, counts, st.sampled_from([65, 130]))
    return counts.map(lambda n: Topology(nr_dpus=n))


def interesting_rows(plan: Plan, t: int) -> np.ndarray:
    """Rows where routing has cases: first/last rows, shard edges, replicas, host-cached rows."""
    spec = plan.tables[t]
    rows = [0, spec.num_embeddings - 1]
    held: dict[tuple[int, int], list[np.ndarray]] = {}
    for s in plan.shards:
        if s.table == t and s.num_rows:
            rows += [s.first_row, s.last_row]
            if not isinstance(s.rows, range):
                held.setdefault((s.col_start, s.col_stop), []).append(s.rows)
    for sets in held.values():
        if len(sets) > 1:
            values, counts = np.unique(np.concatenate(sets), return_counts=True)
            rows += values[counts > 1][:64].tolist()
    host = plan.host_rows.get(t)
    if host is not None and len(host):
        rows += np.asarray(host)[:64].tolist()
    return np.unique(np.asarray(rows, dtype=np.int64))


# ---- batches -------------------------------------------------------------------------------

LENGTH_MODES = ("empty", "small", "small", "mixed", "one_huge")
INDEX_MODES = ("uniform", "duplicates", "few", "interesting", "zipf")


def bag_lengths(mode: str, count: int, rng: np.random.Generator, huge: int) -> np.ndarray:
    if mode == "empty":
        return np.zeros(count, np.int64)
    lengths = rng.integers(0, 9, count)
    if mode == "mixed":
        big = rng.random(count) < 0.1
        lengths[big] = rng.integers(100, max(101, huge // 4), int(big.sum()))
    elif mode == "one_huge" and count:
        lengths[int(rng.integers(0, count))] = int(rng.integers(huge // 2, huge + 1))
    return lengths.astype(np.int64)


def bag_rows(mode: str, n: int, num_rows: int, special: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if mode == "duplicates":  # the whole bag is one row
        return np.full(n, int(rng.integers(0, num_rows)), np.int64)
    if mode == "few":
        return rng.choice(rng.integers(0, num_rows, 3), n)
    if mode == "interesting":
        return rng.choice(special, n)
    if mode == "zipf":
        return (rng.zipf(1.3, n) - 1) % num_rows
    return rng.integers(0, num_rows, n)


@st.composite
def batches(draw, plan: Plan, max_batch: int = 40, huge: int = 3000):
    """(indices int64, offsets int64 T*B+1) in TBE layout: empty batches, empty bags,
    huge bags, duplicate-heavy bags, lookups of replicated and host-cached rows."""
    tables = plan.tables
    batch = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 13, max_batch // 2, max_batch]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    indices, lengths = [], []
    for t, spec in enumerate(tables):
        mode = draw(st.sampled_from(LENGTH_MODES))
        rows_mode = draw(st.sampled_from(INDEX_MODES))
        special = interesting_rows(plan, t)
        for n in bag_lengths(mode, batch, rng, huge):
            indices.append(bag_rows(rows_mode, int(n), spec.num_embeddings, special, rng))
            lengths.append(int(n))
    indices = np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64))).astype(np.int64)
    return indices, offsets


# ---- per-sample weights ----------------------------------------------------------------------


def table_of_lookup(nr_tables: int, offsets: np.ndarray) -> np.ndarray:
    batch = (len(offsets) - 1) // nr_tables
    return np.repeat(np.arange(nr_tables * batch) // max(batch, 1), np.diff(offsets))


def integer_term_bound(tables: list[TableSpec], rows: list[np.ndarray], offsets: np.ndarray) -> int:
    """max |row| x longest bag over the batch's integer tables (0 without integer lookups)."""
    batch = (len(offsets) - 1) // len(tables)
    bound = 0
    for t, spec in enumerate(tables):
        if spec.row_format == RowFormat.FP32 or batch == 0:
            continue
        longest = int(np.diff(offsets[t * batch : (t + 1) * batch + 1]).max())
        peak = int(np.abs(rows[t].astype(np.int64)).max()) if rows[t].size else 0
        bound = max(bound, peak * longest)
    return bound


def q16_weight_limit(tables: list[TableSpec], rows: list[np.ndarray], offsets: np.ndarray) -> int:
    """Largest |Q16 weight| that keeps every integer bag sum exact in int64: the sum of
    |terms| of a bag, at most max |row| x limit x longest bag, stays <= 2**63 - 1."""
    bound = integer_term_bound(tables, rows, offsets)
    return Q16_MAX if bound == 0 else min(Q16_MAX, INT64_MAX // bound)


def float_below_q16(limit: int) -> float:
    """The largest float32 w with |rint(w * 65536)| <= limit."""
    w = np.float32(limit / 65536.0)
    while int(q16(np.array([w]))[0]) > limit:
        w = np.nextafter(w, np.float32(0))
    return float(w)


WEIGHT_MODES = ("none", "none", "ones", "uniform", "edge", "budget")


@st.composite
def per_sample_weights(draw, tables: list[TableSpec], rows: list[np.ndarray], offsets: np.ndarray):
    """None, or float32 weights inside the exact range: ones, small uniform values, values
    at the range's edges (the exactness limit, -32768, zero, Q16 rounding ties), or
    uniform up to the limit."""
    mode = draw(st.sampled_from(WEIGHT_MODES))
    if mode == "none":
        return None
    n = int(offsets[-1])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    limit = q16_weight_limit(tables, rows, offsets)
    top = float_below_q16(limit)
    if mode == "ones":
        return np.ones(n, np.float32)
    if mode == "uniform":
        return rng.uniform(-2, 2, n).astype(np.float32)
    if mode == "budget":
        return rng.uniform(-top, top, n).astype(np.float32)
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float64) / 65536.0  # round half to even
    edges = [top, -top, 0.0, -0.0, *ties]
    if integer_term_bound(tables, rows, offsets) << 31 <= INT64_MAX:
        edges.append(-32768.0)  # -2**31 in Q16: the most negative weight that fits
    return rng.choice(np.array(edges, np.float32), n)
