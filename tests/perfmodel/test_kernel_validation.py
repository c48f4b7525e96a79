"""DPU kernel model against real-hardware kernel times (uPIMulator artifact).

Data: upimulator_hw_points.json, "kernels".  The fixed launch cost
(``launch_overhead_s``) is calibrated on six one-launch PrIM applications
(role "calibration"); the two streaming kernels VA and RED, whose block
structure :func:`updlrm.perfmodel.streaming_kernel_time` describes, are held
out: 32 runs on 1-64 DPUs, 8 K-2 M elements per DPU, 16 tasklets (PrIM's
default; the artifact does not record it).

Known miss, stated rather than tuned away: at steady state (runs of 3 ms or
more) the model is 25-38% too fast on both kernels.  It is not one constant:
uPIMulator's own cycle-level simulation (same sheet, column H) is also 29%
too fast on VA (two reads and a write per block) but within 6% on RED (one
read, 64-bit adds), so the gap is not a plain DMA rate or clock error that
one profile constant could absorb.
"""

import json
import pathlib
from collections import defaultdict

import numpy as np
import pytest

from updlrm import perfmodel as pm

DATA = json.loads((pathlib.Path(__file__).parent / "upimulator_hw_points.json").read_text())
PROFILE = pm.PROFILES["upmem-350mhz-2556"]
STRUCTURE = ("elements_per_dpu", "element_bytes", "block_bytes", "reads_per_block", "writes_per_block", "nr_tasklets")
STEADY_MS = 3.0

# model/measured - 1 on the held-out kernels (measured value in the comment)
BOUNDS = {
    # app: (band of every point, band of steady-state points, bound on mean |error|)
    "VA": ((-0.60, 0.0), (-0.40, -0.28), 0.40),  # all -54%..-32%, steady -38%..-32%, mean 37.9%
    "RED": ((-0.35, 0.0), (-0.32, -0.20), 0.25),  # all -27%..-2%, steady -27%..-25%, mean 21.9%
}


def modeled_ms(point, profile=PROFILE):
    return pm.streaming_kernel_time(profile, **{k: point[k] for k in STRUCTURE}) * 1e3


def held_out(app):
    return [p for p in DATA["kernels"] if p["benchmark"] == app and p["role"] == "validation"]


def test_launch_overhead_is_the_median_intercept_of_the_calibration_apps():
    by_app = defaultdict(list)
    for p in DATA["kernels"]:
        if p["role"] == "calibration":
            by_app[p["benchmark"]].append((p["elements_per_dpu"], p["value"]))
    assert sorted(by_app) == sorted(DATA["launch_calibration_apps"])
    intercepts = []
    for runs in by_app.values():
        elements, ms = np.array(runs, dtype=float).T
        intercepts.append(np.polyfit(elements, ms, 1)[1])
    assert PROFILE.launch_overhead_s * 1e3 == pytest.approx(float(np.median(intercepts)), rel=0.01)
    assert all(0.1 < i < 0.3 for i in intercepts)  # one mechanism: every app pays 0.15-0.26 ms per launch


@pytest.mark.parametrize("app", sorted(BOUNDS))
def test_held_out_kernel_times_within_stated_bands(app):
    (low, high), (steady_low, steady_high), mean_bound = BOUNDS[app]
    errors, steady = [], []
    for p in held_out(app):
        error = modeled_ms(p) / p["value"] - 1.0
        errors.append(error)
        assert low <= error <= high, f"{p['id']}: {error:+.1%}"
        if p["value"] >= STEADY_MS:
            steady.append(error)
            assert steady_low <= error <= steady_high, f"{p['id']} (steady state): {error:+.1%}"
    assert len(errors) >= 14 and len(steady) >= 8
    assert np.mean(np.abs(errors)) <= mean_bound


def test_measured_launch_cost_beats_the_previous_estimate_out_of_sample():
    # The previous 40 us (smallest hw - sim gap of two apps) left small runs
    # far too fast; the calibrated launch cost cuts the held-out error.
    old = PROFILE.with_values("previous estimate", launch_overhead_s=40e-6)
    points = held_out("VA") + held_out("RED")
    new_error = np.mean([abs(modeled_ms(p) / p["value"] - 1) for p in points])
    old_error = np.mean([abs(modeled_ms(p, old) / p["value"] - 1) for p in points])
    assert new_error < old_error - 0.05, (new_error, old_error)


def test_the_steady_state_gap_is_not_one_constant():
    # Documents why no constant is tuned to the gap: the cycle-level simulator
    # misses VA like this model does but matches RED.
    def sim_error(app):
        return float(
            np.median([p["upimulator_sim_ms"] / p["value"] - 1 for p in held_out(app) if p["value"] >= STEADY_MS])
        )

    assert sim_error("VA") < -0.2 and abs(sim_error("RED")) < 0.1


def test_streaming_kernel_saturates_at_eleven_tasklets():
    # Revolver pipeline: a tasklet issues at most every 11 cycles, so a
    # DMA-bound stream speeds up linearly until 11 tasklets and not beyond
    # (PrIM Sec. 3.1, Fig. 4).
    va = dict(elements_per_dpu=1 << 20, element_bytes=4, reads_per_block=2, writes_per_block=1, launch=False)
    t = {n: pm.streaming_kernel_time(PROFILE, nr_tasklets=n, **va) for n in (1, 2, 4, 10, 11, 16, 24)}
    assert t[1] == pytest.approx(2 * t[2]) and t[2] == pytest.approx(2 * t[4])
    assert t[10] > t[11] == t[16] == t[24]
    dma_only = (1 << 20) * 4 / 1024 * (2 * pm.dma_cycles(PROFILE, 1024, "read") + pm.dma_cycles(PROFILE, 1024, "write"))
    assert t[16] * PROFILE.dpu_frequency_hz == pytest.approx(dma_only)


def test_streaming_kernel_handles_tails_and_idle_tasklets():
    red = dict(element_bytes=8, reads_per_block=1, launch=False)
    # 3 blocks cannot keep 16 tasklets busy: the same as 3 tasklets
    assert pm.streaming_kernel_time(PROFILE, elements_per_dpu=384, nr_tasklets=16, **red) == pm.streaming_kernel_time(
        PROFILE, elements_per_dpu=384, nr_tasklets=3, **red
    )
    # a partial last block costs less than a full one
    full = pm.streaming_kernel_time(PROFILE, elements_per_dpu=256, nr_tasklets=1, **red)
    tail = pm.streaming_kernel_time(PROFILE, elements_per_dpu=130, nr_tasklets=1, **red)
    assert tail < full
    assert pm.streaming_kernel_time(PROFILE, elements_per_dpu=0, **red) == 0.0
    with pytest.raises(ValueError, match="block_bytes"):
        pm.streaming_kernel_time(PROFILE, elements_per_dpu=8, element_bytes=4, block_bytes=4096)
    with pytest.raises(ValueError, match="nr_tasklets"):
        pm.streaming_kernel_time(PROFILE, elements_per_dpu=8, element_bytes=4, nr_tasklets=25)
