"""Embedding tables over several UPMEM servers, one process per host on torch.distributed.

Stages: :mod:`~updlrm.distributed.cluster` splits tables over hosts (table-, row- or
column-wise, as torchrec does over GPUs); :mod:`~updlrm.distributed.hostplan` places
each host's shards on its DPUs; :mod:`~updlrm.distributed.routing` moves a batch's
lookups to their owners and the pooled parts back; :mod:`~updlrm.distributed.sharded`
runs it over a :class:`~updlrm.distributed.context.ClusterContext` (gloo on CPU);
:mod:`~updlrm.distributed.model` models it for real servers and a network;
:mod:`~updlrm.distributed.launch` runs N local processes for demos and tests.
"""

from updlrm.distributed.cluster import ClusterPlan, ClusterPlanError, HostShard, HostSpec, plan_cluster
from updlrm.distributed.context import ClusterContext, DistributedError
from updlrm.distributed.launch import run_local
from updlrm.distributed.model import NETWORKS, NetworkProfile, estimate_batch, estimate_cluster
from updlrm.distributed.sharded import ShardedTableBatchedEmbeddingBags

__all__ = [
    "NETWORKS",
    "ClusterContext",
    "ClusterPlan",
    "ClusterPlanError",
    "DistributedError",
    "HostShard",
    "HostSpec",
    "NetworkProfile",
    "ShardedTableBatchedEmbeddingBags",
    "estimate_batch",
    "estimate_cluster",
    "plan_cluster",
    "run_local",
]
