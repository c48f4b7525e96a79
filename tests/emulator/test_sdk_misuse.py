"""SDK conformance, DPU side: each DPU misuse faults as on the SDK, naming the DPU and tasklet.

Sources and the emulator's contract: sdk_misuse_common.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sdk_misuse_common import (
    FAULTING_DPU,
    FAULTING_TASKLET,
    FAULTS_TASKLETS,
    HEAP_SYMBOL,
    MISUSE,
    MRAM_BASE,
    MRAM_SIZE,
    NR_DPUS,
    SCENARIO,
    _code,
    _emulator,
    _expect_fault,
    _finished,
    _prepare,
    _u32,
)

# --------------------------------------------------------------------------
# DPU-side misuse: MRAM DMA rules. Sizes outside 8..2048 / not a multiple of 8
# are undefined on the DPU (the SDK's mram.h rejects constant ones at build
# time and tells the compiler to assume the rule: __builtin_assume), so they
# fault in every mode. Unaligned addresses and MRAM addresses outside the
# 64 MiB window are what the DPU's DMA engine decodes (low 3 bits dropped,
# MRAM modulo the bank): by default the emulator does the same and warns once
# per site; UPDLRM_EMU_DMA=strict makes them faults naming the source line.
# --------------------------------------------------------------------------

DMA_SIZE_MISUSE = {
    "read_size_0": dict(scenario="MRAM_READ", dma_bytes=0),
    "read_size_4": dict(scenario="MRAM_READ", dma_bytes=4),
    "read_size_12": dict(scenario="MRAM_READ", dma_bytes=12),
    "read_size_2056": dict(scenario="MRAM_READ", dma_bytes=2056),
    "write_size_0": dict(scenario="MRAM_WRITE", dma_bytes=0),
    "write_size_4": dict(scenario="MRAM_WRITE", dma_bytes=4),
    "write_size_12": dict(scenario="MRAM_WRITE", dma_bytes=12),
    "write_size_2056": dict(scenario="MRAM_WRITE", dma_bytes=2056),
}

# case -> (parameters, the decoded-address text of the warning)
DMA_RELAXED = {
    "read_unaligned_mram_address": dict(scenario="MRAM_READ", dma_bytes=8, mram_offset=4),
    "write_unaligned_mram_address": dict(scenario="MRAM_WRITE", dma_bytes=8, mram_offset=4),
    "read_unaligned_wram_address": dict(scenario="MRAM_READ", dma_bytes=8, wram_offset=4),
    "write_unaligned_wram_address": dict(scenario="MRAM_WRITE", dma_bytes=8, wram_offset=4),
    "read_beyond_64mib": dict(scenario="MRAM_READ", dma_bytes=8, mram_offset=MRAM_SIZE),
    "write_beyond_64mib": dict(scenario="MRAM_WRITE", dma_bytes=2048, mram_offset=MRAM_SIZE),
}
DMA_MISUSE = {**DMA_SIZE_MISUSE, **DMA_RELAXED}
_RELAXED_TEXT = {
    "unaligned_mram": "MRAM address 0x{:x} is not 8-byte aligned; the DPU drops the low 3 bits",
    "unaligned_wram": "is not 8-byte aligned; the DPU drops the low 3 bits",
    "beyond_64mib": "is outside MRAM [0x8000000, 0xc000000); the DPU decodes it modulo its 64 MiB bank",
}
FAULTS_SOURCE = MISUSE / "dpu" / "faults.c"


def _faults_line(text: str) -> int:
    """Line of faults.c holding `text` (the DMA calls the warnings must name)."""
    return next(i for i, line in enumerate(FAULTS_SOURCE.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("case", sorted(DMA_SIZE_MISUSE))
def test_mram_dma_size_misuse_faults(faults_binary, case):
    """mram_read/mram_write sizes outside 8..2048 bytes or not a multiple of 8
    -> DPU_ERR_DPU_FAULT naming the source line, in the default mode too."""
    parameters = dict(DMA_SIZE_MISUSE[case])
    scenario = parameters.pop("scenario")
    error = _expect_fault(faults_binary, scenario, **parameters)
    call = "mram_read((" if scenario == "MRAM_READ" else "mram_write(wram"
    assert f"faults.c:{_faults_line(call)}" in str(error), error


@pytest.mark.parametrize("case", sorted(DMA_RELAXED))
def test_relaxed_dma_faults_in_strict_mode(faults_binary, monkeypatch, case):
    """UPDLRM_EMU_DMA=strict: what the DPU decodes is a DPU_ERR_DPU_FAULT that
    says what the DPU would have done and names the source line."""
    monkeypatch.setenv("UPDLRM_EMU_DMA", "strict")
    parameters = dict(DMA_RELAXED[case])
    scenario = parameters.pop("scenario")
    error = _expect_fault(faults_binary, scenario, **parameters)
    call = "mram_read((" if scenario == "MRAM_READ" else "mram_write(wram"
    assert "UPDLRM_EMU_DMA=strict" in str(error) and "the DPU" in str(error), error
    assert f"faults.c:{_faults_line(call)} (misbehave)" in str(error), error


@pytest.mark.parametrize("case", sorted(DMA_RELAXED))
def test_relaxed_dma_runs_with_one_warning_per_site(faults_binary, heap_bytes, capfd, monkeypatch, case):
    """Default mode: the DMA is decoded as the DPU does (it reads or writes the
    aligned word, MRAM modulo 64 MiB) and stderr gets exactly one warning for
    the site over two launches, naming DPU, tasklet, rule and faults.c:line."""
    monkeypatch.delenv("UPDLRM_EMU_DMA", raising=False)
    parameters = dict(DMA_RELAXED[case])
    scenario = parameters.pop("scenario")
    emulator = _emulator()
    heap_start = MRAM_BASE + MRAM_SIZE - heap_bytes
    with emulator.DpuSet(NR_DPUS) as dpus:
        dpus.load(faults_binary)
        pattern = np.arange(2048, dtype=np.uint8)
        dpus.copy_to(HEAP_SYMBOL, pattern)
        dpus.copy_to("wram_buffer", np.full(4096, 0xAB, dtype=np.uint8))
        _prepare(dpus, SCENARIO[scenario], **parameters)
        dpus.launch()
        dpus.launch()
        assert (_finished(dpus) == 2 * FAULTS_TASKLETS).all()
        size = parameters["dma_bytes"]
        if scenario == "MRAM_READ":  # the aligned MRAM word(s) land at the aligned WRAM address
            got = dpus.copy_from("wram_buffer", size, dpu=FAULTING_DPU)
            assert (got == pattern[:size]).all(), got[:16]
        else:  # the aligned WRAM word(s) land at the decoded MRAM address
            got = dpus.copy_from(HEAP_SYMBOL, size, dpu=FAULTING_DPU)
            assert (got == 0xAB).all(), got[:16]
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "updlrm emulator: warning" in line]
    assert len(warnings) == 1, err
    call = "mram_read((" if scenario == "MRAM_READ" else "mram_write(wram"
    key = next(k for k in _RELAXED_TEXT if k in case)
    text = _RELAXED_TEXT[key].format(heap_start + 4)
    assert f"DPU {FAULTING_DPU} (rank 0, dpu {FAULTING_DPU}) tasklet {FAULTING_TASKLET}" in warnings[0], err
    assert text in warnings[0] and f"faults.c:{_faults_line(call)} (misbehave)" in warnings[0], err


def test_unknown_dma_mode_is_refused(monkeypatch):
    """A mistyped UPDLRM_EMU_DMA fails dpu_alloc with a one-line reason."""
    monkeypatch.setenv("UPDLRM_EMU_DMA", "strcit")
    emulator = _emulator()
    with pytest.raises(emulator.DpuError) as raised:
        emulator.DpuSet(1)
    assert raised.value.code_name == "DPU_ERR_INVALID_PROFILE" and "strict" in str(raised.value)


@pytest.mark.parametrize("scenario", ["MRAM_READ", "MRAM_WRITE"])
def test_dma_straddling_the_end_of_mram_faults(faults_binary, heap_bytes, scenario):
    """A 16-byte DMA starting at the last MRAM word: the whole range must be
    inside MRAM ("Exceptions: DMA fault ... not only the starting address, but
    the whole range") -> DPU_ERR_DPU_FAULT."""
    _expect_fault(faults_binary, scenario, dma_bytes=16, mram_offset=heap_bytes - 8)


@pytest.mark.parametrize(
    "scenario, dma_bytes, offset_from_end",
    [("MRAM_READ", 8, 8), ("MRAM_WRITE", 2048, 2048), ("MRAM_READ", 2048, None)],
    ids=["read_last_word", "write_last_2048_bytes", "read_2048_at_heap_start"],
)
def test_valid_dma_at_the_limits_does_not_fault(faults_binary, heap_bytes, scenario, dma_bytes, offset_from_end):
    """Control for the DMA tests: legal extremes (8 and 2048 bytes, the last
    bytes of the 64 MiB MRAM) run without a fault."""
    emulator = _emulator()
    offset = 0 if offset_from_end is None else heap_bytes - offset_from_end
    with emulator.DpuSet(NR_DPUS) as dpus:
        dpus.load(faults_binary)
        _prepare(dpus, SCENARIO[scenario], dma_bytes=dma_bytes, mram_offset=offset)
        dpus.launch()
        assert (_finished(dpus) == FAULTS_TASKLETS).all()


# --------------------------------------------------------------------------
# DPU-side misuse: crashes and runtime faults.
# --------------------------------------------------------------------------


def test_null_dereference_faults(faults_binary):
    """Store through NULL. Hardware: WRAM address 0 exists (the SDK's crt0
    parks __sys_null_pointer there), so the store silently corrupts it and
    only dpugrind would tell. Emulator contract: the worker's SIGSEGV becomes
    DPU_ERR_DPU_FAULT naming DPU and tasklet, the worker is respawned and the
    set stays usable, which is what this checks."""
    _expect_fault(faults_binary, "NULL_DEREFERENCE")


def test_halt_faults(faults_binary):
    """halt() -> "fault 4 (Halt)" -> DPU_ERR_DPU_FAULT (SDK "Exceptions")."""
    _expect_fault(faults_binary, "HALT")


def test_failed_assert_faults(faults_binary):
    """assert(false) -> "fault 3 (Assert)" -> DPU_ERR_DPU_FAULT (SDK "Exceptions")."""
    _expect_fault(faults_binary, "ASSERT")


def test_mem_alloc_beyond_wram_faults(faults_binary):
    """mem_alloc(128 KiB) -> "fault 1 (Heap Full)" -> DPU_ERR_DPU_FAULT
    (SDK "Exceptions"; alloc.c faults instead of returning NULL)."""
    _expect_fault(faults_binary, "HEAP_FULL")


def test_division_by_zero_faults(faults_binary):
    """Integer division by zero -> "fault 2 (Division by Zero)" ->
    DPU_ERR_DPU_FAULT (SDK "Exceptions")."""
    _expect_fault(faults_binary, "DIVISION_BY_ZERO")


def test_stack_overflow_faults(faults_binary):
    """Unbounded recursion overflows the tasklet stack. Hardware: the stack
    runs into the neighbouring WRAM (memory fault once it leaves WRAM, silent
    corruption before); emulator contract: a fault naming DPU and tasklet,
    worker respawned, set usable."""
    _expect_fault(faults_binary, "STACK_OVERFLOW")


def test_barrier_with_a_missing_tasklet_is_a_deadlock_fault(faults_binary):
    """One tasklet returns without reaching the barrier the others wait on.
    Hardware: dpu_sync never returns. Emulator contract: every tasklet
    blocked with some unfinished = deadlock, reported as DPU_ERR_DPU_FAULT
    naming the DPU."""
    _expect_fault(faults_binary, "BARRIER_DEADLOCK", names_tasklet=False)


def test_semaphore_nobody_gives_is_a_deadlock_fault(faults_binary):
    """sem_take on a semaphore that is never given: same contract as the
    barrier deadlock."""
    _expect_fault(faults_binary, "SEMAPHORE_DEADLOCK", names_tasklet=False)


def test_halt_while_holding_a_mutex_leaves_it_free_for_the_next_boot(faults_binary):
    """A tasklet halts inside mutex_lock/unlock while the others queue on the
    same mutex. The SDK's crt0 releases every atomic bit (mutexes are atomic
    bits) at boot, so the next launch must not find the mutex taken
    (_expect_fault's clean relaunch locks it in every tasklet)."""
    _expect_fault(faults_binary, "HALT_HOLDING_MUTEX")


def test_mram_write_unaligned_with_unequal_alignment_faults(faults_binary):
    """mram_write_unaligned with WRAM and MRAM addresses unequal modulo 8 ->
    "fault 8 (Wrong Alignment)" -> DPU_ERR_DPU_FAULT (SDK "Exceptions" and
    "Unaligned MRAM Accesses")."""
    _expect_fault(faults_binary, "UNALIGNED_WRITE_MISMATCH")


def test_fault_is_attributed_to_the_last_of_24_tasklets(builder):
    """Attribution at the edge: tasklet 23 of 24 on the last DPU of the set."""
    emulator = _emulator()
    binary = builder.dpu("misuse", ["faults.c"], nr_tasklets=24)
    with emulator.DpuSet(NR_DPUS) as dpus:
        dpus.load(binary)
        for name in ("scenario", "dma_bytes", "mram_offset", "wram_offset", "finished_tasklets"):
            dpus.copy_to(name, _u32(0))
        dpus.copy_to("faulting_tasklet", _u32(23))
        dpus.copy_to("scenario", _u32(SCENARIO["ASSERT"]), dpu=NR_DPUS - 1)
        with pytest.raises(emulator.DpuError) as raised:
            dpus.launch()
        assert (_code(raised.value), raised.value.dpu, raised.value.tasklet) == ("DPU_ERR_DPU_FAULT", NR_DPUS - 1, 23)


def test_handshake_notify_nobody_waits_for_is_a_deadlock_fault(faults_binary):
    """handshake_notify suspends its caller until some tasklet waits for it
    (SDK handshake.h); if none ever does, the DPU never finishes. Same
    contract as the barrier deadlock."""
    _expect_fault(faults_binary, "HANDSHAKE_DEADLOCK", names_tasklet=False)


def test_faults_on_every_dpu_of_a_launch_are_all_survivable(faults_binary):
    """A halt on every DPU at once (each worker faults): the error names one
    of them, and the next launch is clean on all."""
    emulator = _emulator()
    with emulator.DpuSet(NR_DPUS) as dpus:
        dpus.load(faults_binary)
        _prepare(dpus, SCENARIO["NONE"])
        dpus.copy_to("scenario", _u32(SCENARIO["NULL_DEREFERENCE"]))
        with pytest.raises(emulator.DpuError) as raised:
            dpus.launch()
        assert _code(raised.value) == "DPU_ERR_DPU_FAULT"
        assert raised.value.dpu in range(NR_DPUS)
        _prepare(dpus, SCENARIO["NONE"])
        dpus.launch()
        assert (_finished(dpus) == FAULTS_TASKLETS).all()


# --------------------------------------------------------------------------
# Build/load-time rejection: tasklet count and WRAM capacity.
# --------------------------------------------------------------------------


def _build_or_load_rejected(tmp_path, source: Path, *, nr_tasklets: int, defines=()) -> str:
    """Build `source` and load it; return how it was rejected
    ("build: ..." or the DpuError code). Fails if it is accepted."""
    emulator = _emulator()
    try:
        binary = emulator.compile_dpu_program([source], tmp_path / "rejected", nr_tasklets=nr_tasklets, defines=defines)
    except Exception as error:  # the builder's own error type is not part of the interface
        return f"build: {error}"
    with emulator.DpuSet(1) as dpus:
        with pytest.raises(emulator.DpuError) as raised:
            dpus.load(binary)
            dpus.launch()
        return _code(raised.value)


def test_more_than_24_tasklets_is_rejected(tmp_path):
    """NR_TASKLETS=25: the SDK supports at most 24 tasklets (v1A; SDK docs
    "DPU chip characteristics") and 2025.1 adds DPU_ERR_TOO_MANY_TASKLETS for a
    program with more tasklets than hardware threads. Accepted outcomes: a
    build error naming NR_TASKLETS/tasklets, or load failing with
    DPU_ERR_TOO_MANY_TASKLETS."""
    outcome = _build_or_load_rejected(tmp_path, MISUSE / "dpu" / "faults.c", nr_tasklets=25)
    if outcome.startswith("build: "):
        assert "tasklet" in outcome.lower() or "24" in outcome, outcome
    else:
        assert outcome == "DPU_ERR_TOO_MANY_TASKLETS", outcome


def test_globals_larger_than_wram_are_rejected(tmp_path):
    """70,000 bytes of globals cannot fit the 64 KiB WRAM: the SDK's linker
    fails ("region ... wram overflowed"). The emulator must refuse to build or
    load it, and say WRAM."""
    outcome = _build_or_load_rejected(
        tmp_path, MISUSE / "dpu" / "wram_hog.c", nr_tasklets=1, defines=("WRAM_HOG_BYTES=70000",)
    )
    assert (outcome.startswith("build: ") and "wram" in outcome.lower()) or outcome.startswith("DPU_ERR_"), outcome


def test_globals_plus_24_stacks_beyond_wram_are_rejected(tmp_path):
    """60,000 bytes of globals fit alone but not with 24 tasklet stacks (the
    SDK reserves STACK_SIZE_DEFAULT per tasklet in WRAM at link time)."""
    outcome = _build_or_load_rejected(
        tmp_path, MISUSE / "dpu" / "wram_hog.c", nr_tasklets=24, defines=("WRAM_HOG_BYTES=60000",)
    )
    assert (outcome.startswith("build: ") and "wram" in outcome.lower()) or outcome.startswith("DPU_ERR_"), outcome


def test_smaller_stacks_make_room_for_globals(builder, tmp_path):
    """STACK_SIZE_DEFAULT given with -D (as SDK projects do, e.g.
    -DSTACK_SIZE_DEFAULT=256) shrinks every tasklet's stack reservation:
    56,000 bytes of globals with 24 tasklets are rejected with the default
    stacks but build and run with 256-byte stacks."""
    outcome = _build_or_load_rejected(
        tmp_path, MISUSE / "dpu" / "wram_hog.c", nr_tasklets=24, defines=("WRAM_HOG_BYTES=56000",)
    )
    assert (outcome.startswith("build: ") and "wram" in outcome.lower()) or outcome.startswith("DPU_ERR_"), outcome
    emulator = _emulator()
    binary = builder.dpu(
        "misuse", ["wram_hog.c"], nr_tasklets=24, defines=("WRAM_HOG_BYTES=56000", "STACK_SIZE_DEFAULT=256")
    )
    with emulator.DpuSet(2) as dpus:
        dpus.load(binary)
        dpus.launch()
        touched = dpus.copy_from("touched", 4).view(np.uint32)[:, 0]
        assert (touched == sum(i % 256 for i in range(0, 56000, 24))).all(), touched


def test_moderate_globals_fit(builder):
    """Control for the WRAM tests: 16,000 bytes of globals and 16 tasklets
    build, load and run, and every byte of the array is usable."""
    emulator = _emulator()
    binary = builder.dpu("misuse", ["wram_hog.c"], nr_tasklets=16, defines=("WRAM_HOG_BYTES=16000",))
    with emulator.DpuSet(2) as dpus:
        dpus.load(binary)
        dpus.launch()
        touched = dpus.copy_from("touched", 4).view(np.uint32)[:, 0]
        expected = sum(i % 256 for i in range(0, 16000, 16))  # tasklet 0's share, see wram_hog.c
        assert (touched == expected).all(), (touched, expected)


@pytest.mark.parametrize(
    "case",
    [
        "read_unaligned_mram_address",
        "write_unaligned_mram_address",
        "read_unaligned_wram_address",
        "write_unaligned_wram_address",
    ],
)
def test_hardware_dma_alignment_opt_in(faults_binary, monkeypatch, capfd, case):
    """UPDLRM_EMU_DMA=hardware: like the DPU's DMA engine, the low three
    address bits are dropped (PrIM's TRNS relies on it), without a warning;
    sizes are still checked."""
    monkeypatch.setenv("UPDLRM_EMU_DMA", "hardware")
    emulator = _emulator()
    parameters = dict(DMA_MISUSE[case])
    scenario = parameters.pop("scenario")
    with emulator.DpuSet(NR_DPUS) as dpus:
        dpus.load(faults_binary)
        _prepare(dpus, SCENARIO[scenario], **parameters)
        dpus.launch()
        assert (_finished(dpus) == FAULTS_TASKLETS).all()
    assert "warning" not in capfd.readouterr().err
    _expect_fault(faults_binary, "MRAM_READ", dma_bytes=12)
