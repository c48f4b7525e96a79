"""Faults in the engine: every fault the emulator's hook can inject (UPDLRM_EMU_FAULTS,
emulator/README.md "Fault injection") gives an error naming the DPU (and tasklet where
known) and the cause; the engine keeps its tables and the next batch equals the torch
reference; nothing leaks (worker processes, file descriptors, memory) over many faults."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference
from process_tree import children

from updlrm.host.engine import (
    DpuAllocationError,
    DpuFaultError,
    Engine,
    EngineError,
    LaunchTimeoutError,
)
from updlrm.plan import uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

TABLES = [
    TableSpec("f", 400, 12),
    TableSpec("i8", 300, 9, row_format=RowFormat.INT8, scale=0.05),
    TableSpec("i32", 200, 16, row_format=RowFormat.INT32, scale=2.0**-18),
]
NR_DPUS = 4
TIMEOUT_S = 0.3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    weights = random_weights(TABLES, rng)
    batches = [random_batch(TABLES, 16, 12, rng, weighted=k % 2 == 1) for k in range(6)]
    return weights, batches


@pytest.fixture(autouse=True)
def two_workers(monkeypatch):
    # Two worker processes whatever the machine: DPU d runs in worker d % 2.
    monkeypatch.setenv("UPDLRM_EMU_WORKERS", "2")


def make_engine(monkeypatch, weights, rules: str | None, nr_dpus: int = NR_DPUS, **kwargs) -> Engine:
    if rules:
        monkeypatch.setenv("UPDLRM_EMU_FAULTS", rules)  # read by dpu_alloc
    else:
        monkeypatch.delenv("UPDLRM_EMU_FAULTS", raising=False)
    plan = uniform_plan(TABLES, Topology(nr_dpus=nr_dpus), "row_wise")
    return Engine(plan, weights, nr_tasklets=8, **kwargs)


def check_batch(engine, weights, batch, pooling=PoolingMode.SUM):
    indices, offsets, psw = batch
    out, _ = engine.run(indices, offsets, psw, pooling)
    expected, magnitude = reference(TABLES, weights, indices, offsets, psw, pooling)
    assert_matches(TABLES, out, expected, magnitude)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# rule (fires at launch 2 = the second batch), exception, DPU, tasklet (None: any), text of the cause
CASES = [
    ("fault:dpu=2,tasklet=3,dma=2,launch=2", DpuFaultError, 2, 3, "at MRAM DMA 2 of the launch, in tasklet 3"),
    ("fault:dpu=1,tasklet=5,launch=2", DpuFaultError, 1, 5, "injected fault (UPDLRM_EMU_FAULTS rule 1) in tasklet 5"),
    ("fault:dpu=3,dma=7,launch=2", DpuFaultError, 3, None, "at MRAM DMA 7 of the launch"),
    ("kill:dpu=3,launch=2", DpuFaultError, 3, 0, "worker process killed by signal 9"),
    ("kill:dpu=0,tasklet=6,dma=3,launch=2", DpuFaultError, 0, 6, "worker process killed by signal 9"),
    ("hang:dpu=1,tasklet=2,dma=1,launch=2", LaunchTimeoutError, 1, 2, f"exceeded the {TIMEOUT_S:g} s timeout"),
]


@pytest.mark.parametrize("rules, error, dpu, tasklet, cause", CASES, ids=[c[0] for c in CASES])
def test_injected_fault_is_named_and_the_next_batches_are_right(monkeypatch, data, rules, error, dpu, tasklet, cause):
    weights, batches = data
    with make_engine(monkeypatch, weights, rules, launch_timeout=TIMEOUT_S) as engine:
        check_batch(engine, weights, batches[0])
        start = time.perf_counter()
        with pytest.raises(error) as caught:
            engine.run(*batches[1])
        assert time.perf_counter() - start < TIMEOUT_S + 2.0
        e = caught.value
        assert e.dpu == dpu and e.dpus == (dpu,) and e.recovered
        if tasklet is not None:
            assert e.tasklet == tasklet
            assert f"DPU {dpu} tasklet {tasklet} " in str(e)
        else:
            assert e.tasklet is not None and f"DPU {dpu} tasklet {e.tasklet} " in str(e)
        assert cause in e.cause and cause in str(e)
        assert "kernel reloaded, tables kept" in str(e)
        assert "\n" not in str(e)
        for batch in batches[1:5]:  # the failed batch again, then others: the tables are intact
            check_batch(engine, weights, batch, PoolingMode.MEAN)
        assert len(children()) <= 2
    assert children() == []


def test_timeout_names_every_dpu_still_running_and_those_not_started(monkeypatch, data):
    # 8 DPUs over 2 workers: hangs on DPUs 0 and 1 stop both workers at their first DPU;
    # DPUs 2-7, queued behind them, never start.
    weights, batches = data
    with make_engine(
        monkeypatch, weights, "hang:dpu=0,launch=1;hang:dpu=1,launch=1", nr_dpus=8, launch_timeout=TIMEOUT_S
    ) as engine:
        with pytest.raises(LaunchTimeoutError) as caught:
            engine.run(*batches[0])
        e = caught.value
        assert e.dpus == (0, 1) and e.dpu == 0 and e.tasklet == 0
        assert str(e).startswith("the launch timed out with DPU 0 tasklet 0 still running (DPUs still running: 0, 1)")
        assert "6 DPU(s) queued behind did not run" in str(e)
        check_batch(engine, weights, batches[0])


def test_faults_on_several_dpus_are_all_listed(monkeypatch, data):
    weights, batches = data
    with make_engine(monkeypatch, weights, "fault:dpu=3,launch=1;kill:dpu=1,launch=1") as engine:
        with pytest.raises(DpuFaultError) as caught:
            engine.run(*batches[0])
        e = caught.value
        assert e.dpus == (1, 3) and e.dpu == 1
        assert "killed by signal 9" in e.cause and "(DPUs in fault: 1, 3)" in str(e)
        check_batch(engine, weights, batches[0])


def test_a_fault_on_every_launch_keeps_failing_and_the_engine_closes_cleanly(monkeypatch, data):
    weights, batches = data
    with make_engine(monkeypatch, weights, "fault:dpu=2,tasklet=1") as engine:
        for batch in batches[:3]:
            with pytest.raises(DpuFaultError, match="DPU 2 tasklet 1 faulted"):
                engine.run(*batch)
    assert children() == []


def test_module_keeps_its_tables_after_a_fault(monkeypatch):
    torch = pytest.importorskip("torch")
    from updlrm.tbe import TableBatchedEmbeddingBags

    monkeypatch.setenv("UPDLRM_EMU_FAULTS", "kill:dpu=1,launch=1")
    tables = [TableSpec("a", 300, 8), TableSpec("b", 200, 4)]
    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=2, seed=3, nr_tasklets=4) as module:
        indices = torch.tensor([1, 5, 299, 0, 7, 199, 3], dtype=torch.int64)
        offsets = torch.tensor([0, 2, 3, 5, 7], dtype=torch.int64)
        with pytest.raises(DpuFaultError, match="DPU 1 tasklet 0 faulted"):
            module(indices, offsets)
        out = module(indices, offsets)
        expected = []
        for t in range(2):
            w = torch.from_numpy(module.weights(t))
            expected.append(
                torch.nn.functional.embedding_bag(
                    indices[offsets[2 * t] : offsets[2 * t + 2]],
                    w,
                    offsets[2 * t : 2 * t + 2] - offsets[2 * t],
                    mode="sum",
                )
            )
        torch.testing.assert_close(torch.as_tensor(out), torch.cat(expected, dim=1))


def test_allocation_failures_keep_the_reason(monkeypatch, data):
    weights, _ = data
    with pytest.raises(DpuAllocationError, match=r"refused by the fault injection hook \(UPDLRM_EMU_FAULTS=alloc\)"):
        make_engine(monkeypatch, weights, "alloc")
    with pytest.raises(DpuAllocationError) as caught:
        make_engine(monkeypatch, weights, None, nr_dpus=4096)
    message = str(caught.value)
    assert message.startswith("cannot allocate 4096 DPUs")
    assert "4096 DPUs requested" in message and "= 2560" in message and "UPDLRM_EMU_NR_RANKS" in message
    assert children() == []


def test_launch_timeout_is_checked(monkeypatch, data):
    weights, _ = data
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(EngineError, match="launch_timeout must be a positive number of seconds"):
            make_engine(monkeypatch, weights, None, launch_timeout=bad)
    plan = uniform_plan(TABLES, Topology(nr_dpus=NR_DPUS), "row_wise")
    with pytest.raises(EngineError, match="launch_timeout is only available on the emulator backend"):
        Engine(plan, weights, backend="simulator", launch_timeout=1.0)


def test_many_faults_leak_no_process_fd_or_memory(monkeypatch, data):
    # One engine, 48 batches: every other one faults (DPU faults, killed workers and a
    # hang past the timeout in turn); then engines created and closed with faults.
    weights, batches = data
    kinds = [
        "hang:dpu={d},tasklet=1,dma=2",
        "fault:dpu={d},tasklet=2,dma=3",
        "kill:dpu={d}",
        "fault:dpu={d}",
        "kill:dpu={d},tasklet=3,dma=4",
        "fault:dpu={d},tasklet=7",
    ]
    rules = ";".join(f"{kinds[k % len(kinds)].format(d=k % NR_DPUS)},launch={2 * k + 2}" for k in range(24))
    with make_engine(monkeypatch, weights, rules, launch_timeout=0.25) as engine:

        def cycle(k):
            check_batch(engine, weights, batches[k % len(batches)])
            with pytest.raises(DpuFaultError) as caught:
                engine.run(*batches[(k + 1) % len(batches)])
            assert caught.value.dpu == k % NR_DPUS

        for k in range(len(kinds)):  # warm up: every kind once
            cycle(k)
        fds, rss = open_fds(), rss_bytes()
        for k in range(len(kinds), 24):
            cycle(k)
            assert len(children()) <= 2 and all(state != "Z" for _, state in children())
        assert open_fds() == fds
        assert rss_bytes() - rss < 8 << 20, f"RSS grew by {(rss_bytes() - rss) >> 20} MiB over 18 faults"
    assert children() == []
    fds = open_fds()
    for _ in range(5):
        with make_engine(monkeypatch, weights, "kill:dpu=0,launch=1") as engine:
            with pytest.raises(DpuFaultError):
                engine.run(*batches[0])
            check_batch(engine, weights, batches[1])
    assert children() == [] and open_fds() == fds


def test_demo_with_more_dpus_than_the_machine_says_why(monkeypatch):
    from click.testing import CliRunner

    from updlrm.demo import demo_command

    monkeypatch.delenv("UPDLRM_EMU_FAULTS", raising=False)
    result = CliRunner().invoke(
        demo_command,
        [
            "--dpus",
            "4096",
            "--batches",
            "1",
            "--batch-size",
            "4",
            "--max-rows",
            "100",
            "--dim",
            "4",
            "--backend",
            "emulator",
        ],
    )
    assert isinstance(result.exception, DpuAllocationError)
    message = str(result.exception)
    assert "4096 DPUs requested" in message and "= 2560" in message
    assert message.endswith("; or ask for fewer with --dpus")


def worker_pids() -> dict[int, int]:
    """Emulator worker index -> pid, for this process's workers (their UPDLRM_EMU_WORKER)."""
    workers = {}
    for pid, _ in children():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if b"UPDLRM_EMU_WORKER" in env:
            workers[int(env[b"UPDLRM_EMU_WORKER"])] = pid
    return workers


