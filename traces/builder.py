"""Model-free trace builder for standard shapes (no torch): DLRM over named table sets.

`build_dlrm` emits the same ops, ids and parameters as exporting `models.baselines.DLRM`
(tested), with synthetic index streams from `traces.indices`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pimrec.errors import PimrecError
from traces.builder_core import TraceBuilder
from traces.costs import dot_interaction_pairs
from traces.format import Trace
from traces.indices import IndexDistribution, generate_indices, parse_index_spec

# ../shared/data/README.md: vocabulary sizes of the NASRec reference implementation.
CRITEO_TABLE_SIZES = (
    1461, 584, 10131227, 2202609, 306, 25, 12518, 634, 4, 93146, 5684, 8351593, 3195, 28,
    14993, 5461307, 11, 5653, 2174, 5, 7046548, 19, 16, 286182, 106, 142573,
)  # fmt: skip
KDD12_TABLE_SIZES = (26274, 641708, 14848, 22122011, 1188090, 3735797, 2934102, 20004011, 4, 8)
# Cardinalities measured on the 10,181-row Criteo sample (../shared/data/README.md).
CRITEO_SAMPLE_TABLE_SIZES = (
    179, 388, 5611, 4103, 56, 8, 3212, 94, 3, 3024, 2099, 5370, 1735, 24, 2052, 4802, 9, 1157,
    552, 4, 5118, 8, 13, 2563, 40, 1973,
)  # fmt: skip
TABLE_SETS = {
    "criteo": (CRITEO_TABLE_SIZES, 13),
    "criteo-sample": (CRITEO_SAMPLE_TABLE_SIZES, 13),
    "kdd12": (KDD12_TABLE_SIZES, 3),
}


def parse_tables(text: str) -> tuple[list[int], int | None]:
    """A named table set (criteo, criteo-sample, kdd12) -> (sizes, its n_dense), or a
    comma-separated list of row counts -> (sizes, None)."""
    if text in TABLE_SETS:
        sizes, n_dense = TABLE_SETS[text]
        return list(sizes), n_dense
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise PimrecError(
            f"bad table list {text!r}",
            field="--tables",
            expected=", ".join(TABLE_SETS) + " or row counts such as 1000,50,7",
        )
    return sizes, None


def index_stream(
    dist: IndexDistribution, rows: int, batch: int, pooling: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets int64 [batch + 1], indices [batch * pooling]) with fixed pooling per sample;
    indices are int32 when the table has < 2^31 rows."""
    offsets = np.arange(0, batch * pooling + 1, pooling, dtype=np.int64)
    idx = generate_indices(dist, rows, batch * pooling, rng)
    return offsets, idx.astype(np.int32 if rows < 2**31 else np.int64)


def build_dlrm(
    table_sizes: Sequence[int],
    *,
    batch_size: int,
    n_dense: int = 13,
    embedding_dim: int = 16,
    pooling: int = 1,
    index: IndexDistribution | str = "uniform",
    seed: int = 0,
    bottom_mlp: Sequence[int] = (512, 256),
    top_mlp: Sequence[int] = (512, 256),
    dtype_bits: int = 32,
    with_indices: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Trace:
    """The DLRM forward pass of `models.baselines.DLRM` as a trace, without torch.
    Table t's indices come from `index` with Generator `default_rng(seed).spawn(T)[t]`."""
    for name, value in (
        ("batch_size", batch_size),
        ("pooling", pooling),
        ("n_dense", n_dense),
        ("embedding_dim", embedding_dim),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PimrecError(f"must be an integer >= 1, got {value!r}", field=name)
    dist = parse_index_spec(index) if isinstance(index, str) else index
    b, d, f = batch_size, embedding_dim, len(table_sizes)
    tb = TraceBuilder("dlrm", b, dtype_bits)

    def mlp(prefix: str, widths: Sequence[int], src: tuple[str, ...], last_act: bool) -> str:
        layer = 0
        last = src
        for i, (k, n) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            fc = {"m": b, "k": k, "n": n, "bias": True, "static": True}
            last = (tb.add("fc", fc, last, op_id=f"{prefix}.{layer}"),)
            layer += 1
            if last_act or i < len(widths) - 2:
                act = {"rows": b, "width": n, "function": "relu"}
                last = (tb.add("activation", act, last, op_id=f"{prefix}.{layer}"),)
                layer += 1
        return last[0]

    x = mlp("bottom_mlp", [n_dense, *bottom_mlp, d], (), True)
    rngs = np.random.default_rng(seed).spawn(f)
    embs = []
    for t, rows in enumerate(table_sizes):
        tid = tb.add_table(rows, d)
        offsets = indices = None
        if with_indices:
            offsets, indices = index_stream(dist, rows, b, pooling, rngs[t])
        params = {
            "table": tid,
            "rows": rows,
            "dim": d,
            "batch": b,
            "pooling": pooling,
            "mode": "sum",
            "index_bits": 32 if rows < 2**31 else 64,
        }
        embs.append(
            tb.add(
                "embedding_bag",
                params,
                op_id=f"embeddings.tables.{t}",
                offsets=offsets,
                indices=indices,
            )
        )
    stacked = tb.add("concat", {"rows": b, "width": f * d, "n_inputs": f}, embs)
    tokens = tb.add("concat", {"rows": b, "width": (f + 1) * d, "n_inputs": 2}, (x, stacked))
    inter = tb.add(
        "dot_interaction",
        {"batch": b, "tokens": f + 1, "dim": d, "self_interaction": False, "full_gram": True},
        (tokens,),
        op_id="interaction",
    )
    pairs = dot_interaction_pairs(f + 1, False)
    top_in = tb.add("concat", {"rows": b, "width": d + pairs, "n_inputs": 2}, (x, inter))
    mlp("top_mlp", [d + pairs, *top_mlp, 1], (top_in,), False)
    meta = {
        "builder": {
            "model": "dlrm",
            "index": str(dist),
            "pooling": pooling,
            "seed": seed,
            "n_dense": n_dense,
            "embedding_dim": d,
            "bottom_mlp": list(bottom_mlp),
            "top_mlp": list(top_mlp),
        }
    }
    meta.update(metadata or {})
    return tb.build(meta)
