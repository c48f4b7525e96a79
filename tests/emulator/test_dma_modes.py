"""The project's own DPU code keeps every SDK DMA rule.

The embedding-bag kernel runs under ``UPDLRM_EMU_DMA=strict`` (every DMA the
SDK forbids faults) and under the default mode without a single relaxed-DMA
warning, and its results match torch's ``embedding_bag``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("mode", ["strict", "default"])
def test_embedding_bag_kernel_keeps_every_dma_rule(monkeypatch, capfd, mode):
    import updlrm

    monkeypatch.setenv("UPDLRM_EMU_DMA", mode)
    rng = np.random.default_rng(3)
    rows, dim = 500, 24
    indices = rng.integers(0, rows, size=(64, 7))
    bag = updlrm.EmbeddingBag(rows, dim, mode="sum", backend="emulator", nr_dpus=3)
    try:
        out = np.asarray(bag(indices))
        weight = torch.as_tensor(np.asarray(bag.weight))
        expected = torch.nn.functional.embedding_bag(torch.as_tensor(indices), weight, mode="sum").numpy()
    finally:
        bag.close()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert "updlrm emulator: warning" not in capfd.readouterr().err
