"""Hardware profiles: every UPMEM hardware constant the performance model uses, each with its source.

A *hardware profile* (:class:`HardwareProfile`) describes a UPMEM system -- DPU clock,
ranks, DMA and pipeline costs, host transfer bandwidths, host merge and gather rates --
and names the publication of every value (``HardwareProfile.source_of``).  Named
profiles are in :data:`PROFILES` (:data:`DEFAULT_HARDWARE_PROFILE` unless told
otherwise); :func:`calibrate` measures this machine's host rates into one.
:mod:`updlrm.perfmodel` turns a profile and a batch's work into phase times.

Example::

    >>> p = get_profile("upmem-350mhz-2556", nr_dpus=64)
    >>> p.nr_ranks, "PrIM" in p.source_of("dma_read_alpha_cycles")
    (1, True)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "HardwareProfile",
    "PROFILES",
    "DEFAULT_HARDWARE_PROFILE",
    "get_profile",
    "calibrate",
    "PRIM",
    "UPIMULATOR",
    "UPIMULATOR_ARTIFACT",
    "UPMEM_SDK",
    "JEDEC_DDR4",
    "XFER_CURVES",
]

# --------------------------------------------------------------------------- sources
PRIM = (
    "PrIM: Gomez-Luna et al., 'Benchmarking a New Paradigm: Experimental Analysis and "
    "Characterization of a Real Processing-in-Memory System', IEEE Access 2022 (arXiv 2105.03814)"
)
UPIMULATOR = "uPIMulator: Hyun et al., 'Pathfinding Future PIM Architectures by Demystifying a Commercial PIM Technology', HPCA 2024 (arXiv 2308.00846)"
UPIMULATOR_ARTIFACT = (
    "uPIMulator artifact github.com/VIA-Research/uPIMulator, tools/upmem_reg_model/data/input.xlsx "
    "(real-hardware PrIM runs)"
)
UPMEM_SDK = "UPMEM SDK documentation (sdk.upmem.com) / UPMEM Hot Chips 31 (2019) as reported by AnandTech"
JEDEC_DDR4 = "JEDEC JESD79-4 DDR4-2400: 2400 MT/s x 8 B = 19.2 GB/s per channel"

XFER_CURVES = ("saturating", "power")

_MIB = 1 << 20
_KIB = 1 << 10


def _f(default, source: str):
    """A dataclass field whose metadata names where its value comes from."""
    return field(default=default, metadata={"source": source})


@dataclass(frozen=True)
class HardwareProfile:
    """Every hardware constant the model uses, each with its source.

    Cycle counts are DPU cycles; bandwidths are decimal bytes per second (the
    unit PrIM reports).  ``source_of(name)`` returns the citation of a field;
    ``sources`` may override it per profile (e.g. a measured value).

    Example::

        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> p.dpu_frequency_hz, p.nr_dpus, p.nr_ranks
        (350000000.0, 2556, 40)
        >>> "PrIM" in p.source_of("dma_read_alpha_cycles")
        True
    """

    name: str = _f("custom", "profile name")
    dpu_frequency_hz: float = _f(350e6, f"{PRIM}, Sec. 2 (2,556-DPU system at 350 MHz)")
    nr_dpus: int = _f(2556, f"{PRIM}, Sec. 2 (2,556 usable DPUs of 2,560)")
    dpus_per_rank: int = _f(64, f"{UPMEM_SDK}: 8 chips x 8 DPUs per rank, 2 ranks (128 DPUs) per 8 GB DIMM")
    mram_bytes: int = _f(64 * _MIB, f"{UPMEM_SDK}; {PRIM}, Sec. 2.1 (64 MB MRAM per DPU)")
    wram_bytes: int = _f(64 * _KIB, f"{UPMEM_SDK}; {PRIM}, Sec. 2.1 (64 KB WRAM)")
    iram_bytes: int = _f(24 * _KIB, f"{UPMEM_SDK}; {PRIM}, Sec. 2.1 (24 KB IRAM)")
    max_tasklets: int = _f(24, f"{PRIM}, Sec. 2.1 (up to 24 hardware threads)")
    pipeline_stages: int = _f(14, f"{PRIM}, Sec. 2.1; {UPIMULATOR} (num_pipeline_stages=14)")
    pipeline_issue_interval: int = _f(
        11,
        f"{PRIM}, Sec. 2.1 and Fig. 4 (throughput saturates at 11 tasklets); "
        f"{UPIMULATOR} (num_revolver_scheduling_cycles=11)",
    )
    dma_min_bytes: int = _f(8, f"{UPMEM_SDK}: mram_read/mram_write take 8..2048 B, 8-byte aligned")
    dma_max_bytes: int = _f(2048, f"{UPMEM_SDK}: mram_read/mram_write take 8..2048 B, 8-byte aligned")
    dma_read_alpha_cycles: float = _f(77.0, f"{PRIM}, Sec. 3.2.1, Fig. 5: mram_read latency = 77 + 0.5*size cycles")
    dma_read_beta_cycles_per_byte: float = _f(
        0.5, f"{PRIM}, Sec. 3.2.1, Fig. 5 (beta = 0.5 cycles/B, i.e. 2 B/cycle peak)"
    )
    dma_write_alpha_cycles: float = _f(61.0, f"{PRIM}, Sec. 3.2.1, Fig. 5: mram_write latency = 61 + 0.5*size cycles")
    dma_write_beta_cycles_per_byte: float = _f(0.5, f"{PRIM}, Sec. 3.2.1, Fig. 5")
    # Issue slots per element of a WRAM load-op-store loop with a full pipeline:
    # frequency / measured throughput of PrIM's arithmetic microbenchmark.
    cycles_int32_add: float = _f(350 / 58.56, f"{PRIM}, Sec. 3.1.1, Fig. 4: INT32 ADD 58.56 MOPS at 350 MHz")
    cycles_int32_mul: float = _f(
        350 / 10.27, f"{PRIM}, Sec. 3.1.1, Fig. 4: INT32 MUL 10.27 MOPS (8x8-bit multiplier, shift-and-add)"
    )
    cycles_fp32_add: float = _f(350 / 4.91, f"{PRIM}, Sec. 3.1.1, Fig. 4: FLOAT ADD 4.91 MOPS (software emulated)")
    cycles_fp32_mul: float = _f(350 / 1.91, f"{PRIM}, Sec. 3.1.1, Fig. 4: FLOAT MUL 1.91 MOPS (software emulated)")
    cycles_int8_widening_mac: float = _f(
        350 / 58.56 + 1.0,
        f"derived: INT32 ADD loop ({PRIM}, Fig. 4) plus one native 8x8-bit multiply instruction "
        "(the DPU multiplies 8-bit operands in one instruction, PrIM Sec. 3.1.1)",
    )
    instructions_per_lookup: float = _f(
        12.0,
        "modeling estimate, not a published figure: load index, bounds check, row address "
        "(shift/multiply-add), DMA issue, bag-boundary test, loop branch; override from emulator counters",
    )
    instructions_per_dma: float = _f(
        2.0,
        "modeling estimate, not a published figure: argument setup and the ldma/sdma instruction",
    )
    xfer_to_dpu_single_bytes_per_s: float = _f(0.33e9, f"{PRIM}, Sec. 3.4, Fig. 8: CPU-DPU, 1 DPU, 32 MB: 0.33 GB/s")
    xfer_from_dpu_single_bytes_per_s: float = _f(0.12e9, f"{PRIM}, Sec. 3.4, Fig. 8: DPU-CPU, 1 DPU, 32 MB: 0.12 GB/s")
    xfer_to_dpu_rank_bytes_per_s: float = _f(
        6.68e9, f"{PRIM}, Sec. 3.4, Fig. 9: parallel CPU-DPU, 64 DPUs (1 rank): 6.68 GB/s"
    )
    xfer_from_dpu_rank_bytes_per_s: float = _f(
        4.74e9, f"{PRIM}, Sec. 3.4, Fig. 9: parallel DPU-CPU, 64 DPUs (1 rank): 4.74 GB/s"
    )
    xfer_broadcast_rank_bytes_per_s: float = _f(
        16.88e9, f"{PRIM}, Sec. 3.4, Fig. 9: broadcast CPU-DPU, 64 DPUs: 16.88 GB/s"
    )
    xfer_curve: str = _f(
        "saturating",
        "modeling choice between the two published ends (PrIM Fig. 9 shows only that rank bandwidth grows "
        "with the DPUs served): 'saturating' d*B1/(1+(d-1)k) or 'power' B1*d**gamma",
    )
    xfer_host_cap_bytes_per_s: float | None = _f(
        None,
        "no published multi-rank saturation figure was available to us: ranks are modeled as fully "
        "concurrent (optimistic beyond a few ranks); set from a measurement on your server",
    )
    xfer_fixed_overhead_s: float = _f(
        85e-6,
        f"{UPIMULATOR_ARTIFACT}: hw_dpu_to_cpu of BS (one dpu_push_xfer of 128-B buffers, 1-4 DPUs) = 0.085-0.10 ms",
    )
    launch_overhead_s: float = _f(
        196e-6,
        f"{UPIMULATOR_ARTIFACT}: hw_kernel of a launch with no work, i.e. the intercept of a least-squares line "
        "through each app's hw_kernel against elements per DPU (1-64 DPUs), median over BS, GEMV, HST-L, HST-S, "
        "SEL, UNI (0.154-0.255 ms); held out: VA/RED kernel times, tests/perfmodel/test_kernel_validation.py",
    )
    host_merge_bytes_per_s: float = _f(
        19.2e9, f"{JEDEC_DDR4}; optimistic stand-in for the host's reduction bandwidth until calibrate() measures it"
    )
    host_gather_bytes_per_s: float = _f(
        19.2e9, f"{JEDEC_DDR4}; optimistic stand-in for the host's row-gather bandwidth until calibrate() measures it"
    )
    dpu_power_w: float | None = _f(
        None,
        "not modeled: no published per-DPU, per-rank or per-DIMM power figure could be read in the stored copies "
        "searched (AnandTech's Hot Chips 31 report on UPMEM, PrIM and Falevoz & Legriel 2023 -- abstracts only --, "
        "UPMEM SDK docs, UPMEM's DIMM power-profiling notes, which describe a 10 kHz per-rank current sampler but give "
        "no consumption); energy_j stays None until a sourced figure is set with with_values()",
    )
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        positive = (
            "dpu_frequency_hz",
            "nr_dpus",
            "dpus_per_rank",
            "max_tasklets",
            "pipeline_issue_interval",
            "dma_min_bytes",
            "dma_max_bytes",
            "xfer_to_dpu_single_bytes_per_s",
            "xfer_from_dpu_single_bytes_per_s",
            "xfer_to_dpu_rank_bytes_per_s",
            "xfer_from_dpu_rank_bytes_per_s",
            "xfer_broadcast_rank_bytes_per_s",
            "host_merge_bytes_per_s",
            "host_gather_bytes_per_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"HardwareProfile.{name} must be > 0, got {getattr(self, name)!r}")
        if self.xfer_curve not in XFER_CURVES:
            raise ValueError(f"HardwareProfile.xfer_curve must be one of {XFER_CURVES}, got {self.xfer_curve!r}")
        if self.xfer_host_cap_bytes_per_s is not None and not self.xfer_host_cap_bytes_per_s > 0:
            raise ValueError("HardwareProfile.xfer_host_cap_bytes_per_s must be > 0 or None")

    @property
    def nr_ranks(self) -> int:
        """Ranks the DPUs occupy (the last one may be partial).

        Example::

            >>> PROFILES["upmem-400mhz-2560"].nr_ranks
            40
        """
        return -(-self.nr_dpus // self.dpus_per_rank)

    def source_of(self, name: str) -> str:
        """The citation of field ``name`` (a per-profile override wins).

        Example::

            >>> "JEDEC" in PROFILES["upmem-350mhz-2556"].source_of("host_merge_bytes_per_s")
            True
        """
        if name in self.sources:
            return self.sources[name]
        for f in dataclasses.fields(self):
            if f.name == name:
                return f.metadata.get("source", "")
        raise KeyError(f"HardwareProfile has no field {name!r}")

    def with_values(self, source: str, **values) -> HardwareProfile:
        """A copy with ``values`` replaced, each recorded as coming from ``source``.

        Example::

            >>> p = PROFILES["upmem-350mhz-2556"].with_values("my server", launch_overhead_s=1e-4)
            >>> p.launch_overhead_s, p.source_of("launch_overhead_s")
            (0.0001, 'my server')
        """
        merged = dict(self.sources)
        merged.update(dict.fromkeys(values, source))
        return dataclasses.replace(self, sources=merged, **values)

    def describe(self) -> list[tuple[str, object, str]]:
        """(field, value, source) rows, for reports.

        Example::

            >>> rows = PROFILES["upmem-350mhz-2556"].describe()
            >>> rows[1][0]
            'dpu_frequency_hz'
        """
        return [
            (f.name, getattr(self, f.name), self.source_of(f.name))
            for f in dataclasses.fields(self)
            if f.name != "sources"
        ]


PROFILES: dict[str, HardwareProfile] = {
    "upmem-350mhz-2556": HardwareProfile(name="upmem-350mhz-2556"),
    "upmem-400mhz-2560": HardwareProfile(
        name="upmem-400mhz-2560",
        dpu_frequency_hz=400e6,
        nr_dpus=2560,
        sources={
            "dpu_frequency_hz": f"{UPMEM_SDK}: 400 MHz DPU parts (PrIM Sec. 2 mentions UPMEM's 400 MHz target)",
            "nr_dpus": f"{UPMEM_SDK}: 20 DIMMs x 128 DPUs = 2,560 DPUs",
            "dma_read_alpha_cycles": f"{PRIM} (measured at 350 MHz; assumed equal in cycles at 400 MHz)",
            "dma_write_alpha_cycles": f"{PRIM} (measured at 350 MHz; assumed equal in cycles at 400 MHz)",
        },
    ),
    # PrIM's transfer microbenchmark allocated DPUs with "nrThreadPerPool=8"; the
    # PrIM applications (and anyone calling dpu_alloc with no options) use the SDK's
    # default thread pool.  The uPIMulator artifact timed those applications on real
    # hardware, so this profile takes its host<->DPU transfer constants from them:
    # each is the median over the artifact's input sizes of the net bandwidth
    # d*bytes/(time - calls*fixed call cost) of one application at 1 or 64 DPUs,
    # every SDK call of the timed phase counted (RED's push is an argument push
    # and the input push)
    # (tests/perfmodel/upimulator_hw_points.json, role "calibration").  Every other
    # point -- six more applications, 4 and 16 DPUs, serial pulls -- is held out:
    # tests/perfmodel/test_transfer_calibration.py, benchmarks/bench_model_validation.py.
    "upmem-sdk-default-pool": HardwareProfile(
        name="upmem-sdk-default-pool",
        xfer_curve="saturating",
        xfer_to_dpu_single_bytes_per_s=0.479e9,
        xfer_to_dpu_rank_bytes_per_s=4.91e9,
        xfer_from_dpu_single_bytes_per_s=0.109e9,
        xfer_from_dpu_rank_bytes_per_s=1.48e9,
        sources={
            "name": "SDK default thread pool (dpu_alloc without nrThreadPerPool), as the PrIM applications run",
            "xfer_curve": f"{UPIMULATOR_ARTIFACT}: of the two curves through the calibrated ends, 'saturating' "
            "misses the 173 held-out transfer times (8 apps, 1-64 DPUs) by 21% on average per point, "
            "'power' by 32%; 'saturating' is too fast at 16 DPUs (median -21% DPU-CPU, -28% CPU-DPU), "
            "'power' too slow at 4 DPUs",
            "xfer_to_dpu_single_bytes_per_s": f"{UPIMULATOR_ARTIFACT}: RED hw_cpu_to_dpu, 1 DPU, 16 MiB, 2 calls (row 78)",
            "xfer_to_dpu_rank_bytes_per_s": f"{UPIMULATOR_ARTIFACT}: RED hw_cpu_to_dpu, 64 DPUs, 2 calls, median of 4 sizes (rows 88-91)",
            "xfer_from_dpu_single_bytes_per_s": f"{UPIMULATOR_ARTIFACT}: VA hw_dpu_to_cpu, 1 DPU, 8 MiB (row 174)",
            "xfer_from_dpu_rank_bytes_per_s": f"{UPIMULATOR_ARTIFACT}: VA hw_dpu_to_cpu, 64 DPUs, median of 5 sizes (rows 187-191)",
            "xfer_broadcast_rank_bytes_per_s": f"{PRIM}, Sec. 3.4, Fig. 9 (nrThreadPerPool=8 setup; the artifact has no broadcast run)",
        },
    ),
}
# The hardware profile every tool models unless told otherwise (PrIM's system).
DEFAULT_HARDWARE_PROFILE = "upmem-350mhz-2556"


def get_profile(name_or_profile: str | HardwareProfile, *, nr_dpus: int | None = None) -> HardwareProfile:
    """Look a profile up by name (or pass one through), optionally with fewer/more DPUs.

    Example::

        >>> get_profile("upmem-350mhz-2556", nr_dpus=128).nr_ranks
        2
    """
    if isinstance(name_or_profile, HardwareProfile):
        profile = name_or_profile
    elif name_or_profile in PROFILES:
        profile = PROFILES[name_or_profile]
    else:
        raise KeyError(f"unknown hardware profile {name_or_profile!r}; known: {sorted(PROFILES)}")
    if nr_dpus is not None:
        if int(nr_dpus) != nr_dpus or nr_dpus < 1:
            raise ValueError(f"nr_dpus must be a positive integer, got {nr_dpus!r}")
        profile = profile.with_values("nr_dpus override", nr_dpus=int(nr_dpus))
    return profile


# --------------------------------------------------------------------------- this machine
def calibrate(
    profile: HardwareProfile | str = DEFAULT_HARDWARE_PROFILE,
    *,
    table_bytes: int = 256 * _MIB,
    row_bytes: int = 128,
    repeats: int = 3,
    seed: int = 0,
) -> HardwareProfile:
    """Measure this host's merge and row-gather bandwidth and return ``profile`` with them.

    Merge: ``np.add`` of partial-sum blocks into an output (bytes of partials
    consumed per second).  Gather: random rows of ``row_bytes`` from a
    ``table_bytes`` table (larger than a last-level cache) summed per bag, the
    host-cache path.  Best of ``repeats``.

    Example::

        >>> p = calibrate(table_bytes=8 << 20, repeats=1)
        >>> p.host_gather_bytes_per_s > 0 and "calibrate" in p.source_of("host_gather_bytes_per_s")
        True
    """
    profile = get_profile(profile)
    rng = np.random.default_rng(seed)
    dim = max(row_bytes // 4, 1)
    rows = max(table_bytes // (dim * 4), 1)
    table = rng.standard_normal((rows, dim), dtype=np.float32)
    nr_lookups = min(rows, 1 << 18)
    bags = max(nr_lookups // 32, 1)
    idx = rng.integers(0, rows, size=bags * 32)
    best_gather = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        table[idx].reshape(bags, 32, dim).sum(axis=1)
        best_gather = min(best_gather, time.perf_counter() - t0)
    partials = rng.standard_normal((8, bags, dim), dtype=np.float32)
    best_merge = math.inf
    for _ in range(repeats):
        out = np.zeros((bags, dim), dtype=np.float32)
        t0 = time.perf_counter()
        for block in partials:
            np.add(out, block, out=out)
        best_merge = min(best_merge, time.perf_counter() - t0)
    source = f"measured on this machine by calibrate() ({time.strftime('%Y-%m-%d')})"
    return profile.with_values(
        source,
        host_gather_bytes_per_s=idx.size * dim * 4 / max(best_gather, 1e-9),
        host_merge_bytes_per_s=partials.nbytes / max(best_merge, 1e-9),
    )
