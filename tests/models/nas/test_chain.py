"""Sampled subnets over shared node buffers (models/nas/chain.py), run eagerly on the CPU: the same
logits and gradients as the autograd static path (tested against the sliced path in
test_static.py); keys; buffers rewritten each step. CUDA-graph replays: test_graphs.py."""

from __future__ import annotations

import pytest
import torch

from models.nas.chain import BlockChain, live_prefix, outside, room_for_graph
from models.nas.space import SPACES, sample_subnet, subnet_from_dict
from models.nas.static import PARAM_LEAVES, static_forward
from models.nas.supernet import Supernet

from .conftest import N_DENSE, TABLES, TINY, tiny_batch
from .test_static import CLASSES, IDENT


@pytest.fixture
def spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in (TINY, IDENT, CLASSES):
        monkeypatch.setitem(SPACES, s.name, s)


def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in net.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out[name] = g.to_dense() if g.is_sparse else g.clone()
    net.zero_grad(set_to_none=True)
    return out


def _float64_net(space: str, seed: int) -> Supernet:
    torch.manual_seed(seed)
    net = Supernet(space, TABLES, N_DENSE, seed=seed).double()
    with torch.no_grad():  # non-trivial LayerNorm affine weights
        for name, p in net.named_parameters():
            if name.endswith(("ln.weight", "ln1.weight", "ln2.weight")):
                p.add_(0.3 * torch.randn_like(p))
    return net


@pytest.mark.parametrize(("space", "capped", "leaves"), [
    ("tiny", True, "on"), ("ident", True, "on"), ("classes", True, "on"),
    ("nasrec-small", True, "on"), ("tiny", False, "on"), ("classes", True, "off")])  # fmt: skip
def test_chain_equals_static_path(spaces, monkeypatch, space, capped, leaves):
    """Eight subnets in a row through one chain (keys met again reuse their blocks and buffers):
    logits to 1e-12 and every parameter's gradient to 1e-10 of the largest, in float64; with
    the parameters taken as leaves of their own (`StaticBlock.take`) and without."""
    monkeypatch.setitem(PARAM_LEAVES, "impl", leaves)
    net = _float64_net(space, 0)
    chain = BlockChain(net, capped=capped)
    for seed in range(8):
        sub = sample_subnet(space, seed)
        dense, sparse = tiny_batch(5, seed)
        dense = dense.double()
        want = static_forward(net, dense, sparse, sub, capped=capped)
        want.square().sum().backward()
        g_want = _grads(net)
        got = chain(dense, sparse, sub)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        got.square().sum().backward()
        g_got = _grads(net)
        scale = max(float(v.abs().max()) for v in g_want.values())
        for name in g_want:
            torch.testing.assert_close(g_got[name], g_want[name], rtol=1e-10, atol=1e-10 * scale,
                                       msg=name)  # fmt: skip
    assert chain.captured() == 0  # no graphs off CUDA


def _check_step(net, chain, dense, sparse, sub, grad_atol=1e-12):
    """One step of `sub` through `chain` equals the static path: logits to 1e-12, every
    parameter's gradient to 1e-10 relative + `grad_atol`."""
    want = static_forward(net, dense, sparse, sub)
    want.square().sum().backward()
    g_want = _grads(net)
    got = chain(dense, sparse, sub)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got.square().sum().backward()
    for name, g in _grads(net).items():
        torch.testing.assert_close(g, g_want[name], rtol=1e-10, atol=grad_atol, msg=name)


