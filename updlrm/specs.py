"""Table specifications and enums, named as in FBGEMM and torchrec.

Example:
    >>> from updlrm.specs import TableSpec, RowFormat, Topology
    >>> t = TableSpec("t0", num_embeddings=1000, embedding_dim=64)
    >>> t.row_bytes(), TableSpec("t1", 10, 3, row_format=RowFormat.INT8).row_bytes()
    (256, 8)
    >>> Topology(nr_dpus=130).nr_ranks
    3
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from updlrm import abi

# UPMEM hardware facts used by the plan checks. Source: UPMEM SDK documentation,
# "Architecture" page (64 MB MRAM and 64 KB WRAM per DPU, 64 DPUs per rank).
MRAM_BYTES_PER_DPU = 64 << 20
DPUS_PER_RANK = 64


class PoolingMode(enum.IntEnum):
    """Bag reduction, as FBGEMM's ``PoolingMode`` (SUM=0, MEAN=1, NONE=2)."""

    SUM = 0
    MEAN = 1
    NONE = 2


class BoundsCheckMode(enum.IntEnum):
    """What to do with an out-of-range index, as FBGEMM's ``BoundsCheckMode``.

    FATAL raises before any device state changes; WARNING and IGNORE replace the
    bad index by an empty contribution (WARNING also warns); NONE skips the check.
    """

    FATAL = 0
    WARNING = 1
    IGNORE = 2
    NONE = 3


class RowFormat(str, enum.Enum):
    """How a row is stored in MRAM, with every fact about the format in one place.

    FP32 is exact IEEE float; INT32 is fixed point ``value = q * scale``; INT8 is
    ``value = q * scale`` with int32 accumulation on the DPU (int16 where a batch's bags
    are short enough, :func:`updlrm.abi.int16_partials`).  ``dtype``,
    ``element_bytes``, ``accumulator_bytes`` and ``abi_code`` come from the ABI header
    (:mod:`updlrm.abi`, checked against the C by ``tests/test_abi.py``).

    >>> RowFormat.INT8.abi_code, RowFormat.INT8.element_bytes, RowFormat.INT8.dtype
    (2, 1, dtype('int8'))
    >>> from updlrm.abi import FLAG_WEIGHTED, FLAG_INT16_PARTIALS
    >>> [RowFormat.INT8.accumulator_bytes(f) for f in (0, FLAG_WEIGHTED, FLAG_INT16_PARTIALS)]
    [4, 8, 2]
    """

    FP32 = "fp32"
    INT32 = "int32"
    INT8 = "int8"

    @property
    def abi_code(self) -> int:
        """``enum eb_row_format`` value the host runtime and kernel use for this format."""
        return _ABI_CODES[self.value]

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the stored rows."""
        return np.dtype(_DTYPES[self.value])

    @property
    def element_bytes(self) -> int:
        """Bytes of one stored element (``eb_element_bytes``)."""
        return abi.element_bytes(self.abi_code)

    def accumulator_bytes(self, flags: int) -> int:
        """Bytes of one element of a partial sum the DPU returns under a batch's ``flags`` (``eb_accumulator_bytes``)."""
        return abi.accumulator_bytes(self.abi_code, flags)


_ABI_CODES = {"fp32": abi.FORMAT_FP32, "int32": abi.FORMAT_INT32, "int8": abi.FORMAT_INT8}
_DTYPES = {"fp32": np.float32, "int32": np.int32, "int8": np.int8}


def padded_row_bytes(dim: int, row_format: RowFormat) -> int:
    """Bytes one row slice of ``dim`` elements takes in MRAM (DMA needs multiples of 8).

    >>> padded_row_bytes(3, RowFormat.FP32), padded_row_bytes(9, RowFormat.INT8)
    (16, 16)
    """
    return abi.row_bytes(RowFormat(row_format).abi_code, dim)


@dataclass(frozen=True)
class TableSpec:
    """One embedding table, in the manner of torchrec's ``EmbeddingBagConfig``.

    ``scale`` is the dequantisation step for INT32/INT8 rows (value = q * scale).

    >>> TableSpec("user", num_embeddings=10, embedding_dim=4).to_dict()["row_format"]
    'fp32'
    """

    name: str
    num_embeddings: int
    embedding_dim: int
    row_format: RowFormat = RowFormat.FP32
    scale: float = 1.0
    feature_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a table needs a non-empty name")
        if self.num_embeddings < 1:
            raise ValueError(f"table {self.name}: num_embeddings must be >= 1, got {self.num_embeddings}")
        if self.embedding_dim < 1:
            raise ValueError(f"table {self.name}: embedding_dim must be >= 1, got {self.embedding_dim}")
        object.__setattr__(self, "row_format", RowFormat(self.row_format))
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        if not self.scale > 0:
            raise ValueError(f"table {self.name}: scale must be > 0, got {self.scale}")

    def row_bytes(self, dim: int | None = None) -> int:
        return padded_row_bytes(self.embedding_dim if dim is None else dim, self.row_format)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["row_format"] = self.row_format.value
        d["feature_names"] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TableSpec:
        return cls(**d)


def tables_hash(tables: list[TableSpec]) -> str:
    """Stable hash of table specs, stored in plans to catch a plan/table mismatch.

    >>> tables_hash([TableSpec("a", 2, 2)]) == tables_hash([TableSpec("a", 2, 2)])
    True
    """
    canonical = json.dumps([t.to_dict() for t in tables], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Topology:
    """DPUs available to a plan: ``nr_dpus`` grouped in ranks of ``dpus_per_rank``.

    >>> Topology(nr_dpus=2048).nr_ranks, Topology(nr_dpus=2048).rank_of(130)
    (32, 2)
    """

    nr_dpus: int
    dpus_per_rank: int = DPUS_PER_RANK
    mram_bytes_per_dpu: int = MRAM_BYTES_PER_DPU

    def __post_init__(self) -> None:
        if self.nr_dpus < 1:
            raise ValueError(f"a topology needs at least one DPU, got {self.nr_dpus}")
        if self.dpus_per_rank < 1:
            raise ValueError(f"dpus_per_rank must be >= 1, got {self.dpus_per_rank}")

    @property
    def nr_ranks(self) -> int:
        return -(-self.nr_dpus // self.dpus_per_rank)

    def rank_of(self, dpu: int) -> int:
        return dpu // self.dpus_per_rank

    def to_dict(self) -> dict:
        return asdict(self)
