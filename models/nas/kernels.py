"""Triton kernels for two hot ops of supernet training, with pure-torch references.

- `fused_attention(q, k, v, t_valid)`: softmax(q k^T / sqrt(D)) v over [B, H, T, D] with tiny
  heads (D = 2 in the supernet) and T <= 128 tokens. One program per (batch, head): each lane owns
  whole query rows and walks the keys in register-held chunks (fp32), so no [B, H, T, T] tensor is
  ever materialised and every softmax sum stays in one thread; the backward (a dq kernel and a
  dk/dv kernel) recomputes the probabilities from q, k and the saved row logsumexp.
  `fused_attention_qkv(qkv, heads, t_valid)` takes the packed [B, T, 3 H D] projection and its
  backward writes the packed gradient.
- `token_layer_norm(x, weight, bias, eps, relu, token_mask)`: LayerNorm over a narrow last dim
  (N = 16 per token), then optionally a ReLU and a per-token 0/1 mask, reading x through its
  [B, T, N] strides; a block of rows per program; the backward writes per-program partial sums
  of dweight / dbias.
- `masked_layer_norm(y, weight, bias, mask, eps, relu, out_dtype, residual)`: the same row
  kernels over up to 1024 features, the LayerNorm over the columns where a 0/1 mask is 1 (its
  count read on the device), plus a residual; both LayerNorms can write into a given `out`.

Both run the Triton kernels for CUDA tensors when triton imports (and `KERNELS["enabled"]`), the
references otherwise, so CPU code paths work without triton. Neither syncs with the host nor
allocates data-dependent sizes, so both can be captured in CUDA graphs (after one warm-up call
has compiled the kernels). `KERNELS["force"] = True` sends CPU tensors to the Triton path too,
which needs Triton's interpreter: TRITON_INTERPRET=1 set before this module was imported.
"""

# Triton kernel arguments carry no Python annotations (Triton reads annotations as types).
# ruff: noqa: ANN001

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
import torch.nn.functional as F

try:  # optional: CI machines have neither triton nor a GPU
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - any import failure means "no triton"
    triton = None
    tl = None

# "enabled": use the kernels for CUDA tensors; "force": also for CPU tensors (interpreter only);
# the others: launch settings, 0 = the built-in choice.
KERNELS: dict[str, Any] = {
    "enabled": True,
    "force": False,
    "attn_chunk": 0,
    "attn_warps": 0,
    "ln_warps": 0,
    "ln_rows": 0,
    "ln_bwd_warps": 0,  # the LayerNorm backward's alone (before ln_warps and ln_rows)
    "ln_bwd_rows": 0,
    "ln_programs": 0,
    # the LayerNorm backward loads a block ahead (`_ln_bwd_kernel`), doubling the bytes in flight
    # per program for 0-10 more registers per thread in bf16 under Triton 3.6 (the GPU machine's;
    # sm_90, compiled as launched: 128 at N 16, 92 -> 93, 96 -> 106, 102 -> 110 at N 128, 512,
    # 1024). Untimed alone so far (benchmarks/layer_norm_launch.py has the A/B).
    "ln_prefetch": True,
}
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_MASKED = -1.0e30  # score of an excluded key (finite, so an all-excluded row gives no NaN)
_LOG2E = 1.4426950408889634


def triton_available() -> bool:
    """Whether triton imported (on CPU it is only usable with TRITON_INTERPRET=1)."""
    return triton is not None


def _use_triton(x: torch.Tensor) -> bool:
    """Whether `x` goes to the Triton kernels (see `KERNELS`)."""
    if triton is None or not KERNELS["enabled"]:
        return False
    if x.is_cuda:
        return True
    if KERNELS["force"]:
        if not _INTERPRET:
            raise RuntimeError(
                "KERNELS['force'] with CPU tensors needs TRITON_INTERPRET=1 set before "
                "models.nas.kernels (and triton) were imported"
            )
        return True
    return False


# --------------------------------------------------------------------------------------------
# References (any device, any T, autograd through plain torch ops)
# --------------------------------------------------------------------------------------------


