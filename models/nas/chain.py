"""Sampled single paths through the supernet over shared node buffers: the blocks' forward and
backward are run block by block by this module, not by autograd across blocks. On CUDA each
block key (block, dense op, sparse op, size classes, batch size) is one captured forward graph and
one backward graph; elsewhere the same two functions run eagerly.

Why: per-block graphs made with torch.cuda.make_graphed_callables (session 7) copy every input
into the graph's own static inputs at each replay (all earlier nodes: ~2 GB per step at batch
8192), keep per graph its own inputs and input gradients (~0.32 GiB per graph at 8192: 196 graphs
took 63 GiB), and hand each node's gradient back to autograd, which sums the readers' gradients in
kernels of their own. Here:
- Node buffers: dense `nd` [B, N, W] and sparse `ns` [B, 16, N, T + 8] (features first) hold
  every node's output in its slot (N = blocks + 1; slot 0 is the stem, zero-padded: the slot
  layout of models/nas/static.py). A block reads all earlier slots as one strided view (no copy,
  no concatenation) and writes its own slot.
- Gradient buffers `gd`, `gs` of the same shapes. A block's backward reads its output gradient
  from its own slot, complete by then (every reader of a node comes later in the forward, so
  earlier in the backward), and its input products add their input gradients into the earlier
  slots inside their matmuls (`static.project`: beta = 1). The last block's backward runs
  first; where it has one input product into a buffer, that product writes it (beta = 0), so a
  step zeroes only a buffer that two products or none of the last block's write
  (`BlockChain.overwrites`).
- A block's parameter gradients are written into per-parameter buffers, assigned as `.grad`
  (each parameter belongs to one block, so a step writes each at most once).
- One graph memory pool per block position: what a key keeps between its forward and backward
  replay is reused by every other key of that position, never two of which run in one step.
To autograd the whole chain is one function (`_Chain`) from the embedding output to the head's
input, so `loss.backward()` drives it and the embedding and head stay ordinary modules.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.nas.ops import EMB
from models.nas.runtime import HOST_CUDA_LOCK
from models.nas.space import Subnet, get_space
from models.nas.static import (
    PARAM_LEAVES,
    Layout,
    Sink,
    StaticBlock,
    block_caps,
    subnet_masks,
)


@dataclass
class NodeBuffers:
    """Node outputs and their gradients in the slot layout, plus the per-step control data the
    graphs read (so a replay needs no inputs of its own)."""

    nd: torch.Tensor  # [B, N, W] dense node outputs
    ns: torch.Tensor  # [B, 16, N, T + 8] sparse node outputs, features first
    gd: torch.Tensor  # gradients of nd
    gs: torch.Tensor  # gradients of ns
    mask_flat: torch.Tensor  # every block's packed mask (static.block_mask), concatenated
    masks: list[torch.Tensor]  # block i's, a view of mask_flat
    # [B, 2, W] per block: a binary op's (left, right) nodes, copied in before it runs (one per
    # block: the backward reads them; separate tensors: separate autograd version counters)
    pairs: list[torch.Tensor]
    # a binary op's input gradients, added into gd after its backward: flat, so that each side
    # is a dense [B, width] (`pair_grad`) and their copy from the block's backward one
    # multi-tensor kernel (strided sides of a [B, 2, W] buffer took one strided copy each)
    gpair: torch.Tensor
    layout: Layout
    # What may be non-zero, tracked on the host so that only that is zeroed: per node slot the
    # dense columns and op tokens its last writer wrote (its size classes) and whether it wrote
    # the dense->sparse tokens; per pair buffer side the columns last copied in.
    written: list[list[int]] = field(default_factory=list)
    pair_written: list[list[int]] = field(default_factory=list)

    @classmethod
    def make(cls, layout: Layout, batch: int, dtype: torch.dtype, device: torch.device) -> Any:
        n = layout.n_blocks + 1
        nd = torch.zeros(batch, n, layout.node_width, dtype=dtype, device=device)
        ns = torch.zeros(batch, EMB, n, layout.node_tokens, dtype=dtype, device=device)
        sizes = [layout.mask_size(i) for i in range(layout.n_blocks)]
        flat = torch.zeros(sum(sizes), device=device)
        pairs = [torch.zeros(batch, 2, layout.node_width, dtype=dtype, device=device)
                 for _ in range(layout.n_blocks)]  # fmt: skip
        bufs = cls(nd, ns, torch.zeros_like(nd), torch.zeros_like(ns), flat,
                   list(flat.split(sizes)), pairs, torch.zeros_like(pairs[0]).view(-1),
                   layout)  # fmt: skip
        bufs.written = [[0, 0, 0] for _ in range(n)]
        bufs.pair_written = [[0, 0] for _ in range(layout.n_blocks)]
        return bufs

    def forget(self) -> None:
        """Take every block slot and pair buffer as written in full (contents unknown): the next
        step zeroes whatever it does not write."""
        lay = self.layout
        self.written = [[lay.node_width, lay.node_tokens, 1] for _ in self.written]
        self.pair_written = [[lay.node_width, lay.node_width] for _ in self.pair_written]

    def clear_slot(self, n: int) -> None:
        """Node slot n all zeros (a dead block's: read by no live block, but it must hold finite
        values); nothing to do when nothing was written there since it was last cleared."""
        if any(self.written[n]):
            self.nd[:, n].zero_()
            self.ns[:, :, n].zero_()
            self.written[n] = [0, 0, 0]

    def prepare_slot(self, n: int, width: int, tokens: int) -> None:
        """Before a block that writes node slot n's first `width` columns, first `tokens` op
        tokens and its dense->sparse tokens: zero what an earlier writer left past those."""
        w, t, _ = self.written[n]
        if w > width:
            self.nd[:, n, width:w].zero_()
        if t > tokens:  # past the op tokens: the dense->sparse tokens are rewritten after this
            self.ns[:, :, n, tokens:t].zero_()
        self.written[n] = [width, tokens, 1]

    def copy_pair(self, i: int, k: int, node: int, width: int) -> None:
        """Side k of block i's pair buffer := node `node`'s dense slot, of which only the first
        `width` columns can be non-zero (its size class): copies those, zeroes stale columns."""
        dst, last = self.pairs[i][:, k], self.pair_written[i][k]
        dst[:, :width].copy_(self.nd[:, node, :width])
        if last > width:
            dst[:, width:last].zero_()
        self.pair_written[i][k] = width

    def pair_grad(self, k: int, width: int) -> torch.Tensor:
        """Side k's gradient of a binary op whose inputs are `width` wide: a dense [B, width]
        view of `gpair`."""
        n = self.nd.shape[0] * width
        return self.gpair[k * n : (k + 1) * n].view(-1, width)

    def load_masks(self, masks: list[np.ndarray]) -> None:
        """This step's masks into the device buffer (pinned, asynchronous)."""
        src = torch.from_numpy(np.concatenate(masks))
        if self.mask_flat.is_cuda:  # the host allocator keeps a pinned block until it is copied
            src = src.pin_memory()
        self.mask_flat.copy_(src, non_blocking=True)


