"""Sweeps: torch CPU embedding_bag measured here vs updlrm modeled on 64..2,560 UPMEM DPUs.

For every workload point (one parameter varied around a base config):

* torch: the like-for-like CPU baseline (``updlrm.baselines.CpuBaseline``), one call per
  table (what torchrec's EmbeddingBagCollection does on CPU): fp32 rows on
  ``torch.nn.functional.embedding_bag``, int8 rows on torch's quantized byte-rowwise bag
  over the same quantized rows, int32 on ``embedding_bag`` over the dequantized rows; the
  best time over torch's default thread count and 1 thread (>= 5 runs each after 2
  warm-up calls, median and worst kept), timed on the same batches in the same run;
* updlrm: the batches run on the built-in emulator with ``--emulate-dpus`` DPUs and are
  checked against torch (float32 ``assert_close`` tolerances);
* hardware estimate: for each DPU count N, the exact per-DPU work of the batch under
  the plan for N DPUs is derived from the plan's routing and the host runtime's
  accounting (``updlrm.partitioner.batch_work.derive_work``: the same segments, partial sums, header
  and status bytes the engine counts) and modeled with ``updlrm.perfmodel``.  No N-DPU
  emulation is needed; on the emulated DPU count the derivation is compared with the
  engine's own counters for every batch (``derivation_checked`` in the JSON).

Speedup = torch CPU time (best) / modeled UPMEM batch latency (perfmodel ``total_s``: push,
launch, kernel, pull, host merge, host-cache overlap), with ``speedup_range`` over the
baseline's best and median and a ``verdict`` only when the range is on one side of 1
(``updlrm.baselines.Comparison``; the table's "winner" column says "-" otherwise).  ``estimate_s`` adds the host
work the model leaves out (validation and routing measured here, merge scaled to N's
partial sums); its speedup is reported beside.  Below 1 the CPU wins: every sweep
marks where that changes (``crossovers``).

Plans: the default row-wise plan (each table over N/T DPUs, ``updlrm.bench.bench_plan``);
the DPU-count sweep also models the partitioner's workload-aware plan
(``updlrm.partitioner.placement.build_plan``: hot-row host cache / replication, graph
partitioning) unless ``--no-partitioner``.

Run:   python benchmarks/bench_sweeps.py            (full: a few minutes, ~5 GB peak RAM)
       python benchmarks/bench_sweeps.py --quick    (CI-sized, ~30 s)
Writes benchmarks/results/sweeps.json, sweeps_speedup.png, sweeps_latency.png, sweeps_phases.png
(``--quick`` writes sweeps_quick.* instead, unless ``--out`` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

import numpy as np
import torch

# The sweep's plots live beside it (sweeps_plot.py), imported from this folder as
# bench_updlrm imports this module.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from sweeps_plot import UNITS, plot

from updlrm import perfmodel
from updlrm.baselines import Comparison, CpuBaseline
from updlrm.batch_loop import baseline_name, check_close, mean_timing, torch_embedding_bags
from updlrm.bench import bench_plan, end_to_end_estimate
from updlrm.partitioner.batch_work import derive_work
from updlrm.partitioner.workloads import synthetic_trace
from updlrm.perfmodel import DEFAULT_HARDWARE_PROFILE as DEFAULT_PROFILE
from updlrm.profile import profile_batch, profile_work, work_mismatch
from updlrm.specs import RowFormat, TableSpec, Topology
from updlrm.tbe import TableBatchedEmbeddingBags

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

# 8 tables of 250k rows x 64 fp32 = 512 MB: twice this machine's 260 MB L3, so torch's
# gathers are not all cache hits (production tables are far larger still).
FULL = {
    "base": dict(tables=8, rows=250_000, dim=64, batch_size=1024, pooling=32, alpha=1.05, row_format="fp32"),
    "sweeps": {
        "batch_size": [16, 64, 256, 1024, 4096, 16384],
        "pooling": [1, 4, 16, 32, 64, 128],
        "dim": [8, 16, 32, 64, 128, 256],
        "alpha": [0.0, 0.5, 0.8, 1.05, 1.2, 1.5],
        "row_format": ["fp32", "int32", "int8"],
    },
    "dpu_counts": [64, 128, 256, 512, 1024, 2048, 2560],
    "plot_dpus": [64, 256, 1024, 2560],
    "emulate_dpus": 64,
    "batches": 2,
    "partitioner_dpus": [64, 256, 1024, 2560],
}
QUICK = {
    "base": dict(tables=4, rows=2_000, dim=16, batch_size=128, pooling=8, alpha=1.05, row_format="fp32"),
    "sweeps": {
        "batch_size": [16, 128, 1024],
        "pooling": [1, 8, 32],
        "dim": [8, 16, 32],
        "alpha": [0.0, 1.05, 1.5],
        "row_format": ["fp32", "int8"],
    },
    "dpu_counts": [64, 256, 2560],
    "plot_dpus": [64, 256, 2560],
    "emulate_dpus": 16,
    "batches": 1,
    "partitioner_dpus": [64, 256],
}


class TableSet:
    """One set of tables (weights, the emulator module and per-N plans), reused across points."""

    def __init__(self, cfg: dict, emulate: int, seed: int, say) -> None:
        self.specs = [
            TableSpec(f"t{i}", cfg["rows"], cfg["dim"], row_format=RowFormat(cfg["row_format"]))
            for i in range(cfg["tables"])
        ]
        rng = np.random.default_rng(seed)
        say(f"tables: {cfg['tables']} x {cfg['rows']:,} x {cfg['dim']} {cfg['row_format']}")
        # float32 weights: the fp32 TBE keeps this very array, and torch shares it, so the
        # tables are in memory twice (here and in the emulated MRAM), not three times.
        bound = np.sqrt(1.0 / cfg["rows"])
        values = [rng.uniform(-bound, bound, size=(cfg["rows"], cfg["dim"])).astype(np.float32) for _ in self.specs]
        self.emulate = emulate
        self.plans = {emulate: bench_plan(self.specs, emulate)}
        self.routers: dict[tuple, dict] = {}
        self.tbe = TableBatchedEmbeddingBags(
            self.specs, plan=self.plans[emulate], backend="emulator", weights=values, seed=seed
        )
        if cfg["row_format"] == "fp32":
            self.weights = [torch.from_numpy(v) for v in values]
        else:  # the exact values the DPUs hold, dequantised: the reference must see the same rows
            del values
            self.weights = [torch.from_numpy(self.tbe.weights(t)) for t in range(len(self.specs))]
        # The timed baseline reads the rows the DPUs hold, in each format's torch op.
        self.baseline = CpuBaseline(self.specs, self.tbe._stored)

    def plan(self, n: int, key: str = "row_wise"):
        if key != "row_wise":
            return self.plans[(key, n)]
        if n not in self.plans:
            self.plans[n] = bench_plan(self.specs, n)
        return self.plans[n]

    def close(self) -> None:
        self.tbe.close()


def model_entry(p, torch_s: float, estimate_s: float) -> dict:
    d = {k: v for k, v in p.modeled.as_dict().items() if v is not None}
    d.update(
        speedup=torch_s / d["total_s"] if d["total_s"] > 0 else None,
        estimate_s=estimate_s,
        speedup_estimate=torch_s / estimate_s if estimate_s > 0 else None,
        bytes_to_dpu=p.bytes_to_dpu,
        bytes_from_dpu=p.bytes_from_dpu,
        padded_bytes_to_dpu=p.padded_bytes_to_dpu,
        padded_bytes_from_dpu=p.padded_bytes_from_dpu,
        lookups_max=float(p.work.lookups.max()),
        imbalance=p.imbalance,
        host_cache_hits=p.host_cache_hits,
        merge_elems=p.work.host_merge_elems,
    )
    return d


def run_point(
    ts: TableSet, cfg: dict, dpu_counts: list[int], batches: int, profile: str, seed: int, plan_key: str = "row_wise"
) -> dict:
    """Run one workload point: emulator + check, torch timing, modeled phases for every N."""
    trace = synthetic_trace(
        ts.specs,
        batch_size=cfg["batch_size"],
        num_batches=batches,
        pooling=cfg["pooling"],
        alpha=cfg["alpha"],
        seed=seed,
        pooling_distribution="fixed",
    )
    B = cfg["batch_size"]
    per_n: dict[int, list] = {n: [] for n in dpu_counts}  # (profile, end-to-end estimate) per batch
    torch_times, walls, measured, errs, ok, checked = [], [], [], [], True, True
    for idx, off, psw in trace.batches():
        t0 = time.perf_counter()
        out = ts.tbe(idx, off, psw)
        walls.append(time.perf_counter() - t0)
        stats = ts.tbe.last_stats
        here = profile_batch(stats, profile)
        measured.append(here.measured_s)
        if plan_key == "row_wise":
            derived_here = derive_work(
                ts.plan(ts.emulate), idx, off, psw, router_cache=ts.routers.setdefault(("row_wise", ts.emulate), {})
            )
            checked &= stats.nr_launches == 1 and not work_mismatch(derived_here, stats.work())
        ref = torch_embedding_bags(ts.weights, idx, off, B, psw).numpy()
        timing, _ = ts.baseline.time(idx, off, B, psw)
        torch_times.append(timing)
        err, good = check_close(out, ref)
        errs.append(err)
        ok &= good
        for n in dpu_counts:
            if n == ts.emulate and plan_key == "row_wise":
                p = here
            else:
                work = derive_work(
                    ts.plan(n, plan_key), idx, off, psw, router_cache=ts.routers.setdefault((plan_key, n), {})
                )
                p = profile_work(work, profile)
            scale = p.work.host_merge_elems / here.work.host_merge_elems if here.work.host_merge_elems else 1.0
            per_n[n].append((p, end_to_end_estimate(p.modeled, here.measured_s, scale)))
    # Per batch best of >= 5 (stalls on a shared machine are what the minimum filters out),
    # averaged over batches; the median and worst stay in the spread.
    cpu = mean_timing(torch_times)
    torch_s = cpu.best
    modeled = {}
    for n, entries in per_n.items():
        rows = [model_entry(p, torch_s, e) for p, e in entries]
        modeled[str(n)] = {
            k: (float(np.mean([r[k] for r in rows])) if rows[0][k] is not None else None) for k in rows[0]
        }
        # speedup of the means, not mean of speedups: one number per point, batch-weighted
        total = modeled[str(n)]["total_s"]
        modeled[str(n)]["speedup"] = torch_s / total if total > 0 else None
        modeled[str(n)]["speedup_estimate"] = torch_s / modeled[str(n)]["estimate_s"]
        if total > 0:
            comparison = Comparison(cpu, total)
            modeled[str(n)]["speedup_range"] = list(comparison.ratio_range)
            modeled[str(n)]["verdict"] = comparison.verdict
    return {
        "config": dict(cfg),
        "lookups_per_batch": float(trace.num_lookups / batches),
        "torch_s": torch_s,
        "torch_timing": {**cpu.to_dict(), "spread": cpu.spread},
        "baseline": baseline_name(ts.specs),
        "emulator_wall_s": float(np.mean(walls)),
        "emulated_dpus": ts.emulate,
        "measured_host_s": {k: float(np.mean([m[k] for m in measured])) for k in measured[0]},
        "max_abs_err": float(max(errs)),
        "passed": bool(ok),
        "derivation_checked": bool(checked) if plan_key == "row_wise" else None,
        "modeled": modeled,
    }


def plan_summary(plan) -> dict:
    """What the partitioner chose, in a few numbers (its full metadata is per table)."""
    meta = plan.metadata
    strategy = meta.get("strategy", {}).values()
    return {
        "layouts": sorted({s["layout"] for s in strategy}),
        "row_parts": sorted({s["row_parts"] for s in strategy}),
        "column_slices": sorted({s["column_slices"] for s in strategy}),
        "host_cached_rows": int(sum(s["host_rows"] for s in strategy)),
        "replicated_rows": int(sum(s.get("replicated_rows", 0) for s in strategy)),
        "build_time_s": meta.get("build_time_s"),
    }


def crossovers(points: list[dict], param: str, dpu_counts: list[int], key: str = "speedup") -> dict:
    """Per N: where along the sweep the winner changes, and which values each side wins."""
    out = {}
    for n in dpu_counts:
        values = [pt["config"][param] for pt in points]
        wins = [bool(pt["modeled"][str(n)][key] is not None and pt["modeled"][str(n)][key] > 1) for pt in points]
        changes = []
        for i in range(1, len(points)):
            if wins[i] != wins[i - 1]:
                changes.append(
                    {
                        "between": [values[i - 1], values[i]],
                        "direction": "DPUs start winning" if wins[i] else "CPU starts winning",
                    }
                )
        out[str(n)] = {
            "dpu_wins_at": [v for v, w in zip(values, wins) if w],
            "cpu_wins_at": [v for v, w in zip(values, wins) if not w],
            "changes": changes,
        }
    return out


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def run_sweeps(
    setup: dict, *, profile: str = DEFAULT_PROFILE, seed: int = 0, partitioner: bool = True, say=print
) -> dict:
    """Run every sweep of ``setup`` (``FULL``/``QUICK``-shaped) and return the JSON document."""
    started = time.perf_counter()
    base, dpu_counts, batches = setup["base"], list(setup["dpu_counts"]), setup["batches"]
    emulate = setup["emulate_dpus"]
    if emulate not in dpu_counts:
        dpu_counts = sorted(set(dpu_counts) | {emulate})
    sets: dict[tuple, TableSet] = {}

    def table_set(cfg: dict) -> TableSet:
        key = (cfg["tables"], cfg["rows"], cfg["dim"], cfg["row_format"])
        if key not in sets:
            for other in list(sets):  # one table set in memory at a time
                sets.pop(other).close()
            sets[key] = TableSet(cfg, emulate, seed, say)
        return sets[key]

    sweeps = {}
    for param, values in setup["sweeps"].items():
        points = []
        # Table-shaping parameters reload the tables; keep those runs grouped.
        for value in values:
            cfg = dict(base, **{param: value})
            say(f"[{time.perf_counter() - started:6.1f} s] {param} = {value}")
            points.append(run_point(table_set(cfg), cfg, dpu_counts, batches, profile, seed))
        sweeps[param] = {
            "param": param,
            "unit": UNITS[param],
            "values": list(values),
            "points": points,
            "crossovers": crossovers(points, param, dpu_counts),
            "crossovers_estimate": crossovers(points, param, dpu_counts, "speedup_estimate"),
        }

    # DPU count: the base point's modeled phases for every N, default plan and partitioner plan.
    base_point = (
        next(pt for pt in sweeps["batch_size"]["points"] if pt["config"] == base)
        if base["batch_size"] in setup["sweeps"].get("batch_size", [])
        else None
    )
    ts = table_set(base)
    if base_point is None:
        base_point = run_point(ts, base, dpu_counts, batches, profile, seed)
    dpus = {
        "param": "dpus",
        "unit": UNITS["dpus"],
        "values": dpu_counts,
        "config": base,
        "plans": {"row_wise": base_point},
    }
    if partitioner:
        from updlrm.partitioner.placement import build_plan

        # Built on other samples of the same workload: the batches after the ones the
        # sweep evaluates (same seed = same row popularity; another seed would draw
        # different hot rows, i.e. another workload).
        _, trace = synthetic_trace(
            ts.specs,
            batch_size=base["batch_size"],
            num_batches=2 * batches,
            pooling=base["pooling"],
            alpha=base["alpha"],
            seed=seed,
            pooling_distribution="fixed",
        ).split(0.5)
        part_counts = list(setup["partitioner_dpus"])
        for n in part_counts:
            say(
                f"[{time.perf_counter() - started:6.1f} s] partitioner plan for {n} DPUs (built on held-out batches of the same workload)"
            )
            # host_cpu="off": this sweep models DPU plans against the CPU; a plan that puts
            # tables on the host is the planner's own comparison (`updlrm plan`).
            ts.plans[("partitioner", n)] = build_plan(
                ts.specs, trace, Topology(n), profile=profile, seed=seed, progress=False, host_cpu="off"
            )
        # Correctness of the partitioner plan on the emulator (its own module, same weights).
        emulated_part = None
        if emulate in part_counts:
            plan = ts.plans[("partitioner", emulate)]
            with TableBatchedEmbeddingBags(
                ts.specs, plan=plan, backend="emulator", weights=[w.numpy() for w in ts.weights]
            ) as tbe:
                tr = synthetic_trace(
                    ts.specs,
                    batch_size=base["batch_size"],
                    num_batches=1,
                    pooling=base["pooling"],
                    alpha=base["alpha"],
                    seed=seed,
                    pooling_distribution="fixed",
                )
                idx, off, psw = tr.batch(0)
                out = tbe(idx, off, psw)
                err, good = check_close(out, torch_embedding_bags(ts.weights, idx, off, base["batch_size"]).numpy())
                same = not work_mismatch(derive_work(plan, idx, off, psw), tbe.last_stats.work())
                emulated_part = {"dpus": emulate, "max_abs_err": err, "passed": good, "derivation_checked": same}
        part_point = run_point(ts, base, part_counts, batches, profile, seed, plan_key="partitioner")
        part_point["emulator_check"] = emulated_part
        part_point["plan_summary"] = {str(n): plan_summary(ts.plans[("partitioner", n)]) for n in part_counts}
        dpus["plans"]["partitioner"] = part_point
    sweeps["dpus"] = dpus
    for s in list(sets):
        sets.pop(s).close()

    doc = {
        "meta": {
            "what": "torch CPU embedding_bag measured here vs updlrm modeled on UPMEM DPUs (see method)",
            "method": (__doc__ or "").strip(),
            "profile": profile,
            "profile_sources": {name: src for name, _, src in perfmodel.get_profile(profile).describe()},
            "emulated_dpus": emulate,
            "dpu_counts": dpu_counts,
            "plot_dpus": setup["plot_dpus"],
            "batches_per_point": batches,
            "base": base,
            "seed": seed,
            "bag_sizes": "fixed",
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
            "elapsed_s": time.perf_counter() - started,
        },
        "sweeps": sweeps,
    }
    doc["summary"] = summarize(doc)
    doc["all_passed"] = all(pt["passed"] for s in sweeps.values() if "points" in s for pt in s["points"])
    doc["all_derivations_checked"] = all(
        pt["derivation_checked"] for s in sweeps.values() if "points" in s for pt in s["points"]
    )
    return doc


def summarize(doc: dict) -> list[dict]:
    """One row per sweep point: torch, modeled at the smallest and largest N, and who wins."""
    counts = doc["meta"]["dpu_counts"]
    lo, hi = str(counts[0]), str(counts[-1])
    rows = []
    for param, s in doc["sweeps"].items():
        if "points" not in s:
            continue
        for pt in s["points"]:
            rows.append(
                {
                    "sweep": param,
                    "value": pt["config"][param],
                    "torch_ms": pt["torch_s"] * 1e3,
                    f"upmem_{lo}_ms": pt["modeled"][lo]["total_s"] * 1e3,
                    f"upmem_{hi}_ms": pt["modeled"][hi]["total_s"] * 1e3,
                    f"speedup_{lo}": pt["modeled"][lo]["speedup"],
                    f"speedup_{hi}": pt["modeled"][hi]["speedup"],
                    f"speedup_estimate_{hi}": pt["modeled"][hi]["speedup_estimate"],
                    "torch_spread": pt["torch_timing"]["spread"],
                    "winner_at_" + hi: {"DPUs win": "DPUs", "CPU wins": "CPU"}.get(
                        pt["modeled"][hi].get("verdict", ""), "- (within the spread)"
                    ),
                    "passed": pt["passed"],
                }
            )
    return rows


# ---------------------------------------------------------------------------------- output


def print_summary(doc: dict) -> None:
    counts = doc["meta"]["dpu_counts"]
    lo, hi = str(counts[0]), str(counts[-1])
    print("\nCPU baseline timed here (best of >= 5 per batch; spread = worst/best - 1 of the baseline)")
    print(
        f"\n{'sweep':<11}{'value':>8}{'torch CPU':>12}{'spread':>9}{'UPMEM ' + lo:>12}{'UPMEM ' + hi:>12}"
        f"{'speedup ' + lo:>14}{'speedup ' + hi:>14}  winner @{hi}"
    )
    for r in doc["summary"]:
        print(
            f"{r['sweep']:<11}{r['value']!s:>8}{r['torch_ms']:>10.3f}ms{r['torch_spread']:>+9.0%}{r[f'upmem_{lo}_ms']:>10.3f}ms"
            f"{r[f'upmem_{hi}_ms']:>10.3f}ms{r[f'speedup_{lo}']:>13.3f}x{r[f'speedup_{hi}']:>13.3f}x  "
            f"{r['winner_at_' + hi]}{'' if r['passed'] else '  (WRONG RESULT)'}"
        )
    print("\nWhere the model says the winner changes (perfmodel total vs torch CPU):")
    for param, s in doc["sweeps"].items():
        if "crossovers" not in s:
            continue
        for n in (lo, hi):
            c = s["crossovers"][n]
            if c["changes"]:
                text = "; ".join(
                    f"{ch['direction']} between {ch['between'][0]} and {ch['between'][1]}" for ch in c["changes"]
                )
            elif c["dpu_wins_at"]:
                text = "DPUs win over the whole range"
            else:
                text = "CPU wins over the whole range"
            print(f"  {param:<11} {n:>5} DPUs: {text}")
    d = doc["sweeps"]["dpus"]["plans"]
    for key, q in d.items():
        ns = sorted(int(n) for n in q["modeled"])
        print(f"  dpus ({key}): " + ", ".join(f"{n}: {q['modeled'][str(n)]['speedup']:.2f}x" for n in ns))
    print(
        f"\nall results match torch: {doc['all_passed']}; derived per-DPU work equals the engine's counters on "
        f"{doc['meta']['emulated_dpus']} DPUs: {doc['all_derivations_checked']}; "
        f"elapsed {doc['meta']['elapsed_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized run (small tables, 3 points per sweep)")
    ap.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(perfmodel.PROFILES))
    ap.add_argument("--no-partitioner", action="store_true", help="skip the partitioner plan in the DPU sweep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="output stem (default benchmarks/results/sweeps, or sweeps_quick with --quick)",
    )
    args = ap.parse_args(argv)
    setup = QUICK if args.quick else FULL
    stem = args.out or RESULTS / ("sweeps_quick" if args.quick else "sweeps")
    stem.parent.mkdir(parents=True, exist_ok=True)
    doc = run_sweeps(
        setup,
        profile=args.profile,
        seed=args.seed,
        partitioner=not args.no_partitioner,
        say=lambda m: print(m, file=sys.stderr, flush=True),
    )
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(doc, indent=1, default=float))
    paths = plot(doc, stem)
    print_summary(doc)
    print("wrote " + ", ".join(str(p) for p in [json_path, *paths]))
    return doc


if __name__ == "__main__":
    main()
