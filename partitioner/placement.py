"""Workload-aware placement: :func:`build_plan` wires the planner's stages into a :class:`~updlrm.plan.Plan`.

The stages, one module each (torchrec's planner is the model), with typed values
between them:

1. :mod:`.expected_loads` -- trace -> per table a :class:`~.expected_loads.TableWorkload`:
   cross-fitted expected lookups per batch of every accessed row, bag/row pairs for
   the fan-out estimate.
2. :mod:`.cost`, :mod:`.search` and :mod:`.levels` -- workloads -> a
   :class:`~.search.Layout`: per table ``k`` row parts x ``c`` column slices held ``r``
   times and the host-cached hottest rows, chosen by coordinate descent on the batch time
   :mod:`updlrm.perfmodel` gives (:class:`~.cost.CostModel`), the host cache and the
   replica counts levelled across tables.
3. :mod:`.rows` -- per table its :class:`~.rows.TableRows`: hot rows replicated,
   partitioned by co-occurrence (METIS / Mt-KaHyPar) or frequency, then rebalanced.
4. :mod:`.assign` -- row parts -> shards on DPUs, longest processing time first;
   :mod:`.rank_order` then renames the DPUs so that DPUs with similar transfer sizes
   share a rank (parallel transfers pad a rank to its largest buffer).
5. :mod:`.evaluate` and :mod:`.choose` -- the plan routed on the trace as the engine
   would serve it: a :class:`~.evaluate.PlanReport`.  With ``graph="auto"`` stages 3-5
   run for the frequency and the graph row assignments, and with ``cache="auto"`` also
   for the layout searched without a host cache (host phases measured); the fastest
   candidate is kept.
6. :mod:`.metadata` -- what ``plan.metadata`` records.

Example:
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec(f"t{i}", 5000, 16) for i in range(4)]
    >>> trace = synthetic_trace(tables, batch_size=256, num_batches=2, pooling=8, co_occurrence=0.5)
    >>> plan = build_plan(tables, trace, Topology(64), progress=False, holdout=0)
    >>> plan.validate()
    >>> report = evaluate_plan(plan, trace)
    >>> report.imbalance < 1.2 and report.modeled.total_s > 0
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from updlrm import perfmodel
from updlrm.partitioner.assign import assign_dpus
from updlrm.partitioner.choose import NO_HOST_CACHE, Candidate, chosen_layout, evaluate_candidates
from updlrm.partitioner.cost import CostModel, longest_bags
from updlrm.partitioner.evaluate import PlanReport, evaluate_plan, expected_work, imbalance_breakdown, shard_loads
from updlrm.partitioner.expected_loads import TableWorkload, expected_rank_loads, table_workloads
from updlrm.partitioner.host_cost import HostCostModel, apply_host_cost, calibrate
from updlrm.partitioner.host_phases import estimate_plan
from updlrm.partitioner.metadata import plan_metadata
from updlrm.partitioner.rank_order import order_ranks, relabel_plan, transfer_weights
from updlrm.partitioner.rows import RowOptions, TableRows, partition_rows, row_capacity
from updlrm.partitioner.search import Layout, search_layout
from updlrm.partitioner.workloads import Trace
from updlrm.plan import Plan, PlanError, format_bytes
from updlrm.specs import TableSpec, Topology

__all__ = [
    "build_plan",
    "BuildOptions",
    "Candidate",
    "check_total_capacity",
    "evaluate_plan",
    "expected_work",
    "expected_rank_loads",
    "imbalance_breakdown",
    "shard_loads",
    "PlanReport",
    "TableWorkload",
    "table_workloads",
    "CACHE_MODES",
    "GRAPH_MODES",
]

CACHE_MODES = ("auto", "replicate", "host", "none")
HOST_CPU_MODES = ("auto", "off")
GRAPH_MODES = ("auto", "hypergraph", "graph", "none")


@dataclass(frozen=True)
class BuildOptions:
    """The options of :func:`build_plan`, checked on construction.

    * ``batch_size``: bags per batch the plan is tuned for (default: the trace's).
    * ``min_count``: rows seen fewer times in the trace are too noisy to replicate or
      partition one by one; they are spread in bulk.  (The host cache ranks every row by
      its cross-fitted expected load, see :func:`table_workloads`.)
    * ``hot_fraction``/``max_hot_rows``: share of a table's DPU lookups whose rows go
      through the graph partitioner (at most ``max_hot_rows`` rows seen twice or more).
    * ``graph``: ``graph``: METIS on the co-occurrence graph (clique expansion of the
      bags); ``hypergraph``: Mt-KaHyPar on the bag hypergraph (km1, deterministic
      preset -- cuts a few percent lower, but takes seconds per table where METIS takes
      a fraction of one); ``none``: frequency-only LPT; ``auto``: builds the rows both
      with METIS and frequency-only and keeps the plan the model finds faster on the
      trace (lower fan-out can come with burstier per-batch DPU load).
    * ``cache``: ``auto`` (replicate hot rows, and host-cache rows when the model says it
      pays and the host phases measured with and without the host cache agree:
      :mod:`.choose`), ``replicate``, ``host`` or ``none``; the host cache holds at most
      ``host_cache_bytes`` of rows.
    * ``max_replicas``: at most this many copies of a table's group of shards, each
      serving the samples ``b = j (mod r)`` (data parallel inside the server); ``None``:
      as many as the MRAM and the model allow, ``1``: none.  Only with ``cache`` =
      ``auto`` or ``replicate``.
    * ``holdout``: share of the trace (whole batches when there are several) the plan is
      *not* built from; the plan is evaluated on it and ``plan.metadata["held_out"]``
      reports the estimate on traffic it has not seen next to ``metadata["in_sample"]``.
      ``0`` builds from the whole trace and reports no held-out figures.
    * ``nr_tasklets``: tasklets per DPU the kernel time is modeled for.
    * ``mram_reserved_bytes``: MRAM per DPU kept for the kernel's batch buffers.
    * ``explicit_row_limit``: tables with more rows are stored as contiguous ranges.
    * ``epsilon``: the graph partitioners' imbalance tolerance; ``seed``: their seed.
    * ``host_cpu``: ``auto`` lets the search put whole tables on the host CPU, priced by
      a host cost model calibrated on this machine (:func:`~.host_cost.calibrate`,
      cached), charges each DPU plan the host's phases of its batches (route+pack,
      host-cache sum, merge) measured in the C host runtime
      (:func:`~.host_phases.measure_host_phases`, a dry engine), and keeps the plan no
      slower than every table on the host (CPU only);
      ``off`` (the library's default; ``updlrm plan build`` uses ``auto``): DPUs (and the
      host cache) only, host lookups priced by the profile.

    >>> BuildOptions(graph="auto").row_methods, BuildOptions(cache="host").replicate
    (('none', 'graph'), False)
    """

    batch_size: int | None = None
    hot_fraction: float = 0.9
    max_hot_rows: int = 20_000
    min_count: int = 8
    cache: str = "auto"
    host_cache_bytes: int = 256 << 20
    graph: str = "auto"
    nr_tasklets: int = 16
    mram_reserved_bytes: int = 8 << 20
    explicit_row_limit: int = 1 << 21
    epsilon: float = 0.03
    seed: int = 0
    max_replicas: int | None = None
    host_cpu: str = "off"
    holdout: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise PlanError(f"holdout must be within [0, 1), got {self.holdout}")
        if self.host_cpu not in HOST_CPU_MODES:
            raise PlanError(f"unknown host_cpu mode {self.host_cpu!r}; choose one of {', '.join(HOST_CPU_MODES)}")
        if self.cache not in CACHE_MODES:
            raise PlanError(f"unknown cache mode {self.cache!r}; choose one of {', '.join(CACHE_MODES)}")
        if self.graph not in GRAPH_MODES:
            raise PlanError(f"unknown graph mode {self.graph!r}; choose one of {', '.join(GRAPH_MODES)}")
        if self.max_replicas is not None and self.max_replicas < 1:
            raise PlanError(f"max_replicas must be at least 1 (1: no replicated groups), got {self.max_replicas}")
        if not 0.0 <= self.hot_fraction <= 1.0:
            raise PlanError(f"hot_fraction must be within [0, 1], got {self.hot_fraction}")

    @property
    def replicate(self) -> bool:
        return self.cache in ("auto", "replicate")

    @property
    def host_cache(self) -> bool:
        return self.cache in ("auto", "host")

    @property
    def row_methods(self) -> tuple[str, ...]:
        """The row assignments to build: both ways for ``graph="auto"``, else the one asked for."""
        return ("none", "graph") if self.graph == "auto" else (self.graph,)

    def row_options(self, graph: str) -> RowOptions:
        return RowOptions(self.hot_fraction, self.max_hot_rows, graph, self.replicate, self.epsilon, self.seed)

    def row_bytes_per_dpu(self, topology: Topology) -> int:
        """MRAM per DPU left for rows once ``mram_reserved_bytes`` are kept for the kernel's batch buffers."""
        capacity = topology.mram_bytes_per_dpu - self.mram_reserved_bytes
        if capacity <= 0:
            raise PlanError(f"mram_reserved_bytes={self.mram_reserved_bytes} leaves no MRAM for rows")
        return capacity

    def to_dict(self) -> dict[str, Any]:
        """The options ``plan.metadata`` records."""
        return {
            "cache": self.cache,
            "graph": self.graph,
            "hot_fraction": self.hot_fraction,
            "max_hot_rows": self.max_hot_rows,
            "min_count": self.min_count,
            "host_cache_bytes": self.host_cache_bytes,
            "nr_tasklets": self.nr_tasklets,
            "mram_reserved_bytes": self.mram_reserved_bytes,
            "seed": self.seed,
            "max_replicas": self.max_replicas,
            "host_cpu": self.host_cpu,
            "holdout": self.holdout,
        }


