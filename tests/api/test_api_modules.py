"""TableBatchedEmbeddingBags and EmbeddingBag against torch, on the emulator and on the reference.

Each module is compared with ``torch.nn.functional.embedding_bag`` / ``torch.nn.EmbeddingBag``
using the module's own (dequantised) weights, so integer formats are checked for the
pooling, not for the quantisation error.
"""

import numpy as np
import pytest
import torch
from api_reference import engine_weights, tbe_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from updlrm import EmbeddingBag, PoolingMode, RowFormat, TableBatchedEmbeddingBags, TableSpec
from updlrm.plan import PlanError, uniform_plan
from updlrm.specs import Topology
from updlrm.tbe import InvalidInputError, quantize_table


def expected_and_tolerance(tbe, idx, off, psw):
    tables = [torch.from_numpy(tbe.weights(t)) for t in range(len(tbe.tables))]
    psw = engine_weights(tbe.tables, off, psw)
    ref = tbe_reference(tables, idx, off, psw, tbe.pooling_mode)
    magnitude = tbe_reference(
        [t.abs() for t in tables], idx, off, None if psw is None else np.abs(psw), tbe.pooling_mode
    )
    atol = 1e-6 + 1e-5 * magnitude
    return ref, atol


def random_batch(rng, tables, B, max_len, weighted, empty_fraction=0.2):
    T = len(tables)
    lengths = rng.integers(0, max_len + 1, size=T * B)
    lengths[rng.random(T * B) < empty_fraction] = 0
    off = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    table_of_lookup = np.repeat(np.repeat(np.arange(T), B), lengths)
    rows = np.array([t.num_embeddings for t in tables])
    idx = (rng.random(off[-1]) * rows[table_of_lookup]).astype(np.int64)
    psw = rng.uniform(-2, 2, size=idx.size).astype(np.float32) if weighted else None
    return idx, off, psw


@st.composite
def tbe_cases(draw):
    T = draw(st.integers(1, 4))
    fmt = draw(st.sampled_from([RowFormat.FP32, RowFormat.FP32, RowFormat.INT32, RowFormat.INT8]))
    tables = [
        TableSpec(
            f"t{i}", draw(st.integers(1, 300)), draw(st.sampled_from([1, 2, 3, 4, 8, 16, 33, 64])), row_format=fmt
        )
        for i in range(T)
    ]
    pooling = draw(st.sampled_from([PoolingMode.SUM, PoolingMode.MEAN]))
    weighted = pooling == PoolingMode.SUM and draw(st.booleans())
    return {
        "tables": tables,
        "pooling": pooling,
        "weighted": weighted,
        "B": draw(st.integers(1, 40)),
        "max_len": draw(st.sampled_from([0, 1, 3, 20])),
        "nr_dpus": draw(st.sampled_from([1, 3, 8])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tbe_cases())
def test_tbe_matches_torch_on_random_batches(engine_kind, case):
    rng = np.random.default_rng(case["seed"])
    with TableBatchedEmbeddingBags(
        case["tables"], backend="emulator", nr_dpus=case["nr_dpus"], pooling_mode=case["pooling"], seed=case["seed"]
    ) as tbe:
        for _ in range(2):  # a second batch on the same DPUs
            idx, off, psw = random_batch(rng, case["tables"], case["B"], case["max_len"], case["weighted"])
            out = tbe(idx, off, psw)
            ref, atol = expected_and_tolerance(tbe, idx, off, psw)
            assert out.shape == (case["B"], sum(t.embedding_dim for t in case["tables"]))
            assert out.dtype == np.float32
            assert np.all(np.abs(out - ref) <= atol), f"max abs err {np.abs(out - ref).max()}"


@pytest.mark.parametrize("layout", ["table_wise", "row_wise", "column_wise", "tiled"])
def test_tbe_with_every_uniform_plan_layout(engine_kind, layout):
    tables = [TableSpec("a", 97, 16), TableSpec("b", 1, 8), TableSpec("c", 40, 5)]
    plan = uniform_plan(tables, Topology(nr_dpus=4), layout)
    rng = np.random.default_rng(1)
    with TableBatchedEmbeddingBags(tables, plan=plan, backend="emulator", seed=3) as tbe:
        idx, off, psw = random_batch(rng, tables, 33, 6, weighted=True)
        ref, atol = expected_and_tolerance(tbe, idx, off, psw)
        np.testing.assert_array_less(np.abs(tbe(idx, off, psw) - ref), atol)


def test_adversarial_batches(engine_kind):
    tables = [TableSpec("one_row", 1, 3), TableSpec("big", 1000, 64)]
    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=4, pooling_mode="mean") as tbe:
        cases = [
            (np.array([], np.int64), np.zeros(2 * 5 + 1, np.int64)),  # every bag empty
            (np.zeros(500, np.int64), [0, 500, 500]),  # B=1: one long bag on the one-row table
            (
                np.concatenate([np.zeros(7), np.full(9, 999)]).astype(np.int64),
                np.array([0, 7, 16]),
            ),  # same row repeated
        ]
        for idx, off in cases:
            off = np.asarray(off, np.int64)
            ref, atol = expected_and_tolerance(tbe, idx, off, None)
            out = tbe(idx, off)
            np.testing.assert_array_less(np.abs(out - ref), atol)
        empty = tbe(np.array([], np.int64), np.array([0]))
        assert empty.shape == (0, 67)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_inputs_come_back_in_kind(engine_kind, kind, dtype):
    tables = [TableSpec("a", 50, 8)]
    idx, off = np.array([1, 2, 49, 0], dtype), np.array([0, 3, 4], dtype)
    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=2) as tbe:
        if kind == "torch":
            out = tbe(torch.from_numpy(idx), torch.from_numpy(off))
            assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and not out.requires_grad
            out = out.numpy()
        else:
            out = tbe(idx, off)
            assert isinstance(out, np.ndarray)
        w = tbe.weights(0)
        np.testing.assert_allclose(out, np.stack([w[[1, 2, 49]].sum(0), w[0]]), rtol=1e-6, atol=1e-7)
        assert tbe.last_stats is not None


