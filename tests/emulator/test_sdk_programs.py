"""SDK conformance: programs written for the public UPMEM SDK, run on the emulator.

Every program under ``sdk_programs/<name>/`` is plain SDK code (DPU side: only
the SDK runtime headers; host side: only ``<dpu.h>``) whose host checks its
own results against a CPU computation and exits non-zero on any mismatch.
Here each one is built with ``updlrm.emulator.compile_dpu_program`` /
``compile_host_program`` for several NR_TASKLETS (1, 11, 16, 24: single
tasklet, odd, the usual 16, the SDK maximum) and DPU counts, and run. Two more
tests build the same sources the way SDK users do: through ``updlrm emu run``
and through an unmodified PrIM-style Makefile with ``updlrm emu shims``.

Every case also has an ``sdk`` variant (marker ``sdk``): where
``updlrm.backends.detect_sdk()`` finds the real UPMEM SDK, the same sources are
built with ``dpu-upmem-dpurte-clang`` and ``gcc $(dpu-pkg-config --cflags --libs
dpu)`` and run on the SDK's functional simulator with the same arguments and the
same check; elsewhere those variants are skipped with detect_sdk()'s reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from updlrm.backends import SdkInfo, detect_sdk

_spec = importlib.util.spec_from_file_location("sdk_harness", Path(__file__).with_name("sdk_harness.py"))
sdk_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sdk_harness)

TASKLET_COUNTS = (1, 11, 16, 24)

# program -> DPU counts to run it on. Odd counts leave uneven slices; 70 and
# 130 DPUs span 2 and 3 ranks of 64, 2560 is a whole 40-rank server.
PROGRAM_DPU_COUNTS = {
    "checksum": (1, 4),
    "vector_add": (1, 3, 16),
    "reduction": (5,),
    "histogram": (2,),
    "handshake_pipeline": (3,),
    "semaphore_pc": (2,),
    "mem_alloc": (2,),
    "printf_log": (3,),
    "async_launch": (70,),
    "broadcast": (5,),
    "multi_rank": (130, 2560),  # 2560 DPUs = 40 ranks, a full UPMEM server
    "seqread_unaligned": (2,),
    "compact": (3,),
    "log_topology": (3, 70),
    "scatter_gather": (1, 5),
}

CASES = [
    pytest.param(program, nr_dpus, nr_tasklets, id=f"{program}-{nr_dpus}dpus-{nr_tasklets}tasklets")
    for program, dpu_counts in PROGRAM_DPU_COUNTS.items()
    for nr_dpus in dpu_counts
    for nr_tasklets in TASKLET_COUNTS
]


_SDK = detect_sdk()
_SDK_SKIP_REASON = sdk_harness.sdk_skip_reason(_SDK)

# Programs whose check encodes the hardware's 64-DPU ranks: the SDK's functional
# simulator has ranks of 1 DPU (UPMEM SDK docs, "Controlling the execution of DPUs
# from host applications"), so there they would fail for the geometry, not the API.
SIMULATOR_UNSUITED = {
    "multi_rank": "multi_rank checks 64-DPU ranks and dpu_alloc_ranks(2) == 128 DPUs; "
    "the SDK functional simulator's ranks hold 1 DPU",
}


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    return sdk_harness.ProgramBuilder(tmp_path_factory.mktemp("sdk_programs"))


@pytest.fixture(scope="module")
def sdk_builder(tmp_path_factory):
    if _SDK_SKIP_REASON is not None:
        pytest.skip(_SDK_SKIP_REASON)
    return sdk_harness.SdkProgramBuilder(tmp_path_factory.mktemp("sdk_programs_real_sdk"), _SDK)


def _assert_program_passed(program: str, result) -> None:
    assert result.returncode == 0, sdk_harness.describe(result)
    assert f"{program}: " in result.stdout and "OK" in result.stdout, sdk_harness.describe(result)
    # the corpus keeps every SDK DMA rule: no relaxed-DMA warning in the default mode
    assert "updlrm emulator: warning" not in result.stderr, sdk_harness.describe(result)


def _seed(nr_dpus: int, nr_tasklets: int) -> int:
    return 1000 * nr_tasklets + nr_dpus


@pytest.mark.parametrize("program, nr_dpus, nr_tasklets", CASES)
def test_sdk_program(builder, program, nr_dpus, nr_tasklets):
    """The program's own CPU cross-check passes on the emulator."""
    dpu_binary = builder.dpu(program, nr_tasklets=nr_tasklets)
    host_binary = builder.host(program)
    result = sdk_harness.run_host(host_binary, dpu_binary, nr_dpus, nr_tasklets, _seed(nr_dpus, nr_tasklets))
    _assert_program_passed(program, result)


