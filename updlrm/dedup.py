"""In-batch deduplication of identical bags (RecD's IKJT idea), decided per batch.

In ranking, one request scores hundreds of candidates for one user: the user's features
are the same bag in every sample. Per feature, bags with the same indices in the same
order and the same per-sample weights give the same pooled row, so each distinct bag is
computed once and the ``B`` output rows are expanded from it by *inverse indices*
(RecD: Zhao et al., "RecD: Deduplication for End-to-End Deep Learning Recommendation
Model Training Infrastructure", MLSys 2023; torchrec's variable-batch KJT carries the
same unique bags + inverse indices).

How it is decided, per batch and per feature (all numpy, vectorised over features):

1. **Estimate** (``mode="auto"``): a sample of ``SAMPLE_RUNS`` runs of ``SAMPLE_RUN``
   neighbouring bags, evenly spaced, and a signature per sampled bag (length, first and
   last value and weight); a feature is deduplicated when at least ``MIN_REPEATED`` of
   the sample repeat (a ranking request's user feature: 255 of 256; a candidate feature:
   about 0; a user with two neighbouring candidates: half). Features that do not pass
   cost only the sample.
2. **Hash** every bag of the chosen features, all features in one pass: a polynomial in
   the bag's values (so order counts) plus its weights' bits and its length, computed
   from prefix sums over the whole value sequence.
3. **Verify**: every bag grouped with an earlier one by hash is compared value by value
   (and weight bits) with it; a hash collision leaves the bag on its own. So the result
   is exact: a bag is only ever replaced by an identical one.

The distinct bags keep their first-appearance order; if none repeat, the feature runs
as without dedup. ``mode=True`` skips the estimate, ``False`` never deduplicates.

Outputs: integer row formats give bit-identical results with and without dedup (exact
int64 sums). fp32 sums are the same additions but the engine's split of a DPU's lookups
over tasklets depends on where a bag sits in the batch, which can regroup its partial
sums: results then agree to float rounding (bit-identical with one tasklet per DPU and
no replicated rows).

Example:
    >>> import numpy as np
    >>> values = np.array([5, 6, 5, 6, 7, 5, 6])
    >>> offsets = np.array([0, 2, 4, 5, 7])          # bags [5,6] [5,6] [7] [5,6]
    >>> first, inverse = unique_bags(values, None, offsets)
    >>> first.tolist(), inverse.tolist()
    ([0, 2], [0, 0, 1, 0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["unique_bags", "choose_bags", "MIN_REPEATED", "SAMPLE_RUNS", "SAMPLE_RUN"]

# The estimate's sample: runs of neighbouring bags, evenly spaced over the batch.
SAMPLE_RUNS = 32
SAMPLE_RUN = 8

# Deduplicate a feature when at least this fraction of its sampled bags (by signature)
# repeat another. Below it the saved lookups (the fraction) do not pay for hashing every value
# plus the expansion; benchmarks/bench_dedup.py measures both sides (its threshold sweep).
MIN_REPEATED = 0.25

# Bag hash: a polynomial over the bag's values, sum of v_k * R**k (k = position in the bag)
# mod 2**64, computed for all bags at once from prefix sums of v_e * R**e over the whole
# sequence, then shifted by R**-start (R is odd, so invertible mod 2**64). A collision
# only costs a missed duplicate: every grouping is verified value by value.
_R = 0x9E3779B97F4A7C15  # odd: 2**64 / golden ratio
_R_INV = pow(_R, -1, 1 << 64)
_WEIGHT = np.uint64(0xD6E8FEB86659FD93)
_LENGTH = np.uint64(0xA0761D6478BD642F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser constants (Steele et al.,
_M2 = np.uint64(0x94D049BB133111EB)  # "Fast splittable pseudorandom number generators", 2014)
_powers_cache: tuple[np.ndarray, np.ndarray] = (np.ones(1, np.uint64), np.ones(1, np.uint64))


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """R**e and R**-e mod 2**64 for e < n (cached, grown by doubling; safe under threads)."""
    P, Q = _powers_cache
    if P.size >= n:
        return P, Q
    size = max(n, 2 * P.size, 1024)
    P = np.full(size, _R, dtype=np.uint64)
    Q = np.full(size, _R_INV, dtype=np.uint64)
    P[0] = Q[0] = 1
    np.cumprod(P, out=P)
    np.cumprod(Q, out=Q)
    globals()["_powers_cache"] = (P, Q)
    return P, Q


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _as_u64(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64) if values.dtype == np.int64 else values.astype(np.int64).view(np.uint64)


def _hash_bags(seq: np.ndarray, wbits: np.ndarray | None, local: np.ndarray) -> np.ndarray:
    """Hash of every bag of a value sequence (uint64) with bag boundaries ``local`` (starts at 0)."""
    n = seq.size
    P, Q = _powers(n + 1)
    h = seq * P[:n]
    if wbits is not None:
        h += (wbits * _WEIGHT) * P[:n]
    cs = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(h, out=cs[1:])
    starts = local[:-1]
    bag = (cs[local[1:]] - cs[starts]) * Q[starts]
    bag += np.diff(local).astype(np.uint64) * _LENGTH
    return _mix(bag)


def _segment(values, weights, offsets, lo: int, hi: int):
    """Bags lo..hi (contiguous) as a value sequence: (values u64, weight bits or None, local offsets)."""
    a, b = int(offsets[lo]), int(offsets[hi])
    seq = _as_u64(values[a:b])
    wbits = None if weights is None else weights[a:b].view(np.uint32).astype(np.uint64)
    return seq, wbits, offsets[lo : hi + 1] - a


def _representatives(
    seq: np.ndarray, wbits: np.ndarray | None, local: np.ndarray, group: np.ndarray | None = None
) -> np.ndarray:
    """For each bag, the first identical bag (itself if none): hash, group, then verify.

    With ``group`` (e.g. the feature of every bag) only bags of one group are merged.
    """
    nbags = local.size - 1
    h = _hash_bags(seq, wbits, local)
    if group is not None:
        h ^= _mix((group.astype(np.uint64) + np.uint64(1)) * _LENGTH)
    # First occurrence of every hash: a stable sort keeps equal hashes in bag order.
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    new = np.empty(nbags, dtype=bool)
    new[:1] = True
    np.not_equal(sorted_h[1:], sorted_h[:-1], out=new[1:])
    first_of_run = order[np.flatnonzero(new)]
    rep = np.empty(nbags, dtype=np.int64)
    rep[order] = first_of_run[np.cumsum(new) - 1]
    me = np.arange(nbags, dtype=np.int64)
    lengths = np.diff(local)
    same = lengths[rep] == lengths
    if group is not None:
        same &= group[rep] == group
    rep = np.where(same, rep, me)
    if (rep == me).all():
        return rep
    # Element k of bag b (seq[local[b] + k]) against element k of rep[b] (seq[local[rep[b]] + k]).
    shift = np.repeat(local[:-1][rep] - local[:-1], lengths)
    shift += np.arange(seq.size, dtype=np.int64)
    differ = seq[shift] != seq
    if wbits is not None:
        differ |= wbits[shift] != wbits
    if differ.any():
        wrong = np.unique(np.searchsorted(local, np.flatnonzero(differ), side="right") - 1)
        rep[wrong] = wrong
    return rep


def unique_bags(values: np.ndarray, weights: np.ndarray | None, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct bags of one jagged batch: (first occurrence of each, inverse of every bag).

    Bags are equal when their values (in order) and weights are equal, compared exactly.
    ``bags[first[inverse[b]]]`` equals bag ``b``; ``first`` is in order of appearance.

    >>> unique_bags(np.array([1, 2, 2, 1]), np.array([1, 1, 1, 1], np.float32), np.array([0, 2, 4, 4, 4]))
    (array([0, 1, 2]), array([0, 1, 2, 2]))
    """
    values = np.ascontiguousarray(values, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if weights is not None:
        weights = np.ascontiguousarray(weights, dtype=np.float32)
    rep = _representatives(*_segment(values, weights, offsets, 0, offsets.size - 1))
    is_first = rep == np.arange(rep.size)
    rank = np.cumsum(is_first) - 1
    return np.flatnonzero(is_first), rank[rep]


def _sample_positions(B: int) -> np.ndarray:
    """``SAMPLE_RUNS`` runs of ``SAMPLE_RUN`` neighbouring bags, evenly spaced (all bags if fewer).

    Runs see repeats between neighbours (a user with consecutive candidates); spacing
    sees repeats across the batch (the same user everywhere, or a batch that is two
    copies of itself).
    """
    if B <= SAMPLE_RUNS * SAMPLE_RUN:
        return np.arange(B, dtype=np.int64)
    starts = (np.arange(SAMPLE_RUNS, dtype=np.int64) * B) // SAMPLE_RUNS
    return (starts[:, None] + np.arange(SAMPLE_RUN, dtype=np.int64)).reshape(-1)


def _estimate(batch: Any, keys: list[int]) -> np.ndarray:
    """Fraction of repeated bags per key in a sample of the batch, from bag signatures.

    The signature (length, first and last value, their weights) costs a few gathers per
    sampled bag; identical bags have identical signatures, so the fraction can only
    overstate the sample's repeats (the exact pass corrects that).
    """
    pos = _sample_positions(batch.batch_size)
    S = pos.size
    bags = (batch.bag_start[np.asarray(keys, dtype=np.int64)][:, None] + pos[None, :]).reshape(-1)
    start, end = batch.offsets[bags], batch.offsets[bags + 1]
    nonempty = end > start
    values = _as_u64(batch.values) if batch.values.size else np.zeros(1, np.uint64)
    first = np.where(nonempty, start, 0)
    last = np.where(nonempty, end - 1, 0)
    sig = (end - start).astype(np.uint64) * _LENGTH
    sig += np.where(nonempty, values[first], np.uint64(0)) * _WEIGHT
    sig ^= _mix(np.where(nonempty, values[last], np.uint64(0)) + np.uint64(_R))
    if batch.weights is not None and batch.weights.size:
        wbits = batch.weights.view(np.uint32).astype(np.uint64)
        sig += np.where(nonempty, wbits[first] ^ (wbits[last] << np.uint64(32)), np.uint64(0))
    sig = _mix(sig).reshape(len(keys), S)
    sig.sort(axis=1)
    distinct = 1 + np.count_nonzero(sig[:, 1:] != sig[:, :-1], axis=1)
    return 1.0 - distinct / S


def choose_bags(batch: Any, order: list[int], mode: bool | str = "auto"):
    """Per feature (KJT key ``order[i]``): bags to compute, inverse of the B samples, deduplicated?

    ``batch`` is a :class:`updlrm.sparse_batch.SparseBatch`. Returns three lists: global bag
    ids (int64), inverse indices into them (int64 (B,), or None for "bag b is sample b"),
    and whether the feature was deduplicated. Keys that arrive deduplicated (a
    variable-batch KJT with inverse indices) are taken as they are.

    >>> from updlrm.collection import read_kjt
    >>> from updlrm.kjt import KeyedJaggedTensor
    >>> import torch
    >>> kjt = KeyedJaggedTensor(["u", "i"], torch.tensor([9, 9, 9, 1, 2, 3]), lengths=torch.tensor([1, 1, 1, 1, 1, 1]))
    >>> bags, inverse, done = choose_bags(read_kjt(kjt), [0, 1], mode=True)
    >>> [b.tolist() for b in bags], inverse[0].tolist(), done
    ([[0], [3, 4, 5]], [0, 0, 0], [True, False])
    """
    B = batch.batch_size
    bags: list[np.ndarray] = []
    inverse: list[np.ndarray | None] = []
    done: list[bool] = []
    for k in order:
        bags.append(np.arange(batch.bag_start[k], batch.bag_start[k + 1], dtype=np.int64))
        inverse.append(batch.inverse[k])
        done.append(batch.inverse[k] is not None)
    if mode is False or B < 2:
        return bags, inverse, done
    candidates = [i for i, k in enumerate(order) if batch.inverse[k] is None]
    if mode == "auto" and candidates:
        repeated = _estimate(batch, [order[i] for i in candidates])
        candidates = [i for i, r in zip(candidates, repeated) if r >= MIN_REPEATED]
    if not candidates:
        return bags, inverse, done
    # All chosen features in one pass (fixed numpy costs paid once): their value
    # sequences side by side, bags tagged with their feature so groups never cross.
    segments = [
        _segment(batch.values, batch.weights, batch.offsets, int(bags[i][0]), int(bags[i][-1]) + 1) for i in candidates
    ]
    if len(segments) == 1:
        seq, wbits, local = segments[0]
        group = None
    else:
        seq = np.concatenate([x[0] for x in segments])
        wbits = None if batch.weights is None else np.concatenate([x[1] for x in segments])
        starts = np.cumsum([0] + [x[0].size for x in segments[:-1]])
        local = np.concatenate([[0]] + [x[2][1:] + a for x, a in zip(segments, starts)])
        group = np.repeat(np.arange(len(candidates), dtype=np.int64), B)
    rep = _representatives(seq, wbits, local, group)
    for j, i in enumerate(candidates):
        r = rep[j * B : (j + 1) * B] - j * B
        is_first = r == np.arange(B)
        if is_first.all():
            continue  # nothing repeats: run the feature as it is
        rank = np.cumsum(is_first) - 1
        bags[i] = bags[i][is_first]
        inverse[i] = rank[r]
        done[i] = True
    return bags, inverse, done
