"""Sparse inputs and pooled outputs in torchrec's shapes: ``KeyedJaggedTensor``, ``KeyedTensor``.

Same names, constructors and layouts as torchrec (``torchrec.sparse.jagged_tensor``), so
code written for torchrec runs unchanged and torchrec's own objects are accepted by the
modules here (duck typing: ``keys()``, ``values()``, ``lengths()``/``offsets()``,
``weights_or_none()``):

* :class:`KeyedJaggedTensor` - one jagged batch per key (feature). ``lengths`` are laid
  out **key-major**: key 0's ``B`` bag lengths, then key 1's, ... (``stride() == B``).
  ``values`` holds the indices of all bags in that order; ``weights`` (optional) one
  float per value. A *variable-batch* KJT (torchrec's VBE) has a stride per key plus
  ``inverse_indices = (keys, tensor (K, B))`` mapping every sample of the full batch to
  one of that key's bags: that is the deduplicated form (unique bags + inverse indices,
  RecD's IKJT).
* :class:`JaggedTensor` - one key's bags (``values``, ``lengths``, ``offsets``, ``weights``).
* :class:`KeyedTensor` - pooled embeddings ``(B, sum of dims)`` with the column range of
  every key.

Everything is validated at construction: a bad KJT raises
:class:`~updlrm.validation.InvalidInputError` with one line saying what to fix.

Example:
    >>> import torch
    >>> from updlrm.kjt import KeyedJaggedTensor
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(
    ...     keys=["user", "item"], values=torch.tensor([7, 1, 2, 3]), lengths=torch.tensor([1, 0, 2, 1]))
    >>> kjt.stride(), kjt.length_per_key()
    (2, [1, 3])
    >>> kjt["item"].to_dense()
    [tensor([1, 2]), tensor([3])]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from updlrm.validation import InputTypeError, InvalidInputError

__all__ = ["JaggedTensor", "KeyedJaggedTensor", "KeyedTensor"]


def _as_tensor(x: Any, what: str, *, kind: str) -> torch.Tensor | None:
    """A 1-D CPU tensor of integer (kind 'i') or float (kind 'f') dtype, or None."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, (list, tuple, range)):
        x = torch.tensor(list(x), dtype=torch.int64 if kind == "i" else torch.float32)
    elif not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{what} must be a torch tensor, numpy array or list, got {type(x).__name__}")
    if x.dim() != 1:
        raise InputTypeError(f"{what} must be one-dimensional, got shape {tuple(x.shape)}")
    if kind == "i" and (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool):
        raise InputTypeError(f"{what} must have an integer dtype (int32/int64), got {x.dtype}")
    if kind == "f" and not x.dtype.is_floating_point:
        raise InputTypeError(f"{what} must have a floating-point dtype (float32), got {x.dtype}")
    return x


def _offsets_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths.to(torch.int64), 0, out=out[1:])
    return out


def _check_lengths(lengths: torch.Tensor, n: int, what: str = "lengths") -> None:
    if lengths.numel() and int(lengths.min()) < 0:
        k = int(torch.argmin(lengths))
        raise InvalidInputError(f"{what}[{k}] = {int(lengths[k])} is negative; a bag has 0 or more values")
    total = int(lengths.sum()) if lengths.numel() else 0
    if total != n:
        raise InvalidInputError(
            f"{what} sum to {total}, but there are {n} values; every value belongs to exactly one bag"
        )


def _check_offsets(offsets: torch.Tensor, n: int) -> None:
    if offsets.numel() == 0:
        raise InvalidInputError("offsets is empty; it needs one more entry than there are bags (at least [0])")
    if int(offsets[0]) != 0:
        raise InvalidInputError(f"offsets[0] must be 0, got {int(offsets[0])}")
    steps = torch.diff(offsets)
    if steps.numel() and int(steps.min()) < 0:
        k = int(torch.argmax((steps < 0).to(torch.int8)))
        raise InvalidInputError(
            f"offsets must be non-decreasing, but offsets[{k + 1}] = {int(offsets[k + 1])} < offsets[{k}] = {int(offsets[k])}"
        )
    if int(offsets[-1]) != n:
        raise InvalidInputError(f"offsets[-1] = {int(offsets[-1])} must equal the number of values ({n})")


