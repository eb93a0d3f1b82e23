"""Fused attention and token LayerNorm kernels against their references, references by hand.

The reference tests always run; the Triton tests run on CUDA or in Triton's interpreter
(conftest.py says when they skip).
Tolerances: fp32 rtol 1e-5 / atol 1e-5; bf16 (same bf16 inputs to both sides, fp32 math in both,
so only the final bf16 rounding differs) rtol 2e-2 / atol 2e-2.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import models.nas.kernels as kernels
from models.nas.kernels import attention_reference, layer_norm_reference

from .conftest import CUDA, triton_path

DEV = torch.device("cuda" if CUDA else "cpu")
FP32 = {"rtol": 1e-5, "atol": 1e-5}
BF16 = {"rtol": 2e-2, "atol": 2e-2}


@pytest.fixture(scope="module")
def K():
    """models.nas.kernels with its Triton path on (conftest's `triton_path`)."""
    with triton_path() as k:
        yield k


def _qkv(b, h, t, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g).to(DEV, dtype).requires_grad_() for _ in range(3)]


def _run(fn, tensors, *args, seed=1):
    """fn(*tensors, *args) and the gradients of sum(out * g) for a fixed random g."""
    for x in tensors:
        x.grad = None
    out = fn(*tensors, *args)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    (out.float() * g.float()).sum().backward()
    return out.detach(), [x.grad for x in tensors]


def _tv(mode, t):
    """t_valid for a test mode: None, a python int or a 0-dim int64 tensor on DEV."""
    n = max(0, (2 * t) // 3)
    return {"none": None, "int": n, "tensor": torch.tensor(n, device=DEV)}[mode]


def _n_valid(t_valid, t):
    return t if t_valid is None else min(int(t_valid), t)


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def test_reference_attention_by_hand():
    # T = 2, D = 2: s = q k^T / sqrt(2), each row a softmax of two scores
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a, c = 1 / math.sqrt(2), 2 / math.sqrt(2)
    w0 = math.exp(a) / (math.exp(a) + 1.0)  # row 0: scores (a, 0)
    w1 = math.exp(a) / (math.exp(a) + math.exp(c))  # row 1: scores (a, c)
    want = torch.tensor(
        [
            [w0 * 1 + (1 - w0) * 3, w0 * 2 + (1 - w0) * 4],
            [w1 * 1 + (1 - w1) * 3, w1 * 2 + (1 - w1) * 4],
        ]
    )
    got = attention_reference(q[None, None], k[None, None], v[None, None])[0, 0]
    torch.testing.assert_close(got, want)
    # t_valid = 1: query 0 sees key 0 only (o = v0), query 1 is zero
    got = attention_reference(q[None, None], k[None, None], v[None, None], 1)[0, 0]
    assert torch.equal(got, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


@pytest.mark.parametrize("t_valid", [None, 3, 0])
def test_reference_attention_matches_sdpa(t_valid):
    q, k, v = (torch.randn(2, 3, 5, 2) for _ in range(3))
    got = attention_reference(q, k, v, t_valid)
    if t_valid is None:
        torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v))
        return
    n = t_valid
    if n:
        want = F.scaled_dot_product_attention(q[..., :n, :], k[..., :n, :], v[..., :n, :])
        torch.testing.assert_close(got[..., :n, :], want)
    assert torch.equal(got[..., n:, :], torch.zeros_like(got[..., n:, :]))


@pytest.mark.parametrize("t_valid", [None, 2, torch.tensor(2)])
def test_reference_attention_gradcheck(t_valid):
    q, k, v = (torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda *a: attention_reference(*a, t_valid), (q, k, v))


def test_reference_layer_norm():
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(16, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer_norm_reference(x, w, b), F.layer_norm(x, (16,), w, b))
    assert torch.autograd.gradcheck(layer_norm_reference, (x[:1, :2], w, b))
    y = layer_norm_reference(x.detach().bfloat16(), w.detach().float(), b.detach().float())
    assert y.dtype == torch.bfloat16


