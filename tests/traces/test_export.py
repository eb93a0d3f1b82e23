"""Export of the PyTorch baselines: FLOPs by hand and against FlopCounterMode, index streams
from the batch, the builder/exporter agreement, the registry for new modules, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.baselines import DCNv2, DeepFM, build_baseline  # noqa: E402
from pimrec.errors import PimrecError  # noqa: E402
from traces import read_trace, write_trace  # noqa: E402
from traces.builder import build_dlrm  # noqa: E402
from traces.export import (  # noqa: E402
    export_trace,
    flop_cross_check,
    register_module,
    torch_flop_count,
)

SIZES = [100, 50, 20, 7, 3]
B, N_DENSE, D = 8, 13, 16


def _batch(sizes=SIZES, batch=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(batch, N_DENSE, generator=g)
    sparse = torch.stack([torch.randint(0, s, (batch,), generator=g) for s in sizes], 1)
    return dense, sparse


def _hand_macs(name: str, f: int = len(SIZES)) -> int:
    """Matrix-product MACs per sample of each baseline with its default hyper-parameters."""
    if name == "dlrm":
        t = f + 1
        return (
            (13 * 512 + 512 * 256 + 256 * D)
            + t * t * D
            + ((D + t * (t - 1) // 2) * 512 + 512 * 256 + 256)
        )
    w = N_DENSE + f * D
    if name == "deepfm":
        return 13 + w * 400 + 2 * 400 * 400 + 400
    if name == "dcnv2":
        return 3 * w * w + w * 400 + 2 * 400 * 400 + (w + 400)
    raise ValueError(name)


def _hand_elementwise(name: str, f: int = len(SIZES)) -> int:
    """Elementwise FLOPs per sample (pooling 1: no pooling adds)."""
    w = N_DENSE + f * D
    if name == "dlrm":
        return 512 + 256 + D + 512 + 256  # ReLUs
    if name == "deepfm":
        # ReLUs 3 x 400; FM 3*F*D + D; first-order bag: F - 1 adds; 3 logit adds.
        return 3 * 400 + 3 * f * D + D + (f - 1) + 3
    if name == "dcnv2":
        return 3 * 400 + 3 * (w + w)  # ReLUs; per cross layer one mul and one add per element
    raise ValueError(name)


@pytest.mark.parametrize("name", ["dlrm", "deepfm", "dcnv2"])
def test_export_flops_by_hand_and_flop_counter(name):
    torch.manual_seed(0)
    model = build_baseline(name, SIZES, N_DENSE)
    inputs = _batch()
    trace = export_trace(model, inputs, name=name)
    assert trace.totals()["macs"] == B * _hand_macs(name)
    assert trace.totals()["flops"] == B * (2 * _hand_macs(name) + _hand_elementwise(name))
    check = flop_cross_check(trace, torch_flop_count(model, inputs))
    # FlopCounterMode counts the matrix products only; the trace's 2*MACs equal it exactly.
    assert check["relative_difference"] <= 0.01
    assert check["trace_matmul_flops"] == check["torch_flop_counter_flops"]
    assert trace.metadata["export"]["untraced_functions"] == []
    assert model(*inputs).shape == (B,)


@pytest.mark.parametrize("name", ["dlrm", "deepfm", "dcnv2"])
def test_index_streams_come_from_the_batch(name, tmp_path):
    model = build_baseline(name, SIZES, N_DENSE)
    dense, sparse = _batch()
    trace = export_trace(model, (dense, sparse), name=name)
    for f in range(len(SIZES)):
        op = trace.op(f"embeddings.tables.{f}")
        assert op.params["rows"] == SIZES[f] and op.params["pooling"] == 1
        np.testing.assert_array_equal(op.indices, sparse[:, f].numpy())
        assert op.offsets.tolist() == list(range(B + 1))
    write_trace(trace, tmp_path / "t.json")
    assert read_trace(tmp_path / "t.json") == trace


def test_deepfm_first_order_bag_uses_field_offsets():
    model = DeepFM(SIZES, N_DENSE)
    dense, sparse = _batch()
    op = export_trace(model, (dense, sparse), name="deepfm").op("sparse_linear")
    assert op.params["rows"] == sum(SIZES) and op.params["dim"] == 1
    assert op.params["pooling"] == len(SIZES)
    offsets = np.cumsum([0, *SIZES[:-1]])
    np.testing.assert_array_equal(op.indices.reshape(B, -1), sparse.numpy() + offsets)


def test_builder_and_exporter_agree_on_dlrm():
    """The model-free builder emits the exporter's ops: same ids, kinds, params and inputs."""
    model = build_baseline("dlrm", SIZES, N_DENSE)
    exported = export_trace(model, _batch(), name="dlrm")
    built = build_dlrm(SIZES, batch_size=B, n_dense=N_DENSE, with_indices=False)
    strip = [(o.id, o.kind, dict(o.params), o.inputs, o.flops, o.bytes_read) for o in built.ops]
    assert strip == [
        (o.id, o.kind, dict(o.params), o.inputs, o.flops, o.bytes_read) for o in exported.ops
    ]
    assert built.tables == exported.tables


