"""``updlrm bench``: one workload on the backend and on the like-for-like torch CPU baseline, each phase modeled on UPMEM.

The application half of the batch profiles (:mod:`updlrm.profile` is the library):

* the torch reference (:func:`updlrm.batch_loop.torch_embedding_bags` on the float32 values, checked with
  :func:`~updlrm.batch_loop.check_close` and torch's float32 ``assert_close`` tolerances) and the timed CPU
  baseline, like for like per row format (:class:`updlrm.baselines.CpuBaseline`: int8
  tables on torch's quantized byte-rowwise bag over the same quantized rows), best of
  N >= 5 with the spread kept (:class:`~updlrm.baselines.Timing`); a speedup gets a
  verdict only outside the spread (:class:`~updlrm.baselines.Comparison`);
* :func:`~updlrm.batch_loop.run_batches`, the batch loop ``updlrm bench`` and ``updlrm demo`` share: every
  batch of a trace through a module, timed, next to torch's output and the baseline's timing;
* :func:`run_bench` / :func:`format_bench` / :func:`bench_command`, and
  :func:`bench_plan`, the plan ``updlrm bench`` and the sweeps use.

Example:
    >>> r = run_bench(tables=2, rows=100, dim=8, batch_size=16, pooling=4, dpus=4, batches=1)
    >>> r.passed, r.nr_dpus
    (True, 4)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from updlrm import abi, perfmodel
from updlrm.baselines import Comparison, Timing
from updlrm.batch_loop import baseline_for, baseline_name, check_close, format_verdict, mean_timing, run_batches
from updlrm.partitioner.batch_work import derive_work
from updlrm.partitioner.routing import SliceRouter
from updlrm.perfmodel import DEFAULT_HARDWARE_PROFILE
from updlrm.plan import Plan, uniform_plan
from updlrm.profile import (
    PHASES,
    format_phase_table,
    format_seconds,
    format_traffic,
    profile_batch,
    profile_work,
    work_mismatch,
)
from updlrm.specs import RowFormat, TableSpec, Topology

__all__ = [
    "bench_plan",
    "BenchResult",
    "end_to_end_estimate",
    "run_bench",
    "format_bench",
    "bench_command",
]


def bench_plan(tables: list[TableSpec], nr_dpus: int) -> Plan:
    """The plan ``updlrm bench`` and the sweeps use for ``nr_dpus`` DPUs.

    Row-wise, each table cut into equal row blocks over its share ``nr_dpus // T`` of
    the DPUs (the API's default plan): a bag's partial sums come back from few DPUs.

    >>> p = bench_plan([TableSpec("a", 100, 8), TableSpec("b", 100, 8)], 4)
    >>> sorted({(s.table, s.dpu) for s in p.shards})
    [(0, 0), (0, 1), (1, 2), (1, 3)]
    """
    return uniform_plan(
        list(tables), Topology(nr_dpus=int(nr_dpus)), "row_wise", dpus_per_table=max(1, int(nr_dpus) // len(tables))
    )


@dataclass
class BenchResult:
    """What one ``updlrm bench`` run measured and modeled (means per batch); ``to_dict()`` is ``--json``.

    ``emulated`` is the DPU count the backend ran, ``nr_dpus`` the count modeled; when
    they differ the modeled work comes from :func:`derive_work` on the plan for
    ``nr_dpus`` DPUs. ``estimate_s`` is the end-to-end hardware estimate: host phases
    measured here (validation, routing, merge scaled to the modeled partial sums)
    plus the modeled DPU side.
    """

    config: dict
    backend: str
    emulated: int
    nr_dpus: int
    profile: str
    derived: bool
    derivation_checked: bool
    batches: int
    lookups_per_batch: float
    torch_s: float
    torch_threads: int
    wall_s: float
    measured_s: dict
    modeled_s: dict
    estimate_s: float
    bytes_per_batch: dict
    dpu_load: dict
    host_cache_hits: float
    max_abs_err: float
    passed: bool
    baseline: str = ""
    torch_timing: Timing | None = None
    host_model_s: float | None = None
    host_model: str = ""

    @property
    def comparison(self) -> Comparison:
        """The baseline against the modeled hardware batch latency."""
        return Comparison(self._cpu(), self.modeled_s["total_s"])

    @property
    def comparison_estimate(self) -> Comparison:
        """The baseline against the end-to-end estimate."""
        return Comparison(self._cpu(), self.estimate_s)

    def _cpu(self) -> Timing:
        return self.torch_timing if self.torch_timing is not None else Timing((self.torch_s,))

    @property
    def speedup(self) -> float:
        """Baseline CPU time over the modeled hardware batch latency (> 1: the DPUs win)."""
        return self.comparison.ratio

    @property
    def speedup_estimate(self) -> float:
        """Baseline CPU time over the end-to-end estimate (host work measured here + modeled DPU side)."""
        return self.comparison_estimate.ratio

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        cpu = self._cpu()
        d["torch_timing"] = {**cpu.to_dict(), "spread": cpu.spread}
        for key, comp in (("speedup", self.comparison), ("speedup_estimate", self.comparison_estimate)):
            d[key] = comp.ratio
            d[f"{key}_range"] = list(comp.ratio_range)
            d[f"{key}_verdict"] = comp.verdict
        d["result"] = "PASS" if self.passed else "FAIL"
        return d


def _tables(nr_tables: int, rows: int, dim: int, row_format: str) -> list[TableSpec]:
    return [TableSpec(f"t{i}", int(rows), int(dim), row_format=RowFormat(row_format)) for i in range(nr_tables)]


def end_to_end_estimate(modeled: perfmodel.PhaseTimes, measured_s: dict, merge_scale: float = 1.0) -> float:
    """Hardware batch latency with the host's own work measured here instead of modeled.

    ``validate + route + max(host_cache, DPU side) + merge * merge_scale``: validation,
    routing/packing and the merge are host CPU work that a UPMEM server's host does the
    same way (``merge_scale`` scales the merge to another DPU count's partial sums);
    the DPU side (push, launch, kernel, pull) is the model's.

    >>> t = perfmodel.PhaseTimes(1e-3, 0, 2e-3, 1e-3, 5e-4, 0, np.zeros(1))
    >>> round(end_to_end_estimate(t, {"validate_s": 1e-4, "route_s": 2e-4, "merge_s": 3e-4, "host_cache_s": 0}), 6)
    0.0046
    """
    return float(
        measured_s.get("validate_s", 0.0)
        + measured_s.get("route_s", 0.0)
        + max(measured_s.get("host_cache_s", 0.0), modeled.dpu_s)
        + measured_s.get("merge_s", 0.0) * merge_scale
    )


def run_bench(
    *,
    tables: int = 8,
    rows: int = 100_000,
    dim: int = 64,
    batch_size: int = 1024,
    pooling: float = 32,
    alpha: float = 1.05,
    row_format: str = "fp32",
    dpus: int = 64,
    emulate_dpus: int | None = None,
    profile: str = DEFAULT_HARDWARE_PROFILE,
    batches: int = 3,
    bag_sizes: str = "fixed",
    weighted: bool = False,
    nr_tasklets: int = 16,
    seed: int = 0,
    backend: str = "emulator",
    progress=None,
) -> BenchResult:
    """Run a synthetic workload on the backend, check it against torch, time torch, model the hardware.

    ``dpus`` is the modeled DPU count; the backend runs ``emulate_dpus`` (default
    ``min(dpus, 256)``) and, when fewer, the per-DPU work for ``dpus`` is derived from
    the plan's routing (:func:`derive_work`), itself checked against the engine's
    counters on the DPUs that did run.

    >>> r = run_bench(tables=2, rows=100, dim=8, batch_size=16, pooling=4, dpus=4, batches=1)
    >>> r.passed, r.derived, r.derivation_checked, r.nr_dpus
    (True, False, True, 4)
    """
    import torch

    from updlrm.partitioner.workloads import synthetic_trace
    from updlrm.tbe import TableBatchedEmbeddingBags

    say = progress or (lambda msg: None)
    emulate = int(emulate_dpus) if emulate_dpus is not None else min(int(dpus), 256)
    if emulate < 1 or dpus < 1:
        raise ValueError("dpus and emulate_dpus must be >= 1")
    if emulate > dpus:
        raise ValueError(f"emulate_dpus ({emulate}) cannot exceed the modeled dpus ({dpus})")
    config = dict(
        tables=tables,
        rows=rows,
        dim=dim,
        batch_size=batch_size,
        pooling=pooling,
        alpha=alpha,
        row_format=row_format,
        dpus=dpus,
        emulate_dpus=emulate,
        profile=profile,
        batches=batches,
        bag_sizes=bag_sizes,
        weighted=weighted,
        nr_tasklets=nr_tasklets,
        seed=seed,
        backend=backend,
    )
    specs = _tables(tables, rows, dim, row_format)
    say(f"generating {batches} batch(es) of {batch_size} samples over {tables} tables")
    trace = synthetic_trace(
        specs,
        batch_size=batch_size,
        num_batches=batches,
        pooling=pooling,
        alpha=alpha,
        seed=seed,
        pooling_distribution=bag_sizes,
        weighted=weighted,
    )
    run_plan = bench_plan(specs, emulate)
    model_plan = run_plan if emulate == dpus else bench_plan(specs, dpus)
    hw = perfmodel.get_profile(profile, nr_dpus=dpus)
    say(f"loading the tables into {emulate} DPUs ({backend})")
    tbe = TableBatchedEmbeddingBags(specs, plan=run_plan, backend=backend, seed=seed, nr_tasklets=nr_tasklets)
    with tbe:
        weights = [torch.from_numpy(tbe.weights(t)) for t in range(len(specs))]
        baseline = baseline_for(tbe)
        measured, modeled, estimates, wall, torch_times, checked = [], [], [], [], [], True
        bytes_rows, loads, hits = [], [], []
        max_err, passed = 0.0, True
        run_cache: dict[tuple[int, int], SliceRouter] = {}
        model_cache: dict[tuple[int, int], SliceRouter] = {}
        for run in run_batches(tbe, trace, weights, say, baseline):
            idx, off, psw, stats = run.indices, run.offsets, run.per_sample_weights, run.stats
            wall.append(run.wall_s)
            here = profile_batch(stats, hw)
            if stats.nr_launches == 1:
                checked &= not work_mismatch(
                    derive_work(run_plan, idx, off, psw, nr_tasklets=nr_tasklets, router_cache=run_cache), stats.work()
                )
            else:
                checked = False
            if model_plan is run_plan:
                target = here
            else:
                target = profile_work(
                    derive_work(model_plan, idx, off, psw, nr_tasklets=nr_tasklets, router_cache=model_cache), hw
                )
            merge_scale = (
                target.work.host_merge_elems / here.work.host_merge_elems if here.work.host_merge_elems else 1.0
            )
            measured.append(here.measured_s)
            modeled.append(target)
            estimates.append(end_to_end_estimate(target.modeled, here.measured_s, merge_scale))
            bytes_rows.append(
                (target.bytes_to_dpu, target.bytes_from_dpu, target.padded_bytes_to_dpu, target.padded_bytes_from_dpu)
            )
            loads.append(target.work.lookups)
            hits.append(target.host_cache_hits)
            torch_times.append(run.torch)
            err, ok = check_close(run.output, run.reference)
            max_err, passed = max(max_err, err), passed and ok
        backend_name = tbe.backend

    mean_measured = {k: float(np.mean([m[k] for m in measured])) for k in measured[0]}
    mean_modeled = {
        key: (float(np.mean([p.modeled_phase(fields) for p in modeled])) if fields else None)
        for _, key, fields in PHASES
    }
    mean_modeled["total_s"] = float(np.mean([p.modeled.total_s for p in modeled]))
    mean_modeled["kernel_s"] = float(np.mean([p.modeled.kernel_s for p in modeled]))
    b = np.mean(np.array(bytes_rows, dtype=np.float64), axis=0)
    load = np.mean(loads, axis=0)
    return BenchResult(
        config=config,
        backend=backend_name,
        emulated=emulate,
        nr_dpus=int(dpus),
        profile=hw.name,
        derived=model_plan is not run_plan,
        derivation_checked=bool(checked),
        batches=batches,
        lookups_per_batch=float(trace.num_lookups / batches),
        torch_s=mean_timing(torch_times).best,
        torch_threads=torch.get_num_threads(),
        wall_s=float(np.mean(wall)),
        measured_s=mean_measured,
        modeled_s=mean_modeled,
        estimate_s=float(np.mean(estimates)),
        bytes_per_batch={"cpu_to_dpu": b[0], "dpu_to_cpu": b[1], "cpu_to_dpu_padded": b[2], "dpu_to_cpu_padded": b[3]},
        dpu_load={
            "mean_lookups": float(load.mean()),
            "max_lookups": float(load.max()),
            "imbalance": float(load.max() / load.mean()) if load.mean() > 0 else 1.0,
        },
        host_cache_hits=float(np.mean(hits)),
        max_abs_err=max_err,
        passed=passed,
        baseline=baseline_name(specs),
        torch_timing=mean_timing(torch_times),
        host_model_s=_host_model_seconds(specs, trace),
        host_model=_host_model().describe(),
    )


def _host_model():
    from updlrm.partitioner.host_cost import calibrate

    return calibrate()


def _host_model_seconds(specs: list[TableSpec], trace: Any) -> float:
    """What the planner's host cost model (calibrated here, cached) predicts for the baseline's batch."""
    model = _host_model()
    total = 0.0
    for t, spec in enumerate(specs):
        rows = np.asarray(trace.table_lookups(t)[0])
        total += model.seconds(spec, rows.size / trace.num_batches, np.unique(rows).size * spec.row_bytes())
    return total


def format_bench(r: BenchResult) -> str:
    """The text report of ``updlrm bench``."""
    c = r.config
    derived = (
        f"per-DPU work for {r.nr_dpus} DPUs derived from the plan's routing"
        if r.derived
        else "per-DPU work as the engine counted it"
    )
    check = "matches the engine's counters" if r.derivation_checked else "NOT checked against the engine"
    lines = [
        f"updlrm bench: {c['tables']} tables x {c['rows']:,} rows, dim {c['dim']}, {c['row_format']}; "
        f"batch {c['batch_size']:,}, pooling {c['pooling']:g} ({c['bag_sizes']}), Zipf alpha {c['alpha']:g}, "
        f"{r.batches} batch(es), {r.lookups_per_batch:,.0f} lookups per batch",
        f"  ran       {r.backend} on {r.emulated} DPUs (row-wise, {max(1, r.emulated // c['tables'])} DPUs per table)",
        f"  modeled   {r.profile} with {r.nr_dpus} DPUs: {derived} (derivation {check})",
        "",
    ]
    measured = dict(r.measured_s)
    measured["total_s"] = r.wall_s
    lines += format_phase_table(
        measured,
        r.modeled_s,
        measured_label=f"{r.backend} here ({r.emulated})",
        modeled_label=f"modeled UPMEM ({r.nr_dpus})",
    )
    lines += [
        f"  {'  of which DPU kernel':<24}{'':>{max(len(r.backend) + len(str(r.emulated)) + 9, 13) + 2}}"
        f"{format_seconds(r.modeled_s['kernel_s']):>{max(len(f'modeled UPMEM ({r.nr_dpus})'), 16) + 2}}",
        "  (*overlaps the DPU phases; 'total' measured is the whole forward() on this machine)",
        "",
        f"  CPU baseline: {r.baseline} (best of {r.torch_threads} and 1 thread(s), same run)",
        f"    {r._cpu()}",
        *(
            [
                f"    the planner's host cost model predicts {format_seconds(r.host_model_s).strip()} for it "
                f"({r.host_model})"
            ]
            if r.host_model_s is not None
            else []
        ),
        f"  modeled UPMEM batch latency (perfmodel)          {format_seconds(r.modeled_s['total_s']).strip()}"
        f"   -> speedup {r.comparison}",
        f"  end-to-end estimate (host work measured here)    {format_seconds(r.estimate_s).strip()}"
        f"   -> speedup {r.comparison_estimate}",
        "  (a verdict only when the ratio's range over the baseline's best and median lies on one side of 1)",
        "",
    ]
    lines += format_traffic(r.bytes_per_batch, r.dpu_load, r.host_cache_hits, f"bytes per batch ({r.nr_dpus} DPUs)")
    lines += ["", format_verdict(r.max_abs_err, r.passed)]
    return "\n".join(lines)


@click.command("bench")
@click.option("--tables", default=8, show_default=True, type=click.IntRange(1), help="Number of tables.")
@click.option("--rows", default=100_000, show_default=True, type=click.IntRange(1), help="Rows per table.")
@click.option("--dim", default=64, show_default=True, type=click.IntRange(1), help="Embedding dimension.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1), help="Samples per batch.")
@click.option("--pooling", default=32.0, show_default=True, type=click.FloatRange(0), help="Lookups per bag (mean).")
@click.option(
    "--bag-sizes",
    default="fixed",
    show_default=True,
    type=click.Choice(["fixed", "poisson", "uniform"]),
    help="Bag-size law around --pooling (fixed: FBGEMM's benchmark convention).",
)
@click.option(
    "--alpha",
    default=1.05,
    show_default=True,
    type=click.FloatRange(0),
    help="Zipf exponent of row popularity (0 = uniform).",
)
@click.option(
    "--format",
    "row_format",
    default="fp32",
    show_default=True,
    type=click.Choice(["fp32", "int32", "int8"]),
    help="Row storage format on the DPUs.",
)
@click.option("--dpus", default=64, show_default=True, type=click.IntRange(1), help="DPUs of the modeled hardware.")
@click.option(
    "--emulate-dpus",
    default=None,
    type=click.IntRange(1),
    help="DPUs the backend runs (default min(--dpus, 256)); fewer than --dpus derives the rest.",
)
@click.option(
    "--profile",
    default=DEFAULT_HARDWARE_PROFILE,
    show_default=True,
    type=click.Choice(sorted(perfmodel.PROFILES)),
    help="Hardware profile of the modeled times.",
)
@click.option("--batches", default=3, show_default=True, type=click.IntRange(1), help="Batches to run.")
@click.option("--weighted", is_flag=True, help="Per-sample weights.")
@click.option(
    "--tasklets",
    "nr_tasklets",
    default=16,
    show_default=True,
    type=click.IntRange(1, abi.MAX_TASKLETS),
    help="Tasklets per DPU.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of weights and workload.")
@click.option(
    "--backend",
    default="emulator",
    show_default=True,
    type=click.Choice(["emulator", "simulator", "hw", "auto"]),
    help="Where to run the batches.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
def bench_command(as_json: bool, **options) -> None:
    """Time torch CPU and updlrm on one workload; model each phase on UPMEM hardware.

    The batches run on the backend (checked against torch); the like-for-like torch CPU
    op (fp32 embedding_bag; int8: torch's quantized byte-rowwise bag on the same rows;
    int32: fp32 embedding_bag on the dequantized rows) is timed on the same batches in
    the same run, best of >= 5 with the spread shown, and the perfmodel gives each phase
    on --dpus DPUs of the chosen hardware profile. A speedup gets a verdict only when it
    is outside the spread. Exit status 1 if a result is wrong.
    """
    progress = None if as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    result = run_bench(progress=progress, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_bench(result))
    if not result.passed:
        raise SystemExit(1)
