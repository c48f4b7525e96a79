"""``updlrm emu build/run`` as SDK users call them.

The README's example command runs as written in a project laid out like the
SDK's examples (``dpu/task.c``, ``host/app.c``, the host opening
``./bin/dpu_code``); link flags (``-l``/``-L``), extra host sources and flags,
``--dpu-output`` for hosts that open another fixed path, and a clear refusal of
DPU binaries built by the real SDK compiler.
"""

from __future__ import annotations

import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

TASK_C = r"""
#include <stdint.h>
#include <defs.h>
#include <mram.h>
#include <barrier.h>

__host uint32_t sums[NR_TASKLETS];
__host uint32_t block_length = BL;
__mram_noinit uint32_t input[NR_TASKLETS * (1 << BL) / 4];
BARRIER_INIT(ready, NR_TASKLETS);

int main(void) {
    __dma_aligned uint32_t cache[(1 << BL) / 4 > 512 ? 512 : (1 << BL) / 4];
    uint32_t me_ = me(), sum = 0;
    barrier_wait(&ready);
    mram_read(&input[me_ * (sizeof(cache) / 4)], cache, sizeof(cache));
    for (uint32_t i = 0; i < sizeof(cache) / 4; i++) sum += cache[i];
    sums[me_] = sum;
    return 0;
}
"""

APP_C = r"""
#include <dpu.h>
#include <stdio.h>
#include <stdlib.h>
#ifndef DPU_BINARY
#define DPU_BINARY "./bin/dpu_code"
#endif
int main(int argc, char **argv) {
    const char *binary = argc > 1 ? argv[1] : DPU_BINARY;
    uint32_t nr_dpus = argc > 2 ? (uint32_t)atoi(argv[2]) : 1, each;
    struct dpu_set_t set, dpu;
    DPU_ASSERT(dpu_alloc(nr_dpus, NULL, &set));
    DPU_ASSERT(dpu_load(set, binary, NULL));
    uint32_t words = 16 * (1u << BL) / 4;
    uint32_t *input = malloc(words * 4);
    for (uint32_t i = 0; i < words; i++) input[i] = i;
    DPU_ASSERT(dpu_broadcast_to(set, "input", 0, input, words * 4, DPU_XFER_DEFAULT));
    DPU_ASSERT(dpu_launch(set, DPU_SYNCHRONOUS));
    DPU_FOREACH(set, dpu, each) {
        uint32_t sums[16], bl;
        DPU_ASSERT(dpu_copy_from(dpu, "sums", 0, sums, sizeof(sums)));
        DPU_ASSERT(dpu_copy_from(dpu, "block_length", 0, &bl, sizeof(bl)));
        uint32_t per = (1u << BL) / 4 > 512 ? 512 : (1u << BL) / 4;
        for (uint32_t t = 0; t < 16; t++) {
            uint32_t expected = 0;
            for (uint32_t i = 0; i < per; i++) expected += t * per + i;
            if (sums[t] != expected || bl != BL) { fprintf(stderr, "DPU %u tasklet %u wrong\n", each, t); return 1; }
        }
    }
    printf("app: %u DPUs OK\n", nr_dpus);
    DPU_ASSERT(dpu_free(set));
    return 0;
}
"""


def _updlrm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from updlrm.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _project(tmp_path: Path) -> Path:
    (tmp_path / "dpu").mkdir()
    (tmp_path / "host").mkdir()
    (tmp_path / "dpu" / "task.c").write_text(TASK_C)
    (tmp_path / "host" / "app.c").write_text(APP_C)
    return tmp_path


def test_readme_example_works_as_written(tmp_path):
    """The `updlrm emu run` line of README.md, run verbatim in an SDK-style project."""
    lines = [line for line in README.read_text().splitlines() if line.startswith("updlrm emu run ")]
    assert lines, "README.md lost its `updlrm emu run` example"
    command = shlex.split(lines[0].split("#")[0])
    assert command[command.index("--") + 1] == "./bin/dpu_code", command
    project = _project(tmp_path)
    result = _updlrm(*command[1:], cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "app: 4 DPUs OK" in result.stdout
    assert (project / "bin" / "dpu_code").is_file() and (project / "bin" / "host_code").is_file()


def test_link_flags_extra_sources_and_dpu_output(tmp_path):
    """A host split over two files that calls sqrt links with -lm; --dpu-output
    puts the DPU binary where the host's DPU_BINARY says; -L is passed on."""
    project = _project(tmp_path)
    (project / "host" / "norm.c").write_text("#include <math.h>\ndouble norm(double x) { return sqrt(x); }\n")
    (project / "host" / "main.c").write_text(
        "#include <stdio.h>\n#include <stdlib.h>\ndouble norm(double);\n"
        "int app_main(int, char **);\n"
        "int main(int argc, char **argv) { volatile double x = argc + 14.0; /* argv[1]: the DPU binary */\n"
        "  if (norm(x) != 4.0) return 3; return app_main(argc, argv); }\n"
    )
    (project / "host" / "app.c").write_text(APP_C.replace("int main(int argc", "int app_main(int argc"))
    common = [
        "emu",
        "run",
        "--dpu",
        "dpu/task.c",
        "--host",
        "host/main.c",
        "--host",
        "host/app.c",
        "--host",
        "host/norm.c",
        "-D",
        "BL=6",
        "--tasklets",
        "16",
        "-D",
        'DPU_BINARY="data/kernel.dpu"',
        "--dpu-output",
        "data/kernel.dpu",
        "-L",
        str(tmp_path),
    ]
    without = _updlrm(*common, cwd=project)
    assert without.returncode == 1 and "sqrt" in without.stderr, without.stdout + without.stderr
    result = _updlrm(*common[:2], "-lm", *common[2:], cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "app: 1 DPUs OK" in result.stdout and (project / "data" / "kernel.dpu").is_file()


def test_build_writes_the_sdk_makefile_names(tmp_path):
    project = _project(tmp_path)
    result = _updlrm(
        "emu",
        "build",
        "--dpu",
        "dpu/task.c",
        "--host",
        "host/app.c",
        "-D",
        "BL=4",
        "--tasklets",
        "16",
        "--host-flag=-O0",
        "--dpu-flag=-DUNUSED=1",
        cwd=project,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bin/dpu_code" in result.stdout and "bin/host_code" in result.stdout
    run = subprocess.run(
        [str(project / "bin" / "host_code"), "./bin/dpu_code", "2"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "app: 2 DPUs OK" in run.stdout, run.stdout + run.stderr


def _sdk_dpu_elf(path: Path) -> Path:
    """A file with the header of an SDK DPU binary: ELF32, little-endian, EM_DPU (245)."""
    header = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9) + struct.pack("<HHI", 2, 245, 1) + bytes(32)
    path.write_bytes(header + bytes(200))
    return path


def test_sdk_compiled_dpu_binary_is_refused_with_what_to_do(tmp_path):
    from updlrm.emulator import DpuError, DpuSet

    binary = _sdk_dpu_elf(tmp_path / "task.dpu")
    with DpuSet(1) as dpus, pytest.raises(DpuError) as raised:
        dpus.load(binary)
    message = str(raised.value)
    assert raised.value.code_name == "DPU_ERR_ELF_INVALID_FILE"
    assert "built by the UPMEM SDK's compiler" in message and "updlrm emu build" in message, message
    assert "64-bit" not in message
    project = _project(tmp_path)
    result = _updlrm("emu", "run", "--dpu", str(binary), "--host", "host/app.c", "-D", "BL=4", cwd=project)
    assert result.returncode == 1 and "built by the UPMEM SDK's compiler" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
