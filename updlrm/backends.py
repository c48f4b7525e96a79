"""Which execution backends exist on this machine, and which one ``auto`` picks.

Backends (DESIGN.md, "Backends"):

* ``hw``: real DPUs through the UPMEM SDK's libdpu. Needs the SDK *and* DPU ranks
  (the UPMEM driver exposes one device node ``/dev/dpu_rank<N>`` per rank).
* ``simulator``: the SDK's functional simulator (``dpu_alloc(..., "backend=simulator")``).
  Needs the SDK: the DPU compiler ``dpu-upmem-dpurte-clang`` and ``libdpu``.
* ``emulator``: updlrm's built-in SDK-compatible emulator; needs only a C compiler.
* ``auto``: ``hw`` if present, else ``simulator`` if the SDK is installed, else
  ``emulator``. The SDK counts as installed for ``auto`` only if it is new enough
  (:data:`MIN_SDK_VERSION`, when its version is known) and its DPU compiler passed a
  trial build (:func:`check_dpu_compiler`); otherwise ``auto`` says why and falls back
  to the emulator, and ``hw``/``simulator`` requested by name raise
  :class:`BackendUnavailable` with that reason. The environment variable ``UPDLRM_BACKEND`` (one of the three names)
  overrides what ``auto`` picks, e.g. to keep CI on the emulator on an SDK machine.

The SDK is found through ``UPMEM_HOME`` (``$UPMEM_HOME/bin``, ``$UPMEM_HOME/lib``) or a
``dpu-pkg-config`` on ``PATH``. The emulator can write drop-in shims with the same tool
names (``updlrm emu shims DIR``); those carry a marker and are never taken for the SDK.

Example:
    >>> from updlrm.backends import resolve_backend
    >>> name, reason = resolve_backend("emulator")
    >>> name
    'emulator'
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

BACKENDS = ("hw", "simulator", "emulator")
BACKEND_CHOICES = ("auto",) + BACKENDS
ENV_BACKEND = "UPDLRM_BACKEND"

# Text the emulator's shim scripts carry so that they are never mistaken for the real
# SDK tools (emulator/cli.py `updlrm emu shims`). Matching is case-insensitive.
EMULATOR_SHIM_MARKERS = ("updlrm-emulator-shim", "updlrm emulator shim", "updlrm.emulator")

# The host runtime (host/eb_setup.c) calls dpu_broadcast_to, which the UPMEM SDK has
# since release 2021.3 (SDK release notes / libdpu API documentation).
MIN_SDK_VERSION = (2021, 3)
# A DPU program every working SDK compiles: its headers, runtime and linker are used.
TRIAL_PROGRAM = "#include <defs.h>\nint main(void) { return me() == 0 ? 0 : 1; }\n"
TRIAL_TIMEOUT_S = 120
DPU_COMPILER = "dpu-upmem-dpurte-clang"
DPU_PKG_CONFIG = "dpu-pkg-config"
# The UPMEM kernel driver creates one character device per rank
# (UPMEM SDK documentation, "Installation: driver"; /dev/dpu_rank0, /dev/dpu_rank1, ...).
DPU_RANK_GLOB = "/dev/dpu_rank*"
EMULATOR_WORKERS_ENV = "UPDLRM_EMU_WORKERS"

log = logging.getLogger("updlrm")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


@dataclass
class SdkInfo:
    """What was found of the UPMEM SDK and of DPU hardware (see :func:`detect_sdk`).

    >>> info = detect_sdk(environ={}, path="")
    >>> info.installed, info.hardware
    (False, False)
    """

    installed: bool = False
    how_found: str = ""
    home: str | None = None
    compiler: str | None = None
    pkg_config: str | None = None
    libdpu: str | None = None
    version: str | None = None
    ranks: list[str] = field(default_factory=list)
    ignored_shims: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def hardware(self) -> bool:
        return self.installed and bool(self.ranks)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hardware"] = self.hardware
        return d


def is_emulator_shim(path: str | os.PathLike) -> bool:
    """True if ``path`` is one of the emulator's stand-in SDK tools (it carries a marker).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "dpu-pkg-config"
    >>> _ = p.write_text("#!/bin/sh\\n# updlrm-emulator-shim\\n")
    >>> is_emulator_shim(p)
    True
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16384)
    except OSError:
        return False
    text = head.decode("utf-8", "replace").lower()
    return any(marker in text for marker in EMULATOR_SHIM_MARKERS)


