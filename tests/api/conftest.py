import importlib.util

import pytest
from api_reference import ReferenceEngine


def real_engine_available() -> bool:
    try:
        return importlib.util.find_spec("updlrm.host.engine") is not None
    except ImportError:
        return False


@pytest.fixture
def reference_engine(monkeypatch):
    """Run the API on the torch reference of the Engine contract (fast; no DPU path)."""
    import updlrm.tbe

    ReferenceEngine.instances.clear()
    monkeypatch.setattr(
        updlrm.tbe,
        "_create_engine",
        lambda plan, weights, backend, nr_tasklets: ReferenceEngine(
            plan, weights, backend=backend, nr_tasklets=nr_tasklets
        ),
    )
    return ReferenceEngine


@pytest.fixture(params=["emulator", "reference"])
def engine_kind(request, monkeypatch):
    """Both the real engine on the emulator and the reference; the API must agree with torch on both."""
    if request.param == "reference":
        request.getfixturevalue("reference_engine")
    elif not real_engine_available():
        pytest.skip("updlrm.host.engine is not built yet (engine helper); API checked on the reference only")
    return request.param


@pytest.fixture
def reference_engine_calls(request):
    """Number of batches the reference engine ran (None on the real engine)."""

    def calls():
        if "reference_engine" not in request.fixturenames or not ReferenceEngine.instances:
            return None
        return len(ReferenceEngine.instances[-1].calls)

    return calls
