"""Balanced k-way partitioning of hot rows: hypergraph (Mt-KaHyPar), graph (METIS) or frequency only.

All three take vertex weights (expected lookups) and per-block weight budgets and return
a block per vertex.  The hypergraph objective is connectivity-1 (km1): for a bag whose
hot rows span lambda blocks it counts lambda-1, i.e. exactly the extra partial vectors
the bag returns, so minimising it minimises bag fan-out.  METIS minimises the weighted
edge cut of the clique expansion, a proxy for the same quantity.

Example:
    >>> import numpy as np
    >>> w = np.array([5.0, 4, 3, 3, 2, 1])
    >>> frequency_partition(w, np.array([9.0, 9.0])).tolist()
    [0, 1, 1, 0, 1, 0]
"""

from __future__ import annotations

import heapq
import threading

import numpy as np

_MTKAHYPAR_LOCK = threading.Lock()
_MTKAHYPAR = None
# Integer weights for the partitioners: loads are scaled so the total is about this
# much, keeping rounding error below 1e-6 of a block while staying far below int32 limits.
_WEIGHT_SCALE_TOTAL = 1 << 24


def _integer_weights(weights: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = float(weights.sum()) + float(budgets.sum())
    scale = _WEIGHT_SCALE_TOTAL / total if total > 0 else 1.0
    vw = np.maximum(1, np.round(weights * scale)).astype(np.int64)
    bw = np.maximum(1, np.floor(budgets * scale)).astype(np.int64)
    return vw, bw


def frequency_partition(weights: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Greedy LPT: heaviest vertex first onto the block with the most budget left.

    >>> frequency_partition(np.array([3.0, 1, 1, 1]), np.array([3.0, 3.0])).tolist()
    [0, 1, 1, 1]
    """
    weights = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-weights, kind="stable")
    heap = [(-float(b), i) for i, b in enumerate(budgets)]
    heapq.heapify(heap)
    out = np.empty(weights.size, dtype=np.int64)
    for v in order:
        left, block = heapq.heappop(heap)
        out[v] = block
        heapq.heappush(heap, (left + float(weights[v]), block))
    return out


MTKAHYPAR_MISSING = (
    "graph='hypergraph' needs Mt-KaHyPar, which is not installed: "
    "pip install 'updlrm[hypergraph]' (x86-64 Linux wheels), or use graph='graph' (METIS)"
)


class MissingDependency(ImportError):
    """An optional dependency a requested feature needs is not installed; the message says how to get it."""


def require_mtkahypar() -> None:
    """Raise :class:`MissingDependency` (one line: what to install) unless Mt-KaHyPar can be imported.

    >>> try:
    ...     require_mtkahypar()
    ... except MissingDependency as e:
    ...     assert "pip install 'updlrm[hypergraph]'" in str(e)
    """
    try:
        import mtkahypar  # noqa: F401
    except ImportError as e:
        raise MissingDependency(MTKAHYPAR_MISSING) from e


def _mtkahypar():
    global _MTKAHYPAR
    with _MTKAHYPAR_LOCK:
        if _MTKAHYPAR is None:
            require_mtkahypar()
            import mtkahypar

            # One initializer per process (Mt-KaHyPar's rule); the deterministic preset
            # gives the same partition for the same seed whatever the thread count.
            _MTKAHYPAR = (mtkahypar, mtkahypar.initialize(2, False))
        return _MTKAHYPAR


def hypergraph_partition(
    num_vertices: int,
    eptr: np.ndarray,
    eind: np.ndarray,
    edge_weights: np.ndarray,
    weights: np.ndarray,
    budgets: np.ndarray,
    *,
    epsilon: float = 0.03,
    seed: int = 0,
) -> np.ndarray:
    """Mt-KaHyPar km1 partition into ``len(budgets)`` blocks, block ``i`` weighing at most ``budgets[i]``.

    Needs the optional ``mtkahypar`` package (``pip install 'updlrm[hypergraph]'``);
    without it this raises :class:`MissingDependency`.

    >>> eptr, eind = np.array([0, 2, 4]), np.array([0, 1, 2, 3])
    >>> p = hypergraph_partition(  # needs: mtkahypar
    ...     4, eptr, eind, np.ones(2), np.ones(4), np.array([2.0, 2.0]))
    >>> bool(p[0] == p[1] and p[2] == p[3] and p[0] != p[2])
    True
    """
    k = len(budgets)
    if k == 1 or num_vertices == 0:
        return np.zeros(num_vertices, dtype=np.int64)
    mtk, init = _mtkahypar()
    vw, bw = _integer_weights(np.asarray(weights, np.float64), np.asarray(budgets, np.float64))
    # A feasible budget is required; relax uniformly when rounding makes it tight.
    if bw.sum() < vw.sum():
        bw = np.ceil(bw * (vw.sum() / bw.sum())).astype(np.int64)
    eptr = np.asarray(eptr, dtype=np.int64)
    eind = np.asarray(eind, dtype=np.int64)
    edges = [eind[eptr[e] : eptr[e + 1]].tolist() for e in range(len(eptr) - 1)]
    ew = np.maximum(1, np.round(np.asarray(edge_weights, np.float64))).astype(np.int64)
    with _MTKAHYPAR_LOCK:
        context = init.context_from_preset(mtk.PresetType.DETERMINISTIC)
        context.set_partitioning_parameters(k, epsilon, mtk.Objective.KM1)
        context.logging = False
        context.set_individual_target_block_weights(bw.tolist())
        mtk.set_seed(int(seed))
        hg = init.create_hypergraph(context, int(num_vertices), len(edges), edges, vw.tolist(), ew.tolist())
        part = hg.partition(context)
        return np.asarray(part.get_partition(), dtype=np.int64)


def graph_partition(
    adjacency, weights: np.ndarray, budgets: np.ndarray, *, epsilon: float = 0.03, seed: int = 0
) -> np.ndarray:
    """METIS (pymetis) partition of a weighted graph (``scipy.sparse`` CSR, symmetric) into budget shares.

    >>> import scipy.sparse as sp
    >>> a = sp.csr_matrix(np.array([[0, 5, 0, 0], [5, 0, 1, 0], [0, 1, 0, 5], [0, 0, 5, 0]]))
    >>> p = graph_partition(a, np.ones(4), np.array([2.0, 2.0]))
    >>> bool(p[0] == p[1] and p[2] == p[3] and p[0] != p[2])
    True
    """
    import pymetis

    k = len(budgets)
    n = adjacency.shape[0]
    if k == 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    budgets = np.asarray(budgets, dtype=np.float64)
    vw, _ = _integer_weights(np.asarray(weights, np.float64), budgets)
    adjacency = adjacency.tocsr()
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    ew = np.maximum(1, np.round(adjacency.data)).astype(np.int64)
    tpwgts = (budgets / budgets.sum()).tolist()
    # METIS's ufactor is the allowed imbalance in thousandths.
    options = pymetis.Options(seed=int(seed), ufactor=max(1, int(round(epsilon * 1000))))
    csr = pymetis.CSRAdjacency(adjacency.indptr.astype(np.int64), adjacency.indices.astype(np.int64))
    _, parts = pymetis.part_graph(k, csr, vweights=vw, eweights=ew, tpwgts=tpwgts, options=options)
    return np.asarray(parts, dtype=np.int64)
