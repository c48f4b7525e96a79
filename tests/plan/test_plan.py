"""Plans: every layout covers every row slice, round-trips through JSON, and rejects misfits."""

import json

import numpy as np
import pytest

from updlrm.plan import LAYOUTS, Plan, PlanError, Shard, uniform_plan
from updlrm.specs import RowFormat, TableSpec, Topology

TABLES = [
    TableSpec("big", 10_000, 64),
    TableSpec("one_row", 1, 3),
    TableSpec("odd", 777, 13, row_format=RowFormat.INT8, scale=0.5),
    TableSpec("wide", 50, 512, row_format=RowFormat.INT32, scale=1e-3),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("nr_dpus", [1, 3, 64, 130])
def test_uniform_plans_cover_every_row_slice(layout, nr_dpus):
    plan = uniform_plan(TABLES, Topology(nr_dpus), layout)
    plan.validate()
    for t, spec in enumerate(TABLES):
        splits = plan.col_splits(t)
        for lo, _hi in zip(splits[:-1], splits[1:]):
            rows = np.concatenate(
                [plan.shards[i].row_ids() for i in plan.shards_of(t) if plan.shards[i].col_start == lo]
            )
            assert np.array_equal(np.sort(rows), np.arange(spec.num_embeddings))


def test_round_trip_keeps_ranges_arrays_host_rows(tmp_path):
    shards = [
        Shard(0, 0, 0, 64, np.array([0, 5, 9])),
        Shard(0, 1, 0, 64, range(10_000)),  # replicas of 0, 5, 9
        Shard(1, 1, 0, 3, range(1)),
        Shard(2, 0, 0, 13, range(700)),
        Shard(3, 0, 0, 256, range(50)),
        Shard(3, 1, 256, 512, range(50)),
    ]
    plan = Plan(
        TABLES,
        Topology(2),
        shards,
        host_rows={2: np.arange(700, 777)},
        expected_load=np.array([1.0, 2.0]),
        workload_hash="w1",
        metadata={"strategies": {"0": "row_wise"}},
    )
    plan.validate()
    loaded = Plan.load(plan.save(tmp_path / "p.json"), tables=TABLES, workload_hash="w1")
    assert [(s.table, s.dpu, s.col_start, s.col_stop) for s in loaded.shards] == [
        (s.table, s.dpu, s.col_start, s.col_stop) for s in shards
    ]
    assert loaded.shards[1].rows == range(10_000)
    assert np.array_equal(loaded.shards[0].rows, [0, 5, 9])
    assert np.array_equal(loaded.host_rows[2], np.arange(700, 777))
    assert loaded.col_splits(3) == [0, 256, 512]
    assert loaded.metadata == plan.metadata


def test_load_rejects_other_tables_workload_and_tampering(tmp_path):
    path = uniform_plan(TABLES, Topology(4), "tiled").save(tmp_path / "p.json")
    with pytest.raises(PlanError, match="other tables"):
        Plan.load(path, tables=TABLES[:2])
    with pytest.raises(PlanError, match="workload"):
        Plan.load(path, workload_hash="elsewhere")
    doc = json.loads(path.read_text())
    doc["tables"][0]["num_embeddings"] = 5
    path.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="edited"):
        Plan.load(path)


def test_missing_rows_and_straddling_slices_are_named():
    spec = [TableSpec("t7", 100, 8)]
    with pytest.raises(PlanError, match=r"t7: 10 rows .*\(first: row 90\)"):
        Plan(spec, Topology(2), [Shard(0, 0, 0, 8, range(90))]).validate()
    with pytest.raises(PlanError, match="straddle"):
        Plan(spec, Topology(2), [Shard(0, 0, 0, 4, range(100)), Shard(0, 1, 2, 8, range(100))]).validate()


def test_capacity_error_names_dpu_tables_and_shortfall():
    big = [TableSpec("t7", 300_000, 64), TableSpec("t8", 100, 64)]
    plan = uniform_plan(big, Topology(1), "table_wise")
    with pytest.raises(PlanError, match=r"DPU 0 would hold 76\.8 MB .*t7: 76\.8 MB.*67\.1 MB of MRAM free"):
        plan.validate()