def test_tbe_composes_with_a_torch_model(engine_kind):
    tables = [TableSpec("a", 30, 4), TableSpec("b", 20, 4)]
    with TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=2) as tbe:
        model = torch.nn.Sequential()
        model.add_module("tbe", tbe)
        head = torch.nn.Linear(8, 1)
        idx, off = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2, 3, 4, 4])
        y = head(model[0](idx, off))
        assert y.shape == (2, 1)
        assert "tbe" in dict(model.named_children())
        assert "backend=emulator" in repr(tbe)


def test_weights_are_deterministic_and_torchrec_uniform(reference_engine):
    tables = [TableSpec("a", 400, 8)]
    a = TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=1, seed=7).weights(0)
    b = TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=1, seed=7).weights(0)
    c = TableBatchedEmbeddingBags(tables, backend="emulator", nr_dpus=1, seed=8).weights(0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    bound = np.sqrt(1 / 400)
    assert a.min() >= -bound and a.max() <= bound and a.max() > 0.9 * bound
    d = TableBatchedEmbeddingBags(
        tables, backend="emulator", nr_dpus=1, weight_init_min=2.0, weight_init_max=3.0
    ).weights("a")
    assert d.min() >= 2.0 and d.max() <= 3.0


def test_given_weights_and_quantisation(reference_engine):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(20, 6)).astype(np.float32)
    for fmt, rel in [(RowFormat.FP32, 0.0), (RowFormat.INT32, 2.0**-24), (RowFormat.INT8, 1 / 127)]:
        tbe = TableBatchedEmbeddingBags(
            [TableSpec("a", 20, 6, row_format=fmt)], weights=[torch.from_numpy(w)], backend="emulator", nr_dpus=2
        )
        assert np.abs(tbe.weights(0) - w).max() <= rel * np.abs(w).max() * 0.5 + 1e-7
        stored = reference_engine.instances[-1].weights[0]
        assert stored.dtype == fmt.dtype
        assert tbe.plan.tables[0].scale == tbe.tables[0].scale
    # "table" quantisation keeps the given scale and refuses values the format cannot hold
    spec = TableSpec("a", 20, 6, row_format=RowFormat.INT8, scale=0.5)
    with pytest.raises(InvalidInputError, match=r"more than int8 holds \(127\)"):
        TableBatchedEmbeddingBags([spec], weights=[w * 100], backend="emulator", quantization="table")
    q = np.clip(np.rint(w / 0.05), -127, 127).astype(np.int8)
    tbe = TableBatchedEmbeddingBags(
        [TableSpec("a", 20, 6, row_format="int8", scale=0.05)], weights=[q], backend="emulator", nr_dpus=1
    )
    np.testing.assert_allclose(tbe.weights(0), q * np.float32(0.05), rtol=1e-6)
    with pytest.raises(TypeError, match="integer weights must be int8"):
        quantize_table(q.astype(np.int32), TableSpec("a", 20, 6, row_format="int8"))
    with pytest.raises(InvalidInputError, match=r"weights have shape \(20, 6\), expected \(21, 6\)"):
        quantize_table(w, TableSpec("a", 21, 6))


