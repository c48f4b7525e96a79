"""SDK conformance of the Python host API: the SDK's Python host programs run
unmodified on the emulator.

``sdk_programs/python_*/host/*.py`` import only the SDK's ``dpu`` package;
they are run in a fresh interpreter with ``PYTHONPATH=$(updlrm emu python-path)``,
the documented opt-in. Without it ``import dpu`` fails (the package never
shadows anything by default), and a real SDK's ``dpu`` further down the path
wins over the emulator's.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from updlrm.emulator.sdk_python import python_path

_spec = importlib.util.spec_from_file_location("sdk_harness", Path(__file__).with_name("sdk_harness.py"))
sdk_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sdk_harness)

PROGRAMS = sdk_harness.SDK_PROGRAMS


def _python(script: Path, *args, env_extra: dict | None = None, pythonpath: str | None = None, cwd=None):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=sdk_harness.RUN_TIMEOUT_SECONDS,
    )


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    return sdk_harness.ProgramBuilder(tmp_path_factory.mktemp("sdk_python"))


@pytest.mark.parametrize("nr_dpus, nr_tasklets", [(1, 1), (4, 16), (5, 11)])
def test_python_checksum_host_runs_unmodified(builder, nr_dpus, nr_tasklets):
    """The SDK-style checksum host (scatter, broadcast by attribute, gather,
    per-DPU sets, log, async exec) passes its own check on the emulator."""
    dpu = builder.dpu("python_checksum", nr_tasklets=nr_tasklets)
    result = _python(
        PROGRAMS / "python_checksum" / "host" / "checksum_host.py",
        dpu,
        nr_dpus,
        nr_tasklets,
        nr_dpus,
        pythonpath=str(python_path()),
    )
    assert result.returncode == 0, sdk_harness.describe(result)
    assert f"python_checksum: {nr_dpus} DPUs x {nr_tasklets} tasklets OK" in result.stdout


@pytest.mark.parametrize("nr_ranks, profile_base", [(1, None), (2, None), (3, "backend=simulator")])
def test_python_api_host_runs_unmodified(nr_ranks, profile_base):
    """Source builds, ranks, offsets/sizes, skipped DPUs, symbols, logs, call()
    and DpuError; on the simulator topology too (ranks of one DPU)."""
    extra = {"UPMEM_PROFILE_BASE": profile_base} if profile_base else {}
    result = _python(
        PROGRAMS / "python_api" / "host" / "api_host.py",
        PROGRAMS / "python_api" / "dpu" / "scale.c",
        nr_ranks,
        pythonpath=str(python_path()),
        env_extra=extra,
    )
    assert result.returncode == 0, sdk_harness.describe(result)
    nr_dpus = nr_ranks if profile_base else 64 * nr_ranks
    assert f"python_api: {nr_dpus} DPUs in {nr_ranks} ranks OK" in result.stdout, result.stdout


def test_dpu_package_is_opt_in(tmp_path):
    """Without the python-path folder, `import dpu` fails as it would without
    the SDK; `updlrm emu python-path` prints that folder."""
    script = tmp_path / "probe.py"
    script.write_text("import dpu\n")
    result = _python(script)
    assert result.returncode != 0 and "No module named 'dpu'" in result.stderr
    cli = subprocess.run(
        [sys.executable, "-c", "from updlrm.cli import main; main()", "emu", "python-path"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and Path(cli.stdout.strip()) == python_path()
    assert (python_path() / "dpu" / "__init__.py").is_file()


def test_a_real_sdk_package_wins(tmp_path):
    """A real SDK's `dpu` later on sys.path is imported instead of the
    emulator's; UPDLRM_EMU_PYTHON_DPU=1 forces the emulator's."""
    sdk = tmp_path / "sdk_site"
    (sdk / "dpu").mkdir(parents=True)
    (sdk / "dpu" / "__init__.py").write_text("WHO = 'sdk'\n")
    script = tmp_path / "probe.py"
    script.write_text("import dpu\nprint(getattr(dpu, 'WHO', 'emulator'), dpu.__name__)\n")
    path = os.pathsep.join([str(python_path()), str(sdk)])
    result = _python(script, pythonpath=path)
    assert result.stdout.split() == ["sdk", "dpu"], sdk_harness.describe(result)
    result = _python(script, pythonpath=path, env_extra={"UPDLRM_EMU_PYTHON_DPU": "1"})
    assert result.stdout.split() == ["emulator", "dpu"], sdk_harness.describe(result)


def test_python_host_sees_a_dpu_fault(builder, tmp_path):
    """A DPU fault reaches the Python host as DpuError naming the fault."""
    dpu = builder.dpu("misuse", ["faults.c"], nr_tasklets=4)
    script = tmp_path / "fault.py"
    script.write_text(
        "import struct\nfrom dpu import DpuSet, DpuError\n"
        "with DpuSet(nr_dpus=2, binary=__import__('sys').argv[1]) as s:\n"
        "    s.faulting_tasklet = bytearray(struct.pack('<I', 1))\n"
        "    s.scenario = bytearray(struct.pack('<I', 4))\n"  # SCENARIO_HALT, misuse/scenarios.h
        "    try:\n        s.exec()\n    except DpuError as e:\n        print('FAULT', e)\n"
    )
    scenarios = (PROGRAMS / "misuse" / "scenarios.h").read_text()
    assert "SCENARIO_HALT = 4" in scenarios
    result = _python(script, dpu, pythonpath=str(python_path()))
    assert result.returncode == 0 and "FAULT dpu is in fault" in result.stdout and "halt()" in result.stdout, (
        sdk_harness.describe(result)
    )


@pytest.mark.sdk
def test_python_checksum_host_on_the_upmem_sdk(tmp_path):
    """The same Python host with the real SDK's `dpu` package on its functional
    simulator (skipped without the SDK)."""
    from updlrm.backends import detect_sdk

    info = detect_sdk()
    reason = sdk_harness.sdk_skip_reason(info)
    if reason is not None:
        pytest.skip(reason)
    site = sorted(Path(info.home).glob("local/lib/python3*/dist-packages")) if info.home else []
    if not site:
        pytest.skip(f"the SDK at {info.home} ships no Python package (local/lib/python3*/dist-packages)")
    builder = sdk_harness.SdkProgramBuilder(tmp_path, info)
    dpu = builder.dpu("python_checksum", nr_tasklets=16)
    env = sdk_harness.sdk_run_environment(info)
    result = _python(
        PROGRAMS / "python_checksum" / "host" / "checksum_host.py",
        dpu,
        4,
        16,
        4,
        pythonpath=str(site[-1]),
        env_extra={k: env[k] for k in ("UPMEM_PROFILE_BASE", "LD_LIBRARY_PATH") if k in env},
    )
    assert result.returncode == 0, sdk_harness.describe(result)
