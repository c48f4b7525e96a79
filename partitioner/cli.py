"""``updlrm plan``: build, show and evaluate placement plans from the command line.

Errors (PlanError, TraceError, unreadable files, a missing optional dependency) reach
``updlrm.cli``, which prints them as one line (exit 1; usage errors exit 2).

Example::

    $ updlrm plan build --tables criteo --max-rows 100000 --synthetic --batch-size 1024 \\
          --dpus 256 -o plan.json
    $ updlrm plan show plan.json --png load.png
    $ updlrm plan evaluate plan.json --synthetic --seed 1
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from updlrm.hardware import DEFAULT_HARDWARE_PROFILE
from updlrm.perfmodel import PROFILES
from updlrm.plan import Plan
from updlrm.specs import TableSpec, Topology

_PROFILE = click.Choice(sorted(PROFILES))


def _load_tables(spec: str, dim: int, max_rows: int | None) -> list[TableSpec]:
    from updlrm.partitioner.workloads import criteo_like_tables

    if spec == "criteo":
        return criteo_like_tables(dim=dim, max_rows=max_rows)
    path = Path(spec)
    if not path.is_file():
        raise click.BadParameter(f"{spec}: neither 'criteo' nor an existing JSON file", param_hint="--tables")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"{spec}: not JSON ({e})", param_hint="--tables") from None
    entries = doc["tables"] if isinstance(doc, dict) and "tables" in doc else doc
    if not isinstance(entries, list) or not entries:
        raise click.BadParameter(
            f'{spec}: expected a list of table specs (or {{"tables": [...]}})', param_hint="--tables"
        )
    try:
        return [TableSpec.from_dict(e) for e in entries]
    except (TypeError, ValueError) as e:
        raise click.BadParameter(f"{spec}: {e}", param_hint="--tables") from None


def _trace_options(f):
    options = [
        click.option(
            "--trace",
            "trace_path",
            type=click.Path(exists=True, dir_okay=False),
            help="Trace file: .npz (ours), Meta dlrm_datasets .pt, or Criteo TSV.",
        ),
        click.option("--synthetic", is_flag=True, help="Generate a Zipf/co-occurrence trace instead."),
        click.option(
            "--batch-size", type=click.IntRange(1), default=1024, show_default=True, help="Bags per batch (synthetic)."
        ),
        click.option("--batches", type=click.IntRange(1), default=8, show_default=True, help="Batches (synthetic)."),
        click.option(
            "--pooling",
            type=click.FloatRange(0),
            default=32,
            show_default=True,
            help="Mean lookups per bag (synthetic).",
        ),
        click.option(
            "--alpha", type=click.FloatRange(0), default=1.05, show_default=True, help="Zipf exponent (synthetic)."
        ),
        click.option(
            "--co-occurrence",
            type=click.FloatRange(0, 1),
            default=0.5,
            show_default=True,
            help="Share of lookups drawn from a bag's topic group (synthetic).",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed (synthetic trace and plan)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _get_trace(tables, trace_path, synthetic, batch_size, batches, pooling, alpha, co_occurrence, seed):
    from updlrm.partitioner.workloads import load_trace, synthetic_trace

    if bool(trace_path) == bool(synthetic):
        raise click.UsageError("give exactly one of --trace FILE or --synthetic")
    if trace_path:
        return load_trace(trace_path, tables=tables)
    return synthetic_trace(
        tables,
        batch_size=batch_size,
        num_batches=batches,
        pooling=pooling,
        alpha=alpha,
        co_occurrence=co_occurrence,
        seed=seed,
    )


def _check_output_dirs(*options: tuple[str, str | None]) -> None:
    """Refuse an output path whose directory does not exist before any work is done."""
    for option, path in options:
        if path and not Path(path).resolve().parent.is_dir():
            raise click.BadParameter(f"{path}: its directory does not exist", param_hint=option)


@click.group("plan")
def plan_group() -> None:
    """Build, show and evaluate placement plans."""


@plan_group.command("build")
@click.option("--tables", "tables_spec", required=True, help="'criteo' or a JSON file of table specs.")
@click.option(
    "--dim", type=click.IntRange(1), default=64, show_default=True, help="Embedding dim (with --tables criteo)."
)
@click.option("--max-rows", type=click.IntRange(1), default=None, help="Cap each table's rows (with --tables criteo).")
@_trace_options
@click.option("--dpus", type=click.IntRange(1), required=True, help="Number of DPUs.")
@click.option(
    "--profile",
    default=DEFAULT_HARDWARE_PROFILE,
    show_default=True,
    type=_PROFILE,
    help="Hardware profile (perfmodel).",
)
@click.option("--cache", type=click.Choice(["auto", "replicate", "host", "none"]), default="auto", show_default=True)
@click.option("--graph", type=click.Choice(["auto", "hypergraph", "graph", "none"]), default="auto", show_default=True)
@click.option("--host-cache-mb", type=click.FloatRange(0), default=256, show_default=True, help="Host cache budget.")
@click.option(
    "--host-cpu",
    type=click.Choice(["auto", "off"]),
    default="auto",
    show_default=True,
    help="auto: tables may go whole to the host CPU (cost calibrated on this machine, cached) and the "
    "plan never models slower than the CPU alone; off: DPUs and the host cache only.",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of the trace (last whole batches) the plan is not built from; the summary shows the estimate "
    "on it next to the in-sample one. 0: build from all of it, no held-out estimate.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Plan JSON to write.")
@click.option("--save-trace", type=click.Path(dir_okay=False), default=None, help="Also save the trace (.npz).")
@click.option("--quiet", is_flag=True, help="No progress bar, no summary.")
def build_command(
    tables_spec,
    dim,
    max_rows,
    trace_path,
    synthetic,
    batch_size,
    batches,
    pooling,
    alpha,
    co_occurrence,
    seed,
    dpus,
    profile,
    cache,
    graph,
    host_cache_mb,
    host_cpu,
    holdout,
    output,
    save_trace,
    quiet,
):
    """Build a workload-aware plan and write it (JSON + .npz beside it)."""
    from updlrm.partitioner.placement import build_plan
    from updlrm.partitioner.summary import plan_summary

    if graph == "hypergraph":
        from updlrm.partitioner.graphpart import require_mtkahypar

        require_mtkahypar()  # before the work: MissingDependency says what to install
    _check_output_dirs(("--output", output), ("--save-trace", save_trace))
    tables = _load_tables(tables_spec, dim, max_rows)
    trace = _get_trace(tables, trace_path, synthetic, batch_size, batches, pooling, alpha, co_occurrence, seed)
    if save_trace:
        trace.save(save_trace)
    plan = build_plan(
        tables,
        trace,
        Topology(dpus),
        profile=profile,
        cache=cache,
        graph=graph,
        host_cache_bytes=int(host_cache_mb * 1e6),
        seed=seed,
        host_cpu=host_cpu,
        holdout=holdout,
        progress=not quiet,
    )
    path = plan.save(output)
    if not quiet:
        click.echo(plan_summary(plan))
    click.echo(f"wrote {path} and {path.with_suffix('.npz')}")


@plan_group.command("show")
@click.argument("plan_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--png", type=click.Path(dir_okay=False), default=None, help="Write a load-per-DPU plot here.")
def show_command(plan_path, png):
    """Print a plan's summary (and optionally plot its load per DPU)."""
    from updlrm.partitioner.summary import plan_summary, plot_load

    _check_output_dirs(("--png", png))
    plan = Plan.load(plan_path)
    click.echo(plan_summary(plan))
    if png:
        if plan.expected_load is None:
            raise click.ClickException("this plan has no expected load to plot (use 'plan evaluate --png')")
        click.echo(f"wrote {plot_load(plan, png)}")


