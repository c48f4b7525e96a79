"""The host's phases of a plan, measured at plan time in the C host runtime.

Before the DPUs see a batch, the host reads its indices and offsets, routes every lookup
to a DPU (or the host cache) and packs each DPU's input buffer; while they run, it sums
the host-cached rows; afterwards it merges their partial sums.  What these cost depends
on the plan (how many column slices route alike, how many DPUs mirror another, explicit
per-row entries, the host cache, how many runs of partial sums the DPUs return) and on
the host, and the perfmodel's host bandwidths are far from this runtime's (4-9x
optimistic on bench_updlrm's plan), so they are measured, not modeled: a dry engine
(:class:`updlrm.host.engine.Engine` made with ``weights=None``; nothing is put in
emulated MRAM, so full-size plans fit) runs the host phases of a trace's batches with the
engine's default host threads, zero partial sums standing in for the DPUs'.  The
medians of ``repeats`` batches (after running each once) become the plan's
``host_route_s``, ``host_cache_s`` and ``host_merge_s``
(:class:`updlrm.perfmodel.PhaseTimes`): the planner uses them to compare its candidates
with each other and with the CPU alone.

Example:
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8)]
    >>> plan = uniform_plan(tables, Topology(4), "row_wise")
    >>> cost = measure_host_phases(plan, synthetic_trace(tables, batch_size=64, pooling=4, seed=1))
    >>> cost.median_s > 0, cost.batches
    (True, 5)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from updlrm.partitioner.evaluate import PlanReport
    from updlrm.partitioner.host_cost import HostCostModel
    from updlrm.partitioner.workloads import Trace
    from updlrm.perfmodel import HardwareProfile
    from updlrm.plan import Plan

__all__ = [
    "HostPhases",
    "apply_host_phases",
    "estimate_plan",
    "measure_host_phases",
    "measure_side_by_side",
    "measured_at_build",
]

REPEATS = 5  # batches timed (after one warm-up batch)


@dataclass(frozen=True)
class HostPhases:
    """Measured host phases per batch of one plan. Route+pack: every timed batch (``samples_s``),
    best and median, for batches of ``batch_size`` samples on ``host_threads`` threads;
    ``bytes`` is what a batch reads and writes (indices, offsets and the DPUs' input
    buffers, on average), the size of a like-for-like copy. ``seconds`` rescales."""

    samples_s: tuple[float, ...]
    batch_size: int
    host_threads: int
    bytes: int = 0
    #: The other host phases of the same batches: the host-cached rows' sum and the merge of
    #: the partial sums (zeros, in the dry engine), as this host runs them.
    host_cache_samples_s: tuple[float, ...] = ()
    merge_samples_s: tuple[float, ...] = ()
    #: The engine's shape for this plan: its routing tables' bytes, the column slices that
    #: copy their leader's routing, the DPUs whose inputs mirror another's.
    routing_bytes: int = 0
    follower_slices: int = 0
    mirror_dpus: int = 0
    #: What a batch's merge reads and writes, on average: the partial sums pulled
    #: (``pulled_bytes``, DPU->CPU bytes before rank padding) and the output rows; the
    #: size of the merge's like-for-like copy, counted as route+pack's ``bytes`` is.
    merge_bytes: int = 0
    pulled_bytes: int = 0

    @property
    def best_s(self) -> float:
        return float(min(self.samples_s))

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples_s))

    @property
    def batches(self) -> int:
        return len(self.samples_s)

    def seconds(self, batch_size: int | None = None) -> float:
        """The median, scaled linearly to ``batch_size`` samples (route+pack is per lookup).

        >>> HostPhases((1e-3, 2e-3, 3e-3), 512, 2).seconds(1024)
        0.004
        """
        return self.median_s * ((batch_size or self.batch_size) / self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        medians = {
            "host_cache_median_s": float(np.median(self.host_cache_samples_s)) if self.host_cache_samples_s else None,
            "merge_median_s": float(np.median(self.merge_samples_s)) if self.merge_samples_s else None,
        }
        return (
            dataclasses.asdict(self)
            | {"best_s": self.best_s, "median_s": self.median_s, "batches": self.batches}
            | medians
        )

    def __str__(self) -> str:
        return (
            f"route+pack {self.median_s * 1e3:.3f} ms median, {self.best_s * 1e3:.3f} ms best "
            f"({self.batches} batches of {self.batch_size}, {self.host_threads} host threads)"
        )


def measure_host_phases(
    plan: Plan, trace: Trace, *, repeats: int = REPEATS, host_threads: int | None = None
) -> HostPhases | None:
    """Route+pack of ``plan`` on ``repeats`` of ``trace``'s batches (cycled when it has
    fewer), measured on a dry engine after running each of them once (the slot's buffers
    grow to the largest); None for a plan without shards (nothing goes to DPUs)."""
    return measure_side_by_side([plan], trace, repeats=repeats, host_threads=host_threads)[0]


def measure_side_by_side(
    plans: list[Plan], trace: Trace, *, repeats: int = REPEATS, host_threads: int | None = None
) -> list[HostPhases | None]:
    """:func:`measure_host_phases` of several plans at once, batch by batch in turn (a dry
    engine each), so that a burst of load on the machine hits every plan alike and the
    candidates a planner compares are compared fairly.

    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8)]
    >>> plans = [uniform_plan(tables, Topology(4), "row_wise"), uniform_plan(tables, Topology(4), "column_wise")]
    >>> [c.batches for c in measure_side_by_side(plans, synthetic_trace(tables, batch_size=64, pooling=4, seed=1))]
    [5, 5]
    """
    from updlrm.host.engine import Engine

    threads = max(1, int(host_threads or os.cpu_count() or 1))
    batches = [trace.batch(i % trace.num_batches) for i in range(repeats)]
    output_bytes = [trace.batch_size * sum(t.embedding_dim for t in plan.tables) * 4 for plan in plans]
    measured = [i for i, plan in enumerate(plans) if plan.shards]
    samples: dict[int, dict[str, list]] = {
        i: {k: [] for k in ("route", "cache", "merge", "moved", "pulled")} for i in measured
    }
    with contextlib.ExitStack() as stack:
        engines = {i: stack.enter_context(Engine(plans[i], None, host_threads=threads)) for i in measured}
        for dry in engines.values():
            for indices, offsets, weights in batches[: trace.num_batches]:  # warm-up
                dry.dry_run(indices, offsets, weights)
        for indices, offsets, weights in batches:
            for i, dry in engines.items():
                stats = dry.dry_run(indices, offsets, weights)
                s = samples[i]
                s["route"].append(stats.route_s)
                s["cache"].append(stats.host_cache_s)
                s["merge"].append(stats.merge_s)
                s["moved"].append(indices.nbytes + offsets.nbytes + int(stats.bytes_to_dpu.sum()))
                s["pulled"].append(int(stats.bytes_from_dpu.sum()))
        shapes = {
            i: {
                "routing_bytes": dry.routing_bytes,
                "follower_slices": dry.follower_slices,
                "mirror_dpus": dry.mirror_dpus,
            }
            for i, dry in engines.items()
        }
    out: list[HostPhases | None] = [None] * len(plans)
    for i in measured:
        s = samples[i]
        out[i] = HostPhases(
            tuple(s["route"]),
            trace.batch_size,
            threads,
            int(np.mean(s["moved"])),
            tuple(s["cache"]),
            tuple(s["merge"]),
            **shapes[i],
            merge_bytes=int(np.mean(s["pulled"])) + output_bytes[i],
            pulled_bytes=int(np.mean(s["pulled"])),
        )
    return out


def apply_host_phases(report: PlanReport, cost: HostPhases | None, batch_size: int | None = None) -> PlanReport:
    """``report`` with its host phases set from ``cost`` (medians, scaled to ``batch_size``):
    route+pack always, the host-cache sum and the merge when they were measured; unchanged
    when ``cost`` is None.

    >>> from updlrm.partitioner.evaluate import PlanReport
    >>> from updlrm import perfmodel
    >>> r = PlanReport(1, 8, np.ones(1), np.ones(1), 1.0, 1.0, 1.0, 1.0, [1.0], 0, 0, 0, 0, np.ones(1), 0.0,
    ...                perfmodel.PhaseTimes(1e-3, 0, 0, 0, 5e-3, 0, np.zeros(1)))
    >>> round(apply_host_phases(r, HostPhases((1e-3, 2e-3, 3e-3), 8, 1)).modeled.total_s * 1e3, 6)
    8.0
    >>> round(apply_host_phases(r, HostPhases((2e-3,), 8, 1, 0, (4e-3,), (1e-3,))).modeled.total_s * 1e3, 6)
    7.0
    """
    if cost is None:
        return report
    scale = (batch_size or cost.batch_size) / cost.batch_size
    m = report.modeled
    report.modeled = dataclasses.replace(
        m,
        host_route_s=cost.seconds(batch_size),
        host_cache_s=float(np.median(cost.host_cache_samples_s)) * scale
        if cost.host_cache_samples_s
        else m.host_cache_s,
        host_merge_s=float(np.median(cost.merge_samples_s)) * scale if cost.merge_samples_s else m.host_merge_s,
    )
    return report


def measured_at_build(plan: Plan) -> bool:
    """Whether :func:`~updlrm.partitioner.placement.build_plan` measured ``plan``'s host phases
    (it does when it priced the host CPU or timed its row-assignment candidates).

    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.plan import uniform_plan
    >>> measured_at_build(uniform_plan([TableSpec("a", 8, 4)], Topology(2)))
    False
    """
    meta = plan.metadata or {}
    return "host_cpu" in meta or bool(meta.get("row_assignment", {}).get("host_phases"))


def estimate_plan(
    plan: Plan,
    trace: Trace,
    profile: str | HardwareProfile | None = None,
    *,
    nr_tasklets: int = 16,
    batch_size: int | None = None,
    host_cost: HostCostModel | None = None,
    measure_host: bool | None = None,
) -> PlanReport:
    """``plan`` on ``trace`` estimated as :func:`~updlrm.partitioner.placement.build_plan`
    estimates it: the perfmodel's DPU side (:func:`~updlrm.partitioner.evaluate.evaluate_plan`),
    the host-cached rows priced by ``host_cost`` (default: the model the plan recorded, if
    any) and, when ``measure_host`` (default: :func:`measured_at_build`), the host phases
    measured on this host (:func:`measure_host_phases`). Evaluated on the trace a plan was
    built from, it gives the build's estimate again, up to the noise of those timings.

    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8)]
    >>> plan, trace = uniform_plan(tables, Topology(4)), synthetic_trace(tables, batch_size=64, pooling=4, seed=1)
    >>> estimate_plan(plan, trace).modeled.host_route_s, estimate_plan(plan, trace, measure_host=True).modeled.host_route_s > 0
    (0.0, True)
    """
    from updlrm import perfmodel
    from updlrm.partitioner.evaluate import evaluate_plan
    from updlrm.partitioner.host_cost import apply_host_cost

    report = evaluate_plan(
        plan, trace, profile or perfmodel.DEFAULT_HARDWARE_PROFILE, nr_tasklets=nr_tasklets, batch_size=batch_size
    )
    report = apply_host_cost(report, plan, trace, host_cost, batch_size)
    if measured_at_build(plan) if measure_host is None else measure_host:
        apply_host_phases(report, measure_host_phases(plan, trace) if plan.shards else None, batch_size)
    return report
