"""Build and load the engine's C code: the DPU kernel and the host library, per backend, cached.

:func:`build` compiles ``dpu_kernels/embedding_bag.c`` (with the emulator's compiler or
the UPMEM SDK's) and the host library ``host/eb_*.c`` into a cache directory keyed by the sources, the
toolchain and the tasklet count; :func:`_load_library` opens a built host library
through cffi. :class:`~updlrm.host.engine.Engine` calls both; everything here is
re-exported from ``updlrm.host.engine``.

Example:
    >>> kernel, library = build("emulator", nr_tasklets=16)
    >>> library.name
    'libeb_host.so'
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from updlrm.abi import check_nr_tasklets

HOST_DIR = Path(__file__).resolve().parent
KERNEL_DIR = HOST_DIR.parent / "dpu_kernels"
if not (KERNEL_DIR / "embedding_bag.c").exists():  # installed wheel: dpu_kernels is a sibling subpackage
    import updlrm.dpu_kernels as _kernels

    KERNEL_DIR = Path(_kernels.__file__).resolve().parent

KERNEL_SOURCE = KERNEL_DIR / "embedding_bag.c"
ABI_HEADER = KERNEL_DIR / "embedding_bag_abi.h"
# The host library's translation units, one per role (host/README.md), and its headers:
# eb_host.h is the public (cffi) interface, eb_internal.h what the units share.
HOST_SOURCES = tuple(
    HOST_DIR / f"eb_{role}.c"
    for role in (
        "setup",
        "tables",
        "share",
        "load",
        "route",
        "parts",
        "pack",
        "sums",
        "index",
        "merge",
        "workers",
        "pipeline",
    )
)
HOST_HEADER = HOST_DIR / "eb_host.h"
HOST_INTERNAL_HEADER = HOST_DIR / "eb_internal.h"

BACKENDS = ("emulator", "simulator", "hw")
CC = os.environ.get("UPDLRM_CC", "gcc")
# The project's C rules: C11, every warning an error.
# -march=native: the library runs where it is built (the cache key names the CPU).
HOST_CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O3", "-march=native", "-fPIC", "-shared", "-pthread"]
# SDK kernel build: the SDK's compiler with the tasklet count fixed at build time
# (UPMEM SDK documentation, "Compiling a DPU program").
SDK_KERNEL_FLAGS = ["-O2"]
# The emulator compiles the kernel for this CPU: -O3 vectorizes the per-column
# accumulation loops (same per-column summation order, no FMA: see the emulator).
EMULATOR_KERNEL_OPT = "-O3"


class EngineError(RuntimeError):
    """The engine could not build, load or run (the message says what and where)."""


# ---- building ----------------------------------------------------------------------


def cache_root() -> Path:
    """Where built kernels and host libraries are cached (``UPDLRM_CACHE_DIR`` overrides).

    >>> cache_root().name
    'engine'
    """
    from updlrm.emulator._build import cache_root as updlrm_cache_root

    return updlrm_cache_root("engine")


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise EngineError(f"build failed: {shlex.join(command)}\n{result.stdout}{result.stderr}")


def _sdk_tools() -> tuple[str, str]:
    from updlrm.backends import detect_sdk

    sdk = detect_sdk()
    if not sdk.installed or not sdk.compiler or not sdk.pkg_config:
        problems = "; ".join(sdk.problems) or "set UPMEM_HOME or put dpu-pkg-config on PATH"
        raise EngineError(f"the UPMEM SDK is not installed here ({problems})")
    return sdk.compiler, sdk.pkg_config


def _sanitizer_flags() -> list[str]:
    from updlrm.emulator._build import SANITIZE_FLAGS

    return list(SANITIZE_FLAGS)


def _cpu_signature() -> str:
    """What -march=native sees: builds for another CPU (a shared cache directory) must not be reused."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    keys = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in keys}))


