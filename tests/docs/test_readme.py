"""README.md's fenced examples run as written.

* ```` ```python ```` blocks run in a fresh interpreter (a temporary working directory).
* ```` ```bash ```` blocks: every ``updlrm ...`` command (lines split at ``&&``, ``#``
  comments dropped, ``~`` and ``$VAR`` expanded with ``HOME`` set to a temporary
  directory) runs in order in one temporary directory per block, and must exit 0.
  The other commands are deliberately not run, each for the reason in ``NOT_RUN``
  (an unknown command fails the test, so a new README command gets a decision).
* A block preceded by ``<!-- readme-test: skip REASON -->`` is not run (the reason is
  shown); ``RUN_ELSEWHERE`` lists single commands that need a user's project and are run,
  as written, by the test it names.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*skip\s+(?P<skip>.*?)\s*-->\s*\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.S | re.M
)
NOT_RUN = {
    "pip": "installs: the test runs inside the environment README's commands create",
    "python": "README command 2 runs the test suite itself",
    "make": "builds a user's SDK project with the shims; the shims are run",
}
RUN_ELSEWHERE = {
    # command prefix: (why not here, the test that runs it, what that test's source must contain)
    "updlrm emu run --dpu dpu/task.c": (
        "needs an SDK-style project (dpu/task.c, host/app.c)",
        "tests/emulator/test_emu_cli.py",
        "README",
    ),
    "PYTHONPATH=$(updlrm emu python-path)": (
        "needs a user's SDK Python host (host.py)",
        "tests/emulator/test_sdk_python.py",
        "python_path",
    ),
}
TIMEOUT_S = 900


def _blocks() -> list[tuple[int, str, str, str | None]]:
    text = README.read_text()
    out = []
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("body")) + 1
        out.append((line, m.group("lang"), m.group("body"), m.group("skip")))
    return out


BLOCKS = _blocks()


def _updlrm() -> list[str]:
    script = Path(sys.executable).with_name("updlrm")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from updlrm.cli import main; main()"]


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("UPDLRM_BACKEND",)}
    env.update(HOME=str(home), PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


def _expand(word: str, env: dict) -> str:
    if word.startswith("~"):
        word = env["HOME"] + word[1:]
    return re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), word)


def _commands(body: str, env: dict) -> list[tuple[str, list[str] | None, str]]:
    """(command text, argv to run or None, why not run) for each ``&&`` part of each line."""
    out = []
    for raw in body.splitlines():
        parts, current = [], []
        for w in shlex.split(raw, comments=True) + ["&&"]:
            if w == "&&":
                if current:
                    parts.append(current)
                current = []
            else:
                current.append(w)
        for part in parts:
            text = " ".join(part)
            while re.match(r"^[A-Za-z_]+=", part[0]):  # VAR=value prefixes (not run: see NOT_RUN)
                part = part[1:]
            argv = [_expand(w, env) for w in part]
            elsewhere = next(
                (
                    f"{why}: {test} runs it"
                    for prefix, (why, test, _) in RUN_ELSEWHERE.items()
                    if text.startswith(prefix)
                ),
                None,
            )
            if elsewhere is not None:
                out.append((text, None, elsewhere))
            elif argv[0] == "updlrm":
                out.append((text, argv, ""))
            elif argv[0] in NOT_RUN:
                out.append((text, None, NOT_RUN[argv[0]]))
            else:
                raise AssertionError(f"README line {raw!r}: {argv[0]!r} is neither run nor listed in NOT_RUN")
    return out


def test_readme_has_the_examples_this_test_runs():
    langs = [b[1] for b in BLOCKS]
    assert langs.count("python") >= 1 and langs.count("bash") >= 3, langs


@pytest.mark.slow
@pytest.mark.parametrize("line, lang, body, skip", BLOCKS, ids=[f"README.md:{b[0]}-{b[1]}" for b in BLOCKS])
def test_readme_block_runs_as_written(line, lang, body, skip, tmp_path):
    if skip:
        pytest.skip(f"README.md:{line} marked illustrative: {skip}")
    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)
    if lang == "python":
        result = subprocess.run(
            [sys.executable, "-c", body],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, f"README.md:{line} python block failed:\n{result.stdout}\n{result.stderr}"
        return
    assert lang == "bash", f"README.md:{line}: fenced block of unknown language {lang!r}"
    for text, argv, _why in _commands(body, env):
        if argv is None:
            continue  # NOT_RUN / KNOWN_BROKEN: see test_commands_not_run_are_accounted_for
        result = subprocess.run(
            _updlrm() + argv[1:],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (
            f"README.md:{line}: `{text}` exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        assert "Traceback" not in result.stderr
        if argv[1] == "demo":
            assert "PASS" in result.stdout


def test_commands_run_elsewhere_are_in_the_readme_and_their_tests_read_it():
    """A RUN_ELSEWHERE command is still in the README, and the test named for it runs it."""
    text = README.read_text()
    for prefix, (_, test, marker) in RUN_ELSEWHERE.items():
        assert prefix in text, f"{prefix!r} is no longer in README.md: drop it from RUN_ELSEWHERE"
        assert marker in (README.parent / test).read_text(), f"{test} does not run README's {prefix!r} line"


def test_commands_not_run_are_accounted_for():
    env = _env(Path("/nonexistent-home"))
    commands = [c for _, lang, body, skip in BLOCKS if lang == "bash" and not skip for c in _commands(body, env)]
    assert sum(argv is not None for _, argv, _ in commands) >= 5
    for text, argv, why in commands:
        assert argv is not None or why, text


NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(\[[^\]`]+\])?`")


def _fault_table_rows() -> list[tuple[str, list[tuple[str, str, str]]]]:
    text = README.read_text()
    start = text.index("## Bad input and faults")
    end = text.index("\n## ", start + 1)
    rows = [line for line in text[start:end].splitlines() if line.startswith("| ") and not line.startswith("| case")]
    return [
        (row.split(" | ")[0].strip("| "), [m.groups() for m in NODE_ID.finditer(row.split(" | ")[-1])]) for row in rows
    ]


def test_every_test_the_fault_table_names_exists():
    """Each row of README's "Bad input and faults" table names tests; each is a test function
    in that file (a parametrized id must appear in the file too)."""
    root = README.parent
    rows = _fault_table_rows()
    assert len(rows) >= 20
    for case, node_ids in rows:
        assert node_ids, f"README row {case!r} names no test (`tests/...py::test_name`)"
        for path, name, param in node_ids:
            source = root / path
            assert source.is_file(), f"row {case!r}: {path} does not exist"
            code = source.read_text()
            assert re.search(rf"^(?:async )?def {name}\(", code, re.M), f"row {case!r}: no test {name} in {path}"
            if param:
                assert f'"{param[1:-1]}"' in code, f"row {case!r}: {path}::{name} has no case {param}"
