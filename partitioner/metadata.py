"""Stage 6 of the planner: what :func:`~updlrm.partitioner.placement.build_plan` records in ``plan.metadata``.

Per table the chosen layout (its name, row parts, column slices, storage, host rows,
expected fan-out and how its rows were partitioned), the options, the search's
estimate, which row assignment won, and the evaluation's summary
(:meth:`~updlrm.partitioner.evaluate.PlanReport.summary_dict`).

Example:
    >>> from updlrm.partitioner.search import TableShape
    >>> [layout_name(TableShape(k, c)) for k, c in ((1, 1), (4, 1), (1, 2), (4, 2))]
    ['table_wise', 'row_wise', 'column_wise', 'tiled']
"""

from __future__ import annotations

from typing import Any

from updlrm.partitioner.evaluate import PlanReport
from updlrm.partitioner.rows import TableRows
from updlrm.partitioner.search import Layout, TableShape
from updlrm.plan import Plan
from updlrm.specs import tables_hash

__all__ = ["layout_name", "plan_metadata", "table_strategies"]


def layout_name(shape: TableShape) -> str:
    """torchrec's name of a shape: ``table_wise``, ``row_wise``, ``column_wise`` or ``tiled``; ``host`` for the host CPU.

    A whole table held several times is ``data_parallel``; other replicated groups keep
    their shape's name (``replicas`` in the strategy says how many).
    """
    if shape.on_host:
        return "host"
    if shape.parts == 1 and shape.slices == 1:
        if shape.replicas > 1:
            return "data_parallel"
        return "table_wise"
    if shape.slices == 1:
        return "row_wise"
    return "column_wise" if shape.parts == 1 else "tiled"


def table_strategies(
    plan: Plan, layout: Layout, rows: list[TableRows], report: PlanReport, explicit_row_limit: int
) -> dict[str, dict[str, Any]]:
    """Per table name: its layout, shards, storage, host rows, expected fan-out and row partitioning."""
    strategy = {}
    for t, (spec, s, table_rows) in enumerate(zip(plan.tables, layout.shapes, rows)):
        strategy[spec.name] = {
            "layout": layout_name(s),
            "row_parts": s.parts,
            "column_slices": s.slices,
            "replicas": s.replicas,
            "shards": len(plan.shards_of(t)),
            "storage": "ranges" if spec.num_embeddings > explicit_row_limit else "explicit",
            "host_rows": spec.num_embeddings if s.on_host else int(layout.cached[t]),
            "expected_fanout": report.fanout_per_table[t],
            **table_rows.info(),
        }
    return strategy


def plan_metadata(
    plan: Plan,
    *,
    hardware: str,
    batch_size: int,
    options: dict[str, Any],
    layout: Layout,
    rows: list[TableRows],
    report: PlanReport,
    chosen: str,
    modeled_s: dict[str, float],
    explicit_row_limit: int,
    build_time_s: float,
) -> dict[str, Any]:
    """The JSON-ready ``plan.metadata`` of a built plan (``hardware``: the hardware profile's name)."""
    return {
        "builder": "updlrm.partitioner.build_plan",
        "tables_hash": tables_hash(plan.tables),
        "profile": hardware,
        "batch_size": batch_size,
        "options": options,
        "strategy": table_strategies(plan, layout, rows, report, explicit_row_limit),
        "search_estimate_s": layout.estimate_s,
        "row_assignment": {"chosen": chosen, "modeled_s": modeled_s},
        **report.summary_dict(),
        "build_time_s": build_time_s,
    }
