"""CUDA-graph replay of sampled subnets (models/nas/graphs.py) equals the eager static path
(runs where CUDA is available; the static path itself is tested on the CPU in test_static.py)."""

from __future__ import annotations

import copy

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


@cuda
@pytest.mark.parametrize("capped", [True, False])
@pytest.mark.parametrize("amp", [False, True])
def test_graph_replay_equals_eager_static_path(amp, capped):
    dev = torch.device("cuda")
    net = Supernet("nasrec-full", TABLES, N_DENSE, seed=0).to(dev)
    ref = copy.deepcopy(net)
    graphed = GraphedSupernet(net, amp=amp, capped=capped)
    # 8 subnets: blocks meet the same op pair again with other masks (replays, not captures)
    subs = [sample_subnet("nasrec-full", s) for s in range(8)]
    tol = {"rtol": 2e-2, "atol": 2e-2} if amp else {"rtol": 1e-5, "atol": 1e-5}
    for k, sub in enumerate(subs):
        dense, sparse = (t.to(dev) for t in tiny_batch(64, k))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = graphed(dense, sparse, sub)
            want = static_forward(ref, dense, sparse, sub, capped=capped)
        torch.testing.assert_close(out, want, **tol)
        out.square().mean().backward()
        want.square().mean().backward()
        for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
            if q.grad is None:
                assert p.grad is None or not p.grad.any(), name
            else:
                torch.testing.assert_close(p.grad, q.grad, **tol, msg=name)
        net.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)
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
    # a block's capture: every input after the mask requires grad (detached nodes included)
    mask = torch.ones(3)
    g._capture(("b",), net.head, mask, x, y, every_grad=True)
    sm, sx, sy = seen["sample"]
    assert not sm.requires_grad and sx.requires_grad and sy.requires_grad


def test_block_graphs_are_keyed_by_batch_size(monkeypatch):
    """A graph replays one batch size: another size is another capture, not a failed copy into
    the first one's static inputs (checked with a stand-in capture, so it runs anywhere)."""
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda module, sample, **kw: module)
    net = Supernet("nasrec-full", TABLES, N_DENSE).train()
    g = GraphedSupernet(net, amp=False)
    sub = sample_subnet("nasrec-full", 3)
    for rows in (4, 4, 6):
        static_forward(net, *tiny_batch(rows, 0), sub, run_block=g._run_block)
    assert g.captured() == 2 * len(sub.live_blocks())


def test_block_graphs_are_keyed_by_size_classes(monkeypatch):
    """Widths in one size class share a graph; another class is another capture (stand-in
    capture, so it runs anywhere)."""
    from models.nas.space import subnet_from_dict

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda module, sample, **kw: module)
    net = Supernet("nasrec-full", TABLES, N_DENSE).train()
    g = GraphedSupernet(net, amp=False)
    d = sample_subnet("nasrec-full", 3).to_dict()
    live = len(subnet_from_dict(d).live_blocks())
    seen = []
    for width, tokens in ((256, 48), (512, 64), (1024, 64), (16, 16)):  # classes 512/64 twice
        for b in d["blocks"]:
            b.update(dense_width=width, sparse_tokens=tokens)
        static_forward(net, *tiny_batch(4, 0), subnet_from_dict(d), run_block=g._run_block)
        seen.append(g.captured())
    assert seen == [live, live, 2 * live, 3 * live]
    assert {k[3] for k in g._blocks} == {(512, 64), (1024, 64), (128, 32)}
    # capped=False: one graph per block and op pair whatever the sizes
    g = GraphedSupernet(net, amp=False, capped=False)
    for width in (16, 1024):
        for b in d["blocks"]:
            b["dense_width"] = width
        static_forward(net, *tiny_batch(4, 0), subnet_from_dict(d), run_block=g._run_block)
    assert g.captured() == live and {k[3] for k in g._blocks} == {None}


def test_blocks_run_eagerly_without_gpu_memory_for_a_graph(monkeypatch):
    """Short of free GPU memory a block runs eagerly (same result, nothing kept) and a warning
    says so once; the room test by hand (stand-ins for the capture and the memory query)."""
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda module, sample, **kw: module)
    net = Supernet("nasrec-full", TABLES, N_DENSE).train()
    g = GraphedSupernet(net, amp=False)
    sub = sample_subnet("nasrec-full", 3)
    batch = tiny_batch(4, 0)
    want = static_forward(net, *batch, sub)
    monkeypatch.setattr(g, "_room_for_graph", lambda device: False)
    got = static_forward(net, *batch, sub, run_block=g._run_block)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert g.captured() == 0 and g.eager_blocks == len(sub.live_blocks())
    monkeypatch.undo()
    g = GraphedSupernet(net, amp=False)
    cuda_dev = torch.device("cuda")
    assert g._room_for_graph(torch.device("cpu"))
    g.graph_bytes = 2**30  # needs 2 x 1 GiB + 8 / 10 GiB: 2.8 GiB free + 1 GiB cached, unused
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4 * 2**30)
    need = 2 * 2**30 + 8 * 2**30 // 10 - 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (need, 8 * 2**30))
    assert g._room_for_graph(cuda_dev)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (need - 1, 8 * 2**30))
    with pytest.warns(UserWarning, match="run eagerly"):
        assert not g._room_for_graph(cuda_dev)


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
