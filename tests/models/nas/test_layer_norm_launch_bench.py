"""benchmarks/layer_norm_launch.py: the launches it tries and the bytes it divides by, by hand;
without a GPU it says so."""

from __future__ import annotations

import pytest
import torch


def test_backward_launches_by_hand(bench_module):
    b = bench_module("layer_norm_launch")
    defaults = [(None, None, True), (None, None, False)]
    # rows of 16: 4-16 elements per thread on 1, 2, 4 or 8 warps
    assert b.backward_launches(16) == defaults + [
        (w, r, True) for w, r in ((1, 8), (1, 16), (1, 32), (2, 16), (2, 32), (2, 64),
                                    (4, 32), (4, 64), (8, 64))]  # fmt: skip
    # rows of 1024: (2, 1) is 16 per thread, (16, 2) is 4
    assert b.backward_launches(1024) == defaults + [
        (w, r, True) for w, r in ((2, 1), (4, 1), (4, 2), (8, 1), (8, 2), (8, 4), (16, 2),
                                    (16, 4), (16, 8))]  # fmt: skip
    assert b.backward_launches(13) == b.backward_launches(16)  # padded to 16


def test_part_sum_launches(bench_module):
    # the default first, then the others without it
    launches = bench_module("layer_norm_launch").part_sum_launches((4, 512))
    assert launches[0] == (4, 512) and launches.count((4, 512)) == 1
    assert (32, 128) in launches and len(launches) == 7


def test_backward_bytes_by_hand(bench_module):
    # [8192, 1024] bf16: x, dy and dx, 16 MiB each
    assert bench_module("layer_norm_launch").backward_bytes(8192, 1024) == 3 * 8192 * 1024 * 2


def test_without_a_gpu(bench_module, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    bench_module("layer_norm_launch").main([])
    assert capsys.readouterr().out.strip() == "no CUDA"
