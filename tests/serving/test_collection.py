"""EmbeddingBagCollection vs torch.nn.EmbeddingBag: mixed pooling, shared tables, weights, formats,
state_dict through torch.save/load, converters, torchrec duck typing, one-line errors."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import assert_close_to_reference, random_kjt, reference_pool, to_variable_batch

import updlrm
from updlrm import EmbeddingBagCollection, EmbeddingBagConfig, InvalidInputError, KeyedJaggedTensor
from updlrm.tbe import IndexOutOfRangeError

FORMATS = ["fp32", "int8", "int32"]


@st.composite
def collections(draw):
    weighted = draw(st.booleans())
    tables, keys, rows = [], [], {}
    for t in range(draw(st.integers(1, 3))):
        nfeat = draw(st.integers(1, 3))
        names = [f"f{t}_{i}" for i in range(nfeat)]
        pooling = "SUM" if weighted else draw(st.sampled_from(["SUM", "MEAN"]))
        n = draw(st.integers(1, 40))
        tables.append(
            EmbeddingBagConfig(
                f"t{t}", n, draw(st.integers(1, 9)), names, pooling=pooling, row_format=draw(st.sampled_from(FORMATS))
            )
        )
        keys += names
        rows.update(dict.fromkeys(names, n))
    return tables, keys, rows, weighted


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    collections(),
    st.integers(0, 9),
    st.sampled_from(["auto", True, False]),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_parity_with_torch_embedding_bags(make_ebc, spec, batch, dedup, shuffle, variable_batch, seed):
    tables, keys, rows, weighted = spec
    rng = np.random.default_rng(seed)
    ebc = make_ebc(tables, is_weighted=weighted, dedup=dedup, seed=seed % 1000, nr_dpus=int(rng.integers(1, 6)))
    # A KJT may list its keys in any order; repeated bags exercise the dedup path.
    order = list(rng.permutation(keys)) if shuffle else keys
    kjt = random_kjt(rng, order, rows, batch, weighted=weighted, pool=int(rng.integers(1, 4)) if seed % 2 else None)
    if variable_batch:
        kjt = to_variable_batch(kjt)  # an already deduplicated input
    kt = ebc(kjt)
    assert kt.keys() == keys
    assert kt.length_per_key() == [t.embedding_dim for t in tables for _ in t.feature_names]
    assert_close_to_reference(kt.values(), reference_pool(ebc, kjt))


@pytest.mark.parametrize("row_format", FORMATS)
def test_mixed_pooling_shared_table_and_empty_bags(make_ebc, row_format):
    tables = [
        EmbeddingBagConfig("items", 30, 5, ["cand", "history"], pooling="MEAN", row_format=row_format),
        EmbeddingBagConfig("users", 20, 3, ["uid"], row_format=row_format),
    ]
    ebc = make_ebc(tables)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["uid", "history", "cand"], torch.tensor([4, 1, 2, 3, 7, 7, 29]), torch.tensor([1, 0, 3, 0, 2, 1])
    )
    out = ebc(kjt)
    assert_close_to_reference(out.values(), reference_pool(ebc, kjt))
    # history's sample 1 and uid's sample 1 are empty bags: zeros, also under MEAN.
    assert torch.equal(out["history"][1], torch.zeros(5)) and torch.equal(out["uid"][1], torch.zeros(3))
    # One engine table per config: the shared table's rows are stored once.
    assert [t.name for t in ebc.tbe.tables] == ["items", "users"] and len(ebc.plan.tables) == 2


def test_weighted_features(make_ebc):
    ebc = make_ebc([EmbeddingBagConfig("t", 12, 4, ["a", "b"])], is_weighted=True)
    kjt = KeyedJaggedTensor(
        ["a", "b"],
        torch.tensor([1, 2, 3, 11]),
        weights=torch.tensor([0.5, -2.0, 3.0, 1.5]),
        lengths=torch.tensor([2, 0, 1, 1]),
    )
    assert_close_to_reference(ebc(kjt).values(), reference_pool(ebc, kjt))


def test_weighted_mean_is_refused():
    with pytest.raises(ValueError, match="pool with MEAN, which does not take per-sample weights"):
        EmbeddingBagCollection([EmbeddingBagConfig("t", 4, 2, pooling="MEAN")], is_weighted=True, backend="emulator")


@pytest.mark.parametrize(
    "kjt, message",
    [
        (KeyedJaggedTensor(["a", "zz"], torch.tensor([1]), lengths=torch.tensor([1, 0])), "key 'zz' is not a feature"),
        (KeyedJaggedTensor(["a"], torch.tensor([1]), lengths=torch.tensor([1])), "has no key 'b'"),
        (
            KeyedJaggedTensor(["a", "b"], torch.tensor([1]), lengths=torch.tensor([1, 0]), weights=torch.tensor([1.0])),
            "carries weights, but the collection's features are not weighted",
        ),
        (
            KeyedJaggedTensor(["a", "b"], torch.tensor([1, 10]), lengths=torch.tensor([1, 1])),
            r"feature 'b' \(table 't'\), bag 0: values\[1\] = 10 is out of range \[0, 10\)",
        ),
        (
            KeyedJaggedTensor(["a", "b"], torch.tensor([-1]), lengths=torch.tensor([0, 1])),
            "values.0. = -1 is out of range",
        ),
    ],
)
def test_bad_inputs_are_one_clear_line(make_ebc, kjt, message):
    ebc = make_ebc([EmbeddingBagConfig("t", 10, 2, ["a", "b"])])
    with pytest.raises(InvalidInputError, match=message) as info:
        ebc(kjt)
    assert "\n" not in str(info.value)
    # The collection still works afterwards.
    good = KeyedJaggedTensor(["a", "b"], torch.tensor([1, 2]), lengths=torch.tensor([1, 1]))
    assert_close_to_reference(ebc(good).values(), reference_pool(ebc, good))


def test_more_bad_inputs(make_ebc):
    weighted = make_ebc([EmbeddingBagConfig("t", 10, 2, ["a"])], is_weighted=True)
    with pytest.raises(InvalidInputError, match="pass a KeyedJaggedTensor with weights"):
        weighted(KeyedJaggedTensor(["a"], torch.tensor([1]), lengths=torch.tensor([1])))
    with pytest.raises(InvalidInputError, match="not finite"):
        weighted(
            KeyedJaggedTensor(["a"], torch.tensor([1]), lengths=torch.tensor([1]), weights=torch.tensor([float("nan")]))
        )
    with pytest.raises(updlrm.InputTypeError, match="expected a KeyedJaggedTensor"):
        weighted(torch.tensor([1, 2]))
    assert isinstance(IndexOutOfRangeError("x"), InvalidInputError)


def test_out_of_range_lookups_dropped_under_ignore(make_ebc):
    ebc = make_ebc(
        [EmbeddingBagConfig("t", 10, 2, ["a"], pooling="MEAN")], bounds_check_mode=updlrm.BoundsCheckMode.IGNORE
    )
    out = ebc(KeyedJaggedTensor(["a"], torch.tensor([1, 99, 3]), lengths=torch.tensor([2, 1])))
    w = ebc.table_weights("t")
    torch.testing.assert_close(out.values()[0], w[1])  # the bad lookup counts for nothing, not in the mean either
    torch.testing.assert_close(out.values()[1], w[3])


@pytest.mark.parametrize(
    "tables, message",
    [
        ([], "non-empty list of tables"),
        ([EmbeddingBagConfig("t", 4, 2, ["a"]), EmbeddingBagConfig("t", 4, 2, ["b"])], "table names must be unique"),
        (
            [EmbeddingBagConfig("t", 4, 2, ["a"]), EmbeddingBagConfig("u", 4, 2, ["a"])],
            "feature 'a' is listed by tables 't' and 'u'",
        ),
    ],
)
def test_bad_tables(tables, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingBagCollection(tables, backend="emulator")


def test_config_checks():
    with pytest.raises(ValueError, match="pass torchrec-style arguments by keyword"):
        EmbeddingBagConfig(100, 8, "t")
    with pytest.raises(ValueError, match="pooling 'max' is not supported"):
        EmbeddingBagConfig("t", 4, 2, pooling="max")
    with pytest.raises(ValueError, match="row_format 'fp16'"):
        EmbeddingBagConfig("t", 4, 2, row_format="fp16")
    with pytest.raises(ValueError, match="feature_names must be a list"):
        EmbeddingBagConfig("t", 4, 2, "a")
    assert EmbeddingBagConfig("t", 4, 2).feature_names == ["t"]


@pytest.mark.parametrize("row_format", FORMATS)
def test_state_dict_round_trip_through_torch_save(make_ebc, row_format, tmp_path):
    tables = [
        EmbeddingBagConfig("a", 25, 6, ["x", "y"], pooling="MEAN", row_format=row_format),
        EmbeddingBagConfig("b", 9, 3, ["z"], row_format=row_format),
    ]
    src = make_ebc(tables, seed=1)
    kjt = random_kjt(np.random.default_rng(0), ["x", "y", "z"], {"x": 25, "y": 25, "z": 9}, 7)
    expected = src(kjt).values()
    sd = src.state_dict()
    keys = {"embedding_bags.a.weight", "embedding_bags.b.weight"}
    if row_format != "fp32":
        keys |= {f"embedding_bags.{t}.weight_{p}" for t in "ab" for p in ("quantized", "scale")}
        assert sd["embedding_bags.a.weight_quantized"].dtype == {"int8": torch.int8, "int32": torch.int32}[row_format]
    assert set(sd) == keys
    torch.testing.assert_close(sd["embedding_bags.a.weight"], src.table_weights("a"))
    torch.save(sd, tmp_path / "ebc.pt")
    dst = make_ebc(tables, seed=2)
    assert not torch.equal(dst(kjt).values(), expected)
    result = dst.load_state_dict(torch.load(tmp_path / "ebc.pt"))
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(dst(kjt).values(), expected)  # bit-identical: the stored rows came back exactly


def test_state_dict_nested_in_a_model_and_strict_keys(make_ebc):
    tables = [EmbeddingBagConfig("a", 5, 2, ["x"], row_format="int8")]
    model = torch.nn.Module()
    model.sparse = make_ebc(tables)
    model.dense = torch.nn.Linear(2, 1)
    sd = model.state_dict()
    assert "sparse.embedding_bags.a.weight" in sd and "dense.weight" in sd
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    other = torch.nn.Module()
    other.sparse = make_ebc(tables, seed=9)
    other.dense = torch.nn.Linear(2, 1)
    other.load_state_dict(torch.load(buf))
    assert torch.equal(other.sparse.table_weights("a"), model.sparse.table_weights("a"))
    bad = dict(sd)
    bad["sparse.embedding_bags.zz.weight"] = torch.zeros(1)
    del bad["sparse.embedding_bags.a.weight"]
    with pytest.raises(RuntimeError, match=r"(?s)Missing key.*sparse\.embedding_bags\.a\.weight.*Unexpected key.*zz"):
        other.load_state_dict(bad)
    with pytest.raises(RuntimeError, match=r"(?s)size mismatch.*table 'a' has shape"):
        model.sparse.load_state_dict({"embedding_bags.a.weight": torch.zeros(4, 2)}, strict=False)


def test_edited_float_view_wins_over_stale_quantized_rows(make_ebc):
    ebc = make_ebc([EmbeddingBagConfig("a", 4, 2, ["x"], row_format="int8")])
    sd = ebc.state_dict()
    sd["embedding_bags.a.weight"] = torch.full((4, 2), 0.5)
    ebc.load_state_dict(sd)
    torch.testing.assert_close(ebc.table_weights("a"), torch.full((4, 2), 0.5))


@pytest.mark.parametrize("row_format", FORMATS)
def test_converters_round_trip(make_ebc, row_format):
    tables = [
        EmbeddingBagConfig("a", 30, 4, ["x", "y"], row_format=row_format),
        EmbeddingBagConfig("b", 7, 2, ["z"], pooling="MEAN", row_format=row_format),
    ]
    ebc = make_ebc(tables)
    kjt = random_kjt(np.random.default_rng(3), ["x", "y", "z"], {"x": 30, "y": 30, "z": 7}, 6)
    ref = ebc.to_torch()
    assert set(ref.state_dict()) == {"embedding_bags.a.weight", "embedding_bags.b.weight"}  # torchrec's names
    assert isinstance(ref.embedding_bags["a"], torch.nn.EmbeddingBag)
    kt, rt = ebc(kjt), ref(kjt)
    assert rt.keys() == kt.keys()
    assert_close_to_reference(kt.values(), rt.values())
    back = EmbeddingBagCollection.from_torch(ref, backend="emulator", nr_dpus=3)
    try:
        for c in tables:
            assert torch.equal(back.table_weights(c.name), ebc.table_weights(c.name))
        assert back.embedding_bag_configs() == ebc.embedding_bag_configs()
        assert torch.equal(back(kjt).values(), ebc(kjt).values()) or row_format == "fp32"
    finally:
        back.close()
    # From plain dicts: by table name or by torchrec's state_dict keys.
    weights = {c.name: ebc.table_weights(c.name) for c in tables}
    for source in (weights, ref.state_dict()):
        d = EmbeddingBagCollection.from_torch(source, tables=tables, backend="emulator", nr_dpus=2)
        try:
            assert all(torch.equal(d.table_weights(n), w) for n, w in weights.items())
        finally:
            d.close()


def test_torchrec_objects_by_duck_typing(make_ebc):
    # torchrec's EmbeddingBagConfig has data_type and an enum pooling; its KJT lazily holds lengths.
    PoolingType = SimpleNamespace(MEAN=SimpleNamespace(value="MEAN", name="MEAN"))
    DataType = SimpleNamespace(INT8=SimpleNamespace(value="INT8", name="INT8"))
    config = SimpleNamespace(
        name="t",
        num_embeddings=16,
        embedding_dim=4,
        feature_names=["f"],
        pooling=PoolingType.MEAN,
        data_type=DataType.INT8,
        weight_init_min=None,
        weight_init_max=None,
    )

    class TorchrecLikeKJT:
        def keys(self):
            return ["f"]

        def values(self):
            return torch.tensor([1, 2, 3])

        def lengths(self):
            return torch.tensor([2, 1], dtype=torch.int32)

        def weights_or_none(self):
            return None

    ebc = make_ebc([config])
    assert ebc.embedding_bag_configs()[0].row_format.value == "int8"
    assert ebc.embedding_bag_configs()[0].pooling.value == "MEAN"
    out = ebc(TorchrecLikeKJT())
    w = ebc.table_weights("t")
    torch.testing.assert_close(out.values(), torch.stack([(w[1] + w[2]) / 2, w[3]]))
    with pytest.raises(ValueError, match="data_type FP16 is not supported"):
        EmbeddingBagConfig.coerce(
            SimpleNamespace(name="t", num_embeddings=2, embedding_dim=2, data_type=SimpleNamespace(name="FP16"))
        )


def test_tbe_no_longer_ignores_a_mean_config():
    # Before: TableBatchedEmbeddingBags([config with pooling=MEAN]) silently pooled with SUM.
    with updlrm.TableBatchedEmbeddingBags(
        [EmbeddingBagConfig("t", 8, 2, pooling="MEAN")], backend="emulator", nr_dpus=1
    ) as tbe:
        out = tbe(torch.tensor([1, 3]), torch.tensor([0, 2]))
        torch.testing.assert_close(out[0], torch.from_numpy(tbe.weights(0)[[1, 3]].mean(0)))
    with pytest.raises(ValueError, match=r"mix SUM and MEAN.*EmbeddingBagCollection"):
        updlrm.TableBatchedEmbeddingBags(
            [EmbeddingBagConfig("a", 8, 2, pooling="MEAN"), EmbeddingBagConfig("b", 8, 2)], backend="emulator"
        )
    with pytest.raises(ValueError, match="pooling_mode=SUM contradicts table 't'"):
        updlrm.TableBatchedEmbeddingBags(
            [EmbeddingBagConfig("t", 8, 2, pooling="MEAN")], pooling_mode="sum", backend="emulator"
        )


def test_readable_summary_and_weights_dict(make_ebc):
    w = torch.arange(12.0).reshape(6, 2)
    ebc = make_ebc([EmbeddingBagConfig("t", 6, 2, ["a", "b"], pooling="MEAN")], weights={"t": w})
    text = repr(ebc)
    assert "t: 6 x 2 fp32 MEAN <- ['a', 'b']" in text and "backend=emulator" in text
    assert torch.equal(ebc.table_weights("t"), w)
    with pytest.raises(ValueError, match=r"missing \['t'\], unknown \['u'\]"):
        EmbeddingBagCollection([EmbeddingBagConfig("t", 6, 2)], weights={"u": w}, backend="emulator")


def test_empty_batch(make_ebc):
    ebc = make_ebc([EmbeddingBagConfig("t", 6, 2, ["a", "b"])])
    out = ebc(KeyedJaggedTensor.empty(["a", "b"], 0))
    assert out.values().shape == (0, 4) and out.keys() == ["a", "b"]
    out = ebc(KeyedJaggedTensor.empty(["a", "b"], 3))
    assert torch.equal(out.values(), torch.zeros(3, 4))


def test_saved_plan_is_used_and_checked(make_ebc, tmp_path):
    from updlrm.plan import PlanError, uniform_plan
    from updlrm.specs import TableSpec, Topology

    # A plan built by the planner for plain table specs (no feature names, unfitted scale).
    plan = uniform_plan(
        [TableSpec("a", 40, 4, row_format="int8"), TableSpec("b", 10, 2, row_format="int8")],
        Topology(nr_dpus=3),
        "row_wise",
    )
    path = plan.save(tmp_path / "plan.json")
    tables = [
        EmbeddingBagConfig("a", 40, 4, ["x", "y"], row_format="int8"),
        EmbeddingBagConfig("b", 10, 2, ["z"], row_format="int8"),
    ]
    ebc = make_ebc(tables, plan=path, nr_dpus=None)
    assert ebc.plan.topology.nr_dpus == 3 and len(ebc.plan.shards) == len(plan.shards)
    kjt = random_kjt(np.random.default_rng(0), ["x", "y", "z"], {"x": 40, "y": 40, "z": 10}, 5)
    assert_close_to_reference(ebc(kjt).values(), reference_pool(ebc, kjt))
    with pytest.raises(PlanError, match="the plan was built for tables"):
        make_ebc([EmbeddingBagConfig("a", 41, 4, ["x"])], plan=path, nr_dpus=None)


def test_threads_get_their_serial_results(make_ebc):
    import threading

    ebc = make_ebc(
        [
            EmbeddingBagConfig("a", 500, 8, ["x", "y"], row_format="int8"),
            EmbeddingBagConfig("b", 300, 4, ["z"], pooling="MEAN"),
        ],
        nr_dpus=8,
    )
    rng = np.random.default_rng(0)
    kjts = [
        random_kjt(rng, ["x", "y", "z"], {"x": 500, "y": 500, "z": 300}, 32, pool=3 if i % 2 else None)
        for i in range(6)
    ]
    serial = [ebc(k).values() for k in kjts]
    failures = []

    def worker(i):
        for r in range(8):
            k = (i + r) % len(kjts)
            try:
                if not torch.equal(ebc(kjts[k]).values(), serial[k]):
                    failures.append(f"thread {i}: batch {k} differs")
            except Exception as e:
                failures.append(f"thread {i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # A state_dict reload in the middle: batches see the old or the new tables, never a closed engine.
    ebc.load_state_dict(ebc.state_dict())
    for t in threads:
        t.join()
    assert not failures, failures[:3]


@pytest.mark.parametrize("row_format", FORMATS)
def test_kjt_in_collection_order_passes_through_unchanged(make_ebc, row_format):
    """One feature per table in the collection's order: the KJT goes to the engine as it is.

    The same batch with its keys in another order takes the general gather/expand path;
    both give the same bits.
    """
    tables = [
        EmbeddingBagConfig("a", 30, 4, ["x"], pooling="MEAN", row_format=row_format),
        EmbeddingBagConfig("b", 20, 3, ["y"], row_format=row_format),
        EmbeddingBagConfig("c", 10, 2, ["z"], pooling="MEAN", row_format=row_format),
    ]
    ebc = make_ebc(tables, dedup=False)
    rng = np.random.default_rng(7)
    kjt = random_kjt(rng, ["x", "y", "z"], {"x": 30, "y": 20, "z": 10}, 9)
    d = kjt.to_dict()
    shuffled = KeyedJaggedTensor.from_jt_dict({k: d[k] for k in ["z", "x", "y"]})
    a, b = ebc(kjt).values(), ebc(shuffled).values()
    assert torch.equal(a, b)
    assert_close_to_reference(a, reference_pool(ebc, kjt))
