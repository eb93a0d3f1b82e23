"""Export the baselines of `models.baselines` on a real Criteo batch or a synthetic one.

This is the composition point used by `pimrec trace export` (it imports torch and models).
A real batch is the first `batch` rows of a Criteo train.txt-format file: dense
log(max(x, 0) + 1) with missing -> 0; a categorical hex value h goes to row 1 + h mod (rows - 1)
(row 0 is the missing value), a hashing stand-in for the vocabulary of `models.data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pimrec.errors import PimrecError
from traces.format import Trace
from traces.indices import generate_indices, parse_index_spec


def criteo_batch(
    path: Path, batch: int, table_sizes: Sequence[int], n_dense: int = 13
) -> tuple[np.ndarray, np.ndarray]:
    """(dense float32 [batch, 13], sparse int64 [batch, 26]) from a Criteo raw TSV: labelled
    (40 columns) or unlabelled test rows (39 columns)."""
    n_sparse = len(table_sizes)
    if n_dense != 13 or n_sparse != 26:
        raise PimrecError(
            "Criteo rows have 13 dense and 26 categorical features",
            field="--tables",
            expected="a 26-table set such as criteo or criteo-sample",
        )
    dense = np.zeros((batch, n_dense), np.float32)
    sparse = np.zeros((batch, n_sparse), np.int64)
    n = 0
    try:
        fh = open(path)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise PimrecError(f"cannot read: {exc.strerror}", file=path) from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if n == batch:
                break
            cols = line.rstrip("\n").split("\t")
            if len(cols) not in (39, 40):
                raise PimrecError(
                    f"line {lineno} has {len(cols)} columns",
                    file=path,
                    expected="40 (label, I1..I13, C1..C26) or 39 (no label)",
                )
            cols = cols[len(cols) - 39 :]
            try:
                for j in range(n_dense):
                    v = cols[j]
                    dense[n, j] = np.log1p(max(float(v), 0.0)) if v else 0.0
                for j in range(n_sparse):
                    v = cols[n_dense + j]
                    rows = table_sizes[j]
                    sparse[n, j] = 1 + int(v, 16) % (rows - 1) if v and rows > 1 else 0
            except ValueError:
                raise PimrecError(
                    f"line {lineno} has a malformed value",
                    file=path,
                    expected="integers I1..I13 and hex C1..C26",
                ) from None
            n += 1
    if n < batch:
        raise PimrecError(f"has only {n} rows", file=path, expected=f"at least --batch {batch}")
    return dense, sparse


def synthetic_batch(
    batch: int, table_sizes: Sequence[int], n_dense: int, index: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dense log-normal-ish features and one index per feature from `index` (seeded)."""
    rng = np.random.default_rng(seed)
    dense = np.log1p(rng.exponential(10.0, (batch, n_dense))).astype(np.float32)
    dist = parse_index_spec(index)
    rngs = rng.spawn(len(table_sizes))
    sparse = np.stack(
        [generate_indices(dist, rows, batch, r) for rows, r in zip(table_sizes, rngs, strict=True)],
        axis=1,
    )
    return dense, sparse


def input_batch(
    data: Path | None, batch: int, table_sizes: Sequence[int], n_dense: int, index: str, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(dense, sparse, source record): the first `batch` rows of a raw Criteo file when `data` is
    given, else a synthetic batch drawn from `index`."""
    if data is not None:
        dense, sparse = criteo_batch(Path(data), batch, table_sizes, n_dense)
        return dense, sparse, {"data": str(data), "rows": f"first {batch}"}
    dense, sparse = synthetic_batch(batch, table_sizes, n_dense, index, seed)
    return dense, sparse, {"data": "synthetic", "index": index}


def export_baseline(
    model: str,
    table_sizes: Sequence[int],
    *,
    n_dense: int,
    batch_size: int,
    embedding_dim: int = 16,
    data: Path | None = None,
    index: str = "uniform",
    seed: int = 0,
    dtype_bits: int = 32,
    tables_label: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Trace, dict[str, Any]]:
    """(trace, FLOPs cross-check) of baseline `model` on one batch; weights seeded by `seed`."""
    import torch

    from models.baselines import build_baseline
    from traces.export import export_trace, flop_cross_check, torch_flop_count

    if batch_size < 1:
        raise PimrecError(f"must be >= 1, got {batch_size}", field="--batch")
    dense, sparse, source = input_batch(data, batch_size, table_sizes, n_dense, index, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_baseline(model, table_sizes, n_dense, embedding_dim, **(overrides or {}))
    inputs = (torch.from_numpy(dense), torch.from_numpy(sparse))
    meta = {
        "command": "pimrec trace export",
        "seed": seed,
        "tables": tables_label,
        "batch_source": source,
    }
    trace = export_trace(net, inputs, name=model, dtype_bits=dtype_bits, metadata=meta)
    check = flop_cross_check(trace, torch_flop_count(net, inputs))
    trace.metadata["export"]["flop_cross_check"] = check  # type: ignore[index]
    return trace, check
