"""MLPerf Inference LoadGen driving a :class:`~updlrm.serve.model.ServedModel`.

LoadGen (``mlcommons-loadgen`` on PyPI, imported as ``mlperf_loadgen``) is the field's
standard harness: it issues the queries, times them and decides whether a run is
valid. We give it a system under test (SUT) whose ``issue_query`` hands samples to a
:class:`~updlrm.serve.batcher.DynamicBatcher`; each batch gathers its samples from
the :class:`~updlrm.serve.requests.RequestSet`, runs the model and completes the
queries. Scenarios (MLPerf Inference rules):

* **Offline**: every sample in one query; the figure is throughput (samples/s).
* **Server**: single-sample queries with Poisson arrivals at a target QPS; valid when
  the 99th-percentile latency meets the bound. :func:`find_max_qps` searches for the
  highest QPS that stays valid.

Besides LoadGen's own figures, every sample's latency (issue to completion) is recorded
here, with the host time of each phase of every batch; the engine's measured phases and
its modeled UPMEM phases are computed after the run for a uniform sample of at most
``PROFILED_BATCHES`` batches.

Example:
    >>> import tempfile, pathlib
    >>> from updlrm.serve.requests import load_requests, write_synthetic_criteo
    >>> from updlrm.serve.model import ServedModel
    >>> rs = load_requests(write_synthetic_criteo(pathlib.Path(tempfile.mkdtemp()) / "c.tsv", 64), max_rows=1000)
    >>> m = ServedModel.open(None, rs, backend="emulator", nr_dpus=26, dim=4)
    >>> settings = ServeSettings(scenario="offline", duration_s=0.2, expected_qps=500, progress=False)
    >>> r = run_scenario(m, rs, settings)  # needs: mlperf_loadgen
    >>> r.scenario, r.samples >= 1, r.loadgen["result"] in ("VALID", "INVALID")
    ('offline', True, True)
    >>> m.close()
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from updlrm.hardware import DEFAULT_HARDWARE_PROFILE
from updlrm.serve.batcher import DynamicBatcher
from updlrm.serve.model import ServedModel
from updlrm.serve.requests import RequestSet

__all__ = [
    "ServeSettings",
    "ScenarioResult",
    "run_scenario",
    "run_offline",
    "find_max_qps",
    "confirm_server",
    "loadgen_available",
    "roc_auc",
    "LOADGEN_MISSING",
    "DEFAULT_LATENCY_BOUND_S",
]

LOADGEN_MISSING = "MLPerf LoadGen is not installed: pip install 'updlrm[serve]' (the mlcommons-loadgen package)"

# MLPerf Inference's Server latency bound for DLRM: 99th percentile within 30 ms
# (MLPerf Inference rules, "Benchmarks" table, DLRM on Criteo Terabyte; DLRM-v2 uses 60 ms).
DEFAULT_LATENCY_BOUND_S = 0.030

# Host phases measured per batch; "engine" keys come from the embedding layer's BatchStats.
HOST_PHASES = ("gather_s", "sparse_s", "dense_s", "respond_s")
ENGINE_PHASES = ("validate_s", "route_s", "push_s", "launch_s", "pull_s", "merge_s", "host_cache_s")
# Batches whose engine stats are profiled per run (a uniform sample when there are more).
PROFILED_BATCHES = 256
MODELED_PHASES = ("cpu_to_dpu_s", "launch_s", "kernel_s", "dpu_to_cpu_s", "host_merge_s", "host_cache_s", "total_s")


def loadgen_available() -> bool:
    """Whether ``mlperf_loadgen`` imports here."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        return False
    return True


def _loadgen():
    try:
        import mlperf_loadgen as lg
    except ImportError:
        raise ImportError(LOADGEN_MISSING) from None
    return lg


