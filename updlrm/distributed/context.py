"""One process per host on torch.distributed (gloo on CPU), and naming the host that failed.

:class:`ClusterContext` joins the process group (from ``torchrun``'s environment, or
an explicit address) and wraps every collective so that a failure is never a hang and
never anonymous:

* every collective runs under the group's timeout (``timeout_s``);
* each rank writes the number of the batch it is on, and a heartbeat counter from a
  background thread, into the rendezvous store;
* a rank that fails on its own input tells the others in the first exchange of the
  batch (a status word), with its message in the store, so they fail at once naming it;
* when a collective fails or times out, the context reads the store: a rank whose
  heartbeat stopped *died*; one whose heartbeat runs but that never reached this batch
  *hangs*; the error names them (``DistributedError.ranks``).

Example (a one-process group):
    >>> ctx = ClusterContext.connect(0, 1, "127.0.0.1", free_port(), timeout_s=5)
    >>> ctx.all_to_all_int64([np.array([1, 2])], [2]).tolist()
    [1, 2]
    >>> ctx.close()
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time

import numpy as np

HEARTBEAT_S = 0.25
_PREFIX = "updlrm"


class DistributedError(RuntimeError):
    """A collective failed; ``ranks`` are the ranks named as the cause (empty if unknown)."""

    def __init__(self, message: str, ranks: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.ranks = ranks


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for local groups)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClusterContext:
    """This process's place in the group: ``rank`` of ``world_size`` hosts."""

    def __init__(self, rank: int, world_size: int, store, timeout_s: float) -> None:
        import torch.distributed as dist

        self.rank, self.world_size, self.timeout_s = int(rank), int(world_size), float(timeout_s)
        self._store = store
        self.step = 0
        self._closed = False
        self._failed = False
        self._beats = 0
        self._stop = threading.Event()
        dist.init_process_group(
            "gloo",
            store=store,
            rank=self.rank,
            world_size=self.world_size,
            timeout=datetime.timedelta(seconds=self.timeout_s),
        )
        self._set("step", 0)
        # Beat 0 now: a batch can fail before the thread's first beat, and a rank that has
        # not beaten yet would look dead to the others' diagnosis.
        self._set("beat", 0)
        self._beat_thread = threading.Thread(target=self._heartbeat, name=f"updlrm-heartbeat-{rank}", daemon=True)
        self._beat_thread.start()

    # -- joining -----------------------------------------------------------------------

    @classmethod
    def connect(cls, rank: int, world_size: int, addr: str, port: int, *, timeout_s: float = 60.0) -> ClusterContext:
        """Join a group whose rank 0 listens on ``addr:port``."""
        import torch.distributed as dist

        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        store = dist.TCPStore(addr, int(port), world_size, rank == 0, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, world_size, store, timeout_s)

    @classmethod
    def from_env(cls, *, timeout_s: float = 60.0) -> ClusterContext:
        """Join the group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``)."""
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise DistributedError(
                f"not started by torchrun: {', '.join(missing)} not set; "
                "run with `torchrun --nnodes N --nproc-per-node 1 ...`"
            )
        # torchrun's own store is not handed to the program, so rank 0 opens one next to it.
        port = int(os.environ["MASTER_PORT"]) + 1
        return cls.connect(
            int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), os.environ["MASTER_ADDR"], port, timeout_s=timeout_s
        )

    # -- store bookkeeping -------------------------------------------------------------

    def _key(self, what: str, rank: int | None = None) -> str:
        return f"{_PREFIX}/{what}/{self.rank if rank is None else rank}"

    def _set(self, what: str, value) -> None:
        self._store.set(self._key(what), str(value))

    def _get(self, what: str, rank: int) -> str | None:
        key = self._key(what, rank)
        try:
            if not self._store.check([key]):
                return None
            return self._store.get(key).decode()
        except Exception:  # the store's host (rank 0) is gone
            return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._beats += 1
            try:
                self._set("beat", self._beats)
            except Exception:  # store gone: the collectives will report it
                return

    def begin_step(self) -> int:
        """Start the next batch: every rank must call it once per batch."""
        self.step += 1
        self._set("step", self.step)
        return self.step

    def report_error(self, message: str) -> None:
        """Leave this rank's failure where the others look for it."""
        self._failed = True
        # Best effort: the store may be the thing that failed; the peers then time out instead.
        with contextlib.suppress(Exception):
            self._store.set(self._key(f"error/{self.step}"), message)

    def peer_error(self, rank: int) -> str:
        return self._get(f"error/{self.step}", rank) or "(no message)"

    # -- collectives -------------------------------------------------------------------

    def diagnose(self, cause: BaseException | str) -> DistributedError:
        """Name the ranks behind a failed collective of batch ``self.step``."""
        first = {r: self._get("beat", r) for r in range(self.world_size) if r != self.rank}
        if all(v is None for v in first.values()) and self.world_size > 1 and self.rank != 0:
            return DistributedError(
                f"batch {self.step}: rank 0 is unreachable (it hosts the group's store): "
                f"it died or its host is down ({cause})",
                (0,),
            )
        time.sleep(4 * HEARTBEAT_S)
        dead, hung = [], []
        for r, before in first.items():
            after = self._get("beat", r)
            step = self._get("step", r)
            if after is None or after == before:
                dead.append(r)
            elif step is None or int(step) < self.step:
                hung.append(r)
        parts = []
        if dead:
            parts.append(f"rank(s) {', '.join(map(str, dead))} died (no heartbeat)")
        if hung:
            parts.append(
                f"rank(s) {', '.join(map(str, hung))} hang (alive, but did not reach batch {self.step} "
                f"within {self.timeout_s:g} s)"
            )
        if not parts:
            parts.append("no rank could be named")
        return DistributedError(
            f"batch {self.step} failed on rank {self.rank}: {'; '.join(parts)} ({cause})", tuple(dead + hung)
        )

    def _all_to_all(self, parts: list[np.ndarray], recv_counts: list[int], dtype) -> np.ndarray:
        import torch
        import torch.distributed as dist

        send = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0), dtype=dtype))
        recv = torch.empty(int(sum(recv_counts)), dtype=send.dtype)
        try:
            dist.all_to_all_single(recv, send, [int(c) for c in recv_counts], [int(p.size) for p in parts])
        except RuntimeError as error:
            self._failed = True
            raise self.diagnose(error) from None
        return recv.numpy()

    def all_to_all_int64(self, parts: list[np.ndarray], recv_counts: list[int]) -> np.ndarray:
        """Send ``parts[r]`` to rank ``r``; receive ``recv_counts[r]`` int64 values from each, in rank order."""
        return self._all_to_all(parts, recv_counts, np.int64)

    def all_to_all_float32(self, parts: list[np.ndarray], recv_counts: list[int]) -> np.ndarray:
        return self._all_to_all(parts, recv_counts, np.float32)

    def barrier(self) -> None:
        """Wait until every rank is here (a collective: a dead or hung rank is named)."""
        import torch.distributed as dist

        try:
            dist.barrier()
        except RuntimeError as error:
            self._failed = True
            raise self.diagnose(error) from None

    def close(self) -> None:
        """Leave the group (idempotent). After a clean run every rank waits for the others first,
        so rank 0, which hosts the store, does not leave while the others still use it."""
        import torch.distributed as dist

        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._beat_thread.join(timeout=2 * HEARTBEAT_S)
        if dist.is_initialized():
            if not self._failed:
                with contextlib.suppress(RuntimeError):  # a peer already gone: nothing to wait for
                    dist.barrier()
            dist.destroy_process_group()
