"""Sparse embedding gradients: the same Adagrad step as dense ones, and sparse-aware clipping.

Tolerance: parameters and Adagrad sums after sparse-gradient steps equal the dense-gradient ones to
1e-6 absolute + 1e-5 relative (float32; the two paths add duplicate rows and take the norms in a
different order, and Adagrad's sparse branch divides then adds where the dense one uses addcdiv).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models.baselines import build_baseline
from models.nas import optim
from models.nas.optim import (
    AutoSparseEmbedding,
    clip_and_step,
    clip_grad_norm,
    make_optimizer,
    pending_rows,
    sparse_grad_parameters,
)
from models.nas.space import sample_subnet
from models.nas.supernet import SubnetModel, Supernet
from models.nas.train import train_step

from .conftest import N_DENSE, TABLES, tiny_batch

ATOL, RTOL = 1e-6, 1e-5
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _pair(build):
    """The same model (same initial weights) with sparse and with dense embedding gradients."""
    a, b = build(True), build(False)
    b.load_state_dict(a.state_dict())
    assert sparse_grad_parameters(a) and not sparse_grad_parameters(b)
    return a, b


def _steps(model, device, n_steps, clip, **kwargs):
    model = model.to(device)
    opt = make_optimizer(model, 0.12, 1e-2)
    for i in range(n_steps):
        dense, sparse = tiny_batch(32, seed=i)  # 32 rows over tables of 5-11 rows: duplicates
        label = (dense[:, 0] > 0).float()
        batch = tuple(t.to(device) for t in (dense, sparse, label))
        train_step(model, opt, batch, 0.12, clip, True, torch.device(device), **kwargs)
    sums = [opt.state[p]["sum"] for group in opt.param_groups for p in group["params"]]
    return dict(model.named_parameters()), sums, opt


def _assert_same(a, b, device, n_steps=2, clip=5.0, **kwargs):
    pa, sa, _ = _steps(a, device, n_steps, clip, **kwargs)
    pb, sb, _ = _steps(b, device, n_steps, clip, **kwargs)
    for name, sum_sq in zip(pa, sa, strict=True):
        # A token projection's bias feeds a per-token LayerNorm, which cancels it: its exact
        # gradient is 0, its computed one rounding noise (sum of squares ~1e-11), and Adagrad
        # scales that noise up to ~1e-5 (lr 0.12 x noise / eps 1e-2) differently in each run.
        noise_only = float(sum_sq.max()) < 1e-9
        atol = 1e-4 if noise_only else ATOL
        torch.testing.assert_close(pa[name], pb[name], atol=atol, rtol=RTOL, msg=name)
    for name, x, y in zip(pa, sa, sb, strict=True):  # Adagrad sums, model order
        torch.testing.assert_close(x, y, atol=ATOL, rtol=RTOL, msg=name)
    return pa


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["dlrm", "deepfm", "dcnv2"])
@pytest.mark.parametrize("clip", [5.0, 1e-3])  # 1e-3: the clipping coefficient is active
def test_baseline_sparse_step_equals_dense(name, clip, device):
    small = {"dlrm": {"bottom_mlp": (8,), "top_mlp": (8,)}, "deepfm": {"dnn": (8,)},
             "dcnv2": {"dnn": (8,), "cross_layers": 1}}[name]  # fmt: skip

    def build(sparse_grad):
        torch.manual_seed(3)
        return build_baseline(name, TABLES, N_DENSE, sparse_grad=sparse_grad, **small)

    a, b = _pair(build)
    before = a.embeddings.tables[0].weight.detach().clone()
    pa = _assert_same(a, b, device, clip=clip)
    # rows no batch touched keep their values; touched rows moved
    moved = (pa["embeddings.tables.0.weight"].detach().cpu() != before).any(1)
    seen = torch.zeros(TABLES[0], dtype=torch.bool)
    for i in range(2):
        seen[tiny_batch(32, seed=i)[1][:, 0].long()] = True
    assert torch.equal(moved, seen)


@pytest.mark.parametrize("device", DEVICES)
def test_supernet_and_subnet_sparse_step_equals_dense(tiny, device):
    sub = sample_subnet("tiny", 4)
    _assert_same(*_pair(lambda s: Supernet("tiny", TABLES, N_DENSE, sparse_grad=s)), device,
                 subnet=sub)  # fmt: skip
    _assert_same(*_pair(lambda s: Supernet("tiny", TABLES, N_DENSE, sparse_grad=s)), device,
                 subnet=None)  # fmt: skip
    _assert_same(*_pair(lambda s: SubnetModel(sub, TABLES, N_DENSE, seed=1, sparse_grad=s)),
                 device, clip=1e-3)  # fmt: skip


def test_clip_grad_norm_hand_computed():
    """Sparse rows 1, 1, 3 with values (3, 0), (1, 0), (0, 3) -> coalesced (4, 0) and (0, 3):
    norm 5; with a dense gradient (12,) the joint norm is 13; clipping to 6.5 halves both."""
    emb = nn.Embedding(4, 2, sparse=True)
    lin = nn.Parameter(torch.zeros(1))
    emb.weight.grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 1, 3]]), torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 3.0]]), (4, 2)
    )
    lin.grad = torch.tensor([12.0])
    total = clip_grad_norm([emb.weight, lin], 6.5)
    assert float(total) == pytest.approx(13.0, abs=1e-6)
    coef = 6.5 / (13.0 + 1e-6)
    g = emb.weight.grad
    assert g.is_sparse and g.is_coalesced()
    torch.testing.assert_close(
        g.to_dense(), torch.tensor([[0, 0], [4, 0], [0, 0], [0, 3.0]]) * coef
    )
    torch.testing.assert_close(lin.grad, torch.tensor([12.0 * coef]))
    # below the limit nothing changes
    assert float(clip_grad_norm([emb.weight, lin], 100.0)) == pytest.approx(13 * coef, rel=1e-6)
    torch.testing.assert_close(lin.grad, torch.tensor([12.0 * coef]))
    assert math.isclose(float(clip_grad_norm([lin], 1.0)), 12 * coef, rel_tol=1e-6)


def test_optimizer_steps_dense_and_sparse_apart(tiny, monkeypatch):
    """One parameter group (plain Adagrad state_dict), but each step hands torch's functional
    Adagrad the dense and the sparse gradients separately (so CUDA keeps foreach for dense)."""
    import torch.optim.adagrad as adagrad_module

    net = Supernet("tiny", TABLES, N_DENSE)
    opt = make_optimizer(net, 0.1, 1e-2)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == list(net.parameters())
    calls = []
    real = adagrad_module.adagrad

    def spy(params, grads, *args, has_sparse_grad=False, **kwargs):
        calls.append((len(params), has_sparse_grad, all(g.is_sparse for g in grads)))
        return real(params, grads, *args, has_sparse_grad=has_sparse_grad, **kwargs)

    monkeypatch.setattr(adagrad_module, "adagrad", spy)
    dense, sparse = tiny_batch(8)
    batch = (dense, sparse, (dense[:, 0] > 0).float())
    train_step(net, opt, batch, 0.1, 5.0, False, torch.device("cpu"))
    n_grads = sum(p.grad is not None for p in net.parameters())
    assert calls == [(n_grads - 1, False, False), (1, True, True)]
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == list(net.parameters())
    assert set(opt.state_dict()["state"]) == set(range(len(list(net.parameters()))))
    assert sparse_grad_parameters(net) == [net.embedding.weight]
    assert not sparse_grad_parameters(Supernet("tiny", TABLES, N_DENSE, sparse_grad=False))


@pytest.mark.parametrize("device", DEVICES)
def test_auto_policy_sparse_on_cpu_dense_elsewhere(tiny, device, monkeypatch):
    """sparse_grad=None (the default): sparse gradients on the CPU, dense on CUDA (faster there,
    models/nas/optim.py), row gradients for the supernet's stem; True / False force one wherever
    the weight lives."""
    from models.nas.supernet import extract_subnet

    monkeypatch.setitem(optim.ROW_GRAD, "impl", "auto")
    dense, sparse = (t.to(device) for t in tiny_batch(8))
    net = Supernet("tiny", TABLES, N_DENSE).to(device)
    sub = extract_subnet(net, sample_subnet("tiny", 1))
    dlrm = build_baseline("dlrm", TABLES, N_DENSE, bottom_mlp=(4,), top_mlp=(4,)).to(device)
    forced = build_baseline("deepfm", TABLES, N_DENSE, dnn=(4,), sparse_grad=True).to(device)
    for model in (net, sub, dlrm, forced):
        model(dense, sparse).sum().backward()
    want = device == "cpu"
    if want:
        assert net.embedding.weight.grad.is_sparse
    else:  # the supernet's stem keeps row gradients on CUDA (test_row_grad_*)
        assert net.embedding.weight.grad is None and pending_rows(net.embedding.weight)
    assert sub.embedding.weight.grad.is_sparse == want and sub.embedding.sparse_grad is None
    assert all(t.weight.grad.is_sparse == want for t in dlrm.embeddings.tables)
    assert forced.sparse_linear.weight.grad.is_sparse and forced.embeddings.tables[0].sparse
    assert (sparse_grad_parameters(net) == [net.embedding.weight]) == want


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the index_select lookup is CUDA's")
def test_cuda_dense_lookup_is_an_index_select(monkeypatch):
    """On CUDA a dense-gradient embedding looks up with index_select (models/nas/optim.py
    EMBEDDING): the same rows as F.embedding, the same table gradient to rounding (duplicate rows
    summed in another order)."""
    from models.nas import optim
    from models.nas.optim import AutoSparseEmbedding

    torch.manual_seed(0)
    emb = AutoSparseEmbedding(50, 16).cuda()
    idx = torch.randint(0, 50, (64, 7), device="cuda")  # many duplicates
    go = torch.randn(64, 7, 16, device="cuda")
    grads = []
    for impl in ("index_select", "embedding"):
        monkeypatch.setitem(optim.EMBEDDING, "impl", impl)
        emb.weight.grad = None
        out = emb(idx)
        out.backward(go)
        grads.append((out.detach(), emb.weight.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and not emb.weight.grad.is_sparse
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_row_grad_step_equals_dense(tiny, device, monkeypatch):
    """Row gradients (the supernet stem's on CUDA; forced on here): the same steps as dense
    gradients to the module's tolerance, sampled paths and the full supernet, clipping idle and
    active; the embedding never gets a .grad and no rows stay pending."""
    monkeypatch.setitem(optim.ROW_GRAD, "impl", "on")
    sub = sample_subnet("tiny", 4)
    for subnet, clip in ((sub, 5.0), (None, 1e-3)):
        a, b = (Supernet("tiny", TABLES, N_DENSE, sparse_grad=False) for _ in range(2))
        b.load_state_dict(a.state_dict())
        b.embedding.row_grad = False
        before = a.embedding.weight.detach().clone()
        pa = _assert_same(a, b, device, clip=clip, subnet=subnet)
        weight = a.embedding.weight
        assert weight.grad is None and pending_rows(weight) is None
        assert not weight.row_grad.acc.any() and bool((weight.row_grad.owner == -1).all())
        moved = (pa["embedding.weight"].detach() != before.to(device)).any(1).cpu()
        seen = torch.zeros(weight.shape[0], dtype=torch.bool)
        for i in range(2):
            seen[(tiny_batch(32, seed=i)[1].long() + a.offsets.cpu()).flatten()] = True
        assert torch.equal(moved, seen)  # untouched rows keep their values


def test_row_grad_norm_and_update_hand_computed(monkeypatch):
    """Rows 1, 1, 3 with gradients (3, 0), (1, 0), (0, 3) -> (4, 0) and (0, 3): norm 5; with a
    dense gradient (12,) the joint norm is 13, and clipping to 6.5 halves every gradient. Adagrad
    (lr 0.5, eps 0.1, sums from 0): row 1 g = (2, 0): sum (4, 0), step -0.5 * 2 / (2 + 0.1);
    row 3 g = (0, 1.5): sum (0, 2.25), step -0.5 * 1.5 / (1.5 + 0.1); the dense parameter
    g = 6: sum 36, step -0.5 * 6 / 6.1; rows 0 and 2 unchanged."""
    monkeypatch.setitem(optim.ROW_GRAD, "impl", "on")
    emb = AutoSparseEmbedding(4, 2, sparse_grad=False)
    emb.row_grad = True
    lin = nn.Parameter(torch.zeros(1))
    with torch.no_grad():
        emb.weight.zero_()
    opt = make_optimizer([emb.weight, lin], 0.5, 0.1)
    out = emb(torch.tensor([1, 1, 3]))
    (out * torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 3.0]])).sum().backward()
    lin.grad = torch.tensor([12.0])
    assert emb.weight.grad is None and pending_rows(emb.weight) is not None
    total = clip_and_step(opt, [emb.weight, lin], 6.5)
    assert float(total) == pytest.approx(13.0, abs=1e-5)
    c = 6.5 / (13.0 + 1e-6)
    g1, g3 = 4.0 * c, 3.0 * c
    want = torch.tensor([[0.0, 0.0], [-0.5 * g1 / (g1 + 0.1), 0.0], [0.0, 0.0],
                         [0.0, -0.5 * g3 / (g3 + 0.1)]])  # fmt: skip
    torch.testing.assert_close(emb.weight.detach(), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        opt.state[emb.weight]["sum"],
        torch.tensor([[0.0, 0.0], [g1 * g1, 0.0], [0.0, 0.0], [0.0, g3 * g3]]),
    )
    torch.testing.assert_close(lin.detach(), torch.tensor([-0.5 * 12 * c / (12 * c + 0.1)]))
    assert float(opt.state[emb.weight]["step"]) == 1.0 == float(opt.state[lin]["step"])
    assert pending_rows(emb.weight) is None and not emb.weight.row_grad.acc.any()


def _small_embedding(rows):
    """A 6 x 4 embedding (weights 0.0, 0.1, ... 2.3) with or without row gradients, and its
    optimizer (lr 0.3, eps 1e-2)."""
    emb = AutoSparseEmbedding(6, 4, sparse_grad=False)
    emb.row_grad = rows
    with torch.no_grad():
        emb.weight.copy_(torch.arange(24.0).view(6, 4) / 10)
    return emb, make_optimizer(emb, 0.3, 1e-2)


def test_row_grad_dense_consumers_and_zero_grad(monkeypatch):
    """Pending rows become a dense .grad for opt.step() and clip_grad_norm (the same update as a
    dense lookup's), and zero_grad drops them."""
    monkeypatch.setitem(optim.ROW_GRAD, "impl", "on")
    torch.manual_seed(0)
    idx = torch.tensor([[0, 2, 2], [5, 0, 1]])
    go = torch.randn(2, 3, 4)
    results = []
    for rows in (True, False):
        emb, opt = _small_embedding(rows)
        emb(idx).backward(go)
        clip_grad_norm(emb.parameters(), 0.5)
        assert emb.weight.grad is not None and pending_rows(emb.weight) is None
        opt.step()
        emb(idx).backward(go)
        opt.step()  # SplitAdagrad.step turns the pending rows into .grad itself
        results.append(emb.weight.detach().clone())
        emb(idx).backward(go)
        opt.zero_grad()
        if rows:
            assert pending_rows(emb.weight) is None and not emb.weight.row_grad.acc.any()
    torch.testing.assert_close(results[0], results[1], atol=ATOL, rtol=RTOL)


def test_row_grad_accumulates_over_backward_calls(monkeypatch):
    """Two backward passes before one step (gradient accumulation, overlapping rows): the row
    update equals the dense one, every row of either pass counted once in the norm."""
    monkeypatch.setitem(optim.ROW_GRAD, "impl", "on")
    torch.manual_seed(1)
    batches = [torch.tensor([[0, 3, 3]]), torch.tensor([[3, 4, 1]])]
    gos = [torch.randn(1, 3, 4) for _ in batches]
    results = []
    for rows in (True, False):
        emb, opt = _small_embedding(rows)
        for idx, go in zip(batches, gos, strict=True):
            emb(idx).backward(go)
        assert (emb.weight.grad is None) == rows
        total = clip_and_step(opt, list(emb.parameters()), 0.5)
        results.append((float(total), emb.weight.detach().clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], atol=ATOL, rtol=RTOL)
