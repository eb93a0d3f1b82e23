"""Time to open a 26-table (Criteo), batch-2048, pooling-100 trace (target: well under 1 s).

Prints the median over repeats of: `read_trace` with index verification (the default: offsets
and index range of all 5.3M indices checked), `read_trace(verify_indices=False)` (header only,
streams mapped lazily), touching every index once after a lazy open, and a fresh interpreter
that imports `traces` and opens the file (cold start, no torch).

    .venv/bin/python benchmarks/trace_open.py [--repeats 7] [--index zipf:1.05]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from traces import read_trace, write_trace
from traces.builder import CRITEO_TABLE_SIZES, build_dlrm


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--index", default="zipf:1.05")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.json"
        t0 = time.perf_counter()
        trace = build_dlrm(CRITEO_TABLE_SIZES, batch_size=2048, pooling=100, index=args.index)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_trace(trace, path)
        write_s = time.perf_counter() - t0
        nnz = sum(op.index_stream.nnz for op in trace.ops if op.index_stream is not None)
        size = path.stat().st_size + path.with_name("t.arrays.bin").stat().st_size

        verified = _median_s(lambda: read_trace(path), args.repeats)
        lazy = _median_s(lambda: read_trace(path, verify_indices=False), args.repeats)

        def touch_all() -> None:
            t = read_trace(path, verify_indices=False)
            sum(int(op.indices.sum()) for op in t.ops if op.index_stream is not None)

        touch = _median_s(touch_all, args.repeats)
        code = (
            "import time; t0 = time.perf_counter(); from traces import read_trace; "
            f"read_trace({str(path)!r}); print(time.perf_counter() - t0)"
        )
        cold = statistics.median(
            float(
                subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(3)
        )
    print(
        f"trace: 26 Criteo tables, batch 2048, pooling 100, index {args.index}: "
        f"{len(trace.ops)} ops, {nnz:,} indices, {size / 1e6:.1f} MB on disk"
    )
    print(f"build_s {build_s:.3f}  write_s {write_s:.3f}")
    print(f"open_verified_s {verified:.4f}   (read_trace default: all index streams checked)")
    print(f"open_lazy_s {lazy:.4f}       (verify_indices=False: header parsed, streams mapped)")
    print(f"open_and_touch_all_s {touch:.4f}")
    print(f"cold_import_and_open_s {cold:.4f} (fresh interpreter, import traces + read_trace)")
    print(f"target: open well under 1 s -> {'met' if max(verified, cold) < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