def test_plan_argument(reference_engine, tmp_path):
    tables = [TableSpec("a", 64, 8), TableSpec("b", 10, 4)]
    plan = uniform_plan(tables, Topology(nr_dpus=3), "table_wise")
    path = plan.save(tmp_path / "plan.json")
    tbe = TableBatchedEmbeddingBags(tables, plan=path, backend="emulator")
    assert tbe.plan.topology.nr_dpus == 3 and reference_engine.instances[-1].plan is tbe.plan
    tbe = TableBatchedEmbeddingBags(None, plan=plan, backend="emulator")
    assert [t.name for t in tbe.tables] == ["a", "b"]
    with pytest.raises(PlanError, match="table a: plan has 64 rows, the module has 65"):
        TableBatchedEmbeddingBags([TableSpec("a", 65, 8), TableSpec("b", 10, 4)], plan=plan, backend="emulator")
    with pytest.raises(ValueError, match="contradicts the plan's 3 DPUs"):
        TableBatchedEmbeddingBags(tables, plan=plan, nr_dpus=4, backend="emulator")
    with pytest.raises(ValueError, match="unique"):
        TableBatchedEmbeddingBags([TableSpec("a", 4, 4), TableSpec("a", 4, 4)], backend="emulator")
    tbe = TableBatchedEmbeddingBags([(10, 4), (3, 2)], backend="emulator", nr_dpus=2)
    assert [t.name for t in tbe.tables] == ["t0", "t1"] and tbe.total_dim == 6
    tbe.close()
    with pytest.raises(RuntimeError, match="closed"):
        tbe(np.array([1]), np.array([0, 1, 1]))
    assert reference_engine.instances[-1].closed


# ---- EmbeddingBag vs torch.nn.EmbeddingBag ---------------------------------------------


def torch_bag(bag, **kwargs):
    ref = torch.nn.EmbeddingBag(bag.num_embeddings, bag.embedding_dim, mode=bag.mode, **kwargs)
    with torch.no_grad():
        ref.weight.copy_(bag.weight)
    return ref


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_1d_2d_and_include_last_offset(engine_kind, mode):
    with EmbeddingBag(40, 7, mode=mode, backend="emulator", nr_dpus=3, seed=1) as bag:
        ref = torch_bag(bag)
        x = torch.tensor([3, 1, 39, 0, 0, 5])
        offsets = torch.tensor([0, 2, 2, 5])
        torch.testing.assert_close(bag(x, offsets), ref(x, offsets))
        x2 = torch.randint(0, 40, (6, 4))
        torch.testing.assert_close(bag(x2), ref(x2))
        assert bag(x2.numpy()).shape == (6, 7)
    with EmbeddingBag(40, 7, mode=mode, include_last_offset=True, backend="emulator", nr_dpus=2) as bag:
        ref = torch_bag(bag, include_last_offset=True)
        x, offsets = torch.tensor([3, 1, 39, 0]), torch.tensor([0, 2, 2, 4], dtype=torch.int32)
        torch.testing.assert_close(bag(x, offsets), ref(x, offsets))


@pytest.mark.parametrize("padding_idx", [0, 5, -1])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_padding_idx(engine_kind, padding_idx, mode):
    with EmbeddingBag(12, 4, mode=mode, padding_idx=padding_idx, backend="emulator", nr_dpus=2) as bag:
        ref = torch_bag(bag, padding_idx=padding_idx)
        p = padding_idx % 12
        assert torch.all(bag.weight[p] == 0)
        x = torch.tensor([p, 1, p, p, 3, 2, p])
        offsets = torch.tensor([0, 2, 4, 4])  # bags: [p,1] [p,p] [] [3,2,p]
        torch.testing.assert_close(bag(x, offsets), ref(x, offsets))
        x2 = torch.tensor([[p, p], [1, p]])
        torch.testing.assert_close(bag(x2), ref(x2))


