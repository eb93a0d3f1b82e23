"""CUDA-graph replay of sampled subnets (models/nas/graphs.py) equals the eager static path
(runs where CUDA is available; the static path itself is tested on the CPU in test_static.py)."""

from __future__ import annotations

import copy
import statistics

import pytest
import torch

from models.nas.graphs import GraphedSupernet, graphs_wanted
from models.nas.space import sample_subnet
from models.nas.static import static_forward
from models.nas.supernet import Supernet
from pimrec.errors import PimrecError

from .conftest import N_DENSE, TABLES, tiny_batch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_graphs_setting():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert not graphs_wanted("auto", cpu) and graphs_wanted("auto", gpu)
    assert not graphs_wanted("off", gpu) and graphs_wanted("on", gpu)
    with pytest.raises(PimrecError, match="graphs"):
        graphs_wanted("on", cpu)
    with pytest.raises(PimrecError, match="graphs"):
        graphs_wanted("yes", gpu)


def _grads(net: torch.nn.Module) -> list[torch.Tensor | None]:
    out = [None if p.grad is None else p.grad.detach().clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return out


@cuda
@pytest.mark.parametrize("capped", [True, False])
@pytest.mark.parametrize("amp", [False, True])
def test_graph_replay_equals_eager_static_path(amp, capped):
    """Eight subnets (blocks meet an op pair again with other masks: replays, not captures):
    fp32 graphs equal the eager static path to 1e-5. In bf16 the rounding differs (kernels
    fused otherwise; node gradients summed in the node buffers, not by autograd: the
    embedding's in bf16, not in float32), so the logits' and each gradient's (norm-wise) error
    against the float32 eager path must be within 4 times that of the bf16 eager path or 5 %
    (of the largest logit; of the gradient's norm, at least 1 % of the median gradient norm):
    gross errors, a missing or doubled term, are O(1)."""
    dev = torch.device("cuda")
    net = Supernet("nasrec-full", TABLES, N_DENSE, seed=0).to(dev)
    ref = copy.deepcopy(net)
    graphed = GraphedSupernet(net, amp=amp, capped=capped)
    subs = [sample_subnet("nasrec-full", s) for s in range(8)]
    names = [n for n, _ in net.named_parameters()]
    for k, sub in enumerate(subs):
        dense, sparse = (t.to(dev) for t in tiny_batch(64, k))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = graphed(dense, sparse, sub)
            want = static_forward(ref, dense, sparse, sub, capped=capped)
        out.square().mean().backward()
        want.square().mean().backward()
        got, eager = _grads(net), _grads(ref)
        exact, exact_out = eager, want
        if amp:  # the same in float32
            exact_out = static_forward(ref, dense, sparse, sub, capped=capped)
            exact_out.square().mean().backward()
            exact = _grads(ref)
            err_g, err_e = ((v - exact_out).abs().max() for v in (out, want))
            assert err_g <= max(4 * err_e, 0.05 * exact_out.abs().max()), (err_g, err_e)
        else:
            torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
        norms = [float(x.norm()) for x in exact if x is not None and x.any()]
        floor = 0.01 * statistics.median(norms)  # exact gradients near 0: no relative scale
        for name, g, e, x in zip(names, got, eager, exact, strict=True):
            if x is None:
                assert g is None or not g.any(), name
            elif not amp:
                torch.testing.assert_close(g, x, rtol=1e-5, atol=1e-5, msg=name)
            else:
                scale = max(float(x.norm()), floor)
                err_g, err_e = float((g - x).norm()) / scale, float((e - x).norm()) / scale
                assert err_g <= max(4 * err_e, 0.05), (name, err_g, err_e)
    assert 0 < graphed.captured() <= sum(len(s.live_blocks()) for s in subs)


@cuda
@pytest.mark.parametrize("kind", ["subnet", "dlrm", "deepfm", "dcnv2"])
def test_graphed_standalone_training_equals_eager(kind):
    """Three fp32 training steps of a model captured whole (`graph_model`) and of its eager twin
    give the same weights; eval mode runs the module as before."""
    from models.baselines import build_baseline
    from models.nas.graphs import graph_model
    from models.nas.supernet import SubnetModel
    from models.nas.train import make_optimizer, train_step

    dev = torch.device("cuda")
    if kind == "subnet":
        model = SubnetModel(sample_subnet("nasrec-full", 5), TABLES, N_DENSE, seed=0)
    else:
        torch.manual_seed(0)
        model = build_baseline(kind, TABLES, N_DENSE, embedding_dim=16)
    model = model.to(dev)
    twin = copy.deepcopy(model)
    graph_model(model, 64, N_DENSE, len(TABLES), amp=False)
    opts = [make_optimizer(m, 0.05, 1e-2) for m in (model, twin)]
    for k in range(3):
        dense, sparse = (t.to(dev) for t in tiny_batch(64, 10 + k))
        label = (dense[:, 0] > 0).float()
        for m, opt in zip((model, twin), opts, strict=True):
            train_step(m, opt, (dense, sparse, label), 0.05, 5.0, False, dev)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    model.eval()
    twin.eval()
    with torch.no_grad():
        dense, sparse = (t.to(dev) for t in tiny_batch(7, 99))  # another batch size: eager
        torch.testing.assert_close(model(dense, sparse), twin(dense, sparse))


@cuda
def test_full_supernet_graph_replay_equals_eager():
    """The warm-up step (full supernet) replayed as per-block graphs: same logits and gradients
    as the eager module, over two batches (the second replays)."""
    dev = torch.device("cuda")
    net = Supernet("nasrec-full", TABLES, N_DENSE, seed=1).to(dev)
    ref = copy.deepcopy(net)
    graphed = GraphedSupernet(net, amp=False)
    for k in range(2):
        dense, sparse = (t.to(dev) for t in tiny_batch(64, 20 + k))
        out, want = graphed(dense, sparse), ref(dense, sparse)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
        out.square().mean().backward()
        want.square().mean().backward()
        for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
        net.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)
    assert graphed.captured() == 7


