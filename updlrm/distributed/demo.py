"""``updlrm demo --hosts N``: the Criteo-like demo over N hosts (local processes, gloo on 127.0.0.1).

Every rank is one host: it holds the shards a cluster plan gives it on its own DPUs
(emulated here), takes its share of each global batch (samples ``[B*h/N, B*(h+1)/N)``),
sends lookups to their owners, gets pooled parts back, and checks its output against
``torch.nn.functional.embedding_bag`` on the same weights. The report shows PASS/FAIL
over all ranks, the measured phases per batch (slowest rank), the bytes that crossed
between processes, and the model's estimate for N real servers on a network.

Example:
    >>> r = run_cluster_demo(hosts=2, batch_size=16, batches=1, dpus=4, max_rows=200, dim=8, backend="emulator")
    >>> r.passed, r.hosts
    (True, 2)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from updlrm.distributed.cluster import HostSpec, plan_cluster
from updlrm.distributed.launch import LocalRunError, run_local
from updlrm.distributed.model import NETWORKS, estimate_batch, slice_batch, source_ranges

PHASES = (
    ("route", "route_s"),
    ("send lookups", "exchange_requests_s"),
    ("host DPUs", "host_s"),
    ("return pooled", "exchange_responses_s"),
    ("assemble", "assemble_s"),
)


@dataclass
class ClusterDemoResult:
    """What ``updlrm demo --hosts N`` measured and modeled; ``to_dict()`` is ``--json``."""

    config: dict
    hosts: int
    backend: str
    strategy: str
    plan_summary: str
    lookups_per_batch: float
    measured_s: dict = field(default_factory=dict)
    bytes_between_hosts: float = 0.0
    max_abs_err: float = 0.0
    passed: bool = False
    modeled: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["result"] = "PASS" if self.passed else "FAIL"
        return d


def _setup(config: dict):
    from updlrm.partitioner.workloads import criteo_like_tables, synthetic_trace

    tables = criteo_like_tables(dim=config["dim"], max_rows=config["max_rows"], row_format=config["row_format"])
    trace = synthetic_trace(
        tables,
        batch_size=config["batch_size"],
        num_batches=config["batches"],
        pooling=config["pooling"],
        alpha=config["alpha"],
        seed=config["seed"],
    )
    loads = [float(config["pooling"])] * len(tables)
    plan = plan_cluster(
        tables,
        [HostSpec(config["dpus"])] * config["hosts"],
        loads=loads,
        strategy=config["strategy"],
        batch_size=config["batch_size"],
    )
    return tables, trace, plan


def _rank(ctx, config: dict) -> dict:
    """One host's part of the demo (runs in its own process)."""
    import torch

    from updlrm.distributed.sharded import ShardedTableBatchedEmbeddingBags
    from updlrm.tbe import _init_table, dequantize_table, quantize_table

    tables, trace, plan = _setup(config)
    module = ShardedTableBatchedEmbeddingBags(
        plan, ctx, backend=config["backend"], seed=config["seed"], nr_tasklets=config["nr_tasklets"]
    )
    weights = []
    for t, spec in enumerate(tables):
        q, fitted = quantize_table(_init_table(spec, config["seed"], t, None, None), spec, fit_scale=True)
        weights.append(torch.from_numpy(dequantize_table(q, fitted)))
    lo, hi = source_ranges(config["batch_size"], ctx.world_size)[ctx.rank]
    phases, errors, passed = [], [], True
    ctx.barrier()  # every host loaded: the timed batches start together
    try:
        for idx, off, psw in trace.batches():
            my_idx, my_off, my_w = slice_batch(off, idx, psw, len(tables), config["batch_size"], lo, hi)
            out = module(my_idx, my_off, my_w)
            ref = _reference(weights, my_idx, my_off, hi - lo)
            err = np.abs(out - ref)
            errors.append(float(err.max(initial=0.0)))
            passed &= bool(np.all(err <= 1e-5 + 1e-5 * np.abs(ref)))
            phases.append(module.last_stats.as_dict())
    finally:
        module.close()
    return {"phases": phases, "max_abs_err": max(errors, default=0.0), "passed": passed, "backend": module.backend}


