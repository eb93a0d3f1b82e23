"""`pimrec presets ...` (and, as they land, the simulator commands)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from pimrec.cli import add_command, add_group


def add_hw_arguments(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """The hardware selection every simulator command shares: a preset and `--set` overrides."""
    if positional:
        parser.add_argument(
            "hw", metavar="NAME", help="preset name (see 'pimrec presets list') or YAML file"
        )
    else:
        parser.add_argument(
            "--hw",
            required=True,
            metavar="PRESET",
            help="preset name (see 'pimrec presets list') or YAML file",
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one preset field, e.g. dram.channels=4 (repeatable)",
    )


def register(subparsers: Any) -> None:
    from pimsim.dram.cli import register as register_dram
    from pimsim.sim_cli import register as register_sim

    _register_presets(subparsers)
    register_dram(subparsers)
    register_sim(subparsers)


def _register_presets(subparsers: Any) -> None:
    presets = add_group(
        subparsers,
        "presets",
        help="list and show hardware presets",
        description="Hardware presets are YAML files (pimsim/presets/) loaded into validated, frozen specs.",
        example="pimrec presets list\npimrec presets show dimm-nmp --set dram.channels=8 --json",
    )
    add_command(
        presets,
        "list",
        help="list the built-in presets",
        description="List the built-in hardware presets with a one-line description each.",
        example="pimrec presets list",
        handler=_presets_list,
    )
    show = add_command(
        presets,
        "show",
        help="print a resolved preset and its derived figures",
        description="Resolve a preset (bases merged, --set overrides applied), validate it and print "
        "every field with its unit, followed by derived figures (peak bandwidth, peak FLOP/s, ...).",
        example="pimrec presets show ddr4-2400r --set dram.controller.row_policy=closed\n"
        "pimrec presets show hbm-pim --json > hbm-pim.json",
        handler=_presets_show,
    )
    add_hw_arguments(show, positional=True)
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write to FILE (atomically) instead of standard output",
    )


def _presets_list(args: argparse.Namespace) -> int:
    from pimsim.presets import list_presets, load_preset

    names = list_presets()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {load_preset(name).description}")
    return 0


def _presets_show(args: argparse.Namespace) -> int:
    from pimrec.report import atomic_write_text
    from pimsim.derived import derived_figures
    from pimsim.presets import load_preset, spec_to_dict

    spec = load_preset(args.hw, args.overrides)
    doc = {"preset": spec_to_dict(spec), "derived": derived_figures(spec)}
    if args.json:
        text = json.dumps(doc, indent=2) + "\n"
    else:
        text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    if args.output is not None:
        atomic_write_text(args.output, text)
    else:
        print(text, end="")
    return 0
