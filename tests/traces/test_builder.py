"""The model-free DLRM builder: Criteo shapes and FLOPs by hand, index streams, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from traces import read_trace
from traces.builder import CRITEO_TABLE_SIZES, build_dlrm, parse_tables

# DLRM on Criteo, per sample (embedding_dim 16, bottom 13-512-256-16, top 367-512-256-1):
# bottom 13*512 + 512*256 + 256*16 = 141,824 MACs; dot interaction of 27 tokens (full Gram)
# 27*27*16 = 11,664; top (16 + 351)*512 + 512*256 + 256 = 319,232. Total 472,720 MACs.
DLRM_CRITEO_MACS_PER_SAMPLE = 141_824 + 11_664 + 319_232
# Elementwise: ReLUs 512 + 256 + 16 + 512 + 256 = 1,552; pooling adds 26 * 16 * (P - 1).
DLRM_RELU_FLOPS_PER_SAMPLE = 1_552


def test_criteo_table_sizes_match_readme():
    assert len(CRITEO_TABLE_SIZES) == 26
    assert sum(CRITEO_TABLE_SIZES) == 33_762_601  # "about 33.8M rows in all"


@pytest.mark.parametrize("batch, pooling", [(1, 1), (64, 1), (32, 100)])
def test_dlrm_criteo_flops_by_hand(batch, pooling):
    t = build_dlrm(CRITEO_TABLE_SIZES, batch_size=batch, pooling=pooling, with_indices=False)
    tot = t.totals()
    assert tot["macs"] == batch * DLRM_CRITEO_MACS_PER_SAMPLE
    pool_adds = 26 * 16 * (pooling - 1)
    assert tot["flops"] == batch * (
        2 * DLRM_CRITEO_MACS_PER_SAMPLE + DLRM_RELU_FLOPS_PER_SAMPLE + pool_adds
    )
    # Embedding weights appear as table metadata only: 33.76M rows x 16 x 4 bytes.
    emb = [op for op in t.ops if op.kind == "embedding_bag"]
    assert sum(op.weight_bytes for op in emb) == 33_762_601 * 64
    assert all(op.static_weights for op in t.ops if op.kind in ("fc", "embedding_bag"))
    assert [tb.rows for tb in t.tables] == list(CRITEO_TABLE_SIZES)


def test_dlrm_ops_in_order_with_inputs():
    t = build_dlrm([10, 20, 30], batch_size=4)
    ids = [op.id for op in t.ops]
    assert ids[:6] == [f"bottom_mlp.{i}" for i in range(6)]
    assert t.op("interaction").inputs == ("concat_1",)
    assert t.op("interaction").params["tokens"] == 4
    assert t.op("concat_1").inputs == ("bottom_mlp.5", "concat_0")
    assert t.op("top_mlp.0").params["k"] == 16 + 6
    assert ids[-1] == "top_mlp.4" and t.op("top_mlp.4").params["n"] == 1


def test_index_streams_are_seeded_csr():
    a = build_dlrm([1000, 7], batch_size=8, pooling=3, index="zipf:1.05", seed=5)
    b = build_dlrm([1000, 7], batch_size=8, pooling=3, index="zipf:1.05", seed=5)
    c = build_dlrm([1000, 7], batch_size=8, pooling=3, index="zipf:1.05", seed=6)
    emb = a.op("embeddings.tables.0")
    assert emb.offsets.tolist() == list(range(0, 25, 3))
    assert emb.indices.dtype == np.int32 and len(emb.indices) == 24
    assert a.ops == b.ops
    assert a.ops != c.ops


def test_parse_tables():
    assert parse_tables("criteo") == (list(CRITEO_TABLE_SIZES), 13)
    assert parse_tables("kdd12")[1] == 3
    assert parse_tables("5,6") == ([5, 6], None)


def test_cli_build_show_validate(cli, tmp_path):
    out = tmp_path / "t.json"
    r = cli(
        "trace",
        "build",
        "dlrm",
        "--tables",
        "criteo",
        "--batch",
        "16",
        "--pooling",
        "4",
        "--index",
        "zipf:1.05",
        "-o",
        out,
    )
    assert r.status == 0, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.arrays.bin", "t.json"]
    header = json.loads(out.read_text())
    assert header["schema"] == "pimrec.trace/1"
    assert header["metadata"]["builder"]["index"] == "zipf:1.05"
    r = cli("trace", "validate", out)
    assert r.status == 0 and r.out.startswith("ok: ")
    assert "1664 indices" in r.out  # 26 tables x 16 samples x pooling 4
    r = cli("trace", "show", out, "-o", tmp_path / "show.json")
    assert r.status == 0
    lines = r.out.splitlines()
    assert len(lines) == 2 + 41 + 1
    total = 16 * (2 * DLRM_CRITEO_MACS_PER_SAMPLE + DLRM_RELU_FLOPS_PER_SAMPLE + 26 * 16 * 3)
    assert lines[-1].split()[:2] == ["total", f"{total / 1e6:.3f}"]
    report = json.loads((tmp_path / "show.json").read_text())
    assert report["results"]["totals"]["flops"] == total
    assert read_trace(out).totals()["flops"] == total


def test_cli_build_without_indices(cli, tmp_path):
    out = tmp_path / "t.json"
    assert cli("trace", "build", "dlrm", "--batch", "8", "--no-indices", "-o", out).status == 0
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
