"""Tables over several hosts (local processes, gloo): outputs equal one host's; failures are named.

Each test starts real processes (one per host) that talk over torch.distributed on
127.0.0.1, exactly as ``torchrun`` would across servers.
"""

import time

import numpy as np
import pytest
from _ranks import run_batches

from updlrm.distributed.cluster import HostSpec, plan_cluster
from updlrm.distributed.launch import run_local
from updlrm.specs import TableSpec
from updlrm.tbe import TableBatchedEmbeddingBags

pytestmark = pytest.mark.slow

TABLES = [
    TableSpec("f32", 300, 8),
    TableSpec("i8", 200, 5, row_format="int8"),
    TableSpec("i32", 120, 6, row_format="int32"),
    TableSpec("wide", 50, 24),
]


def _single_host(tables, seed, pooling):
    return TableBatchedEmbeddingBags(
        tables, backend="emulator", seed=seed, nr_dpus=8, nr_tasklets=4, pooling_mode=pooling
    )


def _check(plan, outcomes, seed, pooling, exact_tables):
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    cols = np.concatenate([[0], np.cumsum([t.embedding_dim for t in plan.tables])])
    with _single_host(plan.tables, seed, pooling) as ref:
        for outcome in outcomes:
            for idx, off, psw, out, _ in outcome.value:
                expected = ref(idx, off, psw)
                for t, spec in enumerate(plan.tables):
                    got, want = out[:, cols[t] : cols[t + 1]], expected[:, cols[t] : cols[t + 1]]
                    if spec.name in exact_tables:
                        np.testing.assert_array_equal(got, want, err_msg=f"table {spec.name}")
                    else:
                        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"table {spec.name}")


@pytest.mark.parametrize("strategy", ["table_wise", "row_wise", "column_wise"])
def test_two_hosts_equal_one_host(strategy):
    plan = plan_cluster(TABLES, [HostSpec(8), HostSpec(8)], strategy=strategy)
    outcomes = run_local(2, run_batches, plan.to_dict(), 5, 3, False, timeout_s=120)
    # Integer tables are bit-identical unless their rows are summed on two hosts.
    exact = {t.name for i, t in enumerate(TABLES) if t.row_format.value != "fp32" and not plan.is_row_split(i)}
    _check(plan, outcomes, 5, "sum", exact)


def test_four_hosts_weighted_equal_one_host():
    plan = plan_cluster(TABLES, [HostSpec(4)] * 4, strategy="table_wise")
    outcomes = run_local(4, run_batches, plan.to_dict(), 7, 2, True, timeout_s=180)
    _check(plan, outcomes, 7, "sum", {"i8", "i32"})
    assert {t.host for t in plan.shards} == {0, 1, 2, 3}


@pytest.mark.parametrize("strategy", ["row_wise", "column_wise"])
def test_mean_pooling_split_over_hosts(strategy):
    plan = plan_cluster(TABLES, [HostSpec(8), HostSpec(8)], strategy=strategy, pooling=["mean"] * len(TABLES))
    outcomes = run_local(2, run_batches, plan.to_dict(), 9, 2, False, timeout_s=120)
    _check(plan, outcomes, 9, "mean", set())


def test_a_dead_rank_is_named_and_nobody_hangs():
    plan = plan_cluster(TABLES, [HostSpec(4)] * 3, strategy="row_wise")
    start = time.monotonic()
    outcomes = run_local(
        3, run_batches, plan.to_dict(), 1, 4, False, (1, 2, "die"), timeout_s=120, collective_timeout_s=10
    )
    assert time.monotonic() - start < 100
    assert outcomes[1].exitcode == 3 and not outcomes[1].ok
    for r in (0, 2):
        assert not outcomes[r].ok
        assert "rank(s) 1 died" in outcomes[r].error, outcomes[r].error


def test_a_hung_rank_is_named_within_the_timeout():
    plan = plan_cluster(TABLES, [HostSpec(4)] * 2, strategy="table_wise")
    start = time.monotonic()
    outcomes = run_local(
        2, run_batches, plan.to_dict(), 1, 3, False, (1, 1, "hang"), timeout_s=60, collective_timeout_s=4
    )
    assert time.monotonic() - start < 60
    assert "rank(s) 1 hang" in outcomes[0].error, outcomes[0].error
    assert "hung; killed" in outcomes[1].error, outcomes[1].error


def test_bad_input_on_one_rank_fails_every_rank_at_once_naming_it():
    plan = plan_cluster(TABLES, [HostSpec(4)] * 2, strategy="table_wise")
    start = time.monotonic()
    outcomes = run_local(
        2, run_batches, plan.to_dict(), 1, 3, False, (1, 1, "bad_input"), timeout_s=60, collective_timeout_s=30
    )
    assert time.monotonic() - start < 30  # not the collective timeout: the status word carries it
    assert "IndexOutOfRangeError" in outcomes[1].error
    assert "rank 1: IndexOutOfRangeError" in outcomes[0].error, outcomes[0].error


@pytest.mark.parametrize("hosts", [2, 4])
def test_demo_over_hosts_passes(hosts):
    from click.testing import CliRunner

    from updlrm.demo import demo_command

    result = CliRunner().invoke(
        demo_command,
        [
            "--hosts",
            str(hosts),
            "--batch-size",
            "64",
            "--batches",
            "1",
            "--dpus",
            "4",
            "--max-rows",
            "300",
            "--dim",
            "8",
            "--backend",
            "emulator",
            "--tasklets",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and f"{hosts} local processes" in result.output
    assert "model:" in result.output and "network" in result.output


def test_torchrun_starts_the_same_hosts():
    import json
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "-m",
        "updlrm.distributed.demo",
        "--batch-size",
        "32",
        "--batches",
        "1",
        "--dpus",
        "4",
        "--max-rows",
        "200",
        "--dim",
        "8",
        "--backend",
        "emulator",
        "--timeout",
        "60",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # Each host writes one JSON line; decode every object in the shared stdout.
    decoder, lines, pos = json.JSONDecoder(), [], done.stdout.find("{")
    while pos != -1:
        obj, end = decoder.raw_decode(done.stdout, pos)
        lines.append(obj)
        pos = done.stdout.find("{", end)
    assert sorted(line["rank"] for line in lines) == [0, 1]
    assert all(line["passed"] and line["world_size"] == 2 for line in lines)


def test_demo_with_hosts_refuses_a_single_server_plan(tmp_path):
    from click.testing import CliRunner

    from updlrm.demo import demo_command

    plan = tmp_path / "p.json"
    plan.write_text("{}")
    result = CliRunner().invoke(demo_command, ["--hosts", "2", "--plan", str(plan)])
    assert result.exit_code == 2 and "single-server plan" in result.output
