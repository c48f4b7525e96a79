"""Run a placement plan's embedding bags on DPUs: the Python face of the C host runtime.

``Engine`` builds (once, cached) the DPU kernel ``dpu_kernels/embedding_bag.c`` and the
C host runtime ``host/eb_host.c`` for a backend, loads a plan's tables into MRAM, and
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

import os
import threading
from dataclasses import dataclass, field

import numpy as np

# The build half lives in host/build.py; `build`, `cache_root` and `EngineError` stay importable from here.
from updlrm.host.build import BACKENDS, EngineError, _load_library, build, cache_root
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

# Per-DPU statistics (host/eb_host.h, enum eb_dpu_stat).
_DPU_STATS = (
    "lookups", "segments", "partials", "bytes_to_dpu", "bytes_from_dpu", "padded_bytes_to_dpu",
    "padded_bytes_from_dpu", "reduce_elems", "kernel_cycles", "row_bytes_gathered", "merge_elems",
)


class AccumulatorOverflowError(EngineError, OverflowError):
    """An integer table's bag could sum beyond int64, so its result would not be exact.

    Raised before anything is routed or touches a DPU; the message names the table, the
    sample and the bound (max |row| x sum of |Q16 weights| or x lookups, host/README.md
    "Summation order and arithmetic"). The engine stays usable.

    >>> import numpy as np
    >>> from updlrm.specs import TableSpec, Topology, RowFormat
    >>> from updlrm.plan import uniform_plan
    >>> spec = TableSpec("c", 2, 1, row_format=RowFormat.INT32, scale=1.0)
    >>> rows = np.array([[2**31 - 1], [0]], np.int32)
    >>> with Engine(uniform_plan([spec], Topology(nr_dpus=1), "table_wise"), [rows]) as e:
    ...     e.run(np.zeros(3, np.int64), np.array([0, 3]), np.full(3, 32767.0, np.float32))
    Traceback (most recent call last):
    ...
    updlrm.host.engine.AccumulatorOverflowError: table 'c' (t=0), sample 0: its int32 sum could exceed int64, so it would not be exact: ...
    """


class EngineBusyError(EngineError):
    """``eb_engine_run`` was entered while another batch of the same engine was running.

    ``Engine.run`` queues its callers on a lock, so only code that calls the C library
    directly (bypassing that lock) sees this.
    """


# ---- statistics --------------------------------------------------------------------


@dataclass
class BatchStats:
    """Measured phases of one ``Engine.run`` and what it asked of each DPU.

    Times are host wall-clock seconds. ``launch_s`` runs from the launch until every DPU
    is done; the host-cache sum (``host_cache_s``) runs inside that window. Per-DPU
    arrays have one entry per DPU of the plan; ``bytes_*`` are what each DPU needs,
    ``padded_bytes_*`` what was moved (parallel transfers are padded to the largest
    buffer of the rank, as the SDK does).

    >>> s = BatchStats.empty(2)
    >>> s.total_s, s.lookups.tolist()
    (0.0, [0, 0])
    """

    route_s: float
    push_s: float
    launch_s: float
    pull_s: float
    merge_s: float
    host_cache_s: float
    nr_launches: int
    nr_bags: int
    nr_lookups: int
    host_cache_hits: int
    host_cache_bytes: int
    lookups: np.ndarray
    segments: np.ndarray
    partials: np.ndarray
    bytes_to_dpu: np.ndarray
    bytes_from_dpu: np.ndarray
    padded_bytes_to_dpu: np.ndarray
    padded_bytes_from_dpu: np.ndarray
    reduce_elems: np.ndarray
    kernel_cycles: np.ndarray
    row_bytes_gathered: np.ndarray
    merge_elems: np.ndarray
    row_format: str = "fp32"
    weighted: bool = False
    nr_tasklets: int = 16
    extra: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, nr_dpus: int) -> "BatchStats":
        zeros = {name: np.zeros(nr_dpus, dtype=np.int64) for name in _DPU_STATS}
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0, **zeros)

    @property
    def total_s(self) -> float:
        """Wall time of the batch (the host-cache part overlaps the launch)."""
        return self.route_s + self.push_s + self.launch_s + self.pull_s + self.merge_s

    def work(self):
        """The batch as ``updlrm.perfmodel.BatchWork``, for the timing model.

        ``row_bytes`` is each DPU's mean gathered row-slice size; ``index_bytes`` the
        inputs it streams (header, local rows, weights, segments); ``output_bytes`` its
        partial sums and status.

        >>> from updlrm.perfmodel import BatchWork
        >>> isinstance(BatchStats.empty(2).work(), BatchWork)
        True
        """
        from updlrm.perfmodel import BatchWork

        lookups = self.lookups.astype(np.float64)
        row_bytes = np.divide(self.row_bytes_gathered, lookups, out=np.zeros_like(lookups), where=lookups > 0)
        mean_host_row = self.host_cache_bytes / self.host_cache_hits if self.host_cache_hits else 0
        return BatchWork(
            lookups=self.lookups.copy(),
            row_bytes=row_bytes,
            index_bytes=self.bytes_to_dpu.copy(),
            output_bytes=self.bytes_from_dpu.copy(),
            reduce_elems=self.reduce_elems.copy(),
            row_format=self.row_format,
            weighted=self.weighted,
            nr_tasklets=self.nr_tasklets,
            host_merge_elems=int(self.merge_elems.sum()),
            host_cache_lookups=int(self.host_cache_hits),
            host_cache_row_bytes=int(round(mean_host_row)),
        )


# ---- the engine --------------------------------------------------------------------


class DpuAllocationError(EngineError):
    """The DPUs could not be allocated (``dpu_alloc`` failed); the message has the library's reason.

    >>> issubclass(DpuAllocationError, EngineError)
    True
    """


class DpuFaultError(EngineError):
    """DPUs faulted during a batch's launch, or the process emulating them died.

    ``dpu`` is the first DPU in fault (the plan's DPU index), ``tasklet`` its tasklet
    (None when unknown: the SDK backends do not say), ``cause`` what the DPU library
    reported, ``dpus`` every DPU in fault. The engine has reloaded the kernel and kept
    its tables (``recovered``), so the next batch runs normally.

    >>> e = DpuFaultError("DPU 3 tasklet 1 faulted: ...", dpu=3, tasklet=1, cause="...", dpus=(3,))
    >>> e.dpu, e.tasklet, e.dpus, e.recovered
    (3, 1, (3,), True)
    """

    def __init__(self, message: str, *, dpu: int | None, tasklet: int | None, cause: str,
                 dpus: tuple[int, ...], recovered: bool = True) -> None:
        super().__init__(message)
        self.dpu, self.tasklet, self.cause, self.dpus, self.recovered = dpu, tasklet, cause, dpus, recovered


class LaunchTimeoutError(DpuFaultError):
    """A launch ran past ``launch_timeout``; ``dpus`` are the DPUs that were still running.

    >>> issubclass(LaunchTimeoutError, DpuFaultError)
    True
    """


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        from updlrm.backends import resolve_backend

        return resolve_backend("auto")[0]
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    return backend


def _alloc_profile(backend: str, launch_timeout: float | None = None) -> str:
    # dpu_alloc profile strings (UPMEM SDK documentation, "dpu_alloc"): "backend=hw"
    # selects real ranks, "backend=simulator" the functional simulator. "timeout=S" is
    # the emulator's launch timeout (emulator/README.md); the SDK backends have none.
    profile = {"emulator": "", "simulator": "backend=simulator", "hw": "backend=hw"}[backend]
    if launch_timeout is not None:
        if backend != "emulator":
            raise EngineError(f"launch_timeout is only available on the emulator backend (got backend {backend!r}); "
                              "leave it None on the UPMEM SDK's backends")
        if not float(launch_timeout) > 0:
            raise EngineError(f"launch_timeout must be a positive number of seconds, got {launch_timeout!r}")
        profile = f"timeout={float(launch_timeout)!r}"
    return profile


class Engine:
    """A plan's tables resident in DPU MRAM, ready to run TBE-layout batches.

    ``weights[t]`` is table ``t``'s ``(num_embeddings, embedding_dim)`` array in its row
    format: float32 for FP32, int32 / int8 quantised values for INT32 / INT8 (the
    table's ``scale`` dequantises them). Only host-cached rows are kept on the host;
    the arrays are not referenced after construction. ``host_threads`` (default: the
    CPU count) lets route+pack and the merge of big batches use two threads; results
    do not depend on it.

    Threads: any number of threads may share one engine. One batch is in flight at a
    time (the DPUs, their buffers and the integer scratch belong to the engine); ``run``
    holds the engine's lock from the C call until the stats are copied, so concurrent
    callers queue and each gets exactly its serial result, in a fresh output array and
    a fresh ``BatchStats``. The C library refuses a concurrent ``eb_engine_run``
    (:class:`EngineBusyError`) instead of corrupting memory. ``close`` waits for the
    running batch.

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

    def __init__(self, plan: Plan, weights, *, backend: str = "emulator", nr_tasklets: int = 16,
                 host_threads: int | None = None, launch_timeout: float | None = None) -> None:
        self.plan = plan
        self.backend = _resolve_backend(backend)
        self.nr_tasklets = int(nr_tasklets)
        self.launch_timeout = launch_timeout
        profile = _alloc_profile(self.backend, launch_timeout)
        self._engine = None
        # One batch in flight per engine; a pipelined run would split this per stage
        # (route/pack, launch, merge), see host/README.md "Threads".
        self._lock = threading.Lock()
        plan.validate()
        tables = plan.tables
        if len(weights) != len(tables):
            raise EngineError(f"got {len(weights)} weight arrays for {len(tables)} tables")
        arrays = []
        for t, (spec, w) in enumerate(zip(tables, weights)):
            w = np.asarray(w)
            dtype = spec.row_format.dtype
            if w.dtype != dtype:
                raise EngineError(f"table {spec.name}: weights are {w.dtype}, its {spec.row_format.value} rows need {np.dtype(dtype)}")
            if w.shape != (spec.num_embeddings, spec.embedding_dim):
                raise EngineError(f"table {spec.name}: weights have shape {w.shape}, expected {(spec.num_embeddings, spec.embedding_dim)}")
            if w.strides[1] != w.itemsize or w.strides[0] < 0:
                w = np.ascontiguousarray(w)
            arrays.append(w)
        self.dims = [t.embedding_dim for t in tables]
        self.total_dim = int(sum(self.dims))

        kernel, library = build(self.backend, self.nr_tasklets)
        self._ffi, self._lib = _load_library(library)
        ffi, lib = self._ffi, self._lib
        error = ffi.new("char[]", 1024)
        failure_kind = ffi.new("int32_t *")
        engine = lib.eb_engine_create(
            str(kernel).encode(), profile.encode(), plan.topology.nr_dpus, self.nr_tasklets,
            plan.topology.mram_bytes_per_dpu, len(tables), len(plan.shards), error, 1024, failure_kind,
        )
        if engine == ffi.NULL:
            kind = DpuAllocationError if failure_kind[0] == lib.EB_FAILURE_ALLOCATION else EngineError
            raise kind(ffi.string(error).decode())
        self._engine = engine
        # Route+pack and merge split big batches over two threads; None: as many as the CPUs.
        lib.eb_engine_set_host_threads(engine, max(1, int(host_threads or os.cpu_count() or 1)))
        try:
            self._describe(arrays)
            for t, spec in enumerate(tables):  # names for the C runtime's messages
                self._check(lib.eb_engine_name_table(engine, t, spec.name.encode()))
            pointers = ffi.new("void *[]", [ffi.from_buffer(a) for a in arrays])
            strides = ffi.new("int64_t[]", [a.strides[0] for a in arrays])
            self._check(lib.eb_engine_load(engine, ffi.cast("const void **", pointers), strides))
        except BaseException:
            self.close()
            raise
        self.nr_dpus = int(lib.eb_engine_nr_dpus(engine))
        self.nr_ranks = int(lib.eb_engine_nr_ranks(engine))
        self.static_bytes = int(lib.eb_engine_static_bytes(engine))
        #: Host memory of the routing tables (row blocks, exception tables, per-row entries).
        self.routing_bytes = int(lib.eb_engine_routing_bytes(engine))

    # -- setup -------------------------------------------------------------------------

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise self._error()

    def _error(self) -> EngineError:
        """The exception for the engine's last failure: its text, and for DPU failures which DPUs."""
        ffi, lib = self._ffi, self._lib
        message = ffi.string(lib.eb_engine_error(self._engine)).decode(errors="replace")
        failure = lib.eb_engine_failure(self._engine)
        if failure.kind not in (lib.EB_FAILURE_DPU_FAULT, lib.EB_FAILURE_TIMEOUT):
            return EngineError(message)
        listed = lib.eb_engine_failed_dpus(self._engine)
        kind = LaunchTimeoutError if failure.kind == lib.EB_FAILURE_TIMEOUT else DpuFaultError
        return kind(message, dpu=int(failure.dpu) if failure.dpu >= 0 else None,
                    tasklet=int(failure.tasklet) if failure.tasklet >= 0 else None,
                    cause=ffi.string(failure.cause).decode(errors="replace"),
                    dpus=tuple(int(listed[k]) for k in range(failure.nr_dpus)), recovered=bool(failure.recovered))

    def _ptr(self, ctype: str, array: np.ndarray):
        if array.size == 0:
            return self._ffi.NULL
        return self._ffi.cast(ctype, self._ffi.from_buffer(array))

    def _describe(self, arrays: list[np.ndarray]) -> None:
        # Tables and host-cached rows, then shards, then column slices: the C side builds
        # each slice's routing from the shards and host rows already described.
        plan, lib, engine = self.plan, self._lib, self._engine
        for t, spec in enumerate(plan.tables):
            self._check(lib.eb_engine_set_table(engine, t, spec.num_embeddings, spec.embedding_dim,
                                                spec.row_format.abi_code, float(spec.scale)))
            host = np.unique(np.asarray(plan.host_rows.get(t, np.empty(0)), dtype=np.int64))
            if host.size:
                rows = np.ascontiguousarray(arrays[t][host])
                self._check(lib.eb_engine_set_host_rows(engine, t, host.size, self._ptr("int64_t *", host),
                                                        self._ptr("void *", rows)))
        for i, s in enumerate(plan.shards):
            if isinstance(s.rows, range):
                self._check(lib.eb_engine_set_shard(engine, i, s.table, s.dpu, s.col_start, s.col_stop,
                                                    s.rows.start, len(s.rows), self._ffi.NULL))
            else:
                ids = np.ascontiguousarray(s.rows, dtype=np.int64)
                self._check(lib.eb_engine_set_shard(engine, i, s.table, s.dpu, s.col_start, s.col_stop, 0,
                                                    ids.size, self._ptr("int64_t *", ids)))
        for t in range(len(plan.tables)):
            splits = plan.col_splits(t)
            for lo, hi in zip(splits[:-1], splits[1:]):
                self._check(lib.eb_engine_add_slice(engine, t, lo, hi))

    # -- running -----------------------------------------------------------------------

    def run(self, indices, offsets, per_sample_weights=None, pooling: PoolingMode = PoolingMode.SUM):
        """Embedding-bag sums (or means) of one batch in FBGEMM TBE layout.

        ``indices`` int64 (N,), ``offsets`` int64 (T*B+1,) with bag ``t*B + b`` =
        ``indices[offsets[t*B+b]:offsets[t*B+b+1]]``, ``per_sample_weights`` float32 (N,)
        or None. Returns ``(output float32 (B, sum of dims), BatchStats)``; table ``t``
        fills columns ``sum(dims[:t]) .. + dims[t]``. Empty bags give zeros.

        A DPU fault during the batch (or a dead emulator worker) raises
        :class:`DpuFaultError` naming the DPU, its tasklet where known, and the cause; a
        launch longer than the engine's ``launch_timeout`` seconds (emulator only; default
        none, ``UPDLRM_EMU_TIMEOUT`` also sets it) raises :class:`LaunchTimeoutError`
        naming the DPUs still running. Either way the engine reloads the kernel and keeps
        its tables, so the next batch is right. (No DPUs at construction:
        :class:`DpuAllocationError` with the DPU library's reason.)

        >>> import numpy as np
        >>> from updlrm.specs import TableSpec, Topology
        >>> from updlrm.plan import uniform_plan
        >>> plan = uniform_plan([TableSpec("t", 4, 2)], Topology(nr_dpus=1), "table_wise")
        >>> with Engine(plan, [np.ones((4, 2), np.float32)]) as e:
        ...     out, stats = e.run(np.array([3, 3]), np.array([0, 0, 2]), np.array([0.5, 2.0], np.float32))
        >>> out.tolist(), int(stats.lookups.sum())
        ([[0.0, 0.0], [2.5, 2.5]], 2)
        """
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
        weights_ptr = self._ffi.NULL
        if per_sample_weights is not None:
            per_sample_weights = np.ascontiguousarray(per_sample_weights, dtype=np.float32)
            if per_sample_weights.shape != indices.shape:
                raise ValueError(f"per_sample_weights has shape {per_sample_weights.shape}, indices {indices.shape}")
            weights_ptr = self._ptr("float *", per_sample_weights)
        output = np.empty((batch, self.total_dim), dtype=np.float32)
        with self._lock:
            if self._engine is None:
                raise EngineError("the engine is closed")
            rc = self._lib.eb_engine_run(
                self._engine, self._ptr("int64_t *", indices), indices.size, self._ptr("int64_t *", offsets),
                offsets.size, weights_ptr, int(pooling), self._ptr("float *", output),
            )
            if rc == self._lib.EB_RUN_BUSY:
                raise EngineBusyError("another thread is running a batch on this engine and eb_engine_run does not queue; "
                                      "call it through Engine.run, which serialises callers")
            if rc == self._lib.EB_RUN_INEXACT:
                raise AccumulatorOverflowError(self._ffi.string(self._lib.eb_engine_error(self._engine)).decode())
            if rc != 0:
                raise self._error()
            return output, self._stats(per_sample_weights is not None)

    def _stats(self, weighted: bool) -> BatchStats:
        ffi, lib = self._ffi, self._lib
        run = lib.eb_engine_stats(self._engine)
        per_dpu = {}
        for k, name in enumerate(_DPU_STATS):
            buffer = ffi.buffer(lib.eb_engine_dpu_stat(self._engine, k), 8 * self.nr_dpus)
            per_dpu[name] = np.frombuffer(buffer, dtype=np.int64).copy()
        return BatchStats(
            route_s=run.route_s, push_s=run.push_s, launch_s=run.launch_s, pull_s=run.pull_s,
            merge_s=run.merge_s, host_cache_s=run.host_cache_s, nr_launches=int(run.nr_launches),
            nr_bags=int(run.nr_bags), nr_lookups=int(run.nr_lookups), host_cache_hits=int(run.host_cache_hits),
            host_cache_bytes=int(run.host_cache_bytes), **per_dpu,
            row_format=self._dominant_format(), weighted=weighted, nr_tasklets=self.nr_tasklets,
        )

    def _dominant_format(self) -> str:
        # BatchWork takes one row format; with mixed tables, the one with the most rows.
        count: dict[str, int] = {}
        for spec in self.plan.tables:
            count[spec.row_format.value] = count.get(spec.row_format.value, 0) + spec.num_embeddings
        return max(count, key=count.get)

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Free the DPUs (idempotent; waits for a batch another thread is running)."""
        with self._lock:
            if self._engine is not None:
                self._lib.eb_engine_destroy(self._engine)
                self._engine = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
