"""Cluster plans: which rows and columns of which table live on which UPMEM server.

The first stage of placement over several servers, as torchrec shards tables across
GPUs: every table becomes one or more *host shards* — a row range and a column range
on one host — table-wise (one shard on one host), row-wise (row ranges on several
hosts) or column-wise (column slices on several hosts). Inside each host the shards
are ordinary tables for today's per-host placement (:mod:`updlrm.plan`,
:mod:`updlrm.partitioner`). A one-host cluster plan is the single-server case: one
shard per table on host 0.

Invariants (checked by :meth:`ClusterPlan.validate`): every (row, column) of every
table is held by exactly one shard; a shard is a rectangle ``[row_start, row_stop) x
[col_start, col_stop)``; the shards of a host fit its MRAM.

Example:
    >>> from updlrm.specs import TableSpec
    >>> tables = [TableSpec("a", 1000, 16), TableSpec("b", 10, 8), TableSpec("c", 500, 8)]
    >>> plan = plan_cluster(tables, [HostSpec(64), HostSpec(64)], strategy="table_wise")
    >>> [(s.table, s.host) for s in plan.shards]
    [(0, 0), (1, 1), (2, 1)]
    >>> plan_cluster(tables, [HostSpec(64)] * 2, strategy="row_wise").shards[0]
    HostShard(table=0, host=0, row_start=0, row_stop=500, col_start=0, col_stop=16)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from updlrm.specs import DPUS_PER_RANK, MRAM_BYTES_PER_DPU, TableSpec, Topology, padded_row_bytes, tables_hash

CLUSTER_PLAN_FORMAT = "updlrm-cluster-plan"
CLUSTER_PLAN_VERSION = 1
STRATEGIES = ("auto", "table_wise", "row_wise", "column_wise")

# MRAM a host may fill with rows: the rest is left for the kernel's inputs and outputs
# (the per-host placement checks the exact figure when it loads).
MRAM_FILL = 0.9


class ClusterPlanError(ValueError):
    """A cluster plan that does not fit its tables or hosts (the message says what differs)."""


@dataclass(frozen=True)
class HostSpec:
    """One UPMEM server: its DPUs (``nr_dpus`` in ranks of ``dpus_per_rank``) and MRAM per DPU.

    A full server has 40 ranks of 64 DPUs with 64 MB of MRAM each (UPMEM product brief:
    2,560 DPUs, 160 GB).

    >>> HostSpec(2560).mram_bytes / 1e9
    171.79869184
    """

    nr_dpus: int
    dpus_per_rank: int = DPUS_PER_RANK
    mram_bytes_per_dpu: int = MRAM_BYTES_PER_DPU

    def __post_init__(self) -> None:
        if self.nr_dpus < 1:
            raise ClusterPlanError(f"a host needs at least one DPU, got nr_dpus={self.nr_dpus}")

    @property
    def mram_bytes(self) -> int:
        return self.nr_dpus * self.mram_bytes_per_dpu

    def topology(self) -> Topology:
        return Topology(
            nr_dpus=self.nr_dpus, dpus_per_rank=self.dpus_per_rank, mram_bytes_per_dpu=self.mram_bytes_per_dpu
        )


@dataclass(frozen=True)
class HostShard:
    """Rows ``[row_start, row_stop)`` and columns ``[col_start, col_stop)`` of table ``table`` on host ``host``."""

    table: int
    host: int
    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def num_rows(self) -> int:
        return self.row_stop - self.row_start

    @property
    def dim(self) -> int:
        return self.col_stop - self.col_start

    def local_spec(self, spec: TableSpec) -> TableSpec:
        """The table this shard is on its host: re-based rows, its columns, the same format and scale."""
        return dataclasses.replace(
            spec,
            name=f"{spec.name}[{self.row_start}:{self.row_stop},{self.col_start}:{self.col_stop}]",
            num_embeddings=self.num_rows,
            embedding_dim=self.dim,
        )

    def mram_bytes(self, spec: TableSpec) -> int:
        return self.num_rows * padded_row_bytes(self.dim, spec.row_format)


@dataclass
class ClusterPlan:
    """Tables over hosts: the shards, in the order each host stores them.

    ``pooling`` is ``"sum"`` or ``"mean"`` per table (torchrec's ``PoolingType``).
    """

    tables: list[TableSpec]
    hosts: list[HostSpec]
    shards: list[HostShard]
    pooling: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.pooling:
            self.pooling = ["sum"] * len(self.tables)

    @property
    def nr_hosts(self) -> int:
        return len(self.hosts)

    def shards_of_host(self, host: int) -> list[int]:
        """Indices of ``host``'s shards, in the order its engine holds them."""
        return [i for i, s in enumerate(self.shards) if s.host == host]

    def shards_of_table(self, table: int) -> list[int]:
        return [i for i, s in enumerate(self.shards) if s.table == table]

    def is_row_split(self, table: int) -> bool:
        """Whether a bag of ``table`` can be summed on several hosts (row ranges on different hosts)."""
        return len({(s.row_start, s.row_stop) for s in (self.shards[i] for i in self.shards_of_table(table))}) > 1

    def mram_bytes_per_host(self) -> np.ndarray:
        out = np.zeros(self.nr_hosts, dtype=np.int64)
        for s in self.shards:
            out[s.host] += s.mram_bytes(self.tables[s.table])
        return out

    def validate(self) -> None:
        """Raise :class:`ClusterPlanError` unless every cell is held once and every host's shards fit."""
        if len(self.pooling) != len(self.tables):
            raise ClusterPlanError(f"pooling has {len(self.pooling)} entries for {len(self.tables)} tables")
        for t, mode in enumerate(self.pooling):
            if mode not in ("sum", "mean"):
                raise ClusterPlanError(f"table {self.tables[t].name!r}: pooling must be 'sum' or 'mean', got {mode!r}")
        for i, s in enumerate(self.shards):
            if not 0 <= s.table < len(self.tables):
                raise ClusterPlanError(f"shard {i} names table {s.table}; the plan has {len(self.tables)} tables")
            if not 0 <= s.host < self.nr_hosts:
                raise ClusterPlanError(f"shard {i} names host {s.host}; the plan has {self.nr_hosts} hosts")
            spec = self.tables[s.table]
            if not (
                0 <= s.row_start < s.row_stop <= spec.num_embeddings
                and 0 <= s.col_start < s.col_stop <= spec.embedding_dim
            ):
                raise ClusterPlanError(
                    f"shard {i} of table {spec.name!r} holds rows [{s.row_start}, {s.row_stop}) x columns "
                    f"[{s.col_start}, {s.col_stop}), outside the table's {spec.num_embeddings} x {spec.embedding_dim}"
                )
        for t, spec in enumerate(self.tables):
            cells = sum(self.shards[i].num_rows * self.shards[i].dim for i in self.shards_of_table(t))
            cover = _coverage(spec, [self.shards[i] for i in self.shards_of_table(t)])
            if cells != spec.num_embeddings * spec.embedding_dim or not cover:
                raise ClusterPlanError(
                    f"table {spec.name!r}: its shards must hold every row and column exactly once "
                    f"({cells:,} cells held for {spec.num_embeddings * spec.embedding_dim:,})"
                )
        used = self.mram_bytes_per_host()
        for h, host in enumerate(self.hosts):
            if used[h] > MRAM_FILL * host.mram_bytes:
                raise ClusterPlanError(
                    f"host {h}: its shards take {used[h] / 1e9:.2f} GB of MRAM, more than {MRAM_FILL:.0%} of its "
                    f"{host.mram_bytes / 1e9:.2f} GB; add DPUs or hosts"
                )

    # -- persistence --------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": CLUSTER_PLAN_FORMAT,
            "version": CLUSTER_PLAN_VERSION,
            "tables": [t.to_dict() for t in self.tables],
            "tables_hash": tables_hash(self.tables),
            "hosts": [dataclasses.asdict(h) for h in self.hosts],
            "pooling": list(self.pooling),
            "shards": [dataclasses.asdict(s) for s in self.shards],
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClusterPlan:
        if d.get("format") != CLUSTER_PLAN_FORMAT:
            raise ClusterPlanError(
                f"not an updlrm cluster plan (format {d.get('format')!r}, expected {CLUSTER_PLAN_FORMAT!r})"
            )
        if d.get("version") != CLUSTER_PLAN_VERSION:
            raise ClusterPlanError(
                f"cluster plan version {d.get('version')!r} is not supported (this updlrm reads {CLUSTER_PLAN_VERSION})"
            )
        for key in ("tables", "hosts", "shards", "tables_hash"):
            if key not in d:
                raise ClusterPlanError(f"cluster plan has no {key!r} entry; write it with ClusterPlan.save")
        tables = [TableSpec.from_dict(t) for t in d["tables"]]
        if tables_hash(tables) != d["tables_hash"]:
            raise ClusterPlanError("cluster plan's tables do not match its tables_hash (the file was edited)")
        plan = cls(
            tables=tables,
            hosts=[HostSpec(**h) for h in d["hosts"]],
            shards=[HostShard(**s) for s in d["shards"]],
            pooling=list(d.get("pooling", [])),
            metadata=dict(d.get("metadata", {})),
        )
        plan.validate()
        return plan

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClusterPlan:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterPlanError(f"{path}: no such cluster plan file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ClusterPlanError(f"{path}: not a JSON cluster plan ({error})") from None
        return cls.from_dict(d)

    def __str__(self) -> str:
        used = self.mram_bytes_per_host()
        lines = [
            f"ClusterPlan: {len(self.tables)} tables over {self.nr_hosts} host(s), {len(self.shards)} shards "
            f"({self.metadata.get('strategy', 'given')})"
        ]
        for h, host in enumerate(self.hosts):
            names = [self.tables[self.shards[i].table].name for i in self.shards_of_host(h)]
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} shards)" if len(names) > 6 else "")
            lines.append(f"  host {h}: {host.nr_dpus} DPUs, {used[h] / 1e6:.1f} MB of rows: {shown or '(nothing)'}")
        return "\n".join(lines)