def build_plan(
    tables: list[TableSpec],
    trace: Trace,
    topology: Topology | int,
    *,
    profile: str | perfmodel.HardwareProfile = perfmodel.DEFAULT_HARDWARE_PROFILE,
    batch_size: int | None = None,
    hot_fraction: float = 0.9,
    max_hot_rows: int = 20_000,
    min_count: int = 8,
    cache: str = "auto",
    host_cache_bytes: int = 256 << 20,
    graph: str = "auto",
    nr_tasklets: int = 16,
    mram_reserved_bytes: int = 8 << 20,
    explicit_row_limit: int = 1 << 21,
    epsilon: float = 0.03,
    seed: int = 0,
    max_replicas: int | None = None,
    host_cpu: str | HostCostModel = "off",
    holdout: float = 0.2,
    progress: bool = True,
) -> Plan:
    """A placement of ``tables`` on ``topology`` tuned to the workload in ``trace``.

    ``profile`` names the hardware the plan is tuned for (:func:`updlrm.perfmodel.get_profile`);
    the other options are described on :class:`BuildOptions` (``host_cpu`` may also be a
    :class:`~.host_cost.HostCostModel` to plan with instead of calibrating).  Deterministic
    for a given ``seed`` and host cost model.  Raises :class:`~updlrm.plan.PlanError` naming the table and the shortfall
    when the tables do not fit.

    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8), TableSpec("b", 300, 8)]
    >>> tr = synthetic_trace(tables, batch_size=64, pooling=4, seed=1)
    >>> p = build_plan(tables, tr, Topology(8), progress=False)
    >>> sorted(p.metadata["strategy"])
    ['a', 'b']
    >>> p.metadata["held_out"]["modeled_s"] > 0  # the last 20% of the samples, not built from
    True
    """
    started = time.perf_counter()
    host_cost = host_cpu if isinstance(host_cpu, HostCostModel) else None
    opts = BuildOptions(
        batch_size,
        hot_fraction,
        max_hot_rows,
        min_count,
        cache,
        host_cache_bytes,
        graph,
        nr_tasklets,
        mram_reserved_bytes,
        explicit_row_limit,
        epsilon,
        seed,
        max_replicas,
        "auto" if host_cost is not None else str(host_cpu),
        holdout,
    )
    if host_cost is None and opts.host_cpu == "auto":
        host_cost = calibrate()
    if not isinstance(trace, Trace):
        raise PlanError("build_plan needs a Trace (bags are needed for fan-out and co-occurrence)")
    tables = list(tables)
    topology = Topology(topology) if isinstance(topology, int) else topology
    capacity = opts.row_bytes_per_dpu(topology)
    check_total_capacity(tables, topology.nr_dpus, capacity)
    hw = perfmodel.get_profile(profile, nr_dpus=topology.nr_dpus)
    bar = tqdm(total=3 + len(opts.row_methods), disable=not progress, unit="step", leave=False)

    full_trace = trace
    trace, held = holdout_split(full_trace, opts.holdout)
    bar.set_description("workload statistics")
    workloads, batch, model = _statistics(tables, trace, full_trace, hw, topology, opts)
    bar.update(1)

    bar.set_description("layout search")
    layout = _search(workloads, model, capacity, opts, host_cost)
    bar.update(1)

    chosen, candidates, layout = _choose(
        tables, topology, trace, workloads, layout, model, hw, capacity, opts, batch, bar, host_cost
    )
    plan = _record(
        chosen, candidates, layout, tables, full_trace, trace, held, hw, opts, batch, bar, host_cost, started
    )
    bar.update(1)
    bar.close()
    return plan


