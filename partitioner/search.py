"""Stage 2b of the planner: the layout search (torchrec's enumerator, proposer and estimator in one).

For every table a shape ``k`` row parts x ``c`` column slices (``k = c = 1`` is
table-wise, ``c = 1`` row-wise, ``k = 1`` column-wise, else tiles), the whole group of
``k x c`` shards held ``r`` times (data parallel inside the server: sample ``b`` goes to
replica ``b mod r``, the routing rule of replicated rows, so a bag still reaches at
most ``k x c`` DPUs while each replica serves ``1/r`` of the bags) and, globally, the
modeled cost level down to which the host cache relieves every table's parts (each
table caching the shortest prefix of its hottest rows that reaches it, which keeps the
DPUs balanced when the host is the bottleneck).  Candidates are scored with
:func:`updlrm.perfmodel.model_batch` on the work they imply (kernel of the slowest DPU,
index bytes in, partial sums out with rank padding, host merge, host cache overlapping
the DPU phases; :class:`~updlrm.partitioner.cost.CostModel`), by coordinate descent over
the tables (:class:`LayoutSearch`).  :func:`search_layout` runs the whole stage and
returns a :class:`Layout`.

Example:
    >>> from updlrm import perfmodel
    >>> from updlrm.specs import TableSpec
    >>> from updlrm.partitioner.expected_loads import table_workloads
    >>> from updlrm.partitioner.workloads import synthetic_trace
    >>> tables = [TableSpec("a", 1000, 8), TableSpec("b", 300, 8)]
    >>> wls = table_workloads(tables, synthetic_trace(tables, batch_size=64, pooling=4, seed=1))
    >>> model = CostModel(tables, perfmodel.get_profile("upmem-350mhz-2556", nr_dpus=8), 8, False, 16,
    ...                   [wl.total_load for wl in wls])
    >>> layout = search_layout(wls, model, 1 << 20, replicate=True, host_cache=False, host_cache_bytes=0)
    >>> [s.dpus for s in layout.shapes], layout.cached.tolist(), layout.estimate_s > 0
    ([8, 8], [0, 0], True)

Replicas are bought with the MRAM the tables leave free: the estimate places every
part with its bytes and rejects layouts that do not fit (:meth:`LayoutSearch.estimate`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from updlrm import perfmodel
from updlrm.partitioner.cost import CostModel
from updlrm.partitioner.expected_loads import TableWorkload
from updlrm.partitioner.host_cost import HostCostModel
from updlrm.partitioner.levels import cached_for_level, level_replicas
from updlrm.partitioner.straggler import part_dispersion, straggler_z
from updlrm.plan import PlanError, column_bounds, format_bytes
from updlrm.specs import padded_row_bytes

__all__ = [
    "COLUMN_SLICE_CHOICES",
    "DPU_TIE_BREAK",
    "Layout",
    "LayoutSearch",
    "TableShape",
    "search_layout",
]

COLUMN_SLICE_CHOICES = (1, 2, 4, 8)
# Replicated groups are tried only for row parts up to this multiple of the fewest
# parts the table fits in: replicas pay by cutting fan-out, which more parts undo.
REPLICA_MAX_PARTS_FACTOR = 2
# Weight of the DPU side in the search's score, next to the modeled batch time.
DPU_TIE_BREAK = 0.05


@dataclass
class TableShape:
    """``parts`` row parts x ``slices`` column slices, held ``replicas`` times, and what they imply per part (per batch).

    ``part_variance``: batch-to-batch variance of a part's lookups (:func:`part_dispersion`
    times ``part_lookups``).
    """

    parts: int
    slices: int
    replicas: int = 1
    part_bytes: float = 0.0
    part_lookups: float = 0.0
    row_bytes: float = 0.0
    index_bytes: float = 0.0
    output_bytes: float = 0.0
    reduce_elems: float = 0.0
    part_cost: float = 0.0
    merge_elems: float = 0.0
    gap_bytes: float = 0.0
    part_variance: float = 0.0

    @property
    def dpus(self) -> int:
        return self.parts * self.slices * self.replicas

    @property
    def key(self) -> tuple[int, int, int]:
        return self.parts, self.slices, self.replicas

    def fields(self) -> tuple[float, ...]:
        """Every field, in order: what the search's estimate of a layout depends on."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @property
    def on_host(self) -> bool:
        """The whole table on the host CPU (``parts == 0``): every row in the plan's host cache."""
        return self.parts == 0


