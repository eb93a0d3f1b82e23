"""Adagrad over models whose embedding tables produce sparse gradients, and gradient-norm clipping
that accepts sparse gradients.

Why sparse: a dense embedding gradient makes Adagrad read and write every row of every table each
step (3.1M x 16 floats for Criteo tables capped at 0.5M rows), ~20x the cost of the rest of a CPU
step. With a sparse gradient only the batch's rows are touched. With weight decay 0 (and no
lr_decay) both give the same update: a row with a zero gradient keeps its value and its sum of
squares (tests/models/nas/test_optim.py checks a few steps to rounding, on CUDA too).

Where: `AutoSparseEmbedding` / `AutoSparseEmbeddingBag` take `sparse_grad=None` ("auto", the
default of the models): sparse gradients when the weight is on the CPU, dense elsewhere; True or
False force one. Measured on one H200 (torch 2.11, bf16 autocast, batch 8192, Criteo tables capped
at 0.5M rows), dense gradients are faster there: supernet single paths 260k vs 209k samples/s,
full supernet 94k vs 82k, DLRM 604k vs 445k, DeepFM 676k vs 378k, DCNv2 580k vs 465k (the GPU
streams the whole table in well under a millisecond; sparse adds a sort and many small kernels).

`make_optimizer(model_or_params, lr, eps)` is Adagrad in one parameter group whose step splits
the group, for that step only, into the parameters with dense and with sparse gradients: torch's
multi-tensor (foreach, CUDA) Adagrad falls back to its per-tensor loop for a whole group as soon as
one gradient in it is sparse, so the split keeps the dense parameters on the foreach path on CUDA.
State and state_dict are those of plain Adagrad (one group). torch's fused Adagrad rejects sparse
gradients, so it is not used; on the CPU torch picks the per-tensor loop anyway.

Row gradients (`AutoSparseEmbedding.row_grad`, on for the supernet's stem): the lookup's
backward adds the batch's row gradients into a persistent fp32 buffer (`RowGrad`) and leaves
`.grad` None; `clip_and_step` then counts those rows in the norm and updates only them, in
place, and clears them (models/nas/row_kernels.py: Triton kernels on CUDA, torch references
elsewhere). The same update as a dense gradient (untouched rows keep their weight and sum),
without the dense passes over the whole table (~3.1M x 16 fp32: zeroing its gradient, reading
it for the norm, and the fused update's 20 bytes per element: ~1.4 GB per step).
`ROW_GRAD["impl"]`: "auto" (CUDA only, where `EMBEDDING` is "index_select"), "on" (any device:
tests), "off". Any other consumer sees the
dense gradient: `SplitAdagrad.step` and `clip_grad_norm` first turn pending rows into `.grad`.
Not for a module whose backward is captured in a CUDA graph (the pending row list is kept on the
host): standalone models (`graph_model`) keep dense gradients.

`clip_grad_norm(params, max_norm)` is `torch.nn.utils.clip_grad_norm_` (2-norm over all gradients,
coefficient max_norm / (norm + 1e-6) clamped to 1) for a mix of dense and sparse gradients: sparse
ones are coalesced first (duplicate indices summed, so the norm of the values is the norm of the
gradient) and replaced by their coalesced form, which Adagrad then uses as it is. Without sparse
gradients it calls exactly torch's functions, so dense-only training is unchanged.

`clip_and_step(opt, params, max_norm)` is `clip_grad_norm(params, max_norm); opt.step()`. On
CUDA, when every gradient is dense fp32, triton imports and `opt` is a plain SplitAdagrad (one
group, no weight decay, lr_decay or maximize), it runs instead two Triton kernels over one table
(models/nas/fused_adagrad.py `clip_adagrad_update_`: a sum of squares for the norm, then the
clipped update; ~6 instead of ~16 passes over the parameters' memory); the state ("step",
"sum") and so the state_dict are those torch's step would leave. Differences
there: the gradients are left unscaled (the kernel scales them as it reads them), and the
optimizer's step hooks do not run. Its host cost matters (a sampled path's step is ~13 ms on the
H200, ~140 parameters with gradients): the checks of parameters and sums are cached per optimizer
state (`SplitAdagrad.fused_states`, rebuilt after load_state_dict or add_param_group), so a step
checks only the gradients, once (measured with the GPU idle: 2.7-3.4 -> 2.2 ms per step).
Everywhere else (the CPU, sparse gradients) it is exactly the two calls, so CPU training and its
exact resume are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import nn

from models.nas.fused_adagrad import clip_adagrad_update_, clip_coef
from models.nas.kernels import _use_triton
from models.nas.row_kernels import (
    adagrad_owned_rows_,
    gather_rows,
    mark_owners_,
    owned_sq_sum,
    scatter_add_rows_,
)


def sparse_grad_on(weight: torch.Tensor, sparse_grad: bool | None) -> bool:
    """Whether an embedding with this setting gives sparse gradients for `weight` where it lives
    (None: on the CPU only)."""
    return weight.device.type == "cpu" if sparse_grad is None else bool(sparse_grad)


class _AutoSparse:
    """Mixin: resolve `sparse_grad` (None = auto) into torch's `sparse` flag at each forward."""

    sparse_grad: bool | None
    sparse: bool
    weight: nn.Parameter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.sparse = sparse_grad_on(self.weight, self.sparse_grad)
        return super().forward(*args, **kwargs)  # type: ignore[misc]


