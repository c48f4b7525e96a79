"""Fixtures of the serving tests."""

from __future__ import annotations

import pytest

import updlrm


@pytest.fixture
def make_ebc():
    """Build collections on the emulator and close them after the test."""
    built = []

    def make(tables, **kwargs):
        kwargs.setdefault("backend", "emulator")
        kwargs.setdefault("nr_dpus", 4)
        ebc = updlrm.EmbeddingBagCollection(tables, **kwargs)
        built.append(ebc)
        return ebc

    yield make
    for ebc in built:
        ebc.close()
