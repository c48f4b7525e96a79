"""Modeled batch time of a cluster plan: each host's DPU phases plus the network between hosts.

A batch of ``B`` samples arrives spread evenly over the ``H`` hosts (sample ``b`` on
host ``b * H // B``), as with one request stream per server. Each host routes its
samples' lookups to the owners (:func:`updlrm.distributed.routing.route_to_hosts`),
the owners pool them on their DPUs (modeled per host by :mod:`updlrm.perfmodel` for
the host's own placement), and the pooled parts go back. Two all-to-all exchanges
cross the network: requests (bag lengths, int64 row ids, float32 weights) and pooled
float32 parts. Each costs one message latency plus the largest bytes any host sends
or receives over the link bandwidth (full duplex, non-blocking switch); the host and
network phases do not overlap (one batch at a time).

Network figures: ``ethernet-100g`` takes the 100 Gb/s line rate of IEEE 802.3ba
(12.5 GB/s) and a per-exchange latency of 10 us, an assumption (a TCP message through
one switch), not a measured figure; pass your own :class:`NetworkProfile`.

Example:
    >>> from updlrm.specs import TableSpec
    >>> from updlrm.distributed.cluster import HostSpec, plan_cluster
    >>> tables = [TableSpec(f"t{i}", 1000, 16) for i in range(4)]
    >>> plan = plan_cluster(tables, [HostSpec(64)] * 2, strategy="table_wise")
    >>> est = estimate_cluster(plan, [8.0] * 4, batch_size=256)
    >>> est.total_s > est.network_s > 0, len(est.host_s)
    (True, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from updlrm.distributed.cluster import ClusterPlan
from updlrm.distributed.routing import host_dims, merge_requests, route_to_hosts


@dataclass(frozen=True)
class NetworkProfile:
    """A link between hosts: bandwidth per direction and per-exchange latency."""

    name: str
    bandwidth_bytes_per_s: float
    latency_s: float
    source: str

    def exchange_s(self, max_bytes: float) -> float:
        return self.latency_s + max_bytes / self.bandwidth_bytes_per_s


NETWORKS = {
    "ethernet-100g": NetworkProfile(
        "ethernet-100g",
        12.5e9,
        10e-6,
        "IEEE 802.3ba 100 Gb/s line rate; 10 us per exchange is an assumption, not a measurement",
    ),
    "ethernet-25g": NetworkProfile(
        "ethernet-25g",
        3.125e9,
        10e-6,
        "IEEE 802.3by 25 Gb/s line rate; 10 us per exchange is an assumption, not a measurement",
    ),
}


@dataclass
class ClusterEstimate:
    """Modeled seconds of one batch: per-host embedding time and the two exchanges."""

    host_s: list[float]
    request_bytes: np.ndarray  # [source, destination]
    response_bytes: np.ndarray
    network_s: float
    network: str

    @property
    def total_s(self) -> float:
        return max(self.host_s) + self.network_s

    def to_dict(self) -> dict:
        return {
            "host_s": list(self.host_s),
            "network_s": self.network_s,
            "total_s": self.total_s,
            "request_bytes": int(self.request_bytes.sum()),
            "response_bytes": int(self.response_bytes.sum()),
            "network": self.network,
        }

    def __str__(self) -> str:
        return (
            f"{len(self.host_s)} host(s): {self.total_s * 1e3:.3f} ms per batch = slowest host "
            f"{max(self.host_s) * 1e3:.3f} ms + network {self.network_s * 1e3:.3f} ms ({self.network}; "
            f"{(self.request_bytes.sum() + self.response_bytes.sum()) / 1e6:.2f} MB crossing)"
        )


def _exchange_s(matrix: np.ndarray, network: NetworkProfile) -> float:
    off_diag = matrix - np.diag(np.diag(matrix))
    if not off_diag.any():
        return 0.0
    return network.exchange_s(float(max(off_diag.sum(axis=1).max(), off_diag.sum(axis=0).max())))


def source_ranges(batch_size: int, nr_hosts: int) -> list[tuple[int, int]]:
    """Samples each host receives when a batch is spread evenly (host ``h``: ``[lo, hi)``)."""
    return [(batch_size * h // nr_hosts, batch_size * (h + 1) // nr_hosts) for h in range(nr_hosts)]


def slice_batch(offsets: np.ndarray, indices: np.ndarray, weights, nr_tables: int, batch_size: int, lo: int, hi: int):
    """Samples ``[lo, hi)`` of a TBE batch, as a TBE batch of ``hi - lo`` samples."""
    B = batch_size
    starts = [int(offsets[t * B + lo]) for t in range(nr_tables)]
    stops = [int(offsets[t * B + hi]) for t in range(nr_tables)]
    idx = np.concatenate([indices[a:b] for a, b in zip(starts, stops)]) if nr_tables else indices[:0]
    w = None if weights is None else np.concatenate([weights[a:b] for a, b in zip(starts, stops)])
    lengths = np.concatenate([np.diff(offsets[t * B + lo : t * B + hi + 1]) for t in range(nr_tables)])
    return idx, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), w


def estimate_batch(
    plan: ClusterPlan,
    indices,
    offsets,
    batch_size: int,
    per_sample_weights=None,
    *,
    network: NetworkProfile | str = "ethernet-100g",
    profile: str | None = None,
    nr_tasklets: int = 16,
) -> ClusterEstimate:
    """Modeled time of one global TBE batch (``offsets[T*B+1]``) on ``plan``'s hosts."""
    from updlrm.distributed.hostplan import host_placement
    from updlrm.hardware import DEFAULT_HARDWARE_PROFILE
    from updlrm.partitioner.batch_work import derive_work
    from updlrm.perfmodel import get_profile, model_batch

    net = NETWORKS[network] if isinstance(network, str) else network
    H, T = plan.nr_hosts, len(plan.tables)
    indices = np.asarray(indices, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    per_source = []
    request_bytes = np.zeros((H, H))
    response_bytes = np.zeros((H, H))
    for src, (lo, hi) in enumerate(source_ranges(batch_size, H)):
        idx, off, w = slice_batch(offsets, indices, per_sample_weights, T, batch_size, lo, hi)
        reqs = route_to_hosts(plan, idx, off, hi - lo, w)
        per_source.append(reqs)
        for dst, r in enumerate(reqs):
            request_bytes[src, dst] = r.nbytes
            response_bytes[dst, src] = 4 * (hi - lo) * sum(host_dims(plan, dst))
    host_s = []
    for h in range(H):
        if not plan.shards_of_host(h):
            host_s.append(0.0)
            continue
        merged = merge_requests([reqs[h] for reqs in per_source])
        placement = host_placement(plan, h)
        lengths = merged.lengths.reshape(-1)
        off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        work = derive_work(placement, merged.indices, off, merged.weights, nr_tasklets=nr_tasklets)
        hw = get_profile(profile or DEFAULT_HARDWARE_PROFILE, nr_dpus=plan.hosts[h].nr_dpus)
        host_s.append(model_batch(work, hw).total_s)
    network_s = _exchange_s(request_bytes, net) + _exchange_s(response_bytes, net) if H > 1 else 0.0
    return ClusterEstimate(
        host_s=host_s, request_bytes=request_bytes, response_bytes=response_bytes, network_s=network_s, network=net.name
    )


def synthetic_batch(plan: ClusterPlan, loads, batch_size: int, seed: int = 0, alpha: float = 0.0):
    """A TBE batch with Poisson(``loads[t]``) lookups per bag, rows Zipf(``alpha``) (0: uniform)."""
    rng = np.random.default_rng(seed)
    lengths, parts = [], []
    for t, spec in enumerate(plan.tables):
        n = rng.poisson(loads[t], batch_size).astype(np.int64)
        lengths.append(n)
        total = int(n.sum())
        if alpha > 0:
            ranks = np.arange(1, spec.num_embeddings + 1, dtype=np.float64)
            p = ranks**-alpha
            parts.append(rng.choice(spec.num_embeddings, total, p=p / p.sum()).astype(np.int64))
        else:
            parts.append(rng.integers(0, spec.num_embeddings, total, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    return np.concatenate(parts), offsets


def estimate_cluster(
    plan: ClusterPlan,
    loads,
    *,
    batch_size: int = 4096,
    network: NetworkProfile | str = "ethernet-100g",
    profile: str | None = None,
    seed: int = 0,
    alpha: float = 0.0,
) -> ClusterEstimate:
    """:func:`estimate_batch` on a synthetic batch with ``loads[t]`` lookups per sample of table ``t``."""
    indices, offsets = synthetic_batch(plan, loads, batch_size, seed=seed, alpha=alpha)
    return estimate_batch(plan, indices, offsets, batch_size, network=network, profile=profile)
