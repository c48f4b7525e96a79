"""Row popularity that extrapolates beyond the trace: smoothed counts, a Zipf fit, a prior for unseen rows.

A trace is a sample.  Raw counts give every row the trace missed a probability of zero
and every row seen once ``1/N``; future traffic disagrees on both.  Per table,
:func:`fit_popularity` returns a :class:`Popularity`:

* ``exponent``: the Zipf exponent ``s`` of ``count(rank r) ~ C r^-s``, a least-squares
  fit of log count on log rank over the ranks whose counts are not dominated by
  sampling noise (count >= ``min_fit_count``);
* ``unseen_mass``: the expected share of future lookups that go to rows the trace never
  saw -- Good-Turing's ``N1 / N`` (rows seen once, over lookups), or the planner's
  cross-fitted missing mass when that is larger (bursty traffic, where whole users or
  items appear in one stretch of the trace, misses more than ``N1 / N`` says);
* a prior for those rows: the unseen mass spread evenly over the rows the trace never
  saw (:attr:`Popularity.unseen_row_share`);
* :meth:`Popularity.shares`: every row's expected share of traffic -- counts at the head,
  the Zipf curve at the noisy tail, scaled to ``1 - unseen_mass``, and the prior.

The planner (:func:`~updlrm.partitioner.expected_loads.table_workloads`) takes the
unseen mass from here; the layout search then weighs holding a small table whole in
the host cache, the only way to catch traffic to rows nobody has seen yet.

Example:
    >>> rng = np.random.default_rng(0)
    >>> p = 1.0 / np.arange(1, 5001) ** 1.1
    >>> rows = rng.choice(5000, size=50_000, p=p / p.sum())
    >>> pop = fit_popularity(np.bincount(rows, minlength=5000), 5000)
    >>> abs(pop.exponent - 1.1) < 0.1, 0 < pop.unseen_mass < 0.05, pop.unseen_rows > 0
    (True, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Popularity", "fit_popularity", "MIN_FIT_COUNT"]

# Ranks with fewer lookups than this are mostly sampling noise (and the flat run of
# count-1 rows censors the curve): the Zipf fit and the smoothed shares use the fitted
# curve there, the counts above.
MIN_FIT_COUNT = 5


@dataclass(frozen=True)
class Popularity:
    """A table's fitted popularity (see the module doc).

    ``num_rows``: rows of the table; ``seen``: distinct rows in the trace; ``lookups``:
    its lookups; ``exponent``/``scale``: the Zipf curve ``count(r) = scale * r^-exponent``
    over ranks ``r = 1, 2, ...`` (``nan`` when too few ranks to fit); ``singletons``: rows
    seen once; ``unseen_mass``: expected share of future lookups to rows not in the trace.

    >>> pop = fit_popularity(np.array([8, 4, 2, 1, 1, 0, 0, 0]), 8)
    >>> pop.seen, pop.unseen_rows, round(pop.unseen_mass, 3), round(pop.unseen_row_share, 4)
    (5, 3, 0.125, 0.0417)
    >>> print(pop)
    Popularity(5/8 rows seen in 16 lookups, Zipf s=nan, unseen mass 12.5%)
    """

    num_rows: int
    seen: int
    lookups: int
    exponent: float
    scale: float
    singletons: int
    unseen_mass: float

    def __str__(self) -> str:
        return (
            f"Popularity({self.seen}/{self.num_rows} rows seen in {self.lookups} lookups, "
            f"Zipf s={self.exponent:.3g}, unseen mass {self.unseen_mass:.1%})"
        )

    @property
    def unseen_rows(self) -> int:
        return self.num_rows - self.seen

    @property
    def unseen_row_share(self) -> float:
        """The prior: expected share of traffic of each row the trace never saw."""
        return self.unseen_mass / self.unseen_rows if self.unseen_rows else 0.0

    def shares(self, counts: np.ndarray) -> np.ndarray:
        """Every row's expected share of future lookups, from the per-row ``counts`` the model was fitted on.

        Rows counted at least :data:`MIN_FIT_COUNT` times keep their counts; rarer seen
        rows take the Zipf curve at their rank (when fitted); the seen rows share
        ``1 - unseen_mass``, the unseen ones :attr:`unseen_row_share` each.  Sums to 1.

        >>> counts = np.array([8, 4, 2, 1, 1, 0, 0, 0])
        >>> s = fit_popularity(counts, 8).shares(counts)
        >>> round(float(s.sum()), 6), bool(s[5] > 0), bool(s[0] > s[1] > s[2])
        (1.0, True, True)
        """
        counts = np.asarray(counts, dtype=np.float64)
        out = np.full(counts.size, self.unseen_row_share)
        seen = counts > 0
        if not seen.any():
            return out if self.unseen_rows else np.full(counts.size, 1.0 / max(counts.size, 1))
        smoothed = counts.copy()
        if np.isfinite(self.exponent):
            order = np.argsort(-counts, kind="stable")
            rank = np.empty(counts.size, dtype=np.float64)
            rank[order] = np.arange(1, counts.size + 1)
            tail = seen & (counts < MIN_FIT_COUNT)
            smoothed[tail] = self.scale * rank[tail] ** -self.exponent
        out[seen] = (1.0 - self.unseen_mass) * smoothed[seen] / smoothed[seen].sum()
        return out


def fit_popularity(counts: np.ndarray, num_rows: int, *, missing_mass: float = 0.0) -> Popularity:
    """Fit a :class:`Popularity` to per-row ``counts`` (any order; zeros allowed) of a table of ``num_rows`` rows.

    ``missing_mass``: another estimate of the unseen share (the planner's cross-fitted
    one); the larger of it and Good-Turing's is kept.  The unseen mass is 0 when every
    row was seen, 1 when none was.

    >>> pop = fit_popularity(np.array([3, 1, 1]), 10, missing_mass=0.5)
    >>> pop.unseen_mass, pop.unseen_rows
    (0.5, 7)
    >>> fit_popularity(np.array([], dtype=int), 0).unseen_mass
    0.0
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and counts.min() < 0):
        raise ValueError("counts must be a 1-D array of non-negative lookups per row")
    positive = np.sort(counts[counts > 0])[::-1].astype(np.float64)
    seen, lookups = int(positive.size), float(positive.sum())
    if seen > num_rows:
        raise ValueError(f"{seen} rows seen in a table of {num_rows} rows")
    singletons = int(np.count_nonzero(positive == 1))
    good_turing = singletons / lookups if lookups else 0.0
    # No lookups at all: every row is unseen, and the prior is uniform.
    unseen = 0.0 if seen >= num_rows else 1.0 if not lookups else min(1.0, max(good_turing, float(missing_mass)))
    exponent = scale = float("nan")
    fit = np.flatnonzero(positive >= MIN_FIT_COUNT)
    if fit.size >= 3:
        x, y = np.log(fit + 1.0), np.log(positive[fit])
        slope, intercept = np.polyfit(x, y, 1)
        exponent, scale = float(-slope), float(np.exp(intercept))
    return Popularity(int(num_rows), seen, int(lookups), exponent, scale, singletons, unseen)
