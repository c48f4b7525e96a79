"""The Python API: FBGEMM's table-batched embedding bags and ``torch.nn.EmbeddingBag`` on DPUs.

Two ``torch.nn.Module`` classes, both **inference only** (forward runs under
``torch.no_grad`` semantics: the output never requires grad, weights are fixed once the
module is built and live in DPU memory):

* :class:`TableBatchedEmbeddingBags` follows FBGEMM's TBE contract: ``T`` tables, a batch
  of ``B`` samples, ``indices`` of all lookups and ``offsets`` of length ``T*B+1``
  (table-major: bag ``t*B + b`` is sample ``b`` of table ``t``); the output is
  ``(B, sum of dims)``, tables side by side in order.
* :class:`EmbeddingBag` has ``torch.nn.EmbeddingBag``'s signature and semantics
  (1-D ``input`` + ``offsets`` or 2-D ``input``, ``include_last_offset``,
  ``padding_idx``, ``per_sample_weights`` with mode ``"sum"``) on a one-table TBE.

Both accept numpy arrays or torch tensors (int32/int64 indices and offsets, float
per-sample weights) and return the kind they got (a torch tensor comes back on the input's
device). Every batch is validated on the host, vectorised, before anything is sent to a
DPU (:func:`validate_tbe_inputs`); a rejected batch leaves the module ready for the next.

Example:
    >>> import numpy as np
    >>> from updlrm import TableBatchedEmbeddingBags, TableSpec
    >>> tbe = TableBatchedEmbeddingBags([TableSpec("a", 100, 8), TableSpec("b", 10, 4)],
    ...                                 backend="emulator", nr_dpus=4)
    >>> out = tbe(np.array([1, 2, 3, 9]), np.array([0, 2, 3, 3, 4]))  # T=2, B=2
    >>> out.shape, out.dtype
    ((2, 12), dtype('float32'))
    >>> bool(np.allclose(out[0, :8], tbe.weights(0)[[1, 2]].sum(0)))
    True
    >>> tbe.close()
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from updlrm.abi import check_nr_tasklets
from updlrm.hardware import DEFAULT_HARDWARE_PROFILE
from updlrm.plan import Plan, uniform_plan
from updlrm.quantize import dequantize_table, quantize_table
from updlrm.specs import BoundsCheckMode, PoolingMode, RowFormat, TableSpec, Topology
from updlrm.table_setup import (
    _as_table_spec,
    _default_nr_dpus,
    _init_table,
    _OutputKind,
    _tables_pooling,
)
from updlrm.validation import (
    IndexOutOfRangeError,
    InputTypeError,
    InvalidInputError,
    ValidatedBatch,
    _drop_lookups,
    _to_numpy,
    validate_tbe_inputs,
)

__all__ = [
    "TableBatchedEmbeddingBags",
    "EmbeddingBag",
    "ValidatedBatch",
    "InvalidInputError",
    "IndexOutOfRangeError",
    "InputTypeError",
    "validate_tbe_inputs",
    "quantize_table",
]


def _create_engine(plan: Plan, weights: list[np.ndarray], backend: str, nr_tasklets: int):
    from updlrm.host.engine import Engine

    return Engine(plan, weights, backend=backend, nr_tasklets=nr_tasklets)


# --------------------------------------------------------------------------------------
# modules


class TableBatchedEmbeddingBags(torch.nn.Module):
    """FBGEMM-style table-batched embedding bags executed on DPUs (inference only).

    Args:
        tables: ``TableSpec`` s (or ``(num_embeddings, embedding_dim)`` tuples, or
            torchrec ``EmbeddingBagConfig``-like objects). Names must be unique.
        plan: a :class:`~updlrm.plan.Plan`, a path to a saved plan, or None for
            ``uniform_plan(tables, Topology(nr_dpus), "row_wise",
            dpus_per_table=max(1, nr_dpus // len(tables)))``: each table on its share
            of the DPUs, so a bag's partial sums come back from few DPUs (spreading
            every table over all DPUs multiplies the DPU->CPU bytes by the fan-out).
            For a workload-aware plan use :mod:`updlrm.partitioner`.
        backend: ``"auto"`` | ``"hw"`` | ``"simulator"`` | ``"emulator"`` (see
            :mod:`updlrm.backends`); the choice and its reason are in ``.backend`` and
            ``.backend_reason``.
        pooling_mode: ``PoolingMode.SUM`` or ``MEAN`` (or ``"sum"``/``"mean"``) for every
            table; default: the ``pooling`` of ``EmbeddingBagConfig``-like tables, else SUM.
            Configs that disagree with it, or with each other, raise (one TBE pools one
            way, as FBGEMM's; :class:`updlrm.EmbeddingBagCollection` mixes SUM and MEAN).
        bounds_check_mode: see :func:`validate_tbe_inputs`; default FATAL.
        nr_tasklets: tasklets per DPU (>= 11 fill the DPU pipeline; at most 24).
        weights: one ``(rows, dim)`` array per table (numpy or torch), or None to draw
            them from ``seed`` uniformly in ``[weight_init_min, weight_init_max]``
            (default ``[-sqrt(1/rows), sqrt(1/rows)]``, torchrec's default).
        seed: seed of the default initialisation (per table: ``default_rng([seed, t])``).
        nr_dpus: DPUs of the default plan (default: 64 on the emulator, 4 on the SDK
            simulator, all DPUs on hardware). Ignored with an explicit plan.
        quantization: for INT32/INT8 tables, ``"fit"`` (default) fits each table's scale
            to its weights (``max|w|`` maps to 127 for INT8, 2**24 for INT32) and
            ``.tables`` then carry the fitted scales; ``"table"`` uses each
            ``TableSpec.scale`` as given (weights that do not fit raise).

    ``forward(indices, offsets, per_sample_weights=None, include_last_offset=True)``
    returns ``(B, sum of dims)`` float32 of the same kind as ``indices`` (numpy or torch).
    ``.last_stats`` holds the engine's ``BatchStats`` of the last batch (per-phase host
    times, bytes and lookups per DPU, ``.work()`` for :mod:`updlrm.perfmodel`), with the
    API's validation time in ``.extra["validate_s"]`` and removed lookups in
    ``.extra["dropped_lookups"]``.

    Threads: any number of threads may call one module; each gets exactly its serial
    result (their batches overlap stage by stage). :meth:`pipeline` and
    :meth:`forward_async` overlap one caller's batches (route+pack of the next and merge
    of the previous while the DPUs run one), bit-identical to ``forward``. Every call
    returns a new output, and ``last_stats`` / ``last_profile()`` are per thread: the
    calling thread's own last batch, never another thread's.

    >>> tbe = TableBatchedEmbeddingBags([(50, 4)], backend="emulator", nr_dpus=2, pooling_mode="mean")
    >>> out = tbe(torch.tensor([3, 4, 7]), torch.tensor([0, 2, 3]))
    >>> torch.allclose(out[1], torch.from_numpy(tbe.weights(0)[7]))
    True
    >>> tbe.close()
    """

    def __init__(
        self,
        tables: Sequence[TableSpec | tuple | Any] | None,
        *,
        plan: Plan | str | os.PathLike | None = None,
        backend: str = "auto",
        pooling_mode: PoolingMode | str | None = None,
        bounds_check_mode: BoundsCheckMode = BoundsCheckMode.FATAL,
        nr_tasklets: int = 16,
        weights: Sequence[Any] | None = None,
        seed: int = 0,
        nr_dpus: int | None = None,
        quantization: str = "fit",
        weight_init_min: float | None = None,
        weight_init_max: float | None = None,
    ) -> None:
        super().__init__()
        from updlrm.backends import resolve_backend

        if quantization not in ("fit", "table"):
            raise ValueError(f"quantization must be 'fit' or 'table', got {quantization!r}")
        if isinstance(plan, (str, os.PathLike)):
            plan = Plan.load(
                plan, tables=None if tables is None else [_as_table_spec(t, i) for i, t in enumerate(tables)]
            )
        if tables is None:
            if plan is None:
                raise ValueError("give the tables, a plan, or both")
            tables = plan.tables
        specs = [_as_table_spec(t, i) for i, t in enumerate(tables)]
        if not specs:
            raise ValueError("a TableBatchedEmbeddingBags needs at least one table")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"table names must be unique; repeated: {dup}")
        if plan is not None:
            plan.check_tables(specs)
            if nr_dpus is not None and nr_dpus != plan.topology.nr_dpus:
                raise ValueError(f"nr_dpus={nr_dpus} contradicts the plan's {plan.topology.nr_dpus} DPUs")
        check_nr_tasklets(nr_tasklets)
        self.pooling_mode = _tables_pooling(tables, pooling_mode)
        self.bounds_check_mode = BoundsCheckMode(bounds_check_mode)
        self.backend, self.backend_reason = resolve_backend(backend)
        self.nr_tasklets = nr_tasklets

        if weights is not None and len(weights) != len(specs):
            raise ValueError(f"weights has {len(weights)} tables, but there are {len(specs)} table specs")
        stored, fitted = [], []
        for t, spec in enumerate(specs):
            values = (
                _init_table(spec, seed, t, weight_init_min, weight_init_max)
                if weights is None
                else _to_numpy(weights[t], f"weights[{t}]")
            )
            q, new_spec = quantize_table(values, spec, fit_scale=quantization == "fit")
            stored.append(q)
            fitted.append(new_spec)
        if plan is None:
            n = nr_dpus if nr_dpus is not None else _default_nr_dpus(self.backend)
            plan = uniform_plan(fitted, Topology(nr_dpus=n), "row_wise", dpus_per_table=max(1, n // len(fitted)))
        elif fitted != specs:
            # Scales do not move rows: the same placement serves the fitted tables.
            plan = dataclasses.replace(plan, tables=fitted)
        plan.validate()
        self.tables: list[TableSpec] = fitted
        self.plan = plan
        self._stored = stored
        self.dims = [s.embedding_dim for s in fitted]
        self._thread_state = threading.local()
        self._engine = _create_engine(plan, stored, self.backend, nr_tasklets)

    # -- FBGEMM / torch conventions -------------------------------------------------

    @property
    def total_dim(self) -> int:
        return int(sum(self.dims))

    @property
    def last_stats(self):
        """``BatchStats`` of the calling thread's last batch on this module (None before it ran one)."""
        return getattr(self._thread_state, "stats", None)

    @last_stats.setter
    def last_stats(self, stats) -> None:
        self._thread_state.stats = stats

    def weights(self, t: int | str) -> np.ndarray:
        """Table ``t`` (index or name) as float32 values, dequantised for integer formats."""
        if isinstance(t, str):
            t = [s.name for s in self.tables].index(t)
        return dequantize_table(self._stored[t], self.tables[t])

    def split_embedding_weights(self) -> list[torch.Tensor]:
        """Every table's dequantised weights as torch tensors (FBGEMM's method name)."""
        return [torch.from_numpy(self.weights(t)) for t in range(len(self.tables))]

    def forward(self, indices, offsets, per_sample_weights=None, include_last_offset: bool = True):
        """Pool one batch; see the class docstring for the layout."""
        kind = _OutputKind(indices, offsets)
        start = time.perf_counter()
        batch = validate_tbe_inputs(
            self.tables,
            indices,
            offsets,
            per_sample_weights,
            pooling_mode=self.pooling_mode,
            bounds_check_mode=self.bounds_check_mode,
            include_last_offset=include_last_offset,
        )
        return kind.wrap(self._run(batch, time.perf_counter() - start))

    def _validate(self, indices, offsets, per_sample_weights, include_last_offset):
        kind = _OutputKind(indices, offsets)
        start = time.perf_counter()
        batch = validate_tbe_inputs(
            self.tables,
            indices,
            offsets,
            per_sample_weights,
            pooling_mode=self.pooling_mode,
            bounds_check_mode=self.bounds_check_mode,
            include_last_offset=include_last_offset,
        )
        return kind, batch, time.perf_counter() - start

    def _open_engine(self):
        engine = self._engine  # one read: another thread may close the module meanwhile
        if engine is None:
            raise RuntimeError("this module was closed; build a new one")
        return engine

    def forward_async(self, indices, offsets, per_sample_weights=None, include_last_offset: bool = True) -> Future:
        """Queue one batch; a ``concurrent.futures.Future`` of what :meth:`forward` returns.

        Queued batches (from any threads) run overlapped: while the DPUs run one, the host
        merges the previous and routes the next (``Engine.run_async``). Results are
        bit-identical to ``forward``; input errors raise here, errors of the run (a DPU
        fault, an integer sum that could overflow) are the future's. ``last_stats`` is
        not updated. ``close`` runs the queued batches first.

        >>> with TableBatchedEmbeddingBags([(50, 4)], backend="emulator", nr_dpus=2) as tbe:
        ...     futures = [tbe.forward_async(torch.tensor([k, k]), torch.tensor([0, 2])) for k in range(3)]
        ...     all(torch.equal(f.result(), tbe(torch.tensor([k, k]), torch.tensor([0, 2])))
        ...         for k, f in enumerate(futures))
        True
        """
        kind, batch, _ = self._validate(indices, offsets, per_sample_weights, include_last_offset)
        inner = self._open_engine().run_async(batch.indices, batch.offsets, batch.per_sample_weights, self.pooling_mode)
        outer: Future = Future()

        def deliver(done: Future) -> None:
            if not outer.set_running_or_notify_cancel():
                return
            error = done.exception()
            if error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(kind.wrap(done.result()[0]))

        inner.add_done_callback(deliver)
        return outer

    def pipeline(self, batches, include_last_offset: bool = True):
        """Pool an iterable of batches overlapped; yields each output in order.

        Items are ``(indices, offsets)`` or ``(indices, offsets, per_sample_weights)``. While
        the DPUs pool batch i, the host merges batch i-1 and routes batch i+1. Outputs are
        bit-identical to :meth:`forward`'s; a bad batch raises at its turn, after the
        outputs before it. Each output's ``BatchStats`` is in ``last_stats`` of the
        iterating thread when it is yielded.

        >>> with TableBatchedEmbeddingBags([(50, 4)], backend="emulator", nr_dpus=2) as tbe:
        ...     batches = [(torch.tensor([k, 49]), torch.tensor([0, 1, 2])) for k in range(5)]
        ...     outs = list(tbe.pipeline(batches))
        ...     all(torch.equal(o, tbe(*b)) for o, b in zip(outs, batches))
        True
        """
        engine = self._open_engine()
        kinds: list = []

        def checked():
            for item in batches:
                try:
                    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                        raise InvalidInputError(
                            "each batch must be (indices, offsets) or (indices, offsets, per_sample_weights)"
                        )
                    indices, offsets = item[0], item[1]
                    weights = item[2] if len(item) == 3 else None
                    kind, batch, validate_s = self._validate(indices, offsets, weights, include_last_offset)
                except Exception as error:
                    kinds.append(None)
                    yield error
                    continue
                kinds.append((kind, validate_s, batch.dropped))
                yield batch.indices, batch.offsets, batch.per_sample_weights, self.pooling_mode

        for k, (out, stats) in enumerate(engine.pipeline(checked())):
            kind, validate_s, dropped = kinds[k]
            stats.extra["validate_s"] = validate_s
            stats.extra["dropped_lookups"] = dropped
            self.last_stats = stats
            yield kind.wrap(out)

    def _run(self, batch: ValidatedBatch, validate_s: float) -> np.ndarray:
        engine = self._engine  # one read: another thread may close the module meanwhile
        if engine is None:
            raise RuntimeError("this module was closed; build a new one")
        if batch.batch_size == 0:
            self.last_stats = None
            return np.zeros((0, self.total_dim), dtype=np.float32)
        out, stats = engine.run(batch.indices, batch.offsets, batch.per_sample_weights, self.pooling_mode)
        stats.extra["validate_s"] = validate_s
        stats.extra["dropped_lookups"] = batch.dropped
        self.last_stats = stats
        return out

    def last_profile(self, profile: str = DEFAULT_HARDWARE_PROFILE):
        """Measured host phases and modeled UPMEM phases of the calling thread's last batch.

        See :func:`updlrm.profile.profile_batch`; ``profile`` names a
        :data:`updlrm.perfmodel.PROFILES` entry.

        >>> with TableBatchedEmbeddingBags([(50, 4)], backend="emulator", nr_dpus=2) as tbe:
        ...     _ = tbe(np.array([1, 2, 3]), np.array([0, 2, 3]))
        ...     tbe.last_profile().modeled.kernel_s > 0
        True
        """
        from updlrm.profile import profile_batch

        if self.last_stats is None:
            raise RuntimeError("no batch has run yet")
        return profile_batch(self.last_stats, profile)

    def close(self) -> None:
        """Free the DPUs (the module cannot run afterwards)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def __enter__(self) -> TableBatchedEmbeddingBags:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extra_repr(self) -> str:
        return (
            f"tables={len(self.tables)}, total_dim={self.total_dim}, pooling={self.pooling_mode.name}, "
            f"backend={self.backend}, dpus={self.plan.topology.nr_dpus}, tasklets={self.nr_tasklets}"
        )


class EmbeddingBag(torch.nn.Module):
    """``torch.nn.EmbeddingBag`` on DPUs: same arguments and results, inference only.

    ``mode`` is ``"sum"`` or ``"mean"`` (torch's default ``"mean"``); ``"max"`` raises
    NotImplementedError. ``padding_idx`` lookups are excluded from the bag (and from a
    mean's count), and the padding row is zero, as in torch. ``max_norm`` is not
    supported; ``scale_grad_by_freq`` and ``sparse`` only affect gradients and are
    accepted for compatibility. ``_weight`` gives the table; otherwise it is drawn from
    ``seed`` like torch's default N(0, 1) init.

    Differences from torch: ``offsets`` with ``include_last_offset=True`` must end at
    ``len(input)`` (torch ignores indices past the last offset).

    >>> bag = EmbeddingBag(10, 3, mode="sum", backend="emulator", nr_dpus=2)
    >>> x = torch.tensor([[1, 2], [4, 5]])
    >>> ref = torch.nn.functional.embedding_bag(x, bag.weight, mode="sum")
    >>> torch.allclose(bag(x), ref)
    True
    >>> bag.close()
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight: Any = None,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
        device: Any = None,
        dtype: Any = None,
        *,
        backend: str = "auto",
        row_format: RowFormat | str = RowFormat.FP32,
        nr_dpus: int | None = None,
        nr_tasklets: int = 16,
        plan: Plan | str | os.PathLike | None = None,
        seed: int = 0,
        bounds_check_mode: BoundsCheckMode = BoundsCheckMode.FATAL,
        name: str = "embedding_bag",
    ) -> None:
        super().__init__()
        if mode == "max":
            raise NotImplementedError("mode='max' is not supported on DPUs; supported modes: 'sum', 'mean'")
        if mode not in ("sum", "mean"):
            raise ValueError(f"mode={mode!r} is not supported on DPUs; supported modes: 'sum', 'mean'")
        if max_norm is not None:
            raise NotImplementedError(
                "max_norm renormalises rows during lookup, which updlrm does not do; pass max_norm=None"
            )
        if dtype is not None and dtype != torch.float32:
            raise NotImplementedError(
                f"dtype={dtype} is not supported; updlrm computes in float32 (use row_format for int8/int32 storage)"
            )
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx must be within [-{num_embeddings}, {num_embeddings}), got {padding_idx}")
            padding_idx = padding_idx % num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.mode, self.include_last_offset, self.padding_idx = mode, include_last_offset, padding_idx
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = (
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
        )
        spec = TableSpec(name, num_embeddings, embedding_dim, row_format=RowFormat(row_format))
        if _weight is None:
            # torch.nn.EmbeddingBag.reset_parameters: normal_(0, 1), padding row zeroed.
            gen = torch.Generator().manual_seed(seed)
            values = torch.randn(num_embeddings, embedding_dim, generator=gen).numpy()
        else:
            values = _to_numpy(_weight, "_weight")
            if values.shape != (num_embeddings, embedding_dim):
                raise ValueError(
                    f"_weight has shape {tuple(values.shape)}, expected ({num_embeddings}, {embedding_dim})"
                )
        if padding_idx is not None and values.dtype.kind == "f":
            values = np.array(values, dtype=np.float32, copy=True)
            values[padding_idx] = 0.0
        self.tbe = TableBatchedEmbeddingBags(
            [spec],
            plan=plan,
            backend=backend,
            pooling_mode=mode,
            bounds_check_mode=bounds_check_mode,
            nr_tasklets=nr_tasklets,
            weights=[values],
            nr_dpus=nr_dpus,
        )

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, **kwargs) -> EmbeddingBag:
        """Build from a ``(num_embeddings, embedding_dim)`` tensor, as torch's ``from_pretrained``.

        >>> bag = EmbeddingBag.from_pretrained(torch.eye(3), mode="sum", backend="emulator", nr_dpus=1)
        >>> bag(torch.tensor([[0, 2]])).tolist()
        [[1.0, 0.0, 1.0]]
        >>> bag.close()
        """
        if not freeze:
            raise NotImplementedError("updlrm modules are inference only; use freeze=True")
        rows, dim = tuple(embeddings.shape)
        return cls(rows, dim, _weight=embeddings, **kwargs)

    @property
    def weight(self) -> torch.Tensor:
        """The (dequantised) table as a float32 tensor, like ``torch.nn.EmbeddingBag.weight``."""
        return torch.from_numpy(self.tbe.weights(0))

    @property
    def last_stats(self):
        return self.tbe.last_stats

    @property
    def backend(self) -> str:
        return self.tbe.backend

    def forward(self, input, offsets=None, per_sample_weights=None):
        """Pool bags of ``input`` like ``torch.nn.EmbeddingBag.forward``."""
        kind = _OutputKind(input, offsets)
        start = time.perf_counter()
        x = _to_numpy(input, "input")
        if per_sample_weights is not None and self.mode != "sum":
            raise InvalidInputError(
                f"per_sample_weights are only supported with mode='sum' (as in torch.nn.EmbeddingBag), got mode={self.mode!r}"
            )
        w = None if per_sample_weights is None else _to_numpy(per_sample_weights, "per_sample_weights")
        if x.ndim == 2:
            if offsets is not None:
                raise InvalidInputError("offsets must be None when input is 2-D (each row of input is one bag)")
            if w is not None:
                if w.shape != x.shape:
                    raise InputTypeError(
                        f"per_sample_weights must have the input's shape {tuple(x.shape)}, got {tuple(w.shape)}"
                    )
                w = w.reshape(-1)
            bags, length = x.shape
            off = np.arange(bags + 1, dtype=np.int64) * length
            x = x.reshape(-1)
            last = True
        elif x.ndim == 1:
            if offsets is None:
                raise InvalidInputError("offsets are required with a 1-D input (give the start of every bag)")
            off = _to_numpy(offsets, "offsets")
            last = self.include_last_offset
        else:
            raise InputTypeError(f"input must be 1-D (with offsets) or 2-D (bags x length), got shape {tuple(x.shape)}")
        batch = validate_tbe_inputs(
            self.tbe.tables,
            x,
            off,
            w,
            pooling_mode=self.tbe.pooling_mode,
            bounds_check_mode=self.tbe.bounds_check_mode,
            include_last_offset=last,
        )
        if self.padding_idx is not None:
            _drop_lookups(batch, batch.indices != self.padding_idx)
        return kind.wrap(self.tbe._run(batch, time.perf_counter() - start))

    def close(self) -> None:
        """Free the DPUs."""
        self.tbe.close()

    def __enter__(self) -> EmbeddingBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.include_last_offset:
            s += ", include_last_offset=True"
        return s + f", backend={self.tbe.backend}"
