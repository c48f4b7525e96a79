"""DLRM: the interaction against a loop reference, torch vs updlrm sparse parity, checkpoints.

Parity (a): Criteo-format data (13 dense + 26 categorical) generated here and read by
the project's one Criteo reader. Parity (b), on MovieLens-100K, is in
``test_dlrm_movielens.py``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import updlrm
from updlrm import EmbeddingBagConfig, KeyedJaggedTensor
from updlrm.models import DLRM, dot_interaction
from updlrm.serve.requests import criteo_feature_names, load_requests, write_synthetic_criteo

RTOL, ATOL = 1e-5, 1e-6  # fp32: the DPU sums rows in another order than torch


def loop_interaction(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The reference DLRM's interaction written out: pairs (i, j), i > j, row by row."""
    vectors = [x] + [e[:, f] for f in range(e.shape[1])]
    dots = [(vectors[i] * vectors[j]).sum(1, keepdim=True) for i in range(len(vectors)) for j in range(i)]
    return torch.cat([x] + dots, dim=1)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 5), f=st.integers(1, 6), d=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_dot_interaction_matches_the_written_out_reference(b, f, d, seed):
    g = torch.Generator().manual_seed(seed)
    x, e = torch.randn(b, d, generator=g), torch.randn(b, f, d, generator=g)
    got = dot_interaction(x, e)
    assert got.shape == (b, d + (f + 1) * f // 2)
    torch.testing.assert_close(got, loop_interaction(x, e))


def criteo_tables(rows: int, dim: int) -> list[EmbeddingBagConfig]:
    return [
        EmbeddingBagConfig(name=k, num_embeddings=rows, embedding_dim=dim, feature_names=[k])
        for k in criteo_feature_names()
    ]


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    path = write_synthetic_criteo(tmp_path_factory.mktemp("criteo") / "day_0.tsv", 600, seed=3)
    return load_requests(path, max_rows=500)


def predict_all(model, requests, batch: int) -> torch.Tensor:
    outs = []
    for lo in range(0, requests.num_samples, batch):
        dense, kjt = requests.batch(np.arange(lo, min(lo + batch, requests.num_samples)))
        with torch.no_grad():
            outs.append(model(dense, kjt))
    return torch.cat(outs)


def test_criteo_predictions_agree_between_torch_and_updlrm_sparse(criteo):
    ref = DLRM(criteo_tables(500, 8), dense_in_features=13, bottom_mlp=[32, 8], top_mlp=[32, 16, 1], seed=5)
    with DLRM.from_torch(ref, backend="emulator", nr_dpus=13) as on_dpus:
        assert on_dpus.sparse_kind == "updlrm" and isinstance(on_dpus.sparse_arch, updlrm.EmbeddingBagCollection)
        expected = predict_all(ref, criteo, 256)
        got = predict_all(on_dpus, criteo, 256)
        profile = on_dpus.last_profile()
        report = on_dpus.sparse_arch.last_report
    assert got.shape == (600, 1)
    assert float(expected.std()) > 1e-3, "predictions should vary across samples"
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    assert report.lookups_in == 26 * (600 - 512)  # the last batch: 88 samples x 26 lookups
    assert profile.nr_lookups == report.lookups_run  # what reached the engine (after in-batch dedup)
    assert profile.modeled.total_s > 0


def test_the_same_seed_gives_one_model_on_either_sparse_kind(criteo):
    tables = criteo_tables(500, 4)
    a = DLRM(tables, 13, [8, 4], [8, 1], seed=9)
    with DLRM(tables, 13, [8, 4], [8, 1], seed=9, sparse="updlrm", backend="emulator", nr_dpus=2) as b:
        dense, kjt = criteo.batch(np.arange(64))
        torch.testing.assert_close(b(dense, kjt), a(dense, kjt), rtol=RTOL, atol=ATOL)
    assert not a.bottom_mlp[0].weight.equal(DLRM(tables, 13, [8, 4], [8, 1], seed=10).bottom_mlp[0].weight)


def mixed_tables() -> list[EmbeddingBagConfig]:
    # Shared table (two features), MEAN and SUM pooling mixed, an int8 table.
    return [
        EmbeddingBagConfig(name="user", num_embeddings=50, embedding_dim=4, feature_names=["user", "friend"]),
        EmbeddingBagConfig(name="item", num_embeddings=30, embedding_dim=4, feature_names=["item"], pooling="MEAN"),
        EmbeddingBagConfig(name="tag", num_embeddings=7, embedding_dim=4, feature_names=["tag"], pooling="MEAN"),
    ]


@st.composite
def jagged_batches(draw):
    b = draw(st.integers(1, 12))
    rows = {"user": 50, "friend": 50, "item": 30, "tag": 7}
    keys = draw(st.permutations(list(rows)))  # the KJT's key order need not be the tables'
    lengths = [draw(st.lists(st.integers(0, 5), min_size=b, max_size=b)) for _ in keys]
    values = [
        draw(st.lists(st.integers(0, rows[k] - 1), min_size=sum(ls), max_size=sum(ls))) for k, ls in zip(keys, lengths)
    ]
    dense = draw(st.lists(st.floats(-3, 3, width=32), min_size=3 * b, max_size=3 * b))
    return keys, values, lengths, torch.tensor(dense, dtype=torch.float32).view(b, 3)


@pytest.fixture(scope="module")
def mixed_pair():
    ref = DLRM(mixed_tables(), dense_in_features=3, bottom_mlp=[6, 4], top_mlp=[5, 1], seed=2)
    on_dpus = ref.with_sparse("updlrm", backend="emulator", nr_dpus=3)
    yield ref, on_dpus
    on_dpus.close()


@settings(max_examples=25, deadline=None)
@given(batch=jagged_batches())
def test_mixed_pooling_shared_tables_and_empty_bags_agree(mixed_pair, batch):
    ref, on_dpus = mixed_pair
    keys, values, lengths, dense = batch
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys),
        values=torch.tensor([v for vs in values for v in vs], dtype=torch.int64),
        lengths=torch.tensor([n for ns in lengths for n in ns], dtype=torch.int64),
    )
    torch.testing.assert_close(on_dpus(dense, kjt), ref(dense, kjt), rtol=RTOL, atol=ATOL)


