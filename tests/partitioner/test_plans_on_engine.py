"""Plans from build_plan run on the engine (emulator): torch-equal results, and the engine's
per-DPU lookups and host-cache hits are what evaluate_plan predicted for every batch.

Each plan exercises one kind of placement the partitioner can emit -- host-cached rows,
replicated rows, contiguous-range storage (with replica shards), row x column tiles and
METIS / Mt-KaHyPar row groups -- over fp32, int8 and int32 tables.
"""

import importlib.util

import numpy as np
import pytest
import torch

import updlrm
from updlrm import perfmodel
from updlrm.partitioner import search
from updlrm.partitioner.cost import CostModel
from updlrm.partitioner.evaluate import route_trace
from updlrm.partitioner.placement import build_plan, evaluate_plan, expected_work
from updlrm.partitioner.workloads import Trace, synthetic_trace
from updlrm.specs import RowFormat, TableSpec, Topology

NEEDS_MTKAHYPAR = pytest.mark.skipif(
    importlib.util.find_spec("mtkahypar") is None, reason="mtkahypar not installed (pip install 'updlrm[hypergraph]')"
)

TABLES = [
    TableSpec("wide", 3000, 64),
    TableSpec("tall", 200, 256),
    TableSpec("q8", 1500, 16, row_format=RowFormat.INT8, scale=0.01),
    TableSpec("q32", 800, 24, row_format=RowFormat.INT32, scale=1e-6),
]
NR_DPUS = 16


def _any(key, value=None):
    return lambda strategy: any((s[key] == value) if value is not None else bool(s[key]) for s in strategy.values())


# build_plan options, and what each plan must contain for the case to test anything.
PLANS = {
    "host_cache": ({"max_replicas": 1}, [_any("host_rows")]),
    "replicas_tiles_metis": (
        {"cache": "replicate", "graph": "graph", "max_replicas": 1},
        [_any("replicated_rows"), _any("layout", "tiled"), _any("partitioner", "metis")],
    ),
    "ranges_replicas": (
        {"cache": "replicate", "explicit_row_limit": 1000, "max_replicas": 1},
        [_any("storage", "ranges"), _any("replicated_rows")],
    ),
    "ranges_host": ({"explicit_row_limit": 1000, "max_replicas": 1}, [_any("storage", "ranges"), _any("host_rows")]),
    "hypergraph": (
        {"cache": "replicate", "graph": "hypergraph", "max_replicas": 1},
        [_any("partitioner", "mtkahypar")],
    ),
    # Whole tables and column-slice groups held several times, samples dealt among them.
    "group_replicas": ({"cache": "replicate"}, [_any("layout", "data_parallel"), _any("layout", "column_wise")]),
    "group_replicas_ranges": (
        {"cache": "replicate", "explicit_row_limit": 1000, "max_replicas": 4},
        [_any("storage", "ranges"), lambda st: any(s["replicas"] > 1 for s in st.values())],
    ),
}


@pytest.fixture(scope="module")
def trace():
    return synthetic_trace(
        TABLES, batch_size=64, num_batches=3, pooling=[12, 6, 8, 4], alpha=1.2, co_occurrence=0.6, seed=1
    )


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(7)
    out = []
    for spec in TABLES:
        shape = (spec.num_embeddings, spec.embedding_dim)
        if spec.row_format == RowFormat.INT8:
            out.append(rng.integers(-127, 128, size=shape, dtype=np.int8))
        elif spec.row_format == RowFormat.INT32:
            out.append(rng.integers(-(1 << 24), 1 << 24, size=shape, dtype=np.int32))
        else:
            # Adversarial magnitudes: the tolerance is relative to the sum of |terms|.
            out.append(
                (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=(shape[0], 1))).astype(np.float32)
            )
    return out