def _toolchain(backend: str) -> dict:
    """Compilers and flags for ``backend``: everything that decides the build's output."""
    if backend == "emulator":
        from updlrm import emulator

        return {
            "kind": "emulator",
            "host_cflags": shlex.split(emulator.host_cflags()),
            "host_libs": shlex.split(emulator.host_libs()),
        }
    compiler, pkg_config = _sdk_tools()
    flags = subprocess.run([pkg_config, "--cflags", "--libs", "dpu"], capture_output=True, text=True)
    if flags.returncode != 0:
        raise EngineError(f"{pkg_config} --cflags --libs dpu failed: {flags.stderr.strip()}")
    return {"kind": "sdk", "dpu_cc": compiler, "host_cflags": shlex.split(flags.stdout), "host_libs": []}


def build(backend: str = "emulator", nr_tasklets: int = 16) -> tuple[Path, Path]:
    """Build (or reuse from the cache) the DPU kernel and the host library for ``backend``.

    Returns ``(kernel_path, host_library_path)``. The cache key is a hash of the C
    sources, the backend's compilers and flags, and ``nr_tasklets``. With
    ``UPDLRM_SANITIZE=1`` both are built with AddressSanitizer + UBSan (load the host
    library into a process started with ``LD_PRELOAD`` of the compiler's libasan).

    >>> kernel, library = build("emulator", nr_tasklets=16)
    >>> kernel.exists() and library.suffix == ".so"
    True
    """
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    check_nr_tasklets(nr_tasklets, EngineError)
    tools = _toolchain(backend)
    sanitize = os.environ.get("UPDLRM_SANITIZE") == "1"
    sanitizer_flags = _sanitizer_flags() if sanitize else []
    digest = hashlib.sha256()
    for path in (KERNEL_SOURCE, ABI_HEADER, *HOST_SOURCES, HOST_HEADER, HOST_INTERNAL_HEADER):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(
        repr(
            (
                sorted(tools.items()),
                nr_tasklets,
                CC,
                HOST_CFLAGS,
                SDK_KERNEL_FLAGS,
                EMULATOR_KERNEL_OPT,
                _cpu_signature(),
                sanitizer_flags,
            )
        ).encode()
    )
    key = f"{backend}-t{nr_tasklets}{'-sanitize' if sanitize else ''}-{digest.hexdigest()[:16]}"
    target = cache_root() / key
    kernel, library = target / "embedding_bag.dpu", target / "libeb_host.so"
    if kernel.exists() and library.exists():
        return kernel, library
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if kernel.exists() and library.exists():
            return kernel, library
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        try:
            if tools["kind"] == "emulator":
                from updlrm import emulator

                emulator.compile_dpu_program(
                    [KERNEL_SOURCE],
                    staging / kernel.name,
                    nr_tasklets=nr_tasklets,
                    include_dirs=[KERNEL_DIR],
                    opt=EMULATOR_KERNEL_OPT,
                    sanitize=sanitize,
                )
            else:
                _run(
                    [
                        tools["dpu_cc"],
                        f"-DNR_TASKLETS={nr_tasklets}",
                        *SDK_KERNEL_FLAGS,
                        f"-I{KERNEL_DIR}",
                        "-o",
                        str(staging / kernel.name),
                        str(KERNEL_SOURCE),
                    ]
                )
            _run(
                [
                    CC,
                    *HOST_CFLAGS,
                    *sanitizer_flags,
                    f"-I{HOST_DIR}",
                    f"-I{KERNEL_DIR}",
                    *tools["host_cflags"],
                    "-o",
                    str(staging / library.name),
                    *map(str, HOST_SOURCES),
                    *tools["host_libs"],
                    "-lm",
                ]
            )
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return kernel, library


_ffi = None
_libraries: dict[Path, object] = {}


def _load_library(path: Path):
    global _ffi
    import cffi

    if _ffi is None:
        text = HOST_HEADER.read_text()
        cdef = text[text.index("/* BEGIN CDEF */") + len("/* BEGIN CDEF */") : text.index("/* END CDEF */")]
        _ffi = cffi.FFI()
        _ffi.cdef(cdef)
    if path not in _libraries:
        _libraries[path] = _ffi.dlopen(str(path))
    return _ffi, _libraries[path]
