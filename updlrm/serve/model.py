"""What ``updlrm serve`` runs: a DLRM checkpoint, or the embedding layer alone.

:class:`ServedModel` wraps either module behind one call, ``run(dense, kjt) ->
numpy (b, out)``, and measures where the host time of each batch goes: ``sparse_s``
(the embedding collection: validation, routing, DPUs, merge) and ``dense_s`` (the
MLPs and the interaction, DLRM only). :meth:`ServedModel.last_stats` is the engine's
record of the last batch, :func:`updlrm.profile.profile_batch` turns it into measured
host phases and modeled UPMEM phases.

Example:
    >>> import tempfile, pathlib
    >>> from updlrm.serve.requests import load_requests, write_synthetic_criteo
    >>> rs = load_requests(write_synthetic_criteo(pathlib.Path(tempfile.mkdtemp()) / "c.tsv", 4), max_rows=1000)
    >>> m = ServedModel.open(None, rs, backend="emulator", nr_dpus=26, dim=4)
    >>> m
    ServedModel(embedding layer, 26 tables, backend emulator, 26 DPUs)
    >>> m.run(*rs.batch([0, 1])).shape
    (2, 104)
    >>> m.close()
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from updlrm.serve.requests import RequestError, RequestSet

__all__ = ["ServedModel", "ModelError", "load_model_file", "model_table_rows"]


class ModelError(ValueError):
    """A model file or option that cannot serve the requests; the message says what to fix."""


def load_model_file(path: str | os.PathLike) -> dict:
    """Read a model file (``torch.load``, tensors only) for :meth:`ServedModel.open`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file it cannot read
        raise ModelError(
            f"{path}: not a torch checkpoint ({type(exc).__name__}); give a DLRM checkpoint "
            "(DLRM.save or torch.save(model.state_dict())) or an EmbeddingBagCollection state_dict"
        ) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: a checkpoint is a dict of tensors, got {type(data).__name__}")
    return data


def _is_dlrm(data: dict) -> bool:
    state = data.get("state_dict", data)
    return data.get("format") is not None or any(str(k).startswith("sparse_arch.") for k in state)


def _ebc_weights(data: dict) -> dict:
    return {
        str(k)[len("embedding_bags.") : -len(".weight")]: v
        for k, v in data.items()
        if str(k).startswith("embedding_bags.") and str(k).endswith(".weight")
    }


def model_table_rows(data: dict) -> dict[str, int]:
    """``{feature: rows of its table}`` of a loaded model file (Criteo ids are taken modulo these).

    >>> model_table_rows({"embedding_bags.C1.weight": torch.zeros(7, 2)})
    {'C1': 7}
    """
    if _is_dlrm(data):
        if data.get("format") is not None:
            return {f: int(t["num_embeddings"]) for t in data["config"]["tables"] for f in t["feature_names"]}
        data = {k[len("sparse_arch.") :]: v for k, v in data.items() if str(k).startswith("sparse_arch.")}
    return {name: int(w.shape[0]) for name, w in _ebc_weights(data).items()}


