"""Stage 4b of the planner: DPUs renamed so that DPUs with similar transfer sizes share a rank.

A parallel transfer (``dpu_push_xfer``) moves every DPU of a rank at the size of the
rank's largest buffer (:func:`updlrm.transfer_model.padded_total`), and DPU ``d`` sits in
rank ``d // dpus_per_rank``.  The DPU assignment (:mod:`.assign`) picks DPU ids without
regard to ranks, so a rank with one heavy DPU pads its other DPUs to it.  Every DPU has
the same MRAM, so renaming DPUs (a permutation of the ids) changes neither fit, kernel
time nor fan-out -- only which DPUs are padded together.

:func:`order_ranks` takes each build batch's bytes to and from every DPU, as the
evaluator counts them (:class:`~.evaluate.PlanReport` ``index_bytes``/``output_bytes``),
and tries DPU orders sorted by the DPUs' mean bytes: by output bytes (ties by input
bytes), by input bytes (ties by output), and by the modeled seconds of both.  An order
is only considered when it is cross-fitted: the order the even batches give pads the odd
batches less, and the other way round (otherwise it sorts batch-to-batch noise, which
pads held-out batches more: with one build batch no order is considered).  It keeps
the order with the least modeled rank-padded transfer time on those batches,
``padded_in / B_in + padded_out / B_out`` (``B``: a full rank's bandwidth each way,
:func:`transfer_weights`), among the orders that pad neither direction more than the
assignment's own order did (which is kept when none is better).  That is the transfer
time the perfmodel charges when the host's memory bus, not the ranks, limits the
transfers; with ranks modeled as fully concurrent (no ``xfer_host_cap_bytes_per_s``)
a batch's transfer time follows the largest buffer of all, which no renaming changes.
:func:`relabel_plan` applies the renaming to a plan.

Example:
    >>> index_bytes = np.array([[8.0, 1.0, 1.0, 8.0], [7.0, 2.0, 1.0, 9.0]])  # 2 batches, 4 DPUs, ranks of 2
    >>> order = order_ranks(index_bytes, index_bytes, 2, (1.0, 1.0))
    >>> order.new_id.tolist(), order.bytes_in_padded
    ([2, 1, 0, 3], (32.0, 20.0))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from updlrm.hardware import HardwareProfile
from updlrm.plan import Plan, PlanError
from updlrm.transfer_model import padded_total, rank_bandwidth

__all__ = ["RankOrder", "order_ranks", "relabel_plan", "transfer_weights"]


@dataclass(frozen=True)
class RankOrder:
    """A renaming of DPUs: DPU ``d`` of the assignment becomes DPU ``new_id[d]``.

    ``key``: the order chosen (``assignment``: the ids as assigned, ``output``, ``input``
    or ``time``); ``bytes_in_padded``/``bytes_out_padded``: rank-padded bytes per batch
    (before, after) on the batches it was chosen on; ``bytes_in``/``bytes_out``: the
    unpadded bytes per batch, which no renaming changes.
    """

    new_id: np.ndarray
    key: str
    bytes_in_padded: tuple[float, float]
    bytes_out_padded: tuple[float, float]
    bytes_in: float
    bytes_out: float

    def to_dict(self) -> dict[str, Any]:
        """What ``plan.metadata["rank_order"]`` records (the renaming itself is the plan)."""
        return {
            "key": self.key,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bytes_in_padded": list(self.bytes_in_padded),
            "bytes_out_padded": list(self.bytes_out_padded),
        }


def transfer_weights(profile: HardwareProfile) -> tuple[float, float]:
    """Seconds per padded byte in (host -> DPU) and out (DPU -> host) at a full rank's bandwidth.

    >>> from updlrm.hardware import get_profile
    >>> w_in, w_out = transfer_weights(get_profile("upmem-350mhz-2556"))
    >>> round(w_out / w_in, 2)   # PrIM: 6.68 GB/s in, 4.74 GB/s out per rank
    1.41
    """
    full = profile.dpus_per_rank
    return (
        1.0 / float(rank_bandwidth(profile, full, "to_dpu")),
        1.0 / float(rank_bandwidth(profile, full, "from_dpu")),
    )


def _mean_padded(bytes_per_batch: np.ndarray, dpus_per_rank: int) -> float:
    """Rank-padded bytes per batch (rows: batches, columns: DPUs), averaged over batches."""
    if bytes_per_batch.shape[0] == 0:
        return 0.0
    return float(np.mean([padded_total(b, dpus_per_rank) for b in bytes_per_batch]))


def _renaming(order: np.ndarray) -> np.ndarray:
    """``new_id`` that puts DPU ``order[k]`` at id ``k``."""
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.size)
    return new_id


_KEYS = ("output", "input", "time")


def _order(key: str, index_bytes: np.ndarray, output_bytes: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """DPUs lightest first by their mean bytes over the batches (rows): ``key`` says which."""
    mean_in, mean_out = index_bytes.mean(axis=0), output_bytes.mean(axis=0)
    if key == "output":
        return np.lexsort((mean_in, mean_out))
    if key == "input":
        return np.lexsort((mean_out, mean_in))
    return np.lexsort((mean_out, weights[0] * mean_in + weights[1] * mean_out))


def _pads_less(
    order: np.ndarray,
    index_bytes: np.ndarray,
    output_bytes: np.ndarray,
    dpus_per_rank: int,
    weights: tuple[float, float],
) -> bool:
    """Whether ``order`` pads these batches less (in modeled seconds, neither direction more) than the ids as they are."""
    if index_bytes.shape[0] == 0:
        return False
    before = _mean_padded(index_bytes, dpus_per_rank), _mean_padded(output_bytes, dpus_per_rank)
    after = _mean_padded(index_bytes[:, order], dpus_per_rank), _mean_padded(output_bytes[:, order], dpus_per_rank)
    seconds = weights[0] * (after[0] - before[0]) + weights[1] * (after[1] - before[1])
    return after[0] <= before[0] and after[1] <= before[1] and seconds < 0


def order_ranks(
    index_bytes: np.ndarray,
    output_bytes: np.ndarray,
    dpus_per_rank: int,
    weights: tuple[float, float],
) -> RankOrder:
    """The DPU renaming that least pads ``index_bytes``/``output_bytes`` (batches x DPUs) per rank.

    ``weights``: seconds per padded byte in and out (:func:`transfer_weights`).  DPUs
    are sorted by their mean bytes over the batches, lightest first, so that a last,
    partial rank holds the heaviest DPUs; see the module docstring for the orders tried
    and the rule that picks one.  Neither direction's padded bytes on these batches
    grow.  Deterministic.

    >>> out = np.array([[1.0, 9.0, 2.0, 8.0], [2.0, 9.0, 1.0, 7.0]])
    >>> order = order_ranks(np.ones((2, 4)), out, 2, (1.0, 1.0))
    >>> order.key, order.new_id.tolist(), order.bytes_out_padded
    ('output', [0, 3, 1, 2], (33.0, 22.0))
    """
    index_bytes = np.asarray(index_bytes, dtype=np.float64)
    output_bytes = np.asarray(output_bytes, dtype=np.float64)
    if index_bytes.ndim != 2 or index_bytes.shape != output_bytes.shape:
        raise PlanError(
            f"order_ranks needs bytes in and out as (batches, DPUs) arrays of one shape, got "
            f"{index_bytes.shape} and {output_bytes.shape}"
        )
    n = index_bytes.shape[1]
    w_in, w_out = weights
    before_in = _mean_padded(index_bytes, dpus_per_rank)
    before_out = _mean_padded(output_bytes, dpus_per_rank)
    best = ("assignment", np.arange(n), before_in, before_out)
    best_s = w_in * before_in + w_out * before_out
    folds = (slice(0, None, 2), slice(1, None, 2))
    for key in _KEYS if n > dpus_per_rank else ():  # one rank: every order pads alike
        # Cross-fitted: the order the even batches give must pad the odd ones less, and
        # the other way round, or it fits batch-to-batch noise.
        if not all(
            _pads_less(
                _order(key, index_bytes[a], output_bytes[a], weights),
                index_bytes[b],
                output_bytes[b],
                dpus_per_rank,
                weights,
            )
            for a, b in (folds, folds[::-1])
        ):
            continue
        order = _order(key, index_bytes, output_bytes, weights)
        padded_in = _mean_padded(index_bytes[:, order], dpus_per_rank)
        padded_out = _mean_padded(output_bytes[:, order], dpus_per_rank)
        seconds = w_in * padded_in + w_out * padded_out
        if padded_in <= before_in and padded_out <= before_out and seconds < best_s:
            best, best_s = (key, order, padded_in, padded_out), seconds
    key, order, after_in, after_out = best
    unpadded = index_bytes.sum(axis=1), output_bytes.sum(axis=1)
    return RankOrder(
        new_id=_renaming(np.asarray(order, dtype=np.int64)),
        key=key,
        bytes_in_padded=(before_in, after_in),
        bytes_out_padded=(before_out, after_out),
        bytes_in=float(unpadded[0].mean()) if unpadded[0].size else 0.0,
        bytes_out=float(unpadded[1].mean()) if unpadded[1].size else 0.0,
    )


def relabel_plan(plan: Plan, new_id: np.ndarray) -> Plan:
    """``plan`` with DPU ``d`` renamed ``new_id[d]``: the shards (in their order, which routing
    follows) and the expected load move with their DPU; metadata is kept.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(3))
    >>> [(s.dpu, s.rows) for s in relabel_plan(p, np.array([2, 0, 1])).shards]
    [(2, range(0, 3)), (0, range(3, 5)), (1, range(5, 8))]
    """
    n = plan.topology.nr_dpus
    new_id = np.asarray(new_id, dtype=np.int64)
    if new_id.shape != (n,) or not np.array_equal(np.sort(new_id), np.arange(n)):
        raise PlanError(f"a DPU renaming must be a permutation of the plan's {n} DPU ids")
    load = None
    if plan.expected_load is not None:
        load = np.empty_like(plan.expected_load)
        load[new_id] = plan.expected_load
    return replace(
        plan,
        shards=[replace(s, dpu=int(new_id[s.dpu])) for s in plan.shards],
        expected_load=load,
        metadata=dict(plan.metadata),
    )
