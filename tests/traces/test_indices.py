"""Index distributions: range, determinism, Zipf probabilities and the Meta reuse histogram."""

from __future__ import annotations

import numpy as np
import pytest

from traces.indices import (
    IndexDistribution,
    generate_indices,
    meta_reuse_law,
    parse_index_spec,
    reuse_histogram,
    zipf_ranks,
)


@pytest.mark.parametrize("spec", ["uniform", "zipf:1.05", "zipf:0.5", "zipf:0", "meta"])
def test_range_length_and_seed(spec):
    dist = parse_index_spec(spec)
    for rows in (1, 7, 100_003, 10_131_227):
        a = generate_indices(dist, rows, 5000, np.random.default_rng(1))
        b = generate_indices(dist, rows, 5000, np.random.default_rng(1))
        assert a.dtype == np.int64 and len(a) == 5000
        assert a.min() >= 0 and a.max() < rows
        np.testing.assert_array_equal(a, b)
    c = generate_indices(dist, 100_003, 5000, np.random.default_rng(2))
    assert not np.array_equal(a[:100], c[:100]) or rows == 1


def test_parse():
    assert parse_index_spec(" Zipf:1.05 ") == IndexDistribution("zipf", 1.05)
    assert str(parse_index_spec("zipf:1.05")) == "zipf:1.05"
    assert parse_index_spec("meta").kind == "meta"


def test_zipf_head_matches_exact_law():
    # 1,000 rows, a = 1.05: P(rank 0) = 1 / H where H = sum r^-1.05 (exact head).
    rows, a, n = 1000, 1.05, 400_000
    ranks = zipf_ranks(rows, a, n, np.random.default_rng(0))
    w = np.arange(1, rows + 1, dtype=float) ** -a
    p = w / w.sum()
    for r in (0, 1, 9, 99):
        expected = p[r] * n
        assert abs(np.sum(ranks == r) - expected) < 5 * np.sqrt(expected)  # 5 sigma


def test_zipf_tail_mass_beyond_exact_head():
    # 1e6 rows, a = 0.9: the share of ranks >= 65,536 against the exact sum, within 0.5%.
    rows, a, n = 1_000_000, 0.9, 500_000
    ranks = zipf_ranks(rows, a, n, np.random.default_rng(0))
    w = np.arange(1, rows + 1, dtype=float) ** -a
    expected = w[65536:].sum() / w.sum()
    assert abs(np.mean(ranks >= 65536) - expected) < 0.005
    assert ranks.max() < rows


def test_zipf_scatter_is_a_permutation():
    # The hottest row is one row (not necessarily row 0) holding P(rank 0) of the accesses.
    idx = generate_indices(parse_index_spec("zipf:1.2"), 5000, 200_000, np.random.default_rng(4))
    counts = np.bincount(idx, minlength=5000)
    w = np.arange(1, 5001, dtype=float) ** -1.2
    assert abs(counts.max() / 200_000 - w[0] / w.sum()) < 0.01


def test_meta_law_hits_published_numbers_exactly():
    counts, p, s = meta_reuse_law()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p[0] == pytest.approx(0.342)
    assert p[:16].sum() == pytest.approx(0.886)
    mean = (counts * p).sum()
    assert mean == pytest.approx(12.7, rel=1e-9)
    hot = counts > 32768
    assert (counts[hot] * p[hot]).sum() / mean == pytest.approx(0.076, rel=1e-9)
    assert 1.5 < s < 3.0


def test_meta_generated_histogram_matches_hardware_md():
    """hardware.md s7: 34.2% once, 88.6% <= 16, mean reuse 12.7, 7.6% of accesses on rows
    used > 32,768 times. Tolerance: 1.5 points on fractions, 2% on mean reuse, 2 points on the
    hot share (a handful of hot rows at 4M indices)."""
    idx = generate_indices(
        parse_index_spec("meta"), 50_000_000, 4_000_000, np.random.default_rng(0)
    )
    h = reuse_histogram(idx)
    assert h["indices"] == 4_000_000
    assert abs(h["frac_once"] - 0.342) < 0.015
    assert abs(h["frac_at_most_16"] - 0.886) < 0.015
    assert h["mean_reuse"] == pytest.approx(12.7, rel=0.02)
    assert abs(h["hot_access_share"] - 0.076) < 0.02


def test_reuse_histogram_by_hand():
    h = reuse_histogram(np.array([5, 5, 5, 1, 2, 2]))
    assert h == {
        "indices": 6,
        "unique_rows": 3,
        "mean_reuse": 2.0,
        "frac_once": 1 / 3,
        "frac_at_most_16": 1.0,
        "hot_access_share": 0.0,
    }


def test_user_histogram_file(tmp_path):
    path = tmp_path / "h.json"
    path.write_text('{"reuse_counts": [1, 4, 100], "row_fractions": [5, 4, 1]}')
    dist = parse_index_spec(f"hist:{path}")
    assert str(dist) == f"hist:{path}"
    idx = generate_indices(dist, 1_000_000, 200_000, np.random.default_rng(0))
    _, uses = np.unique(idx, return_counts=True)
    # mean reuse = 0.5*1 + 0.4*4 + 0.1*100 = 12.1; fractions within 1 point.
    assert uses.sum() / len(uses) == pytest.approx(12.1, rel=0.02)
    assert abs(np.mean(uses == 1) - 0.5) < 0.01
    assert abs(np.mean((uses >= 2) & (uses <= 8)) - 0.4) < 0.01


@pytest.mark.parametrize(
    "text, must_contain",
    [
        ('{"reuse_counts": [2, 1], "row_fractions": [1, 1]}', "bad histogram"),
        ('{"reuse_counts": [0], "row_fractions": [1]}', "bad histogram"),
        ('{"reuse_counts": [1], "row_fractions": [-1]}', "bad histogram"),
        ('{"reuse_counts": [1]}', "bad histogram"),
        ("[1", "cannot read histogram"),
    ],
)
def test_bad_histogram_file(cli, tmp_path, text, must_contain):
    path = tmp_path / "h.json"
    path.write_text(text)
    out = tmp_path / "t.json"
    r = cli("trace", "build", "dlrm", "--tables", "10", "--index", f"hist:{path}", "-o", out)
    assert r.status == 2 and must_contain in r.err and str(path) in r.err
    assert len(r.err.strip().splitlines()) == 1 and not out.exists()
