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
@pytest.mark.parametrize("amp", [False, True])
def test_graph_replay_equals_eager_static_path(amp):
    dev = torch.device("cuda")
    net = Supernet("nasrec-full", TABLES, N_DENSE, seed=0).to(dev)
    ref = copy.deepcopy(net)
    graphed = GraphedSupernet(net, amp=amp)
    # 8 subnets: blocks meet the same op pair again with other masks (replays, not captures)
    subs = [sample_subnet("nasrec-full", s) for s in range(8)]
    tol = {"rtol": 2e-2, "atol": 2e-2} if amp else {"rtol": 1e-5, "atol": 1e-5}
    for k, sub in enumerate(subs):
        dense, sparse = (t.to(dev) for t in tiny_batch(64, k))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = graphed(dense, sparse, sub)
            want = static_forward(ref, dense, sparse, sub)
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
