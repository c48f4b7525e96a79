"""Stage 5 of the planner: a plan evaluated on a trace, as the engine would serve it.

:func:`evaluate_plan` routes every lookup of a trace through a plan (the engine's
rule, :mod:`.routing`), counts each batch's work exactly as the engine counts it
(:func:`updlrm.partitioner.batch_work.derive_work`) and models it with
:mod:`updlrm.perfmodel`; the :class:`PlanReport` says how balanced and how fast the
plan is.  :func:`shard_loads` and :func:`imbalance_breakdown` explain the balance,
:func:`expected_work` gives one batch's work.

Example:
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> r = evaluate_plan(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])))
    >>> r.imbalance, r.host_cache_hit_rate
    (1.3333333333333333, 0.0)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from updlrm import abi, perfmodel
from updlrm.partitioner.batch_work import derive_work
from updlrm.partitioner.cost import CostModel, longest_bags, lookup_bytes
from updlrm.partitioner.routing import SliceRouter, column_slices, host_mask
from updlrm.partitioner.workloads import Trace
from updlrm.plan import Plan, PlanError
from updlrm.specs import padded_row_bytes

__all__ = [
    "PlanReport",
    "RoutedTrace",
    "evaluate_plan",
    "expected_work",
    "imbalance_breakdown",
    "noise_floor",
    "route_trace",
    "shard_loads",
]


@dataclass
class PlanReport:
    """How a plan serves a trace, per batch on average, with the perfmodel's phase times.

    ``load_per_dpu``: mean lookups per batch of each DPU; ``imbalance``: max/mean of it
    over all DPUs of the topology; ``kernel_imbalance``: the same for modeled kernel
    time; ``batch_imbalance``: max/mean of the DPUs' lookups within each batch,
    averaged over batches (what the straggler of a batch sees: a placement balanced on
    average can still be bursty from batch to batch).  ``mean_fanout``: DPUs a (sample, table) bag's lookups reach, per column slice,
    over bags with at least one DPU lookup.  Bytes are per batch, ``*_padded`` with every
    DPU of a rank padded to the rank's largest buffer (as parallel transfers are);
    ``index_bytes``/``output_bytes``: each batch's (rows) bytes to/from each DPU (columns).
    """

    num_batches: int
    batch_size: int
    load_per_dpu: np.ndarray
    kernel_s_per_dpu: np.ndarray
    imbalance: float
    kernel_imbalance: float
    batch_imbalance: float
    mean_fanout: float
    fanout_per_table: list[float]
    bytes_in: float
    bytes_out: float
    bytes_in_padded: float
    bytes_out_padded: float
    mram_bytes_per_dpu: np.ndarray
    host_cache_hit_rate: float
    modeled: perfmodel.PhaseTimes
    noise_floor: float = float("nan")
    index_bytes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    output_bytes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def load_min(self) -> float:
        return float(self.load_per_dpu.min())

    @property
    def load_mean(self) -> float:
        return float(self.load_per_dpu.mean())

    @property
    def load_max(self) -> float:
        return float(self.load_per_dpu.max())

    def summary_dict(self) -> dict[str, Any]:
        """JSON-ready scalars (what ``plan.metadata`` stores)."""
        return {
            "modeled": dict(self.modeled.as_dict()),
            "imbalance": self.imbalance,
            "kernel_imbalance": self.kernel_imbalance,
            "batch_imbalance": self.batch_imbalance,
            "load_min": self.load_min,
            "load_mean": self.load_mean,
            "load_max": self.load_max,
            "mean_fanout": self.mean_fanout,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bytes_in_padded": self.bytes_in_padded,
            "bytes_out_padded": self.bytes_out_padded,
            "mram_max_bytes": int(self.mram_bytes_per_dpu.max()),
            "mram_total_bytes": int(self.mram_bytes_per_dpu.sum()),
            "host_cache_hit_rate": self.host_cache_hit_rate,
            "noise_floor": self.noise_floor,
        }

    def relabelled(self, new_id: np.ndarray, dpus_per_rank: int, profile: perfmodel.HardwareProfile) -> PlanReport:
        """This report for the plan with DPU ``d`` renamed ``new_id[d]`` (a permutation):
        per-DPU figures move with their DPU, rank padding (ranks of ``dpus_per_rank``) and
        the transfer phases are modeled again on ``profile``; the rest does not depend on
        DPU ids.

        >>> from updlrm.plan import uniform_plan
        >>> from updlrm.specs import TableSpec, Topology
        >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
        >>> r = evaluate_plan(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])))
        >>> r.relabelled(np.array([1, 0]), 64, perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=2)).load_per_dpu.tolist()
        [1.0, 2.0]
        """

        def move(values: np.ndarray) -> np.ndarray:
            out = np.empty_like(values)
            out[..., new_id] = values
            return out

        index_bytes, output_bytes = move(self.index_bytes), move(self.output_bytes)
        modeled = dataclasses.replace(
            self.modeled,
            cpu_to_dpu_s=_mean_transfer_s(index_bytes, profile, "to_dpu"),
            dpu_to_cpu_s=_mean_transfer_s(output_bytes, profile, "from_dpu"),
            per_dpu_kernel_s=move(self.modeled.per_dpu_kernel_s),
        )
        return dataclasses.replace(
            self,
            load_per_dpu=move(self.load_per_dpu),
            kernel_s_per_dpu=move(self.kernel_s_per_dpu),
            mram_bytes_per_dpu=move(self.mram_bytes_per_dpu),
            bytes_in_padded=float(np.mean([perfmodel.padded_total(b, dpus_per_rank) for b in index_bytes])),
            bytes_out_padded=float(np.mean([perfmodel.padded_total(b, dpus_per_rank) for b in output_bytes])),
            modeled=modeled,
            index_bytes=index_bytes,
            output_bytes=output_bytes,
        )


def _mean_transfer_s(bytes_per_batch: np.ndarray, profile: perfmodel.HardwareProfile, direction: str) -> float:
    """Mean over batches (rows) of one parallel transfer's modeled seconds, as :func:`updlrm.perfmodel.model_batch` models it."""
    return float(np.mean([perfmodel.transfer_time(b, profile, direction, "parallel") for b in bytes_per_batch]))


