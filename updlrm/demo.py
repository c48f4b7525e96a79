"""``updlrm demo``: a Criteo-like embedding layer on the default backend, checked against torch.

The workload: the 26 categorical tables of the Criteo Kaggle dataset (cardinalities from
the reference DLRM preprocessing, see ``updlrm.partitioner.workloads.CRITEO_KAGGLE_CARDINALITIES``),
each capped at ``--max-rows`` rows to keep memory small, with Zipf-skewed lookups (FBGEMM's
alpha convention) and Poisson bag sizes around ``--pooling``. The tables get the default
plan (uniform row-wise) on ``--dpus`` DPUs, or ``--plan FILE``, and every batch runs through
:class:`~updlrm.tbe.TableBatchedEmbeddingBags`. The output of each batch is compared with
``torch.nn.functional.embedding_bag`` on the same weights; the report shows the measured
per-phase host times and bytes moved, the modeled time of the same batch on UPMEM
hardware (:mod:`updlrm.perfmodel`), the max abs error and PASS/FAIL (exit status 1 on FAIL).

Example:
    >>> from click.testing import CliRunner
    >>> r = CliRunner().invoke(demo_command, ["--batch-size", "8", "--dpus", "2", "--max-rows", "100",
    ...                                        "--dim", "8", "--batches", "1", "--backend", "emulator"])
    >>> r.exit_code, "PASS" in r.output
    (0, True)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import click
import numpy as np

from updlrm.abi import MAX_TASKLETS
from updlrm.backends import BACKEND_CHOICES, resolve_backend
from updlrm.batch_loop import (
    FP32_ATOL,
    FP32_RTOL,
    baseline_for,
    baseline_name,
    format_verdict,
    mean_timing,
    run_batches,
)
from updlrm.perfmodel import DEFAULT_HARDWARE_PROFILE, PROFILES
from updlrm.profile import PHASES, format_phase_table, format_traffic
from updlrm.profile import format_bytes as _fmt_bytes
from updlrm.profile import format_seconds as _fmt_s


@dataclass
class DemoResult:
    """What one demo run measured; ``to_dict()`` is the ``--json`` output.

    ``measured_s`` and ``modeled_s`` are keyed by ``BatchStats`` field (``validate_s``
    is the API's validation, ``end_to_end_s`` the whole ``forward``); a phase the model
    does not cover is None in ``modeled_s``.
    """

    config: dict
    backend: str
    backend_reason: str
    setup_s: float
    plan: dict
    batches: int
    lookups_per_batch: float
    measured_s: dict = field(default_factory=dict)
    modeled_s: dict = field(default_factory=dict)
    profile: str = ""
    bytes_per_batch: dict = field(default_factory=dict)
    dpu_load: dict = field(default_factory=dict)
    host_cache_hits: float = 0.0
    torch_s: float = 0.0
    torch_timing: dict = field(default_factory=dict)
    baseline: str = ""
    wall_s: float = 0.0
    max_abs_err: float = 0.0
    worst_excess: float = 0.0
    passed: bool = False

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["result"] = "PASS" if self.passed else "FAIL"
        return d


def _measured(stats, key: str) -> float:
    return float(stats.extra[key]) if key in stats.extra else float(getattr(stats, key))


def run_demo(
    *,
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
    profile: str = DEFAULT_HARDWARE_PROFILE,
    plan: str | None = None,
    progress=None,
) -> DemoResult:
    """Run the demo and return its measurements (the CLI prints them).

    >>> r = run_demo(batch_size=4, batches=1, dpus=2, backend="emulator", dim=4, max_rows=50)
    >>> r.passed, r.backend
    (True, 'emulator')
    """
    import torch

    from updlrm.host.engine import DpuAllocationError
    from updlrm.partitioner.workloads import criteo_like_tables, synthetic_trace
    from updlrm.perfmodel import get_profile, model_batch
    from updlrm.tbe import TableBatchedEmbeddingBags

    say = progress or (lambda msg: None)
    config = dict(
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
        profile=profile,
        plan=plan,
    )
    tables = criteo_like_tables(dim=dim, max_rows=max_rows, row_format=row_format)
    say(f"generating {batches} batch(es) of {batch_size} samples over {len(tables)} tables")
    trace = synthetic_trace(tables, batch_size=batch_size, num_batches=batches, pooling=pooling, alpha=alpha, seed=seed)

    say("building the plan and loading the tables into DPU memory")
    start = time.perf_counter()
    try:
        tbe = TableBatchedEmbeddingBags(
            tables, plan=plan, backend=backend, nr_dpus=None if plan else dpus, seed=seed, nr_tasklets=nr_tasklets
        )
    except DpuAllocationError as e:
        raise DpuAllocationError(f"{e}; or ask for fewer with --dpus") from None
    setup_s = time.perf_counter() - start
    with tbe:
        mram = tbe.plan.mram_bytes_per_dpu()
        plan_info = {
            "builder": tbe.plan.metadata.get("builder", "given"),
            "nr_dpus": tbe.plan.topology.nr_dpus,
            "nr_ranks": tbe.plan.topology.nr_ranks,
            "table_bytes": int(mram.sum()),
            "max_bytes_per_dpu": int(mram.max()),
        }
        weights = [torch.from_numpy(tbe.weights(t)) for t in range(len(tables))]
        hw = get_profile(profile, nr_dpus=tbe.plan.topology.nr_dpus)
        stats_list, modeled, torch_times, wall_times = [], [], [], []
        max_err, worst_excess = 0.0, -np.inf
        for run in run_batches(tbe, trace, weights, say, baseline_for(tbe)):
            wall_times.append(run.wall_s)
            stats_list.append(run.stats)
            modeled.append(model_batch(run.stats.work(), hw))
            torch_times.append(run.torch)
            err = np.abs(run.output - run.reference)
            max_err = max(max_err, float(err.max(initial=0.0)))
            ref = run.reference
            worst_excess = max(worst_excess, float((err - (FP32_ATOL + FP32_RTOL * np.abs(ref))).max(initial=-np.inf)))
        backend_name, reason = tbe.backend, tbe.backend_reason

    def mean_of(fn) -> float:
        return float(np.mean([fn(s) for s in stats_list]))

    lookups = np.mean([np.asarray(s.lookups, dtype=np.float64) for s in stats_list], axis=0)
    measured = {key: mean_of(lambda s, k=key: _measured(s, k)) for _, key, _ in PHASES}
    measured["end_to_end_s"] = float(np.mean(wall_times))
    modeled_s = {
        key: float(np.mean([sum(m.as_dict()[f] or 0.0 for f in fields) for m in modeled])) if fields else None
        for _, key, fields in PHASES
    }
    modeled_s["end_to_end_s"] = float(np.mean([m.total_s for m in modeled]))
    return DemoResult(
        config=config,
        backend=backend_name,
        backend_reason=reason,
        setup_s=setup_s,
        plan=plan_info,
        batches=batches,
        lookups_per_batch=float(trace.num_lookups / batches),
        measured_s=measured,
        modeled_s=modeled_s,
        profile=hw.name,
        bytes_per_batch={
            "cpu_to_dpu": mean_of(lambda s: s.bytes_to_dpu.sum()),
            "dpu_to_cpu": mean_of(lambda s: s.bytes_from_dpu.sum()),
            "cpu_to_dpu_padded": mean_of(lambda s: s.padded_bytes_to_dpu.sum()),
            "dpu_to_cpu_padded": mean_of(lambda s: s.padded_bytes_from_dpu.sum()),
            "cpu_to_dpu_max_per_dpu": mean_of(lambda s: s.bytes_to_dpu.max()),
            "dpu_to_cpu_max_per_dpu": mean_of(lambda s: s.bytes_from_dpu.max()),
        },
        dpu_load={
            "mean_lookups": float(lookups.mean()),
            "max_lookups": float(lookups.max()),
            "imbalance": float(lookups.max() / lookups.mean()) if lookups.mean() > 0 else 1.0,
            "launches_per_batch": mean_of(lambda s: s.nr_launches),
        },
        host_cache_hits=mean_of(lambda s: s.host_cache_hits),
        torch_s=mean_timing(torch_times).best,
        torch_timing={**mean_timing(torch_times).to_dict(), "spread": mean_timing(torch_times).spread},
        baseline=baseline_name(tables),
        wall_s=float(np.mean(wall_times)),
        max_abs_err=max_err,
        worst_excess=worst_excess,
        passed=bool(worst_excess <= 0),
    )


def format_report(r: DemoResult) -> str:
    """The demo's text report (see ``updlrm demo --help``)."""
    c = r.config
    lines = [
        f"updlrm demo: 26 Criteo-Kaggle-like tables (rows capped at {c['max_rows']:,}), dim {c['dim']}, {c['row_format']}",
        f"  workload  batch {c['batch_size']:,} x {r.batches} batch(es), pooling ~ Poisson({c['pooling']:g}), "
        f"Zipf alpha {c['alpha']:g}, seed {c['seed']}: {r.lookups_per_batch:,.0f} lookups per batch",
        f"  backend   {r.backend} ({r.backend_reason})",
        f"  plan      {r.plan['builder']} over {r.plan['nr_dpus']} DPUs ({r.plan['nr_ranks']} rank(s)), "
        f"{_fmt_bytes(r.plan['table_bytes'])} of rows, at most {_fmt_bytes(r.plan['max_bytes_per_dpu'])} per DPU",
        f"  setup     {_fmt_s(r.setup_s).strip()} (weights, plan, tables into DPU memory)",
        "",
    ]
    lines += format_phase_table(r.measured_s, r.modeled_s)
    t = r.torch_timing
    median = t["median_s"] / t["best_s"] - 1 if t.get("best_s") else 0.0
    lines.append(
        f"  {'CPU baseline (torch)':<24}{_fmt_s(r.torch_s):>15}   best of {t.get('runs', 0)}, median "
        f"{median:+.1%}, worst {t.get('spread', 0.0):+.1%}: {r.baseline}"
    )
    lines.append(f"  (*overlaps the DPU phases. Model: profile {r.profile} with this plan's {r.plan['nr_dpus']} DPUs,")
    lines.append("   for the same per-DPU work; 'measured here' is this machine on the chosen backend.)")
    lines += [""] + format_traffic(r.bytes_per_batch, r.dpu_load, r.host_cache_hits)
    lines += ["", format_verdict(r.max_abs_err, r.passed)]
    return "\n".join(lines)


@click.command("demo")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1), help="Samples per batch.")
@click.option("--batches", default=3, show_default=True, type=click.IntRange(1), help="Batches to run.")
@click.option("--dpus", default=64, show_default=True, type=click.IntRange(1), help="DPUs of the default plan.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(BACKEND_CHOICES), help="Where to run.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of weights and workload.")
@click.option("--dim", default=64, show_default=True, type=click.IntRange(1), help="Embedding dimension.")
@click.option("--pooling", default=16.0, show_default=True, type=click.FloatRange(0), help="Mean lookups per bag.")
@click.option(
    "--alpha", default=1.05, show_default=True, type=click.FloatRange(0), help="Zipf exponent of row popularity."
)
@click.option("--max-rows", default=50_000, show_default=True, type=click.IntRange(1), help="Cap on rows per table.")
@click.option(
    "--row-format", default="fp32", show_default=True, type=click.Choice(["fp32", "int32", "int8"]), help="Row storage."
)
@click.option(
    "--tasklets",
    "nr_tasklets",
    default=16,
    show_default=True,
    type=click.IntRange(1, MAX_TASKLETS),
    help="Tasklets per DPU.",
)
@click.option(
    "--profile",
    default=DEFAULT_HARDWARE_PROFILE,
    show_default=True,
    type=click.Choice(sorted(PROFILES)),
    help="Hardware profile of the modeled times.",
)
@click.option(
    "--plan",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A saved plan for the same tables (e.g. from `updlrm plan`) instead of the default row-wise plan.",
)
@click.option(
    "--hosts",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Run over N hosts: N local processes on torch.distributed (gloo), tables split between them.",
)
@click.option(
    "--host-strategy",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "table_wise", "row_wise", "column_wise"]),
    help="With --hosts: how tables are split between hosts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
