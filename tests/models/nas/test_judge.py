"""benchmarks/supernet_judge.py: the Kendall-tau ceiling of a noisy truth, by hand and by
simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau


@pytest.fixture(scope="module")
def judge(bench_module):
    return bench_module("supernet_judge")


def test_tau_ceiling_by_hand(judge):
    assert judge.tau_ceiling(1.0, 0.0) == 1.0  # a noiseless truth
    assert judge.tau_ceiling(1.0, 1.0) == 0.0  # all spread is noise
    # spread 2, noise sqrt(3): true std 1, r = 1/2, tau = 2/pi asin(1/2) = 1/3
    assert judge.tau_ceiling(2.0, math.sqrt(3.0)) == pytest.approx(1 / 3, abs=1e-12)


def test_tau_ceiling_matches_simulation(judge):
    """Mean tau between a normal truth (std 1) and truth + noise (std 1) over many draws of 20
    subnets is within 0.02 of the ceiling computed from the measured spread (sqrt 2)."""
    rng = np.random.default_rng(0)
    taus = []
    for _ in range(2000):
        true = rng.normal(size=20)
        taus.append(kendalltau(true, true + rng.normal(size=20))[0])
    assert np.mean(taus) == pytest.approx(judge.tau_ceiling(math.sqrt(2.0), 1.0), abs=0.02)


def test_seed_offsets_by_hand(judge):
    """Two models, three seeds; the second seed is 0.003 better for both."""
    per_seed = [[0.470, 0.467, 0.470], [0.480, 0.477, 0.480]]
    # each model's mean is its first value - 0.001: offsets +0.001, -0.002, +0.001
    assert judge.seed_offsets(per_seed) == pytest.approx([0.001, -0.002, 0.001], abs=1e-12)
    assert judge.seed_offsets([[0.5, 0.5]]) == [0.0, 0.0]
