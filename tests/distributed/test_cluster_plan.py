"""Cluster plans: coverage, capacity, persistence, strategies; the model's network term."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm.distributed.cluster import ClusterPlan, ClusterPlanError, HostShard, HostSpec, plan_cluster
from updlrm.distributed.model import NETWORKS, estimate_cluster
from updlrm.distributed.routing import assemble, merge_requests, route_to_hosts
from updlrm.specs import TableSpec


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    rows=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    dims=st.data(),
    hosts=st.integers(1, 5),
    strategy=st.sampled_from(["table_wise", "row_wise", "column_wise"]),
    seed=st.integers(0, 1000),
)
def test_routing_and_assembly_equal_a_numpy_reference(rows, dims, hosts, strategy, seed):
    tables = [TableSpec(f"t{i}", r, dims.draw(st.integers(1, 9), label=f"dim{i}")) for i, r in enumerate(rows)]
    plan = plan_cluster(tables, [HostSpec(4)] * hosts, strategy=strategy)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((t.num_embeddings, t.embedding_dim)) for t in tables]
    B = int(rng.integers(0, 6))
    lengths = rng.integers(0, 5, len(tables) * B)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate(
        [rng.integers(0, tables[t].num_embeddings, lengths[t * B : (t + 1) * B].sum()) for t in range(len(tables))]
        or [np.zeros(0)]
    ).astype(np.int64)
    requests = route_to_hosts(plan, indices, offsets, B)
    parts = []
    for h, req in enumerate(requests):
        shards = plan.shards_of_host(h)
        starts = np.concatenate([[0], np.cumsum(req.lengths.sum(axis=1))])
        cols = []
        for j, i in enumerate(shards):
            s = plan.shards[i]
            w = weights[s.table][s.row_start : s.row_stop, s.col_start : s.col_stop]
            rows_j = req.indices[starts[j] : starts[j + 1]]
            bags = np.repeat(np.arange(B), req.lengths[j])
            pooled = np.zeros((B, s.dim))
            np.add.at(pooled, bags, w[rows_j])
            cols.append(pooled)
        parts.append(np.concatenate(cols, axis=1) if cols else np.zeros((B, 0)))
    out = assemble(plan, parts, np.diff(offsets).reshape(len(tables), B))
    expected = []
    for t in range(len(tables)):
        pooled = np.zeros((B, tables[t].embedding_dim))
        idx = indices[offsets[t * B] : offsets[(t + 1) * B]]
        np.add.at(pooled, np.repeat(np.arange(B), lengths[t * B : (t + 1) * B]), weights[t][idx])
        expected.append(pooled)
    np.testing.assert_allclose(out, np.concatenate(expected, axis=1) if expected else out, rtol=1e-5, atol=1e-5)
    # Merging one host's requests from two sources keeps every lookup.
    merged = merge_requests([requests[0], requests[0]])
    assert merged.indices.size == 2 * requests[0].indices.size


def test_every_strategy_covers_every_cell_once():
    tables = [TableSpec("a", 100, 16), TableSpec("b", 7, 3, row_format="int8"), TableSpec("c", 1, 1)]
    for strategy in ("table_wise", "row_wise", "column_wise", "auto"):
        plan = plan_cluster(tables, [HostSpec(8)] * 3, strategy=strategy)
        plan.validate()
        assert ClusterPlan.from_dict(json.loads(json.dumps(plan.to_dict()))).shards == plan.shards


def test_a_table_too_big_for_one_host_is_split_by_rows():
    small_host = HostSpec(1, mram_bytes_per_dpu=1 << 20)  # 1 MiB of MRAM
    big = TableSpec("big", 6000, 64)  # 1.5 MB of fp32 rows
    plan = plan_cluster([big], [small_host] * 3, strategy="table_wise")
    assert plan.is_row_split(0) and len({s.host for s in plan.shards}) >= 2
    with pytest.raises(ClusterPlanError, match="does not fit"):
        plan_cluster([big], [small_host], strategy="table_wise")


def test_plan_problems_say_what_differs(tmp_path):
    tables = [TableSpec("a", 10, 4)]
    bad = ClusterPlan(tables, [HostSpec(1)], [HostShard(0, 0, 0, 5, 0, 4)])
    with pytest.raises(ClusterPlanError, match="table 'a': its shards must hold every row"):
        bad.validate()
    with pytest.raises(ClusterPlanError, match="names host 3"):
        ClusterPlan(tables, [HostSpec(1)], [HostShard(0, 3, 0, 10, 0, 4)]).validate()
    with pytest.raises(ClusterPlanError, match="no such cluster plan"):
        ClusterPlan.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ClusterPlanError, match="not a JSON cluster plan"):
        ClusterPlan.load(tmp_path / "x.json")
    good = plan_cluster(tables, [HostSpec(1)], strategy="table_wise").to_dict()
    good["tables"][0]["num_embeddings"] = 11
    with pytest.raises(ClusterPlanError, match="tables_hash"):
        ClusterPlan.from_dict(good)
    with pytest.raises(ClusterPlanError, match="strategy must be one of"):
        plan_cluster(tables, [HostSpec(1)], strategy="diagonal")


def test_plan_prints_a_summary():
    plan = plan_cluster([TableSpec("a", 10, 4), TableSpec("b", 10, 4)], [HostSpec(2)] * 2, strategy="table_wise")
    text = str(plan)
    assert "2 tables over 2 host(s)" in text and "host 1:" in text


def test_the_network_term_grows_with_hosts_and_shrinks_with_bandwidth():
    tables = [TableSpec(f"t{i}", 5000, 32) for i in range(6)]
    loads = [16.0] * 6
    one = estimate_cluster(plan_cluster(tables, [HostSpec(64)], strategy="table_wise"), loads, batch_size=512)
    assert one.network_s == 0.0
    plan = plan_cluster(tables, [HostSpec(64)] * 3, strategy="table_wise")
    fast = estimate_cluster(plan, loads, batch_size=512, network=NETWORKS["ethernet-100g"])
    slow = estimate_cluster(plan, loads, batch_size=512, network=NETWORKS["ethernet-25g"])
    assert 0 < fast.network_s < slow.network_s
    assert fast.request_bytes.sum() > 0 and np.all(np.diag(fast.request_bytes) >= 0)
    assert "network" in str(fast)