def test_stale_slot_and_pair_contents_are_zeroed(spaces):
    """Only what a step does not write is zeroed, as tracked on the host: block 1 wide, then
    narrow (its slot's stale columns and tokens zeroed, the sum of block 3 copying fewer columns
    of node 2 into its pair buffer), then dead (its slot cleared): each step equals the static
    path, and past block 1's classes its slot holds zeros."""
    net = _float64_net("classes", 2)
    chain = BlockChain(net)
    base = sample_subnet("classes", 0).to_dict()
    for b in base["blocks"]:
        b.update(dense_op="fc", sparse_op="efc", dense_inputs=[0], sparse_inputs=[0])
    base["blocks"][6].update(dense_inputs=[6, 4], sparse_inputs=[3, 6])
    steps = [(16, 4, 2), (2, 1, 2), (2, 1, 1)]  # block 1: width, tokens; the node blocks 2, 3 read
    for seed, (width, tokens, node) in enumerate(steps):
        d = {**base, "blocks": [dict(b) for b in base["blocks"]]}
        d["blocks"][1].update(dense_width=width, sparse_tokens=tokens)
        d["blocks"][2].update(dense_inputs=[node], sparse_inputs=[node])  # node 1: block 1 dead
        d["blocks"][3].update(dense_op="sum", dense_inputs=[node, 0])
        sub = subnet_from_dict(d)
        assert (1 in sub.live_blocks()) == (node == 2)
        dense, sparse = tiny_batch(4, seed)
        _check_step(net, chain, dense.double(), sparse, sub, grad_atol=1e-10)
        (bufs,) = chain._buffers.values()
        if node == 2:  # past its size classes (2 | 8 | 16 columns, 2 | 4 tokens)
            wc, tc = max(width, 2), max(tokens, 2)
            assert not bufs.nd[:, 2, wc:].any() and not bufs.ns[:, :, 2, tc:4].any()
        else:  # dead: all of it
            assert not bufs.nd[:, 2].any() and not bufs.ns[:, :, 2].any()


def test_chain_with_a_stem_wider_than_a_slot(spaces):
    """20 dense features and 14 tables in the tiny space (W 16, T + 8 = 12 tokens): the node
    buffers' slots take the stem's sizes; same results as the static path."""
    import numpy as np

    tables, n_dense = [5] * 14, 20
    net = Supernet("tiny", tables, n_dense, seed=0).double()
    chain = BlockChain(net)
    rng = np.random.default_rng(0)
    for seed in range(4):
        sub = sample_subnet("tiny", seed)
        dense = torch.from_numpy(rng.normal(size=(4, n_dense)))
        sparse = torch.from_numpy(rng.integers(0, 5, (4, 14)).astype(np.int32))
        _check_step(net, chain, dense, sparse, sub)


def test_every_slot_a_step_reads_is_rewritten(spaces):
    """Stale buffer contents cannot leak into a step: after poisoning every block slot and every
    gradient buffer with NaN, a subnet with dead blocks still gives the reference values (dead
    slots are zeroed, live ones written past their size classes too, gradients zeroed before
    the backward)."""
    net = _float64_net("tiny", 1)
    chain = BlockChain(net)
    dense, sparse = tiny_batch(4, 0)
    dense = dense.double()
    chain(dense, sparse, sample_subnet("tiny", 0)).sum().backward()
    net.zero_grad(set_to_none=True)
    (bufs,) = chain._buffers.values()
    for t in (bufs.nd[:, 1:], bufs.ns[:, :, 1:], bufs.gd, bufs.gs, bufs.gpair, *bufs.pairs):
        t.fill_(float("nan"))
    bufs.forget()  # the host's record of what was written no longer holds: all of it is dirty
    d = sample_subnet("tiny", 3).to_dict()
    d["blocks"][0].update(dense_op="fc", dense_inputs=[0], sparse_inputs=[0])
    for b in d["blocks"][1:]:  # blocks 1..5 read only the stem: block 0 is dead
        b.update(dense_op="fc", dense_inputs=[0], sparse_inputs=[0])
    d["blocks"][-1].update(dense_inputs=[0, 5], sparse_inputs=[5])
    sub = subnet_from_dict(d)
    assert 0 not in sub.live_blocks()
    want = static_forward(net, dense, sparse, sub)
    want.sum().backward()
    g_want = _grads(net)
    got = chain(dense, sparse, sub)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    for name, g in _grads(net).items():
        torch.testing.assert_close(g, g_want[name], rtol=1e-10, atol=1e-12, msg=name)