@dataclass
class ServeSettings:
    """One LoadGen run. ``duration_s`` is LoadGen's minimum duration.

    ``expected_qps`` sizes the Offline query (LoadGen issues ``1.1 x expected_qps x
    duration`` samples); ``target_qps`` is the Server arrival rate; ``latency_bound_s``
    the Server p99 bound. ``max_batch``/``max_wait_s`` configure dynamic batching.
    ``accuracy`` runs LoadGen's AccuracyOnly mode instead: every sample once, every
    response logged (:attr:`ScenarioResult.outputs`).
    """

    scenario: str = "offline"
    duration_s: float = 5.0
    expected_qps: float = 1000.0
    target_qps: float = 1000.0
    latency_bound_s: float = DEFAULT_LATENCY_BOUND_S
    max_batch: int = 256
    max_wait_s: float = 0.002
    min_queries: int = 64
    profile: str = DEFAULT_HARDWARE_PROFILE
    progress: bool = True
    log_dir: str | None = None
    seed: int = 0
    accuracy: bool = False

    def __post_init__(self) -> None:
        if self.scenario not in ("offline", "server"):
            raise ValueError(f"scenario must be 'offline' or 'server', got {self.scenario!r}")
        if self.duration_s <= 0 or self.expected_qps <= 0 or self.target_qps <= 0 or self.latency_bound_s <= 0:
            raise ValueError("duration, QPS and latency bound must be > 0")


@dataclass
class ScenarioResult:
    """Our figures of one LoadGen run, plus LoadGen's summary (``loadgen``).

    ``outputs`` (accuracy mode only) maps each sample index to the float32 output the
    SUT returned for it, read back from LoadGen's accuracy log.
    """

    scenario: str
    settings: ServeSettings
    samples: int
    wall_s: float
    latencies_s: np.ndarray
    batch_sizes: np.ndarray
    host_s: dict = field(default_factory=dict)
    engine_s: dict = field(default_factory=dict)
    modeled_s: dict = field(default_factory=dict)
    profiled_batches: int = 0
    profiled_samples: int = 0
    loadgen: dict = field(default_factory=dict)
    loadgen_summary: str = ""
    mean_output: float = float("nan")
    outputs: dict | None = None

    def __repr__(self) -> str:
        what = "Offline" if self.scenario == "offline" else f"Server at {self.settings.target_qps:,.0f} QPS"
        return (
            f"ScenarioResult({what}: {self.samples:,} samples, {self.throughput:,.0f}/s, "
            f"p99 {self.percentile(99) * 1e3:.2f} ms, LoadGen {self.loadgen.get('result', '?')})"
        )

    @property
    def throughput(self) -> float:
        """Completed samples per second of wall time, first issue to last completion."""
        return self.samples / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s.size else float("nan")

    @property
    def valid(self) -> bool:
        """LoadGen's verdict (and for Server, our own p99 against the bound agrees)."""
        ok = self.loadgen.get("result") == "VALID"
        if self.scenario == "server":
            ok = ok and self.percentile(99) <= self.settings.latency_bound_s
        return ok

    def to_dict(self) -> dict:
        lat = {f"p{q}": self.percentile(q) for q in (50, 95, 99)}
        lat["mean"] = float(self.latencies_s.mean()) if self.latencies_s.size else float("nan")
        lat["max"] = float(self.latencies_s.max()) if self.latencies_s.size else float("nan")
        nb = max(1, int(self.batch_sizes.size))
        npb = max(1, self.profiled_batches)
        d = {
            "scenario": self.scenario,
            "valid": self.valid,
            "samples": self.samples,
            "wall_s": self.wall_s,
            "throughput_samples_per_s": self.throughput,
            "latency_s": lat,
            "batches": int(self.batch_sizes.size),
            "mean_batch_size": float(self.batch_sizes.mean()) if self.batch_sizes.size else 0.0,
            "host_phases_s_per_batch": {k: v / nb for k, v in self.host_s.items()},
            "profiled_batches": self.profiled_batches,
            "engine_phases_s_per_batch": {k: v / npb for k, v in self.engine_s.items()},
            "modeled_upmem_phases_s_per_batch": {k: v / npb for k, v in self.modeled_s.items()},
            "mean_output": self.mean_output,
            "loadgen": dict(self.loadgen),
            "settings": dataclasses.asdict(self.settings),
        }
        if self.scenario == "server":
            d["target_qps"] = self.settings.target_qps
            d["latency_bound_s"] = self.settings.latency_bound_s
        return d


