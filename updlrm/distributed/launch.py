"""Run a function once per host as local processes on one machine (gloo on 127.0.0.1).

What ``torchrun --nnodes N`` does across servers, for demos and tests on one machine:
``run_local(N, fn, *args)`` starts N fresh processes (``spawn``), joins them into one
group, calls ``fn(context, *args)`` in each and returns the N results in rank order.
It never hangs: past ``timeout_s`` the remaining processes are killed, and every
rank's outcome (result, error message, or exit code) is reported.

Example:
    >>> results = run_local(2, _example_rank_and_size, timeout_s=60)
    >>> [r.value for r in results]
    [(0, 2), (1, 2)]
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from updlrm.distributed.context import ClusterContext, free_port


@dataclass
class RankOutcome:
    """What one rank's process did: ``value`` if it returned, else ``error`` (and ``exitcode``)."""

    rank: int
    value: Any = None
    error: str | None = None
    exitcode: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class LocalRunError(RuntimeError):
    """One or more local ranks failed; ``outcomes`` holds every rank's."""

    def __init__(self, outcomes: list[RankOutcome]) -> None:
        failed = [o for o in outcomes if not o.ok]
        lines = [f"rank {o.rank}: {o.error}" for o in failed]
        super().__init__(f"{len(failed)} of {len(outcomes)} rank(s) failed:\n  " + "\n  ".join(lines))
        self.outcomes = outcomes


def _example_rank_and_size(ctx: ClusterContext) -> tuple[int, int]:
    return ctx.rank, ctx.world_size


def _child(rank: int, world_size: int, port: int, timeout_s: float, fn, args, results) -> None:
    ctx = None
    try:
        ctx = ClusterContext.connect(rank, world_size, "127.0.0.1", port, timeout_s=timeout_s)
        value = fn(ctx, *args)
        results.put((rank, "ok", value))
    except BaseException as error:  # reported to the parent, which names the rank
        detail = f"{type(error).__name__}: {error}"
        if not isinstance(error, (RuntimeError, ValueError)):
            detail += "\n" + traceback.format_exc()
        results.put((rank, "error", detail))
    finally:
        if ctx is not None:
            with contextlib.suppress(Exception):  # the rank's own error, if any, is already reported
                ctx.close()


def run_local(
    world_size: int,
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float = 120.0,
    collective_timeout_s: float = 30.0,
    raise_on_error: bool = False,
) -> list[RankOutcome]:
    """Run ``fn(context, *args)`` on ``world_size`` local ranks; return every rank's outcome.

    ``fn`` and ``args`` must be picklable (a module-level function). ``collective_timeout_s``
    bounds each collective (a dead or hung rank is named within it); ``timeout_s``
    bounds the whole run.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_child,
            args=(r, world_size, port, collective_timeout_s, fn, args, results),
            name=f"updlrm-host-{r}",
            daemon=True,
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    outcomes = {r: RankOutcome(r) for r in range(world_size)}
    pending = set(range(world_size))
    dead_since: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    # Once the others are done, a rank still running past one collective timeout (and a
    # margin for naming the failure) is hung: it gets no more time.
    grace_s = collective_timeout_s + 5.0
    last_done = None
    while pending and time.monotonic() < deadline:
        if last_done is not None and len(pending) < world_size and time.monotonic() - last_done > grace_s:
            break
        try:
            rank, status, value = results.get(timeout=0.2)
        except queue.Empty:
            now = time.monotonic()
            for r in list(pending):
                if procs[r].exitcode is None:
                    continue
                # A result queued just before exiting may still be in flight: wait a moment.
                if now - dead_since.setdefault(r, now) > 1.0:
                    outcomes[r] = RankOutcome(
                        r,
                        error=f"process exited with code {procs[r].exitcode} without a result",
                        exitcode=procs[r].exitcode,
                    )
                    pending.discard(r)
                    last_done = now
            continue
        outcomes[rank] = RankOutcome(rank, value=value) if status == "ok" else RankOutcome(rank, error=value)
        pending.discard(rank)
        last_done = time.monotonic()
    for r in pending:
        why = (
            f"no result {grace_s:g} s after the other ranks finished (hung; killed)"
            if time.monotonic() < deadline
            else f"no result within {timeout_s:g} s (killed)"
        )
        outcomes[r] = RankOutcome(r, error=why)
    for p in procs:
        p.join(timeout=2.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=2.0)
        if outcomes[procs.index(p)].exitcode is None:
            outcomes[procs.index(p)].exitcode = p.exitcode
    results.close()
    ordered = [outcomes[r] for r in range(world_size)]
    if raise_on_error and not all(o.ok for o in ordered):
        raise LocalRunError(ordered)
    return ordered
