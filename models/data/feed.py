"""Training batches gathered by a child process into shared-memory slots (numpy only: the child
imports no torch).

Why a process: a CUDA training step is issued from Python by the main thread, and a loader
thread in the same process competes with it for the GIL. Measured on an H100 at batch 8192
(session 22, `benchmarks/train_supernet.py`): 10.04 ms per graphed step with the loader thread
against 8.20 ms with the same steps' batches taken beforehand. Here the child runs
`iter_batches` over its own memmaps of the split and writes each batch into a free slot of a
shared file mapping; the parent reads the slot (models/nas/runtime.py: on CUDA one copy to the
device from the slot, page-locked once) and hands the slot back when that copy is done.

Protocol over one pipe: the child sends ("ready", 0, None) once it has mapped the slots, then
("batch", epoch, slot), ("epoch_end", next epoch, None) or ("error", 0, exception); the parent
sends a slot index to hand a slot back, None to stop the child.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import weakref
from dataclasses import dataclass
from itertools import islice
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from models.data.store import ShardedArray, SplitArrays, iter_batches
from pimrec.errors import PimrecError


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: a hash of (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


@dataclass(frozen=True)
class SlotLayout:
    """One slot: a batch's dense [B, n_dense] float32, sparse [B, n_sparse] int32 and label [B]
    float32, back to back (4-byte words throughout, so every part is 4-byte aligned)."""

    batch: int
    n_dense: int
    n_sparse: int

    @property
    def nbytes(self) -> int:
        return 4 * self.batch * (self.n_dense + self.n_sparse + 1)

    def parts(self) -> tuple[tuple[int, tuple[int, ...], str], ...]:
        """(offset in 4-byte words, shape, dtype name) of dense, sparse and label in a slot."""
        b, nd, ns = self.batch, self.n_dense, self.n_sparse
        return ((0, (b, nd), "float32"), (b * nd, (b, ns), "int32"),
                (b * (nd + ns), (b,), "float32"))  # fmt: skip

    def views(self, buf: np.ndarray) -> tuple[np.ndarray, ...]:
        """(dense, sparse, label) views of one slot's bytes."""
        return tuple(np.ndarray(shape, np.dtype(dt), buf, 4 * at) for at, shape, dt in self.parts())


def _array_spec(a: Any) -> tuple:
    """A picklable way to reopen one array of a split: a .npy memmap by its path (not its data),
    a sharded array by its shards', anything else (in-memory arrays) by value."""
    if isinstance(a, ShardedArray):
        return ("sharded", [_array_spec(s) for s in a.shards])
    if isinstance(a, np.memmap) and a.filename:
        return ("npy", a.filename, a.shape, a.dtype.str)
    return ("array", np.asarray(a))


def _array_open(spec: tuple) -> Any:
    kind = spec[0]
    if kind == "sharded":
        return ShardedArray([_array_open(s) for s in spec[1]])
    if kind == "npy":
        a = np.load(spec[1], mmap_mode="r")
        if a.shape != spec[2] or a.dtype.str != spec[3]:
            raise PimrecError(
                f"the shard changed since it was opened: {a.dtype.str} {a.shape}",
                file=spec[1],
                field="shape",
                expected=f"{spec[3]} {spec[2]}",
            )
        return a
    return spec[1]


def portable(split: SplitArrays) -> tuple:
    """`split` as a picklable description that `reopen` maps again (memmaps by path)."""
    arrays = (_array_spec(a) for a in (split.dense, split.sparse, split.label))
    return (*arrays, split.manifest, split.split, split.shard_rows)


def reopen(spec: tuple) -> SplitArrays:
    dense, sparse, label, manifest, name, rows = spec
    return SplitArrays(
        _array_open(dense), _array_open(sparse), _array_open(label), manifest, name, rows
    )


def _shm_dir(nbytes: int = 0) -> str | None:
    """Memory-backed /dev/shm where there is one with room for twice `nbytes` (the slots never
    touch a disk; a full tmpfs would kill the child with SIGBUS when it writes a slot, and
    containers often give /dev/shm 64 MB), else the default temporary folder (None)."""
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        return None
    st = os.statvfs(shm)
    return shm if st.f_bavail * st.f_frsize >= 2 * nbytes else None