class _Jagged:
    """The accessors JaggedTensor and KeyedJaggedTensor share: values, weights, lengths and offsets.

    Subclasses set ``_values``, ``_weights`` (or None) and at least one of ``_lengths`` /
    ``_offsets``; the other is computed on first use.
    """

    _values: torch.Tensor
    _weights: torch.Tensor | None
    _lengths: torch.Tensor | None
    _offsets: torch.Tensor | None

    def _set_jagged(self, values: Any, weights: Any, lengths: Any, offsets: Any) -> int:
        """Check and store values, weights and lengths or offsets; return the number of bags."""
        values_t = _as_tensor(values, "values", kind="i")
        if values_t is None:
            raise InputTypeError(f"a {type(self).__name__} needs values (a tensor of indices), got None")
        self._values = values_t
        self._weights = _as_tensor(weights, "weights", kind="f")
        n = self._values.numel()
        if lengths is None and offsets is None:
            raise InvalidInputError(f"a {type(self).__name__} needs lengths or offsets")
        self._lengths = _as_tensor(lengths, "lengths", kind="i")
        self._offsets = offsets_t = _as_tensor(offsets, "offsets", kind="i")
        if self._lengths is not None:
            _check_lengths(self._lengths, n)
            nr_bags = self._lengths.numel()
        else:
            assert offsets_t is not None  # lengths or offsets is given (checked above)
            _check_offsets(offsets_t, n)
            nr_bags = offsets_t.numel() - 1
        if self._weights is not None and self._weights.numel() != n:
            raise InvalidInputError(
                f"weights has {self._weights.numel()} entries, values {n}; give one weight per value"
            )
        return nr_bags

    def values(self) -> torch.Tensor:
        return self._values

    def weights(self) -> torch.Tensor:
        if self._weights is None:
            raise InvalidInputError(f"this {type(self).__name__} has no weights (use weights_or_none())")
        return self._weights

    def weights_or_none(self) -> torch.Tensor | None:
        return self._weights

    def lengths(self) -> torch.Tensor:
        if self._lengths is None:
            assert self._offsets is not None  # one of the two is always set
            self._lengths = torch.diff(self._offsets)
        return self._lengths

    def lengths_or_none(self) -> torch.Tensor | None:
        return self._lengths

    def offsets(self) -> torch.Tensor:
        if self._offsets is None:
            assert self._lengths is not None  # one of the two is always set
            self._offsets = _offsets_from_lengths(self._lengths)
        return self._offsets

    def offsets_or_none(self) -> torch.Tensor | None:
        return self._offsets


class JaggedTensor(_Jagged):
    """One key's bags: ``values`` with ``lengths`` (or ``offsets``) and optional ``weights``.

    >>> jt = JaggedTensor(torch.tensor([4, 5, 6]), lengths=torch.tensor([2, 0, 1]))
    >>> jt.offsets().tolist(), jt.to_dense()
    ([0, 2, 2, 3], [tensor([4, 5]), tensor([], dtype=torch.int64), tensor([6])])
    """

    def __init__(self, values, weights=None, lengths=None, offsets=None) -> None:
        self._set_jagged(values, weights, lengths, offsets)

    def to_dense(self) -> list[torch.Tensor]:
        """Every bag's values as its own tensor."""
        return list(torch.split(self._values, self.lengths().tolist()))

    def __repr__(self) -> str:
        w = "" if self._weights is None else ", weighted"
        return f"JaggedTensor({self.lengths().numel()} bags, {self._values.numel()} values{w})"


# Arguments torchrec's KJT takes to cache derived values; accepted and recomputed here.
_TORCHREC_CACHES = {
    "length_per_key",
    "offset_per_key",
    "index_per_key",
    "jt_dict",
    "stride_per_key",
    "lengths_offset_per_key",
    "stride_per_rank",
}


