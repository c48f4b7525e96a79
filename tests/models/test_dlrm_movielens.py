"""DLRM parity on a real public dataset: MovieLens-100K from the recbole wheel (see movielens.py).

Skipped, with the reason, when the wheel cannot be fetched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from movielens import SPARSE, fetch_recbole_wheel, load_movielens

from updlrm import EmbeddingBagConfig
from updlrm.models import DLRM
from updlrm.serve.requests import RequestSet


@pytest.fixture(scope="module")
def movielens():
    wheel, reason = fetch_recbole_wheel()
    if wheel is None:
        pytest.skip(reason)
    return load_movielens(wheel)


def test_the_wheel_holds_movielens_100k(movielens):
    # GroupLens' ML-100K: 100,000 ratings by 943 users of 1,682 movies, 19 genres, 21 occupations.
    assert movielens.labels.size == 100_000
    assert (movielens.num_users, movielens.num_items) == (943, 1682)
    assert movielens.cardinality["occupation"] == 21 and movielens.cardinality["gender"] == 2
    assert movielens.cardinality["genres"] == 19
    assert 0.4 < movielens.labels.mean() < 0.7  # share of ratings >= 4
    lengths = movielens.sparse["genres"][1]
    assert lengths.min() >= 1 and lengths.max() >= 3


def requests_of(ml) -> RequestSet:
    values = np.concatenate([ml.sparse[k][0] for k in SPARSE])
    lengths = np.concatenate([ml.sparse[k][1] for k in SPARSE])
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return RequestSet(list(SPARSE), values, offsets, ml.dense, ml.labels, source="ml-100k")


def test_movielens_predictions_agree_between_torch_and_updlrm_sparse(movielens):
    rs = requests_of(movielens)
    dim = 8
    tables = [
        EmbeddingBagConfig(
            name=k,
            num_embeddings=movielens.cardinality[k],
            embedding_dim=dim,
            feature_names=[k],
            pooling="MEAN" if k == "genres" else "SUM",
        )
        for k in SPARSE
    ]
    ref = DLRM(tables, dense_in_features=4, bottom_mlp=[16, dim], top_mlp=[32, 1], seed=7)
    with DLRM.from_torch(ref, backend="emulator", nr_dpus=7) as on_dpus:
        worst = 0.0
        for lo in range(0, rs.num_samples, 10_000):
            dense, kjt = rs.batch(np.arange(lo, min(lo + 10_000, rs.num_samples)))
            with torch.no_grad():
                expected, got = ref(dense, kjt), on_dpus(dense, kjt)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
            worst = max(worst, float((got - expected).abs().max()))
    assert float(expected.std()) > 1e-4, "predictions should depend on the inputs"


def test_an_unreachable_registry_gives_a_reason_to_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("UPDLRM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    wheel, reason = fetch_recbole_wheel()
    assert wheel is None and reason.startswith("pip download recbole==1.2.1 failed")
