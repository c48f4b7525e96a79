"""Build-and-run harness for the SDK conformance programs in ``sdk_programs/``.

The test modules load this file by path (not as a package import), so it works
whatever the layout of ``tests/`` becomes. Programs are compiled once per
(program, sources, NR_TASKLETS, defines) and cached for the whole module that
owns the :class:`ProgramBuilder` (emulator) or :class:`SdkProgramBuilder`
(the real UPMEM SDK, run on its functional simulator).

Example::

    >>> from pathlib import Path
    >>> builder = ProgramBuilder(Path("/tmp/sdk_build"))   # doctest: +SKIP
    >>> dpu = builder.dpu("checksum", nr_tasklets=16)      # doctest: +SKIP
    >>> host = builder.host("checksum")                    # doctest: +SKIP
    >>> run_host(host, dpu, 4, 16)                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

SDK_PROGRAMS = Path(__file__).resolve().parent / "sdk_programs"

# Generous: a deadlocked or runaway emulator run must fail the test, not hang CI.
RUN_TIMEOUT_SECONDS = 180


def program_sources(program: str, side: str) -> list[Path]:
    """All C files of ``sdk_programs/<program>/<side>/`` (side: "dpu" or "host").

    Example::

        >>> [p.name for p in program_sources("checksum", "dpu")]
        ['checksum.c']
    """
    sources = sorted((SDK_PROGRAMS / program / side).glob("*.c"))
    if not sources:
        raise FileNotFoundError(f"no {side} sources for SDK program {program!r}")
    return sources


class ProgramBuilder:
    """Compiles SDK programs with ``updlrm.emulator`` into ``root``, once each.

    Example::

        >>> builder = ProgramBuilder(Path("/tmp/sdk_build"))   # doctest: +SKIP
        >>> builder.dpu("misuse", ["faults.c"], nr_tasklets=8)  # doctest: +SKIP
        PosixPath('/tmp/sdk_build/misuse-dpu-....')
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._built: dict[tuple, Path] = {}

    def _output(self, key: tuple) -> Path:
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
        return self.root / f"{key[0]}-{key[1]}-{digest}"

    def dpu(
        self,
        program: str,
        sources: list[str] | None = None,
        *,
        nr_tasklets: int | None = 16,
        defines: tuple[str, ...] = (),
        sanitize: bool = False,
    ) -> Path:
        """Build (or reuse) the DPU binary of ``program``."""
        from updlrm.emulator import compile_dpu_program

        paths = self._paths(program, "dpu", sources)
        key = (program, "dpu", tuple(map(str, paths)), nr_tasklets, tuple(defines), sanitize)
        if key not in self._built:
            output = self._output(key)
            self._built[key] = Path(
                compile_dpu_program(paths, output, nr_tasklets=nr_tasklets, defines=tuple(defines), sanitize=sanitize)
            )
        return self._built[key]

    def host(self, program: str, sources: list[str] | None = None, *, sanitize: bool = False) -> Path:
        """Build (or reuse) the host binary of ``program``."""
        from updlrm.emulator import compile_host_program

        paths = self._paths(program, "host", sources)
        key = (program, "host", tuple(map(str, paths)), sanitize)
        if key not in self._built:
            output = self._output(key)
            self._built[key] = Path(compile_host_program(paths, output, sanitize=sanitize))
        return self._built[key]

    @staticmethod
    def _paths(program: str, side: str, sources: list[str] | None) -> list[Path]:
        if sources is None:
            return program_sources(program, side)
        return [SDK_PROGRAMS / program / side / name for name in sources]


