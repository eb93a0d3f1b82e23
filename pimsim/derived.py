"""Closed-form figures derived from a `HardwareSpec` (peak bandwidth, peak FLOP/s, capacities).

These are the hand-checkable numbers of `shared/reference/hardware.md`; the simulator is validated
against them, and `pimrec presets show` prints them beside the resolved preset.
"""

from __future__ import annotations

from typing import Any

from pimsim.spec import HardwareSpec


def derived_figures(spec: HardwareSpec) -> dict[str, Any]:
    """Derived figures with units in every key, grouped like the preset's sections."""
    dram = spec.dram
    t = dram.timing
    out: dict[str, Any] = {
        "dram": {
            "tck_ns": t.tck_ps / 1000.0,
            "data_rate_mtps": 2e6 / t.tck_ps,
            "devices_per_rank": dram.devices_per_rank,
            "access_bytes": dram.access_bytes,
            "row_bytes": dram.row_bytes,
            "banks_per_rank": dram.banks_per_rank,
            "capacity_gib": dram.capacity_bytes / 2**30,
            "peak_bandwidth_gbps": dram.peak_bandwidth_gbps,
            "trfc_cycles": t.trfc_cycles,
            "trefi_cycles": t.trefi_cycles,
        }
    }
    if spec.bank_pim is not None:
        units = (
            dram.channels
            * dram.ranks_per_channel
            * dram.banks_per_rank
            // spec.bank_pim.banks_per_unit
        )
        out["bank_pim"] = {
            "units": units,
            "peak_gflops": units * spec.bank_pim.simd_lanes * 2 * spec.bank_pim.clock_mhz / 1e3,
        }
    if spec.rank_nmp is not None:
        units = dram.channels * dram.ranks_per_channel * spec.rank_nmp.units_per_rank
        out["rank_nmp"] = {
            "units": units,
            "peak_gflops": units * spec.rank_nmp.simd_lanes * spec.rank_nmp.clock_mhz / 1e3,
        }
    if spec.xbar is not None:
        x = spec.xbar
        out["xbar"] = {
            "total_arrays": x.total_arrays,
            "slices_per_weight": x.slices_per_weight,
            "weight_capacity_bytes": x.total_arrays
            * x.array_rows
            * (x.array_cols // x.slices_per_weight)
            * x.weight_bits
            // 8,
        }
    if spec.host is not None:
        out["host"] = {
            "sustained_bandwidth_gbps": dram.peak_bandwidth_gbps
            * spec.host.achievable_bandwidth_fraction,
            "ridge_flop_per_byte": spec.host.peak_gflops
            / (dram.peak_bandwidth_gbps * spec.host.achievable_bandwidth_fraction),
        }
    return out