# "index_select": a dense-gradient embedding on CUDA looks its rows up with index_select, whose
# backward adds the rows' gradients into a zeroed table gradient with atomic adds (F.embedding
# gathers, and its backward sorts the indices first; both were the slower on the H200);
# "embedding": F.embedding everywhere.
EMBEDDING = {"impl": "index_select"}


ROW_GRAD = {"impl": "auto"}
# "on": the fused update covers a gradient's live prefix only (`_fused_state`): in a sampled
# supernet step about half of the ~12.7M elements with gradients lie past the ops' first rows,
# zero (a CPU count over 12 subnets of nasrec-full), 20 B each of the update's traffic; "off":
# whole parameters (`benchmarks/train_supernet.py --switch live_prefix=off`: 8.81-8.93 ms per
# step against 8.33-8.43 with "on", H100, batch 8192, session 21).
LIVE_PREFIX = {"impl": "on"}


class RowGrad:
    """The pending gradient of an embedding weight [R, D] as rows: `acc` (fp32 [R, D], zero
    outside the pending rows) and the looked-up row indices since the last step (duplicates
    included). `owner` [R] (-1 outside a step) marks each pending row's last position in the
    index list, so a row is counted once in the norm."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.acc = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        self.owner = torch.full((weight.shape[0],), -1, dtype=torch.int64, device=weight.device)
        self.idx: list[torch.Tensor] = []

    def add(self, idx: torch.Tensor, grad: torch.Tensor) -> None:
        scatter_add_rows_(self.acc, idx, grad)
        self.idx.append(idx)

    def pending(self) -> torch.Tensor:
        """The pending row indices (duplicates included), as one tensor."""
        if len(self.idx) > 1:
            self.idx = [torch.cat(self.idx)]
        return self.idx[0]

    def mark_owners(self) -> torch.Tensor:
        """The pending row indices (duplicates included), each pending row's `owner` set to its
        last position in them."""
        idx = self.pending()
        mark_owners_(self.owner, idx)
        return idx

    def clear(self) -> None:
        """No pending rows (acc zeroed where they were)."""
        if self.idx:
            idx = self.pending()
            self.acc.index_fill_(0, idx, 0.0)
            self.owner.index_fill_(0, idx, -1)
            self.idx = []

    def to_grad(self, weight: torch.Tensor) -> None:
        """Pending rows into weight.grad (added to one already there), then cleared."""
        if self.idx:
            g = self.acc.to(weight.dtype, copy=True)
            weight.grad = g if weight.grad is None else weight.grad + g
            self.clear()


def pending_rows(p: torch.Tensor) -> RowGrad | None:
    """The parameter's row gradient when it has pending rows, else None."""
    rows = getattr(p, "row_grad", None)
    return rows if rows is not None and rows.idx else None


