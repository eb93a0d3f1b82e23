"""Static-shape execution (models/nas/static.py) equals the sliced supernet path, values and
gradients, for random subnets; masks and layout by hand."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from models.nas import static
from models.nas.space import SPACES, SearchSpace, sample_subnet
from models.nas.static import (
    Layout,
    _fm,
    _fm_grad,
    _gate,
    block_mask,
    fm_term,
    masked_layer_norm,
    ones,
    padded,
    static_forward,
    switched_linear,
)
from models.nas.supernet import Supernet

from .conftest import N_DENSE, TABLES, TINY, tiny_batch

# Widths where pairs(dot_tokens(d)) == d (3, 6, 10) and where max(left, right) == d (n_dense 3):
# both "no projection" branches of the static path get exercised.
IDENT = SearchSpace(
    "ident", ("fc", "dot", "gating", "sum"), ("efc", "attention"), (3, 6, 10), (2, 3)
)
# Size classes narrower than the maximum that hold several choices: widths 2 | 4, 8 | 12, 16;
# tokens 1, 2 | 3, 4 (a block computes at its class, wider than its choice, then pads).
CLASSES = SearchSpace(
    "classes", ("fc", "dot", "gating", "sum"), ("efc", "attention"), (2, 4, 8, 12, 16),
    (1, 2, 3, 4),
)  # fmt: skip


@pytest.fixture
def spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SPACES, "tiny", TINY)
    monkeypatch.setitem(SPACES, "ident", IDENT)
    monkeypatch.setitem(SPACES, "classes", CLASSES)


def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for n, p in net.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out[n] = g.to_dense() if g.is_sparse else g.clone()
    return out


@pytest.mark.parametrize(
    ("space", "capped"),
    [("tiny", True), ("ident", True), ("classes", True), ("tiny", False), ("ident", False)],
)
@pytest.mark.parametrize("seed", range(10))
def test_static_path_equals_sliced_path(spaces, space, capped, seed):
    torch.manual_seed(seed)
    net = Supernet(space, TABLES, N_DENSE, seed=seed).double()  # float64: rounding out of the way
    with torch.no_grad():  # non-trivial LayerNorm affine weights
        for name, p in net.named_parameters():
            if name.endswith(("ln.weight", "ln1.weight", "ln2.weight")):
                p.add_(0.3 * torch.randn_like(p))
    sub = sample_subnet(space, seed)
    dense, sparse = tiny_batch(5, seed)
    dense = dense.double()
    ref = net(dense, sparse, sub)
    ref.square().sum().backward()
    g_ref = _grads(net)
    net.zero_grad(set_to_none=True)
    out = static_forward(net, dense, sparse, sub, capped=capped)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    g = _grads(net)
    # Absolute tolerance from the largest gradient: some entries are sums of cancelling terms (a
    # token projection's bias feeds a LayerNorm over the token: its exact gradient is 0).
    scale = max(float(v.abs().max()) for v in g_ref.values())
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-8, atol=1e-12 * scale, msg=name)


def test_identity_branches_are_met(spaces):
    """The `ident` space's seeds above hit both no-projection flags (else the test is weak)."""
    lay = Layout.of(IDENT, N_DENSE, len(TABLES))
    dot = binary = 0
    for seed in range(10):
        sub = sample_subnet("ident", seed)
        widths = [N_DENSE] + [b.dense_width for b in sub.blocks]
        for i in sub.live_blocks():
            flags = block_mask(sub, i, lay, widths)[-3:]
            dot += sub.blocks[i].dense_op == "dot" and flags[0] == 1
            binary += sub.blocks[i].dense_op in ("gating", "sum") and flags[1] == 1
    assert dot > 0 and binary > 0


