"""Static-shape execution of a sampled subnet on the supernet: every node at maximum size, each
block's outputs computed at the size classes of its width and token count (`block_caps`) and
padded, the subnet's choices (inputs, widths, token counts, switches) given as data (masks), so
one block's work has the same shapes and kernels for every subnet that picks the same two ops and
classes there. That is what CUDA graphs need (models/nas/graphs.py captures one graph per block,
op pair and size classes).

Equivalence with the sliced path (`Supernet.forward(..., subnet)`), to rounding:
- Invariant: every node output is exactly zero outside its valid part (dense columns >= width,
  tokens outside [0, t) and outside the dense->sparse slot when that switch is off).
- A block's dense (sparse) input is the concatenation of all earlier nodes in the supernet's
  max-width layout; the weight columns of the unselected nodes are multiplied by 0 and those of the
  selected ones by 1, so the full-width product equals the product over the selected columns (and
  unselected inputs and weight columns get exactly zero gradient; the unselected nodes are passed
  detached, so that zero is not added into their gradients).
- Outputs past the chosen width / token count are computed and then zeroed; LayerNorm over the
  first d features is computed with masked sums (`masked_layer_norm`).
- Attention excludes keys at or past t (the token projection gives them a bias, not zero).
- The Dot-Product keeps k_max sparse tokens with those past k zeroed: the pairs of the first k + 1
  tokens are the prefix of the pairs at k_max and the others are zero. Whether an op projects its
  output (pairs != d, max(left, right) != d) is a 0/1 flag: both results are computed.
Dead blocks are not run. The full supernet needs none of this: its shapes are static already.

The mask of block i, one float32 vector (`block_mask`):
  [dense node selection (i + 1) | sparse node selection (i + 1) | width mask (W) | token mask (T) |
   Dot token mask (k_max) | flags: dot identity, binary identity, sparse->dense, dense->sparse].
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.nas import kernels
from models.nas.ops import EMB, dot_pairs, dot_tokens
from models.nas.space import BINARY_DENSE_OPS, D2S_TOKENS, SearchSpace, Subnet, get_space

N_FLAGS = 4
ALIGN = 8


@dataclass(frozen=True)
class Layout:
    """Maximum sizes of one supernet."""

    n_dense: int
    n_sparse: int
    width: int  # W: max dense width
    tokens: int  # T: max op tokens
    n_blocks: int

    @property
    def slot(self) -> int:
        """Tokens of a block's sparse output: T op tokens + the dense->sparse tokens."""
        return self.tokens + D2S_TOKENS

    @property
    def k_max(self) -> int:
        return dot_tokens(self.width)

    def mask_size(self, i: int) -> int:
        return 2 * (i + 1) + self.width + self.tokens + self.k_max + N_FLAGS

    def left_width(self, i: int) -> int:
        """Width a binary op's inputs are zero-padded to in block i (the supernet's left_max)."""
        return max(self.n_dense, self.width) if i else self.n_dense

    @classmethod
    def of(cls, space: SearchSpace, n_dense: int, n_sparse: int) -> Layout:
        return cls(n_dense, n_sparse, space.max_width, space.max_tokens, space.n_blocks)


# Size classes of the graphed blocks: a block computes its outputs at the class of its width and
# token count (the smallest class >= the choice), not at the maximum, and pads them to the layout.
# Classes are the smallest choices >= these fractions of the maximum (nasrec-full: widths 128, 512,
# 1024; tokens 32, 64). Three width classes take ~44 % of the maximum width on average, against
# ~34 % for every width its own class, with one graph per class and op pair (memory, capture time).
WIDTH_CLASS_FRACTIONS = (1 / 8, 1 / 2, 1.0)
TOKEN_CLASS_FRACTIONS = (1 / 2, 1.0)


@functools.cache
def size_classes(choices: tuple[int, ...], fractions: tuple[float, ...]) -> tuple[int, ...]:
    """The smallest choice >= f * max(choices) for each fraction f, without repeats."""
    top = max(choices)
    return tuple(sorted({min(c for c in choices if c >= f * top) for f in fractions}))


def class_of(value: int, classes: tuple[int, ...]) -> int:
    """The smallest class >= value."""
    return min(c for c in classes if c >= value)


def block_caps(space: SearchSpace, width: int, tokens: int) -> tuple[int, int]:
    """(width cap, token cap) a block with these choices computes at (its size classes)."""
    w = class_of(width, size_classes(space.dense_widths, WIDTH_CLASS_FRACTIONS))
    return w, class_of(tokens, size_classes(space.sparse_tokens, TOKEN_CLASS_FRACTIONS))


