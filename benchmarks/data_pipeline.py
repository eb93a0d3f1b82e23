"""Data pipeline throughput and memory: prints figures, asserts nothing.

    .venv/bin/python benchmarks/data_pipeline.py            # real samples, synthetic, iterator
    .venv/bin/python benchmarks/data_pipeline.py --big      # + peak memory at 2M synthetic rows
                                                            #   and 1x..80x-replicated Criteo

Figures: prepare rows/s (both passes, from the raw file to the shards), iter_batches samples/s
(numpy batches, what the trainer converts to torch), peak resident memory (MiB) of a prepare in a
fresh process at two sizes (flat means streaming works).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.data import iter_batches, open_split, prepare  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _prepare_rate(fmt, path, tmp, repeats=3, **settings):
    best = float("inf")
    for i in range(repeats):
        t = time.perf_counter()
        out = prepare(fmt, path, Path(tmp) / f"{fmt}-{i}", **settings)
        best = min(best, time.perf_counter() - t)
    m = open_split(out, "train").manifest
    return m["rows"]["read"] / best, best, out


def _peak_rss_mib(code: str) -> float:
    """Peak RSS (MiB) of `python -c code` in a fresh process: VmHWM of its own address space
    (ru_maxrss would include the pages this parent had when it forked)."""
    probe = (
        f"{code}\n"
        "line = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
        "print(int(line.split()[1]) / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _iter_rate(split, batch_size, shuffle, seconds=3.0):
    rows, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for d, s, y in iter_batches(split, batch_size, shuffle=shuffle, seed=rows):
            rows += len(y)
            assert d.flags.writeable and s.flags.c_contiguous
    return rows / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--big",
        action="store_true",
        help="also measure memory at 2M rows and up to 814k Criteo rows (~1.5 min)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, rel in (
            ("criteo", "criteo/criteo_labeled_merged_dedup.tsv"),
            ("avazu", "avazu/avazu_train_head10k.csv"),
        ):
            path = SHARED / rel
            if not path.is_file():
                print(f"prepare {fmt}: skipped ({path} not found)")
                continue
            rate, sec, _ = _prepare_rate(fmt, path, tmp, min_count=1)
            print(f"prepare {fmt} real sample: {rate:,.0f} rows/s ({sec:.2f} s, best of 3)")

        rate, sec, syn = _prepare_rate("synthetic", None, tmp, repeats=1, rows=500_000)
        print(f"prepare synthetic (criteo shape, 500k rows): {rate:,.0f} rows/s ({sec:.1f} s)")

        train = open_split(syn, "train")
        for batch in (512, 4096):
            for shuffle in (False, True):
                r = _iter_rate(train, batch, shuffle)
                print(f"iter_batches batch {batch:5d} shuffle={shuffle!s:5}: {r:,.0f} samples/s")

        if args.big:
            for rows in (200_000, 2_000_000):
                code = (
                    "from models.data import prepare\n"
                    f"prepare('synthetic', None, {str(Path(tmp) / f'mem{rows}')!r}, rows={rows})"
                )
                print(
                    f"peak RSS, synthetic prepare {rows:>9,} rows: {_peak_rss_mib(code):,.0f} MiB"
                )
            src = SHARED / "criteo" / "criteo_labeled_merged_dedup.tsv"
            if src.is_file():
                text = src.read_text()
                copies = []
                for times in (1, 10, 40, 80):  # the same vocabularies, more rows
                    path = Path(tmp) / f"criteo{times}x.tsv"
                    path.write_text(text * times)
                    copies.append((path, 10181 * times))
                for path, rows in copies:
                    code = (
                        "from models.data import prepare\n"
                        f"prepare('criteo', {str(path)!r}, {str(Path(tmp) / ('m' + path.stem))!r})"
                    )
                    t = time.perf_counter()
                    rss = _peak_rss_mib(code)
                    sec = time.perf_counter() - t
                    print(
                        f"peak RSS, criteo prepare {rows:>7,} rows: {rss:,.0f} MiB "
                        f"({sec:.1f} s incl. interpreter start: {rows / sec:,.0f} rows/s)"
                    )


if __name__ == "__main__":
    main()
