"""``updlrm serve``: DLRM inference (or the embedding layer alone) under MLPerf LoadGen.

Parts, one module each:

* :mod:`updlrm.serve.requests`: request files (Criteo TSV, TBE ``.npz``, KJT ``.pt``)
  into a :class:`~updlrm.serve.requests.RequestSet` that gathers any samples into a
  batch; a synthetic Criteo-format writer;
* :mod:`updlrm.serve.model`: the served model (a DLRM checkpoint or an embedding
  collection) with per-batch host timings and the engine's profile;
* :mod:`updlrm.serve.batcher`: dynamic batching (max batch, max wait);
* :mod:`updlrm.serve.loadgen`: LoadGen's Offline and Server scenarios, and the search
  for the highest Server QPS within the p99 bound;
* :mod:`updlrm.serve.report`: text, JSON and the latency histogram PNG;
* :mod:`updlrm.serve.cli`: the command.

LoadGen is the optional extra ``serve`` (``pip install 'updlrm[serve]'``).

Example:
    >>> from updlrm.serve import loadgen_available
    >>> isinstance(loadgen_available(), bool)
    True
"""

from updlrm.serve.loadgen import (
    ScenarioResult,
    ServeSettings,
    find_max_qps,
    loadgen_available,
    run_scenario,
)
from updlrm.serve.model import ModelError, ServedModel
from updlrm.serve.requests import RequestError, RequestSet, load_requests, save_kjt_requests, write_synthetic_criteo

__all__ = [
    "ModelError",
    "RequestError",
    "RequestSet",
    "ScenarioResult",
    "ServeSettings",
    "ServedModel",
    "find_max_qps",
    "load_requests",
    "loadgen_available",
    "run_scenario",
    "save_kjt_requests",
    "write_synthetic_criteo",
]
