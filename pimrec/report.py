"""The report writer shared by every command that produces results.

A report is one JSON document:
    {"schema": "pimrec.report/1", "kind": ..., "provenance": {...}, "config": {...},
     "config_hash": ..., "seed": ..., "results": {...}}
It carries no timestamp, so the same command with the same seed writes the same bytes.
Files are written to a temporary name and renamed, so a kill never leaves a partial report.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from pimrec import __version__

REPORT_SCHEMA = "pimrec.report/1"


def _umask_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_file_mode()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of `config_hash`."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def config_hash(config: Any) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of `config`."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The source tree's git revision (with '-dirty' when it has changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def make_report(kind: str, *, config: Any, results: Any, seed: int | None = None) -> dict[str, Any]:
    """Assemble a report dictionary with its provenance."""
    return {
        "schema": REPORT_SCHEMA,
        "kind": kind,
        "provenance": {"package": "pimrec", "version": __version__, "git_revision": git_revision()},
        "config": config,
        "config_hash": config_hash(config),
        "seed": seed,
        "results": results,
    }


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; give the file the usual umask mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write a report made by `make_report` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False, default=_default) + "\n")


def _default(obj: Any) -> Any:
    # numpy scalars and arrays, paths and tuples appear in results; keep them JSON-native.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
