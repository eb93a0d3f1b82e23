"""Command-line entry points of `models`: data preparation (`models.data.cli`) and supernet /
model training and evaluation (`models.nas.cli`). No torch import at registration time."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add the model-side subcommands to the `pimrec` parser."""
    from models.data.cli import register as register_data
    from models.nas.cli import register as register_nas

    register_data(subparsers)
    register_nas(subparsers)