def _reference(weights, indices, offsets, batch_size: int) -> np.ndarray:
    import torch

    outs = []
    for t, w in enumerate(weights):
        lo, hi = int(offsets[t * batch_size]), int(offsets[(t + 1) * batch_size])
        outs.append(
            torch.nn.functional.embedding_bag(
                torch.from_numpy(indices[lo:hi]),
                w,
                torch.from_numpy(offsets[t * batch_size : (t + 1) * batch_size + 1] - lo),
                mode="sum",
                include_last_offset=True,
            )
        )
    return torch.cat(outs, dim=1).numpy()


def run_cluster_demo(
    *,
    hosts: int = 2,
    batch_size: int = 1024,
    batches: int = 3,
    dpus: int = 64,
    backend: str = "auto",
    seed: int = 0,
    dim: int = 64,
    pooling: float = 16.0,
    alpha: float = 1.05,
    max_rows: int = 50_000,
    row_format: str = "fp32",
    nr_tasklets: int = 16,
    strategy: str = "auto",
    model_dpus: int = 2560,
    network: str = "ethernet-100g",
    timeout_s: float = 600.0,
    progress=None,
) -> ClusterDemoResult:
    """Run the demo over ``hosts`` local processes and return what it measured and modeled."""
    say = progress or (lambda msg: None)
    config = dict(
        hosts=hosts,
        batch_size=batch_size,
        batches=batches,
        dpus=dpus,
        backend=backend,
        seed=seed,
        dim=dim,
        pooling=pooling,
        alpha=alpha,
        max_rows=max_rows,
        row_format=row_format,
        nr_tasklets=nr_tasklets,
        strategy=strategy,
        model_dpus=model_dpus,
        network=network,
    )
    tables, trace, plan = _setup(config)
    say(f"starting {hosts} host process(es) on 127.0.0.1 (gloo); plan: {plan.metadata.get('strategy')}")
    outcomes = run_local(hosts, _rank, config, timeout_s=timeout_s, collective_timeout_s=120)
    if not all(o.ok for o in outcomes):
        raise LocalRunError(outcomes)
    values = [o.value for o in outcomes]
    measured = {
        key: float(np.mean([max(v["phases"][b][key] for v in values) for b in range(batches)])) for _, key in PHASES
    }
    measured["total_s"] = float(sum(measured[k] for _, k in PHASES))
    crossed = float(np.mean([sum(v["phases"][b]["bytes_sent"] for v in values) for b in range(batches)]))

    say(f"modeling {hosts} server(s) of {model_dpus:,} DPUs on {network}")
    real = plan_cluster(
        tables,
        [HostSpec(model_dpus)] * hosts,
        loads=[float(pooling)] * len(tables),
        strategy=plan.metadata.get("strategy", "table_wise"),
        batch_size=batch_size,
    )
    idx, off, psw = trace.batch(0)
    est = estimate_batch(real, idx, off, batch_size, psw, network=network, nr_tasklets=nr_tasklets)
    return ClusterDemoResult(
        config=config,
        hosts=hosts,
        backend=values[0]["backend"],
        strategy=plan.metadata.get("strategy", "given"),
        plan_summary=str(plan),
        lookups_per_batch=float(trace.num_lookups / batches),
        measured_s=measured,
        bytes_between_hosts=crossed,
        max_abs_err=max(v["max_abs_err"] for v in values),
        passed=all(v["passed"] for v in values),
        modeled=est.to_dict(),
    )


def format_cluster_report(r: ClusterDemoResult) -> str:
    c = r.config
    lines = [
        f"updlrm demo --hosts {r.hosts}: 26 Criteo-Kaggle-like tables (rows capped at {c['max_rows']:,}), dim {c['dim']}, "
        f"{c['row_format']}",
        f"  workload  global batch {c['batch_size']:,} x {c['batches']} (split evenly over the hosts), pooling ~ "
        f"Poisson({c['pooling']:g}), Zipf alpha {c['alpha']:g}: {r.lookups_per_batch:,.0f} lookups per batch",
        f"  hosts     {r.hosts} local processes, gloo on 127.0.0.1, {c['dpus']} DPUs each on {r.backend}",
        "  " + r.plan_summary.replace("\n", "\n  "),
        "",
        f"  {'phase (slowest rank)':<24}{'measured here':>15}",
    ]
    for name, key in PHASES:
        lines.append(f"  {name:<24}{r.measured_s[key] * 1e3:>12.3f} ms")
    lines.append(f"  {'total':<24}{r.measured_s['total_s'] * 1e3:>12.3f} ms")
    lines.append(f"  bytes between hosts per batch: {r.bytes_between_hosts / 1e6:.2f} MB")
    m = r.modeled
    lines += [
        "",
        f"  model: {r.hosts} server(s) x {c['model_dpus']:,} DPUs on {m['network']}: "
        f"{m['total_s'] * 1e3:.3f} ms per batch = slowest host {max(m['host_s']) * 1e3:.3f} ms + network "
        f"{m['network_s'] * 1e3:.3f} ms ({(m['request_bytes'] + m['response_bytes']) / 1e6:.2f} MB crossing)",
        "",
        f"  max abs error vs torch: {r.max_abs_err:.3g} -> {'PASS' if r.passed else 'FAIL'}",
    ]
    return "\n".join(lines)