def _search(
    workloads: list[TableWorkload],
    model: CostModel,
    capacity: int,
    opts: BuildOptions,
    host_cost: HostCostModel | None,
    *,
    host_cache: bool | None = None,
) -> Layout:
    """The layout search (:func:`search_layout`) with the build options (``host_cache``: the
    options' unless given)."""
    return search_layout(
        workloads,
        model,
        capacity,
        replicate=opts.replicate,
        host_cache=opts.host_cache if host_cache is None else host_cache,
        host_cache_bytes=opts.host_cache_bytes,
        max_replicas=opts.max_replicas,
        host_cost=host_cost,
    )


def _statistics(
    tables: list[TableSpec],
    trace: Trace,
    full_trace: Trace,
    hw: perfmodel.HardwareProfile,
    topology: Topology,
    opts: BuildOptions,
) -> tuple[list[TableWorkload], int, CostModel]:
    """(per-table workloads, batch size, cost model) of the build trace."""
    workloads = table_workloads(tables, trace, opts.batch_size or full_trace.batch_size, opts.min_count)
    batch = workloads[0].batch_size if workloads else (opts.batch_size or full_trace.batch_size)
    model = CostModel(
        tables,
        hw,
        topology.nr_dpus,
        trace.per_sample_weights is not None,
        opts.nr_tasklets,
        [wl.total_load for wl in workloads],
        longest_bags(trace.lengths()),
    )
    return workloads, batch, model


