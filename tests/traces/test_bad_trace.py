"""Malformed traces: `pimrec trace validate/show` exit 2 with one line naming file, field and
what was expected; `read_trace` raises PimrecError; no output file is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pimrec.errors import PimrecError
from traces import read_trace, write_trace
from traces.builder import build_dlrm


@pytest.fixture
def good(tmp_path) -> Path:
    """A small valid DLRM trace with index streams (tables of 1000 and 50 rows, batch 8)."""
    trace = build_dlrm(
        [1000, 50],
        batch_size=8,
        pooling=2,
        index="uniform",
        seed=3,
        bottom_mlp=(32,),
        top_mlp=(16,),
    )
    path = tmp_path / "good.json"
    write_trace(trace, path)
    return path


def _edit(path: Path, fn) -> Path:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))
    return path


def _op(doc, op_id):
    return next(op for op in doc["ops"] if op["id"] == op_id)


def _set_param(op_id, name, value):
    return lambda d: _op(d, op_id)["params"].__setitem__(name, value)


def _cycle(d):
    _op(d, "bottom_mlp.0")["inputs"] = ["top_mlp.0"]


def _later(d):
    _op(d, "bottom_mlp.0")["inputs"] = ["embeddings.tables.0"]


def _dup(d):
    d["ops"][1]["id"] = d["ops"][0]["id"]


def _small_table(d):
    d["tables"][0]["rows"] = 1
    _op(d, "embeddings.tables.0")["params"]["rows"] = 1


def _past_end(d):
    _op(d, "embeddings.tables.1")["index"]["indices"]["offset_bytes"] = 1 << 20


JSON_CASES = {
    # id: (edit, text the one-line message must contain)
    "unknown-schema-version": (lambda d: d.update(schema="pimrec.trace/2"),
                               "schema: unsupported schema 'pimrec.trace/2'"),
    "missing-schema": (lambda d: d.pop("schema"), "schema: unsupported schema None"),
    "unknown-top-key": (lambda d: d.update(extra=1), "extra: unknown key"),
    "unknown-op-kind": (lambda d: d["ops"][2].update(kind="conv2d"),
                        "ops[2].kind: unknown op kind 'conv2d'"),
    "dangling-input": (lambda d: d["ops"][1].update(inputs=["nope"]),
                       "ops[1].inputs: input 'nope' names no op"),
    "cycle": (_cycle, "ops: cycle: "),
    "not-topological": (_later, "which comes later"),
    "duplicate-id": (_dup, "ops[1].id: duplicate op id"),
    "negative-shape": (_set_param("bottom_mlp.0", "k", -13), "params.k: must be >= 1, got -13"),
    "zero-shape": (_set_param("top_mlp.0", "n", 0), "params.n: must be >= 1, got 0"),
    "bool-for-int": (_set_param("bottom_mlp.0", "m", True), "params.m: must be an integer"),
    "string-for-int": (_set_param("bottom_mlp.0", "m", "8"), "params.m: must be an integer"),
    "missing-param": (lambda d: _op(d, "interaction")["params"].pop("dim"),
                      "params.dim: required parameter is missing"),
    "unknown-param": (_set_param("interaction", "heads", 2), "params.heads: unknown parameter"),
    "bad-choice": (_set_param("bottom_mlp.1", "function", "swish"), "params.function: got 'swish'"),
    "table-mismatch": (_set_param("embeddings.tables.0", "dim", 8), "differ from table 0"),
    "missing-table": (_set_param("embeddings.tables.1", "table", 7), "table 7 is not in tables"),
    "index-out-of-range": (_small_table, "index.indices: index"),
    "array-past-end": (_past_end, "runs past the array file"),
    "bad-index-dtype": (lambda d: _op(d, "embeddings.tables.0")["index"]["indices"].update(
        dtype="float32"), "indices.dtype: got 'float32'"),
    "bad-dtype-bits": (lambda d: d.update(dtype_bits=12), "dtype_bits: got 12"),
    "zero-batch": (lambda d: d.update(batch_size=0), "batch_size: must be an integer >= 1"),
    "ops-not-a-list": (lambda d: d.update(ops={}), "ops: has the wrong type"),
}  # fmt: skip


def _assert_clean_failure(result, must_contain: str, out: Path | None = None) -> None:
    assert result.status == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("pimrec: error: ")
    assert must_contain in lines[0], lines[0]
    assert "Traceback" not in result.err
    assert result.out == ""
    if out is not None:
        assert not out.exists()


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_bad_header(cli, good, case):
    edit, must_contain = JSON_CASES[case]
    _edit(good, edit)
    result = cli("trace", "validate", good)
    _assert_clean_failure(result, must_contain)
    assert str(good) in result.err  # names the file
    out = good.parent / "report.json"
    _assert_clean_failure(cli("trace", "show", good, "-o", out), must_contain, out)
    with pytest.raises(PimrecError, match="good.json"):
        read_trace(good)


def _arrays(path: Path) -> Path:
    return path.with_name("good.arrays.bin")


def test_truncated_array_file(cli, good):
    data = _arrays(good).read_bytes()
    _arrays(good).write_bytes(data[:-10])
    _assert_clean_failure(cli("trace", "validate", good), "(truncated or changed)")


def test_missing_array_file(cli, good):
    _arrays(good).unlink()
    _assert_clean_failure(cli("trace", "validate", good), "arrays.file: array file")


def _poke(good: Path, op_id: str, name: str, position: int, value: int) -> None:
    spec = _op(json.loads(good.read_text()), op_id)["index"][name]
    m = np.memmap(_arrays(good), dtype=np.uint8, mode="r+")
    arr = m[spec["offset_bytes"] :].view(np.dtype(spec["dtype"]).newbyteorder("<"))
    arr[position] = value
    m.flush()
    del m


def test_index_out_of_range_in_array(cli, good):
    _poke(good, "embeddings.tables.1", "indices", 5, 50)
    _assert_clean_failure(
        cli("trace", "validate", good),
        "index 50 is out of the table's range (expected 0 <= index < 50)",
    )


def test_negative_index_in_array(cli, good):
    _poke(good, "embeddings.tables.0", "indices", 0, -1)
    _assert_clean_failure(cli("trace", "validate", good), "index -1 is out of the table's range")


def test_decreasing_offsets(cli, good):
    _poke(good, "embeddings.tables.0", "offsets", 3, 1)
    _assert_clean_failure(cli("trace", "validate", good), "offsets must start at 0")


def test_offsets_length_differs_from_batch(cli, good):
    _edit(
        good,
        lambda d: (
            d.update(batch_size=9)
            or [op["params"].update(batch=9) for op in d["ops"] if op["kind"] == "embedding_bag"]
        ),
    )
    _assert_clean_failure(cli("trace", "validate", good), "offsets have 9 entries")


@pytest.mark.parametrize(
    "text, must_contain",
    [
        ("{", "invalid JSON at line 1"),
        ("[]", "top level must be a JSON object"),
        ("", "invalid JSON"),
    ],
)
def test_not_a_trace(cli, tmp_path, text, must_contain):
    path = tmp_path / "t.json"
    path.write_text(text)
    _assert_clean_failure(cli("trace", "validate", path), must_contain)


def test_missing_file(cli, tmp_path):
    _assert_clean_failure(cli("trace", "show", tmp_path / "nope.json"), "no such trace file")


def test_attention_heads_must_divide_width():
    from traces import make_op

    with pytest.raises(PimrecError, match="not a multiple of heads"):
        make_op(
            "a", "attention", (), {"batch": 1, "tokens": 4, "width": 10, "heads": 4}, dtype_bits=32
        )


@pytest.mark.parametrize(
    "args, must_contain",
    [
        (["--index", "zipf:x"], "--index: bad exponent"),
        (["--index", "pareto"], "unknown index distribution 'pareto'"),
        (["--tables", "10,-1"], "--tables: bad table list"),
        (["--pooling", "0"], "pooling: must be an integer >= 1"),
        (["--batch", "0"], "batch_size: must be an integer >= 1"),
    ],
)
def test_bad_build_arguments(cli, tmp_path, args, must_contain):
    out = tmp_path / "t.json"
    result = cli("trace", "build", "dlrm", "--tables", "10,20", *args, "-o", out)
    _assert_clean_failure(result, must_contain, out)
    assert list(tmp_path.iterdir()) == []
