"""Host<->DPU transfer model against real-hardware PrIM application runs.

Data: upimulator_hw_points.json, "transfers" (uPIMulator artifact input.xlsx,
one point per sheet row, with the SDK calls each PrIM timer covers).  The
'upmem-sdk-default-pool' profile's four transfer constants are calibrated on
the 11 points marked "calibration" (RED CPU->DPU and VA DPU->CPU at 1 and 64
DPUs); the other 173 points -- six more applications, 4 and 16 DPUs, serial
pulls -- are held out.  Errors are model/measured - 1.

How much accuracy the data can support: the same operation (one 2-16 MB push
to one DPU) runs at 0.33 to 0.70 GB/s across the eight applications, and
CPU->DPU bandwidth at 4 and 16 DPUs falls by up to 3x as the per-DPU size grows
(host-cache state of freshly written input), so single points scatter by
+-30% around any curve.  The bounds below are on group medians (over
applications and sizes) and on the mean, with the measured value in a comment.
"""

import json
import math
import pathlib
from collections import defaultdict

import numpy as np
import pytest

from updlrm import perfmodel as pm

DATA = json.loads((pathlib.Path(__file__).parent / "upimulator_hw_points.json").read_text())
SDK = pm.PROFILES["upmem-sdk-default-pool"]
PRIM = pm.PROFILES["upmem-350mhz-2556"]

# Held-out group medians, (direction, mode of the bulk call, DPUs) -> bound.
# Measured with the profile as committed in the trailing comment.  The misses
# at 16 DPUs are the curve's shape: a saturating curve through 1 and 64 DPUs
# that fits 4 DPUs is too fast at 16 (the measured 4->16 DPU gain is 1.6-1.8x,
# the curve's 2.2x); the power law errs the other way (+57%/+41% at 4 DPUs).
VALIDATION_BOUNDS = {
    ("from_dpu", "parallel", 1): 0.10,  # +3.8% (SCAN-SSA/RSS)
    ("from_dpu", "parallel", 4): 0.15,  # +10.5%
    ("from_dpu", "parallel", 16): 0.25,  # -21.2% (known miss, see above)
    ("from_dpu", "parallel", 64): 0.10,  # +4.1%
    ("from_dpu", "serial", 1): 0.05,  # -1.4% (SEL/UNI: one dpu_copy_from per DPU)
    ("from_dpu", "serial", 4): 0.10,  # +8.4%
    ("from_dpu", "serial", 16): 0.12,  # +9.5%
    ("from_dpu", "serial", 64): 0.20,  # -18.0% (64 serial copies of 32-128 KB run at 86 MB/s, not 109)
    ("to_dpu", "parallel", 1): 0.15,  # +12.7% (7 apps; per app -31% .. +47%)
    ("to_dpu", "parallel", 4): 0.05,  # -0.2%
    ("to_dpu", "parallel", 16): 0.30,  # -28.4% (known miss, see above)
    ("to_dpu", "parallel", 64): 0.12,  # -10.2%
}
MEAN_POINT_ERROR_BOUND = 0.23  # 21.3% over the 173 held-out points (power curve: 31.7%, PrIM constants: 32.6%)
MEAN_APP_GROUP_ERROR_BOUND = 0.16  # 15.3% over 48 (app, direction, DPUs) medians (power curve: 23.1%)


def bulk_mode(point):
    return "serial" if any(c["mode"] == "serial" for c in point["calls"]) else "parallel"


def relative_error(profile, point):
    modeled = pm.transfer_calls_time(point["calls"], profile, point["nr_dpus"], point["direction"])
    return modeled * 1e3 / point["value"] - 1.0


def points(role):
    return [p for p in DATA["transfers"] if p["role"] == role]


def group_medians(profile, role, key):
    groups = defaultdict(list)
    for p in points(role):
        groups[key(p)].append(relative_error(profile, p))
    return {k: float(np.median(v)) for k, v in groups.items()}


def by_kind(p):
    return (p["direction"], bulk_mode(p), p["nr_dpus"])


def by_app(p):
    return (p["benchmark"], p["direction"], p["nr_dpus"])


@pytest.mark.parametrize("app,direction", [("RED", "to_dpu"), ("VA", "from_dpu")])
@pytest.mark.parametrize("nr_dpus", [1, 64])
def test_profile_constants_are_the_calibration_medians(app, direction, nr_dpus):
    # Net bandwidth: bulk bytes over the time left after every call's fixed cost,
    # median over the artifact's sizes, rounded to 3 significant digits.
    net = []
    for p in points("calibration"):
        if (p["benchmark"], p["direction"], p["nr_dpus"]) == (app, direction, nr_dpus):
            calls = sum(c["count"] for c in p["calls"])
            bulk = max(c["bytes_per_dpu"] for c in p["calls"])
            moved = p["nr_dpus"] * sum(
                c["count"] * c["bytes_per_dpu"] for c in p["calls"] if c["bytes_per_dpu"] == bulk
            )
            net.append(moved / (p["value"] * 1e-3 - calls * SDK.xfer_fixed_overhead_s))
    assert net
    assert pm.rank_bandwidth(SDK, nr_dpus, direction) == pytest.approx(float(np.median(net)), rel=0.01)