def test_capture_arguments_without_a_gpu(monkeypatch):
    """What `capture` hands torch (checked with a stand-in, so it runs anywhere): the module,
    samples that are copies with the inputs' requires_grad, the batch thread's lock held, the
    weight-cast cache off, and the warm-up count."""
    from models.nas.runtime import HOST_CUDA_LOCK

    seen = {}

    def fake(module, sample, num_warmup_iters, allow_unused_input):
        seen.update(module=module, sample=sample, iters=num_warmup_iters,
                    locked=HOST_CUDA_LOCK.locked(),
                    cache=torch.is_autocast_cache_enabled())  # fmt: skip
        return module

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake)
    net = Supernet("nasrec-full", TABLES, N_DENSE)
    g = GraphedSupernet(net, amp=False, warmup_iters=2)
    x = torch.ones(4, 3, requires_grad=True)
    y = torch.zeros(4, 2)
    g._capture(("k",), net.head, x, y)
    assert seen["module"] is net.head and seen["iters"] == 2 and seen["locked"]
    assert not seen["cache"]
    sx, sy = seen["sample"]
    assert sx is not x and torch.equal(sx, x) and sx.requires_grad and not sy.requires_grad
    assert g.captured() == 1 and not HOST_CUDA_LOCK.locked()


@cuda
def test_blocks_run_eagerly_without_gpu_memory_for_a_graph(monkeypatch):
    """Short of free GPU memory a block key is not captured: it runs eagerly (same result) and a
    warning says so once."""
    import models.nas.chain as chain_mod

    dev = torch.device("cuda")
    net = Supernet("nasrec-full", TABLES, N_DENSE, seed=0).to(dev)
    sub = sample_subnet("nasrec-full", 3)
    dense, sparse = (t.to(dev) for t in tiny_batch(16, 0))
    want = static_forward(net, dense, sparse, sub)
    g = GraphedSupernet(net, amp=False)
    monkeypatch.setattr(chain_mod, "room_for_graph", lambda device, need: (False, 0.5))
    with pytest.warns(UserWarning, match="run eagerly"):
        got = g(dense, sparse, sub)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert g.captured() == 0 and g.eager_blocks == len(sub.live_blocks())


def test_predict_runs_in_eval_mode_and_restores_the_mode(tiny_data):
    """A graphed model replays its graphs in training mode only (fixed batch size), so predict
    (validation batches of 4096) must call it in eval mode; the caller's mode comes back."""
    import numpy as np

    from models.data import open_split
    from models.nas.runtime import predict

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.modes = []

        def forward(self, dense, sparse):
            self.modes.append(self.training)
            return dense.sum(1)

    split = open_split(tiny_data, "val")
    probe = Probe().train()
    logits, labels = predict(probe, split, 64, torch.device("cpu"), None)
    assert probe.training and probe.modes and not any(probe.modes)
    assert len(logits) == len(labels) == len(split)
    np.testing.assert_allclose(logits, np.asarray(split.dense, np.float64).sum(1), rtol=1e-6)
    probe.eval()
    predict(probe, split, 64, torch.device("cpu"), 10)
    assert not probe.training


@cuda
def test_graphed_standalone_training_with_validation(tiny, tiny_data, tmp_path):
    """train_model with graphs on: validation (another batch size) runs eagerly."""
    from models.nas.space import save_subnet
    from models.nas.train import ModelConfig, train_model

    s = tmp_path / "s.json"
    save_subnet(sample_subnet("tiny", 2), s)
    res = train_model(ModelConfig(str(tiny_data), subnet=str(s), batch_size=64, max_steps=6,
                                  eval_every=3, graphs="on", device="cuda"),
                      tmp_path / "m", progress=False)  # fmt: skip
    assert 0 < res["logloss"] < 1 and res["per_seed"][0]["steps"] == 6
