"""Round trip: any valid trace -> write -> read gives identical ops, tables and arrays."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces import Trace, make_op, make_trace, read_trace, write_trace
from traces.costs import CHOICES, PARAMS
from traces.format import IndexStream, Table


@st.composite
def traces_(draw) -> Trace:
    batch = draw(st.integers(1, 9))
    bits = draw(st.sampled_from([8, 16, 32]))
    n_ops = draw(st.integers(1, 10))
    ops, tables = [], []
    for i in range(n_ops):
        kind = draw(st.sampled_from(sorted(PARAMS)))
        params = {}
        for name, typ in PARAMS[kind].items():
            if (kind, name) in CHOICES:
                params[name] = draw(st.sampled_from(CHOICES[(kind, name)]))
            elif typ is bool:
                params[name] = draw(st.booleans())
            elif typ is int:
                params[name] = draw(st.integers(1, 40))
        if kind == "attention":
            params["width"] = params["heads"] * draw(st.integers(1, 4))
        stream = None
        if kind == "embedding_bag":
            params["table"] = len(tables)
            params["batch"] = batch
            tables.append(Table(len(tables), params["rows"], params["dim"]))
            if draw(st.booleans()):
                counts = draw(st.lists(st.integers(0, 5), min_size=batch, max_size=batch))
                offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
                dtype = np.int32 if params["index_bits"] == 32 else np.int64
                idx = draw(
                    st.lists(
                        st.integers(0, params["rows"] - 1),
                        min_size=int(offsets[-1]),
                        max_size=int(offsets[-1]),
                    )
                )
                stream = IndexStream(offsets, np.array(idx, dtype=dtype))
        earlier = [op.id for op in ops]
        inputs = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        )
        op_id = draw(st.sampled_from(["op", "x.y", "layer-"])) + str(i)
        ops.append(make_op(op_id, kind, inputs, params, dtype_bits=bits, index_stream=stream))
    meta = draw(
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)
    )
    return make_trace(draw(st.text(min_size=1, max_size=8)), batch, bits, tables, ops, meta)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(trace=traces_())
def test_write_read_identical(tmp_path_factory, trace):
    tmp_path = tmp_path_factory.mktemp("rt")
    path = tmp_path / "t.json"
    write_trace(trace, path)
    back = read_trace(path)
    assert back == trace
    assert back.ops == trace.ops
    for a, b in zip(trace.ops, back.ops, strict=True):
        if a.index_stream is not None:
            assert b.index_stream.indices.dtype == a.index_stream.indices.dtype
            assert b.index_stream.offsets.dtype == np.int64
            np.testing.assert_array_equal(a.offsets, b.offsets)
            np.testing.assert_array_equal(a.indices, b.indices)
    # Writing what was read gives the same bytes again.
    path2 = tmp_path / "u.json"
    write_trace(back, path2)
    h1, h2 = json.loads(path.read_text()), json.loads(path2.read_text())
    h1["arrays"] = h2["arrays"] = None
    assert h1 == h2
    if (tmp_path / "t.arrays.bin").exists():
        assert (tmp_path / "t.arrays.bin").read_bytes() == (tmp_path / "u.arrays.bin").read_bytes()


def test_streams_are_lazy_memory_maps(tmp_path):
    from traces.builder import build_dlrm

    trace = build_dlrm([1000, 50], batch_size=16, pooling=3, index="zipf:1.1", seed=1)
    write_trace(trace, tmp_path / "t.json")
    back = read_trace(tmp_path / "t.json", verify_indices=False)
    emb = [op for op in back.ops if op.kind == "embedding_bag"]
    assert not any(op.index_stream.loaded for op in emb)
    assert isinstance(emb[0].indices.base, np.memmap) or isinstance(emb[0].indices, np.memmap)
    assert emb[0].offsets.tolist() == list(range(0, 49, 3))
    assert not emb[0].indices.flags.writeable


def test_no_arrays_file_without_streams(tmp_path):
    from traces.builder import build_dlrm

    write_trace(build_dlrm([10], batch_size=4), tmp_path / "t.json")
    assert (tmp_path / "t.arrays.bin").exists()
    trace = build_dlrm([10], batch_size=4, with_indices=False)
    write_trace(trace, tmp_path / "t.json")  # overwriting removes the stale array file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]
    assert read_trace(tmp_path / "t.json") == trace


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import pytest

    from traces import io as trace_io
    from traces.builder import build_dlrm

    trace = build_dlrm([10, 20], batch_size=4)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trace_io.json, "dump", boom)
    with pytest.raises(OSError):
        write_trace(trace, tmp_path / "t.json")
    assert list(tmp_path.iterdir()) == []
