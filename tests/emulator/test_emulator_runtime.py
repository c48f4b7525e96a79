"""The emulator's own mechanisms: DMA rules, faults and recovery, scheduling,
synchronisation, memory services, counters, workers, determinism, C API."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from _emu_testutil import PROGRAMS, build_dpu, build_host

from updlrm.emulator import (
    CompileError,
    DpuError,
    DpuSet,
    ElfFile,
    check_wram_capacity,
    compile_dpu_program,
)

NR_TASKLETS = 8
FAULT_DPU = 2
FAULT_TASKLET = 5
SCENARIOS = [
    "NONE",
    "DMA_SIZE",
    "DMA_MRAM_MISALIGNED",
    "DMA_WRAM_OUTSIDE",
    "DMA_MRAM_OUTSIDE",
    "HALT",
    "ASSERT",
    "SEGFAULT",
    "STACK_OVERFLOW",
    "DEADLOCK",
    "HEAP_OVERFLOW",
    "ABORT",
    "EXIT",
    "RELOCK",
    "SPIN",
    "DMA_TOO_BIG",
]
SCENARIO = {name: i for i, name in enumerate(SCENARIOS)}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("emu_runtime")


@pytest.fixture(scope="module")
def faults(root):
    return build_dpu(root, "emu_faults.c", nr_tasklets=NR_TASKLETS)


def _u32(value):
    return np.array([value], np.uint32)


def _arm(dpus, scenario, dpu=FAULT_DPU, tasklet=FAULT_TASKLET):
    dpus.copy_to("scenario", _u32(0))
    dpus.copy_to("finished", _u32(0))
    dpus.copy_to("faulting_tasklet", _u32(tasklet))
    dpus.copy_to("scenario", _u32(SCENARIO[scenario]), dpu=dpu)


def _finished(dpus):
    return dpus.copy_from("finished", 4).view(np.uint32).ravel()


# -- faults --------------------------------------------------------------------

CHECKED = {
    "DMA_SIZE": "multiple of 8",
    "DMA_TOO_BIG": "multiple of 8 in [8, 2048]",
    "DMA_MRAM_MISALIGNED": "not 8-byte aligned",
    "DMA_WRAM_OUTSIDE": "outside WRAM",
    "DMA_MRAM_OUTSIDE": "past the end of MRAM",
    "HALT": "halt()",
    "ASSERT": "assertion failed",
    "HEAP_OVERFLOW": "WRAM heap exhausted",
    "RELOCK": "already holds",
}
# faults only under UPDLRM_EMU_DMA=strict: the DPU decodes these DMAs (emulator/README.md, "DMA rules")
STRICT_ONLY = {"DMA_MRAM_MISALIGNED"}
CRASHES = {"SEGFAULT": "signal 11", "STACK_OVERFLOW": "signal 11", "ABORT": "signal 6", "EXIT": "exited with status 3"}


@pytest.mark.parametrize("scenario", sorted(CHECKED) + sorted(CRASHES))
def test_fault_names_dpu_and_tasklet_then_set_is_reusable(faults, scenario, monkeypatch):
    """Checked faults and process crashes both report DPU_ERR_DPU_FAULT with
    the DPU and tasklet; the other DPUs complete; the set works afterwards."""
    if scenario in STRICT_ONLY:
        monkeypatch.setenv("UPDLRM_EMU_DMA", "strict")
    with DpuSet(5, "nrWorkers=2") as dpus:
        dpus.load(faults)
        _arm(dpus, scenario)
        with pytest.raises(DpuError) as raised:
            dpus.launch()
        error = raised.value
        assert error.code_name == "DPU_ERR_DPU_FAULT"
        assert (error.dpu, error.tasklet) == (FAULT_DPU, FAULT_TASKLET), error
        assert (CHECKED.get(scenario) or CRASHES[scenario]) in error.message, error.message
        done = _finished(dpus)
        assert [d for d in range(5) if done[d] != NR_TASKLETS] == [FAULT_DPU], done
        assert dpus.status() == (True, True)
        assert int(dpus.counters()["faults"][FAULT_DPU]) == 1
        # recovery: same set; WRAM keeps what the faulted DPU left (as on
        # hardware: barriers may be mid-round), so reload, then relaunch on the
        # respawned worker
        dpus.load(faults)
        _arm(dpus, "NONE")
        dpus.launch()
        assert (_finished(dpus) == NR_TASKLETS).all()
        assert dpus.status() == (True, False)


def test_deadlock_is_a_fault_not_a_hang(faults):
    with DpuSet(1) as dpus:
        dpus.load(faults)
        _arm(dpus, "DEADLOCK", dpu=0)
        with pytest.raises(DpuError, match="deadlock") as raised:
            dpus.launch()
        assert raised.value.dpu == 0 and raised.value.tasklet is None


def test_spinning_tasklet_hits_the_launch_timeout(faults):
    """A tasklet spinning on memory only another tasklet would change can
    never yield under cooperative scheduling: the profile's timeout kills
    the worker and reports DPU_ERR_TIMEOUT; the set stays usable."""
    with DpuSet(3, "timeout=0.5,nrWorkers=1") as dpus:
        dpus.load(faults)
        _arm(dpus, "SPIN", dpu=1)
        with pytest.raises(DpuError) as raised:
            dpus.launch()
        assert raised.value.code_name == "DPU_ERR_TIMEOUT"
        assert raised.value.dpu == 1
        dpus.load(faults)
        _arm(dpus, "NONE")
        dpus.launch()
        assert (_finished(dpus) == NR_TASKLETS).all()


def test_async_launch_then_fault_reported_by_sync(faults):
    with DpuSet(4) as dpus:
        dpus.load(faults)
        _arm(dpus, "HALT", dpu=3, tasklet=0)
        dpus.launch(asynchronous=True)
        with pytest.raises(DpuError) as raised:
            dpus.sync()
        assert (raised.value.dpu, raised.value.tasklet) == (3, 0)


# -- DMA rules and capacities --------------------------------------------------


def test_capacities_reject_oversized_programs(root):
    hog = "#include <stdint.h>\nuint8_t hog[HOG];\nint main(void) { return hog[0]; }\n"
    source = root / "hog.c"
    source.write_text(hog)
    with pytest.raises(CompileError, match="wram"):
        compile_dpu_program(source, root / "hog_big", defines=["HOG=70000"])
    with pytest.raises(CompileError, match="wram"):
        compile_dpu_program(source, root / "hog_stacks", defines=["HOG=50000"], nr_tasklets=16)
    report = check_wram_capacity(compile_dpu_program(source, root / "hog_ok", defines=["HOG=30000"], nr_tasklets=16))
    assert report["stacks"] == 16 * 1024 and report["bss"] >= 30000
    assert report["heap"] == 65536 - report["wram_used"]
    with pytest.raises(CompileError, match="out of range"):
        compile_dpu_program(source, root / "hog_25", defines=["HOG=8"], nr_tasklets=25)
    small_stacks = compile_dpu_program(
        source, root / "hog_small", defines=["HOG=50000", "STACK_SIZE_DEFAULT=256"], nr_tasklets=16
    )
    assert check_wram_capacity(small_stacks)["stacks"] == 16 * 256
    mram = "#include <mram.h>\n__mram_noinit unsigned char big[(64 << 20) + 8];\nint main(void) { return 0; }\n"
    (root / "mram_hog.c").write_text(mram)
    with pytest.raises(CompileError, match="mram"):
        compile_dpu_program(root / "mram_hog.c", root / "mram_hog")


def test_elf_reader_sees_program_layout(faults):
    elf = ElfFile.from_path(faults)
    config = elf.program_config()
    assert config["nr_tasklets"] == NR_TASKLETS and config["stack_sizes"] == [1024] * NR_TASKLETS
    heap = elf.symbol("__sys_used_mram_end")
    assert heap.value >= 0x08000000 and heap.value % 8 == 0
    assert elf.symbol("scenario").size == 4
    assert elf.section(".data").address < 0x08000000  # WRAM globals stay below 4 GiB
    assert elf.type == 2  # ET_EXEC: non-PIE, as the casts in DPU code need


def test_mram_heap_symbol_spans_the_rest_of_mram(faults):
    with DpuSet(1) as dpus:
        dpus.load(faults)
        address, size = dpus.symbol("__sys_used_mram_end")
        assert address + size == 0x08000000 + (64 << 20)
        last = np.arange(8, dtype=np.uint8)
        dpus.copy_to("__sys_used_mram_end", last, offset=size - 8)
        assert dpus.copy_from("__sys_used_mram_end", 8, offset=size - 8, dpu=0).tolist() == last.tolist()
        with pytest.raises(DpuError) as raised:
            dpus.copy_to("__sys_used_mram_end", last, offset=size)
        assert raised.value.code_name == "DPU_ERR_INVALID_SYMBOL_ACCESS"


def test_profile_and_allocation_errors():
    with pytest.raises(DpuError) as raised:
        DpuSet(4, "backend=quantum")
    assert raised.value.code_name == "DPU_ERR_INVALID_PROFILE"
    with pytest.raises(DpuError) as raised:
        DpuSet(129, "nrRanks=2")
    assert raised.value.code_name == "DPU_ERR_ALLOCATION"
    with DpuSet(128, "nrRanks=2") as dpus:
        assert (dpus.nr_dpus, dpus.nr_ranks) == (128, 2)


# -- scheduling and synchronisation --------------------------------------------


@pytest.mark.parametrize("tasklets", [1, 2, 11, 24])
def test_synchronisation_primitives(root, tasklets):
    program = build_dpu(root, "emu_sync.c", nr_tasklets=tasklets)
    with DpuSet(2) as dpus:
        dpus.load(program)
        dpus.launch()
        read = lambda name, n=1: dpus.copy_from(name, 4 * n).view(np.uint32)  # noqa: E731
        failures = read("trylock_failures")[:, 0]
        # tasklet 0 holds the mutex until every other tasklet has tried it
        assert (failures == tasklets - 1).all()
        assert (read("counter")[:, 0] == 100 * tasklets + failures).all()
        assert (read("produced")[:, 0] == 10 * (tasklets - 1)).all()
        assert (read("consumed")[:, 0] == 10 * (tasklets - 1)).all()
        assert (read("chain", tasklets) == np.arange(1, tasklets + 1)).all()
        assert (read("vcounts", 8).sum(axis=1) == 100 * tasklets + tasklets - 1).all()
        assert (read("pool_count")[:, 0] == tasklets).all()
        # deterministic schedule: a tasklet runs until it blocks, then the next
        # in id order; the last to reach a barrier goes on first, so round r
        # starts with tasklet N - r
        order = read("order", 4 * tasklets)[0, : 4 * tasklets]
        assert order.tolist() == [(tasklets - r + k) % tasklets for r in range(4) for k in range(tasklets)]
        counters = dpus.counters()
        # blocked mutex_lock calls, plus the virtual-mutex waiters (all but
        # tasklet 0, which holds it until they have all tried)
        assert (counters["mutex_waits"].sum(axis=1) == failures + tasklets - 1).all()
        assert int(counters["barrier_waits"][0].sum()) == tasklets * 103


def test_schedule_is_deterministic_across_worker_counts(root):
    program = build_dpu(root, "emu_identity.c", nr_tasklets=16)
    traces = []
    for workers in (1, 2, 3):
        with DpuSet(6, f"nrWorkers={workers}") as dpus:
            dpus.load(program)
            dpus.push_to("seed", [_u32(d) for d in range(6)])
            dpus.launch()
            traces.append(dpus.copy_from("trace", 16 * 3 * 4).view(np.uint32).copy())
            pids = dpus.copy_from("worker_pid", 4).view(np.uint32).ravel()
            # DPU d always runs in worker d % W: W distinct processes
            for d in range(6):
                assert pids[d] == pids[d % workers]
            assert len(set(pids.tolist())) == min(workers, 6) == dpus.nr_workers
    assert all((t == traces[0]).all() for t in traces[1:])
    assert len({tuple(row) for row in traces[0]}) > 1  # the seed really changes the interleaving


# -- memory services, counters, perfcounter, log -------------------------------


def test_memory_services_and_perfcounter(root):
    program = build_dpu(root, "emu_memory.c", nr_tasklets=4)
    rng = np.random.default_rng(7)
    with DpuSet(3) as dpus:
        dpus.load(program)
        heap = rng.integers(0, 256, size=(3, 8192), dtype=np.uint8)
        dpus.push_to("__sys_used_mram_end", heap)
        offset, length = 13, 29
        dpus.copy_to("unaligned_offset", _u32(offset))
        dpus.copy_to("unaligned_length", _u32(length))
        dpus.copy_to("seq_count", _u32(1000))
        dpus.launch()
        u64 = lambda name: dpus.copy_from(name, 8).view(np.uint64).ravel()  # noqa: E731
        assert (u64("initialised_sum") == 110).all() and (u64("direct_sum") == 110).all()
        got = dpus.copy_from("unaligned_out", 64)[:, :length]
        assert (got == heap[:, offset : offset + length]).all()
        scratch = dpus.copy_from("scratch", 128)
        assert (scratch[:, offset : offset + length] == (0xA0 + np.arange(length))).all()
        assert (scratch[:, :offset] == 0).all() and (scratch[:, offset + length :] == 0).all()
        expected_seq = heap[:, 1024 : 1024 + 4000].copy().view(np.uint32).astype(np.uint64).sum(axis=1)
        assert (u64("seq_sum") == expected_seq).all()
        assert (dpus.copy_from("buddy_ok", 4).view(np.uint32) == 1).all()
        # 10 DMAs of 64 B at alpha + beta * size (PrIM) + the perfcounter_get call
        assert (u64("cycles_for_dmas") == 10 * (77 + 32) + 22).all()
        words = dpus.copy_from("atomic_words", 16)
        assert (words[:, 4:8].copy().view(np.int32).ravel() == 1 + 2 + 3 + 4).all()
        assert (words[:, :4] == 0).all() and (words[:, 8:12] == [0, 1, 2, 3]).all()
        assert "launch 1: sum 110" in dpus.log(1)
        dpus.launch()
        # heap persists across boots (8 + seqread 2 x 256 + buddy 264 + 4096 bytes)
        assert (dpus.copy_from("heap_before", 4).view(np.uint32) == 8 + 512 + 264 + 4096).all()
        assert (u64("initialised_sum") == 111).all()  # the direct MRAM store persisted
        assert "launch 2" in dpus.log(0)
        dpus.load(program)  # reload: MRAM variables, WRAM and heap back to their initial state
        dpus.copy_to("unaligned_offset", _u32(offset))
        dpus.copy_to("unaligned_length", _u32(length))
        dpus.launch()
        assert (u64("initialised_sum") == 110).all()
        assert (dpus.copy_from("heap_before", 4).view(np.uint32) == 0).all()


def test_counters_count_dmas_and_transfers(root):
    program = build_dpu(root, "checksum.c", nr_tasklets=16)
    words = 4096
    with DpuSet(3) as dpus:
        dpus.load(program)
        dpus.reset_counters()
        dpus.copy_to("nr_words", _u32(words))
        dpus.push_to("__sys_used_mram_end", np.ones((3, words), np.uint32))
        dpus.launch()
        dpus.copy_from("result", 8)
        c = dpus.counters()
        blocks = words * 4 // 256
        assert (c["mram_read_count"].sum(axis=1) == blocks).all()
        assert (c["mram_read_bytes"].sum(axis=1) == blocks * 256).all()
        assert (c["mram_read_count"][:, :16] == blocks // 16).all()
        assert (c["mram_write_count"] == 0).all()
        assert (c["launches"] == 1).all()
        assert (c["host_to_dpu_bytes"] == 4 + words * 4).all()
        assert (c["dpu_to_host_bytes"] == 8).all()
        assert (c["barrier_waits"][:, :16] == 2).all()
        assert (c["cycles"].sum(axis=1) == c["last_launch_cycles"]).all()
        dpus.reset_counters()
        assert all(int(v.sum()) == 0 for v in dpus.counters().values())


def test_c_host_api(root):
    dpu = build_dpu(root, "emu_identity.c", nr_tasklets=4)
    host = build_host(
        root, (PROGRAMS / "emu_host_api.c").read_text(), name="host_api", defines=["NR_TASKLETS_OF_PROGRAM=4"]
    )
    for nr_dpus in (1, 70):
        result = subprocess.run([str(host), str(dpu), str(nr_dpus)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr


def test_sanitizers_run_clean_programs_and_catch_bugs(root):
    """ASan+UBSan build (sanitize=True): a clean program runs unchanged; a
    global buffer overflow in DPU code is caught and reported as a fault."""
    clean = build_dpu(root, "checksum.c", nr_tasklets=16, sanitize=True)
    with DpuSet(2) as dpus:
        dpus.load(clean)
        dpus.copy_to("nr_words", _u32(1024))
        dpus.push_to("__sys_used_mram_end", np.full((2, 1024), 3, np.uint32))
        dpus.launch()
        assert (dpus.copy_from("result", 8).view(np.uint64) == 3 * 1024).all()
    # the emulator's own C (host library and DPU runtime) under the sanitizers
    dpu = build_dpu(root, "emu_identity.c", nr_tasklets=4, sanitize=True)
    host = build_host(
        root,
        (PROGRAMS / "emu_host_api.c").read_text(),
        name="host_api_san",
        defines=["NR_TASKLETS_OF_PROGRAM=4"],
        sanitize=True,
    )
    result = subprocess.run(
        [str(host), str(dpu), "70"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"),
    )
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr
    buggy = build_dpu(
        root,
        "#include <stdint.h>\n#include <defs.h>\n__host uint32_t index_;\nuint32_t table[8];\n"
        "int main(void) { if (me() == 1) table[index_] = 1; return 0; }\n",
        nr_tasklets=2,
        sanitize=True,
    )
    env_before = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = "detect_leaks=0"
    try:
        with DpuSet(1) as dpus:
            dpus.load(buggy)
            dpus.copy_to("index_", _u32(9))
            with pytest.raises(DpuError) as raised:
                dpus.launch()
            assert raised.value.tasklet == 1 and "crashed" in raised.value.message
    finally:
        if env_before is None:
            os.environ.pop("ASAN_OPTIONS")
        else:
            os.environ["ASAN_OPTIONS"] = env_before


def test_clang_shim_compiles_and_links_separately(root, tmp_path):
    """Makefiles that compile objects first (-c) and link them later work
    through the dpu-upmem-dpurte-clang shim, like with the SDK's driver."""
    from updlrm.emulator.cli import clang_shim_main

    source = PROGRAMS / "checksum.c"
    obj = tmp_path / "checksum.o"
    assert clang_shim_main(["-DNR_TASKLETS=16", "-O2", "-c", str(source), "-o", str(obj)]) == 0
    binary = tmp_path / "checksum"
    assert clang_shim_main(["-DNR_TASKLETS=16", str(obj), "-o", str(binary)]) == 0
    assert ElfFile.from_path(binary).program_config()["nr_tasklets"] == 16
    with DpuSet(2) as dpus:
        dpus.load(binary)
        dpus.copy_to("nr_words", _u32(512))
        dpus.push_to("__sys_used_mram_end", np.full((2, 512), 2, np.uint32))
        dpus.launch()
        assert (dpus.copy_from("result", 8).view(np.uint64) == 1024).all()
    assert clang_shim_main(["-o", str(tmp_path / "none")]) == 1  # no input files
