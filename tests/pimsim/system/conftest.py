"""Shared small traces for the PIM system tests (full Criteo tables, small batches)."""

from __future__ import annotations

import pytest

from traces.builder import CRITEO_TABLE_SIZES, build_dlrm


@pytest.fixture(scope="session")
def dlrm_p1():
    return build_dlrm(CRITEO_TABLE_SIZES, batch_size=64, pooling=1)


@pytest.fixture(scope="session")
def dlrm_p80():
    return build_dlrm(CRITEO_TABLE_SIZES, batch_size=64, pooling=80)


@pytest.fixture(scope="session")
def dlrm_tiny():
    """Small enough for the interpreted (NUMBA_DISABLE_JIT=1) pass."""
    return build_dlrm(
        [1000, 50, 7, 100000], batch_size=4, pooling=3, bottom_mlp=(32,), top_mlp=(16,)
    )
