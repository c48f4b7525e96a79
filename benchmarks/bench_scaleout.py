"""Scale-out: one workload over 1..8 UPMEM servers (modeled), and the exchange measured here.

Two parts, each with its baseline in the same run:

1. **Modeled scaling** (``updlrm.distributed.model``): 26 tables x 2M rows x 64 int8
   (3.3 GB), batch 4096, pooling 32, Zipf 1.05, every server 2,560 DPUs, 100 Gb/s
   Ethernet. For 1, 2, 4, 8 servers and each host split (table-, row-, column-wise):
   modeled batch time, its network share, and the speed-up over one server. Each
   host's own placement is the default row-wise one (no workload-aware per-host plan),
   so this isolates what splitting over hosts does.
2. **Measured here**: the same small workload run by one process
   (``TableBatchedEmbeddingBags``) and by 2 local processes on torch.distributed (gloo
   on 127.0.0.1, ``ShardedTableBatchedEmbeddingBags``): per-batch wall time, best of N
   >= 5 with the spread, the ratio, and the bytes exchanged. On one 2-core machine the
   two processes share the cores, so this measures the overhead of the exchange, not a
   speed-up.

Usage::

    python benchmarks/bench_scaleout.py [--quick] [--out benchmarks/results/scaleout.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from updlrm.baselines import Timing, cpu_model
from updlrm.distributed.cluster import HostSpec, plan_cluster
from updlrm.distributed.demo import scaling_table
from updlrm.distributed.launch import run_local
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.specs import TableSpec
from updlrm.tbe import TableBatchedEmbeddingBags

ROOT = Path(__file__).resolve().parent


def _measured_tables(quick: bool):
    rows = 20_000 if quick else 100_000
    return [TableSpec(f"t{i}", rows, 32) for i in range(8)]


def _sharded_rank(ctx, repeats: int, quick: bool):
    from updlrm.distributed.model import slice_batch, source_ranges
    from updlrm.distributed.sharded import ShardedTableBatchedEmbeddingBags

    tables = _measured_tables(quick)
    plan = plan_cluster(tables, [HostSpec(16)] * ctx.world_size, strategy="table_wise")
    trace = synthetic_trace(tables, batch_size=512, num_batches=1, pooling=16, alpha=1.05, seed=0)
    idx, off, psw = trace.batch(0)
    lo, hi = source_ranges(512, ctx.world_size)[ctx.rank]
    my = slice_batch(off, idx, psw, len(tables), 512, lo, hi)
    module = ShardedTableBatchedEmbeddingBags(plan, ctx, backend="emulator", nr_tasklets=16)
    samples, sent = [], 0
    try:
        module(*my)  # warm-up
        for _ in range(repeats):
            ctx.barrier()
            t0 = time.perf_counter()
            module(*my)
            samples.append(time.perf_counter() - t0)
            sent = module.last_stats.bytes_sent
    finally:
        module.close()
    return samples, sent


def measured(repeats: int, quick: bool) -> dict:
    tables = _measured_tables(quick)
    trace = synthetic_trace(tables, batch_size=512, num_batches=1, pooling=16, alpha=1.05, seed=0)
    idx, off, psw = trace.batch(0)
    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=16) as one:
        one(idx, off, psw)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            one(idx, off, psw)
            samples.append(time.perf_counter() - t0)
    single = Timing(tuple(samples))
    outcomes = run_local(2, _sharded_rank, repeats, quick, timeout_s=600)
    if not all(o.ok for o in outcomes):
        raise SystemExit("; ".join(o.error for o in outcomes if not o.ok))
    # A batch is done when the slower rank is.
    per_batch = tuple(max(o.value[0][k] for o in outcomes) for k in range(repeats))
    two = Timing(per_batch)
    return {
        "one_process": single.to_dict(),
        "two_processes": two.to_dict(),
        "ratio": two.best / single.best,
        "bytes_sent_per_rank": [o.value[1] for o in outcomes],
        "one_str": str(single),
        "two_str": str(two),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small tables, 1-2-4 hosts (about a minute)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "results" / "scaleout.json"))
    args = parser.parse_args()
    cpu = cpu_model()
    print(f"bench_scaleout on {cpu}")

    hosts = (1, 2, 4) if args.quick else (1, 2, 4, 8)
    rows = 200_000 if args.quick else 2_000_000
    t0 = time.perf_counter()
    table = scaling_table(
        hosts=hosts,
        nr_tables=26,
        rows=rows,
        dim=64,
        row_format="int8",
        batch_size=4096,
        pooling=32.0,
        alpha=1.05,
        model_dpus=2560,
    )
    print(
        f"\n1. modeled: 26 tables x {rows:,} rows x 64 int8, batch 4096, pooling 32, Zipf 1.05, "
        f"2,560 DPUs per server, ethernet-100g ({time.perf_counter() - t0:.0f} s to model)"
    )
    print(f"  {'servers':>7}  " + "  ".join(f"{s:>26}" for s in ("table_wise", "row_wise", "column_wise")))
    base = {s: table[0][s]["total_s"] for s in ("table_wise", "row_wise", "column_wise")}
    for row in table:
        cells = []
        for s in ("table_wise", "row_wise", "column_wise"):
            r = row[s]
            cells.append(
                f"{r['total_s'] * 1e3:7.2f} ms ({base[s] / r['total_s']:4.2f}x, net {r['network_s'] * 1e3:4.2f})"
            )
        print(f"  {row['hosts']:>7}  " + "  ".join(f"{c:>26}" for c in cells))

    print(f"\n2. measured here: 8 tables, batch 512, one process vs 2 local processes (gloo), best of {args.repeats}")
    m = measured(args.repeats, args.quick)
    print(f"  one process      {m['one_str']}")
    print(f"  two processes    {m['two_str']}")
    print(
        f"  ratio            {m['ratio']:.2f}x the one-process time (exchange overhead on shared cores); "
        f"{sum(m['bytes_sent_per_rank']) / 1e6:.2f} MB sent per batch"
    )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu, "modeled": table, "measured": m}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
