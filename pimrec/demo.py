"""`pimrec demo`: the main job on the embedded default.

It grows with the project: today it resolves every built-in hardware preset, prints the figures
derived from each and writes a report. Once the simulator and co-design land, it runs the
co-design search on the synthetic default data and prints the Pareto front.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pimrec.cli import add_command


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "demo",
        help="run the main job on the embedded default",
        description="Run the main pimrec job on the embedded default (built-in presets, synthetic "
        "data) and write a JSON report.",
        example="pimrec demo --out runs/demo",
        handler=run_demo,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="output folder for report.json (default: runs/demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def run_demo(args: argparse.Namespace) -> int:
    from pimrec.report import make_report, write_report
    from pimsim.derived import derived_figures
    from pimsim.presets import list_presets, load_preset, spec_to_dict

    rows = []
    configs: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name in list_presets():
        spec = load_preset(name)
        fig = derived_figures(spec)
        configs[name] = spec_to_dict(spec)
        results[name] = fig
        accel = ", ".join(k for k in ("bank_pim", "rank_nmp", "xbar") if k in fig) or "-"
        peak_gflops = max(
            (fig[k]["peak_gflops"] for k in ("bank_pim", "rank_nmp") if k in fig),
            default=spec.host.peak_gflops if spec.host else 0.0,
        )
        rows.append(
            (
                name,
                spec.dram.standard,
                fig["dram"]["capacity_gib"],
                fig["dram"]["peak_bandwidth_gbps"],
                peak_gflops,
                accel,
            )
        )
    print(
        f"{'preset':<12} {'memory':<6} {'GiB':>6} {'peak GB/s':>10} {'peak GFLOP/s':>13}  accelerators"
    )
    for name, std, gib, gbps, gflops, accel in rows:
        print(f"{name:<12} {std:<6} {gib:>6.0f} {gbps:>10.1f} {gflops:>13.1f}  {accel}")
    out = args.out / "report.json"
    write_report(
        out, make_report("demo", config={"presets": configs}, results=results, seed=args.seed)
    )
    print(f"report: {out}")
    return 0
