"""Embedding bags over several UPMEM servers: each host runs its shards, batches cross the network.

:class:`ShardedTableBatchedEmbeddingBags` is the multi-host face of
:class:`~updlrm.tbe.TableBatchedEmbeddingBags`: every rank (one per host) calls it
with its own TBE batch over *all* tables and gets the ``(B, sum of dims)`` output of
its own samples, as one server would compute it. Inside one call:

1. validate, route each lookup to the host that owns its row/columns
   (:func:`~updlrm.distributed.routing.route_to_hosts`);
2. exchange requests (status, sizes; bag lengths; row ids; weights) all-to-all;
3. run this host's shards on its DPUs (one engine per pooling mode present);
4. exchange pooled parts back, add row-wise parts, place column slices, divide
   row-split MEAN tables by their bags' lengths.

Weights are drawn or given per table exactly as the single-host module does (same
seed rule, integer tables quantized with the whole table's fitted scale), so outputs
equal a one-host run: bit for bit where no table is split by rows across hosts, and
within float32 rounding of the partial sums where one is.

Example: see :func:`updlrm.distributed.launch.run_local` (one process per host).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from updlrm.distributed.cluster import ClusterPlan
from updlrm.distributed.context import ClusterContext, DistributedError
from updlrm.distributed.hostplan import host_placement, local_tables
from updlrm.distributed.routing import HostRequest, assemble, host_dims, merge_requests, route_to_hosts, shard_pooling
from updlrm.specs import BoundsCheckMode, PoolingMode

# Header each source sends each host per batch: status (0 ok, 1 failed), B, lookups, weighted.
_HEADER = 4


@dataclass
class ShardedStats:
    """Seconds of each phase of the last batch on this rank, and the bytes it sent."""

    route_s: float = 0.0
    exchange_requests_s: float = 0.0
    host_s: float = 0.0
    exchange_responses_s: float = 0.0
    assemble_s: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    host_lookups: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def communication_s(self) -> float:
        return self.exchange_requests_s + self.exchange_responses_s

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["communication_s"] = self.communication_s
        return d


class HostEmbedding:
    """This host's shards on its DPUs: one TBE module per pooling mode among them."""

    def __init__(self, plan: ClusterPlan, host: int, stored: dict[int, np.ndarray], *, backend: str, nr_tasklets: int):
        from updlrm.tbe import TableBatchedEmbeddingBags

        self.shards = plan.shards_of_host(host)
        specs = local_tables(plan, host)
        self.dims = [s.embedding_dim for s in specs]
        self.groups: list[tuple[list[int], TableBatchedEmbeddingBags]] = []
        modes = [shard_pooling(plan, i) for i in self.shards]
        for mode in ("sum", "mean"):
            members = [j for j, m in enumerate(modes) if m == mode]
            if not members:
                continue
            group_specs = [specs[j] for j in members]
            module = TableBatchedEmbeddingBags(
                group_specs,
                plan=host_placement(plan, host, group_specs),
                backend=backend,
                pooling_mode=mode,
                weights=[stored[self.shards[j]] for j in members],
                quantization="table",
                nr_tasklets=nr_tasklets,
                bounds_check_mode=BoundsCheckMode.NONE,
            )
            self.groups.append((members, module))
        self.backend = self.groups[0][1].backend if self.groups else "none"
        self.backend_reason = self.groups[0][1].backend_reason if self.groups else "this host holds no shard"

    def run(self, request: HostRequest) -> np.ndarray:
        """Pool a merged request: ``(bags, sum of this host's shard dims)`` in shard order."""
        B = request.lengths.shape[1]
        cols = np.concatenate([[0], np.cumsum(self.dims)]).astype(np.int64)
        out = np.zeros((B, int(cols[-1])), dtype=np.float32)
        if B == 0 or not self.groups:
            return out
        starts = np.concatenate([[0], np.cumsum(request.lengths.sum(axis=1))]).astype(np.int64)
        for members, module in self.groups:
            idx = np.concatenate([request.indices[starts[j] : starts[j + 1]] for j in members])
            w = (
                None
                if request.weights is None
                else np.concatenate([request.weights[starts[j] : starts[j + 1]] for j in members])
            )
            offsets = np.concatenate([[0], np.cumsum(request.lengths[members].reshape(-1))]).astype(np.int64)
            part = module(idx, offsets, w)
            pos = 0
            for j in members:
                out[:, cols[j] : cols[j + 1]] = part[:, pos : pos + self.dims[j]]
                pos += self.dims[j]
        return out

    def close(self) -> None:
        for _, module in self.groups:
            module.close()


