"""benchmarks/embedding_gather.py: the index patterns (hand-checked properties) and every case
measured on the CPU at a small size."""

from __future__ import annotations

import numpy as np


def test_index_patterns(bench_module):
    b = bench_module("embedding_gather")
    pats = b.index_patterns(2600, 5000, seed=1)
    assert set(pats) == {"uniform", "sorted", "zipf"}
    assert all(p.shape == (5000,) and p.min() >= 0 and p.max() < 2600 for p in pats.values())
    assert np.array_equal(pats["sorted"], np.sort(pats["uniform"]))
    # Zipf: lookup i stays in table i % 26 (100 rows each), and its most common row takes far
    # more than a uniform 1 / 100 share of that table's lookups
    table = np.arange(5000) % 26
    assert np.array_equal(pats["zipf"] // 100, table)
    first = pats["zipf"][table == 0]
    assert np.bincount(first).max() > 0.2 * first.size


def test_every_case_measured(bench_module):
    b = bench_module("embedding_gather")
    args = b.parse_args(["--device", "cpu", "--rows", "3000", "--small-rows", "500",
                         "--lookups", "1000", "--iters", "2"])  # fmt: skip
    rows = b.measure(args)
    assert len(rows) == 2 * 3 * 4
    assert {r[:2] for r in rows} == {(t, p) for t in ("large", "small")
                                     for p in ("uniform", "sorted", "zipf")}  # fmt: skip
    assert all(us > 0 and gbs > 0 for *_, us, gbs in rows)