def demo_command(as_json: bool, hosts: int, host_strategy: str, **options) -> None:
    """Run a Criteo-like embedding layer on the default backend and check it against torch."""
    if hosts > 1 and options["plan"]:
        raise click.UsageError("--plan is a single-server plan; with --hosts the tables are split by --host-strategy")
    # Arguments that only fail deep inside the run are checked before any work: an
    # unreadable or foreign plan (PlanError), an unavailable backend (BackendUnavailable).
    if options["plan"]:
        from updlrm.partitioner.workloads import criteo_like_tables
        from updlrm.plan import Plan

        Plan.load(
            options["plan"],
            tables=criteo_like_tables(
                dim=options["dim"], max_rows=options["max_rows"], row_format=options["row_format"]
            ),
        )
    resolve_backend(options["backend"])
    progress = None if as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    if hosts > 1:
        _cluster_demo(as_json, hosts, host_strategy, progress, options)
        return
    result = run_demo(progress=progress, **options)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_report(result))
    if not result.passed:
        raise SystemExit(1)


def _cluster_demo(as_json: bool, hosts: int, strategy: str, progress, options: dict) -> None:
    from updlrm.distributed.demo import format_cluster_report, run_cluster_demo
    from updlrm.distributed.launch import LocalRunError

    options = {k: v for k, v in options.items() if k not in ("plan", "profile")}
    try:
        result = run_cluster_demo(hosts=hosts, strategy=strategy, progress=progress, **options)
    except LocalRunError as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_cluster_report(result))
    if not result.passed:
        raise SystemExit(1)