@dataclass
class _Run:
    """A live block of one step: its entry, and a binary op's (left, right) node indices."""

    entry: _Entry
    pair: tuple[int, int] | None


@dataclass
class _Forward:
    """What a block's backward needs from its forward: its three outputs (with autograd history),
    a binary op's two input leaves, and the parameter leaves its ops took (`StaticBlock.take`:
    (parameter, index into it, leaf))."""

    outs: tuple[torch.Tensor, ...]
    pair: tuple[torch.Tensor, ...]
    taken: list[tuple[nn.Parameter, tuple, torch.Tensor]]


@dataclass
class _Entry:
    """One block key: its block, and once captured its (forward, backward) graphs."""

    block: StaticBlock
    params: list[nn.Parameter]
    # those that get a gradient, each with the length of its gradient's live prefix (`live_prefix`)
    grad_params: list[tuple[nn.Parameter, int | None]] = field(default_factory=list)
    graphs: tuple[Any, Any] | None = None
    outs: _Forward | None = None  # eager: `_block_forward`'s, for the backward


class _Chain(torch.autograd.Function):
    """Embedding output [B, n_sparse, 16] -> logits [B], through the live blocks of a plan
    (`BlockChain._forward`, `BlockChain._backward`) and the head (`_head_forward`)."""

    @staticmethod
    def forward(
        ctx: Any, chain: BlockChain, plan: list, bufs: NodeBuffers, dense: torch.Tensor,
        emb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        ctx.chain, ctx.plan, ctx.bufs = chain, plan, bufs
        ctx.save_for_backward(weight)
        chain._forward(plan, bufs, dense, emb)
        return _head_forward(chain.layout, bufs, weight, bias)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        bufs = ctx.bufs
        last = ctx.plan[-1].entry.block  # always live
        for buf, written in zip((bufs.gd, bufs.gs), ctx.chain.overwrites(last), strict=True):
            if not written:
                buf.zero_()
        gw, gb = _head_backward(ctx.chain.layout, bufs, weight, g)
        return None, None, None, None, ctx.chain._backward(ctx.plan, bufs), gw, gb


def _head_inputs(lay: Layout, bufs: NodeBuffers) -> tuple[torch.Tensor, torch.Tensor]:
    """The last node's dense output [B, W] and its token slot as rows [B * 16, T + 8] (features
    first: row b * 16 + f holds feature f of every token), both views of the node buffers."""
    b, last = bufs.nd.shape[0], lay.n_blocks
    return bufs.nd[:, last, : lay.width], bufs.ns[:, :, last, : lay.slot].reshape(b * EMB, -1)


def _head_weights(lay: Layout, weight: torch.Tensor, dtype: torch.dtype) -> Any:
    """The head's weight [1, W + (T + 8) 16] (tokens flattened token-major) as its dense part [W]
    and its token part [T + 8, 16], in `dtype`."""
    w = weight[0].to(dtype)
    return w[: lay.width], w[lay.width :].view(lay.slot, EMB)


def _head_forward(
    lay: Layout, bufs: NodeBuffers, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """The head's logits [B] (in float32 at least) from the last node's slots, without gathering
    them into one [B, W + (T + 8) 16] input: the dense part a matrix-vector product, the token
    part the diagonal of [B * 16, T + 8] x [T + 8, 16] (feature f's row times its weights)."""
    x_d, x_s = _head_inputs(lay, bufs)
    w_d, w_s = _head_weights(lay, weight, x_d.dtype)
    b, acc = x_d.shape[0], torch.promote_types(x_d.dtype, torch.float32)
    tokens = torch.mm(x_s, w_s).view(b, EMB * EMB)[:, :: EMB + 1].sum(1, dtype=acc)
    return torch.mv(x_d, w_d).to(acc) + tokens + bias.to(acc)


def _head_backward(
    lay: Layout, bufs: NodeBuffers, weight: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's input gradients written into the last node's gradient slots (g times the
    weights), and its (weight, bias) gradients."""
    x_d, x_s = _head_inputs(lay, bufs)
    w_d, w_s = _head_weights(lay, weight, x_d.dtype)
    b, last = x_d.shape[0], lay.n_blocks
    gx = g.to(x_d.dtype)
    torch.mul(gx[:, None], w_d, out=bufs.gd[:, last, : lay.width])
    torch.mul(gx[:, None, None], w_s.t(), out=bufs.gs[:, :, last, : lay.slot])
    g_d = torch.mv(x_d.t(), gx)
    g_s = torch.einsum("b,bft->tf", gx, x_s.view(b, EMB, -1))
    gw = torch.cat([g_d, g_s.reshape(-1)]).to(weight.dtype)[None]
    return gw, g.sum().to(weight.dtype).reshape(1)


def live_prefix(buf: torch.Tensor, idx: tuple) -> int | None:
    """How many leading elements of a gradient buffer written at `idx` (zeros elsewhere,
    `_write_grads`) can be nonzero: the element count of a contiguous leading slice (a weight's
    first rows: a flat prefix), None when that is not a prefix (the whole buffer is live)."""
    if not idx:
        return None
    part = buf[idx]
    return part.numel() if part.is_contiguous() and part.data_ptr() == buf.data_ptr() else None


def outside(t: torch.Tensor, idx: tuple) -> list[torch.Tensor]:
    """Views of what lies outside t[idx], for idx leading slices from 0 (`StaticBlock.take`'s):
    the rows past idx[0], then the columns past idx[1] of the rows before."""
    out = []
    rows = idx[0].stop if idx else None
    if rows is not None and rows < t.shape[0]:
        out.append(t[rows:])
    cols = idx[1].stop if len(idx) > 1 else None
    if cols is not None and cols < t.shape[1]:
        out.append(t[:rows, cols:])
    return out


def room_for_graph(device: torch.device, need_bytes: int) -> tuple[bool, float]:
    """Whether a capture that may take `need_bytes` fits in GPU memory, and the free GiB: free
    memory (the device's, plus what PyTorch's allocator holds unused: it gives that back when
    short) of at least twice `need_bytes` plus a tenth of the device. Always True off CUDA."""
    if device.type != "cuda":
        return True, float("inf")
    free, total = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free >= 2 * need_bytes + total // 10, free / 2**30


class BlockChain:
    """Callable `(dense, sparse, subnet) -> logits` for training sampled subnets of `net` at
    static shapes (models/nas/static.py) over shared node buffers. `graphs`: capture each block
    key as CUDA graphs on first use (CUDA only; a key whose capture would not fit in GPU memory
    runs eagerly, with one warning). Holds the supernet; owns no weights."""

    def __init__(
        self, net: nn.Module, *, capped: bool = True, graphs: bool = False, warmup_iters: int = 2
    ) -> None:
        self.net, self.capped, self.graphs, self.warmup_iters = net, capped, graphs, warmup_iters
        self.space = get_space(net.space.name)
        self.layout = Layout.of(self.space, net.n_dense, len(net.table_sizes))
        self._entries: dict[tuple, _Entry] = {}
        self._buffers: dict[tuple, NodeBuffers] = {}
        self._grads: dict[int, torch.Tensor] = {}  # id(parameter) -> its gradient buffer
        self._pools: dict[int, Any] = {}  # block position -> graph memory pool
        self._stream: Any = None  # the one capture stream (pools are shared per stream)
        self._amp = False
        self.capture_s = 0.0
        self.graph_bytes = 0  # the most GPU memory one key's capture has taken
        self.eager_blocks = 0  # block runs left eager for want of GPU memory

    def parameters(self) -> Any:
        return self.net.parameters()

    def captured(self) -> int:
        return sum(e.graphs is not None for e in self._entries.values())

    def keys(self) -> list[tuple]:
        return list(self._entries)

    def __call__(self, dense: torch.Tensor, sparse: torch.Tensor, subnet: Subnet) -> torch.Tensor:
        net, batch = self.net, dense.shape[0]
        self._amp = dense.is_cuda and torch.is_autocast_enabled("cuda")
        dtype = torch.get_autocast_dtype("cuda") if self._amp else dense.dtype
        bufs = self._buffers.get((batch, dtype))
        if bufs is None:
            bufs = NodeBuffers.make(self.layout, batch, dtype, dense.device)
            self._buffers[(batch, dtype)] = bufs
        plan = self._plan(subnet, batch, bufs)
        emb = net.embedding(sparse.long() + net.offsets)
        return _Chain.apply(self, plan, bufs, dense, emb, net.head.weight, net.head.bias)

    def block_key(self, i: int, block: Any, batch: int) -> tuple:
        """The key of subnet block `block` at position i: (i, dense op, sparse op, size classes
        or None when not capped, batch size); one pair of graphs per key."""
        caps = None
        if self.capped:
            caps = block_caps(self.space, block.dense_width, block.sparse_tokens)
        return (i, block.dense_op, block.sparse_op, caps, batch)

    def _plan(self, subnet: Subnet, batch: int, bufs: NodeBuffers) -> list[_Run | None]:
        """Each block's run (None: dead), its entry created on first use; uploads the masks."""
        live = set(subnet.live_blocks())
        plan: list[_Run | None] = []
        for i, b in enumerate(subnet.blocks):
            if i not in live:
                plan.append(None)
                continue
            key = self.block_key(i, b, batch)
            e = self._entries.get(key)
            if e is None:
                caps = key[3]
                blk = StaticBlock(self.net.blocks[i], i, b.dense_op, b.sparse_op, self.layout, caps)
                e = self._entries[key] = _Entry(blk, list(blk.parameters()))
            plan.append(_Run(e, b.dense_inputs if e.block.binary else None))
        bufs.load_masks(subnet_masks(subnet, self.layout))
        return plan

    def _forward(
        self, plan: list[_Run | None], bufs: NodeBuffers, dense: torch.Tensor, emb: torch.Tensor
    ) -> None:
        """The stem's outputs into node slot 0, then the live blocks' forward (every node's
        output into its slot; dead blocks' slots cleared)."""
        lay = self.layout
        bufs.nd[:, 0, : lay.n_dense].copy_(dense)
        bufs.ns[:, :, 0, : lay.n_sparse].copy_(emb.transpose(1, 2))
        widths = self._node_widths(plan)
        for i, run in enumerate(plan):
            if run is None:
                bufs.clear_slot(i + 1)
                continue
            e = run.entry
            bufs.prepare_slot(i + 1, e.block.wc, e.block.tc)
            if run.pair is not None:  # a binary op's nodes: plain copies, launched from here
                for k, j in enumerate(run.pair):
                    bufs.copy_pair(i, k, j, widths[j])
            if e.graphs is not None:
                e.graphs[0].replay()
            elif self.graphs and dense.is_cuda and self._room(dense.device):
                self._capture(e, bufs)
                e.graphs[0].replay()
            else:
                with self._autocast():
                    e.outs = self._block_forward(e, bufs)

    def _backward(self, plan: list[_Run | None], bufs: NodeBuffers) -> Any:
        """The blocks' backward from the last node's gradient (written by `_head_backward`,
        after the gradient buffers were zeroed); returns the embedding output's gradient."""
        lay = self.layout
        widths = self._node_widths(plan)
        for run in reversed([r for r in plan if r is not None]):
            e = run.entry
            if e.graphs is not None:
                e.graphs[1].replay()
            else:
                e.grad_params = self._block_backward(e, e.outs, bufs)
                e.outs = None
            if run.pair is not None:  # past a node's size class its gradient is read by nobody
                width = lay.left_width(e.block.i)
                for k, j in enumerate(run.pair):
                    bufs.gd[:, j, : widths[j]].add_(bufs.pair_grad(k, width)[:, : widths[j]])
            for p, live in e.grad_params:
                g = self._grads[id(p)]
                if p.grad is None:
                    g.live_numel = live  # read by optim.clip_and_step (a sum has none: whole)
                    p.grad = g
                else:
                    p.grad = p.grad + g
        return bufs.gs[:, :, 0, : lay.n_sparse].transpose(1, 2)  # the embedding output's

    def overwrites(self, blk: StaticBlock) -> tuple[bool, bool]:
        """Whether block `blk`'s (dense, sparse) sink product writes over the gradient buffer
        instead of adding into it. The last block is always live, so its backward runs first;
        its input products cover every slot but the last, which the head's backward writes.
        Where it has exactly one product into a buffer, that product writes it (the others
        add into it later) and the buffer needs no zeroing."""
        last = blk.i == self.layout.n_blocks - 1
        d, s = (last and k == 1 for k in blk.sink_products())
        return d, s

    def _node_widths(self, plan: list[_Run | None]) -> list[int]:
        """Columns of each node's dense slot that can be non-zero in this plan: the stem's
        features, a live block's width class (0 for a dead block)."""
        return [self.layout.n_dense] + [r.entry.block.wc if r else 0 for r in plan]

    def _block_forward(self, e: _Entry, bufs: NodeBuffers) -> _Forward:
        """Block e's outputs from the buffers, written into its slot (past them the slot was
        zeroed by `NodeBuffers.prepare_slot`); returns them with their autograd history, a
        binary op's inputs and the parameters its ops took, for `_block_backward`."""
        blk, lay, batch = e.block, self.layout, bufs.nd.shape[0]
        n, pair = blk.i + 1, ()
        over_d, over_s = self.overwrites(blk)
        if PARAM_LEAVES["impl"] == "on":
            blk.begin_take()
        with torch.enable_grad():
            if blk.binary:
                width = lay.left_width(blk.i)
                # two leaves, not one [B, 2, width] leaf: their gradients come apart (no stack)
                pair = tuple(bufs.pairs[blk.i][:, k, :width].detach().requires_grad_()
                             for k in range(2))  # fmt: skip
                dense_in, sink_d = pair, None
            else:  # views, not copies: `view` raises rather than copy
                dense_in = bufs.nd[:, :n].view(batch, -1)
                sink_d = Sink(bufs.gd[:, :n].view(batch, -1), over_d)
            sparse_in = bufs.ns[:, :, :n].view(batch, EMB, -1)
            sink_s = Sink(bufs.gs[:, :, :n].view(batch, EMB, -1), over_s)
            slots = self._out_slots(blk, bufs.nd, bufs.ns)
            try:
                outs = blk.parts(bufs.masks[blk.i], dense_in, sparse_in, (sink_d, sink_s),
                                 slots[:2])  # fmt: skip
            finally:
                taken = blk.end_take()
        with torch.no_grad():
            for dst, src in zip(slots, outs, strict=True):
                if src.data_ptr() != dst.data_ptr() or src.stride() != dst.stride():
                    dst.copy_(src)  # (the dense output and op tokens may be written in place)
        return _Forward(outs, pair, taken)

    def _block_backward(
        self, e: _Entry, fwd: _Forward, bufs: NodeBuffers
    ) -> list[tuple[nn.Parameter, int | None]]:
        """Block e's backward from its slot's output gradient: input gradients added into the
        gradient buffers (a binary op's: written into `gpair`), parameter gradients written
        into theirs. Returns the parameters that got one, each with its gradient's live prefix
        (`live_prefix`)."""
        blk, n_pair, n_taken = e.block, len(fwd.pair), len(fwd.taken)
        grad_out = self._out_slots(blk, bufs.gd, bufs.gs)
        leaves = [*fwd.pair, *(v for _, _, v in fwd.taken), *e.params]
        grads = torch.autograd.grad(fwd.outs, leaves, grad_out, allow_unused=True)
        if n_pair:  # both sides' gradients in one multi-tensor copy
            width = self.layout.left_width(blk.i)
            torch._foreach_copy_([bufs.pair_grad(k, width) for k in range(2)], list(grads[:2]))
        g_taken = zip(fwd.taken, grads[n_pair : n_pair + n_taken], strict=True)
        parts = [(p, idx, g) for (p, idx, _), g in g_taken if g is not None]
        whole = [(p, (), g) for p, g in zip(e.params, grads[n_pair + n_taken :], strict=True)
                 if g is not None]  # fmt: skip
        taken = {id(p) for p, _, _ in fwd.taken}
        if any(id(p) in taken for p, _, _ in whole):  # its whole gradient would be lost
            raise RuntimeError(f"block {blk.i}: a parameter was used both taken and whole")
        parts += whole
        self._write_grads(parts)
        return [(p, live_prefix(self._grads[id(p)], idx)) for p, idx, _ in parts]

    def _write_grads(self, parts: list[tuple[nn.Parameter, tuple, torch.Tensor]]) -> None:
        """Each (parameter, index, gradient): the gradient into the parameter's gradient buffer
        at the index, zeros around it. Multi-tensor copies (one per gradient dtype, of those
        laid out as their destination) and one multi-tensor zeroing: ~20 gradients a block,
        most of them tiny."""
        copies: dict[torch.dtype, tuple[list, list]] = {}
        rest: list[torch.Tensor] = []
        for p, idx, g in parts:
            buf = self._grad_buffer(p)
            dst = buf[idx]
            if dst.stride() == g.stride() and dst.is_contiguous():
                dsts, srcs = copies.setdefault(g.dtype, ([], []))
                dsts.append(dst)
                srcs.append(g)
            else:
                dst.copy_(g)
            rest += outside(buf, idx)
        for dsts, srcs in copies.values():
            torch._foreach_copy_(dsts, srcs)
        dense = [t for t in rest if t.is_contiguous()]
        if dense:
            torch._foreach_zero_(dense)
        for t in rest:
            if not t.is_contiguous():
                t.zero_()

    def _out_slots(
        self, blk: StaticBlock, dense: torch.Tensor, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where block `blk`'s `parts` go in node (or gradient) buffers: its dense slot's first
        wc columns and its sparse slot's first tc tokens and last 8, token-major views."""
        n, lay = blk.i + 1, self.layout
        tok = sparse[:, :, n].transpose(1, 2)
        return dense[:, n, : blk.wc], tok[:, : blk.tc], tok[:, lay.tokens : lay.slot]

    def _grad_buffer(self, p: nn.Parameter) -> torch.Tensor:
        g = self._grads.get(id(p))
        if g is None:
            g = self._grads[id(p)] = torch.zeros_like(p)
        return g

    def _autocast(self) -> Any:
        """bf16 autocast as the caller's, without the weight-cast cache (a cast inside a graph
        must be replayed, not remembered)."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._amp, cache_enabled=False)

    def _room(self, device: torch.device) -> bool:
        ok, free_gib = room_for_graph(device, self.graph_bytes)
        if not ok:
            if not self.eager_blocks:
                warnings.warn(
                    f"GPU memory: {self.captured()} block keys captured, {free_gib:.1f} GiB free; "
                    "keys not captured yet run eagerly (slower, same result)",
                    stacklevel=5,
                )
            self.eager_blocks += 1
        return ok

    def _capture(self, e: _Entry, bufs: NodeBuffers) -> None:
        """Warm up, then capture e's forward and backward as graphs in its position's pool. The
        warm-up runs write e's output slot (the values the replay writes too), write into the
        gradient buffers (written over or zeroed before the backward) and parameter-gradient buffers
        (rewritten by the backward replay): no effect on the step."""
        t0 = time.perf_counter()
        device = bufs.nd.device
        for p in e.params:  # allocated outside the graph pool: they outlive every capture
            self._grad_buffer(p)
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        stream = self._stream
        pool = self._pools.setdefault(e.block.i, torch.cuda.graph_pool_handle())
        before = torch.cuda.memory_reserved(device)
        with HOST_CUDA_LOCK, self._autocast():
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(self.warmup_iters):
                    e.grad_params = self._block_backward(e, self._block_forward(e, bufs), bufs)
            torch.cuda.current_stream(device).wait_stream(stream)
            fwd, bwd = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(fwd, pool=pool, stream=stream):
                outs = self._block_forward(e, bufs)
            with torch.cuda.graph(bwd, pool=pool, stream=stream):
                self._block_backward(e, outs, bufs)
            del outs  # its memory returns to the pool, for this position's other keys
        e.graphs = (fwd, bwd)
        self.graph_bytes = max(self.graph_bytes, torch.cuda.memory_reserved(device) - before)
        self.capture_s += time.perf_counter() - t0
