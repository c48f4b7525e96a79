"""How much a DPU's load varies from batch to batch, and what that makes of the batch's straggler.

The layout search (:mod:`updlrm.partitioner.search`) charges each DPU its expected
lookups plus ``straggler_z(n)`` standard deviations, with the variance from
:func:`part_dispersion`: the batch waits for its busiest DPU, which
:func:`~updlrm.partitioner.evaluate.evaluate_plan` times batch by batch.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

__all__ = ["part_dispersion", "straggler_z"]


def part_dispersion(bag_sizes: np.ndarray, parts: int) -> float:
    """Batch-to-batch variance over mean of the lookups one of ``parts`` balanced row parts gets.

    ``bag_sizes[u]``: bags with ``u`` DPU-served lookups.  A part sees the bags of its
    replica and from each a binomial share ``1/parts`` of its lookups ``u``, so its
    lookups per batch have variance over mean ``(1 - 1/k) + Var(u) / (k E[u])``: 1
    (Poisson) for many parts, the bags' own dispersion for one part, which then serves
    a bag's lookups all at once.

    >>> part_dispersion(np.array([0, 0, 0, 0, 10]), 1), part_dispersion(np.array([5, 0, 0, 0, 0, 0, 0, 0, 5]), 1)
    (0.0, 4.0)
    >>> part_dispersion(np.array([5, 0, 0, 0, 0, 0, 0, 0, 5]), 4)
    1.75
    """
    total = float(bag_sizes.sum())
    u = np.arange(bag_sizes.size, dtype=np.float64)
    mean = float((bag_sizes * u).sum()) / total if total else 0.0
    if mean <= 0:
        return 1.0
    var = float((bag_sizes * u * u).sum()) / total - mean * mean
    return (1.0 - 1.0 / parts) + var / (parts * mean)


def straggler_z(n: int) -> float:
    """Expected maximum of ``n`` independent standard normal variables, by Blom's approximation.

    Blom (1958), *Statistical Estimates and Transformed Beta-Variables*: the ``i``-th of
    ``n`` order statistics sits near the ``(i - 0.375) / (n + 0.25)`` quantile.

    >>> round(straggler_z(256), 2), straggler_z(1)
    (2.81, 0.0)
    """
    if n <= 1:
        return 0.0
    return NormalDist().inv_cdf((n - 0.375) / (n + 0.25))