_SUMMARY_KEYS = {
    "Samples per second": "samples_per_s",
    "Completed samples per second": "completed_samples_per_s",
    "Scheduled samples per second": "scheduled_samples_per_s",
    "Min latency (ns)": "min_latency_ns",
    "Max latency (ns)": "max_latency_ns",
    "Mean latency (ns)": "mean_latency_ns",
    "50.00 percentile latency (ns)": "p50_latency_ns",
    "90.00 percentile latency (ns)": "p90_latency_ns",
    "99.00 percentile latency (ns)": "p99_latency_ns",
}


def parse_summary(text: str) -> dict:
    """The verdict and main figures of LoadGen's ``mlperf_log_summary.txt``.

    >>> parse_summary("Result is : VALID\\nSamples per second : 12.5\\n")
    {'result': 'VALID', 'samples_per_s': 12.5}
    """
    out: dict = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "Result is":
            out["result"] = value
        elif key in _SUMMARY_KEYS:
            with contextlib.suppress(ValueError):  # a summary value that is not a number is left out
                out[_SUMMARY_KEYS[key]] = float(value)
        elif key in (
            "Performance constraints satisfied",
            "Min duration satisfied",
            "Min queries satisfied",
            "Early stopping satisfied",
        ):
            out[re.sub(r"\W+", "_", key.lower())] = value == "Yes"
    return out


class _Run:
    """The SUT of one LoadGen run: batches samples, runs the model, records everything."""

    def __init__(self, model: ServedModel, requests: RequestSet, settings: ServeSettings, lg, bar) -> None:
        self.model, self.requests, self.settings, self.lg, self.bar = model, requests, settings, lg, bar
        self.latencies: list[np.ndarray] = []
        self.batch_sizes: list[int] = []
        self.host = dict.fromkeys(HOST_PHASES, 0.0)
        self.engine = dict.fromkeys(ENGINE_PHASES + ("total_s",), 0.0)
        self.modeled = dict.fromkeys(MODELED_PHASES, 0.0)
        # A uniform sample (reservoir) of the batches' engine stats, profiled after the run:
        # the perfmodel costs ~0.6 ms a batch, too much to spend between batches.
        self.sampled: list = []
        self.seen = 0
        self.rng = random.Random(settings.seed)
        self.output_sum = 0.0
        self.output_count = 0
        self.first_issue: float | None = None
        self.last_done = 0.0
        self.lock = threading.Lock()
        self.batcher = DynamicBatcher(self._run_batch, max_batch=settings.max_batch, max_wait_s=settings.max_wait_s)

    def issue_query(self, query_samples) -> None:
        if self.first_issue is None:
            self.first_issue = time.perf_counter()
        self.batcher.submit([(q.id, q.index) for q in query_samples])

    def flush_queries(self) -> None:
        pass

    def profile_sample(self) -> None:
        """Engine and modeled phases of the sampled batches (sums; ``profiled`` batches)."""
        from updlrm.profile import profile_batch

        for stats, _ in self.sampled:
            p = profile_batch(stats, self.settings.profile)
            for k in self.engine:
                self.engine[k] += float(p.measured_s.get(k, 0.0))
            modeled = p.modeled.as_dict()
            for k in MODELED_PHASES:
                self.modeled[k] += float(p.modeled.total_s if k == "total_s" else modeled.get(k) or 0.0)

    def _run_batch(self, items, arrivals) -> None:
        lg = self.lg
        t0 = time.perf_counter()
        ids = np.fromiter((s for _, s in items), dtype=np.int64, count=len(items))
        dense, kjt = self.requests.batch(ids)
        t1 = time.perf_counter()
        out = np.ascontiguousarray(self.model.run(dense, kjt), dtype=np.float32)
        t2 = time.perf_counter()
        row = out.shape[1] * 4 if out.ndim == 2 else 4
        base = out.ctypes.data
        responses = [lg.QuerySampleResponse(qid, base + i * row, row) for i, (qid, _) in enumerate(items)]
        lg.QuerySamplesComplete(responses)
        t3 = time.perf_counter()
        self.latencies.append(t3 - np.asarray(arrivals))
        self.batch_sizes.append(len(items))
        times = self.model.last_times
        self.host["gather_s"] += t1 - t0
        self.host["sparse_s"] += times.get("sparse_s", t2 - t1)
        self.host["dense_s"] += times.get("dense_s", 0.0)
        self.host["respond_s"] += t3 - t2
        stats = self.model.last_stats()
        if stats is not None:
            self.seen += 1
            if len(self.sampled) < PROFILED_BATCHES:
                self.sampled.append((stats, len(items)))
            else:
                j = self.rng.randrange(self.seen)
                if j < PROFILED_BATCHES:
                    self.sampled[j] = (stats, len(items))
        self.output_sum += float(out[:, 0].sum()) if out.ndim == 2 and out.size else 0.0
        self.output_count += out.shape[0]
        self.last_done = t3
        if self.bar is not None:
            self.bar.update(len(items))


