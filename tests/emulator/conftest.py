"""Fixtures of the SDK-misuse tests (test_sdk_misuse.py, test_sdk_misuse_host.py): the built programs."""

from __future__ import annotations

import re
import subprocess

import pytest
from sdk_misuse_common import (
    FAULTS_TASKLETS,
    HEAP_SYMBOL,
    MRAM_BASE,
    MRAM_SIZE,
    sdk_harness,
)


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    return sdk_harness.ProgramBuilder(tmp_path_factory.mktemp("sdk_misuse"))


@pytest.fixture(scope="module")
def faults_binary(builder):
    return builder.dpu("misuse", ["faults.c"], nr_tasklets=FAULTS_TASKLETS)


@pytest.fixture(scope="module")
def heap_bytes(faults_binary):
    """Bytes from DPU_MRAM_HEAP_POINTER to the end of MRAM in faults.c."""
    symbols = subprocess.run(["nm", "-P", str(faults_binary)], capture_output=True, text=True, check=True).stdout
    match = re.search(rf"^{HEAP_SYMBOL}\s+\w\s+([0-9a-fA-F]+)", symbols, re.MULTILINE)
    assert match, f"{HEAP_SYMBOL} not in the DPU binary's symbol table"
    address = int(match.group(1), 16)
    assert address & MRAM_BASE and address % 8 == 0, hex(address)
    return MRAM_BASE + MRAM_SIZE - address


@pytest.fixture(scope="module")
def misuse_host(builder):
    return builder.host("misuse", ["misuse_host.c"])
