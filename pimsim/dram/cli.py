"""`pimrec dram`: run a DRAM request trace through the DRAM model (trace-driven mode)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add this package's subcommands to the `pimrec` parser (imports stay light: no torch here)."""
    from pimrec.cli import add_command
    from pimsim.cli import add_hw_arguments

    parser = add_command(
        subparsers,
        "dram",
        help="simulate a DRAM request trace (DDR4/HBM2, FR-FCFS, energy)",
        description="Run a DRAM trace through the cycle-approximate DRAM model and print the "
        "simulated time, bandwidth, read latency, row hits/misses/conflicts, command counts and "
        "the energy per command class. Trace lines are either 'LD 0x1f40' / 'ST 0x1f40' (64 B "
        "each, issued as fast as the controller accepts them) or '0x1f40 READ 120' (address, op, "
        "arrival DRAM cycle).",
        example="pimrec dram --trace stream.trace --hw ddr4-2400r --json dram.json\n"
        "pimrec dram --trace gathers.trace --hw ddr4-2400r "
        "--set dram.controller.address_mapping=ChRaBaRoCo",
        handler=_dram,
    )
    parser.add_argument("--trace", required=True, type=Path, metavar="FILE", help="DRAM trace")
    add_hw_arguments(parser)
    parser.add_argument(
        "--data-path",
        choices=("channel", "rank", "bank"),
        default="channel",
        help="channel: host access (default); rank: rank-level NMP; bank: bank-level PIM",
    )
    parser.add_argument(
        "--json", type=Path, metavar="OUT", help="also write a JSON report to OUT (atomically)"
    )


def _dram(args: argparse.Namespace) -> int:
    from pimrec.report import make_report, write_report
    from pimsim.dram.simulate import simulate_requests
    from pimsim.dram.trace_io import read_dram_trace
    from pimsim.presets import load_preset, spec_to_dict

    hw = load_preset(args.hw, args.overrides)
    spec = hw.dram
    trace = read_dram_trace(args.trace, capacity_bytes=spec.capacity_bytes)
    result = simulate_requests(
        spec, trace.addr, trace.is_write, trace.arrival_dram_cycles, data_path=args.data_path
    )
    summary = result.summary()
    _print_summary(summary, result.compile_s, result.run_s)
    if args.json is not None:
        from pimsim.dram.energy import dram_energy_table

        config = {
            "hw": args.hw,
            "overrides": list(args.overrides),
            "trace": str(args.trace),
            "trace_format": trace.format,
            "data_path": args.data_path,
            "dram": spec_to_dict(hw)["dram"],
        }
        results = dict(summary)
        results["energy_table_pj"] = dram_energy_table(spec)
        results["energy_estimator"] = "IDD currents x VDD x tCK x devices per rank (DRAMsim3 form)"
        write_report(args.json, make_report("dram", config=config, results=results))
    return 0


def _print_summary(s: dict[str, Any], compile_s: float, run_s: float) -> None:
    rows = [
        ("requests", f"{s['requests']} ({s['reads']} reads, {s['writes']} writes)"),
        ("simulated", f"{s['simulated_dram_cycles']} DRAM cycles = {s['simulated_ns']:.1f} ns"),
        ("bandwidth", f"{s['bandwidth_gbps']:.3f} GB/s"),
        (
            "read latency avg",
            f"{s['read_latency_avg_dram_cycles']:.2f} cycles = {s['read_latency_avg_ns']:.2f} ns",
        ),
        (
            "read latency p99",
            f"{s['read_latency_p99_dram_cycles']:.0f} cycles = {s['read_latency_p99_ns']:.2f} ns",
        ),
        (
            "row hits/misses/conflicts",
            f"{s['row_hits']} / {s['row_misses']} / {s['row_conflicts']}"
            + (f" (+{s['forwarded_reads']} forwarded)" if s["forwarded_reads"] else ""),
        ),
        ("commands", ", ".join(f"{k} {v}" for k, v in s["command_counts"].items() if v)),
    ]
    rows += [(f"energy {k}", f"{v:.1f} pJ") for k, v in s["energy_pj"].items()]
    rows += [("data path", s["data_path"]), ("compile / run", f"{compile_s:.2f} s / {run_s:.3f} s")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