def test_cpu_without_force_uses_reference(monkeypatch):
    monkeypatch.setitem(kernels.KERNELS, "force", False)
    q, k, v = (torch.randn(1, 2, 4, 2) for _ in range(3))
    assert torch.equal(kernels.fused_attention(q, k, v, 3), attention_reference(q, k, v, 3))
    x, w, b = torch.randn(2, 3, 16), torch.randn(16), torch.randn(16)
    assert torch.equal(kernels.token_layer_norm(x, w, b), layer_norm_reference(x, w, b))


# --------------------------------------------------------------------------------------------
# Triton kernels (CUDA, or CPU interpreter)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "int", "tensor"])
@pytest.mark.parametrize("t", [1, 5, 16, 37, 64])
def test_fused_attention_fp32(K, t, mode):
    t_valid = _tv(mode, t)
    qkv = _qkv(2, 3, t, 2)  # B > 1 and H > 1 check the (b, h) indexing
    out, grads = _run(K.fused_attention, qkv, t_valid)
    want, want_grads = _run(attention_reference, qkv, t_valid)
    assert out.shape == want.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, want, **FP32)
    for g, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, wg, **FP32)
    n = _n_valid(t_valid, t)
    for x in (out, *grads):  # rows (queries) and keys >= t_valid: exactly zero
        assert torch.count_nonzero(x[..., n:, :]) == 0


@pytest.mark.parametrize("t_valid", [0, 100])
def test_fused_attention_t_valid_edges(K, t_valid):
    # t_valid = 0: everything zero, no NaN; t_valid > T: as if None
    qkv = _qkv(1, 2, 7, 2)
    out, grads = _run(K.fused_attention, qkv, torch.tensor(t_valid, device=DEV))
    want, want_grads = _run(attention_reference, qkv, t_valid)
    torch.testing.assert_close(out, want, **FP32)
    for g, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, wg, **FP32)
    if t_valid == 0:
        assert all(torch.count_nonzero(x) == 0 for x in (out, *grads))


@pytest.mark.parametrize("t", [16, 37])
def test_fused_attention_bf16(K, t):
    qkv = _qkv(1, 3, t, 2, torch.bfloat16)
    out, grads = _run(K.fused_attention, qkv, 30)
    want, want_grads = _run(attention_reference, qkv, 30)
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    torch.testing.assert_close(out, want, **BF16)
    for g, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, wg, **BF16)


@pytest.mark.parametrize(("chunk", "t_valid"), [(16, 37), (16, 20), (8, 5), (64, 37)])
def test_fused_attention_chunking(K, monkeypatch, chunk, t_valid):
    # several chunks, partly valid chunks and skipped chunks
    monkeypatch.setitem(K.KERNELS, "attn_chunk", chunk)
    qkv = _qkv(1, 2, 37, 2)
    tv = torch.tensor(t_valid, device=DEV)
    out, grads = _run(K.fused_attention, qkv, tv)
    want, want_grads = _run(attention_reference, qkv, t_valid)
    torch.testing.assert_close(out, want, **FP32)
    for g, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, wg, **FP32)


@pytest.mark.parametrize(("t", "d"), [(16, 1), (9, 4), (5, 8), (100, 2)])
def test_fused_attention_head_widths_and_long_t(K, t, d):
    qkv = _qkv(1, 2, t, d)
    out, grads = _run(K.fused_attention, qkv, None)
    want, want_grads = _run(attention_reference, qkv, None)
    torch.testing.assert_close(out, want, **FP32)
    for g, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, wg, **FP32)


def test_fused_attention_strided_inputs(K):
    # q, k, v as ops.Attention makes them: a permuted view of one [B, T, 3, H, D] projection
    b, t, h, d = 2, 11, 8, 2
    g = torch.Generator().manual_seed(3)
    packed = torch.randn(b, t, 3 * h * d, generator=g).to(DEV).requires_grad_()

    def split_attend(fn, x):
        q, k, v = x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        return fn(q, k, v, 7).transpose(1, 2).reshape(b, t, h * d)

    out, (grad,) = _run(lambda x: split_attend(K.fused_attention, x), [packed])
    want, (want_grad,) = _run(lambda x: split_attend(attention_reference, x), [packed])
    torch.testing.assert_close(out, want, **FP32)
    torch.testing.assert_close(grad, want_grad, **FP32)


