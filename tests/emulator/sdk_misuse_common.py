"""What the SDK-misuse tests share (test_sdk_misuse.py: DPU side, test_sdk_misuse_host.py: host side).

SDK conformance: every misuse the UPMEM SDK rejects is rejected the same way.

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
