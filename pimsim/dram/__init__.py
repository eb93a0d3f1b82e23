"""DRAM core: organisation, JEDEC timing, FR-FCFS controller, energy (issue 4).

Public API (kernels are compiled on first use; importing this package stays light):
    simulate_requests(spec, addr, is_write, arrival_dram_cycles=None, *, data_path="channel",
                      command_log=False) -> DramResult
    dram_energy_table(spec) -> dict[str, float]           pJ per command class, per rank
    closed forms: unloaded_read_latency_dram_cycles / _ns, peak_bandwidth_gbps,
                  refresh_overhead_fraction, refresh_limited_bandwidth_gbps,
                  activate_limited_bandwidth_gbps
    dram_constraints(spec, data_path) -> list[Constraint]  timing constraints as data
    decode_addresses / encode_address                      address mapping schemes
    check_command_log(spec, log, data_path) -> list[str]   independent legality check
    read_dram_trace / write_dram_trace                     text DRAM traces
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; resolved on first access so that `pimrec --help` never imports numba
_LAZY = {
    "check_command_log": "checker",
    "activate_limited_bandwidth_gbps": "closed_forms",
    "peak_bandwidth_gbps": "closed_forms",
    "refresh_limited_bandwidth_gbps": "closed_forms",
    "refresh_overhead_fraction": "closed_forms",
    "unloaded_read_latency_dram_cycles": "closed_forms",
    "unloaded_read_latency_ns": "closed_forms",
    "DATA_PATHS": "constraints",
    "Constraint": "constraints",
    "dram_constraints": "constraints",
    "dram_energy_table": "energy",
    "energy_breakdown_pj": "energy",
    "MAPPING_SCHEMES": "mapping",
    "decode_addresses": "mapping",
    "encode_address": "mapping",
    "DramResult": "simulate",
    "simulate_requests": "simulate",
    "DramTrace": "trace_io",
    "read_dram_trace": "trace_io",
    "write_dram_trace": "trace_io",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'pimsim.dram' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pimsim.dram.{_LAZY[name]}"), name)


__all__ = [
    "DATA_PATHS",
    "MAPPING_SCHEMES",
    "Constraint",
    "DramResult",
    "DramTrace",
    "activate_limited_bandwidth_gbps",
    "check_command_log",
    "decode_addresses",
    "dram_constraints",
    "dram_energy_table",
    "encode_address",
    "energy_breakdown_pj",
    "peak_bandwidth_gbps",
    "read_dram_trace",
    "refresh_limited_bandwidth_gbps",
    "refresh_overhead_fraction",
    "simulate_requests",
    "unloaded_read_latency_dram_cycles",
    "unloaded_read_latency_ns",
    "write_dram_trace",
]
