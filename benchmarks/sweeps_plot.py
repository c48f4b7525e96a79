"""Plots of the sweeps benchmark (bench_sweeps.py): speedup, latency and phases per
swept parameter, from the JSON document the sweep writes.  Kept apart from the sweep
driver so each file holds one stage: measuring, and drawing what was measured."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

UNITS = {
    "batch_size": "samples per batch",
    "pooling": "lookups per bag",
    "dim": "embedding dimension",
    "alpha": "Zipf exponent alpha (0 = uniform)",
    "row_format": "row format",
    "dpus": "DPUs",
}
LOG_X = {"batch_size", "pooling", "dim", "dpus"}


def _xvalues(s: dict) -> tuple[list, bool]:
    values = s["values"]
    categorical = any(isinstance(v, str) for v in values)
    return (list(range(len(values))) if categorical else values), categorical


def _axes_setup(ax, param: str, s: dict, categorical: bool) -> None:
    if categorical:
        ax.set_xticks(range(len(s["values"])))
        ax.set_xticklabels(s["values"])
    elif param in LOG_X:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(UNITS[param])
    ax.grid(True, which="both", alpha=0.3)


def _save(fig, stem: pathlib.Path, suffix: str) -> pathlib.Path:
    fig.tight_layout()
    path = stem.with_name(f"{stem.name}_{suffix}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(doc: dict, stem: pathlib.Path) -> list[pathlib.Path]:
    meta = doc["meta"]
    plot_dpus = [n for n in meta["plot_dpus"] if n in meta["dpu_counts"]]
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(plot_dpus)))
    sweeps = [p for p in doc["sweeps"] if p != "dpus"]
    b = meta["base"]
    base_text = (
        f"base: {b['tables']} tables x {b['rows']:,} rows, dim {b['dim']}, {b['row_format']}, batch "
        f"{b['batch_size']}, pooling {b['pooling']}, alpha {b['alpha']}; profile {meta['profile']}; "
        f"torch on {meta['machine']['cpu']} (best of {meta['machine']['torch_threads']} and 1 threads)"
    )
    paths = []

    # 1) speedup grid
    ncols = 3
    nrows = -(-(len(sweeps) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax, param in zip(axes.flat, sweeps):
        s = doc["sweeps"][param]
        x, cat = _xvalues(s)
        for n, c in zip(plot_dpus, colors):
            y = [pt["modeled"][str(n)]["speedup"] for pt in s["points"]]
            ax.plot(x, y, "o-", color=c, label=f"{n} DPUs (model)")
        n = plot_dpus[-1]
        ax.plot(
            x,
            [pt["modeled"][str(n)]["speedup_estimate"] for pt in s["points"]],
            "x--",
            color=colors[-1],
            alpha=0.7,
            label=f"{n} DPUs, + host routing measured",
        )
        _axes_setup(ax, param, s, cat)
        ax.set_yscale("log")
        ax.axhline(1.0, color="red", lw=1)
        ax.axhspan(ax.get_ylim()[0] if ax.get_ylim()[0] < 1 else 0.1, 1.0, color="red", alpha=0.06)
        ax.set_ylabel("speedup vs torch CPU (x)")
        ax.set_title(f"Speedup vs {UNITS[param]}\n(below the red line the CPU is faster)", fontsize=10)
    ax = axes.flat[len(sweeps)]
    s = doc["sweeps"]["dpus"]
    for key, style in (("row_wise", "o-"), ("partitioner", "s-")):
        if key in s["plans"]:
            pt = s["plans"][key]
            ns = sorted(int(n) for n in pt["modeled"])
            ax.plot(
                ns,
                [pt["modeled"][str(n)]["speedup"] for n in ns],
                style,
                label={"row_wise": "default row-wise plan", "partitioner": "partitioner plan"}[key],
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.axhline(1.0, color="red", lw=1)
    ax.set_xlabel("DPUs")
    ax.set_ylabel("speedup vs torch CPU (x)")
    ax.set_title("Speedup vs DPU count (base workload)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    for a in axes.flat[len(sweeps) + 1 :]:
        a.axis("off")
    for a in axes.flat[: len(sweeps) + 1]:
        a.legend(fontsize=7)
    fig.suptitle("updlrm: modeled UPMEM batch latency vs torch CPU embedding_bag (measured)\n" + base_text, fontsize=9)
    paths.append(_save(fig, stem, "speedup"))

    # 2) latency grid
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax, param in zip(axes.flat, sweeps):
        s = doc["sweeps"][param]
        x, cat = _xvalues(s)
        ax.plot(x, [pt["torch_s"] * 1e3 for pt in s["points"]], "k^-", lw=2, label="torch CPU (measured)")
        ax.plot(
            x,
            [pt["emulator_wall_s"] * 1e3 for pt in s["points"]],
            "v:",
            color="grey",
            label=f"updlrm emulator, {meta['emulated_dpus']} DPUs (measured)",
        )
        for n, c in zip(plot_dpus, colors):
            ax.plot(
                x,
                [pt["modeled"][str(n)]["total_s"] * 1e3 for pt in s["points"]],
                "o-",
                color=c,
                label=f"UPMEM {n} DPUs (model)",
            )
        _axes_setup(ax, param, s, cat)
        ax.set_yscale("log")
        ax.set_ylabel("batch latency (ms)")
        ax.set_title(f"Batch latency vs {UNITS[param]}", fontsize=10)
        ax.legend(fontsize=7)
    ax = axes.flat[len(sweeps)]
    pt = doc["sweeps"]["dpus"]["plans"]["row_wise"]
    ns = sorted(int(n) for n in pt["modeled"])
    ax.plot(ns, [pt["torch_s"] * 1e3] * len(ns), "k^-", lw=2, label="torch CPU (measured)")
    for key, style in (("row_wise", "o-"), ("partitioner", "s-")):
        if key in doc["sweeps"]["dpus"]["plans"]:
            q = doc["sweeps"]["dpus"]["plans"][key]
            qs = sorted(int(n) for n in q["modeled"])
            ax.plot(
                qs,
                [q["modeled"][str(n)]["total_s"] * 1e3 for n in qs],
                style,
                label={"row_wise": "UPMEM, default row-wise plan", "partitioner": "UPMEM, partitioner plan"}[key],
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("DPUs")
    ax.set_ylabel("batch latency (ms)")
    ax.set_title("Batch latency vs DPU count (base workload)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    for a in axes.flat[len(sweeps) + 1 :]:
        a.axis("off")
    fig.suptitle("Batch latency: torch CPU and the emulator measured here, UPMEM modeled\n" + base_text, fontsize=9)
    paths.append(_save(fig, stem, "latency"))

    # 3) phases vs DPU count
    plans = doc["sweeps"]["dpus"]["plans"]
    fig, axes = plt.subplots(1, len(plans), figsize=(6.5 * len(plans), 4.6), squeeze=False)
    phase_fields = [
        ("CPU->DPU push", ("cpu_to_dpu_s",)),
        ("launch + kernel (slowest DPU)", ("launch_s", "kernel_s")),
        ("DPU->CPU pull", ("dpu_to_cpu_s",)),
        ("host merge", ("host_merge_s",)),
    ]
    for ax, (key, q) in zip(axes.flat, plans.items()):
        ns = sorted(int(n) for n in q["modeled"])
        xs = np.arange(len(ns))
        bottom = np.zeros(len(ns))
        for label, fields in phase_fields:
            h = np.array([sum(q["modeled"][str(n)][f] for f in fields) * 1e3 for n in ns])
            ax.bar(xs, h, bottom=bottom, label=label)
            bottom += h
        cache = np.array([q["modeled"][str(n)]["host_cache_s"] * 1e3 for n in ns])
        if cache.any():
            ax.plot(xs, cache, "D", color="purple", label="host-cache gather (overlaps the DPU side)")
        ax.axhline(q["torch_s"] * 1e3, color="k", lw=2, label="torch CPU (measured)")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("DPUs")
        ax.set_ylabel("modeled time per batch (ms)")
        ax.set_yscale("log")
        ax.set_title(
            {"row_wise": "default row-wise plan", "partitioner": "partitioner plan"}.get(key, key), fontsize=10
        )
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Modeled UPMEM phases per batch vs DPU count (stacked; log scale)\n" + base_text, fontsize=9)
    paths.append(_save(fig, stem, "phases"))
    return paths
