"""Which DPUs an engine allocates: the backend and the ``dpu_alloc`` profile string.

>>> alloc_profile("simulator"), alloc_profile("emulator", 2.0, 8)
('backend=simulator', 'timeout=2.0,nrDpusPerRank=8')
"""

from __future__ import annotations

from updlrm.host.build import BACKENDS, EngineError
from updlrm.specs import DPUS_PER_RANK

__all__ = ["alloc_profile", "resolve_backend"]


def resolve_backend(backend: str) -> str:
    """``backend`` checked, ``"auto"`` resolved as :func:`updlrm.backends.resolve_backend` does."""
    if backend == "auto":
        from updlrm.backends import resolve_backend as resolve

        return resolve("auto")[0]
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    return backend


def alloc_profile(backend: str, launch_timeout: float | None = None, dpus_per_rank: int = DPUS_PER_RANK) -> str:
    # dpu_alloc profile strings (UPMEM SDK documentation, "dpu_alloc"): "backend=hw"
    # selects real ranks, "backend=simulator" the functional simulator. "timeout=S" is
    # the emulator's launch timeout and "nrDpusPerRank=N" its rank size (emulator/README.md);
    # the SDK backends have neither: their ranks are the machine's.
    parts = [{"emulator": "", "simulator": "backend=simulator", "hw": "backend=hw"}[backend]]
    if launch_timeout is not None:
        if backend != "emulator":
            raise EngineError(
                f"launch_timeout is only available on the emulator backend (got backend {backend!r}); "
                "leave it None on the UPMEM SDK's backends"
            )
        if not float(launch_timeout) > 0:
            raise EngineError(f"launch_timeout must be a positive number of seconds, got {launch_timeout!r}")
        parts.append(f"timeout={float(launch_timeout)!r}")
    # The emulator groups DPUs into ranks as the plan's topology says (transfers pad to a
    # rank's largest buffer); it holds at most a hardware rank's 64.
    if backend == "emulator" and 1 <= dpus_per_rank < DPUS_PER_RANK:
        parts.append(f"nrDpusPerRank={int(dpus_per_rank)}")
    return ",".join(part for part in parts if part)