def _valid_mask(t: int, t_valid: int | torch.Tensor | None, device: torch.device) -> Any:
    """[t] bool: index < t_valid (None when every index is valid)."""
    if t_valid is None:
        return None
    return torch.arange(t, device=device) < t_valid


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    t_valid: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v in fp32 (float64 stays float64): [B, H, T, D] -> q's dtype.

    Keys with index >= t_valid are left out of the softmax; query rows >= t_valid are 0.
    """
    dtype = q.dtype
    f = torch.float64 if dtype == torch.float64 else torch.float32
    qf, kf, vf = q.to(f), k.to(f), v.to(f)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    valid = _valid_mask(q.shape[-2], t_valid, q.device)
    if valid is not None:
        s = s.masked_fill(~valid, _MASKED)
    o = torch.matmul(torch.softmax(s, -1), vf)
    if valid is not None:
        o = torch.where(valid[:, None], o, torch.zeros((), dtype=f, device=o.device))
    return o.to(dtype)


def layer_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm over the last dim in fp32 (float64 stays float64): [..., N] -> x's dtype."""
    f = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(f)
    xc = xf - xf.mean(-1, keepdim=True)
    y = xc * torch.rsqrt(xc.square().mean(-1, keepdim=True) + eps) * weight.to(f) + bias.to(f)
    return y.to(x.dtype)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _valid_len(tv_ptr, tv, T, TV_PTR: tl.constexpr):
        """Number of valid tokens: min(max(t_valid, 0), T), t_valid read from tv_ptr if TV_PTR."""
        if TV_PTR:
            n = tl.load(tv_ptr).to(tl.int32)
        else:
            n = tv
        return tl.minimum(tl.maximum(n, 0), T)

    @triton.jit
    def _column(tile, dd, d):
        """Row d of a [DP, BT] tile as a [BT] vector (a sum over registers, no data movement)."""
        return tl.sum(tl.where(dd[:, None] == d, tile, 0.0), 0)

    @triton.jit
    def _put(acc, dd, d, x):
        """acc [DP, BT] plus x [BT] in row d."""
        return acc + tl.where(dd[:, None] == d, x[None, :], 0.0)

    @triton.jit
    def _load_t(base, idx, s_t, s_d, dd, mask, D: tl.constexpr):
        """[DP, BT] fp32 tile of a [T, D] head: element (d, t) at base + t s_t + d s_d (0 masked)."""
        m = (dd < D)[:, None] & mask[None, :]
        return tl.load(base + idx[None, :] * s_t + dd[:, None] * s_d, mask=m, other=0.0).to(
            tl.float32
        )

    @triton.jit
    def _store_t(base, idx, s_t, s_d, dd, mask, x, D: tl.constexpr):
        """Store the [DP, BT] tile x (see _load_t) where mask, cast to base's element type."""
        m = (dd < D)[:, None] & mask[None, :]
        tl.store(base + idx[None, :] * s_t + dd[:, None] * s_d, x.to(base.dtype.element_ty), mask=m)

    @triton.jit
    def _key_bias(kvalid):
        """0 at valid keys, -1e30 (the reference's `_MASKED`) at the others: the scores'
        starting value, so that exp2 gives the others exactly 0 with no select per score
        (finite: no NaN when none is valid)."""
        return tl.where(kvalid, 0.0, -1.0e30)

    @triton.jit
    def _load_c(base, idx, s_t, mask):
        """[C] fp32 vector base[idx * s_t] (0 masked), one column of a chunk of rows."""
        return tl.load(base + idx * s_t, mask=mask, other=0.0).to(tl.float32)

    # Layout: tiles are [chunk, BT] with the BT rows this program owns (queries in the forward and
    # dq kernels, keys in the dk/dv kernel) along lanes and a chunk of the other side in each
    # thread's registers, so every softmax and gradient sum is a sum over registers (a reduction
    # across lanes costs log2(32) shuffles per element). Chunk vectors are broadcast loads.

    @triton.jit
    def _fwd_chunk(
        c, n, qt, dd, k_base, v_base, sk_t, sk_d, sv_t, sv_d, m, den, acc,
        D: tl.constexpr, KC: tl.constexpr, BT: tl.constexpr,
    ):  # fmt: skip
        """Online-softmax update of (row max m, denominator den, acc [DP, BT]) by keys c..c+KC."""
        kj = c + tl.arange(0, KC)
        kvalid = kj < n
        s = _key_bias(kvalid)[:, None] + tl.zeros([KC, BT], tl.float32)
        for d in tl.static_range(D):
            kd = _load_c(k_base + d * sk_d, kj, sk_t, kvalid)
            s += kd[:, None] * _column(qt, dd, d)[None, :]
        m_new = tl.maximum(m, tl.max(s, 0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[None, :])
        den = den * alpha + tl.sum(p, 0)
        acc = acc * alpha[None, :]
        for d in tl.static_range(D):
            vd = _load_c(v_base + d * sv_d, kj, sv_t, kvalid)
            acc = _put(acc, dd, d, tl.sum(p * vd[:, None], 0))
        return m_new, den, acc

    @triton.jit
    def _dq_chunk(
        c, n, qt, dot, delta, lse, dd, k_base, v_base, sk_t, sk_d, sv_t, sv_d, dq,
        D: tl.constexpr, KC: tl.constexpr, BT: tl.constexpr,
    ):  # fmt: skip
        """dq [DP, BT] plus dS K over keys c..c+KC (dS = P (dO V^T - delta), unscaled)."""
        kj = c + tl.arange(0, KC)
        kvalid = kj < n
        s = _key_bias(kvalid)[:, None] + tl.zeros([KC, BT], tl.float32)
        dp = tl.zeros([KC, BT], tl.float32)
        for d in tl.static_range(D):
            kd = _load_c(k_base + d * sk_d, kj, sk_t, kvalid)
            vd = _load_c(v_base + d * sv_d, kj, sv_t, kvalid)
            s += kd[:, None] * _column(qt, dd, d)[None, :]
            dp += vd[:, None] * _column(dot, dd, d)[None, :]
        p = tl.exp2(s - lse[None, :])  # 0 at invalid keys; ds 0 at invalid queries (dO = 0)
        ds = p * (dp - delta[None, :])
        for d in tl.static_range(D):
            kd = _load_c(k_base + d * sk_d, kj, sk_t, kvalid)
            dq = _put(dq, dd, d, tl.sum(ds * kd[:, None], 0))
        return dq

    @triton.jit
    def _dkdv_chunk(
        c, n, kt, vt, kvalid, dd, q_base, do_base, lse_ptr, delta_ptr, pid,
        sq_t, sq_d, sdo_t, sdo_d, dk, dv,
        D: tl.constexpr, QC: tl.constexpr, BT: tl.constexpr,
    ):  # fmt: skip
        """(dk, dv) [DP, BT] plus dS^T Q (unscaled) and P^T dO over queries c..c+QC."""
        qi = c + tl.arange(0, QC)
        qvalid = qi < n
        row = pid.to(tl.int64) * BT + qi
        lse = tl.load(lse_ptr + row)
        delta = tl.load(delta_ptr + row)
        s = _key_bias(kvalid)[None, :] + tl.zeros([QC, BT], tl.float32)
        dp = tl.zeros([QC, BT], tl.float32)
        for d in tl.static_range(D):
            qd = _load_c(q_base + d * sq_d, qi, sq_t, qvalid)
            dod = _load_c(do_base + d * sdo_d, qi, sdo_t, qvalid)
            s += qd[:, None] * _column(kt, dd, d)[None, :]
            dp += dod[:, None] * _column(vt, dd, d)[None, :]
        p = tl.exp2(s - lse[:, None])  # 0 at invalid keys; no term at invalid queries (dO = 0)
        ds = p * (dp - delta[:, None])
        for d in tl.static_range(D):
            qd = _load_c(q_base + d * sq_d, qi, sq_t, qvalid)
            dod = _load_c(do_base + d * sdo_d, qi, sdo_t, qvalid)
            dv = _put(dv, dd, d, tl.sum(p * dod[:, None], 0))
            dk = _put(dk, dd, d, tl.sum(ds * qd[:, None], 0))
        return dk, dv

    @triton.jit
    def _attn_fwd_kernel(
        q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, tv_ptr,
        tv, T, H, qk_scale,
        sq_b, sq_h, sq_t, sq_d,
        sk_b, sk_h, sk_t, sk_d,
        sv_b, sv_h, sv_t, sv_d,
        so_b, so_h, so_t, so_d,
        D: tl.constexpr, DP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
        TV_PTR: tl.constexpr,
    ):  # fmt: skip
        """One (b, h) per program: o = softmax(s) v over key chunks of KC (online softmax) and
        lse = log2(sum(exp2(s))) per query, s = q k^T * qk_scale in log2 units."""
        pid = tl.program_id(0)
        b = (pid // H).to(tl.int64)
        h = (pid % H).to(tl.int64)
        n = _valid_len(tv_ptr, tv, T, TV_PTR)
        qi = tl.arange(0, BT)
        dd = tl.arange(0, DP)
        qvalid = qi < n
        k_base = k_ptr + b * sk_b + h * sk_h
        v_base = v_ptr + b * sv_b + h * sv_h
        qt = _load_t(q_ptr + b * sq_b + h * sq_h, qi, sq_t, sq_d, dd, qvalid, D) * qk_scale
        m = tl.full([BT], float("-inf"), tl.float32)
        den = tl.zeros([BT], tl.float32)
        acc = tl.zeros([DP, BT], tl.float32)
        for c in range(0, n, KC):  # chunks past t_valid are skipped
            m, den, acc = _fwd_chunk(
                c, n, qt, dd, k_base, v_base, sk_t, sk_d, sv_t, sv_d, m, den, acc, D, KC, BT
            )
        den = tl.maximum(den, 1.0)  # >= 1 anyway on valid rows (the max term is 1)
        inv = tl.where(qvalid, 1.0 / den, 0.0)  # rows >= t_valid come out exactly 0
        o_base = o_ptr + b * so_b + h * so_h
        _store_t(o_base, qi, so_t, so_d, dd, qi < T, acc * inv[None, :], D)
        # lse 0 on masked rows keeps exp2(s - lse) finite there in the backward
        lse = tl.where(qvalid, m + tl.log2(den), 0.0)
        tl.store(lse_ptr + pid.to(tl.int64) * BT + qi, lse)

    @triton.jit
    def _attn_bwd_dq_kernel(
        q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, tv_ptr,
        tv, T, H, qk_scale, sm_scale,
        sq_b, sq_h, sq_t, sq_d,
        sk_b, sk_h, sk_t, sk_d,
        sv_b, sv_h, sv_t, sv_d,
        so_b, so_h, so_t, so_d,
        sdo_b, sdo_h, sdo_t, sdo_d,
        sg_b, sg_h, sg_t, sg_d,
        D: tl.constexpr, DP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
        TV_PTR: tl.constexpr,
    ):  # fmt: skip
        """One (b, h) per program, queries on lanes: delta = rowsum(dO * O) (stored for the dk/dv
        kernel) and dq = sm_scale * sum over key chunks of dS K, dS = P (dO V^T - delta)."""
        pid = tl.program_id(0)
        b = (pid // H).to(tl.int64)
        h = (pid % H).to(tl.int64)
        n = _valid_len(tv_ptr, tv, T, TV_PTR)
        qi = tl.arange(0, BT)
        dd = tl.arange(0, DP)
        qvalid = qi < n
        k_base = k_ptr + b * sk_b + h * sk_h
        v_base = v_ptr + b * sv_b + h * sv_h
        qt = _load_t(q_ptr + b * sq_b + h * sq_h, qi, sq_t, sq_d, dd, qvalid, D) * qk_scale
        dot = _load_t(do_ptr + b * sdo_b + h * sdo_h, qi, sdo_t, sdo_d, dd, qvalid, D)
        ot = _load_t(o_ptr + b * so_b + h * so_h, qi, so_t, so_d, dd, qvalid, D)
        delta = tl.sum(dot * ot, 0)
        row = pid.to(tl.int64) * BT + qi
        tl.store(delta_ptr + row, delta)
        lse = tl.load(lse_ptr + row)
        dq = tl.zeros([DP, BT], tl.float32)
        for c in range(0, n, KC):  # chunks past t_valid are skipped
            dq = _dq_chunk(
                c, n, qt, dot, delta, lse, dd, k_base, v_base,
                sk_t, sk_d, sv_t, sv_d, dq, D, KC, BT,
            )  # fmt: skip
        dq_base = dq_ptr + b * sg_b + h * sg_h
        _store_t(dq_base, qi, sg_t, sg_d, dd, qi < T, dq * sm_scale, D)

    @triton.jit
    def _attn_bwd_dkdv_kernel(
        q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, tv_ptr,
        tv, T, H, qk_scale, sm_scale,
        sq_b, sq_h, sq_t, sq_d,
        sk_b, sk_h, sk_t, sk_d,
        sv_b, sv_h, sv_t, sv_d,
        sdo_b, sdo_h, sdo_t, sdo_d,
        sg_b, sg_h, sg_t, sg_d,
        D: tl.constexpr, DP: tl.constexpr, BT: tl.constexpr, QC: tl.constexpr,
        TV_PTR: tl.constexpr,
    ):  # fmt: skip
        """One (b, h) per program, keys on lanes: over query chunks of QC, dv = P^T dO and
        dk = sm_scale * dS^T Q with P recomputed from q, k and lse."""
        pid = tl.program_id(0)
        b = (pid // H).to(tl.int64)
        h = (pid % H).to(tl.int64)
        n = _valid_len(tv_ptr, tv, T, TV_PTR)
        kj = tl.arange(0, BT)
        dd = tl.arange(0, DP)
        kvalid = kj < n
        q_base = q_ptr + b * sq_b + h * sq_h
        do_base = do_ptr + b * sdo_b + h * sdo_h
        kt = _load_t(k_ptr + b * sk_b + h * sk_h, kj, sk_t, sk_d, dd, kvalid, D) * qk_scale
        vt = _load_t(v_ptr + b * sv_b + h * sv_h, kj, sv_t, sv_d, dd, kvalid, D)
        dk = tl.zeros([DP, BT], tl.float32)
        dv = tl.zeros([DP, BT], tl.float32)
        for c in range(0, n, QC):  # chunks past t_valid are skipped
            dk, dv = _dkdv_chunk(
                c, n, kt, vt, kvalid, dd, q_base, do_base, lse_ptr, delta_ptr, pid,
                sq_t, sq_d, sdo_t, sdo_d, dk, dv, D, QC, BT,
            )  # fmt: skip
        g = b * sg_b + h * sg_h
        _store_t(dv_ptr + g, kj, sg_t, sg_d, dd, kj < T, dv, D)
        _store_t(dk_ptr + g, kj, sg_t, sg_d, dd, kj < T, dk * sm_scale, D)

    @triton.jit
    def _row_offsets(rows, T, cols, s_b, s_t, s_n):
        """Offsets of rows x cols of a [B, T, N] tensor with strides (s_b, s_t, s_n), row r
        being (r // T, r % T): int32 rows (the division by a runtime T is a 64-bit routine on
        int64, 6-13% of the LayerNorm kernels' instructions), int64 offsets."""
        row = (rows // T).to(tl.int64) * s_b + (rows % T).to(tl.int64) * s_t
        return row[:, None] + cols[None, :] * s_n

    @triton.jit
    def _ln_params(
        w_ptr, b_ptr, cm_ptr, N: tl.constexpr, BN: tl.constexpr, CMASK: tl.constexpr
    ):  # fmt: skip
        """(column indices, [BN] fp32 column weights, their sum, fp32 weight, fp32 bias), once
        per program: the column weights are the column mask cm with CMASK (1 inside the
        LayerNorm, 0 outside), else 1 on the N columns."""
        cols = tl.arange(0, BN)
        if CMASK:
            cm = tl.load(cm_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
            count = tl.maximum(tl.sum(cm, 0), 1.0)
        else:
            cm = (cols < N).to(tl.float32)
            count = N * 1.0
        w = tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
        return cols, cm, count, w, bias

    @triton.jit
    def _ln_load(
        x_ptr, sx_b, sx_t, sx_n, M, T, blk, N: tl.constexpr, BN: tl.constexpr,
        ROWS: tl.constexpr,
    ):  # fmt: skip
        """Row block `blk` of x viewed as [M = B * T rows, N] through its [B, T, N] strides: row
        indices, element mask and the block in x's dtype (0 outside the mask)."""
        rows = tl.arange(0, ROWS) + blk * ROWS  # int32: at most _LN_MAX_ROWS rows
        cols = tl.arange(0, BN)
        mask = (rows < M)[:, None] & (cols < N)[None, :]
        offs = _row_offsets(rows, T, cols, sx_b, sx_t, sx_n)
        return rows, mask, tl.load(x_ptr + offs, mask=mask, other=0.0)

    @triton.jit
    def _ln_center(x, mask, cm, count, eps):
        """A loaded row block centred over the columns of weight cm (0 elsewhere) and 1/std,
        mean and variance over those `count` columns, in fp32."""
        x = x.to(tl.float32)
        mean = tl.sum(x * cm[None, :], 1) / count
        xc = tl.where(mask, (x - mean[:, None]) * cm[None, :], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / count + eps)
        return xc, rstd

    @triton.jit
    def _ln_fwd_kernel(
        x_ptr, w_ptr, b_ptr, tm_ptr, cm_ptr, r_ptr, y_ptr, M, T, eps, G,
        sx_b, sx_t, sx_n, sr_b, sr_t, sr_n, sy_b, sy_t, sy_n,
        N: tl.constexpr, BN: tl.constexpr, ROWS: tl.constexpr, RELU: tl.constexpr,
        TMASK: tl.constexpr, CMASK: tl.constexpr, RESID: tl.constexpr,
    ):  # fmt: skip
        """y = (x - mean) / sqrt(var + eps) * w + b over rows of N features (over the columns of
        the column mask cm and zero outside them if CMASK), then ReLU (RELU), times the row's
        token mask tm[token] (TMASK), plus the residual r (RESID); x, r and y [B, T, N] with any
        strides. Row blocks pid, pid + G, ...: the weight, bias and column mask are loaded once
        per program, not once per block (at N 1024 a block of 2 rows reads 8 KiB of x and r, and
        12 KiB of weight, bias and mask)."""
        cols, cm, count, w, bias = _ln_params(w_ptr, b_ptr, cm_ptr, N, BN, CMASK)
        for blk in range(tl.program_id(0), tl.cdiv(M, ROWS), G):
            rows, mask, x = _ln_load(x_ptr, sx_b, sx_t, sx_n, M, T, blk, N, BN, ROWS)
            xc, rstd = _ln_center(x, mask, cm, count, eps)
            y = xc * rstd[:, None] * w[None, :] + bias[None, :]
            if CMASK:
                y = y * cm[None, :]
            if RELU:
                y = tl.maximum(y, 0.0)
            if TMASK:
                tm = tl.load(tm_ptr + rows % T, mask=rows < M, other=0.0).to(tl.float32)
                y = y * tm[:, None]
            if RESID:
                rofs = _row_offsets(rows, T, cols, sr_b, sr_t, sr_n)
                y += tl.load(r_ptr + rofs, mask=mask, other=0.0).to(tl.float32)
            offs = _row_offsets(rows, T, cols, sy_b, sy_t, sy_n)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _ln_bwd_load(
        x_ptr, dy_ptr, sx_b, sx_t, sx_n, sdy_b, sdy_t, sdy_n, M, T, blk,
        N: tl.constexpr, BN: tl.constexpr, ROWS: tl.constexpr,
    ):  # fmt: skip
        """Row block `blk` of x and of the output gradient dy (`_ln_load`), as loaded."""
        rows, mask, x = _ln_load(x_ptr, sx_b, sx_t, sx_n, M, T, blk, N, BN, ROWS)
        dofs = _row_offsets(rows, T, tl.arange(0, BN), sdy_b, sdy_t, sdy_n)
        return rows, mask, x, tl.load(dy_ptr + dofs, mask=mask, other=0.0)

    @triton.jit
    def _ln_bwd_kernel(
        x_ptr, w_ptr, b_ptr, tm_ptr, cm_ptr, dy_ptr, dx_ptr, part_ptr, M, T, eps, G,
        sx_b, sx_t, sx_n, sdy_b, sdy_t, sdy_n, sdx_b, sdx_t, sdx_n,
        N: tl.constexpr, BN: tl.constexpr, ROWS: tl.constexpr, RELU: tl.constexpr,
        TMASK: tl.constexpr, CMASK: tl.constexpr, PREFETCH: tl.constexpr,
    ):  # fmt: skip
        """dx of row blocks pid, pid + G, ...; this program's sums of g * xhat and of g into
        row pid of the [G, 2, N] fp32 partial buffer part_ptr (`_ln_part_sum_kernel` adds them
        up), g being dy times the token mask, the ReLU's gate (recomputed from x) and the column
        mask. The sums are kept per element of a row block (two fp32 tiles) and summed over the
        rows once, after the loop: summed per block they cost ~25% of the loop's instructions
        (cross-lane shuffles, and shared-memory round trips where warps split a row). PREFETCH:
        each block's loads are issued before the previous block is computed, so two blocks'
        bytes are in flight per program (the loop is otherwise latency-bound on wide rows: load,
        the row sums across warps, store)."""
        pid = tl.program_id(0)
        cols, cm, count, w, bias = _ln_params(w_ptr, b_ptr, cm_ptr, N, BN, CMASK)
        dw = tl.zeros([ROWS, BN], tl.float32)
        db = tl.zeros([ROWS, BN], tl.float32)
        if PREFETCH:  # grid <= blocks: block pid exists
            rows, mask, x, dy = _ln_bwd_load(
                x_ptr, dy_ptr, sx_b, sx_t, sx_n, sdy_b, sdy_t, sdy_n, M, T, pid, N, BN, ROWS
            )
        for blk in range(pid, tl.cdiv(M, ROWS), G):
            if PREFETCH:  # past the last block the mask is all false: no memory is touched
                rows_n, mask_n, x_n, dy_n = _ln_bwd_load(
                    x_ptr, dy_ptr, sx_b, sx_t, sx_n, sdy_b, sdy_t, sdy_n, M, T, blk + G, N, BN,
                    ROWS,
                )  # fmt: skip
            else:
                rows, mask, x, dy = _ln_bwd_load(
                    x_ptr, dy_ptr, sx_b, sx_t, sx_n, sdy_b, sdy_t, sdy_n, M, T, blk, N, BN, ROWS
                )
            xc, rstd = _ln_center(x, mask, cm, count, eps)
            g = dy.to(tl.float32)
            xhat = xc * rstd[:, None]
            if TMASK:
                g = g * tl.load(tm_ptr + rows % T, mask=rows < M, other=0.0).to(tl.float32)[:, None]
            if RELU:
                g = tl.where(xhat * w[None, :] + bias[None, :] > 0.0, g, 0.0)
            if CMASK:
                g = g * cm[None, :]
            wdy = g * w[None, :]
            c1 = tl.sum(xhat * wdy, 1) / count
            c2 = tl.sum(wdy, 1) / count
            dx = (wdy - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
            if CMASK:
                dx = dx * cm[None, :]
            xofs = _row_offsets(rows, T, cols, sdx_b, sdx_t, sdx_n)
            tl.store(dx_ptr + xofs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            dw += g * xhat
            db += g
            if PREFETCH:
                rows, mask, x, dy = rows_n, mask_n, x_n, dy_n
        part = pid.to(tl.int64) * (2 * N) + cols
        tl.store(part_ptr + part, tl.sum(dw, 0), mask=cols < N)
        tl.store(part_ptr + N + part, tl.sum(db, 0), mask=cols < N)

    @triton.jit
    def _ln_part_sum_kernel(part_ptr, out_ptr, G, C, BC: tl.constexpr, BG: tl.constexpr):
        """out[c] = sum over g of part[g, c] ([G, C] fp32, row-major; C = 2 N: the weight's and
        the bias's gradients), columns BC at a time per program, rows in a fixed order."""
        cols = tl.program_id(0) * BC + tl.arange(0, BC)
        acc = tl.zeros([BG, BC], tl.float32)
        for g0 in range(0, G, BG):
            r = g0 + tl.arange(0, BG)
            m = (r < G)[:, None] & (cols < C)[None, :]
            acc += tl.load(
                part_ptr + r.to(tl.int64)[:, None] * C + cols[None, :], mask=m, other=0.0
            )
        tl.store(out_ptr + cols, tl.sum(acc, 0), mask=cols < C)


# --------------------------------------------------------------------------------------------
# Launchers and autograd wrappers
# --------------------------------------------------------------------------------------------


def _block_t(t: int) -> int:
    """Tile side for T tokens: the next power of two >= max(T, 16)."""
    return max(16, _pow2(t))


def _attn_launch(bt: int) -> dict[str, int]:
    """Chunk size and warps for a BT tile (rows on lanes, chunks of 32 in registers)."""
    return {
        "KC": min(bt, KERNELS["attn_chunk"] or 32),
        "num_warps": KERNELS["attn_warps"] or max(1, bt // 64),
    }


def _token_major(b: int, h: int, t: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """Empty [B, H, T, D] stored as [B, T, H, D], so merging heads after a transpose is free."""
    return torch.empty((b, t, h, d), dtype=like.dtype, device=like.device).transpose(1, 2)


def _tv_args(t_valid: int | torch.Tensor | None, t: int, dev_tensor: torch.Tensor) -> tuple:
    """(pointer tensor, int value, TV_PTR) kernel arguments of t_valid."""
    if isinstance(t_valid, torch.Tensor):
        if t_valid.numel() != 1:
            raise ValueError("t_valid must be a python int or a one-element integer tensor")
        return t_valid.to(dev_tensor.device).reshape(()), 0, True
    return dev_tensor, t if t_valid is None else int(t_valid), False


def _pow2(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << (n - 1).bit_length()


def _attn_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t_valid: Any) -> tuple:
    """The forward kernel: (o token-major [B, H, T, D], lse, t_valid kernel arguments)."""
    b, h, t, d = q.shape
    bt = _block_t(t)
    o = _token_major(b, h, t, d, q)
    lse = torch.empty((b * h, bt), dtype=torch.float32, device=q.device)
    tv_args = _tv_args(t_valid, t, lse)
    _attn_fwd_kernel[(b * h,)](
        q, k, v, o, lse, tv_args[0], tv_args[1], t, h, _LOG2E / math.sqrt(d),
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        D=d, DP=_pow2(d), BT=bt, TV_PTR=tv_args[2], **_attn_launch(bt),
    )  # fmt: skip
    return o, lse, tv_args


def _attn_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, do: torch.Tensor,
    lse: torch.Tensor, tv_args: tuple, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor,
) -> None:  # fmt: skip
    """The two backward kernels, writing dq, dk, dv ([B, H, T, D], any strides dk and dv share)."""
    b, h, t, d = q.shape
    bt = _block_t(t)
    delta = torch.empty_like(lse)
    tv_ptr, tv, has_ptr = tv_args
    consts = {"D": d, "DP": _pow2(d), "BT": bt, "TV_PTR": has_ptr}
    launch = _attn_launch(bt)
    scales = (_LOG2E / math.sqrt(d), 1.0 / math.sqrt(d))
    _attn_bwd_dq_kernel[(b * h,)](
        q, k, v, o, do, lse, delta, dq, tv_ptr, tv, t, h, *scales,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *do.stride(), *dq.stride(),
        **consts, **launch,
    )  # fmt: skip
    _attn_bwd_dkdv_kernel[(b * h,)](
        q, k, v, do, lse, delta, dk, dv, tv_ptr, tv, t, h, *scales,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(),
        **consts, QC=launch.pop("KC"), **launch,
    )  # fmt: skip


def _save_tv(ctx: Any, tv_args: tuple) -> tuple:
    """t_valid's pointer tensor for save_for_backward; its other arguments kept on ctx."""
    ctx.tv, ctx.has_ptr = tv_args[1], tv_args[2]
    return (tv_args[0],)


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, t_valid: Any) -> Any:
        o, lse, tv_args = _attn_forward(q, k, v, t_valid)
        ctx.save_for_backward(q, k, v, o, lse, *_save_tv(ctx, tv_args))
        return o

    @staticmethod
    def backward(ctx: Any, do: torch.Tensor) -> Any:
        q, k, v, o, lse, tv_ptr = ctx.saved_tensors
        b, h, t, d = q.shape
        dq, dk, dv = (_token_major(b, h, t, d, x) for x in (q, k, v))
        _attn_backward(q, k, v, o, do, lse, (tv_ptr, ctx.tv, ctx.has_ptr), dq, dk, dv)
        return dq, dk, dv, None


def _split_qkv(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, T, D] views of a packed [B, T, 3 H D] projection."""
    b, t, c = qkv.shape
    return qkv.view(b, t, 3, heads, c // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)


class _FusedAttentionQKV(torch.autograd.Function):
    """`fused_attention` over a packed projection; the backward writes dq, dk, dv into one packed
    [B, T, 3 H D] gradient (no stack of three gradients, no copy back through the permute)."""

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, heads: int, t_valid: Any) -> Any:
        o, lse, tv_args = _attn_forward(*_split_qkv(qkv, heads), t_valid)
        ctx.heads = heads
        ctx.save_for_backward(qkv, o, lse, *_save_tv(ctx, tv_args))
        b, h, t, d = o.shape
        return o.transpose(1, 2).reshape(b, t, h * d)  # token-major storage: a view

    @staticmethod
    def backward(ctx: Any, do: torch.Tensor) -> Any:
        qkv, o, lse, tv_ptr = ctx.saved_tensors
        b, h, t, d = o.shape
        grad = torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)
        dq, dk, dv = _split_qkv(grad, ctx.heads)
        do = do.reshape(b, t, h, d).transpose(1, 2)  # a view when do is token-major
        _attn_backward(*_split_qkv(qkv, ctx.heads), o, do, lse, (tv_ptr, ctx.tv, ctx.has_ptr),
                       dq, dk, dv)  # fmt: skip
        return grad, None, None


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    t_valid: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v: q, k, v [B, H, T, D] (any strides) -> [B, H, T, D], q's dtype.

    Keys with index >= t_valid are left out of the softmax and query rows >= t_valid are exactly 0
    (so are their gradients). t_valid: None (all T), a python int, or a one-element integer tensor
    on q's device, read inside the kernel (no host sync: capturable in CUDA graphs). The Triton
    path (T <= 128, else the reference; fp32 math) returns a view stored token-major ([B, T, H, D]
    memory), so `o.transpose(1, 2).reshape(B, T, H * D)` costs no copy; use reshape, not view.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one [B, H, T, D] shape, got {q.shape}, {k.shape}")
    if not _use_triton(q) or q.numel() == 0 or q.shape[-2] > 128:
        return attention_reference(q, k, v, t_valid)
    return _FusedAttention.apply(q, k, v, t_valid)


def fused_attention_qkv(
    qkv: torch.Tensor, heads: int, t_valid: int | torch.Tensor | None = None
) -> torch.Tensor:
    """`fused_attention` of a packed projection: qkv [B, T, 3 H D] (q, k, v, each H heads of D,
    as a Linear to 3 H D makes it; viewable as [B, T, 3, H, D]) -> [B, T, H D]. On the Triton
    path the backward writes the packed gradient directly."""
    if qkv.dim() != 3 or qkv.shape[-1] % (3 * heads):
        raise ValueError(f"qkv must be [B, T, 3 * {heads} * D], got {tuple(qkv.shape)}")
    b, t, c = qkv.shape
    if not _use_triton(qkv) or qkv.numel() == 0 or t > 128:
        o = attention_reference(*_split_qkv(qkv, heads), t_valid)
        return o.transpose(1, 2).reshape(b, t, c // 3)
    return _FusedAttentionQKV.apply(qkv, heads, t_valid)


# Elements of a row block per thread in the LayerNorm kernels, forward and backward. At 32 (the
# first default: 256 rows of 16 over 4 warps) the kernels spill since they gained strides, masks
# and a ReLU: ptxas (sm_90, Triton 3.9) gives the token backward 255 registers and a 392-byte
# stack per thread, the forward 88 bytes. At 16 the forward takes 48-158 registers (by Triton
# version). The backward ran at 8 while it spilled at 16 (226-254 registers under Triton 3.6);
# reworked (session 14) it takes 153-206 at 16 with no spill under Triton 3.6 and 3.7, and on an
# H100 (benchmarks/layer_norm_launch.py, session 16) 16 per thread was the fastest or near it at
# every step shape (token [8192, 64, 16]: 49.2 us against 57.7 at 8; masked [8192, 128]: 23.6
# against 27.4). tests/models/nas/sm90_compile.py compiles both as the step launches them (unit
# strides and 16-byte alignment specialised) and checks that none spills.
LN_ELEMS_PER_THREAD = 16
# Rows the LayerNorm kernels take (they index rows in int32; a program's load-ahead reaches up to
# about twice the row count); more go to the reference path.
_LN_MAX_ROWS = 2**30


def _ln_launch(n: int, backward: bool = False) -> tuple[int, int, int]:
    """(padded width, rows per program, warps) for N features: rows filling LN_ELEMS_PER_THREAD
    per thread on 2 warps (64 rows of 16 features), more warps for wide rows so that a block
    keeps 2 rows (at one row, ptxas gave the backward 163 registers against 96 for two); the
    KERNELS overrides (the backward's own first) replace either."""
    bn = max(2, _pow2(n))
    warps = (backward and KERNELS["ln_bwd_warps"]) or KERNELS["ln_warps"]
    warps = warps or max(2, 2 * bn // (32 * LN_ELEMS_PER_THREAD))
    rows = (backward and KERNELS["ln_bwd_rows"]) or KERNELS["ln_rows"]
    rows = rows or max(1, LN_ELEMS_PER_THREAD * 32 * warps // bn)
    return bn, rows, warps


def programs_per_sm(
    regs: int, warps: int, shared_bytes: int = 0, regs_sm: int = 65536, warps_sm: int = 64,
    shared_sm: int = 233472, programs_sm: int = 32,
) -> int:  # fmt: skip
    """How many programs of a kernel with `regs` registers per thread on `warps` warps an SM
    holds at once (Hopper's limits by default): registers are allocated per warp in units of
    256 (8 per thread), then the SM's registers, warps, shared memory and program slots."""
    regs_warp = -(-regs // 8) * 8 * 32
    fit = min(regs_sm // (regs_warp * warps), warps_sm // warps, programs_sm)
    if shared_bytes:
        fit = min(fit, shared_sm // shared_bytes)
    return max(1, fit)


def _resident_per_sm(kernel: Any, warps: int, device: torch.device) -> int:
    """`programs_per_sm` of a launched Triton kernel on this device (what 255 registers per
    thread allow when the kernel does not say how many it takes)."""
    regs = getattr(kernel, "n_regs", 0)
    if not regs:
        return programs_per_sm(255, warps)
    props = torch.cuda.get_device_properties(device)
    return programs_per_sm(
        regs, warps, getattr(getattr(kernel, "metadata", None), "shared", 0),
        getattr(props, "regs_per_multiprocessor", 65536),
        getattr(props, "max_threads_per_multi_processor", 2048) // 32,
        getattr(props, "shared_memory_per_multiprocessor", 233472),
    )  # fmt: skip


# Programs per SM of the LayerNorm kernels' persistent grids, per launch key, once a launch has
# shown the compiled kernel's registers (the backward's 93-168 per thread, by Triton version):
# as many as the SM holds at once, so no program waits for a second wave. Before that (the
# key's first launch): what 255 registers per thread allow.
_LN_FIT: dict[tuple, int] = {}


def _ln_programs(blocks: int, warps: int, device: torch.device, key: tuple) -> int:
    """Programs of a LayerNorm kernel for `blocks` row blocks (3 in the CPU interpreter)."""
    if KERNELS["ln_programs"] or device.type != "cuda":
        return max(1, min(blocks, KERNELS["ln_programs"] or 3))
    per_sm = _LN_FIT.get(key) or programs_per_sm(255, warps)
    return max(1, min(blocks, per_sm * _sm_count(device)))


def _learn_fit(kernel: Any, warps: int, device: torch.device, key: tuple) -> None:
    """After a key's first launch on a GPU: the programs per SM its compiled kernel allows."""
    if device.type == "cuda" and key not in _LN_FIT:
        _LN_FIT[key] = _resident_per_sm(kernel, warps, device)


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


# The partial sums' reduction: columns per program, rows per step (on 4 warps). The loop over
# the G rows is latency-bound (G is the backward's persistent grid, ~400-800 programs on 132
# SMs; 100 KB to 3 MB): on an H100 (benchmarks/layer_norm_launch.py --table part-sums) 4 columns
# of 512 rows took 6.8-8.1 us at the step's shapes, where 32 x 128 took 11.3-16.1 (the token
# LayerNorm's [792, 32] was one program looping 7 times) and 8 x 512 7.5-9.2.
LN_PART_COLS, LN_PART_ROWS = 4, 512


def _ln_part_sum(part: torch.Tensor) -> torch.Tensor:
    """[G, C] fp32 partial sums -> their column sums [C] (one small kernel, a fixed order)."""
    g, c = part.shape
    out = torch.empty(c, dtype=torch.float32, device=part.device)
    _ln_part_sum_kernel[(triton.cdiv(c, LN_PART_COLS),)](
        part, out, g, c, BC=LN_PART_COLS, BG=LN_PART_ROWS, num_warps=4
    )
    return out


def _ln_kernel_takes(x: torch.Tensor, n_max: int) -> bool:
    """Whether a LayerNorm over x's last dim goes to the row kernels: the Triton path, not
    empty, at most n_max features and _LN_MAX_ROWS rows."""
    n = x.shape[-1]
    return _use_triton(x) and x.numel() > 0 and n <= n_max and x.numel() // n <= _LN_MAX_ROWS


def _rows3(x: torch.Tensor) -> torch.Tensor:
    """x [..., T, N] as [B, T, N] (a view where the strides allow, else a copy)."""
    return x.reshape(-1, *x.shape[-2:]) if x.dim() >= 2 else x.reshape(1, 1, -1)


class _RowLayerNorm(torch.autograd.Function):
    """LayerNorm over rows of N features with the options of `_ln_fwd_kernel` (`token_layer_norm`,
    `masked_layer_norm`). `out` is a list (empty, or the tensor to write into) so that autograd
    does not take it for an input."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
        residual: torch.Tensor | None, eps: float, relu: bool, token_mask: torch.Tensor | None,
        col_mask: torch.Tensor | None, out_dtype: torch.dtype | None, out: list[torch.Tensor],
    ) -> Any:  # fmt: skip
        x3 = _rows3(x)
        bsz, t, n = x3.shape
        m = bsz * t
        bn, rows, warps = _ln_launch(n)
        if out:
            y = out[0].data.view(x3.shape)  # its memory, its own version counter
        elif out_dtype in (None, x.dtype):
            y = torch.empty_like(x3)  # x's layout when x is dense (a transposed view stays one)
        else:
            y = torch.empty(x3.shape, dtype=out_dtype, device=x.device)
        w, b = w.contiguous(), b.contiguous()
        r3 = x3 if residual is None else _rows3(residual)
        tm = x3 if token_mask is None else token_mask.contiguous()
        cm = x3 if col_mask is None else col_mask.contiguous()
        consts = {"N": n, "BN": bn, "ROWS": rows, "RELU": relu, "TMASK": token_mask is not None,
                  "CMASK": col_mask is not None, "RESID": residual is not None,
                  "num_warps": warps}  # fmt: skip
        key = ("fwd", x3.device, x3.dtype, y.dtype, *consts.values())
        grid = _ln_programs(triton.cdiv(m, rows), warps, x3.device, key)
        kernel = _ln_fwd_kernel[(grid,)](
            x3, w, b, tm, cm, r3, y, m, t, eps, grid, *x3.stride(), *r3.stride(), *y.stride(),
            **consts,
        )  # fmt: skip
        _learn_fit(kernel, warps, x3.device, key)
        ctx.save_for_backward(x3, w, b, tm, cm)
        ctx.eps, ctx.shape, ctx.relu = eps, x.shape, relu
        ctx.tmask, ctx.cmask = token_mask is not None, col_mask is not None
        ctx.r_dtype = None if residual is None else residual.dtype
        return y.reshape(x.shape)  # a view

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> Any:
        x3, w, b, tm, cm = ctx.saved_tensors
        bsz, t, n = x3.shape
        m = bsz * t
        bn, rows, warps = _ln_launch(n, backward=True)
        dx = torch.empty_like(x3)
        dy3 = _rows3(dy)
        consts = {"N": n, "BN": bn, "ROWS": rows, "RELU": ctx.relu, "TMASK": ctx.tmask,
                  "CMASK": ctx.cmask, "PREFETCH": bool(KERNELS["ln_prefetch"]),
                  "num_warps": warps}  # fmt: skip
        key = ("bwd", x3.device, x3.dtype, dy3.dtype, *consts.values())
        grid = _ln_programs(triton.cdiv(m, rows), warps, x3.device, key)
        part = torch.empty((grid, 2 * n), dtype=torch.float32, device=x3.device)
        kernel = _ln_bwd_kernel[(grid,)](
            x3, w, b, tm, cm, dy3, dx, part, m, t, ctx.eps, grid,
            *x3.stride(), *dy3.stride(), *dx.stride(), **consts,
        )  # fmt: skip
        _learn_fit(kernel, warps, x3.device, key)
        dweight, dbias = _ln_part_sum(part).view(2, n)
        dweight, dbias = dweight.to(w.dtype), dbias.to(b.dtype)
        dres = None if ctx.r_dtype is None else dy.to(ctx.r_dtype)  # the residual's: dy itself
        return dx.reshape(ctx.shape), dweight, dbias, dres, None, None, None, None, None, None


def token_layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5,
    relu: bool = False, token_mask: torch.Tensor | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """LayerNorm over the last dim N (N <= 128) with affine weight, bias [N]: [..., N] -> x's dtype,
    then a ReLU when `relu`, then times `token_mask` [T] along dim -2 (token t of every row
    scaled by token_mask[t]) when given.

    fp32 math whatever the input dtypes; the Triton path is capturable in CUDA graphs, reads x
    through its strides ([B, T, N] views, e.g. a transposed features-first tensor, need no copy)
    and writes the output in x's layout.
    `out` (x's shape, any strides viewable as [B, T, N], no autograd history): the Triton path
    writes the result there, in out's dtype, and returns a tensor on out's memory with a version
    counter of its own (so writes elsewhere in out's buffer do not invalidate a later consumer's
    saved copy of it; the caller must not overwrite out while the result is in use); the
    reference path ignores it (a caller compares data pointers to tell).
    """
    n = x.shape[-1]
    if weight.shape != (n,) or bias.shape != (n,):
        raise ValueError(f"weight and bias must be [{n}], got {weight.shape}, {bias.shape}")
    if out is not None and (out.shape != x.shape or out.requires_grad):
        raise ValueError(f"out must be a {tuple(x.shape)} tensor without autograd history, got "
                         f"{tuple(out.shape)}{' requiring grad' * out.requires_grad}")  # fmt: skip
    if token_mask is not None and (x.dim() < 2 or token_mask.shape != (x.shape[-2],)):
        raise ValueError(f"token_mask must be [{x.shape[-2] if x.dim() > 1 else 1}], "
                         f"got {tuple(token_mask.shape)}")  # fmt: skip
    if not _ln_kernel_takes(x, 128):
        y = layer_norm_reference(x, weight, bias, eps)
        y = F.relu(y) if relu else y
        return y if token_mask is None else y * token_mask[:, None].to(y.dtype)
    return _RowLayerNorm.apply(x, weight, bias, None, float(eps), relu, token_mask, None, None,
                               [] if out is None else [out])  # fmt: skip


def masked_layer_norm_reference(
    y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, eps: float,
    relu: bool, out_dtype: torch.dtype | None, residual: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """`masked_layer_norm` in torch ops (float32 at least; models/nas/static.py compiles it)."""
    y = y.float() if y.dtype in (torch.float16, torch.bfloat16) else y
    count = mask.sum().clamp_min(1)  # the kernel's: an all-0 mask gives 0, not 0 / 0
    mean = (y * mask).sum(-1, keepdim=True) / count
    xc = (y - mean) * mask
    var = xc.square().sum(-1, keepdim=True) / count
    out = (xc * torch.rsqrt(var + eps) * w + b) * mask
    out = F.relu(out) if relu else out
    out = out if out_dtype is None else out.to(out_dtype)
    return out if residual is None else residual + out


def masked_layer_norm(
    y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor,
    eps: float = 1e-5, relu: bool = False, out_dtype: torch.dtype | None = None,
    residual: torch.Tensor | None = None, out: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """LayerNorm of y [..., N] over the features where the 0/1 `mask` [N] is 1 (affine weight,
    bias [N]; zero where it is 0), then a ReLU when `relu`, in `out_dtype` (else y's; float32
    math), plus `residual` (y's shape) when given: `residual + masked LN` in one pass.
    On the Triton path (N <= 1024) one kernel each way: y, residual and the output gradient are
    read through their strides (a slot of the node buffers needs no copy), and the result is
    written into `out` when given, as `token_layer_norm` does; the reference path ignores out.
    """
    n = y.shape[-1]
    if weight.shape != (n,) or bias.shape != (n,) or mask.shape != (n,):
        raise ValueError(f"weight, bias and mask must be [{n}], got {tuple(weight.shape)}, "
                         f"{tuple(bias.shape)}, {tuple(mask.shape)}")  # fmt: skip
    if residual is not None and residual.shape != y.shape:
        raise ValueError(f"residual must be {tuple(y.shape)}, got {tuple(residual.shape)}")
    if out is not None and (out.shape != y.shape or out.requires_grad):
        raise ValueError(f"out must be a {tuple(y.shape)} tensor without autograd history")
    if not _ln_kernel_takes(y, 1024):
        return masked_layer_norm_reference(y, weight, bias, mask, eps, relu, out_dtype, residual)
    return _RowLayerNorm.apply(y, weight, bias, residual, float(eps), relu, None, mask,
                               out_dtype, [] if out is None else [out])  # fmt: skip
