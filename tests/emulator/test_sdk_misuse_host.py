"""SDK conformance, host side: each misuse of the host API (Python and C) returns the SDK's ``dpu_error_t``.

Sources and the emulator's contract: sdk_misuse_common.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from sdk_misuse_common import (
    FAULTS_TASKLETS,
    HEAP_SYMBOL,
    MRAM_SIZE,
    NR_DPUS,
    SCENARIO,
    SDK_ERROR_TEXT,
    _code,
    _emulator,
    _finished,
    _prepare,
    _u32,
    sdk_harness,
)

# --------------------------------------------------------------------------
# Host-side misuse through the Python API.
# --------------------------------------------------------------------------


def test_launch_without_a_program_python(faults_binary):
    """dpu_launch before dpu_load -> DPU_ERR_NO_PROGRAM_LOADED (the 2025 SDK
    error "no program has been loaded in the dpu set"; the SDK returns it from
    every call that needs the program; for dpu_launch itself the SDK source we
    read does not check, so this is the emulator's contract)."""
    emulator = _emulator()
    with emulator.DpuSet(NR_DPUS) as dpus:
        with pytest.raises(emulator.DpuError) as raised:
            dpus.launch()
        assert _code(raised.value) == "DPU_ERR_NO_PROGRAM_LOADED", repr(raised.value)
        dpus.load(faults_binary)
        _prepare(dpus, SCENARIO["NONE"])
        dpus.launch()
        assert (_finished(dpus) == FAULTS_TASKLETS).all()


@pytest.mark.parametrize(
    "length, offset",
    [(12, 0), (4, 0), (8, 4), (16, 12)],
    ids=["length_12", "length_4", "offset_4", "offset_12"],
)
def test_mram_transfer_not_multiple_of_8_python(faults_binary, length, offset):
    """Host<->MRAM transfers need offset and length multiples of 8 ->
    DPU_ERR_INVALID_MRAM_ACCESS (verify_mram_access_offset_and_size)."""
    emulator = _emulator()
    with emulator.DpuSet(2) as dpus:
        dpus.load(faults_binary)
        with pytest.raises(emulator.DpuError) as raised:
            dpus.copy_to(HEAP_SYMBOL, np.zeros(length, dtype=np.uint8), offset=offset)
        assert _code(raised.value) == "DPU_ERR_INVALID_MRAM_ACCESS", repr(raised.value)
        with pytest.raises(emulator.DpuError) as raised:
            dpus.copy_from(HEAP_SYMBOL, length, offset=offset, dpu=0)
        assert _code(raised.value) == "DPU_ERR_INVALID_MRAM_ACCESS", repr(raised.value)
        with pytest.raises(emulator.DpuError) as raised:
            dpus.push_to(HEAP_SYMBOL, [np.zeros(length, dtype=np.uint8)] * 2, offset=offset)
        assert _code(raised.value) == "DPU_ERR_INVALID_MRAM_ACCESS", repr(raised.value)


def test_unknown_symbol_python(faults_binary):
    """A symbol the program does not define -> DPU_ERR_UNKNOWN_SYMBOL."""
    emulator = _emulator()
    with emulator.DpuSet(2) as dpus:
        dpus.load(faults_binary)
        with pytest.raises(emulator.DpuError) as raised:
            dpus.copy_to("no_such_symbol", _u32(1))
        assert _code(raised.value) == "DPU_ERR_UNKNOWN_SYMBOL", repr(raised.value)
        with pytest.raises(emulator.DpuError) as raised:
            dpus.copy_from("no_such_symbol", 4, dpu=1)
        assert _code(raised.value) == "DPU_ERR_UNKNOWN_SYMBOL", repr(raised.value)


def test_transfer_beyond_a_symbol_python(faults_binary):
    """offset + length > symbol size -> DPU_ERR_INVALID_SYMBOL_ACCESS, for a
    WRAM variable (4-byte `scenario`, 4 KiB `wram_buffer`) and for the MRAM
    heap (size = rest of the 64 MiB)."""
    emulator = _emulator()
    with emulator.DpuSet(2) as dpus:
        dpus.load(faults_binary)
        for symbol, length, offset in [
            ("scenario", 8, 0),
            ("wram_buffer", 8, 4096),
            ("wram_buffer", 4100, 0),
            (HEAP_SYMBOL, 8, MRAM_SIZE),
        ]:
            with pytest.raises(emulator.DpuError) as raised:
                dpus.copy_to(symbol, np.zeros(length, dtype=np.uint8), offset=offset)
            assert _code(raised.value) == "DPU_ERR_INVALID_SYMBOL_ACCESS", (symbol, length, offset, raised.value)
        # in bounds, right up to the end: accepted
        dpus.copy_to("wram_buffer", np.arange(8, dtype=np.uint8), offset=4088)
        back = dpus.copy_from("wram_buffer", 8, offset=4088, dpu=1)
        assert back.tolist() == list(range(8))


def test_wram_transfer_not_multiple_of_4_python(faults_binary):
    """WRAM is word-addressed by the host: offset/length not multiples of 4
    -> DPU_ERR_INVALID_WRAM_ACCESS (CHECK_SYMBOL in the SDK's dpu.c)."""
    emulator = _emulator()
    with emulator.DpuSet(2) as dpus:
        dpus.load(faults_binary)
        for length, offset in [(6, 0), (4, 2), (3, 0)]:
            with pytest.raises(emulator.DpuError) as raised:
                dpus.copy_to("wram_buffer", np.zeros(length, dtype=np.uint8), offset=offset)
            assert _code(raised.value) == "DPU_ERR_INVALID_WRAM_ACCESS", (length, offset, raised.value)


def test_failed_transfer_changes_nothing_python(faults_binary):
    """Bad input gets an error before any device state changes: a rejected
    broadcast leaves the DPU memory as it was."""
    emulator = _emulator()
    with emulator.DpuSet(2) as dpus:
        dpus.load(faults_binary)
        pattern = np.arange(16, dtype=np.uint8)
        dpus.copy_to(HEAP_SYMBOL, pattern)
        with pytest.raises(emulator.DpuError):
            dpus.copy_to(HEAP_SYMBOL, np.full(12, 0xFF, dtype=np.uint8))
        assert (dpus.copy_from(HEAP_SYMBOL, 16) == pattern).all()


# --------------------------------------------------------------------------
# Host-side misuse through the C API: the dpu_error_t of the call is the point.
# --------------------------------------------------------------------------

C_API_MISUSE = {
    "unknown_symbol_copy_to": "DPU_ERR_UNKNOWN_SYMBOL",
    "unknown_symbol_push_xfer": "DPU_ERR_UNKNOWN_SYMBOL",
    "unknown_symbol_copy_from": "DPU_ERR_UNKNOWN_SYMBOL",
    "mram_push_length_12": "DPU_ERR_INVALID_MRAM_ACCESS",
    "mram_push_offset_4": "DPU_ERR_INVALID_MRAM_ACCESS",
    "mram_pull_length_4": "DPU_ERR_INVALID_MRAM_ACCESS",
    "mram_copy_to_length_12": "DPU_ERR_INVALID_MRAM_ACCESS",
    "mram_copy_from_offset_12": "DPU_ERR_INVALID_MRAM_ACCESS",
    "mram_broadcast_length_20": "DPU_ERR_INVALID_MRAM_ACCESS",
    "mram_beyond_64mib": "DPU_ERR_INVALID_SYMBOL_ACCESS",
    "wram_beyond_symbol": "DPU_ERR_INVALID_SYMBOL_ACCESS",
    "wram_offset_beyond_symbol": "DPU_ERR_INVALID_SYMBOL_ACCESS",
    "wram_length_6": "DPU_ERR_INVALID_WRAM_ACCESS",
    "wram_offset_2": "DPU_ERR_INVALID_WRAM_ACCESS",
    "copy_from_whole_set": "DPU_ERR_INVALID_DPU_SET",
    "copy_before_load": "DPU_ERR_NO_PROGRAM_LOADED",
    "launch_before_load": "DPU_ERR_NO_PROGRAM_LOADED",
    "load_missing_file": "DPU_ERR_ELF_NO_SUCH_FILE",
    "alloc_too_many_dpus": "DPU_ERR_ALLOCATION",
}


def _run_c_misuse(misuse_host, binary, scenario: str, nr_dpus: int = 2, *extra):
    result = sdk_harness.run_host(misuse_host, binary, scenario, nr_dpus, *extra)
    assert result.returncode == 0, sdk_harness.describe(result)
    results = re.findall(r"^RESULT (\S+) \| (.*)$", result.stdout, re.MULTILINE)
    assert results, sdk_harness.describe(result)
    return results, result


@pytest.mark.parametrize("scenario", sorted(C_API_MISUSE))
def test_c_api_misuse_returns_the_sdk_error(misuse_host, faults_binary, scenario):
    """The C call returns the same dpu_error_t as the SDK (see module docstring
    for the SDK source of each check; launch_before_load: the emulator's
    contract, 2025 SDK error name)."""
    results, run = _run_c_misuse(misuse_host, faults_binary, scenario)
    name, _ = results[0]
    assert name == C_API_MISUSE[scenario], sdk_harness.describe(run)


def test_loading_a_non_elf_file_c_api(misuse_host, tmp_path):
    """dpu_load of a file that is not an ELF -> DPU_ERR_ELF_INVALID_FILE
    (dpu_elf_open: elf_begin/elf_rawfile fail)."""
    not_elf = tmp_path / "not_a_program"
    not_elf.write_text("this is not an ELF file\n" * 10)
    results, run = _run_c_misuse(misuse_host, not_elf, "load_not_an_elf")
    assert results[0][0] == "DPU_ERR_ELF_INVALID_FILE", sdk_harness.describe(run)


def test_dpu_error_to_string_matches_the_sdk(misuse_host, faults_binary):
    """dpu_error_to_string gives the SDK's texts, so logs and DPU_ASSERT
    messages read the same as on the SDK."""
    mismatches = []
    for scenario, expected_name in sorted(C_API_MISUSE.items()):
        results, _ = _run_c_misuse(misuse_host, faults_binary, scenario)
        name, text = results[0]
        if name == expected_name and text != SDK_ERROR_TEXT[name]:
            mismatches.append((name, text, SDK_ERROR_TEXT[name]))
    assert not mismatches, mismatches


def test_push_xfer_without_prepare_is_a_no_op(misuse_host, faults_binary):
    """dpu_push_xfer with no prepared buffer: the SDK's transfer matrix skips
    DPUs whose buffer is NULL ("if (buffer == NULL) continue;" in
    dpu_copy_to_address_matrix), so the call succeeds (DPU_OK) and writes
    nothing. Not an error in the SDK, hence not one in the emulator."""
    results, run = _run_c_misuse(misuse_host, faults_binary, "push_without_prepare")
    assert results[0][0] == "DPU_OK", sdk_harness.describe(run)
    assert "MODIFIED" not in run.stdout, sdk_harness.describe(run)


def test_symbol_access_on_a_set_with_different_programs(builder, misuse_host, faults_binary):
    """Two programs in one set (rank 0: faults.c, rank 1: wram_hog.c):
    dpu_copy_to on the whole set -> DPU_ERR_DIFFERENT_DPU_PROGRAMS
    (dpu_get_common_program in the SDK); launching the mixed set is fine."""
    other = builder.dpu("misuse", ["wram_hog.c"], nr_tasklets=4)
    results, run = _run_c_misuse(misuse_host, faults_binary, "different_programs", 70, other)
    assert results[0][0] == "DPU_ERR_DIFFERENT_DPU_PROGRAMS", sdk_harness.describe(run)
    assert "LAUNCH DPU_OK" in run.stdout, sdk_harness.describe(run)


def test_push_xfer_no_reset_keeps_the_prepared_buffers(misuse_host, faults_binary):
    """DPU_XFER_NO_RESET leaves the prepared buffers registered, so the next
    push without dpu_prepare_xfer sends their current contents; after a
    DPU_XFER_DEFAULT push they are cleared and a further push sends nothing."""
    results, run = _run_c_misuse(misuse_host, faults_binary, "push_no_reset", 3)
    assert results[0][0] == "DPU_OK", sdk_harness.describe(run)
    held = re.findall(r"^DPU (\d+) holds (\d+)$", run.stdout, re.MULTILINE)
    assert held == [(str(d), str(2000 + 8 * d)) for d in range(3)], sdk_harness.describe(run)


def test_fault_then_reuse_c_api(misuse_host, faults_binary):
    """A DPU that halts makes dpu_launch(DPU_SYNCHRONOUS) return
    DPU_ERR_DPU_FAULT; dpu_status then says done and fault; the next launch of
    the same set succeeds with every tasklet of every DPU finishing."""
    results, run = _run_c_misuse(misuse_host, faults_binary, "fault_then_reuse", nr_dpus=3)
    assert results[0][0] == "DPU_ERR_DPU_FAULT", sdk_harness.describe(run)
    statuses = re.findall(r"^STATUS done=(\d) fault=(\d)$", run.stdout, re.MULTILINE)
    assert statuses == [("1", "1"), ("1", "0")], sdk_harness.describe(run)
    finished = re.findall(r"^FINISHED (\d+) (\d+)$", run.stdout, re.MULTILINE)
    assert finished == [(str(d), str(FAULTS_TASKLETS)) for d in range(3)], sdk_harness.describe(run)


def test_symbol_table_matches_the_sdk_loader(builder, faults_binary):
    """dpu_get_symbol: the heap symbol spans to the end of the 64 MiB MRAM and
    carries the 0x08000000 MRAM bit; the last MRAM word is reachable, one past
    it is DPU_ERR_INVALID_SYMBOL_ACCESS; initialised __host/__mram data is
    (re)loaded by dpu_load, the MRAM heap is left alone (symbols_host.c)."""
    host = builder.host("misuse", ["symbols_host.c"])
    result = sdk_harness.run_host(host, faults_binary, 2)
    assert result.returncode == 0, sdk_harness.describe(result)
    assert "SYMBOLS OK" in result.stdout
