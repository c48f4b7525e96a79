"""The emulator's fault injection hook (UPDLRM_EMU_FAULTS, updlrm_emu_set_faults):
every kind fires where the rule says, names DPU and tasklet, leaves the other DPUs'
results right, and the next launch runs normally with no stray worker process."""

from __future__ import annotations

import time

import numpy as np
import pytest
from _emu_testutil import build_dpu
from process_tree import children

from updlrm.emulator import DpuError, DpuSet

NR_TASKLETS = 4
NR_DPUS = 4
DMAS_PER_TASKLET = 6  # 3 reads + 3 writes

# Each tasklet reads 3 words of its MRAM input and writes their sum + its id three
# times (to out[me]); dmas[me] counts the DMAs it completed.
PROGRAM = r"""
#include <stdint.h>
#include <defs.h>
#include <mram.h>

__host uint32_t dmas[NR_TASKLETS];
__mram_noinit uint64_t input[NR_TASKLETS][3];
__mram_noinit uint64_t out[NR_TASKLETS];
static __dma_aligned uint64_t word[NR_TASKLETS];

int main(void)
{
    unsigned id = me();
    uint64_t sum = 0;
    dmas[id] = 0;
    for (int k = 0; k < 3; k++) {
        mram_read(&input[id][k], &word[id], 8);
        dmas[id]++;
        sum += word[id];
    }
    word[id] = sum + id;
    for (int k = 0; k < 3; k++) {
        mram_write(&word[id], &out[id], 8);
        dmas[id]++;
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build_dpu(tmp_path_factory.mktemp("fault_inject"), PROGRAM, nr_tasklets=NR_TASKLETS)


def prepare(dpus, launch_index: int = 0) -> np.ndarray:
    """Fresh inputs for every DPU; returns the expected out[] per DPU."""
    inputs = np.arange(NR_DPUS * NR_TASKLETS * 3, dtype=np.uint64).reshape(NR_DPUS, NR_TASKLETS * 3) * 7 + launch_index
    dpus.push_to("input", list(inputs))
    dpus.copy_to("dmas", np.zeros(NR_TASKLETS, np.uint32))
    return inputs.reshape(NR_DPUS, NR_TASKLETS, 3).sum(axis=2) + np.arange(NR_TASKLETS, dtype=np.uint64)


def outputs(dpus) -> np.ndarray:
    return np.stack([dpus.copy_from("out", 8 * NR_TASKLETS, dpu=d).view(np.uint64) for d in range(NR_DPUS)])


def dma_counts(dpus) -> np.ndarray:
    return np.stack([dpus.copy_from("dmas", 4 * NR_TASKLETS, dpu=d).view(np.uint32) for d in range(NR_DPUS)])


def launch_ok(dpus, launch_index: int) -> None:
    expected = prepare(dpus, launch_index)
    dpus.launch()
    assert np.array_equal(outputs(dpus), expected)


@pytest.mark.parametrize(
    "rule, dpu, tasklet, dmas_before",
    [
        ("fault:dpu=2,tasklet=1,dma=4,launch=2", 2, 1, 3),  # tasklet 1's 4th DMA: its first write
        ("fault:dpu=3,tasklet=2,launch=2", 3, 2, 0),  # when tasklet 2 starts
        ("fault:dpu=1,dma=1,launch=2", 1, 0, 0),  # the DPU's first DMA: tasklet 0's first read
    ],
)
def test_fault_names_dpu_and_tasklet_and_fires_at_the_dma(program, rule, dpu, tasklet, dmas_before):
    with DpuSet(NR_DPUS) as dpus:
        dpus.load(program)
        dpus.inject_faults(rule)
        launch_ok(dpus, 1)
        expected = prepare(dpus, 2)
        with pytest.raises(DpuError) as caught:
            dpus.launch()
        e = caught.value
        assert (e.code_name, e.dpu, e.tasklet) == ("DPU_ERR_DPU_FAULT", dpu, tasklet)
        assert "injected fault (UPDLRM_EMU_FAULTS rule 1)" in e.message
        assert dma_counts(dpus)[dpu, tasklet] == dmas_before
        others = [d for d in range(NR_DPUS) if d != dpu]
        assert np.array_equal(outputs(dpus)[others], expected[others])  # the other DPUs ran normally
        dpus.load(program)  # as after any fault: WRAM may be mid-round
        launch_ok(dpus, 3)


def test_dma_count_without_tasklet_counts_every_tasklet(program):
    # A tasklet yields at each DMA it issues (round robin), so the DPU's DMAs are: reads
    # #1-#4 by tasklets 0-3, then tasklet 0 (read #1 done) issues #5, tasklet 1 (read #1
    # done) issues #6 -- which faults, with tasklets 0 and 1 one completed read each.
    with DpuSet(NR_DPUS) as dpus:
        dpus.load(program)
        dpus.inject_faults("fault:dpu=0,dma=6")
        prepare(dpus)
        with pytest.raises(DpuError) as caught:
            dpus.launch()
        assert (caught.value.dpu, caught.value.tasklet) == (0, 1)
        assert "at MRAM DMA 6 of the launch, in tasklet 1" in caught.value.message
        assert dma_counts(dpus)[0].tolist() == [1, 1, 0, 0]


def test_rule_without_launch_fires_every_launch_and_disarms(program):
    with DpuSet(NR_DPUS) as dpus:
        dpus.load(program)
        dpus.inject_faults("fault:dpu=1")
        for _ in range(3):
            prepare(dpus)
            with pytest.raises(DpuError, match="injected fault"):
                dpus.launch()
            dpus.load(program)
        dpus.inject_faults(None)
        launch_ok(dpus, 4)


def test_kill_worker_is_a_named_fault_and_the_worker_comes_back(program):
    with DpuSet(NR_DPUS, "nrWorkers=2") as dpus:
        dpus.load(program)
        dpus.inject_faults("kill:dpu=1,tasklet=2,dma=2,launch=2")
        launch_ok(dpus, 1)
        workers = sorted(pid for pid, _ in children())
        assert len(workers) == 2
        expected = prepare(dpus, 2)
        with pytest.raises(DpuError) as caught:
            dpus.launch()
        e = caught.value
        assert (e.code_name, e.dpu, e.tasklet) == ("DPU_ERR_DPU_FAULT", 1, 2)
        assert "killed by signal 9" in e.message
        # DPU 3 shares the killed worker (3 mod 2): the replacement ran it
        assert np.array_equal(outputs(dpus)[[0, 2, 3]], expected[[0, 2, 3]])
        after = children()
        assert len(after) == 2 and all(state != "Z" for _, state in after)
        assert sorted(pid for pid, _ in after) != workers  # one was replaced
        launch_ok(dpus, 3)
    assert children() == []


def test_hang_ends_at_the_timeout_naming_the_running_dpu(program):
    with DpuSet(NR_DPUS, "nrWorkers=2,timeout=0.3") as dpus:
        dpus.load(program)
        dpus.inject_faults("hang:dpu=0,tasklet=1,dma=2,launch=1")
        prepare(dpus)
        start = time.perf_counter()
        with pytest.raises(DpuError) as caught:
            dpus.launch()
        assert time.perf_counter() - start < 2.0
        e = caught.value
        assert (e.code_name, e.dpu, e.tasklet) == ("DPU_ERR_TIMEOUT", 0, 1)
        assert "timeout" in e.message
        assert len(children()) == 2  # the hung worker was killed and replaced
        dpus.load(program)
        launch_ok(dpus, 2)
    assert children() == []


def test_alloc_refused_through_the_environment(monkeypatch, program):
    monkeypatch.setenv("UPDLRM_EMU_FAULTS", "alloc")
    with pytest.raises(DpuError) as caught:
        DpuSet(2)
    assert caught.value.code_name == "DPU_ERR_ALLOCATION"
    assert "refused by the fault injection hook (UPDLRM_EMU_FAULTS=alloc)" in caught.value.message
    monkeypatch.setenv("UPDLRM_EMU_FAULTS", "fault:dpu=0,launch=1")
    with DpuSet(NR_DPUS) as dpus:  # rules from the environment apply to sets allocated after
        dpus.load(program)
        prepare(dpus)
        with pytest.raises(DpuError, match="injected fault"):
            dpus.launch()


@pytest.mark.parametrize(
    "rules, reason",
    [
        ("boom", "unknown kind 'boom'"),
        ("fault:dpu", "'dpu' is not key=value"),
        ("fault:core=1", "unknown key 'core'"),
        ("fault:dma=0", "invalid dma '0'"),
        ("fault:launch=-1", "invalid launch '-1'"),
        ("fault:tasklet=24", "invalid tasklet '24'"),
        ("kill:dpu=1;alloc:dpu=2", "rule 2 of"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(monkeypatch, rules, reason):
    with DpuSet(1) as dpus:
        with pytest.raises(DpuError) as caught:
            dpus.inject_faults(rules)
        assert caught.value.code_name == "DPU_ERR_INVALID_PROFILE"
        assert reason in caught.value.message
    monkeypatch.setenv("UPDLRM_EMU_FAULTS", rules)
    with pytest.raises(DpuError, match="UPDLRM_EMU_FAULTS: "):
        DpuSet(1)


def test_hang_without_a_timeout_faults_instead_of_hanging(monkeypatch, program):
    monkeypatch.delenv("UPDLRM_EMU_TIMEOUT", raising=False)
    with DpuSet(NR_DPUS) as dpus:  # and no timeout= in the profile
        dpus.load(program)
        dpus.inject_faults("hang:dpu=2,tasklet=3")
        prepare(dpus)
        with pytest.raises(DpuError) as caught:
            dpus.launch()
        e = caught.value
        assert (e.code_name, e.dpu, e.tasklet) == ("DPU_ERR_DPU_FAULT", 2, 3)
        assert "no launch timeout is set" in e.message
