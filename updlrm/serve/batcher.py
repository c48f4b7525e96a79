"""Dynamic batching: queries arrive one by one, the model runs them in batches.

A :class:`DynamicBatcher` owns one worker thread. :meth:`~DynamicBatcher.submit`
queues items (any objects; the serving driver queues ``(query id, sample index)``)
with their arrival time. The worker takes the oldest items as soon as ``max_batch``
are waiting or the oldest has waited ``max_wait_s``, whichever comes first, and calls
``run(items, arrivals)`` with them in arrival order. A burst (LoadGen's Offline
scenario hands over every sample at once) becomes back-to-back full batches. One
worker means batches run one at a time, in order, on the one device.

Example:
    >>> seen = []
    >>> with DynamicBatcher(lambda items, t: seen.append(list(items)), max_batch=2, max_wait_s=0.01) as b:
    ...     b.submit([1, 2, 3])
    >>> seen
    [[1, 2], [3]]
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Sequence

__all__ = ["DynamicBatcher"]


class DynamicBatcher:
    """Collect submitted items into batches of at most ``max_batch``, waiting at most ``max_wait_s``.

    ``run(items, arrival_times)`` runs on the worker thread; an exception in it is kept
    and re-raised by :meth:`close` (or the next :meth:`submit`), and the batcher stops.
    """

    def __init__(self, run: Callable[[Sequence, Sequence[float]], None], *, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._run = run
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self.batches = 0
        self.batch_sizes: list[int] = []
        self._thread = threading.Thread(target=self._worker, name="updlrm-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: Iterable) -> None:
        """Queue ``items`` (arrival time: now)."""
        now = time.perf_counter()
        with self._cond:
            if self._error is not None:
                raise RuntimeError(f"the batcher stopped: {self._error}") from self._error
            if self._closing:
                raise RuntimeError("the batcher is closed")
            self._queue.extend((item, now) for item in items)
            self._cond.notify()

    def _take(self) -> list | None:
        with self._cond:
            while True:
                if self._queue:
                    if len(self._queue) >= self.max_batch or self._closing:
                        break
                    wait = self._queue[0][1] + self.max_wait_s - time.perf_counter()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()
            n = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _worker(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            try:
                self._run([item for item, _ in taken], [t for _, t in taken])
            except BaseException as exc:  # kept for the caller; the thread must not die silently
                with self._cond:
                    self._error = exc
                    self._closing = True
                    self._queue.clear()
                return
            self.batches += 1
            self.batch_sizes.append(len(taken))

    def close(self) -> None:
        """Run what is queued, stop the worker, re-raise an error of ``run``."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