class ServedModel:
    """A DLRM or an embedding collection with one batch call and per-batch host timings."""

    def __init__(self, module: torch.nn.Module, kind: str, sparse: torch.nn.Module) -> None:
        self.module = module
        self.kind = kind
        self.sparse = sparse
        self.needs_dense = kind == "dlrm"
        self.dense_in_features = getattr(module, "dense_in_features", 0)
        self.features = [f for c in sparse.embedding_bag_configs() for f in c.feature_names]
        self.last_times: dict[str, float] = {}
        self._t = 0.0
        if kind == "dlrm":
            sparse.register_forward_pre_hook(self._sparse_start)
            sparse.register_forward_hook(self._sparse_end)

    def _sparse_start(self, *_):
        self._t = time.perf_counter()

    def _sparse_end(self, *_):
        self.last_times["sparse_s"] = time.perf_counter() - self._t

    # -- construction ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        model: dict | None,
        requests: RequestSet,
        *,
        backend: str = "auto",
        nr_dpus: int | None = None,
        plan: str | None = None,
        dim: int = 16,
        seed: int = 0,
    ) -> ServedModel:
        """The model to serve ``requests`` with.

        ``model``: a loaded model file (:func:`load_model_file`): a DLRM checkpoint
        (:meth:`updlrm.models.DLRM.save` or a bare DLRM ``state_dict``), or an
        ``EmbeddingBagCollection`` ``state_dict``
        (``embedding_bags.<table>.weight``, each table fed by the feature of its name).
        None: the embedding layer alone, one table per feature of the requests, sized to
        the rows they look up, ``dim`` wide, weights from ``seed``.
        """
        from updlrm import EmbeddingBagCollection, EmbeddingBagConfig
        from updlrm.models import DLRM

        options = {"backend": backend, "plan": plan}
        if nr_dpus is not None:
            options["nr_dpus"] = nr_dpus
        if model is None:
            top = requests.max_index()
            tables = []
            for key in requests.keys:
                rows = max(1, top[key] + 1)
                tables.append(EmbeddingBagConfig(name=key, num_embeddings=rows, embedding_dim=dim, feature_names=[key]))
            ebc = EmbeddingBagCollection(tables, is_weighted=requests.weights is not None, seed=seed, **options)
            return cls(ebc, "embedding", ebc)
        if _is_dlrm(model):
            try:
                dlrm = DLRM.load(model, sparse="updlrm", **options)
            except (KeyError, ValueError, TypeError) as exc:
                raise ModelError(f"the model file: {exc}") from None
            return cls(dlrm, "dlrm", dlrm.sparse_arch)
        weights = _ebc_weights(model)
        if not weights:
            raise ModelError(
                "the model file is neither a DLRM checkpoint (sparse_arch.*, bottom_mlp.*, top_mlp.*) nor an "
                "EmbeddingBagCollection state_dict (embedding_bags.<table>.weight)"
            )
        tables = [
            EmbeddingBagConfig(name=n, num_embeddings=int(w.shape[0]), embedding_dim=int(w.shape[1]), feature_names=[n])
            for n, w in weights.items()
        ]
        ebc = EmbeddingBagCollection(tables, is_weighted=requests.weights is not None, weights=weights, **options)
        return cls(ebc, "embedding", ebc)

    def check(self, requests: RequestSet) -> None:
        """Raise :class:`RequestError` (one line) if ``requests`` cannot run on this model."""
        if self.needs_dense:
            if requests.dense is None:
                raise RequestError(
                    f"{requests.source}: a DLRM needs dense features and this file has none; "
                    "serve it without --model (the embedding layer alone) or use Criteo TSV / KJT .pt "
                    "with 'dense'"
                )
            if requests.num_dense != self.dense_in_features:
                raise RequestError(
                    f"{requests.source}: {requests.num_dense} dense features per sample, the model "
                    f"takes {self.dense_in_features}"
                )
        missing = [f for f in self.features if f not in requests.keys]
        if missing:
            raise RequestError(
                f"{requests.source}: the model reads features {missing[:5]} that the requests lack "
                f"(they have {requests.keys[:5]}...)"
            )
        top = requests.max_index()
        for c in self.sparse.embedding_bag_configs():
            for f in c.feature_names:
                if top[f] >= c.num_embeddings:
                    raise RequestError(
                        f"{requests.source}: feature {f} looks up row {top[f]} but table {c.name} "
                        f"has {c.num_embeddings} rows"
                    )

    # -- running --------------------------------------------------------------------

    def run(self, dense: torch.Tensor | None, kjt: Any) -> np.ndarray:
        """One batch: ``(b, 1)`` click probabilities (DLRM) or ``(b, sum of dims)`` pooled embeddings."""
        self.last_times = {}
        start = time.perf_counter()
        with torch.no_grad():
            if self.kind == "dlrm":
                out = self.module(dense, kjt)
            else:
                out = self.module(kjt).values()
        total = time.perf_counter() - start
        sparse = self.last_times.get("sparse_s", total)
        self.last_times = {"sparse_s": sparse, "dense_s": max(0.0, total - sparse)}
        return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    def last_stats(self):
        """The engine's ``BatchStats`` of the last batch (None before any)."""
        return getattr(self.sparse, "last_stats", None)

    @property
    def backend(self) -> str:
        return str(getattr(self.sparse, "backend", "?"))

    @property
    def nr_dpus(self) -> int:
        plan = getattr(self.sparse, "plan", None)
        return int(plan.topology.nr_dpus) if plan is not None else 0

    def close(self) -> None:
        close = getattr(self.module, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        what = "DLRM" if self.kind == "dlrm" else "embedding layer"
        return (
            f"ServedModel({what}, {len(self.sparse.embedding_bag_configs())} tables, backend {self.backend}, "
            f"{self.nr_dpus} DPUs)"
        )
