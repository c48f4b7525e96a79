"""torchrec's ``EmbeddingBagCollection`` on DPUs: features -> tables, mixed pooling, weighted features.

``EmbeddingBagCollection(tables=[EmbeddingBagConfig(...), ...])`` is a ``torch.nn.Module``
whose ``forward(kjt)`` takes a ``KeyedJaggedTensor`` (updlrm's or torchrec's) and returns
a :class:`~updlrm.kjt.KeyedTensor` whose keys are the feature names in table order, then
feature order (torchrec's EBC order). Inference only.

How a batch runs (one engine holds every table once, whatever the number of features):

1. The KJT is read (duck typing) and checked: every key must be a feature of the
   collection, bounds per feature, weights only for a weighted collection.
2. Per feature, the bags to compute are chosen: all ``B`` of them, or - with in-batch
   deduplication (:mod:`updlrm.dedup`, on by default when it pays) - the distinct ones
   plus inverse indices; a variable-batch KJT (unique bags + ``inverse_indices``) is
   taken as already deduplicated.
3. *Stacking*: the engine runs one TBE batch of ``T`` tables and ``B'`` bags per table;
   table ``t``'s bags are the chosen bags of its features one after the other, padded
   with empty bags to ``B' = max over tables``. So features sharing a table read the
   same rows in MRAM (nothing is duplicated) and need no engine change.
4. The engine pools with SUM; MEAN features are divided by their bag length on the host
   (empty bags stay zero, as ``torch.nn.EmbeddingBag``). Each feature's rows are then
   expanded by its inverse indices into the ``(B, sum of dims)`` output.

Example:
    >>> import torch, updlrm
    >>> ebc = updlrm.EmbeddingBagCollection(tables=[
    ...     updlrm.EmbeddingBagConfig("t_user", 100, 4, ["user", "user_hist"], pooling="MEAN"),
    ...     updlrm.EmbeddingBagConfig("t_item", 50, 8, ["item"])], backend="emulator", nr_dpus=4)
    >>> kjt = updlrm.KeyedJaggedTensor.from_lengths_sync(
    ...     ["user", "user_hist", "item"], torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([1, 1, 2, 0, 1, 1]))
    >>> kt = ebc(kjt)
    >>> kt.keys(), kt.values().shape
    (['user', 'user_hist', 'item'], torch.Size([2, 16]))
    >>> ref = ebc.to_torch()(kjt)
    >>> torch.allclose(kt.values(), ref.values(), atol=1e-6)
    True
    >>> ebc.close()
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from updlrm.batch_report import BatchReport
from updlrm.configs import EmbeddingBagConfig, PoolingType
from updlrm.kjt import KeyedJaggedTensor, KeyedTensor  # noqa: F401 (KeyedJaggedTensor: the examples use it)
from updlrm.plan import Plan, PlanError
from updlrm.sparse_batch import SparseBatch, read_kjt, stack_bags
from updlrm.specs import BoundsCheckMode, PoolingMode, RowFormat, TableSpec
from updlrm.tbe import (
    IndexOutOfRangeError,
    InvalidInputError,
    TableBatchedEmbeddingBags,
    _init_table,
    dequantize_table,
)
from updlrm.torch_collection import TorchEmbeddingBagCollection, _configs

__all__ = [
    "PoolingType",
    "EmbeddingBagConfig",
    "EmbeddingBagCollection",
    "TorchEmbeddingBagCollection",
]


# --------------------------------------------------------------------------------------
# the collection


class EmbeddingBagCollection(torch.nn.Module):
    """Pooled embeddings of many features over shared tables, torchrec's EBC on DPUs.

    Args:
        tables: ``EmbeddingBagConfig`` s (updlrm's or torchrec's) or ``TableSpec`` s.
            Table and feature names are unique; a table may serve several features.
        is_weighted: the KJT carries one weight per value, used as per-sample weights
            (torchrec's ``is_weighted``). MEAN tables cannot be weighted (as in
            ``torch.nn.EmbeddingBag`` and FBGEMM).
        plan: a placement plan for the tables (see :mod:`updlrm.partitioner`), a path, or
            None for the TBE default.
        backend, nr_dpus, nr_tasklets, seed: as :class:`~updlrm.tbe.TableBatchedEmbeddingBags`.
        weights: None (each table drawn from its config's init range with ``seed``), or
            a dict ``{table name: (rows, dim) tensor/array}`` (every table).
        dedup: ``"auto"`` (default: deduplicate features whose bags repeat enough in the
            batch, see :mod:`updlrm.dedup`), ``True`` (every feature), ``False`` (never).
        bounds_check_mode: FATAL (default) raises naming the feature and sample;
            WARNING/IGNORE drop out-of-range lookups; NONE skips the check.

    ``forward(kjt)`` returns a :class:`~updlrm.kjt.KeyedTensor` (keys: feature names in
    table order then feature order; float32 ``(B, sum of dims)``). ``.last_report``
    describes the calling thread's last batch (:class:`BatchReport`), ``.last_stats`` the
    engine's. Any number of threads may call one
    collection and each gets its serial result; the engine runs one batch at a time, and
    ``load_state_dict`` swaps the tables between batches.

    >>> ebc = EmbeddingBagCollection([EmbeddingBagConfig("t", 10, 2, ["a", "b"])], backend="emulator", nr_dpus=2)
    >>> kjt = KeyedJaggedTensor(["a", "b"], torch.tensor([1, 2, 1, 2]), lengths=torch.tensor([2, 2, 0, 0]))
    >>> ebc(kjt).keys(), ebc.last_report.lookups_in, ebc.last_report.lookups_run   # a's two bags are one
    (['a', 'b'], 4, 2)
    >>> sorted(ebc.state_dict())
    ['embedding_bags.t.weight']
    >>> ebc.close()
    """

    def __init__(
        self,
        tables: Sequence[Any],
        *,
        is_weighted: bool = False,
        plan: Plan | str | os.PathLike | None = None,
        backend: str = "auto",
        weights: Mapping[str, Any] | None = None,
        dedup: bool | str = "auto",
        nr_dpus: int | None = None,
        nr_tasklets: int = 16,
        seed: int = 0,
        bounds_check_mode: BoundsCheckMode = BoundsCheckMode.FATAL,
        device: Any = None,
    ) -> None:
        super().__init__()
        if device is not None and torch.device(device).type not in ("cpu", "meta"):
            raise ValueError(
                f"device={device!r}: updlrm's tables live on DPUs and its outputs on the host; use device='cpu' or None"
            )
        if dedup not in ("auto", True, False):
            raise ValueError(f"dedup must be 'auto', True or False, got {dedup!r}")
        configs = _configs(tables)
        self.is_weighted = bool(is_weighted)
        if self.is_weighted:
            mean = [c.name for c in configs if c.pooling == PoolingType.MEAN]
            if mean:
                raise ValueError(
                    f"tables {mean} pool with MEAN, which does not take per-sample weights (as torch.nn.EmbeddingBag "
                    "and FBGEMM); use SUM for a weighted collection, or put the MEAN tables in an unweighted one"
                )
        self._configs = configs
        self.dedup = dedup
        self.bounds_check_mode = BoundsCheckMode(bounds_check_mode)
        self._feature_names = [f for c in configs for f in c.feature_names]
        self._feature_table = np.array([t for t, c in enumerate(configs) for _ in c.feature_names], dtype=np.int64)
        self._feature_index = {f: i for i, f in enumerate(self._feature_names)}
        self._dims = [c.embedding_dim for c in configs]
        self._col = np.concatenate(([0], np.cumsum(self._dims))).astype(np.int64)
        self._feature_dims = [configs[t].embedding_dim for t in self._feature_table]
        self._feature_mean = np.array([configs[t].pooling == PoolingType.MEAN for t in self._feature_table], dtype=bool)
        self._rows = np.array([c.num_embeddings for c in configs], dtype=np.int64)
        self._backend_args = dict(backend=backend, nr_dpus=nr_dpus, nr_tasklets=nr_tasklets, seed=seed)
        self._thread_state = threading.local()
        values = self._initial_weights(weights, seed)
        self._engine_lock = threading.Lock()
        # The TBE is kept out of the module tree: the collection's state_dict speaks for it.
        object.__setattr__(self, "_tbe", self._build_tbe([c.table_spec() for c in configs], values, plan))

    # -- construction ------------------------------------------------------------------

    def _initial_weights(self, weights: Mapping[str, Any] | None, seed: int) -> list[Any]:
        if weights is None:
            return [
                _init_table(c.table_spec(), seed, t, c.weight_init_min, c.weight_init_max)
                for t, c in enumerate(self._configs)
            ]
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights must be a dict {{table name: (rows, dim) tensor}}, got {type(weights).__name__}")
        names = [c.name for c in self._configs]
        unknown = sorted(set(weights) - set(names))
        missing = [n for n in names if n not in weights]
        if unknown or missing:
            raise ValueError(f"weights must have exactly the tables {names}; missing {missing}, unknown {unknown}")
        return [weights[n] for n in names]

    def _build_tbe(self, specs: list[TableSpec], values: list[Any], plan: Any) -> TableBatchedEmbeddingBags:
        if isinstance(plan, (str, os.PathLike)):
            plan = Plan.load(plan)
        if isinstance(plan, Plan):
            # A plan places rows: names, sizes and formats must match; feature names and
            # fitted scales do not move rows.
            def shape(ts):
                return [(t.name, t.num_embeddings, t.embedding_dim, t.row_format.value) for t in ts]

            if shape(plan.tables) != shape(specs):
                raise PlanError(
                    f"the plan was built for tables {shape(plan.tables)[:4]}..., not for this collection's "
                    f"{shape(specs)[:4]}... (names, rows, dims and row formats must match)"
                )
            plan = dataclasses.replace(plan, tables=specs)
        a = self._backend_args
        return TableBatchedEmbeddingBags(
            specs,
            plan=plan,
            backend=a["backend"],
            pooling_mode=PoolingMode.SUM,
            bounds_check_mode=BoundsCheckMode.NONE,
            nr_tasklets=a["nr_tasklets"],
            weights=values,
            seed=a["seed"],
            nr_dpus=a["nr_dpus"],
            quantization="fit",
        )

    # -- torchrec's accessors --------------------------------------------------------------

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        return list(self._configs)

    def feature_names(self) -> list[str]:
        """The output keys: feature names in table order, then feature order.

        >>> with EmbeddingBagCollection([EmbeddingBagConfig("t", 4, 2, ["b", "a"]), EmbeddingBagConfig("u", 4, 2)],
        ...                             backend="emulator", nr_dpus=1) as ebc:
        ...     ebc.feature_names()
        ['b', 'a', 'u']
        """
        return list(self._feature_names)

    @property
    def backend(self) -> str:
        return self._tbe.backend

    @property
    def plan(self) -> Plan:
        return self._tbe.plan

    @property
    def tbe(self) -> TableBatchedEmbeddingBags:
        """The engine-backed TBE that holds every table once."""
        return self._tbe

    @property
    def last_stats(self):
        """The engine's ``BatchStats`` of the last batch."""
        return self._tbe.last_stats

    @property
    def last_report(self) -> BatchReport | None:
        """:class:`BatchReport` of the calling thread's last batch (None before it ran one)."""
        return getattr(self._thread_state, "report", None)

    @last_report.setter
    def last_report(self, report: BatchReport) -> None:
        self._thread_state.report = report

    def table_weights(self, name: str) -> torch.Tensor:
        """Table ``name``'s weights as float32 (dequantised for integer formats).

        >>> with EmbeddingBagCollection([EmbeddingBagConfig("t", 2, 2, row_format="int8")],
        ...                             weights={"t": torch.tensor([[1.0, -0.5], [0.25, 0.0]])}, backend="emulator", nr_dpus=1) as ebc:
        ...     ebc.table_weights("t").tolist()
        [[1.0, -0.5039370059967041], [0.25196850299835205, 0.0]]
        """
        return torch.from_numpy(self._tbe.weights(name))

    # -- forward ---------------------------------------------------------------------------

    def forward(self, features: Any) -> KeyedTensor:
        """Pool every feature of ``features`` (a KeyedJaggedTensor); see the class docstring."""
        t_read = time.perf_counter()
        batch = read_kjt(features)
        self._check(batch)
        B = batch.batch_size
        if B == 0:
            self.last_report = BatchReport(
                list(self._feature_names), 0, [0] * len(self._feature_names), 0, 0, [False] * len(self._feature_names)
            )
            return KeyedTensor(self._feature_names, self._feature_dims, torch.zeros(0, sum(self._feature_dims)))
        t0 = time.perf_counter()
        order = [batch.keys.index(f) for f in self._feature_names]
        bags, inverse, deduplicated = self._choose_bags(batch, order)
        t1 = time.perf_counter()
        indices, offsets, psw, row_start, Bp = self._stack(batch, bags)
        t2 = time.perf_counter()
        if indices is None:
            pooled = np.zeros((Bp, int(self._col[-1])), np.float32)
        else:
            # One batch at a time on the engine (it has one set of DPU buffers); reading,
            # dedup, stacking and expansion run in the callers' threads.
            with self._engine_lock:
                pooled = self._tbe(indices, offsets, psw)
        t3 = time.perf_counter()
        out = self._expand(batch, pooled, bags, inverse, row_start)
        t4 = time.perf_counter()
        lookups_in = sum(self._feature_lookups(batch, k) for k in order)
        lookups_run = int(offsets[-1]) if offsets is not None else 0
        self.last_report = BatchReport(
            list(self._feature_names),
            B,
            [int(b.size) for b in bags],
            lookups_in,
            lookups_run,
            deduplicated,
            read_s=t0 - t_read,
            dedup_s=t1 - t0,
            stack_s=t2 - t1,
            expand_s=t4 - t3,
        )
        return KeyedTensor(self._feature_names, self._feature_dims, torch.from_numpy(out))

    def _feature_lookups(self, batch: SparseBatch, k: int) -> int:
        """Lookups key ``k`` contributes to the full batch (samples, not unique bags)."""
        lo = batch.bag_start[k]
        lengths = batch.lengths[lo : batch.bag_start[k + 1]]
        if batch.inverse[k] is None:
            return int(lengths.sum())
        return int(lengths[batch.inverse[k]].sum())

    def _check(self, batch: SparseBatch) -> None:
        unknown = [k for k in batch.keys if k not in self._feature_index]
        if unknown:
            raise InvalidInputError(
                f"KeyedJaggedTensor key {unknown[0]!r} is not a feature of this collection (features: {self._feature_names}); "
                "drop it or add it to a table's feature_names"
            )
        missing = [f for f in self._feature_names if f not in batch.keys]
        if missing:
            raise InvalidInputError(
                f"the KeyedJaggedTensor has no key {missing[0]!r}; this collection needs every feature {self._feature_names} "
                f"(it has {batch.keys})"
            )
        if batch.weights is not None and not self.is_weighted:
            raise InvalidInputError(
                "the KeyedJaggedTensor carries weights, but the collection's features are not weighted; "
                "build it with is_weighted=True or pass a KJT without weights"
            )
        if batch.weights is None and self.is_weighted:
            raise InvalidInputError(
                "the collection is weighted (is_weighted=True); pass a KeyedJaggedTensor with weights (one per value)"
            )
        if batch.weights is not None:
            finite = np.isfinite(batch.weights)
            if not finite.all():
                p = int(np.argmin(finite))
                raise InvalidInputError(f"weights[{p}] = {batch.weights[p]} is not finite")
        if self.bounds_check_mode == BoundsCheckMode.NONE or batch.values.size == 0:
            return
        # One comparison per value against its feature's table size (negatives wrap to huge).
        key_rows = self._rows[self._feature_table[[self._feature_index[k] for k in batch.keys]]]
        per_key_values = batch.offsets[batch.bag_start[1:]] - batch.offsets[batch.bag_start[:-1]]
        limit = np.repeat(key_rows, per_key_values).astype(np.uint64)
        bad = batch.values.view(np.uint64) >= limit
        if not bad.any():
            return
        p = int(np.argmax(bad))
        bag = int(np.searchsorted(batch.offsets, p, side="right")) - 1
        k = int(np.searchsorted(batch.bag_start, bag, side="right")) - 1
        key = batch.keys[k]
        table = self._configs[self._feature_table[self._feature_index[key]]]
        where = (
            f"feature {key!r} (table {table.name!r}), bag {bag - int(batch.bag_start[k])}: values[{p}] = {int(batch.values[p])} "
            f"is out of range [0, {table.num_embeddings})"
        )
        nbad = int(np.count_nonzero(bad))
        if self.bounds_check_mode == BoundsCheckMode.FATAL:
            raise IndexOutOfRangeError(
                f"{where}; {nbad} of {bad.size} values are out of range "
                "(bounds_check_mode=FATAL; use WARNING or IGNORE to drop them)"
            )
        if self.bounds_check_mode == BoundsCheckMode.WARNING:
            warnings.warn(
                f"{where}; dropping {nbad} out-of-range lookups (they contribute nothing)", RuntimeWarning, stacklevel=4
            )
        keep = ~bad
        kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
        batch.offsets = kept_before[batch.offsets]
        batch.lengths = np.diff(batch.offsets)
        batch.values = batch.values[keep]
        if batch.weights is not None:
            batch.weights = batch.weights[keep]

    def _choose_bags(
        self, batch: SparseBatch, order: list[int]
    ) -> tuple[list[np.ndarray], list[np.ndarray | None], list[bool]]:
        """Per feature: the global bag ids to compute and the inverse map of the B samples."""
        from updlrm.dedup import choose_bags

        return choose_bags(batch, order, self.dedup)

    def _stack(self, batch: SparseBatch, bags: list[np.ndarray]):
        """One TBE batch of the chosen bags (:func:`updlrm.sparse_batch.stack_bags`)."""
        return stack_bags(batch, bags, self._feature_table, len(self._configs))

    def _expand(
        self,
        batch: SparseBatch,
        pooled: np.ndarray,
        bags: list[np.ndarray],
        inverse: list[np.ndarray | None],
        row_start: np.ndarray,
    ) -> np.ndarray:
        B = batch.batch_size
        if len(bags) == len(self._configs) and pooled.shape[0] == B and all(inv is None for inv in inverse):
            # One feature per table, every sample computed: the engine's output is laid
            # out as the answer (same rows, same columns); only MEAN columns change.
            for i in np.flatnonzero(self._feature_mean):
                n = batch.lengths[bags[i]].astype(np.float32)
                lo, hi = self._col[i], self._col[i + 1]
                pooled[:, lo:hi] = pooled[:, lo:hi] / np.maximum(n, 1)[:, None]
            return pooled
        out = np.empty((B, int(sum(self._feature_dims))), dtype=np.float32)
        col = 0
        for i, b in enumerate(bags):
            t = self._feature_table[i]
            dim = self._dims[t]
            rows = pooled[row_start[i] : row_start[i] + b.size, self._col[t] : self._col[t] + dim]
            if self._feature_mean[i]:
                # MEAN = SUM / bag length in float32, as torch.nn.EmbeddingBag; empty bags stay 0.
                n = batch.lengths[b].astype(np.float32)
                rows = rows / np.maximum(n, 1)[:, None]
            if inverse[i] is None:
                out[:, col : col + dim] = rows
            else:
                out[:, col : col + dim] = rows[inverse[i]]
            col += dim
        return out

    # -- state -------------------------------------------------------------------------------

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        for t, c in enumerate(self._configs):
            key = f"{prefix}embedding_bags.{c.name}."
            destination[key + "weight"] = torch.from_numpy(self._tbe.weights(t))
            if c.row_format != RowFormat.FP32:
                destination[key + "weight_quantized"] = torch.from_numpy(np.array(self._tbe._stored[t], copy=True))
                destination[key + "weight_scale"] = torch.tensor(float(self._tbe.tables[t].scale), dtype=torch.float64)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        mine = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix + "embedding_bags.")}
        expected = set()
        values, specs = [], []
        for t, c in enumerate(self._configs):
            key = f"embedding_bags.{c.name}."
            expected.add(key + "weight")
            if c.row_format != RowFormat.FP32:
                expected |= {key + "weight_quantized", key + "weight_scale"}
            w = mine.get(key + "weight")
            q, s = mine.get(key + "weight_quantized"), mine.get(key + "weight_scale")
            spec = self._tbe.tables[t]
            if w is None:
                missing_keys.append(prefix + key + "weight")
                values.append(self._tbe._stored[t])
                specs.append(spec)
                continue
            w = torch.as_tensor(w).detach().cpu()
            if tuple(w.shape) != (c.num_embeddings, c.embedding_dim):
                error_msgs.append(
                    f"size mismatch for {prefix}{key}weight: copying a param with shape {tuple(w.shape)}, "
                    f"the table {c.name!r} has shape {(c.num_embeddings, c.embedding_dim)}"
                )
                values.append(self._tbe._stored[t])
                specs.append(spec)
                continue
            if q is not None and s is not None and c.row_format != RowFormat.FP32:
                # The quantised rows load exactly if the float view is theirs; an edited float view wins.
                q = torch.as_tensor(q).cpu().numpy()
                qspec = dataclasses.replace(spec, scale=float(s))
                if q.shape == tuple(w.shape) and np.array_equal(
                    dequantize_table(q, qspec), w.numpy().astype(np.float32)
                ):
                    values.append(q)
                    specs.append(qspec)
                    continue
            values.append(w.numpy())
            specs.append(spec)
        if strict:
            unexpected_keys.extend(prefix + k for k in sorted(set(mine) - expected))
        if error_msgs:
            return
        new = self._build_tbe(specs, values, dataclasses.replace(self._tbe.plan, tables=specs))
        with self._engine_lock:
            old = self._tbe
            object.__setattr__(self, "_tbe", new)
        old.close()

    # -- converters ----------------------------------------------------------------------------

    def to_torch(self) -> TorchEmbeddingBagCollection:
        """The same collection in pure torch (``torch.nn.EmbeddingBag`` s with the dequantised weights).

        Its ``state_dict`` has torchrec's key names; ``from_torch`` takes it back.

        >>> with EmbeddingBagCollection([EmbeddingBagConfig("t", 5, 3, ["a"], pooling="MEAN")], backend="emulator", nr_dpus=1) as ebc:
        ...     ref = ebc.to_torch()
        ...     kjt = KeyedJaggedTensor(["a"], torch.tensor([0, 4]), lengths=torch.tensor([2]))
        ...     ref.embedding_bags["t"].mode, torch.allclose(ref(kjt).values(), ebc(kjt).values())
        ('mean', True)
        """
        weights = {c.name: self.table_weights(c.name).clone() for c in self._configs}
        return TorchEmbeddingBagCollection(self._configs, is_weighted=self.is_weighted, weights=weights)

    @classmethod
    def from_torch(cls, source: Any, tables: Sequence[Any] | None = None, **kwargs) -> EmbeddingBagCollection:
        """Build from a torch collection or from weights.

        ``source``: a :class:`TorchEmbeddingBagCollection` or torchrec ``EmbeddingBagCollection``
        (configs, weights and ``is_weighted`` are taken from it), or a dict of tensors
        ``{table name: weight}`` / ``{"embedding_bags.<table>.weight": weight}``; with a dict,
        ``tables`` gives the configs (default: one SUM fp32 table per entry, its feature
        named after it). ``kwargs`` go to the constructor.

        >>> ebc = EmbeddingBagCollection.from_torch({"t": torch.eye(3)}, backend="emulator", nr_dpus=1)
        >>> ebc(KeyedJaggedTensor(["t"], torch.tensor([0, 2]), lengths=torch.tensor([2]))).values().tolist()
        [[1.0, 0.0, 1.0]]
        >>> ebc.close()
        """
        if hasattr(source, "embedding_bag_configs") and hasattr(source, "embedding_bags"):
            configs = [EmbeddingBagConfig.coerce(c, i) for i, c in enumerate(source.embedding_bag_configs())]
            weights = {c.name: source.embedding_bags[c.name].weight.detach() for c in configs}
            if tables is not None:
                configs = _configs(tables)
            weighted = (
                source.is_weighted()
                if callable(getattr(source, "is_weighted", None))
                else getattr(source, "is_weighted", False)
            )
            kwargs.setdefault("is_weighted", bool(weighted))
            return cls(configs, weights=weights, **kwargs)
        if isinstance(source, Mapping):
            weights = {}
            for k, v in source.items():
                name = (
                    k[len("embedding_bags.") : -len(".weight")]
                    if k.startswith("embedding_bags.") and k.endswith(".weight")
                    else k
                )
                if k.startswith("embedding_bags.") and not k.endswith(".weight"):
                    continue  # quantisation parameters: the float view is what a dict carries
                weights[name] = torch.as_tensor(v).detach()
            if tables is None:
                tables = [EmbeddingBagConfig(n, int(w.shape[0]), int(w.shape[1])) for n, w in weights.items()]
            return cls(tables, weights=weights, **kwargs)
        raise TypeError(
            f"from_torch takes a torch/torchrec EmbeddingBagCollection or a dict of tensors, got {type(source).__name__}"
        )

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the DPUs."""
        self._tbe.close()

    def __enter__(self) -> EmbeddingBagCollection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extra_repr(self) -> str:
        lines = [
            f"{c.name}: {c.num_embeddings} x {c.embedding_dim} {c.row_format.value} {c.pooling.value} <- {c.feature_names}"
            for c in self._configs
        ]
        head = f"backend={self._tbe.backend}, dpus={self._tbe.plan.topology.nr_dpus}, dedup={self.dedup}, weighted={self.is_weighted}"
        return "\n".join([head] + lines)