def _choose(
    tables: list[TableSpec],
    topology: Topology,
    trace: Trace,
    workloads: list[TableWorkload],
    layout: Layout,
    model: CostModel,
    hw: perfmodel.HardwareProfile,
    capacity: int,
    opts: BuildOptions,
    batch: int,
    bar: tqdm,
    host_cost: HostCostModel | None,
) -> tuple[Candidate, list[Candidate], Layout]:
    """(chosen candidate, every candidate, the layout as chosen): the row methods' plans of
    the searched layout and, when it host-caches rows and ``cache="auto"``, of the search
    without a host cache; and the CPU alone when a host cost model is given; the fastest
    on the build trace (:mod:`.choose`)."""
    # graph="auto" builds the rows both ways and keeps what the model prefers on the
    # trace: grouping co-occurring rows cuts fan-out, but also makes a DPU's load burstier
    # from batch to batch (a bag's topic lands on one DPU), which can cost more kernel
    # time at the straggler than the saved partial sums are worth.
    layouts = [("", layout)]
    # The host cache: hottest rows, or whole tables when no host cost model prices them as host-CPU tables.
    host_cached = layout.cached.any() or (host_cost is None and bool(layout.host_tables))
    if opts.cache == "auto" and host_cached and not layout.cpu_only:
        bar.set_description("layout search without host cache")
        bar.total += len(opts.row_methods)
        layouts.append((NO_HOST_CACHE, _search(workloads, model, capacity, opts, host_cost, host_cache=False)))

    def place(method: str, variant: Layout) -> Candidate:
        candidate = _place(
            method, tables, topology, trace, workloads, variant, model, hw, capacity, opts, batch, bar, host_cost
        )
        bar.update(1)
        return candidate

    def measuring() -> None:
        bar.set_description("host phases (measured)")

    cpu_only = None
    if host_cost is not None:
        cpu_only = lambda: _cpu_only(tables, topology, trace, workloads, hw, opts, batch, host_cost)  # noqa: E731
    candidates = evaluate_candidates(layouts, opts.row_methods, place, trace, batch, cpu_only, measuring)
    chosen = min(candidates, key=lambda c: c.report.modeled.total_s)
    return chosen, candidates, chosen_layout(chosen, layout, len(tables))


