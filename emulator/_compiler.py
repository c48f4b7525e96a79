"""Compiler driver: UPMEM SDK C (DPU and host) -> programs for the emulator.

A DPU program becomes a non-PIE executable: the user's ``main`` is renamed
(``objcopy --redefine-sym``) and started once per tasklet by the emulator's
DPU runtime; ``__mram`` variables are placed at the DPU's MRAM address by a
linker-script fragment; a small generated start file records NR_TASKLETS and
stack sizes in a ``.updlrm_config`` section that the host library reads.

Example::

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "k.c").write_text("#include <defs.h>\\nint main(void) { return me(); }\\n")
    >>> compile_dpu_program([d / "k.c"], d / "k", nr_tasklets=4).name
    'k'
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from updlrm.abi import check_nr_tasklets

from . import _build
from ._elf import ElfFile, is_sdk_dpu_binary, sdk_dpu_binary_message

PathLike = str | os.PathLike

# SDK limits (upmem/llvm-project clang/lib/Driver/ToolChains/DPURTE.cpp and
# DPUCharacteristics.h): NR_TASKLETS defaults to 1, at most 24 threads on a
# v1A DPU (updlrm.abi.MAX_TASKLETS, checked by check_nr_tasklets), 1024-byte default
# stack per tasklet, 64 KiB of WRAM.
DEFAULT_NR_TASKLETS = 1
DEFAULT_STACK_SIZE = 1024
WRAM_SIZE = 65536
MRAM_BASE = 0x08000000
MRAM_SIZE = 64 << 20

# DPU code runs on this machine: let gcc use its vector units, but never
# fuse a*b+c into an FMA, which a DPU (software floating point, one rounding
# per operation) cannot do; results then match the DPU and numpy/torch.
_TARGET_FLAGS = (
    ["-march=native", "-ffp-contract=off"] if os.environ.get("UPDLRM_EMU_PORTABLE") != "1" else ["-ffp-contract=off"]
)

SANITIZE_FLAGS = _build.SANITIZE_FLAGS


class CompileError(RuntimeError):
    """A DPU or host program failed to build; ``str()`` has the compiler output."""


def _cc() -> str:
    return os.environ.get("UPDLRM_EMU_CC", "gcc")


def _run(command: Sequence[str], what: str) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"{what} failed:\n$ {shlex.join(command)}\n{result.stdout}{result.stderr}")


def _existing_sources(sources: Sequence[PathLike] | PathLike, kind: str) -> list[Path]:
    # One path or many, as compile_dpu_program and compile_host_program take them;
    # checked here so that a missing file is named, not buried in gcc's output.
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths = [Path(s) for s in sources]
    if not paths:
        raise CompileError(f"no {kind} source given")
    for path in paths:
        if not path.is_file():
            raise CompileError(f"{kind} source not found: {path}")
        with open(path, "rb") as handle:
            if is_sdk_dpu_binary(handle.read(20)):
                raise CompileError(sdk_dpu_binary_message(path))
    return paths


def _normalise_defines(defines: Iterable) -> list[tuple[str, str | None]]:
    out = []
    for item in defines:
        if isinstance(item, (tuple, list)):
            name, value = item
            out.append((str(name), None if value is None else str(value)))
        else:
            text = str(item)
            if text.startswith("-D"):
                text = text[2:]
            name, eq, value = text.partition("=")
            out.append((name, value if eq else None))
    return out


def _define_flags(defines: list[tuple[str, str | None]]) -> list[str]:
    return [f"-D{n}" if v is None else f"-D{n}={v}" for n, v in defines]


def dpu_cflags() -> str:
    """Compiler flags for DPU sources built by hand for the emulator.

    Example::

        >>> "-fno-pie" in dpu_cflags()
        True
    """
    return (
        f"-I{_build.DPU_INCLUDE_DIR} -include attributes.h -fno-pie -std=gnu11 -fno-strict-aliasing "
        "-ffp-contract=off -D__UPDLRM_EMULATOR__=1"
    )


def host_cflags() -> str:
    """Compiler flags for host C code using ``<dpu.h>`` against the emulator.

    Example::

        >>> "include/host" in host_cflags()
        True
    """
    return f"-I{_build.HOST_INCLUDE_DIR}"


def host_libs() -> str:
    """Linker flags for host code: libupdlrm_dpu.so with an rpath to it.

    Example::

        >>> "-lupdlrm_dpu" in host_libs()
        True
    """
    lib = _build.native_dir()
    return f"-L{lib} -Wl,-rpath,{lib} -lupdlrm_dpu -pthread"


def _parse_tasklet_config(defines: list[tuple[str, str | None]], nr_tasklets: int | None) -> tuple[int, list[int]]:
    given = None
    default_stack = DEFAULT_STACK_SIZE
    per_tasklet: dict[int, int] = {}
    for name, value in defines:
        try:
            if name == "NR_TASKLETS":
                given = int(value, 0)
            elif name == "STACK_SIZE_DEFAULT":
                default_stack = int(value, 0)
            elif (m := re.fullmatch(r"STACK_SIZE_TASKLET_(\d+)", name)) is not None:
                per_tasklet[int(m.group(1))] = int(value, 0)
        except (TypeError, ValueError):
            raise CompileError(f"-D{name}={value}: expected an integer") from None
    if nr_tasklets is not None and given is not None and nr_tasklets != given:
        raise CompileError(f"nr_tasklets={nr_tasklets} contradicts -DNR_TASKLETS={given}")
    count = nr_tasklets if nr_tasklets is not None else (given if given is not None else DEFAULT_NR_TASKLETS)
    check_nr_tasklets(count, CompileError)
    stacks = [per_tasklet.get(t, default_stack) for t in range(count)]
    for t, size in enumerate(stacks):
        if size < 0 or size % 8:
            raise CompileError(f"stack size {size} of tasklet {t} must be a non-negative multiple of 8")
    return count, stacks


def _start_file(directory: Path, nr_tasklets: int, stacks: list[int]) -> Path:
    stack_list = ", ".join(str(s) for s in stacks)
    source = directory / "__updlrm_dpu_start.c"
    source.write_text(
        f"""/* generated by updlrm.emulator: program configuration and entry point */
