"""Cost of non-gather ops on each unit: host roofline, digital memory-side units, crossbars.

Every function returns an `OpCost` (latency in ns, energy in pJ by component key). Conventions:
FLOPs = 2 per MAC; a digital lane does one MAC or one elementwise op per clock ("lane ops" =
MACs + (FLOPs - 2 MACs)).
- host: roofline = max(FLOPs / peak, DRAM bytes / sustained bandwidth) + per-op overhead;
  energy = FLOPs x pJ/FLOP + DRAM energy of the bytes (streaming: one ACT per page, one RD/WR per
  burst, background of the whole memory over the op) + static power x latency;
- bank PIM / rank NMP (digital): max(lane ops / (units x lanes x clock), bytes / internal
  bandwidth) where the internal bandwidth is one burst per tCCD_L per bank-PIM unit, or each
  rank's data bus for rank NMP; energy = lane ops x pJ/op + DRAM energy of the bytes;
- crossbar: `pimsim.xbar.xbar_layer_cost` (ISAAC closed form, hardware.md s5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from pimsim.spec import DramSpec, HardwareSpec
from traces import Op


@dataclass(frozen=True)
class OpCost:
    latency_ns: float
    energy_pj: dict[str, float]
    info: dict[str, float] = field(default_factory=dict)


def lane_ops(op: Op) -> int:
    return op.macs + max(op.flops - 2 * op.macs, 0)


@lru_cache(maxsize=128)
def _stream_bandwidth_cycle_gbps(dram_json: str) -> float:
    """Sequential-read bandwidth of the whole memory measured once per spec in the DRAM core
    (64 pages per channel streamed, as fast as the queues take them)."""
    import numpy as np

    from pimsim.dram.simulate import simulate_requests

    d = DramSpec.model_validate_json(dram_json)
    n = d.channels * 64 * (d.row_bytes // d.access_bytes)
    addr = np.arange(n, dtype=np.uint64) * np.uint64(d.access_bytes)
    res = simulate_requests(d, addr, np.zeros(n, bool), np.zeros(n, np.int64))
    return res.bandwidth_gbps


def stream_column_efficiency(d: DramSpec) -> float:
    """Closed form of sequential streaming under the address mapping: consecutive bursts of a
    channel fill one page, so column commands are tCCD_L apart unless the read queue spans
    pages in other bank groups (span = 1 + queue entries // bursts per page, at most the bank
    groups): efficiency = tBL / max(tBL, tCCD_L / span)."""
    t = d.timing
    span = min(
        d.bank_groups_per_rank,
        1 + d.controller.read_queue_entries // (d.row_bytes // d.access_bytes),
    )
    return t.tbl_cycles / max(t.tbl_cycles, t.tccd_l_cycles / span)


def host_bandwidth_gbps(spec: HardwareSpec, mode: str) -> float:
    """Sustained host bandwidth: min(DRAM streaming bandwidth, peak x achievable fraction);
    streaming measured in the DRAM core (cycle) or refresh-limited closed form (fast)."""
    from pimsim.dram.closed_forms import refresh_limited_bandwidth_gbps

    assert spec.host is not None
    d = spec.dram
    if mode == "cycle":
        stream = _stream_bandwidth_cycle_gbps(d.model_dump_json())
    else:
        stream = refresh_limited_bandwidth_gbps(d) * stream_column_efficiency(d)
    return min(stream, d.peak_bandwidth_gbps * spec.host.achievable_bandwidth_fraction)


def stream_dram_energy(
    d: DramSpec,
    bytes_read: int,
    bytes_written: int,
    time_ns: float,
    active_ranks: int | None = None,
) -> dict[str, float]:
    """Energy of streaming the bytes: one ACT per page, one RD/WR per burst, refresh and
    background of `active_ranks` (default all) over `time_ns`."""
    from pimsim.dram.energy import dram_energy_table

    tab = dram_energy_table(d)
    rd = math.ceil(bytes_read / d.access_bytes)
    wr = math.ceil(bytes_written / d.access_bytes)
    acts = math.ceil((bytes_read + bytes_written) / d.row_bytes)
    cycles = time_ns * 1000.0 / d.timing.tck_ps
    ranks = d.channels * d.ranks_per_channel if active_ranks is None else active_ranks
    return {
        "dram_act_pj": acts * tab["act_pre_pj"],
        "dram_rd_pj": rd * tab["rd_pj"],
        "dram_wr_pj": wr * tab["wr_pj"],
        "dram_ref_pj": ranks * cycles / d.timing.trefi_cycles * tab["ref_pj"],
        "dram_background_pj": ranks * cycles * tab["background_active_pj_per_dram_cycle"],
    }


def host_cost(
    spec: HardwareSpec,
    op: Op,
    mode: str,
    mem_ns: float | None = None,
    mem_energy: dict[str, float] | None = None,
) -> OpCost:
    """Roofline on the host; `mem_ns` / `mem_energy` replace the streaming model (gathers)."""
    h = spec.host
    assert h is not None
    compute_ns = op.flops / h.peak_gflops
    if mem_ns is None:
        mem_ns = (op.bytes_read + op.bytes_written) / host_bandwidth_gbps(spec, mode)
    latency = max(compute_ns, mem_ns) + h.op_overhead_ns
    if mem_energy is None:
        mem_energy = stream_dram_energy(spec.dram, op.bytes_read, op.bytes_written, mem_ns)
    energy = {
        "host_compute_pj": op.flops * h.energy_pj_per_flop,
        "host_static_pj": h.static_power_w * latency * 1000.0,  # W x ns = nJ
        **mem_energy,
    }
    return OpCost(latency, energy, {"compute_ns": compute_ns, "memory_ns": mem_ns})


def bank_pim_units(spec: HardwareSpec) -> int:
    d = spec.dram
    assert spec.bank_pim is not None
    return d.channels * d.ranks_per_channel * d.banks_per_rank // spec.bank_pim.banks_per_unit


def nmp_units(spec: HardwareSpec) -> int:
    assert spec.rank_nmp is not None
    return spec.dram.channels * spec.dram.ranks_per_channel * spec.rank_nmp.units_per_rank


def digital_cost(spec: HardwareSpec, op: Op, unit: str) -> OpCost:
    """An elementwise or dynamic-operand op on bank PIM or rank NMP units (same in both modes)."""
    d = spec.dram
    tck_ns = d.timing.tck_ps / 1000.0
    if unit == "bank_pim":
        u = spec.bank_pim
        units = bank_pim_units(spec)
        internal_gbps = units * d.access_bytes / (d.timing.tccd_l_cycles * tck_ns)
        key = "pim_compute_pj"
    else:
        u = spec.rank_nmp
        units = nmp_units(spec)
        ranks = d.channels * d.ranks_per_channel
        internal_gbps = ranks * d.access_bytes / (d.timing.tbl_cycles * tck_ns)
        key = "nmp_compute_pj"
    assert u is not None
    ops = lane_ops(op)
    compute_ns = ops / (units * u.simd_lanes * u.clock_mhz / 1e3)
    mem_ns = (op.bytes_read + op.bytes_written) / internal_gbps
    latency = max(compute_ns, mem_ns)
    energy = {
        key: ops * u.energy_pj_per_op,
        **stream_dram_energy(d, op.bytes_read, op.bytes_written, latency),
    }
    return OpCost(latency, energy, {"compute_ns": compute_ns, "memory_ns": mem_ns})


def xbar_cost(spec: HardwareSpec, op: Op, replicas: int) -> OpCost:
    """A static-weight fc / efc in crossbars (weights resident; inputs from the tile buffers)."""
    from pimsim.mapping import xbar_shape
    from pimsim.xbar import xbar_layer_cost

    assert spec.xbar is not None
    m, k, n = xbar_shape(op)
    c = xbar_layer_cost(spec.xbar, m, k, n, replicas=replicas)
    return OpCost(
        c.latency_ns,
        dict(c.energy_pj),
        {
            "arrays": c.arrays_per_replica * c.replicas,
            "adc_conversions": c.adc_conversions,
            "crossbar_reads": c.crossbar_reads,
        },
    )
