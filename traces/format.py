"""In-memory trace objects (format v1) and their validation; see traces/FORMAT.md.

`Trace` and `Op` are frozen dataclasses. Every `Op` is made by `make_op`, which checks its
parameters against `traces.costs.PARAMS` and computes its cost, so a trace read from a file and
one built in memory go through the same checks. Index streams are CSR arrays (offsets int64
[batch + 1], indices int32/int64 [nnz]) that may live in memory or be mapped lazily from a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimrec.errors import PimrecError
from traces.costs import CHOICES, PARAMS, ZERO_OK, op_cost

SCHEMA = "pimrec.trace/1"
DTYPE_BITS = (4, 8, 16, 32, 64)
INDEX_DTYPES = {"int32": np.dtype("<i4"), "int64": np.dtype("<i8")}


@dataclass(frozen=True)
class Table:
    """An embedding table: `rows` x `dim` values (metadata only; weights are never stored)."""

    id: int
    rows: int
    dim: int


class IndexStream:
    """The CSR index stream of one embedding_bag op: `offsets` (int64, [batch + 1]) and
    `indices` (int32 or int64, [nnz]). Arrays are given, or produced on first access by `loader`
    (a read-only memory map of the trace's array file)."""

    def __init__(
        self,
        offsets: np.ndarray | None = None,
        indices: np.ndarray | None = None,
        *,
        batch: int | None = None,
        nnz: int | None = None,
        index_dtype: str | None = None,
        loader: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if loader is None:
            if offsets is None or indices is None:
                raise ValueError("IndexStream needs arrays or a loader")
            offsets = np.ascontiguousarray(offsets, dtype=np.int64)
            if indices.dtype not in (np.int32, np.int64):
                indices = indices.astype(np.int64)
            indices = np.ascontiguousarray(indices)
            batch, nnz = len(offsets) - 1, len(indices)
            index_dtype = indices.dtype.name
        self._arrays = None if loader is not None else (offsets, indices)
        self._loader = loader
        self.batch = int(batch)  # type: ignore[arg-type]
        self.nnz = int(nnz)  # type: ignore[arg-type]
        self.index_dtype = str(index_dtype)

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = self._loader()  # type: ignore[misc]
        return self._arrays

    @property
    def offsets(self) -> np.ndarray:
        """int64 [batch + 1]: sample b uses indices[offsets[b]:offsets[b + 1]]."""
        return self._load()[0]

    @property
    def indices(self) -> np.ndarray:
        """int32/int64 [nnz]: row ids into the op's table."""
        return self._load()[1]

    @property
    def loaded(self) -> bool:
        return self._arrays is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndexStream):
            return NotImplemented
        return (
            self.index_dtype == other.index_dtype
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.indices, other.indices)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IndexStream(batch={self.batch}, nnz={self.nnz}, indices={self.index_dtype})"


@dataclass(frozen=True, eq=True)
class Op:
    """One operator. `params` holds the kind's shape fields (plain ints/bools/str); the cost
    fields are computed from them by `traces.costs` (FLOPs: 2 per MAC plus elementwise)."""

    id: str
    kind: str
    inputs: tuple[str, ...]
    params: Mapping[str, Any]
    flops: int
    macs: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int
    static_weights: bool
    index_stream: IndexStream | None = field(default=None, compare=True)

    __hash__ = None  # type: ignore[assignment]

    @property
    def offsets(self) -> np.ndarray | None:
        """embedding_bag only: CSR offsets (int64 [batch + 1]) or None without a stream."""
        return None if self.index_stream is None else self.index_stream.offsets

    @property
    def indices(self) -> np.ndarray | None:
        """embedding_bag only: row ids (int32/int64 [nnz]) or None without a stream."""
        return None if self.index_stream is None else self.index_stream.indices


@dataclass(frozen=True)
class Trace:
    """A model's forward pass as an ordered DAG of ops (topological order)."""

    schema: str
    model: str
    batch_size: int
    dtype_bits: int
    tables: tuple[Table, ...]
    ops: tuple[Op, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    __hash__ = None  # type: ignore[assignment]

    def op(self, op_id: str) -> Op:
        """The op named `op_id` (KeyError when absent)."""
        for op in self.ops:
            if op.id == op_id:
                return op
        raise KeyError(op_id)

    def totals(self) -> dict[str, int]:
        """Sums over all ops: flops, macs, bytes_read, bytes_written, weight_bytes."""
        keys = ("flops", "macs", "bytes_read", "bytes_written", "weight_bytes")
        return {k: sum(getattr(op, k) for op in self.ops) for k in keys}


def check_params(kind: str, params: Any, where: str, file: str | None = None) -> dict[str, Any]:
    """Validate the parameters of an op of `kind`; returns them as a plain dict."""
    if kind not in PARAMS:
        raise PimrecError(
            f"unknown op kind {kind!r}",
            file=file,
            field=f"{where}.kind",
            expected="one of " + ", ".join(PARAMS),
        )
    if not isinstance(params, Mapping):
        raise PimrecError("params must be a mapping", file=file, field=f"{where}.params")
    schema = PARAMS[kind]
    for name in params:
        if name not in schema:
            raise PimrecError(
                "unknown parameter",
                file=file,
                field=f"{where}.params.{name}",
                expected=f"{kind} parameters: " + ", ".join(schema),
            )
    out: dict[str, Any] = {}
    for name, typ in schema.items():
        fld = f"{where}.params.{name}"
        if name not in params:
            raise PimrecError("required parameter is missing", file=file, field=fld)
        value = params[name]
        if typ is int:
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise PimrecError(f"must be an integer, got {value!r}", file=file, field=fld)
            value = int(value)
            low = 0 if (kind, name) in ZERO_OK else 1
            if value < low:
                raise PimrecError(f"must be >= {low}, got {value}", file=file, field=fld)
        elif typ is bool:
            if not isinstance(value, bool | np.bool_):
                raise PimrecError(f"must be true or false, got {value!r}", file=file, field=fld)
            value = bool(value)
        elif not isinstance(value, str):
            raise PimrecError(f"must be a string, got {value!r}", file=file, field=fld)
        choices = CHOICES.get((kind, name))
        if choices is not None and value not in choices:
            raise PimrecError(
                f"got {value!r}",
                file=file,
                field=fld,
                expected="one of " + ", ".join(str(c) for c in choices),
            )
        out[name] = value
    if kind == "attention" and out["width"] % out["heads"]:
        raise PimrecError(
            f"width {out['width']} is not a multiple of heads {out['heads']}",
            file=file,
            field=f"{where}.params.heads",
        )
    return out


def make_op(
    op_id: str,
    kind: str,
    inputs: Iterable[str],
    params: Mapping[str, Any],
    *,
    dtype_bits: int,
    index_stream: IndexStream | None = None,
    where: str | None = None,
    file: str | None = None,
) -> Op:
    """A validated `Op` with its cost computed by `traces.costs`."""
    where = where or f"ops[{op_id}]"
    p = check_params(kind, params, where, file)
    if index_stream is not None and kind != "embedding_bag":
        raise PimrecError("only embedding_bag ops carry an index stream", file=file, field=where)
    nnz = index_stream.nnz if index_stream is not None else None
    c = op_cost(kind, p, dtype_bits, nnz)
    return Op(
        id=op_id,
        kind=kind,
        inputs=tuple(inputs),
        params=p,
        flops=c.flops,
        macs=c.macs,
        bytes_read=c.bytes_read,
        bytes_written=c.bytes_written,
        weight_bytes=c.weight_bytes,
        static_weights=c.static_weights,
        index_stream=index_stream,
    )


def check_graph(ops: Iterable[Op], file: str | None = None) -> None:
    """Unique ids; every input names an op; no cycle; inputs appear before their users."""
    ops = list(ops)
    position: dict[str, int] = {}
    for i, op in enumerate(ops):
        if op.id in position:
            raise PimrecError(f"duplicate op id {op.id!r}", file=file, field=f"ops[{i}].id")
        position[op.id] = i
    for i, op in enumerate(ops):
        for src in op.inputs:
            if src not in position:
                raise PimrecError(
                    f"input {src!r} names no op",
                    file=file,
                    field=f"ops[{i}].inputs",
                    expected="ids of ops in this trace",
                )
    cycle = _find_cycle({op.id: op.inputs for op in ops})
    if cycle:
        raise PimrecError("cycle: " + " -> ".join(cycle), file=file, field="ops")
    for i, op in enumerate(ops):
        for src in op.inputs:
            if position[src] >= i:
                raise PimrecError(
                    f"op {op.id!r} uses {src!r}, which comes later",
                    file=file,
                    field=f"ops[{i}].inputs",
                    expected="ops in topological order",
                )


def _find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in graph:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            deps = graph[node]
            if i < len(deps):
                stack[-1] = (node, i + 1)
                nxt = deps[i]
                if state.get(nxt) == 1:
                    cyc = path[path.index(nxt) :] + [nxt]
                    return cyc[::-1]
                if not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def check_tables(
    tables: Iterable[Table], ops: Iterable[Op], batch_size: int, file: str | None = None
) -> None:
    """Table ids unique; each embedding_bag matches its table and the trace batch size."""
    by_id: dict[int, Table] = {}
    for i, t in enumerate(tables):
        if t.id in by_id:
            raise PimrecError(f"duplicate table id {t.id}", file=file, field=f"tables[{i}].id")
        by_id[t.id] = t
    for i, op in enumerate(ops):
        if op.kind != "embedding_bag":
            continue
        p = op.params
        t = by_id.get(p["table"])
        if t is None:
            raise PimrecError(
                f"table {p['table']} is not in tables", file=file, field=f"ops[{i}].params.table"
            )
        if (t.rows, t.dim) != (p["rows"], p["dim"]):
            raise PimrecError(
                f"rows x dim {p['rows']} x {p['dim']} differ from table {t.id}",
                file=file,
                field=f"ops[{i}].params",
                expected=f"{t.rows} x {t.dim}",
            )
        if p["batch"] != batch_size:
            raise PimrecError(
                f"batch {p['batch']} differs from batch_size {batch_size}",
                file=file,
                field=f"ops[{i}].params.batch",
            )


def check_index_stream(op: Op, where: str, file: str | None = None) -> None:
    """Offsets start at 0, never decrease and end at nnz; every index is a row of the table."""
    s = op.index_stream
    if s is None:
        return
    p = op.params
    if s.batch != p["batch"]:
        raise PimrecError(
            f"offsets have {s.batch + 1} entries",
            file=file,
            field=f"{where}.index.offsets",
            expected=f"batch + 1 = {p['batch'] + 1}",
        )
    if np.dtype(s.index_dtype).itemsize * 8 != p["index_bits"]:
        raise PimrecError(
            f"indices are {s.index_dtype}",
            file=file,
            field=f"{where}.index.indices",
            expected=f"{p['index_bits']}-bit ints",
        )
    off, idx = s.offsets, s.indices
    if off[0] != 0 or off[-1] != s.nnz or (len(off) > 1 and np.any(off[1:] < off[:-1])):
        raise PimrecError(
            "offsets must start at 0, never decrease and end at nnz",
            file=file,
            field=f"{where}.index.offsets",
        )
    if s.nnz:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= p["rows"]:
            bad = lo if lo < 0 else hi
            raise PimrecError(
                f"index {bad} is out of the table's range",
                file=file,
                field=f"{where}.index.indices",
                expected=f"0 <= index < {p['rows']}",
            )


def make_trace(
    model: str,
    batch_size: int,
    dtype_bits: int,
    tables: Iterable[Table],
    ops: Iterable[Op],
    metadata: Mapping[str, Any] | None = None,
    *,
    file: str | Path | None = None,
    verify_indices: bool = True,
) -> Trace:
    """A validated `Trace` (graph, tables and, with `verify_indices`, every index stream)."""
    f = str(file) if file is not None else None
    if not isinstance(model, str) or not model:
        raise PimrecError("must be a non-empty string", file=f, field="model")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PimrecError(
            f"must be an integer >= 1, got {batch_size!r}", file=f, field="batch_size"
        )
    if dtype_bits not in DTYPE_BITS or isinstance(dtype_bits, bool):
        raise PimrecError(
            f"got {dtype_bits!r}",
            file=f,
            field="dtype_bits",
            expected="one of " + ", ".join(map(str, DTYPE_BITS)),
        )
    tables, ops = tuple(tables), tuple(ops)
    check_graph(ops, f)
    check_tables(tables, ops, batch_size, f)
    if verify_indices:
        for i, op in enumerate(ops):
            check_index_stream(op, f"ops[{i}]", f)
    return Trace(SCHEMA, model, batch_size, dtype_bits, tables, ops, dict(metadata or {}))
