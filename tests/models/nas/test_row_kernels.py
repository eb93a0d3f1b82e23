"""Row kernels of an embedding table (models/nas/row_kernels.py): hand-computed cases on both
paths (torch reference, Triton), the Triton path against the reference on random tables with
duplicate rows, and the row-gradient training step through the kernels against dense gradients.

The Triton tests run on CUDA or in Triton's interpreter (conftest.py says when they skip).
Tolerances: the gather and the scatter of one row each are exact; sums of duplicate rows and of
squares rtol 1e-5 / atol 1e-6 (fp32, other orders); the Adagrad rows rtol 1e-5 / atol 1e-7 (the
same order of operations; the reference's torch sqrt and division may differ by an ulp).
"""

from __future__ import annotations

import pytest
import torch

from models.nas import optim
from models.nas.row_kernels import (
    adagrad_owned_rows_,
    gather_rows,
    mark_owners_,
    owned_sq_sum,
    scatter_add_rows_,
)

from .conftest import CUDA
from .test_optim import test_row_grad_norm_and_update_hand_computed as hand_computed_step
from .test_optim import test_row_grad_step_equals_dense as step_equals_dense

DEV = torch.device("cuda" if CUDA else "cpu")
SUMS = {"rtol": 1e-5, "atol": 1e-6}
ADAGRAD = {"rtol": 1e-5, "atol": 1e-7}


@pytest.fixture(params=["torch", "triton"])
def path(request):
    """Each hand-computed test on the reference and on the Triton path."""
    if request.param == "torch":
        yield torch.device("cpu")  # CPU tensors take the reference unless forced
        return
    request.getfixturevalue("triton_kernels")
    yield DEV


def _owners(idx, rows):
    """owner [rows]: each row's last position in idx, -1 elsewhere (mark_owners_)."""
    owner = torch.full((rows,), -1, dtype=torch.int64, device=idx.device)
    mark_owners_(owner, idx)
    return owner


def test_hand_computed_rows(path):
    """Rows 1, 1, 3 of a 4 x 2 table with gradients (3, 0), (1, 0), (0, 3): acc rows (4, 0) and
    (0, 3), owned by positions 1 and 2, sum of squares 25. Adagrad with coef 0.5, lr 0.5,
    eps 0.1 from sums (1, 1): row 1 g = (2, 0): sum (5, 1), weight w - 0.5 * 2 / (sqrt 5 + 0.1);
    row 3 g = (0, 1.5): sum (1, 3.25), weight w - 0.5 * 1.5 / (sqrt 3.25 + 0.1); rows 0 and 2
    and zero gradients unchanged; the rows' acc zeroed and owners reset."""
    weight = torch.arange(8.0, device=path).view(4, 2)
    idx = torch.tensor([1, 1, 3], device=path)
    assert torch.equal(gather_rows(weight, idx), torch.tensor([[2.0, 3], [2, 3], [6, 7]]).to(path))
    acc = torch.zeros(4, 2, device=path)
    grad = torch.tensor([[3.0, 0], [1, 0], [0, 3]], dtype=torch.bfloat16, device=path)
    scatter_add_rows_(acc, idx, grad)
    assert torch.equal(acc.cpu(), torch.tensor([[0.0, 0], [4, 0], [0, 0], [0, 3]]))
    owner = _owners(idx, 4)
    assert owner.tolist() == [-1, 1, -1, 2]
    assert float(owned_sq_sum(acc, idx, owner)) == 25.0
    state = torch.ones(4, 2, device=path)
    adagrad_owned_rows_(weight, state, acc, owner, idx, torch.tensor(0.5, device=path), 0.5, 0.1)
    want = torch.tensor([[0.0, 1], [2 - 1 / (5**0.5 + 0.1), 3], [4, 5],
                         [6, 7 - 0.75 / (3.25**0.5 + 0.1)]])  # fmt: skip
    torch.testing.assert_close(weight.cpu(), want, **ADAGRAD)
    torch.testing.assert_close(state.cpu(), torch.tensor([[1.0, 1], [5, 1], [1, 1], [1, 3.25]]))
    assert not acc.any() and owner.tolist() == [-1] * 4


