"""``dpu``: the UPMEM SDK's Python host package, provided by the updlrm emulator.

This folder is on ``sys.path`` only when asked for
(``PYTHONPATH=$(updlrm emu python-path)``).  If a real UPMEM SDK's ``dpu``
package is found further down ``sys.path``, that one is imported instead, so
the emulator never shadows the SDK; ``UPDLRM_EMU_PYTHON_DPU=1`` forces the
emulator's.  The implementation lives in ``updlrm.emulator.sdk_python``.
"""

import importlib.machinery as _machinery
import os as _os
import sys as _sys

_HERE = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
_OTHERS = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _HERE]
_SDK_SPEC = None if _os.environ.get("UPDLRM_EMU_PYTHON_DPU") == "1" else _machinery.PathFinder.find_spec("dpu", _OTHERS)

if _SDK_SPEC is not None and _SDK_SPEC.origin and _os.path.dirname(_os.path.dirname(_SDK_SPEC.origin)) != _HERE:
    import importlib.util as _util

    _module = _util.module_from_spec(_SDK_SPEC)
    _sys.modules[__name__] = _module  # the import statement returns the SDK's package
    _SDK_SPEC.loader.exec_module(_module)
else:
    from updlrm.emulator.sdk_python import (
        ALLOCATE_ALL,
        DpuContext,
        DpuError,
        DpuProgram,
        DpuSet,
        DpuSymbol,
        DpuVariable,
    )

    __all__ = ["ALLOCATE_ALL", "DpuContext", "DpuError", "DpuProgram", "DpuSet", "DpuSymbol", "DpuVariable"]
