"""Synthetic embedding index streams: uniform, bounded Zipf, and the Meta reuse histogram.

Every generator takes an explicit `numpy.random.Generator`. Spec strings (CLI `--index`):
- `uniform`: every row equally likely.
- `zipf:A`: P(rank r) proportional to r^-A over the table's rows (A >= 0, bounded so A <= 1 is
  fine). Ranks are exact for the 65,536 hottest rows and a midpoint-rule continuous law beyond.
  Hot rows are scattered over the table by an affine permutation (row = start + rank*step mod rows).
- `hist:FILE.json`: any reuse histogram, {"reuse_counts": [...], "row_fractions": [...]}, drawn
  like `meta`.
- `meta`: reproduces the reuse histogram of Meta's embedding-lookup dataset (hardware.md s7):
  each unique row of a batch is touched c times, with P(c = 1) = 34.2%, P(c <= 16) = 88.6%,
  mean reuse 12.7 and 7.6% of all accesses on rows used more than 32,768 times. The law is
  piecewise power-law in c (one exponent fitted so the mean comes out, see `meta_reuse_law`).
  The shape needs a table to see >~ 1e6 indices per batch for its heaviest bin to appear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pimrec.errors import PimrecError

ZIPF_EXACT_RANKS = 65536

# hardware.md section 7 (Meta dlrm_datasets, 2022 release).
META_P_ONCE = 0.342
META_P_AT_MOST_16 = 0.886
META_MEAN_REUSE = 12.7
META_HOT_MIN_USES = 32769  # "> 32,768 uses each"
META_HOT_ACCESS_SHARE = 0.076
META_MAX_USES = 262144  # our choice: the heaviest rows' reuse is not published


@dataclass(frozen=True)
class IndexDistribution:
    """A parsed `--index` spec: kind is 'uniform', 'zipf' (with exponent), 'meta' or 'hist'
    (reuse counts and the fraction of unique rows with each, from a JSON file)."""

    kind: str
    exponent: float = 0.0
    reuse_counts: tuple[int, ...] = ()
    row_fractions: tuple[float, ...] = ()
    source: str = ""

    def __str__(self) -> str:
        if self.kind == "zipf":
            return f"zipf:{self.exponent:g}"
        return f"hist:{self.source}" if self.kind == "hist" else self.kind


def parse_index_spec(text: str) -> IndexDistribution:
    """Parse 'uniform', 'zipf:A', 'meta' or 'hist:FILE.json' (raises PimrecError otherwise).
    The histogram file is {"reuse_counts": [1, 2, ...], "row_fractions": [0.3, 0.2, ...]}: the
    fraction of a batch's unique rows used that many times (normalised here)."""
    expected = "uniform, zipf:A (A >= 0, e.g. zipf:1.05), meta or hist:FILE.json"
    if text.strip().startswith("hist:"):
        return _load_histogram(text.strip()[5:])
    t = text.strip().lower()
    if t in ("uniform", "meta"):
        return IndexDistribution(t)
    if t.startswith("zipf:"):
        try:
            a = float(t[5:])
        except ValueError:
            raise PimrecError(
                f"bad exponent in {text!r}", field="--index", expected=expected
            ) from None
        if not math.isfinite(a) or a < 0:
            raise PimrecError(f"bad exponent in {text!r}", field="--index", expected=expected)
        return IndexDistribution("zipf", a)
    raise PimrecError(f"unknown index distribution {text!r}", field="--index", expected=expected)


