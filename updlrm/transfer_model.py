"""Host <-> DPU transfer times of the performance model: per-rank bandwidth, padding, SDK call costs.

:func:`transfer_time` models one parallel, serial or broadcast transfer; :func:`transfer_calls_time`
a list of the SDK calls a batch makes. :mod:`updlrm.perfmodel` uses them for the
``cpu_to_dpu`` and ``dpu_to_cpu`` phases and re-exports every public name here.

Example::

    >>> import numpy as np
    >>> from updlrm.hardware import get_profile
    >>> p = get_profile("upmem-350mhz-2556", nr_dpus=64)
    >>> transfer_time(np.full(64, 1 << 20), p) > transfer_time(np.full(64, 1 << 10), p)
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from updlrm.hardware import HardwareProfile, get_profile

__all__ = ["rank_bandwidth", "padded_total", "transfer_time", "transfer_calls_time"]

# --------------------------------------------------------------------------- host <-> DPU transfers
_DIRECTIONS = ("to_dpu", "from_dpu")
_MODES = ("parallel", "serial", "broadcast")


def _single_and_rank_bandwidth(profile: HardwareProfile, direction: str, mode: str) -> tuple[float, float]:
    if direction == "to_dpu":
        single = profile.xfer_to_dpu_single_bytes_per_s
        full = profile.xfer_broadcast_rank_bytes_per_s if mode == "broadcast" else profile.xfer_to_dpu_rank_bytes_per_s
    else:
        single = profile.xfer_from_dpu_single_bytes_per_s
        full = profile.xfer_from_dpu_rank_bytes_per_s
    return single, full


def rank_bandwidth(
    profile: HardwareProfile, nr_active_dpus: int | np.ndarray, direction: str = "to_dpu", mode: str = "parallel"
) -> np.ndarray | float:
    """Sustained bytes/s of one rank serving ``nr_active_dpus`` DPUs at once.

    The profile gives the two ends (1 DPU: ``B1``, a full rank of 64: ``B64``).
    Between them ``profile.xfer_curve`` picks the shape; both pass through
    both ends and grow with ``d``:

    * ``saturating``: ``B(d) = d*B1 / (1 + (d-1)*k)``, ``k`` set by ``B64``:
      a share ``k`` of each DPU's per-byte cost is serialised over the rank,
      the rest overlaps, so bandwidth saturates towards ``B1/k`` (PrIM Fig. 9;
      on 173 held-out real-hardware PrIM-app transfers it errs 21% on average);
    * ``power``: ``B(d) = B1 * d**gamma``, ``gamma = log(B64/B1) / log(64)``
      (32% on the same points: too slow at 4 DPUs, closer at 16).

    Serial transfers go one DPU at a time, so they stay at ``B1``.

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> round(rank_bandwidth(p, 64) / 1e9, 2), round(rank_bandwidth(p, 1) / 1e9, 2)
        (6.68, 0.33)
        >>> q = PROFILES["upmem-sdk-default-pool"]
        >>> round(rank_bandwidth(q, 64) / 1e9, 2), round(rank_bandwidth(q, 16) / 1e9, 2)
        (4.91, 3.41)
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if mode == "broadcast" and direction != "to_dpu":
        raise ValueError("broadcast transfers only go from the host to the DPUs")
    single, full = _single_and_rank_bandwidth(profile, direction, mode)
    d = np.asarray(nr_active_dpus, dtype=np.float64)
    if np.any(d < 0) or np.any(d > profile.dpus_per_rank):
        raise ValueError(f"a rank has 0..{profile.dpus_per_rank} DPUs, got {nr_active_dpus!r}")
    if mode == "serial":
        out = np.where(d > 0, single, 0.0)
    else:
        rank = profile.dpus_per_rank
        if profile.xfer_curve == "power":
            gamma = math.log(full / single) / math.log(rank) if rank > 1 else 0.0
            out = np.where(d > 0, single * np.maximum(d, 1.0) ** gamma, 0.0)
        else:
            # k = 0 would mean perfect scaling; a published full-rank figure above
            # rank * B1 cannot be matched by this shape, so it is clamped there.
            k = max((rank * single / full - 1.0) / (rank - 1), 0.0) if rank > 1 else 0.0
            out = np.where(d > 0, d * single / (1.0 + np.maximum(d - 1.0, 0.0) * k), 0.0)
    return float(out) if out.ndim == 0 else out


