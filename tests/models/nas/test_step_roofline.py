"""benchmarks/step_roofline.py: its counts against hand-computed bytes and FLOPs (exact)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def r(bench_module):
    return bench_module("step_roofline")


def test_matmul_flops_by_hand(r):
    a, b = torch.empty(8, 32, device="meta"), torch.empty(32, 16, device="meta")
    out = torch.empty(8, 16, device="meta")
    assert r.matmul_flops("mm", (a, b), out) == 2 * 8 * 32 * 16  # 8192
    assert r.matmul_flops("addmm", (torch.empty(16, device="meta"), a, b), out) == 8192
    q = torch.empty(4, 8, 2, device="meta")
    assert r.matmul_flops("bmm", (q, torch.empty(4, 2, 8, device="meta")),
                          torch.empty(4, 8, 8, device="meta")) == 2 * 4 * 8 * 8 * 2  # fmt: skip
    assert r.matmul_flops("add", (a, a), a) == 0


def test_counter_bytes_kernels_and_free_views(r):
    x = torch.empty(1024, 256, dtype=torch.bfloat16, device="meta")
    c = r.OpCounter()
    with c:
        y = x + x  # reads x twice, writes y: 3 x 1024 x 256 x 2 bytes
        y.t().unsqueeze(0)  # views: no kernel, no bytes
        torch.mm(x.t(), x)  # [256, 1024] @ [1024, 256]
    assert c.rows[("forward", "add")] == [1, 3 * 1024 * 256 * 2, 0]
    assert {name for _, name in c.rows} == {"add", "mm"}
    k, nbytes, flops = c.rows[("forward", "mm")]
    assert (k, flops) == (1, 2 * 256 * 1024 * 256)
    assert nbytes == 2 * (1024 * 256 * 2) + 256 * 256 * 2


def test_fused_region_is_one_kernel_each_way(r):
    c = r.OpCounter()
    a = torch.empty(64, 16, device="meta", requires_grad=True)
    with c:
        out = r._Fused.apply(c, "sq", lambda t: (t * t).sum(-1), a)  # [64, 16] -> [64], fp32
        c.phase = "backward"
        out.sum().backward()
    assert c.rows[("forward", "sq")] == [1, 64 * 16 * 4 + 64 * 4, 0]
    # backward: input, output, output gradient, input gradient
    assert c.rows[("backward", "sq_backward")] == [1, 2 * 64 * 16 * 4 + 2 * 64 * 4, 0]
    assert ("forward", "mul") not in c.rows  # the region's own ops are not counted again


def test_static_path_bound_exceeds_the_sliced_one(r, capsys):
    """The whole benchmark on a small batch: the static path (maximum shapes) moves more bytes
    than the sliced one for the same subnets, and the patched kernels are restored."""
    from models.nas import kernels, ops, static

    before = (kernels.fused_attention, ops.attend, kernels.token_layer_norm, static._masked_ln)
    bounds = {}
    for path in ("static", "sliced"):
        assert r.main(["--batch-size", "64", "--paths", "2", "--path", path]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("step "))
        bounds[path] = float(line.split()[3])  # GB per step
    assert bounds["static"] > bounds["sliced"] > 0
    assert (kernels.fused_attention, ops.attend, kernels.token_layer_norm,
            static._masked_ln) == before  # fmt: skip