def _which(tool: str, path: str | None, ignored: list[str]) -> str | None:
    """First ``tool`` on ``path`` that is not an emulator shim (shims go to ``ignored``)."""
    search = os.environ.get("PATH", "") if path is None else path
    for directory in search.split(os.pathsep):
        if not directory:
            continue
        candidate = shutil.which(tool, path=directory)
        if candidate is None:
            continue
        if is_emulator_shim(candidate):
            ignored.append(candidate)
            continue
        return candidate
    return None


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _libdpu_from_flags(flags: str) -> str | None:
    for token in flags.split():
        if token.startswith("-L"):
            for name in ("libdpu.so", "libdpu.so.0"):
                candidate = Path(token[2:]) / name
                if candidate.exists():
                    return str(candidate)
    return None


def detect_sdk(*, environ: dict | None = None, path: str | None = None, rank_glob: str = DPU_RANK_GLOB) -> SdkInfo:
    """Look for the UPMEM SDK (``UPMEM_HOME`` or ``dpu-pkg-config`` on ``PATH``) and DPU ranks.

    ``environ``/``path``/``rank_glob`` default to this process's; tests pass their own.

    >>> detect_sdk(environ={"UPMEM_HOME": "/nonexistent"}, path="").problems[0]
    'UPMEM_HOME=/nonexistent has no bin/dpu-upmem-dpurte-clang'
    """
    env = os.environ if environ is None else environ
    info = SdkInfo()
    home = env.get("UPMEM_HOME")
    if home:
        bin_dir = Path(home) / "bin"
        compiler = bin_dir / DPU_COMPILER
        pkg_config = bin_dir / DPU_PKG_CONFIG
        if not compiler.exists():
            info.problems.append(f"UPMEM_HOME={home} has no bin/{DPU_COMPILER}")
        elif is_emulator_shim(compiler):
            info.ignored_shims.append(str(compiler))
            info.problems.append(f"UPMEM_HOME={home} holds updlrm emulator shims, not the SDK")
        else:
            info.home = home
            info.compiler = str(compiler)
            info.how_found = f"UPMEM_HOME={home}"
            if pkg_config.exists():
                info.pkg_config = str(pkg_config)
            for lib_dir in ("lib", "lib64"):
                for name in ("libdpu.so", "libdpu.so.0"):
                    candidate = Path(home) / lib_dir / name
                    if info.libdpu is None and candidate.exists():
                        info.libdpu = str(candidate)
    if info.compiler is None:
        pkg_config_on_path = _which(DPU_PKG_CONFIG, path, info.ignored_shims)
        if pkg_config_on_path:
            info.pkg_config = pkg_config_on_path
            info.how_found = f"{DPU_PKG_CONFIG} on PATH ({pkg_config_on_path})"
            sibling = Path(pkg_config_on_path).parent / DPU_COMPILER
            compiler = (
                str(sibling)
                if sibling.exists() and not is_emulator_shim(sibling)
                else _which(DPU_COMPILER, path, info.ignored_shims)
            )
            info.compiler = compiler
            if compiler is None:
                info.problems.append(f"found {pkg_config_on_path} but no {DPU_COMPILER} next to it or on PATH")
            info.home = str(Path(pkg_config_on_path).parent.parent)
        elif info.ignored_shims and not home:
            info.problems.append("only updlrm emulator shims on PATH, not the SDK")
    if info.pkg_config:
        if info.libdpu is None:
            flags = _run([info.pkg_config, "--libs", "dpu"])
            if flags:
                info.libdpu = _libdpu_from_flags(flags)
        info.version = _run([info.pkg_config, "--modversion", "dpu"]) or None
    if info.compiler and info.libdpu is None:
        info.problems.append("found the DPU compiler but not libdpu (dpu-pkg-config --libs dpu gave no library)")
    info.installed = bool(info.compiler and info.libdpu)
    info.ranks = sorted(glob.glob(rank_glob))
    return info