def block_mask(subnet: Subnet, i: int, layout: Layout, widths: list[int]) -> np.ndarray:
    """Block i's packed mask (module docstring); `widths[j]` is node j's dense width."""
    b = subnet.blocks[i]
    n = i + 1
    m = np.zeros(layout.mask_size(i), np.float32)
    binary = b.dense_op in BINARY_DENSE_OPS
    if not binary:
        m[list(b.dense_inputs)] = 1.0
    m[[n + j for j in b.sparse_inputs]] = 1.0
    at = 2 * n
    m[at : at + b.dense_width] = 1.0
    at += layout.width
    m[at : at + b.sparse_tokens] = 1.0
    at += layout.tokens
    k = dot_tokens(b.dense_width)
    m[at : at + k] = 1.0
    at += layout.k_max
    wl, wr = (widths[j] for j in b.dense_inputs) if binary else (0, 0)
    m[at] = float(dot_pairs(k) == b.dense_width)
    m[at + 1] = float(max(wl, wr) == b.dense_width)
    m[at + 2] = float(b.sparse_to_dense)
    m[at + 3] = float(b.dense_to_sparse)
    return m


def split_mask(mask: torch.Tensor, i: int, layout: Layout) -> dict[str, torch.Tensor]:
    """Views of block i's packed mask by name (static slices: capturable)."""
    n, out, at = i + 1, {}, 0
    for name, size in (("sel_d", n), ("sel_s", n), ("dmask", layout.width),
                       ("tmask", layout.tokens), ("kmask", layout.k_max), ("flags", N_FLAGS)):  # fmt: skip
        out[name] = mask[at : at + size]
        at += size
    return out


def wide(x: torch.Tensor) -> torch.Tensor:
    """Half-precision values in float32; float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _masked_ln(
    y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, eps: float
) -> torch.Tensor:
    y = wide(y)
    count = mask.sum()
    mean = (y * mask).sum(-1, keepdim=True) / count
    xc = (y - mean) * mask
    var = xc.square().sum(-1, keepdim=True) / count
    return (xc * torch.rsqrt(var + eps) * w + b) * mask


# "auto": the masked LayerNorm through torch.compile on CUDA (a dozen elementwise kernels fused into
# a few: inside a CUDA graph its Python cost is gone, so only the GPU's counts), falling back to
# the plain version for good if compilation fails; "eager": the plain version.
MASKED_LN = {"impl": "auto"}
_COMPILED: dict[str, object] = {}


def masked_layer_norm(
    y: torch.Tensor, ln: nn.LayerNorm | None, mask: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm over the features where `mask` is 1 (with the first affine weights), zero
    elsewhere: equals F.layer_norm(y[..., :d], (d,), w[:d], b[:d]) padded with zeros. `y` and
    `mask` may be narrower than `ln` (a capped block): its first affine weights are used."""
    if ln is None:
        return wide(y) * mask
    size = mask.shape[-1]
    w, b = ln.weight[:size], ln.bias[:size]
    if y.is_cuda and MASKED_LN["impl"] == "auto":
        try:
            if "mln" not in _COMPILED:
                _COMPILED["mln"] = torch.compile(_masked_ln, dynamic=False)
            return _COMPILED["mln"](y, w, b, mask, eps)
        except Exception:  # noqa: BLE001 - no compiler toolchain: the plain version
            MASKED_LN["impl"] = "eager"
    return _masked_ln(y, w, b, mask, eps)


def token_norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm of each token over its 16 features (the fused kernel on CUDA)."""
    return kernels.token_layer_norm(x, ln.weight, ln.bias, ln.eps)


def token_project(xt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Linear over the token axis: xt [B, 16, N] (features first, as `_cat_tokens` makes it),
    weight [rows, N] -> [B, rows, 16] (a transposed view). One matmul over B * 16 rows: a
    [B, N, 16] input would be copied transposed first (~2.3 GB per step at batch 8192)."""
    return F.linear(xt, weight, bias).transpose(1, 2)


def owners(first: int, rest: int, n: int) -> torch.Tensor:
    """Node index of each column of a concatenation of node 0 (`first` wide) and n - 1 nodes of
    `rest` each: the map from a node selection to a column mask."""
    sizes = torch.tensor([first] + [rest] * (n - 1))
    return torch.repeat_interleave(torch.arange(n), sizes)