class ShardedTableBatchedEmbeddingBags(torch.nn.Module):
    """Table-batched embedding bags whose tables are spread over the hosts of ``plan``.

    Args:
        plan: a :class:`~updlrm.distributed.cluster.ClusterPlan` with one host per rank.
        context: this process's :class:`~updlrm.distributed.context.ClusterContext`.
        backend, nr_tasklets: as :class:`~updlrm.tbe.TableBatchedEmbeddingBags`, per host.
        weights: one full ``(rows, dim)`` array per table (only the tables this host
            holds are read), or None to draw them as the single-host module does from ``seed``.
        bounds_check_mode: FATAL (default) or IGNORE/WARNING, as the single-host module.

    ``forward(indices, offsets, per_sample_weights=None)`` takes this rank's TBE batch
    (``offsets[T*B+1]``; ``B`` may differ between ranks) and returns ``(B, sum of dims)``.
    Every rank must call ``forward`` the same number of times; a rank that fails tells
    the others, which raise :class:`~updlrm.distributed.context.DistributedError` naming it.
    """

    def __init__(
        self,
        plan: ClusterPlan,
        context: ClusterContext,
        *,
        backend: str = "auto",
        weights=None,
        seed: int = 0,
        nr_tasklets: int = 16,
        bounds_check_mode: BoundsCheckMode = BoundsCheckMode.FATAL,
    ) -> None:
        super().__init__()
        from updlrm.tbe import _init_table, _to_numpy, quantize_table

        plan.validate()
        if plan.nr_hosts != context.world_size:
            raise DistributedError(
                f"the plan has {plan.nr_hosts} hosts but the group has {context.world_size} ranks; "
                "start one process per host"
            )
        self.plan, self.context = plan, context
        self.bounds_check_mode = BoundsCheckMode(bounds_check_mode)
        if weights is not None and len(weights) != len(plan.tables):
            raise ValueError(f"weights has {len(weights)} tables, the plan {len(plan.tables)}")
        mine = plan.shards_of_host(context.rank)
        stored: dict[int, np.ndarray] = {}
        fitted = list(plan.tables)
        for t in sorted({plan.shards[i].table for i in mine}):
            spec = plan.tables[t]
            values = (
                _init_table(spec, seed, t, None, None) if weights is None else _to_numpy(weights[t], f"weights[{t}]")
            )
            q, fitted[t] = quantize_table(values, spec, fit_scale=True)
            for i in mine:
                s = plan.shards[i]
                if s.table == t:
                    stored[i] = np.ascontiguousarray(q[s.row_start : s.row_stop, s.col_start : s.col_stop])
        # Scales fitted from whole tables: every host of a split table uses the same one.
        local = ClusterPlan(
            tables=fitted, hosts=plan.hosts, shards=plan.shards, pooling=plan.pooling, metadata=plan.metadata
        )
        self.host = HostEmbedding(local, context.rank, stored, backend=backend, nr_tasklets=nr_tasklets)
        self.tables = plan.tables
        self._dims = [host_dims(plan, h) for h in range(plan.nr_hosts)]
        self._nr_shards = [len(plan.shards_of_host(h)) for h in range(plan.nr_hosts)]
        self.last_stats: ShardedStats | None = None

    @property
    def backend(self) -> str:
        return self.host.backend

    def forward(self, indices, offsets, per_sample_weights=None):
        from updlrm.tbe import _OutputKind, validate_tbe_inputs

        kind = _OutputKind(indices, offsets)
        ctx, plan = self.context, self.plan
        H = ctx.world_size
        stats = ShardedStats()
        t0 = time.perf_counter()
        ctx.begin_step()
        failure = None
        try:
            mean = any(p == "mean" for p in plan.pooling)
            batch = validate_tbe_inputs(
                plan.tables,
                indices,
                offsets,
                per_sample_weights,
                pooling_mode=PoolingMode.MEAN if mean and per_sample_weights is not None else PoolingMode.SUM,
                bounds_check_mode=self.bounds_check_mode,
            )
            requests = route_to_hosts(plan, batch.indices, batch.offsets, batch.batch_size, batch.per_sample_weights)
            B = batch.batch_size
        except Exception as error:  # tell the others before raising here
            failure = error
            ctx.report_error(f"{type(error).__name__}: {error}")
            requests, B = (
                [HostRequest(np.zeros((n, 0), np.int64), np.zeros(0, np.int64), None) for n in self._nr_shards],
                0,
            )
        stats.route_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        header = [
            np.array([int(failure is not None), B, r.indices.size, int(r.weights is not None)], np.int64)
            for r in requests
        ]
        got = ctx.all_to_all_int64(header, [_HEADER] * H).reshape(H, _HEADER)
        if got[:, 0].any():
            if failure is not None:
                raise failure
            ctx._failed = True
            bad = [int(r) for r in np.flatnonzero(got[:, 0])]
            raise DistributedError(
                f"batch {ctx.step}: rank(s) {bad} failed: " + "; ".join(f"rank {r}: {ctx.peer_error(r)}" for r in bad),
                tuple(bad),
            )
        sizes, counts, weighted = got[:, 1], got[:, 2], bool(got[:, 3].any())
        mine = self._nr_shards[ctx.rank]
        lengths = ctx.all_to_all_int64([r.lengths.reshape(-1) for r in requests], [mine * int(b) for b in sizes])
        idx = ctx.all_to_all_int64([r.indices for r in requests], [int(c) for c in counts])
        w = None
        if weighted:
            w = ctx.all_to_all_float32(
                [r.weights if r.weights is not None else np.ones(r.indices.size, np.float32) for r in requests],
                [int(c) for c in counts],
            )
        stats.exchange_requests_s = time.perf_counter() - t1

        t2 = time.perf_counter()
        merged = _split_merged(lengths, idx, w, sizes, mine)
        local = self.host.run(merged)
        stats.host_s = time.perf_counter() - t2
        stats.host_lookups = int(merged.indices.size)

        t3 = time.perf_counter()
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        back = [local[bounds[s] : bounds[s + 1]].reshape(-1) for s in range(H)]
        recv = ctx.all_to_all_float32(back, [B * sum(self._dims[h]) for h in range(H)])
        stats.exchange_responses_s = time.perf_counter() - t3

        t4 = time.perf_counter()
        parts, pos = [], 0
        for h in range(H):
            n = B * sum(self._dims[h])
            parts.append(recv[pos : pos + n].reshape(B, sum(self._dims[h])))
            pos += n
        bag_lengths = np.diff(batch.offsets).reshape(len(plan.tables), B)
        out = assemble(plan, parts, bag_lengths)
        stats.assemble_s = time.perf_counter() - t4
        stats.bytes_sent = int(sum(r.nbytes for r in requests) + sum(b.nbytes for b in back))
        stats.bytes_received = int(lengths.nbytes + idx.nbytes + (0 if w is None else w.nbytes) + recv.nbytes)
        self.last_stats = stats
        return kind.wrap(out)

    def fail(self, error: BaseException) -> None:
        """Take part in the next batch's first exchange as failed, so every other rank raises naming this one.

        For a caller that failed before :meth:`forward` (e.g. a collection checking its KJT).
        """
        ctx = self.context
        ctx.begin_step()
        ctx.report_error(f"{type(error).__name__}: {error}")
        header = [np.array([1, 0, 0, 0], np.int64) for _ in range(ctx.world_size)]
        ctx.all_to_all_int64(header, [_HEADER] * ctx.world_size)

    def weights(self, t: int | str) -> np.ndarray:
        """Not available: each host holds only its shards of the tables."""
        raise DistributedError("a sharded module holds only this host's shards; read weights where they were made")

    def close(self) -> None:
        self.host.close()


def _split_merged(lengths: np.ndarray, idx: np.ndarray, w, sizes: np.ndarray, nr_shards: int) -> HostRequest:
    """The received requests (source-major) as one merged request (shard-major, sources in order)."""
    requests, lpos, ipos = [], 0, 0
    for b in sizes:
        n = nr_shards * int(b)
        lens = lengths[lpos : lpos + n].reshape(nr_shards, int(b))
        k = int(lens.sum())
        requests.append(HostRequest(lens, idx[ipos : ipos + k], None if w is None else w[ipos : ipos + k]))
        lpos, ipos = lpos + n, ipos + k
    if not requests:
        return HostRequest(np.zeros((nr_shards, 0), np.int64), np.zeros(0, np.int64), None)
    return merge_requests(requests)
