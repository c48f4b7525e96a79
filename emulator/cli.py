"""``updlrm emu``: build and run UPMEM SDK programs on the emulator.

Commands::

    updlrm emu build --dpu A.c [--dpu B.c] --host H.c [-D NAME=VALUE] [--tasklets N] [--output-dir DIR]
                     [-l LIB] [-L DIR] [--host-flag FLAG] [--dpu-flag FLAG] [--dpu-output PATH] [--host-output PATH]
    updlrm emu run   (the same options) [-- host arguments]
    updlrm emu shims DIR         # dpu-upmem-dpurte-clang / dpu-pkg-config drop-ins
    updlrm emu python-path       # folder with the SDK-compatible Python package `dpu`

Binaries follow the SDK Makefile convention: ``bin/dpu_code`` and
``bin/host_code`` under the current directory (``--output-dir``,
``--dpu-output``, ``--host-output`` move them), so a host that opens
``./bin/dpu_code`` finds it.  ``run`` passes the arguments after ``--`` to the
host program; without any, the host gets the DPU binary's path as its only
argument.  Either way ``UPDLRM_EMU_DPU_BINARY`` holds that path.

Example::

    $ updlrm emu run --dpu dpu/task.c --host host/app.c -D BL=10 --tasklets 16 -- ./bin/dpu_code 4
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import click

# Text that marks the shims so that updlrm's SDK detection (updlrm/backends.py,
# EMULATOR_SHIM_MARKERS) never mistakes them for the real SDK tools.
SHIM_MARKER = "updlrm-emulator-shim"

# The SDK Makefiles' binary names (SDK examples, PrIM: bin/dpu_code, bin/host_code).
DPU_BINARY_NAME = "dpu_code"
HOST_BINARY_NAME = "host_code"


def _defines(defines: tuple[str, ...], tasklets: int | None) -> list[str]:
    out = list(defines)
    if tasklets is not None:
        out = [d for d in out if not d.startswith("NR_TASKLETS=")] + [f"NR_TASKLETS={tasklets}"]
    return out


def _build(options: dict):
    from . import CompileError, compile_dpu_program, compile_host_program

    output_dir = Path(options["output_dir"])
    dpu_output = Path(options["dpu_output"]) if options["dpu_output"] else output_dir / DPU_BINARY_NAME
    host_output = Path(options["host_output"]) if options["host_output"] else output_dir / HOST_BINARY_NAME
    all_defines = _defines(options["defines"], options["tasklets"])
    libs = [f"-L{d}" for d in options["lib_dirs"]] + [f"-l{name}" for name in options["libs"]]
    try:
        dpu = compile_dpu_program(
            [Path(s) for s in options["dpu_sources"]],
            dpu_output,
            defines=all_defines,
            include_dirs=options["include_dirs"],
            sanitize=options["sanitize"],
            extra_cflags=options["dpu_flags"],
        )
        host = None
        if options["host_sources"]:
            host = compile_host_program(
                [Path(s) for s in options["host_sources"]],
                host_output,
                defines=all_defines,
                include_dirs=options["include_dirs"],
                sanitize=options["sanitize"],
                extra_cflags=options["host_flags"],
                extra_libs=libs,
            )
    except CompileError as error:
        raise click.ClickException(str(error)) from None
    return dpu, host


_common = [
    click.option(
        "--dpu",
        "dpu_sources",
        multiple=True,
        required=True,
        type=click.Path(exists=True, dir_okay=False),
        help="DPU C source (repeatable).",
    ),
    click.option(
        "-D",
        "defines",
        multiple=True,
        metavar="NAME=VALUE",
        help="Preprocessor definition for DPU and host code (repeatable).",
    ),
    click.option(
        "--tasklets",
        type=click.IntRange(1, 24),
        default=None,
        help="NR_TASKLETS (default: -D NR_TASKLETS or 1, as the SDK).",
    ),
    click.option(
        "-I", "include_dirs", multiple=True, type=click.Path(file_okay=False), help="Include directory (repeatable)."
    ),
    click.option(
        "-l", "libs", multiple=True, metavar="LIB", help="Link the host program with libLIB, e.g. -lm (repeatable)."
    ),
    click.option(
        "-L",
        "lib_dirs",
        multiple=True,
        type=click.Path(file_okay=False),
        metavar="DIR",
        help="Library directory for -l (repeatable).",
    ),
    click.option(
        "--host-flag",
        "host_flags",
        multiple=True,
        metavar="FLAG",
        help="Extra host compiler/linker flag, e.g. --host-flag=-fopenmp (repeatable).",
    ),
    click.option(
        "--dpu-flag",
        "dpu_flags",
        multiple=True,
        metavar="FLAG",
        help="Extra DPU compiler flag, e.g. --dpu-flag=-DSTACK_SIZE_DEFAULT=256 (repeatable).",
    ),
    click.option(
        "--output-dir",
        type=click.Path(file_okay=False),
        default="bin",
        show_default=True,
        help=f"Where {DPU_BINARY_NAME} and {HOST_BINARY_NAME} are written (the SDK Makefile convention).",
    ),
    click.option(
        "--dpu-output",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="PATH",
        help=f"Path of the DPU binary (default: OUTPUT_DIR/{DPU_BINARY_NAME}), e.g. the path a host opens.",
    ),
    click.option(
        "--host-output",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="PATH",
        help=f"Path of the host binary (default: OUTPUT_DIR/{HOST_BINARY_NAME}).",
    ),
    click.option("--sanitize", is_flag=True, help="Build with AddressSanitizer + UBSan."),
]


def _with_common(function):
    for option in reversed(_common):
        function = option(function)
    return function


@click.group("emu")
def emu_group() -> None:
    """Build and run UPMEM SDK programs on the built-in emulator."""


@emu_group.command("build")
@_with_common
@click.option(
    "--host",
    "host_sources",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Host C/C++ source using <dpu.h> (repeatable).",
)
def build_command(**options):
    """Build DPU (and host) sources for the emulator."""
    dpu, host = _build(options)
    click.echo(f"DPU binary:  {dpu}")
    if host:
        click.echo(f"host binary: {host}")


@emu_group.command("run", context_settings={"ignore_unknown_options": True})
@_with_common
@click.option(
    "--host",
    "host_sources",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Host C/C++ source using <dpu.h> (repeatable).",
)
@click.argument("host_args", nargs=-1, type=click.UNPROCESSED)
def run_command(host_args, **options):
    """Build DPU and host sources, then run the host program (exit status: the host's)."""
    dpu, host = _build(options)
    args = list(host_args) if host_args else [str(dpu)]
    env = dict(os.environ, UPDLRM_EMU_DPU_BINARY=str(dpu))
    result = subprocess.run([str(host.resolve()), *args], env=env)
    sys.exit(result.returncode)


@emu_group.command("python-path")
def python_path_command():
    """Print the folder holding the SDK-compatible Python host package ``dpu``.

    Put it on PYTHONPATH to run the SDK's Python host programs unmodified:
    PYTHONPATH=$(updlrm emu python-path) python3 host.py.  Only then is ``dpu``
    importable, so a real SDK's package is never shadowed.
    """
    from .sdk_python import python_path

    click.echo(str(python_path()))


_CLANG_SHIM = """#!{python}
# {marker}: drop-in for the UPMEM SDK's dpu-upmem-dpurte-clang that builds for
# the updlrm emulator with the system C compiler.  Not the real SDK.
import sys
from updlrm.emulator.cli import clang_shim_main
sys.exit(clang_shim_main(sys.argv[1:]))
"""

_PKG_CONFIG_SHIM = """#!{python}
# {marker}: drop-in for the UPMEM SDK's dpu-pkg-config; prints the flags that
# build host code against the updlrm emulator's libdpu.  Not the real SDK.
import sys
from updlrm.emulator.cli import pkg_config_shim_main
sys.exit(pkg_config_shim_main(sys.argv[1:]))
"""


@emu_group.command("shims")
@click.argument("directory", type=click.Path(file_okay=False))
def shims_command(directory):
    """Write dpu-upmem-dpurte-clang and dpu-pkg-config drop-ins into DIRECTORY.

    With DIRECTORY first on PATH, an SDK project's unmodified Makefile builds
    for the emulator.  The scripts are marked as emulator shims, so updlrm's
    SDK detection ignores them.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name, template in (("dpu-upmem-dpurte-clang", _CLANG_SHIM), ("dpu-pkg-config", _PKG_CONFIG_SHIM)):
        path = target / name
        path.write_text(template.format(python=sys.executable, marker=SHIM_MARKER))
        path.chmod(0o755)
    click.echo(f"wrote emulator shims to {target}; use PATH={target}:$PATH")


def clang_shim_main(argv: list[str]) -> int:
    """``dpu-upmem-dpurte-clang`` for the emulator: clang-style arguments.

    Understands ``-o``, ``-c``, ``-D``, ``-I``, ``-O*``, ``-g``, ``-W*``,
    ``-std=``, ``-f*``, ``-fsanitize=...``, ``.c`` sources and ``.o``
    objects; DPU-only flags of the SDK (``-mcpu``, ``-flto*``, ``-pg``) are
    accepted and ignored.

    Example::

        >>> clang_shim_main(["--version"])  # doctest: +ELLIPSIS
        updlrm-emulator-shim dpu-upmem-dpurte-clang (...)
        0
    """
    from . import CompileError, compile_dpu_program
    from ._compiler import compile_dpu_object

    if not argv or argv[0] in ("--version", "-v"):
        from ._compiler import _cc

        print(f"{SHIM_MARKER} dpu-upmem-dpurte-clang (updlrm emulator, {_cc()})")
        return 0
    output = None
    compile_only = False
    sources: list[str] = []
    defines: list[str] = []
    include_dirs: list[str] = []
    cflags: list[str] = []
    opt = "-O2"
    sanitize = False
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            output = next(it, None)
        elif arg.startswith("-o") and len(arg) > 2:
            output = arg[2:]
        elif arg == "-c":
            compile_only = True
        elif arg == "-D":
            defines.append(next(it, ""))
        elif arg.startswith("-D"):
            defines.append(arg[2:])
        elif arg == "-I":
            include_dirs.append(next(it, "."))
        elif arg.startswith("-I"):
            include_dirs.append(arg[2:])
        elif arg.startswith("-O"):
            opt = arg
        elif arg.startswith("-fsanitize"):
            sanitize = True
        elif arg.startswith(("-mcpu", "-flto", "-pg", "-target", "--target")):
            continue
        elif arg.startswith("-"):
            cflags.append(arg)
        else:
            sources.append(arg)
    if not sources:
        print("dpu-upmem-dpurte-clang (updlrm emulator): no input files", file=sys.stderr)
        return 1
    try:
        if compile_only:
            if len(sources) > 1 and output:
                print("cannot specify -o with -c and multiple files", file=sys.stderr)
                return 1
            for source in sources:
                obj = output or str(Path(source).with_suffix(".o").name)
                compile_dpu_object(
                    source,
                    obj,
                    defines=defines,
                    include_dirs=include_dirs,
                    opt=opt,
                    sanitize=sanitize,
                    extra_cflags=cflags,
                )
            return 0
        compile_dpu_program(
            sources,
            output or "a.out",
            defines=defines,
            include_dirs=include_dirs,
            opt=opt,
            sanitize=sanitize,
            extra_cflags=cflags,
        )
    except CompileError as error:
        print(str(error), file=sys.stderr)
        return 1
    return 0


def pkg_config_shim_main(argv: list[str]) -> int:
    """``dpu-pkg-config`` for the emulator (``--cflags``, ``--libs``, ``--modversion``).

    Example::

        >>> pkg_config_shim_main(["--modversion", "dpu"])
        2025.1.0-updlrm-emulator-shim
        0
    """
    from ._compiler import host_cflags, host_libs

    known = {"--cflags", "--libs", "--modversion", "--version", "--exists", "--static"}
    flags = [a for a in argv if a.startswith("-")]
    packages = [a for a in argv if not a.startswith("-")]
    unknown = [f for f in flags if f not in known]
    if unknown:
        print(f"dpu-pkg-config ({SHIM_MARKER}): unsupported option(s): {' '.join(unknown)}", file=sys.stderr)
        return 1
    if any(p != "dpu" for p in packages):
        print(f"dpu-pkg-config ({SHIM_MARKER}): only the 'dpu' package exists", file=sys.stderr)
        return 1
    if "--version" in flags or "--modversion" in flags:
        print(f"2025.1.0-{SHIM_MARKER}")
        return 0
    out = []
    if "--cflags" in flags:
        out.append(host_cflags())
    if "--libs" in flags:
        out.append(host_libs())
    if out:
        print(" ".join(shlex.split(" ".join(out))))
    return 0
