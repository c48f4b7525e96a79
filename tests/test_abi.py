"""updlrm.abi against dpu_kernels/embedding_bag_abi.h: sizes, offsets, constants and byte rules from gcc."""

import shutil
import subprocess
from pathlib import Path

import pytest

from updlrm import abi
from updlrm.specs import RowFormat

KERNELS = Path(__file__).resolve().parents[1] / "dpu_kernels"
STRUCTS = {
    "eb_config": abi.CONFIG_FIELDS,
    "eb_shard": abi.SHARD_FIELDS,
    "eb_segment": abi.SEGMENT_FIELDS,
    "eb_tasklet_work": abi.TASKLET_WORK_FIELDS,
    "eb_batch_fields": abi.BATCH_FIELDS,
    "eb_status": abi.STATUS_FIELDS,
}
CONSTANTS = {
    "EB_ABI_VERSION": abi.ABI_VERSION,
    "EB_HEADER_MAGIC": abi.HEADER_MAGIC,
    "EB_STATUS_MAGIC": abi.STATUS_MAGIC,
    "EB_MAX_TASKLETS": abi.MAX_TASKLETS,
    "EB_FORMAT_FP32": abi.FORMAT_FP32,
    "EB_FORMAT_INT32": abi.FORMAT_INT32,
    "EB_FORMAT_INT8": abi.FORMAT_INT8,
    "EB_FLAG_WEIGHTED": abi.FLAG_WEIGHTED,
    "EB_FLAG_INT16_PARTIALS": abi.FLAG_INT16_PARTIALS,
    "EB_MAX_LOOKUPS_PER_INT16_PARTIAL": abi.MAX_LOOKUPS_PER_INT16_PARTIAL,
    "EB_WEIGHT_Q16_ONE": abi.WEIGHT_Q16_ONE,
    "EB_STATUS_BYTES": abi.STATUS_BYTES,
    "EB_MAX_LOOKUPS_PER_INT8_PARTIAL": abi.MAX_LOOKUPS_PER_INT8_PARTIAL,
    "sizeof(struct eb_batch_header)": abi.HEADER_BYTES,
    "offsetof(struct eb_batch_header, work)": abi.BATCH_FIELDS_BYTES,
}
FORMATS = (abi.FORMAT_FP32, abi.FORMAT_INT32, abi.FORMAT_INT8)
DIMS = (1, 3, 7, 8, 9, 64, 125)
FLAGS = (0, 1, 2, 3)  # no flag, EB_FLAG_WEIGHTED, EB_FLAG_INT16_PARTIALS, both


def _c_program() -> str:
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "embedding_bag_abi.h"', "int main(void) {"]
    for struct, fields in STRUCTS.items():
        lines.append(f'    printf("sizeof {struct} %zu\\n", sizeof(struct {struct}));')
        for f in fields:
            lines.append(f'    printf("offsetof {struct}.{f} %zu\\n", offsetof(struct {struct}, {f}));')
            lines.append(f'    printf("sizeof {struct}.{f} %zu\\n", sizeof(((struct {struct} *)0)->{f}));')
    for name in CONSTANTS:
        lines.append(f'    printf("const {name} %llu\\n", (unsigned long long)({name}));')
    for fmt in FORMATS:
        lines.append(f'    printf("element {fmt} %u\\n", eb_element_bytes({fmt}u));')
        for f in FLAGS:
            lines.append(f'    printf("accumulator {fmt} {f} %u\\n", eb_accumulator_bytes({fmt}u, {f}u));')
            for d in DIMS:
                lines.append(f'    printf("partial {fmt} {f} {d} %u\\n", eb_partial_bytes({fmt}u, {f}u, {d}u));')
        for d in DIMS:
            lines.append(f'    printf("row {fmt} {d} %u\\n", eb_row_bytes({fmt}u, {d}u));')
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not on PATH (the ABI check compiles the header)")
    work = tmp_path_factory.mktemp("abi")
    (work / "abi.c").write_text(_c_program())
    subprocess.run(
        [
            gcc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(KERNELS),
            "-o",
            str(work / "abi"),
            str(work / "abi.c"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    out = subprocess.run([str(work / "abi")], check=True, capture_output=True, text=True).stdout
    facts = {}
    for line in out.splitlines():
        key, value = line.rsplit(" ", 1)
        facts[key] = int(value)
    return facts


def test_record_sizes_and_offsets_match_the_header(c_facts):
    for struct, fields in STRUCTS.items():
        assert c_facts[f"sizeof {struct}"] == abi.WORD_BYTES * len(fields), struct
        for i, f in enumerate(fields):
            assert c_facts[f"offsetof {struct}.{f}"] == abi.WORD_BYTES * i, (struct, f)
            assert c_facts[f"sizeof {struct}.{f}"] == abi.WORD_BYTES, (struct, f)
    assert c_facts["sizeof eb_config"] == abi.CONFIG_BYTES
    assert c_facts["sizeof eb_shard"] == abi.SHARD_BYTES
    assert c_facts["sizeof eb_segment"] == abi.SEGMENT_BYTES
    assert c_facts["sizeof eb_tasklet_work"] == abi.TASKLET_WORK_BYTES
    assert c_facts["sizeof eb_status"] == abi.STATUS_BYTES


def test_constants_match_the_header(c_facts):
    for name, value in CONSTANTS.items():
        assert c_facts[f"const {name}"] == value, name


def test_byte_rules_match_the_header(c_facts):
    for fmt in FORMATS:
        assert c_facts[f"element {fmt}"] == abi.element_bytes(fmt)
        for f in FLAGS:
            assert c_facts[f"accumulator {fmt} {f}"] == abi.accumulator_bytes(fmt, f)
            for d in DIMS:
                assert c_facts[f"partial {fmt} {f} {d}"] == abi.partial_bytes(fmt, f, d)
        for d in DIMS:
            assert c_facts[f"row {fmt} {d}"] == abi.row_bytes(fmt, d)


def test_row_formats_carry_the_abi_facts(c_facts):
    codes = {RowFormat.FP32: "EB_FORMAT_FP32", RowFormat.INT32: "EB_FORMAT_INT32", RowFormat.INT8: "EB_FORMAT_INT8"}
    for fmt, name in codes.items():
        assert fmt.abi_code == c_facts[f"const {name}"]
        assert fmt.element_bytes == c_facts[f"element {fmt.abi_code}"] == fmt.dtype.itemsize
        for f in FLAGS:
            assert fmt.accumulator_bytes(f) == c_facts[f"accumulator {fmt.abi_code} {f}"]


def test_check_nr_tasklets_takes_exactly_the_sdk_range():
    assert [abi.check_nr_tasklets(n) for n in (1, 24)] == [1, 24]
    for bad in (0, 25, -1, 2.5):
        with pytest.raises(ValueError, match=r"1\.\.24"):
            abi.check_nr_tasklets(bad)
    with pytest.raises(KeyError):
        abi.check_nr_tasklets(0, KeyError)
