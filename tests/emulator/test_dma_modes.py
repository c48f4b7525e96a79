"""The project's own DPU code keeps every SDK DMA rule.

The embedding-bag kernel runs under ``UPDLRM_EMU_DMA=strict`` (every DMA the
SDK forbids faults) and under the default mode without a single relaxed-DMA
warning, and its results match torch's ``embedding_bag``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("mode", ["strict", "default"])
def test_embedding_bag_kernel_keeps_every_dma_rule(monkeypatch, capfd, mode):
    import updlrm

    monkeypatch.setenv("UPDLRM_EMU_DMA", mode)
    rng = np.random.default_rng(3)
    rows, dim = 500, 24
    indices = rng.integers(0, rows, size=(64, 7))
    bag = updlrm.EmbeddingBag(rows, dim, mode="sum", backend="emulator", nr_dpus=3)
    try:
        out = np.asarray(bag(indices))
        weight = torch.as_tensor(np.asarray(bag.weight))
        expected = torch.nn.functional.embedding_bag(torch.as_tensor(indices), weight, mode="sum").numpy()
    finally:
        bag.close()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert "updlrm emulator: warning" not in capfd.readouterr().err


# -- a program that relies on the DPU's address decoding -------------------------

import importlib.util  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

from updlrm.backends import detect_sdk  # noqa: E402

_spec = importlib.util.spec_from_file_location("sdk_harness", Path(__file__).with_name("sdk_harness.py"))
sdk_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sdk_harness)
DECODE_SOURCE = sdk_harness.SDK_PROGRAMS / "dma_decode" / "dpu" / "decode.c"
_SDK = detect_sdk()


def _line(text: str) -> int:
    return next(i for i, line in enumerate(DECODE_SOURCE.read_text().splitlines(), 1) if text in line)


@pytest.fixture(scope="module")
def decode_builds(tmp_path_factory):
    builder = sdk_harness.ProgramBuilder(tmp_path_factory.mktemp("dma_decode"))
    return builder.dpu("dma_decode", nr_tasklets=11), builder.host("dma_decode")


def _run(decode_builds, mode: str | None, nr_dpus: int = 3):
    env = dict(os.environ)
    env.pop("UPDLRM_EMU_DMA", None)
    if mode is not None:
        env["UPDLRM_EMU_DMA"] = mode
    dpu, host = decode_builds
    return sdk_harness.run_host(host, dpu, nr_dpus, 11, 5, env=env)


def test_hardware_idioms_run_by_default_with_one_warning_per_site(decode_builds):
    """No environment variable: the TRNS/BFS idioms give the DPU's results, and
    stderr names each of the two sites once (three DPUs, two launches' worth of
    identical DMAs), with DPU, tasklet, rule and decode.c:line."""
    result = _run(decode_builds, None)
    assert result.returncode == 0 and "dma_decode: 3 DPUs x 11 tasklets OK" in result.stdout, sdk_harness.describe(
        result
    )
    warnings = [line for line in result.stderr.splitlines() if "updlrm emulator: warning" in line]
    sites = {re.search(r"decode\.c:(\d+)", w).group(1) for w in warnings}
    assert sites == {str(_line("mram_read(&bitmap[b], cache, 8);")), str(_line("heap_offset, copied"))}, result.stderr
    assert len(warnings) == 2, result.stderr
    assert any("not 8-byte aligned" in w for w in warnings) and any("modulo its 64 MiB bank" in w for w in warnings)
    assert all(re.search(r"DPU \d+ \(rank 0, dpu \d+\) tasklet \d+: mram_read", w) for w in warnings), warnings


def test_hardware_idioms_fault_in_strict_mode(decode_builds):
    result = _run(decode_builds, "strict")
    assert result.returncode != 0, sdk_harness.describe(result)
    assert "UPDLRM_EMU_DMA=strict" in result.stderr and "decode.c:" in result.stderr, result.stderr


def test_hardware_mode_is_silent(decode_builds):
    result = _run(decode_builds, "hardware")
    assert result.returncode == 0 and "warning" not in result.stderr, sdk_harness.describe(result)


@pytest.mark.sdk
def test_hardware_idioms_on_the_sdk_simulator(tmp_path):
    """The same program on the real SDK's functional simulator (skipped without the SDK)."""
    reason = sdk_harness.sdk_skip_reason(_SDK)
    if reason is not None:
        pytest.skip(reason)
    builder = sdk_harness.SdkProgramBuilder(tmp_path, _SDK)
    result = builder.run(builder.host("dma_decode"), builder.dpu("dma_decode", nr_tasklets=11), 3, 11, 5)
    assert result.returncode == 0 and "dma_decode: 3 DPUs x 11 tasklets OK" in result.stdout, sdk_harness.describe(
        result
    )


