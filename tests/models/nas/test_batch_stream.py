"""models/nas/runtime.py BatchStream: the shuffled batches of each epoch in order, a position
that restarts a stream where it stopped, from either loader (`LOADER`: a child process,
models/data/feed.py, or a thread), and on CUDA the same batches however they are copied."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from models.data.store import SplitArrays, iter_batches
from models.nas import runtime
from models.nas.runtime import BatchStream, epoch_seed
from pimrec.errors import PimrecError

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


@pytest.mark.parametrize("loader", ["thread", "process"])
def test_batches_follow_the_epochs_and_a_saved_position_resumes(monkeypatch, loader):
    monkeypatch.setitem(runtime.LOADER, "impl", loader)
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the copies to the device need CUDA")
@pytest.mark.parametrize("loader,impl", [("thread", "side"), ("thread", "inline"),
                                         ("process", "side")])  # fmt: skip
def test_cuda_batches_are_the_host_batches(monkeypatch, loader, impl):
    """On the device, in order, equal to the host batches; each batch is used at once by a
    kernel on the consumer's stream (which must have waited for the side stream's copy)."""
    monkeypatch.setitem(runtime.LOADER, "impl", loader)
    monkeypatch.setitem(runtime.H2D, "impl", impl)
    split = _split()
    want = _expected(split, 3, 2)
    stream = BatchStream(split, BATCH, seed=3, device=torch.device("cuda"))
    try:
        for _, ref in want:
            batch = next(stream)
            assert all(t.is_cuda for t in batch)
            assert [t.dtype for t in batch] == [torch.float32, torch.int32, torch.float32]
            sums = [t.double().sum() for t in batch]  # read right away on this stream
            # float64 sums on both sides (float32 ones in numpy's order differ by rounding)
            want_sums = [a.astype(np.float64).sum() for a in ref]
            torch.testing.assert_close(torch.stack(sums).cpu(),
                                       torch.tensor(want_sums, dtype=torch.float64))  # fmt: skip
            assert all(np.array_equal(t.cpu().numpy(), a) for t, a in zip(batch, ref, strict=True))
    finally:
        stream.close()


def test_process_loader_reads_the_prepared_shards_by_path(tmp_path, monkeypatch):
    """From a prepared folder's memmaps (several shards), the child process maps the files
    itself and yields the thread loader's batches; closing leaves no slot file behind."""
    from models.data import feed, open_split, prepare

    data = prepare("synthetic", None, tmp_path / "d", rows=3000, shard_rows=700,
                   progress=False)  # fmt: skip
    split = open_split(data, "train")
    assert len(split.shard_rows) > 1
    spec = feed.portable(split)
    assert spec[0][0] == "sharded" and spec[0][1][0][0] == "npy"  # paths, not data
    got = {}
    for loader in ("thread", "process"):
        monkeypatch.setitem(runtime.LOADER, "impl", loader)
        stream = BatchStream(split, 256, seed=5, device=torch.device("cpu"))
        try:
            got[loader] = _take(stream, 12)
        finally:
            stream.close()
    assert [p for p, _ in got["thread"]] == [p for p, _ in got["process"]]
    for (_, a), (_, b) in zip(got["thread"], got["process"], strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    shm = feed._shm_dir() or tempfile.gettempdir()
    assert not [f for f in os.listdir(shm) if f.startswith("pimrec-feed-")]


def test_process_loader_errors_reach_the_consumer(monkeypatch):
    """An error in the child is raised by the consumer's next(); a child that dies without
    one is a clear error too, not a hang."""
    monkeypatch.setitem(runtime.LOADER, "impl", "process")
    split = _split()
    bad = SplitArrays(split.dense, split.sparse, split.label[:10], {}, "train", (ROWS,))
    stream = BatchStream(bad, BATCH, seed=1, device=torch.device("cpu"))
    try:
        with pytest.raises(Exception, match="index|bounds|size"):
            for _ in range(20):
                next(stream)
    finally:
        stream.close()
    stream = BatchStream(split, BATCH, seed=1, device=torch.device("cpu"))
    try:
        next(stream)
        stream._feed.feed._proc.kill()
        with pytest.raises(PimrecError, match="batch loader process stopped"):
            for _ in range(20):
                next(stream)
    finally:
        stream.close()


def test_slots_go_to_dev_shm_only_with_room(monkeypatch):
    """/dev/shm when it has room for twice the slots, else the temporary folder (a full tmpfs
    would kill the loader process when it writes a slot)."""
    from models.data import feed

    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")

    class Stat:
        f_frsize = 4096
        f_bavail = 1000  # 4,096,000 bytes free

    monkeypatch.setattr(feed.os, "statvfs", lambda path: Stat())
    monkeypatch.setattr(feed.os, "access", lambda path, mode: True)
    assert feed._shm_dir(2_048_000) == "/dev/shm"  # exactly twice fits
    assert feed._shm_dir(2_048_001) is None


def test_stopping_a_loader_that_never_started_removes_its_file(tmp_path):
    """`feed._stop` (the Feed's finalizer) on a child process that was never started (its start
    failed) closes the pipe and removes the slot file without error."""
    import multiprocessing as mp

    from models.data import feed

    ctx = mp.get_context("spawn")
    mine, _theirs = ctx.Pipe()
    path = tmp_path / "pimrec-feed-x"
    path.write_bytes(b"\0" * 8)
    feed._stop(ctx.Process(target=print), mine, str(path))
    assert not path.exists() and mine.closed


def test_slot_views_in_numpy_and_torch_agree():
    """The loader's slot layout read as numpy views (the child's writes) and as torch views of
    the same bytes (the parent's copy on CUDA) gives the same arrays, dtypes and shapes."""
    from models.data.feed import SlotLayout

    lay = SlotLayout(5, 3, 2)
    buf = np.zeros(lay.nbytes, np.uint8)
    dense, sparse, label = lay.views(buf)
    dense[:] = np.arange(15).reshape(5, 3) / 4
    sparse[:] = np.arange(10).reshape(5, 2) + 100
    label[:] = np.arange(5) % 2
    feed = runtime._ProcessFeed.__new__(runtime._ProcessFeed)  # only its layout is read
    feed.feed = type("F", (), {"layout": lay})()
    got = feed._tensors(torch.from_numpy(buf))
    assert [t.dtype for t in got] == [torch.float32, torch.int32, torch.float32]
    for t, a in zip(got, (dense, sparse, label), strict=True):
        assert t.shape == a.shape and np.array_equal(t.numpy(), a)
