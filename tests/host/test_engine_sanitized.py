"""The engine's C (host runtime and DPU kernel) under AddressSanitizer + UBSan.

The host library is loaded into Python, so the run happens in a child Python started
with the compiler's libasan preloaded and ``UPDLRM_SANITIZE=1`` (see
``updlrm.host.engine.build``). The child runs prepared batches on every layout (replica sets included), with one,
two and four host threads, serially, pipelined, asynchronously and on a dry engine, plus a batch with an out-of-range index, one with a weight outside
Q16, and (once) four threads sharing one engine, and saves the outputs; this
process checks them against the torch reference. Any sanitizer report fails the child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from engine_reference import assert_matches, random_batch, random_weights, reference

from updlrm.plan import Plan, Shard, uniform_plan
from updlrm.specs import PoolingMode, RowFormat, TableSpec, Topology

TABLES = [
    TableSpec("f", 700, 20),
    TableSpec("i8", 300, 9, row_format=RowFormat.INT8, scale=0.05),
    TableSpec("i32", 200, 16, row_format=RowFormat.INT32, scale=2.0**-18),
    TableSpec("wide", 90, 600),
]
LAYOUTS = ("table_wise", "row_wise", "column_wise", "tiled", "replica_sets")


def replica_sets_plan() -> Plan:
    """Ranges held by several DPUs (whole tables, row blocks, column slices), hot rows on
    a replica-only shard, host-cached rows and a wholly host-cached table, on 6 DPUs in two
    routing groups."""
    shards = [Shard(0, d, 0, 20, range(700)) for d in (1, 0)] + [Shard(0, 2, 0, 20, np.array([0, 1, 699]))]
    shards += [Shard(1, d, 0, 9, range(150)) for d in (3, 4)] + [Shard(1, 5, 0, 9, range(150, 300))]
    shards += [Shard(2, d, 0, 8, range(200)) for d in (0, 1)] + [Shard(2, d, 8, 16, range(200)) for d in (2, 0, 1)]
    shards += [Shard(3, d, 0, 600, range(90)) for d in (4, 5)]
    host_rows = {0: np.array([1, 2]), 1: np.array([0]), 3: np.arange(90)}  # table 3: every row on the host too
    return Plan(TABLES, Topology(nr_dpus=6), shards, host_rows=host_rows)


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from updlrm.host.engine import Engine, EngineError
    from updlrm.plan import Plan
    from updlrm.specs import PoolingMode

    data = np.load(sys.argv[1])
    weights = [data[f"w{t}"] for t in range(int(data["nr_tables"]))]
    outputs = {}
    for layout in sys.argv[3:]:
        plan = Plan.load(f"{sys.argv[2]}/{layout}.json")
        for threads in (1, 2, 4):
            # 5 tasklets: ASan's redzones would overflow WRAM with 16 (still > 1, so tasklets split segments)
            with Engine(plan, weights, host_threads=threads, nr_tasklets=5) as engine:
                for name, pooling in (("sum", PoolingMode.SUM), ("mean", PoolingMode.MEAN)):
                    out, stats = engine.run(data["indices"], data["offsets"], data["psw"], pooling)
                    outputs[f"{layout}-{threads}-{name}"] = out
                    if stats.route_parts != threads:
                        raise SystemExit(f"{stats.route_parts} routing parts with {threads} threads ({layout})")
                # pipelined (route+pack i+1 and merge i-1 while the DPUs run i) and asynchronous
                items = [(data["indices"], data["offsets"], data["psw"], p) for p in (PoolingMode.SUM, PoolingMode.MEAN)]
                piped = [out for out, _ in engine.pipeline(items * 2)]
                futures = [engine.run_async(*item) for item in items * 2]
                for k, out in enumerate(piped + [f.result()[0] for f in futures]):
                    if not np.array_equal(out, outputs[f"{layout}-{threads}-{('sum', 'mean')[k % 2]}"]):
                        raise SystemExit(f"pipelined batch {k} differs from the serial run ({layout})")
                bad = data["indices"].copy()
                bad[0] = 10**6
                try:
                    engine.run(bad, data["offsets"], data["psw"])
                    raise SystemExit("an out-of-range index was accepted")
                except EngineError:
                    pass
                # a weight outside Q16 on an integer table's lookup: refused before routing
                heavy = data["psw"].copy()
                heavy[int(data["offsets"][int(data["int_bag"])])] = 40000.0
                try:
                    engine.run(data["indices"], data["offsets"], heavy)
                    raise SystemExit("a weight outside Q16 was accepted")
                except EngineError:
                    pass
                # the same batch on a dry engine (no rows, host-cached rows without values)
                with Engine(plan, None, host_threads=threads, nr_tasklets=5) as dry:
                    routed = dry.dry_run(data["indices"], data["offsets"], data["psw"])
                    if routed.lookups.tolist() != stats.lookups.tolist() or routed.host_cache_hits != stats.host_cache_hits:
                        raise SystemExit(f"the dry engine routed otherwise ({layout}, {threads} threads)")
                if threads == 2 and layout == "row_wise":
                    # threads sharing the engine: each gets the serial result
                    from concurrent.futures import ThreadPoolExecutor
                    serial = outputs[f"{layout}-{threads}-sum"]
                    with ThreadPoolExecutor(4) as pool:
                        runs = list(pool.map(lambda _: engine.run(data["indices"], data["offsets"], data["psw"])[0], range(8)))
                    if not all(np.array_equal(r, serial) for r in runs):
                        raise SystemExit("threads sharing the engine got other results")
    np.savez(sys.argv[1].replace(".npz", "-out.npz"), **outputs)
""")