def emulator_status() -> dict:
    """Whether the built-in emulator can run here: its C compiler and worker processes.

    >>> emulator_status()["available"] in (True, False)
    True
    """
    compiler = shutil.which(os.environ.get("UPDLRM_EMU_CC", "gcc"))
    status = {
        "available": compiler is not None,
        "c_compiler": compiler,
        "workers": None,
        "workers_from": "",
        "detail": "",
    }
    if compiler is None:
        status["detail"] = "no C compiler (gcc, or $UPDLRM_EMU_CC) to build DPU programs for the emulator"
        return status
    try:
        import updlrm.emulator  # noqa: F401  (the package must import for the backend to work)
    except ImportError as e:  # the package itself is broken
        status["available"] = False
        status["detail"] = f"updlrm.emulator failed to import: {e}"
        return status
    # The emulator's host library runs DPUs in up to UPDLRM_EMU_WORKERS worker processes,
    # by default one per online core (emulator/runtime/hostlib.c, profile defaults).
    configured = os.environ.get(EMULATOR_WORKERS_ENV, "").strip()
    if configured.isdigit() and int(configured) > 0:
        status["workers"] = int(configured)
        status["workers_from"] = f"{EMULATOR_WORKERS_ENV}={configured}"
    else:
        status["workers"] = max(1, os.sysconf("SC_NPROCESSORS_ONLN"))
        status["workers_from"] = "one per online core"
    return status


def parse_sdk_version(text: str | None) -> tuple[int, ...] | None:
    """``(year, release, ...)`` from ``dpu-pkg-config --modversion dpu`` output, or None.

    >>> parse_sdk_version("2023.2.0"), parse_sdk_version("unknown")
    ((2023, 2, 0), None)
    """
    if not text:
        return None
    parts = []
    for token in text.strip().split("."):
        digits = "".join(itertools.takewhile(str.isdigit, token))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) if parts else None


def sdk_version_problem(sdk: SdkInfo) -> str | None:
    """Why this SDK is too old for the host runtime, or None (also when its version is unknown).

    >>> sdk_version_problem(SdkInfo(version="2021.1.0"))
    'UPMEM SDK 2021.1.0 is older than 2021.3, which the host runtime needs (dpu_broadcast_to); install 2021.3 or newer'
    """
    version = parse_sdk_version(sdk.version)
    if version is None or version >= MIN_SDK_VERSION:
        return None
    need = ".".join(map(str, MIN_SDK_VERSION))
    return (
        f"UPMEM SDK {sdk.version} is older than {need}, which the host runtime needs (dpu_broadcast_to); "
        f"install {need} or newer"
    )


_trials: dict[tuple, str | None] = {}
_trials_lock = threading.Lock()


def check_dpu_compiler(compiler: str) -> str | None:
    """Compile a one-line DPU program with ``compiler``; None if it worked, else why not (one line).

    The result is cached per compiler file (path, size, modification time) for this process.

    >>> import tempfile, pathlib, os
    >>> cc = pathlib.Path(tempfile.mkdtemp()) / "dpu-upmem-dpurte-clang"
    >>> _ = cc.write_text("#!/bin/sh\\necho 'error while loading shared libraries: libLLVM.so.12' >&2; exit 127\\n")
    >>> os.chmod(cc, 0o755)
    >>> check_dpu_compiler(str(cc))
    'trial build failed (exit 127): error while loading shared libraries: libLLVM.so.12'
    """
    try:
        st = os.stat(compiler)
    except OSError as e:
        return f"cannot run {compiler}: {e.strerror}"
    key = (compiler, st.st_size, st.st_mtime_ns)
    with _trials_lock:
        if key not in _trials:
            _trials[key] = _trial_build(compiler)
        return _trials[key]


