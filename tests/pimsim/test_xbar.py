"""Crossbar MVM cost against the ISAAC closed form of hardware.md s5 (hand computed)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pimrec.errors import PimrecError
from pimsim.presets import load_preset
from pimsim.xbar import xbar_layer_cost

X = load_preset("reram-isaac").xbar


def test_one_full_array_matches_isaac_per_mac_energy():
    # 128 inputs x 16 outputs of 16-bit weights at 2 b/cell fill exactly one 128 x 128 array.
    c = xbar_layer_cost(X, 1, 128, 16)
    assert c.arrays_per_replica == 1 and c.macs == 2048
    # 16 reads (1-bit DAC, 16-bit inputs); each: 128 DAC drives, 128 ADC conversions
    assert c.crossbar_reads == 16
    assert c.dac_drives == 16 * 128 and c.adc_conversions == 16 * 128
    assert c.shift_adds == 16 * 128
    # hand computed: 16 x 128 x (1.667 + 0.417 + 0.021) pJ = 4311.04 pJ -> 2.105 pJ per MAC
    core = c.energy_pj["adc_pj"] + c.energy_pj["dac_pj"] + c.energy_pj["shift_add_pj"]
    assert core == pytest.approx(4311.04, rel=1e-9)
    assert core / c.macs == pytest.approx(2.1, rel=0.01)  # hardware.md: ~2.1 pJ per 16-bit MAC
    assert c.energy_pj["adc_pj"] / core == pytest.approx(0.80, abs=0.01)  # ADC ~80 % of it
    assert c.latency_ns == pytest.approx(16 * 100.0)  # 16 bit-serial reads of 100 ns


def test_array_count_closed_form():
    # K=1000, N=300: ceil(1000/128)=8 row tiles x ceil(300*8/128)=19 column groups
    c = xbar_layer_cost(X, 4, 1000, 300)
    assert c.arrays_per_replica == 8 * 19
    assert c.adc_conversions == 4 * 16 * 300 * 8 * 8
    assert c.dac_drives == 4 * 16 * 1000 * 19
    assert c.shift_adds == c.adc_conversions + 4 * 300 * 7
    assert c.tiles == math.ceil(152 / 96)
    assert c.router_transfers_256b == 4 * math.ceil(300 * 16 / 256) * 1
    assert c.buffer_accesses_256b == 4 * (math.ceil(1000 * 16 / 256) + math.ceil(300 * 16 / 256))


def test_replication_divides_latency_not_energy():
    one = xbar_layer_cost(X, 64, 256, 64)
    four = xbar_layer_cost(X, 64, 256, 64, replicas=4)
    assert four.latency_ns == pytest.approx(one.latency_ns / 4)
    assert four.total_energy_pj == pytest.approx(one.total_energy_pj)


def test_capacity_is_checked():
    with pytest.raises(PimrecError, match="arrays are available|but only"):
        xbar_layer_cost(X, 1, 1024, 1024, replicas=100)
    with pytest.raises(PimrecError, match="but only 10"):
        xbar_layer_cost(X, 1, 1024, 1024, available_arrays=10)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 64), k=st.integers(1, 2048), n=st.integers(1, 1024))
def test_properties(m, k, n):
    c = xbar_layer_cost(X, m, k, n)
    assert c.macs == m * k * n
    # never below the per-vector pipeline bound, energy positive and additive over vectors
    assert c.latency_ns >= m * 16 * X.read_latency_ns
    twice = xbar_layer_cost(X, 2 * m, k, n)
    assert twice.total_energy_pj == pytest.approx(2 * c.total_energy_pj)
