"""Row kernels of an embedding table [R, D] (Triton, with torch references): the lookup's gather,
the backward's scatter-add into a row-gradient buffer, and the row gradients' norm and Adagrad
update (models/nas/optim.py: `RowGrad`, `clip_and_step`).

Why: torch's index_select of 64-byte rows (D = 16 fp32) runs its vectorised gather kernel with a
few threads per row, ~130 us for the 213k rows of a batch of 8192 (26 features) on an H100
whatever the table's size or the index pattern (benchmarks/embedding_gather.py: ~220 GB/s), and
the row update of session 11 gathered the batch's rows four more times (the norm, then the
gradient, the Adagrad sum and the weight) and scattered two back: 5 x 130 us of gathers per step.
Here a program takes a block of index positions x all D columns, and the update reads each
pending row's gradient, sum and weight once, in place. Measured (H100, session 12): the gather
24-31 us against 130-134 us; in the profile of a training step the scatter-add 25 us and the
row update 28 us; supernet training 803k samples/s against 741k with session 11's row path.

- `gather_rows(weight, idx)` -> [N, D] = weight.index_select(0, idx). An index outside
  [0, R) gives a row of NaN (no read outside the table; index_select would raise on the device).
- `scatter_add_rows_(acc, idx, grad)`: acc (fp32) index_add_ grad's rows (any float dtype,
  converted as it is read), with atomic adds (duplicate rows summed in no fixed order).
- `mark_owners_(owner, idx)`: owner[idx[i]] = the largest such position i (owner -1 at every row
  beforehand): which position of a pending row counts it.
- `owned_sq_sum(acc, idx, owner)` -> 0-d fp32: the sum of squares of acc's rows `idx[i]` over
  the positions i that own their row (`owner[idx[i]] == i`), so each pending row counts once.
- `adagrad_owned_rows_(param, state_sum, acc, owner, idx, coef, lr, eps)`: on each owned row,
  clipped Adagrad as the dense fused kernel computes it (models/nas/fused_adagrad.py:
  g = acc * coef, sum += g * g, param += g * -lr / (sqrt(sum) + eps)), then the row's acc zeroed
  and its owner reset to -1. Rows that no position owns are not touched. A position that does
  not own its row skips it whether or not the owner has already reset it (-1 matches no
  position), so the reset races with nothing.

The Triton path runs for CUDA tensors when triton imports (`KERNELS` of models/nas/kernels.py;
"force" for CPU tensors in Triton's interpreter); torch ops otherwise. No host synchronisation.
"""

# Triton kernel arguments carry no Python annotations (Triton reads annotations as types).
# ruff: noqa: ANN001

from __future__ import annotations

import torch

from models.nas.kernels import _pow2, _use_triton, tl, triton

ROWS_PER_PROGRAM = 128  # index positions per program (x D columns: 8 KB of fp32 rows at D = 16)
OWNER_BLOCK = 1024  # index positions per program of the owner marking (one int64 each)
WARPS = 4


def _check_table(table: torch.Tensor, idx: torch.Tensor) -> None:
    """ValueError unless `table` is a contiguous [R, D] tensor and `idx` a 1-D int64 one on its
    device (the kernels address rows through raw offsets)."""
    if table.dim() != 2 or not table.is_contiguous():
        raise ValueError(f"need a contiguous [R, D] table, got shape {tuple(table.shape)} "
                         f"strides {table.stride()}")  # fmt: skip
    if idx.dim() != 1 or idx.dtype is not torch.int64 or idx.device != table.device:
        raise ValueError(f"need 1-D int64 indices on {table.device}, got {idx.dtype} "
                         f"{tuple(idx.shape)} on {idx.device}")  # fmt: skip


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, ROWS_PER_PROGRAM),)


