"""Clipped Adagrad fused into one kernel (models/nas/fused_adagrad.py) and `clip_and_step`.

The CPU and reference tests always run; the Triton tests run on CUDA or in Triton's interpreter
(conftest.py says when they skip).
Tolerances: the torch reference against torch's Adagrad rtol 1e-6 / atol 1e-7 (same math, the
CPU's per-tensor Adagrad divides then scales where the foreach ops scale then divide); the kernel
against torch rtol 1e-5 / atol 1e-7 (a few ulp: different kernels, and the interpreter's numpy
sqrt is correctly rounded where this CPU torch build's is not always).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import models.nas.fused_adagrad as fa
from models.nas.optim import clip_and_step, clip_grad_norm, make_optimizer
from models.nas.space import sample_subnet
from models.nas.supernet import Supernet

from .conftest import CUDA, N_DENSE, TABLES, tiny_batch

DEV = torch.device("cuda" if CUDA else "cpu")
REF = {"rtol": 1e-6, "atol": 1e-7}
KERNEL = {"rtol": 1e-5, "atol": 1e-7}
LR, EPS = 0.12, 1e-2


@pytest.fixture
def fused(triton_kernels):
    """The Triton path on: CUDA tensors, or CPU ones in the interpreter."""
    return triton_kernels


def _backward(model, seed, device=DEV, **kwargs):
    """Gradients of a BCE loss on a tiny batch (32 rows over 5-11 row tables: duplicates)."""
    dense, sparse = tiny_batch(32, seed=seed)
    label = (dense[:, 0] > 0).float().to(device)
    model.zero_grad(set_to_none=True)
    logits = model(dense.to(device), sparse.to(device), **kwargs)
    nn.functional.binary_cross_entropy_with_logits(logits, label).backward()


def _twin_supernets(sparse_grad, device=DEV):
    """Two identical tiny supernets and their optimizers."""
    nets = [Supernet("tiny", TABLES, N_DENSE, sparse_grad=sparse_grad).to(device) for _ in "ab"]
    return [(net, make_optimizer(net, LR, EPS)) for net in nets]


# --------------------------------------------------------------------------------------------
# CPU: clip_and_step is clip_grad_norm + step
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse_grad", [None, False])  # None: sparse embedding grads on the CPU
@pytest.mark.parametrize("clip", [5.0, 1e-3])  # 1e-3: the clipping coefficient is active
def test_clip_and_step_on_cpu_is_clip_then_step(tiny, sparse_grad, clip):
    (a, opt_a), (b, opt_b) = _twin_supernets(sparse_grad, torch.device("cpu"))
    for i in range(3):
        _backward(a, i, torch.device("cpu"))
        _backward(b, i, torch.device("cpu"))
        assert a.embedding.weight.grad.is_sparse == (sparse_grad is None)
        norm_a = clip_grad_norm(a.parameters(), clip)
        opt_a.step()
        norm_b = clip_and_step(opt_b, b.parameters(), clip)
        assert torch.equal(norm_a, norm_b)
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y), name
        if x.grad is not None:
            assert torch.equal(x.grad.to_dense(), y.grad.to_dense()), name  # both clipped
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k, st in sa["state"].items():
        assert torch.equal(st["step"], sb["state"][k]["step"])
        assert torch.equal(st["sum"], sb["state"][k]["sum"])


# --------------------------------------------------------------------------------------------
# The torch reference
# --------------------------------------------------------------------------------------------


def test_reference_hand_computed():
    """coef 0.5, lr 0.1, eps 0.5: grads (3, 4) -> g (1.5, 2); sums (0, 0) -> (2.25, 4);
    sqrt + eps (2, 2.5); params (1, -2) -> (1 - 0.1 * 1.5 / 2, -2 - 0.1 * 2 / 2.5)
    = (0.925, -2.08); the grads stay (3, 4)."""
    p, g, s = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 4.0]), torch.zeros(2)
    fa.adagrad_update_([p], [g], [s], 0.1, 0.5, torch.tensor(0.5))
    torch.testing.assert_close(s, torch.tensor([2.25, 4.0]), rtol=0, atol=0)
    torch.testing.assert_close(p, torch.tensor([0.925, -2.08]), **REF)
    assert torch.equal(g, torch.tensor([3.0, 4.0]))


def _random_tensors(sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen) for n in sizes]


def _grads(sizes, step, scale):
    """Gradients of one step; `scale` large makes the clipping coefficient active."""
    return [g * scale for g in _random_tensors(sizes, 100 + step)]


def _torch_steps(params, max_norm, n_steps, scales, device):
    """torch's clip_grad_norm_ + torch.optim.Adagrad: params after each step."""
    ps = [nn.Parameter(p.clone().to(device)) for p in params]
    opt = torch.optim.Adagrad(ps, lr=LR, eps=EPS)
    out = []
    for i in range(n_steps):
        for p, g in zip(ps, _grads([p.numel() for p in ps], i, scales[i]), strict=True):
            p.grad = g.to(device).view_as(p)
        torch.nn.utils.clip_grad_norm_(ps, max_norm)
        opt.step()
        out.append(([p.detach().clone() for p in ps], [opt.state[p]["sum"].clone() for p in ps]))
    return out


