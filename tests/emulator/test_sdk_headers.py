"""SDK conformance at build time: what the UPMEM SDK's DPU headers refuse to
compile, the emulator's refuse too, with the SDK's message; the valid
neighbour of each case builds.

The checks (UPMEM SDK 2025.1 headers, share/upmem/include/syslib and stdlib):
``SEMAPHORE_INIT``/``BARRIER_INIT`` assert ``(_counter < 128) && (_counter >= -127)``
(so an unsigned counter such as ``4u`` fails); ``mram_read``/``mram_write`` refuse a
constant size of 0, above 2048 or not a multiple of 8 (clang ``diagnose_if``);
``SEQREAD_CACHE_SIZE`` must be 32..1024, a power of two; ``STDOUT_BUFFER_INIT``
needs a multiple of 8 >= 8; ``perfcounter_get_both`` exists only on v1B DPUs;
``MUTEX_POOL_INIT``/``VMUTEX_INIT`` need a power-of-two mutex count (and whole
bytes of virtual mutexes).
"""

from __future__ import annotations

import pytest

from updlrm.emulator import CompileError, compile_dpu_program

PRELUDE = """#include <stdint.h>
#include <defs.h>
#include <barrier.h>
#include <mram.h>
#include <mutex_pool.h>
#include <perfcounter.h>
#include <sem.h>
#include <vmutex.h>
#include <stdio.h>
"""

# case -> (refused snippet, SDK message, accepted neighbour)
CASES = {
    "semaphore_unsigned_counter": ("SEMAPHORE_INIT(s, 4u);", "semaphore counter must be encoded on a byte",
                                   "SEMAPHORE_INIT(s, 4);"),
    "semaphore_counter_128": ("SEMAPHORE_INIT(s, 128);", "semaphore counter must be encoded on a byte",
                              "SEMAPHORE_INIT(s, 127);"),
    "barrier_counter_200": ("BARRIER_INIT(b, 200);", "barrier counter must be encoded on a byte",
                            "BARRIER_INIT(b, NR_TASKLETS);"),
    "barrier_unsigned_counter": ("BARRIER_INIT(b, 16u);", "barrier counter must be encoded on a byte",
                                 "BARRIER_INIT(b, 16);"),
    "mram_read_size_12": ("void f(uint8_t *w) { mram_read(DPU_MRAM_HEAP_POINTER, w, 12); }",
                          "mram_read: nb_of_bytes must be a multiple of 8",
                          "void f(uint8_t *w) { mram_read(DPU_MRAM_HEAP_POINTER, w, 16); }"),
    "mram_read_size_0": ("void f(uint8_t *w) { mram_read(DPU_MRAM_HEAP_POINTER, w, 0); }",
                         "mram_read: nb_of_bytes must not be null",
                         "void f(uint8_t *w, unsigned n) { mram_read(DPU_MRAM_HEAP_POINTER, w, n); }"),
    "mram_write_size_4096": ("void f(uint8_t *w) { mram_write(w, DPU_MRAM_HEAP_POINTER, 2 * 2048); }",
                             "mram_write: nb_of_bytes must not be higher than 2048",
                             "void f(uint8_t *w) { mram_write(w, DPU_MRAM_HEAP_POINTER, sizeof(uint64_t) * 256); }"),
    "seqread_cache_size": ("#define SEQREAD_CACHE_SIZE 48\n#include <seqread.h>", "seqread error: invalid cache size defined",
                           "#define SEQREAD_CACHE_SIZE 512\n#include <seqread.h>"),
    "stdout_buffer_12": ("STDOUT_BUFFER_INIT(12);", "stdout buffer size must be a multiple of 8 and > 0",
                         "STDOUT_BUFFER_INIT(4096);"),
    "perfcounter_get_both": ("void f(void) { perfcounter_get_both(0); }",
                             "perfcounter_get_both is only available on v1B", "void f(void) { perfcounter_get(); }"),
    "mutex_pool_of_3": ("MUTEX_POOL_INIT(pool, 3);", "Number of hardware mutexes should be a power of 2",
                        "MUTEX_POOL_INIT(pool, 4);"),
    "vmutex_of_12": ("VMUTEX_INIT(vm, 12, 4);", "Number of virtual mutexes should be a multiple of 8",
                     "VMUTEX_INIT(vm, 16, 4);"),
}


def _build(tmp_path, snippet: str, name: str):
    source = tmp_path / f"{name}.c"
    source.write_text(PRELUDE + snippet + "\nint main(void) { return 0; }\n")
    return compile_dpu_program(source, tmp_path / name, nr_tasklets=16)


@pytest.mark.parametrize("case", sorted(CASES))
def test_sdk_build_time_check(tmp_path, case):
    refused, message, accepted = CASES[case]
    with pytest.raises(CompileError) as raised:
        _build(tmp_path, refused, "refused")
    assert message in str(raised.value), str(raised.value)[-2000:]
    assert _build(tmp_path, accepted, "accepted").exists()


def test_emulator_only_headers_have_emulator_names():
    """No emulator-only header sits under an SDK-looking name: every host header
    is one the SDK ships or carries the updlrm_emu prefix."""
    from updlrm.emulator._build import DPU_INCLUDE_DIR, HOST_INCLUDE_DIR

    sdk_host = {"dpu.h", "dpu_error.h", "dpu_log.h", "dpu_macro_utils.h", "dpu_types.h", "dpu_management.h"}
    host = {p.name for p in HOST_INCLUDE_DIR.glob("*.h")}
    assert not {h for h in host - sdk_host if not h.startswith("updlrm_emu")}, host
    sdk_dpu = {"alloc.h", "assert.h", "atomic_bit.h", "attributes.h", "barrier.h", "buddy_alloc.h", "defs.h",
               "dpu_characteristics.h", "handshake.h", "mram.h", "mram_unaligned.h", "mutex.h", "mutex_pool.h",
               "perfcounter.h", "sem.h", "seqread.h", "stdio.h", "vmutex.h"}
    assert {p.name for p in DPU_INCLUDE_DIR.glob("*.h")} <= sdk_dpu