def gather_rows(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """weight[idx] for a [R, D] table and 1-D int64 indices (module docstring). No autograd."""
    _check_table(weight, idx)
    if not _use_triton(weight) or idx.numel() == 0:
        return weight.index_select(0, idx)
    r, d = weight.shape
    out = torch.empty((idx.numel(), d), dtype=weight.dtype, device=weight.device)
    _gather_kernel[_grid(idx.numel())](
        weight, idx, out, idx.numel(), r, D=d, BD=_pow2(d), BN=ROWS_PER_PROGRAM, num_warps=WARPS
    )
    return out


def scatter_add_rows_(acc: torch.Tensor, idx: torch.Tensor, grad: torch.Tensor) -> None:
    """acc[idx[i]] += grad[i] (fp32 acc [R, D]; grad [N, D] or any shape of N * D elements)."""
    _check_table(acc, idx)
    grad = grad.reshape(-1, acc.shape[1])
    if grad.shape[0] != idx.numel():
        raise ValueError(f"{idx.numel()} indices for {grad.shape[0]} gradient rows")
    if not _use_triton(acc) or idx.numel() == 0:
        acc.index_add_(0, idx, grad.float())
        return
    grad = grad.contiguous()
    _scatter_add_kernel[_grid(idx.numel())](
        acc, idx, grad, idx.numel(), D=acc.shape[1], BD=_pow2(acc.shape[1]),
        BN=ROWS_PER_PROGRAM, num_warps=WARPS,
    )  # fmt: skip
    torch.autograd.graph.increment_version(acc)


def mark_owners_(owner: torch.Tensor, idx: torch.Tensor) -> None:
    """owner[r] = max(owner[r], the positions i with idx[i] = r) (1-D int64 owner and idx on one
    device): scatter_reduce_ "amax" (~68 us for 213k positions into 3.1M rows on an H100) or
    one atomic max per position."""
    if owner.dim() != 1 or owner.dtype is not torch.int64:
        raise ValueError(f"need a 1-D int64 owner, got {owner.dtype} {tuple(owner.shape)}")
    _check_table(owner.view(-1, 1), idx)
    n = idx.numel()
    if not _use_triton(owner) or n == 0:
        owner.scatter_reduce_(0, idx, torch.arange(n, device=idx.device), "amax")
        return
    _owner_kernel[(triton.cdiv(n, OWNER_BLOCK),)](owner, idx, n, BN=OWNER_BLOCK, num_warps=WARPS)
    torch.autograd.graph.increment_version(owner)


def owned_sq_sum(acc: torch.Tensor, idx: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Sum of squares of acc's rows over the positions that own them (module docstring)."""
    _check_table(acc, idx)
    n = idx.numel()
    if not _use_triton(acc) or n == 0:
        pos = torch.arange(n, device=idx.device)
        last = (owner.index_select(0, idx) == pos).float()
        return (acc.index_select(0, idx).square().sum(1) * last).sum()
    partial = torch.empty(_grid(n)[0], dtype=torch.float32, device=acc.device)
    _owned_sq_kernel[_grid(n)](
        acc, idx, owner, partial, n, D=acc.shape[1], BD=_pow2(acc.shape[1]),
        BN=ROWS_PER_PROGRAM, num_warps=WARPS,
    )  # fmt: skip
    return partial.sum()


@torch.no_grad()
def adagrad_owned_rows_(
    param: torch.Tensor, state_sum: torch.Tensor, acc: torch.Tensor, owner: torch.Tensor,
    idx: torch.Tensor, coef: torch.Tensor, lr: float, eps: float,
) -> None:  # fmt: skip
    """Clipped Adagrad on the owned rows, their acc zeroed and owner reset (module docstring)."""
    for x in (param, state_sum, acc):
        _check_table(x, idx)
    if not param.shape == state_sum.shape == acc.shape or owner.shape != param.shape[:1]:
        raise ValueError(f"shapes differ: param {tuple(param.shape)}, sum "
                         f"{tuple(state_sum.shape)}, acc {tuple(acc.shape)}, owner "
                         f"{tuple(owner.shape)}")  # fmt: skip
    n = idx.numel()
    if n == 0:
        return
    if not _use_triton(param):
        _adagrad_rows_reference_(param, state_sum, acc, owner, idx, coef, lr, eps)
        return
    _adagrad_rows_kernel[_grid(n)](
        param, state_sum, acc, owner, idx, coef, n, -float(lr), float(eps),
        D=param.shape[1], BD=_pow2(param.shape[1]), BN=ROWS_PER_PROGRAM, num_warps=WARPS,
    )  # fmt: skip
    torch.autograd.graph.increment_version([param, state_sum, acc, owner])


def _adagrad_rows_reference_(
    param: torch.Tensor, state_sum: torch.Tensor, acc: torch.Tensor, owner: torch.Tensor,
    idx: torch.Tensor, coef: torch.Tensor, lr: float, eps: float,
) -> None:  # fmt: skip
    """The update in torch ops on every position's row (duplicates compute the same new row from
    the same old values, so the scatters write one value), the kernel's order of operations."""
    g = acc.index_select(0, idx) * coef
    s = state_sum.index_select(0, idx).addcmul_(g, g)
    p = param.index_select(0, idx).add_((g * -lr) / (s.sqrt() + eps))
    state_sum.index_copy_(0, idx, s)
    param.index_copy_(0, idx, p)
    acc.index_fill_(0, idx, 0.0)
    owner.index_fill_(0, idx, -1)


if triton is not None:

    @triton.jit
    def _tile(idx_ptr, n, D: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):
        """This program's positions, their rows and the [BN, BD] column offsets and mask."""
        pos = tl.program_id(0) * BN + tl.arange(0, BN)
        live = pos < n
        row = tl.load(idx_ptr + pos, mask=live, other=0)
        cols = tl.arange(0, BD)
        mask = live[:, None] & (cols[None, :] < D)
        return pos, live, row, row[:, None] * D + cols[None, :], mask

    @triton.jit
    def _owner_kernel(owner_ptr, idx_ptr, n, BN: tl.constexpr):
        pos = tl.program_id(0) * BN + tl.arange(0, BN)
        live = pos < n
        row = tl.load(idx_ptr + pos, mask=live, other=0)
        tl.atomic_max(owner_ptr + row, pos.to(tl.int64), mask=live, sem="relaxed")

    @triton.jit
    def _gather_kernel(w_ptr, idx_ptr, out_ptr, n, n_rows, D: tl.constexpr, BD: tl.constexpr,
                       BN: tl.constexpr):  # fmt: skip
        pos, live, row, offs, mask = _tile(idx_ptr, n, D, BD, BN)
        inside = (row >= 0) & (row < n_rows)
        v = tl.load(w_ptr + offs, mask=mask & inside[:, None], other=float("nan"))
        cols = tl.arange(0, BD)
        tl.store(out_ptr + pos[:, None] * D + cols[None, :], v, mask=mask)

    @triton.jit
    def _scatter_add_kernel(acc_ptr, idx_ptr, g_ptr, n, D: tl.constexpr, BD: tl.constexpr,
                            BN: tl.constexpr):  # fmt: skip
        pos, live, row, offs, mask = _tile(idx_ptr, n, D, BD, BN)
        cols = tl.arange(0, BD)
        g = tl.load(g_ptr + pos[:, None] * D + cols[None, :], mask=mask, other=0.0)
        tl.atomic_add(acc_ptr + offs, g.to(tl.float32), mask=mask, sem="relaxed")

    @triton.jit
    def _owned(owner_ptr, pos, live, row):
        """[BN] whether each live position owns its row."""
        return live & (tl.load(owner_ptr + row, mask=live, other=-1) == pos)

    @triton.jit
    def _owned_sq_kernel(acc_ptr, idx_ptr, owner_ptr, out_ptr, n, D: tl.constexpr,
                         BD: tl.constexpr, BN: tl.constexpr):  # fmt: skip
        pos, live, row, offs, mask = _tile(idx_ptr, n, D, BD, BN)
        own = mask & _owned(owner_ptr, pos, live, row)[:, None]
        g = tl.load(acc_ptr + offs, mask=own, other=0.0)
        tl.store(out_ptr + tl.program_id(0), tl.sum(tl.sum(g * g, axis=1), axis=0))

    @triton.jit
    def _adagrad_rows_kernel(p_ptr, s_ptr, acc_ptr, owner_ptr, idx_ptr, coef_ptr, n, neg_lr, eps,
                             D: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):  # fmt: skip
        pos, live, row, offs, mask = _tile(idx_ptr, n, D, BD, BN)
        owns = _owned(owner_ptr, pos, live, row)
        own = mask & owns[:, None]
        g = tl.load(acc_ptr + offs, mask=own, other=0.0) * tl.load(coef_ptr)
        # as models/nas/fused_adagrad.py's kernel: one fused multiply-add, IEEE sqrt and division
        s = tl.fma(g, g, tl.load(s_ptr + offs, mask=own, other=0.0))
        p = tl.load(p_ptr + offs, mask=own, other=0.0)
        p += tl.div_rn(g * neg_lr, tl.sqrt_rn(s) + eps)
        tl.store(s_ptr + offs, s, mask=own)
        tl.store(p_ptr + offs, p, mask=own)
        tl.store(acc_ptr + offs, tl.zeros_like(g), mask=own)
        tl.store(owner_ptr + row, tl.full([BN], -1, tl.int64), mask=owns)