HOST = (0, 1, 1)  # the (parts, slices, replicas) candidate "whole table on the host CPU"


class LayoutSearch:
    """Coordinate descent over table shapes and the host-cache size, scored by the perfmodel."""

    def __init__(
        self,
        workloads: list[TableWorkload],
        model: CostModel,
        capacity: int,
        replicate: bool,
        max_replicas: int | None = None,
        host_cost: HostCostModel | None = None,
        host_cache_bytes: int = 0,
    ) -> None:
        self.wls = workloads
        self.model = model
        self.n = model.nr_dpus
        self.capacity = capacity
        self.replicate = replicate
        self.max_replicas = self.n if max_replicas is None else max(1, int(max_replicas))
        # With a host cost model every table may also go whole to the host CPU (HOST),
        # and host-cached lookups are priced by it instead of the profile's gather rate.
        self.host_cost = host_cost
        # Without one, a table that fits ``host_cache_bytes`` may be held whole in the host
        # cache (HOST too): it then also serves the rows the trace never saw, whose
        # expected load (``wl.unranked``, the popularity model's unseen mass) no prefix
        # of ranked rows can catch.  Whole cached tables count against the budget.
        self.host_cache_bytes = host_cache_bytes
        self.candidates = [
            self._candidates(wl)
            + ([HOST] if host_cost is not None or 0 < self._table_bytes(wl) <= host_cache_bytes else [])
            for wl in workloads
        ]
        self._shapes: dict[tuple[int, int, int, int, int], TableShape] = {}
        # The descent re-scores many layouts it has seen before (each pass retries every
        # candidate; the host-cache levels revisit the same shapes): scores are memoised
        # by everything estimate() reads, and so are the per-table sums it repeats.
        self._scores: dict[tuple[tuple[tuple[float, ...], ...], tuple[int, ...]], float] = {}
        self._row_bytes = [wl.spec.row_bytes() for wl in workloads]
        self._total_loads = [wl.total_load for wl in workloads]
        self._served: dict[tuple[int, int], float] = {}

    @staticmethod
    def _table_bytes(wl: TableWorkload) -> int:
        return wl.spec.num_embeddings * wl.spec.row_bytes()

    def _host_served(self, t: int, cached: int) -> float:
        """Expected lookups per batch of table ``t``'s top ``cached`` rows (memoised)."""
        key = (t, cached)
        if key not in self._served:
            self._served[key] = float(self.wls[t].load[:cached].sum())
        return self._served[key]

    def host_cache_used(self, shapes: list[TableShape], cached: np.ndarray) -> int:
        """Bytes of the host cache: cached prefixes, and whole host tables unless a host cost model prices them."""
        used = 0
        for wl, s, h, row_bytes in zip(self.wls, shapes, cached, self._row_bytes):
            if s.on_host:
                used += 0 if self.host_cost is not None else wl.spec.num_embeddings * row_bytes
            else:
                used += int(h) * row_bytes
        return used

    def host_seconds(self, shapes: list[TableShape], cached: np.ndarray) -> float:
        """Calibrated host seconds of the host tables and the host-cached rows (needs ``host_cost``)."""
        assert self.host_cost is not None
        total = 0.0
        for wl, s, h in zip(self.wls, shapes, cached):
            row_bytes = wl.spec.row_bytes()
            if s.on_host:
                total += self.host_cost.seconds(wl.spec, wl.total_load, max(wl.rows.size, 1) * row_bytes)
            elif h > 0:
                total += self.host_cost.seconds(wl.spec, float(wl.load[: int(h)].sum()), int(h) * row_bytes)
        return total

    def _candidates(self, wl: TableWorkload) -> list[tuple[int, int, int]]:
        spec = wl.spec
        out: list[tuple[int, int, int]] = []
        for c in COLUMN_SLICE_CHOICES:
            bounds = column_bounds(spec, c)
            if len(bounds) - 1 != c or c > self.n:
                continue
            widest = max(padded_row_bytes(hi - lo, spec.row_format) for lo, hi in zip(bounds[:-1], bounds[1:]))
            k_min = max(1, math.ceil(spec.num_embeddings * widest / self.capacity))
            # Replicas let a table use more parts than it has rows.
            k_max = self.n // c if self.replicate else min(self.n // c, spec.num_embeddings)
            if k_min > k_max:
                continue
            ks = {k_min, k_max}
            k = 1
            while k <= k_max:
                if k >= k_min:
                    ks.add(k)
                k *= 2
            for k in sorted(ks):
                out.append((k, c, 1))
                if not self.replicate or k > REPLICA_MAX_PARTS_FACTOR * k_min:
                    continue
                r_max = min(self.n // (k * c), self.max_replicas)
                r = 2
                while r <= r_max:
                    out.append((k, c, r))
                    r *= 2
                if r_max >= 2 and (k, c, r_max) not in out:
                    out.append((k, c, r_max))
        if not out:
            need = spec.num_embeddings * spec.row_bytes()
            raise PlanError(
                f"table {spec.name} needs {format_bytes(need)}, {format_bytes(self.n * self.capacity)} "
                f"of MRAM free on {self.n} DPUs (at most one shard of a table per DPU)"
            )
        return out

    def shape(self, t: int, parts: int, slices: int, cached: int, replicas: int = 1) -> TableShape:
        """Table ``t`` as ``parts x slices`` held ``replicas`` times with its top ``cached`` rows on the host."""
        if (parts, slices, replicas) == HOST:
            return TableShape(*HOST)
        key = (t, parts, slices, cached, replicas)
        if key not in self._shapes:
            self._shapes[key] = self._shape(t, parts, slices, cached, replicas)
        return self._shapes[key]

    def _shape(self, t: int, parts: int, slices: int, cached: int, replicas: int) -> TableShape:
        wl, m = self.wls[t], self.model
        spec = wl.spec
        dpu_load = wl.dpu_load(cached)
        fanout = wl.fanout(parts, cached)
        slice_dim = spec.embedding_dim / slices
        bounds = column_bounds(spec, slices)
        row_bytes = float(
            np.mean([padded_row_bytes(hi - lo, spec.row_format) for lo, hi in zip(bounds[:-1], bounds[1:])])
        )
        out_bytes = m.partial_bytes(t, slice_dim)
        s = TableShape(parts, slices, replicas)
        s.part_bytes = math.ceil(spec.num_embeddings / parts) * row_bytes
        s.part_lookups = dpu_load / (parts * replicas)
        touched = wl.batch_size * fanout / (parts * replicas)
        s.row_bytes = row_bytes
        s.index_bytes = float(m.index_bytes(s.part_lookups, touched))
        s.output_bytes = touched * out_bytes
        s.gap_bytes = max(s.part_lookups - touched, 0.0) * out_bytes
        s.reduce_elems = s.part_lookups * slice_dim * m.elem_factor[t]
        s.part_cost = float(m.part_cost(s.part_lookups, row_bytes, s.index_bytes, s.output_bytes, s.reduce_elems)[0])
        s.merge_elems = wl.batch_size * fanout * spec.embedding_dim
        s.part_variance = s.part_lookups * part_dispersion(wl.bag_size_histogram(cached), parts)
        return s

    def estimate(self, shapes: list[TableShape], cached: np.ndarray) -> perfmodel.PhaseTimes | None:
        """Modeled batch after an LPT placement of every table's (identical) parts on the DPUs.

        Every part goes to one of the cheapest DPUs with MRAM left for it; a layout whose
        parts do not fit has no estimate (``None``).
        """
        n = self.n
        over_budget = self.host_cache_used(shapes, cached) > self.host_cache_bytes
        if self.host_cost is None and any(s.on_host for s in shapes) and over_budget:
            return None
        per_dpu = np.zeros((7, n))
        cost = np.zeros(n)
        free = np.full(n, float(self.capacity))
        for t in sorted(range(len(shapes)), key=lambda t: (-shapes[t].part_cost, -shapes[t].part_bytes)):
            s = shapes[t]
            if s.on_host:
                continue
            d = s.dpus
            room = free >= s.part_bytes
            if d > n or int(room.sum()) < d:
                return None
            masked = cost if d == n or room.all() else np.where(room, cost, np.inf)
            chosen = np.argpartition(masked, d - 1)[:d] if d < n else np.arange(n)
            cost[chosen] += s.part_cost
            free[chosen] -= s.part_bytes
            per_dpu[:, chosen] += np.array(
                [
                    [s.part_lookups],
                    [s.part_lookups * s.row_bytes],
                    [s.index_bytes],
                    [s.output_bytes],
                    [s.reduce_elems],
                    [s.gap_bytes],
                    [s.part_variance],
                ]
            )
        # The batch waits for its slowest DPU: each DPU's work as in a batch where it is
        # the straggler, its lookups ``z_n`` standard deviations above their mean.
        lookups = per_dpu[0]
        spread = np.divide(straggler_z(n) * np.sqrt(per_dpu[6]), lookups, out=np.zeros(n), where=lookups > 0)
        per_dpu[[0, 2, 4, 5]] *= 1.0 + spread
        row_bytes = np.divide(per_dpu[1], lookups, out=np.full(n, 8.0), where=lookups > 0)
        host_lookups = host_bytes = 0.0
        for t, (h, s) in enumerate(zip(cached, shapes)):
            served = self._total_loads[t] if s.on_host else self._host_served(t, int(h))
            host_lookups += served
            host_bytes += served * self._row_bytes[t]
        if self.host_cost is not None and all(s.on_host for s in shapes):
            # CPU only: no DPU phase at all.
            zero = np.zeros(n)
            return perfmodel.PhaseTimes(0.0, 0.0, 0.0, 0.0, 0.0, self.host_seconds(shapes, cached), zero)
        phases = self.model.batch(
            lookups=lookups,
            row_bytes=row_bytes,
            index_bytes=per_dpu[2],
            output_bytes=per_dpu[3],
            reduce_elems=per_dpu[4],
            host_merge_elems=sum(s.merge_elems for s in shapes),
            host_cache_lookups=host_lookups,
            host_cache_row_bytes=host_bytes / host_lookups if host_lookups else 0,
            gap_bytes=per_dpu[5],
        )
        if self.host_cost is not None:
            phases = dataclasses.replace(phases, host_cache_s=self.host_seconds(shapes, cached))
        return phases

    def cpu_only(self) -> list[TableShape]:
        """Every table on the host CPU."""
        return [TableShape(*HOST) for _ in self.wls]

    def choices(self, shapes: list[TableShape], cached: np.ndarray) -> list[dict[str, float | str]]:
        """Per table: where it goes and the modeled batch with it on the DPUs and on the host (the other tables as they are).

        A DPU table's alternative is the whole table on the host; a host table's is the
        best DPU shape for it.  Needs ``host_cost``.
        """

        def total(trial: list[TableShape], trial_cached: np.ndarray) -> float:
            phases = self.estimate(trial, trial_cached)
            return math.inf if phases is None else phases.total_s

        out: list[dict[str, float | str]] = []
        base = total(shapes, cached)
        for t, s in enumerate(shapes):
            if s.on_host:
                trials = []
                for k, c, r in self.candidates[t]:
                    if (k, c, r) == HOST:
                        continue
                    trial = list(shapes)
                    trial[t] = self.shape(t, k, c, 0, r)
                    trials.append(total(trial, cached))
                host_s, dpu_s = base, min(trials, default=math.inf)
            else:
                trial = list(shapes)
                trial[t] = TableShape(*HOST)
                trial_cached = cached.copy()
                trial_cached[t] = 0
                host_s, dpu_s = total(trial, trial_cached), base
            out.append(
                {
                    "where": "host" if s.on_host else "dpus",
                    "batch_s_on_dpus": dpu_s,
                    "batch_s_on_host": host_s,
                    "host_s_alone": self.host_cost.seconds(self.wls[t].spec, self.wls[t].total_load)
                    if self.host_cost is not None
                    else math.nan,
                }
            )
        return out

    def score(self, shapes: list[TableShape], cached: np.ndarray) -> float:
        """Modeled batch time, plus a small share of the DPU side to break near-ties.

        With a host cache the batch takes ``max(host, dpu) + merge``: a move that speeds
        up the DPUs alone changes nothing until the cache shrinks, so without the tie-break
        the search would stall where the two sides meet.
        """
        key = (tuple(s.fields() for s in shapes), tuple(cached.tolist()))
        if key not in self._scores:
            t = self.estimate(shapes, cached)
            self._scores[key] = math.inf if t is None else t.total_s + DPU_TIE_BREAK * t.dpu_s
        return self._scores[key]

    def descend(
        self, shapes: list[TableShape], cached: np.ndarray, passes: int, local: bool = False
    ) -> tuple[list[TableShape], float]:
        """Per table in turn, the shape that minimises :meth:`score`; ``local`` tries only neighbours.

        Each pass ends with global moves (every table's row parts doubled or halved at
        once), which a table-by-table search cannot see when many tables share the
        straggler's role.
        """
        best = self.score(shapes, cached)
        order = np.argsort([-wl.total_load for wl in self.wls], kind="stable")
        for _ in range(passes):
            changed = False
            for t in order:
                current = shapes[t]
                for k, c, r in self.candidates[t]:
                    if (k, c, r) == current.key:
                        continue
                    # Host <-> DPU moves are always tried; locally, DPU shapes only next door.
                    if (
                        local
                        and k
                        and current.parts
                        and sum(abs(math.log2(a / b)) for a, b in zip((k, c, r), current.key)) > 1
                    ):
                        continue
                    trial = self.shape(t, k, c, int(cached[t]), r)
                    shapes[t] = trial
                    total = self.score(shapes, cached)
                    if total < best * (1 - 1e-9):
                        best, current, changed = total, trial, True
                    shapes[t] = current
            # Global moves: all tables, or only those whose parts outweigh an even share,
            # get twice or half the row parts or the replicas at once.
            even_share = sum(s.part_cost * s.dpus for s in shapes) / self.n
            for axis, factor, only_heavy in (
                (0, 2.0, True),
                (0, 2.0, False),
                (0, 0.5, False),
                (2, 2.0, False),
                (2, 0.5, False),
            ):
                trial_shapes = []
                for t, s in enumerate(shapes):
                    allowed = set(self.candidates[t])
                    key = list(s.key)
                    key[axis] = int(key[axis] * factor)
                    move = (
                        not s.on_host
                        and key[0] > 0
                        and tuple(key) in allowed
                        and (not only_heavy or s.part_cost > even_share)
                    )
                    trial_shapes.append(self.shape(t, key[0], key[1], int(cached[t]), key[2]) if move else s)
                total = self.score(trial_shapes, cached)
                if total < best * (1 - 1e-9):
                    best, shapes, changed = total, trial_shapes, True
            if not changed:
                break
        return shapes, best

    def level_replicas(
        self, shapes: list[TableShape], cached: np.ndarray, best: float
    ) -> tuple[list[TableShape], float]:
        """Replica counts levelled across tables (:func:`.levels.level_replicas`)."""
        return level_replicas(self, shapes, cached, best)

    def initial(self, cached: np.ndarray) -> list[TableShape]:
        shapes = []
        share = max(1, self.n // max(len(self.wls), 1))
        for t in range(len(self.wls)):
            c0 = self.candidates[t][0][1]
            ks = [k for k, c, r in self.candidates[t] if c == c0 and r == 1 and k > 0]
            k = max([k for k in ks if k <= share] or [min(ks)])
            shapes.append(self.shape(t, k, c0, int(cached[t])))
        return shapes


@dataclass
class Layout:
    """The layout search's result: every table's shape, its host-cached row count, the modeled batch.

    ``cached[t]``: how many of table ``t``'s hottest rows (``workloads[t].rows[:cached[t]]``)
    the host cache serves; ``estimate_s``: the search's score of the layout
    (:meth:`LayoutSearch.score`).
    """

    shapes: list[TableShape]
    cached: np.ndarray
    estimate_s: float
    cpu_only_s: float | None = None
    choices: list[dict[str, float | str]] | None = None

    @property
    def host_tables(self) -> list[int]:
        """Tables that go whole to the host CPU."""
        return [t for t, s in enumerate(self.shapes) if s.on_host]

    @property
    def cpu_only(self) -> bool:
        return bool(self.shapes) and all(s.on_host for s in self.shapes)

    def host_rows(self, workloads: list[TableWorkload]) -> dict[int, np.ndarray]:
        """The host-cached rows of every table that has some, sorted (``Plan.host_rows``); all rows of a host table."""
        out = {}
        for t, (wl, s) in enumerate(zip(workloads, self.shapes)):
            if s.on_host:
                out[t] = np.arange(wl.spec.num_embeddings, dtype=np.int64)
            elif self.cached[t] > 0:
                out[t] = np.sort(wl.rows[: int(self.cached[t])])
        return out


def search_layout(
    workloads: list[TableWorkload],
    model: CostModel,
    capacity: int,
    *,
    replicate: bool,
    host_cache: bool,
    host_cache_bytes: int,
    max_replicas: int | None = None,
    host_cost: HostCostModel | None = None,
) -> Layout:
    """Shapes and host cache of every table minimising the modeled batch time under ``capacity`` bytes per DPU.

    ``max_replicas`` caps how many times a table's group of shards may be held (``None``: no cap).
    With ``host_cost`` a table may also go whole to the host CPU (its lookups run there
    during the DPU phases, like the host cache; whole host tables are not counted in
    ``host_cache_bytes``), and the layout is never modeled slower than every table on
    the host: if the search's best is, the layout is CPU only.
    """
    search = LayoutSearch(
        workloads, model, capacity, replicate, max_replicas, host_cost, host_cache_bytes if host_cache else 0
    )
    cached = np.zeros(len(workloads), dtype=np.int64)
    shapes = search.initial(cached)
    shapes, best = search.descend(shapes, cached, passes=2)
    if host_cache:
        # The host cache takes lookups off the DPUs down to a common level: every table
        # caches the shortest prefix of its hottest rows that brings its parts' modeled
        # cost to the level, so the DPUs stay balanced whichever side is the bottleneck
        # (host time grows with the lookups served, not with which rows serve them).
        # The level is searched on a geometric grid, then a finer one around the best,
        # each point with a local re-shaping of the tables (the two choices interact).
        levels = [max(s.part_cost for s in shapes) * 2 ** (-i / 2) for i in range(1, 41)]
        best_level = None
        for _round in range(2):
            for level in levels:
                trial_cached = cached_for_level(workloads, shapes, level, host_cache_bytes)
                if trial_cached is None:
                    break
                trial = [
                    search.shape(t, s.parts, s.slices, int(trial_cached[t]), s.replicas) for t, s in enumerate(shapes)
                ]
                trial, total = search.descend(trial, trial_cached, passes=1, local=True)
                if total < best:
                    best, best_level, cached, shapes = total, level, trial_cached, trial
            shapes, best = search.descend(shapes, cached, passes=3, local=True)
            if best_level is None:
                break
            levels = [best_level * 2 ** (i / 8) for i in range(-3, 4) if i]
    # A last full pass (every shape of every table), then neighbours until nothing moves.
    shapes, best = search.descend(shapes, cached, passes=1)
    shapes, best = search.descend(shapes, cached, passes=3, local=True)
    shapes, best = search.level_replicas(shapes, cached, best)
    if host_cost is None:
        return Layout(shapes, cached, best)
    cpu_only = search.cpu_only()
    no_cache = np.zeros(len(workloads), dtype=np.int64)
    cpu_phases = search.estimate(cpu_only, no_cache)
    assert cpu_phases is not None
    cpu_only_s = cpu_phases.total_s
    chosen = search.estimate(shapes, cached)
    if chosen is None or chosen.total_s > cpu_only_s:
        shapes, cached, best = cpu_only, no_cache, search.score(cpu_only, no_cache)
    return Layout(shapes, cached, best, cpu_only_s, search.choices(shapes, cached))