@pytest.mark.sdk
@pytest.mark.parametrize("program, nr_dpus, nr_tasklets", CASES)
def test_sdk_program_on_upmem_sdk(sdk_builder, program, nr_dpus, nr_tasklets):
    """The same case, built with the real SDK and run on its functional simulator."""
    if program in SIMULATOR_UNSUITED:
        pytest.skip(SIMULATOR_UNSUITED[program])
    dpu_binary = sdk_builder.dpu(program, nr_tasklets=nr_tasklets)
    host_binary = sdk_builder.host(program)
    result = sdk_builder.run(host_binary, dpu_binary, nr_dpus, nr_tasklets, _seed(nr_dpus, nr_tasklets))
    _assert_program_passed(program, result)


@pytest.mark.parametrize("how", ["UPMEM_PROFILE_BASE", "dpu_alloc profile"])
def test_simulator_topology_one_dpu_per_rank(builder, tmp_path, how):
    """As on the SDK's functional simulator, "backend=simulator" gives one DPU
    per rank (dpu_alloc(10) = 10 ranks) with log headers === DPU#0x<rank>0000 ===;
    log_topology checks it when UPMEM_PROFILE_BASE says simulator. The profile
    string of dpu_alloc itself works too (a host written for the simulator)."""
    dpu_binary = builder.dpu("log_topology", nr_tasklets=4)
    env = dict(os.environ, UPMEM_PROFILE_BASE="backend=simulator")
    if how == "UPMEM_PROFILE_BASE":
        result = sdk_harness.run_host(builder.host("log_topology"), dpu_binary, 10, 4, 1, env=env)
        _assert_program_passed("log_topology", result)
        assert "10 DPUs in 10 ranks" in result.stdout
        return
    host = tmp_path / "sim_alloc.c"
    host.write_text(r"""
#include <dpu.h>
#include <stdio.h>
int main(int argc, char **argv) {
    struct dpu_set_t set, dpu;
    uint32_t ranks, dpus;
    DPU_ASSERT(dpu_alloc(10, "backend=simulator", &set));
    DPU_ASSERT(dpu_get_nr_ranks(set, &ranks));
    DPU_ASSERT(dpu_get_nr_dpus(set, &dpus));
    DPU_ASSERT(dpu_load(set, argv[1], NULL));
    DPU_ASSERT(dpu_launch(set, DPU_SYNCHRONOUS));
    printf("%u ranks %u dpus\n", ranks, dpus);
    DPU_FOREACH (set, dpu) { DPU_ASSERT(dpu_log_read(dpu, stdout)); }
    DPU_ASSERT(dpu_free(set));
    return 0;
}
""")
    from updlrm.emulator import compile_host_program

    binary = compile_host_program(host, tmp_path / "sim_alloc")
    result = sdk_harness.run_host(binary, dpu_binary)
    assert result.returncode == 0, sdk_harness.describe(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "10 ranks 10 dpus", result.stdout
    headers = [line for line in lines if line.startswith("===")]
    assert headers == [f"=== DPU#0x{r << 16:x} ===" for r in range(10)], result.stdout


def test_sdk_variant_build_and_run_commands(tmp_path):
    """The SDK variant's command lines and environment, built from a described SDK
    (none runs here): DPU side with the SDK's clang and NR_TASKLETS, host side with
    gcc and dpu-pkg-config's flags after the sources, run forced onto the simulator."""
    home = tmp_path / "upmem"
    info = SdkInfo(
        installed=True,
        home=str(home),
        compiler=str(home / "bin" / "dpu-upmem-dpurte-clang"),
        pkg_config=str(home / "bin" / "dpu-pkg-config"),
        libdpu=str(home / "lib" / "libdpu.so"),
    )
    assert sdk_harness.sdk_skip_reason(info) is None
    dpu_sources = sdk_harness.program_sources("checksum", "dpu")
    host_sources = sdk_harness.program_sources("checksum", "host")
    assert sdk_harness.sdk_dpu_command(info.compiler, dpu_sources, tmp_path / "dpu", 11) == [
        info.compiler,
        "-DNR_TASKLETS=11",
        "-O2",
        "-o",
        str(tmp_path / "dpu"),
        *map(str, dpu_sources),
    ]
    assert "-DNR_TASKLETS" not in " ".join(
        sdk_harness.sdk_dpu_command(info.compiler, dpu_sources, tmp_path / "dpu", None)
    )
    flags = f"-I{home}/include/dpu -L{home}/lib -ldpu"
    host = sdk_harness.sdk_host_command(host_sources, tmp_path / "host", flags)
    assert host[0] == "gcc" and host[host.index("-o") + 1] == str(tmp_path / "host")
    assert host[-3:] == [f"-I{home}/include/dpu", f"-L{home}/lib", "-ldpu"]
    assert host.index(str(host_sources[0])) < host.index("-ldpu")
    env = sdk_harness.sdk_run_environment(info, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/x"})
    assert env["UPMEM_PROFILE_BASE"] == "backend=simulator"
    assert env["LD_LIBRARY_PATH"] == f"{home / 'lib'}{os.pathsep}/opt/x"
    assert env["PATH"] == f"{home / 'bin'}{os.pathsep}/usr/bin"


def test_sdk_variant_skips_with_detect_sdk_reason(tmp_path):
    """Without the SDK the reason names what detect_sdk() found; the emulator's own
    shims (marker ``updlrm-emulator-shim``) never count as the SDK, and neither does a
    bare SDK directory without libdpu."""
    assert "UPMEM_HOME unset, no dpu-pkg-config on PATH" in sdk_harness.sdk_skip_reason(SdkInfo())
    shims = tmp_path / "shims"
    made = subprocess.run([*_updlrm_command(), "emu", "shims", str(shims)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, sdk_harness.describe(made)
    on_path = detect_sdk(environ={}, path=str(shims))
    assert not on_path.installed and on_path.ignored_shims
    assert "only updlrm emulator shims on PATH" in sdk_harness.sdk_skip_reason(on_path)
    as_home = tmp_path / "home"
    (as_home / "bin").mkdir(parents=True)
    shutil.copy(shims / "dpu-upmem-dpurte-clang", as_home / "bin")
    via_home = detect_sdk(environ={"UPMEM_HOME": str(as_home)}, path="")
    assert "holds updlrm emulator shims, not the SDK" in sdk_harness.sdk_skip_reason(via_home)
    if _SDK_SKIP_REASON is not None:
        assert _SDK_SKIP_REASON.startswith("UPMEM SDK not found (")


@pytest.mark.parametrize("program", ["histogram", "semaphore_pc", "seqread_unaligned", "handshake_pipeline", "compact"])
@pytest.mark.parametrize("sanitized", ["dpu", "host"])
def test_sdk_program_under_sanitizers(builder, program, sanitized):
    """Synchronisation-heavy programs built with ASan+UBSan (sanitize=True)
    on one side at a time: the DPU side checks the emulator's tasklet
    switching and runtime, the host side the host library and the host code."""
    nr_tasklets = 11
    dpu_binary = builder.dpu(program, nr_tasklets=nr_tasklets, sanitize=sanitized == "dpu")
    host_binary = builder.host(program, sanitize=sanitized == "host")
    result = sdk_harness.run_host(host_binary, dpu_binary, 2, nr_tasklets, 17)
    assert result.returncode == 0, sdk_harness.describe(result)
    assert "OK" in result.stdout, sdk_harness.describe(result)


def test_host_check_catches_a_wrong_answer(builder):
    """The host programs really check: told the wrong NR_TASKLETS, checksum fails.

    Guards the whole suite against host programs that cannot fail.
    """
    dpu_binary = builder.dpu("checksum", nr_tasklets=16)
    host_binary = builder.host("checksum")
    result = sdk_harness.run_host(host_binary, dpu_binary, 2, 11, 7)
    assert result.returncode != 0, sdk_harness.describe(result)
    assert "check failed" in result.stderr


def test_default_nr_tasklets_is_one(builder):
    """Without NR_TASKLETS the SDK's driver builds a single-tasklet program."""
    dpu_binary = builder.dpu("checksum", nr_tasklets=None)
    host_binary = builder.host("checksum")
    result = sdk_harness.run_host(host_binary, dpu_binary, 2, 1, 3)
    assert result.returncode == 0, sdk_harness.describe(result)


def _updlrm_command() -> list[str]:
    executable = shutil.which("updlrm")
    if executable is not None:
        return [executable]
    return [sys.executable, "-c", "from updlrm.cli import main; main()"]


def test_emu_run_cli_builds_and_runs_an_sdk_program(tmp_path):
    """``updlrm emu run`` builds DPU and host sources and runs the host, which
    (with no arguments after ``--``) gets the DPU binary's path as argv[1]; the
    checksum host's defaults then mean 4 DPUs x 16 tasklets."""
    program = sdk_harness.SDK_PROGRAMS / "checksum"
    run = subprocess.run(
        [
            *_updlrm_command(),
            "emu",
            "run",
            "--dpu",
            str(program / "dpu" / "checksum.c"),
            "--host",
            str(program / "host" / "checksum_host.c"),
            "--tasklets",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, sdk_harness.describe(run)
    assert "checksum: 4 DPUs x 16 tasklets OK" in run.stdout, sdk_harness.describe(run)


def test_emu_build_cli_then_run_by_hand(tmp_path):
    """``updlrm emu build`` leaves a DPU and a host binary that run by hand,
    here with explicit arguments (3 DPUs, the 11 tasklets it was built for)."""
    program = sdk_harness.SDK_PROGRAMS / "checksum"
    build = subprocess.run(
        [
            *_updlrm_command(),
            "emu",
            "build",
            "--dpu",
            str(program / "dpu" / "checksum.c"),
            "--host",
            str(program / "host" / "checksum_host.c"),
            "--tasklets",
            "11",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, sdk_harness.describe(build)
    executables = [p for p in tmp_path.iterdir() if p.is_file() and os.access(p, os.X_OK)]
    hosts = [p for p in executables if "host" in p.name]
    dpus = [p for p in executables if p not in hosts]
    assert len(hosts) == 1 and len(dpus) == 1, (
        f"expected one host and one DPU binary, got {sorted(p.name for p in executables)}"
    )
    run = sdk_harness.run_host(hosts[0], dpus[0], 3, 11, 5)
    assert run.returncode == 0, sdk_harness.describe(run)
    assert "checksum: 3 DPUs x 11 tasklets OK" in run.stdout, sdk_harness.describe(run)


def test_prim_style_makefile_builds_with_emu_shims(tmp_path):
    """An unmodified PrIM-style Makefile builds with ``updlrm emu shims`` on PATH.

    The Makefile calls only ``dpu-upmem-dpurte-clang`` and ``dpu-pkg-config
    --cflags --libs dpu``, as SDK projects do; the resulting binaries must run
    and pass their own check.
    """
    project = tmp_path / "sdk_programs"
    shutil.copytree(sdk_harness.SDK_PROGRAMS / "vector_add", project / "vector_add")
    shutil.copytree(sdk_harness.SDK_PROGRAMS / "common", project / "common")
    shims = tmp_path / "shims"
    made = subprocess.run([*_updlrm_command(), "emu", "shims", str(shims)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, sdk_harness.describe(made)
    for tool in ("dpu-upmem-dpurte-clang", "dpu-pkg-config"):
        assert os.access(shims / tool, os.X_OK), f"{tool} missing from {shims}"

    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ.get('PATH', '')}")
    make = subprocess.run(
        ["make", "NR_TASKLETS=11", "BL=8"],
        cwd=project / "vector_add",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert make.returncode == 0, sdk_harness.describe(make)
    result = sdk_harness.run_host(
        project / "vector_add" / "bin" / "host_code",
        "./bin/dpu_code",
        5,
        11,
        99,
        77777,
        cwd=project / "vector_add",
    )
    assert result.returncode == 0, sdk_harness.describe(result)
    assert "vector_add: 77777 elements on 5 DPUs x 11 tasklets OK" in result.stdout
