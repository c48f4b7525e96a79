"""Integer exactness: every integer sum is the exact value or an AccumulatorOverflowError, never wrapped.

The engine refuses a batch in which some bag of an integer table could leave int64:
max |row| of the table x sum over the bag of |w| (Q16 units; 1 per lookup unweighted) >
2^63-1 (host/README.md, "Summation order and arithmetic"). Every accumulator - DPU
partials, the host cache, the host merge - holds a sum over a subset of one bag's terms,
so below the bound nothing can wrap. The tests sit on both sides of that bound with the
most adversarial rows (-2^31, 2^31-1, -128) spread over DPUs, tasklets and the host cache.

Set UPDLRM_LONG_TESTS=1 to also run the int8 boundaries that need 2^23-2^25 lookups.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from updlrm import abi
from updlrm.host.engine import AccumulatorOverflowError, Engine, EngineError
from updlrm.partitioner.batch_work import derive_work
from updlrm.plan import Plan, Shard
from updlrm.profile import work_mismatch
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

INT64_MAX = (1 << 63) - 1
LONG = os.environ.get("UPDLRM_LONG_TESTS") == "1"


def exact(rows, indices, offsets, psw, scale, pooling):
    """Reference with Python integers: exact sums, then float32(float64(S) * factor / n)."""
    batch = len(offsets) - 1
    out = np.zeros((batch, rows.shape[1]), np.float32)
    factor = scale / 65536.0 if psw is not None else scale
    for b in range(batch):
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        for c in range(rows.shape[1]):
            if psw is None:
                s = sum(int(rows[i, c]) for i in indices[lo:hi])
            else:
                s = sum(
                    int(rows[i, c]) * int(np.rint(np.float64(w) * 65536.0)) for i, w in zip(indices[lo:hi], psw[lo:hi])
                )
            n = hi - lo if pooling == PoolingMode.MEAN and hi > lo else 1
            out[b, c] = np.float32(float(s) * factor / n)
    return out


def extreme_table(fmt, rows=8):
    """Columns: all at the negative extreme, all at the positive one, alternating, zero."""
    lo, hi = (-(1 << 31), (1 << 31) - 1) if fmt == RowFormat.INT32 else (-128, 127)
    table = np.zeros((rows, 4), np.int32 if fmt == RowFormat.INT32 else np.int8)
    table[:, 0] = lo
    table[:, 1] = hi
    table[:, 2] = np.where(np.arange(rows) % 2, lo, hi)
    return table


def spread_plan(spec, nr_dpus=4, host_rows=(1,)):
    """Rows over several DPUs plus host-cached rows, so a bag's sum is split into many partials."""
    per = -(-spec.num_embeddings // nr_dpus)
    shards = [
        Shard(0, d, 0, spec.embedding_dim, range(d * per, min((d + 1) * per, spec.num_embeddings)))
        for d in range(nr_dpus)
    ]
    plan = Plan([spec], Topology(nr_dpus), shards, host_rows={0: np.array(host_rows)})
    plan.validate()
    return plan


def q16_weight(q: int) -> np.float32:
    """A float32 weight whose Q16 value is exactly q (q with at most 24 significant bits)."""
    w = np.float32(q / 65536.0)
    assert int(np.rint(np.float64(w) * 65536.0)) == q
    return w


@pytest.mark.parametrize("pooling", [PoolingMode.SUM, PoolingMode.MEAN])
@pytest.mark.parametrize("nr_tasklets", [1, 3, 16])
def test_int32_weighted_at_the_int64_boundary(pooling, nr_tasklets):
    spec = TableSpec("i32", 8, 4, row_format=RowFormat.INT32, scale=2.0**-40)
    rows = extreme_table(RowFormat.INT32)
    limit = INT64_MAX // (1 << 31)  # largest sum of |Q16 weights| a bag may have: 2^32 - 1
    big = (1 << 31) - (1 << 8)  # 0x7FFFFF00: a representable weight just below 32768
    # sum of |q16| = 2 * big + 511 = 2^32 - 1 = limit exactly: the worst case fits int64.
    bag = [(0, -q16_weight(big)), (5, q16_weight(big)), (1, q16_weight(511))]
    assert 2 * big + 511 == limit
    indices = np.array([r for r, _ in bag] * 2, np.int64)  # sample 1 as sample 0, on other rows' DPUs too
    indices[3:] = [6, 3, 1]
    psw = np.array([w for _, w in bag] * 2, np.float32)
    offsets = np.array([0, 3, 6], np.int64)
    with Engine(spread_plan(spec), [rows], nr_tasklets=nr_tasklets) as engine:
        out, _ = engine.run(indices, offsets, psw, pooling)
        assert np.array_equal(out, exact(rows, indices, offsets, psw, spec.scale, pooling))
        # Exactly representable end values: -2^31 * (-big + big + 511) etc. hold the worst case.
        # One more Q16 unit of weight in sample 1 is past the bound: refused, naming table and sample.
        more = np.append(psw, q16_weight(1))
        with pytest.raises(
            AccumulatorOverflowError, match=r"table 'i32' \(t=0\), sample 1: its int32 sum could exceed int64"
        ):
            engine.run(np.append(indices, 2), np.array([0, 3, 7]), more, pooling)
        # The engine is untouched by the refusal.
        again, _ = engine.run(indices, offsets, psw, pooling)
        assert np.array_equal(again, out)


def test_int32_worst_case_sum_is_exact_and_not_wrapped():
    """All terms of one sign at the bound: S = -2^31 * (2^32 - 1) = -(2^63 - 2^31), on DPUs and host."""
    spec = TableSpec("i32", 8, 4, row_format=RowFormat.INT32, scale=1.0)
    rows = extreme_table(RowFormat.INT32)
    big = (1 << 31) - (1 << 8)
    indices = np.array([1, 4, 7], np.int64)  # host-cached row 1, two DPUs
    psw = np.array([q16_weight(big), q16_weight(big), q16_weight(511)], np.float32)
    offsets = np.array([0, 3], np.int64)
    with Engine(spread_plan(spec), [rows], nr_tasklets=2) as engine:
        out, stats = engine.run(indices, offsets, psw)
    assert stats.host_cache_hits == 1
    s = -(1 << 31) * (2 * big + 511)
    assert s == -(INT64_MAX + 1) + (1 << 31)
    assert out[0, 0] == np.float32(float(s) / 65536.0)
    assert np.array_equal(out, exact(rows, indices, offsets, psw, 1.0, PoolingMode.SUM))


def test_the_issue_cases_are_refused_not_wrapped():
    """int32 rows, weights 32767 x 300 and 100 x 90k, and rows at 2^31-1 x 3: each an error, none a number."""
    fit = TableSpec("fit", 4, 2, row_format=RowFormat.INT32, scale=2.0**-24)  # quantization="fit": max row 2^24
    rows = np.zeros((4, 2), np.int32)
    rows[1] = 1 << 24
    full = TableSpec("full", 4, 2, row_format=RowFormat.INT32, scale=1.0)
    rows_full = np.zeros((4, 2), np.int32)
    rows_full[1] = (1 << 31) - 1
    cases = [(fit, rows, 300, 32767.0), (fit, rows, 90_000, 100.0), (full, rows_full, 3, 32767.0)]
    for spec, table, n, w in cases:
        with Engine(spread_plan(spec, 2, host_rows=()), [table], nr_tasklets=4) as engine:
            with pytest.raises(
                AccumulatorOverflowError,
                match=rf"table '{spec.name}' \(t=0\), sample 0: its int32 sum could exceed int64",
            ):
                engine.run(np.ones(n, np.int64), np.array([0, n]), np.full(n, w, np.float32))
            # The largest bag of these weights under the bound is exact.
            q = int(np.rint(w * 65536))
            fits = INT64_MAX // (int(table.max()) * q)
            out, _ = engine.run(np.ones(fits, np.int64), np.array([0, fits]), np.full(fits, w, np.float32))
            assert out[0, 0] == np.float32(float(int(table.max()) * q * fits) * spec.scale / 65536.0)
            with pytest.raises(AccumulatorOverflowError):
                engine.run(np.ones(fits + 1, np.int64), np.array([0, fits + 1]), np.full(fits + 1, w, np.float32))


@pytest.mark.parametrize("fmt", [RowFormat.INT32, RowFormat.INT8])
@pytest.mark.parametrize("pooling", [PoolingMode.SUM, PoolingMode.MEAN])
def test_unweighted_long_bags_of_extreme_rows_are_exact(fmt, pooling):
    """Unweighted bags cannot reach the bound in memory (2^32 lookups of int32 rows); long ones stay exact."""
    spec = TableSpec("u", 64, 4, row_format=fmt, scale=0.5)
    rows = extreme_table(fmt, 64)
    rng = np.random.default_rng(1)
    lengths = [0, 1, 200_000, 7, 50_000]
    indices = rng.integers(0, 64, sum(lengths))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    with Engine(spread_plan(spec, 4, host_rows=(0, 17)), [rows], nr_tasklets=16) as engine:
        out, _ = engine.run(indices, offsets, None, pooling)
    expected = np.zeros_like(out)
    for b in range(len(lengths)):
        s = (
            rows[indices[offsets[b] : offsets[b + 1]]].astype(np.int64).sum(axis=0)
        )  # < 2^31 * 2^18: int64 is exact here
        n = lengths[b] if pooling == PoolingMode.MEAN and lengths[b] else 1
        expected[b] = (s.astype(np.float64) * 0.5 / n).astype(np.float32)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("pooling", [PoolingMode.SUM, PoolingMode.MEAN])
def test_int8_weighted_extremes_are_exact(pooling):
    """-128 x Q16(-32768) = 2^38 per term, 200k terms per bag over DPUs, tasklets and the host cache."""
    spec = TableSpec("i8", 64, 4, row_format=RowFormat.INT8, scale=0.25)
    rows = extreme_table(RowFormat.INT8, 64)
    rng = np.random.default_rng(2)
    lengths = [200_000, 3, 0, 60_000]
    indices = rng.integers(0, 64, sum(lengths))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    psw = np.where(rng.random(indices.size) < 0.9, np.float32(-32768.0), np.float32(32767.99609375)).astype(np.float32)
    with Engine(spread_plan(spec, 4, host_rows=(0, 9)), [rows], nr_tasklets=16) as engine:
        out, _ = engine.run(indices, offsets, psw, pooling)
    q = np.rint(psw.astype(np.float64) * 65536).astype(np.int64)
    expected = np.zeros_like(out)
    for b in range(len(lengths)):
        sl = slice(offsets[b], offsets[b + 1])
        s = (rows[indices[sl]].astype(np.int64) * q[sl, None]).sum(axis=0)  # |s| <= 2^38 * 2^18: exact in int64
        n = lengths[b] if pooling == PoolingMode.MEAN and lengths[b] else 1
        expected[b] = (s.astype(np.float64) * (0.25 / 65536) / n).astype(np.float32)
    assert np.array_equal(out, expected)


def test_sums_at_the_int32_boundary_are_exact_on_both_sides():
    """The host sums a table in int32 only when every bag's bound fits int32; one past it, in int64.

    Two tables in one weighted batch: int32 rows at +-16 weighted by 1.0 (bound 2^4 x 2^16
    per lookup: 2047 lookups fit int32, 2048 reach 2^31) and int8 rows at -128 weighted by
    -1.0 (bound 2^23 per lookup: 255 fit, 256 give +2^31). Each batch below puts one table on each side of its bound,
    over DPUs, tasklets and the host cache: a sum taken in the wrong width would wrap.
    """
    wide = TableSpec("wide", 16, 4, row_format=RowFormat.INT32, scale=1.0)
    rows32 = np.zeros((16, 4), np.int32)
    rows32[:, 0], rows32[:, 1], rows32[:, 2] = 16, -16, np.where(np.arange(16) % 2, 16, 7)
    byte = TableSpec("byte", 16, 4, row_format=RowFormat.INT8, scale=1.0)
    rows8 = np.zeros((16, 4), np.int8)
    rows8[:, 0], rows8[:, 1], rows8[:, 2] = -128, 127, np.where(np.arange(16) % 2, -128, 3)
    shards = [Shard(t, d, 0, 4, range(d * 4, d * 4 + 4)) for t in range(2) for d in range(4)]
    plan = Plan([wide, byte], Topology(4), shards, host_rows={0: np.array([5]), 1: np.array([2, 9])})
    plan.validate()
    rng = np.random.default_rng(3)
    with Engine(plan, [rows32, rows8], nr_tasklets=3) as engine:
        for n32, n8 in [(2047, 256), (2048, 255), (2048, 256), (2047, 255)]:
            i32, i8 = rng.integers(0, 16, n32), rng.integers(0, 16, n8)
            indices = np.concatenate([i32, i8]).astype(np.int64)
            offsets = np.array([0, n32, n32 + n8], np.int64)
            psw = np.concatenate([np.ones(n32), -np.ones(n8)]).astype(np.float32)
            out, stats = engine.run(indices, offsets, psw)
            assert stats.host_cache_hits > 0
            expected32 = exact(rows32, i32, np.array([0, n32]), psw[:n32], 1.0, PoolingMode.SUM)
            expected8 = exact(rows8, i8, np.array([0, n8]), psw[n32:], 1.0, PoolingMode.SUM)
            assert np.array_equal(out[0], np.concatenate([expected32[0], expected8[0]])), (n32, n8)
            assert out[0, 0] == np.float32(16 * n32) and out[0, 4] == np.float32(128 * n8)


def test_weights_outside_q16_are_refused_before_routing():
    spec = TableSpec("i8", 8, 4, row_format=RowFormat.INT8, scale=1.0)
    with Engine(spread_plan(spec), [extreme_table(RowFormat.INT8)], nr_tasklets=4) as engine:
        # -32768 is the most negative Q16 weight, 32768 is one past the largest.
        out, _ = engine.run(np.array([0, 2]), np.array([0, 1, 2]), np.array([-32768.0, 32767.99609375], np.float32))
        assert out[0, 0] == np.float32(-128 * -32768.0)
        with pytest.raises(
            EngineError, match=r"table 'i8' \(t=0\), sample 1: per_sample_weights\[1\] = 32768 is outside the Q16 range"
        ):
            engine.run(np.array([0, 2]), np.array([0, 1, 2]), np.array([1.0, 32768.0], np.float32))
        with pytest.raises(EngineError, match=r"per_sample_weights\[0\] = nan"):
            engine.run(np.array([0, 2]), np.array([0, 1, 2]), np.array([np.nan, 1.0], np.float32))
        out2, _ = engine.run(np.array([0, 2]), np.array([0, 1, 2]), np.array([-32768.0, 32767.99609375], np.float32))
        assert np.array_equal(out, out2)


@pytest.mark.skipif(not LONG, reason="2^25 lookups (about 1 GB); set UPDLRM_LONG_TESTS=1")
def test_int8_weighted_at_the_int64_boundary():
    """int8: the bound is reached at 2^25 lookups of -128 x Q16(-32768) = 2^38 each.

    Such a bag is refused by the bound before anything else. Just under the bound it runs
    in one launch: its 2^22 lookups per DPU are within a launch's cap of 2^23 per DPU,
    checked on each DPU's exact count, and fit the MRAM; its sums are exact.
    """
    spec = TableSpec("i8", 64, 4, row_format=RowFormat.INT8, scale=1.0)
    rows = extreme_table(RowFormat.INT8, 64)
    n = 1 << 25
    indices = np.arange(n, dtype=np.int64) % 64
    psw = np.full(n, -32768.0, np.float32)
    offsets = np.array([0, n], np.int64)
    with Engine(spread_plan(spec, 8, host_rows=(3,)), [rows], nr_tasklets=16) as engine:
        with pytest.raises(
            AccumulatorOverflowError, match=r"table 'i8' \(t=0\), sample 0: its int8 sum could exceed int64"
        ):
            engine.run(indices, offsets, psw)  # sum of |q16| = 2^56 > (2^63-1) // 128
        last = (1 << 31) - (1 << 8)
        psw[-1] = q16_weight(last)  # 2^56 - 256: within the bound
        out, stats = engine.run(indices, offsets, psw)
        assert stats.nr_launches == 1
        q16_sum = (n - 1) * -(1 << 31) + last
        for c, q in ((0, -128), (1, 127)):
            assert out[0, c] == np.float32(float(q * q16_sum) / 65536.0)
        m = 1 << 21  # 2^18 lookups per DPU
        out, _ = engine.run(indices[:m], np.array([0, m]), psw[:m])
        assert out[0, 0] == np.float32(float(-128 * -(1 << 31) * m) / 65536.0)


@pytest.mark.skipif(not LONG, reason="2^23 lookups on one DPU; set UPDLRM_LONG_TESTS=1")
def test_int8_unweighted_int32_partial_at_its_limit():
    """Unweighted int8 partials are int32: 2^23 lookups of -128 on one DPU and launch give -2^30 exactly."""
    spec = TableSpec("i8", 8, 4, row_format=RowFormat.INT8, scale=1.0)
    rows = extreme_table(RowFormat.INT8)
    plan = Plan([spec], Topology(1), [Shard(0, 0, 0, 4, range(8))])
    n = 1 << 23
    with Engine(plan, [rows], nr_tasklets=1) as engine:
        out, stats = engine.run(np.zeros(n, np.int64), np.array([0, n]))
    assert stats.nr_launches == 1 and out[0, 0] == np.float32(-(1 << 30)) and out[0, 1] == np.float32(127 << 23)


@pytest.mark.parametrize("nr_tasklets", [1, 16])
def test_int8_int16_partials_at_their_limit_and_past_it(nr_tasklets):
    """Bags of <= 255 lookups sum int8 rows in int16 partials (32,640 = 255 x 128 fits); one longer bag
    of a table makes its DPUs' partials int32 for that batch, and both stay exact at the extremes; the
    next short batch is back to int16 (the DPUs' flags are set again whenever they change)."""
    spec = TableSpec("i8", 8, 4, row_format=RowFormat.INT8, scale=1.0)
    short = TableSpec("s8", 8, 4, row_format=RowFormat.INT8, scale=1.0)
    rows = extreme_table(RowFormat.INT8)
    # Table i8 on DPU 0, table s8 on DPUs 0 and 1: DPU 0's flag follows i8's longest bag.
    plan = Plan(
        [spec, short],
        Topology(2),
        [Shard(0, 0, 0, 4, range(8)), Shard(1, 0, 0, 4, range(4)), Shard(1, 1, 0, 4, range(4, 8))],
    )
    with Engine(plan, [rows, rows], nr_tasklets=nr_tasklets) as engine:
        limit = abi.MAX_LOOKUPS_PER_INT16_PARTIAL
        for n, int16_dpu0 in ((limit, True), (300, False), (300, False), (limit, True)):
            idx = np.concatenate([np.zeros(n, np.int64), np.array([1, 2, 5], np.int64)])
            off = np.array([0, n, n + 3])
            out, stats = engine.run(idx, off)
            assert out[0, :2].tolist() == [-128 * n, 127 * n]
            assert out[0, 4:6].tolist() == [-128 * 3, 127 * 3]
            assert work_mismatch(derive_work(plan, idx, off, nr_tasklets=nr_tasklets), stats.work()) == []
            if nr_tasklets == 1:
                # DPU 0: a partial of each table, 8 bytes in int16 or 16 in int32; DPU 1: one of s8.
                sizes = [
                    abi.partial_bytes(abi.FORMAT_INT8, abi.batch_flags(False, i16), 4) for i16 in (int16_dpu0, True)
                ]
                partials = stats.work().output_bytes - abi.STATUS_BYTES
                assert partials.tolist() == [2 * sizes[0], sizes[1]]


_ENGINES: dict = {}


def _shared_engine(fmt):
    """One engine per format, kept for the module: hypothesis varies only the batches."""
    if fmt not in _ENGINES:
        spec = TableSpec(f"x{fmt.value}", 8, 4, row_format=fmt, scale=2.0**-30)
        rows = extreme_table(fmt)
        _ENGINES[fmt] = (Engine(spread_plan(spec), [rows], nr_tasklets=3), rows, spec)
    return _ENGINES[fmt]


@pytest.fixture(scope="module", autouse=True)
def _close_shared_engines():
    yield
    for engine, _, _ in _ENGINES.values():
        engine.close()
    _ENGINES.clear()


# Q16 weights mostly from the adversarial end (|w| near 32768, so a few int32 lookups reach
# the bound) and tiny ones that move a bag's sum of |Q16| by one unit across it.
_WEIGHTS = st.one_of(
    st.sampled_from([-32768.0, 32767.99609375, -32767.99609375, 32767.0]),
    st.sampled_from([1 / 65536, -1 / 65536, 255 / 65536, 0.0]),
    st.floats(-32768.0, 32767.99609375, width=32),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from([RowFormat.INT32, RowFormat.INT8]),
    bags=st.lists(st.lists(st.tuples(st.integers(0, 7), _WEIGHTS), min_size=1, max_size=5), min_size=1, max_size=3),
    weighted=st.booleans(),
    mean=st.booleans(),
)
def test_exact_or_refused_exactly_at_the_bound(fmt, bags, weighted, mean):
    """Either the exact value or AccumulatorOverflowError, and the error exactly when the bound exceeds int64."""
    engine, rows, spec = _shared_engine(fmt)
    pooling = PoolingMode.MEAN if mean else PoolingMode.SUM
    indices = np.array([r for bag in bags for r, _ in bag], np.int64)
    offsets = np.concatenate(([0], np.cumsum([len(bag) for bag in bags]))).astype(np.int64)
    psw = np.array([w for bag in bags for _, w in bag], np.float32) if weighted else None
    peak = int(np.abs(rows.astype(np.int64)).max())
    over = []
    for b in range(len(bags)):
        lo, hi = offsets[b], offsets[b + 1]
        total = int(np.abs(np.rint(psw[lo:hi].astype(np.float64) * 65536)).sum()) if weighted else int(hi - lo)
        over.append(peak * total > INT64_MAX)
    event("refused" if any(over) else "exact")
    if any(over):
        first = over.index(True)
        with pytest.raises(
            AccumulatorOverflowError, match=rf"table '{spec.name}' \(t=0\), sample {first}: its {fmt.value} sum"
        ):
            engine.run(indices, offsets, psw, pooling)
    else:
        out, _ = engine.run(indices, offsets, psw, pooling)
        assert np.array_equal(out, exact(rows, indices, offsets, psw, spec.scale, pooling))