@plan_group.command("evaluate")
@click.argument("plan_path", type=click.Path(exists=True, dir_okay=False))
@_trace_options
@click.option(
    "--profile",
    default=DEFAULT_HARDWARE_PROFILE,
    show_default=True,
    type=_PROFILE,
    help="Hardware profile (perfmodel).",
)
@click.option("--png", type=click.Path(dir_okay=False), default=None, help="Write a load-per-DPU plot here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@click.option(
    "--measure-host/--model-host",
    default=None,
    help="Time the host's route+pack, host-cache sum and merge on this machine (a dry engine), or take "
    "the perfmodel's (which has no route+pack term: 0). Default: as the plan was built (measured when "
    "`plan build` measured them).",
)
def evaluate_command(plan_path, profile, png, json_path, measure_host, **trace_options):
    """Route a trace (any, not only the one the plan was built from) through a plan and estimate
    it as `plan build` does: on the trace it was built from, the same estimate."""
    from updlrm.partitioner.host_phases import estimate_plan, measured_at_build
    from updlrm.partitioner.summary import plan_summary, plot_load

    _check_output_dirs(("--png", png), ("--json", json_path))
    plan = Plan.load(plan_path)
    trace = _get_trace(plan.tables, **trace_options)
    measure = measured_at_build(plan) if measure_host is None else measure_host
    nr_tasklets = int((plan.metadata or {}).get("options", {}).get("nr_tasklets", 16))
    report = estimate_plan(plan, trace, profile, nr_tasklets=nr_tasklets, measure_host=measure)
    click.echo(plan_summary(plan, report))
    if measure and plan.shards:
        click.echo(
            "host route+pack, host-cache sum and merge in the modeled batch: measured on this machine "
            "(--model-host takes the perfmodel's)"
        )
    if trace.hash() != plan.workload_hash:
        click.echo(f"(trace {trace.hash()} is not the one the plan was built for, {plan.workload_hash})")
    if png:
        click.echo(f"wrote {plot_load(plan, png, report)}")
    if json_path:
        doc = report.summary_dict()
        doc["load_per_dpu"] = [float(x) for x in report.load_per_dpu]
        doc["fanout_per_table"] = report.fanout_per_table
        doc["host_phases"] = "measured" if measure and plan.shards else "modeled"
        Path(json_path).write_text(json.dumps(doc, indent=1))
        click.echo(f"wrote {json_path}")
