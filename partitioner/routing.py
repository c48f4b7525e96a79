"""Route lookups to the shard that serves them, exactly as a plan prescribes.

A row of one column slice may be held by several shards (replicated hot rows) and may
also be host-cached.  The rule, shared by the partitioner's evaluation and the engine:

* a host-cached row (``plan.host_rows[table]``) is always served by the host;
* otherwise the holders of the row (the shards of that column slice whose rows contain
  it) are ordered by their index in ``plan.shards``, and the lookup of bag ``b`` (the
  sample index within its batch, ``0 <= b < batch_size``) goes to holder ``b mod r``,
  where ``r`` is the number of holders.  Every replica thus gets an even share of
  the bags, and all lookups of one bag to one row go to the same DPU.

Example:
    >>> import numpy as np
    >>> from updlrm.plan import Plan, Shard
    >>> from updlrm.specs import TableSpec, Topology
    >>> plan = Plan([TableSpec("a", 10, 4)], Topology(3),
    ...             [Shard(0, 0, 0, 4, range(0, 6)), Shard(0, 1, 0, 4, range(6, 10)),
    ...              Shard(0, 2, 0, 4, np.array([1, 7]))])
    >>> router = SliceRouter(plan, 0, 0)
    >>> shard, local = router.route(np.array([0, 1, 1, 7, 7, 9]), np.array([0, 0, 1, 0, 1, 5]))
    >>> shard.tolist(), local.tolist()
    ([0, 0, 2, 1, 2, 1], [0, 1, 0, 1, 1, 3])
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from updlrm.partitioner.ranges import concat_ranges
from updlrm.plan import Plan, PlanError

# Tables up to this many rows get a dense row -> shard map (8 bytes a row): routing is
# then one gather per lookup instead of binary searches over the row lists.
DENSE_ROUTING_MAX_ROWS = 1 << 24
_MULTI = -2  # dense-map marker: the row has several holders (replicas)


class SliceRouter:
    """Routing tables of one column slice ``[col_start, ...)`` of one table, built once.

    ``route(rows, bags)`` returns, per lookup, the index of the serving shard in
    ``plan.shards`` and the row's local index in that shard.  Rows must not be
    host-cached (filter them with :func:`host_mask` first); a row held by no shard
    raises :class:`~updlrm.plan.PlanError`.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2), "row_wise")
    >>> SliceRouter(p, 0, 0).route(np.array([3, 4]), np.array([0, 0]))[0].tolist()
    [0, 1]
    """

    def __init__(self, plan: Plan, table: int, col_start: int) -> None:
        self.table = table
        self.col_start = col_start
        spec = plan.tables[table]
        self.num_rows = spec.num_embeddings
        ranges: list[tuple[int, int, int]] = []
        explicit: list[tuple[int, np.ndarray]] = []
        for i in plan.shards_of(table):
            s = plan.shards[i]
            if s.col_start != col_start or s.num_rows == 0:
                continue
            if isinstance(s.rows, range):
                ranges.append((s.rows.start, s.rows.stop, i))
            else:
                explicit.append((i, s.rows))
        if not ranges and not explicit:
            raise PlanError(f"table {spec.name}: no shard holds columns starting at {col_start}")
        self._setup_ranges(ranges)
        self._setup_explicit(explicit)
        self.dense = self._dense_map(ranges) if self.num_rows <= DENSE_ROUTING_MAX_ROWS else None

    def _dense_map(self, ranges) -> np.ndarray:
        holders = np.zeros(self.num_rows + 1, dtype=np.int64)
        owner = np.full(self.num_rows, -1, dtype=np.int64)
        self.dense_local = np.zeros(self.num_rows, dtype=np.int64)
        for start, stop, i in ranges:
            holders[start] += 1
            holders[stop] -= 1
            owner[start:stop] = i
            self.dense_local[start:stop] = np.arange(stop - start)
        holders = np.cumsum(holders[:-1])
        for rows, first, count in zip(self._group_rows, self.g_ptr[:-1].tolist(), self.g_count.tolist()):
            holders[rows] += count  # every replica of the group holds the rows
            owner[rows] = self.g_shard[first]
            self.dense_local[rows] = np.arange(rows.size)
        owner[holders > 1] = _MULTI
        return owner

    def _setup_ranges(self, ranges: list[tuple[int, int, int]]) -> None:
        # Elementary intervals between all range boundaries; each lists the range
        # shards covering it (in shard order), so overlapping ranges are replicas too.
        self.range_starts = {i: start for start, _, i in ranges}
        bounds = np.unique(np.array([b for start, stop, _ in ranges for b in (start, stop)], dtype=np.int64))
        self.bounds = bounds
        nr_intervals = max(len(bounds) - 1, 0)
        members: list[list[int]] = [[] for _ in range(nr_intervals)]
        for start, stop, i in sorted(ranges, key=lambda r: r[2]):
            lo, hi = np.searchsorted(bounds, [start, stop])
            for iv in range(lo, hi):
                members[iv].append(i)
        counts = np.array([len(m) for m in members], dtype=np.int64)
        self.iv_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.iv_shard = np.array([i for m in members for i in m], dtype=np.int64)

    def _setup_explicit(self, explicit: list[tuple[int, np.ndarray]]) -> None:
        # The replicas of a part share its row array: explicit shards are grouped by row
        # array (groups in order of their first shard), so the tables grow with the
        # distinct row sets, not with the replicas.  A row's explicit holders are the
        # shards of every group that lists it.
        explicit.sort(key=lambda e: e[0])
        group_of: dict[int, int] = {}
        group_rows: list[np.ndarray] = []
        group_shards: list[list[int]] = []
        for i, rows in explicit:
            g = group_of.setdefault(id(rows), len(group_rows))
            if g == len(group_rows):
                group_rows.append(np.asarray(rows, dtype=np.int64))
                group_shards.append([])
            group_shards[g].append(i)
        self._group_rows = group_rows
        sizes = np.array([r.size for r in group_rows], dtype=np.int64)
        self.g_count = np.array([len(m) for m in group_shards], dtype=np.int64)
        self.g_ptr = np.concatenate([[0], np.cumsum(self.g_count)]).astype(np.int64)
        self.g_shard = np.array([i for m in group_shards for i in m], dtype=np.int64)
        group_ids = np.repeat(np.arange(len(group_rows), dtype=np.int64), sizes)
        rows = np.concatenate(group_rows) if group_rows else np.empty(0, dtype=np.int64)
        # Per-group segments in group order: key group*num_rows+row is sorted, so the
        # local index of a row in its group's (any replica's) rows is one searchsorted away.
        self.seg_keys = group_ids * self.num_rows + rows
        self._seg_firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        order = np.argsort(self.g_shard, kind="stable")
        self._shard_ids = self.g_shard[order]
        self._shard_group = np.repeat(np.arange(len(group_rows), dtype=np.int64), self.g_count)[order]
        # (row, group) pairs sorted by row, then group; a row's explicit holder count is
        # the sum of its groups' sizes (ex_cum: running holder count over the pairs).
        order = np.lexsort((group_ids, rows))
        self.ex_rows = rows[order]
        self.ex_group = group_ids[order]
        self.ex_cum = np.concatenate([[0], np.cumsum(self.g_count[self.ex_group])]).astype(np.int64)

    def group_of(self, shard: np.ndarray) -> np.ndarray:
        """The row group (explicit row array shared by replicas) of each explicit shard."""
        return self._shard_group[np.searchsorted(self._shard_ids, shard)]

    def holders(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row: interval index (-1 if in no range), range-holder count, its (row, group)
        pairs [lo, hi) in ``ex_rows``, explicit-holder count."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.bounds) >= 2:
            iv = np.searchsorted(self.bounds, rows, side="right") - 1
            inside = (iv >= 0) & (iv < len(self.bounds) - 1)
            iv = np.where(inside, iv, -1)
            nr = np.where(inside, self.iv_ptr[np.maximum(iv, 0) + 1] - self.iv_ptr[np.maximum(iv, 0)], 0)
        else:
            iv = np.full(rows.shape, -1, dtype=np.int64)
            nr = np.zeros(rows.shape, dtype=np.int64)
        e_lo = np.searchsorted(self.ex_rows, rows, side="left")
        e_hi = np.searchsorted(self.ex_rows, rows, side="right")
        return iv, nr, e_lo, e_hi, self.ex_cum[e_hi] - self.ex_cum[e_lo]

    def route(self, rows: np.ndarray, bags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Serving shard index and local row index for each lookup (see the module rule)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.dense is not None:
            shard = self.route_shards(rows, bags)
            local = self.dense_local[rows]
            multi = np.flatnonzero(self.dense[rows] == _MULTI)
            if multi.size:
                local[multi] = self.local_index(shard[multi], rows[multi])
            return shard, local
        shard = self.route_shards(rows, bags)
        return shard, self.local_index(shard, rows)

    def route_shards(self, rows: np.ndarray, bags: np.ndarray) -> np.ndarray:
        """Serving shard index of each lookup (``route`` without the local indices)."""
        rows = np.asarray(rows, dtype=np.int64)
        bags = np.asarray(bags, dtype=np.int64)
        if self.dense is not None:
            shard = self.dense[rows]
            if rows.size and shard.min() == -1:
                bad = int(rows[np.flatnonzero(shard == -1)[0]])
                raise PlanError(f"table {self.table}: row {bad} (columns from {self.col_start}) is held by no shard")
            multi = np.flatnonzero(shard == _MULTI)
            if multi.size:
                shard[multi] = self._route_replicated(rows[multi], bags[multi])
            return shard
        iv, nr, e_lo, _, ne = self.holders(rows)
        count = nr + ne
        if rows.size and count.min() == 0:
            bad = int(rows[np.argmin(count)])
            raise PlanError(f"table {self.table}: row {bad} (columns from {self.col_start}) is held by no shard")
        shard = np.empty(rows.shape, dtype=np.int64)
        single_range = (count == 1) & (nr == 1)
        shard[single_range] = self.iv_shard[self.iv_ptr[iv[single_range]]]
        single_ex = (count == 1) & (nr == 0)
        shard[single_ex] = self.g_shard[self.g_ptr[self.ex_group[e_lo[single_ex]]]]
        multi = np.flatnonzero(count > 1)
        if multi.size:
            shard[multi] = self._route_replicated(rows[multi], bags[multi])
        return shard

    def _route_replicated(self, rows: np.ndarray, bags: np.ndarray) -> np.ndarray:
        # Rows held only by ranges, or only by one explicit row group, have their holders
        # in shard order already (iv_shard per interval, g_shard per group): pick one
        # directly.  Only rows held by several groups or both kinds need their holder
        # lists merged.
        iv, nr, e_lo, e_hi, ne = self.holders(rows)
        shard = np.empty(rows.shape, dtype=np.int64)
        only_r = ne == 0
        shard[only_r] = self.iv_shard[self.iv_ptr[iv[only_r]] + bags[only_r] % nr[only_r]]
        only_e = (nr == 0) & (e_hi - e_lo == 1)
        first = self.g_ptr[self.ex_group[e_lo[only_e]]]
        shard[only_e] = self.g_shard[first + bags[only_e] % ne[only_e]]
        mixed = ~(only_r | only_e)
        if mixed.any():
            shard[mixed] = self._route_mixed(rows[mixed], bags[mixed])
        return shard

    def _route_mixed(self, rows: np.ndarray, bags: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(rows, return_inverse=True)
        iv, nr, e_lo, e_hi, ne = self.holders(uniq)
        # All holders of every replicated row, grouped by row and sorted by shard index.
        uid_r = np.repeat(np.arange(uniq.size), nr)
        pos_r = concat_ranges(self.iv_ptr[np.maximum(iv, 0)], nr)
        pairs = concat_ranges(e_lo, e_hi - e_lo)
        groups = self.ex_group[pairs]
        uid_e = np.repeat(np.repeat(np.arange(uniq.size), e_hi - e_lo), self.g_count[groups])
        pos_e = concat_ranges(self.g_ptr[groups], self.g_count[groups])
        uid = np.concatenate([uid_r, uid_e])
        holder = np.concatenate([self.iv_shard[pos_r], self.g_shard[pos_e]])
        order = np.lexsort((holder, uid))
        holder = holder[order]
        total = nr + ne
        ptr = np.concatenate([[0], np.cumsum(total)])
        pick = bags % total[inverse]
        return holder[ptr[inverse] + pick]

    def local_index(self, shard: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Position of each row within its shard's row set."""
        local = np.empty(rows.shape, dtype=np.int64)
        is_range = np.zeros(rows.shape, dtype=bool)
        if len(self.range_starts) > 8:
            ids = np.array(sorted(self.range_starts), dtype=np.int64)
            starts = np.array([self.range_starts[i] for i in ids.tolist()], dtype=np.int64)
            pos = np.minimum(np.searchsorted(ids, shard), ids.size - 1)
            hit = ids[pos] == shard
            local[hit] = rows[hit] - starts[pos[hit]]
            is_range = hit
            range_items: Iterable[tuple[int, int]] = ()
        else:
            range_items = self.range_starts.items()
        for i, start in range_items:
            m = shard == i
            local[m] = rows[m] - start
            is_range |= m
        ex = ~is_range
        if ex.any():
            group = self.group_of(shard[ex])
            pos = np.searchsorted(self.seg_keys, group * self.num_rows + rows[ex])
            local[ex] = pos - self._seg_firsts[group]
        return local