def test_multi_hot_embedding_bag():
    model = build_baseline("dlrm", SIZES, N_DENSE, top_mlp=(32,), bottom_mlp=(32,))
    g = torch.Generator().manual_seed(1)
    sparse = torch.stack([torch.randint(0, s, (B, 3), generator=g) for s in SIZES], 1)
    trace = export_trace(model, (torch.rand(B, N_DENSE), sparse), name="dlrm")
    op = trace.op("embeddings.tables.2")
    assert op.params["pooling"] == 3 and op.index_stream.nnz == 3 * B
    assert op.flops == (3 * B - B) * D  # pooling adds
    np.testing.assert_array_equal(op.indices, sparse[:, 2].reshape(-1).numpy())


def test_dcnv2_cross_layer_ops():
    model = DCNv2(SIZES, N_DENSE, cross_layers=2, dnn=(32,))
    trace = export_trace(model, _batch(), name="dcnv2")
    w = N_DENSE + len(SIZES) * D
    assert trace.op("cross.1.linear").params == {
        "m": B,
        "k": w,
        "n": w,
        "bias": True,
        "static": True,
    }
    assert trace.op("cross.1.mul").inputs == ("concat_1", "cross.1.linear")
    assert trace.op("cross.1.sum").inputs == ("cross.1.mul", "cross.0.sum")


def test_registry_for_new_modules_and_glue():
    """A new operator registers a handler; glue code (sigmoid, *) is recorded; unknown functions
    pass producers through and are listed."""

    class Gate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, left, right):
            return torch.sigmoid(self.proj(left)) * right

    def gate_handler(ctx, m, inputs, output):
        left, right = inputs
        fc = ctx.add(
            "fc",
            {"m": left.shape[0], "k": 4, "n": 4, "bias": True, "static": True},
            ctx.producers(left),
            suffix="proj",
        )
        return ctx.add("gating", {"rows": left.shape[0], "width": 4}, (fc, *ctx.producers(right)))

    register_module(Gate, gate_handler)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 4)
            self.b = torch.nn.Linear(3, 4)
            self.gate = Gate()
            self.norm = torch.nn.LayerNorm(4)

        def forward(self, x):
            y = self.gate(self.a(x), self.b(x))
            z = torch.sigmoid(y) * y
            return self.norm(torch.cumsum(z, dim=1))

    trace = export_trace(Net(), (torch.rand(5, 3),), name="net")
    kinds = [(op.id, op.kind, op.inputs) for op in trace.ops]
    assert kinds == [
        ("a", "fc", ()),
        ("b", "fc", ()),
        ("gate.proj", "fc", ("a",)),
        ("gate", "gating", ("gate.proj", "b")),
        ("activation_0", "activation", ("gate",)),
        ("mul_0", "mul", ("activation_0", "gate")),
        ("norm", "layernorm", ("mul_0",)),
    ]
    assert trace.metadata["export"]["untraced_functions"] == ["cumsum"]


def test_unknown_baseline():
    with pytest.raises(PimrecError, match="unknown baseline 'xdeepfm'"):
        build_baseline("xdeepfm", SIZES, N_DENSE)


