"""Shared training machinery: device choice, the learning-rate schedule, a prefetching batch stream
with a resumable position, RNG state capture, atomic checkpoints and metrics.

Checkpoints are `torch.save` dictionaries of tensors and plain values, written to a temporary file
and renamed; they are read with `torch.load(..., weights_only=True)`, so nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import tempfile
import threading
import weakref
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.feed import epoch_seed
from pimrec.errors import PimrecError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PimrecError("CUDA is not available here", field="device", expected="auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PimrecError(
            f"unknown device {name!r}", field="device", expected="auto, cpu, cuda"
        ) from None


def lr_at(step: int, total: int, base_lr: float, warmup_frac: float) -> float:
    """Linear warm-up over the first ceil(warmup_frac * total) steps, then cosine decay to 0."""
    warm = max(1, math.ceil(warmup_frac * total)) if warmup_frac > 0 else 0
    if step < warm:
        return base_lr * (step + 1) / warm
    rest = max(1, total - warm)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step - warm, rest) / rest))


# Held by threads that call the CUDA runtime from the host (pinning batches) and by CUDA-graph
# capture (models/nas/graphs.py): a pinned allocation on another thread during a capture
# invalidates it (capture mode "global", which torch.cuda.make_graphed_callables uses).
HOST_CUDA_LOCK = threading.Lock()

# Where batches are gathered: "process" in a child process (models/data/feed.py), "thread" in a
# thread of this process; "auto" is "process" on CUDA (a loader thread competes for the GIL
# with the thread that issues the GPU work: 10.04 ms per graphed step against 8.20 with the
# batches taken beforehand, H100, batch 8192, session 22) and "thread" elsewhere (the CPU's
# step is torch's compute, which releases the GIL, and starts no process).
# `benchmarks/train_supernet.py --switch loader=thread` is the A/B.
LOADER = {"impl": "auto"}

# The thread loader on CUDA: "side" copies each pinned batch to the device on a stream of its
# own and the consumer's stream waits for that copy's event (the copy overlaps the previous
# steps); "inline": the consumer copies each batch on its own stream when it takes it (in its
# step's timeline: three copies of ~1.3 MB at batch 8192). `--switch h2d=inline` is the A/B.
H2D = {"impl": "side"}


def loader_kind(device: torch.device) -> str:
    """LOADER resolved for `device`: "process" or "thread"."""
    impl = LOADER["impl"]
    if impl == "auto":
        return "process" if device.type == "cuda" else "thread"
    return impl


class BatchStream:
    """Endless shuffled training batches as torch tensors on `device`, gathered off the training
    thread so the data pipeline stays off its critical path: by a child process (`LOADER`;
    models/data/feed.py), on CUDA each batch copied to the device from its shared slot one
    batch ahead, on a stream of its own; or by a thread (numpy gather, pinning, on CUDA the
    copy to the device: `H2D`).

    `position` = (epoch, batches consumed in that epoch): restarting a stream at a saved position
    yields exactly the batches an uninterrupted stream would have yielded next.
    """

    def __init__(
        self,
        split: Any,
        batch_size: int,
        *,
        seed: int,
        device: torch.device,
        position: tuple[int, int] = (0, 0),
        prefetch: int = 4,
    ) -> None:
        if len(split) < batch_size:
            raise PimrecError(
                f"the training split has {len(split)} rows, fewer than one batch",
                field="batch_size",
                expected=f"at most {len(split)}",
            )
        self.split, self.batch_size = split, batch_size
        self.seed, self.device, self.position = seed, device, position
        self._pin = device.type == "cuda"
        self._feed: _ProcessFeed | None = None
        if loader_kind(device) == "process":
            self._feed = _ProcessFeed(split, batch_size, seed, device, position, prefetch)
            return
        side = self._pin and H2D["impl"] == "side"
        self._copy_stream = torch.cuda.Stream(device) if side else None
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        from models.data import iter_batches

        epoch, skip = self.position
        try:
            while not self._stop.is_set():
                it = iter_batches(
                    self.split, self.batch_size, shuffle=True, seed=epoch_seed(self.seed, epoch),
                    drop_last=True,
                )  # fmt: skip
                for dense, sparse, label in islice(it, skip, None):
                    batch = self._stage(tuple(torch.from_numpy(a) for a in (dense, sparse, label)))
                    while not self._stop.is_set():
                        try:
                            self._queue.put(("batch", epoch, batch), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
                self._queue.put(("epoch_end", epoch + 1, None))
                epoch, skip = epoch + 1, 0
        except BaseException as exc:  # surfaced in the consumer
            self._queue.put(("error", 0, exc))

    def _stage(self, batch: tuple[torch.Tensor, ...]) -> tuple:
        """(batch, None) for the consumer to copy (pinned on CUDA), or with a copy stream (batch
        on the device, the copy's event). The pinned buffers may be released once the copy is
        queued: torch's pinned allocator keeps them until the copy has run."""
        if not self._pin:
            return batch, None
        with HOST_CUDA_LOCK:
            batch = tuple(t.pin_memory() for t in batch)
            if self._copy_stream is None:
                return batch, None
            return _copy_on(self._copy_stream, batch, self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._feed is not None:
            self.position, batch = self._feed.next()
            return batch
        while True:
            kind, epoch, item = self._queue.get()
            if kind == "error":
                raise item
            if kind == "epoch_end":
                self.position = (epoch, 0)
                continue
            self.position = _after_batch(self.position, epoch)
            batch, done = item
            if done is None:
                return tuple(t.to(self.device, non_blocking=True) for t in batch)
            return _wait_for(done, batch, self.device)

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


def _after_batch(position: tuple[int, int], epoch: int) -> tuple[int, int]:
    """A stream's position once it has yielded a batch of `epoch`."""
    return (epoch, position[1] + 1 if epoch == position[0] else 1)


def _copy_on(stream: Any, tensors: tuple, device: torch.device) -> tuple[tuple, Any]:
    """(`tensors` copied to `device` on `stream`, the copy's event): the copy leaves the
    current stream's timeline; `_wait_for` makes the result safe to use on it."""
    with torch.cuda.stream(stream):
        out = tuple(t.to(device, non_blocking=True) for t in tensors)
        done = torch.cuda.Event()
        done.record(stream)
    return out, done


def _wait_for(done: Any, batch: tuple, device: torch.device) -> tuple:
    """`batch`, copied on another stream (`done`: its event), made safe to use on the current
    one: that stream waits for the copy and records its use of the tensors (so their memory is
    not reused before this stream's work on them)."""
    stream = torch.cuda.current_stream(device)
    stream.wait_event(done)
    for t in batch:
        t.record_stream(stream)
    return batch


class _ProcessFeed:
    """BatchStream's process loader: a `Feed` (models/data/feed.py) and, on CUDA, its slots
    page-locked for asynchronous copies, each batch copied to the device in one copy on a side
    stream one batch before it is taken, and each slot handed back once its copy has run."""

    def __init__(
        self, split: Any, batch_size: int, seed: int, device: torch.device,
        position: tuple[int, int], prefetch: int,
    ) -> None:  # fmt: skip
        from models.data.feed import Feed

        self.device, self._position = device, position
        # prefetch slots filled ahead, one staged on the device, one being taken, one spare
        self.feed = Feed(split, batch_size, seed=seed, position=position, n_slots=prefetch + 3)
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        self._copies: list[tuple[Any, int]] = []  # (copy's event, slot) not yet handed back
        self._staged: tuple | None = None  # (position after it, batch, copy's event)
        self._unregister: Any = None
        if self._cuda:
            cudart, ptr = torch.cuda.cudart(), self.feed.buf.ctypes.data
            if int(cudart.cudaHostRegister(ptr, self.feed.buf.nbytes, 0)) == 0:
                # before the slots are unmapped, also when the stream is dropped unclosed
                self._unregister = weakref.finalize(self, cudart.cudaHostUnregister, ptr)
            # (else pageable: each copy waits for the host, batches stay right)

    def _read(self) -> tuple[tuple[int, int], int]:
        """The child's next batch: (the stream's position after it, its slot)."""
        while True:
            kind, epoch, k = self.feed.recv()
            if kind == "epoch_end":
                self._position = (epoch, 0)
                continue
            self._position = _after_batch(self._position, epoch)
            return self._position, k

    def _tensors(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(dense, sparse, label) views of one slot's bytes (`SlotLayout.parts`)."""
        words = raw.view(torch.int32)
        return tuple(
            words[at : at + math.prod(shape)].view(getattr(torch, dt)).view(shape)
            for at, shape, dt in self.feed.layout.parts()
        )

    def _stage(self) -> tuple:
        """The next batch copied to the device on the side stream: (position, batch, event)."""
        position, k = self._read()
        (dev,), done = _copy_on(self._stream, (torch.from_numpy(self.feed.slot(k)),), self.device)
        self._copies.append((done, k))
        return position, self._tensors(dev), done

    def _hand_back(self) -> None:
        """Slots whose copies have run, back to the child (in order)."""
        while self._copies and self._copies[0][0].query():
            self.feed.release(self._copies.pop(0)[1])

    def next(self) -> tuple[tuple[int, int], tuple]:
        """(the stream's position after the batch, the batch on the device)."""
        if not self._cuda:
            position, k = self._read()
            batch = tuple(
                torch.from_numpy(a.copy()) for a in self.feed.layout.views(self.feed.slot(k))
            )
            self.feed.release(k)
            return position, batch
        self._hand_back()
        staged = self._staged or self._stage()
        self._staged = self._stage()  # the next batch's copy overlaps this one's step
        position, batch, done = staged
        return position, _wait_for(done, batch, self.device)

    def close(self) -> None:
        for done, _ in self._copies:
            done.synchronize()
        if self._unregister is not None:
            self._unregister()
        self.feed.close()


def rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    """Every random state a resumed run needs (numpy generator, torch CPU/CUDA, python)."""
    return {
        "numpy": json.dumps(np_rng.bit_generator.state),
        "python": json.dumps(random.getstate()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    np_rng.bit_generator.state = json.loads(state["numpy"])
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file in the same folder, then rename (a kill never corrupts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete the temporary files `save_checkpoint(path, ...)` leaves when killed mid-write."""
    path = Path(path)
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


# Version of the checkpoint layout and of the operators it holds weights for. 2: LayerNorm after
# Sum/Gating, Dot-Product projections and the FM switch (format-1 weights lack those layers).
CHECKPOINT_FORMAT = 2


def load_checkpoint(path: str | Path, kind: str) -> dict[str, Any]:
    """Read a checkpoint of `kind` and of this version's `CHECKPOINT_FORMAT` safely (weights_only)
    onto the CPU; PimrecError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PimrecError("checkpoint not found", file=path, expected=f"a {kind} checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise PimrecError(f"not a readable checkpoint ({msg})", file=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        got = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise PimrecError(f"checkpoint of kind {got!r}", file=path, field="kind", expected=kind)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise PimrecError(
            f"checkpoint format {ckpt.get('format')!r} from another version (operators changed)",
            file=path, field="format", expected=f"{CHECKPOINT_FORMAT} (retrain, or a fresh --out)",
        )  # fmt: skip
    return ckpt


def predict(model: Any, split: Any, batch_size: int, device: torch.device, max_rows: int | None,
            amp: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Logits float64 [n] and labels [n] over (the first `max_rows` rows of) a split, in order."""
    from models.data import iter_batches

    n = len(split) if max_rows is None else min(len(split), max_rows)
    logits, labels, seen = [], [], 0
    # Eval mode: a model captured as CUDA graphs replays them in training mode only (a fixed batch
    # size); the mode is restored after.
    module = model if isinstance(model, torch.nn.Module) else None
    training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.no_grad(), autocast(device, amp):
            for dense, sparse, label in iter_batches(split, batch_size, shuffle=False, seed=0):
                if seen >= n:
                    break
                k = min(len(label), n - seen)
                out = model(
                    torch.from_numpy(dense[:k]).to(device), torch.from_numpy(sparse[:k]).to(device)
                )
                logits.append(out.float().cpu().numpy().astype(np.float64))
                labels.append(label[:k])
                seen += k
    finally:
        if module is not None:
            module.train(training)
    if not logits:
        raise PimrecError("the split is empty", field=split.split, expected="at least one row")
    return np.concatenate(logits), np.concatenate(labels)


def ctr_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{'auc': ROC AUC (scikit-learn; NaN with one class), 'logloss': mean BCE in nats}."""
    from sklearn.metrics import roc_auc_score

    y = labels.astype(np.float64)
    # log(1 + e^x) - y x, computed stably
    logloss = float(np.mean(np.logaddexp(0.0, logits) - y * logits))
    auc = float(roc_auc_score(y, logits)) if 0 < y.sum() < len(y) else float("nan")
    return {"auc": auc, "logloss": logloss}


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast on CUDA when `enabled`; a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