def run_scenario(model: ServedModel, requests: RequestSet, settings: ServeSettings) -> ScenarioResult:
    """One LoadGen run of ``settings.scenario`` over ``requests`` (see the module doc)."""
    lg = _loadgen()
    from tqdm import tqdm

    ts = lg.TestSettings()
    ts.mode = lg.TestMode.AccuracyOnly if settings.accuracy else lg.TestMode.PerformanceOnly
    ts.min_duration_ms = max(1, int(settings.duration_s * 1000))
    ts.min_query_count = settings.min_queries
    ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = int(settings.seed) + 1
    if settings.scenario == "offline":
        ts.scenario = lg.TestScenario.Offline
        ts.offline_expected_qps = float(settings.expected_qps)
        expected = max(settings.min_queries, math.ceil(1.1 * settings.expected_qps * settings.duration_s))
        desc = "offline"
    else:
        ts.scenario = lg.TestScenario.Server
        ts.server_target_qps = float(settings.target_qps)
        ts.server_target_latency_ns = int(settings.latency_bound_s * 1e9)
        expected = max(settings.min_queries, math.ceil(settings.target_qps * settings.duration_s))
        desc = f"server {settings.target_qps:,.0f} QPS"
    if settings.accuracy:
        expected = requests.num_samples  # AccuracyOnly issues every sample once
        desc += " accuracy"
    bar = tqdm(total=expected, unit="sample", desc=desc, leave=False, dynamic_ncols=True) if settings.progress else None
    run = _Run(model, requests, settings, lg, bar)
    n = requests.num_samples
    sut = lg.ConstructSUT(run.issue_query, run.flush_queries)
    qsl = lg.ConstructQSL(n, n, lambda samples: None, lambda samples: None)
    tmp = None
    log_dir = settings.log_dir
    if log_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="updlrm-loadgen-")
        log_dir = tmp.name
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    try:
        lg.StartTestWithLogSettings(sut, qsl, ts, log)
        run.batcher.close()
        run.profile_sample()
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        if bar is not None:
            bar.close()
    summary_path = Path(log_dir) / "mlperf_log_summary.txt"
    summary = summary_path.read_text() if summary_path.is_file() else ""
    outputs = _read_accuracy_log(Path(log_dir) / "mlperf_log_accuracy.json") if settings.accuracy else None
    if tmp is not None:
        tmp.cleanup()
    latencies = np.concatenate(run.latencies) if run.latencies else np.zeros(0)
    wall = (run.last_done - run.first_issue) if run.first_issue is not None else 0.0
    return ScenarioResult(
        scenario=settings.scenario,
        settings=settings,
        samples=int(latencies.size),
        wall_s=wall,
        latencies_s=latencies,
        batch_sizes=np.asarray(run.batch_sizes),
        host_s=run.host,
        engine_s=run.engine,
        modeled_s=run.modeled,
        profiled_batches=len(run.sampled),
        profiled_samples=sum(n for _, n in run.sampled),
        loadgen=parse_summary(summary),
        loadgen_summary=summary,
        mean_output=run.output_sum / max(1, run.output_count),
        outputs=outputs,
    )