def scaling_table(
    *,
    hosts=(1, 2, 4, 8),
    nr_tables: int = 26,
    rows: int = 2_000_000,
    dim: int = 64,
    row_format: str = "int8",
    batch_size: int = 4096,
    pooling: float = 32.0,
    alpha: float = 1.05,
    model_dpus: int = 2560,
    network: str = "ethernet-100g",
    seed: int = 0,
) -> list[dict]:
    """Modeled batch time of one workload on 1..8 servers (each ``model_dpus`` DPUs), per strategy.

    >>> rows = scaling_table(hosts=(1, 2), nr_tables=2, rows=1000, dim=8, batch_size=64, model_dpus=64)
    >>> [r["hosts"] for r in rows]
    [1, 2]
    """
    from updlrm.partitioner.workloads import synthetic_trace
    from updlrm.specs import TableSpec

    tables = [TableSpec(f"t{i}", rows, dim, row_format=row_format) for i in range(nr_tables)]
    trace = synthetic_trace(tables, batch_size=batch_size, num_batches=1, pooling=pooling, alpha=alpha, seed=seed)
    idx, off, psw = trace.batch(0)
    out = []
    for h in hosts:
        row = {"hosts": h}
        for strategy in ("table_wise", "row_wise", "column_wise"):
            plan = plan_cluster(tables, [HostSpec(model_dpus)] * h, loads=[pooling] * nr_tables, strategy=strategy)
            est = estimate_batch(plan, idx, off, batch_size, psw, network=NETWORKS[network])
            row[strategy] = est.to_dict()
        out.append(row)
    return out


def torchrun_main(argv=None) -> int:
    """Entry point of one host under ``torchrun`` (``python -m updlrm.distributed.demo``).

    Every host runs the same command; torchrun sets ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT``. Each rank prints one JSON line with its result;
    the exit status is 1 if its output differs from torch.
    """
    import argparse
    import json

    from updlrm.distributed.context import ClusterContext

    parser = argparse.ArgumentParser(
        prog="python -m updlrm.distributed.demo",
        description="One host of `updlrm demo --hosts N`, started by torchrun.",
    )
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--dpus", type=int, default=64)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-rows", type=int, default=50_000)
    parser.add_argument("--row-format", default="fp32", choices=["fp32", "int32", "int8"])
    parser.add_argument("--strategy", default="auto", choices=["auto", "table_wise", "row_wise", "column_wise"])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a dead or hung host is named")
    args = parser.parse_args(argv)
    ctx = ClusterContext.from_env(timeout_s=args.timeout)
    config = dict(
        hosts=ctx.world_size,
        batch_size=args.batch_size,
        batches=args.batches,
        dpus=args.dpus,
        backend=args.backend,
        seed=0,
        dim=args.dim,
        pooling=16.0,
        alpha=1.05,
        max_rows=args.max_rows,
        row_format=args.row_format,
        nr_tasklets=16,
        strategy=args.strategy,
    )
    try:
        result = _rank(ctx, config)
    finally:
        ctx.close()
    phases = {k: float(np.mean([p[k] for p in result["phases"]])) for _, k in PHASES}
    line = json.dumps(
        {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "passed": result["passed"],
            "max_abs_err": result["max_abs_err"],
            "backend": result["backend"],
            "phases_s": phases,
        }
    )
    # One write of one line (< PIPE_BUF): the hosts share torchrun's stdout, and a
    # print() may reach the pipe in pieces that another host's line splits.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(torchrun_main())
