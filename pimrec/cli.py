"""The `pimrec` command line: one command, subcommands registered by each package.

Each package's `cli` module exposes `register(subparsers)` and imports its heavy dependencies
(numba kernels, torch) only inside the command handlers, so `pimrec --help` stays fast and
`pimrec presets`, `pimrec trace`, `pimrec dram` and `pimrec simulate` never import torch.
Bad input raises `PimrecError`: one line on stderr, exit status 2, no partial output.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pimrec import __version__
from pimrec.errors import PimrecError

# Packages whose `cli.register(subparsers)` adds subcommands, in the order they appear in --help.
COMMAND_MODULES = ("pimrec.demo", "pimsim.cli", "traces.cli", "models.cli", "codesign.cli")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2) and examples in the epilog."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_command(
    subparsers: Any,
    name: str,
    *,
    help: str,
    description: str,
    example: str,
    handler: Callable[[argparse.Namespace], int | None],
) -> ArgumentParser:
    """Add a subcommand whose --help shows a description and a worked example."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=textwrap.dedent(description).strip(),
        epilog="example:\n" + textwrap.indent(textwrap.dedent(example).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=handler)
    return parser


def add_group(subparsers: Any, name: str, *, help: str, description: str, example: str) -> Any:
    """Add a command with its own subcommands (`pimrec trace build`, `pimrec presets show`)."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=textwrap.dedent(description).strip(),
        epilog="example:\n" + textwrap.indent(textwrap.dedent(example).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=lambda args: _missing_subcommand(parser))
    return parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=ArgumentParser)


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="pimrec",
        description="Co-design recommender models and Processing-In-Memory hardware.",
        epilog=textwrap.dedent("""\
            examples:
              pimrec demo                          run the main job on the embedded default
              pimrec presets list                  list the hardware presets
              pimrec presets show hbm-pim --set dram.channels=8
            """),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pimrec {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of one line",
    )
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=ArgumentParser
    )
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pimrec` console command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except PimrecError as exc:
        if args.debug:
            raise
        print(f"pimrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pimrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
