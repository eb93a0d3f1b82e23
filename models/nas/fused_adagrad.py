"""Adagrad after gradient-norm clipping as one multi-tensor Triton kernel, with a torch reference.

Why: on CUDA, torch's clip (`clip_grad_norm_`: a norm, then an in-place multiply of every
gradient) plus foreach Adagrad (addcmul, sqrt, add eps, mul, addcdiv) stream the ~100M fp32
elements of the supernet's parameters, gradients and sums ~16 times per step (~2.7 ms at batch
8192 on an H200). After the norm, everything is elementwise per tensor element, so one kernel
can read param, grad and sum once and write param and sum once (5 x 4 B per element):

    g = grad * coef        coef = min(max_norm / (total_norm + 1e-6), 1), a device scalar
    sum += g * g
    param += (g * -lr) / (sqrt(sum) + eps)

which is torch.optim.Adagrad (weight_decay 0, lr_decay 0, maximize False) after
torch.nn.utils.clip_grad_norm_, in torch's order of operations. The gradients are read, never
scaled in place.

`adagrad_update_(params, grads, sums, lr, eps, coef)` runs it: one launch of a multi-tensor
kernel for CUDA tensors when triton imports (the switch of models/nas/kernels.py:
`KERNELS["enabled"]`, and `KERNELS["force"]` for CPU tensors in Triton's interpreter), torch
foreach ops otherwise. The kernel is driven by a table built on the host each call (the
gradients are new tensors every step, so their addresses change): per tensor the int64 addresses
of param, grad and sum and its element count, per program one chunk (which tensor, which chunk of
it). The table reaches the device by one pinned non-blocking copy, so the host never waits for
the GPU. Not capturable in CUDA graphs (the table is rebuilt from live addresses each call).
`clip_adagrad_update_(params, grads, sums, lr, eps, max_norm)` takes the norm too: on the Triton
path one more launch over the same table (a partial sum of squares per chunk), so clipping adds
one launch and a sum instead of torch's multi-tensor norm (one tensor per gradient, ~150 a
sampled step: host time).
The int64-to-pointer casts also work in Triton's CPU interpreter (the addresses of CPU tensors
are host addresses), which is how the kernel is tested without a GPU.
"""

# Triton kernel arguments carry no Python annotations (Triton reads annotations as types).
# ruff: noqa: ANN001

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models.nas.kernels import _use_triton

try:  # optional: CI machines have neither triton nor a GPU
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - any import failure means "no triton"
    triton = None
    tl = None

# Elements per program. Large enough that a program's fixed cost (three dependent loads: its
# chunk entry, its tensor's row, then the data) is small next to the 160 KB it streams; small
# enough that the ~100M-element supernet is ~12k programs, several waves over the H200's 132 SMs
# (the last, partly idle wave is short), and the table stays ~100 KB (8 B per chunk).
CHUNK_ELEMS = 8192
# Elements per inner step: 1024 over 4 warps is 8 per thread, two 16-byte accesses per array.
BLOCK_ELEMS = 1024
WARPS = 4
_ALIGN_BYTES = 16  # addresses at this alignment let the kernel use 16-byte loads and stores
_META_COLS = 4  # table row per tensor: param, grad, sum address, element count

# `clip_adagrad_update_`'s norm on the Triton path: "table", partial sums of squares over the
# update's table (one launch); "foreach", torch's multi-tensor norm (one tensor per gradient).
# `benchmarks/train_supernet.py --ab clip_norm=foreach`: 7.48 ms per step against 7.44 (H200) and
# 8.21 against 8.16 (H100), batch 8192, session 23.
NORM = {"impl": "table"}

# (event, pinned table) of copies that may still be in flight: kept alive until done.
_IN_FLIGHT: list[tuple[torch.cuda.Event, torch.Tensor]] = []


def adagrad_reference_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    sums: Sequence[torch.Tensor],
    lr: float,
    eps: float,
    coef: torch.Tensor,
) -> None:
    """The update in torch foreach ops, those of torch's multi-tensor Adagrad after its clip."""
    g = torch._foreach_mul(grads, coef)
    torch._foreach_addcmul_(sums, g, g, value=1)
    std = torch._foreach_sqrt(sums)
    torch._foreach_add_(std, eps)
    torch._foreach_mul_(g, -lr)
    torch._foreach_addcdiv_(params, g, std)


