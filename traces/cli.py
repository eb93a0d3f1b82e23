"""Command-line entry points of `traces`: subcommands are registered here as they are built."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add this package's subcommands to the `pimrec` parser."""
