"""Run a placement plan's embedding bags on DPUs: the Python face of the C host runtime.

``Engine`` builds (once, cached) the DPU kernel ``dpu_kernels/embedding_bag.c`` and the
C host runtime (``host/eb_*.c``) for a backend, loads a plan's tables into MRAM, and
runs TBE-layout batches. All per-lookup work (routing, packing, merging) is C; Python
only passes pointers. See host/README.md for the data flow and summation order.

Backends: ``"emulator"`` (built in; gcc), ``"simulator"`` (the UPMEM SDK's functional
simulator) and ``"hw"`` (real DPUs); the SDK backends need the SDK (``UPMEM_HOME`` or
``dpu-pkg-config`` on ``PATH``). ``"auto"`` picks as :func:`updlrm.backends.resolve_backend`.

Example:
    >>> import numpy as np
    >>> from updlrm.specs import TableSpec, Topology, PoolingMode
    >>> from updlrm.plan import uniform_plan
    >>> tables = [TableSpec("a", 100, 8), TableSpec("b", 50, 4)]
    >>> plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    >>> rng = np.random.default_rng(0)
    >>> weights = [rng.standard_normal((t.num_embeddings, t.embedding_dim), dtype=np.float32) for t in tables]
    >>> indices = np.array([1, 2, 99, 0, 49, 7], dtype=np.int64)
    >>> offsets = np.array([0, 2, 3, 5, 6], dtype=np.int64)      # T=2 tables x B=2 bags
    >>> with Engine(plan, weights) as engine:
    ...     out, stats = engine.run(indices, offsets, None, PoolingMode.SUM)
    >>> out.shape, bool(np.allclose(out[0, :8], weights[0][1] + weights[0][2]))
    ((2, 12), True)
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from updlrm.host.alloc import alloc_profile, resolve_backend
from updlrm.host.batch_stats import BatchStats, read_slot_stats

# The build half lives in host/build.py, the errors in host/errors.py, the pipelined
# stream in host/pipeline.py; what users import stays importable from here.
from updlrm.host.build import EngineError, _load_library, build, cache_root
from updlrm.host.errors import (
    AccumulatorOverflowError,
    DpuAllocationError,
    DpuFaultError,
    EngineBusyError,
    LaunchTimeoutError,
)
from updlrm.host.outputs import output_array
from updlrm.host.pipeline import Result, _Job, pipelined, submit
from updlrm.plan import Plan
from updlrm.specs import PoolingMode

__all__ = [
    "Engine",
    "BatchStats",
    "build",
    "cache_root",
    "EngineError",
    "AccumulatorOverflowError",
    "EngineBusyError",
    "DpuAllocationError",
    "DpuFaultError",
    "LaunchTimeoutError",
]


# ---- the engine --------------------------------------------------------------------

_DRY = "this engine is dry (it was made with weights=None): use Engine.dry_run, or make it with the tables' weights"


@dataclass(eq=False)
class _Batch:
    """One batch on its way through the stages: its arrays stay referenced until it is finished."""

    indices: np.ndarray
    offsets: np.ndarray
    per_sample_weights: np.ndarray | None
    pooling: PoolingMode
    output: np.ndarray
    slot: int = -1
    launched: bool = False


class Engine:
    """A plan's tables resident in DPU MRAM, ready to run TBE-layout batches.

    ``weights[t]`` is table ``t``'s ``(num_embeddings, embedding_dim)`` array in its row
    format: float32 for FP32, int32 / int8 quantised values for INT32 / INT8 (the
    table's ``scale`` dequantises them). Only host-cached rows are kept on the host;
    the arrays are not referenced after construction. ``weights=None`` makes a dry
    engine on the emulator: nothing is loaded on the DPUs, and :meth:`dry_run` runs a
    batch's host phases as :meth:`run` would (route+pack, the host-cached rows, as zeros,
    and the merge of zero partial sums in place of the DPUs') and reports their times;
    running raises. It needs host memory for the routing tables and the host-cached rows
    only, so it measures the host side of plans whose rows no host could hold.
    ``host_threads`` (default: the
    CPU count) lets route+pack and the merge of big batches use that many threads (16
    at most, fewer when the batch is too small to share); results do not depend on it.

    Threads: any number of threads may share one engine. Up to three batches are in
    flight, one per stage (route+pack, on the DPUs, merge), each in its own slot of
    buffers, so concurrent ``run`` callers overlap and each gets exactly its serial
    result, in a fresh output array and a fresh ``BatchStats``. :meth:`pipeline` and
    :meth:`run_async` overlap the batches of one caller the same way (host/README.md,
    "Pipelining"). The C library refuses a concurrent raw ``eb_engine_run``
    (:class:`EngineBusyError`) instead of corrupting memory. ``close`` waits for the
    batches in flight.

    >>> import numpy as np
    >>> from updlrm.specs import TableSpec, Topology, PoolingMode
    >>> from updlrm.plan import uniform_plan
    >>> plan = uniform_plan([TableSpec("t", 10, 4)], Topology(nr_dpus=2), "row_wise")
    >>> w = np.arange(40, dtype=np.float32).reshape(10, 4)
    >>> with Engine(plan, [w]) as e:
    ...     out, _ = e.run(np.array([0, 9], np.int64), np.array([0, 2], np.int64), None, PoolingMode.MEAN)
    >>> out.tolist()
    [[18.0, 19.0, 20.0, 21.0]]
    """

    def __init__(
        self,
        plan: Plan,
        weights,
        *,
        backend: str = "emulator",
        nr_tasklets: int = 16,
        host_threads: int | None = None,
        launch_timeout: float | None = None,
    ) -> None:
        self.plan = plan
        #: Made with ``weights=None``: batches run their host phases only (:meth:`dry_run`).
        self.dry = weights is None
        # A dry engine never uses its DPUs: the built-in emulator allocates them lazily.
        self.backend = "emulator" if self.dry else resolve_backend(backend)
        self.nr_tasklets = int(nr_tasklets)
        self.launch_timeout = launch_timeout
        profile = alloc_profile(self.backend, launch_timeout, plan.topology.dpus_per_rank)
        self._engine = None
        # Batches in flight: one per slot (C: EB_NR_SLOTS), one routing at a time, one on
        # the DPUs at a time (host/README.md, "Threads" and "Pipelining").
        self._route_lock = threading.Lock()
        self._dpu_lock = threading.Lock()
        self._slots_changed = threading.Condition()
        self._free_slots: list[int] = []
        self._closing = False
        self._queue: deque[_Job] = deque()  # run_async's batches, in order
        self._queue_lock = threading.Lock()
        self._driver: threading.Thread | None = None
        self._pipelines: weakref.WeakSet = weakref.WeakSet()
        plan.validate()
        tables = plan.tables
        if weights is not None and len(weights) != len(tables):
            raise EngineError(f"got {len(weights)} weight arrays for {len(tables)} tables")
        arrays: list[np.ndarray] | None = None if weights is None else []
        for spec, w in zip(tables, weights or ()):
            w = np.asarray(w)
            dtype = spec.row_format.dtype
            if w.dtype != dtype:
                raise EngineError(
                    f"table {spec.name}: weights are {w.dtype}, its {spec.row_format.value} rows need {np.dtype(dtype)}"
                )
            if w.shape != (spec.num_embeddings, spec.embedding_dim):
                raise EngineError(
                    f"table {spec.name}: weights have shape {w.shape}, expected {(spec.num_embeddings, spec.embedding_dim)}"
                )
            if w.strides[1] != w.itemsize or w.strides[0] < 0:
                w = np.ascontiguousarray(w)
            arrays.append(w)  # type: ignore[union-attr]
        self.dims = [t.embedding_dim for t in tables]
        self.total_dim = int(sum(self.dims))

        kernel, library = build(self.backend, self.nr_tasklets)
        self._ffi, self._lib = _load_library(library)
        ffi, lib = self._ffi, self._lib
        error = ffi.new("char[]", 1024)
        failure_kind = ffi.new("int32_t *")
        engine = lib.eb_engine_create(
            str(kernel).encode(),
            profile.encode(),
            plan.topology.nr_dpus,
            self.nr_tasklets,
            plan.topology.mram_bytes_per_dpu,
            len(tables),
            len(plan.shards),
            error,
            1024,
            failure_kind,
        )
        if engine == ffi.NULL:
            kind = DpuAllocationError if failure_kind[0] == lib.EB_FAILURE_ALLOCATION else EngineError
            raise kind(ffi.string(error).decode())
        self._engine = engine
        # Route+pack and merge split big batches over up to this many threads; None: as many as the CPUs.
        lib.eb_engine_set_host_threads(engine, max(1, int(host_threads or os.cpu_count() or 1)))
        try:
            self._describe(arrays)
            for t, spec in enumerate(tables):  # names for the C runtime's messages
                self._check(lib.eb_engine_name_table(engine, t, spec.name.encode()))
            if arrays is None:
                self._check(lib.eb_engine_load(engine, ffi.NULL, ffi.NULL))
            else:
                pointers = ffi.new("void *[]", [ffi.from_buffer(a) for a in arrays])
                strides = ffi.new("int64_t[]", [a.strides[0] for a in arrays])
                self._check(lib.eb_engine_load(engine, ffi.cast("const void **", pointers), strides))
        except BaseException:
            self.close()
            raise
        self._free_slots = list(range(lib.EB_NR_SLOTS))
        self.nr_dpus = int(lib.eb_engine_nr_dpus(engine))
        self.nr_ranks = int(lib.eb_engine_nr_ranks(engine))
        self.static_bytes = int(lib.eb_engine_static_bytes(engine))
        #: Host memory of the routing tables (row blocks, exception tables, per-row entries).
        self.routing_bytes = int(lib.eb_engine_routing_bytes(engine))
        #: Column slices routed as an earlier slice of their table (same rows on every lane):
        #: each batch copies that slice's records instead of routing its lookups again.
        self.follower_slices = int(lib.eb_engine_nr_followers(engine))
        #: DPUs whose inputs equal an earlier DPU's of their rank (all their shards are lanes
        #: of follower slices, at the same places): each batch sends that DPU's buffer to
        #: them, with neither routing nor packing of their own.
        self.mirror_dpus = int(lib.eb_engine_nr_mirrors(engine))

    # -- setup -------------------------------------------------------------------------

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise self._error()

    def _error(self) -> EngineError:
        """The exception for the engine's last failed setup call or eb_engine_run."""
        lib = self._lib
        message = self._ffi.string(lib.eb_engine_error(self._engine)).decode(errors="replace")
        return self._failure(message, lib.eb_engine_failure(self._engine), lib.eb_engine_failed_dpus(self._engine))

    def _failure(self, message: str, failure, listed) -> EngineError:
        """The exception for one failure: its text, and for DPU failures which DPUs."""
        ffi, lib = self._ffi, self._lib
        if failure.kind not in (lib.EB_FAILURE_DPU_FAULT, lib.EB_FAILURE_TIMEOUT):
            return EngineError(message)
        kind = LaunchTimeoutError if failure.kind == lib.EB_FAILURE_TIMEOUT else DpuFaultError
        return kind(
            message,
            dpu=int(failure.dpu) if failure.dpu >= 0 else None,
            tasklet=int(failure.tasklet) if failure.tasklet >= 0 else None,
            cause=ffi.string(failure.cause).decode(errors="replace"),
            dpus=tuple(int(listed[k]) for k in range(failure.nr_dpus)),
            recovered=bool(failure.recovered),
        )

    def _ptr(self, ctype: str, array: np.ndarray):
        if array.size == 0:
            return self._ffi.NULL
        return self._ffi.cast(ctype, self._ffi.from_buffer(array))

    def _describe(self, arrays: list[np.ndarray] | None) -> None:
        # Tables and host-cached rows, then shards, then column slices: the C side builds
        # each slice's routing from the shards and host rows already described.
        plan, lib, engine = self.plan, self._lib, self._engine
        for t, spec in enumerate(plan.tables):
            self._check(
                lib.eb_engine_set_table(
                    engine, t, spec.num_embeddings, spec.embedding_dim, spec.row_format.abi_code, float(spec.scale)
                )
            )
            host = np.unique(np.asarray(plan.host_rows.get(t, np.empty(0)), dtype=np.int64))
            if host.size:
                # A dry engine needs which rows are host-cached, not their values (it sums zeros).
                rows = None if arrays is None else np.ascontiguousarray(arrays[t][host])  # alive until the call returns
                values = self._ffi.NULL if rows is None else self._ptr("void *", rows)
                self._check(lib.eb_engine_set_host_rows(engine, t, host.size, self._ptr("int64_t *", host), values))
        for i, s in enumerate(plan.shards):
            if isinstance(s.rows, range):
                self._check(
                    lib.eb_engine_set_shard(
                        engine, i, s.table, s.dpu, s.col_start, s.col_stop, s.rows.start, len(s.rows), self._ffi.NULL
                    )
                )
            else:
                ids = np.ascontiguousarray(s.rows, dtype=np.int64)
                self._check(
                    lib.eb_engine_set_shard(
                        engine, i, s.table, s.dpu, s.col_start, s.col_stop, 0, ids.size, self._ptr("int64_t *", ids)
                    )
                )
        for t in range(len(plan.tables)):
            splits = plan.col_splits(t)
            for lo, hi in zip(splits[:-1], splits[1:]):
                self._check(lib.eb_engine_add_slice(engine, t, lo, hi))

    # -- running -----------------------------------------------------------------------

    def _batch(self, indices, offsets, per_sample_weights, pooling, *, dry: bool = False, out=None) -> _Batch:
        """Python-side checks and the output array of one batch (no engine state touched)."""
        if self.dry != dry:
            raise EngineError(
                _DRY if self.dry else "Engine.dry_run is for dry engines; make one with Engine(plan, None)"
            )
        pooling = PoolingMode(pooling)
        if pooling == PoolingMode.NONE:
            raise NotImplementedError("the engine pools bags; PoolingMode.NONE (sequence embeddings) is not supported")
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if indices.ndim != 1 or offsets.ndim != 1:
            raise ValueError("indices and offsets must be one-dimensional")
        nr_tables = len(self.plan.tables)
        if offsets.size < 1 or (offsets.size - 1) % nr_tables:
            raise ValueError(f"offsets has {offsets.size} entries; expected T*B+1 with T={nr_tables}")
        batch = (offsets.size - 1) // nr_tables
        if per_sample_weights is not None:
            per_sample_weights = np.ascontiguousarray(per_sample_weights, dtype=np.float32)
            if per_sample_weights.shape != indices.shape:
                raise ValueError(f"per_sample_weights has shape {per_sample_weights.shape}, indices {indices.shape}")
        return _Batch(indices, offsets, per_sample_weights, pooling, output_array(out, batch, self.total_dim))

    def run(self, indices, offsets, per_sample_weights=None, pooling: PoolingMode = PoolingMode.SUM, *, out=None):
        """Embedding-bag sums (or means) of one batch in FBGEMM TBE layout.

        ``indices`` int64 (N,), ``offsets`` int64 (T*B+1,) with bag ``t*B + b`` =
        ``indices[offsets[t*B+b]:offsets[t*B+b+1]]``, ``per_sample_weights`` float32 (N,)
        or None. Returns ``(output float32 (B, sum of dims), BatchStats)``; table ``t``
        fills columns ``sum(dims[:t]) .. + dims[t]``. Empty bags give zeros. ``out``, a
        C-contiguous float32 array of that shape, receives the output instead of a fresh
        array (a serving loop reuses one; not while another batch writes it).

        Batches of several threads overlap stage by stage (one routes while another's
        runs on the DPUs and a third merges); each gets its serial result.
        :meth:`pipeline` and :meth:`run_async` overlap the batches of one caller.

        A DPU fault during the batch (or a dead emulator worker) raises
        :class:`DpuFaultError` naming the DPU, its tasklet where known, and the cause; a
        launch longer than the engine's ``launch_timeout`` seconds (emulator only; default
        none, ``UPDLRM_EMU_TIMEOUT`` also sets it) raises :class:`LaunchTimeoutError`
        naming the DPUs still running. Either way the engine reloads the kernel and keeps
        its tables, so the next batch is right (in a pipeline, the batches prepared
        meanwhile too). (No DPUs at construction: :class:`DpuAllocationError` with the
        DPU library's reason.)

        >>> import numpy as np
        >>> from updlrm.specs import TableSpec, Topology
        >>> from updlrm.plan import uniform_plan
        >>> plan = uniform_plan([TableSpec("t", 4, 2)], Topology(nr_dpus=1), "table_wise")
        >>> with Engine(plan, [np.ones((4, 2), np.float32)]) as e:
        ...     out, stats = e.run(np.array([3, 3]), np.array([0, 0, 2]), np.array([0.5, 2.0], np.float32))
        >>> out.tolist(), int(stats.lookups.sum())
        ([[0.0, 0.0], [2.5, 2.5]], 2)
        """
        batch = self._batch(indices, offsets, per_sample_weights, pooling, out=out)
        slot = self._take_slots(1)[0]
        try:
            self._prepare(batch, slot)
            with self._dpu_lock:
                try:
                    self._launch(batch)
                    self._collect(batch)
                finally:
                    if batch.launched:  # interrupted (e.g. KeyboardInterrupt) between the two
                        self._discard(batch)
            return self._finish(batch)
        finally:
            self._lib.eb_engine_discard(self._engine, slot)  # nothing to do unless interrupted
            self._give_slots([slot])

    def dry_run(
        self, indices, offsets, per_sample_weights=None, pooling: PoolingMode = PoolingMode.SUM, *, out=None
    ) -> BatchStats:
        """One batch's host phases as :meth:`run` would run them, without DPUs (dry engines).

        The batch is routed and packed, the host sums its cached rows (zeros) as during a
        launch, and merges zero partial sums where the DPUs' would be (a batch too big for
        one launch in its parts). Returns its ``BatchStats``: ``route_s``,
        ``host_cache_s`` and ``merge_s`` are the host's real times, ``route_parts`` and
        ``parallel_routes`` how route+pack was shared among host threads, the per-DPU
        counts those of ``run``; push, launch and pull are zero. Inputs are checked as
        :meth:`run` checks them, except integer sums (the engine has no rows); ``out`` as
        in :meth:`run` (it gets zeros).

        >>> import numpy as np
        >>> from updlrm.specs import TableSpec, Topology
        >>> from updlrm.plan import uniform_plan
        >>> plan = uniform_plan([TableSpec("t", 1000, 8)], Topology(nr_dpus=4), "row_wise")
        >>> with Engine(plan, None) as e:
        ...     stats = e.dry_run(np.arange(64) % 1000, np.array([0, 32, 64]))
        >>> stats.nr_lookups, stats.nr_launches, stats.route_s > 0, stats.merge_s > 0
        (64, 1, True, True)
        """
        batch = self._batch(indices, offsets, per_sample_weights, pooling, dry=True, out=out)
        slot = self._take_slots(1)[0]
        try:
            self._prepare(batch, slot)
            with self._dpu_lock:  # a split batch runs its parts in the launch stage
                self._launch(batch)
                self._collect(batch)
            return self._finish(batch)[1]
        finally:
            self._lib.eb_engine_discard(self._engine, slot)
            batch.launched = False
            self._give_slots([slot])

    # The stages of one batch; each raises the batch's own error (its slot's text).
    # Locks: _route_lock around prepare (the C routing scratch), _dpu_lock from launch to
    # collect (one batch on the DPUs). Nobody waits for a slot while holding either.

    def _prepare(self, batch: _Batch, slot: int) -> None:
        batch.slot = slot
        weights = self._ffi.NULL if batch.per_sample_weights is None else self._ptr("float *", batch.per_sample_weights)
        with self._route_lock:
            rc = self._lib.eb_engine_prepare(
                self._engine,
                slot,
                self._ptr("int64_t *", batch.indices),
                batch.indices.size,
                self._ptr("int64_t *", batch.offsets),
                batch.offsets.size,
                weights,
                int(batch.pooling),
                self._ptr("float *", batch.output),
            )
        self._stage_check(rc, batch)

    def _launch(self, batch: _Batch) -> None:
        """Starts the batch on the DPUs (the caller holds _dpu_lock)."""
        rc = self._lib.eb_engine_launch(self._engine, batch.slot)
        if rc == self._lib.EB_RUN_BUSY:  # a batch too big for one launch routes its parts here
            with self._route_lock:
                rc = self._lib.eb_engine_launch(self._engine, batch.slot)
        self._stage_check(rc, batch)
        batch.launched = True

    def _collect(self, batch: _Batch) -> None:
        """Waits for the DPUs (the caller holds _dpu_lock); a split batch was collected by its launch."""
        if not batch.launched:
            return
        batch.launched = False
        self._stage_check(self._lib.eb_engine_collect(self._engine, batch.slot), batch)

    def _finish(self, batch: _Batch):
        self._stage_check(self._lib.eb_engine_finish(self._engine, batch.slot), batch)
        return batch.output, self._stats(batch.slot, batch.per_sample_weights is not None)

    def _stage_check(self, rc: int, batch: _Batch) -> None:
        if rc == 0:
            return
        lib = self._lib
        if rc in (lib.EB_RUN_BUSY, lib.EB_RUN_BAD_SLOT):  # only a caller bypassing the locks gets here
            raise EngineBusyError(
                f"slot {batch.slot} or its stage is taken (eb_engine_* code {rc}); "
                "run batches through Engine.run / run_async / pipeline, which queue"
            )
        message = self._ffi.string(lib.eb_engine_slot_error(self._engine, batch.slot)).decode(errors="replace")
        if rc == lib.EB_RUN_INEXACT:
            raise AccumulatorOverflowError(message)
        raise self._failure(
            message,
            lib.eb_engine_slot_failure(self._engine, batch.slot),
            lib.eb_engine_slot_failed_dpus(self._engine, batch.slot),
        )

    # -- slots ---------------------------------------------------------------------------

    def _take_slots(self, count: int, *, closing_ok: bool = False) -> list[int]:
        """Waits for a free slot and takes up to `count` (never holding a lock or slot).
        The run_async driver may still take them while the engine closes: close waits for its queue."""
        with self._slots_changed:
            while True:
                if self._engine is None or (self._closing and not closing_ok):
                    raise EngineError("the engine is closed")
                if self._free_slots:
                    taken, self._free_slots = self._free_slots[:count], self._free_slots[count:]
                    return taken
                self._slots_changed.wait()

    def _give_slots(self, slots) -> None:
        with self._slots_changed:
            self._free_slots.extend(slots)
            self._slots_changed.notify_all()

    def _discard(self, batch: _Batch) -> None:
        """Gives a batch's slot up whatever its stage; a launched batch's caller holds _dpu_lock
        (the C call waits for the launch to end)."""
        self._lib.eb_engine_discard(self._engine, batch.slot)
        batch.launched = False

    # -- pipelining (host/pipeline.py orders the stages) -----------------------------------

    def pipeline(self, batches: Iterable[Any], pooling: PoolingMode = PoolingMode.SUM) -> Iterator[Result]:
        """Runs an iterable of batches overlapped and yields ``(output, BatchStats)`` in order.

        Each item is ``(indices, offsets)``, ``(indices, offsets, per_sample_weights)`` or
        ``(indices, offsets, per_sample_weights, pooling)`` (``pooling`` is the default); an
        exception instance as an item is raised at its turn (for wrappers that check items).
        While the DPUs run batch i, the calling thread merges batch i-1 and routes batch
        i+1. No lock is held while the generator is suspended (the batch on the DPUs is
        collected before each yield), so the loop body may use the engine too; it holds
        two slots until it is exhausted or closed. Outputs are bit-identical to :meth:`run`'s. A batch that fails raises at its turn,
        after the outputs of the batches before it; closing the generator early waits for
        the batch on the DPUs and drops the rest.

        >>> import numpy as np
        >>> from updlrm.specs import TableSpec, Topology
        >>> from updlrm.plan import uniform_plan
        >>> plan = uniform_plan([TableSpec("t", 8, 2)], Topology(nr_dpus=2), "row_wise")
        >>> w = np.arange(16, dtype=np.float32).reshape(8, 2)
        >>> batches = [(np.array([k, 7]), np.array([0, 1, 2])) for k in range(4)]
        >>> with Engine(plan, [w]) as e:
        ...     outs = [out for out, _ in e.pipeline(batches)]
        ...     same = all(np.array_equal(o, e.run(*b)[0]) for o, b in zip(outs, batches))
        >>> [o[0].tolist() for o in outs], same
        ([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]], True)
        """
        if self._engine is None or self._closing:
            raise EngineError("the engine is closed")
        if self.dry:
            raise EngineError(_DRY)
        generator = pipelined(self, iter(batches), PoolingMode(pooling))
        self._pipelines.add(generator)
        return generator

    def run_async(
        self, indices, offsets, per_sample_weights=None, pooling: PoolingMode = PoolingMode.SUM, *, out=None
    ) -> Future[Result]:
        """Queues one batch and returns a ``concurrent.futures.Future`` of ``(output, BatchStats)``.

        Batches queued by any threads run in queue order on a driver thread that overlaps
        them as :meth:`pipeline` does (and keeps the DPUs busy while it hands results out);
        each future gets its batch's result or error.
        Python-side argument errors raise here, at once. ``close`` runs the queued batches
        to their end first. ``out`` as in :meth:`run`, written until the future is done.

        >>> import numpy as np
        >>> from updlrm.specs import TableSpec, Topology
        >>> from updlrm.plan import uniform_plan
        >>> plan = uniform_plan([TableSpec("t", 8, 2)], Topology(nr_dpus=2), "row_wise")
        >>> with Engine(plan, [np.ones((8, 2), np.float32)]) as e:
        ...     futures = [e.run_async(np.array([1, 2, 3][:k]), np.array([0, k])) for k in (1, 2, 3)]
        ...     [f.result()[0].tolist() for f in futures]
        [[[1.0, 1.0]], [[2.0, 2.0]], [[3.0, 3.0]]]
        """
        return submit(self, self._batch(indices, offsets, per_sample_weights, pooling, out=out))

    def _stats(self, slot: int, weighted: bool) -> BatchStats:
        return read_slot_stats(self, slot, weighted)

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Free the DPUs (idempotent).

        Batches already queued with :meth:`run_async` and batches other threads are
        running finish first; suspended :meth:`pipeline` generators are closed (the batch
        on the DPUs ends, the rest is dropped); later calls raise :class:`EngineError`.
        """
        with self._queue_lock:
            self._closing = True
            driver = self._driver
        with self._slots_changed:
            self._slots_changed.notify_all()  # callers waiting for a slot give up
        for generator in list(self._pipelines):
            with contextlib.suppress(ValueError):  # running in another thread: it gives its slots back itself
                generator.close()
        if driver is not None and driver is not threading.current_thread():
            driver.join()
        with self._slots_changed:
            while self._engine is not None and len(self._free_slots) < self._lib.EB_NR_SLOTS:
                self._slots_changed.wait()
            if self._engine is not None:
                self._lib.eb_engine_destroy(self._engine)
                self._engine = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # try/except, not contextlib.suppress: at interpreter exit module globals may be gone.
        try:  # noqa: SIM105
            self.close()
        except Exception:
            pass
