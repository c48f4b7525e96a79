"""Request files -> RequestSet -> batches, against per-sample references; bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import updlrm
from updlrm.partitioner.workloads import CRITEO_KAGGLE_CARDINALITIES, Trace, read_criteo_tsv, synthetic_trace
from updlrm.serve.requests import RequestError, RequestSet, load_requests, save_kjt_requests, write_synthetic_criteo
from updlrm.specs import TableSpec


@st.composite
def request_sets(draw):
    n = draw(st.integers(1, 8))
    f = draw(st.integers(1, 4))
    bags = [[draw(st.lists(st.integers(0, 99), max_size=4)) for _ in range(n)] for _ in range(f)]
    weighted = draw(st.booleans())
    return n, f, bags, weighted


@settings(max_examples=60, deadline=None)
@given(data=request_sets(), picks=st.lists(st.integers(0, 7), min_size=1, max_size=10))
def test_batches_gather_exactly_the_samples_asked_for(data, picks):
    n, f, bags, weighted = data
    ids = [p % n for p in picks]  # repeats and any order
    lengths = np.array([len(bags[k][s]) for k in range(f) for s in range(n)], dtype=np.int64)
    values = np.array([v for k in range(f) for s in range(n) for v in bags[k][s]], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    weights = (values * 0.5).astype(np.float32) if weighted else None
    dense = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    rs = RequestSet([f"f{k}" for k in range(f)], values, offsets, dense=dense, weights=weights, source="mem")
    d, kjt = rs.batch(ids)
    assert d.tolist() == dense[ids].tolist()
    assert kjt.keys() == [f"f{k}" for k in range(f)]
    per_key = kjt.to_dict()
    for k in range(f):
        jt = per_key[f"f{k}"]
        expect = [bags[k][s] for s in ids]
        assert jt.lengths().tolist() == [len(b) for b in expect]
        assert jt.values().tolist() == [v for bag in expect for v in bag]
        if weighted:
            assert jt.weights().tolist() == [v * 0.5 for bag in expect for v in bag]


def test_a_tbe_trace_becomes_samples(tmp_path):
    tables = [TableSpec("a", 50, 4), TableSpec("b", 9, 4)]
    tr = synthetic_trace(tables, batch_size=3, num_batches=4, pooling=2.5, seed=2)
    rs = load_requests(tr.save(tmp_path / "t.npz"))
    assert rs.num_samples == 12 and rs.keys == ["a", "b"] and rs.dense is None
    for sample in range(12):
        i, b = divmod(sample, 3)
        idx, off, _ = tr.batch(i)
        _, kjt = rs.batch([sample])
        for t, key in enumerate(rs.keys):
            bag = idx[off[t * 3 + b] : off[t * 3 + b + 1]]
            assert kjt[key].values().tolist() == bag.tolist()


def test_kjt_files_round_trip(tmp_path):
    kjt = updlrm.KeyedJaggedTensor.from_lengths_sync(
        ["x", "y"], torch.tensor([1, 2, 3, 4]), torch.tensor([2, 0, 1, 1]), weights=torch.tensor([1.0, 2.0, 3.0, 4.0])
    )
    f = save_kjt_requests(tmp_path / "r.pt", kjt, dense=torch.ones(2, 3), labels=torch.tensor([0, 1]))
    rs = load_requests(f)
    assert (rs.num_samples, rs.num_dense, rs.labels.tolist()) == (2, 3, [0, 1])
    _, back = rs.batch([0, 1])
    assert back.values().tolist() == [1, 2, 3, 4] and back.lengths().tolist() == [2, 0, 1, 1]
    assert back.weights().tolist() == [1.0, 2.0, 3.0, 4.0]


def test_criteo_files_read_dense_and_hashed_categoricals(tmp_path):
    f = write_synthetic_criteo(tmp_path / "c.tsv", 50, seed=1)
    gz = tmp_path / "c.tsv.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))
    rs = load_requests(gz, max_rows=1000, max_samples=40)
    labels, dense, cats = read_criteo_tsv(f, [min(c, 1000) for c in CRITEO_KAGGLE_CARDINALITIES])
    assert rs.num_samples == 40 and rs.num_dense == 13
    assert np.array_equal(rs.dense, dense[:40]) and np.array_equal(rs.labels, labels[:40])
    _, kjt = rs.batch(np.arange(40))
    assert kjt.values().tolist() == cats[:, :40].ravel().tolist()
    small = load_requests(f, table_rows={"C1": 7})
    assert small.max_index()["C1"] < 7
    assert np.all(dense >= 0)


def test_synthetic_criteo_is_deterministic(tmp_path):
    a = write_synthetic_criteo(tmp_path / "a.tsv", 30, seed=4).read_bytes()
    b = write_synthetic_criteo(tmp_path / "b.tsv", 30, seed=4).read_bytes()
    assert a == b and a != write_synthetic_criteo(tmp_path / "c.tsv", 30, seed=5).read_bytes()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("short.tsv", "1\t2\t3\n", "expected 40 tab-separated fields"),
        ("hex.tsv", "1" + "\t" * 14 + "\t".join(["zz"] * 26) + "\n", "hexadecimal"),
        ("dense.tsv", "1\tx" + "\t" * 13 + "\t".join(["1f"] * 26) + "\n", "dense features must be integers"),
        ("empty.tsv", "", "no samples"),
        ("bin.tsv", b"\xff\xfe\x00" * 10, "not a Criteo TSV"),
        ("t.npz", b"not a zip", "not an .npz archive"),
        ("r.pt", b"garbage", "not a torch file"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RequestError, match=message) as info:
        load_requests(path)
    assert "\n" not in str(info.value)


def test_inconsistent_kjt_files_are_refused(tmp_path):
    torch.save({"keys": ["a"], "values": torch.tensor([1, 2]), "lengths": torch.tensor([1])}, tmp_path / "r.pt")
    with pytest.raises(RequestError, match="add up"):
        load_requests(tmp_path / "r.pt")
    torch.save({"keys": ["a"], "values": torch.tensor([1])}, tmp_path / "s.pt")
    with pytest.raises(RequestError, match=r"expected torch\.save"):
        load_requests(tmp_path / "s.pt")
    torch.save(
        {"keys": ["a"], "values": torch.tensor([1]), "lengths": torch.tensor([1]), "dense": torch.ones(3, 2)},
        tmp_path / "d.pt",
    )
    with pytest.raises(RequestError, match="dense features of shape"):
        load_requests(tmp_path / "d.pt")
    with pytest.raises(FileNotFoundError):
        load_requests(tmp_path / "missing.tsv")


def test_trace_with_weights_keeps_them(tmp_path):
    tr = Trace(1, 2, np.array([1, 2, 3]), np.array([0, 2, 3]), per_sample_weights=np.array([0.5, 1.5, 2.0]))
    rs = load_requests(tr.save(tmp_path / "w.npz"))
    _, kjt = rs.batch([1, 0])
    assert kjt.values().tolist() == [3, 1, 2] and kjt.weights().tolist() == [2.0, 0.5, 1.5]
