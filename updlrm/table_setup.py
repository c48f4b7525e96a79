"""Turning a TBE module's constructor arguments into tables, weights and a pooling mode.

``TableBatchedEmbeddingBags`` (updlrm/tbe.py) and the collections call these: table
specs from FBGEMM/torchrec-style arguments, torchrec's default weight init, the DPU
count when no plan is given, and answering torch inputs with torch outputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from updlrm.specs import DPUS_PER_RANK, PoolingMode, TableSpec
from updlrm.validation import _pooling_mode

# Default DPU count when no plan is given: one full rank on the emulator (64 DPUs per rank,
# UPMEM SDK documentation), a few DPUs on the SDK's functional simulator (it simulates
# every DPU instruction, so each DPU costs real time), every DPU of the machine on hardware.
DEFAULT_EMULATOR_DPUS = DPUS_PER_RANK
DEFAULT_SIMULATOR_DPUS = 4


# --------------------------------------------------------------------------------------
# weights


def _init_table(spec: TableSpec, seed: int, t: int, lo: float | None, hi: float | None) -> np.ndarray:
    # torchrec's EmbeddingBagConfig default init: uniform in [-sqrt(1/N), sqrt(1/N)]
    # (torchrec/modules/embedding_configs.py, get_weight_init_min/max).
    bound = math.sqrt(1.0 / spec.num_embeddings)
    lo = -bound if lo is None else lo
    hi = bound if hi is None else hi
    rng = np.random.default_rng([seed, t])
    return rng.uniform(lo, hi, size=(spec.num_embeddings, spec.embedding_dim)).astype(np.float32)


def _as_table_spec(obj: Any, i: int) -> TableSpec:
    if isinstance(obj, TableSpec):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) >= 2 and all(isinstance(v, (int, np.integer)) for v in obj[:2]):
        # FBGEMM's embedding_specs start with (num_embeddings, embedding_dim, ...).
        return TableSpec(f"t{i}", int(obj[0]), int(obj[1]))
    if hasattr(obj, "num_embeddings") and hasattr(obj, "embedding_dim"):
        # torchrec EmbeddingBagConfig-like objects (row format / data_type read too; pooling: _tables_pooling).
        from updlrm.configs import EmbeddingBagConfig

        spec = EmbeddingBagConfig.coerce(obj, i).table_spec()
        return dataclasses.replace(spec, feature_names=tuple(getattr(obj, "feature_names", ()) or ()))
    raise TypeError(
        f"table {i}: expected a TableSpec, (num_embeddings, embedding_dim) or an EmbeddingBagConfig-like object, got {obj!r}"
    )


def _tables_pooling(tables: Sequence[Any], pooling_mode: PoolingMode | str | None) -> PoolingMode:
    """The module's pooling: ``pooling_mode``, else the configs' own; configs never silently ignored."""
    from updlrm.configs import PoolingType, _pooling_type

    asked = {}
    for i, t in enumerate(tables):
        if not isinstance(t, TableSpec) and getattr(t, "pooling", None) is not None:
            p = _pooling_type(t.pooling, f"table {getattr(t, 'name', i)!r}")
            asked[getattr(t, "name", None) or f"t{i}"] = PoolingMode.MEAN if p == PoolingType.MEAN else PoolingMode.SUM
    modes = set(asked.values())
    if len(modes) > 1:
        raise ValueError(
            f"the tables mix SUM and MEAN pooling ({ {k: v.name for k, v in asked.items()} }); a TableBatchedEmbeddingBags "
            "pools every table one way (as FBGEMM's); use updlrm.EmbeddingBagCollection, which mixes them"
        )
    if pooling_mode is None:
        return modes.pop() if modes else PoolingMode.SUM
    mode = _pooling_mode(pooling_mode)
    if modes and modes != {mode}:
        name = next(iter(asked))
        raise ValueError(
            f"pooling_mode={mode.name} contradicts table {name!r}'s pooling={asked[name].name}; "
            "drop pooling_mode to use the tables' pooling, or change the configs"
        )
    return mode


def _default_nr_dpus(backend: str) -> int:
    if backend == "emulator":
        return DEFAULT_EMULATOR_DPUS
    if backend == "simulator":
        return DEFAULT_SIMULATOR_DPUS
    from updlrm.backends import detect_sdk

    return max(1, len(detect_sdk().ranks)) * DPUS_PER_RANK


class _OutputKind:
    """Remembers whether the caller passed torch or numpy, to answer in kind."""

    def __init__(self, *inputs: Any) -> None:
        self.device = None
        for x in inputs:
            if isinstance(x, torch.Tensor):
                self.device = x.device
                break

    def wrap(self, out: np.ndarray):
        if self.device is None:
            return out
        tensor = torch.from_numpy(out)
        return tensor if self.device.type == "cpu" else tensor.to(self.device)
