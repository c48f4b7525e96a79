"""Rank ordering of DPUs (``partitioner/rank_order.py``): rank padding on held-out batches, with and without it.

For each workload, ``build_plan`` builds the plan twice on the same build batches --
once as it ships (DPUs renamed so that similar transfer sizes share a rank) and once
with the renaming switched off (the assignment's DPU ids) -- and both plans are
evaluated on the held-out batches that follow (same generator, not built from).
Printed per plan: rank-padded / unpadded bytes in and out, the modeled batch, and the
modeled transfer phases on the profile as shipped (ranks fully concurrent, so a batch's
transfer time follows its largest buffer, which no renaming changes) and with a host
transfer cap of ``--host-cap`` GB/s (hypothetical: no profile has a measured one) under
which padded bytes cost time.

Workloads: ``bench_partitioner``'s (8 tables x 50k rows, dim 64, batch 1024, pooling 32,
256 DPUs, co-occurrence 0.6) at Zipf ``--alphas``, built as ``graph="auto"`` (``ours``)
and ``cache="replicate", graph="none"`` (``nocache``); and ``mixed``: the same with
dims 16-256 (each DPU's output bytes follow the dims of the tables it holds).

Usage::

    python benchmarks/bench_rank_order.py [--alphas 0.9 1.05 1.2] [--held-batches 32] [--out results/rank_order.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from updlrm import perfmodel
from updlrm.hardware import DEFAULT_HARDWARE_PROFILE
from updlrm.partitioner import placement
from updlrm.partitioner.placement import build_plan, evaluate_plan
from updlrm.partitioner.rank_order import order_ranks
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.specs import TableSpec, Topology

BUILD_BATCHES = 16
DPUS = 256


def _assignment_ids(index_bytes, output_bytes, dpus_per_rank, weights):
    """``order_ranks`` with every DPU in one rank: the assignment's ids are kept."""
    return order_ranks(index_bytes, output_bytes, max(index_bytes.shape[1], 1), weights)


def _figures(plan, held, capped) -> dict:
    r = evaluate_plan(plan, held, DEFAULT_HARDWARE_PROFILE)
    c = evaluate_plan(plan, held, capped)
    return {
        "in_ratio": r.bytes_in_padded / r.bytes_in,
        "out_ratio": r.bytes_out_padded / r.bytes_out,
        "modeled_ms": r.modeled.total_s * 1e3,
        "transfer_ms": (r.modeled.cpu_to_dpu_s + r.modeled.dpu_to_cpu_s) * 1e3,
        "capped_modeled_ms": c.modeled.total_s * 1e3,
        "capped_transfer_ms": (c.modeled.cpu_to_dpu_s + c.modeled.dpu_to_cpu_s) * 1e3,
    }


def run(alphas: list[float], held_batches: int, host_cap: float, seed: int = 0) -> list[dict]:
    capped = perfmodel.get_profile(DEFAULT_HARDWARE_PROFILE, nr_dpus=DPUS).with_values(
        "capped", xfer_host_cap_bytes_per_s=host_cap * 1e9
    )
    workloads = [(f"alpha={a}", a, [64] * 8) for a in alphas] + [("mixed", 1.05, [16, 32, 64, 128, 256, 16, 32, 64])]
    variants = {"ours": {}, "nocache": {"cache": "replicate", "graph": "none"}}
    rows = []
    for name, alpha, dims in workloads:
        tables = [TableSpec(f"t{i}", 50_000, d) for i, d in enumerate(dims)]
        nb = BUILD_BATCHES + held_batches
        trace = synthetic_trace(
            tables, batch_size=1024, num_batches=nb, pooling=32, alpha=alpha, co_occurrence=0.6, seed=seed
        )
        build, held = trace.split(BUILD_BATCHES / nb)
        for variant, kwargs in variants.items():
            row = {"workload": name, "alpha": alpha, "dims": dims, "variant": variant}
            started = time.perf_counter()
            plan = build_plan(tables, build, Topology(DPUS), seed=seed, progress=False, **kwargs)
            row["build_s"] = time.perf_counter() - started
            row["rank_order"] = plan.metadata["rank_order"]
            row["after"] = _figures(plan, held, capped)
            real = placement.order_ranks
            placement.order_ranks = _assignment_ids  # type: ignore[assignment]
            try:
                row["before"] = _figures(
                    build_plan(tables, build, Topology(DPUS), seed=seed, progress=False, **kwargs), held, capped
                )
            finally:
                placement.order_ranks = real
            rows.append(row)
            b, a = row["before"], row["after"]
            print(
                f"{name:11s} {variant:8s} key {row['rank_order']['key']:10s} held-out padded/unpadded in "
                f"{b['in_ratio']:.4f} -> {a['in_ratio']:.4f}, out {b['out_ratio']:.4f} -> {a['out_ratio']:.4f}; "
                f"modeled {b['modeled_ms']:.4f} -> {a['modeled_ms']:.4f} ms (transfers {b['transfer_ms']:.4f} -> "
                f"{a['transfer_ms']:.4f}); cap {host_cap:g} GB/s: {b['capped_modeled_ms']:.4f} -> "
                f"{a['capped_modeled_ms']:.4f} ms (transfers {b['capped_transfer_ms']:.4f} -> "
                f"{a['capped_transfer_ms']:.4f})",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.9, 1.05, 1.2])
    parser.add_argument("--held-batches", type=int, default=32)
    parser.add_argument("--host-cap", type=float, default=10.0, help="GB/s of the hypothetical host transfer cap")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rank_order.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args.alphas, args.held_batches, args.host_cap)
    doc = {
        "profile": DEFAULT_HARDWARE_PROFILE,
        "host_cap_gb_per_s": args.host_cap,
        "machine": platform.platform(),
        "held_out_batches": args.held_batches,
        "run_s": time.perf_counter() - started,
        "workloads": rows,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