def generate_indices(
    dist: IndexDistribution, rows: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """`n` row ids in [0, rows) drawn from `dist` (int64)."""
    if rows < 1 or n < 0:
        raise ValueError("rows must be >= 1 and n >= 0")
    if dist.kind == "uniform":
        return rng.integers(0, rows, n, dtype=np.int64)
    if dist.kind == "zipf":
        return _scatter(zipf_ranks(rows, dist.exponent, n, rng), rows, rng)
    if dist.kind == "meta":
        return meta_indices(rows, n, rng)
    if dist.kind == "hist":
        counts = np.asarray(dist.reuse_counts, np.int64)
        p = np.asarray(dist.row_fractions, np.float64)
        return histogram_indices(counts, p / p.sum(), rows, n, rng)
    raise ValueError(f"unknown distribution {dist.kind}")


def _scatter(ranks: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Map popularity ranks to row ids by a random affine bijection of [0, rows)."""
    if rows == 1:
        return np.zeros(len(ranks), np.int64)
    start = int(rng.integers(0, rows))
    while True:
        step = int(rng.integers(1, rows))
        if math.gcd(step, rows) == 1:
            break
    return (start + ranks.astype(np.int64) * step) % rows


def zipf_ranks(rows: int, a: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` ranks in [0, rows) with P(rank r) proportional to (r + 1)^-a."""
    k = min(rows, ZIPF_EXACT_RANKS)
    head = np.arange(1, k + 1, dtype=np.float64) ** -a
    if rows > k:  # midpoint rule: sum_{r=k+1}^{rows} r^-a ~ integral over [k + .5, rows + .5]
        lo, hi = k + 0.5, rows + 0.5
        tail = math.log(hi / lo) if a == 1 else (hi ** (1 - a) - lo ** (1 - a)) / (1 - a)
    else:
        tail = 0.0
    total = head.sum() + tail
    cdf = np.cumsum(head) / total
    u = rng.random(n)
    ranks = np.searchsorted(cdf, u, side="right").astype(np.int64)
    in_tail = ranks >= k
    if in_tail.any():
        v = (u[in_tail] - cdf[-1]) * total  # mass into the tail integral
        if a == 1:
            x = lo * np.exp(v)
        else:
            x = (lo ** (1 - a) + v * (1 - a)) ** (1 / (1 - a))
        ranks[in_tail] = np.clip(np.floor(x + 0.5).astype(np.int64) - 1, k, rows - 1)
    return np.minimum(ranks, rows - 1)


def _power_mass(c: np.ndarray, s: float) -> np.ndarray:
    w = c**-s
    return w / w.sum()


@lru_cache(maxsize=1)
def meta_reuse_law() -> tuple[np.ndarray, np.ndarray, float]:
    """(counts, probabilities, exponent): the fitted law of per-unique-row reuse counts.

    P(1) = 0.342; c in 2..16 carries 0.544 and c in 17..32,768 carries the rest but the hot
    bin, each bin shaped c^-s; the hot bin 32,769..262,144 (shape c^-s too) carries exactly
    the fraction of rows that puts 7.6% of accesses there. `s` is solved so the mean is 12.7."""
    c = np.arange(1, META_MAX_USES + 1, dtype=np.float64)
    bins = [(2, 16), (17, META_HOT_MIN_USES - 1), (META_HOT_MIN_USES, META_MAX_USES)]

    def law(s: float) -> np.ndarray:
        p = np.zeros_like(c)
        p[0] = META_P_ONCE
        shapes = [_power_mass(c[lo - 1 : hi], s) for lo, hi in bins]
        hot_mean = float((shapes[2] * c[bins[2][0] - 1 :]).sum())
        hot = META_HOT_ACCESS_SHARE * META_MEAN_REUSE / hot_mean
        masses = [META_P_AT_MOST_16 - META_P_ONCE, 1 - META_P_AT_MOST_16 - hot, hot]
        for (lo, hi), shape, mass in zip(bins, shapes, masses, strict=True):
            p[lo - 1 : hi] = shape * mass
        return p

    lo_s, hi_s = 0.5, 4.0  # mean falls as s grows
    for _ in range(100):
        mid = 0.5 * (lo_s + hi_s)
        if float((law(mid) * c).sum()) > META_MEAN_REUSE:
            lo_s = mid
        else:
            hi_s = mid
    s = 0.5 * (lo_s + hi_s)
    return c.astype(np.int64), law(s), s


def _load_histogram(name: str) -> IndexDistribution:
    import json
    from pathlib import Path

    expected = '{"reuse_counts": [ints >= 1, increasing], "row_fractions": [numbers >= 0]}'
    try:
        doc = json.loads(Path(name).read_text())
    except FileNotFoundError:
        raise PimrecError("no such histogram file", file=name, field="--index") from None
    except (OSError, ValueError) as exc:
        raise PimrecError(f"cannot read histogram: {exc}", file=name, field="--index") from None
    if not isinstance(doc, dict) or set(doc) != {"reuse_counts", "row_fractions"}:
        raise PimrecError("bad histogram", file=name, expected=expected)
    counts, fracs = doc["reuse_counts"], doc["row_fractions"]
    ok = (
        isinstance(counts, list)
        and isinstance(fracs, list)
        and len(counts) == len(fracs) > 0
        and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)
        and all(b > a for a, b in zip(counts, counts[1:], strict=False))
        and all(isinstance(f, int | float) and not isinstance(f, bool) and f >= 0 for f in fracs)
        and sum(fracs) > 0
    )
    if not ok:
        raise PimrecError(
            "bad histogram", file=name, field="reuse_counts/row_fractions", expected=expected
        )
    return IndexDistribution(
        "hist",
        reuse_counts=tuple(counts),
        row_fractions=tuple(float(f) for f in fracs),
        source=name,
    )


def meta_indices(rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices whose per-row reuse counts follow `meta_reuse_law` (stratified draw)."""
    counts, p, _ = meta_reuse_law()
    return histogram_indices(counts, p, rows, n, rng)


def histogram_indices(
    counts: np.ndarray, p: np.ndarray, rows: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """`n` indices in [0, rows) whose unique rows are used `counts[i]` times with probability
    `p[i]` (stratified over unique rows; trimmed or topped up in proportion to use to give n)."""
    if n == 0:
        return np.zeros(0, np.int64)
    mean = float((counts * p).sum())
    k = int(min(rows, max(1, round(n / mean))))
    u = (np.arange(k) + rng.random(k)) / k  # stratified: low variance in the rare hot bin
    reuse = counts[np.minimum(np.searchsorted(np.cumsum(p), u, side="right"), len(p) - 1)]
    ids = _scatter(np.arange(k, dtype=np.int64), rows, rng)
    out = np.repeat(ids, reuse)
    rng.shuffle(out)
    if len(out) >= n:
        return out[:n]
    extra = out[rng.integers(0, len(out), n - len(out))]  # top up in proportion to use
    out = np.concatenate([out, extra])
    rng.shuffle(out)
    return out


def reuse_histogram(indices: np.ndarray) -> dict[str, float]:
    """The hardware.md s7 statistics of one index batch: unique rows, mean reuse, fraction of
    unique rows used once and at most 16 times, and the access share of rows used > 32,768 times."""
    _, uses = np.unique(np.asarray(indices), return_counts=True)
    total = int(uses.sum())
    if total == 0:
        return {
            "indices": 0,
            "unique_rows": 0,
            "mean_reuse": 0.0,
            "frac_once": 0.0,
            "frac_at_most_16": 0.0,
            "hot_access_share": 0.0,
        }
    return {
        "indices": total,
        "unique_rows": len(uses),
        "mean_reuse": total / len(uses),
        "frac_once": float(np.mean(uses == 1)),
        "frac_at_most_16": float(np.mean(uses <= 16)),
        "hot_access_share": float(uses[uses >= META_HOT_MIN_USES].sum() / total),
    }
