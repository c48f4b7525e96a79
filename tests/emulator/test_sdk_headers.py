"""SDK conformance at build time: what the UPMEM SDK's DPU headers refuse to
compile, the emulator's refuse too, with the SDK's message; the valid
neighbour of each case builds.

Each ``sdk_programs/build_errors/dpu/<case>.c`` fails to build with
``-DREFUSED`` (its ``expect:`` line holds the SDK's message) and builds
without it. The checks (UPMEM SDK 2025.1 headers, share/upmem/include/syslib
and stdlib): ``SEMAPHORE_INIT``/``BARRIER_INIT`` assert
``(_counter < 128) && (_counter >= -127)`` (so an unsigned counter such as ``4u``
fails); ``mram_read``/``mram_write`` refuse a constant size of 0, above 2048 or
not a multiple of 8 (clang ``diagnose_if``); ``SEQREAD_CACHE_SIZE`` must be
32..1024, a power of two; ``STDOUT_BUFFER_INIT`` needs a multiple of 8 >= 8;
``perfcounter_get_both`` exists only on v1B DPUs; ``MUTEX_POOL_INIT``/``VMUTEX_INIT``
need a power-of-two mutex count (and whole bytes of virtual mutexes).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from updlrm.backends import detect_sdk
from updlrm.emulator import CompileError, compile_dpu_program

_spec = importlib.util.spec_from_file_location("sdk_harness", Path(__file__).with_name("sdk_harness.py"))
sdk_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sdk_harness)

CASE_DIR = sdk_harness.SDK_PROGRAMS / "build_errors" / "dpu"
CASES = sorted(p.stem for p in CASE_DIR.glob("*.c"))
_SDK = detect_sdk()


def _expected_message(case: str) -> str:
    return re.search(r"expect: (.+)", (CASE_DIR / f"{case}.c").read_text()).group(1).strip()


def test_every_sdk_check_has_a_case():
    assert len(CASES) >= 12, CASES


@pytest.mark.parametrize("case", CASES)
def test_sdk_build_time_check(tmp_path, case):
    source = CASE_DIR / f"{case}.c"
    with pytest.raises(CompileError) as raised:
        compile_dpu_program(source, tmp_path / "refused", nr_tasklets=16, defines=["REFUSED"])
    assert _expected_message(case) in str(raised.value), str(raised.value)[-2000:]
    assert compile_dpu_program(source, tmp_path / "accepted", nr_tasklets=16).exists()


@pytest.mark.sdk
@pytest.mark.parametrize("case", CASES)
def test_sdk_build_time_check_on_upmem_sdk(tmp_path, case):
    """The same files with the real SDK compiler (skipped without the SDK)."""
    reason = sdk_harness.sdk_skip_reason(_SDK)
    if reason is not None:
        pytest.skip(reason)
    source = CASE_DIR / f"{case}.c"
    refused = subprocess.run(
        [_SDK.compiler, "-DNR_TASKLETS=16", "-DREFUSED", "-O2", "-o", str(tmp_path / "r"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and _expected_message(case) in refused.stderr, refused.stderr
    accepted = subprocess.run(
        [_SDK.compiler, "-DNR_TASKLETS=16", "-O2", "-o", str(tmp_path / "a"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert accepted.returncode == 0, accepted.stderr


def test_emulator_only_headers_have_emulator_names():
    """No emulator-only header sits under an SDK-looking name: every header is
    one the SDK ships or carries the updlrm_emu prefix."""
    from updlrm.emulator._build import DPU_INCLUDE_DIR, HOST_INCLUDE_DIR

    sdk_host = {"dpu.h", "dpu_error.h", "dpu_log.h", "dpu_macro_utils.h", "dpu_types.h", "dpu_management.h"}
    host = {p.name for p in HOST_INCLUDE_DIR.glob("*.h")}
    assert not {h for h in host - sdk_host if not h.startswith("updlrm_emu")}, host
    sdk_dpu = {
        "alloc.h",
        "assert.h",
        "atomic_bit.h",
        "attributes.h",
        "barrier.h",
        "buddy_alloc.h",
        "defs.h",
        "dpu_characteristics.h",
        "handshake.h",
        "mram.h",
        "mram_unaligned.h",
        "mutex.h",
        "mutex_pool.h",
        "perfcounter.h",
        "sem.h",
        "seqread.h",
        "stdio.h",
        "vmutex.h",
    }
    assert {p.name for p in DPU_INCLUDE_DIR.glob("*.h")} <= sdk_dpu