@torch.no_grad()  # params are leaves that require grad: no autograd history for the update
def adagrad_update_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    sums: Sequence[torch.Tensor],
    lr: float,
    eps: float,
    coef: torch.Tensor,
    chunk_elems: int = CHUNK_ELEMS,
    *,
    counts: Sequence[int] | None = None,
    check: bool = True,
) -> None:
    """Clipped Adagrad on every (param, grad, sum): contiguous fp32 tensors on one device, the
    same number of elements in each triple; coef a 0-d fp32 tensor there (the clipping
    coefficient, read on the device). Updates params and sums in place; grads are left as they
    are. No host synchronisation.
    `chunk_elems`: elements per program of the kernel (for benchmarks; any positive number).
    `counts`: per triple, how many leading (flat) elements to update, those past it left as they
    are (default: all; a caller whose gradients are zero past a prefix saves their traffic
    without the host cost of three views per tensor).
    `check=False` skips the checks of the inputs (`_check`: ~3 us per triple on the host), for
    a caller that has made them already (models/nas/optim.py `clip_and_step`)."""
    if check:
        _check(params, grads, sums, coef, counts)
    if not params:
        return
    if not _use_triton(params[0]):
        if counts is not None:
            params, grads, sums = ([x.view(-1)[:n] for x, n in zip(xs, counts, strict=True)]
                                   for xs in (params, grads, sums))  # fmt: skip
        adagrad_reference_(params, grads, sums, lr, eps, coef)
        return
    _DeviceTable(params, grads, sums, chunk_elems, counts).update(coef, float(lr), float(eps))