def test_size_classes_by_hand(spaces):
    from models.nas.static import block_caps, class_of, size_classes

    full = SPACES["nasrec-full"]
    # the smallest choice >= 1/8, 1/2 and 1 of 1024; >= 1/2 and 1 of 64 tokens
    assert size_classes(full.dense_widths, (1 / 8, 1 / 2, 1.0)) == (128, 512, 1024)
    assert size_classes(full.sparse_tokens, (1 / 2, 1.0)) == (32, 64)
    assert [class_of(w, (128, 512, 1024)) for w in (16, 128, 256, 768)] == [128, 128, 512, 1024]
    assert block_caps(full, 256, 48) == (512, 64)
    assert block_caps(CLASSES, 4, 1) == (8, 2)  # classes (2, 8, 16) and (2, 4)
    # the seeds of test_static_path_equals_sliced_path put blocks below their class
    below = 0
    for seed in range(10):
        for b in sample_subnet(CLASSES, seed).blocks:
            wc, tc = block_caps(CLASSES, b.dense_width, b.sparse_tokens)
            below += (b.dense_width < wc) + (b.sparse_tokens < tc)
    assert below > 10


def test_block_mask_by_hand(spaces):
    lay = Layout.of(TINY, N_DENSE, len(TABLES))  # W 16, T 4, k_max round(sqrt(32)) = 6
    assert (lay.width, lay.tokens, lay.slot, lay.k_max) == (16, 4, 12, 6)
    sub = sample_subnet("tiny", 0).to_dict()
    b = sub["blocks"][2]
    b.update(dense_op="fc", dense_width=8, sparse_tokens=2, dense_inputs=[0, 2],
             sparse_inputs=[1], dense_to_sparse=True, sparse_to_dense=False)  # fmt: skip
    from models.nas.space import subnet_from_dict

    s = subnet_from_dict(sub)
    widths = [N_DENSE] + [x.dense_width for x in s.blocks]
    m = block_mask(s, 2, lay, widths)
    assert len(m) == 2 * 3 + 16 + 16 + 4 + 6 + 3
    np.testing.assert_array_equal(m[:3], [1, 0, 1])  # dense nodes 0 and 2
    np.testing.assert_array_equal(m[3:6], [0, 1, 0])  # sparse node 1
    np.testing.assert_array_equal(m[6:22], [1] * 8 + [0] * 8)  # width 8 of 16
    np.testing.assert_array_equal(m[22:38], [0] * 16)  # no sparse->dense term
    np.testing.assert_array_equal(m[38:42], [1, 1, 0, 0])  # 2 tokens of 4
    np.testing.assert_array_equal(m[42:48], [1] * 4 + [0] * 2)  # Dot keeps round(sqrt(16)) = 4
    # flags: pairs(4) = 10 != 8; not binary; d2s on
    np.testing.assert_array_equal(m[48:], [0, 0, 1])
    # with the sparse->dense term: its width mask is the block's
    b.update(sparse_to_dense=True)
    m = block_mask(subnet_from_dict(sub), 2, lay, widths)
    np.testing.assert_array_equal(m[22:38], [1] * 8 + [0] * 8)


