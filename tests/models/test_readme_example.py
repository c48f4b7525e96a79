"""The README's DLRM example runs as printed (a user copies it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def dlrm_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if "from updlrm.models import DLRM" in b]
    assert len(found) == 1, "README should hold one DLRM example"
    return found[0]


def test_the_readme_dlrm_example_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", dlrm_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "UPDLRM_BACKEND": "emulator"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    probs = re.findall(r"[-+]?\d*\.\d+", lines[0].split("tensor([")[1].split("]")[0])
    assert len(probs) == 4 and all(0 < float(p) < 1 for p in probs)
    assert float(lines[0].split()[-1]) < 1e-5  # torch vs DPU sparse part
    assert "DPU->CPU pull" in proc.stdout
    assert (tmp_path / "dlrm.pt").is_file()
