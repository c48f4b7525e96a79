"""Synthetic traces: Zipf-skewed or reuse-histogram-matched lookups with co-occurring topics.

:func:`synthetic_trace` is deterministic for a seed and vectorised; rows are drawn by
rank from a bounded Zipf law (FBGEMM's alpha convention) and mapped to row ids by a
keyed pseudo-random permutation, so hot rows are spread over the table.

Example:
    >>> from updlrm.specs import TableSpec
    >>> tr = synthetic_trace([TableSpec("a", 1000, 16)], batch_size=4, num_batches=2, pooling=2, seed=1)
    >>> tr.num_batches, tr.offsets.size
    (2, 9)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from updlrm.partitioner.ranges import concat_ranges
from updlrm.partitioner.reuse import ReuseHistogram
from updlrm.partitioner.trace import Trace
from updlrm.specs import TableSpec

__all__ = ["synthetic_trace"]


def _feistel_permute(x: np.ndarray, domain: int, key: int) -> np.ndarray:
    """A keyed pseudo-random bijection of ``[0, domain)``, evaluated element-wise.

    A balanced 4-round Feistel network on the smallest even bit width covering
    ``domain``, with cycle walking for values that land outside it. It permutes ids
    without materialising a ``domain``-sized permutation (tables have 10^7+ rows).

    >>> p = _feistel_permute(np.arange(10), 10, key=3)
    >>> sorted(p.tolist()) == list(range(10))
    True
    """
    x = np.asarray(x, dtype=np.uint64)
    if domain <= 1:
        return np.zeros(x.shape, dtype=np.int64)
    bits = max(2, int(domain - 1).bit_length())
    bits += bits & 1
    half = bits // 2
    mask = np.uint64((1 << half) - 1)
    keys = np.random.default_rng(key).integers(0, 1 << 62, size=4, dtype=np.uint64)
    mul = np.uint64(0x9E3779B97F4A7C15)

    def encrypt(v: np.ndarray) -> np.ndarray:
        left, right = v >> np.uint64(half), v & mask
        for k in keys:
            f = (right ^ k) * mul
            f ^= f >> np.uint64(29)
            left, right = right, left ^ (f & mask)
        return (left << np.uint64(half)) | right

    with np.errstate(over="ignore"):
        out = encrypt(x)
        outside = np.flatnonzero(out >= domain)
        while outside.size:
            out[outside] = encrypt(out[outside])
            outside = outside[out[outside] >= domain]
    return out.astype(np.int64)


def _bounded_zipf_ranks(rng: np.random.Generator, n: int, num_rows: int, alpha: float) -> np.ndarray:
    """``n`` ranks in ``[0, num_rows)`` with P(rank k) proportional to (k+1)^-alpha.

    The first 1024 ranks use the exact discrete CDF; the tail uses the inverse of the
    continuous density on [k-1/2, k+1/2) intervals, whose error per rank is below
    alpha*(alpha+1)/(24 k^2) < 1e-6 there. ``alpha == 0`` is uniform.

    >>> r = _bounded_zipf_ranks(np.random.default_rng(0), 100_000, 10, 1.0)
    >>> int(r.min()), int(r.max()), bool((r == 0).mean() > (r == 9).mean() * 5)
    (0, 9, True)
    """
    if alpha == 0 or num_rows == 1:
        return rng.integers(0, num_rows, size=n, dtype=np.int64)
    head = min(num_rows, 1024)
    k = np.arange(1, head + 1, dtype=np.float64)
    head_w = k**-alpha
    head_mass = head_w.sum()
    one_minus = 1.0 - alpha
    lo, hi = head + 0.5, num_rows + 0.5
    if num_rows > head:
        if abs(one_minus) < 1e-12:
            tail_mass = math.log(hi / lo)
        else:
            tail_mass = (hi**one_minus - lo**one_minus) / one_minus
    else:
        tail_mass = 0.0
    head_cdf = np.cumsum(head_w) / (head_mass + tail_mass)
    u = rng.random(n)
    ranks = np.searchsorted(head_cdf, u, side="right").astype(np.int64)
    in_tail = np.flatnonzero(ranks >= head)
    if in_tail.size:
        v = (u[in_tail] - head_cdf[-1]) / (1.0 - head_cdf[-1])
        if abs(one_minus) < 1e-12:
            x = lo * np.exp(v * math.log(hi / lo))
        else:
            x = (lo**one_minus + v * (hi**one_minus - lo**one_minus)) ** (1.0 / one_minus)
        ranks[in_tail] = np.clip(np.floor(x + 0.5).astype(np.int64), head + 1, num_rows) - 1
    return ranks


def _per_table(value, num_tables: int, name: str) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != num_tables:
            raise ValueError(f"{name}: got {len(value)} values for {num_tables} tables")
        return list(value)
    return [value] * num_tables


def _draw_lengths(rng: np.random.Generator, pooling: float, n: int, distribution: str) -> np.ndarray:
    if pooling < 0:
        raise ValueError(f"pooling must be >= 0, got {pooling}")
    if pooling == 0:
        return np.zeros(n, dtype=np.int64)
    if distribution == "fixed":
        if pooling != int(pooling):
            raise ValueError(f"fixed pooling needs an integer, got {pooling}")
        return np.full(n, int(pooling), dtype=np.int64)
    if distribution == "poisson":
        return rng.poisson(pooling, size=n).astype(np.int64)
    if distribution == "uniform":
        return rng.integers(0, int(round(2 * pooling)) + 1, size=n, dtype=np.int64)
    raise ValueError(f"unknown pooling_distribution {distribution!r}; choose fixed, poisson or uniform")


def _group_topics(
    rng: np.random.Generator, rows: np.ndarray, bag_of: np.ndarray, num_bags: int, co_occurrence: float, topic_of_row
) -> np.ndarray:
    """Reorder lookups so a ``co_occurrence`` share of each bag comes from one topic group.

    Only positions are exchanged, so every row keeps its exact count. The chosen
    lookups are sorted by (topic, round, random) and dealt out, in that order, to the chosen
    slots of the bags taken in random order: consecutive slots of a bag then hold
    rows of the same topic.
    """
    n = rows.size
    chosen = np.flatnonzero(rng.random(n) < co_occurrence)
    if chosen.size < 2:
        return rows
    picked = rows[chosen]
    # Round-robin within a topic (every member once, then members with a second
    # lookup, ...) so that a run of slots holds distinct rows of the topic rather than
    # copies of its hottest row.
    by_row = np.argsort(picked, kind="stable")
    sorted_rows = picked[by_row]
    run_start = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    run_len = np.diff(np.r_[run_start, sorted_rows.size])
    occurrence = np.empty(picked.size, dtype=np.uint64)
    occurrence[by_row] = (np.arange(picked.size) - np.repeat(run_start, run_len)).astype(np.uint64)
    topic = topic_of_row(picked).astype(np.uint64)
    key = (
        (topic << np.uint64(40))
        | (np.minimum(occurrence, np.uint64((1 << 20) - 1)) << np.uint64(20))
        | rng.integers(0, 1 << 20, size=picked.size, dtype=np.uint64)
    )
    stream = picked[np.argsort(key)]
    bag_rank = rng.permutation(num_bags)
    slot_order = chosen[np.argsort(bag_rank[bag_of[chosen]], kind="stable")]
    out = rows.copy()
    out[slot_order] = stream
    return out


def _redraw_repeats(
    rng: np.random.Generator, rows: np.ndarray, lengths: np.ndarray, num_rows: int, alpha: float, perm_key: int
) -> np.ndarray:
    """Make every bag hold distinct rows (bags must have <= num_rows lookups).

    Repeated entries are redrawn from the same law, revisiting only bags that still
    repeat; bags still crowded after a few rounds are drawn whole without replacement
    (Efraimidis-Spirakis: keys u^(1/p), the ``length`` largest win).
    """
    rows = rows.copy()
    num_bags = lengths.size
    starts = np.zeros(num_bags, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    dirty = np.arange(num_bags, dtype=np.int64)
    # Bags filling over a quarter of the table collide at nearly every redraw: draw them whole.
    rounds = 0 if lengths.size and lengths.mean() * 4 > num_rows else 8
    for _ in range(rounds):
        pos = concat_ranges(starts[dirty], lengths[dirty])
        key = np.repeat(dirty, lengths[dirty]) * num_rows + rows[pos]
        order = np.argsort(key)  # which copy of a repeat survives does not matter
        sorted_key = key[order]
        repeat = pos[order[1:][sorted_key[1:] == sorted_key[:-1]]]
        if repeat.size == 0:
            return rows
        rows[repeat] = _feistel_permute(_bounded_zipf_ranks(rng, repeat.size, num_rows, alpha), num_rows, perm_key)
        dirty = np.unique(np.searchsorted(starts, repeat, side="right") - 1)
    weights = np.arange(1, num_rows + 1, dtype=np.float64) ** -alpha
    ids = _feistel_permute(np.arange(num_rows), num_rows, perm_key)
    chunk = max(1, (1 << 23) // num_rows)
    for lo in range(0, dirty.size, chunk):
        bags = dirty[lo : lo + chunk]
        keys = np.log(rng.random((bags.size, num_rows))) / weights  # log of u^(1/p), same order
        order = np.argsort(-keys, axis=1)
        lens = lengths[bags]
        take = np.arange(num_rows)[None, :] < lens[:, None]
        rows[concat_ranges(starts[bags], lens)] = ids[order[take]]
    return rows


def synthetic_trace(
    tables: Sequence[TableSpec],
    *,
    batch_size: int,
    num_batches: int = 1,
    pooling: float | Sequence[float] = 32,
    alpha: float | Sequence[float] = 1.05,
    co_occurrence: float | Sequence[float] = 0.0,
    reuse_histogram: ReuseHistogram | Sequence[ReuseHistogram] | None = None,
    weighted: bool = False,
    seed: int = 0,
    pooling_distribution: str = "poisson",
    topic_size: int = 32,
    unique_per_bag: bool = False,
) -> Trace:
    """A deterministic synthetic trace with Zipf-skewed lookups and co-occurring rows.

    * Bag sizes: ``pooling_distribution`` around ``pooling`` (per table or scalar):
      ``poisson`` (default), ``fixed`` or ``uniform`` on ``[0, 2*pooling]``; 0 gives
      empty bags.
    * Popularity: P(rank k) proportional to k^-alpha over the table's rows, alpha
      being the Zipf exponent as in FBGEMM's ``generate_requests`` (``a`` of
      ``np.random.zipf``; FBGEMM bench utilities, ``fbgemm_gpu/bench``). Unlike
      FBGEMM, which folds the unbounded law with ``% E`` and treats alpha <= 1 as
      uniform, the law here is bounded to the table, so every alpha >= 0 is defined
      (0 = uniform). As in FBGEMM, ranks are mapped to row ids by a random
      permutation, so hot rows are scattered ids.
    * ``reuse_histogram``: instead of Zipf, per-row access counts are drawn to follow
      a :class:`ReuseHistogram` over the whole trace (see
      :meth:`ReuseHistogram.counts_for`); tables with fewer rows than the histogram
      needs fold extra rows onto existing ones (ids modulo the size).
    * ``co_occurrence`` in [0, 1]: the share of lookups moved into their row's
      "topic" group (rows are randomly grouped ``topic_size`` at a time), so that a
      bag's topic lookups come from one group; the rows' counts are unchanged.
    * ``weighted``: float32 per-sample weights uniform in [0, 1).
    * ``unique_per_bag``: no row twice in a bag, as FBGEMM's generator (it samples
      without replacement per bag); repeats are redrawn from the same law, bags are
      capped at the table size. Zipf mode only (a histogram fixes exact counts).

    Generation is vectorised (about 10^7 lookups per second) and the result depends
    only on the arguments.

    >>> from updlrm.specs import TableSpec
    >>> tr = synthetic_trace([TableSpec("t", 100, 8)], batch_size=3, pooling=2, seed=7, pooling_distribution="fixed")
    >>> tr.offsets.tolist(), tr.hash() == synthetic_trace([TableSpec("t", 100, 8)], batch_size=3, pooling=2,
    ...     seed=7, pooling_distribution="fixed").hash()
    ([0, 2, 4, 6], True)
    """
    tables = list(tables)
    if not tables:
        raise ValueError("synthetic_trace needs at least one table")
    if batch_size < 1 or num_batches < 1:
        raise ValueError(f"batch_size and num_batches must be >= 1, got {batch_size}, {num_batches}")
    if topic_size < 1:
        raise ValueError(f"topic_size must be >= 1, got {topic_size}")
    T, B, nb = len(tables), int(batch_size), int(num_batches)
    poolings = _per_table(pooling, T, "pooling")
    alphas = _per_table(alpha, T, "alpha")
    cos = _per_table(co_occurrence, T, "co_occurrence")
    hists = (
        _per_table(reuse_histogram, T, "reuse_histogram")
        if not isinstance(reuse_histogram, ReuseHistogram)
        else [reuse_histogram] * T
    )
    for t in range(T):
        if not 0.0 <= float(cos[t]) <= 1.0:
            raise ValueError(f"co_occurrence must be in [0, 1], got {cos[t]} for table {tables[t].name}")
        if float(alphas[t]) < 0:
            raise ValueError(f"alpha must be >= 0, got {alphas[t]} for table {tables[t].name}")

    if unique_per_bag and any(h is not None for h in hists):
        raise ValueError("unique_per_bag needs Zipf mode: a reuse histogram fixes every row's count")
    root = np.random.SeedSequence(seed)
    table_seeds = root.spawn(T)
    per_table_rows: list[np.ndarray] = []
    lens = np.empty((T, nb * B), dtype=np.int64)
    for t, spec in enumerate(tables):
        rng = np.random.default_rng(table_seeds[t])
        E = spec.num_embeddings
        perm_key, topic_key = (int(k) for k in rng.integers(0, 1 << 62, size=2))
        lens[t] = _draw_lengths(rng, float(poolings[t]), nb * B, pooling_distribution)
        if unique_per_bag:
            np.minimum(lens[t], E, out=lens[t])
        n = int(lens[t].sum())
        if hists[t] is not None:
            counts = hists[t].counts_for(n, rng)
            ranks = np.arange(counts.size, dtype=np.int64) % E
            rows = np.repeat(_feistel_permute(ranks, E, perm_key), counts)
            rows = rows[rng.permutation(rows.size)]
        else:
            rows = _feistel_permute(_bounded_zipf_ranks(rng, n, E, float(alphas[t])), E, perm_key)
        if float(cos[t]) > 0 and n:
            bag_of = np.repeat(np.arange(nb * B, dtype=np.int64), lens[t])
            rows = _group_topics(
                rng,
                rows,
                bag_of,
                nb * B,
                float(cos[t]),
                lambda r, E=E, k=topic_key: _feistel_permute(r, E, k) // topic_size,
            )
        if unique_per_bag and n:
            rows = _redraw_repeats(rng, rows, lens[t], E, float(alphas[t]), perm_key)
        per_table_rows.append(rows)

    # Interleave the table-major streams into the batch-major TBE layout.
    seg = lens.reshape(T, nb, B).sum(axis=2)  # lookups of (table, batch)
    src_start = np.concatenate(([0], np.cumsum(seg.ravel())[:-1])).reshape(T, nb)
    dst_len = seg.T.ravel()  # batch-major order (i, t)
    dst_start = np.concatenate(([0], np.cumsum(dst_len)[:-1])).reshape(nb, T).T
    stream = np.concatenate(per_table_rows) if per_table_rows else np.empty(0, np.int64)
    seg_id = np.repeat(np.arange(T * nb, dtype=np.int64), seg.ravel())
    shift = (dst_start - src_start).ravel()
    indices = np.empty_like(stream)
    indices[np.arange(stream.size, dtype=np.int64) + shift[seg_id]] = stream
    offsets = np.zeros(nb * T * B + 1, dtype=np.int64)
    np.cumsum(lens.reshape(T, nb, B).transpose(1, 0, 2).ravel(), out=offsets[1:])
    weights = None
    if weighted:
        weights = np.random.default_rng(root.spawn(1)[0]).random(indices.size, dtype=np.float32)
    return Trace(T, B, indices, offsets, weights, [s.name for s in tables])