#include "emu_shared.h"
extern int __updlrm_dpu_main(void);
extern void __updlrm_register_main(int (*main_function)(void));
__attribute__((used, section(EMU_CONFIG_SECTION))) static const struct emu_program_config updlrm_config = {{
    EMU_CONFIG_MAGIC, EMU_PROTOCOL_VERSION, {nr_tasklets}, {{ {stack_list} }}
}};
/* DPU_MRAM_HEAP_POINTER: first free MRAM byte, placed after every MRAM variable
 * by the linker script (as the SDK's crt0 defines it) */
__attribute__((section(".mram.heap"), aligned(8), used)) unsigned char __sys_used_mram_end[0];
__attribute__((constructor)) static void updlrm_register(void) {{ __updlrm_register_main(__updlrm_dpu_main); }}
"""
    )
    return source


def _dpu_compile_flags(define_list, include_dirs, opt: str, sanitize: bool, extra_cflags) -> list[str]:
    flags = [
        opt,
        "-g",
        "-std=gnu11",
        "-fno-pie",
        "-fno-strict-aliasing",
        "-fno-common",
        *_TARGET_FLAGS,
        f"-I{_build.DPU_INCLUDE_DIR}",
        *[f"-I{Path(d)}" for d in include_dirs],
        # the DPU attributes (__host, __mram, ...) need no include, as with the SDK's compiler
        "-include",
        "attributes.h",
        "-D__UPDLRM_EMULATOR__=1",
        *_define_flags(define_list),
        *list(extra_cflags),
    ]
    return flags + SANITIZE_FLAGS if sanitize else flags


def _compile_object(source: Path, obj: Path, cflags: list[str]) -> None:
    _run([_cc(), *cflags, "-c", str(source), "-o", str(obj)], f"compiling DPU source {source}")
    # the runtime provides the process entry point and starts main per tasklet
    _run(["objcopy", "--redefine-sym", "main=__updlrm_dpu_main", str(obj)], "renaming main")


def compile_dpu_object(
    source: PathLike,
    output: PathLike,
    *,
    defines: Iterable = (),
    include_dirs: Iterable[PathLike] = (),
    opt: str = "-O2",
    sanitize: bool = False,
    extra_cflags: Iterable[str] = (),
) -> Path:
    """Compile one DPU source to an object for a later ``compile_dpu_program`` link.

    Example::

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "k.c").write_text("int main(void) { return 0; }\\n")
        >>> compile_dpu_object(d / "k.c", d / "k.o").suffix
        '.o'
    """
    source, output = Path(source), Path(output)
    if not source.is_file():
        raise CompileError(f"DPU source not found: {source}")
    define_list = _normalise_defines(defines)
    _compile_object(source, output, _dpu_compile_flags(define_list, include_dirs, opt, sanitize, extra_cflags))
    return output


def check_wram_capacity(path: PathLike) -> dict:
    """WRAM/MRAM use of an emulator DPU executable; raises CompileError on overflow.

    WRAM = .data + .bss + .rodata + sum of the tasklets' stacks, as on the
    DPU (x86-64 object sizes differ slightly from the DPU's 32-bit ABI).

    Example::

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "k.c").write_text("int x[10]; int main(void) { return x[0]; }\\n")
        >>> check_wram_capacity(compile_dpu_program([d / "k.c"], d / "k"))["stacks"]
        1024
    """
    elf = ElfFile.from_path(path)
    config = elf.program_config()
    sizes = {
        name: (elf.section(name).size if elf.section(name) else 0) for name in (".data", ".bss", ".rodata", ".atomic")
    }
    stacks = sum(config["stack_sizes"])
    # atomic bits live in the DPU's separate 256-bit atomic register, not in WRAM
    used = sizes[".data"] + sizes[".bss"] + sizes[".rodata"] + stacks
    report = {
        **{k.strip("."): v for k, v in sizes.items()},
        "stacks": stacks,
        "wram_used": used,
        "heap": max(0, WRAM_SIZE - used),
        "nr_tasklets": config["nr_tasklets"],
        "mram_used": elf.symbol("__sys_used_mram_end").value - MRAM_BASE,
    }
    if used > WRAM_SIZE:
        raise CompileError(
            f"{path}: region `wram' overflowed by {used - WRAM_SIZE} bytes: .data {sizes['.data']} + .bss "
            f"{sizes['.bss']} + .rodata {sizes['.rodata']} + stacks {stacks} "
            f"({config['nr_tasklets']} tasklets) "
            f"= {used} > {WRAM_SIZE} bytes"
        )
    return report


def compile_dpu_program(
    sources: Sequence[PathLike] | PathLike,
    output: PathLike,
    *,
    nr_tasklets: int | None = None,
    defines: Iterable = (),
    include_dirs: Iterable[PathLike] = (),
    opt: str = "-O2",
    sanitize: bool = False,
    extra_cflags: Iterable[str] = (),
) -> Path:
    """Build UPMEM SDK DPU C sources into an emulator DPU executable.

    ``defines`` are ``"NAME=VALUE"`` strings or ``(name, value)`` pairs;
    ``NR_TASKLETS``, ``STACK_SIZE_DEFAULT`` and ``STACK_SIZE_TASKLET_<i>``
    are understood as by the SDK's ``dpu-upmem-dpurte-clang``.  With
    ``sanitize=True`` the DPU code runs under AddressSanitizer and UBSan.

    Example::

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "k.c").write_text("#include <defs.h>\\nint main(void) { return 0; }\\n")
        >>> compile_dpu_program(d / "k.c", d / "k", defines=["NR_TASKLETS=16"]).exists()
        True
    """
    sources = _existing_sources(sources, "DPU")
    output = Path(output)
    native = _build.native_dir(sanitize)
    define_list = _normalise_defines(defines)
    count, stacks = _parse_tasklet_config(define_list, nr_tasklets)
    define_list = [(n, v) for n, v in define_list if n != "NR_TASKLETS"] + [("NR_TASKLETS", str(count))]
    cflags = _dpu_compile_flags(define_list, include_dirs, opt, sanitize, extra_cflags)
    with tempfile.TemporaryDirectory(prefix="updlrm-dpu-") as tmp:
        tmpdir = Path(tmp)
        objects = []
        for index, source in enumerate(sources):
            obj = tmpdir / f"{index}_{source.stem}.o"
            if source.suffix == ".o":
                shutil.copyfile(source, obj)
                _run(["objcopy", "--redefine-sym", "main=__updlrm_dpu_main", str(obj)], "renaming main")
            else:
                _compile_object(source, obj, cflags)
            objects.append(str(obj))
        start = _start_file(tmpdir, count, stacks)
        start_obj = tmpdir / "__updlrm_dpu_start.o"
        cc = _cc()
        _run(
            [cc, "-O2", "-fno-pie", f"-I{_build.RUNTIME_DIR}", "-c", str(start), "-o", str(start_obj)],
            "compiling the start file",
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        link = [
            cc,
            "-no-pie",
            *(SANITIZE_FLAGS if sanitize else []),
            "-o",
            str(output),
            *objects,
            str(start_obj),
            f"-L{native}",
            "-lupdlrm_dpurt",
            f"-Wl,-rpath,{native}",
            f"-Wl,-T,{native / _build.LINKER_SCRIPT}",
            "-lm",
        ]
        result = subprocess.run(link, capture_output=True, text=True)
        if result.returncode != 0:
            text = result.stdout + result.stderr
            if "__updlrm_dpu_main" in text:
                text = "the DPU program has no main() function\n" + text
            raise CompileError(f"linking DPU program {output} failed:\n$ {shlex.join(link)}\n{text}")
    try:
        check_wram_capacity(output)
    except CompileError:
        output.unlink(missing_ok=True)
        raise
    return output


def compile_host_program(
    sources: Sequence[PathLike] | PathLike,
    output: PathLike,
    *,
    defines: Iterable = (),
    include_dirs: Iterable[PathLike] = (),
    sanitize: bool = False,
    extra_libs: Iterable[str] = (),
    opt: str = "-O2",
    extra_cflags: Iterable[str] = (),
) -> Path:
    """Build host C/C++ sources using ``<dpu.h>`` against the emulator.

    The result links libupdlrm_dpu.so with an rpath, so it runs directly.
    ``.cpp``/``.cc`` sources are compiled with g++.

    Example::

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "h.c").write_text("#include <dpu.h>\\nint main(void) { return DPU_OK; }\\n")
        >>> compile_host_program(d / "h.c", d / "h").exists()
        True
    """
    sources = _existing_sources(sources, "host")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    native = _build.native_dir(sanitize)
    cpp = any(s.suffix in (".cpp", ".cc", ".cxx", ".C") for s in sources)
    compiler = os.environ.get("UPDLRM_EMU_CXX", "g++") if cpp else _cc()
    command = [
        compiler,
        opt,
        "-g",
        f"-I{_build.HOST_INCLUDE_DIR}",
        *[f"-I{Path(d)}" for d in include_dirs],
        *_define_flags(_normalise_defines(defines)),
        *list(extra_cflags),
        *(SANITIZE_FLAGS if sanitize else []),
        "-o",
        str(output),
        *[str(s) for s in sources],
        f"-L{native}",
        f"-Wl,-rpath,{native}",
        "-lupdlrm_dpu",
        "-pthread",
        *list(extra_libs),
    ]
    _run(command, f"building host program {output}")
    return output
