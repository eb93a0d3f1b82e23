"""Fixtures of the NAS tests: a tiny search space (registered for the test only) and tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from models.nas.space import SPACES, SearchSpace

TINY = SearchSpace("tiny", ("fc", "dot", "gating", "sum"), ("efc", "attention"), (4, 8, 16), (2, 4))
TABLES = [11, 7, 5]
N_DENSE = 3


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> SearchSpace:
    monkeypatch.setitem(SPACES, "tiny", TINY)
    return TINY


def tiny_batch(n: int = 6, seed: int = 0):
    import torch

    rng = np.random.default_rng(seed)
    dense = torch.from_numpy(rng.normal(size=(n, N_DENSE)).astype(np.float32))
    sparse = torch.from_numpy(np.stack([rng.integers(0, t, n) for t in TABLES], 1).astype(np.int32))
    return dense, sparse