@pytest.mark.parametrize("t_valid", [None, 7, 0])
def test_fused_attention_qkv_packed(K, t_valid):
    # the packed entry point against the reference over the same permuted views; its backward
    # writes the packed gradient directly
    b, t, h, d = 2, 11, 8, 2
    g = torch.Generator().manual_seed(4)
    packed = torch.randn(b, t, 3 * h * d, generator=g).to(DEV).requires_grad_()
    tv = None if t_valid is None else torch.tensor(t_valid, device=DEV)

    def reference(x):
        q, k, v = x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        return attention_reference(q, k, v, t_valid).transpose(1, 2).reshape(b, t, h * d)

    out, (grad,) = _run(lambda x: K.fused_attention_qkv(x, h, tv), [packed])
    want, (want_grad,) = _run(reference, [packed])
    assert out.shape == (b, t, h * d)
    torch.testing.assert_close(out, want, **FP32)
    torch.testing.assert_close(grad, want_grad, **FP32)


def test_fused_attention_qkv_bad_shape():
    with pytest.raises(ValueError, match="3 \\* 8"):
        kernels.fused_attention_qkv(torch.zeros(2, 3, 47), 8)


@pytest.mark.parametrize(("shape", "rows"), [((2, 5, 16), 0), ((3, 37, 16), 16), ((4, 24), 0)])
def test_token_layer_norm_fp32(K, monkeypatch, shape, rows):
    monkeypatch.setitem(K.KERNELS, "ln_rows", rows)  # 16 rows: several programs' partial sums
    n = shape[-1]
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g).to(DEV).requires_grad_() for s in (shape, n, n))
    out, grads = _run(K.token_layer_norm, [x, w, b])
    want, want_grads = _run(layer_norm_reference, [x, w, b])
    torch.testing.assert_close(out, want, **FP32)
    for gr, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(gr, wg, **FP32)


def test_layer_norms_past_the_row_limit_use_the_reference(K, monkeypatch):
    """Past _LN_MAX_ROWS rows (the kernels index rows in int32) both LayerNorms take the
    reference path: here the limit is lowered to 5 rows, and the kernel path would raise."""
    monkeypatch.setattr(K, "_LN_MAX_ROWS", 5)

    def no_kernel(*args):
        raise AssertionError("the kernel path ran")

    monkeypatch.setattr(K._RowLayerNorm, "apply", no_kernel)
    x, w, b = (torch.randn(s, device=DEV) for s in ((2, 3, 16), 16, 16))
    torch.testing.assert_close(K.token_layer_norm(x, w, b), layer_norm_reference(x, w, b))
    mask = torch.ones(16, device=DEV)
    want = K.masked_layer_norm_reference(x, w, b, mask, 1e-5, False, None)
    torch.testing.assert_close(K.masked_layer_norm(x, w, b, mask), want)


@pytest.mark.parametrize("n", [16, 128])
def test_token_layer_norm_bf16(K, n):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 9, n, generator=g) * 3 + 1).to(DEV, torch.bfloat16).requires_grad_()
    w, b = (torch.randn(n, generator=g).to(DEV).requires_grad_() for _ in range(2))
    out, grads = _run(K.token_layer_norm, [x, w, b])
    want, want_grads = _run(layer_norm_reference, [x, w, b])
    assert out.dtype == torch.bfloat16 and grads[0].dtype == torch.bfloat16
    torch.testing.assert_close(out, want, **BF16)
    for gr, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(gr, wg, **BF16)


def _ln_relu_mask_reference(x, w, b, mask):
    y = F.relu(layer_norm_reference(x, w, b))
    return y * mask[:, None].to(y.dtype)


