"""The project's C sources (host runtime, DPU kernel, emulator runtime and headers):
formatted by the repository's .clang-format, and every emulator translation unit
compiled into one of the native libraries.

The format check needs clang-format 19 (Debian: ``apt-get install clang-format-19``;
``CLANG_FORMAT=/path/to/clang-format`` picks another binary of that version): the
style inserts braces on every ``if`` (InsertBraces, clang-format >= 15), and other
major versions lay out a few constructs differently, so the check skips rather
than report their differences.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from updlrm.emulator import _build

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "emulator" / "runtime"
FORMAT_MAJOR = 19


# Every C source the project writes. tests/emulator/sdk_programs is left as written:
# those programs are SDK-style user code the emulator must accept in any layout.
FORMATTED_DIRS = ("host", "dpu_kernels", "emulator/runtime", "emulator/include")


def _c_files() -> list[Path]:
    return sorted(p for p in RUNTIME.iterdir() if p.suffix in (".c", ".h"))


def _formatted_files() -> list[Path]:
    return sorted(p for d in FORMATTED_DIRS for p in (REPO / d).rglob("*") if p.suffix in (".c", ".h"))


def _clang_format() -> tuple[str | None, str]:
    """(binary, why not) for a clang-format of FORMAT_MAJOR."""
    candidates = [os.environ.get("CLANG_FORMAT"), f"clang-format-{FORMAT_MAJOR}", "clang-format"]
    found = []
    for name in filter(None, candidates):
        binary = shutil.which(name)
        if not binary:
            continue
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"version (\d+)\.", out)
        if match and int(match.group(1)) == FORMAT_MAJOR:
            return binary, ""
        found.append(f"{binary} ({out.strip() or 'no version'})")
    seen = "; found " + ", ".join(found) if found else ""
    return None, (
        f"clang-format {FORMAT_MAJOR} not found (apt-get install clang-format-{FORMAT_MAJOR}, "
        f"or set CLANG_FORMAT){seen}"
    )


def test_project_c_files_are_formatted():
    binary, why = _clang_format()
    if binary is None:
        pytest.skip(why)
    assert (REPO / ".clang-format").is_file()
    unformatted = []
    for path in _formatted_files():
        result = subprocess.run(
            [binary, "--style=file", "--dry-run", "--Werror", str(path)], capture_output=True, text=True, cwd=REPO
        )
        if result.returncode != 0:
            unformatted.append(f"{path.relative_to(REPO)}:\n{result.stderr[:2000]}")
    assert not unformatted, f"not formatted by .clang-format; run: {binary} -i FILE for each file below\n" + "\n".join(
        unformatted
    )


def test_every_runtime_unit_is_built():
    """A .c file in emulator/runtime that no library compiles is dead or forgotten."""
    built = set(_build.HOST_SOURCES) | set(_build.DPU_RUNTIME_SOURCES)
    units = {p.name for p in _c_files() if p.suffix == ".c"}
    assert units == built, f"compiled but missing: {sorted(built - units)}; not compiled: {sorted(units - built)}"
