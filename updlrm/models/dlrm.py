"""DLRM for inference, with its embedding layer on torch or on updlrm.

The architecture is Meta's reference DLRM (Naumov et al., "Deep Learning Recommendation
Model for Personalization and Recommendation Systems", 2019; facebookresearch/dlrm,
``dlrm_s_pytorch.py``):

* bottom MLP over the dense features: ``Linear -> ReLU`` per layer, its output has the
  embedding dimension ``D``;
* sparse part: one pooled embedding per feature, ``(B, D)`` each, from an
  ``EmbeddingBagCollection``-like module (torchrec's call shape: ``forward(kjt) ->
  KeyedTensor``);
* dot interaction: the dot products of all pairs of ``[bottom output, each pooled
  embedding]`` (``F + 1`` vectors), lower triangle without the diagonal in row-major
  order, concatenated after the bottom output: ``D + F(F+1)/2`` features;
* top MLP: ``Linear -> ReLU`` per layer, the last layer ``Linear -> Sigmoid``.

Parameters are initialised as the reference does (weights ``N(0, sqrt(2/(fan_in +
fan_out)))``, biases ``N(0, sqrt(1/fan_out))``, embedding rows ``U(-sqrt(1/rows),
sqrt(1/rows))``) from one ``seed``, so a seed names a model.

The sparse part is either :class:`updlrm.TorchEmbeddingBagCollection` (``nn.EmbeddingBag`` s,
the reference) or :class:`updlrm.EmbeddingBagCollection` (the tables on DPUs). Both
carry the weights under the same ``state_dict`` keys
(``sparse_arch.embedding_bags.<table>.weight``), so one checkpoint loads into either,
and :meth:`DLRM.with_sparse` moves a model from one to the other.

Example:
    >>> import torch, updlrm
    >>> from updlrm.models import DLRM
    >>> tables = [updlrm.EmbeddingBagConfig(name=f"t{i}", num_embeddings=100, embedding_dim=8,
    ...                                     feature_names=[f"f{i}"]) for i in range(3)]
    >>> model = DLRM(tables, dense_in_features=4, bottom_mlp=[16, 8], top_mlp=[16, 1], seed=0)
    >>> kjt = updlrm.KeyedJaggedTensor.from_lengths_sync(
    ...     keys=["f0", "f1", "f2"], values=torch.tensor([1, 2, 3, 4, 5, 6]),
    ...     lengths=torch.tensor([1, 1, 2, 0, 1, 1]))            # key-major, 2 samples
    >>> dense = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    >>> p_torch = model(dense, kjt)
    >>> on_dpus = model.with_sparse("updlrm", backend="emulator", nr_dpus=3)
    >>> p_torch.shape, bool(torch.allclose(on_dpus(dense, kjt), p_torch, atol=1e-6))
    (torch.Size([2, 1]), True)
    >>> on_dpus.close()
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from updlrm.hardware import DEFAULT_HARDWARE_PROFILE

__all__ = ["DLRM", "dot_interaction", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "updlrm-dlrm"
CHECKPOINT_VERSION = 1
SPARSE_KINDS = ("torch", "updlrm")


# ------------------------------------------------------------------------------ table configs


def _configs(tables: Sequence[Any]) -> list:
    from updlrm.collection import _configs as collection_configs

    return collection_configs(tables)


def _table_dict(c) -> dict:
    """The JSON-able facts of an ``EmbeddingBagConfig`` (what a checkpoint stores)."""
    return {
        "name": c.name,
        "num_embeddings": c.num_embeddings,
        "embedding_dim": c.embedding_dim,
        "feature_names": list(c.feature_names),
        "pooling": c.pooling.value,
        "row_format": c.row_format.value,
        "weight_init_max": c.weight_init_max,
        "weight_init_min": c.weight_init_min,
    }


def _table_config(d: dict):
    from updlrm import EmbeddingBagConfig

    return EmbeddingBagConfig(**d)


# ------------------------------------------------------------------------------ DLRM


def dot_interaction(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """Meta's DLRM dot interaction: ``[dense, lower triangle of T T^T]``, no diagonal.

    ``dense`` is ``(B, D)``, ``sparse`` ``(B, F, D)``; ``T = [dense, sparse...]`` is
    ``(B, F+1, D)`` and the pairs ``(i, j), i > j`` are taken row by row
    (``(1,0), (2,0), (2,1), ...``), as the reference's ``li, lj`` index lists.

    >>> x, e = torch.ones(1, 2), torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    >>> dot_interaction(x, e).tolist()   # [x, x.e0, x.e1, e1.e0]
    [[1.0, 1.0, 3.0, 7.0, 11.0]]
    """
    B, D = dense.shape
    T = torch.cat([dense.view(B, 1, D), sparse], dim=1)
    Z = torch.bmm(T, T.transpose(1, 2))
    n = T.shape[1]
    li, lj = torch.tril_indices(n, n, offset=-1)
    return torch.cat([dense, Z[:, li, lj]], dim=1)


def _mlp(sizes: Sequence[int], sigmoid_last: bool, generator: torch.Generator) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        m, n = sizes[i], sizes[i + 1]
        linear = nn.Linear(m, n)
        with torch.no_grad():
            # The reference DLRM's initialisation (dlrm_s_pytorch.py, create_mlp).
            linear.weight.normal_(0.0, math.sqrt(2.0 / (m + n)), generator=generator)
            linear.bias.normal_(0.0, math.sqrt(1.0 / n), generator=generator)
        layers.append(linear)
        layers.append(nn.Sigmoid() if sigmoid_last and i == len(sizes) - 2 else nn.ReLU())
    return nn.Sequential(*layers)


def _build_sparse(kind: str, configs: list, weights: dict | None, seed: int, is_weighted: bool, options: dict):
    """A collection of ``kind`` over ``configs`` holding ``weights`` ({table: (rows, dim)}; None: drawn from ``seed``)."""
    from updlrm import EmbeddingBagCollection, TorchEmbeddingBagCollection

    if kind == "torch":
        if options:
            raise TypeError(f"options {sorted(options)} apply to sparse='updlrm' only")
        return TorchEmbeddingBagCollection(configs, is_weighted=is_weighted, weights=weights, seed=seed)
    if kind == "updlrm":
        return EmbeddingBagCollection(configs, is_weighted=is_weighted, weights=weights, seed=seed, **options)
    raise ValueError(f"sparse must be one of {SPARSE_KINDS} or a collection module, got {kind!r}")


def _sparse_weights(module) -> dict[str, torch.Tensor]:
    """Every table's float32 weights of a collection (dequantised for integer formats)."""
    if hasattr(module, "table_weights"):
        return {c.name: module.table_weights(c.name) for c in module.embedding_bag_configs()}
    return {
        c.name: module.embedding_bags[c.name].weight.detach().to(torch.float32) for c in module.embedding_bag_configs()
    }


