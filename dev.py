#!/usr/bin/env python3
"""Set-up and the two Quickstart commands, needing nothing but Python 3.11+.

    python3 dev.py demo    # create .venv on first use, install, run the main job
    python3 dev.py test    # create .venv on first use, install, lint and run the whole test suite

The install takes `torch==2.13.0` first (on the project's CI machines pip finds a local CPU build;
elsewhere it is the normal PyPI build); set PIMREC_TORCH to another requirement to change that.
The virtual environment is re-installed when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("PIMREC_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".pimrec-installed"


def _run(cmd: list[str], **kw: object) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, **kw)  # type: ignore[arg-type]


def _check(cmd: list[str]) -> None:
    if _run(cmd) != 0:
        sys.exit(f"dev.py: command failed: {' '.join(cmd)}")


def ensure_env() -> None:
    """Create the virtual environment and install pimrec into it when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs under any python3)
        sys.exit("dev.py: pimrec needs Python >= 3.11")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == want and PY.exists():
        return
    if not PY.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_req = os.environ.get("PIMREC_TORCH", "torch==2.13.0")
    _check([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", torch_req])
    _check([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".[dev]"])
    STAMP.write_text(want + "\n")


def demo(extra: list[str]) -> int:
    return _run([str(BIN / "pimrec"), "demo", *extra])


def test(extra: list[str]) -> int:
    """Lint, the whole suite, then the simulator tests again with the JIT off (readable tracebacks
    and coverage of the jitted kernels' Python source)."""
    status = _run([str(PY), "-m", "ruff", "check", "."])
    status |= _run([str(PY), "-m", "pytest", "-q", *extra])
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    status |= _run(
        [str(PY), "-m", "pytest", "-q", "-m", "not jit_only", "tests/pimsim", *extra], env=env
    )
    return 1 if status else 0


def main() -> int:
    tasks = {"demo": demo, "test": test, "setup": lambda extra: 0}
    if len(sys.argv) < 2 or sys.argv[1] not in tasks:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_env()
    return tasks[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