def test_cli_export_synthetic(cli, tmp_path):
    out = tmp_path / "d.json"
    r = cli(
        "trace",
        "export",
        "--model",
        "dcnv2",
        "--tables",
        "40,30,20",
        "--batch",
        "4",
        "--index",
        "zipf:1.1",
        "-o",
        out,
    )
    assert r.status == 0, r.err
    assert "relative difference 0.00e+00" in r.out
    trace = read_trace(out)
    assert trace.metadata["export"]["flop_cross_check"]["relative_difference"] == 0
    assert trace.metadata["batch_source"]["data"] == "synthetic"


def test_cli_export_real_criteo_rows(cli, tmp_path, shared_data):
    data = shared_data / "criteo" / "criteo_kaggle_train_head10k.tsv"
    out = tmp_path / "dlrm.json"
    r = cli(
        "trace",
        "export",
        "--model",
        "dlrm",
        "--tables",
        "criteo-sample",
        "--batch",
        "32",
        "--data",
        data,
        "-o",
        out,
    )
    assert r.status == 0, r.err
    trace = read_trace(out)
    assert trace.batch_size == 32 and len(trace.tables) == 26
    assert trace.totals()["macs"] == 32 * (141_824 + 11_664 + 319_232)
    # Row 0 is the missing value; the first rows of train.txt leave some C fields empty.
    assert any((op.indices == 0).any() for op in trace.ops if op.kind == "embedding_bag")


def test_cli_export_bad_data(cli, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\t3\n")
    out = tmp_path / "x.json"
    r = cli(
        "trace",
        "export",
        "--model",
        "dlrm",
        "--tables",
        "criteo-sample",
        "--batch",
        "2",
        "--data",
        bad,
        "-o",
        out,
    )
    assert r.status == 2 and "line 1 has 3 columns" in r.err and not out.exists()


def test_glue_matmul_and_attention_match_flop_counter():
    """Functional matrix products between modules become fc / attention ops whose FLOPs equal
    FlopCounterMode's (bmm, mm, F.linear, scaled dot-product attention)."""
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q = torch.nn.Linear(16, 16)
            self.w = torch.nn.Parameter(torch.rand(16, 8))

        def forward(self, x):  # x: [B, T, 16]
            q = self.q(x)
            heads = q.view(q.shape[0], q.shape[1], 4, 4).transpose(1, 2)
            att = F.scaled_dot_product_attention(heads, heads, heads)
            y = att.transpose(1, 2).reshape(x.shape)
            g = torch.bmm(y, y.transpose(1, 2))  # [B, T, T]
            return F.linear(g.flatten(1), torch.ones(3, 36)) + (y.flatten(0, 1) @ self.w).sum()

    model, x = Net(), torch.rand(2, 6, 16)
    trace = export_trace(model, (x,), name="glue")
    kinds = [(op.kind, op.params.get("static")) for op in trace.ops]
    assert kinds == [
        ("fc", True),
        ("attention", None),
        ("fc", False),
        ("fc", True),
        ("fc", True),
        ("sum", None),
    ]
    att = trace.ops[1].params
    assert att == {"batch": 2, "tokens": 6, "width": 16, "heads": 4}
    check = flop_cross_check(trace, torch_flop_count(model, (x,)))
    # torch 2.13 CPU: FlopCounterMode counts nothing for F.scaled_dot_product_attention (its CPU
    # flash kernel has no flop formula), so the attention op (2*2*2*6*6*16 = 4608) is the gap.
    assert trace.ops[1].macs * 2 == 4608
    assert check["trace_matmul_flops"] - 4608 == check["torch_flop_counter_flops"]
    assert set(check["torch_by_op"]) == {"addmm", "bmm", "mm"}


def test_glue_sub_and_div_are_elementwise_ops():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 4)

        def forward(self, x):
            y = self.a(x)
            return (y - 1.0) / 2.0

    trace = export_trace(Net(), (torch.rand(5, 3),), name="net")
    assert [(op.id, op.kind, op.inputs, op.flops) for op in trace.ops] == [
        ("a", "fc", (), 2 * 5 * 3 * 4),
        ("sum_0", "sum", ("a",), 20),
        ("mul_0", "mul", ("sum_0",), 20),
    ]