def test_empty_and_bad_inputs(path):
    """No indices: nothing to do; a table that is not [R, D] contiguous, or indices that are not
    1-D int64 on its device: a ValueError before any kernel runs."""
    table = torch.ones(5, 4, device=path)
    none = torch.zeros(0, dtype=torch.int64, device=path)
    assert gather_rows(table, none).shape == (0, 4)
    assert float(owned_sq_sum(table, none, torch.full((5,), -1, device=path))) == 0.0
    with pytest.raises(ValueError, match="contiguous"):
        gather_rows(table.t(), torch.tensor([0], device=path))
    with pytest.raises(ValueError, match="int64"):
        gather_rows(table, torch.tensor([0], dtype=torch.int32, device=path))
    with pytest.raises(ValueError, match="indices for"):
        scatter_add_rows_(table, torch.tensor([0, 1], device=path), torch.ones(3, 4, device=path))
    with pytest.raises(ValueError, match="shapes differ"):
        owner = torch.full((5,), -1, device=path)
        adagrad_owned_rows_(table, torch.ones(5, 2, device=path), table, owner,
                            torch.tensor([0], device=path), torch.tensor(1.0), 0.1, 0.1)  # fmt: skip


@pytest.mark.parametrize("d", [16, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_against_reference(triton_kernels, d, dtype):
    """Random 300-row tables, 1000 Zipf-like indices (many duplicates, several programs): every
    kernel against the reference on the same inputs."""
    g = torch.Generator().manual_seed(d)
    rows = 300
    idx = (torch.rand(1000, generator=g) ** 3 * rows).long().to(DEV)
    weight = torch.randn(rows, d, generator=g).to(DEV, dtype)
    kernels = triton_kernels.KERNELS
    grad = torch.randn(1000, d, generator=g).to(DEV, dtype)
    state = torch.rand(rows, d, generator=g).to(DEV)
    coef = torch.tensor(0.7, device=DEV)
    results, owners = [], []
    for triton_on in (True, False):
        kernels["enabled"] = triton_on
        try:
            acc = torch.zeros(rows, d, device=DEV)
            scatter_add_rows_(acc, idx, grad)
            owner = _owners(idx, rows)
            owners.append(owner.clone())
            p, s = weight.float().clone(), state.clone()
            sq = owned_sq_sum(acc, idx, owner)
            acc_before = acc.clone()
            adagrad_owned_rows_(p, s, acc, owner, idx, coef, 0.05, 1e-2)
            results.append((gather_rows(weight, idx), acc_before, sq, p, s, acc, owner))
        finally:
            kernels["enabled"] = True
    (gk, ak, sqk, pk, sk, acck, ok), (gr, ar, sqr, pr, sr, accr, orf) = results
    assert torch.equal(gk, gr) and torch.equal(owners[0], owners[1])
    torch.testing.assert_close(ak, ar, **SUMS)
    torch.testing.assert_close(sqk, sqr, **SUMS)
    torch.testing.assert_close(pk, pr, **ADAGRAD)
    torch.testing.assert_close(sk, sr, **ADAGRAD)
    assert not acck.any() and not accr.any() and bool((ok == -1).all()) and torch.equal(ok, orf)
    untouched = torch.ones(rows, dtype=torch.bool, device=DEV)
    untouched[idx] = False
    assert torch.equal(pk[untouched], weight.float()[untouched])


def test_triton_gather_out_of_range_gives_nan(triton_kernels):
    """An index outside the table reads nothing and gives a NaN row (index_select would raise
    on the device); the other rows are unaffected."""
    table = torch.arange(12.0, device=DEV).view(3, 4)
    out = gather_rows(table, torch.tensor([2, 3, -1, 0], device=DEV))
    assert torch.equal(out[[0, 3]].cpu(), torch.tensor([[8.0, 9, 10, 11], [0, 1, 2, 3]]))
    assert bool(out[[1, 2]].isnan().all())


def test_training_step_through_the_kernels(triton_kernels, tiny, monkeypatch):
    """clip_and_step with row gradients through the Triton kernels: the hand-computed step and
    the supernet's steps equal to dense gradients (tests/models/nas/test_optim.py's tests, run
    with the kernels on)."""
    hand_computed_step(monkeypatch)  # CPU tensors: on the Triton path in the interpreter only
    step_equals_dense(tiny, str(DEV), monkeypatch)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_dense_lookup_gradient(triton_kernels, monkeypatch, dtype):
    """The dense lookup through gather_rows (EMBEDDING "index_select" on CUDA; forced here with
    the kernels on): index_select's values and table gradient, for int64 and int32 indices."""
    monkeypatch.setattr(optim, "_index_select_on", lambda w, s: True)
    emb = optim.AutoSparseEmbedding(7, 4, sparse_grad=False).to(DEV)
    idx = torch.tensor([[0, 6, 6], [3, 0, 1]], device=DEV, dtype=dtype)
    go = torch.randn(2, 3, 4, device=DEV)
    out = emb(idx)
    out.backward(go)
    w = emb.weight.detach()
    assert torch.equal(out.detach(), w.index_select(0, idx.flatten()).view(2, 3, 4))
    want = torch.zeros(7, 4, device=DEV).index_add_(0, idx.flatten().long(), go.view(-1, 4))
    torch.testing.assert_close(emb.weight.grad, want, **SUMS)
