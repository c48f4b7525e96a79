"""KeyedJaggedTensor / JaggedTensor / KeyedTensor: torchrec's constructors, layouts and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from updlrm import InvalidInputError, JaggedTensor, KeyedJaggedTensor, KeyedTensor
from updlrm.tbe import InputTypeError


def test_key_major_layout_and_to_dict():
    # keys a, b; B = 3: lengths are a's three bags, then b's three.
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["a", "b"],
        torch.tensor([1, 2, 3, 4, 5, 6]),
        torch.tensor([1, 0, 2, 1, 1, 1]),
        weights=torch.arange(6, dtype=torch.float32),
    )
    assert kjt.stride() == 3 and kjt.keys() == ["a", "b"]
    assert kjt.length_per_key() == [3, 3] and kjt.offset_per_key() == [0, 3, 6]
    assert kjt.offsets().tolist() == [0, 1, 1, 3, 4, 5, 6]
    d = kjt.to_dict()
    assert [t.tolist() for t in d["a"].to_dense()] == [[1], [], [2, 3]]
    assert d["b"].values().tolist() == [4, 5, 6] and d["b"].weights().tolist() == [3.0, 4.0, 5.0]
    assert kjt["a"].lengths().tolist() == [1, 0, 2]
    assert not kjt.variable_stride_per_key() and kjt.stride_per_key() == [3, 3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=24), st.integers(1, 4), st.booleans())
def test_lengths_and_offsets_constructors_agree(lengths, nkeys, weighted):
    lengths = lengths[: len(lengths) // nkeys * nkeys]
    n = sum(lengths)
    values = torch.arange(n, dtype=torch.int64) * 7
    weights = torch.rand(n) if weighted else None
    keys = [f"k{i}" for i in range(nkeys)]
    a = KeyedJaggedTensor.from_lengths_sync(keys, values, torch.tensor(lengths, dtype=torch.int32), weights=weights)
    offsets = torch.tensor(np.concatenate(([0], np.cumsum(lengths))).astype(np.int64))
    b = KeyedJaggedTensor.from_offsets_sync(keys, values, offsets, weights=weights)
    assert a.stride() == b.stride() == len(lengths) // nkeys
    assert a.lengths().long().tolist() == b.lengths().tolist() == lengths
    assert a.offsets().tolist() == b.offsets().tolist()
    assert a.length_per_key() == b.length_per_key()
    for k in keys:
        assert torch.equal(a[k].values(), b[k].values())
        assert (a[k].weights_or_none() is None) == (not weighted)
    # to_dict -> from_jt_dict round trip
    c = KeyedJaggedTensor.from_jt_dict(a.to_dict())
    assert c.keys() == keys and c.lengths().tolist() == lengths and torch.equal(c.values(), values)


def test_variable_batch_kjt_with_inverse_indices():
    # user: 1 unique bag for 3 samples; item: 3 bags.
    kjt = KeyedJaggedTensor(
        ["user", "item"],
        torch.tensor([9, 9, 1, 2, 3]),
        lengths=torch.tensor([2, 1, 1, 1]),
        stride_per_key_per_rank=[[1], [3]],
        inverse_indices=(["user", "item"], torch.tensor([[0, 0, 0], [0, 1, 2]])),
    )
    assert kjt.variable_stride_per_key() and kjt.stride() == 3 and kjt.stride_per_key() == [1, 3]
    assert kjt["user"].lengths().tolist() == [2] and kjt["item"].values().tolist() == [1, 2, 3]
    assert kjt.length_per_key() == [2, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(keys=["a"], values=torch.tensor([1, 2]), lengths=torch.tensor([1])),
            "lengths sum to 1, but there are 2 values",
        ),
        (dict(keys=["a"], values=torch.tensor([1]), lengths=torch.tensor([2, -1])), r"lengths\[1\] = -1 is negative"),
        (dict(keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 1, 1])), "3 bags for 2 keys"),
        (dict(keys=["a", "a"], values=torch.tensor([1]), lengths=torch.tensor([1, 0])), "keys must be unique"),
        (dict(keys=["a"], values=torch.tensor([1, 2]), offsets=torch.tensor([0, 2, 1])), "non-decreasing"),
        (dict(keys=["a"], values=torch.tensor([1, 2]), offsets=torch.tensor([1, 2])), r"offsets\[0\] must be 0"),
        (dict(keys=["a"], values=torch.tensor([1, 2]), offsets=torch.tensor([0, 1])), r"offsets\[-1\] = 1 must equal"),
        (
            dict(keys=["a"], values=torch.tensor([1]), lengths=torch.tensor([1]), weights=torch.tensor([1.0, 2.0])),
            "weights has 2 entries",
        ),
        (dict(keys=["a"], values=torch.tensor([1]), lengths=None), "needs lengths or offsets"),
        (dict(keys=["a"], values=torch.tensor([1]), lengths=torch.tensor([1]), stride=3), "stride=3"),
        (
            dict(keys=["a"], values=torch.tensor([1]), lengths=torch.tensor([1]), stride_per_key_per_rank=[[1]]),
            "needs inverse_indices",
        ),
        (
            dict(
                keys=["a"],
                values=torch.tensor([1]),
                lengths=torch.tensor([1]),
                stride_per_key_per_rank=[[1]],
                inverse_indices=(["a"], torch.tensor([[0, 1]])),
            ),
            "outside the key's 1 bags",
        ),
    ],
)
def test_bad_kjt_is_one_clear_line(kwargs, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        KeyedJaggedTensor(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_dtypes():
    with pytest.raises(InputTypeError, match="integer dtype"):
        KeyedJaggedTensor(["a"], torch.tensor([1.0]), lengths=torch.tensor([1]))
    with pytest.raises(InputTypeError, match="floating-point"):
        KeyedJaggedTensor(["a"], torch.tensor([1]), lengths=torch.tensor([1]), weights=torch.tensor([1]))
    with pytest.raises(InputTypeError, match="one-dimensional"):
        KeyedJaggedTensor(["a"], torch.tensor([[1]]), lengths=torch.tensor([1]))


def test_numpy_and_list_inputs():
    kjt = KeyedJaggedTensor(["a"], np.array([3, 4], np.int32), lengths=[1, 1])
    assert kjt.values().dtype == torch.int32 and kjt.lengths().tolist() == [1, 1]


def test_missing_weights_and_keys_say_so():
    kjt = KeyedJaggedTensor(["a"], torch.tensor([1]), lengths=torch.tensor([1]))
    assert kjt.weights_or_none() is None
    with pytest.raises(InvalidInputError, match="no weights"):
        kjt.weights()
    with pytest.raises(KeyError, match="no key 'z'"):
        kjt["z"]
    assert "KeyedJaggedTensor(keys=['a'], stride=1" in repr(kjt)


def test_keyed_tensor():
    values = torch.arange(10.0).reshape(2, 5)
    kt = KeyedTensor(["x", "y"], [2, 3], values)
    assert kt.keys() == ["x", "y"] and kt.length_per_key() == [2, 3] and kt.offset_per_key() == [0, 2, 5]
    assert torch.equal(kt["y"], values[:, 2:]) and torch.equal(kt.to_dict()["x"], values[:, :2])
    assert torch.equal(KeyedTensor.from_tensor_list(["x", "y"], [values[:, :2], values[:, 2:]]).values(), values)
    with pytest.raises(InvalidInputError, match="columns"):
        KeyedTensor(["x"], [4], values)
    with pytest.raises(KeyError, match="no key"):
        kt["z"]


def test_jagged_tensor():
    jt = JaggedTensor(torch.tensor([1, 2, 3]), offsets=torch.tensor([0, 3, 3]))
    assert jt.lengths().tolist() == [3, 0]
    with pytest.raises(InvalidInputError, match="lengths or offsets"):
        JaggedTensor(torch.tensor([1]))


def test_torchrec_cache_arguments_accepted_typos_refused():
    kjt = KeyedJaggedTensor(
        ["a"], torch.tensor([1]), lengths=torch.tensor([1]), length_per_key=[1], offset_per_key=[0, 1]
    )
    assert kjt.length_per_key() == [1]
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['weight'\]"):
        KeyedJaggedTensor(["a"], torch.tensor([1]), lengths=torch.tensor([1]), weight=torch.tensor([1.0]))