def _fused_step(params, sums, max_norm, step, scale):
    """get_total_norm + adagrad_update_ on `params` / `sums` in place (step `step` of
    `_torch_steps`); checks that the gradients are left unscaled and that autograd sees the
    in-place writes (version counters bumped, as torch's in-place ops do). Returns whether the
    clipping coefficient was active (below 1)."""
    sizes = [p.numel() for p in params]
    grads = [g.to(p.device).view_as(p) for p, g in zip(params, _grads(sizes, step, scale),
                                                      strict=True)]  # fmt: skip
    kept = [g.clone() for g in grads]
    versions = [x._version for x in params + sums]
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    fa.adagrad_update_(params, grads, sums, LR, EPS, coef)
    assert all(torch.equal(g, k) for g, k in zip(grads, kept, strict=True))
    assert all(x._version > v for x, v in zip(params + sums, versions, strict=True))
    return bool(coef < 1)


def test_reference_matches_torch_adagrad():
    sizes, scales = [1, 5, 300, 64], [0.1, 100.0, 0.01, 100.0]
    params = _random_tensors(sizes, 0)
    want = _torch_steps(params, 5.0, 4, scales, torch.device("cpu"))
    sums = [torch.zeros_like(p) for p in params]
    for i, scale in enumerate(scales):
        assert _fused_step(params, sums, 5.0, i, scale) == (scale > 1)  # clipping at 1 and 3
        for x, y in zip(params + sums, want[i][0] + want[i][1], strict=True):
            torch.testing.assert_close(x, y, **REF)


def test_update_rejects_mismatched_tensors():
    p, g, s = torch.zeros(4), torch.zeros(4), torch.zeros(4)
    coef = torch.tensor(1.0)
    with pytest.raises(ValueError, match="element counts differ"):
        fa.adagrad_update_([p], [g], [torch.zeros(5)], LR, EPS, coef)
    with pytest.raises(ValueError, match="0-d"):
        fa.adagrad_update_([p], [g], [s], LR, EPS, coef.view(1))
    with pytest.raises(ValueError, match="float32"):
        fa.adagrad_update_([p], [g.double()], [s], LR, EPS, coef)
    with pytest.raises(ValueError, match=r"strides \(1, 2\)"):
        x = torch.zeros(2, 4)
        fa.adagrad_update_([torch.zeros(4, 2).t()], [x], [x.clone()], LR, EPS, coef)
    with pytest.raises(ValueError, match="sparse"):
        fa.adagrad_update_([p], [g.to_sparse()], [s], LR, EPS, coef)
    with pytest.raises(ValueError, match="1 params, 0 grads"):
        fa.adagrad_update_([p], [], [s], LR, EPS, coef)
    with pytest.raises(ValueError, match=r"count 5 outside \[0, 4\] \(tensor 0\)"):
        fa.adagrad_update_([p], [g], [s], LR, EPS, coef, counts=[5])
    with pytest.raises(ValueError, match="2 counts for 1 tensors"):
        fa.adagrad_update_([p], [g], [s], LR, EPS, coef, counts=[1, 1])


