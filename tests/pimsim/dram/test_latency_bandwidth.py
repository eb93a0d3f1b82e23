"""Closed forms of hardware.md s1: unloaded latency, streaming and random bandwidth, refresh."""

from __future__ import annotations

import numpy as np
import pytest

from pimsim.dram import closed_forms as cf
from pimsim.dram.mapping import encode_address
from pimsim.dram.simulate import simulate_requests

from .conftest import INTERPRETED, ddr4, hbm2, random_addrs, stream_addrs


def _two_reads(spec, second: int):
    """A first read at cycle 0, then `second` alone at cycle 2000 (the first is long done)."""
    first = encode_address(spec, bankgroup=1, bank=2, row=7, column=3)
    addr = np.array([first, second], np.uint64)
    return simulate_requests(spec, addr, np.zeros(2, bool), np.array([0, 2000]))


@pytest.mark.parametrize(
    "outcome, second",
    [
        ("hit", dict(bankgroup=1, bank=2, row=7, column=9)),
        ("miss", dict(bankgroup=3, bank=0, row=7, column=0)),  # another, precharged bank
        ("conflict", dict(bankgroup=1, bank=2, row=8, column=3)),
    ],
)
def test_unloaded_read_latency_exact(spec, outcome, second):
    res = _two_reads(spec, encode_address(spec, **second))
    expected = cf.unloaded_read_latency_dram_cycles(spec, outcome)
    assert res.read_latency_dram_cycles[1] == expected  # exact, 0 cycles tolerance
    assert res.read_latency_dram_cycles[0] == cf.unloaded_read_latency_dram_cycles(spec, "miss")
    assert res.row_outcome.tolist() == [1, {"hit": 0, "miss": 1, "conflict": 2}[outcome]]


def test_unloaded_latency_closed_forms_in_ns(spec):
    # hardware.md: (nRCD + nCL + nBL) * tCK ~ 40.0 ns to the first data beat for a row miss at
    # 2400R (16+16+16 = 48 cycles x 0.833 ns), i.e. 36 cycles to the last beat of BL8; 0.1 ns
    assert (16 + 16 + 16) * 0.833 == pytest.approx(40.0, abs=0.1)
    assert cf.unloaded_read_latency_dram_cycles(spec, "hit") == 16 + 4
    assert cf.unloaded_read_latency_dram_cycles(spec, "miss") == 16 + 16 + 4
    assert cf.unloaded_read_latency_dram_cycles(spec, "conflict") == 16 + 16 + 16 + 4
    assert cf.unloaded_read_latency_ns(spec, "miss") == pytest.approx(36 * 0.833, rel=1e-12)


def test_peak_and_refresh_limited_closed_forms(spec):
    assert cf.peak_bandwidth_gbps(spec) == pytest.approx(19.2, rel=0.001)  # 19.21 GB/s
    assert cf.refresh_overhead_fraction(spec) == pytest.approx(462 / 9364, rel=1e-12)  # 4.93%
    assert cf.refresh_limited_bandwidth_gbps(spec) == pytest.approx(18.25, rel=0.002)
    # tFAW caps a rank at 4 ACT per 26 cycles -> ~11.8 GB/s of random 64 B reads
    assert cf.activate_limited_bandwidth_gbps(spec) == pytest.approx(11.8, rel=0.01)


N_STREAM = 20_000 if INTERPRETED else 200_000


def _bank_group_interleaved():
    # consecutive bursts rotate over bank groups (tCCD_S apart), as a streaming host would map
    return ddr4("dram.controller.address_mapping=RoCoBaRaCh")


@pytest.mark.jit_only
def test_streaming_bandwidth_refresh_limited():
    spec = _bank_group_interleaved()
    res = simulate_requests(spec, stream_addrs(spec, N_STREAM), np.zeros(N_STREAM, bool))
    assert res.bandwidth_gbps <= cf.peak_bandwidth_gbps(spec)
    # within 1.5% of the refresh-limited closed form 18.25 GB/s
    assert res.bandwidth_gbps == pytest.approx(cf.refresh_limited_bandwidth_gbps(spec), rel=0.015)
    assert res.row_hits / res.n_requests > 0.97  # rows reopen after each refresh