def blocked_outside_read(pid: int) -> bool:
    """Whether the process sleeps in a system call other than read (the idle worker's)."""
    import platform

    read_number = {"x86_64": "0", "aarch64": "63"}.get(platform.machine())
    try:
        with open(f"/proc/{pid}/syscall") as f:
            call = f.read().split()[0]
    except (OSError, IndexError):
        return False
    return read_number is not None and call not in ("running", read_number)


def test_worker_killed_from_outside_mid_launch(monkeypatch, data):
    # DPU 1 hangs in worker 1 (DPU d runs in worker d % 2); this test kills that worker
    # with SIGKILL while the launch waits for it, as an operator or the OOM killer would.
    import signal
    import threading

    weights, batches = data
    with make_engine(monkeypatch, weights, "hang:dpu=1,launch=2", launch_timeout=30.0) as engine:
        check_batch(engine, weights, batches[0])
        failure = []

        def run():
            try:
                engine.run(*batches[1])
            except EngineError as e:
                failure.append(e)

        runner = threading.Thread(target=run)
        runner.start()
        deadline = time.monotonic() + 10
        pid = None
        while time.monotonic() < deadline:
            pid = worker_pids().get(1)
            if pid and blocked_outside_read(pid):
                break
            time.sleep(0.01)
        else:
            time.sleep(1.0)  # no /proc/<pid>/syscall here: give the hang time to start
        os.kill(pid, signal.SIGKILL)
        runner.join(10)
        assert not runner.is_alive()
        (e,) = failure
        assert type(e) is DpuFaultError and e.dpus == (1,) and e.tasklet == 0
        assert "worker process killed by signal 9" in e.cause
        for batch in batches[1:4]:
            check_batch(engine, weights, batch)
        assert sorted(worker_pids()) == [0, 1] and all(state != "Z" for _, state in children())
    assert children() == []


