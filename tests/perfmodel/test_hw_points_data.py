"""The real-hardware points (upimulator_hw_points.json) say what they claim to.

Each transfer point's SDK calls are recomputed from the call structure the
file documents (PrIM host code + the uPIMulator artifact's byte counts), so a
transcription slip in one row fails here, not silently in the validation.
"""

import json
import pathlib

import pytest

DATA = json.loads((pathlib.Path(__file__).parent / "upimulator_hw_points.json").read_text())

# (benchmark, direction) -> list of (mode, bytes_per_dpu(n, d), count); the
# prose version of each entry is DATA["call_structure"].
CALLS = {
    ("VA", "to_dpu"): [("parallel", lambda n, d: 12, 1), ("parallel", lambda n, d: n // d * 4, 2)],
    ("VA", "from_dpu"): [("parallel", lambda n, d: n // d * 4, 1)],
    ("RED", "to_dpu"): [("parallel", lambda n, d: 16, 1), ("parallel", lambda n, d: n // d * 8, 1)],
    ("SEL", "to_dpu"): [("parallel", lambda n, d: 8, 1), ("parallel", lambda n, d: n // d * 8, 1)],
    ("SEL", "from_dpu"): [("parallel", lambda n, d: 64, 1), ("serial", lambda n, d: (n // d) // 2 * 8, 1)],
    ("UNI", "to_dpu"): [("parallel", lambda n, d: 8, 1), ("parallel", lambda n, d: n // d * 8, 1)],
    ("UNI", "from_dpu"): [("parallel", lambda n, d: 384, 1), ("serial", lambda n, d: round((n // 2 + 1) / d) * 8, 1)],
    ("SCAN-SSA", "to_dpu"): [("parallel", lambda n, d: 16, 1), ("parallel", lambda n, d: n // d * 8, 1)],
    ("SCAN-SSA", "from_dpu"): [("parallel", lambda n, d: n // d * 8, 1)],
    ("SCAN-RSS", "to_dpu"): [("parallel", lambda n, d: 16, 1), ("parallel", lambda n, d: n // d * 8, 1)],
    ("SCAN-RSS", "from_dpu"): [("parallel", lambda n, d: n // d * 8, 1)],
    ("HST-S", "to_dpu"): [("parallel", lambda n, d: 16, 1), ("parallel", lambda n, d: n // d * 4, 1)],
    ("HST-L", "to_dpu"): [("parallel", lambda n, d: 16, 1), ("parallel", lambda n, d: n // d * 4, 1)],
}
CALIBRATION = {("RED", "to_dpu"), ("VA", "from_dpu")}


def test_source_is_named():
    source = DATA["source"]
    assert source["file"].endswith("input.xlsx") and len(source["commit"]) == 40 and source["sheet"]
    for point in DATA["transfers"] + DATA["kernels"]:
        assert point["source"].startswith("input.xlsx row ") and point["unit"] == "ms" and point["value"] > 0


@pytest.mark.parametrize("point", DATA["transfers"], ids=[p["id"] for p in DATA["transfers"]])
def test_transfer_point_follows_the_documented_calls(point):
    key = (point["benchmark"], point["direction"])
    assert key in CALLS and point["benchmark"] in DATA["call_structure"]
    n, d = point["data_prep_param"], point["nr_dpus"]
    expected = [{"mode": mode, "bytes_per_dpu": size(n, d), "count": count} for mode, size, count in CALLS[key]]
    assert point["calls"] == expected
    calibration = key in CALIBRATION and d in (1, 64)
    assert point["role"] == ("calibration" if calibration else "validation")
    assert point["quantity"] == "host_transfer_time" and d in (1, 4, 16, 64)


def test_kernel_points_follow_the_documented_kernels():
    launch_apps = set(DATA["launch_calibration_apps"])
    assert {p["benchmark"] for p in DATA["kernels"]} == {"VA", "RED"} | launch_apps
    for point in DATA["kernels"]:
        assert point["elements_per_dpu"] == point["data_prep_param"] // point["nr_dpus"]
        assert point["quantity"] == "kernel_time" and point["upimulator_sim_ms"] > 0
        if point["benchmark"] in launch_apps:
            assert point["role"] == "calibration"
        else:
            structure = DATA["kernel_structure"][point["benchmark"]]
            assert all(point[k] == v for k, v in structure.items())
            assert point["role"] == "validation"


def test_every_row_appears_once_per_column():
    seen = [(p["source"]) for p in DATA["transfers"] + DATA["kernels"]]
    assert len(seen) == len(set(seen))