@pytest.mark.parametrize("path", ["reference", "triton"])
def test_update_counts_cover_leading_prefixes(request, path):
    """`counts`: each triple's first n flat elements are updated as the update of those prefixes
    alone (bitwise: the same kernel on the same values), the rest left exactly as they were;
    n = 0 and n = the whole tensor included. Sizes span several chunks and the masked tail."""
    dev = DEV if path == "triton" else torch.device("cpu")
    if path == "triton":
        request.getfixturevalue("fused")
    sizes, counts = [4097, 3 * 8192 + 5, 16, 1025], [4000, 8193, 0, 1025]
    params = [p.view(-1, 1).to(dev) for p in _random_tensors(sizes, 3)]
    grads = [g.view(-1, 1).to(dev) for g in _random_tensors(sizes, 4)]
    sums = [torch.rand(n, 1, device=dev) for n in sizes]
    coef = torch.tensor(0.5, device=dev)
    ps, ss = [p.clone() for p in params], [x.clone() for x in sums]
    fa.adagrad_update_(ps, grads, ss, LR, EPS, coef, counts=counts)
    want_p = [p.clone().view(-1)[:n] for p, n in zip(params, counts, strict=True)]
    want_s = [x.clone().view(-1)[:n] for x, n in zip(sums, counts, strict=True)]
    fa.adagrad_update_(want_p, [g.view(-1)[:n] for g, n in zip(grads, counts, strict=True)],
                       want_s, LR, EPS, coef)  # fmt: skip
    for p, s, p0, s0, wp, ws, n in zip(ps, ss, params, sums, want_p, want_s, counts, strict=True):
        assert torch.equal(p.view(-1)[:n], wp) and torch.equal(s.view(-1)[:n], ws)
        assert torch.equal(p.view(-1)[n:], p0.view(-1)[n:])
        assert torch.equal(s.view(-1)[n:], s0.view(-1)[n:])
    assert not torch.equal(ps[0], params[0])  # something was updated


@pytest.mark.parametrize("path", ["reference", "triton"])
def test_clip_update_hand_computed(request, path):
    """Gradients [3] and [4] (norm 5) plus an extra squared norm of 144 (total 13), max_norm 6.5:
    coefficient 6.5 / (13 + 1e-6) ~ 0.5; then with sum 0 the step is -lr * g c / |g c| = -lr
    per element (to float32 rounding: the eps 1e-10 and the 1e-6 are far below it)."""
    dev = DEV if path == "triton" else torch.device("cpu")
    if path == "triton":
        request.getfixturevalue("fused")
    params = [torch.ones(1, device=dev), torch.ones(1, device=dev)]
    grads = [torch.tensor([3.0], device=dev), torch.tensor([4.0], device=dev)]
    sums = [torch.zeros(1, device=dev), torch.zeros(1, device=dev)]
    extra = torch.tensor(144.0, device=dev)
    total, coef = fa.clip_adagrad_update_(params, grads, sums, 0.1, 1e-10, 6.5, extra_sq=extra)
    assert float(total) == 13.0
    assert abs(float(coef) - 0.5) < 1e-7
    for p, s, g in zip(params, sums, (3.0, 4.0), strict=True):
        assert abs(float(s) - (0.5 * g) ** 2) < 1e-5 and abs(float(p) - 0.9) < 1e-6
    _, coef = fa.clip_adagrad_update_(params, grads, sums, 0.1, 1e-10, 100.0)
    assert float(coef) == 1.0  # below max_norm: no clipping
    with pytest.raises(ValueError, match="no tensors"):
        fa.clip_adagrad_update_([], [], [], 0.1, 1e-10, 1.0)


