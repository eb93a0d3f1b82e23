"""A random subnet as the hidden label model of synthetic data (`models.data` Teacher protocol).

`SubnetTeacher(table_sizes, n_dense, seed=...)` samples a subnet of `space` from `seed` and builds
it with weights from `weight_seed(seed)`; `logits(dense float32 [n, n_dense], sparse int
[n, n_sparse]) -> float64 [n]` runs it without gradients (deterministic). Indices are taken modulo
the table size, so any non-negative index is accepted.

Why a derived weight seed: a student is `SubnetModel(subnet, ..., seed=s)` for small training
seeds s. Were the teacher's weights drawn with torch seed `seed` itself, the student trained with
s == seed would start from the teacher's own embedding tables (the same shapes drawn first from the
same stream), and for the teacher's architecture from the teacher outright: the judge's third and
fourth draws (teacher seed 2, training seeds 1-3 and 1-4) had that seed's students 0.004-0.03
nats better than the others, which drowned the differences between architectures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.nas.space import Subnet, sample_subnet


def weight_seed(seed: int) -> int:
    """The torch seed of a teacher's weights: a 63-bit number derived from `seed`, never a small
    integer a training run would use (module docstring)."""
    state = np.random.SeedSequence([int(seed), 0x7EAC, 0x3E16]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1) | (1 << 40)


class SubnetTeacher:
    """Deterministic logits of a seeded random subnet with seeded weights."""

    def __init__(
        self,
        table_sizes: Sequence[int],
        n_dense: int,
        *,
        seed: int = 0,
        space: str = "nasrec-full",
        subnet: Subnet | None = None,
        batch_rows: int = 65536,
        device: str = "cpu",
    ) -> None:
        from models.nas.supernet import SubnetModel

        self.seed, self.space, self.batch_rows = int(seed), space, batch_rows
        self.table_sizes = [int(t) for t in table_sizes]
        self.subnet = subnet or sample_subnet(space, np.random.default_rng([self.seed, 0x7EAC]))
        self.device = torch.device(device)
        model = SubnetModel(self.subnet, self.table_sizes, n_dense, seed=weight_seed(self.seed))
        self.model = model.eval().to(self.device)
        self._sizes = np.asarray(self.table_sizes, dtype=np.int64)

    def logits(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """float64 [n] raw scores."""
        out = []
        with torch.no_grad():
            for lo in range(0, len(dense), self.batch_rows):
                d = torch.from_numpy(np.array(dense[lo : lo + self.batch_rows], np.float32))
                s = np.asarray(sparse[lo : lo + self.batch_rows], dtype=np.int64) % self._sizes
                logits = self.model(d.to(self.device), torch.from_numpy(s).to(self.device))
                out.append(logits.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def describe(self) -> dict[str, Any]:
        out = {"kind": "nas-subnet", "seed": self.seed, "weight_seed": weight_seed(self.seed),
               "space": self.space, "subnet": self.subnet.to_dict()}  # fmt: skip
        if self.device.type != "cpu":
            out["device"] = self.device.type
        return out