def test_slot_layout_by_hand(spaces):
    """Blocks read every earlier node in a slot of the maximum size (node 0 zero-padded), and
    the input products' weights are rearranged to match."""
    from models.nas.space import subnet_from_dict
    from models.nas.static import StaticBlock, block_inputs, slot_columns

    w = torch.arange(2 * 19.0).view(2, 19)  # 3 stem columns + one node of 16
    got = slot_columns(w, 3, 16, 16)
    assert got.shape == (2, 32)
    torch.testing.assert_close(got[:, :3], w[:, :3])
    assert not got[:, 3:16].any()
    torch.testing.assert_close(got[:, 16:], w[:, 3:])
    torch.testing.assert_close(slot_columns(w[:, :3], 3, 16, 16)[:, :3], w[:, :3])  # block 0
    wide = slot_columns(w, 3, 8, 20)  # a stem wider than blocks: slots of 20, two nodes of 8
    assert wide.shape == (2, 60) and not wide[:, 3:20].any() and not wide[:, 28:40].any()
    torch.testing.assert_close(wide[:, 20:28], w[:, 3:11])
    torch.testing.assert_close(wide[:, 40:48], w[:, 11:])

    net = Supernet("tiny", TABLES, N_DENSE)
    lay = Layout.of(TINY, N_DENSE, len(TABLES))  # W 16, slot 4 + 8 tokens
    d = sample_subnet("tiny", 0).to_dict()
    d["blocks"][2].update(dense_op="fc", sparse_op="efc", dense_inputs=[0, 2], sparse_inputs=[1])
    d["blocks"][1].update(dense_op="sum", dense_inputs=[1, 0])
    sub = subnet_from_dict(d)
    nodes_d = [torch.randn(2, N_DENSE if j == 0 else 16) for j in range(3)]
    nodes_s = [torch.randn(2, len(TABLES) if j == 0 else 12, 16) for j in range(3)]
    dense_in, sparse_in = block_inputs(
        StaticBlock(net.blocks[2], 2, "fc", "efc", lay), sub, nodes_d, nodes_s, None
    )
    assert dense_in.shape == (2, 3 * 16) and sparse_in.shape == (2, 16, 3 * 12)
    torch.testing.assert_close(dense_in[:, :N_DENSE], nodes_d[0])
    assert not dense_in[:, N_DENSE:16].any()
    torch.testing.assert_close(dense_in[:, 32:], nodes_d[2])
    torch.testing.assert_close(sparse_in[:, :, : len(TABLES)], nodes_s[0].transpose(1, 2))
    assert not sparse_in[:, :, len(TABLES) : 12].any()
    torch.testing.assert_close(sparse_in[:, :, 24:], nodes_s[2].transpose(1, 2))
    # a binary op reads its (left, right) pair of slots
    dense_in, _ = block_inputs(
        StaticBlock(net.blocks[1], 1, "sum", "efc", lay), sub, nodes_d, nodes_s, None
    )
    left, right = dense_in  # block 1's binary inputs are W wide (block 0's: the stem's width)
    torch.testing.assert_close(left, nodes_d[1])
    torch.testing.assert_close(right[:, :N_DENSE], nodes_d[0])
    assert right.shape == (2, 16) and not right[:, N_DENSE:].any()


def test_masked_layer_norm_by_hand():
    y = torch.tensor([[1.0, 3.0, 100.0]])
    ln = torch.nn.LayerNorm(3)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([2.0, 1.0, 5.0]))
        ln.bias.copy_(torch.tensor([0.5, -0.5, 7.0]))
    out = masked_layer_norm(y, ln, torch.tensor([1.0, 1.0, 0.0]))
    # first two features: mean 2, variance 1 -> normalised (-1, 1) / sqrt(1 + 1e-5)
    s = 1 / np.sqrt(1 + 1e-5)
    expected = torch.tensor([[2 * -s + 0.5, s - 0.5, 0.0]], dtype=torch.float32)
    torch.testing.assert_close(out, expected)
    # with the ReLU fused in (the FC op's): the negative feature goes to 0
    relu = masked_layer_norm(y, ln, torch.tensor([1.0, 1.0, 0.0]), relu=True)
    torch.testing.assert_close(relu, expected.clamp_min(0))
    assert relu[0, 0] == 0 and relu[0, 1] > 0
    # an all-0 mask (a block without the sparse->dense term): exactly 0 and 0 gradients, no
    # 0 / 0, plus the residual as it is
    yg = y.clone().requires_grad_()
    res = torch.tensor([[4.0, -1.0, 2.0]])
    off = masked_layer_norm(yg, ln, torch.zeros(3), residual=res)
    assert torch.equal(off, res)
    off.sum().backward()
    assert torch.equal(yg.grad, torch.zeros(1, 3))
    assert torch.equal(ln.weight.grad, torch.zeros(3)) and torch.equal(ln.bias.grad, torch.zeros(3))


@pytest.mark.parametrize("seed", range(4))
def test_static_path_with_a_stem_wider_than_a_slot(spaces, seed):
    """20 dense features and 14 tables in the tiny space (W 16, T + 8 = 12 tokens): node slots
    take the stem's sizes, the blocks' outputs are padded to them."""
    tables, n_dense = [5] * 14, 20
    torch.manual_seed(seed)
    net = Supernet("tiny", tables, n_dense, seed=seed).double()
    sub = sample_subnet("tiny", seed)
    rng = np.random.default_rng(seed)
    dense = torch.from_numpy(rng.normal(size=(4, n_dense)))
    sparse = torch.from_numpy(rng.integers(0, 5, (4, 14)).astype(np.int32))
    ref = net(dense, sparse, sub)
    ref.square().sum().backward()
    g_ref = _grads(net)
    net.zero_grad(set_to_none=True)
    out = static_forward(net, dense, sparse, sub)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    scale = max(float(v.abs().max()) for v in g_ref.values())
    for name, g in _grads(net).items():
        torch.testing.assert_close(g, g_ref[name], rtol=1e-8, atol=1e-12 * scale, msg=name)