class StaticBlock(nn.Module):
    """Block i of a supernet with one dense and one sparse op, at static shapes: its inputs at the
    layout's maximum sizes, its outputs computed at `caps` = (width cap, token cap) (default: the
    maximum; `block_caps` gives a subnet block's size classes) and zero-padded to the layout.

    forward(mask, *inputs): inputs are the i + 1 dense nodes (unary dense op) or the (left, right)
    pair zero-padded to `layout.left_width(i)` (binary op), then the i + 1 sparse nodes. Returns
    (dense [B, W], sparse [B, T + 8, 16]), in bf16 under CUDA autocast (every consumer casts to
    bf16 for its matmul anyway), else float32. Holds (does not copy) the supernet's modules.
    Unselected inputs are removed by zeroing their weight columns (a weight is far smaller than a
    batch of inputs): their products and their gradients are then exactly zero.
    """

    def __init__(
        self, block: nn.Module, i: int, dense_op: str, sparse_op: str, layout: Layout,
        caps: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.i, self.layout = i, layout
        self.wc, self.tc = caps or (layout.width, layout.tokens)
        self.kc = dot_tokens(self.wc)
        self.dense_op, self.sparse_op = dense_op, sparse_op
        self.dense = block.dense[dense_op]
        self.sparse = block.sparse[sparse_op]
        self.d2s, self.s2d, self.s2d_ln = block.d2s, block.s2d, block.s2d_ln
        self.binary = dense_op in BINARY_DENSE_OPS
        device = block.d2s.weight.device
        n = i + 1
        self.register_buffer("dense_owner", owners(layout.n_dense, layout.width, n).to(device))
        self.register_buffer("token_owner", owners(layout.n_sparse, layout.slot, n).to(device))
        # Zero columns / tokens that make the inner dimension of the input products a multiple of
        # 8: the BLAS library's fast kernels need aligned bf16 rows (13 + 1024 i is not).
        self.pad_d = -len(self.dense_owner) % ALIGN
        self.pad_s = -len(self.token_owner) % ALIGN

    def forward(self, mask: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lay, n = self.layout, self.i + 1
        m = split_mask(mask, self.i, lay)
        m["dmask"], m["tmask"], m["kmask"] = (
            m["dmask"][: self.wc], m["tmask"][: self.tc], m["kmask"][: self.kc]
        )
        dt = torch.get_autocast_dtype("cuda") if _autocast(mask) else None
        n_dense_in = 2 if self.binary else n
        dense_in, sparse_nodes = inputs[:n_dense_in], inputs[n_dense_in:]
        s = _cat_tokens(sparse_nodes, dt, self.pad_s)  # [B, 16, tokens]
        cols_s = F.pad(m["sel_s"].index_select(0, self.token_owner), (0, self.pad_s))
        flags, dmask = m["flags"], m["dmask"]
        if self.binary:
            y = self._binary(*dense_in, dmask, flags[1])
        else:
            x = _cat(dense_in, dt, self.pad_d)
            cols_d = F.pad(m["sel_d"].index_select(0, self.dense_owner), (0, self.pad_d))
            if self.dense_op == "fc":
                y = self._fc(x, cols_d, dmask)
            else:
                y = self._dot(x, s, cols_d, cols_s, m, flags[0])
        if self.sparse_op == "efc":
            so = self._efc(s, cols_s, m["tmask"])
        else:
            so = self._attention(s, cols_s, m["tmask"])
        out_d = y
        if self.s2d is not None:
            fm = 0.5 * (so.sum(1).square() - so.square().sum(1))
            fm = F.linear(fm, self.s2d.weight[: self.wc], self.s2d.bias[: self.wc])
            out_d = y + masked_layer_norm(fm, self.s2d_ln, dmask) * flags[2]
        extra = F.linear(y, self.d2s.weight[:, : self.wc], self.d2s.bias)
        extra = extra.view(-1, D2S_TOKENS, EMB) * flags[3]
        out_d = padded(out_d, lay.width)
        parts = [so, extra.to(so.dtype)]
        if self.tc < lay.tokens:
            parts.insert(1, so.new_zeros(so.shape[0], lay.tokens - self.tc, EMB))
        out_s = torch.cat(parts, 1)
        if dt is not None:
            return out_d.to(dt), out_s.to(dt)
        return out_d, out_s

    def _fc(self, x: torch.Tensor, cols: torch.Tensor, dmask: torch.Tensor) -> torch.Tensor:
        lin = self.dense.linear
        y = F.linear(x, selected(lin.weight[: self.wc], cols), lin.bias[: self.wc])
        return F.relu(masked_layer_norm(y, self.dense.ln, dmask))

    def _dot(
        self, x: torch.Tensor, s: torch.Tensor, cols_d: torch.Tensor, cols_s: torch.Tensor,
        m: dict[str, torch.Tensor], identity: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        dot, k, wc = self.dense, self.kc, self.wc
        dense_tok = F.linear(x, selected(dot.dense_proj.weight, cols_d), dot.dense_proj.bias)
        if dot.dense_ln is not None:
            dense_tok = F.layer_norm(dense_tok, (EMB,), dot.dense_ln.weight, dot.dense_ln.bias)
        proj_w, proj_b = dot.token_proj.weight[:k], dot.token_proj.bias[:k]
        sparse_tok = token_project(s, selected(proj_w, cols_s), proj_b)
        if dot.token_ln is not None:
            sparse_tok = token_norm(sparse_tok, dot.token_ln)
        sparse_tok = sparse_tok * m["kmask"][:, None]
        tokens = torch.cat([dense_tok.unsqueeze(1), sparse_tok.to(dense_tok.dtype)], 1)
        z = torch.bmm(tokens, tokens.transpose(1, 2)).flatten(1)
        c = dot_pairs(k)
        pairs = z.index_select(1, dot.tri_rows[:c] * (k + 1) + dot.tri_cols[:c])  # [B, pairs(k)]
        same = padded(pairs, wc)
        if dot.out is None:  # pairs(k_max) == W: never projected
            y = same
        else:
            proj = F.linear(pairs, dot.out.weight[:wc, :c], dot.out.bias[:wc])
            y = torch.lerp(wide(proj), wide(same), identity)
        return masked_layer_norm(y, dot.ln, m["dmask"])

    def _binary(
        self, left: torch.Tensor, right: torch.Tensor, dmask: torch.Tensor, identity: torch.Tensor
    ) -> torch.Tensor:
        op, wc = self.dense, self.wc
        if op.gate is not None:
            y = torch.sigmoid(F.linear(left, op.gate.weight, op.gate.bias)) * right
        else:
            y = left + right
        same = padded(y, wc)
        proj = F.linear(y, op.proj.weight[:wc], op.proj.bias[:wc])
        return masked_layer_norm(torch.lerp(wide(proj), wide(same), identity), op.ln, dmask)

    def _efc(self, s: torch.Tensor, cols: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
        efc = self.sparse
        lin = efc.linear
        y = token_project(s, selected(lin.weight[: self.tc], cols), lin.bias[: self.tc])
        if efc.ln is not None:
            y = token_norm(y, efc.ln)
        return F.relu(y) * tmask[:, None]

    def _attention(self, s: torch.Tensor, cols: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
        att = self.sparse
        lin = att.linear
        y = token_project(s, selected(lin.weight[: self.tc], cols), lin.bias[: self.tc])
        y = y.contiguous()  # [B, t, 16]: the q/k/v Linear reads it as B * t rows
        b, t = y.shape[0], y.shape[1]
        q, k, v = att.qkv(y).view(b, t, 3, att.heads, EMB // att.heads).permute(2, 0, 3, 1, 4)
        t_valid = tmask.sum().long()
        a = kernels.fused_attention(q, k, v, t_valid).transpose(1, 2).reshape(b, t, EMB)
        y = token_norm(y + att.out(a), att.ln1)
        y = token_norm(y + att.ff2(F.relu(att.ff1(y))), att.ln2)
        return y * tmask[:, None]


def selected(weight: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """`weight` [out, K] with its columns multiplied by `cols` [K + pad] (0/1), zero-padded."""
    return F.pad(weight, (0, cols.shape[0] - weight.shape[1])) * cols


def _autocast(x: torch.Tensor) -> bool:
    return x.is_cuda and torch.is_autocast_enabled("cuda")


def _cat(
    nodes: tuple[torch.Tensor, ...], dtype: torch.dtype | None, pad: int, dim: int = 1
) -> torch.Tensor:
    """Node outputs concatenated on `dim` (in `dtype` when given: the stem's are float32), then
    `pad` zeros on that axis."""
    if dtype is not None:
        nodes = tuple(x.to(dtype) for x in nodes)
    if pad:
        shape = list(nodes[-1].shape)
        shape[dim] = pad
        nodes = (*nodes, nodes[-1].new_zeros(shape))
    return torch.cat(nodes, dim)


def _cat_tokens(nodes: tuple[torch.Tensor, ...], dtype: torch.dtype | None, pad: int) -> torch.Tensor:
    """Sparse nodes [B, n, 16] concatenated on the token axis, then `pad` zero tokens, features
    first: [B, 16, tokens] (one copy, as `_cat`; `token_project` reads it without another)."""
    return _cat(tuple(x.transpose(1, 2) for x in nodes), dtype, pad, dim=2)


def padded(x: torch.Tensor, width: int) -> torch.Tensor:
    """x [B, w] zero-padded or cut to [B, width]."""
    w = x.shape[1]
    return F.pad(x, (0, width - w)) if w < width else x[:, :width]


def block_inputs(
    block: StaticBlock, subnet: Subnet, nodes_d: list, nodes_s: list
) -> list[torch.Tensor]:
    """The positional inputs (after the mask) of `block` for `subnet`. The nodes the subnet does
    not read come detached: their gradient is exactly zero, and autograd then does not add it
    into the node's gradient (~2 GB of a step's traffic at batch 8192, step_roofline)."""
    i, b = block.i, subnet.blocks[block.i]
    if block.binary:
        a, c = b.dense_inputs
        width = block.layout.left_width(i)
        dense = [padded(nodes_d[a], width), padded(nodes_d[c], width)]
    else:
        dense = _only(nodes_d[: i + 1], b.dense_inputs)
    return [*dense, *_only(nodes_s[: i + 1], b.sparse_inputs)]


def _only(nodes: list[torch.Tensor], read: tuple[int, ...]) -> list[torch.Tensor]:
    """`nodes` with those not in `read` detached."""
    return [x if j in read else x.detach() for j, x in enumerate(nodes)]


def static_forward(
    net: nn.Module,
    dense: torch.Tensor,
    sparse: torch.Tensor,
    subnet: Subnet,
    run_block: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    capped: bool = True,
) -> torch.Tensor:
    """Logits [B] of `subnet` through the supernet `net` at static shapes. `run_block(i, ops,
    mask, subnet, nodes_d, nodes_s) -> (dense, sparse)` runs one live block (default: eagerly,
    each block at its size classes, or at the maximum sizes when not `capped`;
    models/nas/graphs.py replays CUDA graphs)."""
    space = get_space(subnet.space)
    layout = Layout.of(space, net.n_dense, len(net.table_sizes))
    widths = [layout.n_dense] + [b.dense_width for b in subnet.blocks]
    live = set(subnet.live_blocks())
    masks = [block_mask(subnet, i, layout, widths) for i in range(layout.n_blocks)]
    flat = torch.from_numpy(np.concatenate(masks))
    if dense.is_cuda:
        flat = flat.pin_memory().to(dense.device, non_blocking=True)
    else:  # the CPU (no copy), or the meta device (benchmarks/step_roofline.py)
        flat = flat.to(dense.device)
    views, at = [], 0
    for mk in masks:
        views.append(flat[at : at + len(mk)])
        at += len(mk)
    # Every node input requires grad (the raw dense features and dead-block placeholders too), so
    # a block captured as a CUDA graph sees the same requires_grad pattern for every subnet.
    grad = torch.is_grad_enabled()
    nodes_d: list = [dense.detach().requires_grad_(grad)]
    nodes_s: list = [net.embedding(sparse.long() + net.offsets)]
    zero_d = zero_s = None
    for i in range(layout.n_blocks):
        if i not in live:  # never read by a live block: a zero placeholder keeps the layout
            if zero_d is None:
                zero_d = dense.new_zeros(dense.shape[0], layout.width, requires_grad=grad)
                zero_s = nodes_s[0].new_zeros(dense.shape[0], layout.slot, EMB, requires_grad=grad)
            nodes_d.append(zero_d)
            nodes_s.append(zero_s)
            continue
        b = subnet.blocks[i]
        if run_block is None:
            caps = block_caps(space, b.dense_width, b.sparse_tokens) if capped else None
            blk = StaticBlock(net.blocks[i], i, b.dense_op, b.sparse_op, layout, caps)
            d, s = blk(views[i], *block_inputs(blk, subnet, nodes_d, nodes_s))
        else:
            d, s = run_block(i, (b.dense_op, b.sparse_op), views[i], subnet, nodes_d, nodes_s)
        nodes_d.append(d)
        nodes_s.append(s)
    x = torch.cat([nodes_d[-1], nodes_s[-1].flatten(1).to(nodes_d[-1].dtype)], 1)
    return F.linear(x, net.head.weight, net.head.bias).squeeze(-1)