@dataclass
class RoutedTrace:
    """Per batch (rows) and DPU (columns): what routing the trace through a plan asks for."""

    lookups: np.ndarray
    row_bytes: np.ndarray
    index_bytes: np.ndarray
    output_bytes: np.ndarray
    reduce_elems: np.ndarray
    merge_elems: np.ndarray
    host_lookups: np.ndarray
    host_row_bytes: np.ndarray
    fanout_per_table: list[float]
    mean_fanout: float
    host_cache_hit_rate: float
    gap_bytes: np.ndarray

    def work(self, i: int, model: CostModel) -> perfmodel.BatchWork:
        """Batch ``i``'s work in ``model``'s format, weighting and tasklets."""
        return model.work(
            lookups=self.lookups[i],
            row_bytes=self.row_bytes[i],
            index_bytes=self.index_bytes[i],
            output_bytes=self.output_bytes[i],
            reduce_elems=self.reduce_elems[i],
            host_merge_elems=float(self.merge_elems[i]),
            host_cache_lookups=float(self.host_lookups[i]),
            host_cache_row_bytes=float(self.host_row_bytes[i]),
            gap_bytes=self.gap_bytes[i],
        )


def route_trace(
    plan: Plan,
    trace: Trace,
    model: CostModel,
    scale: float,
    router_cache: dict[tuple[int, int], SliceRouter] | None = None,
) -> RoutedTrace:
    """What every batch of ``trace`` asks of each DPU under ``plan``, in the planner's byte model.

    Counts are scaled by ``scale`` (another batch size over the trace's); the evaluator
    uses them where the engine's exact accounting does not apply.  ``router_cache`` (a
    dict the caller keeps, as :func:`~updlrm.partitioner.batch_work.derive_work` takes)
    reuses the routing tables.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> hw = perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=2)
    >>> r = route_trace(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])), CostModel(p.tables, hw, 2, False, 16, [3.0]), 1.0)
    >>> r.lookups.tolist(), r.mean_fanout
    ([[2.0, 1.0]], 1.0)
    """
    n = plan.topology.nr_dpus
    nb, B = trace.num_batches, trace.batch_size
    shape = (nb, n)
    lookups = np.zeros(shape)
    gathered_bytes = np.zeros(shape)
    touched = np.zeros(shape)
    out_bytes = np.zeros(shape)
    gap_bytes = np.zeros(shape)
    reduce = np.zeros(shape)
    merge = np.zeros(nb)
    host_lookups = np.zeros(nb)
    host_bytes = np.zeros(nb)
    nr_shards = max(len(plan.shards), 1)
    dpu_of_shard = np.array([s.dpu for s in plan.shards], dtype=np.int64)
    routers = {} if router_cache is None else router_cache
    fanout_per_table = []
    fan_sum = fan_bags = 0.0
    total_lookups = 0
    for t, spec in enumerate(plan.tables):
        rows, bags = trace.table_lookups(t)
        if rows.size and int(rows.max()) >= spec.num_embeddings:
            raise PlanError(
                f"table {spec.name}: the trace looks up row {int(rows.max())}, the table has {spec.num_embeddings}"
            )
        total_lookups += rows.size
        on_host = host_mask(plan, t, rows)
        per_batch = np.bincount(bags[on_host] // B, minlength=nb)
        host_lookups += per_batch
        host_bytes += per_batch * spec.row_bytes()
        rows, bags = rows[~on_host], bags[~on_host]
        batch_of = bags // B
        t_fan = t_bags = 0.0
        routed_slices: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]] = {}
        for lo, hi in column_slices(plan, t):
            if rows.size == 0:
                continue
            # Slices whose shards hold the same row sets in the same order route alike:
            # route (and dedup) once, then rename the shards.
            members = [i for i in plan.shards_of(t) if plan.shards[i].col_start == lo]
            signature = tuple(_rows_signature(plan.shards[i].rows) for i in members)
            if signature in routed_slices:
                first_members, shard0, pairs0 = routed_slices[signature]
                rename = np.zeros(nr_shards, dtype=np.int64)
                rename[first_members] = members
                shard = rename[shard0]
                p_bag, p_shard = pairs0[0], rename[pairs0[1]]
            else:
                if (t, lo) not in routers:
                    routers[(t, lo)] = SliceRouter(plan, t, lo)
                shard = routers[(t, lo)].route_shards(rows, bags % B)
                pairs = np.unique(bags * nr_shards + shard)
                p_bag, p_shard = np.divmod(pairs, nr_shards)
                routed_slices[signature] = (np.array(members), shard, (p_bag, p_shard))
            cnt = np.bincount(batch_of * n + dpu_of_shard[shard], minlength=nb * n).reshape(shape)
            lookups += cnt
            gathered_bytes += cnt * padded_row_bytes(hi - lo, spec.row_format)
            reduce += cnt * (hi - lo) * model.elem_factor[t]
            # One partial sum per (bag, shard) with at least one lookup.
            p_dpu = dpu_of_shard[p_shard]
            tcnt = np.bincount((p_bag // B) * n + p_dpu, minlength=nb * n).reshape(shape)
            touched += tcnt
            out_bytes += tcnt * model.partial_bytes(t, hi - lo)
            gap_bytes += (cnt - tcnt) * model.partial_bytes(t, hi - lo)
            merge += np.bincount(p_bag // B, minlength=nb) * (hi - lo)
            # Fan-out: distinct DPUs per bag (shards of one slice sit on distinct DPUs).
            bag_dpus = np.bincount(p_bag, minlength=nb * B)
            nonempty = bag_dpus > 0
            t_fan += float(bag_dpus[nonempty].sum())
            t_bags += float(nonempty.sum())
        fanout_per_table.append(t_fan / t_bags if t_bags else 0.0)
        fan_sum += t_fan
        fan_bags += t_bags
    hit_rate = float(host_lookups.sum() / total_lookups) if total_lookups else 0.0
    # One segment per (bag, shard) pair; the header, padding, status and tasklet splits
    # are added per DPU by CostModel.work.
    index_bytes = lookups * lookup_bytes(model.weighted) + touched * abi.SEGMENT_BYTES
    row_bytes = np.divide(gathered_bytes, lookups, out=np.full(shape, 8.0), where=lookups > 0)
    host_row_bytes = np.divide(host_bytes, host_lookups, out=np.zeros(nb), where=host_lookups > 0)
    return RoutedTrace(
        lookups * scale,
        row_bytes,
        index_bytes * scale,
        out_bytes * scale,
        reduce * scale,
        merge * scale,
        host_lookups * scale,
        host_row_bytes,
        fanout_per_table,
        fan_sum / fan_bags if fan_bags else 0.0,
        hit_rate,
        gap_bytes * scale,
    )


def _batch_imbalance(lookups: np.ndarray) -> float:
    """Mean over batches (rows) of max/mean lookups over DPUs (columns); 1.0 for batches without DPU work.

    >>> _batch_imbalance(np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    1.3333333333333333
    """
    mean = lookups.mean(axis=1)
    ratio = np.divide(lookups.max(axis=1), mean, out=np.ones_like(mean), where=mean > 0)
    return float(ratio.mean()) if ratio.size else 1.0


def noise_floor(batch_loads: np.ndarray, draws: int = 1000, seed: int = 0) -> float:
    """Expected max/mean over DPUs of the mean load per DPU if every DPU had the same expected load.

    ``batch_loads``: lookups per batch (rows) and DPU (columns).  Each DPU's mean over
    the ``nb`` batches is drawn as a normal variable around the common mean ``M`` with
    variance ``D * M / nb``, ``D`` being the dispersion measured over all DPUs (summed
    batch-to-batch variances over summed mean loads; 1 for Poisson counts, more when a
    bag brings several of a DPU's lookups at once; pooled, since one DPU's variance over
    a few batches is too noisy to take its maximum over DPUs); the result averages
    ``draws`` draws (fixed ``seed``).  Even a plan whose every DPU expects the
    same load shows about this imbalance on such a trace: it is the floor the trace's
    length sets, ``1 + O(sqrt(D / (M nb)))``.  ``nan`` with fewer than 2 batches.

    >>> rng = np.random.default_rng(1)
    >>> loads = rng.poisson(100.0, size=(16, 256)).astype(float)
    >>> floor = noise_floor(loads)
    >>> 1.04 < floor < 1.09  # about 1 + 2.9 / sqrt(1600)
    True
    >>> noise_floor(loads[:1])
    nan
    """
    nb = batch_loads.shape[0]
    if nb < 2 or batch_loads.size == 0:
        return float("nan")
    mean = batch_loads.mean(axis=0)
    var = batch_loads.var(axis=0, ddof=1)
    level = float(mean.mean())
    if level <= 0:
        return 1.0
    sd = np.sqrt(float(var.sum() / mean.sum()) * level / nb)
    draw = level + sd * np.random.default_rng(seed).standard_normal((draws, mean.size))
    return float(np.mean(draw.max(axis=1) / draw.mean(axis=1)))


def _rows_signature(rows: range | np.ndarray) -> tuple[Any, ...]:
    if isinstance(rows, range):
        return ("range", rows.start, rows.stop)
    return ("array", id(rows), rows.size)


def _batch_works(
    plan: Plan,
    trace: Trace,
    routed: RoutedTrace,
    model: CostModel,
    scale: float,
    router_cache: dict[tuple[int, int], SliceRouter] | None = None,
) -> list[perfmodel.BatchWork]:
    """Per batch, the work exactly as the engine counts it (:func:`updlrm.partitioner.batch_work.derive_work`:
    segments, per-tasklet partials, headers), or the routed estimate when the counts are
    rescaled to another batch size or a batch would need several launches."""
    if scale == 1.0:
        cache = {} if router_cache is None else router_cache
        try:
            return [
                derive_work(plan, *trace.batch(i), nr_tasklets=model.nr_tasklets, router_cache=cache)
                for i in range(trace.num_batches)
            ]
        except PlanError:
            pass
    return [routed.work(i, model) for i in range(trace.num_batches)]


def evaluate_plan(
    plan: Plan,
    trace: Trace,
    profile: str | perfmodel.HardwareProfile = perfmodel.DEFAULT_HARDWARE_PROFILE,
    *,
    nr_tasklets: int = 16,
    batch_size: int | None = None,
) -> PlanReport:
    """Route every lookup of ``trace`` through ``plan`` and model each batch with the perfmodel.

    Works on any trace over the plan's tables, including one the plan was not built
    from.  Per batch, each DPU's lookups, index and output bytes are counted as the
    engine counts them (:func:`~updlrm.partitioner.batch_work.derive_work`) into a
    :class:`~updlrm.perfmodel.BatchWork`; the reported phases are the means over the
    batches.  ``batch_size`` rescales counts
    to another batch size (default: the trace's).

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> r = evaluate_plan(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])))
    >>> r.load_per_dpu.tolist(), r.mean_fanout
    ([2.0, 1.0], 1.0)
    """
    if trace.num_tables != len(plan.tables):
        raise PlanError(f"the trace has {trace.num_tables} tables, the plan {len(plan.tables)}")
    n = plan.topology.nr_dpus
    hw = perfmodel.get_profile(profile, nr_dpus=n)
    B = trace.batch_size
    scale = (B if batch_size is None else batch_size) / B
    loads = [float(len(trace.table_lookups(t)[0])) for t in range(len(plan.tables))]
    weighted = trace.per_sample_weights is not None
    model = CostModel(plan.tables, hw, n, weighted, nr_tasklets, loads, longest_bags(trace.lengths()))
    routers: dict[tuple[int, int], SliceRouter] = {}
    routed = route_trace(plan, trace, model, scale, routers)
    nb = trace.num_batches
    works = _batch_works(plan, trace, routed, model, scale, routers)
    phases = [perfmodel.model_batch(w, hw) for w in works]
    mean_phases = perfmodel.PhaseTimes(
        **{
            f: float(np.mean([getattr(p, f) for p in phases]))
            for f in ("cpu_to_dpu_s", "launch_s", "kernel_s", "dpu_to_cpu_s", "host_merge_s", "host_cache_s")
        },
        per_dpu_kernel_s=np.mean([p.per_dpu_kernel_s for p in phases], axis=0),
        energy_j=None if phases[0].energy_j is None else float(np.mean([p.energy_j for p in phases])),
    )
    load = routed.lookups.mean(axis=0)
    kernel = mean_phases.per_dpu_kernel_s
    per_rank = plan.topology.dpus_per_rank
    return PlanReport(
        num_batches=nb,
        batch_size=int(round(B * scale)),
        load_per_dpu=load,
        kernel_s_per_dpu=kernel,
        imbalance=float(load.max() / load.mean()) if load.mean() > 0 else 1.0,
        kernel_imbalance=float(kernel.max() / kernel.mean()) if kernel.mean() > 0 else 1.0,
        batch_imbalance=_batch_imbalance(routed.lookups),
        mean_fanout=routed.mean_fanout,
        fanout_per_table=routed.fanout_per_table,
        bytes_in=float(np.mean([w.index_bytes.sum() for w in works])),
        bytes_out=float(np.mean([w.output_bytes.sum() for w in works])),
        bytes_in_padded=float(np.mean([perfmodel.padded_total(w.index_bytes, per_rank) for w in works])),
        bytes_out_padded=float(np.mean([perfmodel.padded_total(w.output_bytes, per_rank) for w in works])),
        mram_bytes_per_dpu=plan.mram_bytes_per_dpu(),
        host_cache_hit_rate=routed.host_cache_hit_rate,
        modeled=mean_phases,
        noise_floor=noise_floor(routed.lookups),
        index_bytes=np.array([w.index_bytes for w in works]),
        output_bytes=np.array([w.output_bytes for w in works]),
    )


def shard_loads(plan: Plan, trace: Trace) -> np.ndarray:
    """Mean lookups per batch that each shard of ``plan`` serves on ``trace`` (routed as the engine does).

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> shard_loads(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3]))).tolist()
    [2.0, 1.0]
    """
    load = np.zeros(len(plan.shards))
    for t in range(len(plan.tables)):
        rows, bags = trace.table_lookups(t)
        keep = ~host_mask(plan, t, rows)
        rows, bags = rows[keep], bags[keep] % trace.batch_size
        routed: dict[tuple[Any, ...], tuple[list[int], np.ndarray]] = {}
        for lo, _ in column_slices(plan, t):
            members = [i for i in plan.shards_of(t) if plan.shards[i].col_start == lo]
            signature = tuple(_rows_signature(plan.shards[i].rows) for i in members)
            if signature not in routed:
                shard = SliceRouter(plan, t, lo).route_shards(rows, bags) if rows.size else np.zeros(0, np.int64)
                routed[signature] = (members, np.bincount(shard, minlength=len(plan.shards))[members])
            load[members] += routed[signature][1]
    return load / max(trace.num_batches, 1)


def imbalance_breakdown(plan: Plan, trace: Trace) -> dict[str, Any]:
    """The DPU load imbalance (max/mean) of ``plan`` on ``trace`` as a product of three factors.

    * ``idle``: DPUs / DPUs that serve lookups (DPUs with no shard, or only shards of
      rows nobody looks up, e.g. MRAM filled by a host-cached table);
    * ``across_tables``: the heaviest table's mean shard load over the mean load of
      the serving DPUs (tables whose parts come out at different levels);
    * ``within_tables``: the heaviest DPU over that heaviest table mean (uneven parts of
      a table, or several shards on one DPU).

    ``imbalance = idle * across_tables * within_tables``; ``heaviest_table`` names the
    table of the second factor, ``max_dpu_tables`` the tables with a shard on the
    heaviest DPU.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(3))
    >>> b = imbalance_breakdown(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3])))
    >>> b["serving_dpus"], b["idle"], round(b["across_tables"], 3), b["within_tables"], b["imbalance"]
    (2, 1.5, 0.667, 2.0, 2.0)
    """
    n = plan.topology.nr_dpus
    per_shard = shard_loads(plan, trace)
    dpu_of = np.array([s.dpu for s in plan.shards], dtype=np.int64)
    table_of = np.array([s.table for s in plan.shards], dtype=np.int64)
    per_dpu = np.bincount(dpu_of, weights=per_shard, minlength=n)
    total = float(per_dpu.sum())
    if total <= 0:
        return {
            "imbalance": 1.0,
            "idle": 1.0,
            "across_tables": 1.0,
            "within_tables": 1.0,
            "serving_dpus": 0,
            "dpus_without_shard": n - int(np.unique(dpu_of).size),
            "heaviest_table": None,
            "table_mean_shard_load": {},
            "max_dpu_tables": [],
        }
    serving = int((per_dpu > 0).sum())
    table_mean = {
        plan.tables[t].name: float(per_shard[table_of == t].mean())
        for t in range(len(plan.tables))
        if (table_of == t).any()
    }
    heaviest = max(table_mean, key=lambda name: table_mean[name])
    top = int(np.argmax(per_dpu))
    return {
        "imbalance": float(per_dpu.max() * n / total),
        "idle": n / serving,
        "across_tables": table_mean[heaviest] * serving / total,
        "within_tables": float(per_dpu.max()) / table_mean[heaviest],
        "serving_dpus": serving,
        "dpus_without_shard": n - int(np.unique(dpu_of).size),
        "heaviest_table": heaviest,
        "table_mean_shard_load": table_mean,
        "max_dpu_tables": sorted({plan.tables[table_of[i]].name for i in np.flatnonzero(dpu_of == top)}),
    }


def expected_work(
    plan: Plan,
    trace: Trace,
    *,
    batch: int = 0,
    nr_tasklets: int = 16,
    profile: str | perfmodel.HardwareProfile = perfmodel.DEFAULT_HARDWARE_PROFILE,
) -> perfmodel.BatchWork:
    """The :class:`~updlrm.perfmodel.BatchWork` of batch ``batch`` of ``trace`` under ``plan``.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.partitioner.workloads import Trace
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> expected_work(p, Trace(1, 2, np.array([0, 1, 7]), np.array([0, 2, 3]))).lookups.tolist()
    [2.0, 1.0]
    """
    if not 0 <= batch < trace.num_batches:
        raise IndexError(f"batch {batch} of a trace with {trace.num_batches} batches")
    idx, off, w = trace.batch(batch)
    one = Trace(trace.num_tables, trace.batch_size, idx, off, w, trace.table_names)
    n = plan.topology.nr_dpus
    hw = perfmodel.get_profile(profile, nr_dpus=n)
    loads = [float(len(one.table_lookups(t)[0])) for t in range(len(plan.tables))]
    model = CostModel(plan.tables, hw, n, w is not None, nr_tasklets, loads, longest_bags(one.lengths()))
    return _batch_works(plan, one, route_trace(plan, one, model, 1.0), model, 1.0)[0]
