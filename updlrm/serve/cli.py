"""The ``updlrm serve`` command (and ``python -m updlrm.serve.cli make-criteo`` for test data).

Example::

    $ python -m updlrm.serve.cli make-criteo criteo_100k.tsv --samples 100000
    $ python -m updlrm.serve.cli make-dlrm dlrm.pt
    $ updlrm serve criteo_100k.tsv --model dlrm.pt --png latency.png
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import click

from updlrm.hardware import DEFAULT_HARDWARE_PROFILE
from updlrm.serve.loadgen import DEFAULT_LATENCY_BOUND_S, LOADGEN_MISSING, ServeSettings, loadgen_available

__all__ = ["serve_command", "make_criteo_command", "make_dlrm_command"]


def _echo(msg: str, quiet: bool) -> None:
    if not quiet:
        click.echo(f"... {msg}", err=True)


def _warmup(model, requests, max_batch: int, seconds: float = 0.5) -> float:
    """Samples per second of back-to-back full batches (lower quartile: LoadGen sizes the Offline
    query from it, and an overestimate makes the run last longer than asked), after one batch
    that builds what runs lazily."""
    import numpy as np

    n = requests.num_samples
    size = min(max_batch, n)
    rates = []
    start = time.perf_counter()
    i = 0
    while i < 4 or (time.perf_counter() - start < seconds and i < 50):
        ids = (np.arange(size) + i * size) % n
        t = time.perf_counter()
        model.run(*requests.batch(ids))
        if i > 0:
            rates.append(size / max(1e-9, time.perf_counter() - t))
        i += 1
    return float(np.percentile(rates, 25))


@click.command("serve")
@click.argument("requests", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False),
    help="DLRM checkpoint (DLRM.save, or a DLRM state_dict) or an EmbeddingBagCollection state_dict. "
    "Default: the embedding layer alone, random weights.",
)
@click.option(
    "--scenario",
    default="both",
    show_default=True,
    type=click.Choice(["offline", "server", "both"]),
    help="LoadGen scenario(s) to run.",
)
@click.option(
    "--duration",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="LoadGen's minimum duration of the Offline run and of the final Server run (seconds).",
)
@click.option(
    "--target-qps",
    default=None,
    type=click.FloatRange(0, min_open=True),
    help="Server arrival rate; default: search for the highest QPS within the p99 bound.",
)
@click.option(
    "--latency-bound-ms",
    default=DEFAULT_LATENCY_BOUND_S * 1e3,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Server p99 latency bound (MLPerf's DLRM bound: 30 ms).",
)
@click.option(
    "--search-steps",
    default=5,
    show_default=True,
    type=click.IntRange(1),
    help="Server runs of the QPS search (bisection).",
)
@click.option(
    "--search-duration", default=1.5, show_default=True, type=click.FloatRange(0.1), help="Seconds of each search run."
)
@click.option(
    "--confirm-retries",
    default=2,
    show_default=True,
    type=click.IntRange(0),
    help="After the search: full-length runs 10% lower while the found QPS is invalid.",
)
@click.option(
    "--max-batch", default=256, show_default=True, type=click.IntRange(1), help="Dynamic batching: largest batch."
)
@click.option(
    "--max-wait-ms",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Dynamic batching: longest a sample waits for company.",
)
@click.option(
    "--backend", default="auto", show_default=True, type=click.Choice(["auto", "emulator", "simulator", "hw"])
)
@click.option("--dpus", default=None, type=click.IntRange(1), help="DPUs of the default plan (default: the backend's).")
@click.option(
    "--plan",
    "plan_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Placement plan of the tables.",
)
@click.option(
    "--dim",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="Embedding dim of the random tables (without --model).",
)
@click.option(
    "--max-rows",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Criteo without --model: rows per table (raw ids are hashed modulo min(cardinality, this)).",
)
@click.option("--max-samples", default=None, type=click.IntRange(1), help="Read at most this many samples.")
@click.option(
    "--profile",
    "hw_profile",
    default=DEFAULT_HARDWARE_PROFILE,
    show_default=True,
    help="Hardware profile of the modeled UPMEM phases (see updlrm bench --help).",
)
@click.option("--png", "png_path", default=None, type=click.Path(dir_okay=False), help="Write a latency histogram PNG.")
@click.option(
    "--log-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Keep LoadGen's logs here (one folder per run); default: discarded.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of random weights and LoadGen's schedule.")
@click.option(
    "--torch-threads",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="torch intra-op threads for the MLPs (1 keeps small batches off the emulator's cores).",
)
@click.option(
    "--accuracy",
    is_flag=True,
    help="First run LoadGen's AccuracyOnly mode: every sample once; report AUC against the labels.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (progress still on stderr).")
@click.option("--quiet", is_flag=True, help="No progress bars or messages on stderr.")
def serve_command(
    requests,
    model_path,
    scenario,
    duration,
    target_qps,
    latency_bound_ms,
    search_steps,
    search_duration,
    confirm_retries,
    max_batch,
    max_wait_ms,
    backend,
    dpus,
    plan_path,
    dim,
    max_rows,
    max_samples,
    hw_profile,
    png_path,
    log_dir,
    seed,
    torch_threads,
    accuracy,
    as_json,
    quiet,
) -> None:
    """Serve REQUESTS (Criteo TSV, TBE .npz trace or KJT .pt) under MLPerf LoadGen.

    Offline measures throughput; Server sends single-sample queries with Poisson
    arrivals and checks the p99 latency against the bound, searching for the highest
    QPS that meets it unless --target-qps is given. Queries are batched dynamically.
    Prints LoadGen's summary (VALID/INVALID) and ours: p50/p95/p99 latency,
    throughput, measured host phases and the embedding layer's modeled UPMEM phases.
    """
    if not loadgen_available():
        raise click.ClickException(LOADGEN_MISSING)
    from updlrm.backends import BackendUnavailable
    from updlrm.perfmodel import PROFILES
    from updlrm.serve import loadgen as driver
    from updlrm.serve import report
    from updlrm.serve.model import ModelError, ServedModel, load_model_file, model_table_rows
    from updlrm.serve.requests import RequestError, load_requests

    if hw_profile not in PROFILES:
        raise click.BadParameter(f"{hw_profile!r} is not one of {sorted(PROFILES)}", param_hint="--profile")
    import torch

    # Serving batches are small: torch's spinning intra-op threads cost more than they give
    # when the emulator's workers want the same cores.
    torch.set_num_threads(torch_threads)
    model = None
    try:
        data = None
        if model_path is not None:
            _echo(f"loading the model {model_path}", quiet)
            data = load_model_file(model_path)
        _echo(f"reading requests {requests}", quiet)
        rs = load_requests(
            requests,
            table_rows=None if data is None else model_table_rows(data),
            max_rows=max_rows,
            max_samples=max_samples,
        )
        _echo(f"{rs}; building the model", quiet)
        model = ServedModel.open(data, rs, backend=backend, nr_dpus=dpus, plan=plan_path, dim=dim, seed=seed)
        model.check(rs)
    except (RequestError, ModelError, FileNotFoundError, ValueError, BackendUnavailable) as exc:
        if model is not None:
            model.close()
        raise click.ClickException(str(exc)) from None
    try:
        _echo(f"{model}; warming up", quiet)
        warm_qps = _warmup(model, rs, max_batch)
        settings = ServeSettings(
            duration_s=duration,
            expected_qps=warm_qps,
            latency_bound_s=latency_bound_ms / 1e3,
            max_batch=max_batch,
            max_wait_s=max_wait_ms / 1e3,
            profile=hw_profile,
            progress=not quiet,
            seed=seed,
        )
        results, search, best, acc = [], [], None, None
        upper = warm_qps
        if accuracy:
            _echo(f"LoadGen AccuracyOnly (Offline): all {rs.num_samples:,} samples once", quiet)
            acc_run = driver.run_scenario(
                model,
                rs,
                dataclasses.replace(settings, scenario="offline", accuracy=True, log_dir=_sub(log_dir, "accuracy")),
            )
            acc = _accuracy_report(acc_run, rs, model)
        if scenario in ("offline", "both"):
            _echo(f"LoadGen Offline, {duration:g} s (expected {warm_qps:,.0f} samples/s)", quiet)
            off = driver.run_offline(
                model,
                rs,
                dataclasses.replace(settings, scenario="offline", log_dir=_sub(log_dir, "offline")),
                on_retry=lambda r: _echo(
                    f"  ran {r.throughput:,.0f} samples/s, faster than expected: "
                    "LoadGen's minimum duration not met; again",
                    quiet,
                ),
            )
            results.append(off)
            upper = max(off.throughput, 1.0)
        if scenario in ("server", "both"):
            if target_qps is None:
                _echo(
                    f"LoadGen Server: searching the highest QPS below {upper:,.0f} with p99 <= {latency_bound_ms:g} ms "
                    f"({search_steps} runs of {search_duration:g} s)",
                    quiet,
                )
                best, search = driver.find_max_qps(
                    model,
                    rs,
                    dataclasses.replace(settings, log_dir=None),
                    upper_qps=upper,
                    steps=search_steps,
                    search_duration_s=search_duration,
                    on_step=lambda r: _echo(
                        f"  {r.settings.target_qps:,.0f} QPS: p99 "
                        f"{report.format_ms(r.percentile(99))}, "
                        f"{'valid' if r.valid else 'invalid'}",
                        quiet,
                    ),
                )
                qps = best if best > 0 else upper / 2 ** (search_steps + 1)
                _echo(f"LoadGen Server at {qps:,.0f} QPS, {duration:g} s", quiet)
                final, confirm = driver.confirm_server(
                    model,
                    rs,
                    dataclasses.replace(settings, log_dir=_sub(log_dir, "server")),
                    qps,
                    retries=confirm_retries if best > 0 else 0,
                    on_retry=lambda r: _echo(
                        f"  {r.settings.target_qps:,.0f} QPS invalid over {duration:g} s "
                        f"(p99 {report.format_ms(r.percentile(99))}); 10% lower",
                        quiet,
                    ),
                )
                search += confirm[:-1]
                results.append(final)
            else:
                _echo(f"LoadGen Server at {target_qps:,.0f} QPS, {duration:g} s", quiet)
                results.append(
                    driver.run_scenario(
                        model,
                        rs,
                        dataclasses.replace(
                            settings, scenario="server", target_qps=target_qps, log_dir=_sub(log_dir, "server")
                        ),
                    )
                )
    finally:
        model.close()
    if png_path is not None:
        report.write_histogram(results, png_path)
        _echo(f"latency histogram: {png_path}", quiet)
    if as_json:
        out = {
            "requests": str(requests),
            "samples_in_file": rs.num_samples,
            "model": str(model),
            "warmup_samples_per_s": warm_qps,
            "scenarios": [r.to_dict() for r in results],
        }
        if acc is not None:
            out["accuracy"] = acc
        if search:
            out["server_search"] = {
                "highest_valid_qps": best,
                "runs": [
                    {
                        "target_qps": r.settings.target_qps,
                        "duration_s": r.settings.duration_s,
                        "p99_s": r.percentile(99),
                        "valid": r.valid,
                        "loadgen_result": r.loadgen.get("result"),
                    }
                    for r in search
                ],
            }
        click.echo(json.dumps(_finite(out), indent=2))
        return
    blocks = [f"{rs}\n{model}"]
    if acc is not None:
        blocks.append(_format_accuracy(acc))
    for r in results:
        if r.scenario == "server" and search:
            blocks.append(report.format_search(best, search))
        blocks.append(report.format_result(r))
    click.echo("\n\n".join(blocks))


def _accuracy_report(run, requests, model) -> dict:
    """Responses of an AccuracyOnly run: coverage, mean output, and AUC/accuracy for a DLRM with labels."""
    import numpy as np

    from updlrm.serve.loadgen import roc_auc

    outputs = run.outputs or {}
    report = {"samples": requests.num_samples, "responses": len(outputs)}
    if outputs:
        ids = np.fromiter(outputs, dtype=np.int64)
        first = np.array([outputs[i][0] if outputs[i].size else np.nan for i in ids], dtype=np.float64)
        report["mean_output"] = float(np.nanmean(first))
        if model.kind == "dlrm" and requests.labels is not None:
            labels = np.asarray(requests.labels)[ids] > 0
            report["auc"] = roc_auc(labels, first)
            report["accuracy_at_0.5"] = float(((first >= 0.5) == labels).mean())
            report["label_mean"] = float(labels.mean())
    return report


def _format_accuracy(acc: dict) -> str:
    line = f"== LoadGen AccuracyOnly: {acc['responses']:,} responses for {acc['samples']:,} samples"
    if "auc" in acc:
        line += (
            f"\n  AUC {acc['auc']:.4f}, accuracy at 0.5 {acc['accuracy_at_0.5']:.4f} "
            f"(clicks {acc['label_mean']:.3f}, mean prediction {acc['mean_output']:.4f})"
        )
    elif "mean_output" in acc:
        line += f"\n  mean of the first output column {acc['mean_output']:.4g}"
    return line


def _sub(log_dir: str | None, name: str) -> str | None:
    import os

    return None if log_dir is None else os.path.join(log_dir, name)


def _finite(x):
    """JSON has no NaN: NaN and infinities become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


