"""SDK conformance: every misuse the UPMEM SDK rejects is rejected the same way.

One test per misuse, each naming the SDK's ``dpu_error_t``. Sources for the
expected behaviour (read, not copied):

* SDK host library, ``dpu_error.h`` / ``dpu_error.c`` (2025.1 headers as shipped
  in the SDK tarball, e.g. github.com/peterysh/upmem_sdk include/dpu/): the
  error names and their ``dpu_error_to_string`` texts.
* SDK host library ``api/dpu_memory.c`` / ``dpu.c`` (BSD-licensed SDK sources,
  e.g. github.com/UBC-ECE-Sasha/upmem-sdk backends/api/src): the order of the
  checks in ``dpu_copy_to``/``dpu_push_xfer``: program loaded
  (DPU_ERR_NO_PROGRAM_LOADED), symbol known (DPU_ERR_UNKNOWN_SYMBOL),
  ``offset + length <= symbol.size`` (DPU_ERR_INVALID_SYMBOL_ACCESS), then per
  memory: WRAM address/length multiple of 4 (DPU_ERR_INVALID_WRAM_ACCESS), MRAM
  offset/length multiple of 8 and inside the 64 MiB
  (``verify_mram_access_offset_and_size`` -> DPU_ERR_INVALID_MRAM_ACCESS).
  The loader gives ``DPU_MRAM_HEAP_POINTER_NAME`` the size "rest of MRAM".
* SDK documentation, "Memory management" (MRAM DMA: 8..2048 bytes, multiple
  of 8, both addresses 8-aligned) and "Exceptions" (memory fault, DMA fault,
  runtime faults 1 Heap Full, 2 Division by Zero, 3 Assert, 4 Halt; "The Host
  API will only say that a DPU is in fault, and not the reason": every
  DPU-side misuse therefore surfaces as DPU_ERR_DPU_FAULT).

Where the emulator is deliberately stricter than hardware (DMA sizes the SDK
declares undefined; a hardware deadlock hangs dpu_sync instead of faulting),
the test says so: the emulator's documented contract is to turn those into
DPU_ERR_DPU_FAULT naming the DPU (and tasklet). DMA addresses the DPU decodes
(unaligned, outside the MRAM window) run as on the DPU with a warning per
site, and fault under UPDLRM_EMU_DMA=strict.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("sdk_harness", Path(__file__).with_name("sdk_harness.py"))
sdk_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sdk_harness)

MISUSE = sdk_harness.SDK_PROGRAMS / "misuse"
HEAP_SYMBOL = "__sys_used_mram_end"  # DPU_MRAM_HEAP_POINTER_NAME in the SDK's dpu_types.h
MRAM_BASE = 0x08000000  # MRAM_MASK in the SDK's dpu_memory.c
MRAM_SIZE = 64 << 20

NR_DPUS = 4
FAULTS_TASKLETS = 8
FAULTING_DPU = 2
FAULTING_TASKLET = 5

# dpu_error_to_string texts of the SDK (dpu_error.c).
SDK_ERROR_TEXT = {
    "DPU_OK": "success",
    "DPU_ERR_ALLOCATION": "dpu allocation error",
    "DPU_ERR_INVALID_DPU_SET": "invalid action for this dpu set",
    "DPU_ERR_INVALID_WRAM_ACCESS": "invalid wram access",
    "DPU_ERR_INVALID_MRAM_ACCESS": "invalid mram access",
    "DPU_ERR_INVALID_SYMBOL_ACCESS": "invalid memory symbol access",
    "DPU_ERR_NO_PROGRAM_LOADED": "no program has been loaded in the dpu set",
    "DPU_ERR_DPU_FAULT": "dpu is in fault",
    "DPU_ERR_ELF_INVALID_FILE": "invalid ELF file",
    "DPU_ERR_ELF_NO_SUCH_FILE": "no such ELF file",
    "DPU_ERR_UNKNOWN_SYMBOL": "undefined symbol",
}


def _scenarios() -> dict[str, int]:
    text = (MISUSE / "scenarios.h").read_text()
    return {name: int(value) for name, value in re.findall(r"SCENARIO_(\w+)\s*=\s*(\d+)", text)}


SCENARIO = _scenarios()


def _u32(value: int) -> np.ndarray:
    return np.array([value], dtype=np.uint32)


def _code(error: Exception) -> str:
    return getattr(error, "code_name", None) or str(error.args[0])


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    return sdk_harness.ProgramBuilder(tmp_path_factory.mktemp("sdk_misuse"))


@pytest.fixture(scope="module")
def faults_binary(builder):
    return builder.dpu("misuse", ["faults.c"], nr_tasklets=FAULTS_TASKLETS)


@pytest.fixture(scope="module")
def heap_bytes(faults_binary):
    """Bytes from DPU_MRAM_HEAP_POINTER to the end of MRAM in faults.c."""
    symbols = subprocess.run(["nm", "-P", str(faults_binary)], capture_output=True, text=True, check=True).stdout
    match = re.search(rf"^{HEAP_SYMBOL}\s+\w\s+([0-9a-fA-F]+)", symbols, re.MULTILINE)
    assert match, f"{HEAP_SYMBOL} not in the DPU binary's symbol table"
    address = int(match.group(1), 16)
    assert address & MRAM_BASE and address % 8 == 0, hex(address)
    return MRAM_BASE + MRAM_SIZE - address


@pytest.fixture(scope="module")
def misuse_host(builder):
    return builder.host("misuse", ["misuse_host.c"])


def _emulator():
    import updlrm.emulator as emulator

    return emulator


def _prepare(dpus, scenario: int, **parameters: int) -> None:
    for name in ("scenario", "dma_bytes", "mram_offset", "wram_offset", "finished_tasklets"):
        dpus.copy_to(name, _u32(0))
    dpus.copy_to("faulting_tasklet", _u32(FAULTING_TASKLET))
    for name, value in parameters.items():
        dpus.copy_to(name, _u32(value), dpu=FAULTING_DPU)
    dpus.copy_to("scenario", _u32(scenario), dpu=FAULTING_DPU)


def _finished(dpus) -> np.ndarray:
    return dpus.copy_from("finished_tasklets", 4).view(np.uint32)[:, 0]


def _expect_fault(faults_binary, scenario: str, *, names_tasklet: bool = True, **parameters: int):
    """Run `scenario` on DPU FAULTING_DPU / tasklet FAULTING_TASKLET; check the
    fault report, that the other DPUs finished, and that the set runs cleanly
    afterwards. Returns the DpuError."""
    emulator = _emulator()
    with emulator.DpuSet(NR_DPUS) as dpus:
        dpus.load(faults_binary)
        _prepare(dpus, SCENARIO[scenario], **parameters)
        with pytest.raises(emulator.DpuError) as raised:
            dpus.launch()
        error = raised.value
        assert _code(error) == "DPU_ERR_DPU_FAULT", repr(error)
        assert error.dpu == FAULTING_DPU, f"fault attributed to DPU {error.dpu}: {error!r}"
        if names_tasklet:
            assert error.tasklet == FAULTING_TASKLET, f"fault attributed to tasklet {error.tasklet}: {error!r}"
        finished = _finished(dpus)
        others = [d for d in range(NR_DPUS) if d != FAULTING_DPU]
        assert (finished[others] == FAULTS_TASKLETS).all(), f"healthy DPUs did not finish: {finished}"

        _prepare(dpus, SCENARIO["NONE"])
        dpus.launch()
        assert (_finished(dpus) == FAULTS_TASKLETS).all(), "the set is not usable after the fault"
    return error


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
