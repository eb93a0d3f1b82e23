"""Shared fixtures: the CLI runner, the location of the real data samples, and a loader for
the scripts in benchmarks/ (not a package)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from pimrec.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@dataclass
class CliResult:
    status: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `pimrec ARGS...` in-process and return its exit status, stdout and stderr."""

    def run(*args: str) -> CliResult:
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors and --help
            status = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(status, captured.out, captured.err)

    return run


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip with a reason otherwise."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bench_module():
    """`bench_module("name")`: benchmarks/name.py imported as a module."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