def test_keys_by_batch_size_and_size_classes(spaces):
    """A key is (block, ops, size classes, batch size): widths in one class share one; another
    class or batch size is another (at most one graph pair each on CUDA)."""
    net = Supernet("nasrec-full", TABLES, N_DENSE).train()
    chain = BlockChain(net)
    d = sample_subnet("nasrec-full", 3).to_dict()
    live = len(subnet_from_dict(d).live_blocks())
    seen = []
    for width, tokens, rows in ((256, 48, 4), (512, 64, 4), (1024, 64, 4), (16, 16, 4),
                                (16, 16, 6)):  # fmt: skip
        for b in d["blocks"]:
            b.update(dense_width=width, sparse_tokens=tokens)
        chain(*tiny_batch(rows, 0), subnet_from_dict(d))
        seen.append(len(chain.keys()))
    assert seen == [live, live, 2 * live, 3 * live, 4 * live]
    assert {k[3] for k in chain.keys()} == {(512, 64), (1024, 64), (128, 32)}
    # capped=False: one key per block and op pair whatever the sizes
    chain = BlockChain(net, capped=False)
    for width in (16, 1024):
        for b in d["blocks"]:
            b["dense_width"] = width
        chain(*tiny_batch(4, 0), subnet_from_dict(d))
    assert len(chain.keys()) == live and {k[3] for k in chain.keys()} == {None}


def test_parameters_of_unused_ops_get_no_gradient(spaces):
    """Only the ops a subnet runs get `.grad` (Adagrad then leaves the others alone), and a
    training step through the chain changes exactly those and the shared parts."""
    from models.nas.train import make_optimizer, train_step

    net = Supernet("tiny", TABLES, N_DENSE, seed=0)
    sub = sample_subnet("tiny", 2)
    chain = BlockChain(net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = make_optimizer(net, 0.05, 1e-2)
    dense, sparse = tiny_batch(8, 1)
    train_step(chain, opt, (dense, sparse, (dense[:, 0] > 0).float()), 0.05, 5.0, False,
               torch.device("cpu"), subnet=sub)  # fmt: skip
    used = set()
    for i in sub.live_blocks():
        b = sub.blocks[i]
        used |= {f"blocks.{i}.dense.{b.dense_op}.", f"blocks.{i}.sparse.{b.sparse_op}.",
                 f"blocks.{i}.d2s.", f"blocks.{i}.s2d"}  # fmt: skip
    for name, p in net.named_parameters():
        in_path = name.startswith(("embedding", "head")) or any(name.startswith(u) for u in used)
        if not in_path:
            assert p.grad is None and torch.equal(p, before[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in net.named_parameters() if "blocks" in n)


def test_room_for_graph_by_hand(monkeypatch):
    """Room for a capture: free memory (the device's plus PyTorch's cached, unused) of at least
    twice the largest capture plus a tenth of the device (stand-ins for the memory queries)."""
    dev = torch.device("cuda")
    assert room_for_graph(torch.device("cpu"), 10**15)[0]
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4 * 2**30)
    need = 2 * 2**30 + 8 * 2**30 // 10 - 2**30  # 2 x 1 GiB + 8 / 10 GiB, less 1 GiB cached
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (need, 8 * 2**30))
    ok, free_gib = room_for_graph(dev, 2**30)
    assert ok and free_gib == pytest.approx((need + 2**30) / 2**30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (need - 1, 8 * 2**30))
    assert not room_for_graph(dev, 2**30)[0]


def test_outside_a_slice_by_hand():
    """What `outside` returns for the indices `StaticBlock.take` makes: for t[:2, :3] of a 4 x 5
    tensor, rows 2..3 and then columns 3..4 of rows 0..1; nothing for the whole tensor."""
    t = torch.arange(20.0).view(4, 5)
    below, right = outside(t, (slice(2), slice(3)))
    assert torch.equal(below, t[2:]) and torch.equal(right, t[:2, 3:])
    (cols,) = outside(t, (slice(None), slice(3)))
    assert torch.equal(cols, t[:, 3:])
    (rows,) = outside(t[0], (slice(1),))
    assert torch.equal(rows, t[0, 1:])
    assert outside(t, ()) == [] and outside(t, (slice(4), slice(5))) == []


