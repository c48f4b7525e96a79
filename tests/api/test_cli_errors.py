"""Wrong usages of every command: one line saying what is wrong, exit 2 (usage) or 1 (failure), no traceback.

The README's own CLI examples are run as written by tests/docs/test_readme.py.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from updlrm.cli import main
from updlrm.partitioner.workloads import criteo_like_tables
from updlrm.plan import uniform_plan
from updlrm.specs import Topology

README = Path(__file__).resolve().parents[2] / "README.md"
NO_SDK_ENV = {"UPMEM_HOME": None, "UPDLRM_BACKEND": None, "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    uniform_plan(criteo_like_tables(dim=8, max_rows=100), Topology(4)).save(d / "p100.json")
    uniform_plan(criteo_like_tables(dim=8, max_rows=100), Topology(4)).save(d / "nonpz.json")
    (d / "nonpz.npz").unlink()
    (d / "bad.json").write_text("{not json")
    (d / "big.json").write_text(json.dumps([{"name": "big", "num_embeddings": 300_000, "embedding_dim": 64}]))
    (d / "two.json").write_text(
        json.dumps(
            [
                {"name": "a", "num_embeddings": 50, "embedding_dim": 8},
                {"name": "b", "num_embeddings": 40, "embedding_dim": 4},
            ]
        )
    )
    (d / "notspec.json").write_text(json.dumps([{"name": "a", "rows": 3}]))
    (d / "bad.c").write_text("int main( {\n")
    (d / "garbage.npz").write_bytes(b"garbage")
    (d / "garbage.pt").write_bytes(b"garbage")
    (d / "adir").mkdir()
    return d


SMALL = ["--batch-size", "4", "--batches", "1", "--max-rows", "100", "--dim", "8", "--dpus", "4"]
SYNTH = ["--synthetic", "--batch-size", "8", "--batches", "1"]

# (id, arguments with {d} for the fixture directory and {readme}, exit code, what the one line says)
CASES = [
    # updlrm itself
    ("no-such-command", "nosuch", 2, r"No such command 'nosuch'"),
    ("unknown-option", "--frobnicate", 2, r"No such option '--frobnicate'. \(see 'updlrm --help'\)"),
    # demo
    ("demo-hw-without-sdk", "demo --backend hw", 1, r"backend 'hw' needs the UPMEM SDK .*Use backend='emulator'"),
    ("demo-simulator-without-sdk", "demo --backend simulator", 1, r"backend 'simulator' needs the UPMEM SDK"),
    ("demo-unknown-backend", "demo --backend gpu", 2, r"Invalid value for '--backend': 'gpu' is not one of"),
    ("demo-unknown-profile", "demo --profile upmem-9000", 2, r"Invalid value for '--profile': 'upmem-9000'"),
    ("demo-plan-not-json", "demo --plan {readme}", 1, r"README.md: not a JSON plan"),
    (
        "demo-plan-missing",
        "demo --plan {d}/nope.json",
        2,
        r"Invalid value for '--plan': File .*nope.json' does not exist",
    ),
    ("demo-plan-directory", "demo --plan {d}/adir", 2, r"Invalid value for '--plan': File .*adir' is a directory"),
    (
        "demo-plan-other-tables",
        "demo --plan {d}/p100.json --max-rows 200 --dim 8",
        1,
        r"the plan was built for other tables: table C1: plan has 100 rows, the module has 200",
    ),
    (
        "demo-plan-without-npz",
        "demo --plan {d}/nonpz.json --max-rows 100 --dim 8",
        1,
        r"nonpz.npz: the plan's row arrays cannot be read .*copy both files together",
    ),
    ("demo-batch-size-zero", "demo --batch-size 0", 2, r"'--batch-size': 0 is not in the range x>=1"),
    ("demo-batch-size-text", "demo --batch-size many", 2, r"'--batch-size': 'many' is not a valid integer"),
    ("demo-tasklets-25", "demo --tasklets 25", 2, r"'--tasklets': 25 is not in the range 1<=x<=24"),
    ("demo-negative-pooling", "demo --pooling -1", 2, r"'--pooling': -1.0 is not in the range x>=0"),
    ("demo-row-format", "demo --row-format fp16", 2, r"'--row-format': 'fp16' is not one of"),
    (
        "demo-bad-env-backend",
        "demo " + " ".join(SMALL),
        1,
        r"UPDLRM_BACKEND='gpu' is not a backend",
        {"UPDLRM_BACKEND": "gpu"},
    ),
    # plan build
    (
        "build-no-trace",
        "plan build --tables criteo --dpus 4 -o {d}/o.json",
        2,
        r"give exactly one of --trace FILE or --synthetic",
    ),
    (
        "build-two-traces",
        "plan build --tables criteo --dpus 4 -o {d}/o.json --synthetic --trace {d}/garbage.npz",
        2,
        r"give exactly one of",
    ),
    ("build-no-dpus", "plan build --tables criteo --synthetic -o {d}/o.json", 2, r"Missing option '--dpus'"),
    (
        "build-zero-dpus",
        "plan build --tables criteo --synthetic --dpus 0 -o {d}/o.json",
        2,
        r"'--dpus': 0 is not in the range",
    ),
    (
        "build-tables-missing",
        "plan build --tables {d}/nope.json --synthetic --dpus 4 -o {d}/o.json",
        2,
        r"neither 'criteo' nor an existing JSON file",
    ),
    (
        "build-tables-not-json",
        "plan build --tables {d}/bad.json --synthetic --dpus 4 -o {d}/o.json",
        2,
        r"bad.json: not JSON",
    ),
    (
        "build-tables-bad-spec",
        "plan build --tables {d}/notspec.json --synthetic --dpus 4 -o {d}/o.json",
        2,
        r"notspec.json: .*unexpected keyword argument 'rows'",
    ),
    (
        "build-tables-directory",
        "plan build --tables {d}/adir --synthetic --dpus 4 -o {d}/o.json",
        2,
        r"adir: neither 'criteo' nor an existing JSON file",
    ),
    (
        "build-output-dir-missing",
        "plan build --tables criteo --synthetic --dpus 4 -o {d}/nodir/o.json",
        2,
        r"--output: .*nodir/o.json: its directory does not exist",
    ),
    (
        "build-profile",
        "plan build --tables criteo --synthetic --dpus 4 -o {d}/o.json --profile x",
        2,
        r"'--profile': 'x' is not one of",
    ),
    (
        "build-cooccurrence",
        "plan build --tables criteo --synthetic --dpus 4 -o {d}/o.json --co-occurrence 2",
        2,
        r"'--co-occurrence': 2.0 is not in the range 0<=x<=1",
    ),
    (
        "build-holdout-one",
        "plan build --tables criteo --synthetic --dpus 4 -o {d}/o.json --holdout 1",
        2,
        r"'--holdout': 1.0 is not in the range 0<=x<1",
    ),
    (
        "build-holdout-negative",
        "plan build --tables criteo --synthetic --dpus 4 -o {d}/o.json --holdout -0.5",
        2,
        r"'--holdout': -0.5 is not in the range 0<=x<1",
    ),
    (
        "build-graph-choice",
        "plan build --tables criteo --synthetic --dpus 4 -o {d}/o.json --graph kahypar",
        2,
        r"'--graph': 'kahypar' is not one of",
    ),
    (
        "build-trace-readme",
        "plan build --tables criteo --max-rows 100 --trace {readme} --dpus 4 -o {d}/o.json",
        1,
        r"README.md: not a Criteo TSV",
    ),
    (
        "build-trace-garbage-npz",
        "plan build --tables criteo --trace {d}/garbage.npz --dpus 4 -o {d}/o.json",
        1,
        r"garbage.npz: not an .npz archive",
    ),
    (
        "build-trace-garbage-pt",
        "plan build --tables criteo --trace {d}/garbage.pt --dpus 4 -o {d}/o.json",
        1,
        r"garbage.pt: not a torch file",
    ),
    (
        "build-does-not-fit",
        "plan build --tables {d}/big.json --dpus 1 -o {d}/o.json --quiet " + " ".join(SYNTH),
        1,
        r"table big needs 76.8 MB",
    ),
    # plan show / evaluate
    ("show-readme", "plan show {readme}", 1, r"README.md: not a JSON plan"),
    ("show-missing", "plan show {d}/nope.json", 2, r"'PLAN_PATH': File .*nope.json' does not exist"),
    (
        "show-png-dir-missing",
        "plan show {d}/p100.json --png {d}/nodir/x.png",
        2,
        r"--png: .*its directory does not exist",
    ),
    ("evaluate-readme-plan", "plan evaluate {readme} --synthetic", 1, r"README.md: not a JSON plan"),
    ("evaluate-trace-readme", "plan evaluate {d}/p100.json --trace {readme}", 1, r"README.md: not a Criteo TSV"),
    ("evaluate-no-trace", "plan evaluate {d}/p100.json", 2, r"give exactly one of --trace FILE or --synthetic"),
    (
        "evaluate-json-dir-missing",
        "plan evaluate {d}/p100.json --synthetic --json {d}/nodir/r.json",
        2,
        r"--json: .*its directory does not exist",
    ),
    # bench, info, emu
    ("bench-profile", "bench --profile x", 2, r"'--profile': 'x' is not one of"),
    ("info-extra-argument", "info now", 2, r"Got unexpected extra argument \(now\)"),
    (
        "emu-run-missing-source",
        "emu run --dpu {d}/nope.c --host {d}/nope.c",
        2,
        r"'--dpu': File .*nope.c' does not exist",
    ),
    (
        "emu-build-tasklets",
        "emu build --dpu {d}/bad.c --tasklets 0",
        2,
        r"'--tasklets': 0 is not in the range 1<=x<=24",
    ),
    ("emu-shims-unwritable", "emu shims /proc/updlrm-shims", 1, r"/proc/updlrm-shims: No such file or directory"),
]


def _invoke(args: str, files: Path, env: dict | None = None):
    argv = args.format(d=files, readme=README).split()
    return CliRunner().invoke(main, argv, prog_name="updlrm", env={**NO_SDK_ENV, **(env or {})})


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_wrong_usage_gives_one_line_and_exit_code(case, files):
    _, args, code, message, *env = case
    result = _invoke(args, files, env[0] if env else None)
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{result.output}"
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output


def test_compile_errors_show_the_compiler_output_after_one_line(files):
    result = _invoke("emu build --dpu {d}/bad.c --output-dir {d}/out", files)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    first, *rest = result.stderr.splitlines()
    assert first == f"Error: compiling DPU source {files}/bad.c failed:"
    assert any("bad.c:1" in line and "error" in line for line in rest)  # the compiler's own diagnostics follow
    assert "Traceback" not in result.output


def test_hypergraph_without_mtkahypar_says_what_to_install(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "mtkahypar", None)  # import mtkahypar -> ImportError, as when not installed
    result = _invoke(
        "plan build --tables criteo --max-rows 100 --dpus 4 --graph hypergraph -o {d}/h.json " + " ".join(SYNTH), files
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        "Error: graph='hypergraph' needs Mt-KaHyPar, which is not installed: pip install "
        "'updlrm[hypergraph]' (x86-64 Linux wheels), or use graph='graph' (METIS)"
    )
    assert not (files / "h.json").exists()


def test_a_bug_keeps_its_traceback_and_debug_shows_user_errors(files, monkeypatch):
    import updlrm.backends

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(updlrm.backends, "backends_report", broken)
    result = CliRunner().invoke(main, ["info"])
    assert isinstance(result.exception, RuntimeError)  # not turned into a user message
    result = _invoke("plan show {readme}", files, {"UPDLRM_DEBUG": "1"})
    assert type(result.exception).__name__ == "PlanError"


@pytest.mark.parametrize(
    "args, code",
    [(["demo", "--backend", "hw"], 1), (["demo", "--profile", "upmem-9000"], 2), (["plan", "show", str(README)], 1)],
)
def test_installed_entry_point(args, code):
    """The console script itself (not CliRunner): exit code, one line on stderr, nothing on stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("UPMEM_HOME", "UPDLRM_BACKEND")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"
    result = subprocess.run(
        [sys.executable, "-c", "from updlrm.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == code
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ")


@pytest.mark.parametrize("args", [[], ["plan"], ["emu"]])
def test_a_group_without_a_command_shows_its_help(args):
    result = CliRunner().invoke(main, args, prog_name="updlrm")
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith(f"Usage: updlrm {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Error:" not in result.output and "Commands:" in result.output