def _reference(weights, idx, off, batch_size):
    """Per table: fp32 via torch embedding_bag (and the sum of |terms|), integers exactly in int64."""
    outs, magnitudes = [], []
    for t, (spec, w) in enumerate(zip(TABLES, weights)):
        lo, hi = int(off[t * batch_size]), int(off[(t + 1) * batch_size])
        rows = torch.from_numpy(idx[lo:hi])
        bag_off = torch.from_numpy(off[t * batch_size : (t + 1) * batch_size + 1] - lo)
        if spec.row_format == RowFormat.FP32:
            table = torch.from_numpy(w)
            outs.append(
                torch.nn.functional.embedding_bag(rows, table, bag_off, mode="sum", include_last_offset=True).numpy()
            )
            magnitudes.append(
                torch.nn.functional.embedding_bag(
                    rows, table.abs(), bag_off, mode="sum", include_last_offset=True
                ).numpy()
            )
        else:
            # The engine sums integers exactly and scales once: float32(sum * scale).
            sums = np.zeros((batch_size, spec.embedding_dim), dtype=np.int64)
            bag = np.repeat(np.arange(batch_size), np.diff(bag_off.numpy()))
            np.add.at(sums, bag, w[idx[lo:hi]].astype(np.int64))
            outs.append((sums.astype(np.float64) * spec.scale).astype(np.float32))
            magnitudes.append(None)
    return outs, magnitudes


@pytest.mark.parametrize("name", [pytest.param(n, marks=NEEDS_MTKAHYPAR) if n == "hypergraph" else n for n in PLANS])
def test_plan_runs_on_engine_like_torch_and_like_its_report(name, trace, weights, monkeypatch):
    options, required = PLANS[name]
    if name == "group_replicas":
        # Weighing each batch's straggler, the search holds every table in column slices
        # here (more bags per DPU); at mean loads it holds some whole on every DPU, the
        # data-parallel layout this case runs on the engine.
        monkeypatch.setattr(search, "straggler_z", lambda n: 0.0)
    plan = build_plan(TABLES, trace, Topology(NR_DPUS), progress=False, seed=0, **options)
    strategy = plan.metadata["strategy"]
    for holds in required:
        assert holds(strategy), strategy

    dims = np.cumsum([0] + [s.embedding_dim for s in TABLES])
    with updlrm.TableBatchedEmbeddingBags(
        TABLES, plan=plan, weights=weights, backend="emulator", quantization="table"
    ) as tbe:
        for i in range(trace.num_batches):
            idx, off, _ = trace.batch(i)
            out = tbe(idx, off)
            stats = tbe.last_stats
            refs, mags = _reference(weights, idx, off, trace.batch_size)
            for t, spec in enumerate(TABLES):
                got = out[:, dims[t] : dims[t + 1]]
                if spec.row_format == RowFormat.FP32:
                    assert np.all(np.abs(got - refs[t]) <= 1e-5 * mags[t] + 1e-30), (name, spec.name)
                else:
                    np.testing.assert_array_equal(got, refs[t], err_msg=f"{name} {spec.name}")
            one = Trace(trace.num_tables, trace.batch_size, idx, off)
            report = evaluate_plan(plan, one)
            np.testing.assert_array_equal(stats.lookups, report.load_per_dpu)
            assert stats.host_cache_hits == round(report.host_cache_hit_rate * one.num_lookups)
            assert stats.host_cache_hits + int(stats.lookups.sum()) >= one.num_lookups
            work = expected_work(plan, one)
            np.testing.assert_array_equal(stats.work().lookups, work.lookups)
            np.testing.assert_array_equal(stats.work().index_bytes, work.index_bytes)
            np.testing.assert_array_equal(stats.work().output_bytes, work.output_bytes)
            # The planner's own byte model (what the layout search and the DPU assignment
            # price) counts the engine's input bytes exactly and its output bytes up to
            # the expected tasklet splits.
            model = CostModel(
                TABLES,
                perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=NR_DPUS),
                NR_DPUS,
                False,
                16,
                [1.0] * len(TABLES),
            )
            planned = route_trace(plan, one, model, 1.0).work(0, model)
            np.testing.assert_array_equal(planned.index_bytes, stats.bytes_to_dpu)
            measured_out = float(stats.bytes_from_dpu.sum())
            assert abs(planned.output_bytes.sum() - measured_out) <= 0.05 * measured_out, name
