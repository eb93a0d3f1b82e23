"""Fixtures of the NAS tests: a tiny search space (registered for the test only) and tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from models.nas.space import SPACES, SearchSpace

TINY = SearchSpace("tiny", ("fc", "dot", "gating", "sum"), ("efc", "attention"), (4, 8, 16), (2, 4))
TABLES = [11, 7, 5]
N_DENSE = 3


@pytest.fixture(autouse=True)
def dense_stem_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The supernet stem's row gradients (CUDA's default, models/nas/optim.py) off, so that tests
    comparing `.grad` see the embedding's; the tests of row gradients turn them on."""
    from models.nas import optim

    monkeypatch.setitem(optim.ROW_GRAD, "impl", "off")


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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory):
    """A small prepared synthetic folder (criteo shape, tables capped at 40 rows)."""
    from models.data import prepare

    out = tmp_path_factory.mktemp("nasdata") / "data"
    return prepare("synthetic", None, out, rows=3000, max_table_rows=40, progress=False)


@pytest.fixture(scope="session")
def tiny_supernet(tiny_data, tmp_path_factory: pytest.TempPathFactory):
    """A supernet of the tiny space trained for 6 steps: (run folder, checkpoint path)."""
    import models.nas.space as space
    from models.nas.train import SupernetConfig, train_supernet

    space.SPACES["tiny"] = TINY
    out = tmp_path_factory.mktemp("supernet")
    cfg = SupernetConfig(str(tiny_data), space="tiny", steps=6, batch_size=64)
    train_supernet(cfg, out, progress=False)
    return out, out / "checkpoint.pt"
