"""Placement plans: which rows (and which columns of them) live on which DPU.

One mechanism describes every layout. A plan is a list of *shards*; a shard holds, on
one DPU, the columns ``[col_start, col_stop)`` of a sorted set of rows of one table:

* table-wise: one shard per table holding all rows and columns;
* row-wise over k DPUs: k shards with disjoint row sets and all columns;
* column-wise over c DPUs: c shards with all rows and disjoint column slices;
* hybrid tiles: both at once;
* replicated hot rows: a row may appear in several shards of the same column slice
  (the engine routes each lookup to one replica);
* host cache: rows listed in ``host_rows[table]`` are served by the host.

The column slices of a table are the union of its shards' column boundaries; every
shard covers exactly one slice, and every (row, slice) pair must be held by at least one
shard or by the host cache.

A plan is saved as a versioned JSON document plus an ``.npz`` beside it for explicit row
sets. Loading checks the format, the hash of the tables (and of the workload, if given),
the arrays' checksum, coverage and MRAM capacity before anything is copied to a DPU.

Example:
    >>> from updlrm.specs import TableSpec, Topology
    >>> tables = [TableSpec("a", 1000, 64), TableSpec("b", 10, 8)]
    >>> plan = uniform_plan(tables, Topology(nr_dpus=4), "row_wise")
    >>> [(s.table, s.dpu, s.num_rows) for s in plan.shards]
    [(0, 0, 250), (0, 1, 250), (0, 2, 250), (0, 3, 250), (1, 0, 2), (1, 1, 3), (1, 2, 3), (1, 3, 2)]
    >>> plan.validate()
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from updlrm.plan_schema import PLAN_SCHEMA as PLAN_SCHEMA  # re-exported: its home was here
from updlrm.plan_schema import PlanError, check_schema
from updlrm.specs import TableSpec, Topology, padded_row_bytes, tables_hash

PLAN_FORMAT = "updlrm-plan"
# 2: the placement hash (shards, DPUs, rows, host cache) is stored and checked.
PLAN_FORMAT_VERSION = 2
LAYOUTS = ("table_wise", "row_wise", "column_wise", "tiled")
REBUILD = "rebuild it with `updlrm plan build` (or build_plan)"


_FIELD_WORDS = {
    "num_embeddings": "rows",
    "embedding_dim": "columns (dim)",
    "row_format": "row format",
    "scale": "scale",
    "feature_names": "features",
}


def table_differences(planned: list[TableSpec], given: list[TableSpec], given_as: str = "the module") -> list[str]:
    """What differs between a plan's tables and ``given``, one phrase per difference (empty: none).

    >>> table_differences([TableSpec("C1", 50_000, 8)], [TableSpec("C1", 100_000, 8)])
    ['table C1: plan has 50,000 rows, the module has 100,000']
    """
    if len(planned) != len(given):
        return [
            f"plan has {len(planned)} tables ({', '.join(t.name for t in planned[:4])}"
            f"{', ...' if len(planned) > 4 else ''}), {given_as} has {len(given)} "
            f"({', '.join(t.name for t in given[:4])}{', ...' if len(given) > 4 else ''})"
        ]
    out = []
    for i, (p, g) in enumerate(zip(planned, given)):
        pd, gd = p.to_dict(), g.to_dict()
        if pd["name"] != gd["name"]:
            out.append(f"table {i}: plan names it {p.name!r}, {given_as} {g.name!r}")
            continue
        for key, word in _FIELD_WORDS.items():
            if pd[key] != gd[key]:
                show = (lambda v: f"{v:,}") if isinstance(pd[key], int) else (lambda v: f"{v}")
                out.append(f"table {p.name}: plan has {show(pd[key])} {word}, {given_as} has {show(gd[key])}")
    return out


def format_bytes(n: float) -> str:
    """Decimal bytes with a unit, as plans, reports and errors print them.

    >>> format_bytes(999), format_bytes(123_456), format_bytes(7.5e9)
    ('999 B', '123.5 KB', '7.5 GB')
    """
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")


@dataclass
class Shard:
    """Columns ``[col_start, col_stop)`` of the rows ``rows`` of table ``table`` on DPU ``dpu``.

    ``rows`` is a ``range`` (contiguous rows, stored compactly) or a sorted array of
    unique row ids. A row's *local index* on the DPU is its position in ``rows``.

    >>> s = Shard(table=0, dpu=3, col_start=0, col_stop=8, rows=range(10, 20))
    >>> s.num_rows, s.local_index(np.array([10, 19])).tolist()
    (10, [0, 9])
    """

    table: int
    dpu: int
    col_start: int
    col_stop: int
    rows: range | np.ndarray

    def __post_init__(self) -> None:
        if isinstance(self.rows, range):
            if self.rows.step != 1:
                raise PlanError("a shard's row range must have step 1")
        else:
            self.rows = np.asarray(self.rows, dtype=np.int64)
            if self.rows.ndim != 1:
                raise PlanError("a shard's rows must be one-dimensional")
            if self.rows.size > 1 and not np.all(self.rows[1:] > self.rows[:-1]):
                raise PlanError(f"shard of table {self.table} on DPU {self.dpu}: rows must be sorted and unique")
        if not 0 <= self.col_start < self.col_stop:
            raise PlanError(
                f"shard of table {self.table} on DPU {self.dpu}: bad columns [{self.col_start}, {self.col_stop})"
            )

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return self.col_stop - self.col_start

    @property
    def first_row(self) -> int:
        return self.rows.start if isinstance(self.rows, range) else int(self.rows[0])

    @property
    def last_row(self) -> int:
        return self.rows.stop - 1 if isinstance(self.rows, range) else int(self.rows[-1])

    def row_ids(self) -> np.ndarray:
        if isinstance(self.rows, range):
            return np.arange(self.rows.start, self.rows.stop, dtype=np.int64)
        return self.rows

    def local_index(self, rows: np.ndarray) -> np.ndarray:
        """Local indices of ``rows`` (which must be held by this shard)."""
        if isinstance(self.rows, range):
            return np.asarray(rows, dtype=np.int64) - self.rows.start
        return np.searchsorted(self.rows, rows)

    def mram_bytes(self, spec: TableSpec) -> int:
        return self.num_rows * padded_row_bytes(self.dim, spec.row_format)


@dataclass
class Plan:
    """Where every row slice of every table lives; see the module docstring.

    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(nr_dpus=2), "column_wise")
    >>> p.col_splits(0), [s.dpu for s in p.shards]
    ([0, 2, 4], [0, 1])
    """

    tables: list[TableSpec]
    topology: Topology
    shards: list[Shard]
    host_rows: dict[int, np.ndarray] = field(default_factory=dict)
    expected_load: np.ndarray | None = None
    workload_hash: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A hand-built plan may say host_rows=None for "no host cache".
        if self.host_rows is None:
            self.host_rows = {}
        if not isinstance(self.host_rows, dict):
            raise PlanError(
                f"host_rows must map table indices to row indices (a dict), not {type(self.host_rows).__name__}"
            )
        self.host_rows = {int(t): np.asarray(rows, dtype=np.int64).reshape(-1) for t, rows in self.host_rows.items()}

    def col_splits(self, table: int) -> list[int]:
        bounds = {0, self.tables[table].embedding_dim}
        for s in self.shards:
            if s.table == table:
                bounds.update((s.col_start, s.col_stop))
        return sorted(bounds)

    def shards_of(self, table: int) -> list[int]:
        return [i for i, s in enumerate(self.shards) if s.table == table]

    def mram_bytes_per_dpu(self) -> np.ndarray:
        used = np.zeros(self.topology.nr_dpus, dtype=np.int64)
        for s in self.shards:
            used[s.dpu] += s.mram_bytes(self.tables[s.table])
        return used

    def check_tables(self, tables: list[TableSpec], given_as: str = "the module") -> None:
        """Raise :class:`PlanError` saying what differs unless the plan was built for exactly ``tables``.

        >>> from updlrm.specs import TableSpec, Topology
        >>> p = uniform_plan([TableSpec("C1", 50_000, 8)], Topology(2))
        >>> p.check_tables([TableSpec("C1", 100_000, 8)])
        Traceback (most recent call last):
        ...
        updlrm.plan.PlanError: the plan was built for other tables: table C1: plan has 50,000 rows, the module has 100,000; rebuild it with `updlrm plan build` (or build_plan)
        """
        diffs = table_differences(self.tables, list(tables), given_as)
        if diffs:
            more = f" (and {len(diffs) - 1} more differences)" if len(diffs) > 1 else ""
            raise PlanError(f"the plan was built for other tables: {diffs[0]}{more}; {REBUILD}")

    def placement_hash(self) -> str:
        """Hash of the tables, topology and every shard's (table, DPU, columns, rows) and host-cached rows.

        Saved plans store it; loading recomputes it, so moving a shard to another DPU in the
        file is caught.

        >>> from updlrm.specs import TableSpec, Topology
        >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2))
        >>> h = p.placement_hash()
        >>> p.shards[0].dpu = 1
        >>> p.placement_hash() == h
        False
        """
        h = hashlib.sha256(
            json.dumps(
                {"tables": tables_hash(self.tables), "topology": self.topology.to_dict()}, sort_keys=True
            ).encode()
        )
        for s in self.shards:
            h.update(np.array([s.table, s.dpu, s.col_start, s.col_stop], dtype="<i8").tobytes())
            if isinstance(s.rows, range):
                h.update(b"R" + np.array([s.rows.start, s.rows.stop], dtype="<i8").tobytes())
            else:
                h.update(b"A" + np.array([s.rows.size], dtype="<i8").tobytes())
                h.update(np.ascontiguousarray(s.rows, dtype="<i8").tobytes())
        for t in sorted(self.host_rows):
            rows = np.ascontiguousarray(self.host_rows[t], dtype="<i8")
            h.update(b"H" + np.array([t, rows.size], dtype="<i8").tobytes() + rows.tobytes())
        return h.hexdigest()[:16]

    def validate(self, mram_reserved_bytes: int = 0) -> None:
        """Check indices, slice alignment, coverage and MRAM capacity; raise PlanError.

        ``mram_reserved_bytes`` is what the kernel needs per DPU besides the rows
        (its index/output buffers).
        """
        nr_dpus = self.topology.nr_dpus
        for s in self.shards:
            if not 0 <= s.table < len(self.tables):
                raise PlanError(f"a shard names table index {s.table}, but the plan has {len(self.tables)} tables")
            spec = self.tables[s.table]
            if not 0 <= s.dpu < nr_dpus:
                raise PlanError(f"table {spec.name}: shard on DPU {s.dpu}, but the topology has {nr_dpus} DPUs")
            if s.col_stop > spec.embedding_dim:
                raise PlanError(
                    f"table {spec.name}: shard columns [{s.col_start}, {s.col_stop}) exceed dim {spec.embedding_dim}"
                )
            if s.num_rows and (s.first_row < 0 or s.last_row >= spec.num_embeddings):
                raise PlanError(
                    f"table {spec.name}: shard on DPU {s.dpu} holds rows outside [0, {spec.num_embeddings})"
                )
        for t in self.host_rows:
            if not 0 <= t < len(self.tables):
                raise PlanError(f"host_rows names table index {t}, but the plan has {len(self.tables)} tables")
        for t, spec in enumerate(self.tables):
            self._check_coverage(t, spec)
        self._check_capacity(mram_reserved_bytes)

    def _check_coverage(self, t: int, spec: TableSpec) -> None:
        splits = self.col_splits(t)
        host = np.asarray(self.host_rows.get(t, np.empty(0, np.int64)), dtype=np.int64)
        if host.size and (host.min() < 0 or host.max() >= spec.num_embeddings):
            raise PlanError(f"table {spec.name}: host-cached rows outside [0, {spec.num_embeddings})")
        for lo, hi in zip(splits[:-1], splits[1:]):
            # Difference array over rows: +1 where a shard's rows start, -1 past the end,
            # so ranges cost O(1) and explicit sets O(their size).
            cover = np.zeros(spec.num_embeddings + 1, dtype=np.int32)
            seen_dpus: set[int] = set()
            for i in self.shards_of(t):
                s = self.shards[i]
                if (s.col_start, s.col_stop) == (lo, hi):
                    if s.dpu in seen_dpus:
                        raise PlanError(
                            f"table {spec.name}: two shards of columns [{lo}, {hi}) on DPU {s.dpu}; merge them"
                        )
                    seen_dpus.add(s.dpu)
                    if isinstance(s.rows, range):
                        cover[s.rows.start] += 1
                        cover[s.rows.stop] -= 1
                    else:
                        # A shard's rows are unique, so plain fancy-index updates are exact
                        # (and far faster than np.add.at).
                        cover[s.rows] += 1
                        cover[s.rows + 1] -= 1
                elif s.col_start < hi and lo < s.col_stop:
                    raise PlanError(
                        f"table {spec.name}: shard columns [{s.col_start}, {s.col_stop}) straddle the slice [{lo}, {hi})"
                    )
            held = np.cumsum(cover[:-1])
            if host.size:
                held[host] += 1
            missing = np.flatnonzero(held == 0)
            if missing.size:
                raise PlanError(
                    f"table {spec.name}: {missing.size} rows of columns [{lo}, {hi}) are on no DPU "
                    f"and not host-cached (first: row {int(missing[0])})"
                )

    def _check_capacity(self, mram_reserved_bytes: int) -> None:
        capacity = self.topology.mram_bytes_per_dpu - mram_reserved_bytes
        used = self.mram_bytes_per_dpu()
        over = np.flatnonzero(used > capacity)
        if over.size:
            d = int(over[0])
            per_table: dict[str, int] = {}
            for s in self.shards:
                if s.dpu == d:
                    name = self.tables[s.table].name
                    per_table[name] = per_table.get(name, 0) + s.mram_bytes(self.tables[s.table])
            parts = ", ".join(f"{n}: {format_bytes(b)}" for n, b in sorted(per_table.items(), key=lambda kv: -kv[1]))
            raise PlanError(
                f"DPU {d} would hold {format_bytes(int(used[d]))} of rows ({parts}) but has "
                f"{format_bytes(capacity)} of MRAM free; {over.size} DPUs are over capacity"
            )

    # ---- persistence -------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (JSON) and ``path`` with suffix ``.npz`` (explicit row sets).

        >>> import tempfile, pathlib
        >>> from updlrm.specs import TableSpec, Topology
        >>> p = uniform_plan([TableSpec("a", 8, 4)], Topology(2), "row_wise")
        >>> f = p.save(pathlib.Path(tempfile.mkdtemp()) / "plan.json")
        >>> Plan.load(f).shards[1].rows
        range(4, 8)
        """
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        shards_json = []
        for i, s in enumerate(self.shards):
            if isinstance(s.rows, range):
                rows = {"range": [s.rows.start, s.rows.stop]}
            else:
                key = f"shard_{i}"
                arrays[key] = s.rows
                rows = {"array": key, "count": int(s.rows.size)}
            shards_json.append({"table": s.table, "dpu": s.dpu, "cols": [s.col_start, s.col_stop], "rows": rows})
        host_json = {}
        for t, rows in self.host_rows.items():
            key = f"host_{t}"
            arrays[key] = np.asarray(rows, dtype=np.int64)
            host_json[str(t)] = key
        arrays_path = path.with_suffix(".npz")
        np.savez_compressed(arrays_path, **arrays)
        doc = {
            "format": PLAN_FORMAT,
            "version": PLAN_FORMAT_VERSION,
            "tables": [t.to_dict() for t in self.tables],
            "tables_hash": tables_hash(self.tables),
            "workload_hash": self.workload_hash,
            "topology": self.topology.to_dict(),
            "shards": shards_json,
            "host_rows": host_json,
            "expected_load": None if self.expected_load is None else [float(x) for x in self.expected_load],
            "metadata": self.metadata,
            "arrays_file": arrays_path.name,
            "arrays_sha256": hashlib.sha256(arrays_path.read_bytes()).hexdigest(),
            "placement_hash": self.placement_hash(),
        }
        path.write_text(json.dumps(doc, indent=1))
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        tables: list[TableSpec] | None = None,
        workload_hash: str | None = None,
        mram_reserved_bytes: int = 0,
    ) -> Plan:
        """Read a plan, checking schema, format, hashes, coverage and capacity (see ``save``).

        Every problem is a :class:`PlanError` naming the file and what differs: a missing
        file or key, a table that differs from ``tables``, another workload, an edited
        table list or shard assignment, missing or foreign row arrays.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise PlanError(f"{path}: no such plan file") from None
        except IsADirectoryError:
            raise PlanError(f"{path}: is a directory, not a plan file") from None
        except PermissionError:
            raise PlanError(f"{path}: not readable (permission denied)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlanError(f"{path}: not a JSON plan ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise PlanError(f"{path}: not an updlrm plan (format {got!r}, expected {PLAN_FORMAT!r})")
        if doc.get("version") != PLAN_FORMAT_VERSION:
            raise PlanError(
                f"{path}: plan format version {doc.get('version')}, this updlrm reads {PLAN_FORMAT_VERSION}; {REBUILD}"
            )
        try:
            check_schema(doc)
            plan_tables = [TableSpec.from_dict(t) for t in doc["tables"]]
            topology = Topology(**doc["topology"])
        except (PlanError, ValueError) as e:
            raise PlanError(f"{path}: {e}") from None
        if tables_hash(plan_tables) != doc["tables_hash"]:
            raise PlanError(f"{path}: the table list was edited after the plan was built (hash mismatch); {REBUILD}")
        if tables is not None:
            try:
                Plan(plan_tables, topology, []).check_tables(list(tables))
            except PlanError as e:
                raise PlanError(f"{path}: {e}") from None
        if workload_hash is not None and doc["workload_hash"] != workload_hash:
            raise PlanError(f"{path}: plan was built for workload {doc['workload_hash']}, not {workload_hash}")
        name = doc["arrays_file"]
        if not name or Path(name).name != name:
            raise PlanError(
                f'{path}: "arrays_file" must name a file beside the plan (like plan.npz), got {name!r}; {REBUILD}'
            )
        arrays_path = path.with_name(name)
        try:
            arrays_bytes = arrays_path.read_bytes()
        except OSError as e:
            raise PlanError(
                f"{arrays_path}: the plan's row arrays cannot be read ({e.strerror}); {path.name} needs "
                f"the {doc['arrays_file']} written beside it: copy both files together"
            ) from None
        if hashlib.sha256(arrays_bytes).hexdigest() != doc["arrays_sha256"]:
            raise PlanError(f"{arrays_path}: checksum mismatch, the row arrays do not belong to {path.name}")
        shards = []
        with np.load(arrays_path) as arrays:

            def array(key: str, where: str) -> np.ndarray:
                if key not in arrays.files:
                    raise PlanError(f"{path}: {where} names array {key!r}, which {arrays_path.name} does not hold")
                return arrays[key]

            for i, s in enumerate(doc["shards"]):
                r = s["rows"]
                if ("range" in r) == ("array" in r):
                    raise PlanError(f'{path}: "shards[{i}].rows" needs exactly one of "range" or "array"')
                if "range" in r:
                    rows = range(*r["range"])
                else:
                    rows = array(r["array"], f"shards[{i}]")
                    if "count" in r and rows.size != r["count"]:
                        raise PlanError(
                            f"{path}: shards[{i}] has {rows.size} rows in {arrays_path.name}, the plan "
                            f"says {r['count']}"
                        )
                try:
                    shards.append(Shard(s["table"], s["dpu"], s["cols"][0], s["cols"][1], rows))
                except PlanError as e:
                    raise PlanError(f"{path}: shards[{i}]: {e}") from None
            bad = [t for t in doc["host_rows"] if not t.isdigit() or int(t) >= len(plan_tables)]
            if bad:
                raise PlanError(f'{path}: "host_rows" key {bad[0]!r} is not a table index (0..{len(plan_tables) - 1})')
            host_rows = {int(t): array(key, f"host_rows[{t}]") for t, key in doc["host_rows"].items()}
        load = doc.get("expected_load")
        plan = cls(
            tables=plan_tables,
            topology=topology,
            shards=shards,
            host_rows=host_rows,
            expected_load=None if load is None else np.asarray(load),
            workload_hash=doc["workload_hash"],
            metadata=doc.get("metadata", {}),
        )
        if plan.placement_hash() != doc["placement_hash"]:
            raise PlanError(
                f"{path}: the shard assignment (shards, DPUs, rows or host cache) was edited after the "
                f"plan was built (placement hash mismatch); {REBUILD}"
            )
        try:
            plan.validate(mram_reserved_bytes)
        except PlanError as e:
            raise PlanError(f"{path}: {e}") from None
        return plan


def column_bounds(spec: TableSpec, slices: int) -> list[int]:
    """Split ``spec``'s columns into at most ``slices`` slices, boundaries on 8-byte units.

    >>> column_bounds(TableSpec("a", 1, 64), 3), column_bounds(TableSpec("b", 1, 3), 4)
    ([0, 22, 42, 64], [0, 2, 3])
    """
    unit = max(1, 8 // spec.row_format.element_bytes)
    units = -(-spec.embedding_dim // unit)
    slices = max(1, min(slices, units))
    bounds = [min(spec.embedding_dim, round(units * i / slices) * unit) for i in range(slices + 1)]
    return sorted(set(bounds))


def uniform_plan(
    tables: list[TableSpec],
    topology: Topology,
    layout: str = "row_wise",
    *,
    dpus_per_table: int | None = None,
    column_slices: int = 2,
) -> Plan:
    """The simple, workload-blind plans: the default and the partitioner's baselines.

    * ``table_wise``: each whole table on one DPU, largest first onto the emptiest DPU.
    * ``row_wise``: each table cut into equal contiguous row blocks over
      ``dpus_per_table`` DPUs (default: all), tables rotated so that small tables do not
      all start on DPU 0.
    * ``column_wise``: each table cut into ``column_slices`` column slices on distinct DPUs.
    * ``tiled``: ``column_slices`` slices x row blocks over ``dpus_per_table`` DPUs.

    >>> from updlrm.specs import TableSpec, Topology
    >>> p = uniform_plan([TableSpec("a", 10, 4)] * 3, Topology(2), "table_wise")
    >>> [s.dpu for s in p.shards]
    [0, 1, 0]
    """
    if layout not in LAYOUTS:
        raise PlanError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    n = topology.nr_dpus
    shards: list[Shard] = []
    if layout == "table_wise":
        used = np.zeros(n, dtype=np.int64)
        order = sorted(range(len(tables)), key=lambda t: -tables[t].num_embeddings * tables[t].row_bytes())
        placed = {}
        for t in order:
            d = int(np.argmin(used))
            used[d] += tables[t].num_embeddings * tables[t].row_bytes()
            placed[t] = d
        for t, spec in enumerate(tables):
            shards.append(Shard(t, placed[t], 0, spec.embedding_dim, range(spec.num_embeddings)))
    else:
        start = 0
        for t, spec in enumerate(tables):
            bounds = (
                column_bounds(spec, column_slices) if layout in ("column_wise", "tiled") else [0, spec.embedding_dim]
            )
            nr_slices = len(bounds) - 1
            if layout == "column_wise":
                row_blocks = 1
            else:
                per_table = dpus_per_table or max(1, n // nr_slices)
                row_blocks = max(1, min(per_table, spec.num_embeddings, n // nr_slices if n >= nr_slices else 1))
            edges = np.linspace(0, spec.num_embeddings, row_blocks + 1).round().astype(np.int64)
            k = 0
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                for b in range(row_blocks):
                    if edges[b + 1] > edges[b]:
                        shards.append(Shard(t, (start + k) % n, lo, hi, range(int(edges[b]), int(edges[b + 1]))))
                    k += 1
            start = (start + k) % n
    return Plan(tables=list(tables), topology=topology, shards=shards, metadata={"builder": f"uniform_plan:{layout}"})
