"""Validate updlrm's UPMEM performance model against published and real-hardware measurements.

Prints, model against data, each point marked calibration (a constant was
fitted on it: in sample) or validation (held out):

1. the published microbenchmark figures (tests/perfmodel/published_points.json);
2. MRAM bandwidth of one DPU against DMA transfer size (8..2,048 B);
3. MRAM bandwidth against tasklet count (1..24) for a pure DMA stream and for
   PrIM's VA/RED kernels, with the real-hardware VA/RED runs at 16 tasklets;
4. host<->DPU bandwidth against DPUs per rank (1..64), per direction and mode
   (parallel push/pull, one-by-one serial pulls), from 184 real-hardware
   PrIM application runs (tests/perfmodel/upimulator_hw_points.json), for the
   'upmem-sdk-default-pool' profile (saturating and power-law curves) and
   the PrIM-microbenchmark profile;
5. the VA/RED kernel times against the model (and against uPIMulator's own
   simulation of the same runs);
6. where the model says DPUs start beating the host (crossovers).

Writes benchmarks/results/model_validation.json and model_validation.png.

Run: python benchmarks/bench_model_validation.py [--calibrate]
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from updlrm import perfmodel as pm
from updlrm import whatif

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "perfmodel" / "published_points.json"
# Real-hardware PrIM application runs (uPIMulator artifact input.xlsx), one
# point per sheet row, with the SDK calls each timer covers and its role.
HW_POINTS = ROOT / "tests" / "perfmodel" / "upimulator_hw_points.json"
RESULTS = ROOT / "benchmarks" / "results"
CALIBRATED_PROFILE = "upmem-sdk-default-pool"
KERNEL_FIELDS = (
    "elements_per_dpu",
    "element_bytes",
    "block_bytes",
    "reads_per_block",
    "writes_per_block",
    "nr_tasklets",
)
STEADY_MS = 3.0  # kernel runs at least this long: launch cost below 7%


def validate_points(profile: pm.HardwareProfile, table: dict) -> list[dict]:
    rows = []
    for point in table["points"]:
        modeled = whatif.predict(profile, point["quantity"], **point["params"])
        rows.append(
            {
                "id": point["id"],
                "quantity": point["quantity"],
                "params": point["params"],
                "published": point["value"],
                "model": modeled,
                "rel_error": modeled / point["value"] - 1.0,
                "kind": point["kind"],
                "verified": point["verified"],
                "role": point["role"],
                "source": point["source"],
            }
        )
    return rows


def mram_vs_size(profile: pm.HardwareProfile, rows: list[dict]) -> list[dict]:
    published = {
        (r["params"]["transfer_bytes"], r["params"]["nr_tasklets"], r["params"]["op"]): r
        for r in rows
        if r["quantity"] == "mram_bandwidth"
    }
    out = []
    for size in (8 << k for k in range(9)):
        for op in ("read", "write"):
            for tasklets in (1, 16):
                entry = {
                    "transfer_bytes": size,
                    "op": op,
                    "nr_tasklets": tasklets,
                    "model_bytes_per_s": pm.mram_bandwidth(profile, size, tasklets, op),
                }
                hit = published.get((size, tasklets, op))
                if hit:
                    entry.update(published_bytes_per_s=hit["published"], role=hit["role"], point=hit["id"])
                out.append(entry)
    return out


def kernel_mram_bandwidth(profile: pm.HardwareProfile, point: dict, nr_tasklets: int) -> float:
    """MRAM bytes/s of a VA/RED-like kernel, launch cost excluded."""
    fields = {k: point[k] for k in KERNEL_FIELDS}
    fields["nr_tasklets"] = nr_tasklets
    seconds = pm.streaming_kernel_time(profile, launch=False, **fields)
    moved = point["elements_per_dpu"] * point["element_bytes"] * (point["reads_per_block"] + point["writes_per_block"])
    return moved / seconds


def mram_vs_tasklets(profile: pm.HardwareProfile, hw: dict, rows: list[dict]) -> dict:
    out: dict = {
        "tasklets": list(range(1, profile.max_tasklets + 1)),
        "dma_stream_2048B": [pm.mram_bandwidth(profile, 2048, n) for n in range(1, profile.max_tasklets + 1)],
    }
    measured = []
    for app in ("VA", "RED"):
        runs = [p for p in hw["kernels"] if p["benchmark"] == app and p["value"] >= STEADY_MS]
        big = max(runs, key=lambda p: p["elements_per_dpu"])
        out[f"{app}_model"] = [kernel_mram_bandwidth(profile, big, n) for n in out["tasklets"]]
        moved = [
            p["elements_per_dpu"] * p["element_bytes"] * (p["reads_per_block"] + p["writes_per_block"]) for p in runs
        ]
        rates = [m / (p["value"] * 1e-3 - profile.launch_overhead_s) for m, p in zip(moved, runs)]
        measured.append(
            {
                "benchmark": app,
                "nr_tasklets": big["nr_tasklets"],
                "runs": len(runs),
                "measured_bytes_per_s": float(np.median(rates)),
                "model_bytes_per_s": kernel_mram_bandwidth(profile, big, big["nr_tasklets"]),
                "role": "validation",
                "source": f"{HW_POINTS.name} kernels, {app} runs >= {STEADY_MS} ms",
            }
        )
    for r in rows:
        if r["quantity"] == "mram_bandwidth" and r["params"]["nr_tasklets"] > 1:
            measured.append(
                {
                    "benchmark": r["id"],
                    "nr_tasklets": r["params"]["nr_tasklets"],
                    "measured_bytes_per_s": r["published"],
                    "model_bytes_per_s": r["model"],
                    "role": r["role"],
                    "source": r["source"],
                }
            )
    out["measured"] = measured
    return out


def bulk(point: dict) -> tuple[str, float]:
    """The mode of the calls that move the data (the largest buffers) and their bytes per DPU."""
    largest = max(c["bytes_per_dpu"] for c in point["calls"])
    data_calls = [c for c in point["calls"] if c["bytes_per_dpu"] == largest]
    return data_calls[0]["mode"], float(sum(c["bytes_per_dpu"] * c["count"] for c in data_calls))


def transfer_errors(profile: pm.HardwareProfile, points: list[dict]) -> list[dict]:
    out = []
    for p in points:
        seconds = pm.transfer_calls_time(p["calls"], profile, p["nr_dpus"], p["direction"])
        mode, moved = bulk(p)
        out.append(
            {
                "id": p["id"],
                "benchmark": p["benchmark"],
                "direction": p["direction"],
                "mode": mode,
                "nr_dpus": p["nr_dpus"],
                "role": p["role"],
                "measured_ms": p["value"],
                "model_ms": seconds * 1e3,
                "rel_error": seconds * 1e3 / p["value"] - 1.0,
                "measured_bytes_per_s": p["nr_dpus"] * moved / (p["value"] * 1e-3),
                "model_bytes_per_s": p["nr_dpus"] * moved / seconds,
            }
        )
    return out


def summarize(errors: list[dict]) -> dict:
    out = {}
    for role in ("calibration", "validation"):
        e = np.array([abs(r["rel_error"]) for r in errors if r["role"] == role])
        groups = defaultdict(list)
        for r in errors:
            if r["role"] == role:
                groups[(r["benchmark"], r["direction"], r["nr_dpus"])].append(r["rel_error"])
        medians = np.array([abs(np.median(v)) for v in groups.values()])
        out[role] = {
            "points": int(e.size),
            "mean_abs_error": float(e.mean()),
            "median_abs_error": float(np.median(e)),
            "worst_abs_error": float(e.max()),
            "share_within_10pct": float(np.mean(e <= 0.10)),
            "groups": len(groups),
            "mean_abs_group_median_error": float(medians.mean()),
            "worst_abs_group_median_error": float(medians.max()),
        }
    return out


def bandwidth_by_dpus(errors: list[dict]) -> list[dict]:
    """Per (direction, mode, DPUs, role): median measured and modeled bandwidth over apps and sizes."""
    groups = defaultdict(list)
    for r in errors:
        groups[(r["direction"], r["mode"], r["nr_dpus"], r["role"])].append(r)
    return [
        {
            "direction": d,
            "mode": m,
            "nr_dpus": n,
            "role": role,
            "points": len(v),
            "measured_bytes_per_s": float(np.median([r["measured_bytes_per_s"] for r in v])),
            "model_bytes_per_s": float(np.median([r["model_bytes_per_s"] for r in v])),
            "median_rel_error": float(np.median([r["rel_error"] for r in v])),
        }
        for (d, m, n, role), v in sorted(groups.items())
    ]


def kernel_table(profile: pm.HardwareProfile, hw: dict) -> list[dict]:
    out = []
    for p in hw["kernels"]:
        if p["role"] != "validation":
            continue
        model = pm.streaming_kernel_time(profile, **{k: p[k] for k in KERNEL_FIELDS}) * 1e3
        out.append(
            {
                "id": p["id"],
                "benchmark": p["benchmark"],
                "nr_dpus": p["nr_dpus"],
                "elements_per_dpu": p["elements_per_dpu"],
                "measured_ms": p["value"],
                "model_ms": model,
                "rel_error": model / p["value"] - 1.0,
                "upimulator_sim_rel_error": p["upimulator_sim_ms"] / p["value"] - 1.0,
                "role": p["role"],
            }
        )
    return out


def crossovers(profile: pm.HardwareProfile) -> dict:
    out = {"batch_size": [], "pooling": []}
    dpus = min(profile.nr_dpus, 26 * 16)
    for fmt in ("fp32", "int32", "int8"):
        for pooling in (1, 8, 32, 128):
            b = whatif.crossover_batch_size(
                profile, nr_tables=26, pooling=pooling, dim=64, row_format=fmt, nr_dpus=dpus
            )
            out["batch_size"].append(
                {
                    "row_format": fmt,
                    "pooling": pooling,
                    "nr_tables": 26,
                    "dim": 64,
                    "dpus_used": dpus // 26 * 26,
                    "crossover_batch": b,
                }
            )
        p = whatif.crossover_pooling(profile, batch_size=4096, nr_tables=26, dim=64, row_format=fmt, nr_dpus=dpus)
        out["pooling"].append({"row_format": fmt, "batch_size": 4096, "crossover_pooling": p})
    return out


def plot(doc: dict, path: pathlib.Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    ax = axes[0, 0]
    sizes = sorted({r["transfer_bytes"] for r in doc["mram_vs_size"]})
    for op, colour in (("read", "tab:blue"), ("write", "tab:orange")):
        for tasklets, style in ((1, "-"), (16, "--")):
            ys = [
                r["model_bytes_per_s"] / 1e6
                for r in doc["mram_vs_size"]
                if r["op"] == op and r["nr_tasklets"] == tasklets
            ]
            ax.plot(sizes, ys, style, color=colour, label=f"model {op}, {tasklets} tasklet(s)")
    for r in doc["mram_vs_size"]:
        if "published_bytes_per_s" in r:
            ax.plot(
                r["transfer_bytes"],
                r["published_bytes_per_s"] / 1e6,
                "o" if r["role"] == "calibration" else "s",
                color="black",
                markerfacecolor="none",
                markersize=9,
            )
    ax.axhline(doc["peak_bytes_per_s"] / 1e6, color="grey", linestyle=":", label="peak f/beta")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("DMA transfer size (bytes)")
    ax.set_ylabel("MRAM bandwidth of one DPU (MB/s)")
    ax.set_title("MRAM vs size (o = PrIM, in sample; s = uPIMulator 600 MB/s, held out)")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[0, 1]
    t = doc["mram_vs_tasklets"]
    ax.plot(
        t["tasklets"], np.array(t["dma_stream_2048B"]) / 1e6, color="grey", label="model: back-to-back 2,048-B reads"
    )
    for app, colour in (("VA", "tab:green"), ("RED", "tab:purple")):
        ax.plot(t["tasklets"], np.array(t[f"{app}_model"]) / 1e6, color=colour, label=f"model: PrIM {app} kernel")
    for m in t["measured"]:
        colour = {"VA": "tab:green", "RED": "tab:purple"}.get(m["benchmark"], "black")
        ax.plot(
            m["nr_tasklets"], m["measured_bytes_per_s"] / 1e6, "s", color=colour, markersize=9, markerfacecolor="none"
        )
    ax.axvline(11, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("tasklets")
    ax.set_ylabel("MRAM bytes/s of one DPU (MB/s)")
    ax.set_title("MRAM vs tasklets (squares = real hardware, held out)")
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    styles = {
        ("to_dpu", "parallel"): ("tab:blue", "CPU->DPU parallel"),
        ("from_dpu", "parallel"): ("tab:orange", "DPU->CPU parallel"),
        ("from_dpu", "serial"): ("tab:red", "DPU->CPU serial"),
    }
    d = np.arange(1, 65)
    sdk = pm.get_profile(CALIBRATED_PROFILE)
    for (direction, mode), (colour, label) in styles.items():
        ax.plot(
            d, pm.rank_bandwidth(sdk, d, direction, mode) / 1e9, color=colour, label=f"{CALIBRATED_PROFILE}: {label}"
        )
        if mode == "parallel":
            power = sdk.with_values("comparison", xfer_curve="power")
            ax.plot(d, pm.rank_bandwidth(power, d, direction, mode) / 1e9, ":", color=colour, linewidth=0.9)
        for r in doc["transfers"][CALIBRATED_PROFILE]["points"]:
            if (r["direction"], r["mode"]) == (direction, mode):
                ax.plot(
                    r["nr_dpus"] * (1.06 if r["role"] == "calibration" else 0.94),
                    r["measured_bytes_per_s"] / 1e9,
                    "o" if r["role"] == "calibration" else ".",
                    color=colour,
                    alpha=0.6,
                    markerfacecolor="none" if r["role"] == "calibration" else colour,
                )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("DPUs of one rank in the transfer")
    ax.set_ylabel("GB/s (curves: rank bandwidth; points: bytes / measured time)")
    ax.set_title("Host transfers: 8 PrIM apps on hardware (o calibration, . held out; dotted = power law)")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    for app, colour in (("VA", "tab:green"), ("RED", "tab:purple")):
        rows = [r for r in doc["kernels"] if r["benchmark"] == app]
        ax.plot(
            [r["measured_ms"] for r in rows],
            [r["model_ms"] for r in rows],
            "o",
            color=colour,
            label=f"{app}: this model",
        )
        ax.plot(
            [r["measured_ms"] for r in rows],
            [r["measured_ms"] * (1 + r["upimulator_sim_rel_error"]) for r in rows],
            "x",
            color=colour,
            label=f"{app}: uPIMulator simulation",
        )
    lim = [0.1, 100]
    ax.plot(lim, lim, color="black", linewidth=0.8)
    ax.fill_between(lim, [v * 0.9 for v in lim], [v * 1.1 for v in lim], color="grey", alpha=0.2, label="+-10%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured kernel time (ms)")
    ax.set_ylabel("modeled kernel time (ms)")
    ax.set_title("VA/RED kernels on 1-64 DPUs (all held out)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pct(x: float) -> str:
    return f"{x:+.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="hardware profile (default: the table's)")
    parser.add_argument("--calibrate", action="store_true", help="measure this host's merge/gather bandwidth first")
    args = parser.parse_args()
    table = json.loads(TABLE.read_text())
    hw = json.loads(HW_POINTS.read_text())
    profile = pm.get_profile(args.profile or table["profile"])

    rows = validate_points(profile, table)
    print(f"1. published figures, profile {profile.name}")
    print(f"{'point':34s} {'published':>12s} {'model':>12s} {'error':>8s}  role / verified")
    for r in rows:
        print(
            f"{r['id']:34s} {r['published']:12.4g} {r['model']:12.4g} {pct(r['rel_error']):>8s}  {r['role']} / {r['verified']}"
        )
    worst = max(abs(r["rel_error"]) for r in rows)
    print(f"worst |error|: {worst:.2%} (tolerance {table['tolerance']:.0%})\n")

    by_size = mram_vs_size(profile, rows)
    print("2. MRAM bandwidth of one DPU vs DMA size (MB/s; PrIM latency alpha + 0.5*size)")
    print(f"{'bytes':>6s} {'read 1t':>9s} {'read 16t':>9s} {'write 1t':>9s} {'write 16t':>9s}  data")
    for size in sorted({r["transfer_bytes"] for r in by_size}):
        cells = {(r["op"], r["nr_tasklets"]): r for r in by_size if r["transfer_bytes"] == size}
        notes = [
            f"{op} {n}t: {c['published_bytes_per_s'] / 1e6:.0f} ({c['role']}, model {pct(c['model_bytes_per_s'] / c['published_bytes_per_s'] - 1)})"
            for (op, n), c in cells.items()
            if "published_bytes_per_s" in c
        ]
        print(
            f"{size:6d} "
            + " ".join(
                f"{cells[k]['model_bytes_per_s'] / 1e6:9.1f}"
                for k in (("read", 1), ("read", 16), ("write", 1), ("write", 16))
            )
            + "  "
            + "; ".join(notes)
        )
    print("   no stored copy gives measured bandwidth below 2,048 B: the size curve is PrIM's fitted latency law\n")

    by_tasklets = mram_vs_tasklets(profile, hw, rows)
    print("3. MRAM bandwidth of one DPU vs tasklets (MB/s, launch excluded)")
    print(f"{'tasklets':>8s} {'DMA stream':>11s} {'VA kernel':>10s} {'RED kernel':>11s}")
    for i, n in enumerate(by_tasklets["tasklets"]):
        if n in (1, 2, 4, 8, 10, 11, 12, 16, 24):
            print(
                f"{n:8d} {by_tasklets['dma_stream_2048B'][i] / 1e6:11.1f} {by_tasklets['VA_model'][i] / 1e6:10.1f} "
                f"{by_tasklets['RED_model'][i] / 1e6:11.1f}"
            )
    for m in by_tasklets["measured"]:
        print(
            f"   measured {m['benchmark']} at {m['nr_tasklets']} tasklets: {m['measured_bytes_per_s'] / 1e6:.0f} MB/s, "
            f"model {m['model_bytes_per_s'] / 1e6:.0f} ({pct(m['model_bytes_per_s'] / m['measured_bytes_per_s'] - 1)}, {m['role']})"
        )
    print("   no stored hardware data varies the tasklet count; the 11-tasklet knee is PrIM's revolver rule\n")

    variants = {
        profile.name: profile,
        CALIBRATED_PROFILE: pm.get_profile(CALIBRATED_PROFILE),
        f"{CALIBRATED_PROFILE} (power curve)": pm.get_profile(CALIBRATED_PROFILE).with_values(
            "curve comparison", xfer_curve="power"
        ),
    }
    transfers = {}
    for name, p in variants.items():
        errors = transfer_errors(p, hw["transfers"])
        transfers[name] = {"summary": summarize(errors), "by_dpus": bandwidth_by_dpus(errors), "points": errors}
    print(
        f"4. host<->DPU bandwidth vs DPUs: {len(hw['transfers'])} real-hardware PrIM app transfers "
        "(median over apps and sizes, GB/s incl. call costs)"
    )
    sdk_rows = transfers[CALIBRATED_PROFILE]["by_dpus"]
    print(
        f"{'direction':9s} {'mode':8s} {'DPUs':>4s} {'role':11s} {'pts':>3s} {'measured':>9s} {'sdk-pool':>9s} {'time err':>8s}"
    )
    for r in sdk_rows:
        print(
            f"{r['direction']:9s} {r['mode']:8s} {r['nr_dpus']:4d} {r['role']:11s} {r['points']:3d} "
            f"{r['measured_bytes_per_s'] / 1e9:9.3f} {r['model_bytes_per_s'] / 1e9:9.3f} {pct(r['median_rel_error']):>8s}"
        )
    print("transfer time, model/measured - 1 per point:")
    for name, t in transfers.items():
        for role in ("calibration", "validation"):
            s = t["summary"][role]
            print(
                f"   {name:40s} {role:11s} n={s['points']:3d} mean {s['mean_abs_error']:.1%} median "
                f"{s['median_abs_error']:.1%} worst {s['worst_abs_error']:.0%} within 10%: {s['share_within_10pct']:.0%}; "
                f"{s['groups']} app groups: mean {s['mean_abs_group_median_error']:.1%} worst "
                f"{s['worst_abs_group_median_error']:.0%}"
            )
    print()

    kernels = kernel_table(profile, hw)
    print("5. VA/RED kernel times (held out; 16 tasklets, 1,024-B blocks)")
    print(
        f"{'run':8s} {'DPUs':>4s} {'elems/DPU':>10s} {'measured':>9s} {'model':>9s} {'error':>7s} {'uPIMulator':>10s}"
    )
    for r in kernels:
        print(
            f"{r['id']:8s} {r['nr_dpus']:4d} {r['elements_per_dpu']:10d} {r['measured_ms']:8.3f}ms {r['model_ms']:8.3f}ms "
            f"{pct(r['rel_error']):>7s} {pct(r['upimulator_sim_rel_error']):>10s}"
        )
    for app in ("VA", "RED"):
        e = [r["rel_error"] for r in kernels if r["benchmark"] == app]
        steady = [r["rel_error"] for r in kernels if r["benchmark"] == app and r["measured_ms"] >= STEADY_MS]
        print(
            f"   {app}: mean |error| {np.mean(np.abs(e)):.1%}, steady state (>= {STEADY_MS} ms) {min(steady):+.0%}..{max(steady):+.0%}"
        )
    print()

    host = pm.calibrate(profile) if args.calibrate else profile
    cross = crossovers(host)
    print(
        f"6. crossovers (26 tables, dim 64, 16 DPUs/table; host gather {host.host_gather_bytes_per_s / 1e9:.1f} GB/s, "
        f"{host.source_of('host_gather_bytes_per_s')[:40]}...):"
    )
    for c in cross["batch_size"]:
        print(f"  {c['row_format']:5s} pooling {c['pooling']:4d}: DPUs win from batch size {c['crossover_batch']}")
    for c in cross["pooling"]:
        print(f"  {c['row_format']:5s} batch 4096: DPUs win from pooling {c['crossover_pooling']}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "profile": profile.name,
        "tolerance": table["tolerance"],
        "points": rows,
        "worst_abs_error": worst,
        "peak_bytes_per_s": whatif.predict(profile, "mram_peak"),
        "mram_vs_size": by_size,
        "mram_vs_tasklets": by_tasklets,
        "transfers": transfers,
        "kernels": kernels,
        "crossovers": cross,
        "host_bandwidth_source": host.source_of("host_gather_bytes_per_s"),
    }
    (RESULTS / "model_validation.json").write_text(json.dumps(doc, indent=1))
    plot(doc, RESULTS / "model_validation.png")
    print(f"\nwrote {RESULTS / 'model_validation.json'} and {RESULTS / 'model_validation.png'}")


if __name__ == "__main__":
    main()