def padded_total(bytes_per_dpu: np.ndarray, dpus_per_rank: int) -> float:
    """Bytes a parallel transfer moves: every DPU of a rank padded to the rank's largest buffer.

    DPU ``i`` sits in rank ``i // dpus_per_rank``; the last rank may be partial.

    Example::

        >>> padded_total(np.array([1.0, 3.0, 2.0]), 2)
        8.0
    """
    per_dpu = np.asarray(bytes_per_dpu, dtype=np.float64)
    n = per_dpu.size
    ranks = -(-n // dpus_per_rank)
    padded = np.zeros(ranks * dpus_per_rank)
    padded[:n] = per_dpu
    rank_max = padded.reshape(ranks, dpus_per_rank).max(axis=1)
    dpus = np.minimum(dpus_per_rank, n - dpus_per_rank * np.arange(ranks))
    return float((rank_max * dpus).sum())


def transfer_time(bytes_per_dpu, profile: HardwareProfile, direction: str = "to_dpu", mode: str = "parallel") -> float:
    """Seconds to move ``bytes_per_dpu[i]`` bytes between the host and DPU ``i``.

    * ``parallel`` (``dpu_push_xfer``): each rank's buffers are padded to its
      largest one; a rank moves ``d * max`` bytes at :func:`rank_bandwidth`;
      ranks run concurrently (up to ``xfer_host_cap_bytes_per_s`` in total);
      one fixed call cost.
    * ``serial`` (``dpu_copy_to`` per DPU): one call and one single-DPU
      transfer after the other; DPUs with 0 bytes are skipped.
    * ``broadcast``: the same buffer (the largest entry) to every DPU listed.

    DPUs with 0 bytes still take part in a parallel transfer (they belong to the
    DPU set), which is what padding means.  All-zero input costs nothing.

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> t1 = transfer_time([1 << 20] * 64, p)
        >>> t2 = transfer_time([1 << 20] + [8] * 63, p)   # padded to 1 MiB anyway
        >>> t1 == t2
        True
    """
    rank_bandwidth(profile, 1, direction, mode)  # rejects a bad direction/mode before any work
    b = np.asarray(bytes_per_dpu, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"bytes_per_dpu must be 1-D, got shape {b.shape}")
    if len(b) > profile.nr_dpus:
        raise ValueError(f"{len(b)} DPUs given but profile {profile.name!r} has {profile.nr_dpus}")
    if np.any(b < 0) or not np.all(np.isfinite(b)):
        raise ValueError("bytes_per_dpu must be finite and >= 0")
    if len(b) == 0 or not np.any(b > 0):
        return 0.0
    if mode == "serial":
        active = b[b > 0]
        single = rank_bandwidth(profile, 1, direction, "serial")
        return float(len(active) * profile.xfer_fixed_overhead_s + active.sum() / single)
    if mode == "broadcast":
        b = np.full(len(b), b.max())
    per_rank = profile.dpus_per_rank
    nr_ranks = -(-len(b) // per_rank)
    padded = np.zeros(nr_ranks * per_rank)
    padded[: len(b)] = b
    rank_max = padded.reshape(nr_ranks, per_rank).max(axis=1)
    rank_dpus = np.minimum(per_rank, len(b) - per_rank * np.arange(nr_ranks))
    rank_bytes = rank_max * rank_dpus
    busy = rank_max > 0
    rank_time = np.zeros(nr_ranks)
    rank_time[busy] = rank_bytes[busy] / rank_bandwidth(profile, rank_dpus[busy], direction, mode)
    seconds = rank_time.max()
    if profile.xfer_host_cap_bytes_per_s is not None:
        seconds = max(seconds, rank_bytes.sum() / profile.xfer_host_cap_bytes_per_s)
    return float(profile.xfer_fixed_overhead_s + seconds)


def transfer_calls_time(
    calls: Iterable[Mapping[str, Any]], profile: HardwareProfile, nr_dpus: int, direction: str = "to_dpu"
) -> float:
    """Seconds of a sequence of SDK transfer calls, each moving the same bytes to/from ``nr_dpus`` DPUs.

    ``calls``: mappings with ``mode`` (``parallel``/``serial``/``broadcast``),
    ``bytes_per_dpu`` and optionally ``count`` (repetitions, default 1) -- how
    a host program's timer is spent, e.g. PrIM VA's CPU-DPU phase is an
    argument push and two vector pushes.  Each call costs :func:`transfer_time`;
    the profile is widened to ``nr_dpus`` if it has fewer.

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-sdk-default-pool"]
        >>> va_push = [{"mode": "parallel", "bytes_per_dpu": 12},
        ...            {"mode": "parallel", "bytes_per_dpu": 1 << 20, "count": 2}]
        >>> t = transfer_calls_time(va_push, p, 4)
        >>> t == transfer_time([12] * 4, p) + 2 * transfer_time([1 << 20] * 4, p)
        True
    """
    if int(nr_dpus) != nr_dpus or nr_dpus < 1:
        raise ValueError(f"nr_dpus must be a positive integer, got {nr_dpus!r}")
    nr_dpus = int(nr_dpus)
    if nr_dpus > profile.nr_dpus:
        profile = get_profile(profile, nr_dpus=nr_dpus)
    seconds = 0.0
    for call in calls:
        count = call.get("count", 1)
        if int(count) != count or count < 0:
            raise ValueError(f"a call's count must be a non-negative integer, got {count!r}")
        one = transfer_time(np.full(nr_dpus, float(call["bytes_per_dpu"])), profile, direction, str(call["mode"]))
        seconds += int(count) * one
    return seconds
