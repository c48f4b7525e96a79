"""Overlapping an engine's batches: the stream behind ``Engine.pipeline`` and ``Engine.run_async``.

One thread drives two slots: while the DPUs run batch i, it merges batch i-1 and routes
batch i+1 (host/README.md, "Pipelining"). ``pipelined`` feeds the stream from a caller's
iterator; ``submit`` queues one batch for a driver thread (``drive``) that runs the
queue. ``Engine`` owns the locks, slots and the queue; this module only orders the
stages (``Engine._prepare``, ``_launch``, ``_collect``, ``_finish``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from updlrm.host.build import EngineError
from updlrm.specs import PoolingMode

if TYPE_CHECKING:
    from updlrm.host.batch_stats import BatchStats
    from updlrm.host.engine import Engine, _Batch

__all__ = ["pipelined", "submit", "drive", "stream"]

#: One batch's result: its output and its statistics.
Result = tuple[np.ndarray, "BatchStats"]
#: What the stream yields per batch, in order: the job, its result or None, its error or None.
Outcome = tuple["_Job", "Result | None", "Exception | None"]
#: A job between two stages: its batch (None once it failed) and its error or None.
Staged = tuple["_Job", "_Batch | None", "Exception | None"]


class _Source(Protocol):
    def next(self, block: bool) -> _Job | None: ...


@dataclass(eq=False)
class _Job:
    """A batch for Engine._stream: its arguments (checked at its turn) or its checked batch."""

    args: tuple | None
    future: Future | None = None
    batch: _Batch | None = None
    error: Exception | None = None  # what is wrong with the item, raised at its turn


class _IterSource:
    """Engine.pipeline's batches: the caller's iterator (pulled when the stream wants one)."""

    def __init__(self, jobs) -> None:
        self._jobs = jobs

    def next(self, block: bool):
        return next(self._jobs, None)


class _QueueSource:
    """Engine.run_async's queue. With nothing in flight (`block`) and the queue empty, the
    driver retires, in the same critical section as the check, so a batch queued just
    after starts a new driver."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def next(self, block: bool):
        engine = self._engine
        with engine._queue_lock:
            if engine._queue:
                return engine._queue.popleft()
            if block and engine._driver is threading.current_thread():
                engine._driver = None
            return None


def stream(
    engine: Engine, source: _Source, *, closing_ok: bool = False, hold_dpus: bool = True
) -> Generator[Outcome, None, None]:
    """Runs the batches `source` gives, overlapped, and yields ``(job, result, error)`` in order.

    One thread, two slots: while the DPUs run batch i, this thread merges batch i-1 and
    routes batch i+1 (prepare, then collect i, launch i+1, finish i-1 ...). A batch's
    error is yielded at its turn; the batches after it still run. With one slot free
    (other callers hold the rest) it runs the batches one after the other instead of
    waiting, so a stream never waits for slots that a caller of it may hold.
    ``hold_dpus=False`` (public generators, whose consumer may call the engine while the
    generator is suspended) collects the batch on the DPUs before each yield, so no
    lock is held across a yield; the host stages still overlap the DPUs.
    """
    slots = engine._take_slots(2, closing_ok=closing_ok)
    spare = list(slots)
    on_dpus: tuple[_Job, _Batch] | None = None  # launched, not collected
    early: Staged | None = None  # collected before a yield, not finished
    ready: Staged | None = None  # prepared, not launched; or a job whose prepare failed
    collected: Staged | None
    try:
        while True:
            if ready is None and spare:
                job = source.next(block=on_dpus is None)
                if job is not None:
                    ready = _prepare_job(engine, job, spare)
            if ready is None and on_dpus is None and early is None:
                return
            collected, early = early, None
            if on_dpus is not None:
                collected = _collect_launched(engine, on_dpus, spare)
                on_dpus = None
            failed: Outcome | None = None
            if ready is not None:
                job, batch, error = ready
                ready = None
                if error is not None:
                    failed = (job, None, error)
                else:
                    assert batch is not None  # a job without an error has its batch
                    engine._dpu_lock.acquire()
                    try:
                        engine._launch(batch)
                        on_dpus = (job, batch)
                    except Exception as launch_error:
                        engine._dpu_lock.release()
                        spare.append(batch.slot)
                        failed = (job, None, launch_error)
            result: Outcome | None = None
            if collected is not None:
                job, batch, error = collected
                if error is None:
                    assert batch is not None
                    try:
                        result = (job, engine._finish(batch), None)
                    except Exception as finish_error:
                        result = (job, None, finish_error)
                    spare.append(batch.slot)
                else:
                    result = (job, None, error)
            # Route the next batch while the DPUs run this one, before handing results out.
            if ready is None and on_dpus is not None and spare:
                job = source.next(block=False)
                if job is not None:
                    ready = _prepare_job(engine, job, spare)
            if not hold_dpus and on_dpus is not None and (result is not None or failed is not None):
                early = _collect_launched(engine, on_dpus, spare)
                on_dpus = None
            if result is not None:
                yield result
            if failed is not None:
                yield failed
    finally:
        if on_dpus is not None:
            engine._discard(on_dpus[1])
            engine._dpu_lock.release()
        if ready is not None and ready[1] is not None and ready[2] is None:
            engine._discard(ready[1])
        for slot in slots:  # a batch interrupted between collect and finish
            engine._lib.eb_engine_discard(engine._engine, slot)
        engine._give_slots(slots)


