"""CUDA-graph training. Sampled subnets of the supernet: one captured forward + backward graph per
(block, dense op, sparse op, size classes), replayed with the subnet's choices passed as data
(models/nas/static.py). Standalone models (`graph_model`): the whole forward + backward as one
graph, since their shapes never change.

A single-path step through the supernet launches ~700 small kernels from Python; on an H200 at
batch 8192 the host, not the GPU, set the pace (~41 ms per step against ~18 ms of GPU work).
With the blocks replayed as graphs a step is 7 replays forward and 7 backward plus a few dozen
eager kernels (embedding, input copies, head, loss, clipping and Adagrad), GPU bound
(benchmarks/train_supernet.py has the figures: 15.5 ms per step with size classes, 22.3 ms with
every block at maximum sizes, in the same run; 14.8 ms since).

A block reads its inputs at the layout's maximum sizes and computes its outputs at the size
classes of its width and token count (`static.block_caps`: widths 128, 512 or 1024 and 32 or 64
tokens for nasrec-full), then pads them (`capped=False`: every block at maximum sizes).
Graphs are captured lazily, the first time a block meets an op pair and size classes at a batch
size (at most 7 x 8 x 6 per batch size for nasrec-full), with `torch.cuda.make_graphed_callables`
under bf16 autocast without the weight-cast cache (graphs replay the casts). Each holds its own
static inputs, activations and input gradients: ~0.32 GiB per graph at batch 8192 (196 graphs
took 62.9 GiB), so a block whose graph would not fit in the free GPU memory runs eagerly
(`_room_for_graph`). The full supernet's warm-up steps replay one graph per block too (their
shapes are static already); anything in eval mode or under `torch.no_grad` runs eagerly.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from models.nas.runtime import HOST_CUDA_LOCK
from models.nas.space import Subnet, get_space
from models.nas.static import Layout, StaticBlock, block_caps, block_inputs, static_forward
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
    """Callable like the supernet (`(dense, sparse, subnet=None) -> logits`), replaying per-block
    CUDA graphs for sampled subnets in training. Holds the supernet; owns no weights."""

    def __init__(
        self, net: torch.nn.Module, *, amp: bool = True, warmup_iters: int = 3, capped: bool = True
    ) -> None:
        self.net, self.amp, self.warmup_iters, self.capped = net, amp, warmup_iters, capped
        self.space = get_space(net.space.name)
        self.layout = Layout.of(self.space, net.n_dense, len(net.table_sizes))
        self._blocks: dict[tuple, torch.nn.Module] = {}
        self.capture_s = 0.0
        self.graph_bytes = 0  # the most GPU memory one block capture has taken
        self.eager_blocks = 0  # block runs left eager for want of GPU memory

    def __call__(
        self, dense: torch.Tensor, sparse: torch.Tensor, subnet: Subnet | None = None
    ) -> torch.Tensor:
        if not torch.is_grad_enabled() or not self.net.training:
            return self.net(dense, sparse, subnet)
        if subnet is None:  # the full supernet has static shapes already
            return self.net._run(dense, sparse, self.net._full, None, run_block=self._run_full)
        return static_forward(self.net, dense, sparse, subnet, run_block=self._run_block)

    def parameters(self) -> Any:
        return self.net.parameters()

    def captured(self) -> int:
        return len(self._blocks)

    def _run_block(
        self, i: int, ops: tuple[str, str], mask: torch.Tensor, subnet: Subnet, nodes_d: list,
        nodes_s: list,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        b = subnet.blocks[i]
        caps = block_caps(self.space, b.dense_width, b.sparse_tokens) if self.capped else None
        key = (i, *ops, caps, nodes_d[0].shape[0])
        blk = self._blocks.get(key)
        fresh = blk is None
        if fresh:
            blk = StaticBlock(self.net.blocks[i], i, ops[0], ops[1], self.layout, caps)
        inputs = block_inputs(blk, subnet, nodes_d, nodes_s)
        if fresh:
            self._capture(key, blk, mask, *inputs, every_grad=True)
        return blk(mask, *inputs)

    def _room_for_graph(self, device: torch.device) -> bool:
        """Whether another graph fits in GPU memory: free memory (the device's, plus what
        PyTorch's allocator holds unused: it gives that back when short) of at least twice the
        largest capture so far plus a tenth of the device. Each graph keeps its static tensors
        for good; with size classes nasrec-full has up to 7 x 8 x 6 graphs per batch size, ~100
        GiB at batch 8192. Without room the block runs eagerly, with a warning the first time."""
        if device.type != "cuda":
            return True
        free, total = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        if free >= 2 * self.graph_bytes + total // 10:
            return True
        if not self.eager_blocks:
            warnings.warn(
                f"GPU memory: {len(self._blocks)} block graphs captured, {free / 2**30:.1f} "
                "GiB free; block shapes not captured yet run eagerly (slower, same result)",
                stacklevel=4,
            )
        return False

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

    def _capture(
        self, key: tuple, blk: torch.nn.Module, *inputs: torch.Tensor, every_grad: bool = False
    ) -> None:
        """Capture `blk` as graphs under `key` when it fits in GPU memory (`_room_for_graph`);
        otherwise leave it uncaptured and unkept: the caller runs it eagerly, the same function.
        `every_grad`: every input after the first (the mask) is captured as requiring grad. A
        node the subnet does not read comes detached (static.block_inputs) so that autograd does
        not sum its zero gradient, but another subnet's replay of the graph may read it."""
        if not self._room_for_graph(inputs[0].device):
            self.eager_blocks += 1
            return
        sample = tuple(
            x.detach().clone().requires_grad_(x.requires_grad or (every_grad and k > 0))
            for k, x in enumerate(inputs)
        )
        cuda = sample[0].is_cuda
        before = torch.cuda.memory_reserved(sample[0].device) if cuda else 0
        self.capture_s += capture(blk, sample, amp=self.amp, warmup_iters=self.warmup_iters)
        if cuda:
            grown = torch.cuda.memory_reserved(sample[0].device) - before
            self.graph_bytes = max(self.graph_bytes, grown)
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