def test_calibration_points_are_reproduced():
    medians = group_medians(SDK, "calibration", by_app)
    assert len(medians) == 4
    for key, error in medians.items():
        assert abs(error) < 0.02, f"{key}: {error:+.1%}"


def test_held_out_group_medians_within_stated_bounds():
    medians = group_medians(SDK, "validation", by_kind)
    assert set(medians) == set(VALIDATION_BOUNDS)
    for key, error in medians.items():
        assert abs(error) <= VALIDATION_BOUNDS[key], f"{key}: model {error:+.1%} (bound {VALIDATION_BOUNDS[key]:.0%})"


def test_held_out_mean_errors_within_stated_bounds():
    held_out = [abs(relative_error(SDK, p)) for p in points("validation")]
    assert len(held_out) == 173
    assert np.mean(held_out) <= MEAN_POINT_ERROR_BOUND
    app_groups = [abs(e) for e in group_medians(SDK, "validation", by_app).values()]
    assert len(app_groups) == 48 and np.mean(app_groups) <= MEAN_APP_GROUP_ERROR_BOUND


def test_saturating_curve_beats_the_power_law_out_of_sample():
    # The reason the profile uses the saturating curve: same four constants,
    # a third less held-out error.
    power = SDK.with_values("curve comparison", xfer_curve="power")
    saturating = np.mean([abs(relative_error(SDK, p)) for p in points("validation")])
    power_law = np.mean([abs(relative_error(power, p)) for p in points("validation")])
    assert SDK.xfer_curve == "saturating" and saturating < 0.75 * power_law, (saturating, power_law)


def test_calibrated_profile_beats_prim_microbenchmark_constants_out_of_sample():
    # PrIM's transfer figures come from a different allocation setup
    # (nrThreadPerPool=8): on these application runs they miss by a third.
    sdk = np.mean([abs(e) for e in group_medians(SDK, "validation", by_app).values()])
    prim = np.mean([abs(e) for e in group_medians(PRIM, "validation", by_app).values()])
    assert sdk < 0.6 * prim, (sdk, prim)


def test_serial_pulls_cost_one_call_and_one_single_dpu_transfer_per_dpu():
    sel = [p for p in points("validation") if p["benchmark"] == "SEL" and p["direction"] == "from_dpu"]
    assert sel and all(bulk_mode(p) == "serial" for p in sel)
    p = max(sel, key=lambda q: q["nr_dpus"])
    serial = next(c for c in p["calls"] if c["mode"] == "serial")
    expected = pm.transfer_time(np.full(p["nr_dpus"], 64.0), SDK, "from_dpu") + p["nr_dpus"] * (
        SDK.xfer_fixed_overhead_s + serial["bytes_per_dpu"] / SDK.xfer_from_dpu_single_bytes_per_s
    )
    assert pm.transfer_calls_time(p["calls"], SDK, p["nr_dpus"], "from_dpu") == pytest.approx(expected, rel=1e-12)


def test_both_curves_pass_through_both_ends_and_grow():
    for curve in pm.XFER_CURVES:
        profile = SDK.with_values("test", xfer_curve=curve)
        for direction in ("to_dpu", "from_dpu"):
            d = np.arange(1, 65)
            bandwidth = pm.rank_bandwidth(profile, d, direction)
            single, full = (
                (profile.xfer_to_dpu_single_bytes_per_s, profile.xfer_to_dpu_rank_bytes_per_s)
                if direction == "to_dpu"
                else (profile.xfer_from_dpu_single_bytes_per_s, profile.xfer_from_dpu_rank_bytes_per_s)
            )
            assert bandwidth[0] == pytest.approx(single) and bandwidth[-1] == pytest.approx(full)
            assert np.all(np.diff(bandwidth) > 0)
            if curve == "power":
                assert bandwidth[15] == pytest.approx(single * 16 ** (math.log(full / single) / math.log(64)))
            else:
                k = (64 * single / full - 1) / 63
                assert bandwidth[15] == pytest.approx(16 * single / (1 + 15 * k))
    assert pm.rank_bandwidth(SDK, 0) == 0.0


def test_transfer_calls_time_rejects_bad_calls():
    with pytest.raises(ValueError, match="count"):
        pm.transfer_calls_time([{"mode": "parallel", "bytes_per_dpu": 8, "count": -1}], SDK, 4)
    with pytest.raises(ValueError, match="mode"):
        pm.transfer_calls_time([{"mode": "scatter", "bytes_per_dpu": 8}], SDK, 4)
    with pytest.raises(ValueError, match="nr_dpus"):
        pm.transfer_calls_time([], SDK, 0)
    assert pm.transfer_calls_time([], SDK, 3) == 0.0


def test_xfer_curve_is_validated_and_default_profile_unchanged():
    with pytest.raises(ValueError, match="xfer_curve"):
        PRIM.with_values("test", xfer_curve="linear")
    assert PRIM.xfer_curve == "saturating"
