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
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: a hash of (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# Held by threads that call the CUDA runtime from the host (pinning batches) and by CUDA-graph
# capture (models/nas/graphs.py): a pinned allocation on another thread during a capture
# invalidates it (capture mode "global", which torch.cuda.make_graphed_callables uses).
HOST_CUDA_LOCK = threading.Lock()

# "side": on CUDA the loader thread copies each pinned batch to the device on a stream of its own
# and the consumer's stream waits for that copy's event (the copy overlaps the previous steps);
# "inline": the consumer copies each batch on its own stream when it takes it (in its step's
# timeline: three copies of ~1.3 MB at batch 8192); `benchmarks/train_supernet.py --switch
# h2d=inline` is the A/B.
H2D = {"impl": "side"}


class BatchStream:
    """Endless shuffled training batches as torch tensors on `device`, prepared by a background
    thread (numpy gather, pinning, on CUDA the copy to the device on a side stream: `H2D`) so the
    data pipeline stays off the training critical path.

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
        from models.data import iter_batches

        if len(split) < batch_size:
            raise PimrecError(
                f"the training split has {len(split)} rows, fewer than one batch",
                field="batch_size",
                expected=f"at most {len(split)}",
            )
        self._iter_batches, self.split, self.batch_size = iter_batches, split, batch_size
        self.seed, self.device, self.position = seed, device, position
        self._pin = device.type == "cuda"
        side = self._pin and H2D["impl"] == "side"
        self._copy_stream = torch.cuda.Stream(device) if side else None
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        epoch, skip = self.position
        try:
            while not self._stop.is_set():
                it = self._iter_batches(
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
            with torch.cuda.stream(self._copy_stream):
                batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
                done = torch.cuda.Event()
                done.record(self._copy_stream)
        return batch, done

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        while True:
            kind, epoch, item = self._queue.get()
            if kind == "error":
                raise item
            if kind == "epoch_end":
                self.position = (epoch, 0)
                continue
            self.position = (epoch, self.position[1] + 1 if epoch == self.position[0] else 1)
            batch, done = item
            if done is None:
                return tuple(t.to(self.device, non_blocking=True) for t in batch)
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(done)
            for t in batch:  # allocated on the copy stream: not reused before this one's work
                t.record_stream(stream)
            return batch

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


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
