"""Per-batch profiles: what a batch took here, and what it would take on UPMEM hardware.

A *batch profile* (:class:`BatchProfile`) puts, for one batch, the host phases the engine
measured (``BatchStats``) next to the phases :mod:`updlrm.perfmodel` gives for the batch's
exact per-DPU work on a *hardware profile* (:class:`~updlrm.perfmodel.HardwareProfile`),
with the bytes moved each way and the host-cache hits:

* :func:`profile_batch` (a batch the engine ran) and :func:`profile_work` (any
  :class:`~updlrm.perfmodel.BatchWork`, e.g. one derived for more DPUs than ran by
  :func:`updlrm.partitioner.batch_work.derive_work`); :func:`work_mismatch` compares two.
* One table printer (:func:`format_phase_table`, :func:`format_traffic`,
  :func:`format_seconds`, :func:`format_bytes`) shared by ``updlrm demo`` and
  ``updlrm bench`` (:mod:`updlrm.bench`, the application built on this library).

Example:
    >>> import numpy as np
    >>> from updlrm import TableBatchedEmbeddingBags, TableSpec
    >>> from updlrm.partitioner.batch_work import derive_work
    >>> tbe = TableBatchedEmbeddingBags([TableSpec("a", 100, 8)], backend="emulator", nr_dpus=2)
    >>> _ = tbe(np.array([1, 2, 3]), np.array([0, 2, 3]))
    >>> p = profile_batch(tbe, "upmem-350mhz-2556")
    >>> p.nr_dpus, p.modeled.total_s > 0, int(p.lookups_per_dpu.sum())
    (2, True, 3)
    >>> work_mismatch(derive_work(tbe.plan, np.array([1, 2, 3]), np.array([0, 2, 3])), tbe.last_stats.work())
    []
    >>> tbe.close()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from updlrm import perfmodel
from updlrm.perfmodel import DEFAULT_HARDWARE_PROFILE
from updlrm.plan import format_bytes

__all__ = [
    "BatchProfile",
    "profile_batch",
    "profile_work",
    "work_mismatch",
    "format_phase_table",
    "format_traffic",
    "format_seconds",
    "format_bytes",
    "PHASES",
]


def work_mismatch(a: perfmodel.BatchWork, b: perfmodel.BatchWork) -> list[str]:
    """Names of the fields in which two ``BatchWork`` differ (empty: identical).

    >>> w = perfmodel.BatchWork.uniform(nr_dpus=2, lookups=3, row_bytes=8, index_bytes=8, output_bytes=8)
    >>> work_mismatch(w, w)
    []
    """
    diff = []
    for name in ("lookups", "row_bytes", "index_bytes", "output_bytes", "reduce_elems"):
        x, y = getattr(a, name), getattr(b, name)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-12, atol=0):
            diff.append(name)
    for name in (
        "row_format",
        "weighted",
        "nr_tasklets",
        "host_merge_elems",
        "host_cache_lookups",
        "host_cache_row_bytes",
    ):
        if getattr(a, name) != getattr(b, name):
            diff.append(name)
    return diff


# ---------------------------------------------------------------------------- profiles

# (label, measured key (BatchStats field or .extra key), modeled PhaseTimes fields)
PHASES = [
    ("validate", "validate_s", ()),
    ("route + pack", "route_s", ()),
    ("CPU->DPU push", "push_s", ("cpu_to_dpu_s",)),
    ("launch + kernel", "launch_s", ("launch_s", "kernel_s")),
    ("DPU->CPU pull", "pull_s", ("dpu_to_cpu_s",)),
    ("merge partials", "merge_s", ("host_merge_s",)),
    ("host-cache rows*", "host_cache_s", ("host_cache_s",)),
]


def _measured_phase(stats, key: str) -> float:
    if key in stats.extra:
        return float(stats.extra[key])
    return float(getattr(stats, key)) if hasattr(stats, key) else 0.0


@dataclass
class BatchProfile:
    """One batch: measured host phases, modeled hardware phases, bytes, cache hits.

    ``measured_s`` maps the ``PHASES`` keys (plus ``total_s``) to this machine's wall
    seconds, or is empty for a derived batch that never ran. ``modeled`` is the
    :class:`~updlrm.perfmodel.PhaseTimes` of the batch's exact work on the hardware
    profile named ``hardware_profile`` with ``nr_dpus`` DPUs. Bytes are per batch, summed over DPUs; ``*_padded`` count
    what parallel transfers move (every buffer of a rank padded to its largest).

    >>> w = perfmodel.BatchWork.uniform(nr_dpus=2, lookups=10, row_bytes=64, index_bytes=656, output_bytes=280)
    >>> p = profile_work(w, "upmem-350mhz-2556")
    >>> p.bytes_to_dpu, p.measured_s, p.modeled.kernel_s > 0
    (1312, {}, True)
    """

    hardware_profile: str
    nr_dpus: int
    work: perfmodel.BatchWork
    modeled: perfmodel.PhaseTimes
    measured_s: dict = field(default_factory=dict)
    bytes_to_dpu: int = 0
    bytes_from_dpu: int = 0
    padded_bytes_to_dpu: int = 0
    padded_bytes_from_dpu: int = 0
    host_cache_hits: int = 0
    nr_lookups: int = 0

    @property
    def lookups_per_dpu(self) -> np.ndarray:
        return self.work.lookups

    @property
    def imbalance(self) -> float:
        """Max over mean lookups per DPU (1.0 is perfect balance; the slowest DPU sets the pace)."""
        mean = float(self.work.lookups.mean())
        return float(self.work.lookups.max() / mean) if mean > 0 else 1.0

    def modeled_phase(self, fields: tuple[str, ...]) -> float | None:
        """Sum of modeled ``PhaseTimes`` fields, None for a phase the model does not cover."""
        if not fields:
            return None
        d = self.modeled.as_dict()
        return float(sum(d[f] or 0.0 for f in fields))

    def to_dict(self) -> dict:
        """JSON-ready scalars.

        >>> w = perfmodel.BatchWork.uniform(nr_dpus=1, lookups=1, row_bytes=8, index_bytes=8, output_bytes=8)
        >>> sorted(profile_work(w, "upmem-350mhz-2556").to_dict())[:3]
        ['bytes_from_dpu', 'bytes_to_dpu', 'host_cache_hits']
        """
        modeled = {k: v for k, v in self.modeled.as_dict().items() if v is not None}
        return {
            "profile": self.hardware_profile,
            "nr_dpus": self.nr_dpus,
            "measured_s": dict(self.measured_s),
            "modeled_s": modeled,
            "bytes_to_dpu": self.bytes_to_dpu,
            "bytes_from_dpu": self.bytes_from_dpu,
            "padded_bytes_to_dpu": self.padded_bytes_to_dpu,
            "padded_bytes_from_dpu": self.padded_bytes_from_dpu,
            "host_cache_hits": self.host_cache_hits,
            "nr_lookups": self.nr_lookups,
            "lookups_per_dpu_mean": float(self.work.lookups.mean()),
            "lookups_per_dpu_max": float(self.work.lookups.max()),
            "imbalance": self.imbalance,
        }

    def format(self) -> str:
        """The profile as a text table (measured here vs modeled on hardware).

        >>> w = perfmodel.BatchWork.uniform(nr_dpus=1, lookups=1, row_bytes=8, index_bytes=8, output_bytes=8)
        >>> "DPU->CPU pull" in profile_work(w, "upmem-350mhz-2556").format()
        True
        """
        measured = self.measured_s or None
        modeled = {key: self.modeled_phase(fields) for _, key, fields in PHASES}
        modeled["total_s"] = self.modeled.total_s
        lines = format_phase_table(
            measured, modeled, measured_label="measured here", modeled_label=f"modeled, {self.nr_dpus} DPUs"
        )
        lines += [
            f"  bytes  CPU->DPU {format_bytes(self.bytes_to_dpu)} ({format_bytes(self.padded_bytes_to_dpu)} padded), "
            f"DPU->CPU {format_bytes(self.bytes_from_dpu)} ({format_bytes(self.padded_bytes_from_dpu)} padded)",
            f"  lookups per DPU mean {self.work.lookups.mean():,.1f}, max {self.work.lookups.max():,.0f} "
            f"(imbalance {self.imbalance:.2f}x); host-cache hits {self.host_cache_hits:,}; profile {self.hardware_profile}",
        ]
        return "\n".join(lines)


def profile_work(
    work: perfmodel.BatchWork,
    hardware: str | perfmodel.HardwareProfile = DEFAULT_HARDWARE_PROFILE,
    measured_s: dict[str, float] | None = None,
) -> BatchProfile:
    """Model ``work`` on the hardware profile ``hardware``, sized to the work's DPU count (no measured phases unless given).

    >>> w = perfmodel.BatchWork.uniform(nr_dpus=128, lookups=100, row_bytes=256, index_bytes=1000, output_bytes=4096)
    >>> p = profile_work(w)
    >>> p.nr_dpus, p.padded_bytes_to_dpu
    (128, 128000)
    """
    hw = perfmodel.get_profile(hardware, nr_dpus=work.nr_dpus)
    return BatchProfile(
        hardware_profile=hw.name,
        nr_dpus=work.nr_dpus,
        work=work,
        modeled=perfmodel.model_batch(work, hw),
        measured_s=dict(measured_s or {}),
        bytes_to_dpu=int(work.index_bytes.sum()),
        bytes_from_dpu=int(work.output_bytes.sum()),
        padded_bytes_to_dpu=int(perfmodel.padded_total(work.index_bytes, hw.dpus_per_rank)),
        padded_bytes_from_dpu=int(perfmodel.padded_total(work.output_bytes, hw.dpus_per_rank)),
        host_cache_hits=int(work.host_cache_lookups),
        nr_lookups=int(work.lookups.sum() + work.host_cache_lookups),
    )


def profile_batch(
    stats_or_module: Any, hardware: str | perfmodel.HardwareProfile = DEFAULT_HARDWARE_PROFILE
) -> BatchProfile:
    """The :class:`BatchProfile` of an engine batch: a ``BatchStats`` or a module's ``last_stats``.

    Accepts ``BatchStats``, a :class:`~updlrm.tbe.TableBatchedEmbeddingBags` or an
    :class:`~updlrm.tbe.EmbeddingBag` (their last batch). The hardware profile is sized
    to the plan's DPU count; for another count, derive the batch's work under a plan for
    that count (:func:`~updlrm.partitioner.batch_work.derive_work`) and call :func:`profile_work`.

    >>> from updlrm.host.engine import BatchStats
    >>> profile_batch(BatchStats.empty(4)).modeled.total_s
    0.0
    """
    stats = getattr(stats_or_module, "last_stats", stats_or_module)
    if stats is None:
        raise ValueError("no batch has run yet (last_stats is None)")
    measured = {key: _measured_phase(stats, key) for _, key, _ in PHASES}
    measured["total_s"] = float(stats.total_s + stats.extra.get("validate_s", 0.0))
    p = profile_work(stats.work(), hardware, measured)
    p.bytes_to_dpu = int(stats.bytes_to_dpu.sum())
    p.bytes_from_dpu = int(stats.bytes_from_dpu.sum())
    p.padded_bytes_to_dpu = int(stats.padded_bytes_to_dpu.sum())
    p.padded_bytes_from_dpu = int(stats.padded_bytes_from_dpu.sum())
    p.host_cache_hits = int(stats.host_cache_hits)
    p.nr_lookups = int(stats.nr_lookups)
    return p


# ---------------------------------------------------------------------------- the one table printer


def format_seconds(seconds: float | None) -> str:
    """Seconds with a unit that keeps 3-4 significant digits, right-aligned in 11 characters.

    >>> format_seconds(0.0123), format_seconds(None), format_seconds(2.5e-6)
    ('  12.300 ms', '-', '     2.5 us')
    """
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:8.3f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds * 1e6:8.1f} us"


def format_phase_table(
    measured_s: dict | None,
    modeled_s: dict,
    *,
    measured_label: str = "measured here",
    modeled_label: str = "modeled on UPMEM",
    title: str = "phase (mean per batch)",
    total_label: str = "total (end to end)",
) -> list[str]:
    """Rows of the phase table: one line per ``PHASES`` entry plus the total.

    ``measured_s``/``modeled_s`` map the ``PHASES`` keys and ``total_s`` (or
    ``end_to_end_s``) to seconds or None; ``measured_s=None`` omits that column.

    >>> lines = format_phase_table({"push_s": 1e-3, "total_s": 2e-3}, {"push_s": 5e-6, "total_s": 9e-6})
    >>> lines[3].split()[:3], lines[-1].split()[-2:]
    (['CPU->DPU', 'push', '1.000'], ['9.0', 'us'])
    """

    def total(d):
        return d.get("total_s", d.get("end_to_end_s"))

    width = max(len(measured_label), 13) + 2
    mwidth = max(len(modeled_label), 16) + 2
    head = f"  {title:<24}"
    if measured_s is not None:
        head += f"{measured_label:>{width}}"
    lines = [head + f"{modeled_label:>{mwidth}}"]
    rows = [(label, key) for label, key, _ in PHASES] + [(total_label, None)]
    for label, key in rows:
        line = f"  {label:<24}"
        if measured_s is not None:
            value = total(measured_s) if key is None else measured_s.get(key)
            line += f"{format_seconds(value):>{width}}"
        value = total(modeled_s) if key is None else modeled_s.get(key)
        lines.append(line + f"{format_seconds(value):>{mwidth}}")
    return lines


def format_traffic(
    bytes_per_batch: dict, dpu_load: dict, host_cache_hits: float, heading: str = "bytes per batch"
) -> list[str]:
    """Report lines for the bytes moved each way and the DPU load of a batch.

    ``*_max_per_dpu`` bytes and ``launches_per_batch`` are printed when present.

    >>> b = {"cpu_to_dpu": 2e6, "cpu_to_dpu_padded": 3e6, "dpu_to_cpu": 1e6, "dpu_to_cpu_padded": 1e6}
    >>> print("\\n".join(format_traffic(b, {"mean_lookups": 10, "max_lookups": 12, "imbalance": 1.2}, 0)))
      bytes per batch  CPU->DPU 2.0 MB (3.0 MB with rank padding)
                       DPU->CPU 1.0 MB (1.0 MB with rank padding)
      lookups per DPU  mean 10, max 12 (imbalance 1.20x), host-cache hits 0
    """

    def direction(key: str) -> str:
        peak = (
            f", max {format_bytes(bytes_per_batch[key + '_max_per_dpu'])} per DPU"
            if key + "_max_per_dpu" in bytes_per_batch
            else ""
        )
        return f"{format_bytes(bytes_per_batch[key])} ({format_bytes(bytes_per_batch[key + '_padded'])} with rank padding{peak})"

    launches = f", {dpu_load['launches_per_batch']:g} launch(es) per batch" if "launches_per_batch" in dpu_load else ""
    return [
        f"  {heading}  CPU->DPU {direction('cpu_to_dpu')}",
        f"  {' ' * len(heading)}  DPU->CPU {direction('dpu_to_cpu')}",
        f"  lookups per DPU  mean {dpu_load['mean_lookups']:,.0f}, max {dpu_load['max_lookups']:,.0f} "
        f"(imbalance {dpu_load['imbalance']:.2f}x){launches}, host-cache hits {host_cache_hits:,.0f}",
    ]
