"""torchrec's ``EmbeddingBagCollection`` over several UPMEM servers.

:class:`ShardedEmbeddingBagCollection` is :class:`updlrm.EmbeddingBagCollection` (same
constructor, same ``forward(kjt) -> KeyedTensor``, same dedup, MEAN and weighted
features) whose tables live on the hosts of a :class:`~updlrm.distributed.cluster.ClusterPlan`
instead of one server's DPUs: the collection stacks the KJT into one TBE batch as usual
and hands it to :class:`~updlrm.distributed.sharded.ShardedTableBatchedEmbeddingBags`,
which sends each lookup to its owner and brings the pooled parts back. Every rank calls
``forward`` with its own KJT (its own batch size); every rank must call it the same number
of times, and a rank whose KJT is wrong tells the others, which raise
:class:`~updlrm.distributed.context.DistributedError` naming it.

Example: ``tests/distributed/test_sharded_collection.py`` (one process per host).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from updlrm.collection import EmbeddingBagCollection, PoolingType
from updlrm.distributed.cluster import ClusterPlan, ClusterPlanError
from updlrm.distributed.context import ClusterContext
from updlrm.distributed.sharded import ShardedTableBatchedEmbeddingBags
from updlrm.kjt import KeyedTensor


class ShardedEmbeddingBagCollection(EmbeddingBagCollection):
    """An :class:`~updlrm.collection.EmbeddingBagCollection` whose tables span the hosts of ``cluster_plan``.

    Args:
        tables: as the collection (``EmbeddingBagConfig`` s); they must be the plan's
            tables, in order (names, sizes, formats).
        cluster_plan: where each table's rows and columns live.
        context: this process's :class:`~updlrm.distributed.context.ClusterContext`.
        Everything else as :class:`~updlrm.collection.EmbeddingBagCollection`
        (``plan`` and ``nr_dpus`` are per host here: the hosts' DPUs come from the plan).
    """

    def __init__(self, tables, *, cluster_plan: ClusterPlan, context: ClusterContext, **kwargs: Any) -> None:
        for key in ("plan", "nr_dpus"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"{key}= is per server; a sharded collection takes its hosts and DPUs from cluster_plan"
                )
        object.__setattr__(self, "_cluster", (cluster_plan, context))
        super().__init__(tables, **kwargs)

    def _build_tbe(self, specs, values, plan) -> ShardedTableBatchedEmbeddingBags:
        cluster_plan, context = self._cluster
        ours = [(s.name, s.num_embeddings, s.embedding_dim, s.row_format) for s in specs]
        theirs = [(s.name, s.num_embeddings, s.embedding_dim, s.row_format) for s in cluster_plan.tables]
        if ours != theirs:
            diff = next((f"{a} vs {b}" for a, b in zip(ours, theirs) if a != b), f"{len(ours)} vs {len(theirs)} tables")
            raise ClusterPlanError(f"the cluster plan was built for other tables (collection vs plan: {diff})")
        # The collection pools with SUM and divides MEAN features itself.
        summed = ClusterPlan(
            tables=list(specs),
            hosts=cluster_plan.hosts,
            shards=cluster_plan.shards,
            pooling=["sum"] * len(specs),
            metadata=cluster_plan.metadata,
        )
        a = self._backend_args
        return ShardedTableBatchedEmbeddingBags(
            summed, context, backend=a["backend"], weights=values, seed=a["seed"], nr_tasklets=a["nr_tasklets"]
        )

    def _stack(self, batch, bags):
        indices, offsets, psw, row_start, Bp = super()._stack(batch, bags)
        if indices is None:  # every rank takes part in every exchange, even with nothing to look up
            offsets = np.zeros(len(self._configs) * Bp + 1, dtype=np.int64)
            indices = np.zeros(0, dtype=np.int64)
            psw = np.zeros(0, dtype=np.float32) if self.is_weighted else None
        return indices, offsets, psw, row_start, Bp

    def forward(self, features: Any) -> KeyedTensor:
        context = self._cluster[1]
        step = context.step
        try:
            out = super().forward(features)
            if context.step == step:  # an empty batch never reached the exchange: take part anyway
                T = len(self._configs)
                self._tbe(
                    np.zeros(0, np.int64),
                    np.zeros(T * 0 + 1, np.int64),
                    np.zeros(0, np.float32) if self.is_weighted else None,
                )
            return out
        except Exception as error:
            if context.step == step:  # failed before the exchange: tell the others this batch
                self._tbe.fail(error)
            raise

    def to_torch(self):
        raise NotImplementedError(
            "a sharded collection holds only this host's shards; build the torch reference "
            "from the full weights (updlrm.TorchEmbeddingBagCollection)"
        )


__all__ = ["ShardedEmbeddingBagCollection", "PoolingType"]