def test_live_prefix_by_hand():
    """A gradient buffer's live prefix for `take`'s indices: a weight's first 2 of 4 rows (3
    columns) are its first 6 elements, a bias's first 3 its first 3; a column slice, a 1-row
    column slice (a prefix again) and the whole buffer."""
    w, b = torch.zeros(4, 3), torch.zeros(4)
    assert live_prefix(w, (slice(2), slice(None))) == 6 and live_prefix(b, (slice(3),)) == 3
    assert live_prefix(w, (slice(None), slice(2))) is None
    assert live_prefix(w, (slice(1), slice(2))) == 2
    assert live_prefix(w, ()) is None and live_prefix(w, (slice(4), slice(3))) == 12


def test_published_gradients_are_zero_past_their_live_prefix(spaces):
    """After a sampled step through the chain, every gradient it publishes carries `live_numel`
    (None: whole) and is zero past it, and some are shorter than their parameter (what
    `optim.clip_and_step`'s narrowing saves)."""
    net = Supernet("tiny", TABLES, N_DENSE, seed=0)
    chain = BlockChain(net)
    dense, sparse = tiny_batch(8, 1)
    shorter = 0
    for seed in range(4):
        net.zero_grad(set_to_none=True)
        chain(dense, sparse, sample_subnet("tiny", seed)).sum().backward()
        for name, p in net.named_parameters():
            if p.grad is None or name.startswith(("embedding", "head")):
                continue
            n = p.grad.live_numel
            assert n is None or 0 < n <= p.numel(), name
            if n is not None:
                assert not p.grad.view(-1)[n:].any(), name
                shorter += n < p.numel()
    assert shorter > 0


def test_gradients_written_at_their_index_by_hand(spaces):
    """`_write_grads` over stale buffers: a bfloat16 gradient of p[:2] (p 4 x 3), a float32 one
    of q[:3] (q [4]) and one of r[:, :2] (r 2 x 5, a strided destination) land in the float32
    buffers at their index, with zeros everywhere else."""
    chain = BlockChain(Supernet("tiny", TABLES, N_DENSE, seed=0))
    p, q, r = (torch.nn.Parameter(torch.zeros(*shape)) for shape in ((4, 3), (4,), (2, 5)))
    for t in (p, q, r):
        chain._grad_buffer(t).fill_(7.0)
    g_r = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    chain._write_grads([
        (p, (slice(2), slice(None)), torch.full((2, 3), 1.5, dtype=torch.bfloat16)),
        (q, (slice(3),), torch.tensor([1.0, 2.0, 3.0])),
        (r, (slice(None), slice(2)), g_r)])  # fmt: skip
    want_p = torch.zeros(4, 3)
    want_p[:2] = 1.5
    assert torch.equal(chain._grads[id(p)], want_p)
    assert torch.equal(chain._grads[id(q)], torch.tensor([1.0, 2.0, 3.0, 0.0]))
    assert torch.equal(chain._grads[id(r)], torch.cat([g_r, torch.zeros(2, 3)], 1))


@pytest.mark.parametrize(("dense_op", "want"), [("fc", (True, True)), ("dot", (True, False)),
                                                ("sum", (False, True))])  # fmt: skip
def test_the_last_blocks_single_products_write_the_gradient_buffers(spaces, dense_op, want):
    """`BlockChain.overwrites`: the last block's one product into a gradient buffer writes it
    (fc: dense and sparse; Dot-Product: dense only, its token projection and the sparse op both
    write the sparse one; a binary op: sparse only, it has no product over the dense nodes);
    an earlier block's add into them."""
    from models.nas.static import StaticBlock

    net = Supernet("tiny", TABLES, N_DENSE, seed=0)
    chain = BlockChain(net)
    last = chain.layout.n_blocks - 1
    blk = StaticBlock(net.blocks[last], last, dense_op, "efc", chain.layout)
    assert chain.overwrites(blk) == want
    early = StaticBlock(net.blocks[0], 0, dense_op, "efc", chain.layout)
    assert chain.overwrites(early) == (False, False)