def _trial_build(compiler: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="updlrm-dpu-trial-") as tmp:
        source, output = Path(tmp) / "trial.c", Path(tmp) / "trial.dpu"
        source.write_text(TRIAL_PROGRAM)
        try:
            result = subprocess.run(
                [compiler, "-O2", "-o", str(output), str(source)],
                capture_output=True,
                text=True,
                timeout=TRIAL_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return f"trial build did not finish in {TRIAL_TIMEOUT_S} s"
        except OSError as e:
            return f"cannot run {compiler}: {e.strerror}"
        if result.returncode != 0:
            lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
            first = lines[0] if lines else "no message"
            return f"trial build failed (exit {result.returncode}): {first}"
        if not output.is_file() or output.stat().st_size == 0:
            return "trial build exited 0 but wrote no DPU binary"
    return None


def sdk_problem(sdk: SdkInfo) -> str | None:
    """Why an installed SDK cannot build updlrm's DPU programs (too old, compiler broken), or None.

    >>> sdk_problem(SdkInfo(installed=True, compiler="/nonexistent/dpu-upmem-dpurte-clang"))
    'cannot run /nonexistent/dpu-upmem-dpurte-clang: No such file or directory'
    """
    return sdk_version_problem(sdk) or (check_dpu_compiler(sdk.compiler) if sdk.compiler else "no DPU compiler")


_logged: set[tuple[str, str]] = set()


def resolve_backend(name: str = "auto", *, sdk: SdkInfo | None = None, environ: dict | None = None) -> tuple[str, str]:
    """Turn a backend request into ``(backend, reason)``; raise if it cannot run here.

    ``auto`` picks hw, else simulator, else emulator, and says why; the choice is logged
    once (logger ``updlrm``, level INFO).

    >>> resolve_backend("auto", sdk=SdkInfo(), environ={})
    ('emulator', 'no UPMEM SDK found (UPMEM_HOME unset, no dpu-pkg-config on PATH); using the built-in emulator')
    >>> resolve_backend("simulator", sdk=SdkInfo(), environ={})
    Traceback (most recent call last):
    ...
    updlrm.backends.BackendUnavailable: backend 'simulator' needs the UPMEM SDK (UPMEM_HOME or dpu-pkg-config on PATH); none found. Use backend='emulator' to run without it.
    """
    env = os.environ if environ is None else environ
    requested = name
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    forced = env.get(ENV_BACKEND)
    if name == "auto" and forced:
        if forced not in BACKENDS:
            raise ValueError(f"{ENV_BACKEND}={forced!r} is not a backend; choose one of {', '.join(BACKENDS)}")
        name = forced
    if name in ("hw", "simulator") or name == "auto":
        sdk = detect_sdk(environ=environ) if sdk is None else sdk
    # Only an SDK that is installed costs a look at its version and a trial build.
    unusable = sdk_problem(sdk) if name != "emulator" and sdk.installed else None
    if name in ("hw", "simulator") and unusable:
        raise BackendUnavailable(
            f"backend {name!r}: the UPMEM SDK via {sdk.how_found} cannot build DPU programs "
            f"({unusable}). Use backend='emulator' to run without it."
        )
    if name == "hw":
        if not sdk.installed:
            raise BackendUnavailable(_no_sdk_message("hw", sdk))
        if not sdk.ranks:
            raise BackendUnavailable(
                f"backend 'hw' needs DPU ranks, but no {DPU_RANK_GLOB} device exists (is the UPMEM driver loaded?)"
            )
        reason = f"DPU hardware: {len(sdk.ranks)} rank(s) ({sdk.ranks[0]}, ...), SDK via {sdk.how_found}"
    elif name == "simulator":
        if not sdk.installed:
            raise BackendUnavailable(_no_sdk_message("simulator", sdk))
        reason = f"UPMEM SDK functional simulator, SDK via {sdk.how_found}"
    elif name == "emulator":
        reason = "built-in emulator (requested)"
    elif unusable:
        name = "emulator"
        reason = f"auto: UPMEM SDK found via {sdk.how_found} but unusable ({unusable}); using the built-in emulator"
    elif sdk.hardware:
        name = "hw"
        reason = f"auto: found {len(sdk.ranks)} DPU rank(s) and the SDK via {sdk.how_found}"
    elif sdk.installed:
        name = "simulator"
        reason = f"auto: UPMEM SDK found via {sdk.how_found} but no {DPU_RANK_GLOB}; using its functional simulator"
    else:
        name = "emulator"
        why = "; ".join(sdk.problems) if sdk.problems else "UPMEM_HOME unset, no dpu-pkg-config on PATH"
        reason = f"no UPMEM SDK found ({why}); using the built-in emulator"
    if requested == "auto" and forced:
        reason = f"{ENV_BACKEND}={forced}: {reason}"
    if name in ("hw", "simulator") and parse_sdk_version(sdk.version) is None:
        reason += f" (SDK version unknown; the host runtime needs >= {'.'.join(map(str, MIN_SDK_VERSION))})"
    if name == "emulator":
        status = emulator_status()
        if not status["available"]:
            raise BackendUnavailable(f"backend 'emulator' cannot run: {status['detail']}")
    if (name, reason) not in _logged:
        _logged.add((name, reason))
        log.info("updlrm backend: %s (%s)", name, reason)
    return name, reason


def _no_sdk_message(backend: str, sdk: SdkInfo) -> str:
    detail = f" ({'; '.join(sdk.problems)})" if sdk.problems else ""
    return (
        f"backend {backend!r} needs the UPMEM SDK (UPMEM_HOME or dpu-pkg-config on PATH); none found{detail}. "
        "Use backend='emulator' to run without it."
    )


def backends_report() -> dict:
    """Everything ``updlrm info`` prints, as a dict (also ``updlrm info --json``).

    >>> sorted(backends_report())
    ['auto', 'backends', 'emulator', 'sdk']
    """
    sdk = detect_sdk()
    emu = emulator_status()
    unusable = sdk_problem(sdk) if sdk.installed else None
    backends = {
        "hw": {"available": sdk.hardware and not unusable, "why": unusable or _availability("hw", sdk)},
        "simulator": {"available": sdk.installed and not unusable, "why": unusable or _availability("simulator", sdk)},
        "emulator": {"available": emu["available"], "why": "built in" if emu["available"] else emu["detail"]},
    }
    try:
        chosen, reason = resolve_backend("auto", sdk=sdk)
    except (ValueError, BackendUnavailable) as e:
        chosen, reason = None, str(e)
    sdk_dict = sdk.to_dict()
    sdk_dict["usable"] = sdk.installed and not unusable
    sdk_dict["unusable_because"] = unusable
    return {"auto": {"backend": chosen, "reason": reason}, "backends": backends, "sdk": sdk_dict, "emulator": emu}


def _availability(backend: str, sdk: SdkInfo) -> str:
    if not sdk.installed:
        return _no_sdk_message(backend, sdk)
    if backend == "hw" and not sdk.ranks:
        return f"SDK found but no {DPU_RANK_GLOB} (no DPUs or driver not loaded)"
    return f"SDK via {sdk.how_found}" + (f", {len(sdk.ranks)} rank(s)" if backend == "hw" else "")


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info_command(as_json: bool) -> None:
    """Say which backends exist here and why (SDK compiler, libdpu, DPU ranks, emulator workers)."""
    report = backends_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    sdk, emu = report["sdk"], report["emulator"]
    click.echo("updlrm backends")
    for name in BACKENDS:
        b = report["backends"][name]
        mark = "yes" if b["available"] else "no "
        click.echo(f"  {name:<10} {mark}  {b['why']}")
    auto = report["auto"]
    click.echo(f"  {'auto':<10} ->   {auto['backend']}: {auto['reason']}")
    click.echo("UPMEM SDK")
    click.echo(f"  found via      {sdk['how_found'] or '-'}")
    click.echo(f"  version        {sdk['version'] or '-'}")
    click.echo(f"  DPU compiler   {sdk['compiler'] or '-'}  ({DPU_COMPILER})")
    click.echo(f"  libdpu         {sdk['libdpu'] or '-'}")
    if sdk["installed"]:
        click.echo(
            f"  usable         {'yes (trial DPU build passed)' if sdk['usable'] else 'no: ' + sdk['unusable_because']}"
        )
    click.echo(
        f"  DPU ranks      {len(sdk['ranks'])}"
        + (
            f"  ({', '.join(sdk['ranks'][:4])}{', ...' if len(sdk['ranks']) > 4 else ''})"
            if sdk["ranks"]
            else f"  (no {DPU_RANK_GLOB})"
        )
    )
    for shim in sdk["ignored_shims"]:
        click.echo(f"  ignored        {shim} (updlrm emulator shim, not the SDK)")
    for problem in sdk["problems"]:
        click.echo(f"  note           {problem}")
    click.echo("Emulator")
    click.echo(f"  C compiler     {emu['c_compiler'] or '-'}")
    click.echo(
        f"  workers        {emu['workers'] if emu['workers'] is not None else '-'} "
        f"(processes that run emulated DPUs in parallel; {emu['workers_from'] or '-'})"
    )
    if emu["detail"]:
        click.echo(f"  note           {emu['detail']}")
