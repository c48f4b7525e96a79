"""Properties of the performance model, and its kernel bound against a plain-Python reference."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm import perfmodel as pm
from updlrm import whatif

PRIM = pm.get_profile("upmem-350mhz-2556")


def reference_kernel_cycles(p, lookups, row_bytes, index_bytes, output_bytes, reduce_elems, fmt, weighted, tasklets):
    """One DPU, written out loop by loop (no numpy), from the rules in the module docstring."""
    if lookups == 0 and index_bytes == 0 and output_bytes == 0:
        return 0.0
    dma = 0.0
    dmas = 0
    for _ in range(int(lookups)):
        remaining = math.ceil(row_bytes / 8) * 8
        while remaining > 0:
            piece = min(remaining, 2048)
            dma += p.dma_read_alpha_cycles + p.dma_read_beta_cycles_per_byte * piece
            dmas += 1
            remaining -= piece
    for total, alpha, beta in (
        (index_bytes, p.dma_read_alpha_cycles, p.dma_read_beta_cycles_per_byte),
        (output_bytes, p.dma_write_alpha_cycles, p.dma_write_beta_cycles_per_byte),
    ):
        blocks = math.ceil(total / 2048)
        dma += blocks * alpha + beta * math.ceil(total / 8) * 8
        dmas += blocks
    per_elem = {
        ("fp32", False): p.cycles_fp32_add,
        ("fp32", True): p.cycles_fp32_add + p.cycles_fp32_mul,
        ("int32", False): p.cycles_int32_add,
        ("int32", True): p.cycles_int32_add + p.cycles_int32_mul,
        ("int8", False): p.cycles_int32_add,
        ("int8", True): p.cycles_int8_widening_mac,
    }[(fmt, weighted)]
    issue = lookups * p.instructions_per_lookup + dmas * p.instructions_per_dma + reduce_elems * per_elem
    return max(dma, issue, (dma + 11 * issue) / tasklets)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 60),
            st.sampled_from([8, 12, 64, 100, 2048, 2056, 5000]),
            st.integers(0, 9000),
            st.integers(0, 5000),
            st.integers(0, 4000),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["fp32", "int32", "int8"]),
    st.booleans(),
    st.integers(1, 24),
)
def test_kernel_cycles_matches_reference(dpus, fmt, weighted, tasklets):
    cols = list(zip(*dpus))
    got = pm.kernel_cycles(
        PRIM,
        lookups=cols[0],
        row_bytes=cols[1],
        index_bytes=cols[2],
        output_bytes=cols[3],
        reduce_elems=cols[4],
        row_format=fmt,
        weighted=weighted,
        nr_tasklets=tasklets,
    )
    want = [reference_kernel_cycles(PRIM, *d, fmt, weighted, tasklets) for d in dpus]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_fewer_than_eleven_tasklets_leave_the_pipeline_idle():
    compute_bound = dict(
        lookups=[1000], row_bytes=[32], index_bytes=[4000], output_bytes=[64], reduce_elems=[8000], row_format="fp32"
    )
    cycles = {n: float(pm.kernel_cycles(PRIM, nr_tasklets=n, **compute_bound)[0]) for n in range(1, 25)}
    for n in range(1, 11):
        assert cycles[n] > cycles[n + 1]
    # Past 11 tasklets only the DMA waits still hide behind other tasklets: small gains, never losses.
    assert cycles[11] >= cycles[16] >= cycles[24] > 0.95 * cycles[11]
    assert cycles[1] == pytest.approx(11 * cycles[11], rel=0.1)
    throughput = [pm.arithmetic_throughput(PRIM, "int32_add", n) for n in range(1, 25)]
    assert throughput[0] == pytest.approx(throughput[10] / 11)
    assert max(throughput) == pytest.approx(throughput[10])


def test_mram_bandwidth_monotone_and_below_peak():
    peak = PRIM.dpu_frequency_hz / PRIM.dma_read_beta_cycles_per_byte
    for op in ("read", "write"):
        previous = 0.0
        for size in range(8, 2049, 8):
            bw = pm.mram_bandwidth(PRIM, size, 16, op)
            assert previous < bw < peak
            previous = bw
    for size in (8, 64, 512, 2048):
        values = [pm.mram_bandwidth(PRIM, size, n, "read", loop_instructions=6) for n in range(1, 25)]
        assert all(a <= b + 1e-6 for a, b in zip(values, values[1:]))


def test_straggler_decides_the_kernel():
    work = pm.BatchWork.uniform(nr_dpus=128, lookups=100, row_bytes=128, index_bytes=800, output_bytes=1024)
    base = pm.model_batch(work, PRIM)
    assert base.kernel_s == pytest.approx(base.per_dpu_kernel_s.max())
    work.lookups[77] *= 4
    work.reduce_elems[77] *= 4
    slow = pm.model_batch(work, PRIM)
    assert slow.kernel_s > base.kernel_s and int(np.argmax(slow.per_dpu_kernel_s)) == 77
    work.lookups[3] /= 2
    work.reduce_elems[3] /= 2
    assert pm.model_batch(work, PRIM).kernel_s == pytest.approx(slow.kernel_s)


def test_parallel_transfer_pads_to_the_largest_buffer_of_each_rank():
    full = np.full(128, 1 << 20)
    lopsided = np.full(128, 1 << 20)
    lopsided[1:64] = 8
    assert pm.transfer_time(full, PRIM) == pm.transfer_time(lopsided, PRIM)
    # One big buffer costs a whole rank's worth; two in different ranks run side by side.
    one = np.full(128, 8.0)
    one[0] = 1 << 22
    two_ranks = one.copy()
    two_ranks[64] = 1 << 22
    assert pm.transfer_time(two_ranks, PRIM) == pytest.approx(pm.transfer_time(one, PRIM))
    same_rank = one.copy()
    same_rank[1] = 1 << 22
    assert pm.transfer_time(same_rank, PRIM) == pytest.approx(pm.transfer_time(one, PRIM))


@pytest.mark.parametrize("direction", ["to_dpu", "from_dpu"])
def test_transfer_monotone_and_serial_slower(direction):
    times = [pm.transfer_time(np.full(64, s), PRIM, direction) for s in (8, 64, 4096, 1 << 20, 1 << 25)]
    assert all(a < b for a, b in zip(times, times[1:]))
    sizes = np.full(64, 1 << 20)
    assert pm.transfer_time(sizes, PRIM, direction, "serial") > pm.transfer_time(sizes, PRIM, direction, "parallel")
    bandwidths = pm.rank_bandwidth(PRIM, np.arange(1, 65), direction)
    assert np.all(np.diff(bandwidths) > 0) and np.all(np.diff(bandwidths, 2) < 0)


def test_broadcast_beats_parallel_for_the_same_bytes():
    sizes = np.full(64, 1 << 24)
    assert pm.transfer_time(sizes, PRIM, "to_dpu", "broadcast") < pm.transfer_time(sizes, PRIM, "to_dpu", "parallel")


def test_host_cap_limits_concurrent_ranks():
    capped = PRIM.with_values("test", xfer_host_cap_bytes_per_s=10e9)
    sizes = np.full(640, 1 << 20)
    assert pm.transfer_time(sizes, capped) > pm.transfer_time(sizes, PRIM)
    assert pm.transfer_time(sizes, capped) == pytest.approx(capped.xfer_fixed_overhead_s + sizes.sum() / 10e9)


@pytest.mark.parametrize("fmt", ["fp32", "int32", "int8"])
def test_more_dpus_never_slower_for_the_same_total_work(fmt):
    totals = []
    for nr_dpus in (64, 128, 256, 640, 1280, 2556):
        work = whatif.uniform_embedding_work(
            PRIM, batch_size=2048, nr_tables=8, pooling=32, dim=64, row_format=fmt, nr_dpus=nr_dpus
        )
        t = pm.model_batch(work, PRIM)
        totals.append((t.kernel_s, t.cpu_to_dpu_s))
    for (k1, x1), (k2, x2) in zip(totals, totals[1:]):
        assert k2 <= k1 * (1 + 1e-12) and x2 <= x1 * (1 + 1e-12)


def test_more_dpus_with_the_same_per_dpu_work_cost_the_same_without_a_host_cap():
    def phases(nr):
        work = pm.BatchWork.uniform(nr_dpus=nr, lookups=300, row_bytes=256, index_bytes=2400, output_bytes=8192)
        return pm.model_batch(work, PRIM)

    small, large = phases(64), phases(2556)
    assert large.kernel_s == pytest.approx(small.kernel_s)
    assert large.cpu_to_dpu_s == pytest.approx(small.cpu_to_dpu_s)
    assert large.dpu_to_cpu_s == pytest.approx(small.dpu_to_cpu_s)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 300),
    st.floats(0, 5000),
    st.sampled_from([8, 64, 256, 4096]),
    st.floats(0, 1e5),
    st.floats(0, 1e5),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.integers(1, 24),
    st.sampled_from(["fp32", "int32", "int8"]),
    st.booleans(),
)
def test_phase_times_are_consistent(nr, lookups, row, idx, out, merge, cache, tasklets, fmt, weighted):
    work = pm.BatchWork.uniform(
        nr_dpus=nr,
        lookups=lookups,
        row_bytes=row,
        index_bytes=idx,
        output_bytes=out,
        row_format=fmt,
        weighted=weighted,
        nr_tasklets=tasklets,
        host_merge_elems=merge,
        host_cache_lookups=cache,
        host_cache_row_bytes=row,
    )
    t = pm.model_batch(work, PRIM)
    values = [t.cpu_to_dpu_s, t.launch_s, t.kernel_s, t.dpu_to_cpu_s, t.host_merge_s, t.host_cache_s]
    assert all(math.isfinite(v) and v >= 0 for v in values)
    assert t.total_s >= max(values) - 1e-15
    assert t.total_s == pytest.approx(max(t.host_cache_s, t.dpu_s) + t.host_merge_s)
    assert len(t.per_dpu_kernel_s) == nr and t.energy_j is None


def test_energy_only_with_a_power_figure():
    work = pm.BatchWork.uniform(nr_dpus=64, lookups=10, row_bytes=64, index_bytes=80, output_bytes=64)
    assert pm.model_batch(work, PRIM).energy_j is None
    powered = PRIM.with_values("test figure", dpu_power_w=0.1)
    t = pm.model_batch(work, powered)
    assert t.energy_j == pytest.approx(0.1 * 64 * (t.launch_s + t.kernel_s))


def test_faster_clock_is_faster_kernel():
    work = pm.BatchWork.uniform(nr_dpus=64, lookups=500, row_bytes=128, index_bytes=4000, output_bytes=2048)
    slow = pm.model_batch(work, pm.get_profile("upmem-350mhz-2556"))
    fast = pm.model_batch(work, pm.get_profile("upmem-400mhz-2560"))
    assert fast.kernel_s == pytest.approx(slow.kernel_s * 350 / 400)


def test_work_from_counters_round_trip():
    rng = np.random.default_rng(3)
    lookups = rng.integers(0, 500, size=70).astype(float)
    index_bytes = lookups * 4 + 132
    per_tasklet_reads = np.zeros((70, 16))
    per_tasklet_reads[:, 0] = lookups + np.ceil(index_bytes / 2048)
    counters = {"mram_read_count": per_tasklet_reads, "mram_read_bytes": lookups * 96 + index_bytes}
    work = pm.work_from_counters(counters, index_bytes=index_bytes, output_bytes=4096, row_format="int32")
    np.testing.assert_allclose(work.lookups, lookups)
    np.testing.assert_allclose(work.row_bytes[lookups > 0], 96)
    np.testing.assert_allclose(work.reduce_elems, lookups * 24)
    with pytest.raises(KeyError):
        pm.work_from_counters({"mram_read_count": [1]}, index_bytes=[8], output_bytes=[8])


def test_crossover_helpers_bracket_the_win():
    profile = PRIM.with_values("test host", host_gather_bytes_per_s=2e9)
    shape = dict(nr_tables=8, pooling=64, dim=64, row_format="int32")
    b = whatif.crossover_batch_size(profile, **shape)
    assert b is not None and b > 1
    assert (
        whatif.speedup_over_cpu(profile, batch_size=b, **shape)
        > 1
        >= whatif.speedup_over_cpu(profile, batch_size=b - 1, **shape)
    )
    p = whatif.crossover_pooling(profile, batch_size=4096, nr_tables=8, dim=64, row_format="int32")
    assert (
        p is not None
        and whatif.speedup_over_cpu(profile, batch_size=4096, nr_tables=8, pooling=p, dim=64, row_format="int32") > 1
    )
    assert whatif.crossover_batch_size(PRIM, nr_tables=1, pooling=1, dim=4, max_batch_size=64) is None


def test_calibrate_measures_this_host():
    profile = pm.calibrate(table_bytes=4 << 20, repeats=1)
    assert profile.host_gather_bytes_per_s > 1e6 and profile.host_merge_bytes_per_s > 1e6
    assert "calibrate" in profile.source_of("host_merge_bytes_per_s")
    assert profile.dma_read_alpha_cycles == PRIM.dma_read_alpha_cycles


@pytest.mark.parametrize(
    "bad",
    [
        lambda: pm.BatchWork.uniform(nr_dpus=2, lookups=-1, row_bytes=8, index_bytes=8, output_bytes=8),
        lambda: pm.BatchWork.uniform(
            nr_dpus=2, lookups=1, row_bytes=8, index_bytes=8, output_bytes=8, row_format="bf16"
        ),
        lambda: pm.BatchWork.uniform(nr_dpus=2, lookups=1, row_bytes=8, index_bytes=8, output_bytes=8, nr_tasklets=0),
        lambda: pm.BatchWork(
            lookups=[1, 2], row_bytes=[8], index_bytes=[8, 8], output_bytes=[8, 8], reduce_elems=[1, 1]
        ),
        lambda: pm.BatchWork(lookups=[np.nan], row_bytes=[8], index_bytes=[8], output_bytes=[8], reduce_elems=[1]),
        lambda: pm.mram_bandwidth(PRIM, 4096, 1),
        lambda: pm.mram_bandwidth(PRIM, 64, 25),
        lambda: pm.transfer_time([8], PRIM, "from_dpu", "broadcast"),
        lambda: pm.transfer_time([8], PRIM, "sideways"),
        lambda: pm.transfer_time(np.ones(3000), PRIM),
        lambda: pm.get_profile("upmem-350mhz-2556", nr_dpus=0),
        lambda: pm.model_batch(
            pm.BatchWork.uniform(nr_dpus=65, lookups=1, row_bytes=8, index_bytes=8, output_bytes=8),
            pm.get_profile("upmem-350mhz-2556", nr_dpus=64),
        ),
        lambda: PRIM.with_values("x", dpu_frequency_hz=0.0),
    ],
)
def test_bad_input_is_rejected(bad):
    with pytest.raises((ValueError, KeyError)):
        bad()


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(KeyError, match="upmem-350mhz-2556"):
        pm.get_profile("nope")
