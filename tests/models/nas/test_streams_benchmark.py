"""benchmarks/standalone_streams.py on the CPU: the threaded run (one thread per model) trains
every model exactly as the sequential run does, from the same weights and batches."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_threaded_training_equals_sequential(capsys):
    spec = importlib.util.spec_from_file_location(
        "streams", ROOT / "benchmarks/standalone_streams.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--device", "cpu", "--models", "2", "--steps", "3", "--rows", "3000",
                     "--batches", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    rates = re.findall(r"^(sequential|threaded)\s+([0-9.]+)", out, re.M)
    assert [m for m, _ in rates] == ["sequential", "threaded"] and all(float(r) > 0 for _, r in rates)
    assert re.search(r"threaded vs sequential: 0$", out, re.M), out
