"""updlrm: the embedding layer of DLRM on UPMEM processing-in-memory DPUs.

Backends: real DPUs (``hw``), the UPMEM SDK's functional simulator
(``simulator``) and a built-in SDK-compatible emulator (``emulator``).

The public names below are imported lazily, so ``import updlrm`` (and the CLI) stay
fast and do not load torch until a module is used.

Example:
    >>> import numpy as np, updlrm
    >>> bag = updlrm.EmbeddingBag(100, 8, mode="sum", backend="emulator", nr_dpus=2)
    >>> bag(np.array([[1, 2, 3]])).shape
    (1, 8)
    >>> bag.close()
"""

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    "TableBatchedEmbeddingBags": "updlrm.tbe",
    "EmbeddingBag": "updlrm.tbe",
    "validate_tbe_inputs": "updlrm.tbe",
    "InvalidInputError": "updlrm.tbe",
    "InputTypeError": "updlrm.tbe",
    "IndexOutOfRangeError": "updlrm.tbe",
    "TableSpec": "updlrm.specs",
    "PoolingMode": "updlrm.specs",
    "BoundsCheckMode": "updlrm.specs",
    "RowFormat": "updlrm.specs",
    "Topology": "updlrm.specs",
    "Plan": "updlrm.plan",
    "PlanError": "updlrm.plan",
    "uniform_plan": "updlrm.plan",
    "resolve_backend": "updlrm.backends",
    "KeyedJaggedTensor": "updlrm.kjt",
    "KeyedTensor": "updlrm.kjt",
    "JaggedTensor": "updlrm.kjt",
    "EmbeddingBagCollection": "updlrm.collection",
    "EmbeddingBagConfig": "updlrm.collection",
    "PoolingType": "updlrm.collection",
    "TorchEmbeddingBagCollection": "updlrm.collection",
    "BackendUnavailable": "updlrm.backends",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'updlrm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
