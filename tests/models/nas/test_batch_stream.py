"""models/nas/runtime.py BatchStream: the shuffled batches of each epoch in order, a position
that restarts a stream where it stopped, and on CUDA the same batches whether the loader thread
copies them on its own stream (`H2D` "side") or the consumer copies them ("inline")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.data.store import SplitArrays, iter_batches
from models.nas import runtime
from models.nas.runtime import BatchStream, epoch_seed

ROWS, BATCH = 50, 8  # 6 batches per epoch (drop_last), 2 rows left out


def _split() -> SplitArrays:
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(ROWS, 3)).astype(np.float32)
    sparse = np.arange(ROWS * 2, dtype=np.int32).reshape(ROWS, 2)  # row r holds 2r, 2r + 1
    label = (np.arange(ROWS) % 2).astype(np.float32)
    return SplitArrays(dense, sparse, label, {}, "train", (ROWS,))


def _expected(split: SplitArrays, seed: int, epochs: int) -> list[tuple]:
    """Each epoch's batches as iter_batches shuffles them with that epoch's seed."""
    out = []
    for e in range(epochs):
        it = iter_batches(split, BATCH, shuffle=True, seed=epoch_seed(seed, e), drop_last=True)
        out += [(e, b) for b in it]
    return out


def _take(stream: BatchStream, n: int) -> list[tuple]:
    got = []
    for _ in range(n):
        batch = next(stream)
        got.append((stream.position, tuple(t.cpu().numpy() for t in batch)))
    return got


def test_batches_follow_the_epochs_and_a_saved_position_resumes():
    split = _split()
    want = _expected(split, 7, 3)
    assert len(want) == 18
    stream = BatchStream(split, BATCH, seed=7, device=torch.device("cpu"))
    try:
        got = _take(stream, 14)
    finally:
        stream.close()
    for i, ((pos, batch), (epoch, ref)) in enumerate(zip(got, want, strict=False)):
        assert pos == (epoch, i % 6 + 1)
        assert all(np.array_equal(a, b) for a, b in zip(batch, ref, strict=True)), i
    # a new stream at the position after 9 batches yields the 10th onwards
    again = BatchStream(split, BATCH, seed=7, device=torch.device("cpu"), position=got[8][0])
    try:
        rest = _take(again, 5)
    finally:
        again.close()
    assert [p for p, _ in rest] == [p for p, _ in got[9:14]]
    for (_, a), (_, b) in zip(rest, got[9:14], strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the side-stream copy needs CUDA")
@pytest.mark.parametrize("impl", ["side", "inline"])
def test_cuda_batches_are_the_host_batches(monkeypatch, impl):
    """On the device, in order, equal to the host batches; each batch is used at once by a
    kernel on the consumer's stream (which must have waited for the side stream's copy)."""
    monkeypatch.setitem(runtime.H2D, "impl", impl)
    split = _split()
    want = _expected(split, 3, 2)
    stream = BatchStream(split, BATCH, seed=3, device=torch.device("cuda"))
    try:
        for _, ref in want:
            batch = next(stream)
            assert all(t.is_cuda for t in batch)
            sums = [t.double().sum() for t in batch]  # read right away on this stream
            torch.testing.assert_close(torch.stack(sums).cpu(),
                                       torch.tensor([float(a.sum()) for a in ref],
                                                    dtype=torch.float64))  # fmt: skip
    finally:
        stream.close()
