"""CUDA-graph training. Sampled subnets of the supernet: models/nas/chain.py (one captured
forward graph and one backward graph per block, dense op, sparse op and size classes, over shared
node buffers, the subnet's choices passed as data: models/nas/static.py). The full supernet (the
warm-up steps): one graph per block, its shapes being static already. Standalone models
(`graph_model`): the whole forward + backward as one graph, since their shapes never change.

A single-path step through the supernet launches ~700 small kernels from Python; on an H200 at
batch 8192 the host, not the GPU, set the pace (~41 ms per step against ~18 ms of GPU work).
With the blocks replayed as graphs a step is 7 replays forward and 7 backward plus a few dozen
eager kernels (embedding, head, loss, clipping and Adagrad), GPU bound
(benchmarks/train_supernet.py has the figures).

Graphs are captured lazily, the first time a block meets an op pair and size classes at a batch
size (at most 7 x 8 x 6 per batch size for nasrec-full), under bf16 autocast without the
weight-cast cache (graphs replay the casts). A capture that would not fit in the free GPU memory
is skipped and that block runs eagerly (`chain.room_for_graph`); anything in eval mode or under
`torch.no_grad` runs eagerly.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from models.nas.chain import BlockChain, room_for_graph
from models.nas.runtime import HOST_CUDA_LOCK
from models.nas.space import Subnet
from pimrec.errors import PimrecError


def graphs_wanted(setting: str, device: torch.device) -> bool:
    """`setting` is "auto" (on for CUDA), "on" or "off"."""
    if setting not in ("auto", "on", "off"):
        raise PimrecError(
            f"unknown setting {setting!r}", field="graphs", expected="auto, on or off"
        )
    if setting == "on" and device.type != "cuda":
        raise PimrecError("CUDA graphs need a CUDA device", field="graphs", expected="auto or off")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _quiet_stream_warning() -> None:
    """make_graphed_callables warms up on a side stream, so the parameters' gradient accumulators
    remember that stream and every later backward warns that the streams differ. The price is one
    event wait on the GPU per accumulation, not a host sync: the warning is turned off."""
    quiet = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
    if quiet is not None:
        quiet(False)


def graph_model(
    model: torch.nn.Module, batch_size: int, n_dense: int, n_sparse: int, *, amp: bool = True,
    warmup_iters: int = 3,
) -> float:  # fmt: skip
    """Capture `model`'s training forward + backward (dense [B, n_dense] float32, sparse
    [B, n_sparse] int32 -> logits) as CUDA graphs, in place: calls in training mode with a batch
    of `batch_size` rows replay them, eval-mode calls run the module as before. The warm-up runs
    on zero inputs and leaves weights, gradients and random states alone. Returns seconds spent."""
    device = next(model.parameters()).device
    sample = (
        torch.zeros(batch_size, n_dense, device=device),
        torch.zeros(batch_size, n_sparse, dtype=torch.int32, device=device),
    )
    return capture(model, sample, amp=amp, warmup_iters=warmup_iters)


def capture(
    module: torch.nn.Module, sample: tuple[torch.Tensor, ...], *, amp: bool, warmup_iters: int
) -> float:
    """`torch.cuda.make_graphed_callables(module, sample)` in place, under bf16 autocast without
    the weight-cast cache (when `amp`) and with the batch thread's pinned allocations held off
    (HOST_CUDA_LOCK). Returns the seconds it took."""
    t0 = time.perf_counter()
    _quiet_stream_warning()
    with (
        HOST_CUDA_LOCK,
        torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp, cache_enabled=False),
    ):
        torch.cuda.make_graphed_callables(
            module, sample, num_warmup_iters=warmup_iters, allow_unused_input=True
        )
    return time.perf_counter() - t0


class GraphedSupernet:
    """Callable like the supernet (`(dense, sparse, subnet=None) -> logits`), replaying CUDA graphs
    in training: per block key for sampled subnets (`BlockChain`), per block for the full
    supernet. Holds the supernet; owns no weights."""

    def __init__(
        self, net: torch.nn.Module, *, amp: bool = True, warmup_iters: int = 3, capped: bool = True
    ) -> None:
        self.net, self.amp, self.warmup_iters = net, amp, warmup_iters
        self.chain = BlockChain(net, capped=capped, graphs=True, warmup_iters=warmup_iters)
        self._blocks: dict[tuple, torch.nn.Module] = {}  # the full supernet's block graphs
        self._full_capture_s = 0.0
        self._full_bytes = 0
        self._full_eager = 0

    def __call__(
        self, dense: torch.Tensor, sparse: torch.Tensor, subnet: Subnet | None = None
    ) -> torch.Tensor:
        if not torch.is_grad_enabled() or not self.net.training:
            return self.net(dense, sparse, subnet)
        if subnet is None:  # the full supernet has static shapes already
            return self.net._run(dense, sparse, self.net._full, None, run_block=self._run_full)
        return self.chain(dense, sparse, subnet)

    def parameters(self) -> Any:
        return self.net.parameters()

    def captured(self) -> int:
        """Block keys of sampled subnets and blocks of the full supernet captured so far."""
        return len(self._blocks) + self.chain.captured()

    @property
    def capture_s(self) -> float:
        return self._full_capture_s + self.chain.capture_s

    @property
    def eager_blocks(self) -> int:
        """Block runs left eager for want of GPU memory."""
        return self._full_eager + self.chain.eager_blocks

    def _run_full(
        self, i: int, dx: torch.Tensor, left: torch.Tensor, right: torch.Tensor, sx: torch.Tensor,
        plan: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        key = ("full", i, dx.shape[0])
        blk = self._blocks.get(key)
        if blk is None:
            blk = _FullBlock(self.net.blocks[i], plan)
            self._capture(key, blk, dx, left, right, sx)
        return blk(dx, left, right, sx)

    def _capture(self, key: tuple, blk: torch.nn.Module, *inputs: torch.Tensor) -> None:
        """Capture `blk` as graphs under `key` when it fits in GPU memory (`room_for_graph`);
        otherwise leave it uncaptured and unkept: the caller runs it eagerly, the same function."""
        device = inputs[0].device
        ok, free_gib = room_for_graph(device, self._full_bytes)
        if not ok:
            if not self._full_eager:
                warnings.warn(f"GPU memory: {free_gib:.1f} GiB free; the full supernet's blocks "
                              "not captured yet run eagerly (slower, same result)", stacklevel=4)  # fmt: skip
            self._full_eager += 1
            return
        sample = tuple(x.detach().clone().requires_grad_(x.requires_grad) for x in inputs)
        cuda = device.type == "cuda"
        before = torch.cuda.memory_reserved(device) if cuda else 0
        self._full_capture_s += capture(blk, sample, amp=self.amp, warmup_iters=self.warmup_iters)
        if cuda:
            self._full_bytes = max(self._full_bytes, torch.cuda.memory_reserved(device) - before)
        self._blocks[key] = blk


class _FullBlock(torch.nn.Module):
    """Block i of the full supernet (every op, every input, maximum sizes) as a module of its
    inputs alone, for capture."""

    def __init__(self, block: torch.nn.Module, plan: object) -> None:
        super().__init__()
        self.block, self.plan = block, plan

    def forward(
        self, dx: torch.Tensor, left: torch.Tensor, right: torch.Tensor, sx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.block(dx, left, right, sx, self.plan)