def test_threads_share_one_updlrm_dlrm(mixed_pair):
    ref, on_dpus = mixed_pair
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        b = 16
        lengths = torch.randint(0, 4, (4 * b,), generator=g)
        values = torch.cat(
            [
                torch.randint(0, n, (int(lengths[i * b : (i + 1) * b].sum()),), generator=g)
                for i, n in enumerate([50, 50, 30, 7])
            ]
        )
        kjt = KeyedJaggedTensor.from_lengths_sync(["user", "friend", "item", "tag"], values, lengths)
        batches.append((torch.randn(b, 3, generator=g), kjt))
    expected = [ref(d, k) for d, k in batches]
    got = [None] * len(batches)

    def work(i):
        got[i] = on_dpus(*batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g_, e in zip(got, expected):
        torch.testing.assert_close(g_, e, rtol=RTOL, atol=ATOL)


def test_checkpoint_round_trip_into_either_sparse_kind(tmp_path, criteo):
    ref = DLRM(criteo_tables(500, 4), 13, [8, 4], [8, 1], seed=4)
    dense, kjt = criteo.batch(np.arange(100))
    expected = ref(dense, kjt)
    path = ref.save(tmp_path / "dlrm.pt")
    torch.testing.assert_close(DLRM.load(path)(dense, kjt), expected, rtol=0, atol=0)
    with DLRM.load(path, sparse="updlrm", backend="emulator", nr_dpus=4) as on_dpus:
        torch.testing.assert_close(on_dpus(dense, kjt), expected, rtol=RTOL, atol=ATOL)
        # The updlrm model's own state_dict goes through torch.save/torch.load too.
        torch.save(on_dpus.state_dict(), tmp_path / "bare.pt")
    bare = DLRM.load(tmp_path / "bare.pt")  # architecture inferred from the shapes
    assert bare.config()["bottom_mlp"] == [8, 4] and bare.config()["top_mlp"] == [8, 1]
    torch.testing.assert_close(bare(dense, kjt), expected, rtol=RTOL, atol=ATOL)
    # load_state_dict of a torch-sparse model accepts the updlrm model's state (fp32 tables).
    fresh = DLRM(criteo_tables(500, 4), 13, [8, 4], [8, 1], seed=99)
    fresh.load_state_dict(torch.load(tmp_path / "bare.pt", weights_only=True))
    torch.testing.assert_close(fresh(dense, kjt), expected, rtol=RTOL, atol=ATOL)


def test_int8_tables_come_back_dequantised(criteo):
    tables = [
        EmbeddingBagConfig(name=k, num_embeddings=500, embedding_dim=4, feature_names=[k], row_format="int8")
        for k in criteo_feature_names()
    ]
    ref = DLRM(tables, 13, [8, 4], [8, 1], seed=1)
    with ref.with_sparse("updlrm", backend="emulator", nr_dpus=4) as q:
        back = q.with_sparse("torch")
        dense, kjt = criteo.batch(np.arange(50))
        # The torch twin of the int8 model holds the dequantised rows: the two agree in fp32.
        torch.testing.assert_close(q(dense, kjt), back(dense, kjt), rtol=RTOL, atol=ATOL)
        w = back.sparse_arch.embedding_bags["C1"].weight
        scale = float(w.abs().max()) / 127
        assert torch.allclose(w / scale, torch.round(w / scale), atol=1e-3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(bottom_mlp=[8, 5]), "embedding_dim == bottom_mlp"),
        (dict(dense_in_features=0), "dense_in_features"),
        (dict(top_mlp=[]), "at least one layer"),
        (dict(sparse="gpu"), "sparse must be one of"),
    ],
)
def test_bad_configurations_say_what_to_fix(bad, message):
    args = dict(tables=criteo_tables(10, 4), dense_in_features=13, bottom_mlp=[8, 4], top_mlp=[4, 1]) | bad
    with pytest.raises(ValueError, match=message):
        DLRM(**args)


def test_bad_inputs_and_checkpoints(tmp_path, criteo):
    model = DLRM(criteo_tables(500, 4), 13, [4], [1])
    dense, kjt = criteo.batch([0, 1])
    with pytest.raises(ValueError, match=r"shape \(B, 13\)"):
        model(dense[:, :5], kjt)
    with pytest.raises(ValueError, match="2 rows of dense features but 1 samples"):
        model(dense, criteo.batch([0])[1])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        DLRM.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        DLRM.load(tmp_path / "missing.pt")
    state = model.state_dict()
    state["top_mlp.0.weight"] = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="top_mlp"):
        DLRM.load(state)
