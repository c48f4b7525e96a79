"""The collection in pure torch (torchrec's layout), and the table-list checks both collections share.

``TorchEmbeddingBagCollection`` is the reference ``updlrm.EmbeddingBagCollection`` is
tested against and what its ``to_torch`` returns; ``updlrm.collection`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from updlrm.configs import EmbeddingBagConfig, PoolingType
from updlrm.kjt import KeyedJaggedTensor, KeyedTensor  # noqa: F401 (KeyedJaggedTensor: the examples use it)
from updlrm.sparse_batch import read_kjt_key
from updlrm.table_setup import _init_table
from updlrm.validation import InvalidInputError

__all__ = ["TorchEmbeddingBagCollection"]


def _configs(tables: Sequence[Any]) -> list[EmbeddingBagConfig]:
    if tables is None or isinstance(tables, (str, bytes)) or len(tables) == 0:
        raise ValueError("an EmbeddingBagCollection needs a non-empty list of tables (EmbeddingBagConfig)")
    configs = [EmbeddingBagConfig.coerce(t, i) for i, t in enumerate(tables)]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"table names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    seen: dict[str, str] = {}
    for c in configs:
        for f in c.feature_names:
            if f in seen:
                raise ValueError(
                    f"feature {f!r} is listed by tables {seen[f]!r} and {c.name!r}; a feature looks up one table"
                )
            seen[f] = c.name
    return configs


class TorchEmbeddingBagCollection(torch.nn.Module):
    """The collection in pure torch: one ``torch.nn.EmbeddingBag`` per table, torchrec's layout.

    Its ``state_dict`` keys are torchrec's (``embedding_bags.<table>.weight``); it is the
    reference the DPU collection is tested against and what ``to_torch`` returns.

    >>> ref = TorchEmbeddingBagCollection([EmbeddingBagConfig("t", 4, 2, ["a"], pooling="MEAN")],
    ...                                   weights={"t": torch.arange(8.0).reshape(4, 2)})
    >>> ref(KeyedJaggedTensor(["a"], torch.tensor([1, 3]), lengths=torch.tensor([2, 0]))).values().tolist()
    [[4.0, 5.0], [0.0, 0.0]]
    """

    def __init__(
        self,
        tables: Sequence[Any],
        *,
        is_weighted: bool = False,
        weights: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._configs = _configs(tables)
        self._is_weighted = bool(is_weighted)
        self.embedding_bags = torch.nn.ModuleDict()
        for t, c in enumerate(self._configs):
            if weights is not None:
                w = torch.as_tensor(weights[c.name]).detach().to(torch.float32)
            else:
                w = torch.from_numpy(_init_table(c.table_spec(), seed, t, c.weight_init_min, c.weight_init_max))
            self.embedding_bags[c.name] = torch.nn.EmbeddingBag.from_pretrained(
                w, freeze=True, mode=PoolingType(c.pooling).value.lower(), include_last_offset=True
            )

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        return list(self._configs)

    def is_weighted(self) -> bool:
        return self._is_weighted

    def forward(self, features: Any) -> KeyedTensor:
        jts = {k: (read_kjt_key(features, k)) for k in features.keys()}  # noqa: SIM118 (a KJT, not a dict)
        tensors, keys = [], []
        for c in self._configs:
            bag = self.embedding_bags[c.name]
            for f in c.feature_names:
                if f not in jts:
                    raise InvalidInputError(f"the KeyedJaggedTensor has no key {f!r}")
                values, offsets, weights, inverse = jts[f]
                pooled = bag(values, offsets, per_sample_weights=weights if self._is_weighted else None)
                tensors.append(pooled if inverse is None else pooled[inverse])
                keys.append(f)
        return KeyedTensor.from_tensor_list(keys, tensors)
