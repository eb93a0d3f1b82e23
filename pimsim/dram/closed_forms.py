"""Closed-form DRAM figures (hardware.md s1, s2) shared by tests and `pimrec validate`.

All cycle figures are DRAM command-clock cycles; bandwidths are decimal GB/s.
"""

from __future__ import annotations

from pimsim.spec import DramSpec

ROW_OUTCOMES = ("hit", "miss", "conflict")


def unloaded_read_latency_dram_cycles(spec: DramSpec, outcome: str) -> int:
    """Arrival to last data beat of one read on an idle controller: hit CL+BL, miss RCD+CL+BL,
    conflict RP+RCD+CL+BL."""
    t = spec.timing
    base = t.tcl_cycles + t.tbl_cycles
    if outcome == "hit":
        return base
    if outcome == "miss":
        return t.trcd_cycles + base
    if outcome == "conflict":
        return t.trp_cycles + t.trcd_cycles + base
    raise ValueError(f"outcome must be one of {ROW_OUTCOMES}, got {outcome!r}")


def unloaded_read_latency_ns(spec: DramSpec, outcome: str) -> float:
    return unloaded_read_latency_dram_cycles(spec, outcome) * spec.timing.tck_ps / 1000.0


def peak_bandwidth_gbps(spec: DramSpec, channels: int | None = None) -> float:
    """Data-bus peak: bus bytes x 2 transfers per tCK, per channel x channels."""
    per_channel = spec.bus_width_bits / 8 * 2 / (spec.timing.tck_ps / 1000.0)
    return per_channel * (spec.channels if channels is None else channels)


def refresh_overhead_fraction(spec: DramSpec) -> float:
    """Streaming time lost per tREFI: (tRTP + tRP + tRFC + tRCD) / tREFI."""
    t = spec.timing
    lost = t.trtp_cycles + t.trp_cycles + t.trfc_cycles + t.trcd_cycles
    return lost / t.trefi_cycles


def refresh_limited_bandwidth_gbps(spec: DramSpec, channels: int | None = None) -> float:
    return peak_bandwidth_gbps(spec, channels) * (1.0 - refresh_overhead_fraction(spec))


def activate_rate_per_dram_cycle(spec: DramSpec) -> float:
    """Most ACTs per cycle one rank sustains: min(4 / tFAW, 1 / tRRD_S, banks / tRC)."""
    t = spec.timing
    return min(4.0 / t.tfaw_cycles, 1.0 / t.trrd_s_cycles, spec.banks_per_rank / t.trc_cycles)


def activate_limited_bandwidth_gbps(spec: DramSpec, ranks: int = 1) -> float:
    """Random-access bound: one burst per ACT at the tFAW/tRRD/tRC-limited rate, over `ranks`
    ranks, never above the data-bus peak of one channel."""
    per_rank = (
        activate_rate_per_dram_cycle(spec) * spec.access_bytes / (spec.timing.tck_ps / 1000.0)
    )
    return min(
        per_rank * ranks, peak_bandwidth_gbps(spec, 1) * max(1, ranks // spec.ranks_per_channel)
    )
