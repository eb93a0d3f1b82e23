"""Run `pimrec ARGS...` in this process and block forever at a chosen point, so that a test can
SIGKILL the process exactly there (a real kill at a reproducible place).

    python tests/models/nas/killable.py FLAG step N  train supernet ...
        blocks inside the N-th training step (before its optimiser update);
    python tests/models/nas/killable.py FLAG save N  train model ...
        blocks inside the N-th checkpoint write, after the temporary file is complete and
        before it is renamed over checkpoint.pt.
Once blocked it writes its pid to FLAG. The tests' tiny search space is registered first.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _block(flag: str) -> None:
    tmp = Path(flag + ".tmp")  # written, then renamed: the test never reads a half-written flag
    tmp.write_text(str(os.getpid()))
    tmp.replace(flag)
    while True:  # the test kills the process here
        time.sleep(1)


def main() -> int:
    flag, where, n, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    import torch

    import models.nas.space as space
    import models.nas.train as train
    from tests.models.nas.conftest import TINY

    torch.set_num_threads(1)
    space.SPACES["tiny"] = TINY
    count = [0]
    if where == "step":
        real_step = train.train_step

        def step(*a: object, **k: object) -> object:
            count[0] += 1
            if count[0] == n:
                _block(flag)
            return real_step(*a, **k)

        train.train_step = step
    elif where == "save":
        real_replace = os.replace

        def replace(src: str, dst: str) -> None:
            if Path(dst).name == "checkpoint.pt":
                count[0] += 1
                if count[0] == n:
                    _block(flag)
            real_replace(src, dst)

        os.replace = replace
    else:
        raise SystemExit(f"unknown place {where!r}")
    from pimrec.cli import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
