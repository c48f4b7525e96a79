"""The engine's per-DPU work for a batch under any plan, derived without running a DPU.

:func:`derive_work` computes the exact :class:`~updlrm.perfmodel.BatchWork` the engine
would report (``BatchStats.work()``) from the plan's routing rule (:mod:`.routing`) and
the host runtime's accounting (``host/eb_*.c``: segments, per-tasklet partial sums,
header and status bytes; sizes from :mod:`updlrm.abi`).  This is how the evaluator
models a plan on a trace, and how ``updlrm bench`` and the sweeps reach 2,560 DPUs
while the emulator runs 64; the engine-vs-derivation tests (``tests/profile``) fail
should the engine's accounting change.

Example:
    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> plan = uniform_plan([TableSpec("t", 10, 4)], Topology(nr_dpus=2), "row_wise")
    >>> derive_work(plan, np.array([0, 1, 9]), np.array([0, 2, 3])).lookups.tolist()
    [2.0, 1.0]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from updlrm import abi, perfmodel
from updlrm.partitioner.cost import dpu_input_bytes, dpu_output_bytes
from updlrm.partitioner.routing import SliceRouter, column_slices, host_mask
from updlrm.plan import Plan, PlanError
from updlrm.specs import TableSpec

__all__ = ["derive_work"]


def _pad8(n: ArrayLike) -> np.ndarray:
    return (np.asarray(n, dtype=np.int64) + 7) // 8 * 8


def _dominant_format(tables: list[TableSpec]) -> str:
    # The engine's rule (host/engine.py, Engine._dominant_format): the format with the most rows.
    count: dict[str, int] = {}
    for spec in tables:
        count[spec.row_format.value] = count.get(spec.row_format.value, 0) + spec.num_embeddings
    return max(count, key=lambda fmt: count[fmt])


def derive_work(
    plan: Plan,
    indices: ArrayLike,
    offsets: ArrayLike,
    per_sample_weights: ArrayLike | None = None,
    *,
    nr_tasklets: int = 16,
    router_cache: dict[tuple[int, int], SliceRouter] | None = None,
) -> perfmodel.BatchWork:
    """The engine's ``BatchStats.work()`` for one batch under ``plan``, without running DPUs.

    Each lookup is routed by the plan's rule (host-cached rows to the host, else the
    holder ``bag mod replicas`` of its row, per column slice; see
    :mod:`updlrm.partitioner.routing`), then counted as the host runtime (``host/eb_*.c``) counts it:
    consecutive lookups of one bag on one shard form a segment; each DPU's lookups are
    cut into ``nr_tasklets`` equal ranges and every (tasklet, segment) overlap yields
    one partial sum; a DPU receives header + local rows (+ weights) + segment records
    and returns a status block + its partial sums. Assumes the batch fits one launch
    (raises :class:`~updlrm.plan.PlanError` when the engine would have to split it).

    ``router_cache`` (a dict the caller keeps) reuses routing tables across batches of
    the same plan.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> plan = uniform_plan([TableSpec("t", 10, 4)], Topology(nr_dpus=2), "row_wise")
    >>> w = derive_work(plan, np.array([0, 1, 9]), np.array([0, 2, 3]))
    >>> w.lookups.tolist(), w.output_bytes.tolist(), w.host_merge_elems   # 2 + 1 partials of 16 B, 24 B status
    ([2.0, 1.0], [56.0, 40.0], 12)
    """
    tables = plan.tables
    n = plan.topology.nr_dpus
    nr_tables = len(tables)
    nr_tasklets = abi.check_nr_tasklets(nr_tasklets)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or (offsets.size - 1) % nr_tables:
        raise ValueError(f"offsets has {offsets.size} entries; expected T*B+1 with T={nr_tables}")
    if offsets[0] != 0 or offsets[-1] != indices.size or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0, be non-decreasing and end at len(indices)")
    weighted = per_sample_weights is not None
    batch = (offsets.size - 1) // nr_tables
    dpu_of_shard = np.array([s.dpu for s in plan.shards], dtype=np.int64)
    cache = {} if router_cache is None else router_cache

    # EB_FLAG_INT16_PARTIALS per DPU (host/eb_pipeline.c): every int8 table it holds a
    # slice of has no bag longer than an int16 partial takes.
    longest = np.diff(offsets).reshape(nr_tables, batch).max(axis=1, initial=0)
    no_int16 = [
        spec.row_format.abi_code == abi.FORMAT_INT8
        and not abi.int16_partials(spec.row_format.abi_code, weighted, int(longest[t]))
        for t, spec in enumerate(tables)
    ]
    int16_dpu = np.ones(n, dtype=bool)
    int16_dpu[[s.dpu for s in plan.shards if no_int16[s.table]]] = False

    keys: list[np.ndarray] = []
    dims: list[int] = []
    partials: list[int] = []
    int16_partials: list[int] = []
    rowbytes: list[int] = []
    host_hits = 0
    host_bytes = 0
    g = 0  # global slice number, in the engine's order: tables, then their column slices
    slices_total = sum(len(column_slices(plan, t)) for t in range(nr_tables))
    for t, spec in enumerate(tables):
        lo_i, hi_i = int(offsets[t * batch]), int(offsets[(t + 1) * batch])
        rows = indices[lo_i:hi_i]
        if rows.size and (rows.min() < 0 or rows.max() >= spec.num_embeddings):
            raise ValueError(f"table {spec.name}: an index is outside [0, {spec.num_embeddings})")
        bags = np.repeat(np.arange(batch, dtype=np.int64), np.diff(offsets[t * batch : (t + 1) * batch + 1]))
        on_host = host_mask(plan, t, rows)
        hits = int(np.count_nonzero(on_host))
        host_hits += hits
        host_bytes += hits * spec.embedding_dim * spec.row_format.element_bytes
        if hits:
            rows, bags = rows[~on_host], bags[~on_host]
        for lo, hi in column_slices(plan, t):
            dim = hi - lo
            dims.append(dim)
            partials.append(abi.partial_bytes(spec.row_format.abi_code, abi.batch_flags(weighted), dim))
            int16_partials.append(abi.partial_bytes(spec.row_format.abi_code, abi.batch_flags(weighted, True), dim))
            rowbytes.append(abi.row_bytes(spec.row_format.abi_code, dim))
            if rows.size:
                router = cache.get((t, lo))
                if router is None:
                    router = cache[(t, lo)] = SliceRouter(plan, t, lo)
                shard = router.route_shards(rows, bags)
                keys.append((dpu_of_shard[shard] * slices_total + g) * batch + bags)
            g += 1
    slice_dims = np.asarray(dims, dtype=np.int64)
    slice_partial = np.asarray(partials, dtype=np.int64)
    slice_int16_partial = np.asarray(int16_partials, dtype=np.int64)
    slice_rowbytes = np.asarray(rowbytes, dtype=np.int64)

    key = np.concatenate(keys) if keys else np.empty(0, np.int64)
    # Sorted unique keys are the segments in the engine's order: DPU, then table/slice, then bag.
    seg_key, seg_len = np.unique(key, return_counts=True)
    seg_dpu = seg_key // (slices_total * batch)
    seg_slice = (seg_key // batch) % slices_total
    lookups = np.bincount(seg_dpu, weights=seg_len, minlength=n).astype(np.int64)
    segments = np.bincount(seg_dpu, minlength=n).astype(np.int64)
    reduce_elems = np.bincount(seg_dpu, weights=seg_len * slice_dims[seg_slice], minlength=n)
    gathered = np.bincount(seg_dpu, weights=seg_len * slice_rowbytes[seg_slice], minlength=n)
    if lookups.max(initial=0) > abi.MAX_LOOKUPS_PER_LAUNCH:
        raise PlanError(
            f"a DPU gets {int(lookups.max())} lookups, more than one launch takes; the engine would split this batch"
        )

    # Tasklet k of DPU d takes its lookups [total*k/T, total*(k+1)/T): each segment it
    # overlaps gives one partial sum (plan_transfers in host/eb_pack.c).
    seg_end = np.cumsum(seg_len)
    dpu_base = np.concatenate(([0], np.cumsum(lookups)[:-1]))
    k = np.arange(nr_tasklets, dtype=np.int64)
    lo = dpu_base[:, None] + lookups[:, None] * k // nr_tasklets
    hi = dpu_base[:, None] + lookups[:, None] * (k + 1) // nr_tasklets
    busy = hi > lo
    first = np.searchsorted(seg_end, lo[busy], side="right")
    last = np.searchsorted(seg_end, hi[busy] - 1, side="right")
    seg_partial = np.where(int16_dpu[seg_dpu], slice_int16_partial[seg_slice], slice_partial[seg_slice])
    partial_prefix = np.concatenate(([0], np.cumsum(seg_partial)))
    dim_prefix = np.concatenate(([0], np.cumsum(slice_dims[seg_slice])))
    owner = np.broadcast_to(np.arange(n)[:, None], lo.shape)[busy]
    out_bytes = np.bincount(owner, weights=partial_prefix[last + 1] - partial_prefix[first], minlength=n)
    merge_elems = int((dim_prefix[last + 1] - dim_prefix[first]).sum())

    in_bytes = dpu_input_bytes(lookups, segments, weighted).astype(np.int64)
    out_bytes = dpu_output_bytes(out_bytes).astype(np.int64)
    static = plan.mram_bytes_per_dpu() + abi.SHARD_BYTES * np.bincount(dpu_of_shard, minlength=n)
    batch_offset = int(_pad8(static.max(initial=0)))
    per_rank = plan.topology.dpus_per_rank
    ranks = -(-n // per_rank)
    pad = np.zeros(ranks * per_rank, dtype=np.int64)
    pad[:n] = in_bytes
    rank_in = pad.reshape(ranks, per_rank).max(axis=1)
    pad[:n] = out_bytes
    rank_out = pad.reshape(ranks, per_rank).max(axis=1)
    if batch_offset + int((rank_in + rank_out).max(initial=0)) > plan.topology.mram_bytes_per_dpu:
        raise PlanError(
            "the batch's inputs and outputs do not fit the MRAM left after the rows; "
            "the engine would split this batch into several launches"
        )
    row_bytes = np.divide(gathered, lookups, out=np.zeros(n), where=lookups > 0)
    return perfmodel.BatchWork(
        lookups=lookups,
        row_bytes=row_bytes,
        index_bytes=in_bytes,
        output_bytes=out_bytes,
        reduce_elems=reduce_elems,
        row_format=_dominant_format(tables),
        weighted=weighted,
        nr_tasklets=int(nr_tasklets),
        host_merge_elems=merge_elems,
        host_cache_lookups=host_hits,
        host_cache_row_bytes=int(round(host_bytes / host_hits)) if host_hits else 0,
    )