class KeyedJaggedTensor(_Jagged):
    """Jagged bags of several keys, torchrec's ``KeyedJaggedTensor`` (layout in the module doc).

    Args:
        keys: feature names, unique.
        values: all indices, key-major then sample-major.
        weights: one float per value, or None.
        lengths / offsets: bag lengths (``K*B`` of them), or offsets (``K*B + 1``); one of
            the two is required, the other is derived.
        stride: the batch size B (default: ``len(lengths) // K``).
        stride_per_key_per_rank: variable batch per key (torchrec's VBE):
            ``[[bags of key 0], [bags of key 1], ...]`` (ranks summed); needs
            ``inverse_indices``.
        inverse_indices: ``(keys, tensor (K, B))``: sample ``b`` of key ``k`` is bag
            ``inverse_indices[1][k, b]`` of that key.

    >>> kjt = KeyedJaggedTensor(["a", "b"], torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 0, 0, 1]))
    >>> kjt
    KeyedJaggedTensor(keys=['a', 'b'], stride=2, values=3)
    >>> {k: jt.lengths().tolist() for k, jt in kjt.to_dict().items()}
    {'a': [2, 0], 'b': [0, 1]}
    >>> KeyedJaggedTensor(["a"], torch.tensor([1, 2]), lengths=torch.tensor([1]))
    Traceback (most recent call last):
    ...
    updlrm.validation.InvalidInputError: lengths sum to 1, but there are 2 values; every value belongs to exactly one bag
    """

    def __init__(
        self,
        keys: Sequence[str],
        values,
        weights=None,
        lengths=None,
        offsets=None,
        stride: int | None = None,
        stride_per_key_per_rank: Sequence[Sequence[int]] | None = None,
        inverse_indices: tuple[Sequence[str], Any] | None = None,
        **_torchrec_caches: Any,
    ) -> None:
        unknown = sorted(set(_torchrec_caches) - _TORCHREC_CACHES)
        if unknown:
            raise TypeError(f"KeyedJaggedTensor got unexpected keyword arguments {unknown}")
        keys = list(keys)
        if not all(isinstance(k, str) for k in keys):
            raise InputTypeError(f"keys must be strings, got {keys!r}")
        if len(set(keys)) != len(keys):
            raise InvalidInputError(f"keys must be unique; repeated: {sorted({k for k in keys if keys.count(k) > 1})}")
        self._keys = keys
        nr_bags = self._set_jagged(values, weights, lengths, offsets)
        K = len(keys)
        if stride_per_key_per_rank is not None:
            per_key = [int(sum(s)) for s in stride_per_key_per_rank]
            if len(per_key) != K:
                raise InvalidInputError(f"stride_per_key_per_rank has {len(per_key)} entries for {K} keys")
            if sum(per_key) != nr_bags:
                raise InvalidInputError(
                    f"stride_per_key_per_rank counts {sum(per_key)} bags, but lengths/offsets describe {nr_bags}"
                )
            if inverse_indices is None:
                raise InvalidInputError(
                    "a variable-batch KeyedJaggedTensor (stride_per_key_per_rank) needs inverse_indices=(keys, tensor (K, B))"
                )
            self._stride_per_key: list[int] | None = per_key
        else:
            if K == 0:
                if nr_bags:
                    raise InvalidInputError(f"no keys, but {nr_bags} bags")
            elif nr_bags % K:
                raise InvalidInputError(
                    f"{nr_bags} bags for {K} keys; lengths must hold B bags per key (key-major), a multiple of {K}"
                )
            derived = nr_bags // K if K else (stride or 0)
            if stride is not None and K and int(stride) != derived:
                raise InvalidInputError(f"stride={stride}, but {nr_bags} bags for {K} keys give a batch of {derived}")
            self._stride_per_key = None
            self._stride = derived
        self._inverse = None
        if inverse_indices is not None:
            inv_keys, inv = inverse_indices
            inv = torch.as_tensor(inv)
            if list(inv_keys) != keys:
                raise InvalidInputError(f"inverse_indices name keys {list(inv_keys)}, the KeyedJaggedTensor has {keys}")
            if inv.dim() != 2 or inv.shape[0] != K:
                raise InvalidInputError(f"inverse_indices must be a ({K}, B) tensor, got shape {tuple(inv.shape)}")
            if inv.dtype.is_floating_point:
                raise InputTypeError(f"inverse_indices must be integers, got {inv.dtype}")
            counts = self._stride_per_key if self._stride_per_key is not None else [self._stride] * K
            for k, key in enumerate(keys):
                row = inv[k]
                if row.numel() and (int(row.min()) < 0 or int(row.max()) >= counts[k]):
                    bad = int(row.min()) if int(row.min()) < 0 else int(row.max())
                    raise InvalidInputError(
                        f"inverse_indices of key {key!r} hold {bad}, outside the key's {counts[k]} bags"
                    )
            self._inverse = (list(inv_keys), inv)
            self._stride = int(inv.shape[1])

    # -- torchrec's constructors ---------------------------------------------------------

    @staticmethod
    def from_lengths_sync(keys, values, lengths, weights=None, stride=None, **kwargs) -> KeyedJaggedTensor:
        """Build from bag lengths (key-major), as torchrec.

        >>> KeyedJaggedTensor.from_lengths_sync(["a"], torch.tensor([5]), torch.tensor([0, 1])).offsets().tolist()
        [0, 0, 1]
        """
        return KeyedJaggedTensor(keys, values, weights=weights, lengths=lengths, stride=stride, **kwargs)

    @staticmethod
    def from_offsets_sync(keys, values, offsets, weights=None, stride=None, **kwargs) -> KeyedJaggedTensor:
        """Build from offsets (``K*B + 1`` entries), as torchrec.

        >>> KeyedJaggedTensor.from_offsets_sync(["a"], torch.tensor([5, 6]), torch.tensor([0, 2])).lengths().tolist()
        [2]
        """
        return KeyedJaggedTensor(keys, values, weights=weights, offsets=offsets, stride=stride, **kwargs)

    @staticmethod
    def from_jt_dict(jt_dict: dict[str, JaggedTensor]) -> KeyedJaggedTensor:
        """Concatenate one ``JaggedTensor`` per key (all with the same number of bags).

        >>> kjt = KeyedJaggedTensor.from_jt_dict({"a": JaggedTensor(torch.tensor([1]), lengths=torch.tensor([1, 0]))})
        >>> kjt.lengths().tolist()
        [1, 0]
        """
        keys = list(jt_dict)
        jts = [jt_dict[k] for k in keys]
        weighted = {jt.weights_or_none() is not None for jt in jts}
        if len(weighted) > 1:
            raise InvalidInputError("either every JaggedTensor has weights or none has")
        values = torch.cat([jt.values().to(torch.int64) for jt in jts]) if jts else torch.empty(0, dtype=torch.int64)
        lengths = torch.cat([jt.lengths().to(torch.int64) for jt in jts]) if jts else torch.empty(0, dtype=torch.int64)
        weights = torch.cat([jt.weights() for jt in jts]) if weighted == {True} else None
        return KeyedJaggedTensor(keys, values, weights=weights, lengths=lengths)

    @staticmethod
    def empty(keys: Sequence[str] = (), stride: int = 0) -> KeyedJaggedTensor:
        """No values: every bag empty.

        >>> KeyedJaggedTensor.empty(["a"], 3).lengths().tolist()
        [0, 0, 0]
        """
        return KeyedJaggedTensor(
            list(keys),
            torch.empty(0, dtype=torch.int64),
            lengths=torch.zeros(len(keys) * stride, dtype=torch.int64),
            stride=stride,
        )

    # -- accessors -------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return self._keys

    def stride(self) -> int:
        """The batch size B (samples per key of the full batch)."""
        return self._stride

    def variable_stride_per_key(self) -> bool:
        return self._stride_per_key is not None

    def stride_per_key(self) -> list[int]:
        """Bags per key: B for every key, or the per-key counts of a variable-batch KJT."""
        return list(self._stride_per_key) if self._stride_per_key is not None else [self._stride] * len(self._keys)

    def stride_per_key_per_rank(self) -> list[list[int]]:
        return [[s] for s in self.stride_per_key()]

    def inverse_indices(self) -> tuple[list[str], torch.Tensor]:
        if self._inverse is None:
            raise InvalidInputError("this KeyedJaggedTensor has no inverse_indices (use inverse_indices_or_none())")
        return self._inverse

    def inverse_indices_or_none(self) -> tuple[list[str], torch.Tensor] | None:
        return self._inverse

    def length_per_key(self) -> list[int]:
        """Values per key."""
        bounds = np.concatenate(([0], np.cumsum(self.stride_per_key())))
        off = self.offsets()
        return [int(off[bounds[k + 1]]) - int(off[bounds[k]]) for k in range(len(self._keys))]

    def offset_per_key(self) -> list[int]:
        return [0] + np.cumsum(self.length_per_key()).tolist()

    def to_dict(self) -> dict[str, JaggedTensor]:
        """One :class:`JaggedTensor` per key (a variable-batch KJT gives each key's own bags)."""
        bounds = np.concatenate(([0], np.cumsum(self.stride_per_key()))).tolist()
        off = self.offsets().to(torch.int64)
        out = {}
        for k, key in enumerate(self._keys):
            lo, hi = int(off[bounds[k]]), int(off[bounds[k + 1]])
            w = None if self._weights is None else self._weights[lo:hi]
            out[key] = JaggedTensor(
                self._values[lo:hi], weights=w, lengths=torch.diff(off[bounds[k] : bounds[k + 1] + 1])
            )
        return out

    def __getitem__(self, key: str) -> JaggedTensor:
        if key not in self._keys:
            raise KeyError(f"no key {key!r}; keys: {self._keys}")
        return self.to_dict()[key]

    def to(self, device: Any, non_blocking: bool = False) -> KeyedJaggedTensor:
        """Inputs are read on the host; ``to("cpu")`` returns self (torchrec's call shape)."""
        if torch.device(device).type != "cpu":
            raise InvalidInputError(
                f"updlrm reads its inputs on the host; keep the KeyedJaggedTensor on 'cpu', not {device}"
            )
        return self

    def __repr__(self) -> str:
        w = ", weighted" if self._weights is not None else ""
        v = ", variable stride" if self._stride_per_key is not None else ""
        return f"KeyedJaggedTensor(keys={self._keys}, stride={self._stride}, values={self._values.numel()}{w}{v})"


