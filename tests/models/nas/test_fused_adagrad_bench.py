"""benchmarks/fused_adagrad.py's table cases on the CPU: (d) runs the dense table gradient's step,
(e) the row update (no .grad, nothing left pending), both timed."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from models.nas.optim import AutoSparseEmbedding, make_optimizer, pending_rows


def test_table_cases_run_the_dense_and_the_row_step(bench_module):
    b = bench_module("fused_adagrad")
    emb = AutoSparseEmbedding(20, 4, sparse_grad=False)
    lin = nn.Linear(4, 1)
    lin.weight.grad, lin.bias.grad = torch.ones(1, 4), torch.ones(1)
    params = [emb.weight, lin.weight, lin.bias]
    opt = make_optimizer(params, 0.1, 1e-2)
    before = emb.weight.detach().clone()
    idx = torch.tensor([0, 3, 3, 7])
    args = argparse.Namespace(seed=0, steps=2, repeats=1)
    rows = b.table_rows(args, emb.weight, idx, params, opt)
    assert [r[0][:3] for r in rows] == ["(d)", "(e)"] and all(r[1] > 0 for r in rows)
    assert emb.weight.grad is None and pending_rows(emb.weight) is None
    moved = (emb.weight.detach() != before).any(1)
    assert moved.tolist() == [i in (0, 3, 7) for i in range(20)]
