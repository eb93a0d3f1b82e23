"""Model-side tests use one torch thread: on a shared 2-core machine torch's default thread pool
makes the tiny models of these tests many times slower, not faster."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    try:
        import torch
    except ImportError:  # data-pipeline tests do not need torch
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
