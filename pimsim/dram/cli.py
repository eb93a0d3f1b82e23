"""Subcommands of this package; `register` is called by the package's parent `cli` module."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add this package's subcommands to the `pimrec` parser (imports stay light: no torch here)."""
