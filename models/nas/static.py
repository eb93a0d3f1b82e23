"""Static-shape execution of a sampled subnet on the supernet: every node at maximum size, each
block's outputs computed at the size classes of its width and token count (`block_caps`) and
padded, the subnet's choices (inputs, widths, token counts, switches) given as data (masks), so
one block's work has the same shapes and kernels for every subnet that picks the same two ops and
classes there. That is what CUDA graphs need (models/nas/chain.py captures one forward and one
backward graph per block, op pair and size classes).

Equivalence with the sliced path (`Supernet.forward(..., subnet)`), to rounding:
- Invariant: every node output is exactly zero outside its valid part (dense columns >= width,
  tokens outside [0, t) and outside the dense->sparse slot when that switch is off).
- Slot layout: a block reads all earlier nodes, each in a slot of the maximum size (W dense
  columns; T + 8 tokens, features first), node 0 (the stem's n_dense features and n_sparse
  tokens) zero-padded to a slot (`node_slots`); the input products' weights are rearranged to
  match (`slot_columns`). The weight columns of the unselected nodes are multiplied by 0 and
  those of the selected ones by 1, so the product equals the product over the selected columns,
  and unselected inputs and weight columns get exactly zero gradient. Binary ops read the
  (left, right) pair of slots.
- Outputs past the chosen width / token count are computed and then zeroed; LayerNorm over the
  first d features is computed with masked sums (`masked_layer_norm`).
- Attention excludes keys at or past t (the token projection gives them a bias, not zero).
- The Dot-Product keeps k_max sparse tokens with those past k zeroed: the pairs of the first k + 1
  tokens are the prefix of the pairs at k_max and the others are zero. Whether an op projects its
  output (pairs != d, max(left, right) != d) is a 0/1 flag: both results are computed.
Dead blocks are not run. The full supernet needs none of this: its shapes are static already.

The mask of block i, one float32 vector (`block_mask`):
  [dense node selection (i + 1) | sparse node selection (i + 1) | width mask (W) |
   sparse->dense width mask (W: the width mask if the block adds the sparse->dense term, else 0) |
   token mask (T) | Dot token mask (k_max) | flags: dot identity, binary identity, dense->sparse].
The sparse->dense switch is its LayerNorm's column mask (all 0: the term is exactly 0, and so
are its gradients) rather than a flag times the LayerNorm's weight and bias: no kernels for it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.nas import kernels
from models.nas.ops import EMB, dot_pairs, dot_tokens
from models.nas.space import BINARY_DENSE_OPS, D2S_TOKENS, SearchSpace, Subnet, get_space

N_FLAGS = 3


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
    def node_width(self) -> int:
        """Columns of a dense node slot: the widest node (W, or the stem's n_dense if wider)."""
        return max(self.width, self.n_dense)

    @property
    def node_tokens(self) -> int:
        """Tokens of a sparse node slot: the most any node has (T + 8, or the stem's)."""
        return max(self.slot, self.n_sparse)

    @property
    def k_max(self) -> int:
        return dot_tokens(self.width)

    def mask_size(self, i: int) -> int:
        return 2 * (i + 1) + 2 * self.width + self.tokens + self.k_max + N_FLAGS

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
    m[at : at + b.dense_width] = float(b.sparse_to_dense)
    at += layout.width
    m[at : at + b.sparse_tokens] = 1.0
    at += layout.tokens
    k = dot_tokens(b.dense_width)
    m[at : at + k] = 1.0
    at += layout.k_max
    wl, wr = (widths[j] for j in b.dense_inputs) if binary else (0, 0)
    m[at] = float(dot_pairs(k) == b.dense_width)
    m[at + 1] = float(max(wl, wr) == b.dense_width)
    m[at + 2] = float(b.dense_to_sparse)
    return m


def split_mask(mask: torch.Tensor, i: int, layout: Layout) -> dict[str, torch.Tensor]:
    """Views of block i's packed mask by name (static slices: capturable)."""
    n, out, at = i + 1, {}, 0
    for name, size in (("sel_d", n), ("sel_s", n), ("dmask", layout.width),
                       ("s2d_mask", layout.width), ("tmask", layout.tokens),
                       ("kmask", layout.k_max), ("flags", N_FLAGS)):  # fmt: skip
        out[name] = mask[at : at + size]
        at += size
    return out


def wide(x: torch.Tensor) -> torch.Tensor:
    """Half-precision values in float32; float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _masked_ln(
    y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, eps: float, relu: bool,
    out_dtype: torch.dtype | None,
) -> torch.Tensor:  # fmt: skip
    return kernels.masked_layer_norm_reference(y, w, b, mask, eps, relu, out_dtype)


# "auto": the masked LayerNorm, the FM term, the weight selection and the identity switch
# through torch.compile on CUDA (a dozen elementwise kernels and reductions fused into a few,
# forward and backward: inside a CUDA graph their Python cost is gone, so only the GPU's counts),
# each falling back to its plain version for good if its compilation fails; "eager": the plain
# versions (505k samples/s against 730k, H100, session 11; the compilations lengthen the first
# pass over 40 subnets from 15 s to 61 s on the H200).
MASKED_LN = {"impl": "auto"}
_COMPILED: dict[str, Any] = {}  # None: its compilation failed


def _allow_recompiles(n: int) -> None:
    """Let torch.compile keep `n` specialisations of a function (default 8): the masked LayerNorm
    meets one per size class, dtype and batch size, and past the limit it would run eagerly."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(n, getattr(config, name)))


def _run_compiled(fn: Any, x: torch.Tensor, *args: Any, dynamic: bool = False) -> Any:
    """fn(x, *args), compiled (static shapes unless `dynamic`) when x is on CUDA and MASKED_LN
    is "auto"; a function whose compilation fails runs plainly from then on (with one warning)."""
    name = fn.__name__
    if x.is_cuda and MASKED_LN["impl"] == "auto" and _COMPILED.get(name, True) is not None:
        try:
            if name not in _COMPILED:
                _COMPILED[name] = torch.compile(fn, dynamic=dynamic)
                _allow_recompiles(64)
            return _COMPILED[name](x, *args)
        except Exception as exc:  # noqa: BLE001 - no compiler toolchain: the plain version
            warnings.warn(f"torch.compile of {name} failed, running it eagerly: {exc}",
                          stacklevel=2)  # fmt: skip
            _COMPILED[name] = None
    return fn(x, *args)


def _fm(so: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = wide(so)
    total = x.sum(1)
    return (0.5 * (total.square() - x.square().sum(1))).to(so.dtype), total


def _fm_grad(
    so: torch.Tensor, total: torch.Tensor, g_fm: torch.Tensor, g_so: torch.Tensor | None
) -> torch.Tensor:
    g = wide(g_fm)[:, None, :] * (total[:, None, :] - wide(so))
    return (g if g_so is None else g + wide(g_so)).to(so.dtype)


def _gate(pre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(pre) * right


def gate(pre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The Gating op's sigmoid(pre) * right (one fused kernel each way on CUDA: eagerly a sigmoid
    and a product forward, two products and a sigmoid backward, each a pass over [B, W])."""
    return _run_compiled(_gate, pre, right, dynamic=True)


def fm_term(so: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FM interaction of tokens so [B, t, 16] -> [B, 16]: 0.5 ((sum so)^2 - sum so^2) over
    the tokens, computed in float32 at least, in so's dtype; and so again (a view), for the
    caller's other uses of so. so's gradient is then one kernel on CUDA: its gradient through the
    view plus g_fm (sum so - so) per token, in float32 at least (eagerly the FM term's backward
    and then autograd's sum of the two, an [B, t, 16] add of ~30 us at t = 64, batch 8192 on an
    H100; the step measured the same either way, 8.33-8.43 against 8.35-8.52 ms, H100, session
    21). so is kept on ctx, not saved: it is a view of a node buffer that later blocks write
    elsewhere in place, which autograd's version check would take for a modification."""
    return _FMTerm.apply(so)


class _FMTerm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, so: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fm, total = _run_compiled(_fm, so)
        ctx.so = so
        ctx.save_for_backward(total)
        ctx.set_materialize_grads(False)
        return fm, so.view_as(so)

    @staticmethod
    def backward(ctx: Any, g_fm: torch.Tensor | None, g_so: torch.Tensor | None) -> torch.Tensor:
        if g_fm is None:
            return g_so
        (total,) = ctx.saved_tensors
        return _run_compiled(_fm_grad, ctx.so, total, g_fm, g_so)


# "triton": the masked LayerNorm through models/nas/kernels.py's row kernel where it runs (CUDA):
# one kernel each way that also adds a residual, reads strided inputs and output gradients (the
# compiled function's backward first copies a node slot's strided gradient: torch.compile
# wants contiguous tangents) and can write into the node slot; "compiled": `MASKED_LN`'s path.
LN_KERNEL = {"impl": "triton"}


def masked_layer_norm(
    y: torch.Tensor, ln: nn.LayerNorm | None, mask: torch.Tensor, eps: float = 1e-5,
    relu: bool = False, out_dtype: torch.dtype | None = None,
    residual: torch.Tensor | None = None, out: torch.Tensor | None = None,
    affine: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """LayerNorm over the features where `mask` is 1 (with the first affine weights), zero
    elsewhere: equals F.layer_norm(y[..., :d], (d,), w[:d], b[:d]) padded with zeros, then a
    ReLU when `relu`, in `out_dtype` when given (computed in float32 at least; on CUDA the ReLU
    and the cast are fused into the kernel), plus `residual` when given. `y` and `mask` may be
    narrower than `ln` (a capped block): its first affine weights are used. An all-0 mask gives
    exactly 0 (and 0 gradients). `out`: where the Triton path writes the result
    (`kernels.masked_layer_norm`; other paths ignore it). `affine`: ln's first weights and biases
    as the caller took them (`StaticBlock.take`), instead of slicing them here."""
    if ln is None:
        res = wide(y) * mask
        res = F.relu(res) if relu else res
        res = res if out_dtype is None else res.to(out_dtype)
        return res if residual is None else residual + res
    size = mask.shape[-1]
    w, b = affine or (ln.weight[:size], ln.bias[:size])
    if LN_KERNEL["impl"] == "triton" and kernels._use_triton(y):
        return kernels.masked_layer_norm(y, w, b, mask, eps, relu, out_dtype, residual, out)
    res = _run_compiled(_masked_ln, y, w, b, mask, eps, relu, out_dtype)
    return res if residual is None else residual + res


def token_norm(
    x: torch.Tensor, ln: nn.LayerNorm, relu: bool = False, token_mask: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """LayerNorm of each token over its 16 features, then a ReLU when `relu` and times the token
    mask [t] when given (one fused kernel each way on CUDA, reading x through its strides; there
    writing into `out` when given: `kernels.token_layer_norm`)."""
    return kernels.token_layer_norm(x, ln.weight, ln.bias, ln.eps, relu, token_mask, out)


class Sink(NamedTuple):
    """A gradient buffer shaped as an input product's input (`project`), into which its backward
    writes that input's gradient in the matmul: added to what the buffer holds (beta = 1) or,
    with `overwrite`, written over it (beta = 0: what it held is never read, so it needs no
    zeroing first)."""

    buf: torch.Tensor
    overwrite: bool = False


def token_project(
    xt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sink: Sink | None = None
) -> torch.Tensor:
    """Linear over the token axis: xt [B, 16, N] (features first, as the node slots hold them),
    weight [rows, N] -> [B, rows, 16] (a transposed view). One matmul over B * 16 rows: a
    [B, N, 16] input would be copied transposed first (~2.3 GB per step at batch 8192)."""
    return project(xt, weight, bias, sink).transpose(1, 2)


def project(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sink: Sink | None
) -> torch.Tensor:
    """F.linear(x, weight, bias). With a `sink` (x then has no autograd history: a view of the
    node buffers, as is the sink's buffer), the backward adds x's gradient into the sink (or
    writes it there) in the same matmul instead of returning it: no [B, K] gradient tensor, no
    separate sum over the readers of a node (models/nas/chain.py)."""
    if sink is None:
        return linear(x, weight, bias)
    return _Linear.apply(x, weight, bias.to(weight.dtype), sink.buf, None, sink.overwrite)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, into: Handover | None = None
) -> torch.Tensor:
    """F.linear(x, weight, bias) (under CUDA autocast in its dtype, as autocast would), through
    `_Linear` on CUDA: the bias is added in the matmul for any x whose rows are evenly strided,
    and its gradient is a matrix-vector product (`bias_grad`). Elsewhere exactly F.linear.
    `into`: x's gradient is the gradient handed over there (`handover`) plus this product's,
    added in the matmul (everywhere through `_Linear`)."""
    if into is None and not x.is_cuda:
        return F.linear(x, weight, bias)
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
        x, weight, bias = x.to(dt), weight.to(dt), bias.to(dt)
    return _Linear.apply(x, weight, bias, None, into)


def switched_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, identity: torch.Tensor
) -> torch.Tensor:
    """lerp(linear(x, weight, bias), padded(x, rows), identity) for a 0/1 flag `identity` (a 0-d
    tensor; weight [rows, cols], x [B, cols]): one product whose weight the flag switches to the
    identity matrix and whose bias it switches to 0 (exact: lerp returns either end exactly),
    instead of both results over the activations and a lerp of them (~5 passes over a
    [B, rows] float32 tensor each way). Gradients as the lerp gives them: none reach the weight
    and bias when the flag is 1. On CUDA the switch is one compiled function (its cast, identity
    matrix, lerp and bias scale fused, each way)."""
    return linear(x, *_run_compiled(_switched, weight, bias, identity, dynamic=True))


def _switched(
    weight: torch.Tensor, bias: torch.Tensor, identity: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    flag = identity.to(weight.dtype)
    eye = torch.eye(*weight.shape, dtype=weight.dtype, device=weight.device)
    return torch.lerp(weight, eye, flag), bias * (1 - flag)


def flagged(
    weight: torch.Tensor, bias: torch.Tensor, flag: torch.Tensor, dt: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) in `dt` (when given) times a 0/1 flag (a 0-d tensor): on CUDA one compiled
    function, its casts and products fused each way (eagerly two casts and two products forward,
    two products backward: ~40 kernels of a few us per sampled step)."""
    return _run_compiled(_flagged, weight, bias, flag, dt, dynamic=True)


def _flagged(
    weight: torch.Tensor, bias: torch.Tensor, flag: torch.Tensor, dt: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if dt is not None:
        weight, bias = weight.to(dt), bias.to(dt)
    return weight * flag, bias * flag


class Handover:
    """A gradient handed from one autograd node to a later one (`handover`, `linear(into=)`)."""

    grad: torch.Tensor | None = None


def handover(x: torch.Tensor, to: Handover) -> torch.Tensor:
    """x, whose gradient is also handed to `to` when the backward passes here.

    For a residual y + f(y) whose f starts with `linear(y, ..., into=to)`: written
    `handover(y.detach() + f(y), to)`, the residual's gradient reaches y only through the
    linear's backward, which adds its own product into it in one matmul (beta = 1) instead of
    autograd summing the two in a kernel of its own (an [B, T, 16] add per residual). The
    handed-over tensor is modified in place by then: only nodes that ran before that linear's
    backward (those downstream of it) may read it, which autograd's order guarantees."""
    return _Handover.apply(x, to)


class _Handover(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, to: Handover) -> torch.Tensor:
        ctx.to = to
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.to.grad = g
        return g, None


# "mv": a bias gradient as the product of the output gradient's transpose with a vector of ones
# (cuBLAS); "sum": a column sum (torch's reduction kernel). On the H200 the column sums of
# [B * tokens, 16..64] gradients took 12-20 us each (a 16.7 MB read), the step's slowest
# reductions. "mv", the default: 730k samples/s against 695k with "sum" (H100, session 11,
# benchmarks/train_supernet.py --switch bias_grad=sum).
BIAS_GRAD = {"impl": "mv"}


def bias_grad(g2: torch.Tensor) -> torch.Tensor:
    """The column sums of g2 [M, N] in its dtype (the gradient of a Linear's bias)."""
    if BIAS_GRAD["impl"] == "mv" and g2.is_cuda:
        return torch.mv(g2.t(), ones(g2.shape[0], g2.dtype, g2.device))
    return g2.sum(0)


_ONES: dict[tuple, torch.Tensor] = {}


def ones(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A vector of n ones, made once per (n, dtype, device) and never written: `bias_grad` reads
    one for every bias (~40 fill kernels per sampled step at batch 8192 when each made its own).
    One made during a CUDA-graph capture is not kept: it lives in that graph's memory pool, which
    other captures reuse (the warm-up runs before a capture make the kept ones)."""
    key = (n, dtype, device)
    v = _ONES.get(key)
    if v is None:
        v = torch.ones(n, dtype=dtype, device=device)
        if not (v.is_cuda and torch.cuda.is_current_stream_capturing()):
            _ONES[key] = v
    return v


class _Linear(torch.autograd.Function):
    """F.linear over x's rows as one addmm (bias in the matmul), backward by hand. With a sink
    (`project`), x and the sink are views of the node buffers, kept on ctx rather than saved:
    later blocks write other slots of the same buffers in place, which autograd's version check
    would take for a modification of x; x's gradient is added into the sink (written over it
    when `overwrite`)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
        sink: torch.Tensor | None, into: Handover | None = None, overwrite: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        ctx.x, ctx.sink, ctx.into, ctx.overwrite = x, sink, into, overwrite
        ctx.save_for_backward(weight)
        y = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight.t())
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        x, sink = ctx.x, ctx.sink
        g2 = gy.reshape(-1, gy.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        gx = None
        handed = ctx.into.grad if ctx.into is not None else None
        if sink is not None:
            beta = 0 if ctx.overwrite else 1  # a view: written in place
            sink.view(-1, sink.shape[-1]).addmm_(g2, weight, beta=beta)
        elif handed is not None:  # the handed-over gradient plus this product's, in the matmul
            acc = handed.reshape(-1, weight.shape[1])  # a view unless it was not contiguous
            acc = acc.addmm_(g2, weight) if acc.dtype == g2.dtype else acc + g2.mm(weight)
            gx, ctx.into.grad = acc.view(x.shape).to(x.dtype), None
        elif ctx.needs_input_grad[0]:
            gx = g2.mm(weight).view(x.shape)
        gw = g2.t().mm(x2) if ctx.needs_input_grad[1] else None
        gb = bias_grad(g2) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None


def owners(size: int, n: int) -> torch.Tensor:
    """Node index of each column of n node slots of `size` columns: the map from a node
    selection to a column mask."""
    return torch.arange(n).repeat_interleave(size)


def slot_columns(weight: torch.Tensor, first: int, size: int, slot: int) -> torch.Tensor:
    """A weight over the supernet's concatenated inputs [rows, first + i * size] (node 0 is
    `first` wide, the others `size`) in the slot layout [rows, (i + 1) * slot]: each node's
    columns zero-padded to a slot (`slot` >= first and size)."""
    head = F.pad(weight[:, :first], (0, slot - first))
    rest = weight[:, first:]
    if not rest.shape[1]:
        return head
    if slot > size:  # only when the stem is wider than a block's output (tiny test spaces)
        rest = torch.cat([F.pad(c, (0, slot - size)) for c in rest.split(size, 1)], 1)
    return torch.cat([head, rest], 1)


# "on": models/nas/chain.py has each block's ops take their sliced and cast parameters as leaves
# of their own (`StaticBlock.take`); "off": through autograd to the parameters
# (`benchmarks/train_supernet.py --switch param_leaves=off`: 905.5k and 838.0k samples/s against
# 907.3k-951.4k with "on" in the same two calls; H100, batch 8192, session 18).
PARAM_LEAVES = {"impl": "on"}


def leading(p: torch.Tensor, rows: int | None, cols: int | None) -> tuple:
    """The index of p's first `rows` rows and `cols` columns (all when None)."""
    return (slice(rows), slice(cols))[: p.dim()]


class StaticBlock(nn.Module):
    """Block i of a supernet with one dense and one sparse op, at static shapes: its inputs at the
    layout's maximum sizes, its outputs computed at `caps` = (width cap, token cap) (default: the
    maximum; `block_caps` gives a subnet block's size classes) and zero-padded to the layout.

    forward(mask, dense_in, sparse_in, sinks): the inputs in the slot layout (`parts`). Returns
    (dense [B, W], sparse [B, T + 8, 16]), in bf16 under CUDA autocast (every consumer casts to
    bf16 for its matmul anyway), else float32; `parts` returns them unpadded. Holds (does not
    copy) the supernet's modules.
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
        self.register_buffer("dense_owner", owners(layout.node_width, n).to(device))
        self.register_buffer("token_owner", owners(layout.node_tokens, n).to(device))
        self.sink_d = self.sink_s = self.out_dense = self.out_tokens = None
        self.taken: list[tuple[nn.Parameter, tuple, torch.Tensor]] | None = None

    def take(
        self, p: nn.Parameter, rows: int | None = None, cols: int | None = None,
        dt: torch.dtype | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Parameter p's first `rows` rows and `cols` columns (all when None), in `dt` when given,
        through autograd to p. Between `begin_take` and `end_take` (models/nas/chain.py) it is a
        leaf of its own instead, recorded there with its index into p: the chain writes its
        gradient into p's gradient buffer in place, where autograd would fill a p-sized
        gradient with zeros and copy the slice's into it, and cast a cast's back (~210 of the
        ~455 kernels under 3 us in a sampled step at batch 8192, H100)."""
        idx = leading(p, rows, cols)
        v = p if rows is None and cols is None else p[idx]
        if dt is not None:
            v = v.to(dt)
        if self.taken is None:
            return v
        if any(q is p for q, _, _ in self.taken):
            raise RuntimeError(f"block {self.i}: a parameter {tuple(p.shape)} was taken twice")
        v = v.detach().requires_grad_()
        self.taken.append((p, idx, v))
        return v

    def begin_take(self) -> None:
        """Before the ops run: `take` makes leaves from here to `end_take`."""
        self.taken = []

    def end_take(self) -> list[tuple[nn.Parameter, tuple, torch.Tensor]]:
        """After the ops ran: the leaves taken since `begin_take` ((parameter, index, leaf));
        `take` goes through autograd again."""
        taken = self.taken or []
        self.taken = None
        return taken

    def sink_products(self) -> tuple[int, int]:
        """How many input products write into the (dense, sparse) sinks in the backward: the
        dense op's product over the dense nodes (none for a binary op, which reads a pair), and
        the sparse op's over the sparse nodes plus a Dot-Product's token projection."""
        return int(not self.binary), 1 + (self.dense_op == "dot")

    def _linear(
        self, lin: nn.Linear, rows: int | None = None, dt: torch.dtype | None = None
    ) -> Any:
        """lin's (weight, bias), their first `rows` outputs, taken in `dt`."""
        return self.take(lin.weight, rows, dt=dt), self.take(lin.bias, rows, dt=dt)

    def _affine(self, ln: nn.LayerNorm | None, size: int) -> Any:
        """ln's first `size` weights and biases, taken (None without a LayerNorm)."""
        return None if ln is None else (self.take(ln.weight, size), self.take(ln.bias, size))

    def forward(
        self, mask: torch.Tensor, dense_in: Any, sparse_in: torch.Tensor,
        sinks: tuple[Sink | None, Sink | None] = (None, None),
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(dense [B, W], sparse [B, T + 8, 16]): `parts` zero-padded to the layout."""
        lay = self.layout
        dense, tokens, extra = self.parts(mask, dense_in, sparse_in, sinks)
        pieces = [tokens, extra]
        if self.tc < lay.tokens:
            pieces.insert(1, tokens.new_zeros(tokens.shape[0], lay.tokens - self.tc, EMB))
        return padded(dense, lay.width), torch.cat(pieces, 1)

    def parts(
        self, mask: torch.Tensor, dense_in: Any, sparse_in: torch.Tensor,
        sinks: tuple[Sink | None, Sink | None] = (None, None),
        out_slots: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """The block's outputs at its size classes, unpadded: dense [B, wc], op tokens
        [B, tc, 16] and dense->sparse tokens [B, 8, 16] (in bf16 under CUDA autocast).

        `dense_in`: the i + 1 dense nodes in slots of W columns [B, (i + 1) W] (unary op) or the
        (left, right) pair, each [B, layout.left_width(i)] (binary op); `sparse_in`: the i + 1
        sparse nodes in slots of T + 8 tokens, features first [B, 16, (i + 1)(T + 8)]
        (`node_slots`). `sinks`: gradient buffers shaped as the slot inputs: the input products
        add (or write) their input gradients there (`project`) instead of returning them
        (models/nas/chain.py; `sink_products` says how many write into each). `out_slots`
        (dense [B, wc] and op tokens [B, tc, 16], no autograd history: the node slot's views): where the last LayerNorms write the dense
        output (with the FM term) and the op tokens when they can (the Triton path), so the
        outputs returned may be on their memory (then not to be copied there)."""
        lay = self.layout
        m = split_mask(mask, self.i, lay)
        m["dmask"], m["s2d_mask"], m["tmask"], m["kmask"] = (
            m["dmask"][: self.wc],
            m["s2d_mask"][: self.wc],
            m["tmask"][: self.tc],
            m["kmask"][: self.kc],
        )
        dt = torch.get_autocast_dtype("cuda") if _autocast(mask) else None
        self.sink_d, self.sink_s = sinks
        self.out_dense, self.out_tokens = out_slots or (None, None)
        s = sparse_in
        cols_s = m["sel_s"].index_select(0, self.token_owner)
        flags, dmask = m["flags"], m["dmask"]
        if self.binary:
            y = self._binary(*dense_in, dmask, flags[1], dt)
        else:
            cols_d = m["sel_d"].index_select(0, self.dense_owner)
            if self.dense_op == "fc":
                y = self._fc(dense_in, cols_d, dmask, dt)
            else:
                y = self._dot(dense_in, s, cols_d, cols_s, m, flags[0], dt)
        if self.sparse_op == "efc":
            so = self._efc(s, cols_s, m["tmask"], dt)
        else:
            so = self._attention(s, cols_s, m["tmask"], dt)
        out_d = y
        if self.s2d is not None:
            fm, so = fm_term(so)
            fm = linear(fm, *self._linear(self.s2d, self.wc, dt))
            out_d = masked_layer_norm(fm, self.s2d_ln, m["s2d_mask"], out_dtype=dt,
                                      residual=y, out=self.out_dense,
                                      affine=self._affine(self.s2d_ln, self.wc))  # fmt: skip
        self.sink_d = self.sink_s = self.out_dense = self.out_tokens = None
        # the dense->sparse switch folded into the weights (exact: a 0/1 flag), not the output
        d2s = self.d2s
        extra = linear(y, *flagged(self.take(d2s.weight, cols=self.wc), self.take(d2s.bias),
                                   flags[2], dt))  # fmt: skip
        extra = extra.view(-1, D2S_TOKENS, EMB)
        if dt is not None:
            return out_d.to(dt), so.to(dt), extra.to(dt)
        return out_d, so, extra.to(so.dtype)

    def _dense_weight(
        self, weight: torch.Tensor, cols: torch.Tensor, dt: torch.dtype | None
    ) -> torch.Tensor:
        """A dense input product's weight [rows, n_dense + i W] in the slot layout, unselected
        nodes' columns zeroed."""
        lay = self.layout
        return selected(weight, cols, (lay.n_dense, lay.width, lay.node_width), dt)

    def _token_weight(
        self, weight: torch.Tensor, cols: torch.Tensor, dt: torch.dtype | None
    ) -> torch.Tensor:
        """A token projection's weight [rows, n_sparse + i (T + 8)] likewise."""
        lay = self.layout
        return selected(weight, cols, (lay.n_sparse, lay.slot, lay.node_tokens), dt)

    def _fc(
        self, x: torch.Tensor, cols: torch.Tensor, dmask: torch.Tensor, dt: torch.dtype | None
    ) -> torch.Tensor:
        lin, wc = self.dense.linear, self.wc
        w = self._dense_weight(self.take(lin.weight, wc), cols, dt)
        y = project(x, w, self.take(lin.bias, wc, dt=dt), self.sink_d)
        ln = self.dense.ln
        return masked_layer_norm(y, ln, dmask, relu=True, out_dtype=dt,
                                 affine=self._affine(ln, wc))  # fmt: skip

    def _dot(
        self, x: torch.Tensor, s: torch.Tensor, cols_d: torch.Tensor, cols_s: torch.Tensor,
        m: dict[str, torch.Tensor], identity: torch.Tensor, dt: torch.dtype | None,
    ) -> torch.Tensor:  # fmt: skip
        dot, k, wc = self.dense, self.kc, self.wc
        w = self._dense_weight(dot.dense_proj.weight, cols_d, dt)
        dense_tok = project(x, w, self.take(dot.dense_proj.bias, dt=dt), self.sink_d)
        if dot.dense_ln is not None:
            dense_tok = token_norm(dense_tok, dot.dense_ln)  # 16 features: the token kernel
        w = self._token_weight(self.take(dot.token_proj.weight, k), cols_s, dt)
        sparse_tok = token_project(s, w, self.take(dot.token_proj.bias, k, dt=dt), self.sink_s)
        if dot.token_ln is not None:
            sparse_tok = token_norm(sparse_tok, dot.token_ln, token_mask=m["kmask"])
        else:
            sparse_tok = sparse_tok * m["kmask"][:, None].to(sparse_tok.dtype)
        tokens = torch.cat([dense_tok.unsqueeze(1), sparse_tok.to(dense_tok.dtype)], 1)
        z = torch.bmm(tokens, tokens.transpose(1, 2)).flatten(1)
        c = dot_pairs(k)
        pairs = z.index_select(1, dot.tri_rows[:c] * (k + 1) + dot.tri_cols[:c])  # [B, pairs(k)]
        if dot.out is None:  # pairs(k_max) == W: never projected
            y = padded(pairs, wc)
        else:
            w, b = self.take(dot.out.weight, wc, c), self.take(dot.out.bias, wc)
            y = switched_linear(pairs, w, b, identity)
        return masked_layer_norm(y, dot.ln, m["dmask"], out_dtype=dt,
                                 affine=self._affine(dot.ln, wc))  # fmt: skip

    def _binary(
        self, left: torch.Tensor, right: torch.Tensor, dmask: torch.Tensor, identity: torch.Tensor,
        dt: torch.dtype | None,
    ) -> torch.Tensor:  # fmt: skip
        op, wc = self.dense, self.wc
        if op.gate is not None:
            y = gate(linear(left, *self._linear(op.gate, dt=dt)), right)
        else:
            y = left + right
        y = switched_linear(y, *self._linear(op.proj, wc), identity)
        return masked_layer_norm(y, op.ln, dmask, out_dtype=dt, affine=self._affine(op.ln, wc))

    def _efc(
        self, s: torch.Tensor, cols: torch.Tensor, tmask: torch.Tensor, dt: torch.dtype | None
    ) -> torch.Tensor:
        efc = self.sparse
        lin = efc.linear
        w = self._token_weight(self.take(lin.weight, self.tc), cols, dt)
        y = token_project(s, w, self.take(lin.bias, self.tc, dt=dt), self.sink_s)
        if efc.ln is not None:
            return token_norm(y, efc.ln, relu=True, token_mask=tmask, out=self.out_tokens)
        return F.relu(y) * tmask[:, None].to(y.dtype)

    def _attention(
        self, s: torch.Tensor, cols: torch.Tensor, tmask: torch.Tensor, dt: torch.dtype | None
    ) -> torch.Tensor:
        att = self.sparse
        lin = att.linear
        w = self._token_weight(self.take(lin.weight, self.tc), cols, dt)
        y = token_project(s, w, self.take(lin.bias, self.tc, dt=dt), self.sink_s)
        y = y.contiguous()  # [B, t, 16]: the q/k/v Linear reads it as B * t rows
        # both residuals' gradients handed over to the products that start their branches
        to_qkv, to_ff1 = Handover(), Handover()
        qkv, out, ff1, ff2 = (self._linear(m, dt=dt) for m in (att.qkv, att.out, att.ff1, att.ff2))
        qkv = linear(y, *qkv, to_qkv)
        a = kernels.fused_attention_qkv(qkv, att.heads, tmask.sum().long())
        y = token_norm(handover(y.detach() + linear(a, *out), to_qkv), att.ln1)
        h = F.relu(linear(y, *ff1, to_ff1))
        y = handover(y.detach() + linear(h, *ff2), to_ff1)
        return token_norm(y, att.ln2, token_mask=tmask, out=self.out_tokens)


def selected(
    weight: torch.Tensor, cols: torch.Tensor, sizes: tuple[int, int, int], dt: torch.dtype | None
) -> torch.Tensor:
    """An input product's weight in the slot layout (`slot_columns(weight, *sizes)`) with its
    columns multiplied by `cols` (0/1), in `dt` when given (cast first: the copies then move half
    the bytes; a product with 0 or 1 is exact either way). On CUDA one compiled kernel each way
    (cast, pad, concatenation and product fused; shapes symbolic: one compilation serves every
    block and size class)."""
    return _run_compiled(_selected, weight, cols, *sizes, dt, dynamic=True)


def _selected(
    weight: torch.Tensor, cols: torch.Tensor, first: int, size: int, slot: int,
    dt: torch.dtype | None,
) -> torch.Tensor:  # fmt: skip
    if dt is not None:
        weight = weight.to(dt)
    return slot_columns(weight, first, size, slot) * cols.to(weight.dtype)


def _autocast(x: torch.Tensor) -> bool:
    return x.is_cuda and torch.is_autocast_enabled("cuda")


def padded(x: torch.Tensor, width: int) -> torch.Tensor:
    """x [B, w] zero-padded or cut to [B, width]."""
    w = x.shape[1]
    return F.pad(x, (0, width - w)) if w < width else x[:, :width]


def node_slots(
    nodes_d: list[torch.Tensor], nodes_s: list[torch.Tensor], layout: Layout,
    dt: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Nodes in the slot layout a block reads: dense [B, n, W] and sparse features first
    [B, 16, n, T + 8], node 0 (the stem: n_dense features, n_sparse tokens) zero-padded to a
    slot, in `dt` when given (the stem's are float32)."""
    d = torch.stack([padded(x, layout.node_width) for x in nodes_d], 1)
    tokens = layout.node_tokens
    s = torch.stack([F.pad(x.transpose(1, 2), (0, tokens - x.shape[1])) for x in nodes_s], 2)
    return (d, s) if dt is None else (d.to(dt), s.to(dt))


def block_inputs(
    block: StaticBlock, subnet: Subnet, nodes_d: list, nodes_s: list, dt: torch.dtype | None
) -> tuple[Any, torch.Tensor]:
    """`block`'s (dense_in, sparse_in) for `subnet` from the node outputs so far."""
    i, n, b = block.i, block.i + 1, subnet.blocks[block.i]
    dense = [nodes_d[j] for j in b.dense_inputs] if block.binary else nodes_d[:n]
    d, s = node_slots(dense, nodes_s[:n], block.layout, dt)
    batch = d.shape[0]
    if block.binary:
        width = block.layout.left_width(i)
        return (d[:, 0, :width], d[:, 1, :width]), s.reshape(batch, EMB, -1)
    return d.reshape(batch, -1), s.reshape(batch, EMB, -1)


def static_forward(
    net: nn.Module, dense: torch.Tensor, sparse: torch.Tensor, subnet: Subnet, capped: bool = True
) -> torch.Tensor:
    """Logits [B] of `subnet` through the supernet `net` at static shapes, through autograd: each
    block at its size classes (at the maximum sizes when not `capped`) reading all earlier nodes
    in the slot layout. The reference for models/nas/chain.py, which runs the same blocks over
    shared node buffers (CUDA graphs)."""
    space = get_space(subnet.space)
    layout = Layout.of(space, net.n_dense, len(net.table_sizes))
    masks = subnet_masks(subnet, layout)
    flat = torch.from_numpy(np.concatenate(masks))
    if dense.is_cuda:
        flat = flat.pin_memory().to(dense.device, non_blocking=True)
    else:  # the CPU (no copy), or the meta device (benchmarks/step_roofline.py)
        flat = flat.to(dense.device)
    views = mask_views(flat, masks)
    dt = torch.get_autocast_dtype("cuda") if _autocast(dense) else None
    live = set(subnet.live_blocks())
    nodes_d: list = [dense]
    nodes_s: list = [net.embedding(sparse.long() + net.offsets)]
    for i in range(layout.n_blocks):
        if i not in live:  # never read by a live block: a zero placeholder keeps the layout
            nodes_d.append(dense.new_zeros(dense.shape[0], layout.width))
            nodes_s.append(nodes_s[0].new_zeros(dense.shape[0], layout.slot, EMB))
            continue
        b = subnet.blocks[i]
        caps = block_caps(space, b.dense_width, b.sparse_tokens) if capped else None
        blk = StaticBlock(net.blocks[i], i, b.dense_op, b.sparse_op, layout, caps)
        d, s = blk(views[i], *block_inputs(blk, subnet, nodes_d, nodes_s, dt))
        nodes_d.append(d)
        nodes_s.append(s)
    return head_logits(net, nodes_d[-1], nodes_s[-1])


def subnet_masks(subnet: Subnet, layout: Layout) -> list[np.ndarray]:
    """Every block's packed mask (`block_mask`), dead blocks' too."""
    widths = [layout.n_dense] + [b.dense_width for b in subnet.blocks]
    return [block_mask(subnet, i, layout, widths) for i in range(layout.n_blocks)]


def mask_views(flat: torch.Tensor, masks: list[np.ndarray]) -> list[torch.Tensor]:
    """Views of the concatenated masks, one per block."""
    views, at = [], 0
    for mk in masks:
        views.append(flat[at : at + len(mk)])
        at += len(mk)
    return views


def head_logits(net: nn.Module, last_d: torch.Tensor, last_s: torch.Tensor) -> torch.Tensor:
    """The head over the last block's dense [B, W] and sparse [B, T + 8, 16] outputs."""
    x = torch.cat([last_d, last_s.flatten(1).to(last_d.dtype)], 1)
    return F.linear(x, net.head.weight, net.head.bias).squeeze(-1)
