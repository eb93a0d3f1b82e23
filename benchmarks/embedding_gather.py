"""The stem's embedding lookup alone: how long a gather of a training batch's rows takes, by index
pattern and table size (prints a table; no assertions).

Why: in the graphed supernet step the lookup (index_select of 8192 x 26 rows of 16 fp32 from the
3,069,359-row concatenated Criteo table) took ~130 us on an H100 (benchmarks/train_supernet.py
--profile, session 11): 13.6 MB read and 13.6 MB written, several times what the bytes need at
HBM speed. This separates the candidate causes: random rows over a large table (uniform), the
same rows sorted (DRAM locality), skewed rows as in click logs (Zipf 1.1 per table: L2 reuse),
and a table small enough for L2 (100,000 rows); each through index_select (the CUDA path's
lookup until session 11), F.embedding, index_select followed by the bf16 cast that the node
buffers store, and models/nas/row_kernels.py's gather_rows (the lookup since session 12).

Measured 2026-12-06 (H100, torch 2.11), before gather_rows: every pattern and both table sizes
130-134 us (~220 GB/s) through index_select and F.embedding, 137-140 us with the bf16 cast: the
time does not depend on the table's size or the rows' locality, so the bytes are not the limit
(torch's vectorised gather kernel gives each 64-byte row a few threads). gather_rows, in the
same call: 24-31 us (920-1,200 GB/s), 4.2-5.4x faster.

us per lookup: CUDA events around --iters calls after a warm-up (CPU: wall time); GB/s: bytes
of the selected rows read plus written (and the indices) per second.

    PYTHONPATH=. python3 benchmarks/embedding_gather.py [--device cuda] [--iters 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TABLE_ROWS, SMALL_ROWS, DIM = 3_069_359, 100_000, 16
BATCH, FEATURES = 8192, 26


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rows", type=int, default=TABLE_ROWS, help="rows of the large table")
    p.add_argument("--small-rows", type=int, default=SMALL_ROWS, help="rows of the small table")
    p.add_argument("--lookups", type=int, default=BATCH * FEATURES)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def index_patterns(rows: int, lookups: int, seed: int) -> dict[str, np.ndarray]:
    """int64 row indices in [0, rows) by pattern: uniform, the same sorted, and Zipf-skewed within
    each of FEATURES equal tables (rank r drawn with weight r^-1.1, ranks scattered over the
    table's rows)."""
    rng = np.random.default_rng(seed)
    uniform = rng.integers(0, rows, lookups)
    per = max(1, rows // FEATURES)
    ranks = np.minimum(rng.zipf(1.1, lookups) - 1, per - 1)
    scatter = rng.permutation(per)
    table = np.arange(lookups) % FEATURES
    skewed = np.minimum(table * per + scatter[ranks], rows - 1)
    return {"uniform": uniform, "sorted": np.sort(uniform), "zipf": skewed}


def lookups(weight: torch.Tensor) -> dict[str, object]:
    """The lookups timed, by name: each maps an index tensor to its rows (gather_rows: the
    stem's lookup since session 12, Triton on CUDA, index_select elsewhere)."""
    from models.nas.row_kernels import gather_rows

    return {
        "index_select": lambda idx: weight.index_select(0, idx),
        "F.embedding": lambda idx: F.embedding(idx, weight),
        "index_select + bf16": lambda idx: weight.index_select(0, idx).to(torch.bfloat16),
        "gather_rows": lambda idx: gather_rows(weight, idx),
    }


def time_us(fn, idx: torch.Tensor, iters: int) -> float:
    """Microseconds per call of fn(idx), after one warm-up call."""
    fn(idx)
    if idx.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn(idx)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(idx)
    return (time.perf_counter() - t0) * 1e6 / iters


def measure(args: argparse.Namespace) -> list[tuple[str, str, str, float, float]]:
    """(table, pattern, lookup, us, GB/s) for every case."""
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    out = []
    for label, rows in (("large", args.rows), ("small", args.small_rows)):
        weight = torch.randn(rows, DIM, generator=gen).to(device)
        for pattern, idx_np in index_patterns(rows, args.lookups, args.seed).items():
            idx = torch.from_numpy(idx_np).to(device)
            for name, fn in lookups(weight).items():
                us = time_us(fn, idx, args.iters)
                out_bytes = 2 if name.endswith("bf16") else 4
                nbytes = idx.numel() * (DIM * (4 + out_bytes) + 8)
                out.append((label, pattern, name, us, nbytes / us / 1e3))
        del weight
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}: {args.lookups:,} lookups of {DIM} fp32 from "
          f"tables of {args.rows:,} (large) and {args.small_rows:,} rows (small)")  # fmt: skip
    print(f"  {'table':<7}{'pattern':<9}{'lookup':<22}{'us':>9}{'GB/s':>8}")
    for table, pattern, lookup, us, gbs in measure(args):
        print(f"  {table:<7}{pattern:<9}{lookup:<22}{us:>9.1f}{gbs:>8.0f}")


if __name__ == "__main__":
    main()