def _coverage(spec: TableSpec, shards: list[HostShard]) -> bool:
    """Every cell held exactly once (shards are rectangles: a grid check on their boundaries)."""
    rows = sorted({0, spec.num_embeddings} | {b for s in shards for b in (s.row_start, s.row_stop)})
    cols = sorted({0, spec.embedding_dim} | {b for s in shards for b in (s.col_start, s.col_stop)})
    count = np.zeros((len(rows) - 1, len(cols) - 1), dtype=np.int64)
    for s in shards:
        r0, r1 = rows.index(s.row_start), rows.index(s.row_stop)
        c0, c1 = cols.index(s.col_start), cols.index(s.col_stop)
        count[r0:r1, c0:c1] += 1
    return bool(np.all(count == 1))


def _split(n: int, parts: int) -> list[int]:
    """Boundaries of ``parts`` near-equal ranges of ``n`` (no empty range: at most ``n`` parts)."""
    parts = max(1, min(parts, n))
    return [n * i // parts for i in range(parts + 1)]


def plan_cluster(
    tables: list[TableSpec],
    hosts: list[HostSpec],
    *,
    loads: list[float] | None = None,
    pooling: list[str] | None = None,
    strategy: str = "auto",
    network=None,
    batch_size: int = 4096,
) -> ClusterPlan:
    """Split ``tables`` over ``hosts``.

    ``loads`` is the expected lookups per sample of each table (default 1). Strategies:

    * ``table_wise``: whole tables, greedily to the host with the least expected bytes
      gathered so far that has room (largest load first); a table that fits no host
      whole is split row-wise over as many hosts as it needs.
    * ``row_wise``: every table's rows split evenly over all hosts.
    * ``column_wise``: every table's columns split over all hosts (at most one column each).
    * ``auto``: the candidate with the smallest modeled batch time
      (:func:`updlrm.distributed.model.estimate_cluster`: network term + per-host load).

    >>> t = [TableSpec("a", 10, 4)]
    >>> plan_cluster(t, [HostSpec(4)], strategy="auto").shards
    [HostShard(table=0, host=0, row_start=0, row_stop=10, col_start=0, col_stop=4)]
    """
    if not hosts:
        raise ClusterPlanError("a cluster plan needs at least one host")
    if strategy not in STRATEGIES:
        raise ClusterPlanError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    loads = [1.0] * len(tables) if loads is None else [float(x) for x in loads]
    if len(loads) != len(tables):
        raise ClusterPlanError(f"loads has {len(loads)} entries for {len(tables)} tables")
    pooling = list(pooling) if pooling is not None else ["sum"] * len(tables)
    if strategy == "auto":
        from updlrm.distributed.model import NETWORKS, estimate_cluster

        net = network if network is not None else NETWORKS["ethernet-100g"]
        best, best_s = None, np.inf
        for candidate in ("table_wise", "row_wise", "column_wise"):
            try:
                plan = plan_cluster(tables, hosts, loads=loads, pooling=pooling, strategy=candidate)
            except ClusterPlanError:
                continue
            seconds = estimate_cluster(plan, loads, batch_size=batch_size, network=net).total_s
            if seconds < best_s:
                best, best_s = plan, seconds
        if best is None:
            raise ClusterPlanError("no strategy fits these tables on these hosts; add hosts or DPUs")
        best.metadata["modeled_batch_s"] = best_s
        return best

    shards: list[HostShard] = []
    if strategy == "row_wise":
        for t, spec in enumerate(tables):
            bounds = _split(spec.num_embeddings, len(hosts))
            shards += [HostShard(t, h, bounds[h], bounds[h + 1], 0, spec.embedding_dim) for h in range(len(bounds) - 1)]
    elif strategy == "column_wise":
        for t, spec in enumerate(tables):
            bounds = _split(spec.embedding_dim, len(hosts))
            shards += [
                HostShard(t, h, 0, spec.num_embeddings, bounds[h], bounds[h + 1]) for h in range(len(bounds) - 1)
            ]
    else:
        shards = _table_wise(tables, hosts, loads)
    plan = ClusterPlan(
        tables=list(tables),
        hosts=list(hosts),
        shards=sorted(shards, key=lambda s: (s.host, s.table, s.row_start, s.col_start)),
        pooling=pooling,
        metadata={"strategy": strategy},
    )
    plan.validate()
    return plan


def _table_wise(tables: list[TableSpec], hosts: list[HostSpec], loads: list[float]) -> list[HostShard]:
    free = np.array([MRAM_FILL * h.mram_bytes for h in hosts], dtype=np.float64)
    work = np.zeros(len(hosts))
    shards: list[HostShard] = []
    order = sorted(range(len(tables)), key=lambda t: -loads[t] * tables[t].row_bytes())
    for t in order:
        spec = tables[t]
        need = spec.num_embeddings * padded_row_bytes(spec.embedding_dim, spec.row_format)
        gathered = loads[t] * spec.row_bytes()
        fits = np.flatnonzero(free >= need)
        if fits.size:
            h = int(fits[np.argmin(work[fits])])
            shards.append(HostShard(t, h, 0, spec.num_embeddings, 0, spec.embedding_dim))
            free[h] -= need
            work[h] += gathered
            continue
        # Too big for any one host: rows over the hosts with the most room, as many as it takes.
        row_bytes = padded_row_bytes(spec.embedding_dim, spec.row_format)
        start = 0
        for h in np.argsort(-free):
            rows = int(min(spec.num_embeddings - start, free[h] // row_bytes))
            if rows <= 0:
                continue
            shards.append(HostShard(t, int(h), start, start + rows, 0, spec.embedding_dim))
            free[h] -= rows * row_bytes
            work[h] += gathered * rows / spec.num_embeddings
            start += rows
            if start == spec.num_embeddings:
                break
        if start < spec.num_embeddings:
            raise ClusterPlanError(
                f"table {spec.name!r} ({need / 1e9:.2f} GB) does not fit in the hosts' free MRAM; add hosts or DPUs"
            )
    return shards