@pytest.mark.parametrize("rows", [3, 5, 8])  # fewer, as many and more outputs than inputs
def test_switched_linear_by_flag(rows):
    """Flag 0: exactly linear(x, w, b); flag 1: exactly x padded or cut to `rows` columns, and
    the weight and bias get zero gradients (as the lerp of the two results gave them)."""
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(rows, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(rows, generator=g, dtype=torch.float64, requires_grad=True)
    y0 = switched_linear(x, w, b, torch.tensor(0.0))
    assert torch.equal(y0, torch.nn.functional.linear(x, w, b))
    y1 = switched_linear(x, w, b, torch.tensor(1.0))
    assert torch.equal(y1, padded(x, rows))
    y1.sum().backward()
    assert not w.grad.any() and not b.grad.any()
    assert torch.equal(x.grad[:, : min(rows, 5)], torch.ones(4, min(rows, 5), dtype=x.dtype))


@pytest.mark.parametrize("dt", [None, torch.bfloat16])
def test_flagged_compiled_is_the_cast_times_the_flag(dt):
    """`flagged` as torch.compile fuses it (on CUDA `flagged` runs it so; inductor's CPU backend
    here, shapes dynamic as there) on a column slice of a weight, as the block takes it: the
    weight and bias in dt times the 0/1 flag, and gradients g * flag in float32, exactly (a
    product by 0 or 1), at two widths and both flag values."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("inductor's CPU backend needs a C++ compiler")
    fused = torch.compile(static._flagged, dynamic=True)
    g = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(6, 10, generator=g), torch.randn(6, generator=g)
    for cols, flag in ((4, 1.0), (7, 0.0), (4, 0.0), (7, 1.0)):
        w = weight[:, :cols].detach().requires_grad_()
        b = bias.detach().requires_grad_()
        fw, fb = fused(w, b, torch.tensor(flag), dt)
        cast = (weight[:, :cols], bias) if dt is None else (weight[:, :cols].to(dt), bias.to(dt))
        assert fw.dtype == fb.dtype == (dt or torch.float32)
        assert torch.equal(fw, cast[0] * flag) and torch.equal(fb, cast[1] * flag)
        gw, gb = torch.randn(6, cols, generator=g).to(fw.dtype), torch.randn(6).to(fw.dtype)
        torch.autograd.backward([fw, fb], [gw, gb])
        assert w.grad.dtype == b.grad.dtype == torch.float32
        assert torch.equal(w.grad, gw.float() * flag) and torch.equal(b.grad, gb.float() * flag)


def test_gate_compiled_equals_its_gradients_by_hand():
    """The Gating op's sigmoid(pre) * right as torch.compile fuses it (on CUDA, `gate` runs it
    so; inductor's CPU backend here, shapes dynamic as there): the product and the gradients
    s * g (right's) and g * right * s (1 - s) (pre's), s = sigmoid(pre), to float64 rounding
    (1e-12), at two widths through one compilation."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("inductor's CPU backend needs a C++ compiler")
    fused = torch.compile(_gate, dynamic=True)
    g = torch.Generator().manual_seed(0)
    for width in (8, 24):
        pre, right, gy = (torch.randn(6, width, generator=g, dtype=torch.float64) for _ in "abc")
        pre.requires_grad_(True)
        right.requires_grad_(True)
        y = fused(pre, right)
        y.backward(gy)
        s = 1 / (1 + torch.exp(-pre.detach()))
        tol = {"atol": 1e-12, "rtol": 1e-12}
        torch.testing.assert_close(y.detach(), s * right.detach(), **tol)
        torch.testing.assert_close(right.grad, s * gy, **tol)
        torch.testing.assert_close(pre.grad, gy * right.detach() * s * (1 - s), **tol)


def _fm_by_hand(so, g_fm, g_so):
    """The FM term 0.5 ((sum_t so)^2 - sum_t so^2) and so's whole gradient: g_so plus
    g_fm (sum_t so - so_t) for each token t."""
    total = so.sum(1)
    fm = 0.5 * (total**2 - (so**2).sum(1))
    g = g_fm[:, None, :] * (total[:, None, :] - so)
    return fm, g if g_so is None else g + g_so


@pytest.mark.parametrize("through", [True, False])
def test_fm_term_gradient_adds_the_pass_through_gradient(through):
    """`fm_term` returns the FM term and so again; so's gradient is the sum of both uses' (one
    kernel on CUDA), or the FM term's alone when so's other use takes no gradient (float64, to
    rounding)."""
    g = torch.Generator().manual_seed(1)
    so = torch.randn(5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    g_fm, g_so = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 3, 4, generator=g, dtype=torch.float64),
    )
    fm, out = fm_term(so * 1)  # through a node, as in the block
    assert torch.equal(out, so.detach())
    if through:
        torch.autograd.backward([fm, out], [g_fm, g_so])
    else:
        fm.backward(g_fm)
    want_fm, want_g = _fm_by_hand(so.detach(), g_fm, g_so if through else None)
    tol = {"atol": 1e-12, "rtol": 1e-12}
    torch.testing.assert_close(fm.detach(), want_fm, **tol)
    torch.testing.assert_close(so.grad, want_g, **tol)