def _record(
    chosen: Candidate,
    candidates: list[Candidate],
    layout: Layout,
    tables: list[TableSpec],
    full_trace: Trace,
    trace: Trace,
    held: Trace | None,
    hw: perfmodel.HardwareProfile,
    opts: BuildOptions,
    batch: int,
    bar: tqdm,
    host_cost: HostCostModel | None,
    started: float,
) -> Plan:
    """The chosen plan, validated, with its expected load and metadata: options, layout,
    in-sample and held-out estimates, and the host/DPU split when a host cost model was used."""
    plan = chosen.plan
    plan.validate(opts.mram_reserved_bytes)
    plan.expected_load = chosen.report.load_per_dpu
    plan.metadata = plan_metadata(
        plan,
        hardware=hw.name,
        batch_size=batch,
        options=opts.to_dict(),
        layout=layout,
        rows=chosen.rows,
        report=chosen.report,
        chosen=chosen.name,
        modeled_s={c.name: c.report.modeled.total_s for c in candidates},
        explicit_row_limit=opts.explicit_row_limit,
        build_time_s=time.perf_counter() - started,
    )
    plan.metadata["in_sample"] = _estimate_record(chosen.report, trace)
    if chosen.rank_order is not None:
        plan.metadata["rank_order"] = chosen.rank_order.to_dict()
    if held is not None:
        bar.set_description("held-out evaluation")
        # Measured host phases in the build trace's estimates: measured held out too.
        held_report = estimate_plan(
            plan,
            held,
            hw,
            nr_tasklets=opts.nr_tasklets,
            batch_size=batch,
            host_cost=host_cost,
            measure_host=chosen.host_phases is not None or host_cost is not None,
        )
        plan.metadata["held_out"] = _estimate_record(held_report, held)
    plan.workload_hash = full_trace.hash()
    if host_cost is not None:
        cpu_only_s = next(c.report.modeled.total_s for c in candidates if c.method == "cpu_only")
        plan.metadata["host_cpu"] = {
            "cpu_only": chosen.method == "cpu_only",
            "plan_s": chosen.report.modeled.total_s,
            "cpu_only_s": cpu_only_s,
            "host_tables": [tables[t].name for t in layout.host_tables],
            "tables": {spec.name: choice for spec, choice in zip(tables, layout.choices or [])},
            "model": host_cost.to_dict(),
        }
    measured = {c.name: c.host_phases.to_dict() for c in candidates if c.host_phases is not None}
    if measured:
        plan.metadata["row_assignment"]["host_phases"] = measured
    return plan


def holdout_split(trace: Trace, holdout: float) -> tuple[Trace, Trace | None]:
    """``(build part, held-out part)`` of ``trace`` for ``holdout``; ``(trace, None)`` when too small to split.

    Whole batches are held out when there are several, else the last samples of the one
    batch (at least 8 samples on each side).

    >>> from updlrm.partitioner.workloads import Trace
    >>> tr = Trace(1, 1, np.arange(10), np.arange(11))
    >>> [t.num_batches for t in holdout_split(tr, 0.2)]
    [8, 2]
    >>> holdout_split(Trace(1, 4, np.arange(4), np.arange(5)), 0.2)[1] is None
    True
    """
    if holdout <= 0:
        return trace, None
    if trace.num_batches >= 2:
        return trace.split(1.0 - holdout)
    if trace.batch_size * min(holdout, 1 - holdout) >= 8:
        return trace.split(1.0 - holdout)
    return trace, None


def _estimate_record(report: PlanReport, trace: Trace) -> dict[str, Any]:
    """The figures ``metadata["in_sample"]``/``["held_out"]`` keep of a report on ``trace``."""
    return {
        "modeled_s": report.modeled.total_s,
        "host_route_s": report.modeled.host_route_s,
        "phases": report.modeled.as_dict(),
        "imbalance": report.imbalance,
        "mean_fanout": report.mean_fanout,
        "bytes_out": report.bytes_out,
        "host_cache_hit_rate": report.host_cache_hit_rate,
        "batches": trace.num_batches,
        "samples": trace.num_batches * trace.batch_size,
    }


