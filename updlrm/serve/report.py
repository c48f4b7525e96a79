"""Text, JSON and a latency histogram of ``updlrm serve`` results.

Example:
    >>> format_rate(12345.6), format_ms(0.0123)
    ('12,346/s', '12.30 ms')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from updlrm.serve.loadgen import ScenarioResult

__all__ = ["format_result", "format_search", "write_histogram", "format_ms", "format_rate"]

_HOST_LABELS = {
    "gather_s": "gather requests",
    "sparse_s": "embedding layer",
    "dense_s": "MLPs + interaction",
    "respond_s": "respond to LoadGen",
}
_ENGINE_LABELS = {
    "validate_s": "validate",
    "route_s": "route + pack",
    "push_s": "CPU->DPU push",
    "launch_s": "launch + kernel",
    "pull_s": "DPU->CPU pull",
    "merge_s": "merge partials",
    "host_cache_s": "host-cache rows",
}
_MODELED_LABELS = {
    "cpu_to_dpu_s": "CPU->DPU push",
    "launch_s": "launch",
    "kernel_s": "kernel",
    "dpu_to_cpu_s": "DPU->CPU pull",
    "host_merge_s": "merge partials",
    "host_cache_s": "host-cache rows",
    "total_s": "total (overlap rule)",
}


def format_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def format_rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s"


def _phase_lines(title: str, values: dict, labels: dict, batches: int) -> list[str]:
    if batches <= 0 or not values:
        return []
    lines = [f"  {title} (mean per batch)"]
    for key, label in labels.items():
        if key in values:
            lines.append(f"    {label:<22} {format_ms(values[key] / batches):>12}")
    return lines


def format_result(r: ScenarioResult, *, loadgen_summary: bool = True) -> str:
    """One scenario: LoadGen's verdict and summary, then our latency, throughput and phases."""
    s = r.settings
    lines = []
    if loadgen_summary and r.loadgen_summary:
        lines.append(r.loadgen_summary.split("Test Parameters Used")[0].rstrip("= \n"))
        lines.append("")
    head = (
        "Offline"
        if r.scenario == "offline"
        else (f"Server at {r.settings.target_qps:,.0f} QPS, p99 bound {format_ms(s.latency_bound_s)}")
    )
    verdict = "VALID" if r.valid else "INVALID"
    lines.append(f"== updlrm serve: {head} -- LoadGen {r.loadgen.get('result', '?')}, ours {verdict}")
    nb = int(r.batch_sizes.size)
    lines.append(
        f"  samples {r.samples:,} in {r.wall_s:.2f} s = {format_rate(r.throughput)}; "
        f"{nb:,} batches, mean {r.batch_sizes.mean() if nb else 0:.1f} samples "
        f"(max {s.max_batch}, wait <= {format_ms(s.max_wait_s)})"
    )
    lines.append(
        f"  latency p50 {format_ms(r.percentile(50))}, p95 {format_ms(r.percentile(95))}, "
        f"p99 {format_ms(r.percentile(99))}, max {format_ms(float(r.latencies_s.max()) if r.samples else 0.0)}"
    )
    lines += _phase_lines("host phases, measured here", r.host_s, _HOST_LABELS, nb)
    sampled = "" if r.profiled_batches == nb else f", {r.profiled_batches} sampled batches"
    lines += _phase_lines(
        f"embedding engine phases, measured here{sampled}", r.engine_s, _ENGINE_LABELS, r.profiled_batches
    )
    lines += _phase_lines(
        f"embedding layer on UPMEM, modeled ({s.profile})", r.modeled_s, _MODELED_LABELS, r.profiled_batches
    )
    if r.profiled_batches and r.modeled_s.get("total_s", 0) > 0:
        per_sample = r.modeled_s["total_s"] / max(1, r.profiled_samples)
        lines.append(f"    => modeled embedding-layer throughput at these batch sizes: {format_rate(1 / per_sample)}")
    return "\n".join(lines)


def format_search(best_qps: float, runs: Sequence[ScenarioResult]) -> str:
    """The Server QPS search (and any confirmation runs that failed), one line per run."""
    lines = [f"== Server QPS search (p99 bound {format_ms(runs[0].settings.latency_bound_s) if runs else '?'}):"]
    for r in runs:
        lines.append(
            f"  {r.settings.target_qps:>10,.0f} QPS over {r.settings.duration_s:g} s  "
            f"p99 {format_ms(r.percentile(99)):>10}  LoadGen {r.loadgen.get('result', '?'):<7} -> "
            f"{'valid' if r.valid else 'invalid'}"
        )
    lines.append(f"  highest valid in the search: {best_qps:,.0f} QPS" if best_qps > 0 else "  no tried QPS was valid")
    return "\n".join(lines)


def write_histogram(results: Sequence[ScenarioResult], path: str | os.PathLike) -> Path:
    """A PNG with one latency histogram per scenario, p50/p95/p99 (and the Server bound) marked.

    >>> import tempfile, pathlib
    >>> from updlrm.serve.loadgen import ServeSettings
    >>> r = ScenarioResult("offline", ServeSettings(), 3, 1.0, np.array([0.001, 0.002, 0.004]), np.array([3]))
    >>> write_histogram([r], pathlib.Path(tempfile.mkdtemp()) / "h.png").stat().st_size > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    results = [r for r in results if r.samples]
    fig, axes = plt.subplots(len(results) or 1, 1, figsize=(8, 3.2 * max(1, len(results))), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        ms = r.latencies_s * 1e3
        ax.hist(ms, bins=min(100, max(10, int(np.sqrt(ms.size)))), color="#4a7fb5")
        for q, style in ((50, ":"), (95, "--"), (99, "-")):
            v = r.percentile(q) * 1e3
            ax.axvline(v, color="black", linestyle=style, linewidth=1, label=f"p{q} {v:.2f} ms")
        if r.scenario == "server":
            ax.axvline(
                r.settings.latency_bound_s * 1e3,
                color="red",
                linewidth=1.5,
                label=f"bound {r.settings.latency_bound_s * 1e3:.0f} ms",
            )
            title = f"Server, {r.settings.target_qps:,.0f} QPS ({'valid' if r.valid else 'invalid'})"
        else:
            title = f"Offline, {r.throughput:,.0f} samples/s"
        ax.set_title(f"{title}: {r.samples:,} samples")
        ax.set_xlabel("latency, issue to completion (ms)")
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
