"""The model against published UPMEM figures (table: published_points.json, sources per point)."""

import json
import pathlib

import pytest

from updlrm import perfmodel as pm
from updlrm import whatif

TABLE = json.loads((pathlib.Path(__file__).parent / "published_points.json").read_text())


@pytest.mark.parametrize("point", TABLE["points"], ids=[p["id"] for p in TABLE["points"]])
def test_published_point_within_tolerance(point):
    profile = pm.get_profile(TABLE["profile"])
    modeled = whatif.predict(profile, point["quantity"], **point["params"])
    error = abs(modeled / point["value"] - 1.0)
    assert error <= TABLE["tolerance"], (
        f"{point['id']}: model {modeled:.4g} vs published {point['value']:.4g} ({point['source']})"
    )


def test_every_point_names_its_source_and_role():
    for point in TABLE["points"]:
        assert point["source"].strip() and point["verified"] in ("corpus", "paper-text")
        assert point["role"] in ("calibration", "validation")


def test_every_profile_field_has_a_source():
    for profile in pm.PROFILES.values():
        for name, _, source in profile.describe():
            assert source.strip(), f"{profile.name}.{name} has no source"


def test_mram_curve_shape_matches_prim_latency_model():
    # PrIM Sec. 3.2.1: latency = alpha + beta * size, so bandwidth rises with size towards f / beta.
    profile = pm.get_profile(TABLE["profile"])
    sizes = [8 << k for k in range(9)]
    for op, alpha in (("read", 77.0), ("write", 61.0)):
        for size in sizes:
            expected = size * 350e6 / (alpha + 0.5 * size)
            assert pm.mram_bandwidth(profile, size, 1, op) == pytest.approx(expected, rel=1e-12)


def test_copy_dma_saturates_at_two_tasklets():
    # PrIM Sec. 3.2.2 (STREAM COPY-DMA): with a little loop work per iteration,
    # a second tasklet hides it and more tasklets add nothing.
    profile = pm.get_profile(TABLE["profile"])
    one, two, sixteen = (pm.mram_bandwidth(profile, 1024, n, "copy", loop_instructions=4) for n in (1, 2, 16))
    assert one < two and two == pytest.approx(sixteen)
