"""Files stay small enough to live in (issue 12): every Python file at most 600 lines, every
C file of the host runtime, the kernels and the emulator at most 900, unless it is listed
below with the reason; and ``partitioner.placement.build_plan`` stays the wiring of the
planner's stages (under 60 lines).
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON_LIMIT = 600
C_LIMIT = 900
C_FOLDERS = ("host", "dpu_kernels", "emulator")
BUILD_PLAN_LIMIT = 60

#: Files allowed over their limit: path (from the repository root) -> the stated reason.
EXCEPTIONS: dict[str, str] = {}


def _tracked(*patterns: str) -> list[Path]:
    """The repository's files matching `patterns` (git's list, so the venv and build caches are out)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(ROOT / name for name in listed if (ROOT / name).is_file())


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8", errors="replace").splitlines())


def _over(paths: list[Path], limit: int) -> dict[str, int]:
    sizes = {path.relative_to(ROOT).as_posix(): _lines(path) for path in paths}
    return {name: n for name, n in sizes.items() if n > limit and name not in EXCEPTIONS}


def test_python_files_are_at_most_600_lines() -> None:
    paths = _tracked("*.py")
    assert len(paths) > 50, "git ls-files found too few Python files; is this a checkout?"
    assert _over(paths, PYTHON_LIMIT) == {}, (
        f"split these by role (or list them in EXCEPTIONS with the reason); limit {PYTHON_LIMIT} lines"
    )


def test_c_files_are_at_most_900_lines() -> None:
    paths = [p for folder in C_FOLDERS for p in _tracked(f"{folder}/*.c", f"{folder}/*.h")]
    assert paths, "no C files found under host/, dpu_kernels/, emulator/"
    assert _over(paths, C_LIMIT) == {}, (
        f"split these by role (or list them in EXCEPTIONS with the reason); limit {C_LIMIT} lines"
    )


def test_every_exception_is_real() -> None:
    """An entry names a file that exists and is still over its limit, with a reason."""
    for name, reason in EXCEPTIONS.items():
        path = ROOT / name
        assert path.is_file(), f"{name} is listed in EXCEPTIONS but does not exist; delete its entry"
        limit = PYTHON_LIMIT if path.suffix == ".py" else C_LIMIT
        assert _lines(path) > limit, f"{name} is within {limit} lines now; delete its EXCEPTIONS entry"
        assert reason.strip(), f"{name}: say why it may stay over the limit"


def test_the_size_check_sees_an_oversized_file(tmp_path: Path) -> None:
    """The check itself: a file over the limit is reported, one at the limit is not."""
    big, fine = tmp_path / "big.py", tmp_path / "fine.py"
    big.write_text("x = 1\n" * (PYTHON_LIMIT + 1))
    fine.write_text("x = 1\n" * PYTHON_LIMIT)
    assert [_lines(big) > PYTHON_LIMIT, _lines(fine) > PYTHON_LIMIT] == [True, False]


def test_build_plan_is_the_wiring_only() -> None:
    source = (ROOT / "partitioner" / "placement.py").read_text(encoding="utf-8")
    functions = [
        node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef) and node.name == "build_plan"
    ]
    assert len(functions) == 1, "partitioner/placement.py must define build_plan once"
    (build_plan,) = functions
    docstring = ast.get_docstring(build_plan)
    body = build_plan.body[1:] if docstring is not None else build_plan.body
    assert body, "build_plan has no body"
    body_lines = body[-1].end_lineno - body[0].lineno + 1  # type: ignore[operator]
    assert body_lines < BUILD_PLAN_LIMIT, (
        f"build_plan's body is {body_lines} lines; keep it the wiring of the stages (< {BUILD_PLAN_LIMIT}), "
        "moving work into partitioner's stage modules"
    )