@click.command("make-criteo")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--samples", default=100_000, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
def make_criteo_command(path, samples, seed) -> None:
    """Write PATH: SAMPLES lines of synthetic Criteo-format TSV (label, 13 dense, 26 categorical)."""
    from updlrm.serve.requests import write_synthetic_criteo

    start = time.perf_counter()
    write_synthetic_criteo(path, samples, seed=seed)
    click.echo(f"wrote {samples:,} samples to {path} in {time.perf_counter() - start:.1f} s")


@click.command("make-dlrm")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--dim", default=16, show_default=True, type=click.IntRange(1), help="Embedding dim (= bottom MLP output)."
)
@click.option(
    "--max-rows",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Rows per Criteo table: min(Kaggle cardinality, this).",
)
@click.option(
    "--bottom", default="64", show_default=True, help="Bottom MLP hidden widths, comma-separated (dim is appended)."
)
@click.option(
    "--top", default="128,64", show_default=True, help="Top MLP hidden widths, comma-separated (1 is appended)."
)
@click.option("--seed", default=0, show_default=True, type=int)
def make_dlrm_command(path, dim, max_rows, bottom, top, seed) -> None:
    """Write PATH: a randomly initialised DLRM checkpoint for Criteo (13 dense, 26 tables C1..C26)."""
    from updlrm import EmbeddingBagConfig
    from updlrm.models import DLRM
    from updlrm.partitioner.workloads import CRITEO_KAGGLE_CARDINALITIES
    from updlrm.serve.requests import criteo_feature_names

    try:
        hidden_bottom = [int(x) for x in bottom.split(",") if x.strip()]
        hidden_top = [int(x) for x in top.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated integers, e.g. 512,256", param_hint="--bottom/--top") from None
    tables = [
        EmbeddingBagConfig(name=k, num_embeddings=min(card, max_rows), embedding_dim=dim, feature_names=[k])
        for k, card in zip(criteo_feature_names(), CRITEO_KAGGLE_CARDINALITIES)
    ]
    model = DLRM(tables, 13, hidden_bottom + [dim], hidden_top + [1], seed=seed)
    model.save(path)
    rows = sum(t.num_embeddings for t in tables)
    click.echo(f"wrote {path}: {model.extra_repr()}, {rows:,} embedding rows")


@click.group()
def _main() -> None:
    """Helpers of updlrm serve."""


_main.add_command(make_criteo_command)
_main.add_command(make_dlrm_command)

if __name__ == "__main__":
    _main()