def _read_accuracy_log(path: Path) -> dict[int, np.ndarray]:
    """``{sample index: float32 output}`` from LoadGen's ``mlperf_log_accuracy.json``."""
    import json

    if not path.is_file():
        return {}
    out = {}
    for entry in json.loads(path.read_text() or "[]"):
        out[int(entry["qsl_idx"])] = np.frombuffer(bytes.fromhex(entry["data"]), dtype=np.float32)
    return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney rank statistic; ties count one half).

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    labels = np.asarray(labels).astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(order), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def run_offline(
    model: ServedModel,
    requests: RequestSet,
    settings: ServeSettings,
    *,
    retries: int = 2,
    on_retry: Callable[[ScenarioResult], None] | None = None,
) -> ScenarioResult:
    """The Offline scenario, re-run with a higher expected QPS when it ended before LoadGen's minimum duration.

    LoadGen sizes the Offline query from ``expected_qps``; a system faster than expected
    finishes early and the run is INVALID ("Min duration satisfied: NO"). LoadGen's
    advice is to raise the expected QPS, which this does up to ``retries`` times.
    """
    settings = dataclasses.replace(settings, scenario="offline")
    result = run_scenario(model, requests, settings)
    for _ in range(retries):
        if result.loadgen.get("min_duration_satisfied", True):
            break
        if on_retry is not None:
            on_retry(result)
        settings = dataclasses.replace(settings, expected_qps=max(1.25 * result.throughput, 2 * settings.expected_qps))
        result = run_scenario(model, requests, settings)
    return result


def find_max_qps(
    model: ServedModel,
    requests: RequestSet,
    settings: ServeSettings,
    *,
    upper_qps: float,
    steps: int = 5,
    search_duration_s: float = 2.0,
    on_step: Callable[[ScenarioResult], None] | None = None,
) -> tuple[float, list[ScenarioResult]]:
    """The highest Server QPS that LoadGen finds valid, by bisection below ``upper_qps``.

    ``upper_qps`` is a throughput no Server run can beat (the Offline figure). The
    search runs ``steps`` short Server runs (``search_duration_s`` each): it starts at
    half of ``upper_qps`` and halves the interval between the highest valid and the
    lowest invalid QPS. Returns that highest valid QPS (0 if none was) and the runs.
    """
    lo, hi = 0.0, float(upper_qps)
    runs = []
    for _ in range(max(1, steps)):
        qps = (lo + hi) / 2
        r = run_scenario(
            model,
            requests,
            dataclasses.replace(settings, scenario="server", target_qps=qps, duration_s=search_duration_s),
        )
        runs.append(r)
        if on_step is not None:
            on_step(r)
        if r.valid:
            lo = qps
        else:
            hi = qps
    return lo, runs


def confirm_server(
    model: ServedModel,
    requests: RequestSet,
    settings: ServeSettings,
    qps: float,
    *,
    retries: int = 2,
    step: float = 0.9,
    on_retry: Callable[[ScenarioResult], None] | None = None,
) -> tuple[ScenarioResult, list[ScenarioResult]]:
    """A full-length Server run at ``qps``, stepped down by ``step`` while LoadGen finds it invalid.

    Search runs are short; a longer run estimates the tail more tightly (LoadGen's early
    stopping asks more of it), so the searched QPS can fail its confirmation. At most
    ``retries`` lower rates are tried; returns the last run and every run.
    """
    runs = [run_scenario(model, requests, dataclasses.replace(settings, scenario="server", target_qps=qps))]
    while not runs[-1].valid and len(runs) <= retries:
        if on_retry is not None:
            on_retry(runs[-1])
        qps *= step
        runs.append(run_scenario(model, requests, dataclasses.replace(settings, scenario="server", target_qps=qps)))
    return runs[-1], runs