@pytest.mark.parametrize("layout", ["token-major", "features-first", "sliced"])
@pytest.mark.parametrize(("rows", "prefetch"), [(0, True), (16, True), (16, False)])
def test_token_layer_norm_relu_mask_strided(K, monkeypatch, layout, rows, prefetch):
    # ReLU and a 0/1 token mask fused into the kernel, x read through its strides: a transposed
    # features-first tensor (as the token projection makes it) needs no copy, and the output
    # and the input gradient keep x's layout (a dense one; else they are contiguous). 16 rows:
    # each of the interpreter's 3 programs takes several blocks, loaded ahead or not.
    monkeypatch.setitem(K.KERNELS, "ln_rows", rows)
    monkeypatch.setitem(K.KERNELS, "ln_prefetch", prefetch)
    b, t, n = 3, 13, 16
    g = torch.Generator().manual_seed(5)
    shape = {"token-major": (b, t, n), "features-first": (b, n, t), "sliced": (b, t, 2 * n)}
    base = torch.randn(shape[layout], generator=g)
    w, bias = torch.randn(n, generator=g), torch.randn(n, generator=g) * 0.5
    mask = (torch.arange(t) < 9).float().to(DEV)
    x = base.to(DEV).requires_grad_()
    w, bias = w.to(DEV).requires_grad_(), bias.to(DEV).requires_grad_()

    def view(xx):  # sliced: not dense, so the output and dx are contiguous instead
        return {"token-major": xx, "features-first": xx.transpose(1, 2), "sliced": xx[..., :n]}[
            layout
        ]

    out, grads = _run(lambda xx, ww, bb: K.token_layer_norm(view(xx), ww, bb, 1e-5, True, mask),
                      [x, w, bias])  # fmt: skip
    want, want_grads = _run(lambda xx, ww, bb: _ln_relu_mask_reference(view(xx), ww, bb, mask),
                            [x, w, bias])  # fmt: skip
    torch.testing.assert_close(out, want, **FP32)
    assert out.stride() == (view(x).stride() if layout != "sliced" else (t * n, n, 1))
    assert torch.equal(out[:, 9:], torch.zeros_like(out[:, 9:]))  # masked tokens exactly 0
    for gr, wg in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(gr, wg, **FP32)