def run_host(
    host: Path, *args: object, timeout: float = RUN_TIMEOUT_SECONDS, cwd: Path | None = None, env: dict | None = None
):
    """Run a host program with ``args`` (and ``env``, default this process's) and return the CompletedProcess.

    Example::

        >>> result = run_host(Path("/bin/echo"), "hi")
        >>> result.stdout
        'hi\\n'
    """
    return subprocess.run(
        [str(host), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def describe(result: subprocess.CompletedProcess) -> str:
    """Exit status and output of a finished host run, for assertion messages.

    Example::

        >>> describe(run_host(Path("/bin/echo"), "hi")).splitlines()[0]
        'exit status 0'
    """
    return f"exit status {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


# ---- the real UPMEM SDK ---------------------------------------------------------------

# The host programs call dpu_alloc(n, NULL, ...); libdpu merges UPMEM_PROFILE_BASE into
# every allocation profile, and a NULL profile is an empty one (UPMEM SDK docs,
# "Controlling the execution of DPUs from host applications"). The SDK's own
# `source upmem_env.sh simulator` selects the simulator this same way, so the
# unmodified programs run on the functional simulator even on a machine with DPUs.
SIMULATOR_PROFILE_ENV = "UPMEM_PROFILE_BASE"
SIMULATOR_PROFILE = "backend=simulator"

# The DPU flags the task (and PrIM's Makefiles) use with the SDK's compiler.
SDK_DPU_OPT = "-O2"
# Host: the programs are C11 with GNU libc extras (as under the emulator). No -Werror:
# a warning from an SDK release's own headers must not read as a conformance failure.
SDK_HOST_FLAGS = ("-std=gnu11", "-O2", "-g", "-Wall", "-Wextra")


def sdk_skip_reason(info) -> str | None:
    """Why the SDK variants cannot run here (``None`` if they can), from ``detect_sdk()``'s findings.

    Example::

        >>> from updlrm.backends import SdkInfo
        >>> sdk_skip_reason(SdkInfo())
        'UPMEM SDK not found (UPMEM_HOME unset, no dpu-pkg-config on PATH); the SDK variant needs dpu-upmem-dpurte-clang, dpu-pkg-config and libdpu'
    """
    if info.installed and info.compiler and info.pkg_config:
        return None
    if info.installed:
        why = f"found libdpu and {info.compiler} but no dpu-pkg-config for the host flags"
    else:
        why = "; ".join(info.problems) or "UPMEM_HOME unset, no dpu-pkg-config on PATH"
    return f"UPMEM SDK not found ({why}); the SDK variant needs dpu-upmem-dpurte-clang, dpu-pkg-config and libdpu"


def sdk_dpu_command(compiler: str, sources: list[Path], output: Path, nr_tasklets: int | None) -> list[str]:
    """Command line that builds DPU ``sources`` with the SDK's ``dpu-upmem-dpurte-clang``.

    ``nr_tasklets=None`` leaves NR_TASKLETS unset, so the SDK's default (1) applies.

    Example::

        >>> sdk_dpu_command("dpu-upmem-dpurte-clang", [Path("a.c")], Path("a.dpu"), 16)
        ['dpu-upmem-dpurte-clang', '-DNR_TASKLETS=16', '-O2', '-o', 'a.dpu', 'a.c']
    """
    tasklets = [] if nr_tasklets is None else [f"-DNR_TASKLETS={nr_tasklets}"]
    return [compiler, *tasklets, SDK_DPU_OPT, "-o", str(output), *map(str, sources)]


def sdk_host_command(sources: list[Path], output: Path, dpu_flags: str, cc: str = "gcc") -> list[str]:
    """Command line that builds host ``sources`` against libdpu.

    ``dpu_flags`` is the output of ``dpu-pkg-config --cflags --libs dpu``; libraries go
    after the sources so that the linker resolves the programs' libdpu calls.

    Example::

        >>> sdk_host_command([Path("h.c")], Path("h"), "-I/sdk/include/dpu -L/sdk/lib -ldpu")
        ['gcc', '-std=gnu11', '-O2', '-g', '-Wall', '-Wextra', '-o', 'h', 'h.c', '-I/sdk/include/dpu', '-L/sdk/lib', '-ldpu']
    """
    return [cc, *SDK_HOST_FLAGS, "-o", str(output), *map(str, sources), *shlex.split(dpu_flags)]


def sdk_run_environment(info, environ: dict | None = None) -> dict:
    """Environment for a host program on the SDK's functional simulator.

    Forces ``backend=simulator`` and puts libdpu's directory on ``LD_LIBRARY_PATH``
    (``dpu-pkg-config`` gives ``-L`` but no rpath) and the SDK's ``bin`` on ``PATH``.

    Example::

        >>> from updlrm.backends import SdkInfo
        >>> info = SdkInfo(installed=True, home="/sdk", libdpu="/sdk/lib/libdpu.so")
        >>> env = sdk_run_environment(info, {"PATH": "/usr/bin"})
        >>> env["UPMEM_PROFILE_BASE"], env["LD_LIBRARY_PATH"], env["PATH"]
        ('backend=simulator', '/sdk/lib', '/sdk/bin:/usr/bin')
    """
    env = dict(os.environ if environ is None else environ)
    env[SIMULATOR_PROFILE_ENV] = SIMULATOR_PROFILE
    if info.libdpu:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(Path(info.libdpu).parent), env.get("LD_LIBRARY_PATH")])
        )
    if info.home:
        env["PATH"] = os.pathsep.join(filter(None, [str(Path(info.home) / "bin"), env.get("PATH")]))
    return env