@pytest.mark.parametrize("path", ["reference", "triton", "triton-foreach-norm"])
def test_clip_update_is_torchs_clip_then_adagrad(request, path, monkeypatch):
    """Over the kernel's odd sizes (several chunks, masked tails): the total norm as
    get_total_norm's (plus `extra_sq`) to rounding, params and sums as `adagrad_update_` with
    that clipping coefficient; with counts over gradients zero past them, the same norm and
    the elements past the counts untouched."""
    dev = DEV if path.startswith("triton") else torch.device("cpu")
    if path.startswith("triton"):
        request.getfixturevalue("fused")
    monkeypatch.setitem(fa.NORM, "impl", "foreach" if path.endswith("norm") else "table")
    sizes = SIZES if path == "triton" else SIZES[:6]
    params = [p.to(dev) for p in _random_tensors(sizes, 5)]
    grads = [g.to(dev) for g in _random_tensors(sizes, 6)]
    sums = [torch.rand(p.shape, device=dev) for p in params]
    extra = torch.tensor(7.0, device=dev)
    want_total = (torch.nn.utils.get_total_norm(grads, 2.0).square() + extra).sqrt()
    want_p, want_s = [p.clone() for p in params], [s.clone() for s in sums]
    fa.adagrad_update_(
        want_p, grads, want_s, LR, EPS, torch.clamp(3.0 / (want_total + 1e-6), max=1.0)
    )
    got_p, got_s = [p.clone() for p in params], [s.clone() for s in sums]
    total, coef = fa.clip_adagrad_update_(got_p, grads, got_s, LR, EPS, 3.0, extra_sq=extra)
    torch.testing.assert_close(total, want_total, **KERNEL)
    for a, b in zip([*got_p, *got_s], [*want_p, *want_s], strict=True):
        torch.testing.assert_close(a, b, **KERNEL)
    # zeros past a prefix: the norm over the prefixes is the whole norm; the rest stays as it was
    counts = [max(0, p.numel() - 3 * (i + 1)) for i, p in enumerate(params)]
    zg = [g.clone() for g in grads]
    for g, n in zip(zg, counts, strict=True):
        g.view(-1)[n:] = 0
    got_p, got_s = [p.clone() for p in params], [s.clone() for s in sums]
    total, _ = fa.clip_adagrad_update_(got_p, zg, got_s, LR, EPS, 3.0, counts=counts)
    torch.testing.assert_close(total, torch.nn.utils.get_total_norm(zg, 2.0), **KERNEL)
    for p, s, p0, s0, n in zip(got_p, got_s, params, sums, counts, strict=True):
        assert torch.equal(p.view(-1)[n:], p0.view(-1)[n:])
        assert torch.equal(s.view(-1)[n:], s0.view(-1)[n:])


# --------------------------------------------------------------------------------------------
# The Triton kernel (CUDA, or the interpreter without a GPU)
# --------------------------------------------------------------------------------------------

# ~20 tensors of odd sizes around the chunk (8192) and block (1024) sizes; the large one is
# ~5M elements on the GPU, 100k in the (slow) interpreter.
BIG = 5_000_003 if CUDA else 100_003
SIZES = [1, 3, 4097, 3 * 8192 + 5, BIG, 2, 1023, 1024, 1025, 8191, 8192, 8193, 16, 257, 12_345,
         65_536, 7, 3 * 1024, 100, 40_000]  # fmt: skip


