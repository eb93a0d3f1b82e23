"""`TraceBuilder`: assemble a trace op by op (used by the model-free builder and the exporter)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from traces.format import IndexStream, Op, Table, Trace, make_op, make_trace


class TraceBuilder:
    """Collects tables and ops in execution order, then validates them into a `Trace`."""

    def __init__(self, model: str, batch_size: int, dtype_bits: int = 32) -> None:
        self.model, self.batch_size, self.dtype_bits = model, batch_size, dtype_bits
        self.tables: list[Table] = []
        self.ops: list[Op] = []
        self._ids: set[str] = set()
        self._counters: dict[str, int] = {}

    def unique_id(self, base: str) -> str:
        """`base` if unused, else `base#1`, `base#2`, ..."""
        op_id, n = base, 0
        while op_id in self._ids:
            n += 1
            op_id = f"{base}#{n}"
        return op_id

    def auto_id(self, kind: str) -> str:
        """The next free `kind_N` id (concat_0, concat_1, ...)."""
        n = self._counters.get(kind, 0)
        self._counters[kind] = n + 1
        return self.unique_id(f"{kind}_{n}")

    def add_table(self, rows: int, dim: int) -> int:
        """Register a table; returns its id (0, 1, ...)."""
        self.tables.append(Table(len(self.tables), int(rows), int(dim)))
        return len(self.tables) - 1

    def add(
        self,
        kind: str,
        params: Mapping[str, Any],
        inputs: Iterable[str] = (),
        *,
        op_id: str | None = None,
        offsets: np.ndarray | None = None,
        indices: np.ndarray | None = None,
    ) -> str:
        """Append an op (validated, cost computed); returns its id. Duplicate inputs are dropped."""
        op_id = self.unique_id(op_id) if op_id else self.auto_id(kind)
        stream = None
        if indices is not None:
            assert offsets is not None
            stream = IndexStream(offsets, indices)
        ins = tuple(dict.fromkeys(inputs))
        self.ops.append(
            make_op(op_id, kind, ins, params, dtype_bits=self.dtype_bits, index_stream=stream)
        )
        self._ids.add(op_id)
        return op_id

    def build(self, metadata: Mapping[str, Any] | None = None) -> Trace:
        """The validated trace."""
        return make_trace(
            self.model, self.batch_size, self.dtype_bits, self.tables, self.ops, metadata
        )
