"""traces: the versioned operator-trace format that connects models to the simulator.

Public API (no torch needed): `read_trace(path) -> Trace`, `write_trace(trace, path)`, the
frozen `Trace`, `Op`, `Table` and `IndexStream` types, `TraceBuilder` to assemble a trace op by
op, and `traces.costs` (one cost function per op kind). The PyTorch exporter is `traces.export`
(imports torch); the model-free builder is `traces.builder`; index distributions `traces.indices`.
"""

from traces.builder_core import TraceBuilder
from traces.costs import OP_KINDS, op_cost
from traces.format import SCHEMA, IndexStream, Op, Table, Trace, make_op, make_trace
from traces.io import arrays_path, read_trace, write_trace

__all__ = [
    "OP_KINDS",
    "SCHEMA",
    "IndexStream",
    "Op",
    "Table",
    "Trace",
    "TraceBuilder",
    "arrays_path",
    "make_op",
    "make_trace",
    "op_cost",
    "read_trace",
    "write_trace",
]