@pytest.mark.parametrize("offset", [0, 1])  # 1: one tensor 4 bytes off 16-byte alignment
def test_triton_kernel_matches_torch_adagrad(fused, offset):
    """5 steps, clipping active at steps 0, 2 and 4 (large grads), not at 1 and 3. With offset 1,
    param and sum of one tensor are views at a 4-byte offset: the kernel's unaligned variant."""
    scales = [1e3, 1e-3, 1e3, 1e-3, 1e3]
    host = _random_tensors(SIZES, 0)
    want = _torch_steps(host, 5.0, 5, scales, DEV)
    params = [p.to(DEV) for p in host]
    sums = [torch.zeros_like(p) for p in params]
    n = SIZES[2]
    padded = torch.zeros(n + 2 * offset, device=DEV)
    params[2] = padded[offset : offset + n].copy_(params[2])
    sums[2] = torch.zeros(n + offset, device=DEV)[offset:]
    for i, scale in enumerate(scales):
        assert _fused_step(params, sums, 5.0, i, scale) == (scale > 1)
        for x, y in zip(params + sums, want[i][0] + want[i][1], strict=True):
            torch.testing.assert_close(x, y, **KERNEL, msg=lambda m, i=i: f"step {i}: {m}")
    assert not padded[:offset].any() and not padded[offset + n :].any()  # nothing outside


def test_triton_kernel_chunk_sizes(fused):
    """Any chunk size gives the same result (full blocks, the masked tail, one-block chunks)."""
    params = _random_tensors([1, 5000, 3000], 1)
    grads = _random_tensors([1, 5000, 3000], 2)
    coef = torch.tensor(0.25)
    results = []
    for chunk in (1024, 1500, 8192):
        ps, ss = [p.clone().to(DEV) for p in params], [torch.ones_like(p).to(DEV) for p in params]
        fa.adagrad_update_(ps, [g.to(DEV) for g in grads], ss, LR, EPS, coef.to(DEV), chunk)
        results.append(torch.cat(ps + ss))
    assert all(torch.equal(r, results[0]) for r in results)


def _assert_step_close_then_sync(a, opt_a, b, opt_b):
    """b's parameters and sums equal a's to KERNEL tolerance; then set to a's exactly, so that
    the next step starts from one state (noise-only gradients, such as those of biases a
    LayerNorm cancels, would otherwise amplify rounding differences from step to step)."""
    with torch.no_grad():
        for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
            for u, v in ((x, y), (opt_a.state[x]["sum"], opt_b.state[y]["sum"])):
                torch.testing.assert_close(v, u, **KERNEL, msg=lambda m, n=name: f"{n}: {m}")
                v.copy_(u)


@pytest.mark.parametrize("clip", [5.0, 1e-3])
def test_fused_clip_and_step_matches_torch(tiny, fused, clip):
    """clip_and_step on the fused path against clip_grad_norm + step over 3 steps (the last two
    on subnets, which leave some parameters without gradients): same norms, parameters and sums
    to rounding, the same state_dict keys, groups and step counts; the fused path leaves the
    gradients unscaled (which also shows that it ran)."""
    (a, opt_a), (b, opt_b) = _twin_supernets(False)
    sub = None
    for i in range(3):
        _backward(a, i, subnet=sub)
        _backward(b, i, subnet=sub)
        raw = [p.grad.clone() for p in b.parameters() if p.grad is not None]
        norm_a = clip_grad_norm(a.parameters(), clip)
        opt_a.step()
        norm_b = clip_and_step(opt_b, b.parameters(), clip)
        torch.testing.assert_close(norm_a, norm_b, **KERNEL)
        with_grad = [p for p in b.parameters() if p.grad is not None]
        assert all(torch.equal(p.grad, r) for p, r in zip(with_grad, raw, strict=True))
        _assert_step_close_then_sync(a, opt_a, b, opt_b)
        sub = sample_subnet("tiny", i)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k, st in sa["state"].items():
        assert st.keys() == sb["state"][k].keys()
        assert torch.equal(st["step"], sb["state"][k]["step"]), k
    assert len({float(st["step"]) for st in sb["state"].values()}) > 1  # some were skipped


