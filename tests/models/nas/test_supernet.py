"""Weight sharing: a subnet through the supernet equals its extracted standalone model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.nas.space import sample_subnet, subnet_from_dict
from models.nas.supernet import SubnetModel, Supernet, count_parameters, extract_subnet

from .conftest import N_DENSE, TABLES, tiny_batch


@pytest.mark.parametrize("seed", range(12))
def test_extracted_subnet_equals_supernet_path(tiny, seed):
    net = Supernet("tiny", TABLES, N_DENSE, seed=seed)
    sub = sample_subnet("tiny", seed)
    dense, sparse = tiny_batch()
    model = extract_subnet(net, sub)
    torch.testing.assert_close(model(dense, sparse), net(dense, sparse, sub), rtol=1e-6, atol=1e-6)
    assert count_parameters(model) < count_parameters(net)


def test_real_space_weight_sharing():
    net = Supernet("nasrec-full", TABLES, N_DENSE)
    dense, sparse = tiny_batch(4)
    assert net(dense, sparse).shape == (4,)
    for seed in range(3):
        sub = sample_subnet("nasrec-full", seed)
        torch.testing.assert_close(extract_subnet(net, sub)(dense, sparse), net(dense, sparse, sub))


def test_gradients_touch_only_the_used_slice(tiny):
    net = Supernet("tiny", TABLES, N_DENSE)
    sub = sample_subnet("tiny", 4)
    dense, sparse = tiny_batch()
    net(dense, sparse, sub).sum().backward()
    used = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    for i, b in enumerate(sub.blocks):
        if i in sub.live_blocks():
            assert any(n.startswith(f"blocks.{i}.dense.{b.dense_op}.") for n in used)
            for op in ("fc", "dot", "gating", "sum"):
                if op != b.dense_op:
                    assert not any(n.startswith(f"blocks.{i}.dense.{op}.") for n in used)
    fc = net.blocks[6].dense["fc"].linear.weight.grad
    if sub.blocks[6].dense_op == "fc":
        assert fc[sub.blocks[6].dense_width :].abs().sum() == 0  # rows past d untouched


def test_dead_blocks_are_not_built_or_run(tiny):
    d = sample_subnet("tiny", 0).to_dict()
    for i, b in enumerate(d["blocks"]):
        b["dense_op"], b["dense_inputs"] = "fc", [i]
        b["sparse_inputs"] = [i]
    d["blocks"][6]["dense_inputs"] = d["blocks"][6]["sparse_inputs"] = [2]
    sub = subnet_from_dict(d)
    model = SubnetModel(sub, TABLES, N_DENSE)
    assert sorted(model.blocks.keys()) == ["0", "1", "6"]
    net = Supernet("tiny", TABLES, N_DENSE)
    calls = []
    for i, blk in enumerate(net.blocks):
        blk.register_forward_hook(lambda *a, i=i: calls.append(i))
    net(*tiny_batch(), sub)
    assert calls == [0, 1, 6]


def test_seeded_init_is_reproducible(tiny):
    a = Supernet("tiny", TABLES, N_DENSE, seed=3).state_dict()
    b = Supernet("tiny", TABLES, N_DENSE, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(Supernet("tiny", TABLES, N_DENSE)(*tiny_batch()).detach().numpy()).all()


def test_padded_column_selection_is_exact(tiny, monkeypatch):
    """The CUDA shape padding (zero inputs, repeated index) changes neither outputs nor grads."""
    from models.nas import plans

    dense, sparse = tiny_batch()
    for seed in range(4):
        sub = sample_subnet("tiny", seed)
        ref = Supernet("tiny", TABLES, N_DENSE, seed=seed)
        ref(dense, sparse, sub).sum().backward()
        monkeypatch.setitem(plans.PAD_COLS, "multiple", 8)
        net = Supernet("tiny", TABLES, N_DENSE, seed=seed)
        out = net(dense, sparse, sub)
        out.sum().backward()
        monkeypatch.setitem(plans.PAD_COLS, "multiple", "auto")
        torch.testing.assert_close(out, ref(dense, sparse, sub))
        for (name, a), b in zip(net.named_parameters(), ref.parameters(), strict=True):
            assert (a.grad is None) == (b.grad is None), name
            if a.grad is not None:
                # to float32 rounding of sums whose O(1) terms cancel: padding changes their
                # order, and a bias gradient of ~0 came out 2.3e-5 against 0 on one CPU
                torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1.3e-6, msg=name)
        monkeypatch.setitem(plans.PAD_COLS, "multiple", 8)
        model = extract_subnet(net, sub)
        torch.testing.assert_close(model(dense, sparse), out.detach())
        monkeypatch.setitem(plans.PAD_COLS, "multiple", "auto")