def test_embedding_bag_per_sample_weights(engine_kind):
    with EmbeddingBag(25, 6, mode="sum", padding_idx=2, backend="emulator", nr_dpus=2) as bag:
        ref = torch_bag(bag, padding_idx=2)
        x, offsets = torch.tensor([1, 2, 3, 24, 2]), torch.tensor([0, 3])
        w = torch.tensor([0.5, 3.0, -1.25, 2.0, 7.0])
        torch.testing.assert_close(bag(x, offsets, w), ref(x, offsets, per_sample_weights=w))
        x2, w2 = torch.tensor([[1, 2], [4, 5]]), torch.tensor([[1.0, 2.0], [0.25, -1.0]])
        torch.testing.assert_close(bag(x2, per_sample_weights=w2), ref(x2, per_sample_weights=w2))


def test_embedding_bag_errors(reference_engine):
    with pytest.raises(NotImplementedError, match="supported modes: 'sum', 'mean'"):
        EmbeddingBag(10, 4, mode="max", backend="emulator")
    with pytest.raises(ValueError, match="not supported"):
        EmbeddingBag(10, 4, mode="median", backend="emulator")
    with pytest.raises(NotImplementedError, match="max_norm"):
        EmbeddingBag(10, 4, max_norm=1.0, backend="emulator")
    with pytest.raises(ValueError, match="padding_idx must be within"):
        EmbeddingBag(10, 4, padding_idx=10, backend="emulator")
    bag = EmbeddingBag(10, 4, backend="emulator", nr_dpus=1)
    with pytest.raises(InvalidInputError, match="offsets are required"):
        bag(torch.tensor([1, 2]))
    with pytest.raises(InvalidInputError, match="offsets must be None"):
        bag(torch.tensor([[1, 2]]), torch.tensor([0]))
    with pytest.raises(InvalidInputError, match="only supported with mode='sum'"):
        bag(torch.tensor([[1, 2]]), per_sample_weights=torch.ones(1, 2))
    with pytest.raises(IndexError, match=r"indices\[1\] = 10 is out of range \[0, 10\)"):
        bag(torch.tensor([1, 10]), torch.tensor([0]))
    with pytest.raises(InvalidInputError, match=r"offsets\[0\] must be 0"):
        bag(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(TypeError, match=r"1-D .* or 2-D"):
        bag(torch.zeros(1, 1, 1, dtype=torch.long))
    assert bag(torch.tensor([1, 2]), torch.tensor([0])).shape == (1, 4)


def test_embedding_bag_from_pretrained_and_int8(engine_kind):
    table = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    with EmbeddingBag.from_pretrained(table, mode="sum", backend="emulator", nr_dpus=2) as bag:
        torch.testing.assert_close(bag.weight, table)
        x = torch.tensor([[0, 29, 4]])
        torch.testing.assert_close(bag(x), table[[0, 29, 4]].sum(0, keepdim=True))
    with EmbeddingBag(30, 5, mode="sum", _weight=table, row_format="int8", backend="emulator", nr_dpus=2) as bag:
        assert (bag.weight - table).abs().max() <= table.abs().max() / 127 / 2 + 1e-6
        x = torch.tensor([[0, 29, 4]])
        torch.testing.assert_close(bag(x), bag.weight[[0, 29, 4]].sum(0, keepdim=True))
    with pytest.raises(NotImplementedError, match="inference only"):
        EmbeddingBag.from_pretrained(table, freeze=False)


def test_torchrec_like_configs_are_accepted(reference_engine):
    from types import SimpleNamespace

    configs = [
        SimpleNamespace(name="user", num_embeddings=12, embedding_dim=4, feature_names=["uid"]),
        SimpleNamespace(name="", num_embeddings=5, embedding_dim=2),
    ]
    tbe = TableBatchedEmbeddingBags(configs, backend="emulator", nr_dpus=2)
    assert [(t.name, t.num_embeddings, t.embedding_dim, t.feature_names) for t in tbe.tables] == [
        ("user", 12, 4, ("uid",)),
        ("t1", 5, 2, ()),
    ]
    with pytest.raises(TypeError, match="expected a TableSpec"):
        TableBatchedEmbeddingBags(["user"], backend="emulator")