def materialize_rows(params: Iterable[torch.Tensor]) -> None:
    """Every parameter's pending rows into its .grad (for consumers of dense gradients)."""
    for p in params:
        rows = pending_rows(p)
        if rows is not None:
            rows.to_grad(p)


class _RowLookup(torch.autograd.Function):
    """weight.index_select(0, idx) (`gather_rows`); the backward adds the rows' gradients into
    `rows` and gives the weight none (it stays pending until the optimizer's step)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, idx: torch.Tensor, rows: RowGrad) -> Any:
        ctx.idx, ctx.rows = idx, rows
        return gather_rows(weight, idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        ctx.rows.add(ctx.idx, grad)
        return None, None, None


class _Lookup(torch.autograd.Function):
    """weight.index_select(0, idx) through `gather_rows`, with index_select's backward (the
    rows' gradients added into a zeroed table gradient)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, idx: torch.Tensor) -> Any:
        ctx.save_for_backward(idx)
        ctx.weight_shape = weight.shape
        return gather_rows(weight, idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (idx,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.weight_shape)
        return out.index_add_(0, idx, grad.reshape(-1, out.shape[1])), None


def _index_select_on(weight: torch.Tensor, sparse_grad: bool | None) -> bool:
    """Whether a lookup of `weight` is CUDA's index_select (`EMBEDDING`; dense gradients)."""
    return (weight.is_cuda and EMBEDDING["impl"] == "index_select"
            and not sparse_grad_on(weight, sparse_grad))  # fmt: skip


def _row_grad_on(weight: torch.Tensor, sparse_grad: bool | None) -> bool:
    """Whether ROW_GRAD lets an opted-in embedding keep row gradients for `weight` ("auto":
    where the lookup is the index_select)."""
    impl = ROW_GRAD["impl"]
    return impl == "on" or (impl == "auto" and _index_select_on(weight, sparse_grad))


class AutoSparseEmbedding(_AutoSparse, nn.Embedding):
    """nn.Embedding with sparse gradients on the CPU (`sparse_grad=None`) or as forced; on CUDA
    with dense gradients the lookup is an index_select (`EMBEDDING`: the same values; its
    gradient sums duplicate rows in another order, so to rounding)."""

    def __init__(self, *args: Any, sparse_grad: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sparse_grad = sparse_grad
        self.sparse = sparse_grad_on(self.weight, sparse_grad)
        self.row_grad = False  # opt-in: row gradients (module docstring) where ROW_GRAD allows

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.weight
        plain = self.padding_idx is not None or self.max_norm is not None or self.scale_grad_by_freq
        if (self.row_grad and not plain and w.requires_grad and torch.is_grad_enabled()
                and _row_grad_on(w, self.sparse_grad)):  # fmt: skip
            rows = getattr(w, "row_grad", None)
            if rows is None or rows.acc.device != w.device or rows.acc.shape != w.shape:
                rows = w.row_grad = RowGrad(w)  # type: ignore[attr-defined]
            flat = idx.reshape(-1).long()  # (a no-op for int64: the row kernels' index type)
            return _RowLookup.apply(w, flat, rows).view(*idx.shape, w.shape[1])
        if not plain and _index_select_on(w, self.sparse_grad):
            self.sparse = False
            return _Lookup.apply(w, idx.reshape(-1).long()).view(*idx.shape, w.shape[1])
        return super().forward(idx)


class AutoSparseEmbeddingBag(_AutoSparse, nn.EmbeddingBag):
    """nn.EmbeddingBag with sparse gradients on the CPU (`sparse_grad=None`) or as forced."""

    def __init__(self, *args: Any, sparse_grad: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sparse_grad = sparse_grad
        self.sparse = sparse_grad_on(self.weight, sparse_grad)


def sparse_grad_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The weights of `module`'s embeddings that give sparse gradients where they are now."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.weight.requires_grad:
            auto = getattr(m, "sparse_grad", "plain")
            if m.sparse if auto == "plain" else sparse_grad_on(m.weight, auto):
                out.append(m.weight)
    return out


class SplitAdagrad(torch.optim.Adagrad):
    """torch.optim.Adagrad whose step runs dense and sparse gradients as separate groups."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        materialize_rows(p for g in self.param_groups for p in g["params"])
        groups = self.param_groups
        split = []
        for g in groups:
            sparse = [p for p in g["params"] if p.grad is not None and p.grad.is_sparse]
            if not sparse or len(sparse) == len(g["params"]):
                split.append(g)
                continue
            ids = {id(p) for p in sparse}
            split.append({**g, "params": [p for p in g["params"] if id(p) not in ids]})
            split.append({**g, "params": sparse})
        self.param_groups = split
        try:
            return super().step(closure)
        finally:
            self.param_groups = groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's zero_grad, and pending row gradients dropped."""
        for group in self.param_groups:
            for p in group["params"]:
                rows = pending_rows(p)
                if rows is not None:
                    rows.clear()
        super().zero_grad(set_to_none)

    def fused_states(self) -> dict[int, dict[str, Any]]:
        """id(parameter) -> its state, for the parameters whose state the fused kernel can update
        (the parameter and its "sum" dense, contiguous, fp32, of one size, all on one device).
        Checked once and cached until the state or the groups are replaced (load_state_dict,
        add_param_group): `clip_and_step` asks every step."""
        groups = tuple(id(g["params"]) for g in self.param_groups)
        cache = getattr(self, "_fused_cache", None)
        if cache is None or cache[0] is not self.state or cache[1] != groups:
            out, devices = {}, set()
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state.get(p)
                    if state and _fusable_state(p, state.get("sum")):
                        out[id(p)] = state
                        devices.add(p.device)
            out = out if len(devices) == 1 else {}  # one launch reaches one device's memory
            self._fused_cache = cache = (self.state, groups, out)
        return cache[2]


def _fusable_state(p: torch.Tensor, s: torch.Tensor | None) -> bool:
    """Whether a parameter and its Adagrad sum suit the fused kernel's raw-address update."""
    if s is None or p.numel() != s.numel() or p.device != s.device:
        return False
    return all(
        x.dtype is torch.float32 and x.layout is torch.strided and x.is_contiguous() for x in (p, s)
    )


def make_optimizer(
    model: nn.Module | Iterable[nn.Parameter], lr: float, eps: float
) -> torch.optim.Optimizer:
    """Adagrad (weight decay 0, lr_decay 0) over a module's or an iterable's parameters, dense
    and sparse gradients stepped apart (see the module docstring)."""
    params = list(model.parameters() if isinstance(model, nn.Module) else model)
    # opt out of sparse invariant checks explicitly (the default) so torch does not warn once
    torch.sparse.check_sparse_tensor_invariants.disable()
    return SplitAdagrad(params, lr=lr, eps=eps, weight_decay=0.0)


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale all gradients so that their joint 2-norm is at most `max_norm`; returns the norm
    before clipping (a device tensor: no host synchronisation). Sparse gradients are coalesced;
    pending row gradients become dense ones first."""
    params = list(params)
    materialize_rows(params)
    dense: list[nn.Parameter] = []  # parameters with dense gradients
    sparse: list[torch.Tensor] = []  # coalesced sparse gradients
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            if not g.is_coalesced():
                g = g.coalesce()
                p.grad = g
            sparse.append(g)
        else:
            dense.append(p)
    if not sparse:
        return torch.nn.utils.clip_grad_norm_(dense, max_norm)
    norms = [torch.linalg.vector_norm(g._values(), 2.0) for g in sparse]
    if dense:
        norms.append(torch.nn.utils.get_total_norm([p.grad for p in dense], 2.0))
    device = norms[0].device
    total = torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), 2.0)
    coef = clip_coef(total, max_norm)
    if dense:
        torch.nn.utils.clip_grads_with_norm_(dense, max_norm, total)
    for g in sparse:
        g._values().mul_(coef.to(g.dtype))
    return total


def clip_and_step(
    opt: torch.optim.Optimizer, params: Iterable[nn.Parameter], max_norm: float
) -> torch.Tensor:
    """`clip_grad_norm(params, max_norm); opt.step()`, fused on CUDA where it can be (module
    docstring; the gradients are then left unscaled). Returns the norm before clipping (a device
    tensor: no host synchronisation). Parameters without a gradient are skipped; those with
    pending row gradients (module docstring) are counted and updated by rows where the fused
    update applies (on any device), else their rows become dense gradients first."""
    given = list(params)
    rowed = [p for p in given if p.grad is None and pending_rows(p) is not None]
    params = [p for p in given if p.grad is not None]
    if rowed:  # the row update, or the plain path after the rows became dense gradients
        row_states = _row_states(opt, rowed)
        fused = _fused_state(opt, params, triton_only=False) if params else ()
        if row_states is not None and fused is not None:
            return _clip_and_step_rows(opt, params, fused, rowed, row_states, max_norm)
        materialize_rows(rowed)
        params = [p for p in given if p.grad is not None]
        fused = None
    else:
        fused = _fused_state(opt, params)
    if fused is None:
        total = clip_grad_norm(params, max_norm)
        opt.step()
        return total
    _count_step(fused.steps)
    return _fused_update(fused, max_norm)[0]


def _clip_and_step_rows(
    opt: torch.optim.Optimizer, params: list[nn.Parameter], fused: _Fused | tuple, rowed: list,
    row_states: list[dict[str, Any]], max_norm: float,
) -> torch.Tensor:  # fmt: skip
    """`clip_and_step` with parameters of pending row gradients (`rowed`): the norm over the
    dense gradients and every pending row once, then the fused update of the dense ones and the
    row update of the others."""
    group = opt.param_groups[0]
    pending = []
    for p in rowed:
        rows = pending_rows(p)
        pending.append((p, rows, rows.mark_owners()))  # type: ignore[union-attr]
    sq = [owned_sq_sum(rows.acc, idx, rows.owner) for _, rows, idx in pending]
    rows_sq = sq[0] if len(sq) == 1 else torch.stack(sq).sum()
    steps = [state["step"] for state in row_states]
    if fused:
        _count_step([*fused.steps, *steps])
        total, coef = _fused_update(fused, max_norm, rows_sq)
    else:
        _count_step(steps)
        total = rows_sq.sqrt()
        coef = clip_coef(total, max_norm)
    for (p, rows, idx), state in zip(pending, row_states, strict=True):
        adagrad_owned_rows_(p, state["sum"], rows.acc, rows.owner, idx, coef, group["lr"],
                            group["eps"])  # fmt: skip
        rows.idx = []  # the update zeroed the rows' acc and reset their owner
    return total


def _plain_group(opt: torch.optim.Optimizer) -> dict[str, Any] | None:
    """The one parameter group of a SplitAdagrad whose step is plain Adagrad (no weight decay,
    lr decay, maximize, differentiable or fused step; a float lr), else None."""
    if not isinstance(opt, SplitAdagrad) or len(opt.param_groups) != 1:
        return None
    group = opt.param_groups[0]
    if any(group[k] for k in ("weight_decay", "lr_decay", "maximize", "differentiable", "fused")):
        return None
    return None if torch.is_tensor(group["lr"]) else group


def _row_states(opt: torch.optim.Optimizer, rowed: list[nn.Parameter]) -> list | None:
    """The Adagrad states of parameters with pending rows when the row update applies (a plain
    SplitAdagrad of one group, initialised fp32 states), else None."""
    if _plain_group(opt) is None:
        return None
    states = [opt.state.get(p) for p in rowed]
    ok = all(s and s.get("sum") is not None and s["sum"].dtype is torch.float32
             and p.dtype is torch.float32 for p, s in zip(rowed, states, strict=True))  # fmt: skip
    return states if ok else None


def optimizer_parameters(opt: torch.optim.Optimizer) -> list[nn.Parameter]:
    """Every parameter `opt` steps, in its groups' order (a list: no module traversal)."""
    return [p for group in opt.param_groups for p in group["params"]]


class _Fused(NamedTuple):
    """What the fused update reads: the group, and per parameter with a gradient the parameter,
    gradient and sum, the step count and how many leading elements to update (its live prefix,
    else all); `counts` is None with LIVE_PREFIX off."""

    group: dict[str, Any]
    params: list[nn.Parameter]
    grads: list[torch.Tensor]
    sums: list[torch.Tensor]
    steps: list[torch.Tensor]
    counts: list[int] | None


def _fused_state(
    opt: torch.optim.Optimizer, params: list[nn.Parameter], *, triton_only: bool = True
) -> _Fused | None:
    """The fused update's inputs (`_Fused`) for `params` when the fused update equals torch's
    step, else None: a plain SplitAdagrad of one group whose parameters with gradients are
    exactly `params`, each with initialised state and a dense contiguous fp32 gradient on the
    Triton path's device. Everything `clip_adagrad_update_` would check is checked here (it then
    runs without its own checks): one pass per step over `params`, the states' checks cached.
    A gradient's `live_numel` (models/nas/chain.py: zero past its first n elements) limits the
    update to those n elements (`counts`): Adagrad leaves a parameter and its sum as they are
    where the gradient is 0 (`LIVE_PREFIX`); on the Triton path the norm reads the same
    prefixes through the update's table (no views: views of all three per tensor cost more host
    time than the traffic they saved, 9.7-10.6 ms per step against 8.8, H100, session 21)."""
    group = _plain_group(opt)
    if not params or group is None:
        return None
    if triton_only and not _use_triton(params[0]):  # else the update's torch reference
        return None
    states = opt.fused_states()
    grads, sums, steps, counts = [], [], [], []
    for p in params:  # a gradient has its parameter's dtype, device and size (autograd checks)
        state = states.get(id(p))
        g = p.grad
        if state is None or g.is_sparse or not g.is_contiguous():
            return None
        n = getattr(g, "live_numel", None)
        grads.append(g)
        sums.append(state["sum"])
        steps.append(state["step"])
        counts.append(g.numel() if n is None else n)
    in_group = [p for p in group["params"] if p.grad is not None]
    if len(in_group) != len(params):
        return None
    if any(a is not b for a, b in zip(in_group, params, strict=True)) and {
        id(p) for p in in_group
    } != {id(p) for p in params}:
        return None
    return _Fused(group, params, grads, sums, steps,
                  counts if LIVE_PREFIX["impl"] == "on" else None)  # fmt: skip


def _fused_update(
    fused: _Fused, max_norm: float, extra_sq: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped update of `fused`'s tensors (their norm with `extra_sq` taken inside):
    (total norm, clipping coefficient)."""
    group = fused.group  # the kernel writes through raw addresses: no detach needed
    return clip_adagrad_update_(fused.params, fused.grads, fused.sums, group["lr"], group["eps"],
                                max_norm, counts=fused.counts, extra_sq=extra_sq,
                                check=False)  # fmt: skip


def _count_step(steps: list[torch.Tensor]) -> None:
    """Add 1 to each state["step"] as torch's foreach Adagrad does (CPU step tensors: one
    wrapped CPU scalar, no per-tensor allocation and no device work)."""
    if steps[0].is_cpu:
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)