def test_fused_update_over_live_prefixes(tiny, fused, monkeypatch):
    """Gradients zero past a live prefix (`live_numel`, as the chain publishes them): the fused
    step over the prefixes equals torch's over whole parameters. A prefix shorter than the nonzero part shows the narrowing ran: elements past
    it keep their values and sums exactly; with LIVE_PREFIX off they change as torch's."""
    from models.nas import optim

    (a, opt_a), (b, opt_b) = _twin_supernets(False)
    for live in ("zeros past", "shorter"):
        _backward(a, 0)
        _backward(b, 0)
        narrowed = []
        for x, y in zip(a.parameters(), b.parameters(), strict=True):
            n = y.numel() // 2
            if y.grad is None or y.dim() != 2 or n == 0:
                continue
            if live == "zeros past":
                x.grad.view(-1)[n:] = 0
                y.grad.view(-1)[n:] = 0
            y.grad.live_numel = n
            narrowed.append((x, y, n))
        before = [(y.detach().clone(), opt_b.state[y]["sum"].clone()) for _, y, _ in narrowed]
        clip_grad_norm(a.parameters(), 5.0)
        opt_a.step()
        clip_and_step(opt_b, b.parameters(), 5.0)
        assert narrowed
        if live == "zeros past":
            _assert_step_close_then_sync(a, opt_a, b, opt_b)
            continue
        torch_moved = 0
        for (x, y, n), (p0, s0) in zip(narrowed, before, strict=True):
            assert torch.equal(y.detach().view(-1)[n:], p0.view(-1)[n:])
            assert torch.equal(opt_b.state[y]["sum"].view(-1)[n:], s0.view(-1)[n:])
            torch_moved += not torch.equal(x.detach().view(-1)[n:], p0.view(-1)[n:])
        assert torch_moved > 0
    monkeypatch.setitem(optim.LIVE_PREFIX, "impl", "off")
    _backward(b, 1)
    p = next(y for y in b.parameters() if y.grad is not None and y.dim() == 2)
    p.grad.live_numel = 1
    p0 = p.detach().clone()
    clip_and_step(opt_b, b.parameters(), 5.0)
    assert not torch.equal(p.detach().view(-1)[1:], p0.view(-1)[1:])


def test_fused_states_cache_follows_the_optimizer(tiny):
    """`fused_states` (the checks `clip_and_step` skips per step) is cached, and rebuilt when
    load_state_dict replaces the state (a resume: the new sums must be the ones updated) or a
    group is added; a parameter whose sum does not suit the kernel is left out."""
    net = Supernet("tiny", TABLES, N_DENSE)
    opt = make_optimizer(net, LR, EPS)
    first = opt.fused_states()
    assert first is opt.fused_states()
    assert all(first[id(p)] is opt.state[p] for p in net.parameters())
    opt.load_state_dict(opt.state_dict())
    again = opt.fused_states()
    assert again is not first and all(again[id(p)] is opt.state[p] for p in net.parameters())
    extra = nn.Parameter(torch.zeros(3))
    opt.add_param_group({"params": [extra]})
    opt.state[extra] = {"step": torch.tensor(0.0), "sum": torch.zeros(3)}
    grown = opt.fused_states()
    assert grown is not again and grown[id(extra)] is opt.state[extra]
    opt.state[extra]["sum"] = torch.zeros(6)[::2]  # strided: not for raw addresses
    opt.load_state_dict(opt.state_dict())  # a new state object: checked again
    assert id(extra) not in opt.fused_states()


def test_fused_clip_and_step_after_load_state_dict(tiny, fused):
    """After load_state_dict (new sum tensors, equal values) the fused path updates the loaded
    sums, as torch's step does: with stale cached states it would update the old ones and the
    loaded sums would stay behind."""
    (a, opt_a), (b, opt_b) = _twin_supernets(False)
    _backward(b, 0)
    clip_and_step(opt_b, b.parameters(), 5.0)  # b's fused states are cached now
    _backward(a, 0)
    clip_grad_norm(a.parameters(), 5.0)
    opt_a.step()
    _assert_step_close_then_sync(a, opt_a, b, opt_b)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # loading aliases the tensors
    for i in (1, 2):
        _backward(a, i)
        _backward(b, i)
        clip_grad_norm(a.parameters(), 5.0)
        opt_a.step()
        clip_and_step(opt_b, b.parameters(), 5.0)
        _assert_step_close_then_sync(a, opt_a, b, opt_b)
