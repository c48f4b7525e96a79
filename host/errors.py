"""The errors ``Engine`` raises, all :class:`EngineError`s (``updlrm.host.build``).

Importable from ``updlrm.host.engine`` too, where users find them.
"""

from __future__ import annotations

from updlrm.host.build import EngineError

__all__ = [
    "EngineError",
    "AccumulatorOverflowError",
    "EngineBusyError",
    "DpuAllocationError",
    "DpuFaultError",
    "LaunchTimeoutError",
]


class AccumulatorOverflowError(EngineError, OverflowError):
    """An integer table's bag could sum beyond int64, so its result would not be exact.

    Raised before anything is routed or touches a DPU; the message names the table, the
    sample and the bound (max |row| x sum of |Q16 weights| or x lookups, host/README.md
    "Summation order and arithmetic"). The engine stays usable.

    >>> import numpy as np
    >>> from updlrm.specs import TableSpec, Topology, RowFormat
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.host.engine import Engine
    >>> spec = TableSpec("c", 2, 1, row_format=RowFormat.INT32, scale=1.0)
    >>> rows = np.array([[2**31 - 1], [0]], np.int32)
    >>> with Engine(uniform_plan([spec], Topology(nr_dpus=1), "table_wise"), [rows]) as e:
    ...     e.run(np.zeros(3, np.int64), np.array([0, 3]), np.full(3, 32767.0, np.float32))
    Traceback (most recent call last):
    ...
    updlrm.host.errors.AccumulatorOverflowError: table 'c' (t=0), sample 0: its int32 sum could exceed int64, so it would not be exact: ...
    """


class EngineBusyError(EngineError):
    """``eb_engine_run`` was entered while another batch of the same engine was running.

    ``Engine.run`` queues its callers on a lock, so only code that calls the C library
    directly (bypassing that lock) sees this.
    """


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

    def __init__(
        self,
        message: str,
        *,
        dpu: int | None,
        tasklet: int | None,
        cause: str,
        dpus: tuple[int, ...],
        recovered: bool = True,
    ) -> None:
        super().__init__(message)
        self.dpu, self.tasklet, self.cause, self.dpus, self.recovered = dpu, tasklet, cause, dpus, recovered


class LaunchTimeoutError(DpuFaultError):
    """A launch ran past ``launch_timeout``; ``dpus`` are the DPUs that were still running.

    >>> issubclass(LaunchTimeoutError, DpuFaultError)
    True
    """
