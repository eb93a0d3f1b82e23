"""Fixtures of the NAS tests: a tiny search space (registered for the test only), tiny data, and
the Triton kernels' path.

Triton tests run on CUDA when a GPU is present, otherwise under Triton's CPU interpreter: without
a GPU this module sets TRITON_INTERPRET=1 before triton's first import (which models.nas.kernels
does), when nothing imported triton earlier in the session. They skip when triton does not import
or was imported earlier without the interpreter."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton and its kernels load

import models.nas.kernels as kernels  # noqa: E402
from models.nas.space import SPACES, SearchSpace  # noqa: E402

TINY = SearchSpace("tiny", ("fc", "dot", "gating", "sum"), ("efc", "attention"), (4, 8, 16), (2, 4))
TABLES = [11, 7, 5]
N_DENSE = 3


@pytest.fixture(autouse=True)
def dense_stem_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The supernet stem's row gradients (CUDA's default, models/nas/optim.py) off, so that tests
    comparing `.grad` see the embedding's; the tests of row gradients turn them on."""
    from models.nas import optim

    monkeypatch.setitem(optim.ROW_GRAD, "impl", "off")


@contextmanager
def triton_path() -> Iterator:
    """models.nas.kernels with its Triton path on: CUDA tensors, or CPU ones in the interpreter
    (pytest.skip where neither can run)."""
    if not kernels.triton_available():
        pytest.skip("triton does not import here: the Triton kernels cannot run")
    if CUDA:
        yield kernels
        return
    if not kernels._INTERPRET:
        pytest.skip(
            "no GPU, and triton was imported before TRITON_INTERPRET=1 could be set "
            "(run this file alone or with TRITON_INTERPRET=1)"
        )
    kernels.KERNELS["force"] = True
    try:
        yield kernels
    finally:
        kernels.KERNELS["force"] = False


@pytest.fixture
def triton_kernels() -> Iterator:
    """The Triton path on for one test (`triton_path`)."""
    with triton_path() as k:
        yield k


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> SearchSpace:
    monkeypatch.setitem(SPACES, "tiny", TINY)
    return TINY


def tiny_batch(n: int = 6, seed: int = 0):
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
