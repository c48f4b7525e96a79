"""Vertical slice: host -> MRAM, 16 tasklets mram_read + barrier, result back."""

import numpy as np
import pytest
from _emu_testutil import build_dpu

from updlrm.emulator import DpuSet


@pytest.fixture(scope="module")
def checksum(tmp_path_factory):
    return build_dpu(tmp_path_factory.mktemp("slice"), "checksum.c", nr_tasklets=16)


@pytest.mark.parametrize("nr_dpus", [1, 64, 70])
def test_checksum_matches_numpy(checksum, nr_dpus):
    rng = np.random.default_rng(nr_dpus)
    words = 1 << 14
    data = rng.integers(0, 2**32, size=(nr_dpus, words), dtype=np.uint64).astype(np.uint32)
    with DpuSet(nr_dpus) as dpus:
        dpus.load(checksum)
        dpus.copy_to("nr_words", np.array([words], np.uint32))
        dpus.push_to("__sys_used_mram_end", data)
        dpus.launch()
        got = dpus.copy_from("result", 8).view(np.uint64).ravel()
        assert got.tolist() == data.astype(np.uint64).sum(axis=1).tolist()
        assert f"dpu total {int(got[0])}" in dpus.log(0)