def host_mask(plan: Plan, table: int, rows: np.ndarray) -> np.ndarray:
    """True where a lookup of ``table`` is served by the host cache.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
    >>> p.host_rows[0] = np.array([2, 5])
    >>> host_mask(p, 0, np.array([1, 2, 5, 7])).tolist()
    [False, True, True, False]
    """
    cached = plan.host_rows.get(table)
    if cached is None or len(cached) == 0:
        return np.zeros(np.shape(rows), dtype=bool)
    cached = np.asarray(cached, dtype=np.int64)
    num_rows = plan.tables[table].num_embeddings
    if num_rows <= DENSE_ROUTING_MAX_ROWS:
        dense = np.zeros(num_rows, dtype=bool)
        dense[cached] = True
        return dense[rows]
    if cached.size > 1 and not np.all(cached[1:] > cached[:-1]):
        cached = np.unique(cached)
    pos = np.searchsorted(cached, rows)
    pos = np.minimum(pos, cached.size - 1)
    return cached[pos] == rows


def column_slices(plan: Plan, table: int) -> list[tuple[int, int]]:
    """The column slices ``[(lo, hi), ...]`` of ``table`` in ``plan``.

    >>> from updlrm.plan import uniform_plan
    >>> from updlrm.specs import TableSpec, Topology
    >>> column_slices(uniform_plan([TableSpec("a", 8, 4)], Topology(2), "column_wise"), 0)
    [(0, 2), (2, 4)]
    """
    splits = plan.col_splits(table)
    return list(zip(splits[:-1], splits[1:]))
