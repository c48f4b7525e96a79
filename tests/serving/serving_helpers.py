"""Helpers of the serving tests: an independent torch reference and random KJTs."""

from __future__ import annotations

import numpy as np
import torch

import updlrm


def reference_pool(ebc: updlrm.EmbeddingBagCollection, kjt: updlrm.KeyedJaggedTensor) -> torch.Tensor:
    """The collection's output computed feature by feature with torch.nn.EmbeddingBag semantics.

    Independent of the collection's code paths: it reads the dequantised tables and the
    KJT's per-key JaggedTensors, calls ``torch.nn.functional.embedding_bag`` per feature
    (mode from the table's pooling), and expands variable-batch keys by their inverse
    indices.
    """
    jts = kjt.to_dict()
    inv = kjt.inverse_indices_or_none()
    cols = []
    for config in ebc.embedding_bag_configs():
        weight = ebc.table_weights(config.name)
        mode = config.pooling.value.lower()
        for f in config.feature_names:
            jt = jts[f]
            psw = jt.weights_or_none() if ebc.is_weighted else None
            pooled = torch.nn.functional.embedding_bag(
                jt.values().long(),
                weight,
                jt.offsets().long(),
                mode=mode,
                per_sample_weights=psw,
                include_last_offset=True,
            )
            if inv is not None:
                pooled = pooled[torch.as_tensor(inv[1])[inv[0].index(f)].long()]
            cols.append(pooled)
    return torch.cat(cols, dim=1)


def assert_close_to_reference(out: torch.Tensor, ref: torch.Tensor) -> None:
    # Rounding only: the engine sums in another order (fp32) or exactly in int64 (integer
    # formats, then one scale); the reference sums float32 terms left to right.
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def random_kjt(
    rng: np.random.Generator,
    keys,
    rows: dict,
    batch: int,
    *,
    max_len: int = 4,
    weighted: bool = False,
    pool: int | None = None,
) -> updlrm.KeyedJaggedTensor:
    """A KJT over ``keys``; with ``pool``, each key's bags are drawn from ``pool`` distinct bags (repeats)."""
    values, lengths, weights = [], [], []
    for k in keys:
        choices = [rng.integers(0, rows[k], rng.integers(0, max_len + 1)) for _ in range(pool or batch)]
        wchoices = [rng.choice(np.array([0.5, -1.25, 2.0], np.float32), c.size) for c in choices]
        picks = rng.integers(0, len(choices), batch) if pool else np.arange(batch)
        for p in picks:
            values.append(choices[p])
            weights.append(wchoices[p])
            lengths.append(choices[p].size)
    v = torch.from_numpy(np.concatenate(values).astype(np.int64)) if values else torch.empty(0, dtype=torch.int64)
    w = (
        torch.from_numpy(np.concatenate(weights).astype(np.float32))
        if weighted and weights
        else (torch.empty(0) if weighted else None)
    )
    return updlrm.KeyedJaggedTensor.from_lengths_sync(
        list(keys), v, torch.tensor(lengths, dtype=torch.int64), weights=w
    )


def to_variable_batch(kjt: updlrm.KeyedJaggedTensor) -> updlrm.KeyedJaggedTensor:
    """The same batch as a variable-batch KJT: each key's distinct bags + inverse indices (plain Python)."""
    values, weights, lengths, strides, inverse = [], [], [], [], []
    for jt in kjt.to_dict().values():
        w = jt.weights_or_none()
        seen: dict = {}
        inv = []
        off = jt.offsets().tolist()
        for b in range(len(off) - 1):
            bag = tuple(jt.values()[off[b] : off[b + 1]].tolist())
            wb = None if w is None else tuple(w[off[b] : off[b + 1]].tolist())
            if (bag, wb) not in seen:
                seen[(bag, wb)] = len(seen)
                values += bag
                weights += list(wb or ())
                lengths.append(len(bag))
            inv.append(seen[(bag, wb)])
        strides.append([len(seen)])
        inverse.append(inv)
    return updlrm.KeyedJaggedTensor(
        kjt.keys(),
        torch.tensor(values, dtype=torch.int64),
        weights=None if kjt.weights_or_none() is None else torch.tensor(weights, dtype=torch.float32),
        lengths=torch.tensor(lengths, dtype=torch.int64),
        stride_per_key_per_rank=strides,
        inverse_indices=(kjt.keys(), torch.tensor(inverse, dtype=torch.int64).reshape(len(kjt.keys()), kjt.stride())),
    )