class DLRM(nn.Module):
    """Meta's DLRM for inference; the embedding layer on torch or on updlrm's DPUs.

    Args:
        tables: ``EmbeddingBagConfig`` s (updlrm's or torchrec's); every table's
            ``embedding_dim`` must equal ``bottom_mlp[-1]``.
        dense_in_features: number of dense features (13 for Criteo).
        bottom_mlp: layer widths of the bottom MLP (its last = the embedding dim).
        top_mlp: layer widths of the top MLP (its last is usually 1).
        sparse: ``"torch"`` (:class:`updlrm.TorchEmbeddingBagCollection`, the reference
            ``nn.EmbeddingBag`` s), ``"updlrm"`` (:class:`updlrm.EmbeddingBagCollection`)
            or a ready collection over the same tables.
        seed: initialisation seed (the reference DLRM's scheme; see the module doc). The
            tables get the collections' default initialisation from the same seed, so
            ``sparse="torch"`` and ``sparse="updlrm"`` with one seed are one model.
        is_weighted: the KJT's weights are per-sample weights (SUM tables only).
        **sparse_options: passed to ``updlrm.EmbeddingBagCollection`` (``backend``,
            ``plan``, ``nr_dpus``, ``dedup``, ...).

    ``forward(dense_features (B, dense_in), sparse_features KJT) -> (B, top_mlp[-1])``
    click probabilities. The model is built for inference: parameters frozen
    (``requires_grad=False``), eval mode. ``state_dict`` keys: ``sparse_arch.embedding_bags.<t>.weight``
    (plus the quantisation parameters of integer tables on updlrm), ``bottom_mlp.*``,
    ``top_mlp.*``; with fp32 tables both sparse kinds have the same keys.
    :meth:`save`/:meth:`load` write and read a checkpoint (the state_dict plus the
    architecture); :meth:`load` also takes a bare state_dict and infers the
    architecture from its shapes.

    >>> import updlrm
    >>> t = [updlrm.EmbeddingBagConfig(name="u", num_embeddings=10, embedding_dim=4)]
    >>> DLRM(t, dense_in_features=3, bottom_mlp=[4], top_mlp=[1]).extra_repr()
    'dense_in=3, features=1, dim=4, bottom=[3, 4], top=[5, 1], sparse=torch'
    """

    def __init__(
        self,
        tables: Sequence[Any],
        dense_in_features: int,
        bottom_mlp: Sequence[int] = (64, 16),
        top_mlp: Sequence[int] = (64, 1),
        *,
        sparse: str | nn.Module = "torch",
        seed: int = 0,
        is_weighted: bool = False,
        **sparse_options,
    ) -> None:
        super().__init__()
        configs = _configs(tables)
        if dense_in_features < 1:
            raise ValueError(f"dense_in_features must be >= 1, got {dense_in_features}")
        if not bottom_mlp or not top_mlp:
            raise ValueError("bottom_mlp and top_mlp need at least one layer each")
        self._configs = configs
        self.features = [f for c in configs for f in c.feature_names]
        self.embedding_dim = int(bottom_mlp[-1])
        wrong = [c.name for c in configs if c.embedding_dim != self.embedding_dim]
        if wrong:
            raise ValueError(
                f"the dot interaction needs every table's embedding_dim == bottom_mlp[-1] = "
                f"{self.embedding_dim}; tables {wrong[:5]} differ"
            )
        self.dense_in_features = int(dense_in_features)
        self.bottom_sizes = [self.dense_in_features] + [int(s) for s in bottom_mlp]
        nf = len(self.features) + 1
        self.top_sizes = [self.embedding_dim + nf * (nf - 1) // 2] + [int(s) for s in top_mlp]
        self.seed = int(seed)
        self.is_weighted = bool(is_weighted)
        g = torch.Generator().manual_seed(self.seed)
        self.bottom_mlp = _mlp(self.bottom_sizes, False, g)
        self.top_mlp = _mlp(self.top_sizes, True, g)
        if isinstance(sparse, nn.Module):
            if sparse_options:
                raise TypeError("sparse options go with sparse='updlrm', not with a ready module")
            theirs = [_table_dict(c) for c in _configs(sparse.embedding_bag_configs())]
            if theirs != [_table_dict(c) for c in configs]:
                raise ValueError("the sparse module's tables differ from the DLRM's tables")
            from updlrm import EmbeddingBagCollection

            self.sparse_kind = "updlrm" if isinstance(sparse, EmbeddingBagCollection) else "torch"
            self.sparse_arch = sparse
        else:
            self.sparse_kind = str(sparse)
            self.sparse_arch = _build_sparse(
                self.sparse_kind, configs, None, self.seed, self.is_weighted, dict(sparse_options)
            )
        # Inference: frozen parameters, eval mode (outputs never carry a graph).
        self.requires_grad_(False)
        self.eval()

    # -- configuration --------------------------------------------------------------

    def config(self) -> dict:
        """The architecture as a JSON-able dict (what a checkpoint stores besides the weights)."""
        return {
            "tables": [_table_dict(c) for c in self._configs],
            "dense_in_features": self.dense_in_features,
            "bottom_mlp": self.bottom_sizes[1:],
            "top_mlp": self.top_sizes[1:],
            "seed": self.seed,
            "is_weighted": self.is_weighted,
        }

    def embedding_bag_configs(self) -> list:
        """The tables (``updlrm.EmbeddingBagConfig`` s)."""
        return list(self._configs)

    # -- inference ------------------------------------------------------------------

    def forward(self, dense_features: torch.Tensor, sparse_features) -> torch.Tensor:
        dense_features = torch.as_tensor(dense_features, dtype=torch.float32)
        if dense_features.dim() != 2 or dense_features.shape[1] != self.dense_in_features:
            raise ValueError(
                f"dense_features must have shape (B, {self.dense_in_features}), got {tuple(dense_features.shape)}"
            )
        x = self.bottom_mlp(dense_features)
        kt = self.sparse_arch(sparse_features)
        if list(kt.keys()) == self.features:
            sparse = kt.values().reshape(-1, len(self.features), self.embedding_dim)
        else:
            pooled = kt.to_dict()
            missing = [f for f in self.features if f not in pooled]
            if missing:
                raise KeyError(f"the sparse part returned no pooled embedding for features {missing[:5]}")
            sparse = torch.stack([pooled[f] for f in self.features], dim=1)
        if sparse.shape[0] != x.shape[0]:
            raise ValueError(
                f"{x.shape[0]} rows of dense features but {sparse.shape[0]} samples in the sparse features"
            )
        return self.top_mlp(dot_interaction(x, sparse.to(x.dtype)))

    def last_profile(self, profile: str = DEFAULT_HARDWARE_PROFILE):
        """The embedding layer's last batch: measured host and modeled UPMEM phases.

        Only for ``sparse="updlrm"``; see :func:`updlrm.profile.profile_batch`.
        """
        from updlrm.profile import profile_batch

        stats = getattr(self.sparse_arch, "last_stats", None)
        if stats is None:
            raise RuntimeError("no DPU batch has run (the torch sparse part has no DPU profile; use sparse='updlrm')")
        return profile_batch(stats, profile)

    # -- conversion and checkpoints -------------------------------------------------

    def with_sparse(self, sparse: str = "updlrm", **sparse_options) -> DLRM:
        """A copy of this model whose sparse part is ``sparse`` with the same weights.

        ``model.with_sparse("updlrm", backend="emulator")`` puts the tables on DPUs;
        ``with_sparse("torch")`` brings them back into ``nn.EmbeddingBag`` s (integer row
        formats come back dequantised). The MLPs are copied.
        """
        module = _build_sparse(
            sparse, self._configs, _sparse_weights(self.sparse_arch), self.seed, self.is_weighted, dict(sparse_options)
        )
        return self._with_module(module)

    def _with_module(self, module: nn.Module) -> DLRM:
        new = DLRM(
            self._configs,
            self.dense_in_features,
            self.bottom_sizes[1:],
            self.top_sizes[1:],
            sparse=module,
            seed=self.seed,
            is_weighted=self.is_weighted,
        )
        new.bottom_mlp.load_state_dict(self.bottom_mlp.state_dict())
        new.top_mlp.load_state_dict(self.top_mlp.state_dict())
        return new

    @classmethod
    def from_torch(cls, model: DLRM, **sparse_options) -> DLRM:
        """The updlrm-sparse twin of a torch-sparse ``model`` (same weights, same predictions).

        Same as ``model.with_sparse("updlrm", **sparse_options)``.
        """
        if not isinstance(model, DLRM):
            raise TypeError(f"from_torch takes an updlrm.models.DLRM, got {type(model).__name__}")
        return model.with_sparse("updlrm", **sparse_options)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint: ``torch.save`` of the state_dict plus the architecture.

        >>> import tempfile, pathlib, updlrm
        >>> t = [updlrm.EmbeddingBagConfig(name="u", num_embeddings=10, embedding_dim=4)]
        >>> f = DLRM(t, 3, [4], [1], seed=1).save(pathlib.Path(tempfile.mkdtemp()) / "m.pt")
        >>> DLRM.load(f).top_mlp[0].weight.equal(DLRM(t, 3, [4], [1], seed=1).top_mlp[0].weight)
        True
        """
        path = Path(path)
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "config": self.config(),
                "state_dict": {k: v.detach() for k, v in self.state_dict().items()},
            },
            path,
        )
        return path

    @classmethod
    def load(
        cls, checkpoint: str | os.PathLike | dict, *, sparse: str = "torch", pooling: str = "SUM", **sparse_options
    ) -> DLRM:
        """A model from a checkpoint of :meth:`save`, or from a bare ``state_dict``.

        ``checkpoint`` is a path or the loaded dict. A bare state_dict
        (``torch.save(model.state_dict(), f)``) gives the shapes; the rest is assumed:
        each table has one feature of its own name, ``pooling`` for all, fp32 rows.
        ``sparse`` and ``sparse_options`` as in the constructor; the tables are built
        once, with the checkpoint's weights.
        """
        data = checkpoint
        if not isinstance(data, dict):
            try:
                data = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise FileNotFoundError(f"no checkpoint at {checkpoint}") from None
            except Exception as exc:  # torch raises many kinds for a file it cannot read
                raise ValueError(f"{checkpoint}: not a torch checkpoint ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise ValueError(f"a DLRM checkpoint is a dict, got {type(data).__name__}")
        if data.get("format") == CHECKPOINT_FORMAT:
            if int(data.get("version", -1)) != CHECKPOINT_VERSION:
                raise ValueError(f"checkpoint version {data.get('version')}; this updlrm reads {CHECKPOINT_VERSION}")
            config, state = data["config"], data["state_dict"]
        else:
            state = data
            config = _infer_config(state, pooling)
        configs = [_table_config(t) for t in config["tables"]]
        tables = _sparse_part(state)
        names = [c.name for c in configs]
        if sorted(tables) != sorted(names):
            raise ValueError(f"the checkpoint's tables {sorted(tables)[:5]} differ from its architecture's {names[:5]}")
        module = _build_sparse(
            sparse, configs, tables, int(config.get("seed", 0)), bool(config.get("is_weighted")), dict(sparse_options)
        )
        model = cls(
            configs,
            config["dense_in_features"],
            config["bottom_mlp"],
            config["top_mlp"],
            sparse=module,
            seed=int(config.get("seed", 0)),
            is_weighted=bool(config.get("is_weighted")),
        )
        for part in ("bottom_mlp", "top_mlp"):
            sub = {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
            try:
                getattr(model, part).load_state_dict(sub)
            except RuntimeError as exc:
                model.close()
                raise ValueError(
                    f"the checkpoint's {part} does not fit its architecture: {str(exc).splitlines()[-1].strip()}"
                ) from None
        return model

    def close(self) -> None:
        """Free the sparse part's DPUs (no-op for torch)."""
        close = getattr(self.sparse_arch, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> DLRM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extra_repr(self) -> str:
        return (
            f"dense_in={self.dense_in_features}, features={len(self.features)}, dim={self.embedding_dim}, "
            f"bottom={self.bottom_sizes}, top={self.top_sizes}, sparse={self.sparse_kind}"
        )


def _sparse_part(state: dict) -> dict[str, torch.Tensor]:
    """``{table: float32 weight}`` of a DLRM state_dict (the float view; quantised rows refit on load)."""
    prefix, suffix = "sparse_arch.embedding_bags.", ".weight"
    out = {k[len(prefix) : -len(suffix)]: v for k, v in state.items() if k.startswith(prefix) and k.endswith(suffix)}
    if not out:
        raise ValueError("the checkpoint holds no embedding tables (no sparse_arch.embedding_bags.<table>.weight)")
    return out


def _linear_sizes(state: dict, prefix: str) -> list[int]:
    layers = sorted(
        (int(k[len(prefix) :].split(".")[0]), v)
        for k, v in state.items()
        if k.startswith(prefix) and k.endswith(".weight")
    )
    if not layers:
        raise ValueError(f"the checkpoint has no {prefix}* layers")
    sizes = [int(layers[0][1].shape[1])]
    for _, w in layers:
        if int(w.shape[1]) != sizes[-1]:
            raise ValueError(f"the checkpoint's {prefix}* layers do not chain ({sizes[-1]} -> {tuple(w.shape)})")
        sizes.append(int(w.shape[0]))
    return sizes


def _infer_config(state: dict, pooling: str) -> dict:
    """The architecture of a bare DLRM state_dict, from its tensor shapes."""
    tables = [
        {
            "name": name,
            "num_embeddings": int(w.shape[0]),
            "embedding_dim": int(w.shape[1]),
            "feature_names": [name],
            "pooling": str(pooling).upper(),
            "row_format": "fp32",
        }
        for name, w in _sparse_part(state).items()
    ]
    bottom, top = _linear_sizes(state, "bottom_mlp."), _linear_sizes(state, "top_mlp.")
    return {"tables": tables, "dense_in_features": bottom[0], "bottom_mlp": bottom[1:], "top_mlp": top[1:]}