def _place(
    method: str,
    tables: list[TableSpec],
    topology: Topology,
    trace: Trace,
    workloads: list[TableWorkload],
    layout: Layout,
    model: CostModel,
    hw: perfmodel.HardwareProfile,
    capacity: int,
    opts: BuildOptions,
    batch: int,
    bar: tqdm,
    host_cost: HostCostModel | None = None,
) -> Candidate:
    """Stages 3-5 for one row-assignment ``method``: rows, DPUs, evaluation on the trace,
    DPUs renamed by rank (:mod:`.rank_order`, on the trace's bytes)."""
    n = topology.nr_dpus
    row_opts = opts.row_options(method)
    rows = []
    for t, (wl, s) in enumerate(zip(workloads, layout.shapes)):
        if s.on_host:
            rows.append(TableRows([], "host CPU" if host_cost is not None else "host cache (whole table)", 0, 0, 0))
            continue
        bar.set_description(f"rows of {wl.spec.name} ({method})")
        rows.append(
            partition_rows(
                wl,
                trace,
                s.parts,
                int(layout.cached[t]),
                row_opts,
                row_capacity=row_capacity(wl.spec, s.slices, capacity),
                explicit_row_limit=opts.explicit_row_limit,
                max_extra=0 if s.replicas > 1 else max(0, n // s.slices - s.parts),
            )
        )
    bar.set_description(f"assigning DPUs ({method})")
    host_rows = layout.host_rows(workloads)
    shards = assign_dpus(
        tables, workloads, [r.parts for r in rows], layout.shapes, host_rows, model, n, capacity, trace
    )
    plan = Plan(
        tables=tables, topology=topology, shards=shards, host_rows=host_rows, workload_hash=trace.hash(), metadata={}
    )
    report = evaluate_plan(plan, trace, hw, nr_tasklets=opts.nr_tasklets, batch_size=batch)
    if host_cost is not None:
        report = apply_host_cost(report, plan, trace, host_cost, batch)
    order = order_ranks(report.index_bytes, report.output_bytes, topology.dpus_per_rank, transfer_weights(hw))
    plan = relabel_plan(plan, order.new_id)
    report = report.relabelled(order.new_id, topology.dpus_per_rank, hw)
    return Candidate(method, plan, report, rows, order)


def _cpu_only(
    tables: list[TableSpec],
    topology: Topology,
    trace: Trace,
    workloads: list[TableWorkload],
    hw: perfmodel.HardwareProfile,
    opts: BuildOptions,
    batch: int,
    host_cost: HostCostModel,
) -> Candidate:
    """Every table on the host CPU (no shard), evaluated on the trace: no DPU phase, host seconds calibrated."""
    plan = Plan(
        tables=tables,
        topology=topology,
        shards=[],
        host_rows={t: np.arange(s.num_embeddings, dtype=np.int64) for t, s in enumerate(tables)},
        workload_hash=trace.hash(),
        metadata={},
    )
    report = apply_host_cost(
        evaluate_plan(plan, trace, hw, nr_tasklets=opts.nr_tasklets, batch_size=batch), plan, trace, host_cost, batch
    )
    return Candidate("cpu_only", plan, report, [TableRows([], "host CPU", 0, 0, 0) for _ in tables])


def check_total_capacity(tables: list[TableSpec], n: int, capacity: int) -> None:
    """Raise :class:`~updlrm.plan.PlanError` naming the first table (smallest first) that ``n`` DPUs of ``capacity`` bytes cannot hold.

    >>> check_total_capacity([TableSpec("a", 100, 8)], 1, 1000)
    Traceback (most recent call last):
    ...
    updlrm.plan.PlanError: table a needs 3.2 KB, 1.0 KB of MRAM free on 1 DPUs (after the smaller tables)
    """
    free = n * capacity
    for spec in sorted(tables, key=lambda s: s.num_embeddings * s.row_bytes()):
        need = spec.num_embeddings * spec.row_bytes()
        if need > free:
            raise PlanError(
                f"table {spec.name} needs {format_bytes(need)}, {format_bytes(max(free, 0))} of MRAM "
                f"free on {n} DPUs (after the smaller tables)"
            )
        free -= need
