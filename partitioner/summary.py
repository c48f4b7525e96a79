"""Human-readable plan summaries: a torchrec-planner-style printout and a PNG of load per DPU.

Example:
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> text = plan_summary(uniform_plan([TableSpec("a", 1000, 16)], Topology(4)))
    >>> "a" in text and "row_wise" in text
    True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from updlrm.plan import Plan, format_bytes


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |", line]
    out += [
        "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
        for r in rows
    ]
    out.append(line)
    return out


def _layout_of(plan: Plan, t: int) -> tuple[str, str]:
    strategy = plan.metadata.get("strategy", {}).get(plan.tables[t].name)
    if strategy:
        shape = f"{strategy['row_parts']}x{strategy['column_slices']}"
        replicas = strategy.get("replicas", 1)
        return strategy["layout"], shape + (f" x{replicas} replicas" if replicas > 1 else "")
    shards = [plan.shards[i] for i in plan.shards_of(t)]
    slices = len(plan.col_splits(t)) - 1
    parts = len(shards) // max(slices, 1)
    layout = (
        "table_wise"
        if parts <= 1 and slices == 1
        else "row_wise"
        if slices == 1
        else "column_wise"
        if parts <= 1
        else "tiled"
    )
    return layout, f"{parts}x{slices}"


def plan_summary(plan: Plan, report=None) -> str:
    """The plan as text: one row per table, per-rank load, and the modeled batch.

    ``report`` (a :class:`~updlrm.partitioner.placement.PlanReport`) adds measured
    fan-out per table; without it the plan's metadata is used when present.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> print(plan_summary(uniform_plan([TableSpec("a", 10, 4)], Topology(2))).splitlines()[0])
    updlrm plan: 1 tables on 2 DPUs (1 ranks of 64), builder uniform_plan:row_wise
    """
    meta = plan.metadata
    topo = plan.topology
    lines = [
        f"updlrm plan: {len(plan.tables)} tables on {topo.nr_dpus} DPUs ({topo.nr_ranks} ranks of "
        f"{topo.dpus_per_rank}), builder {meta.get('builder', 'unknown')}"
    ]
    if meta.get("profile"):
        lines.append(
            f"tuned for profile {meta['profile']}, batch size {meta.get('batch_size')}, workload {plan.workload_hash}"
        )
    rows = []
    strategies = meta.get("strategy", {})
    fanouts = report.fanout_per_table if report is not None else None
    for t, spec in enumerate(plan.tables):
        layout, shape = _layout_of(plan, t)
        shards = [plan.shards[i] for i in plan.shards_of(t)]
        dpus = len({s.dpu for s in shards})
        table_mram = sum(s.mram_bytes(spec) for s in shards)
        host = len(plan.host_rows.get(t, ()))
        st = strategies.get(spec.name, {})
        replicated = st.get("replicated_rows", "-")
        fan = fanouts[t] if fanouts is not None else st.get("expected_fanout")
        rows.append(
            [
                spec.name,
                f"{spec.num_embeddings:,}",
                str(spec.embedding_dim),
                spec.row_format.value,
                layout,
                shape,
                str(dpus),
                format_bytes(table_mram),
                f"{host:,}",
                str(replicated),
                st.get("partitioner", "-"),
                "-" if fan is None else f"{fan:.2f}",
            ]
        )
    lines += _table(
        [
            "table",
            "rows",
            "dim",
            "format",
            "layout",
            "parts",
            "DPUs",
            "MRAM",
            "host rows",
            "replicated",
            "rows by",
            "fan-out",
        ],
        rows,
    )
    load = report.load_per_dpu if report is not None else plan.expected_load
    mram = plan.mram_bytes_per_dpu()
    rank_rows = []
    per = topo.dpus_per_rank
    for r in range(topo.nr_ranks):
        lo, hi = r * per, min((r + 1) * per, topo.nr_dpus)
        cells = [f"rank {r}", f"{lo}-{hi - 1}", str(sum(1 for s in plan.shards if lo <= s.dpu < hi))]
        if load is not None:
            part = np.asarray(load[lo:hi])
            cells += [f"{part.min():.1f}", f"{part.mean():.1f}", f"{part.max():.1f}"]
        cells.append(format_bytes(float(mram[lo:hi].max())))
        rank_rows.append(cells)
    if len(rank_rows) > 16:
        rank_rows = rank_rows[:8] + [["..."] + [""] * (len(rank_rows[0]) - 1)] + rank_rows[-8:]
    headers = (
        ["rank", "DPUs", "shards"] + (["load min", "load mean", "load max"] if load is not None else []) + ["MRAM max"]
    )
    lines += _table(headers, rank_rows)
    scalars = meta if report is None else report.summary_dict()
    if "modeled" in scalars:
        m = scalars["modeled"]
        lines.append(
            "modeled batch: "
            + ", ".join(f"{k[:-2]} {v * 1e3:.3f} ms" for k, v in m.items() if v is not None and k.endswith("_s"))
        )
        lines.append(
            f"load imbalance (max/mean) {scalars['imbalance']:.3f}, mean bag fan-out "
            f"{scalars['mean_fanout']:.2f}, bytes in/out per batch {format_bytes(scalars['bytes_in_padded'])}/"
            f"{format_bytes(scalars['bytes_out_padded'])} (rank-padded), host-cache hit rate "
            f"{scalars['host_cache_hit_rate']:.1%}"
        )
    lines += rank_order_summary(meta)
    lines += host_cpu_summary(meta)
    lines += candidates_summary(meta)
    if "held_out" in meta and "in_sample" in meta:
        ins, held = meta["in_sample"], meta["held_out"]
        lines.append(
            f"estimate on the build trace {ins['modeled_s'] * 1e3:.3f} ms (imbalance {ins['imbalance']:.3f}), "
            f"on {held['batches']} held-out batch(es) it was not built from {held['modeled_s'] * 1e3:.3f} ms "
            f"(imbalance {held['imbalance']:.3f}, fan-out {held['mean_fanout']:.2f})"
        )
    total = sum(s.mram_bytes(plan.tables[s.table]) for s in plan.shards)
    lines.append(
        f"MRAM: {format_bytes(total)} of rows, busiest DPU {format_bytes(float(mram.max()))} of "
        f"{format_bytes(topo.mram_bytes_per_dpu)}; {len(plan.shards)} shards"
        + (f"; built in {meta['build_time_s']:.1f} s" if "build_time_s" in meta else "")
    )
    return "\n".join(lines)


def rank_order_summary(meta: dict) -> list[str]:
    """The plan summary's line on how the DPUs were ordered into ranks (:mod:`.rank_order`).

    >>> rank_order_summary({"rank_order": {"key": "output", "bytes_in": 100.0, "bytes_out": 50.0,
    ...     "bytes_in_padded": [110.0, 104.0], "bytes_out_padded": [60.0, 52.0]}})[0]
    'DPUs ordered into ranks by output bytes: rank-padded bytes per batch in 110 B -> 104 B (x1.100 -> x1.040 the unpadded), out 60 B -> 52 B (x1.200 -> x1.040) on the build trace'
    """
    order = meta.get("rank_order")
    if not order:
        return []
    key = {
        "assignment": "the assignment's ids (no sorted order pads less, cross-fitted)",
        "time": "modeled transfer time",
    }.get(order["key"], f"{order['key']} bytes")

    def ratio(padded: float, unpadded: float) -> str:
        return f"x{padded / unpadded:.3f}" if unpadded > 0 else "x-"

    (in0, in1), (out0, out1) = order["bytes_in_padded"], order["bytes_out_padded"]
    b_in, b_out = order["bytes_in"], order["bytes_out"]
    return [
        f"DPUs ordered into ranks by {key}: rank-padded bytes per batch in {format_bytes(in0)} -> "
        f"{format_bytes(in1)} ({ratio(in0, b_in)} -> {ratio(in1, b_in)} the unpadded), out {format_bytes(out0)} -> "
        f"{format_bytes(out1)} ({ratio(out0, b_out)} -> {ratio(out1, b_out)}) on the build trace"
    ]


def host_cpu_summary(meta: dict) -> list[str]:
    r"""The host-vs-DPU lines of a plan summary: which tables go where and the modeled batch of each choice.

    >>> meta = {"host_cpu": {"cpu_only": False, "plan_s": 1e-3, "cpu_only_s": 3e-3, "host_tables": ["b"],
    ...     "tables": {"a": {"where": "dpus", "batch_s_on_dpus": 1e-3, "batch_s_on_host": 2e-3},
    ...                "b": {"where": "host", "batch_s_on_dpus": 1.5e-3, "batch_s_on_host": 1e-3}},
    ...     "model": {"machine": "AMD EPYC", "source": "measured", "threads": 2}}}
    >>> print("\n".join(host_cpu_summary(meta)))
    host CPU vs DPUs: plan 1.000 ms, every table on the host CPU 3.000 ms -> DPUs and host CPU (host: b)
      a: DPUs (batch 1.000 ms on the DPUs, 2.000 ms with it on the host)
      b: host CPU (batch 1.000 ms on the host, 1.500 ms with it on the DPUs)
      host cost calibrated on AMD EPYC (measured, 2 torch threads)
    """
    info = meta.get("host_cpu")
    if not info:
        return []
    verdict = (
        "CPU only: every table on the host CPU (no DPU layout models faster)"
        if info["cpu_only"]
        else "DPUs and host CPU (host: " + ", ".join(info["host_tables"]) + ")"
        if info["host_tables"]
        else "DPUs only"
    )
    lines = [
        f"host CPU vs DPUs: plan {info['plan_s'] * 1e3:.3f} ms, every table on the host CPU "
        f"{info['cpu_only_s'] * 1e3:.3f} ms -> {verdict}"
    ]
    for name, c in info.get("tables", {}).items():
        if c["where"] == "host":
            lines.append(
                f"  {name}: host CPU (batch {c['batch_s_on_host'] * 1e3:.3f} ms on the host, "
                f"{c['batch_s_on_dpus'] * 1e3:.3f} ms with it on the DPUs)"
            )
        else:
            lines.append(
                f"  {name}: DPUs (batch {c['batch_s_on_dpus'] * 1e3:.3f} ms on the DPUs, "
                f"{c['batch_s_on_host'] * 1e3:.3f} ms with it on the host)"
            )
    model = info.get("model", {})
    lines.append(
        f"  host cost calibrated on {model.get('machine', '?')} ({model.get('source', '?')}, "
        f"{model.get('threads', '?')} torch threads)"
    )
    return lines


def candidates_summary(meta: dict) -> list[str]:
    r"""The plan summary's lines on the candidate plans (:mod:`.choose`): each one's estimate on the
    build trace and, where measured, its host phases.

    >>> meta = {"row_assignment": {"chosen": "none (no host cache)",
    ...     "modeled_s": {"none": 3e-3, "none (no host cache)": 2e-3},
    ...     "host_phases": {"none (no host cache)": {"median_s": 2e-4, "best_s": 1.5e-4, "batches": 5,
    ...         "batch_size": 64, "host_threads": 2, "host_cache_median_s": 1e-4, "merge_median_s": 3e-4}}}}
    >>> print("\n".join(candidates_summary(meta)))
    candidates on the build trace: none 3.000 ms, none (no host cache) 2.000 ms -> none (no host cache)
      host phases of none (no host cache), measured, in its estimate: route+pack 0.200 ms, host cache 0.100 ms, merge 0.300 ms (medians of 5 batches of 64, 2 host threads)
    """
    info = meta.get("row_assignment")
    if not info or len(info.get("modeled_s", {})) < 2:
        return []
    lines = [
        "candidates on the build trace: "
        + ", ".join(f"{name} {s * 1e3:.3f} ms" for name, s in info["modeled_s"].items())
        + f" -> {info['chosen']}"
    ]
    for name, r in info.get("host_phases", {}).items():
        others = "".join(
            f", {label} {r[key] * 1e3:.3f} ms"
            for label, key in (("host cache", "host_cache_median_s"), ("merge", "merge_median_s"))
            if r.get(key) is not None
        )
        lines.append(
            f"  host phases of {name}, measured, in its estimate: route+pack "
            f"{r['median_s'] * 1e3:.3f} ms{others} (medians of {r['batches']} batches of {r['batch_size']}, "
            f"{r['host_threads']} host threads)"
        )
    return lines


def plot_load(plan: Plan, path: str | os.PathLike, report=None) -> Path:
    """Write a PNG of expected lookups per DPU (bars coloured by rank, mean line) and MRAM use.

    >>> import tempfile, pathlib
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 100, 8)], Topology(4))
    >>> p.expected_load = np.array([1.0, 2, 3, 4])
    >>> plot_load(p, pathlib.Path(tempfile.mkdtemp()) / "load.png").exists()
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = report.load_per_dpu if report is not None else plan.expected_load
    if load is None:
        raise ValueError("the plan has no expected load; build it with build_plan or pass a PlanReport")
    load = np.asarray(load, dtype=np.float64)
    topo = plan.topology
    dpus = np.arange(topo.nr_dpus)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    colors = np.where((dpus // topo.dpus_per_rank) % 2 == 0, "tab:blue", "tab:cyan")
    ax.bar(dpus, load, width=1.0, color=colors, linewidth=0)
    ax.axhline(load.mean(), color="black", linestyle="--", linewidth=1, label=f"mean {load.mean():.1f}")
    ax.axhline(
        load.max(),
        color="tab:red",
        linestyle=":",
        linewidth=1,
        label=f"max {load.max():.1f} (imbalance {load.max() / max(load.mean(), 1e-12):.3f})",
    )
    ax.set_ylabel("expected lookups per batch")
    ax.set_title(f"Load per DPU ({topo.nr_dpus} DPUs, ranks of {topo.dpus_per_rank} in alternating colours)")
    ax.legend(loc="lower right", framealpha=0.9)
    mram = plan.mram_bytes_per_dpu() / 1e6
    ax2.bar(dpus, mram, width=1.0, color="tab:gray", linewidth=0)
    ax2.axhline(topo.mram_bytes_per_dpu / 1e6, color="tab:red", linestyle=":", linewidth=1, label="MRAM size")
    ax2.set_ylabel("MRAM rows (MB)")
    ax2.set_xlabel("DPU index")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