def test_token_layer_norm_into_a_buffer(K):
    """`out`: the result written into a features-first slot of a wider buffer (values and
    gradients as without it), returned on that memory; a write elsewhere in the buffer
    afterwards does not invalidate a consumer that saved the result (its own version counter);
    a wrong shape is an error."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 16, 6, generator=g).to(DEV)  # features first, as the token projection
    w, b = torch.randn(16, generator=g).to(DEV), torch.randn(16, generator=g).to(DEV)
    mask = torch.tensor([1.0, 1, 1, 1, 0, 1], device=DEV)
    go = torch.randn(4, 6, 16, generator=g).to(DEV)
    results = []
    for into in (False, True):
        x = x0.clone().requires_grad_()
        buf = torch.zeros(4, 16, 3, 8, device=DEV)  # [B, 16, slots, tokens]
        slot = buf[:, :, 1, :6].transpose(1, 2)
        y = K.token_layer_norm(x.transpose(1, 2), w, b, 1e-5, True, mask, slot if into else None)
        loss = (y * go).sum() + y.square().sum()  # the square saves y for its backward
        buf[:, :, 2].fill_(7.0)  # another slot written before the backward
        loss.backward()
        if into:
            assert y.data_ptr() == slot.data_ptr() and y.stride() == slot.stride()
            assert torch.equal(buf[:, :, 1, :6].transpose(1, 2), y.detach())
        results.append((y.detach().clone(), x.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], **FP32)
    torch.testing.assert_close(results[1][1], results[0][1], **FP32)
    with pytest.raises(ValueError, match="out must be"):
        K.token_layer_norm(x0.transpose(1, 2), w, b, out=torch.zeros(4, 5, 16, device=DEV))


@pytest.mark.parametrize("n", [3, 200])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prefetch", [True, False])
def test_masked_layer_norm_kernel(K, monkeypatch, n, dtype, prefetch):
    """The row kernel's masked LayerNorm (ReLU, output dtype, residual, written into a strided
    slot of a wider buffer, read from a strided input) against the reference: values and the
    gradients of the input, weights, bias and residual; masked columns exactly 0 without a
    residual. Tolerances: the module's (bf16: only the final roundings differ)."""
    monkeypatch.setitem(K.KERNELS, "ln_prefetch", prefetch)
    tol = FP32 if dtype is torch.float32 else BF16
    g = torch.Generator().manual_seed(n)
    d = max(2, n * 2 // 3)  # the first d columns are inside the LayerNorm
    mask = (torch.arange(n) < d).float().to(DEV)
    base = torch.randn(6, 2 * n, generator=g).to(DEV, dtype)
    res0 = torch.randn(6, n, generator=g).to(DEV, dtype)
    w0, b0 = torch.randn(n, generator=g).to(DEV), torch.randn(n, generator=g).to(DEV)
    go = torch.randn(6, n, generator=g).to(DEV, dtype)
    for relu, resid in ((True, False), (False, True)):
        results = []
        for kernel in (True, False):
            x = base.clone().requires_grad_()
            w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
            r = res0.clone().requires_grad_() if resid else None
            buf = torch.zeros(6, 3, n, device=DEV, dtype=dtype)
            slot = buf[:, 1]
            args = (x[:, ::2], w, b, mask, 1e-5, relu, dtype, r)
            if kernel:
                y = K.masked_layer_norm(*args, out=slot)
                assert y.data_ptr() == slot.data_ptr() and y.dtype is dtype
            else:
                y = K.masked_layer_norm_reference(*args)
            y.backward(go)
            leaves = [x, w, b] + ([r] if resid else [])
            results.append([y.detach().clone()] + [t.grad.clone() for t in leaves])
        for got, want in zip(*results, strict=True):
            torch.testing.assert_close(got.float(), want.float(), **tol)
        if not resid:
            assert not results[0][0][:, d:].any()


def test_masked_layer_norm_all_masked(K):
    """An all-0 column mask (the sparse->dense term switched off): the kernel's output is the
    residual exactly and every gradient but the residual's is exactly 0, as the reference's."""
    g = torch.Generator().manual_seed(3)
    x, r, w, b = (torch.randn(s, generator=g).to(DEV).requires_grad_()
                  for s in ((5, 24), (5, 24), 24, 24))  # fmt: skip
    for run in (K.masked_layer_norm, K.masked_layer_norm_reference):
        for t in (x, r, w, b):
            t.grad = None
        y = run(x, w, b, torch.zeros(24, device=DEV), 1e-5, False, None, r)
        assert torch.equal(y, r)
        y.backward(torch.randn(5, 24, generator=g).to(DEV))
        assert not x.grad.any() and not w.grad.any() and not b.grad.any()
        assert r.grad.abs().sum() > 0


def test_layer_norm_partial_sums(K, monkeypatch):
    """The LayerNorm backward's reduction of its per-program partial sums: several column blocks
    and row steps, the last of each partial (1100 x 22 against 512-row steps of 4 columns, set
    here so that the shape keeps covering them whatever the defaults), equal to torch's sum."""
    monkeypatch.setattr(K, "LN_PART_COLS", 4)
    monkeypatch.setattr(K, "LN_PART_ROWS", 512)
    part = torch.randn(1100, 22, generator=torch.Generator().manual_seed(1)).to(DEV)
    torch.testing.assert_close(K._ln_part_sum(part), part.sum(0), **FP32)


def test_programs_per_sm_by_hand():
    """Residency on an H100/H200 SM (65,536 registers, 64 warps, 228 KiB shared memory, 32
    programs): registers per thread round up to 8. 165 registers on 2 warps: 168 * 32 * 2 =
    10,752 per program, 6 fit; 106 -> 112: 9; 255 -> 256: 4 (the old fixed 8 warps per SM);
    32 registers on 1 warp: 64 by registers, 32 by program slots; 40 KiB of shared memory: 5."""
    assert kernels.programs_per_sm(165, 2) == 6
    assert kernels.programs_per_sm(106, 2) == 9
    assert kernels.programs_per_sm(255, 2) == 4
    assert kernels.programs_per_sm(32, 1) == 32
    assert kernels.programs_per_sm(64, 4, shared_bytes=40 * 1024) == 5
    assert kernels.programs_per_sm(255, 16) == 1  # never 0


@pytest.mark.skipif(not CUDA, reason="residency is measured on a GPU")
def test_layer_norm_grids_learn_residency(K):
    """After a key's first forward and backward their grids hold what the SMs fit of the
    compiled kernels."""
    K._LN_FIT.clear()
    x = torch.randn(64, 37, 16, device=DEV, requires_grad=True)
    w, b = torch.randn(16, device=DEV), torch.randn(16, device=DEV)
    K.token_layer_norm(x, w, b).sum().backward()
    assert sorted(k[0] for k in K._LN_FIT) == ["bwd", "fwd"]
    assert all(1 <= v <= 32 for v in K._LN_FIT.values())


def test_kernels_compile_for_sm90():
    """The LayerNorm, attention and row kernels compile for an H100/H200 target (sm_90) with no
    GPU here, the LayerNorm and attention kernels at their default launch without register spills:
    tests/models/nas/sm90_compile.py in a fresh process (triton without its interpreter)."""
    if not kernels.triton_available():
        pytest.skip("triton does not import here")
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("sm90_compile.py")
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=600, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("compiled for sm_90") == 9


def test_token_layer_norm_reference_relu_mask():
    # the CPU path: LayerNorm, ReLU, then the mask along dim -2; a mask of the wrong size is an error
    x, w, b = torch.randn(2, 4, 16), torch.randn(16), torch.randn(16)
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    got = kernels.token_layer_norm(x, w, b, 1e-5, True, mask)
    torch.testing.assert_close(got, _ln_relu_mask_reference(x, w, b, mask))
    assert torch.equal(got[:, 1], torch.zeros(2, 16)) and (got >= 0).all()
    with pytest.raises(ValueError, match="token_mask must be \\[4\\]"):
        kernels.token_layer_norm(x, w, b, 1e-5, False, torch.ones(3))


def test_force_without_interpreter_raises(monkeypatch):
    if not kernels.triton_available() or kernels._INTERPRET:
        pytest.skip("needs triton imported without TRITON_INTERPRET")
    monkeypatch.setitem(kernels.KERNELS, "force", True)
    q = torch.randn(1, 1, 2, 2)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernels.fused_attention(q, q, q)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
def test_cuda_graph_capture_with_tensor_t_valid():
    b, h, t, d = 4, 8, 37, 2
    qkv = _qkv(b, h, t, d)
    x = torch.randn(b, t, 16, device=DEV, requires_grad=True)
    w, bias = torch.randn(16, device=DEV), torch.randn(16, device=DEV)
    t_valid = torch.tensor(t, device=DEV)
    g = torch.randn((b, h, t, d), generator=torch.Generator().manual_seed(1)).to(DEV)  # as _run

    def step():
        o = kernels.fused_attention(*qkv, t_valid)
        y = kernels.token_layer_norm(x, w, bias)
        ((o * g).sum() + y.square().sum()).backward()
        return o

    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):  # warm-up (compiles) on a side stream, as capture requires
        step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    for z in (*qkv, x):
        z.grad = None
    with torch.cuda.graph(graph):
        out = step()
    for n in (t, 20, 0):
        t_valid.fill_(n)
        for z in qkv:
            z.grad.zero_()
        graph.replay()
        torch.cuda.synchronize()
        want, want_grads = _run(attention_reference, [z.detach().requires_grad_() for z in qkv], n)
        torch.testing.assert_close(out, want, **FP32)
        for z, wg in zip(qkv, want_grads, strict=True):
            torch.testing.assert_close(z.grad, wg, **FP32)
    x_ref = x.detach().requires_grad_()
    layer_norm_reference(x_ref, w, bias).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **FP32)
