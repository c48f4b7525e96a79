"""The torchrec-style collection over several hosts equals the one-host collection."""

import numpy as np
import pytest
import torch
from _ranks import run_collection

from updlrm.collection import EmbeddingBagCollection, EmbeddingBagConfig
from updlrm.distributed.cluster import HostSpec, plan_cluster
from updlrm.distributed.launch import run_local
from updlrm.kjt import KeyedJaggedTensor

pytestmark = pytest.mark.slow

CONFIGS = [
    EmbeddingBagConfig("users", 120, 8, ["user", "user_hist"]),
    EmbeddingBagConfig("items", 90, 4, ["item"], pooling="MEAN"),
    EmbeddingBagConfig("ads", 60, 6, ["ad"], row_format="int8"),
]


@pytest.mark.parametrize("strategy", ["table_wise", "row_wise", "column_wise"])
def test_sharded_collection_equals_one_host(strategy):
    tables = [c.table_spec() for c in CONFIGS]
    plan = plan_cluster(tables, [HostSpec(4), HostSpec(4)], strategy=strategy)
    outcomes = run_local(2, run_collection, plan.to_dict(), CONFIGS, 3, 3, timeout_s=180)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    with EmbeddingBagCollection(CONFIGS, backend="emulator", seed=3, nr_dpus=8, nr_tasklets=4) as one:
        for outcome in outcomes:
            for keys, values, lengths, got in outcome.value:
                kjt = KeyedJaggedTensor.from_lengths_sync(keys, torch.from_numpy(values), torch.from_numpy(lengths))
                np.testing.assert_allclose(got, one(kjt).values().numpy(), rtol=1e-5, atol=1e-5)


def test_a_bad_kjt_on_one_rank_is_named_by_the_others():
    tables = [c.table_spec() for c in CONFIGS]
    plan = plan_cluster(tables, [HostSpec(4), HostSpec(4)], strategy="table_wise")
    outcomes = run_local(
        2, run_collection, plan.to_dict(), CONFIGS, 3, 3, "bad_key", timeout_s=120, collective_timeout_s=60
    )
    assert "nope" in outcomes[1].error
    assert "rank 1:" in outcomes[0].error and "nope" in outcomes[0].error


def test_a_rank_with_an_empty_batch_still_takes_part():
    tables = [c.table_spec() for c in CONFIGS]
    plan = plan_cluster(tables, [HostSpec(4), HostSpec(4)], strategy="row_wise")
    outcomes = run_local(
        2, run_collection, plan.to_dict(), CONFIGS, 3, 2, "empty", timeout_s=120, collective_timeout_s=60
    )
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert all(r[3].shape[0] == 0 for r in outcomes[1].value)
