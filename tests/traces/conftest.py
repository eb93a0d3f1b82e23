"""Run torch single-threaded in these tests: on the shared 2-core machines, intra-op threads
spin against other processes and small models run 50x slower."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _torch_one_thread():
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
