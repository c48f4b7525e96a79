"""The second stage over several servers: each host's own DPU placement of its shards.

A host stores its shards (:class:`~updlrm.distributed.cluster.HostShard`) as ordinary
tables, re-based to their rows and columns, and places them on its DPUs with
today's single-server machinery. The default is the same rule as
:class:`~updlrm.tbe.TableBatchedEmbeddingBags` without a plan (each table row-wise on
its share of the DPUs); a per-host :class:`~updlrm.plan.Plan` built by
:mod:`updlrm.partitioner` for the host's shards may be given instead.

Example:
    >>> from updlrm.specs import TableSpec
    >>> from updlrm.distributed.cluster import HostSpec, plan_cluster
    >>> plan = plan_cluster([TableSpec("a", 100, 8), TableSpec("b", 50, 8)], [HostSpec(4), HostSpec(4)],
    ...                     strategy="row_wise")
    >>> [t.name for t in local_tables(plan, 1)]
    ['a[50:100,0:8]', 'b[25:50,0:8]']
    >>> host_placement(plan, 1).topology.nr_dpus
    4
"""

from __future__ import annotations

from updlrm.distributed.cluster import ClusterPlan
from updlrm.plan import Plan, uniform_plan
from updlrm.specs import TableSpec


def local_tables(plan: ClusterPlan, host: int) -> list[TableSpec]:
    """The tables host ``host`` stores, one per shard, in its order."""
    return [plan.shards[i].local_spec(plan.tables[plan.shards[i].table]) for i in plan.shards_of_host(host)]


def host_placement(plan: ClusterPlan, host: int, tables: list[TableSpec] | None = None) -> Plan:
    """Host ``host``'s default DPU placement: each of its tables row-wise on its share of the DPUs."""
    specs = local_tables(plan, host) if tables is None else tables
    topology = plan.hosts[host].topology()
    return uniform_plan(specs, topology, "row_wise", dpus_per_table=max(1, topology.nr_dpus // max(1, len(specs))))