def _collect_launched(engine: Engine, on_dpus: tuple[_Job, _Batch], spare: list[int]) -> Staged:
    """Collects the batch on the DPUs and releases them: (job, batch, error or None)."""
    job, batch = on_dpus
    try:
        engine._collect(batch)
        return job, batch, None
    except Exception as error:
        spare.append(batch.slot)
        return job, batch, error
    finally:
        engine._dpu_lock.release()


def _prepare_job(engine: Engine, job: _Job, spare: list[int]) -> Staged:
    """(job, batch, None) prepared in a spare slot, or (job, None, error)."""
    if job.error is not None:
        return job, None, job.error
    try:
        if job.batch is not None:
            batch = job.batch
        else:
            assert job.args is not None  # a job has its batch, its arguments or its error
            batch = engine._batch(*job.args)
    except Exception as error:
        return job, None, error
    slot = spare.pop()
    try:
        engine._prepare(batch, slot)
    except Exception as error:
        spare.append(slot)
        return job, None, error
    return job, batch, None


def pipelined(engine: Engine, batches: Iterator[Any], pooling: PoolingMode) -> Generator[Result, None, None]:
    """The generator ``Engine.pipeline`` returns: each item of `batches` checked at its turn,
    run overlapped, its result yielded (its error raised) in order."""

    def jobs() -> Iterator[_Job]:
        for item in batches:
            if isinstance(item, Exception):  # a wrapper's own check failed: raised at its turn
                yield _Job(None, error=item)
            elif not isinstance(item, (tuple, list)) or len(item) not in (2, 3, 4):
                yield _Job(
                    None,
                    error=ValueError(
                        f"each pipelined batch must be (indices, offsets[, per_sample_weights[, pooling]]), "
                        f"got {type(item).__name__}{'' if not isinstance(item, (tuple, list)) else f' of {len(item)}'}"
                    ),
                )
            else:
                yield _Job((*item, None, pooling)[:4] if len(item) == 2 else (*item, pooling)[:4])

    outcomes = stream(engine, _IterSource(jobs()), hold_dpus=False)
    try:
        for _, result, error in outcomes:
            if error is not None:
                raise error
            assert result is not None
            yield result
    finally:
        outcomes.close()


def submit(engine: Engine, batch: _Batch) -> Future[Result]:
    """Queues a checked batch for the run_async driver (started if none runs) and returns its future."""
    future: Future[Result] = Future()
    job = _Job(None, future, batch)
    with engine._queue_lock:
        if engine._engine is None or engine._closing:
            raise EngineError("the engine is closed")
        engine._queue.append(job)
        if engine._driver is None:
            engine._driver = threading.Thread(target=drive, args=(engine,), name="updlrm-engine-pipeline", daemon=True)
            engine._driver.start()
    return future


def drive(engine: Engine) -> None:
    """The run_async driver: runs the queue until it is empty and nothing is in flight."""
    try:
        for job, result, error in stream(engine, _QueueSource(engine), closing_ok=True):
            future = job.future
            assert future is not None  # queued jobs carry their future
            if not future.set_running_or_notify_cancel():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
    except BaseException as error:
        with engine._queue_lock:
            pending, engine._queue = list(engine._queue), deque()
        for job in pending:
            if job.future is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(error if isinstance(error, Exception) else EngineError(str(error)))
    finally:
        with engine._queue_lock:
            if engine._driver is threading.current_thread():
                engine._driver = None
