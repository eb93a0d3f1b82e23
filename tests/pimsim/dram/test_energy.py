"""Per-command energies from IDD currents (hardware.md s1, s2)."""

from __future__ import annotations

import numpy as np
import pytest

from pimsim.dram.energy import dram_energy_table
from pimsim.dram.simulate import simulate_requests

from .conftest import hbm2, random_addrs


def test_ddr4_formulas_match_hand_computation(spec):
    tab = dram_energy_table(spec)
    tck_ns, dev, v = 0.833, 8, 1.2
    # ACT+PRE: VDD*(IDD0*tRC - (IDD3N*tRAS + IDD2N*tRP))*tCK*devices = 1.2*419*0.833*8
    assert tab["act_pre_pj"] == pytest.approx(
        v * (48 * 55 - (43 * 39 + 34 * 16)) * tck_ns * dev, rel=1e-9
    )
    assert tab["act_pre_pj"] == pytest.approx(3350.6592, rel=1e-9)
    assert tab["rd_pj"] == pytest.approx(v * (135 - 43) * 4 * tck_ns * dev, rel=1e-9)  # 2942.82
    assert tab["wr_pj"] == pytest.approx(v * (123 - 43) * 4 * tck_ns * dev, rel=1e-9)  # 2558.98
    assert tab["ref_pj"] == pytest.approx(v * (250 - 43) * 421 * tck_ns * dev, rel=1e-9)
    assert tab["background_active_pj_per_dram_cycle"] == pytest.approx(v * 43 * tck_ns * dev)
    assert tab["background_precharged_pj_per_dram_cycle"] == pytest.approx(v * 34 * tck_ns * dev)


def test_ddr4_against_reference_figures(spec):
    tab = dram_energy_table(spec)
    # hardware.md quotes 3.45 nJ for ACT+PRE, but its own formula with its own currents gives
    # 1.2 V x 419 mA.cycles x 0.833 ns x 8 = 3.35 nJ; the quoted figure is ~3% high (a rounding
    # or a different IDD0 in its source). We implement the formula: allow 3.5%.
    assert tab["act_pre_pj"] == pytest.approx(3450.0, rel=0.035)
    assert tab["rd_pj"] == pytest.approx(2930.0, rel=0.005)  # 2.93 nJ (5.7 pJ/bit), 0.5%
    assert tab["rd_pj"] == pytest.approx(2940.0, rel=0.002)  # the lead's 2.94 nJ
    assert tab["wr_pj"] == pytest.approx(2555.0, rel=0.005)  # 2.55-2.56 nJ
    # background per rank: 413 mW active, 326 mW precharged (derived in hardware.md)
    assert tab["background_active_pj_per_dram_cycle"] / 0.833 == pytest.approx(412.8, rel=1e-3)
    assert tab["background_precharged_pj_per_dram_cycle"] / 0.833 == pytest.approx(326.4, rel=1e-3)


def test_hbm2_per_pseudo_channel():
    tab = dram_energy_table(hbm2())
    # The preset's currents are per pseudo-channel (half a legacy 128-bit channel): the legacy
    # channel's ACT+PRE ~0.83 nJ (2 KB row) is 0.41 nJ per PC (1 KB row); RD 64 B ~0.80 nJ.
    assert tab["act_pre_pj"] == pytest.approx(1.2 * (32.5 * 48 - (27.5 * 34 + 20 * 14)) * 1.0)
    assert 2 * tab["act_pre_pj"] == pytest.approx(830.0, rel=0.01)
    assert 2 * tab["rd_pj"] == pytest.approx(800.0, rel=0.01)  # two 32 B bursts = 64 B
    # ~3.2 pJ/bit random on the legacy channel: (ACT+PRE 0.83 nJ + RD 0.80 nJ) / 512 bits, 2%
    assert (2 * tab["act_pre_pj"] + 2 * tab["rd_pj"]) / 512 == pytest.approx(3.2, rel=0.02)


def test_embedding_row_energy(spec):
    # a 256 B embedding row from one opened row ~ ACT+PRE + 4 RD = 15.2 nJ with the reference's
    # 3.45 nJ (derived in hardware.md); 15.1 nJ with ours: 1% tolerance
    tab = dram_energy_table(spec)
    assert tab["act_pre_pj"] + 4 * tab["rd_pj"] == pytest.approx(15200.0, rel=0.01)


@pytest.mark.parametrize("write_fraction", [0.0, 0.3])
def test_energy_is_counts_times_table_plus_background(spec, write_fraction):
    n = 300
    rng = np.random.default_rng(3)
    res = simulate_requests(spec, random_addrs(spec, n), rng.random(n) < write_fraction)
    tab = dram_energy_table(spec)
    c = res.command_counts
    e = res.energy_pj
    assert e["act_pre"] == pytest.approx(c["ACT"] * tab["act_pre_pj"], rel=1e-12)
    assert e["rd"] == pytest.approx((c["RD"] + c["RDA"]) * tab["rd_pj"], rel=1e-12)
    assert e["wr"] == pytest.approx((c["WR"] + c["WRA"]) * tab["wr_pj"], rel=1e-12)
    bg = (
        e["background_active"] / tab["background_active_pj_per_dram_cycle"]
        + e["background_precharged"] / tab["background_precharged_pj_per_dram_cycle"]
    )
    assert bg == pytest.approx(res.total_dram_cycles, rel=1e-9)  # one rank, every cycle once
    assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"), rel=1e-12)