# -- the decoding against a model, on adversarial addresses ---------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MRAM_BASE, MRAM_SIZE = 0x08000000, 64 << 20
_MISUSE = sdk_harness.SDK_PROGRAMS / "misuse"
_SCENARIO = {n: int(v) for n, v in re.findall(r"SCENARIO_(\w+)\s*=\s*(\d+)", (_MISUSE / "scenarios.h").read_text())}


@pytest.fixture(scope="module")
def faults_binary(tmp_path_factory):
    builder = sdk_harness.ProgramBuilder(tmp_path_factory.mktemp("dma_model"))
    return builder.dpu("misuse", ["faults.c"], nr_tasklets=2)


def _u32(value: int) -> np.ndarray:
    return np.array([value], dtype=np.uint32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.sampled_from([0, 4, 8, 12, 16, 64, 1000, 2048, 2056]),
    mram_offset=st.integers(0, 8192),
    wrap=st.integers(0, 2),
    wram_offset=st.integers(0, 2048),
    write=st.booleans(),
    strict=st.booleans(),
)
def test_dma_decoding_matches_the_dpu_model(
    faults_binary, monkeypatch, size, mram_offset, wrap, wram_offset, write, strict
):
    """faults.c does one mram_read/mram_write at DPU_MRAM_HEAP_POINTER +
    mram_offset (+ wrap x 64 MiB) and wram_buffer + wram_offset. Model: sizes
    outside the SDK rule fault in every mode; otherwise the DPU uses the
    addresses with the low 3 bits dropped, MRAM modulo 64 MiB; strict mode
    faults instead of decoding. The bytes moved are checked against the model."""
    from updlrm.emulator import DpuError, DpuSet

    monkeypatch.setenv("UPDLRM_EMU_DMA", "strict" if strict else "hardware")
    size_ok = 8 <= size <= 2048 and size % 8 == 0
    relaxed = mram_offset % 8 or wram_offset % 8 or wrap
    expect_fault = not size_ok or (strict and relaxed)  # wram_offset + size stays inside wram_buffer
    with DpuSet(1) as dpus:
        dpus.load(faults_binary)
        heap_start = dpus.symbol("__sys_used_mram_end")[0]
        mram_pattern = np.random.default_rng(size + mram_offset).integers(0, 256, 16384, dtype=np.uint8)
        wram_pattern = np.arange(4096, dtype=np.uint32).astype(np.uint8) ^ 0x5A
        dpus.copy_to("__sys_used_mram_end", mram_pattern)
        dpus.copy_to("wram_buffer", wram_pattern)
        for name, value in [
            ("finished_tasklets", 0),
            ("faulting_tasklet", 0),
            ("dma_bytes", size),
            ("mram_offset", mram_offset + wrap * MRAM_SIZE),
            ("wram_offset", wram_offset),
            ("scenario", _SCENARIO["MRAM_WRITE" if write else "MRAM_READ"]),
        ]:
            dpus.copy_to(name, _u32(value))
        if expect_fault:
            with pytest.raises(DpuError) as raised:
                dpus.launch()
            assert raised.value.code_name == "DPU_ERR_DPU_FAULT" and "faults.c:" in str(raised.value)
            return
        dpus.launch()
        decoded = (((heap_start + mram_offset + wrap * MRAM_SIZE) & ~7) % MRAM_SIZE) + MRAM_BASE - heap_start
        wram = wram_offset & ~7
        mram_after = dpus.copy_from("__sys_used_mram_end", 16384, dpu=0)
        wram_after = dpus.copy_from("wram_buffer", 4096, dpu=0)
        if write:
            expected = mram_pattern.copy()
            expected[decoded : decoded + size] = wram_pattern[wram : wram + size]
            assert (mram_after == expected).all() and (wram_after == wram_pattern).all()
        else:
            expected = wram_pattern.copy()
            expected[wram : wram + size] = mram_pattern[decoded : decoded + size]
            assert (wram_after == expected).all() and (mram_after == mram_pattern).all()
