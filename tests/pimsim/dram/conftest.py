"""Shared helpers for the DRAM-core tests."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pimsim.presets import load_preset

INTERPRETED = os.environ.get("NUMBA_DISABLE_JIT") == "1"


def ddr4(*overrides: str):
    return load_preset("ddr4-2400r", list(overrides)).dram


def hbm2(*overrides: str):
    return load_preset("hbm2-2000", list(overrides)).dram


def stream_addrs(spec, n: int, start: int = 0) -> np.ndarray:
    return (start + np.arange(n, dtype=np.uint64)) * np.uint64(spec.access_bytes)


def random_addrs(spec, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lines = spec.capacity_bytes // spec.access_bytes
    return rng.integers(0, lines, n).astype(np.uint64) * np.uint64(spec.access_bytes)


@pytest.fixture
def spec():
    return ddr4()
