"""Pipelined vs one-after-the-other batches: throughput on the emulator and modeled on hardware.

A stream of batches (Zipf 1.05 lookups from ``updlrm.partitioner.workloads.synthetic_trace``,
``--tables`` x ``--rows`` x ``--dim`` fp32, ``--batch`` samples, pooling ``--pooling``, a
row-wise plan on ``--dpus`` emulated DPUs; ``--partitioned`` uses
``updlrm.partitioner.placement.build_plan`` with its host cache instead) runs in the same
process, alternately:

* serial: ``Engine.run`` per batch (route+pack, push, launch, host-cache rows, pull, merge);
* pipelined: ``Engine.pipeline`` (one host thread merges batch i-1 and routes batch i+1
  while the DPUs run batch i).

Each is timed ``--repeats`` (>= 5) times; the best and the spread (min..max) are printed,
and every pipelined output is compared bit for bit with the serial one of the same batch.
The emulated DPUs are worker processes on the same CPUs as the host, so the overlap
measured here is bounded by the free cores; the modeled hardware stream
(``updlrm.perfmodel.model_stream``: the per-batch phases the performance model gives for
each batch's exact per-DPU work, with the route+pack time measured here) shows the
overlap on UPMEM hardware, where the DPUs do not compete with the host for cores.

Run: ``python benchmarks/bench_pipeline.py [--format int8]`` (``--quick`` for a small run);
writes ``benchmarks/results/pipeline-<format>[-partitioned][-quick].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from updlrm import perfmodel
from updlrm.baselines import cpu_model
from updlrm.host.engine import Engine
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.plan import uniform_plan
from updlrm.profile import DEFAULT_PROFILE, profile_batch
from updlrm.specs import RowFormat, TableSpec, Topology

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"  # one file per --format / plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=int, default=8)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--format",
        choices=("fp32", "int8"),
        default="fp32",
        help="row format (int8: integer adds, a much shorter kernel than software fp32)",
    )
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--pooling", type=float, default=32)
    parser.add_argument("--dpus", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12, help="batches per stream")
    parser.add_argument("--repeats", type=int, default=5, help="timed streams per mode (>= 5)")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="hardware profile of the model")
    parser.add_argument("--partitioned", action="store_true", help="build_plan with a host cache instead of row-wise")
    parser.add_argument("--quick", action="store_true", help="small tables and batches")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.batch, args.batches, args.dpus = 20_000, 256, 8, 16
    if args.repeats < 5:
        parser.error("--repeats must be >= 5 (best of N with the spread)")

    row_format = RowFormat(args.format)
    tables = [TableSpec(f"t{t}", args.rows, args.dim, row_format=row_format, scale=1 / 64) for t in range(args.tables)]
    trace = synthetic_trace(
        tables, batch_size=args.batch, num_batches=args.batches, pooling=args.pooling, alpha=1.05, seed=1
    )
    batches = [(i, o) for i, o, _ in trace.batches()]
    if args.partitioned:
        from updlrm.partitioner.placement import build_plan

        plan = build_plan(tables, trace, Topology(nr_dpus=args.dpus))
    else:
        plan = uniform_plan(
            tables, Topology(nr_dpus=args.dpus), "row_wise", dpus_per_table=max(1, args.dpus // args.tables)
        )
    rng = np.random.default_rng(0)
    if row_format == RowFormat.FP32:
        weights = [rng.standard_normal((t.num_embeddings, t.embedding_dim), dtype=np.float32) for t in tables]
    else:
        weights = [rng.integers(-128, 128, (t.num_embeddings, t.embedding_dim), dtype=np.int8) for t in tables]

    serial_times, piped_times, mismatches = [], [], 0
    with Engine(plan, weights) as engine:
        reference = [engine.run(*b) for b in batches]  # warm-up, and the outputs to match
        for _ in tqdm(range(args.repeats), desc="serial | pipelined streams", unit="pair"):
            start = time.perf_counter()
            runs = [engine.run(*b) for b in batches]
            serial_times.append(time.perf_counter() - start)
            serial, stats = [out for out, _ in runs], [s for _, s in runs]
            start = time.perf_counter()
            piped = [out for out, _ in engine.pipeline(batches)]
            piped_times.append(time.perf_counter() - start)
            mismatches += sum(
                not np.array_equal(a.view(np.uint32), b.view(np.uint32))
                for a, b in zip(serial + piped, [r[0] for r in reference] * 2)
            )
    n = len(batches)  # `stats`: the phases of the last serial stream
    best_serial, best_piped = min(serial_times), min(piped_times)

    def mean(key):
        return float(np.mean([getattr(s, key) for s in stats]))

    host_s = mean("route_s") + mean("merge_s")
    dpu_s = mean("push_s") + mean("launch_s") + mean("pull_s")
    modeled = [profile_batch(s, args.profile).modeled for s in stats]
    stream = perfmodel.model_stream(modeled, route_s=[s.route_s for s in stats])

    lookups = int(sum(s.nr_lookups for s in stats))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; emulator, {args.dpus} DPUs, {engine.nr_tasklets} tasklets")
    print(
        f"stream: {n} batches x {args.batch} samples x {args.tables} {args.format} tables of {args.rows:,} x {args.dim}, "
        f"pooling {args.pooling:g} "
        f"({lookups / n:,.0f} lookups per batch), {'partitioned' if args.partitioned else 'row-wise'} plan"
    )
    print(f"bit-identical pipelined outputs: {'yes' if mismatches == 0 else f'NO ({mismatches} differ)'}")
    print()
    print(f"{'measured (emulator)':<28}{'best':>10}{'spread':>22}{'batches/s':>12}")
    for name, times in (("serial (Engine.run)", serial_times), ("pipelined (Engine.pipeline)", piped_times)):
        print(
            f"{name:<28}{min(times) * 1e3:>8.1f}ms{min(times) * 1e3:>10.1f}..{max(times) * 1e3:.1f} ms"
            f"{n / min(times):>12.1f}"
        )
    print(f"{'speed-up (same run)':<28}{best_serial / best_piped:>9.2f}x")
    print(
        f"per batch here: host stages (route+pack, merge) {host_s * 1e3:.2f} ms, DPU stage (push, launch, pull) "
        f"{dpu_s * 1e3:.2f} ms: overlap could reach {(host_s + dpu_s) / max(host_s, dpu_s):.2f}x with free cores"
    )
    print()
    print(f"modeled hardware ({args.profile}), route+pack as measured here:")
    print(
        f"  serial {stream.serial_s * 1e3:.3f} ms, pipelined {stream.pipelined_s * 1e3:.3f} ms for {n} batches: "
        f"{stream.speedup:.2f}x; steady state {stream.period_s * 1e6:.0f} us per batch, bound by the {stream.bound}"
    )
    results = {
        "cpu": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "args": vars(args),
        "bit_identical": mismatches == 0,
        "serial_s": serial_times,
        "pipelined_s": piped_times,
        "speedup": best_serial / best_piped,
        "host_stage_s": host_s,
        "dpu_stage_s": dpu_s,
        "modeled": stream.as_dict(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    name = f"pipeline-{args.format}{'-partitioned' if args.partitioned else ''}{'-quick' if args.quick else ''}.json"
    (RESULTS.parent / name).write_text(json.dumps(results, indent=1))
    if mismatches:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
