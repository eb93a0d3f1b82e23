"""The shared report writer: schema, provenance, stable hash, atomic and byte-identical output."""

from __future__ import annotations

import json

from pimrec import __version__
from pimrec.report import REPORT_SCHEMA, atomic_write_text, config_hash, make_report, write_report


def test_report_fields(tmp_path):
    report = make_report("unit", config={"b": 2, "a": 1}, results={"x": 1.5}, seed=7)
    assert report["schema"] == REPORT_SCHEMA == "pimrec.report/1"
    assert report["kind"] == "unit" and report["seed"] == 7
    assert report["provenance"]["version"] == __version__
    assert report["config_hash"] == config_hash({"a": 1, "b": 2})  # key order does not matter
    assert len(report["config_hash"]) == 16
    path = tmp_path / "r.json"
    write_report(path, report)
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))


def test_config_hash_changes_with_config():
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_same_input_same_bytes(tmp_path):
    import numpy as np

    results = {"v": np.arange(3), "f": np.float64(0.25)}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_report(a, make_report("unit", config={}, results=results, seed=0))
    write_report(b, make_report("unit", config={}, results=results, seed=0))
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_text())["results"] == {"v": [0, 1, 2], "f": 0.25}


def test_atomic_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "sub" / "x.txt"

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    try:
        atomic_write_text(path, Boom())  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        pass
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


def test_written_files_get_the_umask_mode(tmp_path):
    import os

    path = tmp_path / "m.json"
    atomic_write_text(path, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