class KeyedTensor:
    """Pooled embeddings of several keys side by side: ``values()`` is ``(B, sum of dims)``.

    >>> kt = KeyedTensor(["a", "b"], [2, 1], torch.arange(6.0).reshape(2, 3))
    >>> kt["b"].tolist(), kt.offset_per_key()
    ([[2.0], [5.0]], [0, 2, 3])
    """

    def __init__(
        self, keys: Sequence[str], length_per_key: Sequence[int], values: torch.Tensor, key_dim: int = 1, **_caches: Any
    ) -> None:
        keys, length_per_key = list(keys), [int(n) for n in length_per_key]
        if len(keys) != len(length_per_key):
            raise InvalidInputError(f"{len(keys)} keys but {len(length_per_key)} lengths")
        if key_dim != 1 or values.dim() != 2:
            raise InvalidInputError(
                f"a KeyedTensor holds (B, sum of dims) values with key_dim=1, got shape {tuple(values.shape)}, key_dim={key_dim}"
            )
        if values.shape[1] != sum(length_per_key):
            raise InvalidInputError(
                f"values have {values.shape[1]} columns, the keys' lengths sum to {sum(length_per_key)}"
            )
        self._keys, self._length_per_key, self._values = keys, length_per_key, values

    @staticmethod
    def from_tensor_list(keys: Sequence[str], tensors: Iterable[torch.Tensor], key_dim: int = 1) -> KeyedTensor:
        """Side by side (B, dim_k) tensors, one per key.

        >>> KeyedTensor.from_tensor_list(["a"], [torch.ones(2, 3)]).values().shape
        torch.Size([2, 3])
        """
        tensors = list(tensors)
        return KeyedTensor(keys, [t.shape[1] for t in tensors], torch.cat(tensors, dim=1), key_dim)

    def keys(self) -> list[str]:
        return self._keys

    def values(self) -> torch.Tensor:
        return self._values

    def key_dim(self) -> int:
        return 1

    def length_per_key(self) -> list[int]:
        return list(self._length_per_key)

    def offset_per_key(self) -> list[int]:
        return [0] + np.cumsum(self._length_per_key).tolist()

    def to_dict(self) -> dict[str, torch.Tensor]:
        off = self.offset_per_key()
        return {k: self._values[:, off[i] : off[i + 1]] for i, k in enumerate(self._keys)}

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            i = self._keys.index(key)
        except ValueError:
            raise KeyError(f"no key {key!r}; keys: {self._keys}") from None
        off = self.offset_per_key()
        return self._values[:, off[i] : off[i + 1]]

    def __repr__(self) -> str:
        return (
            f"KeyedTensor(keys={self._keys}, length_per_key={self._length_per_key}, values={tuple(self._values.shape)})"
        )