def test_streaming_without_refresh_reaches_peak():
    spec = ddr4("dram.controller.address_mapping=RoCoBaRaCh", "dram.timing.trefi_ns=1000000000.0")
    n = 4000
    res = simulate_requests(spec, stream_addrs(spec, n), np.zeros(n, bool))
    # n bursts x 4 cycles after the first miss: within 1% of peak
    assert res.bandwidth_gbps == pytest.approx(cf.peak_bandwidth_gbps(spec), rel=0.01)


@pytest.mark.jit_only
def test_refresh_overhead():
    n = N_STREAM
    with_ref = _bank_group_interleaved()
    without = ddr4(
        "dram.controller.address_mapping=RoCoBaRaCh", "dram.timing.trefi_ns=1000000000.0"
    )
    a = simulate_requests(with_ref, stream_addrs(with_ref, n), np.zeros(n, bool))
    b = simulate_requests(without, stream_addrs(without, n), np.zeros(n, bool))
    overhead = 1.0 - b.total_dram_cycles / a.total_dram_cycles
    # closed form 4.93% of the time; 0.5 percentage point tolerance
    assert overhead == pytest.approx(cf.refresh_overhead_fraction(with_ref), abs=0.005)
    assert a.command_counts["REF"] == a.total_dram_cycles // with_ref.timing.trefi_cycles


@pytest.mark.jit_only
def test_random_bandwidth_against_activate_bound(spec):
    n = 100_000
    res = simulate_requests(spec, random_addrs(spec, n), np.zeros(n, bool))
    bound = cf.activate_limited_bandwidth_gbps(spec)
    assert res.bandwidth_gbps <= bound * (1 - 0.9 * cf.refresh_overhead_fraction(spec))
    # FR-FCFS over 32 requests reaches >= 90% of the refresh-derated tFAW bound
    assert res.bandwidth_gbps >= 0.9 * bound * (1 - cf.refresh_overhead_fraction(spec))


def test_random_small_is_activate_bound(spec):
    n = 2000
    res = simulate_requests(spec, random_addrs(spec, n), np.zeros(n, bool))
    assert res.bandwidth_gbps <= cf.activate_limited_bandwidth_gbps(spec)
    assert res.bandwidth_gbps >= 0.8 * cf.activate_limited_bandwidth_gbps(spec)  # 20% tolerance


@pytest.mark.jit_only
def test_hbm2_stack_streaming_reaches_refresh_limited_peak():
    # 16 pseudo-channels x 16 GB/s = 256 GB/s; refresh costs ~9.8% (hardware.md s2): a stream
    # interleaved over the pseudo-channels (RoBaRaCoCh, channel bits lowest) gets within 1%
    spec = hbm2()
    n = 400_000
    res = simulate_requests(spec, stream_addrs(spec, n), np.zeros(n, bool))
    assert cf.peak_bandwidth_gbps(spec) == pytest.approx(256.0)
    assert cf.refresh_overhead_fraction(spec) == pytest.approx(0.098, abs=0.002)
    assert res.bandwidth_gbps == pytest.approx(cf.refresh_limited_bandwidth_gbps(spec), rel=0.01)


def test_hbm2_unloaded_latency():
    # hardware.md s2 quotes ~42 ns for an HBM2 "row miss" counted from a precharge: that is our
    # conflict, tRP + tRCD + CL = 14 + 14 + 14 cycles of 1 ns to the first data beat (exact)
    spec = hbm2()
    res = simulate_requests(spec, np.array([0], np.uint64), np.zeros(1, bool))
    assert res.read_latency_dram_cycles[0] == cf.unloaded_read_latency_dram_cycles(spec, "miss")
    first_beat_ns = cf.unloaded_read_latency_ns(spec, "conflict") - spec.timing.tbl_cycles * 1.0
    assert first_beat_ns == pytest.approx(42.0, abs=1e-9)