SANITIZED_CHILD = """
import sys
import numpy as np
from updlrm.host.engine import Engine, DpuFaultError, LaunchTimeoutError
from updlrm.plan import Plan

data = np.load(sys.argv[1])
weights = [data[f"w{t}"] for t in range(int(data["nr_tables"]))]
plan = Plan.load(sys.argv[2])
outputs = {}
with Engine(plan, weights, nr_tasklets=5, launch_timeout=1.0) as engine:
    for k in range(5):
        try:
            engine.run(data["indices"], data["offsets"], data["psw"])
            raise SystemExit(f"launch {2 * k + 1}: no fault")
        except DpuFaultError as e:
            print(type(e).__name__, e.dpus, e.tasklet, flush=True)
        outputs[f"out{k}"], _ = engine.run(data["indices"], data["offsets"], data["psw"])
np.savez(sys.argv[1].replace(".npz", "-out.npz"), **outputs)
"""


def test_fault_recovery_runs_clean_under_asan_and_ubsan(tmp_path, data):
    from test_engine_sanitized import _libasan

    if _libasan() is None:
        pytest.skip("gcc has no libasan.so here")
    weights, batches = data
    indices, offsets, psw = batches[1]
    uniform_plan(TABLES, Topology(nr_dpus=NR_DPUS), "row_wise").save(tmp_path / "plan.json")
    batch = tmp_path / "batch.npz"
    np.savez(
        batch,
        indices=indices,
        offsets=offsets,
        psw=psw,
        nr_tables=len(TABLES),
        **{f"w{t}": w for t, w in enumerate(weights)},
    )
    rules = (
        "fault:dpu=1,tasklet=2,dma=2,launch=1;kill:dpu=2,launch=3;hang:dpu=3,tasklet=1,dma=1,launch=5;"
        "fault:dpu=0,launch=7;kill:dpu=0,tasklet=4,dma=1,launch=9;fault:dpu=3,launch=9"
    )
    env = dict(
        os.environ,
        UPDLRM_SANITIZE="1",
        LD_PRELOAD=_libasan(),
        UPDLRM_EMU_FAULTS=rules,
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
    )
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", SANITIZED_CHILD, str(batch), str(tmp_path / "plan.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    assert "runtime error" not in child.stderr and "AddressSanitizer" not in child.stderr, child.stderr[-4000:]
    assert child.stdout.split("\n")[:5] == [
        "DpuFaultError (1,) 2",
        "DpuFaultError (2,) 0",
        "LaunchTimeoutError (3,) 1",
        "DpuFaultError (0,) 0",
        "DpuFaultError (0, 3) 4",
    ]
    outputs = np.load(tmp_path / "batch-out.npz")
    expected, magnitude = reference(TABLES, weights, indices, offsets, psw, PoolingMode.SUM)
    for k in range(5):
        assert_matches(TABLES, outputs[f"out{k}"], expected, magnitude)