def _libasan() -> str | None:
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and Path(path).exists() else None


@pytest.mark.skipif(_libasan() is None, reason="gcc has no libasan.so here")
def test_engine_runs_clean_under_asan_and_ubsan(tmp_path):
    rng = np.random.default_rng(21)
    weights = random_weights(TABLES, rng)
    # 4,096 bags x 4 tables x ~9 lookups: four routing parts (32,768 lookups each), above the merge thresholds
    indices, offsets, psw = random_batch(TABLES, 4096, 18, rng, weighted=True)
    for layout in LAYOUTS:
        plan = replica_sets_plan() if layout == "replica_sets" else uniform_plan(TABLES, Topology(nr_dpus=6), layout)
        plan.save(tmp_path / f"{layout}.json")
    batch = tmp_path / "batch.npz"
    int_bag = 1 * 4096 + int(np.argmax(np.diff(offsets)[4096 : 2 * 4096] > 0))  # a non-empty bag of table i8
    np.savez(
        batch,
        indices=indices,
        offsets=offsets,
        psw=psw,
        nr_tables=len(TABLES),
        int_bag=int_bag,
        **{f"w{t}": w for t, w in enumerate(weights)},
    )
    env = dict(
        os.environ,
        UPDLRM_SANITIZE="1",
        LD_PRELOAD=_libasan(),
        # Python's own allocations are never freed at exit: leaks are not the engine's
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
    )
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(batch), str(tmp_path), *LAYOUTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    assert "runtime error" not in child.stderr and "AddressSanitizer" not in child.stderr, child.stderr[-4000:]
    outputs = np.load(tmp_path / "batch-out.npz")
    for pooling, name in ((PoolingMode.SUM, "sum"), (PoolingMode.MEAN, "mean")):
        expected, magnitude = reference(TABLES, weights, indices, offsets, psw, pooling)
        for layout in LAYOUTS:
            one = outputs[f"{layout}-1-{name}"]
            assert_matches(TABLES, one, expected, magnitude)
            for threads in (2, 4):
                assert np.array_equal(one, outputs[f"{layout}-{threads}-{name}"]), (layout, threads)
