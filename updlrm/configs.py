"""Table configs in torchrec's vocabulary: ``EmbeddingBagConfig`` and ``PoolingType``.

One home for what a table of a collection is, so that the operator
(:mod:`updlrm.tbe`) and the collection (:mod:`updlrm.collection`) read configs the
same way without importing each other.

Example:
    >>> EmbeddingBagConfig("t", 10, 4, pooling="mean").table_spec().num_embeddings
    10
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from updlrm.specs import PoolingMode, RowFormat, TableSpec

__all__ = ["EmbeddingBagConfig", "PoolingType"]


class PoolingType(str, enum.Enum):
    """Bag reduction of a table, torchrec's ``PoolingType`` (SUM, MEAN)."""

    SUM = "SUM"
    MEAN = "MEAN"


def _pooling_type(p: Any, where: str) -> PoolingType:
    if isinstance(p, PoolingType):
        return p
    if isinstance(p, PoolingMode):
        p = p.name
    elif not isinstance(p, str):
        # torchrec's PoolingType enum (or any enum): its name/value says SUM or MEAN.
        p = getattr(p, "value", None) or getattr(p, "name", None) or p
    try:
        return PoolingType(str(p).upper())
    except ValueError:
        raise ValueError(f"{where}: pooling {p!r} is not supported; use 'SUM' or 'MEAN'") from None


# torchrec's DataType names -> row formats updlrm stores.
_DATA_TYPES = {"FP32": RowFormat.FP32, "INT8": RowFormat.INT8, "INT32": RowFormat.INT32}


@dataclass
class EmbeddingBagConfig:
    """One table of a collection, with torchrec's field names.

    ``feature_names`` are the KJT keys that look this table up (default: the table's
    name); ``row_format`` is how rows are stored on the DPUs (``"fp32"``, ``"int8"``,
    ``"int32"``; integer formats are quantised with a fitted scale); the default weights
    are uniform in ``[weight_init_min, weight_init_max]`` (default
    ``[-sqrt(1/num_embeddings), sqrt(1/num_embeddings)]``, torchrec's).

    >>> EmbeddingBagConfig("t", 10, 4, ["a", "b"], pooling="mean")
    EmbeddingBagConfig(name='t', num_embeddings=10, embedding_dim=4, feature_names=['a', 'b'], pooling=<PoolingType.MEAN: 'MEAN'>, row_format=<RowFormat.FP32: 'fp32'>, weight_init_max=None, weight_init_min=None)
    """

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: list[str] = field(default_factory=list)
    pooling: PoolingType | str = PoolingType.SUM
    row_format: RowFormat | str = RowFormat.FP32
    weight_init_max: float | None = None
    weight_init_min: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(
                f"EmbeddingBagConfig: name must be a non-empty string, got {self.name!r} "
                "(updlrm's field order is name, num_embeddings, embedding_dim; pass torchrec-style arguments by keyword)"
            )
        for what in ("num_embeddings", "embedding_dim"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"table {self.name!r}: {what} must be an integer >= 1, got {v!r}")
            setattr(self, what, int(v))
        if isinstance(self.feature_names, str):
            raise ValueError(
                f"table {self.name!r}: feature_names must be a list of names, got the string {self.feature_names!r}"
            )
        self.feature_names = list(self.feature_names) or [self.name]
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError(f"table {self.name!r}: feature_names repeat a name: {self.feature_names}")
        self.pooling = _pooling_type(self.pooling, f"table {self.name!r}")
        try:
            self.row_format = RowFormat(str(getattr(self.row_format, "value", self.row_format)).lower())
        except ValueError:
            raise ValueError(
                f"table {self.name!r}: row_format {self.row_format!r} is not one of 'fp32', 'int8', 'int32'"
            ) from None

    @staticmethod
    def coerce(obj: Any, i: int = 0) -> EmbeddingBagConfig:
        """This class from itself, a ``TableSpec`` or a torchrec ``EmbeddingBagConfig`` (duck typing).

        >>> EmbeddingBagConfig.coerce(TableSpec("t", 5, 2)).feature_names
        ['t']
        """
        if isinstance(obj, EmbeddingBagConfig):
            return obj
        if isinstance(obj, TableSpec):
            return EmbeddingBagConfig(
                obj.name, obj.num_embeddings, obj.embedding_dim, list(obj.feature_names), row_format=obj.row_format
            )
        if hasattr(obj, "num_embeddings") and hasattr(obj, "embedding_dim"):
            name = getattr(obj, "name", "") or f"t{i}"
            fmt = getattr(obj, "row_format", None)
            if fmt is None:
                dt = getattr(obj, "data_type", None)
                key = str(getattr(dt, "name", None) or getattr(dt, "value", None) or "FP32").upper()
                if key not in _DATA_TYPES:
                    raise ValueError(
                        f"table {name!r}: data_type {key} is not supported on DPUs; use FP32, INT8 or INT32"
                    )
                fmt = _DATA_TYPES[key]
            return EmbeddingBagConfig(
                name,
                obj.num_embeddings,
                obj.embedding_dim,
                list(getattr(obj, "feature_names", None) or []),
                pooling=getattr(obj, "pooling", PoolingType.SUM),
                row_format=fmt,
                weight_init_max=getattr(obj, "weight_init_max", None),
                weight_init_min=getattr(obj, "weight_init_min", None),
            )
        raise TypeError(
            f"table {i}: expected an EmbeddingBagConfig (updlrm's or torchrec's) or a TableSpec, got {type(obj).__name__}"
        )

    def table_spec(self) -> TableSpec:
        return TableSpec(
            self.name,
            self.num_embeddings,
            self.embedding_dim,
            row_format=self.row_format,
            feature_names=tuple(self.feature_names),
        )