def test_fm_compiled_equals_the_term_and_gradient_by_hand():
    """The FM term's forward and backward as torch.compile fuses them (on CUDA `fm_term` runs
    them so; inductor's CPU backend here), with and without the pass-through gradient and with
    a strided one (a node slot's view), to float64 rounding (1e-12)."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("inductor's CPU backend needs a C++ compiler")
    fwd, bwd = torch.compile(_fm), torch.compile(_fm_grad)
    g = torch.Generator().manual_seed(2)
    so = torch.randn(6, 5, 4, generator=g, dtype=torch.float64)
    g_fm = torch.randn(6, 4, generator=g, dtype=torch.float64)
    strided = torch.randn(6, 4, 7, generator=g, dtype=torch.float64)[:, :, 1:6].transpose(1, 2)
    fm, total = fwd(so)
    tol = {"atol": 1e-12, "rtol": 1e-12}
    torch.testing.assert_close(total, so.sum(1), **tol)
    for g_so in (None, strided.contiguous(), strided):
        want_fm, want_g = _fm_by_hand(so, g_fm, g_so)
        torch.testing.assert_close(fm, want_fm, **tol)
        torch.testing.assert_close(bwd(so, total, g_fm, g_so), want_g, **tol)


def test_ones_are_made_once_per_size_and_dtype():
    a = ones(5, torch.float32, torch.device("cpu"))
    assert torch.equal(a, torch.ones(5)) and ones(5, torch.float32, torch.device("cpu")) is a
    assert ones(6, torch.float32, torch.device("cpu")) is not a
    assert ones(5, torch.float64, torch.device("cpu")).dtype == torch.float64


def test_take_slices_through_autograd_or_records_a_leaf(spaces):
    """`StaticBlock.take`: without `taken` a view of the parameter's first rows and columns
    (gradients reach the parameter); with it a leaf of its own, recorded with its index; the same
    parameter taken twice in one forward is an error."""
    from models.nas.static import StaticBlock

    net = Supernet("tiny", TABLES, N_DENSE, seed=0)
    blk = StaticBlock(net.blocks[0], 0, "fc", "efc", Layout.of(TINY, N_DENSE, len(TABLES)))
    w = blk.dense.linear.weight  # [16, n_dense]
    v = blk.take(w, 4, 3)
    assert v.shape == (4, 3) and v.grad_fn is not None and v.data_ptr() == w.data_ptr()
    v.sum().backward()
    assert w.grad[:4, :3].eq(1).all() and w.grad.sum() == 12
    blk.taken = []
    leaf = blk.take(w, 4, dt=torch.float64)
    assert leaf.is_leaf and leaf.requires_grad and leaf.dtype == torch.float64
    ((p, idx, got),) = blk.taken
    assert p is w and idx == (slice(4), slice(None)) and got is leaf
    with pytest.raises(RuntimeError, match="taken twice"):
        blk.take(w)
