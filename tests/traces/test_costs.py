"""Every op kind's cost function against hand-computed numbers (exact integers)."""

from __future__ import annotations

import pytest

from traces.costs import COST_FUNCTIONS, PARAMS, op_cost

# (kind, params, dtype_bits, nnz) -> (flops, macs, bytes_read, bytes_written, weight_bytes, static)
CASES = [
    # 4 x 3 @ 3 x 5 + bias, fp32: 60 MACs; read (12 + 15 + 5) * 4; write 20 * 4; weights 20 * 4.
    ("fc", {"m": 4, "k": 3, "n": 5, "bias": True, "static": True}, 32, None,
     (120, 60, 128, 80, 80, True)),
    # dynamic fc (activation x activation): no resident weights.
    ("fc", {"m": 2, "k": 8, "n": 2, "bias": False, "static": False}, 16, None,
     (64, 32, 64, 8, 0, False)),
    # efc: batch 2, 6 -> 4 tokens, dim 16: 2*4*6*16 = 768 MACs; weights 24 + 4.
    ("efc", {"batch": 2, "tokens_in": 6, "tokens_out": 4, "dim": 16, "bias": True}, 32, None,
     (1536, 768, (192 + 28) * 4, 128 * 4, 28 * 4, True)),
    # 27 tokens of 16: full Gram 27*27*16 = 11664 MACs / sample, 351 pairs out.
    ("dot_interaction", {"batch": 1, "tokens": 27, "dim": 16, "self_interaction": False,
                         "full_gram": True}, 32, None, (23328, 11664, 27 * 16 * 4, 351 * 4, 0, False)),
    ("dot_interaction", {"batch": 2, "tokens": 4, "dim": 3, "self_interaction": True,
                         "full_gram": False}, 32, None, (120, 60, 96, 80, 0, False)),
    # FM: 3 * F * D + D per sample = 3*26*16 + 16 = 1264.
    ("fm", {"batch": 2, "fields": 26, "dim": 16}, 32, None, (2528, 0, 2 * 26 * 16 * 4, 8, 0, False)),
    # attention core: 2 * B * T^2 * W MACs = 2*2*16*16 = 1024... with W = 16: 2*2*4*4*16 = 1024;
    # softmax 5 * B * h * T^2 = 5*2*8*16 = 1280.
    ("attention", {"batch": 2, "tokens": 4, "width": 16, "heads": 8}, 32, None,
     (2 * 1024 + 1280, 1024, 3 * 2 * 4 * 16 * 4, 2 * 4 * 16 * 4, 0, False)),
    ("gating", {"rows": 3, "width": 10}, 32, None, (150, 0, 240, 120, 0, False)),
    ("sum", {"rows": 3, "width": 10, "n_inputs": 3}, 32, None, (60, 0, 360, 120, 0, False)),
    ("mul", {"rows": 3, "width": 10, "n_inputs": 2}, 8, None, (30, 0, 60, 30, 0, False)),
    ("concat", {"rows": 3, "width": 10, "n_inputs": 4}, 32, None, (0, 0, 120, 120, 0, False)),
    ("layernorm", {"rows": 4, "width": 8, "affine": True}, 32, None,
     (7 * 32, 0, (32 + 16) * 4, 128, 64, True)),
    ("layernorm", {"rows": 4, "width": 8, "affine": False}, 32, None, (160, 0, 128, 128, 0, False)),
    ("activation", {"rows": 2, "width": 5, "function": "relu"}, 32, None, (10, 0, 40, 40, 0, False)),
    ("activation", {"rows": 2, "width": 5, "function": "sigmoid"}, 4, None,
     (40, 0, 5, 5, 0, False)),
    # embedding: batch 4 x pooling 3, dim 16, rows 100, int32 indices:
    # adds (12 - 4) * 16 = 128; read 12*16*4 + 12*4 + 5*8 = 856; write 4*16*4; table 100*16*4.
    ("embedding_bag", {"table": 0, "rows": 100, "dim": 16, "batch": 4, "pooling": 3,
                       "mode": "sum", "index_bits": 32}, 32, None, (128, 0, 856, 256, 6400, True)),
    # with a stream of nnz = 10 and mean pooling: (10 - 4) * 16 + 4 * 16 = 160.
    ("embedding_bag", {"table": 0, "rows": 100, "dim": 16, "batch": 4, "pooling": 3,
                       "mode": "mean", "index_bits": 64}, 32, 10,
     (160, 0, 10 * 64 + 80 + 40, 256, 6400, True)),
]  # fmt: skip


@pytest.mark.parametrize("kind, params, bits, nnz, expected", CASES)
def test_cost_by_hand(kind, params, bits, nnz, expected):
    c = op_cost(kind, params, bits, nnz)
    got = (c.flops, c.macs, c.bytes_read, c.bytes_written, c.weight_bytes, c.static_weights)
    assert got == expected


def test_every_kind_has_a_hand_case_and_one_function():
    assert set(COST_FUNCTIONS) == set(PARAMS)
    assert {k for k, *_ in CASES} == set(PARAMS)
    required = {
        "embedding_bag",
        "fc",
        "efc",
        "dot_interaction",
        "fm",
        "attention",
        "gating",
        "sum",
        "concat",
        "layernorm",
        "activation",
    }
    assert required <= set(PARAMS)


def test_flops_are_two_per_mac_plus_elementwise():
    for kind, params, bits, nnz, _ in CASES:
        c = op_cost(kind, params, bits, nnz)
        assert c.flops >= 2 * c.macs


def test_reader_builder_and_cli_never_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, traces, traces.io, traces.costs, traces.builder, traces.indices, "
        "traces.cli, argparse; traces.cli.register(argparse.ArgumentParser().add_subparsers()); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
