"""Moving a batch between hosts: split it by owner, and put the pooled parts back together.

One rule, used by the runtime and by the model alike. A source rank holds a TBE-layout
batch over all tables (``offsets[T*B+1]``). For each host it builds a
:class:`HostRequest`: for every shard that host stores (in the host's order), the
bag lengths of the source's ``B`` bags and the lookups that fall in the shard's rows,
re-based to the shard (a column-wise shard gets every lookup of its table; a row-wise
shard only its rows). The host pools each shard per bag; the source adds row-wise
parts and places column slices (:func:`assemble`).

Example:
    >>> from updlrm.specs import TableSpec
    >>> from updlrm.distributed.cluster import HostSpec, plan_cluster
    >>> plan = plan_cluster([TableSpec("a", 10, 2)], [HostSpec(4), HostSpec(4)], strategy="row_wise")
    >>> reqs = route_to_hosts(plan, np.array([1, 7, 6, 2]), np.array([0, 2, 4]), batch_size=2)
    >>> reqs[0].lengths.tolist(), reqs[0].indices.tolist(), reqs[1].lengths.tolist(), reqs[1].indices.tolist()
    ([[1, 1]], [1, 2], [[1, 1]], [2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from updlrm.distributed.cluster import ClusterPlan


@dataclass
class HostRequest:
    """What one source sends one host: ``lengths[j, b]`` lookups of bag ``b`` for the host's
    ``j``-th shard, the lookups shard-major (re-based row ids), and their weights."""

    lengths: np.ndarray
    indices: np.ndarray
    weights: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return int(self.lengths.nbytes + self.indices.nbytes + (0 if self.weights is None else self.weights.nbytes))


def table_columns(plan: ClusterPlan) -> np.ndarray:
    """First output column of each table (the output is every table's dims side by side)."""
    return np.concatenate([[0], np.cumsum([t.embedding_dim for t in plan.tables])]).astype(np.int64)


def host_dims(plan: ClusterPlan, host: int) -> list[int]:
    return [plan.shards[i].dim for i in plan.shards_of_host(host)]


def route_to_hosts(plan: ClusterPlan, indices, offsets, batch_size: int, per_sample_weights=None) -> list[HostRequest]:
    """Split a validated TBE batch (``offsets[T*B+1]``) into one :class:`HostRequest` per host."""
    idx = np.asarray(indices, dtype=np.int64)
    off = np.asarray(offsets, dtype=np.int64)
    psw = None if per_sample_weights is None else np.asarray(per_sample_weights, dtype=np.float32)
    B = int(batch_size)
    per_table = []
    for t in range(len(plan.tables)):
        lo, hi = int(off[t * B]), int(off[(t + 1) * B])
        lengths = np.diff(off[t * B : (t + 1) * B + 1])
        bags = np.repeat(np.arange(B, dtype=np.int64), lengths)
        per_table.append((idx[lo:hi], bags, None if psw is None else psw[lo:hi], lengths))
    requests = []
    for h in range(plan.nr_hosts):
        lengths, parts, weights = [], [], []
        for i in plan.shards_of_host(h):
            s = plan.shards[i]
            rows, bags, w, all_lengths = per_table[s.table]
            if s.row_start == 0 and s.row_stop == plan.tables[s.table].num_embeddings:
                lengths.append(all_lengths)
                parts.append(rows)
                weights.append(w)
                continue
            keep = (rows >= s.row_start) & (rows < s.row_stop)
            lengths.append(np.bincount(bags[keep], minlength=B).astype(np.int64))
            parts.append(rows[keep] - s.row_start)
            weights.append(None if w is None else w[keep])
        requests.append(
            HostRequest(
                lengths=np.asarray(lengths, dtype=np.int64).reshape(len(lengths), B),
                indices=np.concatenate(parts) if parts else np.zeros(0, np.int64),
                weights=None if psw is None else (np.concatenate(weights) if weights else np.zeros(0, np.float32)),
            )
        )
    return requests


def merge_requests(requests: list[HostRequest]) -> HostRequest:
    """One host's requests from every source as one batch: per shard, the sources' bags one after another."""
    nr_shards = requests[0].lengths.shape[0]
    weighted = requests[0].weights is not None
    lengths = np.concatenate([r.lengths for r in requests], axis=1) if requests else np.zeros((nr_shards, 0), np.int64)
    starts = [np.concatenate([[0], np.cumsum(r.lengths.sum(axis=1))]) for r in requests]
    indices, weights = [], []
    for j in range(nr_shards):
        for r, s in zip(requests, starts):
            indices.append(r.indices[s[j] : s[j + 1]])
            if weighted:
                weights.append(r.weights[s[j] : s[j + 1]])
    return HostRequest(
        lengths=lengths,
        indices=np.concatenate(indices) if indices else np.zeros(0, np.int64),
        weights=(np.concatenate(weights) if weights else np.zeros(0, np.float32)) if weighted else None,
    )


def assemble(plan: ClusterPlan, parts: list[np.ndarray], bag_lengths: np.ndarray) -> np.ndarray:
    """The ``(B, sum of dims)`` output from every host's pooled part for this source.

    ``parts[h]`` is ``(B, sum of host h's shard dims)``. Row-wise parts are added (in
    float64, host order, then rounded once); a MEAN table split by rows is divided by
    its bags' lengths here (its hosts pooled with SUM; an empty bag stays 0, as torch).
    ``bag_lengths`` is ``(T, B)``.
    """
    cols = table_columns(plan)
    B = bag_lengths.shape[1]
    out = np.zeros((B, int(cols[-1])), dtype=np.float64)
    for h in range(plan.nr_hosts):
        pos = 0
        for i in plan.shards_of_host(h):
            s = plan.shards[i]
            lo = int(cols[s.table]) + s.col_start
            out[:, lo : lo + s.dim] += parts[h][:, pos : pos + s.dim]
            pos += s.dim
    for t in range(len(plan.tables)):
        if plan.pooling[t] == "mean" and plan.is_row_split(t):
            n = bag_lengths[t].astype(np.float64)
            out[:, cols[t] : cols[t + 1]] /= np.where(n > 0, n, 1.0)[:, None]
    return out.astype(np.float32)


def shard_pooling(plan: ClusterPlan, shard: int) -> str:
    """How a host pools one shard: the table's mode, but SUM where the rows are split over hosts."""
    t = plan.shards[shard].table
    return "sum" if plan.is_row_split(t) else plan.pooling[t]
