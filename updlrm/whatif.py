"""What-if questions to the performance model: where DPUs beat the host alone, PrIM's microbenchmarks.

A uniform embedding-bag batch (:func:`uniform_embedding_work`) modeled on the DPUs
against the host gathering every row itself (:func:`speedup_over_cpu`), the smallest
batch size or pooling factor at which the DPUs win (:func:`crossover_batch_size`,
:func:`crossover_pooling`), and the model's value of a PrIM microbenchmark quantity
(:func:`predict`, for the validation benchmark).

Example::

    >>> from updlrm.hardware import PROFILES
    >>> speedup_over_cpu(PROFILES["upmem-350mhz-2556"], batch_size=4096, nr_tables=8, pooling=64, dim=64) > 0
    True
"""

from __future__ import annotations

import numpy as np

from updlrm.hardware import HardwareProfile, get_profile
from updlrm.perfmodel import BatchWork, arithmetic_throughput, model_batch, mram_bandwidth
from updlrm.specs import RowFormat
from updlrm.transfer_model import transfer_time

__all__ = [
    "uniform_embedding_work",
    "cpu_embedding_time",
    "dpu_embedding_time",
    "speedup_over_cpu",
    "crossover_batch_size",
    "crossover_pooling",
    "predict",
]


# --------------------------------------------------------------------------- where DPUs win
def uniform_embedding_work(
    profile: HardwareProfile,
    *,
    batch_size: int,
    nr_tables: int,
    pooling: float,
    dim: int,
    row_format: str = "fp32",
    weighted: bool = False,
    nr_tasklets: int = 16,
    nr_dpus: int | None = None,
    cache_hit_rate: float = 0.0,
) -> BatchWork:
    """A balanced embedding-bag batch: each table's rows split evenly over ``nr_dpus // nr_tables`` DPUs.

    Lookups spread evenly; every DPU returns one partial sum per bag of the
    tables it holds; the host adds them up.  A ``cache_hit_rate`` share of
    lookups is served from the host cache instead.  Index payload (a first-order
    model, not the ABI's exact layout, which :func:`updlrm.partitioner.batch_work.derive_work`
    counts): 4-byte index per lookup, 4-byte offset per bag, 4-byte weight per lookup
    when weighted.

    Example::

        >>> p = get_profile("upmem-350mhz-2556", nr_dpus=64)
        >>> w = uniform_embedding_work(p, batch_size=256, nr_tables=8, pooling=20, dim=32)
        >>> w.nr_dpus, float(w.lookups.sum())
        (64, 40960.0)
    """
    if batch_size < 1 or nr_tables < 1 or pooling < 0 or dim < 1:
        raise ValueError("batch_size, nr_tables and dim must be >= 1 and pooling >= 0")
    if not 0.0 <= cache_hit_rate <= 1.0:
        raise ValueError("cache_hit_rate must be within 0..1")
    nr_dpus = profile.nr_dpus if nr_dpus is None else nr_dpus
    elem = RowFormat(row_format).element_bytes
    if nr_dpus >= nr_tables:
        dpus_per_table = nr_dpus // nr_tables
        used = dpus_per_table * nr_tables
        tables_per_dpu = 1.0
    else:
        dpus_per_table = 1
        used = nr_dpus
        tables_per_dpu = nr_tables / nr_dpus
    dpu_lookups = batch_size * nr_tables * pooling * (1.0 - cache_hit_rate)
    lookups = dpu_lookups / used
    bags = batch_size * tables_per_dpu
    index_bytes = lookups * 4 * (2 if weighted else 1) + (bags + 1) * 4
    output_bytes = bags * dim * 4
    return BatchWork.uniform(
        nr_dpus=used,
        lookups=lookups,
        row_bytes=dim * elem,
        index_bytes=index_bytes,
        output_bytes=output_bytes,
        reduce_elems=lookups * dim,
        row_format=row_format,
        weighted=weighted,
        nr_tasklets=nr_tasklets,
        host_merge_elems=int(batch_size * nr_tables * dim * dpus_per_table),
        host_cache_lookups=int(round(batch_size * nr_tables * pooling * cache_hit_rate)),
        host_cache_row_bytes=dim * elem,
    )


def cpu_embedding_time(
    profile: HardwareProfile, *, batch_size: int, nr_tables: int, pooling: float, dim: int, row_format: str = "fp32"
) -> float:
    """Seconds the host alone needs for the same batch: every row gathered at ``host_gather_bytes_per_s``.

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> cpu_embedding_time(p, batch_size=2, nr_tables=1, pooling=1, dim=4) < 1e-6
        True
    """
    elem = RowFormat(row_format).element_bytes
    return batch_size * nr_tables * pooling * dim * elem / profile.host_gather_bytes_per_s