class SdkProgramBuilder(ProgramBuilder):
    """Compiles SDK programs with the real UPMEM SDK into ``root``, once each.

    ``info`` is ``updlrm.backends.detect_sdk()``'s result and must describe an
    installed SDK (see :func:`sdk_skip_reason`).

    Example::

        >>> from updlrm.backends import detect_sdk
        >>> builder = SdkProgramBuilder(Path("/tmp/sdk_real"), detect_sdk())  # doctest: +SKIP
        >>> builder.dpu("checksum", nr_tasklets=16)                           # doctest: +SKIP
        PosixPath('/tmp/sdk_real/checksum-dpu-....')
    """

    def __init__(self, root: Path, info) -> None:
        reason = sdk_skip_reason(info)
        if reason is not None:
            raise RuntimeError(reason)
        super().__init__(root)
        self.info = info
        self._dpu_flags: str | None = None

    def dpu_flags(self) -> str:
        """``dpu-pkg-config --cflags --libs dpu``, asked once."""
        if self._dpu_flags is None:
            self._dpu_flags = _checked([self.info.pkg_config, "--cflags", "--libs", "dpu"]).stdout.strip()
        return self._dpu_flags

    def dpu(self, program: str, sources: list[str] | None = None, *, nr_tasklets: int | None = 16) -> Path:
        """Build (or reuse) the DPU binary of ``program`` with ``dpu-upmem-dpurte-clang``."""
        paths = self._paths(program, "dpu", sources)
        key = (program, "dpu", "sdk", tuple(map(str, paths)), nr_tasklets)
        if key not in self._built:
            output = self._output(key)
            _checked(sdk_dpu_command(self.info.compiler, paths, output, nr_tasklets))
            self._built[key] = output
        return self._built[key]

    def host(self, program: str, sources: list[str] | None = None) -> Path:
        """Build (or reuse) the host binary of ``program`` against libdpu."""
        paths = self._paths(program, "host", sources)
        key = (program, "host", "sdk", tuple(map(str, paths)))
        if key not in self._built:
            output = self._output(key)
            _checked(sdk_host_command(paths, output, self.dpu_flags()))
            self._built[key] = output
        return self._built[key]

    def run(self, host: Path, *args: object, timeout: float = RUN_TIMEOUT_SECONDS):
        """Run ``host`` on the SDK's functional simulator (see :func:`sdk_run_environment`)."""
        return run_host(host, *args, timeout=timeout, env=sdk_run_environment(self.info))


def _checked(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"$ {shlex.join(command)}\n{describe(result)}")
    return result