def _produce(
    spec: tuple, layout: SlotLayout, seed: int, position: tuple[int, int], path: str,
    n_slots: int, conn: Connection,
) -> None:  # fmt: skip
    """The child: each epoch's shuffled batches from `position` on, each into a free slot."""
    try:
        split = reopen(spec)
        buf = np.memmap(path, np.uint8, "r+", shape=(n_slots * layout.nbytes,))
        conn.send(("ready", 0, None))
        free = list(range(n_slots))
        epoch, skip = position
        while True:
            it = iter_batches(
                split, layout.batch, shuffle=True, seed=epoch_seed(seed, epoch), drop_last=True
            )
            for batch in islice(it, skip, None):
                while not free or conn.poll():  # slots handed back; wait while none is free
                    msg = conn.recv()
                    if msg is None:
                        return
                    free.append(msg)
                k = free.pop(0)
                slot = buf[k * layout.nbytes : (k + 1) * layout.nbytes]
                for dst, src in zip(layout.views(slot), batch, strict=True):
                    dst[...] = src
                conn.send(("batch", epoch, k))
            conn.send(("epoch_end", epoch + 1, None))
            epoch, skip = epoch + 1, 0
    except (EOFError, BrokenPipeError, KeyboardInterrupt):  # the parent has gone or stopped us
        return
    except BaseException as exc:  # surfaced in the parent
        try:
            conn.send(("error", 0, exc))
        except Exception:  # an exception that does not pickle
            conn.send(("error", 0, RuntimeError(f"batch loader process: {exc!r}")))


def _stop(proc: Any, conn: Connection, path: str) -> None:
    """Stop the child (asked, then terminated) and remove the slots' file if still there."""
    if proc.pid is not None:  # started
        try:
            conn.send(None)
        except OSError:
            pass
        proc.join(timeout=2)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
    conn.close()
    Path(path).unlink(missing_ok=True)


class Feed:
    """The parent's side: starts the child over `split` from `position` (epoch, batches of that
    epoch already consumed) with `n_slots` slots; `recv` gives the child's next message,
    `slot(k)` a slot's bytes, `release(k)` hands a slot back. The slots' file is unlinked once
    both processes have mapped it, so no kill leaves it behind."""

    def __init__(
        self, split: SplitArrays, batch_size: int, *, seed: int, position: tuple[int, int],
        n_slots: int,
    ) -> None:  # fmt: skip
        self.layout = SlotLayout(batch_size, split.dense.shape[1], split.sparse.shape[1])
        nbytes = n_slots * self.layout.nbytes
        fd, path = tempfile.mkstemp(prefix="pimrec-feed-", dir=_shm_dir(nbytes))
        try:
            os.ftruncate(fd, nbytes)
        finally:
            os.close(fd)
        self.buf = np.memmap(path, np.uint8, "r+", shape=(nbytes,))
        ctx = mp.get_context("spawn")  # not fork: the parent may hold CUDA state and threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_produce,
            args=(portable(split), self.layout, seed, position, path, n_slots, child),
            daemon=True,
            name="pimrec-batch-loader",
        )
        self._path = path
        self._stopper = weakref.finalize(self, _stop, self._proc, self._conn, path)
        self._proc.start()
        child.close()

    def slot(self, k: int) -> np.ndarray:
        return self.buf[k * self.layout.nbytes : (k + 1) * self.layout.nbytes]

    def recv(self) -> tuple[str, int, Any]:
        """The child's next ("batch", epoch, slot) or ("epoch_end", next epoch, None); raises
        the child's exception, or a PimrecError when the child died without one."""
        while True:
            try:
                while not self._conn.poll(0.1):
                    if not self._proc.is_alive():
                        raise EOFError
                kind, epoch, item = self._conn.recv()
            except (EOFError, OSError):
                self._proc.join(timeout=1)
                raise PimrecError(
                    f"the batch loader process stopped (exit code {self._proc.exitcode})",
                    field="data",
                ) from None
            if kind == "error":
                raise item
            if kind == "ready":  # both sides have mapped the slots
                Path(self._path).unlink(missing_ok=True)
                continue
            return kind, epoch, item

    def release(self, k: int) -> None:
        self._conn.send(k)

    def close(self) -> None:
        self._stopper()