def dpu_embedding_time(profile: HardwareProfile, **workload) -> float:
    """Modeled batch latency of :func:`uniform_embedding_work` on the DPUs (``PhaseTimes.total_s``).

    Example::

        >>> p = get_profile("upmem-350mhz-2556", nr_dpus=64)
        >>> dpu_embedding_time(p, batch_size=64, nr_tables=4, pooling=10, dim=16) > 0
        True
    """
    return model_batch(uniform_embedding_work(profile, **workload), profile).total_s


def speedup_over_cpu(profile: HardwareProfile, **workload) -> float:
    """CPU-only time over DPU time for the same uniform batch (>1: the DPUs win).

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> speedup_over_cpu(p, batch_size=1, nr_tables=1, pooling=1, dim=8) < 1   # tiny batch: CPU wins
        True
    """
    cpu_keys = {k: v for k, v in workload.items() if k in ("batch_size", "nr_tables", "pooling", "dim", "row_format")}
    return cpu_embedding_time(profile, **cpu_keys) / dpu_embedding_time(profile, **workload)


def _first_win(profile: HardwareProfile, key: str, limit: int, workload: dict) -> int | None:
    def wins(value: int) -> bool:
        return speedup_over_cpu(profile, **{**workload, key: value}) > 1.0

    low, high = 0, 1
    while not wins(high):
        if high >= limit:
            return None
        low, high = high, min(high * 2, limit)
    while high - low > 1:
        mid = (low + high) // 2
        if wins(mid):
            high = mid
        else:
            low = mid
    return high


def crossover_batch_size(
    profile: HardwareProfile, *, nr_tables: int, pooling: float, dim: int, max_batch_size: int = 1 << 22, **workload
) -> int | None:
    """Smallest batch size at which the DPUs beat the host alone, or None up to ``max_batch_size``.

    Searches powers of two for the first win, then bisects inside that bracket.

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> b = crossover_batch_size(p, nr_tables=8, pooling=64, dim=64)
        >>> b is None or speedup_over_cpu(p, batch_size=b, nr_tables=8, pooling=64, dim=64) > 1
        True
    """
    return _first_win(
        profile, "batch_size", max_batch_size, {"nr_tables": nr_tables, "pooling": pooling, "dim": dim, **workload}
    )


def crossover_pooling(
    profile: HardwareProfile, *, batch_size: int, nr_tables: int, dim: int, max_pooling: int = 1 << 12, **workload
) -> int | None:
    """Smallest pooling factor (lookups per bag) at which the DPUs beat the host alone, or None.

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> crossover_pooling(p, batch_size=1, nr_tables=1, dim=4, max_pooling=8) is None
        True
    """
    return _first_win(
        profile, "pooling", max_pooling, {"batch_size": batch_size, "nr_tables": nr_tables, "dim": dim, **workload}
    )


# --------------------------------------------------------------------------- published microbenchmarks
def predict(profile: HardwareProfile, quantity: str, **params) -> float:
    """The model's value for one of PrIM's microbenchmark quantities (used by the validation table).

    * ``mram_bandwidth``: ``transfer_bytes``, ``nr_tasklets``, ``op`` -> bytes/s of one DPU
    * ``mram_peak``: the DMA streaming limit ``frequency / beta`` -> bytes/s
    * ``arithmetic_throughput``: ``op``, ``nr_tasklets`` -> operations/s
    * ``transfer_bandwidth``: ``nr_dpus``, ``bytes_per_dpu``, ``direction``, ``mode`` ->
      bytes moved (once per DPU) per second, fixed call costs included

    Example::

        >>> from updlrm.hardware import PROFILES
        >>> p = PROFILES["upmem-350mhz-2556"]
        >>> round(predict(p, "transfer_bandwidth", nr_dpus=64, bytes_per_dpu=1 << 25,
        ...               direction="to_dpu", mode="parallel") / 1e9, 2)
        6.68
    """
    if quantity == "mram_bandwidth":
        return mram_bandwidth(profile, params["transfer_bytes"], params["nr_tasklets"], params.get("op", "read"))
    if quantity == "mram_peak":
        return profile.dpu_frequency_hz / profile.dma_read_beta_cycles_per_byte
    if quantity == "arithmetic_throughput":
        return arithmetic_throughput(profile, params["op"], params["nr_tasklets"])
    if quantity == "transfer_bandwidth":
        nr, size = int(params["nr_dpus"]), float(params["bytes_per_dpu"])
        seconds = transfer_time(
            np.full(nr, size),
            get_profile(profile, nr_dpus=max(nr, profile.nr_dpus)),
            params["direction"],
            params["mode"],
        )
        return nr * size / seconds
    raise ValueError(f"unknown quantity {quantity!r}")
