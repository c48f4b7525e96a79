"""Stage 5 of :mod:`.placement`: the candidate plans, evaluated on the build trace, and the fastest.

A candidate is one layout with one row assignment, placed on the DPUs and evaluated
(:mod:`.evaluate`).  The layouts are the search's (:func:`~.search.search_layout`) and,
when that layout host-caches rows and ``cache="auto"`` leaves the choice to the planner,
the same search without a host cache; the row assignments are one or, for
``graph="auto"``, two.  With a host cost model the CPU alone is one more candidate.

The perfmodel prices the DPU phases.  The host's phases (route+pack, the host-cached
rows' sum, the merge) are measured in the C host runtime
(:func:`~.host_phases.measure_side_by_side`, a dry engine each, batch by batch in
turn) whenever the candidates differ
in them in ways the perfmodel cannot price: with a host cost model, and between a layout
with a host cache and one without.  The search prices a host-cached lookup at the
profile's gather rate and takes the host's work as hidden behind the DPUs; measured, the
host cache also makes routing and the start of every bag's sum dearer, and its gathers
miss the CPU's caches once the cached rows outgrow them.  So whether the host cache pays
is decided on measured host phases, not on the model that proposed it.

Example:
    >>> from updlrm.specs import TableSpec, Topology
    >>> from updlrm.partitioner.placement import build_plan
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 2000, 8)]
    >>> trace = synthetic_trace(tables, batch_size=128, num_batches=2, pooling=8, alpha=1.2, seed=1)
    >>> plan = build_plan(tables, trace, Topology(4), progress=False, holdout=0, graph="none", host_cache_bytes=8 << 10)
    >>> sorted(plan.metadata["row_assignment"]["host_phases"])  # both measured, the faster kept
    ['none', 'none (no host cache)']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from updlrm.partitioner.evaluate import PlanReport
from updlrm.partitioner.host_phases import HostPhases, apply_host_phases, measure_side_by_side
from updlrm.partitioner.rank_order import RankOrder
from updlrm.partitioner.rows import TableRows
from updlrm.partitioner.search import Layout, TableShape
from updlrm.partitioner.workloads import Trace
from updlrm.plan import Plan

__all__ = ["Candidate", "NO_HOST_CACHE", "chosen_layout", "evaluate_candidates"]

#: The name of the layout variant searched without a host cache.
NO_HOST_CACHE = "no host cache"


@dataclass
class Candidate:
    """One row assignment (``method``: the ``graph`` mode) of one layout (``variant``: ``""`` for
    the search's, :data:`NO_HOST_CACHE`), placed on DPUs and evaluated."""

    method: str
    plan: Plan
    report: PlanReport
    rows: list[TableRows]
    rank_order: RankOrder | None = None
    #: The host's measured phases of the plan, in ``report``'s host phases.
    host_phases: HostPhases | None = None
    variant: str = ""
    layout: Layout | None = None

    @property
    def name(self) -> str:
        """``method``, with the layout variant in brackets: ``"none (no host cache)"``.

        >>> Candidate("graph", None, None, [], variant=NO_HOST_CACHE).name  # type: ignore[arg-type]
        'graph (no host cache)'
        """
        return f"{self.method} ({self.variant})" if self.variant else self.method


def evaluate_candidates(
    layouts: list[tuple[str, Layout]],
    methods: tuple[str, ...],
    place: Callable[[str, Layout], Candidate],
    trace: Trace,
    batch: int,
    cpu_only: Callable[[], Candidate] | None,
    on_measure: Callable[[], None] = lambda: None,
) -> list[Candidate]:
    """Every ``(variant, layout)`` placed with every row method (``place``), then, with a host
    cost model (``cpu_only`` given), the CPU alone.  Host phases are measured on ``trace``
    for every DPU candidate when there is a host cost model or more than one layout
    (``on_measure`` is called first, for a progress bar)."""
    candidates = []
    for variant, layout in layouts:
        if layout.cpu_only and cpu_only is not None:
            continue  # the CPU-only candidate below is that plan
        for method in methods:
            candidate = place(method, layout)
            candidates.append(dataclasses.replace(candidate, variant=variant, layout=layout))
    if cpu_only is not None or len(layouts) > 1:
        on_measure()
        # Side by side, batch by batch in turn: a burst of load on the machine must not
        # decide between the candidates.
        for c, phases in zip(candidates, measure_side_by_side([c.plan for c in candidates], trace)):
            c.host_phases = phases
            apply_host_phases(c.report, c.host_phases, batch)
    if cpu_only is not None:
        # Never slower than the CPU alone (as evaluated on the trace, like the others).
        candidates.append(cpu_only())
    return candidates


def chosen_layout(chosen: Candidate, searched: Layout, nr_tables: int) -> Layout:
    """The layout ``chosen`` was placed from; the CPU alone's is every table on the host."""
    if chosen.method == "cpu_only":
        if searched.cpu_only:
            return searched
        return dataclasses.replace(
            searched,
            shapes=[TableShape(0, 1) for _ in range(nr_tables)],
            cached=searched.cached * 0,
            estimate_s=chosen.report.modeled.total_s,
        )
    assert chosen.layout is not None
    return chosen.layout