def clip_coef(total: torch.Tensor, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grads_with_norm_'s coefficient: min(max_norm / (total + 1e-6), 1)."""
    return torch.clamp(max_norm / (total + 1e-6), max=1.0)


@torch.no_grad()
def clip_adagrad_update_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    sums: Sequence[torch.Tensor],
    lr: float,
    eps: float,
    max_norm: float,
    *,
    counts: Sequence[int] | None = None,
    extra_sq: torch.Tensor | None = None,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`adagrad_update_` after clipping the gradients' joint 2-norm at `max_norm`, the norm taken
    here. Returns (total norm, clipping coefficient), 0-d device tensors (no host
    synchronisation). `extra_sq`: the squared norm of other gradients, counted in the total (the
    caller updates those with the returned coefficient). `counts` as in `adagrad_update_`; the
    gradients must be zero past them (the norm reads only the prefixes). At least one triple.
    On the Triton path the sum of squares is one more launch over the update's own table, one
    partial sum per chunk summed by torch (deterministic), instead of torch's multi-tensor norm,
    which makes one tensor per gradient (host time, ~150 a sampled step); else that norm."""
    if not params:
        raise ValueError("no tensors to update")
    if check:
        _check(params, grads, sums, None, counts)
    table = (
        _DeviceTable(params, grads, sums, CHUNK_ELEMS, counts) if _use_triton(params[0]) else None
    )
    if table is not None and NORM["impl"] == "table":
        sq = table.sum_of_squares()
    else:  # whole gradients: past their counts they hold zeros
        sq = torch.stack(torch._foreach_norm(list(grads), 2.0)).square().sum()
    total = (sq if extra_sq is None else sq + extra_sq).sqrt()
    coef = clip_coef(total, max_norm)
    if table is not None:
        table.update(coef, float(lr), float(eps))
    else:
        adagrad_update_(params, grads, sums, lr, eps, coef, counts=counts, check=False)
    return total, coef


def _check(
    params: Sequence, grads: Sequence, sums: Sequence, coef: torch.Tensor | None,
    counts: Sequence[int] | None = None,
) -> None:  # fmt: skip
    """ValueError unless the inputs are as the kernel needs (contiguous fp32 tensors on one
    device, equal element counts per triple): it reads and writes through raw addresses, so a
    mismatch would corrupt memory instead of raising in torch. One cheap pass (it runs every
    step)."""
    n = len(params)
    if not n == len(grads) == len(sums):
        raise ValueError(f"{n} params, {len(grads)} grads, {len(sums)} sums")
    tensors = [*params, *grads, *sums, *([] if coef is None else [coef])]
    if coef is not None and coef.dim() != 0:
        raise ValueError(f"coef must be a 0-d tensor, got shape {tuple(coef.shape)}")
    for x in tensors:
        if x.dtype is not torch.float32 or x.layout is not torch.strided or not x.is_contiguous():
            raise ValueError(
                f"need dense contiguous float32 tensors, got a {x.dtype} {x.layout}"
                f" one of strides {x.stride() if x.layout is torch.strided else ()}"
            )
    if len({x.get_device() for x in tensors}) > 1:
        raise ValueError(f"tensors on several devices: {sorted({str(x.device) for x in tensors})}")
    numel = [x.numel() for x in tensors[: 3 * n]]
    if not numel[:n] == numel[n : 2 * n] == numel[2 * n :]:
        i = next(i for i in range(n) if not numel[i] == numel[n + i] == numel[2 * n + i])
        raise ValueError(f"element counts differ: {params[i].shape}, {grads[i].shape}, "
                         f"{sums[i].shape}")  # fmt: skip
    if counts is not None:
        if len(counts) != n:
            raise ValueError(f"{len(counts)} counts for {n} tensors")
        bad = [i for i in range(n) if not 0 <= counts[i] <= numel[i]]
        if bad:
            raise ValueError(
                f"count {counts[bad[0]]} outside [0, {numel[bad[0]]}] (tensor {bad[0]})"
            )


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _address(row_ptr, col, ALIGNED: tl.constexpr):
        """Column `col` of a tensor's table row as an fp32 pointer (16-byte aligned if ALIGNED)."""
        ptr = tl.load(row_ptr + col).to(tl.pointer_type(tl.float32))
        if ALIGNED:  # the hint must sit on the pointer: on the int64 it does not reach loads
            ptr = tl.multiple_of(ptr, 16)
        return ptr

    @triton.jit
    def _update(p_ptr, g_ptr, s_ptr, offs, mask, coef, neg_lr, eps):
        """The clipped Adagrad step on one block of elements."""
        g = tl.load(g_ptr + offs, mask=mask, other=0.0) * coef
        # sum + g * g as one fused multiply-add, as torch's addcmul computes it (checked on the
        # CPU); IEEE sqrt and division as torch's kernels (tl.sqrt and / may be approximate)
        s = tl.fma(g, g, tl.load(s_ptr + offs, mask=mask, other=0.0))
        p = tl.load(p_ptr + offs, mask=mask, other=0.0)
        p += tl.div_rn(g * neg_lr, tl.sqrt_rn(s) + eps)
        tl.store(s_ptr + offs, s, mask=mask)
        tl.store(p_ptr + offs, p, mask=mask)

    @triton.jit
    def _adagrad_kernel(
        chunk_ptr, meta_ptr, coef_ptr, neg_lr, eps,
        CHUNK: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr,
    ):  # fmt: skip
        """One chunk of one tensor per program. chunk_ptr[pid] = tensor << 32 | chunk index;
        meta_ptr[4 * tensor + 0..3] = param, grad, sum address and element count. Full blocks
        run unmasked (a mask from a loaded count would stop 16-byte accesses), the tail masked."""
        entry = tl.load(chunk_ptr + tl.program_id(0))
        tensor = entry >> 32
        start = (entry - (tensor << 32)) * CHUNK
        row = meta_ptr + tensor * 4
        p_ptr = _address(row, 0, ALIGNED)
        g_ptr = _address(row, 1, ALIGNED)
        s_ptr = _address(row, 2, ALIGNED)
        todo = tl.minimum(tl.load(row + 3) - start, CHUNK).to(tl.int32)
        coef = tl.load(coef_ptr)
        lanes = tl.arange(0, BLOCK)
        full = todo // BLOCK
        every = tl.full([BLOCK], 1, tl.int1)
        for i in range(full):
            _update(p_ptr, g_ptr, s_ptr, start + i * BLOCK + lanes, every, coef, neg_lr, eps)
        if full * BLOCK < todo:
            tail = full * BLOCK + lanes
            _update(p_ptr, g_ptr, s_ptr, start + tail, tail < todo, coef, neg_lr, eps)

    @triton.jit
    def _sumsq_kernel(
        chunk_ptr, meta_ptr, out_ptr,
        CHUNK: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr,
    ):  # fmt: skip
        """out_ptr[pid] = the sum of squares of one chunk of one tensor's gradient (the update's
        table; full blocks unmasked, the tail masked, as `_adagrad_kernel`)."""
        entry = tl.load(chunk_ptr + tl.program_id(0))
        tensor = entry >> 32
        start = (entry - (tensor << 32)) * CHUNK
        row = meta_ptr + tensor * 4
        g_ptr = _address(row, 1, ALIGNED)
        todo = tl.minimum(tl.load(row + 3) - start, CHUNK).to(tl.int32)
        lanes = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        full = todo // BLOCK
        for i in range(full):
            g = tl.load(g_ptr + start + i * BLOCK + lanes)
            acc += g * g
        if full * BLOCK < todo:
            tail = full * BLOCK + lanes
            g = tl.load(g_ptr + start + tail, mask=tail < todo, other=0.0)
            acc += g * g
        tl.store(out_ptr + tl.program_id(0), tl.sum(acc, axis=0))


def _chunk_table(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    sums: Sequence[torch.Tensor],
    chunk_elems: int,
    counts: Sequence[int] | None = None,
) -> tuple[np.ndarray, int, bool]:
    """(int64 table: the tensor rows, then one entry per chunk; number of chunks; whether every
    address is 16-byte aligned). Rows first: 32 B each, so the chunk part stays 16-B aligned.
    A tensor's element count is its entry in `counts` (a leading prefix) when given."""
    meta = np.empty((len(params), _META_COLS), np.int64)
    meta[:, 0] = [p.data_ptr() for p in params]
    meta[:, 1] = [g.data_ptr() for g in grads]
    meta[:, 2] = [s.data_ptr() for s in sums]
    meta[:, 3] = [p.numel() for p in params] if counts is None else counts
    per_tensor = -(-meta[:, 3] // chunk_elems)
    owner = np.repeat(np.arange(len(params), dtype=np.int64), per_tensor)
    first = np.repeat(np.cumsum(per_tensor) - per_tensor, per_tensor)
    chunks = (owner << 32) + (np.arange(owner.size, dtype=np.int64) - first)
    aligned = not (meta[:, :3] % _ALIGN_BYTES).any()
    return np.concatenate([meta.ravel(), chunks]), int(owner.size), aligned


def _to_device(table: np.ndarray, device: torch.device) -> torch.Tensor:
    """The table on `device`: one pinned non-blocking copy on CUDA. The pinned buffer is kept
    until an event recorded after the copy has completed, so it cannot be freed and reused
    while the copy still reads it."""
    host = torch.from_numpy(table)
    if device.type != "cuda":
        return host  # CPU tensors in Triton's interpreter read host memory
    host = host.pin_memory()
    out = host.to(device, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    _IN_FLIGHT[:] = [(e, h) for e, h in _IN_FLIGHT if not e.query()] + [(done, host)]
    return out


class _DeviceTable:
    """The kernels' table (`_chunk_table`) on the tensors' device, and the launches over it."""

    def __init__(
        self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
        sums: Sequence[torch.Tensor], chunk_elems: int, counts: Sequence[int] | None,
    ) -> None:  # fmt: skip
        table, self.n_chunks, self.aligned = _chunk_table(params, grads, sums, chunk_elems, counts)
        self.params, self.sums, self.chunk_elems = params, sums, chunk_elems
        self.device = params[0].device
        dev = _to_device(table, self.device) if self.n_chunks else None
        rows = len(params) * _META_COLS
        self.meta, self.chunks = (None, None) if dev is None else (dev[:rows], dev[rows:])

    def sum_of_squares(self) -> torch.Tensor:
        """The gradients' sum of squares (over their counts), a 0-d fp32 device tensor."""
        if not self.n_chunks:
            return torch.zeros((), dtype=torch.float32, device=self.device)
        part = torch.empty(self.n_chunks, dtype=torch.float32, device=self.device)  # all written
        _sumsq_kernel[(self.n_chunks,)](
            self.chunks, self.meta, part,
            CHUNK=self.chunk_elems, BLOCK=BLOCK_ELEMS, ALIGNED=self.aligned, num_warps=WARPS,
        )  # fmt: skip
        return part.sum()

    def update(self, coef: torch.Tensor, lr: float, eps: float) -> None:
        """The clipped Adagrad step on every tensor's counted elements."""
        if not self.n_chunks:
            return
        _adagrad_kernel[(self.n_chunks,)](
            self.chunks, self.meta, coef, -lr, eps,
            CHUNK=self.chunk_elems, BLOCK=BLOCK_ELEMS, ALIGNED=self.aligned, num_warps=WARPS,
        )  # fmt: skip
        # written through raw pointers: tell autograd, as torch's in-place ops would (a graph
        # that saved a parameter then fails loudly in backward instead of using the new values)
        torch.autograd.graph.increment_version([*self.params, *self.sums])
